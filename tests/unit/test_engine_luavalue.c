/* test_engine_luavalue.c — wire values (skeleton + blobs) <-> Lua values:
 * every JSON kind both ways, nd placeholders (zero-copy adoption, strided
 * arrays sent row-major, 0-d arrays as numbers), and every error (bad
 * placeholders, blobs used twice, unsendable values, cycles, depth, bad
 * UTF-8, conflicting keys) with the Lua stack and the blob list left as they
 * were. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <lualib.h>

#include "luavalue.h"
#include "nd.h"

#include "engine_harness.h"

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!j)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    return j;
}

/* Pushes the JSON text as a Lua value into global `v`. */
static void push_global(lua_State *L, const char *text, ippc_blobs *blobs)
{
    json_t *j = parse(text);
    ippc_error err;
    int top = lua_gettop(L);
    if (luavalue_push(L, j, blobs, &err) < 0)
        fail_msg("luavalue_push(%s): %s", text, err.message);
    assert_int_equal(lua_gettop(L), top + 1);
    lua_setglobal(L, "v");
    json_decref(j);
}

/* The wire form of the result of `code` as compact JSON text (caller frees). */
static char *wire_of(lua_State *L, const char *code, ippc_blobs *blobs)
{
    if (luaL_loadstring(L, code) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
        fail_msg("Lua error: %s", lua_tostring(L, -1));
    ippc_error err;
    json_t *j = luavalue_to_wire(L, -1, blobs, &err);
    if (!j)
        fail_msg("luavalue_to_wire(%s): %s", code, err.message);
    lua_pop(L, 1);
    char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    json_decref(j);
    return text;
}

static void assert_wire(lua_State *L, const char *code, const char *want)
{
    ippc_blobs blobs;
    blobs_init(&blobs);
    char *got = wire_of(L, code, &blobs);
    if (strcmp(got, want) != 0)
        fail_msg("%s: expected %s, got %s", code, want, got);
    free(got);
    blobs_free(&blobs);
}

/* `code` must not convert; the error mentions needle; nothing is left. */
static void assert_wire_fails(lua_State *L, const char *code, const char *needle)
{
    ippc_blobs blobs;
    blobs_init(&blobs);
    unsigned char *keep = malloc(3);
    blobs_push(&blobs, keep, 3); /* an earlier blob of the same message */
    if (luaL_loadstring(L, code) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
        fail_msg("Lua error: %s", lua_tostring(L, -1));
    int top = lua_gettop(L);
    ippc_error err = {0};
    json_t *j = luavalue_to_wire(L, -1, &blobs, &err);
    if (j)
        fail_msg("%s: expected an error", code);
    if (!strstr(err.message, needle))
        fail_msg("%s: error '%s' does not mention '%s'", code, err.message, needle);
    assert_int_equal(lua_gettop(L), top);
    assert_int_equal(blobs.count, 1); /* its own blobs are gone again */
    lua_settop(L, 0);
    blobs_free(&blobs);
}

static void test_push_scalars_and_containers(void **state)
{
    lua_State *L = *state;
    push_global(L, "null", NULL);
    lua_ok(L, "assert(v == nil)");
    push_global(L, "[true, false, 3, 2.5, \"s\\u00e9\", 9007199254740993]", NULL);
    lua_ok(L, "assert(v[1] == true and v[2] == false and v[3] == 3 and math.type(v[3]) == "
              "'integer' and v[4] == 2.5 and v[5] == 's\\xc3\\xa9' and v[6] == 9007199254740993)");
    push_global(L, "{\"a\": {\"b\": [1, {\"c\": \"d\"}]}, \"e\": {}}", NULL);
    lua_ok(L, "assert(v.a.b[2].c == 'd' and next(v.e) == nil)");
    push_global(L, "\"with\\u0000nul\"", NULL);
    lua_ok(L, "assert(#v == 8 and v:byte(5) == 0)");
}

static void test_push_arrays(void **state)
{
    lua_State *L = *state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    double *d = malloc(4 * sizeof *d);
    for (int i = 0; i < 4; i++)
        d[i] = i + 0.5;
    blobs_push(&blobs, (unsigned char *)d, 4 * sizeof *d);
    blobs_push(&blobs, NULL, 0);
    push_global(L,
                "{\"m\": {\"$nd\": 0, \"dtype\": \"float64\", \"shape\": [2, 2]},"
                " \"e\": {\"$nd\": 1, \"dtype\": \"int32\", \"shape\": [0, 3]}}",
                &blobs);
    assert_null(blobs.items[0].data); /* adopted, not copied */
    lua_getglobal(L, "v");
    lua_getfield(L, -1, "m");
    assert_ptr_equal(nd_data(nd_test(L, -1)), d);
    lua_settop(L, 0);
    lua_ok(L, "assert(v.m[2][2] == 3.5 and v.m:dtype() == 'float64')\n"
              "assert(v.e:size() == 0 and v.e:shape()[2] == 3 and v.e:dtype() == 'int32')");
    blobs_free(&blobs);
}

static void assert_push_fails(lua_State *L, const char *text, ippc_blobs *blobs, const char *needle)
{
    json_t *j = parse(text);
    ippc_error err = {0};
    int top = lua_gettop(L);
    if (luavalue_push(L, j, blobs, &err) == 0)
        fail_msg("luavalue_push(%s): expected an error", text);
    if (!strstr(err.message, needle))
        fail_msg("%s: error '%s' does not mention '%s'", text, err.message, needle);
    assert_int_equal(lua_gettop(L), top);
    json_decref(j);
}

/* null inside lists and objects is the `null` sentinel, in its place; the
 * whole value null is nil; both come back as null. */
static void test_nulls(void **state)
{
    lua_State *L = *state;
    luavalue_open(L);
    push_global(L, "[1, null, 3]", NULL);
    lua_ok(L, "assert(#v == 3 and v[1] == 1 and v[2] == null and v[3] == 3)");
    push_global(L, "[null, null]", NULL);
    lua_ok(L, "assert(#v == 2 and v[1] == null and v[2] == null)");
    push_global(L, "{\"n\": null, \"l\": [null]}", NULL);
    lua_ok(L, "assert(v.n == null and v.l[1] == null and #v.l == 1)");
    lua_ok(L, "assert(tostring(null) == 'null' and type(null) == 'userdata')\n"
              "assert(getmetatable(null) == 'null')\n"
              "assert(not pcall(setmetatable, null, {}))");
    push_global(L, "null", NULL);
    lua_ok(L, "assert(v == nil)");

    assert_wire(L, "return null", "null");
    assert_wire(L, "return {1, null, 3}", "[1,null,3]");
    assert_wire(L, "return {null}", "[null]");
    assert_wire(L, "return {a = null, b = {null, 2}}", "{\"a\":null,\"b\":[null,2]}");
    /* Holes: a table at least half full of positive integer keys is a
     * list, holes as null; a sparser one stays an object. */
    assert_wire(L, "return {1, nil, 3}", "[1,null,3]");
    assert_wire(L, "return {nil, 2}", "[null,2]");
    assert_wire(L, "return {[2] = 'b', [4] = 'd'}", "[null,\"b\",null,\"d\"]");
    assert_wire(L, "return {[1] = 'a', [4] = 'd'}", "[\"a\",null,null,\"d\"]");
    assert_wire(L, "return {[3] = 'c'}", "{\"3\":\"c\"}");
    assert_wire(L, "return {[1] = 'a', [5] = 'e'}", "{\"1\":\"a\",\"5\":\"e\"}");
    assert_wire(L, "return {[1000000] = 1}", "{\"1000000\":1}");
    assert_wire(L, "return {[0] = 'z', 'a'}", "{\"0\":\"z\",\"1\":\"a\"}");

    /* The sentinel survives a trip through the wire and back. */
    json_t *j = parse("[{\"k\": [null, 1]}, null]");
    ippc_error err;
    assert_int_equal(luavalue_push(L, j, NULL, &err), 0);
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *back = luavalue_to_wire(L, -1, &blobs, &err);
    assert_true(json_equal(back, j));
    lua_settop(L, 0);
    json_decref(back);
    blobs_free(&blobs);
    json_decref(j);
}

/* Without luavalue_open the sentinel is still made (and is the same one). */
static void test_null_without_open(void **state)
{
    lua_State *L = *state;
    push_global(L, "[null]", NULL);
    luavalue_push_null(L);
    lua_getglobal(L, "v");
    lua_rawgeti(L, -1, 1);
    assert_true(lua_rawequal(L, -1, -3));
    assert_true(luavalue_is_null(L, -1));
    assert_false(luavalue_is_null(L, -2));
    lua_pushnil(L);
    assert_false(luavalue_is_null(L, -1));
    lua_settop(L, 0);
}

static void test_push_errors(void **state)
{
    lua_State *L = *state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    blobs_push(&blobs, calloc(1, 16), 16);
    assert_push_fails(L,
                      "[{\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [2]},"
                      " {\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [2]}]",
                      &blobs, "referenced twice");
    blobs_free(&blobs);
    blobs_init(&blobs);
    blobs_push(&blobs, calloc(1, 16), 16);
    assert_push_fails(L, "{\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [3]}", &blobs, "");
    assert_push_fails(L, "{\"$nd\": 5, \"dtype\": \"int64\", \"shape\": [2]}", &blobs, "");
    assert_push_fails(L, "{\"$nd\": 0, \"dtype\": \"complex\", \"shape\": [2]}", &blobs, "");
    assert_non_null(blobs.items[0].data); /* nothing adopted by a failure */
    blobs_free(&blobs);
    /* nesting deeper than the limit is an error, not a deep recursion */
    size_t depth = LUAVALUE_MAX_DEPTH + 2;
    char *deep = malloc(2 * depth + 1);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[2 * depth] = 0;
    assert_push_fails(L, deep, NULL, "deeper");
    free(deep);
    json_t *missing = NULL;
    ippc_error err;
    assert_int_equal(luavalue_push(L, missing, NULL, &err), -1);
}

static void test_wire_values(void **state)
{
    lua_State *L = *state;
    assert_wire(L, "return nil", "null");
    assert_wire(L, "return true", "true");
    assert_wire(L, "return 42", "42");
    assert_wire(L, "return 2.5", "2.5");
    assert_wire(L, "return 0/0", "null");
    assert_wire(L, "return 1/0", "null");
    assert_wire(L, "return 'h\\u{e9}'", "\"h\xc3\xa9\"");
    assert_wire(L, "return {1, 2, {3}}", "[1,2,[3]]");
    assert_wire(L, "return {}", "[]");
    assert_wire(L, "return {a = 1, b = {c = true}}", "{\"a\":1,\"b\":{\"c\":true}}");
    assert_wire(L, "return {[1] = 'x', [3] = 'z'}", "[\"x\",null,\"z\"]");
    assert_wire(L, "return {[1] = 'x', [9] = 'z'}", "{\"1\":\"x\",\"9\":\"z\"}");
    assert_wire(L, "return {1, 2, n = 3}", "{\"1\":1,\"2\":2,\"n\":3}");
    assert_wire(L, "return nd.array(5)", "5");
    assert_wire(L, "return nd.array(0.5, 'float32')", "0.5");
    assert_wire(L, "return setmetatable({}, {__index = function() return 1 end})", "[]");
}

static void test_wire_arrays(void **state)
{
    lua_State *L = *state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    char *text = wire_of(
        L, "return {a = nd.arange(3, 'int32'), t = nd.arange(6):reshape(2, 3):T()}", &blobs);
    assert_int_equal(blobs.count, 2);
    json_t *j = parse(text);
    free(text);
    nd_ref ra, rt;
    ippc_error err;
    assert_int_equal(value_nd_ref(json_object_get(j, "a"), &blobs, &ra, &err), 1);
    assert_int_equal(value_nd_ref(json_object_get(j, "t"), &blobs, &rt, &err), 1);
    assert_int_equal(ra.dtype, ND_INT32);
    assert_int_equal(rt.ndim, 2);
    assert_int_equal(rt.shape[0], 3);
    int64_t want[6] = {0, 3, 1, 4, 2, 5}; /* the transpose, row-major */
    assert_memory_equal(blobs.items[rt.blob].data, want, sizeof want);
    json_decref(j);
    blobs_free(&blobs);

    /* round trip: wire -> Lua -> wire keeps dtype, shape and bytes */
    blobs_init(&blobs);
    text = wire_of(L, "return nd.random({4, 5}, 3):astype('float32')", &blobs);
    j = parse(text);
    free(text);
    ippc_error e2;
    assert_int_equal(luavalue_push(L, j, &blobs, &e2), 0);
    lua_setglobal(L, "back");
    lua_ok(L, "assert(back:dtype() == 'float32' and back:shape()[2] == 5)\n"
              "assert(back:eq(nd.random({4, 5}, 3):astype('float32')):sum() == 20)");
    json_decref(j);
    blobs_free(&blobs);
}

static void test_wire_errors(void **state)
{
    lua_State *L = *state;
    assert_wire_fails(L, "return print", "function");
    assert_wire_fails(L, "return {f = print}", "function");
    assert_wire_fails(L, "return coroutine.create(print)", "thread");
    assert_wire_fails(L, "return io.stdout", "userdata");
    assert_wire_fails(L, "local t = {} t.self = t return t", "contains itself");
    assert_wire_fails(L, "return {[1.5] = 1}", "non-integer number key");
    assert_wire_fails(L, "return {[true] = 1}", "boolean key");
    assert_wire_fails(L, "return {['1'] = 'a', [1] = 'b', x = 1}", "twice");
    assert_wire_fails(L, "return '\\xff\\xfe'", "UTF-8");
    assert_wire_fails(L, "return {['\\xff'] = 1}", "UTF-8");
    assert_wire_fails(L, "return {a = nd.arange(3), b = print}", "function");
    assert_wire_fails(L,
                      "local t = {} local c = t for i = 1, 100 do c[1] = {} c = c[1] end "
                      "return t",
                      "deeper");
    /* the same table twice (not a cycle) is fine */
    assert_wire(L, "local s = {1} return {s, s}", "[[1],[1]]");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_push_scalars_and_containers, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_nulls, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_null_without_open, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_push_arrays, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_push_errors, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_wire_values, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_wire_arrays, lua_setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_wire_errors, lua_setup, lua_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
