/* binbody.h — the bodies of binary answers: a .npy file, multipart/mixed.
 *
 * A binary answer is a few small pieces this module writes (a .npy header,
 * a part's headers, boundaries) around array bytes it borrows from the
 * engines' results (hub_array, hub_parts: references held, no copy).  The
 * answer is a libmicrohttpd response whose content callback walks those
 * segments as MHD asks for bytes, and whose free callback releases the
 * references once MHD is done with the response (sent, or the connection
 * gone).  The Content-Length is known up front.
 *
 * multipart/mixed (RFC 2046): one part per target engine, in target order,
 * each with the headers
 *     Content-Type: application/octet-stream | application/x-npy |
 *                   application/json (a value that is not an array)
 *     Content-Length: N
 *     X-Ippc-Engine: <engine id>
 *     X-Ippc-Dtype: float64     X-Ippc-Shape: 1000000   (arrays)
 * The boundary is "ippc-" and 32 random hex digits, checked not to occur
 * in any part (drawn again if it does), so a parser that searches for it
 * (Python's email package) and one that trusts Content-Length both work.
 *
 * Thread: the MHD thread builds responses; MHD calls the callbacks on its
 * thread.  Ownership: each builder takes what it is given (released even
 * when it fails).
 */
#ifndef IPPC_BINBODY_H
#define IPPC_BINBODY_H

#include <microhttpd.h>

#include "error.h"
#include "hub.h"

/* A .npy file of the array a (taken: freed with the response, a with
 * free()).  NULL + err when out of memory. */
struct MHD_Response *binbody_npy(hub_array *a, ippc_error *err);

/* multipart/mixed of the parts p (taken: released with the response, p with
 * free()); array parts as .npy files when npy_parts, else as raw bytes.
 * content_type receives "multipart/mixed; boundary=..." (cap >= 64).  NULL
 * + err when out of memory. */
struct MHD_Response *binbody_multipart(hub_parts *p, int npy_parts, char *content_type, size_t cap,
                                       ippc_error *err);

/* The largest piece MHD asks the content callback for at once. */
#define BINBODY_BLOCK ((size_t)256 << 10)

#endif
