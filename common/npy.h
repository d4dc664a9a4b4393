/* npy.h — NumPy's .npy format (application/x-npy): the header, both ways.
 *
 * A .npy file is a header followed by the array's bytes:
 *     "\x93NUMPY" major minor HLEN dict-text
 * where HLEN is a little-endian uint16 (version 1.0) or uint32 (2.0, 3.0),
 * and dict-text (HLEN bytes, ending in '\n') is a Python literal such as
 *     {'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }
 * padded with spaces.  This module parses that header strictly (every byte
 * from the network is hostile: lengths are checked before they are used,
 * nothing is recursive, only the three keys NumPy writes are accepted, each
 * once) and writes one for an ippc array.  It never touches the data: the
 * caller receives the bytes after the header into their own buffer (no copy),
 * and checks their length with npy_data_bytes.
 *
 * Dtypes: ippc's float64 (f8), float32 (f4), int64 (i8), int32 (i4), uint8
 * (u1), in either byte order ('<', '>', and '|' for one-byte types), and
 * NumPy's bool (b1), which becomes uint8 (ippc has no bool: the bytes, 0 and
 * 1, are the same).  Big-endian data must be swapped to the host's order
 * (npy_swap).  Refused: fortran_order True (ippc arrays are C order),
 * object arrays ('|O'), structured and every other dtype, 0-d arrays and
 * more than ND_MAX_DIMS dimensions, a shape whose size overflows.
 *
 * Errors are ERR_BAD_REQUEST with a message that says what was wrong.
 * Thread-safety: pure and reentrant.  No allocation.
 */
#ifndef IPPC_NPY_H
#define IPPC_NPY_H

#include <stddef.h>

#include "error.h"
#include "value.h"

/* The preamble: magic (6), version (2), header length (2 or 4). */
#define NPY_PREAMBLE_V1 10
#define NPY_PREAMBLE_V2 12
/* The longest dict text accepted.  NumPy's own reader refuses headers over
 * 10,000 bytes by default; one for ND_MAX_DIMS dimensions takes ~250. */
#define NPY_DICT_MAX 4096
/* Room for any header npy_write_header writes. */
#define NPY_HEADER_MAX 512

typedef struct npy_header {
    int major, minor;  /* the file's version */
    size_t header_len; /* preamble + dict: where the data starts */
    nd_dtype dtype;    /* what ippc stores it as */
    int big_endian;    /* the data must be swapped (npy_swap) */
    int is_bool;       /* descr was b1 (stored as uint8) */
    char descr[8];     /* the descr as given, for messages */
    int ndim;          /* 1..ND_MAX_DIMS */
    size_t shape[ND_MAX_DIMS];
    size_t count; /* product of shape */
} npy_header;

/* How many leading bytes of a file the header takes, as far as the first
 * have bytes tell: 0 when fewer than a preamble (or a preamble whose magic
 * or version is wrong: then the header is whatever came, and npy_parse
 * says why it is bad), else the preamble plus the declared dict length.
 * Lets a receiver split the header off a stream as it arrives. */
size_t npy_header_size(const unsigned char *bytes, size_t have);

/* Parses the header at the start of bytes[0..len) (len may include data;
 * only header_len bytes are read).  0 with *out filled, or -1 + err:
 * bad magic, unknown version, truncated, a dict that is not the literal
 * NumPy writes, an unsupported dtype, fortran order, a bad shape. */
int npy_parse(const unsigned char *bytes, size_t len, npy_header *out, ippc_error *err);

/* The data bytes the header's dtype and shape need (count * itemsize). */
size_t npy_data_bytes(const npy_header *h);

/* Writes the header of a C-order, little-endian array of dtype and shape
 * into out (cap >= NPY_HEADER_MAX): version 1.0, padded with spaces so the
 * data starts at a multiple of 64 bytes, as NumPy writes it.  Returns its
 * length, or 0 when the dtype or ndim is invalid or cap too small. */
size_t npy_write_header(nd_dtype dtype, int ndim, const size_t *shape, unsigned char *out,
                        size_t cap);

/* Reverses the byte order of count items of itemsize bytes, in place. */
void npy_swap(unsigned char *data, size_t count, size_t itemsize);

#endif
