"""Functions that run on engines when called, after IPython Parallel's
``@view.remote()`` and ``@view.parallel()``, and ``view.sync_imports()``.

* :class:`RemoteFunction` — ``f(*args, **kw)`` is ``view.apply(f, *args, **kw)``.
* :class:`ParallelFunction` — ``f(seq, ...)`` splits the sequences over the
  view's engines as scatter does and calls ``f`` once per engine on its part
  (a load-balanced view makes one task per part); the parts' results are
  joined in order (lists concatenated, NumPy arrays with ``concatenate``).
  ``f.map(seq, ...)`` calls it once per item (``view.map``).

Both need Python engines when given a Python function (its source is sent, as
``apply`` does); on Lua engines decorate nothing and pass names to ``apply``.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import threading
import types
from typing import Any, Callable, Iterator, List, Optional, TYPE_CHECKING

from . import values

if TYPE_CHECKING:  # pragma: no cover
    from .view import _View

__all__ = ["RemoteFunction", "ParallelFunction", "sync_imports"]


class RemoteFunction:
    """A function that runs on a view's engines when called."""

    def __init__(self, view: "_View", f: Callable[..., Any], block: Optional[bool] = None) -> None:
        if not callable(f):
            raise TypeError("remote() decorates a function, not %r" % (f,))
        self.view = view
        #: The function as written (what is sent to the engines).
        self.func = f
        #: None: the view's ``block`` at call time.
        self.block = block
        functools.update_wrapper(self, f)

    def _blocking(self) -> bool:
        return bool(self.view.block if self.block is None else self.block)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.view._apply(self.func, args, kwargs, self._blocking())

    def __repr__(self) -> str:
        return "<%s %s on %r>" % (type(self).__name__, getattr(self.func, "__name__", "?"),
                                  self.view)


class ParallelFunction(RemoteFunction):
    """A function called once per engine on that engine's part of its
    sequence arguments; ``.map`` calls it once per item."""

    def __call__(self, *sequences: Any) -> Any:
        if not sequences:
            raise ValueError("a parallel function takes at least one sequence")
        lengths = {len(s) for s in sequences}
        if len(lengths) != 1:
            raise ValueError("the sequences of a parallel call differ in length: %s"
                             % sorted(lengths))
        ar = self.view._apply_parts(self.func, sequences, block=False)
        return ar.get() if self._blocking() else ar

    def map(self, *sequences: Any) -> Any:
        """``f`` once per item of the zipped sequences (``view.map``)."""
        return self.view.map(self.func, *sequences, block=self._blocking())


def join_parts(parts: List[Any]) -> Any:
    """The results of the parts as one: concatenated when every part is a
    list, tuple or NumPy array; otherwise the list of part results."""
    if parts and all(isinstance(p, (list, tuple)) for p in parts):
        return [x for p in parts for x in p]
    if parts and all(hasattr(p, "__array__") and getattr(p, "ndim", 0) >= 1 for p in parts):
        return values.concat(parts)
    return parts


@contextlib.contextmanager
def sync_imports(view: Any, local: bool = True, quiet: bool = False) -> Iterator[None]:
    """Inside the block, each top-level ``import`` statement also runs on the
    view's engines (Python engines only): ``import numpy``, ``import numpy
    as np`` (bound as ``numpy`` there, as IPython Parallel does),
    ``from os import path``.  With ``local=False`` nothing is imported here."""
    if view.client.runtime != "python":
        raise TypeError("sync_imports needs Python engines (the engines run %s); use "
                        "view.execute(...) in their language" % view.client.runtime)
    real_import = builtins.__import__
    depth = [0]
    me = threading.get_ident()  # other threads' imports meanwhile are theirs

    def remote_import(name: str, globals: Any = None, locals: Any = None,
                      fromlist: Any = (), level: int = 0) -> Any:
        if depth[0] or level or threading.get_ident() != me:
            return real_import(name, globals, locals, fromlist, level)
        depth[0] += 1
        try:
            module = real_import(name, globals, locals, fromlist, level) if local else None
            if fromlist:
                names = [n for n in fromlist if n != "*"]
                stmt = "from %s import %s" % (name, ", ".join(names) if names else "*")
            else:
                stmt = "import %s" % name
            if not quiet:
                print("importing %s on engine(s)"
                      % ("%s from %s" % (", ".join(fromlist), name) if fromlist else name))
            view.execute(stmt, block=True)
        finally:
            depth[0] -= 1
        if module is None:  # local=False: an empty stand-in, so the statement binds
            module = types.ModuleType(name)
            for n in fromlist or ():
                setattr(module, n, None)
        return module

    builtins.__import__ = remote_import
    try:
        yield
    finally:
        builtins.__import__ = real_import
