"""The client's live event stream: one WebSocket to ``/ws`` read by one
background thread.

It keeps what results need to finish without polling: for every task it has
seen, its request, its ``task.completed`` event and its stdout so far.  These
are kept for the last ``keep`` tasks (a bounded table; results of more than
``keep_result_bytes`` of JSON are dropped from it and fetched by REST when
asked for), so a result asked for right after its submit finds events that
arrived before it was asked.
Waiters block on one condition variable that every event notifies.

If the socket breaks, the thread reconnects and asks for the missed events
(``resume``); until then :attr:`EventStream.alive` is False and results fall
back to the controller's long-poll (``?wait=``).  If some were lost for good
(``gap``), :attr:`EventStream.epoch` grows and results that were waiting
since before ask the controller instead.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .websocket import OP_TEXT, Closed, WebSocket, WebSocketError

__all__ = ["EventStream", "TaskInfo", "STDOUT_KEEP"]

#: Streamed stdout kept per task; past it, the task store has the whole text.
STDOUT_KEEP = 1 << 20


class TaskInfo:
    """What the stream knows of one task."""

    __slots__ = ("task", "request", "engine", "completed", "stdout", "stdout_bytes",
                 "stdout_truncated")

    def __init__(self, task: int) -> None:
        self.task = task
        self.request: Optional[int] = None
        self.engine: Optional[int] = None
        #: The ``task.completed`` event, once it came.
        self.completed: Optional[Dict[str, Any]] = None
        #: stdout chunks, in order (at most STDOUT_KEEP bytes; then truncated).
        self.stdout: List[str] = []
        self.stdout_bytes = 0
        self.stdout_truncated = False


class EventStream:
    """One WebSocket to the controller's ``/ws``, read by a daemon thread."""

    def __init__(self, ws_url: str, token: str, keep: int = 20000,
                 keep_result_bytes: int = 4096) -> None:
        self.ws_url = ws_url
        self.token = token
        #: How many tasks are remembered (oldest forgotten first).
        self.keep = keep
        #: Results of events longer than this are not kept (fetched by REST).
        self.keep_result_bytes = keep_result_bytes
        self.cond = threading.Condition()
        self.tasks: "collections.OrderedDict[int, TaskInfo]" = collections.OrderedDict()
        self.requests: Dict[int, List[int]] = {}
        self.engines_changed = 0
        #: Increased when events were lost for good (a ``gap`` after resume).
        self.epoch = 0
        self.seq: Optional[int] = None
        self.alive = False
        self.error: Optional[BaseException] = None
        self._ws: Optional[WebSocket] = None
        self._stop = False
        self._listeners: List[Callable[[Dict[str, Any]], None]] = []
        self._watched: Dict[int, int] = {}
        #: The highest task id (and request id) forgotten so far.
        self.evicted_max = 0
        self.evicted_request_max = 0
        self._watched_requests: Dict[int, int] = {}
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30.0) -> None:
        """Connects and waits for the snapshot (so every task submitted after
        this returns is seen), then starts the reader thread."""
        self._connect(timeout)
        self._thread = threading.Thread(target=self._run, name="ippc-events", daemon=True)
        self._thread.start()

    def _connect(self, timeout: float) -> None:
        ws = WebSocket.connect(self.ws_url, headers={"Authorization": "Bearer " + self.token},
                               protocols=("ippc.client.v1",), timeout=timeout)
        try:
            ws.send_json({"op": "subscribe", "topics": ["engines", "tasks", "stdout"]})
            if self.seq is not None:
                ws.send_json({"op": "resume", "since": self.seq})
            deadline = time.monotonic() + timeout
            while True:
                msg = ws.recv_json(timeout=max(0.01, deadline - time.monotonic()))
                if msg.get("type") == "snapshot":
                    with self.cond:
                        if self.seq is None:
                            self.seq = msg.get("seq")
                        for t in msg.get("tasks") or []:
                            info = self._info(t.get("id"))
                            if info is not None:
                                info.engine = t.get("engine")
                                if t.get("request") is not None:
                                    info.request = t.get("request")
                        self.alive = True
                        self.cond.notify_all()
                    break
        except BaseException:
            ws.abort()
            raise
        self._ws = ws

    def close(self) -> None:
        """Stops the thread and closes the socket."""
        self._stop = True
        ws = self._ws
        if ws is not None:
            try:
                ws.send_close()  # the reader thread sees the answer and ends
            except OSError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        if ws is not None:
            ws.abort()  # ends a reader still waiting on a silent peer
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self.cond:
            self.alive = False
            self.cond.notify_all()

    def add_listener(self, fn: Callable[[Dict[str, Any]], None]) -> None:
        """Calls ``fn(event)`` from the reader thread for every event."""
        with self.cond:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[Dict[str, Any]], None]) -> None:
        """Stops calling ``fn``."""
        with self.cond:
            if fn in self._listeners:
                self._listeners.remove(fn)

    # -------------------------------------------------------------- reading

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop:
            ws = self._ws
            try:
                if ws is None:
                    raise WebSocketError("not connected")
                op, text = ws.recv(timeout=None)
                if op != OP_TEXT:
                    continue
                msg = json.loads(text)
                if isinstance(msg, dict) and len(text) > self.keep_result_bytes and \
                        msg.get("type") == "task.completed" and "result" in msg:
                    # Kept events stay small: a big result is fetched when asked for.
                    del msg["result"]
                    msg["result_omitted"] = True
            except (Closed, WebSocketError, OSError, ValueError) as e:
                with self.cond:
                    self.alive = False
                    self.error = e
                    self.cond.notify_all()
                if self._stop:
                    return
                # Reconnect with resume; results wait by long-poll meanwhile.
                while not self._stop:
                    time.sleep(backoff)
                    try:
                        self._connect(10.0)
                        backoff = 0.2
                        break
                    except (WebSocketError, OSError, ValueError, TimeoutError):
                        backoff = min(backoff * 2, 5.0)
                continue
            if isinstance(msg, dict):
                self._on_message(msg)

    def _info(self, task: Any) -> Optional[TaskInfo]:
        if not isinstance(task, int):
            return None
        info = self.tasks.get(task)
        if info is None:
            info = TaskInfo(task)
            self.tasks[task] = info
            self._evict()
        return info

    def _evict(self) -> None:
        """Forgets the oldest tasks past ``keep``, except those a result
        still waits on (watched tasks and requests go to the back)."""
        spared = 0
        while len(self.tasks) > self.keep and spared < len(self.tasks):
            tid, old = self.tasks.popitem(last=False)
            if tid in self._watched or (old.request is not None
                                        and old.request in self._watched_requests):
                self.tasks[tid] = old
                spared += 1
                continue
            self.evicted_max = max(self.evicted_max, tid)
            if old.request is not None:
                self.evicted_request_max = max(self.evicted_request_max, old.request)
                ids = self.requests.get(old.request)
                if ids is not None:
                    if tid in ids:
                        ids.remove(tid)
                    if not ids:
                        del self.requests[old.request]

    def watch(self, tasks: Sequence[int] = (), request: Optional[int] = None,
              expected: int = 0) -> Tuple[List[int], bool]:
        """Keeps the events of ``tasks`` (and of ``request``'s ``expected``
        tasks) until :meth:`unwatch`: a result waiting on them must not lose
        them.  Answers what was forgotten already (the tasks, and whether
        some of the request's were): those must be asked of the controller."""
        with self.cond:
            for t in tasks:
                self._watched[t] = self._watched.get(t, 0) + 1
            missed = [t for t in tasks if t not in self.tasks and t <= self.evicted_max]
            request_missed = False
            if request is not None:
                self._watched_requests[request] = self._watched_requests.get(request, 0) + 1
                request_missed = (request <= self.evicted_request_max
                                  and len(self.requests.get(request, [])) < expected)
            return missed, request_missed

    def unwatch(self, tasks: Sequence[int] = (), request: Optional[int] = None) -> None:
        """Undoes one :meth:`watch`."""
        with self.cond:
            for t in tasks:
                n = self._watched.get(t, 0) - 1
                if n > 0:
                    self._watched[t] = n
                else:
                    self._watched.pop(t, None)
            if request is not None:
                n = self._watched_requests.get(request, 0) - 1
                if n > 0:
                    self._watched_requests[request] = n
                else:
                    self._watched_requests.pop(request, None)

    def _on_message(self, msg: Dict[str, Any]) -> None:
        kind = msg.get("type", "")
        with self.cond:
            if isinstance(msg.get("seq"), int):
                self.seq = msg["seq"]
            if kind.startswith("task."):
                info = self._info(msg.get("task"))
                if info is not None:
                    if msg.get("engine") is not None:
                        info.engine = msg.get("engine")
                    req = msg.get("request")
                    if isinstance(req, int) and info.request is None:
                        info.request = req
                        self.requests.setdefault(req, []).append(info.task)
                    if kind == "task.stdout":
                        data = str(msg.get("data", ""))
                        if info.stdout_bytes + len(data) <= STDOUT_KEEP:
                            info.stdout.append(data)
                            info.stdout_bytes += len(data)
                        else:
                            info.stdout_truncated = True  # the task store has it all
                    elif kind == "task.completed":
                        info.completed = msg
            elif kind.startswith("engine."):
                self.engines_changed += 1
            elif kind == "gap":
                # Events were lost (the resume ring had moved on): results
                # waiting since before cannot trust the stream any more.
                self.epoch += 1
            listeners = list(self._listeners)
            self.cond.notify_all()
        for fn in listeners:
            try:
                fn(msg)
            except Exception:  # a display callback must not stop the stream
                pass

    # -------------------------------------------------------------- queries

    def completed(self, task: int) -> Optional[Dict[str, Any]]:
        """The task's ``task.completed`` event, or None (call under :attr:`cond`)."""
        info = self.tasks.get(task)
        return info.completed if info else None

    def stdout(self, task: int) -> str:
        """The stdout streamed so far for ``task`` (see :meth:`stdout_complete`)."""
        with self.cond:
            info = self.tasks.get(task)
            return "".join(info.stdout) if info else ""

    def stdout_complete(self, task: int) -> bool:
        """Whether :meth:`stdout` holds all the task printed so far."""
        with self.cond:
            info = self.tasks.get(task)
            return info is not None and not info.stdout_truncated

    def request_tasks(self, request: int) -> List[int]:
        """The task ids seen for ``request`` so far."""
        with self.cond:
            return list(self.requests.get(request, []))

    def wait_for(self, predicate: Callable[[], bool], timeout: Optional[float]) -> bool:
        """Waits until ``predicate()`` (called under the lock) is true, the
        stream dies, or ``timeout`` passes.  Returns ``predicate()``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while True:
                if predicate():
                    return True
                if not self.alive:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.cond.wait(remaining if remaining is not None else 1.0)
