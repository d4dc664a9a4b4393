// throughput.js — tasks finished per second and busy engines over the last
// five minutes (canvas), and a progress bar for each running map (a map's
// chunks are the balanced tasks sharing its request id; a finished map stays
// listed for KEEP_DONE_MS).

import { $, fill, fitCanvas, h } from './dom.js';
import { HISTORY_SECONDS } from './store.js';

const KEEP_DONE_MS = 30000;

export class ThroughputView {
  constructor(ctx) {
    this.ctx = ctx;
    this.store = ctx.store;
    this.items = new Map();
  }

  renderers() {
    return { throughput: () => this.draw(), maps: () => this.renderMaps() };
  }

  draw() {
    const hist = this.store.history;
    const nowSec = Math.floor(Date.now() / 1000);
    const last10 = hist.filter((b) => b.sec > nowSec - 11 && b.sec < nowSec);
    const rate = last10.reduce((s, b) => s + b.finished, 0) / 10;
    const busy = [...this.store.engines.values()].filter((e) => e.state === 'busy').length;
    $('#rate-now').textContent = `${rate.toFixed(1)} tasks/s (last 10 s) · ${busy} busy engines`;
    if ($('#panel-throughput').hidden) return;
    const { ctx, width, height } = fitCanvas($('#rate-canvas'), 200);
    ctx.clearRect(0, 0, width, height);
    const pad = 34;
    const w = width - pad - 6, hgt = height - 24;
    const t0 = nowSec - HISTORY_SECONDS;
    let maxRate = 1;
    for (const b of hist) maxRate = Math.max(maxRate, b.finished);
    const engines = Math.max(1, this.store.engines.size);
    const x = (sec) => pad + ((sec - t0) / HISTORY_SECONDS) * w;
    ctx.font = '10px system-ui, sans-serif';
    ctx.fillStyle = '#888';
    ctx.fillText(String(maxRate), 2, 12);
    ctx.fillText('0', 2, hgt + 4);
    ctx.fillText('-5 min', pad, height - 4);
    ctx.fillText('now', width - 26, height - 4);
    ctx.fillStyle = '#1e88e5';
    ctx.fillText(engines + ' busy', width - 44, 12);
    ctx.fillStyle = '#888';
    ctx.strokeStyle = '#888';
    ctx.beginPath();
    ctx.moveTo(pad, 4); ctx.lineTo(pad, hgt + 4); ctx.lineTo(width - 4, hgt + 4);
    ctx.stroke();
    // tasks/s: bars
    ctx.fillStyle = '#43a047';
    const bw = Math.max(1, w / HISTORY_SECONDS);
    for (const b of hist) {
      if (b.sec < t0) continue;
      const bh = (b.finished / maxRate) * hgt;
      ctx.fillRect(x(b.sec), hgt + 4 - bh, bw, bh);
    }
    // busy engines: a line, scaled to the engine count
    ctx.strokeStyle = '#1e88e5';
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    for (const b of hist) {
      if (b.sec < t0 || b.busy === null) continue;
      const y = hgt + 4 - (b.busy / engines) * hgt;
      if (!started) { ctx.moveTo(x(b.sec), y); started = true; } else ctx.lineTo(x(b.sec), y);
    }
    ctx.stroke();
    ctx.lineWidth = 1;
  }

  renderMaps() {
    const now = performance.now();
    const shown = [];
    for (const m of this.store.maps.values()) {
      const total = m.tasks.size;
      const done = m.done;
      if (done >= total && now - m.last > KEEP_DONE_MS) continue;
      shown.push(m);
    }
    shown.sort((a, b) => b.id - a.id);
    if ($('#panel-throughput').hidden) return;
    const items = shown.slice(0, 20).map((m) => {
      let it = this.items.get(m.id);
      if (!it) {
        const bar = h('progress', { max: 1, value: 0, 'aria-label': 'map ' + m.id });
        const label = h('span');
        it = { el: h('li', { 'data-map': m.id }, label, bar), bar, label };
        this.items.set(m.id, it);
      }
      it.bar.max = m.tasks.size;
      it.bar.value = m.done;
      it.label.textContent = `map #${m.id}: ${m.done} / ${m.tasks.size} chunks` +
        (m.failed ? ` (${m.failed} failed)` : '') + (m.done >= m.tasks.size ? ' · done' : '');
      return it.el;
    });
    const list = $('#maps');
    if (list.children.length !== items.length || items.some((el, i) => list.children[i] !== el))
      fill(list, items.length ? items : [h('li', { class: 'muted' }, 'No map running.')]);
  }
}
