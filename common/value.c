/* value.c — client JSON <-> wire skeleton + blobs, and scatter/gather of wire values.
 *
 * Three walks share one tree walker (walk_children): client -> skeleton
 * (from_client_visit), skeleton -> client (skeleton_visit + nd_to_client) and
 * skeleton -> skeleton with its blobs copied into another blob list
 * (skeleton_visit + nd_rehome, used by scatter and gather).  Every array, from
 * whichever side, is described by an nd_ref whose shape went through
 * nd_ref_measure, so element and byte counts below never overflow.
 *
 * Everything here treats its input as hostile: nesting is bounded by
 * VALUE_MAX_DEPTH, shapes by nd_ref_measure, base64 is validated (b64.h)
 * before it is decoded, and a failed call leaves no new blobs behind.
 * Relies on: Jansson.  Pure and reentrant.
 */
#include "value.h"
#include "b64.h"
#include "bigmem.h"
#include "buf.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Blobs hold array bytes in host order and the wire says little-endian. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ippc's wire format assumes a little-endian host"
#endif

/* ---------------------------------------------------------------- dtypes */

static const struct {
    const char *name;
    size_t size;
} dtype_table[ND_DTYPE_COUNT] = {
    [ND_FLOAT64] = {"float64", 8}, [ND_FLOAT32] = {"float32", 4}, [ND_INT64] = {"int64", 8},
    [ND_INT32] = {"int32", 4},     [ND_UINT8] = {"uint8", 1},
};

/* The widest itemsize: shapes are bounded so that span * this fits a size_t. */
#define ND_MAX_ITEMSIZE 8

const char *nd_dtype_name(nd_dtype dtype)
{
    return (unsigned)dtype < ND_DTYPE_COUNT ? dtype_table[dtype].name : NULL;
}

int nd_dtype_parse(const char *name)
{
    for (int i = 0; name && i < ND_DTYPE_COUNT; i++)
        if (strcmp(dtype_table[i].name, name) == 0)
            return i;
    return -1;
}

size_t nd_dtype_size(nd_dtype dtype)
{
    return (unsigned)dtype < ND_DTYPE_COUNT ? dtype_table[dtype].size : 0;
}

/* ----------------------------------------------------------------- blobs */

void blobs_init(ippc_blobs *b)
{
    b->items = NULL;
    b->count = 0;
    b->cap = 0;
}

/* Frees the blobs at index >= count, keeping the first count. */
static void blobs_truncate(ippc_blobs *b, size_t count)
{
    while (b->count > count)
        bigmem_free(b->items[--b->count].data);
}

void blobs_free(ippc_blobs *b)
{
    if (!b)
        return;
    blobs_truncate(b, 0);
    free(b->items);
    blobs_init(b);
}

static int blobs_reserve(ippc_blobs *b, size_t need)
{
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4;
    while (cap < need) {
        if (cap > SIZE_MAX / 2 / sizeof(ippc_blob))
            return -1;
        cap *= 2;
    }
    ippc_blob *items = realloc(b->items, cap * sizeof *items);
    if (!items)
        return -1;
    b->items = items;
    b->cap = cap;
    return 0;
}

long blobs_push(ippc_blobs *b, unsigned char *data, size_t len)
{
    if (b->count >= LONG_MAX || blobs_reserve(b, b->count + 1) < 0) {
        free(data);
        return -1;
    }
    b->items[b->count] = (ippc_blob){data, len};
    return (long)b->count++;
}

long blobs_append_all(ippc_blobs *dst, ippc_blobs *src)
{
    size_t offset = dst->count;
    if (dst == src || offset > LONG_MAX - src->count)
        return -1;
    if (src->count == 0)
        return (long)offset;
    if (blobs_reserve(dst, offset + src->count) < 0)
        return -1;
    memcpy(dst->items + offset, src->items, src->count * sizeof *src->items);
    dst->count += src->count;
    free(src->items);
    blobs_init(src);
    return (long)offset;
}

static size_t blobs_count(const ippc_blobs *b)
{
    return b ? b->count : 0;
}

/* ------------------------------------------------------ shapes and refs */

static json_t *oom(ippc_error *err)
{
    ippc_error_set(err, ERR_INTERNAL, "out of memory");
    return NULL;
}

static size_t nd_bytes(const nd_ref *ref)
{
    return ref->count * nd_dtype_size(ref->dtype);
}

/* Sets err and yields -1: the shape parsers below return -1 explicitly so
 * that no caller can ever read a half-filled nd_ref as a success. */
#define nd_fail(...) ((void)ippc_error_set(__VA_ARGS__), -1)

/* Computes ref->count from ref->shape and checks that the shape's span (the
 * product with zeros read as ones) times the widest itemsize fits a size_t.
 * After this, every partial product of the shape and every byte count of
 * the array or of a part of it is safe to compute without further checks. */
static int nd_ref_measure(nd_ref *ref, ippc_error *err)
{
    if (ref->ndim < 1 || ref->ndim > ND_MAX_DIMS)
        return nd_fail(err, ERR_INVALID, "an array needs 1 to %d dimensions, not %d", ND_MAX_DIMS,
                       ref->ndim);
    size_t span = 1, count = 1;
    for (int d = 0; d < ref->ndim; d++) {
        size_t dim = ref->shape[d] ? ref->shape[d] : 1;
        if (dim > SIZE_MAX / ND_MAX_ITEMSIZE / span)
            return nd_fail(err, ERR_INVALID, "array shape is too large");
        span *= dim;
        count *= ref->shape[d];
    }
    ref->count = count;
    return 0;
}

static json_t *shape_json(int ndim, const size_t *shape)
{
    json_t *list = json_array();
    for (int d = 0; list && d < ndim; d++) {
        if (shape[d] > (size_t)LLONG_MAX ||
            json_array_append_new(list, json_integer((json_int_t)shape[d])) < 0) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

/* Fills dtype, ndim, shape and count of ref from JSON "dtype" and "shape". */
static int nd_ref_from_json(const json_t *dtype, const json_t *shape, nd_ref *ref, ippc_error *err)
{
    int parsed = nd_dtype_parse(json_string_value(dtype));
    if (parsed < 0)
        return nd_fail(err, ERR_INVALID,
                       "unknown dtype '%.32s': expected float64, float32, int64, int32 "
                       "or uint8",
                       json_is_string(dtype) ? json_string_value(dtype) : "(not a string)");
    ref->dtype = (nd_dtype)parsed;
    if (!json_is_array(shape) || json_array_size(shape) < 1 || json_array_size(shape) > ND_MAX_DIMS)
        return nd_fail(err, ERR_INVALID, "shape must be a list of 1 to %d integers", ND_MAX_DIMS);
    ref->ndim = (int)json_array_size(shape);
    for (int d = 0; d < ref->ndim; d++) {
        const json_t *dim = json_array_get(shape, (size_t)d);
        if (!json_is_integer(dim) || json_integer_value(dim) < 0)
            return nd_fail(err, ERR_INVALID, "shape entries must be non-negative integers");
        ref->shape[d] = (size_t)json_integer_value(dim);
    }
    return nd_ref_measure(ref, err);
}

int value_nd_ref(const json_t *v, const ippc_blobs *blobs, nd_ref *ref, ippc_error *err)
{
    const json_t *index = json_object_get(v, "$nd");
    if (!index)
        return 0;
    if (!json_is_integer(index) || json_integer_value(index) < 0 ||
        (unsigned long long)json_integer_value(index) >= blobs_count(blobs))
        return nd_fail(err, ERR_INVALID, "array placeholder names blob %lld of %zu",
                       json_is_integer(index) ? (long long)json_integer_value(index) : -1LL,
                       blobs_count(blobs));
    if (nd_ref_from_json(json_object_get(v, "dtype"), json_object_get(v, "shape"), ref, err) != 0)
        return -1;
    ref->blob = (size_t)json_integer_value(index);
    if (blobs->items[ref->blob].len != nd_bytes(ref))
        return nd_fail(err, ERR_INVALID, "blob %zu holds %zu bytes, its array needs %zu", ref->blob,
                       blobs->items[ref->blob].len, nd_bytes(ref));
    return 1;
}

json_t *value_nd_placeholder(nd_dtype dtype, int ndim, const size_t *shape, size_t blob)
{
    if (!nd_dtype_name(dtype) || ndim < 1 || ndim > ND_MAX_DIMS || blob > (size_t)LLONG_MAX)
        return NULL;
    return json_pack("{s:I, s:s, s:o}", "$nd", (json_int_t)blob, "dtype", nd_dtype_name(dtype),
                     "shape", shape_json(ndim, shape));
}

/* Room for len bytes plus slack; never a zero-size request. */
static unsigned char *nd_alloc(size_t len, size_t slack)
{
    return len > SIZE_MAX - slack - 1 ? NULL : bigmem_alloc(len + slack + 1);
}

/* Appends data (taken, even on failure) to blobs as the bytes of ref and
 * returns the placeholder that names it. */
static json_t *nd_emit(ippc_blobs *blobs, const nd_ref *ref, unsigned char *data, ippc_error *err)
{
    if (!data)
        return oom(err);
    long index = blobs_push(blobs, data, nd_bytes(ref));
    json_t *placeholder =
        index < 0 ? NULL : value_nd_placeholder(ref->dtype, ref->ndim, ref->shape, (size_t)index);
    return placeholder ? placeholder : oom(err);
}

/* ---------------------------------------------------------------- base64 */

static json_t *b64_encode_json(const unsigned char *data, size_t len, ippc_error *err)
{
    size_t text_len = b64_encoded_len(len);
    char *text = text_len == SIZE_MAX ? NULL : (char *)nd_alloc(text_len, 0);
    if (!text)
        return oom(err);
    size_t wrote = b64_encode(data, len, text);
    assert(wrote == text_len);
    /* Jansson copies the text: it has no call that adopts a buffer. */
    json_t *out = json_stringn_nocheck(text, wrote);
    bigmem_free(text);
    return out ? out : oom(err);
}

/* -------------------------------------------------------------- elements */

static json_t *real_or_null(double d)
{
    return isfinite(d) ? json_real(d) : json_null();
}

/* Element i of an array's bytes as a JSON number (null for NaN/Inf).  memcpy
 * because a part of a blob need not be aligned for its dtype. */
static json_t *nd_elem_json(const unsigned char *data, nd_dtype dtype, size_t i)
{
    switch (dtype) {
    case ND_FLOAT64: {
        double d;
        memcpy(&d, data + i * sizeof d, sizeof d);
        return real_or_null(d);
    }
    case ND_FLOAT32: {
        float f;
        memcpy(&f, data + i * sizeof f, sizeof f);
        return real_or_null(f);
    }
    case ND_INT64: {
        int64_t v;
        memcpy(&v, data + i * sizeof v, sizeof v);
        return json_integer((json_int_t)v);
    }
    case ND_INT32: {
        int32_t v;
        memcpy(&v, data + i * sizeof v, sizeof v);
        return json_integer(v);
    }
    case ND_UINT8: return json_integer(data[i]);
    default: return NULL;
    }
}

/* ------------------------------------------------------ arrays -> client */

/* Lists that nd_list_level makes, beyond the elements; for arrays with a zero
 * in the shape this is not bounded by the data, so it gets its own cap. */
#define ND_LIST_FREE_NODES ((size_t)1 << 16)

static json_t *nd_list_level(const nd_ref *ref, const unsigned char *data, int dim, size_t *next)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < ref->shape[dim]; i++) {
        json_t *item = dim + 1 == ref->ndim ? nd_elem_json(data, ref->dtype, (*next)++)
                                            : nd_list_level(ref, data, dim + 1, next);
        if (json_array_append_new(list, item) < 0) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

static json_t *nd_to_list(const nd_ref *ref, const unsigned char *data, ippc_error *err)
{
    size_t lists = 0, level = 1;
    for (int d = 0; d < ref->ndim; d++) {
        lists += level;
        level *= ref->shape[d];
    }
    if (lists > ref->count * ND_MAX_DIMS + ND_LIST_FREE_NODES) {
        ippc_error_set(err, ERR_TOO_LARGE, "array has too many empty rows to write as lists");
        return NULL;
    }
    size_t next = 0;
    json_t *list = nd_list_level(ref, data, 0, &next);
    return list ? list : oom(err);
}

static json_t *nd_to_typed(const nd_ref *ref, const unsigned char *data, ippc_error *err)
{
    json_t *text = b64_encode_json(data, nd_bytes(ref), err);
    if (!text)
        return NULL;
    json_t *typed = json_pack("{s:s, s:o, s:o}", "dtype", nd_dtype_name(ref->dtype), "shape",
                              shape_json(ref->ndim, ref->shape), "data", text);
    return typed ? typed : oom(err);
}

/* --------------------------------------------------------- tree walking */

typedef struct walk walk;
typedef json_t *(*walk_visit)(const json_t *v, walk *w, int depth);

/* One walk over a value: visit handles a node (recursing through
 * walk_children), on_nd what to make of an array placeholder. */
struct walk {
    walk_visit visit;
    json_t *(*on_nd)(const nd_ref *ref, walk *w);
    const ippc_blobs *in_blobs; /* blobs the input skeleton refers to */
    ippc_blobs *out_blobs;      /* where new arrays go */
    value_format fmt;
    ippc_error *err;
};

/* Appends the visit of child to list; -1 (err set) if either fails. */
static int array_append_visit(json_t *list, const json_t *child, walk *w, int depth)
{
    json_t *item = w->visit(child, w, depth);
    if (!item)
        return -1;
    if (json_array_append_new(list, item) < 0) {
        oom(w->err);
        return -1;
    }
    return 0;
}

static json_t *walk_children(const json_t *v, walk *w, int depth)
{
    if (depth >= VALUE_MAX_DEPTH) {
        ippc_error_set(w->err, ERR_INVALID, "value is nested deeper than %d levels",
                       VALUE_MAX_DEPTH);
        return NULL;
    }
    json_t *out = json_is_array(v) ? json_array() : json_object();
    if (!out)
        return oom(w->err);
    size_t i;
    const char *key;
    json_t *child;
    if (json_is_array(v)) {
        json_array_foreach(v, i, child) {
            if (array_append_visit(out, child, w, depth + 1) < 0)
                goto fail;
        }
        return out;
    }
    json_object_foreach((json_t *)v, key, child) {
        json_t *item = w->visit(child, w, depth + 1);
        if (!item)
            goto fail;
        if (json_object_set_new_nocheck(out, key, item) < 0) {
            oom(w->err);
            goto fail;
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

static json_t *scalar_copy(const json_t *v, ippc_error *err)
{
    json_t *copy = json_copy((json_t *)v);
    return copy ? copy : oom(err);
}

/* A node of a skeleton: placeholders go to w->on_nd, the rest is copied. */
static json_t *skeleton_visit(const json_t *v, walk *w, int depth)
{
    nd_ref ref;
    int rc = json_is_object(v) ? value_nd_ref(v, w->in_blobs, &ref, w->err) : 0;
    if (rc < 0)
        return NULL;
    if (rc > 0)
        /* cppcheck-suppress returnDanglingLifetime ; a false positive: cppcheck
         * assumes a call through a function pointer may return its argument, but
         * on_nd returns a new json_t, never &ref. */
        return w->on_nd(&ref, w);
    if (json_is_object(v) || json_is_array(v))
        return walk_children(v, w, depth);
    return scalar_copy(v, w->err);
}

static json_t *nd_to_client(const nd_ref *ref, walk *w)
{
    const unsigned char *data = w->in_blobs->items[ref->blob].data;
    return w->fmt == VALUE_FORMAT_TYPED ? nd_to_typed(ref, data, w->err)
                                        : nd_to_list(ref, data, w->err);
}

/* Copies the bytes of an array into w->out_blobs. */
static json_t *nd_rehome(const nd_ref *ref, walk *w)
{
    size_t bytes = nd_bytes(ref);
    unsigned char *copy = nd_alloc(bytes, 0);
    if (copy && bytes)
        memcpy(copy, w->in_blobs->items[ref->blob].data, bytes);
    return nd_emit(w->out_blobs, ref, copy, w->err);
}

static walk rehome_walk(const ippc_blobs *from, ippc_blobs *to, ippc_error *err)
{
    return (walk){skeleton_visit, nd_rehome, from, to, VALUE_FORMAT_LIST, err};
}

/* ------------------------------------------------------ client -> arrays */

/* Is list a rectangular nest of numeric lists, at most ND_MAX_DIMS deep,
 * with no empty list?  The first path down gives the candidate shape. */
static bool list_probe(const json_t *list, nd_ref *ref)
{
    const json_t *v = list;
    ref->ndim = 0;
    while (json_is_array(v)) {
        if (ref->ndim == ND_MAX_DIMS || json_array_size(v) == 0)
            return false;
        ref->shape[ref->ndim++] = json_array_size(v);
        v = json_array_get(v, 0);
    }
    return json_is_number(v);
}

/* Checks that v matches ref from dimension dim down; clears *all_int on a real. */
static bool list_matches(const json_t *v, const nd_ref *ref, int dim, bool *all_int)
{
    if (dim == ref->ndim) {
        if (json_is_real(v))
            *all_int = false;
        return json_is_number(v);
    }
    if (!json_is_array(v) || json_array_size(v) != ref->shape[dim])
        return false;
    size_t i;
    const json_t *item;
    json_array_foreach(v, i, item) {
        if (!list_matches(item, ref, dim + 1, all_int))
            return false;
    }
    return true;
}

static void list_fill(const json_t *v, const nd_ref *ref, int dim, unsigned char *data,
                      size_t *next)
{
    if (dim == ref->ndim) {
        if (ref->dtype == ND_INT64) {
            int64_t n = json_integer_value(v);
            memcpy(data + (*next)++ * sizeof n, &n, sizeof n);
        } else {
            double d = json_number_value(v);
            memcpy(data + (*next)++ * sizeof d, &d, sizeof d);
        }
        return;
    }
    size_t i;
    const json_t *item;
    json_array_foreach(v, i, item)
        list_fill(item, ref, dim + 1, data, next);
}

/* A numeric list as an array, or NULL with *is_array false if it is not one. */
static json_t *list_to_nd(const json_t *list, walk *w, bool *is_array)
{
    nd_ref ref = {0};
    bool all_int = true;
    *is_array = list_probe(list, &ref) && list_matches(list, &ref, 0, &all_int);
    if (!*is_array)
        return NULL;
    ref.dtype = all_int ? ND_INT64 : ND_FLOAT64;
    if (nd_ref_measure(&ref, w->err) < 0)
        return NULL;
    unsigned char *data = nd_alloc(nd_bytes(&ref), 0);
    size_t next = 0;
    if (data)
        list_fill(list, &ref, 0, data, &next);
    return nd_emit(w->out_blobs, &ref, data, w->err);
}

static bool is_typed_object(const json_t *v)
{
    return json_object_size(v) == 3 && json_object_get(v, "dtype") && json_object_get(v, "shape") &&
           json_is_string(json_object_get(v, "data"));
}

static json_t *typed_to_nd(const json_t *v, walk *w)
{
    nd_ref ref = {0};
    if (nd_ref_from_json(json_object_get(v, "dtype"), json_object_get(v, "shape"), &ref, w->err) <
        0)
        return NULL;
    const json_t *data = json_object_get(v, "data");
    const char *text = json_string_value(data);
    size_t text_len = json_string_length(data), decoded;
    if (b64_decoded_len(text, text_len, &decoded) < 0) {
        ippc_error_set(w->err, ERR_INVALID, "typed array data is not valid base64");
        return NULL;
    }
    if (decoded != nd_bytes(&ref)) {
        ippc_error_set(w->err, ERR_INVALID,
                       "typed array data holds %zu bytes, but %s with %zu elements needs %zu",
                       decoded, nd_dtype_name(ref.dtype), ref.count, nd_bytes(&ref));
        return NULL;
    }
    unsigned char *bytes = nd_alloc(decoded, 0);
    if (bytes && b64_decode(text, text_len, bytes) < 0) {
        free(bytes);
        ippc_error_set(w->err, ERR_INVALID, "typed array data is not valid base64");
        return NULL;
    }
    return nd_emit(w->out_blobs, &ref, bytes, w->err);
}

static json_t *from_client_visit(const json_t *v, walk *w, int depth)
{
    if (json_is_object(v)) {
        if (json_object_get(v, "$nd")) {
            ippc_error_set(w->err, ERR_INVALID, "the key \"$nd\" is reserved");
            return NULL;
        }
        return is_typed_object(v) ? typed_to_nd(v, w) : walk_children(v, w, depth);
    }
    if (json_is_array(v)) {
        bool is_array;
        json_t *nd = list_to_nd(v, w, &is_array);
        return is_array ? nd : walk_children(v, w, depth);
    }
    return scalar_copy(v, w->err);
}

/* --------------------------------------------------------------- public */

/* Runs w->visit over v at the top level; on failure drops the blobs the walk
 * added to w->out_blobs, so a failed call leaves them as they were. */
static json_t *walk_run(const json_t *v, walk *w)
{
    size_t mark = blobs_count(w->out_blobs);
    json_t *out = w->visit(v, w, 0);
    if (!out && w->out_blobs)
        blobs_truncate(w->out_blobs, mark);
    return out;
}

json_t *value_from_client(const json_t *in, ippc_blobs *blobs, ippc_error *err)
{
    if (!in || !blobs) {
        ippc_error_set(err, ERR_INTERNAL, "value_from_client: no value or no blobs");
        return NULL;
    }
    walk w = {from_client_visit, NULL, NULL, blobs, VALUE_FORMAT_LIST, err};
    /* cppcheck-suppress returnDanglingLifetime ; see skeleton_visit: walk_run
     * returns what w.visit made, a new json_t, never a pointer into w. */
    return walk_run(in, &w);
}

json_t *value_to_client(const json_t *skel, const ippc_blobs *blobs, value_format fmt,
                        ippc_error *err)
{
    if (!skel || (fmt != VALUE_FORMAT_LIST && fmt != VALUE_FORMAT_TYPED)) {
        ippc_error_set(err, ERR_INTERNAL, "value_to_client: no value or bad format");
        return NULL;
    }
    walk w = {skeleton_visit, nd_to_client, blobs, NULL, fmt, err};
    /* cppcheck-suppress returnDanglingLifetime ; see skeleton_visit: walk_run
     * returns what w.visit made, a new json_t, never a pointer into w. */
    return walk_run(skel, &w);
}

/* ----------------------------------------------------------------- scatter */

void scatter_partition(size_t n, size_t p, size_t idx, size_t *start, size_t *count)
{
    if (p == 0 || idx >= p) {
        *start = n;
        *count = 0;
        return;
    }
    size_t base = n / p, extra = n % p;
    *count = base + (idx < extra);
    *start = idx * base + (idx < extra ? idx : extra);
}

static json_t *scatter_nd_part(const nd_ref *ref, const ippc_blobs *blobs, size_t p, size_t idx,
                               ippc_blobs *dst, ippc_error *err)
{
    size_t start, count;
    scatter_partition(ref->shape[0], p, idx, &start, &count);
    size_t row_bytes = ref->shape[0] ? nd_bytes(ref) / ref->shape[0] : 0;
    nd_ref part = *ref;
    part.shape[0] = count;
    nd_ref_measure(&part, err); /* a part of a measured shape always measures */
    size_t bytes = count * row_bytes;
    unsigned char *data = nd_alloc(bytes, 0);
    if (data && bytes)
        memcpy(data, blobs->items[ref->blob].data + start * row_bytes, bytes);
    return nd_emit(dst, &part, data, err);
}

static json_t *scatter_list_part(const json_t *list, const ippc_blobs *blobs, size_t p, size_t idx,
                                 ippc_blobs *dst, ippc_error *err)
{
    size_t start, count;
    scatter_partition(json_array_size(list), p, idx, &start, &count);
    walk w = rehome_walk(blobs, dst, err);
    json_t *part = json_array();
    if (!part)
        return oom(err);
    for (size_t i = start; i < start + count; i++) {
        if (array_append_visit(part, json_array_get(list, i), &w, 1) < 0) {
            json_decref(part);
            return NULL;
        }
    }
    return part;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    default: return "this value";
    }
}

static void scatter_undo(json_t **parts, ippc_blobs *part_blobs, const size_t *marks, size_t p)
{
    for (size_t i = 0; i < p; i++) {
        json_decref(parts[i]);
        parts[i] = NULL;
        if (marks)
            blobs_truncate(&part_blobs[i], marks[i]);
    }
}

int value_scatter(const json_t *skel, const ippc_blobs *blobs, size_t p, json_t **parts,
                  ippc_blobs *part_blobs, ippc_error *err)
{
    if (!skel || !parts || !part_blobs || p == 0)
        return ippc_error_set(err, ERR_INVALID, "scatter needs a value and at least one part");
    for (size_t i = 0; i < p; i++)
        parts[i] = NULL;
    nd_ref ref;
    int is_nd = value_nd_ref(skel, blobs, &ref, err);
    if (is_nd < 0)
        return -1;
    if (!is_nd && !json_is_array(skel))
        return ippc_error_set(err, ERR_INVALID,
                              "cannot scatter %s: scatter needs a list or an array",
                              json_kind(skel));
    size_t *marks = malloc(p * sizeof *marks);
    if (!marks)
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < p; i++) {
        marks[i] = part_blobs[i].count;
        parts[i] = is_nd ? scatter_nd_part(&ref, blobs, p, i, &part_blobs[i], err)
                         : scatter_list_part(skel, blobs, p, i, &part_blobs[i], err);
        if (!parts[i]) {
            scatter_undo(parts, part_blobs, marks, i + 1);
            free(marks);
            return -1;
        }
    }
    free(marks);
    return 0;
}

/* ------------------------------------------------------------------ gather */

static const ippc_blobs *blobs_at(const ippc_blobs *list, size_t i)
{
    return list ? &list[i] : NULL;
}

/* 1 and the combined ref (blob unset) if every part is an array of one dtype
 * and one trailing shape; 0 if not; -1 on a malformed part. */
static int gather_combined_ref(json_t *const *parts, const ippc_blobs *part_blobs, size_t n,
                               nd_ref *combined, ippc_error *err)
{
    if (n == 0)
        return 0; /* nothing to combine: *combined stays unset */
    for (size_t i = 0; i < n; i++) {
        nd_ref ref;
        int rc = value_nd_ref(parts[i], blobs_at(part_blobs, i), &ref, err);
        if (rc <= 0)
            return rc;
        if (i == 0) {
            *combined = ref;
            continue;
        }
        size_t trailing_bytes = (size_t)(ref.ndim - 1) * sizeof(size_t);
        if (ref.dtype != combined->dtype || ref.ndim != combined->ndim ||
            memcmp(&ref.shape[1], &combined->shape[1], trailing_bytes) != 0)
            return 0;
        if (ref.shape[0] > SIZE_MAX - combined->shape[0])
            return ippc_error_set(err, ERR_INVALID, "gathered array is too large");
        combined->shape[0] += ref.shape[0];
    }
    return nd_ref_measure(combined, err) < 0 ? -1 : 1;
}

static json_t *gather_nd(json_t *const *parts, const ippc_blobs *part_blobs, size_t n,
                         const nd_ref *combined, ippc_blobs *out_blobs, ippc_error *err)
{
    unsigned char *data = nd_alloc(nd_bytes(combined), 0);
    size_t offset = 0;
    for (size_t i = 0; data && i < n; i++) {
        nd_ref ref;
        /* gather_combined_ref read every part as an array already; were one to
         * read differently now, its ref would be garbage: fail, never copy. */
        if (value_nd_ref(parts[i], blobs_at(part_blobs, i), &ref, err) != 1) {
            free(data);
            ippc_error_set(err, ERR_INTERNAL, "value_gather: a part changed while gathering");
            return NULL;
        }
        if (nd_bytes(&ref))
            memcpy(data + offset, part_blobs[i].items[ref.blob].data, nd_bytes(&ref));
        offset += nd_bytes(&ref);
    }
    return nd_emit(out_blobs, combined, data, err);
}

/* Appends what one part contributes to a gathered list: a list its items,
 * an array its rows or elements as client lists, anything else itself. */
static int gather_list_part(json_t *out, const json_t *part, const ippc_blobs *blobs,
                            ippc_blobs *out_blobs, ippc_error *err)
{
    nd_ref ref;
    int is_nd = value_nd_ref(part, blobs, &ref, err);
    if (is_nd < 0)
        return -1;
    walk w = rehome_walk(blobs, out_blobs, err);
    if (!is_nd && !json_is_array(part))
        return array_append_visit(out, part, &w, 0);
    json_t *items =
        is_nd ? nd_to_list(&ref, blobs->items[ref.blob].data, err) : skeleton_visit(part, &w, 0);
    if (!items)
        return -1;
    int rc = json_array_extend(out, items);
    json_decref(items);
    if (rc < 0)
        oom(err);
    return rc;
}

static json_t *gather_list(json_t *const *parts, const ippc_blobs *part_blobs, size_t n,
                           ippc_blobs *out_blobs, ippc_error *err)
{
    json_t *out = json_array();
    if (!out)
        return oom(err);
    for (size_t i = 0; i < n; i++) {
        if (gather_list_part(out, parts[i], blobs_at(part_blobs, i), out_blobs, err) < 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

json_t *value_gather(json_t *const *parts, const ippc_blobs *part_blobs, size_t n,
                     ippc_blobs *out_blobs, ippc_error *err)
{
    if ((n && !parts) || !out_blobs) {
        ippc_error_set(err, ERR_INTERNAL, "value_gather: no parts or no output blobs");
        return NULL;
    }
    size_t mark = out_blobs->count;
    nd_ref combined;
    int all_nd = n ? gather_combined_ref(parts, part_blobs, n, &combined, err) : 0;
    if (all_nd < 0)
        return NULL;
    json_t *out = all_nd ? gather_nd(parts, part_blobs, n, &combined, out_blobs, err)
                         : gather_list(parts, part_blobs, n, out_blobs, err);
    if (!out)
        blobs_truncate(out_blobs, mark);
    return out;
}

/* ------------------------------------------------------------------ sizes */

/* Estimated bytes jansson holds for a node and its children: the node
 * (json_t plus its own struct), an object's table slots and keys, a list's
 * slots, a string's text.  true, false and null are shared singletons. */
static size_t json_node_estimate(const json_t *v, int depth)
{
    size_t n = 0;
    if (depth > VALUE_MAX_DEPTH * 64) /* deeper than any parser lets through */
        return 0;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        n = 96;
        const char *key;
        json_t *item;
        json_object_foreach((json_t *)v, key, item) {
            n += 64 + strlen(key) + json_node_estimate(item, depth + 1);
        }
        return n;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *item;
        n = 48 + 8 * json_array_size(v);
        json_array_foreach(v, i, item) {
            n += json_node_estimate(item, depth + 1);
        }
        return n;
    }
    case JSON_STRING: return 48 + json_string_length(v);
    case JSON_INTEGER:
    case JSON_REAL: return 32;
    default: return 0;
    }
}

size_t json_bytes_estimate(const json_t *v)
{
    return v ? json_node_estimate(v, 0) : 0;
}
