// Now (/): open incidents (live), services with sparklines, ingest health.

import { h, replace, age, sevBadge, sevRank, fmtMetric, fmtRate, fmtPct, fmtMs, fmtNum, table, debounce, when } from './dom.js';
import { api, ApiError, isAbort, showError } from './api.js';
import { sparkline } from './chart.js';
import { ingestTotals } from './live.js';

/** rules by name → {condition, metric_type, aggregation}; cached for a minute */
let rulesCache = { at: 0, map: new Map() };
export async function rulesByName(signal) {
  if (Date.now() - rulesCache.at < 60_000) return rulesCache.map;
  try {
    const rules = await api('GET', '/rules', null, { signal });
    rulesCache = { at: Date.now(), map: new Map(rules.map((r) => [r.name, r])) };
  } catch (e) {
    if (isAbort(e)) throw e;
  }
  return rulesCache.map;
}

const HOLDS = {
  '>': (v, t) => v > t, '>=': (v, t) => v >= t, '<': (v, t) => v < t,
  '<=': (v, t) => v <= t, '==': (v, t) => v === t, '!=': (v, t) => v !== t,
};

/** "6.2 % > 5.0 %" while the condition holds; "0.7 % (fires > 5.0 %)" once the value is back
 * on the healthy side but the incident waits out its resolve time: never a false inequality. */
export function valueVsThreshold(inc, rule) {
  const mt = rule ? rule.metric_type : (/error_rate/.test(inc.rule_name || '') ? 'error_rate' : null);
  const ag = rule ? rule.aggregation : null;
  const cond = rule ? rule.condition : null;
  if (inc.last_value === null && inc.threshold === null) return '—';
  const value = fmtMetric(inc.last_value, mt, ag);
  const threshold = fmtMetric(inc.threshold, mt, ag);
  if (!cond) return `${value} vs ${threshold}`;
  const holds = inc.last_value !== null && inc.threshold !== null && HOLDS[cond]
    && HOLDS[cond](inc.last_value, inc.threshold);
  return holds ? `${value} ${cond} ${threshold}` : `${value} (fires ${cond} ${threshold})`;
}

export function sortIncidents(items) {
  return items.slice().sort((a, b) => sevRank(a.severity) - sevRank(b.severity)
    || String(b.created_at).localeCompare(String(a.created_at)));
}

function incidentRow(inc, rules) {
  const rule = rules.get(inc.rule_name);
  return h('tr', { 'data-incident-id': inc.id, class: `sev-row-${inc.severity}` },
    h('td', null, sevBadge(inc.severity)),
    h('td', { class: 'title-cell' }, h('a', { href: `/incidents/${inc.id}` }, inc.title)),
    h('td', null, inc.window_key || '—'),
    h('td', null, inc.rule_name ? h('a', { href: `/rules/${encodeURIComponent(inc.rule_name)}` }, inc.rule_name) : '—'),
    h('td', { class: 'num' }, valueVsThreshold(inc, rule)),
    h('td', { class: `status st-${inc.status}` }, inc.status),
    h('td', null, inc.assignee || h('span', { class: 'muted' }, '—')),
    h('td', { class: 'num' }, age(inc.first_seen)));
}

const last = (series) => (series && series.length ? series[series.length - 1][1] : null);
const values = (series) => (series || []).map((p) => p[1]);

function serviceRow(svc) {
  const er = last(svc.error_rate);
  const label = svc.window_key === '__all__' ? 'all services' : svc.window_key;
  return h('tr', { 'data-service': svc.window_key, class: svc.window_key === '__all__' ? 'all-row' : null },
    h('td', null, svc.window_key === '__all__' ? h('em', null, label) : label),
    h('td', { class: 'num spark-cell' }, h('span', { class: 'spark-val' }, fmtRate(last(svc.logs_per_s))),
      sparkline(values(svc.logs_per_s), { label: `log lines per second, ${label}` })),
    h('td', { class: ['num spark-cell', er !== null && er > 0.05 ? 'bad' : null] },
      h('span', { class: 'spark-val' }, fmtPct(er)),
      sparkline(values(svc.error_rate), { label: `error rate, ${label}`, class: er !== null && er > 0.05 ? 'spark-bad' : null })),
    h('td', { class: 'num spark-cell' }, h('span', { class: 'spark-val' }, fmtMs(last(svc.latency_p95))),
      sparkline(values(svc.latency_p95), { label: `p95 latency, ${label}` })));
}

export async function mount(ctx) {
  ctx.setTitle('Now');
  const openBox = h('div', { class: 'section-body' }, h('p', { class: 'muted' }, 'Loading…'));
  const openCount = h('span', { class: 'count' });
  const svcBox = h('div', { class: 'section-body' }, h('p', { class: 'muted' }, 'Loading…'));
  const ingestBox = h('div', { id: 'ingest-health', class: 'ingest' });
  ctx.root.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Now')),
    h('section', { class: 'panel', 'aria-labelledby': 'open-h' },
      h('h2', { id: 'open-h' }, 'Open incidents ', openCount), openBox),
    h('div', { class: 'two-col' },
      h('section', { class: 'panel grow', 'aria-labelledby': 'svc-h' }, h('h2', { id: 'svc-h' }, 'Services ', h('span', { class: 'muted small' }, 'last 30 min')), svcBox),
      h('section', { class: 'panel side', 'aria-labelledby': 'ingest-h' }, h('h2', { id: 'ingest-h' }, 'Ingest'), ingestBox)));

  // ---- open incidents ----
  let loading = false;
  let again = false;
  async function loadOpen() {
    if (loading) { again = true; return; }
    loading = true;
    try {
      const [page, rules] = await Promise.all([
        api('GET', '/incidents', null, { query: { status: ['open', 'investigating'], limit: 200 }, signal: ctx.signal }),
        rulesByName(ctx.signal),
      ]);
      const items = sortIncidents(page.items);
      openCount.textContent = items.length ? `(${items.length})` : '';
      replace(openBox, table('open-incidents',
        ['Sev', 'Title', 'Service', 'Rule', ['Value', 'num'], 'Status', 'Assignee', ['Age', 'num']],
        items.map((inc) => incidentRow(inc, rules))));
      if (!items.length) {
        openBox.querySelector('tbody').append(h('tr', { class: 'empty-row' }, h('td', { colspan: 8 }, 'Nothing open. All quiet.')));
      }
    } catch (e) {
      if (!isAbort(e)) showError(e);
    } finally {
      loading = false;
      if (again && ctx.alive()) { again = false; loadOpen(); }
    }
  }
  const refetch = debounce(loadOpen, 150);
  ctx.onCleanup(refetch.cancel);
  ctx.live('incident', () => refetch());
  ctx.every(30_000, loadOpen);

  // ---- services ----
  let svcMissing = false;
  async function loadServices() {
    if (svcMissing) return;
    try {
      const data = await api('GET', '/metrics/services', null, { query: { since_minutes: 30 }, signal: ctx.signal });
      const list = (data.services || []).slice().sort((a, b) => {
        if (a.window_key === '__all__') return 1;
        if (b.window_key === '__all__') return -1;
        return a.window_key.localeCompare(b.window_key);
      });
      replace(svcBox, table('services', ['Service', ['Log lines/s', 'num'], ['Error rate', 'num'], ['p95 latency', 'num']], list.map(serviceRow)));
      if (!list.length) svcBox.querySelector('tbody').append(h('tr', { class: 'empty-row' }, h('td', { colspan: 4 }, 'No service sent data in the last 30 minutes.')));
    } catch (e) {
      if (isAbort(e)) return;
      if (e instanceof ApiError && e.status === 404) {
        svcMissing = true;
        replace(svcBox, h('p', { class: 'muted note' }, 'The services overview is not available from this API version.'));
        return;
      }
      replace(svcBox, h('p', { class: 'muted note' }, `Could not load services: ${e.message}`));
    }
  }
  ctx.every(10_000, loadServices);

  // ---- ingest ----
  let dl = null;
  let dlMissing = false;
  async function loadDeadLetters() {
    if (dlMissing) return;
    try {
      dl = await api('GET', '/dead-letters/summary', null, { signal: ctx.signal });
    } catch (e) {
      if (isAbort(e)) return;
      if (e instanceof ApiError && (e.status === 404 || e.status === 422)) dlMissing = true;
      dl = null;
    }
    renderIngest();
  }
  function stat(label, value, cls) {
    return h('div', { class: ['stat', cls] }, h('div', { class: 'stat-label' }, label), h('div', { class: 'stat-value' }, value));
  }
  const mountedAt = Date.now();
  function renderIngest() {
    const t = ingestTotals();
    const waiting = !t && Date.now() - mountedAt < 10_000;
    const dlTotal = dl ? h('a', { href: '/dead-letters' }, fmtNum(dl.total),
      dl.last_hour ? h('span', { class: 'muted small' }, ` (${fmtNum(dl.last_hour)} in the last hour)`) : null)
      : h('a', { href: '/dead-letters' }, dlMissing ? 'view' : '—');
    replace(ingestBox,
      t ? null : waiting ? h('p', { class: 'muted small' }, 'waiting for the workers…') : h('p', { class: 'warn-note' }, 'no worker heard from'),
      h('div', { class: 'stats' },
        stat('in', t ? fmtRate(t.events_per_s + t.dead_letters_per_s) : '—'),
        stat('written', t ? fmtRate(t.events_per_s) : '—'),
        stat('consumer lag', t && t.lag !== null ? fmtNum(t.lag) : '—'),
        stat('dead letters/s', t ? fmtRate(t.dead_letters_per_s) : '—', t && t.dead_letters_per_s > 0 ? 'bad' : null),
        stat('dead letters', dlTotal),
        stat('workers', t ? String(t.workers) : '0')),
      dl && dl.newest_at ? h('p', { class: 'muted small' }, 'newest dead letter ', when(dl.newest_at)) : null);
  }
  ctx.live('ingest', () => { /* rendered by the timer */ });
  ctx.every(1000, renderIngest);
  ctx.every(30_000, loadDeadLetters);
  renderIngest();

  await Promise.all([loadOpen(), loadServices(), loadDeadLetters()]);
}
