/* acceptor.c — accept, read the first request head without consuming it,
 * refuse or hand over (see acceptor.h).
 *
 * Two halves: a pure classifier of request heads (acceptor_classify, with the
 * answer formatter), and the loop that feeds it (acceptor_run).
 *
 * The loop keeps every connection it has not handed over in one slab, linked
 * in accept order, so the oldest is always at the front.  Sockets are
 * registered edge-triggered: unread (peeked) bytes would keep a level-triggered
 * socket readable forever, and an edge means "something new arrived", which
 * is exactly when another peek can change the verdict.  A connection that
 * sends its head in many small pieces is peeked at most every PEEK_INTERVAL_MS
 * (each peek copies up to IPPC_MAX_REQUEST_HEAD bytes).
 */
#include "acceptor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hub.h"
#include "list.h"
#include "proto.h"
#include "secret.h"

/* ------------------------------------------------------------ classifier */

static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static acceptor_kind refuse(acceptor_verdict *v, int status, const char *code, const char *extra,
                            const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static acceptor_kind refuse(acceptor_verdict *v, int status, const char *code, const char *extra,
                            const char *fmt, ...)
{
    v->kind = ACCEPTOR_REFUSE;
    v->status = status;
    v->code = code;
    v->extra_headers = extra;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->message, sizeof v->message, fmt, ap);
    va_end(ap);
    return ACCEPTOR_REFUSE;
}

#define BAD(v, ...) refuse(v, 400, ERR_BAD_REQUEST, "", __VA_ARGS__)

/* Validates n bytes of a request line ("METHOD SP target SP HTTP/d.d", no
 * terminator).  complete: n is the whole line.  Returns 1 if valid (so far),
 * 0 if no continuation can make it valid. */
typedef struct request_line {
    const char *method, *target;
    size_t method_len, target_len;
    int minor; /* HTTP/1.minor */
} request_line;

static int request_line_ok(const char *b, size_t n, int complete, request_line *rl)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)b[i]))
        i++;
    if (i > 32)
        return 0;
    if (i == n)
        return !complete;
    if (i == 0 || b[i] != ' ')
        return 0;
    rl->method = b;
    rl->method_len = i;
    size_t t = ++i;
    /* The target: visible characters (bytes over 0x7f are left to the handler). */
    while (i < n && (unsigned char)b[i] > 0x20 && b[i] != 0x7f)
        i++;
    if (i == n)
        return !complete;
    if (i == t || b[i] != ' ')
        return 0;
    rl->target = b + t;
    rl->target_len = i - t;
    i++;
    static const char version[] = "HTTP/1.d";
    size_t k = 0;
    for (; i < n && k < 8; i++, k++) {
        char c = b[i];
        if (version[k] == 'd' ? !(c == '0' || c == '1') : c != version[k])
            return 0;
    }
    if (k < 8)
        return !complete;
    if (i < n)
        return 0;
    rl->minor = b[i - 1] - '0';
    return 1;
}

/* Validates n bytes of a header line ("name: value", no terminator): a token
 * name right before the colon (a leading space is an obsolete line folding),
 * no control characters but tab in the value.  *colon: where the colon is. */
static int header_line_ok(const char *b, size_t n, int complete, size_t *colon)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)b[i]))
        i++;
    if (i == n)
        return !complete;
    if (i == 0 || b[i] != ':')
        return 0;
    *colon = i;
    for (i++; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

enum { H_HOST, H_UPGRADE, H_CONNECTION, H_KEY, H_VERSION, H_PROTOCOL, H_AUTH, H_CL, H_TE, H_N };

static const char *const header_names[H_N] = {
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "authorization",
    "content-length",
    "transfer-encoding",
};

typedef struct header_value {
    const char *p;
    size_t n;
    int count;
} header_value;

typedef struct request_head {
    request_line line;
    header_value h[H_N];
    int connection_upgrade;  /* some Connection header lists "upgrade" */
    size_t connection_total; /* every Connection value, joined by ", " */
} request_head;

/* 1 if the comma-separated list (n bytes) has the entry word (any case). */
static int list_has(const char *list, size_t n, const char *word)
{
    size_t wl = strlen(word), i = 0;
    while (i < n) {
        while (i < n && (is_ows(list[i]) || list[i] == ','))
            i++;
        size_t start = i;
        while (i < n && list[i] != ',')
            i++;
        size_t end = i;
        while (end > start && is_ows(list[end - 1]))
            end--;
        if (end - start == wl && strncasecmp(list + start, word, wl) == 0)
            return 1;
    }
    return 0;
}

static void record_header(request_head *rh, const char *line, size_t n, size_t colon)
{
    const char *value = line + colon + 1;
    size_t vn = n - colon - 1;
    while (vn && is_ows(*value)) {
        value++;
        vn--;
    }
    while (vn && is_ows(value[vn - 1]))
        vn--;
    for (int k = 0; k < H_N; k++) {
        if (strlen(header_names[k]) != colon || strncasecmp(line, header_names[k], colon) != 0)
            continue;
        header_value *hv = &rh->h[k];
        if (hv->count++ == 0) {
            hv->p = value;
            hv->n = vn;
        }
        if (k == H_CONNECTION) {
            rh->connection_upgrade |= list_has(value, vn, "upgrade");
            rh->connection_total += vn + (hv->count > 1 ? 2 : 0);
        }
        return;
    }
}

/* A Sec-WebSocket-Key: base64 of 16 bytes (RFC 6455 4.1). */
static int key_ok(const header_value *k)
{
    if (k->count != 1 || k->n != 24 || k->p[22] != '=' || k->p[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++) {
        unsigned char c = (unsigned char)k->p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return 0;
    }
    /* The last character carries 2 bits of the 16th byte and 4 zero bits. */
    return strchr("AQgw", k->p[21]) != NULL;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 1 if the query of the target has token=<want> (percent-decoded). */
static int query_token_ok(const char *target, size_t n, const char *want)
{
    const char *q = memchr(target, '?', n);
    if (!q)
        return 0;
    size_t i = (size_t)(q - target) + 1;
    int found = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && target[i] != '&')
            i++;
        const char *p = target + start;
        size_t pn = i - start;
        i++;
        if (pn < 6 || memcmp(p, "token=", 6) != 0)
            continue;
        char value[300];
        size_t vn = 0;
        int ok = 1;
        for (size_t j = 6; j < pn && ok; j++) {
            char c = p[j];
            if (c == '%') {
                int hi = j + 2 < pn ? hex_value(p[j + 1]) : -1;
                int lo = j + 2 < pn ? hex_value(p[j + 2]) : -1;
                if (hi < 0 || lo < 0) {
                    ok = 0;
                    break;
                }
                c = (char)(hi * 16 + lo);
                j += 2;
            } else if (c == '+') {
                c = ' ';
            }
            if (vn + 1 >= sizeof value)
                ok = 0;
            else
                value[vn++] = c;
        }
        if (ok)
            found |= secret_equal_n(value, vn, want);
    }
    return found;
}

/* The Sec-WebSocket-Protocol list as libwebsockets 4.1 reads it: at most 127
 * bytes, entries that are names (a letter, then letters, digits . - _), and
 * each entry before the first protocol it knows at most 63 bytes (it refuses
 * anything else without an answer).  want must be listed and other must not
 * be (lws would pick the first of them). */
static const char *protocol_list_problem(const header_value *h, const char *want, const char *other)
{
    if (h->count == 0)
        return want && strcmp(want, IPPC_ENGINE_SUBPROTOCOL) == 0
                   ? "Sec-WebSocket-Protocol must list " IPPC_ENGINE_SUBPROTOCOL
                   : NULL;
    if (h->count > 1)
        return "Sec-WebSocket-Protocol must be sent once";
    if (h->n > 127)
        return "Sec-WebSocket-Protocol is longer than 127 bytes";
    int seen_known = 0, has_want = 0;
    size_t i = 0;
    while (i < h->n) {
        while (i < h->n && (is_ows(h->p[i]) || h->p[i] == ','))
            i++;
        size_t start = i;
        while (i < h->n && h->p[i] != ',')
            i++;
        size_t end = i;
        while (end > start && is_ows(h->p[end - 1]))
            end--;
        if (end == start)
            continue;
        const char *e = h->p + start;
        size_t en = end - start;
        int name = (e[0] >= 'a' && e[0] <= 'z') || (e[0] >= 'A' && e[0] <= 'Z');
        for (size_t j = 1; j < en && name; j++) {
            char c = e[j];
            name = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '.' || c == '-' || c == '_';
        }
        if (!name)
            return "Sec-WebSocket-Protocol entries are names (letters, digits, . - _)";
        int is_want = en == strlen(want) && memcmp(e, want, en) == 0;
        int is_other = en == strlen(other) && memcmp(e, other, en) == 0;
        if (is_other)
            return "Sec-WebSocket-Protocol names the other endpoint's protocol";
        if (!seen_known && !is_want && en > 63)
            return "Sec-WebSocket-Protocol: list " IPPC_CLIENT_SUBPROTOCOL
                   " before a longer entry (such as the token)";
        seen_known |= is_want;
        has_want |= is_want;
    }
    if (!has_want)
        return strcmp(want, IPPC_ENGINE_SUBPROTOCOL) == 0
                   ? "Sec-WebSocket-Protocol must list " IPPC_ENGINE_SUBPROTOCOL
                   : "Sec-WebSocket-Protocol must list " IPPC_CLIENT_SUBPROTOCOL;
    return NULL;
}

static const char unauthorized_headers[] = "WWW-Authenticate: Bearer realm=\"ippc\"\r\n";

/* The head is complete: decide on it. */
static acceptor_kind decide(const request_head *rh, const acceptor_secrets *secrets,
                            acceptor_verdict *v)
{
    const request_line *rl = &rh->line;
    const header_value *h = rh->h;
    const char *query = memchr(rl->target, '?', rl->target_len);
    size_t path_len = query ? (size_t)(query - rl->target) : rl->target_len;
    int engine = path_len == 7 && memcmp(rl->target, "/engine", 7) == 0;
    int client = path_len == 3 && memcmp(rl->target, "/ws", 3) == 0;
    int below = (path_len >= 4 && memcmp(rl->target, "/ws/", 4) == 0) ||
                (path_len >= 8 && memcmp(rl->target, "/engine/", 8) == 0);

    if (h[H_CL].count > 1 || (h[H_CL].count && h[H_TE].count))
        return BAD(v, "a request may carry one Content-Length and no Transfer-Encoding with it");
    if (h[H_CL].count) {
        int digits = h[H_CL].n > 0 && h[H_CL].n <= 19;
        for (size_t i = 0; i < h[H_CL].n && digits; i++)
            digits = h[H_CL].p[i] >= '0' && h[H_CL].p[i] <= '9';
        if (!digits)
            return BAD(v, "Content-Length must be a decimal number");
    }
    if (rl->minor == 1 && h[H_HOST].count != 1)
        return BAD(v, "an HTTP/1.1 request has exactly one Host header");

    if (below)
        return refuse(v, 404, ERR_NOT_FOUND, "",
                      "no such WebSocket endpoint (there are /ws and "
                      "/engine)");
    if (!engine && !client)
        return v->kind = ACCEPTOR_HTTP;

    const char *what = engine ? "/engine" : "/ws";
    if (rl->method_len != 3 || memcmp(rl->method, "GET", 3) != 0)
        return refuse(v, 405, ERR_METHOD, "Allow: GET\r\n",
                      "%s takes only GET (a WebSocket "
                      "upgrade)",
                      what);
    if (!h[H_UPGRADE].count || !list_has(h[H_UPGRADE].p, h[H_UPGRADE].n, "websocket"))
        return refuse(v, 426, ERR_UPGRADE_REQUIRED, "Upgrade: websocket\r\n",
                      "%s is a WebSocket endpoint: send Upgrade: websocket", what);
    if (rl->minor != 1)
        return BAD(v, "a WebSocket upgrade needs HTTP/1.1");
    if (h[H_VERSION].count != 1 || h[H_VERSION].n != 2 || memcmp(h[H_VERSION].p, "13", 2) != 0)
        return refuse(v, 426, ERR_UPGRADE_REQUIRED, "Sec-WebSocket-Version: 13\r\n",
                      "the WebSocket version must be 13");
    if (!rh->connection_upgrade)
        return BAD(v, "a WebSocket upgrade needs Connection: Upgrade");
    if (rh->connection_total > 127)
        return BAD(v, "the Connection header is longer than 127 bytes");
    if (!key_ok(&h[H_KEY]))
        return BAD(v, "Sec-WebSocket-Key must be the base64 of 16 bytes, sent once");
    if (h[H_UPGRADE].count > 1 || h[H_AUTH].count > 1)
        return BAD(v, "Upgrade and Authorization may be sent once");

    /* Authenticated before anything else of the connection is read. */
    if (engine) {
        if (!h[H_AUTH].count || !secret_bearer_equal(h[H_AUTH].p, h[H_AUTH].n, secrets->engine_key))
            return refuse(v, 401, ERR_UNAUTHORIZED, unauthorized_headers,
                          "/engine needs Authorization: Bearer <the engine key>");
    } else {
        int ok = (h[H_AUTH].count && secret_bearer_equal(h[H_AUTH].p, h[H_AUTH].n, secrets->token));
        ok |= query_token_ok(rl->target, rl->target_len, secrets->token);
        ok |= h[H_PROTOCOL].count == 1 &&
              secret_protocol_token_equal(h[H_PROTOCOL].p, h[H_PROTOCOL].n, secrets->token);
        if (!ok)
            return refuse(v, 401, ERR_UNAUTHORIZED, unauthorized_headers,
                          "/ws needs the client token: Authorization: Bearer TOKEN, ?token=TOKEN "
                          "or a Sec-WebSocket-Protocol entry ippc.token.TOKEN");
    }
    const char *problem = engine ? protocol_list_problem(&h[H_PROTOCOL], IPPC_ENGINE_SUBPROTOCOL,
                                                         IPPC_CLIENT_SUBPROTOCOL)
                                 : protocol_list_problem(&h[H_PROTOCOL], IPPC_CLIENT_SUBPROTOCOL,
                                                         IPPC_ENGINE_SUBPROTOCOL);
    if (problem)
        return BAD(v, "%s", problem);
    return v->kind = engine ? ACCEPTOR_WS_ENGINE : ACCEPTOR_WS_CLIENT;
}

/* The next line in b[pos, limit): *eol is the index of its '\n' (or of limit
 * if none); *n its length without the terminator ("\r\n" or "\n").  Returns 1
 * if the line is complete.  A trailing '\r' of an incomplete line is left out:
 * the '\n' may follow. */
static int next_line(const char *b, size_t pos, size_t limit, size_t *eol, size_t *n)
{
    const char *nl = memchr(b + pos, '\n', limit - pos);
    if (!nl) {
        *eol = limit;
        *n = limit - pos;
        if (*n && b[limit - 1] == '\r')
            (*n)--;
        return 0;
    }
    *eol = (size_t)(nl - b);
    *n = *eol - pos;
    if (*n && b[*eol - 1] == '\r')
        (*n)--;
    return 1;
}

acceptor_kind acceptor_classify(const char *bytes, size_t len, const acceptor_secrets *secrets,
                                acceptor_verdict *v)
{
    memset(v, 0, sizeof *v);
    v->kind = ACCEPTOR_NEED_MORE;
    v->extra_headers = "";
    request_head rh;
    memset(&rh, 0, sizeof rh);

    /* Only the first MAX_LINE + 2 bytes can hold the request line and its
     * terminator; verdicts look at nothing past that window, so that a longer
     * peek of the same stream never changes them. */
    size_t window = len < IPPC_MAX_REQUEST_LINE + 2 ? len : IPPC_MAX_REQUEST_LINE + 2;
    size_t eol, n;
    int complete = next_line(bytes, 0, window, &eol, &n);
    /* A bare '\r' inside the line is a control character: invalid. */
    if (!request_line_ok(bytes, n, complete, &rh.line))
        return BAD(v, "malformed request line (want METHOD /path HTTP/1.1)");
    if (!complete || n > IPPC_MAX_REQUEST_LINE) {
        if (n > IPPC_MAX_REQUEST_LINE)
            return refuse(v, 414, ERR_URI_TOO_LONG, "", "the request line is longer than %d bytes",
                          IPPC_MAX_REQUEST_LINE);
        return ACCEPTOR_NEED_MORE;
    }

    /* Header lines, within the first MAX_HEAD bytes. */
    size_t limit = len < IPPC_MAX_REQUEST_HEAD ? len : IPPC_MAX_REQUEST_HEAD;
    size_t pos = eol + 1;
    for (;;) {
        if (pos >= limit) {
            if (len >= IPPC_MAX_REQUEST_HEAD)
                goto too_large;
            return ACCEPTOR_NEED_MORE;
        }
        complete = next_line(bytes, pos, limit, &eol, &n);
        size_t colon = 0;
        const char *line = bytes + pos;
        if (complete && n == 0)
            break;
        if (!header_line_ok(line, n, complete, &colon))
            return BAD(v, "malformed header line (want Name: value)");
        if (!complete) {
            if (len >= IPPC_MAX_REQUEST_HEAD)
                goto too_large;
            return ACCEPTOR_NEED_MORE;
        }
        record_header(&rh, line, n, colon);
        pos = eol + 1;
    }
    v->head_len = eol + 1;
    return decide(&rh, secrets, v);
too_large:
    return refuse(v, 431, ERR_HEADERS_TOO_LARGE, "",
                  "the request head (request line and headers) is longer than %d bytes",
                  IPPC_MAX_REQUEST_HEAD);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/* A JSON string body for our own ASCII text: quotes, backslashes and control
 * characters escaped, anything else outside ASCII replaced. */
static size_t json_text(char *out, size_t cap, const char *text)
{
    size_t o = 0;
    for (const char *p = text; *p && o + 7 < cap; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = c < 0x80 ? (char)c : '?';
        }
    }
    out[o] = '\0';
    return o;
}

size_t acceptor_answer(const acceptor_verdict *v, char *out, size_t cap)
{
    char message[sizeof v->message * 6 + 1], body[sizeof message + 96];
    json_text(message, sizeof message, v->message);
    int bn = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}",
                      v->code ? v->code : ERR_BAD_REQUEST, message);
    if (bn < 0 || (size_t)bn >= sizeof body)
        return 0;
    int n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: "
                     "%d\r\nConnection: close\r\n%s\r\n%s",
                     v->status, reason_phrase(v->status), bn,
                     v->extra_headers ? v->extra_headers : "", body);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

/* ------------------------------------------------------------ listening */

int acceptor_listen(const char *ip, int port, int *bound_port, ippc_error *err)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
        return ippc_error_set(err, ERR_INVALID, "'%s' is not an IPv4 address", ip);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return ippc_error_set(err, ERR_INTERNAL, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 1024) < 0) {
        ippc_error_set(err, ERR_UNAVAILABLE, "cannot listen on %s:%d: %s", ip, port,
                       strerror(errno));
        close(fd);
        return -1;
    }
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *bound_port = ntohs(sa.sin_port);
    return fd;
}

/* ------------------------------------------------------------ the loop */

#define PEEK_INTERVAL_MS 10
#define TICK_MS 10
#define IP_BUCKETS 4096 /* per-address counts, by a keyed hash of the address */
#define DRAIN_MAX ((size_t)64 * 1024)
#define ANSWER_MAX 1024

typedef enum conn_state {
    CONN_FREE,
    CONN_WAITING,   /* for its complete head */
    CONN_ANSWERING, /* writing a refusal */
    CONN_DRAINING,  /* refusal written; reading until the peer closes */
} conn_state;

typedef struct conn {
    conn_state state;
    int fd;
    uint32_t generation; /* tells a stale epoll event from one for the slot's new socket */
    list_node link;      /* in acceptor.by_age while in use */
    int free_next;       /* the free list, while free */
    unsigned bucket;
    int64_t deadline_ms;
    int64_t next_peek_ms;
    int dirty;   /* an edge came while peeking was not allowed yet */
    size_t seen; /* bytes seen at the last peek: 0 = silent so far */
    size_t drained;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char answer[ANSWER_MAX];
    size_t answer_len, answer_sent;
} conn;

typedef struct acceptor {
    const acceptor_routes *routes;
    acceptor_secrets secrets;
    size_t max_pending, max_per_ip;
    int head_timeout_ms;
    int epfd, listen_fd;
    int listen_paused; /* accept() ran out of descriptors: retry on the next tick */
    conn *slots;
    int free_head;
    list_node by_age; /* conn.link of the slots in use, accept order: oldest first */
    size_t in_use;
    uint16_t *per_bucket;
    uint64_t hash_key;
    char *peek; /* IPPC_MAX_REQUEST_HEAD bytes */
} acceptor;

static unsigned bucket_of(const acceptor *a, const struct sockaddr_storage *ss)
{
    uint64_t x = a->hash_key;
    if (ss->ss_family == AF_INET)
        x ^= ((const struct sockaddr_in *)ss)->sin_addr.s_addr;
    /* splitmix64: a keyed mix, so no one can aim at another's bucket */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return (unsigned)((x ^ (x >> 31)) % IP_BUCKETS);
}

static uint64_t event_data(const acceptor *a, int idx)
{
    return ((uint64_t)a->slots[idx].generation << 32) | (uint32_t)idx;
}

static int conn_index(const acceptor *a, const list_node *node)
{
    return (int)(list_entry(node, conn, link) - a->slots);
}

static void conn_release(acceptor *a, int idx, int close_fd)
{
    conn *c = &a->slots[idx];
    epoll_ctl(a->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (close_fd)
        close(c->fd);
    list_remove(&c->link);
    a->per_bucket[c->bucket]--;
    a->in_use--;
    c->state = CONN_FREE;
    c->fd = -1;
    c->generation++;
    c->free_next = a->free_head;
    a->free_head = idx;
}

/* Starts a refusal: the request bytes are read away first (closing a socket
 * with unread bytes sends a reset, which can destroy the answer on its way),
 * then the answer is written as far as the socket takes it. */
static void conn_answer(acceptor *a, int idx, const acceptor_verdict *v, int64_t now);
static void conn_write(acceptor *a, int idx, int64_t now);

static void conn_hand_over(acceptor *a, int idx, const acceptor_verdict *v)
{
    conn *c = &a->slots[idx];
    int fd = c->fd;
    struct sockaddr_storage addr = c->addr;
    socklen_t addr_len = c->addr_len;
    conn_release(a, idx, 0);
    if (v->kind == ACCEPTOR_HTTP)
        a->routes->to_http(a->routes->arg, fd, (struct sockaddr *)&addr, addr_len);
    else
        a->routes->to_ws(a->routes->arg, fd, v);
}

/* Peeks at a waiting connection and acts on the verdict. */
static void conn_peek(acceptor *a, int idx, int64_t now)
{
    conn *c = &a->slots[idx];
    c->dirty = 0;
    c->next_peek_ms = now + PEEK_INTERVAL_MS;
    ssize_t got = recv(c->fd, a->peek, IPPC_MAX_REQUEST_HEAD, MSG_PEEK | MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (got <= 0) { /* closed or reset before a complete head */
        conn_release(a, idx, 1);
        return;
    }
    c->seen = (size_t)got;
    acceptor_verdict v;
    switch (acceptor_classify(a->peek, (size_t)got, &a->secrets, &v)) {
    case ACCEPTOR_NEED_MORE:
        if ((size_t)got == IPPC_MAX_REQUEST_HEAD) /* cannot happen: 431 decides */
            conn_release(a, idx, 1);
        return;
    case ACCEPTOR_REFUSE: conn_answer(a, idx, &v, now); return;
    default: conn_hand_over(a, idx, &v); return;
    }
}

static void conn_answer(acceptor *a, int idx, const acceptor_verdict *v, int64_t now)
{
    conn *c = &a->slots[idx];
    c->answer_len = acceptor_answer(v, c->answer, sizeof c->answer);
    c->answer_sent = 0;
    c->state = CONN_ANSWERING;
    c->deadline_ms = now + ACCEPTOR_ANSWER_TIMEOUT_MS;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.u64 = event_data(a, idx)};
    epoll_ctl(a->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    conn_write(a, idx, now);
}

/* Reads and discards what the peer sent; 1 once it closed (or sent too much). */
static int conn_drain(acceptor *a, conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, a->peek, IPPC_MAX_REQUEST_HEAD, MSG_DONTWAIT);
        if (n > 0) {
            c->drained += (size_t)n;
            if (c->drained > DRAIN_MAX)
                return 1;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        return 1;
    }
}

static void conn_write(acceptor *a, int idx, int64_t now)
{
    conn *c = &a->slots[idx];
    (void)now;
    if (conn_drain(a, c) && c->drained > DRAIN_MAX) {
        conn_release(a, idx, 1);
        return;
    }
    if (c->state == CONN_ANSWERING) {
        while (c->answer_sent < c->answer_len) {
            ssize_t n = send(c->fd, c->answer + c->answer_sent, c->answer_len - c->answer_sent,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                c->answer_sent += (size_t)n;
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                return; /* EPOLLOUT will say when there is room */
            conn_release(a, idx, 1);
            return;
        }
        /* All written: say we are done, and wait (briefly) for the peer's
         * close so that our close sends no reset. */
        shutdown(c->fd, SHUT_WR);
        c->state = CONN_DRAINING;
    }
    if (conn_drain(a, c))
        conn_release(a, idx, 1);
}

/* Drops a connection to make room: the oldest silent one of bucket (or of any,
 * bucket < 0), else the oldest that is incomplete, else the oldest being
 * refused.  A "silent" one is peeked first: if it has spoken meanwhile it is
 * served instead, which frees its slot as well when its head is complete. */
static int make_room(acceptor *a, int bucket, int64_t now)
{
    for (int pass = 0; pass < 3; pass++) {
        list_for_each_safe(it, &a->by_age) {
            int idx = conn_index(a, it);
            conn *c = &a->slots[idx];
            if (bucket >= 0 && c->bucket != (unsigned)bucket)
                continue;
            int pick = pass == 0   ? c->state == CONN_WAITING && c->seen == 0
                       : pass == 1 ? c->state == CONN_WAITING
                                   : 1;
            if (pick) {
                if (pass == 0) {
                    uint32_t generation = c->generation;
                    conn_peek(a, idx, now);
                    if (c->generation != generation) /* served (or gone) */
                        return 1;
                    if (c->seen) /* it spoke: not silent after all */
                        continue;
                }
                conn_release(a, idx, 1);
                return 1;
            }
        }
    }
    return 0;
}

static void accept_all(acceptor *a, int64_t now)
{
    for (;;) {
        /* zeroed: accept4 may fill less than ss_family (an unnamed peer) */
        struct sockaddr_storage addr = {0};
        socklen_t addr_len = sizeof addr;
        int fd = accept4(a->listen_fd, (struct sockaddr *)&addr, &addr_len,
                         SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE) && make_room(a, -1, now))
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Nothing of ours to close: stop listening until the next
                 * tick rather than spin on a readable listening socket. */
                struct epoll_event ev = {.events = 0, .data.u64 = UINT64_MAX - 1};
                epoll_ctl(a->epfd, EPOLL_CTL_MOD, a->listen_fd, &ev);
                a->listen_paused = 1;
            }
            return;
        }
        /* Messages are a JSON frame plus binary frames: without NODELAY the
         * second small write waits for a delayed ACK. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        unsigned bucket = bucket_of(a, &addr);
        /* Never refuse the newcomer: make room by dropping the oldest silent
         * connection (of its address first). */
        if (a->per_bucket[bucket] >= a->max_per_ip)
            make_room(a, (int)bucket, now);
        if (a->in_use >= a->max_pending && !make_room(a, -1, now)) {
            close(fd); /* every slot is one being served right now: cannot happen */
            continue;
        }
        int idx = a->free_head;
        conn *c = &a->slots[idx];
        a->free_head = c->free_next;
        uint32_t generation = c->generation;
        memset(c, 0, sizeof *c);
        c->generation = generation;
        c->state = CONN_WAITING;
        c->fd = fd;
        c->addr = addr;
        c->addr_len = addr_len;
        c->bucket = bucket;
        c->deadline_ms = now + a->head_timeout_ms;
        list_push_back(&a->by_age, &c->link);
        a->in_use++;
        a->per_bucket[bucket]++;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET,
                                 .data.u64 = event_data(a, idx)};
        if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            conn_release(a, idx, 1);
            continue;
        }
        /* Bytes may have arrived with the connection (before it was watched). */
        conn_peek(a, idx, now);
    }
}

/* Expired connections go; dirty ones get their deferred peek. */
static void tick(acceptor *a, int64_t now)
{
    list_for_each_safe(it, &a->by_age) {
        int idx = conn_index(a, it);
        conn *c = &a->slots[idx];
        if (now >= c->deadline_ms && c->state == CONN_WAITING && c->seen > 0) {
            /* It spoke but never finished its head: tell it why it is cut
             * (a silent peer gets nothing, it may not even speak HTTP). */
            acceptor_verdict v;
            memset(&v, 0, sizeof v);
            refuse(&v, 408, ERR_TIMEOUT, "", "the request head was not complete within %d ms",
                   a->head_timeout_ms);
            conn_answer(a, idx, &v, now);
        } else if (now >= c->deadline_ms)
            conn_release(a, idx, 1);
        else if (c->state == CONN_WAITING && c->dirty && now >= c->next_peek_ms)
            conn_peek(a, idx, now);
    }
    if (a->listen_paused) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX - 1};
        epoll_ctl(a->epfd, EPOLL_CTL_MOD, a->listen_fd, &ev);
        a->listen_paused = 0;
    }
}

static size_t descriptor_budget(size_t want)
{
    /* Pending connections must leave room for the ones being served. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        want > rl.rlim_cur / 4)
        want = rl.rlim_cur / 4 > 16 ? rl.rlim_cur / 4 : 16;
    return want;
}

void acceptor_run(int listen_fd, int stop_fd, const acceptor_routes *routes,
                  const acceptor_config *cfg)
{
    acceptor a;
    memset(&a, 0, sizeof a);
    a.routes = routes;
    a.secrets = cfg->secrets;
    if (!a.secrets.token)
        a.secrets.token = "";
    if (!a.secrets.engine_key)
        a.secrets.engine_key = "";
    a.max_pending = descriptor_budget(cfg->max_pending ? cfg->max_pending : ACCEPTOR_MAX_PENDING);
    a.max_per_ip = cfg->max_pending_per_ip ? cfg->max_pending_per_ip : ACCEPTOR_MAX_PENDING_PER_IP;
    if (a.max_per_ip > a.max_pending)
        a.max_per_ip = a.max_pending;
    a.head_timeout_ms = cfg->head_timeout_ms > 0 ? cfg->head_timeout_ms : ACCEPTOR_HEAD_TIMEOUT_MS;
    a.listen_fd = listen_fd;
    list_init(&a.by_age);
    if (getrandom(&a.hash_key, sizeof a.hash_key, 0) != (ssize_t)sizeof a.hash_key)
        a.hash_key = (uint64_t)hub_now_ms() ^ (uint64_t)getpid() << 32;
    a.slots = calloc(a.max_pending, sizeof *a.slots);
    a.per_bucket = calloc(IP_BUCKETS, sizeof *a.per_bucket);
    a.peek = malloc(IPPC_MAX_REQUEST_HEAD);
    a.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!a.slots || !a.per_bucket || !a.peek || a.epfd < 0) {
        fprintf(stderr, "ippc-controller: acceptor: out of memory or descriptors\n");
        goto out;
    }
    for (size_t i = 0; i < a.max_pending; i++) {
        a.slots[i].fd = -1;
        a.slots[i].free_next = i + 1 < a.max_pending ? (int)i + 1 : -1;
    }
    a.free_head = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    epoll_ctl(a.epfd, EPOLL_CTL_ADD, stop_fd, &ev);
    ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = UINT64_MAX - 1};
    epoll_ctl(a.epfd, EPOLL_CTL_ADD, listen_fd, &ev);

    int64_t next_tick = hub_now_ms() + TICK_MS;
    for (;;) {
        struct epoll_event events[64];
        int64_t now = hub_now_ms();
        int timeout =
            a.in_use || a.listen_paused ? (int)(next_tick > now ? next_tick - now : 0) : 1000;
        int n = epoll_wait(a.epfd, events, 64, timeout);
        if (n < 0 && errno != EINTR)
            break;
        now = hub_now_ms();
        int stop = 0;
        for (int i = 0; i < n; i++) {
            uint64_t data = events[i].data.u64;
            if (data == UINT64_MAX) {
                stop = 1;
                continue;
            }
            if (data == UINT64_MAX - 1) {
                accept_all(&a, now);
                continue;
            }
            int idx = (int)(uint32_t)data;
            conn *c = &a.slots[idx];
            if (c->state == CONN_FREE || c->generation != (uint32_t)(data >> 32))
                continue; /* the socket this event was for is gone */
            if (c->state == CONN_WAITING) {
                int closed = (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
                uint32_t generation = c->generation;
                if (now >= c->next_peek_ms || closed)
                    conn_peek(&a, idx, now);
                else
                    c->dirty = 1;
                /* The peer stopped sending before its head was complete. */
                if (closed && c->generation == generation && c->state == CONN_WAITING)
                    conn_release(&a, idx, 1);
            } else {
                conn_write(&a, idx, now);
            }
        }
        if (stop)
            break;
        if (now >= next_tick) {
            tick(&a, now);
            next_tick = now + TICK_MS;
        }
    }
out:
    while (a.slots && !list_empty(&a.by_age))
        conn_release(&a, conn_index(&a, list_first(&a.by_age)), 1);
    if (a.epfd >= 0)
        close(a.epfd);
    free(a.slots);
    free(a.per_bucket);
    free(a.peek);
}
