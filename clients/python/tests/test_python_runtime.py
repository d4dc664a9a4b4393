"""The SDK on Python engines (runtime="python"): the seed's psum.py unchanged,
Python functions sent by source to apply and map, Python errors, %px.

These need an ippc-engine built with the Python runtime (issue 12).  When
`ippc-engine --help` offers no `--runtime python`, the python_cluster
fixture FAILS each of them as "not available" — never a silent pass."""

import os

import numpy as np
import pytest

import ippc
from conftest import ROOT

# The seed document's psum.py, byte for byte.
SEED_PSUM = """from mpi4py import MPI
import numpy as np

def psum(a):
    locsum = np.sum(a)
    rcvBuf = np.array(0.0, 'd')
    MPI.COMM_WORLD.Allreduce([locsum, MPI.DOUBLE],
        [rcvBuf, MPI.DOUBLE],
        op=MPI.SUM)
    return rcvBuf
"""


def double(x):
    return 2 * x


def square_plus(x, y=0):
    return x * x + y


def norm(a):
    return float(np.sqrt(np.dot(a, a)))  # np: imported on the engines for it


def rank_and_value(a):
    from mpi4py import MPI
    return [MPI.COMM_WORLD.Get_rank(), float(np.sum(a))]


def test_python_seed_flow(pc, tmp_path):
    path = os.path.join(ROOT, "examples", "psum.py")
    if not os.path.exists(path):
        path = str(tmp_path / "psum.py")
        with open(path, "w") as f:
            f.write(SEED_PSUM)
    assert pc.runtime == "python"
    view = pc[:]
    view.block = True
    view.run(path)
    view.scatter("a", np.arange(16, dtype="float"))
    parts = view["a"]
    assert [list(p) for p in parts] == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0],
                                        [8.0, 9.0, 10.0, 11.0], [12.0, 13.0, 14.0, 15.0]]
    view.execute("totalsum = psum(a)")
    assert [float(x) for x in view["totalsum"]] == [120.0, 120.0, 120.0, 120.0]


def test_apply_python_function_by_source(pc):
    assert pc.runtime == "python"
    v = pc[:]
    assert v.apply_sync(double, 21) == [42, 42, 42, 42]
    assert pc[1].apply_sync(square_plus, 3, y=1) == 10
    assert v.map_sync(double, range(10)) == [2 * x for x in range(10)]
    v.push({"vec": np.array([3.0, 4.0])}, block=True)
    assert v.apply_sync(norm, ippc.Reference("vec")) == [5.0, 5.0, 5.0, 5.0]


def test_apply_with_reference_and_mpi4py(pc):
    v = pc[:]
    v.scatter("a", np.arange(8.0), block=True)
    got = v.apply_sync(rank_and_value, ippc.Reference("a"))
    assert got == [[0, 1.0], [1, 5.0], [2, 9.0], [3, 13.0]]


def test_load_balanced_python_function(pc):
    lb = pc.load_balanced_view()
    assert lb.map_sync(double, range(100), progress=False) == [2 * x for x in range(100)]
    assert lb.apply_sync(square_plus, 4, 2) == 18
    with pytest.raises(TypeError, match="module-level"):
        lb.apply_sync(lambda x: x, 1)


def test_python_errors(pc):
    with pytest.raises(ippc.RemoteError) as info:
        pc[0].execute("1/0", block=True)
    assert info.value.ename == "ZeroDivisionError"
    assert any("ZeroDivisionError" in line for line in info.value.traceback) or \
        "division" in info.value.evalue
    with pytest.raises(ippc.CompositeError) as info:
        pc[:].execute("undefined_name", block=True)
    assert {e.ename for e in info.value.elist} == {"NameError"}


def test_python_numpy_round_trip(pc):
    x = np.random.default_rng(3).standard_normal(1_000_000)
    pc[2]["x"] = x
    y = pc[2]["x"]
    assert isinstance(y, np.ndarray) and y.tobytes() == x.tobytes()


def test_python_px(pc, monkeypatch, python_cluster, capsys):
    from IPython.core.interactiveshell import InteractiveShell
    from ippc import magics
    magics._state.clear()
    sh = InteractiveShell.instance()
    sh.run_cell("%load_ext ippc")
    pc[:].activate()
    capsys.readouterr()
    res = sh.run_cell("%px from mpi4py import MPI; print('rank', MPI.COMM_WORLD.rank)")
    out = capsys.readouterr().out
    magics._state.clear()
    assert res.success, res.error_in_exec
    assert out.splitlines() == ["[stdout:%d] rank %d" % (i, i) for i in range(4)]


def test_the_document_session(python_cluster, pc, monkeypatch, capsys):
    # The seed document's In [1]..In [8], with ippc for ipp.
    from IPython.core.interactiveshell import InteractiveShell
    from ippc import magics
    magics._state.clear()
    sh = InteractiveShell.instance()
    sh.run_cell("%load_ext ippc")
    c = ippc.Cluster.from_file(profile=python_cluster.profile,
                               ippc_dir=python_cluster.ippc_dir).connect_client_sync()
    try:
        view = c[:]
        view.activate()
        path = os.path.join(ROOT, "examples", "psum.py")
        view.run(path, block=True)
        view.scatter("a", np.arange(16, dtype="float"), block=True)
        assert [list(x) for x in view["a"]] == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0],
                                                [8.0, 9.0, 10.0, 11.0], [12.0, 13.0, 14.0, 15.0]]
        res = sh.run_cell("%px totalsum = psum(a)")
        assert res.success, res.error_in_exec
        assert [float(x) for x in view["totalsum"]] == [120.0, 120.0, 120.0, 120.0]
    finally:
        c.close()
        magics._state.clear()


def test_python_1e7_round_trip_and_stdout_stream(pc):
    x = np.random.default_rng(11).standard_normal(10_000_000)
    pc[0]["big"] = x
    assert pc[0]["big"].tobytes() == x.tobytes()
    pc[0].execute("del big", block=True)
    ar = pc[:].execute("import time\nfor i in range(3):\n    print('tick', i)\n", block=False)
    assert ar.get(60) is not None
    assert ar.stdout == ["tick 0\ntick 1\ntick 2\n"] * 4
