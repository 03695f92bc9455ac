// cluster.js — this node's view of its cluster: members, where the fleet planners run,
// and the replication links with their lag and outbox depth. Fields are rendered
// generically, so new ones show up as they come.

import { api } from './api.js';
import { h, arr, table, setText, poll, errorLine, fmtScalar, fmtTime, fmtDuration, words } from './dom.js';

const ORDER = ['members', 'planners', 'links'];
const TITLES = { members: 'Members', planners: 'Planners', links: 'Replication links' };
const HEALTH_FLAGS = new Set(['live', 'connected']);
const TIMESTAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/;
const DURATION = /^-?[\d.]+s$/;

/** One value as a cell's content; a false liveness flag is an abnormal state. */
function cell(key, v) {
  if (HEALTH_FLAGS.has(key) && v === false) return h('span', { class: 'badge abn-crit' }, key === 'live' ? 'down' : 'disconnected');
  if (HEALTH_FLAGS.has(key) && v === true) return key === 'live' ? 'live' : 'connected';
  if (typeof v === 'string' && TIMESTAMP.test(v)) return fmtTime(v);
  if (typeof v === 'string' && DURATION.test(v)) return fmtDuration(v);
  return fmtScalar(v);
}

function listTable(key, items) {
  const rows = items.filter((x) => x && typeof x === 'object');
  const columns = [];
  for (const item of rows) for (const k of Object.keys(item)) if (!columns.includes(k)) columns.push(k);
  return h('section', { class: 'panel', 'data-test': `cluster-${key}` },
    h('h2', {}, TITLES[key] || words(key)),
    rows.length
      ? table(columns.map(words), rows.map((item) => h('tr', { 'data-test': 'cluster-row' },
        columns.map((c) => h('td', {}, cell(c, item[c]))))))
      : h('p', { class: 'muted' }, 'None.'));
}

function draw(body, data) {
  const scalars = Object.entries(data).filter(([, v]) => !Array.isArray(v));
  const lists = Object.keys(data).filter((k) => Array.isArray(data[k]))
    .sort((a, b) => (ORDER.indexOf(a) + 1 || 99) - (ORDER.indexOf(b) + 1 || 99));
  body.replaceChildren(
    h('dl', { class: 'facts' }, scalars.map(([k, v]) => [h('dt', {}, words(k)), h('dd', {}, cell(k, v))])),
    ...lists.map((k) => listTable(k, arr(data[k]))));
}

export async function render(container) {
  const error = errorLine('cluster-error');
  const body = h('div');
  container.append(h('h1', {}, 'Cluster'), error, body);
  let standalone = false;
  const poller = poll(async () => {
    if (standalone) return;
    try {
      draw(body, await api('/api/v1/cluster'));
      setText(error, '');
    } catch (e) {
      if (e.status === 404) {
        standalone = true;
        body.replaceChildren(h('p', { 'data-test': 'no-cluster' }, 'This node is not part of a cluster'));
      } else {
        setText(error, e.message);
      }
    }
  }, 2000);
  return () => poller.stop();
}
