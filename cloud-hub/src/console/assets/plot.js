// Inline SVG time plots: lines and stacked bars over a shared time axis, version changes as
// vertical marks (`data-testid="version-marker"`). Every label goes in as text.
import { svg, el } from './common.js';

const W = 640, H = 200, L = 56, R = 12, T = 12, B = 24;

/** A time as hours:minutes:seconds. */
const clock = (ms) => new Date(ms).toLocaleTimeString();

/**
 * A plot. `spec`: { testid, title, t0, t1, yMax?, yFmt, lines?: [{label, color, data: [[t, v|null]]}],
 * bars?: [{label, color, data: [[t, v]]}] (stacked), markers: [{at_ms, model, from, to}] }.
 * Returns the figure (title, legend, svg).
 */
export function plot(spec) {
  const { t0, t1, yFmt = String, markers = [] } = spec;
  const lines = spec.lines || [], bars = spec.bars || [];
  const span = Math.max(1, t1 - t0);
  const x = (t) => L + ((t - t0) / span) * (W - L - R);
  let yMax = spec.yMax;
  if (yMax === undefined) {
    const vals = lines.flatMap((s) => s.data.map((d) => d[1]));
    const stacks = new Map();
    for (const s of bars) for (const [t, v] of s.data) stacks.set(t, (stacks.get(t) || 0) + (v || 0));
    yMax = Math.max(0, ...vals.filter((v) => typeof v === 'number'), ...stacks.values());
    if (yMax <= 0) yMax = 1;
  }
  const y = (v) => H - B - (Math.min(v, yMax) / yMax) * (H - B - T);
  const g = svg('svg', { viewBox: `0 0 ${W} ${H}`, 'data-testid': spec.testid, role: 'img', 'aria-label': spec.title });
  // Axes and grid.
  for (const f of [0, 0.5, 1]) {
    const v = yMax * f;
    g.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#e5e7eb' }),
      svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', 'font-size': 10, fill: '#6b7385', text: yFmt(v) }));
  }
  g.append(svg('line', { x1: L, x2: L, y1: T, y2: H - B, stroke: '#9ca3af' }));
  for (const [t, anchor] of [[t0, 'start'], [(t0 + t1) / 2, 'middle'], [t1, 'end']]) {
    g.append(svg('text', { x: x(t), y: H - 6, 'text-anchor': anchor, 'font-size': 10, fill: '#6b7385', text: clock(t) }));
  }
  // Stacked bars: one column per time, each series on the ones before.
  if (bars.length) {
    const times = [...new Set(bars.flatMap((s) => s.data.map((d) => d[0])))].sort((a, b) => a - b);
    const bw = Math.max(1, Math.min(24, ((W - L - R) / Math.max(1, times.length)) * 0.8));
    const base = new Map(times.map((t) => [t, 0]));
    for (const s of bars) {
      for (const [t, v] of s.data) {
        if (!v) continue;
        const b0 = base.get(t);
        const top = y(b0 + v), bottom = y(b0);
        g.append(svg('rect', { x: Math.min(x(t), W - R - bw), y: top, width: bw, height: Math.max(0.5, bottom - top), fill: s.color },
          svg('title', { text: `${s.label}: ${v} at ${clock(t)}` })));
        base.set(t, b0 + v);
      }
    }
  }
  // Lines: gaps where a value is missing; a dot where a value stands alone.
  for (const s of lines) {
    let d = '', open = false;
    const pts = s.data;
    pts.forEach(([t, v], i) => {
      if (typeof v !== 'number') { open = false; return; }
      d += `${open ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)} `;
      const prev = pts[i - 1], next = pts[i + 1];
      if (!(prev && typeof prev[1] === 'number') && !(next && typeof next[1] === 'number')) {
        g.append(svg('rect', { x: x(t) - 2, y: y(v) - 2, width: 4, height: 4, fill: s.color }));
      }
      open = true;
    });
    if (d) g.append(svg('path', { d: d.trim(), fill: 'none', stroke: s.color, 'stroke-width': 1.6 }, svg('title', { text: s.label })));
  }
  // Version changes.
  for (const m of markers) {
    if (m.at_ms < t0 || m.at_ms > t1) continue;
    const what = `${m.model} ${m.from ? `${m.from} → ` : ''}${m.to}`;
    g.append(svg('g', { 'data-testid': 'version-marker', 'data-model': m.model, 'data-version': m.to },
      svg('line', { x1: x(m.at_ms), x2: x(m.at_ms), y1: T, y2: H - B, stroke: '#7c3aed', 'stroke-dasharray': '4 3' }),
      svg('text', { x: x(m.at_ms) + 3, y: T + 9, 'font-size': 9, fill: '#7c3aed', text: m.to }),
      svg('title', { text: `${what} at ${new Date(m.at_ms).toLocaleString()}` })));
  }
  const legend = el('div', { class: 'legend' }, ...[...bars, ...lines].map((s) => {
    const span = el('span', { text: s.label });
    span.style.color = s.color; // CSSOM, not a style attribute: allowed by the CSP
    return span;
  }));
  return el('figure', { class: 'plot card' }, el('h3', { text: spec.title }), g, legend);
}
