"""test_values.py — push/pull of numbers, strings, nested tables and arrays
(lists and typed), several names at once, scatter/gather."""

import base64
import struct

from harness import check, expect
from common import (same, show, view, expect_done, expect_task_results, values_of, pull_var,
                    long_reals)


def roundtrip(c, name, value, strict=True, accept=None):
    """PUT vars/name value on all, GET it back, compare on every engine."""
    ids = c.ids()
    r = c.api.put(view("all", "vars/" + name), value)
    expect_task_results(r, ids, "PUT vars/%s %s" % (name, show(value)))
    r = pull_var(c, name)
    body = expect_done(r, len(ids), "GET vars/%s" % name)
    wants = [value] + ([accept] if accept is not None else [])
    for got in body["results"]:
        ok = any(same(got, w) if strict else got == w for w in wants)
        check(ok, "round trip of %s: got %s: %r" % (show(value), show(got), r))


def test_push_pull_numbers(c):
    roundtrip(c, "n_int", 42)
    roundtrip(c, "n_neg", -7)
    roundtrip(c, "n_zero", 0)
    roundtrip(c, "n_float", 3.25)
    roundtrip(c, "n_small", 1.5e-300)
    roundtrip(c, "n_big", 2 ** 40)
    check(same(values_of(c, "return n_int + 1"), [43] * 4), "n_int is not a number on the engines")
    check(same(values_of(c, "return math.type(n_int)"), ["integer"] * 4),
          "a JSON integer must be a Lua integer")
    check(same(values_of(c, "return n_float * 2"), [6.5] * 4), "n_float on the engines")


def test_push_pull_int64_exact(c):
    # Beyond 2^53: survives only if integers are never routed through doubles.
    roundtrip(c, "n_huge", 2 ** 62 + 1)
    roundtrip(c, "n_hugeneg", -(2 ** 62) - 3)


def test_push_pull_strings(c):
    roundtrip(c, "s_plain", "hello")
    roundtrip(c, "s_empty", "")
    roundtrip(c, "s_unicode", "ünïcødé ✓ 数据")
    roundtrip(c, "s_escapes", 'quote " backslash \\ newline \n tab \t end')
    check(same(values_of(c, "return #s_plain"), [5] * 4), "#s_plain on the engines")
    check(same(values_of(c, "return s_plain .. ' world'"), ["hello world"] * 4),
          "string concatenation on the engines")


def test_push_pull_booleans(c):
    roundtrip(c, "b_true", True)
    roundtrip(c, "b_false", False)
    check(same(values_of(c, "return b_true and not b_false"), [True] * 4), "booleans on engines")


def test_push_pull_nested_tables(c):
    value = {
        "name": "ippc",
        "n": 3,
        "pi": 3.5,
        "flags": [True, False, True],
        "inner": {"k": "v", "list": ["a", "b"], "deeper": {"x": 1}},
        "mixed": [1, "two", 3.5, False],
        "nums": [1, 2, 3],
    }
    # "nums" is a list of numbers, i.e. an ndarray on the engines: pulled back
    # as a list.  Number-typed floats compare loosely (3.5 stays 3.5).
    roundtrip(c, "t_nested", value, strict=False)
    check(same(values_of(c, "return t_nested.inner.deeper.x + #t_nested.mixed"), [5] * 4),
          "nested table fields on the engines")
    check(same(values_of(c, "return t_nested.mixed[2]"), ["two"] * 4),
          "mixed list is a 1-based Lua sequence")
    roundtrip(c, "t_mixed", ["a", 1, True, {"k": "v"}], strict=False)
    roundtrip(c, "t_strlist", ["x", "y", "z"])
    # Lua cannot tell an empty object from an empty list (documented).
    roundtrip(c, "t_empty", {}, accept=[])


def test_push_pull_arrays_list(c):
    roundtrip(c, "a_int", [1, 2, 3, 4])
    roundtrip(c, "a_float", [0.5, 1.5, -2.25])
    roundtrip(c, "a_2d", [[1, 2, 3], [4, 5, 6]])
    check(same(values_of(c, "return a_int:sum()"), [10] * 4), "a_int:sum()")
    check(same(values_of(c, "return #a_int"), [4] * 4), "#a_int")
    first = values_of(c, "return a_int[1]")
    check(same(first, [1] * 4) or same(first, [2] * 4), "a_int[1]: %s" % first)
    check(values_of(c, "return a_float:sum()") == [-0.25] * 4, "a_float:sum()")

    # ?format=typed shows what the engines hold: int64 for all-integer lists.
    r = c.api.get(view("all", "vars/a_int") + "?format=typed")
    body = expect_done(r, 4, "GET vars/a_int?format=typed")
    for t in body["results"]:
        check(isinstance(t, dict) and t.get("dtype") == "int64" and t.get("shape") == [4],
              "a_int typed: expected int64 [4]: %r" % r)
        data = base64.b64decode(t.get("data", ""))
        check(list(struct.unpack("<4q", data)) == [1, 2, 3, 4], "a_int typed bytes: %r" % r)
    r = c.api.get(view("all", "vars/a_float") + "?format=typed")
    body = expect_done(r, 4, "GET vars/a_float?format=typed")
    for t in body["results"]:
        check(isinstance(t, dict) and t.get("dtype") == "float64" and t.get("shape") == [3],
              "a_float typed: expected float64 [3]: %r" % r)
        check(list(struct.unpack("<3d", base64.b64decode(t.get("data", "")))) == [0.5, 1.5, -2.25],
              "a_float typed bytes: %r" % r)
    r = c.api.get(view("all", "vars/a_2d") + "?format=typed")
    body = expect_done(r, 4, "GET vars/a_2d?format=typed")
    for t in body["results"]:
        check(isinstance(t, dict) and t.get("dtype") == "int64" and t.get("shape") == [2, 3],
              "a_2d typed: expected int64 [2,3]: %r" % r)
        check(list(struct.unpack("<6q", base64.b64decode(t.get("data", "")))) == [1, 2, 3, 4, 5, 6],
              "a_2d typed bytes (row-major): %r" % r)


def typed(dtype, fmt, values, shape=None):
    return {"dtype": dtype, "shape": shape or [len(values)],
            "data": base64.b64encode(struct.pack("<%d%s" % (len(values), fmt), *values)).decode()}


def test_push_pull_arrays_typed(c):
    ids = c.ids()
    value = typed("float64", "d", [0.5, 1.5, 2.5, 3.5])
    r = c.api.put(view("all", "vars/ta"), value)
    expect_task_results(r, ids, "PUT vars/ta typed float64")
    body = expect_done(pull_var(c, "ta"), 4, "GET vars/ta")
    check(all(x == [0.5, 1.5, 2.5, 3.5] for x in body["results"]), "typed -> list: %s" % show(body))
    r = c.api.get(view("all", "vars/ta") + "?format=typed")
    body = expect_done(r, 4, "GET vars/ta?format=typed")
    for t in body["results"]:
        check(isinstance(t, dict) and t.get("dtype") == "float64" and t.get("shape") == [4]
              and base64.b64decode(t.get("data", "")) == base64.b64decode(value["data"]),
              "typed round trip: %r" % r)
    check(values_of(c, "return ta:sum()") == [8.0] * 4, "ta:sum()")

    value = typed("int64", "q", [10, 20, 30, 40, 50, 60], shape=[2, 3])
    expect_task_results(c.api.put(view("all", "vars/ti"), value), ids, "PUT vars/ti typed int64 2x3")
    body = expect_done(pull_var(c, "ti"), 4, "GET vars/ti")
    check(all(same(x, [[10, 20, 30], [40, 50, 60]]) for x in body["results"]),
          "typed int64 2x3 -> nested list: %s" % show(body))

    # Typed inside push, too.
    r = c.api.post(view("all", "push"), {"namespace": {"tp": typed("float64", "d", [1.0, 2.0])}})
    expect_task_results(r, ids, "push typed")
    check(values_of(c, "return tp:sum()") == [3.0] * 4, "tp:sum()")

    # A typed array whose bytes do not match its shape is refused.
    bad = {"dtype": "float64", "shape": [3], "data": base64.b64encode(b"\0" * 16).decode()}
    r = c.api.put(view("all", "vars/tbad"), bad)
    check(r.status in (400, 422) and isinstance(r.body, dict) and "error" in r.body,
          "typed array with 16 bytes for shape [3] must be 400/422: %r" % r)


def test_multi_push_pull(c):
    ids = c.ids()
    ns = {"m_int": 7, "m_str": "s", "m_arr": [1, 2, 3], "m_tab": {"x": 1, "y": "z"}}
    r = c.api.post(view("all", "push"), {"namespace": ns})
    results = expect_task_results(r, ids, "push namespace")
    r = c.api.post(view("all", "pull"), {"names": ["m_int", "m_str", "m_arr", "m_tab"]})
    body = expect_done(r, 4, "pull names")
    for got in body["results"]:
        check(same(got, [7, "s", [1, 2, 3], {"x": 1, "y": "z"}]),
              "pull: expected [7, 's', [1,2,3], {x,y}] per engine: %r" % r)
    # Order follows names.
    r = c.api.post(view("all", "pull"), {"names": ["m_str", "m_int"]})
    body = expect_done(r, 4, "pull names reversed")
    check(all(same(g, ["s", 7]) for g in body["results"]), "pull order: %r" % r)


def test_push_pull_nulls(c):
    """null inside lists and objects survives the engines, as null, in its
    place: JSON -> Lua (the `null` sentinel) -> JSON."""
    roundtrip(c, "z_list", [1, None, 3])
    roundtrip(c, "z_strs", ["a", None, "c", None])
    roundtrip(c, "z_only", [None])
    roundtrip(c, "z_nulls", [None, None])
    roundtrip(c, "z_obj", {"a": None, "b": [True, None]})
    roundtrip(c, "z_nested", [[1, None], [None, 2.5], {"k": None}])
    check(same(values_of(c, "return #z_list"), [3] * 4), "#t counts null items")
    check(same(values_of(c, "return z_list[2] == null"), [True] * 4),
          "a null item is the global `null`")
    check(same(values_of(c, "return {1, null, 3}"), [[1, None, 3]] * 4),
          "a table holding `null` comes back as a list with null")
    # Lua tables with holes: a sequence at least half full is a list with
    # nulls in the holes; a sparse one stays an object.
    check(same(values_of(c, "return {1, nil, 3}"), [[1, None, 3]] * 4),
          "a hole in a Lua sequence comes back as null")
    check(same(values_of(c, "return {nil, 'b'}"), [[None, "b"]] * 4), "a leading hole")
    check(same(values_of(c, "return {[1] = 1, [100] = 2}"), [{"1": 1, "100": 2}] * 4),
          "a sparse table stays an object")
    # A function given null inside a list sees `null`; a null argument is nil.
    expect(c.api.post(view("all", "execute"),
                      {"code": "function kind(x) if x == nil then return 'nil' "
                               "elseif x == null then return 'null' end return type(x) end"}),
           200, "define kind")
    r = c.api.post(view("0", "apply"), {"function": "kind", "args": [None]})
    body = expect_done(r, 1, "apply kind(null)")
    check(body["results"][0].get("value") == "nil", "a null argument is nil: %r" % r)
    r = c.api.post("/api/v1/map", {"function": "kind", "sequences": [[1, None, "s"]]})
    body = expect(r, 200, "map kind over [1, null, 's']")
    check(body.get("results") == ["number", "nil", "string"],
          "map passes a null item as nil: %r" % body)


def test_reals_shortest(c):
    """Reals are written in the shortest form that reads back to the same
    double (0.1, not 0.10000000000000001), in values, info (uptime) and engines
    (heartbeat_age)."""
    ids = c.ids()
    reals = [0.1, 0.2, 0.3, 1 / 3, 2.5e-300, 1e22, 123456.789, 5e-324, -0.0, 1.0]
    roundtrip(c, "r_one", 0.1)
    roundtrip(c, "r_list", reals)
    roundtrip(c, "r_mixed", ["x", 0.1, {"y": 0.7}])
    for name in ("r_one", "r_list", "r_mixed"):
        r = pull_var(c, name)
        expect_done(r, len(ids), "GET vars/" + name)
        check(long_reals(r.raw) == [], "GET vars/%s: reals not shortest: %s in %r"
              % (name, long_reals(r.raw), r.raw[:300]))
    r = c.api.post(view("all", "execute"), {"code": "return 0.1 + 0.2, 1.1"})
    check(long_reals(r.raw) == [] and b"0.30000000000000004" in r.raw,
          "computed reals: %r" % r.raw[:300])
    for path in ("/api/v1/info", "/api/v1/engines"):
        r = c.api.get(path)
        expect(r, 200, path)
        check(long_reals(r.raw) == [], "%s: reals not shortest: %s" % (path, long_reals(r.raw)))


def test_pull_undefined_name(c):
    ids = c.ids()
    r = pull_var(c, "surely_undefined_name")
    body = expect(r, 200, "GET vars/<undefined>")
    check(body.get("status") == "error", "undefined name: status must be error: %r" % r)
    check(body.get("results") == [None] * 4, "undefined name: results must be null: %r" % r)
    errors = body.get("errors")
    check(isinstance(errors, list) and len(errors) == 4, "undefined name: 4 errors: %r" % r)
    check(sorted(e.get("engine") for e in errors) == ids, "errors name every engine: %r" % r)
    for e in errors:
        check(e.get("ename") == "NameError", "ename must be NameError: %r" % r)
        check(isinstance(e.get("evalue"), str) and isinstance(e.get("traceback"), list),
              "error needs evalue and traceback: %r" % r)

    # Defined on one engine only: that one's value, null elsewhere.
    first = ids[0]
    expect_task_results(c.api.put(view(str(first), "vars/only_first"), "here"), [first],
                        "PUT on one engine")
    r = pull_var(c, "only_first")
    body = expect(r, 200, "GET vars/only_first")
    check(body.get("status") == "error", "partly defined: status error: %r" % r)
    check(body.get("results") == ["here", None, None, None], "partly defined results: %r" % r)
    check(sorted(e.get("engine") for e in body.get("errors", [])) == ids[1:],
          "partly defined: errors for the other engines: %r" % r)

    # pull with one undefined name
    r = c.api.post(view("all", "pull"), {"names": ["m_int_never", "only_first"]})
    body = expect(r, 200, "pull with undefined name")
    check(body.get("status") == "error", "pull with undefined name must be error: %r" % r)


def test_scatter_uneven(c):
    ids = c.ids()
    r = c.api.post(view("all", "scatter"), {"name": "u", "data": list(range(17))})
    expect_task_results(r, ids, "scatter 17 over 4")
    check(same(values_of(c, "return #u"), [5, 4, 4, 4]), "scatter sizes must be 5,4,4,4")
    body = expect_done(pull_var(c, "u"), 4, "GET vars/u")
    want = [[0, 1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    check(same(body["results"], want), "vars/u: expected %s: %s" % (show(want), show(body)))
    r = c.api.get(view("all", "gather/u"))
    body = expect_done(r, 4, "gather u")
    check(same(body.get("result"), list(range(17))), "gather u: expected 0..16: %r" % r)

    # Fewer items than engines: the last engines get empty parts.
    r = c.api.post(view("all", "scatter"), {"name": "few", "data": [1, 2]})
    expect_task_results(r, ids, "scatter 2 over 4")
    check(same(values_of(c, "return #few"), [1, 1, 0, 0]), "scatter 2 over 4 sizes")
    body = expect_done(c.api.get(view("all", "gather/few")), 4, "gather few")
    check(same(body.get("result"), [1, 2]), "gather few: %s" % show(body))

    # Float data and a subset view.
    r = c.api.post(view("1::2", "scatter"), {"name": "fs", "data": [0.5, 1.5, 2.5, 3.5, 4.5]})
    expect_task_results(r, ids[1::2], "scatter over 1::2")
    body = expect_done(c.api.get(view("1::2", "vars/fs")), 2, "GET 1::2 vars/fs")
    check(body["results"] == [[0.5, 1.5, 2.5], [3.5, 4.5]], "scatter over 1::2: %s" % show(body))
    body = expect_done(c.api.get(view("1::2", "gather/fs")), 2, "gather 1::2 fs")
    check(body.get("result") == [0.5, 1.5, 2.5, 3.5, 4.5], "gather fs: %s" % show(body))

    # Typed data.
    data = typed("float64", "d", [float(i) for i in range(8)])
    expect_task_results(c.api.post(view("all", "scatter"), {"name": "st", "data": data}),
                        ids, "scatter typed")
    body = expect_done(pull_var(c, "st"), 4, "GET vars/st")
    check(body["results"] == [[0, 1], [2, 3], [4, 5], [6, 7]], "scatter typed parts: %s" % show(body))

    # A non-list cannot be scattered.
    r = c.api.post(view("all", "scatter"), {"name": "bad", "data": 5})
    check(r.status in (400, 422) and isinstance(r.body, dict) and "error" in r.body,
          "scatter of a scalar must be 400/422: %r" % r)


def test_gather_seed(c):
    ids = c.ids()
    expect_task_results(c.api.post(view("all", "scatter"), {"name": "g16", "data": list(range(16))}),
                        ids, "scatter g16")
    body = expect_done(c.api.get(view("all", "gather/g16")), 4, "gather g16")
    check(same(body.get("result"), list(range(16))), "gather g16: %s" % show(body))
    # A scattered list of strings gathers back too.
    words = ["w%d" % i for i in range(6)]
    expect_task_results(c.api.post(view("all", "scatter"), {"name": "words", "data": words}),
                        ids, "scatter strings")
    body = expect_done(c.api.get(view("all", "gather/words")), 4, "gather words")
    check(same(body.get("result"), words), "gather words: %s" % show(body))


OCTET = {"Content-Type": "application/octet-stream"}


def test_raw_octet_stream(c):
    """Bulk arrays as raw bytes: PUT vars and scatter with an
    application/octet-stream body, pull and gather with Accept:
    application/octet-stream (dtype/shape in X-Ippc-* headers)."""
    ids = c.ids()
    raw = struct.pack("<4d", 1.5, 2.5, 3.5, 4.5)
    r = c.api.call("PUT", view("all", "vars/rw") + "?dtype=float64&shape=2,2", raw=raw,
                   headers=OCTET)
    expect_task_results(r, ids, "PUT raw float64 2x2")
    body = expect_done(pull_var(c, "rw"), 4, "GET vars/rw")
    check(all(x == [[1.5, 2.5], [3.5, 4.5]] for x in body["results"]), "raw PUT -> lists: %s"
          % show(body))
    r = c.api.get(view(str(ids[1]), "vars/rw"), headers={"Accept": "application/octet-stream"})
    check(r.status == 200 and r.raw == raw, "raw GET of one engine must be the bytes: %r" % r)
    check(r.headers.get("Content-Type", "").startswith("application/octet-stream")
          and r.headers.get("X-Ippc-Dtype") == "float64" and r.headers.get("X-Ippc-Shape") == "2,2",
          "raw GET headers: %s" % r.headers)

    # Headers instead of query parameters; default 1-D.
    raw = struct.pack("<6q", *range(6))
    r = c.api.call("POST", view("all", "scatter") + "?name=sr", raw=raw,
                   headers=dict(OCTET, **{"X-Ippc-Dtype": "int64"}))
    expect_task_results(r, ids, "raw scatter int64 of 6")
    body = expect_done(pull_var(c, "sr"), 4, "GET vars/sr")
    check(same(body["results"], [[0, 1], [2, 3], [4], [5]]), "raw scatter parts: %s" % show(body))
    r = c.api.get(view("all", "gather/sr"), headers={"Accept": "application/octet-stream"})
    check(r.status == 200 and r.raw == raw and r.headers.get("X-Ippc-Dtype") == "int64"
          and r.headers.get("X-Ippc-Shape") == "6", "raw gather: %r %s" % (r, r.headers))

    # Bytes that do not fit the dtype/shape are refused.
    r = c.api.call("PUT", view("all", "vars/rbad") + "?dtype=float64&shape=3", raw=b"\0" * 16,
                   headers=OCTET)
    check(r.status in (400, 422) and isinstance(r.body, dict) and "error" in r.body,
          "16 bytes for float64 [3] must be 400/422: %r" % r)


TESTS = [
    ("push_pull_numbers", test_push_pull_numbers, "shared"),
    ("push_pull_int64_exact", test_push_pull_int64_exact, "shared"),
    ("push_pull_strings", test_push_pull_strings, "shared"),
    ("push_pull_booleans", test_push_pull_booleans, "shared"),
    ("push_pull_nested_tables", test_push_pull_nested_tables, "shared"),
    ("push_pull_arrays_list", test_push_pull_arrays_list, "shared"),
    ("push_pull_arrays_typed", test_push_pull_arrays_typed, "shared"),
    ("multi_push_pull", test_multi_push_pull, "shared"),
    ("push_pull_nulls", test_push_pull_nulls, "shared"),
    ("reals_shortest", test_reals_shortest, "shared"),
    ("pull_undefined_name", test_pull_undefined_name, "shared"),
    ("scatter_uneven", test_scatter_uneven, "shared"),
    ("gather", test_gather_seed, "shared"),
    ("raw_octet_stream", test_raw_octet_stream, "shared"),
]
