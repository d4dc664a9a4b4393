"""test_dashboard_files.py — the controller serves the dashboard (web/) and the
JavaScript SDK (clients/js/) as static files (issue 11, server/webroot.c):
content types, cache validators and 304s, the security headers, no token for
files while /api still needs one, only GET and HEAD, and no way out of the
served folders however the path is spelled (raw sockets: nothing normalises
the path on the way).
"""

import json
import os
import shutil
import socket
import tempfile

from harness import ROOT, Cluster, check, expect_error, http

SECRET = "ippc-secret-outside-the-web-root"


def raw_get(c, path, method="GET", headers=()):
    """One request with the path exactly as given; (status, headers, body)."""
    host, port = c.api.url.split("//", 1)[1].rsplit(":", 1)
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s:%s" % (host, port),
             "Connection: close"] + list(headers)
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    top, _, body = buf.partition(b"\r\n\r\n")
    head = top.decode("latin-1").split("\r\n")
    status = int(head[0].split()[1]) if head and len(head[0].split()) > 1 else 0
    hdrs = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        hdrs[name.strip().lower()] = value.strip()
    return status, hdrs, body


def check_security_headers(r, what):
    h = {k.lower(): v for k, v in r.headers.items()}
    csp = h.get("content-security-policy", "")
    check("default-src 'none'" in csp and "script-src 'self'" in csp
          and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp,
          "%s: strict Content-Security-Policy expected, got %r" % (what, csp))
    check(h.get("x-content-type-options") == "nosniff", "%s: nosniff expected: %s" % (what, h))
    check(h.get("referrer-policy") == "no-referrer", "%s: no-referrer expected: %s" % (what, h))
    check(h.get("cache-control") == "no-cache", "%s: Cache-Control no-cache expected" % what)
    check(h.get("etag", "").startswith('"') and h.get("last-modified", "").endswith("GMT"),
          "%s: ETag and Last-Modified expected: %s" % (what, h))


def test_files_types_and_caching(c):
    """The real web/ and clients/js/: right types and headers, no token."""
    url = c.api.url
    index = http("GET", url + "/")
    check(index.status == 200, "GET / -> %s" % index)
    check(index.headers.get("Content-Type") == "text/html; charset=utf-8", repr(index.headers))
    check(b"<!doctype html>" in index.raw.lower(), "GET / is not the dashboard's page")
    check_security_headers(index, "GET /")
    with open(os.path.join(ROOT, "web", "index.html"), "rb") as f:
        check(index.raw == f.read(), "GET / is not web/index.html byte for byte")
    same = http("GET", url + "/index.html")
    check(same.status == 200 and same.raw == index.raw, "GET /index.html differs from GET /")
    types = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8",
             "html": "text/html; charset=utf-8", "svg": "image/svg+xml"}
    served = 0
    for dirpath, _, files in os.walk(os.path.join(ROOT, "web")):
        for name in files:
            ext = name.rsplit(".", 1)[-1]
            rel = os.path.relpath(os.path.join(dirpath, name), os.path.join(ROOT, "web"))
            r = http("GET", url + "/" + rel)
            check(r.status == 200, "GET /%s -> %s" % (rel, r))
            if ext in types:
                check(r.headers.get("Content-Type") == types[ext],
                      "/%s: Content-Type %s" % (rel, r.headers.get("Content-Type")))
            served += 1
    check(served >= 3, "web/ has only %d files" % served)
    sdk = http("GET", url + "/sdk/ippc.js")
    check(sdk.status == 200 and sdk.headers.get("Content-Type") == "text/javascript; charset=utf-8",
          "GET /sdk/ippc.js -> %s" % sdk)
    check_security_headers(sdk, "GET /sdk/ippc.js")
    # Revalidation: the ETag (or the date) back gives 304 without a body.
    for hdr in ({"If-None-Match": index.headers["ETag"]},
                {"If-None-Match": 'W/"nope", ' + index.headers["ETag"]},
                {"If-Modified-Since": index.headers["Last-Modified"]}):
        r = http("GET", url + "/", headers=hdr)
        check(r.status == 304 and r.raw == b"", "conditional GET %s -> %s" % (hdr, r))
        check(r.headers.get("ETag") == index.headers["ETag"], "304 without the ETag")
    r = http("GET", url + "/", headers={"If-None-Match": '"other"'})
    check(r.status == 200 and r.raw == index.raw, "a stale ETag must get the file")
    # HEAD: the headers, no body.
    status, hdrs, body = raw_get(c, "/index.html", method="HEAD")
    check(status == 200 and body == b"" and hdrs.get("content-length") == str(len(index.raw)),
          "HEAD /index.html -> %s %s %r" % (status, hdrs, body[:80]))
    # Other methods: 405 with Allow, JSON.
    for method in ("POST", "PUT", "DELETE"):
        r = http(method, url + "/index.html", raw=b"x")
        expect_error(r, 405, "method_not_allowed", method + " /index.html")
        check(r.headers.get("Allow") == "GET, HEAD", "Allow: %s" % r.headers.get("Allow"))
    # Files need no token; a wrong one does not matter.  /api still does.
    r = http("GET", url + "/", token="wrong")
    check(r.status == 200, "a file with a wrong token -> %s" % r)
    expect_error(http("GET", url + "/api/v1/info"), 401, "unauthorized", "/api without a token")
    expect_error(http("GET", url + "/api/v1/nothing"), 401, "unauthorized", "/api/x, no token")
    expect_error(http("GET", url + "/api/v1/nothing", token=c.api.token), 404, "not_found",
                 "unknown /api path with the token")
    # Missing files: JSON 404.
    expect_error(http("GET", url + "/no-such-file.js"), 404, "not_found", "missing file")
    expect_error(http("GET", url + "/sdk/no-such.js"), 404, "not_found", "missing SDK file")
    expect_error(http("GET", url + "/sdk/package.json"), 404, "not_found", "SDK non-js")


def make_tree():
    """A web root with a file, links out and in, a FIFO; a secret next to it."""
    top = tempfile.mkdtemp(prefix="ippc-webroot-")
    web, sdk = os.path.join(top, "web"), os.path.join(top, "sdk")
    os.makedirs(os.path.join(web, "css"))
    os.makedirs(sdk)
    with open(os.path.join(web, "index.html"), "w") as f:
        f.write("<!doctype html><title>test root</title>")
    with open(os.path.join(web, "css", "a.css"), "w") as f:
        f.write("body{}")
    with open(os.path.join(sdk, "ippc.js"), "w") as f:
        f.write("export const x = 1;")
    with open(os.path.join(top, "secret.txt"), "w") as f:
        f.write(SECRET)
    with open(os.path.join(web, ".hidden"), "w") as f:
        f.write(SECRET)
    os.symlink(os.path.join(top, "secret.txt"), os.path.join(web, "leak.txt"))
    os.symlink("..", os.path.join(web, "up"))
    os.symlink("/etc", os.path.join(web, "etc"))
    os.symlink(os.path.join(top, "secret.txt"), os.path.join(sdk, "leak.js"))
    os.mkfifo(os.path.join(web, "pipe.js"))
    return top, web, sdk


def test_files_no_way_out(_):
    """Traversal in every spelling, links, FIFOs, hidden files: 400/404, JSON,
    never a byte of what lies outside."""
    top, web, sdk = make_tree()
    try:
        with Cluster(jobs=[], controller_args=["--db", "memory", "--web-root", web,
                                               "--sdk-root", sdk]) as c:
            c.start(engines=False)
            status, hdrs, body = raw_get(c, "/")
            check(status == 200 and b"test root" in body, "the test root is not served")
            status, hdrs, body = raw_get(c, "/css/a.css")
            check(status == 200 and hdrs.get("content-type") == "text/css; charset=utf-8",
                  "css: %s %s" % (status, hdrs))
            attempts = [
                "/../secret.txt", "/..", "/css/../../secret.txt", "/./index.html",
                "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/%2e%2e%2fsecret.txt",
                "/..%2fsecret.txt", "/..%2Fsecret.txt", "/%252e%252e/secret.txt",
                "/%252e%252e%252fsecret.txt", "/sdk/../secret.txt", "/sdk/%2e%2e/secret.txt",
                "/sdk/..%2f..%2fsecret.txt", "/sdk/leak.js", "//etc/passwd", "/%2fetc/passwd",
                "/..\\secret.txt", "/..%5csecret.txt", "/leak.txt", "/up/secret.txt",
                "/etc/passwd", "/.hidden", "/%2ehidden", "/index.html%00.js", "/pipe.js",
                "/css", "/css/", "http://127.0.0.1/../secret.txt", "/%c0%ae%c0%ae/secret.txt",
                "/..;/secret.txt", "/index.html/..", "/" + "a/" * 20 + "x",
            ]
            for path in attempts:
                status, hdrs, body = raw_get(c, path)
                check(status in (400, 404), "GET %s -> %s %r" % (path, status, body[:200]))
                check(SECRET.encode() not in body and b"root:" not in body,
                      "GET %s leaked: %r" % (path, body[:200]))
                check(hdrs.get("content-type") == "application/json",
                      "GET %s: not JSON: %s" % (path, hdrs))
                code = json.loads(body)["error"]["code"]
                check(code in ("bad_request", "not_found"), "GET %s: code %s" % (path, code))
            # /api keeps its token whatever the path looks like.
            status, _, _ = raw_get(c, "/api/v1/../../index.html")
            check(status == 401, "/api/.. without a token -> %s" % status)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_files_root_missing(_):
    """No dashboard installed: the controller runs, says so, / is a JSON 404
    naming the folder and the option; the API works."""
    top = tempfile.mkdtemp(prefix="ippc-webroot-")
    try:
        missing = os.path.join(top, "not-there")
        with Cluster(jobs=[], controller_args=["--db", "memory", "--web-root", missing]) as c:
            c.start(engines=False)
            r = http("GET", c.api.url + "/")
            expect_error(r, 404, "not_found", "GET / without a web root")
            check(missing in r.body["error"]["message"] and "--web-root" in
                  r.body["error"]["message"], "message: %s" % r.body)
            check(c.api.get("/api/v1/info").status == 200, "the API must work")
            with open(os.path.join(c.dir, "controller.log"), "rb") as f:
                log = f.read().decode("utf-8", "replace")
            check("--web-root" in log, "the controller should say it has no dashboard")
    finally:
        shutil.rmtree(top, ignore_errors=True)


TESTS = [
    ("dashboard_files_types_and_caching", test_files_types_and_caching, "shared"),
    ("dashboard_files_no_way_out", test_files_no_way_out, "own"),
    ("dashboard_files_root_missing", test_files_root_missing, "own"),
]
