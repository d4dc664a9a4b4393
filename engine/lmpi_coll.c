/* lmpi_coll.c — the object collectives: bcast, gather, allgather, scatter,
 * alltoall (mpi4py's lower-case API, see lmpi.h).
 *
 * Each runs in two phases, both nonblocking and waited on the yielding way:
 * the fixed-size headers first (so every receiver knows what and how much
 * comes), then the payloads with the v-variant and MPI's large counts.
 * Payloads are sent from where they are: one value from its own memory;
 * several (scatter, alltoall) from MPI_BOTTOM with absolute addresses as
 * displacements, so no rank copies its arrays into a send buffer.  Received
 * payloads land 8-byte aligned in one buffer, and arrays in it are views.
 *
 * A rank whose value cannot be sent still takes part (with an error header)
 * and raises afterwards, as do the ranks that receive that header: a bad
 * value never leaves the other ranks hanging in a collective.
 */
#include "lmpi_impl.h"

#include <stdlib.h>
#include <string.h>

#define HDR_BYTES (sizeof(int64_t) * LMPI_HDR)

/* Counts and 8-aligned displacements of n payloads described by hdrs;
 * returns the total. */
static size_t layout(const int64_t *hdrs, int n, MPI_Count *counts, MPI_Aint *displs)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        counts[i] = (MPI_Count)lmpi_payload_len(hdrs + (size_t)i * LMPI_HDR);
        displs[i] = (MPI_Aint)total;
        total += lmpi_align8((size_t)counts[i]);
    }
    return total;
}

/* Raises if this rank's own value could not be sent (after the collective
 * completed, so that the others were not left waiting). */
static void raise_own_error(lua_State *L, const lmpi_packed *p, const char *what)
{
    if (lmpi_packed_is_error(p->hdr))
        lmpi_unpack(L, p->hdr, p->payload, p->len, NULL, what);
}

/* Pushes a list of the n values received into buf. */
static void unpack_list(lua_State *L, const int64_t *hdrs, int n, nd_buffer *buf,
                        const MPI_Count *counts, const MPI_Aint *displs, const char *what)
{
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        const unsigned char *p = nd_buffer_data(buf) + displs[i];
        lmpi_unpack(L, hdrs + (size_t)i * LMPI_HDR, p, (size_t)counts[i], buf, what);
        lua_rawseti(L, -2, i + 1);
    }
}

/* ---------------------------------------------------------- bcast */

/* mpi.bcast(obj [, root=0]) -> the root's obj on every rank (the root gets
 * its own object back). */
static int l_bcast(lua_State *L)
{
    lmpi_call c = lmpi_begin(L, 1);
    int x = c.arg, root = lmpi_check_rank(L, &c, x + 1, 0, 0, "root");
    lua_settop(L, x + 1);
    lmpi_op *op = lmpi_op_push(L);
    int opi = lua_gettop(L);
    lmpi_packed pk;
    memset(&pk, 0, sizeof pk);
    int is_root = c.cs->rank == root;
    if (is_root)
        lmpi_pack(L, x, op, &pk);
    int64_t *hdr = lmpi_op_alloc(L, op, HDR_BYTES);
    memcpy(hdr, pk.hdr, HDR_BYTES);
    MPI_Request req;
    lmpi_check(L, MPI_Ibcast(hdr, LMPI_HDR, MPI_INT64_T, root, c.cs->comm, &req), "bcast");
    lmpi_wait_op(L, &c, &req, opi, 1, "bcast");
    size_t len = lmpi_payload_len(hdr);
    nd_buffer *buf = NULL;
    unsigned char *data = (unsigned char *)pk.payload;
    if (!is_root) {
        buf = lmpi_recv_buffer(L, op, len);
        data = nd_buffer_data(buf);
    }
    if (len > 0) {
        lmpi_check(L, MPI_Ibcast_c(data, (MPI_Count)len, MPI_BYTE, root, c.cs->comm, &req),
                   "bcast");
        lmpi_wait_op(L, &c, &req, opi, 1, "bcast");
    }
    if (is_root) {
        raise_own_error(L, &pk, "bcast");
        lua_pushvalue(L, x);
        return 1;
    }
    lmpi_unpack(L, hdr, data, len, buf, "bcast");
    return 1;
}

/* ---------------------------------------------------------- gather */

static int gather_any(lua_State *L, int all)
{
    const char *what = all ? "allgather" : "gather";
    lmpi_call c = lmpi_begin(L, 1);
    int x = c.arg, root = all ? -1 : lmpi_check_rank(L, &c, x + 1, 0, 0, "root");
    lua_settop(L, x + 1);
    int size = c.cs->size, receives = all || c.cs->rank == root;
    lmpi_op *op = lmpi_op_push(L);
    int opi = lua_gettop(L);
    lmpi_packed pk;
    lmpi_pack(L, x, op, &pk);
    int64_t *mine = lmpi_op_alloc(L, op, HDR_BYTES);
    memcpy(mine, pk.hdr, HDR_BYTES);
    int64_t *hdrs = lmpi_op_alloc(L, op, HDR_BYTES * (size_t)size);
    MPI_Count *counts = lmpi_op_alloc(L, op, sizeof(MPI_Count) * (size_t)size);
    MPI_Aint *displs = lmpi_op_alloc(L, op, sizeof(MPI_Aint) * (size_t)size);
    MPI_Request req;
    if (all)
        lmpi_check(L,
                   MPI_Iallgather(mine, LMPI_HDR, MPI_INT64_T, hdrs, LMPI_HDR, MPI_INT64_T,
                                  c.cs->comm, &req),
                   what);
    else
        lmpi_check(L,
                   MPI_Igather(mine, LMPI_HDR, MPI_INT64_T, hdrs, LMPI_HDR, MPI_INT64_T, root,
                               c.cs->comm, &req),
                   what);
    lmpi_wait_op(L, &c, &req, opi, 1, what);
    size_t total = receives ? layout(hdrs, size, counts, displs) : 0;
    nd_buffer *buf = lmpi_recv_buffer(L, op, total);
    void *send = (void *)pk.payload;
    if (all)
        lmpi_check(L,
                   MPI_Iallgatherv_c(send, (MPI_Count)pk.len, MPI_BYTE, nd_buffer_data(buf), counts,
                                     displs, MPI_BYTE, c.cs->comm, &req),
                   what);
    else
        lmpi_check(L,
                   MPI_Igatherv_c(send, (MPI_Count)pk.len, MPI_BYTE, nd_buffer_data(buf), counts,
                                  displs, MPI_BYTE, root, c.cs->comm, &req),
                   what);
    lmpi_wait_op(L, &c, &req, opi, 1, what);
    raise_own_error(L, &pk, what);
    if (!receives) {
        lua_pushnil(L);
        return 1;
    }
    unpack_list(L, hdrs, size, buf, counts, displs, what);
    return 1;
}

/* mpi.gather(x [, root=0]) -> list on root, nil elsewhere */
static int l_gather(lua_State *L)
{
    return gather_any(L, 0);
}

/* mpi.allgather(x) -> list everywhere */
static int l_allgather(lua_State *L)
{
    return gather_any(L, 1);
}

/* ---------------------------------------------------------- scatter, alltoall */

/* Packs the size items of the list at idx (or, if it is not a list of size
 * items, size copies of an error) into pks; fills counts and absolute
 * addresses for sending from MPI_BOTTOM. */
static lmpi_packed *pack_items(lua_State *L, int idx, lmpi_op *op, int size, const char *what,
                               int64_t *hdrs, MPI_Count *counts, MPI_Aint *addrs)
{
    lmpi_packed *pks = lmpi_op_alloc(L, op, sizeof *pks * (size_t)size);
    int ok = lua_type(L, idx) == LUA_TTABLE && lua_rawlen(L, idx) == (lua_Unsigned)size;
    const char *msg = NULL;
    if (!ok)
        msg = lua_pushfstring(L, "%s needs a list of exactly %d items (one per rank), got %s", what,
                              size, luaL_typename(L, idx));
    for (int i = 0; i < size; i++) {
        if (ok) {
            lua_rawgeti(L, idx, i + 1);
            lmpi_pack(L, -1, op, &pks[i]);
            lua_pop(L, 1);
        } else {
            lmpi_pack_error(L, op, &pks[i], msg);
        }
        memcpy(hdrs + (size_t)i * LMPI_HDR, pks[i].hdr, HDR_BYTES);
        counts[i] = (MPI_Count)pks[i].len;
        MPI_Get_address(pks[i].payload ? pks[i].payload : (const void *)pks, &addrs[i]);
    }
    if (!ok)
        lua_pop(L, 1);
    return pks;
}

/* mpi.scatter(list [, root=0]) -> list[rank + 1] from the root */
static int l_scatter(lua_State *L)
{
    lmpi_call c = lmpi_begin(L, 1);
    int x = c.arg, root = lmpi_check_rank(L, &c, x + 1, 0, 0, "root"), size = c.cs->size;
    lua_settop(L, x + 1);
    int is_root = c.cs->rank == root;
    lmpi_op *op = lmpi_op_push(L);
    int opi = lua_gettop(L);
    int64_t *hdrs = lmpi_op_alloc(L, op, HDR_BYTES * (size_t)size);
    int64_t *mine = lmpi_op_alloc(L, op, HDR_BYTES);
    MPI_Count *counts = lmpi_op_alloc(L, op, sizeof(MPI_Count) * (size_t)size);
    MPI_Aint *addrs = lmpi_op_alloc(L, op, sizeof(MPI_Aint) * (size_t)size);
    lmpi_packed *pks = NULL;
    if (is_root)
        pks = pack_items(L, x, op, size, "scatter", hdrs, counts, addrs);
    MPI_Request req;
    lmpi_check(L,
               MPI_Iscatter(hdrs, LMPI_HDR, MPI_INT64_T, mine, LMPI_HDR, MPI_INT64_T, root,
                            c.cs->comm, &req),
               "scatter");
    lmpi_wait_op(L, &c, &req, opi, 1, "scatter");
    size_t len = lmpi_payload_len(mine);
    nd_buffer *buf = lmpi_recv_buffer(L, op, len);
    lmpi_check(L,
               MPI_Iscatterv_c(MPI_BOTTOM, counts, addrs, MPI_BYTE, nd_buffer_data(buf),
                               (MPI_Count)len, MPI_BYTE, root, c.cs->comm, &req),
               "scatter");
    lmpi_wait_op(L, &c, &req, opi, 1, "scatter");
    (void)pks;
    lmpi_unpack(L, mine, nd_buffer_data(buf), len, buf, "scatter");
    return 1;
}

/* mpi.alltoall(list) -> {item from rank 0, ..., from rank size-1}: this
 * rank's list[j + 1] goes to rank j. */
static int l_alltoall(lua_State *L)
{
    lmpi_call c = lmpi_begin(L, 1);
    int x = c.arg, size = c.cs->size;
    lua_settop(L, x);
    lmpi_op *op = lmpi_op_push(L);
    int opi = lua_gettop(L);
    size_t n = (size_t)size;
    int64_t *shdrs = lmpi_op_alloc(L, op, HDR_BYTES * n);
    int64_t *rhdrs = lmpi_op_alloc(L, op, HDR_BYTES * n);
    MPI_Count *scounts = lmpi_op_alloc(L, op, sizeof(MPI_Count) * n);
    MPI_Count *rcounts = lmpi_op_alloc(L, op, sizeof(MPI_Count) * n);
    MPI_Aint *saddrs = lmpi_op_alloc(L, op, sizeof(MPI_Aint) * n);
    MPI_Aint *rdispls = lmpi_op_alloc(L, op, sizeof(MPI_Aint) * n);
    lmpi_packed *pks = pack_items(L, x, op, size, "alltoall", shdrs, scounts, saddrs);
    MPI_Request req;
    lmpi_check(
        L,
        MPI_Ialltoall(shdrs, LMPI_HDR, MPI_INT64_T, rhdrs, LMPI_HDR, MPI_INT64_T, c.cs->comm, &req),
        "alltoall");
    lmpi_wait_op(L, &c, &req, opi, 1, "alltoall");
    size_t total = layout(rhdrs, size, rcounts, rdispls);
    nd_buffer *buf = lmpi_recv_buffer(L, op, total);
    lmpi_check(L,
               MPI_Ialltoallv_c(MPI_BOTTOM, scounts, saddrs, MPI_BYTE, nd_buffer_data(buf), rcounts,
                                rdispls, MPI_BYTE, c.cs->comm, &req),
               "alltoall");
    lmpi_wait_op(L, &c, &req, opi, 1, "alltoall");
    for (int i = 0; i < size; i++)
        raise_own_error(L, &pks[i], "alltoall");
    unpack_list(L, rhdrs, size, buf, rcounts, rdispls, "alltoall");
    return 1;
}

const luaL_Reg lmpi_coll_funcs[] = {
    {"bcast", l_bcast},     {"gather", l_gather},     {"allgather", l_allgather},
    {"scatter", l_scatter}, {"alltoall", l_alltoall}, {NULL, NULL},
};
