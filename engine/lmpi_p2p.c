/* lmpi_p2p.c — point-to-point: send, recv, sendrecv, isend, irecv and their
 * request objects (req:wait(), req:test(), mpi.waitall).
 *
 * A value is one message: its header and payload sent together through a
 * two-block hindexed datatype from MPI_BOTTOM (no copy of the array into a
 * send buffer).  Receiving is a matched probe (MPI_Improbe, polled the
 * yielding way), then MPI_Imrecv into a buffer of exactly the message's
 * size; so a value of any size arrives whole, and an interrupted recv has
 * not touched MPI.  An irecv's matching therefore happens when it is first
 * tested or waited on (or at once if the message is already there), not
 * when it is posted: two irecvs for the same source and tag match messages
 * in the order they are waited on.
 */
#include "lmpi_impl.h"

#include <sched.h>
#include <string.h>
#include <time.h>

#define HDR_BYTES (sizeof(int64_t) * LMPI_HDR)

/* ---------------------------------------------------------- sending */

/* Starts sending p (header at hdr, in op memory) to dest. */
static void start_send(lua_State *L, MPI_Comm comm, const int64_t *hdr, const lmpi_packed *p,
                       int dest, int tag, MPI_Request *req, const char *what)
{
    MPI_Count lens[2] = {(MPI_Count)HDR_BYTES, (MPI_Count)p->len};
    MPI_Aint addrs[2];
    MPI_Get_address(hdr, &addrs[0]);
    MPI_Get_address(p->payload ? (const void *)p->payload : (const void *)hdr, &addrs[1]);
    MPI_Datatype type;
    lmpi_check(L, MPI_Type_create_hindexed_c(p->len ? 2 : 1, lens, addrs, MPI_BYTE, &type), what);
    lmpi_check(L, MPI_Type_commit(&type), what);
    int rc = MPI_Isend_c(MPI_BOTTOM, 1, type, dest, tag, comm, req);
    MPI_Type_free(&type); /* MPI keeps it while the send needs it */
    lmpi_check(L, rc, what);
}

/* Packs the value at idx into op; returns the header's copy in op memory. */
static int64_t *pack_message(lua_State *L, int idx, lmpi_op *op, lmpi_packed *p)
{
    lmpi_pack(L, idx, op, p);
    int64_t *hdr = lmpi_op_alloc(L, op, HDR_BYTES);
    memcpy(hdr, p->hdr, HDR_BYTES);
    return hdr;
}

static void raise_if_unsendable(lua_State *L, const lmpi_packed *p, const char *what)
{
    if (lmpi_packed_is_error(p->hdr))
        lmpi_unpack(L, p->hdr, p->payload, p->len, NULL, what);
}

/* mpi.send(obj, dest [, tag=0]) */
static int l_send(lua_State *L)
{
    lmpi_call c = lmpi_begin(L, 0);
    int x = c.arg, dest = lmpi_check_rank(L, &c, x + 1, -1, 0, "dest");
    int tag = lmpi_check_tag(L, x + 2, 0, 0);
    lua_settop(L, x + 2);
    lmpi_op *op = lmpi_op_push(L);
    int opi = lua_gettop(L);
    lmpi_packed pk;
    int64_t *hdr = pack_message(L, x, op, &pk);
    MPI_Request req;
    start_send(L, c.cs->comm, hdr, &pk, dest, tag, &req, "send");
    lmpi_wait_op(L, &c, &req, opi, 0, "send");
    raise_if_unsendable(L, &pk, "send");
    return 0;
}

/* ---------------------------------------------------------- receiving */

/* Polls a matched probe the yielding way: 0 found, -1 interrupted, or an
 * MPI error code. */
static int probe_wait(const lmpi_call *c, int source, int tag, MPI_Message *msg, MPI_Status *status)
{
    for (unsigned spins = 0;; spins++) {
        int flag = 0;
        int rc = MPI_Improbe(source, tag, c->cs->comm, &flag, msg, status);
        if (rc != MPI_SUCCESS)
            return rc;
        if (flag)
            return 0;
        if (c->st->interrupt && atomic_load(c->st->interrupt))
            return -1;
        if (spins < 50) {
            sched_yield();
        } else {
            struct timespec ts = {0, 10000};
            nanosleep(&ts, NULL);
        }
    }
}

/* Starts receiving the matched message into a new buffer owned by op. */
static nd_buffer *start_mrecv(lua_State *L, lmpi_op *op, MPI_Message *msg, const MPI_Status *status,
                              MPI_Request *req, size_t *len, const char *what)
{
    MPI_Count n = 0;
    lmpi_check(L, MPI_Get_count_c(status, MPI_BYTE, &n), what);
    if (n < (MPI_Count)HDR_BYTES) {
        unsigned char drop[HDR_BYTES]; /* smaller than a header: received and dropped */
        MPI_Mrecv_c(drop, n, MPI_BYTE, msg, MPI_STATUS_IGNORE);
        luaL_error(L, "mpi.%s: received a message that is not an mpi module value (%I bytes)", what,
                   (LUAI_UACINT)n);
    }
    *len = (size_t)n;
    nd_buffer *buf = lmpi_recv_buffer(L, op, *len);
    lmpi_check(L, MPI_Imrecv_c(nd_buffer_data(buf), n, MPI_BYTE, msg, req), what);
    return buf;
}

/* Pushes the value of a received message (header, then payload). */
static void unpack_message(lua_State *L, nd_buffer *buf, size_t len, const char *what)
{
    const unsigned char *data = nd_buffer_data(buf);
    int64_t hdr[LMPI_HDR];
    memcpy(hdr, data, HDR_BYTES);
    lmpi_unpack(L, hdr, data + HDR_BYTES, len - HDR_BYTES, buf, what);
}

/* Receives one message on the stack's behalf: value, source, tag. */
static int recv_into(lua_State *L, const lmpi_call *c, int source, int tag, const char *what)
{
    MPI_Message msg;
    MPI_Status status;
    int rc = probe_wait(c, source, tag, &msg, &status);
    if (rc < 0) {
        lua_pushliteral(L, "interrupted");
        return lua_error(L);
    }
    lmpi_check(L, rc, what);
    lmpi_op *op = lmpi_op_push(L);
    int opi = lua_gettop(L);
    MPI_Request req;
    size_t len;
    nd_buffer *buf = start_mrecv(L, op, &msg, &status, &req, &len, what);
    lmpi_wait_op(L, c, &req, opi, 0, what);
    unpack_message(L, buf, len, what);
    lua_pushinteger(L, status.MPI_SOURCE);
    lua_pushinteger(L, status.MPI_TAG);
    return 3;
}

/* mpi.recv([source=any [, tag=any]]) -> obj, source, tag */
static int l_recv(lua_State *L)
{
    lmpi_call c = lmpi_begin(L, 0);
    int source = lmpi_check_rank(L, &c, c.arg, MPI_ANY_SOURCE, 1, "source");
    int tag = lmpi_check_tag(L, c.arg + 1, 0, 1);
    return recv_into(L, &c, source, tag, "recv");
}

/* mpi.sendrecv(obj, dest [, source=any [, sendtag=0 [, recvtag=any]]]) -> obj */
static int l_sendrecv(lua_State *L)
{
    lmpi_call c = lmpi_begin(L, 0);
    int x = c.arg, dest = lmpi_check_rank(L, &c, x + 1, -1, 0, "dest");
    int source = lmpi_check_rank(L, &c, x + 2, MPI_ANY_SOURCE, 1, "source");
    int sendtag = lmpi_check_tag(L, x + 3, 0, 0), recvtag = lmpi_check_tag(L, x + 4, 0, 1);
    lua_settop(L, x + 4);
    lmpi_op *op = lmpi_op_push(L);
    int opi = lua_gettop(L);
    lmpi_packed pk;
    int64_t *hdr = pack_message(L, x, op, &pk);
    MPI_Request sreq;
    start_send(L, c.cs->comm, hdr, &pk, dest, sendtag, &sreq, "sendrecv");
    MPI_Message msg;
    MPI_Status status;
    int rc = probe_wait(&c, source, recvtag, &msg, &status);
    if (rc != 0) { /* the send is in flight: park it with its buffers */
        lmpi_wait_op(L, &c, &sreq, opi, 0, "sendrecv"); /* raises while interrupted */
        lmpi_check(L, rc, "sendrecv");
    }
    lmpi_op *rop = lmpi_op_push(L);
    int ropi = lua_gettop(L);
    MPI_Request rreq;
    size_t len;
    nd_buffer *buf = start_mrecv(L, rop, &msg, &status, &rreq, &len, "sendrecv");
    lmpi_wait_op(L, &c, &rreq, ropi, 0, "sendrecv");
    lmpi_wait_op(L, &c, &sreq, opi, 0, "sendrecv");
    raise_if_unsendable(L, &pk, "sendrecv");
    unpack_message(L, buf, len, "sendrecv");
    return 1;
}

/* ---------------------------------------------------------- requests */

enum { REQ_SEND, REQ_RECV };
enum { RS_PROBING, RS_ACTIVE, RS_DONE };

typedef struct lmpi_request {
    int kind, state;
    MPI_Request req;
    lmpi_op *op; /* buffers of the message */
    lmpi_commstate *cs;
    lmpi_state *st;
    int source, tag; /* irecv: what to match */
    nd_buffer *buf;  /* irecv: the message (in op) */
    size_t len;
    lmpi_packed pk; /* isend: to raise for an unsendable value */
} lmpi_request;

static lmpi_request *req_check(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, LMPI_REQUEST_MT);
}

/* Drops the request's resources; an active MPI request is parked. */
static void req_release(lmpi_request *r)
{
    if (r->state == RS_ACTIVE) { /* parked: counted there from now on */
        lmpi_park(r->cs, r->req, r->op, 0);
        lmpi_outstanding_add(-1);
    } else {
        lmpi_op_free(r->op);
    }
    r->op = NULL;
    r->state = RS_DONE;
    lmpi_commstate_release(r->cs);
    r->cs = NULL;
}

static int req_gc(lua_State *L)
{
    lmpi_request *r = req_check(L, 1);
    if (r->cs)
        req_release(r);
    return 0;
}

static lmpi_request *req_push(lua_State *L, const lmpi_call *c, int kind)
{
    lmpi_request *r = lua_newuserdatauv(L, sizeof *r, 1);
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->state = RS_DONE;
    luaL_setmetatable(L, LMPI_REQUEST_MT);
    r->op = calloc(1, sizeof *r->op);
    if (!r->op)
        luaL_error(L, "mpi: out of memory");
    r->cs = c->cs;
    r->cs->refs++;
    r->st = c->st;
    return r;
}

/* mpi.isend(obj, dest [, tag=0]) -> request */
static int l_isend(lua_State *L)
{
    lmpi_call c = lmpi_begin(L, 0);
    int x = c.arg, dest = lmpi_check_rank(L, &c, x + 1, -1, 0, "dest");
    int tag = lmpi_check_tag(L, x + 2, 0, 0);
    lua_settop(L, x + 2);
    lmpi_request *r = req_push(L, &c, REQ_SEND);
    int64_t *hdr = pack_message(L, x, r->op, &r->pk);
    start_send(L, c.cs->comm, hdr, &r->pk, dest, tag, &r->req, "isend");
    r->state = RS_ACTIVE;
    lmpi_outstanding_add(1);
    return 1;
}

/* Tries to match an irecv's message once; starts its receive if found. */
static void req_try_match(lua_State *L, lmpi_request *r, int wait)
{
    MPI_Message msg;
    MPI_Status status;
    int flag = 1, rc;
    if (wait) {
        lmpi_call c = {r->st, r->cs, 0};
        rc = probe_wait(&c, r->source, r->tag, &msg, &status);
        if (rc < 0) {
            lua_pushliteral(L, "interrupted");
            lua_error(L);
        }
    } else {
        rc = MPI_Improbe(r->source, r->tag, r->cs->comm, &flag, &msg, &status);
    }
    lmpi_check(L, rc, "irecv");
    if (!flag)
        return;
    r->buf = start_mrecv(L, r->op, &msg, &status, &r->req, &r->len, "irecv");
    r->state = RS_ACTIVE;
    lmpi_outstanding_add(1);
}

/* mpi.irecv([source=any [, tag=any]]) -> request */
static int l_irecv(lua_State *L)
{
    lmpi_call c = lmpi_begin(L, 0);
    int source = lmpi_check_rank(L, &c, c.arg, MPI_ANY_SOURCE, 1, "source");
    int tag = lmpi_check_tag(L, c.arg + 1, 0, 1);
    lmpi_request *r = req_push(L, &c, REQ_RECV);
    r->source = source;
    r->tag = tag;
    r->state = RS_PROBING;
    req_try_match(L, r, 0);
    return 1;
}

/* Completes r (waiting or only testing); 1 when done.  A finished irecv's
 * value is kept as the request's user value. */
static int req_progress(lua_State *L, int idx, int wait)
{
    lmpi_request *r = req_check(L, idx);
    if (r->state == RS_PROBING)
        req_try_match(L, r, wait);
    if (r->state == RS_ACTIVE) {
        int done = 0, rc;
        if (wait) {
            rc = lmpi_wait(&r->req, r->st->interrupt);
            if (rc < 0) {
                lua_pushliteral(L, "interrupted");
                lua_error(L);
            }
            done = 1;
        } else {
            rc = MPI_Test(&r->req, &done, MPI_STATUS_IGNORE);
        }
        if (!done && rc == MPI_SUCCESS)
            return 0;
        r->state = RS_DONE; /* an MPI error completes the request too */
        lmpi_outstanding_add(-1);
        lmpi_check(L, rc, r->kind == REQ_SEND ? "isend" : "irecv");
        if (r->kind == REQ_RECV) {
            unpack_message(L, r->buf, r->len, "irecv");
            lua_setiuservalue(L, idx, 1);
        } else {
            raise_if_unsendable(L, &r->pk, "isend");
        }
    }
    return r->state == RS_DONE;
}

/* req:wait() -> the received value (irecv) or nil (isend) */
static int req_wait(lua_State *L)
{
    req_progress(L, 1, 1);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

/* req:test() -> done, value */
static int req_test(lua_State *L)
{
    int done = req_progress(L, 1, 0);
    lua_pushboolean(L, done);
    lua_getiuservalue(L, 1, 1);
    return 2;
}

/* mpi.waitall({req, ...}) -> {value, ...} */
static int l_waitall(lua_State *L)
{
    int t = lua_toboolean(L, lua_upvalueindex(2)) ? 1 : 2; /* mpi.waitall or comm:waitall */
    luaL_checktype(L, t, LUA_TTABLE);
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    lua_createtable(L, (int)(n < INT32_MAX ? n : 0), 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, t, i);
        req_check(L, -1);
        req_progress(L, lua_gettop(L), 1);
        lua_getiuservalue(L, -1, 1);
        lua_rawseti(L, -3, i);
        lua_pop(L, 1);
    }
    return 1;
}

static int req_tostring(lua_State *L)
{
    lmpi_request *r = req_check(L, 1);
    static const char *const states[] = {"waiting for a match", "active", "complete"};
    lua_pushfstring(L, "mpi request (%s, %s)", r->kind == REQ_SEND ? "isend" : "irecv",
                    states[r->state]);
    return 1;
}

void lmpi_p2p_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"wait", req_wait},
        {"test", req_test},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, LMPI_REQUEST_MT)) {
        lua_pushcfunction(L, req_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, req_tostring);
        lua_setfield(L, -2, "__tostring");
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

const luaL_Reg lmpi_p2p_funcs[] = {
    {"send", l_send},   {"recv", l_recv},   {"sendrecv", l_sendrecv},
    {"isend", l_isend}, {"irecv", l_irecv}, {"waitall", l_waitall},
    {NULL, NULL},
};
