/* test_engine_runtime.c — the engine runtime's task ops (execute, run, push,
 * pull, apply, list, delete, reset), errors, stdout capture and streaming,
 * interrupts (of Lua and of MPI waits), and the mpi module as a singleton
 * (rank 0 of 1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>
#include <mpi.h>

#include "runtime.h"

#include "engine_harness.h"
#include "interrupter.h"

/* Runs a task given as JSON text (no blobs in or out). */
static json_t *run_json(runtime *rt, const char *task_text)
{
    json_error_t jerr;
    json_t *task = json_loads(task_text, 0, &jerr);
    if (!task)
        fail_msg("bad test JSON: %s: %s", jerr.text, task_text);
    ippc_blobs out;
    blobs_init(&out);
    json_t *res = runtime_run_task(rt, task, NULL, &out);
    assert_non_null(res);
    assert_int_equal(out.count, 0);
    blobs_free(&out);
    json_decref(task);
    return res;
}

static json_t *execute(runtime *rt, const char *code)
{
    json_t *task = json_pack("{s:s, s:i, s:s}", "op", "execute", "task", 1, "code", code);
    json_t *res = runtime_run_task(rt, task, NULL, NULL);
    json_decref(task);
    assert_non_null(res);
    return res;
}

static const char *str(const json_t *res, const char *key)
{
    const char *s = json_string_value(json_object_get(res, key));
    if (!s) {
        char *dump = json_dumps(res, 0);
        fail_msg("no string '%s' in %s", key, dump);
    }
    return s;
}

static void assert_status(const json_t *res, const char *status)
{
    if (strcmp(str(res, "status"), status) != 0) {
        char *dump = json_dumps(res, JSON_INDENT(1));
        fail_msg("expected status %s, got %s", status, dump);
    }
}

/* execute must succeed and return the integer `want`. */
static void assert_exec_int(runtime *rt, const char *code, long long want)
{
    json_t *res = execute(rt, code);
    assert_status(res, "ok");
    json_t *v = json_object_get(res, "value");
    if (!json_is_integer(v) || json_integer_value(v) != want) {
        char *dump = json_dumps(res, 0);
        fail_msg("%s: expected %lld, got %s", code, want, dump);
    }
    json_decref(res);
}

static void test_execute_print(void **state)
{
    runtime *rt = *state;
    json_t *res = run_json(rt, "{\"type\":\"task\",\"task\":\"t1\",\"op\":\"execute\","
                               "\"code\":\"print('hello', 42, nil) io.write('x', 1, 2.5) "
                               "io.stdout:write('!') return 6*7\"}");
    assert_status(res, "ok");
    assert_string_equal(str(res, "type"), "result");
    assert_string_equal(str(res, "task"), "t1");
    assert_string_equal(str(res, "stdout"), "hello\t42\tnil\nx12.5!");
    assert_int_equal(json_integer_value(json_object_get(res, "value")), 42);
    json_decref(res);

    /* a chunk returning nothing has no value; stdout starts empty again */
    res = execute(rt, "x = 1");
    assert_status(res, "ok");
    assert_null(json_object_get(res, "value"));
    assert_string_equal(str(res, "stdout"), "");
    json_decref(res);

    /* the namespace persists across tasks */
    assert_exec_int(rt, "return x + 1", 2);
    assert_exec_int(rt, "return io.output() == io.stdout and 1 or 0", 1);
}

static void test_stdout_limits(void **state)
{
    runtime *rt = *state;
    json_t *res = execute(rt, "print(string.rep('a', 9 * 1024 * 1024))");
    assert_status(res, "ok");
    const char *out = str(res, "stdout");
    size_t len = strlen(out);
    assert_true(len >= (size_t)8 << 20 && len < ((size_t)8 << 20) + 64);
    assert_non_null(strstr(out + len - 40, "[stdout truncated]"));
    json_decref(res);

    /* invalid UTF-8 is replaced, not a failure */
    res = execute(rt, "io.write('ok \\xff\\xfe end')");
    assert_status(res, "ok");
    assert_string_equal(str(res, "stdout"), "ok \xEF\xBF\xBD\xEF\xBF\xBD end");
    json_decref(res);
}

static void test_run_and_apply(void **state)
{
    runtime *rt = *state;
    json_t *res = run_json(rt, "{\"task\":2,\"op\":\"run\",\"filename\":\"lib.lua\",\"source\":"
                               "\"function add(a, b) return a + b end\\n"
                               "function two() return 1, 'two' end\\n"
                               "function none() end\\n"
                               "function opts(a, kw) return a * kw.scale end\\n"
                               "function boom() error('kaboom') end\\n"
                               "base = 40\"}");
    assert_status(res, "ok");
    assert_int_equal(json_integer_value(json_object_get(res, "task")), 2);
    json_decref(res);

    res = run_json(rt, "{\"op\":\"apply\",\"function\":\"add\",\"args\":[{\"$ref\":\"base\"}, 2]}");
    assert_status(res, "ok");
    assert_int_equal(json_integer_value(json_object_get(res, "value")), 42);
    json_decref(res);

    res = run_json(rt, "{\"op\":\"apply\",\"function\":\"two\",\"args\":[]}");
    assert_status(res, "ok");
    json_t *v = json_object_get(res, "value");
    assert_true(json_is_array(v) && json_array_size(v) == 2);
    assert_string_equal(json_string_value(json_array_get(v, 1)), "two");
    json_decref(res);

    res = run_json(rt, "{\"op\":\"apply\",\"function\":\"none\"}");
    assert_status(res, "ok");
    assert_true(json_is_null(json_object_get(res, "value")));
    json_decref(res);

    res = run_json(rt, "{\"op\":\"apply\",\"function\":\"opts\",\"args\":[2.5],"
                       "\"kwargs\":{\"scale\":4}}");
    assert_status(res, "ok");
    assert_true(json_real_value(json_object_get(res, "value")) == 10.0);
    json_decref(res);

    res = run_json(rt, "{\"op\":\"apply\",\"function\":\"nosuch\",\"args\":[]}");
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "NameError");
    assert_string_equal(str(res, "evalue"), "name 'nosuch' is not defined");
    json_decref(res);

    res = run_json(rt, "{\"op\":\"apply\",\"function\":\"add\",\"args\":[{\"$ref\":\"nope\"}, 1]}");
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "NameError");
    json_decref(res);

    res = run_json(rt, "{\"op\":\"apply\",\"function\":\"base\",\"args\":[]}");
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "TypeError");
    json_decref(res);

    res = run_json(rt, "{\"op\":\"apply\",\"function\":\"boom\",\"args\":[]}");
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "RuntimeError");
    assert_non_null(strstr(str(res, "evalue"), "lib.lua:5: kaboom"));
    json_decref(res);
}

static void test_push_pull(void **state)
{
    runtime *rt = *state;
    json_t *res = run_json(rt, "{\"op\":\"push\",\"ns\":{\"i\":7,\"f\":2.5,\"s\":\"h\\u00e9llo\","
                               "\"b\":true,\"t\":{\"k\":[1,2,{\"z\":null,\"y\":\"w\"}],\"e\":[]},"
                               "\"big\":9007199254740993}}");
    assert_status(res, "ok");
    json_decref(res);
    assert_exec_int(rt,
                    "return math.type(i) == 'integer' and math.type(f) == 'float' and "
                    "t.k[3].y == 'w' and t.k[3].z == null and b and 1 or 0",
                    1);

    res = run_json(rt, "{\"op\":\"pull\",\"names\":[\"i\",\"f\",\"s\",\"b\",\"t\",\"big\"]}");
    assert_status(res, "ok");
    json_t *want = json_loads("{\"i\":7,\"f\":2.5,\"s\":\"h\\u00e9llo\",\"b\":true,"
                              "\"t\":{\"k\":[1,2,{\"z\":null,\"y\":\"w\"}],\"e\":[]},"
                              "\"big\":9007199254740993}",
                              0, NULL);
    if (!json_equal(json_object_get(res, "value"), want)) {
        char *dump = json_dumps(res, 0);
        fail_msg("pull round trip: %s", dump);
    }
    json_decref(want);
    json_decref(res);

    /* Lua-side values: integer keys become strings, NaN becomes null */
    res = execute(rt, "m = {[1] = 'a', [3] = 'c', name = 'n'} q = {0/0, 1.5} "
                      "deep = {} local d = deep for k = 1, 70 do d[1] = {} d = d[1] end "
                      "cyc = {} cyc.self = cyc fn = print bad = '\\xff'");
    assert_status(res, "ok");
    json_decref(res);
    res = run_json(rt, "{\"op\":\"pull\",\"names\":[\"m\",\"q\"]}");
    assert_status(res, "ok");
    want = json_loads("{\"m\":{\"1\":\"a\",\"3\":\"c\",\"name\":\"n\"},\"q\":[null,1.5]}", 0, NULL);
    assert_true(json_equal(json_object_get(res, "value"), want));
    json_decref(want);
    json_decref(res);

    const char *bad[][2] = {
        {"deep", "deeper"}, {"cyc", "itself"}, {"fn", "cannot send a function"}, {"bad", "UTF-8"}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        json_t *task = json_pack("{s:s, s:[s]}", "op", "pull", "names", bad[k][0]);
        res = runtime_run_task(rt, task, NULL, NULL);
        json_decref(task);
        assert_status(res, "error");
        assert_string_equal(str(res, "ename"), "TypeError");
        if (!strstr(str(res, "evalue"), bad[k][1]))
            fail_msg("pull %s: evalue %s", bad[k][0], str(res, "evalue"));
        json_decref(res);
    }

    /* the deepest value the codec accepts (64 nested lists around a scalar)
     * goes both ways; one more level is refused */
    char deep[512] = "{\"op\":\"push\",\"ns\":{\"d64\":";
    for (int k = 0; k < 64; k++)
        strcat(deep, "[");
    strcat(deep, "1");
    for (int k = 0; k < 64; k++)
        strcat(deep, "]");
    strcat(deep, "}}");
    res = run_json(rt, deep);
    assert_status(res, "ok");
    json_decref(res);
    res = run_json(rt, "{\"op\":\"pull\",\"names\":[\"d64\"]}");
    assert_status(res, "ok");
    json_decref(res);
    res = execute(rt, "d65 = {d64}");
    json_decref(res);
    res = run_json(rt, "{\"op\":\"pull\",\"names\":[\"d65\"]}");
    assert_status(res, "error");
    json_decref(res);

    res = run_json(rt, "{\"op\":\"pull\",\"names\":[\"i\",\"undefined_name\"]}");
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "NameError");
    assert_string_equal(str(res, "evalue"), "name 'undefined_name' is not defined");
    assert_true(json_is_array(json_object_get(res, "traceback")));
    json_decref(res);
}

static void test_push_pull_nd(void **state)
{
    runtime *rt = *state;
    ippc_blobs in, out;
    blobs_init(&in);
    blobs_init(&out);
    int64_t *ints = malloc(4 * sizeof *ints);
    for (int i = 0; i < 4; i++)
        ints[i] = (int64_t)10 * i;
    float *fl = malloc(6 * sizeof *fl);
    for (int i = 0; i < 6; i++)
        fl[i] = 0.5f * (float)i;
    assert_int_equal(blobs_push(&in, (unsigned char *)ints, 4 * sizeof *ints), 0);
    assert_int_equal(blobs_push(&in, (unsigned char *)fl, 6 * sizeof *fl), 1);
    json_t *task = json_loads("{\"op\":\"push\",\"ns\":{"
                              "\"a\":{\"$nd\":0,\"dtype\":\"int64\",\"shape\":[4]},"
                              "\"pair\":[{\"$nd\":1,\"dtype\":\"float32\",\"shape\":[2,3]}, 5]}}",
                              0, NULL);
    json_t *res = runtime_run_task(rt, task, &in, &out);
    json_decref(task);
    assert_status(res, "ok");
    assert_null(in.items[0].data); /* adopted, zero-copy */
    assert_null(in.items[1].data);
    blobs_free(&in);
    json_decref(res);

    assert_exec_int(rt, "return a:sum()", 60);
    assert_exec_int(rt,
                    "local m = pair[1] return (m:dtype() == 'float32' and m:shape()[1] == 2 "
                    "and m[2][3] == 2.5) and 1 or 0",
                    1);

    res = execute(rt, "b = a * 2 return b");
    assert_status(res, "ok");
    json_decref(res);

    task = json_pack("{s:s, s:[s, s]}", "op", "pull", "names", "b", "pair");
    res = runtime_run_task(rt, task, NULL, &out);
    json_decref(task);
    assert_status(res, "ok");
    assert_int_equal(out.count, 2);
    json_t *b = json_object_get(json_object_get(res, "value"), "b");
    json_t *want = json_loads("{\"$nd\":0,\"dtype\":\"int64\",\"shape\":[4]}", 0, NULL);
    assert_true(json_equal(b, want));
    json_decref(want);
    assert_int_equal(out.items[0].len, 32);
    const int64_t *got = (const int64_t *)out.items[0].data;
    assert_int_equal(got[3], 60);
    json_t *m = json_array_get(json_object_get(json_object_get(res, "value"), "pair"), 0);
    assert_int_equal(json_integer_value(json_object_get(m, "$nd")), 1);
    assert_string_equal(json_string_value(json_object_get(m, "dtype")), "float32");
    assert_int_equal(out.items[1].len, 24);
    json_decref(res);
    blobs_free(&out);

    /* an execute that returns an array carries it as a blob */
    blobs_init(&out);
    task = json_pack("{s:s, s:s}", "op", "execute", "code", "return nd.linspace(0, 1, 3)");
    res = runtime_run_task(rt, task, NULL, &out);
    json_decref(task);
    assert_status(res, "ok");
    assert_int_equal(out.count, 1);
    double last;
    memcpy(&last, out.items[0].data + 2 * sizeof last, sizeof last);
    assert_true(last == 1.0);
    json_decref(res);
    blobs_free(&out);

    /* a failing pull leaves no blobs behind */
    blobs_init(&out);
    task = json_pack("{s:s, s:[s, s]}", "op", "pull", "names", "b", "nope");
    res = runtime_run_task(rt, task, NULL, &out);
    json_decref(task);
    assert_status(res, "error");
    assert_int_equal(out.count, 0);
    json_decref(res);
    blobs_free(&out);

    /* a malformed placeholder is an error, nothing is assigned */
    blobs_init(&in);
    assert_int_equal(blobs_push(&in, malloc(8), 8), 0);
    task = json_loads("{\"op\":\"push\",\"ns\":{\"zz\":1,"
                      "\"y\":{\"$nd\":0,\"dtype\":\"int64\",\"shape\":[4]}}}",
                      0, NULL);
    res = runtime_run_task(rt, task, &in, NULL);
    json_decref(task);
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "ValueError");
    json_decref(res);
    blobs_free(&in);
    assert_exec_int(rt, "return zz == nil and 1 or 0", 1);
}

static void test_errors(void **state)
{
    runtime *rt = *state;
    json_t *res = execute(rt, "x = = 1");
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "SyntaxError");
    assert_non_null(strstr(str(res, "evalue"), "<execute>:1:"));
    assert_true(json_is_array(json_object_get(res, "traceback")));
    json_decref(res);

    res = execute(rt, "local function inner() error('boom') end\nlocal function outer() "
                      "inner() end\nouter()");
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "RuntimeError");
    assert_string_equal(str(res, "evalue"), "<execute>:1: boom");
    json_t *tb = json_object_get(res, "traceback");
    assert_true(json_array_size(tb) >= 4);
    char *all = json_dumps(tb, 0);
    assert_non_null(strstr(all, "stack traceback:"));
    assert_non_null(strstr(all, "'inner'"));
    assert_non_null(strstr(all, "in main chunk"));
    free(all);
    json_decref(res);

    res = execute(rt, "error(setmetatable({}, {__tostring = function() return 'custom' end}))");
    assert_status(res, "error");
    assert_string_equal(str(res, "evalue"), "custom");
    json_decref(res);

    res = execute(rt, "error({code = 1})");
    assert_status(res, "error");
    assert_non_null(strstr(str(res, "evalue"), "table value"));
    json_decref(res);

    res = execute(rt, "return print");
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "TypeError");
    json_decref(res);

    res = execute(rt, "os.exit(1)");
    assert_status(res, "error");
    assert_non_null(strstr(str(res, "evalue"), "os.exit"));
    json_decref(res);

    /* binary chunks are refused */
    assert_exec_int(rt,
                    "local f, msg = load(string.dump(function() end), 'x', 'b') "
                    "return (f == nil and msg:find('binary')) and 1 or 0",
                    1);
    assert_exec_int(rt, "return load('return 5', 'x', 'bt', {})()", 5);
    assert_exec_int(rt, "local env = {v = 9} return load('return v', 'x', nil, env)()", 9);
    json_t *task = json_pack("{s:s, s:s#}", "op", "execute", "code", "\x1bLua", (size_t)4);
    res = runtime_run_task(rt, task, NULL, NULL);
    json_decref(task);
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "SyntaxError");
    json_decref(res);

    /* protocol errors */
    const char *bad[] = {"{\"op\":\"dance\"}",
                         "{\"code\":\"x\"}",
                         "{\"op\":\"execute\"}",
                         "{\"op\":\"push\",\"ns\":3}",
                         "{\"op\":\"pull\",\"names\":[1]}",
                         "{\"op\":\"apply\",\"function\":\"print\",\"args\":{}}"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        res = run_json(rt, bad[k]);
        assert_status(res, "error");
        assert_string_equal(str(res, "ename"), "ProtocolError");
        json_decref(res);
    }

    /* still usable */
    assert_exec_int(rt, "y = 5 return y * 2", 10);
}

/* op "map": every item gets its own outcome.  A failing item is null in
 * "value" with an entry in "item_errors" and the chunk goes on; the chunk is
 * then "error" with that item's error, keeping the value and its blobs. */
static void test_map_item_errors(void **state)
{
    runtime *rt = *state;
    json_t *res = execute(rt, "function inv(x) if x == 0 then error('zero') end return 1/x end\n"
                              "function arr(x) if x == 0 then error('zero') end "
                              "return nd.arange(x) end\n"
                              "function kind(x) if x == nil then return 'nil' end "
                              "return math.type(x) or type(x) end\n"
                              "function fn_at_2(x) if x == 2 then return print end return x end");
    assert_status(res, "ok");
    json_decref(res);

    res = run_json(rt, "{\"op\":\"map\",\"function\":\"inv\",\"sequences\":[[1,2,0,4]]}");
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "RuntimeError");
    assert_non_null(strstr(str(res, "evalue"), "zero"));
    json_t *want = json_loads("[1.0, 0.5, null, 0.25]", 0, NULL);
    assert_true(json_equal(json_object_get(res, "value"), want));
    json_decref(want);
    json_t *errors = json_object_get(res, "item_errors");
    assert_int_equal(json_array_size(errors), 1);
    json_t *e = json_array_get(errors, 0);
    assert_int_equal(json_integer_value(json_object_get(e, "index")), 2);
    assert_string_equal(str(e, "ename"), "RuntimeError");
    assert_non_null(strstr(str(e, "evalue"), "zero"));
    assert_true(json_array_size(json_object_get(e, "traceback")) > 1);
    json_decref(res);

    /* Items around a failed one keep their array results (and blobs). */
    json_t *task =
        json_loads("{\"op\":\"map\",\"function\":\"arr\",\"sequences\":[[1,0,2]]}", 0, NULL);
    ippc_blobs out;
    blobs_init(&out);
    res = runtime_run_task(rt, task, NULL, &out);
    assert_status(res, "error");
    json_t *value = json_object_get(res, "value");
    assert_int_equal(json_array_size(value), 3);
    assert_true(json_is_null(json_array_get(value, 1)));
    assert_int_equal(out.count, 2);
    nd_ref ref;
    ippc_error err;
    assert_int_equal(value_nd_ref(json_array_get(value, 2), &out, &ref, &err), 1);
    assert_int_equal(ref.blob, 1);
    assert_int_equal(ref.count, 2);
    json_decref(res);
    json_decref(task);
    blobs_free(&out);

    /* A result that cannot be sent fails its item only. */
    res = run_json(rt, "{\"op\":\"map\",\"function\":\"fn_at_2\",\"sequences\":[[1,2,3]]}");
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "TypeError");
    want = json_loads("[1, null, 3]", 0, NULL);
    assert_true(json_equal(json_object_get(res, "value"), want));
    json_decref(want);
    json_decref(res);

    /* All well: "ok", no item_errors; a null item is a nil argument. */
    res = run_json(rt, "{\"op\":\"map\",\"function\":\"kind\",\"sequences\":[[1,null,2.5]]}");
    assert_status(res, "ok");
    assert_null(json_object_get(res, "item_errors"));
    want = json_loads("[\"integer\", \"nil\", \"float\"]", 0, NULL);
    assert_true(json_equal(json_object_get(res, "value"), want));
    json_decref(want);
    json_decref(res);

    /* Failing before any item: the chunk fails as a whole, with no value. */
    res = run_json(rt, "{\"op\":\"map\",\"function\":\"nope\",\"sequences\":[[1]]}");
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "NameError");
    assert_null(json_object_get(res, "value"));
    assert_null(json_object_get(res, "item_errors"));
    json_decref(res);
}

static void test_psum(void **state)
{
    runtime *rt = *state;
    json_t *res =
        run_json(rt, "{\"op\":\"run\",\"filename\":\"psum.lua\",\"source\":"
                     "\"function psum(a) return mpi.allreduce(a:sum(), \\\"sum\\\") end\"}");
    assert_status(res, "ok");
    json_decref(res);

    ippc_blobs in;
    blobs_init(&in);
    int64_t *data = malloc(16 * sizeof *data);
    for (int i = 0; i < 16; i++)
        data[i] = i;
    blobs_push(&in, (unsigned char *)data, 16 * sizeof *data);
    json_t *task = json_loads("{\"op\":\"push\",\"ns\":{"
                              "\"a\":{\"$nd\":0,\"dtype\":\"int64\",\"shape\":[16]}}}",
                              0, NULL);
    res = runtime_run_task(rt, task, &in, NULL);
    json_decref(task);
    blobs_free(&in);
    assert_status(res, "ok");
    json_decref(res);

    res = run_json(rt, "{\"op\":\"apply\",\"function\":\"psum\",\"args\":[{\"$ref\":\"a\"}]}");
    assert_status(res, "ok");
    json_t *v = json_object_get(res, "value");
    assert_true(json_is_integer(v));
    assert_int_equal(json_integer_value(v), 120);
    json_decref(res);

    res = execute(rt, "totalsum = psum(a)");
    assert_status(res, "ok");
    json_decref(res);
    res = run_json(rt, "{\"op\":\"pull\",\"names\":[\"totalsum\"]}");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(res, "value"), "totalsum")),
                     120);
    json_decref(res);
}

static void test_mpi_singleton(void **state)
{
    runtime *rt = *state;
    assert_exec_int(rt, "return mpi.rank()", 0);
    assert_exec_int(rt, "return mpi.size()", 1);
    assert_exec_int(rt, "mpi.barrier() return 1", 1);
    assert_exec_int(rt,
                    "local r = mpi.allreduce(5, 'max') return math.type(r) == 'integer' "
                    "and r or -1",
                    5);
    assert_exec_int(rt, "local r = mpi.allreduce(2.5) return math.type(r) == 'float' and 1 or 0",
                    1);
    assert_exec_int(rt,
                    "local a = nd.arange(4, 'int32') local r = mpi.allreduce(a, 'prod') "
                    "r[1] = 9 return (a[1] == 0 and r:dtype() == 'int32' and #r == 4) and 1 or 0",
                    1);
    assert_exec_int(rt, "local t = mpi.bcast({x = {1, 2}}, 0) return t.x[2]", 2);
    assert_exec_int(rt, "return mpi.bcast(7)", 7);
    assert_exec_int(rt, "return mpi.wtime() > 0 and 1 or 0", 1);
    assert_exec_int(rt, "return require('mpi') == mpi and 1 or 0", 1);

    json_t *res = execute(rt, "mpi.allreduce(1, 'avg')");
    assert_status(res, "error");
    assert_non_null(strstr(str(res, "evalue"), "invalid option 'avg'"));
    json_decref(res);
    res = execute(rt, "mpi.allreduce('x')");
    assert_status(res, "error");
    assert_non_null(strstr(str(res, "evalue"), "table of numbers or nd array expected"));
    json_decref(res);
    res = execute(rt, "mpi.bcast(1, 3)");
    assert_status(res, "error");
    assert_non_null(strstr(str(res, "evalue"), "root"));
    json_decref(res);
}

/* ---- interrupts */

static void assert_interrupts(runtime *rt, const char *code)
{
    interrupter it;
    interrupter_start(&it, rt, 150);
    json_t *res = execute(rt, code);
    interrupter_stop(&it);
    assert_status(res, "aborted");
    assert_string_equal(str(res, "ename"), "Aborted");
    assert_true(json_is_array(json_object_get(res, "traceback")));
    json_decref(res);
}

static void test_interrupt(void **state)
{
    runtime *rt = *state;
    /* idle interrupts are dropped when the next task starts */
    runtime_interrupt(rt);
    assert_exec_int(rt, "local s = 0 for i = 1, 100000 do s = s + 1 end return s", 100000);

    assert_interrupts(rt, "print('before') while true do end");
    assert_exec_int(rt, "return 1", 1);

    /* pcall inside the loop cannot swallow it for good */
    assert_interrupts(rt, "while true do pcall(function() for i = 1, 1e9 do end end) end");
    assert_interrupts(rt, "while true do xpcall(function() while true do end end, "
                          "function(m) return m end) end");
    /* a loop inside a coroutine (a hook belongs to one lua_State) */
    assert_interrupts(rt, "local co = coroutine.wrap(function() while true do end end) co()");
    assert_interrupts(rt, "local co = coroutine.create(function() while true do end end) "
                          "while true do coroutine.resume(co) end");
    assert_interrupts(rt, "local co = coroutine.create(function() while true do "
                          "coroutine.yield() end end) while true do coroutine.resume(co) end");
    /* the state is still usable, with its namespace */
    assert_exec_int(rt, "kept = 3 return kept", 3);
    assert_exec_int(rt,
                    "local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) "
                    "return b * 2 end) local x = co(1) return co(x) + kept",
                    7);
    json_t *res = execute(rt, "local co = coroutine.wrap(function() error('in co') end) co()");
    assert_status(res, "error");
    assert_non_null(strstr(str(res, "evalue"), "in co"));
    json_decref(res);
}

/* engine/main.c interrupts from its SIGTERM handler: the same from SIGALRM. */
static runtime *signal_target;

static void on_alarm(int sig)
{
    (void)sig;
    runtime_interrupt(signal_target);
}

static void assert_interrupts_by_signal(runtime *rt, const char *code)
{
    signal_target = rt;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGALRM, &sa, NULL), 0);
    /* every 100 ms after the first 150: one signal that comes before the
     * task starts is dropped with the flag (see interrupter.h) */
    struct itimerval t = {{0, 100000}, {0, 150000}};
    assert_int_equal(setitimer(ITIMER_REAL, &t, NULL), 0);
    json_t *res = execute(rt, code);
    struct itimerval off = {{0, 0}, {0, 0}};
    assert_int_equal(setitimer(ITIMER_REAL, &off, NULL), 0);
    assert_status(res, "aborted");
    json_decref(res);
    signal(SIGALRM, SIG_DFL);
}

static void test_interrupt_from_signal(void **state)
{
    runtime *rt = *state;
    assert_interrupts_by_signal(rt, "while true do end");
    /* a signal that lands while coroutines are entered and left all the time */
    assert_interrupts_by_signal(rt, "local co = coroutine.wrap(function() while true do "
                                    "coroutine.yield() end end) while true do co() end");
    assert_exec_int(rt, "return 4", 4);
}

/* ---- namespace ops */

static json_t *op(runtime *rt, const char *text)
{
    json_error_t jerr;
    json_t *task = json_loads(text, 0, &jerr);
    if (!task)
        fail_msg("bad test JSON: %s", text);
    json_t *res = runtime_run_task(rt, task, NULL, NULL);
    json_decref(task);
    assert_non_null(res);
    return res;
}

static void test_namespace_ops(void **state)
{
    runtime *rt = *state;
    json_t *res = execute(rt, "a = nd.zeros({2, 3}, 'float32') s = 'hello' i = 3 f = 2.5 "
                              "b = false t = {1, 2, 3, x = 1} function fn() end "
                              "co = coroutine.create(fn) print = print string = string "
                              "mpi = 'mine'");
    assert_status(res, "ok");
    json_decref(res);
    res = op(rt, "{\"op\":\"list\"}");
    assert_status(res, "ok");
    char *got = json_dumps(json_object_get(res, "value"), JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(got, "{\"a\":{\"bytes\":24,\"dtype\":\"float32\",\"shape\":[2,3],"
                             "\"type\":\"nd\"},\"b\":{\"type\":\"boolean\"},"
                             "\"co\":{\"type\":\"thread\"},\"f\":{\"type\":\"number\"},"
                             "\"fn\":{\"type\":\"function\"},\"i\":{\"type\":\"integer\"},"
                             "\"mpi\":{\"bytes\":4,\"type\":\"string\"},"
                             "\"s\":{\"bytes\":5,\"type\":\"string\"},"
                             "\"t\":{\"length\":3,\"type\":\"table\"}}");
    free(got);
    json_decref(res);

    /* delete: all or nothing */
    res = op(rt, "{\"op\":\"delete\",\"names\":[\"s\",\"nope\"]}");
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "NameError");
    assert_non_null(strstr(str(res, "evalue"), "'nope'"));
    json_decref(res);
    assert_exec_int(rt, "return #s", 5);
    res = op(rt, "{\"op\":\"delete\",\"names\":[\"s\",\"i\"]}");
    assert_status(res, "ok");
    assert_null(json_object_get(res, "value"));
    json_decref(res);
    assert_exec_int(rt, "return (s == nil and i == nil) and 1 or 0", 1);
    res = op(rt, "{\"op\":\"delete\",\"names\":\"a\"}");
    assert_status(res, "error");
    assert_string_equal(str(res, "ename"), "ProtocolError");
    json_decref(res);
    res = op(rt, "{\"op\":\"delete\",\"names\":[1]}");
    assert_status(res, "error");
    json_decref(res);

    /* reset: user globals gone, the library (even one overwritten) back */
    res = execute(rt, "print = nil nd = nil package.loaded.mymod = {} x = 1");
    assert_status(res, "ok");
    json_decref(res);
    res = op(rt, "{\"op\":\"reset\"}");
    assert_status(res, "ok");
    json_decref(res);
    res = op(rt, "{\"op\":\"list\"}");
    assert_int_equal(json_object_size(json_object_get(res, "value")), 0);
    json_decref(res);
    assert_exec_int(rt,
                    "return (x == nil and a == nil and type(print) == 'function' and "
                    "nd.zeros(2):size() == 2 and mpi.size() == 1 and "
                    "package.loaded.mymod == nil and package.loaded.string ~= nil) and 1 or 0",
                    1);
    res = execute(rt, "print('after reset')");
    assert_string_equal(str(res, "stdout"), "after reset\n");
    json_decref(res);
}

/* ---- streaming stdout */

typedef struct sink_log {
    char data[1 << 17];
    size_t len;
    int calls;
    uint64_t task;
} sink_log;

static void sink(void *arg, uint64_t task, const char *data, size_t len)
{
    sink_log *log = arg;
    log->calls++;
    log->task = task;
    if (log->len + len <= sizeof log->data) {
        memcpy(log->data + log->len, data, len);
        log->len += len;
    }
}

static void test_stdout_sink(void **state)
{
    runtime *rt = *state;
    sink_log *log = calloc(1, sizeof *log);
    runtime_set_stdout_sink(rt, sink, log);
    /* the first line goes at once; the rest at most every ~100 ms */
    json_t *res = run_json(rt, "{\"op\":\"execute\",\"task\":77,\"code\":"
                               "\"print('one') "
                               "for i = 1, 100 do io.write(i, ' ') end print()\"}");
    assert_status(res, "ok");
    assert_int_equal(log->task, 77);
    assert_int_equal(log->len, strlen(str(res, "stdout")));
    assert_memory_equal(log->data, str(res, "stdout"), log->len);
    assert_true(log->calls >= 2 && log->calls <= 4); /* "one\n" at once, the rest at the end */
    json_decref(res);

    /* 64 KiB waiting: passed on without waiting for the period */
    memset(log, 0, sizeof *log);
    res = execute(rt, "local s = string.rep('x', 1000) for i = 1, 100 do print(s) end");
    assert_int_equal(log->len, 100 * 1001);
    assert_true(log->calls >= 2);
    json_decref(res);

    /* a slow task: output arrives while it runs, in order, exactly once */
    memset(log, 0, sizeof *log);
    res = execute(rt, "for i = 1, 5 do print(i) local t = os.clock() "
                      "while os.clock() - t < 0.12 do end end");
    assert_string_equal(str(res, "stdout"), "1\n2\n3\n4\n5\n");
    assert_int_equal(log->len, 10);
    assert_memory_equal(log->data, "1\n2\n3\n4\n5\n", 10);
    assert_true(log->calls >= 4);
    json_decref(res);

    /* errors and aborted tasks stream too; a silent task calls nothing */
    memset(log, 0, sizeof *log);
    res = execute(rt, "print('before') error('x')");
    assert_status(res, "error");
    assert_int_equal(log->len, 7);
    json_decref(res);
    memset(log, 0, sizeof *log);
    assert_exec_int(rt, "return 1", 1);
    assert_int_equal(log->calls, 0);

    runtime_set_stdout_sink(rt, NULL, NULL);
    assert_exec_int(rt, "print('quiet') return 2", 2);
    assert_int_equal(log->calls, 0);
    free(log);
}

/* ---- mpi through the runtime (one rank) */

static void test_mpi_recv_interrupt(void **state)
{
    runtime *rt = *state;
    assert_interrupts(rt, "mpi.recv(0, 5)");
    assert_interrupts(rt, "local r = mpi.irecv(0, 6) r:wait()");
    assert_exec_int(rt, "local q = mpi.isend(9, 0, 5) local v = mpi.recv(0, 5) q:wait() return v",
                    9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_execute_print, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_stdout_limits, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_run_and_apply, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_push_pull, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_push_pull_nd, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_errors, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_map_item_errors, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_psum, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_mpi_singleton, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_interrupt, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_interrupt_from_signal, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_namespace_ops, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_stdout_sink, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_mpi_recv_interrupt, rt_setup, rt_teardown),
    };
    return run_tests_with_mpi(MPI_THREAD_MULTIPLE, tests, NULL, NULL);
}
