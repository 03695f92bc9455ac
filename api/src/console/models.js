// models.js — the node's model registry and deployments: packages, shadows and
// canaries with their figures. An admin registers a package file, deploys a package,
// promotes or rolls back a canary and withdraws a deployment; every step is audited on
// each twin it changes. On a cloud node the deployments are every edge node's, each
// changed on the node that holds it.

import { api } from './api.js';
import { h, arr, table, setText, poll, errorLine, fmtTime, fmtNum } from './dom.js';

const MODES = {
  DEPLOY_MODE_SHADOW: 'shadow', DEPLOY_MODE_CANARY: 'canary', DEPLOY_MODE_PRODUCTION: 'production',
};
const STATES = {
  ROLLOUT_STATE_RUNNING: 'running', ROLLOUT_STATE_HELD: 'held',
  ROLLOUT_STATE_PROMOTED: 'promoted', ROLLOUT_STATE_ROLLED_BACK: 'rolled back',
};

/** Where a deployment stands, in words. */
function stateText(d) {
  const r = d.rollout;
  if (r) {
    const state = STATES[r.state] || 'unknown';
    return r.reason ? `canary ${state}: ${r.reason}` : `canary ${state} on ${arr(r.twins).length} twin(s)`;
  }
  const evaluation = d.evaluationSecs ? `, evaluated over ${fmtNum(Number(d.evaluationSecs) / 3600)} h of samples` : '';
  return d.active ? `in force${evaluation}` : `withdrawn (${d.withdrawn || ''})`;
}

/** A canary's latest figures: mean |Δ| per output over its samples. */
function figures(d) {
  const dv = d.rollout?.divergence;
  if (!dv) return '';
  const outputs = arr(dv.outputs).filter(Boolean).map((o) => `${o.name} ${fmtNum(o.meanAbs)}`).join(', ');
  return `${outputs || 'nothing compared'} over ${dv.samples ?? 0} sample(s)`;
}

const target = (d) => [d.twinType ? `type ${d.twinType}` : '', d.pathPrefix || ''].filter(Boolean).join(' under ');

export async function render(container, ctx) {
  const admin = ctx.caller?.role === 'admin';
  const error = errorLine('models-error');
  const packages = h('div');
  const deployments = h('div');
  const unavailable = h('div');
  const reason = h('input', { 'data-test': 'model-reason', id: 'model-reason', placeholder: 'why (recorded)' });
  let known = [];

  async function step(url, body) {
    try {
      await api(url, { method: 'POST', body });
      setText(error, '');
      await refresh();
    } catch (e) {
      setText(error, e.message);
    }
  }

  function needReason() {
    const why = reason.value.trim();
    if (!why) setText(error, 'Give a reason first: it is recorded with the step');
    return why;
  }

  function actions(d) {
    if (!admin || !d.active) return '';
    const url = `/api/v1/models/deployments/${encodeURIComponent(d.id)}`;
    const button = (label, test, run) => {
      const b = h('button', { type: 'button', 'data-test': test }, label);
      b.addEventListener('click', () => { const why = needReason(); if (why) run(why); });
      return b;
    };
    const inForce = d.rollout && ['ROLLOUT_STATE_RUNNING', 'ROLLOUT_STATE_HELD'].includes(d.rollout.state);
    const nodeId = d.nodeId || '';
    return [
      inForce ? button('Promote', 'promote', (why) => step(`${url}/decide`, { promote: true, reason: why, nodeId })) : null,
      inForce ? button('Roll back', 'rollback', (why) => step(`${url}/decide`, { promote: false, reason: why, nodeId })) : null,
      button('Withdraw', 'withdraw', (why) => step(`${url}/withdraw`, { reason: why, nodeId })),
    ];
  }

  async function refresh() {
    const [p, d] = await Promise.all([api('/api/v1/models/packages'), api('/api/v1/models/deployments')]);
    known = arr(p.packages).filter(Boolean);
    packages.replaceChildren(known.length
      ? table(['Package', 'Author', 'Signed by', 'Registered'], known.map((k) => h('tr', { 'data-test': 'package' },
        h('td', {}, `${k.kind}@${k.version}`), h('td', {}, String(k.author ?? '')),
        h('td', {}, k.signer ? `${k.signer.slice(0, 16)}…` : 'unsigned'),
        h('td', {}, `${fmtTime(k.registeredAt)} by ${k.registeredBy ?? ''}`))))
      : h('p', { class: 'muted' }, 'No packages registered.'));
    const rows = arr(d.deployments).filter(Boolean).map((x) => h('tr', {
      'data-test': 'deployment', 'data-id': String(x.id), 'data-node': x.nodeId || '',
      class: x.rollout?.state === 'ROLLOUT_STATE_ROLLED_BACK' ? 'abnormal' : '',
    },
    h('td', {}, String(x.id)), h('td', {}, x.nodeId || ''), h('td', {}, `${x.kind}@${x.version}`), h('td', {}, MODES[x.mode] || ''),
    h('td', {}, target(x)), h('td', {}, String(x.by ?? '')), h('td', { 'data-test': 'deployment-state' }, stateText(x)),
    h('td', {}, figures(x)), h('td', {}, actions(x))));
    deployments.replaceChildren(rows.length
      ? table(['Id', 'Node', 'Package', 'Mode', 'To', 'By', 'State', 'Figures', ''], rows)
      : h('p', { class: 'muted' }, 'No deployments.'));
    const missing = arr(d.unavailable).filter(Boolean);
    unavailable.replaceChildren(missing.length
      ? h('p', { class: 'abnormal', 'data-test': 'deployments-unavailable' }, `Not listed: node(s) ${missing.join(', ')} did not answer.`)
      : '');
    if (admin) fillPackages();
  }

  // Registering a package file, for admins: chosen from disk or pasted.
  const packageText = h('textarea', {
    'data-test': 'register-text', id: 'register-text', rows: '6', spellcheck: 'false',
    placeholder: '[package]\nkind = "degradation"\nversion = "1.1.0"\n…',
  });
  const packageFile = h('input', { 'data-test': 'register-file', type: 'file', accept: '.toml,.json,text/plain' });
  const registerBtn = h('button', { type: 'button', class: 'primary', 'data-test': 'register' }, 'Register');
  const registered = h('span', { 'data-test': 'register-result', class: 'muted' });
  packageFile.addEventListener('change', async () => {
    const file = packageFile.files?.[0];
    if (file) packageText.value = await file.text();
  });
  registerBtn.addEventListener('click', async () => {
    const text = packageText.value;
    if (!text.trim()) { setText(error, 'Choose or paste a package file first'); return; }
    try {
      const r = await api('/api/v1/models/packages', { method: 'POST', body: { package: text } });
      const p = r.package || {};
      setText(registered, `${r.new ? 'Registered' : 'Already registered:'} ${p.kind}@${p.version}`);
      setText(error, '');
      packageText.value = '';
      await refresh();
      if (p.kind) pkg.value = `${p.kind}@${p.version}`;
    } catch (e) {
      setText(registered, '');
      setText(error, e.message);
    }
  });
  const registerForm = admin ? h('div', { 'data-test': 'register-form' },
    h('div', { class: 'row' }, h('label', { for: 'register-text' }, 'Package file'), packageFile),
    h('div', { class: 'row' }, packageText),
    h('div', { class: 'row' }, registerBtn, registered)) : null;

  // The deploy form, for admins.
  const pkg = h('select', { 'data-test': 'deploy-package', id: 'deploy-package' });
  const twinType = h('input', { 'data-test': 'deploy-type', placeholder: 'twin type (press)' });
  const prefix = h('input', { 'data-test': 'deploy-prefix', placeholder: 'path prefix (acme/plant-a/line-2)' });
  const mode = h('select', { 'data-test': 'deploy-mode' },
    Object.entries(MODES).map(([value, label]) => h('option', { value }, label)));
  const fraction = h('input', { 'data-test': 'deploy-fraction', type: 'number', step: 'any', value: '0.5' });
  const windowSecs = h('input', { 'data-test': 'deploy-window', type: 'number', step: 'any', value: '600' });
  const maxDivergence = h('input', { 'data-test': 'deploy-max-divergence', type: 'number', step: 'any', placeholder: 'none' });
  const autoPromote = h('input', { 'data-test': 'deploy-auto-promote', type: 'checkbox' });
  const evaluateHours = h('input', { 'data-test': 'deploy-evaluate', type: 'number', step: 'any', min: '0', placeholder: 'none' });
  const deployBtn = h('button', { type: 'button', class: 'primary', 'data-test': 'deploy' }, 'Deploy');
  function fillPackages() {
    const current = pkg.value;
    pkg.replaceChildren(...known.map((k) => h('option', { value: `${k.kind}@${k.version}` }, `${k.kind}@${k.version}`)));
    if (current) pkg.value = current;
  }
  deployBtn.addEventListener('click', () => {
    const [kind, version] = String(pkg.value).split('@');
    const body = { kind, version, twinType: twinType.value.trim(), pathPrefix: prefix.value.trim(), mode: mode.value };
    if (mode.value === 'DEPLOY_MODE_CANARY') {
      body.canary = {
        fraction: Number(fraction.value), perLine: 1, minDurationSecs: Number(windowSecs.value),
        autoPromote: autoPromote.checked,
      };
      if (maxDivergence.value !== '') body.canary.maxDivergence = Number(maxDivergence.value);
    }
    if (mode.value === 'DEPLOY_MODE_SHADOW' && evaluateHours.value !== '') {
      body.evaluationSecs = Number(evaluateHours.value) * 3600;
    }
    step('/api/v1/models/deployments', body);
  });
  const form = admin ? h('section', { class: 'panel', 'data-test': 'deploy-form' }, h('h2', {}, 'Deploy'),
    h('div', { class: 'row' }, h('label', { for: 'deploy-package' }, 'Package'), pkg, mode),
    h('div', { class: 'row' }, twinType, prefix),
    h('div', { class: 'row' }, h('span', {}, 'Shadow: evaluate over (h, at least one production cycle)'), evaluateHours),
    h('div', { class: 'row' }, h('span', {}, 'Canary: fraction'), fraction, h('span', {}, 'window (s)'), windowSecs,
      h('span', {}, 'max mean |Δ|'), maxDivergence, h('label', {}, autoPromote, ' promote by itself')),
    h('div', { class: 'row' }, deployBtn)) : null;

  container.append(h('h1', {}, 'Models'), error,
    h('section', { class: 'panel' }, h('h2', {}, 'Packages'), packages, registerForm), form,
    h('section', { class: 'panel' }, h('h2', {}, 'Deployments'),
      admin ? h('div', { class: 'row' }, h('label', { for: 'model-reason' }, 'Reason'), reason) : null, unavailable, deployments));
  const poller = poll(async () => {
    try { await refresh(); } catch (e) { setText(error, e.message); }
  }, 3000);
  return () => poller.stop();
}
