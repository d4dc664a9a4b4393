#!/usr/bin/python3
"""bench_ws.py — the client WebSocket /ws against REST (issue 5): one cluster,
a controller plus `mpiexec.mpich -n 4` engines.

    BUILD=build /usr/bin/python3 bench/bench_ws.py        (run by scripts/run-bench)

Standard library only: the cluster start/stop, HTTP client and statistics are
bench_seed.py's, the WebSocket client is tests/integration/wsclient.py.
Prints one line per figure:

  (1) round trip of one blocking task on one engine: `return 1` executed on
      engine 0 over the WS request channel ({"op":"execute","targets":"0",...}
      → its reply) and over REST (POST /api/v1/views/0/execute on a keep-alive
      connection), 300 of each in alternating blocks of 50: median, p90 and
      the ratio WS / REST.  The WS socket is unsubscribed from every topic, so
      it carries only the requests and their replies;
  (2) 10,000 `submit` messages (one no-op task each) pipelined on one socket:
      all sent without waiting, while a reader thread takes the replies and
      events, then the wait for the 10,000 task.completed events: tasks/s from
      the first send to the last completion, and the send and acknowledge
      times.  The socket is subscribed to the "tasks" topic only.  For
      reference, the same tasks as one REST batch (one POST of an array),
      completions counted the same way; median of 3 runs each, alternated.

Results are checked (status 200/"ok" answers, every reply 202 with an id,
every task completed with its value).  Everything started is stopped at the
end, also on errors and SIGTERM/SIGINT (bench_seed.Cluster.stop).  The run is
bounded by BENCH_WS_BUDGET seconds (default 90).

Environment: BUILD, IPPC_BENCH_MPIEXEC, BENCH_ENGINES, BENCH_KEEP (as in
bench_seed.py), BENCH_WS_BUDGET, BENCH_WS_N (pipelined submits, default 10000),
BENCH_WS_RUNS (round trips per transport, default 300).
"""

import http.client
import json
import os
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
import bench_seed as bs  # noqa: E402  (cluster start/stop, HTTP client, statistics)
from bench_seed import BenchError, Stop, log, median, pct, ms  # noqa: E402
from wsclient import Closed, WebSocket, WebSocketError  # noqa: E402

BUDGET = float(os.environ.get("BENCH_WS_BUDGET", "90"))
bs.BUDGET = BUDGET
N_SUBMITS = int(os.environ.get("BENCH_WS_N", "10000"))
RUNS = int(os.environ.get("BENCH_WS_RUNS", "300"))
BLOCK = 50


def ws_connect(cluster):
    info = cluster.info
    url = info.get("ws_url") or info["url"].replace("http://", "ws://", 1) + "/ws"
    ws = WebSocket.connect(url, token=info["token"], timeout=30)
    first = ws.recv_json(timeout=30)
    if first.get("type") != "snapshot":
        raise BenchError("the first WS message is not the snapshot: %s" % json.dumps(first)[:300])
    return ws


def wait_reply(ws, rid, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        msg = ws.recv_json(timeout=max(0.001, deadline - time.monotonic()))
        if msg.get("type") == "reply" and msg.get("id") == rid:
            return msg
        if msg.get("type") in ("error", "slow_consumer"):
            raise BenchError("WS: %s" % json.dumps(msg)[:300])


def bench_round_trip(cluster):
    ws = ws_connect(cluster)
    c = cluster.client
    try:
        ws.send_json({"op": "unsubscribe", "topics": ["engines", "tasks", "stdout"]})
        body = json.dumps({"code": "return 1"})
        counter = [0]

        def over_ws():
            counter[0] += 1
            ws.send_json({"op": "execute", "id": counter[0], "targets": "0",
                          "code": "return 1"})
            reply = wait_reply(ws, counter[0])
            if reply.get("status") != 200 or reply.get("body", {}).get("status") != "ok":
                raise BenchError("WS execute: %s" % json.dumps(reply)[:300])

        def over_rest():
            status, data = c.raw("POST", "/api/v1/views/0/execute", body)
            if status != 200:
                raise BenchError("REST execute: HTTP %d %s" % (status, data[:300]))

        for _ in range(20):
            over_ws()
            over_rest()
        ws_times, rest_times = [], []
        while len(ws_times) < RUNS and bs.left() > 20:
            ws_times += bs.timed(over_ws, BLOCK)
            rest_times += bs.timed(over_rest, BLOCK)
        print("execute on engine 0, WS request channel: median %s, p90 %s  (%d runs)"
              % (ms(median(ws_times)), ms(pct(ws_times, 90)), len(ws_times)))
        print("execute on engine 0, REST keep-alive:    median %s, p90 %s  (%d runs)"
              % (ms(median(rest_times)), ms(pct(rest_times, 90)), len(rest_times)))
        print("  WS / REST round trip: %.2fx (median), %.2fx (p90)"
              % (median(ws_times) / median(rest_times), pct(ws_times, 90) / pct(rest_times, 90)))
    finally:
        ws.close(timeout=2)


class Collector(threading.Thread):
    """Reads one socket until n task.completed events of the given ids came
    (ids are learnt from the submit replies as they arrive)."""

    def __init__(self, ws, n):
        super().__init__(daemon=True)
        self.ws, self.n = ws, n
        self.replies = {}        # client id -> task id
        self.completed = {}      # task id -> event
        self.acked_at = None     # when the last reply arrived
        self.done_at = None
        self.error = None

    def run(self):
        try:
            while len(self.completed) < self.n or len(self.replies) < self.n:
                msg = self.ws.recv_json(timeout=60)
                kind = msg.get("type")
                if kind == "reply":
                    if msg.get("status") != 202 or not isinstance(msg.get("body", {}).get("id"),
                                                                   int):
                        raise BenchError("submit reply: %s" % json.dumps(msg)[:300])
                    self.replies[msg["id"]] = msg["body"]["id"]
                    if len(self.replies) == self.n:
                        self.acked_at = time.monotonic()
                elif kind == "task.completed":
                    self.completed[msg["task"]] = msg
                elif kind in ("error", "slow_consumer"):
                    raise BenchError("WS: %s" % json.dumps(msg)[:300])
            self.done_at = time.monotonic()
        except (BenchError, TimeoutError, WebSocketError, OSError, ValueError) as e:
            self.error = e


def pipelined_ws(cluster, n):
    """One run of n pipelined submits; returns (total, sent, acknowledged)
    seconds from the first send."""
    ws = ws_connect(cluster)
    try:
        ws.send_json({"op": "subscribe", "topics": ["tasks"]})
        # Only this socket's tasks run on the cluster now, so every
        # task.completed seen is one of ours (checked against the replies).
        collector = Collector(ws, n)
        collector.start()
        frames = [json.dumps({"op": "submit", "id": i, "task": {"code": "return %d" % i}},
                             separators=(",", ":")) for i in range(n)]
        t0 = time.monotonic()
        for text in frames:
            ws.send_text(text)
        sent = time.monotonic()
        collector.join(timeout=max(5, bs.left() - 5))
        if collector.is_alive():
            raise BenchError("%d submits: only %d replies and %d completions before the budget"
                             % (n, len(collector.replies), len(collector.completed)))
        if collector.error is not None:
            raise BenchError("%d submits: %s" % (n, collector.error))
        ours = set(collector.replies.values())
        wrong = [i for i, tid in collector.replies.items()
                 if collector.completed.get(tid, {}).get("state") != "completed"
                 or collector.completed[tid].get("result") != i]
        if len(ours) != n or wrong:
            raise BenchError("%d submits: %d distinct ids, %d wrong results (e.g. %s)"
                             % (n, len(ours), len(wrong),
                                [collector.completed.get(collector.replies[i]) for i in wrong[:2]]))
        return collector.done_at - t0, sent - t0, collector.acked_at - t0
    finally:
        ws.close(timeout=2)


def batch_rest(cluster, n):
    """The same n tasks as one POST /api/v1/tasks array; completions are
    counted on a WS subscribed to "tasks" (as for the WS run).  Seconds."""
    ws = ws_connect(cluster)
    try:
        ws.send_json({"op": "subscribe", "topics": ["tasks"]})
        ws.send_json({"op": "ping"})
        while ws.recv_json(timeout=30).get("type") != "pong":
            pass
        body = json.dumps([{"code": "return %d" % i} for i in range(n)])
        t0 = time.monotonic()
        ids = set(cluster.client.json("POST", "/api/v1/tasks", body, want=202)["ids"])
        done = 0
        while done < len(ids):
            msg = ws.recv_json(timeout=60)
            if msg.get("type") == "task.completed" and msg.get("task") in ids:
                done += 1
        return time.monotonic() - t0
    finally:
        ws.close(timeout=2)


def bench_pipelined_submits(cluster, n, reps=3):
    ws_runs, rest_runs = [], []
    for _ in range(reps):
        if bs.left() < 15:
            break
        ws_runs.append(pipelined_ws(cluster, n))
        if bs.left() < 10:
            break
        rest_runs.append(batch_rest(cluster, n))
    total = median([r[0] for r in ws_runs])
    print("%d submits pipelined on one WS: %.0f tasks/s  (median of %d runs: sent in %.2f s, "
          "all acknowledged after %.2f s, all completed after %.2f s; range %.0f-%.0f tasks/s)"
          % (n, n / total, len(ws_runs), median([r[1] for r in ws_runs]),
             median([r[2] for r in ws_runs]), total, n / max(r[0] for r in ws_runs),
             n / min(r[0] for r in ws_runs)))
    if rest_runs:
        print("the same %d tasks as one REST batch (POST /api/v1/tasks array): %.0f tasks/s "
              "(median of %d)" % (n, n / median(rest_runs), len(rest_runs)))
        print("  WS pipelined / REST batch: %.2fx tasks/s" % (median(rest_runs) / total))


def on_signal(signum, frame):
    raise Stop("signal %d" % signum)


def main():
    sys.stdout.reconfigure(line_buffering=True)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(BUDGET) + 15)
    cluster = bs.Cluster()
    rc = 0
    try:
        cluster.start()
        print("ippc bench_ws: %d engines (mpiexec.mpich), controller at %s, %d CPUs"
              % (bs.N_ENGINES, cluster.info["url"], os.cpu_count() or 0))
        bench_round_trip(cluster)
        if bs.left() > 15:
            bench_pipelined_submits(cluster, N_SUBMITS)
        else:
            print("pipelined submits: skipped (time budget)")
    except (BenchError, OSError, http.client.HTTPException, WebSocketError, Closed) as e:
        print("bench_ws failed: %s" % e, file=sys.stderr)
        rc = 1
    except Stop as e:
        print("bench_ws interrupted (%s)" % e, file=sys.stderr)
        rc = 130
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        forced, survivors = cluster.stop()
        if survivors:
            print("bench_ws: processes still alive after SIGKILL: %s" % survivors,
                  file=sys.stderr)
            rc = rc or 1
        else:
            print("stopped controller, mpiexec and %d engine pids%s; no process left"
                  % (len(cluster.engine_pids), " (%d needed SIGKILL)" % len(forced)
                     if forced else ""))
        log("total %.1f s" % (time.monotonic() - bs.START))
    return rc


if __name__ == "__main__":
    sys.exit(main())
