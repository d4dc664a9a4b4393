/* pympi_impl.h — what the pympi*.c files share; not for the rest of the
 * engine.  Include it first (Python.h must come before system headers).
 *
 *   pympi.c        the modules, constants, MPI.Exception, module functions,
 *                  waiting, parking of interrupted operations
 *   pympi_types.c  MPI.Datatype and MPI.Op, buffer message specs
 *   pympi_comm.c   MPI.Comm / MPI.Intracomm: attributes, Barrier, Split,
 *                  Dup, Free, and the method table of every part
 *   pympi_coll.c   buffer collectives (Bcast ... Alltoall, Gatherv ...)
 *   pympi_obj.c    pickle-based lower-case collectives
 *   pympi_p2p.c    point-to-point (buffer and pickle), MPI.Request,
 *                  MPI.Status
 *   pympi_real.c   the --real-mpi4py check
 *
 * Threads: everything runs with the GIL held (any Python thread), except
 * the waits, which release it and touch no Python object.  The parked list
 * and the communicator states are guarded by the GIL; the list of lazy
 * object irecvs (pympi_p2p.c) by its own mutex, since every wait matches
 * them without the GIL.  The progress thread (lmpi.c) touches none of it.
 *
 * Ownership: every byte MPI may still touch after a Python exception (an
 * interrupt) belongs to a pympi_op — buffer views of user objects and
 * owned Python objects (pickles, receive storage).  An interrupted op is
 * parked with its request and released once MPI completes it.
 */
#ifndef IPPC_ENGINE_PYMPI_IMPL_H
#define IPPC_ENGINE_PYMPI_IMPL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdatomic.h>

#include <mpi.h>

#include "lmpi.h"
#include "pympi.h"

/* Casts a METH_VARARGS | METH_KEYWORDS function for a PyMethodDef. */
#define PYMPI_KW(f) ((PyCFunction)(void (*)(void))(f))

/* ---- communicators (pympi_comm.c) */

/* A communicator object and the parked operations that used it share an
 * lmpi_commstate (lmpi.h: lmpi_commstate_new, lmpi_commstate_release). */

typedef struct pympi_comm {
    PyObject_HEAD lmpi_commstate *cs; /* NULL: MPI.COMM_NULL (or freed) */
    int predefined;                   /* COMM_WORLD, COMM_SELF: Free refuses */
} pympi_comm;

extern PyTypeObject pympi_comm_type;      /* MPI.Comm */
extern PyTypeObject pympi_intracomm_type; /* MPI.Intracomm */
/* A new Intracomm owning one reference to cs (NULL: COMM_NULL of type Comm). */
PyObject *pympi_comm_new(lmpi_commstate *cs, int predefined);
/* Readies Comm and Intracomm (method table included) and adds them to m. */
int pympi_comm_types_init(PyObject *m);
/* tp_getattro of every MPI type: AttributeError naming what exists. */
PyObject *pympi_getattro(PyObject *self, PyObject *name);

/* What every communication method starts with: the usable state of self
 * (raises MPI.Exception ERR_COMM when it is COMM_NULL); reaps parked ops;
 * raises KeyboardInterrupt when the interrupt flag is already set, and
 * (collective) MPI.Exception ERR_PENDING when an interrupted collective is
 * still pending on it.  NULL with an exception set. */
lmpi_commstate *pympi_begin(PyObject *self, int collective, const char *what);

/* ---- operations and waiting (pympi.c) */

enum { PYMPI_OP_VIEWS = 4 };

typedef struct pympi_op {
    Py_buffer views[PYMPI_OP_VIEWS];
    int nviews;
    PyObject *keep; /* a list of objects MPI reads or writes; may be NULL */
    void *raw;      /* PyMem_RawMalloc'd receive storage; may be NULL */
} pympi_op;

/* Takes ownership of view (a filled Py_buffer); -1 + exception when full. */
int pympi_op_view(pympi_op *op, Py_buffer *view);
/* Keeps obj (a new reference is taken); -1 + exception. */
int pympi_op_keep(pympi_op *op, PyObject *obj);
/* Releases everything (GIL held); op is empty afterwards. */
void pympi_op_clear(pympi_op *op);

/* Waits for *req with the GIL released.  0 when it completed (status
 * filled unless NULL).  -1 with an exception: MPI.Exception for an MPI
 * error; KeyboardInterrupt when interrupted — then *req and op's contents
 * are parked (op left empty), counted as a pending collective on cs when
 * collective. */
int pympi_wait(lmpi_commstate *cs, MPI_Request *req, MPI_Status *status, pympi_op *op,
               int collective);
/* lmpi_poll(step, arg) with the GIL released and the interrupt flag: 0,
 * -1 interrupted, or an MPI error code (nothing raised). */
int pympi_poll(lmpi_step step, void *arg);
/* Waits in a matched probe (GIL released).  0 found; -1 + exception
 * (MPI.Exception, or KeyboardInterrupt: nothing to park). */
int pympi_probe(lmpi_commstate *cs, int source, int tag, MPI_Message *msg, MPI_Status *status);
/* Parks req with op's contents (op left empty). */
void pympi_park(lmpi_commstate *cs, MPI_Request req, pympi_op *op, int collective);
/* Frees parked operations that MPI has completed. */
void pympi_reap(void);
/* 1 when the interrupt flag is set. */
int pympi_interrupted(void);

/* Raises MPI.Exception for rc (an MPI error code) and returns NULL. */
PyObject *pympi_raise(int rc);
/* Raises MPI.Exception for error class/code rc with a message of ours. */
PyObject *pympi_raise_msg(int rc, const char *fmt, ...);
/* 0 when rc is MPI_SUCCESS, else -1 with MPI.Exception raised. */
int pympi_check(int rc);
extern PyObject *pympi_exception_type; /* MPI.Exception */

/* ---- datatypes, ops and buffer messages (pympi_types.c) */

typedef struct pympi_datatype {
    PyObject_HEAD MPI_Datatype type;
} pympi_datatype;
extern PyTypeObject pympi_datatype_type;

typedef enum pympi_opkind {
    PYMPI_SUM,
    PYMPI_PROD,
    PYMPI_MAX,
    PYMPI_MIN,
    PYMPI_LAND,
    PYMPI_LOR,
    PYMPI_LXOR,
    PYMPI_BAND,
    PYMPI_BOR,
    PYMPI_BXOR,
    PYMPI_MAXLOC,
    PYMPI_MINLOC,
    PYMPI_REPLACE,
    PYMPI_NO_OP,
    PYMPI_OP_NULL
} pympi_opkind;

typedef struct pympi_opobj {
    PyObject_HEAD MPI_Op op;
    pympi_opkind kind;
} pympi_opobj;
extern PyTypeObject pympi_op_type;

/* Adds the Datatype and Op types and their predefined instances to module m. */
int pympi_types_init(PyObject *m);
/* The MPI datatype of a buffer format (struct/NumPy syntax, NULL = bytes);
 * MPI_DATATYPE_NULL when there is none. */
MPI_Datatype pympi_format_type(const char *format);
/* The MPI op of an Op object, or MPI_OP_NULL + TypeError. */
MPI_Op pympi_op_of(PyObject *op);
/* Applies op to two Python objects as mpi4py does (SUM: x + y, MAX: y if
 * y > x else x, ...); op may also be any callable, or NULL for SUM.  New
 * reference or NULL. */
PyObject *pympi_op_apply(PyObject *op, PyObject *x, PyObject *y);

/* MPI.IN_PLACE (a singleton). */
extern PyObject *pympi_in_place;

/* A parsed buffer message: the forms of mpi4py, buf | [buf, datatype] |
 * [buf, count, datatype] | [buf, (count, displ), datatype] |
 * [buf, count, displ, datatype] (datatype: an MPI.Datatype or a typechar
 * such as 'd'), plus MPI.IN_PLACE and None where a call allows them. */
typedef struct pympi_msg {
    void *buf;
    MPI_Count count; /* per block: elements for each rank of a collective */
    MPI_Datatype type;
    int in_place, none;
} pympi_msg;

enum {
    PYMPI_MSG_WRITE = 1,    /* MPI writes the buffer */
    PYMPI_MSG_IN_PLACE = 2, /* MPI.IN_PLACE is allowed */
    PYMPI_MSG_NONE = 4      /* None is allowed (an unused buffer) */
};

/* Parses obj into msg for `blocks` equal blocks (1, or the communicator's
 * size for a root's gather/scatter buffer); the buffer view goes to op.
 * -1 with mpi4py's exceptions (TypeError for a non-buffer, ValueError for
 * a count that does not fit, BufferError for a read-only receive buffer). */
int pympi_msg_parse(PyObject *obj, int flags, MPI_Count blocks, pympi_op *op, pympi_msg *msg);

/* A vector message (Gatherv, Scatterv, Allgatherv, Alltoallv): buf |
 * [buf, datatype] | [buf, counts] | [buf, counts, datatype] |
 * [buf, (counts, displs), datatype] | [buf, counts, displs, datatype], one
 * count and displacement (in elements) per rank; without displacements
 * the blocks follow each other, an int is a stride (block i at i *
 * stride); without counts
 * the buffer's items are split as evenly as they go (the first items %
 * blocks blocks one more), as in mpi4py.  counts/displs live in op. */
typedef struct pympi_msgv {
    void *buf;
    MPI_Count *counts;
    MPI_Aint *displs;
    MPI_Datatype type;
    int in_place;
} pympi_msgv;
int pympi_msgv_parse(PyObject *obj, int flags, int blocks, pympi_op *op, pympi_msgv *msg);

/* ---- method tables of the parts (the Comm type concatenates them) */
extern PyMethodDef pympi_coll_methods[]; /* pympi_coll.c */
extern PyMethodDef pympi_obj_methods[];  /* pympi_obj.c */
extern PyMethodDef pympi_p2p_methods[];  /* pympi_p2p.c */

/* ---- pickling and point-to-point (pympi_obj.c, pympi_p2p.c) */

/* pickle.dumps(obj, HIGHEST_PROTOCOL): a new bytes object, or NULL. */
PyObject *pympi_dumps(PyObject *obj);
/* pickle.loads over len bytes at data; NULL + exception. */
PyObject *pympi_loads(const char *data, Py_ssize_t len);
int pympi_obj_init(void);

typedef struct pympi_status {
    PyObject_HEAD MPI_Status status;
} pympi_status;
extern PyTypeObject pympi_status_type;
extern PyTypeObject pympi_request_type;
/* Lets the unmatched object irecvs match their messages, oldest first
 * (called by every wait round; no GIL needed). */
void pympi_irecv_service(void);
/* Adds Request and Status to module m. */
int pympi_p2p_init(PyObject *m);
/* Copies st into a Status object (or does nothing for None / NULL); -1 +
 * TypeError for anything else. */
int pympi_status_fill(PyObject *status_obj, const MPI_Status *st);

#endif
