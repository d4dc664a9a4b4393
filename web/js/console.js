// console.js — ippc's %px: Lua on the engines picked (a target spec, or the
// engine chips), each engine's stdout, value or traceback side by side.
// stdout streams into each engine's cell while the run goes on (the SDK's
// onStdout); a running run can be interrupted.
// History: the last HISTORY_MAX runs, kept in localStorage, walked with
// ArrowUp at the first line and ArrowDown at the last.

import { $, fill, h } from './dom.js';

const HISTORY_KEY = 'ippc.console.history';
const HISTORY_MAX = 100;

export class ConsoleView {
  constructor(ctx) {
    this.ctx = ctx;
    this.store = ctx.store;
    this.history = loadHistory();
    this.pos = this.history.length; // history.length: the draft being typed
    this.draft = '';
    this.run = null; // {targets, running, cells: Map(engine -> {el, out, status, text})}
    this.chips = new Map();
    $('#console-form').addEventListener('submit', (e) => { e.preventDefault(); this.execute(); });
    $('#console-code').addEventListener('keydown', (e) => this.key(e));
    $('#console-interrupt').addEventListener('click', () => this.interrupt());
    $('#console-targets').addEventListener('input', () => ctx.invalidate('targets'));
  }

  renderers() {
    return { targets: () => this.renderChips() };
  }

  /** One toggle per live engine; pressed ones make the target spec. */
  renderChips() {
    const spec = $('#console-targets').value.trim();
    const picked = new Set(/^\d+(,\d+)*$/.test(spec) ? spec.split(',').map(Number) : []);
    const live = this.store.engineList().filter((e) => e.state !== 'dead');
    const box = $('#console-target-chips');
    const chips = live.map((e) => {
      let b = this.chips.get(e.id);
      if (!b) {
        b = h('button', { type: 'button', class: 'chip', 'aria-label': 'engine ' + e.id,
                          onclick: () => this.toggle(e.id) }, String(e.id));
        this.chips.set(e.id, b);
      }
      b.setAttribute('aria-pressed', String(spec === 'all' || picked.has(e.id)));
      return b;
    });
    if (box.children.length !== chips.length || chips.some((c, i) => box.children[i] !== c))
      fill(box, chips);
  }

  toggle(id) {
    const input = $('#console-targets');
    const spec = input.value.trim();
    const live = this.store.engineList().filter((e) => e.state !== 'dead').map((e) => e.id);
    let picked = new Set(spec === 'all' ? live : /^\d+(,\d+)*$/.test(spec) ? spec.split(',').map(Number) : []);
    if (picked.has(id)) picked.delete(id);
    else picked.add(id);
    const list = live.filter((x) => picked.has(x));
    input.value = list.length === live.length ? 'all' : list.join(',');
    this.ctx.invalidate('targets');
  }

  key(e) {
    const area = e.target;
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      this.execute();
      return;
    }
    if (e.key === 'ArrowUp' && !area.value.slice(0, area.selectionStart).includes('\n')) {
      if (this.pos === 0 || !this.history.length) return;
      if (this.pos === this.history.length) this.draft = area.value;
      this.pos--;
      area.value = this.history[this.pos];
      e.preventDefault();
      area.setSelectionRange(0, 0);
    } else if (e.key === 'ArrowDown' && !area.value.slice(area.selectionEnd).includes('\n')) {
      if (this.pos >= this.history.length) return;
      this.pos++;
      area.value = this.pos === this.history.length ? this.draft : this.history[this.pos];
      e.preventDefault();
      area.setSelectionRange(area.value.length, area.value.length);
    }
  }

  async execute() {
    const code = $('#console-code').value;
    const targets = $('#console-targets').value.trim() || 'all';
    if (!code.trim() || this.run?.running) return;
    if (this.history[this.history.length - 1] !== code) {
      this.history.push(code);
      if (this.history.length > HISTORY_MAX) this.history.shift();
      saveHistory(this.history);
    }
    this.pos = this.history.length;
    this.draft = '';
    const run = { targets, running: true, cells: new Map() };
    this.run = run;
    fill($('#console-out'));
    this.setState('running on ' + targets + '…', true);
    try {
      // Each engine's output as it prints, into its cell.
      const answer = await this.ctx.conn.execute(targets, code, (engine, text) => {
        if (this.run !== run || !run.running) return;
        const c = this.cell(run, engine);
        c.text += text;
        c.out.textContent = c.text;
      });
      run.running = false;
      this.showAnswer(run, answer);
      this.setState('done' + (answer.status === 'error' ? ' (with errors)' : ''), false);
    } catch (err) {
      run.running = false;
      fill($('#console-out'), h('p', { class: 'error', role: 'alert' }, err.message || String(err)));
      this.setState('failed', false);
    }
  }

  setState(text, running) {
    $('#console-state').textContent = text;
    $('#console-interrupt').disabled = !running;
    $('#console-run').disabled = running;
  }

  async interrupt() {
    if (!this.run?.running) return;
    try {
      await this.ctx.conn.interrupt(this.run.targets);
      this.setState('interrupt sent…', true);
    } catch (err) {
      this.setState('interrupt failed: ' + err.message, true);
    }
  }

  /** The output cell of one engine in a run (made once). */
  cell(run, engine) {
    let c = run.cells.get(engine);
    if (!c) {
      const out = h('pre', { class: 'out' });
      const status = h('span', { class: 'state', 'data-state': 'running' }, 'running');
      const el = h('article', { class: 'cell', 'data-engine': engine, 'aria-label': 'engine ' + engine },
        h('header', null, h('strong', null, '[' + engine + ']'), ' ', status), out);
      c = { el, out, status, text: '' };
      run.cells.set(engine, c);
      const box = $('#console-out');
      const after = [...box.children].find((x) => Number(x.dataset.engine) > engine);
      box.insertBefore(el, after || null);
    }
    return c;
  }

  showAnswer(run, answer) {
    const results = answer.results || [];
    const targets = answer.targets || results.map((r, i) => r?.engine ?? i);
    results.forEach((r, i) => {
      const engine = r?.engine ?? targets[i];
      const c = this.cell(run, engine);
      c.out.replaceChildren();
      const ok = r && r.status === 'ok';
      const word = ok ? 'ok' : r?.status === 'aborted' ? 'aborted' : 'error';
      c.status.textContent = word;
      c.status.dataset.state = ok ? 'completed' : word === 'aborted' ? 'aborted' : 'failed';
      if (r?.stdout) c.out.append(h('span', { class: 'stdout' }, r.stdout));
      if (r && 'value' in r && r.value !== undefined)
        c.out.append(h('span', { class: 'value' }, 'Out: ' + show(r.value) + '\n'));
      if (r && !ok && (r.ename || r.evalue || r.traceback))
        c.out.append(h('span', { class: 'traceback' }, (r.ename || 'Error') + ': ' + (r.evalue || '') +
          '\n' + [].concat(r.traceback || []).join('\n')));
    });
  }
}

function show(v) {
  try {
    const s = JSON.stringify(v, (k, x) => (typeof x === 'bigint' ? Number(x) : ArrayBuffer.isView(x) ? Array.from(x) : x));
    return s === undefined ? String(v) : s;
  } catch {
    return String(v);
  }
}

function loadHistory() {
  try {
    const v = JSON.parse(localStorage.getItem(HISTORY_KEY) || '[]');
    return Array.isArray(v) ? v.filter((x) => typeof x === 'string') : [];
  } catch {
    return [];
  }
}

function saveHistory(list) {
  try { localStorage.setItem(HISTORY_KEY, JSON.stringify(list)); } catch { /* not kept */ }
}
