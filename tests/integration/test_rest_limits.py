"""test_rest_limits.py — the REST front door under hostile or careless clients
(issue 8): requests are judged on their head before any body byte is held,
bodies are charged to a memory budget, big JSON is decoded off the HTTP
thread and within a cap, and every error is JSON, on every request of a
kept-alive connection.

Hostile clients are raw sockets (HTTP written by hand), so the tests see
exactly what the controller sends and when.  "shared" tests leave the shared
cluster as they found it (variables they set are deleted).
"""

import fcntl
import json
import os
import select
import socket
import struct
import termios
import threading
import time

from harness import Cluster, check, expect, expect_error, http
from common import view

MIB = 1 << 20


# ------------------------------------------------------------- raw HTTP

class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names
        self.raw = body
        try:
            self.body = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError):
            self.body = None
        self.request = ""

    def __repr__(self):
        return "%s -> HTTP %s %s %s" % (self.request, self.status, self.headers,
                                        self.raw[:600].decode("utf-8", "replace"))


def address(c):
    host, port = c.api.url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def connect(c, timeout=60):
    s = socket.create_connection(address(c), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def head(method, path, token=None, headers=(), length=None):
    """A request head as bytes."""
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    if token is not None:
        lines.append("Authorization: Bearer " + token)
    if length is not None:
        lines.append("Content-Length: %d" % length)
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send(sock, data):
    """sendall that tolerates the controller closing first (returns False)."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def read_reply(sock, what, timeout=60):
    """One HTTP response from sock (Content-Length framed)."""
    sock.settimeout(timeout)
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            check(chunk, "%s: the connection closed before an answer (got %r)" % (what, buf))
            buf += chunk
        top, rest = buf.split(b"\r\n\r\n", 1)
        lines = top.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        n = int(headers.get("content-length", "0"))
        while len(rest) < n:
            chunk = sock.recv(65536)
            check(chunk, "%s: the connection closed inside the answer" % what)
            rest += chunk
    except socket.timeout:
        check(False, "%s: no answer within %d s (got %r)" % (what, timeout, buf[:300]))
    r = Reply(status, headers, rest[:n])
    r.request = what
    return r


def exchange(c, data, what, timeout=60):
    """Sends data on a new connection and reads one answer."""
    with connect(c, timeout) as s:
        send(s, data)
        return read_reply(s, what, timeout)


def controller_rss(c):
    with open("/proc/%d/status" % c.controller.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_consumed(sock, server_port, timeout=60):
    """Waits until every byte written on sock has been read by the controller
    process: nothing unacknowledged on our side, nothing queued on its side
    (/proc/net/tcp rx_queue of its end of the connection)."""
    local_port = sock.getsockname()[1]
    deadline = time.time() + timeout
    while time.time() < deadline:
        unsent = struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        queued = None
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                local, remote = parts[1], parts[2]
                if (int(local.split(":")[1], 16) == server_port
                        and int(remote.split(":")[1], 16) == local_port):
                    queued = int(parts[4].split(":")[1], 16)
        if unsent == 0 and queued == 0:
            return
        time.sleep(0.005)
    check(False, "the controller did not read the request within %d s" % timeout)


# ------------------------------------------- judged on the head (1, 5)

def test_refused_before_body(c):
    """A refused request with a body is answered from its head alone: no byte
    of the (never sent) body is waited for."""
    token = c.api.token
    cases = [
        ("Content-Length 2e9", head("PUT", view("all", "vars/huge"), token, length=2 * 10**9),
         413, "payload_too_large"),
        ("no token", head("POST", view("all", "execute"), None, length=60 * MIB), 401,
         "unauthorized"),
        ("wrong token", head("POST", view("all", "execute"), "nope", length=60 * MIB), 401,
         "unauthorized"),
        ("unknown path", head("POST", "/api/v1/nope", token, length=60 * MIB), 404, "not_found"),
        ("wrong method", head("POST", "/api/v1/info", token, length=60 * MIB), 405,
         "method_not_allowed"),
        ("unknown coding", head("POST", view("all", "execute"), token,
                                ["Transfer-Encoding: gzip"]), 400, "bad_request"),
    ]
    for what, data, status, code in cases:
        r = exchange(c, data, what, timeout=30)
        expect_error(r, status, code, what)
        check(r.headers.get("connection", "").lower() == "close",
              "%s: a refused body closes the connection: %r" % (what, r))
    r = exchange(c, head("POST", "/api/v1/info", token, length=10), "405", timeout=30)
    check(r.headers.get("allow") == "GET", "405 names the allowed methods: %r" % r)
    r = exchange(c, head("GET", "/api/v1/info", "wrong"), "401 without a body")
    check(r.headers.get("www-authenticate") == "Bearer", "401 asks for Bearer: %r" % r)
    expect(c.api.get("/api/v1/info"), 200, "still serving")


def test_unauthenticated_uploads_hold_nothing(c):
    """Eight clients send 60 MiB each without a token: each gets its 401, and
    the controller's resident memory does not grow by the uploads."""
    before = controller_rss(c)
    peak = [before]
    replies = [None] * 8
    done = threading.Event()

    def upload(i):
        try:
            with connect(c, 60) as s:
                send(s, head("PUT", view("all", "vars/up%d" % i), None, length=60 * MIB,
                             headers=["Content-Type: application/octet-stream"]))
                block = b"\0" * MIB
                for _ in range(60):
                    if not send(s, block):
                        break
                replies[i] = read_reply(s, "upload %d" % i)
        except Exception as e:  # noqa: BLE001 — reported below
            replies[i] = e

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], controller_rss(c))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    sampler.join()
    for i, r in enumerate(replies):
        check(isinstance(r, Reply), "upload %d: %r" % (i, r))
        expect_error(r, 401, "unauthorized", "upload %d" % i)
    growth = peak[0] - before
    check(growth < 100 * MIB, "8 unauthenticated 60 MiB uploads raised the controller's RSS by "
          "%.0f MiB (from %.0f MiB)" % (growth / MIB, before / MIB))
    expect(c.api.get("/api/v1/info"), 200, "still serving")
    return ["RSS %.0f MiB, peak during uploads +%.1f MiB" % (before / MIB, growth / MIB)]


def test_nul_in_path(c):
    """%00 would cut the path (vars/nulx%00y naming nulx): refused."""
    token = c.api.token
    r = exchange(c, head("PUT", view("all", "vars/nulx%00y"), token, length=1) + b"1", "PUT %00")
    err = expect_error(r, 400, "bad_request", "PUT vars/nulx%00y")
    check("NUL" in err["message"], "the message names the NUL byte: %r" % r)
    r = c.api.get(view("all", "vars/nulx"))
    body = expect(r, 200, "GET vars/nulx")
    check(body.get("status") == "error", "nothing was written to nulx: %r" % r)
    r = exchange(c, head("GET", view("all", "vars/nulx") + "?format=list%00x", token),
                 "GET ?format=list%00x")
    expect_error(r, 400, "bad_request", "a NUL in the query")


def test_bearer_scheme(c):
    """RFC 7235: the scheme is case-insensitive, spaces between scheme and
    token may be many."""
    url, token = c.api.url, c.api.token
    for value in ("bearer " + token, "BEARER " + token, "Bearer    " + token,
                  "bEaReR  " + token + "  "):
        expect(http("GET", url + "/api/v1/info", headers={"Authorization": value}), 200,
               "Authorization: %r" % value.replace(token, "TOKEN"))
    for value in ("Bearer", "Bearer" + token, "Basic " + token, "Bearer " + token + "x",
                  "Bearer x " + token):
        expect_error(http("GET", url + "/api/v1/info", headers={"Authorization": value}), 401,
                     "unauthorized", "Authorization: %r" % value.replace(token, "TOKEN"))


# ---------------------------------------- JSON on kept-alive connections (4)

def test_keepalive_errors_are_json(c):
    """The acceptor only sees a connection's first request; later ones that
    are too long or too big still get JSON errors, and the connection stays
    usable."""
    token = c.api.token
    with connect(c) as s:
        def ask(data, what):
            send(s, data)
            return read_reply(s, what)

        expect(ask(head("GET", "/api/v1/info", token), "first request"), 200, "first request")
        long_path = "/api/v1/views/all/vars/" + "x" * 9000
        r = ask(head("GET", long_path, token), "9000-byte path")
        expect_error(r, 414, "uri_too_long", "9000-byte path on a kept-alive connection")
        r = ask(head("GET", "/api/v1/info?pad=" + "y" * 9000, token), "9000-byte query")
        expect_error(r, 414, "uri_too_long", "9000-byte query")
        pad = ["X-Pad-%d: %s" % (i, "z" * 1000) for i in range(20)]
        r = ask(head("GET", "/api/v1/info", token, pad), "20 KiB of headers")
        expect_error(r, 431, "headers_too_large", "20 KiB of headers on a kept-alive connection")
        r = ask(head("DELETE", "/api/v1/info", token), "DELETE /info")
        expect_error(r, 405, "method_not_allowed", "DELETE /info")
        check(r.headers.get("allow") == "GET", "405 carries Allow: %r" % r)
        r = ask(head("GET", "/no/such/page"), "unknown page")
        expect_error(r, 404, "not_found", "unknown non-API page")
        expect(ask(head("GET", "/api/v1/info", token), "last request"), 200,
               "the connection still serves")


# ------------------------------------------------------ bodies (2)

def test_chunked_bodies(c):
    """Chunked bodies are accepted and grow as needed."""
    token = c.api.token
    value = json.dumps(list(range(5000))).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(value[i:i + 1000]), value[i:i + 1000])
                      for i in range(0, len(value), 1000)) + b"0\r\n\r\n"
    data = head("PUT", view("all", "vars/chunky"), token,
                ["Transfer-Encoding: chunked", "Content-Type: application/json"]) + chunks
    r = exchange(c, data, "chunked PUT")
    body = expect(r, 200, "chunked PUT vars/chunky")
    check(body.get("status") == "ok", "chunked PUT: %r" % r)
    r = c.api.post(view("all", "execute"), {"code": "local n = #chunky; chunky = nil; return n"})
    body = expect(r, 200, "#chunky")
    check([x.get("value") for x in body["results"]] == [5000] * 4, "#chunky: %r" % r)


def test_body_budget(_):
    """--max-held-mb bounds what all requests together hold: a body that
    would pass it is refused with 503 overloaded at its head, others are
    served, and the bytes come back when a request ends.  A chunked body over
    --max-body-mb is 413."""
    c = Cluster(jobs=[], profile="budget",
                controller_args=["--max-held-mb", "4", "--max-body-mb", "3"])
    try:
        c.start()
        token = c.api.token
        holder = connect(c)
        send(holder, head("PUT", view("all", "vars/a"), token, length=3 * MIB,
                          headers=["Content-Type: application/octet-stream"]) + b"\0" * MIB)
        wait_consumed(holder, address(c)[1])
        r = exchange(c, head("PUT", view("all", "vars/b"), token, length=3 * MIB,
                             headers=["Content-Type: application/octet-stream"]),
                     "second 3 MiB body", timeout=30)
        err = expect_error(r, 503, "overloaded", "a body past --max-held-mb")
        check("MiB" in err["message"], "the message says how much is held: %r" % r)
        expect(c.api.get("/api/v1/info"), 200, "others are served")
        r = c.api.call("PUT", view("all", "vars/small"), raw=b"\0" * 8,
                       headers={"Content-Type": "application/octet-stream"})
        expect_error(r, 422, "no_engines", "a small body still fits")
        holder.close()
        deadline = time.time() + 30
        while True:
            r = c.api.call("PUT", view("all", "vars/b"), raw=b"\0" * (3 * MIB),
                           headers={"Content-Type": "application/octet-stream"})
            if r.status != 503 or time.time() > deadline:
                break
            time.sleep(0.1)
        expect_error(r, 422, "no_engines", "the held bytes came back when the holder left")
        metrics = c.api.get("/metrics").raw.decode()
        check("ippc_held_bytes 0\n" in metrics, "nothing held at the end:\n%s" % metrics)
        check("ippc_held_refused_total 1\n" in metrics, "one refusal counted:\n%s" % metrics)
        data = head("POST", view("all", "execute"), token, ["Transfer-Encoding: chunked"])
        data += b"".join(b"100000\r\n" + b" " * MIB + b"\r\n" for _ in range(4)) + b"0\r\n\r\n"
        r = exchange(c, data, "4 MiB chunked")
        expect_error(r, 413, "payload_too_large", "a chunked body over --max-body-mb")
    finally:
        problems = c.stop()
    check(not problems, "; ".join(problems))


# ----------------------------------------------- big JSON (3)

def test_big_json_decoded_off_thread(c):
    """While a 12 MB JSON push is decoded, another request is answered: the
    push's own answer (202, ?block=false: right after its decode) comes
    second.  The push then completes."""
    token = c.api.token
    n = 6 * 1000 * 1000
    text = ("[" + ",".join("%d" % (i % 10) for i in range(n)) + "]").encode()
    push = connect(c, 120)
    info = None
    try:
        send(push, head("PUT", view("all", "vars/bigjson") + "?block=false", token,
                        ["Content-Type: application/json"], length=len(text)) + text)
        wait_consumed(push, address(c)[1])
        info = connect(c)
        send(info, head("GET", "/api/v1/info", token))
        readable, _, _ = select.select([push, info], [], [], 120)
        check(readable, "no answer within 120 s")
        check(info in readable and push not in readable,
              "GET /info must be answered while the push is decoded, before the push's "
              "answer (first readable: %s)" % ("push" if push in readable else "info"))
        expect(read_reply(info, "GET /info"), 200, "GET /info during the decode")
        r = read_reply(push, "PUT vars/bigjson", 120)
        body = expect(r, 202, "PUT vars/bigjson?block=false")
    finally:
        push.close()
        if info is not None:
            info.close()
    r = c.api.get("/api/v1/requests/%d?wait=120" % body["request"])
    done = expect(r, 200, "the push finished")
    check(done.get("status") == "ok", "push of %d numbers: %r" % (n, r))
    r = c.api.post(view("all", "execute"),
                   {"code": "local k = #bigjson; bigjson = nil; collectgarbage(); return k"})
    got = expect(r, 200, "#bigjson")
    check([x.get("value") for x in got["results"]] == [n] * 4, "#bigjson: %r" % r)


def test_decode_cap(_):
    """A JSON body whose decoded tree would pass the decode cap (a quarter of
    --max-held-mb) is refused with 413 and advice, on a worker and inline;
    the controller's memory comes back."""
    c = Cluster(jobs=[], profile="decodecap", controller_args=["--max-held-mb", "64"])
    try:
        c.start()
        big = ("[" + ",".join("7" for _ in range(1000 * 1000)) + "]").encode()
        r = c.api.call("PUT", view("all", "vars/x"), raw=big)
        err = expect_error(r, 413, "payload_too_large", "2 MB of JSON numbers, 16 MiB cap")
        check("application/octet-stream" in err["message"], "the 413 gives advice: %r" % r)
        small = ("[" + ",".join("7" for _ in range(100 * 1000)) + "]").encode()
        r = c.api.call("PUT", view("all", "vars/x"), raw=small)
        expect_error(r, 422, "no_engines", "200 KB of JSON numbers fit (decoded inline)")
        r = c.api.call("PUT", view("all", "vars/x"), raw=big[:-1])
        expect_error(r, (400, 413), ("bad_request", "payload_too_large"), "2 MB, malformed")
        metrics = c.api.get("/metrics").raw.decode()
        check("ippc_held_bytes 0\n" in metrics, "nothing held at the end:\n%s" % metrics)
    finally:
        problems = c.stop()
    check(not problems, "; ".join(problems))


TESTS = [
    ("rest_refused_before_body", test_refused_before_body, "shared"),
    ("rest_unauthenticated_uploads_hold_nothing", test_unauthenticated_uploads_hold_nothing,
     "shared"),
    ("rest_nul_in_path_400", test_nul_in_path, "shared"),
    ("rest_bearer_scheme_case_insensitive", test_bearer_scheme, "shared"),
    ("rest_keepalive_errors_are_json", test_keepalive_errors_are_json, "shared"),
    ("rest_chunked_bodies", test_chunked_bodies, "shared"),
    ("rest_big_json_decoded_off_thread", test_big_json_decoded_off_thread, "shared"),
    ("rest_body_budget_503", test_body_budget, "own"),
    ("rest_decode_cap_413", test_decode_cap, "own"),
]
