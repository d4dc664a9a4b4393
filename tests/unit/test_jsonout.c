/* test_jsonout.c — common/jsonout.c: the same text as json_dumps for every
 * kind of value and every flag, except that reals are the shortest text that
 * reads back to the same double. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonout.h"

/* ---------------------------------------------------------------- helpers */

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!v)
        print_error("bad test JSON '%s': %s\n", text, jerr.text);
    assert_non_null(v);
    return v;
}

/* Every flag combination worth telling apart. */
static const size_t FLAG_SETS[] = {
    0,
    JSON_COMPACT,
    JSON_INDENT(1),
    JSON_INDENT(2),
    JSON_INDENT(4),
    JSON_INDENT(2) | JSON_COMPACT,
    JSON_ENSURE_ASCII,
    JSON_ENSURE_ASCII | JSON_COMPACT,
    JSON_SORT_KEYS,
    JSON_SORT_KEYS | JSON_INDENT(3),
    JSON_ESCAPE_SLASH,
    JSON_ESCAPE_SLASH | JSON_ENSURE_ASCII | JSON_COMPACT,
    JSON_PRESERVE_ORDER,
    JSON_EMBED,
    JSON_EMBED | JSON_INDENT(2),
    JSON_EMBED | JSON_COMPACT,
    JSON_MAX_INDENT,
    JSON_REAL_PRECISION(5),
    JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII | JSON_ESCAPE_SLASH,
};
#define N_FLAG_SETS (sizeof FLAG_SETS / sizeof *FLAG_SETS)

/* jsonout and json_dumps agree on v under flags (both fail, or the same text). */
static void assert_same_as_jansson(const json_t *v, size_t flags)
{
    char *want = json_dumps(v, flags);
    char *got = jsonout_dumps(v, flags);
    if ((want == NULL) != (got == NULL) || (want && strcmp(want, got) != 0))
        print_error("flags 0x%zx\njansson %s\njsonout %s\n", flags, want ? want : "(NULL)",
                    got ? got : "(NULL)");
    assert_true((want == NULL) == (got == NULL));
    if (want)
        assert_string_equal(got, want);
    free(want);
    free(got);
}

static void assert_same_all_flags(const json_t *v)
{
    for (size_t i = 0; i < N_FLAG_SETS; i++) {
        assert_same_as_jansson(v, FLAG_SETS[i]);
        assert_same_as_jansson(v, FLAG_SETS[i] | JSON_ENCODE_ANY);
    }
}

static void assert_text_same_all_flags(const char *text)
{
    json_t *v = parse(text);
    assert_same_all_flags(v);
    json_decref(v);
}

static void assert_real(double v, const char *want)
{
    char buf[JSONOUT_REAL_MAX];
    int len = jsonout_real(v, buf, sizeof buf);
    if (len < 0 || strcmp(buf, want) != 0)
        print_error("%.17g: got '%s', want '%s'\n", v, len < 0 ? "(failed)" : buf, want);
    assert_int_equal(len, (int)strlen(want));
    assert_string_equal(buf, want);
    json_t *j = json_real(v);
    char *dumped = jsonout_dumps(j, JSON_ENCODE_ANY);
    assert_string_equal(dumped, want);
    free(dumped);
    json_decref(j);
}

/* Significant digits of a number's text (mantissa without leading and
 * trailing zeros). */
static int significant_digits(const char *text)
{
    char digits[64];
    size_t n = 0;
    for (const char *p = text; *p && *p != 'e' && *p != 'E' && n < sizeof digits - 1; p++)
        if (*p >= '0' && *p <= '9')
            digits[n++] = *p;
    digits[n] = '\0';
    size_t lo = 0;
    while (lo < n && digits[lo] == '0')
        lo++;
    while (n > lo && digits[n - 1] == '0')
        n--;
    return n > lo ? (int)(n - lo) : 1;
}

/* The fewest significant digits that read back to v, found the slow way. */
static int brute_shortest_digits(double v)
{
    char buf[64];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        if (strtod(buf, NULL) == v)
            return significant_digits(buf);
    }
    return -1;
}

/* jsonout_real(v) reads back to v, as a real, with the fewest digits. */
static void check_real_shortest(double v)
{
    char buf[JSONOUT_REAL_MAX];
    int len = jsonout_real(v, buf, sizeof buf);
    assert_true(len > 0);
    assert_int_equal((size_t)len, strlen(buf));
    char *end;
    double back = strtod(buf, &end);
    if (back != v || *end != '\0' || significant_digits(buf) != brute_shortest_digits(v))
        print_error("%a: wrote '%s' (%d digits), shortest has %d\n", v, buf,
                    significant_digits(buf), brute_shortest_digits(v));
    assert_true(back == v && signbit(back) == signbit(v));
    assert_int_equal(*end, '\0');
    assert_int_equal(significant_digits(buf), brute_shortest_digits(v));
    assert_true(strchr(buf, '.') || strchr(buf, 'e')); /* reads back as a real */
    assert_null(strchr(buf, '+'));
    /* When all 17 digits are needed, the text is Jansson's own. */
    if (significant_digits(buf) == 17) {
        json_t *j = json_real(v);
        char *jansson = json_dumps(j, JSON_ENCODE_ANY);
        assert_string_equal(buf, jansson);
        free(jansson);
        json_decref(j);
    }
}

static uint64_t rng_state = 0x243F6A8885A308D3ULL;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static double double_from_bits(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* ------------------------------------------------------------------ tests */

static void test_scalars_like_jansson(void **state)
{
    (void)state;
    const char *texts[] = {
        "null", "true",     "false", "0", "-1", "42", "9223372036854775807", "-9223372036854775808",
        "\"\"", "\"plain\""};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++)
        assert_text_same_all_flags(texts[i]);
}

static void test_containers_like_jansson(void **state)
{
    (void)state;
    const char *texts[] = {
        "[]",
        "{}",
        "[[]]",
        "[{}]",
        "{\"a\":[]}",
        "{\"a\":{}}",
        "[1]",
        "[1,2,3]",
        "[null,true,false,\"s\",[1,[2,[3,[]]]],{\"k\":{\"k\":{}}}]",
        "{\"b\":1,\"a\":2,\"c\":{\"z\":[1,2],\"y\":null}}",
        "{\"zeta\":1,\"alpha\":2,\"mid\":3,\"alpha2\":4,\"\":5}",
        "[[[[[[[[[[[[[[[[[[[[\"deep\"]]]]]]]]]]]]]]]]]]]]",
        "{\"\\u00e9\":1,\"e\":2,\"\\ud83d\\ude00\":3,\"/\":4}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++)
        assert_text_same_all_flags(texts[i]);

    /* Keys holding NUL (the parser refuses them, json_object_setn does not),
     * sharing prefixes: JSON_SORT_KEYS orders them as Jansson does. */
    json_t *obj = json_object();
    const char *keys[] = {"k\0a", "k", "k\0", "ka", "\0", "", "k\0\0"};
    const size_t lens[] = {3, 1, 2, 2, 1, 0, 3};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        assert_int_equal(json_object_setn_new(obj, keys[i], lens[i], json_integer((json_int_t)i)),
                         0);
    assert_same_all_flags(obj);
    json_decref(obj);
}

static void test_strings_like_jansson(void **state)
{
    (void)state;
    /* Every control character, the characters with short escapes, '/', DEL. */
    char all_ascii[128];
    for (int c = 0; c < 128; c++)
        all_ascii[c] = (char)c;
    json_t *s = json_stringn(all_ascii, sizeof all_ascii);
    assert_non_null(s);
    assert_same_all_flags(s);
    json_t *wrapped = json_pack("[O,{s:O}]", s, "key", s);
    assert_same_all_flags(wrapped);
    json_object_setn_new(json_array_get(wrapped, 1), all_ascii, sizeof all_ascii,
                         json_integer(1)); /* as a key, too */
    assert_same_all_flags(wrapped);
    json_decref(wrapped);
    json_decref(s);

    /* Code points of every UTF-8 length, alone and between ASCII text,
     * plain and with JSON_ENSURE_ASCII (surrogate pairs above U+FFFF). */
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp += cp < 0x900 ? 1 : 0x3F1) {
        if (cp >= 0xD800 && cp <= 0xDFFF)
            continue;
        char text[16];
        size_t n = 0;
        text[n++] = 'a';
        if (cp < 0x80) {
            text[n++] = (char)cp;
        } else if (cp < 0x800) {
            text[n++] = (char)(0xC0 | (cp >> 6));
            text[n++] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            text[n++] = (char)(0xE0 | (cp >> 12));
            text[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            text[n++] = (char)(0x80 | (cp & 0x3F));
        } else {
            text[n++] = (char)(0xF0 | (cp >> 18));
            text[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            text[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            text[n++] = (char)(0x80 | (cp & 0x3F));
        }
        text[n++] = '/';
        json_t *one = json_stringn(text, n);
        assert_non_null(one);
        assert_same_as_jansson(one, JSON_ENCODE_ANY);
        assert_same_as_jansson(one, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
        assert_same_as_jansson(one, JSON_ENCODE_ANY | JSON_ENSURE_ASCII | JSON_ESCAPE_SLASH);
        json_decref(one);
    }
    assert_text_same_all_flags("[\"\\ud800\\udc00\",\"\\udbff\\udfff\",\"\\u20ac\\u00a2$\"]");
}

/* jsonout scans plain text eight bytes at a time: a byte that needs care
 * (every byte below 0x20, '"', '\\', '/', DEL, a UTF-8 sequence) is found at
 * every offset of a word and next to every word boundary. */
static void test_strings_word_scan(void **state)
{
    (void)state;
    static const char *specials[] = {"\x01", "\x1f", "\n",       "\"",           "\\",
                                     "/",    "\x7f", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                     " ",    "~",    "0"};
    for (int c = 0; c < 0x20; c++) {
        char one[2] = {(char)c, 0};
        for (size_t at = 0; at < 20; at++) {
            char text[40];
            memset(text, 'Q', sizeof text);
            text[at] = one[0];
            json_t *v = json_stringn(text, sizeof text);
            assert_non_null(v);
            assert_same_as_jansson(v, JSON_ENCODE_ANY);
            json_decref(v);
        }
    }
    for (size_t k = 0; k < sizeof specials / sizeof *specials; k++) {
        size_t len = strlen(specials[k]);
        for (size_t at = 0; at < 26; at++)
            for (size_t total = at + len; total < at + len + 18; total++) {
                char text[64];
                memset(text, 'a' + (int)(at % 26), sizeof text);
                memcpy(text + at, specials[k], len);
                json_t *v = json_stringn(text, total);
                assert_non_null(v);
                assert_same_as_jansson(v, JSON_ENCODE_ANY);
                assert_same_as_jansson(v, JSON_ENCODE_ANY | JSON_ESCAPE_SLASH);
                assert_same_as_jansson(v, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
                json_decref(v);
            }
    }
}

static void test_invalid_utf8_fails_like_jansson(void **state)
{
    (void)state;
    const char *bad[] = {"\x80",
                         "a\xC0\xAF",
                         "\xC3",
                         "\xE0\x80\x80",
                         "\xED\xA0\x80",
                         "\xF4\x90\x80\x80",
                         "\xF5\x80\x80\x80",
                         "\xFF",
                         "ok\xE2\x82"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *s = json_stringn_nocheck(bad[i], strlen(bad[i]));
        json_t *list = json_pack("[O]", s);
        assert_null(jsonout_dumps(s, JSON_ENCODE_ANY));
        assert_null(jsonout_dumps(list, 0));
        assert_same_as_jansson(s, JSON_ENCODE_ANY);
        assert_same_as_jansson(list, 0);
        json_decref(list);
        json_decref(s);
    }
}

static void test_scalars_need_encode_any(void **state)
{
    (void)state;
    json_t *values[] = {json_null(), json_true(), json_integer(3), json_real(0.5),
                        json_string("x")};
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        assert_null(jsonout_dumps(values[i], 0));
        assert_null(jsonout_dumps(values[i], JSON_INDENT(2) | JSON_EMBED));
        char *text = jsonout_dumps(values[i], JSON_ENCODE_ANY);
        assert_non_null(text);
        free(text);
        json_decref(values[i]);
    }
    assert_null(jsonout_dumps(NULL, JSON_ENCODE_ANY));
}

static void test_reals_shortest_known(void **state)
{
    (void)state;
    assert_real(0.1, "0.1");
    assert_real(0.2, "0.2");
    assert_real(0.1 + 0.2, "0.30000000000000004");
    assert_real(1.0 / 3.0, "0.3333333333333333");
    assert_real(2.0 / 3.0, "0.6666666666666666");
    assert_real(0.5, "0.5");
    assert_real(1.0, "1.0");
    assert_real(-1.0, "-1.0");
    assert_real(0.0, "0.0");
    assert_real(-0.0, "-0.0");
    assert_real(100.0, "100.0");
    assert_real(123456.789, "123456.789");
    assert_real(123456789012345.0, "123456789012345.0");
    assert_real(1234567890123456.0, "1234567890123456.0");
    assert_real(9007199254740993.0, "9007199254740992.0");
    assert_real(1e15, "1e15");
    assert_real(1e16, "1e16");
    assert_real(1e22, "1e22");
    assert_real(1e23, "1e23");
    assert_real(1e-7, "1e-7");
    assert_real(1.5e-5, "1.5e-5");
    assert_real(1e100, "1e100");
    assert_real(2.5e-300, "2.5e-300");
    assert_real(DBL_MAX, "1.7976931348623157e308");
    assert_real(-DBL_MAX, "-1.7976931348623157e308");
    assert_real(DBL_MIN, "2.2250738585072014e-308");
    assert_real(4.9406564584124654e-324, "5e-324");
    assert_real(-4.9406564584124654e-324, "-5e-324");
    assert_real(2.2250738585072009e-308, "2.225073858507201e-308"); /* largest subnormal */
    assert_real(1e-310, "1e-310");
    assert_real(0.000123, "0.000123");
    assert_real(5e-5, "5e-5");
}

static void test_reals_shortest_random(void **state)
{
    (void)state;
    /* Arbitrary bit patterns: mostly 16-17 digit values of every exponent. */
    for (int i = 0; i < 100000; i++) {
        double v = double_from_bits(rng_next());
        if (isfinite(v))
            check_real_shortest(v);
    }
    /* Subnormals and their neighbourhood, where fewer digits are exact. */
    for (int i = 0; i < 20000; i++) {
        double v = double_from_bits(rng_next() & 0x001FFFFFFFFFFFFFULL);
        check_real_shortest(i & 1 ? -v : v);
    }
    /* Short decimals (1..15 digits) and their neighbours, every exponent. */
    for (int i = 0; i < 40000; i++) {
        char text[64];
        uint64_t scale = 1;
        for (int d = 1 + (int)(rng_next() % 15); d > 0; d--)
            scale *= 10;
        int exponent = (int)(rng_next() % 620) - 310;
        snprintf(text, sizeof text, "%llue%d", (unsigned long long)(rng_next() % scale), exponent);
        double v = strtod(text, NULL);
        if (!isfinite(v))
            continue;
        check_real_shortest(v);
        check_real_shortest(nextafter(v, INFINITY));
        check_real_shortest(nextafter(v, -INFINITY));
    }
    /* Integers held as reals, around 2^53. */
    double v = 9007199254740992.0 - 64;
    for (int i = 0; i < 128; i++) {
        check_real_shortest(v);
        v = nextafter(v, INFINITY);
    }
}

static void test_reals_not_finite(void **state)
{
    (void)state;
    char buf[JSONOUT_REAL_MAX];
    assert_int_equal(jsonout_real(NAN, buf, sizeof buf), -1);
    assert_int_equal(jsonout_real(INFINITY, buf, sizeof buf), -1);
    assert_int_equal(jsonout_real(-INFINITY, buf, sizeof buf), -1);
    assert_int_equal(jsonout_real(0.5, buf, JSONOUT_REAL_MAX - 1), -1);
    assert_int_equal(jsonout_real(0.5, NULL, 64), -1);
}

/* Reals in containers: Jansson's text where 17 digits are needed or the
 * value is short anyway, shorter text (reading back equal) elsewhere. */
static void test_reals_in_containers(void **state)
{
    (void)state;
    json_t *exact = json_pack("{s:f, s:[f, f, f], s:f}", "half", 0.5, "list", 0.30000000000000004,
                              -1.0, 1.0000000000000002, "big", 1.7976931348623157e308);
    for (size_t i = 0; i < N_FLAG_SETS; i++)
        if (!(FLAG_SETS[i] & JSON_REAL_PRECISION(0x1F))) /* jsonout ignores it */
            assert_same_as_jansson(exact, FLAG_SETS[i]);
    json_decref(exact);

    json_t *v = json_pack("{s:f, s:[f, f, i, s], s:{s:f}}", "tenth", 0.1, "list", 1e300, 2.5e-300,
                          7, "x", "inner", "uptime", 12.345);
    for (size_t i = 0; i < N_FLAG_SETS; i++) {
        if (FLAG_SETS[i] & JSON_EMBED)
            continue;
        char *got = jsonout_dumps(v, FLAG_SETS[i]);
        assert_non_null(got);
        json_t *back = parse(got);
        assert_true(json_equal(back, v));
        json_decref(back);
        free(got);
    }
    char *compact = jsonout_dumps(v, JSON_COMPACT);
    assert_string_equal(compact, "{\"tenth\":0.1,\"list\":[1e300,2.5e-300,7,\"x\"],"
                                 "\"inner\":{\"uptime\":12.345}}");
    free(compact);
    json_decref(v);
}

static void test_cycles_and_depth_fail(void **state)
{
    (void)state;
    json_t *list = json_array();
    json_t *obj = json_object();
    json_array_append(list, obj);
    json_object_set(obj, "back", list); /* list -> obj -> list */
    assert_null(jsonout_dumps(list, 0));
    assert_null(json_dumps(list, 0));
    json_object_del(obj, "back");
    json_decref(obj);
    json_decref(list);

    /* One value twice in a container is not a cycle. */
    json_t *shared = json_pack("[1]");
    json_t *twice = json_pack("[O, O, {s:O}]", shared, shared, "k", shared);
    assert_same_all_flags(twice);
    json_decref(twice);
    json_decref(shared);

    /* As deep as Jansson parses: written; deeper than JSONOUT_MAX_DEPTH: fails. */
    json_t *deep = json_array();
    json_t *inner = deep;
    for (int d = 1; d < JSONOUT_MAX_DEPTH; d++) {
        json_t *next = json_array();
        json_array_append_new(inner, next);
        inner = next;
    }
    char *text = jsonout_dumps(deep, JSON_COMPACT);
    assert_non_null(text);
    assert_int_equal(strlen(text), 2 * JSONOUT_MAX_DEPTH);
    free(text);
    json_array_append_new(inner, json_array());
    assert_null(jsonout_dumps(deep, JSON_COMPACT));
    json_decref(deep);
}

static void test_dumpf(void **state)
{
    (void)state;
    json_t *v = json_pack("{s:f, s:[i, s]}", "x", 0.1, "y", 1, "two");
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(jsonout_dumpf(v, f, JSON_INDENT(2)), 0);
    char *want = jsonout_dumps(v, JSON_INDENT(2));
    char got[256] = {0};
    rewind(f);
    size_t n = fread(got, 1, sizeof got - 1, f);
    assert_int_equal(n, strlen(want));
    assert_string_equal(got, want);
    free(want);
    json_t *scalar = json_integer(1);
    assert_int_equal(jsonout_dumpf(scalar, f, 0), -1);
    json_decref(scalar);
    assert_int_equal(fclose(f), 0);
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars_like_jansson),
        cmocka_unit_test(test_containers_like_jansson),
        cmocka_unit_test(test_strings_like_jansson),
        cmocka_unit_test(test_strings_word_scan),
        cmocka_unit_test(test_invalid_utf8_fails_like_jansson),
        cmocka_unit_test(test_scalars_need_encode_any),
        cmocka_unit_test(test_reals_shortest_known),
        cmocka_unit_test(test_reals_shortest_random),
        cmocka_unit_test(test_reals_not_finite),
        cmocka_unit_test(test_reals_in_containers),
        cmocka_unit_test(test_cycles_and_depth_fail),
        cmocka_unit_test(test_dumpf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
