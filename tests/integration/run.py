#!/usr/bin/python3
"""run.py — runs every integration test against real binaries.

    /usr/bin/python3 tests/integration/run.py [-k SUBSTRING] [--list]

Tests of kind "shared" run on one cluster (controller + mpiexec -n 4
engines) started on first use and restarted if it becomes unhealthy; tests
of kind "own" (they kill engines or start clusters through the CLI) start
their own.  Each test has a time limit (IPPC_TEST_TIMEOUT, default 240 s).
Prints `PASS name` / `FAIL name: reason` per test and ends with
`integration: N passed, N failed`; exits 1 when anything failed.  Leaves no
process behind: the last test checks that the shared cluster shuts down
cleanly, and SIGTERM/SIGINT to this runner stops every cluster first.
"""

import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import test_seed  # noqa: E402
import test_values  # noqa: E402
import test_views  # noqa: E402
import test_errors  # noqa: E402
import test_failure  # noqa: E402
import test_cli  # noqa: E402
import test_tasks  # noqa: E402
import test_streams  # noqa: E402
import test_runtime  # noqa: E402
import test_soak  # noqa: E402

TEST_TIMEOUT = int(os.environ.get("IPPC_TEST_TIMEOUT", "240"))

TESTS = (test_seed.TESTS + test_values.TESTS + test_views.TESTS + test_errors.TESTS
         + test_failure.TESTS + test_cli.TESTS + test_tasks.TESTS + test_streams.TESTS
         + test_runtime.TESTS + test_soak.TESTS)


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

    def out(self, line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def shared_cluster(self):
        if self.shared is not None and self.shared.healthy():
            return self.shared
        if self.shared_error is not None:
            raise harness.HarnessError("shared cluster unavailable: %s" % self.shared_error)
        if self.shared is not None:
            self.out("# shared cluster unhealthy; restarting\n" + self.shared.logs_tail(1500))
            for p in self.shared.stop():
                self.out("# " + p)
            self.shared = None
            self.restarts += 1
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
