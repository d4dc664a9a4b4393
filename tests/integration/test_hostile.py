"""test_hostile.py — clients that do not play by the rules, on raw sockets:
refused and half-made WebSocket upgrades, oversized and malformed request
heads, silent connections by the thousand, frame floods over the message
limit, unmasked frames.  Each test checks the answer the hostile client gets
and, above all, that everyone else (REST, stream clients, engines) is still
served afterwards.  Tests of kind "shared" leave the shared cluster healthy."""

import base64
import json
import os
import resource
import socket
import struct
import time

from harness import Cluster, Failure, check, expect, stop_checked
from wsclient import OP_BINARY, OP_TEXT, Closed, HandshakeError, WebSocket, encode_frame
from test_streams import Stream, read_until_closed, tag, wait_completed, ws_url
from common import same, values_of

RAW_TIMEOUT = float(os.environ.get("IPPC_TEST_RAW_TIMEOUT", "15"))


# ---------------------------------------------------------------- raw HTTP

def address(c):
    hostport = c.client_info["url"].split("//", 1)[1].rstrip("/")
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


def connect(c, timeout=RAW_TIMEOUT):
    s = socket.create_connection(address(c), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class RawAnswer:
    def __init__(self, status, headers, body, raw):
        self.status = status      # None when the connection ended without an answer
        self.headers = headers    # lower-case names
        self.body = body          # bytes
        self.raw = raw

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None

    def __repr__(self):
        return "HTTP %s %r" % (self.status, self.raw[:600])


def read_answer(s, timeout=RAW_TIMEOUT):
    """Reads one HTTP answer (head + Content-Length body, or until EOF)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure("no complete answer within %.0f s: %r" % (timeout, buf[:300]))
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return RawAnswer(None, {}, b"", buf)
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if lines[0].startswith("HTTP/") and status != 101:
        want = int(headers.get("content-length", "-1"))
        while want < 0 or len(body) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            body += chunk
        if want >= 0:
            body = body[:want]
    r = RawAnswer(status, headers, body, buf)
    r.version = parts[0]
    return r


def raw_request(c, data, timeout=RAW_TIMEOUT):
    """Sends data on a new connection and reads the answer."""
    s = connect(c, timeout)
    try:
        try:
            s.sendall(data if isinstance(data, bytes) else data.encode("latin-1"))
        except OSError:
            pass  # the controller may answer and close before reading it all
        return read_answer(s, timeout)
    finally:
        s.close()


def upgrade(path, headers=(), key=True, version=True, protocol=None):
    lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1", "Upgrade: websocket",
             "Connection: Upgrade"]
    if key:
        lines.append("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
    if version:
        lines.append("Sec-WebSocket-Version: 13")
    if protocol:
        lines.append("Sec-WebSocket-Protocol: " + protocol)
    lines += list(headers)
    return "\r\n".join(lines) + "\r\n\r\n"


def still_served(c, what, stream=None):
    """REST answers, the engines are all live, and a stream client (a new one,
    and the given one) is served."""
    r = c.api.get("/api/v1/info", timeout=RAW_TIMEOUT)
    expect(r, 200, "%s: REST afterwards" % what)
    live = c.api.live_engines()
    check(len(live) >= c.n, "%s: %d engines live afterwards, want %d: %s"
          % (what, len(live), c.n, [(e.get("id"), e.get("state")) for e in c.api.engines()]))
    s = Stream(c, timeout=RAW_TIMEOUT)
    try:
        s.ping("%s: a new stream client" % what)
    finally:
        s.close()
    if stream is not None:
        stream.ping("%s: a stream client connected before" % what)


# ---------------------------------------------------------------- items 1, 2

def test_engine_subprotocol_without_key(c):
    """An upgrade that names ippc.engine.v1 on /ws (and on /engine) and is
    refused must not touch any engine: lws runs CLOSED for connections that
    never reached ESTABLISHED."""
    for path in ("/ws", "/engine"):
        r = raw_request(c, upgrade(path, protocol="ippc.engine.v1"))
        check(r.status == 401, "%s with the engine subprotocol and no credential: want 401: %r"
              % (path, r))
        still_served(c, "after an upgrade of %s naming ippc.engine.v1" % path)


def test_refused_upgrade_keeps_streams(c):
    """A refused /ws upgrade (401) must not unlink the live stream clients."""
    s = Stream(c)
    try:
        r = raw_request(c, upgrade("/ws", protocol="ippc.client.v1"))
        check(r.status == 401, "an unauthenticated /ws upgrade: want 401: %r" % r)
        # Any request after it, then the stream must still get its events.
        expect(c.api.get("/api/v1/info", timeout=RAW_TIMEOUT), 200, "REST after the 401")
        t = tag("refused")
        ids = expect(c.api.post("/api/v1/tasks", [{"code": "return 1", "tags": [t]}]), 202,
                     "submit")["ids"]
        wait_completed(s, ids, "events on a stream opened before a refused upgrade")
        still_served(c, "after a refused upgrade", s)
    finally:
        s.close()


# ---------------------------------------------------------------- items 3, 7

def check_json_refusal(r, status, code, what):
    """A refusal as the contract says: HTTP/1.1, JSON error body, close."""
    check(r.status == status, "%s: want HTTP %d: %r" % (what, status, r))
    check(getattr(r, "version", "") == "HTTP/1.1", "%s: want an HTTP/1.1 answer: %r" % (what, r))
    check(r.headers.get("content-type", "").startswith("application/json"),
          "%s: want Content-Type application/json: %r" % (what, r))
    check(r.headers.get("connection", "").lower() == "close",
          "%s: want Connection: close: %r" % (what, r))
    body = r.json()
    err = body.get("error") if isinstance(body, dict) else None
    check(isinstance(err, dict) and err.get("code") == code
          and isinstance(err.get("message"), str) and err["message"],
          "%s: want {\"error\":{\"code\":\"%s\",\"message\"}}: %r" % (what, code, r))
    if status == 401:
        check(r.headers.get("www-authenticate", "").lower().startswith("bearer"),
              "%s: a 401 carries WWW-Authenticate: Bearer: %r" % (what, r))


def test_refusals_are_json(c):
    """Every refused first request gets a JSON HTTP/1.1 answer from the
    controller, never a library's HTML page or silence."""
    token = c.client_info["token"]
    cases = [
        ("a plain GET /ws", "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426, "upgrade_required"),
        ("GET /ws with the token but no upgrade",
         "GET /ws?token=%s HTTP/1.1\r\nHost: x\r\n\r\n" % token, 426, "upgrade_required"),
        ("an upgrade to /ws without a token", upgrade("/ws"), 401, "unauthorized"),
        ("an upgrade to /ws with a wrong token",
         upgrade("/ws", ["Authorization: Bearer " + "0" * 64]), 401, "unauthorized"),
        ("an upgrade to /engine without the key", upgrade("/engine", protocol="ippc.engine.v1"),
         401, "unauthorized"),
        ("an upgrade to /engine with the client token",
         upgrade("/engine", ["Authorization: Bearer " + token], protocol="ippc.engine.v1"), 401,
         "unauthorized"),
        ("a path under /ws", upgrade("/ws/x?token=" + token), 404, "not_found"),
        ("a path under /engine", "GET /engine/x HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found"),
        ("POST /ws", "POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405,
         "method_not_allowed"),
        ("an upgrade without a key", upgrade("/ws?token=" + token, key=False), 400,
         "bad_request"),
        ("WebSocket version 8", upgrade("/ws?token=" + token, version=False)
         .replace("\r\n\r\n", "\r\nSec-WebSocket-Version: 8\r\n\r\n"), 426, "upgrade_required"),
        ("a subprotocol the server does not speak",
         upgrade("/ws?token=" + token, protocol="chat"), 400, "bad_request"),
        ("a malformed request line", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
        ("binary noise", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "bad_request"),
        ("HTTP/1.1 without Host", "GET /api/v1/info HTTP/1.1\r\n\r\n", 400, "bad_request"),
        ("a request line over 8192 bytes",
         "GET /api/v1/info?%s HTTP/1.1\r\nHost: x\r\n\r\n" % ("a" * 9000), 414, "uri_too_long"),
        ("a head over 16384 bytes",
         "GET /api/v1/info HTTP/1.1\r\nHost: x\r\n%s\r\n" % (("X-Pad: %s\r\n" % ("p" * 1000)) * 20),
         431, "headers_too_large"),
        ("an upgrade with a head over 16384 bytes",
         upgrade("/ws?token=" + token, ["X-Pad-%d: %s" % (i, "p" * 1000) for i in range(20)]),
         431, "headers_too_large"),
    ]
    for what, request, status, code in cases:
        check_json_refusal(raw_request(c, request), status, code, what)
    # Sent slowly, a byte at a time for the request line: the same answer.
    s = connect(c)
    try:
        for ch in "GET /ws HTTP/1.1\r\n":
            s.sendall(ch.encode())
            time.sleep(0.002)
        s.sendall(b"Host: x\r\n\r\n")
        check_json_refusal(read_answer(s), 426, "upgrade_required", "a plain GET /ws, slowly")
    finally:
        s.close()
    still_served(c, "after refused requests")


def test_upgrade_after_rest_on_one_connection(c):
    """A WebSocket upgrade sent on a connection that already carried REST
    requests (keep-alive) is refused with a JSON 400 that says to open a new
    connection, and the connection is closed; a new connection upgrades."""
    token = c.client_info["token"]
    for path, protocol in (("/ws", "ippc.client.v1"), ("/engine", "ippc.engine.v1")):
        s = connect(c)
        try:
            s.sendall(("GET /api/v1/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                       % token).encode())
            first = read_answer(s)
            check(first.status == 200, "the first REST request on the connection: %r" % first)
            s.sendall(upgrade(path, ["Authorization: Bearer " + token], protocol=protocol).encode())
            r = read_answer(s)
            check_json_refusal(r, 400, "bad_request", "an upgrade to %s after a REST request" % path)
            msg = r.json()["error"]["message"]
            check("first request" in msg and "new connection" in msg,
                  "the refusal says what to do: %r" % msg)
        finally:
            s.close()
    # the same upgrade as a connection's first request is served
    s = connect(c)
    try:
        s.sendall(upgrade("/ws", ["Authorization: Bearer " + token],
                          protocol="ippc.client.v1").encode())
        r = read_answer(s)
        check(r.status == 101, "an upgrade as the first request: want 101: %r" % r)
    finally:
        s.close()
    still_served(c, "after upgrades on kept-alive connections")


def test_unregistered_engine_socket_closed(c):
    """An authenticated /engine socket that never registers is closed after a
    short deadline (5 s), so an engine key alone cannot pin connections."""
    key = c.engine_info["key"]
    s = connect(c, timeout=30)
    try:
        s.sendall(upgrade("/engine", ["Authorization: Bearer " + key],
                          protocol="ippc.engine.v1").encode())
        r = read_answer(s)
        check(r.status == 101, "an upgrade to /engine with the key: want 101: %r" % r)
        started = time.monotonic()
        s.settimeout(30)
        data = b""
        while True:
            try:
                chunk = s.recv(4096)
            except (ConnectionResetError, socket.timeout):
                chunk = b""
            if not chunk:
                break
            data += chunk
        took = time.monotonic() - started
        check(took < 20, "an unregistered engine socket was still open after %.0f s" % took)
        return ["unregistered /engine socket closed after %.1f s" % took]
    finally:
        s.close()


def test_engine_first_message_not_register(c):
    """An authenticated /engine socket whose first message is not a register
    (a heartbeat, a result, a wrong key in the register) gets an error
    message and is closed; no engine is added and the live ones keep their
    ids and their work."""
    key = c.engine_info["key"]
    url = "ws://%s:%d/engine" % address(c)
    before = sorted(e["id"] for e in c.api.live_engines())
    cases = (("a heartbeat first", {"type": "heartbeat", "busy": False, "task": None},
              "register"),
             ("a result first", {"type": "result", "task": 1, "status": "ok"}, "register"),
             ("a register with a wrong key", {"type": "register", "key": "0" * 64, "job": "x",
                                              "rank": 0, "size": 1, "host": "h", "pid": 1,
                                              "version": "0"}, "key"))
    for what, msg, word in cases:
        ws = WebSocket.connect(url, token=key, protocols=("ippc.engine.v1",), timeout=30)
        try:
            ws.send_json(msg)
            answer = ws.recv_json(timeout=20)
            check(answer.get("type") == "error" and word in answer.get("message", ""),
                  "%s: want an error naming %r, got %r" % (what, word, answer))
            try:
                extra = ws.recv_json(timeout=20)
                raise Failure("%s: the socket stayed open (got %r)" % (what, extra))
            except (Closed, OSError):
                pass
        finally:
            ws.abort()
    after = sorted(e["id"] for e in c.api.live_engines())
    check(after == before, "engines changed: %s -> %s" % (before, after))
    check(same(values_of(c, "return 5", after), [5] * len(after)),
          "the engines still run tasks")


# ---------------------------------------------------------------- item 4

FLOOD = int(os.environ.get("IPPC_TEST_FLOOD", "1100"))
FLOOD_TIMEOUT = float(os.environ.get("IPPC_TEST_FLOOD_TIMEOUT", "8"))


class Flood:
    """n silent TCP connections to the controller, opened at once and kept
    open on our side; one the server drops is opened again (at most 200 a
    second, so the flood stays in place without becoming a connect storm on
    two cores)."""

    def __init__(self, c, n):
        self.addr = address(c)
        self.n = n
        self.socks = []
        self.opened = n
        self.dropped = 0  # closed by the server
        self.stop = False
        self.error = None
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < n + 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
        for _ in range(n):
            self.socks.append(self._open())

    def _open(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.addr)
        s.setblocking(False)
        return s

    def run(self):
        import select
        try:
            poller = select.poll()
            for s in self.socks:
                poller.register(s.fileno(), select.POLLIN)
            by_fd = {s.fileno(): s for s in self.socks}
            window_end, budget = time.monotonic() + 0.1, 20
            while not self.stop:
                if time.monotonic() >= window_end:
                    window_end, budget = time.monotonic() + 0.1, 20
                for fd, _ in poller.poll(100 if budget else 20):
                    s = by_fd.pop(fd)
                    poller.unregister(fd)
                    s.close()
                    self.socks.remove(s)
                    self.dropped += 1
                while len(self.socks) < self.n and budget > 0:
                    budget -= 1
                    ns = self._open()
                    self.socks.append(ns)
                    by_fd[ns.fileno()] = ns
                    poller.register(ns.fileno(), select.POLLIN)
                    self.opened += 1
        except Exception as e:  # reported by the test
            self.error = e

    def close(self):
        self.stop = True
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


def test_silent_flood(_unused=None):
    """1,100 silent connections from 127.0.0.1 (the old acceptor kept 1,024
    for 10 s each and stopped accepting) while a REST request, a stream client
    and a new engine must all get in.  Each gets FLOOD_TIMEOUT (8 s, less than
    the 10 s a silent connection used to hold its slot)."""
    import threading
    c = Cluster(n=2, profile="hostile-flood")
    notes = []
    flood = None
    try:
        c.start()
        flood = Flood(c, FLOOD)
        t = threading.Thread(target=flood.run, daemon=True)
        t.start()
        time.sleep(0.5)
        check(flood.error is None, "the flood could not be kept up: %r" % flood.error)

        r = c.api.get("/api/v1/info", timeout=FLOOD_TIMEOUT)
        expect(r, 200, "REST during the flood")
        s = Stream(c, timeout=FLOOD_TIMEOUT)
        try:
            s.ping("a stream client during the flood")
        finally:
            s.close()
        # An engine connecting during the flood (a third rank, its own job).
        import subprocess
        import harness
        engine_file = os.path.join(c.security_dir, "ippc-engine.json")
        p = subprocess.Popen([harness.MPIEXEC, "-n", "1", harness.ENGINE, "--file", engine_file],
                             env=c.env(), cwd=c.dir, stdin=subprocess.DEVNULL,
                             stdout=c.log("engines.log"), stderr=subprocess.STDOUT,
                             start_new_session=True)
        c.mpiexecs.append(p)
        c.tracker.add_popen(p)
        live = c.api.wait_engines(3, timeout=60)
        c.record_engines(live)
        check(flood.error is None and t.is_alive(),
              "the flood could not be kept up: %r" % flood.error)
        # And a batch of tasks over the two jobs' engines.
        body = expect(c.api.post("/api/v1/views/all/execute", {"code": "return 1"},
                                 timeout=60), 200, "execute during the flood")
        check(body.get("status") == "ok", "execute during the flood: %s" % body)
        notes.append("%d silent connections opened; the controller dropped %d, oldest first, "
                     "to serve the others" % (flood.opened, flood.dropped))
    finally:
        if flood is not None:
            flood.close()
        stop_checked(c)
    return notes


# ---------------------------------------------------------------- item 5

def test_ws_message_limit(c):
    """A /ws message counts whole: {"op":"ping","nbuf":4096} and then binary
    frames of 15 MiB used to be held frame after frame (480 MB for 30).  Now
    the second frame (30 MiB in all, over 16 MiB) ends it: an error, close 1009."""
    s = Stream(c)
    try:
        s.ws.send_json({"op": "ping", "nbuf": 4096})
        frame = bytes(15 << 20)
        sent = 0
        try:
            for _ in range(4):
                s.ws.send_binary(frame)
                sent += 1
        except OSError:
            pass  # the controller stops reading at the limit
        got, closed = read_until_closed(s.ws, 30)
        errors = [m for m in got if m.get("type") == "error"]
        check(errors and (errors[0].get("error") or {}).get("code") == "payload_too_large",
              "an error payload_too_large before the close (got %s, then %s)"
              % ([m.get("type") for m in got][:10], closed))
        check(isinstance(closed, Closed) and closed.code == 1009,
              "the socket is closed with 1009 (got %r after %d frames)" % (closed, sent))
    finally:
        s.ws.abort()
    still_served(c, "after a message over the limit")


def test_ws_overloaded(_unused=None):
    """The /ws messages of all clients together draw on one budget
    (--max-held-mb): a client that would pass it gets an "overloaded" error
    and close 1013; the client that holds its share finishes its message."""
    c = Cluster(n=1, profile="hostile-budget", controller_args=["--max-held-mb", "16"])
    notes = []
    a = b = None
    try:
        c.start()
        a, b = Stream(c), Stream(c)
        # Each announces a 10 MiB binary frame and sends 9 MiB of it.
        size, part = 10 << 20, 9 << 20
        head = encode_frame(OP_BINARY, bytes(size))[:14]  # header + mask key
        for s in (a, b):
            s.ws.send_json({"op": "ping", "id": "big", "nbuf": 1})
        # The frame is sent masked; what matters is its length, not the bytes.
        mask = head[10:14]
        from wsclient import mask_payload
        payload = mask_payload(mask, bytes(size))
        a.ws.sock.sendall(head + payload[:part])
        time.sleep(0.5)
        try:
            b.ws.sock.sendall(head + payload[:part])
        except OSError:
            pass
        got, closed = read_until_closed(b.ws, 30)
        errors = [m for m in got if m.get("type") == "error"]
        check(errors and (errors[0].get("error") or {}).get("code") == "overloaded",
              "the second client gets an error \"overloaded\" (got %s, then %s)"
              % ([m.get("type") for m in got][:10], closed))
        check(isinstance(closed, Closed) and closed.code == 1013,
              "the second client is closed with 1013 (Try Again Later): %r" % closed)
        a.ws.sock.sendall(payload[part:])
        a.wait(lambda m: m.get("type") == "pong" and m.get("id") == "big",
               "the first client's message completes", 30)
        expect(c.api.get("/api/v1/info"), 200, "REST after an overloaded client")
    finally:
        for s in (a, b):
            if s is not None:
                s.ws.abort()
        stop_checked(c)
    return notes


# ---------------------------------------------------------------- item 6

def test_unmasked_frames_closed_1002(c):
    """Client frames must be masked (RFC 6455 5.1): an unmasked one — text,
    binary or control — closes the connection with 1002 and is not acted on;
    a reply being sent when it comes is finished first (the client must see
    whole frames and then the close)."""
    for what, opcode, payload in (("an unmasked text frame", OP_TEXT, b'{"op":"ping","id":"u"}'),
                                  ("an unmasked binary frame", OP_BINARY, b"\x00" * 10),
                                  ("an unmasked ping", 0x9, b"p")):
        s = Stream(c)
        try:
            s.ws.send_frame(opcode, payload, mask=False)
            got, closed = read_until_closed(s.ws, 30)
            check(isinstance(closed, Closed) and closed.code == 1002,
                  "%s: the socket is closed with 1002: %r (after %s)"
                  % (what, closed, [m.get("type") for m in got][:5]))
            check(not [m for m in got if m.get("type") == "pong"],
                  "%s: the unmasked frame was acted on: %s" % (what, got))
        finally:
            s.ws.abort()
    # While a big reply is on its way.
    expect(c.api.post("/api/v1/views/0/execute",
                      {"code": "hostile_big = string.rep('x', 3000000)"}), 200, "make a big value")
    s = Stream(c)
    try:
        s.ws.send_json({"op": "pull", "id": "big", "targets": "0", "names": ["hostile_big"]})
        time.sleep(0.05)
        s.ws.send_frame(OP_TEXT, b'{"op":"ping"}', mask=False)
        got, closed = read_until_closed(s.ws, 60)
        check(isinstance(closed, Closed) and closed.code == 1002,
              "with a reply in flight: closed with 1002 after whole frames: %r (after %s)"
              % (closed, [m.get("type") for m in got][:8]))
    finally:
        s.ws.abort()
    expect(c.api.post("/api/v1/views/0/execute", {"code": "hostile_big = nil"}), 200,
           "drop the big value")
    still_served(c, "after unmasked frames")


TESTS = [
    ("hostile_engine_subprotocol_without_key", test_engine_subprotocol_without_key, "shared"),
    ("hostile_refused_upgrade_keeps_streams", test_refused_upgrade_keeps_streams, "shared"),
    ("hostile_refusals_are_json", test_refusals_are_json, "shared"),
    ("hostile_upgrade_after_rest_on_one_connection", test_upgrade_after_rest_on_one_connection,
     "shared"),
    ("hostile_engine_first_message_not_register", test_engine_first_message_not_register,
     "shared"),
    ("hostile_unregistered_engine_socket_closed", test_unregistered_engine_socket_closed,
     "shared"),
    ("hostile_ws_message_limit", test_ws_message_limit, "shared"),
    ("hostile_unmasked_frames_closed_1002", test_unmasked_frames_closed_1002, "shared"),
    ("hostile_silent_flood", test_silent_flood, "own"),
    ("hostile_ws_overloaded", test_ws_overloaded, "own"),
]
