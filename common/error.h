/* error.h — the one error shape of ippc.
 *
 * Functions that can fail return 0 / a negative value / NULL and fill an
 * ippc_error.  The code is a short stable string (API clients match on it); the
 * message is for people.  http_status_for() is the single table that maps codes
 * to HTTP statuses, so the REST and WS front ends agree.
 *
 * Thread-safety: everything here is pure and reentrant.
 */
#ifndef IPPC_ERROR_H
#define IPPC_ERROR_H

#include <jansson.h>

/* Error codes (the "code" field of {"error":{"code","message"}}). */
#define ERR_BAD_REQUEST "bad_request"             /* 400: malformed JSON, missing field */
#define ERR_UNAUTHORIZED "unauthorized"           /* 401: missing or wrong token */
#define ERR_NOT_FOUND "not_found"                 /* 404: no such route/engine/request */
#define ERR_METHOD "method_not_allowed"           /* 405 */
#define ERR_TIMEOUT "request_timeout"             /* 408: the request head took too long */
#define ERR_CONFLICT "conflict"                   /* 409 */
#define ERR_GONE "gone"                           /* 410: a request evicted or released */
#define ERR_TOO_LARGE "payload_too_large"         /* 413 */
#define ERR_URI_TOO_LONG "uri_too_long"           /* 414 */
#define ERR_HEADERS_TOO_LARGE "headers_too_large" /* 431 */
#define ERR_UPGRADE_REQUIRED "upgrade_required"   /* 426: /ws or /engine, no upgrade */
#define ERR_UNSUPPORTED "unsupported_media"       /* 415 */
#define ERR_INVALID "invalid_value"               /* 422: well-formed but unusable */
#define ERR_NO_ENGINES "no_engines"               /* 422: targets name no live engine */
#define ERR_BAD_TARGETS "bad_targets"             /* 400: unparsable target spec */
#define ERR_UNAVAILABLE "unavailable"             /* 503: shutting down */
#define ERR_OVERLOADED "overloaded"               /* 503: the controller's memory budget is spent */
#define ERR_INTERNAL "internal"                   /* 500 */

typedef struct ippc_error {
    char code[32];
    char message[512];
} ippc_error;

/* Fills err (if non-NULL) with code and a printf-style message; returns -1 so
 * callers can write `return ippc_error_set(err, ...)`. */
int ippc_error_set(ippc_error *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* HTTP status for an error code; 500 for unknown codes. */
int http_status_for(const char *code);

/* New reference: {"error":{"code":..., "message":...}}. */
json_t *ippc_error_json(const ippc_error *err);

#endif
