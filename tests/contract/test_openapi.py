#!/usr/bin/python3
"""test_openapi.py — api/openapi.yaml against the real controller.

    /usr/bin/python3 tests/contract/test_openapi.py

1. The spec is well-formed OpenAPI 3.1: every $ref resolves, every operation
   documents its responses with a JSON schema.
2. Routes: the set of (METHOD, path) under `paths` equals what
   `ippc-controller --print-routes` prints (WebSocket endpoints — operations
   answering 101, and those under `x-websockets` — may be printed or not).
3. Responses: against a running cluster (controller + mpiexec -n 4 engines),
   real answers of every endpoint — successes and errors — have a status the
   spec documents for that operation, a JSON content type, and a body that
   satisfies the documented schema (a small validator below: type, required,
   properties, additionalProperties, items, enum, const, allOf/anyOf/oneOf,
   if/then, minimum, date-time).
4. GET /metrics is Prometheus text with exactly the families, types, labels
   and buckets listed under the operation's `x-metrics`.

Prints `PASS name` / `FAIL name: reason` per check and ends with
`contract: N passed, N failed`; exits 1 if anything failed.

Also, as checks of the same count:
- a generator can use the spec: `redocly lint` (recommended rules) finds no
  error, and the TypeScript types openapi-typescript generates from it
  type-check tests/contract/ts/client.ts (`tsc --noEmit`).  The npm tools are
  node_modules/ (`make npm-deps`: `npm ci` of package-lock.json);
- GET /requests/{id}: `x-ippc-answer-of` names, for each call answered later,
  the schema of its blocking answer, and real answers satisfy it;
- /ws: docs/streams.md, the spec's `x-ippc-ws-messages` and the controller
  (its op table in server/ws_client.c, the event types in server/*.c, and a
  live socket: every listed op is known, an unknown op is refused, every
  message has a listed type, replies satisfy the REST twin's schema) agree.
"""

import base64
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import traceback

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import harness  # noqa: E402
from wsclient import HandshakeError, WebSocket  # noqa: E402

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
        patterned = set()
        for pattern, sub in schema.get("patternProperties", {}).items():
            for name in v:
                if re.search(pattern, name):
                    patterned.add(name)
                    errs += validate(spec, sub, v[name], "%s.%s" % (where, name))
        if len(v) < schema.get("minProperties", 0):
            errs.append("%s: fewer than %d members" % (where, schema["minProperties"]))
        if "maxProperties" in schema and len(v) > schema["maxProperties"]:
            errs.append("%s: more than %d members" % (where, schema["maxProperties"]))
        extra = schema.get("additionalProperties", True)
        for name in v:
            if name in props or name in patterned:
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


# ---------------------------------------------------------------- Prometheus text

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
PROM_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def prom_value(text, where):
    special = {"+Inf": float("inf"), "-Inf": float("-inf"), "NaN": float("nan")}
    if text in special:
        return special[text]
    try:
        return float(text)
    except ValueError:
        raise harness.Failure("%s: %r is not a sample value" % (where, text))


def prom_labels(text, where):
    """'a="x",b="y\\"z"' -> {"a": "x", "b": 'y"z'}."""
    labels, i = {}, 0
    while i < len(text):
        m = LABEL_NAME.match(text, i)
        harness.check(m is not None and text[m.end():m.end() + 2] == '="',
                      "%s: bad label at %r" % (where, text[i:]))
        name, i, value = m.group(0), m.end() + 2, []
        while True:
            harness.check(i < len(text), "%s: unterminated label value" % where)
            ch = text[i]
            if ch == "\\":
                nxt = text[i + 1:i + 2]
                harness.check(nxt in ("\\", '"', "n"), "%s: bad escape \\%s" % (where, nxt))
                value.append("\n" if nxt == "n" else nxt)
                i += 2
            elif ch == '"':
                i += 1
                break
            else:
                value.append(ch)
                i += 1
        harness.check(name not in labels, "%s: label %s twice" % (where, name))
        labels[name] = "".join(value)
        if i < len(text):
            harness.check(text[i] == ",", "%s: expected ',' at %r" % (where, text[i:]))
            i += 1
    return labels


def parse_prometheus(text):
    """Parses the text exposition format 0.0.4 strictly enough to catch a
    broken answer: {family: {"type", "help", "samples": [(name, labels,
    value)]}}, with samples in their order.  A family's HELP/TYPE come before
    its samples, once each, and its samples are contiguous."""
    families, order, current = {}, [], None

    def family_of(sample, where):
        for suffix in ("_bucket", "_sum", "_count"):
            base = sample[:-len(suffix)] if sample.endswith(suffix) else None
            if base and families.get(base, {}).get("type") in ("histogram", "summary"):
                return base
        return sample

    harness.check(text.endswith("\n"), "the exposition must end with a newline")
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "/metrics line %d %r" % (n, line)
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                harness.check(METRIC_NAME.match(name), "%s: bad metric name" % where)
                fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
                harness.check(not fam["samples"], "%s: %s after the family's samples"
                              % (where, parts[1]))
                key = parts[1].lower()
                harness.check(fam[key] is None, "%s: a second %s line" % (where, parts[1]))
                fam[key] = parts[3] if len(parts) > 3 else ""
                if key == "type":
                    harness.check(fam["type"] in PROM_TYPES, "%s: unknown type" % where)
                if name not in order:
                    order.append(name)
                current = name
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?$", line)
        harness.check(m is not None, "%s: not a sample line" % where)
        name = family_of(m.group(1), where)
        fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
        if name not in order:
            order.append(name)
        harness.check(current == name or not fam["samples"],
                      "%s: the samples of %s are not contiguous" % (where, name))
        current = name
        fam["samples"].append((m.group(1), prom_labels(m.group(2) or "", where),
                               prom_value(m.group(3), where)))
    return families


def check_metrics(spec, text):
    """GET /metrics against the x-metrics list of the spec: exactly those
    families, with their types, label sets and histogram buckets; values that
    make sense for their type."""
    documented = spec["paths"]["/metrics"]["get"]["x-metrics"]
    families = parse_prometheus(text)
    served = {n for n in families if n.startswith("ippc_")}
    harness.check(served == set(documented),
                  "metric families: undocumented %s, missing %s"
                  % (sorted(served - set(documented)), sorted(set(documented) - served)))
    for name, doc in documented.items():
        fam = families[name]
        where = "metric %s" % name
        harness.check(fam["type"] == doc["type"], "%s: TYPE %s, documented %s"
                      % (where, fam["type"], doc["type"]))
        harness.check(fam["help"], "%s: no # HELP text" % where)
        harness.check(fam["samples"], "%s: no samples" % where)
        for sample, labels, value in fam["samples"]:
            harness.check(value == value and value >= 0, "%s: %s%s is %r"
                          % (where, sample, labels, value))
        if doc["type"] == "histogram":
            buckets = [(l.get("le"), v) for s2, l, v in fam["samples"] if s2 == name + "_bucket"]
            harness.check([b for b, _ in buckets] == doc["buckets"],
                          "%s: buckets %s, documented %s" % (where, [b for b, _ in buckets],
                                                              doc["buckets"]))
            counts = [v for _, v in buckets]
            harness.check(counts == sorted(counts), "%s: buckets must be cumulative: %s"
                          % (where, buckets))
            total = [v for s2, l, v in fam["samples"] if s2 == name + "_count"]
            sums = [v for s2, l, v in fam["samples"] if s2 == name + "_sum"]
            harness.check(len(total) == 1 and len(sums) == 1 and total[0] == counts[-1],
                          "%s: one _count equal to the +Inf bucket (%s) and one _sum: %s"
                          % (where, counts[-1], fam["samples"]))
            continue
        wanted = doc.get("labels", {})
        seen = sorted(tuple(sorted(l.items())) for s2, l, v in fam["samples"])
        harness.check(all(s2 == name for s2, _, _ in fam["samples"]),
                      "%s: samples of other names: %s" % (where, fam["samples"]))
        if not wanted:
            harness.check(seen == [()], "%s: one sample without labels: %s"
                          % (where, fam["samples"]))
        else:
            (label, values), = wanted.items()
            want = sorted(((label, v),) for v in values)
            harness.check(seen == want, "%s: label sets %s, documented %s" % (where, seen, want))
    return families


def metric(families, name, sample=None, **labels):
    """The value of sample (default: the family's name) with exactly labels."""
    for s2, l, v in families[name]["samples"]:
        if s2 == (sample or name) and l == labels:
            return v
    raise harness.Failure("no sample %s%s" % (sample or name, labels))


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
            if str(status) == "101":  # a WebSocket upgrade: no body
                continue
            if str(status) == "405" and "Allow" not in resp.get("headers", {}):
                problems.append("%s %s 405: no Allow header (use components/responses/"
                                "MethodNotAllowed)" % (method, path))
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
    websockets |= {(m, p) for m, p in documented  # operations answering a WebSocket upgrade
                   if "101" in spec["paths"][p][m.lower()].get("responses", {})}
    missing = documented - printed - websockets
    undocumented = printed - documented - websockets
    msg = []
    if undocumented:
        msg.append("routed but not in the spec: %s" % sorted(undocumented))
    if missing:
        msg.append("in the spec but not routed: %s" % sorted(missing))
    norm = lambda s: {(m, re.sub(r"\{\w+\}", "{}", p)) for m, p in s}  # noqa: E731
    if msg and norm(printed - websockets) == norm(documented - websockets):
        msg.append("(they differ only in path parameter names)")
    harness.check(not msg, "; ".join(msg))


# ---------------------------------------------------------------- what a generator needs

NODE_BIN = os.path.join(harness.ROOT, "node_modules", ".bin")
TS_DIR = os.path.join(HERE, "ts")
BUILD_DIR = harness.BUILD if os.path.isabs(harness.BUILD) else os.path.join(harness.ROOT, harness.BUILD)
NODE_MIN = (20, 19)  # @redocly/cli 2.x


def npm_tool(name):
    exe = os.path.join(NODE_BIN, name)
    harness.check(os.access(exe, os.X_OK), "%s is missing: run `make npm-deps` (npm ci of "
                  "package-lock.json; `make test` does it)" % exe)
    node = shutil.which("node")
    harness.check(node is not None, "node is not installed (scripts/install-deps)")
    p = subprocess.run([node, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=30)
    m = re.match(r"v(\d+)\.(\d+)", p.stdout.decode())
    harness.check(m is not None and (int(m.group(1)), int(m.group(2))) >= NODE_MIN,
                  "node %s is too old: the contract tools need Node.js >= %d.%d"
                  % (p.stdout.decode().strip(), *NODE_MIN))
    return exe


def run_tool(argv, timeout=300):
    """Runs an npm tool from the repository root, offline-friendly (no update
    checks, no telemetry).  Returns (exit status, output without banners)."""
    env = dict(os.environ, REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true",
               NO_UPDATE_NOTIFIER="1", NO_COLOR="1", FORCE_COLOR="0")
    p = subprocess.run(argv, cwd=harness.ROOT, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    out = p.stdout.decode("utf-8", "replace")
    out = "\n".join(line for line in out.splitlines()
                    if line.strip() and not re.match(r"^\s*[╔║╚]", line))
    return p.returncode, out


def check_redocly_lint():
    """`redocly lint` with the recommended rules: no error (warnings are
    printed; .redocly.lint-ignore.yaml lists the ones ignored, with reasons)."""
    rc, out = run_tool([npm_tool("redocly"), "lint", os.path.relpath(SPEC_PATH, harness.ROOT),
                        "--extends=recommended", "--format=stylish"])
    harness.check(rc == 0, "redocly lint found errors (exit %d):\n%s" % (rc, out[-6000:]))
    warnings = [line for line in out.splitlines() if re.search(r"\bwarning\b", line)]
    for line in warnings[:20]:
        print("    redocly: %s" % line.strip(), flush=True)


def check_typescript_types():
    """openapi-typescript turns the spec into types, and tests/contract/ts/
    client.ts type-checks against them (`tsc --noEmit`).  Both run in
    $BUILD/contract-ts, on copies of client.ts and tsconfig.json."""
    out_dir = os.path.join(BUILD_DIR, "contract-ts")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    for name in ("client.ts", "tsconfig.json"):
        shutil.copy(os.path.join(TS_DIR, name), out_dir)
    types = os.path.join(out_dir, "api.d.ts")
    rc, out = run_tool([npm_tool("openapi-typescript"), SPEC_PATH, "--output", types,
                        "--default-non-nullable", "false"])
    harness.check(rc == 0 and os.path.exists(types),
                  "openapi-typescript failed (exit %d):\n%s" % (rc, out[-4000:]))
    rc, out = run_tool([npm_tool("tsc"), "--project", os.path.join(out_dir, "tsconfig.json")])
    harness.check(rc == 0, "tsc --noEmit: tests/contract/ts/client.ts does not type-check "
                  "against the types generated from the spec (%s):\n%s" % (types, out[-6000:]))


def operations(spec):
    """operationId -> (METHOD, path, operation)."""
    return {op["operationId"]: (m.upper(), p, op) for p, item in spec["paths"].items()
            for m, op in item.items() if m in METHODS and "operationId" in op}


def json_schema_of(spec, op, status):
    resp = op.get("responses", {}).get(str(status))
    if resp is None:
        return None
    return resolve(spec, resp).get("content", {}).get("application/json", {}).get("schema")


def check_answer_of(spec):
    """RequestAnswer's x-ippc-answer-of: each operationId exists and answers
    200 with exactly that schema; every operation that can answer 202 with a
    request to poll (Pending, MapPending) is listed."""
    answer_of = spec["components"]["schemas"]["RequestAnswer"]["x-ippc-answer-of"]
    ops = operations(spec)
    problems = []
    for op_id, ref in answer_of.items():
        if op_id not in ops:
            problems.append("%s: no such operationId" % op_id)
        elif json_schema_of(spec, ops[op_id][2], 200) != {"$ref": ref}:
            problems.append("%s: its 200 schema is %s, listed %s"
                            % (op_id, json_schema_of(spec, ops[op_id][2], 200), ref))
    pending = ({"$ref": "#/components/schemas/Pending"}, {"$ref": "#/components/schemas/MapPending"})
    for op_id, (method, path, op) in ops.items():
        if json_schema_of(spec, op, 202) in pending and op_id not in answer_of:
            problems.append("%s (%s %s) answers a request to poll but is not in x-ippc-answer-of"
                            % (op_id, method, path))
    harness.check(not problems, "\n".join(problems))


# ---------------------------------------------------------------- /ws messages

STREAMS_DOC = os.path.join(harness.ROOT, "docs", "streams.md")
WS_CLIENT_C = os.path.join(harness.ROOT, "server", "ws_client.c")
CALL_C = os.path.join(harness.ROOT, "server", "call.c")


def ws_messages(spec):
    return spec["paths"]["/ws"]["get"]["x-ippc-ws-messages"]


def doc_sections(text):
    """'## Title' -> its text."""
    out = {}
    for part in ("\n" + text).split("\n## ")[1:]:
        title, _, body = part.partition("\n")
        out[title.strip()] = body
    return out


def table_rows(section):
    """The cells of a markdown table's body rows."""
    rows = []
    for line in section.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and not re.match(r"^-+$", cells[0]) and cells[0] not in ("op", "type"):
            rows.append(cells)
    return rows


def streams_doc_lists():
    """(client ops, server message types, {event type: topic}) of docs/streams.md."""
    text = open(STREAMS_DOC).read()
    sections = doc_sections(text)
    ops = set(re.findall(r'\{"op"\s*:\s*"([\w.]+)"', text))
    for cells in table_rows(sections.get("The request channel", "")):
        ops |= set(re.findall(r"`([\w.]+)`", cells[0]))
    topics = {}
    for cells in table_rows(sections.get("Events", "")):
        for name in re.findall(r"`([\w.]+)`", cells[0]):
            topics[name] = cells[1].strip("()")
    types = set(re.findall(r'"type"\s*:\s*"([\w.]+)"', text)) | set(topics)
    return ops, types, topics


def server_ws_ops():
    """The ops the controller dispatches: the stream ops of server/ws_client.c
    (its strcmp(op, "...") branches) and the request ops of server/call.c's
    table (the entries with a `.ws` name)."""
    ops = set(re.findall(r'strcmp\(op,\s*"(\w+)"\)\s*==\s*0', open(WS_CLIENT_C).read()))
    harness.check(ops, "no stream ops found in %s" % WS_CLIENT_C)
    table = re.search(r"call_defs\[\]\s*=\s*\{(.*?)\n\};", open(CALL_C).read(), re.S)
    harness.check(table is not None, "no call_defs table in %s" % CALL_C)
    calls = set(re.findall(r'\.ws\s*=\s*"(\w+)"', table.group(1)))
    harness.check(calls, "no request ops found in %s" % CALL_C)
    return ops | calls


def printed_ws_ops():
    """`ippc-controller --print-ws-ops`: {op: (operationId, [fields])}."""
    p = subprocess.run([harness.CONTROLLER, "--print-ws-ops"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    harness.check(p.returncode == 0, "--print-ws-ops exited %s: %s" % (p.returncode, p.stderr))
    out = {}
    for line in p.stdout.decode().splitlines():
        parts = line.split()
        harness.check(len(parts) == 3, "--print-ws-ops line is not 'OP OPERATION FIELDS': %r"
                      % line)
        out[parts[0]] = (parts[1], [] if parts[2] == "-" else parts[2].split(","))
    return out


def check_ws_call_fields(spec):
    """Each request op of x-ippc-ws-messages has exactly the REST twin and the
    fields the controller's decoder (server/call.c) gives it."""
    msgs = ws_messages(spec)["client"]
    printed = printed_ws_ops()
    problems = []
    for op, info in msgs.items():
        if "rest" not in info:
            continue
        if op not in printed:
            problems.append("op %s: not a request op of the controller" % op)
            continue
        rest, fields = printed[op]
        if info["rest"] != rest:
            problems.append("op %s: REST twin %s in the spec, %s in the controller"
                            % (op, info["rest"], rest))
        if sorted(info.get("fields", [])) != sorted(fields):
            problems.append("op %s: fields %s in the spec, %s in the controller"
                            % (op, info.get("fields"), fields))
    for op in set(printed) - set(msgs):
        problems.append("op %s: the controller's, not in x-ippc-ws-messages" % op)
    harness.check(not problems, "\n".join(problems))


def server_event_types():
    """Event type literals ("engine.x", "task.x", "cluster.x") in server/*.c."""
    found = set()
    server = os.path.join(harness.ROOT, "server")
    for name in sorted(os.listdir(server)):
        if name.endswith(".c"):
            found |= set(re.findall(r'"((?:engine|task|cluster)\.[a-z_]+)"',
                                    open(os.path.join(server, name)).read()))
    return found


def check_ws_lists(spec):
    """docs/streams.md and x-ippc-ws-messages list the same client ops, server
    message types and event topics; the controller's sources dispatch exactly
    the listed ops and emit exactly the listed event types; each op's REST
    twin and answer type exist."""
    msgs = ws_messages(spec)
    client, server = set(msgs["client"]), set(msgs["server"])
    doc_ops, doc_types, doc_topics = streams_doc_lists()
    problems = []

    def differ(what, a_name, a, b_name, b):
        if a != b:
            problems.append("%s: only in %s %s; only in %s %s"
                            % (what, a_name, sorted(a - b), b_name, sorted(b - a)))
    differ("client ops", "the spec", client, "docs/streams.md", doc_ops)
    differ("server message types", "the spec", server, "docs/streams.md", doc_types)
    differ("client ops", "the spec", client, "server/ws_client.c", server_ws_ops())
    differ("event types", "the spec", {t for t in server if "." in t},
           "server/*.c", server_event_types())
    for name, topic in doc_topics.items():
        if name in msgs["server"] and msgs["server"][name].get("topic") != topic:
            problems.append("%s: topic %r in the spec, %r in docs/streams.md"
                            % (name, msgs["server"][name].get("topic"), topic))
    ops = operations(spec)
    for op, info in msgs["client"].items():
        if "rest" in info and info["rest"] not in ops:
            problems.append("op %s: REST twin %r is no operationId" % (op, info["rest"]))
        answer = info.get("answer", "")
        if re.match(r"^[\w.]+$", answer) and answer not in server:
            problems.append("op %s: answer type %r is not a listed message" % (op, answer))
    harness.check(not problems, "\n".join(problems))


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


def answer_of(spec, op_id, body, what):
    """body (a finished GET /requests/{id}) satisfies the schema x-ippc-answer-of
    lists for op_id."""
    ref = spec["components"]["schemas"]["RequestAnswer"]["x-ippc-answer-of"][op_id]
    errs = validate(spec, {"$ref": ref}, body)
    harness.check(not errs, "%s: not a %s:\n%s\n%r" % (what, ref, "\n".join(errs[:15]), body))


def conforms_error(spec, r, status, what):
    harness.check(r.status == status, "%s: expected HTTP %d: %r" % (what, status, r))
    errs = validate(spec, {"$ref": "#/components/schemas/Error"}, r.body)
    harness.check(not errs, "%s: not an Error: %s %r" % (what, errs, r))


def ws_live_checks(spec, checks, c):
    """/ws against the running controller: the upgrade and its refusals, then
    every op of x-ippc-ws-messages on one socket."""
    ws_get = spec["paths"]["/ws"]["get"]
    msgs = ws_messages(spec)
    url = c.api.url.replace("http://", "ws://", 1) + "/ws"
    token = c.client_info["token"]
    documented = ws_get["responses"]

    def refusal(what, status, headers, body):
        harness.check(str(status) in documented, "%s: HTTP %s is not documented for GET /ws "
                      "(documented: %s)" % (what, status, sorted(documented)))
        ctype = (headers.get("content-type") or headers.get("Content-Type") or "").split(";")[0]
        harness.check(ctype.strip() == "application/json",
                      "%s: HTTP %s with Content-Type %r, documented application/json"
                      % (what, status, ctype))
        errs = validate(spec, {"$ref": "#/components/schemas/Error"},
                        json.loads(body) if isinstance(body, (bytes, str)) else body)
        harness.check(not errs, "%s: not an Error: %s %r" % (what, errs, body))

    def upgrade():
        harness.check("101" in documented, "GET /ws documents no 101")
        for auth in ("header", "query", "protocol"):
            ws = WebSocket.connect(url, token=token, auth=auth)
            try:
                harness.check(ws.protocol == "ippc.client.v1",
                              "auth=%s: subprotocol %r" % (auth, ws.protocol))
                first = ws.recv_json(timeout=30)
                harness.check(first.get("type") == "snapshot", "first message: %r" % first)
                for e in first.get("engines", []):
                    errs = validate(spec, {"$ref": "#/components/schemas/Engine"}, e)
                    harness.check(not errs, "snapshot engine is not an Engine: %s" % errs)
            finally:
                ws.close()
    checks.run("contract GET /ws 101 (bearer, ?token=, subprotocol token)", upgrade)

    def refusals():
        try:
            WebSocket.connect(url, token="wrong-token").close()
            raise harness.Failure("an upgrade with a wrong token was accepted")
        except HandshakeError as e:
            harness.check(e.status == 401, "wrong token: HTTP %s, expected 401" % e.status)
            refusal("GET /ws with a wrong token", e.status, e.headers or {}, e.body)
        r = harness.http("GET", c.api.url + "/ws", token=token)
        harness.check(r.status == 426, "GET /ws without an upgrade: %r" % r)
        refusal("GET /ws without an upgrade", r.status, r.headers, r.raw)
        r = harness.http("GET", c.api.url + "/ws/below", token=token)
        harness.check(r.status == 404, "GET /ws/below: %r" % r)
        refusal("GET /ws/below", r.status, r.headers, r.raw)
    checks.run("contract GET /ws 401/404/426 refusals", refusals)

    def ops():
        ops_by_id = operations(spec)
        seen_types = set()
        ws = WebSocket.connect(url, token=token)
        try:
            def ask(msg, timeout=60):
                """Sends msg (with an id) and returns the message that carries
                its id; every message's type is recorded."""
                ws.send_json(msg)
                while True:
                    m = ws.recv_json(timeout=timeout)
                    harness.check(isinstance(m, dict) and "type" in m, "a message without type: %r" % m)
                    seen_types.add(m["type"])
                    if isinstance(msg, dict) and "id" in msg:
                        if m.get("id") == msg["id"]:
                            return m
                    elif m["type"] == "error":  # the answer to a frame with no id
                        return m
            ask({"op": "ping", "id": "warm-up"})
            unknown = "contract_no_such_op"
            m = ask({"op": unknown, "id": "u"})
            harness.check(m["type"] == "reply" and m["status"] == 400,
                          "an unknown op gets a reply with status 400: %r" % m)
            refused = m["body"]["error"]["message"]
            harness.check(unknown in refused, "the refusal names the op: %r" % m)
            m = ask([1])
            harness.check(m["type"] == "error", "a frame that is no object gets an error: %r" % m)
            # Arguments that keep the cluster as it is: 999 names no live engine.
            args = {
                "subscribe": {"topics": ["engines", "tasks", "stdout"]},
                "unsubscribe": {"topics": []},
                "resume": {"since": -1},
                "execute": {"targets": "0", "code": "return 6 * 7"},
                "pull": {"targets": "0", "names": ["cp"]},
                "submit": {"task": {"code": "return 1", "tags": ["contract-ws"]}},
                "map": {"function": "tostring", "sequences": [[1, 2]]},
                "abort": {"task": 999999},
                "task": {"task": 999999},
                "request": {"request": 999999},
            }
            problems = []
            for op, info in msgs["client"].items():
                msg = dict(args.get(op, {"targets": "999"} if "targets" in info.get("fields", [])
                                    else {}), op=op, id="contract-" + op)
                m = ask(msg)
                if m["type"] == "reply" and m.get("status") == 400 and \
                        m["body"].get("error", {}).get("message") == refused.replace(unknown, op):
                    problems.append("op %s: the controller does not know it: %r" % (op, m))
                    continue
                answer = info.get("answer")
                if answer in msgs["server"] and m["type"] != answer and op != "resume":
                    problems.append("op %s: answered %r, listed %r: %r" % (op, m["type"], answer, m))
                if m["type"] == "reply" and "rest" in info:
                    _, _, rest = ops_by_id[info["rest"]]
                    schema = json_schema_of(spec, rest, m["status"])
                    if schema is None:
                        problems.append("op %s: status %s not documented for %s"
                                        % (op, m["status"], info["rest"]))
                    else:
                        errs = validate(spec, schema, m["body"])
                        if errs:
                            problems.append("op %s: the reply's body does not match %s %s: %s"
                                            % (op, info["rest"], m["status"], "; ".join(errs[:5])))
            unlisted = seen_types - set(msgs["server"])
            if unlisted:
                problems.append("message types not in x-ippc-ws-messages: %s" % sorted(unlisted))
            harness.check(not problems, "\n".join(problems))
        finally:
            ws.close()
    checks.run("contract /ws ops: every listed op known, replies match the REST schemas", ops)


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
        # Work that outlasts the answer: a quick task on idle engines may be
        # done before the controller answers, and then block=false is 200.
        busy = "local t0 = os.clock() while os.clock() - t0 < 0.3 do end return %d"
        case("POST execute 202 block=false", "POST", V + "execute",
             "/api/v1/views/all/execute?block=false", body={"code": busy % 1}, status=202)
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
            r = api.post("/api/v1/views/all/execute?block=false", {"code": busy % 5})
            b = conforms(spec, r, "POST", V + "execute", "execute?block=false")
            harness.check(r.status == 202, "expected 202: %r" % r)
            r = api.get("/api/v1/requests/%s?wait=60" % b["request"])
            b = conforms(spec, r, "GET", "/api/v1/requests/{id}", "GET /requests/{id}")
            harness.check(r.status == 200, "expected 200 after wait: %r" % r)
            answer_of(spec, "execute", b, "GET /requests/{execute id}")
        checks.run("contract GET /requests/{id} 200", request_roundtrip)
        case("GET /requests/{id} 404", "GET", "/api/v1/requests/{id}", "/api/v1/requests/123456789",
             status=404)

        def request_gone():
            # A blocking pull is released once answered: its id is 410 gone.
            r = api.get("/api/v1/views/all/vars/cx")
            b = conforms(spec, r, "GET", V + "vars/{name}", "GET vars (blocking)")
            r = api.get("/api/v1/requests/%s" % b["request"])
            b = conforms(spec, r, "GET", "/api/v1/requests/{id}", "GET /requests/{released id}")
            harness.check(r.status == 410 and b["error"]["code"] == "gone"
                          and "delivered" in b["error"]["message"], "410 gone: %r" % r)
        checks.run("contract GET /requests/{id} 410", request_gone)

        def request_format():
            r = api.post("/api/v1/views/all/pull?block=false", {"names": ["cx"]})
            b = conforms(spec, r, "POST", V + "pull", "pull?block=false")
            r = api.get("/api/v1/requests/%s?wait=60&format=typed" % b["request"])
            b = conforms(spec, r, "GET", "/api/v1/requests/{id}", "GET /requests/{id}?format=typed")
            answer_of(spec, "pull", b, "GET /requests/{pull id}?format=typed")
            for per_engine in b["results"]:
                errs = validate(spec, {"$ref": "#/components/schemas/TypedArray"}, per_engine[0])
                harness.check(not errs, "format=typed is honoured: %s %r" % (errs, r))
            r = api.get("/api/v1/requests/%s?format=yaml" % b["request"])
            conforms(spec, r, "GET", "/api/v1/requests/{id}", "GET /requests/{id}?format=yaml")
            harness.check(r.status == 400, "an unknown format is 400: %r" % r)
        checks.run("contract GET /requests/{id}?format=typed 200", request_format)

        def unsupported_media():
            for method, template, path, body in (
                    ("POST", V + "execute", "/api/v1/views/all/execute", {"code": "return 1"}),
                    ("PUT", V + "vars/{name}", "/api/v1/views/all/vars/cm", [1]),
                    ("POST", "/api/v1/tasks", "/api/v1/tasks", {"code": "return 1"}),
                    ("POST", "/api/v1/map", "/api/v1/map", {"function": "f", "sequences": [[1]]})):
                r = api.call(method, path, body=body, headers={"Content-Type": "text/plain"})
                conforms(spec, r, method, template, "%s %s as text/plain" % (method, path))
                harness.check(r.status == 415 and r.body["error"]["code"] == "unsupported_media",
                              "415 unsupported_media: %r" % r)
            # The operations documented with 415 are those that take a JSON body.
            for method, path in sorted(spec_routes(spec)):
                op = spec["paths"][path][method.lower()]
                takes_json = "application/json" in op.get("requestBody", {}).get("content", {})
                harness.check(("415" in op["responses"]) == takes_json,
                              "%s %s: 415 documented %s, a JSON body %s"
                              % (method, path, "415" in op["responses"], takes_json))
        checks.run("contract 415 unsupported_media", unsupported_media)

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

        def binary_answers():
            """.npy and multipart/mixed answers: documented where served, with
            the documented headers, and a .npy body is what the spec says."""
            cases = [("/api/v1/views/0/vars/cx", V + "vars/{name}", "application/x-npy"),
                     ("/api/v1/views/all/gather/cx", V + "gather/{name}", "application/x-npy"),
                     ("/api/v1/views/all/vars/cx", V + "vars/{name}", "multipart/mixed")]
            for url, path, media in cases:
                r = api.get(url, headers={"Accept": media})
                harness.check(r.status == 200, "%s as %s: %r" % (url, media, r))
                op = spec["paths"][path]["get"]["responses"]["200"]
                harness.check(media in op["content"], "%s answers of %s must be documented"
                              % (media, path))
                got = r.headers.get("Content-Type", "")
                harness.check(got.split(";")[0] == media, "%s: Content-Type %s" % (url, got))
                if media == "application/x-npy":
                    harness.check(r.raw.startswith(b"\x93NUMPY\x01\x00"), "npy magic: %r"
                                  % r.raw[:16])
                    for h in op.get("headers", {}):
                        harness.check(h in r.headers, "documented header %s missing" % h)
                else:
                    harness.check(re.search(r"boundary=ippc-[0-9a-f]{32}$", got),
                                  "multipart boundary: %s" % got)
                    harness.check(r.raw.count(b"X-Ippc-Engine: ") == 4, "4 parts: %r"
                                  % r.raw[:300])
            # A .npy body is taken where the spec says so, and nowhere else.
            npy = (b"\x93NUMPY\x01\x00\x76\x00" +
                   b"{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }".ljust(117) +
                   b"\n" + struct.pack("<2d", 1.5, 2.5))
            for method, path in sorted(spec_routes(spec)):
                op = spec["paths"][path][method.lower()]
                takes = "application/x-npy" in op.get("requestBody", {}).get("content", {})
                harness.check(takes == (path in (V + "vars/{name}", V + "scatter")
                                        and method in ("PUT", "POST")),
                              "%s %s: x-npy body documented %s" % (method, path, takes))
            r = api.call("PUT", "/api/v1/views/all/vars/cnpy", raw=npy,
                         headers={"Content-Type": "application/x-npy"})
            harness.check(r.status == 200, "npy push: %r" % r)
            r = api.call("PUT", "/api/v1/views/all/vars/cnpy", raw=npy[:-4],
                         headers={"Content-Type": "application/x-npy"})
            harness.check(r.status == 400 and "400" in spec["paths"][V + "vars/{name}"]["put"][
                "responses"], "bad npy: %r" % r)
        checks.run("contract binary answers (npy, multipart)", binary_answers)

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
            b = conforms(spec, r, "GET", "/api/v1/requests/{id}", "GET /requests/{map id}")
            answer_of(spec, "map", b, "GET /requests/{map id}")
            # A failing item: null in its place, an error entry naming it.
            r = api.post("/api/v1/views/all/execute",
                         {"code": "function inv(x) if x == 0 then error('zero') end return 1/x end"})
            harness.check(r.status == 200, "define inv: %r" % r)
            r = api.post("/api/v1/map", {"function": "inv", "sequences": [[1, 2, 0, 4]],
                                         "chunksize": 2})
            b = conforms(spec, r, "POST", "/api/v1/map", "POST /map with a failing item")
            harness.check(b.get("results") == [1.0, 0.5, None, 0.25]
                          and [e.get("index") for e in b.get("errors", [])] == [2],
                          "map with a failing item: %r" % r)
            r = api.get("/api/v1/requests/%s" % b["request"])
            b = conforms(spec, r, "GET", "/api/v1/requests/{id}", "GET /requests/{failed map}")
            answer_of(spec, "map", b, "GET /requests/{failed map}")
        checks.run("contract map", map_flow)

        def metrics():
            r = api.get("/metrics")
            ctype = r.headers.get("Content-Type", "")
            harness.check(r.status == 200 and ctype.startswith("text/plain")
                          and "version=0.0.4" in ctype, "GET /metrics: %r %s" % (r, r.headers))
            fams = check_metrics(spec, r.raw.decode("utf-8"))
            idle, busy = metric(fams, "ippc_engines", state="idle"), metric(
                fams, "ippc_engines", state="busy")
            harness.check(idle + busy == 4 and metric(fams, "ippc_engines", state="dead") == 0,
                          "ippc_engines: 4 live engines, none dead: %s"
                          % fams["ippc_engines"]["samples"])
            harness.check(metric(fams, "ippc_requests_total") >= 10
                          and metric(fams, "ippc_tasks_submitted_total") >= 5
                          and metric(fams, "ippc_http_request_seconds",
                                    "ippc_http_request_seconds_count") >= 20
                          and metric(fams, "ippc_bytes_total", direction="to_engines") > 0,
                          "the counters count the requests made so far: %s" % r.raw[:3000])
            conforms_error(spec, harness.http("GET", api.url + "/metrics"), 401, "/metrics without token")
        checks.run("contract GET /metrics", metrics)

        def wrong_method():
            for method, path in (("DELETE", "/api/v1/info"), ("POST", "/api/v1/engines"),
                                 ("GET", "/api/v1/views/all/execute"), ("DELETE", "/metrics")):
                conforms_error(spec, api.call(method, path), 405, "%s %s" % (method, path))
        checks.run("contract wrong method 405 Error", wrong_method)

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
        ws_live_checks(spec, checks, c)
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
    checks.run("x-ippc-answer-of: each call answered later has its schema", check_answer_of, spec)
    checks.run("/ws: spec, docs/streams.md and server sources list the same messages",
               check_ws_lists, spec)
    checks.run("/ws: each request op's fields and REST twin are the controller's",
               check_ws_call_fields, spec)
    checks.run("redocly lint (recommended rules): no errors", check_redocly_lint)
    checks.run("openapi-typescript types type-check tests/contract/ts/client.ts",
               check_typescript_types)
    try:
        live_checks(spec, checks)
    except SystemExit as e:
        checks.fail("contract live checks", str(e))
    print("contract: %d passed, %d failed" % (checks.passed, checks.failed), flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
