"""DirectView and LoadBalancedView, after IPython Parallel's.

A :class:`DirectView` is a set of engines every call runs on (one task per
engine); a :class:`LoadBalancedView` hands each task to the engine the
controller's scheduler picks.  Both are made by a :class:`~ippc.Client`
(``c[:]``, ``c[0]``, ``c.load_balanced_view()``).

Code strings are in the engines' language: Lua by default, Python on a
cluster started with ``runtime="python"``.  ``apply`` and ``map`` take a
function *name* (a global on the engines); on Python engines they also take
a module-level Python function, whose source is sent first.
"""

from __future__ import annotations

import contextlib
import os
from typing import (Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence,
                    TYPE_CHECKING, Union)

from . import values
from .asyncresult import AsyncMapResult, AsyncResult
from .errors import APIError
from .values import Reference

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = ["DirectView", "LoadBalancedView", "Reference"]

Targets = Union[str, int, slice, Sequence[int], None]

#: Arrays at least this big go as raw bytes, not typed JSON.
RAW_MIN_BYTES = 64 * 1024


def target_spec(targets: Targets) -> str:
    """The REST ``{targets}`` of a Python target: ``all``, ``3``, ``0,2``, ``1::2``."""
    if targets is None or targets == "all":
        return "all"
    if isinstance(targets, bool):
        raise TypeError("targets cannot be a bool")
    if isinstance(targets, int):
        return str(targets)
    if isinstance(targets, slice):
        parts = ["" if x is None else str(int(x)) for x in (targets.start, targets.stop)]
        spec = ":".join(parts)
        if targets.step is not None:
            spec += ":" + str(int(targets.step))
        return spec
    if isinstance(targets, str):
        return targets
    ids = [int(t) for t in targets]
    if not ids:
        raise ValueError("an empty list of targets")
    return ",".join(str(i) for i in ids)


def _exec_post(answer: Dict[str, Any]) -> List[Any]:
    return [values.from_wire(r.get("value")) if isinstance(r, dict) else None
            for r in answer.get("results", [])]


def _none_post(answer: Dict[str, Any]) -> List[Any]:
    return [None for _ in answer.get("results", [])]


def _values_post(answer: Dict[str, Any]) -> List[Any]:
    return [values.from_wire(v) for v in answer.get("results", [])]


def _gather_post(answer: Dict[str, Any]) -> Any:
    return values.from_wire(answer.get("result"))


class _View:
    """What both views share: the client, ``block``, function sources."""

    def __init__(self, client: "Client", block: bool) -> None:
        self.client = client
        #: Whether calls wait for their result (IPython Parallel's default: False).
        self.block = block

    def _block(self, block: Optional[bool]) -> bool:
        return self.block if block is None else bool(block)

    def _function_name(self, f: Union[str, Callable[..., Any]],
                       targets: Targets = "all") -> str:
        if isinstance(f, str):
            if not f:
                raise ValueError("an empty function name")
            return f
        if not callable(f):
            raise TypeError("apply/map take a function name (a global on the engines) or, "
                            "on Python engines, a module-level Python function")
        return self.client._define_function(f, targets)

    def remote(self, block: Optional[bool] = None) -> Callable[[Callable[..., Any]], Any]:
        """Decorator: calling the function runs it on the view's engines
        (``view.apply``); ``block`` None follows the view's."""
        from .remote import RemoteFunction
        return lambda f: RemoteFunction(self, f, block)

    def parallel(self, block: Optional[bool] = None) -> Callable[[Callable[..., Any]], Any]:
        """Decorator: calling the function with sequences runs it once per
        engine on that engine's part of them (split as scatter splits;
        results joined in order); ``f.map(seq)`` runs it once per item."""
        from .remote import ParallelFunction
        return lambda f: ParallelFunction(self, f, block)

    def _part_pins(self) -> List[Optional[int]]:
        """One entry per part of a parallel call: the engine its task is
        pinned to, or None (the scheduler's choice)."""
        raise NotImplementedError  # pragma: no cover (each view has its own)

    def _part_spec(self, name: str, args: List[Any], pin: Optional[int]) -> Dict[str, Any]:
        raise NotImplementedError  # pragma: no cover (each view has its own)

    def _apply_parts(self, f: Union[str, Callable[..., Any]], sequences: Sequence[Any],
                     block: bool) -> Any:
        """``f(part_of_seq1, part_of_seq2, ...)`` once per part (one part per
        engine of the view, split as scatter splits); the result joins the
        parts' results in order."""
        from .remote import join_parts
        pins = self._part_pins()
        nparts = len(pins)
        if nparts < 1:
            raise ValueError("the view has no engines to run a parallel function on")
        name = self._function_name(f, getattr(self, "targets", "all"))
        cut = [values.split_like_scatter(s if hasattr(s, "__array__") else list(s), nparts)
               for s in sequences]
        specs = [self._part_spec(name, [c[i] for c in cut], pin) for i, pin in enumerate(pins)]
        ar = self.client._submit_tasks(specs, "parallel %s" % name, single=False)
        ar._join = join_parts
        return ar.get() if block else ar


class DirectView(_View):
    """Engines addressed together: every call runs on each target.

    ``targets`` is ``"all"``, an engine id, a slice over the live ids or a
    list of ids.  A view of one engine id (``c[0]``) answers single values
    instead of lists, as IPython Parallel's.
    """

    def __init__(self, client: "Client", targets: Targets = "all", block: bool = False) -> None:
        super().__init__(client, block)
        self._targets: Targets = targets
        self._spec = target_spec(targets)

    @property
    def targets(self) -> Targets:
        """The engines of this view (settable, as IPython Parallel's)."""
        return self._targets

    @targets.setter
    def targets(self, targets: Targets) -> None:
        self._spec = target_spec(targets)
        self._targets = targets

    def __repr__(self) -> str:
        return "<DirectView %s>" % self._spec

    @property
    def _single(self) -> bool:
        return isinstance(self.targets, int) and not isinstance(self.targets, bool)

    def _path(self, op: str, targets: Targets = None) -> str:
        spec = self._spec if targets is None else target_spec(targets)
        return "/api/v1/views/%s/%s" % (spec, op)

    def _single_for(self, targets: Targets) -> bool:
        if targets is None:
            return self._single
        return isinstance(targets, int) and not isinstance(targets, bool)

    def _call(self, method: str, op: str, label: str, body: Any = None, *,
              raw: Optional[Any] = None, query: Optional[Dict[str, Any]] = None,
              block: Optional[bool] = None, targets: Targets = None,
              post: Optional[Callable[[Dict[str, Any]], Any]] = None,
              event_values: bool = True) -> AsyncResult:
        """One direct-view call; an AsyncResult, finished when ``block``."""
        blocking = self._block(block)
        fmt = values.wire_format()
        q: Dict[str, Any] = {"format": fmt}
        q.update(query or {})
        if not blocking:
            q["block"] = False
        self.client._ensure_events()
        ans = self.client._rest.request(method, self._path(op, targets), body=body, raw=raw,
                                        query=q)
        data = ans.json
        finished = ans.status == 200
        ar = AsyncResult(self.client, "direct", label, request=data.get("request"),
                         targets=data.get("targets", []), answer=data if finished else None,
                         single=self._single_for(targets), post=post, fmt=fmt,
                         event_values=event_values)
        self.client._history_add(ar)
        return ar

    # ------------------------------------------------------------- code

    def execute(self, code: str, block: Optional[bool] = None, targets: Targets = None,
                silent: bool = True) -> AsyncResult:
        """Runs ``code`` (a chunk in the engines' language) on every target.

        Returns the AsyncResult; with ``block`` it has finished, and a remote
        error was raised (:class:`RemoteError` for one target,
        :class:`CompositeError` for several).  Its result is each chunk's
        returned value (None when it returned nothing).
        """
        if not isinstance(code, str):
            raise TypeError("execute takes a code string")
        ar = self._call("POST", "execute", "execute", {"code": code}, block=block,
                        targets=targets, post=_exec_post)
        if self._block(block):
            ar.get()
        return ar

    def run(self, filename: str, block: Optional[bool] = None,
            targets: Targets = None) -> AsyncResult:
        """Runs the file ``filename`` (read here, sent as text) on every target;
        tracebacks name the file."""
        with open(filename, "r", encoding="utf-8") as f:
            source = f.read()
        ar = self._call("POST", "run", "run", {"filename": os.path.basename(filename),
                                               "source": source},
                        block=block, targets=targets, post=_exec_post)
        if self._block(block):
            ar.get()
        return ar

    # ------------------------------------------------------------- data

    def push(self, ns: Mapping[str, Any], targets: Targets = None,
             block: Optional[bool] = None) -> Any:
        """Sets the variables of ``ns`` on every target.  Large NumPy arrays
        travel as raw bytes.  Returns None when blocking, else the AsyncResult."""
        if not isinstance(ns, Mapping):
            raise TypeError("push takes a dict of names to values")
        for k in ns:
            if not isinstance(k, str):
                raise TypeError("push: variable names are strings, not %r" % (k,))
        big = {k: v for k, v in ns.items()
               if values.is_array(v) and v.nbytes >= RAW_MIN_BYTES}
        small = {k: values.to_wire(v) for k, v in ns.items() if k not in big}
        calls: List[Callable[[Optional[bool]], AsyncResult]] = []
        for name, arr in big.items():
            data, dtype, shape = values.raw_array(arr)
            calls.append(lambda b, name=name, data=data, dtype=dtype, shape=shape: self._call(
                "PUT", "vars/" + name, "push", raw=data, query={"dtype": dtype, "shape": shape},
                block=b, targets=targets, post=_none_post, event_values=False))
        if small or not calls:
            calls.append(lambda b: self._call("POST", "push", "push", {"namespace": small},
                                              block=b, targets=targets, post=_none_post,
                                              event_values=False))
        ar: Optional[AsyncResult] = None
        for i, call in enumerate(calls):
            # Tasks on one engine run in order: only the last call may be left
            # running, the earlier ones are waited for (so none fails unseen).
            last = i == len(calls) - 1
            ar = call(block if last else True)
            if not last or self._block(block):
                ar.get()
        assert ar is not None
        return None if self._block(block) else ar

    update = push

    def pull(self, names: Union[str, Sequence[str]], targets: Targets = None,
             block: Optional[bool] = None) -> Any:
        """The values of ``names`` on every target: for one name, a list with
        one value per target (the value itself on a single-engine view); for
        a list of names, per target the list of values.  Arrays come back as
        NumPy arrays when NumPy is installed (by raw bytes on one engine)."""
        blocking = self._block(block)
        if isinstance(names, str):
            if blocking and values.HAVE_NUMPY:
                if self._single_for(targets):
                    raw = self._pull_raw(names, targets)
                    if raw is not None:
                        return raw
                else:
                    parts = self._pull_raw_parts(names, targets)
                    if parts is not None:
                        return parts
            ar = self._call("GET", "vars/" + names, "pull", block=block, targets=targets,
                            post=_values_post)
        else:
            names = list(names)
            ar = self._call("POST", "pull", "pull", {"names": names}, block=block,
                            targets=targets, post=_values_post)
        return ar.get() if blocking else ar

    def _pull_raw_parts(self, name: str, targets: Targets) -> Optional[List[Any]]:
        """Big arrays on several engines: one ``multipart/mixed`` answer with
        one raw part per engine (docs/binary.md), when the listing says every
        target holds a big array under ``name`` (typed JSON costs base64 and a
        JSON parse); else None."""
        listing = self.client._rest.get(self._path("vars", targets))
        ids = listing.get("targets", [])
        infos = [r.get(name) if isinstance(r, dict) else None
                 for r in listing.get("results", [])]
        if not ids or len(infos) != len(ids) or not all(
                isinstance(i, dict) and i.get("dtype") and i.get("bytes", 0) >= RAW_MIN_BYTES
                for i in infos):
            return None
        try:
            ans = self.client._rest.request(
                "GET", self._path("vars/" + name, ids), headers={"Accept": "multipart/mixed"})
        except APIError as e:
            if e.status == 422:
                return None  # failed on an engine: the JSON pull says which
            raise
        parts = values.multipart_arrays(ans.headers.get("content-type", ""), ans.body)
        if parts is None or len(parts) != len(ids):
            return None  # changed meanwhile (a part that is no array): JSON answers
        return parts

    def _pull_raw(self, name: str, targets: Targets) -> Any:
        """One engine's array by raw bytes, or None when the value is no array."""
        try:
            ans = self.client._rest.request(
                "GET", self._path("vars/" + name, targets),
                headers={"Accept": "application/octet-stream"})
        except APIError as e:
            if e.status == 422:
                return None  # not an array, or failed: the JSON pull says which
            raise
        if not ans.headers.get("content-type", "").startswith("application/octet-stream"):
            return None
        return values.array_from_raw(ans.body, ans.headers.get("x-ippc-dtype", ""),
                                     ans.headers.get("x-ippc-shape", ""))

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str):
            raise TypeError("view[name] takes a variable name")
        return self.pull(key, block=True)

    def __setitem__(self, key: str, value: Any) -> None:
        self.push({key: value}, block=True)

    def get(self, key: str) -> Any:
        """``view[key]``."""
        return self[key]

    def scatter(self, key: str, seq: Any, targets: Targets = None,
                block: Optional[bool] = None) -> Any:
        """Splits ``seq`` over the targets (the first ``len % n`` get one
        more) and sets ``key`` to each part.  A NumPy array goes as raw bytes
        (split along its first axis)."""
        if values.is_array(seq):
            data, dtype, shape = values.raw_array(seq)
            ar = self._call("POST", "scatter", "scatter", raw=data,
                            query={"name": key, "dtype": dtype, "shape": shape}, block=block,
                            targets=targets, post=_none_post, event_values=False)
        else:
            ar = self._call("POST", "scatter", "scatter",
                            {"name": key, "data": values.to_wire(list(seq))}, block=block,
                            targets=targets, post=_none_post, event_values=False)
        if self._block(block):
            ar.get()
            return None
        return ar

    def gather(self, key: str, targets: Targets = None, block: Optional[bool] = None) -> Any:
        """``key`` from every target, concatenated in target order (a NumPy
        array by raw bytes when the parts are arrays and NumPy is installed)."""
        if self._block(block) and values.HAVE_NUMPY:
            try:
                ans = self.client._rest.request(
                    "GET", self._path("gather/" + key, targets),
                    headers={"Accept": "application/octet-stream"})
                if ans.headers.get("content-type", "").startswith("application/octet-stream"):
                    return values.array_from_raw(ans.body, ans.headers.get("x-ippc-dtype", ""),
                                                 ans.headers.get("x-ippc-shape", ""))
            except APIError as e:
                if e.status != 422:
                    raise
        ar = self._call("GET", "gather/" + key, "gather", block=block, targets=targets,
                        post=_gather_post, event_values=False)
        ar._single = False
        return ar.get() if self._block(block) else ar

    # ------------------------------------------------------------ functions

    def apply(self, f: Union[str, Callable[..., Any]], *args: Any, **kwargs: Any) -> Any:
        """Calls ``f(*args, **kwargs)`` on every target (``f``: a function
        name, or a Python function on Python engines); arguments may be
        :class:`Reference`.  The result when ``block``, else an AsyncResult."""
        return self._apply(f, args, kwargs, self.block)

    def apply_sync(self, f: Union[str, Callable[..., Any]], *args: Any, **kwargs: Any) -> Any:
        """``apply`` that waits: the results (one per target)."""
        return self._apply(f, args, kwargs, True)

    def apply_async(self, f: Union[str, Callable[..., Any]], *args: Any,
                    **kwargs: Any) -> AsyncResult:
        """``apply`` that does not wait: an AsyncResult."""
        return self._apply(f, args, kwargs, False)

    def _apply(self, f: Union[str, Callable[..., Any]], args: Sequence[Any],
               kwargs: Mapping[str, Any], block: bool) -> Any:
        name = self._function_name(f, self.targets)
        body: Dict[str, Any] = {"function": name, "args": values.to_wire(list(args))}
        if kwargs:
            body["kwargs"] = values.to_wire(dict(kwargs))
        ar = self._call("POST", "apply", "apply %s" % name, body, block=block, post=_exec_post)
        return ar.get() if block else ar

    def map(self, f: Union[str, Callable[..., Any]], *sequences: Sequence[Any],
            block: Optional[bool] = None) -> Any:
        """``f`` over the items of ``sequences``, the items split over the
        targets as scatter splits them (each item a task pinned to its
        engine); results in item order."""
        if not sequences:
            raise ValueError("map needs at least one sequence")
        items = list(zip(*[list(s) for s in sequences]))
        if not items:
            return [] if self._block(block) else self.client._finished([])
        ids = self.client._resolve_targets(self._spec)
        name = self._function_name(f, self.targets)
        parts = values.split_like_scatter(items, len(ids))
        specs = []
        for eid, part in zip(ids, parts):
            for item in part:
                specs.append({"function": name, "args": values.to_wire(list(item)),
                              "targets": [eid]})
        ar = self.client._submit_tasks(specs, "map %s" % name, single=False)
        return ar.get() if self._block(block) else ar

    def map_sync(self, f: Union[str, Callable[..., Any]], *sequences: Sequence[Any]) -> Any:
        """``map`` that waits."""
        return self.map(f, *sequences, block=True)

    def map_async(self, f: Union[str, Callable[..., Any]],
                  *sequences: Sequence[Any]) -> AsyncResult:
        """``map`` that does not wait."""
        return self.map(f, *sequences, block=False)

    # -------------------------------------------------------------- control

    def load(self, library: str, block: Optional[bool] = None) -> AsyncResult:
        """Loads a native plugin (a shared library path on the engines' hosts)."""
        ar = self._call("POST", "load", "load", {"library": library}, block=block,
                        post=_exec_post)
        if self._block(block):
            ar.get()
        return ar

    def reset(self, block: Optional[bool] = None) -> AsyncResult:
        """Clears the namespace of every target."""
        ar = self._call("POST", "reset", "reset", {}, block=block, post=_none_post)
        if self._block(block):
            ar.get()
        return ar

    def interrupt(self) -> List[int]:
        """Stops the task running on each target (it ends aborted; the
        engines keep their namespaces).  Returns the targets."""
        body = self.client._rest.post(self._path("interrupt"))
        return list(body.get("targets", []))

    def abort(self) -> None:
        """Interrupts the running task of each target (as ``interrupt``)."""
        self.interrupt()

    def wait(self, jobs: Optional[Sequence[AsyncResult]] = None,
             timeout: Optional[float] = None) -> bool:
        """Waits for ``jobs`` (default: every call made through the client)."""
        return self.client.wait(jobs, timeout)

    def queue_status(self, verbose: bool = False) -> Dict[Any, Any]:
        """The client's queue status, for these targets."""
        ids = self.client._resolve_targets(self._spec)
        status = self.client.queue_status(verbose=verbose)
        return {k: v for k, v in status.items() if k in ids or k == "unassigned"}

    def activate(self, suffix: str = "") -> None:
        """Makes this view the one ``%px``, ``%%px``, ``%autopx`` and
        ``%pxresult`` use (``suffix`` registers ``%pxSUFFIX``... instead)."""
        from .magics import activate
        activate(self, suffix)

    def sync_imports(self, local: bool = True, quiet: bool = False) -> Any:
        """Context manager: each top-level ``import`` in the block runs on
        the targets too (Python engines; see :func:`ippc.remote.sync_imports`)."""
        from .remote import sync_imports
        return sync_imports(self, local=local, quiet=quiet)

    def _part_pins(self) -> List[Optional[int]]:
        return list(self.client._resolve_targets(self._spec))

    def _part_spec(self, name: str, args: List[Any], pin: Optional[int]) -> Dict[str, Any]:
        return {"function": name, "args": values.to_wire(args), "targets": [pin]}

    def __len__(self) -> int:
        return len(self.client._resolve_targets(self._spec))


class LoadBalancedView(_View):
    """Tasks the controller's scheduler assigns, one engine each.

    Flags (``after``, ``follow``, ``retries``, ``timeout``, ``targets``,
    ``tags``) apply to ``apply``; set them with :meth:`set_flags` or for a
    block with :meth:`temp_flags`.
    """

    _FLAGS = ("after", "follow", "retries", "timeout", "targets", "tags", "success_only")

    def __init__(self, client: "Client", targets: Targets = None, block: bool = False) -> None:
        super().__init__(client, block)
        self.targets: Targets = targets
        self.after: Any = None
        self.follow: Any = None
        self.retries: int = 0
        self.timeout: Optional[float] = None
        self.tags: List[str] = []
        self.success_only: bool = True

    def __repr__(self) -> str:
        return "<LoadBalancedView %s>" % target_spec(self.targets)

    def set_flags(self, **flags: Any) -> None:
        """Sets flags for the next calls: ``after``, ``follow`` (task ids or
        AsyncResults), ``retries``, ``timeout`` (seconds), ``targets``,
        ``tags``, ``success_only``, ``block``."""
        for k, v in flags.items():
            if k not in self._FLAGS and k != "block":
                raise KeyError("unknown flag %r (flags: %s)" % (k, ", ".join(self._FLAGS)))
            setattr(self, k, v)

    @contextlib.contextmanager
    def temp_flags(self, **flags: Any) -> Iterator["LoadBalancedView"]:
        """``with view.temp_flags(after=ar, retries=2): ...`` — flags for the block only."""
        saved = {k: getattr(self, k) for k in flags}
        self.set_flags(**flags)
        try:
            yield self
        finally:
            for k, v in saved.items():
                setattr(self, k, v)

    def _dep_ids(self, dep: Any) -> Optional[List[int]]:
        if dep is None:
            return None
        if isinstance(dep, AsyncResult):
            return dep.task_ids
        if isinstance(dep, int):
            return [dep]
        out: List[int] = []
        for d in dep:
            out.extend(self._dep_ids(d) or [])
        return out

    def _spec(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Dict[str, Any]:
        spec: Dict[str, Any] = {"function": name, "args": values.to_wire(list(args))}
        if kwargs:
            spec["kwargs"] = values.to_wire(dict(kwargs))
        after, follow = self._dep_ids(self.after), self._dep_ids(self.follow)
        if after:
            spec["after"] = after
        if follow:
            spec["follow"] = follow
        if self.retries:
            spec["retries"] = int(self.retries)
        if self.timeout is not None:
            spec["timeout"] = float(self.timeout)
        if self.targets is not None:
            spec["targets"] = (list(self.targets) if isinstance(self.targets, (list, tuple))
                               else target_spec(self.targets))
        if self.tags:
            spec["tags"] = list(self.tags)
        if not self.success_only:
            spec["success_only"] = False
        return spec

    def _part_pins(self) -> List[Optional[int]]:
        ids = (self.client.ids if self.targets is None
               else self.client._resolve_targets(target_spec(self.targets)))
        return [None] * len(ids)

    def _part_spec(self, name: str, args: List[Any], pin: Optional[int]) -> Dict[str, Any]:
        return self._spec(name, args, {})

    def apply(self, f: Union[str, Callable[..., Any]], *args: Any, **kwargs: Any) -> Any:
        """Calls ``f(*args, **kwargs)`` on one engine the scheduler picks."""
        return self._apply(f, args, kwargs, self.block)

    def apply_sync(self, f: Union[str, Callable[..., Any]], *args: Any, **kwargs: Any) -> Any:
        """``apply`` that waits: the result."""
        return self._apply(f, args, kwargs, True)

    def apply_async(self, f: Union[str, Callable[..., Any]], *args: Any,
                    **kwargs: Any) -> AsyncResult:
        """``apply`` that does not wait: an AsyncResult."""
        return self._apply(f, args, kwargs, False)

    def _apply(self, f: Union[str, Callable[..., Any]], args: Sequence[Any],
               kwargs: Mapping[str, Any], block: bool) -> Any:
        name = self._function_name(f)
        ar = self.client._submit_tasks([self._spec(name, args, kwargs)], "apply %s" % name,
                                       single=True)
        return ar.get() if block else ar

    def map(self, f: Union[str, Callable[..., Any]], *sequences: Sequence[Any],
            chunksize: int = 1, ordered: bool = True, block: Optional[bool] = None,
            progress: Optional[bool] = None) -> Any:
        """``f`` over the items of ``sequences`` (zipped), ``chunksize`` items
        per task.  Returns the list of results when ``block`` (with a
        progress bar when ``progress``, by default when in a terminal or a
        notebook), else an :class:`AsyncMapResult` whose iteration yields
        results as chunks complete (in input order when ``ordered``)."""
        if not sequences:
            raise ValueError("map needs at least one sequence")
        if int(chunksize) < 1:
            raise ValueError("chunksize must be >= 1")
        seqs = [values.to_wire(list(s)) for s in sequences]
        nitems = min(len(s) for s in seqs)
        if nitems == 0:
            return [] if self._block(block) else self.client._finished([])
        name = self._function_name(f)
        fmt = values.wire_format()
        self.client._ensure_events()
        ans = self.client._rest.request(
            "POST", "/api/v1/map",
            body={"function": name, "sequences": seqs, "chunksize": int(chunksize),
                  "ordered": bool(ordered)},
            query={"block": False, "format": fmt})
        data = ans.json
        ar = AsyncMapResult(self.client, "map %s" % name, request=data["request"],
                            tasks=list(data.get("tasks", [])), chunksize=int(chunksize),
                            nitems=nitems, ordered=bool(ordered), fmt=fmt,
                            answer=data if ans.status == 200 else None)
        self.client._history_add(ar)
        if not self._block(block):
            return ar
        if progress is None:
            from .progress import interactive
            progress = interactive()
        if progress:
            ar.wait_interactive()
        return ar.get()

    def map_sync(self, f: Union[str, Callable[..., Any]], *sequences: Sequence[Any],
                 **kw: Any) -> Any:
        """``map`` that waits."""
        return self.map(f, *sequences, block=True, **kw)

    def map_async(self, f: Union[str, Callable[..., Any]], *sequences: Sequence[Any],
                  **kw: Any) -> AsyncMapResult:
        """``map`` that does not wait."""
        return self.map(f, *sequences, block=False, **kw)  # type: ignore[no-any-return]

    def imap(self, f: Union[str, Callable[..., Any]], *sequences: Sequence[Any],
             **kw: Any) -> Iterator[Any]:
        """Results of ``map`` as they come (completion order unless ``ordered``)."""
        return iter(self.map_async(f, *sequences, **kw))

    def wait(self, jobs: Optional[Sequence[AsyncResult]] = None,
             timeout: Optional[float] = None) -> bool:
        """Waits for ``jobs`` (default: every call made through the client)."""
        return self.client.wait(jobs, timeout)
