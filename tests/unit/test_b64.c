/* test_b64.c — common/b64.c: RFC 4648's test vectors, every byte value and
 * every length round-tripped, and what strict decoding refuses. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "b64.h"

static void encodes_to(const char *bytes, const char *text)
{
    size_t n = strlen(bytes);
    char out[64];
    assert_int_equal(b64_encoded_len(n), strlen(text));
    assert_int_equal(b64_encode((const unsigned char *)bytes, n, out), strlen(text));
    assert_memory_equal(out, text, strlen(text));

    size_t decoded = 99;
    unsigned char back[64];
    assert_int_equal(b64_decoded_len(text, strlen(text), &decoded), 0);
    assert_int_equal(decoded, n);
    assert_int_equal(b64_decode(text, strlen(text), back), 0);
    assert_memory_equal(back, bytes, n);
}

/* RFC 4648, section 10. */
static void test_rfc_vectors(void **state)
{
    (void)state;
    encodes_to("", "");
    encodes_to("f", "Zg==");
    encodes_to("fo", "Zm8=");
    encodes_to("foo", "Zm9v");
    encodes_to("foob", "Zm9vYg==");
    encodes_to("fooba", "Zm9vYmE=");
    encodes_to("foobar", "Zm9vYmFy");
}

/* The two characters past Z, z and 9, and the last of each quad. */
static void test_whole_alphabet(void **state)
{
    (void)state;
    unsigned char bytes[48];
    for (size_t i = 0; i < 16; i++) { /* sextets 4i .. 4i+3 */
        size_t v = (4 * i) << 18 | (4 * i + 1) << 12 | (4 * i + 2) << 6 | (4 * i + 3);
        bytes[3 * i] = (unsigned char)(v >> 16);
        bytes[3 * i + 1] = (unsigned char)(v >> 8);
        bytes[3 * i + 2] = (unsigned char)v;
    }
    char text[64];
    assert_int_equal(b64_encode(bytes, sizeof bytes, text), 64);
    assert_memory_equal(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                        64);
}

/* Every length up to 3 quads past a few hundred bytes, every byte value. */
static void test_round_trip_every_length(void **state)
{
    (void)state;
    enum { MAX = 770 };
    unsigned char bytes[MAX], back[MAX];
    char text[MAX / 3 * 4 + 8];
    for (size_t i = 0; i < MAX; i++)
        bytes[i] = (unsigned char)(i * 131 + 7);
    for (size_t n = 0; n <= MAX; n++) {
        size_t len = b64_encode(bytes, n, text), decoded = 0;
        assert_int_equal(len, b64_encoded_len(n));
        assert_int_equal(len % 4, 0);
        assert_int_equal(b64_decoded_len(text, len, &decoded), 0);
        assert_int_equal(decoded, n);
        memset(back, 0xAA, sizeof back);
        assert_int_equal(b64_decode(text, len, back), 0);
        assert_memory_equal(back, bytes, n);
        assert_int_equal(back[n < MAX ? n : 0], n < MAX ? 0xAA : bytes[0]); /* no overrun */
        /* Without its padding the text decodes the same. */
        size_t bare = len;
        while (bare && text[bare - 1] == '=')
            bare--;
        assert_int_equal(b64_decoded_len(text, bare, &decoded), 0);
        assert_int_equal(decoded, n);
        assert_int_equal(b64_decode(text, bare, back), 0);
        assert_memory_equal(back, bytes, n);
    }
}

static void refused(const char *text)
{
    size_t len = strlen(text), decoded = 0;
    unsigned char out[64];
    if (b64_decoded_len(text, len, &decoded) == 0)
        assert_int_equal(b64_decode(text, len, out), -1);
}

static void test_strict(void **state)
{
    (void)state;
    refused("Z");     /* one character of a quad carries no byte */
    refused("Zm9vY"); /* nor does a tail of one */
    refused("Zg=");   /* padded, but not to a whole quad */
    refused("Z===");  /* three pads */
    refused("====");  /* only pads (found by fuzz_b64) */
    refused("AA======");
    refused("Zm9v Yg=="); /* whitespace */
    refused("Zm9v\nYg==");
    refused("Zm-v"); /* the URL-safe alphabet */
    refused("Zm_v");
    refused("Zm=v"); /* a pad inside */
    refused("=Zm9");
    refused("Zm9v\x80g==");
    refused("Zm9vYg\xff=");
    char nul[] = "Zm9vYmFy";
    nul[5] = '\0';
    size_t decoded;
    unsigned char out[8];
    if (b64_decoded_len(nul, 8, &decoded) == 0)
        assert_int_equal(b64_decode(nul, 8, out), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_vectors),
        cmocka_unit_test(test_whole_alphabet),
        cmocka_unit_test(test_round_trip_every_length),
        cmocka_unit_test(test_strict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
