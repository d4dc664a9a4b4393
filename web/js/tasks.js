// tasks.js — the live task table (newest first, filtered by state, engine and
// tag), a task's details (code or function and arguments, result, stdout as it
// streams, traceback) with abort and resubmit, and the task stream timeline.
// The table keeps a fixed set of rows and changes only the cells whose text
// changed; it is drawn at most every TABLE_MS even when events pour in.

import { $, fill, h, seconds } from './dom.js';
import { Timeline } from './timeline.js';

const ROWS = 100;
const TABLE_MS = 250;

export class TasksView {
  constructor(ctx) {
    this.ctx = ctx;
    this.store = ctx.store;
    this.rows = [];
    this.lastTable = 0;
    this.pendingTable = false;
    this.openId = null;
    this.openRecord = null;
    this.timeline = new Timeline($('#timeline'), ctx.store);
    $('#timeline-window').addEventListener('change', (e) => {
      this.timeline.windowS = Number(e.target.value);
      ctx.invalidate('timeline');
    });
    for (const id of ['#filter-state', '#filter-engine', '#filter-tag'])
      $(id).addEventListener('input', () => { this.lastTable = 0; ctx.invalidate('tasks'); });
    $('#task-filters').addEventListener('submit', (e) => e.preventDefault());
    $('#task-details').addEventListener('keydown', (e) => {
      if (e.key === 'Escape') this.close();
    });
    this.store.stdoutListeners.add((t) => {
      if (t.id === this.openId) ctx.invalidate('details');
    });
  }

  renderers() {
    return {
      tasks: (now) => this.renderTable(now),
      timeline: () => { if (!$('#panel-tasks').hidden) this.timeline.draw(); },
      details: () => this.renderDetails(),
    };
  }

  filters() {
    const state = $('#filter-state').value;
    const engineText = $('#filter-engine').value.trim();
    const engine = engineText === '' ? null : Number(engineText);
    const tag = $('#filter-tag').value.trim();
    return (t) => (!state || t.state === state) &&
      (engine === null || t.engine === engine) && (!tag || (t.tags || []).includes(tag));
  }

  renderTable(now) {
    const store = this.store;
    let counts = { pending: 0, running: 0 };
    for (const t of store.tasks.values()) if (t.state in counts) counts[t.state]++;
    $('#task-summary').textContent = `${store.tasks.size} recent tasks · ${counts.running} running · ` +
      `${counts.pending} pending`;
    if ($('#panel-tasks').hidden) return;
    if (now - this.lastTable < TABLE_MS) {
      // Drawn a moment ago: once more when the interval is over.
      if (!this.pendingTable) {
        this.pendingTable = true;
        setTimeout(() => { this.pendingTable = false; this.ctx.invalidate('tasks'); },
          TABLE_MS - (now - this.lastTable));
      }
      return;
    }
    this.lastTable = now;
    const keep = this.filters();
    const shown = [];
    const ids = [...store.tasks.keys()];
    for (let i = ids.length - 1; i >= 0 && shown.length < ROWS; i--) {
      const t = store.tasks.get(ids[i]);
      if (keep(t)) shown.push(t);
    }
    shown.sort((a, b) => b.id - a.id);
    const body = $('#task-rows');
    while (this.rows.length < shown.length) this.rows.push(this.makeRow());
    for (let i = 0; i < shown.length; i++) this.fillRow(this.rows[i], shown[i]);
    if (body.children.length !== shown.length) fill(body, this.rows.slice(0, shown.length).map((r) => r.tr));
    if (!shown.length) fill(body, h('tr', null, h('td', { colspan: 6, class: 'muted' }, 'No tasks match.')));
  }

  makeRow() {
    const cells = {};
    cells.button = h('button', { type: 'button', class: 'link', onclick: () => this.open(row.task) });
    const tr = h('tr', null,
      h('td', null, cells.button), h('td', null, cells.state = h('span', { class: 'state' })),
      cells.engine = h('td'), cells.duration = h('td', { class: 'num' }), cells.kind = h('td'),
      cells.tags = h('td'));
    const row = { tr, cells, task: null };
    return row;
  }

  fillRow(row, t) {
    row.task = t.id;
    const c = row.cells;
    set(c.button, '#' + t.id);
    c.button.setAttribute('aria-label', 'task ' + t.id + ', ' + t.state + ': details');
    set(c.state, t.state);
    c.state.dataset.state = t.state;
    set(c.engine, t.engine === null || t.engine === undefined ? '–' : String(t.engine));
    set(c.duration, duration(t));
    set(c.kind, t.op ? t.kind + ' ' + t.op : (t.kind || ''));
    set(c.tags, (t.tags || []).join(', '));
    row.tr.classList.toggle('open', t.id === this.openId);
  }

  /** Opens a task's details (fetched whole; then kept live from events). */
  async open(id) {
    this.openId = id;
    this.openRecord = null;
    this.detailsError = '';
    const panel = $('#task-details');
    panel.hidden = false;
    panel.parentElement.classList.add('with-details');
    this.ctx.invalidate('details', 'tasks');
    try {
      this.openRecord = await this.ctx.conn.task(id);
    } catch (err) {
      this.detailsError = err.message;
    }
    if (this.openId === id) {
      this.ctx.invalidate('details');
      panel.focus();
    }
  }

  close() {
    const id = this.openId;
    this.openId = null;
    $('#task-details').hidden = true;
    $('#task-details').parentElement.classList.remove('with-details');
    this.ctx.invalidate('tasks');
    // Back to the row it was opened from, when it is still shown.
    const row = this.rows.find((r) => r.task === id && r.tr.isConnected);
    if (row) row.cells.button.focus();
  }

  renderDetails() {
    if (this.openId === null) return;
    const id = this.openId;
    const live = this.store.tasks.get(id) || {};
    const rec = this.openRecord || {};
    const state = live.state || rec.state || '…';
    const engine = live.engine ?? rec.engine;
    // Live stdout when the events brought more than the record had.
    const stdout = (live.stdout || '').length >= (rec.stdout || '').length ? live.stdout : rec.stdout;
    const error = live.error || rec.error;
    const result = 'result' in live ? live.result : rec.result;
    const running = state === 'pending' || state === 'running';
    const panel = $('#task-details');
    const what = rec.code !== undefined ? h('pre', { class: 'code' }, rec.code)
      : rec.function !== undefined ? [h('pre', { class: 'code' }, rec.function + '(' +
        (rec.args === undefined && rec.kwargs === undefined ? '…' :
          [...(rec.args || []).map(show), ...Object.entries(rec.kwargs || {}).map(([k, v]) => k + '=' + show(v))]
            .join(', ')) + ')'),
        rec.args === undefined ? h('p', { class: 'muted' }, 'The controller does not keep a task\'s arguments in its record.') : null]
      : h('p', { class: 'muted' }, rec.op ? 'a direct ' + rec.op : '…');
    const kept = panel.querySelector('pre.stdout');
    const atBottom = kept ? kept.scrollTop + kept.clientHeight >= kept.scrollHeight - 4 : true;
    // Only stdout changed (a task printing): update it alone, so focus and
    // selection elsewhere in the panel stay.
    const key = JSON.stringify([id, state, !!this.openRecord, this.detailsError,
      this.actionMessage || '', result !== undefined, !!error]);
    if (kept && key === this.detailsKey) {
      if (kept.textContent !== (stdout || '')) kept.textContent = stdout || '';
      if (atBottom) kept.scrollTop = kept.scrollHeight;
      return;
    }
    this.detailsKey = key;
    const focused = document.activeElement && panel.contains(document.activeElement)
      ? document.activeElement.id : null;
    fill(panel,
      h('div', { class: 'details-head' },
        h('h3', null, 'Task #' + id, ' ', h('span', { class: 'state', 'data-state': state }, state)),
        h('button', { type: 'button', class: 'close', 'aria-label': 'close details',
                      onclick: () => this.close() }, '×')),
      h('p', { class: 'muted' }, [engine !== null && engine !== undefined ? 'engine ' + engine : 'no engine yet',
        rec.kind ? ' · ' + rec.kind : '', rec.tags?.length ? ' · tags ' + rec.tags.join(', ') : '',
        ' · ' + duration(live.id ? live : { state, startedMs: Date.parse(rec.started), completedMs: Date.parse(rec.completed) })]),
      this.detailsError ? h('p', { class: 'error', role: 'alert' }, this.detailsError) : null,
      h('h4', null, rec.code !== undefined ? 'Code' : 'Call'), what,
      h('div', { class: 'buttons' },
        h('button', { type: 'button', id: 'task-abort', disabled: !running,
                      onclick: () => this.abort(id, state) }, 'Abort'),
        h('button', { type: 'button', id: 'task-resubmit', disabled: running || rec.kind !== 'balanced',
                      onclick: () => this.resubmit(id) }, 'Resubmit')),
      h('h4', null, 'Stdout'), h('pre', { class: 'stdout', tabindex: 0 }, stdout || ''),
      state === 'completed' && result !== undefined ? [h('h4', null, 'Result'),
        h('pre', { class: 'result' }, show(result))] : null,
      live.resultOmitted ? h('p', { class: 'muted' }, 'The result is too large to show here.') : null,
      error ? [h('h4', null, 'Error'), h('pre', { class: 'traceback' },
        (error.ename ? error.ename + ': ' : '') + (error.evalue || '') +
        (error.traceback ? '\n' + [].concat(error.traceback).join('\n') : ''))] : null,
      this.actionMessage ? h('p', { class: 'muted', role: 'status' }, this.actionMessage) : null);
    const out = panel.querySelector('pre.stdout');
    if (atBottom) out.scrollTop = out.scrollHeight;
    if (focused) document.getElementById(focused)?.focus();
  }

  async abort(id, state) {
    try {
      await this.ctx.conn.abort(id, state === 'running');
      this.actionMessage = 'Abort sent.';
    } catch (err) {
      this.actionMessage = 'Abort failed: ' + err.message;
    }
    this.ctx.invalidate('details');
  }

  async resubmit(id) {
    try {
      const newId = await this.ctx.conn.resubmit(id);
      this.actionMessage = '';
      if (typeof newId === 'number') this.open(newId);
    } catch (err) {
      this.actionMessage = 'Resubmit failed: ' + err.message;
      this.ctx.invalidate('details');
    }
  }
}

function duration(t) {
  if (!t.startedMs || Number.isNaN(t.startedMs)) return '–';
  const end = t.completedMs && !Number.isNaN(t.completedMs) ? t.completedMs : Date.now();
  return seconds((end - t.startedMs) / 1000);
}

function show(v) {
  if (typeof v === 'string') return JSON.stringify(v);
  try {
    const s = JSON.stringify(v, (k, x) => (typeof x === 'bigint' ? Number(x) : x));
    return s === undefined ? String(v) : s.length > 20000 ? s.slice(0, 20000) + '…' : s;
  } catch {
    return String(v);
  }
}

function set(el, text) {
  if (el.textContent !== text) el.textContent = text;
}
