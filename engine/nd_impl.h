/* nd_impl.h — what the nd_*.c files share; not for the rest of the engine.
 *
 * An array is dtype + shape + strides (in elements, may be negative or 0 for
 * nothing) over a reference-counted nd_buffer, starting `offset` bytes into
 * it.  `contiguous` is true exactly when the strides are the row-major
 * ones of the shape, i.e. the elements are nd_count() consecutive values
 * from nd_data(); views made by slicing with a step or by T() are not.
 *
 * The element loops live in the file of their operation; the helpers here
 * are the pieces several of them need: dtype conversion, strided <->
 * contiguous copies, argument parsing and array construction.
 */
#ifndef IPPC_ENGINE_ND_IMPL_H
#define IPPC_ENGINE_ND_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

#include "lua_noreturn.h"
#include "nd.h"

struct nd_buffer {
    size_t refs;
    size_t bytes;
    unsigned char *data;
};

struct nd_array {
    nd_dtype dtype;
    int ndim;
    int contiguous;
    size_t shape[ND_MAX_DIMS];
    ptrdiff_t strides[ND_MAX_DIMS]; /* elements */
    size_t count;
    nd_buffer *buf; /* NULL only while being built */
    size_t offset;  /* bytes from buf->data to element (0, ..., 0) */
};

/* Refuse arrays whose byte size does not fit comfortably in size_t/ptrdiff_t. */
#define ND_MAX_BYTES ((size_t)PTRDIFF_MAX / 2)

/* One case per dtype: X(TAG, C type). */
#define ND_CASES(X)                                                                                \
    X(ND_FLOAT64, double)                                                                          \
    X(ND_FLOAT32, float)                                                                           \
    X(ND_INT64, int64_t)                                                                           \
    X(ND_INT32, int32_t)                                                                           \
    X(ND_UINT8, uint8_t)

static inline int nd_is_float(nd_dtype t)
{
    return t == ND_FLOAT64 || t == ND_FLOAT32;
}

static inline unsigned char *nd_ptr(const nd_array *a)
{
    return a->buf->data + a->offset;
}

/* Advances idx (row-major over all axes but the last of shape) to the next
 * row, keeping k element offsets in step with their strides. */
static inline void nd_next_row(int ndim, const size_t *shape, size_t *idx, int k, ptrdiff_t *off,
                               const ptrdiff_t (*st)[ND_MAX_DIMS])
{
    for (int d = ndim - 2; d >= 0; d--) {
        idx[d]++;
        for (int j = 0; j < k; j++)
            off[j] += st[j][d];
        if (idx[d] < shape[d])
            return;
        for (int j = 0; j < k; j++)
            off[j] -= st[j][d] * (ptrdiff_t)shape[d];
        idx[d] = 0;
    }
}

/* ---- nd.c: construction */

/* Element count of a shape; raises if the byte size would be unreasonable. */
size_t nd_shape_count(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape);
/* Pushes a new array with uninitialised elements (for results that are
 * fully written before Lua sees them). */
nd_array *nd_push_uninit(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape);
/* Pushes a view of base (sharing its buffer) with the given geometry;
 * offset in bytes from base's buffer start. */
nd_array *nd_push_view(lua_State *L, nd_array *base, int ndim, const size_t *shape,
                       const ptrdiff_t *strides, size_t offset);
/* Row-major strides (elements) of shape. */
void nd_c_strides(int ndim, const size_t *shape, ptrdiff_t *strides);
/* Recomputes a->contiguous from its shape and strides. */
void nd_update_contiguous(nd_array *a);

/* ---- nd.c: elements and conversion */

int64_t nd_f2i(double v);
void nd_store_i(void *p, nd_dtype t, size_t i, int64_t v);
void nd_store_f(void *p, nd_dtype t, size_t i, double v);
/* Stores the Lua number at idx; raises if it is not a number. */
void nd_store_lua(lua_State *L, void *p, nd_dtype t, size_t i, int idx);
/* Pushes the element at p (an element address, not an array base). */
void nd_push_at(lua_State *L, const void *p, nd_dtype t);
/* n contiguous elements of dtype st at src -> dtype dt at dst. */
void nd_convert(void *dst, nd_dtype dt, const void *src, nd_dtype st, size_t n);
/* Byte offset of the element at row-major position k (0-based). */
ptrdiff_t nd_offset_of(const nd_array *a, size_t k);

/* Contiguous elements of a in dtype t: a's own memory when it already is
 * that (and copy is 0), else a temporary copy owned by Lua.  Always pushes
 * exactly one value (the temporary, or nil) that keeps the result alive. */
const void *nd_elements_in(lua_State *L, const nd_array *a, nd_dtype t, int copy);

/* ---- nd.c: arguments */

nd_dtype nd_check_dtype(lua_State *L, int idx, nd_dtype dflt);
/* Reads a shape: a non-negative integer n (-> {n}) or a table of them. */
int nd_check_shape(lua_State *L, int idx, size_t *shape);
/* "(4, 2)" style shape text in buf. */
const char *nd_shape_text(int ndim, const size_t *shape, char *buf, size_t size);
/* 1-based axis argument (negative counts from the end) -> 0-based. */
int nd_check_axis(lua_State *L, int idx, int ndim);

/* ---- registration of the parts (each adds to the methods / module table
 * on top of the stack) */
void nd_new_register(lua_State *L);     /* nd_new.c: constructors (module) */
void nd_shape_methods(lua_State *L);    /* nd_shape.c: methods */
void nd_ops_methods(lua_State *L);      /* nd_ops.c: methods */
void nd_ops_functions(lua_State *L);    /* nd_ops.c: module functions */
void nd_ops_metamethods(lua_State *L);  /* nd_ops.c: arithmetic metamethods */
void nd_reduce_methods(lua_State *L);   /* nd_reduce.c: methods */
void nd_reduce_functions(lua_State *L); /* nd_reduce.c: module functions */

/* nd_ops.c: copies the number or array at src_idx into dst (through its
 * strides), broadcasting the array to dst's shape; raises on a mismatch. */
void nd_assign(lua_State *L, nd_array *dst, int src_idx);

/* nd_shape.c: metamethods used by nd.c */
int nd_mm_index(lua_State *L); /* upvalue 1: the methods table */
int nd_mm_newindex(lua_State *L);
int nd_mm_len(lua_State *L);
/* nd_repr.c */
int nd_mm_tostring(lua_State *L);

#endif
