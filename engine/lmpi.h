/* lmpi.h — the `mpi` Lua module: collectives over MPI_COMM_WORLD.
 *
 * mpi.rank(), mpi.size(), mpi.barrier(), mpi.allreduce(x [, op]),
 * mpi.bcast(obj [, root]), mpi.wtime().  allreduce takes a number (integers
 * reduce as MPI_INT64_T, floats as MPI_DOUBLE) or an nd array (elementwise,
 * no Lua tables involved); op is "sum" (default), "prod", "min" or "max".
 * bcast sends nil, booleans, numbers, strings, nd arrays and tables (tables
 * travel as JSON + blobs, see luavalue.h).
 *
 * Waiting: every collective is started in its nonblocking form and waited on
 * by lmpi_wait (MPI_Test + sched_yield, then ~10 us sleeps), never by MPI's
 * own spinning wait: oversubscribed ranks stay fast (PLATFORM.md) and the
 * loop notices the runtime's interrupt flag.  An interrupted collective
 * raises the Lua error "interrupted".  MPI cannot cancel a collective, so the
 * request is parked with its buffers kept alive until it completes; until
 * the other ranks finish that collective, MPI_COMM_WORLD is out of step on
 * this rank (the next collective would match the abandoned one).
 *
 * Without MPI (not initialised, or finalised) the module behaves as a
 * single rank: rank 0 of 1, collectives return their input.
 *
 * Threads: the lua_State's thread; that thread must be allowed to call MPI.
 */
#ifndef IPPC_ENGINE_LMPI_H
#define IPPC_ENGINE_LMPI_H

#include <stdatomic.h>

#include <lua.h>
#include <mpi.h>

/* Pushes the module table.  interrupt (may be NULL) is polled by every wait;
 * it must outlive the lua_State. */
int lmpi_open(lua_State *L, atomic_int *interrupt);

/* lmpi_open(L, NULL), for luaL_requiref. */
int luaopen_mpi(lua_State *L);

/* Waits for req the yielding way.  0 when it completed; -1 when *interrupt
 * became non-zero first (req is then still active). */
int lmpi_wait(MPI_Request *req, const atomic_int *interrupt);

#endif
