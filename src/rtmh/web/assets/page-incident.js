// One incident (/incidents/<id>): what, why, the metric around it, actions, timeline,
// recent errors and changes, notifications with every attempt.

import { h, replace, clear, age, when, sevBadge, fmtMetric, parseTime, debounce, fmtDuration } from './dom.js';
import { api, ApiError, isAbort, showError, showFormError, fieldError, clearFieldErrors, hideBanner } from './api.js';
import { lineChart, legend } from './chart.js';
import { rulesByName, valueVsThreshold } from './page-now.js';

const ACTIONS = {
  open: ['acknowledge', 'resolve', 'close'],
  investigating: ['resolve', 'close'],
  resolved: ['close', 'reopen'],
  closed: ['reopen'],
};
const ACTION_LABEL = { acknowledge: 'Acknowledge', resolve: 'Resolve', close: 'Close', reopen: 'Reopen' };

/** the series field a rule's aggregation reads */
export function pointValue(p, aggregation) {
  switch (aggregation) {
    case 'avg': return p.count ? p.sum / p.count : null;
    case 'min': case 'max': case 'sum': case 'count': case 'p50': case 'p95': case 'p99': return p[aggregation];
    default: return p.value;
  }
}

function detailsText(entry) {
  const d = entry.details || {};
  if (d.message) return String(d.message);
  if (entry.event_type === 'notified' || d.channel) {
    return [d.event && `${d.event}`, d.channel && `via ${d.channel}`, d.status, d.http_status && `HTTP ${d.http_status}`, d.error]
      .filter(Boolean).join(' · ');
  }
  if (d.reason) return String(d.reason);
  if (d.assignee !== undefined) return `assignee: ${d.assignee ?? 'nobody'}`;
  const keys = Object.keys(d).filter((k) => k !== 'actor' && ['string', 'number', 'boolean'].includes(typeof d[k])).slice(0, 6);
  return keys.map((k) => `${k}=${d[k]}`).join(' ');
}

function metaItem(label, ...value) {
  return h('div', { class: 'meta-item' }, h('dt', null, label), h('dd', null, ...value));
}

export async function mount(ctx) {
  const id = ctx.params.id;
  ctx.setTitle('Incident');
  const head = h('div', { class: 'incident-head' }, h('p', { class: 'muted' }, 'Loading…'));
  const actions = h('div', { class: 'actions', role: 'toolbar', 'aria-label': 'Incident actions' });
  const forms = h('div', { class: 'action-forms' });
  const chartBox = h('div', { id: 'incident-chart', class: 'chart-box' }, h('p', { class: 'muted' }, 'Loading the metric…'));
  const chartTitle = h('span', { class: 'muted small' });
  const timeline = h('ol', { id: 'timeline', class: 'timeline' });
  const errors = h('div', { id: 'recent-errors', class: 'loglines' });
  const changes = h('div', { id: 'recent-changes' });
  const notifs = h('div', { id: 'notifications', class: 'notifs' });
  ctx.root.append(
    h('p', { class: 'crumbs' }, h('a', { href: '/' }, 'Now'), ' / ', h('a', { href: '/incidents' }, 'Incidents')),
    head, actions, forms,
    h('section', { class: 'panel' }, h('h2', null, 'Metric ', chartTitle), chartBox),
    h('div', { class: 'two-col' },
      h('section', { class: 'panel grow' }, h('h2', null, 'Timeline'), timeline),
      h('div', { class: 'side wide-side' },
        h('section', { class: 'panel' }, h('h2', null, 'Notifications'), notifs),
        h('section', { class: 'panel' }, h('h2', null, 'Recent errors'), errors),
        h('section', { class: 'panel' }, h('h2', null, 'Recent changes'), changes))));

  let inc = null;
  let rule;
  let ruleLoaded = false;
  let chartKey = '';
  let chartAt = 0;

  // ---- forms (persist across re-renders) ----
  const assigneeInput = h('input', { id: 'assignee-input', name: 'assignee', type: 'text', autocomplete: 'off', placeholder: 'name (empty: unassign)', maxlength: 200 });
  const assignForm = h('form', { class: 'inline-form', id: 'assign-form', hidden: true, novalidate: true },
    h('label', { for: 'assignee-input' }, 'Assignee'), assigneeInput,
    h('button', { type: 'submit', id: 'assignee-save', class: 'btn primary' }, 'Save'),
    h('button', { type: 'button', class: 'btn', onclick: () => { assignForm.hidden = true; } }, 'Cancel'),
    fieldError('assignee'));
  assignForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = assigneeInput.value.trim();
    await act(assignForm, 'assign', { assignee: v === '' ? null : v }, () => { assignForm.hidden = true; });
  });

  const noteInput = h('textarea', { id: 'note-input', name: 'message', rows: 3, maxlength: 4000, placeholder: 'What did you find or do?' });
  const noteForm = h('form', { class: 'stack-form', id: 'note-form', hidden: true, novalidate: true },
    h('label', { for: 'note-input' }, 'Note'), noteInput, fieldError('message'),
    h('div', { class: 'form-buttons' },
      h('button', { type: 'submit', id: 'note-save', class: 'btn primary' }, 'Add note'),
      h('button', { type: 'button', class: 'btn', onclick: () => { noteForm.hidden = true; } }, 'Cancel')));
  noteForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    await act(noteForm, 'notes', { message: noteInput.value }, () => { noteInput.value = ''; noteForm.hidden = true; });
  });

  const silService = h('input', { id: 'silence-service', name: 'service', type: 'text' });
  const silRule = h('input', { id: 'silence-rule', name: 'rule', type: 'text' });
  const silDuration = h('select', { id: 'silence-duration', name: 'duration_seconds' },
    [['3600', '1 hour'], ['7200', '2 hours'], ['14400', '4 hours'], ['86400', '1 day']]
      .map(([v, t]) => h('option', { value: v, selected: v === '7200' }, t)));
  const silComment = h('input', { id: 'silence-comment', name: 'comment', type: 'text', placeholder: 'why (shown to others)' });
  const silResult = h('p', { id: 'silence-result', class: 'ok-note', 'aria-live': 'polite' });
  const silenceForm = h('form', { id: 'silence-form', class: 'grid-form', hidden: true, novalidate: true },
    h('h3', null, 'Silence similar notifications'),
    h('div', { class: 'field' }, h('label', { for: 'silence-service' }, 'Service (glob)'), silService, fieldError('matchers.service')),
    h('div', { class: 'field' }, h('label', { for: 'silence-rule' }, 'Rule (glob)'), silRule, fieldError('matchers.rule')),
    h('div', { class: 'field' }, h('label', { for: 'silence-duration' }, 'For'), silDuration, fieldError('duration_seconds')),
    h('div', { class: 'field wide' }, h('label', { for: 'silence-comment' }, 'Comment'), silComment, fieldError('comment')),
    h('div', { class: 'form-buttons' },
      h('button', { type: 'submit', id: 'silence-submit', class: 'btn primary' }, 'Silence'),
      h('button', { type: 'button', class: 'btn', onclick: () => { silenceForm.hidden = true; } }, 'Cancel')),
    silResult);
  silenceForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearFieldErrors(silenceForm);
    silResult.textContent = '';
    const matchers = {};
    if (silService.value.trim()) matchers.service = silService.value.trim();
    if (silRule.value.trim()) matchers.rule = silRule.value.trim();
    const btn = ev.submitter || silenceForm.querySelector('button[type=submit]');
    btn.disabled = true;
    try {
      const made = await api('POST', '/silences', { matchers, duration_seconds: Number(silDuration.value), comment: silComment.value }, { signal: ctx.signal });
      hideBanner();
      replace(silResult, 'silenced until ', when(made.ends_at),
        ' ', h('a', { href: '/silences' }, 'see silences'));
    } catch (e) {
      showFormError(silenceForm, e);
    } finally {
      btn.disabled = false;
    }
  });
  if (ctx.canWrite) forms.append(assignForm, noteForm, silenceForm);

  async function act(form, path, body, done) {
    const buttons = [...actions.querySelectorAll('button'), ...(form ? form.querySelectorAll('button') : [])];
    buttons.forEach((b) => { b.disabled = true; });
    if (form) clearFieldErrors(form);
    try {
      await api('POST', `/incidents/${encodeURIComponent(id)}/${path}`, body, { signal: ctx.signal });
      hideBanner();
      if (done) done();
      await load();
    } catch (e) {
      if (form) showFormError(form, e); else showError(e);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  function toggle(form, focusEl) {
    const show = form.hidden;
    for (const f of [assignForm, noteForm, silenceForm]) f.hidden = true;
    form.hidden = !show;
    if (show && focusEl) focusEl.focus();
  }

  // ---- rendering ----
  function ruleInfo() {
    const md = (inc && inc.metadata) || {};
    const why = (inc && inc.why) || {};
    return {
      metric_type: (rule && rule.metric_type) || md.metric_type || why.metric_type || null,
      aggregation: (rule && rule.aggregation) || md.aggregation || why.aggregation || 'value',
      condition: (rule && rule.condition) || md.condition || why.condition || null,
      threshold: inc.threshold ?? (rule && rule.threshold) ?? why.threshold ?? null,
    };
  }

  function renderHead() {
    const ri = ruleInfo();
    const f = (v) => fmtMetric(v, ri.metric_type, ri.aggregation);
    const why = inc.why || {};
    ctx.setTitle(inc.title);
    replace(head,
      h('div', { class: 'title-row' },
        sevBadge(inc.severity),
        h('h1', null, inc.title),
        h('span', { id: 'incident-status', class: `pill st-${inc.status}` }, inc.status)),
      inc.description ? h('p', { class: 'desc' }, inc.description) : null,
      h('dl', { class: 'meta' },
        metaItem('Service', inc.window_key || '—'),
        metaItem('Rule', inc.rule_name ? h('a', { href: `/rules/${encodeURIComponent(inc.rule_name)}` }, inc.rule_name) : '—'),
        metaItem('Value', h('span', { class: 'num' }, valueVsThreshold({ ...inc, threshold: ri.threshold }, ri.condition ? ri : null)),
          inc.peak_value !== null ? h('span', { class: 'muted' }, ` (peak ${f(inc.peak_value)})`) : null),
        metaItem('Assignee', inc.assignee || h('span', { class: 'muted' }, 'nobody')),
        metaItem('First seen', when(inc.first_seen), ' ', h('span', { class: 'muted' }, '(', age(inc.first_seen, ' ago'), ')')),
        metaItem('Last seen', when(inc.last_seen)),
        metaItem(inc.status === 'closed' ? 'Closed' : 'Resolved', inc.resolved_at || inc.closed_at ? when(inc.closed_at || inc.resolved_at) : h('span', { class: 'muted' }, 'not yet'),
          inc.resolved_at ? h('span', { class: 'muted' }, ` after ${fmtDuration((parseTime(inc.resolved_at) - parseTime(inc.first_seen)) / 1000)}`) : null),
        metaItem('Triggers', String(inc.trigger_count)),
        metaItem('Source', inc.source)),
      why.reason ? h('p', { class: 'why' }, h('strong', null, 'Why: '), h('code', null, why.reason)) : null,
      inc.metadata && inc.metadata.runbook_url && /^https?:\/\//.test(inc.metadata.runbook_url)
        ? h('p', null, h('a', { href: inc.metadata.runbook_url, rel: 'noopener noreferrer', target: '_blank' }, 'Runbook ↗')) : null);
  }

  function renderActions() {
    clear(actions);
    if (!ctx.canWrite) {
      actions.append(h('p', { class: 'muted small' }, 'Read-only token: actions need write scope.'));
      return;
    }
    for (const a of ACTIONS[inc.status] || []) {
      actions.append(h('button', { type: 'button', id: `action-${a}`, class: ['btn', a === 'acknowledge' || a === 'resolve' ? 'primary' : null],
        title: a === 'acknowledge' ? 'Acknowledge (a)' : a === 'resolve' ? 'Resolve (r)' : null,
        onclick: () => act(null, a, {}) }, ACTION_LABEL[a]));
    }
    actions.append(
      h('span', { class: 'sep' }),
      h('button', { type: 'button', id: 'action-assign', class: 'btn', onclick: () => { assigneeInput.value = inc.assignee || (ctx.session && ctx.session.name) || ''; toggle(assignForm, assigneeInput); } }, 'Assign'),
      h('button', { type: 'button', id: 'action-note', class: 'btn', onclick: () => toggle(noteForm, noteInput) }, 'Add note'),
      h('button', { type: 'button', id: 'action-silence', class: 'btn', onclick: () => {
        if (silenceForm.hidden) { silService.value = inc.window_key || ''; silRule.value = inc.rule_name || ''; silResult.textContent = ''; }
        toggle(silenceForm, silComment);
      } }, 'Silence similar'));
  }

  function renderTimeline() {
    const ri = ruleInfo();
    replace(timeline, inc.timeline.slice().reverse().map((e) => h('li', { 'data-event-type': e.event_type, class: `tl tl-${e.event_type}` },
      h('div', { class: 'tl-head' },
        when(e.created_at),
        h('span', { class: 'tl-type' }, e.event_type.replace(/_/g, ' ')),
        e.from_status || e.to_status ? h('span', { class: 'tl-status' }, `${e.from_status || '∅'} → ${e.to_status || '∅'}`) : null,
        e.value !== null ? h('span', { class: 'tl-value num' }, fmtMetric(e.value, ri.metric_type, ri.aggregation)) : null,
        h('span', { class: 'tl-actor muted' }, e.actor)),
      detailsText(e) ? h('div', { class: 'tl-details' }, detailsText(e)) : null)));
    if (!inc.timeline.length) timeline.append(h('li', { class: 'muted' }, 'No entries.'));
  }

  function renderErrors() {
    const list = inc.recent_errors || [];
    replace(errors, list.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'grid log' },
      h('thead', null, h('tr', null, ['Time', 'Service', 'Level', 'Message'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', null, list.map((e) => h('tr', null,
        h('td', null, when(e.at || e.event_time || e.ts)),
        h('td', null, e.service || inc.window_key || e.host || '—'),
        h('td', null, h('span', { class: `lvl lvl-${e.level || 'error'}` }, e.level || 'error')),
        h('td', { class: 'mono msg', title: e.host ? `host ${e.host}` : null }, String(e.msg ?? e.message ?? JSON.stringify(e)))))))) : h('p', { class: 'muted' }, 'None recorded.'));
  }

  function renderChanges() {
    const list = inc.recent_changes || [];
    replace(changes, list.length ? h('ul', { class: 'changes' }, list.map((c) => {
      const rest = Object.entries(c).filter(([k]) => !['at', 'ts', 'event_time'].includes(k));
      return h('li', null, when(c.at || c.event_time || c.ts), ' ',
        rest.map(([k, v]) => h('span', { class: 'kv' }, h('span', { class: 'k' }, k), '=', h('span', { class: 'v' }, typeof v === 'object' ? JSON.stringify(v) : String(v)))));
    })) : h('p', { class: 'muted' }, 'No deploys or config changes before it.'));
  }

  function renderNotifs() {
    const list = (inc.notifications || []).slice().reverse();
    replace(notifs, list.length ? list.map((n) => h('div', { class: `notif st-${n.status}`, 'data-notification-id': n.id },
      h('div', { class: 'notif-head' },
        h('strong', null, n.channel), ' ', h('span', { class: 'muted' }, n.event), ' ',
        h('span', { class: `pill nst-${n.status}` }, n.status), ' ',
        h('span', { class: 'muted small' }, `attempts ${n.attempts}/${n.max_attempts}`)),
      h('div', { class: 'small' }, n.sent_at ? ['sent ', when(n.sent_at)] : ['queued ', when(n.created_at)],
        n.http_status ? ` · HTTP ${n.http_status}` : null,
        n.suppressed_by ? [' · muted by ', h('a', { href: '/silences' }, `silence #${n.suppressed_by}`)] : null),
      n.last_error ? h('div', { class: 'err-text mono small' }, n.last_error) : null,
      n.attempt_results && n.attempt_results.length ? h('ol', { class: 'attempts' }, n.attempt_results.map((a) => h('li', { class: `att-${a.outcome}` },
        h('span', null, `#${a.attempt}`), ' ', h('span', { class: `pill nst-${a.outcome}` }, a.outcome),
        a.http_status ? ` HTTP ${a.http_status}` : null, ' ', when(a.at),
        a.error ? h('div', { class: 'err-text mono small' }, a.error) : null))) : null))
      : h('p', { class: 'muted' }, 'No notifications.'));
  }

  async function renderChart(force) {
    const ri = ruleInfo();
    const key = `${inc.status}|${inc.resolved_at}`;
    if (!force && key === chartKey && Date.now() - chartAt < 15_000) return;
    chartKey = key;
    chartAt = Date.now();
    if (!ri.metric_type || !inc.window_key) {
      replace(chartBox, h('p', { class: 'muted' }, 'The rule is gone and the incident does not say which metric fired, so there is nothing to plot.'));
      return;
    }
    const first = parseTime(inc.first_seen).getTime();
    const endRef = inc.resolved_at ? parseTime(inc.resolved_at).getTime() : Date.now();
    const since = new Date(first - 30 * 60_000);
    const until = new Date(Math.min(Date.now(), endRef + 10 * 60_000));
    chartTitle.textContent = `${ri.aggregation !== 'value' ? `${ri.aggregation}(${ri.metric_type})` : ri.metric_type} on ${inc.window_key}`;
    try {
      const data = await api('GET', '/metrics/series', null, {
        query: { window_key: inc.window_key, metric_type: ri.metric_type, since: since.toISOString(), until: until.toISOString() },
        signal: ctx.signal,
      });
      const points = data.points.map((p) => ({ t: parseTime(p.window_end).getTime(), v: pointValue(p, ri.aggregation) }));
      // a service younger than the half hour before the incident: start where its data starts
      // (a minute before the opening at least), not with an empty half hour
      const dataStart = points.length ? points[0].t : first;
      const start = Math.max(since.getTime(), Math.min(dataStart, first - 60_000));
      // an open window ends in the future: the axis reaches the newest window's end
      const end = Math.max(until.getTime(), points.length ? points[points.length - 1].t : 0);
      const marks = statusMarks(inc, first);
      replace(chartBox,
        lineChart({ width: Math.max(320, chartBox.clientWidth || 800), height: chartBox.clientWidth < 600 ? 200 : 240, points, threshold: ri.threshold, marks, start, end,
          fmt: (v) => fmtMetric(v, ri.metric_type, ri.aggregation), label: chartTitle.textContent }),
        legend([['lg-series', 'value (by window end)'], ['lg-threshold', `threshold ${fmtMetric(ri.threshold, ri.metric_type, ri.aggregation)}`], ['lg-open', 'opened'], ['lg-resolve', 'resolved']]),
        data.truncated ? h('p', { class: 'muted small' }, 'More windows than shown: the range was truncated.') : null);
    } catch (e) {
      if (isAbort(e)) return;
      replace(chartBox, h('p', { class: 'muted' }, `Could not load the metric: ${e.message}`));
    }
  }

  async function load() {
    try {
      inc = await api('GET', `/incidents/${encodeURIComponent(id)}`, null, { signal: ctx.signal });
    } catch (e) {
      if (isAbort(e)) return;
      if (e instanceof ApiError && (e.status === 404 || e.status === 422)) {
        ctx.setTitle('Incident not found');
        replace(head, h('h1', null, 'Incident not found'), h('p', null, e.message, ' ', h('a', { href: '/incidents' }, 'All incidents')));
        clear(actions);
        return;
      }
      showError(e);
      return;
    }
    if (!ruleLoaded && inc.rule_name) {
      ruleLoaded = true;
      // from the list, not GET /rules/{name}: a deleted rule is no 404 in the console
      rule = (await rulesByName(ctx.signal)).get(inc.rule_name) || null;
    }
    if (!ctx.alive()) return;
    renderHead();
    renderActions();
    renderTimeline();
    renderErrors();
    renderChanges();
    renderNotifs();
    renderChart(false);
  }

  const redraw = debounce(() => { if (inc) renderChart(true); }, 300);
  window.addEventListener('resize', redraw);
  ctx.onCleanup(() => { window.removeEventListener('resize', redraw); redraw.cancel(); });
  const refetch = debounce(() => load().catch((e) => { if (!isAbort(e)) showError(e); }), 150);
  ctx.onCleanup(refetch.cancel);
  ctx.live('incident', (ev) => { if (ev.incident_id === id) refetch(); });
  ctx.live('notification', (ev) => { if (ev.incident_id === id) refetch(); });
  ctx.every(30_000, () => { if (inc && (inc.status === 'open' || inc.status === 'investigating')) renderChart(true); });
  ctx.onKey((ev) => {
    if (ev.key === 'a') { const b = document.getElementById('action-acknowledge'); if (b && !b.disabled) { b.click(); return true; } }
    if (ev.key === 'r') { const b = document.getElementById('action-resolve'); if (b && !b.disabled) { b.click(); return true; } }
    return false;
  });
  await load();
}

/** The chart's marks: each time the incident opened (again) and each time it resolved, from its
 * timeline (a reopened incident has several of each); the first opening when no timeline entry
 * says so. */
function statusMarks(inc, first) {
  const marks = [];
  for (const e of inc.timeline || []) {
    if (!e.to_status || e.to_status === e.from_status) continue;
    if (e.to_status === 'open') marks.push({ t: parseTime(e.created_at).getTime(), cls: 'mark-open', label: e.from_status ? 'reopened' : 'open' });
    if (e.to_status === 'resolved') marks.push({ t: parseTime(e.created_at).getTime(), cls: 'mark-resolve', label: 'resolved' });
  }
  if (!marks.some((m) => m.cls === 'mark-open')) marks.unshift({ t: first, cls: 'mark-open', label: 'open' });
  if (inc.resolved_at && !marks.some((m) => m.cls === 'mark-resolve')) {
    marks.push({ t: parseTime(inc.resolved_at).getTime(), cls: 'mark-resolve', label: 'resolved' });
  }
  return marks.sort((a, b) => a.t - b.t);
}
