// Events search (/events): raw events by service, level, time range and message text.

import { h, when } from './dom.js';
import { api } from './api.js';
import { pagedTable } from './paged.js';

const LEVELS = ['', 'debug', 'info', 'warn', 'error', 'fatal'];
const RANGES = [['15m', 15], ['1h', 60], ['6h', 360], ['24h', 1440], ['custom', 0]];

function localInput(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

export async function mount(ctx) {
  ctx.setTitle('Events');
  const q = (n) => ctx.query.get(n) || '';
  const text = h('input', { id: 'events-q', name: 'q', type: 'search', value: q('q'), placeholder: 'text in the message', 'data-search': '' });
  const service = h('input', { id: 'events-service', name: 'service', type: 'text', value: q('service'), placeholder: 'any' });
  const level = h('select', { id: 'events-level', name: 'level' }, LEVELS.map((l) => h('option', { value: l, selected: l === q('level') }, l || 'any')));
  const initialRange = q('range') || (q('since') || q('until') ? 'custom' : '1h');
  const range = h('select', { id: 'events-range', name: 'range' }, RANGES.map(([v]) => h('option', { value: v, selected: v === initialRange }, v === 'custom' ? 'custom' : `last ${v}`)));
  const since = h('input', { id: 'events-since', name: 'since', type: 'datetime-local', value: q('since') });
  const until = h('input', { id: 'events-until', name: 'until', type: 'datetime-local', value: q('until') });
  const custom = h('div', { class: 'field custom-range' }, h('label', { for: 'events-since' }, 'Since'), since);
  const custom2 = h('div', { class: 'field custom-range' }, h('label', { for: 'events-until' }, 'Until'), until);
  const form = h('form', { class: 'filters', id: 'events-form', role: 'search' },
    h('div', { class: 'field' }, h('label', { for: 'events-q' }, 'Message contains'), text),
    h('div', { class: 'field' }, h('label', { for: 'events-service' }, 'Service'), service),
    h('div', { class: 'field' }, h('label', { for: 'events-level' }, 'Level'), level),
    h('div', { class: 'field' }, h('label', { for: 'events-range' }, 'Range'), range),
    custom, custom2,
    h('div', { class: 'field' }, h('button', { type: 'submit', class: 'btn primary', id: 'events-search' }, 'Search')));
  const box = h('div');
  ctx.root.append(h('div', { class: 'page-head' }, h('h1', null, 'Events')), h('section', { class: 'panel' }, form, box));

  function showCustom() {
    const c = range.value === 'custom';
    custom.hidden = !c;
    custom2.hidden = !c;
    if (c && !since.value) since.value = localInput(new Date(Date.now() - 3600_000));
  }
  range.addEventListener('change', showCustom);
  showCustom();

  function bounds() {
    if (range.value === 'custom') {
      const s = since.value ? new Date(since.value) : null;
      const u = until.value ? new Date(until.value) : null;
      return { since: s && !Number.isNaN(s.getTime()) ? s.toISOString() : null, until: u && !Number.isNaN(u.getTime()) ? u.toISOString() : null };
    }
    const minutes = (RANGES.find(([v]) => v === range.value) || RANGES[1])[1];
    return { since: new Date(Date.now() - minutes * 60_000).toISOString(), until: null };
  }
  let current = bounds();

  const list = pagedTable({
    box, id: 'events', empty: 'No events match.',
    headers: ['Time', 'Service', 'Level', 'Message'],
    fetch: (cursor) => api('GET', '/events', null, {
      query: { service: service.value.trim(), level: level.value, q: text.value.trim(), since: current.since, until: current.until, limit: 50, cursor },
      signal: ctx.signal,
    }),
    row: (e) => {
      const d = e.data && typeof e.data === 'object' ? e.data : {};
      let msg = d.msg ?? d.message ?? (typeof e.data === 'string' ? e.data : null);
      if (msg === null || msg === undefined) {
        msg = Object.entries(d).filter(([k]) => !['ts', 'time', 'timestamp', 'host', 'service', 'level'].includes(k))
          .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ').slice(0, 200);
      }
      return h('tr', { 'data-event-id': e.id },
        h('td', { class: 'nowrap' }, when(e.event_time)),
        h('td', null, e.service, e.host ? h('div', { class: 'muted small' }, e.host) : null),
        h('td', null, e.level ? h('span', { class: `lvl lvl-${e.level}` }, e.level) : '—'),
        h('td', { class: 'msg' }, h('span', { class: 'mono' }, String(msg)),
          e.flags && e.flags.length ? h('span', { class: 'pill' }, e.flags.join(', ')) : null,
          h('details', { class: 'raw' }, h('summary', null, 'raw'),
            h('pre', null, JSON.stringify(e.data, null, 2)),
            h('div', { class: 'muted small' }, `${e.topic} [${e.partition}] @${e.offset} · stored `, when(e.created_at)))));
    },
  });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    current = bounds();
    ctx.setQuery({
      q: text.value.trim(), service: service.value.trim(), level: level.value, range: range.value === '1h' ? '' : range.value,
      since: range.value === 'custom' ? since.value : '', until: range.value === 'custom' ? until.value : '',
    });
    list.reload();
  });
  level.addEventListener('change', () => form.requestSubmit());
  await list.reload();
}
