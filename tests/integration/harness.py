"""harness.py — start and stop real ippc clusters for the integration tests.

Standard library only (run with /usr/bin/python3).  A Cluster is one
ippc-controller on a free port (--port 0) with a private IPPC_DIR, plus one
`mpiexec.mpich -n N ippc-engine --file <ippc-engine.json>` job (or several
jobs, started one after the other so their ids are predictable).  Every process
is started in its own session, and every process that carries the cluster's
marker (its temp IPPC_DIR in the environment or on the command line) is found
again through /proc at teardown, so nothing is left behind even when mpiexec
dies before its ranks (SIGKILL to mpiexec leaves the ranks running, see
PLATFORM.md).  Processes are only ever signalled by pid.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BUILD", "build")
BIN = BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD)
BIN = os.path.join(BIN, "bin")
# Each binary can be swapped alone (e.g. a sanitizer controller with a plain
# engine): IPPC_TEST_CONTROLLER, IPPC_TEST_ENGINE, IPPC_TEST_CLI.
def _binary(env, name):
    path = os.environ.get(env)
    return os.path.abspath(path) if path else os.path.join(BIN, name)


CONTROLLER = _binary("IPPC_TEST_CONTROLLER", "ippc-controller")
ENGINE = _binary("IPPC_TEST_ENGINE", "ippc-engine")
CLI = _binary("IPPC_TEST_CLI", "ippc")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer")
MPIEXEC = os.environ.get("IPPC_TEST_MPIEXEC", "mpiexec.mpich")

# Generous everywhere: 2 cores, 4 ranks + controller, sanitizer builds.
START_TIMEOUT = float(os.environ.get("IPPC_TEST_START_TIMEOUT", "60"))
HTTP_TIMEOUT = float(os.environ.get("IPPC_TEST_HTTP_TIMEOUT", "120"))


class HarnessError(Exception):
    pass


# ---------------------------------------------------------------- HTTP client

class Response:
    def __init__(self, status, body, headers, raw):
        self.status = status
        self.body = body          # parsed JSON, or None if the body is not JSON
        self.headers = headers
        self.raw = raw            # bytes

        self.request = ""         # "METHOD /path body", for failure messages

    def __repr__(self):
        text = self.raw.decode("utf-8", "replace")
        if len(text) > 1500:
            text = text[:1500] + "...(%d bytes)" % len(self.raw)
        return "%s -> HTTP %s %s" % (self.request, self.status, text)


def http(method, url, body=None, token=None, raw=None, headers=None, timeout=HTTP_TIMEOUT):
    """One HTTP request.  body is JSON-encoded; raw is sent as is.  Never raises
    on an HTTP error status: returns a Response whatever the status."""
    data = None
    hdrs = {}
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    elif raw is not None:
        data = raw if isinstance(raw, bytes) else raw.encode()
        hdrs["Content-Type"] = "application/json"
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    if headers:
        hdrs.update(headers)
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, content, rhdrs = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        status, content, rhdrs = e.code, e.read(), dict(e.headers or {})
    parsed = None
    try:
        parsed = json.loads(content.decode("utf-8")) if content else None
    except (ValueError, UnicodeDecodeError):
        parsed = None
    r = Response(status, parsed, rhdrs, content)
    shown = data.decode("utf-8", "replace") if data else ""
    if len(shown) > 300:
        shown = shown[:300] + "..."
    path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else url
    r.request = "%s %s%s%s" % (method, path, " " if shown else "", shown)
    return r


class Failure(AssertionError):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def expect(r, status, what=""):
    """Asserts the HTTP status (an int or a tuple of ints) and a JSON body;
    returns the body."""
    ok = r.status in status if isinstance(status, tuple) else r.status == status
    check(ok, "%sexpected HTTP %s: %r" % (what + ": " if what else "", status, r))
    check(r.body is not None, "%sbody is not JSON: %r" % (what + ": " if what else "", r))
    return r.body


def expect_error(r, status, code, what=""):
    """Asserts an error answer {"error":{"code","message"}} with status and code
    (code may be a tuple of acceptable codes)."""
    body = expect(r, status, what)
    err = body.get("error") if isinstance(body, dict) else None
    check(isinstance(err, dict) and isinstance(err.get("message"), str),
          "not an error body {\"error\":{\"code\",\"message\"}}: %r" % r)
    codes = code if isinstance(code, tuple) else (code,)
    check(err.get("code") in codes, "expected error code %s: %r" % ("|".join(codes), r))
    return err


class Api:
    """Authenticated client for one controller."""

    def __init__(self, url, token):
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, **kw):
        kw.setdefault("token", self.token)
        return http(method, self.url + path, body=body, **kw)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body=body, **kw)

    def put(self, path, body=None, **kw):
        return self.call("PUT", path, body=body, **kw)

    def engines(self):
        r = self.get("/api/v1/engines", timeout=30)
        if r.status != 200 or not isinstance(r.body, dict):
            raise HarnessError("GET /api/v1/engines: %r" % r)
        return r.body.get("engines", [])

    def live_engines(self):
        return [e for e in self.engines() if e.get("state") != "dead"]

    def wait_engines(self, n, timeout=START_TIMEOUT):
        """Waits until at least n engines are live; returns them."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                live = self.live_engines()
                last = live
                if len(live) >= n:
                    return live
            except (HarnessError, OSError) as e:
                last = e
            time.sleep(0.25)
        raise HarnessError("%d engines did not register within %.0f s (last: %r)"
                           % (n, timeout, last))


# ---------------------------------------------------------------- processes

def _proc_ids():
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def _read(path, binary=False):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data if binary else data.decode("utf-8", "replace")


def proc_state(pid):
    """The /proc state letter of pid, or None if it does not exist."""
    stat = _read("/proc/%d/stat" % pid)
    if not stat:
        return None
    try:
        return stat[stat.rindex(")") + 2]
    except (ValueError, IndexError):
        return None


def alive(pid):
    """True if pid exists and is not a zombie."""
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def proc_ppid(pid):
    stat = _read("/proc/%d/stat" % pid)
    if not stat:
        return None
    try:
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (ValueError, IndexError):
        return None


def proc_cmdline(pid):
    data = _read("/proc/%d/cmdline" % pid, binary=True)
    return data.replace(b"\0", b" ").decode("utf-8", "replace").strip() if data else ""


def processes_with_marker(marker):
    """Pids (not us) whose environment or command line contains marker."""
    me = os.getpid()
    found = set()
    needle = marker.encode()
    for pid in _proc_ids():
        if pid == me:
            continue
        for part in ("environ", "cmdline"):
            data = _read("/proc/%d/%s" % (pid, part), binary=True)
            if data and needle in data:
                found.add(pid)
                break
    return {p for p in found if alive(p)}


def descendants(roots):
    """All live descendants of the given pids (not the roots themselves)."""
    children = {}
    for pid in _proc_ids():
        ppid = proc_ppid(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    out, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return {p for p in out if alive(p)}


def signal_pid(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_gone(pids, timeout):
    """Waits until none of pids is alive; returns the ones still alive."""
    deadline = time.time() + timeout
    pids = set(pids)
    while True:
        left = {p for p in pids if alive(p)}
        if not left or time.time() >= deadline:
            return left
        time.sleep(0.1)


def describe(pids):
    return ", ".join("%d (%s)" % (p, proc_cmdline(p)[:120]) for p in sorted(pids))


def read_json_file(path):
    with open(path) as f:
        return json.load(f)


def wait_file(path, timeout, proc=None, what="file"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            try:
                return read_json_file(path)
            except ValueError:
                pass  # being written
        if proc is not None and proc.poll() is not None:
            raise HarnessError("%s exited with %s before writing %s"
                               % (what, proc.returncode, path))
        time.sleep(0.1)
    raise HarnessError("%s not written within %.0f s: %s" % (what, timeout, path))


# Every tracker ever made in this process, so a runner can sweep them all
# (after the last test, or when it is itself interrupted).
TRACKERS = []


class ProcessTracker:
    """Everything a test started: Popen objects, extra pids, and the marker
    (a unique temp directory) that its processes inherit."""

    def __init__(self, marker):
        self.marker = marker
        self.popens = []
        self.pids = set()
        TRACKERS.append(self)

    def add_popen(self, p):
        self.popens.append(p)
        self.pids.add(p.pid)

    def snapshot(self):
        """Records every process of ours that is alive now."""
        roots = {p.pid for p in self.popens if p.poll() is None}
        self.pids |= roots | descendants(roots) | processes_with_marker(self.marker)
        return set(self.pids)

    def all_alive(self):
        self.snapshot()
        return {p for p in self.pids if alive(p)}

    def kill_all(self, grace=10.0):
        """SIGTERM, then SIGKILL, everything tracked; returns pids that were
        still alive after the grace period (and had to be SIGKILLed)."""
        self.snapshot()
        for p in self.popens:
            if p.poll() is None:
                signal_group(p.pid, signal.SIGTERM)
        for pid in list(self.pids):
            signal_pid(pid, signal.SIGTERM)
        left = wait_gone(self.pids, grace)
        stubborn = set(left)
        for _ in range(3):
            self.snapshot()
            left = {p for p in self.pids if alive(p)}
            if not left:
                break
            stubborn |= left
            for p in self.popens:
                if p.poll() is None:
                    signal_group(p.pid, signal.SIGKILL)
            for pid in left:
                signal_pid(pid, signal.SIGKILL)
            wait_gone(left, 5)
        self.reap()
        return stubborn

    def reap(self):
        for p in self.popens:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


# ---------------------------------------------------------------- cluster

class Cluster:
    """A controller + mpiexec jobs of engines, in a private IPPC_DIR.
    jobs=[4, 1] starts a 4-rank job, waits for it, then a 1-rank job: ids
    0..3 are the first job's ranks, id 4 the singleton."""

    def __init__(self, n=4, profile="itest", mpiexec_args=(), controller_args=(), jobs=None,
                 engine_args=()):
        self.jobs = list(jobs) if jobs is not None else [n]  # [] = controller only
        self.n = sum(self.jobs)
        self.profile = profile
        self.mpiexec_args = list(mpiexec_args)
        self.controller_args = list(controller_args)
        self.engine_args = list(engine_args)  # after ippc-engine --file FILE
        self.dir = tempfile.mkdtemp(prefix="ippc-itest-")
        self.tracker = ProcessTracker(self.dir)
        self.controller = None
        self.mpiexecs = []
        self.api = None
        self.client_info = None
        self.engine_info = None
        self.engine_pids = {}   # engine id -> pid
        self.started = False
        self.killed_on_purpose = set()  # controller pids a test SIGKILLed
        self.stop_problems = None       # stop()'s answer, once stopped

    @property
    def security_dir(self):
        return os.path.join(self.dir, "profile_" + self.profile, "security")

    def env(self):
        env = dict(os.environ)
        env["IPPC_DIR"] = self.dir
        env["IPPC_TEST_MARKER"] = self.dir
        return env

    def log(self, name):
        return open(os.path.join(self.dir, name), "ab")

    def start(self, engines=True):
        """Starts the controller and, unless engines=False, the engine jobs
        (then call start_engines() later, e.g. once a client listens)."""
        try:
            self._start_controller()
            if engines:
                self.start_engines()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_controller(self):
        for exe in (CONTROLLER, ENGINE):
            if not os.access(exe, os.X_OK):
                raise HarnessError("missing binary %s (run make)" % exe)
        self.controller = subprocess.Popen(
            [CONTROLLER, "--port", "0", "--profile", self.profile] + self.controller_args,
            env=self.env(), cwd=self.dir, stdin=subprocess.DEVNULL,
            stdout=self.log("controller.log"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.tracker.add_popen(self.controller)
        client_file = os.path.join(self.security_dir, "ippc-client.json")
        engine_file = os.path.join(self.security_dir, "ippc-engine.json")
        self.client_info = wait_file(client_file, 30, self.controller, "ippc-controller")
        self.engine_info = wait_file(engine_file, 30, self.controller, "ippc-controller")
        self.api = Api(self.client_info["url"], self.client_info["token"])

    def start_engines(self):
        """Starts the engine jobs one after the other, each registered before
        the next starts; stops everything on failure."""
        try:
            self._start_engines()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_engines(self):
        engine_file = os.path.join(self.security_dir, "ippc-engine.json")
        expected = 0
        live = []
        for size in self.jobs:
            p = subprocess.Popen(
                [MPIEXEC] + self.mpiexec_args + ["-n", str(size), ENGINE, "--file", engine_file]
                + self.engine_args,
                env=self.env(), cwd=self.dir, stdin=subprocess.DEVNULL,
                stdout=self.log("engines.log"), stderr=subprocess.STDOUT,
                start_new_session=True)
            self.mpiexecs.append(p)
            self.tracker.add_popen(p)
            expected += size
            try:
                live = self.api.wait_engines(expected, START_TIMEOUT)
            except HarnessError as e:
                raise HarnessError("%s\n%s" % (e, self.logs_tail()))
        self.record_engines(live)
        self.started = True

    def record_engines(self, engines=None):
        engines = engines if engines is not None else self.api.engines()
        for e in engines:
            if isinstance(e.get("pid"), int):
                self.engine_pids[e["id"]] = e["pid"]
                self.tracker.pids.add(e["pid"])
        self.tracker.snapshot()

    def restart_controller(self, wait_engines=True):
        """Starts a new controller on the same profile after the old one
        died.  It reuses the dead controller's token, engine key and port
        (its connection files are still there), so the engines reconnect to
        it by themselves."""
        client_file = os.path.join(self.security_dir, "ippc-client.json")
        self.controller = subprocess.Popen(
            [CONTROLLER, "--port", "0", "--profile", self.profile] + self.controller_args,
            env=self.env(), cwd=self.dir, stdin=subprocess.DEVNULL,
            stdout=self.log("controller.log"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.tracker.add_popen(self.controller)
        deadline = time.time() + 30
        while True:
            info = wait_file(client_file, 30, self.controller, "ippc-controller")
            if info.get("pid") == self.controller.pid:
                break
            if time.time() > deadline:
                raise HarnessError("the restarted controller did not rewrite %s" % client_file)
            time.sleep(0.1)
        self.client_info = info
        self.engine_info = read_json_file(os.path.join(self.security_dir, "ippc-engine.json"))
        self.api = Api(self.client_info["url"], self.client_info["token"])
        if wait_engines:
            self.record_engines(self.api.wait_engines(self.n, START_TIMEOUT))
        return self

    def kill_controller(self, sig=signal.SIGKILL, timeout=15):
        """Signals the controller and waits until it exits; returns its exit
        status.  A controller SIGKILLed here is no problem for stop(); one
        that exits non-zero after any other signal is."""
        self.controller.send_signal(sig)
        try:
            rc = self.controller.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failure("the controller (pid %d) did not exit within %d s of signal %d"
                          % (self.controller.pid, timeout, sig))
        if sig == signal.SIGKILL:
            self.killed_on_purpose.add(self.controller.pid)
        return rc

    def ids(self):
        return sorted(e["id"] for e in self.api.live_engines())

    def health_problem(self, settle=0):
        """None while the controller runs and all n engines are live, else
        what is wrong.  With settle (seconds), the engines must also become
        idle within that time: no request open, nothing queued or running (a
        test must not hand its leftovers, or a hung engine, to the next)."""
        if not self.started:
            return "the cluster was never started"
        rc = self.controller.poll()
        if rc is not None:
            return "the controller exited with status %s" % rc
        try:
            live = self.api.live_engines()
        except (HarnessError, OSError) as e:
            return "GET /api/v1/engines failed: %s" % e
        if len(live) < self.n:
            return "only %d of %d engines are live: %s" % (len(live), self.n, live)
        deadline = time.time() + settle
        while settle:
            try:
                info = self.api.get("/api/v1/info", timeout=30).body or {}
                queue = self.api.get("/api/v1/queue", timeout=30).body or {}
            except OSError as e:
                return "GET /api/v1/info or /queue failed: %s" % e
            busy = {e: q for e, q in (queue.get("engines") or {}).items()
                    if q.get("queued") or q.get("running")}
            if not busy and not queue.get("unassigned") and not info.get("requests_open"):
                break
            if time.time() >= deadline:
                return ("the engines are still busy %g s after the test: %d requests open, "
                        "queue %s" % (settle, info.get("requests_open", -1), queue))
            time.sleep(0.2)
        return None

    def logs_tail(self, limit=3000):
        out = []
        for name in ("controller.log", "engines.log"):
            text = _read(os.path.join(self.dir, name)) or ""
            out.append("--- %s (tail) ---\n%s" % (name, text[-limit:]))
        return "\n".join(out)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        """`with Cluster(...) as c:` stops the cluster at the end, and a
        shutdown problem (see stop) fails the test: alone, or added to the
        test's own failure."""
        problems = self.stop()
        if not problems or (exc is not None and not isinstance(exc, Exception)):
            return False
        text = "cluster %r did not stop cleanly:\n  %s" % (self.profile,
                                                            "\n  ".join(problems))
        if exc is None:
            raise Failure(text)
        raise Failure("%s: %s\n%s" % (type(exc).__name__, exc, text)) from exc

    def stop(self):
        """Stops everything; returns a list of problems (empty when clean):
        a controller that ignored SIGTERM, exited non-zero (on SIGTERM, or
        earlier unless kill_controller SIGKILLed it), a sanitizer report in a
        log, mpiexec jobs that did not end after the controller, processes
        that needed SIGKILL or survived even that.  A second call returns the
        first call's answer."""
        if self.stop_problems is not None:
            return self.stop_problems
        problems = []
        if self.api is not None:
            try:
                self.record_engines()
            except (HarnessError, OSError):
                pass
        self.tracker.snapshot()
        # The polite way first: SIGTERM the controller, which tells engines to
        # shut down; then the mpiexec jobs end by themselves.
        terminated = False
        shut_down = False  # the controller told the engines to shut down
        if self.controller is not None and self.controller.poll() is not None:
            rc = self.controller.returncode
            shut_down = rc == 0
            if rc != 0 and self.controller.pid not in self.killed_on_purpose:
                problems.append("controller exited with status %s before the cluster was "
                                "stopped" % rc)
        elif self.controller is not None:
            shut_down = True
            terminated = True
            signal_pid(self.controller.pid, signal.SIGTERM)
            try:
                self.controller.wait(timeout=15)
            except subprocess.TimeoutExpired:
                problems.append("controller ignored SIGTERM for 15 s")
        # Without a controller to tell them, engines only try to reconnect:
        # no point waiting for their jobs to end.
        for p in self.mpiexecs if shut_down else ():
            if p.poll() is None:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    problems.append("mpiexec %d still running 15 s after controller SIGTERM"
                                    % p.pid)
        if terminated and self.controller.returncode not in (None, 0):
            problems.append("controller exited with status %s on SIGTERM" % self.controller.returncode)
        for name in ("controller.log", "engines.log"):
            log = _read(os.path.join(self.dir, name)) or ""
            for mark in SANITIZER_MARKS:
                if mark in log:
                    i = log.index(mark)
                    problems.append("sanitizer report in %s:\n%s"
                                    % (name, log[max(0, i - 200):i + 2500]))
                    break
        if shut_down:
            early = wait_gone(self.tracker.all_alive(), 5)
            if early:
                problems.append("still running after the controller's SIGTERM shutdown: "
                                + describe(early))
        stubborn = self.tracker.kill_all(grace=10)
        if stubborn:
            problems.append("had to kill: " + describe(stubborn))
        left = self.tracker.all_alive()
        if left:
            problems.append("still alive after SIGKILL: " + describe(left))
        if not left and not os.environ.get("IPPC_TEST_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        self.stop_problems = problems
        return problems


def sweep(grace=5.0):
    """Kills whatever any tracker of this process still has running; returns
    a description of what had to be killed (empty when nothing)."""
    found = set()
    for t in TRACKERS:
        left = t.all_alive()
        if left:
            found |= left
            t.kill_all(grace=grace)
        if (not t.all_alive() and not os.environ.get("IPPC_TEST_KEEP")
                and os.path.basename(t.marker).startswith("ippc-itest-")):
            shutil.rmtree(t.marker, ignore_errors=True)
    return describe(found) if found else ""


# ---------------------------------------------------------------- engine jobs and memory
# Small generic helpers for long runs (tests/soak): churn engine jobs on a
# running cluster, read a process's memory.

def proc_rss_kb(pid):
    """VmRSS of pid in KiB (from /proc/PID/status), or None if it is gone."""
    status = _read("/proc/%d/status" % pid) or ""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def start_engine_job(cluster, size, timeout=START_TIMEOUT):
    """Starts one more `mpiexec -n size` engine job on a running cluster and
    waits until size new engines are live; returns their ids (sorted)."""
    before = {e["id"] for e in cluster.api.engines()}
    engine_file = os.path.join(cluster.security_dir, "ippc-engine.json")
    p = subprocess.Popen(
        [MPIEXEC] + cluster.mpiexec_args + ["-n", str(size), ENGINE, "--file", engine_file]
        + cluster.engine_args,
        env=cluster.env(), cwd=cluster.dir, stdin=subprocess.DEVNULL,
        stdout=cluster.log("engines.log"), stderr=subprocess.STDOUT, start_new_session=True)
    cluster.mpiexecs.append(p)
    cluster.tracker.add_popen(p)
    deadline = time.time() + timeout
    new = []
    while time.time() < deadline:
        try:
            new = [e for e in cluster.api.live_engines() if e["id"] not in before]
        except (HarnessError, OSError):
            new = []
        if len(new) >= size:
            cluster.record_engines(new)
            return sorted(e["id"] for e in new)
        if p.poll() is not None:
            break
        time.sleep(0.2)
    raise HarnessError("engine job %d (-n %d): %d of %d engines registered (mpiexec %s)\n%s"
                       % (p.pid, size, len(new), size,
                          "exited %s" % p.returncode if p.poll() is not None else "running",
                          cluster.logs_tail(1500)))


def carries_marker(pid, marker):
    """True if pid is alive and has marker in its environment or command line."""
    if not alive(pid):
        return False
    for part in ("environ", "cmdline"):
        data = _read("/proc/%d/%s" % (pid, part), binary=True)
        if data and marker.encode() in data:
            return True
    return False


def kill_engine_job(cluster, job):
    """SIGKILLs every rank of one engine job that is still running, by the
    pids its engines registered (SIGKILL to mpiexec would leave the ranks
    running); a rank the controller already lists as dead is killed too if
    its process still carries the cluster's marker.  Returns {engine id:
    pid} of the ranks signalled."""
    ranks = {e["id"]: e["pid"] for e in cluster.api.engines()
             if str(e.get("job")) == str(job) and isinstance(e.get("pid"), int)
             and carries_marker(e["pid"], cluster.dir)}
    for pid in ranks.values():
        cluster.tracker.pids.add(pid)
        signal_pid(pid, signal.SIGKILL)
    return ranks


def stop_checked(cluster):
    """Stops cluster from a `finally:` block: a shutdown problem (a sanitizer
    report, a bad exit status, a hung stop, a process left behind) fails the
    test.  When the test is already failing, its own error goes on and the
    shutdown problems are printed with it rather than hiding it."""
    problems = cluster.stop()
    if not problems:
        return
    text = "cluster %r did not stop cleanly:\n  %s" % (cluster.profile, "\n  ".join(problems))
    if sys.exc_info()[0] is None:
        raise Failure(text)
    sys.stdout.write("# %s\n" % text.replace("\n", "\n# "))
