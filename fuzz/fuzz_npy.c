/* fuzz_npy.c — libFuzzer entry for common/npy.c.
 *
 * Input: the start of a .npy body.  Besides sanitizer findings, it checks
 * what npy.h promises: a header that parses lies within the input, agrees
 * with npy_header_size (the split a receiver makes as bytes arrive), has
 * 1..ND_MAX_DIMS dimensions whose product is its count, and writes back (as
 * ippc's little-endian header) into a header that parses to the same array.
 * npy_header_size never asks for more than the largest header.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (size_t have = 0; have <= size && have <= 16; have++)
        if (npy_header_size(data, have) > NPY_PREAMBLE_V2 + NPY_DICT_MAX)
            __builtin_trap();
    npy_header h;
    ippc_error err;
    if (npy_parse(data, size, &h, &err) < 0) {
        if (strcmp(err.code, ERR_BAD_REQUEST) != 0 || !err.message[0])
            __builtin_trap();
        return 0;
    }
    if (h.header_len > size || h.header_len < NPY_PREAMBLE_V1 ||
        npy_header_size(data, size) != h.header_len ||
        npy_header_size(data, h.header_len) != h.header_len)
        __builtin_trap();
    if (h.ndim < 1 || h.ndim > ND_MAX_DIMS || (unsigned)h.dtype >= ND_DTYPE_COUNT)
        __builtin_trap();
    size_t count = 1;
    for (int d = 0; d < h.ndim; d++)
        count *= h.shape[d];
    if (count != h.count || npy_data_bytes(&h) != count * nd_dtype_size(h.dtype))
        __builtin_trap();

    unsigned char out[NPY_HEADER_MAX];
    size_t n = npy_write_header(h.dtype, h.ndim, h.shape, out, sizeof out);
    npy_header back;
    if (n == 0 || npy_parse(out, n, &back, &err) < 0 || back.header_len != n ||
        back.dtype != h.dtype || back.ndim != h.ndim || back.big_endian ||
        memcmp(back.shape, h.shape, sizeof h.shape[0] * (size_t)h.ndim) != 0)
        __builtin_trap();
    return 0;
}
