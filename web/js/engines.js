// engines.js — the live engine grid, grouped by MPI job.  A card per engine:
// id, rank/size, host and pid, state (colour and word), queue, tasks done,
// heartbeat age, memory.  Cards are kept and updated in place, so a status
// event costs a few text changes, not a rebuilt grid.

import { $, bytes, fill, h, seconds } from './dom.js';

export class EnginesView {
  constructor(ctx) {
    this.store = ctx.store;
    this.cards = new Map(); // engine id -> {el, fields}
    this.jobs = new Map();  // job -> {el, list, title}
  }

  renderers() {
    return { engines: () => this.render() };
  }

  render() {
    const engines = this.store.engineList();
    const counts = { idle: 0, busy: 0, dead: 0 };
    for (const e of engines) counts[e.state] = (counts[e.state] || 0) + 1;
    $('#engine-summary').textContent = `${engines.length} engines: ${counts.idle} idle, ` +
      `${counts.busy} busy, ${counts.dead} dead`;
    if ($('#panel-engines').hidden) return;
    const root = $('#engine-jobs');
    const now = performance.now();
    const byJob = new Map();
    for (const e of engines) {
      const job = e.job || 'no job';
      if (!byJob.has(job)) byJob.set(job, []);
      byJob.get(job).push(e);
    }
    let jobNumber = 0;
    const order = [];
    for (const [job, list] of byJob) {
      jobNumber++;
      let j = this.jobs.get(job);
      if (!j) {
        const title = h('h3', { class: 'job-title' });
        const grid = h('ul', { class: 'engine-grid', 'aria-label': 'engines of MPI job ' + job });
        j = { el: h('section', { class: 'job' }, title, grid), title, grid };
        this.jobs.set(job, j);
      }
      const live = list.filter((e) => e.state !== 'dead').length;
      j.title.textContent = `MPI job ${jobNumber} · ${list[0].size} rank${list[0].size === 1 ? '' : 's'}` +
        ` · ${live} live · ${job.slice(0, 12)}`;
      j.title.title = job;
      const cards = list.map((e) => this.card(e, now));
      if (j.grid.children.length !== cards.length || cards.some((c, i) => j.grid.children[i] !== c))
        fill(j.grid, cards);
      order.push(j.el);
    }
    if (root.children.length !== order.length || order.some((el, i) => root.children[i] !== el))
      fill(root, order);
    if (!engines.length) fill(root, h('p', { class: 'muted' }, 'No engines yet: start some with ' +
      '`mpiexec -n 4 ippc-engine --file <ippc-engine.json>`.'));
  }

  card(e, now) {
    let c = this.cards.get(e.id);
    if (!c) {
      const f = {};
      const field = (name, label) => [h('dt', null, label), f[name] = h('dd', { class: 'f-' + name })];
      f.state = h('span', { class: 'state' });
      const el = h('li', { class: 'engine', 'data-engine': e.id },
        h('div', { class: 'engine-head' }, h('strong', null, 'engine ' + e.id), f.state),
        h('dl', null, field('rank', 'rank'), field('host', 'host · pid'), field('queue', 'queue'),
          field('done', 'done'), field('beat', 'heartbeat'), field('mem', 'memory')));
      c = { el, f };
      this.cards.set(e.id, c);
    }
    const f = c.f;
    set(f.state, e.state);
    f.state.dataset.state = e.state;
    c.el.dataset.state = e.state;
    set(f.rank, `${e.rank} / ${e.size}`);
    set(f.host, `${e.host} · ${e.pid}`);
    set(f.queue, String(e.queue ?? 0));
    set(f.done, String(e.tasks_done ?? 0));
    // The age the controller reported plus the time since it did.
    const age = e.state === 'dead' || e.heartbeat_age < 0 ? null
      : (e.heartbeat_age ?? 0) + (now - (e.seen ?? now)) / 1000;
    set(f.beat, e.state === 'dead' ? (e.reason ? 'dead: ' + e.reason : 'dead') : seconds(age) + ' ago');
    set(f.mem, e.rss ? bytes(e.rss) : '–');
    return c.el;
  }
}

function set(el, text) {
  if (el.textContent !== text) el.textContent = text;
}
