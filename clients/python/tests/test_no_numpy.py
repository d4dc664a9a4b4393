"""Without NumPy the client is standard library only: arrays come back as
lists (asked for in format=list), the seed flow works the same."""

import os
import subprocess
import sys

from conftest import SDK

SCRIPT = r"""
import sys
sys.modules["numpy"] = None          # import numpy now fails, as on a bare Python
import ippc
from ippc import values
assert not values.HAVE_NUMPY and values.wire_format() == "list"
c = ippc.Client.from_file(sys.argv[1])
v = c[:]
v.block = True
v.execute("function psum(a) return mpi.allreduce(a:sum(), 'sum') end")
v.scatter("a", range(16))
assert v["a"] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]], v["a"]
v.execute("totalsum = psum(a)")
assert v["totalsum"] == [120, 120, 120, 120]
assert v.gather("a") == list(range(16))
assert c[0]["a"] == [0, 1, 2, 3]
lb = c.load_balanced_view()
v.execute("function sq(x) return x * x end")
assert lb.map_sync("sq", range(100), progress=False) == [x * x for x in range(100)]
assert lb.map_sync("sq", [], progress=False) == []
assert v.map_sync("sq", []) == []
# a typed array answer decodes to nested lists without NumPy
assert values.array_from_raw(b"\x01\x00\x00\x00\x02\x00\x00\x00", "int32", "2") == [1, 2]
c.close()
print("ok")
"""


def test_without_numpy(cluster):
    env = dict(os.environ, PYTHONPATH=SDK)
    p = subprocess.run([sys.executable, "-c", SCRIPT, cluster.connection_file],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                       timeout=120, text=True)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stdout
