/* pyruntime_impl.h — what the Python runtime's files share (pyruntime.c:
 * interpreter, tasks and ops; pyruntime_ns.c: namespace ops and fanned-out
 * data ops; pyplugin.c: native kernels as Python callables); not for the
 * rest of the engine.
 *
 * CPython is one per process, so is this runtime: py_runtime_current is it
 * (NULL before runtime_new and after runtime_free).  Every function here is
 * called with the GIL held, on the runtime's thread.
 */
#ifndef IPPC_ENGINE_PYRUNTIME_IMPL_H
#define IPPC_ENGINE_PYRUNTIME_IMPL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>

#include "fanout.h"
#include "pyvalue.h"
#include "runtime_class.h"
#include "task.h"
#include "taskout.h"

typedef struct py_runtime {
    runtime base; /* first: the runtime * of runtime.h */
    int rank, size;
    atomic_int interrupt; /* set: the running task is to stop */
    atomic_int armed;     /* the interrupt signal may be sent to thread */
    pthread_t thread;     /* the runtime's (Python's main) thread */
    int signo;            /* the signal that wakes it (see pyruntime.c) */
    PyThreadState *idle;  /* the GIL released between tasks */
    PyObject *ns;         /* __main__'s dict: the namespace */
    PyObject *baseline;   /* the namespace's names at start (a dict copy) */
    PyObject *boot;       /* the helpers' module (run, format_error) */
    PyObject *kernels;    /* name -> kernel callable (pyplugin.c) */
    taskout out;
    fanout *fan;
    MPI_Comm world; /* plugins' duplicate of MPI_COMM_WORLD, or MPI_COMM_NULL */
} py_runtime;

extern py_runtime *py_runtime_current;

/* Records the pending Python exception as the task's failure (ename is the
 * exception's type, the traceback Python's, minus the engine's frames); an
 * interrupt makes it "aborted".  Clears the exception. */
void py_task_fail(task_ctx *c);
/* ns[name] as a new reference, or NULL with a NameError recorded. */
PyObject *py_task_global(task_ctx *c, const char *name);
/* Converts v for the result; 0, or -1 with a TypeError recorded. */
int py_task_wire(task_ctx *c, PyObject *v, const char *what, json_t **out);
/* Sets the names of ns (skeletons over blobs) all at once, or records a
 * ValueError and sets none. */
void py_push_ns(task_ctx *c, const json_t *ns, ippc_blobs *blobs);

/* pyruntime_ns.c */
void py_op_reset(task_ctx *c);
void py_op_delete(task_ctx *c);
void py_op_list(task_ctx *c);
void py_op_load(task_ctx *c);
void py_op_fanout(task_ctx *c);

/* pyplugin.c: readies the kernel type; 0 or -1 (Python error). */
int pyplugin_open(void);
/* Loads a plugin: its kernels become callables in rt->kernels and the
 * namespace.  A new list of kernel names, or NULL with a one-line reason in
 * err (no Python error pending). */
PyObject *pyplugin_load(py_runtime *rt, const char *path, char *err, size_t errlen);

#endif
