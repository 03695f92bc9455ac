// diagnostic.js — the audit trail (commands, safety actions, deliveries, alarm
// responses) with filters and paging, what the node's connectors received, and what its
// supervisors did (restarts from durable state, escalations).

import { api, qs } from './api.js';
import {
  h, fill, arr, table, setText, poll, errorLine, fmtTime, fmtNamed, verdictText, verdictClass, enumName,
  twinHref, words,
} from './dom.js';

const PAGE_SIZE = 100;
const KINDS = ['AUDIT_KIND_COMMAND', 'AUDIT_KIND_SAFETY_ACTION', 'AUDIT_KIND_DELIVERED',
  'AUDIT_KIND_DELIVERY_FAILED', 'AUDIT_KIND_ALARM_RESPONSE', 'AUDIT_KIND_MODEL_DEPLOYMENT',
  'AUDIT_KIND_ANNOTATION'];
const kindLabel = (k) => words(enumName(k, 'AUDIT_KIND_')) || '—';

/** A datetime-local value as RFC 3339 (UTC), or ''. */
function rfc3339(local) {
  if (!local) return '';
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

const isNumeric = (v) => typeof v === 'number' || (typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v));

/** Every numeric field of an object as [name, value] pairs, nested names joined by dots. */
function numericPairs(obj, prefix = '') {
  const out = [];
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (isNumeric(v)) out.push([key, v]);
    else if (Array.isArray(v)) {
      for (const x of v) {
        if (!x || typeof x !== 'object') continue;
        const label = x.reason ?? x.name ?? x.kind ?? '';
        if (isNumeric(x.count)) out.push([`${key}.${label}`, x.count]);
        else out.push(...numericPairs(x, `${key}.${label}`));
      }
    } else if (v && typeof v === 'object') out.push(...numericPairs(v, key));
  }
  return out;
}

const pairs = (obj) => h('dl', { class: 'pairs' },
  numericPairs(obj).map(([k, v]) => [h('dt', {}, k), h('dd', { class: 'num' }, String(v))]));

function auditRow(r) {
  const path = String(r.assetPath ?? '');
  const origin = r.origin ? `${enumName(r.origin.kind, 'ORIGIN_KIND_').toLowerCase()} ${r.origin.principal || ''}`.trim() : '—';
  const failed = r.kind === 'AUDIT_KIND_DELIVERY_FAILED' || r.kind === 'AUDIT_KIND_SAFETY_ACTION';
  return h('tr', { 'data-test': 'audit-row', 'data-seq': String(r.seq ?? ''), 'data-kind': String(r.kind ?? '') },
    h('td', { class: 'num' }, String(r.seq ?? '')),
    h('td', {}, fmtTime(r.at)),
    h('td', {}, h('a', { href: twinHref(path) }, path)),
    h('td', {}, failed ? h('span', { class: 'badge abn-crit' }, kindLabel(r.kind)) : kindLabel(r.kind)),
    h('td', {}, String(r.command ?? '')),
    h('td', {}, origin),
    h('td', {}, r.verdict ? h('span', { class: verdictClass(r.verdict), 'data-test': 'audit-verdict' }, verdictText(r.verdict)) : '—'),
    h('td', {}, arr(r.requested).length ? fmtNamed(r.requested) : '—'),
    h('td', {}, arr(r.applied).length ? fmtNamed(r.applied) : '—'),
    h('td', { class: 'message' }, String(r.reason ?? '')));
}

export async function render(container) {
  const tokens = [''];
  let page = 0;
  let nextToken = '';
  let records = [];
  let loadSeq = 0;

  const prefix = h('input', { type: 'text', id: 'audit-prefix', 'data-test': 'audit-prefix', placeholder: 'acme/plant-a' });
  const kind = h('select', { id: 'audit-kind', 'data-test': 'audit-kind' },
    h('option', { value: '' }, 'any'), KINDS.map((k) => h('option', { value: k }, kindLabel(k))));
  const from = h('input', { type: 'datetime-local', id: 'audit-from', 'data-test': 'audit-from', step: 1 });
  const to = h('input', { type: 'datetime-local', id: 'audit-to', 'data-test': 'audit-to', step: 1 });
  const form = h('form', { class: 'filters' },
    h('label', { for: 'audit-prefix' }, 'Under'), prefix,
    h('label', { for: 'audit-kind' }, 'Kind'), kind,
    h('label', { for: 'audit-from' }, 'From'), from,
    h('label', { for: 'audit-to' }, 'To'), to,
    h('button', { type: 'submit', 'data-test': 'audit-apply' }, 'Apply'));
  const error = errorLine('audit-error');
  const tbody = h('tbody');
  const prev = h('button', { type: 'button', 'data-test': 'prev-page', disabled: true }, 'Previous');
  const next = h('button', { type: 'button', 'data-test': 'next-page', disabled: true }, 'Next');
  const pageLabel = h('span', { class: 'muted' });
  const statusError = errorLine('status-error');
  const status = h('div');
  let filter = { pathPrefix: '', from: '', to: '', kinds: '' };

  container.append(h('h1', {}, 'Diagnostics'), h('h2', {}, 'Audit trail'), form, error,
    table(['Seq', 'At', 'Twin', 'Kind', 'Command', 'Origin', 'Verdict', 'Requested', 'Applied', 'Reason'], tbody),
    h('div', { class: 'pager' }, prev, pageLabel, next),
    h('h2', {}, 'Connectors'), statusError, status);

  function drawRecords() {
    const shown = records;
    tbody.replaceChildren(...(shown.length ? shown.map(auditRow)
      : [h('tr', {}, h('td', { colspan: 10, class: 'muted' }, 'No records on this page.'))]));
  }

  async function load() {
    const seq = ++loadSeq;
    try {
      const res = await api(`/api/v1/audit?${qs({ ...filter, pageSize: PAGE_SIZE, pageToken: tokens[page] })}`);
      if (seq !== loadSeq) return;
      setText(error, '');
      records = arr(res.records).filter(Boolean).slice(0, PAGE_SIZE);
      nextToken = res.nextPageToken || '';
      prev.disabled = page === 0;
      next.disabled = !nextToken;
      pageLabel.textContent = `page ${page + 1}`;
      drawRecords();
    } catch (e) {
      if (seq === loadSeq) setText(error, e.message);
    }
  }

  // The node filters by kind, so every page holds records of the kind chosen.
  function apply() {
    filter = {
      pathPrefix: prefix.value.trim(), from: rfc3339(from.value), to: rfc3339(to.value), kinds: kind.value,
    };
    tokens.length = 1;
    page = 0;
    load();
  }
  form.addEventListener('submit', (ev) => { ev.preventDefault(); apply(); });
  kind.addEventListener('change', apply);
  prev.addEventListener('click', () => { if (page > 0) { page -= 1; load(); } });
  next.addEventListener('click', () => {
    if (!nextToken) return;
    tokens[page + 1] = nextToken;
    tokens.length = page + 2;
    page += 1;
    load();
  });

  function drawStatus(st) {
    const connectors = arr(st.connectors).filter(Boolean).map((c) => h('tr', { 'data-test': 'connector', 'data-name': String(c.name ?? '') },
      h('td', {}, String(c.name ?? '')),
      h('td', {}, String(c.kind ?? '')),
      h('td', {}, c.connected === false ? h('span', { class: 'badge abn-crit' }, 'disconnected') : c.connected ? 'connected' : '—'),
      h('td', {}, pairs(c))));
    const sources = arr(st.sources).filter(Boolean).map((src) => h('tr', {},
      h('td', {}, String(src.name ?? '')), h('td', {}, pairs(src.readings))));
    // Newest first: restarts from durable state and escalations.
    const supervision = arr(st.supervision).filter(Boolean).reverse().map((r) => h('tr', {
      'data-test': 'supervision', class: r.child ? '' : 'row-tripped',
    },
      h('td', {}, fmtTime(r.at)),
      h('td', {}, String(r.supervisor ?? '')),
      h('td', {}, r.child ? `restarted ${r.child}` : 'escalated'),
      h('td', {}, String(r.reason ?? ''))));
    fill(status,
      h('p', { class: 'muted' }, `At ${fmtTime(st.at)} · ${Number(st.twins) || 0} twins`),
      st.readings ? [h('h3', {}, 'Node readings'), pairs(st.readings)] : '',
      connectors.length ? table(['Connector', 'Kind', 'Connection', 'Counts'], connectors) : h('p', { class: 'muted' }, 'No connectors.'),
      sources.length ? [h('h3', {}, 'Sources'), table(['Source', 'Readings'], sources)] : '',
      h('h3', {}, 'Supervision'),
      supervision.length ? table(['At', 'Supervisor', 'Action', 'Why'], supervision)
        : h('p', { class: 'muted' }, 'No restarts or escalations.'));
  }

  const poller = poll(async () => {
    try { drawStatus(await api('/api/v1/status')); setText(statusError, ''); } catch (e) { setText(statusError, e.message); }
  }, 5000);
  await load();
  return () => { poller.stop(); loadSeq += 1; };
}
