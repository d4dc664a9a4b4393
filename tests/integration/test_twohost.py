"""test_twohost.py — two hosts made of two network namespaces, and the
address the controller writes into its connection files.

The test makes the namespaces itself (ip netns add, a veth pair, private
addresses 10.213.x.1 and .2 that exist only inside them): the controller
runs in one with --ip 0.0.0.0 and must write the namespace's own address
(not 127.0.0.1) into both connection files; an `mpiexec -n 2` engine job
runs in the other, reads the engine file and connects over the veth link; a
client in the engines' namespace runs the seed scenario with `ippc px` and
the REST API.  From the test's own namespace the controller is unreachable:
the addresses really are private.  A machine that does not allow network
namespaces fails the test, saying so.  Everything is torn down at the end:
processes by pid, then the namespaces (which takes the veth pair with them).
"""

import json
import os
import signal
import socket
import subprocess
import tempfile
import time

from harness import (CLI, CONTROLLER, ENGINE, MPIEXEC, SANITIZER_MARKS, Failure, ProcessTracker,
                     check, describe, wait_file)

SEED_CLIENT = r"""
import json, sys, urllib.request
url, token = sys.argv[1], sys.argv[2]
psum = open(sys.argv[3]).read()
def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())
out = {"engines": call("GET", "/api/v1/engines")["engines"]}
call("POST", "/api/v1/views/all/run", {"filename": "psum.lua", "source": psum})
call("POST", "/api/v1/views/all/scatter", {"name": "a", "data": list(range(16))})
out["a"] = call("GET", "/api/v1/views/all/vars/a")["results"]
call("POST", "/api/v1/views/all/execute", {"code": "totalsum = psum(a)"})
out["totalsum"] = call("GET", "/api/v1/views/all/vars/totalsum")["results"]
print(json.dumps(out))
"""


def sh(args, check_ok=True):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    text = p.stdout.decode("utf-8", "replace")
    if check_ok and p.returncode != 0:
        raise Failure("%s: exit %d: %s" % (" ".join(args), p.returncode, text))
    return text


class Namespaces:
    """Network namespaces named after this process, deleted at the end."""

    def __init__(self):
        self.tag = "ippc%d" % os.getpid()
        self.names = []

    def add(self, suffix):
        name = "%s-%s" % (self.tag, suffix)
        p = subprocess.run(["ip", "netns", "add", name], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        if p.returncode != 0:
            raise Failure("this machine does not allow network namespaces (`ip netns add` "
                          "failed: %s); the two-host test cannot run here"
                          % p.stdout.decode().strip())
        self.names.append(name)
        sh(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        return False


def free_subnet():
    """A 10.213.N.0/24 no interface of this machine uses."""
    used = sh(["ip", "-o", "-4", "addr"], check_ok=False)
    for n in range(1, 250):
        if " 10.213.%d." % n not in used:
            return "10.213.%d" % n
    raise Failure("no free 10.213.x.0/24 subnet")


def test_two_hosts(_):
    tmp = tempfile.mkdtemp(prefix="ippc-itest-twohost-")
    tracker = ProcessTracker(tmp)
    env = dict(os.environ, IPPC_DIR=tmp, IPPC_TEST_MARKER=tmp)
    psum = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "examples", "psum.lua")
    with Namespaces() as ns:
        try:
            run_two_hosts(ns, tmp, tracker, env, psum)
        finally:
            stubborn = tracker.kill_all(grace=5)
            if stubborn and sys_exc() is None:
                raise Failure("processes had to be killed: %s" % describe(stubborn))
    return []


def sys_exc():
    import sys
    return sys.exc_info()[0]


def run_two_hosts(ns, tmp, tracker, env, psum):
    ctl, eng = ns.add("ctl"), ns.add("eng")
    net = free_subnet()
    veth_ctl, veth_eng = "%sa" % ns.tag[:12], "%sb" % ns.tag[:12]
    sh(["ip", "link", "add", veth_ctl, "type", "veth", "peer", "name", veth_eng])
    sh(["ip", "link", "set", veth_ctl, "netns", ctl])
    sh(["ip", "link", "set", veth_eng, "netns", eng])
    sh(["ip", "-n", ctl, "addr", "add", net + ".1/24", "dev", veth_ctl])
    sh(["ip", "-n", eng, "addr", "add", net + ".2/24", "dev", veth_eng])
    sh(["ip", "-n", ctl, "link", "set", veth_ctl, "up"])
    sh(["ip", "-n", eng, "link", "set", veth_eng, "up"])

    # The controller host: --ip 0.0.0.0; the files must name net.1.
    log = open(os.path.join(tmp, "controller.log"), "ab")
    controller = subprocess.Popen(["ip", "netns", "exec", ctl, CONTROLLER, "--ip", "0.0.0.0",
                                   "--port", "0", "--profile", "twohost"], env=env, cwd=tmp,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    tracker.add_popen(controller)
    security = os.path.join(tmp, "profile_twohost", "security")
    client = wait_file(os.path.join(security, "ippc-client.json"), 30, controller, "controller")
    engine = wait_file(os.path.join(security, "ippc-engine.json"), 30, controller, "controller")
    port = int(client["url"].rsplit(":", 1)[1])
    check(client["url"] == "http://%s.1:%d" % (net, port)
          and client["ws_url"] == "ws://%s.1:%d/ws" % (net, port)
          and engine["url"] == "ws://%s.1:%d/engine" % (net, port),
          "--ip 0.0.0.0 writes the host's own address into both files: %s %s"
          % (client, engine))
    text = open(os.path.join(tmp, "controller.log"), errors="replace").read()
    check("warning: listening on 0.0.0.0" in text and "without TLS" in text,
          "a non-loopback bind without TLS warns:\n%s" % text)

    # Private: this namespace cannot reach it.
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((net + ".1", port))
        reached = True
    except OSError:
        reached = False
    finally:
        s.close()
    check(not reached, "the controller's address must exist only inside the namespaces")

    # The engine host: mpiexec -n 2 with the engine file.
    elog = open(os.path.join(tmp, "engines.log"), "ab")
    mpiexec = subprocess.Popen(["ip", "netns", "exec", eng, MPIEXEC, "-n", "2", ENGINE, "--file",
                                os.path.join(security, "ippc-engine.json")], env=env, cwd=tmp,
                               stdin=subprocess.DEVNULL, stdout=elog, stderr=subprocess.STDOUT,
                               start_new_session=True)
    tracker.add_popen(mpiexec)

    # A client on the engine host: the seed over the link.
    script = os.path.join(tmp, "seed_client.py")
    with open(script, "w") as f:
        f.write(SEED_CLIENT)
    deadline = time.time() + 60
    while True:
        px = subprocess.run(["ip", "netns", "exec", eng, CLI, "px", "--profile", "twohost",
                             "print(mpi.rank() .. '/' .. mpi.size())"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = px.stdout.decode()
        if px.returncode == 0 and out == "[stdout:0] 0/2\n[stdout:1] 1/2\n":
            break
        check(time.time() < deadline and mpiexec.poll() is None,
              "ippc px from the engine host: exit %s %r\n%s" % (
                  px.returncode, out, open(os.path.join(tmp, "engines.log"),
                                           errors="replace").read()[-2000:]))
        time.sleep(0.3)
    p = subprocess.run(["ip", "netns", "exec", eng, "/usr/bin/python3", script, client["url"],
                        client["token"], psum], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    check(p.returncode == 0, "the seed client: %s" % p.stdout.decode())
    result = json.loads(p.stdout)
    check(result["a"] == [list(range(8)), list(range(8, 16))]
          and result["totalsum"] == [120, 120],
          "the seed scenario across the two hosts: %s" % result)
    check(len(result["engines"]) == 2 and {e["size"] for e in result["engines"]} == {2},
          "one world of 2 on the engine host: %s" % result["engines"])

    # Orderly stop: the controller tells the engines; mpiexec ends by itself.
    controller.send_signal(signal.SIGTERM)
    check(controller.wait(timeout=30) == 0, "the controller exits 0 on SIGTERM")
    try:
        mpiexec.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise Failure("the engine job did not end after the controller stopped")
    for name in ("controller.log", "engines.log"):
        text = open(os.path.join(tmp, name), errors="replace").read()
        found = [m for m in SANITIZER_MARKS if m in text]
        check(not found, "%s has a sanitizer report:\n%s" % (name, text[-4000:]))


def test_address_without_interface(_):
    """--ip 0.0.0.0 on a host with only loopback: no address to write, so the
    controller refuses to start and asks for --location; --location is
    written as given; a bad --location is refused."""
    tmp = tempfile.mkdtemp(prefix="ippc-itest-addr-")
    tracker = ProcessTracker(tmp)
    env = dict(os.environ, IPPC_DIR=tmp, IPPC_TEST_MARKER=tmp)
    with Namespaces() as ns:
        lonely = ns.add("lo")
        try:
            p = subprocess.run(["ip", "netns", "exec", lonely, CONTROLLER, "--ip", "0.0.0.0",
                                "--port", "0", "--profile", "lonely"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            out = p.stdout.decode()
            check(p.returncode == 1 and "give --location HOST" in out
                  and not os.path.exists(os.path.join(tmp, "profile_lonely", "security",
                                                      "ippc-client.json")),
                  "0.0.0.0 with only loopback: exit %s %s" % (p.returncode, out))

            ctl = subprocess.Popen(["ip", "netns", "exec", lonely, CONTROLLER, "--ip", "0.0.0.0",
                                    "--location", "ctl.example.org", "--port", "0",
                                    "--profile", "named"], env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
            tracker.add_popen(ctl)
            security = os.path.join(tmp, "profile_named", "security")
            client = wait_file(os.path.join(security, "ippc-client.json"), 30, ctl, "controller")
            engine = wait_file(os.path.join(security, "ippc-engine.json"), 30, ctl, "controller")
            check(client["url"].startswith("http://ctl.example.org:")
                  and engine["url"].startswith("ws://ctl.example.org:"),
                  "--location is what the files name: %s %s" % (client, engine))
            ctl.send_signal(signal.SIGTERM)
            check(ctl.wait(timeout=30) == 0, "exit 0 on SIGTERM")

            for bad in ("a b", "-x", "host/path", ""):
                p = subprocess.run([CONTROLLER, "--location", bad, "--port", "0", "--profile",
                                    "bad"], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=60)
                check(p.returncode == 1 and "--location" in p.stdout.decode(),
                      "--location %r: exit %s %s" % (bad, p.returncode, p.stdout.decode()))

            # The launcher passes --location on.
            p = subprocess.run([CLI, "cluster", "start", "-n", "1", "--engines=local",
                                "--location", "a b"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=120)
            check(p.returncode == 1 and "--location 'a b'" in p.stdout.decode(),
                  "ippc cluster start --location passes it on: %s" % p.stdout.decode())
        finally:
            stubborn = tracker.kill_all(grace=5)
            if stubborn and sys_exc() is None:
                raise Failure("processes had to be killed: %s" % describe(stubborn))
    return []


TESTS = [
    ("clusters_two_hosts_netns", test_two_hosts, "own"),
    ("clusters_address_location", test_address_without_interface, "own"),
]
