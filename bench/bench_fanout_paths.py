#!/usr/bin/python3
"""bench_fanout_paths.py — push, scatter and gather to all 4 engines, fanned out by
MPI or sent per engine, side by side: what --fanout-min-bytes is chosen from.

    BUILD=build /usr/bin/python3 bench/bench_fanout_paths.py [N ...] [--json PATH]

Starts two ippc clusters of 4 MPI engines (tests/integration/harness.py): one
controller with `--fanout-min-bytes 0` (every push, scatter and gather of 2+
engines of the job fans out) and one with `--no-fanout` (every engine gets its
part from the controller).  For each N (float64 items, default 16 ... 10^7), it
times, alternating between the two clusters (ABBA), a raw PUT vars to all
(`application/octet-stream`), a raw scatter to all and a raw gather from all
(`Accept: application/octet-stream`), checks that the gather gives the scattered
bytes back, and prints the medians and per-engine/fan-out ratios (> 1: the
fan-out is faster).  One keep-alive connection per cluster; medians of 40
repetitions up to 10^4 items, 15 up to 2*10^5, 5 above.  Standard library only.
"""

import http.client
import json
import os
import statistics
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402


class Http:
    def __init__(self, url, token):
        host, port = url.split("//")[1].rstrip("/").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=600)
        self.token = token

    def request(self, method, path, body=None, headers=None):
        h = {"Authorization": "Bearer " + self.token}
        h.update(headers or {})
        self.conn.request(method, path, body=body, headers=h)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError("%s %s -> HTTP %d %s" % (method, path, r.status, data[:300]))
        return data


def reps_for(n):
    return 40 if n <= 10 ** 4 else 15 if n <= 2 * 10 ** 5 else 5


def main():
    args = [a for a in sys.argv[1:]]
    out = None
    if "--json" in args:
        i = args.index("--json")
        out = args[i + 1]
        del args[i:i + 2]
    sizes = [int(float(a)) for a in args] or [16, 1024, 8192, 16384, 32768, 131072, 10 ** 6,
                                              10 ** 7]
    common = ["--db", "memory", "--max-body-mb", "1024"]
    sides = {"fan": ["--fanout-min-bytes", "0"], "per": ["--no-fanout"]}
    clusters, conns, rows = {}, {}, []
    try:
        for side, extra in sides.items():
            c = harness.Cluster(n=4, profile="paths-" + side, controller_args=common + extra)
            c.start()
            clusters[side] = c
            conns[side] = Http(c.api.url, c.api.token)
        octet = {"Content-Type": "application/octet-stream"}
        for n in sizes:
            raw = struct.pack("<%dd" % n, *[float(i) for i in range(n)])
            times = {}
            for rep in range(reps_for(n)):
                order = ["fan", "per", "per", "fan"][rep % 2 * 2:rep % 2 * 2 + 2]
                for side in order:
                    h = conns[side]
                    t0 = time.perf_counter()
                    h.request("PUT", "/api/v1/views/all/vars/a?dtype=float64&shape=%d" % n, raw,
                              octet)
                    t1 = time.perf_counter()
                    h.request("POST", "/api/v1/views/all/scatter?name=s&dtype=float64&shape=%d"
                              % n, raw, octet)
                    t2 = time.perf_counter()
                    got = h.request("GET", "/api/v1/views/all/gather/s", None,
                                    {"Accept": "application/octet-stream"})
                    t3 = time.perf_counter()
                    if got != raw:
                        raise RuntimeError("%s: gather of %d items differs" % (side, n))
                    for op, dt in (("push", t1 - t0), ("scatter", t2 - t1), ("gather", t3 - t2)):
                        times.setdefault((op, side), []).append(dt)
            row = {"n": n, "bytes": 8 * n}
            text = []
            for op in ("push", "scatter", "gather"):
                fan = statistics.median(times[(op, "fan")]) * 1e3
                per = statistics.median(times[(op, "per")]) * 1e3
                row[op] = {"fanout_ms": round(fan, 3), "per_engine_ms": round(per, 3),
                           "ratio": round(per / fan, 2)}
                text.append("%s %.2f / %.2f ms (%.2fx)" % (op, fan, per, per / fan))
            rows.append(row)
            print("%9d B: %s" % (8 * n, "; ".join(text)), flush=True)
    finally:
        for c in clusters.values():
            c.stop()
    if out:
        with open(out, "w") as f:
            json.dump({"rows": rows, "load": os.getloadavg()}, f, indent=1)


if __name__ == "__main__":
    main()
