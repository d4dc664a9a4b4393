/* fuzz_wsframe.c — libFuzzer entry for the engine's frame decoder (wsframe_next,
 * common/wsframe.c) feeding the message reader, as engine/link.c does.
 *
 * Input: the first byte picks the size of the pieces the rest is cut into
 * (1..256 bytes, as reads of a socket would cut it); the rest is what a
 * controller sent.  Besides sanitizer findings it checks the contract: the
 * decoder never takes more than it was given, a payload run lies inside the
 * input, a protocol error ends the connection (nothing is decoded after it),
 * and the reader's limit holds.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "wsframe.h"

#define MAX_MESSAGE 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)data[0] + 1;
    data++;
    size--;
    wsframe_rx rx;
    wsframe_rx_init(&rx);
    ws_reader r;
    ws_reader_init(&r, MAX_MESSAGE, NULL);
    int closed = 0;
    for (size_t at = 0; at < size && !closed; at += step) {
        size_t n = size - at < step ? size - at : step, off = 0;
        while (off < n && !closed) {
            size_t used = 0, plen = 0;
            const unsigned char *piece = NULL;
            ws_fragment f;
            const char *why = NULL;
            wsframe_event ev =
                wsframe_next(&rx, data + at + off, n - off, &used, &piece, &plen, &f, &why);
            assert(used <= n - off);
            if (ev == WSFRAME_DATA) {
                assert(piece >= data + at + off && piece + plen <= data + at + off + used);
                json_t *msg = NULL;
                ippc_blobs blobs;
                blobs_init(&blobs);
                ippc_error err = {0};
                int rc = ws_reader_push(&r, &f, piece, plen, &msg, &blobs, &err);
                assert(r.message_bytes + r.len <= MAX_MESSAGE);
                if (rc == 1) {
                    json_decref(msg);
                    blobs_free(&blobs);
                } else if (rc < 0 && ws_reader_fatal(&r, &err)) {
                    closed = 1;
                }
            } else if (ev == WSFRAME_ERROR) {
                assert(why && *why);
                closed = 1;
            } else if (ev == WSFRAME_CLOSE) {
                closed = 1;
            } else if (ev == WSFRAME_MORE) {
                assert(used == n - off);
            }
            off += used;
        }
    }
    ws_reader_free(&r);
    return 0;
}
