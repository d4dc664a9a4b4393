/* secret.h — comparing secrets (tokens, engine keys) without leaking, through
 * timing, how much of a guess was right, and finding them where ippc's peers
 * carry them.  Pure. */
#ifndef IPPC_SECRET_H
#define IPPC_SECRET_H

#include <stddef.h>

/* 1 if given equals want; the time taken depends only on want's length. */
int secret_equal(const char *given, const char *want);
/* The same for n bytes that need not end in a NUL.  Never 1 for an empty want. */
int secret_equal_n(const char *given, size_t n, const char *want);

/* 1 if an Authorization header value (n bytes, no NUL needed) is
 * "Bearer <want>": the scheme in any case (RFC 7235), spaces around the
 * credential tolerated. */
int secret_bearer_equal(const char *value, size_t n, const char *want);

/* 1 if a Sec-WebSocket-Protocol value (a comma-separated list, n bytes) has an
 * entry "ippc.token.<want>" — how a browser, which cannot set headers on a
 * WebSocket, sends the client token. */
int secret_protocol_token_equal(const char *list, size_t n, const char *want);

#define SECRET_PROTOCOL_PREFIX "ippc.token."

#endif
