/* fanout.c — the fan-out state: its communicators and their cache, the
 * control protocol that starts every data op, and the agreement step
 * before bulk transfers (see fanout.h).  The ops themselves are in
 * fanout_ops.c.
 *
 * Control messages are four int64 words {kind, id, a, b} on the control
 * duplicate, tagged with the op id modulo 2^tag_bits (MPI_TAG_UB allows 28
 * bits with MPICH), so messages of different ops never match each other's
 * receives.  A participant's messages to another are sent in op order, so
 * at the start of op ID, the first message waiting from a peer is either
 * older (left over from an abandoned op: received and dropped), this op's,
 * or a later op's (left for it).  Ops are told apart by tag distance, which
 * holds while no participant is more than 2^(tag_bits-1) ops behind
 * another; the id inside the message catches the rest.
 *
 * Every wait here is lmpi_wait, the `mpi` module's yielding wait: with the
 * runtime's interrupt flag while an engine may still leave (before its ACK,
 * or the root before its COMMIT), without it afterwards.
 */
#include "fanout_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonout.h"

enum { FAN_ARRIVE = 1, FAN_GO, FAN_ACK, FAN_WITHDRAW, FAN_COMMIT, FAN_ABORT };
/* ABORT's a: why; b: the world rank concerned */
enum { FAN_WHY_INTERRUPTED = 1, FAN_WHY_MISMATCH, FAN_WHY_ERROR };

#define FAN_ENAME 32
#define FAN_ERRMSG 512

/* A cached communicator of one rank set. */
typedef struct fan_comm {
    int *ranks; /* world ranks, ascending; NULL: a free slot */
    int n;
    lmpi_commstate *cs;
    int64_t gen;   /* id of the op that created it; -1 for the start-up duplicate */
    uint64_t used; /* last use (fanout.clock) */
} fan_comm;

struct fanout {
    const atomic_int *interrupt;
    int active; /* MPI was initialised when the state was made */
    int rank, size;
    lmpi_commstate *ctl; /* control messages: point-to-point only */
    MPI_Comm grp;        /* parent of MPI_Comm_create_group; nothing else */
    fan_comm cache[FANOUT_CACHE];
    int cache_cap; /* entries used: FANOUT_CACHE, or IPPC_FANOUT_CACHE */
    uint64_t clock;
    int tag_bits;
};

/* ------------------------------------------------------------ state */

/* Duplicates MPI_COMM_WORLD with the nonblocking call and the yielding wait
 * (a blocking duplicate spins, PLATFORM.md). */
static int dup_world(MPI_Comm *out)
{
    MPI_Request req;
    int rc = MPI_Comm_idup(MPI_COMM_WORLD, out, &req);
    if (rc == MPI_SUCCESS)
        rc = lmpi_wait(&req, NULL);
    if (rc == MPI_SUCCESS)
        MPI_Comm_set_errhandler(*out, MPI_ERRORS_RETURN);
    return rc;
}

static void cache_drop(fan_comm *e)
{
    lmpi_commstate_release(e->cs);
    free(e->ranks);
    memset(e, 0, sizeof *e);
}

fanout *fanout_new(const atomic_int *interrupt)
{
    fanout *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->interrupt = interrupt;
    f->grp = MPI_COMM_NULL;
    /* IPPC_FANOUT_CACHE: a whole number 1..FANOUT_CACHE; anything else, the default */
    const char *cap = getenv("IPPC_FANOUT_CACHE");
    char *end = NULL;
    long want = cap ? strtol(cap, &end, 10) : 0;
    f->cache_cap = cap && end != cap && *end == '\0' && want >= 1 && want <= FANOUT_CACHE
                       ? (int)want
                       : FANOUT_CACHE;
    if (!lmpi_active())
        return f;
    MPI_Comm_rank(MPI_COMM_WORLD, &f->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &f->size);
    MPI_Comm ctl = MPI_COMM_NULL, all = MPI_COMM_NULL;
    int rc = dup_world(&ctl);
    if (rc == MPI_SUCCESS)
        rc = dup_world(&f->grp);
    if (rc == MPI_SUCCESS)
        rc = dup_world(&all);
    if (rc == MPI_SUCCESS && !(f->ctl = lmpi_commstate_new(ctl, 1)))
        rc = MPI_ERR_NO_MEM;
    if (rc == MPI_SUCCESS)
        ctl = MPI_COMM_NULL; /* the state owns it */
    fan_comm *e = &f->cache[0];
    if (rc == MPI_SUCCESS && !(e->ranks = malloc(sizeof(int) * (size_t)f->size)))
        rc = MPI_ERR_NO_MEM;
    if (rc == MPI_SUCCESS && !(e->cs = lmpi_commstate_new(all, 1)))
        rc = MPI_ERR_NO_MEM;
    if (rc != MPI_SUCCESS) {
        if (ctl != MPI_COMM_NULL)
            MPI_Comm_free(&ctl);
        if (all != MPI_COMM_NULL)
            MPI_Comm_free(&all);
        free(e->ranks);
        e->ranks = NULL;
        fanout_free(f);
        return NULL;
    }
    for (int i = 0; i < f->size; i++)
        e->ranks[i] = i;
    e->n = f->size;
    e->gen = -1;
    int *ub = NULL, flag = 0;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag);
    long long tags = flag && ub ? (long long)*ub + 1 : 32768; /* the standard's minimum */
    f->tag_bits = 1;
    while (f->tag_bits < 30 && (1LL << (f->tag_bits + 1)) <= tags)
        f->tag_bits++;
    f->active = 1;
    return f;
}

void fanout_free(fanout *f)
{
    if (!f)
        return;
    lmpi_reap();
    for (int i = 0; i < FANOUT_CACHE; i++)
        if (f->cache[i].ranks)
            cache_drop(&f->cache[i]);
    /* Leftovers of abandoned ops (MPI would warn about them at finalize). */
    for (int flag = 1; f->ctl && lmpi_active() && flag;) {
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, f->ctl->comm, &flag, &st) != MPI_SUCCESS)
            break;
        int64_t junk[4];
        if (flag)
            MPI_Recv(junk, 4, MPI_INT64_T, st.MPI_SOURCE, st.MPI_TAG, f->ctl->comm,
                     MPI_STATUS_IGNORE);
    }
    lmpi_commstate_release(f->ctl);
    if (f->grp != MPI_COMM_NULL && lmpi_active())
        MPI_Comm_free(&f->grp);
    free(f);
}

static fan_comm *cache_find(fanout *f, const int *ranks, int n)
{
    for (int i = 0; i < FANOUT_CACHE; i++) {
        fan_comm *e = &f->cache[i];
        if (e->ranks && e->n == n && memcmp(e->ranks, ranks, sizeof(int) * (size_t)n) == 0)
            return e;
    }
    return NULL;
}

/* Keeps cs (one more reference) as the communicator of ranks, in a free
 * slot or in place of the least recently used one. */
static void cache_put(fanout *f, const int *ranks, int n, lmpi_commstate *cs, int64_t gen)
{
    fan_comm *slot = NULL;
    for (int i = 0; i < f->cache_cap && !slot; i++)
        if (!f->cache[i].ranks)
            slot = &f->cache[i];
    if (!slot) {
        slot = &f->cache[0];
        for (int i = 1; i < f->cache_cap; i++)
            if (f->cache[i].used < slot->used)
                slot = &f->cache[i];
    }
    int *copy = malloc(sizeof(int) * (size_t)n);
    if (!copy)
        return; /* not cached: the next op over these ranks makes a new one */
    if (slot->ranks)
        cache_drop(slot);
    memcpy(copy, ranks, sizeof(int) * (size_t)n);
    cs->refs++;
    *slot = (fan_comm){copy, n, cs, gen, ++f->clock};
}

/* ------------------------------------------------------------ the op */

static int json_rank(const json_t *v, int size)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= size)
        return -1;
    return (int)json_integer_value(v);
}

int fan_op_init(fan_op *op, fanout *f, task_ctx *c, const fan_ns *ns, const char *what)
{
    memset(op, 0, sizeof *op);
    op->f = f;
    op->c = c;
    op->ns = ns;
    op->what = what;
    if (!f || !f->active || !lmpi_active()) {
        task_fail(c, TASK_ERROR, "FanoutError", "%s: MPI is not initialised on this engine", what);
        return -1;
    }
    const json_t *fo = json_object_get(c->task, "fanout");
    const json_t *id = json_object_get(fo, "id");
    const json_t *ranks = json_object_get(fo, "ranks");
    size_t n = json_array_size(ranks);
    if (!json_is_object(fo) || !json_is_integer(id) || json_integer_value(id) < 1 || n == 0 ||
        n > (size_t)f->size) {
        task_fail(c, TASK_ERROR, "ProtocolError",
                  "%s: 'fanout' needs an integer 'id' >= 1 and a list 'ranks' of 1..%d ranks", what,
                  f->size);
        return -1;
    }
    op->id = (int64_t)json_integer_value(id);
    op->n = (int)n;
    op->ranks = malloc(sizeof(int) * n);
    if (!op->ranks) {
        task_fail(c, TASK_ERROR, "MemoryError", "%s: out of memory", what);
        return -1;
    }
    op->me = op->rc = -1;
    int root = json_rank(json_object_get(fo, "root"), f->size);
    for (size_t i = 0; i < n; i++) {
        int r = json_rank(json_array_get(ranks, i), f->size);
        if (r < 0 || (i > 0 && r <= op->ranks[i - 1])) {
            task_fail(c, TASK_ERROR, "ProtocolError",
                      "%s: 'fanout.ranks' must be distinct world ranks (0..%d) in ascending order",
                      what, f->size - 1);
            return -1;
        }
        op->ranks[i] = r;
        if (r == f->rank)
            op->me = (int)i;
        if (r == root)
            op->rc = (int)i;
    }
    if (op->rc < 0 || op->me < 0) {
        task_fail(c, TASK_ERROR, "ProtocolError",
                  "%s: 'fanout.root' must be one of 'fanout.ranks', and so must this engine "
                  "(rank %d)",
                  what, f->rank);
        return -1;
    }
    op->root = root;
    op->is_root = op->me == op->rc;
    return 0;
}

void fan_op_clear(fan_op *op)
{
    lmpi_commstate_release(op->cs);
    op->cs = NULL;
    free(op->ranks);
    op->ranks = NULL;
}

void fan_digest(fan_op *op, json_t *desc)
{
    json_t *ranks = json_array();
    for (int i = 0; ranks && i < op->n; i++)
        json_array_append_new(ranks, json_integer(op->ranks[i]));
    json_t *all = json_pack("[s, I, o, i, o]", op->what, (json_int_t)op->id, ranks, op->root,
                            desc ? desc : json_null());
    char *text = all ? jsonout_dumps(all, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(all);
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *p = text ? text : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    /* Without memory for the text, a digest no other engine makes: the op
     * then ends as a mismatch on every participant instead of hanging. */
    op->digest = text ? h : h ^ (uint64_t)(op->f->rank + 1);
    free(text);
}

void fan_oom(fan_op *op, size_t bytes)
{
    if (op->c->status == TASK_OK)
        task_fail(op->c, TASK_ERROR, "MemoryError", "%s: out of memory for %zu bytes", op->what,
                  bytes);
}

static void fail_mpi(fan_op *op, int rc)
{
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS || len <= 0)
        len = snprintf(msg, sizeof msg, "MPI error %d", rc);
    msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING] = 0;
    task_fail(op->c, TASK_ERROR, "MPIError", "%s: %s", op->what, msg);
}

/* ------------------------------------------------------------ control messages */

static int fan_tag(const fan_op *op)
{
    return (int)((uint64_t)op->id & ((1ULL << op->f->tag_bits) - 1));
}

/* Sends {kind, id, a, b} to dest without waiting for it: a small message
 * completes at once; otherwise the `mpi` module's parking keeps it until
 * it does. */
static void fan_send(fan_op *op, int dest, int64_t kind, int64_t a, int64_t b)
{
    lmpi_op *m = calloc(1, sizeof *m);
    if (!m)
        return; /* the peer waits until it is interrupted */
    m->cell[0] = kind;
    m->cell[1] = op->id;
    m->cell[2] = a;
    m->cell[3] = b;
    MPI_Request req;
    if (MPI_Isend(m->cell, 4, MPI_INT64_T, dest, fan_tag(op), op->f->ctl->comm, &req) !=
        MPI_SUCCESS) {
        lmpi_op_free(m);
        return;
    }
    int done = 0;
    if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done)
        lmpi_op_free(m);
    else
        lmpi_park(op->f->ctl, req, m, 0);
}

static void fan_send_all(fan_op *op, int64_t kind, int64_t a, int64_t b)
{
    for (int i = 0; i < op->n; i++)
        if (i != op->me)
            fan_send(op, op->ranks[i], kind, a, b);
}

/* Receives this op's next message from src into msg.  0; -1 when
 * interruptible and the interrupt came first (nothing was received); an
 * MPI error code (> 0). */
static int fan_recv(fan_op *op, int src, int64_t *msg, int interruptible)
{
    for (;;) {
        MPI_Request req;
        int rc = MPI_Irecv(msg, 4, MPI_INT64_T, src, fan_tag(op), op->f->ctl->comm, &req);
        if (rc != MPI_SUCCESS)
            return rc;
        rc = lmpi_wait(&req, interruptible ? op->f->interrupt : NULL);
        if (rc == -1) {
            MPI_Status st;
            int cancelled = 0;
            MPI_Cancel(&req);
            MPI_Wait(&req, &st); /* a cancelled receive completes at once */
            MPI_Test_cancelled(&st, &cancelled);
            if (cancelled)
                return -1;
        } else if (rc != MPI_SUCCESS) {
            return rc;
        }
        if (msg[1] == op->id)
            return 0;
        /* an abandoned op's message whose tag came round again: dropped */
    }
}

/* Drops what participants sent for ops before this one (see the top). */
static void fan_drain(fan_op *op)
{
    unsigned mask = (1u << op->f->tag_bits) - 1, half = 1u << (op->f->tag_bits - 1);
    unsigned cur = (unsigned)fan_tag(op);
    for (int i = 0; i < op->n; i++) {
        if (i == op->me)
            continue;
        for (;;) {
            int flag = 0;
            MPI_Status st;
            if (MPI_Iprobe(op->ranks[i], MPI_ANY_TAG, op->f->ctl->comm, &flag, &st) !=
                    MPI_SUCCESS ||
                !flag)
                break;
            unsigned behind = (cur - (unsigned)st.MPI_TAG) & mask;
            if (behind == 0 || behind >= half)
                break; /* this op's or a later one's */
            int64_t junk[4];
            MPI_Recv(junk, 4, MPI_INT64_T, op->ranks[i], st.MPI_TAG, op->f->ctl->comm,
                     MPI_STATUS_IGNORE);
        }
    }
}

static int fan_interrupted(const fan_op *op)
{
    return op->f->interrupt && atomic_load(op->f->interrupt);
}

/* This engine was interrupted before it committed. */
static int stop_interrupted(fan_op *op)
{
    task_fail(op->c, TASK_ABORTED, "Aborted", "task interrupted");
    return -1;
}

/* An ABORT from the root. */
static int stop_aborted(fan_op *op, const int64_t *m)
{
    if (m[2] == FAN_WHY_MISMATCH)
        task_fail(op->c, TASK_ERROR, "ProtocolError",
                  "%s: the engines got different task messages for data op %lld (rank %lld's "
                  "differs from the root's)",
                  op->what, (long long)op->id, (long long)m[3]);
    else if (m[2] == FAN_WHY_ERROR)
        task_fail(op->c, TASK_ERROR, "FanoutError",
                  "%s: data op %lld failed on rank %lld (an MPI error)", op->what,
                  (long long)op->id, (long long)m[3]);
    else
        task_fail(op->c, TASK_ABORTED, "Aborted",
                  "%s: the data operation was interrupted on rank %lld", op->what, (long long)m[3]);
    return -1;
}

/* The root ends the op for every participant (and itself). */
static int root_abort(fan_op *op, int64_t why, int who, int rc)
{
    fan_send_all(op, FAN_ABORT, why, who);
    if (rc > 0) {
        fail_mpi(op, rc);
        return -1;
    }
    int64_t m[4] = {FAN_ABORT, op->id, why, who};
    return who == op->f->rank && why == FAN_WHY_INTERRUPTED ? stop_interrupted(op)
                                                            : stop_aborted(op, m);
}

/* After the commit: the participants' communicator, the cached one or a new
 * one (made by all of them now, with MPI_Comm_create_group). */
static int take_comm(fan_op *op, fan_comm *e, int create)
{
    fanout *f = op->f;
    if (!create && e) {
        e->used = ++f->clock;
        op->cs = e->cs;
        op->cs->refs++;
        return 0;
    }
    if (e)
        cache_drop(e);
    MPI_Group world = MPI_GROUP_NULL, group = MPI_GROUP_NULL;
    MPI_Comm comm = MPI_COMM_NULL;
    int rc = MPI_Comm_group(f->grp, &world);
    if (rc == MPI_SUCCESS)
        rc = MPI_Group_incl(world, op->n, op->ranks, &group);
    /* Collective over the participants only, and all of them are here. */
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_create_group(f->grp, group, fan_tag(op), &comm);
    if (group != MPI_GROUP_NULL)
        MPI_Group_free(&group);
    if (world != MPI_GROUP_NULL)
        MPI_Group_free(&world);
    if (rc != MPI_SUCCESS) {
        fail_mpi(op, rc);
        return -1;
    }
    op->cs = lmpi_commstate_new(comm, 1);
    if (!op->cs) {
        MPI_Comm_free(&comm);
        fan_oom(op, sizeof(lmpi_commstate));
        return -1;
    }
    cache_put(f, op->ranks, op->n, op->cs, op->id);
    return 0;
}

int fan_begin(fan_op *op)
{
    lmpi_reap();
    fan_drain(op);
    fan_comm *e = cache_find(op->f, op->ranks, op->n);
    int64_t gen = e ? e->gen : 0, m[4];
    int create, rc;
    if (op->is_root) {
        create = gen == 0;
        for (int i = 0; i < op->n; i++) {
            if (i == op->me)
                continue;
            if ((rc = fan_recv(op, op->ranks[i], m, 1)) != 0)
                return root_abort(op, rc > 0 ? FAN_WHY_ERROR : FAN_WHY_INTERRUPTED, op->f->rank,
                                  rc);
            if (m[0] != FAN_ARRIVE || (uint64_t)m[2] != op->digest)
                return root_abort(op, FAN_WHY_MISMATCH, op->ranks[i], 0);
            if (m[3] != gen)
                create = 1;
        }
        fan_send_all(op, FAN_GO, 0, 0);
        for (int i = 0; i < op->n; i++) {
            if (i == op->me)
                continue;
            if ((rc = fan_recv(op, op->ranks[i], m, 1)) != 0)
                return root_abort(op, rc > 0 ? FAN_WHY_ERROR : FAN_WHY_INTERRUPTED, op->f->rank,
                                  rc);
            if (m[0] == FAN_WITHDRAW)
                return root_abort(op, FAN_WHY_INTERRUPTED, op->ranks[i], 0);
            if (m[0] != FAN_ACK)
                return root_abort(op, FAN_WHY_MISMATCH, op->ranks[i], 0);
        }
        fan_send_all(op, FAN_COMMIT, create, 0);
    } else {
        fan_send(op, op->root, FAN_ARRIVE, (int64_t)op->digest, gen);
        rc = fan_recv(op, op->root, m, 1);
        if (rc == 0 && m[0] == FAN_ABORT)
            return stop_aborted(op, m);
        if (rc != 0 || m[0] != FAN_GO || fan_interrupted(op)) {
            fan_send(op, op->root, FAN_WITHDRAW, 0, 0); /* may leave: not committed yet */
            if (rc > 0)
                fail_mpi(op, rc);
            else if (rc == 0 && m[0] != FAN_GO)
                task_fail(op->c, TASK_ERROR, "ProtocolError",
                          "%s: unexpected control message %lld from the root", op->what,
                          (long long)m[0]);
            else
                stop_interrupted(op);
            return -1;
        }
        fan_send(op, op->root, FAN_ACK, 0, 0);
        /* Committed: the root is here and answers at once, so no interrupt. */
        if ((rc = fan_recv(op, op->root, m, 0)) != 0) {
            fail_mpi(op, rc);
            return -1;
        }
        if (m[0] == FAN_ABORT)
            return stop_aborted(op, m);
        if (m[0] != FAN_COMMIT) {
            task_fail(op->c, TASK_ERROR, "ProtocolError",
                      "%s: unexpected control message %lld from the root", op->what,
                      (long long)m[0]);
            return -1;
        }
        create = m[2] != 0;
    }
    return take_comm(op, e, create);
}

/* ------------------------------------------------------------ agreement */

int fan_wait(fan_op *op, int rc, MPI_Request *req)
{
    if (rc == MPI_SUCCESS)
        rc = lmpi_wait(req, NULL);
    if (rc == MPI_SUCCESS)
        return 0;
    fail_mpi(op, rc);
    /* This rank may be out of step on it now: the next op makes a new one. */
    fan_comm *e = cache_find(op->f, op->ranks, op->n);
    if (e && e->cs == op->cs)
        cache_drop(e);
    return -1;
}

int fan_fail_from(fan_op *op, int who)
{
    task_ctx *c = op->c;
    char msg[FAN_ERRMSG];
    memset(msg, 0, sizeof msg);
    if (op->me == who) {
        snprintf(msg, FAN_ENAME, "%s", c->ename);
        snprintf(msg + FAN_ENAME, FAN_ERRMSG - FAN_ENAME, "%s",
                 json_string_value(c->evalue) ? json_string_value(c->evalue) : "");
    }
    MPI_Request req;
    if (fan_wait(op, MPI_Ibcast(msg, FAN_ERRMSG, MPI_BYTE, who, op->cs->comm, &req), &req))
        return -1;
    msg[FAN_ENAME - 1] = msg[FAN_ERRMSG - 1] = 0;
    if (op->me != who && c->status == TASK_OK)
        task_fail(c, TASK_ERROR, "FanoutError", "%s%s%s%s: rank %d failed: %s: %s", op->what,
                  op->name ? " '" : "", op->name ? op->name : "", op->name ? "'" : "",
                  op->ranks[who], msg, msg + FAN_ENAME);
    return -1;
}

int fan_settle(fan_op *op)
{
    int mine = op->c->status == TASK_OK ? op->n : op->me, low = op->n;
    MPI_Request req;
    if (fan_wait(op, MPI_Iallreduce(&mine, &low, 1, MPI_INT, MPI_MIN, op->cs->comm, &req), &req))
        return -1;
    return low == op->n ? 0 : fan_fail_from(op, low);
}
