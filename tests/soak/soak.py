#!/usr/bin/python3
"""soak.py — a bounded soak of one ippc cluster: good clients, hostile clients
and engine churn at the same time, then a list of checks.

    /usr/bin/python3 tests/soak/soak.py [--seconds 180] [--attacks all|a,b,-c]

Starts its own cluster (tests/integration/harness.py: a controller and one
`mpiexec -n 4` engine job, private IPPC_DIR), then for --seconds runs from
several threads:

  * good REST clients: execute (with mpi.rank and mpi.allreduce), push/pull
    of small JSON arrays and of 1e5-element float64 arrays as raw
    application/octet-stream, scatter/gather, balanced tasks (POST
    /api/v1/tasks, one blocking or a batch), POST /api/v1/map, GET
    /api/v1/tasks queries — every answer is checked against what was sent;
  * good WebSocket clients (/ws): request-channel ops, submits followed by
    their task.completed events, and disconnect + reconnect + resume;
  * a stream monitor: one /ws client for the whole run that checks event
    seqs and notices engine deaths;
  * bad clients (--attacks, see ATTACKS): every one must get its documented
    JSON error, a refused upgrade or a closed connection;
  * engine churn: every --churn seconds a new `mpiexec -n 4` job starts and
    the oldest is SIGKILLed (by the ranks' pids).

A failure of a good request is only excused when engine churn explains it:
an EngineLost result (or 422 no_engines, or a map/gather error) naming an
engine of a job this script killed — or of a job that an attack broke and
that was replaced at once (that attack then fails on its own).  Prints a progress line every --progress seconds, a summary
table, one PASS/FAIL line per check and `soak: N passed, N failed`; exit
status 1 when any check failed.  Standard library only; all traffic goes to
the cluster it started on 127.0.0.1; every loop is bounded in count and time.
"""

import argparse
import array
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import harness  # noqa: E402
from wsclient import (OP_CONT, OP_PING, OP_TEXT, Closed,  # noqa: E402
                      HandshakeError, WebSocket, WebSocketError, encode_frame)

MB = 1 << 20
HTTP_TIMEOUT = 60          # a good request that takes longer is a failure
TASK_TIMEOUT = 120         # balanced tasks may wait for a replacement engine job
REQUEST_CHANNEL_TIMEOUT = 60
EVENT_TIMEOUT = 30         # a task.completed a /ws client waits for

# Each attack: (what it does, seconds it must rest between two runs).  The
# last six are the known defects of issue 8, sized for a 2-core machine.
ATTACKS = {
    "rest_auth": ("REST with no, wrong, prefix or Basic token: 401 unauthorized", 0),
    "ws_auth": ("/ws upgrades with no or wrong token (header, query, subprotocol): 401", 0),
    "engine_auth": ("/engine: register with a wrong or no key, or no register first: "
                    "error + close", 0),
    "garbage": ("random bytes, a 100 KB request line, garbage headers on /ws: 4xx or close",
                0),
    "bad_json": ("malformed and 100,000-deep JSON on REST and /ws: 400 bad_request", 0),
    "huge_length": ("Content-Length 1e12 / 100 MB with no body: 413 before the body", 10),
    "slowloris": ("half request lines and headers held open: closed by the server in time, "
                  "others served meanwhile", 25),
    "ws_bad_frames": ("RSV bits, unknown opcode, stray continuation, long ping, binary "
                      "garbage, invalid UTF-8: error or close", 0),
    "ws_oversize": ("a 17 MiB /ws message (one frame or 1 MiB fragments): error + close 1009",
                    20),
    "ping_flood": ("3,000 WS pings + 1,000 {op:ping} in one burst: all answered or closed",
                   8),
    "vanish": ("connect-and-vanish: TCP, half upgrade, RST mid-stream, waiting requests "
               "abandoned", 0),
    # Known defects (issue 8), kept as checks.
    "ws_engine_subprotocol": ("/ws upgrade naming ippc.engine.v1 without a key: refused, no "
                              "engine marked dead, every engine still gets tasks", 25),
    "ws_unauth_silence": ("unauthenticated /ws upgrades (401) must not silence live streams",
                          15),
    "body_before_auth": ("an unauthenticated POST announcing 8 MiB: 401 before the body", 15),
    "silent_conns": ("200 silent TCP connections: others served meanwhile, all closed by the "
                     "acceptor in time", 25),
    "nbuf_bypass": ("{op:ping,nbuf:4096} then 20 x 1 MiB binary frames: refused (the /ws "
                    "limit is 16 MiB)", 15),
    "big_json_push": ("one 8 MB JSON push: answered, REST stays responsive meanwhile", 50),
}
KNOWN_DEFECTS = ("ws_engine_subprotocol", "ws_unauth_silence", "body_before_auth",
                 "silent_conns", "nbuf_bypass", "big_json_push")
RSS_BOUND_MB = 200
# A sanitizer build (make test SAN=1) holds far more than the controller does:
# ASan keeps up to 256 MiB of freed memory in quarantine and pads every
# allocation with redzones (the same soak ends ~+490 MB there, ~+135 MB
# without), so the default bound scales with it.
if os.path.basename(os.path.normpath(harness.BUILD)) == "san":
    RSS_BOUND_MB = 3 * RSS_BOUND_MB


def now():
    return time.monotonic()


def short(obj, n=300):
    text = obj if isinstance(obj, str) else json.dumps(obj, default=repr)
    return text if len(text) <= n else text[:n] + "..."


# ---------------------------------------------------------------- bookkeeping

class Tally:
    """Outcomes by kind: ok, expected (with a reason), unexpected (with the
    first messages).  Thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows = {}        # kind -> {"ok", "expected", "unexpected", "reasons", "msgs"}
        self.order = []

    def _row(self, kind):
        row = self.rows.get(kind)
        if row is None:
            row = {"ok": 0, "expected": 0, "unexpected": 0, "reasons": {}, "msgs": []}
            self.rows[kind] = row
            self.order.append(kind)
        return row

    def ok(self, kind, n=1):
        with self.lock:
            self._row(kind)["ok"] += n

    def expected(self, kind, reason):
        with self.lock:
            row = self._row(kind)
            row["expected"] += 1
            row["reasons"][reason] = row["reasons"].get(reason, 0) + 1

    def unexpected(self, kind, msg):
        with self.lock:
            row = self._row(kind)
            row["unexpected"] += 1
            if len(row["msgs"]) < 5:
                row["msgs"].append(msg)
        sys.stdout.write("# unexpected %s: %s\n" % (kind, short(msg, 400)))
        sys.stdout.flush()

    def totals(self):
        with self.lock:
            ok = sum(r["ok"] for r in self.rows.values())
            exp = sum(r["expected"] for r in self.rows.values())
            bad = {k: r["unexpected"] for k, r in self.rows.items() if r["unexpected"]}
            churn = sum(r["reasons"].get("engine churn", 0) for r in self.rows.values())
        return ok, exp, churn, bad

    def row(self, kind):
        with self.lock:
            r = self.rows.get(kind)
            return dict(r) if r else None


class Engines:
    """The live engine jobs as the controller lists them, minus the jobs
    this script killed, and the churn that replaces them."""

    def __init__(self, soak):
        self.soak = soak
        self.lock = threading.Lock()
        self.groups = {}          # job -> sorted live ids
        self.size = {}            # job -> MPI size
        self.rank = {}            # engine id -> rank
        self.killed = set()       # ids of engines in jobs we killed
        self.killed_jobs = []
        self.attack_dead = {}     # id -> attack that made the controller drop it
        self.started_jobs = 0
        self.replace = []         # jobs to replace at once (broken by an attack)
        self.job_order = []       # jobs, oldest first
        self.live_count = 0
        self.job_of_id = {}       # engine id -> job

    def refresh(self):
        engines = self.soak.api.engines()
        groups, size, rank = {}, {}, {}
        with self.lock:
            for e in engines:
                job = str(e.get("job"))
                rank[e["id"]] = e.get("rank")
                self.job_of_id[e["id"]] = job
                size[job] = e.get("size")
                if e.get("state") != "dead" and e["id"] not in self.killed \
                        and e["id"] not in self.attack_dead:
                    groups.setdefault(job, []).append(e["id"])
                if job not in self.job_order:
                    self.job_order.append(job)
            self.groups = {j: sorted(ids) for j, ids in groups.items()}
            self.size, self.rank = size, rank
            self.live_count = sum(1 for e in engines if e.get("state") != "dead")
        return engines

    def pick(self, rng, full=False):
        """A random live job's ids (full: only a job with all its ranks)."""
        with self.lock:
            choices = [ids for job, ids in self.groups.items()
                       if not full or len(ids) == self.size.get(job)]
            return list(rng.choice(choices)) if choices else None

    def ranks(self, ids):
        with self.lock:
            return [self.rank.get(i) for i in ids]

    def explain(self, eid, grace=15.0):
        """Why engine eid may have failed a request: "engine churn" if we
        killed its job, "attack:NAME" if an attack made the controller drop
        it (that attack is failed on its own), None if nothing explains it.
        Waits up to grace seconds: the bookkeeping may trail the error."""
        deadline = now() + grace
        while True:
            with self.lock:
                if eid in self.attack_dead:
                    return "attack:" + self.attack_dead[eid]
                if eid in self.killed:
                    return "engine churn"
            if now() >= deadline:
                return None
            time.sleep(0.2)

    def mark_killed(self, ids, job):
        with self.lock:
            self.killed |= set(ids)
            self.killed_jobs.append(job)
            self.groups.pop(job, None)

    def blame(self, jobs, attack):
        """Engine jobs an attack broke (the controller dropped or stopped
        serving some of their engines): replaced at once, since their other
        ranks may wait in a collective for a rank that never gets the task.
        Failures on their engines are put down to that attack, which fails
        on its own."""
        with self.lock:
            for j in jobs:
                for i in self.groups.pop(j, []):
                    self.attack_dead[i] = attack
                for i, job in self.job_of_id.items():
                    if job == j:
                        self.attack_dead.setdefault(i, attack)
            self.replace.extend(jobs)

    def live_groups(self):
        with self.lock:
            return {j: list(ids) for j, ids in self.groups.items()}


class Holder:
    """Sockets a bad client left open on purpose; polled by the housekeeping
    thread.  Each must be closed by the server before its deadline (None:
    no deadline, anything goes); what it answered must be an HTTP 4xx or
    nothing."""

    def __init__(self, tally):
        self.tally = tally
        self.lock = threading.Lock()
        self.items = []   # [sock, kind, label, opened, deadline, bytes]

    def hold(self, sock, kind, label, close_within):
        sock.setblocking(False)
        with self.lock:
            self.items.append([sock, kind, label, now(),
                               None if close_within is None else now() + close_within,
                               bytearray()])

    def open_count(self):
        with self.lock:
            return len(self.items)

    def poll(self):
        with self.lock:
            items = list(self.items)
        done = []
        for it in items:
            sock, kind, label, opened, deadline, got = it
            closed = False
            try:
                for i in range(16):   # non-blocking: what has arrived, bounded
                    chunk = sock.recv(65536)
                    if not chunk:
                        closed = True
                        break
                    got += chunk[:4096 - len(got)] if len(got) < 4096 else b""
            except BlockingIOError:
                pass
            except OSError:   # reset
                closed = True
            if closed:
                done.append(it)
                status = http_status(bytes(got))
                if got and not (status and 400 <= status < 500):
                    self.tally.unexpected(kind, "%s: answered %r before closing"
                                          % (label, bytes(got[:200])))
                else:
                    self.tally.expected(kind, "closed by the server")
            elif deadline is not None and now() > deadline:
                done.append(it)
                self.tally.unexpected(kind, "%s: still open %.0f s after it was opened (the "
                                      "server should have closed it)" % (label, now() - opened))
        if done:
            with self.lock:
                self.items = [x for x in self.items if x not in done]
            for it in done:
                try:
                    it[0].close()
                except OSError:
                    pass

    def finish(self):
        """End of the run: what is still open within its deadline is fine."""
        self.poll()
        with self.lock:
            items, self.items = self.items, []
        for sock, kind, label, opened, deadline, got in items:
            self.tally.expected(kind, "held until the end (within its timeout)")
            try:
                sock.close()
            except OSError:
                pass


def http_status(raw):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw or b"")
    return int(m.group(1)) if m else None


def json_error_code(raw):
    """The error code of an HTTP answer whose body is {"error":{"code"}}."""
    head, _, body = (raw or b"").partition(b"\r\n\r\n")
    try:
        doc = json.loads(body.decode("utf-8"))
        return doc["error"]["code"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------- the stream monitor

class Monitor:
    """One /ws client for the whole run (reconnecting with resume if it is
    cut): checks that seqs increase by one, records engine deaths and
    task.completed events (the probes wait on them)."""

    def __init__(self, soak):
        self.soak = soak
        self.cond = threading.Condition()
        self.completed = {}      # task id -> state
        self.deaths = {}         # engine id -> reason
        self.contig = None        # every seq <= contig has arrived
        self.ahead = set()        # seqs above contig that arrived
        self.ahead_since = None   # when the oldest hole above contig appeared
        self.resumed_at = -1e9
        self.last_event = now()
        self.events = 0
        self.reconnects = 0
        self.silences = []       # times the stream was silent long enough to reconnect
        self.ws = None

    def connect(self, resume):
        ws = WebSocket.connect(self.soak.ws_url, token=self.soak.token, timeout=15)
        snap = ws.recv_json(timeout=15)
        if snap.get("type") != "snapshot":
            raise harness.Failure("first message is not the snapshot: %s" % short(snap))
        if resume and self.contig is not None:
            ws.send_json({"op": "resume", "since": self.contig})
            self.resumed_at = now()
        elif self.contig is None:
            self.contig = snap.get("seq")
        self.ws = ws

    def advance(self, to):
        """contig = max(contig, to), then over every seq that arrived."""
        self.contig = max(self.contig or 0, to)
        self.ahead = {q for q in self.ahead if q > self.contig}
        while self.contig + 1 in self.ahead:
            self.contig += 1
            self.ahead.discard(self.contig)
        self.ahead_since = (self.ahead_since or now()) if self.ahead else None

    def check_holes(self):
        """A hole below an arrived seq that stays 10 s: those events are lost."""
        if self.ahead_since is not None and now() - self.ahead_since > 10:
            first = min(self.ahead)
            self.soak.tally.unexpected("stream monitor", "events lost: seqs %d..%d never arrived "
                                       "(%d later ones did)" % (self.contig + 1, first - 1,
                                                                len(self.ahead)))
            self.ahead_since = None
            self.advance(first - 1)

    def run(self):
        soak, kind = self.soak, "stream monitor"
        try:
            self.connect(False)
        except (OSError, WebSocketError, ValueError, harness.Failure) as e:
            soak.tally.unexpected(kind, "cannot connect: %r" % e)
            return
        soak.tally.ok(kind)
        while not soak.stop.is_set():
            self.check_holes()
            try:
                msg = self.ws.recv_json(timeout=1)
            except TimeoutError:
                if now() - self.last_event > 8:
                    with self.cond:
                        self.silences.append(now())
                    soak.tally.unexpected("live streams", "the monitor's stream was silent for "
                                          "8 s at %.0f s (engines heartbeat every second)%s"
                                          % (now() - soak.started, soak.recent_refusals()))
                    self.reconnect("silent for 8 s")
                continue
            except (Closed, OSError, WebSocketError, ValueError) as e:
                self.reconnect("the connection ended: %r" % e)
                continue
            self.on_message(msg)
        try:
            self.ws.close(timeout=2)
        except (OSError, WebSocketError):
            pass

    def reconnect(self, why):
        soak, kind = self.soak, "stream monitor"
        self.reconnects += 1
        try:
            self.ws.abort()
        except OSError:
            pass
        for attempt in range(20):
            if soak.stop.is_set():
                return
            try:
                self.connect(True)
                self.last_event = now()
                soak.tally.expected(kind, "reconnected + resumed (%s)" % why.split(":")[0])
                return
            except (OSError, WebSocketError, ValueError, harness.Failure) as e:
                last = e
                time.sleep(0.5)
        soak.tally.unexpected(kind, "cannot reconnect after %s: %r" % (why, last))
        soak.stop.wait(5)

    def on_message(self, msg):
        soak, kind = self.soak, "stream monitor"
        if not isinstance(msg, dict):
            soak.tally.unexpected(kind, "a message that is not an object: %s" % short(msg))
            return
        t = msg.get("type")
        self.last_event = now()
        if t == "slow_consumer":
            soak.tally.expected(kind, "cut as a slow consumer")
            return
        if t == "gap":
            soak.tally.expected(kind, "gap after resume")
            self.advance(msg.get("oldest", 1) - 1)
            return
        seq = msg.get("seq")
        if t == "snapshot" or not isinstance(seq, int):
            return
        if seq <= self.contig or seq in self.ahead:
            # Live events may arrive before a resume's replay repeats them.
            if now() - self.resumed_at > 30:
                soak.tally.unexpected(kind, "seq %d (%s) delivered twice" % (seq, t))
        else:
            self.ahead.add(seq)
            self.advance(self.contig)
        self.events += 1
        with self.cond:
            if t == "engine.dead":
                self.deaths[msg.get("engine")] = msg.get("reason")
            elif t == "task.completed":
                self.completed[msg.get("task")] = msg.get("state")
                self.cond.notify_all()

    def wait_completed(self, task_id, timeout):
        deadline = now() + timeout
        with self.cond:
            while task_id not in self.completed:
                left = deadline - now()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 0.5))
            return self.completed[task_id]


# ---------------------------------------------------------------- the soak

class Soak:
    def __init__(self, cluster, args):
        self.cluster = cluster
        self.args = args
        self.api = cluster.api
        self.url = cluster.client_info["url"].rstrip("/")
        self.token = cluster.client_info["token"]
        self.ws_url = cluster.client_info.get("ws_url") or \
            self.url.replace("http://", "ws://", 1) + "/ws"
        self.port = int(self.url.rsplit(":", 1)[1])
        self.stop = threading.Event()
        self.stop_time = None
        self.attackers_done = threading.Event()
        # Held while engine jobs start or die, and by an attack that must
        # see which jobs it harmed without a job registering meanwhile.
        self.churn_lock = threading.RLock()
        self.attackers = 0
        self.tally = Tally()
        self.engines = Engines(self)
        self.holder = Holder(self.tally)
        self.monitor = Monitor(self)
        self.controller_died = None
        self.rss_samples = []
        self.attack_runs = {}     # name -> list of (start, end)
        self.attack_lock = threading.Lock()
        self.attack_last = {}
        self.threads = []
        self.started = now()

    # ------------------------------------------------------------ helpers

    def rest(self, method, path, body=None, timeout=HTTP_TIMEOUT, **kw):
        return harness.http(method, self.url + path, body=body, token=self.token,
                            timeout=timeout, **kw)

    def controller_alive(self):
        return self.cluster.controller.poll() is None

    def spec(self, ids):
        return ",".join(str(i) for i in ids)

    def guarded(self, kind, fn, *a):
        """Runs one client operation; an exception is an unexpected outcome."""
        try:
            fn(*a)
        except harness.Failure as e:
            self.tally.unexpected(kind, str(e))
        except (OSError, WebSocketError, ValueError, harness.HarnessError) as e:
            if self.stop.is_set() and not self.controller_alive():
                return
            self.tally.unexpected(kind, "%s: %s" % (type(e).__name__, e))
        except Exception as e:  # a bug here or a surprising answer
            self.tally.unexpected(kind, "%s: %s\n%s" % (type(e).__name__, e,
                                                          traceback.format_exc()[-1500:]))

    def judge_error(self, kind, status, body, ids, what):
        """A non-200 answer to a good direct-view call: only a 422 whose
        message names a target engine that is not live or died (no_engines,
        or invalid_value for a raw pull) is excused, and only when that
        engine's job was killed."""
        err = body.get("error") if isinstance(body, dict) else None
        err = err if isinstance(err, dict) else {}
        m = re.search(r"engine (\d+) (is not live|died)", str(err.get("message", "")))
        if status == 422 and err.get("code") in ("no_engines", "invalid_value") and m \
                and int(m.group(1)) in ids:
            why = self.engines.explain(int(m.group(1)))
            if why:
                self.tally.expected(kind, why)
                return
        self.tally.unexpected(kind, "%s on %s: HTTP %s %s" % (what, ids, status, short(body)))

    def judge_results(self, kind, status, body, ids, what, value_ok=None):
        """execute/push/scatter answers: one result dict per target.  Returns
        True when every target answered ok (and value_ok liked each)."""
        if status != 200 or not isinstance(body, dict):
            self.judge_error(kind, status, body, ids, what)
            return False
        results = body.get("results")
        if body.get("targets") != ids or not isinstance(results, list) or len(results) != len(ids):
            self.tally.unexpected(kind, "%s: targets/results do not match %s: %s"
                                  % (what, ids, short(body)))
            return False
        excuse = None
        for eid, res in zip(ids, results):
            if not isinstance(res, dict) or res.get("engine") != eid:
                self.tally.unexpected(kind, "%s: result out of order for %d: %s"
                                      % (what, eid, short(body)))
                return False
            if res.get("status") == "ok":
                if value_ok is not None and not value_ok(eid, res):
                    self.tally.unexpected(kind, "%s: wrong answer from engine %d: %s"
                                          % (what, eid, short(res)))
                    return False
                continue
            if res.get("status") == "lost" and res.get("ename") == "EngineLost":
                excuse = self.engines.explain(eid)
                if excuse:
                    continue
            self.tally.unexpected(kind, "%s: engine %d: %s" % (what, eid, short(res)))
            return False
        if excuse:
            self.tally.expected(kind, excuse)
            return False
        self.tally.ok(kind)
        return True

    def judge_values(self, kind, status, body, ids, what, want):
        """pull answers: results are values, failures are in "errors"."""
        if status != 200 or not isinstance(body, dict):
            self.judge_error(kind, status, body, ids, what)
            return False
        results = body.get("results")
        if body.get("targets") != ids or not isinstance(results, list) or len(results) != len(ids):
            self.tally.unexpected(kind, "%s: targets/results do not match %s: %s"
                                  % (what, ids, short(body)))
            return False
        failed = {}
        for err in body.get("errors") or []:
            failed[err.get("engine")] = err
        excuse = None
        for eid, val in zip(ids, results):
            if eid in failed:
                err = failed[eid]
                why = self.engines.explain(eid) if err.get("ename") == "EngineLost" else None
                if not why:
                    self.tally.unexpected(kind, "%s: engine %d: %s" % (what, eid, short(err)))
                    return False
                excuse = why
            elif val != want:
                self.tally.unexpected(kind, "%s: engine %d answered %s, want %s"
                                      % (what, eid, short(val, 120), short(want, 120)))
                return False
        if excuse:
            self.tally.expected(kind, excuse)
            return False
        if body.get("status") != "ok":
            self.tally.unexpected(kind, "%s: status %r without a failed engine: %s"
                                  % (what, body.get("status"), short(body)))
            return False
        self.tally.ok(kind)
        return True

    def judge_task(self, kind, status, body, want, what):
        """A balanced task's document (after it finished)."""
        if status != 200 or not isinstance(body, dict):
            self.tally.unexpected(kind, "%s: HTTP %s %s" % (what, status, short(body)))
            return
        state = body.get("state")
        if state == "completed" and body.get("result") == want:
            self.tally.ok(kind)
            return
        if state == "lost" and (body.get("error") or {}).get("ename") == "EngineLost":
            why = self.engines.explain(body.get("engine"))
            if why:
                self.tally.expected(kind, why)
                return
        self.tally.unexpected(kind, "%s: want completed with %r: %s" % (what, want, short(body)))

    def map_excused(self, errors):
        """A map's errors are excused if every one is an EngineLost of an
        engine we can explain."""
        why = None
        for err in errors or []:
            m = re.search(r"engine (\d+) died", str(err.get("evalue", "")))
            if err.get("ename") != "EngineLost" or not m:
                return None
            why = self.engines.explain(int(m.group(1)))
            if not why:
                return None
        return why

    # ------------------------------------------------------------ good REST clients

    def g_execute(self, rng, tag):
        ids = self.engines.pick(rng)
        if not ids:
            return
        a, b = rng.randint(1, 10000), rng.randint(1, 10000)
        ranks = dict(zip(ids, self.engines.ranks(ids)))
        r = self.rest("POST", "/api/v1/views/%s/execute" % self.spec(ids),
                      {"code": "print('%s') return %d * %d + mpi.rank()" % (tag, a, b)})
        self.judge_results("execute", r.status, r.body, ids, "execute",
                           lambda eid, res: res.get("value") == a * b + ranks[eid]
                           and res.get("stdout") == tag + "\n")

    def g_allreduce(self, rng, tag):
        ids = self.engines.pick(rng, full=True)
        if not ids:
            return
        x = rng.randint(1, 1000)
        r = self.rest("POST", "/api/v1/views/%s/execute" % self.spec(ids),
                      {"code": "return mpi.allreduce(%d + mpi.rank(), 'sum')" % x})
        n = len(ids)
        self.judge_results("mpi allreduce", r.status, r.body, ids, "allreduce",
                           lambda eid, res: res.get("value") == n * x + n * (n - 1) // 2)

    def g_push_pull(self, rng, tag):
        ids = self.engines.pick(rng)
        if not ids:
            return
        name = "s_" + tag.replace("-", "_")
        value = [rng.randint(-10 ** 9, 10 ** 9) for _ in range(rng.randint(1, 50))]
        spec = self.spec(ids)
        r = self.rest("PUT", "/api/v1/views/%s/vars/%s" % (spec, name), value)
        if not self.judge_results("push/pull small", r.status, r.body, ids, "PUT vars"):
            return
        r = self.rest("GET", "/api/v1/views/%s/vars/%s" % (spec, name))
        self.judge_values("push/pull small", r.status, r.body, ids, "GET vars", value)

    def g_raw_array(self, rng, tag):
        ids = self.engines.pick(rng)
        if not ids:
            return
        name = "r_" + tag.replace("-", "_")
        base = rng.randint(0, 10 ** 6)
        data = array.array("d", range(base, base + 100000))
        data[rng.randrange(100000)] = 0.5
        raw = data.tobytes()
        spec = self.spec(ids)
        r = self.rest("PUT", "/api/v1/views/%s/vars/%s?dtype=float64&shape=100000" % (spec, name),
                      raw=raw, headers={"Content-Type": "application/octet-stream"})
        if not self.judge_results("raw 1e5 array", r.status, r.body, ids, "PUT raw"):
            return
        one = rng.choice(ids)
        r = self.rest("GET", "/api/v1/views/%d/vars/%s" % (one, name),
                      headers={"Accept": "application/octet-stream"})
        if r.status != 200:
            self.judge_error("raw 1e5 array", r.status, r.body, [one], "GET raw")
            return
        hdr = {k.lower(): v for k, v in r.headers.items()}
        if r.raw != raw or hdr.get("x-ippc-dtype") != "float64" \
                or hdr.get("x-ippc-shape") != "100000":
            self.tally.unexpected("raw 1e5 array", "pulled %d bytes (%s, %s) differ from the %d "
                                  "pushed" % (len(r.raw), hdr.get("x-ippc-dtype"),
                                              hdr.get("x-ippc-shape"), len(raw)))
            return
        self.tally.ok("raw 1e5 array")

    def g_scatter_gather(self, rng, tag):
        ids = self.engines.pick(rng)
        if not ids:
            return
        name = "g_" + tag.replace("-", "_")
        base = rng.randint(0, 10 ** 6)
        data = list(range(base, base + rng.randint(len(ids), 5000)))
        spec = self.spec(ids)
        r = self.rest("POST", "/api/v1/views/%s/scatter" % spec, {"name": name, "data": data})
        if not self.judge_results("scatter/gather", r.status, r.body, ids, "scatter"):
            return
        r = self.rest("GET", "/api/v1/views/%s/gather/%s" % (spec, name))
        body = r.body if isinstance(r.body, dict) else {}
        if r.status == 200 and body.get("status") == "ok":
            if body.get("result") == data:
                self.tally.ok("scatter/gather")
            else:
                self.tally.unexpected("scatter/gather", "gather of %d items differs: %s"
                                      % (len(data), short(body)))
            return
        if r.status != 200:
            self.judge_error("scatter/gather", r.status, r.body, ids, "gather")
            return
        why = None
        for err in (body.get("errors") or []) if body.get("status") == "error" else []:
            why = self.engines.explain(err.get("engine")) \
                if err.get("ename") == "EngineLost" else None
            if not why:
                break
        if why:
            self.tally.expected("scatter/gather", why)
        else:
            self.tally.unexpected("scatter/gather", "gather: %s" % short(body))

    def g_task(self, rng, tag):
        a, b = rng.randint(1, 10 ** 6), rng.randint(1, 10 ** 6)
        spec = {"code": "return %d + %d" % (a, b), "tags": [tag]}
        if rng.random() < 0.5:
            spec["retries"] = 3
        r = self.rest("POST", "/api/v1/tasks?block=true", spec, timeout=TASK_TIMEOUT)
        self.judge_task("balanced task", r.status, r.body, a + b, "POST /tasks?block=true")

    def g_task_batch(self, rng, tag):
        xs = [rng.randint(1, 10 ** 6) for _ in range(rng.randint(2, 8))]
        specs = [{"code": "return %d * 2" % x, "tags": [tag], "retries": 2} for x in xs]
        r = self.rest("POST", "/api/v1/tasks", specs)
        ids = (r.body or {}).get("ids") if isinstance(r.body, dict) else None
        if r.status != 202 or not isinstance(ids, list) or len(ids) != len(xs):
            self.tally.unexpected("task batch", "POST /tasks (batch of %d): HTTP %s %s"
                                  % (len(xs), r.status, short(r.body)))
            return
        deadline = now() + TASK_TIMEOUT   # for the whole batch
        for tid, x in zip(ids, xs):
            wait = max(1, int(deadline - now()))
            r = self.rest("GET", "/api/v1/tasks/%d?wait=%d" % (tid, wait), timeout=wait + 30)
            self.judge_task("task batch", r.status, r.body, x * 2,
                            "task %d of a batch, after up to %d s" % (tid, wait))

    def g_map(self, rng, tag):
        base = rng.randint(0, 10 ** 6)
        seq = list(range(base, base + rng.randint(1, 40)))
        r = self.rest("POST", "/api/v1/map", {"function": "tostring", "sequences": [seq],
                                              "chunksize": rng.randint(1, 8)},
                      timeout=TASK_TIMEOUT)
        body = r.body if isinstance(r.body, dict) else {}
        if r.status == 200 and body.get("status") == "ok" \
                and body.get("results") == [str(x) for x in seq]:
            self.tally.ok("map")
            return
        why = self.map_excused(body.get("errors")) if r.status == 200 else None
        if why:
            self.tally.expected("map", why)
            return
        self.tally.unexpected("map", "map tostring over %d items: HTTP %s %s"
                              % (len(seq), r.status, short(body)))

    def g_task_query(self, rng, tag):
        r = self.rest("GET", "/api/v1/tasks?tag=%s&limit=50" % tag)
        body = r.body if isinstance(r.body, dict) else {}
        tasks = body.get("tasks")
        if r.status == 200 and isinstance(tasks, list) \
                and all(tag in (t.get("tags") or []) for t in tasks) and len(tasks) <= 50:
            self.tally.ok("task query")
        else:
            self.tally.unexpected("task query", "GET /tasks?tag=%s: HTTP %s %s"
                                  % (tag, r.status, short(body)))

    def rest_client(self, n, ops):
        rng = random.Random(1000 + n)
        tag = "soak-c%d" % n
        for i in range(10 ** 6):
            if self.stop.is_set():
                return
            name, fn = rng.choice(ops)
            if self.engines.pick(rng) is None and name not in ("balanced task", "map",
                                                               "task query"):
                self.stop.wait(0.2)
                continue
            self.guarded(name, fn, rng, "%s-%d" % (tag, i % 7))
            if not self.controller_alive():
                return
            self.stop.wait(self.args.pace)

    # ------------------------------------------------------------ good WS clients

    def ws_client(self, n):
        rng = random.Random(2000 + n)
        tag = "soak-ws%d" % n
        state = {"ws": None, "last_seq": None, "done": {}, "next_id": 0}
        for i in range(10 ** 6):
            if self.stop.is_set() or not self.controller_alive():
                break
            try:
                if state["ws"] is None:
                    self.ws_connect(state, tag, resume=False)
                op = rng.random()
                if op < 0.1:
                    self.guarded("ws resume", self.ws_resume, state, rng, tag)
                elif op < 0.45:
                    self.guarded("ws execute", self.ws_execute, state, rng)
                elif op < 0.7:
                    self.guarded("ws push/pull", self.ws_push_pull, state, rng, tag)
                else:
                    self.guarded("ws submit", self.ws_submit, state, rng, tag)
            except (OSError, WebSocketError, ValueError, harness.Failure) as e:
                self.tally.unexpected("ws connect", "%s: %s" % (type(e).__name__, e))
                state["ws"] = None
                self.stop.wait(1)
            self.stop.wait(self.args.pace)
        if state["ws"] is not None:
            state["ws"].close(timeout=2)

    def ws_connect(self, state, tag, resume):
        since = state["last_seq"]   # before this connection's live events move it
        ws = WebSocket.connect(self.ws_url, token=self.token, timeout=15)
        state["ws"] = ws
        snap = ws.recv_json(timeout=15)
        if snap.get("type") != "snapshot":
            raise harness.Failure("first message is not the snapshot: %s" % short(snap))
        ws.send_json({"op": "subscribe", "topics": ["tasks"], "filter": {"tags": [tag]}})
        self.ws_wait(state, lambda m: m.get("type") == "subscribed", "subscribed", 20)
        if resume and since is not None:
            ws.send_json({"op": "resume", "since": since})
        elif since is None:
            state["last_seq"] = snap.get("seq")
        self.tally.ok("ws connect")

    def ws_wait(self, state, pred, what, timeout):
        ws = state["ws"]
        deadline = now() + timeout
        while True:
            left = deadline - now()
            if left <= 0:
                raise harness.Failure("%s: nothing within %.0f s" % (what, timeout))
            try:
                msg = ws.recv_json(timeout=left)
            except TimeoutError:
                raise harness.Failure("%s: nothing within %.0f s" % (what, timeout))
            if not isinstance(msg, dict):
                raise harness.Failure("a message that is not an object: %s" % short(msg))
            if msg.get("type") == "gap":
                state["gap"] = msg
                deadline = min(deadline, now() + 3)   # the replay follows at once
            if isinstance(msg.get("seq"), int) and msg.get("type") != "snapshot":
                state["last_seq"] = max(state["last_seq"] or 0, msg["seq"])
            if msg.get("type") == "task.completed":
                tid = msg.get("task")
                prev = state["done"].get(tid)
                # The same event twice is allowed (live before the resume was
                # read, then replayed); two different completions are not.
                if prev is not None and prev.get("seq") != msg.get("seq"):
                    raise harness.Failure("two task.completed for task %s: %s and %s"
                                          % (tid, short(prev), short(msg)))
                state["done"][tid] = msg
            if pred(msg):
                return msg

    def ws_request(self, state, msg, what):
        state["next_id"] += 1
        rid = "r%d" % state["next_id"]
        msg = dict(msg, id=rid)
        state["ws"].send_json(msg)
        return self.ws_wait(state, lambda m: m.get("type") == "reply" and m.get("id") == rid,
                            "%s: reply" % what, REQUEST_CHANNEL_TIMEOUT)

    def ws_execute(self, state, rng):
        ids = self.engines.pick(rng)
        if not ids:
            return
        a = rng.randint(1, 10 ** 6)
        ranks = dict(zip(ids, self.engines.ranks(ids)))
        rep = self.ws_request(state, {"op": "execute", "targets": self.spec(ids),
                                      "code": "return %d - mpi.rank()" % a}, "ws execute")
        self.judge_results("ws execute", rep.get("status"), rep.get("body"), ids, "ws execute",
                           lambda eid, res: res.get("value") == a - ranks[eid])

    def ws_push_pull(self, state, rng, tag):
        ids = self.engines.pick(rng)
        if not ids:
            return
        name = "w_" + tag.replace("-", "_")
        value = {"k": rng.randint(0, 10 ** 6), "s": "x" * rng.randint(0, 100)}
        spec = self.spec(ids)
        rep = self.ws_request(state, {"op": "push", "targets": spec,
                                      "namespace": {name: value}}, "ws push")
        if not self.judge_results("ws push/pull", rep.get("status"), rep.get("body"), ids,
                                  "ws push"):
            return
        rep = self.ws_request(state, {"op": "pull", "targets": spec, "names": [name]}, "ws pull")
        self.judge_values("ws push/pull", rep.get("status"), rep.get("body"), ids, "ws pull",
                          [value])

    def ws_submit(self, state, rng, tag):
        xs = [rng.randint(1, 10 ** 6) for _ in range(rng.randint(1, 4))]
        rep = self.ws_request(state, {"op": "submit", "tasks": [
            {"code": "return %d + 1" % x, "tags": [tag], "retries": 2} for x in xs]}, "ws submit")
        ids = (rep.get("body") or {}).get("ids") if isinstance(rep.get("body"), dict) else None
        if rep.get("status") != 202 or not isinstance(ids, list) or len(ids) != len(xs):
            self.tally.unexpected("ws submit", "submit: %s" % short(rep))
            return
        self.ws_expect_completions(state, dict(zip(ids, [x + 1 for x in xs])), "ws submit")

    def ws_expect_completions(self, state, want, kind):
        """Waits for task.completed of every id in want (id -> result)."""
        for tid in want:
            state["done"].setdefault(tid, None)

        def all_done(m):
            return all(state["done"].get(t) is not None for t in want)
        if not all_done(None):
            try:
                self.ws_wait(state, all_done, "%s: task.completed for %s" % (kind, list(want)),
                             EVENT_TIMEOUT)
            except harness.Failure:
                self.ws_events_missing(state, want, kind)
                return
        for tid, result in want.items():
            ev = state["done"].pop(tid, None)
            if ev is None:
                continue
            if ev.get("state") == "completed" and ev.get("result") == result:
                self.tally.ok(kind)
            elif ev.get("state") == "lost" and self.engines.explain(ev.get("engine")):
                self.tally.expected(kind, self.engines.explain(ev.get("engine")))
            else:
                self.tally.unexpected(kind, "task %d: want completed with %r: %s"
                                      % (tid, result, short(ev)))

    def ws_events_missing(self, state, want, kind):
        """task.completed events did not come: were the tasks done (a silent
        stream) or not (a stuck task)?  Either way the client reconnects.
        After a gap message (the resume went past the ring of 10,000
        events) the client asks REST instead, as a real client would."""
        missing = [t for t in want if state["done"].get(t) is None]
        states = {}
        for tid in missing:
            r = self.rest("GET", "/api/v1/tasks/%d?wait=5" % tid, timeout=15)
            states[tid] = (r.body or {}).get("state") if isinstance(r.body, dict) else r.status
            if state.get("gap") and kind == "ws resume":
                self.judge_task(kind, r.status, r.body, want[tid],
                                "task %d after a gap, from REST" % tid)
        if state.get("gap") and kind == "ws resume":
            self.tally.expected(kind, "gap: past the ring, asked REST")
        elif all(s in ("completed", "failed", "lost", "aborted") for s in states.values()):
            self.tally.unexpected("live streams", "%s: no task.completed within %d s for tasks "
                                  "that finished (%s): the client's stream went silent"
                                  % (kind, EVENT_TIMEOUT, states))
        else:
            self.tally.unexpected(kind, "tasks not finished after %d s: %s"
                                  % (EVENT_TIMEOUT, states))
        state["ws"].abort()
        state["ws"] = None
        for tid in want:
            state["done"].pop(tid, None)

    def ws_resume(self, state, rng, tag):
        """Drop the connection without a close frame, run tasks while away,
        reconnect, resume: their task.completed events must arrive."""
        state["ws"].abort()
        state["ws"] = None
        xs = [rng.randint(1, 10 ** 6) for _ in range(2)]
        r = self.rest("POST", "/api/v1/tasks",
                      [{"code": "return %d + 1" % x, "tags": [tag], "retries": 2} for x in xs])
        ids = (r.body or {}).get("ids") if isinstance(r.body, dict) else None
        if r.status != 202 or not isinstance(ids, list):
            self.tally.unexpected("ws resume", "POST /tasks while away: HTTP %s %s"
                                  % (r.status, short(r.body)))
            return
        for tid in ids:   # let them finish while no client listens
            self.rest("GET", "/api/v1/tasks/%d?wait=30" % tid, timeout=40)
        state["done"] = {}
        state["gap"] = None
        self.ws_connect(state, tag, resume=True)
        self.ws_expect_completions(state, dict(zip(ids, [x + 1 for x in xs])), "ws resume")

    # ------------------------------------------------------------ engine churn

    def churn(self):
        eng = self.engines
        interval = self.args.churn
        next_at = now() + interval
        for i in range(10 ** 6):
            # After the deadline: only kill the jobs an attack broke (clients
            # may wait on them), until the last bad client is done.
            stopping = self.stop.is_set()
            if stopping and self.stop_time is None:
                self.stop_time = now()
            if not self.controller_alive() or (stopping and self.attackers_done.is_set()
                                               and not eng.replace) \
                    or (stopping and now() > self.stop_time + 120):
                return
            try:
                engines = eng.refresh()
            except (harness.HarnessError, OSError) as e:
                self.tally.unexpected("engine churn", "GET /engines: %s" % e)
                time.sleep(1)
                continue
            with eng.lock:
                broken = list(dict.fromkeys(eng.replace))
                eng.replace = []
            for job in broken:
                # Restarted even when stopping: clients may wait on tasks
                # that only a live engine can finish.
                with self.churn_lock:
                    self.replace_job(job, engines, kill_first=True)
            if stopping:
                time.sleep(0.5)
                continue
            if interval > 0 and now() >= next_at:
                next_at = now() + interval
                with eng.lock:
                    live_jobs = [j for j in eng.job_order if j in eng.groups]
                if live_jobs:
                    with self.churn_lock:
                        self.replace_job(live_jobs[0], engines, kill_first=False)
            self.stop.wait(1)

    def replace_job(self, job, engines, kill_first):
        """Starts a new 4-rank job and SIGKILLs job (kill_first: the other
        way round, for a job an attack broke)."""
        if not kill_first:
            self.start_job()
        ids = sorted(e["id"] for e in engines if str(e.get("job")) == job)
        self.engines.mark_killed(ids, job)
        try:
            ranks = harness.kill_engine_job(self.cluster, job)
        except (harness.HarnessError, OSError) as e:
            self.tally.unexpected("engine churn", "kill job %s: %s" % (job, e))
            return
        left = harness.wait_gone(ranks.values(), 20)
        deadline = now() + 20
        states = {}
        while ranks and now() < deadline:
            try:
                states = {e["id"]: e["state"] for e in self.api.engines() if e["id"] in ranks}
            except (harness.HarnessError, OSError):
                states = {}
            if states and all(s == "dead" for s in states.values()):
                break
            time.sleep(0.3)
        if left or (ranks and not (states and all(s == "dead" for s in states.values()))):
            self.tally.unexpected("engine churn", "job %s: SIGKILLed ranks %s; still running %s, "
                                  "controller states %s" % (job, sorted(ranks), sorted(left),
                                                            states))
        else:
            self.tally.ok("engine churn")
            sys.stdout.write("# churn: killed job %s (engines %s)\n" % (job, ids))
        if kill_first:
            self.start_job()

    def start_job(self):
        try:
            ids = harness.start_engine_job(self.cluster, 4, timeout=60)
            self.engines.started_jobs += 1
            self.tally.ok("engine churn")
            sys.stdout.write("# churn: started a job (engines %s)\n" % ids)
            self.engines.refresh()
        except (harness.HarnessError, OSError) as e:
            self.tally.unexpected("engine churn", "start job: %s" % str(e).splitlines()[0])

    # ------------------------------------------------------------ bad clients

    def raw(self, data, wait, send_after=None):
        """Sends data on a new connection and reads until the server closes
        it or wait seconds pass; returns (bytes, "eof"|"reset"|"timeout")."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.settimeout(wait)
        got, how = b"", "timeout"
        deadline = now() + wait
        try:
            s.sendall(data)
            while now() < deadline and len(got) < 1 << 20:
                s.settimeout(max(0.01, deadline - now()))
                chunk = s.recv(65536)
                if not chunk:
                    how = "eof"
                    break
                got += chunk
        except socket.timeout:
            pass
        except (ConnectionResetError, BrokenPipeError):
            how = "reset"
        finally:
            s.close()
        return got, how

    def connect_raw(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def expect_http_error(self, kind, what, r, status, code):
        body = r.body if isinstance(r.body, dict) else {}
        err = body.get("error") if isinstance(body.get("error"), dict) else {}
        if r.status == status and err.get("code") == code and isinstance(err.get("message"), str):
            self.tally.expected(kind, "%d %s" % (status, code))
        else:
            self.tally.unexpected(kind, "%s: want %d %s, got HTTP %s %s"
                                  % (what, status, code, r.status, short(r.raw[:300].decode(
                                      "utf-8", "replace"))))

    def still_serving(self, kind, what, timeout=10):
        """A good request right after an attack: answered within timeout."""
        t0 = now()
        try:
            r = self.rest("GET", "/api/v1/info", timeout=timeout)
            if r.status == 200:
                self.tally.expected(kind, "still serving")
                return now() - t0
            self.tally.unexpected(kind, "%s: GET /api/v1/info answered HTTP %s" % (what, r.status))
        except OSError as e:
            self.tally.unexpected(kind, "%s: GET /api/v1/info failed after %.1f s: %s"
                                  % (what, now() - t0, e))
        return None

    def ws_open(self, timeout=15):
        ws = WebSocket.connect(self.ws_url, token=self.token, timeout=timeout)
        snap = ws.recv_json(timeout=timeout)
        if snap.get("type") != "snapshot":
            raise harness.Failure("no snapshot: %s" % short(snap))
        return ws

    def ws_reaction(self, ws, seconds, want=None):
        """Messages (not engine/task events) until the connection ends or
        seconds pass, or until want(msg); returns (messages, Closed or other
        exception or None)."""
        got = []
        deadline = now() + seconds
        while True:
            left = deadline - now()
            if left <= 0:
                return got, None
            try:
                msg = ws.recv_json(timeout=left)
            except TimeoutError:
                return got, None
            except (Closed, OSError, WebSocketError, ValueError) as e:
                return got, e
            if isinstance(msg, dict) and "seq" in msg:
                continue
            got.append(msg)
            if want is not None and want(msg):
                return got, None

    def a_rest_auth(self, kind):
        url = self.url
        for what, hdrs in (("no token", {}), ("wrong token", {"Authorization": "Bearer " + "0" * 64}),
                           ("token prefix", {"Authorization": "Bearer " + self.token[:-1]}),
                           ("token + suffix", {"Authorization": "Bearer " + self.token + "0"}),
                           ("Basic scheme", {"Authorization": "Basic " + self.token})):
            for method, path, body in (("GET", "/api/v1/info", None),
                                       ("POST", "/api/v1/views/all/execute", {"code": "pwned=1"}),
                                       ("POST", "/api/v1/tasks", {"code": "return 1"}),
                                       ("GET", "/metrics", None)):
                r = harness.http(method, url + path, body=body, headers=hdrs, timeout=15)
                self.expect_http_error(kind, "%s %s with %s" % (method, path, what), r, 401,
                                       "unauthorized")

    def a_ws_auth(self, kind):
        for what, kw in (("no token", {}), ("wrong token", {"token": "0" * 64}),
                         ("wrong query token", {"token": "0" * 64, "auth": "query"}),
                         ("wrong subprotocol token", {"token": "bad", "auth": "protocol"}),
                         ("no token, /ws/", {"path": "/ws/"})):
            url = self.ws_url + ("/" if kw.pop("path", None) else "")
            try:
                ws = WebSocket.connect(url, timeout=15, **kw)
                ws.abort()
                self.tally.unexpected(kind, "%s: the upgrade was accepted" % what)
            except HandshakeError as e:
                if e.status == 401 or (what.endswith("/ws/") and e.status in (None, 401, 403,
                                                                              404)):
                    self.tally.expected(kind, "refused %s" % e.status)
                else:
                    self.tally.unexpected(kind, "%s: want HTTP 401, got %s" % (what, e))

    def a_engine_auth(self, kind):
        engine_url = self.url.replace("http://", "ws://", 1) + "/engine"
        cases = (("register with a wrong key", {"type": "register", "key": "0" * 64, "job": "x",
                                                "rank": 0, "size": 1, "host": "h", "pid": 1}),
                 ("register without a key", {"type": "register", "job": "x", "rank": 0,
                                             "size": 1, "host": "h", "pid": 1}),
                 ("a heartbeat before registering", {"type": "heartbeat", "busy": False}),
                 ("a result before registering", {"type": "result", "task": 1, "status": "ok",
                                                  "nbuf": 0}),
                 ("binary first", None))
        for what, msg in cases:
            try:
                ws = WebSocket.connect(engine_url, protocols=("ippc.engine.v1",), timeout=15)
            except HandshakeError as e:
                self.tally.expected(kind, "upgrade refused %s" % e.status)
                continue
            try:
                if msg is None:
                    ws.send_binary(os.urandom(64))
                else:
                    ws.send_json(msg)
                got, end = self.ws_reaction(ws, 10)
            finally:
                ws.abort()
            errors = [m for m in got if isinstance(m, dict) and m.get("type") == "error"]
            if end is not None and (msg is None or errors):
                self.tally.expected(kind, "error + close" if errors else "closed")
            else:
                self.tally.unexpected(kind, "/engine %s: want an error message and a close, got "
                                      "%s then %r" % (what, short(got), end))

    def a_garbage(self, kind):
        for what, data in (("random bytes", os.urandom(2048)),
                           ("a 100 KB request line", b"GET /" + b"a" * 100000),
                           ("100 KB of NUL bytes", b"\0" * 100000),
                           ("a bad method", b"FROB /api/v1/info HTTP/1.1\r\nHost: x\r\n\r\n"),
                           ("HTTP/9", b"GET /api/v1/info HTTP/9.9\r\nHost: x\r\n\r\n")):
            got, how = self.raw(data, 15)
            status = http_status(got)
            if (status and 400 <= status < 600 and status != 500) or (not got and how != "timeout"):
                self.tally.expected(kind, "%s" % (status or how))
            else:
                self.tally.unexpected(kind, "%s: want a 4xx or a close within 15 s, got %s %r"
                                      % (what, how, got[:200]))
        # Garbage headers after "GET /ws": libwebsockets owns it; must be closed.
        s = self.connect_raw()
        s.sendall(b"GET /ws HTTP/1.1\r\n\x00\x01\xff garbage\r\n\r\n")
        self.holder.hold(s, kind, "garbage headers on GET /ws", 25)

    def a_bad_json(self, kind):
        path = "/api/v1/views/all/execute"
        for what, raw in (("unterminated", '{"code": "return 1"'), ("not JSON", "{nope"),
                          ("empty", ""), ("100,000 deep", "[" * 100000 + "]" * 100000),
                          ("100,000 deep objects", '{"a":' * 100000 + "1" + "}" * 100000),
                          ("invalid UTF-8", b'{"code": "\xff\xfe"}'),
                          ("duplicate keys", '{"code": "return 1", "code": "return 2"}'),
                          ("NaN", '{"code": NaN}')):
            r = self.rest("POST", path, raw=raw, timeout=30)
            self.expect_http_error(kind, "POST execute with %s JSON" % what, r, 400,
                                   "bad_request")
        r = self.rest("POST", "/api/v1/tasks", raw="[" * 50000, timeout=30)
        self.expect_http_error(kind, "POST /tasks with 50,000 [", r, 400, "bad_request")
        ws = self.ws_open()
        try:
            for what, text in (("100,000 deep", "[" * 100000), ("not JSON", "{nope"),
                               ("no op", '{"id": 1}')):
                ws.send_text(text)
                got, end = self.ws_reaction(ws, 15, want=lambda m: m.get("type") == "error")
                err = got[-1].get("error", {}) if got and isinstance(got[-1], dict) else {}
                if got and got[-1].get("type") == "error" and err.get("code") == "bad_request":
                    self.tally.expected(kind, "ws error bad_request")
                else:
                    self.tally.unexpected(kind, "/ws %s: want an error bad_request, got %s %r"
                                          % (what, short(got), end))
                    return
        finally:
            ws.close(timeout=2)

    def a_huge_length(self, kind):
        def one(what, length, out):
            head = ("POST /api/v1/views/all/execute HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                    "Content-Length: %d\r\n\r\n" % (self.token, length)).encode()
            try:
                out[what] = self.raw(head, 10)
            except OSError as e:
                out[what] = (b"", "connect: %s" % e)
        out = {}
        threads = [threading.Thread(target=one, args=(what, length, out), daemon=True)
                   for what, length in (("1e12", 10 ** 12), ("100 MB", 100 * 10 ** 6))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for what in ("1e12", "100 MB"):
            got, how = out.get(what, (b"", "timeout"))
            status = http_status(got)
            if status == 413 and json_error_code(got) == "payload_too_large":
                self.tally.expected(kind, "413 payload_too_large")
            elif not got and how in ("eof", "reset"):
                self.tally.expected(kind, "closed")
            else:
                self.tally.unexpected(kind, "Content-Length %s (limit 64 MiB) and no body: want "
                                      "413 payload_too_large or a close within 10 s, got %s %r"
                                      % (what, how, got[:200]))
        self.still_serving(kind, "after huge Content-Length")

    def a_slowloris(self, kind):
        held = 0
        for i in range(8):   # REST: libmicrohttpd's connection timeout is 120 s
            s = self.connect_raw()
            s.sendall(b"GET /api/v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-%d: " % i)
            self.holder.hold(s, kind, "half REST headers", 135)
            held += 1
        for i in range(3):   # a body that never comes
            s = self.connect_raw()
            s.sendall(("POST /api/v1/views/all/execute HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Authorization: Bearer %s\r\nContent-Length: 40\r\n\r\n{\"code\":"
                       % self.token).encode())
            self.holder.hold(s, kind, "REST body never finished", 135)
        for data in (b"GET /w", b"GET /engi", b"G"):   # the acceptor: 10 s
            for i in range(3):
                s = self.connect_raw()
                s.sendall(data)
                self.holder.hold(s, kind, "half request line %r" % data, 25)
        for i in range(3):   # libwebsockets: half an upgrade
            s = self.connect_raw()
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
            self.holder.hold(s, kind, "half a /ws upgrade", 25)
        self.stop.wait(0.5)
        took = self.still_serving(kind, "with slowloris connections open")
        try:
            ws = self.ws_open(timeout=10)
            ws.close(timeout=2)
            self.tally.expected(kind, "ws served")
        except (OSError, WebSocketError, ValueError, harness.Failure) as e:
            self.tally.unexpected(kind, "a /ws client with slowloris connections open: %s" % e)
        return took

    def a_ws_bad_frames(self, kind):
        cases = (
            ("binary garbage", lambda w: w.send_binary(os.urandom(300)), "error"),
            ("invalid UTF-8 text", lambda w: w.send_frame(OP_TEXT, b'{"op":"\xff\xfe"}'), "error"),
            ("RSV bits", lambda w: w.send_frame(OP_TEXT, b'{"op":"ping"}', rsv=4), "close"),
            ("opcode 3", lambda w: w.send_frame(0x3, b"x"), "close"),
            ("stray continuation", lambda w: w.send_frame(OP_CONT, b"x"), "close"),
            ("ping of 200 bytes", lambda w: w.send_frame(OP_PING, b"x" * 200), "close"),
            ("fragmented ping", lambda w: w.send_frame(OP_PING, b"x", fin=False), "close"),
            ("text inside a fragmented text",
             lambda w: (w.send_frame(OP_TEXT, b'{"op":', fin=False),
                        w.send_frame(OP_TEXT, b'"ping"}')), "close"),
            ("close with a 1-byte payload", lambda w: w.send_frame(0x8, b"x"), "close"),
        )
        for what, send, want in cases:
            ws = self.ws_open()
            try:
                send(ws)
                got, end = self.ws_reaction(ws, 10, want=lambda m: m.get("type") == "error")
                errors = [m for m in got if isinstance(m, dict) and m.get("type") == "error"
                          and (m.get("error") or {}).get("code") == "bad_request"]
                if want == "error" and errors:
                    ws.send_json({"op": "ping"})   # and the connection still works
                    got2, end2 = self.ws_reaction(ws, 10, want=lambda m: m.get("type") == "pong")
                    if got2 and got2[-1].get("type") == "pong":
                        self.tally.expected(kind, "error bad_request, still usable")
                    else:
                        self.tally.unexpected(kind, "%s: no pong after the error: %s %r"
                                              % (what, short(got2), end2))
                elif want == "close" and end is not None:
                    self.tally.expected(kind, "closed (%s)" % getattr(end, "code", "tcp"))
                else:
                    self.tally.unexpected(kind, "%s: want %s within 10 s, got %s then %r"
                                          % (what, "an error bad_request" if want == "error"
                                             else "a close", short(got), end))
            finally:
                ws.abort()

    def a_ws_oversize(self, kind):
        big = json.dumps({"op": "execute", "id": "big", "targets": "all",
                          "code": "return 1 --" + "x" * (17 * MB)})
        fragment = None if self.attack_count(kind) % 2 == 0 else MB
        ws = self.ws_open()
        try:
            try:
                ws.send_text(big, fragment=fragment)
            except OSError:
                pass   # the controller may stop reading at 16 MiB
            got, end = self.ws_reaction(ws, 30)
        finally:
            ws.abort()
        del big
        errors = [m for m in got if isinstance(m, dict) and (
            m.get("type") == "error" or (m.get("type") == "reply" and m.get("status") == 413))]
        if errors and isinstance(end, Closed) and end.code == 1009:
            self.tally.expected(kind, "error + close 1009")
        else:
            self.tally.unexpected(kind, "17 MiB message (%s): want an error then close 1009, got "
                                  "%s then %r" % ("one frame" if fragment is None else
                                                  "1 MiB fragments", short(got), end))

    def a_ping_flood(self, kind):
        ws = self.ws_open()
        try:
            burst = b"".join(encode_frame(OP_PING, b"flood%05d" % i) for i in range(3000))
            burst += b"".join(encode_frame(OP_TEXT, '{"op":"ping","id":%d}' % i)
                              for i in range(1000))
            t0 = now()
            try:
                with ws.send_lock:
                    ws.sock.settimeout(20)
                    ws.sock.sendall(burst)
            except OSError:
                self.tally.expected(kind, "closed while flooding")
                return
            seen = 0
            end = None
            deadline = now() + 30
            while seen < 1000 and now() < deadline:
                try:
                    m = ws.recv_json(timeout=max(0.01, deadline - now()))
                except TimeoutError:
                    break
                except (Closed, OSError, WebSocketError, ValueError) as e:
                    end = e
                    break
                if isinstance(m, dict) and m.get("type") == "pong":
                    seen += 1
            if seen == 1000:
                self.tally.expected(kind, "all answered")
                if now() - t0 > 20:
                    self.tally.unexpected(kind, "1,000 pongs took %.1f s" % (now() - t0))
            elif end is not None:
                self.tally.expected(kind, "closed by the server")
            else:
                self.tally.unexpected(kind, "%d of 1,000 {op:ping} answered within 30 s and the "
                                      "connection is still open" % seen)
        finally:
            ws.abort()

    def a_vanish(self, kind, rng):
        def rst(sock):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        for i in range(10):
            s = self.connect_raw()
            (rst if i % 2 else socket.socket.close)(s)
        s = self.connect_raw()
        s.sendall(("GET /ws?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % self.token).encode())
        rst(s)
        s = self.connect_raw()
        s.sendall(b"GET /engine HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        rst(s)
        for i in range(3):   # a live stream, dropped without a close frame
            ws = self.ws_open()
            rst(ws.sock)
        ids = self.engines.pick(rng)
        busy = "local t = mpi.wtime(); while mpi.wtime() - t < 0.3 do end; return 1"
        if ids:
            ws = self.ws_open()   # a waiting request, abandoned
            ws.send_json({"op": "execute", "id": 1, "targets": self.spec(ids), "code": busy})
            ws.send_json({"op": "task", "id": 2, "task": 1, "wait": 30})
            rst(ws.sock)
            s = self.connect_raw()   # a blocking REST request, abandoned
            body = json.dumps({"code": busy}).encode()
            s.sendall(("POST /api/v1/views/%s/execute HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                       "Content-Length: %d\r\n\r\n" % (self.spec(ids), self.token, len(body))
                       ).encode() + body)
            time.sleep(0.05)
            rst(s)
        s = self.connect_raw()   # half a body, then gone
        s.sendall(("PUT /api/v1/views/all/vars/v HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Authorization: Bearer %s\r\nContent-Type: application/octet-stream\r\n"
                   "Content-Length: 800000\r\n\r\n" % self.token).encode() + bytes(100000))
        rst(s)
        self.still_serving(kind, "after connect-and-vanish")

    def a_ws_engine_subprotocol(self, kind):
        with self.churn_lock:   # no job may register unseen meanwhile
            self.ws_engine_subprotocol(kind)

    def ws_engine_subprotocol(self, kind):
        try:
            before = {e["id"] for e in self.api.live_engines()}
        except (harness.HarnessError, OSError) as e:
            self.tally.unexpected(kind, "GET /engines: %s" % e)
            return
        for what, kw in (("no token", {}),
                         ("client token", {"token": self.token})):
            try:
                ws = WebSocket.connect(self.ws_url, protocols=("ippc.engine.v1",), timeout=15,
                                       **kw)
                ws.abort()
                self.tally.unexpected(kind, "/ws upgrade naming ippc.engine.v1 (%s) was accepted "
                                      "(subprotocol %r)" % (what, ws.protocol))
            except HandshakeError as e:
                self.tally.expected(kind, "refused %s" % e.status)
        time.sleep(0.3)
        try:
            engines = self.api.engines()
        except (harness.HarnessError, OSError) as e:
            self.tally.unexpected(kind, "GET /engines: %s" % e)
            return
        dead = sorted(e["id"] for e in engines if e["id"] in before and e["state"] == "dead"
                      and self.engines.explain(e["id"], grace=0) is None)
        broken = {}
        for e in engines:
            if e["id"] in dead:
                broken.setdefault(str(e.get("job")), "engine(s) %s marked dead" % dead)
        if broken:   # replace them at once: their other ranks may wait in a collective
            self.engines.blame(sorted(broken), kind)
        # And does every other live job still get work?  (A job whose tasks
        # are never delivered would stall every client that picks it.)
        stalled = {}
        try:
            self.engines.refresh()
        except (harness.HarnessError, OSError):
            pass
        for job, ids in self.engines.live_groups().items():
            r = self.rest("POST", "/api/v1/views/%s/execute?timeout=10" % self.spec(ids),
                          {"code": "return 1"}, timeout=30)
            if r.status == 202 and all(self.engines.explain(i, grace=0) is None for i in ids):
                stalled[job] = "engines %s get no task (none delivered within 10 s)" % ids
        if stalled:
            self.engines.blame(sorted(stalled), kind)
        broken.update(stalled)
        if broken:
            self.tally.unexpected(kind, "after /ws upgrades naming ippc.engine.v1 without a key: "
                                  "%s (those jobs are replaced)"
                                  % "; ".join("job %s: %s" % (j[:8], w) for j, w in broken.items()))
        else:
            self.tally.expected(kind, "no engine harmed")

    def a_ws_unauth_silence(self, kind):
        try:
            listener = self.ws_open()
        except (OSError, WebSocketError, ValueError, harness.Failure) as e:
            self.tally.unexpected(kind, "cannot open the listening stream: %s" % e)
            return
        try:
            for what, kw in (("no token", {}), ("wrong token", {"token": "f" * 64}),
                             ("wrong query token", {"token": "f" * 64, "auth": "query"}),
                             ("no token, many", {}), ("no token, many", {})):
                try:
                    ws = WebSocket.connect(self.ws_url, timeout=15, **kw)
                    ws.abort()
                    self.tally.unexpected(kind, "%s: the upgrade was accepted" % what)
                except HandshakeError as e:
                    if e.status != 401:
                        self.tally.unexpected(kind, "%s: want 401, got %s" % (what, e))
            r = self.rest("POST", "/api/v1/tasks", {"code": "return 'probe'",
                                                    "tags": ["soak-probe"], "retries": 3})
            tid = (r.body or {}).get("id") if isinstance(r.body, dict) else None
            if r.status != 202 or not isinstance(tid, int):
                self.tally.unexpected(kind, "probe task: HTTP %s %s" % (r.status, short(r.body)))
                return
            seen = None
            deadline = now() + 20
            while seen is None and now() < deadline:
                try:
                    m = listener.recv_json(timeout=max(0.01, deadline - now()))
                except TimeoutError:
                    break
                except (Closed, OSError, WebSocketError, ValueError) as e:
                    seen = e
                    break
                if isinstance(m, dict) and m.get("type") == "task.completed" \
                        and m.get("task") == tid:
                    seen = m
            # The monitor reads every event of the run: on a loaded machine it
            # may be seconds behind the fresh listener, so it gets longer.
            monitor = self.monitor.wait_completed(tid, max(0.5, deadline + 40 - now()))
            if isinstance(seen, dict) and monitor is not None:
                self.tally.expected(kind, "streams still live")
            else:
                self.tally.unexpected(kind, "after unauthenticated /ws upgrades (401) the live "
                                      "streams went silent: task.completed of probe task %d: "
                                      "stream opened before them %s (20 s), the monitor %s (60 s)"
                                      % (tid, "saw it" if isinstance(seen, dict) else
                                         "did not see it (%r)" % (seen,),
                                         "saw it" if monitor else "did not see it"))
        finally:
            listener.abort()

    def a_body_before_auth(self, kind):
        head = (b"POST /api/v1/views/all/execute HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (8 * MB))
        got, how = self.raw(head + b"[" * 65536, 5)
        status = http_status(got)
        if status == 401 and json_error_code(got) == "unauthorized":
            self.tally.expected(kind, "401 before the body")
        else:
            self.tally.unexpected(kind, "an unauthenticated POST announcing 8 MiB (64 KiB sent): "
                                  "want 401 unauthorized within 5 s, got %s %r (the body is "
                                  "buffered before the token check)" % (how, got[:200]))

    def a_silent_conns(self, kind):
        socks = []
        try:
            for i in range(200):
                socks.append(self.connect_raw())
        except OSError as e:
            self.tally.unexpected(kind, "opening 200 connections: %s (%d open)" % (e, len(socks)))
        for s in socks:
            self.holder.hold(s, kind, "silent TCP connection", 25)
        self.stop.wait(0.5)
        took = self.still_serving(kind, "with 200 silent connections", timeout=5)
        try:
            ws = self.ws_open(timeout=5)
            ws.close(timeout=2)
            self.tally.expected(kind, "ws served")
        except (OSError, WebSocketError, ValueError, harness.Failure) as e:
            self.tally.unexpected(kind, "/ws connect with 200 silent connections: %s" % e)
        return took

    def a_nbuf_bypass(self, kind):
        ws = self.ws_open()
        rss0 = harness.proc_rss_kb(self.cluster.controller.pid) or 0
        try:
            ws.send_json({"op": "ping", "nbuf": 4096})
            got, end = [], None
            for i in range(20):
                try:
                    ws.send_binary(bytes(MB))
                except OSError as e:
                    end = e
                    break
            grew = ((harness.proc_rss_kb(self.cluster.controller.pid) or 0) - rss0) / 1024.0
            if end is None:
                got, end = self.ws_reaction(ws, 5, want=lambda m: m.get("type") == "error")
            errors = [m for m in got if isinstance(m, dict) and m.get("type") == "error"]
            if errors or end is not None:
                self.tally.expected(kind, "refused" if errors else "closed")
            else:
                self.tally.unexpected(kind, "{op:ping,nbuf:4096} then 20 MiB of binary frames: no "
                                      "error and no close within 5 s (the 16 MiB /ws message "
                                      "limit is bypassed; controller RSS +%.0f MB)" % grew)
        finally:
            ws.abort()

    def a_big_json_push(self, kind, rng):
        ids = self.engines.pick(rng)
        if not ids:
            return
        n = 1100000
        text = json.dumps([rng.randrange(10 ** 6) for _ in range(n)])
        spec = self.spec(ids)
        lat = []
        done = threading.Event()

        def sample():
            for i in range(600):
                if done.is_set():
                    return
                t0 = now()
                try:
                    r = self.rest("GET", "/api/v1/info", timeout=30)
                    lat.append(now() - t0 if r.status == 200 else 99)
                except OSError:
                    lat.append(99)
                done.wait(0.1)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = now()
        try:
            r = self.rest("PUT", "/api/v1/views/%s/vars/soak_big" % spec, raw=text, timeout=120)
        finally:
            took = now() - t0
            done.set()
            sampler.join(35)
        mb = len(text) / 1e6
        del text
        if self.judge_results(kind, r.status, r.body, ids, "8 MB JSON push"):
            worst = max(lat) if lat else 0
            if worst > 5:
                self.tally.unexpected(kind, "GET /api/v1/info took up to %.1f s while a %.1f MB "
                                      "JSON push was in flight (%.1f s)" % (worst, mb, took))
            r = self.rest("POST", "/api/v1/views/%s/execute" % spec,
                          {"code": "local n = #soak_big; soak_big = nil; collectgarbage(); "
                                   "return n"})
            self.judge_results(kind, r.status, r.body, ids, "length of the pushed array",
                               lambda eid, res: res.get("value") == n)
        sys.stdout.write("# big_json_push: %.1f MB in %.1f s, GET /info during it: max %.2f s "
                         "(%d samples)\n" % (mb, took, max(lat) if lat else 0, len(lat)))

    # ------------------------------------------------------------ attack scheduling

    def recent_refusals(self):
        """Attacks that made refused /ws upgrades in the last 30 s."""
        names = []
        with self.attack_lock:
            for name in ("ws_auth", "ws_unauth_silence", "ws_engine_subprotocol", "slowloris"):
                if any(now() - end < 30 for _, end in self.attack_runs.get(name, [])) \
                        or (name in self.attack_last and now() - self.attack_last[name] < 30):
                    names.append(name)
        return "; after refused /ws upgrades of: %s" % ", ".join(names) if names else ""

    def attack_count(self, name):
        with self.attack_lock:
            return len(self.attack_runs.get(name, []))

    def next_attack(self, rng, queue):
        """The first not-yet-run attack, then random ones past their rest."""
        with self.attack_lock:
            while queue:
                name = queue.pop(0)
                self.attack_last[name] = now()
                return name
            ready = [a for a in self.args.attack_list
                     if now() - self.attack_last.get(a, -1e9) >= ATTACKS[a][1]]
            if not ready:
                return None
            name = rng.choice(ready)
            self.attack_last[name] = now()
            return name

    def bad_client(self, n, queue):
        try:
            self.bad_client_loop(n, queue)
        finally:
            with self.attack_lock:
                self.attackers -= 1
                if self.attackers <= 0:
                    self.attackers_done.set()

    def bad_client_loop(self, n, queue):
        rng = random.Random(3000 + n)
        for i in range(10 ** 6):
            if self.stop.is_set() or not self.controller_alive():
                return
            name = self.next_attack(rng, queue)
            if name is None:
                self.stop.wait(0.5)
                continue
            fn = getattr(self, "a_" + name)
            t0 = now()
            args = (name, rng) if name in ("vanish", "big_json_push") else (name,)
            self.guarded(name, fn, *args)
            with self.attack_lock:
                self.attack_runs.setdefault(name, []).append((t0, now()))
            self.stop.wait(0.2)

    # ------------------------------------------------------------ warm-up, housekeeping

    def warm_up(self):
        """One of each good operation, sequentially, before the clock starts."""
        rng = random.Random(1)
        self.engines.refresh()
        for name, fn in self.good_ops():
            self.guarded(name, fn, rng, "soak-warm")
        state = {"ws": None, "last_seq": None, "done": {}, "next_id": 0}
        try:
            self.ws_connect(state, "soak-warm", resume=False)
            self.guarded("ws execute", self.ws_execute, state, rng)
            self.guarded("ws submit", self.ws_submit, state, rng, "soak-warm")
        except (OSError, WebSocketError, ValueError, harness.Failure) as e:
            self.tally.unexpected("ws connect", "warm-up: %s" % e)
        if state["ws"] is not None:
            state["ws"].close(timeout=2)

    def good_ops(self):
        return [("execute", self.g_execute), ("push/pull small", self.g_push_pull),
                ("raw 1e5 array", self.g_raw_array), ("scatter/gather", self.g_scatter_gather),
                ("balanced task", self.g_task), ("task batch", self.g_task_batch),
                ("map", self.g_map), ("task query", self.g_task_query),
                ("mpi allreduce", self.g_allreduce)]

    def rss_mb(self):
        kb = harness.proc_rss_kb(self.cluster.controller.pid)
        return kb / 1024.0 if kb else None

    def housekeeping(self, deadline):
        last_print = now()
        for i in range(10 ** 7):
            if now() >= deadline or self.stop.is_set():
                return
            if not self.controller_alive():
                self.controller_died = "controller exited with status %s at %.0f s" % (
                    self.cluster.controller.returncode, now() - self.started)
                self.stop.set()
                return
            rss = self.rss_mb()
            if rss:
                self.rss_samples.append((now() - self.started, rss))
            self.holder.poll()
            if now() - last_print >= self.args.progress:
                last_print = now()
                self.progress(rss)
            time.sleep(0.5)

    def progress(self, rss):
        ok, exp, churn, bad = self.tally.totals()
        bad_s = ", ".join("%s %d" % kv for kv in sorted(bad.items())) or "none"
        with self.engines.lock:
            live, jobs, killed = (sum(len(g) for g in self.engines.groups.values()),
                                  len(self.engines.groups), len(self.engines.killed_jobs))
        sys.stdout.write("[%4.0fs] rss %.1f MB | ok %d | expected errors %d (churn %d) | "
                         "unexpected %d (%s) | engines live %d in %d job(s), %d job(s) killed, "
                         "%d held sockets\n"
                         % (now() - self.started, rss or 0, ok, exp, churn, sum(bad.values()),
                            bad_s, live, jobs, killed, self.holder.open_count()))
        sys.stdout.flush()


# ---------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description="ippc soak: good and hostile clients and engine "
                                "churn against one cluster, then checks")
    p.add_argument("--seconds", type=float, default=180, help="load duration (default 180)")
    p.add_argument("--attacks", default="all",
                   help="comma list of attacks, 'all' (default), 'none', or all minus some: "
                        "'all,-nbuf_bypass'; --list-attacks shows them")
    p.add_argument("--list-attacks", action="store_true")
    p.add_argument("--churn", type=float, default=None,
                   help="seconds between engine job replacements (default 30, or half of "
                        "--seconds when shorter; 0 = none)")
    p.add_argument("--rest-clients", type=int, default=3)
    p.add_argument("--ws-clients", type=int, default=2)
    p.add_argument("--bad-clients", type=int, default=3)
    p.add_argument("--pace", type=float, default=0.05,
                   help="seconds each good client rests between two operations (default 0.05)")
    p.add_argument("--progress", type=float, default=5)
    p.add_argument("--rss-bound-mb", type=float, default=RSS_BOUND_MB,
                   help="end RSS must be below warm-up RSS + this (default %d)" % RSS_BOUND_MB)
    p.add_argument("--marker-file", help="write the cluster's marker (temp dir) here")
    args = p.parse_args(argv)
    if args.list_attacks:
        for name, (what, rest) in ATTACKS.items():
            print("%-22s %s" % (name, what))
        sys.exit(0)
    chosen = []
    for item in [x.strip() for x in args.attacks.split(",") if x.strip()]:
        if item == "all":
            chosen = list(ATTACKS)
        elif item == "none":
            chosen = []
        elif item.startswith("-") and item[1:] in ATTACKS:
            chosen = [a for a in chosen if a != item[1:]]
        elif item in ATTACKS:
            if item not in chosen:
                chosen.append(item)
        else:
            p.error("unknown attack %r (--list-attacks)" % item)
    args.attack_list = chosen
    if args.churn is None:
        args.churn = min(30.0, max(5.0, args.seconds / 2))
    return args


def main(argv):
    args = parse_args(argv)
    t_start = time.time()
    print("soak: %.0f s of load, attacks: %s, engine churn every %.0f s"
          % (args.seconds, ",".join(args.attack_list) or "none", args.churn))
    sys.stdout.flush()

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)

    checks = []   # (name, ok, detail)
    cluster = harness.Cluster(n=4, profile="soak")
    soak = None
    interrupted = None
    rss_warm = rss_end = None
    problems = []
    try:
        cluster.start()
        if args.marker_file:
            with open(args.marker_file, "w") as f:
                f.write(cluster.dir + "\n")
        soak = Soak(cluster, args)
        soak.warm_up()
        time.sleep(1)
        rss_warm = soak.rss_mb()
        print("soak: cluster up on %s (controller pid %d), warm-up done, RSS %.1f MB"
              % (soak.url, cluster.controller.pid, rss_warm or 0))
        sys.stdout.flush()
        soak.started = now()
        deadline = now() + args.seconds

        def spawn(name, target, *a):
            t = threading.Thread(target=target, args=a, name=name, daemon=True)
            t.start()
            soak.threads.append(t)
        spawn("monitor", soak.monitor.run)
        spawn("churn", soak.churn)
        ops = soak.good_ops()
        for n in range(args.rest_clients):
            spawn("rest%d" % n, soak.rest_client, n, [o for o in ops if o[0] != "mpi allreduce"])
        spawn("mpi", soak.rest_client, 99, [o for o in ops if o[0] == "mpi allreduce"])
        for n in range(args.ws_clients):
            spawn("ws%d" % n, soak.ws_client, n)
        # The first round runs every attack once, the known defects first
        # (so a short run has them all); then random ones, each past its rest.
        queue = [a for a in KNOWN_DEFECTS if a in args.attack_list] + \
            [a for a in args.attack_list if a not in KNOWN_DEFECTS]
        soak.attackers = args.bad_clients if queue else 0
        if not soak.attackers:
            soak.attackers_done.set()
        for n in range(soak.attackers):
            spawn("bad%d" % n, soak.bad_client, n, queue)
        soak.housekeeping(deadline)
        soak.stop_time = now()
        soak.stop.set()
        join_deadline = now() + 130
        for t in soak.threads:
            t.join(max(0.1, join_deadline - now()))
        stuck = [t.name for t in soak.threads if t.is_alive()]
        checks.append(("client threads end within 130 s of the deadline", not stuck,
                       "stuck: %s" % stuck if stuck else ""))
        soak.holder.finish()
        if soak.controller_alive():
            time.sleep(2)
            rss_end = soak.rss_mb()
    except KeyboardInterrupt as e:
        interrupted = str(e) or "interrupted"
        if soak is not None:
            soak.stop.set()
    except harness.HarnessError as e:
        interrupted = "cluster: %s" % e
    finally:
        died = soak.controller_died if soak else None
        if soak is not None and not soak.controller_alive() and not died:
            died = "controller exited with status %s" % cluster.controller.returncode
        engines_at_end = None
        if soak is not None and not died:
            try:
                engines_at_end = cluster.api.engines()
            except (harness.HarnessError, OSError):
                pass
        problems = cluster.stop()
        leftovers = harness.sweep()

    if interrupted:
        print("soak: stopped early: %s" % interrupted)
    if soak is None:
        print("soak: 0 passed, 1 failed")
        return 1

    tally = soak.tally
    # The table.
    print("\n%-24s %8s %9s %11s  %s" % ("kind", "ok", "expected", "unexpected",
                                        "expected because"))
    for kind in tally.order:
        r = tally.rows[kind]
        reasons = ", ".join("%s %d" % kv for kv in sorted(r["reasons"].items(),
                                                          key=lambda kv: -kv[1]))
        print("%-24s %8d %9d %11d  %s" % (kind, r["ok"], r["expected"], r["unexpected"],
                                          short(reasons, 90)))
    peak = max((r for _, r in soak.rss_samples), default=0)
    print("controller RSS: warm-up %.1f MB, peak %.1f MB, end %s MB (bound: end < warm-up + "
          "%.0f MB); engine jobs started %d, killed %d; %d events seen by the monitor"
          % (rss_warm or 0, peak, "%.1f" % rss_end if rss_end else "n/a", args.rss_bound_mb,
             soak.engines.started_jobs + 1, len(soak.engines.killed_jobs), soak.monitor.events))
    print()

    def row_ok(kind):
        r = tally.row(kind)
        return r is None or r["unexpected"] == 0, r

    def detail(r):
        return " | ".join(r["msgs"]) if r else ""

    checks.insert(0, ("the controller never died", not died, died or ""))
    good = ["execute", "mpi allreduce", "push/pull small", "raw 1e5 array", "scatter/gather",
            "balanced task", "task batch", "map", "task query"]
    for group, kinds in (("good REST clients", good),
                         ("good WS clients", ["ws connect", "ws execute", "ws push/pull",
                                              "ws submit", "ws resume"])):
        bad = [(k, tally.row(k)) for k in kinds if not row_ok(k)[0]]
        none = [k for k in kinds if tally.row(k) is None or
                tally.row(k)["ok"] + tally.row(k)["expected"] == 0]
        msg = "; ".join("%s: %s" % (k, detail(r)) for k, r in bad)
        if none:
            msg += ("; " if msg else "") + "never succeeded: %s" % ", ".join(none)
        if not interrupted:   # an interrupted run's clients die with the cluster
            checks.append(("%s: correct answers or churn-explained errors" % group,
                           not bad and not none, msg))
    ok, r = row_ok("stream monitor")
    silences = list(soak.monitor.silences)
    checks.append(("stream monitor: seqs in order, reconnects resume", ok, detail(r)))
    ok, r = row_ok("live streams")
    checks.append(("live streams never go silent (monitor and WS clients get their events)",
                   ok, detail(r)))
    ok, r = row_ok("engine churn")
    checks.append(("engine churn: jobs start, SIGKILLed jobs are marked dead", ok, detail(r)))
    # Every engine death: churn, or an attack that already failed for it.
    if engines_at_end is not None:
        dead = sorted(e["id"] for e in engines_at_end if e.get("state") == "dead")
        unexplained = [i for i in dead if i not in soak.engines.killed
                       and i not in soak.engines.attack_dead]
        checks.append(("every engine death is explained (churn or a failed attack)",
                       not unexplained, "dead and not killed by the soak: %s (monitor reasons: %s)"
                       % (unexplained, {i: soak.monitor.deaths.get(i) for i in unexplained})
                       if unexplained else ""))
    for name in args.attack_list:
        ok, r = row_ok(name)
        runs = soak.attack_count(name)
        defect = " [known defect]" if name in KNOWN_DEFECTS else ""
        if not runs and not interrupted:
            checks.append(("attack %s%s" % (name, defect), False, "never ran"))
        else:
            checks.append(("attack %s: %s%s" % (name, ATTACKS[name][0], defect), ok,
                           "%s (%d runs)" % (detail(r), runs) if not ok else ""))
    if silences:
        print("# the monitor reconnected after silence %d time(s) at %s s"
              % (len(silences), [round(t - soak.started) for t in silences]))
    if rss_warm and rss_end:
        checks.append(("controller RSS at the end < warm-up + %.0f MB" % args.rss_bound_mb,
                       rss_end < rss_warm + args.rss_bound_mb,
                       "warm-up %.1f MB, end %.1f MB" % (rss_warm, rss_end)))
    elif not interrupted:
        checks.append(("controller RSS at the end < warm-up + %.0f MB" % args.rss_bound_mb,
                       False, "not measured (controller gone)"))
    san = [p for p in problems if p.startswith("sanitizer")]
    other = [p for p in problems if not p.startswith("sanitizer")]
    checks.append(("no sanitizer report in the logs", not san, " ".join(san)[:3000]))
    checks.append(("the cluster stops cleanly and leaves no process behind",
                   not other and not leftovers,
                   "; ".join(other + (["left behind: " + leftovers] if leftovers else []))))
    if interrupted:
        checks.append(("the run was not interrupted", False, interrupted))

    passed = failed = 0
    for name, ok, why in checks:
        if ok:
            passed += 1
            print("PASS %s" % name)
        else:
            failed += 1
            print("FAIL %s%s" % (name, (": " + why.replace("\n", "\n    ")) if why else ""))
    print("soak: %.0f s in all" % (time.time() - t_start))
    print("soak: %d passed, %d failed" % (passed, failed))
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        rc = main(sys.argv[1:])
    except KeyboardInterrupt:
        harness.sweep(grace=3)
        print("soak: interrupted")
        print("soak: 0 passed, 1 failed")
        rc = 1
    sys.stdout.flush()
    os._exit(rc)
