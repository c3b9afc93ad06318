// Silences (/silences): create one, list active / pending / expired, expire.

import { h, replace, when, table } from './dom.js';
import { api, isAbort, showError, showFormError, clearFieldErrors, fieldError, hideBanner } from './api.js';

const STATES = ['active', 'pending', 'expired'];
const DURATIONS = [['3600', '1 hour'], ['7200', '2 hours'], ['14400', '4 hours'], ['86400', '1 day'], ['604800', '1 week']];

export async function mount(ctx) {
  ctx.setTitle('Silences');
  let state = STATES.includes(ctx.query.get('state')) ? ctx.query.get('state') : 'active';
  const q = (n) => ctx.query.get(n) || '';
  const service = h('input', { id: 'silence-service', name: 'service', type: 'text', placeholder: 'e.g. checkout or pay*', value: q('service'), 'data-search': '' });
  const rule = h('input', { id: 'silence-rule', name: 'rule', type: 'text', placeholder: 'e.g. high_error_rate', value: q('rule') });
  const severity = h('input', { id: 'silence-severity', name: 'severity', type: 'text', placeholder: 'e.g. low', value: q('severity') });
  const duration = h('select', { id: 'silence-duration', name: 'duration_seconds' }, DURATIONS.map(([v, t]) => h('option', { value: v, selected: v === '7200' }, t)));
  const comment = h('input', { id: 'silence-comment', name: 'comment', type: 'text', placeholder: 'why' });
  const result = h('p', { id: 'silence-result', class: 'ok-note', 'aria-live': 'polite' });
  const form = h('form', { id: 'silence-form', class: 'grid-form', novalidate: true },
    h('h3', null, 'New silence ', h('span', { class: 'muted small' }, 'shell-style globs; every matcher given must match')),
    h('div', { class: 'field' }, h('label', { for: 'silence-service' }, 'Service'), service, fieldError('matchers.service')),
    h('div', { class: 'field' }, h('label', { for: 'silence-rule' }, 'Rule'), rule, fieldError('matchers.rule')),
    h('div', { class: 'field' }, h('label', { for: 'silence-severity' }, 'Severity'), severity, fieldError('matchers.severity')),
    h('div', { class: 'field' }, h('label', { for: 'silence-duration' }, 'For'), duration, fieldError('duration_seconds')),
    h('div', { class: 'field wide' }, h('label', { for: 'silence-comment' }, 'Comment'), comment, fieldError('comment')),
    h('div', { class: 'form-buttons' }, h('button', { type: 'submit', id: 'silence-submit', class: 'btn primary', disabled: !ctx.canWrite }, 'Create silence'),
      !ctx.canWrite ? h('span', { class: 'muted small' }, 'Read-only token.') : null),
    fieldError('matchers'), result);
  const tabs = h('nav', { class: 'tabs', 'aria-label': 'Silence state' });
  const box = h('div');
  ctx.root.append(h('div', { class: 'page-head' }, h('h1', null, 'Silences')),
    h('section', { class: 'panel' }, form),
    h('section', { class: 'panel' }, tabs, box));

  function renderTabs() {
    replace(tabs, STATES.map((s) => h('a', { href: `/silences?state=${s}`, 'data-state': s, 'aria-current': s === state ? 'true' : 'false',
      onclick: (ev) => { ev.preventDefault(); state = s; ctx.setQuery({ state: s === 'active' ? '' : s }); renderTabs(); load(); } }, s)));
  }

  async function load() {
    const want = state;
    try {
      const list = await api('GET', '/silences', null, { query: { state: want }, signal: ctx.signal });
      if (want !== state) return;
      replace(box, table('silences', ['Matchers', 'State', 'Starts', 'Ends', 'Comment', 'By', ''],
        list.map((s) => h('tr', { 'data-silence-id': s.id },
          h('td', null, Object.entries(s.matchers).map(([k, v]) => h('span', { class: 'kv' }, h('span', { class: 'k' }, k), '=', h('code', null, v)))),
          h('td', null, s.state),
          h('td', null, when(s.starts_at)),
          h('td', null, when(s.ends_at), s.state !== 'expired' ? h('span', { class: 'muted small' }, ' (in ', remaining(s.ends_at), ')') : null),
          h('td', { class: 'msg' }, s.comment || h('span', { class: 'muted' }, '—')),
          h('td', null, s.created_by),
          h('td', null, s.state !== 'expired' && ctx.canWrite
            ? h('button', { type: 'button', class: 'btn small expire', onclick: (ev) => expire(s, ev.currentTarget) }, 'Expire') : null)))));
      if (!list.length) box.querySelector('tbody').append(h('tr', { class: 'empty-row' }, h('td', { colspan: 7 }, `No ${state} silences.`)));
    } catch (e) {
      if (!isAbort(e)) showError(e);
    }
  }
  function remaining(t) {
    const ms = new Date(t).getTime() - Date.now();
    const m = Math.round(ms / 60000);
    return m < 60 ? `${Math.max(m, 0)}m` : m < 2880 ? `${Math.floor(m / 60)}h ${m % 60}m` : `${Math.floor(m / 1440)}d`;
  }
  async function expire(s, btn) {
    btn.disabled = true;
    try {
      await api('POST', `/silences/${s.id}/expire`, null, { signal: ctx.signal });
      hideBanner();
      await load();
    } catch (e) { showError(e); btn.disabled = false; }
  }
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearFieldErrors(form);
    result.textContent = '';
    const matchers = {};
    for (const [k, el] of [['service', service], ['rule', rule], ['severity', severity]]) if (el.value.trim()) matchers[k] = el.value.trim();
    const btn = form.querySelector('#silence-submit');
    btn.disabled = true;
    try {
      const made = await api('POST', '/silences', { matchers, duration_seconds: Number(duration.value), comment: comment.value }, { signal: ctx.signal });
      hideBanner();
      replace(result, 'silenced until ', when(made.ends_at));
      comment.value = '';
      if (state !== made.state) { state = made.state; ctx.setQuery({ state: state === 'active' ? '' : state }); renderTabs(); }
      await load();
    } catch (e) {
      showFormError(form, e);
    } finally {
      btn.disabled = !ctx.canWrite;
    }
  });
  renderTabs();
  ctx.every(30_000, load);
  await load();
}
