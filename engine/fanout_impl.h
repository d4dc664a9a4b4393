/* fanout_impl.h — what fanout.c (state, communicators, control protocol,
 * agreement) shares with fanout_ops.c (push, scatter, gather); not for the
 * rest of the engine.  See fanout.h for the design.
 */
#ifndef IPPC_ENGINE_FANOUT_IMPL_H
#define IPPC_ENGINE_FANOUT_IMPL_H

#include <stdint.h>

#include <jansson.h>
#include <mpi.h>

#include "fanout.h"
#include "lmpi_impl.h"
#include "task.h"

/* One data op as it runs on this engine. */
typedef struct fan_op {
    fanout *f;
    task_ctx *c;
    const fan_ns *ns;
    const char *what; /* "push", "scatter", "gather" */
    const char *name; /* scatter/gather: the variable; push: NULL */
    int64_t id;
    int *ranks; /* participants: world ranks, ascending */
    int n;
    int root;   /* world rank of the root */
    int me, rc; /* indices of this engine and of the root among the participants */
    int is_root;
    uint64_t digest;    /* of this engine's message (fan_digest) */
    lmpi_commstate *cs; /* after fan_begin: the participants' communicator */
} fan_op;

/* Parses the "fanout" member into op (ranks are malloc'd: fan_op_clear);
 * 0, or -1 with a ProtocolError recorded. */
int fan_op_init(fan_op *op, fanout *f, task_ctx *c, const fan_ns *ns, const char *what);
void fan_op_clear(fan_op *op);
/* The digest of a canonical description of the op (what, id, ranks, root and
 * the op's own fields in desc), which every participant must share. */
void fan_digest(fan_op *op, json_t *desc);

/* The control protocol (fanout.h).  0: every participant committed and
 * op->cs is their communicator; -1: the op ended on this engine (aborted or
 * failed, recorded in op->c). */
int fan_begin(fan_op *op);

/* The agreement before a bulk transfer: every participant passes whether its
 * task is still ok (op->c->status).  0 when all are; otherwise the lowest
 * failing participant's error is broadcast, every participant's task has
 * failed (the others with FanoutError) and -1 is returned. */
int fan_settle(fan_op *op);
/* The message part of fan_settle, when every participant already knows that
 * participant `who` (an index) failed.  Returns -1. */
int fan_fail_from(fan_op *op, int who);
/* Waits (the yielding way; interrupts are too late here, see fanout.h) for a
 * collective started with MPI status rc.  0, or -1 with an MPIError
 * recorded and the communicator dropped from the cache. */
int fan_wait(fan_op *op, int rc, MPI_Request *req);

/* Records an out-of-memory error for bytes. */
void fan_oom(fan_op *op, size_t bytes);

#endif
