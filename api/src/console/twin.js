// twin.js — one twin in detail: state, channels with live trends, desired and derived
// values, trips and alarms, kept live by a watch; and, for operators, the command panel
// (preview with the governors' verdict and projection, then confirm).

import { api, watch, qs, twinUrl, canAct } from './api.js';
import { annotationPanel } from './annotate.js';
import {
  h, fill, arr, table, setText, errorLine, chart, severityBadge, severityRank, runStateBadge,
  qualityBadge, fmtNum, fmtPercent, fmtValue, fmtNamed, fmtTime, fmtAge, fmtDuration,
  verdictText, verdictClass, enumName, unitHref, parentPath,
} from './dom.js';

const TREND_MS = 5 * 60 * 1000;
const TREND_MAX = 1000;

/** Applies a TwinChange to a Twin in place; true when the twin must be read again. */
function applyChange(t, c) {
  if (c.version !== undefined && c.version !== null) t.version = c.version;
  const channel = (name) => {
    let rv = arr(t.reported).find((r) => r?.channel === name);
    if (!rv) { rv = { channel: name, unit: '' }; t.reported = [...arr(t.reported), rv]; }
    return rv;
  };
  const desired = (name) => {
    let d = arr(t.desired).find((x) => x?.name === name);
    if (!d) { d = { name }; t.desired = [...arr(t.desired), d]; }
    return d;
  };
  if (c.reported) {
    const rv = channel(c.reported.channel);
    rv.sample = { ...(rv.sample || {}), value: c.reported.value, quality: c.reported.quality, sourceTime: c.reported.sourceTime };
    rv.condition = null;
  } else if (c.condition) {
    const rv = channel(c.condition.channel);
    rv.condition = c.condition.condition || null;
    if (rv.sample && rv.condition?.quality) rv.sample.quality = rv.condition.quality;
  } else if (c.desired) {
    for (const nv of arr(c.desired.values)) {
      const d = desired(nv?.name);
      d.value = nv.value;
      d.setAt = new Date().toISOString();
      if (nv.name === 'running' && !arr(t.trips).length) {
        t.runState = nv.value?.boolValue ? 'RUN_STATE_RUNNING' : 'RUN_STATE_STOPPED';
      }
    }
  } else if (c.delivery) {
    for (const nd of arr(c.delivery.values)) desired(nd?.name).delivery = nd.delivery;
  } else if (c.alarmRaised) {
    t.alarms = arr(t.alarms).filter((a) => a?.code !== c.alarmRaised.code).concat([c.alarmRaised]);
  } else if (c.alarmCleared) {
    t.alarms = arr(t.alarms).filter((a) => a?.code !== c.alarmCleared.code);
  } else if (c.tripped) {
    t.trips = [...arr(t.trips), c.tripped];
    t.runState = 'RUN_STATE_TRIPPED';
  } else if (c.tripsCleared || c.restarted) {
    if (c.tripsCleared) t.trips = [];
    return true;
  }
  return false;
}

const section = (title, ...children) => h('section', { class: 'panel' }, h('h2', {}, title), ...children);

function headerSection(t) {
  const m = t.mirror;
  return h('div', {},
    h('dl', { class: 'strip' },
      h('dt', {}, 'Type'), h('dd', { 'data-test': 'twin-type' }, String(t.twinType ?? '')),
      h('dt', {}, 'Run state'), h('dd', {}, runStateBadge(t.runState, { 'data-test': 'run-state' })),
      h('dt', {}, 'Version'), h('dd', { class: 'num', 'data-test': 'version' }, String(t.version ?? '')),
      h('dt', {}, 'Health'), h('dd', { class: 'num', 'data-test': 'health' }, fmtPercent(t.health)),
      h('dt', {}, 'Updated'), h('dd', {}, fmtTime(t.updatedAt))),
    m ? h('p', { class: m.connected ? 'notice' : 'notice badge q-stale', 'data-test': 'mirror' },
      `Mirror of edge node ${m.ownerNode || '?'} · lag ${fmtDuration(m.lag)} · `,
      m.connected ? 'connected' : 'disconnected', m.receivedAt ? ` · last change ${fmtTime(m.receivedAt)}` : '') : null);
}

function channelsSection(t, trends, now) {
  const rows = arr(t.reported).filter(Boolean).map((r) => {
    const sample = r.sample || null;
    const quality = r.condition?.quality || sample?.quality;
    const points = trends.get(r.channel) || [];
    return h('tr', { 'data-test': 'channel', 'data-channel': String(r.channel ?? '') },
      h('td', {}, String(r.channel ?? '')),
      h('td', { class: 'num' }, sample ? `${fmtNum(sample.value)} ${r.unit || ''}`.trim() : '—'),
      h('td', {}, qualityBadge(quality)),
      h('td', {}, r.condition ? `${r.condition.reason || ''}${r.condition.since ? ` (since ${fmtTime(r.condition.since)})` : ''}` : ''),
      h('td', { class: 'num', 'data-since': sample?.sourceTime || null }, sample ? fmtAge(sample.sourceTime, now) : '—'),
      // The window spans what is held, up to five minutes: a fast channel's newest
      // samples fill it as a slow channel's few do.
      h('td', { class: 'trend-cell' }, chart(points, {
        width: 160,
        height: 24,
        from: Math.min(now - 10_000, Math.max(now - TREND_MS, points.length ? points[0].t : 0)),
        to: now,
      })));
  });
  return section('Channels', rows.length
    ? table(['Channel', 'Value', 'Quality', 'Condition', 'Age', 'Last 5 min'], rows)
    : h('p', { class: 'muted' }, 'No channels.'));
}

function deliveryCell(d) {
  const state = enumName(d?.state, 'DELIVERY_STATE_').toLowerCase();
  if (!state || state === 'unspecified') return h('td', {}, '—');
  const extra = [d.safety ? 'safety action' : '', d.by ? `by ${d.by}` : '', d.at ? fmtTime(d.at) : ''].filter(Boolean).join(', ');
  if (state === 'failed') {
    return h('td', {}, h('span', { class: 'badge abn-crit', 'data-test': 'delivery' }, 'failed'), ' ', d.reason || '', extra ? ` (${extra})` : '');
  }
  return h('td', {}, h('span', { 'data-test': 'delivery' }, state), extra ? h('span', { class: 'muted' }, ` (${extra})`) : null);
}

function desiredSection(t) {
  const rows = arr(t.desired).filter(Boolean).map((d) => h('tr', { 'data-test': 'desired', 'data-name': String(d.name ?? '') },
    h('td', {}, String(d.name ?? '')),
    h('td', { class: 'num' }, fmtValue(d.value)),
    h('td', {}, fmtTime(d.setAt)),
    deliveryCell(d.delivery),
    h('td', {}, d.agrees === true ? 'yes' : d.agrees === false ? h('span', { class: 'badge abn-warn' }, 'no') : '—')));
  return section('Desired values', rows.length
    ? table(['Name', 'Value', 'Set at', 'Delivery', 'Machine agrees'], rows)
    : h('p', { class: 'muted' }, 'No desired values.'));
}

function derivedSection(t) {
  const derived = arr(t.derived).filter(Boolean).map((d) => h('tr', { 'data-test': 'derived', 'data-name': String(d.name ?? '') },
    h('td', {}, String(d.name ?? '')), h('td', { class: 'num' }, fmtNum(d.value)), h('td', {}, String(d.model ?? '')),
    h('td', { class: 'num' }, fmtPercent(d.confidence)), h('td', {}, fmtTime(d.at))));
  const models = arr(t.models).filter(Boolean).map((m) => h('tr', {},
    h('td', {}, String(m.name ?? '')), h('td', {}, String(m.version ?? '')), h('td', { class: 'num' }, fmtPercent(m.confidence))));
  // Shadow models (and a canary's baseline): their outputs beside production's.
  const shadows = arr(t.shadows).filter(Boolean).flatMap((sh) => arr(sh.values).filter(Boolean).map((v) => {
    const production = arr(t.derived).find((d) => d?.model === sh.model && d?.name === v.name)?.value;
    const diverged = arr(sh.divergence?.outputs).find((o) => o?.name === v.name);
    return h('tr', { 'data-test': 'shadow-value', 'data-name': String(v.name ?? '') },
      h('td', {}, String(v.name ?? '')), h('td', { class: 'num' }, fmtNum(v.value)),
      h('td', { class: 'num' }, fmtNum(production)), h('td', { class: 'num' }, fmtNum(diverged?.meanAbs)),
      h('td', {}, `${sh.model ?? ''} ${sh.version ?? ''}`),
      h('td', {}, `${sh.deployment ?? ''}${sh.baseline ? ' (canary baseline)' : ' (shadow)'}`));
  }));
  return section('Derived values',
    derived.length ? table(['Name', 'Value', 'Model', 'Confidence', 'At'], derived) : h('p', { class: 'muted' }, 'No derived values.'),
    models.length ? [h('h3', {}, 'Models'), table(['Model', 'Version', 'Confidence'], models)] : null,
    shadows.length ? [h('h3', {}, 'Shadow models'),
      table(['Output', 'Shadow', 'Production', 'Mean |Δ|', 'Model', 'Deployment'], shadows)] : null);
}

/** Why an alarm was raised: the model's conclusion, its version and confidence, and
 * the inputs it rests on. */
function explanation(e) {
  if (!e) return null;
  const inputs = arr(e.inputs).filter(Boolean)
    .map((i) => `${i.name ?? ''} ${fmtNum(i.value)}${i.unit ? ` ${i.unit}` : ''}`).join(', ');
  return h('p', { class: 'muted explanation', 'data-test': 'explanation' },
    `Why: ${e.summary ?? ''} (${e.source ?? ''} ${e.version ?? ''}, confidence ${fmtPercent(e.confidence)}). From ${inputs}.`);
}

function tripsAndAlarms(t, annotations) {
  const trips = arr(t.trips).filter(Boolean).map((x) => h('tr', { 'data-test': 'trip', class: 'row-tripped' },
    h('td', {}, h('span', { class: 'badge tripped' }, 'TRIP'), ' ', String(x.governor ?? '')),
    h('td', {}, String(x.reason ?? '')), h('td', {}, fmtTime(x.at))));
  const alarms = arr(t.alarms).filter(Boolean)
    .sort((a, b) => severityRank(b.severity) - severityRank(a.severity) || String(b.since).localeCompare(String(a.since)))
    .map((a) => h('tr', { 'data-test': 'twin-alarm', 'data-code': String(a.code ?? '') },
      h('td', {}, severityBadge(a.severity, !a.acknowledged)),
      h('td', {}, String(a.state ?? '')),
      h('td', {}, String(a.code ?? '')),
      h('td', { class: 'message' }, String(a.message ?? ''), explanation(a.explanation)),
      h('td', {}, String(a.raisedBy ?? '')),
      h('td', {}, fmtTime(a.since)),
      annotations ? h('td', {}, annotateButton(annotations, `alarm:${a.code}`)) : null));
  return [
    trips.length ? section('Trips', table(['Governor', 'Reason', 'At'], trips)) : null,
    section('Alarms', alarms.length
      ? table(['Severity', 'State', 'Code', 'Message', 'Raised by', 'Since', annotations ? '' : null].filter((x) => x !== null), alarms)
      : h('p', { class: 'muted' }, 'No active alarms.')),
  ];
}

/** A button that picks `key` in the annotation panel. */
function annotateButton(annotations, key) {
  const button = h('button', { type: 'button', 'data-test': 'annotate-this' }, 'Annotate');
  button.addEventListener('click', () => annotations.choose(key));
  return button;
}

/** What the twin's alarms offer to annotate. */
function alarmSubjects(t) {
  return arr(t.alarms).filter((a) => a?.code).map((a) => ({
    key: `alarm:${a.code}`,
    label: `Alarm ${a.code}: ${a.message ?? ''}`,
    body: { alarmCode: a.code },
  }));
}

function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `console-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** The command panel: pick a command, fill its parameters, preview, confirm. */
async function commandPanel(path, t, annotations) {
  const panel = h('section', { class: 'panel command', 'data-test': 'command-panel' }, h('h2', {}, 'Command'));
  const error = errorLine('command-error');
  let info;
  try {
    info = await api(`/api/v1/types/${encodeURIComponent(t.twinType || '')}`);
  } catch (e) {
    setText(error, e.message);
    panel.append(error);
    return panel;
  }
  const commands = arr(info.commands).filter((c) => c && c.name);
  if (!commands.length) {
    panel.append(h('p', { class: 'muted' }, 'This twin type declares no commands.'));
    return panel;
  }
  const select = h('select', { 'data-test': 'command-name', id: 'command-name' },
    commands.map((c) => h('option', { value: c.name }, c.name)));
  const params = h('div', { class: 'params' });
  const previewBtn = h('button', { type: 'button', 'data-test': 'preview' }, 'Preview');
  const confirmBtn = h('button', { type: 'button', 'data-test': 'confirm', class: 'primary', disabled: true }, 'Confirm');
  const previewVerdict = h('p', { 'data-test': 'preview-verdict', class: 'verdict', hidden: true });
  const projection = h('div', { class: 'charts' });
  const commandVerdict = h('p', { 'data-test': 'command-verdict', class: 'verdict', hidden: true });
  const commandDetail = h('p', { class: 'muted' });
  const result = h('div', { hidden: true }, h('h3', {}, 'Result'), commandVerdict, commandDetail);
  let inputs = [];
  let generation = 0;
  let previewed = null;

  function invalidate() {
    generation += 1;
    previewed = null;
    confirmBtn.disabled = true;
    setText(previewVerdict, '');
    projection.replaceChildren();
    setText(error, '');
  }

  function buildParams() {
    const command = commands.find((c) => c.name === select.value) || commands[0];
    inputs = arr(command.params).filter(Boolean).map((p) => {
      // Start from the desired value the parameter sets: same name, or the only one.
      const sets = arr(command.sets);
      const target = arr(command.params).length === 1 && sets.length === 1 ? sets[0] : p.name;
      const current = arr(t.desired).find((d) => d?.name === p.name || d?.name === target)?.value;
      const attrs = { 'data-test': 'param', 'data-name': p.name, name: p.name, id: `param-${p.name}` };
      let input;
      if (p.type === 'bool') {
        input = h('input', { ...attrs, type: 'checkbox', checked: current?.boolValue === true });
      } else {
        const initial = current ? fmtValue(current) : '';
        input = h('input', {
          ...attrs, type: 'number', step: p.type === 'int' ? '1' : 'any', min: p.min, max: p.max,
          value: initial === '—' ? '' : initial,
        });
      }
      const has = (x) => x !== undefined && x !== null;
      const range = has(p.min) || has(p.max) ? `${fmtNum(p.min)} … ${fmtNum(p.max)}` : '';
      return { p, input, el: h('label', { class: 'param', for: attrs.id }, h('span', {}, p.name), input,
        h('span', { class: 'muted' }, [p.unit, range ? `(${range})` : ''].filter(Boolean).join(' '))) };
    });
    params.replaceChildren(...(inputs.length ? inputs.map((i) => i.el) : [h('p', { class: 'muted' }, 'No parameters.')]));
    invalidate();
  }

  function collect() {
    return inputs.map(({ p, input }) => {
      if (p.type === 'bool') return { name: p.name, value: { boolValue: input.checked } };
      const raw = String(input.value).trim();
      if (raw === '' || !Number.isFinite(Number(raw))) throw new Error(`${p.name} needs a number`);
      if (p.type === 'int') {
        if (!/^-?\d+$/.test(raw)) throw new Error(`${p.name} needs a whole number`);
        return { name: p.name, value: { intValue: raw } };
      }
      return { name: p.name, value: { floatValue: Number(raw) } };
    });
  }

  previewBtn.addEventListener('click', async () => {
    invalidate();
    const gen = generation;
    let body;
    try { body = { command: select.value, params: collect(), horizon: '600s' }; } catch (e) { setText(error, e.message); return; }
    previewBtn.disabled = true;
    try {
      const r = await api(twinUrl(path, '/simulate'), { method: 'POST', body });
      if (gen !== generation) return;
      previewVerdict.className = verdictClass(r.verdict);
      setText(previewVerdict, verdictText(r.verdict));
      const series = arr(r.series).filter(Boolean).slice(0, 4).map((sr) => {
        const pts = arr(sr.points).map((p) => ({
          t: Number(p?.t), v: Number(p?.value),
          lo: p?.lower == null ? NaN : Number(p.lower), hi: p?.upper == null ? NaN : Number(p.upper),
        }));
        const vs = pts.map((p) => p.v).filter(Number.isFinite);
        const last = pts[pts.length - 1];
        const bounds = last && Number.isFinite(last.lo) && Number.isFinite(last.hi)
          ? ` (at the end ${fmtNum(last.lo)} to ${fmtNum(last.hi)})` : '';
        const span = pts.length ? `${fmtNum(Math.min(...vs))} … ${fmtNum(Math.max(...vs))} over ${fmtNum(last.t)} s${bounds}` : 'no points';
        return h('figure', { class: 'projection', 'data-test': 'projection', 'data-name': String(sr.name ?? '') },
          chart(pts, { width: 240, height: 60, cls: 'trend big' }),
          h('figcaption', {}, String(sr.name ?? ''), ': ', span));
      });
      projection.replaceChildren(
        arr(r.assumed).length ? h('p', { class: 'muted' }, `Assumes ${fmtNamed(r.assumed)}`) : '', ...series);
      previewed = body;
      confirmBtn.disabled = false;
    } catch (e) {
      if (gen === generation) setText(error, e.message);
    } finally {
      previewBtn.disabled = false;
    }
  });

  confirmBtn.addEventListener('click', async () => {
    if (!previewed) return;
    const { command, params: values } = previewed;
    confirmBtn.disabled = true;
    previewed = null;
    setText(error, '');
    try {
      const r = await api(twinUrl(path, '/commands'), {
        method: 'POST', body: { command, params: values, idempotencyKey: newKey() },
      });
      result.hidden = false;
      commandVerdict.className = verdictClass(r.verdict);
      setText(commandVerdict, verdictText(r.verdict));
      commandDetail.textContent = `${command}: applied ${fmtNamed(r.applied)} · version ${r.version ?? '—'} · audit #${r.auditSeq ?? '—'}${r.replayed ? ' · replayed' : ''}`;
    } catch (e) {
      setText(error, e.message);
    }
  });

  // The next best action: ranked candidates; `Use` fills the form, which still
  // previews and asks for confirmation.
  const recommendBtn = h('button', { type: 'button', 'data-test': 'recommend' }, 'Recommend');
  const recommendation = h('div', { 'data-test': 'recommendation' });
  recommendBtn.addEventListener('click', async () => {
    recommendBtn.disabled = true;
    setText(error, '');
    try {
      const r = await api(twinUrl(path, '/recommend'), { method: 'POST', body: {} });
      const command = commands.find((x) => x.name === r.command);
      const type = arr(command?.params).find((p) => p?.name === r.param)?.type;
      const subject = (c) => ({
        key: `recommendation:${r.command}:${c.value}`,
        label: `Recommendation ${r.command} ${r.param}=${fmtNum(c.value)}`,
        body: {
          recommendation: {
            command: r.command,
            params: [{ name: r.param, value: type === 'int' ? { intValue: String(Math.round(Number(c.value))) } : { floatValue: Number(c.value) } }],
          },
        },
      });
      const candidates = arr(r.candidates).filter(Boolean);
      annotations?.offer('recommendation', candidates.map(subject));
      const rows = candidates.map((c, i) => {
        const projected = c.projectedBy ? `denied by ${c.projectedBy} (projected)` : verdictText(c.verdict);
        const objective = c.objective == null ? '—'
          : c.objectiveLower == null ? fmtNum(c.objective)
            : `${fmtNum(c.objective)} (${fmtNum(c.objectiveLower)} to ${fmtNum(c.objectiveUpper)})`;
        const use = h('button', { type: 'button', 'data-test': 'use-candidate' }, 'Use');
        const allowed = !c.projectedBy && Number(c.tier ?? 0) < 3;
        use.disabled = !allowed;
        use.addEventListener('click', () => useCandidate(r, c));
        const row = h('tr', { 'data-test': 'candidate', 'data-value': String(c.value), class: allowed ? '' : 'abnormal' },
          h('td', {}, String(i + 1)), h('td', {}, fmtNum(c.value)), h('td', {}, projected),
          h('td', {}, objective), h('td', {}, String(c.rationale ?? '')),
          h('td', {}, use, annotations ? [' ', annotateButton(annotations, subject(c).key)] : null));
        return row;
      });
      recommendation.replaceChildren(
        h('p', { class: 'muted' }, `Objective: ${r.objective ?? '—'}`),
        h('table', {}, h('thead', {}, h('tr', {}, ...['Rank', 'Value', 'Verdict', 'Objective', 'Why', ''].map((x) => h('th', {}, x)))),
          h('tbody', {}, ...rows)));
    } catch (e) {
      setText(error, e.message);
    } finally {
      recommendBtn.disabled = false;
    }
  });

  function useCandidate(r, c) {
    if (r.command && commands.some((x) => x.name === r.command)) {
      select.value = r.command;
      buildParams();
    }
    const input = inputs.find((i) => i.p.name === r.param);
    if (input) input.input.value = String(c.value);
    invalidate();
  }

  select.addEventListener('change', buildParams);
  params.addEventListener('input', invalidate);
  params.addEventListener('change', invalidate);
  buildParams();
  panel.append(
    h('div', { class: 'row' }, h('label', { for: 'command-name' }, 'Command'), select),
    params,
    h('div', { class: 'row' }, previewBtn, confirmBtn, recommendBtn),
    error, previewVerdict, projection, result, recommendation);
  return panel;
}

export async function render(container, ctx) {
  const path = ctx.params.path || '';
  let twin = null;
  let closed = false;
  let renderTimer = null;
  let panelStarted = false;
  let trips = -1;
  // Operators annotate outcomes; viewers only read.
  const annotations = canAct(ctx.caller) ? annotationPanel(path) : null;
  const trends = new Map();

  const status = h('span', { class: 'muted' });
  const error = errorLine('twin-error');
  const live = h('div');
  const panelSlot = h('div');
  const line = parentPath(path);
  container.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/overview' }, 'Overview'),
      line ? [' / ', h('a', { href: unitHref(line) }, line)] : null),
    h('h1', { 'data-test': 'asset-path' }, path, ' ', status), error, live, panelSlot);

  function addPoint(channel, time, value) {
    const t = Date.parse(time || '') || Date.now();
    const v = Number(value);
    if (!Number.isFinite(v)) return;
    const pts = trends.get(channel) || [];
    if (pts.length && pts[pts.length - 1].t > t) return;
    pts.push({ t, v });
    if (pts.length > TREND_MAX) pts.splice(0, pts.length - TREND_MAX);
    trends.set(channel, pts);
  }

  function draw() {
    renderTimer = null;
    if (closed || !twin) return;
    const now = Date.now();
    for (const [c, pts] of trends) {
      const keep = pts.findIndex((p) => p.t >= now - TREND_MS);
      trends.set(c, keep < 0 ? [] : pts.slice(keep));
    }
    // Abnormal first (ISA-101): trips and alarms above the values.
    fill(live, headerSection(twin), ...tripsAndAlarms(twin, annotations), channelsSection(twin, trends, now),
      desiredSection(twin), derivedSection(twin));
    annotations?.offer('alarm', alarmSubjects(twin));
    const tripCount = arr(twin.trips).length;
    if (annotations && tripCount !== trips) { trips = tripCount; annotations.refreshActions(); }
    if (!panelStarted && canAct(ctx.caller)) {
      panelStarted = true;
      commandPanel(path, twin, annotations).then((panel) => {
        if (!closed) panelSlot.replaceChildren(panel, annotations.element);
      });
    }
  }
  const redraw = () => { if (!renderTimer) renderTimer = setTimeout(draw, 200); };

  async function fetchTwin() {
    try {
      const r = await api(twinUrl(path));
      if (closed) return;
      if (r.twin) { twin = r.twin; setText(error, ''); redraw(); }
    } catch (e) {
      if (!closed) setText(error, e.status === 404 ? `No twin at ${path}` : e.message);
      return e;
    }
    return null;
  }

  const failed = await fetchTwin();
  if (failed?.status === 404 || closed) return () => { closed = true; };

  const seeded = await Promise.all(arr(twin?.reported).filter((r) => r?.channel).map(async (r) => {
    try {
      const res = await api(twinUrl(path, `/history?${qs({ channel: r.channel, from: new Date(Date.now() - TREND_MS).toISOString(), limit: TREND_MAX })}`));
      return [r.channel, arr(res.samples)];
    } catch { return [r.channel, []]; }
  }));
  for (const [channel, samples] of seeded) {
    for (const sm of samples) addPoint(channel, sm?.sourceTime, sm?.value);
  }
  redraw();

  const stop = watch(path, (name, data) => {
    if (!data || data.assetPath !== path) return;
    if (name === 'snapshot' || name === 'coalesced') {
      // A watch's twin carries no shadows or explanations: GetTwin does.
      const known = twin;
      twin = { ...data, shadows: known?.shadows };
      for (const alarm of arr(twin.alarms)) {
        const was = arr(known?.alarms).find((a) => a?.code === alarm?.code);
        if (alarm && was?.explanation) alarm.explanation = was.explanation;
      }
      if (name === 'snapshot') fetchTwin();
      for (const r of arr(data.reported)) if (r?.sample) addPoint(r.channel, r.sample.sourceTime, r.sample.value);
      setText(error, '');
      redraw();
    } else if (name === 'change' && twin) {
      if (data.reported) addPoint(data.reported.channel, data.reported.sourceTime, data.reported.value);
      if (applyChange(twin, data)) fetchTwin();
      redraw();
    }
  }, (state) => { status.textContent = state === 'live' ? '' : '(reconnecting…)'; });

  let ticks = 0;
  const ticker = setInterval(() => {
    ticks += 1;
    if (ticks % 5 === 0) {
      // Shadow values change with every sample; the watch does not carry them.
      if (arr(twin?.shadows).length) fetchTwin(); else redraw();
      return;
    }
    const now = Date.now();
    for (const td of live.querySelectorAll('[data-since]')) td.textContent = fmtAge(td.getAttribute('data-since'), now);
  }, 1000);

  return () => {
    closed = true;
    stop();
    clearInterval(ticker);
    clearTimeout(renderTimer);
  };
}
