"""test_errors.py — authentication, malformed requests, bad targets, unknown
routes: every one a JSON error with the contract's status and code, and the
controller keeps serving."""

from harness import Cluster, check, expect, expect_error, http
from common import same, view, values_of, pull_var


def test_auth(c):
    url, token = c.api.url, c.api.token
    expect_error(http("GET", url + "/api/v1/info"), 401, "unauthorized", "no token")
    expect_error(http("GET", url + "/api/v1/info", token="wrong"), 401, "unauthorized",
                 "wrong token")
    expect_error(http("GET", url + "/api/v1/info", token=token + "x"), 401, "unauthorized",
                 "token with a suffix")
    expect_error(http("GET", url + "/api/v1/info", token=token[:-1]), 401, "unauthorized",
                 "token prefix")
    expect_error(http("GET", url + "/api/v1/info", headers={"Authorization": "Basic " + token}),
                 401, "unauthorized", "Basic scheme")
    expect_error(http("GET", url + "/api/v1/engines"), 401, "unauthorized", "engines, no token")
    # Code sent without a valid token never runs.
    expect_error(http("POST", url + view("all", "execute"), body={"code": "pwned = 1"}),
                 401, "unauthorized", "execute, no token")
    expect_error(http("POST", url + view("all", "execute"), body={"code": "pwned = 1"},
                      token="wrong"), 401, "unauthorized", "execute, wrong token")
    expect_error(http("PUT", url + view("all", "vars/pwned"), body=1), 401, "unauthorized",
                 "PUT vars, no token")
    body = expect(pull_var(c, "pwned"), 200, "GET vars/pwned")
    check(body.get("status") == "error" and body.get("results") == [None] * 4,
          "unauthenticated execute must not have run: %s" % body)
    expect(c.api.get("/api/v1/info"), 200, "the right token")


def test_malformed_json(c):
    cases = [
        ("POST", view("all", "execute"), "{not json"),
        ("POST", view("all", "execute"), '{"code": "x = 1"'),
        ("POST", view("all", "execute"), ""),
        ("POST", view("all", "run"), "[1, 2"),
        ("PUT", view("all", "vars/x"), "{bad"),
        ("POST", view("all", "push"), "nope"),
        ("POST", view("all", "pull"), '{"names": [}'),
        ("POST", view("all", "scatter"), "{'name': 'a'}"),
        ("POST", view("all", "apply"), "{"),
    ]
    for method, path, raw in cases:
        r = c.api.call(method, path, raw=raw)
        expect_error(r, 400, "bad_request", "malformed JSON %r" % raw)
    # Well-formed, but a required field is missing or has the wrong type.
    for method, path, body in [
        ("POST", view("all", "execute"), {}),
        ("POST", view("all", "execute"), {"code": 5}),
        ("POST", view("all", "run"), {"filename": "x.lua"}),
        ("POST", view("all", "push"), {"ns": {}}),
        ("POST", view("all", "pull"), {"names": "a"}),
        ("POST", view("all", "scatter"), {"data": [1, 2]}),
        ("POST", view("all", "apply"), {"args": []}),
        ("POST", view("all", "execute"), [1, 2]),
    ]:
        r = c.api.call(method, path, body=body)
        expect_error(r, (400, 422), ("bad_request", "invalid_value"),
                     "%s %s with body %s" % (method, path, body))
    check(same(values_of(c, "return 1"), [1] * 4), "engines fine after bad requests")


def test_bad_targets(c):
    ids = c.ids()
    missing = max(ids) + 100
    expect_error(c.api.post(view(str(missing), "execute"), {"code": "return 1"}),
                 422, "no_engines", "unknown engine id")
    expect_error(c.api.get(view(str(missing), "vars/a")), 422, "no_engines",
                 "unknown engine id, GET vars")
    expect_error(c.api.post(view("%d,%d" % (ids[0], missing), "execute"), {"code": "return 1"}),
                 422, "no_engines", "a list with an id that is not live")
    expect_error(c.api.post(view("10:20", "execute"), {"code": "return 1"}),
                 422, "no_engines", "a slice that selects nothing")
    for spec in ("abc", "1:2:3:4", "1,,2", "0x1", "1.5", "1:x", "all1", "3-", "all,1", "0:2,3"):
        expect_error(c.api.post(view(spec, "execute"), {"code": "return 1"}),
                     400, "bad_targets", "garbage targets %r" % spec)


def test_unknown_routes(c):
    api = c.api
    expect_error(api.get("/api/v1/nope"), 404, "not_found", "unknown API route")
    expect_error(api.get("/api/v1/views/all/nope"), 404, "not_found", "unknown view verb")
    expect_error(api.get("/api/v2/info"), 404, "not_found", "unknown API version")
    expect_error(http("GET", api.url + "/definitely/not/here"), 404, "not_found",
                 "unknown non-API path")
    expect_error(api.get("/api/v1/engines/abc"), (400, 404), ("bad_request", "not_found"),
                 "non-numeric engine id")
    # A path that exists with a method it does not take is 405, not 404.
    for method, path, body in (("DELETE", "/api/v1/info", None),
                               ("POST", "/api/v1/engines", {}),
                               ("PUT", "/api/v1/engines/0", {}),
                               ("GET", "/api/v1/views/all/execute", None),
                               ("DELETE", "/api/v1/views/all/scatter", None),
                               ("POST", "/api/v1/views/all/vars/a", {}),
                               ("PUT", "/api/v1/tasks", {}),
                               ("GET", "/api/v1/map", None),
                               ("POST", "/api/v1/requests/1", {}),
                               ("DELETE", "/metrics", None)):
        expect_error(api.call(method, path, body=body), 405, "method_not_allowed",
                     "%s %s" % (method, path))
    expect(api.get("/api/v1/info"), 200, "still serving")


def test_payload_too_large(_):
    """A JSON body over --max-body-mb and a raw array body over --max-raw-mb
    are 413 payload_too_large, naming the option; a raw body over
    --max-body-mb but within --max-raw-mb is taken.  The controller keeps
    serving.  Own controller (no engines needed)."""
    c = Cluster(jobs=[], profile="limits",
                controller_args=["--max-body-mb", "1", "--max-raw-mb", "2"])
    try:
        c.start()
        big = "x" * (2 << 20)
        r = c.api.post(view("all", "execute"), {"code": "-- " + big})
        err = expect_error(r, 413, "payload_too_large", "2 MiB body with --max-body-mb 1")
        check("--max-body-mb" in err["message"], "the 413 names --max-body-mb: %r" % r)
        r = c.api.call("PUT", view("all", "vars/big"), raw=b"0" * (3 << 20),
                       headers={"Content-Type": "application/octet-stream"})
        err = expect_error(r, 413, "payload_too_large", "3 MiB raw body with --max-raw-mb 2")
        check("--max-raw-mb" in err["message"], "the 413 names --max-raw-mb: %r" % r)
        r = c.api.call("PUT", view("all", "vars/big"), raw=b"0" * (3 << 19),
                       headers={"Content-Type": "application/octet-stream"})
        expect_error(r, 422, "no_engines", "a 1.5 MiB raw body passes --max-body-mb 1")
        info = expect(c.api.get("/api/v1/info"), 200, "info after 413s")
        check(info.get("engines") == 0, "no engines: %s" % info)
        expect_error(c.api.post(view("all", "execute"), {"code": "return 1"}), 422, "no_engines",
                     "a view with no engines at all")
    finally:
        problems = c.stop()
    check(not problems, "; ".join(problems))


TESTS = [
    ("auth_401", test_auth, "shared"),
    ("malformed_json_400", test_malformed_json, "shared"),
    ("bad_targets_400_422", test_bad_targets, "shared"),
    ("unknown_routes_404_405", test_unknown_routes, "shared"),
    ("payload_too_large_413", test_payload_too_large, "own"),
]
