// unit.js — the machines under a line, 100 per page, kept live by a watch on the prefix.

import { api, watch, qs } from './api.js';
import {
  h, arr, table, setText, errorLine, severityBadge, severityRank, runStateBadge, fmtPercent,
  twinHref, unitHref, parentPath,
} from './dom.js';

const PAGE_SIZE = 100;

/** The summary columns of a full Twin (from a snapshot). */
function summarize(t) {
  const alarms = arr(t.alarms);
  const worst = alarms.reduce((w, a) => (severityRank(a?.severity) > severityRank(w) ? a.severity : w), '');
  return { ...t, alarmCount: alarms.length, worstSeverity: worst };
}

export async function render(container, ctx) {
  const prefix = ctx.params.path || '';
  const tokens = [''];
  let page = 0;
  let nextToken = '';
  let loadSeq = 0;
  let refetchTimer = null;
  const rows = new Map();

  const error = errorLine('unit-error');
  const status = h('span', { class: 'muted' });
  const tbody = h('tbody');
  const prev = h('button', { type: 'button', 'data-test': 'prev-page', disabled: true }, 'Previous');
  const next = h('button', { type: 'button', 'data-test': 'next-page', disabled: true }, 'Next');
  const pageLabel = h('span', { class: 'muted' });
  const up = parentPath(prefix);
  container.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/overview' }, 'Overview'),
      up ? [' / ', h('a', { href: unitHref(up) }, up)] : null),
    h('h1', {}, prefix || 'All twins', ' ', status),
    error,
    table(['Twin', 'Type', 'Run state', 'Health', 'Alarms', 'Worst severity', 'Version'], tbody),
    h('div', { class: 'pager' }, prev, pageLabel, next));

  function cells(t) {
    const path = String(t.assetPath ?? '');
    const count = Number(t.alarmCount) || 0;
    return [
      h('td', {}, h('a', { 'data-test': 'twin-link', href: twinHref(path) }, path.startsWith(`${prefix}/`) ? path.slice(prefix.length + 1) : path)),
      h('td', {}, String(t.twinType ?? '')),
      h('td', {}, runStateBadge(t.runState, { 'data-test': 'run-state' })),
      h('td', { class: 'num' }, fmtPercent(t.health)),
      h('td', { class: 'num' }, count),
      h('td', {}, severityBadge(t.worstSeverity)),
      h('td', { class: 'num', 'data-test': 'version' }, String(t.version ?? '')),
    ];
  }

  function setRow(t) {
    const row = rows.get(t.assetPath);
    if (!row) return;
    row.data = { ...row.data, ...t };
    row.tr.replaceChildren(...cells(row.data));
  }

  async function load() {
    const seq = ++loadSeq;
    try {
      const res = await api(`/api/v1/twins?${qs({ pathPrefix: prefix, pageSize: PAGE_SIZE, pageToken: tokens[page] })}`);
      if (seq !== loadSeq) return;
      setText(error, '');
      rows.clear();
      const trs = arr(res.twins).slice(0, PAGE_SIZE).filter(Boolean).map((t) => {
        const tr = h('tr', { 'data-test': 'twin-row', 'data-path': String(t.assetPath ?? '') }, cells(t));
        rows.set(t.assetPath, { tr, data: t });
        return tr;
      });
      tbody.replaceChildren(...(trs.length ? trs : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No twins here.'))]));
      nextToken = res.nextPageToken || '';
      prev.disabled = page === 0;
      next.disabled = !nextToken;
      pageLabel.textContent = `page ${page + 1}`;
    } catch (e) {
      if (seq === loadSeq) setText(error, e.message);
    }
  }

  function refetchSoon() {
    if (refetchTimer) return;
    refetchTimer = setTimeout(() => { refetchTimer = null; load(); }, 500);
  }

  prev.addEventListener('click', () => { if (page > 0) { page -= 1; load(); } });
  next.addEventListener('click', () => {
    if (!nextToken) return;
    tokens[page + 1] = nextToken;
    tokens.length = page + 2;
    page += 1;
    load();
  });

  function onEvent(name, data) {
    if (!data) return;
    if (name === 'snapshot') {
      setRow(summarize(data));
    } else if (name === 'coalesced') {
      refetchSoon();
    } else if (name === 'change') {
      const row = rows.get(data.assetPath);
      if (!row) return;
      const update = { assetPath: data.assetPath, version: data.version };
      if (data.tripped) update.runState = 'RUN_STATE_TRIPPED';
      const running = arr(data.desired?.values).find((v) => v?.name === 'running');
      if (running && row.data.runState !== 'RUN_STATE_TRIPPED') {
        update.runState = running.value?.boolValue ? 'RUN_STATE_RUNNING' : 'RUN_STATE_STOPPED';
      }
      setRow(update);
      if (data.alarmRaised || data.alarmCleared || data.tripsCleared || data.restarted) refetchSoon();
    }
  }

  await load();
  const stop = watch(prefix, onEvent, (state) => {
    status.textContent = state === 'live' ? '' : '(reconnecting…)';
  });
  return () => {
    stop();
    clearTimeout(refetchTimer);
    loadSeq += 1;
  };
}
