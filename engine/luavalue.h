/* luavalue.h — wire values (skeleton + blobs, see value.h) <-> Lua values.
 *
 * JSON -> Lua: null -> nil as the whole value, the `null` sentinel inside a
 * list or an object (so [1, null, 3] is {1, null, 3}: #t is 3 and t[2] ==
 * null; {"a": null} keeps its key); booleans, integers -> Lua integers, reals
 * -> Lua floats, strings, lists -> sequences, objects -> tables with string
 * keys, ndarray placeholders -> nd arrays that adopt the blob's bytes
 * (zero-copy).
 * Lua -> JSON: nil and `null` -> null, booleans, integers -> integers, floats
 * -> reals (NaN/Inf -> null), UTF-8 strings; a table whose keys are positive
 * integers, the largest at most twice their count -> a list with null in the
 * holes ({1, nil, 3} -> [1, null, 3]); an empty table -> []; other tables ->
 * objects (string keys; integer keys as decimal strings); nd arrays ->
 * placeholder + a copy of the bytes as a new blob.  Metatables are ignored
 * (raw access).  Functions, threads, other userdata, non-UTF-8 strings, other
 * key types, cycles and nesting deeper than LUAVALUE_MAX_DEPTH are errors.
 *
 * Threads: the lua_State's thread only.
 */
#ifndef IPPC_ENGINE_LUAVALUE_H
#define IPPC_ENGINE_LUAVALUE_H

#include <jansson.h>
#include <lua.h>

#include "error.h"
#include "value.h"

/* Nested tables/lists allowed (scalars and arrays inside do not count). */
#define LUAVALUE_MAX_DEPTH VALUE_MAX_DEPTH

/* Pushes the Lua value of skel and returns 0; or returns -1 with err set
 * (ERR_INVALID: malformed placeholder, too deep) and pushes nothing.
 * Placeholders adopt their blob: blobs->items[k].data becomes NULL (a
 * non-empty blob referenced twice is an error).  blobs may be NULL when skel
 * has no placeholders.  Raises a Lua error only when Lua is out of memory;
 * blob ownership stays consistent even then. */
int luavalue_push(lua_State *L, const json_t *skel, ippc_blobs *blobs, ippc_error *err);

/* Makes the global `null` (the sentinel for JSON null inside lists and
 * objects).  Raises a Lua error only when Lua is out of memory. */
void luavalue_open(lua_State *L);
/* Pushes the null sentinel (made on first use).  May raise (out of memory). */
void luavalue_push_null(lua_State *L);
/* 1 if the value at idx is the null sentinel.  Never raises. */
int luavalue_is_null(lua_State *L, int idx);

/* New skeleton for the Lua value at idx; nd arrays are copied into new blobs
 * appended to blobs (their indices are absolute in blobs).  NULL with err set
 * (ERR_INVALID) if the value cannot be sent; blobs appended before the
 * failure are then removed again.  Never raises a Lua error. */
json_t *luavalue_to_wire(lua_State *L, int idx, ippc_blobs *blobs, ippc_error *err);

#endif
