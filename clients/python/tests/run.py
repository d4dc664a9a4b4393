"""Runs the Python SDK's tests with pytest and ends with one line
`python-sdk: N passed, N failed` (what scripts/run-tests reads).

    /usr/bin/python3 clients/python/tests/run.py [pytest arguments...]

A test that errors in set-up (e.g. "not available: no Python engines") or is
skipped counts as failed: a check that did not run must not pass silently.
"""

import os
import shutil
import signal
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


class Count:
    """Outcome of every test, from its reports."""

    def __init__(self):
        self.outcome = {}

    def pytest_runtest_logreport(self, report):
        prev = self.outcome.get(report.nodeid)
        if report.failed or report.skipped:
            self.outcome[report.nodeid] = "failed"
        elif report.when == "call" and prev is None:
            self.outcome[report.nodeid] = "passed"

    def pytest_collectreport(self, report):
        if report.failed:
            self.outcome[report.nodeid or "collection"] = "failed"


def _terminate(signum, frame):
    # SIGTERM (run-tests' time limit) as Ctrl-C: pytest then runs the
    # fixtures' teardown, which stops the clusters the tests started.
    raise KeyboardInterrupt("SIGTERM")


def main(argv):
    signal.signal(signal.SIGTERM, _terminate)
    count = Count()
    # A private temporary folder: pytest's shared /tmp/pytest-of-USER rotation
    # could remove the folder of a cluster another session is using.
    base = tempfile.mkdtemp(prefix="ippc-python-sdk-")
    try:
        rc = pytest.main(["-q", "-p", "no:cacheprovider", "-rfEs", "--basetemp", base, HERE]
                         + argv, plugins=[count])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    passed = sum(1 for v in count.outcome.values() if v == "passed")
    failed = sum(1 for v in count.outcome.values() if v == "failed")
    if rc not in (0, 1) and failed == 0:
        failed = 1  # pytest itself broke (usage error, internal error, interrupted)
    for nodeid, v in sorted(count.outcome.items()):
        if v == "failed":
            print("python-sdk FAILED: %s" % nodeid)
    print("python-sdk: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
