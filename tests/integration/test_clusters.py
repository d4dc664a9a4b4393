"""test_clusters.py — engines beyond one mpiexec: several engine jobs on one
controller (`ippc cluster add/remove/jobs`), --hostfile/--ppn/--mpiexec-args
handed to MPICH's hydra, the batch scripts of --engines=slurm|pbs compared
with expected files, a PBS job run through stand-in qsub/qstat/qdel that
execute it on this machine (no PBS server is available here), and bad input
on the launcher's control socket.

Every launch goes through `ippc cluster start` in the foreground in a private
IPPC_DIR (test_launcher.Launch) and must leave nothing running."""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

from harness import (CLI, ENGINE, MPIEXEC, ROOT, SANITIZER_MARKS, Failure, ProcessTracker,
                     check, describe, expect, wait_gone)
from common import same, view, expect_done, expect_task_results, psum_source
from test_cli import cli_env
from test_launcher import Launch, write_script

EXPECTED = os.path.join(ROOT, "tests", "integration", "expected")


def run_cli(launch, args, timeout=120, env=None):
    p = subprocess.run([CLI] + args, env=env or cli_env(launch.tmp), cwd=launch.tmp,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def jobs_of(launch, profile, env=None):
    rc, out, err = run_cli(launch, ["cluster", "jobs", "--json", "--profile", profile], env=env)
    check(rc == 0, "ippc cluster jobs --json: exit %s %s %s" % (rc, out, err))
    return {j["job"]: j for j in json.loads(out)}


def clean_output(text, what="the launcher's output"):
    """No sanitizer report in text (the launcher, controller and engines of a
    foreground launch all write to it)."""
    found = [m for m in SANITIZER_MARKS if m in text]
    check(not found, "%s has a sanitizer report (%s):\n%s" % (what, found, text[-4000:]))


def wait_for(what, predicate, timeout=60, interval=0.2):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() >= deadline:
            raise Failure("%s: not within %d s" % (what, timeout))
        time.sleep(interval)


def seed(api, ids, sums):
    """The seed scenario over ids; sums[i] is what psum gives engine ids[i]
    (one MPI job sums its own part: collectives stay within a job)."""
    expect_task_results(api.post(view("all", "run"),
                                 {"filename": "psum.lua", "source": psum_source()}),
                        ids, "run psum.lua")
    expect_task_results(api.post(view("all", "scatter"), {"name": "a", "data": list(range(16))}),
                        ids, "scatter a")
    expect_task_results(api.post(view("all", "execute"), {"code": "totalsum = psum(a)"}), ids,
                        "execute totalsum = psum(a)")
    body = expect_done(api.get(view("all", "vars/totalsum")), len(ids), "vars/totalsum")
    check(same(body["results"], sums), "totalsum: expected %s, got %s" % (sums, body))


def fanout_pushes(api):
    r = api.get("/metrics")
    check(r.status == 200, "GET /metrics: %r" % r)
    found = re.search(r'^ippc_fanout_ops_total\{op="push"\} (\d+)', r.raw.decode(), re.M)
    check(found, "no push fan-out counter in /metrics")
    return int(found.group(1))


# ---------------------------------------------------------------- several jobs

def test_several_jobs(_):
    """start -n 2, add -n 2, add -n 1 --engines=local: the next ids, each
    engine's job in GET /engines, views across the jobs for execute, push,
    pull, scatter and gather (a big push across jobs goes per engine, one
    within a job fans out), psum within each job, remove --job, stop."""
    with Launch("jobs") as launch:
        launch.start(["-n", "2", "--profile", "jobs"])
        api = launch.wait_up(2)
        check("More engines: ippc cluster add" in launch.text(), "the banner says how to add:\n%s"
              % launch.text())
        rc, out, err = run_cli(launch, ["cluster", "add", "-n", "2", "--profile", "jobs"])
        check(rc == 0 and re.search(r"^job j1: 2 engines \(MPI world of 2\), ids \[2,3\]$", out,
                                    re.M), "add -n 2: exit %s\n%s%s" % (rc, out, err))
        rc, out, err = run_cli(launch, ["cluster", "add", "-n", "1", "--engines=local",
                                        "--profile", "jobs"])
        check(rc == 0 and "job j2: 1 engine" in out and "ids [4]" in out,
              "add -n 1 --engines=local: exit %s\n%s%s" % (rc, out, err))

        engines = sorted(api.engines(), key=lambda e: e["id"])
        check([e["id"] for e in engines] == [0, 1, 2, 3, 4], "ids 0..4: %s" % engines)
        jobs = [e["job"].split(".")[0] for e in engines]
        check(jobs == ["j0", "j0", "j1", "j1", "j2"]
              and engines[0]["job"] == engines[1]["job"] != engines[2]["job"]
              and [(e["rank"], e["size"]) for e in engines] == [(0, 2), (1, 2), (0, 2), (1, 2),
                                                                (0, 1)],
              "each engine's job and rank: %s" % engines)
        listed = jobs_of(launch, "jobs")
        check(sorted(listed) == ["j0", "j1", "j2"]
              and [listed[j]["state"] for j in ("j0", "j1", "j2")] == ["up"] * 3
              and listed["j2"]["kind"] == "local" and listed["j1"]["engines"] == 2,
              "ippc cluster jobs: %s" % listed)

        ids = [0, 1, 2, 3, 4]
        # 16 items over 5 engines: 4,3,3,3,3; each job's psum sums its own part.
        seed(api, ids, [21, 21, 57, 57, 42])
        body = expect(api.get(view("all", "gather/a")), 200, "gather a across jobs")
        check(same(body.get("result"), list(range(16))), "gather across jobs: %s" % body)
        r = api.post(view("all", "push"), {"namespace": {"b": 5, "c": [1, 2]}})
        expect_task_results(r, ids, "push across jobs")
        body = expect_done(api.post(view("all", "pull"), {"names": ["b", "c"]}), 5, "pull b, c")
        check(same(body["results"], [[5, [1, 2]]] * 5), "pull across jobs: %s" % body)

        # A push big enough to fan out: per engine across jobs, by MPI in one.
        big = struct.pack("<65536d", *([0.5] * 65536))
        before = fanout_pushes(api)
        r = api.put(view("all", "vars/big") + "?dtype=float64&shape=65536", raw=big,
                    headers={"Content-Type": "application/octet-stream"})
        expect_task_results(r, ids, "a 512 KiB push to all five")
        check(fanout_pushes(api) == before, "a push across jobs is not fanned out by MPI")
        r = api.put(view("0:2", "vars/big") + "?dtype=float64&shape=65536", raw=big,
                    headers={"Content-Type": "application/octet-stream"})
        expect_task_results(r, [0, 1], "a 512 KiB push to job j0")
        check(fanout_pushes(api) == before + 1, "a push within one job fans out")
        r = api.post(view("all", "execute"), {"code": "return big:sum()"})
        check([x.get("value") for x in expect_task_results(r, ids, "sum big")] == [32768.0] * 5,
              "every engine got the array: %r" % r)

        # Remove job j1: its engines go, the others keep working.
        j1_pids = [e["pid"] for e in engines if e["job"].startswith("j1.")]
        rc, out, err = run_cli(launch, ["cluster", "remove", "--job", "1", "--profile", "jobs"])
        check(rc == 0 and out.strip() == "job j1 removed", "remove --job 1: %s %s %s"
              % (rc, out, err))
        left = wait_gone(set(j1_pids), 20)
        check(not left, "the engines of j1 are gone: %s" % describe(left))
        wait_for("engines 2, 3 dead", lambda: [e["id"] for e in api.live_engines()] == [0, 1, 4])
        r = api.post(view("all", "execute"), {"code": "return mpi.size()"})
        check([x.get("value") for x in expect_task_results(r, [0, 1, 4], "after remove")]
              == [2, 2, 1], "the other jobs still work: %r" % r)
        check(jobs_of(launch, "jobs")["j1"]["state"] == "removed", "j1 is listed as removed")
        rc, out, err = run_cli(launch, ["cluster", "remove", "--job", "j1", "--profile", "jobs"])
        check(rc == 1 and "already removed" in err, "removing it again: %s %s" % (rc, err))
        rc, out, err = run_cli(launch, ["cluster", "remove", "--job", "j9", "--profile", "jobs"])
        check(rc == 1 and "no job j9" in err, "an unknown job: %s %s" % (rc, err))
        launch.stop(signal.SIGINT, launch.ours(api))
        clean_output(launch.text())
    return []


def control_ask(path, data, shut=True):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    if data:
        s.sendall(data)
    if shut:
        s.shutdown(socket.SHUT_WR)
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        answer += chunk
    s.close()
    return json.loads(answer)


def test_control_bad_input(_):
    """Bad requests on the launcher's control socket get {"ok":false,
    "error":...} and the launcher keeps serving; bad job options are usage
    errors before anything starts."""
    with Launch("ctl") as launch:
        launch.start(["-n", "1", "--engines=local", "--profile", "ctl"])
        api = launch.wait_up(1)
        path = os.path.join(launch.profile_dir("ctl"), "pid", "launcher.sock")
        check(oct(os.stat(path).st_mode & 0o777) == "0o600", "the socket is 0600")
        cases = [
            (b"garbage\n", "not JSON"),
            (b"", "not JSON"),
            (b"[1,2]\n", "object with \"op\""),
            (b'{"op":"launch"}\n', "unknown op"),
            (b'{"op":"jobs","x":1}\n', "unknown field"),
            (b'{"op":"add"}\n', "\"spec\" must be an object"),
            (b'{"op":"add","spec":{"engines":0}}\n', "\"engines\" must be an integer"),
            (b'{"op":"add","spec":{"engines":1,"kind":"ssh"}}\n', "kind"),
            (b'{"op":"add","spec":{"engines":1,"hostfile":"a\\nb"}}\n', "not allowed"),
            (b'{"op":"add","spec":{"engines":1,"kind":"slurm","partition":"p;rm"}}\n',
             "not allowed"),
            (b'{"op":"add","spec":{"engines":1,"directives":[1]}}\n', "list of strings"),
            (b'{"op":"add","spec":{"engines":1},"timeout":-1}\n', "timeout"),
            (b'{"op":"remove"}\n', "\"job\" must be"),
            (b'{"op":"remove","job":"j0\\n"}\n', "not allowed"),
            (b'{"op":"jobs","op":"jobs"}\n', "not JSON"),
            (b"{" + b" " * 70000 + b"}\n", "at most"),
        ]
        for data, want in cases:
            reply = control_ask(path, data)
            check(reply.get("ok") is False and want in reply.get("error", ""),
                  "control request %r: expected an error with %r, got %s"
                  % (data[:60], want, reply))
        reply = control_ask(path, b'{"op":"jobs"}\n')
        check(reply.get("ok") is True and [j["job"] for j in reply["jobs"]] == ["j0"],
              "the launcher still answers: %s" % reply)
        # An add that cannot come up (an mpiexec that exits at once) is
        # refused with the reason, and the cluster keeps its engines.
        rc, out, err = run_cli(launch, ["cluster", "add", "-n", "1", "--profile", "ctl",
                                        "--mpiexec-args", "-no-such-hydra-option"])
        check(rc == 1 and "did not come up" in err and "mpiexec of job j1" in err,
              "a failing add: exit %s %s %s" % (rc, out, err))
        check(len(api.live_engines()) == 1, "the first job is untouched")

        usage = [
            (["--engines=ssh"], "--engines must be mpi, local, slurm or pbs"),
            (["--partition", "x"], "are for --engines=slurm or pbs"),
            (["--engines=local", "--ppn", "2"], "not for --engines=local"),
            (["--engines=local", "--hostfile", "/etc/hostname"], "hostfile is for"),
            (["--engines=slurm", "--partition", "a b"], "not allowed"),
            (["--engines=slurm", "--batch-directive", ""], "empty batch directive"),
            (["--ppn", "0"], "--ppn needs"),
        ]
        for args, want in usage:
            rc, out, err = run_cli(launch, ["cluster", "add", "-n", "1", "--profile", "ctl"]
                                   + args)
            check(rc == 2 and want in err, "add %s: expected usage error %r: %s %s"
                  % (args, want, rc, err))
        rc, out, err = run_cli(launch, ["cluster", "add", "-n", "1", "--profile", "ctl",
                                        "--hostfile", "/no/such/file"])
        check(rc == 1 and "/no/such/file" in err, "a missing hostfile: %s %s" % (rc, err))
        rc, out, err = run_cli(launch, ["cluster", "remove", "--profile", "ctl"])
        check(rc == 2 and "--job J" in err, "remove without --job: %s %s" % (rc, err))
        rc, out, err = run_cli(launch, ["cluster", "jobs", "--profile", "nobody"])
        check(rc == 1 and "no launcher" in err, "jobs of a profile not running: %s %s"
              % (rc, err))
        launch.stop(signal.SIGTERM, launch.ours(api))
        clean_output(launch.text())
        check(not os.path.exists(path), "the control socket is removed at the end")
    return []


# ---------------------------------------------------------------- hostfile

def test_hostfile_ppn_args(_):
    """--hostfile, --ppn and --mpiexec-args reach mpiexec.mpich (hydra): the
    engines run where the hostfile says, with the environment -genv gave."""
    real = shutil.which(MPIEXEC)
    check(real is not None, "%s not found" % MPIEXEC)
    with Launch("hosts") as launch:
        wrapper = write_script(os.path.join(launch.tmp, "my-mpiexec"),
                               "#!/bin/sh\nprintf '%%s\\n' \"$*\" >> \"$0.args\"\nexec %s \"$@\"\n"
                               % real)
        hostfile = os.path.join(launch.tmp, "hosts")
        with open(hostfile, "w") as f:
            f.write("# this machine twice, two slots each\nlocalhost:2\n%s:2\n"
                    % socket.gethostname())
        launch.start(["-n", "4", "--profile", "hosts", "--mpiexec", wrapper, "--hostfile",
                      hostfile, "--ppn", "2", "--mpiexec-args", "-genv IPPC_HOSTFILE_TEST 7"])
        api = launch.wait_up(4)
        calls = open(wrapper + ".args").read().splitlines()
        want = "-f %s -ppn 2 -genv IPPC_HOSTFILE_TEST 7 -n 4 %s --file " % (hostfile, ENGINE)
        check(len(calls) == 1 and calls[0].startswith(want),
              "mpiexec got the hostfile, ppn and extra arguments: %s (want %s...)"
              % (calls, want))
        text = launch.text()
        check("warning: the controller binds 127.0.0.1" in text,
              "a hostfile with a loopback controller gets a warning:\n%s" % text)
        r = api.post(view("all", "execute"),
                     {"code": "return os.getenv('IPPC_HOSTFILE_TEST') .. '/' .. mpi.size()"})
        check([x.get("value") for x in expect_task_results(r, [0, 1, 2, 3], "getenv")]
              == ["7/4"] * 4, "-genv reached every rank of one world of 4: %r" % r)
        seed(api, [0, 1, 2, 3], [120] * 4)
        launch.stop(signal.SIGTERM, launch.ours(api))
        clean_output(launch.text())
    return []


# ---------------------------------------------------------------- batch scripts

SCRIPT_CASES = [
    ("slurm_minimal.sbatch", ["-n", "4", "--engines=slurm"]),
    ("slurm_full.sbatch", ["-n", "8", "--engines=slurm", "--ppn", "4", "--partition", "compute",
                           "--time", "1:30:00", "--account", "proj-42", "--batch-directive",
                           "--exclusive", "--batch-directive", '--constraint="ib&haswell"',
                           "--mpiexec-args", "--cpu-bind=cores --label"]),
    ("pbs_minimal.pbs", ["-n", "4", "--engines=pbs"]),
    ("pbs_full.pbs", ["-n", "10", "--engines=pbs", "--ppn", "4", "--partition", "workq",
                      "--time", "02:00:00", "--account", "proj-42", "--batch-directive", "-m n",
                      "--batch-directive", "-l place=scatter", "--mpiexec-args",
                      "-genv OMP_NUM_THREADS=1"]),
]


def test_batch_scripts(_):
    """--print-script writes exactly the expected Slurm and PBS scripts
    (tests/integration/expected/), paths filled in; nothing is started."""
    mpiexec = shutil.which(MPIEXEC)
    with Launch("scripts") as launch:
        for name, args in SCRIPT_CASES:
            rc, out, err = run_cli(launch, ["cluster", "start", "--profile", "scripts",
                                            "--print-script"] + args)
            check(rc == 0, "%s: exit %s %s" % (name, rc, err))
            with open(os.path.join(EXPECTED, name)) as f:
                want = f.read()
            profile = launch.profile_dir("scripts")
            want = (want.replace("@LOG_DIR@", os.path.join(profile, "log"))
                    .replace("@ENGINE_FILE@", os.path.join(profile, "security",
                                                           "ippc-engine.json"))
                    .replace("@ENGINE@", ENGINE).replace("@MPIEXEC@", mpiexec))
            check(out == want, "%s: the script differs:\n--- got\n%s--- expected\n%s"
                  % (name, out, want))
            check(subprocess.run(["sh", "-n"], input=out.encode()).returncode == 0,
                  "%s: sh -n accepts the script" % name)
        rc, out, err = run_cli(launch, ["cluster", "start", "-n", "2", "--print-script"])
        check(rc == 2 and "--print-script is for" in err, "--print-script with mpi: %s %s"
              % (rc, err))
        check(not os.path.exists(launch.profile_dir("scripts")),
              "--print-script starts nothing and writes nothing")
    return []


# ---------------------------------------------------------------- PBS stand-in

# Stand-ins for PBS's commands (no PBS server is available here): qsub runs
# the script at once on this machine in its own session, as PBS would on a
# node (PBS_NODEFILE unset, so mpiexec stays here); qstat -f says R while it
# runs and "Unknown Job Id" after; qdel ends its session.
STANDIN_QSUB = """#!/bin/sh
dir=$(dirname "$0")/state
mkdir -p "$dir"
n=$(($(cat "$dir/counter" 2>/dev/null || echo 0) + 1))
echo "$n" > "$dir/counter"
echo "qsub $*" >> "$dir/calls"
setsid sh "$1" > "$dir/$n.out" 2>&1 < /dev/null &
echo $! > "$dir/$n.pid"
echo "$n.standin"
"""
STANDIN_QSTAT = """#!/bin/sh
dir=$(dirname "$0")/state
echo "qstat $*" >> "$dir/calls"
[ "$1" = "-f" ] || { echo "stand-in qstat: only -f ID" >&2; exit 2; }
n=${2%%.*}
# Running unless gone or a zombie (nobody may reap the orphaned session).
state=$(ps -o stat= -p "$(cat "$dir/$n.pid" 2>/dev/null)" 2>/dev/null)
if [ -n "$state" ] && [ "${state#Z}" = "$state" ]; then
    printf 'Job Id: %s\\n    Job_Name = ippc\\n    job_state = R\\n' "$2"
    exit 0
fi
echo "qstat: Unknown Job Id $2" >&2
exit 153
"""
STANDIN_QDEL = """#!/bin/sh
dir=$(dirname "$0")/state
echo "qdel $*" >> "$dir/calls"
n=${1%%.*}
kill -TERM "-$(cat "$dir/$n.pid")"
exit 0
"""


def test_pbs_standin(_):
    """--engines=pbs through stand-in qsub/qstat/qdel that run the job here:
    the seed over the job's engines, a job deleted from PBS's side reported,
    and nothing left after stop."""
    with Launch("pbs") as launch:
        bindir = os.path.join(launch.tmp, "pbsbin")
        os.mkdir(bindir)
        for name, text in (("qsub", STANDIN_QSUB), ("qstat", STANDIN_QSTAT),
                           ("qdel", STANDIN_QDEL)):
            write_script(os.path.join(bindir, name), text)
        env = cli_env(launch.tmp)
        env["PATH"] = bindir + ":" + env["PATH"]
        launch.proc = None
        p = subprocess.Popen([CLI, "cluster", "start", "-n", "4", "--engines=pbs", "--profile",
                              "pbs", "--time", "00:10:00"], env=env, cwd=launch.tmp,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
        launch.args = ["--engines=pbs"]
        launch.proc = p
        launch.tracker.add_popen(p)
        from test_cli import Reader
        launch.out = Reader(p.stdout)
        api = launch.wait_up(4)
        text = launch.text()
        check("submitted PBS job 1.standin (job j0, 4 engines)" in text
              and "MPI world of 4 in PBS job 1.standin" in text,
              "the launcher submitted the job and says so:\n%s" % text)
        script = os.path.join(launch.profile_dir("pbs"), "jobs", "j0.pbs")
        check("#PBS -l walltime=00:10:00" in open(script).read(), "the script has the walltime")
        seed(api, [0, 1, 2, 3], [120] * 4)

        rc, out, err = run_cli(launch, ["cluster", "add", "-n", "2", "--engines=pbs",
                                        "--profile", "pbs"], env=env)
        check(rc == 0 and "ids [4,5]" in out and "PBS job 2.standin" in out,
              "add --engines=pbs: %s %s %s" % (rc, out, err))
        ours = launch.ours(api)
        subprocess.run([os.path.join(bindir, "qdel"), "2.standin"], check=True)
        try:
            wait_for("the launcher reports the deleted job",
                     lambda: re.search(r"job j1 ended: PBS job 2\.standin ended: gone",
                                       launch.text()))
        except Failure as e:
            raise Failure("%s:\n%s" % (e, launch.text()))
        check(jobs_of(launch, "pbs", env)["j1"]["state"] == "ended", "j1 is listed as ended")
        wait_for("engines 4, 5 dead", lambda: len(api.live_engines()) == 4)
        launch.stop(signal.SIGINT, ours)
        clean_output(launch.text())
        calls = open(os.path.join(bindir, "state", "calls")).read()
        check("qsub %s" % script in calls and "qstat -f 1.standin" in calls,
              "the launcher used qsub and qstat: %s" % calls)
    return []


# ---------------------------------------------------------------- bench_scale

def test_bench_scale_smoke(_):
    """bench/bench_scale.py at toy size (2 jobs of 2): every figure printed,
    exit 0, nothing left running.  Never asserts speed."""
    tmp = tempfile.mkdtemp(prefix="ippc-itest-scale-")
    tracker = ProcessTracker(tmp)
    env = dict(os.environ, BENCH_SCALE_JOBS="2", BENCH_SCALE_JOB_SIZE="2", BENCH_IDLE_S="1",
               IPPC_TEST_MARKER=tmp)
    try:
        p = subprocess.Popen(["/usr/bin/python3", os.path.join(ROOT, "bench", "bench_scale.py")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
        tracker.add_popen(p)
        out = p.communicate(timeout=180)[0].decode()
        check(p.returncode == 0, "bench_scale exit %s:\n%s" % (p.returncode, out))
        for figure in ("job 1 of 2 engines registered", "job 2 of 2 engines registered",
                       "controller CPU, idle with 4 engines", "controller RSS with 4 engines",
                       "execute `x = 1` on all 4", "to all 4 (2 jobs: per engine)",
                       "to the 2 of one job (MPI fan-out)", "controller RSS after the pushes"):
            check(re.search(re.escape(figure) + r".* [0-9.]+ ", out),
                  "bench_scale prints %r with a number:\n%s" % (figure, out))
        left = wait_gone(tracker.snapshot(), 20)
        check(not left, "bench_scale left processes: %s" % describe(left))
    finally:
        tracker.kill_all(grace=5)
        shutil.rmtree(tmp, ignore_errors=True)
    return []


TESTS = [
    ("clusters_several_jobs", test_several_jobs, "own"),
    ("clusters_control_bad_input", test_control_bad_input, "own"),
    ("clusters_hostfile_ppn_args", test_hostfile_ppn_args, "own"),
    ("clusters_batch_scripts", test_batch_scripts, "own"),
    ("clusters_pbs_standin", test_pbs_standin, "own"),
    ("clusters_bench_scale_smoke", test_bench_scale_smoke, "own"),
]
