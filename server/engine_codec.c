/* engine_codec.c — task messages to engines and results from them (see
 * engine_codec.h and common/proto.h for the wire format).
 *
 * Every value a client sends becomes a skeleton plus blobs here, once; the
 * blobs become ws_blobrefs, so one array pushed to many engines is held once
 * and each send only takes a reference.
 */
#include "engine_codec.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "jsonout.h"
#include "registry.h"

#define EVENT_RESULT_MAX ((size_t)64 * 1024)

/* ------------------------------------------------------------ messages */

codec_msg *codec_msg_new(json_t *msg, ippc_blobs *blobs, ippc_error *err)
{
    codec_msg *m = msg ? calloc(1, sizeof *m) : NULL;
    if (m) {
        m->refs = 1;
        m->msg = msg;
        m->blobs = ws_blobrefs_take(blobs, &m->nblobs);
        if (!blobs || blobs->count == 0 || m->blobs)
            return m;
        free(m);
        m = NULL;
    }
    json_decref(msg);
    if (blobs)
        blobs_free(blobs);
    if (!err->code[0])
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
    return NULL;
}

codec_msg *codec_msg_new_refs(json_t *msg, ws_blobref **refs, size_t n, ippc_error *err)
{
    codec_msg *m = msg ? calloc(1, sizeof *m) : NULL;
    if (!m) {
        json_decref(msg);
        ws_blobrefs_release(refs, n);
        if (!err->code[0])
            ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    m->refs = 1;
    m->msg = msg;
    m->blobs = refs;
    m->nblobs = n;
    return m;
}

codec_msg *codec_msg_ref(codec_msg *m)
{
    if (m)
        __atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
    return m;
}

void codec_msg_unref(codec_msg *m)
{
    if (!m || __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    json_decref(m->msg);
    ws_blobrefs_release(m->blobs, m->nblobs);
    free(m);
}

size_t codec_msg_bytes(const codec_msg *m)
{
    size_t n = json_bytes_estimate(m->msg);
    for (size_t i = 0; i < m->nblobs; i++)
        n += ws_blobref_len(m->blobs[i]);
    return n;
}

int codec_valid_name(const char *name, ippc_error *err)
{
    size_t n = name ? strlen(name) : 0;
    int ok =
        n > 0 && n <= 128 && (name[0] == '_' || ((name[0] | 32) >= 'a' && (name[0] | 32) <= 'z'));
    for (size_t i = 1; ok && i < n; i++) {
        char c = name[i];
        ok = c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z');
    }
    if (!ok)
        return ippc_error_set(err, ERR_INVALID,
                              "'%.64s' is not a valid variable name (letters, digits, _; "
                              "not starting with a digit)",
                              name ? name : "");
    return 0;
}

static const char *body_string(const json_t *body, const char *key, int required, ippc_error *err)
{
    json_t *v = json_object_get(body, key);
    if (!v && !required)
        return NULL;
    if (!json_is_string(v)) {
        ippc_error_set(err, ERR_BAD_REQUEST, "field \"%s\" must be a string", key);
        return NULL;
    }
    return json_string_value(v);
}

static json_t *task_msg(const char *op)
{
    return json_pack("{s:s, s:s}", "type", "task", "op", op);
}

/* Client namespace object -> push message with skeletons. */
static json_t *push_message(const json_t *ns, ippc_blobs *blobs, ippc_error *err)
{
    if (!json_is_object(ns) || json_object_size(ns) == 0) {
        ippc_error_set(err, ERR_BAD_REQUEST, "\"namespace\" must be a non-empty object");
        return NULL;
    }
    json_t *wire = json_object();
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)ns, key, value) {
        json_t *skel = NULL;
        if (codec_valid_name(key, err) < 0 || !(skel = value_from_client(value, blobs, err))) {
            json_decref(wire);
            return NULL;
        }
        json_object_set_new(wire, key, skel);
    }
    json_t *msg = task_msg("push");
    json_object_set_new(msg, "ns", wire);
    return msg;
}

static json_t *pull_message(json_t *names)
{
    json_t *msg = task_msg("pull");
    json_object_set_new(msg, "names", names);
    return msg;
}

/* The skeletons of args and kwargs: each argument a client value of its
 * own.  0, or -1 + err (nothing left in *wargs / *wkwargs). */
static int encode_arguments(const json_t *args, const json_t *kwargs, ippc_blobs *blobs,
                            json_t **wargs, json_t **wkwargs, ippc_error *err)
{
    if ((args && !json_is_array(args)) || (kwargs && !json_is_object(kwargs)))
        return ippc_error_set(err, ERR_BAD_REQUEST,
                              "\"args\" must be a list and \"kwargs\" an object");
    *wargs = json_array();
    *wkwargs = json_object();
    size_t i;
    json_t *v;
    json_array_foreach(args, i, v) {
        json_t *w = value_from_client(v, blobs, err);
        if (!w)
            goto fail;
        json_array_append_new(*wargs, w);
    }
    const char *k;
    json_object_foreach((json_t *)kwargs, k, v) {
        json_t *w = value_from_client(v, blobs, err);
        if (!w)
            goto fail;
        json_object_set_new(*wkwargs, k, w);
    }
    return 0;
fail:
    json_decref(*wargs);
    json_decref(*wkwargs);
    *wargs = *wkwargs = NULL;
    return -1;
}

codec_msg *codec_apply(const char *function, const json_t *args, const json_t *kwargs,
                       ippc_error *err)
{
    if (codec_valid_name(function, err) < 0)
        return NULL;
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *wargs = NULL, *wkwargs = NULL;
    if (encode_arguments(args, kwargs, &blobs, &wargs, &wkwargs, err) < 0) {
        blobs_free(&blobs);
        return NULL;
    }
    json_t *msg = task_msg("apply");
    json_object_set_new(msg, "function", json_string(function));
    json_object_set_new(msg, "args", wargs);
    json_object_set_new(msg, "kwargs", wkwargs);
    return codec_msg_new(msg, &blobs, err);
}

codec_msg *codec_map(const char *function, const json_t *sequences, ippc_error *err)
{
    if (codec_valid_name(function, err) < 0)
        return NULL;
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *wseqs, *unused;
    if (encode_arguments(sequences, NULL, &blobs, &wseqs, &unused, err) < 0) {
        blobs_free(&blobs);
        return NULL;
    }
    json_decref(unused);
    json_t *msg = task_msg("map");
    json_object_set_new(msg, "function", json_string(function));
    json_object_set_new(msg, "sequences", wseqs);
    return codec_msg_new(msg, &blobs, err);
}

codec_msg *codec_execute(const char *code, ippc_error *err)
{
    json_t *msg = task_msg("execute");
    json_object_set_new(msg, "code", json_string(code));
    return codec_msg_new(msg, NULL, err);
}

codec_msg *codec_view_call(const hub_call *c, ippc_error *err)
{
    const json_t *b = c->body;
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *msg = NULL;
    switch (c->op) {
    case HUB_OP_EXECUTE: {
        const char *code = body_string(b, "code", 1, err);
        return code ? codec_execute(code, err) : NULL;
    }
    case HUB_OP_RUN: {
        const char *source = body_string(b, "source", 1, err);
        if (!source)
            return NULL;
        const char *filename = body_string(b, "filename", 0, err);
        if (!filename && json_object_get(b, "filename"))
            return NULL;
        msg = json_pack("{s:s, s:s, s:s, s:s}", "type", "task", "op", "run", "filename",
                        filename ? filename : "<run>", "source", source);
        break;
    }
    case HUB_OP_PUSH:
        if (c->wire_value) {
            if (codec_valid_name(c->name, err) < 0)
                return NULL;
            msg = json_pack("{s:s, s:s, s:{s:O}}", "type", "task", "op", "push", "ns", c->name,
                            c->wire_value);
            if (c->wire_blobs)
                blobs_append_all(&blobs, c->wire_blobs);
        } else {
            msg = push_message(json_object_get(b, "namespace"), &blobs, err);
        }
        break;
    case HUB_OP_LOAD: {
        const char *lib = body_string(b, "library", 1, err);
        if (!lib)
            return NULL;
        if (!*lib || strlen(lib) > 4096) {
            ippc_error_set(err, ERR_INVALID, "\"library\" must be a path to a .so");
            return NULL;
        }
        msg = task_msg("load");
        json_object_set_new(msg, "library", json_string(lib));
        break;
    }
    case HUB_OP_RESET: msg = task_msg("reset"); break;
    case HUB_OP_LIST: msg = task_msg("list"); break;
    case HUB_OP_DELETE:
        if (codec_valid_name(c->name, err) < 0)
            return NULL;
        msg = json_pack("{s:s, s:s, s:[s]}", "type", "task", "op", "delete", "names", c->name);
        break;
    case HUB_OP_PULL:
    case HUB_OP_GATHER:
        if (codec_valid_name(c->name, err) < 0)
            return NULL;
        msg = pull_message(json_pack("[s]", c->name));
        break;
    case HUB_OP_PULL_MANY: {
        json_t *names = json_object_get(b, "names");
        if (!json_is_array(names) || json_array_size(names) == 0) {
            ippc_error_set(err, ERR_BAD_REQUEST, "\"names\" must be a non-empty list");
            return NULL;
        }
        size_t i;
        json_t *n;
        json_array_foreach(names, i, n) {
            if (!json_is_string(n)) {
                ippc_error_set(err, ERR_BAD_REQUEST, "\"names\" must hold strings");
                return NULL;
            }
            if (codec_valid_name(json_string_value(n), err) < 0)
                return NULL;
        }
        msg = pull_message(json_deep_copy(names));
        break;
    }
    case HUB_OP_APPLY: {
        const char *fn = body_string(b, "function", 1, err);
        return fn ? codec_apply(fn, json_object_get(b, "args"), json_object_get(b, "kwargs"), err)
                  : NULL;
    }
    case HUB_OP_SCATTER:
    case HUB_OP_MAP:
        ippc_error_set(err, ERR_INTERNAL, "not a single-payload view operation");
        return NULL;
    }
    if (!msg) {
        blobs_free(&blobs);
        if (!err->code[0])
            ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    return codec_msg_new(msg, &blobs, err);
}

/* ------------------------------------------------------------ scatter */

int codec_scatter_decode(const hub_call *c, codec_scatter *out, ippc_error *err)
{
    memset(out, 0, sizeof *out);
    blobs_init(&out->view);
    const char *name = body_string(c->body, "name", 1, err);
    if (!name || codec_valid_name(name, err) < 0)
        return -1;
    json_t *data = json_object_get(c->body, "data");
    if (!data && !c->wire_value)
        return ippc_error_set(err, ERR_BAD_REQUEST, "field \"data\" is required");
    ippc_blobs blobs;
    blobs_init(&blobs);
    if (c->wire_value) {
        out->skel = json_deep_copy(c->wire_value);
        if (c->wire_blobs)
            blobs_append_all(&blobs, c->wire_blobs);
    } else {
        out->skel = value_from_client(data, &blobs, err);
    }
    out->name = strdup(name);
    size_t n = blobs.count;
    out->view.items = n ? calloc(n, sizeof *out->view.items) : NULL;
    out->refs = ws_blobrefs_take(&blobs, &out->nrefs); /* frees blobs on failure */
    if (!out->skel || !out->name || (n && (!out->view.items || !out->refs))) {
        if (!err->code[0])
            ippc_error_set(err, ERR_INTERNAL, "out of memory");
        codec_scatter_clear(out);
        return -1;
    }
    assert(out->nrefs == n);
    for (size_t i = 0; i < n; i++) {
        /* read-only: view owns nothing (codec_scatter_clear frees items only) */
        out->view.items[i].data = (unsigned char *)ws_blobref_data(out->refs[i]);
        out->view.items[i].len = ws_blobref_len(out->refs[i]);
    }
    out->view.count = out->view.cap = n;
    return 0;
}

void codec_scatter_clear(codec_scatter *s)
{
    free(s->name);
    json_decref(s->skel);
    ws_blobrefs_release(s->refs, s->nrefs);
    free(s->view.items);
    memset(s, 0, sizeof *s);
}

/* An array's part i of p: the rows scatter_partition gives it, as a slice of
 * the array's buffer (no copy).  0, or -1 + err. */
static int scatter_slice(const codec_scatter *s, const nd_ref *ref, size_t p, size_t i,
                         codec_msg **out, ippc_error *err)
{
    size_t start, count;
    scatter_partition(ref->shape[0], p, i, &start, &count);
    size_t whole = s->view.items[ref->blob].len;
    size_t row_bytes = ref->shape[0] ? whole / ref->shape[0] : 0;
    size_t shape[ND_MAX_DIMS];
    memcpy(shape, ref->shape, sizeof shape);
    shape[0] = count;
    ws_blobref **refs = malloc(sizeof *refs);
    ws_blobref *slice = ws_blobref_slice(s->refs[ref->blob], start * row_bytes, count * row_bytes);
    json_t *part = value_nd_placeholder(ref->dtype, ref->ndim, shape, 0);
    json_t *msg =
        part ? json_pack("{s:s, s:s, s:{s:o}}", "type", "task", "op", "push", "ns", s->name, part)
             : NULL;
    if (!refs || !slice || !msg) {
        free(refs);
        ws_blobref_release(slice);
        json_decref(msg);
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    refs[0] = slice;
    *out = codec_msg_new_refs(msg, refs, 1, err);
    return *out ? 0 : -1;
}

int codec_scatter_split(const codec_scatter *s, size_t p, codec_msg **out, ippc_error *err)
{
    nd_ref ref;
    int is_nd = value_nd_ref(s->skel, &s->view, &ref, err);
    if (is_nd < 0)
        return -1;
    if (is_nd && ref.ndim >= 1) {
        for (size_t i = 0; i < p; i++) {
            if (scatter_slice(s, &ref, p, i, &out[i], err) < 0) {
                for (size_t k = 0; k < i; k++) {
                    codec_msg_unref(out[k]);
                    out[k] = NULL;
                }
                return -1;
            }
        }
        return 0;
    }
    /* lists (and what cannot be scattered, for value_scatter's error): each
     * part gets copies of the arrays in its items */
    json_t **parts = calloc(p, sizeof *parts);
    ippc_blobs *part_blobs = calloc(p, sizeof *part_blobs);
    int rc = -1;
    if (!parts || !part_blobs) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < p; i++)
        blobs_init(&part_blobs[i]);
    if (value_scatter(s->skel, &s->view, p, parts, part_blobs, err) < 0)
        goto done;
    rc = 0;
    for (size_t i = 0; i < p; i++) {
        json_t *msg =
            json_pack("{s:s, s:s, s:{s:o}}", "type", "task", "op", "push", "ns", s->name, parts[i]);
        parts[i] = NULL;
        out[i] = rc == 0 ? codec_msg_new(msg, &part_blobs[i], err) : NULL;
        if (!out[i]) {
            json_decref(rc == 0 ? NULL : msg);
            rc = -1;
        }
    }
    if (rc < 0)
        for (size_t i = 0; i < p; i++) {
            codec_msg_unref(out[i]);
            out[i] = NULL;
        }
done:
    for (size_t i = 0; parts && part_blobs && i < p; i++) {
        json_decref(parts[i]);
        blobs_free(&part_blobs[i]);
    }
    free(parts);
    free(part_blobs);
    return rc;
}

/* ------------------------------------------------------------ fan-out */

static json_t *fanout_member(const codec_fanout *f)
{
    json_t *ranks = json_array();
    for (size_t i = 0; i < f->n; i++)
        json_array_append_new(ranks, json_integer(f->ranks[i]));
    return json_pack("{s:I, s:o, s:i}", "id", (json_int_t)f->id, "ranks", ranks, "root", f->root);
}

int codec_fanout_push(codec_msg *push, const codec_fanout *f, codec_msg **others, ippc_error *err)
{
    json_t *ns = json_object_get(push->msg, "ns");
    if (!json_is_object(ns))
        return ippc_error_set(err, ERR_INTERNAL, "not a push message");
    json_t *names = json_array();
    const char *key;
    json_t *v;
    json_object_foreach(ns, key, v)
        json_array_append_new(names, json_string(key));
    json_t *member = fanout_member(f);
    json_t *msg = json_pack("{s:s, s:s, s:o, s:O}", "type", "task", "op", "push", "names", names,
                            "fanout", member);
    *others = msg ? codec_msg_new(msg, NULL, err) : NULL;
    if (!*others) {
        json_decref(member);
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    if (json_object_set_new(push->msg, "fanout", member) < 0) {
        codec_msg_unref(*others);
        *others = NULL;
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    return 0;
}

int codec_scatter_items(const codec_scatter *s, size_t *n)
{
    nd_ref ref;
    ippc_error err = {0};
    int is_nd = value_nd_ref(s->skel, &s->view, &ref, &err);
    if (is_nd == 1 && ref.ndim >= 1) {
        *n = ref.shape[0];
        return 0;
    }
    if (is_nd == 0 && json_is_array(s->skel)) {
        *n = json_array_size(s->skel);
        return 0;
    }
    return -1;
}

int codec_fanout_scatter(codec_scatter *s, const codec_fanout *f, codec_msg **root,
                         codec_msg **others, ippc_error *err)
{
    size_t items;
    *root = *others = NULL;
    if (codec_scatter_items(s, &items) < 0)
        return ippc_error_set(err, ERR_INVALID, "only arrays and lists can be scattered");
    json_t *counts = json_array();
    for (size_t i = 0; i < f->n; i++) {
        size_t start, count;
        scatter_partition(items, f->n, i, &start, &count);
        json_array_append_new(counts, json_integer((json_int_t)count));
    }
    json_t *member = fanout_member(f);
    json_t *rmsg = json_pack("{s:s, s:s, s:s, s:O, s:O, s:O}", "type", "task", "op", "scatter",
                             "name", s->name, "counts", counts, "fanout", member, "value", s->skel);
    json_t *omsg = json_pack("{s:s, s:s, s:s, s:o, s:o}", "type", "task", "op", "scatter", "name",
                             s->name, "counts", counts, "fanout", member);
    *others = omsg ? codec_msg_new(omsg, NULL, err) : NULL;
    if (!*others) {
        json_decref(rmsg);
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    /* The root's message shares s's blobs (s may still be split later). */
    ws_blobref **refs = s->nrefs ? calloc(s->nrefs, sizeof *refs) : NULL;
    if (s->nrefs && !refs) {
        json_decref(rmsg);
        rmsg = NULL;
    }
    for (size_t i = 0; refs && i < s->nrefs; i++)
        refs[i] = ws_blobref_retain(s->refs[i]);
    *root = codec_msg_new_refs(rmsg, refs, refs ? s->nrefs : 0, err);
    if (!*root) {
        codec_msg_unref(*others);
        *others = NULL;
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    return 0;
}

codec_msg *codec_fanout_gather(const char *name, const codec_fanout *f, ippc_error *err)
{
    json_t *msg = json_pack("{s:s, s:s, s:s, s:o}", "type", "task", "op", "gather", "name", name,
                            "fanout", fanout_member(f));
    return codec_msg_new(msg, NULL, err);
}

/* ------------------------------------------------------------ sending */

int codec_send(registry *r, engine *e, codec_msg *m, uint64_t task_id)
{
    json_object_set_new(m->msg, "task", json_integer((json_int_t)task_id));
    return registry_send(r, e, m->msg, m->blobs, m->nblobs);
}

json_t *codec_interrupt(uint64_t task_id)
{
    json_t *msg = json_pack("{s:s}", "type", "interrupt");
    if (task_id)
        json_object_set_new(msg, "task", json_integer((json_int_t)task_id));
    return msg;
}

json_t *codec_shutdown(const char *reason)
{
    return json_pack("{s:s, s:s}", "type", "shutdown", "reason", reason ? reason : "");
}

/* ------------------------------------------------------------ results */

const char *codec_result_status(const json_t *result)
{
    return json_string_value(json_object_get(result, "status"));
}

int codec_result_ok(const json_t *result)
{
    const char *s = codec_result_status(result);
    return s && strcmp(s, "ok") == 0;
}

json_t *codec_synth_result(const char *status, const char *ename, const char *evalue)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:[s]}", "type", "result", "status", status,
                     "stdout", "", "ename", ename, "evalue", evalue, "traceback", evalue);
}

void codec_copy_error(json_t *into, const json_t *result)
{
    const char *keys[] = {"ename", "evalue", "traceback"};
    for (int k = 0; k < 3; k++) {
        json_t *v = json_object_get(result, keys[k]);
        if (v)
            json_object_set(into, keys[k], v);
    }
}

void codec_event_outcome(json_t *event, const json_t *result, const ippc_blobs *blobs)
{
    if (!codec_result_ok(result)) {
        json_t *e = json_object();
        codec_copy_error(e, result);
        json_object_set_new(event, "error", e);
        return;
    }
    json_t *skel = json_object_get(result, "value");
    if (!skel)
        return;
    size_t bytes = 0;
    for (size_t i = 0; blobs && i < blobs->count; i++)
        bytes += blobs->items[i].len;
    ippc_error err = {0};
    static const ippc_blobs none = {0};
    json_t *v = bytes <= EVENT_RESULT_MAX
                    ? value_to_client(skel, blobs ? blobs : &none, VALUE_FORMAT_LIST, &err)
                    : NULL;
    char *text = v ? jsonout_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (v && text && strlen(text) <= EVENT_RESULT_MAX)
        json_object_set(event, "result", v);
    else
        json_object_set_new(event, "result_omitted", json_true());
    free(text);
    json_decref(v);
}
