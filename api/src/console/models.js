// models.js — the node's model registry and deployments: packages, shadows and
// canaries with their figures. An admin deploys a package, promotes or rolls back a
// canary and withdraws a deployment; every step is audited on each twin it changes.

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
  return d.active ? 'in force' : `withdrawn (${d.withdrawn || ''})`;
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
    return [
      inForce ? button('Promote', 'promote', (why) => step(`${url}/decide`, { promote: true, reason: why })) : null,
      inForce ? button('Roll back', 'rollback', (why) => step(`${url}/decide`, { promote: false, reason: why })) : null,
      button('Withdraw', 'withdraw', (why) => step(`${url}/withdraw`, { reason: why })),
    ];
  }

  async function refresh() {
    const [p, d] = await Promise.all([api('/api/v1/models/packages'), api('/api/v1/models/deployments')]);
    known = arr(p.packages).filter(Boolean);
    packages.replaceChildren(known.length
      ? table(['Package', 'Author', 'Signed by', 'Registered'], known.map((k) => h('tr', { 'data-test': 'package' },
        h('td', {}, `${k.kind}@${k.version}`), h('td', {}, String(k.author ?? '')),
        h('td', {}, k.signer ? `${k.signer.slice(0, 16)}…` : 'unsigned'), h('td', {}, fmtTime(k.registeredAt)))))
      : h('p', { class: 'muted' }, 'No packages registered.'));
    const rows = arr(d.deployments).filter(Boolean).map((x) => h('tr', {
      'data-test': 'deployment', 'data-id': String(x.id), class: x.rollout?.state === 'ROLLOUT_STATE_ROLLED_BACK' ? 'abnormal' : '',
    },
    h('td', {}, String(x.id)), h('td', {}, `${x.kind}@${x.version}`), h('td', {}, MODES[x.mode] || ''),
    h('td', {}, target(x)), h('td', {}, String(x.by ?? '')), h('td', { 'data-test': 'deployment-state' }, stateText(x)),
    h('td', {}, figures(x)), h('td', {}, actions(x))));
    deployments.replaceChildren(rows.length
      ? table(['Id', 'Package', 'Mode', 'To', 'By', 'State', 'Figures', ''], rows)
      : h('p', { class: 'muted' }, 'No deployments.'));
    if (admin) fillPackages();
  }

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
    step('/api/v1/models/deployments', body);
  });
  const form = admin ? h('section', { class: 'panel', 'data-test': 'deploy-form' }, h('h2', {}, 'Deploy'),
    h('div', { class: 'row' }, h('label', { for: 'deploy-package' }, 'Package'), pkg, mode),
    h('div', { class: 'row' }, twinType, prefix),
    h('div', { class: 'row' }, h('span', {}, 'Canary: fraction'), fraction, h('span', {}, 'window (s)'), windowSecs,
      h('span', {}, 'max mean |Δ|'), maxDivergence, h('label', {}, autoPromote, ' promote by itself')),
    h('div', { class: 'row' }, deployBtn)) : null;

  container.append(h('h1', {}, 'Models'), error,
    h('section', { class: 'panel' }, h('h2', {}, 'Packages'), packages), form,
    h('section', { class: 'panel' }, h('h2', {}, 'Deployments'),
      admin ? h('div', { class: 'row' }, h('label', { for: 'model-reason' }, 'Reason'), reason) : null, deployments));
  const poller = poll(async () => {
    try { await refresh(); } catch (e) { setText(error, e.message); }
  }, 3000);
  return () => poller.stop();
}
