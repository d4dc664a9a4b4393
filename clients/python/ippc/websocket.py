"""A small WebSocket client (RFC 6455), standard library only.

It is what :class:`ippc.Client` uses for the controller's event stream
(``GET /ws``), and it is usable on its own.  What it does, by section of the RFC:

* the opening handshake (4.1): ``GET`` with ``Upgrade``, ``Connection``,
  ``Sec-WebSocket-Key`` and ``-Version: 13``; the answer must be ``101`` with
  ``Sec-WebSocket-Accept`` = base64(SHA-1(key + GUID)), else
  :class:`HandshakeError` carries the status, the headers and the body (the
  controller's JSON error);
* every client frame is masked with a fresh random key (5.3); a masked server
  frame is a protocol error (5.1);
* text, binary and continuation frames; fragmented messages are reassembled,
  with control frames allowed between the fragments (5.4); messages over
  ``max_message`` bytes are refused;
* a ping is answered with a pong carrying its payload (5.5.2); pongs are kept
  in :attr:`WebSocket.pongs`;
* the closing handshake (5.5.1, 7): a close frame is answered once and
  :class:`Closed` is raised with the peer's code and reason.

One thread may receive while others send: sends hold a lock, and a
fragmented message is written under that lock so that a pong cannot land
between its frames.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

__all__ = [
    "WebSocket",
    "WebSocketError",
    "ProtocolError",
    "HandshakeError",
    "Closed",
    "accept_key",
    "encode_frame",
    "mask_payload",
    "OP_CONT",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Frame opcodes (RFC 6455 section 5.2).
OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)
_DATA_OPS = (OP_CONT, OP_TEXT, OP_BINARY)


class WebSocketError(Exception):
    """Base class of every error this module raises."""


class ProtocolError(WebSocketError):
    """The server broke RFC 6455, or sent a message over ``max_message``."""


class HandshakeError(WebSocketError):
    """The upgrade was refused or answered wrongly.

    ``status`` is the HTTP status (None when there was no valid status line),
    ``headers`` the answer's headers (lower-case names) and ``body`` its bytes.
    """

    def __init__(self, message: str, status: Optional[int] = None,
                 headers: Optional[Dict[str, str]] = None, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.headers: Dict[str, str] = headers or {}
        self.body = body


class Closed(WebSocketError):
    """The connection is over.  ``code`` and ``reason`` come from the peer's
    close frame (``code`` is None when the TCP connection ended without one)."""

    def __init__(self, code: Optional[int] = None, reason: str = "") -> None:
        super().__init__("WebSocket closed (code %s%s)" % (code, ", " + reason if reason else ""))
        self.code = code
        self.reason = reason


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def mask_payload(mask: bytes, data: bytes) -> bytes:
    """``data`` XORed with the 4-byte ``mask`` repeated (RFC 6455 5.3).

    Done as one big-integer XOR, so that megabytes take milliseconds.
    """
    if len(mask) != 4:
        raise ValueError("a mask is 4 bytes")
    n = len(data)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: Union[bytes, str], fin: bool = True, mask: bool = True,
                 mask_key: Optional[bytes] = None) -> bytes:
    """One frame as bytes: the header, the masking key when ``mask``, the
    (masked) payload.  ``str`` payloads are sent as UTF-8."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    head = bytearray([(0x80 if fin else 0) | (opcode & 0x0F)])
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
    if not mask:
        return bytes(head) + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return bytes(head) + key + mask_payload(key, payload)


class WebSocket:
    """One client connection.  Make it with :meth:`connect`.

    >>> ws = WebSocket.connect("ws://127.0.0.1:8000/ws", headers={"Authorization": "Bearer T"})
    >>> ws.send_json({"op": "ping"}); ws.recv_json(timeout=5)
    >>> ws.close()
    """

    def __init__(self, sock: socket.socket, max_message: int = 1 << 30) -> None:
        self.sock = sock
        #: The subprotocol the server chose (None when it chose none).
        self.protocol: Optional[str] = None
        self.max_message = max_message
        self._buf = bytearray()
        self._pos = 0
        self._frag_op: Optional[int] = None
        self._frag: List[bytes] = []
        self._frag_len = 0
        #: Payloads of the pongs received so far.
        self.pongs: List[bytes] = []
        self._send_lock = threading.Lock()
        self._close_sent = False
        #: The :class:`Closed` error once the connection is over, else None.
        self.closed: Optional[Closed] = None

    # ---------------------------------------------------------------- opening

    @classmethod
    def connect(cls, url: str, headers: Optional[Dict[str, str]] = None,
                protocols: Sequence[str] = (), timeout: float = 30.0,
                max_message: int = 1 << 30) -> "WebSocket":
        """Opens ``ws://host:port/path?query`` and does the opening handshake.

        ``headers`` are added to the upgrade request; ``protocols`` are offered
        in ``Sec-WebSocket-Protocol``.  Raises :class:`HandshakeError` when the
        server refuses, ``OSError`` when it cannot be reached.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "ws":
            raise WebSocketError("only ws:// URLs are supported, not %r" % url)
        if not parts.hostname:
            raise WebSocketError("no host in %r" % url)
        host, port = parts.hostname, parts.port or 80
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ws = cls(sock, max_message=max_message)
            ws._handshake(host, port, target, list(protocols), dict(headers or {}), timeout)
            return ws
        except BaseException:
            sock.close()
            raise

    def _handshake(self, host: str, port: int, target: str, protocols: List[str],
                   headers: Dict[str, str], timeout: float) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % target, "Host: %s:%d" % (host, port),
                 "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        if protocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        for name, value in headers.items():
            if "\r" in name + value or "\n" in name + value:
                raise WebSocketError("header %r has a line break" % name)
            lines.append("%s: %s" % (name, value))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._buf:
            if len(self._buf) > 65536:
                raise HandshakeError("the handshake answer's head is over 64 KiB")
            if not self._fill(deadline):
                raise HandshakeError("connection closed during the handshake")
        end = self._buf.index(b"\r\n\r\n")
        head = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[:end + 4]
        status_line, _, rest = head.partition("\r\n")
        fields = status_line.split(" ", 2)
        try:
            status = int(fields[1])
        except (IndexError, ValueError):
            raise HandshakeError("bad status line %r" % status_line[:200]) from None
        hdrs: Dict[str, str] = {}
        for line in rest.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                name = name.strip().lower()
                hdrs[name] = hdrs[name] + ", " + value.strip() if name in hdrs else value.strip()
        if status != 101:
            body = self._read_body(hdrs, min(deadline, time.monotonic() + 5))
            raise HandshakeError("upgrade refused: HTTP %d %s" % (
                status, body[:300].decode("utf-8", "replace")), status, hdrs, body)
        if hdrs.get("upgrade", "").lower() != "websocket":
            raise HandshakeError("101 without Upgrade: websocket", status, hdrs)
        tokens = [t.strip().lower() for t in hdrs.get("connection", "").split(",")]
        if "upgrade" not in tokens:
            raise HandshakeError("101 without Connection: Upgrade", status, hdrs)
        if hdrs.get("sec-websocket-accept") != accept_key(key):
            raise HandshakeError("wrong Sec-WebSocket-Accept", status, hdrs)
        chosen = hdrs.get("sec-websocket-protocol")
        if chosen is not None and chosen not in protocols:
            raise HandshakeError("the server chose subprotocol %r, which was not offered"
                                 % chosen, status, hdrs)
        self.protocol = chosen

    def _read_body(self, hdrs: Dict[str, str], deadline: float) -> bytes:
        try:
            want = int(hdrs.get("content-length", "-1"))
        except ValueError:
            want = -1
        try:
            while want < 0 or len(self._buf) < want:
                if not self._fill(deadline):
                    break
        except (TimeoutError, OSError):
            pass
        return bytes(self._buf if want < 0 else self._buf[:want])

    # ---------------------------------------------------------------- sending

    def _send_raw(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def send_text(self, text: str, fragment: Optional[int] = None) -> None:
        """Sends one text message (split into frames of ``fragment`` bytes when given)."""
        self._send_message(OP_TEXT, text.encode("utf-8"), fragment)

    def send_binary(self, data: bytes, fragment: Optional[int] = None) -> None:
        """Sends one binary message (split into frames of ``fragment`` bytes when given)."""
        self._send_message(OP_BINARY, bytes(data), fragment)

    def send_json(self, obj: Any) -> None:
        """Sends ``obj`` as one JSON text message."""
        self.send_text(json.dumps(obj, separators=(",", ":")))

    def _send_message(self, opcode: int, data: bytes, fragment: Optional[int]) -> None:
        if self.closed is not None or self._close_sent:
            raise self.closed or Closed(None, "close already sent")
        if not fragment or len(data) <= fragment:
            self._send_raw(encode_frame(opcode, data))
            return
        pieces = [data[i:i + fragment] for i in range(0, len(data), fragment)]
        frames = b"".join(encode_frame(opcode if i == 0 else OP_CONT, piece,
                                       fin=i == len(pieces) - 1)
                          for i, piece in enumerate(pieces))
        self._send_raw(frames)

    def ping(self, payload: bytes = b"") -> None:
        """Sends a ping (payload at most 125 bytes); its pong lands in :attr:`pongs`."""
        if len(payload) > 125:
            raise ValueError("a control frame payload is at most 125 bytes")
        self._send_raw(encode_frame(OP_PING, payload))

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Sends a close frame (once) without waiting for the answer: for a
        connection another thread reads, which then sees the peer's close."""
        if self._close_sent or self.closed is not None:
            return
        self._close_sent = True
        payload = struct.pack("!H", code) + reason.encode("utf-8")[:123]
        self._send_raw(encode_frame(OP_CLOSE, payload))

    def close(self, code: int = 1000, reason: str = "", timeout: float = 5.0) -> None:
        """Sends a close frame (once), waits up to ``timeout`` for the peer's,
        then closes the socket.  Never raises."""
        try:
            self.send_close(code, reason)
            deadline = time.monotonic() + timeout
            while self.closed is None and time.monotonic() < deadline:
                self.recv(timeout=max(0.01, deadline - time.monotonic()))
        except (WebSocketError, TimeoutError, OSError):
            pass
        self.abort()

    def abort(self) -> None:
        """Drops the TCP connection without a closing handshake."""
        try:
            self.sock.close()
        except OSError:
            pass
        if self.closed is None:
            self.closed = Closed(None, "closed locally")

    # -------------------------------------------------------------- receiving

    def _fill(self, deadline: Optional[float]) -> bool:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError("no WebSocket message within the timeout")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError("no WebSocket message within the timeout") from None
        if not chunk:
            return False
        if self._pos > (1 << 20) and self._pos > len(self._buf) // 2:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += chunk
        return True

    def _parse_frame(self) -> Optional[Tuple[bool, int, int, bytes]]:
        buf, p = self._buf, self._pos
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
                raise ProtocolError("a 64-bit length with the top bit set")
        if b1 & 0x80:
            raise ProtocolError("the server masked a frame (RFC 6455 5.1)")
        if n > self.max_message:
            raise ProtocolError("a frame of %d bytes is over max_message" % n)
        if len(buf) - at < n:
            return None
        payload = bytes(buf[at:at + n])
        self._pos = at + n
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload

    def _next_frame(self, deadline: Optional[float]) -> Tuple[bool, int, int, bytes]:
        while True:
            frame = self._parse_frame()
            if frame is not None:
                return frame
            if not self._fill(deadline):
                self.closed = Closed(None, "the connection ended without a close frame")
                raise self.closed

    def recv(self, timeout: Optional[float] = None) -> Tuple[int, Union[str, bytes]]:
        """The next whole message: ``(OP_TEXT, str)`` or ``(OP_BINARY, bytes)``.

        Answers pings on the way; raises :class:`Closed` after a close frame,
        ``TimeoutError`` when no whole message arrived within ``timeout``
        seconds (None: wait forever; a partial frame is kept for the next
        call) and :class:`ProtocolError` on a broken stream.
        """
        if self.closed is not None:
            raise self.closed
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            fin, rsv, op, payload = self._next_frame(deadline)
            if rsv:
                raise ProtocolError("reserved bits set without an extension")
            if op in _CONTROL_OPS:
                if not fin or len(payload) > 125:
                    raise ProtocolError("a fragmented or long control frame")
                if op == OP_PING:
                    if not self._close_sent:
                        self._send_raw(encode_frame(OP_PONG, payload))
                elif op == OP_PONG:
                    self.pongs.append(payload)
                else:
                    self._on_close(payload)
                continue
            if op not in _DATA_OPS:
                raise ProtocolError("unknown opcode %d" % op)
            if op == OP_CONT:
                if self._frag_op is None:
                    raise ProtocolError("a continuation frame with no message started")
            else:
                if self._frag_op is not None:
                    raise ProtocolError("a new data frame inside a fragmented message")
                self._frag_op = op
            self._frag.append(payload)
            self._frag_len += len(payload)
            if self._frag_len > self.max_message:
                raise ProtocolError("a message over max_message (%d bytes)" % self._frag_len)
            if not fin:
                continue
            whole_op, data = self._frag_op, b"".join(self._frag)
            self._frag_op, self._frag, self._frag_len = None, [], 0
            if whole_op == OP_TEXT:
                try:
                    return OP_TEXT, data.decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolError("a text message that is not UTF-8") from None
            return OP_BINARY, data

    def _on_close(self, payload: bytes) -> None:
        code: Optional[int] = None
        reason = ""
        if len(payload) == 1:
            raise ProtocolError("a close frame with a 1-byte payload")
        if len(payload) >= 2:
            code = struct.unpack("!H", payload[:2])[0]
            reason = payload[2:].decode("utf-8", "replace")
        if not self._close_sent:
            self._close_sent = True
            try:
                self._send_raw(encode_frame(OP_CLOSE, payload[:2]))
            except OSError:
                pass
        self.closed = Closed(code, reason)
        try:
            self.sock.close()
        except OSError:
            pass
        raise self.closed

    def recv_json(self, timeout: Optional[float] = None) -> Any:
        """The next message, which must be a JSON text message, decoded."""
        op, data = self.recv(timeout)
        if op != OP_TEXT:
            raise ProtocolError("expected a text message, got %d binary bytes" % len(data))
        return json.loads(data)

    def fileno(self) -> int:
        """The socket's file descriptor (for ``select``)."""
        return self.sock.fileno()
