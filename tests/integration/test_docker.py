"""test_docker.py — docker/ without a Docker engine (none runs on these
machines): the Dockerfile installs exactly what scripts/install-deps installs
(it runs install-deps and nothing else installs a package), it is based on
Debian 12, builds with make and runs as a user; the compose file has a
controller and an engines service (mpiexec -n 4) with health checks, sharing
the connection files on a volume, and the engines find the controller by
its service name.  scripts/docker-replay replays the Dockerfile in a
debootstrap chroot of Debian 12 and runs the seed there (docker/README.md);
it downloads a Debian system, so it is `make docker-replay`, not part of
`make test`."""

import os
import re
import subprocess

from harness import ROOT, check

DOCKER = os.path.join(ROOT, "docker")
INSTALLERS = re.compile(r"\b(apt-get|apt|aptitude|dpkg|pip3?|npm|gem|curl|wget)\b")


def dockerfile_steps():
    """(instruction, argument) pairs, continuation lines joined."""
    steps, pending = [], ""
    for raw in open(os.path.join(DOCKER, "Dockerfile")):
        line = raw.rstrip("\n")
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.strip().partition(" ")
        steps.append((word.upper(), rest.strip()))
    return steps


def test_dockerfile_installs_install_deps(_):
    steps = dockerfile_steps()
    check(steps[0] == ("FROM", "debian:12"), "the image starts from debian:12: %s" % steps[:1])
    runs = [arg for word, arg in steps if word == "RUN"]
    commands = [c.strip() for run in runs for c in re.split(r"&&|;|\|\|", run)]
    installing = [c for c in commands if c.startswith("scripts/install-deps")]
    check(installing == ["scripts/install-deps"],
          "exactly one step installs packages, scripts/install-deps with no groups: %s"
          % commands)
    others = [c for c in commands if INSTALLERS.search(c) and not c.startswith("rm ")]
    check(not others, "no other step installs anything: %s" % others)
    copies = [arg for word, arg in steps if word == "COPY"]
    check(copies and copies[0] == "scripts/install-deps scripts/install-deps",
          "install-deps is copied before anything else (its layer caches): %s" % copies)
    check("make all" in " ".join(runs), "the image builds with make: %s" % runs)
    users = [arg for word, arg in steps if word == "USER"]
    check(users == ["ippc"] and any("useradd" in r and "ippc" in r for r in runs),
          "it runs as the non-root user ippc: %s" % users)
    # What install-deps would install there is its own list: the test of the
    # replay (scripts/docker-replay) compares it with the chroot's packages.
    listed = subprocess.run([os.path.join(ROOT, "scripts", "install-deps"), "--list"],
                            stdout=subprocess.PIPE, check=True).stdout.decode().split()
    for needed in ("mpich", "libmpich-dev", "slurm-wlm", "munge", "build-essential"):
        check(needed in listed, "install-deps --list names %s: %s" % (needed, listed))
    return []


def test_compose_file(_):
    import yaml
    doc = yaml.safe_load(open(os.path.join(DOCKER, "compose.yaml")))
    services = doc.get("services", {})
    check(sorted(services) == ["controller", "engines"], "two services: %s" % sorted(services))
    ctl, eng = services["controller"], services["engines"]
    check(ctl["build"]["dockerfile"] == "docker/Dockerfile" and ctl["build"]["context"] == "..",
          "the controller is built from docker/Dockerfile: %s" % ctl.get("build"))
    cmd = ctl["command"]
    check(cmd[0] == "ippc-controller" and cmd[cmd.index("--ip") + 1] == "0.0.0.0"
          and cmd[cmd.index("--location") + 1] == "controller",
          "the controller binds every interface and writes its service name: %s" % cmd)
    profile = cmd[cmd.index("--profile") + 1]
    ecmd = eng["command"]
    check(ecmd[:3] == ["mpiexec.mpich", "-n", "4"] and "ippc-engine" in ecmd
          and ecmd[ecmd.index("--file") + 1]
          == "/ippc/profile_%s/security/ippc-engine.json" % profile,
          "the engines are one mpiexec -n 4 job reading the shared engine file: %s" % ecmd)
    check("state:/ippc" in ctl["volumes"] and "state:/ippc" in eng["volumes"]
          and "state" in doc.get("volumes", {}),
          "the connection files are on a volume both mount at /ippc")
    check(eng["depends_on"]["controller"]["condition"] == "service_healthy",
          "the engines wait for a healthy controller")
    for name, svc in services.items():
        test = svc.get("healthcheck", {}).get("test", [])
        check(test[:2] == ["CMD", "/opt/ippc/docker/healthcheck.sh"],
              "%s has a health check: %s" % (name, test))
    check(services["engines"]["healthcheck"]["test"][2:] == ["engines", "4"],
          "the engines' health check waits for 4 engines")
    script = os.path.join(DOCKER, "healthcheck.sh")
    check(os.access(script, os.X_OK), "healthcheck.sh is executable")
    check(subprocess.run(["sh", "-n", script]).returncode == 0, "healthcheck.sh parses")
    p = subprocess.run([script, "nonsense"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=dict(os.environ, IPPC_DIR="/nonexistent"))
    check(p.returncode != 0, "the health check fails without a connection file")
    return []


TESTS = [
    ("docker_installs_what_install_deps_does", test_dockerfile_installs_install_deps, "own"),
    ("docker_compose_file", test_compose_file, "own"),
]
