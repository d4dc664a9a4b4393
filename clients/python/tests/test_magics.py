"""%px, %%px, %autopx and %pxresult through IPython's InteractiveShell, with
[stdout:N] headers as IPython Parallel prints them."""

import pytest

from IPython.core.interactiveshell import InteractiveShell

import ippc


@pytest.fixture
def shell(c, monkeypatch, cluster):
    monkeypatch.setenv("IPPC_DIR", cluster.ippc_dir)
    sh = InteractiveShell.instance()
    res = sh.run_cell("%load_ext ippc")
    assert res.success, res.error_in_exec
    c[:].activate()
    yield sh
    from ippc import magics
    magics._state.clear()


def run(shell, capsys, code):
    capsys.readouterr()
    res = shell.run_cell(code)
    out = capsys.readouterr().out
    return res, out


def test_px_line(shell, capsys):
    res, out = run(shell, capsys, '%px print("rank " .. mpi.rank())')
    assert res.success, res.error_in_exec
    assert out.splitlines() == ["[stdout:%d] rank %d" % (i, i) for i in range(4)]


def test_px_cell_targets_and_multiline(shell, capsys):
    res, out = run(shell, capsys, '%%px --targets 0:2\nprint("a")\nprint("b")\n')
    assert res.success, res.error_in_exec
    assert out.splitlines() == ["[stdout:0] ", "a", "b", "[stdout:1] ", "a", "b"]


def test_px_return_value(shell, capsys):
    res, out = run(shell, capsys, "%px --targets 1 return 6 * 7")
    assert res.success
    assert "Out[1:" in out and "]: 42" in out


def test_px_noblock_and_pxresult(shell, capsys):
    res, out = run(shell, capsys, '%%px --noblock\nprint("later " .. mpi.rank())\n')
    assert res.success
    assert isinstance(res.result, ippc.AsyncResult)  # shown as Out[n], as ipyparallel does
    assert "[stdout:" not in out
    res, out = run(shell, capsys, "%pxresult")
    assert res.success
    assert out.splitlines() == ["[stdout:%d] later %d" % (i, i) for i in range(4)]


def test_px_stream(shell, capsys):
    res, out = run(shell, capsys, '%%px --stream --targets 2\nprint("streamed")\n')
    assert res.success, res.error_in_exec
    assert out.splitlines() == ["[stdout:2] streamed"]


def test_px_error_shows_remote_traceback(shell, capsys):
    res = shell.run_cell('%px --targets 3 error("from engine")')
    out = capsys.readouterr()
    assert not res.success
    assert isinstance(res.error_in_exec, ippc.RemoteError)
    assert "from engine" in out.out + out.err
    assert "stack traceback" in out.out + out.err
    res = shell.run_cell('%px error("all of them")')
    assert isinstance(res.error_in_exec, ippc.CompositeError)
    assert len(res.error_in_exec.elist) == 4


def test_autopx(shell, capsys):
    res, out = run(shell, capsys, "%autopx")
    assert res.success and "enabled" in out
    res, out = run(shell, capsys, 'y = mpi.rank() * 10\nprint("auto " .. y)\n')
    assert res.success, res.error_in_exec
    assert out.splitlines() == ["[stdout:%d] auto %d" % (i, i * 10) for i in range(4)]
    res, out = run(shell, capsys, "%autopx")
    assert res.success and "disabled" in out
    res, out = run(shell, capsys, "py_local = 5\nprint(py_local)")
    assert out.strip() == "5"  # ran locally again


def test_load_ext_alone_uses_default_profile(c, monkeypatch, cluster, capsys):
    from ippc import magics
    magics._state.clear()
    monkeypatch.setenv("IPPC_DIR", cluster.ippc_dir)
    sh = InteractiveShell.instance()
    sh.run_cell("%load_ext ippc")
    res, out = run(sh, capsys, "%px --targets 0 print(1)")
    assert res.success, res.error_in_exec
    assert out.splitlines() == ["[stdout:0] 1"]
    magics._state.clear()


def test_seed_session_with_magics(shell, c, capsys):
    # The document's session: view.activate(), view.run, scatter, %px, view[...].
    import os
    from conftest import ROOT
    view = c[:]
    view.activate()
    view.run(os.path.join(ROOT, "examples", "psum.lua"), block=True)
    view.scatter("a", range(16), block=True)
    res, out = run(shell, capsys, "%px totalsum = psum(a)")
    assert res.success, res.error_in_exec
    assert view["totalsum"] == [120, 120, 120, 120]
