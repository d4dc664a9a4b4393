// app.js — the dashboard's entry: sign-in, the tabs, the connection and the
// store every view reads.  Events go into the store as they come; views are
// rendered at most once per animation frame (frame.js).

import { $, onCanvasResize } from './dom.js';
import { Conn, explain, forgetToken, storeToken, takeToken } from './conn.js';
import { Store } from './store.js';
import { invalidate, onFrame } from './frame.js';
import { EnginesView } from './engines.js';
import { TasksView } from './tasks.js';
import { ConsoleView } from './console.js';
import { DataView } from './data.js';
import { ThroughputView } from './throughput.js';

const state = { conn: null, store: null, views: [], unsubscribe: null, ticker: 0 };

function showSignin(message) {
  $('#main').hidden = true;
  $('#sign-out').hidden = true;
  $('#signin').hidden = false;
  $('#signin-error').textContent = message || '';
  $('#link-state').textContent = 'not connected';
  $('#link-state').dataset.state = 'off';
  $('#token-input').focus();
}

async function signIn(token) {
  $('#link-state').textContent = 'connecting…';
  $('#link-state').dataset.state = 'connecting';
  const conn = new Conn(token);
  try {
    await conn.connect();
    await start(conn);
  } catch (err) {
    conn.close();
    const why = explain(err);
    if (why.auth) forgetToken();
    showSignin(why.text);
  }
}

async function start(conn) {
  const store = new Store();
  state.conn = conn;
  state.store = store;
  // The stream first, so nothing that happens while the lists load is lost;
  // the lists then fill in what happened before.
  const early = [];
  let loaded = false;
  state.unsubscribe = conn.subscribe((ev) => {
    if (!loaded) { early.push(ev); return; }
    onEvent(ev);
  }, (status) => {
    if (status === 'open') setLink('live');
    else if (status === 'reconnecting') {
      setLink('connecting');
      checkTokenSoon();
    } else if (status === 'closed') setLink('off', 'disconnected');
  });
  const [engines, tasks] = await Promise.all([conn.engines(), conn.recentTasks(600, 5000)
    .catch(() => [])]);
  store.setEngines(engines);
  store.addTasks(tasks);
  loaded = true;
  for (const ev of early) onEvent(ev);

  $('#signin').hidden = true;
  $('#main').hidden = false;
  $('#sign-out').hidden = false;
  setLink('live');
  const ctx = { conn, store, invalidate, openTask: (id) => state.tasks.open(id),
                showTab };
  state.engines = new EnginesView(ctx);
  state.tasks = new TasksView(ctx);
  state.console = new ConsoleView(ctx);
  state.data = new DataView(ctx);
  state.throughput = new ThroughputView(ctx);
  for (const v of [state.engines, state.tasks, state.console, state.data, state.throughput])
    for (const [name, render] of Object.entries(v.renderers())) onFrame(name, render);
  invalidate('engines', 'tasks', 'timeline', 'targets', 'throughput', 'maps');
  onCanvasResize(() => invalidate('timeline', 'throughput'));
  // Heartbeat ages and the throughput axes move with the clock.
  state.ticker = setInterval(() => {
    store.sampleBusy(Date.now());
    invalidate('engines', 'tasks', 'throughput', 'timeline', 'maps');
  }, 1000);
  const info = await conn.info().catch(() => null);
  if (info) $('#cluster').textContent = 'profile ' + info.profile + ' · ippc ' + info.version;
  // A keyboard user who just signed in continues in the dashboard.
  if (document.activeElement === document.body || $('#signin').contains(document.activeElement))
    tabs().find((t) => t.getAttribute('aria-selected') === 'true')?.focus({ preventScroll: true });
}

function onEvent(ev) {
  if (ev.type === 'cluster.shutdown') {
    setLink('stopped', 'cluster stopped: ' + (ev.reason || ''));
    return;
  }
  if (ev.type === 'gap') {
    // Events were missed; a fresh snapshot follows.
    setLink('connecting', 'catching up…');
    return;
  }
  if (ev.type === 'snapshot') setLink('live');
  const changed = state.store.apply(ev);
  if (changed.length) invalidate(...changed);
}

// A stream that keeps reconnecting may face a controller restarted with a
// new token (browsers do not tell why a WebSocket upgrade failed): asked over
// REST, a 401 sends the page back to the sign-in with a message (through a
// reload, so every view starts clean).
let tokenCheck = 0;
function checkTokenSoon() {
  if (tokenCheck) return;
  tokenCheck = setTimeout(async () => {
    tokenCheck = 0;
    try {
      await state.conn.rest('GET', '/api/v1/info');
    } catch (err) {
      if (err.status !== 401) return; // down or restarting: the SDK keeps trying
      forgetToken();
      try {
        sessionStorage.setItem(NOTICE_KEY, 'The token is no longer accepted: the cluster was ' +
          'restarted with a new one. Paste the new token, or open the new Dashboard link.');
      } catch { /* shown without the notice */ }
      location.reload();
    }
  }, 2000);
}

const NOTICE_KEY = 'ippc.signin-notice';

function takeNotice() {
  try {
    const text = sessionStorage.getItem(NOTICE_KEY);
    sessionStorage.removeItem(NOTICE_KEY);
    return text || '';
  } catch {
    return '';
  }
}

function setLink(kind, text) {
  const el = $('#link-state');
  el.dataset.state = kind;
  el.textContent = text || { live: 'live', connecting: 'reconnecting…', stopped: 'stopped',
                             off: 'not connected' }[kind];
}

function signOut() {
  forgetToken();
  state.unsubscribe?.();
  clearInterval(state.ticker);
  state.conn?.close();
  location.reload();
}

// Tabs (WAI-ARIA tabs pattern): arrows move between them, Home/End to the
// ends; the selected one alone is in the tab order.
function tabs() {
  return [...document.querySelectorAll('[role=tab]')];
}

function showTab(name, focus) {
  for (const t of tabs()) {
    const on = t.id === 'tab-' + name;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    $('#' + t.getAttribute('aria-controls')).hidden = !on;
    if (on && focus) t.focus();
  }
  // The variables are listed on demand: fresh each time their tab opens.
  if (name === 'data') state.data?.refresh();
  invalidate('engines', 'tasks', 'timeline', 'throughput', 'maps');
}

function wireTabs() {
  for (const t of tabs()) {
    t.addEventListener('click', () => showTab(t.id.slice(4)));
    t.addEventListener('keydown', (e) => {
      const all = tabs();
      const i = all.indexOf(t);
      const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: all.length - 1 }[e.key];
      if (to === undefined) return;
      e.preventDefault();
      showTab(all[(to + all.length) % all.length].id.slice(4), true);
    });
  }
}

function main() {
  wireTabs();
  $('#sign-out').addEventListener('click', signOut);
  $('#signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('#token-input').value.trim();
    if (!token) return;
    storeToken(token);
    $('#token-input').value = '';
    $('#signin-error').textContent = '';
    signIn(token);
  });
  const token = takeToken();
  if (token) signIn(token);
  else showSignin(takeNotice());
}

main();
