// DOM building and formatting helpers. Text always goes in as text nodes: API strings (titles,
// log lines, comments) are user-controlled and never reach innerHTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function append(el, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) { for (const c of child) append(el, c); return; }
  el.append(child instanceof Node ? child : document.createTextNode(String(child)));
}

function applyAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'style') throw new Error('inline styles are not allowed (CSP): use a class');
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2).toLowerCase(), v);
    } else if (k === 'class' || k === 'className') {
      el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (k === 'value' && 'value' in el) {
      el.value = v;
    } else if (k === 'checked' || k === 'selected' || k === 'disabled' || k === 'hidden') {
      el[k] = Boolean(v);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
}

/** h('a', {href: '/x', class: 'y', onclick: fn}, 'text', child, [more]) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  applyAttrs(el, attrs);
  append(el, children);
  return el;
}

/** the same for SVG elements */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'style') throw new Error('inline styles are not allowed (CSP)');
    el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

export function clear(el) { while (el.firstChild) el.firstChild.remove(); return el; }

export function replace(el, ...children) { clear(el); append(el, children); return el; }

// ---- time ----

export function parseTime(v) {
  if (v === null || v === undefined || v === '') return null;
  if (v instanceof Date) return v;
  const d = new Date(typeof v === 'number' ? v * 1000 : v);
  return Number.isNaN(d.getTime()) ? null : d;
}

const pad = (n) => String(n).padStart(2, '0');

export function fmtTime(v, withDate = true) {
  const d = parseTime(v);
  if (!d) return '—';
  const t = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (!withDate) return t;
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return t;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}`;
}

export function fmtFull(v) {
  const d = parseTime(v);
  if (!d) return '';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} (${d.toISOString()})`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '—';
  const s0 = Math.max(0, Math.floor(seconds));
  if (s0 < 60) return `${s0}s`;
  const m = Math.floor(s0 / 60);
  if (m < 60) return `${m}m`;
  const hh = Math.floor(m / 60);
  if (hh < 48) return m % 60 ? `${hh}h ${m % 60}m` : `${hh}h`;
  return `${Math.floor(hh / 24)}d`;
}

export function fmtAge(v) {
  const d = parseTime(v);
  if (!d) return '—';
  return fmtDuration((Date.now() - d.getTime()) / 1000);
}

/** a <time> showing the age ("3m"), the absolute time on hover; updated by tickAges() */
export function age(v, suffix = '') {
  const d = parseTime(v);
  if (!d) return h('span', { class: 'muted' }, '—');
  return h('time', { class: 'age', datetime: d.toISOString(), title: fmtFull(d), 'data-suffix': suffix },
    fmtAge(d) + suffix);
}

/** a <time> showing the clock time, the full date on hover */
export function when(v) {
  const d = parseTime(v);
  if (!d) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: d.toISOString(), title: fmtFull(d) }, fmtTime(d));
}

export function tickAges(root = document) {
  for (const el of root.querySelectorAll('time.age')) {
    el.textContent = fmtAge(el.getAttribute('datetime')) + (el.dataset.suffix || '');
  }
}

// ---- numbers ----

export function fmtNum(v, digits) {
  if (v === null || v === undefined || Number.isNaN(Number(v))) return '—';
  const n = Number(v);
  if (digits !== undefined) return n.toFixed(digits);
  const a = Math.abs(n);
  if (a === 0) return '0';
  if (Number.isInteger(n) && a < 1e4) return String(n);
  if (a >= 1e6) return (n / 1e6).toFixed(1) + 'M';
  if (a >= 1e4) return (n / 1e3).toFixed(1) + 'k';
  if (a >= 100) return String(Math.round(n));
  if (a >= 10) return n.toFixed(1);
  if (a >= 1) return n.toFixed(2);
  return n.toPrecision(2);
}

export function fmtRate(v) { return v === null || v === undefined ? '—' : `${Number(v).toFixed(1)}/s`; }

export function fmtPct(v) {
  if (v === null || v === undefined || Number.isNaN(Number(v))) return '—';
  const p = Number(v) * 100;
  if (p !== 0 && Math.abs(p) < 0.1) return p.toFixed(2) + ' %';
  return p.toFixed(1) + ' %';
}

export function fmtMs(v) {
  if (v === null || v === undefined) return '—';
  const n = Number(v);
  return (Math.abs(n) >= 100 ? Math.round(n) : n.toFixed(1)) + ' ms';
}

export function isRatioMetric(metricType) {
  return /(_rate|ratio)$/.test(metricType || '');
}

/** a metric's value with its unit where the name says it (error_rate: %, *_ms: ms) */
export function fmtMetric(v, metricType, aggregation) {
  if (v === null || v === undefined) return '—';
  if (aggregation === 'count') return fmtNum(v);
  if (isRatioMetric(metricType)) return fmtPct(v);
  if (/_ms$/.test(metricType || '')) return fmtMs(v);
  if (/_percent$/.test(metricType || '')) return `${Number(v).toFixed(1)} %`;
  if (/_(seconds|s)$/.test(metricType || '')) return `${fmtNum(v)} s`;
  return fmtNum(v);
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export const SEVERITIES = ['critical', 'high', 'medium', 'low', 'info'];
export const sevRank = (s) => { const i = SEVERITIES.indexOf(s); return i < 0 ? SEVERITIES.length : i; };

export function sevBadge(sev) {
  return h('span', { class: `badge sev-${SEVERITIES.includes(sev) ? sev : 'info'}` }, sev || '?');
}

export function statusBadge(status) {
  return h('span', { class: `pill st-${status}` }, status);
}

/** a table inside a horizontally scrolling wrapper */
export function table(id, headers, rows, extraClass) {
  return h('div', { class: 'table-wrap' },
    h('table', { id, class: ['grid', extraClass] },
      h('thead', null, h('tr', null, headers.map((x) => (Array.isArray(x) ? h('th', { scope: 'col', class: x[1] }, x[0]) : h('th', { scope: 'col' }, x))))),
      h('tbody', null, rows)));
}

export function debounce(fn, ms) {
  let t = null;
  const d = (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
  d.cancel = () => clearTimeout(t);
  return d;
}

/** glob (*, ?) to RegExp, as the rules' window_key_pattern */
export function globRe(glob) {
  const esc = (glob || '*').replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${esc}$`);
}
