/* plugin_lib.h — opening a native plugin library (include/ippc/plugin.h)
 * and running its ippc_plugin_init: the steps and checks that do not depend
 * on the runtime's language.  What a kernel becomes (a Lua function in
 * plugin.c, a Python callable in pyplugin.c), and how long a library and
 * its api live, is the runtime's.
 *
 * A runtime: plugin_lib_open (stat + dlopen), its own "loaded before?"
 * check on the handle, then an ippc_api made with plugin_lib_api and
 * plugin_lib_init, which checks the ABI and collects the kernels init
 * registers into a plugin_lib_kernels.  Errors are one line in err
 * ("cannot load plugin PATH: ...").
 *
 * Threads: the runtime's thread only.
 */
#ifndef IPPC_ENGINE_PLUGIN_LIB_H
#define IPPC_ENGINE_PLUGIN_LIB_H

#include <stddef.h>

#include <ippc/plugin.h>

#define PLUGIN_LIB_MAX_KERNELS 256
#define PLUGIN_LIB_NAME_MAX 64 /* with the NUL */

/* What init registered (big: keep it off the C stack). */
typedef struct plugin_lib_kernels {
    int count;
    struct {
        char name[PLUGIN_LIB_NAME_MAX];
        ippc_kernel fn;
    } kernels[PLUGIN_LIB_MAX_KERNELS];
    char error[256]; /* init's reason for failing (init_error, a bad name) */
} plugin_lib_kernels;

/* dlopens path (RTLD_NOW | RTLD_LOCAL) after checking that it exists;
 * the handle, or NULL with err (empty path, missing file, not loadable). */
void *plugin_lib_open(const char *path, char *err, size_t errlen);

/* Fills every entry of api but host: the ABI version and size, the engine's
 * version, world, interrupted (the runtime's flag) and the callbacks
 * (plugin_call.h for the results). */
void plugin_lib_api(ippc_api *api, MPI_Comm world, int (*interrupted)(void));

/* Checks that handle (of path) is a plugin of this ABI version and runs its
 * ippc_plugin_init with api, collecting its kernels into out (zeroed by the
 * caller).  0, or -1 with err (no ippc_plugin_abi, other version, no
 * ippc_plugin_init, init failed). */
int plugin_lib_init(void *handle, const char *path, ippc_api *api, plugin_lib_kernels *out,
                    char *err, size_t errlen);

#endif
