"""IPython magics: ``%px``, ``%%px``, ``%autopx``, ``%pxresult``.

``%load_ext ippc`` registers them on the default profile's cluster (a Client
is made on first use); ``view.activate()`` makes them use that view.  Output
is printed per engine after ``[stdout:N]`` headers, returned values as
``Out[N:k]``, errors as the engines' tracebacks — as IPython Parallel does.

    %px print(mpi.rank())
    %%px --targets 0:2 --noblock
    x = 1
    %pxresult
    %autopx            # every cell now runs on the engines; %autopx again to stop
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any, Dict, List, Optional, Tuple

from .asyncresult import AsyncResult, print_stream
from .view import DirectView, _exec_post

__all__ = ["load_ipython_extension", "activate", "ParallelMagics"]

# suffix -> (view, last AsyncResult, autopx on)
_state: Dict[str, Dict[str, Any]] = {}


def _parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=name, add_help=False, exit_on_error=False)
    p.add_argument("--targets", "-t", default=None)
    p.add_argument("--block", dest="block", action="store_true", default=None)
    p.add_argument("--noblock", dest="block", action="store_false")
    p.add_argument("--stream", dest="stream", action="store_true", default=None)
    p.add_argument("--no-stream", dest="stream", action="store_false")
    return p


def _parse(name: str, line: str, cell: bool) -> Tuple[argparse.Namespace, str]:
    """Options and code of a magic line (``%px`` takes the rest as code)."""
    words = shlex.split(line, posix=True) if cell else []
    if not cell:
        # %px --targets 0 print(1): options first, the rest verbatim.
        rest = line.lstrip()
        opts: List[str] = []
        while rest.startswith("-"):
            head, _, tail = rest.partition(" ")
            opts.append(head)
            if head in ("--targets", "-t"):
                value, _, tail = tail.lstrip().partition(" ")
                opts.append(value)
            rest = tail.lstrip()
        words = opts
        code = rest
    else:
        code = ""
    try:
        args = _parser(name).parse_args(words)
    except (argparse.ArgumentError, SystemExit) as e:
        raise ValueError("%%%s: %s" % (name, e)) from None
    return args, code


def _targets(spec: Optional[str]) -> Any:
    if spec is None:
        return None
    if spec == "all":
        return "all"
    try:
        return int(spec)
    except ValueError:
        return spec


class ParallelMagics:
    """The magics of one suffix, bound to an IPython shell."""

    def __init__(self, shell: Any, suffix: str = "") -> None:
        self.shell = shell
        self.suffix = suffix
        st = _state.setdefault(suffix, {"view": None, "last": None, "autopx": False})
        self.st = st

    # ------------------------------------------------------------ the view

    @property
    def view(self) -> DirectView:
        """The active view (``Client()[:]`` of the default profile when none was activated)."""
        if self.st["view"] is None:
            from .client import Client
            self.st["view"] = Client()[:]
        return self.st["view"]

    # -------------------------------------------------------------- running

    def _run(self, line: str, cell: Optional[str], name: str) -> Optional[AsyncResult]:
        args, code = _parse(name, line, cell is not None)
        if cell is not None:
            code = cell
        view = self.view
        block = view.block if args.block is None else args.block
        if args.block is None and not args.stream:
            block = True  # %px waits by default, as IPython Parallel's
        targets = _targets(args.targets)
        listener = None
        events = None
        if args.stream:
            events = view.client._ensure_events()
            listener = _streamer(view, targets)
            if events is not None:
                events.add_listener(listener)
        try:
            ar = view._call("POST", "execute", "execute", {"code": code},
                            block=block if not args.stream else False,
                            targets=targets,
                            post=_exec_post)
            self.st["last"] = ar
            if not block and not args.stream:
                return ar
            ar.wait()
            if listener is not None and events is not None:
                _catch_up(ar, events)
        finally:
            if listener is not None and events is not None:
                events.remove_listener(listener)
        self._show(ar, stdout=not args.stream)
        return None

    def _show(self, ar: AsyncResult, stdout: bool = True) -> None:
        """Prints the outputs of a finished execute; raises its errors."""
        ar._resolve()
        answer = ar._fetch_answer()
        count = getattr(self.shell, "execution_count", 0)
        for r in answer.get("results", []):
            if not isinstance(r, dict):
                continue
            if stdout:
                print_stream(r.get("stdout", ""), "[stdout:%s] " % r.get("engine"), sys.stdout)
        for r in answer.get("results", []):
            if isinstance(r, dict) and r.get("status") == "ok" and r.get("value") is not None:
                from .values import from_wire
                print("Out[%s:%s]: %r" % (r.get("engine"), count, from_wire(r["value"])))
        if ar._errors:
            ar._raise()

    def px(self, line: str) -> Optional[AsyncResult]:
        """``%px [--targets T] [--noblock] [--stream] CODE``: runs CODE on the engines."""
        return self._run(line, None, "px" + self.suffix)

    def cell_px(self, line: str, cell: str) -> Optional[AsyncResult]:
        """``%%px [--targets T] [--noblock] [--stream]``: runs the cell on the engines."""
        return self._run(line, cell, "px" + self.suffix)

    def pxresult(self, line: str = "") -> None:
        """``%pxresult``: waits for and prints the last ``%px`` result."""
        ar = self.st["last"]
        if ar is None:
            print("no %%px%s result yet" % self.suffix)
            return
        ar.wait()
        self._show(ar)

    def autopx(self, line: str = "") -> None:
        """``%autopx``: every following cell runs on the engines, until ``%autopx`` again."""
        if self.st["autopx"]:
            self._autopx_off()
        else:
            self._autopx_on()

    def _autopx_on(self) -> None:
        transforms = self.shell.input_transformers_post
        if self._transform not in transforms:
            transforms.append(self._transform)
        self.st["autopx"] = True
        print("%%autopx enabled: cells run on the engines (%%autopx%s again to stop)"
              % self.suffix)

    def _autopx_off(self) -> None:
        transforms = self.shell.input_transformers_post
        while self._transform in transforms:
            transforms.remove(self._transform)
        self.st["autopx"] = False
        print("%autopx disabled")

    def _transform(self, lines: List[str]) -> List[str]:
        """The input transformer of ``%autopx``: a cell becomes a ``%%px``."""
        text = "".join(lines)
        stripped = text.strip()
        name = "autopx" + self.suffix
        if not stripped or stripped.startswith("%" + name) or \
                "run_line_magic('%s'" % name in stripped:
            return lines
        return ["get_ipython().run_cell_magic(%r, '', %r)\n" % ("px" + self.suffix, text)]


def _catch_up(ar: AsyncResult, events: Any, timeout: float = 10.0) -> None:
    """Waits until the stream has passed the call's ``task.completed``
    events: every ``task.stdout`` chunk before them has then reached the
    listener.  A quick call's answer can come with its POST, ahead of the
    stream (its output would otherwise be lost from ``--stream``)."""
    n = len(ar)
    events.wait_for(lambda: ar._finished_count() >= n, timeout)


def _streamer(view: DirectView, targets: Any) -> Any:
    """A stream listener printing ``task.stdout`` chunks as they come."""
    def on_event(event: Dict[str, Any]) -> None:
        if event.get("type") == "task.stdout":
            print_stream(str(event.get("data", "")), "[stdout:%s] " % event.get("engine"),
                         sys.stdout)
    return on_event


def _register(shell: Any, suffix: str) -> ParallelMagics:
    m = ParallelMagics(shell, suffix)
    register = shell.register_magic_function
    register(m.px, "line", "px" + suffix)
    register(m.cell_px, "cell", "px" + suffix)
    register(m.pxresult, "line", "pxresult" + suffix)
    register(m.autopx, "line", "autopx" + suffix)
    return m


def activate(view: DirectView, suffix: str = "") -> None:
    """Makes ``view`` the one the ``%px`` magics (with ``suffix``) use."""
    try:
        from IPython import get_ipython
    except ImportError:
        raise RuntimeError("view.activate() needs IPython") from None
    shell = get_ipython()
    if shell is None:
        raise RuntimeError("view.activate() works inside IPython or Jupyter")
    _state.setdefault(suffix, {"view": None, "last": None, "autopx": False})["view"] = view
    _register(shell, suffix)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext ippc``: registers ``%px``, ``%%px``, ``%autopx``, ``%pxresult``."""
    _register(ipython, "")

