/* plugin_call.h — the engine's side of one kernel call (include/ippc/plugin.h):
 * the results a kernel adds with api->return_* and the failure it records
 * with api->error, kept as plain C memory that no language owns yet.
 *
 * Both runtimes' kernel wrappers (plugin.c: Lua, pyplugin.c: Python) fill
 * the return_* and error entries of their ippc_api with plugin_call_bind,
 * hand a zeroed ippc_call to the kernel, and only after it returned turn the
 * results into their own values.  So no language code (no Lua error, no
 * Python) runs while plugin code is on the C stack.
 *
 * Ownership: strings and arrays are malloc'd here (arrays zero-filled); a
 * runtime that adopts one sets its data to NULL; plugin_call_free frees
 * the rest and the list.  Threads: whichever thread runs the kernel; a call
 * is never shared between threads.
 */
#ifndef IPPC_ENGINE_PLUGIN_CALL_H
#define IPPC_ENGINE_PLUGIN_CALL_H

#include <stddef.h>
#include <stdint.h>

#include <ippc/plugin.h>

typedef struct plugin_call_result {
    ippc_kind kind;
    int64_t integer; /* IPPC_BOOLEAN (0 or 1) and IPPC_INTEGER */
    double number;
    unsigned char *data; /* strings and arrays; NULL once a runtime owns it */
    size_t len;          /* bytes at data */
    ippc_dtype dtype;
    int ndim;
    size_t shape[IPPC_MAX_DIMS];
} plugin_call_result;

/* The ABI's opaque call: zero it before the kernel runs. */
struct ippc_call {
    int failed;      /* api->error was called */
    char error[512]; /* its message */
    plugin_call_result *results;
    size_t count, cap;
};

/* Sets api's return_nil ... return_array and error to this module's. */
void plugin_call_bind(ippc_api *api);
/* Frees the results' memory that no runtime adopted, and the list; the call
 * reads as having no results afterwards. */
void plugin_call_free(ippc_call *call);

#endif
