"""@view.remote(), @view.parallel(), AsyncResult.add_done_callback and
view.sync_imports(), as IPython Parallel users write them, on Python
engines (and what Lua engines answer)."""

import sys
import threading

import numpy as np
import pytest

import ippc


def double(x):
    return 2 * x


def doubled_all(xs):
    return [2 * x for x in xs]


def ranks_of(xs):
    from mpi4py import MPI
    return [MPI.COMM_WORLD.Get_rank()] * len(xs)


def scaled(a, k):
    return a * k[0]


def add_pairs(xs, ys):
    return [x + y for x, y in zip(xs, ys)]


def part_sum(xs):
    return float(sum(xs))


def test_remote_direct_and_balanced(pc):
    view = pc[:]
    rf = view.remote(block=True)(double)
    assert isinstance(rf, ippc.RemoteFunction) and rf.__name__ == "double"
    assert rf(3) == [6, 6, 6, 6]
    assert rf(x=5) == [10, 10, 10, 10]
    ar = view.remote(block=False)(double)(4)
    assert isinstance(ar, ippc.AsyncResult) and ar.get(60) == [8, 8, 8, 8]
    # block=None follows the view's block at call time.
    follow = pc[0:2].remote()(double)
    v = follow.view
    v.block = True
    assert follow(1) == [2, 2]
    v.block = False
    assert follow(1).get(60) == [2, 2]
    lb = pc.load_balanced_view()
    assert lb.remote(block=True)(double)(21) == 42


def test_parallel_splits_like_scatter(pc):
    view = pc[:]
    pf = view.parallel(block=True)(doubled_all)
    assert isinstance(pf, ippc.ParallelFunction)
    assert pf(range(10)) == [2 * i for i in range(10)]
    # One part per engine, in engine order, as scatter splits 10 items.
    assert view.parallel(block=True)(ranks_of)(range(10)) == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    # Several sequences are cut alike; NumPy parts are joined with concatenate.
    assert view.parallel(block=True)(add_pairs)([1, 2, 3, 4, 5], [10, 20, 30, 40, 50]) == \
        [11, 22, 33, 44, 55]
    a = view.parallel(block=True)(scaled)(np.arange(8.0), [3] * 8)
    assert isinstance(a, np.ndarray) and a.tolist() == [3.0 * i for i in range(8)]
    # Scalars per part stay a list of the parts' results.
    assert view.parallel(block=True)(part_sum)(range(8)) == [1.0, 5.0, 9.0, 13.0]
    # Not blocking: an AsyncResult whose get() is the joined result.
    ar = view.parallel(block=False)(doubled_all)(range(6))
    assert ar.get(60) == [0, 2, 4, 6, 8, 10]
    # .map: once per item.
    assert view.parallel(block=True)(double).map(range(5)) == [0, 2, 4, 6, 8]
    # A subset of engines gets the parts.
    assert pc[1:3].parallel(block=True)(ranks_of)(range(4)) == [1, 1, 2, 2]
    # Balanced: one task per engine's part, joined in order.
    lb = pc.load_balanced_view()
    assert lb.parallel(block=True)(doubled_all)(range(9)) == [2 * i for i in range(9)]


def test_parallel_bad_calls(pc):
    pf = pc[:].parallel(block=True)(add_pairs)
    with pytest.raises(ValueError, match="at least one sequence"):
        pf()
    with pytest.raises(ValueError, match="differ in length"):
        pf([1, 2, 3], [1, 2])
    with pytest.raises(TypeError, match="decorates a function"):
        pc[:].remote()(42)
    # A part that fails: the remote error, with its traceback.
    with pytest.raises(ippc.CompositeError) as e:
        pc[:].parallel(block=True)(part_sum)(["a", "b", "c", "d"])
    assert "TypeError" in str(e.value)


def test_add_done_callback(pc):
    seen = []
    done = threading.Event()

    def callback(ar):
        seen.append(ar.get())
        done.set()

    ar = pc[:].apply_async(double, 2)
    ar.add_done_callback(callback)
    assert done.wait(60), "the callback was not called"
    assert seen == [[4, 4, 4, 4]]
    # On a finished result: called at once (from the client's thread).
    again = threading.Event()
    ar.add_done_callback(lambda r: again.set() if r is ar else None)
    assert again.wait(30)
    # A failing callback is reported on stderr and does not stop the others.
    third = threading.Event()
    ar.add_done_callback(lambda r: 1 / 0)
    ar.add_done_callback(lambda r: third.set())
    assert third.wait(30)


def test_sync_imports(pc, capsys):
    view = pc[:]
    with view.sync_imports():
        import json  # noqa: F401
        from math import sqrt  # noqa: F401
        import os.path  # noqa: F401
    out = capsys.readouterr().out
    assert "importing json on engine(s)" in out and "importing sqrt from math on engine(s)" in out
    view.execute("sy = [json.dumps([1, 2]), sqrt(16.0), os.path.basename('/a/b')]", block=True)
    assert view.pull("sy", block=True) == [["[1, 2]", 4.0, "b"]] * 4
    # quiet, and local=False imports nothing here.
    sys.modules.pop("colorsys", None)
    with view.sync_imports(local=False, quiet=True):
        import colorsys  # noqa: F401
    assert "colorsys" not in sys.modules
    assert capsys.readouterr().out == ""
    view.execute("cs = colorsys.rgb_to_hsv(1.0, 0.0, 0.0)[0]", block=True)
    assert view.pull("cs", block=True) == [0.0] * 4
    # The import hook is gone after the block, also after an error in it.
    import builtins
    before = builtins.__import__
    with pytest.raises(ZeroDivisionError):
        with view.sync_imports(quiet=True):
            1 / 0
    assert builtins.__import__ is before
    # A module the engines lack: the remote ModuleNotFoundError.
    with pytest.raises(ippc.CompositeError) as e:
        with view.sync_imports(local=False, quiet=True):
            import no_such_module_ippc  # noqa: F401
    assert "no_such_module_ippc" in str(e.value)


def test_lua_engines_refuse_python_functions(c):
    with pytest.raises(TypeError, match="Python engines"):
        with c[:].sync_imports():
            pass
    with pytest.raises(TypeError, match="Python functions need Python engines"):
        c[:].remote(block=True)(double)(1)
    with pytest.raises(TypeError, match="Python functions need Python engines"):
        c[:].parallel(block=True)(doubled_all)([1, 2])
