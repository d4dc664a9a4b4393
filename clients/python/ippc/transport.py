"""HTTP to the controller: one kept-alive connection per thread.

:class:`Transport` sends JSON or raw bodies with the client's bearer token and
turns the controller's JSON errors into :class:`~ippc.errors.APIError`
(``AuthenticationError`` for 401, ``NoEnginesError`` for ``no_engines``) and
unreachable controllers into :class:`~ippc.errors.ConnectionError`.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.parse
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .errors import APIError, AuthenticationError, ConnectionError, NoEnginesError

__all__ = ["Transport", "Answer"]


class Answer:
    """One HTTP answer: ``status``, ``headers`` (lower-case names), ``body``
    (bytes) and ``json`` (decoded, or None when the body is not JSON)."""

    def __init__(self, status: int, headers: Dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.json: Any = None
        if headers.get("content-type", "").startswith("application/json") or \
                body[:1] in (b"{", b"["):
            try:
                self.json = json.loads(body)
            except ValueError:
                self.json = None


class Transport:
    """Requests to one controller (``url`` such as ``http://127.0.0.1:8000``)."""

    def __init__(self, url: str, token: str, timeout: Optional[float] = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the controller URL must be http://HOST:PORT, not %r" % url)
        self.url = url.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.token = token
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else \
                http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self) -> None:
        """Closes this thread's connection."""
        self._drop()

    def request(self, method: str, path: str, body: Any = None,
                raw: Optional[Union[bytes, memoryview]] = None,
                query: Optional[Mapping[str, Any]] = None,
                headers: Optional[Mapping[str, str]] = None,
                ok: Tuple[int, ...] = (200, 201, 202)) -> Answer:
        """Sends one request; ``body`` is JSON-encoded, ``raw`` sent as
        ``application/octet-stream``.  Raises :class:`APIError` unless the
        status is in ``ok``."""
        if query:
            items = {k: _query_value(v) for k, v in query.items() if v is not None}
            if items:
                path += ("&" if "?" in path else "?") + urllib.parse.urlencode(items)
        hdrs = {"Authorization": "Bearer " + self.token}
        data: Optional[Union[bytes, memoryview]] = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw
            hdrs["Content-Type"] = "application/octet-stream"
        if headers:
            hdrs.update(headers)
        answer = self._send(method, path, data, hdrs)
        if answer.status not in ok:
            raise _api_error(answer, method, path)
        return answer

    def _send(self, method: str, path: str, data: Optional[Union[bytes, memoryview]],
              hdrs: Dict[str, str]) -> Answer:
        # A kept-alive connection the server closed meanwhile fails on first
        # use: retry once on a fresh one (only then, so no call runs twice
        # after the server saw it — a reset before any answer byte).
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=hdrs)
                resp = conn.getresponse()
                body = resp.read()
                headers = {k.lower(): v for k, v in resp.getheaders()}
                if headers.get("connection", "").lower() == "close":
                    self._drop()
                return Answer(resp.status, headers, body)
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as e:
                self._drop()
                if attempt == 1:
                    raise ConnectionError("the controller at %s closed the connection: %s"
                                          % (self.url, e)) from None
            except socket.timeout:
                self._drop()
                raise ConnectionError("no answer from %s within %s s (%s %s)"
                                      % (self.url, self.timeout, method, path)) from None
            except OSError as e:
                self._drop()
                raise ConnectionError("cannot reach the controller at %s: %s"
                                      % (self.url, e.strerror or e)) from None
        raise AssertionError("unreachable")

    def get(self, path: str, **kw: Any) -> Any:
        """GET, answering the decoded JSON body."""
        return self.request("GET", path, **kw).json

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        """POST a JSON body, answering the decoded JSON body."""
        return self.request("POST", path, body=body, **kw).json


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _api_error(answer: Answer, method: str, path: str) -> APIError:
    code, message = "http_%d" % answer.status, answer.body[:300].decode("utf-8", "replace")
    if isinstance(answer.json, dict) and isinstance(answer.json.get("error"), dict):
        code = str(answer.json["error"].get("code", code))
        message = str(answer.json["error"].get("message", message))
    if answer.status == 401:
        return AuthenticationError(401, code, message + " (check the token)", method, path)
    if code == "no_engines":
        return NoEnginesError(answer.status, code, message, method, path)
    return APIError(answer.status, code, message, method, path)
