"""common.py — helpers shared by the integration test modules.

Test functions take a harness.Cluster (tests of kind "shared" get the runner's
shared cluster; tests of kind "own" get None and start what they need).  They
raise harness.Failure (via check/expect) with the request and the response in
the message, so a failure line says exactly what the server answered.
"""

import json
import os

from harness import ROOT, check, expect

PSUM_PATH = os.path.join(ROOT, "examples", "psum.lua")


def same(a, b):
    """Equality that also tells int from float and bool from int, recursively
    (so [120.0] is not [120])."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def _significant_digits(literal):
    mantissa = literal.lower().split("e")[0].lstrip("-").replace(".", "")
    return max(1, len(mantissa.strip("0")))


def long_reals(raw):
    """The real-number literals of a JSON text that are longer than the
    shortest text reading back to the same double (Python's repr is that
    shortest form): [] when every real is written shortest."""
    found = []

    def visit(literal):
        if _significant_digits(literal) > _significant_digits(repr(float(literal))):
            found.append(literal)
        return float(literal)

    json.loads(raw, parse_float=visit)
    return found


def show(v):
    return json.dumps(v)[:600]


def view(targets, op):
    return "/api/v1/views/%s/%s" % (targets, op)


def expect_done(r, n, what, status="ok"):
    """A blocking direct-view answer: HTTP 200, overall status, n results in
    target order.  Returns the body."""
    body = expect(r, 200, what)
    check(isinstance(body, dict), "%s: body is not an object: %r" % (what, r))
    for field in ("request", "targets", "status"):
        check(field in body, "%s: answer has no %r: %r" % (what, field, r))
    check(body["status"] == status, "%s: expected status %r: %r" % (what, status, r))
    check(isinstance(body["targets"], list) and len(body["targets"]) == n,
          "%s: expected %d targets: %r" % (what, n, r))
    if "results" in body:
        check(isinstance(body["results"], list) and len(body["results"]) == n,
              "%s: expected %d results: %r" % (what, n, r))
    return body


def expect_task_results(r, targets, what, status="ok"):
    """execute/run/apply/push/scatter answer: one result per target with
    "engine" equal to the target at that position, and the given per-result
    status (when status is a str).  Returns the results."""
    body = expect_done(r, len(targets), what, status="ok" if status == "ok" else "error")
    check(body["targets"] == list(targets),
          "%s: expected targets %s: %r" % (what, list(targets), r))
    results = body["results"]
    for t, res in zip(targets, results):
        check(isinstance(res, dict), "%s: result is not an object: %r" % (what, r))
        check(res.get("engine") == t,
              "%s: results not in target order (expected engine %s): %r" % (what, t, r))
        if status == "ok":
            check(res.get("status") == "ok", "%s: engine %s not ok: %r" % (what, t, r))
    return results


def execute(c, code, targets="all", what=None):
    return c.api.post(view(targets, "execute"), {"code": code})


def values_of(c, code, targets=None, what=None):
    """Executes code (which returns a value) on targets; returns the values."""
    ids = targets if targets is not None else c.ids()
    spec = ",".join(str(i) for i in ids)
    r = c.api.post(view(spec, "execute"), {"code": code})
    results = expect_task_results(r, ids, what or "execute %r" % code)
    for res in results:
        check("value" in res, "%s: result has no value: %r" % (what or code, r))
    return [res["value"] for res in results]


def pull_var(c, name, targets="all", **kw):
    return c.api.get(view(targets, "vars/" + name), **kw)


def psum_source():
    with open(PSUM_PATH) as f:
        return f.read()
