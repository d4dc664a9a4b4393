// dashboard.mjs — the dashboard (web/) in a real browser: Debian's chromium,
// headless, driven by playwright-core, against the real controller and 4 MPI
// engines that tests/browser/run.py started (IPPC_URL, IPPC_TOKEN; engine pids
// from the API).  run.py owns the cluster; this file owns the browser and
// always closes it.
//
// Prints `PASS name` / `FAIL name: reason` per test, then
// `browser-page: N passed, N failed` (run.py adds its own checks and prints
// the suite's line).  Screenshots of the main screens go to $BROWSER_OUT.

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const URL_ = process.env.IPPC_URL;
const TOKEN = process.env.IPPC_TOKEN;
const OUT = process.env.BROWSER_OUT || 'build/browser';
const CHROMIUM = process.env.IPPC_CHROMIUM || '/usr/bin/chromium';
const TEST_TIMEOUT_MS = Number(process.env.BROWSER_TEST_TIMEOUT_MS || 90000);
const PSUM = 'function psum(a) return mpi.allreduce(a:sum(), "sum") end';
// Busy for s seconds of wall time (the engines' clock), printing nothing.
const wait = (s) => `do local t0 = mpi.wtime() while mpi.wtime() - t0 < ${s} do end end`;

fs.mkdirSync(OUT, { recursive: true });

// ------------------------------------------------------------------ helpers

async function api(method, p, body) {
  const r = await fetch(URL_ + p, {
    method,
    headers: { Authorization: 'Bearer ' + TOKEN, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!r.ok && r.status !== 202) throw new Error(`${method} ${p} -> ${r.status} ${text.slice(0, 300)}`);
  return json;
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

async function until(what, f, timeoutMs = 20000, stepMs = 100) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await f();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, stepMs));
  }
  throw new Error(`${what}: not within ${timeoutMs} ms (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

/** Every console error and uncaught exception of every page, by page name. */
const problems = [];

async function newPage(browser, name, viewport = { width: 1280, height: 800 }, allow = []) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (allow.some((re) => re.test(m.text()))) return;
    problems.push(`${name}: console.error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${name}: uncaught: ${e.message}`));
  page.on('requestfailed', (r) => {
    // Leaving a page aborts its long polls and sockets; nothing else may fail.
    const what = `${r.url()} ${r.failure()?.errorText}`;
    if (/ERR_ABORTED/.test(what) || allow.some((re) => re.test(what))) return;
    problems.push(`${name}: request failed: ${what}`);
  });
  return { context, page };
}

/** A page signed in through the link `ippc cluster start` prints. */
async function signedIn(browser, name, viewport) {
  const { context, page } = await newPage(browser, name, viewport);
  await page.goto(URL_ + '/#token=' + TOKEN);
  await page.waitForSelector('#main:not([hidden]) .engine', { timeout: 20000 });
  return { context, page };
}

async function tab(page, name) {
  await page.click('#tab-' + name);
  await page.waitForSelector('#panel-' + name + ':not([hidden])');
}

async function runInConsole(page, targets, code) {
  await tab(page, 'console');
  await page.fill('#console-targets', targets);
  await page.fill('#console-code', code);
  await page.click('#console-run');
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(OUT, name + '.png'), fullPage: false });
}

// -------------------------------------------------------------------- tests

const tests = [];
const test = (name, f) => tests.push({ name, f });

let main; // the signed-in page most tests share

test('signin_link_moves_token_out_of_address_bar', async (browser) => {
  const { page } = main = await signedIn(browser, 'main');
  check(!page.url().includes(TOKEN) && !page.url().includes('#token'),
    'the token is still in the address bar: ' + page.url());
  const stored = await page.evaluate(() => sessionStorage.getItem('ippc.token'));
  check(stored === TOKEN, 'the token should be in sessionStorage');
  const hist = await page.evaluate(() => location.href);
  check(!hist.includes('token'), 'the history entry keeps the token: ' + hist);
  // The grid: 4 engines of one MPI job, idle, by colour and by word.
  await until('4 idle engines', async () =>
    (await page.locator('.engine[data-state=idle]').count()) === 4);
  const words = await page.locator('.engine .state').allTextContents();
  check(words.length === 4 && words.every((w) => w === 'idle'), 'states: ' + words);
  const jobs = await page.locator('.job-title').allTextContents();
  check(jobs.length === 1 && /4 ranks/.test(jobs[0]), 'one MPI job of 4: ' + jobs);
  const ranks = await page.locator('.engine .f-rank').allTextContents();
  check(JSON.stringify(ranks) === JSON.stringify(['0 / 4', '1 / 4', '2 / 4', '3 / 4']), 'ranks: ' + ranks);
  const colour = await page.locator('.engine .state').first().evaluate((el) => getComputedStyle(el).backgroundColor);
  check(colour !== 'rgba(0, 0, 0, 0)', 'the state badge has a colour');
  // Memory comes with the heartbeats.
  await until('memory shown', async () => /[KMG]iB/.test(await page.locator('.engine .f-mem').first().textContent()), 15000);
  // A reload stays signed in (sessionStorage), with nothing in the URL.
  await page.reload();
  await page.waitForSelector('#main:not([hidden]) .engine');
  await shot(page, 'engines');
});

test('wrong_token_gets_a_clear_message', async (browser) => {
  const allow = [/status of 401/];
  const { context, page } = await newPage(browser, 'wrong-token', undefined, allow);
  try {
    await page.goto(URL_ + '/#token=' + 'f'.repeat(64));
    await page.waitForSelector('#signin:not([hidden])');
    const msg = await until('a message', async () => (await page.locator('#signin-error').textContent()).trim());
    check(/token was not accepted/i.test(msg), 'message: ' + msg);
    check(!page.url().includes('#token'), 'the wrong token stays in the address bar');
    check(await page.evaluate(() => sessionStorage.getItem('ippc.token')) === null,
      'a refused token must not be kept');
    check(await page.locator('#main').isHidden(), 'the dashboard must stay hidden');
    await shot(page, 'signin-wrong-token');
    // Pasting the right one signs in.
    await page.fill('#token-input', TOKEN);
    await page.press('#token-input', 'Enter');
    await page.waitForSelector('#main:not([hidden]) .engine', { timeout: 20000 });
    check((await page.locator('#signin-error').textContent()) === '' || await page.locator('#signin').isHidden(),
      'the message should be gone after signing in');
  } finally {
    await context.close();
  }
});

test('console_runs_the_seed_psum_side_by_side', async () => {
  const { page } = main;
  // The seed's set-up (run psum.lua, scatter arange(16)), as another client.
  await api('POST', '/api/v1/views/all/run', { filename: 'psum.lua', source: PSUM });
  await api('POST', '/api/v1/views/all/scatter', { name: 'a', data: [...Array(16).keys()] });
  await runInConsole(page, 'all', 'totalsum = psum(a)\nprint("rank " .. mpi.rank() .. " has " .. a:sum())\nreturn totalsum');
  await page.waitForSelector('#console-state:text("done")', { timeout: 30000 });
  const cells = page.locator('#console-out .cell');
  check(await cells.count() === 4, 'one cell per engine');
  const sums = [6, 22, 38, 54];
  for (let i = 0; i < 4; i++) {
    const text = await cells.nth(i).textContent();
    check(text.includes('[' + i + ']') && text.includes('Out: 120') && text.includes('has ' + sums[i]),
      `engine ${i}'s cell: ${text}`);
  }
  // Cells sit side by side at 1280 px.
  const boxes = await Promise.all([0, 1].map((i) => cells.nth(i).boundingBox()));
  check(Math.abs(boxes[0].y - boxes[1].y) < 2 && boxes[1].x > boxes[0].x, 'cells should be side by side');
  await shot(page, 'console');
  // The engine buttons edit the targets.
  await page.fill('#console-targets', 'all');
  await page.locator('#console-target-chips button[aria-label="engine 1"]').click();
  check(await page.inputValue('#console-targets') === '0,2,3', 'a chip takes engine 1 out');
  // (the buttons are drawn in the next frame)
  await until('its button not pressed', async () =>
    await page.locator('#console-target-chips button[aria-label="engine 1"]').getAttribute('aria-pressed') === 'false', 5000);
  await page.locator('#console-target-chips button[aria-label="engine 1"]').click();
  check(await page.inputValue('#console-targets') === 'all', 'and back in');
  // An error shows its traceback in its engine's cell.
  await runInConsole(page, '1', 'error("boom")');
  await page.waitForSelector('#console-state:text("done (with errors)")', { timeout: 30000 });
  const err = await page.locator('#console-out .cell').first().textContent();
  check(/boom/.test(err) && /traceback/i.test(err), 'traceback: ' + err);
  // History: ArrowUp at the first line brings back the last run.
  await page.fill('#console-code', '');
  await page.focus('#console-code');
  await page.keyboard.press('ArrowUp');
  check(await page.inputValue('#console-code') === 'error("boom")', 'ArrowUp: the last run');
  await page.keyboard.press('ArrowUp');
  check((await page.inputValue('#console-code')).startsWith('totalsum = psum(a)'), 'ArrowUp twice');
  await page.keyboard.press('Control+End'); // the last line: ArrowDown walks forward
  await page.keyboard.press('ArrowDown');
  check(await page.inputValue('#console-code') === 'error("boom")', 'ArrowDown: the next run');
  await page.keyboard.press('ArrowDown');
  check(await page.inputValue('#console-code') === '', 'ArrowDown back to the draft');
});

test('console_streams_stdout_live_and_interrupts', async () => {
  const { page } = main;
  const code = `print("one") ${wait(0.3)} print("two") ${wait(0.3)} print("three")\nwhile true do end`;
  await runInConsole(page, '0,1', code);
  // All three lines while the run is still going.
  for (const i of [0, 1]) {
    await until(`engine ${i} streams three lines`, async () =>
      /one\s+two\s+three/.test(await page.locator(`#console-out .cell[data-engine="${i}"] .out`).textContent()), 20000);
  }
  check(/running/.test(await page.locator('#console-state').textContent()), 'the run must still be going');
  check(await page.locator('#console-interrupt').isEnabled(), 'Interrupt must be enabled');
  await page.click('#console-interrupt');
  await page.waitForSelector('#console-state:text("done")', { timeout: 30000 });
  const states = await page.locator('#console-out .cell .state').allTextContents();
  check(states.length === 2 && states.every((s) => s === 'aborted'), 'interrupted cells: ' + states);
  const text = await page.locator('#console-out .cell').first().textContent();
  check(/one\s+two\s+three/.test(text) && /interrupted/.test(text), 'stdout and why it stopped: ' + text);
});

test('task_details_stream_abort_and_resubmit', async () => {
  const { page } = main;
  const long = await api('POST', '/api/v1/tasks', { code: `print("started") ${wait(0.2)} print("still going")\nwhile true do end`, tags: ['browser-long'] });
  await tab(page, 'tasks');
  await page.fill('#filter-tag', 'browser-long');
  const row = page.locator(`#task-rows button:text-is("#${long.id}")`);
  await row.waitFor({ timeout: 20000 });
  await row.click();
  const details = page.locator('#task-details');
  await until('code and live stdout in the details', async () => {
    const t = await details.textContent();
    return t.includes('while true do end') && /still going/.test(await details.locator('pre.stdout').textContent());
  });
  await until('running', async () => (await details.locator('.state').first().textContent()) === 'running');
  await shot(page, 'task-details');
  await details.locator('#task-abort').click();
  await until('aborted', async () => (await details.locator('.state').first().textContent()) === 'aborted', 20000);
  const rec = await api('GET', `/api/v1/tasks/${long.id}`);
  check(rec.state === 'aborted', 'the controller says ' + rec.state);
  // A finished task: its result, and Resubmit makes a new one.
  const quick = await api('POST', '/api/v1/tasks?block=true', { code: 'return 6 * 7', tags: ['browser-quick'] });
  check(quick.result === 42, 'quick task: ' + JSON.stringify(quick));
  await page.fill('#filter-tag', 'browser-quick');
  await page.locator(`#task-rows button:text-is("#${quick.id}")`).click();
  await until('result 42', async () => (await details.locator('pre.result').textContent()) === '42');
  await details.locator('#task-resubmit').click();
  await until('the resubmitted task opens', async () => {
    const h3 = await details.locator('h3').textContent();
    const m = /#(\d+)/.exec(h3);
    return m && Number(m[1]) > quick.id && (await details.locator('pre.result').count()) === 1 &&
      (await details.locator('pre.result').textContent()) === '42';
  });
  // Filters: state.
  await page.fill('#filter-tag', '');
  await page.selectOption('#filter-state', 'aborted');
  await until('only aborted rows', async () => {
    const states = await page.locator('#task-rows .state').allTextContents();
    return states.length >= 1 && states.every((s) => s === 'aborted');
  });
  await page.selectOption('#filter-state', '');
  await page.click('#task-details .close');
});

test('array_pushed_to_engine_0_is_plotted', async () => {
  const { page } = main;
  const wave = Array.from({ length: 500 }, (_, i) => Math.sin(i / 25) * 10 + i / 50);
  await api('PUT', '/api/v1/views/0/vars/wave', wave);
  await api('PUT', '/api/v1/views/0/vars/grid', Array.from({ length: 12 }, (_, r) => Array.from({ length: 16 }, (_, c) => r * c)));
  const raw = [];
  page.on('response', (r) => {
    if (/\/vars\/(wave|grid)$/.test(new URL(r.url()).pathname)) raw.push(r.headers()['content-type']);
  });
  await tab(page, 'data');
  await page.selectOption('#data-engine', '0');
  await page.click('#data-refresh');
  await page.locator('#var-rows button[aria-label="plot wave"]').click();
  await page.waitForSelector('#plot-caption:text("wave on engine 0")');
  const caption = await page.locator('#plot-caption').textContent();
  check(/float64\[500\]/.test(caption), 'caption: ' + caption);
  const sum = Number(await page.locator('#plot').getAttribute('data-sum'));
  const want = wave.reduce((a, b) => a + b, 0);
  check(Math.abs(sum - want) < 1e-6 * Math.abs(want) + 1e-9, `the page plotted other data: sum ${sum}, pushed ${want}`);
  check(raw.length >= 1 && raw.every((t) => t === 'application/octet-stream'),
    'the array must come through the binary path: ' + raw);
  // The canvas holds a drawn line: many pixels of the line's blue.
  const blue = await page.evaluate(() => {
    const c = document.querySelector('#plot-canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i + 2] > 150 && d[i] < 100) n++;
    return n;
  });
  check(blue > 300, 'the line plot has ' + blue + ' blue pixels');
  await shot(page, 'data-plot');
  // A 2-D array: a heat map (many distinct colours).
  await page.locator('#var-rows button[aria-label="plot grid"]').click();
  await page.waitForSelector('#plot-caption:text("grid on engine 0")');
  check(/heat map/.test(await page.locator('#plot-caption').textContent()), 'a 2-D array is a heat map');
  const colours = await page.evaluate(() => {
    const c = document.querySelector('#plot-canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] === 255) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    return seen.size;
  });
  check(colours >= 20, 'the heat map has ' + colours + ' colours');
  await api('DELETE', '/api/v1/views/0/vars/wave');
  await api('DELETE', '/api/v1/views/0/vars/grid');
});

test('burst_of_tiny_tasks_keeps_the_page_responsive', async () => {
  const { page } = main;
  await tab(page, 'tasks');
  await page.evaluate(() => {
    const mon = { maxGap: 0, longest: 0, frames: 0, stop: false };
    window.__mon = mon;
    let last = performance.now();
    const frame = (t) => {
      mon.maxGap = Math.max(mon.maxGap, t - last);
      last = t;
      mon.frames++;
      if (!mon.stop) requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) mon.longest = Math.max(mon.longest, e.duration);
    }).observe({ type: 'longtask' });
  });
  await api('POST', '/api/v1/views/all/execute', { code: 'function inc(x) return x + 1 end' });
  const N = 2000;
  const ids = [];
  const batches = [];
  for (let b = 0; b < N / 500; b++) {
    batches.push(api('POST', '/api/v1/tasks', Array.from({ length: 500 }, (_, i) => ({ code: `return ${b * 500 + i}`, tags: ['burst'] }))));
  }
  for (const r of await Promise.all(batches)) ids.push(...r.ids);
  const map = await api('POST', '/api/v1/map?block=false', { function: 'inc', sequences: [Array.from({ length: 400 }, (_, i) => i)], chunksize: 1 });
  // While it runs, the page still answers input: switch tabs and back.
  await tab(page, 'throughput');
  await page.waitForSelector(`#maps li[data-map="${map.request}"]`, { timeout: 30000 });
  await shot(page, 'throughput');
  await tab(page, 'tasks');
  const last = Math.max(...ids);
  await until('the last burst task done', async () =>
    (await api('GET', `/api/v1/tasks/${last}?wait=20`)).state === 'completed', 90000, 10);
  const final = await api('GET', `/api/v1/requests/${map.request}?wait=60`);
  check(final.status === 'ok', 'the map: ' + JSON.stringify(final).slice(0, 200));
  // The page caught up: the newest task is on top, and it completed.
  await until('the table shows the newest task', async () => {
    const top = await page.locator('#task-rows tr').first().textContent();
    const n = Number(/#(\d+)/.exec(top)?.[1]);
    return n >= last;
  }, 20000);
  await shot(page, 'tasks');
  await tab(page, 'throughput');
  await until('the map\'s bar is full', async () => {
    const bar = page.locator(`#maps li[data-map="${map.request}"] progress`);
    return Number(await bar.getAttribute('value')) === 400 || (await bar.evaluate((b) => b.value === b.max && b.max === 400));
  }, 20000);
  const mon = await page.evaluate(() => { window.__mon.stop = true; return window.__mon; });
  console.log(`# burst: ${N} tasks + a map of 400; longest main-thread task ${mon.longest.toFixed(0)} ms, ` +
    `longest frame gap ${mon.maxGap.toFixed(0)} ms over ${mon.frames} frames`);
  check(mon.frames > 10, 'frames must keep coming: ' + mon.frames);
  check(mon.longest < 1000, `a main-thread task took ${mon.longest.toFixed(0)} ms (> 1 s)`);
});

test('keyboard_reaches_the_main_controls', async () => {
  const { page } = main;
  await tab(page, 'engines');
  await page.evaluate(() => document.activeElement?.blur());
  const seen = [];
  for (let i = 0; i < 6; i++) {
    await page.keyboard.press('Tab');
    seen.push(await page.evaluate(() => document.activeElement?.id || document.activeElement?.tagName));
  }
  check(seen.includes('tab-engines') && seen.includes('sign-out'), 'Tab order from the top: ' + seen);
  await page.focus('#tab-engines');
  await page.keyboard.press('ArrowRight');
  check(await page.evaluate(() => document.activeElement.id) === 'tab-tasks' &&
    await page.locator('#panel-tasks').isVisible(), 'ArrowRight selects the next tab');
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('ArrowLeft');
  check(await page.locator('#panel-console').isVisible(), 'the console tab by arrows');
  // Into the console: targets, the engine chips, the code, Run.
  const order = [];
  for (let i = 0; i < 10; i++) {
    await page.keyboard.press('Tab');
    order.push(await page.evaluate(() => document.activeElement.id || document.activeElement.getAttribute('aria-label')));
    if (order[order.length - 1] === 'console-code') break;
  }
  check(order[0] === 'console-targets' && order.includes('engine 0') && order.at(-1) === 'console-code',
    'Tab through the console: ' + order);
  await page.keyboard.press('Control+A');
  await page.keyboard.type('return 1 + 1');
  await page.keyboard.press('Control+Enter');
  await page.waitForSelector('#console-state:text("done")', { timeout: 30000 });
  check((await page.locator('#console-out .cell').first().textContent()).includes('Out: 2'), 'Ctrl+Enter ran it');
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement.id) === 'console-run', 'Tab to Run');
  // The task table's rows open by keyboard too.
  await tab(page, 'tasks');
  await page.locator('#task-rows button').first().focus();
  await page.keyboard.press('Enter');
  await page.waitForSelector('#task-details:not([hidden])');
  await until('focus in the details', async () => page.evaluate(() =>
    document.querySelector('#task-details').contains(document.activeElement)), 5000);
  await page.keyboard.press('Escape');
  check(await page.locator('#task-details').isHidden(), 'Escape closes the details');
});

test('phone_width_has_no_horizontal_overflow', async (browser) => {
  // The newest task: a page opened now lists it first (the history is
  // paged oldest first; the page must find the newest).
  const newest = await api('POST', '/api/v1/tasks?block=true', { code: 'return 0' });
  const { context, page } = await signedIn(browser, 'phone', { width: 390, height: 844 });
  try {
    await tab(page, 'tasks');
    await until('the newest task first', async () =>
      (await page.locator('#task-rows button').first().textContent()) === '#' + newest.id);
    for (const name of ['engines', 'tasks', 'console', 'data', 'throughput']) {
      await tab(page, name);
      await page.waitForTimeout(300);
      const o = await page.evaluate(() => ({ sw: document.documentElement.scrollWidth, cw: document.documentElement.clientWidth, bw: document.body.scrollWidth }));
      check(o.sw <= o.cw && o.bw <= o.cw, `${name}: the page is ${Math.max(o.sw, o.bw)} px wide in a ${o.cw} px screen`);
      if (name === 'engines' || name === 'tasks') await shot(page, 'phone-' + name);
    }
  } finally {
    await context.close();
  }
});

test('restart_with_a_new_token_sends_the_page_to_sign_in', async (browser) => {
  // A controller of its own (no engines), stopped and started again on the
  // same port: a new token.  The page's stream cannot reconnect; the page
  // must notice the token is gone and ask for the new one.
  const dir = fs.mkdtempSync(path.join(process.env.IPPC_DIR || '/tmp', 'restart-'));
  const file = path.join(dir, 'profile_restart', 'security', 'ippc-client.json');
  const procs = [];
  const start = async (port) => {
    try { fs.unlinkSync(file); } catch { /* first start */ }
    const p = spawn(process.env.IPPC_CONTROLLER, ['--port', String(port), '--ippc-dir', dir,
      '--profile', 'restart', '--db', 'memory', '--fresh'], { stdio: 'ignore' });
    procs.push(p);
    const info = await until('the controller\'s connection file', async () =>
      JSON.parse(fs.readFileSync(file, 'utf8')), 20000);
    return { ...info, proc: p };
  };
  const stop = (p) => new Promise((resolve) => {
    if (p.exitCode !== null) return resolve();
    p.once('exit', resolve);
    p.kill('SIGTERM');
  });
  const allow = [/status of 401/, /WebSocket connection/, /ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET/];
  const { context, page } = await newPage(browser, 'restart', undefined, allow);
  try {
    const a = await start(0);
    await page.goto(a.url + '/#token=' + a.token);
    await page.waitForSelector('#main:not([hidden])', { timeout: 20000 });
    await page.waitForSelector('#link-state[data-state=live]');
    await stop(a.proc);
    const b = await start(Number(new URL(a.url).port));
    check(b.token !== a.token, 'the restarted controller should have a new token');
    await page.waitForSelector('#signin:not([hidden])', { timeout: 40000 });
    const msg = await page.locator('#signin-error').textContent();
    check(/no longer accepted/.test(msg), 'message: ' + msg);
    check(await page.evaluate(() => sessionStorage.getItem('ippc.token')) === null, 'the old token must be forgotten');
    await page.fill('#token-input', b.token);
    await page.press('#token-input', 'Enter');
    await page.waitForSelector('#main:not([hidden])', { timeout: 20000 });
  } finally {
    await context.close();
    for (const p of procs) await stop(p);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('second_mpi_job_is_grouped_and_its_killed_engine_turns_dead', async () => {
  // A one-rank MPI job joins: a second group; SIGKILL its engine: that card
  // turns dead, the 4 of the first job stay idle.
  const { page } = main;
  await tab(page, 'engines');
  const job = spawn(process.env.IPPC_MPIEXEC || 'mpiexec.mpich',
    ['-n', '1', process.env.IPPC_ENGINE, '--file', process.env.IPPC_ENGINE_FILE], { stdio: 'ignore' });
  try {
    await until('two MPI jobs, 5 engines', async () =>
      (await page.locator('.job').count()) === 2 && (await page.locator('.engine').count()) === 5, 30000);
    const titles = await page.locator('.job-title').allTextContents();
    check(/4 ranks/.test(titles[0]) && /1 rank\b/.test(titles[1]), 'job titles: ' + titles);
    const single = (await api('GET', '/api/v1/engines')).engines.find((e) => e.size === 1);
    check(single && single.id === 4, 'the new engine is id 4: ' + JSON.stringify(single));
    const card = page.locator('.engine[data-engine="4"]');
    await until('engine 4 idle', async () => (await card.getAttribute('data-state')) === 'idle');
    process.kill(single.pid, 'SIGKILL');
    await until('engine 4 dead in the grid', async () =>
      (await card.getAttribute('data-state')) === 'dead' && (await card.locator('.state').textContent()) === 'dead', 30000);
    const others = await page.locator('.job').first().locator('.engine .state').allTextContents();
    check(others.length === 4 && others.every((s) => s === 'idle'), 'the first job: ' + others);
    await shot(page, 'engine-dead');
  } finally {
    if (job.exitCode === null) job.kill('SIGTERM');
  }
});

// --------------------------------------------------------------------- run

async function main_() {
  let passed = 0, failed = 0;
  check(URL_ && TOKEN, 'IPPC_URL and IPPC_TOKEN must be set');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const stop = async () => { try { await browser.close(); } catch { /* gone */ } };
  process.on('SIGTERM', () => stop().then(() => process.exit(143)));
  process.on('SIGINT', () => stop().then(() => process.exit(130)));
  try {
    for (const t of tests) {
      const started = Date.now();
      let timer;
      try {
        await Promise.race([t.f(browser), new Promise((_, rej) => {
          timer = setTimeout(() => rej(new Error(`timed out after ${TEST_TIMEOUT_MS} ms`)), TEST_TIMEOUT_MS);
        })]);
        passed++;
        console.log(`PASS ${t.name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
      } catch (e) {
        failed++;
        console.log(`FAIL ${t.name}: ${(e && e.message || String(e)).split('\n').slice(0, 6).join('\n    ')}`);
        if (main?.page) await main.page.screenshot({ path: path.join(OUT, 'fail-' + t.name + '.png') }).catch(() => {});
      } finally {
        clearTimeout(timer);
      }
    }
    // No page logged an error or threw, in any test.
    if (problems.length) {
      failed++;
      console.log('FAIL no_console_errors: ' + problems.slice(0, 10).join('\n    '));
    } else {
      passed++;
      console.log('PASS no_console_errors');
    }
  } finally {
    await stop();
  }
  console.log(`browser-page: ${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main_().catch((e) => {
  console.log('FAIL browser_start: ' + (e && e.stack || e));
  console.log('browser-page: 0 passed, 1 failed');
  process.exitCode = 1;
});
