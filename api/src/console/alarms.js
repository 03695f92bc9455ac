// alarms.js — the alarm list (ISA-18.2): counts, alarm rate, chattering alarms, and every
// alarm by severity then time, 100 per page; operators acknowledge, shelve and unshelve.

import { api, qs, twinUrl, canRespond } from './api.js';
import {
  h, arr, table, setText, poll, errorLine, severityBadge, severityRank, fmtTime, twinHref,
} from './dom.js';

const PAGE_SIZE = 100;
// Read twice a second, so a new alarm shows within a second of being raised.
const REFRESH_MS = 500;
const keyOf = (item) => `${item.assetPath}\u0000${item.alarm?.code ?? ''}`;

function sortAlarms(items) {
  return items.sort((a, b) =>
    severityRank(b.alarm.severity) - severityRank(a.alarm.severity) ||
    (Date.parse(b.alarm.since || '') || 0) - (Date.parse(a.alarm.since || '') || 0) ||
    String(a.assetPath).localeCompare(String(b.assetPath)));
}

export async function render(container, ctx) {
  const actor = canRespond(ctx.caller);
  let page = 0;
  let items = [];
  let filter = { pathPrefix: '', standingOnly: false };
  let shelving = null; // {key, reason, seconds}: the open shelve form
  const cache = new Map(); // key → {sig, tr}

  const error = errorLine('alarm-error');
  const counts = h('div', { class: 'counts', 'data-test': 'alarm-counts' });
  const extra = h('div');
  const tbody = h('tbody');
  const prev = h('button', { type: 'button', 'data-test': 'prev-page', disabled: true }, 'Previous');
  const next = h('button', { type: 'button', 'data-test': 'next-page', disabled: true }, 'Next');
  const pageLabel = h('span', { class: 'muted' });
  const prefixInput = h('input', { type: 'text', 'data-test': 'alarm-prefix', placeholder: 'path prefix', id: 'alarm-prefix' });
  const standing = h('input', { type: 'checkbox', 'data-test': 'alarm-standing', id: 'alarm-standing' });
  const filterForm = h('form', { class: 'filters' },
    h('label', { for: 'alarm-prefix' }, 'Under'), prefixInput,
    h('label', { for: 'alarm-standing' }, standing, ' standing only'),
    h('button', { type: 'submit' }, 'Apply'));
  container.append(h('h1', {}, 'Alarms'), filterForm, error, counts, extra,
    table(['Twin', 'Severity', 'State', 'Code', 'Message', 'Since', ...(actor ? ['Response'] : [])], tbody),
    h('div', { class: 'pager' }, prev, pageLabel, next));

  function showError(text, source) {
    setText(error, text);
    error.dataset.source = source;
  }

  /** Sends an alarm response, then refreshes the list. */
  async function act(path, code, verb, body, onDone = () => {}) {
    showError('', 'action');
    try {
      await api(twinUrl(path, `/alarms/${encodeURIComponent(code)}/${verb}`), { method: 'POST', body });
      onDone();
    } catch (e) {
      showError(`${verb} ${code} on ${path}: ${e.message}`, 'action');
    }
    poller.now();
  }

  function shelveForm(item, key) {
    const reason = h('input', { type: 'text', 'data-test': 'shelve-reason', placeholder: 'reason', value: shelving.reason });
    const seconds = h('input', { type: 'number', 'data-test': 'shelve-seconds', min: 1, step: 1, value: shelving.seconds });
    reason.addEventListener('input', () => { if (shelving?.key === key) shelving.reason = reason.value; });
    seconds.addEventListener('input', () => { if (shelving?.key === key) shelving.seconds = seconds.value; });
    const cancel = h('button', { type: 'button' }, 'Cancel');
    cancel.addEventListener('click', () => { shelving = null; draw(); });
    const form = h('form', { class: 'inline' }, reason, seconds, ' s ',
      h('button', { type: 'submit', 'data-test': 'shelve-submit' }, 'Shelve'), cancel);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const secs = Math.round(Number(seconds.value));
      if (!reason.value.trim()) { showError('Shelving needs a reason', 'action'); return; }
      if (!(secs > 0)) { showError('Shelving needs a duration in seconds', 'action'); return; }
      await act(item.assetPath, item.alarm.code, 'shelve', { reason: reason.value.trim(), duration: `${secs}s` },
        () => { shelving = null; });
    });
    return form;
  }

  function actions(item, key) {
    const a = item.alarm;
    const buttons = [];
    const button = (test, label, fn) => {
      const b = h('button', { type: 'button', 'data-test': test }, label);
      b.addEventListener('click', fn);
      buttons.push(b);
    };
    if (!a.acknowledged) button('ack', 'Acknowledge', () => act(item.assetPath, a.code, 'acknowledge', { note: '' }));
    if (a.shelved || a.state === 'shelved') {
      button('unshelve', 'Unshelve', () => act(item.assetPath, a.code, 'unshelve', { note: '' }));
    } else if (shelving?.key === key) {
      buttons.push(shelveForm(item, key));
    } else {
      button('shelve', 'Shelve…', () => { shelving = { key, reason: '', seconds: '3600' }; draw(); });
    }
    return buttons;
  }

  function row(item, key) {
    const a = item.alarm;
    const path = String(item.assetPath ?? '');
    const shelvedNote = a.shelved ? ` until ${fmtTime(a.shelvedUntil)} by ${a.shelved.by || '?'}: ${a.shelved.note || ''}` : '';
    return h('tr', { 'data-test': 'alarm-row', 'data-path': path, 'data-code': String(a.code ?? ''), 'data-state': String(a.state ?? '') },
      h('td', {}, h('a', { href: twinHref(path) }, path)),
      h('td', {}, severityBadge(a.severity, !a.acknowledged)),
      h('td', {}, String(a.state ?? ''), shelvedNote ? h('span', { class: 'muted' }, shelvedNote) : null),
      h('td', {}, String(a.code ?? '')),
      h('td', { class: 'message' }, String(a.message ?? '')),
      h('td', {}, fmtTime(a.since)),
      actor ? h('td', { class: 'actions' }, actions(item, key)) : null);
  }

  /** Draws the current page, reusing rows whose alarm did not change (keeps focus). */
  function draw() {
    const pages = Math.max(1, Math.ceil(items.length / PAGE_SIZE));
    page = Math.min(page, pages - 1);
    const slice = items.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
    const seen = new Set();
    const trs = slice.map((item) => {
      const key = keyOf(item);
      seen.add(key);
      const sig = JSON.stringify(item.alarm) + (shelving?.key === key ? '\u0000open' : '');
      const hit = cache.get(key);
      if (hit && hit.sig === sig) return hit.tr;
      const tr = row(item, key);
      cache.set(key, { sig, tr });
      return tr;
    });
    for (const key of cache.keys()) if (!seen.has(key)) cache.delete(key);
    if (!trs.length) trs.push(h('tr', {}, h('td', { colspan: actor ? 7 : 6, class: 'muted' }, 'No alarms.')));
    // Only remove, insert or move the rows that changed, so an open form keeps its focus.
    const wanted = new Set(trs);
    for (const tr of Array.from(tbody.children)) if (!wanted.has(tr)) tr.remove();
    let cursor = tbody.firstChild;
    for (const tr of trs) {
      if (tr === cursor) cursor = cursor.nextSibling;
      else tbody.insertBefore(tr, cursor);
    }
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
    pageLabel.textContent = items.length
      ? `${page * PAGE_SIZE + 1}–${page * PAGE_SIZE + slice.length} of ${items.length}` : '';
  }

  function drawCounts(res) {
    const c = res.counts || {};
    const count = (test, label, n, abn) => h('span', { class: `count-item${abn && Number(n) ? ' abn' : ''}`, 'data-test': test },
      label, ' ', h('b', {}, String(Number(n) || 0)));
    counts.replaceChildren(
      count('count-standing', 'Standing', c.standing, true),
      count('count-unacknowledged', 'Unacknowledged', c.unacknowledged, true),
      count('count-shelved', 'Shelved', c.shelved),
      count('count-out-of-service', 'Out of service', c.outOfService),
      count('count-suppressed', 'Suppressed', c.suppressed),
      count('activations', 'Activations in 10 min', res.activations10Min));
    const chattering = arr(res.chattering).filter(Boolean);
    const unavailable = arr(res.unavailable);
    extra.replaceChildren(
      chattering.length ? h('div', { class: 'chattering', 'data-test': 'chattering' }, h('h2', {}, 'Chattering'),
        h('ul', {}, chattering.map((x) => h('li', {}, h('span', { class: 'badge abn-warn' }, 'chattering'), ' ',
          h('a', { href: twinHref(x.assetPath) }, String(x.assetPath ?? '')), ` ${x.code ?? ''}: ${Number(x.activations) || 0} activations`)))) : '',
      unavailable.length ? h('p', { class: 'muted' }, `Not answering (their alarms are missing): ${unavailable.join(', ')}`) : '');
    if (!filter.pathPrefix) ctx.setUnacked?.(c.unacknowledged);
  }

  async function load() {
    try {
      const q = qs({ pathPrefix: filter.pathPrefix, standingOnly: filter.standingOnly ? 'true' : '' });
      const res = await api(`/api/v1/alarms${q ? `?${q}` : ''}`);
      items = sortAlarms(arr(res.alarms).filter((x) => x && x.alarm));
      if (error.dataset.source === 'load') showError('', 'load');
      drawCounts(res);
      draw();
    } catch (e) {
      showError(e.message, 'load');
    }
  }

  filterForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    filter = { pathPrefix: prefixInput.value.trim(), standingOnly: standing.checked };
    page = 0;
    poller.now();
  });
  prev.addEventListener('click', () => { page = Math.max(0, page - 1); draw(); });
  next.addEventListener('click', () => { page += 1; draw(); });

  const poller = poll(load, REFRESH_MS);
  return () => poller.stop();
}
