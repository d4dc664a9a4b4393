/* npy.c — NumPy's .npy header, parsed strictly and written (see npy.h).
 *
 * The dict text is read by a small hand-written scanner, not by a general
 * Python-literal parser: NumPy writes exactly one shape of literal (a flat
 * dict of three known keys whose values are a string, a boolean and a tuple
 * of non-negative integers), so anything else — nesting, other keys,
 * escapes, signs, expressions — is refused with a message that names it.
 * The scanner never looks past the declared dict length, and every number is
 * bounded before it is multiplied.
 *
 * Relies on: value.h for dtypes.  Pure and reentrant.
 */
#include "npy.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c writes '<' descrs for host-order data: it assumes a little-endian host"
#endif

static const unsigned char MAGIC[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* The widest itemsize (float64, int64): shapes are bounded so that the
 * element count times it fits a size_t, as value.c bounds them. */
#define NPY_MAX_ITEMSIZE 8
/* Longest string literal (keys and descrs are all shorter). */
#define NPY_MAX_STRING 31

/* ------------------------------------------------------------ preamble */

/* The preamble's length for a version, or 0 for a version not read. */
static size_t preamble_len(int major, int minor)
{
    if (minor != 0)
        return 0;
    if (major == 1)
        return NPY_PREAMBLE_V1;
    if (major == 2 || major == 3)
        return NPY_PREAMBLE_V2;
    return 0;
}

static size_t dict_len_of(const unsigned char *bytes, size_t preamble)
{
    if (preamble == NPY_PREAMBLE_V1)
        return (size_t)bytes[8] | (size_t)bytes[9] << 8;
    return (size_t)bytes[8] | (size_t)bytes[9] << 8 | (size_t)bytes[10] << 16 |
           (size_t)bytes[11] << 24;
}

size_t npy_header_size(const unsigned char *bytes, size_t have)
{
    if (have < 8)
        return NPY_PREAMBLE_V1;
    if (memcmp(bytes, MAGIC, sizeof MAGIC) != 0)
        return have; /* bad: npy_parse says why */
    size_t pre = preamble_len(bytes[6], bytes[7]);
    if (pre == 0)
        return have;
    if (have < pre)
        return pre;
    size_t dict = dict_len_of(bytes, pre);
    if (dict > NPY_DICT_MAX)
        return have;
    return pre + dict;
}

/* -------------------------------------------------------------- scanner */

typedef struct scanner {
    const char *p, *end;
    ippc_error *err;
} scanner;

static int bad(scanner *s, const char *what)
{
    return ippc_error_set(s->err, ERR_BAD_REQUEST, "npy header: %s", what);
}

static void skip_blanks(scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t'))
        s->p++;
}

/* Consumes c after blanks; 0, or -1 + err naming what was expected. */
static int expect_char(scanner *s, char c, const char *what)
{
    skip_blanks(s);
    if (s->p >= s->end || *s->p != c)
        return bad(s, what);
    s->p++;
    return 0;
}

/* A '...' or "..." literal of printable ASCII without backslashes into
 * out (NUL-terminated).  0 or -1. */
static int scan_string(scanner *s, char out[NPY_MAX_STRING + 1])
{
    skip_blanks(s);
    if (s->p >= s->end || (*s->p != '\'' && *s->p != '"'))
        return bad(s, "expected a quoted key or string");
    char quote = *s->p++;
    size_t n = 0;
    while (s->p < s->end && *s->p != quote) {
        unsigned char c = (unsigned char)*s->p;
        if (c < 0x20 || c > 0x7e || c == '\\')
            return bad(s, "a string holds an escape or a byte that is not printable ASCII");
        if (n == NPY_MAX_STRING)
            return bad(s, "a string is too long");
        out[n++] = (char)c;
        s->p++;
    }
    if (s->p >= s->end)
        return bad(s, "a string is not closed");
    s->p++;
    out[n] = '\0';
    return 0;
}

/* True or False.  0 or -1. */
static int scan_bool(scanner *s, int *out)
{
    skip_blanks(s);
    size_t left = (size_t)(s->end - s->p);
    if (left >= 4 && memcmp(s->p, "True", 4) == 0) {
        s->p += 4;
        *out = 1;
    } else if (left >= 5 && memcmp(s->p, "False", 5) == 0) {
        s->p += 5;
        *out = 0;
    } else {
        return bad(s, "fortran_order must be True or False");
    }
    /* "Truex" is a name, not True. */
    if (s->p < s->end && (*s->p == '_' || (*s->p >= '0' && *s->p <= '9') ||
                          (*s->p >= 'A' && *s->p <= 'Z') || (*s->p >= 'a' && *s->p <= 'z')))
        return bad(s, "fortran_order must be True or False");
    return 0;
}

/* A non-negative decimal integer as Python writes one (no sign, no leading
 * zero, no underscore, no L), below 2^63.  0 or -1. */
static int scan_dim(scanner *s, size_t *out)
{
    skip_blanks(s);
    const char *start = s->p;
    uint64_t v = 0;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
        unsigned digit = (unsigned)(*s->p - '0');
        if (v > (UINT64_C(1) << 63) / 10)
            return bad(s, "a shape size is too large");
        v = v * 10 + digit;
        s->p++;
    }
    if (s->p == start)
        return bad(s, "shape must be a tuple of non-negative integers, as (3,) or (2, 4)");
    if (*start == '0' && s->p - start > 1)
        return bad(s, "a shape size has a leading zero");
    if (v >= (UINT64_C(1) << 63) || v > SIZE_MAX)
        return bad(s, "a shape size is too large");
    *out = (size_t)v;
    return 0;
}

/* ( d0, d1, ... ) with Python's tuple rules: one element needs its trailing
 * comma, () is the 0-d shape.  0 or -1. */
static int scan_shape(scanner *s, npy_header *h)
{
    if (expect_char(s, '(', "shape must be a tuple, as (3,) or (2, 4)") < 0)
        return -1;
    int n = 0, comma_after_last = 0;
    for (;;) {
        skip_blanks(s);
        if (s->p < s->end && *s->p == ')') {
            s->p++;
            break;
        }
        if (n > 0 && !comma_after_last)
            return bad(s, "shape: expected ',' or ')' after a size");
        if (n == ND_MAX_DIMS) {
            char msg[96];
            snprintf(msg, sizeof msg, "more than %d dimensions are not supported", ND_MAX_DIMS);
            return bad(s, msg);
        }
        if (scan_dim(s, &h->shape[n]) < 0)
            return -1;
        n++;
        comma_after_last = 0;
        skip_blanks(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            comma_after_last = 1;
        }
    }
    if (n == 1 && !comma_after_last)
        return bad(s, "shape (n) is a number, not a tuple: write (n,)");
    if (n == 0)
        return bad(s, "0-d arrays (shape ()) are not supported: reshape to (1,)");
    h->ndim = n;
    return 0;
}

/* ---------------------------------------------------------------- descr */

static const struct {
    char kind, size;
    nd_dtype dtype;
    int is_bool;
} DESCRS[] = {
    {'f', '8', ND_FLOAT64, 0}, {'f', '4', ND_FLOAT32, 0}, {'i', '8', ND_INT64, 0},
    {'i', '4', ND_INT32, 0},   {'u', '1', ND_UINT8, 0},   {'b', '1', ND_UINT8, 1},
};

#define SUPPORTED                                                                                  \
    "ippc takes float64 ('<f8'), float32 ('<f4'), int64 ('<i8'), int32 ('<i4'), uint8 ('|u1') "    \
    "and bool ('|b1', kept as uint8), either byte order"

static int descr_parse(scanner *s, const char *descr, npy_header *h)
{
    char msg[320];
    size_t n = strlen(descr);
    snprintf(h->descr, sizeof h->descr, "%.7s", descr);
    if (n >= 2 && descr[1] == 'O') {
        snprintf(msg, sizeof msg,
                 "object arrays ('%.8s') are not supported: they hold pickled Python objects, "
                 "not numbers",
                 descr);
        return bad(s, msg);
    }
    for (size_t i = 0; n == 3 && i < sizeof DESCRS / sizeof DESCRS[0]; i++) {
        if (descr[1] != DESCRS[i].kind || descr[2] != DESCRS[i].size)
            continue;
        char order = descr[0];
        int one_byte = DESCRS[i].size == '1';
        if (order != '<' && order != '>' && !(order == '|' && one_byte))
            break;
        h->dtype = DESCRS[i].dtype;
        h->is_bool = DESCRS[i].is_bool;
        h->big_endian = order == '>' && !one_byte;
        return 0;
    }
    snprintf(msg, sizeof msg, "dtype '%.16s' is not supported; " SUPPORTED, descr);
    return bad(s, msg);
}

/* ----------------------------------------------------------------- dict */

enum { KEY_DESCR = 1, KEY_FORTRAN = 2, KEY_SHAPE = 4 };

static int scan_entry(scanner *s, npy_header *h, unsigned *seen, char descr[NPY_MAX_STRING + 1])
{
    char key[NPY_MAX_STRING + 1];
    if (scan_string(s, key) < 0)
        return -1;
    unsigned which = strcmp(key, "descr") == 0           ? KEY_DESCR
                     : strcmp(key, "fortran_order") == 0 ? KEY_FORTRAN
                     : strcmp(key, "shape") == 0         ? KEY_SHAPE
                                                         : 0;
    if (!which) {
        char msg[96];
        snprintf(msg, sizeof msg, "unknown key '%s' (only descr, fortran_order, shape)", key);
        return bad(s, msg);
    }
    if (*seen & which)
        return bad(s, "a key appears twice");
    *seen |= which;
    if (expect_char(s, ':', "expected ':' after a key") < 0)
        return -1;
    if (which == KEY_DESCR) {
        skip_blanks(s);
        if (s->p < s->end && *s->p == '[')
            return bad(s, "structured dtypes (a descr that is a list) are not supported");
        return scan_string(s, descr);
    }
    if (which == KEY_FORTRAN) {
        int fortran = 0;
        if (scan_bool(s, &fortran) < 0)
            return -1;
        if (fortran)
            return bad(s, "fortran_order True is not supported: ippc arrays are C order (save "
                          "np.ascontiguousarray(a))");
        return 0;
    }
    return scan_shape(s, h);
}

/* The dict text [p, end) without its final newline. */
static int scan_dict(scanner *s, npy_header *h)
{
    char descr[NPY_MAX_STRING + 1] = "";
    unsigned seen = 0;
    if (expect_char(s, '{', "the header is not a dict ('{' expected)") < 0)
        return -1;
    for (;;) {
        skip_blanks(s);
        if (s->p < s->end && *s->p == '}')
            break;
        if (scan_entry(s, h, &seen, descr) < 0)
            return -1;
        skip_blanks(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == '}')
            break;
        return bad(s, "expected ',' or '}' after a value");
    }
    s->p++; /* the '}' */
    skip_blanks(s);
    if (s->p != s->end)
        return bad(s, "something follows the dict");
    if (seen != (KEY_DESCR | KEY_FORTRAN | KEY_SHAPE))
        return bad(s, "the dict needs exactly the keys descr, fortran_order and shape");
    return descr_parse(s, descr, h);
}

/* count = product of shape, bounded as value.c bounds typed arrays (zero
 * sizes count as one, so no size is let through by a zero elsewhere). */
static int measure(scanner *s, npy_header *h)
{
    size_t span = 1, count = 1;
    for (int d = 0; d < h->ndim; d++) {
        size_t dim = h->shape[d] ? h->shape[d] : 1;
        if (dim > SIZE_MAX / NPY_MAX_ITEMSIZE / span)
            return bad(s, "the shape's size does not fit in memory");
        span *= dim;
        count *= h->shape[d];
    }
    h->count = count;
    return 0;
}

int npy_parse(const unsigned char *bytes, size_t len, npy_header *out, ippc_error *err)
{
    npy_header h;
    memset(&h, 0, sizeof h);
    scanner s = {.err = err};
    size_t magic_seen = len < sizeof MAGIC ? len : sizeof MAGIC;
    if (magic_seen && memcmp(bytes, MAGIC, magic_seen) != 0)
        return bad(&s, "bad magic: the body does not start with \\x93NUMPY");
    if (len < 8)
        return bad(&s, "truncated: fewer bytes than the magic and version");
    h.major = bytes[6];
    h.minor = bytes[7];
    size_t pre = preamble_len(h.major, h.minor);
    if (pre == 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "version %d.%d is not supported (1.0, 2.0 or 3.0)", h.major,
                 h.minor);
        return bad(&s, msg);
    }
    if (len < pre)
        return bad(&s, "truncated: the header length is missing");
    size_t dict = dict_len_of(bytes, pre);
    if (dict > NPY_DICT_MAX) {
        char msg[96];
        snprintf(msg, sizeof msg, "the header is %zu bytes long; the limit is %d", dict,
                 NPY_DICT_MAX);
        return bad(&s, msg);
    }
    if (len - pre < dict)
        return bad(&s, "truncated: the body ends inside the header");
    const char *text = (const char *)bytes + pre;
    if (dict == 0 || text[dict - 1] != '\n')
        return bad(&s, "the header does not end with a newline");
    s.p = text;
    s.end = text + dict - 1;
    if (scan_dict(&s, &h) < 0 || measure(&s, &h) < 0)
        return -1;
    h.header_len = pre + dict;
    assert(h.ndim >= 1 && h.ndim <= ND_MAX_DIMS);
    *out = h;
    return 0;
}

size_t npy_data_bytes(const npy_header *h)
{
    /* measure() bounded count * the widest itemsize. */
    return h->count * nd_dtype_size(h->dtype);
}

/* ---------------------------------------------------------------- write */

size_t npy_write_header(nd_dtype dtype, int ndim, const size_t *shape, unsigned char *out,
                        size_t cap)
{
    static const char *const descr[ND_DTYPE_COUNT] = {
        [ND_FLOAT64] = "<f8", [ND_FLOAT32] = "<f4", [ND_INT64] = "<i8",
        [ND_INT32] = "<i4",   [ND_UINT8] = "|u1",
    };
    if ((unsigned)dtype >= ND_DTYPE_COUNT || ndim < 1 || ndim > ND_MAX_DIMS || cap < NPY_HEADER_MAX)
        return 0;
    char dict[NPY_HEADER_MAX];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     descr[dtype]);
    for (int d = 0; d < ndim; d++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%zu", d ? ", " : "", shape[d]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    /* 8 sizes of 20 digits keep this far below the buffer. */
    assert(n > 0 && (size_t)n < sizeof dict - 64);
    size_t used = NPY_PREAMBLE_V1 + (size_t)n + 1; /* + '\n' */
    size_t total = (used + 63) / 64 * 64;
    size_t dict_len = total - NPY_PREAMBLE_V1;
    memcpy(out, MAGIC, sizeof MAGIC);
    out[6] = 1;
    out[7] = 0;
    out[8] = (unsigned char)(dict_len & 0xff);
    out[9] = (unsigned char)(dict_len >> 8);
    memcpy(out + NPY_PREAMBLE_V1, dict, (size_t)n);
    memset(out + NPY_PREAMBLE_V1 + n, ' ', total - used);
    out[total - 1] = '\n';
    return total;
}

void npy_swap(unsigned char *data, size_t count, size_t itemsize)
{
    if (itemsize == 8) {
        for (size_t i = 0; i < count; i++) {
            uint64_t v;
            memcpy(&v, data + i * 8, 8);
            v = __builtin_bswap64(v);
            memcpy(data + i * 8, &v, 8);
        }
    } else if (itemsize == 4) {
        for (size_t i = 0; i < count; i++) {
            uint32_t v;
            memcpy(&v, data + i * 4, 4);
            v = __builtin_bswap32(v);
            memcpy(data + i * 4, &v, 4);
        }
    } else {
        for (size_t i = 0; i < count; i++)
            for (size_t a = 0, b = itemsize - 1; a < b; a++, b--) {
                unsigned char t = data[i * itemsize + a];
                data[i * itemsize + a] = data[i * itemsize + b];
                data[i * itemsize + b] = t;
            }
    }
}
