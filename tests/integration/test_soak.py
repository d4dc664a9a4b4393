"""test_soak.py — the soak (tests/soak/soak.py) in short, as one integration
test: its own cluster, good and hostile clients and engine churn for
IPPC_SOAK_SHORT_SECONDS (default 25) seconds.  Runs it as a subprocess and
fails with the soak's FAIL lines; `make soak` is the long run."""

import os
import signal
import subprocess
import sys
import tempfile

import harness
from harness import Failure

SOAK = os.path.join(harness.ROOT, "tests", "soak", "soak.py")
SECONDS = int(os.environ.get("IPPC_SOAK_SHORT_SECONDS", "25"))
# Under the runner's 240 s per test: 25 s of load, start, the end of slow
# requests and the shutdown fit well inside.
LIMIT = int(os.environ.get("IPPC_SOAK_SHORT_LIMIT", "220"))


def _stop(p):
    """SIGTERM (the soak stops its cluster), then SIGKILL; returns the output."""
    if p.poll() is None:
        harness.signal_pid(p.pid, signal.SIGTERM)
    try:
        out, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        harness.signal_group(p.pid, signal.SIGKILL)
        out, _ = p.communicate(timeout=10)
    return out or b""


def _sweep(marker_file):
    """Kills (by pid) whatever of the soak's cluster is still running;
    returns a description of it."""
    try:
        with open(marker_file) as f:
            marker = f.read().strip()
    except OSError:
        return ""
    if not marker:
        return ""
    left = harness.processes_with_marker(marker)
    for pid in left:
        harness.signal_pid(pid, signal.SIGKILL)
    harness.wait_gone(left, 5)
    return harness.describe(left) if left else ""


def test_soak_short(_unused=None):
    fd, marker_file = tempfile.mkstemp(prefix="ippc-soak-marker-")
    os.close(fd)
    p = subprocess.Popen([sys.executable, SOAK, "--seconds", str(SECONDS),
                          "--marker-file", marker_file],
                         cwd=harness.ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    timed_out = False
    out = b""
    try:
        out, _ = p.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        timed_out = True
        out = _stop(p)
    finally:
        if p.poll() is None:   # the runner's own time limit interrupted us
            out = _stop(p)
        left = _sweep(marker_file)
        os.unlink(marker_file)
    text = out.decode("utf-8", "replace")
    lines = text.splitlines()
    fails = [l for l in lines if l.startswith("FAIL ")]
    summary = [l for l in lines if l.startswith("soak: ") and " passed, " in l]
    figures = [l for l in lines if l.startswith("controller RSS:")]
    problems = []
    if timed_out:
        problems.append("the soak did not end within %d s" % LIMIT)
    if left:
        problems.append("the soak left processes behind (killed now): %s" % left)
    if p.returncode != 0 or not summary or problems:
        detail = "\n".join(problems + fails) or "\n".join(lines[-30:])
        raise Failure("%s (exit %s)\n%s" % (summary[-1] if summary else "soak: no summary",
                                             p.returncode, detail))
    return figures + summary


TESTS = [
    ("soak_short", test_soak_short, "own"),
]
