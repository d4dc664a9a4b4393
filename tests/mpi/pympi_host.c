/* pympi_host.c — a minimal host for the Python MPI module, started by
 * tests/mpi/run.py under `mpiexec.mpich -n 4`: it does what the engine does
 * before Python runs (MPI_Init_thread MULTIPLE, pympi_set_interrupt,
 * pympi_register, Py_Initialize) and runs one Python script.
 *
 *   pympi_host SCRIPT [ARGS...]   runs SCRIPT as __main__; exit 0 unless it raised
 *   pympi_host --twice SCRIPT     the same with a new interpreter the second time
 *                                 (Py_FinalizeEx, Py_Initialize in between)
 *   pympi_host --real-check       prints pympi_real_check's verdict (no MPI module
 *                                 registered, as with the engine's --real-mpi4py)
 *
 * The built-in module `_pympi_host` gives scripts the engine's side of an
 * interrupt: interrupt_after(seconds) sets the flag from another thread,
 * interrupt_now() at once, clear_interrupt() clears it (as the engine does
 * when a task starts).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mpi.h>

#include "pympi.h"

static atomic_int interrupt_flag;

static void *interrupter(void *arg)
{
    double seconds = *(double *)arg;
    free(arg);
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&interrupt_flag, 1);
    return NULL;
}

static PyObject *host_interrupt_after(PyObject *m, PyObject *arg)
{
    double *seconds = malloc(sizeof *seconds);
    if (!seconds)
        return PyErr_NoMemory();
    *seconds = PyFloat_AsDouble(arg);
    if (*seconds < 0 || PyErr_Occurred()) {
        free(seconds);
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "seconds must be >= 0");
    }
    pthread_t t;
    if (pthread_create(&t, NULL, interrupter, seconds) != 0) {
        free(seconds);
        return PyErr_Format(PyExc_OSError, "pthread_create failed");
    }
    pthread_detach(t);
    return Py_NewRef(Py_None);
}

static PyObject *host_interrupt_now(PyObject *m, PyObject *unused)
{
    atomic_store(&interrupt_flag, 1);
    return Py_NewRef(Py_None);
}

static PyObject *host_clear_interrupt(PyObject *m, PyObject *unused)
{
    atomic_store(&interrupt_flag, 0);
    return Py_NewRef(Py_None);
}

static PyMethodDef host_methods[] = {
    {"interrupt_after", host_interrupt_after, METH_O, "Sets the interrupt flag after seconds."},
    {"interrupt_now", host_interrupt_now, METH_NOARGS, "Sets the interrupt flag."},
    {"clear_interrupt", host_clear_interrupt, METH_NOARGS, "Clears the interrupt flag."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef host_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_pympi_host",
    .m_size = -1,
    .m_methods = host_methods,
};

static PyObject *host_init(void)
{
    return PyModule_Create(&host_module);
}

static int run_script(int argc, char **argv)
{
    PyObject *sys_argv = PyList_New(0);
    for (int i = 1; sys_argv && i < argc; i++) {
        PyObject *s = PyUnicode_DecodeFSDefault(argv[i]);
        if (!s || PyList_Append(sys_argv, s) < 0)
            Py_CLEAR(sys_argv);
        Py_XDECREF(s);
    }
    if (!sys_argv || PySys_SetObject("argv", sys_argv) < 0) {
        Py_XDECREF(sys_argv);
        PyErr_Print();
        return 1;
    }
    Py_DECREF(sys_argv);
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    /* closeit=1: the file is closed by Python. */
    int rc = PyRun_SimpleFileExFlags(f, argv[1], 1, NULL);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: pympi_host SCRIPT [ARGS...] | --real-check\n");
        return 2;
    }
    int real_check = strcmp(argv[1], "--real-check") == 0;
    int runs = strcmp(argv[1], "--twice") == 0 ? 2 : 1;
    if (runs == 2) {
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    int provided = 0;
    if (!real_check &&
        MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "pympi_host: MPI_Init_thread failed\n");
        return 1;
    }
    pympi_set_interrupt(&interrupt_flag);
    if ((!real_check && pympi_register() < 0) ||
        PyImport_AppendInittab("_pympi_host", host_init) < 0) {
        fprintf(stderr, "pympi_host: registering the modules failed\n");
        return 1;
    }
    int rc = 0;
    for (int run = 0; run < runs && rc == 0; run++) {
        Py_InitializeEx(0);
        if (real_check) {
            char why[512] = "";
            rc = pympi_real_check(why, sizeof why) == 0 ? 0 : 1;
            printf("%s\n", rc == 0 ? "real mpi4py: ok" : why);
        } else {
            rc = run_script(argc, argv);
        }
        fflush(stdout);
        if (Py_FinalizeEx() < 0)
            rc = 1;
    }
    if (!real_check)
        MPI_Finalize();
    return rc;
}
