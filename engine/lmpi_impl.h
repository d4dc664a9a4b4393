/* lmpi_impl.h — what the lmpi*.c files share; not for the rest of the engine.
 *
 * Ownership rule of the module: every byte MPI may touch after a Lua error
 * (an interrupt) belongs to an lmpi_op: a C arena of malloc'd blocks and
 * retained nd buffers, wrapped in a Lua userdata whose __gc frees it.  When
 * a wait is interrupted, the op is detached from its userdata and parked with
 * the MPI request; lmpi_reap frees it once MPI_Test reports the request
 * complete.  So no Lua object (and no C stack) is ever in MPI's hands.
 *
 * Packed values: every Lua value travels as a fixed header of LMPI_HDR
 * int64 words plus a payload (nd elements, string bytes, or a JSON skeleton
 * and its blobs for tables); payloads start 8-byte aligned, so received
 * arrays are zero-copy views of the receive buffer.
 */
#ifndef IPPC_ENGINE_LMPI_IMPL_H
#define IPPC_ENGINE_LMPI_IMPL_H

#include <stdatomic.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>
#include <mpi.h>

#include "lmpi.h"
#include "lua_noreturn.h"
#include "nd.h"

#define LMPI_COMM_MT "ippc.mpi.comm"
#define LMPI_OP_MT "ippc.mpi.op"
#define LMPI_REQUEST_MT "ippc.mpi.request"

/* ---- communicators */

/* lmpi_commstate (lmpi.h) is shared by the comm userdata and the parked
 * operations that used it. */

typedef struct lmpi_state {
    const atomic_int *interrupt; /* may be NULL */
    lmpi_commstate *world;       /* NULL when MPI is not initialised */
} lmpi_state;

/* What every mpi function starts with: the module state, the communicator
 * (the world for mpi.f(...), self for comm:f(...)) and the index of the
 * first real argument.  Raises if MPI is not usable. */
typedef struct lmpi_call {
    lmpi_state *st;
    lmpi_commstate *cs;
    int arg; /* index of the first argument after self */
} lmpi_call;

lmpi_call lmpi_begin(lua_State *L, int collective);
/* Raises "mpi.<what>: <MPI's message>" unless rc is MPI_SUCCESS. */
void lmpi_check(lua_State *L, int rc, const char *what);
/* A rank argument (root, dest, source) in [0, size) or raises; `any`
 * allows MPI_ANY_SOURCE for nil/absent. */
int lmpi_check_rank(lua_State *L, const lmpi_call *c, int idx, int dflt, int any, const char *role);
int lmpi_check_tag(lua_State *L, int idx, int dflt, int any);

/* ---- operation arenas */

typedef struct lmpi_keep {
    void *p;
    int is_nd; /* an nd_buffer to release, else a malloc'd block */
} lmpi_keep;

typedef struct lmpi_op {
    lmpi_keep *items;
    size_t count, cap;
    int64_t cell[4]; /* small scalars MPI reads or writes */
} lmpi_op;

/* Pushes a new empty op (a userdata; its __gc frees the op). */
lmpi_op *lmpi_op_push(lua_State *L);
/* malloc'd block owned by op; raises when out of memory. */
void *lmpi_op_alloc(lua_State *L, lmpi_op *op, size_t bytes);
/* op keeps buf alive (retains it). */
void lmpi_op_keep(lua_State *L, lmpi_op *op, nd_buffer *buf);
/* Makes room for n more blocks, so that lmpi_op_own cannot fail. */
void lmpi_op_reserve(lua_State *L, lmpi_op *op, size_t n);
/* Takes a malloc'd block (after lmpi_op_reserve); never raises. */
void lmpi_op_own(lmpi_op *op, void *p);
/* Takes ownership of buf (refs already counted for op). */
void lmpi_op_adopt(lua_State *L, lmpi_op *op, nd_buffer *buf);
void lmpi_op_free(lmpi_op *op);

/* Waits for req; on interrupt parks it with the op at stack slot op_idx
 * (detached from its userdata) and raises "interrupted"; on an MPI error
 * raises.  collective: the op is a collective on c->cs (counts as pending
 * there until it completes). */
void lmpi_wait_op(lua_State *L, const lmpi_call *c, MPI_Request *req, int op_idx, int collective,
                  const char *what);
/* Keeps req and op (may be NULL) until MPI completes req, then frees op. */
void lmpi_park(lmpi_commstate *cs, MPI_Request req, lmpi_op *op, int collective);
/* lmpi_outstanding_add (lmpi.h) counts operations that need progress while
 * no Lua call waits for them (parked ones, active isend/irecv requests): the
 * progress thread runs while the count is above 0. */
/* Frees parked ops whose requests have completed. */
void lmpi_reap(void);
/* Raises "interrupted" when the flag is set (before starting anything). */
void lmpi_check_interrupt(lua_State *L, const lmpi_call *c);

/* ---- packed values (lmpi_pack.c) */

enum { LMPI_HDR = 12 }; /* header words; 96 bytes keeps payloads 8-aligned */

typedef struct lmpi_packed {
    int64_t hdr[LMPI_HDR];
    const unsigned char *payload; /* owned by the op it was packed into */
    size_t len;
} lmpi_packed;

/* Packs the value at idx into p; the payload stays valid as long as op
 * (nd arrays are retained, not copied, when contiguous).  Never raises for
 * an unsendable value: p becomes an error header whose payload is the
 * message (so that a root can tell the other ranks what went wrong). */
void lmpi_pack(lua_State *L, int idx, lmpi_op *op, lmpi_packed *p);
/* p becomes an error header carrying msg (for every rank to raise). */
void lmpi_pack_error(lua_State *L, lmpi_op *op, lmpi_packed *p, const char *msg);
/* 1 if hdr is an error header. */
int lmpi_packed_is_error(const int64_t *hdr);
/* Pushes the value of header hdr whose payload is the len bytes at p, inside
 * owner's memory (arrays become views of owner) or, with owner NULL,
 * anywhere (arrays are copied).  Raises on a header that does not fit len
 * bytes, and with the sender's message for an error header. */
void lmpi_unpack(lua_State *L, const int64_t *hdr, const unsigned char *p, size_t len,
                 nd_buffer *owner, const char *what);
/* Payload bytes announced by a header (0 if invalid). */
size_t lmpi_payload_len(const int64_t *hdr);
/* Rounds up to a multiple of 8. */
static inline size_t lmpi_align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* ---- the parts' functions; registered by lmpi.c twice, as mpi.f (upvalue 2
 * true: the world) and as comm methods (upvalue 2 false: self); upvalue 1
 * is the lmpi_state */
extern const luaL_Reg lmpi_reduce_funcs[]; /* lmpi_reduce.c */
MPI_Datatype lmpi_nd_type(nd_dtype t);     /* lmpi_reduce.c */
/* A new receive buffer of len bytes owned by op (raises when out of memory). */
nd_buffer *lmpi_recv_buffer(lua_State *L, lmpi_op *op, size_t len);
extern const luaL_Reg lmpi_coll_funcs[]; /* lmpi_coll.c */
extern const luaL_Reg lmpi_p2p_funcs[];  /* lmpi_p2p.c */
void lmpi_p2p_open(lua_State *L);        /* lmpi_p2p.c: request metatable */

#endif
