// api.js — the REST and watch client: bearer token from sessionStorage, problem JSON
// errors, and the text/event-stream watch read through fetch.

const TOKEN_KEY = 'doppel.token';

export const getToken = () => sessionStorage.getItem(TOKEN_KEY) || '';
export const setToken = (token) => sessionStorage.setItem(TOKEN_KEY, token);
export const clearToken = () => sessionStorage.removeItem(TOKEN_KEY);

/** Roles that may send commands and respond to alarms. */
export const canAct = (caller) => ['operator', 'planner', 'admin'].includes(caller?.role);
/** Whether the caller may respond to alarms (automation does not acknowledge alarms). */
export const canRespond = (caller) => ['operator', 'admin'].includes(caller?.role);

/** An API error: HTTP status, the problem's detail and its gRPC code name. */
export class ApiError extends Error {
  constructor(status, detail, code = '') {
    super(detail || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.detail = detail || '';
    this.code = code;
  }
}

/** A query string from an object, leaving out empty values. */
export function qs(params) {
  return Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join('&');
}

/** The URL of a twin resource; the asset path is one encoded segment. */
export const twinUrl = (assetPath, rest = '') => `/api/v1/twins/${encodeURIComponent(assetPath)}${rest}`;

function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** Forgets the token and shows the login page. */
function unauthorized() {
  clearToken();
  window.dispatchEvent(new Event('doppel:unauthorized'));
  if (location.hash !== '#/login') location.hash = '#/login';
}

/** Calls the API and returns the parsed JSON body; throws ApiError on failure. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = { Accept: 'application/json', ...authHeaders() };
  const init = { method, headers, signal, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'The node cannot be reached', 'UNAVAILABLE');
  }
  const text = await res.text().catch(() => '');
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (res.status === 401) {
    unauthorized();
    throw new ApiError(401, data?.detail || 'The token is not accepted', data?.code || 'UNAUTHENTICATED');
  }
  if (!res.ok) {
    throw new ApiError(res.status, data?.detail || data?.title || res.statusText, data?.code || '');
  }
  return data && typeof data === 'object' ? data : {};
}

/** Parses one text/event-stream block and hands its JSON data to onEvent. */
function dispatch(block, onEvent) {
  let event = 'message';
  const data = [];
  for (const raw of block.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line === '' || line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return;
  let parsed;
  try { parsed = JSON.parse(data.join('\n')); } catch { return; }
  try { onEvent(event, parsed); } catch (e) { console.error(e); }
}

/**
 * Watches the twins under a prefix: onEvent(name, data) for `snapshot`,
 * `snapshotComplete`, `change` and `coalesced`; onState('live' | 'reconnecting').
 * Reconnects after a second when the stream ends. Returns the stop function.
 */
export function watch(pathPrefix, onEvent, onState = () => {}) {
  const controller = new AbortController();
  let stopped = false;
  let timer = null;
  let failures = 0;

  async function run() {
    if (stopped) return;
    try {
      const res = await fetch(`/api/v1/watch?${qs({ pathPrefix })}`, {
        headers: { ...authHeaders(), Accept: 'text/event-stream' },
        signal: controller.signal,
        cache: 'no-store',
      });
      if (res.status === 401) { unauthorized(); return; }
      if (!res.ok || !res.body) throw new Error(`watch answered HTTP ${res.status}`);
      failures = 0;
      onState('live');
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          dispatch(block, onEvent);
        }
      }
    } catch (e) {
      if (stopped || e.name === 'AbortError') return;
      failures += 1;
    }
    if (stopped) return;
    onState('reconnecting');
    timer = setTimeout(run, Math.min(10000, 1000 * 2 ** Math.max(0, failures - 1)));
  }

  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
  };
}
