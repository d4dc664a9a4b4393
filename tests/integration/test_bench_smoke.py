"""test_bench_smoke.py — `bench/bench_peer.py --smoke` (issue 10, item 6) runs
end to end: an ippc cluster and, when Debian's python3-ipyparallel and
python3-numpy are installed, an IPython Parallel cluster beside it, tiny sizes,
one repetition.  Asserts that the table and its JSON have every row, that every
figure is a positive number, that the arrays pulled back equal the ones pushed
(the bench compares them and records "checks"), that the limits were measured,
and that nothing the bench started is left running.  Never asserts speed.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import harness
from harness import ROOT, check

BENCH = os.path.join(ROOT, "bench", "bench_peer.py")

ROWS = ("startup", "apply_rtt", "execute_all", "tasks", "map",
        "push_all_small", "pull_all_raw_small", "pull_all_typed_small",
        "pull_all_multipart_small",
        "push_all_large", "pull_all_raw_large", "pull_all_typed_large",
        "pull_all_multipart_large",
        "scatter_large", "gather_large",
        "controller_pss_idle", "engines_pss_idle", "controller_pss_after", "engines_pss_after",
        "support_pss_idle", "support_pss_after")
ARRAY_CHECKS = ("ippc pull (raw GETs) gives the pushed array",
                "ippc pull (?format=typed) gives the pushed array",
                "ippc pull (multipart) gives the pushed array",
                "ippc gather gives the scattered array")
IPP_CHECKS = ("IPP pull gives the pushed array", "IPP gather gives the scattered array")


def positive(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def test_bench_peer_smoke(_cluster):
    # Everything the bench starts inherits this marker: the tracker finds
    # (and kills) whatever is left, and the runner's sweep would too.
    marker = tempfile.mkdtemp(prefix="ippc-itest-smoke-")
    tracker = harness.ProcessTracker(marker)
    out = os.path.join(marker, "peer-smoke.json")
    env = dict(os.environ, IPPC_SMOKE_MARKER=marker, BENCH_PEER_BUDGET="150")
    started = time.time()
    try:
        try:
            p = subprocess.run([sys.executable, BENCH, "--smoke", "--json", out], cwd=ROOT,
                               env=env, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=200, start_new_session=True)
        except subprocess.TimeoutExpired as e:
            raise harness.Failure("bench_peer.py --smoke did not finish within 200 s:\n%s"
                                  % (e.stderr or b"")[-3000:].decode("utf-8", "replace"))
        stdout = p.stdout.decode("utf-8", "replace")
        stderr = p.stderr.decode("utf-8", "replace")
        text = "exit %d\n--- stdout\n%s\n--- stderr\n%s" % (p.returncode, stdout[-4000:],
                                                            stderr[-3000:])
        left = tracker.all_alive()
        if left:
            tracker.kill_all(grace=5)
            raise harness.Failure("bench_peer left processes running: %s\n%s"
                                  % (harness.describe(left), text))
        check(p.returncode == 0, "bench_peer.py --smoke failed: " + text)
        check(os.path.exists(out), "no JSON written: " + text)
        with open(out) as f:
            doc = json.load(f)
        check(doc.get("mode") == "smoke" and not doc.get("problems"),
              "mode/problems: %s\n%s" % (doc.get("mode"), doc.get("problems")))
        rows = {r["key"]: r for r in doc["rows"]}
        missing = [k for k in ROWS if k not in rows]
        check(not missing, "rows missing from the JSON: %s\n%s" % (missing, text))
        for k in ROWS:
            check(rows[k]["metric"] in stdout, "row %r not in the printed table\n%s" % (k, text))
        ipp = doc.get("ipp_version") is not None
        for k in ROWS:
            check(positive(rows[k]["ippc"]), "ippc %s is not a positive number: %r"
                  % (k, rows[k]))
            if ipp:
                check(positive(rows[k]["ipp"]), "IPython Parallel %s is not a positive number: %r"
                      % (k, rows[k]))
                check(positive(rows[k]["ratio"]), "%s: no ratio: %r" % (k, rows[k]))
        if not ipp:
            check("not installed" in stdout, "IPython Parallel missing but the table does not "
                  "say 'not installed'\n" + text)
        for k in ROWS:
            if rows[k]["array_bytes"]:
                check(positive(rows[k]["share_pct"]), "%s: no share of the loopback limit: %r"
                      % (k, rows[k]))
        checks = doc.get("checks") or {}
        for name in ARRAY_CHECKS + (IPP_CHECKS if ipp else ()):
            check(checks.get(name) is True, "check %r: %r (all: %s)" % (name, checks.get(name),
                                                                        checks))
        limits = doc.get("limits") or {}
        check(len(limits) == 2, "limits for 2 sizes expected: %s" % limits)
        for size, lim in limits.items():
            for what in ("loopback", "memcpy", "mpi_bcast"):
                check(positive((lim.get(what) or {}).get("mb_s")),
                      "limit %s for %s bytes not measured: %s" % (what, size, lim))
            check(lim["mpi_bcast"].get("check") == "ok", "MPI_Ibcast delivered wrong bytes")
        note = ("IPython Parallel %s beside ippc" % doc["ipp_version"] if ipp
                else "IPython Parallel not installed: ippc half only")
        return ["%s; bench_peer --smoke took %.1f s" % (note, time.time() - started)]
    finally:
        tracker.kill_all(grace=3)
        if not os.environ.get("IPPC_TEST_KEEP"):
            shutil.rmtree(marker, ignore_errors=True)


TESTS = [("bench_peer_smoke", test_bench_peer_smoke, "own")]
