/* lmpi.h — the `mpi` Lua module: MPI for the engine's Lua code, with the
 * argument order of mpi4py's lower-case (object) API.
 *
 *   mpi.rank(), mpi.size(), mpi.wtime(), mpi.barrier()
 *   mpi.bcast(obj [, root=0])            -> root's obj on every rank
 *   mpi.reduce(x [, op="sum" [, root=0]]) -> result on root, nil elsewhere
 *   mpi.allreduce(x [, op="sum"])         -> result on every rank
 *   mpi.gather(x [, root=0])              -> {x_0, ..., x_p-1} on root, nil elsewhere
 *   mpi.allgather(x)                      -> {x_0, ..., x_p-1} everywhere
 *   mpi.scatter(list [, root=0])          -> list[rank + 1] (list read on root only,
 *                                            it must have size() items)
 *   mpi.alltoall(list)                    -> {from rank 0, ..., from rank p-1}
 *   mpi.send(obj, dest [, tag=0]);  mpi.recv([source=any [, tag=any]]) -> obj, source, tag
 *   mpi.sendrecv(obj, dest [, source=any [, sendtag=0 [, recvtag=any]]]) -> obj
 *   mpi.isend(obj, dest [, tag]) / mpi.irecv([source [, tag]]) -> request;
 *   req:wait() -> obj (irecv) or nil; req:test() -> done, obj; mpi.waitall({req...})
 *   mpi.comm_split(color [, key=rank]) -> a communicator object with all of
 *   the above as methods (comm:allreduce(x), comm:rank(), ...), plus
 *   comm:free(); mpi.COMM_WORLD is the world as such an object.
 *
 * Values: reduce/allreduce take numbers (integers and floats may be mixed
 * across ranks: the result is a float if any rank's is), booleans (with
 * land/lor), sequences of numbers (elementwise) and nd arrays (elementwise,
 * as MPI's own types: every rank must pass the same dtype and element
 * count); op is "sum", "prod", "min", "max", "land" or "lor" (land/lor:
 * booleans, numbers with non-zero = true, or integer arrays).  The other
 * functions move any value: nil, booleans, numbers, strings, nd arrays
 * (their bytes go straight from the array to MPI and arrive as arrays
 * viewing the receive buffer — no Lua tables, no extra copies) and tables
 * (serialised as JSON + array blobs, see luavalue.h).  Functions, coroutines
 * and other userdata cannot be sent ("cannot send a function value" on every
 * rank of a collective, since the root tells the others).
 *
 * Communicators: the module's world is a duplicate of MPI_COMM_WORLD made
 * at lmpi_open (collective over all ranks), so user traffic never matches
 * the engine's own MPI calls; its error handler returns errors, which
 * become Lua errors ("mpi.recv: Message truncated ...") instead of aborting
 * the job.  comm_split is collective over the parent communicator.
 *
 * Waiting: every operation is started in its nonblocking form and waited on
 * by lmpi_wait (MPI_Test + sched_yield, then ~10 us sleeps), never by MPI's
 * own spinning wait: oversubscribed ranks stay fast (PLATFORM.md) and the
 * loop notices the runtime's interrupt flag.  recv/irecv wait in a matched
 * probe (MPI_Improbe) and only then receive: an interrupted recv leaves no
 * trace in MPI at all, and a message of any size is received whole.
 *
 * Interrupts (runtime_interrupt -> the task ends "aborted"): the wait raises
 * the Lua error "interrupted".  A send or collective that was started
 * cannot be cancelled in MPI, so it is parked: its buffers are kept until
 * MPI completes it, then freed.  For point-to-point that is all (the
 * message is delivered when the receiver asks for it).
 *
 * A mismatched collective (this rank called it, some other rank did not)
 * waits until it is interrupted (or the task's timeout ends it).  It stays
 * pending on this rank until the other ranks make their next call of a
 * collective on that communicator, which completes it (with this rank's
 * old contribution).  Until then every new collective on that communicator
 * raises on this rank at once: "mpi.bcast: an interrupted collective on
 * this communicator is still pending ...", instead of hanging out of step.
 * So after interrupting all engines the first collective they make can fail
 * on the ranks that were waiting (and carries stale data on the others);
 * the next one is in step again.  A collective whose kind differs on the
 * ranks (bcast against allreduce) is undefined in MPI; with the returning
 * error handler MPICH usually reports it as an error on some rank.
 *
 * Progress while idle: MPICH progresses only inside MPI calls, and an
 * operation that outlives its Lua call (a parked one, or an isend whose
 * request is kept in a variable across tasks) needs this rank's progress
 * for its peers to finish.  So while such operations exist a helper thread
 * runs MPI's progress engine every 1-10 ms (lmpi.c); it needs
 * MPI_THREAD_MULTIPLE (engine/main.c asks for it) and otherwise is not
 * started.
 *
 * Without MPI (not initialised, or finalised): rank() is 0, size() is 1,
 * every communication raises "mpi: MPI is not initialised".
 *
 * Threads: the lua_State's thread, which must be allowed to call MPI; plus
 * the progress helper above, which touches no request of that thread.
 */
#ifndef IPPC_ENGINE_LMPI_H
#define IPPC_ENGINE_LMPI_H

#include <stdatomic.h>

#include <lua.h>
#include <mpi.h>

/* Pushes the module table.  interrupt (may be NULL) is polled by every wait;
 * it must outlive the lua_State.  When MPI is initialised this duplicates
 * MPI_COMM_WORLD: a collective call, so every rank opens the module in the
 * same order. */
int lmpi_open(lua_State *L, atomic_int *interrupt);

/* lmpi_open(L, NULL), for luaL_requiref. */
int luaopen_mpi(lua_State *L);

/* Waits for req the yielding way.  0 when it completed; -1 when *interrupt
 * became non-zero first (req is then still active); an MPI error code (> 0)
 * when MPI_Test failed. */
int lmpi_wait(MPI_Request *req, const atomic_int *interrupt);
/* The same, filling *status (or MPI_STATUS_IGNORE) when req completes. */
int lmpi_wait_status(MPI_Request *req, MPI_Status *status, const atomic_int *interrupt);

/* The yielding loop itself, for waits that are not one request (a matched
 * probe, several requests): calls step(arg, &done) until it sets done
 * (returns 0), returns an MPI error (returned as is) or *interrupt becomes
 * non-zero (-1).  Between steps: sched_yield for ~50 rounds, then ~10 us
 * sleeps.  Called without any lock: step runs on the caller's thread. */
typedef int (*lmpi_step)(void *arg, int *done);
int lmpi_poll(lmpi_step step, void *arg, const atomic_int *interrupt);

/* The progress helper thread (see "Progress while idle" above), shared by
 * every MPI module of the engine (Lua's, Python's): each module acquires it
 * once when it starts using MPI and releases it when it goes; it stops
 * with the last release.  lmpi_outstanding_add(+1) for each operation that
 * must progress while no call of the module waits for it, (-1) when it
 * completed.  acquire/release: the thread that calls MPI for the runtime;
 * outstanding_add: any thread. */
void lmpi_progress_acquire(void);
void lmpi_progress_release(void);
void lmpi_outstanding_add(int delta);

/* 1 when MPI is initialised and not finalised (calls are allowed). */
int lmpi_active(void);

/* A communicator as every MPI module of the engine (Lua's, Python's) keeps
 * it: shared by the module's communicator object and the parked operations
 * (interrupted, not yet complete) that used it.  Not locked: each module
 * uses its own states on its runtime's thread only. */
typedef struct lmpi_commstate {
    MPI_Comm comm;
    int rank, size;
    int refs;
    int owned;   /* MPI_Comm_free it when the last reference goes */
    int pending; /* interrupted collectives not yet complete on this rank */
} lmpi_commstate;

/* A state for comm (errors returned, not fatal), one reference; owned: the
 * last release frees comm (if MPI is still active).  NULL when out of
 * memory (comm untouched). */
lmpi_commstate *lmpi_commstate_new(MPI_Comm comm, int owned);
/* Drops one reference; the last one frees the state. */
void lmpi_commstate_release(lmpi_commstate *cs);

/* Parked operations: a send or collective that was started cannot be
 * cancelled in MPI, so when an interrupt stops its wait the operation is
 * parked with its buffers (op) and a reference to its communicator state,
 * and release(op) runs once MPI_Test reports it complete (or failed).  A
 * parked collective counts in cs->pending until then.  Each MPI module
 * keeps its own lot and reaps it on the thread (and under the lock, such
 * as Python's GIL) that release needs; lmpi_outstanding_add counts parked
 * operations while they wait. */
typedef void (*lmpi_parked_release)(void *op);
typedef struct lmpi_parked {
    MPI_Request req;
    void *op;
    lmpi_parked_release release;
    lmpi_commstate *cs; /* with a reference; pending counted if collective */
    int collective;
} lmpi_parked;
typedef struct lmpi_parking {
    lmpi_parked *items;
    size_t count, cap;
} lmpi_parking;
/* Parks req with op; 0, or -1 when even the list cannot grow (nothing is
 * kept: the caller leaks op on purpose, as freeing memory MPI may still
 * write is worse). */
int lmpi_parking_add(lmpi_parking *lot, lmpi_commstate *cs, MPI_Request req, void *op,
                     lmpi_parked_release release, int collective);
/* Releases the parked operations that MPI has completed. */
void lmpi_parking_reap(lmpi_parking *lot);

/* The communicator of the comm object at idx, or of the module's world when
 * idx holds the mpi module's COMM_WORLD; 0 and *comm unset when the value is
 * not a communicator object. */
int lmpi_test_comm(lua_State *L, int idx, MPI_Comm *comm);
/* The module's world communicator (MPI_COMM_NULL without MPI). */
MPI_Comm lmpi_world(lua_State *L);

#endif
