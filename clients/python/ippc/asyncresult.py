"""AsyncResult: a call in flight, after IPython Parallel's.

Three kinds share one class:

* a **direct** request (one task per target; its answer comes from
  ``GET /api/v1/requests/{id}`` once every target finished);
* **balanced tasks** (``LoadBalancedView.apply``, ``DirectView.map``): each
  task's ``task.completed`` event carries its state and result;
* a **map** (``LoadBalancedView.map``): one task per chunk; the answer has one
  result per item.

Whether it is done is learnt from the client's event stream (WebSocket), not
by polling: waits block on the stream's condition variable.  When the stream
is down, waits fall back to the controller's long-poll (``?wait=``).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, TYPE_CHECKING

from . import values
from .errors import APIError, CompositeError, RemoteError, TimeoutError, remote_error_from

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = ["AsyncResult", "AsyncMapResult"]

_FINISHED = ("completed", "failed", "aborted", "lost")


def _needs_typed(value: Any) -> bool:
    """Whether an event's value may hide an array (lists and objects do)."""
    return isinstance(value, (list, dict))


class AsyncResult:
    """The result of a call that may not have finished.

    ``get(timeout)`` waits and returns the result (raising the remote error);
    ``ready()``, ``wait(timeout)``, ``successful()``; ``stdout``,
    ``metadata``, ``elapsed``, ``progress``; iteration yields results as
    they complete; ``abort()``; ``display_outputs()``.
    """

    def __init__(self, client: "Client", kind: str, label: str, *,
                 request: Optional[int] = None, targets: Optional[List[int]] = None,
                 tasks: Optional[List[int]] = None, answer: Optional[Dict[str, Any]] = None,
                 single: bool = False, post: Optional[Callable[[Dict[str, Any]], Any]] = None,
                 fmt: str = "list", event_values: bool = True) -> None:
        self._client = client
        self._kind = kind
        self._label = label
        self._request = request
        self._targets = list(targets or [])
        self._tasks = list(tasks or [])
        self._answer = answer
        self._single = single
        self._post = post
        self._fmt = fmt
        # Whether a task.completed event's result is this call's per-target
        # value (execute, run, apply, pull of one name), so that iteration
        # can yield it before the whole answer is there.
        self._event_values = event_values
        self._submitted = time.monotonic()
        self._submitted_wall = time.time()
        self._done_at: Optional[float] = None
        self._result: Any = None
        self._errors: Optional[List[RemoteError]] = None
        self._resolved = False
        self._task_values: Dict[int, Any] = {}
        self._metadata: Optional[List[Dict[str, Any]]] = None
        if answer is not None:
            self._done_at = self._submitted
        # The stream keeps this call's events until it is resolved.
        self._watching = None
        # Tasks (or a request) the stream had forgotten before this result
        # watched them: their outcome is asked of the controller instead.
        self._missed: List[int] = []
        self._request_missed = False
        # Joins the tasks' results into the call's (a parallel function's
        # parts); applied when every task succeeded.
        self._join: Optional[Callable[[List[Any]], Any]] = None
        self._callbacks: List[Callable[["AsyncResult"], Any]] = []
        self._callback_lock = threading.Lock()
        ev = client._events
        self._epoch = ev.epoch if ev is not None else 0
        if answer is None and ev is not None:
            self._missed, self._request_missed = ev.watch(
                self._tasks, request if kind == "direct" else None, len(self._targets))
            self._watching = ev

    def _unwatch(self) -> None:
        ev, self._watching = self._watching, None
        if ev is not None:
            ev.unwatch(self._tasks, self._request if self._kind == "direct" else None)

    def __del__(self) -> None:
        try:
            self._unwatch()
        except Exception:
            pass

    # ---------------------------------------------------------------- identity

    def __repr__(self) -> str:
        return "<%s: %s:%s>" % (type(self).__name__, self._label,
                                "finished" if self.ready() else "pending")

    @property
    def request_id(self) -> Optional[int]:
        """The controller's request id (direct calls and maps)."""
        return self._request

    @property
    def task_ids(self) -> List[int]:
        """The ids of this call's tasks (IPython Parallel's ``msg_ids``)."""
        if self._kind == "direct" and self._request is not None:
            ev = self._client._events
            n = len(self._targets)
            seen: List[int] = []
            if ev is not None and self._stream_ok():
                # task.submitted events may trail the REST answer a little.
                ev.wait_for(lambda: len(ev.requests.get(self._request, [])) >= n, 5.0)
                seen = ev.request_tasks(self._request)
            if len(seen) < n:
                seen = self._task_ids_from_store()
            return sorted(seen)
        return list(self._tasks)

    msg_ids = task_ids

    def _task_ids_from_store(self) -> List[int]:
        """The request's task ids from the task store (when the stream missed them)."""
        found = []
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._submitted_wall - 60))
        for t in self._client.tasks(since=since):
            if t.get("request") == self._request and t.get("kind") == "direct":
                found.append(t["id"])
                if len(found) == len(self._targets):
                    break
        return found

    def __len__(self) -> int:
        return len(self._targets) if self._kind == "direct" else len(self._tasks)

    # ------------------------------------------------------------------ state

    def _finished_count(self) -> int:
        """Tasks finished so far, from the stream (call under the stream lock)."""
        ev = self._client._events
        if ev is None:
            return 0
        if self._kind == "direct":
            assert self._request is not None
            return sum(1 for t in ev.requests.get(self._request, [])
                       if t in ev.tasks and ev.tasks[t].completed is not None)
        return sum(1 for t in self._tasks
                   if t in self._task_values or ev.completed(t) is not None)

    def _done_locked(self) -> bool:
        if self._answer is not None or self._resolved:
            return True
        n = len(self._targets) if self._kind == "direct" else len(self._tasks)
        return self._finished_count() >= n

    def ready(self) -> bool:
        """Whether the call has finished (every task of it)."""
        if self._answer is not None or self._resolved:
            return True
        if self._stream_ok():
            ev = self._client._events
            assert ev is not None
            if self._missed and not self._fetch_missed(0):
                done = False
            else:
                with ev.cond:
                    done = self._done_locked()
        else:
            done = self._poll(0)
        if done and self._done_at is None:
            self._done_at = time.monotonic()
        return done

    def _stream_ok(self) -> bool:
        """Whether waiting can rely on the event stream."""
        ev = self._client._events
        return (ev is not None and ev.alive and not self._request_missed
                and ev.epoch == self._epoch)

    def _fetch_missed(self, wait: float) -> bool:
        """Asks the controller for the tasks the stream forgot (long-poll up
        to ``wait`` s); True when they all finished."""
        deadline = time.monotonic() + wait
        for t in list(self._missed):
            left = max(0.0, deadline - time.monotonic())
            task = self._client._rest.get("/api/v1/tasks/%d" % t,
                                          query={"wait": left, "format": self._fmt})
            if task.get("state") not in _FINISHED:
                return False
            self._task_values[t] = task
            self._missed.remove(t)
        return True

    def _poll(self, wait: float) -> bool:
        """Asks the controller (long-poll up to ``wait`` s) whether it is done."""
        rest = self._client._rest
        if self._kind in ("direct", "map"):
            body = rest.get("/api/v1/requests/%d" % self._request,
                            query={"wait": wait, "format": self._fmt})
            if body.get("status") != "pending":
                self._answer = body
                return True
            return False
        deadline = time.monotonic() + wait
        for t in self._tasks:
            if t in self._task_values:
                continue
            left = max(0.0, deadline - time.monotonic())
            task = rest.get("/api/v1/tasks/%d" % t, query={"wait": left, "format": self._fmt})
            if task.get("state") not in _FINISHED:
                return False
            self._task_values[t] = task
        return True

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits until the call finished or ``timeout`` seconds passed
        (None: forever).  Returns whether it finished."""
        if self.ready():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        ev = self._client._events
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if ev is not None and self._stream_ok():
                if self._missed:
                    step = 30.0 if remaining is None else max(0.0, min(30.0, remaining))
                    if not self._fetch_missed(step):
                        if remaining is not None and remaining <= step:
                            return False
                        continue
                if ev.wait_for(lambda: self._done_locked() or ev.epoch != self._epoch,
                               remaining):
                    if ev.epoch == self._epoch:
                        break
                    continue  # events were lost: ask the controller
                if ev.alive:
                    return False  # timed out
            else:
                step = 30.0 if remaining is None else max(0.0, min(30.0, remaining))
                if self._poll(step):
                    break
                if remaining is not None and remaining <= step:
                    return False
        if self._done_at is None:
            self._done_at = time.monotonic()
        return True

    def successful(self) -> bool:
        """True when finished without an error (False while pending)."""
        if not self.ready():
            return False
        self._resolve()
        return not self._errors

    def get(self, timeout: Optional[float] = None) -> Any:
        """The result, waiting up to ``timeout`` seconds (None: forever).

        Raises :class:`~ippc.errors.TimeoutError` when not ready in time,
        :class:`~ippc.errors.RemoteError` (one engine or task) or
        :class:`~ippc.errors.CompositeError` (several) when it failed.
        """
        if not self.wait(timeout):
            raise TimeoutError("%s not finished within %s s" % (self._label, timeout))
        self._resolve()
        if self._errors:
            self._raise()
        return self._result

    def add_done_callback(self, fn: Callable[["AsyncResult"], Any]) -> None:
        """Calls ``fn(self)`` once the call is done (at once if it is): from
        a thread of the client's, as ``concurrent.futures`` does from the
        thread that finishes a future.  An exception in ``fn`` is printed
        to stderr, not raised."""
        with self._callback_lock:
            self._callbacks.append(fn)
            first = len(self._callbacks) == 1
        if first:
            threading.Thread(target=self._run_callbacks, name="ippc-callbacks",
                             daemon=True).start()

    def _run_callbacks(self) -> None:
        self.wait()
        while True:
            with self._callback_lock:
                if not self._callbacks:
                    return
                fn = self._callbacks.pop(0)
            try:
                fn(self)
            except Exception as e:  # as concurrent.futures: logged, not raised
                print("ippc: exception in a done callback of %s: %r" % (self._label, e),
                      file=sys.stderr)

    def result(self, timeout: Optional[float] = None) -> Any:
        """``get(timeout)`` (the name ``concurrent.futures`` uses)."""
        return self.get(timeout)

    def done(self) -> bool:
        """``ready()`` (the name ``concurrent.futures`` uses)."""
        return self.ready()

    def _raise(self) -> None:
        assert self._errors
        if self._single or (self._kind == "tasks" and len(self._tasks) == 1):
            raise self._errors[0]
        raise CompositeError("one or more exceptions raised in %s" % self._label, self._errors,
                             self._label.split(" ")[0])

    def get_dict(self, timeout: Optional[float] = None) -> Dict[int, Any]:
        """The result keyed by engine id (direct calls)."""
        result = self.get(timeout)
        engines = self.engine_id
        if self._single:
            return {engines: result}  # type: ignore[dict-item]
        return dict(zip(engines, result))  # type: ignore[arg-type]

    # ------------------------------------------------------------- resolving

    def _fetch_answer(self) -> Dict[str, Any]:
        if self._answer is None or self._answer.get("status") == "pending":
            self._answer = self._client._rest.get("/api/v1/requests/%d" % self._request,
                                                  query={"format": self._fmt, "wait": 3600})
        return self._answer

    def _task_record(self, t: int) -> Dict[str, Any]:
        """The finished task's record: from its event when that has all of
        it, else from ``GET /api/v1/tasks/{id}`` (in the typed format)."""
        if t in self._task_values:
            return self._task_values[t]
        ev = self._client._events
        event = None
        if ev is not None:
            with ev.cond:
                event = ev.completed(t)
        if event is not None and not event.get("result_omitted") and not (
                self._fmt == "typed" and _needs_typed(event.get("result"))):
            rec = dict(event)
            rec["state"] = event.get("state")
        else:
            rec = self._client._rest.get("/api/v1/tasks/%d" % t,
                                         query={"format": self._fmt, "wait": 3600})
        self._task_values[t] = rec
        return rec

    def _task_outcome(self, t: int) -> Any:
        rec = self._task_record(t)
        state = rec.get("state")
        if state != "completed":
            err = rec.get("error") or {"ename": "TaskError", "evalue": "task %d %s" % (t, state)}
            return remote_error_from(err, rec.get("engine"), t, state)
        return values.from_wire(rec.get("result"))

    def _resolve(self) -> None:
        if self._resolved:
            return
        errors: List[RemoteError] = []
        if self._kind == "direct":
            answer = self._fetch_answer()
            result = self._post(answer) if self._post else answer
            errors = _direct_errors(answer)
            if self._single and isinstance(result, list):
                result = result[0] if result else None
        elif self._kind == "tasks":
            out = []
            for t in self._tasks:
                v = self._task_outcome(t)
                if isinstance(v, RemoteError):
                    errors.append(v)
                    out.append(None)
                else:
                    out.append(v)
            result = out[0] if self._single else out
            if self._join is not None and not errors:
                result = self._join(out)
        else:
            answer = self._fetch_answer()
            result = values.from_wire(answer.get("results", []))
            for e in answer.get("errors") or []:
                errors.append(remote_error_from(e, None, e.get("task")))
        self._result = result
        self._errors = errors
        self._resolved = True
        self._unwatch()

    # ------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[Any]:
        """Results as their tasks complete (completion order), raising the
        remote error of a failed one when it comes to it."""
        if self._resolved:  # all there already: in order
            result = self.get()
            yield from ([result] if self._single else result)
            return
        if self._kind == "direct":
            yield from self._iter_direct()
        elif self._kind == "tasks":
            for t in self._completion_order(self._tasks):
                v = self._task_outcome(t)
                if isinstance(v, RemoteError):
                    raise v
                yield v
        else:
            yield from self.get()

    def _completion_order(self, tasks: List[int]) -> Iterator[int]:
        """Task ids in the order their ``task.completed`` events came."""
        pending = set(tasks)
        ev = self._client._events
        while pending:
            if ev is None or not self._stream_ok() or self._missed:
                self.wait()  # all finished: the rest in submission order
                yield from [t for t in tasks if t in pending]
                return

            def finished(t: int) -> bool:
                return t in self._task_values or ev.completed(t) is not None  # type: ignore

            def seq(t: int) -> int:
                event = ev.completed(t)  # type: ignore
                return int(event.get("seq", 0)) if event else 0

            with ev.cond:
                ev.wait_for(lambda: any(finished(t) for t in pending) or not ev.alive
                            or ev.epoch != self._epoch, None)
                done = sorted((t for t in pending if finished(t)), key=seq)
            for t in done:
                pending.discard(t)
                yield t

    def _iter_direct(self) -> Iterator[Any]:
        """Per-target values as the targets finish (their events' order)."""
        assert self._request is not None
        ev = self._client._events
        yielded: set = set()  # engines
        if self._answer is None and ev is not None and self._stream_ok():
            seen: set = set()  # tasks
            while len(yielded) < len(self._targets):
                with ev.cond:
                    def fresh_tasks() -> List[int]:
                        return [t for t in ev.requests.get(self._request, [])  # type: ignore
                                if t not in seen and t in ev.tasks  # type: ignore
                                and ev.tasks[t].completed is not None]  # type: ignore
                    if not ev.wait_for(lambda: bool(fresh_tasks()) or not self._stream_ok(),
                                       None) or not self._stream_ok():
                        break  # the stream cannot tell: the rest from the answer
                    fresh = sorted(fresh_tasks(),
                                   key=lambda t: ev.tasks[t].completed.get("seq", 0))  # type: ignore
                    events = [ev.tasks[t].completed for t in fresh]
                for t, event in zip(fresh, events):
                    assert event is not None
                    seen.add(t)
                    eng = event.get("engine")
                    yielded.add(eng)
                    if event.get("state") != "completed":
                        raise remote_error_from(event.get("error") or {}, eng, t,
                                                event.get("state"))
                    value = event.get("result")
                    if event.get("result_omitted") or not self._event_values or (
                            self._fmt == "typed" and _needs_typed(value)):
                        yield self._target_value(eng)  # exact (arrays typed) from the answer
                    else:
                        yield values.from_wire(value)
        for eng in self._targets:
            if eng not in yielded:
                yield self._target_value(eng)

    def _target_value(self, engine: Any) -> Any:
        """One target's value from the whole answer (raising its error)."""
        self.wait()
        self._resolve()
        for e in self._errors or []:
            if e.engine_id == engine:
                raise e
        per = [self._result] if self._single else list(self._result or [])
        i = self._targets.index(engine)
        return per[i] if i < len(per) else None

    # ---------------------------------------------------------------- extras

    @property
    def engine_id(self) -> Any:
        """The engine id (single target or task) or the list of them."""
        if self._kind == "direct":
            return self._targets[0] if self._single else list(self._targets)
        ids = [self._task_record(t).get("engine") if self.ready() else None
               for t in self._tasks]
        return ids[0] if self._single else ids

    @property
    def stdout(self) -> Any:
        """What the engines printed: a string per target (or task); a single
        string for a single target.  Streamed text before the call finished."""
        if self._kind == "direct":
            if self.ready():
                answer = self._fetch_answer()
                outs = [r.get("stdout", "") if isinstance(r, dict) else ""
                        for r in answer.get("results", [])]
            else:
                ev = self._client._events
                by_engine: Dict[int, str] = {}
                if ev is not None:
                    for t in ev.request_tasks(self._request or 0):
                        info = ev.tasks.get(t)
                        if info is not None and info.engine is not None:
                            by_engine[info.engine] = ev.stdout(t)
                outs = [by_engine.get(e, "") for e in self._targets]
            return outs[0] if self._single else outs
        ev = self._client._events
        outs = []
        ready = self.ready()
        for t in self._tasks:
            complete = ev is not None and ev.stdout_complete(t)
            text = ev.stdout(t) if ev is not None else ""
            if ready and (not text or not complete):
                text = self._metadata_of(t).get("stdout", "")  # the whole text
            outs.append(text)
        return outs[0] if self._single else outs

    def _metadata_of(self, t: int) -> Dict[str, Any]:
        rec = self._client._rest.get("/api/v1/tasks/%d" % t)
        return rec

    @property
    def metadata(self) -> Any:
        """Per task: ``engine_id``, ``task_id``, ``status``, ``submitted``,
        ``started``, ``completed`` (ISO times), ``stdout`` — a list, or one
        dict for a single target/task."""
        if self._metadata is None or not self._resolved:
            out = []
            for t in self.task_ids:
                rec = self._metadata_of(t)
                out.append({"task_id": t, "engine_id": rec.get("engine"),
                            "status": rec.get("state"), "submitted": rec.get("submitted"),
                            "started": rec.get("started"), "completed": rec.get("completed"),
                            "stdout": rec.get("stdout", ""), "error": rec.get("error")})
            if self._kind == "direct":
                order = {e: i for i, e in enumerate(self._targets)}
                out.sort(key=lambda m: order.get(m["engine_id"], 0))
            self._metadata = out
            if self.ready():
                self._resolve()
        md = self._metadata
        return md[0] if (self._single and md) else md

    @property
    def elapsed(self) -> float:
        """Seconds from submission to completion (or to now while pending)."""
        if self._done_at is None:
            self.ready()  # notes the time it is first seen finished
        end = self._done_at if self._done_at is not None else time.monotonic()
        return end - self._submitted

    @property
    def progress(self) -> int:
        """How many of the call's tasks have finished."""
        if self.ready():
            return len(self)
        ev = self._client._events
        if ev is None:
            return 0
        with ev.cond:
            return self._finished_count()

    def abort(self) -> None:
        """Aborts the tasks that have not started (running ones go on; use
        ``view.interrupt()`` or ``abort(force=True)`` for those)."""
        self._abort(False)

    def _abort(self, force: bool) -> None:
        for t in self.task_ids:
            try:
                self._client._rest.request("DELETE", "/api/v1/tasks/%d" % t,
                                           query={"force": force} if force else None)
            except APIError as e:
                if e.status not in (404, 409):
                    raise

    def display_outputs(self, file: Any = None) -> None:
        """Prints each engine's stdout with ``[stdout:N]`` headers and each
        error, as IPython Parallel's ``display_outputs``."""
        file = file or sys.stdout
        self.wait()
        self._resolve()
        engines = self.engine_id
        engines = [engines] if self._single or not isinstance(engines, list) else engines
        outs = self.stdout
        outs = [outs] if isinstance(outs, str) else outs
        for eng, text in zip(engines, outs):
            print_stream(text, "[stdout:%s] " % eng, file)
        for e in self._errors or []:
            print("[%s:%s]: %s: %s" % (e.engine_id, self._label.split(" ")[0], e.ename,
                                       e.evalue), file=file)
            for line in e.traceback:
                print(line, file=file)

    def wait_interactive(self, interval: float = 0.1, timeout: Optional[float] = None,
                         widget: Optional[bool] = None) -> bool:
        """Waits while showing a progress bar (terminal or notebook)."""
        from .progress import Progress
        bar = Progress(len(self), self._label, widget=widget)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self.ready():
                bar.update(self.progress)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.wait(interval if left is None else min(interval, left))
            bar.update(len(self))
        finally:
            bar.close()
        return True


class AsyncMapResult(AsyncResult):
    """A load-balanced map in flight: ``get()`` is the list of results in
    item order; iteration yields items as their chunks complete (input order
    when ``ordered``, completion order otherwise)."""

    def __init__(self, client: "Client", label: str, *, request: int, tasks: List[int],
                 chunksize: int, nitems: int, ordered: bool, fmt: str,
                 answer: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(client, "map", label, request=request, tasks=tasks, answer=answer,
                         fmt=fmt)
        self._chunksize = chunksize
        self._nitems = nitems
        self._ordered = ordered

    def __iter__(self) -> Iterator[Any]:
        if self._answer is not None or self._resolved:
            yield from self.get()
            return
        order = self._completion_order(self._tasks)
        if self._ordered:
            done: Dict[int, Any] = {}
            nxt = 0
            for t in order:
                done[t] = self._chunk_items(t)
                while nxt < len(self._tasks) and self._tasks[nxt] in done:
                    yield from done.pop(self._tasks[nxt])
                    nxt += 1
        else:
            for t in order:
                yield from self._chunk_items(t)

    def _chunk_items(self, t: int) -> List[Any]:
        rec = self._task_record(t)
        if rec.get("state") != "completed":
            # A failed chunk: its items (results or errors) from the answer.
            self.get()  # raises the CompositeError of the failed items
        return list(values.from_wire(rec.get("result")) or [])


def print_stream(text: str, prefix: str, file: Any) -> None:
    """Prints one engine's output after a ``[stdout:N]`` prefix: on the same
    line when it is one line, else the prefix on a line of its own."""
    if not text:
        return
    end = "" if text.endswith("\n") else "\n"
    multiline = text.count("\n") > int(text.endswith("\n"))
    if multiline and not text.startswith("\n"):
        prefix = prefix + "\n"
    print(prefix + text, file=file, end=end)


def _direct_errors(answer: Dict[str, Any]) -> List[RemoteError]:
    """One RemoteError per failed target of a direct request's answer."""
    errors: List[RemoteError] = []
    seen = set()
    for r in answer.get("results") or []:
        if isinstance(r, dict) and r.get("status") in ("error", "aborted", "lost"):
            errors.append(remote_error_from(r, r.get("engine"), None, r.get("status")))
            seen.add(r.get("engine"))
    for e in answer.get("errors") or []:
        if e.get("engine") not in seen:
            errors.append(remote_error_from(e, e.get("engine")))
            seen.add(e.get("engine"))
    return errors
