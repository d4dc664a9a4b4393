/* lmpi_pack.c — Lua values as MPI messages: a fixed header plus a payload.
 *
 * Header (LMPI_HDR int64 words): [0] kind, [1] a, [2] b, [3] payload bytes,
 * [4..] the shape of an array.  Kinds start at 1 so that a zeroed or
 * garbage header is recognisably wrong.
 *
 *   nil, false, true    no payload
 *   integer             a = value                  float  a = the double's bits
 *   string              a = length, payload = the bytes
 *   nd array            a = dtype, b = ndim, shape, payload = the elements
 *   table               a = JSON length, b = number of blobs; payload =
 *                       JSON, padded to 8, the blob lengths (int64), then
 *                       each blob padded to 8 (see luavalue.h)
 *   error               payload = the message (a root that cannot send)
 *
 * Payload memory belongs to the op (contiguous arrays are retained, not
 * copied), so it survives an interrupt that parks the operation.  Headers
 * from other ranks are checked against the bytes that actually arrived
 * before anything is built from them.
 */
#include "lmpi_impl.h"
#include "jsonout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "luavalue.h"

enum {
    PK_NIL = 1,
    PK_FALSE,
    PK_TRUE,
    PK_INT,
    PK_FLOAT,
    PK_STRING,
    PK_ND,
    PK_WIRE,
    PK_ERROR,
};
enum { H_KIND, H_A, H_B, H_LEN, H_SHAPE };

int lmpi_packed_is_error(const int64_t *hdr)
{
    return hdr[H_KIND] == PK_ERROR;
}

size_t lmpi_payload_len(const int64_t *hdr)
{
    return hdr[H_LEN] > 0 ? (size_t)hdr[H_LEN] : 0;
}

/* ---------------------------------------------------------- packing */

static void pack_bytes(lua_State *L, lmpi_op *op, lmpi_packed *p, const void *src, size_t len)
{
    unsigned char *copy = lmpi_op_alloc(L, op, len);
    memcpy(copy, src, len);
    p->payload = copy;
    p->len = len;
    p->hdr[H_LEN] = (int64_t)len;
}

void lmpi_pack_error(lua_State *L, lmpi_op *op, lmpi_packed *p, const char *msg)
{
    memset(p->hdr, 0, sizeof p->hdr);
    p->hdr[H_KIND] = PK_ERROR;
    pack_bytes(L, op, p, msg, strlen(msg));
}

static void pack_nd(lua_State *L, int idx, lmpi_op *op, lmpi_packed *p)
{
    nd_array *a = nd_test(L, idx);
    p->hdr[H_KIND] = PK_ND;
    p->hdr[H_A] = nd_dtype_of(a);
    p->hdr[H_B] = nd_ndim(a);
    for (int d = 0; d < nd_ndim(a); d++)
        p->hdr[H_SHAPE + d] = (int64_t)nd_shape(a)[d];
    p->len = nd_bytes(a);
    p->hdr[H_LEN] = (int64_t)p->len;
    if (nd_is_contiguous(a)) {
        lmpi_op_keep(L, op, nd_buffer_of(a));
        p->payload = nd_data(a);
    } else {
        unsigned char *copy = lmpi_op_alloc(L, op, p->len);
        nd_copy_out(a, copy);
        p->payload = copy;
    }
}

/* Lays out JSON text + blobs as one payload owned by op. */
static void pack_wire(lua_State *L, int idx, lmpi_op *op, lmpi_packed *p)
{
    lmpi_op_reserve(L, op, 1);
    ippc_blobs blobs;
    blobs_init(&blobs);
    ippc_error err;
    json_t *skel = luavalue_to_wire(L, idx, &blobs, &err);
    int converted = skel != NULL;
    char *text = skel ? jsonout_dumps(skel, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(skel);
    unsigned char *out = NULL;
    size_t tlen = text ? strlen(text) : 0, total = lmpi_align8(tlen) + 8 * blobs.count;
    for (size_t i = 0; i < blobs.count; i++)
        total += lmpi_align8(blobs.items[i].len);
    if (text)
        out = calloc(total ? total : 1, 1);
    if (out) {
        size_t pos = lmpi_align8(tlen);
        memcpy(out, text, tlen);
        for (size_t i = 0; i < blobs.count; i++) {
            int64_t len = (int64_t)blobs.items[i].len;
            memcpy(out + pos + 8 * i, &len, 8);
        }
        pos += 8 * blobs.count;
        for (size_t i = 0; i < blobs.count; i++) {
            memcpy(out + pos, blobs.items[i].data, blobs.items[i].len);
            pos += lmpi_align8(blobs.items[i].len);
        }
        lmpi_op_own(op, out);
        p->hdr[H_KIND] = PK_WIRE;
        p->hdr[H_A] = (int64_t)tlen;
        p->hdr[H_B] = (int64_t)blobs.count;
        p->hdr[H_LEN] = (int64_t)total;
        p->payload = out;
        p->len = total;
    }
    free(text);
    blobs_free(&blobs);
    if (!out)
        lmpi_pack_error(L, op, p, converted ? "out of memory" : err.message);
}

void lmpi_pack(lua_State *L, int idx, lmpi_op *op, lmpi_packed *p)
{
    idx = lua_absindex(L, idx);
    memset(p, 0, sizeof *p);
    int64_t *h = p->hdr;
    switch (lua_type(L, idx)) {
    case LUA_TNONE:
    case LUA_TNIL: h[H_KIND] = PK_NIL; return;
    case LUA_TBOOLEAN: h[H_KIND] = lua_toboolean(L, idx) ? PK_TRUE : PK_FALSE; return;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            h[H_KIND] = PK_INT;
            h[H_A] = (int64_t)lua_tointeger(L, idx);
        } else {
            double d = (double)lua_tonumber(L, idx);
            h[H_KIND] = PK_FLOAT;
            memcpy(&h[H_A], &d, sizeof d);
        }
        return;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        h[H_KIND] = PK_STRING;
        h[H_A] = (int64_t)len;
        pack_bytes(L, op, p, s, len);
        return;
    }
    case LUA_TTABLE: pack_wire(L, idx, op, p); return;
    default: break;
    }
    if (nd_test(L, idx)) {
        pack_nd(L, idx, op, p);
        return;
    }
    char msg[96];
    snprintf(msg, sizeof msg, "cannot send a %s value", luaL_typename(L, idx));
    lmpi_pack_error(L, op, p, msg);
}

/* ---------------------------------------------------------- unpacking */

static void unpack_fail(lua_State *L, const char *what, const char *why)
{
    luaL_error(L, "mpi.%s: received a malformed value (%s); do all ranks make the same call?", what,
               why);
}

static void unpack_nd(lua_State *L, const int64_t *h, const unsigned char *p, nd_buffer *buf,
                      const char *what)
{
    if (h[H_A] < 0 || h[H_A] >= ND_DTYPE_COUNT || h[H_B] < 0 || h[H_B] > ND_MAX_DIMS)
        unpack_fail(L, what, "array header");
    size_t shape[ND_MAX_DIMS], count = 1, es = nd_dtype_size((nd_dtype)h[H_A]);
    for (int d = 0; d < h[H_B]; d++) {
        if (h[H_SHAPE + d] < 0 || (uint64_t)h[H_SHAPE + d] > SIZE_MAX / es)
            unpack_fail(L, what, "array shape");
        shape[d] = (size_t)h[H_SHAPE + d];
        if (shape[d] && count > SIZE_MAX / es / shape[d])
            unpack_fail(L, what, "array shape");
        count *= shape[d];
    }
    if (count * es != lmpi_payload_len(h))
        unpack_fail(L, what, "array size");
    if (count > 0 && buf && ((uintptr_t)p & (es - 1)) == 0) {
        size_t off = (size_t)(p - nd_buffer_data(buf));
        nd_push_buffer_view(L, buf, off, (nd_dtype)h[H_A], (int)h[H_B], shape);
    } else {
        nd_array *a = nd_push_new(L, (nd_dtype)h[H_A], (int)h[H_B], shape);
        memcpy(nd_data(a), p, count * es);
    }
}

typedef struct wire_ctx {
    json_t *skel;
    ippc_blobs blobs;
    ippc_error err;
    int failed;
} wire_ctx;

static int wire_push(lua_State *L)
{
    wire_ctx *w = lua_touserdata(L, 1);
    w->failed = luavalue_push(L, w->skel, &w->blobs, &w->err) < 0;
    return w->failed ? 0 : 1;
}

/* Rebuilds a table from its payload; C objects are freed whatever happens
 * (the Lua side runs protected). */
static void unpack_wire(lua_State *L, const int64_t *h, const unsigned char *p, size_t len,
                        const char *what)
{
    if (h[H_A] < 0 || h[H_B] < 0 || (uint64_t)h[H_A] > len || (uint64_t)h[H_B] > len / 8)
        unpack_fail(L, what, "table header");
    size_t tlen = (size_t)h[H_A], nblobs = (size_t)h[H_B], pos = lmpi_align8(tlen) + 8 * nblobs;
    if (pos > len)
        unpack_fail(L, what, "table header");
    wire_ctx w = {.failed = 1};
    blobs_init(&w.blobs);
    json_error_t jerr;
    w.skel = json_loadb((const char *)p, tlen, JSON_DECODE_ANY, &jerr);
    const char *why = w.skel ? NULL : "table text";
    for (size_t i = 0; !why && i < nblobs; i++) {
        int64_t blen;
        memcpy(&blen, p + lmpi_align8(tlen) + 8 * i, 8);
        if (blen < 0 || (uint64_t)blen > len - pos) {
            why = "table blobs";
            break;
        }
        unsigned char *copy = malloc(blen ? (size_t)blen : 1);
        if (!copy || blobs_push(&w.blobs, copy, (size_t)blen) < 0) {
            why = "out of memory";
            break;
        }
        memcpy(copy, p + pos, (size_t)blen);
        pos += lmpi_align8((size_t)blen);
        if (pos > len)
            pos = len;
    }
    int st = LUA_OK;
    if (!why) {
        lua_pushcfunction(L, wire_push);
        lua_pushlightuserdata(L, &w);
        st = lua_pcall(L, 1, 1, 0);
    }
    json_decref(w.skel);
    blobs_free(&w.blobs);
    if (why)
        unpack_fail(L, what, why);
    if (st != LUA_OK)
        lua_error(L);
    if (w.failed) {
        lua_pop(L, 1);
        luaL_error(L, "mpi.%s: %s", what, w.err.message);
    }
}

void lmpi_unpack(lua_State *L, const int64_t *h, const unsigned char *p, size_t len, nd_buffer *buf,
                 const char *what)
{
    size_t plen = lmpi_payload_len(h);
    if (h[H_LEN] < 0 || plen > len)
        unpack_fail(L, what, "payload size");
    if (!p)
        p = (const unsigned char *)"";
    double d;
    switch (h[H_KIND]) {
    case PK_NIL: lua_pushnil(L); return;
    case PK_FALSE: lua_pushboolean(L, 0); return;
    case PK_TRUE: lua_pushboolean(L, 1); return;
    case PK_INT: lua_pushinteger(L, (lua_Integer)h[H_A]); return;
    case PK_FLOAT:
        memcpy(&d, &h[H_A], sizeof d);
        lua_pushnumber(L, d);
        return;
    case PK_STRING:
        if ((uint64_t)h[H_A] != plen)
            unpack_fail(L, what, "string size");
        lua_pushlstring(L, (const char *)p, plen);
        return;
    case PK_ND: unpack_nd(L, h, p, buf, what); return;
    case PK_WIRE: unpack_wire(L, h, p, plen, what); return;
    case PK_ERROR:
        lua_pushlstring(L, (const char *)p, plen);
        luaL_error(L, "mpi.%s: the sending rank cannot send its value: %s", what,
                   lua_tostring(L, -1));
        return;
    default: unpack_fail(L, what, "unknown kind");
    }
}
