"""Cluster: start and stop a cluster from Python, as ``ipp.Cluster`` does.

It runs ``ippc cluster start -n N --engines=... --daemonize`` (which returns
once every engine registered) and ``ippc cluster stop`` — the launcher stops
the controller and every engine process it started.

    with ippc.Cluster(n=4) as c:          # c is a connected Client
        c[:].execute("x = mpi.rank()")

    cluster = ippc.Cluster(n=4, engines="mpi")
    c = cluster.start_and_connect_sync()
    ...
    cluster.stop_cluster_sync()

The ``ippc`` program is found as ``$IPPC_BIN``, next to this package in a
checkout (``build/bin/ippc``), or on ``PATH``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from typing import Any, List, Optional

from .client import Client, connection_file
from .errors import IppcError

__all__ = ["Cluster", "find_ippc"]


def find_ippc() -> Optional[str]:
    """The ``ippc`` launcher: ``$IPPC_BIN``, a checkout's ``build/bin/ippc``,
    or ``ippc`` on ``PATH`` (None when there is none)."""
    env = os.environ.get("IPPC_BIN")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    build = os.environ.get("BUILD", "build")
    root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    candidate = os.path.join(build if os.path.isabs(build) else os.path.join(root, build),
                             "bin", "ippc")
    if os.access(candidate, os.X_OK):
        return candidate
    return shutil.which("ippc")


class Cluster:
    """A cluster of ``n`` engines started by ``ippc cluster start``.

    Args:
        n: number of engines.
        engines: ``"mpi"`` (one MPI job, the default) or ``"local"``.
        runtime: the engines' language, ``"lua"`` (default) or ``"python"``
            (passed as ``--runtime`` when not Lua).
        profile: the profile name (default: a fresh one per Cluster).
        ippc_dir: where profiles live (default: a private temporary folder,
            removed at stop, when no profile is given; else ``$IPPC_DIR``).
        db: the controller's task store (``"memory"`` by default here).
        timeout: how long to wait for the engines to come up.
        args: more ``ippc cluster start`` options.
        ippc: the ``ippc`` program (default: :func:`find_ippc`).
        shutdown_atexit: stop the cluster when Python exits, if it still runs.
    """

    def __init__(self, n: int = 4, engines: str = "mpi", runtime: Optional[str] = None,
                 profile: Optional[str] = None, ippc_dir: Optional[str] = None,
                 db: Optional[str] = "memory", timeout: float = 60.0,
                 args: Optional[List[str]] = None, ippc: Optional[str] = None,
                 shutdown_atexit: bool = True) -> None:
        if int(n) < 1:
            raise ValueError("a cluster needs n >= 1 engines")
        self.n = int(n)
        self.engines = engines
        self.runtime = runtime
        self._own_dir = ippc_dir is None and profile is None
        # A private folder is made at start (and removed at stop).
        self.ippc_dir: str = ippc_dir or ("" if self._own_dir else os.environ.get("IPPC_DIR")
                                          or os.path.join(os.path.expanduser("~"), ".ippc"))
        self.profile = profile or "default"
        self.db = db
        self.timeout = timeout
        self.args = list(args or [])
        self.ippc = ippc or find_ippc()
        #: Stop the cluster when Python exits, if it still runs (as ipp's).
        self.shutdown_atexit = shutdown_atexit
        self.client: Optional[Client] = None
        self.running = False
        #: What the launcher printed at start.
        self.output = ""

    @classmethod
    def from_file(cls, profile: Optional[str] = None, ippc_dir: Optional[str] = None,
                  timeout: float = 60.0) -> "Cluster":
        """The cluster already running for ``profile`` (as ``ipp.Cluster.from_file()``):
        ``connect_client_sync()`` connects to it, ``stop_cluster_sync()`` stops it."""
        cl = cls(n=1, profile=profile or "default",
                 ippc_dir=ippc_dir or os.environ.get("IPPC_DIR")
                 or os.path.join(os.path.expanduser("~"), ".ippc"), timeout=timeout,
                 shutdown_atexit=False)
        info = Client.from_file(cl.connection_file, timeout=0)
        try:
            cl.n = max(1, len(info.ids))
        finally:
            info.close()
        cl.running = True
        return cl

    def __repr__(self) -> str:
        return "<ippc.Cluster n=%d profile=%s %s>" % (self.n, self.profile,
                                                      "running" if self.running else "stopped")

    @property
    def connection_file(self) -> str:
        """The client connection file the controller writes."""
        if not self.ippc_dir:
            raise IppcError("the cluster has not been started (no folder yet)")
        return connection_file(self.profile, self.ippc_dir)

    def _command(self) -> List[str]:
        if not self.ippc:
            raise IppcError("cannot find the ippc program: build it (make) or set IPPC_BIN")
        cmd = [self.ippc, "cluster", "start", "-n", str(self.n), "--engines=" + self.engines,
               "--profile", self.profile, "--ippc-dir", self.ippc_dir, "--daemonize",
               "--timeout", str(self.timeout)]
        if self.runtime and self.runtime != "lua":
            cmd.append("--runtime=" + self.runtime)
        if self.db:
            cmd += ["--db", self.db]
        return cmd + self.args

    def start_cluster_sync(self) -> None:
        """Starts the controller and the engines; returns once all are up."""
        if self.running:
            return
        if self._own_dir and not self.ippc_dir:
            self.ippc_dir = tempfile.mkdtemp(prefix="ippc-cluster-")
        # The daemon keeps the launcher's stdout: a file, not a pipe, so
        # that reading it does not wait for the daemon's end.
        try:
            with tempfile.TemporaryFile() as out:
                proc = subprocess.run(self._command(), stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=self.timeout + 30)
                out.seek(0)
                self.output = out.read().decode("utf-8", "replace")
        except (OSError, subprocess.SubprocessError) as e:
            self._cleanup_dir()
            raise IppcError("cannot run %s: %s" % (self.ippc, e)) from None
        if proc.returncode != 0:
            self._cleanup_dir()
            raise IppcError("ippc cluster start failed (exit %d):\n%s"
                            % (proc.returncode, self.output.strip()))
        self.running = True
        if self.shutdown_atexit:
            atexit.register(self._stop_at_exit)

    def connect_client_sync(self, **kw: Any) -> Client:
        """A Client of the running cluster (waiting for all ``n`` engines)."""
        client = Client.from_file(self.connection_file, **kw)
        client.wait_for_engines(self.n, timeout=self.timeout)
        self.client = client
        return client

    def start_and_connect_sync(self, **kw: Any) -> Client:
        """Starts the cluster and answers a connected Client."""
        self.start_cluster_sync()
        try:
            return self.connect_client_sync(**kw)
        except BaseException:
            self.stop_cluster_sync()
            raise

    def stop_cluster_sync(self) -> None:
        """Stops the engines and the controller (``ippc cluster stop``) and
        waits until they are gone."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.running and self.ippc:
            proc = subprocess.run([self.ippc, "cluster", "stop", "--profile", self.profile,
                                   "--ippc-dir", self.ippc_dir, "--timeout", "30"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=60)
            self.running = False
            atexit.unregister(self._stop_at_exit)
            if proc.returncode != 0:
                raise IppcError("ippc cluster stop failed (exit %d):\n%s" % (
                    proc.returncode, proc.stdout.decode("utf-8", "replace").strip()))
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._own_dir and self.ippc_dir and os.path.isdir(self.ippc_dir):
            shutil.rmtree(self.ippc_dir, ignore_errors=True)

    def _stop_at_exit(self) -> None:
        """At interpreter exit: stops a cluster this object started and no
        one stopped (a daemonized cluster would outlive the program)."""
        if self.running:
            try:
                self.stop_cluster_sync()
            except Exception:
                pass

    def __enter__(self) -> Client:
        return self.start_and_connect_sync()

    def __exit__(self, *exc: Any) -> None:
        self.stop_cluster_sync()
