/* plugin.h — the engine side of native plugins (include/ippc/plugin.h).
 *
 * Loads shared libraries built against the plugin ABI and turns their
 * kernels into Lua functions (C closures that convert arguments, call the
 * kernel and push its results).  The kernel registry lives in the Lua
 * registry: library path -> its kernels, and kernel name -> function, so
 * that runtime's reset can put the kernels back as globals and list can
 * tell them from user values.  Libraries are never dlclosed once a kernel
 * of theirs exists (a Lua value may still reference it).
 *
 * Threads: the lua_State's thread only.
 */
#ifndef IPPC_ENGINE_PLUGIN_H
#define IPPC_ENGINE_PLUGIN_H

#include <stdatomic.h>
#include <stddef.h>

#include <lua.h>

/* Sets up the registry tables; interrupt (may be NULL) is what
 * api->interrupted() reads; it must outlive the lua_State. */
void plugin_open(lua_State *L, const atomic_int *interrupt);

/* Loads the library at path and sets its kernels as globals.  On success
 * pushes {library = path, kernels = {name, ...}} and returns 0; otherwise
 * pushes nothing, writes a one-line reason into err and returns -1 (missing
 * file, not loadable, missing ippc_plugin_abi / ippc_plugin_init, other ABI
 * version, init failed, bad kernel name).  Raises only when Lua is out of
 * memory. */
int plugin_load(lua_State *L, const char *path, char *err, size_t errlen);

/* Sets every loaded kernel as a global again (after a reset). */
void plugin_install_globals(lua_State *L);

/* 1 if the value at idx is the function of a loaded kernel. */
int plugin_is_kernel(lua_State *L, int idx);

#endif
