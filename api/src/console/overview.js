// overview.js — the plant overview: one row per line with its machines' run states,
// alarms and health, grouped under plant headings; refreshed every 2 s.

import { api } from './api.js';
import {
  h, arr, table, setText, poll, errorLine, severityBadge, severityRank, fmtPercent,
  unitHref, twinHref,
} from './dom.js';

const plantOf = (path) => String(path || '').split('/').slice(0, 2).join('/');
const num = (v) => Number(v) || 0;

function groupRow(g) {
  const path = String(g.path ?? '');
  const tripped = num(g.tripped);
  const unack = num(g.unacknowledged);
  return h('tr', { 'data-test': 'group', 'data-path': path },
    h('td', {}, h('a', { 'data-test': 'group-link', href: unitHref(path) }, path || '(root)')),
    h('td', { class: 'num' }, num(g.twins)),
    h('td', { class: 'num' }, num(g.running)),
    h('td', { class: 'num' }, num(g.stopped)),
    h('td', { class: 'num' }, tripped ? h('span', { class: 'badge tripped' }, `${tripped} tripped`) : '0'),
    h('td', { class: 'num' }, num(g.alarms)),
    h('td', { class: 'num' }, unack ? h('span', { class: 'badge unack-count' }, `${unack} unack`) : '0'),
    h('td', {}, severityBadge(g.worstSeverity)),
    h('td', { class: 'num' }, fmtPercent(g.minHealth)),
    h('td', {}, g.worstTwin ? h('a', { href: twinHref(g.worstTwin) }, String(g.worstTwin).split('/').pop()) : '—'));
}

function draw(body, data) {
  const groups = arr(data.groups).filter(Boolean).sort((a, b) => String(a.path).localeCompare(String(b.path)));
  const plants = new Map();
  for (const g of groups) {
    const key = plantOf(g.path);
    if (!plants.has(key)) plants.set(key, []);
    plants.get(key).push(g);
  }
  const sections = [];
  for (const [plant, lines] of plants) {
    const worst = lines.reduce((w, g) => (severityRank(g.worstSeverity) > severityRank(w) ? g.worstSeverity : w), '');
    const tripped = lines.reduce((n, g) => n + num(g.tripped), 0);
    sections.push(h('section', { class: 'plant', 'data-test': 'plant', 'data-path': plant },
      h('h2', {}, plant || '(root)', ' ',
        severityRank(worst) ? severityBadge(worst) : h('span', { class: 'muted' }, 'no standing alarms'),
        tripped ? h('span', { class: 'badge tripped' }, `${tripped} tripped`) : null),
      table(['Line', 'Twins', 'Running', 'Stopped', 'Tripped', 'Alarms', 'Unacknowledged',
        'Worst severity', 'Min health', 'Worst twin'], lines.map(groupRow))));
  }
  if (!sections.length) sections.push(h('p', { class: 'muted' }, 'No twins.'));
  body.replaceChildren(h('p', { class: 'muted' }, `${num(data.twins)} twins`), ...sections);
}

export async function render(container, ctx) {
  const error = errorLine('overview-error');
  const body = h('div');
  container.append(h('h1', {}, 'Overview'), error, body);
  const poller = poll(async () => {
    try {
      const data = await api('/api/v1/overview');
      setText(error, '');
      draw(body, data);
      ctx.setUnacked?.(arr(data.groups).reduce((n, g) => n + num(g?.unacknowledged), 0));
    } catch (e) {
      setText(error, e.message);
    }
  }, 2000);
  return () => poller.stop();
}
