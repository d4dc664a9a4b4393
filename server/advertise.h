/* advertise.h — which address the controller writes into its connection files.
 *
 * The controller binds one address (--ip) but clients and engines need one
 * they can reach: a wildcard bind (0.0.0.0) is not such an address, and
 * behind NAT neither is the bound one.  This module decides the host part of
 * the URLs in ippc-client.json and ippc-engine.json:
 *   --location HOST given      -> HOST (a host name or an IPv4 address)
 *   --ip 0.0.0.0               -> the first non-loopback IPv4 address of an
 *                                 interface that is up; none -> an error
 *                                 asking for --location (never 127.0.0.1)
 *   any other --ip             -> that address
 *
 * Called once by main() before the connection files are written; no state.
 */
#ifndef IPPC_ADVERTISE_H
#define IPPC_ADVERTISE_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* 1 for an address only this machine can reach (127.0.0.0/8, "localhost"). */
bool advertise_is_loopback(const char *ip);

/* 1 for the address that means "every interface". */
bool advertise_is_wildcard(const char *ip);

/* A --location value: a host name or IPv4 address of at most 253 characters
 * made of letters, digits, '.', '-' and '_' (nothing a URL would need to
 * escape).  Returns true when usable. */
bool advertise_location_valid(const char *location);

/* Fills out (len >= 256) with the host clients and engines should use.
 * location may be NULL.  Returns 0, or -1 with err (ERR_INVALID: a bad
 * --location; ERR_UNAVAILABLE: a wildcard bind on a host without a
 * non-loopback IPv4 address). */
int advertise_host(const char *bind_ip, const char *location, char *out, size_t len,
                   ippc_error *err);

#endif
