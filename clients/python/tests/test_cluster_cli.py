"""ippc.Cluster as a context manager leaves no process behind; `python -m
ippc status|watch` against the session cluster."""

import os
import subprocess
import sys

import pytest

import ippc
from conftest import SDK, processes_with


def test_cluster_context_manager_leaves_nothing():
    cl = ippc.Cluster(n=2, engines="mpi", timeout=60)
    assert cl.ippc_dir == ""  # its private folder is made at start
    with cl as c:
        marker = cl.ippc_dir
        assert os.path.isdir(marker)
        assert c.ids == [0, 1]
        assert c[:].apply_sync("tostring", 5) == ["5", "5"]
        assert processes_with(marker)  # the controller and the engines run
        assert "2 engines" in cl.output
    assert not cl.running
    assert processes_with(marker) == []
    assert not os.path.exists(marker)


def test_cluster_start_failure_is_clear(tmp_path):
    cl = ippc.Cluster(n=2, engines="mpi", ippc=str(tmp_path / "no-such-ippc"))
    with pytest.raises((ippc.IppcError, OSError)):
        cl.start_cluster_sync()
    with pytest.raises(ValueError):
        ippc.Cluster(n=0)


def run_cli(cluster, *args):
    env = dict(os.environ, PYTHONPATH=SDK)
    return subprocess.run([sys.executable, "-m", "ippc", *args, "--file",
                           cluster.connection_file], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, timeout=60, text=True)


def test_status(cluster):
    p = run_cli(cluster, "status")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "4 engine(s) live" in lines[0]
    assert sum(1 for line in lines if line.split()[:1] in (["0"], ["1"], ["2"], ["3"])) == 4
    p = run_cli(cluster, "status", "--json")
    assert p.returncode == 0 and '"engines"' in p.stdout


def test_watch(cluster, c):
    env = dict(os.environ, PYTHONPATH=SDK)
    proc = subprocess.Popen([sys.executable, "-m", "ippc", "watch", "--file",
                             cluster.connection_file, "--topics", "tasks,stdout",
                             "--count", "4"], stdout=subprocess.PIPE, env=env, text=True)
    try:
        first = proc.stdout.readline()
        assert "snapshot" in first
        c[0].execute('print("watched")', block=True)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "[stdout:0] task" in out and "watched" in out


def test_bad_file_exit_status(tmp_path):
    env = dict(os.environ, PYTHONPATH=SDK)
    p = subprocess.run([sys.executable, "-m", "ippc", "status", "--file",
                        str(tmp_path / "none.json")], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, timeout=60, text=True)
    assert p.returncode == 1 and "no connection file" in p.stderr


def test_engine_death_is_engine_error():
    # A cluster of its own: one of its engines is killed under a running task.
    import signal
    import time
    cl = ippc.Cluster(n=2, engines="mpi", timeout=60)
    with cl as c:
        ar = c[1].execute("while true do end", block=False)
        pid = [e["pid"] for e in c.engines() if e["id"] == 1][0]
        time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ippc.EngineError) as info:
            ar.get(60)
        assert info.value.engine_id == 1 and "died" in str(info.value)
        assert c.ids == [0] or c.ids == []  # MPI may take the other rank down too
    assert processes_with(cl.ippc_dir) == []


def test_client_shutdown_stops_the_cluster():
    cl = ippc.Cluster(n=1, engines="mpi", timeout=60)
    c = cl.start_and_connect_sync()
    try:
        assert c.ids == [0]
        c.shutdown()
        assert processes_with(cl.ippc_dir) == []
        with pytest.raises(ippc.ConnectionError):
            ippc.Client(c.url, c.token)
    finally:
        cl.stop_cluster_sync()
    assert processes_with(cl.ippc_dir) == []


def test_client_waits_for_the_connection_file(cluster, tmp_path):
    import shutil
    import threading
    dest = tmp_path / "profile_late" / "security"

    def write_later():
        import time
        time.sleep(0.5)
        dest.mkdir(parents=True)
        shutil.copy(cluster.connection_file, dest / "ippc-client.json")

    t = threading.Thread(target=write_later)
    t.start()
    try:
        c = ippc.Client(profile="late", ippc_dir=str(tmp_path), timeout=30)
        assert c.ids == [0, 1, 2, 3]
        c.close()
    finally:
        t.join()


def test_progress_in_a_notebook_display(capsys):
    from ippc.progress import Progress
    bar = Progress(4, "map", widget=True)
    bar.update(1)
    bar.update(4)
    bar.close()
    out = capsys.readouterr().out
    assert "1/4 tasks" in out and "4/4 tasks" in out
