"""A progress bar for waits: a text bar on a terminal (redrawn with ``\\r``),
an updating display in a Jupyter notebook, nothing elsewhere."""

from __future__ import annotations

import sys
from typing import Any, Optional

__all__ = ["Progress", "interactive", "in_notebook"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (an IPython ZMQ shell)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def interactive() -> bool:
    """Whether a progress bar would be seen: a terminal on stderr or a notebook."""
    try:
        return in_notebook() or sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """``Progress(total, label)``; ``update(done)``; ``close()``."""

    def __init__(self, total: int, label: str = "", widget: Optional[bool] = None,
                 file: Any = None, width: int = 40) -> None:
        self.total = max(0, int(total))
        self.label = label
        self.file = file or sys.stderr
        self.width = width
        self.notebook = in_notebook() if widget is None else bool(widget)
        self._handle: Any = None
        self._last = -1

    def _text(self, done: int) -> str:
        frac = done / self.total if self.total else 1.0
        fill = int(self.width * frac)
        return "%s [%s%s] %d/%d tasks" % (self.label, "#" * fill, "." * (self.width - fill),
                                          done, self.total)

    def update(self, done: int) -> None:
        """Shows ``done`` of ``total``."""
        if done == self._last:
            return
        self._last = done
        text = self._text(done)
        if self.notebook:
            from IPython.display import display
            if self._handle is None:
                self._handle = display({"text/plain": text}, raw=True, display_id=True)
            else:
                self._handle.update({"text/plain": text}, raw=True)
        else:
            self.file.write("\r" + text)
            self.file.flush()

    def close(self) -> None:
        """Ends the bar (a newline on a terminal)."""
        if not self.notebook and self._last >= 0:
            self.file.write("\n")
            self.file.flush()
