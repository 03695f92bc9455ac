// annotate.js — an operator annotates the outcome of something the twin showed: an
// alarm, a safety action or a recommendation, found confirmed, a false alarm, or
// commented. Each annotation is an audit record of its own on the twin and a label
// for the models concerned (`doppel model annotations` exports them).

import { api, qs, twinUrl } from './api.js';
import { h, arr, setText, errorLine, fmtTime } from './dom.js';

const OUTCOMES = {
  ANNOTATION_OUTCOME_CONFIRMED: 'confirmed',
  ANNOTATION_OUTCOME_FALSE_ALARM: 'false alarm',
  ANNOTATION_OUTCOME_COMMENT: 'comment',
};

/** How far back the safety actions offered for annotation go. */
const ACTIONS_MS = 7 * 24 * 3600 * 1000;

/**
 * The annotation panel of the twin at `path`. `offer(group, subjects)` sets what can
 * be annotated in a group (`alarm`, `recommendation`), each subject `{ key, label,
 * body }` with `body` the request's subject field; `choose(key)` selects one;
 * `refreshActions()` reloads the twin's recent safety actions.
 */
export function annotationPanel(path) {
  const groups = new Map([['alarm', []], ['safety', []], ['recommendation', []]]);
  const subject = h('select', { 'data-test': 'annotate-subject', id: 'annotate-subject' });
  const outcome = h('select', { 'data-test': 'annotate-outcome' },
    Object.entries(OUTCOMES).map(([value, label]) => h('option', { value }, label)));
  const note = h('input', { 'data-test': 'annotate-note', placeholder: 'what happened (recorded)', size: 40 });
  const save = h('button', { type: 'button', 'data-test': 'annotate' }, 'Annotate');
  const done = h('span', { 'data-test': 'annotate-result', class: 'muted' });
  const error = errorLine('annotate-error');
  const element = h('section', { class: 'panel', 'data-test': 'annotation-panel' }, h('h2', {}, 'Annotate an outcome'),
    h('p', { class: 'muted' }, 'Say what an alarm, a safety action or a recommendation turned out to be: a label for the models concerned, kept in the audit trail.'),
    h('div', { class: 'row' }, h('label', { for: 'annotate-subject' }, 'About'), subject),
    h('div', { class: 'row' }, outcome, note, save), done, error);

  function rebuild() {
    const current = subject.value;
    const all = [...groups.values()].flat();
    subject.replaceChildren(...(all.length
      ? all.map((s) => h('option', { value: s.key }, s.label))
      : [h('option', { value: '' }, 'nothing to annotate yet')]));
    if (all.some((s) => s.key === current)) subject.value = current;
  }

  function offer(group, subjects) {
    const before = JSON.stringify(groups.get(group) || []);
    if (before === JSON.stringify(subjects)) return;
    groups.set(group, subjects);
    rebuild();
  }

  function choose(key) {
    if ([...groups.values()].flat().some((s) => s.key === key)) subject.value = key;
    note.focus();
  }

  async function refreshActions() {
    try {
      const from = new Date(Date.now() - ACTIONS_MS).toISOString();
      const r = await api(`/api/v1/audit?${qs({ pathPrefix: path, kinds: 'AUDIT_KIND_SAFETY_ACTION', from, pageSize: 1000 })}`);
      const actions = arr(r.records).filter((x) => x && x.assetPath === path).slice(-10).reverse();
      offer('safety', actions.map((x) => ({
        key: `safety:${x.seq}`,
        label: `Safety action #${x.seq} ${x.command ?? ''} by ${x.origin?.principal ?? ''} at ${fmtTime(x.at)}: ${x.reason ?? ''}`,
        body: { safetyActionSeq: String(x.seq) },
      })));
    } catch (e) {
      setText(error, e.message);
    }
  }

  save.addEventListener('click', async () => {
    const chosen = [...groups.values()].flat().find((s) => s.key === subject.value);
    if (!chosen) { setText(error, 'Choose what to annotate first'); return; }
    const why = note.value.trim();
    if (outcome.value === 'ANNOTATION_OUTCOME_COMMENT' && !why) { setText(error, 'A comment needs a note'); return; }
    save.disabled = true;
    try {
      const r = await api(twinUrl(path, '/annotations'), {
        method: 'POST', body: { annotation: { ...chosen.body, outcome: outcome.value, note: why } },
      });
      setText(error, '');
      note.value = '';
      done.textContent = `Annotated as audit record #${r.record?.seq ?? '—'}: ${OUTCOMES[outcome.value]} (${chosen.label})`;
    } catch (e) {
      done.textContent = '';
      setText(error, e.message);
    } finally {
      save.disabled = false;
    }
  });

  rebuild();
  return { element, offer, choose, refreshActions };
}
