// plot.js — an array drawn on a canvas: a line plot for 1-D (min/max per
// pixel column, so a million points draw as fast as a thousand), a heat map
// for 2-D (one cell per element, scaled to fit, a blue-to-yellow ramp).
// Returns {min, max, sum} of the data (NaN ignored).

import { fitCanvas } from './dom.js';

export function plotArray(canvas, arr) {
  const data = arr.data;
  const n = data.length;
  let min = Infinity, max = -Infinity, sum = 0;
  for (let i = 0; i < n; i++) {
    const v = Number(data[i]);
    if (Number.isNaN(v)) continue;
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
  }
  if (min === Infinity) { min = 0; max = 0; }
  if (arr.shape.length === 2) heat(canvas, data, arr.shape[0], arr.shape[1], min, max);
  else line(canvas, data, min, max);
  return { min, max, sum };
}

function axes(ctx, width, height, pad, min, max) {
  ctx.strokeStyle = '#888';
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(pad, 4);
  ctx.lineTo(pad, height - pad);
  ctx.lineTo(width - 4, height - pad);
  ctx.stroke();
  ctx.fillStyle = '#888';
  ctx.font = '10px system-ui, sans-serif';
  ctx.fillText(short(max), 2, 12);
  ctx.fillText(short(min), 2, height - pad);
}

function line(canvas, data, min, max) {
  const { ctx, width, height } = fitCanvas(canvas, 260);
  ctx.clearRect(0, 0, width, height);
  const pad = 40;
  axes(ctx, width, height, pad, min, max);
  const n = data.length;
  const w = width - pad - 6;
  const hgt = height - pad - 8;
  const span = max - min || 1;
  const y = (v) => 4 + hgt - ((v - min) / span) * hgt;
  ctx.strokeStyle = '#1e88e5';
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  if (n <= w) {
    for (let i = 0; i < n; i++) {
      const px = pad + 1 + (n === 1 ? w / 2 : (i / (n - 1)) * w);
      if (i === 0) ctx.moveTo(px, y(Number(data[i])));
      else ctx.lineTo(px, y(Number(data[i])));
    }
    if (n === 1) ctx.lineTo(pad + 1 + w / 2 + 1, y(Number(data[0])));
  } else {
    // More points than pixels: each column spans its points' min..max.
    for (let px = 0; px < w; px++) {
      const a = Math.floor((px / w) * n), b = Math.max(a + 1, Math.floor(((px + 1) / w) * n));
      let lo = Infinity, hi = -Infinity;
      for (let i = a; i < b; i++) {
        const v = Number(data[i]);
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      ctx.moveTo(pad + 1 + px, y(lo));
      ctx.lineTo(pad + 1 + px, y(hi) - 0.5);
    }
  }
  ctx.stroke();
}

function heat(canvas, data, rows, cols, min, max) {
  const { ctx, width } = fitCanvas(canvas, 10);
  const avail = width - 8;
  const cell = Math.max(1, Math.min(40, Math.floor(avail / cols)));
  const height = Math.min(600, Math.max(40, rows * cell));
  const fitted = fitCanvas(canvas, height);
  const c2 = fitted.ctx;
  c2.clearRect(0, 0, fitted.width, height);
  // One pixel per element in an offscreen image, scaled up without smoothing.
  const img = new ImageData(cols, rows);
  const span = max - min || 1;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const t = (Number(data[r * cols + c]) - min) / span;
      const [R, G, B] = ramp(Number.isNaN(t) ? 0 : t);
      const o = (r * cols + c) * 4;
      img.data[o] = R; img.data[o + 1] = G; img.data[o + 2] = B; img.data[o + 3] = 255;
    }
  }
  const off = document.createElement('canvas');
  off.width = cols;
  off.height = rows;
  off.getContext('2d').putImageData(img, 0, 0);
  c2.imageSmoothingEnabled = false;
  const w = Math.min(fitted.width - 70, cols * Math.max(1, height / rows));
  c2.drawImage(off, 4, 0, w, height);
  // The colour scale, max at the top.
  const lx = w + 14;
  for (let y = 0; y < height; y++) {
    const [R, G, B] = ramp(1 - y / Math.max(1, height - 1));
    c2.fillStyle = `rgb(${R},${G},${B})`;
    c2.fillRect(lx, y, 12, 1);
  }
  c2.fillStyle = '#555';
  c2.font = '10px system-ui, sans-serif';
  c2.fillText(short(max), lx + 16, 10);
  c2.fillText(short(min), lx + 16, height - 2);
  void ctx;
}

/** 0..1 -> a blue, green, yellow ramp (perceptually ordered, colour-blind safe). */
function ramp(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  return stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f));
}

function short(v) {
  return Math.abs(v) >= 1e5 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(2) : String(+v.toFixed(3));
}
