// Talking to /api/v1: cookie auth, the CSRF header on every request, problem documents as errors.

import { h, clear } from './dom.js';

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || { title: `HTTP ${status}`, status };
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

/**
 * api('GET', '/incidents', null, {query: {...}, signal}) → parsed JSON (null for 204).
 * Throws ApiError (status 0 when the network failed). A 401 also calls the unauthorized handler
 * (→ /login) unless opts.no401.
 */
export async function api(method, path, body, opts = {}) {
  let url = path.startsWith('/api/') ? path : `/api/v1${path}`;
  if (opts.query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(opts.query)) {
      if (v === null || v === undefined || v === '') continue;
      if (Array.isArray(v)) v.forEach((x) => q.append(k, x)); else q.append(k, v);
    }
    const qs = q.toString();
    if (qs) url += (url.includes('?') ? '&' : '?') + qs;
  }
  const headers = { 'X-RTMH-Dashboard': '1', Accept: 'application/json, application/problem+json' };
  const init = { method, headers, credentials: 'same-origin', signal: opts.signal };
  if (body !== undefined && body !== null) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, { title: 'Network error', detail: `Could not reach the API (${e.message}).` });
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const problem = data && typeof data === 'object' ? data
      : { title: res.statusText || `HTTP ${res.status}`, status: res.status, detail: text.slice(0, 300) || `HTTP ${res.status}` };
    if (res.status === 401 && !opts.no401) onUnauthorized();
    throw new ApiError(res.status, problem);
  }
  return data;
}

export const isAbort = (e) => e && e.name === 'AbortError';

// ---- the error banner (#error-banner) ----

function bannerHost() { return document.getElementById('banner-area'); }

export function hideBanner() {
  const host = bannerHost();
  if (host) clear(host);
}

/** show a message (string or an ApiError / problem) in the dismissible #error-banner */
export function showError(err, extra = []) {
  if (isAbort(err)) return;
  const host = bannerHost();
  if (!host) return;
  let title = 'Error';
  let detail = String(err);
  if (err instanceof ApiError) {
    title = err.problem.title || `HTTP ${err.status}`;
    detail = err.problem.detail || err.message;
  } else if (err && typeof err === 'object' && 'detail' in err) {
    title = err.title || 'Error'; detail = err.detail;
  } else if (err instanceof Error) {
    detail = err.message;
  }
  clear(host);
  const banner = h('div', { id: 'error-banner', class: 'banner', role: 'alert' },
    h('div', { class: 'banner-text' },
      h('strong', null, title + ': '), h('span', { class: 'banner-detail' }, detail),
      extra.length ? h('ul', { class: 'banner-errors' }, extra.map((x) => h('li', null, x))) : null),
    h('button', { type: 'button', class: 'btn-plain banner-close', 'aria-label': 'Dismiss', onclick: hideBanner }, '×'));
  host.append(banner);
}

/** clear the .field-error elements of a form */
export function clearFieldErrors(form) {
  for (const el of form.querySelectorAll('.field-error.dyn')) el.remove();
  for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

/**
 * Show an API error for a form: detail in the banner, each errors[].message next to its field
 * (.field-error[data-field="<dotted path>"]); errors for fields the form lacks go into the banner.
 */
export function showFormError(form, err) {
  if (isAbort(err)) return;
  clearFieldErrors(form);
  const errors = (err instanceof ApiError && Array.isArray(err.problem.errors)) ? err.problem.errors : [];
  const leftover = [];
  for (const e of errors) {
    const field = String(e.field ?? '');
    const msg = String(e.message ?? '');
    let el = field ? form.querySelector(`.field-error[data-field="${CSS.escape(field)}"]`) : null;
    if (!el && field.includes('.')) {
      // a sub-field of a field the form edits as a whole (config.url of a config editor):
      // a slot of its own under the parent's
      const parts = field.split('.');
      for (let i = parts.length - 1; i > 0 && !el; i -= 1) {
        const parent = form.querySelector(`.field-error[data-field="${CSS.escape(parts.slice(0, i).join('.'))}"]`);
        if (parent) {
          el = h('div', { class: 'field-error dyn', 'data-field': field, 'aria-live': 'polite' });
          parent.after(el);
        }
      }
    }
    if (el) {
      el.textContent = el.textContent ? `${el.textContent}; ${msg}` : msg;
      const input = form.querySelector(`[name="${CSS.escape(field)}"]`);
      if (input) input.setAttribute('aria-invalid', 'true');
    } else {
      leftover.push(field ? `${field}: ${msg}` : msg);
    }
  }
  showError(err, leftover);
}

/** a field's error slot */
export function fieldError(field) {
  return h('div', { class: 'field-error', 'data-field': field, 'aria-live': 'polite' });
}
