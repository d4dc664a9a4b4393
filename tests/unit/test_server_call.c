/* test_server_call.c — server/call.c: the one call decoder.
 *
 * The pure part: a REST request (operationId, path parameters, query strings,
 * body) and the /ws message that says the same thing decode to the same call
 * and fail with the same error; what each front end alone can say (targets
 * as a list or an id, a missing targets, options typed as JSON) decodes as
 * documented; only an op's fields reach the hub's body; Content-Type rules.
 * Then, with a hub and fake engines, the answer builder: 200 for a call done
 * whether or not it blocked, 202 before, format honoured on a request's
 * answer.
 */
#include "fake_engines.h"

#include <math.h>

#include "call.h"

/* ------------------------------------------------------------ helpers */

/* A REST request: query given as "k=v&k=v" (no escapes), body as JSON text
 * (NULL: none). */
typedef struct rest_case {
    const char *operation, *targets, *name, *id, *query, *body;
} rest_case;

static json_t *query_of(const char *text)
{
    json_t *q = json_object();
    if (!text)
        return q;
    char *copy = strdup(text), *save = NULL;
    for (char *kv = strtok_r(copy, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        assert_non_null(eq);
        *eq = '\0';
        json_object_set_new(q, kv, json_string(eq + 1));
    }
    free(copy);
    return q;
}

static json_t *json_of(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!v)
        print_error("bad JSON in a test: %s: %s\n", text, jerr.text);
    assert_non_null(v);
    return v;
}

static int rest_decode(call *c, const rest_case *r, ippc_error *err)
{
    json_t *query = query_of(r->query);
    call_rest in = {.operation = r->operation,
                    .targets = r->targets,
                    .name = r->name,
                    .id = r->id,
                    .query = query,
                    .body = r->body ? json_of(r->body) : NULL};
    int rc = call_from_rest(c, &in, err);
    json_decref(query);
    return rc;
}

static int ws_decode(call *c, const char *msg_text, ippc_error *err)
{
    json_t *msg = json_of(msg_text);
    int rc = call_from_ws(c, msg, err);
    json_decref(msg);
    return rc;
}

static void assert_same_string(const char *a, const char *b)
{
    if (!a || !b)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

static void assert_same_call(const call *a, const call *b)
{
    assert_ptr_equal(a->def, b->def);
    assert_same_string(a->targets, b->targets);
    assert_same_string(a->name, b->name);
    assert_int_equal(a->id, b->id);
    assert_int_equal(a->block, b->block);
    assert_true(a->timeout == b->timeout);
    assert_true(a->wait == b->wait);
    assert_int_equal(a->format, b->format);
    assert_int_equal(a->force, b->force);
    if (!a->body || !b->body) {
        assert_ptr_equal(a->body, b->body);
    } else if (!json_equal(a->body, b->body)) {
        char *x = json_dumps(a->body, 0), *y = json_dumps(b->body, 0);
        print_error("bodies differ: %s vs %s\n", x, y);
        free(x);
        free(y);
        fail();
    }
}

/* The REST request and the message decode alike: the same call, or the
 * same error (code, and message word for word). */
static void same_decoding(const rest_case *r, const char *msg, const char *want_code)
{
    call a, b;
    ippc_error ea = {{0}, {0}}, eb = {{0}, {0}};
    int ra = rest_decode(&a, r, &ea);
    int rb = ws_decode(&b, msg, &eb);
    if (ra != rb || strcmp(ea.code, eb.code) != 0 || strcmp(ea.message, eb.message) != 0 ||
        (want_code && strcmp(ea.code, want_code) != 0) || (!want_code && ra != 0)) {
        print_error("%s %s?%s vs %s:\n  rest %d %s: %s\n  ws   %d %s: %s\n  want %s\n",
                    r->operation, r->targets ? r->targets : "", r->query ? r->query : "", msg, ra,
                    ea.code, ea.message, rb, eb.code, eb.message,
                    want_code ? want_code : "success");
        fail();
    }
    if (ra == 0)
        assert_same_call(&a, &b);
    call_clear(&a);
    call_clear(&b);
}

/* The message alone: fails with code (and a message containing text), or
 * succeeds (code NULL). */
static void ws_only(const char *msg, const char *code, const char *text)
{
    call c;
    ippc_error err = {{0}, {0}};
    int rc = ws_decode(&c, msg, &err);
    if ((code &&
         (rc == 0 || strcmp(err.code, code) != 0 || (text && !strstr(err.message, text)))) ||
        (!code && rc != 0)) {
        print_error("%s: %d %s: %s (want %s, %s)\n", msg, rc, err.code, err.message,
                    code ? code : "success", text ? text : "");
        fail();
    }
    call_clear(&c);
}

/* ------------------------------------------------------------ pairs */

static void test_targets_forms(void **state)
{
    (void)state;
    rest_case r = {"execute", "all", NULL, NULL, NULL, "{\"code\":\"return 1\"}"};
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"return 1\"}", NULL);
    r.targets = "1";
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":\"1\",\"code\":\"return 1\"}", NULL);
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":1,\"code\":\"return 1\"}", NULL);
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":[1],\"code\":\"return 1\"}", NULL);
    r.targets = "2,0,2";
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":[2,0,2],\"code\":\"return 1\"}", NULL);
    r.targets = "1::2";
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":\"1::2\",\"code\":\"return 1\"}", NULL);
    /* A spec that does not parse is the hub's to refuse, alike. */
    r.targets = "x_y";
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":\"x_y\",\"code\":\"return 1\"}", NULL);

    ws_only("{\"op\":\"execute\",\"code\":\"return 1\"}", ERR_BAD_REQUEST, "targets is required");
    ws_only("{\"op\":\"execute\",\"targets\":[],\"code\":\"\"}", ERR_BAD_TARGETS, "non-empty");
    ws_only("{\"op\":\"execute\",\"targets\":-1,\"code\":\"\"}", ERR_BAD_TARGETS, ">= 0");
    ws_only("{\"op\":\"execute\",\"targets\":[0,-1],\"code\":\"\"}", ERR_BAD_TARGETS, NULL);
    ws_only("{\"op\":\"execute\",\"targets\":true,\"code\":\"\"}", ERR_BAD_TARGETS, NULL);
    ws_only("{\"op\":\"execute\",\"targets\":null,\"code\":\"\"}", ERR_BAD_TARGETS, NULL);
    ws_only("{\"op\":\"execute\",\"targets\":1.0,\"code\":\"\"}", ERR_BAD_TARGETS, NULL);
    ws_only("{\"op\":\"execute\",\"targets\":[\"1\"],\"code\":\"\"}", ERR_BAD_TARGETS, NULL);
    ws_only("{\"op\":\"execute\",\"targets\":{},\"code\":\"\"}", ERR_BAD_TARGETS, NULL);
    ws_only("{\"op\":\"interrupt\"}", ERR_BAD_REQUEST, "targets is required");

    call c;
    ippc_error err;
    assert_int_equal(
        ws_decode(&c, "{\"op\":\"execute\",\"targets\":[3,9223372036854775807],\"code\":\"\"}",
                  &err),
        0);
    assert_string_equal(c.targets, "3,9223372036854775807");
    call_clear(&c);
}

static void test_block(void **state)
{
    (void)state;
    rest_case r = {"execute", "all", NULL, NULL, "block=false", "{\"code\":\"x\"}"};
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\",\"block\":false}",
                  NULL);
    r.query = "block=0";
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\",\"block\":false}",
                  NULL);
    r.query = "block=true";
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\",\"block\":true}",
                  NULL);
    r.query = NULL; /* blocking is the default */
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\",\"block\":true}",
                  NULL);
    r.query = "block=maybe";
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\",\"block\":\"maybe\"}",
                  ERR_BAD_REQUEST);
    /* A message's boolean is a JSON boolean. */
    ws_only("{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\",\"block\":\"true\"}",
            ERR_BAD_REQUEST, "\"block\" must be true or false");
    ws_only("{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\",\"block\":1}", ERR_BAD_REQUEST,
            NULL);
    ws_only("{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\",\"block\":null}",
            ERR_BAD_REQUEST, NULL);
    /* A submit does not block unless asked, and then takes one task. */
    rest_case s = {"submitTasks", NULL, NULL, NULL, NULL, "{\"code\":\"x\"}"};
    same_decoding(&s, "{\"op\":\"submit\",\"task\":{\"code\":\"x\"}}", NULL);
    s.query = "block=true";
    same_decoding(&s, "{\"op\":\"submit\",\"task\":{\"code\":\"x\"},\"block\":true}", NULL);
    s.body = "[{\"code\":\"x\"}]";
    same_decoding(&s, "{\"op\":\"submit\",\"tasks\":[{\"code\":\"x\"}],\"block\":true}",
                  ERR_BAD_REQUEST);
}

static void test_timeout_and_wait(void **state)
{
    (void)state;
    static const struct {
        const char *query, *json;
        double want; /* < -1.5: refused */
    } cases[] = {
        {NULL, NULL, -1},
        {"timeout=0", "0", 0},
        {"timeout=2.5", "2.5", 2.5},
        {"timeout=31536000", "31536000", 31536000},
        {"timeout=-1", "-1", -2},
        {"timeout=abc", "\"abc\"", -2},
        {"timeout=1e9", "1e9", -2},
        {"timeout=nan", "\"nan\"", -2},
        {"timeout=inf", "\"inf\"", -2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        rest_case r = {"execute", "all", NULL, NULL, cases[i].query, "{\"code\":\"x\"}"};
        char msg[256];
        snprintf(msg, sizeof msg, "{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\"%s%s}",
                 cases[i].json ? ",\"timeout\":" : "", cases[i].json ? cases[i].json : "");
        same_decoding(&r, msg, cases[i].want < -1.5 ? ERR_BAD_REQUEST : NULL);
        if (cases[i].want >= -1) {
            call c;
            ippc_error err;
            assert_int_equal(ws_decode(&c, msg, &err), 0);
            assert_true(c.timeout == cases[i].want);
            call_clear(&c);
        }
    }
    /* A message's number is a JSON number. */
    ws_only("{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\",\"timeout\":\"5\"}",
            ERR_BAD_REQUEST, "\"timeout\" must be a number of seconds");
    rest_case r = {"getRequest", NULL, NULL, "7", "wait=3", NULL};
    same_decoding(&r, "{\"op\":\"request\",\"request\":7,\"wait\":3}", NULL);
    r.query = "wait=-0.5";
    same_decoding(&r, "{\"op\":\"request\",\"request\":7,\"wait\":-0.5}", ERR_BAD_REQUEST);
    r.query = NULL;
    same_decoding(&r, "{\"op\":\"request\",\"request\":7}", NULL);
    rest_case t = {"getTask", NULL, NULL, "9", "wait=soon", NULL};
    same_decoding(&t, "{\"op\":\"task\",\"task\":9,\"wait\":\"soon\"}", ERR_BAD_REQUEST);
}

static void test_format(void **state)
{
    (void)state;
    static const char *const ok[] = {"list", "typed"};
    for (int i = 0; i < 2; i++) {
        char query[64], msg[128];
        snprintf(query, sizeof query, "format=%s", ok[i]);
        snprintf(msg, sizeof msg,
                 "{\"op\":\"gather\",\"targets\":\"all\",\"name\":\"a\","
                 "\"format\":\"%s\"}",
                 ok[i]);
        rest_case r = {"gather", "all", "a", NULL, query, NULL};
        same_decoding(&r, msg, NULL);
        call c;
        ippc_error err;
        assert_int_equal(ws_decode(&c, msg, &err), 0);
        assert_int_equal(c.format, i == 0 ? VALUE_FORMAT_LIST : VALUE_FORMAT_TYPED);
        call_clear(&c);
    }
    rest_case r = {"pull", "0", NULL, NULL, "format=raw", "{\"names\":[\"a\"]}"};
    same_decoding(&r, "{\"op\":\"pull\",\"targets\":0,\"names\":[\"a\"],\"format\":\"raw\"}",
                  ERR_BAD_REQUEST);
    r.query = "format=yaml";
    same_decoding(&r, "{\"op\":\"pull\",\"targets\":0,\"names\":[\"a\"],\"format\":\"yaml\"}",
                  ERR_BAD_REQUEST);
    ws_only("{\"op\":\"pull\",\"targets\":0,\"names\":[\"a\"],\"format\":1}", ERR_BAD_REQUEST,
            "list or typed");
    /* Not given: unset, so a request's answer keeps its call's format. */
    call c;
    ippc_error err;
    assert_int_equal(ws_decode(&c, "{\"op\":\"request\",\"request\":3}", &err), 0);
    assert_true(c.format < 0);
    call_clear(&c);
    rest_case q = {"getRequest", NULL, NULL, "3", "format=typed", NULL};
    same_decoding(&q, "{\"op\":\"request\",\"request\":3,\"format\":\"typed\"}", NULL);
    rest_case t = {"getTask", NULL, NULL, "4", "format=typed", NULL};
    same_decoding(&t, "{\"op\":\"task\",\"task\":4,\"format\":\"typed\"}", NULL);
}

static void test_ids(void **state)
{
    (void)state;
    rest_case r = {"getTask", NULL, NULL, "17", NULL, NULL};
    same_decoding(&r, "{\"op\":\"task\",\"task\":17}", NULL);
    r.id = "0";
    same_decoding(&r, "{\"op\":\"task\",\"task\":0}", ERR_NOT_FOUND);
    r.id = "-3";
    same_decoding(&r, "{\"op\":\"task\",\"task\":-3}", ERR_NOT_FOUND);
    rest_case a = {"abortTask", NULL, NULL, "5", "force=true", NULL};
    same_decoding(&a, "{\"op\":\"abort\",\"task\":5,\"force\":true}", NULL);
    a.query = "force=maybe";
    same_decoding(&a, "{\"op\":\"abort\",\"task\":5,\"force\":\"maybe\"}", ERR_BAD_REQUEST);
    ws_only("{\"op\":\"task\",\"task\":\"17\"}", ERR_BAD_REQUEST, "an integer");
    ws_only("{\"op\":\"task\"}", ERR_BAD_REQUEST, "task is required");
    ws_only("{\"op\":\"request\",\"request\":1.5}", ERR_BAD_REQUEST, NULL);
    call c;
    ippc_error err;
    rest_case bad = {"getTask", NULL, NULL, "12abc", NULL, NULL};
    assert_int_equal(rest_decode(&c, &bad, &err), -1);
    assert_string_equal(err.code, ERR_NOT_FOUND);
    assert_non_null(strstr(err.message, "'12abc'"));
    call_clear(&c);
}

static void test_ids_large(void **state)
{
    (void)state;
    /* INT64_MAX is an id; one more is not (REST's path can say it). */
    call c;
    ippc_error err;
    rest_case r = {"getTask", NULL, NULL, "9223372036854775807", NULL, NULL};
    assert_int_equal(rest_decode(&c, &r, &err), 0);
    assert_int_equal(c.id, INT64_MAX);
    call_clear(&c);
    r.id = "9223372036854775808";
    assert_int_equal(rest_decode(&c, &r, &err), -1);
    assert_string_equal(err.code, ERR_NOT_FOUND);
    call_clear(&c);
}

static void test_only_op_fields_reach_the_hub(void **state)
{
    (void)state;
    call c;
    ippc_error err;
    assert_int_equal(ws_decode(&c,
                               "{\"op\":\"execute\",\"id\":{\"mine\":1},\"nbuf\":0,\"targets\":[0],"
                               "\"block\":false,\"timeout\":3,\"format\":\"typed\",\"code\":\"x\"}",
                               &err),
                     0);
    json_t *want = json_pack("{s:s}", "code", "x");
    assert_true(json_equal(c.body, want));
    json_decref(want);
    call_clear(&c);
    /* A map's fields, and only those. */
    assert_int_equal(ws_decode(&c,
                               "{\"op\":\"map\",\"id\":7,\"function\":\"f\",\"sequences\":[[1]],"
                               "\"chunksize\":2,\"ordered\":false,\"block\":false}",
                               &err),
                     0);
    want = json_pack("{s:s, s:[[i]], s:i, s:b}", "function", "f", "sequences", 1, "chunksize", 2,
                     "ordered", 0);
    assert_true(json_equal(c.body, want));
    json_decref(want);
    call_clear(&c);
    /* A submit's body is the spec (or the list). */
    assert_int_equal(ws_decode(&c, "{\"op\":\"submit\",\"id\":1,\"task\":{\"code\":\"x\"}}", &err),
                     0);
    want = json_pack("{s:s}", "code", "x");
    assert_true(json_equal(c.body, want));
    json_decref(want);
    call_clear(&c);
    ws_only("{\"op\":\"submit\",\"task\":{},\"tasks\":[]}", ERR_BAD_REQUEST, "not both");
    ws_only("{\"op\":\"submit\"}", ERR_BAD_REQUEST, "needs");
    ws_only("{\"op\":\"submit\",\"task\":[]}", ERR_BAD_REQUEST, "\"tasks\"");
    ws_only("{\"op\":\"submit\",\"tasks\":{}}", ERR_BAD_REQUEST, NULL);
    /* Ops without a body: none (views: an empty object). */
    assert_int_equal(ws_decode(&c, "{\"op\":\"gather\",\"targets\":\"all\",\"name\":\"a\"}", &err),
                     0);
    assert_true(json_is_object(c.body) && json_object_size(c.body) == 0);
    assert_string_equal(c.name, "a");
    call_clear(&c);
    assert_int_equal(ws_decode(&c, "{\"op\":\"info\",\"id\":1}", &err), 0);
    assert_null(c.body);
    call_clear(&c);
}

static void test_unknown_fields(void **state)
{
    (void)state;
    rest_case r = {"execute", "all", NULL, NULL, NULL, "{\"code\":\"x\",\"bogus\":1}"};
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\",\"bogus\":1}",
                  ERR_BAD_REQUEST);
    r.body = "{\"code\":\"x\",\"names\":[]}";
    same_decoding(&r, "{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\",\"names\":[]}",
                  ERR_BAD_REQUEST);
    rest_case m = {"map", NULL, NULL, NULL, NULL, "{\"function\":\"f\",\"sequences\":[],\"x\":1}"};
    same_decoding(&m, "{\"op\":\"map\",\"function\":\"f\",\"sequences\":[],\"x\":1}",
                  ERR_BAD_REQUEST);
    rest_case z = {"reset", "all", NULL, NULL, NULL, "{\"x\":1}"};
    same_decoding(&z, "{\"op\":\"reset\",\"targets\":\"all\",\"x\":1}", ERR_BAD_REQUEST);
    /* Unknown query parameters are not fields: ignored. */
    rest_case q = {"execute", "all", NULL, NULL, "cachebuster=1&wait=5", "{\"code\":\"x\"}"};
    same_decoding(&q, "{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\"}", NULL);
    /* On /ws an option of another op is a field this op does not take. */
    ws_only("{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\",\"wait\":5}", ERR_BAD_REQUEST,
            "execute takes no field \"wait\"");
    ws_only("{\"op\":\"info\",\"targets\":\"all\"}", ERR_BAD_REQUEST, NULL);
    ws_only("{\"op\":\"frobnicate\"}", ERR_BAD_REQUEST, "unknown op 'frobnicate'");
    ws_only("{\"id\":1}", ERR_BAD_REQUEST, "\"op\"");
    ws_only("[1]", ERR_BAD_REQUEST, NULL);
}

static void test_rest_bodies(void **state)
{
    (void)state;
    call c;
    ippc_error err;
    rest_case r = {"execute", "all", NULL, NULL, NULL, NULL};
    assert_int_equal(rest_decode(&c, &r, &err), -1);
    assert_non_null(strstr(err.message, "empty"));
    call_clear(&c);
    r.body = "[1]";
    assert_int_equal(rest_decode(&c, &r, &err), -1);
    assert_non_null(strstr(err.message, "JSON object"));
    call_clear(&c);
    /* reset takes nothing or {}. */
    rest_case z = {"reset", "all", NULL, NULL, NULL, NULL};
    assert_int_equal(rest_decode(&c, &z, &err), 0);
    call_clear(&c);
    /* PUT vars/{name}: the value is a namespace of one. */
    rest_case p = {"pushVar", "0,1", "x", NULL, "block=false", "[1,null,3]"};
    assert_int_equal(rest_decode(&c, &p, &err), 0);
    json_t *want = json_pack("{s:{s:[i,n,i]}}", "namespace", "x", 1, 3);
    assert_true(json_equal(c.body, want));
    json_decref(want);
    assert_string_equal(c.name, "x");
    assert_string_equal(c.targets, "0,1");
    assert_int_equal(c.block, 0);
    call_clear(&c);
    /* A raw scatter names its variable with ?name=. */
    ippc_blobs blobs;
    blobs_init(&blobs);
    size_t shape[1] = {0};
    json_t *q = query_of("dtype=int64");
    call_rest raw = {.operation = "scatter",
                     .targets = "all",
                     .query = q,
                     .wire_value = value_nd_placeholder(ND_INT64, 1, shape, 0),
                     .wire_blobs = &blobs};
    assert_int_equal(call_from_rest(&c, &raw, &err), -1);
    assert_non_null(strstr(err.message, "?name="));
    call_clear(&c);
    json_object_set_new(q, "name", json_string("v"));
    raw.wire_value = value_nd_placeholder(ND_INT64, 1, shape, 0);
    assert_int_equal(call_from_rest(&c, &raw, &err), 0);
    assert_string_equal(c.name, "v");
    call_clear(&c);
    json_decref(q);
    blobs_free(&blobs);
    /* An operationId no route should name. */
    rest_case u = {"nope", NULL, NULL, NULL, NULL, "{}"};
    assert_int_equal(rest_decode(&c, &u, &err), -1);
    assert_string_equal(err.code, ERR_INTERNAL);
    call_clear(&c);
}

static void test_defs(void **state)
{
    (void)state;
    assert_ptr_equal(call_def_rest("submitTasks"), call_def_ws("submit"));
    assert_ptr_equal(call_def_rest("getRequest"), call_def_ws("request"));
    assert_null(call_def_ws("pushVar")); /* REST only */
    assert_non_null(call_def_rest("pushVar"));
    assert_true(call_def_rest("pushVar")->raw_ok && call_def_rest("scatter")->raw_ok);
    assert_false(call_def_rest("execute")->raw_ok);
    assert_null(call_def_ws(NULL));
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    call_print_ws_ops(f);
    assert_int_equal(fclose(f), 0);
    assert_non_null(strstr(text, "execute execute targets,code,block,timeout,format\n"));
    assert_non_null(strstr(text, "submit submitTasks task,tasks,block,timeout,format\n"));
    assert_non_null(strstr(text, "engines listEngines -\n"));
    assert_null(strstr(text, "pushVar"));
    free(text);
}

static void test_media(void **state)
{
    (void)state;
    static const struct {
        const char *type;
        int raw_ok;
        call_media want;
    } cases[] = {
        {NULL, 0, CALL_MEDIA_JSON},
        {"", 0, CALL_MEDIA_JSON},
        {"application/json", 0, CALL_MEDIA_JSON},
        {"Application/JSON; charset=utf-8", 0, CALL_MEDIA_JSON},
        {" application/json ;x=y", 0, CALL_MEDIA_JSON},
        {"application/vnd.ippc+json", 0, CALL_MEDIA_JSON},
        {"application/x-www-form-urlencoded", 1, CALL_MEDIA_JSON},
        {"application/octet-stream", 1, CALL_MEDIA_RAW},
        {"application/octet-stream", 0, CALL_MEDIA_UNSUPPORTED},
        {"application/x-npy", 1, CALL_MEDIA_NPY},
        {"Application/X-NPY; charset=x", 1, CALL_MEDIA_NPY},
        {"application/x-npy", 0, CALL_MEDIA_UNSUPPORTED},
        {"text/plain", 0, CALL_MEDIA_UNSUPPORTED},
        {"text/json", 0, CALL_MEDIA_UNSUPPORTED},
        {"application/+json", 0, CALL_MEDIA_UNSUPPORTED},
        {"application/jsonx", 0, CALL_MEDIA_UNSUPPORTED},
        {"application/", 0, CALL_MEDIA_UNSUPPORTED},
        {"multipart/form-data; boundary=x", 1, CALL_MEDIA_UNSUPPORTED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ippc_error err = {{0}, {0}};
        call_media got = call_media_of(cases[i].type, cases[i].raw_ok, &err);
        if (got != cases[i].want) {
            print_error("Content-Type %s (raw_ok %d): %d, want %d\n",
                        cases[i].type ? cases[i].type : "(none)", cases[i].raw_ok, got,
                        cases[i].want);
            fail();
        }
        if (got == CALL_MEDIA_UNSUPPORTED) {
            assert_string_equal(err.code, ERR_UNSUPPORTED);
            assert_int_equal(http_status_for(err.code), 415);
        }
    }
}

static void test_answer_of(void **state)
{
    (void)state;
    const struct {
        const char *accept;
        hub_op op;
        call_answer_kind want;
    } cases[] = {
        {NULL, HUB_OP_PULL, CALL_ANSWER_JSON},
        {"", HUB_OP_PULL, CALL_ANSWER_JSON},
        {"*/*", HUB_OP_PULL, CALL_ANSWER_JSON},
        {"application/octet-stream", HUB_OP_PULL, CALL_ANSWER_RAW},
        {"application/octet-stream", HUB_OP_GATHER, CALL_ANSWER_RAW},
        {"application/octet-stream", HUB_OP_EXECUTE, CALL_ANSWER_JSON},
        {" Application/X-Npy ", HUB_OP_PULL, CALL_ANSWER_NPY},
        {"application/x-npy", HUB_OP_GATHER, CALL_ANSWER_NPY},
        {"application/x-npy", HUB_OP_PULL_MANY, CALL_ANSWER_JSON},
        {"multipart/mixed", HUB_OP_PULL, CALL_ANSWER_MULTIPART},
        {"multipart/mixed", HUB_OP_GATHER, CALL_ANSWER_JSON},
        {"multipart/mixed; part=application/x-npy", HUB_OP_PULL, CALL_ANSWER_MULTIPART_NPY},
        {"multipart/mixed;part=\"application/x-npy\";q=0.5", HUB_OP_PULL,
         CALL_ANSWER_MULTIPART_NPY},
        {"multipart/mixed; part=application/octet-stream", HUB_OP_PULL, CALL_ANSWER_MULTIPART},
        {"multipart/mixed; part=text/csv", HUB_OP_PULL, CALL_ANSWER_JSON},
        {"application/json, application/x-npy", HUB_OP_PULL, CALL_ANSWER_JSON},
        {"application/x-npy, application/json", HUB_OP_PULL, CALL_ANSWER_NPY},
        {"application/json;q=0.2, application/x-npy;q=0.3", HUB_OP_PULL, CALL_ANSWER_NPY},
        {"application/x-npy;q=0, text/html", HUB_OP_PULL, CALL_ANSWER_JSON},
        {"application/x-npy;q=2", HUB_OP_PULL, CALL_ANSWER_JSON},
        {"application/x-npy;q=abc", HUB_OP_PULL, CALL_ANSWER_JSON},
        {"application/x-npy;q=", HUB_OP_PULL, CALL_ANSWER_JSON},
        {"application/x-npy;q=0.00000000000000000001", HUB_OP_PULL, CALL_ANSWER_JSON},
        {",,;;,=,q=1", HUB_OP_PULL, CALL_ANSWER_JSON},
        {"text/html, multipart/mixed", HUB_OP_PULL, CALL_ANSWER_MULTIPART},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        call_answer_kind got = call_answer_of(cases[i].accept, cases[i].op);
        if (got != cases[i].want) {
            print_error("Accept %s (op %d): %d, want %d\n",
                        cases[i].accept ? cases[i].accept : "(none)", (int)cases[i].op, got,
                        cases[i].want);
            fail();
        }
    }
}

/* ------------------------------------------------------------ answers */

typedef struct fixture {
    hub *h;
    fake_link links[2];
    int ids[2];
} fixture;

static int setup_hub(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    hub_config cfg = {.engine_key = FAKE_ENGINE_KEY,
                      .profile = "default",
                      .url = "http://127.0.0.1:1",
                      .ws_url = "ws://127.0.0.1:1/engine"};
    f->h = hub_new(&cfg);
    for (int i = 0; i < 2; i++)
        f->ids[i] = register_ok(f->h, &f->links[i], "job", i, 2);
    *state = f;
    return 0;
}

static int teardown_hub(void **state)
{
    fixture *f = *state;
    hub_free(f->h);
    for (int i = 0; i < 2; i++)
        link_clear(&f->links[i]);
    free(f);
    return 0;
}

static json_int_t last_task(const fake_link *l)
{
    assert_true(l->n > 0);
    return json_integer_value(json_object_get(l->msgs[l->n - 1].msg, "task"));
}

/* Each engine answers its last task with the int64 array [1, 2, 3] as `x`
 * (a pull's value) or as the value of an execute. */
static void engines_answer(fixture *f, int pull)
{
    for (int i = 0; i < 2; i++) {
        ippc_blobs blobs;
        blobs_init(&blobs);
        int64_t data[3] = {1, 2, 3};
        size_t nbytes = sizeof data;
        unsigned char *bytes = malloc(nbytes);
        assert_non_null(bytes);
        memcpy(bytes, data, nbytes);
        assert_true(blobs_push(&blobs, bytes, sizeof data) >= 0);
        size_t shape[1] = {3};
        json_t *skel = value_nd_placeholder(ND_INT64, 1, shape, 0);
        json_t *extra =
            pull ? json_pack("{s:s, s:{s:o}}", "status", "ok", "value", "x", skel)
                 : json_pack("{s:s, s:s, s:o}", "status", "ok", "stdout", "", "value", skel);
        result_from(f->h, f->ids[i], last_task(&f->links[i]), extra, &blobs);
    }
}

static json_t *start(fixture *f, const char *msg, call *c, int *status)
{
    ippc_error err;
    assert_int_equal(ws_decode(c, msg, &err), 0);
    json_t *body = NULL;
    if (call_start(f->h, c, status, &body))
        return body;
    return NULL;
}

static void test_answer_done_is_200_blocking_or_not(void **state)
{
    fixture *f = *state;
    call c;
    int status = 0;
    /* Non-blocking: answered at once, pending. */
    assert_null(start(f, "{\"op\":\"execute\",\"targets\":\"all\",\"code\":\"x\",\"block\":false}",
                      &c, &status));
    assert_int_equal(c.waits_for, CALL_WAIT_REQUEST);
    assert_int_not_equal(call_wait(f->h, &c, NULL, NULL, NULL), 0); /* no wait asked */
    json_t *body = call_answer(f->h, &c, &status);
    assert_int_equal(status, 202);
    assert_string_equal(json_string_value(json_object_get(body, "status")), "pending");
    json_decref(body);
    /* Done before the answer is built: 200, whether it blocked or not. */
    engines_answer(f, 0);
    body = call_answer(f->h, &c, &status);
    assert_int_equal(status, 200);
    assert_string_equal(json_string_value(json_object_get(body, "status")), "ok");
    json_decref(body);
    call_clear(&c);
    /* timeout 0 is block=false. */
    assert_null(
        start(f, "{\"op\":\"execute\",\"targets\":[0],\"code\":\"x\",\"timeout\":0}", &c, &status));
    assert_true(c.now);
    call_clear(&c);
    /* No timeout: waits without a deadline. */
    assert_null(start(f, "{\"op\":\"execute\",\"targets\":1,\"code\":\"x\"}", &c, &status));
    assert_false(c.now);
    assert_int_equal(c.deadline_ms, 0);
    call_clear(&c);
    assert_null(
        start(f, "{\"op\":\"execute\",\"targets\":1,\"code\":\"x\",\"timeout\":5}", &c, &status));
    assert_true(c.deadline_ms > hub_now_ms());
    call_clear(&c);
}

static void test_answer_errors_and_immediate_ops(void **state)
{
    fixture *f = *state;
    call c;
    int status = 0;
    json_t *body = start(f, "{\"op\":\"execute\",\"targets\":[7],\"code\":\"x\"}", &c, &status);
    assert_non_null(body);
    assert_int_equal(status, 422);
    assert_string_equal(json_string_value(json_object_get(json_object_get(body, "error"), "code")),
                        ERR_NO_ENGINES);
    json_decref(body);
    call_clear(&c);
    body = start(f, "{\"op\":\"info\"}", &c, &status);
    assert_int_equal(status, 200);
    assert_int_equal(json_integer_value(json_object_get(body, "engines")), 2);
    json_decref(body);
    call_clear(&c);
    /* A request nobody made: 404 from the answer builder. */
    assert_null(start(f, "{\"op\":\"request\",\"request\":99999}", &c, &status));
    assert_int_not_equal(call_wait(f->h, &c, NULL, NULL, NULL), 0);
    body = call_answer(f->h, &c, &status);
    assert_int_equal(status, 404);
    json_decref(body);
    call_clear(&c);
    /* A non-blocking map answers with its tasks. */
    assert_null(start(f,
                      "{\"op\":\"map\",\"function\":\"f\",\"sequences\":[[1,2]],\"block\":false}",
                      &c, &status));
    body = call_answer(f->h, &c, &status);
    assert_int_equal(status, 202);
    assert_int_equal(json_array_size(json_object_get(body, "tasks")), 2);
    json_decref(body);
    call_clear(&c);
}

static void test_answer_format(void **state)
{
    fixture *f = *state;
    call c;
    int status = 0;
    assert_null(start(f,
                      "{\"op\":\"pull\",\"targets\":\"all\",\"names\":[\"x\"],\"block\":false,"
                      "\"format\":\"typed\"}",
                      &c, &status));
    uint64_t rid = c.wait_id;
    call_clear(&c);
    engines_answer(f, 1);
    char msg[128];
    /* The request's own format (typed), then list when asked. */
    snprintf(msg, sizeof msg, "{\"op\":\"request\",\"request\":%llu}", (unsigned long long)rid);
    assert_null(start(f, msg, &c, &status));
    json_t *body = call_answer(f->h, &c, &status);
    assert_int_equal(status, 200);
    json_t *v = json_array_get(json_array_get(json_object_get(body, "results"), 0), 0);
    assert_string_equal(json_string_value(json_object_get(v, "dtype")), "int64");
    json_decref(body);
    call_clear(&c);
    snprintf(msg, sizeof msg, "{\"op\":\"request\",\"request\":%llu,\"format\":\"list\"}",
             (unsigned long long)rid);
    assert_null(start(f, msg, &c, &status));
    body = call_answer(f->h, &c, &status);
    v = json_array_get(json_array_get(json_object_get(body, "results"), 1), 0);
    json_t *want = json_pack("[i,i,i]", 1, 2, 3);
    assert_true(json_equal(v, want));
    json_decref(want);
    json_decref(body);
    call_clear(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_targets_forms),
        cmocka_unit_test(test_block),
        cmocka_unit_test(test_timeout_and_wait),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_ids_large),
        cmocka_unit_test(test_only_op_fields_reach_the_hub),
        cmocka_unit_test(test_unknown_fields),
        cmocka_unit_test(test_rest_bodies),
        cmocka_unit_test(test_defs),
        cmocka_unit_test(test_media),
        cmocka_unit_test(test_answer_of),
        cmocka_unit_test_setup_teardown(test_answer_done_is_200_blocking_or_not, setup_hub,
                                        teardown_hub),
        cmocka_unit_test_setup_teardown(test_answer_errors_and_immediate_ops, setup_hub,
                                        teardown_hub),
        cmocka_unit_test_setup_teardown(test_answer_format, setup_hub, teardown_hub),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
