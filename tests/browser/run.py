#!/usr/bin/python3
"""run.py — the dashboard's browser tests (issue 11).

    /usr/bin/python3 tests/browser/run.py

Starts a real cluster (ippc-controller + `mpiexec.mpich -n 4 ippc-engine`,
harness.Cluster), runs tests/browser/dashboard.mjs under Node (playwright-core
driving Debian's /usr/bin/chromium headless) against it, and stops it.
Screenshots go to $BUILD/browser/.  Chromium is started with the cluster's
marker in its environment, so if the Node side dies before it closes the
browser, the cluster's teardown finds and kills chromium too, and the run
fails for it ("did not stop cleanly").

Prints the page tests' `PASS`/`FAIL` lines, `FAIL`s of its own (missing
chromium or playwright-core, a cluster that did not stop cleanly, a Node run
that timed out), and ends with `browser: N passed, N failed`; exit status 1
when anything failed.  The tests fail, never skip, when something they need
is missing (`make test` installs it: scripts/install-deps, `npm ci`).
"""

import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import harness  # noqa: E402

CHROMIUM = os.environ.get("IPPC_CHROMIUM", "/usr/bin/chromium")
NODE = os.environ.get("NODE", "node")
NODE_TIMEOUT = int(os.environ.get("BROWSER_TIMEOUT", "300"))


def main():
    passed = failed = 0

    def fail(name, reason):
        nonlocal failed
        failed += 1
        print("FAIL %s: %s" % (name, reason), flush=True)

    out_dir = os.path.join(harness.BIN, "..", "browser")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):  # this run's screenshots only
        if name.endswith(".png"):
            os.unlink(os.path.join(out_dir, name))
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append("%s (apt-get install chromium; scripts/install-deps does)" % CHROMIUM)
    if not os.path.isdir(os.path.join(harness.ROOT, "node_modules", "playwright-core")):
        missing.append("node_modules/playwright-core (npm ci; make npm-deps does)")
    if missing:
        fail("browser_prerequisites", "missing " + "; ".join(missing))
        print("browser: %d passed, %d failed" % (passed, failed))
        return 1

    cluster = harness.Cluster(n=4, profile="browser", controller_args=["--db", "memory"])
    stopping = []

    def on_signal(sig, frame):
        stopping.append(sig)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    node = None
    try:
        cluster.start()
        env = cluster.env()  # carries the marker the teardown sweeps by
        env.update({"IPPC_URL": cluster.api.url, "IPPC_TOKEN": cluster.api.token,
                    "BROWSER_OUT": out_dir, "IPPC_CHROMIUM": CHROMIUM,
                    "IPPC_CONTROLLER": harness.CONTROLLER, "IPPC_ENGINE": harness.ENGINE,
                    "IPPC_MPIEXEC": harness.MPIEXEC,
                    "IPPC_ENGINE_FILE": os.path.join(cluster.security_dir, "ippc-engine.json")})
        node = subprocess.Popen([NODE, os.path.join(HERE, "dashboard.mjs")], cwd=harness.ROOT,
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        cluster.tracker.add_popen(node)
        deadline = time.time() + NODE_TIMEOUT
        counted = None
        for raw in iter(node.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            m = re.match(r"^browser-page: (\d+) passed, (\d+) failed$", line)
            if m:
                counted = (int(m.group(1)), int(m.group(2)))
                continue
            print(line, flush=True)
            if time.time() > deadline:
                break
        try:
            node.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            harness.signal_group(node.pid, signal.SIGTERM)
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                harness.signal_group(node.pid, signal.SIGKILL)
                node.wait(timeout=10)
            fail("browser_run", "the page tests did not finish within %d s" % NODE_TIMEOUT)
        if counted is None:
            fail("browser_run", "the page tests printed no summary (exit %s)" % node.returncode)
        else:
            passed += counted[0]
            failed += counted[1]
            if node.returncode != 0 and counted[1] == 0:
                fail("browser_run", "exit status %s with no failed test" % node.returncode)
    except KeyboardInterrupt:
        fail("browser_run", "interrupted")
    except harness.HarnessError as e:
        fail("browser_cluster", str(e))
    finally:
        if node is not None and node.poll() is None:
            harness.signal_group(node.pid, signal.SIGTERM)
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        problems = cluster.stop()
        if problems:
            fail("browser_cluster_stops_cleanly", "\n    ".join(problems))
        else:
            passed += 1
            print("PASS browser_cluster_stops_cleanly", flush=True)
    print("browser: %d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed or stopping else 0


if __name__ == "__main__":
    sys.exit(main())
