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

from harness import Cluster, Failure, check, expect
from wsclient import OP_BINARY, OP_TEXT, Closed, HandshakeError, WebSocket, encode_frame
from test_streams import Stream, read_until_closed, tag, wait_completed, ws_url

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
        check(r.status != 101 or path == "/engine",
              "%s with the engine subprotocol and no credential was upgraded: %r" % (path, r))
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


TESTS = [
    ("hostile_engine_subprotocol_without_key", test_engine_subprotocol_without_key, "shared"),
    ("hostile_refused_upgrade_keeps_streams", test_refused_upgrade_keeps_streams, "shared"),
]
