"""test_binary_formats.py — arrays in binary both ways: multipart/mixed pulls
from several engines and NumPy's .npy format (docs/binary.md).

- A pull from all 4 engines with `Accept: multipart/mixed` answers one part
  per engine (its id, dtype, shape, Content-Length in the part's headers),
  bit-exact against the scattered array, read both by a strict parser that
  walks Content-Length and by Python's email package; `part=application/x-npy`
  makes the parts .npy files; a value that is not an array is a JSON part; a
  pull that failed on an engine is a 422 JSON error.
- .npy pushed (`Content-Type: application/x-npy`) and pulled (`Accept:
  application/x-npy`) round-trips through NumPy's own np.save/np.load for
  float64, float32, int64, int32, uint8, bool (kept as uint8), big-endian
  data, version 2.0 files, 2-D and empty arrays; a .npy scatter gathers back
  as .npy.
- Every bad .npy (bad magic, truncated header or data, a shape that lies
  about the length, unsupported or object dtypes, fortran order, 0-d) is a
  400 JSON error that says what is wrong, and the controller keeps serving.
- Accept negotiation: q values, JSON unchanged without an Accept.
"""

import email.parser
import email.policy
import io
import json
import re

import numpy as np

from harness import check, expect, expect_error
from common import same, view, expect_task_results

NPY = {"Content-Type": "application/x-npy"}
ACCEPT_NPY = {"Accept": "application/x-npy"}
MULTIPART = {"Accept": "multipart/mixed"}
MULTIPART_NPY = {"Accept": "multipart/mixed; part=application/x-npy"}


def npy_bytes(a, version=None):
    f = io.BytesIO()
    if version:
        np.lib.format.write_array(f, a, version=version, allow_pickle=True)
    else:
        np.save(f, a, allow_pickle=True)
    return f.getvalue()


def boundary_of(r):
    ctype = r.headers.get("Content-Type", "")
    m = re.fullmatch(r'multipart/mixed; boundary=([0-9A-Za-z\-]{1,70})', ctype)
    check(m is not None, "not multipart/mixed with a boundary: %s" % ctype)
    return m.group(1).encode()


def parse_multipart(r):
    """A strict reading of the answer by RFC 2046 and the parts' Content-Length:
    [(headers dict, body bytes)].  Checks the delimiters and the end."""
    b = boundary_of(r)
    data = r.raw
    check(int(r.headers.get("Content-Length", -1)) == len(data),
          "Content-Length %s, %d bytes" % (r.headers.get("Content-Length"), len(data)))
    parts, at = [], 0
    while True:
        check(data.startswith(b"--" + b, at), "no delimiter at %d: %r" % (at, data[at:at + 80]))
        at += 2 + len(b)
        if data.startswith(b"--\r\n", at):
            check(at + 4 == len(data), "bytes after the close delimiter")
            return parts
        check(data.startswith(b"\r\n", at), "delimiter line does not end in CRLF")
        at += 2
        end = data.index(b"\r\n\r\n", at)
        headers = {}
        for line in data[at:end].decode("ascii").split("\r\n"):
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        at = end + 4
        n = int(headers["content-length"])
        body = data[at:at + n]
        check(len(body) == n, "part shorter than its Content-Length")
        at += n
        check(data.startswith(b"\r\n", at), "no CRLF after a part's body")
        at += 2
        parts.append((headers, body))


def parse_with_email(r):
    """The same answer read by Python's email package (it finds the parts by
    the boundary alone): [(content type, engine id, payload bytes)]."""
    head = ("Content-Type: %s\r\n\r\n" % r.headers["Content-Type"]).encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + r.raw)
    check(msg.is_multipart(), "email does not read a multipart message")
    return [(p.get_content_type(), int(p["X-Ippc-Engine"]), p.get_payload(decode=True))
            for p in msg.iter_parts()]


def scatter_npy(c, name, a):
    r = c.api.call("POST", view("all", "scatter") + "?name=" + name, raw=npy_bytes(a),
                   headers=NPY)
    expect_task_results(r, c.ids(), "npy scatter of %s" % name)


def test_multipart_pull(c):
    ids = c.ids()
    check(len(ids) == 4, "the shared cluster has 4 engines: %s" % ids)
    a = np.random.default_rng(10).standard_normal(4_000_000)
    scatter_npy(c, "mp", a)
    r = c.api.get(view("all", "vars/mp"), headers=MULTIPART)
    check(r.status == 200, "multipart pull: %r" % r)
    check(r.headers.get("X-Ippc-Request", "").isdigit(), "X-Ippc-Request: %s" % r.headers)
    parts = parse_multipart(r)
    check(len(parts) == 4, "4 parts, got %d" % len(parts))
    for i, (h, body) in enumerate(parts):
        check(h["content-type"] == "application/octet-stream", "part %d type: %s" % (i, h))
        check(h["x-ippc-engine"] == str(ids[i]) and h["x-ippc-dtype"] == "float64"
              and h["x-ippc-shape"] == "1000000", "part %d headers: %s" % (i, h))
        check(body == a[i * 1_000_000:(i + 1) * 1_000_000].tobytes(),
              "part %d (engine %d): bytes differ from the scattered slice" % (i, ids[i]))

    # Python's email package finds the same parts by the boundary alone.
    got = parse_with_email(r)
    check([(t, e) for t, e, _ in got] == [("application/octet-stream", i) for i in ids],
          "email parts: %s" % [(t, e) for t, e, _ in got])
    check(all(p == body for (_, _, p), (_, body) in zip(got, parts)),
          "email package reads other bytes than Content-Length says")

    # Parts as .npy files.
    r = c.api.get(view("all", "vars/mp"), headers=MULTIPART_NPY)
    check(r.status == 200, "multipart npy pull: %r" % r)
    for i, (h, body) in enumerate(parse_multipart(r)):
        check(h["content-type"] == "application/x-npy" and h["x-ippc-engine"] == str(ids[i]),
              "npy part %d headers: %s" % (i, h))
        back = np.load(io.BytesIO(body))
        check(back.dtype == np.float64 and back.shape == (1_000_000,)
              and np.array_equal(back, a[i * 1_000_000:(i + 1) * 1_000_000]),
              "npy part %d differs" % i)

    # A subset, in target order; one target is one part.
    r = c.api.get(view("%d,%d" % (ids[3], ids[1]), "vars/mp"), headers=MULTIPART)
    parts = parse_multipart(r)
    check([h["x-ippc-engine"] for h, _ in parts] == [str(ids[3]), str(ids[1])],
          "subset parts: %s" % [h for h, _ in parts])
    check(parts[0][1] == a[3_000_000:].tobytes(), "subset part 0 bytes")
    r = c.api.get(view(str(ids[2]), "vars/mp"), headers=MULTIPART)
    check(len(parse_multipart(r)) == 1, "one target, one part")

    # The JSON pull is unchanged.
    r = c.api.get(view("all", "vars/mp") + "?format=typed")
    body = expect(r, 200, "typed pull")
    check(body["status"] == "ok" and [x["shape"] for x in body["results"]] == [[1000000]] * 4,
          "typed pull: %s" % str(body)[:300])
    c.api.post(view("all", "execute"), {"code": "mp = nil"})


def test_multipart_values(c):
    """Not every engine holds an array: JSON parts; a failure is an error."""
    ids = c.ids()
    r = c.api.post(view("all", "execute"), {
        "code": "if mpi.rank() == 0 then mv = nd.arange(5) elseif mpi.rank() == 1 then "
                "mv = 42 elseif mpi.rank() == 2 then mv = {1, 'two', {x = 3}} "
                "else mv = nd.array({{1, 2}, {3, 4}}, 'int32') end"})
    expect_task_results(r, ids, "make mixed values")
    r = c.api.get(view("all", "vars/mv"), headers=MULTIPART)
    check(r.status == 200, "multipart of mixed values: %r" % r)
    parts = parse_multipart(r)
    types = [h["content-type"] for h, _ in parts]
    check(types == ["application/octet-stream", "application/json", "application/json",
                    "application/octet-stream"], "part types: %s" % types)
    check(parts[0][0]["x-ippc-dtype"] == "int64" and parts[0][1] == np.arange(5).tobytes(),
          "part 0: %s" % (parts[0],))
    check(same(json.loads(parts[1][1]), 42), "part 1: %r" % parts[1][1])
    check(same(json.loads(parts[2][1]), [1, "two", {"x": 3}]), "part 2: %r" % parts[2][1])
    check("x-ippc-dtype" not in parts[1][0], "a JSON part has no dtype: %s" % parts[1][0])
    check(parts[3][0]["x-ippc-dtype"] == "int32" and parts[3][0]["x-ippc-shape"] == "2,2"
          and parts[3][1] == np.array([[1, 2], [3, 4]], np.int32).tobytes(), "part 3")
    got = parse_with_email(r)
    check([t for t, _, _ in got] == types, "email reads the part types: %s" % got)

    # A name missing on some engine: the whole answer is a 422 naming it.
    c.api.post(view(str(ids[2]), "execute"), {"code": "mv = nil"})
    r = c.api.get(view("all", "vars/mv"), headers=MULTIPART)
    err = expect_error(r, 422, "invalid_value", "multipart pull with a failure")
    check("engine %d" % ids[2] in err["message"], "the error names the engine: %r" % r)

    # One array (raw or npy) from several engines is refused, pointing to multipart.
    for accept in ("application/x-npy", "application/octet-stream"):
        r = c.api.get(view("0,3", "vars/mv"), headers={"Accept": accept})
        err = expect_error(r, 422, "invalid_value", "%s from 2 engines" % accept)
        check("multipart/mixed" in err["message"], "message points to multipart: %r" % r)
    c.api.post(view("all", "execute"), {"code": "mv = nil"})


CASES = [
    ("f64", np.arange(12, dtype=np.float64) / 7),
    ("f32", np.linspace(-1, 1, 9, dtype=np.float32)),
    ("i64", np.array([-(2 ** 62), 0, 2 ** 62 + 5], dtype=np.int64)),
    ("i32", np.arange(-6, 6, dtype=np.int32).reshape(3, 4)),
    ("u8", np.arange(256, dtype=np.uint8)),
    ("b", np.array([True, False, True, True])),
    ("m2", np.random.default_rng(3).standard_normal((5, 7))),
    ("e0", np.zeros(0, dtype=np.float64)),
    ("e2", np.zeros((2, 0, 3), dtype=np.int32)),
    ("be8", np.arange(6, dtype=">f8") * 1.5),
    ("be4", np.arange(-3, 3, dtype=">i4").reshape(2, 3)),
    ("d3", np.arange(24, dtype=np.int64).reshape(2, 3, 4)),
]


def test_npy_round_trip(c):
    ids = c.ids()
    for name, a in CASES:
        for version in (None, (2, 0)):
            body = npy_bytes(a, version)
            r = c.api.call("PUT", view("all", "vars/" + name), raw=body, headers=NPY)
            expect_task_results(r, ids, "npy push of %s (version %s)" % (name, version))
            want = a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a
            if want.dtype == np.bool_:
                want = want.astype(np.uint8)  # ippc has no bool: uint8, same bytes
            r = c.api.get(view(str(ids[1]), "vars/" + name), headers=ACCEPT_NPY)
            check(r.status == 200 and r.headers.get("Content-Type") == "application/x-npy",
                  "npy pull of %s: %r" % (name, r))
            back = np.load(io.BytesIO(r.raw))
            check(back.dtype == want.dtype and back.dtype.byteorder in ("<", "|", "=")
                  and back.shape == want.shape and np.array_equal(back, want),
                  "%s: pushed %s %s, pulled %s %s" % (name, a.dtype, a.shape, back.dtype,
                                                       back.shape))
            check(r.headers.get("X-Ippc-Shape") == ",".join(map(str, a.shape)),
                  "%s: X-Ippc-Shape %s" % (name, r.headers.get("X-Ippc-Shape")))
        # The same variable pulled as JSON is the numbers.
        r = c.api.get(view(str(ids[0]), "vars/" + name))
        body = expect(r, 200, "JSON pull of %s" % name)
        check(body["status"] == "ok", "JSON pull of %s: %s" % (name, str(body)[:300]))
        got = np.array(body["results"][0], dtype=want.dtype).reshape(a.shape)
        check(np.array_equal(got, want), "JSON pull of %s: %s" % (name, str(body)[:300]))
    c.api.post(view("all", "execute"),
               {"code": " ".join("%s = nil" % name for name, _ in CASES)})


def test_npy_scatter_gather(c):
    a = np.arange(40, dtype=np.float32).reshape(10, 4) - 3.5
    scatter_npy(c, "sg", a)
    r = c.api.get(view("all", "gather/sg"), headers=ACCEPT_NPY)
    check(r.status == 200 and r.headers.get("Content-Type") == "application/x-npy",
          "npy gather: %r" % r)
    back = np.load(io.BytesIO(r.raw))
    check(back.dtype == np.float32 and back.shape == (10, 4) and np.array_equal(back, a),
          "npy gather gives %s %s" % (back.dtype, back.shape))
    # Engines got 3, 3, 2, 2 rows, as multipart says.
    r = c.api.get(view("all", "vars/sg"), headers=MULTIPART_NPY)
    shapes = [np.load(io.BytesIO(body)).shape for _, body in parse_multipart(r)]
    check(shapes == [(3, 4), (3, 4), (2, 4), (2, 4)], "scattered rows: %s" % shapes)
    c.api.post(view("all", "execute"), {"code": "sg = nil"})


def _header(dict_text, version=1, magic=b"\x93NUMPY"):
    text = dict_text.encode()
    pre = 10 if version == 1 else 12
    total = (pre + len(text) + 1 + 63) // 64 * 64
    text = text + b" " * (total - pre - len(text) - 1) + b"\n"
    length = len(text).to_bytes(2 if version == 1 else 4, "little")
    return magic + bytes([version, 0]) + length + text


def _dict(descr="'<f8'", fortran="False", shape="(3,)"):
    return "{'descr': %s, 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)


def test_npy_bad_input(c):
    good = npy_bytes(np.arange(3.0))
    bad = [
        ("bad magic", b"\x93NUMPX" + good[6:], "bad magic"),
        ("not npy at all", b"hello world, not an array", "bad magic"),
        ("empty body", b"", "truncated"),
        ("magic only", good[:8], "truncated"),
        ("truncated header", good[:40], "truncated"),
        ("truncated data", good[:-8], "but 16 bytes follow"),
        ("extra data", good + b"\0" * 8, "but 32 bytes follow"),
        ("lying shape", _header(_dict(shape="(1000000,)")) + b"\0" * 24, "1000000 items"),
        ("complex", _header(_dict(descr="'<c16'")) + b"\0" * 48, "'<c16' is not supported"),
        ("int16", _header(_dict(descr="'<i2'")) + b"\0" * 6, "'<i2' is not supported"),
        ("object array", npy_bytes(np.array([1, "a", None], dtype=object)), "object arrays"),
        ("structured", npy_bytes(np.zeros(2, dtype=[("a", "<f8"), ("b", "<i4")])), "structured"),
        ("fortran order", npy_bytes(np.asfortranarray(np.arange(6.0).reshape(2, 3))),
         "fortran_order True"),
        ("0-d", npy_bytes(np.float64(3.0)), "0-d"),
        ("version 9", _header(_dict()).replace(b"NUMPY\x01", b"NUMPY\x09", 1) + b"\0" * 24,
         "version 9.0"),
        ("not a tuple", _header(_dict(shape="(3)")) + b"\0" * 24, "not a tuple"),
        ("unknown key", _header(_dict()[:-1] + "'x': 1}") + b"\0" * 24, "unknown key"),
        ("expression", _header(_dict(shape="(__import__('os'),)")) + b"\0" * 24,
         "non-negative integers"),
        ("huge header", b"\x93NUMPY\x02\x00" + (1 << 30).to_bytes(4, "little") + b"{",
         "limit"),
        ("huge shape", _header(_dict(shape="(4294967296, 4294967296)")), "does not fit"),
    ]
    for what, body, message in bad:
        for path in (view("all", "vars/bad"), view("all", "scatter") + "?name=bad"):
            r = c.api.call("PUT" if "vars" in path else "POST", path, raw=body, headers=NPY)
            err = expect_error(r, 400, "bad_request", "npy %s on %s" % (what, path))
            check(message in err["message"], "npy %s: message %r lacks %r"
                  % (what, err["message"], message))
    # Nothing was pushed, and the controller serves as before.
    r = c.api.get(view("all", "vars/bad"))
    check(r.status == 200 and r.body["status"] == "error", "bad was never defined: %r" % r)
    r = c.api.call("PUT", view("all", "vars/ok"), raw=good, headers=NPY)
    expect_task_results(r, c.ids(), "a good npy push after the bad ones")
    # .npy is only for routes that take arrays.
    r = c.api.call("POST", view("all", "execute"), raw=good, headers=NPY)
    expect_error(r, 415, "unsupported_media", "npy body on execute")
    c.api.post(view("all", "execute"), {"code": "ok = nil"})


def test_accept_negotiation(c):
    ids = c.ids()
    r = c.api.call("PUT", view("all", "vars/neg"), raw=npy_bytes(np.arange(4.0)), headers=NPY)
    expect_task_results(r, ids, "push for negotiation")
    one = view(str(ids[0]), "vars/neg")
    cases = [
        (None, "application/json"),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        ("text/html", "application/json"),  # nothing offered is named: JSON
        ("application/x-npy", "application/x-npy"),
        ("application/octet-stream, application/json", "application/octet-stream"),
        ("application/json, application/x-npy", "application/json"),
        ("application/json;q=0.5, application/x-npy", "application/x-npy"),
        ("application/x-npy;q=0, application/json", "application/json"),
        ("multipart/mixed;q=0.9, application/json;q=0.1", "multipart/mixed"),
        ("multipart/mixed; part=\"application/x-npy\"", "multipart/mixed"),
        ("multipart/mixed; part=text/plain", "application/json"),
        ("Application/X-NPY", "application/x-npy"),
    ]
    for accept, want in cases:
        r = c.api.get(one, headers={"Accept": accept} if accept else None)
        got = r.headers.get("Content-Type", "")
        check(r.status == 200 and got.split(";")[0] == want,
              "Accept %r: want %s, got %s (%r)" % (accept, want, got, r))
    # A gather offers one array, not multipart: its answer is JSON then.
    r = c.api.get(view("all", "gather/neg"), headers=MULTIPART)
    check(r.status == 200 and r.headers.get("Content-Type") == "application/json",
          "multipart gather: %r" % r)
    c.api.post(view("all", "execute"), {"code": "neg = nil"})


TESTS = [
    ("binary_multipart_pull", test_multipart_pull, "shared"),
    ("binary_multipart_values", test_multipart_values, "shared"),
    ("binary_npy_round_trip", test_npy_round_trip, "shared"),
    ("binary_npy_scatter_gather", test_npy_scatter_gather, "shared"),
    ("binary_npy_bad_input", test_npy_bad_input, "shared"),
    ("binary_accept_negotiation", test_accept_negotiation, "shared"),
]
