/* lmpi.c — the `mpi` Lua module (see lmpi.h).
 *
 * Buffer lifetime is the delicate part.  A collective that is interrupted
 * stays active inside MPI, which may still read or write its buffers after
 * the Lua error unwinds.  So every buffer given to MPI belongs to a Lua
 * object at a known stack slot (an argument, a result nd array, or a scratch
 * userdata whose __gc frees C memory), and on interrupt that object is
 * anchored in the registry and parked with the request; lmpi_reap drops the
 * anchor once MPI_Test reports the request complete.  No C stack buffer is
 * ever handed to MPI.
 *
 * Counts: MPI counts are int, so byte and element transfers are split into
 * pieces of at most LMPI_CHUNK.
 */
#include "lmpi.h"

#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "luavalue.h"
#include "nd.h"

#define LMPI_SCRATCH "ippc.mpi.scratch"
#define LMPI_CHUNK ((size_t)1 << 28) /* elements or bytes per MPI call */
#define LMPI_SPINS_BEFORE_SLEEP 50
#define LMPI_SLEEP_NS 10000

/* ------------------------------------------------------------- waiting */

int lmpi_wait(MPI_Request *req, const atomic_int *interrupt)
{
    for (unsigned spins = 0;; spins++) {
        int done = 0;
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
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

/* Requests abandoned by an interrupt, with a registry reference that keeps
 * their buffers alive.  Touched only from the Lua state's thread. */
typedef struct lmpi_parked {
    MPI_Request req;
    lua_State *main; /* registry owner */
    int ref;
} lmpi_parked;

static lmpi_parked *parked;
static size_t parked_count, parked_cap;

static lua_State *lmpi_main_thread(lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lua_State *main = lua_tothread(L, -1);
    lua_pop(L, 1);
    return main;
}

/* Releases the anchors of parked requests that have completed since. */
static void lmpi_reap(lua_State *L)
{
    lua_State *main = lmpi_main_thread(L);
    for (size_t i = 0; i < parked_count;) {
        int done = 0;
        MPI_Test(&parked[i].req, &done, MPI_STATUS_IGNORE);
        if (done && parked[i].main == main) {
            luaL_unref(L, LUA_REGISTRYINDEX, parked[i].ref);
            parked[i] = parked[--parked_count];
        } else {
            i++;
        }
    }
}

static void lmpi_park(lua_State *L, MPI_Request req, int anchor)
{
    int ref = LUA_NOREF;
    if (anchor) {
        lua_pushvalue(L, anchor);
        ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (parked_count == parked_cap) {
        size_t cap = parked_cap ? parked_cap * 2 : 8;
        lmpi_parked *p = realloc(parked, cap * sizeof *p);
        if (!p)
            return; /* the anchor then stays in the registry for good: still safe */
        parked = p;
        parked_cap = cap;
    }
    parked[parked_count++] = (lmpi_parked){req, lmpi_main_thread(L), ref};
}

static const atomic_int *lmpi_flag(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1)); /* NULL when no flag was given */
}

static int lmpi_interrupted(lua_State *L)
{
    lua_pushliteral(L, "interrupted");
    return lua_error(L);
}

/* Raises "interrupted" before a collective starts, so an interrupt that came
 * early does not abandon a collective needlessly. */
static void lmpi_check_interrupt(lua_State *L)
{
    const atomic_int *flag = lmpi_flag(L);
    lmpi_reap(L);
    if (flag && atomic_load(flag))
        lmpi_interrupted(L);
}

/* Waits for req; on interrupt parks it (anchoring the value at stack slot
 * anchor, 0 for none) and raises. */
static void lmpi_wait_or_raise(lua_State *L, MPI_Request *req, int anchor)
{
    if (lmpi_wait(req, lmpi_flag(L)) == 0)
        return;
    lmpi_park(L, *req, anchor ? lua_absindex(L, anchor) : 0);
    lmpi_interrupted(L);
}

static int lmpi_active(void)
{
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    return init && !fin;
}

static int lmpi_comm_size(void)
{
    int size = 1;
    if (lmpi_active())
        MPI_Comm_size(MPI_COMM_WORLD, &size);
    return size;
}

/* --------------------------------------------------- simple functions */

static int l_rank(lua_State *L)
{
    int rank = 0;
    if (lmpi_active())
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    lua_pushinteger(L, rank);
    return 1;
}

static int l_size(lua_State *L)
{
    lua_pushinteger(L, lmpi_comm_size());
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
    if (!lmpi_active())
        return 0;
    lmpi_check_interrupt(L);
    MPI_Request req;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    lmpi_wait_or_raise(L, &req, 0);
    return 0;
}

/* ---------------------------------------------------------- allreduce */

static MPI_Datatype lmpi_type(nd_dtype t)
{
    switch (t) {
    case ND_FLOAT64: return MPI_DOUBLE;
    case ND_FLOAT32: return MPI_FLOAT;
    case ND_INT64: return MPI_INT64_T;
    case ND_INT32: return MPI_INT32_T;
    case ND_UINT8: return MPI_UINT8_T;
    default: return MPI_DATATYPE_NULL;
    }
}

static MPI_Op lmpi_check_op(lua_State *L, int idx)
{
    static const char *const names[] = {"sum", "prod", "min", "max", NULL};
    static const MPI_Op ops[] = {MPI_SUM, MPI_PROD, MPI_MIN, MPI_MAX};
    return ops[luaL_checkoption(L, idx, "sum", names)];
}

/* In-place allreduce of count elements at p, in chunks; anchor owns p. */
static void lmpi_allreduce_inplace(lua_State *L, void *p, size_t count, MPI_Datatype type,
                                   size_t esize, MPI_Op op, int anchor)
{
    unsigned char *bytes = p;
    for (size_t done = 0; done < count;) {
        size_t n = count - done < LMPI_CHUNK ? count - done : LMPI_CHUNK;
        MPI_Request req;
        MPI_Iallreduce(MPI_IN_PLACE, bytes + done * esize, (int)n, type, op, MPI_COMM_WORLD, &req);
        lmpi_wait_or_raise(L, &req, anchor);
        done += n;
    }
}

/* mpi.allreduce(x [, op]): x a number or an nd array; every rank must pass
 * the same kind (integer / float / same dtype and element count). */
static int l_allreduce(lua_State *L)
{
    MPI_Op op = lmpi_check_op(L, 2);
    nd_array *a = nd_test(L, 1);
    if (!a && lua_type(L, 1) != LUA_TNUMBER)
        return luaL_typeerror(L, 1, "number or nd array");
    int active = lmpi_active();
    if (active)
        lmpi_check_interrupt(L);
    if (a) {
        nd_array *r = nd_push_new(L, nd_dtype_of(a), nd_ndim(a), nd_shape(a));
        nd_copy_out(a, nd_data(r));
        if (active)
            lmpi_allreduce_inplace(L, nd_data(r), nd_count(r), lmpi_type(nd_dtype_of(r)),
                                   nd_dtype_size(nd_dtype_of(r)), op, lua_gettop(L));
        return 1;
    }
    if (!active) {
        lua_settop(L, 1);
        return 1;
    }
    /* The scalar lives in a userdata: MPI may outlive this call on interrupt. */
    int is_int = lua_isinteger(L, 1);
    void *cell = lua_newuserdatauv(
        L, sizeof(int64_t) > sizeof(double) ? sizeof(int64_t) : sizeof(double), 0);
    if (is_int) {
        int64_t v = (int64_t)lua_tointeger(L, 1);
        memcpy(cell, &v, sizeof v);
    } else {
        double v = (double)lua_tonumber(L, 1);
        memcpy(cell, &v, sizeof v);
    }
    lmpi_allreduce_inplace(L, cell, 1, is_int ? MPI_INT64_T : MPI_DOUBLE, 8, op, lua_gettop(L));
    if (is_int) {
        int64_t v;
        memcpy(&v, cell, sizeof v);
        lua_pushinteger(L, (lua_Integer)v);
    } else {
        double v;
        memcpy(&v, cell, sizeof v);
        lua_pushnumber(L, v);
    }
    return 1;
}

/* --------------------------------------------------------------- bcast */

/* The header every rank receives first. */
enum { BC_NIL, BC_BOOL, BC_INT, BC_FLOAT, BC_STRING, BC_ND, BC_WIRE, BC_ERROR };
enum { H_KIND, H_A, H_B, H_C, H_SHAPE, H_LEN = H_SHAPE + ND_MAX_DIMS };

/* Everything a bcast allocates, owned by one userdata (freed by __gc). */
typedef struct lmpi_scratch {
    int64_t hdr[H_LEN];
    char *text; /* JSON skeleton, or the root's error message */
    size_t text_len;
    int64_t *lens; /* blob lengths */
    json_t *skel;
    ippc_blobs blobs;
} lmpi_scratch;

static int scratch_gc(lua_State *L)
{
    lmpi_scratch *s = luaL_checkudata(L, 1, LMPI_SCRATCH);
    free(s->text);
    free(s->lens);
    json_decref(s->skel);
    blobs_free(&s->blobs);
    s->text = NULL;
    s->lens = NULL;
    s->skel = NULL;
    return 0;
}

static lmpi_scratch *scratch_push(lua_State *L)
{
    lmpi_scratch *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    blobs_init(&s->blobs);
    luaL_setmetatable(L, LMPI_SCRATCH);
    return s;
}

static void bcast_bytes(lua_State *L, void *p, size_t len, int root, int anchor)
{
    unsigned char *bytes = p;
    for (size_t done = 0; done < len;) {
        size_t n = len - done < LMPI_CHUNK ? len - done : LMPI_CHUNK;
        MPI_Request req;
        MPI_Ibcast(bytes + done, (int)n, MPI_BYTE, root, MPI_COMM_WORLD, &req);
        lmpi_wait_or_raise(L, &req, anchor);
        done += n;
    }
}

static void bcast_header(lua_State *L, lmpi_scratch *s, int root, int anchor)
{
    MPI_Request req;
    MPI_Ibcast(s->hdr, H_LEN, MPI_INT64_T, root, MPI_COMM_WORLD, &req);
    lmpi_wait_or_raise(L, &req, anchor);
}

/* Root side: fills the header (and scratch) for the value at index 1. */
static void bcast_describe(lua_State *L, lmpi_scratch *s)
{
    int64_t *h = s->hdr;
    nd_array *a;
    switch (lua_type(L, 1)) {
    case LUA_TNONE:
    case LUA_TNIL: h[H_KIND] = BC_NIL; return;
    case LUA_TBOOLEAN:
        h[H_KIND] = BC_BOOL;
        h[H_A] = lua_toboolean(L, 1);
        return;
    case LUA_TNUMBER:
        if (lua_isinteger(L, 1)) {
            h[H_KIND] = BC_INT;
            h[H_A] = (int64_t)lua_tointeger(L, 1);
        } else {
            double d = (double)lua_tonumber(L, 1);
            h[H_KIND] = BC_FLOAT;
            memcpy(&h[H_A], &d, sizeof d);
        }
        return;
    case LUA_TSTRING:
        h[H_KIND] = BC_STRING;
        h[H_A] = (int64_t)lua_rawlen(L, 1);
        return;
    default: break;
    }
    if ((a = nd_test(L, 1)) != NULL) {
        h[H_KIND] = BC_ND;
        h[H_A] = nd_dtype_of(a);
        h[H_B] = nd_ndim(a);
        for (int d = 0; d < nd_ndim(a); d++)
            h[H_SHAPE + d] = (int64_t)nd_shape(a)[d];
        return;
    }
    ippc_error err = {{0}, {0}};
    json_t *skel = lua_type(L, 1) == LUA_TTABLE ? luavalue_to_wire(L, 1, &s->blobs, &err) : NULL;
    if (!skel && lua_type(L, 1) != LUA_TTABLE)
        snprintf(err.message, sizeof err.message, "cannot send a %s value", luaL_typename(L, 1));
    s->skel = skel;
    if (skel) {
        s->text = json_dumps(skel, JSON_COMPACT | JSON_ENCODE_ANY);
        s->lens = malloc((s->blobs.count ? s->blobs.count : 1) * sizeof *s->lens);
        if (!s->text || !s->lens)
            snprintf(err.message, sizeof err.message, "out of memory");
    }
    if (s->text && s->lens) {
        s->text_len = strlen(s->text);
        for (size_t i = 0; i < s->blobs.count; i++)
            s->lens[i] = (int64_t)s->blobs.items[i].len;
        h[H_KIND] = BC_WIRE;
        h[H_A] = (int64_t)s->text_len;
        h[H_B] = (int64_t)s->blobs.count;
        return;
    }
    /* The others are already waiting for a header: tell them what went wrong. */
    free(s->text);
    s->text = strdup(err.message);
    s->text_len = s->text ? strlen(s->text) : 0;
    h[H_KIND] = BC_ERROR;
    h[H_A] = (int64_t)s->text_len;
}

static void *scratch_alloc(lua_State *L, size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        luaL_error(L, "mpi.bcast: out of memory for %I bytes", (LUAI_UACINT)n);
    return p;
}

/* mpi.bcast(obj [, root=0]) -> the root's obj on every rank. */
static int l_bcast(lua_State *L)
{
    lua_Integer root = luaL_optinteger(L, 2, 0);
    int size = lmpi_comm_size();
    if (root < 0 || root >= size)
        return luaL_argerror(L, 2, "root must be a rank of MPI_COMM_WORLD");
    if (!lmpi_active() || size == 1) {
        lua_settop(L, 1);
        return 1;
    }
    lmpi_check_interrupt(L);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int is_root = rank == (int)root;
    lua_settop(L, 2);
    lmpi_scratch *s = scratch_push(L);
    int sidx = lua_gettop(L);
    if (is_root)
        bcast_describe(L, s);
    bcast_header(L, s, (int)root, sidx);
    int64_t *h = s->hdr;

    switch (h[H_KIND]) {
    case BC_NIL: lua_pushnil(L); return 1;
    case BC_BOOL: lua_pushboolean(L, h[H_A] != 0); return 1;
    case BC_INT: lua_pushinteger(L, (lua_Integer)h[H_A]); return 1;
    case BC_FLOAT: {
        double d;
        memcpy(&d, &h[H_A], sizeof d);
        lua_pushnumber(L, d);
        return 1;
    }
    case BC_STRING: {
        if (h[H_A] < 0)
            break;
        size_t len = (size_t)h[H_A];
        if (is_root) {
            bcast_bytes(L, (void *)lua_tostring(L, 1), len, (int)root, 1);
            lua_pushvalue(L, 1);
            return 1;
        }
        s->text = scratch_alloc(L, len);
        bcast_bytes(L, s->text, len, (int)root, sidx);
        lua_pushlstring(L, s->text, len);
        return 1;
    }
    case BC_ND: {
        if (h[H_A] < 0 || h[H_A] >= ND_DTYPE_COUNT || h[H_B] < 0 || h[H_B] > ND_MAX_DIMS)
            break;
        if (is_root) {
            nd_array *a = nd_push_contiguous(L, 1);
            bcast_bytes(L, nd_data(a), nd_bytes(a), (int)root, lua_gettop(L));
            lua_pushvalue(L, 1);
            return 1;
        }
        size_t shape[ND_MAX_DIMS];
        for (int d = 0; d < h[H_B]; d++) {
            if (h[H_SHAPE + d] < 0)
                return luaL_error(L, "mpi.bcast: corrupt header");
            shape[d] = (size_t)h[H_SHAPE + d];
        }
        nd_array *a = nd_push_new(L, (nd_dtype)h[H_A], (int)h[H_B], shape);
        bcast_bytes(L, nd_data(a), nd_bytes(a), (int)root, lua_gettop(L));
        return 1;
    }
    case BC_WIRE: {
        if (h[H_A] < 0 || h[H_B] < 0 || (uint64_t)h[H_B] > SIZE_MAX / sizeof(int64_t))
            break;
        size_t nblobs = (size_t)h[H_B];
        if (!is_root) {
            s->lens = scratch_alloc(L, nblobs * sizeof *s->lens);
            s->text_len = (size_t)h[H_A];
            s->text = scratch_alloc(L, s->text_len);
        }
        bcast_bytes(L, s->lens, nblobs * sizeof *s->lens, (int)root, sidx);
        bcast_bytes(L, s->text, s->text_len, (int)root, sidx);
        if (!is_root)
            for (size_t i = 0; i < nblobs; i++) {
                if (s->lens[i] < 0)
                    return luaL_error(L, "mpi.bcast: corrupt header");
                size_t len = (size_t)s->lens[i];
                if (blobs_push(&s->blobs, scratch_alloc(L, len), len) < 0)
                    return luaL_error(L, "mpi.bcast: out of memory");
            }
        for (size_t i = 0; i < nblobs; i++)
            bcast_bytes(L, s->blobs.items[i].data, s->blobs.items[i].len, (int)root, sidx);
        if (is_root) {
            lua_pushvalue(L, 1);
            return 1;
        }
        json_error_t jerr;
        s->skel = json_loadb(s->text, s->text_len, JSON_DECODE_ANY, &jerr);
        if (!s->skel)
            return luaL_error(L, "mpi.bcast: bad value from the root: %s", jerr.text);
        ippc_error err;
        if (luavalue_push(L, s->skel, &s->blobs, &err) < 0)
            return luaL_error(L, "mpi.bcast: %s", err.message);
        return 1;
    }
    case BC_ERROR: {
        if (h[H_A] < 0)
            break;
        size_t len = (size_t)h[H_A];
        if (!is_root) {
            s->text = scratch_alloc(L, len);
            s->text_len = len;
        }
        bcast_bytes(L, s->text, len, (int)root, sidx);
        return luaL_error(L, "mpi.bcast: the root cannot send its value: %s",
                          lua_pushlstring(L, s->text, len));
    }
    default: break;
    }
    return luaL_error(L, "mpi.bcast: corrupt header");
}

/* -------------------------------------------------------------- module */

static const luaL_Reg lmpi_functions[] = {
    {"rank", l_rank},   {"size", l_size},   {"barrier", l_barrier}, {"allreduce", l_allreduce},
    {"bcast", l_bcast}, {"wtime", l_wtime}, {NULL, NULL},
};

int lmpi_open(lua_State *L, atomic_int *interrupt)
{
    if (luaL_newmetatable(L, LMPI_SCRATCH)) {
        lua_pushcfunction(L, scratch_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlibtable(L, lmpi_functions);
    if (interrupt)
        lua_pushlightuserdata(L, interrupt);
    else
        lua_pushnil(L);
    luaL_setfuncs(L, lmpi_functions, 1);
    return 1;
}

int luaopen_mpi(lua_State *L)
{
    return lmpi_open(L, NULL);
}
