"""The seed session, line by line, from Python (Lua engines: psum.lua), and
the ways to reach a cluster: Client(), Client.from_file, Client(url, token)."""

import os

import pytest

import ippc
from conftest import ROOT

PSUM = os.path.join(ROOT, "examples", "psum.lua")


def test_seed_flow(cluster, monkeypatch):
    # As a new user types it: the default profile of IPPC_DIR.
    monkeypatch.setenv("IPPC_DIR", cluster.ippc_dir)
    c = ippc.Client()
    try:
        assert c.ids == [0, 1, 2, 3]
        assert len(c) == 4
        view = c[:]
        view.block = True
        view.run(PSUM)
        view.scatter("a", range(16))
        parts = view["a"]
        assert [list(p) for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11],
                                            [12, 13, 14, 15]]
        view.execute("totalsum = psum(a)")
        assert view["totalsum"] == [120, 120, 120, 120]
        # The same call by apply with a Reference, as the seed's variant.
        assert view.apply_sync("psum", ippc.Reference("a")) == [120, 120, 120, 120]
    finally:
        c.close()


def test_seed_flow_as_typed_nonblocking(c):
    # view.block is False by default (as ipp): calls queue in order per engine.
    view = c[:]
    assert view.block is False
    ar = view.run(PSUM)
    assert isinstance(ar, ippc.AsyncResult)
    view.scatter("b", range(16))
    assert [list(p) for p in view["b"]] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11],
                                            [12, 13, 14, 15]]
    done = view.execute("totalsum2 = psum(b)")
    assert view["totalsum2"] == [120, 120, 120, 120]
    assert done.ready() and done.successful() and ar.successful()


def test_views_by_index(c):
    c[:].execute("r = mpi.rank()", block=True)
    assert c[0]["r"] == 0
    assert c[-1]["r"] == 3
    assert c[0:2]["r"] == [0, 1]
    assert c[[0, 2]]["r"] == [0, 2]
    assert c[1::2]["r"] == [1, 3]
    assert c.direct_view()["r"] == [0, 1, 2, 3]
    assert c[0:2].targets == slice(0, 2)
    assert len(c[0:2]) == 2
    v = c[:]
    v.targets = [3, 1]
    assert v.pull("r", block=True) == [3, 1]


def test_from_file_and_url_token(cluster):
    c1 = ippc.Client.from_file(profile=cluster.profile, ippc_dir=cluster.ippc_dir)
    c2 = ippc.Client(c1.url, c1.token)
    c3 = ippc.Client(cluster.connection_file)
    try:
        assert c1.ids == c2.ids == c3.ids == [0, 1, 2, 3]
        assert c2.runtime == "lua"
    finally:
        for x in (c1, c2, c3):
            x.close()


def test_push_pull_values(c):
    v = c[:]
    v.block = True
    v.push({"s": "text", "n": 3, "f": 0.5, "t": {"k": [1, "x"]}, "b": True})
    assert v.pull("s") == ["text"] * 4
    assert c[2].pull(["n", "f", "b"], block=True) == [3, 0.5, True]
    assert c[1]["t"] == {"k": [1, "x"]}
    v["w"] = [1.5, 2.5]
    assert [list(x) for x in v["w"]] == [[1.5, 2.5]] * 4
    v.scatter("sc", list(range(10)))
    assert list(v.gather("sc")) == list(range(10))
    assert [len(p) for p in v["sc"]] == [3, 3, 2, 2]


def test_direct_map_and_apply(c):
    v = c[:]
    v.execute("function sq(x) return x * x end function add(a, b) return a + b end",
              block=True)
    assert v.map_sync("sq", range(10)) == [x * x for x in range(10)]
    assert v.map_sync("add", [1, 2, 3], [10, 20, 30]) == [11, 22, 33]
    assert c[3].apply_sync("add", 2, 5) == 7
    ar = v.apply_async("add", 1, 1)
    assert ar.get(timeout=60) == [2, 2, 2, 2]


def test_python_function_on_lua_engines_is_clear(c):
    def f(x):
        return x

    with pytest.raises(TypeError, match="Python functions need Python engines"):
        c[:].apply_sync(f, 1)


def test_native_plugin_load(c):
    from conftest import BIN
    lib = os.path.join(os.path.dirname(BIN), "plugins", "libpsum.so")
    v = c[:]
    v.load(lib, block=True)
    v.scatter("p", list(range(1, 9)), block=True)
    assert v.apply_sync("psum", ippc.Reference("p")) == [36, 36, 36, 36]
    with pytest.raises(ippc.CompositeError) as info:
        v.load("/nonexistent/libnothing.so", block=True)
    assert info.value.ename == "PluginError"


def test_reset_clears_namespace(c):
    v = c[2]
    v["gone"] = 1
    v.reset(block=True)
    with pytest.raises(ippc.RemoteError):
        v.pull("gone", block=True)
