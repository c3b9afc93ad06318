// Sign in (/login): a one-time link from `rtmh dashboard` sets the cookie server-side; this page
// is for an expired link (?error=...) or signing in with an API token.

import { h } from './dom.js';
import { api, ApiError, clearFieldErrors, fieldError, hideBanner, showError } from './api.js';

function safeNext(next) {
  return typeof next === 'string' && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\') ? next : '/';
}

export async function mount(ctx) {
  ctx.setTitle('Sign in');
  const next = safeNext(ctx.query.get('next'));
  const token = h('input', { id: 'login-token', name: 'token', type: 'password', autocomplete: 'current-password', required: true, 'aria-describedby': 'login-help' });
  const problem = fieldError('token');
  const submit = h('button', { type: 'submit', class: 'btn primary', id: 'login-submit' }, 'Sign in');
  const form = h('form', { id: 'login-form', class: 'stack-form', novalidate: true },
    h('label', { for: 'login-token' }, 'API token'), token,
    h('p', { id: 'login-help', class: 'muted small' }, 'API token, e.g. from ', h('code', null, 'rtmh token create NAME --scope write')),
    problem, submit);
  ctx.root.append(h('div', { class: 'login-box panel' },
    h('h1', null, 'Sign in to RTMH'),
    ctx.query.get('error') ? h('p', { class: 'warn-note', id: 'login-error' },
      'That sign-in link was already used or has expired. Run ', h('code', null, 'rtmh dashboard'),
      ' for a new link, or paste an API token below.') : null,
    form));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearFieldErrors(form);
    hideBanner();
    if (!token.value.trim()) { problem.textContent = 'Paste a token.'; token.focus(); return; }
    submit.disabled = true;
    try {
      const session = await api('POST', '/session', { token: token.value.trim() }, { no401: true, signal: ctx.signal });
      token.value = '';
      ctx.setSession(session && session.name ? session : null);
      ctx.navigate(next, { replace: true });
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 422 || e.status === 403 || e.status === 429)) {
        const p = e.problem || {};
        const fieldMsgs = (p.errors || []).map((x) => x.message).join('; ');
        problem.textContent = p.detail || fieldMsgs || p.title || 'That token was not accepted.';
        token.setAttribute('aria-invalid', 'true');
        token.focus();
      } else {
        showError(e);
      }
    } finally {
      submit.disabled = false;
    }
  });
  token.focus();
}
