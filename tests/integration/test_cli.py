"""test_cli.py — `ippc cluster start -n 4 --engines=mpi` as a user types it:
in the foreground (parse URL and token from its output, run the seed, Ctrl-C,
everything gone) and with --daemonize + `ippc cluster stop`."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from harness import (CLI, Api, Cluster, ProcessTracker, check, describe, wait_gone, alive,
                     HarnessError, http)
from common import same, view, expect_done, expect_task_results, psum_source


def parse_banner(text):
    """URL and token from the launcher's output (e.g. "URL: http://..." and
    "Token: abc"); None for what is missing."""
    url = re.search(r"(https?://[0-9A-Za-z.\-\[\]:]+)", text)
    token = re.search(r"token\W{0,3}\s*[:=]\s*\"?([A-Za-z0-9_\-.~+/=]{8,})", text, re.I)
    return (url.group(1).rstrip("/") if url else None, token.group(1) if token else None)


def run_seed(api, ids):
    r = api.post(view("all", "run"), {"filename": "psum.lua", "source": psum_source()})
    expect_task_results(r, ids, "run psum.lua")
    r = api.post(view("all", "scatter"), {"name": "a", "data": list(range(16))})
    expect_task_results(r, ids, "scatter a")
    body = expect_done(api.get(view("all", "vars/a")), 4, "vars/a")
    check(same(body["results"], [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]),
          "vars/a: %s" % body)
    expect_task_results(api.post(view("all", "execute"), {"code": "totalsum = psum(a)"}), ids,
                        "execute totalsum")
    body = expect_done(api.get(view("all", "vars/totalsum")), 4, "vars/totalsum")
    check(same(body["results"], [120] * 4), "vars/totalsum: %s" % body)


def check_mpi_world(api):
    engines = sorted(api.engines(), key=lambda e: e["id"])
    check(len(engines) == 4, "4 engines: %s" % engines)
    check([e["rank"] for e in engines] == [0, 1, 2, 3] and all(e["size"] == 4 for e in engines),
          "the launcher must start one MPI job of 4 (ranks 0..3, size 4): %s" % engines)
    return [e["id"] for e in engines]


class Reader(threading.Thread):
    """Collects a pipe's output without blocking the test."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe, self.chunks, self.lock = pipe, [], threading.Lock()
        self.start()

    def run(self):
        for line in iter(self.pipe.readline, b""):
            with self.lock:
                self.chunks.append(line.decode("utf-8", "replace"))

    def text(self):
        with self.lock:
            return "".join(self.chunks)


def cli_env(tmp):
    env = dict(os.environ)
    env["IPPC_DIR"] = tmp
    env["IPPC_TEST_MARKER"] = tmp
    return env


def finish(tracker, tmp, leftovers):
    """Kills whatever is left (by pid), removes tmp when nothing is."""
    stubborn = tracker.kill_all(grace=5)
    if not tracker.all_alive():
        shutil.rmtree(tmp, ignore_errors=True)
    return stubborn


def test_cli_foreground(_):
    check(os.access(CLI, os.X_OK), "missing %s" % CLI)
    tmp = tempfile.mkdtemp(prefix="ippc-itest-cli-")
    tracker = ProcessTracker(tmp)
    left = set()
    try:
        p = subprocess.Popen([CLI, "cluster", "start", "-n", "4", "--engines=mpi",
                              "--profile", "clifg"],
                             env=cli_env(tmp), cwd=tmp, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
        tracker.add_popen(p)
        out = Reader(p.stdout)
        deadline = time.time() + 120
        url = token = None
        while time.time() < deadline:
            url, token = parse_banner(out.text())
            if url and token:
                break
            check(p.poll() is None, "ippc cluster start exited with %s:\n%s"
                  % (p.returncode, out.text()))
            time.sleep(0.2)
        check(url and token, "no URL and token in the output within 120 s:\n%s" % out.text())
        time.sleep(0.5)  # the banner may come in pieces
        url, token = parse_banner(out.text())
        api = Api(url, token)
        try:
            api.wait_engines(4, 30)
        except HarnessError as e:
            check(False, "%s\noutput:\n%s" % (e, out.text()))
        ids = check_mpi_world(api)
        run_seed(api, ids)
        # The dashboard link: the page, with the token in the fragment.
        link = "Dashboard: %s/#token=%s" % (url, token)
        check(link in out.text(), "no %r in the output:\n%s" % (link, out.text()))
        page = http("GET", url + "/")
        check(page.status == 200 and page.headers.get("Content-Type", "").startswith("text/html"),
              "the dashboard link's page: %s" % page)
        # The default task store is a file (--db memory writes none: test_launcher).
        db = os.path.join(tmp, "profile_clifg", "tasks.db")
        check(os.path.exists(db), "no task store at %s" % db)

        tracker.snapshot()
        for e in api.engines():
            tracker.pids.add(e["pid"])
        ours = tracker.snapshot()
        check(len(ours) >= 6, "expected launcher, controller, mpiexec and 4 engines; found %s"
              % describe(ours))

        # Ctrl-C: SIGINT to the launcher's process group, as a terminal does.
        os.killpg(p.pid, signal.SIGINT)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            check(False, "ippc cluster start still running 60 s after SIGINT:\n%s" % out.text())
        left = wait_gone(ours, 20)
        check(not left, "after Ctrl-C these are still running: %s\noutput:\n%s"
              % (describe(left), out.text()))
        later = tracker.all_alive()
        check(not later, "processes of the cluster still running: %s" % describe(later))
    finally:
        finish(tracker, tmp, left)


def test_cli_daemonize(_):
    check(os.access(CLI, os.X_OK), "missing %s" % CLI)
    tmp = tempfile.mkdtemp(prefix="ippc-itest-clid-")
    tracker = ProcessTracker(tmp)
    left = set()
    log_path = os.path.join(tmp, "start.out")
    try:
        # stdout to a file, not a pipe: a daemon that keeps the pipe open
        # must not hang the test.
        with open(log_path, "wb") as log:
            p = subprocess.Popen([CLI, "cluster", "start", "-n", "4", "--engines=mpi",
                                  "--profile", "clid", "--daemonize"],
                                 env=cli_env(tmp), cwd=tmp, stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        tracker.add_popen(p)
        try:
            rc = p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            check(False, "--daemonize did not return within 120 s:\n%s" % open(log_path).read())
        text = open(log_path).read()
        check(rc == 0, "--daemonize exited %s:\n%s" % (rc, text))
        url, token = parse_banner(text)
        check(url and token, "no URL and token in --daemonize output:\n%s" % text)
        api = Api(url, token)
        api.wait_engines(4, 30)
        ids = check_mpi_world(api)
        run_seed(api, ids)
        for e in api.engines():
            tracker.pids.add(e["pid"])
        ours = tracker.snapshot()
        check(len(ours) >= 5, "expected controller, mpiexec and 4 engines running; found %s"
              % describe(ours))

        stop = subprocess.run([CLI, "cluster", "stop", "--profile", "clid"], env=cli_env(tmp),
                              cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=90)
        check(stop.returncode == 0, "ippc cluster stop exited %s:\n%s"
              % (stop.returncode, stop.stdout.decode("utf-8", "replace")))
        left = wait_gone(ours, 20)
        check(not left, "after ippc cluster stop these are still running: %s" % describe(left))
        later = tracker.all_alive()
        check(not later, "processes of the cluster still running: %s" % describe(later))
        # Stopping again has nothing to stop: it must answer, not hang.
        subprocess.run([CLI, "cluster", "stop", "--profile", "clid"], env=cli_env(tmp),
                       cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    finally:
        finish(tracker, tmp, left)


TESTS = [
    ("cli_foreground_ctrl_c", test_cli_foreground, "own"),
    ("cli_daemonize_stop", test_cli_daemonize, "own"),
]
