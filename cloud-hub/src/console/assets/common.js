// Shared helpers of the console's pages: the API client (session cookie, CSRF header, a 401
// sends to the login page), DOM building with text only (never HTML from data), the
// navigation, and the ready/error flags the browser tests wait on.

/** The header every state-changing request carries (the hub's CSRF check). */
export const CSRF_HEADER = 'x-tandem-console';

/** Calls the hub's API; JSON in and out. Throws an Error with the hub's message. */
export async function api(path, { method = 'GET', body, headers = {} } = {}) {
  const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
  if (method !== 'GET' && method !== 'HEAD') {
    opts.headers[CSRF_HEADER] = '1';
    opts.headers['Content-Type'] = 'application/json';
    opts.body = body === undefined ? '' : JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) {
    location.assign('/console/login?next=' + encodeURIComponent(location.pathname));
    throw new Error('not logged in');
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!r.ok) {
    const msg = data && typeof data.error === 'string' ? data.error : `${r.status} ${r.statusText}`;
    const e = new Error(`${method} ${path}: ${msg}`);
    e.status = r.status;
    e.data = data;
    throw e;
  }
  return data;
}

/**
 * An element: `attrs` set as attributes (`text` as its text, `on` as event listeners),
 * children appended (strings as text nodes).
 */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  append(e, children);
  return e;
}

/** An SVG element, as `el`. */
export function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttrs(e, attrs);
  append(e, children);
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = String(v);
    else if (k === 'on') for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(e, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `e`. */
export function replace(e, ...children) {
  e.replaceChildren();
  append(e, children);
  return e;
}

/** A time as the browser's local date and time. */
export function fmtTime(ms) {
  if (!ms) return '—';
  return new Date(ms).toLocaleString();
}

/** How long ago, in words. */
export function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A share (0..1) as a percentage. */
export function pct(x) {
  return typeof x === 'number' && Number.isFinite(x) ? `${(x * 100).toFixed(1)} %` : '—';
}

/** A byte count in words. */
export function bytes(n) {
  if (typeof n !== 'number') return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${u[i]}`;
}

const PAGES = [
  ['/console', 'Fleet', 'fleet'],
  ['/console/rollouts', 'Rollouts', 'rollouts'],
  ['/console/models', 'Models', 'models'],
  ['/console/feedback', 'Feedback', 'feedback'],
];

/** The navigation bar, `active` highlighted, with a logout button. */
export function nav(active) {
  const n = document.getElementById('nav');
  if (!n) return;
  replace(n, ...PAGES.map(([href, label, name]) =>
    el('a', { href, class: name === active ? 'active' : undefined, text: label })));
  n.append(el('button', {
    type: 'button', class: 'link', 'data-testid': 'logout', text: 'Log out',
    on: { click: async () => { try { await api('/console/logout', { method: 'POST' }); } finally { location.assign('/console/login'); } } },
  }));
}

/** The page's main element, emptied. */
export function main() {
  return replace(document.getElementById('main'));
}

/** Shows an error to the person and to the tests (`data-error`). */
export function showError(e) {
  const msg = e && e.message ? e.message : String(e);
  document.body.dataset.error = msg;
  const box = document.getElementById('error');
  if (box) { box.textContent = msg; box.hidden = false; }
}

/** Clears a shown error. */
export function clearError() {
  delete document.body.dataset.error;
  const box = document.getElementById('error');
  if (box) box.hidden = true;
}

/** Runs a page: `render` loads and draws; then `data-ready="true"`, or `data-error`. */
export async function run(active, render) {
  nav(active);
  try {
    await render();
    document.body.dataset.ready = 'true';
  } catch (e) {
    showError(e);
  }
}

/** Calls `f` every `ms` while the page is visible; errors shown, not thrown. */
export function every(ms, f) {
  setInterval(async () => {
    if (document.hidden) return;
    try { await f(); clearError(); } catch (e) { showError(e); }
  }, ms);
}
