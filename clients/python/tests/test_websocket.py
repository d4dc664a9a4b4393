"""Unit tests of ippc.websocket against a small RFC 6455 server written here
(a real socket, real frames): handshake checks, masking, fragmentation,
ping/pong, close, limits and protocol errors."""

import base64
import hashlib
import json
import os
import socket
import struct
import threading

import pytest

from ippc import websocket as wsm
from ippc.websocket import (Closed, HandshakeError, ProtocolError, WebSocket, accept_key,
                            encode_frame, mask_payload)

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Peer:
    """The server side of one connection, driven by the test."""

    def __init__(self, conn):
        self.conn = conn
        self.buf = b""
        self.request = b""

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.request = head
        headers = {}
        for line in head.decode().split("\r\n")[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return headers

    def accept(self, protocol=None, key=None, extra=b""):
        headers = self.read_head()
        akey = key if key is not None else base64.b64encode(hashlib.sha1(
            (headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
        lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Accept: " + akey]
        if protocol:
            lines.append("Sec-WebSocket-Protocol: " + protocol)
        self.conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + extra)
        return headers

    def read_frame(self):
        """(fin, opcode, payload, masked) of the client's next frame."""
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        masked = bool(b1 & 0x80)
        key = self._read(4) if masked else None
        data = self._read(n)
        if masked:
            data = mask_payload(key, data)
        return bool(b0 & 0x80), b0 & 0x0F, data, masked

    def send(self, opcode, payload=b"", fin=True, rsv=0, mask=False):
        frame = bytearray(encode_frame(opcode, payload, fin=fin, mask=mask))
        frame[0] |= rsv << 4
        self.conn.sendall(bytes(frame))


@pytest.fixture
def server():
    """(url, run): run(fn) serves one connection with fn(Peer) in a thread."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]
    threads = []
    errors = []

    def run(fn):
        def serve():
            conn, _ = lsock.accept()
            try:
                fn(Peer(conn))
            except Exception as e:  # reported by the test
                errors.append(e)
            finally:
                conn.close()
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        threads.append(t)
        return t

    yield "ws://127.0.0.1:%d/ws?x=1" % port, run
    for t in threads:
        t.join(timeout=10)
    lsock.close()
    assert not errors, errors


def test_accept_key_rfc_example():
    # The example of RFC 6455 section 1.3.
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_mask_round_trip_and_frame_lengths():
    key = os.urandom(4)
    data = os.urandom(70000)
    assert mask_payload(key, mask_payload(key, data)) == data
    assert mask_payload(key, b"") == b""
    with pytest.raises(ValueError):
        mask_payload(b"abc", b"x")
    for n, head in ((5, 2), (200, 4), (70000, 10)):
        frame = encode_frame(wsm.OP_BINARY, b"x" * n, mask=False)
        assert len(frame) == head + n
        masked = encode_frame(wsm.OP_BINARY, b"x" * n, mask=True)
        assert len(masked) == head + 4 + n and masked[1] & 0x80


def test_handshake_headers_and_echo(server):
    url, run = server
    seen = {}

    def peer(p):
        seen.update(p.accept(protocol="ippc.client.v1"))
        seen["target"] = p.request.split(b"\r\n")[0]
        fin, op, data, masked = p.read_frame()
        seen["masked"] = masked
        p.send(op, data)
        fin, op, data, masked = p.read_frame()
        assert op == wsm.OP_CLOSE
        p.send(wsm.OP_CLOSE, data)

    served = run(peer)
    ws = WebSocket.connect(url, headers={"Authorization": "Bearer T"},
                           protocols=("ippc.client.v1",))
    assert ws.protocol == "ippc.client.v1"
    ws.send_json({"op": "ping"})
    assert ws.recv_json(timeout=5) == {"op": "ping"}
    ws.close()
    served.join(10)
    assert seen["masked"] is True
    assert seen["authorization"] == "Bearer T"
    assert seen["sec-websocket-version"] == "13"
    assert seen["target"] == b"GET /ws?x=1 HTTP/1.1"
    assert isinstance(ws.closed, Closed)


def test_refused_upgrade_carries_status_and_body(server):
    url, run = server
    body = json.dumps({"error": {"code": "unauthorized", "message": "bad token"}}).encode()

    def peer(p):
        p.read_head()
        p.conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body) + body)

    run(peer)
    with pytest.raises(HandshakeError) as info:
        WebSocket.connect(url)
    assert info.value.status == 401 and b"bad token" in info.value.body


def test_wrong_accept_key_is_refused(server):
    url, run = server
    run(lambda p: p.accept(key="AAAAAAAAAAAAAAAAAAAAAAAAAAA="))
    with pytest.raises(HandshakeError, match="Accept"):
        WebSocket.connect(url)


def test_unoffered_subprotocol_is_refused(server):
    url, run = server
    run(lambda p: p.accept(protocol="other"))
    with pytest.raises(HandshakeError, match="not offered"):
        WebSocket.connect(url, protocols=("ippc.client.v1",))


def test_fragments_with_ping_between(server):
    url, run = server
    got = {}

    def peer(p):
        p.accept()
        p.send(wsm.OP_TEXT, "hel", fin=False)
        p.send(wsm.OP_PING, b"are you there")
        p.send(wsm.OP_CONT, "lo ", fin=False)
        p.send(wsm.OP_CONT, "wörld", fin=True)
        fin, op, data, masked = p.read_frame()
        got["pong"] = (op, data, masked)
        p.send(wsm.OP_BINARY, b"\x00\x01", fin=False)
        p.send(wsm.OP_CONT, b"\x02", fin=True)
        p.send(wsm.OP_PONG, b"mine")
        p.send(wsm.OP_TEXT, "after")
        p.send(wsm.OP_CLOSE, struct.pack("!H", 1001) + b"going away")
        fin, op, data, masked = p.read_frame()
        got["close"] = (op, data)

    served = run(peer)
    ws = WebSocket.connect(url)
    assert ws.recv(timeout=5) == (wsm.OP_TEXT, "hello wörld")
    assert ws.recv(timeout=5) == (wsm.OP_BINARY, b"\x00\x01\x02")
    assert ws.recv(timeout=5) == (wsm.OP_TEXT, "after")
    assert ws.pongs == [b"mine"]
    with pytest.raises(Closed) as info:
        ws.recv(timeout=5)
    assert info.value.code == 1001 and info.value.reason == "going away"
    with pytest.raises(Closed):
        ws.recv(timeout=1)
    ws.close()
    served.join(10)
    assert got["pong"] == (wsm.OP_PONG, b"are you there", True)
    assert got["close"] == (wsm.OP_CLOSE, struct.pack("!H", 1001))


def test_client_fragments_and_large_message(server):
    url, run = server
    frames = []

    def peer(p):
        p.accept()
        while True:
            fin, op, data, masked = p.read_frame()
            frames.append((fin, op, len(data), masked))
            if fin:
                break
        fin, op, data, masked = p.read_frame()
        frames.append((fin, op, len(data), masked))
        p.send(wsm.OP_BINARY, data)  # echo 1 MiB + 3 back
        p.read_frame()

    served = run(peer)
    ws = WebSocket.connect(url)
    ws.send_text("x" * 10, fragment=4)
    big = os.urandom((1 << 20) + 3)
    ws.send_binary(big)
    assert ws.recv(timeout=10) == (wsm.OP_BINARY, big)
    ws.close(timeout=1)
    served.join(10)
    assert frames[:3] == [(False, wsm.OP_TEXT, 4, True), (False, wsm.OP_CONT, 4, True),
                          (True, wsm.OP_CONT, 2, True)]
    assert frames[3] == (True, wsm.OP_BINARY, len(big), True)


@pytest.mark.parametrize("bad", ["masked", "rsv", "opcode", "cont", "long_ping", "utf8",
                                 "too_big", "new_in_fragment"])
def test_protocol_errors(server, bad):
    url, run = server

    def peer(p):
        p.accept()
        if bad == "masked":
            p.send(wsm.OP_TEXT, "x", mask=True)
        elif bad == "rsv":
            p.send(wsm.OP_TEXT, "x", rsv=4)
        elif bad == "opcode":
            p.send(0x3, "x")
        elif bad == "cont":
            p.send(wsm.OP_CONT, "x")
        elif bad == "long_ping":
            p.send(wsm.OP_PING, b"p" * 126)
        elif bad == "utf8":
            p.send(wsm.OP_TEXT, b"\xff\xfe")
        elif bad == "too_big":
            p.send(wsm.OP_BINARY, b"z" * 2000)
        elif bad == "new_in_fragment":
            p.send(wsm.OP_TEXT, "a", fin=False)
            p.send(wsm.OP_TEXT, "b")
        try:
            p.read_frame()
        except (EOFError, OSError):
            pass

    run(peer)
    ws = WebSocket.connect(url, max_message=1000)
    with pytest.raises(ProtocolError):
        ws.recv(timeout=5)
    ws.abort()


def test_timeout_keeps_partial_frame(server):
    url, run = server
    go = threading.Event()

    def peer(p):
        p.accept()
        frame = encode_frame(wsm.OP_TEXT, "split frame", mask=False)
        p.conn.sendall(frame[:5])
        go.wait(10)
        p.conn.sendall(frame[5:])
        p.read_frame()

    run(peer)
    ws = WebSocket.connect(url)
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.2)
    go.set()
    assert ws.recv(timeout=5) == (wsm.OP_TEXT, "split frame")
    ws.close(timeout=1)


def test_eof_without_close_frame(server):
    url, run = server
    run(lambda p: p.accept())
    ws = WebSocket.connect(url)
    with pytest.raises(Closed) as info:
        ws.recv(timeout=5)
    assert info.value.code is None
    with pytest.raises(Closed):
        ws.send_text("late")


def test_only_ws_urls():
    with pytest.raises(wsm.WebSocketError):
        WebSocket.connect("http://127.0.0.1:1/ws")
    with pytest.raises(ValueError):
        WebSocket(socket.socket()).ping(b"x" * 126)
