"""test_call_parity.py — one call, two front ends (server/call.c).

Every option case of a call — targets in each form, block, timeout (0,
negative, garbage), format (list, typed, raw, garbage), wait, requests done
and pending, non-blocking maps, unknown fields, bad bodies — goes once
through REST and once through the /ws request channel against the shared
cluster.  The two answers must have the same status and the same body, apart
from ids and times; each case also says the status it must have.  Cases a
front end cannot express (a message without targets, targets as a boolean)
run on /ws alone and check status and error code.

Also here: the Content-Type rule of REST bodies (415 unsupported_media).
"""

import http.client
import json
import os
import time
import urllib.parse

from harness import check, expect
from common import same, show, view
from wsclient import WebSocket

EVENT_TIMEOUT = float(os.environ.get("IPPC_TEST_EVENT_TIMEOUT", "60"))
ABSENT = object()
# Code that keeps an engine busy long enough for a call to be seen pending.
SLOW = "local t = mpi.wtime(); while mpi.wtime() - t < %s do end return 1"


# ---------------------------------------------------------------- the two front ends

class Channel:
    """The /ws request channel of one client, with its event topics off."""

    def __init__(self, c):
        url = c.client_info.get("ws_url") or \
            c.client_info["url"].replace("http://", "ws://", 1).rstrip("/") + "/ws"
        self.ws = WebSocket.connect(url, token=c.client_info["token"], timeout=30)
        self.counter = 0
        first = self.ws.recv_json(30)
        check(first.get("type") == "snapshot", "first message: %s" % show(first))
        self.ws.send_json({"op": "unsubscribe", "id": "quiet",
                           "topics": ["engines", "tasks", "stdout"]})
        self.wait_for("quiet")

    def wait_for(self, rid, timeout=EVENT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            check(left > 0, "no answer to message %r within %.0f s" % (rid, timeout))
            m = self.ws.recv_json(left)
            if isinstance(m, dict) and m.get("id") == rid:
                return m

    def call(self, msg):
        self.counter += 1
        rid = "p%d" % self.counter
        self.ws.send_json(dict(msg, id=rid))
        m = self.wait_for(rid)
        check(m.get("type") == "reply", "a reply to %s: %s" % (show(msg), show(m)))
        return m.get("status"), m.get("body")

    def close(self):
        self.ws.close(timeout=2)


def spec_text(targets):
    if isinstance(targets, list):
        return ",".join(str(t) for t in targets)
    return str(targets)


def query_text(options):
    def one(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)
    return urllib.parse.urlencode({k: one(v) for k, v in options.items()})


def rest_form(op, targets, fields, options):
    """(method, path, JSON body or None) of a call given as /ws would."""
    fields = dict(fields)
    t = spec_text(targets) if targets is not ABSENT else None
    body = fields
    if op in ("execute", "run", "push", "pull", "scatter", "apply", "load", "reset"):
        method, path = "POST", view(t, op)
    elif op == "gather":
        method, path, body = "GET", view(t, "gather/" + fields.pop("name")), None
    elif op == "interrupt":
        method, path, body = "POST", view(t, "interrupt"), None
    elif op == "submit":
        method, path = "POST", "/api/v1/tasks"
        body = fields.get("task", fields.get("tasks"))
    elif op == "map":
        method, path = "POST", "/api/v1/map"
    elif op in ("abort", "task"):
        method, path, body = ("DELETE" if op == "abort" else "GET"), \
            "/api/v1/tasks/%s" % fields["task"], None
    elif op == "request":
        method, path, body = "GET", "/api/v1/requests/%s" % fields["request"], None
    else:
        method, path, body = "GET", "/api/v1/" + op, None
    if options:
        path += "?" + query_text(options)
    return method, path, body


# ---------------------------------------------------------------- comparing

TIMES = ("submitted", "started", "completed", "registered")
VOLATILE = ("uptime", "heartbeat_age", "rss", "requests_total", "requests_open", "store")


def normalized(v, in_task=False):
    """v without what differs between two equal calls: request and task
    ids (lists of them become their length), times, a task's engine, and the
    controller's clocks and counters."""
    if isinstance(v, dict):
        task = in_task or ("state" in v and "id" in v)
        out = {}
        for k, x in v.items():
            if k in ("request", "id") and isinstance(x, int):
                out[k] = "<id>"
            elif k in ("tasks", "ids") and isinstance(x, list) and \
                    all(isinstance(i, int) for i in x):
                out[k] = "<%d ids>" % len(x)
            elif k in TIMES and isinstance(x, (str, type(None))):
                out[k] = "<time>" if x else x
            elif k in VOLATILE:
                out[k] = "<varies>"
            elif k == "engine" and task and "state" in v:
                out[k] = "<engine>"
            else:
                out[k] = normalized(x)
        return out
    if isinstance(v, list):
        return [normalized(x) for x in v]
    return v


def settle(c, status, body):
    """Waits until what a 202 answer left running is done, so the next case
    finds the engines idle."""
    if status != 202 or not isinstance(body, dict):
        return
    if "request" in body:
        expect(c.api.get("/api/v1/requests/%d?wait=60" % body["request"], timeout=90), 200,
               "the pending request %s finishes" % body["request"])
    elif isinstance(body.get("id"), int):
        expect(c.api.get("/api/v1/tasks/%d?wait=60" % body["id"], timeout=90), 200,
               "the pending task %s finishes" % body["id"])


class Case:
    def __init__(self, name, op, targets=ABSENT, fields=None, options=None, status=200,
                 code=None, ws_only=False, post=None):
        self.name, self.op, self.targets = name, op, targets
        self.fields, self.options = fields or {}, options or {}
        self.status, self.code, self.ws_only, self.post = status, code, ws_only, post

    def message(self):
        msg = {"op": self.op}
        if self.targets is not ABSENT:
            msg["targets"] = self.targets
        msg.update(self.fields)
        msg.update(self.options)
        return msg


def run_case(c, ch, case, problems):
    msg = case.message()
    ws_status, ws_body = ch.call(msg)
    what = "%s: %s" % (case.name, show(msg))
    try:
        if case.ws_only:
            rest = None
        else:
            method, path, body = rest_form(case.op, case.targets, case.fields, case.options)
            r = c.api.call(method, path, body=body)
            rest = (r.status, r.body)
            if r.status != ws_status:
                problems.append("%s: status %s over REST (%s %s), %s over /ws\n  rest: %s\n  ws:"
                                "   %s" % (what, r.status, method, path, ws_status, show(r.body),
                                           show(ws_body)))
                return
            if not same(normalized(r.body), normalized(ws_body)):
                problems.append("%s: the bodies differ\n  rest: %s\n  ws:   %s"
                                % (what, show(r.body), show(ws_body)))
                return
        if ws_status != case.status:
            problems.append("%s: status %s, expected %s: %s" % (what, ws_status, case.status,
                                                                show(ws_body)))
        elif case.code and (ws_body or {}).get("error", {}).get("code") != case.code:
            problems.append("%s: error code %r expected: %s" % (what, case.code, show(ws_body)))
        elif case.post:
            err = case.post(ws_body)
            if err:
                problems.append("%s: %s: %s" % (what, err, show(ws_body)))
    finally:
        settle(c, ws_status, ws_body)
        if not case.ws_only and rest:
            settle(c, *rest)


# ---------------------------------------------------------------- the cases

def message_has(text):
    return lambda b: None if text in (b or {}).get("error", {}).get("message", "") \
        else "the message should say %r" % text


def values_are(values):
    return lambda b: None if b.get("results") is not None and \
        [x.get("value") if isinstance(x, dict) else x for x in b["results"]] == values \
        else "values %r expected" % (values,)


def typed(b):
    results = b.get("results") or [b.get("result")]
    for r in results:
        while isinstance(r, list) and len(r) == 1:
            r = r[0]
        if isinstance(r, dict) and "value" in r:
            r = r["value"]
        if not (isinstance(r, dict) and {"dtype", "shape", "data"} <= set(r)):
            return "a typed array expected, got %s" % show(r)
    return None


def cases(c, ids, fixtures):
    quick = {"code": "return mpi.rank()"}
    slow = {"code": SLOW % "0.8"}
    one = ids[1]
    n = len(ids)
    rid_done, rid_typed, tid_array = fixtures["rid_done"], fixtures["rid_typed"], \
        fixtures["tid_array"]
    return [
        # targets, in every form a message may give them
        Case("targets 'all'", "execute", "all", quick, post=values_are(list(range(n)))),
        Case("targets '1' (a spec)", "execute", str(one), quick),
        Case("targets [1] (a list)", "execute", [one], quick,
             post=lambda b: None if b["targets"] == [one] else "targets [%d]" % one),
        Case("targets 1 (an id)", "execute", one, quick,
             post=lambda b: None if b["targets"] == [one] else "targets [%d]" % one),
        Case("targets 0 (an id)", "execute", ids[0], quick),
        Case("targets [2, 0] (a list, in its order)", "execute", [ids[2], ids[0]], quick,
             post=lambda b: None if b["targets"] == [ids[2], ids[0]] else "in list order"),
        Case("targets [1, 1] (duplicates)", "execute", [one, one], quick),
        Case("targets '1::2' (a slice)", "execute", "1::2", quick),
        Case("targets 99 (no such engine)", "execute", 99, quick, status=422, code="no_engines"),
        Case("targets [0, 99]", "execute", [ids[0], 99], quick, status=422, code="no_engines"),
        Case("targets 'x_y' (no spec)", "execute", "x_y", quick, status=400, code="bad_targets"),
        Case("targets missing", "execute", ABSENT, quick, status=400, code="bad_request", ws_only=True,
             post=message_has("targets is required")),
        Case("targets []", "execute", [], quick, status=400, code="bad_targets", ws_only=True),
        Case("targets -1 (an id below 0)", "execute", -1, quick, status=400, code="bad_targets",
             ws_only=True),
        Case("targets true", "execute", True, quick, status=400, code="bad_targets", ws_only=True),
        Case("targets null", "execute", None, quick, status=400, code="bad_targets", ws_only=True),
        Case("targets 1.5", "execute", 1.5, quick, status=400, code="bad_targets", ws_only=True),
        Case("targets ['1'] (strings in a list)", "execute", [str(one)], quick, status=400,
             code="bad_targets", ws_only=True),
        Case("interrupt targets 99", "interrupt", 99, {}, status=422, code="no_engines"),
        Case("interrupt targets missing", "interrupt", ABSENT, {}, status=400, ws_only=True),
        # block
        Case("block true", "execute", "all", quick, {"block": True}),
        Case("block false (pending)", "execute", "all", slow, {"block": False}, 202,
             post=lambda b: None if b.get("status") == "pending" and b.get("finished") == 0
             else "pending, none finished"),
        Case("block 'maybe'", "execute", "all", quick, {"block": "maybe"}, 400,
             post=message_has('"block" must be true or false')),
        Case("block 'true' (a string)", "execute", "all", quick, {"block": "true"}, 400,
             ws_only=True),
        Case("block 1 (a number)", "execute", "all", quick, {"block": 1}, 400, ws_only=True),
        # timeout
        Case("timeout 60", "execute", "all", quick, {"timeout": 60}),
        Case("timeout 0 (do not wait)", "execute", "all", slow, {"timeout": 0}, 202),
        Case("timeout 0.2 (elapses)", "execute", "all", slow, {"timeout": 0.2}, 202),
        Case("timeout -1", "execute", "all", quick, {"timeout": -1}, 400,
             post=message_has('"timeout" must be a number of seconds')),
        Case("timeout 'abc'", "execute", "all", quick, {"timeout": "abc"}, 400),
        Case("timeout over a year", "execute", "all", quick, {"timeout": 1e9}, 400),
        Case("timeout with block false", "execute", "all", slow,
             {"block": False, "timeout": 60}, 202),
        # format
        Case("pull, format absent", "pull", "all", {"names": ["cp_a", "cp_s"]},
             post=lambda b: None if b["results"] == [[[1, 2, 3], "s"]] * n else "lists"),
        Case("pull, format list", "pull", "all", {"names": ["cp_a"]}, {"format": "list"}),
        Case("pull, format typed", "pull", "all", {"names": ["cp_a"]}, {"format": "typed"},
             post=typed),
        Case("pull, format raw", "pull", "all", {"names": ["cp_a"]}, {"format": "raw"}, 400,
             post=message_has("Accept: application/octet-stream")),
        Case("pull, format 'yaml'", "pull", "all", {"names": ["cp_a"]}, {"format": "yaml"},
             400, post=message_has('"format" must be list or typed')),
        Case("gather, format typed", "gather", "all", {"name": "cp_a"}, {"format": "typed"},
             post=typed),
        Case("execute, format typed", "execute", "all", {"code": "return cp_a"},
             {"format": "typed"}, post=typed),
        Case("map, format typed", "map", ABSENT,
             {"function": "cp_arr", "sequences": [[1, 2]]}, {"format": "typed"},
             post=lambda b: None if all(isinstance(x, dict) and "dtype" in x
                                        for x in b.get("results", [None]))
             else "typed results"),
        # requests: done, pending, their own format, waits
        Case("request done (non-blocking answer 200)", "request", ABSENT,
             {"request": rid_done}),
        Case("request done, wait 0", "request", ABSENT, {"request": rid_done}, {"wait": 0}),
        Case("request, its own format (typed)", "request", ABSENT, {"request": rid_typed},
             post=typed),
        Case("request, format list over its typed", "request", ABSENT,
             {"request": rid_typed}, {"format": "list"},
             post=lambda b: None if b["results"] == [[[1, 2, 3]]] * n else "lists"),
        Case("request of a pull, format typed", "request", ABSENT, {"request": rid_done},
             {"format": "typed"}, post=typed),
        Case("request wait -1", "request", ABSENT, {"request": rid_done}, {"wait": -1}, 400),
        Case("request wait 'soon'", "request", ABSENT, {"request": rid_done},
             {"wait": "soon"}, 400),
        Case("request unknown", "request", ABSENT, {"request": 999999999}, status=404),
        Case("request of a blocking pull, released once answered", "request", ABSENT,
             {"request": fixtures["rid_released"]}, status=410,
             post=message_has("delivered and released")),
        Case("request 0", "request", ABSENT, {"request": 0}, status=404),
        Case("request 'x' (not an id)", "request", ABSENT, {"request": "x"}, status=400,
             ws_only=True),
        Case("request without id", "request", ABSENT, {}, status=400, ws_only=True),
        # tasks
        Case("task, wait 60", "task", ABSENT, {"task": tid_array}, {"wait": 60}),
        Case("task, format typed", "task", ABSENT, {"task": tid_array}, {"format": "typed"},
             post=lambda b: None if isinstance(b.get("result"), dict)
             and "dtype" in b["result"] else "a typed result"),
        Case("task unknown", "task", ABSENT, {"task": 999999999}, status=404),
        Case("abort a finished task", "abort", ABSENT, {"task": tid_array}, status=409),
        Case("abort, force 'maybe'", "abort", ABSENT, {"task": tid_array},
             {"force": "maybe"}, 400),
        Case("submit one task", "submit", ABSENT, {"task": {"code": "return 1"}}, status=202),
        Case("submit, block true", "submit", ABSENT, {"task": {"code": "return 2"}},
             {"block": True, "timeout": 60},
             post=lambda b: None if b.get("result") == 2 else "result 2"),
        Case("submit a batch, block true", "submit", ABSENT,
             {"tasks": [{"code": "return 1"}]}, {"block": True}, 400),
        Case("submit, a TaskSpec with an unknown field", "submit", ABSENT,
             {"task": {"code": "return 1", "bogus": 1}}, status=400),
        Case("submit without task or tasks", "submit", ABSENT, {}, status=400, ws_only=True),
        Case("submit, task given a list", "submit", ABSENT, {"task": [{"code": "return 1"}]},
             status=400, ws_only=True),
        # maps
        Case("map, blocking", "map", ABSENT, {"function": "cp_sq", "sequences": [[1, 2, 3]]},
             post=lambda b: None if b.get("results") == [1, 4, 9] else "results [1, 4, 9]"),
        Case("map, non-blocking", "map", ABSENT,
             {"function": "cp_slowsq", "sequences": [[1, 2, 3]]}, {"block": False}, 202,
             post=lambda b: None if isinstance(b.get("tasks"), list) and len(b["tasks"]) == 3
             and b.get("status") == "pending" else "pending, with its 3 tasks"),
        Case("map, timeout 0", "map", ABSENT,
             {"function": "cp_slowsq", "sequences": [[1]]}, {"timeout": 0}, 202),
        Case("map, unknown field", "map", ABSENT,
             {"function": "cp_sq", "sequences": [[1]], "bogus": True}, status=400,
             post=message_has('map takes no field "bogus"')),
        Case("map, sequences not lists", "map", ABSENT,
             {"function": "cp_sq", "sequences": [1, 2]}, status=400),
        # unknown fields
        Case("execute, unknown field", "execute", "all", {"code": "return 1", "bogus": 1},
             status=400, post=message_has('execute takes no field "bogus"')),
        Case("pull, unknown field", "pull", "all", {"names": ["cp_a"], "nmes": 1}, status=400),
        Case("reset, unknown field", "reset", "all", {"x": 1}, status=400),
        Case("execute, a field of another op", "execute", "all",
             {"code": "return 1", "names": ["x"]}, status=400),
        # bad bodies
        Case("execute, code a number", "execute", "all", {"code": 5}, status=400),
        Case("execute, no code", "execute", "all", {}, status=400),
        Case("run, no source", "run", "all", {"filename": "x.lua"}, status=400),
        Case("push, namespace a list", "push", "all", {"namespace": []}, status=400),
        Case("push, a bad name", "push", "all", {"namespace": {"1x": 1}}, status=422),
        Case("pull, names a string", "pull", "all", {"names": "cp_a"}, status=400),
        Case("scatter, no data", "scatter", "all", {"name": "cp_v"}, status=400),
        Case("apply, args an object", "apply", "all", {"function": "cp_sq", "args": {}},
             status=400),
        Case("load, library empty", "load", "all", {"library": ""}, status=422),
        Case("gather, a bad name", "gather", "all", {"name": "1x"}, status=422),
        # the rest of the ops
        Case("engines", "engines"),
        Case("queue", "queue"),
        Case("info", "info"),
        Case("an unknown op", "frobnicate", ABSENT, {}, status=400, ws_only=True,
             post=message_has("unknown op 'frobnicate'")),
    ]


def make_fixtures(c, ids):
    api = c.api
    expect(api.call("PUT", view("all", "vars/cp_a"), body=[1, 2, 3]), 200, "cp_a")
    expect(api.call("PUT", view("all", "vars/cp_s"), body="s"), 200, "cp_s")
    expect(api.post(view("all", "execute"), {
        "code": "function cp_sq(x) return x * x end "
                "function cp_arr(x) return nd.array({x, x}) end "
                "function cp_slowsq(x) local t = mpi.wtime(); "
                "while mpi.wtime() - t < 0.3 do end return x * x end"}), 200, "functions")
    # A blocking pull is released once its answer is given (its id is then
    # 410 gone): the pull read again later is a non-blocking one.
    released = expect(api.post(view("all", "pull"), {"names": ["cp_a"]}), 200, "a pull")
    done = expect(api.post(view("all", "pull") + "?block=false", {"names": ["cp_a"]}),
                  (200, 202), "a non-blocking pull")
    expect(api.get("/api/v1/requests/%d?wait=60" % done["request"]), 200, "the pull")
    tp = expect(api.post(view("all", "pull") + "?format=typed&block=false", {"names": ["cp_a"]}),
                (200, 202), "a typed pull")
    expect(api.get("/api/v1/requests/%d?wait=60" % tp["request"]), 200, "the typed pull")
    t = expect(api.post("/api/v1/tasks?block=true&timeout=60", {"code": "return cp_a"}), 200,
               "a task returning an array")
    return {"rid_done": done["request"], "rid_typed": tp["request"], "tid_array": t["id"],
            "rid_released": released["request"]}


def test_call_parity(c):
    ids = c.ids()
    check(len(ids) >= 3, "the shared cluster has 4 engines: %s" % ids)
    fixtures = make_fixtures(c, ids)
    ch = Channel(c)
    problems = []
    try:
        all_cases = cases(c, ids, fixtures)
        for case in all_cases:
            run_case(c, ch, case, problems)
    finally:
        ch.close()
    check(not problems, "%d of %d cases differ or fail:\n%s"
          % (len(problems), len(all_cases), "\n".join(problems)))
    return ["%d cases, %d on /ws alone" % (len(all_cases),
                                           sum(1 for k in all_cases if k.ws_only))]


# ---------------------------------------------------------------- Content-Type

def post_typed(c, method, path, body, content_type):
    """A request with exactly this Content-Type (None: no such header)."""
    u = urllib.parse.urlsplit(c.api.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        headers = {"Authorization": "Bearer " + c.api.token}
        if content_type is not None:
            headers["Content-Type"] = content_type
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return r.status, parsed
    finally:
        conn.close()


def test_content_types(c):
    """JSON bodies come with no Content-Type, application/json (with
    parameters), any +json type, or application/x-www-form-urlencoded (what
    `curl -d` sends); raw bytes as application/octet-stream where a route
    takes them; anything else is 415 unsupported_media, refused before the
    body is read."""
    code = {"code": "return 1"}
    ex = view("all", "execute")
    accepted = [None, "application/json", "application/json; charset=utf-8",
                "Application/JSON", "application/vnd.ippc+json",
                "application/x-www-form-urlencoded"]
    for ctype in accepted:
        status, body = post_typed(c, "POST", ex, code, ctype)
        check(status == 200, "execute with Content-Type %r: %s %s" % (ctype, status, show(body)))
    refused = [("POST", ex, code, "text/plain"),
               ("POST", ex, code, "application/xml"),
               ("POST", ex, code, "multipart/form-data; boundary=x"),
               ("POST", ex, code, "application/octet-stream"),
               ("POST", "/api/v1/tasks", code, "text/plain"),
               ("POST", "/api/v1/map", {"function": "f", "sequences": [[1]]}, "text/csv"),
               ("POST", view("all", "push"), {"namespace": {"x": 1}}, "application/x-npy"),
               ("POST", view("all", "pull"), {"names": ["x"]}, "text/html"),
               ("POST", view("all", "run"), {"source": ""}, "image/png"),
               ("POST", view("all", "apply"), {"function": "f"}, "text/plain"),
               ("POST", view("all", "load"), {"library": "x"}, "text/plain"),
               ("POST", view("all", "reset"), {}, "text/plain"),
               ("POST", view("all", "scatter"), {"name": "x", "data": [1]}, "text/plain"),
               ("PUT", view("all", "vars/cp_ct"), [1], "text/plain"),
               ("PUT", view("all", "vars/cp_ct"), b"\0" * 8, "application/x-numpy")]
    for method, path, body, ctype in refused:
        status, answer = post_typed(c, method, path, body, ctype)
        check(status == 415 and (answer or {}).get("error", {}).get("code") ==
              "unsupported_media", "%s %s with Content-Type %r: %s %s"
              % (method, path, ctype, status, show(answer)))
    status, answer = post_typed(c, "PUT", view("all", "vars/cp_ct") + "?dtype=float64",
                                b"\0" * 8, "application/octet-stream")
    check(status == 200, "raw bytes where raw is taken: %s %s" % (status, show(answer)))
    # No body, no verdict on its type.
    status, answer = post_typed(c, "POST", view("all", "reset"), b"", "text/plain")
    check(status == 200, "reset without a body, whatever its Content-Type: %s %s"
          % (status, show(answer)))
    expect(c.api.get("/api/v1/info"), 200, "still serving")


TESTS = [
    ("call_parity_rest_ws", test_call_parity, "shared"),
    ("call_content_types_415", test_content_types, "shared"),
]
