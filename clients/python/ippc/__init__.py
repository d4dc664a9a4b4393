"""ippc — the Python client of the ippc controller, with IPython Parallel's shapes.

    import ippc
    c = ippc.Client()                 # the default profile's connection file
    view = c[:]
    view.run("psum.lua")
    view.scatter("a", range(16))
    view.execute("totalsum = psum(a)")
    view["totalsum"]                  # [120, 120, 120, 120]

``%load_ext ippc`` in IPython registers ``%px``, ``%%px``, ``%autopx`` and
``%pxresult``.  ``python -m ippc status|watch`` is a small command line.
"""

from __future__ import annotations

from typing import Any

from .asyncresult import AsyncMapResult, AsyncResult
from .client import Client
from .cluster import Cluster
from .errors import (APIError, AuthenticationError, CompositeError, ConnectionError,
                     EngineError, IppcError, NoEnginesError, RemoteError, TaskAborted,
                     TimeoutError)
from .remote import ParallelFunction, RemoteFunction
from .values import Reference
from .view import DirectView, LoadBalancedView

__version__ = "0.1.0"

__all__ = [
    "Client", "Cluster", "DirectView", "LoadBalancedView", "AsyncResult", "AsyncMapResult",
    "Reference", "RemoteFunction", "ParallelFunction", "RemoteError", "CompositeError",
    "EngineError", "TaskAborted", "TimeoutError",
    "APIError", "AuthenticationError", "ConnectionError", "NoEnginesError", "IppcError",
    "load_ipython_extension", "__version__",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext ippc``: registers the ``%px`` family of magics."""
    from .magics import load_ipython_extension as load
    load(ipython)
