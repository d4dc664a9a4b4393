// dom.js — the few DOM helpers every view uses.  Text always goes in as text
// (textContent), never as HTML, so nothing an engine prints can become markup.

/** h('div', {class: 'x', onclick: f}, child, 'text', [more]) -> HTMLElement */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k in el && typeof v !== 'string') el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces el's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** "1.2 KiB" */
export function bytes(n) {
  if (n === undefined || n === null || n < 0) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
}

/** "850 ms", "3.2 s", "4 min" */
export function seconds(s) {
  if (s === undefined || s === null || s < 0 || !Number.isFinite(s)) return '–';
  if (s < 1) return Math.round(s * 1000) + ' ms';
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
  if (s < 3600) return (s / 60).toFixed(0) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}

// Canvas widths, kept by a ResizeObserver: reading clientWidth while drawing
// would force a layout in the middle of a frame that just changed the DOM.
const widths = new WeakMap();
const resized = new Set();
const observer = new ResizeObserver((entries) => {
  for (const e of entries) widths.set(e.target, Math.floor(e.contentRect.width));
  for (const f of resized) f();
});

/** Calls f after any observed canvas changed size (to draw it again). */
export function onCanvasResize(f) {
  resized.add(f);
}

/** A canvas sized to its CSS box at the device's pixel ratio; returns its 2-D
 * context scaled so drawing is in CSS pixels, and the size. */
export function fitCanvas(canvas, cssHeight) {
  const ratio = window.devicePixelRatio || 1;
  if (!widths.has(canvas)) {
    widths.set(canvas, Math.floor(canvas.clientWidth || canvas.parentElement.clientWidth));
    observer.observe(canvas);
  }
  const width = Math.max(1, widths.get(canvas) || canvas.clientWidth);
  const height = cssHeight;
  if (canvas.width !== Math.floor(width * ratio) || canvas.height !== Math.floor(height * ratio)) {
    canvas.width = Math.floor(width * ratio);
    canvas.height = Math.floor(height * ratio);
    canvas.style.height = height + 'px';
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { ctx, width, height };
}

/** Colours of task and engine states; the same names as dashboard.css. */
export const STATE_COLOURS = {
  pending: '#9e9e9e', running: '#1e88e5', completed: '#43a047', failed: '#e53935',
  aborted: '#fb8c00', lost: '#6d4c41', idle: '#43a047', busy: '#1e88e5', dead: '#757575',
};
