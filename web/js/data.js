// data.js — one engine's variables (name, type, dtype, shape, bytes); an
// array opens as a line plot (1-D) or a heat map (2-D), its bytes fetched
// through the binary path.

import { $, bytes, fill, h } from './dom.js';
import { plotArray } from './plot.js';

export class DataView {
  constructor(ctx) {
    this.ctx = ctx;
    this.store = ctx.store;
    this.engine = null;
    $('#data-refresh').addEventListener('click', () => this.refresh());
    $('#data-engine').addEventListener('change', (e) => {
      this.engine = Number(e.target.value);
      this.refresh();
    });
  }

  renderers() {
    return { targets: () => this.renderEngines() };
  }

  renderEngines() {
    const live = this.store.engineList().filter((e) => e.state !== 'dead');
    const select = $('#data-engine');
    const want = live.map((e) => String(e.id)).join(',');
    if (select.dataset.ids !== want) {
      select.dataset.ids = want;
      fill(select, live.map((e) => h('option', { value: String(e.id) }, 'engine ' + e.id)));
      if (this.engine === null || !live.some((e) => e.id === this.engine))
        this.engine = live.length ? live[0].id : null;
      if (this.engine !== null) select.value = String(this.engine);
    }
  }

  async refresh() {
    this.renderEngines();
    if (this.engine === null) {
      $('#data-state').textContent = 'no live engine';
      return;
    }
    const engine = this.engine;
    $('#data-state').textContent = 'loading…';
    try {
      const all = await this.ctx.conn.vars([engine]);
      const listing = (Array.isArray(all) ? all[0] : all) || {};
      this.show(engine, listing);
      $('#data-state').textContent = Object.keys(listing).length + ' variables on engine ' + engine;
    } catch (err) {
      $('#data-state').textContent = 'could not list: ' + err.message;
    }
  }

  show(engine, listing) {
    const names = Object.keys(listing).sort();
    fill($('#var-rows'), names.map((name) => {
      const v = listing[name] || {};
      const isArray = Array.isArray(v.shape) && v.dtype;
      const plottable = isArray && (v.shape.length === 1 || v.shape.length === 2) &&
        v.shape.every((n) => n > 0);
      return h('tr', null, h('th', { scope: 'row' }, name), h('td', null, v.type ?? ''),
        h('td', null, v.dtype ?? ''), h('td', null, isArray ? v.shape.join(' × ') : ''),
        h('td', { class: 'num' }, v.bytes === undefined ? '' : bytes(v.bytes)),
        h('td', null, plottable ? h('button', { type: 'button', 'aria-label': 'plot ' + name,
          onclick: () => this.plot(engine, name, v) }, 'Plot') : ''));
    }));
    if (!names.length) fill($('#var-rows'), h('tr', null, h('td', { colspan: 6, class: 'muted' },
      'No variables.')));
  }

  async plot(engine, name, info) {
    const fig = $('#plot');
    fig.hidden = false;
    $('#plot-caption').textContent = 'loading ' + name + '…';
    try {
      const arr = await this.ctx.conn.pullArray(engine, name, info);
      const summary = plotArray($('#plot-canvas'), arr);
      $('#plot-caption').textContent = `${name} on engine ${engine}: ${arr.dtype}[${arr.shape.join('×')}], ` +
        `min ${fmt(summary.min)}, max ${fmt(summary.max)}` +
        (arr.shape.length === 2 ? ' (heat map: rows down, columns across)' : '');
      $('#plot-canvas').setAttribute('aria-label', $('#plot-caption').textContent);
      fig.dataset.name = name;
      fig.dataset.length = String(arr.data.length);
      fig.dataset.sum = String(summary.sum);
      fig.scrollIntoView({ block: 'nearest' });
    } catch (err) {
      $('#plot-caption').textContent = 'could not fetch ' + name + ': ' + err.message;
    }
  }
}

function fmt(x) {
  return Number.isInteger(x) ? String(x) : x.toPrecision(4);
}
