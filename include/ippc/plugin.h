/* ippc/plugin.h — the native plugin ABI of ippc engines (version 1).
 *
 * A plugin is a shared library that an engine loads at run time
 * (POST /api/v1/views/{targets}/load {"library": "/path/libx.so"}).  It
 * registers kernels — C functions with a name — which then are Lua globals
 * on that engine, callable from Lua (`total = psum(a)`) and as `apply`
 * targets.  This is how compiled C, C++ or Fortran code (with MPI) runs on
 * the engines.  The smallest plugin:
 *
 *     #include <ippc/plugin.h>
 *
 *     IPPC_PLUGIN_DEFINE();  // records the ABI version the plugin was built for
 *
 *     static int twice(const ippc_api *api, ippc_call *call, const ippc_value *args, int nargs)
 *     {
 *         if (nargs != 1 || args[0].kind != IPPC_NUMBER && args[0].kind != IPPC_INTEGER)
 *             return api->error(call, "twice(x): x must be a number");
 *         return api->return_number(call, 2 * ippc_value_number(&args[0]));
 *     }
 *
 *     int ippc_plugin_init(const ippc_api *api)
 *     {
 *         return api->register_kernel(api, "twice", twice, "twice(x) -> 2x");
 *     }
 *
 * Build: cc -shared -fPIC $(pkg-config --cflags mpich) -Iinclude -o libx.so x.c
 * (examples/plugins/ are built by `make` into build/plugins/).
 *
 * Loading: the engine dlopens the file (RTLD_NOW | RTLD_LOCAL), checks
 * ippc_plugin_abi == IPPC_PLUGIN_ABI_VERSION, then calls ippc_plugin_init
 * once, on the engine's main thread.  A missing file, a library without
 * these symbols, another ABI version, or an init that returns non-zero is a
 * task error ("PluginError") and the engine carries on.  A library stays
 * loaded for the life of the engine; loading it again does not call init
 * again (its kernels are simply installed as globals again).
 *
 * Calls: a kernel runs on the engine's main thread, inside the task that
 * called it, and must not keep pointers it was given after it returns.
 * Arguments are numbers, booleans, nil, strings, nd arrays (as pointer +
 * dtype + shape of contiguous row-major elements; writes go to the
 * caller's array) and mpi communicator objects.  Results are added in order
 * with the return_* functions (none: the call returns nothing; several:
 * Lua gets several values, apply a list).  A kernel fails by returning
 * api->error(call, ...): the Lua caller gets an error with that message.
 * Kernels must not raise C++ exceptions or longjmp across the ABI.
 *
 * Interrupts: long kernels poll api->interrupted() (cheap: an atomic load)
 * and return api->error(call, "interrupted") when it is non-zero; the task
 * then ends "aborted".  MPI waits inside a kernel should be nonblocking
 * calls plus MPI_Test loops that poll it too, or an interrupted rank cannot
 * leave a collective its peers never join.
 *
 * Threads: a kernel may use threads internally (OpenMP, ...) but must call
 * the api only from the thread that called it.
 *
 * Versioning: IPPC_PLUGIN_ABI_VERSION changes when anything in this file
 * changes incompatibly.  New api functions are only ever appended; api->size
 * says how large the engine's struct is.
 */
#ifndef IPPC_PLUGIN_H
#define IPPC_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IPPC_PLUGIN_ABI_VERSION 1u

#if defined(__GNUC__)
#define IPPC_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define IPPC_PLUGIN_EXPORT
#endif

/* Element types; the numbering is the wire's (common/value.h). */
typedef enum ippc_dtype {
    IPPC_FLOAT64 = 0,
    IPPC_FLOAT32 = 1,
    IPPC_INT64 = 2,
    IPPC_INT32 = 3,
    IPPC_UINT8 = 4
} ippc_dtype;

#define IPPC_MAX_DIMS 8

/* An nd array: count elements of dtype at data, contiguous, row-major. */
typedef struct ippc_array {
    void *data;
    ippc_dtype dtype;
    int ndim;
    const size_t *shape; /* ndim entries */
    size_t count;
} ippc_array;

typedef enum ippc_kind {
    IPPC_NIL = 0,
    IPPC_BOOLEAN,
    IPPC_INTEGER,
    IPPC_NUMBER, /* a Lua float */
    IPPC_STRING,
    IPPC_ARRAY,
    IPPC_COMM /* an mpi communicator object (mpi.COMM_WORLD, comm_split's) */
} ippc_kind;

/* One argument, valid until the kernel returns. */
typedef struct ippc_value {
    ippc_kind kind;
    union {
        int boolean;
        int64_t integer;
        double number;
        struct {
            const char *data; /* not NUL-terminated in general; do not write */
            size_t len;
        } string;
        ippc_array array;
        MPI_Comm comm;
    } u;
} ippc_value;

/* One kernel invocation (opaque). */
typedef struct ippc_call ippc_call;
typedef struct ippc_api ippc_api;

/* A kernel: returns 0 after adding its results, or api->error(...). */
typedef int (*ippc_kernel)(const ippc_api *api, ippc_call *call, const ippc_value *args, int nargs);

struct ippc_api {
    uint32_t abi_version;       /* IPPC_PLUGIN_ABI_VERSION of the engine */
    uint32_t size;              /* sizeof(ippc_api) in the engine */
    const char *engine_version; /* "0.1.0" */

    /* The engine's MPI communicator: a duplicate of MPI_COMM_WORLD (the
     * same one as Lua's mpi module); MPI_COMM_NULL without MPI. */
    MPI_Comm world;

    /* During ippc_plugin_init only: makes fn callable as the Lua global
     * `name` (letters, digits and '_', not starting with a digit; at most 63
     * bytes).  doc may be NULL.  Returns 0, or -1 for a bad name (init
     * should then return non-zero). */
    int (*register_kernel)(const ippc_api *api, const char *name, ippc_kernel fn, const char *doc);

    /* Non-zero once the running task has been asked to stop. */
    int (*interrupted)(void);

    /* Results of a call, in order.  Each returns 0, or -1 when out of
     * memory (then return api->error(call, "out of memory")). */
    int (*return_nil)(ippc_call *call);
    int (*return_boolean)(ippc_call *call, int value);
    int (*return_integer)(ippc_call *call, int64_t value);
    int (*return_number)(ippc_call *call, double value);
    int (*return_string)(ippc_call *call, const char *data, size_t len); /* copied */
    /* A new zero-filled array result; fill it before returning.  NULL when
     * out of memory or for a bad dtype/shape. */
    void *(*return_array)(ippc_call *call, ippc_dtype dtype, int ndim, const size_t *shape);

    /* Fails the call with a printf-style message; returns -1, so that a
     * kernel can `return api->error(call, ...)`. */
    int (*error)(ippc_call *call, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 2, 3)))
#endif
        ;

    /* During ippc_plugin_init only: the reason the load fails; returns -1,
     * so that init can `return api->init_error(api, "needs MPI")`. */
    int (*init_error)(const ippc_api *api, const char *message);

    void *host; /* the engine's, do not touch */
};

/* A number argument as a double (IPPC_INTEGER or IPPC_NUMBER). */
static inline double ippc_value_number(const ippc_value *v)
{
    return v->kind == IPPC_INTEGER ? (double)v->u.integer : v->u.number;
}

/* Bytes per element of a dtype (0 for an invalid one). */
static inline size_t ippc_dtype_size(ippc_dtype t)
{
    switch (t) {
    case IPPC_FLOAT64:
    case IPPC_INT64: return 8;
    case IPPC_FLOAT32:
    case IPPC_INT32: return 4;
    case IPPC_UINT8: return 1;
    }
    return 0;
}

/* What every plugin defines: IPPC_PLUGIN_DEFINE(); at file scope, and
 * ippc_plugin_init, which registers the kernels and returns 0 (non-zero
 * fails the load, with the message given to api->init_error if any). */
#define IPPC_PLUGIN_DEFINE()                                                                       \
    IPPC_PLUGIN_EXPORT extern const uint32_t ippc_plugin_abi;                                      \
    const uint32_t ippc_plugin_abi = IPPC_PLUGIN_ABI_VERSION

IPPC_PLUGIN_EXPORT int ippc_plugin_init(const ippc_api *api);

#ifdef __cplusplus
}
#endif

#endif
