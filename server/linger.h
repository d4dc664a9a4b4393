/* linger.h — lingering close for requests refused before their body was read.
 *
 * When the REST API refuses a request at its head (401, 413, ...) it answers
 * at once and libmicrohttpd closes the connection without reading the body.
 * A client that sends its whole body before reading the answer (most HTTP
 * libraries) would then write into a closed socket, get a reset, and never
 * see the answer.  The REST API gives such a socket (a duplicate of its fd)
 * to the linger thread, which reads and forgets whatever still arrives until
 * the client closes, falls silent, or passes a byte or time limit; only then
 * is the socket really closed.  Nothing read is kept: lingering costs no
 * memory beyond one fixed buffer, and at most LINGER_MAX sockets linger at
 * once (more are closed at once).
 *
 * Threads: linger_add from any thread; linger_start/stop from one thread.
 */
#ifndef IPPC_LINGER_H
#define IPPC_LINGER_H

#include <stddef.h>

#include "error.h"

#define LINGER_MAX 256

typedef struct linger linger;

/* max_bytes: most bytes read from one socket before it is closed. */
linger *linger_start(size_t max_bytes, ippc_error *err);
/* Takes fd (non-blocking) and closes it once drained. */
void linger_add(linger *l, int fd);
/* Closes every lingering socket and ends the thread. */
void linger_stop(linger *l);

#endif
