/* pyruntime.c — the engine's Python runtime (runtime.h, docs/python.md):
 * Debian's CPython embedded, its __main__ dict the namespace, NumPy for
 * arrays and the engine's mpi4py-compatible module for MPI.
 *
 * Interpreter.  Started once per process with Python's own signal handlers
 * off (the engine owns SIGINT/SIGTERM) and OPENBLAS_NUM_THREADS=1 unless set
 * (4 ranks on 2 cores must not each start a BLAS thread pool).  Between
 * tasks the GIL is released (threads a task started may run); a task takes
 * it on the runtime's thread.  The network thread never runs Python, so
 * heartbeats flow while user code holds the GIL.
 *
 * Interrupts.  runtime_interrupt (any thread, signal handlers included)
 * sets the flag and sends the runtime's thread a real-time signal that only
 * Python handles (signal.signal at start).  Python's C handler notes it
 * (async-signal-safe) and, on the runtime's thread, at the next bytecode
 * boundary, calls our handler, which raises KeyboardInterrupt while the
 * flag is set and trips the signal again, so `except:` cannot swallow the
 * stop: the interrupt keeps raising until the task unwinds.  A real signal
 * (not just PyErr_SetInterrupt) also breaks blocking calls (time.sleep).
 * C code that waits (MPI waits of mpi4py.MPI, fanned-out data ops, plugin
 * kernels) polls the flag itself.  The flag is cleared, and a stale signal
 * drained, when a task starts.
 *
 * Output.  sys.stdout and sys.stderr are one writer into the task's stdout
 * (taskout.h), streamed as lines end (reset puts them back); sys.stdin is
 * empty (input() gets EOFError, never the terminal of mpiexec).  os._exit
 * raises instead of ending the engine, as the Lua runtime's os.exit.
 *
 * Code.  execute and run parse the source with the file's name (the run's
 * filename, or "<execute-N>" for the engine's Nth execute: a function
 * defined by one execute and failing in a later one must show its own
 * lines, and linecache keys sources by file name; the last 1,000 sources
 * are kept), execute it in the namespace, and answer the value of a final
 * expression statement (as a notebook cell does), if not None and the code
 * does not end with ';' (IPython's way to keep a value quiet).
 */
#include "pyruntime_impl.h"
#include "lmpi.h"
#include "pympi.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

py_runtime *py_runtime_current;

/* runtime_python_real_mpi4py: an installed mpi4py instead of ours. */
static int use_real_mpi4py;

void runtime_python_real_mpi4py(int on)
{
    use_real_mpi4py = on;
}

/* LeakSanitizer (make SAN=1) reads this hook of the executable.  The
 * interpreter is never finalised (NumPy cannot be started twice in a
 * process, and finalising runs user atexit code while the engine stops), so
 * CPython's objects are still allocated at exit, many of them reachable only
 * through pointers LeakSanitizer does not follow (GC lists, obmalloc
 * arenas): without this every Python engine would "leak" megabytes.  Only
 * allocations made inside libpython, the extension modules it loaded (NumPy,
 * lib-dynload: _hashlib's OpenSSL state) are exempt; the engine's are not. */
const char *__lsan_default_suppressions(void); // NOLINT(bugprone-reserved-identifier)
const char *__lsan_default_suppressions(void)  // NOLINT(bugprone-reserved-identifier)
{
    return "leak:libpython3\n"
           "leak:/usr/lib/python3/dist-packages/\n"
           "leak:/usr/lib/python3.11/lib-dynload/\n"
           "leak:libcrypto.so\n";
}

/* The engine's own Python: the writer, code running and error formatting.
 * Its frames are dropped from tracebacks (the file name "<ippc>"). */
static const char boot_source[] =
    "import ast, io, linecache, os, signal, sys, traceback, _ippc\n"
    "class TaskOutput:\n"
    "    encoding = 'utf-8'\n"
    "    errors = 'replace'\n"
    "    def write(self, s):\n"
    "        if not isinstance(s, str):\n"
    "            raise TypeError('write() argument must be str, not ' + type(s).__name__)\n"
    "        _ippc.write(s)\n"
    "        return len(s)\n"
    "    def writelines(self, lines):\n"
    "        for s in lines:\n"
    "            self.write(s)\n"
    "    def flush(self): pass\n"
    "    def isatty(self): return False\n"
    "    def writable(self): return True\n"
    "    def readable(self): return False\n"
    "    def seekable(self): return False\n"
    "def reset_io():\n"
    "    sys.stdout = sys.stderr = TaskOutput()\n"
    "    sys.stdin = io.StringIO('')\n"
    "reset_io()\n"
    "def no_exit(status=0):\n"
    "    raise RuntimeError('os._exit is not available on an engine (it would stop the engine)')\n"
    "os._exit = no_exit\n"
    "sys.argv = ['']\n"
    "signal.signal(_ippc.SIGNAL, _ippc.on_interrupt)\n"
    "n_executes = 0\n"
    "executes = []\n"
    "def run(src, filename, ns):\n"
    "    global n_executes\n"
    "    if filename == '<execute>':\n"
    "        n_executes += 1\n"
    "        filename = '<execute-%d>' % n_executes\n"
    "        executes.append(filename)\n"
    "        if len(executes) > 1000:\n"
    "            linecache.cache.pop(executes.pop(0), None)\n"
    "    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)\n"
    "    try:\n"
    "        tree = ast.parse(src, filename, 'exec')\n"
    "        last = None\n"
    "        quiet = src.rstrip().endswith(';')\n"
    "        if tree.body and isinstance(tree.body[-1], ast.Expr) and not quiet:\n"
    "            last = ast.Expression(tree.body.pop().value)\n"
    "        code = compile(tree, filename, 'exec')\n"
    "        final = compile(last, filename, 'eval') if last is not None else None\n"
    "    except SyntaxError as e:\n"
    "        raise e.with_traceback(None)\n"
    "    exec(code, ns)\n"
    "    return eval(final, ns) if final is not None else None\n"
    "def format_error(e):\n"
    "    tb = e.__traceback__\n"
    "    while tb is not None and tb.tb_frame.f_code.co_filename == '<ippc>':\n"
    "        tb = tb.tb_next\n"
    "    text = ''.join(traceback.format_exception(type(e), e, tb))\n"
    "    return type(e).__name__, str(e), text.rstrip('\\n').split('\\n')\n";

/* ------------------------------------------------------------ _ippc module */

static PyObject *ippc_write(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_ssize_t n;
    const char *s = PyUnicode_Check(arg) ? PyUnicode_AsUTF8AndSize(arg, &n) : NULL;
    if (!s) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "write() takes a str");
        return NULL;
    }
    py_runtime *rt = py_runtime_current;
    if (rt) {
        taskout_add(&rt->out, s, (size_t)n);
        if (memchr(s, '\n', (size_t)n))
            taskout_stream(&rt->out, 0); /* whole lines at a time */
    }
    return Py_NewRef(Py_None);
}

/* The Python-level handler of the interrupt signal (see the top). */
static PyObject *ippc_on_interrupt(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    py_runtime *rt = py_runtime_current;
    if (rt && atomic_load(&rt->interrupt)) {
        PyErr_SetInterruptEx(rt->signo); /* again at the next boundary, until the task ends */
        PyErr_SetString(PyExc_KeyboardInterrupt, "task interrupted");
        return NULL;
    }
    return Py_NewRef(Py_None);
}

static PyMethodDef ippc_methods[] = {
    {"write", ippc_write, METH_O, "appends text to the running task's stdout"},
    {"on_interrupt", ippc_on_interrupt, METH_VARARGS, "the engine's interrupt handler"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ippc_module = {
    PyModuleDef_HEAD_INIT,
    "_ippc",
    "the engine's own hooks (not for user code)",
    -1,
    ippc_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

static int interrupt_signal(void)
{
    return SIGRTMIN + 6;
}

static PyObject *ippc_module_init(void)
{
    PyObject *m = PyModule_Create(&ippc_module);
    if (m && PyModule_AddIntConstant(m, "SIGNAL", interrupt_signal()) < 0)
        Py_CLEAR(m);
    return m;
}

/* ------------------------------------------------------------ task pieces */

void py_task_fail(task_ctx *c)
{
    py_runtime *rt = (py_runtime *)c->rt;
    if (!PyErr_Occurred()) {
        task_fail(c, TASK_ERROR, "SystemError", "an error without an exception");
        return;
    }
    if (atomic_load(&rt->interrupt)) {
        PyErr_Clear();
        task_fail(c, TASK_ABORTED, "Aborted", "task interrupted");
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    PyObject *info = value ? PyObject_CallMethod(rt->boot, "format_error", "O", value) : NULL;
    const char *ename = NULL, *evalue = NULL;
    PyObject *lines = NULL;
    if (info && PyArg_ParseTuple(info, "ssO", &ename, &evalue, &lines) && PyList_Check(lines)) {
        task_fail(c, TASK_ERROR, ename, "%s", evalue);
        json_decref(c->traceback);
        c->traceback = json_array();
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lines); i++) {
            Py_ssize_t n = 0;
            const char *line = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(lines, i), &n);
            if (line)
                json_array_append_new(c->traceback, json_text(line, (size_t)n));
            PyErr_Clear();
        }
    } else {
        PyErr_Clear();
        task_fail(c, TASK_ERROR, type ? ((PyTypeObject *)type)->tp_name : "Error",
                  "(the error could not be formatted)");
    }
    Py_XDECREF(info);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

PyObject *py_task_global(task_ctx *c, const char *name)
{
    py_runtime *rt = (py_runtime *)c->rt;
    PyObject *v = PyDict_GetItemString(rt->ns, name); /* borrowed */
    if (!v) {
        PyErr_Clear();
        task_fail(c, TASK_ERROR, "NameError", "name '%s' is not defined", name);
        return NULL;
    }
    Py_INCREF(v);
    return v;
}

int py_task_wire(task_ctx *c, PyObject *v, const char *what, json_t **out)
{
    ippc_error err;
    *out = pyvalue_to_wire(v, c->result_blobs, &err);
    if (!*out) {
        if (atomic_load(c->interrupt))
            task_fail(c, TASK_ABORTED, "Aborted", "task interrupted");
        else
            task_fail(c, TASK_ERROR, "TypeError", "%s%s%s", what ? what : "", what ? ": " : "",
                      err.message);
        return -1;
    }
    return 0;
}

void py_push_ns(task_ctx *c, const json_t *ns, ippc_blobs *blobs)
{
    py_runtime *rt = (py_runtime *)c->rt;
    PyObject *values = PyDict_New();
    const char *name;
    json_t *skel;
    if (!values) {
        py_task_fail(c);
        return;
    }
    json_object_foreach((json_t *)ns, name, skel) {
        ippc_error err;
        PyObject *v = pyvalue_from_wire(skel, blobs, &err);
        if (!v) {
            task_fail(c, TASK_ERROR, "ValueError", "%s: %s", name, err.message);
            Py_DECREF(values);
            return;
        }
        int rc = PyDict_SetItemString(values, name, v);
        Py_DECREF(v);
        if (rc < 0) {
            py_task_fail(c);
            Py_DECREF(values);
            return;
        }
    }
    if (PyDict_Update(rt->ns, values) < 0) /* all converted: set them at once */
        py_task_fail(c);
    Py_DECREF(values);
}

/* ------------------------------------------------------------ ops */

static void op_code(task_ctx *c, int is_run)
{
    py_runtime *rt = (py_runtime *)c->rt;
    size_t len;
    const char *src = task_string(c, is_run ? "source" : "code", &len);
    if (!src)
        return;
    const char *filename = is_run ? task_string(c, "filename", NULL) : "<execute>";
    if (!filename)
        return;
    PyObject *r =
        PyObject_CallMethod(rt->boot, "run", "s#sO", src, (Py_ssize_t)len, filename, rt->ns);
    if (!r) {
        py_task_fail(c);
        return;
    }
    if (r != Py_None)
        py_task_wire(c, r, "the value of the code's last expression (end it with ';' to keep it)",
                     &c->value);
    Py_DECREF(r);
}

static void op_push(task_ctx *c)
{
    const json_t *ns = json_object_get(c->task, "ns");
    if (!json_is_object(ns)) {
        task_fail(c, TASK_ERROR, "ProtocolError", "push needs an object 'ns'");
        return;
    }
    py_push_ns(c, ns, c->task_blobs);
}

/* task_pull's get: ns[name] converted for the result. */
static json_t *pull_global(task_ctx *c, const char *name, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    PyObject *v = py_task_global(c, name);
    if (!v)
        return NULL;
    json_t *w;
    int r = py_task_wire(c, v, name, &w);
    Py_DECREF(v);
    return r < 0 ? NULL : w;
}

/* An apply argument: a {"$ref": NAME} global or a wire value; new reference
 * or NULL with the failure recorded. */
static PyObject *py_arg(task_ctx *c, const json_t *v, const char *what)
{
    if (task_is_ref(v))
        return py_task_global(c, json_string_value(json_object_get(v, "$ref")));
    ippc_error err;
    PyObject *o = pyvalue_from_wire(v, c->task_blobs, &err);
    if (!o)
        task_fail(c, TASK_ERROR, "ValueError", "%s: %s", what, err.message);
    return o;
}

/* ns[name], or a builtin of that name (apply "max"), if callable (new
 * reference); or NULL with the failure recorded. */
static PyObject *py_function(task_ctx *c, const char *name)
{
    PyObject *builtins = PyEval_GetBuiltins(); /* borrowed */
    PyObject *f = NULL;
    if (!PyDict_GetItemString(((py_runtime *)c->rt)->ns, name) && builtins &&
        (f = PyDict_GetItemString(builtins, name)))
        Py_INCREF(f);
    else
        f = py_task_global(c, name);
    if (f && !PyCallable_Check(f)) {
        task_fail(c, TASK_ERROR, "TypeError", "'%s' is a %s value, not a function", name,
                  Py_TYPE(f)->tp_name);
        Py_CLEAR(f);
    }
    return f;
}

static void op_apply(task_ctx *c)
{
    const char *fname = task_string(c, "function", NULL);
    if (!fname)
        return;
    const json_t *args, *kwargs;
    if (task_apply_args(c, &args, &kwargs) < 0)
        return;
    PyObject *f = py_function(c, fname);
    PyObject *pargs = f ? PyTuple_New((Py_ssize_t)json_array_size(args)) : NULL;
    PyObject *pkw = pargs && json_object_size(kwargs) ? PyDict_New() : NULL;
    PyObject *r = NULL;
    if (f && (!pargs || (json_object_size(kwargs) && !pkw))) {
        py_task_fail(c);
        goto done;
    }
    if (!f)
        goto done;
    size_t i;
    const json_t *arg;
    json_array_foreach(args, i, arg) {
        char what[32];
        snprintf(what, sizeof what, "argument %zu", i + 1);
        PyObject *a = py_arg(c, arg, what);
        if (!a)
            goto done;
        PyTuple_SET_ITEM(pargs, (Py_ssize_t)i, a);
    }
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)kwargs, key, v) {
        PyObject *a = py_arg(c, v, key);
        if (!a)
            goto done;
        int rc = PyDict_SetItemString(pkw, key, a);
        Py_DECREF(a);
        if (rc < 0) {
            py_task_fail(c);
            goto done;
        }
    }
    r = PyObject_Call(f, pargs, pkw);
    if (!r)
        py_task_fail(c);
    else
        py_task_wire(c, r, NULL, &c->value);
done:
    Py_XDECREF(r);
    Py_XDECREF(pkw);
    Py_XDECREF(pargs);
    Py_XDECREF(f);
}

/* op "map" (runtime.h): the function on the i-th items of every sequence
 * (the shortest bounds i); a failed item is null with an item error, an
 * interrupt ends the chunk. */
static void op_map(task_ctx *c)
{
    const char *fname = task_string(c, "function", NULL);
    if (!fname)
        return;
    const json_t *seqs = task_map_sequences(c);
    if (!seqs)
        return;
    size_t nseq = json_array_size(seqs);
    PyObject *seq[64] = {NULL};
    PyObject *f = py_function(c, fname);
    Py_ssize_t n = PY_SSIZE_T_MAX;
    for (size_t k = 0; f && k < nseq; k++) {
        char what[32];
        snprintf(what, sizeof what, "sequence %zu", k + 1);
        if (!(seq[k] = py_arg(c, json_array_get(seqs, k), what)))
            goto done;
        /* A list of numbers arrives as a 1-d array: its items go to the
         * function as Python numbers, as ipyparallel's map passes them. */
        PyObject *ndim = pyvalue_is_ndarray(seq[k]) ? PyObject_GetAttrString(seq[k], "ndim") : NULL;
        if (ndim && PyLong_AsLong(ndim) == 1) {
            PyObject *list = PyObject_CallMethod(seq[k], "tolist", NULL);
            if (!list) {
                py_task_fail(c);
                Py_DECREF(ndim);
                goto done;
            }
            Py_SETREF(seq[k], list);
        }
        Py_XDECREF(ndim);
        PyErr_Clear();
        Py_ssize_t len = PyObject_Length(seq[k]);
        if (len < 0) {
            PyErr_Clear();
            task_fail(c, TASK_ERROR, "TypeError", "map: %s is a %s, not a sequence", what,
                      Py_TYPE(seq[k])->tp_name);
            goto done;
        }
        if (len < n)
            n = len;
    }
    if (!f)
        goto done;
    task_map_begin(c);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *args = PyTuple_New((Py_ssize_t)nseq);
        for (size_t k = 0; args && k < nseq; k++) {
            PyObject *item = PySequence_GetItem(seq[k], i);
            if (!item) {
                Py_CLEAR(args);
                break;
            }
            PyTuple_SET_ITEM(args, (Py_ssize_t)k, item);
        }
        PyObject *r = args ? PyObject_Call(f, args, NULL) : NULL;
        Py_XDECREF(args);
        json_t *v = NULL;
        if (!r)
            py_task_fail(c);
        else
            py_task_wire(c, r, "map result", &v);
        Py_XDECREF(r);
        if (task_map_item(c, (long long)i, v) < 0)
            goto done;
    }
    task_items_settle(c);
done:
    for (size_t k = 0; k < nseq; k++)
        Py_XDECREF(seq[k]);
    Py_XDECREF(f);
}

static void run_op(task_ctx *c)
{
    const char *name = json_string_value(json_object_get(c->task, "op"));
    if (!name)
        task_fail(c, TASK_ERROR, "ProtocolError", "task needs a string 'op'");
    else if (json_object_get(c->task, "fanout"))
        py_op_fanout(c); /* push, scatter or gather over MPI */
    else if (strcmp(name, "execute") == 0)
        op_code(c, 0);
    else if (strcmp(name, "run") == 0)
        op_code(c, 1);
    else if (strcmp(name, "push") == 0)
        op_push(c);
    else if (strcmp(name, "pull") == 0)
        task_pull(c, pull_global, NULL);
    else if (strcmp(name, "apply") == 0)
        op_apply(c);
    else if (strcmp(name, "map") == 0)
        op_map(c);
    else if (strcmp(name, "load") == 0)
        py_op_load(c);
    else if (strcmp(name, "reset") == 0)
        py_op_reset(c);
    else if (strcmp(name, "delete") == 0)
        py_op_delete(c);
    else if (strcmp(name, "list") == 0)
        py_op_list(c);
    else
        task_fail(c, TASK_ERROR, "ProtocolError", "unknown op '%s'", name);
}

static json_t *py_rt_run_task(runtime *base, const json_t *task, ippc_blobs *task_blobs,
                              ippc_blobs *result_blobs)
{
    py_runtime *rt = (py_runtime *)base;
    PyEval_RestoreThread(rt->idle);
    rt->idle = NULL;
    atomic_store(&rt->interrupt, 0);
    if (PyErr_CheckSignals() < 0) /* a signal of an earlier interrupt: now a no-op */
        PyErr_Clear();
    task_ctx c;
    if (task_start(&c, base, &rt->interrupt, task, task_blobs, result_blobs, &rt->out))
        run_op(&c);
    if (PyErr_Occurred()) /* an op left one behind: it must not leak into the next task */
        PyErr_Clear();
    json_t *res = task_finish(&c, &rt->out);
    rt->idle = PyEval_SaveThread();
    return res;
}

/* ------------------------------------------------------------ new / free */

static void py_rt_free(runtime *base);

/* The interpreter, once per process; 0 or -1 with err. */
static int py_start(py_runtime *rt, ippc_error *err)
{
    setenv("OPENBLAS_NUM_THREADS", "1", 0);
    setenv("OMP_NUM_THREADS", "1", 0);
    if (PyImport_AppendInittab("_ippc", ippc_module_init) < 0)
        return ippc_error_set(err, ERR_INTERNAL, "cannot register the _ippc module");
    /* Ours: `from mpi4py import MPI` finds the built-in module, which waits
     * the yielding way and polls the interrupt flag.  (Collective when MPI
     * is initialised: every rank registers at this point of its start.) */
    if (!use_real_mpi4py) {
        pympi_set_interrupt(&rt->interrupt);
        if (pympi_register() < 0)
            return ippc_error_set(err, ERR_INTERNAL, "cannot register the mpi4py.MPI module");
    }
#if defined(__SANITIZE_ADDRESS__)
    /* Under AddressSanitizer Python allocates with malloc (as its docs
     * advise), so LeakSanitizer sees Python objects and what they point to
     * (a NumPy array's received bytes). */
    PyPreConfig pre;
    PyPreConfig_InitPythonConfig(&pre);
    pre.allocator = PYMEM_ALLOCATOR_MALLOC;
    PyStatus pst = Py_PreInitialize(&pre);
    if (PyStatus_Exception(pst))
        return ippc_error_set(err, ERR_INTERNAL, "cannot start Python: %s",
                              pst.err_msg ? pst.err_msg : "?");
#endif
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0; /* SIGINT/SIGTERM stay the engine's */
    config.parse_argv = 0;
    PyStatus st = PyConfig_SetString(&config, &config.program_name, L"ippc-engine");
    if (!PyStatus_Exception(st))
        st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st))
        return ippc_error_set(err, ERR_INTERNAL, "cannot start Python: %s",
                              st.err_msg ? st.err_msg : "?");
    char why[512];
    if (use_real_mpi4py && pympi_real_check(why, sizeof why) < 0)
        return ippc_error_set(err, ERR_INVALID, "--real-mpi4py: %s", why);
    if (pyvalue_open() < 0 || pyplugin_open() < 0) {
        pyvalue_error_from_python(err, "cannot import numpy (apt-get install python3-numpy)");
        return -1;
    }
    PyObject *code = Py_CompileString(boot_source, "<ippc>", Py_file_input);
    rt->boot = code ? PyImport_ExecCodeModule("_ippc_boot", code) : NULL;
    Py_XDECREF(code);
    PyObject *main = rt->boot ? PyImport_AddModule("__main__") : NULL; /* borrowed */
    rt->ns = main ? PyModule_GetDict(main) : NULL;
    if (!rt->ns) {
        pyvalue_error_from_python(err, "cannot set up the Python runtime");
        return -1;
    }
    Py_INCREF(rt->ns);
    rt->baseline = PyDict_Copy(rt->ns);
    rt->kernels = PyDict_New();
    if (!rt->baseline || !rt->kernels) {
        pyvalue_error_from_python(err, "cannot set up the Python runtime");
        return -1;
    }
    return 0;
}

static runtime *py_rt_new(int rank, int size, ippc_error *err)
{
    /* Once per process: NumPy cannot be started again after a finalize. */
    static int started;
    if (started || Py_IsInitialized()) {
        ippc_error_set(err, ERR_INTERNAL, "one Python runtime per process");
        return NULL;
    }
    started = 1;
    py_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    rt->base.cls = &runtime_python_class;
    rt->rank = rank;
    rt->size = size;
    rt->signo = interrupt_signal();
    rt->thread = pthread_self();
    rt->world = MPI_COMM_NULL;
    atomic_init(&rt->interrupt, 0);
    atomic_init(&rt->armed, 0);
    py_runtime_current = rt;
    if (py_start(rt, err) < 0) {
        py_rt_free(&rt->base);
        return NULL;
    }
    /* Every rank in this order: both are collective. */
    if (lmpi_active() && MPI_Comm_dup(MPI_COMM_WORLD, &rt->world) != MPI_SUCCESS) {
        ippc_error_set(err, ERR_INTERNAL, "cannot duplicate MPI_COMM_WORLD");
        py_rt_free(&rt->base);
        return NULL;
    }
    rt->fan = fanout_new(&rt->interrupt);
    if (!rt->fan) {
        ippc_error_set(err, ERR_INTERNAL, "cannot set up the fan-out communicators");
        py_rt_free(&rt->base);
        return NULL;
    }
    rt->idle = PyEval_SaveThread();
    atomic_store(&rt->armed, 1);
    return &rt->base;
}

/* Ends the interpreter, before MPI_Finalize: mpi4py.MPI frees its
 * communicators and lets go of the MPI progress thread then (pympi.h).
 * Threads a task started are not waited for (threading's shutdown hook is
 * replaced): a forgotten non-daemon thread must not keep a stopping engine
 * alive. */
static void py_finish(py_runtime *rt)
{
    if (rt->idle)
        PyEval_RestoreThread(rt->idle);
    rt->idle = NULL;
    atomic_store(&rt->interrupt, 0);
    PyErr_Clear();
    Py_CLEAR(rt->kernels);
    Py_CLEAR(rt->baseline);
    Py_CLEAR(rt->boot);
    Py_CLEAR(rt->ns);
    PyRun_SimpleString("import sys\n"
                       "if 'threading' in sys.modules:\n"
                       "    sys.modules['threading']._shutdown = lambda: None\n");
    Py_FinalizeEx();
    /* Python put the interrupt signal back to its default (terminate). */
    signal(rt->signo, SIG_IGN);
}

static void py_rt_free(runtime *base)
{
    py_runtime *rt = (py_runtime *)base;
    atomic_store(&rt->armed, 0);
    fanout_free(rt->fan);
    if (rt->world != MPI_COMM_NULL)
        MPI_Comm_free(&rt->world);
    if (Py_IsInitialized())
        py_finish(rt);
    taskout_free(&rt->out);
    py_runtime_current = NULL;
    free(rt);
}

static void py_rt_set_stdout_sink(runtime *base, runtime_stdout_sink sink, void *arg)
{
    py_runtime *rt = (py_runtime *)base;
    rt->out.sink = sink;
    rt->out.sink_arg = arg;
}

/* Any thread, async-signal-safe: an atomic store and pthread_kill. */
static void py_rt_interrupt(runtime *base)
{
    py_runtime *rt = (py_runtime *)base;
    atomic_store(&rt->interrupt, 1);
    if (atomic_load(&rt->armed))
        pthread_kill(rt->thread, rt->signo);
}

const runtime_class runtime_python_class = {
    .name = "python",
    .kind = RUNTIME_PYTHON,
    .create = py_rt_new,
    .destroy = py_rt_free,
    .run_task = py_rt_run_task,
    .set_stdout_sink = py_rt_set_stdout_sink,
    .interrupt = py_rt_interrupt,
};
