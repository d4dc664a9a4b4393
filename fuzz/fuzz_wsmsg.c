/* fuzz_wsmsg.c — libFuzzer entry for the WebSocket message reader (ws_reader_push,
 * common/wsmsg.c).
 *
 * Input: a sequence of fragments as libwebsockets would report them, each
 *   1 byte  flags: bit 0 first, bit 1 final, bit 2 binary
 *   2 bytes remaining (little-endian; bytes of the frame still to come)
 *   1 byte  n, then n bytes of payload (fewer if the input ends)
 * fed to a reader with a 4 KiB message limit and an account in a 3000-byte
 * budget (so both refusals, too large and overloaded, happen).  Besides
 * sanitizer findings it checks the contract: what the reader holds of a
 * message never passes the limit; the account holds exactly what the reader
 * says it charged; a delivered message has as many blobs as its "nbuf"; and
 * once the reader is freed nothing is charged any more.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "wsmsg.h"

#define MAX_MESSAGE 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    budget pool;
    budget_init(&pool, 3000); /* below MAX_MESSAGE: both refusals happen */
    budget_account account;
    budget_account_init(&account, &pool, 0);
    ws_reader r;
    ws_reader_init(&r, MAX_MESSAGE, &account);

    size_t at = 0;
    while (at + 4 <= size) {
        ws_fragment f = {.first = data[at] & 1,
                         .final = (data[at] >> 1) & 1,
                         .binary = (data[at] >> 2) & 1,
                         .remaining = (size_t)data[at + 1] | (size_t)data[at + 2] << 8};
        size_t n = data[at + 3];
        at += 4;
        if (n > size - at)
            n = size - at;
        json_t *msg = NULL;
        ippc_blobs blobs;
        blobs_init(&blobs);
        ippc_error err;
        int rc = ws_reader_push(&r, &f, data + at, n, &msg, &blobs, &err);
        at += n;
        if (rc < -1 || rc > 1)
            __builtin_trap();
        if (rc == 1) {
            json_t *nbuf = json_object_get(msg, "nbuf");
            size_t want = nbuf ? (size_t)json_integer_value(nbuf) : 0;
            if (!json_is_object(msg) || blobs.count != want)
                __builtin_trap();
        }
        if (rc == -1 && (!err.code[0] || !err.message[0]))
            __builtin_trap();
        json_decref(msg);
        blobs_free(&blobs);
        if (r.message_bytes + r.len > MAX_MESSAGE || r.charged != budget_account_held(&account) ||
            budget_used(&pool) != r.charged)
            __builtin_trap();
        if (rc == -1 && ws_reader_fatal(&r, &err)) {
            /* The caller closes here; start over as a new connection would. */
            ws_reader_free(&r);
            ws_reader_init(&r, MAX_MESSAGE, &account);
        }
    }
    ws_reader_free(&r);
    if (budget_used(&pool) != 0 || budget_account_held(&account) != 0)
        __builtin_trap();
    return 0;
}
