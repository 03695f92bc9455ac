// dom.js — element builders and the formatting every page shares. Text from the server
// only ever becomes text nodes or attribute values, never markup.

const SVG_NS = 'http://www.w3.org/2000/svg';
const URL_ATTRS = new Set(['href', 'src', 'action', 'formaction', 'xlink:href']);

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    const key = name.toLowerCase();
    if (key.startsWith('on')) throw new Error(`event handler attributes are refused: ${name}`);
    if (key === 'style') throw new Error('style attributes are refused; use a class');
    if (value === null || value === undefined || value === false) continue;
    const text = value === true ? '' : String(value);
    if (URL_ATTRS.has(key) && /^\s*(javascript|vbscript|data):/i.test(text)) {
      throw new Error(`refused URL in ${name}`);
    }
    el.setAttribute(name, text);
  }
  return append(el, ...children);
}

/** Appends children: nodes as they are, anything else as a text node; skips empty ones. */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false || child === '') continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces an element's children with the given ones (nested arrays and empties allowed). */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, ...children);
}

/** An HTML element: h('td', {class: 'num'}, 'text', otherNode). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Sets an element's text and hides it while the text is empty. */
export function setText(el, text) {
  el.textContent = text ? String(text) : '';
  el.hidden = !text;
}

/** A table with a header row and the given body rows. */
export function table(headers, rows, attrs = {}) {
  return h('table', { class: 'grid', ...attrs },
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', {}, t)))),
    rows instanceof Node ? rows : h('tbody', {}, rows));
}

/** An error line, hidden while empty. */
export function errorLine(test) {
  return h('p', { class: 'error', role: 'alert', 'data-test': test, hidden: true });
}

export const arr = (x) => (Array.isArray(x) ? x : []);
export const twinHref = (path) => `#/twin/${encodeURIComponent(path || '')}`;
export const unitHref = (path) => `#/unit/${encodeURIComponent(path || '')}`;
export const parentPath = (path) => String(path || '').split('/').slice(0, -1).join('/');

/** Runs fn now and then every `ms` (start to start), one run at a time. */
export function poll(fn, ms) {
  let timer = null;
  let stopped = false;
  let running = false;
  let again = false;
  async function tick() {
    if (stopped) return;
    clearTimeout(timer);
    if (running) { again = true; return; }
    running = true;
    const started = Date.now();
    try { await fn(); } catch (e) { console.error(e); }
    running = false;
    if (stopped) return;
    if (again) { again = false; tick(); return; }
    timer = setTimeout(tick, Math.max(0, ms - (Date.now() - started)));
  }
  tick();
  return { stop() { stopped = true; clearTimeout(timer); }, now: tick };
}

// ---- formatting ----------------------------------------------------------------------

/** An enum name without its prefix: enumName('RUN_STATE_TRIPPED', 'RUN_STATE_') → 'TRIPPED'. */
export function enumName(value, prefix) {
  if (value === null || value === undefined || value === '') return '';
  const text = String(value);
  return text.startsWith(prefix) ? text.slice(prefix.length) : text;
}

const SEVERITIES = ['', 'info', 'warning', 'critical'];
const SEVERITY_RANK = { SEVERITY_INFO: 1, SEVERITY_WARNING: 2, SEVERITY_CRITICAL: 3, 1: 1, 2: 2, 3: 3 };
export const severityRank = (sev) => SEVERITY_RANK[sev] || 0;
export const severityName = (sev) => SEVERITIES[severityRank(sev)];

/** A severity label; `unack` adds the blinking unacknowledged marker. */
export function severityBadge(sev, unack = false) {
  const name = severityName(sev);
  if (!name) return h('span', { class: 'muted' }, '—');
  return h('span', { class: `badge sev-${name}${unack ? ' unack' : ''}` }, name);
}

/** A run state label (TRIPPED in red). */
export function runStateBadge(state, attrs = {}) {
  const name = enumName(state, 'RUN_STATE_') || '—';
  const cls = name === 'TRIPPED' ? 'badge tripped' : 'state';
  return h('span', { class: cls, ...attrs }, name === 'UNSPECIFIED' ? '—' : name);
}

/** A quality label: good is plain, uncertain outlined, STALE and BAD coloured. */
export function qualityBadge(quality) {
  const name = enumName(quality, 'QUALITY_');
  if (!name || name === 'UNSPECIFIED') return h('span', { class: 'muted' }, '—');
  if (name === 'GOOD') return h('span', {}, 'good');
  if (name === 'UNCERTAIN') return h('span', { class: 'badge q-uncertain' }, 'uncertain');
  return h('span', { class: `badge q-${name.toLowerCase()}` }, name);
}

/** A number for a table: integers as they are, fractions to a sensible precision. */
export function fmtNum(v) {
  if (v === null || v === undefined || v === '') return '—';
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  if (Number.isInteger(n)) return String(n);
  const a = Math.abs(n);
  return n.toFixed(a >= 1000 ? 0 : a >= 100 ? 1 : a >= 1 ? 2 : 3);
}

export function fmtPercent(v) {
  const n = Number(v);
  return v === null || v === undefined || !Number.isFinite(n) ? '—' : `${Math.round(n * 100)} %`;
}

/** A typed Value ({floatValue} / {intValue} / {boolValue}) as text. */
export function fmtValue(v) {
  if (!v || typeof v !== 'object') return '—';
  if (v.boolValue !== undefined && v.boolValue !== null) return v.boolValue ? 'true' : 'false';
  if (v.intValue !== undefined && v.intValue !== null) return String(v.intValue);
  if (v.floatValue !== undefined && v.floatValue !== null) {
    const n = Number(v.floatValue);
    return Number.isFinite(n) ? String(Number(n.toPrecision(6))) : String(v.floatValue);
  }
  return '—';
}

/** NamedValues as `a=1, b=true`. */
export function fmtNamed(list) {
  const parts = arr(list).map((nv) => `${nv?.name ?? ''}=${fmtValue(nv?.value)}`);
  return parts.length ? parts.join(', ') : '—';
}

/** A governors' verdict in words; preview, command result and audit all use this. */
export function verdictText(verdict) {
  const v = verdict && verdict.outcome ? verdict.outcome : verdict;
  if (!v || typeof v !== 'object') return '—';
  if (v.accepted) return 'accepted';
  if (v.clamped) {
    const clamps = arr(v.clamped.clamps).map((c) =>
      `${c?.desired ?? ''} ${fmtValue(c?.requested)} → ${fmtValue(c?.applied)}${c?.reason ? ` (${c.reason})` : ''}`);
    return clamps.length ? `clamped: ${clamps.join('; ')}` : 'clamped';
  }
  if (v.denied) return `denied by ${v.denied.governor || 'a governor'}: ${v.denied.reason || 'no reason given'}`;
  return '—';
}

/** The class for a verdict: denied red, clamped amber, accepted plain. */
export function verdictClass(verdict) {
  const v = verdict && verdict.outcome ? verdict.outcome : verdict;
  if (v?.denied) return 'verdict abn-crit';
  if (v?.clamped) return 'verdict abn-warn';
  return 'verdict';
}

const pad = (n) => String(n).padStart(2, '0');

/** An RFC 3339 timestamp in local time, `YYYY-MM-DD HH:MM:SS`. */
export function fmtTime(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A span of seconds: `42 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`. */
export function fmtSpan(seconds) {
  const t = Math.max(0, Math.floor(Number(seconds) || 0));
  if (t < 60) return `${t} s`;
  if (t < 3600) return `${Math.floor(t / 60)} min ${t % 60} s`;
  if (t < 86400) return `${Math.floor(t / 3600)} h ${Math.floor((t % 3600) / 60)} min`;
  return `${Math.floor(t / 86400)} d ${Math.floor((t % 86400) / 3600)} h`;
}

/** The time since an RFC 3339 timestamp. */
export function fmtAge(ts, now = Date.now()) {
  const t = Date.parse(ts || '');
  return Number.isNaN(t) ? '—' : fmtSpan((now - t) / 1000);
}

/** A protobuf Duration string (`2.500s`) in seconds, or NaN. */
export function parseDuration(d) {
  if (typeof d === 'number') return d;
  const m = /^(-?[\d.]+)s$/.exec(String(d || ''));
  return m ? Number(m[1]) : NaN;
}

export function fmtDuration(d) {
  const secs = parseDuration(d);
  if (Number.isNaN(secs)) return '—';
  return secs < 60 ? `${secs.toFixed(secs < 10 ? 2 : 1)} s` : fmtSpan(secs);
}

/** Any scalar from a generic object as text. */
export function fmtScalar(v) {
  if (v === null || v === undefined || v === '') return '—';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (Array.isArray(v)) return v.map(fmtScalar).join(', ') || '—';
  if (typeof v === 'object') {
    return Object.entries(v).map(([k, x]) => `${k}: ${fmtScalar(x)}`).join(', ') || '—';
  }
  return String(v);
}

/** A field name as words: `outboxDepth` → `outbox depth`. */
export const words = (key) => String(key).replace(/([a-z0-9])([A-Z])/g, '$1 $2').replace(/_/g, ' ').toLowerCase();

/** A small line chart of points [{t, v}] (any time unit); no styling beyond classes. */
export function chart(points, { width = 120, height = 24, from, to, cls = 'trend' } = {}) {
  const svg = s('svg', {
    class: cls, width, height, viewBox: `0 0 ${width} ${height}`,
    preserveAspectRatio: 'none', role: 'img', 'aria-label': 'trend',
  });
  svg.appendChild(s('rect', { class: 'frame', x: 0, y: 0, width, height }));
  const pts = points.filter((p) => Number.isFinite(p.t) && Number.isFinite(p.v));
  if (pts.length < 2) return svg;
  const x0 = from ?? pts[0].t;
  let x1 = to ?? pts[pts.length - 1].t;
  if (x1 <= x0) x1 = x0 + 1;
  // Points with bounds (`lo`, `hi`) draw a band behind the line.
  const banded = pts.filter((p) => Number.isFinite(p.lo) && Number.isFinite(p.hi));
  let y0 = Infinity;
  let y1 = -Infinity;
  for (const p of pts) { if (p.v < y0) y0 = p.v; if (p.v > y1) y1 = p.v; }
  for (const p of banded) { if (p.lo < y0) y0 = p.lo; if (p.hi > y1) y1 = p.hi; }
  if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
  const m = 2;
  const x = (t) => (((t - x0) / (x1 - x0)) * width).toFixed(1);
  const y = (v) => (m + (1 - (v - y0) / (y1 - y0)) * (height - 2 * m)).toFixed(1);
  if (banded.length >= 2) {
    const upper = banded.map((p) => `${x(p.t)},${y(p.hi)}`);
    const lower = banded.map((p) => `${x(p.t)},${y(p.lo)}`).reverse();
    svg.appendChild(s('polygon', { class: 'band', points: upper.concat(lower).join(' ') }));
  }
  svg.appendChild(s('polyline', { points: pts.map((p) => `${x(p.t)},${y(p.v)}`).join(' ') }));
  return svg;
}
