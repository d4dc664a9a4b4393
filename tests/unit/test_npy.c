/* test_npy.c — common/npy.c: headers as NumPy writes them, every refusal,
 * the streaming split (npy_header_size), writing, byte swapping. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "npy.h"

/* A file's header: the preamble of version major.0 and dict followed by
 * padding and '\n', as NumPy lays it out.  Returns its length. */
static size_t make(unsigned char *out, int major, const char *dict)
{
    size_t pre = major == 1 ? NPY_PREAMBLE_V1 : NPY_PREAMBLE_V2;
    size_t n = strlen(dict);
    size_t total = (pre + n + 1 + 63) / 64 * 64;
    size_t dict_len = total - pre;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (unsigned char)major;
    out[7] = 0;
    out[8] = (unsigned char)(dict_len & 0xff);
    out[9] = (unsigned char)(dict_len >> 8);
    if (pre == NPY_PREAMBLE_V2) {
        out[10] = (unsigned char)(dict_len >> 16);
        out[11] = (unsigned char)(dict_len >> 24);
    }
    memcpy(out + pre, dict, n);
    memset(out + pre + n, ' ', total - pre - n);
    out[total - 1] = '\n';
    return total;
}

static npy_header parse_ok(const unsigned char *bytes, size_t len)
{
    npy_header h;
    ippc_error err = {{0}, {0}};
    int rc = npy_parse(bytes, len, &h, &err);
    if (rc != 0)
        print_error("parse failed: %s\n", err.message);
    assert_int_equal(rc, 0);
    return h;
}

/* The dict (version 1.0) is refused with a message containing want. */
static void refused_bytes(const unsigned char *bytes, size_t len, const char *want)
{
    npy_header h;
    ippc_error err = {{0}, {0}};
    assert_int_equal(npy_parse(bytes, len, &h, &err), -1);
    assert_string_equal(err.code, ERR_BAD_REQUEST);
    if (!strstr(err.message, want))
        print_error("message '%s' lacks '%s'\n", err.message, want);
    assert_non_null(strstr(err.message, want));
}

static void refused(const char *dict, const char *want)
{
    unsigned char buf[8192];
    refused_bytes(buf, make(buf, 1, dict), want);
}

static void test_numpy_headers(void **state)
{
    (void)state;
    unsigned char buf[512];
    size_t n = make(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000,), }");
    npy_header h = parse_ok(buf, n);
    assert_int_equal(h.header_len, 128);
    assert_int_equal(h.dtype, ND_FLOAT64);
    assert_int_equal(h.big_endian, 0);
    assert_int_equal(h.ndim, 1);
    assert_int_equal(h.shape[0], 1000000);
    assert_int_equal(h.count, 1000000);
    assert_int_equal(npy_data_bytes(&h), 8000000);

    n = make(buf, 1, "{'descr': '|b1', 'fortran_order': False, 'shape': (2, 3), }");
    h = parse_ok(buf, n);
    assert_int_equal(h.dtype, ND_UINT8);
    assert_int_equal(h.is_bool, 1);
    assert_int_equal(h.ndim, 2);
    assert_int_equal(h.count, 6);

    /* Version 2.0, big-endian, double quotes, no trailing comma, key order. */
    n = make(buf, 2, "{\"shape\": (4, 0, 2), \"fortran_order\": False, \"descr\": \">i4\"}");
    h = parse_ok(buf, n);
    assert_int_equal(h.major, 2);
    assert_int_equal(h.header_len, n);
    assert_int_equal(h.dtype, ND_INT32);
    assert_int_equal(h.big_endian, 1);
    assert_int_equal(h.count, 0);
    assert_int_equal(npy_data_bytes(&h), 0);

    /* One-byte types in any order are not swapped. */
    n = make(buf, 3, "{'descr':'>u1','fortran_order':False,'shape':(5,)}");
    h = parse_ok(buf, n);
    assert_int_equal(h.dtype, ND_UINT8);
    assert_int_equal(h.big_endian, 0);

    const struct {
        const char *descr;
        nd_dtype dtype;
    } all[] = {{"<f8", ND_FLOAT64}, {"<f4", ND_FLOAT32}, {"<i8", ND_INT64},
               {"<i4", ND_INT32},   {"|u1", ND_UINT8},   {"<u1", ND_UINT8}};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        char dict[128];
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (3,), }",
                 all[i].descr);
        n = make(buf, 1, dict);
        h = parse_ok(buf, n);
        assert_int_equal(h.dtype, all[i].dtype);
        assert_string_equal(h.descr, all[i].descr);
    }
}

static void test_refusals(void **state)
{
    (void)state;
    refused("{'descr': '<f8', 'fortran_order': True, 'shape': (3,), }", "fortran_order True");
    refused("{'descr': '|O', 'fortran_order': False, 'shape': (3,), }", "object arrays");
    refused("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (3,), }", "structured");
    refused("{'descr': '<c16', 'fortran_order': False, 'shape': (3,), }", "'<c16' is not");
    refused("{'descr': '<i2', 'fortran_order': False, 'shape': (3,), }", "'<i2' is not");
    refused("{'descr': '=f8', 'fortran_order': False, 'shape': (3,), }", "'=f8' is not");
    refused("{'descr': '|f8', 'fortran_order': False, 'shape': (3,), }", "'|f8' is not");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (3), }", "write (n,)");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", "0-d");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }",
            "more than 8");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (-3,), }", "non-negative");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (03,), }", "leading zero");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (1_000,), }", "',' or ')'");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (3L,), }", "',' or ')'");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }",
            "too large");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
            "does not fit");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (3 4,), }", "',' or ')'");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': [3], }", "tuple");
    refused("{'descr': '<f8', 'fortran_order': Truex, 'shape': (3,), }", "True or False");
    refused("{'descr': '<f8', 'fortran_order': 0, 'shape': (3,), }", "True or False");
    refused("{'descr': '<f8', 'shape': (3,), }", "exactly the keys");
    refused("{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", "twice");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'x': 1}", "unknown key 'x'");
    refused("{'descr': '<\\x66', 'fortran_order': False, 'shape': (3,), }", "escape");
    refused("{'descr': '<f8, 'fortran_order': False, 'shape': (3,), }", "',' or '}'");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), } x", "follows");
    refused("{'descr': '<f8' 'fortran_order': False, 'shape': (3,), }", "',' or '}'");
    refused("('descr', '<f8')", "not a dict");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), ", "quoted key");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (3,", "non-negative");
    refused("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }\n{", "follows");
    refused("{'descr': '0123456789012345678901234567890123456789', 'fortran_order': False}",
            "too long");
}

static void test_preamble(void **state)
{
    (void)state;
    unsigned char buf[8192];
    size_t n = make(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }");
    refused_bytes(buf, 0, "truncated");
    refused_bytes((const unsigned char *)"garbage", 7, "bad magic");
    refused_bytes(buf, 3, "truncated");
    refused_bytes(buf, 7, "truncated");
    refused_bytes(buf, 9, "truncated");
    refused_bytes(buf, n - 1, "truncated");
    for (size_t k = 0; k < n; k++) { /* every truncation is refused */
        npy_header h;
        ippc_error err = {{0}, {0}};
        assert_int_equal(npy_parse(buf, k, &h, &err), -1);
    }
    unsigned char copy[8192];
    memcpy(copy, buf, n);
    copy[1] = 'n';
    refused_bytes(copy, n, "bad magic");
    memcpy(copy, buf, n);
    copy[6] = 4;
    refused_bytes(copy, n, "version 4.0");
    copy[6] = 1;
    copy[7] = 1;
    refused_bytes(copy, n, "version 1.1");
    memcpy(copy, buf, n);
    copy[n - 1] = ' ';
    refused_bytes(copy, n, "newline");
    memcpy(copy, buf, n);
    copy[8] = 0;
    copy[9] = 0;
    refused_bytes(copy, n, "newline");
    /* A declared length over the limit is refused before it is read. */
    memcpy(copy, buf, n);
    copy[8] = 0xff;
    copy[9] = 0xff;
    refused_bytes(copy, n, "limit");
    /* A header byte that is not printable ASCII. */
    memcpy(copy, buf, n);
    copy[NPY_PREAMBLE_V1 + 11] = 0x80;
    refused_bytes(copy, n, "printable");
}

static void test_header_size(void **state)
{
    (void)state;
    unsigned char buf[8192];
    size_t n = make(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }");
    assert_int_equal(npy_header_size(buf, 0), NPY_PREAMBLE_V1);
    assert_int_equal(npy_header_size(buf, 7), NPY_PREAMBLE_V1);
    assert_int_equal(npy_header_size(buf, 9), NPY_PREAMBLE_V1);
    assert_int_equal(npy_header_size(buf, 10), n);
    assert_int_equal(npy_header_size(buf, n), n);
    size_t n2 = make(buf, 2, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }");
    assert_int_equal(npy_header_size(buf, 10), NPY_PREAMBLE_V2);
    assert_int_equal(npy_header_size(buf, 12), n2);
    buf[0] = 'x'; /* bad: the header is what came */
    assert_int_equal(npy_header_size(buf, 8), 8);
    buf[0] = 0x93;
    buf[8] = 0xff;
    buf[9] = 0xff; /* over the limit: stop collecting */
    assert_int_equal(npy_header_size(buf, 12), 12);
    buf[6] = 9; /* unknown version */
    assert_int_equal(npy_header_size(buf, 8), 8);
}

static void test_write_round_trip(void **state)
{
    (void)state;
    unsigned char out[NPY_HEADER_MAX];
    size_t shape8[ND_MAX_DIMS] = {1, 2, 3, 4, 5, 6, 7, SIZE_MAX / 8 / 5040};
    const struct {
        nd_dtype dtype;
        int ndim;
        size_t shape[ND_MAX_DIMS];
    } cases[] = {
        {ND_FLOAT64, 1, {1000000}}, {ND_FLOAT32, 2, {3, 4}}, {ND_INT64, 1, {0}},
        {ND_INT32, 3, {2, 0, 5}},   {ND_UINT8, 1, {7}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = npy_write_header(cases[i].dtype, cases[i].ndim, cases[i].shape, out, sizeof out);
        assert_true(n > 0 && n % 64 == 0);
        assert_int_equal(npy_header_size(out, n), n);
        npy_header h = parse_ok(out, n);
        assert_int_equal(h.header_len, n);
        assert_int_equal(h.dtype, cases[i].dtype);
        assert_int_equal(h.ndim, cases[i].ndim);
        for (int d = 0; d < h.ndim; d++)
            assert_int_equal(h.shape[d], cases[i].shape[d]);
    }
    size_t n = npy_write_header(ND_INT64, 8, shape8, out, sizeof out);
    npy_header h = parse_ok(out, n);
    assert_int_equal(h.shape[7], shape8[7]);
    assert_int_equal(npy_write_header(ND_FLOAT64, 0, shape8, out, sizeof out), 0);
    assert_int_equal(npy_write_header(ND_FLOAT64, 9, shape8, out, sizeof out), 0);
    assert_int_equal(npy_write_header(ND_DTYPE_COUNT, 1, shape8, out, sizeof out), 0);
    assert_int_equal(npy_write_header(ND_FLOAT64, 1, shape8, out, 100), 0);
    /* Exactly NumPy's text for a 1-D float64 array. */
    size_t three = 3;
    n = npy_write_header(ND_FLOAT64, 1, &three, out, sizeof out);
    assert_int_equal(n, 128);
    assert_memory_equal(out + 10, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 57);
}

static void test_swap(void **state)
{
    (void)state;
    unsigned char d8[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    npy_swap(d8, 2, 8);
    const unsigned char w8[16] = {8, 7, 6, 5, 4, 3, 2, 1, 16, 15, 14, 13, 12, 11, 10, 9};
    assert_memory_equal(d8, w8, 16);
    unsigned char d4[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    npy_swap(d4, 2, 4);
    const unsigned char w4[8] = {4, 3, 2, 1, 8, 7, 6, 5};
    assert_memory_equal(d4, w4, 8);
    unsigned char d2[4] = {1, 2, 3, 4};
    npy_swap(d2, 2, 2);
    const unsigned char w2[4] = {2, 1, 4, 3};
    assert_memory_equal(d2, w2, 4);
    unsigned char d1[2] = {1, 2};
    npy_swap(d1, 2, 1);
    assert_int_equal(d1[0], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numpy_headers),    cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_preamble),         cmocka_unit_test(test_header_size),
        cmocka_unit_test(test_write_round_trip), cmocka_unit_test(test_swap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
