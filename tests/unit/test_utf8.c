/* test_utf8.c — common/utf8.c: sequences Jansson accepts, and those it
 * does not (overlong, surrogates, beyond U+10FFFF, cut short). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>

#include "utf8.h"

static size_t decode(const char *bytes, size_t n, uint32_t *cp)
{
    return utf8_decode((const unsigned char *)bytes, n, cp);
}

static void test_valid_sequences_of_every_length(void **state)
{
    (void)state;
    uint32_t cp;
    assert_int_equal(decode("A", 1, &cp), 1);
    assert_int_equal(cp, 0x41);
    assert_int_equal(decode("\xC3\xA9", 2, &cp), 2); /* é */
    assert_int_equal(cp, 0xE9);
    assert_int_equal(decode("\xE2\x82\xAC", 3, &cp), 3); /* € */
    assert_int_equal(cp, 0x20AC);
    assert_int_equal(decode("\xF0\x9F\x98\x80", 4, &cp), 4); /* U+1F600 */
    assert_int_equal(cp, 0x1F600);
    assert_int_equal(decode("\xF4\x8F\xBF\xBF", 4, &cp), 4); /* the last code point */
    assert_int_equal(cp, 0x10FFFF);
    /* only the first sequence counts */
    assert_int_equal(decode("\xC3\xA9xyz", 5, &cp), 2);
}

static void test_invalid_sequences_are_refused(void **state)
{
    (void)state;
    uint32_t cp;
    assert_int_equal(decode("\x80", 1, &cp), 0);             /* a continuation byte first */
    assert_int_equal(decode("\xC0\x80", 2, &cp), 0);         /* overlong NUL */
    assert_int_equal(decode("\xC1\xBF", 2, &cp), 0);         /* overlong */
    assert_int_equal(decode("\xE0\x80\xAF", 3, &cp), 0);     /* overlong '/' */
    assert_int_equal(decode("\xF0\x8F\xBF\xBF", 4, &cp), 0); /* overlong U+FFFF */
    assert_int_equal(decode("\xED\xA0\x80", 3, &cp), 0);     /* a surrogate */
    assert_int_equal(decode("\xF4\x90\x80\x80", 4, &cp), 0); /* beyond U+10FFFF */
    assert_int_equal(decode("\xF5\x80\x80\x80", 4, &cp), 0);
    assert_int_equal(decode("\xFF", 1, &cp), 0);
    assert_int_equal(decode("\xC3\x28", 2, &cp), 0);     /* a bad continuation */
    assert_int_equal(decode("\xE2\x82\xAC", 2, &cp), 0); /* cut short */
}

/* 1 when the n bytes at b are a run of valid sequences. */
static int valid_text(const unsigned char *b, size_t n)
{
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_decode(b + i, n - i, &cp);
        if (len == 0)
            return 0;
        i += len;
    }
    return 1;
}

static void assert_agrees(const unsigned char *b, size_t n)
{
    json_t *j = json_stringn((const char *)b, n);
    if (valid_text(b, n) != (j != NULL))
        fail_msg("%zu bytes %02x %02x %02x %02x: utf8 says %d, Jansson %d", n, b[0],
                 n > 1 ? b[1] : 0, n > 2 ? b[2] : 0, n > 3 ? b[3] : 0, valid_text(b, n), j != NULL);
    json_decref(j);
}

/* What utf8_decode accepts is what Jansson takes as a string: every one-
 * and two-byte input, and every second byte after the three- and four-byte
 * leads (with continuation and plain bytes after it). */
static void test_agrees_with_jansson(void **state)
{
    (void)state;
    static const unsigned char tails[] = {0x80, 0xBF, 0x41, 0xC3};
    unsigned char b[4];
    for (unsigned lead = 0; lead < 256; lead++)
        for (unsigned next = 0; next < 256; next++) {
            b[0] = (unsigned char)lead;
            b[1] = (unsigned char)next;
            assert_agrees(b, 1);
            assert_agrees(b, 2);
            if (lead < 0xE0)
                continue;
            for (size_t t = 0; t < sizeof tails; t++) {
                b[2] = tails[t];
                assert_agrees(b, 3);
                for (size_t u = 0; u < sizeof tails; u++) {
                    b[3] = tails[u];
                    assert_agrees(b, 4);
                }
            }
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_sequences_of_every_length),
        cmocka_unit_test(test_invalid_sequences_are_refused),
        cmocka_unit_test(test_agrees_with_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
