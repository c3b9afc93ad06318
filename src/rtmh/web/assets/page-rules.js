// Rules: the list (/rules) and the editor with a backtest preview (/rules/new, /rules/<name>).

import { h, replace, clear, when, sevBadge, fmtMetric, fmtDuration, table, parseTime, globRe } from './dom.js';
import { api, ApiError, isAbort, showError, showFormError, clearFieldErrors, fieldError, hideBanner } from './api.js';
import { lineChart, legend } from './chart.js';
import { pointValue } from './page-incident.js';

const AGGREGATIONS = ['value', 'avg', 'min', 'max', 'sum', 'count', 'p50', 'p95', 'p99'];
const CONDITIONS = ['>', '>=', '<', '<=', '==', '!='];
const SEVERITY = ['low', 'medium', 'high', 'critical'];
const BUILTIN_METRICS = ['error_rate', 'error_count', 'log_count', 'event_count'];

// name, kind, label, help; kinds: text, opt-text, select, number, opt-number, int, opt-int, channels, bool
const FIELDS = [
  ['name', 'text', 'Name', 'unique; used in URLs and silences'],
  ['description', 'opt-text', 'Description', ''],
  ['metric_type', 'text', 'Metric', 'error_rate, error_count, log_count, event_count or a metric name'],
  ['aggregation', 'select', 'Aggregation', 'which statistic of the window is compared', AGGREGATIONS],
  ['condition', 'select', 'Condition', '', CONDITIONS],
  ['threshold', 'number', 'Threshold', 'ratios as fractions: 0.05 = 5 %'],
  ['recovery_threshold', 'opt-number', 'Recovery threshold', 'clears past this (hysteresis); empty: the threshold'],
  ['window_key_pattern', 'text', 'Services (glob)', 'e.g. * or checkout or pay*'],
  ['for_seconds', 'int', 'For (s)', 'condition must hold this long'],
  ['min_count', 'int', 'Min events', 'windows with fewer events give no verdict'],
  ['no_data_seconds', 'opt-int', 'No data after (s)', 'absence rule; empty: off'],
  ['resolve_after_seconds', 'int', 'Resolve after (s)', ''],
  ['repeat_interval_seconds', 'int', 'Repeat every (s)', 'notification repeat while open'],
  ['severity', 'select', 'Severity', '', SEVERITY],
  ['channels', 'channels', 'Channels', ''],
  ['enabled', 'bool', 'Enabled', ''],
  ['source', 'text', 'Source', ''],
  ['runbook_url', 'opt-text', 'Runbook URL', ''],
];
const DEFAULTS = {
  name: '', description: '', metric_type: 'error_rate', aggregation: 'value', condition: '>', threshold: '',
  recovery_threshold: '', window_key_pattern: '*', for_seconds: 0, min_count: 20, no_data_seconds: '',
  resolve_after_seconds: 30, repeat_interval_seconds: 3600, severity: 'medium', channels: [], enabled: true,
  source: 'threshold_monitor', runbook_url: '',
};

function fmtRuleValue(r, v) { return fmtMetric(v, r.metric_type, r.aggregation); }

function ruleMetric(r) {
  return r.aggregation && r.aggregation !== 'value' ? `${r.aggregation}(${r.metric_type})` : r.metric_type;
}

export async function mountList(ctx) {
  ctx.setTitle('Rules');
  const filter = h('input', { type: 'search', id: 'rules-filter', 'data-search': '', placeholder: 'filter by name, metric, service', value: ctx.query.get('q') || '', 'aria-label': 'Filter rules' });
  const box = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  ctx.root.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Rules'), filter, h('span', { class: 'spacer' }),
      ctx.canWrite ? h('a', { class: 'btn primary', href: '/rules/new', id: 'rule-new' }, 'New rule') : null),
    h('section', { class: 'panel' }, box));
  let rules = [];
  function renderRows() {
    const q = filter.value.trim().toLowerCase();
    const shown = rules.filter((r) => !q || [r.name, r.metric_type, r.window_key_pattern, r.description || '', r.severity].some((x) => x.toLowerCase().includes(q)));
    replace(box, table('rules', ['Name', 'Enabled', 'Metric', ['Condition', 'num'], 'Services', 'For', 'Severity', 'Channels', 'Managed by'],
      shown.map((r) => h('tr', { 'data-rule': r.name },
        h('td', null, h('a', { href: `/rules/${encodeURIComponent(r.name)}` }, r.name), r.description ? h('div', { class: 'muted small' }, r.description) : null),
        h('td', null, h('button', { type: 'button', class: ['btn small toggle-enabled', r.enabled ? 'on' : 'off'], 'aria-pressed': String(r.enabled), disabled: !ctx.canWrite,
          'aria-label': `${r.enabled ? 'Disable' : 'Enable'} ${r.name}`, onclick: (ev) => toggle(r, ev.currentTarget) }, r.enabled ? 'on' : 'off')),
        h('td', { class: 'mono small' }, ruleMetric(r)),
        h('td', { class: 'num' }, `${r.condition} ${fmtRuleValue(r, r.threshold)}`, r.recovery_threshold !== null ? h('span', { class: 'muted small' }, ` (clears ${fmtRuleValue(r, r.recovery_threshold)})`) : null),
        h('td', { class: 'mono small' }, r.window_key_pattern),
        h('td', null, r.for_seconds ? fmtDuration(r.for_seconds) : '—'),
        h('td', null, sevBadge(r.severity)),
        h('td', null, r.channels.length ? r.channels.join(', ') : h('span', { class: 'muted' }, 'none')),
        h('td', { class: 'small' }, r.managed_by || h('span', { class: 'muted' }, '—'))))));
    if (!shown.length) box.querySelector('tbody').append(h('tr', { class: 'empty-row' }, h('td', { colspan: 9 }, rules.length ? 'No rule matches the filter.' : 'No rules yet.')));
  }
  async function toggle(r, btn) {
    btn.disabled = true;
    try {
      const updated = await api('POST', `/rules/${encodeURIComponent(r.name)}/${r.enabled ? 'disable' : 'enable'}`, null, { signal: ctx.signal });
      Object.assign(r, updated && typeof updated === 'object' ? updated : { enabled: !r.enabled });
      renderRows();
    } catch (e) {
      showError(e);
      btn.disabled = false;
    }
  }
  filter.addEventListener('input', () => { ctx.setQuery({ q: filter.value.trim() }); renderRows(); });
  rules = await api('GET', '/rules', null, { signal: ctx.signal });
  renderRows();
}

function inputFor(field, value, channels, canWrite) {
  const [name, kind, label, help, options] = field;
  const id = `rule-${name}`;
  const helpEl = help ? h('div', { class: 'field-help', id: `${id}-help` }, help) : null;
  const described = help ? `${id}-help` : null;
  let input;
  if (kind === 'select') {
    input = h('select', { id, name, 'aria-describedby': described }, options.map((o) => h('option', { value: o, selected: o === value }, o)));
  } else if (kind === 'bool') {
    return h('div', { class: 'field check' }, h('input', { id, name, type: 'checkbox', checked: Boolean(value) }), h('label', { for: id }, label), fieldError(name));
  } else if (kind === 'channels') {
    const names = [...new Set([...channels.map((c) => c.name), ...(value || [])])];
    return h('fieldset', { class: 'field wide' }, h('legend', null, label),
      names.length ? h('div', { class: 'checks' }, names.map((n) => h('label', null,
        h('input', { type: 'checkbox', name: 'channels', value: n, checked: (value || []).includes(n) }), ' ', n)))
        : h('span', { class: 'muted small' }, 'No channels defined.'),
      fieldError('channels'));
  } else {
    const numeric = kind.endsWith('number') || kind.endsWith('int');
    input = h('input', {
      id, name, type: 'text', value: value === null || value === undefined ? '' : String(value), autocomplete: 'off', spellcheck: 'false',
      inputmode: numeric ? (kind.endsWith('int') ? 'numeric' : 'decimal') : null, 'aria-describedby': described,
      list: name === 'metric_type' ? 'metric-types' : null,
    });
  }
  if (!canWrite) input.disabled = true;
  return h('div', { class: ['field', name === 'description' || name === 'runbook_url' ? 'wide' : null] },
    h('label', { for: id }, label), input, helpEl, fieldError(name));
}

/** the form as a rule object: numbers as numbers (what was typed when it is not one) */
function collect(form) {
  const out = {};
  for (const [name, kind] of FIELDS) {
    if (kind === 'channels') {
      out.channels = [...form.querySelectorAll('input[name="channels"]:checked')].map((x) => x.value);
      continue;
    }
    const el = form.elements.namedItem(name);
    if (!el) continue;
    if (kind === 'bool') { out[name] = el.checked; continue; }
    const raw = el.value.trim();
    if (kind === 'select') { out[name] = el.value; continue; }
    if (kind === 'text') { out[name] = raw; continue; }
    if (kind === 'opt-text') { out[name] = raw === '' ? null : raw; continue; }
    if (raw === '') { if (kind.startsWith('opt-')) out[name] = null; continue; } // required number left empty: let the API say so / default
    const n = Number(raw);
    out[name] = Number.isFinite(n) ? n : raw;
  }
  if (!('threshold' in out)) out.threshold = null;
  return out;
}

export async function mountEdit(ctx) {
  const isNew = !ctx.params.name;
  const name = ctx.params.name;
  ctx.setTitle(isNew ? 'New rule' : `Rule ${name}`);
  let rule = { ...DEFAULTS };
  let channels = [];
  let keys = [];
  try {
    const [r, ch, k] = await Promise.all([
      isNew ? Promise.resolve(null) : api('GET', `/rules/${encodeURIComponent(name)}`, null, { signal: ctx.signal }),
      api('GET', '/channels', null, { signal: ctx.signal }).catch((e) => { if (isAbort(e)) throw e; return []; }),
      api('GET', '/metrics/keys', null, { query: { since_minutes: 60 }, signal: ctx.signal }).catch((e) => { if (isAbort(e)) throw e; return []; }),
    ]);
    if (r) rule = r;
    channels = ch || [];
    keys = k || [];
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      ctx.setTitle('Rule not found');
      ctx.root.append(h('h1', null, 'Rule not found'), h('p', null, e.message, ' ', h('a', { href: '/rules' }, 'All rules')));
      return;
    }
    throw e;
  }
  const metricNames = [...new Set([...BUILTIN_METRICS, ...keys.flatMap((k) => Object.keys(k.metrics || {}))])].sort();
  const force = h('input', { type: 'checkbox', id: 'rule-force', name: 'force' });
  const saved = h('p', { class: 'ok-note', id: 'rule-saved', 'aria-live': 'polite' });
  const form = h('form', { id: 'rule-form', class: 'grid-form', novalidate: true },
    h('datalist', { id: 'metric-types' }, metricNames.map((m) => h('option', { value: m }))),
    rule.managed_by ? h('div', { class: 'notice', id: 'rule-managed' },
      'This rule is managed by ', h('code', null, rule.managed_by), ': change it there and run ', h('code', null, 'rtmh config apply'),
      '. Saving here needs force, and the next apply puts the file\'s version back. ',
      h('label', { class: 'inline' }, force, ' force save')) : null,
    FIELDS.map((f) => inputFor(f, rule[f[0]], channels, ctx.canWrite)),
    h('div', { class: 'form-buttons' },
      ctx.canWrite ? h('button', { type: 'submit', id: 'rule-save', class: 'btn primary' }, isNew ? 'Create rule' : 'Save') : h('span', { class: 'muted' }, 'Read-only token.'),
      h('a', { href: '/rules', class: 'btn' }, 'Back to rules'),
      !isNew && ctx.canWrite ? h('button', { type: 'button', id: 'rule-delete', class: 'btn danger', onclick: del }, 'Delete') : null),
    saved);

  if (!ctx.canWrite) for (const el of form.querySelectorAll('input, select, textarea')) el.disabled = true;

  // backtest
  const range = h('select', { id: 'backtest-range', 'aria-label': 'Backtest range' },
    [['1', 'last 1 h'], ['6', 'last 6 h'], ['24', 'last 24 h']].map(([v, t]) => h('option', { value: v, selected: v === (ctx.query.get('range') || '6') }, t)));
  const btButton = h('button', { type: 'button', id: 'backtest', class: 'btn' }, 'Backtest preview');
  const btOut = h('div', { id: 'backtest-result' });
  ctx.root.append(
    h('p', { class: 'crumbs' }, h('a', { href: '/rules' }, 'Rules'), ' / ', isNew ? 'new' : name),
    h('div', { class: 'page-head' }, h('h1', null, isNew ? 'New rule' : name),
      !isNew ? h('span', { class: 'muted small' }, 'updated ', when(rule.updated_at)) : null),
    h('section', { class: 'panel' }, form),
    h('section', { class: 'panel' }, h('h2', null, 'Backtest'),
      h('p', { class: 'muted small' }, 'Replays the form\'s rule (saved or not) over the stored windows with the engine\'s own evaluation.'),
      h('div', { class: 'inline-form' }, range, btButton), btOut));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearFieldErrors(form);
    saved.textContent = '';
    const body = collect(form);
    const btn = form.querySelector('#rule-save');
    btn.disabled = true;
    try {
      let out;
      if (isNew) out = await api('POST', '/rules', body, { signal: ctx.signal });
      else out = await api('PUT', `/rules/${encodeURIComponent(name)}`, body, { signal: ctx.signal, query: { force: force.checked ? 'true' : null } });
      hideBanner();
      if (isNew || (out && out.name !== name)) { ctx.navigate(`/rules/${encodeURIComponent(out.name)}`, { replace: isNew }); return; }
      saved.textContent = 'Saved.';
    } catch (e) {
      showFormError(form, e);
    } finally {
      btn.disabled = false;
    }
  });

  async function del() {
    if (!window.confirm(`Delete rule ${name}? Its incidents keep their history.`)) return;
    try {
      await api('DELETE', `/rules/${encodeURIComponent(name)}`, null, { signal: ctx.signal, query: { force: force.checked ? 'true' : null } });
      ctx.navigate('/rules');
    } catch (e) { showError(e); }
  }

  range.addEventListener('change', () => ctx.setQuery({ range: range.value }));
  btButton.addEventListener('click', async () => {
    clearFieldErrors(form);
    const r = collect(form);
    const end = new Date();
    const start = new Date(end.getTime() - Number(range.value) * 3600_000);
    btButton.disabled = true;
    replace(btOut, h('p', { class: 'muted' }, 'Replaying…'));
    try {
      const res = await api('POST', '/rules/backtest', { rule: r, start: start.toISOString(), end: end.toISOString() }, { signal: ctx.signal });
      hideBanner();
      renderBacktest(r, res, start, end);
    } catch (e) {
      clear(btOut);
      // the backtest names the rule's fields rule.<field>: show them at the form's fields
      if (e instanceof ApiError && Array.isArray(e.problem.errors)) {
        e.problem.errors = e.problem.errors.map((x) => ({ ...x, field: String(x.field || '').replace(/^rule\./, '') }));
      }
      showFormError(form, e);
    } finally {
      btButton.disabled = false;
    }
  });

  function renderBacktest(r, res, start, end) {
    const sum = res.summary;
    const byService = new Map();
    for (const inc of res.incidents) {
      if (!byService.has(inc.window_key)) byService.set(inc.window_key, []);
      byService.get(inc.window_key).push(inc);
    }
    let services = [...byService.keys()];
    if (!services.length) {
      const re = globRe(r.window_key_pattern || '*');
      services = keys.map((k) => k.window_key).filter((k) => re.test(k) && k !== '__other__')
        .sort((a, b) => (a === '__all__') - (b === '__all__') || a.localeCompare(b));
    }
    const f = (v) => fmtMetric(v, r.metric_type, r.aggregation);
    const picker = h('select', { id: 'backtest-service', 'aria-label': 'Service to chart' }, services.map((k) => h('option', { value: k }, k)));
    const chartBox = h('div', { id: 'backtest-chart', class: 'chart-box' });
    replace(btOut,
      h('p', { class: 'summary-line' }, h('strong', null, `${sum.incidents} incident${sum.incidents === 1 ? '' : 's'}`),
        ` would have opened over ${sum.keys_matched} service${sum.keys_matched === 1 ? '' : 's'}`,
        sum.live_at_end ? `, ${sum.live_at_end} still open at the end` : '',
        h('span', { class: 'muted' }, ` · ${sum.windows_evaluated} windows judged, ${sum.windows_without_verdict} without a verdict`)),
      byService.size ? table('backtest-incidents', ['Service', ['Incidents', 'num'], 'First open', ['Peak', 'num'], ['Reopens', 'num'], ['Notifications', 'num']],
        [...byService.entries()].map(([k, list]) => h('tr', { 'data-service': k },
          h('td', null, k), h('td', { class: 'num' }, String(list.length)),
          h('td', null, when(list[0].opened_at)),
          h('td', { class: 'num' }, f(Math.max(...list.map((x) => x.peak_value ?? -Infinity)))),
          h('td', { class: 'num' }, String(list.reduce((a, x) => a + x.reopens, 0))),
          h('td', { class: 'num' }, String(list.reduce((a, x) => a + x.notifications, 0)))))) : null,
      services.length ? h('div', { class: 'inline-form' }, h('label', { for: 'backtest-service' }, 'Chart'), picker) : h('p', { class: 'muted' }, 'No service with data matches the rule.'),
      chartBox);
    async function draw() {
      const key = picker.value;
      if (!key) { replace(chartBox, h('p', { class: 'muted' }, 'Nothing to chart.')); return; }
      replace(chartBox, h('p', { class: 'muted' }, 'Loading…'));
      try {
        const data = await api('GET', '/metrics/series', null, { query: { window_key: key, metric_type: r.metric_type, since: start.toISOString(), until: end.toISOString() }, signal: ctx.signal });
        const marks = [];
        for (const inc of byService.get(key) || []) {
          marks.push({ t: parseTime(inc.opened_at).getTime(), cls: 'mark-open', label: 'open' });
          if (inc.resolved_at) marks.push({ t: parseTime(inc.resolved_at).getTime(), cls: 'mark-resolve', label: 'resolve' });
        }
        const threshold = typeof r.threshold === 'number' ? r.threshold : null;
        replace(chartBox,
          lineChart({ width: Math.max(320, chartBox.clientWidth || 800), height: 220, start: start.getTime(), end: end.getTime(),
            points: data.points.map((p) => ({ t: parseTime(p.window_end).getTime(), v: pointValue(p, r.aggregation) })),
            threshold, marks, fmt: f, label: `${ruleMetric(r)} on ${key}` }),
          legend([['lg-series', `${ruleMetric(r)} on ${key}`], ['lg-threshold', `threshold ${f(threshold)}`], ['lg-open', 'would open'], ['lg-resolve', 'would resolve']]));
      } catch (e) {
        if (!isAbort(e)) replace(chartBox, h('p', { class: 'muted' }, `Could not load the series: ${e.message}`));
      }
    }
    picker.addEventListener('change', draw);
    draw();
  }
}
