"""wsclient.py — a minimal WebSocket client for the tests, from RFC 6455.

Standard library only, no third-party code.  What it does:

  * the opening handshake (section 4.1): GET with Upgrade/Connection/
    Sec-WebSocket-Key/-Version, optional Sec-WebSocket-Protocol and extra
    headers; the answer must be 101 with Upgrade: websocket, Connection:
    Upgrade and Sec-WebSocket-Accept = base64(SHA-1(key + GUID)); anything
    else raises HandshakeError carrying the HTTP status, headers and body;
  * client frames are always masked (5.3) with a fresh random key; server
    frames must not be (a masked server frame is a protocol error);
  * text, binary, continuation, ping, pong and close frames (5.5, 5.6); a
    fragmented message is reassembled; control frames may come between its
    fragments; a ping is answered with a pong carrying the same payload;
  * recv(timeout) returns one whole message or raises TimeoutError, keeping any
    partial frame for the next call; a close frame is answered (once) and
    raises Closed(code, reason);
  * send_frame() writes any frame as asked (bad opcodes, no mask, reserved
    bits...), so tests can send what a well-behaved client never would;
  * one thread may recv while others send (sends hold a lock; recv is for
    one thread at a time).

    ws = WebSocket.connect("ws://127.0.0.1:8000/ws", token="...")
    first = ws.recv_json(timeout=10)
    ws.send_json({"op": "ping"})
    ws.close()
"""

import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time
import urllib.parse

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)
DATA_OPS = (OP_CONT, OP_TEXT, OP_BINARY)


class WebSocketError(Exception):
    pass


class ProtocolError(WebSocketError):
    """The server broke RFC 6455 (or sent more than max_message)."""


class HandshakeError(WebSocketError):
    """The upgrade was refused or answered wrongly."""

    def __init__(self, message, status=None, headers=None, body=b""):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.body = body


class Closed(WebSocketError):
    """The connection is closed: code/reason from the server's close frame
    (code None when the TCP connection ended without one)."""

    def __init__(self, code=None, reason=""):
        super().__init__("closed (code %s%s)" % (code, ", " + reason if reason else ""))
        self.code = code
        self.reason = reason


def accept_key(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def mask_payload(mask, data):
    """XOR data with the 4-byte mask repeated; done as one big integer XOR so
    a 17 MiB payload takes milliseconds, not minutes."""
    n = len(data)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def encode_frame(opcode, payload, fin=True, mask=True, rsv=0, mask_key=None):
    """One frame as bytes.  rsv: the three RSV bits as a number 0..7."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    head = bytearray()
    head.append((0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F))
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head.append(bit | n)
    elif n < 65536:
        head.append(bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(bit | 127)
        head += struct.pack("!Q", n)
    if mask:
        key = mask_key if mask_key is not None else os.urandom(4)
        return bytes(head) + key + mask_payload(key, payload)
    return bytes(head) + payload


class WebSocket:
    def __init__(self, sock, protocol=None, max_message=1 << 30):
        self.sock = sock
        self.protocol = protocol        # the subprotocol the server chose
        self.max_message = max_message
        self.buf = bytearray()
        self.pos = 0                    # bytes of buf already consumed
        self.frag_op = None             # opcode of the message being reassembled
        self.frag = []                  # its fragments so far
        self.frag_len = 0
        self.pongs = []                 # payloads of pongs received
        self.send_lock = threading.Lock()  # one thread may recv while another sends
        self.close_sent = False
        self.closed = None              # Closed once the connection is over

    # ------------------------------------------------------------ opening

    @classmethod
    def connect(cls, url, token=None, auth="header", protocols=("ippc.client.v1",),
                headers=None, timeout=30, rcvbuf=None, max_message=1 << 30):
        """Opens ws://host:port/path?query.  token is sent as asked by auth:
        "header" (Authorization: Bearer), "query" (?token=) or "protocol" (a
        Sec-WebSocket-Protocol entry ippc.token.TOKEN).  rcvbuf sets SO_RCVBUF
        before connecting (a small one makes a slow reader)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "ws":
            raise WebSocketError("only ws:// URLs: %r" % url)
        host, port = parts.hostname, parts.port or 80
        path = parts.path or "/"
        query = parts.query
        protocols = list(protocols or [])
        hdrs = dict(headers or {})
        if token is not None:
            if auth == "header":
                hdrs["Authorization"] = "Bearer " + token
            elif auth == "query":
                q = "token=" + urllib.parse.quote(token, safe="")
                query = query + "&" + q if query else q
            elif auth == "protocol":
                protocols.append("ippc.token." + token)
            else:
                raise ValueError("auth must be header, query or protocol")
        target = path + ("?" + query if query else "")

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            sock.connect((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ws = cls(sock, max_message=max_message)
            ws._handshake(host, port, target, protocols, hdrs, timeout)
            return ws
        except BaseException:
            sock.close()
            raise

    def _handshake(self, host, port, target, protocols, headers, timeout):
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % target,
                 "Host: %s:%d" % (host, port),
                 "Upgrade: websocket",
                 "Connection: Upgrade",
                 "Sec-WebSocket-Key: " + key,
                 "Sec-WebSocket-Version: 13"]
        if protocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        for name, value in headers.items():
            lines.append("%s: %s" % (name, value))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise HandshakeError("handshake answer headers over 64 KiB")
            if not self._fill(deadline):
                raise HandshakeError("connection closed during the handshake: %r"
                                     % bytes(self.buf[:300]))
        end = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end + 4]
        status_line, _, rest = head.partition("\r\n")
        fields = status_line.split(" ", 2)
        try:
            status = int(fields[1])
        except (IndexError, ValueError):
            raise HandshakeError("bad status line %r" % status_line)
        hdrs = {}
        for line in rest.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                name = name.strip().lower()
                value = value.strip()
                hdrs[name] = hdrs[name] + ", " + value if name in hdrs else value
        if status != 101:
            body = self._read_body(hdrs, min(deadline, time.monotonic() + 5))
            raise HandshakeError("upgrade refused: HTTP %d %s" % (status, body[:300]),
                                 status, hdrs, body)
        if hdrs.get("upgrade", "").lower() != "websocket":
            raise HandshakeError("101 without Upgrade: websocket: %r" % hdrs, status, hdrs)
        if "upgrade" not in [t.strip().lower() for t in hdrs.get("connection", "").split(",")]:
            raise HandshakeError("101 without Connection: Upgrade: %r" % hdrs, status, hdrs)
        if hdrs.get("sec-websocket-accept") != accept_key(key):
            raise HandshakeError("wrong Sec-WebSocket-Accept %r (want %r)"
                                 % (hdrs.get("sec-websocket-accept"), accept_key(key)),
                                 status, hdrs)
        chosen = hdrs.get("sec-websocket-protocol")
        if chosen is not None and chosen not in protocols:
            raise HandshakeError("server chose subprotocol %r, not offered" % chosen,
                                 status, hdrs)
        self.protocol = chosen
        # Bytes after the headers are already frames.

    def _read_body(self, hdrs, deadline):
        """The body of a refused upgrade (by Content-Length, else until EOF
        or the deadline)."""
        try:
            want = int(hdrs.get("content-length", "-1"))
        except ValueError:
            want = -1
        try:
            while want < 0 or len(self.buf) < want:
                if not self._fill(deadline):
                    break
        except (TimeoutError, OSError):
            pass
        return bytes(self.buf if want < 0 else self.buf[:want])

    # ------------------------------------------------------------ sending

    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0):
        frame = encode_frame(opcode, payload, fin=fin, mask=mask, rsv=rsv)
        with self.send_lock:
            self.sock.sendall(frame)

    def send_text(self, text, fragment=None):
        """One text message; fragment=N splits it into frames of N bytes."""
        self._send_message(OP_TEXT, text.encode("utf-8"), fragment)

    def send_binary(self, data, fragment=None):
        self._send_message(OP_BINARY, bytes(data), fragment)

    def send_json(self, obj, fragment=None):
        self.send_text(json.dumps(obj, separators=(",", ":")), fragment)

    def _send_message(self, opcode, data, fragment):
        if not fragment or len(data) <= fragment:
            self.send_frame(opcode, data)
            return
        chunks = [data[i:i + fragment] for i in range(0, len(data), fragment)]
        with self.send_lock:  # a pong must not land between the fragments
            for i, chunk in enumerate(chunks):
                self.sock.sendall(encode_frame(opcode if i == 0 else OP_CONT, chunk,
                                               fin=i == len(chunks) - 1))

    def ping(self, payload=b""):
        self.send_frame(OP_PING, payload)

    def close(self, code=1000, reason="", timeout=5):
        """Sends a close frame (once), waits up to timeout for the server's,
        then closes the socket.  Never raises."""
        try:
            if not self.close_sent and self.closed is None:
                self.close_sent = True
                self.send_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode("utf-8"))
            deadline = time.monotonic() + timeout
            while self.closed is None and time.monotonic() < deadline:
                self.recv(timeout=max(0.01, deadline - time.monotonic()))
        except (WebSocketError, TimeoutError, OSError):
            pass
        self.abort()

    def abort(self):
        """Drops the TCP connection without a close frame."""
        try:
            self.sock.close()
        except OSError:
            pass
        if self.closed is None:
            self.closed = Closed(None, "closed locally")

    # ------------------------------------------------------------ receiving

    def _fill(self, deadline):
        """Reads more bytes into buf; False on EOF; TimeoutError at deadline."""
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError("no WebSocket message within the timeout")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError("no WebSocket message within the timeout")
        if not chunk:
            return False
        if self.pos > (1 << 20) and self.pos > len(self.buf) // 2:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += chunk
        return True

    def _parse_frame(self):
        """(fin, rsv, opcode, payload) of the next complete frame in buf, or
        None when it has not all arrived yet."""
        buf, p = self.buf, self.pos
        if len(buf) - p < 2:
            return None
        b0, b1 = buf[p], buf[p + 1]
        n = b1 & 0x7F
        at = p + 2
        if n == 126:
            if len(buf) - at < 2:
                return None
            n = struct.unpack_from("!H", buf, at)[0]
            at += 2
        elif n == 127:
            if len(buf) - at < 8:
                return None
            n = struct.unpack_from("!Q", buf, at)[0]
            at += 8
            if n >> 63:
                raise ProtocolError("64-bit length with the top bit set")
        if b1 & 0x80:
            raise ProtocolError("the server masked a frame (RFC 6455 5.1)")
        if n > self.max_message:
            raise ProtocolError("frame of %d bytes over max_message" % n)
        if len(buf) - at < n:
            return None
        payload = bytes(buf[at:at + n])
        self.pos = at + n
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload

    def _next_frame(self, deadline):
        while True:
            frame = self._parse_frame()
            if frame is not None:
                return frame
            if not self._fill(deadline):
                self.closed = Closed(None, "connection ended without a close frame")
                raise self.closed

    def recv(self, timeout=None):
        """The next whole message as (opcode, payload): OP_TEXT with str, or
        OP_BINARY with bytes.  Answers pings; raises Closed after a close
        frame; TimeoutError when nothing whole arrives within timeout
        (None: wait forever)."""
        if self.closed is not None:
            raise self.closed
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            fin, rsv, op, payload = self._next_frame(deadline)
            if rsv:
                raise ProtocolError("reserved bits set without an extension: %d" % rsv)
            if op in CONTROL_OPS:
                if not fin or len(payload) > 125:
                    raise ProtocolError("fragmented or long control frame")
                if op == OP_PING:
                    if not self.close_sent:
                        self.send_frame(OP_PONG, payload)
                elif op == OP_PONG:
                    self.pongs.append(payload)
                else:
                    self._on_close(payload)
                continue
            if op not in DATA_OPS:
                raise ProtocolError("unknown opcode %d" % op)
            if op == OP_CONT:
                if self.frag_op is None:
                    raise ProtocolError("continuation frame with no message started")
            else:
                if self.frag_op is not None:
                    raise ProtocolError("new data frame inside a fragmented message")
                self.frag_op = op
            self.frag.append(payload)
            self.frag_len += len(payload)
            if self.frag_len > self.max_message:
                raise ProtocolError("message over max_message (%d bytes)" % self.frag_len)
            if not fin:
                continue
            op, data = self.frag_op, b"".join(self.frag)
            self.frag_op, self.frag, self.frag_len = None, [], 0
            if op == OP_TEXT:
                try:
                    return OP_TEXT, data.decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolError("text message that is not UTF-8")
            return OP_BINARY, data

    def _on_close(self, payload):
        code, reason = None, ""
        if len(payload) >= 2:
            code = struct.unpack("!H", payload[:2])[0]
            reason = payload[2:].decode("utf-8", "replace")
        if not self.close_sent:
            self.close_sent = True
            try:
                self.send_frame(OP_CLOSE, payload[:2])
            except OSError:
                pass
        self.closed = Closed(code, reason)
        try:
            self.sock.close()
        except OSError:
            pass
        raise self.closed

    def recv_json(self, timeout=None):
        """The next message, which must be a JSON text message."""
        op, data = self.recv(timeout)
        if op != OP_TEXT:
            raise ProtocolError("expected a text message, got %d binary bytes" % len(data))
        return json.loads(data)

    def fileno(self):
        return self.sock.fileno()
