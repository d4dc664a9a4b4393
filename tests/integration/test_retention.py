"""test_retention.py — what the controller keeps of answers, and arrays too
large for an engine (issue 10, items 4 and 5).

- A raw pull's array is not held once it was answered: 200 rounds of raw
  GETs of a 1e6 float64 array from 4 engines leave the controller's RSS
  (VmRSS) within a few array sizes of where it was after the first rounds.
- Results are kept within --keep-results-mb: non-blocking pulls beyond it
  evict the oldest, whose id then answers 410 gone saying so; a blocking
  pull is released once answered (410 gone, "delivered").
- An array larger than an engine takes in one message fails with
  TooLargeError and nothing else is disturbed (the engine keeps its
  connection, its variables and its place); the same for a result larger
  than the controller takes, and for an array the engine cannot allocate.
"""

import concurrent.futures
import http.client
import json
import struct
import time
import urllib.parse

from harness import Cluster, check, expect, expect_error, proc_rss_kb
from common import view

MIB = 1 << 20
OCTET = {"Content-Type": "application/octet-stream"}
RAW_ACCEPT = {"Accept": "application/octet-stream"}
N = 1000 * 1000          # float64 elements: 8 MB
ROUNDS = 200
WARM_ROUNDS = 10
RSS_GROWTH_MB = 120      # "within a few array sizes" (one array: 8 MB; 4 per round)


class Conn:
    """One keep-alive HTTP connection (the harness opens one per call)."""

    def __init__(self, c):
        u = urllib.parse.urlsplit(c.api.url)
        self.h = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        self.auth = {"Authorization": "Bearer " + c.api.token}

    def get(self, path, headers=None):
        self.h.request("GET", path, headers=dict(self.auth, **(headers or {})))
        r = self.h.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()

    def close(self):
        self.h.close()


def metrics_text(c):
    r = c.api.get("/metrics")
    check(r.status == 200, "GET /metrics: %r" % r)
    return r.raw.decode()


def metric_value(text, series):
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return None


def test_raw_pull_rounds_rss(_):
    """200 rounds of 4 raw GETs (one per engine, in parallel) of a 1e6
    float64 array: every answer is the array, and the controller's RSS ends
    within RSS_GROWTH_MB of its level after WARM_ROUNDS rounds; nothing of
    the answers is kept (ippc_kept_result_bytes small)."""
    c = Cluster(n=4, profile="retain_rss")
    conns = []
    try:
        c.start()
        ids = c.ids()
        data = struct.pack("<%dd" % N, *(i * 0.5 for i in range(N)))
        r = c.api.call("PUT", view("all", "vars/rr") + "?dtype=float64", raw=data,
                       headers=OCTET, timeout=120)
        expect(r, 200, "raw push of 1e6 float64 to all")
        conns = [Conn(c) for _ in ids]
        pool = concurrent.futures.ThreadPoolExecutor(len(ids))

        def pull(k):
            status, hdrs, body = conns[k].get(view(str(ids[k]), "vars/rr"), RAW_ACCEPT)
            return status, hdrs, body

        def round_trip(check_data):
            for status, hdrs, body in pool.map(pull, range(len(ids))):
                check(status == 200 and hdrs.get("content-type", "").startswith(
                    "application/octet-stream"), "raw GET: %d %s %r" % (status, hdrs, body[:200]))
                check(len(body) == 8 * N, "raw GET: %d bytes, want %d" % (len(body), 8 * N))
                if check_data:
                    check(body == data, "the pulled bytes are the pushed ones")

        pid = c.controller.pid
        t0 = time.time()
        for i in range(WARM_ROUNDS):
            round_trip(i == 0)
        rss_warm = proc_rss_kb(pid) / 1024.0
        peak = rss_warm
        for i in range(ROUNDS):
            round_trip(i % 50 == 0)
            if i % 10 == 0:
                peak = max(peak, proc_rss_kb(pid) / 1024.0)
        rss_end = proc_rss_kb(pid) / 1024.0
        elapsed = time.time() - t0
        text = metrics_text(c)
        kept = metric_value(text, "ippc_kept_result_bytes")
        delivered = metric_value(text, 'ippc_requests_forgotten_total{reason="delivered"}')
        print("    %d rounds of 4 raw GETs of 8 MB in %.1f s (%.0f MB/s); controller RSS "
              "after %d rounds %.1f MB, peak %.1f MB, end %.1f MB; kept %s bytes"
              % (ROUNDS + WARM_ROUNDS, elapsed, (ROUNDS + WARM_ROUNDS) * 4 * 8 * N / 1e6 / elapsed,
                 WARM_ROUNDS, rss_warm, peak, rss_end, kept))
        check(rss_end < rss_warm + RSS_GROWTH_MB,
              "controller RSS grew from %.1f MB to %.1f MB over %d raw pull rounds (bound +%d MB)"
              % (rss_warm, rss_end, ROUNDS, RSS_GROWTH_MB))
        check(kept is not None and kept < 1 * MIB,
              "answered raw pulls are not kept: ippc_kept_result_bytes %s" % kept)
        check(delivered is not None and delivered >= 4 * (ROUNDS + WARM_ROUNDS),
              "every blocking pull was released once answered: %s" % delivered)
        pool.shutdown()
    finally:
        for h in conns:
            h.close()
        problems = c.stop()
    check(not problems, "; ".join(problems))


def test_budget_evicts_oldest(_):
    """--keep-results-mb 20: three non-blocking pulls of an 8 MB array keep
    the last two; the first answers 410 gone naming --keep-results-mb, the
    others their arrays.  A blocking pull's id answers 410 "delivered"."""
    c = Cluster(n=1, profile="retain_budget", controller_args=["--keep-results-mb", "20"])
    try:
        c.start()
        (e,) = c.ids()
        data = struct.pack("<%dd" % N, *(float(i) for i in range(N)))
        expect(c.api.call("PUT", view(str(e), "vars/b") + "?dtype=float64", raw=data,
                          headers=OCTET, timeout=120), 200, "raw push")
        rids = []
        for k in range(3):
            r = expect(c.api.get(view(str(e), "vars/b") + "?block=false"), (200, 202),
                       "non-blocking pull %d" % k)
            rids.append(r["request"])
            # finished before the next one, so "oldest" is well defined
            expect(c.api.get("/api/v1/requests/%d?wait=60&format=typed" % r["request"]), 200,
                   "pull %d finished" % k)
        err = expect_error(c.api.get("/api/v1/requests/%d" % rids[0]), 410, "gone",
                           "the oldest pull, past --keep-results-mb")
        check("--keep-results-mb" in err["message"] and str(rids[0]) in err["message"],
              "the 410 says why: %r" % err)
        for rid in rids[1:]:
            body = expect(c.api.get("/api/v1/requests/%d?format=typed" % rid), 200,
                          "a later pull is kept")
            value = body["results"][0]
            check(value["dtype"] == "float64" and value["shape"] == [N],
                  "pull %d answers its array: %s" % (rid, json.dumps(value)[:200]))
        text = metrics_text(c)
        kept = metric_value(text, "ippc_kept_result_bytes")
        check(kept is not None and kept <= 20 * MIB, "kept within the budget: %s" % kept)
        check(metric_value(text, 'ippc_requests_forgotten_total{reason="budget"}') >= 1,
              "the eviction is counted:\n%s" % text)
        # A blocking pull is answered, then released.
        r = c.api.get(view(str(e), "vars/b"), headers=RAW_ACCEPT)
        check(r.status == 200 and len(r.raw) == 8 * N, "blocking raw pull: %r" % r)
        rid = int(r.headers.get("X-Ippc-Request"))
        err = expect_error(c.api.get("/api/v1/requests/%d" % rid), 410, "gone",
                           "a blocking pull after its answer")
        check("delivered" in err["message"], "the 410 says it was delivered: %r" % err)
        expect_error(c.api.get("/api/v1/requests/%d" % (rid + 1000)), 404, "not_found",
                     "an id never handed out is still 404")
    finally:
        problems = c.stop()
    check(not problems, "; ".join(problems))


def test_too_large_for_an_engine(_):
    """Engines that take at most 12 MiB per message (ippc-engine
    --max-message-mb 12): a 16 MiB raw push fails on every target with
    TooLargeError, unsent, while a scatter of it (8 MiB each) goes through;
    the engines keep their connections (same registration) and variables.  A result larger than
    the controller takes (--max-held-mb 64) fails the same way on the
    engine, and an array the engine cannot allocate is a clear error."""
    c = Cluster(n=2, profile="retain_large", engine_args=["--max-message-mb", "12"],
                controller_args=["--max-held-mb", "64"])
    try:
        c.start()
        ids = c.ids()
        before = {e["id"]: (e["pid"], e["registered"]) for e in c.api.engines()}
        expect(c.api.post(view("all", "execute"), {"code": "keep = 42"}), 200, "a variable")
        big = b"\0" * (16 * MIB)
        r = c.api.call("PUT", view("all", "vars/big") + "?dtype=float64", raw=big, headers=OCTET,
                       timeout=120)
        body = expect(r, 200, "a 16 MiB push to engines that take 12 MiB")
        check(body["status"] == "error" and len(body["results"]) == len(ids),
              "the push fails: %s" % json.dumps(body)[:600])
        for res in body["results"]:
            check(res.get("ename") == "TooLargeError" and "--max-message-mb" in res.get("evalue", ""),
                  "each target says why: %s" % json.dumps(res)[:400])
        # The same bytes scattered: 8 MiB per engine fits.
        r = c.api.call("POST", view("all", "scatter") + "?name=part&dtype=float64", raw=big,
                       headers=OCTET, timeout=120)
        expect(r, 200, "a scatter whose parts fit")
        # Results larger than the controller takes (64 MiB): the engine says so.
        r = c.api.post(view(str(ids[0]), "execute"), {"code": "huge = nd.zeros({10000000})"})
        expect(r, 200, "an 80 MB array made on the engine")
        r = c.api.get(view(str(ids[0]), "vars/huge"), headers=RAW_ACCEPT)
        err = expect_error(r, 422, "invalid_value", "pulling 80 MB through a 64 MiB controller")
        check("TooLargeError" in err["message"] or "controller takes" in err["message"],
              "the error says why: %r" % err)
        r = c.api.post(view(str(ids[0]), "execute"), {"code": "return nd.zeros({2^62})"})
        body = expect(r, 200, "an array the engine cannot allocate")
        res = body["results"][0]
        check(res.get("status") == "error" and "too large" in res.get("evalue", ""),
              "a clear error: %s" % json.dumps(res)[:400])
        # Nothing else was disturbed.
        after = {e["id"]: (e["pid"], e["registered"]) for e in c.api.engines()}
        check(after == before and all(e["state"] != "dead" for e in c.api.engines()),
              "the engines kept their connections: %s -> %s" % (before, after))
        r = c.api.post(view("all", "execute"),
                       {"code": "return keep + #part + (huge and #huge or 0)"})
        body = expect(r, 200, "variables survive")
        half = 16 * MIB // 8 // 2
        check([x.get("value") for x in body["results"]] == [42 + half + 10000000, 42 + half],
              "keep, part and huge are all there: %s" % json.dumps(body)[:400])
        small = struct.pack("<4d", 1, 2, 3, 4)
        expect(c.api.call("PUT", view("all", "vars/s") + "?dtype=float64", raw=small,
                          headers=OCTET), 200, "a small push still works")
    finally:
        problems = c.stop()
    check(not problems, "; ".join(problems))


TESTS = [
    ("retention_raw_pull_rounds_rss", test_raw_pull_rounds_rss, "own"),
    ("retention_budget_evicts_oldest", test_budget_evicts_oldest, "own"),
    ("retention_too_large_for_an_engine", test_too_large_for_an_engine, "own"),
]
