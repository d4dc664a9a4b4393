/* pympi_real.c — pympi_real_check (pympi.h): is an installed mpi4py built
 * for MPICH?  Its MPI extension is found without importing it
 * (importlib.util.find_spec) and its ELF dynamic section is read
 * (elfdeps.h) for the MPI library it needs: libmpich (MPICH) is accepted, anything else (Open
 * MPI's libmpi.so.40, ...) is named in the refusal.  Loading the wrong one
 * would put two MPI libraries in one process.
 */
#include "pympi_impl.h"

#include "elfdeps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads the whole file (at most 256 MiB); NULL on failure. */
static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char *data = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && n < (256L << 20) &&
        fseek(f, 0, SEEK_SET) == 0 && (data = malloc((size_t)n)) &&
        fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    (void)fclose(f); /* read-only: nothing to lose */
    *len = data ? (size_t)n : 0;
    return data;
}

/* The file of mpi4py.MPI as find_spec reports it: a new str, None when
 * there is no mpi4py, or NULL with an exception. */
static PyObject *mpi_extension_path(void)
{
    PyObject *util = PyImport_ImportModule("importlib.util");
    if (!util)
        return NULL;
    PyObject *spec = PyObject_CallMethod(util, "find_spec", "s", "mpi4py");
    if (spec && spec != Py_None) {
        Py_DECREF(spec);
        spec = PyObject_CallMethod(util, "find_spec", "s", "mpi4py.MPI");
    }
    Py_DECREF(util);
    if (!spec)
        return NULL;
    if (spec == Py_None)
        return spec;
    PyObject *origin = PyObject_GetAttrString(spec, "origin");
    Py_DECREF(spec);
    return origin;
}

int pympi_real_check(char *why, size_t why_len)
{
    PyObject *origin = mpi_extension_path();
    if (!origin) {
        PyErr_Clear();
        snprintf(why, why_len, "no usable mpi4py is installed (finding mpi4py.MPI failed)");
        return -1;
    }
    if (origin == Py_None || !PyUnicode_Check(origin)) {
        Py_DECREF(origin);
        snprintf(why, why_len, "no mpi4py is installed for this Python");
        return -1;
    }
    const char *path = PyUnicode_AsUTF8(origin);
    size_t len = 0;
    unsigned char *data = path ? read_file(path, &len) : NULL;
    char needed[1024];
    int rc = data ? elfdeps_needed(data, len, needed, sizeof needed) : -1;
    free(data);
    if (rc < 0) {
        snprintf(why, why_len, "mpi4py at %s: not a readable 64-bit shared library",
                 path ? path : "?");
    } else if (strstr(needed, "libmpich")) {
        rc = 0;
    } else {
        snprintf(why, why_len,
                 "mpi4py at %s is built for another MPI (it needs: %s), not MPICH (libmpich)", path,
                 needed[0] ? needed : "no MPI library");
        rc = -1;
    }
    PyErr_Clear();
    Py_DECREF(origin);
    return rc;
}
