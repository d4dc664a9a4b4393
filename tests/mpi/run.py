#!/usr/bin/env python3
"""The Python MPI module's suite (`make pympi`, and scripts/run-tests).

Runs build/tests/pympi_host — which initialises MPI and Python as the
engine does — under `mpiexec.mpich -n 4` on pympi_checks.py (every call on
arrays and objects, errors, missing names) and pympi_interrupts.py (the
engine's interrupt flag), and the --real-mpi4py check on fake mpi4py
packages, and the module in a second interpreter (pympi_reinit.py).  A check passes when all 4 ranks report it ok.  Last line:
`pympi: N passed, N failed`; exit status 1 if anything failed.

Environment: BUILD (default build), PYMPI_TIMEOUT (seconds per mpiexec,
default 60).
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("BUILD", "build")
HOST = os.path.join(ROOT, BUILD, "tests", "pympi_host")
TIMEOUT = int(os.environ.get("PYMPI_TIMEOUT", "60"))
RANKS = 4

results = []  # (name, ok, detail)


def record(name, ok, detail=""):
    results.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""),
          flush=True)


def host_env(extra=None):
    env = dict(os.environ)
    env.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                "MPIEXEC_TIMEOUT": str(TIMEOUT),
                # sanitizer builds: the interpreter keeps memory until exit
                "ASAN_OPTIONS": env.get("ASAN_OPTIONS", "detect_leaks=0")})
    env.update(extra or {})
    return env


def run(cmd, env, timeout):
    """Runs cmd in its own process group; on timeout SIGTERM (mpiexec then
    removes its ranks), then SIGKILL.  Returns (returncode, output)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        return -1, (out or "") + f"\n(timed out after {timeout}s)"


def run_script(script):
    """Runs script on RANKS ranks; records one result per check."""
    with tempfile.TemporaryDirectory(prefix="pympi-") as res:
        cmd = ["mpiexec.mpich", "-n", str(RANKS), HOST, os.path.join(HERE, script)]
        rc, out = run(cmd, host_env({"PYMPI_RESULTS": res}), TIMEOUT + 20)
        per_rank = {}
        expected = None
        for r in range(RANKS):
            path = os.path.join(res, f"rank-{r}.txt")
            lines = open(path).read().splitlines() if os.path.exists(path) else []
            if lines and lines[0].startswith("checks: "):
                expected = lines[0][len("checks: "):].split()
            per_rank[r] = {}
            for line in lines[1:]:
                m = re.match(r"rank (\d+) (ok|FAIL) (\w+)(?:: (.*))?$", line)
                if m:
                    per_rank[r][m.group(3)] = (m.group(2) == "ok", m.group(4) or "")
        if expected is None:
            record(script, False, f"no rank reported (exit {rc}): {out[-2000:]}")
            return
        for name in expected:
            bad = []
            for r in range(RANKS):
                ok, detail = per_rank[r].get(name, (False, "no report (crashed or hung)"))
                if not ok:
                    bad.append(f"rank {r}: {detail}")
            record(f"{script[:-3]}.{name}", not bad, " || ".join(bad)[:3000])
        if rc != 0:
            record(f"{script[:-3]}.exit", False, f"mpiexec exit {rc}: {out[-2000:]}")


def reinit():
    """The module in a second interpreter of the same process."""
    cmd = ["mpiexec.mpich", "-n", str(RANKS), HOST, "--twice", os.path.join(HERE, "pympi_reinit.py")]
    rc, out = run(cmd, host_env(), TIMEOUT + 20)
    oks = sorted(re.findall(r"reinit ok (\d+)", out))
    want = sorted(str(r) for r in range(RANKS)) * 2
    record("reinit.second_interpreter", rc == 0 and oks == sorted(want), f"exit {rc}: {out[-2000:]}")


def fake_mpi4py(root, link_mpich):
    """A package mpi4py whose MPI extension is a shared library linked to
    libmpich (or to no MPI): what pympi_real_check reads."""
    pkg = os.path.join(root, "mpi4py")
    os.makedirs(pkg)
    open(os.path.join(pkg, "__init__.py"), "w").close()
    src = os.path.join(root, "empty.c")
    with open(src, "w") as f:
        f.write("int pympi_fake_extension;\n")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    libs = subprocess.run(["pkg-config", "--libs", "mpich"], capture_output=True, text=True,
                          check=True).stdout.split() if link_mpich else ["-lm"]
    cmd = ["cc", "-shared", "-fPIC", "-Wl,--no-as-needed", "-o",
           os.path.join(pkg, "MPI" + suffix), src] + libs
    subprocess.run(cmd, check=True, capture_output=True)


def real_checks():
    env = host_env({"PYTHONPATH": ""})
    rc, out = run([HOST, "--real-check"], env, 30)
    record("real_check.no_mpi4py", rc == 1 and "no mpi4py is installed" in out, out.strip())
    if not shutil.which("cc"):
        record("real_check.fakes", False, "no C compiler (cc) to build the fake extensions")
        return
    for link_mpich in (True, False):
        with tempfile.TemporaryDirectory(prefix="pympi-real-") as root:
            fake_mpi4py(root, link_mpich)
            rc, out = run([HOST, "--real-check"], host_env({"PYTHONPATH": root}), 30)
            if link_mpich:
                record("real_check.mpich_build_accepted", rc == 0 and "real mpi4py: ok" in out,
                       out.strip())
            else:
                record("real_check.other_build_refused",
                       rc == 1 and "built for another MPI" in out and "libm.so" in out
                       and root in out, out.strip())


def main():
    if not os.access(HOST, os.X_OK):
        record("pympi_host", False, f"missing: {HOST} (make {BUILD}/tests/pympi_host)")
    else:
        run_script("pympi_checks.py")
        run_script("pympi_interrupts.py")
        reinit()
        real_checks()
    passed = sum(1 for _, ok, _ in results if ok)
    failed = len(results) - passed
    print(f"pympi: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
