// Notifications log (/notifications): every delivery, filterable, keyset-paged.

import { h, when, age, debounce } from './dom.js';
import { api, isAbort } from './api.js';
import { pagedTable } from './paged.js';

const STATUSES = ['', 'pending', 'sending', 'sent', 'failed', 'dead', 'suppressed'];

export async function mount(ctx) {
  ctx.setTitle('Notifications');
  const status = h('select', { id: 'filter-status', name: 'status' }, STATUSES.map((s) => h('option', { value: s, selected: s === (ctx.query.get('status') || '') }, s || 'any')));
  const channel = h('select', { id: 'filter-channel', name: 'channel', 'data-search': '' }, h('option', { value: '' }, 'any'));
  const form = h('form', { class: 'filters', id: 'notifications-filters', role: 'search' },
    h('div', { class: 'field' }, h('label', { for: 'filter-status' }, 'Status'), status),
    h('div', { class: 'field' }, h('label', { for: 'filter-channel' }, 'Channel'), channel),
    h('div', { class: 'field' }, h('button', { type: 'submit', class: 'btn' }, 'Refresh')));
  const box = h('div');
  ctx.root.append(h('div', { class: 'page-head' }, h('h1', null, 'Notifications')), h('section', { class: 'panel' }, form, box));
  const list = pagedTable({
    box, id: 'notifications-log', empty: 'No notifications match.',
    headers: ['Created', 'Incident', 'Service', 'Channel', 'Event', 'Status', ['Attempts', 'num'], ['HTTP', 'num'], 'Sent', 'Last error'],
    fetch: (cursor) => api('GET', '/notifications', null, { query: { status: status.value, channel: channel.value, limit: 50, cursor }, signal: ctx.signal }),
    row: (n) => h('tr', { 'data-notification-id': n.id },
      h('td', null, age(n.created_at, ' ago')),
      h('td', { class: 'title-cell' }, n.incident_id ? h('a', { href: `/incidents/${n.incident_id}` }, n.incident_title || n.incident_id) : '—'),
      h('td', null, n.window_key || '—'),
      h('td', null, n.channel),
      h('td', null, n.event),
      h('td', null, h('span', { class: `pill nst-${n.status}` }, n.status)),
      h('td', { class: 'num' }, `${n.attempts}/${n.max_attempts ?? '?'}`),
      h('td', { class: 'num' }, n.http_status ? String(n.http_status) : '—'),
      h('td', null, when(n.sent_at)),
      h('td', { class: 'msg err-text small' }, n.last_error || '')),
  });
  function apply() {
    ctx.setQuery({ status: status.value, channel: channel.value });
    list.reload();
  }
  form.addEventListener('submit', (ev) => { ev.preventDefault(); apply(); });
  status.addEventListener('change', apply);
  channel.addEventListener('change', apply);
  try {
    const chans = await api('GET', '/channels', null, { signal: ctx.signal });
    const want = ctx.query.get('channel') || '';
    const names = [...new Set([...chans.map((c) => c.name), ...(want ? [want] : [])])];
    channel.append(...names.map((n) => h('option', { value: n, selected: n === want }, n)));
  } catch (e) {
    if (isAbort(e)) return;
  }
  const refresh = debounce(() => list.refresh(), 1000);
  ctx.onCleanup(refresh.cancel);
  ctx.live('notification', () => refresh());
  await list.reload();
}
