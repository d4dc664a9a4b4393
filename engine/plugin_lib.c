/* plugin_lib.c — opening plugin libraries and running their init
 * (plugin_lib.h). */
#include "plugin_lib.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "plugin_call.h"
#include "proto.h"

/* A kernel's name must be a Lua identifier (and so a Python one). */
static int valid_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= PLUGIN_LIB_NAME_MAX || (name[0] >= '0' && name[0] <= '9'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

/* api->host is the plugin_lib_kernels during init only. */
static int lib_register(const ippc_api *api, const char *name, ippc_kernel fn, const char *doc)
{
    (void)doc;
    plugin_lib_kernels *ks = api->host;
    if (!ks) /* after init: too late */
        return -1;
    if (!valid_name(name) || !fn) {
        snprintf(ks->error, sizeof ks->error, "register_kernel: invalid kernel name '%.64s'",
                 name ? name : "(null)");
        return -1;
    }
    if (ks->count == PLUGIN_LIB_MAX_KERNELS) {
        snprintf(ks->error, sizeof ks->error, "more than %d kernels", PLUGIN_LIB_MAX_KERNELS);
        return -1;
    }
    snprintf(ks->kernels[ks->count].name, PLUGIN_LIB_NAME_MAX, "%s", name);
    ks->kernels[ks->count++].fn = fn;
    return 0;
}

static int lib_init_error(const ippc_api *api, const char *message)
{
    plugin_lib_kernels *ks = api->host;
    if (ks)
        snprintf(ks->error, sizeof ks->error, "%s", message ? message : "init failed");
    return -1;
}

void *plugin_lib_open(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (!path || !path[0]) {
        snprintf(err, errlen, "cannot load a plugin: empty library path");
        return NULL;
    }
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "cannot load plugin %s: %s", path, strerror(errno));
        return NULL;
    }
    dlerror();
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        snprintf(err, errlen, "cannot load plugin %s: %s", path, why ? why : "dlopen failed");
    }
    return handle;
}

void plugin_lib_api(ippc_api *api, MPI_Comm world, int (*interrupted)(void))
{
    memset(api, 0, sizeof *api);
    api->abi_version = IPPC_PLUGIN_ABI_VERSION;
    api->size = sizeof *api;
    api->engine_version = IPPC_VERSION;
    api->world = world;
    api->register_kernel = lib_register;
    api->interrupted = interrupted;
    plugin_call_bind(api);
    api->init_error = lib_init_error;
}

int plugin_lib_init(void *handle, const char *path, ippc_api *api, plugin_lib_kernels *out,
                    char *err, size_t errlen)
{
    const uint32_t *abi = dlsym(handle, "ippc_plugin_abi");
    if (!abi) {
        snprintf(err, errlen,
                 "%s is not an ippc plugin: it does not define ippc_plugin_abi "
                 "(IPPC_PLUGIN_DEFINE() from ippc/plugin.h)",
                 path);
        return -1;
    }
    if (*abi != IPPC_PLUGIN_ABI_VERSION) {
        snprintf(err, errlen,
                 "%s was built for plugin ABI version %u; this engine implements version %u "
                 "(rebuild it against this ippc's include/ippc/plugin.h)",
                 path, (unsigned)*abi, (unsigned)IPPC_PLUGIN_ABI_VERSION);
        return -1;
    }
    int (*init)(const ippc_api *);
    *(void **)(&init) = dlsym(handle, "ippc_plugin_init");
    if (!init) {
        snprintf(err, errlen, "%s is not an ippc plugin: it does not define ippc_plugin_init",
                 path);
        return -1;
    }
    api->host = out;
    int rc = init(api);
    api->host = NULL;
    if (rc != 0) {
        snprintf(err, errlen, "ippc_plugin_init of %s failed: %s", path,
                 out->error[0] ? out->error : "it returned non-zero");
        return -1;
    }
    return 0;
}
