/* http_api.c — REST routes (see http_api.h).
 *
 * Life of a request.  uri_logger() runs as soon as the request line is read
 * and makes the request's context, noting what only the raw line shows (its
 * length, an escaped NUL byte).  MHD calls handle() once when the head is
 * read, before any body byte: begin() decides everything that does not need
 * the body there — line and head size (414/431), NUL bytes, authentication
 * (401), route and method (404/405), the body's declared size (413) and the
 * memory to hold it (503).  A refused request that carries a body is answered
 * at once, so MHD never reads the body and closes the connection after the
 * answer (linger.h drains what the client still sends); one without a body
 * is answered at its last call, which keeps the connection alive.  The
 * body then arrives in chunks: into one buffer of the declared
 * Content-Length, or, chunked, a buffer that doubles up to the limit; every
 * byte is charged to the request's budget account first.  A .npy body's
 * header is split off into a small buffer of its own as it arrives
 * (npy_head_take), so the body buffer holds only the data and becomes the
 * array as it is.  At the last call
 * (*upload_data_size == 0) a JSON body over DECODE_INLINE_MAX is handed to
 * the decode pool and the connection suspended; the worker parses it, decodes
 * the call (call.h) and, for a direct-view call, also converts its values
 * (call_prepare), frees the tree and resumes the connection, whose next call
 * runs the route.  Every route with a /ws twin, and every one that takes a
 * body, is a call: its path parameters, query and body go through
 * call_from_rest, the one decoder the /ws request channel uses too, and its
 * answer is call.c's.  A call that waits (a blocking direct-view call or
 * map, ?wait= on a task or request) registers a wake-up with call_wait and
 * suspends the connection under the hub lock, so a completion cannot slip
 * in between; the wake-up resumes it and call_answer builds the answer.
 * A pull or gather that asked (Accept, call_answer_of) for raw bytes, a .npy
 * file or multipart/mixed is answered from the engines' results by
 * reference (send_binary; binbody.h) once it is done.
 * Content-Type is judged with the head too (call_media_of: 415).
 *
 * What libmicrohttpd 0.9.75 still answers itself, in HTML, with no hook to
 * replace the answer (tried on a kept-alive connection): a request head that
 * does not fit MHD_CONNECTION_MEMORY (64 KiB: a 40 KiB head gets our JSON
 * 431, a 70 KiB one MHD's 431; a URI MHD cannot hold gets its 414), a
 * malformed request or header line (400), an HTTP version other than 1.x
 * (505), a Content-Length that is not a number (400) or does not fit 64 bits
 * (413; 0.9.75 even sends those two header blocks twice), and malformed
 * chunked encoding or a chunk size over 64 bits (400/413, found while the
 * body is read, after begin()).  All of these happen before the handler is
 * called, or between two of its calls, and close the connection.  The
 * acceptor checks a connection's first request itself (400/414/431 as JSON);
 * later requests of a kept-alive connection are MHD's alone.  (MHD's 400
 * for a missing Host is off: strict mode is not enabled.  Its 500 for a
 * handler that leaves upload data unread cannot happen: handle() always
 * consumes it.)  Nor can a raw NUL byte inside a later request line be
 * seen: MHD cuts the path there and passes no length.
 */
#include "http_api.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <microhttpd.h>

#include "binbody.h"
#include "bigmem.h"
#include "buf.h"
#include "call.h"
#include "decode_pool.h"
#include "linger.h"
#include "metrics.h"
#include "npy.h"
#include "proto.h"
#include "secret.h"
#include "webroot.h"

#define MAX_SEGMENTS 8
/* JSON bodies larger than this are decoded on a decode-pool worker. */
#define DECODE_INLINE_MAX ((size_t)256 << 10)
#define DECODE_WORKERS 2
/* libmicrohttpd's per-connection memory, where it parses the request head:
 * room for a head at IPPC_MAX_REQUEST_HEAD with plenty to spare, so larger
 * heads up to about this size reach begin() and get a JSON 431. */
#define MHD_CONNECTION_MEMORY ((size_t)4 * IPPC_MAX_REQUEST_HEAD)
/* A chunked body's first buffer. */
#define CHUNKED_FIRST ((size_t)64 << 10)
/* A refused body is drained (read and forgotten) up to this much before its
 * connection is really closed (linger.h). */
#define LINGER_BYTES ((size_t)256 << 20)
/* Freeing a decoded tree this large on the MHD thread trims the heap. */
#define TRIM_AFTER ((size_t)16 << 20)

struct http_api {
    struct MHD_Daemon *daemon;
    hub *h;
    char *token;
    size_t max_body; /* JSON bodies (--max-body-mb) */
    size_t max_raw;  /* raw array bodies (--max-raw-mb) */
    int metrics_public;
    const webroot *files; /* the dashboard's static files, or NULL */
    budget *held;         /* every byte requests make us hold */
    budget own_held;      /* held, when the configuration gives none: no limit */
    size_t decode_cap;    /* most memory one JSON decode may use */
    decode_pool *decoder;
    linger *linger;
    atomic_int stopping;  /* no new suspensions */
    atomic_int suspended; /* connections we suspended and did not resume yet */
    /* request latency histogram (seconds), updated by the MHD thread */
    atomic_ullong lat_buckets[6];
    atomic_ullong lat_count;
    atomic_ullong lat_sum_us;
};

static const double LAT_BOUNDS[6] = {0.001, 0.01, 0.1, 1, 10, 1e300};

typedef enum phase {
    PHASE_HEAD = 0, /* begin() has not run */
    PHASE_BODY,     /* the body arrives (or is dropped) */
    PHASE_DECODING, /* suspended while a worker decodes the body */
    PHASE_DECODED,  /* resumed by the worker; the route runs next */
    PHASE_WAITING,  /* suspended until the hub wakes it */
    PHASE_WOKEN,
} phase;

typedef struct route_args {
    const char *params[MAX_SEGMENTS]; /* values of {param} segments, in order */
    int n;
} route_args;

typedef struct req_ctx req_ctx;
typedef enum MHD_Result (*route_fn)(req_ctx *ctx, const route_args *args);

/* A route is a call (operation: its operationId in call.c's table, which
 * says what body it takes) or a REST-only handler without a body (fn). */
typedef struct route {
    const char *method;
    const char *pattern;
    route_fn fn;
    const char *operation;
} route;

struct req_ctx {
    http_api *api;
    struct MHD_Connection *conn;
    int64_t started_us;
    /* from the raw request line */
    size_t uri_len;
    int nul_in_path, nul_in_query;
    /* begin()'s verdict */
    const route *route;
    const call_def *def; /* the route's call, or NULL */
    route_args args;     /* point into path */
    char *path;
    /* a static file (webroot.h) rather than a route */
    int is_file;
    webroot_dir file_dir;
    char file_rel[WEBROOT_MAX_PATH];
    int refused; /* answer `refusal` at the last call */
    ippc_error refusal;
    char allow[64];  /* Allow header of a 405 */
    int close_after; /* the refusal ends the connection (Connection: close) */
    int drop_body;   /* read body bytes are dropped, never held */
    size_t dropped;
    /* the body */
    int raw; /* application/octet-stream, or application/x-npy: */
    int npy; /* the body's .npy header goes to npy_head, its data to body */
    unsigned char *npy_head;
    size_t npy_head_len;
    int chunked;
    size_t max_body; /* this body's limit: the API's max_body or max_raw */
    char *body;
    size_t len, cap;
    budget_account held;    /* the body's bytes; cap: max_body */
    budget_account decoded; /* the decoded body and its arrays; cap: decode_cap */
    decode_job job;
    json_t *query; /* the query parameters (strings), taken on the MHD thread */
    /* the call, decoded here or by a decode worker */
    call call;
    int call_ready;
    phase phase;
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ------------------------------------------------------------- responses */

/* A JSON answer (body is consumed), with one extra header if name is set. */
static enum MHD_Result send_json_with(struct MHD_Connection *conn, unsigned int status,
                                      json_t *body, const char *name, const char *value)
{
    char *text = body ? jsonout_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        text = strdup("{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}");
    if (!text)
        return MHD_NO;
    size_t n = strlen(text);
    char *with_nl = realloc(text, n + 2);
    if (with_nl) {
        text = with_nl;
        text[n++] = '\n';
        text[n] = '\0';
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (name)
        MHD_add_response_header(resp, name, value);
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned int status, json_t *body)
{
    return send_json_with(conn, status, body, NULL, NULL);
}

static enum MHD_Result send_error(struct MHD_Connection *conn, const ippc_error *err)
{
    return send_json(conn, (unsigned int)http_status_for(err->code), ippc_error_json(err));
}

static enum MHD_Result fail(struct MHD_Connection *conn, const char *code, const char *fmt,
                            const char *arg)
{
    ippc_error err;
    ippc_error_set(&err, code, fmt, arg ? arg : "");
    return send_error(conn, &err);
}

/* begin()'s refusal, with the Allow header of a 405. */
static enum MHD_Result send_refusal(req_ctx *ctx)
{
    const ippc_error *err = &ctx->refusal;
    if (ctx->close_after)
        return send_json_with(ctx->conn, (unsigned int)http_status_for(err->code),
                              ippc_error_json(err), MHD_HTTP_HEADER_CONNECTION, "close");
    return send_json_with(ctx->conn, (unsigned int)http_status_for(err->code), ippc_error_json(err),
                          ctx->allow[0] ? MHD_HTTP_HEADER_ALLOW : NULL, ctx->allow);
}

static const char *header(req_ctx *ctx, const char *name);

/* A dashboard file (webroot.h): its bytes straight from the file
 * (libmicrohttpd sends them with sendfile and closes the fd), or 304 when
 * the browser's copy is current.  Every answer carries the validators, the
 * Content-Security-Policy and the other headers that keep the page to
 * itself.  The file is opened here, on the MHD thread: local files of a few
 * KiB, read by the kernel, not by this thread. */
static enum MHD_Result send_file(req_ctx *ctx)
{
    ippc_error err = {0};
    webroot_file f;
    if (webroot_open_file(ctx->api->files, ctx->file_dir, ctx->file_rel, &f, &err) < 0)
        return send_error(ctx->conn, &err);
    unsigned int status = MHD_HTTP_OK;
    struct MHD_Response *resp;
    if (webroot_not_modified(&f, header(ctx, MHD_HTTP_HEADER_IF_NONE_MATCH),
                             header(ctx, MHD_HTTP_HEADER_IF_MODIFIED_SINCE))) {
        close(f.fd);
        status = MHD_HTTP_NOT_MODIFIED;
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_fd64(f.size, f.fd);
        if (!resp)
            close(f.fd); /* given to the response only when one was made */
        else
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, f.content_type);
    }
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, f.etag);
    if (f.last_modified[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LAST_MODIFIED, f.last_modified);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "Content-Security-Policy", WEBROOT_CSP);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Cross-Origin-Opener-Policy", "same-origin");
    MHD_add_response_header(resp, "Cross-Origin-Resource-Policy", "same-origin");
    enum MHD_Result rc = MHD_queue_response(ctx->conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* ------------------------------------------------------------ parameters */

/* A query parameter; an empty one counts as absent. */
static const char *query(req_ctx *ctx, const char *key)
{
    const char *v = MHD_lookup_connection_value(ctx->conn, MHD_GET_ARGUMENT_KIND, key);
    return v && *v ? v : NULL;
}

static const char *header(req_ctx *ctx, const char *name)
{
    return MHD_lookup_connection_value(ctx->conn, MHD_HEADER_KIND, name);
}

/* The query parameters as an object of strings, for call_from_rest (which
 * may run on a decode worker, where the connection is not to be touched).
 * An empty value counts as absent; of a repeated key the first counts. */
static enum MHD_Result query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    json_t *obj = cls;
    /* Not checked as UTF-8: values are only compared, never echoed. */
    if (key && value && *value && !json_object_get(obj, key))
        json_object_set_new_nocheck(obj, key, json_string_nocheck(value));
    return MHD_YES;
}

static int query_take(req_ctx *ctx, ippc_error *err)
{
    if (ctx->query)
        return 0;
    if (!(ctx->query = json_object()))
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    MHD_get_connection_values(ctx->conn, MHD_GET_ARGUMENT_KIND, query_arg, ctx->query);
    return 0;
}

/* ------------------------------------------------------------------ bodies */

/* The body's text is no longer needed. */
static void body_text_free(req_ctx *ctx)
{
    bigmem_free(ctx->body);
    ctx->body = NULL;
    ctx->len = ctx->cap = 0;
    budget_account_release(&ctx->held);
}

/* A decoded body is no longer needed: what it held goes back to the budget,
 * and a big tree's pages to the system (jansson's small blocks fragment the
 * heap, so without a trim they would stay in the resident set). */
static void decoded_free(req_ctx *ctx, json_t *value)
{
    json_decref(value);
    size_t was = budget_account_held(&ctx->decoded);
    budget_account_release(&ctx->decoded);
    if (was >= TRIM_AFTER)
        malloc_trim(0);
}

/* The body as JSON (any value), decoded here (small bodies), charged to the
 * decoded account.  NULL when there is none; NULL + err when it is not JSON. */
static json_t *parse_body(req_ctx *ctx, ippc_error *err)
{
    if (ctx->len == 0)
        return NULL;
    ctx->job = (decode_job){.text = ctx->body, .len = ctx->len, .account = &ctx->decoded};
    int rc = decode_json_metered(&ctx->job, NULL);
    body_text_free(ctx);
    if (rc < 0) {
        *err = ctx->job.err;
        return NULL;
    }
    json_t *v = ctx->job.value;
    ctx->job.value = NULL;
    return v;
}

/* --------------------------------------------------------------- waiting */

/* Suspends and resumes are counted so that http_stop can tell when none is
 * left: libmicrohttpd must not stop with a connection suspended. */
static void suspend(req_ctx *ctx)
{
    atomic_fetch_add(&ctx->api->suspended, 1);
    MHD_suspend_connection(ctx->conn);
}

/* The last thing done with ctx on a thread other than MHD's: once resumed,
 * the connection may run and finish at any time. */
static void resume(req_ctx *ctx)
{
    http_api *api = ctx->api;
    struct MHD_Connection *conn = ctx->conn;
    atomic_fetch_sub(&api->suspended, 1);
    MHD_resume_connection(conn);
}

static void on_wake(void *arg)
{
    req_ctx *ctx = arg;
    ctx->phase = PHASE_WOKEN;
    resume(ctx);
}

static void on_registered(void *arg)
{
    req_ctx *ctx = arg;
    ctx->phase = PHASE_WAITING;
    suspend(ctx);
}

/* libmicrohttpd is done with a raw answer's bytes. */
static void raw_free(void *cls)
{
    hub_array *a = cls;
    hub_array_release(a);
    free(a);
}

static void add_array_headers(struct MHD_Response *resp, const nd_ref *ref)
{
    char shape[ND_MAX_DIMS * 21 + 1] = "";
    for (int i = 0; i < ref->ndim; i++)
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%zu", i ? "," : "",
                 ref->shape[i]);
    MHD_add_response_header(resp, "X-Ippc-Dtype", nd_dtype_name(ref->dtype));
    MHD_add_response_header(resp, "X-Ippc-Shape", shape);
}

/* One array (a pull of one target, or a gather), as raw bytes with
 * X-Ippc-Dtype/-Shape or as a .npy file.  The raw bytes are served from the
 * engine's result itself (or the gathered buffer, filled once), the .npy
 * file from its header and those bytes (binbody.h); either is released when
 * libmicrohttpd is done with it: no JSON, no copy.  NULL + *got 0 when the
 * request is not finished; NULL + *got -1 + err on an error. */
static struct MHD_Response *array_response(req_ctx *ctx, int *got, ippc_error *err)
{
    hub_array *a = calloc(1, sizeof *a);
    if (!a) {
        *got = -1;
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    *got = hub_request_array(ctx->api->h, ctx->call.wait_id, a, err);
    if (*got <= 0) {
        free(a);
        return NULL;
    }
    nd_ref ref = a->ref;
    struct MHD_Response *resp;
    if (ctx->call.answer_as == CALL_ANSWER_NPY) {
        resp = binbody_npy(a, err);
    } else {
        resp = MHD_create_response_from_buffer_with_free_callback_cls(a->len, (void *)a->data,
                                                                      raw_free, a);
        if (!resp)
            raw_free(a);
    }
    if (!resp) {
        *got = -1;
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            ctx->call.answer_as == CALL_ANSWER_NPY ? "application/x-npy"
                                                                   : "application/octet-stream");
    add_array_headers(resp, &ref);
    return resp;
}

/* A pull's per-engine values as multipart/mixed (binbody.h). */
static struct MHD_Response *multipart_response(req_ctx *ctx, int *got, ippc_error *err)
{
    hub_parts *p = calloc(1, sizeof *p);
    if (!p) {
        *got = -1;
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    *got = hub_request_parts(ctx->api->h, ctx->call.wait_id, p, err);
    if (*got <= 0) {
        free(p);
        return NULL;
    }
    char content_type[96];
    struct MHD_Response *resp =
        binbody_multipart(p, ctx->call.answer_as == CALL_ANSWER_MULTIPART_NPY, content_type,
                          sizeof content_type, err);
    if (!resp) {
        *got = -1;
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    return resp;
}

/* The binary answer of a finished pull or gather (call.answer_as).
 * Returns 0 (and *rc) when answered, an error included; 1 when the
 * request is not finished (then the answer is JSON). */
static int send_binary(req_ctx *ctx, enum MHD_Result *rc)
{
    ippc_error err = {0};
    int got = 0;
    int multipart = ctx->call.answer_as == CALL_ANSWER_MULTIPART ||
                    ctx->call.answer_as == CALL_ANSWER_MULTIPART_NPY;
    struct MHD_Response *resp =
        multipart ? multipart_response(ctx, &got, &err) : array_response(ctx, &got, &err);
    if (got == 0)
        return 1;
    if (!resp) {
        *rc = send_error(ctx->conn, &err);
        return 0;
    }
    char request[24];
    snprintf(request, sizeof request, "%llu", (unsigned long long)ctx->call.wait_id);
    MHD_add_response_header(resp, "X-Ippc-Request", request);
    *rc = MHD_queue_response(ctx->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return 0;
}

/* The answer of a call that waited, or needed not: call.c's, or the array's
 * bytes when the client asked for them and the request is done.  Then the
 * hub may let a request it kept for this answer go (call_answered). */
static enum MHD_Result answer_call(req_ctx *ctx)
{
    enum MHD_Result rc;
    if (ctx->call.answer_as && send_binary(ctx, &rc) == 0) {
        call_answered(ctx->api->h, &ctx->call, 1);
        return rc;
    }
    int status = 0;
    json_t *body = call_answer(ctx->api->h, &ctx->call, &status);
    /* Finished between the two looks: the bytes after all. */
    if (ctx->call.answer_as && status == MHD_HTTP_OK && send_binary(ctx, &rc) == 0) {
        json_decref(body);
        call_answered(ctx->api->h, &ctx->call, 1);
        return rc;
    }
    rc = send_json(ctx->conn, (unsigned int)status, body);
    call_answered(ctx->api->h, &ctx->call, status != MHD_HTTP_ACCEPTED);
    return rc;
}

/* Runs a decoded call: its hub calls, then its answer now or once the hub
 * wakes the connection.  While the controller stops, nothing waits. */
static enum MHD_Result run_call(req_ctx *ctx)
{
    http_api *api = ctx->api;
    int status = 0;
    json_t *body = NULL;
    int answered = call_start(api->h, &ctx->call, &status, &body);
    /* The body and its arrays are the hub's (or gone) now. */
    body_text_free(ctx);
    decoded_free(ctx, NULL);
    if (answered)
        return send_json(ctx->conn, (unsigned int)status, body);
    if (atomic_load(&api->stopping))
        return answer_call(ctx);
    if (call_wait(api->h, &ctx->call, on_wake, on_registered, ctx) == 0)
        return MHD_YES; /* suspended; handle() runs again when woken */
    return answer_call(ctx);
}

/* The call_rest of a request whose body, if any, is `body` (taken). */
static call_rest rest_input(req_ctx *ctx, json_t *body)
{
    const route_args *a = &ctx->args;
    unsigned path = ctx->def->path;
    int next = 0;
    call_rest in = {.operation = ctx->def->operation, .query = ctx->query, .body = body};
    if (path & CALL_P_TARGETS)
        in.targets = a->n > next ? a->params[next++] : NULL;
    if (path & CALL_P_ID)
        in.id = a->n > next ? a->params[next++] : NULL;
    if (path & CALL_P_NAME)
        in.name = a->n > next ? a->params[next++] : NULL;
    return in;
}

/* The body buffer (count items of dtype, checked) as blob of blobs: its
 * placeholder, or NULL + err. */
static json_t *body_blob_value(req_ctx *ctx, nd_dtype dtype, int ndim, const size_t *shape,
                               size_t count, ippc_blobs *blobs, ippc_error *err)
{
    size_t item = nd_dtype_size(dtype);
    unsigned char *data = (unsigned char *)ctx->body;
    if (data && ctx->cap > ctx->len) { /* a chunked body's buffer has slack */
        unsigned char *fit = realloc(data, ctx->len ? ctx->len : 1);
        if (fit) /* else data, still ours, is kept as it is */
            data = fit;
        /* cppcheck-suppress memleak ; false positive: fit, when not NULL, is
         * now data, which is returned in the array (or freed on error). */
    }
    if (!data && !(data = malloc(1))) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    ctx->body = NULL;
    ctx->len = ctx->cap = 0;
    long k = blobs_push(blobs, data, count * item);
    if (k < 0) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    return value_nd_placeholder(dtype, ndim, shape, (size_t)k);
}

/* A .npy body's array: dtype and shape from its header (npy_head); the
 * data (ctx->body) must be exactly what they need.  Big-endian data is
 * swapped in place.  0, or -1 + err (400: the header's fault or a length
 * that does not match it). */
static int npy_body_array(req_ctx *ctx, nd_dtype *dtype, int *ndim, size_t *shape, size_t *count,
                          ippc_error *err)
{
    npy_header h;
    if (npy_parse(ctx->npy_head, ctx->npy_head_len, &h, err) < 0)
        return -1;
    if (ctx->len != npy_data_bytes(&h))
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "npy body: the header says %zu items of '%s' (%zu bytes) but %zu "
                              "bytes follow it",
                              h.count, h.descr, npy_data_bytes(&h), ctx->len);
    if (h.big_endian)
        npy_swap((unsigned char *)ctx->body, h.count, nd_dtype_size(h.dtype));
    *dtype = h.dtype;
    *ndim = h.ndim;
    memcpy(shape, h.shape, sizeof h.shape[0] * (size_t)h.ndim);
    *count = h.count;
    return 0;
}

/* A raw body as one ndarray.  application/x-npy: dtype and shape from its
 * header.  application/octet-stream: from ?dtype=&shape=d0,d1 or
 * X-Ippc-Dtype / X-Ippc-Shape (default float64, 1-D).  The body buffer
 * becomes the blob: no copy.  NULL + err. */
static json_t *raw_body_value(req_ctx *ctx, ippc_blobs *blobs, ippc_error *err)
{
    size_t shape[ND_MAX_DIMS];
    int ndim = 0;
    size_t count = 1;
    nd_dtype npy_dtype = ND_FLOAT64;
    if (ctx->npy) {
        if (npy_body_array(ctx, &npy_dtype, &ndim, shape, &count, err) < 0)
            return NULL;
        return body_blob_value(ctx, npy_dtype, ndim, shape, count, blobs, err);
    }
    const char *dtype_s = query(ctx, "dtype") ? query(ctx, "dtype") : header(ctx, "X-Ippc-Dtype");
    const char *shape_s = query(ctx, "shape") ? query(ctx, "shape") : header(ctx, "X-Ippc-Shape");
    int dtype = nd_dtype_parse(dtype_s ? dtype_s : "float64");
    if (dtype < 0) {
        ippc_error_set(err, ERR_INVALID, "unknown dtype '%.32s'", dtype_s);
        return NULL;
    }
    size_t item = nd_dtype_size((nd_dtype)dtype);
    /* span: the product with zeros read as ones.  Bounding it (as value.c's
     * nd_ref_measure does for typed arrays) keeps a zero dimension from
     * letting any other dimension through, so every size stays writable as
     * JSON and computable by the engines. */
    size_t span = 1;
    if (shape_s && *shape_s) {
        const char *p = shape_s;
        while (*p) {
            char *end;
            errno = 0;
            unsigned long long d = strtoull(p, &end, 10);
            size_t dim = d ? (size_t)d : 1;
            if (end == p || errno || ndim == ND_MAX_DIMS || *p == '-' || d > SIZE_MAX ||
                dim > SIZE_MAX / sizeof(double) / span) {
                ippc_error_set(err, ERR_INVALID,
                               "bad shape '%.64s': up to %d sizes, d0,d1,..., whose product "
                               "fits in memory",
                               shape_s, ND_MAX_DIMS);
                return NULL;
            }
            shape[ndim++] = (size_t)d;
            span *= dim;
            count *= (size_t)d;
            p = *end == ',' ? end + 1 : end;
            if (*end && *end != ',') {
                ippc_error_set(err, ERR_INVALID, "bad shape '%.64s'", shape_s);
                return NULL;
            }
        }
    } else {
        if (ctx->len % item) {
            ippc_error_set(err, ERR_INVALID, "%zu bytes are not a whole number of %s items",
                           ctx->len, nd_dtype_name((nd_dtype)dtype));
            return NULL;
        }
        shape[ndim++] = ctx->len / item;
        count = shape[0];
    }
    if (count * item != ctx->len) {
        ippc_error_set(err, ERR_INVALID, "body has %zu bytes; dtype %s and that shape need %zu",
                       ctx->len, nd_dtype_name((nd_dtype)dtype), count * item);
        return NULL;
    }
    return body_blob_value(ctx, (nd_dtype)dtype, ndim, shape, count, blobs, err);
}

/* Every call route: the call was decoded (and its values converted) by a
 * decode worker, or is decoded here, from a raw array, a small JSON body or
 * none. */
static enum MHD_Result h_call(req_ctx *ctx, const route_args *a)
{
    (void)a;
    ippc_error err = {0};
    if (!ctx->call_ready) {
        ctx->call_ready = 1;
        if (query_take(ctx, &err) < 0)
            return send_error(ctx->conn, &err);
        int rc;
        if (ctx->raw) {
            ippc_blobs blobs;
            blobs_init(&blobs);
            json_t *skel = raw_body_value(ctx, &blobs, &err);
            if (!skel) {
                blobs_free(&blobs);
                return send_error(ctx->conn, &err);
            }
            call_rest in = rest_input(ctx, NULL);
            in.wire_value = skel;
            in.wire_blobs = &blobs;
            rc = call_from_rest(&ctx->call, &in, &err);
            blobs_free(&blobs);
        } else {
            json_t *body = ctx->def->body != CALL_BODY_NONE ? parse_body(ctx, &err) : NULL;
            if (!body && err.code[0])
                return send_error(ctx->conn, &err);
            call_rest in = rest_input(ctx, body);
            rc = call_from_rest(&ctx->call, &in, &err);
        }
        if (rc < 0)
            return send_error(ctx->conn, &err);
    }
    ctx->call.answer_as =
        ctx->def->kind == CALL_VIEW
            ? (int)call_answer_of(header(ctx, MHD_HTTP_HEADER_ACCEPT), ctx->def->op)
            : CALL_ANSWER_JSON;
    return run_call(ctx);
}

/* ------------------------------------------------------- REST-only routes */

static int parse_id(const char *s, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > max)
        return -1;
    *out = v;
    return 0;
}

static enum MHD_Result h_engine(req_ctx *ctx, const route_args *a)
{
    long long id;
    if (parse_id(a->params[0], INT32_MAX, &id) < 0)
        return fail(ctx->conn, ERR_NOT_FOUND, "no engine with id '%.64s'", a->params[0]);
    ippc_error err = {0};
    json_t *e = hub_engine(ctx->api->h, (int)id, &err);
    return e ? send_json(ctx->conn, MHD_HTTP_OK, e) : send_error(ctx->conn, &err);
}

static enum MHD_Result h_task_resubmit(req_ctx *ctx, const route_args *a)
{
    long long id;
    if (parse_id(a->params[0], INT64_MAX, &id) < 0 || id == 0)
        return fail(ctx->conn, ERR_NOT_FOUND, "no task with id '%.64s'", a->params[0]);
    ippc_error err = {0};
    json_t *out = hub_task_resubmit(ctx->api->h, (uint64_t)id, &err);
    return out ? send_json(ctx->conn, MHD_HTTP_ACCEPTED, out) : send_error(ctx->conn, &err);
}

static enum MHD_Result h_task_query(req_ctx *ctx, const route_args *a)
{
    (void)a;
    const char *engine_s = query(ctx, "engine"), *limit_s = query(ctx, "limit"),
               *cursor_s = query(ctx, "cursor"), *kind = query(ctx, "kind"),
               *request_s = query(ctx, "request");
    long long engine = -1, limit = 100, cursor = 0, request = 0;
    if ((engine_s && parse_id(engine_s, INT32_MAX, &engine) < 0) ||
        (limit_s && (parse_id(limit_s, 1000, &limit) < 0 || limit < 1)) ||
        (cursor_s && parse_id(cursor_s, INT64_MAX, &cursor) < 0) ||
        (request_s && (parse_id(request_s, INT64_MAX, &request) < 0 || request < 1)) ||
        (kind && strcmp(kind, "direct") != 0 && strcmp(kind, "balanced") != 0))
        return fail(ctx->conn, ERR_BAD_REQUEST,
                    "engine is an id, limit 1..1000, cursor a task id, request a request id, "
                    "kind direct or balanced%s",
                    NULL);
    const char *state = query(ctx, "state");
    static const char *states[] = {"pending", "running", "completed", "failed", "aborted", "lost"};
    int ok = !state;
    for (size_t i = 0; state && i < 6; i++)
        ok |= strcmp(state, states[i]) == 0;
    if (!ok)
        return fail(ctx->conn, ERR_BAD_REQUEST,
                    "state is one of pending running completed failed aborted lost%s", NULL);
    ippc_error err = {0};
    hub_task_filter filter = {.state = state,
                              .kind = kind,
                              .request = (uint64_t)request,
                              .engine = (int)engine,
                              .tag = query(ctx, "tag"),
                              .since = query(ctx, "since"),
                              .limit = (size_t)limit,
                              .cursor = (uint64_t)cursor};
    json_t *out = hub_task_list(ctx->api->h, &filter, &err);
    return out ? send_json(ctx->conn, MHD_HTTP_OK, out) : send_error(ctx->conn, &err);
}

static enum MHD_Result h_task_purge(req_ctx *ctx, const route_args *a)
{
    (void)a;
    ippc_error err = {0};
    json_t *out = hub_task_purge(ctx->api->h, query(ctx, "before"), &err);
    return out ? send_json(ctx->conn, MHD_HTTP_OK, out) : send_error(ctx->conn, &err);
}

/* Prometheus text exposition. */
static enum MHD_Result h_metrics(req_ctx *ctx, const route_args *a)
{
    (void)a;
    char *text = NULL;
    size_t len = 0;
    hub_metrics(ctx->api->h, &text, &len);
    http_api *api = ctx->api;
    static const char *const les[6] = {"0.001", "0.01", "0.1", "1", "10", "+Inf"};
    uint64_t buckets[6];
    for (int i = 0; i < 6; i++)
        buckets[i] = atomic_load(&api->lat_buckets[i]);
    metrics_text m;
    metrics_adopt(&m, text, len);
    metrics_histogram(&m, "ippc_http_request_seconds", "REST request latency, arrival to answer.",
                      les, buckets, 6, (double)atomic_load(&api->lat_sum_us) / 1e6,
                      atomic_load(&api->lat_count));
    metrics_family(&m, "ippc_held_bytes", "gauge",
                   "Bytes clients make the controller hold (--max-held-mb).");
    metrics_printf(&m, "ippc_held_bytes %zu\n", budget_used(api->held));
    metrics_family(&m, "ippc_held_refused_total", "counter",
                   "Requests refused for the memory budget.");
    metrics_printf(&m, "ippc_held_refused_total %llu\n",
                   (unsigned long long)atomic_load(&api->held->refused));
    text = metrics_take(&m, &len);
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, text ? text : (char *)"", text ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    enum MHD_Result rc = MHD_queue_response(ctx->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

#define ROUTE(m, p, fn)                                                                            \
    {                                                                                              \
        m, p, fn, NULL                                                                             \
    }
/* A call (call.h), named by its operationId. */
#define CALL_ROUTE(m, p, operation)                                                                \
    {                                                                                              \
        m, p, h_call, operation                                                                    \
    }

static const route routes[] = {
    CALL_ROUTE("POST", "/api/v1/tasks", "submitTasks"),
    ROUTE("GET", "/api/v1/tasks", h_task_query),
    ROUTE("DELETE", "/api/v1/tasks", h_task_purge),
    CALL_ROUTE("GET", "/api/v1/tasks/{id}", "getTask"),
    CALL_ROUTE("DELETE", "/api/v1/tasks/{id}", "abortTask"),
    ROUTE("POST", "/api/v1/tasks/{id}/resubmit", h_task_resubmit),
    CALL_ROUTE("POST", "/api/v1/map", "map"),
    CALL_ROUTE("GET", "/api/v1/queue", "queueStatus"),
    ROUTE("GET", "/metrics", h_metrics),
    CALL_ROUTE("GET", "/api/v1/info", "getInfo"),
    CALL_ROUTE("GET", "/api/v1/engines", "listEngines"),
    ROUTE("GET", "/api/v1/engines/{id}", h_engine),
    CALL_ROUTE("POST", "/api/v1/views/{targets}/execute", "execute"),
    CALL_ROUTE("POST", "/api/v1/views/{targets}/run", "run"),
    CALL_ROUTE("PUT", "/api/v1/views/{targets}/vars/{name}", "pushVar"),
    CALL_ROUTE("GET", "/api/v1/views/{targets}/vars/{name}", "pullVar"),
    CALL_ROUTE("POST", "/api/v1/views/{targets}/push", "push"),
    CALL_ROUTE("POST", "/api/v1/views/{targets}/pull", "pull"),
    CALL_ROUTE("POST", "/api/v1/views/{targets}/scatter", "scatter"),
    CALL_ROUTE("GET", "/api/v1/views/{targets}/gather/{name}", "gather"),
    CALL_ROUTE("POST", "/api/v1/views/{targets}/apply", "apply"),
    CALL_ROUTE("POST", "/api/v1/views/{targets}/load", "load"),
    CALL_ROUTE("POST", "/api/v1/views/{targets}/reset", "reset"),
    CALL_ROUTE("POST", "/api/v1/views/{targets}/interrupt", "interrupt"),
    CALL_ROUTE("GET", "/api/v1/views/{targets}/vars", "listVars"),
    CALL_ROUTE("DELETE", "/api/v1/views/{targets}/vars/{name}", "deleteVar"),
    CALL_ROUTE("GET", "/api/v1/requests/{id}", "getRequest"),
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

void http_print_routes(FILE *out)
{
    for (size_t i = 0; i < N_ROUTES; i++)
        fprintf(out, "%s %s\n", routes[i].method, routes[i].pattern);
    /* The dashboard's files (file_admit), as the spec names them. */
    fprintf(out, "GET /\nGET /sdk/{file}\n");
}

/* Matches url against pattern segment by segment; {x} segments capture into
 * args, pointing into buf (a writable copy of url). */
static int route_match(const char *pattern, char *buf, route_args *args)
{
    args->n = 0;
    const char *p = pattern;
    char *u = buf;
    while (*p && *u) {
        if (*p != '/' || *u != '/')
            return 0;
        p++;
        u++;
        const char *pend = strchr(p, '/');
        size_t plen = pend ? (size_t)(pend - p) : strlen(p);
        char *uend = strchr(u, '/');
        size_t ulen = uend ? (size_t)(uend - u) : strlen(u);
        if (plen >= 2 && p[0] == '{') {
            if (ulen == 0 || args->n >= MAX_SEGMENTS)
                return 0;
            args->params[args->n++] = u;
        } else if (plen != ulen || strncmp(p, u, plen) != 0) {
            return 0;
        }
        p += plen;
        u += ulen;
    }
    if (*p || *u)
        return 0;
    /* Terminate the captured segments in place. */
    for (char *c = buf; *c; c++)
        if (*c == '/')
            *c = '\0';
    return 1;
}

/* The route for url and method (ctx->route, ctx->args), or a refusal: 404,
 * or 405 with the methods the path has in ctx->allow. */
static int route_find(req_ctx *ctx, const char *url, const char *method)
{
    size_t ulen = strlen(url);
    ctx->path = malloc(ulen + 1);
    if (!ctx->path)
        return ippc_error_set(&ctx->refusal, ERR_OVERLOADED, "out of memory");
    for (size_t i = 0; i < N_ROUTES; i++) {
        route_args args;
        memcpy(ctx->path, url, ulen + 1);
        if (!route_match(routes[i].pattern, ctx->path, &args))
            continue;
        if (strcmp(routes[i].method, method) == 0) {
            ctx->route = &routes[i];
            ctx->def = routes[i].operation ? call_def_rest(routes[i].operation) : NULL;
            assert(!routes[i].operation || ctx->def); /* every call route names a call */
            ctx->args = args;
            return 0;
        }
        size_t used = strlen(ctx->allow);
        snprintf(ctx->allow + used, sizeof ctx->allow - used, "%s%s", used ? ", " : "",
                 routes[i].method);
    }
    if (ctx->allow[0])
        return ippc_error_set(&ctx->refusal, ERR_METHOD,
                              "method %.16s is not allowed on this path (it takes %s)", method,
                              ctx->allow);
    return ippc_error_set(&ctx->refusal, ERR_NOT_FOUND, "no such path: %.200s", url);
}

/* Authorization: Bearer <token>.  RFC 7235: the scheme is case-insensitive
 * and one or more spaces separate it from the token. */
static int authorized(req_ctx *ctx)
{
    const char *h = header(ctx, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h)
        return 0;
    while (*h == ' ')
        h++;
    if (strncasecmp(h, "Bearer", 6) != 0 || h[6] != ' ')
        return 0;
    h += 6;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    char given[256];
    if (n == 0 || n >= sizeof given)
        return 0;
    memcpy(given, h, n);
    given[n] = '\0';
    return secret_equal(given, ctx->api->token);
}

static double mib(size_t n)
{
    return (double)n / (1024.0 * 1024.0);
}

/* 413 for a body of mib_given MiB (0: not known yet, a chunked one) over
 * its limit, naming the option that sets it.  -1. */
static int body_too_large(req_ctx *ctx, double mib_given)
{
    http_api *api = ctx->api;
    const char *option = ctx->raw ? "--max-raw-mb" : "--max-body-mb";
    size_t limit = ctx->raw ? api->max_raw : api->max_body;
    if (ctx->max_body < limit)
        option = "--max-held-mb";
    char size[48] = "";
    if (mib_given > 0)
        snprintf(size, sizeof size, "of %.1f MiB ", mib_given);
    return ippc_error_set(&ctx->refusal, ERR_TOO_LARGE,
                          "%s body %sis over the limit of %.1f MiB (%s)%s",
                          ctx->raw ? "raw array" : "request", size, mib(ctx->max_body), option,
                          ctx->raw ? "" : "; send arrays as application/octet-stream");
}

/* What the body of an admitted request needs: its buffer, sized and charged
 * now when Content-Length tells the size.  0, or -1 + ctx->refusal. */
static int body_admit(req_ctx *ctx, const char *transfer_encoding, const char *content_length)
{
    http_api *api = ctx->api;
    ippc_error *err = &ctx->refusal;
    int takes_body = ctx->def && ctx->def->body != CALL_BODY_NONE;
    /* libmicrohttpd has checked that Content-Length is a number that fits 64
     * bits. */
    unsigned long long n = content_length ? strtoull(content_length, NULL, 10) : 0;
    if (takes_body) {
        /* A type no body was sent with is not judged (a raw one still means
         * an empty array). */
        call_media media =
            call_media_of(header(ctx, MHD_HTTP_HEADER_CONTENT_TYPE), ctx->def->raw_ok, err);
        if (media == CALL_MEDIA_UNSUPPORTED && (transfer_encoding || n > 0))
            return -1;
        ctx->raw = media == CALL_MEDIA_RAW || media == CALL_MEDIA_NPY;
        ctx->npy = media == CALL_MEDIA_NPY;
    }
    /* A body never passes the whole budget: past it, it is too large, not
     * a matter of waiting until others are done. */
    ctx->max_body = ctx->raw ? api->max_raw : api->max_body;
    if (api->held->limit && ctx->max_body > api->held->limit)
        ctx->max_body = api->held->limit;
    ctx->held.limit = ctx->max_body; /* nothing is charged yet */
    if (transfer_encoding) {         /* chunked: the size is known at the end only */
        ctx->chunked = 1;
        ctx->drop_body = !takes_body;
        return 0;
    }
    if (!content_length)
        return 0;
    if (n > ctx->max_body)
        return body_too_large(ctx, (double)n / (1024.0 * 1024.0));
    if (!takes_body) {
        ctx->drop_body = 1;
        return 0;
    }
    if (n == 0)
        return 0;
    if (budget_take(&ctx->held, (size_t)n, "request body", err) < 0)
        return -1;
    ctx->body = bigmem_alloc((size_t)n);
    if (!ctx->body) {
        budget_give(&ctx->held, (size_t)n);
        return ippc_error_set(err, ERR_OVERLOADED,
                              "cannot allocate %.1f MiB for the request body; try again later",
                              (double)n / (1024.0 * 1024.0));
    }
    ctx->cap = (size_t)n;
    return 0;
}

/* A dashboard file's request: the path must be one webroot_parse takes (the
 * file itself is opened when the request is answered); a body is dropped.
 * 0, or -1 + ctx->refusal. */
static int file_admit(req_ctx *ctx, const char *url, const char *method, const char *te)
{
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        snprintf(ctx->allow, sizeof ctx->allow, "GET, HEAD");
        return ippc_error_set(&ctx->refusal, ERR_METHOD,
                              "method %.16s is not allowed on a dashboard file (it takes GET, "
                              "HEAD)",
                              method);
    }
    if (webroot_parse(url, &ctx->file_dir, ctx->file_rel, sizeof ctx->file_rel, &ctx->refusal) < 0)
        return -1;
    ctx->is_file = 1;
    return body_admit(ctx, te, header(ctx, MHD_HTTP_HEADER_CONTENT_LENGTH));
}

/* Everything about a request that its head tells.  0 if admitted; -1 with
 * ctx->refusal otherwise. */
static int admit(req_ctx *ctx, const char *url, const char *method, const char *version)
{
    ippc_error *err = &ctx->refusal;
    size_t line = strlen(method) + 1 + ctx->uri_len + 1 + strlen(version);
    if (line > IPPC_MAX_REQUEST_LINE)
        return ippc_error_set(err, ERR_URI_TOO_LONG,
                              "the request line has %zu bytes; the limit is %d", line,
                              IPPC_MAX_REQUEST_LINE);
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(ctx->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if (info && info->header_size > IPPC_MAX_REQUEST_HEAD)
        return ippc_error_set(err, ERR_HEADERS_TOO_LARGE,
                              "the request head has %zu bytes; the limit is %d", info->header_size,
                              IPPC_MAX_REQUEST_HEAD);
    /* libmicrohttpd unescapes %00 into a NUL that ends the path (or value):
     * "vars/a%00b" would name "a". */
    if (ctx->nul_in_path)
        return ippc_error_set(err, ERR_BAD_REQUEST, "path contains a NUL byte");
    if (ctx->nul_in_query)
        return ippc_error_set(err, ERR_BAD_REQUEST, "query contains a NUL byte");
    /* libmicrohttpd reads a body of any other coding until the connection
     * ends. */
    const char *te = header(ctx, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    if (te && strcasecmp(te, "chunked") != 0)
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "Transfer-Encoding '%.64s' is not supported: send Content-Length "
                              "or chunked",
                              te);
    if (strcmp(url, "/ws") == 0 || strcmp(url, "/engine") == 0) {
        /* The acceptor hands a connection to libwebsockets or to this
         * handler by its first request; a WebSocket endpoint reached here
         * came after HTTP requests on a kept-alive connection. */
        ctx->close_after = 1;
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "%s takes a WebSocket upgrade as the first request of a "
                              "connection; this one carried HTTP requests before: open a new "
                              "connection for it",
                              url);
    }
    int is_api = strncmp(url, "/api/", 5) == 0 ||
                 (strcmp(url, "/metrics") == 0 && !ctx->api->metrics_public);
    if (is_api && !authorized(ctx))
        return ippc_error_set(err, ERR_UNAUTHORIZED,
                              "missing or wrong token: send 'Authorization: Bearer <token>' (the "
                              "token is in ippc-client.json)");
    /* Everything outside /api and /metrics is a dashboard file: no token (the
     * page asks for it), GET and HEAD only. */
    if (!is_api && strncmp(url, "/api/", 5) != 0 && strcmp(url, "/metrics") != 0 && ctx->api->files)
        return file_admit(ctx, url, method, te);
    if (route_find(ctx, url, method) < 0)
        return -1;
    return body_admit(ctx, te, header(ctx, MHD_HTTP_HEADER_CONTENT_LENGTH));
}

/* The first call, before any body byte is read. */
static enum MHD_Result begin(req_ctx *ctx, const char *url, const char *method, const char *version)
{
    ctx->phase = PHASE_BODY;
    if (admit(ctx, url, method, version) == 0)
        return MHD_YES;
    ctx->refused = 1;
    ctx->drop_body = 1;
    const char *length = header(ctx, MHD_HTTP_HEADER_CONTENT_LENGTH);
    int has_body = header(ctx, MHD_HTTP_HEADER_TRANSFER_ENCODING) ||
                   (length && strtoull(length, NULL, 10) > 0);
    if (!has_body)
        return MHD_YES; /* answered at its last call: the connection stays */
    /* Answered now, libmicrohttpd reads none of the body and closes the
     * connection after the answer.  The linger thread keeps a duplicate of
     * the socket and forgets what the client still sends, so a client that
     * writes its whole body before reading gets the answer, not a reset. */
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(ctx->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd = info ? fcntl(info->connect_fd, F_DUPFD_CLOEXEC, 0) : -1;
    enum MHD_Result rc = send_refusal(ctx);
    if (fd >= 0)
        linger_add(ctx->api->linger, fd);
    return rc;
}

/* Room for n more body bytes (a chunked body), charged first.  0, or -1 +
 * ctx->refusal. */
static int body_grow(req_ctx *ctx, size_t n)
{
    ippc_error *err = &ctx->refusal;
    if (!ctx->chunked) /* libmicrohttpd passes no more than Content-Length */
        return ippc_error_set(err, ERR_BAD_REQUEST, "more body than Content-Length says");
    size_t max = ctx->max_body;
    if (n > max - ctx->len)
        return body_too_large(ctx, 0);
    size_t cap = ctx->cap ? ctx->cap : CHUNKED_FIRST;
    while (cap < ctx->len + n)
        cap = cap > max / 2 ? max : cap * 2;
    if (cap > max)
        cap = max;
    if (budget_take(&ctx->held, cap - ctx->cap, "request body", err) < 0)
        return -1;
    char *body = realloc(ctx->body, cap);
    if (!body) {
        budget_give(&ctx->held, cap - ctx->cap);
        return ippc_error_set(err, ERR_OVERLOADED,
                              "cannot allocate the request body; try again later");
    }
    ctx->body = body;
    ctx->cap = cap;
    return 0;
}

/* A .npy body's header bytes, as they arrive, go to their own small buffer
 * (npy_header_size says how many there are), so that the body buffer holds
 * only the data and becomes the array without a copy.  Takes what belongs
 * to the header off the front of *data. */
static void npy_head_take(req_ctx *ctx, const char **data, size_t *n)
{
    for (;;) {
        size_t want = npy_header_size(ctx->npy_head, ctx->npy_head_len);
        if (ctx->npy_head_len >= want || *n == 0)
            return;
        if (!ctx->npy_head && !(ctx->npy_head = malloc(NPY_PREAMBLE_V2 + NPY_DICT_MAX)))
            return; /* the header is then short: npy_parse refuses it */
        /* npy_header_size never asks for more than the buffer holds. */
        assert(want <= NPY_PREAMBLE_V2 + NPY_DICT_MAX);
        size_t take = want - ctx->npy_head_len < *n ? want - ctx->npy_head_len : *n;
        memcpy(ctx->npy_head + ctx->npy_head_len, *data, take);
        ctx->npy_head_len += take;
        *data += take;
        *n -= take;
    }
}

static enum MHD_Result body_chunk(req_ctx *ctx, const char *data, size_t n)
{
    if (!ctx->drop_body && n > ctx->cap - ctx->len && body_grow(ctx, n) < 0) {
        body_text_free(ctx);
        ctx->refused = 1;
        ctx->drop_body = 1;
    }
    if (ctx->drop_body) {
        /* A refused (or bodiless) request: read and forget.  A chunked body
         * could go on forever, so past the body limit the connection is
         * closed, unanswered. */
        ctx->dropped += n;
        return ctx->dropped > ctx->max_body ? MHD_NO : MHD_YES;
    }
    if (ctx->npy)
        npy_head_take(ctx, &data, &n);
    memcpy(ctx->body + ctx->len, data, n);
    ctx->len += n;
    return MHD_YES;
}

/* ---------------------------------------------------------------- decoding */

/* On the worker, after a good parse: the text goes, the call is decoded
 * and a direct-view call's values converted here, and its tree goes too. */
static int decode_then(decode_job *job)
{
    req_ctx *ctx = job->arg;
    body_text_free(ctx);
    json_t *value = job->value;
    job->value = NULL;
    call_rest in = rest_input(ctx, value);
    int rc = call_from_rest(&ctx->call, &in, &job->err);
    if (rc == 0 && ctx->def->kind == CALL_VIEW) {
        rc = call_prepare(&ctx->call, &job->err);
        /* The tree is gone; the arrays made from it stay until the submit. */
        budget_account_release(&ctx->decoded);
        if (rc == 0 && budget_take(&ctx->decoded, hub_prepared_bytes(ctx->call.prepared),
                                   "the request's arrays", &job->err) < 0)
            rc = -1;
    }
    return rc;
}

static void decode_done(decode_job *job)
{
    req_ctx *ctx = job->arg;
    ctx->phase = PHASE_DECODED;
    resume(ctx);
}

static enum MHD_Result decode_start(req_ctx *ctx)
{
    http_api *api = ctx->api;
    if (atomic_load(&api->stopping))
        return fail(ctx->conn, ERR_UNAVAILABLE, "the controller is stopping%s", NULL);
    ctx->job = (decode_job){.text = ctx->body,
                            .len = ctx->len,
                            .account = &ctx->decoded,
                            .then = decode_then,
                            .done = decode_done,
                            .arg = ctx};
    ctx->phase = PHASE_DECODING;
    suspend(ctx);
    if (decode_pool_submit(api->decoder, &ctx->job) < 0) {
        ctx->job.failed = 1;
        ippc_error_set(&ctx->job.err, ERR_UNAVAILABLE, "the controller is stopping");
        decode_done(&ctx->job);
    }
    return MHD_YES;
}

static enum MHD_Result decoded(req_ctx *ctx)
{
    ctx->phase = PHASE_BODY;
    if (ctx->job.failed) {
        call_clear(&ctx->call);
        decoded_free(ctx, ctx->job.value);
        ctx->job.value = NULL;
        return send_error(ctx->conn, &ctx->job.err);
    }
    ctx->call_ready = 1;
    return ctx->route->fn(ctx, &ctx->args);
}

/* The last call of a request that is not suspended: the body is complete. */
static enum MHD_Result body_complete(req_ctx *ctx)
{
    if (ctx->refused)
        return send_refusal(ctx);
    if (ctx->is_file)
        return send_file(ctx);
    if (ctx->def && ctx->def->body != CALL_BODY_NONE && !ctx->raw && ctx->len > DECODE_INLINE_MAX) {
        ippc_error err = {0};
        if (query_take(ctx, &err) < 0)
            return send_error(ctx->conn, &err);
        return decode_start(ctx);
    }
    return ctx->route->fn(ctx, &ctx->args);
}

/* ------------------------------------------------------------- the daemon */

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    (void)cls;
    (void)conn;
    req_ctx *ctx = *con_cls;
    if (!ctx)
        return MHD_NO; /* uri_logger could not allocate it */
    switch (ctx->phase) {
    case PHASE_HEAD: return begin(ctx, url, method, version);
    case PHASE_BODY:
        if (*upload_data_size) {
            size_t n = *upload_data_size;
            *upload_data_size = 0;
            return body_chunk(ctx, upload_data, n);
        }
        return body_complete(ctx);
    case PHASE_DECODED: return decoded(ctx);
    case PHASE_WOKEN: return answer_call(ctx);
    case PHASE_DECODING:
    case PHASE_WAITING: return MHD_YES; /* a spurious call while suspended */
    }
    return MHD_NO;
}

/* Called with the raw request line's URI, before libmicrohttpd splits off
 * the query and unescapes it: makes the request's context (*con_cls). */
static void *uri_logger(void *cls, const char *uri, struct MHD_Connection *conn)
{
    http_api *api = cls;
    req_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    ctx->api = api;
    ctx->conn = conn;
    ctx->started_us = now_us();
    ctx->uri_len = strlen(uri);
    const char *query_start = strchr(uri, '?');
    for (const char *p = strstr(uri, "%00"); p; p = strstr(p + 3, "%00")) {
        if (query_start && p > query_start)
            ctx->nul_in_query = 1;
        else
            ctx->nul_in_path = 1;
    }
    ctx->max_body = api->max_body; /* body_admit knows whether it is raw */
    budget_account_init(&ctx->held, api->held, api->max_body);
    budget_account_init(&ctx->decoded, api->held, api->decode_cap);
    return ctx;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    req_ctx *ctx = *con_cls;
    if (!ctx)
        return;
    double seconds = (double)(now_us() - ctx->started_us) / 1e6;
    http_api *api = ctx->api;
    for (int i = 0; i < 6; i++)
        if (seconds <= LAT_BOUNDS[i])
            atomic_fetch_add(&api->lat_buckets[i], 1);
    atomic_fetch_add(&api->lat_count, 1);
    atomic_fetch_add(&api->lat_sum_us, (unsigned long long)(seconds * 1e6));
    call_answered(api->h, &ctx->call, 0); /* kept for an answer never given */
    body_text_free(ctx);
    json_decref(ctx->job.value);
    json_decref(ctx->query);
    free(ctx->npy_head);
    call_clear(&ctx->call);
    budget_account_release(&ctx->decoded);
    free(ctx->path);
    free(ctx);
    *con_cls = NULL;
}

http_api *http_start(hub *h, const http_config *cfg, ippc_error *err)
{
    http_api *api = calloc(1, sizeof *api);
    if (!api) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    api->h = h;
    api->token = strdup(cfg->token);
    api->max_body = cfg->max_body ? cfg->max_body : (size_t)64 << 20;
    api->max_raw = cfg->max_raw ? cfg->max_raw : api->max_body;
    api->metrics_public = cfg->metrics_public;
    api->files = cfg->files;
    budget_init(&api->own_held, 0);
    api->held = cfg->held ? cfg->held : &api->own_held;
    /* A JSON tree takes 20-40 times its text (a json_t per number): one
     * decode may use a quarter of what the controller may hold (main.c
     * leaves out the part of the default budget that is for raw arrays). */
    api->decode_cap = cfg->decode_cap    ? cfg->decode_cap
                      : api->held->limit ? api->held->limit / 4
                                         : (size_t)1 << 30;
    if (api->decode_cap < DECODE_INLINE_MAX * 64)
        api->decode_cap = DECODE_INLINE_MAX * 64;
    api->decoder = decode_pool_start(DECODE_WORKERS, err);
    api->linger = api->decoder ? linger_start(LINGER_BYTES, err) : NULL;
    if (!api->linger) {
        decode_pool_stop(api->decoder);
        free(api->token);
        free(api);
        return NULL;
    }
    unsigned int flags = MHD_USE_NO_LISTEN_SOCKET | MHD_USE_INTERNAL_POLLING_THREAD |
                         MHD_USE_EPOLL | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME;
    api->daemon = MHD_start_daemon(flags, 0, NULL, NULL, handle, api, MHD_OPTION_NOTIFY_COMPLETED,
                                   on_completed, NULL, MHD_OPTION_URI_LOG_CALLBACK, uri_logger, api,
                                   MHD_OPTION_CONNECTION_MEMORY_LIMIT, MHD_CONNECTION_MEMORY,
                                   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
                                   MHD_OPTION_CONNECTION_LIMIT, (unsigned int)4096, MHD_OPTION_END);
    if (!api->daemon) {
        ippc_error_set(err, ERR_INTERNAL, "cannot start the HTTP daemon");
        decode_pool_stop(api->decoder);
        linger_stop(api->linger);
        free(api->token);
        free(api);
        return NULL;
    }
    return api;
}

void http_add_connection(http_api *api, int fd, const struct sockaddr *addr, socklen_t len)
{
    /* MHD closes the socket itself when it cannot take it. */
    (void)MHD_add_connection(api->daemon, fd, addr, len);
}

void http_stop(http_api *api)
{
    if (!api)
        return;
    /* Every suspended connection must be resumed before the daemon stops.
     * Decodes end first (resuming their connections, which then wait for
     * nothing); a handler that read `stopping` just before it was set may
     * still suspend once, after a wake-up: hence the loop. */
    atomic_store(&api->stopping, 1);
    decode_pool_stop(api->decoder);
    for (int i = 0; i < 500; i++) {
        hub_wake_all(api->h);
        if (atomic_load(&api->suspended) == 0)
            break;
        usleep(10 * 1000);
    }
    usleep(100 * 1000);
    MHD_stop_daemon(api->daemon);
    linger_stop(api->linger);
    free(api->token);
    free(api);
}
