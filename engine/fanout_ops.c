/* fanout_ops.c — push, scatter and gather fanned out by MPI (fanout.h; the
 * messages are in common/proto.h).
 *
 * Each op runs in four phases:
 *   prep      read the task (and, for gather, the variable); a problem is
 *             recorded in the task, and the engine still takes part;
 *   protocol  fan_begin: every participant is in, or the op ends here;
 *   exchange  small headers first (so receivers allocate once), the ok
 *             agreement (fan_settle), then the bulk bytes with one
 *             nonblocking collective; no runtime code here;
 *   finish    assign the globals (push, scatter) or build the root's answer
 *             (gather).
 * The runtime's namespace (fan_ns: Lua or Python) is touched only in prep
 * and finish, by functions that never unwind, so no error can leave the
 * exchange half done and other engines waiting.
 *
 * Arrays move as their raw bytes, straight from where they are (a blob of
 * the root's task, an array's elements) into the buffer that becomes the
 * receiver's array (adopted, not copied).  Other values (JSON from the
 * controller, other values for gather) move packed: a skeleton's JSON text
 * plus its blobs (wire_pack).
 */
#include "fanout_impl.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "bigmem.h"
#include "jsonout.h"
#include "nd.h"

/* push: a namespace's skeleton text and blob lengths up to this size ride
 * in the header broadcast (one collective fewer). */
#define FAN_INLINE 4064

enum { KIND_ARRAY = 1, KIND_WIRE = 2 };

/* ------------------------------------------------------------ helpers */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The sorted names of an object's keys or of a list of strings; NULL when v
 * is neither (or out of memory). */
static json_t *sorted_names(const json_t *v)
{
    size_t n = json_is_object(v) ? json_object_size(v) : json_array_size(v);
    if (!json_is_object(v) && !json_is_array(v))
        return NULL;
    const char **names = malloc(sizeof *names * (n ? n : 1));
    json_t *out = names ? json_array() : NULL;
    if (!out) {
        free(names);
        return NULL;
    }
    size_t k = 0;
    if (json_is_object(v)) {
        const char *key;
        json_t *x;
        json_object_foreach((json_t *)v, key, x)
            names[k++] = key;
    } else {
        for (; out && k < n; k++)
            if (!(names[k] = json_string_value(json_array_get(v, k)))) {
                json_decref(out);
                out = NULL;
            }
    }
    if (out) {
        qsort(names, n, sizeof *names, cmp_str);
        for (size_t i = 0; i < n; i++)
            json_array_append_new(out, json_string(names[i]));
    }
    free(names);
    return out;
}

/* Placeholder renumbering: map mode (a part of a list: new index = order of
 * appearance, idx records the old one) or offset mode (new = offset + old). */
typedef struct fan_map {
    int use_map;
    size_t offset;
    size_t *idx;
    size_t n, cap;
} fan_map;

static int renumber(json_t *v, const ippc_blobs *blobs, fan_map *m, int depth, ippc_error *err)
{
    if (depth > VALUE_MAX_DEPTH + 1)
        return ippc_error_set(err, ERR_INVALID, "value nested deeper than %d levels",
                              VALUE_MAX_DEPTH);
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
            if (renumber(x, blobs, m, depth + 1, err) < 0)
                return -1;
        return 0;
    }
    if (!json_is_object(v))
        return 0;
    nd_ref ref;
    int r = value_nd_ref(v, blobs, &ref, err);
    if (r < 0)
        return -1;
    if (r == 0) {
        const char *key;
        json_t *x;
        json_object_foreach(v, key, x)
            if (renumber(x, blobs, m, depth + 1, err) < 0)
                return -1;
        return 0;
    }
    size_t k = m->offset + ref.blob;
    if (m->use_map) {
        if (m->n == m->cap) {
            size_t cap = m->cap ? m->cap * 2 : 8;
            size_t *idx = realloc(m->idx, cap * sizeof *idx);
            if (!idx)
                return ippc_error_set(err, ERR_INTERNAL, "out of memory");
            m->idx = idx;
            m->cap = cap;
        }
        m->idx[m->n] = ref.blob;
        k = m->n++;
    }
    if (json_object_set_new(v, "$nd", json_integer((json_int_t)k)) < 0)
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    return 0;
}

/* A value as bytes: int64 text length, int64 blob count, the skeleton's
 * JSON text (padded to 8), the blob lengths (int64), the blobs (each padded
 * to 8); skel's placeholders index blobs.  NULL when out of memory. */
static unsigned char *wire_pack(const json_t *skel, const ippc_blob *blobs, size_t nblobs,
                                size_t *len)
{
    char *text = jsonout_dumps(skel, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        return NULL;
    size_t tlen = strlen(text), total = 16 + lmpi_align8(tlen) + 8 * nblobs;
    for (size_t i = 0; i < nblobs; i++)
        total += lmpi_align8(blobs[i].len);
    unsigned char *p = calloc(1, total);
    if (p) {
        int64_t head[2] = {(int64_t)tlen, (int64_t)nblobs};
        memcpy(p, head, sizeof head);
        memcpy(p + 16, text, tlen);
        size_t pos = 16 + lmpi_align8(tlen);
        for (size_t i = 0; i < nblobs; i++) {
            int64_t l = (int64_t)blobs[i].len;
            memcpy(p + pos + 8 * i, &l, 8);
        }
        pos += 8 * nblobs;
        for (size_t i = 0; i < nblobs; i++) {
            if (blobs[i].len)
                memcpy(p + pos, blobs[i].data, blobs[i].len);
            pos += lmpi_align8(blobs[i].len);
        }
        *len = total;
    }
    free(text);
    return p;
}

/* The skeleton of len packed bytes; its blobs are copied to the end of dst
 * and its placeholders renumbered to match.  NULL + err when malformed or
 * out of memory (dst then unchanged). */
static json_t *wire_unpack(const unsigned char *p, size_t len, ippc_blobs *dst, ippc_error *err)
{
    int64_t head[2];
    if (len < 16)
        goto bad;
    memcpy(head, p, sizeof head);
    if (head[0] < 0 || head[1] < 0 || (uint64_t)head[0] > len - 16 ||
        (uint64_t)head[1] > (len - 16) / 8)
        goto bad;
    size_t tlen = (size_t)head[0], nb = (size_t)head[1];
    size_t lens_at = 16 + lmpi_align8(tlen), pos = lens_at + 8 * nb;
    if (lmpi_align8(tlen) > len - 16 || pos > len)
        goto bad;
    ippc_blobs mine;
    blobs_init(&mine);
    for (size_t i = 0; i < nb; i++) {
        int64_t bl;
        memcpy(&bl, p + lens_at + 8 * i, 8);
        if (bl < 0 || (uint64_t)bl > len - pos) {
            blobs_free(&mine);
            goto bad;
        }
        unsigned char *copy = malloc(bl ? (size_t)bl : 1);
        if (!copy || blobs_push(&mine, copy, (size_t)bl) < 0) { /* blobs_push frees copy */
            blobs_free(&mine);
            ippc_error_set(err, ERR_INTERNAL, "out of memory");
            return NULL;
        }
        memcpy(copy, p + pos, (size_t)bl);
        pos += lmpi_align8((size_t)bl);
        if (pos > len)
            pos = len;
    }
    json_error_t jerr;
    json_t *skel = json_loadb((const char *)p + 16, tlen, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    fan_map m = {.offset = dst->count};
    if (!skel || renumber(skel, &mine, &m, 0, err) < 0 || blobs_append_all(dst, &mine) < 0) {
        if (!skel)
            ippc_error_set(err, ERR_INVALID, "packed value: %s", jerr.text);
        else if (mine.count)
            ippc_error_set(err, ERR_INTERNAL, "out of memory");
        json_decref(skel);
        blobs_free(&mine);
        return NULL;
    }
    return skel;
bad:
    ippc_error_set(err, ERR_INVALID, "packed value: malformed header");
    return NULL;
}

/* finish of push and scatter: the names of ns (over blobs). */
static void fan_assign_ns(fan_op *op, const json_t *ns, ippc_blobs *blobs)
{
    op->ns->assign(op->ns->self, op->c, ns, blobs);
}

static int task_ok(const fan_op *op)
{
    return op->c->status == TASK_OK;
}

/* ------------------------------------------------------------ push */

typedef struct push_hdr {
    int64_t ok, textlen, nblobs, inl;
    unsigned char meta[FAN_INLINE]; /* text (padded to 8), then nblobs int64 lengths */
} push_hdr;

/* The root broadcasts the namespace's skeleton (its JSON text and blob
 * lengths), then every blob's bytes, each with one MPI_Ibcast; every
 * engine assigns the same globals. */
static void fan_push(fan_op *op)
{
    task_ctx *c = op->c;
    const int is_root = op->is_root; /* set when the op began; fixed for its life */
    const json_t *ns = json_object_get(c->task, "ns");
    push_hdr *h = calloc(1, sizeof *h);
    char *text = NULL;
    unsigned char *meta = NULL;
    json_t *skel = NULL;
    ippc_blobs got;
    blobs_init(&got);
    if (!h) {
        fan_oom(op, sizeof *h);
        return; /* the others wait for this rank until they are interrupted */
    }
    json_t *desc = NULL;
    size_t meta_len = 0;
    if (is_root) {
        if (!json_is_object(ns))
            task_fail(c, TASK_ERROR, "ProtocolError", "push needs an object 'ns'");
        else if (!(desc = sorted_names(ns)) || !(text = jsonout_dumps(ns, JSON_COMPACT)))
            fan_oom(op, 0);
        if (text) {
            size_t tlen = strlen(text), nb = c->task_blobs->count;
            meta_len = lmpi_align8(tlen) + 8 * nb;
            if ((meta = calloc(1, meta_len ? meta_len : 1))) {
                memcpy(meta, text, tlen);
                for (size_t i = 0; i < nb; i++) {
                    int64_t l = (int64_t)c->task_blobs->items[i].len;
                    memcpy(meta + lmpi_align8(tlen) + 8 * i, &l, 8);
                }
                h->textlen = (int64_t)tlen;
                h->nblobs = (int64_t)nb;
                h->inl = meta_len <= FAN_INLINE;
                if (h->inl)
                    memcpy(h->meta, meta, meta_len);
            } else {
                fan_oom(op, meta_len);
            }
        }
    } else {
        desc = sorted_names(json_object_get(c->task, "names")); /* else: a mismatch */
    }
    fan_digest(op, desc);
    if (fan_begin(op) < 0)
        goto done;

    /* exchange */
    MPI_Comm comm = op->cs->comm;
    MPI_Request req;
    h->ok = task_ok(op);
    if (fan_wait(op, MPI_Ibcast(h, sizeof *h, MPI_BYTE, op->rc, comm, &req), &req))
        goto done;
    if (!h->ok) {
        fan_fail_from(op, op->rc);
        goto done;
    }
    size_t tlen = (size_t)h->textlen, nb = (size_t)h->nblobs;
    if (h->textlen < 0 || h->nblobs < 0 || h->nblobs > (1 << 24) || h->textlen > (1LL << 40)) {
        task_fail(c, TASK_ERROR, "ProtocolError", "push: a malformed header from the root");
        tlen = nb = 0;
    }
    meta_len = lmpi_align8(tlen) + 8 * nb;
    const unsigned char *m = is_root ? meta : h->meta;
    if (!h->inl) {
        if (!is_root && task_ok(op) && !(meta = malloc(meta_len ? meta_len : 1)))
            fan_oom(op, meta_len);
        if (fan_settle(op) < 0)
            goto done;
        if (fan_wait(op, MPI_Ibcast_c(meta, (MPI_Count)meta_len, MPI_BYTE, op->rc, comm, &req),
                     &req))
            goto done;
        m = meta;
    }
    if (!is_root && task_ok(op)) {
        /* h->meta, or meta: had its malloc failed, fan_oom would have failed the task */
        assert(m);
        json_error_t jerr;
        skel = json_loadb((const char *)m, tlen, JSON_ALLOW_NUL, &jerr);
        if (!json_is_object(skel))
            task_fail(c, TASK_ERROR, "ProtocolError", "push: cannot read the root's namespace: %s",
                      skel ? "not an object" : jerr.text);
        for (size_t i = 0; i < nb && task_ok(op); i++) {
            int64_t l;
            memcpy(&l, m + lmpi_align8(tlen) + 8 * i, 8);
            /* bigmem: the block the last round freed, when there is one
             * (fresh pages cost more than MPI's copy into them) */
            unsigned char *data = l >= 0 ? bigmem_alloc((size_t)l) : NULL;
            if (!data || blobs_push(&got, data, (size_t)l) < 0)
                fan_oom(op, (size_t)l);
        }
    }
    if (fan_settle(op) < 0)
        goto done;
    ippc_blobs *blobs = is_root ? c->task_blobs : &got;
    for (size_t i = 0; i < nb; i++) {
        ippc_blob *b = &blobs->items[i];
        if (b->len > 0 &&
            fan_wait(op, MPI_Ibcast_c(b->data, (MPI_Count)b->len, MPI_BYTE, op->rc, comm, &req),
                     &req))
            goto done;
    }

    /* finish */
    fan_assign_ns(op, is_root ? ns : skel, blobs);
done:
    json_decref(skel);
    blobs_free(&got);
    free(meta);
    free(text);
    free(h);
}

/* ------------------------------------------------------------ scatter */

enum { SH_OK, SH_KIND, SH_DTYPE, SH_NDIM, SH_ITEMS, SH_SHAPE, SH_WORDS = SH_SHAPE + ND_MAX_DIMS };

/* The part [start, start + count) of a list, packed. */
static unsigned char *pack_part(const json_t *list, size_t start, size_t count,
                                const ippc_blobs *blobs, size_t *len, ippc_error *err)
{
    json_t *part = json_array();
    fan_map m = {.use_map = 1};
    unsigned char *p = NULL;
    for (size_t k = start; part && k < start + count; k++)
        if (json_array_append_new(part, json_deep_copy(json_array_get(list, k))) < 0) {
            json_decref(part);
            part = NULL;
        }
    if (!part) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (renumber(part, blobs, &m, 0, err) == 0) {
        ippc_blob *views = malloc(sizeof *views * (m.n ? m.n : 1));
        for (size_t j = 0; views && j < m.n; j++)
            views[j] = blobs->items[m.idx[j]]; /* borrowed, not owned */
        p = views ? wire_pack(part, views, m.n, len) : NULL;
        if (!p)
            ippc_error_set(err, ERR_INTERNAL, "out of memory");
        free(views);
    }
    free(m.idx);
    json_decref(part);
    return p;
}

/* The root sends each participant counts[i] items along the first axis:
 * the rows of an array (raw bytes, one MPI_Iscatterv from the blob), or a
 * packed part of a list. */
static void fan_scatter(fan_op *op)
{
    task_ctx *c = op->c;
    size_t n = (size_t)op->n;
    const json_t *jname = json_object_get(c->task, "name");
    const json_t *jcounts = json_object_get(c->task, "counts");
    op->name = json_string_value(jname);
    /* per participant: counts, send counts, displacements, sizes, parts */
    size_t *cnt = calloc(n, sizeof *cnt);
    MPI_Count *sc = calloc(n, sizeof *sc);
    MPI_Aint *sd = calloc(n, sizeof *sd);
    int64_t *sizes = calloc(n, sizeof *sizes);
    unsigned char **parts = calloc(n, sizeof *parts);
    unsigned char *recv = NULL;
    ippc_blobs got;
    blobs_init(&got);
    json_t *skel = NULL, *ns = NULL;
    if (!cnt || !sc || !sd || !sizes || !parts) {
        fan_oom(op, n * sizeof(MPI_Count));
        goto out; /* the others wait for this rank until they are interrupted */
    }
    if (!op->name)
        task_fail(c, TASK_ERROR, "ProtocolError", "scatter needs a string 'name'");
    size_t total = 0;
    int counts_ok = json_array_size(jcounts) == n;
    for (size_t i = 0; counts_ok && i < n; i++) {
        const json_t *x = json_array_get(jcounts, i);
        counts_ok = json_is_integer(x) && json_integer_value(x) >= 0 &&
                    (uint64_t)json_integer_value(x) <= SIZE_MAX - total;
        cnt[i] = counts_ok ? (size_t)json_integer_value(x) : 0;
        total += cnt[i];
    }
    if (!counts_ok && task_ok(op))
        task_fail(c, TASK_ERROR, "ValueError",
                  "scatter: 'counts' must be a list of %zu item counts (one per rank)", n);
    int64_t h[SH_WORDS];
    memset(h, 0, sizeof h);
    const void *sendbuf = MPI_BOTTOM;
    if (op->is_root && task_ok(op)) {
        const json_t *v = json_object_get(c->task, "value");
        nd_ref ref;
        ippc_error err;
        int r = v ? value_nd_ref(v, c->task_blobs, &ref, &err) : 0;
        if (!v)
            task_fail(c, TASK_ERROR, "ProtocolError", "scatter needs a 'value' on the root");
        else if (r < 0)
            task_fail(c, TASK_ERROR, "ValueError", "scatter: %s", err.message);
        else if (r == 1 && ref.ndim < 1)
            task_fail(c, TASK_ERROR, "ValueError", "scatter needs an array of 1 or more dims");
        else if (r == 0 && !json_is_array(v))
            task_fail(c, TASK_ERROR, "ValueError",
                      "cannot scatter a %s: scatter needs a list or an array",
                      json_is_object(v) ? "object" : "scalar");
        size_t items = r == 1 ? ref.shape[0] : json_array_size(v);
        if (task_ok(op) && items != total)
            task_fail(c, TASK_ERROR, "ValueError",
                      "scatter: 'counts' add up to %zu items, the %s has %zu", total,
                      r == 1 ? "array" : "list", items);
        if (task_ok(op) && r == 1) {
            h[SH_KIND] = KIND_ARRAY;
            h[SH_DTYPE] = ref.dtype;
            h[SH_NDIM] = ref.ndim;
            for (int d = 0; d < ref.ndim; d++)
                h[SH_SHAPE + d] = (int64_t)ref.shape[d];
            size_t row = items ? ref.count * nd_dtype_size(ref.dtype) / items : 0, off = 0;
            if (!items) { /* rows of an empty array still have a size */
                row = nd_dtype_size(ref.dtype);
                for (int d = 1; d < ref.ndim; d++)
                    row *= ref.shape[d];
            }
            for (size_t i = 0; i < n; i++) {
                sc[i] = (MPI_Count)(cnt[i] * row);
                sd[i] = (MPI_Aint)off;
                off += cnt[i] * row;
            }
            sendbuf = c->task_blobs->items[ref.blob].data;
        } else if (task_ok(op)) {
            h[SH_KIND] = KIND_WIRE;
            for (size_t i = 0, start = 0; i < n && task_ok(op); start += cnt[i++]) {
                size_t len = 0;
                parts[i] = pack_part(v, start, cnt[i], c->task_blobs, &len, &err);
                if (!parts[i])
                    task_fail(c, TASK_ERROR, "ValueError", "scatter: %s", err.message);
                sizes[i] = (int64_t)len;
                sc[i] = (MPI_Count)len;
                MPI_Get_address(parts[i], &sd[i]); /* sent from MPI_BOTTOM */
            }
        }
        h[SH_ITEMS] = (int64_t)items;
    }
    fan_digest(op, json_pack("[O?, O?]", jname, jcounts));
    if (fan_begin(op) < 0)
        goto out;

    /* exchange */
    MPI_Comm comm = op->cs->comm;
    MPI_Request req;
    h[SH_OK] = task_ok(op);
    if (fan_wait(op, MPI_Ibcast(h, SH_WORDS, MPI_INT64_T, op->rc, comm, &req), &req))
        goto out;
    if (!h[SH_OK]) {
        fan_fail_from(op, op->rc);
        goto out;
    }
    int is_array = h[SH_KIND] == KIND_ARRAY;
    size_t mine = 0;
    if (is_array) {
        if (h[SH_DTYPE] < 0 || h[SH_DTYPE] >= ND_DTYPE_COUNT || h[SH_NDIM] < 1 ||
            h[SH_NDIM] > ND_MAX_DIMS) {
            task_fail(c, TASK_ERROR, "ProtocolError", "scatter: a malformed header from the root");
        } else {
            size_t row = nd_dtype_size((nd_dtype)h[SH_DTYPE]);
            for (int d = 1; d < h[SH_NDIM]; d++)
                row *= (size_t)h[SH_SHAPE + d];
            mine = cnt[op->me] * row;
        }
    } else {
        int64_t len = 0;
        if (fan_wait(op,
                     MPI_Iscatter(sizes, 1, MPI_INT64_T, &len, 1, MPI_INT64_T, op->rc, comm, &req),
                     &req))
            goto out;
        mine = len > 0 ? (size_t)len : 0;
    }
    if (task_ok(op) && !(recv = bigmem_alloc(mine)))
        fan_oom(op, mine);
    if (fan_settle(op) < 0)
        goto out;
    if (fan_wait(op,
                 MPI_Iscatterv_c(sendbuf, sc, sd, MPI_BYTE, recv, (MPI_Count)mine, MPI_BYTE, op->rc,
                                 comm, &req),
                 &req))
        goto out;

    /* finish: a one-name namespace over the received bytes */
    ippc_error err;
    if (is_array) {
        size_t shape[ND_MAX_DIMS];
        for (int d = 0; d < h[SH_NDIM]; d++)
            shape[d] = (size_t)h[SH_SHAPE + d];
        shape[0] = cnt[op->me];
        if (blobs_push(&got, recv, mine) < 0) /* takes recv, even when it fails */
            fan_oom(op, mine);
        else
            skel = value_nd_placeholder((nd_dtype)h[SH_DTYPE], (int)h[SH_NDIM], shape, 0);
        recv = NULL;
    } else if (!(skel = wire_unpack(recv, mine, &got, &err))) {
        task_fail(c, TASK_ERROR, "ValueError", "scatter: %s", err.message);
    }
    if (skel && !(ns = json_pack("{s:O}", op->name, skel)))
        fan_oom(op, 0);
    if (ns)
        fan_assign_ns(op, ns, &got);
out:
    json_decref(ns);
    json_decref(skel);
    blobs_free(&got);
    bigmem_free(recv);
    for (size_t i = 0; parts && i < n; i++)
        free(parts[i]);
    free(parts);
    free(sizes);
    free(sd);
    free(sc);
    free(cnt);
}

/* ------------------------------------------------------------ gather */

enum { GH_OK, GH_KIND, GH_DTYPE, GH_NDIM, GH_BYTES, GH_SHAPE, GH_WORDS = GH_SHAPE + ND_MAX_DIMS };

/* 1 if every header is an array of one dtype, one ndim and one trailing
 * shape (the bytes then concatenate along the first axis). */
static int gather_concatenates(const int64_t *all, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const int64_t *g = all + i * GH_WORDS;
        if (g[GH_KIND] != KIND_ARRAY || g[GH_DTYPE] != all[GH_DTYPE] ||
            g[GH_NDIM] != all[GH_NDIM] || g[GH_NDIM] < 1 || g[GH_NDIM] > ND_MAX_DIMS ||
            g[GH_DTYPE] < 0 || g[GH_DTYPE] >= ND_DTYPE_COUNT || g[GH_BYTES] < 0)
            return 0;
        for (int d = 1; d < g[GH_NDIM]; d++)
            if (g[GH_SHAPE + d] != all[GH_SHAPE + d])
                return 0;
    }
    return 1;
}

/* Every participant sends its variable to the root: all arrays of one dtype
 * and trailing shape are concatenated along the first axis by one
 * MPI_Igatherv into the root's answer (one blob); anything else is
 * gathered packed and the root answers the values one by one ("parts"). */
static void fan_gather(fan_op *op)
{
    task_ctx *c = op->c;
    const int is_root = op->is_root; /* set when the op began; fixed for its life */
    size_t n = (size_t)op->n;
    const json_t *jname = json_object_get(c->task, "name");
    op->name = json_string_value(jname);
    int64_t *all = calloc(n, sizeof(int64_t) * GH_WORDS), *pairs = calloc(n, 2 * sizeof(int64_t));
    MPI_Count *counts = calloc(n, sizeof *counts);
    MPI_Aint *displs = calloc(n, sizeof *displs);
    unsigned char *packed = NULL, *buf = NULL;
    fan_value v;
    memset(&v, 0, sizeof v);
    int have = 0;
    if (!all || !pairs || !counts || !displs) {
        fan_oom(op, n * sizeof(int64_t) * GH_WORDS);
        goto out; /* the others wait for this rank until they are interrupted */
    }
    int64_t h[GH_WORDS];
    memset(h, 0, sizeof h);
    const void *data = NULL;
    if (!op->name)
        task_fail(c, TASK_ERROR, "ProtocolError", "gather needs a string 'name'");
    else
        have = op->ns->read(op->ns->self, c, op->name, &v) == 0;
    if (task_ok(op)) {
        assert(have);
        if (v.is_array) {
            h[GH_KIND] = KIND_ARRAY;
            h[GH_DTYPE] = v.dtype;
            h[GH_NDIM] = v.ndim;
            for (int d = 0; d < v.ndim; d++)
                h[GH_SHAPE + d] = (int64_t)v.shape[d];
            h[GH_BYTES] = (int64_t)v.bytes;
            data = v.data;
        } else {
            size_t len = 0;
            h[GH_KIND] = KIND_WIRE;
            if (!(packed = wire_pack(v.skel, v.blobs.items, v.blobs.count, &len)))
                fan_oom(op, 0);
            h[GH_BYTES] = (int64_t)len;
            data = packed;
        }
    }
    fan_digest(op, json_pack("[O?]", jname));
    if (fan_begin(op) < 0)
        goto out;

    /* exchange: the headers everywhere, so every engine takes the same path */
    MPI_Comm comm = op->cs->comm;
    MPI_Request req;
    h[GH_OK] = task_ok(op);
    if (fan_wait(op,
                 MPI_Iallgather(h, GH_WORDS, MPI_INT64_T, all, GH_WORDS, MPI_INT64_T, comm, &req),
                 &req))
        goto out;
    for (size_t i = 0; i < n; i++)
        if (!all[i * GH_WORDS + GH_OK]) {
            fan_fail_from(op, (int)i);
            goto out;
        }
    int concat = gather_concatenates(all, n);
    if (!concat) { /* parts: every value packed, its size told to everyone */
        if (h[GH_KIND] == KIND_ARRAY) {
            /* every rank is ok (the exchange checked), so this rank's bytes are at hand */
            assert(data || h[GH_BYTES] == 0);
            size_t shape[ND_MAX_DIMS], len = 0;
            for (int d = 0; d < h[GH_NDIM]; d++)
                shape[d] = (size_t)h[GH_SHAPE + d];
            json_t *ph = value_nd_placeholder((nd_dtype)h[GH_DTYPE], (int)h[GH_NDIM], shape, 0);
            ippc_blob view = {(unsigned char *)data, (size_t)h[GH_BYTES]};
            if (!ph || !(packed = wire_pack(ph, &view, 1, &len)))
                fan_oom(op, (size_t)h[GH_BYTES]);
            json_decref(ph);
            data = packed;
            h[GH_BYTES] = (int64_t)len;
        }
        int64_t mine[2] = {task_ok(op), h[GH_BYTES]};
        if (fan_wait(op, MPI_Iallgather(mine, 2, MPI_INT64_T, pairs, 2, MPI_INT64_T, comm, &req),
                     &req))
            goto out;
        for (size_t i = 0; i < n; i++)
            if (!pairs[2 * i]) {
                fan_fail_from(op, (int)i);
                goto out;
            }
        for (size_t i = 0; i < n; i++)
            all[i * GH_WORDS + GH_BYTES] = pairs[2 * i + 1];
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t b = (size_t)all[i * GH_WORDS + GH_BYTES];
        counts[i] = (MPI_Count)b;
        displs[i] = (MPI_Aint)total;
        total += concat ? b : lmpi_align8(b);
    }
    if (is_root && !(buf = bigmem_alloc(total)))
        fan_oom(op, total);
    if (fan_settle(op) < 0)
        goto out;
    if (fan_wait(op,
                 MPI_Igatherv_c(data, (MPI_Count)h[GH_BYTES], MPI_BYTE, buf, counts, displs,
                                MPI_BYTE, op->rc, comm, &req),
                 &req))
        goto out;
    if (!is_root)
        goto out; /* a non-root answers no value */
    assert(buf);  /* had bigmem_alloc failed, fan_settle would have failed the op */

    /* finish (root): one array, or the parts */
    if (concat) {
        size_t shape[ND_MAX_DIMS] = {0};
        for (int d = 1; d < all[GH_NDIM]; d++)
            shape[d] = (size_t)all[GH_SHAPE + d];
        for (size_t i = 0; i < n; i++)
            shape[0] += (size_t)all[i * GH_WORDS + GH_SHAPE];
        json_t *ph = value_nd_placeholder((nd_dtype)all[GH_DTYPE], (int)all[GH_NDIM], shape,
                                          c->result_blobs->count);
        long k = blobs_push(c->result_blobs, buf, total); /* takes buf */
        buf = NULL;
        if (!ph || k < 0 || !(c->value = json_pack("{s:o}", op->name, ph)))
            fan_oom(op, total);
    } else {
        c->parts = json_array();
        for (size_t i = 0; c->parts && i < n && task_ok(op); i++) {
            ippc_error err;
            json_t *part = wire_unpack(buf + displs[i], (size_t)counts[i], c->result_blobs, &err);
            if (!part)
                task_fail(c, TASK_ERROR, "ValueError", "gather '%s': rank %d's value: %s", op->name,
                          op->ranks[i], err.message);
            else if (json_array_append_new(c->parts, part) < 0)
                fan_oom(op, 0);
        }
        if (!c->parts)
            fan_oom(op, 0);
    }
out:
    if (have || v.skel || v.hold[0] || v.hold[1])
        op->ns->release(op->ns->self, &v);
    bigmem_free(buf);
    free(packed);
    free(displs);
    free(counts);
    free(pairs);
    free(all);
}

/* ------------------------------------------------------------ dispatch */

void op_fanout(const fan_ns *ns, task_ctx *c, fanout *f)
{
    const char *what = json_string_value(json_object_get(c->task, "op"));
    void (*run)(fan_op *) = NULL;
    if (strcmp(what, "push") == 0)
        run = fan_push;
    else if (strcmp(what, "scatter") == 0)
        run = fan_scatter;
    else if (strcmp(what, "gather") == 0)
        run = fan_gather;
    if (!run) {
        task_fail(c, TASK_ERROR, "ProtocolError",
                  "'fanout' goes with op push, scatter or gather, not '%s'", what);
        return;
    }
    fan_op op;
    if (fan_op_init(&op, f, c, ns, what) == 0)
        run(&op);
    fan_op_clear(&op);
}
