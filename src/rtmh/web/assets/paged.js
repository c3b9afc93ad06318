// A keyset-paged table: the first page, then "Load more" with the page's next_cursor.

import { h, replace, table } from './dom.js';
import { isAbort, showError } from './api.js';

/**
 * pagedTable({box, id, headers, fetch: cursor => Promise<{items, next_cursor}>, row: item => <tr>,
 *             empty: 'text'}) → {reload()}
 */
export function pagedTable(opts) {
  let seq = 0;
  let tbody = null;
  let cursor = null;
  let pages = 0;
  const more = h('button', { type: 'button', class: 'btn load-more', id: `${opts.id}-more`, hidden: true }, 'Load more');
  const status = h('p', { class: 'muted small', 'aria-live': 'polite' });
  more.addEventListener('click', () => page(false));

  async function page(first) {
    const mine = first ? ++seq : seq;
    if (first) {
      cursor = null;
      if (!tbody) replace(opts.box, h('p', { class: 'muted' }, 'Loading…'));
    }
    more.disabled = true;
    try {
      const res = await opts.fetch(cursor);
      if (mine !== seq) return;
      if (first) {
        const wrap = table(opts.id, opts.headers, []);
        tbody = wrap.querySelector('tbody');
        replace(opts.box, wrap, h('div', { class: 'form-buttons' }, more, status));
      }
      for (const item of res.items) tbody.append(opts.row(item));
      if (first && !res.items.length) tbody.append(h('tr', { class: 'empty-row' }, h('td', { colspan: opts.headers.length }, opts.empty || 'Nothing found.')));
      cursor = res.next_cursor;
      pages = first ? 1 : pages + 1;
      more.hidden = !cursor;
      status.textContent = `${tbody.querySelectorAll('tr:not(.empty-row)').length} shown${cursor ? '' : ' (all)'}`;
    } catch (e) {
      if (isAbort(e)) return;
      showError(e);
      if (first) replace(opts.box, h('p', { class: 'muted' }, 'Could not load.'));
    } finally {
      more.disabled = false;
    }
  }
  return {
    reload: () => page(true),
    /** refresh for live updates, unless the user paged further (that would lose their place) */
    refresh: () => { if (pages <= 1) page(true); },
  };
}
