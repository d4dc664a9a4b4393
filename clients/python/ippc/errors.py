"""The exceptions of the ippc client, named after IPython Parallel's.

* :class:`RemoteError` — code failed on an engine; carries ``ename``,
  ``evalue``, the remote ``traceback`` (a list of lines) and ``engine_id``;
  its message includes the traceback.
* :class:`CompositeError` — a call on several engines (or a map over several
  items) had failures: one :class:`RemoteError` per failed engine (or item)
  in ``elist``.
* :class:`EngineError` — the engine died under the task (state ``lost``).
* :class:`TaskAborted` — the task was aborted or interrupted.
* :class:`TimeoutError` — a wait ran out (also a builtin ``TimeoutError``).
* :class:`APIError` — the controller refused a request (``status``, ``code``,
  ``message`` from its JSON error); :class:`AuthenticationError` for a wrong
  token; :class:`ConnectionError` when the controller cannot be reached.
"""

from __future__ import annotations

import builtins
from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = [
    "IppcError",
    "RemoteError",
    "CompositeError",
    "EngineError",
    "TaskAborted",
    "TimeoutError",
    "APIError",
    "AuthenticationError",
    "ConnectionError",
    "NoEnginesError",
    "remote_error_from",
]


class IppcError(Exception):
    """Base class of every error the ippc client raises."""


class RemoteError(IppcError):
    """An error raised by code running on an engine.

    ``str(e)`` is ``[engine N] ENAME: EVALUE`` followed by the remote
    traceback, so that a plain ``raise`` shows where it failed.
    """

    def __init__(self, ename: str, evalue: str, traceback: Optional[Sequence[str]] = None,
                 engine_id: Optional[int] = None, task_id: Optional[int] = None) -> None:
        self.ename = ename
        self.evalue = evalue
        self.traceback: List[str] = list(traceback or [])
        self.engine_id = engine_id
        self.task_id = task_id
        super().__init__(self._message())

    def _message(self) -> str:
        where = "[engine %s] " % self.engine_id if self.engine_id is not None else ""
        head = "%s%s: %s" % (where, self.ename, self.evalue)
        if self.traceback:
            return head + "\n" + "\n".join(self.traceback)
        return head

    def render_traceback(self) -> List[str]:
        """The lines IPython shows for this error (its remote traceback)."""
        return self._message().splitlines()

    def _render_traceback_(self) -> List[str]:
        # IPython shows this instead of the local traceback.
        return self.render_traceback()

    def print_traceback(self) -> None:
        """Prints the remote traceback."""
        print(self._message())


class EngineError(RemoteError):
    """The engine running the task died (the task is ``lost``)."""


class TaskAborted(RemoteError):
    """The task was aborted, or interrupted while it ran."""


class CompositeError(RemoteError):
    """Several remote errors: ``elist`` holds one :class:`RemoteError` per
    failed engine (direct views) or failed item (maps).

    ``raise_exception(i)`` raises the i-th one alone, as IPython Parallel's does.
    """

    def __init__(self, message: str, elist: Sequence[RemoteError], method: str = "") -> None:
        self.elist: List[RemoteError] = list(elist)
        self.message = message
        self.method = method
        first = self.elist[0] if self.elist else None
        super().__init__(first.ename if first else "CompositeError",
                         first.evalue if first else message,
                         first.traceback if first else [],
                         first.engine_id if first else None,
                         first.task_id if first else None)

    def _message(self) -> str:
        lines = ["%s (%d error%s)" % (self.message, len(self.elist),
                                      "" if len(self.elist) == 1 else "s")]
        for e in self.elist:
            where = e.engine_id if e.engine_id is not None else "task %s" % e.task_id
            tag = "[%s:%s]" % (where, self.method or "apply")
            lines.append("%s %s: %s" % (tag, e.ename, e.evalue))
            lines.extend("    " + t for t in e.traceback)
        return "\n".join(lines)

    def raise_exception(self, excid: int = 0) -> None:
        """Raises the ``excid``-th remote error alone."""
        raise self.elist[excid]


class TimeoutError(IppcError, builtins.TimeoutError):
    """A result was not ready within the time asked for."""


class APIError(IppcError):
    """The controller answered with an error: ``status`` (HTTP), ``code``
    (e.g. ``bad_targets``, ``no_engines``) and ``message``."""

    def __init__(self, status: int, code: str, message: str, method: str = "",
                 path: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.path = path
        where = " (%s %s)" % (method, path) if method else ""
        super().__init__("HTTP %d %s: %s%s" % (status, code, message, where))


class AuthenticationError(APIError):
    """The controller refused the token (HTTP 401)."""


class NoEnginesError(APIError):
    """The targets name no live engine (HTTP 422 ``no_engines``)."""


class ConnectionError(IppcError, builtins.ConnectionError):
    """The controller could not be reached (a bad URL, or it is not running)."""


def remote_error_from(fields: Mapping[str, Any], engine_id: Optional[int] = None,
                      task_id: Optional[int] = None, state: Optional[str] = None) -> RemoteError:
    """A :class:`RemoteError` (or :class:`EngineError`, :class:`TaskAborted`)
    from the ``ename``/``evalue``/``traceback`` fields of an answer."""
    ename = str(fields.get("ename") or "RemoteError")
    evalue = str(fields.get("evalue") or "")
    tb = fields.get("traceback") or []
    status = state or fields.get("status")
    if engine_id is None and isinstance(fields.get("engine"), int):
        engine_id = fields["engine"]
    cls = RemoteError
    if status == "lost":
        cls = EngineError
    elif status == "aborted":
        cls = TaskAborted
    return cls(ename, evalue, [str(t) for t in tb], engine_id, task_id)


def error_details(e: RemoteError) -> Dict[str, Any]:
    """The error as a JSON-able dict (for display)."""
    return {"engine": e.engine_id, "task": e.task_id, "ename": e.ename, "evalue": e.evalue,
            "traceback": e.traceback}
