/* plugin_call.c — a kernel call's results and error (plugin_call.h). */
#include "plugin_call.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A new zeroed result of kind at the end of the list; NULL when out of
 * memory (the list is unchanged then). */
static plugin_call_result *call_add(ippc_call *call, ippc_kind kind)
{
    assert(call->count <= call->cap);
    if (call->count == call->cap) {
        size_t cap = call->cap ? call->cap * 2 : 4;
        plugin_call_result *r = realloc(call->results, cap * sizeof *r);
        if (!r)
            return NULL;
        call->results = r;
        call->cap = cap;
    }
    plugin_call_result *r = &call->results[call->count++];
    memset(r, 0, sizeof *r);
    r->kind = kind;
    return r;
}

static int call_return_nil(ippc_call *call)
{
    return call_add(call, IPPC_NIL) ? 0 : -1;
}

static int call_return_boolean(ippc_call *call, int value)
{
    plugin_call_result *r = call_add(call, IPPC_BOOLEAN);
    if (!r)
        return -1;
    r->integer = value != 0;
    return 0;
}

static int call_return_integer(ippc_call *call, int64_t value)
{
    plugin_call_result *r = call_add(call, IPPC_INTEGER);
    if (!r)
        return -1;
    r->integer = value;
    return 0;
}

static int call_return_number(ippc_call *call, double value)
{
    plugin_call_result *r = call_add(call, IPPC_NUMBER);
    if (!r)
        return -1;
    r->number = value;
    return 0;
}

static int call_return_string(ippc_call *call, const char *data, size_t len)
{
    unsigned char *copy = malloc(len ? len : 1);
    plugin_call_result *r = copy ? call_add(call, IPPC_STRING) : NULL;
    if (!r) {
        free(copy);
        return -1;
    }
    if (len)
        memcpy(copy, data, len);
    r->data = copy;
    r->len = len;
    return 0;
}

/* The byte count is capped at SIZE_MAX / 4, so that what a runtime computes
 * from it (strides, its own headers) cannot overflow. */
static void *call_return_array(ippc_call *call, ippc_dtype dtype, int ndim, const size_t *shape)
{
    size_t es = ippc_dtype_size(dtype), count = 1;
    if (es == 0 || ndim < 0 || ndim > IPPC_MAX_DIMS || (ndim > 0 && !shape))
        return NULL;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] && count > (SIZE_MAX / 4) / es / shape[d])
            return NULL;
        count *= shape[d];
    }
    unsigned char *data = calloc(count ? count * es : 1, 1);
    plugin_call_result *r = data ? call_add(call, IPPC_ARRAY) : NULL;
    if (!r) {
        free(data);
        return NULL;
    }
    r->data = data;
    r->len = count * es;
    r->dtype = dtype;
    r->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        r->shape[d] = shape[d];
    return data;
}

static int call_error(ippc_call *call, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->error, sizeof call->error, fmt ? fmt : "error", ap);
    va_end(ap);
    call->failed = 1;
    return -1;
}

void plugin_call_bind(ippc_api *api)
{
    api->return_nil = call_return_nil;
    api->return_boolean = call_return_boolean;
    api->return_integer = call_return_integer;
    api->return_number = call_return_number;
    api->return_string = call_return_string;
    api->return_array = call_return_array;
    api->error = call_error;
}

void plugin_call_free(ippc_call *call)
{
    for (size_t i = 0; i < call->count; i++)
        free(call->results[i].data);
    free(call->results);
    call->results = NULL;
    call->count = call->cap = 0;
}
