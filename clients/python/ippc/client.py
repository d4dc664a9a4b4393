"""Client: the connection to one ippc controller, after IPython Parallel's.

``Client()`` reads the default profile's connection file
(``$IPPC_DIR/profile_default/security/ippc-client.json``; ``IPPC_DIR``
defaults to ``~/.ippc``), waiting for it to appear as ``ipp.Client()`` does;
``Client.from_file(profile=...)`` or ``Client(url_file=PATH)`` read another;
``Client(url, token)`` needs no file.

``c[:]``, ``c[0]``, ``c[0:2]``, ``c[[0, 2]]`` are DirectViews;
``c.load_balanced_view()`` a LoadBalancedView.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import inspect
import json
import operator
import os
import signal
import subprocess
import textwrap
import threading
import time
import types
import urllib.parse
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from . import values
from .asyncresult import AsyncResult
from .errors import APIError, ConnectionError, IppcError, TimeoutError
from .stream import EventStream
from .transport import Transport
from .view import DirectView, LoadBalancedView, Targets, target_spec
from .websocket import HandshakeError, WebSocketError

__all__ = ["Client", "connection_file", "ippc_dir"]


def ippc_dir(path: Optional[str] = None) -> str:
    """The folder profiles live in: ``path``, else ``$IPPC_DIR``, else ``~/.ippc``."""
    return path or os.environ.get("IPPC_DIR") or os.path.join(os.path.expanduser("~"), ".ippc")


def connection_file(profile: Optional[str] = None, ippc_dir_: Optional[str] = None) -> str:
    """The client connection file of ``profile`` (default ``default``)."""
    return os.path.join(ippc_dir(ippc_dir_), "profile_%s" % (profile or "default"),
                        "security", "ippc-client.json")


class Client:
    """A connection to a controller and its engines.

    Args:
        url: ``http://HOST:PORT`` of the controller (with ``token``), or the
            path of a connection file.  None: the profile's connection file.
        token: the client token (from the connection file by default).
        profile: the profile whose connection file to read (``default``).
        ippc_dir: where profiles live (``$IPPC_DIR`` or ``~/.ippc``).
        url_file: an explicit connection file.
        timeout: how long to wait for the connection file to appear and
            the controller to answer at start (seconds).
        events: whether to open the event stream now (it is opened on the
            first non-blocking call otherwise).
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, *,
                 profile: Optional[str] = None, ippc_dir: Optional[str] = None,
                 url_file: Optional[str] = None, timeout: float = 10.0,
                 events: bool = False) -> None:
        self.profile = profile
        self.ippc_dir = ippc_dir
        self.url_file: Optional[str] = None
        ws_url: Optional[str] = None
        info: Dict[str, Any] = {}
        if url is not None and token is None and not url.startswith(("http://", "https://")):
            url_file, url = url, None
        if url is None:
            self.url_file = url_file or connection_file(profile, ippc_dir)
            info = _read_connection_file(self.url_file, timeout)
            url = info["url"]
            token = info["token"]
            ws_url = info.get("ws_url")
            self.profile = info.get("profile") or profile
        elif token is None:
            raise ValueError("Client(url) needs token= too (or give a connection file)")
        assert url is not None and token is not None
        self.url: str = url.rstrip("/")
        self.token: str = token
        self.ws_url: str = ws_url or _ws_url_of(self.url)
        self._connection = info
        self._rest = Transport(self.url, token)
        self._events: Optional[EventStream] = None
        self._events_lock = threading.Lock()
        self._defined: Dict[str, set] = {}
        self._runtime: Optional[str] = None
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        #: The AsyncResults of this client's calls, oldest first.
        self.history: List[AsyncResult] = []
        # Check the controller and the token now: a clear error at once.
        try:
            self._info = self._rest.get("/api/v1/info")
        except ConnectionError as e:
            raise ConnectionError("cannot connect to the ippc controller at %s: %s"
                                  % (self.url, str(e).split(": ", 1)[-1])) from None
        if events:
            self._ensure_events()

    @classmethod
    def from_file(cls, path: Optional[str] = None, profile: Optional[str] = None,
                  ippc_dir: Optional[str] = None, timeout: float = 10.0,
                  **kw: Any) -> "Client":
        """A client from a connection file: ``path``, or ``profile``'s."""
        return cls(None, None, profile=profile, ippc_dir=ippc_dir, url_file=path,
                   timeout=timeout, **kw)

    def __repr__(self) -> str:
        return "<ippc.Client %s>" % self.url

    # ------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Closes the event stream and the HTTP connection."""
        with self._events_lock:
            ev, self._events = self._events, None
            pool, self._executor = self._executor, None
        if ev is not None:
            ev.close()
        if pool is not None:
            pool.shutdown(wait=True)
        self._rest.close()

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """Threads for requests sent side by side (each keeps its connection)."""
        with self._events_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=8, thread_name_prefix="ippc-http")
            return self._executor

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            ev = self._events
            if ev is not None:
                ev.close()
        except Exception:
            pass

    def _ensure_events(self) -> Optional[EventStream]:
        """Opens the event stream once (results then wait on it, not by polling).
        When it cannot be opened, results fall back to long-polls."""
        if self._events is not None:
            return self._events  # it reconnects by itself when the socket breaks
        with self._events_lock:
            if self._events is None:
                ev = EventStream(self.ws_url, self.token)
                try:
                    ev.start()
                except HandshakeError as e:
                    if e.status == 401:
                        raise APIError(401, "unauthorized", "the event stream refused the "
                                       "token") from None
                    return None
                except (WebSocketError, OSError, ValueError, TimeoutError):
                    return None
                self._events = ev
        return self._events

    # --------------------------------------------------------------- engines

    def engines(self) -> List[Dict[str, Any]]:
        """The controller's engine records (``GET /api/v1/engines``)."""
        return list(self._rest.get("/api/v1/engines").get("engines", []))

    @property
    def ids(self) -> List[int]:
        """The ids of the live engines, in order."""
        return sorted(e["id"] for e in self.engines() if e.get("state") != "dead")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def runtime(self) -> str:
        """The engines' language: ``lua`` or ``python`` (from the engine records)."""
        if self._runtime is None:
            kinds = {e.get("runtime", "lua") for e in self.engines() if e.get("state") != "dead"}
            self._runtime = kinds.pop() if len(kinds) == 1 else ("lua" if not kinds else "mixed")
        return self._runtime

    def _resolve_targets(self, spec: str) -> List[int]:
        """The engine ids a target spec names now (by asking the controller)."""
        live = self.ids
        if spec == "all":
            return live
        if ":" in spec or spec.startswith("-"):
            parts = [int(p) if p else None for p in spec.split(":")]
            if len(parts) == 1:
                return [live[parts[0]]] if parts[0] is not None else live
            return live[slice(*parts)]
        return [int(t) for t in spec.split(",")]

    def wait_for_engines(self, n: int, timeout: Optional[float] = None,
                         block: bool = True) -> None:
        """Waits until at least ``n`` engines are live (raising
        :class:`TimeoutError` after ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ev = self._ensure_events()
        while len(self.ids) < n:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("%d engine(s) of %d after %s s" % (len(self.ids), n, timeout))
            if ev is not None and ev.alive:
                seen = ev.engines_changed
                ev.wait_for(lambda: ev.engines_changed != seen, min(left or 1.0, 1.0))
            else:
                time.sleep(0.2)
        self._runtime = None

    def __getitem__(self, key: Union[int, slice, Sequence[int], str]) -> DirectView:
        if not isinstance(key, (bool, slice, str, list, tuple)) and hasattr(key, "__index__"):
            key = operator.index(key)  # NumPy integers too
        if isinstance(key, int) and not isinstance(key, bool):
            if key < 0:
                key = self.ids[key]
            return DirectView(self, key)
        if isinstance(key, (slice, str)):
            return DirectView(self, key)
        if isinstance(key, (list, tuple)):
            return DirectView(self, list(key))
        raise TypeError("c[...] takes an engine id, a slice or a list of ids")

    def direct_view(self, targets: Targets = "all") -> DirectView:
        """A DirectView of ``targets`` (default all engines, as ``c[:]``)."""
        return DirectView(self, "all" if targets is None else targets)

    def load_balanced_view(self, targets: Targets = None) -> LoadBalancedView:
        """A LoadBalancedView (over ``targets``, default any engine)."""
        if targets is not None:
            target_spec(targets)
        return LoadBalancedView(self, targets)

    # ----------------------------------------------------------------- tasks

    def _history_add(self, ar: AsyncResult) -> None:
        self.history.append(ar)
        if len(self.history) > 10000:
            del self.history[:len(self.history) - 10000]

    def _submit_tasks(self, specs: List[Dict[str, Any]], label: str,
                      single: bool) -> AsyncResult:
        self._ensure_events()
        body: Any = specs[0] if single and len(specs) == 1 else specs
        ans = self._rest.post("/api/v1/tasks", body)
        ids = [ans["id"]] if "id" in ans else list(ans.get("ids", []))
        ar = AsyncResult(self, "tasks", label, tasks=ids, single=single,
                         fmt=values.wire_format())
        self._history_add(ar)
        return ar

    def _finished(self, result: List[Any]) -> AsyncResult:
        """An AsyncResult of no task (a map over nothing), finished at once."""
        return AsyncResult(self, "tasks", "map", tasks=[], single=False)

    def _define_function(self, f: Callable[..., Any], targets: Targets) -> str:
        """Sends a module-level Python function's source to the engines
        (Python engines only) and answers its name."""
        if self.runtime != "python":
            raise TypeError("the engines run %s: pass the name of a function defined on "
                            "them (e.g. view.apply(%r, ...)); Python functions need Python "
                            "engines (Cluster(runtime='python'))"
                            % (self.runtime, getattr(f, "__name__", "f")))
        name = getattr(f, "__name__", "")
        if not name.isidentifier() or name == "<lambda>" or \
                getattr(f, "__qualname__", name) != name:
            raise TypeError("only module-level functions defined with def can be sent by "
                            "source, not %r" % f)
        try:
            source = textwrap.dedent(inspect.getsource(f))
        except (OSError, TypeError) as e:
            raise TypeError("cannot read the source of %s: %s" % (name, e)) from None
        lines = source.splitlines()
        while lines and lines[0].lstrip().startswith("@"):
            lines.pop(0)  # decorators run here, not on the engines
        source = "".join(l + "\n" for l in _module_imports(f)) + "\n".join(lines) + "\n"
        digest = hashlib.sha256(source.encode()).hexdigest()
        live = set(self.ids)
        if not live <= self._defined.get(digest, set()):
            DirectView(self, "all").execute(source, block=True)
            self._defined[digest] = live
        return name

    def wait(self, jobs: Optional[Sequence[AsyncResult]] = None,
             timeout: Optional[float] = None) -> bool:
        """Waits for ``jobs`` (default: every call of this client)."""
        jobs = list(self.history if jobs is None else jobs)
        deadline = None if timeout is None else time.monotonic() + timeout
        for ar in jobs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not ar.wait(left):
                return False
        return True

    @property
    def outstanding(self) -> List[int]:
        """Task ids of this client's calls that have not finished."""
        return [t for ar in self.history if not ar.ready() for t in ar.task_ids]

    def spin(self) -> None:
        """Does nothing: results arrive by the event stream without spinning
        (kept so IPython Parallel scripts run unchanged)."""

    def queue_status(self, targets: Targets = None, verbose: bool = False) -> Dict[Any, Any]:
        """Per engine id ``{"queue", "completed", "tasks"}`` (queued, done,
        running) and ``"unassigned"``, as IPython Parallel's."""
        q = self._rest.get("/api/v1/queue")
        out: Dict[Any, Any] = {}
        for k, v in q.get("engines", {}).items():
            out[int(k)] = {"queue": v.get("queued", 0), "completed": v.get("completed", 0),
                           "tasks": v.get("running", 0)}
            if verbose:
                out[int(k)]["state"] = v.get("state")
        out["unassigned"] = q.get("unassigned", 0)
        if verbose:
            out["waiting"] = q.get("waiting", 0)
        if targets is not None:
            ids = self._resolve_targets(target_spec(targets))
            out = {k: v for k, v in out.items() if k in ids or not isinstance(k, int)}
        return out

    def task(self, task_id: int) -> Dict[str, Any]:
        """One task's record (``GET /api/v1/tasks/{id}``)."""
        return dict(self._rest.get("/api/v1/tasks/%d" % int(task_id),
                                   query={"format": values.wire_format()}))

    def tasks(self, state: Optional[str] = None, engine: Optional[int] = None,
              tag: Optional[str] = None, since: Optional[str] = None,
              limit: Optional[int] = None) -> Iterator[Dict[str, Any]]:
        """Task records from the task store, oldest first, page after page
        (``state``, ``engine``, ``tag``, ``since``: filters; ``limit``: at most
        that many in all)."""
        cursor: Optional[int] = None
        given = 0
        while True:
            page = self._rest.get("/api/v1/tasks", query={
                "state": state, "engine": engine, "tag": tag, "since": since,
                "limit": 1000 if limit is None else max(1, min(1000, limit - given)),
                "cursor": cursor})
            for t in page.get("tasks", []):
                yield t
                given += 1
                if limit is not None and given >= limit:
                    return
            cursor = page.get("next_cursor")
            if cursor is None or not page.get("tasks"):
                return

    def db_query(self, **filters: Any) -> List[Dict[str, Any]]:
        """The task records matching ``filters`` (see :meth:`tasks`), as a list."""
        return list(self.tasks(**filters))

    def purge_results(self, jobs: Any = None, targets: Any = None,
                      before: Optional[str] = None) -> int:
        """Forgets finished tasks (all of them, or those completed before
        ``before``, an ISO-8601 UTC time).  Returns how many."""
        if jobs not in (None, "all") or targets is not None:
            raise NotImplementedError("ippc purges by time (before=), not by job or engine")
        ans = self._rest.request("DELETE", "/api/v1/tasks", query={"before": before})
        self.history = [ar for ar in self.history if not ar.ready()]
        return int(ans.json.get("purged", 0))

    def info(self) -> Dict[str, Any]:
        """The controller's ``GET /api/v1/info``."""
        return dict(self._rest.get("/api/v1/info"))

    def shutdown(self, targets: Targets = "all", hub: bool = True, block: bool = True,
                 timeout: float = 30.0) -> None:
        """Stops the cluster: ``ippc cluster stop`` for this client's profile
        (which stops the controller and every engine), or, without a
        launcher, the controller named in the connection file."""
        if targets not in ("all", None) or not hub:
            raise NotImplementedError("ippc stops whole clusters: shutdown() with "
                                      "targets='all', hub=True")
        from .cluster import find_ippc
        prof = self.profile or self._connection.get("profile")
        ippc = find_ippc()
        self.close()
        if prof and ippc and self.url_file:
            base = os.path.dirname(os.path.dirname(os.path.dirname(self.url_file)))
            subprocess.run([ippc, "cluster", "stop", "--profile", prof, "--ippc-dir", base,
                            "--timeout", str(timeout)], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return
        pid = self._connection.get("pid")
        if not pid:
            raise IppcError("cannot stop this cluster: no profile or controller pid is known")
        os.kill(int(pid), signal.SIGTERM)
        if block:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)
            raise TimeoutError("the controller (pid %s) is still running" % pid)


def _module_imports(f: Callable[..., Any]) -> List[str]:
    """``import`` lines for the modules ``f`` uses by a global name (``np``
    for ``import numpy as np``), so that its source runs on the engines."""
    out = []
    glob = getattr(f, "__globals__", {})
    for name in f.__code__.co_names:
        mod = glob.get(name)
        if not isinstance(mod, types.ModuleType):
            continue
        full = mod.__name__
        if "." in full:
            parent, _, leaf = full.rpartition(".")
            out.append("from %s import %s as %s" % (parent, leaf, name) if leaf != name
                       else "from %s import %s" % (parent, leaf))
        else:
            out.append("import %s as %s" % (full, name) if full != name else "import " + full)
    return out


def _ws_url_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return "%s://%s/ws" % (scheme, parts.netloc)


def _read_connection_file(path: str, timeout: float) -> Dict[str, Any]:
    """The connection file's contents, waiting up to ``timeout`` s for it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "r", encoding="utf-8") as f:
                info = json.load(f)
            if not isinstance(info, dict) or not info.get("url") or not info.get("token"):
                raise IppcError("%s is not an ippc connection file (no url or token)" % path)
            return info
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise IppcError(
                    "no connection file %s after %s s: is a cluster running? Start one with "
                    "`ippc cluster start -n 4` or ippc.Cluster(n=4).start_and_connect_sync()"
                    % (path, timeout)) from None
            time.sleep(0.1)
        except ValueError:
            # Being written right now, or damaged: retry until the deadline.
            if time.monotonic() >= deadline:
                raise IppcError("%s is not valid JSON" % path) from None
            time.sleep(0.1)
