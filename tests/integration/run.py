#!/usr/bin/python3
"""run.py — runs every integration test against real binaries.

    /usr/bin/python3 tests/integration/run.py [-k SUBSTRING] [--list]

Tests of kind "shared" run on one cluster (controller + mpiexec -n 4
engines) started on first use; its health (controller running, 4 engines
live, all idle within IPPC_TEST_SETTLE seconds, default 30) is checked after
each shared test, and a test that leaves it broken or busy fails with the
logs' tails (the next shared test gets a new cluster).  Tests
of kind "own" (they kill engines or start clusters through the CLI) start
their own, and fail when it does not stop cleanly (harness.Cluster as a
context manager).  Each test has a time limit (IPPC_TEST_TIMEOUT, default 240 s).
Prints `PASS name` / `FAIL name: reason` per test and ends with
`integration: N passed, N failed`; exits 1 when anything failed.  Leaves no
process behind: the last test checks that the shared cluster shuts down
cleanly, and SIGTERM/SIGINT to this runner stops every cluster first.
"""

import importlib
import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

TEST_TIMEOUT = int(os.environ.get("IPPC_TEST_TIMEOUT", "240"))
# How long the shared cluster's engines may stay busy after a test.
SETTLE_SECONDS = float(os.environ.get("IPPC_TEST_SETTLE", "30"))

# Every tests/integration/test_*.py module with a TESTS list is run: these
# first, in this order (the seed scenario leads), then the rest by name.
FIRST = ("test_seed", "test_values", "test_views", "test_errors", "test_failure", "test_cli",
         "test_tasks", "test_streams", "test_runtime")


def _modules():
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(f[:-3] for f in os.listdir(here) if f.startswith("test_") and f.endswith(".py"))
    ordered = [m for m in FIRST if m in found] + [m for m in found if m not in FIRST]
    return [importlib.import_module(m) for m in ordered]


TESTS = tuple(t for m in _modules() for t in m.TESTS)


class TestTimeout(Exception):
    pass


class Runner:
    def __init__(self):
        self.shared = None
        self.shared_error = None
        self.restarts = 0
        self.starts_failed = 0
        self.passed = 0
        self.failed = 0
        self.last_shared = "nothing"   # the last test that ran on the shared cluster

    def out(self, line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def retire_shared(self, problem):
        """Stops the unhealthy shared cluster (the next shared test starts a
        new one); returns what went wrong, with the logs' tails and whatever
        the stop found, for the failure of the test it is charged to."""
        tail = self.shared.logs_tail(1500)
        problems = self.shared.stop()
        self.shared = None
        self.restarts += 1
        text = "%s\n%s" % (problem, tail)
        if problems:
            text += "\n--- stopping it:\n" + "\n".join(problems)
        return text

    def shared_cluster(self):
        if self.shared is not None:
            problem = self.shared.health_problem()
            if problem is None:
                return self.shared
            # It broke after the last check (the end of the previous shared
            # test): this test cannot run on it and is charged with it.
            raise harness.Failure("the shared cluster was unhealthy when this test started "
                                  "(after %s): %s" % (self.last_shared,
                                                       self.retire_shared(problem)))
        if self.shared_error is not None:
            raise harness.HarnessError("shared cluster unavailable: %s" % self.shared_error)
        try:
            self.shared = harness.Cluster(n=4, profile="itest").start()
        except harness.HarnessError as e:
            # Do not spend a start-up timeout on every remaining test.
            if self.restarts >= 2 or self.starts_failed >= 1:
                self.shared_error = str(e).splitlines()[0]
            self.starts_failed += 1
            raise
        return self.shared

    def run_one(self, name, func, kind):
        started = time.time()
        signal.alarm(TEST_TIMEOUT)
        notes = []
        try:
            cluster = self.shared_cluster() if kind == "shared" else None
            notes = func(cluster) or []
            ok, reason = True, ""
        except TestTimeout:
            ok, reason = False, "timed out after %d s" % TEST_TIMEOUT
        except harness.Failure as e:
            ok, reason = False, str(e)
        except harness.HarnessError as e:
            ok, reason = False, "harness: %s" % e
        except Exception as e:  # a bug in the test or a surprising answer
            ok, reason = False, "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc())
        finally:
            signal.alarm(0)
        # A test that leaves the shared cluster broken (controller gone,
        # engines dead, or still busy a while after it) fails, even if its
        # own checks passed.
        if kind == "shared" and self.shared is not None:
            self.last_shared = name
            problem = self.shared.health_problem(settle=SETTLE_SECONDS)
            if problem is not None:
                ok = False
                reason = (reason.rstrip() + "\n" if reason else "") + (
                    "the shared cluster was unhealthy after this test: "
                    + self.retire_shared(problem))
        for n in notes:
            self.out("# %s: %s" % (name, n))
        took = time.time() - started
        if ok:
            self.passed += 1
            self.out("PASS %s (%.1f s)" % (name, took))
        else:
            self.failed += 1
            self.out("FAIL %s: %s" % (name, reason.rstrip().replace("\n", "\n    ")))

    def stop_shared(self):
        """The shared cluster must stop cleanly on SIGTERM (reported as a test)."""
        if self.shared is None:
            return
        problems = self.shared.stop()
        self.shared = None
        if problems:
            self.failed += 1
            self.out("FAIL no_process_left_behind: " + "; ".join(problems))
        else:
            self.passed += 1
            self.out("PASS no_process_left_behind")

    def abort(self, signum, frame):
        signal.alarm(0)
        self.out("# interrupted by signal %d: stopping clusters" % signum)
        if self.shared is not None:
            self.shared.stop()
        harness.sweep(grace=3)
        self.failed += 1
        self.out("integration: %d passed, %d failed" % (self.passed, self.failed))
        os._exit(1)


def main(argv):
    pattern = None
    if "--list" in argv:
        for name, _, kind in TESTS:
            print("%s (%s)" % (name, kind))
        return 0
    if "-k" in argv:
        pattern = argv[argv.index("-k") + 1]
    selected = [t for t in TESTS if pattern is None or pattern in t[0]]

    runner = Runner()

    def on_alarm(signum, frame):
        raise TestTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, runner.abort)
    signal.signal(signal.SIGINT, runner.abort)

    # Shared tests first (one cluster), then the ones that bring their own.
    shared = [t for t in selected if t[2] == "shared"]
    own = [t for t in selected if t[2] != "shared"]
    try:
        for name, func, kind in shared:
            runner.run_one(name, func, kind)
        runner.stop_shared()
        for name, func, kind in own:
            runner.run_one(name, func, kind)
    finally:
        if runner.shared is not None:
            runner.shared.stop()
    # Whatever any test started must be gone by now.
    leftovers = harness.sweep()
    if leftovers:
        runner.failed += 1
        runner.out("FAIL no_process_left_behind_at_exit: had to kill %s" % leftovers)
    else:
        runner.passed += 1
        runner.out("PASS no_process_left_behind_at_exit")
    runner.out("integration: %d passed, %d failed" % (runner.passed, runner.failed))
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
