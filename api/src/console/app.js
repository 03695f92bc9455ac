// app.js — the console's entry point: login, header, hash routing and the lifecycle of
// the page shown (each page's cleanup runs on every navigation).

import { api, getToken, setToken, ApiError } from './api.js';
import { h, setText, poll, errorLine } from './dom.js';
import * as overview from './overview.js';
import * as unit from './unit.js';
import * as twin from './twin.js';
import * as alarms from './alarms.js';
import * as diagnostic from './diagnostic.js';
import * as cluster from './cluster.js';
import * as models from './models.js';

const pages = { overview, unit, twin, alarms, diagnostic, cluster, models };

const main = document.getElementById('app');
const nav = document.getElementById('nav');
const callerEl = document.getElementById('caller');
const logoutBtn = document.getElementById('logout');
const unackEl = document.getElementById('unack');
const clusterLink = document.getElementById('nav-cluster');

let caller = null;
let cleanup = null;
let navSeq = 0;
let headerPoll = null;

/** Shows the number of unacknowledged alarms in the header. */
function setUnacked(n) {
  const count = Number(n) || 0;
  unackEl.textContent = String(count);
  unackEl.classList.toggle('count-abn', count > 0);
  unackEl.title = `${count} unacknowledged`;
}

function showHeader(show) {
  nav.hidden = !show;
  logoutBtn.hidden = !show;
  callerEl.textContent = show && caller ? `${caller.name} (${caller.role})` : '';
}

function signedOut() {
  caller = null;
  headerPoll?.stop();
  headerPoll = null;
  clusterLink.hidden = true;
  showHeader(false);
}

/** Reads who the token belongs to and sets the header up for them. */
async function signIn() {
  const me = await api('/api/v1/caller');
  caller = { name: String(me.name ?? ''), role: String(me.role ?? '') };
  showHeader(true);
  api('/api/v1/cluster').then(() => { clusterLink.hidden = false; }, () => { clusterLink.hidden = true; });
  headerPoll?.stop();
  headerPoll = poll(async () => {
    // The alarm list's counts: read without waking passivated twins.
    const list = await api('/api/v1/alarms?standingOnly=true');
    setUnacked(Number(list?.counts?.unacknowledged) || 0);
  }, 5000);
}

function stopPage() {
  const c = cleanup;
  cleanup = null;
  if (typeof c === 'function') {
    try { c(); } catch (e) { console.error(e); }
  }
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const i = raw.indexOf('/');
  const name = i < 0 ? raw : raw.slice(0, i);
  let param = i < 0 ? '' : raw.slice(i + 1);
  try { param = decodeURIComponent(param); } catch { /* keep it as typed */ }
  return { name, param };
}

function highlight(name) {
  for (const a of nav.querySelectorAll('a[data-page]')) {
    const current = a.dataset.page === name || (a.dataset.page === 'overview' && (name === 'unit' || name === 'twin'));
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
}

function loginPage() {
  const input = h('input', {
    type: 'password', id: 'token', 'data-test': 'login-token', autocomplete: 'current-password', required: true,
  });
  const submit = h('button', { type: 'submit', 'data-test': 'login-submit' }, 'Sign in');
  const error = errorLine('login-error');
  const form = h('form', { class: 'login', novalidate: true },
    h('h1', {}, 'Doppel console'),
    h('label', { for: 'token' }, 'Access token'),
    input, submit, error);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) { setText(error, 'Enter an access token'); return; }
    setText(error, '');
    submit.disabled = true;
    setToken(token);
    try {
      await signIn();
      location.hash = '#/overview';
    } catch (e) {
      signedOut();
      setText(error, e instanceof ApiError && e.status === 401 ? 'That token is not accepted' : e.message);
    } finally {
      submit.disabled = false;
    }
  });
  main.replaceChildren(form);
  input.focus();
}

async function route() {
  const seq = ++navSeq;
  stopPage();
  const { name, param } = parseHash();
  if (name === 'login') { signedOut(); loginPage(); return; }
  if (!getToken()) { signedOut(); location.replace('#/login'); return; }
  if (!pages[name]) { location.replace('#/overview'); return; }
  if (!caller) {
    try {
      await signIn();
    } catch (e) {
      if (seq !== navSeq || (e instanceof ApiError && e.status === 401)) return;
      main.replaceChildren(h('p', { class: 'error', role: 'alert' }, `Cannot reach the node: ${e.message}`));
      return;
    }
    if (seq !== navSeq) return;
  }
  highlight(name);
  const view = h('div', { class: 'page' });
  main.replaceChildren(view);
  const ctx = { caller, params: { path: param }, setUnacked };
  try {
    const c = await pages[name].render(view, ctx);
    if (seq === navSeq) cleanup = c;
    else if (typeof c === 'function') c();
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) {
      view.append(h('p', { class: 'error', role: 'alert' }, e.message || String(e)));
    }
  }
}

logoutBtn.addEventListener('click', () => {
  sessionStorage.clear();
  signedOut();
  location.hash = '#/login';
});
window.addEventListener('doppel:unauthorized', signedOut);
window.addEventListener('hashchange', route);
route();
