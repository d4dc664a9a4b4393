#!/usr/bin/python3
"""test_openapi.py — api/openapi.yaml against the real controller.

    /usr/bin/python3 tests/contract/test_openapi.py

1. The spec is well-formed OpenAPI 3.1: every $ref resolves, every operation
   documents its responses with a JSON schema.
2. Routes: the set of (METHOD, path) under `paths` equals what
   `ippc-controller --print-routes` prints (the WebSocket endpoints listed
   under `x-websockets` may be printed or not).
3. Responses: against a running cluster (controller + mpiexec -n 4 engines),
   real answers of every endpoint — successes and errors — have a status the
   spec documents for that operation, a JSON content type, and a body that
   satisfies the documented schema (a small validator below: type, required,
   properties, additionalProperties, items, enum, const, allOf/anyOf/oneOf,
   if/then, minimum, date-time).

Prints `PASS name` / `FAIL name: reason` per check and ends with
`contract: N passed, N failed`; exits 1 if anything failed.
"""

import base64
import os
import re
import signal
import struct
import subprocess
import sys
import traceback

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import harness  # noqa: E402

SPEC_PATH = os.path.join(harness.ROOT, "api", "openapi.yaml")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


# ---------------------------------------------------------------- validator

DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def resolve(spec, schema):
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError("external $ref not supported: %s" % ref)
        node = spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        schema = node
        seen += 1
        if seen > 50:
            raise ValueError("$ref loop at %s" % ref)
    return schema


def type_ok(t, v):
    if t == "null":
        return v is None
    if t == "boolean":
        return isinstance(v, bool)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "string":
        return isinstance(v, str)
    if t == "array":
        return isinstance(v, list)
    if t == "object":
        return isinstance(v, dict)
    raise ValueError("unknown type %r" % t)


def short(v):
    s = repr(v)
    return s if len(s) < 120 else s[:117] + "..."


def validate(spec, schema, v, where="$"):
    """Returns a list of problems (empty when v satisfies schema)."""
    if schema is True or schema is None:
        return []
    if schema is False:
        return ["%s: no value allowed" % where]
    schema = resolve(spec, schema)
    errs = []
    for sub in schema.get("allOf", []):
        errs += validate(spec, sub, v, where)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [validate(spec, sub, v, where) for sub in schema[key]]
            if all(branches):
                best = min(branches, key=len)
                errs.append("%s: matches no %s branch (closest: %s)" % (where, key, "; ".join(best)))
    if "if" in schema and not validate(spec, schema["if"], v, where):
        if "then" in schema:
            errs += validate(spec, schema["then"], v, where)
    elif "if" in schema and "else" in schema:
        errs += validate(spec, schema["else"], v, where)
    if "const" in schema and v != schema["const"]:
        errs.append("%s: %s is not %r" % (where, short(v), schema["const"]))
    if "enum" in schema and v not in schema["enum"]:
        errs.append("%s: %s not in %s" % (where, short(v), schema["enum"]))
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(type_ok(t, v) for t in types):
            return errs + ["%s: %s is not %s" % (where, short(v), "|".join(types))]
    if isinstance(v, (int, float)) and not isinstance(v, bool) and "minimum" in schema:
        if v < schema["minimum"]:
            errs.append("%s: %s < minimum %s" % (where, v, schema["minimum"]))
    if isinstance(v, str) and schema.get("format") == "date-time" and not DATE_TIME.match(v):
        errs.append("%s: %r is not an ISO-8601 date-time" % (where, v))
    if isinstance(v, dict):
        for name in schema.get("required", []):
            if name not in v:
                errs.append("%s: required %r missing (has %s)" % (where, name, sorted(v)))
        props = schema.get("properties", {})
        for name, sub in props.items():
            if name in v:
                errs += validate(spec, sub, v[name], "%s.%s" % (where, name))
        extra = schema.get("additionalProperties", True)
        for name in v:
            if name in props:
                continue
            if extra is False:
                errs.append("%s: unexpected property %r" % (where, name))
            elif isinstance(extra, dict):
                errs += validate(spec, extra, v[name], "%s.%s" % (where, name))
        if "propertyNames" in schema:
            for name in v:
                errs += validate(spec, schema["propertyNames"], name, "%s{%s}" % (where, name))
    if isinstance(v, list) and "items" in schema:
        for i, item in enumerate(v):
            errs += validate(spec, schema["items"], item, "%s[%d]" % (where, i))
    return errs


# ---------------------------------------------------------------- checks

class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, name, func, *args):
        try:
            func(*args)
        except harness.Failure as e:
            self.fail(name, str(e))
        except Exception as e:
            self.fail(name, "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc()))
        else:
            self.passed += 1
            print("PASS %s" % name, flush=True)

    def fail(self, name, reason):
        self.failed += 1
        print("FAIL %s: %s" % (name, reason.rstrip().replace("\n", "\n    ")), flush=True)


def load_spec():
    with open(SPEC_PATH) as f:
        return yaml.safe_load(f)


def spec_routes(spec):
    return {(m.upper(), p) for p, item in spec["paths"].items() for m in item if m in METHODS}


def check_spec_wellformed(spec):
    harness.check(str(spec.get("openapi", "")).startswith("3.1"), "openapi must be 3.1.x")
    harness.check(spec.get("components", {}).get("securitySchemes", {}).get("bearerAuth", {})
                  .get("scheme") == "bearer", "bearerAuth must be an http bearer scheme")
    harness.check(spec.get("security") == [{"bearerAuth": []}], "bearerAuth must apply globally")
    for name in ("Engine", "Error", "RequestResult", "ExecuteResult", "TypedArray", "Value"):
        harness.check(name in spec["components"]["schemas"], "schema %s missing" % name)
    problems = []

    def walk(node, where):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                try:
                    resolve(spec, node)
                except (KeyError, ValueError) as e:
                    problems.append("%s: unresolved $ref %s (%s)" % (where, node["$ref"], e))
            for k, v in node.items():
                if k not in ("example", "examples"):  # data, not schema
                    walk(v, where + "/" + str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, "%s[%d]" % (where, i))
    walk(spec, "#")
    for method, path in sorted(spec_routes(spec)):
        op = spec["paths"][path][method.lower()]
        for status, resp in op.get("responses", {}).items():
            resp = resolve(spec, resp)
            content = resp.get("content", {})
            if not content:
                problems.append("%s %s %s: no content" % (method, path, status))
            elif (str(status)[0] in "45" or path.startswith("/api/")) \
                    and "application/json" not in content:
                problems.append("%s %s %s: no application/json content" % (method, path, status))
        params = {p2 for p2 in re.findall(r"\{(\w+)\}", path)}
        declared = {resolve(spec, p).get("name") for p in op.get("parameters", [])
                    if resolve(spec, p).get("in") == "path"}
        if params != declared:
            problems.append("%s %s: path parameters %s declared %s" % (method, path, params, declared))
    harness.check(not problems, "\n".join(problems))


def printed_routes():
    exe = harness.CONTROLLER
    harness.check(os.access(exe, os.X_OK), "missing %s" % exe)
    p = subprocess.run([exe, "--print-routes"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    harness.check(p.returncode == 0, "--print-routes exited %s: %s" % (p.returncode, p.stderr))
    routes = set()
    for line in p.stdout.decode().splitlines():
        line = line.strip()
        if not line:
            continue
        parts = line.split()
        harness.check(len(parts) == 2 and parts[1].startswith("/"),
                      "--print-routes line is not 'METHOD /path': %r" % line)
        routes.add((parts[0].upper(), parts[1]))
    return routes


def check_routes(spec):
    printed = printed_routes()
    documented = spec_routes(spec)
    websockets = {("GET", p) for p in spec.get("x-websockets", {})}
    missing = documented - printed
    undocumented = printed - documented - websockets
    msg = []
    if undocumented:
        msg.append("routed but not in the spec: %s" % sorted(undocumented))
    if missing:
        msg.append("in the spec but not routed: %s" % sorted(missing))
    norm = lambda s: {(m, re.sub(r"\{\w+\}", "{}", p)) for m, p in s}  # noqa: E731
    if msg and norm(printed - websockets) == norm(documented):
        msg.append("(they differ only in path parameter names)")
    harness.check(not msg, "; ".join(msg))


def conforms(spec, r, method, template, what=None):
    """r (a harness.Response) must be documented for (method, template) and
    satisfy that response's schema.  Returns the body."""
    what = what or "%s %s" % (method, template)
    op = spec["paths"][template][method.lower()]
    resp = op["responses"].get(str(r.status))
    harness.check(resp is not None, "%s: status %s not documented for %s %s (documented: %s): %r"
                  % (what, r.status, method, template, sorted(op["responses"]), r))
    ctype = r.headers.get("Content-Type") or r.headers.get("content-type") or ""
    harness.check(ctype.split(";")[0].strip() == "application/json",
                  "%s: Content-Type %r, expected application/json: %r" % (what, ctype, r))
    harness.check(r.body is not None or r.raw.strip() == b"null", "%s: body is not JSON: %r" % (what, r))
    schema = resolve(spec, resp)["content"]["application/json"]["schema"]
    errs = validate(spec, schema, r.body)
    harness.check(not errs, "%s: response does not match the spec:\n%s\n%r"
                  % (what, "\n".join(errs[:15]), r))
    return r.body


def conforms_error(spec, r, status, what):
    harness.check(r.status == status, "%s: expected HTTP %d: %r" % (what, status, r))
    errs = validate(spec, {"$ref": "#/components/schemas/Error"}, r.body)
    harness.check(not errs, "%s: not an Error: %s %r" % (what, errs, r))


def live_checks(spec, checks):
    c = harness.Cluster(n=4, profile="contract")
    try:
        try:
            c.start()
        except harness.HarnessError as e:
            checks.fail("contract cluster start", str(e))
            return
        api = c.api
        V = "/api/v1/views/{targets}/"
        ids = c.ids()

        def case(name, method, template, path, body=None, raw=None, status=None, token=True,
                 post=None):
            def go():
                kw = {} if token else {"token": None}
                r = api.call(method, path, body=body, raw=raw, **kw)
                if status is not None:
                    harness.check(r.status == status, "expected HTTP %d: %r" % (status, r))
                b = conforms(spec, r, method, template, name)
                if post:
                    post(b, r)
            checks.run("contract %s" % name, go)

        case("GET /info 200", "GET", "/api/v1/info", "/api/v1/info", status=200)
        case("GET /info 401", "GET", "/api/v1/info", "/api/v1/info", status=401, token=False)
        case("GET /engines 200", "GET", "/api/v1/engines", "/api/v1/engines", status=200,
             post=lambda b, r: harness.check(len(b["engines"]) == 4, "4 engines: %r" % r))
        case("GET /engines/{id} 200", "GET", "/api/v1/engines/{id}",
             "/api/v1/engines/%d" % ids[0], status=200)
        case("GET /engines/{id} 404", "GET", "/api/v1/engines/{id}", "/api/v1/engines/9999",
             status=404)
        case("POST execute 200 ok", "POST", V + "execute", "/api/v1/views/all/execute",
             body={"code": "print('hi') return 6 * 7"}, status=200,
             post=lambda b, r: harness.check(
                 all(x.get("value") == 42 and x.get("stdout") == "hi\n" for x in b["results"]),
                 "value 42 and stdout 'hi\\n' per engine: %r" % r))
        case("POST execute 200 error", "POST", V + "execute", "/api/v1/views/all/execute",
             body={"code": "error('contract')"}, status=200,
             post=lambda b, r: harness.check(b["status"] == "error", "status error: %r" % r))
        case("POST execute 200 syntax error", "POST", V + "execute", "/api/v1/views/0/execute",
             body={"code": "local = 1"}, status=200)
        case("POST execute 400 malformed", "POST", V + "execute", "/api/v1/views/all/execute",
             raw="{nope", status=400)
        case("POST execute 400 bad_targets", "POST", V + "execute", "/api/v1/views/x_y/execute",
             body={"code": "return 1"}, status=400)
        case("POST execute 422 no_engines", "POST", V + "execute", "/api/v1/views/999/execute",
             body={"code": "return 1"}, status=422)
        case("POST execute 401", "POST", V + "execute", "/api/v1/views/all/execute",
             body={"code": "return 1"}, status=401, token=False)
        case("POST execute 202 block=false", "POST", V + "execute",
             "/api/v1/views/all/execute?block=false", body={"code": "return 1"}, status=202)
        case("POST run 200", "POST", V + "run", "/api/v1/views/all/run",
             body={"filename": "psum.lua", "source": open(os.path.join(
                 harness.ROOT, "examples", "psum.lua")).read()}, status=200)
        case("PUT vars 200", "PUT", V + "vars/{name}", "/api/v1/views/all/vars/cx", body=[1, 2, 3],
             status=200)
        case("GET vars 200", "GET", V + "vars/{name}", "/api/v1/views/all/vars/cx", status=200,
             post=lambda b, r: harness.check(b["results"] == [[1, 2, 3]] * 4, "values: %r" % r))

        def typed_ok(b, r):
            for t in b["results"]:
                errs = validate(spec, {"$ref": "#/components/schemas/TypedArray"}, t)
                harness.check(not errs, "format=typed result is not a TypedArray: %s %r" % (errs, r))
                harness.check(struct.unpack("<3q", base64.b64decode(t["data"])) == (1, 2, 3),
                              "typed data: %r" % r)
        case("GET vars ?format=typed 200", "GET", V + "vars/{name}",
             "/api/v1/views/all/vars/cx?format=typed", status=200, post=typed_ok)
        case("GET vars undefined 200 errors", "GET", V + "vars/{name}",
             "/api/v1/views/all/vars/contract_undefined", status=200,
             post=lambda b, r: harness.check(b["status"] == "error" and len(b.get("errors", [])) == 4,
                                             "status error with 4 errors: %r" % r))
        case("POST push 200", "POST", V + "push", "/api/v1/views/all/push",
             body={"namespace": {"cp": 1, "cq": "two"}}, status=200)
        case("POST pull 200", "POST", V + "pull", "/api/v1/views/all/pull",
             body={"names": ["cp", "cq"]}, status=200,
             post=lambda b, r: harness.check(b["results"] == [[1, "two"]] * 4, "values: %r" % r))
        case("POST scatter 200", "POST", V + "scatter", "/api/v1/views/all/scatter",
             body={"name": "a", "data": list(range(16))}, status=200)
        case("GET gather 200", "GET", V + "gather/{name}", "/api/v1/views/all/gather/a",
             status=200, post=lambda b, r: harness.check(b["result"] == list(range(16)),
                                                          "gathered: %r" % r))
        case("POST apply 200", "POST", V + "apply", "/api/v1/views/all/apply",
             body={"function": "psum", "args": [{"$ref": "a"}], "kwargs": {}}, status=200,
             post=lambda b, r: harness.check([x.get("value") for x in b["results"]] == [120] * 4,
                                             "psum values: %r" % r))

        def request_roundtrip():
            r = api.post("/api/v1/views/all/execute?block=false", {"code": "return 5"})
            b = conforms(spec, r, "POST", V + "execute", "execute?block=false")
            harness.check(r.status == 202, "expected 202: %r" % r)
            r = api.get("/api/v1/requests/%s?wait=60" % b["request"])
            conforms(spec, r, "GET", "/api/v1/requests/{id}", "GET /requests/{id}")
            harness.check(r.status == 200, "expected 200 after wait: %r" % r)
        checks.run("contract GET /requests/{id} 200", request_roundtrip)
        case("GET /requests/{id} 404", "GET", "/api/v1/requests/{id}", "/api/v1/requests/123456789",
             status=404)

        case("POST interrupt 200", "POST", V + "interrupt", "/api/v1/views/all/interrupt",
             status=200)
        case("POST interrupt 422", "POST", V + "interrupt", "/api/v1/views/999/interrupt",
             status=422)

        def raw_answer():
            r = api.get("/api/v1/views/0/vars/cx", headers={"Accept": "application/octet-stream"})
            harness.check(r.status == 200, "raw GET: %r" % r)
            op = spec["paths"][V + "vars/{name}"]["get"]["responses"]["200"]
            harness.check("application/octet-stream" in op["content"],
                          "raw answers must be documented")
            for h in op.get("headers", {}):
                harness.check(h in r.headers, "documented header %s missing: %s" % (h, r.headers))
            harness.check(r.headers.get("Content-Type", "").startswith("application/octet-stream"),
                          "raw Content-Type: %s" % r.headers)
        checks.run("contract GET vars raw octet-stream 200", raw_answer)

        # Load-balanced tasks, map, queue, history.
        T = "/api/v1/tasks"

        def tasks_flow():
            r = api.post(T, {"code": "return 6 * 7", "tags": ["contract"]})
            b = conforms(spec, r, "POST", T, "POST /tasks (one)")
            harness.check(r.status == 202, "submit answers 202: %r" % r)
            r = api.get("%s/%s?wait=60" % (T, b["id"]))
            b2 = conforms(spec, r, "GET", T + "/{id}", "GET /tasks/{id}?wait")
            harness.check(r.status == 200 and b2.get("state") == "completed"
                          and b2.get("result") == 42, "completed with result 42: %r" % r)
            # Not psum: a single task must not call an MPI collective.
            r = api.post("/api/v1/views/all/execute", {"code": "function tsum(a) return a:sum() end"})
            harness.check(r.status == 200, "define tsum: %r" % r)
            r = api.post(T + "?block=true&timeout=60", {"function": "tsum", "args": [[1, 2, 3]]})
            b3 = conforms(spec, r, "POST", T, "POST /tasks?block=true")
            harness.check(r.status == 200 and b3.get("result") == 6, "tsum([1,2,3]) = 6: %r" % r)
            r = api.post(T, [{"code": "return 1"}, {"code": "return 2"}])
            conforms(spec, r, "POST", T, "POST /tasks (batch)")
            r = api.call("DELETE", "%s/%s" % (T, b["id"]))
            conforms(spec, r, "DELETE", T + "/{id}", "DELETE /tasks/{finished id}")
            harness.check(r.status == 409, "aborting a finished task is 409: %r" % r)
            r = api.post("%s/%s/resubmit" % (T, b["id"]))
            conforms(spec, r, "POST", T + "/{id}/resubmit", "POST /tasks/{id}/resubmit")
            r = api.get("%s/999999" % T)
            conforms(spec, r, "GET", T + "/{id}", "GET /tasks/{unknown}")
            harness.check(r.status == 404, "unknown task is 404: %r" % r)
            r = api.post(T, {"code": "return 1", "bogus": 1})
            conforms(spec, r, "POST", T, "POST /tasks with an unknown field")
            harness.check(r.status == 400, "unknown field is 400: %r" % r)
        checks.run("contract tasks submit/get/abort/resubmit", tasks_flow)

        def map_flow():
            r = api.post("/api/v1/views/all/execute", {"code": "function sq(x) return x * x end"})
            harness.check(r.status == 200, "define sq: %r" % r)
            r = api.post("/api/v1/map", {"function": "sq", "sequences": [[1, 2, 3, 4, 5]],
                                         "chunksize": 2})
            b = conforms(spec, r, "POST", "/api/v1/map", "POST /map")
            harness.check(r.status == 200 and b.get("results") == [1, 4, 9, 16, 25],
                          "map results: %r" % r)
            r = api.post("/api/v1/map?block=false", {"function": "sq", "sequences": [[1, 2]]})
            b = conforms(spec, r, "POST", "/api/v1/map", "POST /map?block=false")
            r = api.get("/api/v1/requests/%s?wait=60" % b["request"])
            conforms(spec, r, "GET", "/api/v1/requests/{id}", "GET /requests/{map id}")
        checks.run("contract map", map_flow)

        def metrics():
            r = api.get("/metrics")
            harness.check(r.status == 200 and r.headers.get("Content-Type", "").startswith("text/plain")
                          and b"ippc_" in r.raw, "GET /metrics: %r %s" % (r, r.headers))
            conforms_error(spec, harness.http("GET", api.url + "/metrics"), 401, "/metrics without token")
        checks.run("contract GET /metrics", metrics)

        case("GET /queue 200", "GET", "/api/v1/queue", "/api/v1/queue", status=200)
        case("GET /tasks 200", "GET", T, T + "?limit=5", status=200)
        case("GET /tasks 400", "GET", T, T + "?state=bogus", status=400)
        case("DELETE /tasks 200", "DELETE", T, T, status=200)

        def unknown_route():
            conforms_error(spec, api.get("/api/v1/no/such/route"), 404, "unknown API route")
            conforms_error(spec, harness.http("GET", api.url + "/no/such/page"), 404,
                           "unknown non-API path")
        checks.run("contract unknown routes 404 Error", unknown_route)

        def front_door():
            r = api.call("DELETE", "/api/v1/info")
            conforms(spec, r, "GET", "/api/v1/info", "DELETE /info")  # 405 is listed per path
            harness.check(r.status == 405 and r.headers.get("Allow") == "GET",
                          "405 with Allow: GET: %r %s" % (r, r.headers))
            r = api.get("/api/v1/info?pad=" + "x" * 9000)
            conforms(spec, r, "GET", "/api/v1/info", "9000-byte query")
            harness.check(r.status == 414, "414: %r" % r)
            r = api.get("/api/v1/info", headers={"X-Pad-%d" % i: "y" * 1000 for i in range(20)})
            conforms(spec, r, "GET", "/api/v1/info", "20 KiB of headers")
            harness.check(r.status == 431, "431: %r" % r)
            r = api.call("PUT", "/api/v1/views/all/vars/x", raw="1",
                         headers={"Authorization": "bearer " + api.token})
            conforms(spec, r, "PUT", V + "vars/{name}", "lower-case bearer")
            harness.check(r.status == 200, "bearer is case-insensitive: %r" % r)
            r = api.call("PUT", "/api/v1/views/all/vars/x%00y", raw="1")
            conforms(spec, r, "PUT", V + "vars/{name}", "vars/x%00y")
            harness.check(r.status == 400, "a NUL in the path is 400: %r" % r)
        checks.run("contract 405/414/431/400 from the front door", front_door)
    finally:
        problems = c.stop()
        if problems:
            checks.fail("contract cluster stop", "; ".join(problems))


def main():
    checks = Checks()
    try:
        spec = load_spec()
    except Exception as e:
        checks.fail("openapi.yaml loads", str(e))
        print("contract: %d passed, %d failed" % (checks.passed, checks.failed))
        return 1

    def on_term(signum, frame):
        raise SystemExit("interrupted by signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)

    checks.run("openapi.yaml is well-formed OpenAPI 3.1", check_spec_wellformed, spec)
    checks.run("routes: spec == ippc-controller --print-routes", check_routes, spec)
    try:
        live_checks(spec, checks)
    except SystemExit as e:
        checks.fail("contract live checks", str(e))
    print("contract: %d passed, %d failed" % (checks.passed, checks.failed), flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
