/* nd_repr.c — tostring(a) in the style of numpy's repr:
 *
 *   nd.array([0, 1, 2, 3])               nd.array([0.5, 1. ])
 *   nd.array([[1, 2],                    nd.array([1.e-05, 1.e+00])
 *             [3, 4]], dtype=int32)      nd.array([], shape=(0, 3), dtype=float64)
 *
 * As numpy: every element has the width of the widest one shown; floats are
 * the shortest text (at most 8 decimals) that reads back as the same value,
 * with the decimal points aligned; scientific notation when the magnitudes
 * are >= 1e8, < 1e-4 or span more than 1000x; lines wrap at 75 columns;
 * arrays of more than 1000 elements show the first and last 3 along each
 * axis around "..."; the dtype is shown unless it is float64 or int64 (or
 * the array is empty).  Non-contiguous arrays print through their strides.
 */
#include "nd_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPR_THRESHOLD 1000
#define REPR_EDGE ((size_t)3)
#define REPR_LINE 75
#define REPR_PREFIX "nd.array("
#define REPR_PRECISION 8

typedef struct repr_fmt {
    nd_dtype dtype;
    int summarise;
    int sci;        /* floats: scientific notation */
    int digits;     /* floats: decimals (positional) or mantissa decimals */
    int int_width;  /* positional floats: widest integer part incl. sign */
    int frac_width; /* positional floats: widest fraction (without '.') */
    int width;      /* every element's width */
    /* measuring pass */
    double max_abs, min_abs;
    int any_finite;
} repr_fmt;

static double repr_value(const void *p, nd_dtype t)
{
    switch (t) {
    case ND_FLOAT64: return *(const double *)p;
    case ND_FLOAT32: return *(const float *)p;
    case ND_INT64: return (double)*(const int64_t *)p;
    case ND_INT32: return *(const int32_t *)p;
    default: return *(const uint8_t *)p;
    }
}

static int repr_same(double v, const char *s, nd_dtype t)
{
    double back = strtod(s, NULL);
    return t == ND_FLOAT32 ? (float)back == (float)v : back == v;
}

/* Fewest decimals (<= REPR_PRECISION) that read back as v. */
static int repr_shortest(double v, nd_dtype t, int sci)
{
    char s[64];
    for (int p = 0; p < REPR_PRECISION; p++) {
        snprintf(s, sizeof s, sci ? "%.*e" : "%.*f", p, v);
        if (repr_same(v, s, t))
            return p;
    }
    return REPR_PRECISION;
}

/* Positional text of v with exactly `digits` decimals, trailing zeros
 * trimmed (the '.' stays); returns its length. */
static int repr_positional(char *s, size_t size, double v, int digits)
{
    int n = snprintf(s, size, "%.*f", digits, v);
    if (digits == 0 && n + 1 < (int)size) {
        s[n++] = '.';
        s[n] = 0;
    }
    while (n > 0 && s[n - 1] == '0' && strchr(s, '.'))
        s[--n] = 0;
    return n;
}

static int repr_scientific(char *s, size_t size, double v, int digits)
{
    int n = snprintf(s, size, "%.*e", digits, v);
    char *e = strchr(s, 'e');
    if (digits == 0 && e && n + 1 < (int)size) { /* "1e-05" -> "1.e-05" */
        memmove(e + 1, e, strlen(e) + 1);
        *e = '.';
        n++;
    }
    return n;
}

/* Unpadded text of the element at p. */
static int repr_text(const repr_fmt *f, const void *p, char *s, size_t size)
{
    if (!nd_is_float(f->dtype)) {
        long long v = f->dtype == ND_INT64   ? (long long)*(const int64_t *)p
                      : f->dtype == ND_INT32 ? (long long)*(const int32_t *)p
                                             : (long long)*(const uint8_t *)p;
        return snprintf(s, size, "%lld", v);
    }
    double v = repr_value(p, f->dtype);
    if (isnan(v))
        return snprintf(s, size, "nan");
    if (isinf(v))
        return snprintf(s, size, v > 0 ? "inf" : "-inf");
    if (f->sci)
        return repr_scientific(s, size, v, f->digits);
    int n = repr_positional(s, size, v, f->digits);
    const char *dot = strchr(s, '.');
    int ip = dot ? (int)(dot - s) : n, fp = dot ? n - ip - 1 : 0;
    if (f->width) { /* printing pass: align the points */
        char out[128];
        int m =
            snprintf(out, sizeof out, "%*s%s%*s", f->int_width - ip, "", s, f->frac_width - fp, "");
        snprintf(s, size, "%s", out);
        return m;
    }
    return n;
}

/* ---------------------------------------------------------- walking */

typedef void (*repr_visit)(repr_fmt *f, const void *p, void *ctx);

/* Visits the shown elements in order. */
static void repr_walk(const nd_array *a, int dim, const unsigned char *p, repr_fmt *f,
                      repr_visit visit, void *ctx)
{
    if (a->ndim == 0) {
        visit(f, p, ctx);
        return;
    }
    size_t n = a->shape[dim];
    ptrdiff_t step = a->strides[dim] * (ptrdiff_t)nd_dtype_size(a->dtype);
    for (size_t i = 0; i < n; i++) {
        if (f->summarise && n > 2 * REPR_EDGE && i == REPR_EDGE)
            i = n - REPR_EDGE;
        const unsigned char *q = p + (ptrdiff_t)i * step;
        if (dim + 1 < a->ndim)
            repr_walk(a, dim + 1, q, f, visit, ctx);
        else
            visit(f, q, ctx);
    }
}

static void repr_measure_range(repr_fmt *f, const void *p, void *ctx)
{
    (void)ctx;
    double v = fabs(repr_value(p, f->dtype));
    if (!isfinite(v) || v == 0)
        return;
    if (!f->any_finite || v > f->max_abs)
        f->max_abs = v;
    if (!f->any_finite || v < f->min_abs)
        f->min_abs = v;
    f->any_finite = 1;
}

static void repr_measure_digits(repr_fmt *f, const void *p, void *ctx)
{
    (void)ctx;
    double v = repr_value(p, f->dtype);
    if (nd_is_float(f->dtype) && isfinite(v)) {
        int d = repr_shortest(v, f->dtype, f->sci);
        if (d > f->digits)
            f->digits = d;
    }
}

static void repr_measure_width(repr_fmt *f, const void *p, void *ctx)
{
    (void)ctx;
    char s[128];
    int n = repr_text(f, p, s, sizeof s);
    double v = repr_value(p, f->dtype);
    if (nd_is_float(f->dtype) && !f->sci && isfinite(v)) {
        const char *dot = strchr(s, '.');
        int ip = dot ? (int)(dot - s) : n, fp = dot ? n - ip - 1 : 0;
        if (ip > f->int_width)
            f->int_width = ip;
        if (fp > f->frac_width)
            f->frac_width = fp;
    } else if (n > *(int *)ctx) {
        *(int *)ctx = n;
    }
}

static void repr_measure(const nd_array *a, repr_fmt *f)
{
    memset(f, 0, sizeof *f);
    f->dtype = a->dtype;
    f->summarise = a->count > REPR_THRESHOLD;
    if (nd_is_float(a->dtype)) {
        repr_walk(a, 0, nd_ptr(a), f, repr_measure_range, NULL);
        f->sci = f->any_finite &&
                 (f->max_abs >= 1e8 || f->min_abs < 1e-4 || f->max_abs / f->min_abs > 1000);
        repr_walk(a, 0, nd_ptr(a), f, repr_measure_digits, NULL);
    }
    int other = 0; /* widest element not aligned on a point */
    repr_walk(a, 0, nd_ptr(a), f, repr_measure_width, &other);
    int aligned = f->int_width + f->frac_width + (f->int_width ? 1 : 0);
    f->width = aligned > other ? aligned : other;
    if (f->width == 0)
        f->width = 1;
}

/* ---------------------------------------------------------- printing */

typedef struct repr_out {
    luaL_Buffer *b;
    int col;
} repr_out;

static void repr_add(repr_out *o, const char *s, int n)
{
    luaL_addlstring(o->b, s, (size_t)n);
    o->col += n;
}

static void repr_newline(repr_out *o, int blank_lines, int indent)
{
    for (int i = 0; i <= blank_lines; i++)
        luaL_addchar(o->b, '\n');
    for (int i = 0; i < indent; i++)
        luaL_addchar(o->b, ' ');
    o->col = indent;
}

/* One element (padded), wrapping the line first if it would not fit. */
static void repr_elem(repr_out *o, repr_fmt *f, const void *p, int first, int reserve, int indent)
{
    char s[128], padded[160];
    repr_text(f, p, s, sizeof s);
    int n = snprintf(padded, sizeof padded, "%*s", f->width, s);
    if (!first) {
        if (o->col + 1 + n + reserve > REPR_LINE)
            repr_newline(o, 0, indent);
        else
            repr_add(o, " ", 1);
    }
    repr_add(o, padded, n);
}

static void repr_rec(repr_out *o, const nd_array *a, int dim, const unsigned char *p, repr_fmt *f,
                     int indent)
{
    size_t n = a->shape[dim];
    ptrdiff_t step = a->strides[dim] * (ptrdiff_t)nd_dtype_size(a->dtype);
    int last_axis = dim + 1 == a->ndim;
    repr_add(o, "[", 1);
    indent++;
    for (size_t i = 0; i < n; i++) {
        if (f->summarise && n > 2 * REPR_EDGE && i == REPR_EDGE) {
            if (last_axis) {
                repr_add(o, " ...,", 5);
            } else {
                repr_newline(o, a->ndim - dim - 2, indent);
                repr_add(o, "...,", 4);
            }
            i = n - REPR_EDGE;
        }
        const unsigned char *q = p + (ptrdiff_t)i * step;
        if (last_axis) {
            int reserve = i + 1 == n ? dim + 2 : 1; /* the closing brackets, or ',' */
            repr_elem(o, f, q, i == 0, reserve, indent);
        } else {
            if (i > 0)
                repr_newline(o, a->ndim - dim - 2, indent);
            repr_rec(o, a, dim + 1, q, f, indent);
        }
        if (i + 1 < n)
            repr_add(o, ",", 1);
    }
    repr_add(o, "]", 1);
}

int nd_mm_tostring(lua_State *L)
{
    nd_array *a = nd_check(L, 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    repr_out o = {&b, 0};
    repr_add(&o, REPR_PREFIX, (int)strlen(REPR_PREFIX));
    repr_fmt f;
    if (a->ndim == 0) {
        char s[128];
        repr_measure(a, &f);
        f.width = 0; /* no alignment for a single value */
        repr_add(&o, s, repr_text(&f, nd_ptr(a), s, sizeof s));
    } else if (a->count == 0) {
        repr_add(&o, "[]", 2);
    } else {
        repr_measure(a, &f);
        repr_rec(&o, a, 0, nd_ptr(a), &f, o.col);
    }
    if (a->count == 0 && a->ndim > 1) { /* the shape is not visible in "[]" */
        char s[160];
        luaL_addstring(&b, ", shape=");
        luaL_addstring(&b, nd_shape_text(a->ndim, a->shape, s, sizeof s));
    }
    if ((a->dtype != ND_FLOAT64 && a->dtype != ND_INT64) || a->count == 0) {
        luaL_addstring(&b, ", dtype=");
        luaL_addstring(&b, nd_dtype_name(a->dtype));
    }
    luaL_addchar(&b, ')');
    luaL_pushresult(&b);
    return 1;
}
