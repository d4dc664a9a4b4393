/* test_value.c — common/value.c: client <-> skeleton round trips, typed arrays,
 * hostile input, scatter_partition, value_scatter and value_gather. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "value.h"

/* ---------------------------------------------------------------- helpers */

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!v)
        print_error("bad test JSON '%s': %s\n", text, jerr.text);
    assert_non_null(v);
    return v;
}

static void assert_json_is(const json_t *got, const char *want_text)
{
    json_t *want = parse(want_text);
    if (!json_equal((json_t *)got, want)) {
        char *dump = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
        print_error("got  %s\nwant %s\n", dump ? dump : "(null)", want_text);
        free(dump);
    }
    assert_true(json_equal((json_t *)got, want));
    json_decref(want);
}

/* Client text -> skeleton, asserting success. */
static json_t *skel_from(const char *text, ippc_blobs *blobs)
{
    json_t *in = parse(text);
    ippc_error err = {{0}, {0}};
    json_t *skel = value_from_client(in, blobs, &err);
    if (!skel)
        print_error("value_from_client('%s'): %s: %s\n", text, err.code, err.message);
    assert_non_null(skel);
    json_decref(in);
    return skel;
}

static json_t *to_client(const json_t *skel, const ippc_blobs *blobs, value_format fmt)
{
    ippc_error err = {{0}, {0}};
    json_t *out = value_to_client(skel, blobs, fmt, &err);
    if (!out)
        print_error("value_to_client: %s: %s\n", err.code, err.message);
    assert_non_null(out);
    return out;
}

/* client text -> skeleton -> client (fmt) must give want_text. */
static void assert_round_trip(const char *in_text, value_format fmt, const char *want_text)
{
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = skel_from(in_text, &blobs);
    json_t *out = to_client(skel, &blobs, fmt);
    assert_json_is(out, want_text);
    json_decref(out);
    json_decref(skel);
    blobs_free(&blobs);
}

/* value_from_client must fail with code and leave blobs untouched. */
static void assert_rejected(const char *in_text, const char *code)
{
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *in = parse(in_text);
    ippc_error err = {{0}, {0}};
    json_t *skel = value_from_client(in, &blobs, &err);
    if (skel) {
        char *dump = json_dumps(skel, JSON_COMPACT | JSON_ENCODE_ANY);
        print_error("'%s' was accepted as %s\n", in_text, dump);
        free(dump);
    }
    assert_null(skel);
    assert_string_equal(err.code, code);
    assert_true(err.message[0] != '\0');
    assert_int_equal(blobs.count, 0);
    json_decref(in);
    blobs_free(&blobs);
}

static int64_t blob_int64(const ippc_blobs *blobs, size_t blob, size_t i)
{
    int64_t v;
    assert_true(blob < blobs->count);
    assert_true((i + 1) * sizeof v <= blobs->items[blob].len);
    memcpy(&v, blobs->items[blob].data + i * sizeof v, sizeof v);
    return v;
}

static double blob_float64(const ippc_blobs *blobs, size_t blob, size_t i)
{
    double v;
    assert_true(blob < blobs->count);
    assert_true((i + 1) * sizeof v <= blobs->items[blob].len);
    memcpy(&v, blobs->items[blob].data + i * sizeof v, sizeof v);
    return v;
}

/* Pushes a copy of len bytes as a new blob and returns its index. */
static size_t push_copy(ippc_blobs *blobs, const void *bytes, size_t len)
{
    unsigned char *data = malloc(len ? len : 1);
    assert_non_null(data);
    memcpy(data, bytes, len);
    long index = blobs_push(blobs, data, len);
    assert_true(index >= 0);
    return (size_t)index;
}

/* ----------------------------------------------------------------- dtypes */

static void test_dtypes(void **state)
{
    (void)state;
    assert_string_equal(nd_dtype_name(ND_FLOAT64), "float64");
    assert_string_equal(nd_dtype_name(ND_UINT8), "uint8");
    assert_null(nd_dtype_name(ND_DTYPE_COUNT));
    assert_null(nd_dtype_name((nd_dtype)-1));
    assert_int_equal(nd_dtype_parse("int32"), ND_INT32);
    assert_int_equal(nd_dtype_parse("float32"), ND_FLOAT32);
    assert_int_equal(nd_dtype_parse("float16"), -1);
    assert_int_equal(nd_dtype_parse(""), -1);
    assert_int_equal(nd_dtype_parse(NULL), -1);
    assert_int_equal(nd_dtype_size(ND_FLOAT64), 8);
    assert_int_equal(nd_dtype_size(ND_FLOAT32), 4);
    assert_int_equal(nd_dtype_size(ND_INT64), 8);
    assert_int_equal(nd_dtype_size(ND_INT32), 4);
    assert_int_equal(nd_dtype_size(ND_UINT8), 1);
}

/* ------------------------------------------------------------------ blobs */

static void test_blobs_push_and_append(void **state)
{
    (void)state;
    ippc_blobs a, b;
    blobs_init(&a);
    blobs_init(&b);
    for (int i = 0; i < 10; i++)
        assert_int_equal(push_copy(&a, &i, sizeof i), (size_t)i);
    assert_int_equal(push_copy(&b, "xy", 2), 0);
    assert_int_equal(push_copy(&b, "z", 1), 1);
    assert_int_equal(blobs_append_all(&a, &b), 10);
    assert_int_equal(a.count, 12);
    assert_int_equal(b.count, 0);
    assert_null(b.items);
    assert_int_equal(a.items[10].len, 2);
    assert_memory_equal(a.items[11].data, "z", 1);
    assert_int_equal(blobs_append_all(&a, &b), 12); /* empty source */
    blobs_free(&a);
    blobs_free(&b);
    assert_int_equal(a.count, 0);
}

/* ------------------------------------------------------ client -> skeleton */

static void test_int_list_becomes_int64_array(void **state)
{
    (void)state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = skel_from("[1, -2, 3000000000]", &blobs);
    assert_json_is(skel, "{\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [3]}");
    assert_int_equal(blobs.count, 1);
    assert_int_equal(blobs.items[0].len, 24);
    assert_int_equal(blob_int64(&blobs, 0, 0), 1);
    assert_int_equal(blob_int64(&blobs, 0, 1), -2);
    assert_int_equal(blob_int64(&blobs, 0, 2), 3000000000LL);

    nd_ref ref;
    ippc_error err;
    assert_int_equal(value_nd_ref(skel, &blobs, &ref, &err), 1);
    assert_int_equal(ref.dtype, ND_INT64);
    assert_int_equal(ref.ndim, 1);
    assert_int_equal(ref.shape[0], 3);
    assert_int_equal(ref.count, 3);
    assert_int_equal(ref.blob, 0);
    json_decref(skel);
    blobs_free(&blobs);
    assert_round_trip("[1, -2, 3000000000]", VALUE_FORMAT_LIST, "[1, -2, 3000000000]");
}

static void test_float_list_becomes_float64_array(void **state)
{
    (void)state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = skel_from("[1.5, 2, -0.25]", &blobs);
    assert_json_is(skel, "{\"$nd\": 0, \"dtype\": \"float64\", \"shape\": [3]}");
    assert_true(blob_float64(&blobs, 0, 0) == 1.5);
    assert_true(blob_float64(&blobs, 0, 1) == 2.0);
    assert_true(blob_float64(&blobs, 0, 2) == -0.25);
    json_decref(skel);
    blobs_free(&blobs);
    /* the integer 2 comes back as the real 2.0: the array is float64 */
    assert_round_trip("[1.5, 2, -0.25]", VALUE_FORMAT_LIST, "[1.5, 2.0, -0.25]");
}

static void test_mixed_lists_stay_json(void **state)
{
    (void)state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = skel_from("[1, \"a\", true, null, 2.5]", &blobs);
    assert_json_is(skel, "[1, \"a\", true, null, 2.5]");
    assert_int_equal(blobs.count, 0);
    json_decref(skel);

    /* booleans are not numbers */
    skel = skel_from("[1, true]", &blobs);
    assert_json_is(skel, "[1, true]");
    json_decref(skel);

    /* ragged: each row becomes its own array */
    skel = skel_from("[[1, 2], [3]]", &blobs);
    assert_json_is(skel, "[{\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [2]},"
                         " {\"$nd\": 1, \"dtype\": \"int64\", \"shape\": [1]}]");
    assert_int_equal(blobs.count, 2);
    json_decref(skel);
    blobs_free(&blobs);

    assert_round_trip("[[1, 2], [3]]", VALUE_FORMAT_LIST, "[[1, 2], [3]]");
    assert_round_trip("[[1, 2], 3]", VALUE_FORMAT_LIST, "[[1, 2], 3]");
    assert_round_trip("[[1, 2], [3, \"x\"]]", VALUE_FORMAT_LIST, "[[1, 2], [3, \"x\"]]");
    /* null keeps its place: a list with null is no array, and stays JSON */
    assert_round_trip("[1, null, 3]", VALUE_FORMAT_LIST, "[1, null, 3]");
    assert_round_trip("[[1, 2], null, {\"a\": null}]", VALUE_FORMAT_TYPED,
                      "[{\"dtype\": \"int64\", \"shape\": [2], \"data\": "
                      "\"AQAAAAAAAAACAAAAAAAAAA==\"}, null, {\"a\": null}]");
}

static void test_empty_lists_stay_lists(void **state)
{
    (void)state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = skel_from("[]", &blobs);
    assert_json_is(skel, "[]");
    json_decref(skel);
    skel = skel_from("[[], []]", &blobs);
    assert_json_is(skel, "[[], []]");
    json_decref(skel);
    assert_int_equal(blobs.count, 0);
    blobs_free(&blobs);
}

static void test_scalars_pass_through(void **state)
{
    (void)state;
    assert_round_trip("42", VALUE_FORMAT_LIST, "42");
    assert_round_trip("-1.5", VALUE_FORMAT_LIST, "-1.5");
    assert_round_trip("\"text\"", VALUE_FORMAT_TYPED, "\"text\"");
    assert_round_trip("null", VALUE_FORMAT_LIST, "null");
    assert_round_trip("false", VALUE_FORMAT_LIST, "false");
}

static void test_nested_objects(void **state)
{
    (void)state;
    const char *text = "{\"a\": [1, 2], \"b\": \"x\", \"c\": {\"d\": [[1.5, 2.5], [3.5, 4.5]],"
                       " \"e\": [\"y\", {\"f\": [7]}]}}";
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = skel_from(text, &blobs);
    assert_json_is(skel, "{\"a\": {\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [2]},"
                         " \"b\": \"x\","
                         " \"c\": {\"d\": {\"$nd\": 1, \"dtype\": \"float64\", \"shape\": [2, 2]},"
                         "        \"e\": [\"y\", {\"f\": {\"$nd\": 2, \"dtype\": \"int64\","
                         " \"shape\": [1]}}]}}");
    assert_int_equal(blobs.count, 3);
    assert_true(blob_float64(&blobs, 1, 3) == 4.5);
    assert_int_equal(blob_int64(&blobs, 2, 0), 7);
    json_decref(skel);
    blobs_free(&blobs);
    assert_round_trip(text, VALUE_FORMAT_LIST, text);
}

static void test_two_d_and_three_d_arrays(void **state)
{
    (void)state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = skel_from("[[1, 2, 3], [4, 5, 6]]", &blobs);
    assert_json_is(skel, "{\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [2, 3]}");
    for (int i = 0; i < 6; i++)
        assert_int_equal(blob_int64(&blobs, 0, (size_t)i), i + 1);
    json_decref(skel);
    blobs_free(&blobs);
    assert_round_trip("[[1, 2, 3], [4, 5, 6]]", VALUE_FORMAT_LIST, "[[1, 2, 3], [4, 5, 6]]");
    assert_round_trip("[[[1, 2], [3, 4]], [[5, 6], [7, 8.5]]]", VALUE_FORMAT_LIST,
                      "[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.5]]]");
    assert_round_trip("[[1, 2], [3, 4]]", VALUE_FORMAT_TYPED,
                      "{\"dtype\": \"int64\", \"shape\": [2, 2], \"data\":"
                      " \"AQAAAAAAAAACAAAAAAAAAAMAAAAAAAAABAAAAAAAAAA=\"}");
}

static void test_deeper_than_max_dims_stays_json(void **state)
{
    (void)state;
    /* 9 levels: the outer list stays JSON, the inner 8-D nest is an array */
    const char *text = "[[[[[[[[[1]]]]]]]]]";
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = skel_from(text, &blobs);
    assert_true(json_is_array(skel));
    assert_json_is(json_array_get(skel, 0),
                   "{\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [1,1,1,1,1,1,1,1]}");
    json_decref(skel);
    blobs_free(&blobs);
    assert_round_trip(text, VALUE_FORMAT_LIST, text);
}

/* ------------------------------------------------------------ typed arrays */

static void test_typed_in(void **state)
{
    (void)state;
    const char *typed =
        "{\"dtype\": \"float64\", \"shape\": [2], \"data\": \"AAAAAAAA8D8AAAAAAAAAQA==\"}";
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = skel_from(typed, &blobs);
    assert_json_is(skel, "{\"$nd\": 0, \"dtype\": \"float64\", \"shape\": [2]}");
    assert_true(blob_float64(&blobs, 0, 0) == 1.0);
    assert_true(blob_float64(&blobs, 0, 1) == 2.0);
    json_decref(skel);
    blobs_free(&blobs);

    assert_round_trip(typed, VALUE_FORMAT_LIST, "[1.0, 2.0]");
    assert_round_trip(typed, VALUE_FORMAT_TYPED, typed);
    assert_round_trip("{\"dtype\": \"int32\", \"shape\": [3], \"data\": \"AQAAAAIAAAADAAAA\"}",
                      VALUE_FORMAT_LIST, "[1, 2, 3]");
    assert_round_trip("{\"dtype\": \"uint8\", \"shape\": [2, 2], \"data\": \"AAEC/w==\"}",
                      VALUE_FORMAT_LIST, "[[0, 1], [2, 255]]");
    assert_round_trip("{\"dtype\": \"float32\", \"shape\": [2], \"data\": \"AADAPwAAAMA=\"}",
                      VALUE_FORMAT_LIST, "[1.5, -2.0]");
    assert_round_trip("{\"dtype\": \"int64\", \"shape\": [3], \"data\": "
                      "\"//////////8AAAAAAAAAQAAAAAAAAACA\"}",
                      VALUE_FORMAT_LIST, "[-1, 4611686018427387904, -9223372036854775808]");
    /* unpadded base64 is accepted too */
    assert_round_trip("{\"dtype\": \"uint8\", \"shape\": [5], \"data\": \"AQIDBAU\"}",
                      VALUE_FORMAT_TYPED,
                      "{\"dtype\": \"uint8\", \"shape\": [5], \"data\": \"AQIDBAU=\"}");
    /* a typed object inside other JSON */
    assert_round_trip("{\"w\": {\"dtype\": \"float64\", \"shape\": [2, 1],"
                      " \"data\": \"AAAAAAAA8D8AAAAAAAAAQA==\"}, \"n\": 1}",
                      VALUE_FORMAT_LIST, "{\"w\": [[1.0], [2.0]], \"n\": 1}");
}

static void test_typed_out(void **state)
{
    (void)state;
    assert_round_trip("[1, 2, 3]", VALUE_FORMAT_TYPED,
                      "{\"dtype\": \"int64\", \"shape\": [3], \"data\":"
                      " \"AQAAAAAAAAACAAAAAAAAAAMAAAAAAAAA\"}");
    assert_round_trip("[1.5, -2, 3, 4]", VALUE_FORMAT_TYPED,
                      "{\"dtype\": \"float64\", \"shape\": [4], \"data\":"
                      " \"AAAAAAAA+D8AAAAAAAAAwAAAAAAAAAhAAAAAAAAAEEA=\"}");
    assert_round_trip("{\"k\": [1.0, 2.0], \"s\": [\"a\"]}", VALUE_FORMAT_TYPED,
                      "{\"k\": {\"dtype\": \"float64\", \"shape\": [2], \"data\":"
                      " \"AAAAAAAA8D8AAAAAAAAAQA==\"}, \"s\": [\"a\"]}");
}

static void test_typed_empty_arrays(void **state)
{
    (void)state;
    assert_round_trip("{\"dtype\": \"float64\", \"shape\": [0], \"data\": \"\"}", VALUE_FORMAT_LIST,
                      "[]");
    assert_round_trip("{\"dtype\": \"int32\", \"shape\": [2, 0], \"data\": \"\"}",
                      VALUE_FORMAT_LIST, "[[], []]");
    assert_round_trip("{\"dtype\": \"int32\", \"shape\": [0, 5], \"data\": \"\"}",
                      VALUE_FORMAT_TYPED,
                      "{\"dtype\": \"int32\", \"shape\": [0, 5], \"data\": \"\"}");
}

static void test_large_typed_round_trip(void **state)
{
    (void)state;
    /* Larger than one base64 chunk, with a length that is not a multiple of 3. */
    size_t n = 300001;
    ippc_blobs blobs;
    blobs_init(&blobs);
    unsigned char *bytes = malloc(n);
    assert_non_null(bytes);
    for (size_t i = 0; i < n; i++)
        bytes[i] = (unsigned char)(i * 7 + 3);
    size_t index = push_copy(&blobs, bytes, n);
    json_t *skel = value_nd_placeholder(ND_UINT8, 1, &n, index);
    json_t *typed = to_client(skel, &blobs, VALUE_FORMAT_TYPED);
    assert_int_equal(json_string_length(json_object_get(typed, "data")), (n + 2) / 3 * 4);

    ippc_blobs back;
    blobs_init(&back);
    ippc_error err;
    json_t *skel2 = value_from_client(typed, &back, &err);
    assert_non_null(skel2);
    assert_int_equal(back.count, 1);
    assert_int_equal(back.items[0].len, n);
    assert_memory_equal(back.items[0].data, bytes, n);
    json_decref(skel2);
    json_decref(typed);
    json_decref(skel);
    blobs_free(&back);
    blobs_free(&blobs);
    free(bytes);
}

static void test_bad_typed_objects(void **state)
{
    (void)state;
    /* bad dtype */
    assert_rejected("{\"dtype\": \"float16\", \"shape\": [1], \"data\": \"AAA=\"}", ERR_INVALID);
    assert_rejected("{\"dtype\": 3, \"shape\": [1], \"data\": \"AAAAAAAAAAA=\"}", ERR_INVALID);
    /* bad base64 */
    assert_rejected("{\"dtype\": \"uint8\", \"shape\": [3], \"data\": \"!!!!\"}", ERR_INVALID);
    assert_rejected("{\"dtype\": \"uint8\", \"shape\": [3], \"data\": \"AA A\"}", ERR_INVALID);
    assert_rejected("{\"dtype\": \"uint8\", \"shape\": [2], \"data\": \"AA=A\"}", ERR_INVALID);
    assert_rejected("{\"dtype\": \"uint8\", \"shape\": [1], \"data\": \"A\"}", ERR_INVALID);
    assert_rejected("{\"dtype\": \"uint8\", \"shape\": [1], \"data\": \"A===\"}", ERR_INVALID);
    assert_rejected("{\"dtype\": \"uint8\", \"shape\": [0], \"data\": \"==\"}", ERR_INVALID);
    /* length mismatch */
    assert_rejected(
        "{\"dtype\": \"float64\", \"shape\": [3], \"data\": \"AAAAAAAA8D8AAAAAAAAAQA==\"}",
        ERR_INVALID);
    assert_rejected(
        "{\"dtype\": \"float64\", \"shape\": [1], \"data\": \"AAAAAAAA8D8AAAAAAAAAQA==\"}",
        ERR_INVALID);
    assert_rejected("{\"dtype\": \"uint8\", \"shape\": [0], \"data\": \"AA==\"}", ERR_INVALID);
    /* bad shapes */
    assert_rejected("{\"dtype\": \"uint8\", \"shape\": [-1], \"data\": \"\"}", ERR_INVALID);
    assert_rejected("{\"dtype\": \"uint8\", \"shape\": [2, -3], \"data\": \"\"}", ERR_INVALID);
    assert_rejected("{\"dtype\": \"uint8\", \"shape\": [1.0], \"data\": \"AA==\"}", ERR_INVALID);
    assert_rejected("{\"dtype\": \"uint8\", \"shape\": [], \"data\": \"\"}", ERR_INVALID);
    assert_rejected("{\"dtype\": \"uint8\", \"shape\": 4, \"data\": \"AAAAAA==\"}", ERR_INVALID);
    assert_rejected("{\"dtype\": \"uint8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data\": \"AA==\"}",
                    ERR_INVALID);
    /* shapes whose products overflow */
    assert_rejected("{\"dtype\": \"float64\", \"shape\": [4611686018427387904, 4], \"data\": \"\"}",
                    ERR_INVALID);
    assert_rejected(
        "{\"dtype\": \"uint8\", \"shape\": [0, 9223372036854775807, 9223372036854775807],"
        " \"data\": \"\"}",
        ERR_INVALID);
    assert_rejected("{\"dtype\": \"float64\", \"shape\": [2305843009213693952], \"data\": \"\"}",
                    ERR_INVALID);
    /* a bad typed array deep inside, after a good array: nothing is left in blobs */
    assert_rejected("{\"ok\": [1, 2], \"deep\": [\"x\", {\"dtype\": \"int8\", \"shape\": [1],"
                    " \"data\": \"AA==\"}]}",
                    ERR_INVALID);
}

static void test_typed_look_alikes_are_plain_objects(void **state)
{
    (void)state;
    /* data not a string, or an extra key: an ordinary object */
    assert_round_trip("{\"dtype\": \"x\", \"shape\": \"y\", \"data\": 5}", VALUE_FORMAT_LIST,
                      "{\"dtype\": \"x\", \"shape\": \"y\", \"data\": 5}");
    assert_round_trip("{\"dtype\": \"uint8\", \"shape\": [1], \"data\": \"AA==\", \"more\": 1}",
                      VALUE_FORMAT_LIST,
                      "{\"dtype\": \"uint8\", \"shape\": [1], \"data\": \"AA==\", \"more\": 1}");
}

static void test_dollar_nd_rejected(void **state)
{
    (void)state;
    assert_rejected("{\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [1]}", ERR_INVALID);
    assert_rejected("{\"$nd\": \"anything\"}", ERR_INVALID);
    assert_rejected("[1, \"a\", {\"b\": [{\"$nd\": 0}]}]", ERR_INVALID);
    assert_rejected("{\"x\": [1, 2], \"y\": {\"$nd\": 0}}", ERR_INVALID);
}

static void test_nesting_limit(void **state)
{
    (void)state;
    char deep[2048];
    for (int depth = VALUE_MAX_DEPTH - 1; depth <= VALUE_MAX_DEPTH + 1; depth++) {
        /* depth nested lists around a string, which no array can absorb */
        size_t len = 0;
        for (int i = 0; i < depth; i++)
            deep[len++] = '[';
        memcpy(deep + len, "\"x\"", 3);
        len += 3;
        for (int i = 0; i < depth; i++)
            deep[len++] = ']';
        deep[len] = '\0';
        if (depth <= VALUE_MAX_DEPTH)
            assert_round_trip(deep, VALUE_FORMAT_LIST, deep);
        else
            assert_rejected(deep, ERR_INVALID);
    }
    size_t len = 0;
    for (int i = 0; i < 200; i++)
        len += (size_t)sprintf(deep + len, "{\"a\":");
    strcpy(deep + len, "1");
    len++;
    for (int i = 0; i < 200; i++)
        deep[len++] = '}';
    deep[len] = '\0';
    assert_rejected(deep, ERR_INVALID);
}

/* ------------------------------------------------------ skeleton -> client */

static void test_nan_and_inf_become_null(void **state)
{
    (void)state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    const double values[4] = {NAN, INFINITY, -INFINITY, 1.5};
    size_t shape = 4;
    size_t index = push_copy(&blobs, values, sizeof values);
    json_t *skel = value_nd_placeholder(ND_FLOAT64, 1, &shape, index);
    json_t *out = to_client(skel, &blobs, VALUE_FORMAT_LIST);
    assert_json_is(out, "[null, null, null, 1.5]");
    json_decref(out);
    json_decref(skel);
    blobs_free(&blobs);
}

static void test_nd_ref_checks_placeholders(void **state)
{
    (void)state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    const int32_t values[2] = {5, 6};
    push_copy(&blobs, values, sizeof values);
    nd_ref ref;
    ippc_error err;

    json_t *plain = parse("{\"a\": 1}");
    assert_int_equal(value_nd_ref(plain, &blobs, &ref, &err), 0);
    json_decref(plain);
    json_t *list = parse("[1]");
    assert_int_equal(value_nd_ref(list, &blobs, &ref, &err), 0);
    json_decref(list);

    static const char *bad[] = {
        "{\"$nd\": 1, \"dtype\": \"int32\", \"shape\": [2]}",  /* no blob 1 */
        "{\"$nd\": -1, \"dtype\": \"int32\", \"shape\": [2]}", /* negative */
        "{\"$nd\": \"0\", \"dtype\": \"int32\", \"shape\": [2]}",
        "{\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [2]}", /* 16 bytes != 8 */
        "{\"$nd\": 0, \"dtype\": \"int32\", \"shape\": [3]}",
        "{\"$nd\": 0, \"dtype\": \"nope\", \"shape\": [2]}",
        "{\"$nd\": 0, \"dtype\": \"int32\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *v = parse(bad[i]);
        err.code[0] = '\0';
        assert_int_equal(value_nd_ref(v, &blobs, &ref, &err), -1);
        assert_string_equal(err.code, ERR_INVALID);
        /* and value_to_client refuses the skeleton, nested or not */
        json_t *wrapped = json_pack("{s:[O]}", "k", v);
        assert_null(value_to_client(wrapped, &blobs, VALUE_FORMAT_LIST, &err));
        json_decref(wrapped);
        json_decref(v);
    }
    json_t *good = parse("{\"$nd\": 0, \"dtype\": \"int32\", \"shape\": [2, 1]}");
    assert_int_equal(value_nd_ref(good, &blobs, &ref, &err), 1);
    assert_int_equal(ref.dtype, ND_INT32);
    assert_int_equal(ref.ndim, 2);
    assert_int_equal(ref.count, 2);
    json_t *out = to_client(good, &blobs, VALUE_FORMAT_LIST);
    assert_json_is(out, "[[5], [6]]");
    json_decref(out);
    /* no blobs at all */
    assert_int_equal(value_nd_ref(good, NULL, &ref, &err), -1);
    json_decref(good);
    blobs_free(&blobs);
}

static void test_placeholder_shape(void **state)
{
    (void)state;
    size_t shape[2] = {3, 4};
    json_t *p = value_nd_placeholder(ND_FLOAT32, 2, shape, 7);
    assert_json_is(p, "{\"$nd\": 7, \"dtype\": \"float32\", \"shape\": [3, 4]}");
    json_decref(p);
    assert_null(value_nd_placeholder(ND_DTYPE_COUNT, 2, shape, 0));
    assert_null(value_nd_placeholder(ND_FLOAT32, 0, shape, 0));
    assert_null(value_nd_placeholder(ND_FLOAT32, ND_MAX_DIMS + 1, shape, 0));
}

/* ----------------------------------------------------------------- scatter */

static void check_partition(size_t n, size_t p, const size_t *starts, const size_t *counts)
{
    for (size_t i = 0; i < p; i++) {
        size_t start = 99, count = 99;
        scatter_partition(n, p, i, &start, &count);
        assert_int_equal(start, starts[i]);
        assert_int_equal(count, counts[i]);
    }
}

static void test_scatter_partition(void **state)
{
    (void)state;
    check_partition(16, 4, (size_t[]){0, 4, 8, 12}, (size_t[]){4, 4, 4, 4});
    check_partition(17, 4, (size_t[]){0, 5, 9, 13}, (size_t[]){5, 4, 4, 4});
    check_partition(3, 4, (size_t[]){0, 1, 2, 3}, (size_t[]){1, 1, 1, 0});
    check_partition(0, 2, (size_t[]){0, 0}, (size_t[]){0, 0});
    check_partition(7, 1, (size_t[]){0}, (size_t[]){7});
}

/* Scatters skel over p parts, asserting success; part_blobs are initialised here. */
static void scatter_ok(const json_t *skel, const ippc_blobs *blobs, size_t p, json_t **parts,
                       ippc_blobs *part_blobs)
{
    ippc_error err = {{0}, {0}};
    for (size_t i = 0; i < p; i++)
        blobs_init(&part_blobs[i]);
    int rc = value_scatter(skel, blobs, p, parts, part_blobs, &err);
    if (rc != 0)
        print_error("value_scatter: %s: %s\n", err.code, err.message);
    assert_int_equal(rc, 0);
}

static void test_scatter_17_int64_over_4(void **state)
{
    (void)state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = skel_from("[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]", &blobs);
    json_t *parts[4];
    ippc_blobs part_blobs[4];
    scatter_ok(skel, &blobs, 4, parts, part_blobs);
    const size_t counts[4] = {5, 4, 4, 4};
    int64_t next = 0;
    for (size_t i = 0; i < 4; i++) {
        nd_ref ref;
        ippc_error err;
        assert_int_equal(value_nd_ref(parts[i], &part_blobs[i], &ref, &err), 1);
        assert_int_equal(ref.dtype, ND_INT64);
        assert_int_equal(ref.ndim, 1);
        assert_int_equal(ref.shape[0], counts[i]);
        assert_int_equal(ref.blob, 0);
        assert_int_equal(part_blobs[i].count, 1);
        for (size_t k = 0; k < counts[i]; k++)
            assert_int_equal(blob_int64(&part_blobs[i], 0, k), next++);
    }
    json_t *out = to_client(parts[1], &part_blobs[1], VALUE_FORMAT_LIST);
    assert_json_is(out, "[5, 6, 7, 8]");
    json_decref(out);

    /* gather puts them back together */
    ippc_blobs gathered;
    blobs_init(&gathered);
    ippc_error err;
    json_t *whole = value_gather(parts, part_blobs, 4, &gathered, &err);
    assert_non_null(whole);
    out = to_client(whole, &gathered, VALUE_FORMAT_LIST);
    assert_json_is(out, "[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]");
    json_decref(out);
    json_decref(whole);
    blobs_free(&gathered);

    for (size_t i = 0; i < 4; i++) {
        json_decref(parts[i]);
        blobs_free(&part_blobs[i]);
    }
    json_decref(skel);
    blobs_free(&blobs);
}

static void test_scatter_2d_by_rows(void **state)
{
    (void)state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = skel_from("[[0.5, 1], [2, 3], [4, 5]]", &blobs);
    json_t *parts[2];
    ippc_blobs part_blobs[2];
    scatter_ok(skel, &blobs, 2, parts, part_blobs);
    assert_json_is(parts[0], "{\"$nd\": 0, \"dtype\": \"float64\", \"shape\": [2, 2]}");
    assert_json_is(parts[1], "{\"$nd\": 0, \"dtype\": \"float64\", \"shape\": [1, 2]}");
    json_t *out0 = to_client(parts[0], &part_blobs[0], VALUE_FORMAT_LIST);
    json_t *out1 = to_client(parts[1], &part_blobs[1], VALUE_FORMAT_LIST);
    assert_json_is(out0, "[[0.5, 1.0], [2.0, 3.0]]");
    assert_json_is(out1, "[[4.0, 5.0]]");
    json_decref(out0);
    json_decref(out1);

    /* more parts than rows: the last ones get empty arrays */
    json_t *many[5];
    ippc_blobs many_blobs[5];
    scatter_ok(skel, &blobs, 5, many, many_blobs);
    assert_json_is(many[4], "{\"$nd\": 0, \"dtype\": \"float64\", \"shape\": [0, 2]}");
    assert_int_equal(many_blobs[4].items[0].len, 0);
    json_t *empty = to_client(many[4], &many_blobs[4], VALUE_FORMAT_LIST);
    assert_json_is(empty, "[]");
    json_decref(empty);
    for (size_t i = 0; i < 5; i++) {
        json_decref(many[i]);
        blobs_free(&many_blobs[i]);
    }
    for (size_t i = 0; i < 2; i++) {
        json_decref(parts[i]);
        blobs_free(&part_blobs[i]);
    }
    json_decref(skel);
    blobs_free(&blobs);
}

static void test_scatter_mixed_list(void **state)
{
    (void)state;
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = skel_from("[\"a\", [1, 2, 3], \"b\", [4, 5], {\"k\": [6]}]", &blobs);
    assert_int_equal(blobs.count, 3);
    json_t *parts[2];
    ippc_blobs part_blobs[2];
    scatter_ok(skel, &blobs, 2, parts, part_blobs);
    /* blobs are re-homed: each part numbers its own from 0 */
    assert_json_is(parts[0], "[\"a\", {\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [3]}, \"b\"]");
    assert_json_is(parts[1], "[{\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [2]},"
                             " {\"k\": {\"$nd\": 1, \"dtype\": \"int64\", \"shape\": [1]}}]");
    assert_int_equal(part_blobs[0].count, 1);
    assert_int_equal(part_blobs[1].count, 2);
    json_t *out = to_client(parts[1], &part_blobs[1], VALUE_FORMAT_LIST);
    assert_json_is(out, "[[4, 5], {\"k\": [6]}]");
    json_decref(out);
    for (size_t i = 0; i < 2; i++) {
        json_decref(parts[i]);
        blobs_free(&part_blobs[i]);
    }
    json_decref(skel);
    blobs_free(&blobs);
}

static void test_scatter_rejects_scalars_and_objects(void **state)
{
    (void)state;
    static const char *unscatterable[] = {"5", "\"s\"", "{\"a\": 1}", "null", "true"};
    for (size_t i = 0; i < sizeof unscatterable / sizeof unscatterable[0]; i++) {
        json_t *v = parse(unscatterable[i]);
        json_t *parts[2] = {(json_t *)0x1, (json_t *)0x1};
        ippc_blobs part_blobs[2];
        blobs_init(&part_blobs[0]);
        blobs_init(&part_blobs[1]);
        ippc_error err = {{0}, {0}};
        assert_int_equal(value_scatter(v, NULL, 2, parts, part_blobs, &err), -1);
        assert_string_equal(err.code, ERR_INVALID);
        assert_null(parts[0]);
        assert_null(parts[1]);
        json_decref(v);
    }
    json_t *list = parse("[1]");
    json_t *part;
    ippc_blobs part_blobs;
    blobs_init(&part_blobs);
    ippc_error err;
    assert_int_equal(value_scatter(list, NULL, 0, &part, &part_blobs, &err), -1);
    json_decref(list);
}

static void test_scatter_bad_placeholder_in_list(void **state)
{
    (void)state;
    /* the second part's item names a blob that does not exist */
    json_t *skel = parse("[[\"x\"], {\"$nd\": 3, \"dtype\": \"int64\", \"shape\": [1]}]");
    json_t *parts[2];
    ippc_blobs part_blobs[2];
    blobs_init(&part_blobs[0]);
    blobs_init(&part_blobs[1]);
    ippc_error err;
    assert_int_equal(value_scatter(skel, NULL, 2, parts, part_blobs, &err), -1);
    assert_string_equal(err.code, ERR_INVALID);
    assert_null(parts[0]);
    assert_null(parts[1]);
    json_decref(skel);
}

/* ------------------------------------------------------------------ gather */

static void test_gather_nd_parts(void **state)
{
    (void)state;
    ippc_blobs part_blobs[3];
    json_t *parts[3];
    for (size_t i = 0; i < 3; i++)
        blobs_init(&part_blobs[i]);
    parts[0] = skel_from("[[1, 2], [3, 4]]", &part_blobs[0]);
    parts[1] =
        skel_from("{\"dtype\": \"int64\", \"shape\": [0, 2], \"data\": \"\"}", &part_blobs[1]);
    parts[2] = skel_from("[[5, 6]]", &part_blobs[2]);
    ippc_blobs out_blobs;
    blobs_init(&out_blobs);
    push_copy(&out_blobs, "pre", 3); /* the result must land after what is there */
    ippc_error err;
    json_t *whole = value_gather(parts, part_blobs, 3, &out_blobs, &err);
    assert_non_null(whole);
    assert_json_is(whole, "{\"$nd\": 1, \"dtype\": \"int64\", \"shape\": [3, 2]}");
    assert_int_equal(out_blobs.count, 2);
    for (int i = 0; i < 6; i++)
        assert_int_equal(blob_int64(&out_blobs, 1, (size_t)i), i + 1);
    json_decref(whole);
    for (size_t i = 0; i < 3; i++) {
        json_decref(parts[i]);
        blobs_free(&part_blobs[i]);
    }
    blobs_free(&out_blobs);
}

static void test_gather_mismatched_arrays_make_a_list(void **state)
{
    (void)state;
    ippc_blobs part_blobs[3];
    json_t *parts[3];
    for (size_t i = 0; i < 3; i++)
        blobs_init(&part_blobs[i]);
    parts[0] = skel_from("[1, 2]", &part_blobs[0]);
    parts[1] = skel_from("[1.5]", &part_blobs[1]);    /* another dtype */
    parts[2] = skel_from("[[7, 8]]", &part_blobs[2]); /* another ndim */
    ippc_blobs out_blobs;
    blobs_init(&out_blobs);
    ippc_error err;
    json_t *whole = value_gather(parts, part_blobs, 3, &out_blobs, &err);
    assert_non_null(whole);
    assert_json_is(whole, "[1, 2, 1.5, [7, 8]]");
    assert_int_equal(out_blobs.count, 0);
    json_decref(whole);
    for (size_t i = 0; i < 3; i++) {
        json_decref(parts[i]);
        blobs_free(&part_blobs[i]);
    }
    blobs_free(&out_blobs);
}

static void test_gather_list_parts(void **state)
{
    (void)state;
    ippc_blobs part_blobs[3];
    json_t *parts[3];
    for (size_t i = 0; i < 3; i++)
        blobs_init(&part_blobs[i]);
    parts[0] = skel_from("[\"a\", [9, 9]]", &part_blobs[0]);
    parts[1] = skel_from("\"scalar\"", &part_blobs[1]);
    parts[2] = skel_from("[{\"k\": [3, 4]}, null]", &part_blobs[2]);
    ippc_blobs out_blobs;
    blobs_init(&out_blobs);
    ippc_error err;
    json_t *whole = value_gather(parts, part_blobs, 3, &out_blobs, &err);
    assert_non_null(whole);
    assert_json_is(whole, "[\"a\", {\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [2]}, \"scalar\","
                          " {\"k\": {\"$nd\": 1, \"dtype\": \"int64\", \"shape\": [2]}}, null]");
    json_t *out = to_client(whole, &out_blobs, VALUE_FORMAT_LIST);
    assert_json_is(out, "[\"a\", [9, 9], \"scalar\", {\"k\": [3, 4]}, null]");
    json_decref(out);
    json_decref(whole);
    for (size_t i = 0; i < 3; i++) {
        json_decref(parts[i]);
        blobs_free(&part_blobs[i]);
    }
    blobs_free(&out_blobs);
}

static void test_gather_edge_cases(void **state)
{
    (void)state;
    ippc_blobs out_blobs;
    blobs_init(&out_blobs);
    ippc_error err;
    json_t *none = value_gather(NULL, NULL, 0, &out_blobs, &err);
    assert_non_null(none);
    assert_json_is(none, "[]");
    json_decref(none);

    /* a malformed placeholder is an error, and nothing is left behind */
    json_t *parts[2] = {parse("[1]"), parse("{\"$nd\": 0, \"dtype\": \"int64\", \"shape\": [1]}")};
    assert_null(value_gather(parts, NULL, 2, &out_blobs, &err));
    assert_string_equal(err.code, ERR_INVALID);
    assert_int_equal(out_blobs.count, 0);
    json_decref(parts[0]);
    json_decref(parts[1]);
    blobs_free(&out_blobs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtypes),
        cmocka_unit_test(test_blobs_push_and_append),
        cmocka_unit_test(test_int_list_becomes_int64_array),
        cmocka_unit_test(test_float_list_becomes_float64_array),
        cmocka_unit_test(test_mixed_lists_stay_json),
        cmocka_unit_test(test_empty_lists_stay_lists),
        cmocka_unit_test(test_scalars_pass_through),
        cmocka_unit_test(test_nested_objects),
        cmocka_unit_test(test_two_d_and_three_d_arrays),
        cmocka_unit_test(test_deeper_than_max_dims_stays_json),
        cmocka_unit_test(test_typed_in),
        cmocka_unit_test(test_typed_out),
        cmocka_unit_test(test_typed_empty_arrays),
        cmocka_unit_test(test_large_typed_round_trip),
        cmocka_unit_test(test_bad_typed_objects),
        cmocka_unit_test(test_typed_look_alikes_are_plain_objects),
        cmocka_unit_test(test_dollar_nd_rejected),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_nan_and_inf_become_null),
        cmocka_unit_test(test_nd_ref_checks_placeholders),
        cmocka_unit_test(test_placeholder_shape),
        cmocka_unit_test(test_scatter_partition),
        cmocka_unit_test(test_scatter_17_int64_over_4),
        cmocka_unit_test(test_scatter_2d_by_rows),
        cmocka_unit_test(test_scatter_mixed_list),
        cmocka_unit_test(test_scatter_rejects_scalars_and_objects),
        cmocka_unit_test(test_scatter_bad_placeholder_in_list),
        cmocka_unit_test(test_gather_nd_parts),
        cmocka_unit_test(test_gather_mismatched_arrays_make_a_list),
        cmocka_unit_test(test_gather_list_parts),
        cmocka_unit_test(test_gather_edge_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
