/* nd.h — the `nd` ndarray type of the engine's Lua runtime.
 *
 * An nd array is a Lua full userdata (metatable "ippc.nd") describing
 * elements of one dtype (value.h: float64, float32, int64, int32, uint8) in
 * up to ND_MAX_DIMS dimensions, row-major.  The elements live in an
 * nd_buffer: malloc'd memory outside the Lua heap with a reference count, so
 * that several arrays (views) and C code that must outlive a Lua object (a
 * pending MPI request, a plugin call) share one block without copying.  A
 * buffer is freed when its last reference goes.
 *
 * Views share memory with the array they come from: a[i] of an n-D array (a
 * row), a:slice(...), a:reshape(...) of a contiguous array, a:T().  Slices
 * with a step and transposes are *strided*: their elements are not
 * consecutive in memory (nd_is_contiguous() is 0).  C code that wants plain
 * consecutive elements uses nd_push_contiguous (Lua side) or nd_copy_out.
 *
 * The Lua API (indices and axes are 1-based, as everything in Lua; negative
 * ones count from the end, -1 being the last):
 *
 *   constructors  nd.array(tbl | number | arr [, dtype]), nd.zeros/ones/empty
 *                 (shape [, dtype]), nd.full(shape, value [, dtype]),
 *                 nd.arange([start,] stop [, step] [, dtype]),
 *                 nd.linspace(a, b [, n=50]), nd.random(shape [, seed])
 *                 (uniform [0, 1) float64, xoshiro256** seeded by splitmix64;
 *                 equal seeds give equal arrays on every rank).
 *   geometry      #a, a[i] (element of a 1-D array, or a view of row i),
 *                 a[i] = x, a:shape(), a:ndim(), a:dtype(), a:size(),
 *                 a:slice(start, stop [, step [, axis]]) (inclusive bounds
 *                 like string.sub, clamped; a view), a:reshape(...) (one
 *                 entry may be -1), a:T(), a:copy(), a:astype(dtype),
 *                 a:totable(), a:fill(x) (in place; x a number or an array
 *                 that broadcasts to a's shape).
 *   elementwise   + - * / // % ^ and unary minus between arrays and Lua
 *                 numbers, with numpy's broadcasting: shapes are aligned at
 *                 their last axis, and each pair of lengths must be equal or
 *                 one of them 1 (a length-1 axis, or a missing leading axis,
 *                 repeats).  So equal shapes, a Lua number, a 0-d or
 *                 one-element array, a row (n) over a matrix (m, n) and a
 *                 column (m, 1) over (m, n) all work; anything else is a
 *                 "shapes ... cannot be broadcast" error.  Comparisons are
 *                 methods (Lua's < and == always give a boolean):
 *                 a:eq/ne/lt/le/gt/ge(b) -> uint8 mask of 0/1.  Math:
 *                 nd.sqrt/exp/log/log10/abs/sin/cos/tan/floor/ceil(x)
 *                 (arrays or numbers), a:axpy(alpha, x) (a = alpha*x + a in
 *                 place, no temporary).
 *   reductions    a:sum/prod/min/max/mean/std/argmin/argmax([axis]): without
 *                 axis a Lua number (argmin/argmax: a 1-based flat index),
 *                 with an axis an array with that axis removed (argmin/
 *                 argmax: 1-based int64 indices).  a:std([axis [, ddof=0]]).
 *                 nd.dot(a, b) / a:dot(b) and nd.matmul for 1-D and 2-D.
 *   tostring(a)   numpy's repr style, e.g. "nd.array([0. , 0.5, 1. ])".
 *
 * dtypes follow numpy's promotion for these five, with Lua numbers as
 * "weak" scalars: int array + Lua integer keeps the array's dtype; a Lua
 * float makes an integer array float64; `/` is true division (float64 for
 * integers).  Integer overflow wraps (no UB); integer // and % by zero give
 * 0 (as numpy), integer ^ a negative integer is an error.
 *
 * Threads: one lua_State, its owner thread only.  Buffer reference counts are
 * not atomic: retain/release on the Lua state's thread.
 *
 * Errors: functions that take a lua_State raise Lua errors (bad arguments,
 * out of memory) in the usual Lua way; call them from protected code.
 */
#ifndef IPPC_ENGINE_ND_H
#define IPPC_ENGINE_ND_H

#include <stddef.h>

#include <lua.h>

#include "value.h"

#define ND_METATABLE "ippc.nd"

typedef struct nd_array nd_array;
typedef struct nd_buffer nd_buffer;

/* Opens the module: pushes the `nd` table (for luaL_requiref). */
int luaopen_nd(lua_State *L);

/* Pushes a new zero-filled, contiguous array; 0 <= ndim <= ND_MAX_DIMS. */
nd_array *nd_push_new(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape);

/* Pushes a new array whose elements are `data` (malloc'd, exactly
 * count * dtype size bytes; may be NULL only when that is 0).  Zero-copy: the
 * array takes ownership of data when this returns.  If it raises (out of
 * memory) it has not taken ownership: the caller still owns data. */
nd_array *nd_push_adopt(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape,
                        unsigned char *data);

/* Pushes a contiguous array viewing `bytes` bytes at `offset` of buf (which
 * it retains); for zero-copy arrays inside a received message.  offset must
 * be aligned for dtype and the elements must fit in the buffer. */
nd_array *nd_push_buffer_view(lua_State *L, nd_buffer *buf, size_t offset, nd_dtype dtype, int ndim,
                              const size_t *shape);
/* A new buffer owning data (malloc'd, len bytes), refs 1; NULL when out of
 * memory (data is then still the caller's). */
nd_buffer *nd_buffer_wrap(unsigned char *data, size_t len);
unsigned char *nd_buffer_data(nd_buffer *buf);

/* The array at idx, or NULL if that value is not an nd array.  Never raises. */
nd_array *nd_test(lua_State *L, int idx);
/* The array at idx; raises "bad argument" if it is not one. */
nd_array *nd_check(lua_State *L, int idx);

/* Pushes a contiguous array with the elements of the array at idx: that
 * array itself when it is contiguous, else a copy.  Returns it. */
nd_array *nd_push_contiguous(lua_State *L, int idx);

/* Address of element (0, ..., 0).  Only for contiguous arrays is this the
 * start of nd_bytes(a) consecutive bytes (check nd_is_contiguous). */
void *nd_data(const nd_array *a);
int nd_is_contiguous(const nd_array *a);
nd_dtype nd_dtype_of(const nd_array *a);
int nd_ndim(const nd_array *a);
const size_t *nd_shape(const nd_array *a);      /* nd_ndim(a) entries */
const ptrdiff_t *nd_strides(const nd_array *a); /* in elements */
size_t nd_count(const nd_array *a);             /* number of elements */
size_t nd_bytes(const nd_array *a);             /* count * element size */

/* Copies the elements in row-major order to dst (nd_bytes(a) bytes) / from
 * src into a (through its strides).  Never raise. */
void nd_copy_out(const nd_array *a, void *dst);
void nd_copy_in(nd_array *a, const void *src);

/* Keeps a's element storage alive independently of the Lua object (for C
 * code that still uses nd_data(a) after the array may be collected);
 * balance with nd_buffer_release. */
nd_buffer *nd_buffer_retain(nd_array *a);
nd_buffer *nd_buffer_share(nd_buffer *buf); /* one more reference; returns buf */
void nd_buffer_release(nd_buffer *buf);
/* The buffer of a's elements (not retained). */
nd_buffer *nd_buffer_of(const nd_array *a);

#endif
