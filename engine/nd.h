/* nd.h — the `nd` ndarray type of the engine's Lua runtime.
 *
 * An nd array is a Lua full userdata (metatable "ippc.nd") describing a
 * row-major, contiguous block of elements of one dtype (value.h: float64,
 * float32, int64, int32, uint8) with up to ND_MAX_DIMS dimensions.  The
 * elements live in an nd_buffer: malloc'd memory outside the Lua heap with a
 * reference count, so that several arrays (views such as a row `m[i]`) and
 * C code that must outlive a Lua object (a pending MPI request) can share one
 * block without copying.  The buffer is freed when its last reference goes.
 *
 * Lua API (luaopen_nd): nd.array, nd.zeros, nd.ones, nd.arange, nd.linspace;
 * methods sum, min, max, mean, shape, dtype, size, totable, copy, astype,
 * reshape; #a, a[i] (1-based), + - * / and unary minus, tostring(a).
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

/* Pushes a new zero-filled array; 0 <= ndim <= ND_MAX_DIMS. */
nd_array *nd_push_new(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape);

/* Pushes a new array whose elements are `data` (malloc'd, exactly
 * count * dtype size bytes; may be NULL only when that is 0).  Zero-copy: the
 * array takes ownership of data when this returns.  If it raises (out of
 * memory) it has not taken ownership: the caller still owns data. */
nd_array *nd_push_adopt(lua_State *L, nd_dtype dtype, int ndim, const size_t *shape,
                        unsigned char *data);

/* The array at idx, or NULL if that value is not an nd array.  Never raises. */
nd_array *nd_test(lua_State *L, int idx);
/* The array at idx; raises "bad argument" if it is not one. */
nd_array *nd_check(lua_State *L, int idx);

/* Element storage: nd_bytes(a) bytes, row-major, native byte order. */
void *nd_data(const nd_array *a);
nd_dtype nd_dtype_of(const nd_array *a);
int nd_ndim(const nd_array *a);
const size_t *nd_shape(const nd_array *a); /* nd_ndim(a) entries */
size_t nd_count(const nd_array *a);        /* number of elements */
size_t nd_bytes(const nd_array *a);        /* count * element size */

/* Keeps a's element storage alive independently of the Lua object (for C
 * code that still uses nd_data(a) after the array may be collected);
 * balance with nd_buffer_release. */
nd_buffer *nd_buffer_retain(nd_array *a);
void nd_buffer_release(nd_buffer *buf);

#endif
