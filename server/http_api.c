/* http_api.c — REST routes (see http_api.h).
 *
 * Life of a request: MHD calls handle() once with no body, then once per body
 * chunk (appended to ctx->body, capped at max_body), then once more with
 * *upload_data_size == 0: that call routes.  A direct-view call submits to the
 * hub and, unless ?block=false, waits: hub_wait registers a wake-up and
 * suspends the connection under the hub lock, so a completion cannot slip in
 * between.  The wake-up resumes the connection; MHD calls handle() again and
 * the answer is built from the hub.
 */
#include "http_api.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <microhttpd.h>

#include "secret.h"

#define MAX_SEGMENTS 8

struct http_api {
    struct MHD_Daemon *daemon;
    hub *h;
    char *token;
    size_t max_body;
    int metrics_public;
    /* request latency histogram (seconds), updated by the MHD thread */
    atomic_ullong lat_buckets[6];
    atomic_ullong lat_count;
    atomic_ullong lat_sum_us;
};

static const double LAT_BOUNDS[6] = {0.001, 0.01, 0.1, 1, 10, 1e300};

typedef enum ctx_state { CTX_NEW = 0, CTX_SUSPENDED, CTX_WOKEN } ctx_state;

typedef struct req_ctx {
    http_api *api;
    struct MHD_Connection *conn;
    char *body;
    size_t len, cap;
    int too_large;
    ctx_state state;
    uint64_t request_id;
    int raw; /* answer with the array's bytes (Accept: application/octet-stream) */
    int64_t started_us;
    uint64_t task_id; /* waiting on a balanced task instead of a request */
} req_ctx;

typedef struct route_args {
    const char *params[MAX_SEGMENTS]; /* values of {param} segments, in order */
    int n;
} route_args;

typedef enum MHD_Result (*route_fn)(req_ctx *ctx, const route_args *args);

typedef struct route {
    const char *method;
    const char *pattern;
    route_fn fn;
} route;

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ------------------------------------------------------------- responses */

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned int status, json_t *body) {
    char *text = body ? jsonout_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        text = strdup("{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}");
    if (!text)
        return MHD_NO;
    size_t n = strlen(text);
    text[n] = '\0';
    char *with_nl = realloc(text, n + 2);
    if (with_nl) {
        text = with_nl;
        text[n++] = '\n';
        text[n] = '\0';
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, const ippc_error *err) {
    return send_json(conn, (unsigned int)http_status_for(err->code), ippc_error_json(err));
}

static enum MHD_Result fail(struct MHD_Connection *conn, const char *code, const char *fmt,
                            const char *arg) {
    ippc_error err;
    ippc_error_set(&err, code, fmt, arg ? arg : "");
    return send_error(conn, &err);
}

/* ------------------------------------------------------------ parameters */

/* A query parameter; an empty one counts as absent. */
static const char *query(req_ctx *ctx, const char *key) {
    const char *v = MHD_lookup_connection_value(ctx->conn, MHD_GET_ARGUMENT_KIND, key);
    return v && *v ? v : NULL;
}

static const char *header(req_ctx *ctx, const char *name) {
    return MHD_lookup_connection_value(ctx->conn, MHD_HEADER_KIND, name);
}

static int is_octet_stream(const char *content_type) {
    return content_type && strncasecmp(content_type, "application/octet-stream", 24) == 0;
}

/* Parses ?key=SECONDS; -1 if absent; -2 if invalid. */
static double query_seconds(req_ctx *ctx, const char *key) {
    const char *v = query(ctx, key);
    if (!v)
        return -1;
    char *end;
    errno = 0;
    double s = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(s) || s < 0 || s > 86400.0 * 365)
        return -2;
    return s;
}

/* ?block= : 1 (default), 0, or -1 if not a boolean. */
static int query_block(req_ctx *ctx) {
    const char *v = query(ctx, "block");
    if (!v || strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
        return 1;
    if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
        return 0;
    return -1;
}

static int query_format(req_ctx *ctx, value_format *fmt) {
    const char *v = query(ctx, "format");
    if (!v || strcmp(v, "list") == 0)
        *fmt = VALUE_FORMAT_LIST;
    else if (strcmp(v, "typed") == 0)
        *fmt = VALUE_FORMAT_TYPED;
    else
        return -1;
    return 0;
}

/* Parses the body as JSON; any_value allows non-object bodies (PUT vars). */
static json_t *parse_body(req_ctx *ctx, int any_value, ippc_error *err) {
    if (ctx->len == 0) {
        ippc_error_set(err, ERR_BAD_REQUEST, "request body is empty; expected JSON");
        return NULL;
    }
    json_error_t jerr;
    json_t *v = json_loadb(ctx->body, ctx->len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!v) {
        ippc_error_set(err, ERR_BAD_REQUEST, "malformed JSON at line %d, column %d: %s",
                       jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!any_value && !json_is_object(v)) {
        json_decref(v);
        ippc_error_set(err, ERR_BAD_REQUEST, "request body must be a JSON object");
        return NULL;
    }
    return v;
}

/* --------------------------------------------------------------- waiting */

static void on_wake(void *arg) {
    req_ctx *ctx = arg;
    ctx->state = CTX_WOKEN;
    MHD_resume_connection(ctx->conn);
}

static void on_registered(void *arg) {
    req_ctx *ctx = arg;
    ctx->state = CTX_SUSPENDED;
    MHD_suspend_connection(ctx->conn);
}

/* The array bytes of a finished pull/gather, with X-Ippc-Dtype/-Shape. */
static enum MHD_Result send_raw(req_ctx *ctx) {
    ippc_error err = {0};
    unsigned char *data = NULL;
    size_t len = 0;
    nd_ref ref;
    if (hub_request_array(ctx->api->h, ctx->request_id, &data, &len, &ref, &err) < 0)
        return send_error(ctx->conn, &err);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(data);
        return MHD_NO;
    }
    char shape[ND_MAX_DIMS * 21 + 1] = "";
    for (int i = 0; i < ref.ndim; i++)
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%zu", i ? "," : "",
                 ref.shape[i]);
    char request[24];
    snprintf(request, sizeof request, "%llu", (unsigned long long)ctx->request_id);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    MHD_add_response_header(resp, "X-Ippc-Dtype", nd_dtype_name(ref.dtype));
    MHD_add_response_header(resp, "X-Ippc-Shape", shape);
    MHD_add_response_header(resp, "X-Ippc-Request", request);
    enum MHD_Result rc = MHD_queue_response(ctx->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result answer_request(req_ctx *ctx) {
    ippc_error err = {0};
    int done = 0;
    json_t *body = hub_request_json(ctx->api->h, ctx->request_id, &done, &err);
    if (!body)
        return send_error(ctx->conn, &err);
    if (done && ctx->raw) {
        json_decref(body);
        return send_raw(ctx);
    }
    return send_json(ctx->conn, done ? MHD_HTTP_OK : MHD_HTTP_ACCEPTED, body);
}

/* Waits for ctx->request_id up to `seconds` (< 0: forever), without a thread. */
static enum MHD_Result wait_or_answer(req_ctx *ctx, double seconds) {
    int64_t deadline = 0;
    if (seconds >= 0)
        deadline = hub_now_ms() + (int64_t)(seconds * 1000.0) + 1;
    int rc = hub_wait(ctx->api->h, ctx->request_id, deadline, on_wake, on_registered, ctx);
    if (rc == 0)
        return MHD_YES; /* suspended; handle() runs again when woken */
    return answer_request(ctx);
}

/* ------------------------------------------------------------ handlers */

static enum MHD_Result h_info(req_ctx *ctx, const route_args *a) {
    (void)a;
    return send_json(ctx->conn, MHD_HTTP_OK, hub_info(ctx->api->h));
}

static enum MHD_Result h_engines(req_ctx *ctx, const route_args *a) {
    (void)a;
    return send_json(ctx->conn, MHD_HTTP_OK, hub_engines(ctx->api->h));
}

static int parse_id(const char *s, long long max, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > max)
        return -1;
    *out = v;
    return 0;
}

static enum MHD_Result h_engine(req_ctx *ctx, const route_args *a) {
    long long id;
    if (parse_id(a->params[0], INT32_MAX, &id) < 0)
        return fail(ctx->conn, ERR_NOT_FOUND, "no engine with id '%.64s'", a->params[0]);
    ippc_error err = {0};
    json_t *e = hub_engine(ctx->api->h, (int)id, &err);
    return e ? send_json(ctx->conn, MHD_HTTP_OK, e) : send_error(ctx->conn, &err);
}

static enum MHD_Result h_request(req_ctx *ctx, const route_args *a) {
    long long id;
    if (parse_id(a->params[0], INT64_MAX, &id) < 0)
        return fail(ctx->conn, ERR_NOT_FOUND, "no request with id '%.64s'", a->params[0]);
    double wait = query_seconds(ctx, "wait");
    if (wait == -2)
        return fail(ctx->conn, ERR_BAD_REQUEST, "?wait= must be a number of seconds%s", NULL);
    ctx->request_id = (uint64_t)id;
    if (wait <= 0)
        return answer_request(ctx);
    return wait_or_answer(ctx, wait);
}

/* Submits a direct-view call and answers (or waits) as the query asks:
 * ?block=, ?timeout=, ?format=, and Accept: application/octet-stream. */
static enum MHD_Result submit_and_answer(req_ctx *ctx, hub_call *call) {
    int block = query_block(ctx);
    double timeout = query_seconds(ctx, "timeout");
    if (block < 0 || timeout == -2 || query_format(ctx, &call->format) < 0)
        return fail(ctx->conn, ERR_BAD_REQUEST,
                    "bad query: block is true|false, timeout a number of seconds, format "
                    "list|typed%s",
                    NULL);
    ctx->raw = is_octet_stream(header(ctx, MHD_HTTP_HEADER_ACCEPT)) &&
               (call->op == HUB_OP_PULL || call->op == HUB_OP_GATHER);
    ippc_error err = {0};
    uint64_t id = hub_submit(ctx->api->h, call, &err);
    if (!id)
        return send_error(ctx->conn, &err);
    ctx->request_id = id;
    if (!block)
        return answer_request(ctx);
    return wait_or_answer(ctx, timeout);
}

static enum MHD_Result view_call(req_ctx *ctx, hub_op op, const char *targets, const char *name,
                                 json_t *body) {
    hub_call call = {.op = op, .targets = targets, .body = body, .name = name};
    enum MHD_Result rc = submit_and_answer(ctx, &call);
    json_decref(body);
    return rc;
}

static enum MHD_Result body_call(req_ctx *ctx, const route_args *a, hub_op op) {
    ippc_error err = {0};
    json_t *body = parse_body(ctx, 0, &err);
    if (!body)
        return send_error(ctx->conn, &err);
    return view_call(ctx, op, a->params[0], NULL, body);
}

static enum MHD_Result h_execute(req_ctx *ctx, const route_args *a) {
    return body_call(ctx, a, HUB_OP_EXECUTE);
}
static enum MHD_Result h_run(req_ctx *ctx, const route_args *a) {
    return body_call(ctx, a, HUB_OP_RUN);
}
static enum MHD_Result h_push(req_ctx *ctx, const route_args *a) {
    return body_call(ctx, a, HUB_OP_PUSH);
}
static enum MHD_Result h_pull(req_ctx *ctx, const route_args *a) {
    return body_call(ctx, a, HUB_OP_PULL_MANY);
}
static enum MHD_Result raw_call(req_ctx *ctx, hub_op op, const char *targets, const char *name);

static enum MHD_Result h_scatter(req_ctx *ctx, const route_args *a) {
    if (is_octet_stream(header(ctx, MHD_HTTP_HEADER_CONTENT_TYPE))) {
        const char *name = query(ctx, "name");
        if (!name)
            return fail(ctx->conn, ERR_BAD_REQUEST,
                        "a raw scatter names its variable with ?name=%s", NULL);
        return raw_call(ctx, HUB_OP_SCATTER, a->params[0], name);
    }
    return body_call(ctx, a, HUB_OP_SCATTER);
}
static enum MHD_Result h_load(req_ctx *ctx, const route_args *a) {
    return body_call(ctx, a, HUB_OP_LOAD);
}

/* Calls whose body is optional (an empty body means {}). */
static enum MHD_Result optional_body_call(req_ctx *ctx, const route_args *a, hub_op op) {
    if (ctx->len == 0)
        return view_call(ctx, op, a->params[0], NULL, json_object());
    return body_call(ctx, a, op);
}
static enum MHD_Result h_reset(req_ctx *ctx, const route_args *a) {
    return optional_body_call(ctx, a, HUB_OP_RESET);
}
static enum MHD_Result h_list_vars(req_ctx *ctx, const route_args *a) {
    return view_call(ctx, HUB_OP_LIST, a->params[0], NULL, json_object());
}
static enum MHD_Result h_delete_var(req_ctx *ctx, const route_args *a) {
    return view_call(ctx, HUB_OP_DELETE, a->params[0], a->params[1], json_object());
}
static enum MHD_Result h_interrupt(req_ctx *ctx, const route_args *a) {
    ippc_error err = {0};
    json_t *out = hub_interrupt(ctx->api->h, a->params[0], &err);
    return out ? send_json(ctx->conn, MHD_HTTP_OK, out) : send_error(ctx->conn, &err);
}
static enum MHD_Result h_apply(req_ctx *ctx, const route_args *a) {
    return body_call(ctx, a, HUB_OP_APPLY);
}

/* A raw body (Content-Type: application/octet-stream) as one ndarray: dtype
 * and shape from ?dtype=&shape=d0,d1 or X-Ippc-Dtype / X-Ippc-Shape (default
 * float64, 1-D).  The body buffer becomes the blob: no copy.  NULL + err. */
static json_t *raw_body_value(req_ctx *ctx, ippc_blobs *blobs, ippc_error *err) {
    const char *dtype_s = query(ctx, "dtype") ? query(ctx, "dtype") : header(ctx, "X-Ippc-Dtype");
    const char *shape_s = query(ctx, "shape") ? query(ctx, "shape") : header(ctx, "X-Ippc-Shape");
    int dtype = nd_dtype_parse(dtype_s ? dtype_s : "float64");
    if (dtype < 0) {
        ippc_error_set(err, ERR_INVALID, "unknown dtype '%.32s'", dtype_s);
        return NULL;
    }
    size_t item = nd_dtype_size((nd_dtype)dtype);
    size_t shape[ND_MAX_DIMS];
    int ndim = 0;
    size_t count = 1;
    if (shape_s && *shape_s) {
        const char *p = shape_s;
        while (*p) {
            char *end;
            errno = 0;
            unsigned long long d = strtoull(p, &end, 10);
            if (end == p || errno || ndim == ND_MAX_DIMS || *p == '-' ||
                (d && count > SIZE_MAX / item / d)) {
                ippc_error_set(err, ERR_INVALID, "bad shape '%.64s': up to %d sizes, d0,d1,...",
                               shape_s, ND_MAX_DIMS);
                return NULL;
            }
            shape[ndim++] = (size_t)d;
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
    unsigned char *data = (unsigned char *)ctx->body;
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
    return value_nd_placeholder((nd_dtype)dtype, ndim, shape, (size_t)k);
}

/* Pushes or scatters a raw array body. */
static enum MHD_Result raw_call(req_ctx *ctx, hub_op op, const char *targets, const char *name) {
    ippc_error err = {0};
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = raw_body_value(ctx, &blobs, &err);
    if (!skel) {
        blobs_free(&blobs);
        return send_error(ctx->conn, &err);
    }
    json_t *body = json_pack("{s:s}", "name", name);
    hub_call call = {.op = op,
                     .targets = targets,
                     .body = body,
                     .name = name,
                     .wire_value = skel,
                     .wire_blobs = &blobs};
    enum MHD_Result rc = submit_and_answer(ctx, &call);
    json_decref(body);
    json_decref(skel);
    blobs_free(&blobs);
    return rc;
}

static enum MHD_Result h_put_var(req_ctx *ctx, const route_args *a) {
    if (is_octet_stream(header(ctx, MHD_HTTP_HEADER_CONTENT_TYPE)))
        return raw_call(ctx, HUB_OP_PUSH, a->params[0], a->params[1]);
    ippc_error err = {0};
    json_t *value = parse_body(ctx, 1, &err);
    if (!value)
        return send_error(ctx->conn, &err);
    json_t *body = json_pack("{s:{s:o}}", "namespace", a->params[1], value);
    return view_call(ctx, HUB_OP_PUSH, a->params[0], NULL, body);
}

static enum MHD_Result h_get_var(req_ctx *ctx, const route_args *a) {
    return view_call(ctx, HUB_OP_PULL, a->params[0], a->params[1], json_object());
}

static enum MHD_Result h_gather(req_ctx *ctx, const route_args *a) {
    return view_call(ctx, HUB_OP_GATHER, a->params[0], a->params[1], json_object());
}

/* ------------------------------------------------------ balanced tasks */

static enum MHD_Result answer_task(req_ctx *ctx) {
    ippc_error err = {0};
    int finished = 0;
    json_t *body = hub_task_json(ctx->api->h, ctx->task_id, &finished, &err);
    if (!body)
        return send_error(ctx->conn, &err);
    return send_json(ctx->conn, finished ? MHD_HTTP_OK : MHD_HTTP_ACCEPTED, body);
}

static enum MHD_Result wait_task_or_answer(req_ctx *ctx, double seconds) {
    int64_t deadline = seconds >= 0 ? hub_now_ms() + (int64_t)(seconds * 1000.0) + 1 : 0;
    int rc = hub_task_wait(ctx->api->h, ctx->task_id, deadline, on_wake, on_registered, ctx);
    return rc == 0 ? MHD_YES : answer_task(ctx);
}

static enum MHD_Result h_task_submit(req_ctx *ctx, const route_args *a) {
    (void)a;
    ippc_error err = {0};
    json_t *body = parse_body(ctx, 1, &err);
    if (!body)
        return send_error(ctx->conn, &err);
    const char *block_s = query(ctx, "block");
    int block = block_s && (strcmp(block_s, "true") == 0 || strcmp(block_s, "1") == 0);
    double timeout = query_seconds(ctx, "timeout");
    if (timeout == -2 || (block && json_is_array(body))) {
        json_decref(body);
        return fail(ctx->conn, ERR_BAD_REQUEST,
                    "?block=true takes one task (not a batch); ?timeout= is seconds%s", NULL);
    }
    uint64_t first = 0;
    json_t *out = hub_task_submit(ctx->api->h, body, &first, &err);
    json_decref(body);
    if (!out)
        return send_error(ctx->conn, &err);
    if (!block)
        return send_json(ctx->conn, MHD_HTTP_ACCEPTED, out);
    json_decref(out);
    ctx->task_id = first;
    return wait_task_or_answer(ctx, timeout);
}

static int task_id_arg(req_ctx *ctx, const route_args *a) {
    long long id;
    if (parse_id(a->params[0], INT64_MAX, &id) < 0 || id == 0)
        return -1;
    ctx->task_id = (uint64_t)id;
    return 0;
}

static enum MHD_Result h_task_get(req_ctx *ctx, const route_args *a) {
    if (task_id_arg(ctx, a) < 0)
        return fail(ctx->conn, ERR_NOT_FOUND, "no task with id '%.64s'", a->params[0]);
    double wait = query_seconds(ctx, "wait");
    if (wait == -2)
        return fail(ctx->conn, ERR_BAD_REQUEST, "?wait= must be a number of seconds%s", NULL);
    if (wait <= 0)
        return answer_task(ctx);
    return wait_task_or_answer(ctx, wait);
}

static enum MHD_Result h_task_abort(req_ctx *ctx, const route_args *a) {
    if (task_id_arg(ctx, a) < 0)
        return fail(ctx->conn, ERR_NOT_FOUND, "no task with id '%.64s'", a->params[0]);
    const char *force = query(ctx, "force");
    ippc_error err = {0};
    json_t *out = hub_task_abort(ctx->api->h, ctx->task_id,
                                 force && strcmp(force, "true") == 0, &err);
    return out ? send_json(ctx->conn, MHD_HTTP_OK, out) : send_error(ctx->conn, &err);
}

static enum MHD_Result h_task_resubmit(req_ctx *ctx, const route_args *a) {
    if (task_id_arg(ctx, a) < 0)
        return fail(ctx->conn, ERR_NOT_FOUND, "no task with id '%.64s'", a->params[0]);
    ippc_error err = {0};
    json_t *out = hub_task_resubmit(ctx->api->h, ctx->task_id, &err);
    return out ? send_json(ctx->conn, MHD_HTTP_ACCEPTED, out) : send_error(ctx->conn, &err);
}

static enum MHD_Result h_task_query(req_ctx *ctx, const route_args *a) {
    (void)a;
    const char *engine_s = query(ctx, "engine"), *limit_s = query(ctx, "limit"),
               *cursor_s = query(ctx, "cursor");
    long long engine = -1, limit = 100, cursor = 0;
    if ((engine_s && parse_id(engine_s, INT32_MAX, &engine) < 0) ||
        (limit_s && (parse_id(limit_s, 1000, &limit) < 0 || limit < 1)) ||
        (cursor_s && parse_id(cursor_s, INT64_MAX, &cursor) < 0))
        return fail(ctx->conn, ERR_BAD_REQUEST,
                    "engine is an id, limit 1..1000, cursor a task id%s", NULL);
    const char *state = query(ctx, "state");
    static const char *states[] = {"pending", "running", "completed", "failed", "aborted", "lost"};
    int ok = !state;
    for (size_t i = 0; state && i < 6; i++)
        ok |= strcmp(state, states[i]) == 0;
    if (!ok)
        return fail(ctx->conn, ERR_BAD_REQUEST,
                    "state is one of pending running completed failed aborted lost%s", NULL);
    ippc_error err = {0};
    json_t *out = hub_task_query(ctx->api->h, state, (int)engine, query(ctx, "tag"),
                                 query(ctx, "since"), (size_t)limit, (uint64_t)cursor, &err);
    return out ? send_json(ctx->conn, MHD_HTTP_OK, out) : send_error(ctx->conn, &err);
}

static enum MHD_Result h_task_purge(req_ctx *ctx, const route_args *a) {
    (void)a;
    ippc_error err = {0};
    json_t *out = hub_task_purge(ctx->api->h, query(ctx, "before"), &err);
    return out ? send_json(ctx->conn, MHD_HTTP_OK, out) : send_error(ctx->conn, &err);
}

static enum MHD_Result h_map(req_ctx *ctx, const route_args *a) {
    (void)a;
    ippc_error err = {0};
    json_t *body = parse_body(ctx, 0, &err);
    if (!body)
        return send_error(ctx->conn, &err);
    int block = query_block(ctx);
    double timeout = query_seconds(ctx, "timeout");
    if (block < 0 || timeout == -2) {
        json_decref(body);
        return fail(ctx->conn, ERR_BAD_REQUEST, "bad ?block= or ?timeout=%s", NULL);
    }
    uint64_t id = hub_map_submit(ctx->api->h, body, &err);
    json_decref(body);
    if (!id)
        return send_error(ctx->conn, &err);
    ctx->request_id = id;
    return block ? wait_or_answer(ctx, timeout) : answer_request(ctx);
}

/* Prometheus text exposition. */
static enum MHD_Result h_metrics(req_ctx *ctx, const route_args *a) {
    (void)a;
    char *text = NULL;
    size_t len = 0;
    hub_metrics(ctx->api->h, &text, &len);
    http_api *api = ctx->api;
    char hist[1024];
    int n = snprintf(hist, sizeof hist,
                     "# HELP ippc_http_request_seconds REST request latency, arrival to answer.\n"
                     "# TYPE ippc_http_request_seconds histogram\n");
    const char *les[6] = {"0.001", "0.01", "0.1", "1", "10", "+Inf"};
    for (int i = 0; i < 6; i++)
        n += snprintf(hist + n, sizeof hist - (size_t)n,
                      "ippc_http_request_seconds_bucket{le=\"%s\"} %llu\n", les[i],
                      (unsigned long long)atomic_load(&api->lat_buckets[i]));
    n += snprintf(hist + n, sizeof hist - (size_t)n,
                  "ippc_http_request_seconds_sum %.6f\nippc_http_request_seconds_count %llu\n",
                  (double)atomic_load(&api->lat_sum_us) / 1e6,
                  (unsigned long long)atomic_load(&api->lat_count));
    char *all = realloc(text, len + (size_t)n + 1);
    if (all) {
        memcpy(all + len, hist, (size_t)n + 1);
        text = all;
        len += (size_t)n;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, text ? text : (char *)"", text ? MHD_RESPMEM_MUST_FREE
                                                                          : MHD_RESPMEM_PERSISTENT);
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

static enum MHD_Result h_queue(req_ctx *ctx, const route_args *a) {
    (void)a;
    return send_json(ctx->conn, MHD_HTTP_OK, hub_queue(ctx->api->h));
}

static const route routes[] = {
    {"POST", "/api/v1/tasks", h_task_submit},
    {"GET", "/api/v1/tasks", h_task_query},
    {"DELETE", "/api/v1/tasks", h_task_purge},
    {"GET", "/api/v1/tasks/{id}", h_task_get},
    {"DELETE", "/api/v1/tasks/{id}", h_task_abort},
    {"POST", "/api/v1/tasks/{id}/resubmit", h_task_resubmit},
    {"POST", "/api/v1/map", h_map},
    {"GET", "/api/v1/queue", h_queue},
    {"GET", "/metrics", h_metrics},
    {"GET", "/api/v1/info", h_info},
    {"GET", "/api/v1/engines", h_engines},
    {"GET", "/api/v1/engines/{id}", h_engine},
    {"POST", "/api/v1/views/{targets}/execute", h_execute},
    {"POST", "/api/v1/views/{targets}/run", h_run},
    {"PUT", "/api/v1/views/{targets}/vars/{name}", h_put_var},
    {"GET", "/api/v1/views/{targets}/vars/{name}", h_get_var},
    {"POST", "/api/v1/views/{targets}/push", h_push},
    {"POST", "/api/v1/views/{targets}/pull", h_pull},
    {"POST", "/api/v1/views/{targets}/scatter", h_scatter},
    {"GET", "/api/v1/views/{targets}/gather/{name}", h_gather},
    {"POST", "/api/v1/views/{targets}/apply", h_apply},
    {"POST", "/api/v1/views/{targets}/load", h_load},
    {"POST", "/api/v1/views/{targets}/reset", h_reset},
    {"POST", "/api/v1/views/{targets}/interrupt", h_interrupt},
    {"GET", "/api/v1/views/{targets}/vars", h_list_vars},
    {"DELETE", "/api/v1/views/{targets}/vars/{name}", h_delete_var},
    {"GET", "/api/v1/requests/{id}", h_request},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

void http_print_routes(FILE *out) {
    for (size_t i = 0; i < N_ROUTES; i++)
        fprintf(out, "%s %s\n", routes[i].method, routes[i].pattern);
}

/* Matches url against pattern segment by segment; {x} segments capture into
 * args, pointing into buf (a writable copy of url). */
static int route_match(const char *pattern, char *buf, route_args *args) {
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

static int authorized(req_ctx *ctx) {
    const char *h = MHD_lookup_connection_value(ctx->conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return 0;
    return secret_equal(h + 7, ctx->api->token);
}

static enum MHD_Result dispatch(req_ctx *ctx, const char *url, const char *method) {
    size_t ulen = strlen(url);
    if (ulen > 2048)
        return fail(ctx->conn, ERR_NOT_FOUND, "no such path%s", NULL);
    int is_api = strncmp(url, "/api/", 5) == 0 ||
                 (strcmp(url, "/metrics") == 0 && !ctx->api->metrics_public);
    if (is_api && !authorized(ctx))
        return fail(ctx->conn, ERR_UNAUTHORIZED,
                    "missing or wrong token: send 'Authorization: Bearer <token>' (the token is "
                    "in ippc-client.json)%s",
                    NULL);
    if (ctx->too_large)
        return fail(ctx->conn, ERR_TOO_LARGE, "request body is larger than the limit%s", NULL);

    char buf[2049];
    int path_known = 0;
    for (size_t i = 0; i < N_ROUTES; i++) {
        route_args args;
        memcpy(buf, url, ulen + 1);
        if (!route_match(routes[i].pattern, buf, &args))
            continue;
        path_known = 1;
        if (strcmp(routes[i].method, method) == 0)
            return routes[i].fn(ctx, &args);
    }
    if (path_known)
        return fail(ctx->conn, ERR_METHOD, "method %s is not allowed on this path", method);
    return fail(ctx->conn, ERR_NOT_FOUND, "no such path: %.200s", url);
}

static enum MHD_Result answer_task(req_ctx *ctx);

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls) {
    (void)version;
    http_api *api = cls;
    req_ctx *ctx = *con_cls;
    if (!ctx) {
        ctx = calloc(1, sizeof *ctx);
        if (!ctx)
            return MHD_NO;
        ctx->api = api;
        ctx->conn = conn;
        ctx->started_us = now_us();
        *con_cls = ctx;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (ctx->too_large || n > api->max_body - ctx->len) {
            ctx->too_large = 1; /* keep reading, drop the bytes, answer 413 */
            return MHD_YES;
        }
        if (ctx->len + n > ctx->cap) {
            size_t cap = ctx->cap ? ctx->cap : 4096;
            while (cap < ctx->len + n)
                cap *= 2;
            char *body = realloc(ctx->body, cap);
            if (!body)
                return MHD_NO;
            ctx->body = body;
            ctx->cap = cap;
        }
        memcpy(ctx->body + ctx->len, upload_data, n);
        ctx->len += n;
        return MHD_YES;
    }
    if (ctx->state == CTX_SUSPENDED)
        return MHD_YES; /* spurious call while waiting */
    if (ctx->state == CTX_WOKEN)
        return ctx->task_id ? answer_task(ctx) : answer_request(ctx);
    return dispatch(ctx, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
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
    free(ctx->body);
    free(ctx);
    *con_cls = NULL;
}

http_api *http_start(hub *h, const http_config *cfg, ippc_error *err) {
    http_api *api = calloc(1, sizeof *api);
    if (!api) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    api->h = h;
    api->token = strdup(cfg->token);
    api->max_body = cfg->max_body ? cfg->max_body : (size_t)64 << 20;
    api->metrics_public = cfg->metrics_public;
    unsigned int flags = MHD_USE_NO_LISTEN_SOCKET | MHD_USE_INTERNAL_POLLING_THREAD |
                         MHD_USE_EPOLL | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME;
    api->daemon = MHD_start_daemon(flags, 0, NULL, NULL, handle, api, MHD_OPTION_NOTIFY_COMPLETED,
                                   on_completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
                                   (unsigned int)120, MHD_OPTION_CONNECTION_LIMIT,
                                   (unsigned int)4096, MHD_OPTION_END);
    if (!api->daemon) {
        ippc_error_set(err, ERR_INTERNAL, "cannot start the HTTP daemon");
        free(api->token);
        free(api);
        return NULL;
    }
    return api;
}

void http_add_connection(http_api *api, int fd, const struct sockaddr *addr, socklen_t len) {
    /* MHD closes the socket itself when it cannot take it. */
    (void)MHD_add_connection(api->daemon, fd, addr, len);
}

void http_stop(http_api *api) {
    if (!api)
        return;
    /* Every suspended connection must be resumed before the daemon stops. */
    hub_wake_all(api->h);
    usleep(100 * 1000);
    MHD_stop_daemon(api->daemon);
    free(api->token);
    free(api);
}
