"""test_faults.py — faults and hostile input that docs/RELIABILITY.md lists:
deeply nested and malformed JSON (REST and /ws), array shapes that do not
match their bytes, slow (slowloris) clients, ping floods, 1,000 stream
clients at once, and SIGSTOP/SIGCONT of an engine and of the controller.

Every test asserts on answers (JSON error code and HTTP status, engine
states, task states, values), then that the service still runs a real
execute.  Nothing asserts on speed.  Tests that stop processes bring their
own cluster and must stop it cleanly (a stop problem is a failure).
SIGKILL of engines and of the controller is covered elsewhere
(test_failure.py, test_tasks.py, test_streams.py; see docs/RELIABILITY.md)."""

import base64
import json
import os
import resource
import signal
import select
import socket
import struct
import sys
import threading
import time

import harness
from harness import Cluster, Failure, check, expect, expect_error
from common import same, view, values_of, pull_var, expect_task_results
from test_streams import Stream, ws_url, read_until_closed, tag
from wsclient import OP_PING, OP_TEXT, Closed, WebSocket, WebSocketError, encode_frame

OCTET = {"Content-Type": "application/octet-stream"}
DEEP = 100000  # nesting of the "100,000 [" bodies


def nested_list(depth, leaf="1"):
    return "[" * depth + leaf + "]" * depth


def still_serving(c, what):
    """A real execute on every live engine answers, and /info answers."""
    ids = c.ids()
    check(same(values_of(c, "return 40 + 2", ids, what="execute after %s" % what),
               [42] * len(ids)), "execute on every engine after %s" % what)
    expect(c.api.get("/api/v1/info"), 200, "/info after %s" % what)


def stop_clean(c):
    """Stops c (call it from a finally block); any problem (a process that
    needed SIGKILL, a sanitizer report, a bad exit status) fails the test.
    When the test is already failing, its failure is the one reported, with
    the stop problems appended (a cluster stopped mid-test, e.g. with an
    engine just resumed, may well need SIGKILL)."""
    pending = sys.exc_info()[1]
    problems = c.stop()
    if pending is None:
        check(not problems, "the cluster did not stop cleanly: " + "; ".join(problems))
    elif problems and isinstance(pending, Failure):
        pending.args = ("%s\n(then stopping the cluster: %s)" % (pending, "; ".join(problems)),)


def undefined_everywhere(c, name, what):
    body = expect(pull_var(c, name), 200, "GET vars/%s after %s" % (name, what))
    n = len(c.ids())
    check(body.get("status") == "error" and body.get("results") == [None] * n,
          "%s must not have defined %r on any engine: %s" % (what, name, json.dumps(body)[:400]))


# ---------------------------------------------------------------- JSON, REST

MALFORMED_VARIANTS = [
    (b'{"code":"return 1","code":"return 2"}', "duplicate key"),
    (b'{"code":"return 1"} x', "trailing garbage"),
    (b'\xef\xbb\xbf{"code":"return 1"}', "a UTF-8 byte-order mark"),
    (b'{"code":"\xff\xfe return 1"}', "bytes that are not UTF-8"),
    (b'{"code":"return \\ud800"}', "a lone UTF-16 surrogate"),
    (b'{"code":"return 1\\u0000"}', "an escaped NUL in a string"),
    (b'{"code":"return 1", "n": 1e400}', "a number that overflows a double"),
    (b'{"code":"return 1", "n": 123456789012345678901234567890}', "an integer over 64 bits"),
    (b'\x00\x00\x00\x00', "NUL bytes"),
    (b'{"code":"' + b"a" * 100, "a string cut short"),
    (b'null', "JSON null"),
    (b'"return 1"', "a JSON string"),
]


def test_deep_json_rest(c):
    """100,000 nested '[' (open, closed, and '{"a":' objects) on every body
    route: 400 bad_request naming the depth; values nested deeper than 64
    levels: 422 invalid_value; 60 levels are fine; a deep or cyclic table
    made by user code is a per-engine TypeError; and odd JSON (duplicate
    keys, bad UTF-8, surrogates, NUL, overflow) is 400 bad_request."""
    api = c.api
    bodies = [(b"[" * DEEP, "100,000 '[' never closed"),
              (nested_list(DEEP).encode(), "100,000 '[' closed"),
              (b'{"a":' * DEEP + b"1" + b"}" * DEEP, "100,000 nested objects")]
    routes = [("POST", view("all", "execute")), ("POST", view("all", "push")),
              ("PUT", view("all", "vars/fz_deep")), ("POST", view("all", "scatter")),
              ("POST", "/api/v1/tasks"), ("POST", "/api/v1/map")]
    for raw, what in bodies:
        for method, path in routes:
            err = expect_error(api.call(method, path, raw=raw), 400, "bad_request",
                               "%s %s with %s" % (method, path, what))
            check("depth" in err["message"],
                  "%s %s with %s: the message should name the nesting depth: %r"
                  % (method, path, what, err))
    expect(api.get("/api/v1/info"), 200, "/info right after the deep bodies")

    # Parsed, but nested deeper than a value may be (VALUE_MAX_DEPTH 64).  The
    # leaf is a string: a numeric nest ends in an ndarray of up to 8
    # dimensions, which is one level, so [[...[1]...]] may go 7 levels deeper.
    for depth in (65, 100, 2000):
        deep = nested_list(depth, '"s"')
        for method, path, raw in [
                ("POST", view("all", "push"), '{"namespace":{"fz_deep":%s}}' % deep),
                ("PUT", view("all", "vars/fz_deep"), deep),
                ("POST", view("all", "scatter"), '{"name":"fz_deep","data":[%s]}' % deep),
                ("POST", "/api/v1/tasks", '{"function":"f","args":[%s]}' % deep)]:
            expect_error(api.call(method, path, raw=raw), 422, "invalid_value",
                         "%s %s with a value nested %d deep" % (method, path, depth))
    undefined_everywhere(c, "fz_deep", "refused deep values")

    # Under the limit a nested value round-trips.
    value = json.loads(nested_list(60, '[1,{"a":"b"}]'))
    ids = c.ids()
    expect_task_results(api.post(view("all", "push"), {"namespace": {"fz_ok60": value}}), ids,
                        "push a value nested 60 deep")
    body = expect(pull_var(c, "fz_ok60"), 200, "pull the value nested 60 deep")
    check(body.get("status") == "ok" and all(same(v, value) for v in body.get("results", [])),
          "a value nested 60 deep comes back unchanged: %s" % json.dumps(body)[:400])

    # Deep or cyclic tables made by user code: an error result, not a crash.
    for code, what in [("local t = {} for i = 1, 100000 do t = {t} end return t",
                        "a table nested 100,000 deep"),
                       ("local t = {} t.self = t return t", "a table that contains itself")]:
        r = api.post(view("all", "execute"), {"code": code})
        results = expect_task_results(r, ids, "execute returning %s" % what, status="error")
        check(all(x.get("status") == "error" and x.get("ename") == "TypeError"
                  for x in results), "returning %s: every engine answers TypeError: %r"
              % (what, r))

    for raw, what in MALFORMED_VARIANTS:
        expect_error(api.call("POST", view("all", "execute"), raw=raw), 400, "bad_request",
                     "execute with %s" % what)
    still_serving(c, "deep and malformed JSON bodies")


# ---------------------------------------------------------------- JSON, /ws

def test_deep_json_ws(c):
    """The same over /ws: 100,000 nested '[' in a text message is an error
    message {type:error, code:bad_request}; the socket stays usable; a value
    nested 100 deep in a push is a 422 reply; odd JSON is bad_request; then
    a real execute over the same socket works."""
    notes = []
    s = Stream(c)
    try:
        def error_for(payload, what):
            s.ws.send_frame(OP_TEXT, payload)
            m = s.wait(lambda m: m.get("type") in ("error", "reply"), what, 30)
            err = m.get("error") or {}
            check(m.get("type") == "error" and err.get("code") == "bad_request"
                  and isinstance(err.get("message"), str),
                  "%s: expected {type:error, error:{code:bad_request}}: %s"
                  % (what, json.dumps(m)[:300]))
            s.ping("after " + what)
            return err

        for payload, what in [(b"[" * DEEP, "100,000 '[' never closed"),
                              (nested_list(DEEP).encode(), "100,000 '[' closed"),
                              (b'{"a":' * DEEP + b"1" + b"}" * DEEP, "100,000 nested objects")]:
            err = error_for(payload, what)
            check("depth" in err["message"], "%s: the message should name the depth: %r"
                  % (what, err))
        for payload, what in [(b'{"op":"ping","op":"ping"}', "duplicate key"),
                              (b'{"op":"ping"} x', "trailing garbage"),
                              (b'{"op":"execute","id":1,"targets":"all","code":"\\ud800"}',
                               "a lone surrogate"),
                              (b'{"op":"ping","x":"\\u0000"}', "an escaped NUL"),
                              (b"null", "JSON null")]:
            error_for(payload, what)
        for depth in (65, 100, 2000):
            # Written by hand: Python's json module stops at ~1,000 levels.
            rid = "deep%d" % depth
            s.ws.send_text('{"op":"push","id":"%s","targets":"all","namespace":{"fz_wsdeep":%s}}'
                           % (rid, nested_list(depth, '"s"')))
            r = s.wait(lambda m: m.get("type") == "reply" and m.get("id") == rid,
                       "reply to a push nested %d deep" % depth, 30)
            err = (r.get("body") or {}).get("error") or {}
            check(r.get("status") == 422 and err.get("code") == "invalid_value",
                  "push over /ws nested %d deep: reply 422 invalid_value like REST: %s"
                  % (depth, json.dumps(r)[:300]))
        ids = c.ids()
        r = s.request({"op": "execute", "id": "after", "targets": "all", "code": "return 7"},
                      "execute after the bad messages")
        results = (r.get("body") or {}).get("results") or []
        check(r.get("status") == 200 and [x.get("value") for x in results] == [7] * len(ids),
              "a real execute over the same socket: %s" % json.dumps(r)[:400])
    finally:
        s.close()
    undefined_everywhere(c, "fz_wsdeep", "refused deep values over /ws")

    # Text that is not UTF-8: RFC 6455 allows closing with 1007; an error
    # message is fine too.  Either way the next client is served.
    s = Stream(c)
    try:
        s.ws.send_frame(OP_TEXT, b'{"op":"\xff\xfe"}')
        got, closed = read_until_closed(s.ws, 5)
        errors = [m for m in got if m.get("type") == "error"]
        if errors:
            check(errors[0].get("error", {}).get("code") == "bad_request",
                  "invalid UTF-8 text: error code bad_request: %s" % errors[0])
        else:
            check(isinstance(closed, Closed) and closed.code == 1007,
                  "invalid UTF-8 text: an error message or a 1007 close, got %s then %r"
                  % (got[:3], closed))
            notes.append("invalid UTF-8 text frame closed with 1007")
    finally:
        s.ws.abort()
    s = Stream(c)
    try:
        s.ping("a new stream after the bad messages")
    finally:
        s.close()
    still_serving(c, "deep and malformed /ws messages")
    return notes


# ---------------------------------------------------------------- shapes

def raw_put(c, name, query, nbytes, headers=None):
    return c.api.call("PUT", view("all", "vars/" + name) + ("?" + query if query else ""),
                      raw=b"\0" * nbytes, headers=dict(OCTET, **(headers or {})))


def test_bad_shape_raw(c):
    """Raw application/octet-stream bodies whose dtype/shape do not describe
    their bytes: 422 invalid_value each, nothing defined, and a good raw PUT
    still works."""
    cases = [
        ("dtype=float64&shape=3", 16, None, "16 bytes for float64 [3]"),
        ("dtype=float64&shape=2,2", 40, None, "40 bytes for float64 [2,2]"),
        ("dtype=float64&shape=-1", 8, None, "a negative dimension"),
        ("dtype=float64&shape=2,-2", 32, None, "a negative second dimension"),
        ("dtype=float64&shape=4294967296,4294967296", 0, None, "dimensions whose product "
         "overflows 64 bits"),
        ("dtype=uint8&shape=99999999999999999999999", 8, None, "a dimension over 64 bits"),
        ("dtype=float64&shape=1,1,1,1,1,1,1,1,1", 8, None, "9 dimensions"),
        ("dtype=float64&shape=2,,2", 32, None, "an empty dimension"),
        ("dtype=float64&shape=two", 16, None, "a dimension that is not a number"),
        ("dtype=float64&shape=1e3", 8000, None, "a dimension in exponent form"),
        ("dtype=complex128", 16, None, "an unknown dtype"),
        ("dtype=float64", 7, None, "7 bytes, float64, no shape"),
        ("dtype=int32", 6, None, "6 bytes, int32, no shape"),
        ("", 12, None, "12 bytes with the default float64"),
        ("", 24, {"X-Ippc-Dtype": "float64", "X-Ippc-Shape": "4"}, "24 bytes for the header "
         "shape [4]"),
        ("", 8, {"X-Ippc-Dtype": "int64", "X-Ippc-Shape": "-1"}, "a negative header dimension"),
    ]
    for query, n, headers, what in cases:
        r = raw_put(c, "fz_raw", query, n, headers)
        expect_error(r, 422, "invalid_value", "raw PUT ?%s with %s" % (query, what))
    r = c.api.call("POST", view("all", "scatter") + "?name=fz_raw&dtype=float64&shape=3",
                   raw=b"\0" * 16, headers=OCTET)
    expect_error(r, 422, "invalid_value", "raw scatter of 16 bytes as float64 [3]")
    undefined_everywhere(c, "fz_raw", "refused raw bodies")
    ids = c.ids()
    r = raw_put(c, "fz_raw_ok", "dtype=int32&shape=0,3", 0)
    expect_task_results(r, ids, "a raw PUT of an empty int32 [0,3]")
    r = c.api.call("PUT", view("all", "vars/fz_raw_ok") + "?dtype=int32&shape=2",
                   raw=struct.pack("<2i", 5, 6), headers=OCTET)
    expect_task_results(r, ids, "a good raw PUT after the bad ones")
    check(same(values_of(c, "return fz_raw_ok:sum()", ids), [11] * len(ids)),
          "the good raw array arrived")
    still_serving(c, "bad raw shapes")


def typed(dtype, shape, data):
    return {"dtype": dtype, "shape": shape, "data": data}


def b64(n):
    return base64.b64encode(b"\0" * n).decode()


def test_bad_shape_typed(c):
    """Typed base64 arrays whose data, shape or dtype is wrong: 422
    invalid_value through PUT vars, push and apply args; nothing defined."""
    cases = [
        (typed("float64", [3], b64(16)), "16 bytes for float64 [3]"),
        (typed("float64", [2], "AAAA"), "3 bytes for float64 [2]"),
        (typed("int32", [4], b64(20)), "20 bytes for int32 [4]"),
        (typed("float64", [-1], ""), "a negative dimension"),
        (typed("float64", [1 << 62, 1 << 62], ""), "dimensions whose product overflows"),
        (typed("float64", [0, 1 << 62], ""), "a zero dimension beside a huge one"),
        (typed("float64", [0, (1 << 63) - 1], ""), "a zero dimension beside 2^63-1"),
        (typed("float64", [2], "!" * 12), "data that is not base64"),
        (typed("float64", [2], "A" * 22 + "="), "base64 with a wrong length"),
        (typed("float64", "2", ""), "a shape that is a string"),
        (typed("float64", [], ""), "an empty shape"),
        (typed("float64", [1] * 9, b64(8)), "9 dimensions"),
        (typed("float64", [1.5], b64(8)), "a fractional dimension"),
        (typed("bogus", [1], b64(8)), "an unknown dtype"),
    ]
    for value, what in cases:
        expect_error(c.api.put(view("all", "vars/fz_typed"), value), 422, "invalid_value",
                     "typed PUT with %s" % what)
        expect_error(c.api.post(view("all", "push"), {"namespace": {"fz_typed": value}}), 422,
                     "invalid_value", "typed push with %s" % what)
    expect_error(c.api.post(view("all", "apply"),
                            {"function": "tostring", "args": [cases[0][0]]}),
                 422, "invalid_value", "apply with a typed argument of the wrong length")
    # A dimension that does not even fit a JSON integer is a parse error.
    raw = b'{"dtype":"uint8","shape":[18446744073709551616],"data":""}'
    expect_error(c.api.call("PUT", view("all", "vars/fz_typed"), raw=raw), 400, "bad_request",
                 "typed PUT with a dimension over 64 bits")
    undefined_everywhere(c, "fz_typed", "refused typed arrays")
    still_serving(c, "bad typed arrays")


def test_bad_shape_raw_overflow(c):
    """Raw bodies with a zero dimension beside a huge one.  The typed path
    answers 422 invalid_value for the same shapes (faults_bad_shape_typed);
    the raw path must too.  Collects every deviation, then fails once."""
    wrong = []
    for query, what in [
            ("dtype=float64&shape=0,18446744073709551615",
             "float64 [0, 2^64-1] with 0 bytes"),
            ("dtype=float64&shape=0,4611686018427387904",
             "float64 [0, 2^62] with 0 bytes (the typed path refuses it: shape too large)"),
            ("dtype=uint8&shape=0,9223372036854775807", "uint8 [0, 2^63-1] with 0 bytes")]:
        r = raw_put(c, "fz_rawov", query, 0)
        err = r.body.get("error") if isinstance(r.body, dict) else None
        if not (r.status == 422 and isinstance(err, dict) and err.get("code") == "invalid_value"):
            if isinstance(err, dict):
                got = "error %s" % json.dumps(err)
            else:
                results = r.body.get("results", []) if isinstance(r.body, dict) else []
                got = "status %r; engines answered %s" % (
                    r.body.get("status") if isinstance(r.body, dict) else r.raw[:200],
                    sorted({"%s: %s" % (x.get("ename"), x.get("evalue")) for x in results}))
            wrong.append("raw PUT ?%s (%s): expected HTTP 422 invalid_value, got HTTP %s %s"
                         % (query, what, r.status, got))
    still_serving(c, "raw shapes with a zero and a huge dimension")
    check(not wrong, "\n".join(wrong))


# ---------------------------------------------------------------- slowloris

def _port(c):
    return int(c.client_info["url"].rsplit(":", 1)[1])


def read_http_answer(sock, deadline):
    """Reads one HTTP answer: (status, body bytes), or (None, what ended it)."""
    data = b""
    while True:
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            length = None
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length is not None and len(body) >= length:
                try:
                    return int(head.split(b" ")[1]), body[:length]
                except (IndexError, ValueError):
                    return None, "bad status line %r" % head[:100]
        left = deadline - time.monotonic()
        if left <= 0:
            return None, "no answer in time (got %r)" % data[:200]
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError as e:
            return None, "connection ended: %s (got %r)" % (e, data[:200])
        if not chunk:
            return None, "connection closed (got %r)" % data[:200]
        data += chunk


def trickle(port, data, slow_bytes, deadline, result):
    """Sends the first slow_bytes of data one byte a second, then the rest,
    then reads the answer into result: {"status", "body"} or {"ended"}."""
    sock = None
    t0 = time.monotonic()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        answered = False
        for i in range(min(slow_bytes, len(data))):
            if time.monotonic() > deadline:
                break
            # The server may answer (408) before the head is complete: stop
            # sending and read it rather than write into a closed socket.
            if select.select([sock], [], [], 0)[0]:
                answered = True
                break
            sock.sendall(data[i:i + 1])
            time.sleep(1.0)
        if not answered:
            sock.sendall(data[slow_bytes:])
        result["sent_for"] = time.monotonic() - t0
        status, body = read_http_answer(sock, deadline + 30)
        if status is None:
            result["ended"] = body
        else:
            result["status"], result["body"] = status, body
    except OSError as e:
        result["ended"] = "%s after %.0f s" % (e, time.monotonic() - t0)
    finally:
        result["after"] = time.monotonic() - t0
        if sock is not None:
            sock.close()


def test_slowloris(c):
    """Clients that send one byte a second: 8 REST heads trickled for 30 s
    (then completed), one JSON body trickled, one /ws upgrade and one /engine
    upgrade trickled.  Meanwhile REST and an open stream keep answering; the
    REST heads trickled past the acceptor's head deadline (5 s) get a JSON
    408 and are closed, the trickled body (its head came at once) is answered
    correctly, and the trickled upgrades are never upgraded."""
    port = _port(c)
    token = c.client_info["token"]
    head = ("GET /api/v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
            "\r\n" % token).encode()
    body = b'{"code":"return 7"}'
    post = ("POST /api/v1/views/all/execute HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
            "Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (token, len(body))).encode()
    key = base64.b64encode(os.urandom(16)).decode()
    ws_head = ("GET /ws?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: ippc.client.v1\r\n\r\n" % (token, key)).encode()
    engine_head = ("GET /engine HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Protocol: ippc.engine.v1\r\n\r\n" % key).encode()
    deadline = time.monotonic() + 75
    jobs = {}
    for i in range(8):
        jobs["rest head %d" % i] = (head, 30)
    jobs["body"] = (post + body, None)
    jobs["/ws head"] = (ws_head, len(ws_head))
    jobs["/engine head"] = (engine_head, len(engine_head))
    results = {name: {} for name in jobs}
    threads = []

    def body_trickle(result):
        # The head at once, then the body a byte a second.
        sock = None
        t0 = time.monotonic()
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(post)
            for i in range(len(body)):
                sock.sendall(body[i:i + 1])
                time.sleep(1.0)
            status, text = read_http_answer(sock, deadline + 30)
            if status is None:
                result["ended"] = text
            else:
                result["status"], result["body"] = status, text
        except OSError as e:
            result["ended"] = "%s after %.0f s" % (e, time.monotonic() - t0)
        finally:
            if sock is not None:
                sock.close()

    for name, (data, slow) in jobs.items():
        if name == "body":
            t = threading.Thread(target=body_trickle, args=(results[name],), daemon=True)
        else:
            t = threading.Thread(target=trickle, args=(port, data, slow, deadline, results[name]),
                                 daemon=True)
        threads.append(t)
        t.start()

    s = Stream(c)
    probes = 0
    try:
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline + 40:
            ids = c.ids()
            check(same(values_of(c, "return 3", ids, what="execute while slow clients trickle"),
                       [3] * len(ids)), "execute while slow clients trickle")
            s.ping("stream while slow clients trickle")
            probes += 1
            time.sleep(2.0)
    finally:
        s.close()
        for t in threads:
            t.join(60)
    check(not any(t.is_alive() for t in threads), "a slow client thread did not end: %s"
          % results)
    check(probes >= 5, "only %d probes ran while the slow clients trickled" % probes)

    for i in range(8):
        r = results["rest head %d" % i]
        check(r.get("status") == 408,
              "a REST head trickled at 1 byte/s for 30 s must be cut with a 408 (got %s)" % r)
        err = json.loads(r["body"].decode())
        check(err.get("error", {}).get("code") == "request_timeout",
              "the 408 is a JSON request_timeout error: %s" % r)
        check(r["after"] < 25, "the 408 came at the head deadline, not after the head: %s" % r)
    r = results["body"]
    check(r.get("status") == 200, "a body trickled at 1 byte/s must be answered (got %s)" % r)
    answer = json.loads(r["body"].decode())
    check([x.get("value") for x in answer.get("results", [])] == [7] * len(c.ids()),
          "the trickled execute ran with its whole body: %s" % r)
    for name in ("/ws head", "/engine head"):
        r = results[name]
        check(r.get("status") == 408 and r.get("after", 99) < 25,
              "a %s trickled at 1 byte/s must be cut with a 408 at the head deadline (got %s)"
              % (name, r))
    still_serving(c, "slow clients")
    return ["/ws head cut after %.0f s, /engine head after %.0f s"
            % (results["/ws head"].get("after", -1), results["/engine head"].get("after", -1))]


# ---------------------------------------------------------------- ping floods

def test_ws_ping_flood(c):
    """10,000 WebSocket pings in one burst, then 10,000 {"op":"ping"}
    messages: the flooder is answered (RFC 6455 lets a server answer only
    the latest of several pings) or cut; a bystander stream keeps receiving
    events and answering; REST keeps serving."""
    notes = []
    bystander = Stream(c)
    flood = Stream(c)
    try:
        sent = set(b"p%d" % i for i in range(10000))
        frames = b"".join(encode_frame(OP_PING, b"p%d" % i) for i in range(10000))
        cut = None
        try:
            flood.ws.sock.sendall(frames)
            flood.ws.send_json({"op": "ping", "id": "after-control-flood"})
            flood.wait(lambda m: m.get("type") == "pong" and m.get("id") == "after-control-flood",
                       "the JSON ping after 10,000 control pings", 60)
        except (Failure, OSError, WebSocketError) as e:
            cut = e
        if cut is None:
            pongs = flood.ws.pongs
            check(pongs and all(p in sent for p in pongs),
                  "control pings: at least one pong, each carrying a sent payload: %d pongs, "
                  "first %r" % (len(pongs), pongs[:3]))
            notes.append("10,000 pings in a burst got %d pongs" % len(pongs))
            # Now 10,000 request-channel pings; read every reply.
            burst = b"".join(encode_frame(OP_TEXT, json.dumps({"op": "ping", "id": i}).encode())
                             for i in range(10000))
            got = []

            def sender():
                try:
                    flood.ws.sock.sendall(burst)
                except OSError:
                    pass

            t = threading.Thread(target=sender, daemon=True)
            t.start()
            try:
                while len(got) < 10000:
                    m = flood.next(60, "pong %d of 10,000" % len(got))
                    if m.get("type") == "pong":
                        got.append(m.get("id"))
            except Failure as e:
                cut = e
            t.join(60)
            if cut is None:
                check(got == list(range(10000)),
                      "10,000 JSON pings: 10,000 pongs with their ids in order (first wrong at "
                      "%s)" % next((i for i, x in enumerate(got) if x != i), None))
        if cut is not None:
            notes.append("the flooding client was cut: %s" % str(cut)[:200])

        name = tag("flood")
        r = c.api.post("/api/v1/tasks", {"code": "return 'bystander'", "tags": [name]})
        tid = expect(r, 202, "task after the flood")["id"]
        done = bystander.wait(lambda m: m.get("type") == "task.completed"
                              and m.get("task") == tid, "the bystander sees the task complete")
        check(done.get("result") == "bystander", "bystander's event: %s" % done)
        bystander.ping("the bystander after the flood")
    finally:
        flood.ws.abort()
        bystander.close()
    still_serving(c, "ping floods")
    return notes


# ---------------------------------------------------------------- 1,000 clients

def controller_fds(c):
    return len(os.listdir("/proc/%d/fd" % c.controller.pid))


def test_ws_1000_clients(_unused=None):
    """1,000 /ws clients connected at once: each gets the snapshot with the
    live engines, one task's completion reaches all 1,000, REST keeps
    serving, and once they leave the controller's descriptors come back to
    where they were."""
    want = 2600  # 1,000 sockets here, plus the harness; the controller inherits it
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        check(new >= 2200, "RLIMIT_NOFILE hard limit %d is too low for 1,000 clients" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    c = Cluster(n=4, profile="faults-1000ws")
    clients = [None] * 1000
    errors = []
    try:
        c.start()
        time.sleep(1.0)
        before = controller_fds(c)
        url, token = ws_url(c), c.client_info["token"]

        def connect(lo, hi):
            for i in range(lo, hi):
                try:
                    ws = WebSocket.connect(url, token=token, timeout=60)
                    clients[i] = ws
                    snap = ws.recv_json(60)
                    live = [e for e in snap.get("engines", []) if e.get("state") != "dead"]
                    if snap.get("type") != "snapshot" or len(live) != 4:
                        errors.append((i, "first message: %s" % json.dumps(snap)[:200]))
                except (OSError, WebSocketError, TimeoutError, ValueError) as e:
                    errors.append((i, repr(e)))

        threads = [threading.Thread(target=connect, args=(k * 250, (k + 1) * 250), daemon=True)
                   for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        check(not any(t.is_alive() for t in threads), "connecting 1,000 clients did not finish")
        check(not errors, "%d of 1,000 clients did not get a snapshot, e.g. %s"
              % (len(errors), errors[:3]))
        check(same(values_of(c, "return 1", what="execute with 1,000 streams open"), [1] * 4),
              "execute with 1,000 streams open")

        name = tag("fanout")
        tid = expect(c.api.post("/api/v1/tasks", {"code": "return 'to all'", "tags": [name]}),
                     202, "the task every client must see")["id"]
        deadline = time.monotonic() + 120
        missed = []
        for i, ws in enumerate(clients):
            try:
                while True:
                    m = ws.recv_json(max(0.1, deadline - time.monotonic()))
                    if m.get("type") == "task.completed" and m.get("task") == tid:
                        if m.get("result") != "to all":
                            missed.append((i, "wrong event %s" % json.dumps(m)[:200]))
                        break
            except (OSError, WebSocketError, TimeoutError, ValueError) as e:
                missed.append((i, repr(e)))
        check(not missed, "%d of 1,000 clients did not get task.completed of task %d, e.g. %s"
              % (len(missed), tid, missed[:3]))

        for i, ws in enumerate(clients):
            if i % 2:
                ws.abort()          # half vanish without a close frame
            else:
                try:
                    ws.send_frame(0x8, struct.pack("!H", 1000))
                except OSError:
                    pass
                ws.abort()
        clients = []
        deadline = time.monotonic() + 30
        while controller_fds(c) > before + 4 and time.monotonic() < deadline:
            time.sleep(0.5)
        after = controller_fds(c)
        check(after <= before + 4, "the controller holds %d descriptors after 1,000 clients left "
              "(%d before they came)" % (after, before))
        check(same(values_of(c, "return 2", what="execute after 1,000 streams"), [2] * 4),
              "execute after the 1,000 clients left")
    finally:
        for ws in clients:
            if ws is not None:
                ws.abort()
        stop_clean(c)
    return []


# ---------------------------------------------------------------- SIGSTOP

def engine_state(c, engine_id):
    r = c.api.get("/api/v1/engines/%d" % engine_id, timeout=30)
    body = expect(r, 200, "GET engine %d" % engine_id)
    return body


def wait_for(pred, what, limit):
    """Polls pred() (which returns a true value when done) for limit s."""
    deadline = time.time() + limit
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.25)
    raise Failure("%s: not within %d s" % (what, limit))


def get_task(c, tid, wait=0):
    r = c.api.get("/api/v1/tasks/%d%s" % (tid, "?wait=%d" % wait if wait else ""),
                  timeout=wait + 30)
    return expect(r, (200, 202), "GET task %d" % tid)  # 202: not finished yet


def test_engine_sigstop_sigcont(_unused=None):
    """SIGSTOP one engine: after the heartbeat timeout (3 s here) it is dead
    (engine.dead, reason no heartbeat); its direct task and a balanced task
    are lost; a balanced task with retries goes back to pending and runs on
    another engine; one whose only target is the stopped engine fails
    (ImpossibleDependency); views skip it.  SIGCONT: it reconnects and
    registers again under the same id and pid with its namespace, the
    finished tasks keep their outcome, MPI across the job still works, and
    the cluster still stops cleanly."""
    c = Cluster(n=4, profile="faults-sigstop",
                controller_args=["--heartbeat-timeout", "3", "--hwm", "2"])
    notes = []
    s = None
    stopped = None
    try:
        c.start()
        api = c.api
        ids = c.ids()
        check(ids == [0, 1, 2, 3], "4 engines 0..3: %s" % ids)
        expect_task_results(api.post(view("all", "execute"), {"code": "keep = 100 + mpi.rank()"}),
                            ids, "set keep")
        before = {e["id"]: e for e in api.engines()}
        victim, helper = 1, 2
        pid = before[victim]["pid"]
        s = Stream(c)

        slow = "local t = mpi.wtime() while mpi.wtime() - t < %d do end return 'late'"
        # The helper is full (hwm 2) for a while, so the retried task goes to the victim.
        fill = [expect(api.post("/api/v1/tasks", {"code": slow % 8, "targets": [helper]}), 202,
                       "filler on engine %d" % helper)["id"] for _ in range(2)]
        r = api.post(view(str(victim), "execute") + "?block=false", {"code": slow % 5})
        rid = expect(r, 202, "slow direct execute on the victim")["request"]
        lost = expect(api.post("/api/v1/tasks", {"code": "return 'a'", "targets": [victim],
                                                 "retries": 0}),
                      202, "balanced task on the victim")["id"]
        retried = expect(api.post("/api/v1/tasks", {"code": "return keep",
                                                    "targets": [victim, helper],
                                                    "retries": 1}),
                         202, "balanced task with retries")["id"]
        wait_for(lambda: all(get_task(c, t)["state"] == "running" for t in fill + [lost, retried]),
                 "the fillers and both balanced tasks running", 20)
        t = get_task(c, retried)
        check(t["engine"] == victim, "with engine %d full, the retried task goes to the victim: %s"
              % (helper, t))
        only = None

        os.kill(pid, signal.SIGSTOP)
        stopped = pid
        wait_for(lambda: engine_state(c, victim)["state"] == "dead",
                 "engine %d SIGSTOPped is marked dead" % victim, 30)
        dead = s.wait(lambda m: m.get("type") == "engine.dead" and m.get("engine") == victim,
                      "engine.dead for the stopped engine", 30)
        check("heartbeat" in str(dead.get("reason")), "engine.dead names the missed heartbeats: "
              "%s" % dead)

        r = api.get("/api/v1/requests/%d?wait=30" % rid, timeout=60)
        body = expect(r, 200, "the direct request of the stopped engine")
        res = (body.get("results") or [{}])[0]
        check(body.get("status") == "error" and res.get("status") == "lost"
              and res.get("ename") == "EngineLost", "its direct task is lost: %r" % r)
        t = get_task(c, lost)
        check(t["state"] == "lost" and t.get("error", {}).get("ename") == "EngineLost",
              "the balanced task without retries is lost: %s" % t)
        t = get_task(c, retried)
        check(t["state"] in ("pending", "running", "completed") and t.get("engine") != victim,
              "the task with retries is back in the queue, not on the dead engine: %s" % t)
        live = [0, 2, 3]
        r = api.post(view("all", "execute"), {"code": "return keep"})
        results = expect_task_results(r, live, "all while engine 1 is stopped")
        check([x.get("value") for x in results] == [100, 102, 103], "values: %r" % r)
        info = expect(api.get("/api/v1/info"), 200, "/info while stopped")
        check(info.get("engines") == 3, "/info counts 3 live engines: %s" % info)
        only = expect(api.post("/api/v1/tasks", {"code": "return 1", "targets": [victim],
                                                 "retries": 3}),
                      (202, 422), "a task whose only target is the stopped engine")
        if isinstance(only, dict) and "id" in only:
            t = get_task(c, only["id"], wait=30)
            check(t["state"] == "failed"
                  and t.get("error", {}).get("ename") == "ImpossibleDependency",
                  "a task whose only target is dead fails (not kept for its return): %s" % t)
        t = get_task(c, retried, wait=60)
        check(t["state"] == "completed" and same(t.get("result"), 102) and t["engine"] == helper,
              "the retried task completes on engine %d (102): %s" % (helper, t))
        time.sleep(2)  # still stopped: nothing changes
        check(engine_state(c, victim)["state"] == "dead", "while stopped the engine stays dead")

        os.kill(pid, signal.SIGCONT)
        stopped = None
        back = wait_for(lambda: (lambda e: e if e["state"] != "dead" else None)(
            engine_state(c, victim)), "engine %d live again after SIGCONT" % victim, 30)
        check(back["pid"] == pid and back["rank"] == 1 and back["job"] == before[victim]["job"],
              "the same process comes back as engine %d, rank 1 of the same job: %s"
              % (victim, back))
        reg = s.wait(lambda m: m.get("type") == "engine.registered"
                     and (m.get("engine") or {}).get("id") == victim,
                     "engine.registered for the revived engine", 30)
        check(reg["engine"].get("pid") == pid, "engine.registered of the same pid: %s" % reg)
        time.sleep(2)  # let any late close of the old connection arrive
        engines = api.engines()
        check(sorted(e["id"] for e in engines) == ids
              and all(e["state"] != "dead" for e in engines),
              "2 s after it registered again: exactly engines 0..3, all live, no duplicate: %s"
              % [(e["id"], e["state"], e["registered"]) for e in engines])
        for tid, state in ((lost, "lost"), (retried, "completed")):
            t = get_task(c, tid)
            check(t["state"] == state, "task %d keeps its outcome %s after SIGCONT: %s"
                  % (tid, state, t))
        body = expect(api.get("/api/v1/requests/%d" % rid), 200, "the direct request again")
        check((body.get("results") or [{}])[0].get("status") == "lost",
              "the lost direct task stays lost after SIGCONT: %s" % body)
        r = api.post(view("all", "execute"), {"code": "return keep"})
        check([x.get("value") for x in expect_task_results(r, ids, "all after SIGCONT")]
              == [100, 101, 102, 103], "namespaces after SIGCONT: %r" % r)
        r = api.post(view("all", "execute"), {"code": "return mpi.allreduce(1, 'sum')"})
        check([x.get("value") for x in expect_task_results(r, ids, "allreduce after SIGCONT")]
              == [4] * 4, "MPI across the job after SIGCONT: %r" % r)
        t = expect(api.post("/api/v1/tasks?block=true", {"code": "return mpi.rank()",
                                                         "targets": [victim]}),
                   200, "a balanced task on the revived engine")
        check(t["state"] == "completed" and same(t.get("result"), 1),
              "the revived engine runs balanced tasks: %s" % t)
    finally:
        if stopped is not None:
            harness.signal_pid(stopped, signal.SIGCONT)
        if s is not None:
            s.ws.abort()
        stop_clean(c)
    return notes


def test_controller_sigstop_sigcont(_unused=None):
    """SIGSTOP the controller for more than twice the heartbeat timeout:
    the engines keep running; a REST request sent meanwhile is answered
    after SIGCONT; the engines are still registered (or registered again)
    under the same ids and pids; a task running at the stop completes (or,
    if its engine was re-registered, is lost — never both, never stuck)."""
    c = Cluster(n=4, profile="faults-ctlstop", controller_args=["--heartbeat-timeout", "3"])
    notes = []
    stopped = False
    try:
        c.start()
        api = c.api
        ids = c.ids()
        expect_task_results(api.post(view("all", "execute"), {"code": "keep = 100 + mpi.rank()"}),
                            ids, "set keep")
        before = {e["id"]: e for e in api.engines()}
        tid = expect(api.post("/api/v1/tasks", {"code": "local t = mpi.wtime() while "
                                                "mpi.wtime() - t < 3 do end return 'slow'"}),
                     202, "slow task")["id"]
        wait_for(lambda: get_task(c, tid)["state"] == "running", "slow task running", 20)

        pid = c.controller.pid
        os.kill(pid, signal.SIGSTOP)
        stopped = True
        answer = {}

        def during():
            try:
                answer["r"] = api.get("/api/v1/info", timeout=120)
            except OSError as e:
                answer["r"] = e

        t = threading.Thread(target=during, daemon=True)
        t.start()
        time.sleep(8)
        states = {e: harness.proc_state(p) for e, p in c.engine_pids.items()}
        check(all(st in ("R", "S", "D") for st in states.values()),
              "engines keep running while the controller is stopped: %s" % states)
        check(harness.proc_state(pid) == "T", "the controller is stopped")
        check("r" not in answer, "a stopped controller answered: %r" % answer)
        os.kill(pid, signal.SIGCONT)
        stopped = False
        t.join(60)
        r = answer.get("r")
        check(hasattr(r, "status") and r.status == 200 and isinstance(r.body, dict),
              "the request sent while the controller was stopped is answered 200: %r" % r)

        engines = wait_for(lambda: (lambda es: es if len([e for e in es if e["state"] != "dead"])
                                    == 4 else None)(api.engines()),
                           "4 live engines after SIGCONT", 30)
        check(sorted(e["id"] for e in engines) == ids,
              "the same ids, no duplicates: %s" % engines)
        for e in engines:
            check(e["pid"] == before[e["id"]]["pid"],
                  "engine %d is the same process: %s vs %s" % (e["id"], e, before[e["id"]]))
        again = [e["id"] for e in engines if e["registered"] != before[e["id"]]["registered"]]
        t = get_task(c, tid, wait=60)
        engine = t.get("engine")
        if engine in again:
            check(t["state"] == "lost", "its engine registered again, so the task running at the "
                  "stop must be lost: %s" % t)
        else:
            check(t["state"] == "completed" and t.get("result") == "slow",
                  "its engine stayed registered, so the task running at the stop completes: %s"
                  % t)
        notes.append("after SIGCONT: engines registered again: %s; slow task %s"
                     % (again or "none", t["state"]))
        r = api.post(view("all", "execute"), {"code": "return keep"})
        check([x.get("value") for x in expect_task_results(r, ids, "all after SIGCONT")]
              == [100, 101, 102, 103], "namespaces intact after SIGCONT: %r" % r)
        r = api.post(view("all", "execute"), {"code": "return mpi.allreduce(1, 'sum')"})
        check([x.get("value") for x in expect_task_results(r, ids, "allreduce after SIGCONT")]
              == [4] * 4, "MPI after SIGCONT: %r" % r)
    finally:
        if stopped:
            harness.signal_pid(c.controller.pid, signal.SIGCONT)
        stop_clean(c)
    return notes


TESTS = [
    ("faults_deep_json_rest", test_deep_json_rest, "shared"),
    ("faults_deep_json_ws", test_deep_json_ws, "shared"),
    ("faults_bad_shape_raw", test_bad_shape_raw, "shared"),
    ("faults_bad_shape_typed", test_bad_shape_typed, "shared"),
    ("faults_bad_shape_raw_overflow", test_bad_shape_raw_overflow, "shared"),
    ("faults_slowloris", test_slowloris, "shared"),
    ("faults_ws_ping_flood", test_ws_ping_flood, "shared"),
    ("faults_ws_1000_clients", test_ws_1000_clients, "own"),
    ("faults_engine_sigstop_sigcont", test_engine_sigstop_sigcont, "own"),
    ("faults_controller_sigstop_sigcont", test_controller_sigstop_sigcont, "own"),
]
