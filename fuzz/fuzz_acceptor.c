/* fuzz_acceptor.c — libFuzzer entry for acceptor_classify and acceptor_answer
 * (server/acceptor.c).
 *
 * Input: the bytes a client sends first, exactly as MSG_PEEK would see them.
 * Besides sanitizer findings, it checks the documented contract:
 *   - the verdict is one of the acceptor_kind values; a hand-over names a head
 *     length within the input; a refusal has a status and code, and its answer
 *     fits in 1024 bytes and says Content-Length right;
 *   - a verdict other than NEED_MORE is final: every prefix of the input that
 *     is decided already says the same (kind and status), and so does the
 *     input followed by more bytes.  The acceptor relies on that: it acts on
 *     the first decided peek.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "acceptor.h"

static const acceptor_secrets secrets = {.token = "tok", .engine_key = "key"};

/* The verdict of exactly len bytes, from a buffer of that size so ASan sees
 * any read past the peeked bytes. */
static acceptor_kind classify_copy(const uint8_t *data, size_t len, acceptor_verdict *v)
{
    char *copy = malloc(len ? len : 1);
    if (!copy)
        __builtin_trap();
    if (len)
        memcpy(copy, data, len);
    acceptor_kind kind = acceptor_classify(copy, len, &secrets, v);
    free(copy);
    switch (kind) {
    case ACCEPTOR_NEED_MORE: break;
    case ACCEPTOR_HTTP:
    case ACCEPTOR_WS_CLIENT:
    case ACCEPTOR_WS_ENGINE:
        if (v->head_len == 0 || v->head_len > len)
            __builtin_trap();
        break;
    case ACCEPTOR_REFUSE: {
        if (v->status < 400 || v->status > 499 || !v->code || !v->message[0])
            __builtin_trap();
        char out[1024];
        size_t n = acceptor_answer(v, out, sizeof out);
        if (n == 0 || n >= sizeof out)
            __builtin_trap();
        out[n] = '\0';
        const char *body = strstr(out, "\r\n\r\n");
        const char *cl = strstr(out, "Content-Length: ");
        if (!body || !cl)
            __builtin_trap();
        char *end;
        unsigned long length = strtoul(cl + 16, &end, 10); /* the header names the body's size */
        if (end == cl + 16 || *end != '\r' || length != strlen(body + 4))
            __builtin_trap();
        break;
    }
    default: __builtin_trap();
    }
    return kind;
}

static int same(acceptor_kind a, const acceptor_verdict *va, acceptor_kind b,
                const acceptor_verdict *vb)
{
    return a == b && (a != ACCEPTOR_REFUSE || va->status == vb->status) &&
           (a == ACCEPTOR_REFUSE || a == ACCEPTOR_NEED_MORE || va->head_len == vb->head_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    acceptor_verdict whole_v, v;
    acceptor_kind whole = classify_copy(data, size, &whole_v);

    uint8_t *longer = malloc(size + 16);
    if (!longer)
        return 0;
    if (size)
        memcpy(longer, data, size);
    memcpy(longer + size, "X\r\n\r\nGET / HTTP", 16);
    acceptor_kind more = classify_copy(longer, size + 16, &v);
    free(longer);
    if (whole != ACCEPTOR_NEED_MORE && !same(whole, &whole_v, more, &v))
        __builtin_trap();

    /* Prefixes: all of them for short inputs, a sample for long ones (each
     * call is O(n)). */
    size_t step = size < 512 ? 1 : size / 256;
    for (size_t len = 0; len < size; len += step) {
        acceptor_kind kind = classify_copy(data, len, &v);
        if (kind != ACCEPTOR_NEED_MORE && !same(kind, &v, whole, &whole_v))
            __builtin_trap();
    }
    return 0;
}
