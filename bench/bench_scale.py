#!/usr/bin/python3
"""bench_scale.py — how many engines one controller holds, on one machine.

    BUILD=build /usr/bin/python3 bench/bench_scale.py     (part of `make bench`)

Starts a cluster with `ippc cluster start --daemonize -n 64` and adds three
more MPI jobs of 64 with `ippc cluster add -n 64` (256 engines, heavily
oversubscribed on a small machine), then prints one line per figure:

  - the time each job of 64 took to register;
  - the controller's RSS, and its CPU use over BENCH_IDLE_S seconds (default
    10) while the 256 engines only send heartbeats (goal: under 2 % of one
    core);
  - one blocking `execute` of `x = 1` on all 256 (median of 5);
  - a push of 1e6 float64 (8 MB, raw bytes) to all 256 (median of 3): the
    engines are 4 MPI jobs, so the controller sends to each engine itself;
    and the same push to the 64 engines of one job, which MPI fans out;
  - the controller's RSS after the pushes.

Everything it starts is stopped at the end (`ippc cluster stop`, then any
engine pid still running, by pid).  Environment: BUILD, BENCH_SCALE_JOBS
(default 4), BENCH_SCALE_JOB_SIZE (default 64), BENCH_IDLE_S, BENCH_KEEP=1
keeps the temp folder.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", "build")
BIN = os.path.join(BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD), "bin")
CLI = os.path.join(BIN, "ippc")
JOBS = int(os.environ.get("BENCH_SCALE_JOBS", "4"))
JOB_SIZE = int(os.environ.get("BENCH_SCALE_JOB_SIZE", "64"))
IDLE_S = float(os.environ.get("BENCH_IDLE_S", "10"))


def call(url, token, method, path, body=None, raw=None, timeout=600):
    data, headers = None, {"Authorization": "Bearer " + token}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif raw is not None:
        data = raw
        headers["Content-Type"] = "application/octet-stream"
    req = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def proc_cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def line(name, value):
    print("  %-58s %s" % (name, value), flush=True)


def main():
    tmp = tempfile.mkdtemp(prefix="ippc-bench-scale-")
    env = dict(os.environ, IPPC_DIR=tmp, OPENBLAS_NUM_THREADS="1")
    cli = lambda *args, **kw: subprocess.run([CLI] + list(args), env=env, cwd=tmp,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             **kw)
    pids = set()
    total = JOBS * JOB_SIZE
    rc = 0
    try:
        print("bench_scale: %d engines (%d MPI jobs of %d) on %d cores"
              % (total, JOBS, JOB_SIZE, os.cpu_count()), flush=True)
        t = time.monotonic()
        p = cli("cluster", "start", "-n", str(JOB_SIZE), "--daemonize", "--db", "memory",
                "--timeout", "600", timeout=700)
        if p.returncode != 0:
            raise RuntimeError("cluster start: %s" % p.stderr.decode()[-2000:])
        line("job 1 of %d engines registered" % JOB_SIZE, "%.1f s" % (time.monotonic() - t))
        info = json.load(open(os.path.join(tmp, "profile_default", "security",
                                           "ippc-client.json")))
        url, token, controller = info["url"], info["token"], info["pid"]
        for k in range(1, JOBS):
            t = time.monotonic()
            p = cli("cluster", "add", "-n", str(JOB_SIZE), "--timeout", "600", timeout=700)
            if p.returncode != 0:
                raise RuntimeError("cluster add: %s" % p.stderr.decode()[-2000:])
            line("job %d of %d engines registered" % (k + 1, JOB_SIZE),
                 "%.1f s" % (time.monotonic() - t))
        engines = call(url, token, "GET", "/api/v1/engines")["engines"]
        pids |= {e["pid"] for e in engines}
        live = [e for e in engines if e["state"] != "dead"]
        if len(live) != total:
            raise RuntimeError("%d engines live, not %d" % (len(live), total))

        time.sleep(2)
        cpu0, t0 = proc_cpu_seconds(controller), time.monotonic()
        time.sleep(IDLE_S)
        cpu = (proc_cpu_seconds(controller) - cpu0) / (time.monotonic() - t0) * 100
        line("controller CPU, idle with %d engines' heartbeats" % total,
             "%.2f %% of one core (goal < 2 %%)" % cpu)
        line("controller RSS with %d engines" % total, "%.0f MB" % proc_rss_mb(controller))

        times = []
        for _ in range(5):
            t = time.monotonic()
            r = call(url, token, "POST", "/api/v1/views/all/execute", {"code": "x = 1"})
            times.append(time.monotonic() - t)
            if r["status"] != "ok" or len(r["results"]) != total:
                raise RuntimeError("execute: %s" % str(r)[:500])
        line("execute `x = 1` on all %d (median of 5)" % total,
             "%.1f ms" % (statistics.median(times) * 1000))

        data = bytes(8 * 1000000)
        for targets, what, runs in (("all", "all %d (%d jobs: per engine)" % (total, JOBS), 3),
                                    ("0:%d" % JOB_SIZE, "the %d of one job (MPI fan-out)"
                                     % JOB_SIZE, 3)):
            times = []
            for _ in range(runs):
                t = time.monotonic()
                r = call(url, token, "PUT", "/api/v1/views/%s/vars/big?dtype=float64&shape=1000000"
                         % targets, raw=data)
                times.append(time.monotonic() - t)
                if r["status"] != "ok":
                    raise RuntimeError("push: %s" % str(r)[:500])
            line("push of 1e6 float64 (8 MB) to %s" % what,
                 "%.2f s (median of %d)" % (statistics.median(times), runs))
        line("controller RSS after the pushes", "%.0f MB" % proc_rss_mb(controller))
    except Exception as e:  # report, stop everything, fail
        print("bench_scale: FAILED: %s" % e, flush=True)
        rc = 1
    finally:
        cli("cluster", "stop", "--timeout", "60", timeout=120)
        deadline = time.time() + 30
        while time.time() < deadline and any(os.path.exists("/proc/%d" % p) for p in pids):
            time.sleep(0.5)
        for pid in pids:
            try:  # only a pid that is still one of our engines (pids get reused)
                if tmp.encode() in open("/proc/%d/cmdline" % pid, "rb").read():
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
