#!/usr/bin/python3
"""bench_rest_json.py — big and hostile REST bodies (issue 8): one controller
plus `mpiexec.mpich -n 4` engines (tests/integration/harness.py's Cluster).

    BUILD=build /usr/bin/python3 bench/bench_rest_json.py      (run by scripts/run-bench)

Prints one line per figure (bench/NOTES.md has the figures before and after
the changes of issue 8):

  (1) PUT vars of a JSON list of N one-digit integers (N = 8e6: 16 MB; and
      32M - 8: the 64 MB of the issue), while another thread polls
      GET /api/v1/info every 50 ms: the push's status and wall time, the
      longest /info answer during it, and the controller's VmRSS before,
      at its peak (VmHWM) and 2 s after;
  (2) eight clients each upload 60 MiB without a token, all at once: the
      answers and the growth of the controller's VmRSS (sampled every 10 ms).

The controller runs with the default --max-held-mb (2048), so the 64 MB push
is refused (413, over the decode cap) — BENCH_REST_HELD_MB raises it.
Everything started is stopped at the end, also on errors.
"""

import os
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
import harness  # noqa: E402

MIB = 1 << 20


def status_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def push_while_polling(c, n):
    body = ("[" + ",".join(str(i % 10) for i in range(n)) + "]").encode()
    pid = c.controller.pid
    before = status_kb(pid, "VmRSS")
    stop = threading.Event()
    latencies = []
    ages = []

    def poll():
        # /info's answer time says whether REST was stalled; the engines'
        # heartbeat_age (time since the hub last took a heartbeat: about the
        # 1 s period when nothing holds the hub) says whether heartbeats were.
        while not stop.is_set():
            t = time.time()
            c.api.get("/api/v1/info")
            latencies.append(time.time() - t)
            r = c.api.get("/api/v1/engines")
            if r.status == 200 and isinstance(r.body, dict):
                ages.extend(e.get("heartbeat_age", 0) for e in r.body.get("engines", [])
                            if e.get("state") != "dead")
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    t = time.time()
    r = c.api.call("PUT", "/api/v1/views/all/vars/benchjson", raw=body)
    took = time.time() - t
    stop.set()
    poller.join()
    time.sleep(2)
    c.api.post("/api/v1/views/all/execute", {"code": "benchjson = nil collectgarbage()"})
    print("push of %d integers (%.0f MB of JSON): HTTP %d in %.2f s; longest GET /info "
          "%.3f s (%d polls); longest heartbeat age %.2f s (period 1 s); RSS %.0f MiB before, "
          "peak %.0f MiB, %.0f MiB 2 s after"
          % (n, len(body) / 1e6, r.status, took, max(latencies), len(latencies),
             max(ages) if ages else -1,
             before / 1024, status_kb(pid, "VmHWM") / 1024, status_kb(pid, "VmRSS") / 1024),
          flush=True)


def unauthenticated_uploads(c):
    host, port = c.api.url.split("//", 1)[1].rsplit(":", 1)
    pid = c.controller.pid
    before = status_kb(pid, "VmRSS")
    peak = [before]
    answers = []
    done = threading.Event()

    def upload():
        with socket.create_connection((host, int(port)), timeout=60) as s:
            s.sendall(b"PUT /api/v1/views/all/vars/x HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: %d\r\n\r\n" % (60 * MIB))
            try:
                for _ in range(60):
                    s.sendall(b"\0" * MIB)
            except OSError:
                pass
            answers.append(s.recv(4096).split(b" ", 2)[1].decode())

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], status_kb(pid, "VmRSS"))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t = time.time()
    threads = [threading.Thread(target=upload) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    done.set()
    sampler.join()
    print("8 unauthenticated 60 MiB uploads: answers %s in %.2f s; controller RSS +%.1f MiB"
          % (",".join(sorted(answers)), time.time() - t, (peak[0] - before) / 1024), flush=True)


def main():
    held = os.environ.get("BENCH_REST_HELD_MB")
    c = harness.Cluster(n=4, profile="benchrest",
                        controller_args=["--max-held-mb", held] if held else [])
    try:
        c.start()
        push_while_polling(c, 8 * 1000 * 1000)
        push_while_polling(c, 32 * MIB - 8)
        unauthenticated_uploads(c)
    finally:
        problems = c.stop()
    if problems:
        print("bench_rest_json: " + "; ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
