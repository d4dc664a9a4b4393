"""test_streams.py — the client WebSocket /ws (docs/streams.md): the snapshot,
engine and task events, stdout while a task runs, subscriptions, resume,
backpressure, bad input, authentication, the request channel (same bodies as
REST) and `ippc watch`.  The client is wsclient.py (stdlib, RFC 6455)."""

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time

import harness
from harness import CLI, Cluster, Failure, check, expect
from common import same, show, view
from wsclient import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, Closed,
                      HandshakeError, ProtocolError, WebSocket, WebSocketError, accept_key,
                      encode_frame)

EVENT_TIMEOUT = float(os.environ.get("IPPC_TEST_EVENT_TIMEOUT", "60"))
SUBPROTOCOL = "ippc.client.v1"
BUSY = "local t = mpi.wtime(); while mpi.wtime() - t < 0.3 do end"
THREE_LINES = ("print('one'); %s; print('two'); %s; print('three'); return 'done'"
               % (BUSY, BUSY))


# ---------------------------------------------------------------- helpers

def ws_url(c):
    url = c.client_info.get("ws_url")
    return url or c.client_info["url"].replace("http://", "ws://", 1).rstrip("/") + "/ws"


def tag(name):
    return "%s-%d-%d" % (name, os.getpid(), int(time.time() * 1000) % 1000000)


def short(msg):
    return json.dumps(msg)[:400]


class Stream:
    """A connected client that keeps every message it reads, with its arrival
    time, and checks that the first one is the snapshot."""

    def __init__(self, c, background=False, **kw):
        kw.setdefault("token", c.client_info["token"])
        kw.setdefault("timeout", 30)
        self.ws = WebSocket.connect(ws_url(c), **kw)
        self.log = []        # [(monotonic arrival, message)]
        # background: a thread reads the socket all the time, as a real client
        # that follows the stream would (the test thread may be busy elsewhere,
        # e.g. in a REST call, while the events flow).
        self.queue = None
        if background:
            self.queue = queue.Queue()
            threading.Thread(target=self._reader, daemon=True).start()
        self.snapshot = self.next(30, "the snapshot")
        check(self.snapshot.get("type") == "snapshot",
              "the first message must be the snapshot: %s" % short(self.snapshot))

    def _reader(self):
        while True:
            try:
                self.queue.put(self.ws.recv_json(None))
            except Exception as e:  # Closed, OSError, ProtocolError: the end
                self.queue.put(e)
                return

    def _recv(self, timeout):
        if self.queue is None:
            return self.ws.recv_json(timeout)
        try:
            got = self.queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no message within %.0f s" % timeout)
        if isinstance(got, Exception):
            self.queue.put(got)  # every later read sees the end too
            raise got
        return got

    def next(self, timeout, what="a message"):
        try:
            msg = self._recv(timeout)
        except TimeoutError:
            raise Failure("%s: nothing within %.0f s; last messages: %s"
                          % (what, timeout, self.tail()))
        except Closed as e:
            raise Failure("%s: the controller closed the socket (code %s %r); last messages: %s"
                          % (what, e.code, e.reason, self.tail()))
        check(isinstance(msg, dict), "a message that is not a JSON object: %s" % short(msg))
        self.log.append((time.monotonic(), msg))
        return msg

    def tail(self, n=6):
        return " | ".join(short(m) for _, m in self.log[-n:]) or "(none)"

    def wait(self, pred, what, timeout=EVENT_TIMEOUT):
        """Reads until a message satisfies pred; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("%s: not seen within %.0f s; last messages: %s"
                              % (what, timeout, self.tail()))
            msg = self.next(left, what)
            if pred(msg):
                return msg

    def request(self, msg, what, timeout=EVENT_TIMEOUT):
        """Sends a request-channel message; returns the reply with its id."""
        self.ws.send_json(msg)
        rid = msg.get("id")
        return self.wait(lambda m: m.get("type") == "reply" and m.get("id") == rid,
                         "%s: reply to %s" % (what, short(msg)), timeout)

    def ping(self, what):
        self.ws.send_json({"op": "ping"})
        self.wait(lambda m: m.get("type") == "pong", "%s: pong" % what, 15)

    def events(self, pred=lambda m: True):
        return [m for _, m in self.log if "seq" in m and m.get("type") != "snapshot" and pred(m)]

    def close(self):
        if self.queue is not None:
            self.ws.abort()  # the reader thread owns the receiving side
            return
        self.ws.close(timeout=2)


def task_events(stream, task_id):
    return stream.events(lambda m: m.get("type", "").startswith("task.")
                         and m.get("task") == task_id)


def wait_completed(stream, ids, what):
    """Reads until a task.completed event arrived for every id; returns them."""
    want = set(ids)
    done = {}
    for _, m in stream.log:
        if m.get("type") == "task.completed" and m.get("task") in want:
            done[m["task"]] = m

    def pred(m):
        if m.get("type") == "task.completed" and m.get("task") in want:
            done[m["task"]] = m
        return len(done) == len(want)

    if len(done) < len(want):
        stream.wait(pred, "%s: task.completed for %d tasks (%d seen)" % (what, len(want),
                                                                          len(done)))
    return done


def check_event_shape(m):
    check(isinstance(m.get("seq"), int) and isinstance(m.get("type"), str),
          "an event has an integer seq and a type: %s" % short(m))
    t = m.get("time")
    check(isinstance(t, str) and t.endswith("Z") and "T" in t and "." in t
          and len(t.rsplit(".", 1)[1]) == 7,
          "event time is ISO 8601 UTC with microseconds: %s" % short(m))


def check_increasing(events, what):
    seqs = [m["seq"] for m in events]
    check(all(a < b for a, b in zip(seqs, seqs[1:])),
          "%s: seqs must increase in arrival order: %s" % (what, seqs[:60]))


def submit(api, spec, what):
    r = api.post("/api/v1/tasks", spec)
    body = expect(r, 202, what)
    return body


def without_request(body):
    """A direct-view answer without its request id (a new one per call)."""
    if isinstance(body, dict):
        return {k: v for k, v in body.items() if k != "request"}
    return body


class LineReader:
    """Collects the stdout lines of a subprocess in a thread."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream):
        for raw in iter(stream.readline, b""):
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()

    def wait(self, pred, what, timeout=EVENT_TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if pred(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure("%s: not printed within %.0f s; output so far:\n%s"
                                  % (what, timeout, "\n".join(self.lines[-20:])))
                self.cond.wait(min(left, 0.5))


def json_line(line):
    try:
        doc = json.loads(line)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def start_watch(c, *args):
    p = subprocess.Popen([CLI, "watch", "--profile", c.profile] + list(args), env=c.env(),
                         cwd=c.dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    c.tracker.add_popen(p)
    return p, LineReader(p.stdout)


def watch_stderr(p):
    """The stderr of an ended ippc watch; a sanitizer report in it fails."""
    err = p.stderr.read().decode("utf-8", "replace")
    for mark in harness.SANITIZER_MARKS:
        check(mark not in err, "sanitizer report from ippc watch:\n%s" % err[-3000:])
    return err


def stop_watch(p):
    """SIGINT; returns (exit status, stderr).  Kills it if SIGINT is ignored."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=5)
        return None, watch_stderr(p)
    return p.returncode, watch_stderr(p)


# ---------------------------------------------------------------- the client itself

def test_wsclient_rfc6455(_unused=None):
    """wsclient.py against the examples of RFC 6455 (sections 1.3 and 5.7),
    over a socketpair: no controller needed."""
    check(accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
          "Sec-WebSocket-Accept of the RFC's example key")
    check(encode_frame(OP_TEXT, b"Hello", mask=False) == bytes.fromhex("810548656c6c6f"),
          "unmasked 'Hello'")
    check(encode_frame(OP_TEXT, b"Hello", mask_key=bytes.fromhex("37fa213d"))
          == bytes.fromhex("818537fa213d7f9f4d5158"), "masked 'Hello'")
    check(encode_frame(OP_BINARY, bytes(256), mask=False)[:4] == bytes.fromhex("827e0100"),
          "256-byte binary: 16-bit length")
    check(encode_frame(OP_BINARY, bytes(65536), mask=False)[:10]
          == bytes.fromhex("827f0000000000010000"), "64 KiB binary: 64-bit length")

    mine, theirs = socket.socketpair()
    try:
        ws = WebSocket(mine)
        # "Hel" + ping + "lo": a fragmented message with a control frame inside.
        theirs.sendall(bytes.fromhex("010348656c") + encode_frame(OP_PING, b"p1", mask=False)
                       + bytes.fromhex("80026c6f"))
        op, data = ws.recv(timeout=5)
        check(op == OP_TEXT and data == "Hello", "fragmented text reassembled: %r" % data)
        pong = theirs.recv(64)
        check(pong[0] == 0x80 | OP_PONG and pong[1] & 0x80 and len(pong) == 2 + 4 + 2,
              "the ping is answered by a masked pong with its payload: %r" % pong)
        # A binary message in three frames, half of it arriving late.
        frames = (encode_frame(OP_BINARY, b"ab", fin=False, mask=False)
                  + encode_frame(OP_CONT, b"cd", fin=False, mask=False)
                  + encode_frame(OP_CONT, b"ef" * 40000, mask=False))
        theirs.sendall(frames[:30])
        try:
            ws.recv(timeout=0.2)
            raise Failure("recv returned a message that had not all arrived")
        except TimeoutError:
            pass
        theirs.sendall(frames[30:])
        op, data = ws.recv(timeout=5)
        check(op == OP_BINARY and data == b"abcd" + b"ef" * 40000,
              "binary continuation frames reassembled after a timeout")
        theirs.sendall(encode_frame(OP_CLOSE, b"\x03\xe8bye", mask=False))
        try:
            ws.recv(timeout=5)
            raise Failure("a close frame must end recv")
        except Closed as e:
            check(e.code == 1000 and e.reason == "bye", "close code and reason: %s" % e)
        echo = theirs.recv(64)
        check(echo[0] == 0x80 | OP_CLOSE, "the close is answered: %r" % echo)
    finally:
        mine.close()
        theirs.close()
    return []


# ---------------------------------------------------------------- connecting

def test_auth(c):
    url = ws_url(c)
    token = c.client_info["token"]
    for what, kw in (("no token", {}),
                     ("wrong token in the header", {"token": "0" * 64}),
                     ("wrong token in the query", {"token": "0" * 64, "auth": "query"}),
                     ("wrong token as subprotocol", {"token": "bad", "auth": "protocol"})):
        try:
            ws = WebSocket.connect(url, timeout=15, **kw)
            ws.abort()
            raise Failure("%s: the upgrade was accepted" % what)
        except HandshakeError as e:
            check(e.status == 401, "%s: expected HTTP 401, got %s (%s)" % (what, e.status, e))
    for auth in ("header", "query", "protocol"):
        s = Stream(c, token=token, auth=auth)
        try:
            check(s.ws.protocol == SUBPROTOCOL,
                  "token as %s: the server must choose %s, chose %r"
                  % (auth, SUBPROTOCOL, s.ws.protocol))
            snap = s.snapshot
            check(isinstance(snap.get("seq"), int) and isinstance(snap.get("engines"), list)
                  and isinstance(snap.get("tasks"), list), "snapshot fields: %s" % short(snap))
            check(sorted(snap.get("topics", [])) == ["engines", "stdout", "tasks"],
                  "a new connection is subscribed to every topic: %s" % short(snap))
            check(len([e for e in snap["engines"] if e.get("state") != "dead"]) >= 4,
                  "the snapshot lists the live engines: %s" % short(snap))
            s.ping("token as %s" % auth)
        finally:
            s.close()
    expect(c.api.get("/api/v1/info"), 200, "REST after refused upgrades")


# ---------------------------------------------------------------- engine events

def test_engines_join_and_die(_unused=None):
    """A 4-rank job and a 1-rank job join; the 1-rank one is killed (killing
    a rank of the 4-rank job could take its MPI peers down, test_failure.py)."""
    with Cluster(jobs=[4, 1], profile="streams-engines",
                 controller_args=["--heartbeat-timeout", "3"]) as c:
        join_and_die(c)
    return []


def join_and_die(c):
    c.start(engines=False)
    s = Stream(c)
    try:
        check(s.snapshot.get("engines") == [] and s.snapshot.get("tasks") == [],
              "snapshot before any engine: %s" % short(s.snapshot))
        c.start_engines()
        registered = {}

        def five(m):
            if m.get("type") == "engine.registered":
                e = m.get("engine")
                check(isinstance(e, dict) and isinstance(e.get("id"), int),
                      "engine.registered carries the Engine object: %s" % short(m))
                registered[e["id"]] = e
            return len(registered) == 5
        s.wait(five, "engine.registered for 5 engines")
        by_size = sorted((e.get("size"), e.get("rank")) for e in registered.values())
        check(by_size == [(1, 0), (4, 0), (4, 1), (4, 2), (4, 3)],
              "ranks 0..3 of a 4-rank job and rank 0 of a 1-rank job: %s"
              % show(list(registered.values())))
        rest = {e["id"]: e for e in c.api.engines()}
        for eid, e in registered.items():
            check(rest.get(eid, {}).get("pid") == e.get("pid"),
                  "the Engine object matches GET /api/v1/engines: %s vs %s"
                  % (show(e), show(rest.get(eid))))
        status = s.wait(lambda m: m.get("type") == "engine.status", "an engine.status", 15)
        for field in ("engine", "state", "queue", "tasks_done", "heartbeat_age", "rss"):
            check(field in status, "engine.status has %r: %s" % (field, short(status)))
        c.record_engines()
        victim = next(i for i, e in registered.items() if e.get("size") == 1)
        os.kill(c.engine_pids[victim], signal.SIGKILL)
        dead = s.wait(lambda m: m.get("type") == "engine.dead" and m.get("engine") == victim,
                      "engine.dead for engine %d after SIGKILL" % victim)
        check(isinstance(dead.get("reason"), str), "engine.dead has a reason: %s" % short(dead))
        events = s.events()
        for m in events:
            check_event_shape(m)
        check_increasing(events, "engine events")
    finally:
        s.close()


# ---------------------------------------------------------------- task events

def test_task_sequence(c):
    s = Stream(c)
    try:
        name = tag("seq")
        t = submit(c.api, {"code": THREE_LINES, "tags": [name]}, "three-line task")
        tid = t["id"]
        done = wait_completed(s, [tid], "three-line task")[tid]
        arrivals = {id(m): at for at, m in s.log}
        events = task_events(s, tid)
        types = [m["type"] for m in events]
        check(types[0] == "task.submitted" and types[1] == "task.started"
              and types[-1] == "task.completed"
              and all(x == "task.stdout" for x in types[2:-1]) and len(types) >= 4,
              "submitted, started, stdout..., completed: %s" % types)
        sub = events[0]
        check(sub.get("kind") == "balanced" and sub.get("tags") == [name]
              and "request" in sub and "engine" in sub,
              "task.submitted fields: %s" % short(sub))
        started = events[1]
        check(isinstance(started.get("engine"), int), "task.started has the engine: %s"
              % short(started))
        chunks = events[2:-1]
        text = "".join(m.get("data", "") for m in chunks)
        check(text == "one\ntwo\nthree\n", "the stdout chunks give the three lines: %r" % text)
        check(all(m.get("engine") == started["engine"] for m in chunks + [done]),
              "stdout and completion name the engine it started on")
        check(done.get("state") == "completed" and same(done.get("result"), "done"),
              "task.completed carries the result: %s" % short(done))
        first = next(m for m in chunks if "one" in m.get("data", ""))
        ahead = arrivals[id(done)] - arrivals[id(first)]
        check(ahead >= 0.15,
              "'one' must stream while the task runs (it arrived %.3f s before task.completed;"
              " the task busy-waits 0.6 s after printing it)" % ahead)
        for m in events:
            check_event_shape(m)
        check_increasing(events, "task events")
        # A failing task: task.completed with the error.
        bad = submit(c.api, {"code": "error('ws boom')"}, "failing task")
        failed = wait_completed(s, [bad["id"]], "failing task")[bad["id"]]
        err = failed.get("error") or {}
        check(failed.get("state") == "failed" and err.get("ename") == "RuntimeError"
              and "ws boom" in err.get("evalue", "") and "traceback" in err,
              "task.completed of a failure carries the error: %s" % short(failed))
        # Direct-view work shows up as tasks too.
        r = c.api.post(view("0", "execute"), {"code": "return 1"})
        expect(r, 200, "direct execute")
        ev = s.wait(lambda m: m.get("type") == "task.submitted" and m.get("kind") == "direct",
                    "task.submitted of kind direct for a view execute", 20)
        # The id an event (and `ippc watch`) shows answers on REST.
        t = expect(c.api.get("/api/v1/tasks/%d" % ev["task"]), (200, 202), "direct task by id")
        check(t.get("kind") == "direct" and t.get("request") == ev.get("request"),
              "GET /api/v1/tasks/{id} of a direct task: %r" % t)
    finally:
        s.close()


def test_subscribe_filter(c):
    s = Stream(c)
    try:
        wanted, other = tag("want"), tag("other")
        s.ws.send_json({"op": "subscribe", "topics": ["tasks"], "filter": {"tags": [wanted]}})
        ack = s.wait(lambda m: m.get("type") == "subscribed", "subscribed", 15)
        check(ack.get("topics") == ["tasks"] and ack.get("filter", {}).get("tags") == [wanted],
              "the answer repeats the subscription: %s" % short(ack))
        mark = len(s.log)
        r = c.api.post("/api/v1/tasks?block=true", {"code": "print('x') return 1",
                                                    "tags": [other]})
        expect(r, 200, "task with another tag")
        t = submit(c.api, {"code": "print('y') return 2", "tags": [wanted]}, "wanted task")
        wait_completed(s, [t["id"]], "wanted task")
        seen = [m for _, m in s.log[mark:] if "seq" in m]
        stray = [m for m in seen if not (m.get("type") in ("task.submitted", "task.started",
                                                            "task.completed")
                                         and m.get("task") == t["id"])]
        check(not stray, "only the wanted task's events (no stdout, no engines): %s"
              % " | ".join(short(m) for m in stray[:5]))
        check([m["type"] for m in seen] == ["task.submitted", "task.started", "task.completed"],
              "the wanted task's task events: %s" % [m["type"] for m in seen])

        s.ws.send_json({"op": "subscribe", "topics": ["engines", "tasks", "stdout"]})
        s.wait(lambda m: m.get("type") == "subscribed", "subscribed to all", 15)
        s.ws.send_json({"op": "unsubscribe", "topics": ["stdout"]})
        ack = s.wait(lambda m: m.get("type") == "subscribed", "unsubscribe answer", 15)
        check(sorted(ack.get("topics", [])) == ["engines", "tasks"],
              "unsubscribe removes the topic: %s" % short(ack))
        mark = len(s.log)
        t = submit(c.api, {"code": "print('z') return 3"}, "task after unsubscribe")
        wait_completed(s, [t["id"]], "task after unsubscribe")
        check(not [m for _, m in s.log[mark:] if m.get("type") == "task.stdout"],
              "no task.stdout after unsubscribing from stdout")
    finally:
        s.close()


# ---------------------------------------------------------------- resume

def drain(s, seconds=0.5):
    """Reads for a while (heartbeats never let the stream go quiet); returns
    the highest seq seen."""
    last = s.snapshot["seq"]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            m = s.ws.recv_json(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        s.log.append((time.monotonic(), m))
        if isinstance(m.get("seq"), int):
            last = max(last, m["seq"])
    return last


def read_until_closed(ws, seconds):
    """Every message until the connection ends (or seconds pass); returns
    (messages, the Closed/error that ended it or None)."""
    got = []
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return got, None
        try:
            got.append(ws.recv_json(left))
        except TimeoutError:
            return got, None
        except (Closed, OSError, WebSocketError) as e:
            return got, e


def test_resume(c):
    notes = []
    s = Stream(c)
    last = drain(s)
    s.close()
    name = tag("resume")
    ids = []
    for i in range(5):
        r = c.api.post("/api/v1/tasks?block=true", {"code": "print(%d) return %d" % (i, i),
                                                    "tags": [name]})
        ids.append(expect(r, 200, "task %d while disconnected" % i)["id"])
    s = Stream(c)
    try:
        now = s.snapshot["seq"]
        check(now > last, "5 tasks ran while no client was connected, but the snapshot seq did "
              "not move (%d -> %d): events must be numbered and kept in the ring even with no "
              "client, or there is nothing to resume" % (last, now))
        s.ws.send_json({"op": "resume", "since": last})
        wait_completed(s, ids, "replayed completions")
        s.wait(lambda m: isinstance(m.get("seq"), int) and m["seq"] >= now,
               "replay up to the snapshot's seq %d" % now, 20)
        events = s.events()
        check(not [m for m in s.log if m[1].get("type") == "gap"], "no gap within the ring")
        seqs = [m["seq"] for m in events]
        replayed = [q for q in seqs if q <= now]
        live = [q for q in seqs if q > now]
        check(replayed == list(range(last + 1, now + 1)),
              "the replay gives seqs %d..%d in order, each once: got %s"
              % (last + 1, now, replayed[:80]))
        check(live == list(range(now + 1, now + 1 + len(live))),
              "live events after the snapshot: consecutive seqs, each once: %s" % live[:80])
        if seqs != replayed + live:
            notes.append("live events arrived before the end of the replay: %s" % seqs[:40])
        for tid in ids:
            types = [m["type"] for m in task_events(s, tid)]
            check(types[:2] == ["task.submitted", "task.started"]
                  and types[-1] == "task.completed" and "task.stdout" in types,
                  "every event of task %d replayed: %s" % (tid, types))
    finally:
        s.close()
    return notes


RING = 10000  # events the controller keeps for resume (README, docs/streams.md)


class Resumer:
    """Resumes on one connection subscribed to everything and accounts for
    every seq.  Events are numbered and queued to the client under one lock,
    and a resume is answered under it too, so when a resume is handled the
    controller's last seq E is the highest seq this client already had
    (delivered live) or the snapshot's: the ring then holds
    max(1, E - RING + 1)..E, exactly, whatever the heartbeats did meanwhile."""

    def __init__(self, s):
        self.s = s
        self.top = s.snapshot["seq"]   # highest seq seen so far

    def resume(self, since):
        """Returns (gap message or None, E, the replayed seqs)."""
        s = self.s
        s.ws.send_json({"op": "resume", "since": since})
        what = "resume since %d" % since
        gap, first = None, None
        while first is None:
            m = s.next(30, what)
            if m.get("type") == "gap":
                gap = m
                continue
            seq = m.get("seq")
            if not isinstance(seq, int) or m.get("type") == "snapshot":
                continue
            if gap is None and seq > self.top:
                self.top = seq      # live, from before the resume was handled
                continue
            first = seq             # live seqs only grow: this is the replay
        end = self.top
        replayed = [first]
        while len(replayed) < end - first + 1:
            m = s.next(30, "%s: the replay up to %d (got %d events from %d)"
                       % (what, end, len(replayed), first))
            if isinstance(m.get("seq"), int) and m.get("type") != "snapshot":
                replayed.append(m["seq"])
        return gap, end, replayed

    def check(self, since, gap, end, replayed):
        """The answer to a resume since `since` handled at seq `end` must be
        what a ring of RING events gives."""
        oldest = max(1, end - RING + 1)
        what = "resume since %d at seq %d" % (since, end)
        if since + 1 < oldest:
            check(gap is not None and gap.get("since") == since and gap.get("oldest") == oldest,
                  "%s: the ring of %d holds %d..%d, so a gap message with oldest %d comes "
                  "first; got %s" % (what, RING, oldest, end, oldest, short(gap)))
            want = list(range(oldest, end + 1))
        else:
            check(gap is None, "%s: seq %d is still in the ring of %d (%d..%d), but got %s"
                  % (what, since + 1, RING, oldest, end, short(gap)))
            want = list(range(since + 1, end + 1))
        check(replayed == want, "%s: the replay must be seqs %d..%d in order, each once; got "
              "%d events %s..%s" % (what, want[0], want[-1], len(replayed), replayed[:3],
                                    replayed[-3:]))


def test_resume_gap(c):
    """The ring keeps exactly the last 10,000 events: resuming from 0 gives a
    gap and then the whole ring; from just inside the ring, no gap and the
    replay from there; from one seq further back, a gap."""
    s = Stream(c)
    try:
        if s.snapshot["seq"] < RING + 500:
            n = (RING + 500 - s.snapshot["seq"]) // 3 + 100
            r = c.api.post("/api/v1/tasks", [{"code": "return 0"}] * n, timeout=120)
            ids = expect(r, 202, "a batch of %d tasks to pass the ring" % n)["ids"]
            expect(c.api.get("/api/v1/tasks/%d?wait=120" % ids[-1], timeout=150), 200,
                   "last of the batch")
        s.close()
        s = Stream(c)
        check(s.snapshot["seq"] > RING + 100, "more events than the ring holds: %s"
              % short(s.snapshot))
        resumer = Resumer(s)

        gap, end, replayed = resumer.resume(0)
        check(gap is not None, "resume from 0 after %d events: a gap message first" % end)
        resumer.check(0, gap, end, replayed)

        # Just inside: the oldest seq the ring still holds.  A heartbeat event
        # between reading and resuming moves the ring on (then a gap is right
        # and checked); try again until nothing came between.
        inside = None
        for _ in range(5):
            since = resumer.top - RING
            gap, end, replayed = resumer.resume(since)
            resumer.check(since, gap, end, replayed)
            if gap is None:
                inside = since
                break
        check(inside is not None, "5 resumes from just inside the ring all raced with new "
              "events")

        # Just outside: one seq older than the ring can hold.
        since = resumer.top - RING - 1
        gap, end, replayed = resumer.resume(since)
        check(gap is not None, "resume from %d at seq %d: just outside the ring, a gap"
              % (since, end))
        resumer.check(since, gap, end, replayed)
    finally:
        s.close()


# ---------------------------------------------------------------- backpressure

def test_slow_consumer(c):
    """A client that never reads while 32 MiB of stdout events stream does
    not slow the tasks a fast client follows, and is dropped with a notice."""
    n, size = 64, 512 * 1024
    # Each task works 50 ms of CPU first: the stream then runs at a pace a
    # client in Python follows (unpaced, 4 engines make output faster than
    # one Python reader parses JSON, and the fast client is cut too).
    spec = {"code": "local t = os.clock() + 0.05 while os.clock() < t do end "
                    "io.write(string.rep('x', %d)) return 1" % size}
    fast = Stream(c, background=True)
    slow = None
    try:
        def batch(what):
            t0 = time.monotonic()
            r = c.api.post("/api/v1/tasks", [dict(spec, tags=[what])] * n, timeout=120)
            ids = expect(r, 202, what)["ids"]
            done = wait_completed(fast, ids, what)
            check(all(m.get("state") == "completed" for m in done.values()),
                  "%s: every task completed" % what)
            took = time.monotonic() - t0
            fast.log = [(at, m) for at, m in fast.log if m.get("type") != "task.stdout"]
            return took

        batch(tag("warm"))
        base = batch(tag("alone"))
        slow = WebSocket.connect(ws_url(c), token=c.client_info["token"], rcvbuf=4096,
                                 timeout=30)
        with_slow = batch(tag("with-slow"))
        notes = ["%d tasks x %d KiB stdout: %.2f s alone, %.2f s with a client that never "
                 "reads" % (n, size // 1024, base, with_slow)]
        check(with_slow <= 2 * base + 2,
              "a client that never reads slowed the fast one: %.2f s vs %.2f s alone"
              % (with_slow, base))
        # Now read what the slow client was sent: a slow_consumer notice, then the end.
        got, closed = read_until_closed(slow, 60)
        kinds = {}
        for m in got:
            kinds[m.get("type")] = kinds.get(m.get("type"), 0) + 1
        check(not isinstance(closed, ProtocolError),
              "the frames sent to the slow client break RFC 6455 (%s) after %s" % (closed, kinds))
        check("slow_consumer" in kinds,
              "the slow client gets a slow_consumer message (got %s, then %s)" % (kinds, closed))
        check(closed is not None, "the slow client is disconnected (got %s and no close)"
              % kinds)
        fast.ping("fast client after the slow one was dropped")
        expect(c.api.get("/api/v1/info"), 200, "REST after a slow consumer")
        return notes
    finally:
        fast.close()
        if slow is not None:
            slow.abort()


# ---------------------------------------------------------------- bad input

def test_bad_frames(c):
    s = Stream(c)
    try:
        def error_for(send, what):
            send()
            m = s.wait(lambda m: m.get("type") in ("error", "reply"), what, 15)
            err = m.get("error") or {}
            check(m.get("type") == "error" and err.get("code") == "bad_request"
                  and isinstance(err.get("message"), str),
                  "%s: expected {type:error, error:{code:bad_request,...}}: %s"
                  % (what, short(m)))
            s.ping("after " + what)

        error_for(lambda: s.ws.send_binary(os.urandom(200)), "binary garbage")
        error_for(lambda: s.ws.send_text("this is not JSON {"), "non-JSON text")
        error_for(lambda: s.ws.send_text("[1, 2, 3]"), "a JSON array")
        error_for(lambda: s.ws.send_json({"id": 5, "targets": "all"}), "JSON without op")
        r = s.request({"op": "frobnicate", "id": "u1"}, "unknown op")
        check(r.get("status") == 400 and isinstance((r.get("body") or {}).get("error"), dict),
              "an unknown op gets a reply with status 400 and an error body: %s" % short(r))
        r = s.request({"op": "execute", "id": "u2", "targets": "all"}, "execute without code")
        check(r.get("status") == 400, "a bad request gets status 400 like REST: %s" % short(r))
        s.ws.send_text(json.dumps({"op": "ping"}), fragment=3)
        s.wait(lambda m: m.get("type") == "pong", "a ping sent in 3-byte fragments", 15)
    finally:
        s.close()

    big = json.dumps({"op": "execute", "id": "big", "targets": "all",
                      "code": "return 1 --" + "x" * (17 << 20)})
    for what, fragment in (("a 17 MiB message in one frame", None),
                           ("a 17 MiB message in 1 MiB fragments", 1 << 20)):
        s = Stream(c)
        try:
            try:
                s.ws.send_text(big, fragment=fragment)
            except OSError:
                pass  # the controller may stop reading at 16 MiB
            got, closed = read_until_closed(s.ws, 30)
            errors = [m for m in got if m.get("type") == "error"
                      or (m.get("type") == "reply" and m.get("status") == 413)]
            check(errors, "%s: an error message before the close (got %s, then %s)"
                  % (what, [short(m) for m in got if m.get("type") != "engine.status"][:5],
                     closed))
            check(isinstance(closed, Closed) and closed.code == 1009,
                  "%s: the socket is closed with 1009: %r" % (what, closed))
        finally:
            s.ws.abort()

    # A frame no client may send (unmasked, RFC 6455 5.1): the connection is
    # closed with 1002 (server/wsguard.c; test_hostile.py has more), the
    # server stays up.
    notes = []
    s = Stream(c)
    try:
        s.ws.send_frame(OP_TEXT, b'{"op":"ping"}', mask=False)
        got, closed = read_until_closed(s.ws, 30)
        check(isinstance(closed, Closed) and closed.code == 1002,
              "an unmasked client frame closes the connection with 1002: %r (after %s)"
              % (closed, [short(m) for m in got if m.get("type") != "engine.status"][:2]))
    finally:
        s.ws.abort()
    expect(c.api.get("/api/v1/info"), 200, "REST after bad frames")
    s = Stream(c)
    try:
        s.ping("a new connection after bad frames")
    finally:
        s.close()
    return notes


# ---------------------------------------------------------------- request channel

def test_request_channel(c):
    s = Stream(c)
    api = c.api
    try:
        def same_as_rest(msg, rest, what):
            reply = s.request(msg, what)
            check(reply.get("status") == rest.status,
                  "%s: status %s over WS, %s over REST: %s" % (what, reply.get("status"),
                                                               rest.status, short(reply)))
            check(same(without_request(reply.get("body")), without_request(rest.body)),
                  "%s: the WS body differs from REST's:\n  ws:   %s\n  rest: %s"
                  % (what, show(reply.get("body")), show(rest.body)))
            return reply

        code = "wsx = mpi.rank() + 10; print('r' .. mpi.rank()); return wsx"
        same_as_rest({"op": "execute", "id": "e1", "targets": "all", "code": code},
                     api.post(view("all", "execute"), {"code": code}), "execute")
        same_as_rest({"op": "scatter", "id": 2, "targets": "all", "name": "wsv",
                      "data": list(range(8))},
                     api.post(view("all", "scatter"), {"name": "wsv", "data": list(range(8))}),
                     "scatter")
        same_as_rest({"op": "pull", "id": {"n": 3}, "targets": "all", "names": ["wsv", "wsx"]},
                     api.post(view("all", "pull"), {"names": ["wsv", "wsx"]}), "pull")
        same_as_rest({"op": "gather", "id": [4], "targets": "all", "name": "wsv"},
                     api.get(view("all", "gather/wsv")), "gather")
        same_as_rest({"op": "push", "id": "p", "targets": "0,1", "namespace": {"wsp": [1, 2]}},
                     api.post(view("0,1", "push"), {"namespace": {"wsp": [1, 2]}}), "push")
        same_as_rest({"op": "execute", "id": "e9", "targets": "99", "code": "return 1"},
                     api.post(view("99", "execute"), {"code": "return 1"}),
                     "execute on an engine that does not exist")

        name = tag("wssubmit")
        reply = s.request({"op": "submit", "id": "s1",
                           "task": {"code": "return 40 + 2", "tags": [name]}}, "submit")
        check(reply.get("status") == 202 and isinstance(reply.get("body", {}).get("id"), int),
              "submit answers 202 with the task id: %s" % short(reply))
        one = reply["body"]["id"]
        reply = s.request({"op": "submit", "id": "s2",
                           "tasks": [{"code": "return %d" % i} for i in range(3)]},
                          "submit a list")
        ids = (reply.get("body") or {}).get("ids")
        check(reply.get("status") == 202 and isinstance(ids, list) and len(ids) == 3,
              "a list submit answers with 3 ids: %s" % short(reply))
        done = wait_completed(s, [one] + ids, "submitted over WS")
        check(same(done[one].get("result"), 42), "task.completed of the WS submit: %s"
              % short(done[one]))
        check([done[i].get("result") for i in ids] == [0, 1, 2],
              "results of the list: %s" % [short(done[i]) for i in ids])
        same_as_rest({"op": "task", "id": "t", "task": one}, api.get("/api/v1/tasks/%d" % one),
                     "task")
    finally:
        s.close()


# ---------------------------------------------------------------- ippc watch

def test_watch_cli(c):
    p, out = start_watch(c, "--json")
    p2 = None
    try:
        out.wait(lambda l: json_line(l).get("type") == "snapshot", "ippc watch --json: snapshot",
                 30)
        name = tag("watch")
        t = submit(c.api, {"code": "print('w1') return 7", "tags": [name]}, "watched task")
        out.wait(lambda l: json_line(l).get("type") == "task.completed"
                 and json_line(l).get("task") == t["id"], "task.completed of the task")
        events = [json_line(l) for l in out.lines]
        mine = [m for m in events if m.get("task") == t["id"]]
        types = [m["type"] for m in mine]
        check(types[:2] == ["task.submitted", "task.started"] and types[-1] == "task.completed"
              and "task.stdout" in types, "the task's events, one JSON line each: %s" % types)
        check(all(isinstance(json.loads(l), dict) for l in out.lines),
              "every line is one JSON object")
        check_increasing([m for m in events if "seq" in m and m["type"] != "snapshot"],
                         "ippc watch --json")
        rc, err = stop_watch(p)
        check(rc == 0, "ippc watch exits 0 on SIGINT (got %s): %s" % (rc, err))

        # The table, filtered: no colour when stdout is not a terminal.
        other = tag("watch-table")
        p2, out2 = start_watch(c, "--topics", "tasks", "--tags", other)
        out2.wait(lambda l: " snapshot " in l, "ippc watch: snapshot line", 30)
        t = submit(c.api, {"code": "return 'table'", "tags": [other]}, "task for the table")
        line = out2.wait(lambda l: "task.completed" in l and "task %d " % t["id"] in l,
                         "ippc watch: task.completed line")
        check('"table"' in line and "completed" in line, "the line shows state and result: %r"
              % line)
        check(not [l for l in out2.lines if "\033" in l], "no colour codes into a pipe")
        check(not [l for l in out2.lines if "engine.status" in l or "task.stdout" in l],
              "--topics tasks: no engine or stdout lines: %s" % out2.lines[-10:])
        rc, err = stop_watch(p2)
        check(rc == 0, "ippc watch (table) exits 0 on SIGINT (got %s): %s" % (rc, err))
    finally:
        for proc in (p, p2):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)


def test_watch_reconnect_and_shutdown(_unused=None):
    with Cluster(n=2, profile="streams-watch") as c:
        watch_reconnect_and_shutdown(c)
    return []


def watch_reconnect_and_shutdown(c):
    p = None
    try:
        c.start()
        p, out = start_watch(c, "--json")
        out.wait(lambda l: json_line(l).get("type") == "snapshot", "snapshot", 30)
        r = c.api.post("/api/v1/tasks?block=true", {"code": "return 'before'"})
        before = expect(r, 200, "task before the restart")["id"]
        out.wait(lambda l: json_line(l).get("type") == "task.completed"
                 and json_line(l).get("task") == before, "completion before the restart")
        c.kill_controller(signal.SIGKILL)
        # The new controller reuses the port, token and engine key: the
        # engines reconnect to it, and so must ippc watch.
        c.restart_controller(wait_engines=True)
        # Once it is connected again (a second snapshot), its events stream.
        # (What happened before it reconnected comes from the ring: test_resume.)
        out.wait(lambda l: len([x for x in out.lines if json_line(x).get("type") == "snapshot"])
                 >= 2, "ippc watch connects to the restarted controller", 60)
        r = c.api.post("/api/v1/tasks?block=true", {"code": "return 'after'"})
        after = expect(r, 200, "task after the restart")
        out.wait(lambda l: json_line(l).get("type") == "task.completed"
                 and json_line(l).get("result") == "after",
                 "ippc watch reconnects to the new controller and prints its events", 90)
        check(p.poll() is None, "ippc watch is still running after the restart")
        rc = c.kill_controller(signal.SIGTERM)
        check(rc == 0, "the restarted controller exits 0 on SIGTERM, not %s" % rc)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise Failure("ippc watch did not exit after the controller's shutdown")
        err = watch_stderr(p)
        check(p.returncode == 0, "ippc watch exits 0 on cluster.shutdown (got %s): %s"
              % (p.returncode, err))
        check(out.wait(lambda l: json_line(l).get("type") == "cluster.shutdown",
                       "cluster.shutdown line", 5), "cluster.shutdown printed")
        check(after["state"] == "completed", "task after restart: %r" % after)
    finally:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(timeout=5)


def test_watch_cannot_connect(_unused=None):
    """No cluster, a dead controller, a wrong token: exit 1 with a message."""
    with Cluster(n=1, profile="streams-nowhere") as c:
        r = subprocess.run([CLI, "watch", "--profile", "streams-nowhere"], env=c.env(),
                           capture_output=True, timeout=30)
        err = r.stderr.decode("utf-8", "replace")
        check(r.returncode == 1 and "no cluster is running" in err,
              "no connection file: exit 1 with a message: %d %r" % (r.returncode, err))
        c.start(engines=False)
        path = os.path.join(c.security_dir, "ippc-client.json")
        info = harness.read_json_file(path)
        bad = os.path.join(c.dir, "bad-token.json")
        with open(bad, "w") as f:
            json.dump(dict(info, token="f" * 64), f)
        r = subprocess.run([CLI, "watch", "--file", bad], env=c.env(), capture_output=True,
                           timeout=30)
        err = r.stderr.decode("utf-8", "replace")
        check(r.returncode == 1 and "token" in err,
              "a wrong token: exit 1 naming the token: %d %r" % (r.returncode, err))
        port = socket.socket()
        port.bind(("127.0.0.1", 0))
        free = port.getsockname()[1]
        port.close()
        dead = os.path.join(c.dir, "dead.json")
        with open(dead, "w") as f:
            json.dump(dict(info, url="http://127.0.0.1:%d" % free,
                           ws_url="ws://127.0.0.1:%d/ws" % free), f)
        r = subprocess.run([CLI, "watch", "--file", dead], env=c.env(), capture_output=True,
                           timeout=30)
        err = r.stderr.decode("utf-8", "replace")
        check(r.returncode == 1 and "cannot connect" in err,
              "nothing listening: exit 1 with a message: %d %r" % (r.returncode, err))
    return []


TESTS = [
    ("stream_wsclient_rfc6455", test_wsclient_rfc6455, "own"),
    ("stream_auth", test_auth, "shared"),
    ("stream_task_sequence", test_task_sequence, "shared"),
    ("stream_subscribe_filter", test_subscribe_filter, "shared"),
    ("stream_resume", test_resume, "shared"),
    ("stream_resume_gap", test_resume_gap, "shared"),
    ("stream_slow_consumer", test_slow_consumer, "shared"),
    ("stream_bad_frames", test_bad_frames, "shared"),
    ("stream_request_channel", test_request_channel, "shared"),
    ("stream_watch_cli", test_watch_cli, "shared"),
    ("stream_engines_join_and_die", test_engines_join_and_die, "own"),
    ("stream_watch_reconnect_and_shutdown", test_watch_reconnect_and_shutdown, "own"),
    ("stream_watch_cannot_connect", test_watch_cannot_connect, "own"),
]
