"""test_python_runtime.py — the Python runtime (ippc-engine --runtime python)
through REST on 4 real MPI engines: the seed's psum.py unchanged, execute and
run with Python tracebacks naming file and line, values both ways (JSON and a
1e6-element float64 array bit-exact as raw bytes), scatter/gather, apply with
$ref and kwargs, balanced tasks and map, stdout streamed before the task ends,
interrupts of a spinning loop, reset/delete/list, a native plugin kernel as a
Python callable, and bad input.  One cluster serves every step."""

import os
import re
import struct
import tempfile
import time

from harness import Cluster, ROOT, check, expect, expect_error
from common import same, show, view, expect_done, expect_task_results
from test_runtime import plugin, start, interrupt_until_done
from test_streams import Stream, wait_completed, submit

PY = ["--runtime", "python"]


def run_all(c, code, what=None):
    r = c.api.post(view("all", "execute"), {"code": code})
    return [res.get("value") for res in expect_task_results(r, c.ids(), what or code[:60])]


def errors_of(r, n, what):
    body = expect_done(r, n, what, status="error")
    return body["results"]


def seed_flow(c):
    api, ids = c.api, c.ids()
    with open(os.path.join(ROOT, "examples", "psum.py")) as f:
        source = f.read()
    expect_task_results(api.post(view("all", "run"), {"filename": "psum.py", "source": source}),
                        ids, "run psum.py (the seed's file, unchanged)")
    data = [float(x) for x in range(16)]
    expect_task_results(api.post(view("all", "scatter"), {"name": "a", "data": data}), ids,
                        "scatter a = arange(16.0)")
    body = expect_done(api.get(view("all", "vars/a")), 4, "view['a']")
    want = [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0],
            [12.0, 13.0, 14.0, 15.0]]
    check(same(body["results"], want), "view['a']: %s" % show(body))
    expect_task_results(api.post(view("all", "execute"), {"code": "totalsum = psum(a)"}), ids,
                        "totalsum = psum(a)")
    body = expect_done(api.get(view("all", "vars/totalsum")), 4, "view['totalsum']")
    check(same(body["results"], [120.0] * 4), "totalsum: %s" % show(body))


def engines_report_python(c):
    body = expect(c.api.get("/api/v1/engines"), 200, "GET /api/v1/engines")
    check([e.get("runtime") for e in body["engines"]] == ["python"] * 4,
          "every engine reports runtime python: %s" % show(body))


def register_runtime_checks(c):
    """A register naming no known runtime, or a rank of a Python job saying
    Lua, is refused with an error message; the engines stay as they were."""
    from test_hostile import address
    from wsclient import WebSocket
    job = c.api.engines()[0]["job"]
    base = {"type": "register", "key": c.engine_info["key"], "rank": 0, "size": 4,
            "host": "h", "pid": 1, "version": "0"}
    for what, extra, word in (("runtime ruby", {"job": "other", "runtime": "ruby"}, "runtime must"),
                              ("runtime 5", {"job": "other", "runtime": 5}, "runtime must"),
                              ("lua in a python job", {"job": job, "runtime": "lua"},
                               "runs the python runtime, rank 0 says lua")):
        ws = WebSocket.connect("ws://%s:%d/engine" % address(c), token=c.engine_info["key"],
                               protocols=("ippc.engine.v1",), timeout=30)
        try:
            ws.send_json(dict(base, **extra))
            answer = ws.recv_json(timeout=20)
            check(answer.get("type") == "error" and word in answer.get("message", ""),
                  "%s: want an error saying %r, got %r" % (what, word, answer))
        finally:
            ws.abort()
    check(len(c.api.live_engines()) == 4, "the 4 engines are still there")


def tracebacks(c):
    api = c.api
    res = errors_of(api.post(view("all", "execute"), {"code": "x = 1\n1/0"}), 4, "1/0")
    for r in res:
        check(r["ename"] == "ZeroDivisionError" and r["evalue"] == "division by zero",
              "ename/evalue of 1/0: %s" % show(r))
        check(any(re.fullmatch(r'  File "<execute-\d+>", line 2, in <module>', line)
                  for line in r["traceback"]),
              "the traceback names <execute-N> line 2: %s" % show(r))
    src = "def inner(v):\n    return v['missing']\n\ndef outer():\n    return inner({})\n\nouter()\n"
    res = errors_of(api.post(view("all", "run"), {"filename": "bad.py", "source": src}), 4,
                    "run bad.py")
    for r in res:
        tb = r["traceback"]
        check(r["ename"] == "KeyError" and '  File "bad.py", line 7, in <module>' in tb
              and '  File "bad.py", line 2, in inner' in tb
              and "    return v['missing']" in tb and tb[-1] == "KeyError: 'missing'",
              "the traceback names bad.py's lines and shows them: %s" % show(r))
        check(not any("<ippc>" in line for line in tb), "no engine frames: %s" % show(tb))
    res = errors_of(api.post(view("all", "run"), {"filename": "syn.py", "source": "a = 1\nb = (\n"}),
                    4, "syntax error")
    for r in res:
        check(r["ename"] == "SyntaxError" and "syn.py" in r["evalue"]
              and any('File "syn.py", line 2' in x for x in r["traceback"]),
              "a syntax error names the file and line: %s" % show(r))
    # A function from an earlier execute shows its own lines when a later
    # execute calls it (each execute has its own name in linecache).
    expect_done(api.post(view("all", "execute"), {"code": "def halve(v):\n    return v / 0\n"}),
                4, "def halve")
    res = errors_of(api.post(view("all", "execute"), {"code": "y = 2\nhalve(y)\n"}), 4,
                    "halve(y)")
    for r in res:
        tb = r["traceback"]
        check(any(line.strip() == "return v / 0" for line in tb)
              and any(line.strip() == "halve(y)" for line in tb),
              "the traceback shows the lines of both executes: %s" % show(tb))
    # the engine goes on, the namespace kept what ran before the error
    check(run_all(c, "x") == [1] * 4, "x from before 1/0 is kept")


def values(c):
    api = c.api
    v = {"s": "h\u00e9", "l": [1, "a", None, True, 2.5], "d": {"k": [1.5, {"z": None}]},
         "n": None, "b": False, "i": -(2 ** 63), "f": 0.1}
    expect_task_results(api.post(view("all", "push"), {"namespace": {"v": v}}), c.ids(), "push v")
    check(run_all(c, "type(v['l']).__name__, type(v['d']).__name__, v['l'][2] is None") ==
          [["list", "dict", True]] * 4, "JSON becomes list, dict and None")
    expect_done(api.put(view("1", "vars/one"), {"x": [1.5, None]}), 1, "a push to one engine")
    check(run_all(c, "globals().get('one')") == [None, {"x": [1.5, None]}, None, None],
          "a push to engine 1 only")
    body = expect_done(api.get(view("all", "vars/v")), 4, "pull v")
    check(all(same(x, v) for x in body["results"]), "v comes back as it went: %s" % show(body))
    check(run_all(c, "t = (1, 2.0, 'x'); {3: 'int key'}") == [{"3": "int key"}] * 4,
          "int keys become strings")
    body = expect_done(api.get(view("all", "vars/t")), 4, "pull a tuple")
    check(all(same(x, [1, 2.0, "x"]) for x in body["results"]), "a tuple is a list: %s" % show(body))

    n = 1000000
    raw = struct.pack("<%dd" % n, *[i * 0.5 + 1e-3 for i in range(n)])
    r = api.put(view("all", "vars/big") + "?dtype=float64&shape=%d" % n, raw=raw,
                headers={"Content-Type": "application/octet-stream"})
    expect(r, 200, "raw PUT of 1e6 float64")
    check(run_all(c, "type(big).__name__, str(big.dtype), big.shape[0], float(big[3])")
          == [["ndarray", "float64", n, 1.501]] * 4, "big is a numpy array on every engine")
    # the array lies over the received bytes, owned by the engine's buffer object
    owner = "b = big\nwhile getattr(b, 'base', None) is not None:\n    b = b.base\n"
    check(run_all(c, owner + "type(b).__name__, big.flags.writeable") == [["blob", True]] * 4,
          "big is a view of the received bytes (no copy), and writable")
    for e in ("0", "3"):
        r = api.get(view(e, "vars/big"), headers={"Accept": "application/octet-stream"})
        check(r.status == 200 and r.raw == raw, "1e6 float64 pulled bit-exact from engine %s "
              "(%d bytes back)" % (e, len(r.raw or b"")))
    expect_task_results(api.post(view("all", "execute"), {"code": "del big"}), c.ids(), "del big")

    res = errors_of(api.post(view("all", "execute"), {"code": "import sys\nsys"}), 4,
                    "a module as a value")
    check(all(r["ename"] == "TypeError" and "module" in r["evalue"]
              and "last expression" in r["evalue"] for r in res),
          "a value that cannot travel is a TypeError: %s" % show(res[0]))
    check(run_all(c, "import sys\nsys;") == [None] * 4, "';' keeps the last value quiet")
    res = errors_of(api.post(view("all", "execute"), {"code": "import numpy as np\nnp.zeros(3, 'complex')"}),
                    4, "a complex array")
    check(all(r["ename"] == "TypeError" and "complex128" in r["evalue"] for r in res),
          "an array of another dtype says which: %s" % show(res[0]))


def scatter_gather(c):
    from test_fanout import fanout_counts
    api = c.api
    before = fanout_counts(c)
    expect_task_results(api.post(view("all", "scatter"), {"name": "s", "data": list(range(10))}),
                        c.ids(), "scatter 10 ints")
    check(run_all(c, "s.tolist()") == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]], "scatter parts")
    body = expect(api.get(view("all", "gather/s")), 200, "gather s")
    check(same(body.get("result"), list(range(10))), "gather s: %s" % show(body))
    expect_task_results(api.post(view("all", "scatter"), {"name": "w", "data": ["a", {"b": 1}, None, 3]}),
                        c.ids(), "scatter a mixed list")
    body = expect(api.get(view("all", "gather/w")), 200, "gather w")
    check(same(body.get("result"), ["a", {"b": 1}, None, 3]), "gather w: %s" % show(body))
    # strided arrays gather as their elements, in rank order
    run_all(c, "import numpy as np\ng = np.arange(12.0).reshape(3, 4)[:, 1::2]")
    body = expect(api.get(view("all", "gather/g")), 200, "gather a strided array")
    check(same(body.get("result"), [[1.0, 3.0], [5.0, 7.0], [9.0, 11.0]] * 4),
          "gather g: %s" % show(body))
    after = fanout_counts(c)
    check(all(after[op] > before[op] for op in ("scatter", "gather")),
          "these scatters and gathers fanned out by MPI: %s -> %s" % (before, after))
    r = api.get(view("all", "gather/nothere"))
    check(r.status >= 400 or (r.body or {}).get("status") == "error", "gather of a missing name "
          "fails: %r" % r)
    check("NameError" in str(r.body) and "nothere" in str(r.body),
          "the error names NameError and the name: %r" % r)


def apply_refs(c):
    api = c.api
    run_all(c, "def f(a, b=0, *, scale=1):\n    return (a.sum() + b) * scale\n"
               "import numpy as np\nm = np.arange(4)\n")
    r = api.post(view("all", "apply"), {"function": "f", "args": [{"$ref": "m"}, 2],
                                         "kwargs": {"scale": 3}})
    res = expect_task_results(r, c.ids(), "apply f($ref m, 2, scale=3)")
    check([x.get("value") for x in res] == [24] * 4, "f -> 24: %s" % show(res))
    r = api.post(view("all", "apply"), {"function": "max", "args": [[3, 9, 4]]})
    check([x.get("value") for x in expect_task_results(r, c.ids(), "apply max")] == [9] * 4,
          "a builtin by name")
    res = errors_of(api.post(view("all", "apply"), {"function": "nope", "args": []}), 4, "unknown")
    check(all(x["ename"] == "NameError" and "nope" in x["evalue"] for x in res),
          "an unknown function is a NameError: %s" % show(res[0]))
    res = errors_of(api.post(view("all", "apply"), {"function": "m", "args": []}), 4, "not callable")
    check(all(x["ename"] == "TypeError" and "not a function" in x["evalue"] for x in res),
          "a non-callable is a TypeError: %s" % show(res[0]))
    res = errors_of(api.post(view("all", "apply"), {"function": "f", "args": ["text", 1]}), 4,
                    "wrong argument type")
    check(all(x["ename"] == "AttributeError" and "'str' object" in x["evalue"] for x in res),
          "a wrong argument type is Python's own error: %s" % show(res[0]))
    res = errors_of(api.post(view("all", "apply"), {"function": "f", "args": [{"$ref": "zz"}]}), 4,
                    "$ref to nothing")
    check(all(x["ename"] == "NameError" for x in res), "$ref to nothing: %s" % show(res[0]))


def balanced(c):
    api = c.api
    run_all(c, "def sq(x):\n    return x * x\ndef inv(x):\n    return 1 / x\n"
               "def kind(x):\n    return type(x).__name__\n")
    body = expect(api.post("/api/v1/tasks?block=true", {"function": "sq", "args": [7]}), 200,
                  "balanced sq(7)")
    check(body.get("state") == "completed" and body.get("result") == 49, "sq(7): %s" % show(body))
    body = expect(api.post("/api/v1/tasks?block=true", {"code": "y = 5\ny * 2"}), 200,
                  "balanced code")
    check(body.get("result") == 10, "a code task answers its last expression: %s" % show(body))
    body = expect(api.post("/api/v1/map", {"function": "inv", "sequences": [[1, 2, 0, 4]],
                                          "chunksize": 2}), 200, "map inv")
    check(same(body.get("results"), [1.0, 0.5, None, 0.25]) and body.get("status") == "error"
          and body["errors"][0]["ename"] == "ZeroDivisionError" and body["errors"][0]["index"] == 2,
          "map with a failing item: %s" % show(body))
    body = expect(api.post("/api/v1/map", {"function": "kind", "sequences": [[1, 2.5]]}), 200,
                  "map kind")
    check(body.get("results") == ["int", "float"], "map items are Python numbers: %s" % show(body))


def streamed_print(c):
    flag = os.path.join(tempfile.mkdtemp(prefix="ippc-pyrt-"), "go")
    s = Stream(c)
    try:
        code = ("import os, time\nprint('first', flush=True)\n"
                "while not os.path.exists(%r):\n    time.sleep(0.01)\nprint('second')\n'done'" % flag)
        t = submit(c.api, {"code": code}, "task that prints, then waits for the test")
        s.wait(lambda m: m.get("type") == "task.stdout" and m.get("task") == t["id"]
               and "first" in m.get("data", ""), "stdout 'first' while the task runs", 60)
        done = [m for _, m in s.log if m.get("type") == "task.completed" and m.get("task") == t["id"]]
        check(not done, "the task cannot have completed: it waits for the flag file")
        open(flag, "w").close()
        wait_completed(s, [t["id"]], "the printing task")
    finally:
        s.close()
        if os.path.exists(flag):
            os.unlink(flag)
    body = expect(c.api.get("/api/v1/tasks/%d" % t["id"]), 200, "the printing task")
    check(body.get("stdout") == "first\nsecond\n" and body.get("result") == "done",
          "the result keeps all of stdout: %s" % show(body))


def heartbeats_while_busy(c, limit=30):
    """While every engine spins in Python (holding the GIL), each one's
    heartbeat age still drops now and then: heartbeats come from the network
    thread, which never needs the GIL."""
    deadline = time.time() + limit
    last, fresh = {}, set()
    while time.time() < deadline and len(fresh) < 4:
        for e in c.api.engines():
            age = e.get("heartbeat_age")
            check(e.get("state") != "dead", "an engine busy in Python is not dead: %s" % show(e))
            prev = last.get(e["id"])
            if e.get("state") == "busy" and prev is not None and age < prev:
                fresh.add(e["id"])
            last[e["id"]] = age if e.get("state") == "busy" else None
        time.sleep(0.3)
    check(len(fresh) == 4, "every busy engine sent a new heartbeat while Python ran: %s"
          % sorted(fresh))


def interrupts(c):
    run_all(c, "kept = 42")
    rid = start(c, "n = 0\nwhile True:\n    try:\n        n += 1\n    except BaseException:\n        pass\n")
    heartbeats_while_busy(c)
    r = interrupt_until_done(c, rid)
    body = expect_done(r, 4, "interrupted loop", status="error")
    check(all(x["status"] == "aborted" for x in body["results"]),
          "every engine ends aborted (an except clause cannot swallow it): %s" % show(body))
    check(run_all(c, "kept") == [42] * 4, "the namespace survives the interrupt")
    rid = start(c, "import time\ntime.sleep(3600)")
    body = expect_done(interrupt_until_done(c, rid), 4, "interrupted sleep", status="error")
    check(all(x["status"] == "aborted" for x in body["results"]), "a sleep is interrupted too")


def blocked_recv(c):
    """A rank waiting in MPI (mpi4py's recv of a message nobody sends) stops
    on interrupt; the engine and the other ranks carry on."""
    run_all(c, "kept = 42")
    rid = start(c, "from mpi4py import MPI\nMPI.COMM_WORLD.recv(source=1, tag=77)", targets="0")
    body = expect_done(interrupt_until_done(c, rid, targets="0"), 1, "interrupted recv",
                       status="error")
    check(body["results"][0]["status"] == "aborted", "the recv ends aborted: %s" % show(body))
    check(run_all(c, "kept") == [42] * 4, "the namespace survives")


def mpi_from_python(c):
    """mpi4py's buffer and object calls between the 4 engines, checked on
    every rank (the module itself has its own suite: make pympi)."""
    code = ("from mpi4py import MPI\nimport numpy as np\ncomm = MPI.COMM_WORLD\n"
            "x = np.arange(1000000, dtype='d') * (comm.rank + 1)\ny = np.empty_like(x)\n"
            "comm.Allreduce(x, y, op=MPI.SUM)\n"
            "ok = bool((y == np.arange(1000000, dtype='d') * 10).all())\n"
            "got = comm.allgather({'r': comm.Get_rank()})\n"
            "ok, comm.size, [g['r'] for g in got], comm.bcast('from 0' if comm.rank == 0 else None)")
    check(run_all(c, code) == [[True, 4, [0, 1, 2, 3], "from 0"]] * 4,
          "Allreduce of 1e6 float64, allgather and bcast on every rank")


def namespace_ops(c):
    api = c.api
    run_all(c, "import numpy as np\narr = np.ones((2, 3), 'float32')\nword = 'abc'\nseq = [1, 2]")
    body = expect_done(api.get(view("all", "vars")), 4, "list")
    for vs in body["results"]:
        check(vs.get("arr") == {"type": "ndarray", "dtype": "float32", "shape": [2, 3], "bytes": 24}
              and vs.get("word") == {"type": "str", "bytes": 3}
              and vs.get("seq") == {"type": "list", "length": 2} and "__builtins__" not in vs,
              "vars lists user names with dtype/shape/bytes: %s" % show(vs))
    expect_task_results(api.call("DELETE", view("all", "vars/word")), c.ids(), "delete word")
    check(run_all(c, "'word' in globals()") == [False] * 4, "word is gone")
    res = errors_of(api.call("DELETE", view("all", "vars/word")), 4, "delete it again")
    check(all(x["ename"] == "NameError" for x in res), "deleting a missing name: %s" % show(res[0]))
    expect_task_results(api.post(view("all", "reset")), c.ids(), "reset")
    body = expect_done(api.get(view("all", "vars")), 4, "list after reset")
    check(all(vs == {} for vs in body["results"]), "reset empties the namespace: %s" % show(body))
    run_all(c, "import sys, io\nsys.stdout = io.StringIO()")
    expect_task_results(api.post(view("all", "reset")), c.ids(), "reset after replacing stdout")
    r = api.post(view("all", "execute"), {"code": "print('still here')\n__name__"})
    res = expect_task_results(r, c.ids(), "print after reset")
    check(all(x.get("stdout") == "still here\n" and x.get("value") == "__main__" for x in res),
          "reset puts print back into the task's stdout: %s" % show(res[0]))


def plugin_kernel(c):
    api = c.api
    r = api.post(view("all", "load"), {"library": plugin("psum")})
    res = expect_task_results(r, c.ids(), "load libpsum.so")
    check(all("psum" in x["value"]["kernels"] for x in res), "psum kernel: %s" % show(res[0]))
    check(run_all(c, "import numpy as np\nb = np.arange(4.0) + 4 * %s\npsum(b)" % "0") ==
          [24.0] * 4, "psum kernel over numpy arrays: 4 x (0+1+2+3)")
    check(run_all(c, "psum(2)") == [8] * 4, "psum kernel of an int")
    res = errors_of(api.post(view("all", "execute"), {"code": "psum({'a': 1})"}), 4, "bad kernel arg")
    check(all(x["ename"] == "TypeError" and "psum" in x["evalue"] for x in res),
          "a dict argument to a kernel is a TypeError: %s" % show(res[0]))
    res = errors_of(api.post(view("all", "execute"), {"code": "psum()"}), 4, "kernel error")
    check(all(x["ename"] == "RuntimeError" and "takes 1 or 2 arguments" in x["evalue"]
              for x in res), "a kernel's error message: %s" % show(res[0]))
    body = expect_done(api.get(view("all", "vars")), 4, "list with a kernel")
    check(all("psum" not in vs for vs in body["results"]), "kernels are not user names")
    res = errors_of(api.post(view("all", "load"), {"library": "/nonexistent/libx.so"}), 4, "bad lib")
    check(all(x["ename"] == "PluginError" for x in res), "a missing library: %s" % show(res[0]))


def bad_input(c):
    api = c.api
    expect_error(api.post(view("all", "execute"), {"code": 5}), 400, "bad_request",
                 "code must be a string")
    res = errors_of(api.post(view("all", "execute"), {"code": "def f(:\n  pass"}), 4, "syntax")
    check(all(x["ename"] == "SyntaxError" for x in res), "syntax error: %s" % show(res[0]))
    res = errors_of(api.post(view("all", "execute"), {"code": "raise SystemExit(3)"}), 4, "exit")
    check(all(x["ename"] == "SystemExit" for x in res), "SystemExit is an error, not an exit")
    res = errors_of(api.post(view("all", "execute"), {"code": "import os\nos._exit(1)"}), 4, "_exit")
    check(all(x["ename"] == "RuntimeError" and "not available" in x["evalue"] for x in res),
          "os._exit is refused: %s" % show(res[0]))
    res = errors_of(api.post(view("all", "execute"), {"code": "input()"}), 4, "input")
    check(all(x["ename"] == "EOFError" for x in res), "input() has no stdin: %s" % show(res[0]))
    check(run_all(c, "1 + 1") == [2] * 4, "the engines are still up")
    # a thread that never ends and an atexit hook must not keep the engines
    # from stopping (the cluster's clean stop at the end checks it)
    run_all(c, "import threading, time, atexit\n"
               "threading.Thread(target=time.sleep, args=(3600,)).start()\n"
               "atexit.register(print, 'bye');")


def test_seed_python_script(_):
    """examples/seed-python.sh: its own cluster (ippc cluster start
    --runtime=python), the seed over REST, the last line the seed's answer."""
    import subprocess
    d = tempfile.mkdtemp(prefix="ippc-seedpy-")
    env = dict(os.environ, IPPC_DIR=d, PYTHON="/usr/bin/python3")
    p = subprocess.run(["sh", os.path.join(ROOT, "examples", "seed-python.sh")], env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=180)
    out = p.stdout.decode("utf-8", "replace")
    lines = out.rstrip().splitlines()
    check(p.returncode == 0 and lines and lines[-1] == "totalsum: [120.0, 120.0, 120.0, 120.0]",
          "examples/seed-python.sh (exit %s) must end with the seed's totalsum:\n%s"
          % (p.returncode, out))


# An mpiexec that makes its engines run Lua whatever the launcher asked for
# (getopt: the last --runtime wins), as engines joining by hand might.
LUA_MPIEXEC = """#!/bin/sh
exec REAL_MPIEXEC "$@" --runtime lua
"""


def test_launcher_refuses_mix(_):
    """ippc cluster start --runtime=python with engines that run Lua: it
    refuses, naming the engine and both runtimes, and leaves nothing behind;
    an unknown --runtime is a usage error."""
    import subprocess
    from harness import CLI, MPIEXEC, wait_gone, describe
    from test_launcher import Launch, write_script
    from test_cli import cli_env
    with Launch("pymix") as launch:
        fake = write_script(os.path.join(launch.tmp, "lua-mpiexec"),
                            LUA_MPIEXEC.replace("REAL_MPIEXEC", MPIEXEC))
        launch.start(["-n", "2", "--profile", "pymix", "--runtime=python", "--mpiexec", fake])
        try:
            rc = launch.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError("the launcher did not refuse Lua engines within 120 s:\n%s"
                                 % launch.text())
        text = launch.text()
        check(rc == 1 and "runs the lua runtime, but this cluster was started with "
              "--runtime=python" in text and "Token:" not in text,
              "the launcher refuses engines of another runtime (exit %s):\n%s" % (rc, text))
        left = wait_gone(launch.tracker.snapshot(), 20)
        check(not left, "after the refusal these still run: %s\n%s" % (describe(left), text))
        p = subprocess.run([CLI, "cluster", "start", "-n", "1", "--runtime=ruby"],
                           env=cli_env(launch.tmp), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        out = p.stdout.decode("utf-8", "replace")
        check(p.returncode == 2 and "--runtime must be lua or python, not 'ruby'" in out,
              "--runtime=ruby is a usage error (exit %s):\n%s" % (p.returncode, out))
    return []


STEPS = [engines_report_python, register_runtime_checks, tracebacks, values, scatter_gather, apply_refs, balanced,
         streamed_print, interrupts, blocked_recv, mpi_from_python, namespace_ops, plugin_kernel, bad_input, seed_flow]


def test_python_runtime(_):
    # Every push, scatter and gather over several engines fans out by MPI
    # (the Python namespace's side of engine/fanout.h); one-engine ones do not.
    with Cluster(n=4, profile="python-rt", engine_args=PY,
                 controller_args=["--fanout-min-bytes", "0"]).start() as c:
        for step in STEPS:
            try:
                step(c)
            except Exception as e:
                raise type(e)("%s: %s" % (step.__name__, e)) from e


TESTS = [
    ("python_runtime", test_python_runtime, "own"),
    ("seed_python_script", test_seed_python_script, "own"),
    ("launcher_refuses_mix", test_launcher_refuses_mix, "own"),
]
