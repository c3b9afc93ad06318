// One EventSource for the whole app (GET /api/v1/stream, cookie auth) with a subscribe API.
// The browser resumes with Last-Event-ID by itself after a dropped connection; when the stream
// is closed for good (e.g. an HTTP error) we open a new one after a pause.

const subscribers = { incident: new Set(), notification: new Set(), ingest: new Set(), status: new Set() };
const workers = new Map(); // worker -> {data, seen}
const STALE_MS = 10_000;
let source = null;
let state = 'connecting';
let retryTimer = null;
let onClosed = () => {};

/** called when the stream is closed for good (e.g. a 401): the app checks the session */
export function setClosedHandler(fn) { onClosed = fn; }

function setState(next) {
  if (next === state) return;
  state = next;
  for (const fn of subscribers.status) fn(state);
}

function dispatch(type, ev) {
  let data;
  try { data = JSON.parse(ev.data); } catch { return; }
  if (type === 'ingest') {
    workers.set(String(data.worker ?? 'worker'), { data, seen: Date.now() });
  }
  for (const fn of subscribers[type]) {
    try { fn(data); } catch (e) { console.warn('live subscriber failed', e); }
  }
}

function open() {
  if (source) return;
  source = new EventSource('/api/v1/stream', { withCredentials: true });
  source.addEventListener('open', () => setState('live'));
  source.addEventListener('error', () => {
    if (!source) return;
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      source = null;
      setState('reconnecting');
      clearTimeout(retryTimer);
      retryTimer = setTimeout(open, 5000);
      onClosed();
    } else {
      setState('reconnecting');
    }
  });
  for (const type of ['incident', 'notification', 'ingest']) {
    source.addEventListener(type, (ev) => { setState('live'); dispatch(type, ev); });
  }
}

/** start the stream (idempotent) */
export function start() { open(); }

/** stop it (signing out) */
export function stop() {
  clearTimeout(retryTimer);
  if (source) { source.close(); source = null; }
  workers.clear();
  setState('connecting');
}

/** subscribe('incident' | 'notification' | 'ingest' | 'status', fn) → unsubscribe function */
export function subscribe(type, fn) {
  if (!subscribers[type]) throw new Error(`unknown stream event type ${type}`);
  subscribers[type].add(fn);
  if (type === 'status') fn(state);
  else open();
  return () => subscribers[type].delete(fn);
}

export function connectionState() { return state; }

/**
 * The latest ingest gauges summed over the workers heard from in the last 10 s, or null when
 * none was: {events_per_s, dead_letters_per_s, batches, lag (null if no worker knows), workers}.
 */
export function ingestTotals() {
  const now = Date.now();
  let n = 0;
  const total = { events_per_s: 0, dead_letters_per_s: 0, batches: 0, lag: null, workers: 0, at: null };
  for (const [key, { data, seen }] of workers) {
    if (now - seen > STALE_MS) { workers.delete(key); continue; }
    n += 1;
    total.events_per_s += Number(data.events_per_s) || 0;
    total.dead_letters_per_s += Number(data.dead_letters_per_s) || 0;
    total.batches += Number(data.batches) || 0;
    if (data.lag !== null && data.lag !== undefined) total.lag = (total.lag || 0) + Number(data.lag);
    if (!total.at || data.at > total.at) total.at = data.at;
  }
  total.workers = n;
  return n ? total : null;
}
