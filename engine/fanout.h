/* fanout.h — data ops that MPI fans out: push, scatter and gather over the
 * engines of one MPI job, with the bytes crossing the controller link once
 * (to or from one rank, the root) and moving between the engines with MPI
 * collectives.  The wire messages are specified in common/proto.h ("Data
 * ops fanned out by MPI"); this is the engine's side.
 *
 * Communicators.  fanout_new duplicates MPI_COMM_WORLD three times (with
 * MPI_Comm_idup and the yielding wait): one carries the control protocol
 * below (point-to-point only), one is the parent of MPI_Comm_create_group
 * (nothing else uses it), and one is the communicator of data ops over all
 * ranks.  The collectives of a data op run on a communicator of exactly
 * its participants: that third duplicate for all ranks, for a subset one
 * made with MPI_Comm_create_group (collective over the subset only, and
 * called only once every participant is known to be there).  Those are
 * kept in a cache keyed by the rank set (FANOUT_CACHE entries, fewer with
 * the environment variable IPPC_FANOUT_CACHE=1..FANOUT_CACHE, which tests
 * use to make ranks evict differently; the least recently used one is
 * freed when a new one is needed).  So user MPI traffic (the `mpi` module
 * has its own duplicate) never meets these messages.
 *
 * Control protocol (the part that may wait for other engines, and the only
 * part an interrupt can stop).  Before any collective, the participants of
 * data op ID agree that they are all in it, point-to-point with tags made
 * from ID:
 *   every non-root sends ARRIVE(ID, digest of its message, generation of its
 *   cached communicator for the rank set) to the root and waits for GO;
 *   the root, once every ARRIVE is in, sends GO; each non-root answers ACK;
 *   once every ACK is in, the root sends COMMIT(create a new communicator or
 *   use the cached one: the cached one only when every participant reports
 *   the same one).
 * Before it has sent ACK a non-root may leave: an interrupt makes it send
 * WITHDRAW and end its task "aborted"; the root, seeing WITHDRAW instead of
 * ACK (now or when it arrives later), sends ABORT to all, and they end
 * "aborted" too, saying which rank was interrupted.  An interrupted root
 * sends ABORT to all.  A digest that differs from the root's (the
 * controller sent the engines different messages) ends the op on every
 * participant with a ProtocolError.  Messages left over from abandoned ops
 * (a WITHDRAW never read, an ABORT to a rank that had left) are drained at
 * the next op with the same peer.  After the COMMIT every participant is
 * known to be in the exchange, so it runs to its end (bounded by the
 * transfer); an interrupt arriving then is too late for that op, which
 * completes normally.  So a communicator is never left with a half-done
 * collective by an interrupt, and none needs to be thrown away for one;
 * an MPI error inside the exchange (which MPI reports on one rank only)
 * drops that rank's cached communicator, and the next op then creates a
 * fresh one on every participant (the generations differ).
 *
 * Errors.  A rank that cannot do its part (no such variable, an unsendable
 * value, a bad count, out of memory) still takes part in every step: the
 * ranks exchange an ok flag (MPI_Iallreduce) before each bulk transfer,
 * and when one failed, that rank's error is broadcast so that every
 * participant ends its task: the failing rank with its own error, the
 * others with "FanoutError".  No failure leaves a participant waiting.
 *
 * Threads: the runtime's thread (the one that runs tasks) only.
 */
#ifndef IPPC_ENGINE_FANOUT_H
#define IPPC_ENGINE_FANOUT_H

#include <stdatomic.h>
#include <stddef.h>

#include <jansson.h>

#include "value.h"

#define FANOUT_CACHE 16

typedef struct fanout fanout;
struct task_ctx;

/* New state; interrupt is polled while waiting for other engines.  When MPI
 * is initialised this duplicates MPI_COMM_WORLD (collective: every rank
 * calls it in the same order, as runtime_new).  Without MPI the state
 * refuses every op.  NULL when out of memory or when MPI fails. */
fanout *fanout_new(const atomic_int *interrupt);
void fanout_free(fanout *f);

/* A variable as a gather sends it: an array of 1 or more dims as its
 * contiguous bytes, anything else as a wire value (skeleton + its blobs). */
typedef struct fan_value {
    int is_array;
    nd_dtype dtype;
    int ndim;
    size_t shape[ND_MAX_DIMS];
    const void *data; /* is_array: bytes elements, row-major, valid until release */
    size_t bytes;
    json_t *skel; /* !is_array */
    ippc_blobs blobs;
    void *hold[2]; /* the runtime's, until release */
} fan_value;

/* What a data op needs of the runtime's namespace (one per runtime kind:
 * fanout_lua.c, pyruntime_ns.c).  None of these may raise or unwind: they
 * run between steps of an exchange that other engines wait for. */
typedef struct fan_ns {
    void *self;
    /* Sets the names of ns (skeletons over blobs, whose arrays it may adopt)
     * all at once, or none and a failure recorded in c. */
    void (*assign)(void *self, struct task_ctx *c, const json_t *ns, ippc_blobs *blobs);
    /* Reads the variable name into out (zeroed by the caller): 0, or -1 with
     * the failure recorded in c (NameError, TypeError). */
    int (*read)(void *self, struct task_ctx *c, const char *name, fan_value *out);
    /* Lets go of what read filled in (also after a failed read). */
    void (*release)(void *self, fan_value *v);
} fan_ns;

/* Runs the task of c, which has a "fanout" member (op push, scatter or
 * gather) over the namespace ns; the outcome is recorded in c. */
void op_fanout(const fan_ns *ns, struct task_ctx *c, fanout *f);

#endif
