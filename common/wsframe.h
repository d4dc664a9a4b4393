/* wsframe.h — RFC 6455 frames as a WebSocket client reads and writes them, for
 * the engine's own link to the controller (engine/link.c).
 *
 * Why the engine does not use libwebsockets' client here: its client frame
 * parser takes one byte per call, which held an engine's receiving end to
 * about 200 MB/s (69% of the engine's time receiving an array went there;
 * bench/NOTES.md, issue 10 item 1).  This decoder hands out a frame's payload
 * as whole runs of the input, so the caller copies each byte once.
 *
 * Pure: no I/O, no allocation; one wsframe_rx per connection, used by one
 * thread.  The controller side keeps libwebsockets (its server parser takes
 * payload in bulk).
 */
#ifndef IPPC_WSFRAME_H
#define IPPC_WSFRAME_H

#include <stddef.h>
#include <stdint.h>

#include "wsmsg.h"

enum {
    WSFRAME_OP_CONTINUATION = 0x0,
    WSFRAME_OP_TEXT = 0x1,
    WSFRAME_OP_BINARY = 0x2,
    WSFRAME_OP_CLOSE = 0x8,
    WSFRAME_OP_PING = 0x9,
    WSFRAME_OP_PONG = 0xa,
};

/* What wsframe_next found. */
typedef enum {
    WSFRAME_MORE, /* the input is used up; nothing complete */
    WSFRAME_DATA, /* payload bytes of a text/binary message (maybe none) */
    WSFRAME_PING, /* a whole control frame: its payload is rx->ctrl */
    WSFRAME_PONG,
    WSFRAME_CLOSE,
    WSFRAME_ERROR, /* the peer broke the protocol: close with 1002 */
} wsframe_event;

typedef struct wsframe_rx {
    unsigned char hdr[14]; /* the header being read */
    size_t hdr_len;
    int in_payload; /* the header is complete; `remaining` bytes follow */
    int opcode, fin;
    uint64_t remaining; /* payload bytes of the current frame not handed out */
    int started;        /* some of the current data frame was handed out */
    int in_message;     /* a data message began and its final frame has not ended */
    int message_binary; /* that message's kind */
    unsigned char ctrl[125];
    size_t ctrl_len;
} wsframe_rx;

void wsframe_rx_init(wsframe_rx *rx);

/* Consumes input from in[0..len) up to the next event and sets *used to the
 * bytes it took (all of them for WSFRAME_MORE).  For WSFRAME_DATA, *piece and
 * *piece_len are the payload run (pointing into in) and *frag says where it
 * belongs, in the terms ws_reader_push takes.  For WSFRAME_ERROR, *why says
 * what was wrong.  Frames from a server must not be masked; control frames are
 * at most 125 bytes and never fragmented; reserved bits and opcodes are
 * refused. */
wsframe_event wsframe_next(wsframe_rx *rx, const unsigned char *in, size_t len, size_t *used,
                           const unsigned char **piece, size_t *piece_len, ws_fragment *frag,
                           const char **why);

/* Writes the header of one whole client frame (FIN set) with a payload of len
 * bytes into out (room for 14 bytes) and returns its length.  The frame is
 * masked with the all-zero key, so the payload goes out as it is, straight
 * from the caller's buffer: RFC 6455 asks clients for unpredictable keys to
 * protect caching proxies from scripts in browsers; an engine is no browser
 * and talks to its controller directly, and a zero key lets both ends skip
 * the XOR pass over every array. */
size_t wsframe_client_header(unsigned char *out, int opcode, uint64_t len);

/* The same for a server frame (never masked): the controller writes an
 * array to an engine this way (ws_outq_set_direct). */
size_t wsframe_server_header(unsigned char *out, int opcode, uint64_t len);

#endif
