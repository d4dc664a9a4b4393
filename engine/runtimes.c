/* runtimes.c — runtime.h's functions, dispatched to the runtime's class
 * (runtime_class.h): Lua (runtime.c) or Python (pyruntime.c). */
#include <assert.h>
#include <string.h>

#include "runtime_class.h"

static const runtime_class *const classes[RUNTIME_KIND_COUNT] = {
    [RUNTIME_LUA] = &runtime_lua_class,
    [RUNTIME_PYTHON] = &runtime_python_class,
};

const char *runtime_kind_name(runtime_kind kind)
{
    return (unsigned)kind < RUNTIME_KIND_COUNT ? classes[kind]->name : NULL;
}

int runtime_kind_parse(const char *name)
{
    for (int k = 0; name && k < RUNTIME_KIND_COUNT; k++)
        if (strcmp(name, classes[k]->name) == 0)
            return k;
    return -1;
}

runtime *runtime_new(runtime_kind kind, int rank, int size, ippc_error *err)
{
    if ((unsigned)kind >= RUNTIME_KIND_COUNT) {
        ippc_error_set(err, ERR_INVALID, "unknown runtime %d", (int)kind);
        return NULL;
    }
    runtime *rt = classes[kind]->create(rank, size, err);
    assert(!rt || rt->cls == classes[kind]);
    return rt;
}

void runtime_free(runtime *rt)
{
    if (rt)
        rt->cls->destroy(rt);
}

runtime_kind runtime_kind_of(const runtime *rt)
{
    return rt->cls->kind;
}

json_t *runtime_run_task(runtime *rt, const json_t *task, ippc_blobs *task_blobs,
                         ippc_blobs *result_blobs)
{
    return rt->cls->run_task(rt, task, task_blobs, result_blobs);
}

void runtime_set_stdout_sink(runtime *rt, runtime_stdout_sink sink, void *arg)
{
    rt->cls->set_stdout_sink(rt, sink, arg);
}

void runtime_interrupt(runtime *rt)
{
    if (rt)
        rt->cls->interrupt(rt);
}
