// Incidents (/incidents): every incident, filtered, keyset-paged.

import { h, age, when, sevBadge, debounce } from './dom.js';
import { api } from './api.js';
import { pagedTable } from './paged.js';
import { rulesByName, valueVsThreshold } from './page-now.js';

const STATUS = [['', 'any'], ['active', 'open + investigating'], ['open', 'open'], ['investigating', 'investigating'], ['resolved', 'resolved'], ['closed', 'closed']];
const SEV = ['', 'critical', 'high', 'medium', 'low'];

export async function mount(ctx) {
  ctx.setTitle('Incidents');
  const q = (n) => ctx.query.get(n) || '';
  const status = h('select', { id: 'filter-status', name: 'status' }, STATUS.map(([v, t]) => h('option', { value: v, selected: v === q('status') }, t)));
  const severity = h('select', { id: 'filter-severity', name: 'severity' }, SEV.map((v) => h('option', { value: v, selected: v === q('severity') }, v || 'any')));
  const service = h('input', { id: 'filter-service', name: 'service', type: 'search', value: q('service'), placeholder: 'exact service', 'data-search': '' });
  const rule = h('input', { id: 'filter-rule', name: 'rule', type: 'search', value: q('rule'), placeholder: 'rule name' });
  const form = h('form', { class: 'filters', id: 'incidents-filters', role: 'search' },
    h('div', { class: 'field' }, h('label', { for: 'filter-status' }, 'Status'), status),
    h('div', { class: 'field' }, h('label', { for: 'filter-severity' }, 'Severity'), severity),
    h('div', { class: 'field' }, h('label', { for: 'filter-service' }, 'Service'), service),
    h('div', { class: 'field' }, h('label', { for: 'filter-rule' }, 'Rule'), rule),
    h('div', { class: 'field' }, h('button', { type: 'submit', class: 'btn primary' }, 'Apply')));
  const box = h('div');
  ctx.root.append(h('div', { class: 'page-head' }, h('h1', null, 'Incidents')), h('section', { class: 'panel' }, form, box));
  const rules = await rulesByName(ctx.signal);
  const list = pagedTable({
    box, id: 'incidents', empty: 'No incidents match.',
    headers: ['Sev', 'Title', 'Service', 'Rule', ['Value', 'num'], 'Status', 'Assignee', 'Opened', 'Resolved'],
    fetch: (cursor) => api('GET', '/incidents', null, {
      query: {
        status: status.value === 'active' ? ['open', 'investigating'] : status.value, severity: severity.value,
        service: service.value.trim(), rule: rule.value.trim(), limit: 50, cursor,
      },
      signal: ctx.signal,
    }),
    row: (inc) => h('tr', { 'data-incident-id': inc.id },
      h('td', null, sevBadge(inc.severity)),
      h('td', { class: 'title-cell' }, h('a', { href: `/incidents/${inc.id}` }, inc.title)),
      h('td', null, inc.window_key || '—'),
      h('td', null, inc.rule_name || '—'),
      h('td', { class: 'num' }, valueVsThreshold(inc, rules.get(inc.rule_name))),
      h('td', { class: `status st-${inc.status}` }, inc.status),
      h('td', null, inc.assignee || h('span', { class: 'muted' }, '—')),
      h('td', null, when(inc.first_seen), ' ', h('span', { class: 'muted small' }, age(inc.first_seen, ' ago'))),
      h('td', null, when(inc.resolved_at))),
  });
  function apply() {
    ctx.setQuery({ status: status.value, severity: severity.value, service: service.value.trim(), rule: rule.value.trim() });
    list.reload();
  }
  form.addEventListener('submit', (ev) => { ev.preventDefault(); apply(); });
  status.addEventListener('change', apply);
  severity.addEventListener('change', apply);
  const refresh = debounce(() => list.refresh(), 500);
  ctx.onCleanup(refresh.cancel);
  ctx.live('incident', (ev) => { if (ev.event_type !== 'notified' && ev.event_type !== 'comment') refresh(); });
  await list.reload();
}
