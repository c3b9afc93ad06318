// Small SVG charts: a sparkline and a time-series line chart with axes, a dashed threshold line,
// incident open/resolve marks and a hover tooltip. Own code (a few hundred lines) rather than a
// charting library that would have to be vendored (tens of KB) since the hub works offline.

import { h, s, fmtTime } from './dom.js';

const finite = (v) => v !== null && v !== undefined && Number.isFinite(Number(v));

/** sparkline(values, {width, height, dot, label}) → <svg class="spark"> */
export function sparkline(values, opts = {}) {
  const width = opts.width || 120;
  const height = opts.height || 28;
  const pad = 3;
  const svg = s('svg', {
    class: ['spark', opts.class].filter(Boolean).join(' '), width, height,
    viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': opts.label || 'trend',
  });
  const vals = values.map((v) => (finite(v) ? Number(v) : null));
  const real = vals.filter((v) => v !== null);
  if (real.length === 0) {
    svg.append(s('line', { class: 'spark-empty', x1: pad, x2: width - pad, y1: height / 2, y2: height / 2 }));
    return svg;
  }
  let lo = Math.min(...real);
  let hi = Math.max(...real);
  if (opts.zero !== false) lo = Math.min(lo, 0);
  if (hi === lo) hi = lo + 1;
  const n = vals.length;
  const x = (i) => pad + (n === 1 ? (width - 2 * pad) : (i * (width - 2 * pad)) / (n - 1));
  const y = (v) => height - pad - ((v - lo) * (height - 2 * pad)) / (hi - lo);
  // break the line at gaps
  let seg = [];
  const flush = () => {
    if (seg.length > 1) svg.append(s('polyline', { class: 'spark-line', points: seg.join(' ') }));
    seg = [];
  };
  vals.forEach((v, i) => { if (v === null) flush(); else seg.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`); });
  flush();
  if (opts.dot !== false) {
    let last = n - 1;
    while (last >= 0 && vals[last] === null) last -= 1;
    if (last >= 0) svg.append(s('circle', { class: 'spark-dot', cx: x(last).toFixed(1), cy: y(vals[last]).toFixed(1), r: 2 }));
  }
  return svg;
}

// ---- ticks ----

function niceStep(range, count) {
  const raw = range / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
}

function yTicks(lo, hi, count = 4) {
  const step = niceStep(hi - lo, count);
  const start = Math.ceil(lo / step) * step;
  const out = [];
  for (let v = start; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const TIME_STEPS = [10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((x) => x * 1000);

function xTicks(t0, t1, count = 6) {
  const want = (t1 - t0) / count;
  const step = TIME_STEPS.find((x) => x >= want) || TIME_STEPS[TIME_STEPS.length - 1];
  const tz = new Date(t0).getTimezoneOffset() * 60_000; // align to local clock
  const out = [];
  for (let t = Math.ceil((t0 - tz) / step) * step + tz; t <= t1; t += step) out.push(t);
  return { ticks: out, step };
}

function fmtTick(t, step) {
  const d = new Date(t);
  const hm = `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
  if (step < 60_000) return `${hm}:${String(d.getSeconds()).padStart(2, '0')}`;
  if (step >= 86_400_000) return `${d.getMonth() + 1}/${d.getDate()}`;
  return hm;
}

/**
 * lineChart({points: [{t: ms, v: number|null}], threshold, marks: [{t: ms, cls, label}],
 *            fmt: v => string, label, yZero, height}) → <div class="chart"> with an <svg>.
 */
export function lineChart(opts) {
  const W = opts.width || 800;
  const H = opts.height || 240;
  const M = { l: 58, r: 14, t: 12, b: 26 };
  const fmt = opts.fmt || ((v) => String(v));
  const pts = (opts.points || []).filter((p) => finite(p.t)).sort((a, b) => a.t - b.t);
  const marks = (opts.marks || []).filter((m) => finite(m.t));
  const wrap = h('div', { class: 'chart' });
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img', 'aria-label': opts.label || 'time series'});
  wrap.append(svg);

  const vals = pts.filter((p) => finite(p.v)).map((p) => Number(p.v));
  const times = pts.map((p) => p.t).concat(marks.map((m) => m.t));
  if (opts.start) times.push(opts.start);
  if (opts.end) times.push(opts.end);
  if (vals.length === 0 && !times.length) {
    wrap.append(h('p', { class: 'muted chart-empty' }, opts.emptyText || 'No data in this range.'));
    return wrap;
  }
  let t0 = opts.start || Math.min(...times);
  let t1 = opts.end || Math.max(...times);
  if (t1 <= t0) { t0 -= 60_000; t1 += 60_000; }
  const yvals = vals.slice();
  if (finite(opts.threshold)) yvals.push(Number(opts.threshold));
  let lo = yvals.length ? Math.min(...yvals) : 0;
  let hi = yvals.length ? Math.max(...yvals) : 1;
  if (opts.yZero !== false && lo > 0) lo = 0;
  if (hi === lo) { hi = lo + (Math.abs(lo) || 1); }
  hi += (hi - lo) * 0.08;
  const X = (t) => M.l + ((t - t0) * (W - M.l - M.r)) / (t1 - t0);
  const Y = (v) => H - M.b - ((v - lo) * (H - M.t - M.b)) / (hi - lo);

  // grid + y axis
  const g = s('g', { class: 'axis' });
  for (const v of yTicks(lo, hi)) {
    const y = Y(v).toFixed(1);
    g.append(s('line', { class: 'grid-line', x1: M.l, x2: W - M.r, y1: y, y2: y }));
    g.append(s('text', { class: 'tick-label', x: M.l - 6, y: Number(y) + 4, 'text-anchor': 'end' }, fmt(v)));
  }
  const { ticks, step } = xTicks(t0, t1, Math.max(3, Math.floor((W - M.l) / 110)));
  for (const t of ticks) {
    const x = X(t).toFixed(1);
    g.append(s('line', { class: 'tick', x1: x, x2: x, y1: H - M.b, y2: H - M.b + 4 }));
    g.append(s('text', { class: 'tick-label', x, y: H - 8, 'text-anchor': 'middle' }, fmtTick(t, step)));
  }
  g.append(s('line', { class: 'axis-line', x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b }));
  g.append(s('line', { class: 'axis-line', x1: M.l, x2: M.l, y1: M.t, y2: H - M.b }));
  svg.append(g);

  // marks (incident open / resolve)
  for (const m of marks) {
    const x = X(m.t).toFixed(1);
    const mg = s('g', { class: m.cls || 'mark' });
    mg.append(s('line', { x1: x, x2: x, y1: M.t, y2: H - M.b }, s('title', null, `${m.label || ''} ${fmtTime(new Date(m.t))}`.trim())));
    const right = Number(x) > W - M.r - 70;
    if (m.label) mg.append(s('text', { class: 'mark-label', x: Number(x) + (right ? -3 : 3), y: M.t + 10, 'text-anchor': right ? 'end' : 'start' }, m.label));
    svg.append(mg);
  }

  // threshold
  if (finite(opts.threshold)) {
    const y = Y(Number(opts.threshold)).toFixed(1);
    svg.append(s('line', { class: 'threshold', x1: M.l, x2: W - M.r, y1: y, y2: y },
      s('title', null, `threshold ${fmt(Number(opts.threshold))}`)));
  }

  // the series, broken at gaps
  let seg = [];
  const flush = () => {
    if (seg.length > 1) svg.append(s('polyline', { class: 'series', points: seg.join(' ') }));
    else if (seg.length === 1) {
      const [cx, cy] = seg[0].split(',');
      svg.append(s('circle', { class: 'series-dot', cx, cy, r: 2.5 }));
    }
    seg = [];
  };
  for (const p of pts) {
    if (finite(p.v)) seg.push(`${X(p.t).toFixed(1)},${Y(Number(p.v)).toFixed(1)}`); else flush();
  }
  flush();
  if (!vals.length) wrap.append(h('p', { class: 'muted chart-empty' }, opts.emptyText || 'No data in this range.'));

  // hover: nearest point → guide line, dot and tooltip
  const real = pts.filter((p) => finite(p.v));
  if (real.length) {
    const guide = s('line', { class: 'hover-line', x1: 0, x2: 0, y1: M.t, y2: H - M.b, visibility: 'hidden' });
    const dot = s('circle', { class: 'hover-dot', cx: 0, cy: 0, r: 4, visibility: 'hidden' });
    svg.append(guide, dot);
    const tip = h('div', { class: 'chart-tip', hidden: true });
    wrap.append(tip);
    const hide = () => { guide.setAttribute('visibility', 'hidden'); dot.setAttribute('visibility', 'hidden'); tip.hidden = true; };
    svg.addEventListener('mousemove', (ev) => {
      const rect = svg.getBoundingClientRect();
      if (!rect.width) return;
      const vx = ((ev.clientX - rect.left) * W) / rect.width;
      const t = t0 + ((vx - M.l) * (t1 - t0)) / (W - M.l - M.r);
      let best = real[0];
      for (const p of real) if (Math.abs(p.t - t) < Math.abs(best.t - t)) best = p;
      const x = X(best.t);
      const y = Y(Number(best.v));
      guide.setAttribute('x1', x); guide.setAttribute('x2', x); guide.setAttribute('visibility', 'visible');
      dot.setAttribute('cx', x); dot.setAttribute('cy', y); dot.setAttribute('visibility', 'visible');
      tip.textContent = `${fmtTime(new Date(best.t))}  ${fmt(Number(best.v))}`;
      tip.hidden = false;
      const px = (x * rect.width) / W;
      const py = (y * rect.height) / H;
      tip.style.left = `${Math.min(Math.max(px, 60), rect.width - 60)}px`;
      tip.style.top = `${Math.max(py - 34, 0)}px`;
    });
    svg.addEventListener('mouseleave', hide);
  }
  return wrap;
}

/** a small legend under a chart */
export function legend(items) {
  return h('div', { class: 'chart-legend' }, items.map(([cls, text]) => h('span', { class: `lg ${cls}` }, text)));
}
