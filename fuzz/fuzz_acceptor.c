/* fuzz_acceptor.c — libFuzzer entry for acceptor_classify (server/acceptor.c).
 *
 * Input: the bytes a client sends first, exactly as MSG_PEEK would see them.
 * Besides sanitizer findings, it checks the documented contract: the verdict
 * is -1 (need more), 0 (HTTP) or 1 (WebSocket), and a verdict of 0 or 1 is
 * final: every longer peek of the same stream (each prefix of the input
 * against the whole input, and the input against input + "X") says the same.
 * The acceptor relies on that: it hands a socket over on the first 0 or 1.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "acceptor.h"

/* The verdict of exactly len bytes, from a buffer of that size so ASan sees
 * any read past the peeked bytes. */
static int classify_copy(const uint8_t *data, size_t len)
{
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return -1;
    if (len)
        memcpy(copy, data, len);
    int kind = acceptor_classify(copy, len);
    free(copy);
    if (kind < -1 || kind > 1)
        __builtin_trap();
    return kind;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int whole = classify_copy(data, size);

    uint8_t *longer = malloc(size + 1);
    if (!longer)
        return 0;
    if (size)
        memcpy(longer, data, size);
    longer[size] = 'X';
    int more = classify_copy(longer, size + 1);
    free(longer);
    if (whole >= 0 && more != whole)
        __builtin_trap();

    /* Every prefix would cost O(n^2) calls; the request lines the acceptor
     * tells apart are a dozen bytes long, so prefixes up to 64 bytes cover
     * every point where the verdict can change. */
    size_t limit = size < 64 ? size : 64;
    for (size_t len = 0; len < limit; len++) {
        int kind = classify_copy(data, len);
        if (kind >= 0 && kind != whole)
            __builtin_trap();
    }
    return 0;
}
