// Dead letters: what ingest refused (/dead-letters) and one with its bytes (/dead-letters/<id>).

import { h, replace, when, age, fmtBytes } from './dom.js';
import { api, ApiError } from './api.js';
import { pagedTable } from './paged.js';

export async function mountList(ctx) {
  ctx.setTitle('Dead letters');
  const topic = h('input', { id: 'dl-topic', name: 'topic', type: 'search', value: ctx.query.get('topic') || '', placeholder: 'e.g. rtmh.logs', 'data-search': '' });
  const form = h('form', { class: 'filters', role: 'search' },
    h('div', { class: 'field' }, h('label', { for: 'dl-topic' }, 'Topic'), topic),
    h('div', { class: 'field' }, h('button', { type: 'submit', class: 'btn primary' }, 'Filter')));
  const box = h('div');
  replace(ctx.root, h('div', { class: 'page-head' }, h('h1', null, 'Dead letters')),
    h('p', { class: 'muted' }, 'Messages ingest could not store (bad JSON, missing fields, too large). The bytes are kept exactly as received.'),
    h('section', { class: 'panel' }, form, box));
  const list = pagedTable({
    box, id: 'dead-letters', empty: 'No dead letters. Ingest accepted everything.',
    headers: ['Time', 'Topic / partition / offset', 'Reason', ['Size', 'num']],
    fetch: (cursor) => api('GET', '/dead-letters', null, { query: { topic: topic.value.trim(), limit: 50, cursor }, signal: ctx.signal }),
    row: (d) => h('tr', { 'data-dead-letter-id': d.id },
      h('td', null, h('a', { href: `/dead-letters/${d.id}` }, when(d.created_at)), ' ', h('span', { class: 'muted small' }, age(d.created_at, ' ago'))),
      h('td', { class: 'mono small' }, `${d.topic} [${d.partition}] @${d.offset}`, d.record_index !== null ? ` #${d.record_index}` : ''),
      h('td', { class: 'msg' }, h('a', { href: `/dead-letters/${d.id}` }, d.reason)),
      h('td', { class: 'num' }, fmtBytes(d.size))),
  });
  form.addEventListener('submit', (ev) => { ev.preventDefault(); ctx.setQuery({ topic: topic.value.trim() }); list.reload(); });
  await list.reload();
}

function copyButton(label, text, id) {
  const note = h('span', { class: 'muted small', 'aria-live': 'polite' });
  const btn = h('button', { type: 'button', class: 'btn small', id }, label);
  btn.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      note.textContent = ' copied';
    } catch {
      // clipboard refused (no secure context): select the text instead
      const pre = btn.closest('section').querySelector('pre');
      const r = document.createRange();
      r.selectNodeContents(pre);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(r);
      note.textContent = ' selected: press Ctrl+C';
    }
  });
  return [btn, note];
}

export async function mountDetail(ctx) {
  const id = ctx.params.id;
  ctx.setTitle(`Dead letter ${id}`);
  let d;
  try {
    d = await api('GET', `/dead-letters/${id}`, null, { signal: ctx.signal });
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 422)) {
      replace(ctx.root, h('h1', null, 'Dead letter not found'), h('p', null, e.message, ' ', h('a', { href: '/dead-letters' }, 'All dead letters')));
      return;
    }
    throw e;
  }
  const kv = (k, ...v) => h('div', { class: 'meta-item' }, h('dt', null, k), h('dd', null, ...v));
  replace(ctx.root, 
    h('p', { class: 'crumbs' }, h('a', { href: '/dead-letters' }, 'Dead letters'), ` / ${id}`),
    h('section', { class: 'panel', id: 'dead-letter' },
      h('h1', null, `Dead letter ${d.id}`),
      h('p', { class: 'why', id: 'dead-letter-reason' }, h('strong', null, 'Reason: '), d.reason),
      h('dl', { class: 'meta' },
        kv('Topic', h('span', { class: 'mono' }, d.topic)), kv('Partition', String(d.partition)), kv('Offset', String(d.offset)),
        kv('Generation', String(d.generation)), kv('Record', d.record_index === null ? '—' : String(d.record_index)),
        kv('Dead-lettered', when(d.created_at)), kv('Broker time', when(d.broker_time)), kv('Size', fmtBytes(d.size)))),
    h('section', { class: 'panel' }, h('h2', null, 'Preview (UTF-8)', d.preview_truncated ? h('span', { class: 'muted small' }, ' first 4 KiB') : null),
      d.preview !== null ? h('pre', { class: 'payload', id: 'dead-letter-preview' }, d.preview) : h('p', { class: 'muted' }, 'No payload.')),
    h('section', { class: 'panel' }, h('h2', null, 'Payload (base64) '),
      d.payload_base64 ? [h('div', { class: 'form-buttons' }, copyButton('Copy base64', d.payload_base64, 'copy-payload')),
        h('pre', { class: 'payload', id: 'dead-letter-payload' }, d.payload_base64)] : h('p', { class: 'muted' }, 'No payload.')),
    d.key_base64 ? h('section', { class: 'panel' }, h('h2', null, 'Key (base64)'),
      h('div', { class: 'form-buttons' }, copyButton('Copy key', d.key_base64, 'copy-key')),
      h('pre', { class: 'payload' }, d.key_base64)) : null);
}
