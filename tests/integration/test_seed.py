"""test_seed.py — the seed scenario exactly as the README's curl walkthrough,
the engine registry, the connection files, and apply with $ref."""

import os
import stat
import subprocess

from harness import ROOT, check, expect, expect_error, read_json_file, alive
from common import (same, show, view, expect_done, expect_task_results, psum_source,
                    values_of)


def test_seed_walkthrough(c):
    api, ids = c.api, c.ids()
    check(len(ids) == 4, "expected 4 live engines, got %s" % ids)

    r = api.post(view("all", "run"), {"filename": "psum.lua", "source": psum_source()})
    expect_task_results(r, ids, "run psum.lua")

    r = api.post(view("all", "scatter"), {"name": "a", "data": list(range(16))})
    expect_task_results(r, ids, "scatter a=0..15")

    r = api.get(view("all", "vars/a"))
    body = expect_done(r, 4, "GET vars/a")
    want = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    check(same(body["results"], want), "vars/a: expected %s: %r" % (show(want), r))

    r = api.post(view("all", "execute"), {"code": "totalsum = psum(a)"})
    results = expect_task_results(r, ids, "execute totalsum = psum(a)")
    for res in results:
        check("value" not in res,
              "execute of a statement must not carry a value: %r" % r)

    r = api.get(view("all", "vars/totalsum"))
    body = expect_done(r, 4, "GET vars/totalsum")
    check(same(body["results"], [120, 120, 120, 120]),
          "vars/totalsum: expected [120, 120, 120, 120] (integers): %r" % r)


def test_apply_psum_ref(c):
    api, ids = c.api, c.ids()
    expect_task_results(api.post(view("all", "run"),
                                 {"filename": "psum.lua", "source": psum_source()}),
                        ids, "run psum.lua")
    expect_task_results(api.post(view("all", "scatter"),
                                 {"name": "apply_a", "data": list(range(16))}),
                        ids, "scatter apply_a")
    r = api.post(view("all", "apply"),
                 {"function": "psum", "args": [{"$ref": "apply_a"}], "kwargs": {}})
    results = expect_task_results(r, ids, "apply psum($ref apply_a)")
    check(same([x.get("value") for x in results], [120] * 4),
          "apply psum: expected values [120]*4: %r" % r)

    # Literal arguments, and a function defined by execute.
    expect_task_results(api.post(view("all", "execute"),
                                 {"code": "function addmul(x, y, z) return x + y * z end"}),
                        ids, "define addmul")
    r = api.post(view("all", "apply"), {"function": "addmul", "args": [1, 2, 3], "kwargs": {}})
    results = expect_task_results(r, ids, "apply addmul(1,2,3)")
    check(same([x.get("value") for x in results], [7] * 4), "apply addmul: %r" % r)

    # A $ref that names nothing is an error on every engine, not a crash.
    r = api.post(view("all", "apply"),
                 {"function": "psum", "args": [{"$ref": "no_such_var_xyz"}], "kwargs": {}})
    body = expect(r, 200, "apply with an undefined $ref")
    check(body.get("status") == "error", "apply with undefined $ref must be status error: %r" % r)
    r = api.post(view("all", "apply"), {"function": "no_such_function", "args": []})
    body = expect(r, 200, "apply of an undefined function")
    check(body.get("status") == "error", "apply of undefined function must be error: %r" % r)
    check(all(x.get("status") == "error" and x.get("ename") for x in body.get("results", [])),
          "apply of undefined function: every result must be an error with ename: %r" % r)
    check(same(values_of(c, "return 1 + 1"), [2] * 4), "engines unusable after apply errors")


def test_engines_registry(c):
    api = c.api
    r = api.get("/api/v1/engines")
    body = expect(r, 200, "GET /api/v1/engines")
    engines = body.get("engines")
    check(isinstance(engines, list) and len(engines) == 4, "expected 4 engines: %r" % r)
    engines = sorted(engines, key=lambda e: e.get("id", -1))
    fields = {"id": int, "rank": int, "size": int, "host": str, "pid": int, "state": str,
              "registered": str, "heartbeat_age": (int, float), "queue": int, "runtime": str}
    for e in engines:
        for f, t in fields.items():
            check(isinstance(e.get(f), t) and not isinstance(e.get(f), bool),
                  "engine field %r missing or not %s: %s" % (f, t, show(e)))
        check("job" in e, "engine has no job: %s" % show(e))
        check(e["state"] in ("idle", "busy"), "live engine state: %s" % show(e))
        check(e["size"] == 4, "engine size must be 4: %s" % show(e))
        check(e["runtime"] == "lua", "the default runtime is lua: %s" % show(e))
        check(alive(e["pid"]), "engine pid %s is not a running process" % e["pid"])
    ids = [e["id"] for e in engines]
    check(ids == list(range(ids[0], ids[0] + 4)), "ids not consecutive: %s" % ids)
    check([e["rank"] for e in engines] == [0, 1, 2, 3],
          "ids must follow rank order: %s" % show(engines))
    check(len({str(e["job"]) for e in engines}) == 1, "one MPI job, one job id: %s" % show(engines))
    check(len({e["pid"] for e in engines}) == 4, "4 distinct pids: %s" % show(engines))

    for e in engines:
        r = api.get("/api/v1/engines/%d" % e["id"])
        one = expect(r, 200, "GET /api/v1/engines/%d" % e["id"])
        check(one.get("id") == e["id"] and one.get("rank") == e["rank"]
              and one.get("pid") == e["pid"], "engine %d differs from list: %r" % (e["id"], r))
    expect_error(api.get("/api/v1/engines/9999"), 404, "not_found", "unknown engine")

    r = api.get("/api/v1/info")
    info = expect(r, 200, "GET /api/v1/info")
    for f, t in {"version": str, "profile": str, "url": str, "ws_url": str, "engines": int,
                 "started": str, "uptime": (int, float)}.items():
        check(isinstance(info.get(f), t), "info field %r missing or not %s: %r" % (f, t, r))
    check(info["engines"] == 4, "info engines must be 4: %r" % r)
    check(info["profile"] == c.profile, "info profile: %r" % r)
    check(info["url"].rstrip("/") == c.client_info["url"].rstrip("/"), "info url: %r" % r)
    check(info["ws_url"].startswith("ws://") and info["ws_url"].endswith("/ws"),
          "info ws_url: %r" % r)
    check(info["started"].endswith("Z") or info["started"].endswith("+00:00"),
          "started must be ISO-8601 UTC: %r" % r)

    # Ranks as the engines see them.
    ranks = values_of(c, "return mpi.rank()", ids)
    check(ranks == [0, 1, 2, 3], "mpi.rank() by engine id: %s" % ranks)
    sizes = values_of(c, "return mpi.size()", ids)
    check(sizes == [4] * 4, "mpi.size(): %s" % sizes)


def test_connection_files(c):
    sec = c.security_dir
    client = os.path.join(sec, "ippc-client.json")
    engine = os.path.join(sec, "ippc-engine.json")
    for path in (client, engine):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        check(mode == 0o600, "%s has mode %o, expected 600" % (path, mode))
    ci = read_json_file(client)
    for f in ("url", "ws_url", "token", "profile", "pid", "engine_file"):
        check(f in ci, "ippc-client.json lacks %r: %s" % (f, show(ci)))
    check(ci["url"].startswith("http://127.0.0.1:"), "client url: %s" % show(ci))
    check(ci["ws_url"].startswith("ws://127.0.0.1:") and ci["ws_url"].endswith("/ws"),
          "client ws_url: %s" % show(ci))
    check(ci["pid"] == c.controller.pid, "client pid %s != controller pid %s"
          % (ci["pid"], c.controller.pid))
    check(ci["profile"] == c.profile, "client profile: %s" % show(ci))
    check(os.path.realpath(ci["engine_file"]) == os.path.realpath(engine),
          "engine_file: %s" % show(ci))
    ei = read_json_file(engine)
    check(isinstance(ei.get("url"), str) and ei["url"].startswith("ws://127.0.0.1:")
          and ei["url"].endswith("/engine"), "ippc-engine.json url: %s" % show(ei))
    check(isinstance(ei.get("key"), str) and ei["key"], "ippc-engine.json key: %s" % show(ei))
    check(ei["key"] != ci["token"], "engine key must differ from the client token")
    # The engine key is not a client token.
    r = c.api.get("/api/v1/info", token=ei["key"])
    expect_error(r, 401, "unauthorized", "engine key used as client token")


def test_seed_script(c):
    """examples/seed.sh, reading the connection file as a user's would."""
    env = dict(os.environ, IPPC_DIR=c.dir, PROFILE=c.profile, PYTHON="/usr/bin/python3")
    env.pop("IPPC_URL", None)
    env.pop("IPPC_TOKEN", None)
    p = subprocess.run(["sh", os.path.join(ROOT, "examples", "seed.sh")], env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=180)
    out = p.stdout.decode("utf-8", "replace")
    check(p.returncode == 0, "examples/seed.sh exited %s:\n%s" % (p.returncode, out))
    lines = out.rstrip().splitlines()
    check(lines and lines[-1] == "totalsum: [120, 120, 120, 120]",
          "examples/seed.sh must end with 'totalsum: [120, 120, 120, 120]':\n%s" % out)
    check("a: [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]" in out,
          "examples/seed.sh must show a's parts:\n%s" % out)


TESTS = [
    ("seed_walkthrough", test_seed_walkthrough, "shared"),
    ("seed_script", test_seed_script, "shared"),
    ("apply_psum_ref", test_apply_psum_ref, "shared"),
    ("engines_registry", test_engines_registry, "shared"),
    ("connection_files", test_connection_files, "shared"),
]
