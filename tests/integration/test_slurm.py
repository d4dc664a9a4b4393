"""test_slurm.py — --engines=slurm against a real single-node Slurm.

The test starts its own munged, slurmctld and slurmd (Debian's slurm-wlm and
munge, installed by scripts/install-deps) from a config it generates in a
temp folder, on free ports, with a MUNGE key and socket of its own, so it
touches no system-wide Slurm or MUNGE.  Then: the seed scenario over a Slurm
job's engines (sbatch + srun --mpi=pmi2), a second job added with `ippc
cluster add`, a job cancelled from Slurm's side (scancel) reported by ippc, a
queued job cancelled by Slurm while `ippc cluster add` waits for it (reported
at once, not waited on), a job that does not start in time cancelled by ippc,
and `ippc cluster stop` leaving no job in Slurm's queue.  Every daemon it
started is stopped at the end (scontrol shutdown, then munged by pid)."""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import CLI, Failure, check, describe, wait_gone
from test_cli import Reader, cli_env
from test_clusters import clean_output, jobs_of, run_cli, seed, wait_for
from test_launcher import Launch

SLURM_CONF = """ClusterName=ippctest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmi2
ReturnToService=2
MinJobAge=300
SlurmdParameters=config_overrides
NodeName=localhost NodeHostname={hostname} NodeAddr=127.0.0.1 CPUs=8 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class SlurmNode:
    """munged + slurmctld + slurmd in a temp folder; env() has SLURM_CONF."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ippc-slurm-")
        self.procs = []

    def env(self, base=None):
        """The daemons' environment (without the test's marker: they are
        stopped here, not by the launch's tracker), or base plus SLURM_CONF."""
        env = dict(base if base is not None else os.environ)
        env["SLURM_CONF"] = os.path.join(self.dir, "slurm.conf")
        return env

    def run(self, args, check_ok=True, timeout=30):
        p = subprocess.run(args, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        text = p.stdout.decode("utf-8", "replace")
        if check_ok and p.returncode != 0:
            raise Failure("%s: exit %d: %s" % (" ".join(args), p.returncode, text))
        return text

    def start(self):
        for tool in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol"):
            if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool):
                raise Failure("%s is missing: scripts/install-deps installs slurm-wlm and munge"
                              % tool)
        munge = pwd.getpwnam("munge")
        os.chmod(self.dir, 0o711)
        # munged wants its key private and its socket folder open to all.
        for sub, mode in (("munge", 0o700), ("msock", 0o711)):
            path = os.path.join(self.dir, sub)
            os.mkdir(path)
            os.chown(path, munge.pw_uid, munge.pw_gid)
            os.chmod(path, mode)
        for sub in ("state", "spool"):
            os.mkdir(os.path.join(self.dir, sub))
        key = os.path.join(self.dir, "munge", "munge.key")
        self.munge_socket = os.path.join(self.dir, "msock", "munge.socket")
        self.run(["runuser", "-u", "munge", "--", "/usr/sbin/mungekey", "-c", "-k", key])
        self.spawn("munged", ["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--foreground",
                    "--socket=" + self.munge_socket, "--key-file=" + key,
                    "--pid-file=" + os.path.join(self.dir, "munge", "munged.pid"),
                    "--log-file=" + os.path.join(self.dir, "munge", "munged.log"),
                    "--seed-file=" + os.path.join(self.dir, "munge", "munged.seed")])
        wait_for("munged's socket", lambda: os.path.exists(self.munge_socket), 20)
        with open(os.path.join(self.dir, "slurm.conf"), "w") as f:
            f.write(SLURM_CONF.format(ctld_port=free_port(), slurmd_port=free_port(),
                                      munge_socket=self.munge_socket, dir=self.dir,
                                      hostname=socket.gethostname()))
        self.spawn("slurmctld", ["/usr/sbin/slurmctld", "-D"])
        self.spawn("slurmd", ["/usr/sbin/slurmd", "-D"])
        wait_for("the Slurm node to be idle",
                 lambda: "idle" in self.run(["sinfo", "-h", "-o", "%T"], check_ok=False), 60)
        return self

    def spawn(self, name, args):
        log = open(os.path.join(self.dir, name + ".out"), "ab")
        p = subprocess.Popen(args, env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    def queue(self):
        """Job id -> state of the jobs Slurm still lists."""
        out = self.run(["squeue", "-h", "-o", "%i %T"], check_ok=False)
        return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)

    def logs(self):
        text = ""
        for name in ("slurmctld.log", "slurmd.log"):
            path = os.path.join(self.dir, name)
            if os.path.exists(path):
                text += "--- %s\n%s" % (name, open(path, errors="replace").read()[-1500:])
        return text

    def stop(self):
        """Stops every daemon started here; returns those that had to be killed."""
        stubborn = []
        if len(self.procs) > 1:
            self.run(["scontrol", "shutdown"], check_ok=False)
        for p in reversed(self.procs):
            if p is self.procs[0]:
                p.send_signal(signal.SIGTERM)  # munged, after Slurm is down
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                stubborn.append(p.pid)
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
        return stubborn


def test_slurm_real(_):
    with Launch("slurm") as launch:
        node = SlurmNode()
        try:
            node.start()
            run_slurm_scenario(launch, node)
        except Failure as e:
            raise Failure("%s\n%s" % (e, node.logs()))
        finally:
            stubborn = node.stop()
            if stubborn:
                raise Failure("Slurm daemons had to be killed: %s" % stubborn)
    return []


def run_slurm_scenario(launch, node):
    env = node.env(cli_env(launch.tmp))
    p = subprocess.Popen([CLI, "cluster", "start", "-n", "4", "--engines=slurm", "--profile",
                          "slurm", "--time", "10"], env=env, cwd=launch.tmp, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    launch.args, launch.proc = ["--engines=slurm"], p
    launch.tracker.add_popen(p)
    launch.out = Reader(p.stdout)
    api = launch.wait_up(4, timeout=120)
    first = jobs_of(launch, "slurm", env)["j0"]
    check(first["kind"] == "slurm" and first["state"] == "up" and first.get("batch_id"),
          "job j0 is a Slurm job: %s" % first)
    check(node.queue().get(first["batch_id"]) == "RUNNING",
          "Slurm runs the job: %s" % node.queue())
    engines = sorted(api.engines(), key=lambda e: e["id"])
    check([(e["rank"], e["size"]) for e in engines] == [(r, 4) for r in range(4)],
          "srun --mpi=pmi2 made one world of 4: %s" % engines)
    seed(api, [0, 1, 2, 3], [120] * 4)

    rc, out, err = run_cli(launch, ["cluster", "add", "-n", "2", "--engines=slurm",
                                    "--profile", "slurm"], env=env)
    check(rc == 0 and "ids [4,5]" in out, "add --engines=slurm: %s %s %s" % (rc, out, err))
    ours = launch.ours(api)

    # Cancelled from Slurm's side: ippc reports it, the controller stays.
    node.run(["scancel", first["batch_id"]])
    try:
        wait_for("the launcher reports the cancelled job", lambda: re.search(
            r"job j0 ended: Slurm job %s ended: CANCELLED" % first["batch_id"], launch.text()), 60)
    except Failure as e:
        raise Failure("%s:\n%s" % (e, launch.text()))
    listed = jobs_of(launch, "slurm", env)["j0"]
    check(listed["state"] == "ended" and listed["batch_state"] == "CANCELLED",
          "ippc cluster jobs shows j0 cancelled: %s" % listed)
    wait_for("engines 0-3 dead", lambda: sorted(e["id"] for e in api.live_engines()) == [4, 5])

    # A queued job that Slurm cancels while `ippc cluster add` waits for it.
    adder = subprocess.Popen([CLI, "cluster", "add", "-n", "2", "--engines=slurm",
                              "--profile", "slurm", "--batch-directive", "--begin=now+3600",
                              "--timeout", "300"], env=env, cwd=launch.tmp,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    launch.tracker.add_popen(adder)
    pending = wait_for("a pending job in Slurm's queue", lambda: [
        j for j, state in node.queue().items() if state == "PENDING"], 60)
    node.run(["scancel", pending[0]])
    try:
        out, err = adder.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        raise Failure("ippc cluster add still waits 60 s after Slurm cancelled its job:\n%s"
                      % launch.text())
    err = err.decode()
    check(adder.returncode == 1 and ("Slurm job %s ended: CANCELLED" % pending[0]) in err,
          "add reports the cancelled job at once: %s %s" % (adder.returncode, err))

    # A job that does not start in time is cancelled by ippc.
    rc, out, err = run_cli(launch, ["cluster", "add", "-n", "2", "--engines=slurm", "--profile",
                                    "slurm", "--batch-directive", "--begin=now+3600",
                                    "--timeout", "3"], env=env)
    check(rc == 1 and "timed out" in err, "a job not started within --timeout: %s %s"
          % (rc, err))
    check("PENDING" not in node.queue().values(), "ippc cancelled the job that timed out: %s"
          % node.queue())
    check(re.search(r"cancelled Slurm job \d+ \(job j3\)", launch.text()),
          "the launcher says it cancelled it:\n%s" % launch.text())

    # Stop: the running job j1 ends, nothing of ours stays in Slurm's queue.
    launch.stop(signal.SIGTERM, ours)
    clean_output(launch.text())
    wait_for("an empty Slurm queue", lambda: not node.queue(), 30)
    left = wait_gone(launch.tracker.snapshot(), 20)
    check(not left, "processes left: %s" % describe(left))


TESTS = [
    ("clusters_slurm_real", test_slurm_real, "own"),
]
