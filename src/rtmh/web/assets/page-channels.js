// Channels (/channels): where notifications go; send a test; add / edit (admin).

import { h, replace, clear, when, table } from './dom.js';
import { api, isAbort, showError, showFormError, clearFieldErrors, fieldError, hideBanner } from './api.js';

const TYPES = ['webhook', 'slack', 'email', 'pagerduty', 'alertmanager'];
const EXAMPLES = {
  webhook: { url: 'https://hooks.example/rtmh', timeout_seconds: 5 },
  slack: { url: 'https://hooks.slack.com/services/…', timeout_seconds: 5 },
  email: { host: 'smtp.example', port: 587, sender: 'rtmh@example', recipients: ['oncall@example'] },
  pagerduty: { timeout_seconds: 5 },
  alertmanager: { url: 'http://alertmanager:9093/api/v2/alerts', timeout_seconds: 5 },
};

function configSummary(cfg) {
  const parts = [];
  for (const [k, v] of Object.entries(cfg || {})) {
    parts.push(h('span', { class: 'kv' }, h('span', { class: 'k' }, k), '=', h('span', { class: 'v mono' }, typeof v === 'object' ? JSON.stringify(v) : String(v))));
  }
  return parts.length ? parts : h('span', { class: 'muted' }, '—');
}

function testAnswer(res) {
  return [
    h('span', { class: res.ok ? 'ok' : 'fail' }, res.ok ? 'ok' : 'failed'),
    res.http_status ? ` · HTTP ${res.http_status}` : '',
    res.error ? h('div', { class: 'err-text mono' }, res.error) : null,
    res.response_excerpt ? h('div', { class: 'mono muted' }, res.response_excerpt.slice(0, 300)) : null,
  ];
}

export async function mount(ctx) {
  ctx.setTitle('Channels');
  const box = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  const formBox = h('div');
  replace(ctx.root, 
    h('div', { class: 'page-head' }, h('h1', null, 'Channels'), h('span', { class: 'spacer' }),
      ctx.isAdmin ? h('button', { type: 'button', class: 'btn primary', id: 'channel-add', onclick: () => openForm(null) }, 'Add channel') : null),
    formBox,
    h('section', { class: 'panel' }, box),
    !ctx.isAdmin ? h('p', { class: 'muted small' }, 'Changing channels and sending tests needs an admin token.') : null);

  async function load() {
    const list = await api('GET', '/channels', null, { signal: ctx.signal });
    replace(box, table('channels', ['Name', 'Type', 'Enabled', 'Config', 'Secrets', 'Updated', '', 'Test result'],
      list.map((c) => {
        const result = h('td', { class: 'test-result', 'aria-live': 'polite' });
        return h('tr', { 'data-channel': c.name },
          h('td', null, h('strong', null, c.name)),
          h('td', null, c.type),
          h('td', null, h('span', { class: c.enabled ? 'on' : 'off' }, c.enabled ? 'yes' : 'no')),
          h('td', { class: 'small' }, configSummary(c.config)),
          h('td', { class: 'small' }, Object.keys(c.secrets || {}).length ? Object.keys(c.secrets).join(', ') : h('span', { class: 'muted' }, 'none')),
          h('td', null, when(c.updated_at)),
          h('td', { class: 'row-buttons' }, ctx.isAdmin ? [
            h('button', { type: 'button', class: 'btn small send-test', onclick: (ev) => sendTest(c, ev.currentTarget, result) }, 'Send test'), ' ',
            h('button', { type: 'button', class: 'btn small edit', onclick: () => openForm(c) }, 'Edit'),
          ] : null),
          result);
      })));
    if (!list.length) box.querySelector('tbody').append(h('tr', { class: 'empty-row' }, h('td', { colspan: 8 }, 'No channels yet.')));
  }

  async function sendTest(c, btn, cell) {
    btn.disabled = true;
    replace(cell, h('span', { class: 'muted' }, 'sending…'));
    try {
      const res = await api('POST', `/channels/${encodeURIComponent(c.name)}/test`, null, { signal: ctx.signal });
      replace(cell, testAnswer(res));
    } catch (e) {
      if (isAbort(e)) return;
      replace(cell, h('span', { class: 'fail' }, 'error'), ' ', e.message);
    } finally {
      btn.disabled = false;
    }
  }

  function openForm(c) {
    hideBanner();
    const isNew = !c;
    const name = h('input', { id: 'channel-name', name: 'name', type: 'text', value: c ? c.name : '', disabled: !isNew, autocomplete: 'off' });
    const type = h('select', { id: 'channel-type', name: 'type' }, TYPES.map((t) => h('option', { value: t, selected: c ? c.type === t : t === 'webhook' }, t)));
    const enabled = h('input', { id: 'channel-enabled', name: 'enabled', type: 'checkbox', checked: c ? c.enabled : true });
    const config = h('textarea', { id: 'channel-config', name: 'config', rows: 5, spellcheck: 'false', class: 'mono' });
    config.value = JSON.stringify(c ? c.config : EXAMPLES.webhook, null, 2);
    const secrets = h('textarea', { id: 'channel-secrets', name: 'secrets', rows: 3, spellcheck: 'false', class: 'mono', placeholder: isNew ? '{"hmac_secret": "…"}' : '{} keeps the set secrets; {"name": null} removes one' });
    secrets.value = '{}';
    type.addEventListener('change', () => { if (isNew) config.value = JSON.stringify(EXAMPLES[type.value] || {}, null, 2); });
    const form = h('form', { id: 'channel-form', class: 'grid-form panel', novalidate: true },
      h('h3', null, isNew ? 'Add channel' : `Edit ${c.name}`),
      h('div', { class: 'field' }, h('label', { for: 'channel-name' }, 'Name'), name, fieldError('name')),
      h('div', { class: 'field' }, h('label', { for: 'channel-type' }, 'Type'), type, fieldError('type')),
      h('div', { class: 'field check' }, enabled, h('label', { for: 'channel-enabled' }, 'Enabled'), fieldError('enabled')),
      h('div', { class: 'field wide' }, h('label', { for: 'channel-config' }, 'Config (JSON)'), config, fieldError('config')),
      h('div', { class: 'field wide' }, h('label', { for: 'channel-secrets' }, 'Secrets (JSON, write-only)'), secrets, fieldError('secrets')),
      h('div', { class: 'form-buttons' },
        h('button', { type: 'submit', class: 'btn primary', id: 'channel-save' }, 'Save'),
        h('button', { type: 'button', class: 'btn', onclick: () => clear(formBox) }, 'Cancel'),
        !isNew ? h('button', { type: 'button', class: 'btn danger', id: 'channel-delete', onclick: del } , 'Delete') : null));
    async function del() {
      if (!window.confirm(`Delete channel ${c.name}?`)) return;
      try {
        await api('DELETE', `/channels/${encodeURIComponent(c.name)}`, null, { signal: ctx.signal });
        clear(formBox);
        await load();
      } catch (e) { showError(e); }
    }
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearFieldErrors(form);
      const parsed = {};
      for (const [k, el] of [['config', config], ['secrets', secrets]]) {
        try {
          parsed[k] = JSON.parse(el.value.trim() || '{}');
        } catch (err) {
          form.querySelector(`.field-error[data-field="${k}"]`).textContent = `not valid JSON: ${err.message}`;
          el.setAttribute('aria-invalid', 'true');
          return;
        }
      }
      try {
        if (isNew) {
          await api('POST', '/channels', { name: name.value.trim(), type: type.value, config: parsed.config, secrets: parsed.secrets, enabled: enabled.checked }, { signal: ctx.signal });
        } else {
          const body = { type: type.value, config: parsed.config, enabled: enabled.checked };
          if (Object.keys(parsed.secrets || {}).length) body.secrets = parsed.secrets;
          await api('PUT', `/channels/${encodeURIComponent(c.name)}`, body, { signal: ctx.signal });
        }
        hideBanner();
        clear(formBox);
        await load();
      } catch (e) {
        showFormError(form, e);
      }
    });
    replace(formBox, form);
    (isNew ? name : config).focus();
  }

  await load();
}
