/* wsframe.c — client-side RFC 6455 frame decoding and headers (see wsframe.h). */
#include "wsframe.h"

#include <assert.h>
#include <string.h>

void wsframe_rx_init(wsframe_rx *rx)
{
    memset(rx, 0, sizeof *rx);
}

/* Bytes the header needs once its first two bytes are known. */
static size_t header_size(const unsigned char *h)
{
    size_t n = 2;
    unsigned len7 = h[1] & 0x7f;
    if (len7 == 126)
        n += 2;
    else if (len7 == 127)
        n += 8;
    if (h[1] & 0x80)
        n += 4;
    return n;
}

static wsframe_event fail(const char **why, const char *what)
{
    *why = what;
    return WSFRAME_ERROR;
}

/* The header is complete: check it and start the payload. */
static wsframe_event begin_frame(wsframe_rx *rx, const char **why)
{
    const unsigned char *h = rx->hdr;
    if (h[0] & 0x70)
        return fail(why, "reserved bits set");
    if (h[1] & 0x80)
        return fail(why, "a masked frame from the server");
    rx->fin = (h[0] & 0x80) != 0;
    rx->opcode = h[0] & 0x0f;
    unsigned len7 = h[1] & 0x7f;
    uint64_t len = len7;
    if (len7 == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
        if (len < 126)
            return fail(why, "a length not in its shortest form");
    } else if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
        if (len >> 63)
            return fail(why, "a 64-bit length with its top bit set");
        if (len <= 0xffff)
            return fail(why, "a length not in its shortest form");
    }
    switch (rx->opcode) {
    case WSFRAME_OP_CLOSE:
    case WSFRAME_OP_PING:
    case WSFRAME_OP_PONG:
        if (!rx->fin || len > sizeof rx->ctrl)
            return fail(why, "a fragmented or oversized control frame");
        rx->ctrl_len = 0;
        break;
    case WSFRAME_OP_TEXT:
    case WSFRAME_OP_BINARY:
        if (rx->in_message)
            return fail(why, "a message began inside another one");
        rx->in_message = 1;
        rx->message_binary = rx->opcode == WSFRAME_OP_BINARY;
        break;
    case WSFRAME_OP_CONTINUATION:
        if (!rx->in_message)
            return fail(why, "a continuation without a message");
        break;
    default: return fail(why, "an unknown opcode");
    }
    rx->remaining = len;
    rx->started = 0;
    rx->in_payload = 1;
    return WSFRAME_MORE;
}

wsframe_event wsframe_next(wsframe_rx *rx, const unsigned char *in, size_t len, size_t *used,
                           const unsigned char **piece, size_t *piece_len, ws_fragment *frag,
                           const char **why)
{
    size_t at = 0;
    *piece = NULL;
    *piece_len = 0;
    for (;;) {
        if (!rx->in_payload) {
            /* Header bytes: two, then as many as those two say. */
            while (at < len && (rx->hdr_len < 2 || rx->hdr_len < header_size(rx->hdr)))
                rx->hdr[rx->hdr_len++] = in[at++];
            if (rx->hdr_len < 2 || rx->hdr_len < header_size(rx->hdr)) {
                *used = at;
                return WSFRAME_MORE;
            }
            rx->hdr_len = 0;
            if (begin_frame(rx, why) == WSFRAME_ERROR) {
                *used = at;
                return WSFRAME_ERROR;
            }
        }
        int control = rx->opcode & 0x8;
        size_t take = len - at;
        if (take > rx->remaining)
            take = (size_t)rx->remaining;
        if (control) {
            assert(rx->ctrl_len + take <= sizeof rx->ctrl);
            memcpy(rx->ctrl + rx->ctrl_len, in + at, take);
            rx->ctrl_len += take;
            at += take;
            rx->remaining -= take;
            if (rx->remaining) {
                *used = at;
                return WSFRAME_MORE;
            }
            rx->in_payload = 0;
            *used = at;
            return rx->opcode == WSFRAME_OP_PING   ? WSFRAME_PING
                   : rx->opcode == WSFRAME_OP_PONG ? WSFRAME_PONG
                                                   : WSFRAME_CLOSE;
        }
        /* Data: hand out what is here, or the empty end of an empty frame. */
        if (take == 0 && rx->remaining) {
            *used = at;
            return WSFRAME_MORE;
        }
        frag->first = !rx->started && rx->opcode != WSFRAME_OP_CONTINUATION;
        frag->binary = rx->message_binary;
        rx->remaining -= take;
        frag->remaining = (size_t)rx->remaining;
        frag->final = rx->fin;
        rx->started = 1;
        *piece = in + at;
        *piece_len = take;
        at += take;
        if (rx->remaining == 0) {
            rx->in_payload = 0;
            if (rx->fin)
                rx->in_message = 0;
        }
        *used = at;
        return WSFRAME_DATA;
    }
}

static size_t header(unsigned char *out, int opcode, uint64_t len, unsigned char mask_bit)
{
    size_t n = 0;
    out[n++] = (unsigned char)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[n++] = (unsigned char)(mask_bit | len);
    } else if (len <= 0xffff) {
        out[n++] = mask_bit | 126;
        out[n++] = (unsigned char)(len >> 8);
        out[n++] = (unsigned char)len;
    } else {
        out[n++] = mask_bit | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (unsigned char)(len >> (8 * i));
    }
    return n;
}

size_t wsframe_client_header(unsigned char *out, int opcode, uint64_t len)
{
    size_t n = header(out, opcode, len, 0x80);
    memset(out + n, 0, 4); /* the mask key: all zero (see wsframe.h) */
    return n + 4;
}

size_t wsframe_server_header(unsigned char *out, int opcode, uint64_t len)
{
    return header(out, opcode, len, 0);
}
