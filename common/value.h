/* value.h — values as they travel: client JSON <-> wire form (skeleton + blobs).
 *
 * A value is any JSON value plus ndarrays.  On the wire between controller and
 * engines a value is a JSON "skeleton" in which every ndarray is replaced by
 *     {"$nd": K, "dtype": "float64", "shape": [d0, d1, ...]}
 * and its bytes (row-major, native little-endian) travel as blob K of the
 * message, i.e. as the K-th binary WebSocket frame after the JSON frame.  So
 * bulk data is never JSON numbers between controller and engines.
 *
 * Client-facing JSON knows two spellings of an array:
 *   - a list of numbers, or a rectangular nest of such lists (int64 if every
 *     number is an integer, float64 otherwise);
 *   - typed: {"dtype": "float64", "shape": [n], "data": "<base64>"}.
 * value_from_client turns both into ndarrays; value_to_client writes nested
 * lists (VALUE_FORMAT_LIST) or typed objects (VALUE_FORMAT_TYPED).
 *
 * JSON text: values (and every other document of ippc) leave as text through
 * jsonout.h, which writes reals in their shortest round-trip form; it is
 * included here so that every module that handles values has it.
 *
 * Ownership: every function returns new references / fills caller-owned blobs;
 * inputs are never consumed.  Thread-safety: pure, reentrant.
 */
#ifndef IPPC_VALUE_H
#define IPPC_VALUE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "error.h"
#include "jsonout.h"

typedef enum nd_dtype {
    ND_FLOAT64 = 0,
    ND_FLOAT32,
    ND_INT64,
    ND_INT32,
    ND_UINT8,
    ND_DTYPE_COUNT
} nd_dtype;

#define ND_MAX_DIMS 8

/* Deepest nesting of lists/objects that the value functions accept; deeper
 * input is an ERR_INVALID error, never a deep recursion. */
#define VALUE_MAX_DEPTH 64

/* "float64" etc.; NULL for an invalid dtype. */
const char *nd_dtype_name(nd_dtype dtype);
/* Parses a dtype name; -1 if unknown. */
int nd_dtype_parse(const char *name);
/* Bytes per element. */
size_t nd_dtype_size(nd_dtype dtype);

/* One binary attachment.  data is malloc'd and owned by the blob. */
typedef struct ippc_blob {
    unsigned char *data;
    size_t len;
} ippc_blob;

/* A growable list of blobs owned by one message. */
typedef struct ippc_blobs {
    ippc_blob *items;
    size_t count;
    size_t cap;
} ippc_blobs;

void blobs_init(ippc_blobs *b);
void blobs_free(ippc_blobs *b); /* frees every blob's data and the list */
/* Appends, taking ownership of data (freed by blobs_free).  Returns the index
 * or -1 on allocation failure (data is then freed). */
long blobs_push(ippc_blobs *b, unsigned char *data, size_t len);
/* Moves all blobs of src to the end of dst (src is left empty); returns the
 * index offset at which they landed, or -1. */
long blobs_append_all(ippc_blobs *dst, ippc_blobs *src);

/* Describes one ndarray reference inside a skeleton. */
typedef struct nd_ref {
    nd_dtype dtype;
    int ndim;
    size_t shape[ND_MAX_DIMS];
    size_t count; /* product of shape */
    size_t blob;  /* index into the message's blobs */
} nd_ref;

/* If v is an ndarray placeholder {"$nd":K,...}, fills ref and returns 1; returns
 * 0 if it is not one; -1 (err set) if it is one but malformed or K >= nblobs, or
 * the blob length does not match dtype*shape. */
int value_nd_ref(const json_t *v, const ippc_blobs *blobs, nd_ref *ref, ippc_error *err);
/* New placeholder object for an ndarray stored as blob index. */
json_t *value_nd_placeholder(nd_dtype dtype, int ndim, const size_t *shape, size_t blob);

typedef enum value_format { VALUE_FORMAT_LIST = 0, VALUE_FORMAT_TYPED } value_format;

/* Client JSON -> skeleton; new ndarray blobs are appended to blobs (indices in
 * the skeleton are absolute indices into blobs).  NULL + err on bad input
 * (bad dtype, base64, shape/data mismatch, "$nd" keys from a client, ...). */
json_t *value_from_client(const json_t *in, ippc_blobs *blobs, ippc_error *err);

/* Skeleton (+ its blobs) -> client JSON.  NULL + err on a malformed skeleton. */
json_t *value_to_client(const json_t *skel, const ippc_blobs *blobs, value_format fmt,
                        ippc_error *err);

/* ipyparallel's partition: n items over p parts, the first n % p parts get one
 * more.  Fills [*start, *start + *count) for part idx (0 <= idx < p, p > 0). */
void scatter_partition(size_t n, size_t p, size_t idx, size_t *start, size_t *count);

/* Splits a wire value along its first axis into p parts: an ndarray into p
 * ndarrays (1-D part of a 1-D array, rows of an n-D one), a JSON list into p
 * lists.  parts[i] gets a new skeleton, part_blobs[i] (initialised by the
 * caller) its own blobs.  Scalars and objects cannot be scattered (-1, err). */
int value_scatter(const json_t *skel, const ippc_blobs *blobs, size_t p, json_t **parts,
                  ippc_blobs *part_blobs, ippc_error *err);

/* Concatenates n wire values along the first axis, as gather does: if every
 * part is an ndarray of one dtype and equal trailing shape, the result is one
 * ndarray (appended to out_blobs); otherwise a JSON list made of the parts'
 * items (a list part contributes its items, an ndarray its rows/elements as
 * client lists, anything else itself).  New skeleton or NULL + err. */
json_t *value_gather(json_t *const *parts, const ippc_blobs *part_blobs, size_t n,
                     ippc_blobs *out_blobs, ippc_error *err);

/* What jansson holds for v, estimated by a walk of the tree (nodes, keys,
 * strings, list slots; true/false/null are free).  Above its compact text's
 * length unless strings are mostly escaped characters, so it also sizes the
 * JSON part of a message.  What the controller's byte budget counts for a
 * result's JSON.  0 for NULL.  Pure. */
size_t json_bytes_estimate(const json_t *v);

#endif
