/* fuzz_b64.c — libFuzzer entry for common/b64.c.
 *
 * Input: text a client could send as a typed array's "data".  Besides
 * sanitizer findings (the decoder writes exactly the bytes b64_decoded_len
 * promised, never past them), it checks that text which decodes is the
 * alphabet with at most two trailing pads, and that the bytes encode to
 * text that decodes to them again, with the same length.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"

static int in_alphabet(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    size_t n;
    if (b64_decoded_len(text, size, &n) < 0)
        return 0;
    if (n > size)
        __builtin_trap();
    unsigned char *bytes = malloc(n ? n : 1);
    if (!bytes)
        return 0;
    if (b64_decode(text, size, bytes) < 0) {
        free(bytes);
        return 0;
    }
    size_t body = size;
    while (body && data[body - 1] == '=')
        body--;
    if (size - body > 2)
        __builtin_trap();
    for (size_t i = 0; i < body; i++)
        if (!in_alphabet(data[i]))
            __builtin_trap();

    size_t len = b64_encoded_len(n), again;
    char *back = malloc(len ? len : 1);
    unsigned char *twice = malloc(n ? n : 1);
    if (back && twice) {
        if (b64_encode(bytes, n, back) != len || b64_decoded_len(back, len, &again) < 0 ||
            again != n || b64_decode(back, len, twice) < 0 || memcmp(bytes, twice, n) != 0)
            __builtin_trap();
        /* Whole quads have no unused bits: they come back character for
         * character. */
        if (body == size && size % 4 == 0 && memcmp(back, text, size) != 0)
            __builtin_trap();
    }
    free(back);
    free(twice);
    free(bytes);
    return 0;
}
