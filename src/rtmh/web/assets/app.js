// The dashboard shell: session, History API routing, header, keyboard shortcuts.

import { h, clear, tickAges } from './dom.js';
import { api, ApiError, isAbort, setUnauthorizedHandler, showError, hideBanner } from './api.js';
import * as live from './live.js';
import * as now from './page-now.js';
import * as incident from './page-incident.js';
import * as incidents from './page-incidents.js';
import * as rules from './page-rules.js';
import * as silences from './page-silences.js';
import * as channels from './page-channels.js';
import * as notifications from './page-notifications.js';
import * as events from './page-events.js';
import * as deadLetters from './page-dead-letters.js';
import * as login from './page-login.js';

const UUID = '[0-9a-fA-F-]{8,64}';
const ROUTES = [
  { re: /^\/$/, page: now.mount, nav: 'now' },
  { re: /^\/incidents\/?$/, page: incidents.mount, nav: 'incidents' },
  { re: new RegExp(`^/incidents/(${UUID})$`), page: incident.mount, nav: 'incidents', keys: ['id'] },
  { re: /^\/rules\/?$/, page: rules.mountList, nav: 'rules' },
  { re: /^\/rules\/new$/, page: rules.mountEdit, nav: 'rules' },
  { re: /^\/rules\/([^/]+)$/, page: rules.mountEdit, nav: 'rules', keys: ['name'] },
  { re: /^\/silences\/?$/, page: silences.mount, nav: 'silences' },
  { re: /^\/channels\/?$/, page: channels.mount, nav: 'channels' },
  { re: /^\/notifications\/?$/, page: notifications.mount, nav: 'notifications' },
  { re: /^\/events\/?$/, page: events.mount, nav: 'events' },
  { re: /^\/dead-letters\/?$/, page: deadLetters.mountList, nav: 'dead-letters' },
  { re: /^\/dead-letters\/(\d+)$/, page: deadLetters.mountDetail, nav: 'dead-letters', keys: ['id'] },
  { re: /^\/login$/, page: login.mount, nav: null, public: true },
];

let session = null;
let current = null; // {cleanup: [], controller, keyHandlers: []}
let renderSeq = 0;

const $ = (id) => document.getElementById(id);

export function navigate(url, { replace = false } = {}) {
  const target = new URL(url, location.origin);
  const path = target.pathname + target.search + target.hash;
  if (replace) history.replaceState(null, '', path); else history.pushState(null, '', path);
  render();
}

function goLogin() {
  session = null;
  live.stop();
  if (location.pathname === '/login') return;
  const next = location.pathname + location.search;
  navigate(`/login?next=${encodeURIComponent(next)}`, { replace: true });
}
setUnauthorizedHandler(goLogin);

async function loadSession() {
  session = await api('GET', '/session', null, { no401: true });
  return session;
}

function renderHeader() {
  const who = $('whoami');
  const out = $('sign-out');
  clear(who);
  if (session) {
    who.append(h('span', { class: 'who-name' }, session.name || '?'), ' ',
      h('span', { class: `scope scope-${session.scope}` }, session.scope || ''));
    out.hidden = false;
  } else {
    out.hidden = true;
  }
  document.body.classList.toggle('signed-out', !session);
  document.body.dataset.scope = session ? session.scope || '' : '';
}

function unmount() {
  if (!current) return;
  current.controller.abort();
  for (const fn of current.cleanup.splice(0)) {
    try { fn(); } catch (e) { console.warn(e); }
  }
  current = null;
}

function scopeAtLeast(want) {
  const order = { read: 1, write: 2, admin: 3 };
  return session && (order[session.scope] || 0) >= (order[want] || 99);
}

async function render() {
  const seq = ++renderSeq;
  unmount();
  hideBanner();
  closeNav();
  const root = $('app');
  const path = location.pathname;
  let route = null;
  let m = null;
  for (const r of ROUTES) { m = path.match(r.re); if (m) { route = r; break; } }
  for (const a of document.querySelectorAll('#nav a')) {
    if (route && a.dataset.nav === route.nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  document.body.classList.toggle('login-page', Boolean(route && route.public));
  if (route && !route.public && !session) {
    clear(root).append(h('p', { class: 'muted' }, 'Loading…'));
    try {
      await loadSession();
    } catch (e) {
      if (seq !== renderSeq) return;
      if (e instanceof ApiError && e.status === 401) { goLogin(); return; }
      renderHeader();
      showError(e);
      clear(root).append(h('div', { class: 'empty' }, h('h1', null, 'Cannot load the dashboard'),
        h('p', null, 'The API did not answer the session check. '),
        h('p', null, h('button', { type: 'button', class: 'btn', onclick: () => render() }, 'Try again'))));
      return;
    }
    if (seq !== renderSeq) return;
  }
  renderHeader();
  if (session && !(route && route.public)) live.start();
  const controller = new AbortController();
  const ctx = {
    cleanup: [], controller, keyHandlers: [],
    root: clear(root), session, signal: controller.signal,
    params: {}, query: new URLSearchParams(location.search),
    navigate, canWrite: scopeAtLeast('write'), isAdmin: scopeAtLeast('admin'),
    setTitle: (t) => { document.title = t ? `${t} · RTMH` : 'RTMH'; },
    /** replace the query string (page state) without a history entry */
    setQuery: (obj) => {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(obj)) {
        if (v === null || v === undefined || v === '' || v === false) continue;
        if (Array.isArray(v)) v.forEach((x) => q.append(k, x)); else q.set(k, v);
      }
      const qs = q.toString();
      history.replaceState(null, '', location.pathname + (qs ? `?${qs}` : ''));
      ctx.query = q;
    },
    every: (ms, fn) => { const t = setInterval(fn, ms); ctx.cleanup.push(() => clearInterval(t)); },
    live: (type, fn) => { ctx.cleanup.push(live.subscribe(type, fn)); },
    onKey: (fn) => { ctx.keyHandlers.push(fn); },
    onCleanup: (fn) => { ctx.cleanup.push(fn); },
    alive: () => !controller.signal.aborted,
    setSession: (sess) => { session = sess; renderHeader(); },
  };
  current = ctx;
  if (!route) {
    ctx.setTitle('Not found');
    root.append(h('div', { class: 'empty' }, h('h1', null, 'Not found'),
      h('p', null, 'No page at ', h('code', null, path), '. ', h('a', { href: '/' }, 'Back to Now'))));
    return;
  }
  (route.keys || []).forEach((k, i) => { ctx.params[k] = decodeURIComponent(m[i + 1]); });
  try {
    await route.page(ctx);
  } catch (e) {
    if (isAbort(e) || !ctx.alive()) return;
    console.warn(e);
    showError(e);
  }
}

// ---- header ----

function closeNav() {
  $('nav').classList.remove('open');
  $('nav-toggle').setAttribute('aria-expanded', 'false');
}

$('nav-toggle').addEventListener('click', () => {
  const open = !$('nav').classList.contains('open');
  $('nav').classList.toggle('open', open);
  $('nav-toggle').setAttribute('aria-expanded', String(open));
});

$('sign-out').addEventListener('click', async () => {
  try {
    await api('DELETE', '/session', null, { no401: true });
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) { showError(e); return; }
  }
  session = null;
  live.stop();
  renderHeader();
  navigate('/login');
});

// the stream closed for good: if the session ended, the check's 401 goes to /login
live.setClosedHandler(() => { if (session) api('GET', '/session').catch(() => {}); });

$('help-button').addEventListener('click', () => showHelp());

live.subscribe('status', (state) => {
  const el = $('live-status');
  el.textContent = state;
  el.className = `live-status ${state}`;
});

// internal links: client-side navigation
document.addEventListener('click', (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = ev.target.closest && ev.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download') || a.dataset.external !== undefined) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin) return;
  if (/^\/(api|docs|openapi\.json|assets|healthz|readyz|metrics)(\/|$)/.test(url.pathname)) return;
  if (url.pathname === location.pathname && url.search === location.search && url.hash) return;
  ev.preventDefault();
  if (url.pathname + url.search === location.pathname + location.search) return;
  navigate(url.pathname + url.search + url.hash);
  $('app').focus({ preventScroll: true });
  window.scrollTo(0, 0);
});

window.addEventListener('popstate', () => render());

// ---- keyboard ----

function showHelp() {
  const d = $('shortcuts');
  if (!d.open) d.showModal();
}

const G_KEYS = { n: '/', i: '/incidents', r: '/rules', s: '/silences', c: '/channels', o: '/notifications', e: '/events', d: '/dead-letters' };
let gPending = 0;

function typing(el) {
  if (!el) return false;
  const tag = el.tagName;
  return el.isContentEditable || tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT';
}

document.addEventListener('keydown', (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.defaultPrevented) return;
  if (typing(ev.target) || $('shortcuts').open) return;
  if (document.body.classList.contains('login-page')) return;
  const k = ev.key;
  if (gPending && Date.now() - gPending < 1500) {
    gPending = 0;
    if (G_KEYS[k]) { ev.preventDefault(); navigate(G_KEYS[k]); }
    return;
  }
  gPending = 0;
  if (k === 'g') { gPending = Date.now(); return; }
  if (k === '?') { ev.preventDefault(); showHelp(); return; }
  if (k === '/') {
    const field = document.querySelector('#app [data-search]');
    if (field) { ev.preventDefault(); field.focus(); if (field.select) field.select(); }
    return;
  }
  if (current) for (const fn of current.keyHandlers) { if (fn(ev) === true) { ev.preventDefault(); return; } }
});

// relative ages tick
setInterval(() => tickAges(document), 5000);

render();
