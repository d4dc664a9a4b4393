/* engine_codec.h — the controller's side of the engine protocol
 * (common/proto.h): the one encoder of task messages (every direct-view op,
 * a balanced task's "code" or "function", a map chunk), the control messages
 * (interrupt, shutdown), and the reading of engine results (status, error
 * fields, the outcome an event carries).
 *
 * Encoding decodes client values (base64, lists of numbers into ndarray
 * blobs) and so is done outside the hub lock: nothing here touches hub state.
 *
 * Threads: any; pure.  Memory: a codec_msg is reference-counted and shared by
 * every task it is sent for; its JSON is changed only by codec_send (the
 * "task" id, set under the hub lock just before the message is serialised).
 * Everything else returns new references and leaves its inputs alone.
 */
#ifndef IPPC_ENGINE_CODEC_H
#define IPPC_ENGINE_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "error.h"
#include "hub.h"
#include "value.h"
#include "wsmsg.h"

struct registry;
struct engine;

/* A task message as engines get it, without its "task" id. */
typedef struct codec_msg {
    int refs;
    json_t *msg;
    ws_blobref **blobs;
    size_t nblobs;
} codec_msg;

/* Takes msg and moves blobs in.  NULL + err (msg and blobs freed). */
codec_msg *codec_msg_new(json_t *msg, ippc_blobs *blobs, ippc_error *err);
/* Takes msg, the refs array (malloc'd, may be NULL when n is 0) and the n
 * references in it.  NULL + err (all of them released). */
codec_msg *codec_msg_new_refs(json_t *msg, ws_blobref **refs, size_t n, ippc_error *err);
codec_msg *codec_msg_ref(codec_msg *m);
void codec_msg_unref(codec_msg *m); /* NULL is fine */
/* Bytes the message takes on the wire, about: its blobs and its JSON
 * (json_bytes_estimate, no smaller than the text in practice); what is
 * checked against an engine's max_message. */
size_t codec_msg_bytes(const codec_msg *m);

/* Variable and function names: letters, digits and _, not starting with a
 * digit, 1..128 bytes.  0, or -1 + err (invalid). */
int codec_valid_name(const char *name, ippc_error *err);

/* The message of a direct-view call: every op except SCATTER and MAP. */
codec_msg *codec_view_call(const hub_call *call, ippc_error *err);

/* Scatter in two steps, so the split can wait until the targets are known:
 * decode the client's value once, then split it into one push per target.
 * The decoded blobs are held as blobrefs (refs) from the start: an array's
 * parts are slices of its one buffer (ws_blobref_slice), never copies, and a
 * split may be made again (the targets changed) or given up for a fan-out.
 * view lists the same bytes as ippc_blobs for the value_* readers; it owns
 * nothing but its items array. */
typedef struct codec_scatter {
    char *name;
    json_t *skel;
    ws_blobref **refs;
    size_t nrefs;
    ippc_blobs view;
} codec_scatter;
int codec_scatter_decode(const hub_call *call, codec_scatter *out, ippc_error *err);
/* Fills out[0..p) (each a new codec_msg).  0, or -1 + err (nothing filled). */
int codec_scatter_split(const codec_scatter *s, size_t p, codec_msg **out, ippc_error *err);
void codec_scatter_clear(codec_scatter *s);

/* ---- data ops fanned out by MPI (common/proto.h, "Data ops fanned out by
 * MPI"): the root's task carries the data, the other participants get the
 * same op without it. ---- */

/* The "fanout" member: the op's id, the participants' MPI ranks (ascending,
 * distinct) and the root (one of them). */
typedef struct codec_fanout {
    uint64_t id;
    const int *ranks;
    size_t n;
    int root;
} codec_fanout;

/* A fanned-out push: push (a push message no task holds yet) becomes the
 * root's task ("fanout" added); *others is the other participants' task
 * ("names": the names pushed, no blobs).  0, or -1 + err (push untouched). */
int codec_fanout_push(codec_msg *push, const codec_fanout *f, codec_msg **others, ippc_error *err);
/* The items a scatter splits along its first axis (array rows, list items):
 * 0, or -1 when its value cannot be scattered (a scalar, an object, a 0-d
 * array). */
int codec_scatter_items(const codec_scatter *s, size_t *n);
/* A fanned-out scatter: "name", "counts" (scatter_partition of the items over
 * the f->n participants, in ranks order) for all; the root's task also has
 * "value" and references to s's blobs.  0, or -1 + err (nothing made). */
int codec_fanout_scatter(codec_scatter *s, const codec_fanout *f, codec_msg **root,
                         codec_msg **others, ippc_error *err);
/* A fanned-out gather of name: the one task every participant gets. */
codec_msg *codec_fanout_gather(const char *name, const codec_fanout *f, ippc_error *err);

/* Balanced tasks: "execute" of code, "apply" of a function to args/kwargs
 * (each argument a client value of its own: a list of numbers becomes an
 * ndarray, the args list itself stays a list), and a map chunk: op "map" with
 * the chunk's "sequences" (one list per input sequence). */
codec_msg *codec_execute(const char *code, ippc_error *err);
codec_msg *codec_apply(const char *function, const json_t *args, const json_t *kwargs,
                       ippc_error *err);
codec_msg *codec_map(const char *function, const json_t *sequences, ippc_error *err);

/* Sets the message's "task" id and queues it on the engine.  0, or -1 when
 * the engine is gone or its socket refused. */
int codec_send(struct registry *r, struct engine *e, codec_msg *m, uint64_t task_id);
/* {"type":"interrupt"} naming task_id (0: whatever runs). */
json_t *codec_interrupt(uint64_t task_id);
json_t *codec_shutdown(const char *reason);

/* ---- results ---- */

/* The result's "status" ("ok", "error", "aborted", "lost"), or NULL. */
const char *codec_result_status(const json_t *result);
int codec_result_ok(const json_t *result);
/* A result the controller makes itself (lost, aborted, failed before it
 * ran): status, empty stdout, ename, evalue, a one-line traceback. */
json_t *codec_synth_result(const char *status, const char *ename, const char *evalue);
/* Copies ename, evalue and traceback (those present) of a result into `into`. */
void codec_copy_error(json_t *into, const json_t *result);
/* For task.completed: adds "result" (client JSON; "result_omitted" over 64
 * KiB) or "error" from a result. */
void codec_event_outcome(json_t *event, const json_t *result, const ippc_blobs *blobs);

#endif
