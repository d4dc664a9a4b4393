"""Errors: remote failures map to RemoteError / CompositeError / TaskAborted
with the engines' tracebacks; bad URLs, tokens and targets give clear errors."""

import json
import socket

import pytest

import ippc


def test_single_engine_error_is_remote_error(c):
    with pytest.raises(ippc.RemoteError) as info:
        c[1].execute("local x = nil\nlocal y = x.field", block=True)
    e = info.value
    assert not isinstance(e, ippc.CompositeError)
    assert e.engine_id == 1
    assert e.ename == "RuntimeError"
    assert "attempt to index" in e.evalue
    assert any("stack traceback" in line for line in e.traceback)
    assert "stack traceback" in str(e)  # the message carries the remote traceback


def test_many_engine_error_is_composite(c):
    with pytest.raises(ippc.CompositeError) as info:
        c[:].execute('if mpi.rank() % 2 == 1 then error("odd rank") end', block=True)
    e = info.value
    assert sorted(x.engine_id for x in e.elist) == [1, 3]
    assert all(isinstance(x, ippc.RemoteError) and "odd rank" in x.evalue for x in e.elist)
    assert "[1:execute]" in str(e) and "[3:execute]" in str(e)
    with pytest.raises(ippc.RemoteError):
        e.raise_exception(0)


def test_async_error_and_successful(c):
    ar = c[0:2].execute('error("later")', block=False)
    assert ar.wait(60)
    assert ar.ready() and not ar.successful()
    with pytest.raises(ippc.CompositeError):
        ar.get()


def test_syntax_error_and_run_file_name(c, tmp_path):
    with pytest.raises(ippc.RemoteError) as info:
        c[0].execute("x = = 1", block=True)
    assert info.value.ename == "SyntaxError"
    path = tmp_path / "broken.lua"
    path.write_text("x = 1\nerror('in the file')\n")
    with pytest.raises(ippc.RemoteError) as info:
        c[0].run(str(path), block=True)
    assert "broken.lua:2" in str(info.value)


def test_load_balanced_error(c):
    c[:].execute('function fails(x) error("bad item " .. x) end', block=True)
    lb = c.load_balanced_view()
    with pytest.raises(ippc.RemoteError) as info:
        lb.apply_sync("fails", 5)
    assert "bad item 5" in info.value.evalue
    assert info.value.engine_id in c.ids
    with pytest.raises(ippc.CompositeError) as info:
        lb.map_sync("fails", [1, 2], progress=False)
    assert len(info.value.elist) == 2


def test_timeout_and_interrupt(c):
    v = c[2]
    ar = v.execute("while true do end", block=False)
    with pytest.raises(ippc.TimeoutError):
        ar.get(timeout=0.5)
    assert isinstance(ippc.TimeoutError("x"), TimeoutError)  # also the builtin
    assert not ar.ready()
    assert v.interrupt() == [2]
    assert ar.wait(60)
    with pytest.raises(ippc.TaskAborted):
        ar.get()
    assert v.apply_sync("tostring", 5) == "5"  # the engine goes on


def test_task_timeout_flag(c):
    lb = c.load_balanced_view()
    c[:].execute("function spin() while true do end end", block=True)
    with lb.temp_flags(timeout=0.5):
        ar = lb.apply_async("spin")
    assert lb.timeout is None
    with pytest.raises(ippc.RemoteError) as info:
        ar.get(timeout=60)
    assert info.value.ename == "TimeoutError"


def test_bad_token(cluster):
    info = json.load(open(cluster.connection_file))
    with pytest.raises(ippc.AuthenticationError) as e:
        ippc.Client(info["url"], "0" * 64)
    assert e.value.status == 401 and "token" in str(e.value)


def test_bad_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(ippc.ConnectionError) as e:
        ippc.Client("http://127.0.0.1:%d" % port, "x")
    assert "cannot connect" in str(e.value)
    with pytest.raises(ValueError):
        ippc.Client("ftp://example", "x")


def test_missing_connection_file(tmp_path):
    with pytest.raises(ippc.IppcError) as e:
        ippc.Client(profile="nothing", ippc_dir=str(tmp_path), timeout=0.3)
    assert "no connection file" in str(e.value) and "cluster" in str(e.value)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ippc.IppcError, match="not an ippc connection file"):
        ippc.Client.from_file(str(bad), timeout=0.3)


def test_bad_targets(c):
    with pytest.raises(ippc.NoEnginesError):
        c[[17]].execute("x = 1", block=True)
    with pytest.raises(ippc.APIError) as e:
        c["zz"].execute("x = 1", block=True)
    assert e.value.code == "bad_targets" and e.value.status == 400
    with pytest.raises(TypeError):
        c[:].push({1: 2})
