/* pympi.h — `from mpi4py import MPI` in the engine's Python runtime: a
 * built-in module with mpi4py's names and semantics for the calls MPI users
 * make (docs/mpi4py.md lists what exists and what does not), backed by the
 * engine's MPICH and the yielding waits of lmpi.h.
 *
 * The host (the engine, or a test program) initialises MPI itself with
 * MPI_Init_thread(MPI_THREAD_MULTIPLE) before Python; the module never calls
 * MPI_Init or MPI_Finalize, and MPI.Is_initialized() etc. report the truth.
 *
 * Order of calls, all from the thread that runs Python (the one that called
 * MPI_Init_thread):
 *   pympi_set_interrupt(&flag);   any time
 *   pympi_register();             before Py_Initialize
 *   Py_Initialize(); ... import mpi4py.MPI as often as the user likes ...
 *
 * Interrupts: every wait of the module polls *flag with the GIL released;
 * when it becomes non-zero the wait raises KeyboardInterrupt.  A send or a
 * collective that MPI already started cannot be cancelled: its buffers are
 * kept until MPI completes it, and (as the Lua module does, lmpi.h) an
 * interrupted collective leaves its communicator "pending" on this rank:
 * until the other ranks complete it, a new collective on that communicator
 * raises MPI.Exception (ERR_PENDING) at once instead of hanging out of step.
 * A receive waits in a matched probe, so an interrupted receive leaves no
 * trace in MPI.
 */
#ifndef IPPC_ENGINE_PYMPI_H
#define IPPC_ENGINE_PYMPI_H

#include <stdatomic.h>
#include <stddef.h>

/* Adds the built-in modules `mpi4py` (a package) and `mpi4py.MPI` to
 * Python's init table (PyImport_AppendInittab), so both `from mpi4py import
 * MPI` and `import mpi4py.MPI` find them.  When MPI is initialised this also
 * duplicates MPI_COMM_WORLD and MPI_COMM_SELF for MPI.COMM_WORLD and
 * MPI.COMM_SELF: a collective call over MPI_COMM_WORLD, so every rank calls
 * it at the same point of its start-up.  And, as mpi4py does, it sets
 * MPI_ERRORS_RETURN on MPI_COMM_WORLD and MPI_COMM_SELF: MPICH reports the
 * errors of MPI_Test there, and they must become Python exceptions, not
 * abort the job (so the host's own calls on MPI_COMM_WORLD must check
 * their return codes).  Call at most once per process,
 * before Py_Initialize.  0, or -1 when the table or MPI refused. */
int pympi_register(void);

/* The flag every wait polls (NULL: waits cannot be interrupted).  It must
 * outlive the interpreter; the module only reads it. */
void pympi_set_interrupt(const atomic_int *flag);

/* For the engine option --real-mpi4py: the host then does not call
 * pympi_register and lets `import mpi4py` find an installed mpi4py.  Call
 * after Py_Initialize, with the GIL held.  0 when an mpi4py whose MPI
 * extension is linked to MPICH (libmpich) is importable; otherwise -1 and
 * why (for the user: "no mpi4py is installed", "mpi4py at PATH is built
 * for another MPI (libmpi.so.40)") in why[why_len].  Nothing is imported
 * but the pure-Python package mpi4py itself: loading an mpi4py built for
 * Open MPI into an MPICH process would break it. */
int pympi_real_check(char *why, size_t why_len);

#endif
