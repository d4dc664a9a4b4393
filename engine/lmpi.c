/* lmpi.c — the `mpi` module's core (see lmpi.h): the module table,
 * communicator objects, operation arenas, the yielding wait and parking of
 * interrupted operations, and the small functions (rank, size, wtime,
 * barrier, comm_split).  Reductions are in lmpi_reduce.c, the other
 * collectives in lmpi_coll.c, point-to-point in lmpi_p2p.c, the value
 * format in lmpi_pack.c.
 *
 * The parked list is process-wide (one engine, one Lua state) and touched
 * only from the Lua state's thread.
 */
#include "lmpi_impl.h"

#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LMPI_SPINS_BEFORE_SLEEP 50
#define LMPI_SLEEP_NS 10000

static const char lmpi_state_key = 's';

/* ------------------------------------------------------------- waiting */

int lmpi_poll(lmpi_step step, void *arg, const atomic_int *interrupt)
{
    for (unsigned spins = 0;; spins++) {
        int done = 0;
        int rc = step(arg, &done);
        if (rc != MPI_SUCCESS)
            return rc;
        if (done)
            return 0;
        if (interrupt && atomic_load(interrupt))
            return -1;
        if (spins < LMPI_SPINS_BEFORE_SLEEP) {
            sched_yield();
        } else {
            struct timespec ts = {0, LMPI_SLEEP_NS};
            nanosleep(&ts, NULL);
        }
    }
}

typedef struct lmpi_test_arg {
    MPI_Request *req;
    MPI_Status *status;
} lmpi_test_arg;

static int lmpi_test_step(void *arg, int *done)
{
    lmpi_test_arg *t = arg;
    return MPI_Test(t->req, done, t->status);
}

int lmpi_wait_status(MPI_Request *req, MPI_Status *status, const atomic_int *interrupt)
{
    lmpi_test_arg t = {req, status};
    return lmpi_poll(lmpi_test_step, &t, interrupt);
}

int lmpi_wait(MPI_Request *req, const atomic_int *interrupt)
{
    return lmpi_wait_status(req, MPI_STATUS_IGNORE, interrupt);
}

int lmpi_active(void)
{
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    return init && !fin;
}

void lmpi_check(lua_State *L, int rc, const char *what)
{
    if (rc == MPI_SUCCESS)
        return;
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS || len <= 0)
        len = snprintf(msg, sizeof msg, "MPI error %d", rc);
    msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING] = 0;
    luaL_error(L, "mpi.%s: %s", what, msg);
}

/* ------------------------------------------------------------- op arenas */

static int op_gc(lua_State *L)
{
    lmpi_op **ud = luaL_checkudata(L, 1, LMPI_OP_MT);
    lmpi_op_free(*ud);
    *ud = NULL;
    return 0;
}

lmpi_op *lmpi_op_push(lua_State *L)
{
    lmpi_op **ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = NULL;
    luaL_setmetatable(L, LMPI_OP_MT);
    lmpi_op *op = calloc(1, sizeof *op);
    if (!op)
        luaL_error(L, "mpi: out of memory");
    *ud = op;
    return op;
}

static void lmpi_op_add(lua_State *L, lmpi_op *op, void *p, int is_nd)
{
    if (op->count == op->cap) {
        size_t cap = op->cap ? op->cap * 2 : 8;
        lmpi_keep *items = realloc(op->items, cap * sizeof *items);
        if (!items) {
            if (is_nd)
                nd_buffer_release(p);
            else
                free(p);
            luaL_error(L, "mpi: out of memory");
        }
        op->items = items;
        op->cap = cap;
    }
    op->items[op->count++] = (lmpi_keep){p, is_nd};
}

void lmpi_op_own(lmpi_op *op, void *p)
{
    op->items[op->count++] = (lmpi_keep){p, 0};
}

void *lmpi_op_alloc(lua_State *L, lmpi_op *op, size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        luaL_error(L, "mpi: out of memory for %I bytes", (LUAI_UACINT)bytes);
    lmpi_op_add(L, op, p, 0);
    return p;
}

void lmpi_op_adopt(lua_State *L, lmpi_op *op, nd_buffer *buf)
{
    lmpi_op_add(L, op, buf, 1);
}

void lmpi_op_keep(lua_State *L, lmpi_op *op, nd_buffer *buf)
{
    lmpi_op_add(L, op, nd_buffer_share(buf), 1);
}

void lmpi_op_reserve(lua_State *L, lmpi_op *op, size_t n)
{
    if (op->cap - op->count >= n)
        return;
    size_t cap = op->cap ? op->cap : 8;
    while (cap - op->count < n)
        cap *= 2;
    lmpi_keep *items = realloc(op->items, cap * sizeof *items);
    if (!items)
        luaL_error(L, "mpi: out of memory");
    op->items = items;
    op->cap = cap;
}

nd_buffer *lmpi_recv_buffer(lua_State *L, lmpi_op *op, size_t len)
{
    lmpi_op_reserve(L, op, 1);
    unsigned char *data = malloc(len ? len : 1);
    nd_buffer *buf = data ? nd_buffer_wrap(data, len) : NULL;
    if (!buf) {
        free(data);
        luaL_error(L, "mpi: out of memory for %I bytes", (LUAI_UACINT)len);
    }
    op->items[op->count++] = (lmpi_keep){buf, 1};
    return buf;
}

void lmpi_op_free(lmpi_op *op)
{
    if (!op)
        return;
    for (size_t i = 0; i < op->count; i++) {
        if (op->items[i].is_nd)
            nd_buffer_release(op->items[i].p);
        else
            free(op->items[i].p);
    }
    free(op->items);
    free(op);
}

/* ------------------------------------------------------------- progress */

/* MPICH makes progress only inside MPI calls of this process.  An operation
 * that outlives its Lua call — a parked collective or send, an isend whose
 * request sits in a Lua variable — needs this rank's progress for the other
 * ranks to finish their side, while this engine may be idle for minutes.
 * So while such operations exist, a helper thread tests a receive of its own
 * that never matches (on a private, silent communicator) every millisecond
 * (then every 10 ms): MPI_Test of an incomplete request runs MPICH's
 * progress engine (MPI_Iprobe does not drive collective schedules), and no
 * request of the main thread is touched.  It needs MPI_THREAD_MULTIPLE; without it, no thread
 * (and an idle rank blocks its peers until its next MPI call). */
static atomic_int lmpi_outstanding;
static pthread_mutex_t progress_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t progress_cond = PTHREAD_COND_INITIALIZER;
static pthread_t progress_thread;
static int progress_running, progress_stop;
static MPI_Comm progress_comm = MPI_COMM_NULL;
static MPI_Request progress_req = MPI_REQUEST_NULL;
static int progress_cell;

static void *progress_main(void *arg)
{
    (void)arg;
    unsigned polls = 0;
    for (;;) {
        pthread_mutex_lock(&progress_lock);
        while (!progress_stop && atomic_load(&lmpi_outstanding) == 0) {
            polls = 0;
            pthread_cond_wait(&progress_cond, &progress_lock);
        }
        int stop = progress_stop;
        pthread_mutex_unlock(&progress_lock);
        if (stop)
            return NULL;
        int flag = 0;
        MPI_Test(&progress_req, &flag, MPI_STATUS_IGNORE);
        struct timespec ts = {0, ++polls < 1000 ? 1000000 : 10000000};
        nanosleep(&ts, NULL);
    }
}

/* Starts the thread (once per process) when MPI allows it. */
static void progress_start(void)
{
    int level = MPI_THREAD_SINGLE;
    if (progress_running || MPI_Query_thread(&level) != MPI_SUCCESS || level != MPI_THREAD_MULTIPLE)
        return;
    if (MPI_Comm_dup(MPI_COMM_SELF, &progress_comm) != MPI_SUCCESS)
        return;
    if (MPI_Irecv(&progress_cell, 1, MPI_INT, 0, 0, progress_comm, &progress_req) != MPI_SUCCESS) {
        MPI_Comm_free(&progress_comm);
        return;
    }
    progress_stop = 0;
    if (pthread_create(&progress_thread, NULL, progress_main, NULL) == 0) {
        progress_running = 1;
    } else {
        MPI_Cancel(&progress_req);
        MPI_Wait(&progress_req, MPI_STATUS_IGNORE);
        MPI_Comm_free(&progress_comm);
    }
}

static void progress_end(void)
{
    if (!progress_running)
        return;
    pthread_mutex_lock(&progress_lock);
    progress_stop = 1;
    pthread_cond_signal(&progress_cond);
    pthread_mutex_unlock(&progress_lock);
    pthread_join(progress_thread, NULL);
    progress_running = 0;
    if (lmpi_active()) {
        MPI_Cancel(&progress_req);
        MPI_Wait(&progress_req, MPI_STATUS_IGNORE);
        MPI_Comm_free(&progress_comm);
    }
}

/* Every user of the thread (a Lua mpi module, the Python MPI module) holds
 * one reference; the thread stops when the last one is released. */
static int progress_users;

void lmpi_progress_acquire(void)
{
    if (progress_users++ == 0)
        progress_start();
}

void lmpi_progress_release(void)
{
    assert(progress_users > 0);
    if (--progress_users == 0)
        progress_end();
}

void lmpi_outstanding_add(int delta)
{
    if (atomic_fetch_add(&lmpi_outstanding, delta) == 0 && delta > 0) {
        pthread_mutex_lock(&progress_lock);
        pthread_cond_signal(&progress_cond);
        pthread_mutex_unlock(&progress_lock);
    }
}

/* ------------------------------------------------------------- parking */

static lmpi_parking parked; /* the Lua module's lot */

static void parked_op_free(void *op)
{
    lmpi_op_free(op);
}

void lmpi_reap(void)
{
    lmpi_parking_reap(&parked);
}

/* Keeps req and op until MPI completes it (lmpi_parking_add leaks op when
 * even the list cannot grow). */
void lmpi_park(lmpi_commstate *cs, MPI_Request req, lmpi_op *op, int collective)
{
    lmpi_parking_add(&parked, cs, req, op, parked_op_free, collective);
}

void lmpi_wait_op(lua_State *L, const lmpi_call *c, MPI_Request *req, int op_idx, int collective,
                  const char *what)
{
    int rc = lmpi_wait(req, c->st->interrupt);
    if (rc == 0)
        return;
    if (rc > 0)
        lmpi_check(L, rc, what);
    lmpi_op **ud = op_idx ? luaL_checkudata(L, op_idx, LMPI_OP_MT) : NULL;
    lmpi_park(c->cs, *req, ud ? *ud : NULL, collective);
    if (ud)
        *ud = NULL; /* the parked entry owns it now */
    lua_pushliteral(L, "interrupted");
    lua_error(L);
}

void lmpi_check_interrupt(lua_State *L, const lmpi_call *c)
{
    if (c->st->interrupt && atomic_load(c->st->interrupt)) {
        lua_pushliteral(L, "interrupted");
        lua_error(L);
    }
}

/* ------------------------------------------------------------- communicators */

void lmpi_commstate_release(lmpi_commstate *cs)
{
    if (!cs || --cs->refs > 0)
        return;
    if (cs->owned && lmpi_active())
        MPI_Comm_free(&cs->comm);
    free(cs);
}

lmpi_commstate *lmpi_commstate_new(MPI_Comm comm, int owned)
{
    lmpi_commstate *cs = calloc(1, sizeof *cs);
    if (!cs)
        return NULL;
    cs->comm = comm;
    cs->owned = owned;
    cs->refs = 1;
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm, &cs->rank);
    MPI_Comm_size(comm, &cs->size);
    return cs;
}

static int comm_gc(lua_State *L)
{
    lmpi_commstate **ud = luaL_checkudata(L, 1, LMPI_COMM_MT);
    lmpi_commstate_release(*ud);
    *ud = NULL;
    return 0;
}

/* Pushes a comm object holding a new reference to cs. */
static void comm_push(lua_State *L, lmpi_commstate *cs)
{
    lmpi_commstate **ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = NULL;
    luaL_setmetatable(L, LMPI_COMM_MT);
    cs->refs++;
    *ud = cs;
}

lmpi_call lmpi_begin(lua_State *L, int collective)
{
    lmpi_call c;
    c.st = lua_touserdata(L, lua_upvalueindex(1));
    if (lua_toboolean(L, lua_upvalueindex(2))) {
        c.cs = c.st->world;
        c.arg = 1;
    } else {
        lmpi_commstate **ud = luaL_checkudata(L, 1, LMPI_COMM_MT);
        c.cs = *ud;
        c.arg = 2;
        if (!c.cs)
            luaL_error(L, "mpi: this communicator was freed");
    }
    if (!c.cs || !lmpi_active())
        luaL_error(L, "mpi: MPI is not initialised");
    lmpi_reap();
    if (collective && c.cs->pending) {
        lua_Debug ar;
        const char *name =
            lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name ? ar.name : "?";
        luaL_error(L,
                   "mpi.%s: an interrupted collective on this communicator is still pending "
                   "(the other ranks never made it); their next collective on it completes it, "
                   "then this rank is in step again",
                   name);
    }
    lmpi_check_interrupt(L, &c);
    return c;
}

int lmpi_check_rank(lua_State *L, const lmpi_call *c, int idx, int dflt, int any, const char *role)
{
    if (lua_isnoneornil(L, idx)) {
        if (dflt < 0 && !any)
            luaL_argerror(L, idx, lua_pushfstring(L, "%s rank expected", role));
        return dflt;
    }
    lua_Integer r = luaL_checkinteger(L, idx);
    if (r < 0 || r >= c->cs->size)
        luaL_argerror(L, idx,
                      lua_pushfstring(L, "%s %I is not a rank of this communicator (size %d)", role,
                                      (LUAI_UACINT)r, c->cs->size));
    return (int)r;
}

int lmpi_check_tag(lua_State *L, int idx, int dflt, int any)
{
    if (lua_isnoneornil(L, idx))
        return any ? MPI_ANY_TAG : dflt;
    lua_Integer t = luaL_checkinteger(L, idx);
    void *ub_ptr = NULL;
    int flag = 0;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub_ptr, &flag);
    lua_Integer ub = flag && ub_ptr ? *(int *)ub_ptr : 32767;
    if (t < 0 || t > ub)
        luaL_argerror(L, idx, lua_pushfstring(L, "tag must be in 0..%I", (LUAI_UACINT)ub));
    return (int)t;
}

int lmpi_test_comm(lua_State *L, int idx, MPI_Comm *comm)
{
    lmpi_commstate **ud = luaL_testudata(L, idx, LMPI_COMM_MT);
    if (!ud || !*ud)
        return 0;
    *comm = (*ud)->comm;
    return 1;
}

MPI_Comm lmpi_world(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &lmpi_state_key);
    lmpi_state *st = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return st && st->world ? st->world->comm : MPI_COMM_NULL;
}

/* ------------------------------------------------------------- functions */

static int l_rank(lua_State *L)
{
    lmpi_state *st = lua_touserdata(L, lua_upvalueindex(1));
    if (lua_toboolean(L, lua_upvalueindex(2)) && (!st->world || !lmpi_active())) {
        lua_pushinteger(L, 0);
        return 1;
    }
    lmpi_call c = lmpi_begin(L, 0);
    lua_pushinteger(L, c.cs->rank);
    return 1;
}

static int l_size(lua_State *L)
{
    lmpi_state *st = lua_touserdata(L, lua_upvalueindex(1));
    if (lua_toboolean(L, lua_upvalueindex(2)) && (!st->world || !lmpi_active())) {
        lua_pushinteger(L, 1);
        return 1;
    }
    lmpi_call c = lmpi_begin(L, 0);
    lua_pushinteger(L, c.cs->size);
    return 1;
}

static int l_wtime(lua_State *L)
{
    if (lmpi_active()) {
        lua_pushnumber(L, MPI_Wtime());
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
    }
    return 1;
}

static int l_barrier(lua_State *L)
{
    lmpi_call c = lmpi_begin(L, 1);
    MPI_Request req;
    lmpi_check(L, MPI_Ibarrier(c.cs->comm, &req), "barrier");
    lmpi_wait_op(L, &c, &req, 0, 1, "barrier");
    return 0;
}

/* comm:split(color [, key=rank]) / mpi.comm_split: the (color, key) pairs
 * are exchanged with a yielding allgather first, so that when
 * MPI_Comm_split (blocking) runs, every rank is known to be there. */
static int l_comm_split(lua_State *L)
{
    lmpi_call c = lmpi_begin(L, 1);
    lua_Integer color = luaL_checkinteger(L, c.arg);
    lua_Integer key = luaL_optinteger(L, c.arg + 1, c.cs->rank);
    if (color < 0 || color > INT32_MAX)
        return luaL_argerror(L, c.arg, "color must be a non-negative integer");
    if (key < INT32_MIN || key > INT32_MAX)
        return luaL_argerror(L, c.arg + 1, "key out of range");
    lmpi_op *op = lmpi_op_push(L);
    int opi = lua_gettop(L);
    int *pairs = lmpi_op_alloc(L, op, sizeof(int) * 2 * (size_t)(c.cs->size + 1));
    pairs[0] = (int)color;
    pairs[1] = (int)key;
    MPI_Request req;
    lmpi_check(L, MPI_Iallgather(pairs, 2, MPI_INT, pairs + 2, 2, MPI_INT, c.cs->comm, &req),
               "comm_split");
    lmpi_wait_op(L, &c, &req, opi, 1, "comm_split");
    MPI_Comm comm;
    lmpi_check(L, MPI_Comm_split(c.cs->comm, (int)color, (int)key, &comm), "comm_split");
    lmpi_commstate *cs = lmpi_commstate_new(comm, 1);
    if (!cs) {
        MPI_Comm_free(&comm);
        return luaL_error(L, "mpi.comm_split: out of memory");
    }
    comm_push(L, cs);
    lmpi_commstate_release(cs); /* the object holds the one reference */
    return 1;
}

/* comm:free(): releases the communicator now (later calls raise). */
static int l_comm_free(lua_State *L)
{
    lmpi_commstate **ud = luaL_checkudata(L, 1, LMPI_COMM_MT);
    lmpi_commstate_release(*ud);
    *ud = NULL;
    return 0;
}

static int comm_tostring(lua_State *L)
{
    lmpi_commstate **ud = luaL_checkudata(L, 1, LMPI_COMM_MT);
    if (*ud)
        lua_pushfstring(L, "mpi communicator (rank %d of %d)", (*ud)->rank, (*ud)->size);
    else
        lua_pushliteral(L, "mpi communicator (freed)");
    return 1;
}

static const luaL_Reg lmpi_core_funcs[] = {
    {"rank", l_rank},
    {"size", l_size},
    {"barrier", l_barrier},
    {"wtime", l_wtime},
    {"comm_split", l_comm_split},
    {"split", l_comm_split},
    {NULL, NULL},
};

/* Registers every function into the table on top with upvalues (st, world). */
static void lmpi_register_all(lua_State *L, lmpi_state *st, int world)
{
    const luaL_Reg *parts[] = {lmpi_core_funcs, lmpi_reduce_funcs, lmpi_coll_funcs, lmpi_p2p_funcs};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        lua_pushlightuserdata(L, st);
        lua_pushboolean(L, world);
        luaL_setfuncs(L, parts[i], 2);
    }
}

static int state_gc(lua_State *L)
{
    lmpi_state *st = lua_touserdata(L, 1);
    if (st->world)
        lmpi_progress_release();
    lmpi_commstate_release(st->world);
    st->world = NULL;
    return 0;
}

int lmpi_open(lua_State *L, atomic_int *interrupt)
{
    if (luaL_newmetatable(L, LMPI_OP_MT)) {
        lua_pushcfunction(L, op_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lmpi_p2p_open(L);

    /* The state lives as long as the Lua state (registry). */
    lmpi_state *st = lua_newuserdatauv(L, sizeof *st, 0);
    memset(st, 0, sizeof *st);
    st->interrupt = interrupt;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &lmpi_state_key);
    if (lmpi_active()) {
        MPI_Comm world;
        if (MPI_Comm_dup(MPI_COMM_WORLD, &world) != MPI_SUCCESS)
            return luaL_error(L, "mpi: cannot duplicate MPI_COMM_WORLD");
        st->world = lmpi_commstate_new(world, 1);
        if (!st->world) {
            MPI_Comm_free(&world);
            return luaL_error(L, "mpi: out of memory");
        }
        lmpi_progress_acquire();
    }

    if (luaL_newmetatable(L, LMPI_COMM_MT)) {
        lua_pushcfunction(L, comm_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, comm_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_newtable(L); /* methods */
        lmpi_register_all(L, st, 0);
        lua_pushcfunction(L, l_comm_free);
        lua_setfield(L, -2, "free");
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);

    lua_newtable(L);
    lmpi_register_all(L, st, 1);
    lua_pushcfunction(L, l_wtime);
    lua_setfield(L, -2, "wtime");
    if (st->world) {
        comm_push(L, st->world);
        lua_setfield(L, -2, "COMM_WORLD");
    }
    return 1;
}

int luaopen_mpi(lua_State *L)
{
    return lmpi_open(L, NULL);
}
