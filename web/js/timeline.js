// timeline.js — the task stream: one lane per engine, one bar per task from
// its start to its end (or now), coloured by state, over the last 10 s, 1 min
// or 5 min (windowS); drawn on a canvas.  Only tasks that started within the window are
// looked at, found from the newest backwards.

import { fitCanvas, STATE_COLOURS } from './dom.js';

const LANE = 14;
const LABEL = 34;
const MUTED = '#5f6b7a'; // dashboard.css --muted (no getComputedStyle while drawing)

export class Timeline {
  constructor(canvas, store) {
    this.canvas = canvas;
    this.store = store;
    this.windowS = 60;
  }

  draw() {
    const engines = this.store.engineList();
    const lanes = new Map(engines.map((e, i) => [e.id, i]));
    const height = Math.max(3, engines.length) * LANE + 18;
    const { ctx, width } = fitCanvas(this.canvas, height);
    ctx.clearRect(0, 0, width, height);
    ctx.font = '10px system-ui, sans-serif';
    ctx.fillStyle = MUTED;
    const now = Date.now();
    const WINDOW_S = this.windowS;
    const t0 = now - WINDOW_S * 1000;
    const plotW = width - LABEL - 4;
    const x = (ms) => LABEL + ((ms - t0) / (WINDOW_S * 1000)) * plotW;
    for (const [id, i] of lanes) {
      ctx.fillText(String(id), 4, i * LANE + 11);
      ctx.fillStyle = i % 2 ? 'rgba(127,127,127,0.06)' : 'rgba(127,127,127,0.12)';
      ctx.fillRect(LABEL, i * LANE, plotW, LANE);
      ctx.fillStyle = MUTED;
    }
    // seconds axis
    for (let k = 0; k <= 6; k++) {
      const px = LABEL + (k / 6) * plotW;
      const ago = WINDOW_S * (1 - k / 6);
      ctx.fillText(k === 6 ? 'now' : '-' + +ago.toFixed(1) + ' s', Math.min(px, width - 24), height - 4);
    }
    let drawn = 0;
    const ids = [...this.store.tasks.keys()];
    for (let k = ids.length - 1; k >= 0; k--) {
      const t = this.store.tasks.get(ids[k]);
      if (t.startedMs === null || t.engine === null || t.engine === undefined) continue;
      const end = t.completedMs ?? now;
      if (end < t0) {
        // Tasks are roughly in start order: far enough back, stop looking.
        if (t.startedMs < t0 - 600000) break;
        continue;
      }
      const lane = lanes.get(t.engine);
      if (lane === undefined) continue;
      const x0 = Math.max(LABEL, x(t.startedMs));
      const x1 = Math.max(x0 + 1, x(end));
      ctx.fillStyle = STATE_COLOURS[t.state] || '#999';
      ctx.fillRect(x0, lane * LANE + 2, x1 - x0, LANE - 4);
      drawn++;
    }
    this.canvas.dataset.bars = String(drawn);
  }
}
