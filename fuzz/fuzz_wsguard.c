/* fuzz_wsguard.c — libFuzzer entry for wsguard_scan (server/wsguard.c), the
 * frame-header reader of the /ws relay.
 *
 * Input: one byte of settings (bit 0: the client's direction — a request head
 * to skip, masks required — or the server's — an HTTP answer first, stop at
 * the first frame boundary; bits 1-7: a piece size), then the stream.
 * Besides sanitizer findings it checks that reading the stream in pieces
 * gives what reading it whole gives: the same result, at the same place (an
 * unmasked frame found in a later piece than its first byte is cut one byte
 * after it, at the start of that piece), and cuts never outside the piece.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "wsguard.h"

static void init(wsguard_scan_state *s, int client, size_t size)
{
    memset(s, 0, sizeof *s);
    if (client)
        s->skip = size % 7; /* a short "request head" */
    else
        s->http_answer = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int client = data[0] & 1;
    size_t piece = (size_t)(data[0] >> 1) + 1;
    const unsigned char *p = data + 1;
    size_t n = size - 1;

    wsguard_scan_state whole;
    init(&whole, client, n);
    size_t whole_cut = 0;
    int whole_rc = wsguard_scan(&whole, p, n, client, !client, &whole_cut);
    if (whole_cut > n)
        __builtin_trap();

    wsguard_scan_state s;
    init(&s, client, n);
    size_t at = 0, cut = 0;
    int rc = WSGUARD_SCAN_OK;
    while (at < n) {
        size_t k = n - at < piece ? n - at : piece;
        rc = wsguard_scan(&s, p + at, k, client, !client, &cut);
        if (cut > k)
            __builtin_trap();
        if (rc != WSGUARD_SCAN_OK) {
            cut += at;
            break;
        }
        at += k;
        cut = at;
    }
    if (n == 0)
        rc = wsguard_scan(&s, p, 0, client, !client, &cut);
    if (rc != whole_rc)
        __builtin_trap();
    if (rc != WSGUARD_SCAN_OK && cut != whole_cut &&
        !(rc == WSGUARD_SCAN_UNMASKED && cut == whole_cut + 1))
        __builtin_trap();
    return 0;
}
