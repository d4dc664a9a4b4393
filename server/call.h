/* call.h — one decoder for a client's call, whichever front end it came by.
 *
 * A call is one operation a client asks for — a direct-view request
 * (execute, pull, ...), a balanced submit or map, a look at a task or a
 * request, an interrupt, an abort, a registry query — with its options.
 * REST states it as a route (its operationId) with path parameters, query
 * parameters and a body; the /ws request channel as one JSON message, an op
 * with fields.  call_from_rest and call_from_ws turn either into the same
 * `call`, with the same validation and the same errors; call_start makes
 * its hub calls and call_answer builds its answer, a status and a body, which
 * REST sends as its response and /ws as a reply's status and body.  So the
 * two front ends answer alike by construction.
 *
 * The rules both share (docs/streams.md, api/openapi.yaml):
 * - targets: REST takes them from the path; a message gives a target spec
 *   string, an engine id (an integer >= 0) or a non-empty list of ids, and
 *   must give them ("targets is required").
 * - block: a boolean (a query spells it true, false, 1 or 0).
 * - timeout, wait: seconds, a number from 0 to a year.  timeout 0 answers at
 *   once, as block=false does; no timeout waits as long as it takes; wait 0
 *   (the default) answers at once.
 * - format: list or typed (raw bytes are REST's Accept:
 *   application/octet-stream); it applies to every answer that carries
 *   values, and a request's answer defaults to the format of its call.
 * - force: a boolean.
 * - A field the op does not take is refused (REST: in the body; unknown query
 *   parameters are ignored); only the op's own fields go to the hub.
 * Errors are found in one order: the body's shape (REST), targets, block,
 * timeout, format, wait, force, ids, unknown fields; then the hub's (targets
 * that name no engine, then the fields' values).
 *
 * Threads: call_from_rest, call_from_ws, call_prepare, call_clear and the
 * call_def and media functions are pure (any thread, no hub); call_start,
 * call_wait and call_answer call the hub (any thread; never with its lock).
 * Memory: a call owns what it holds; call_clear frees it (also after a
 * failed decode).  The decoders take the body they are given.
 */
#ifndef IPPC_CALL_H
#define IPPC_CALL_H

#include <stdint.h>
#include <stdio.h>
#include <jansson.h>

#include "error.h"
#include "hub.h"
#include "value.h"

typedef enum call_kind {
    CALL_VIEW,      /* a direct-view request (hub_submit) */
    CALL_INTERRUPT, /* hub_interrupt */
    CALL_SUBMIT,    /* balanced tasks (hub_task_submit) */
    CALL_MAP,       /* hub_map_submit */
    CALL_ABORT,     /* hub_task_abort */
    CALL_TASK,      /* one task, maybe after a wait */
    CALL_REQUEST,   /* one request, maybe after a wait */
    CALL_ENGINES,
    CALL_INFO,
    CALL_QUEUE,
} call_kind;

/* What a REST route's body is. */
typedef enum call_body {
    CALL_BODY_NONE = 0, /* none: bytes sent anyway are dropped */
    CALL_BODY_OBJECT,   /* a JSON object of the op's fields */
    CALL_BODY_OPTIONAL, /* such an object, or nothing (= {}) */
    CALL_BODY_VALUE,    /* any JSON value: one variable's (PUT vars/{name}) */
    CALL_BODY_SPEC,     /* a TaskSpec or a list of them */
} call_body;

/* Path parameters an op has (on /ws: fields of the message). */
#define CALL_P_TARGETS 1u
#define CALL_P_NAME 2u
#define CALL_P_ID 4u

/* Options an op takes (REST: query parameters; /ws: fields). */
#define CALL_O_BLOCK 1u
#define CALL_O_TIMEOUT 2u
#define CALL_O_FORMAT 4u
#define CALL_O_WAIT 8u
#define CALL_O_FORCE 16u

#define CALL_MAX_FIELDS 4

/* One operation: its names, parameters, body and options. */
typedef struct call_def {
    const char *ws;        /* its op on /ws; NULL: REST only */
    const char *operation; /* the operationId of its REST route (api/openapi.yaml) */
    call_kind kind;
    hub_op op;            /* CALL_VIEW only */
    unsigned path;        /* CALL_P_* */
    const char *id_field; /* CALL_P_ID: its name on /ws ("task", "request") */
    call_body body;
    int raw_ok;                              /* REST: takes application/octet-stream bodies too */
    const char *fields[CALL_MAX_FIELDS + 1]; /* the body's fields, NULL-ended */
    unsigned options;                        /* CALL_O_* */
    int block_default;
} call_def;

/* The operation with that operationId, or NULL. */
const call_def *call_def_rest(const char *operation);
/* The operation with that /ws op, or NULL. */
const call_def *call_def_ws(const char *op);
/* Prints every /ws op, one "OP OPERATION_ID FIELD,FIELD,..." per line: the
 * fields a message may have besides op and id (ippc-controller
 * --print-ws-ops, which the contract test compares with the spec). */
void call_print_ws_ops(FILE *out);

typedef enum call_wait_kind {
    CALL_WAIT_NONE = 0,
    CALL_WAIT_REQUEST,
    CALL_WAIT_TASK
} call_wait_kind;

typedef struct call {
    const call_def *def;
    char *targets;      /* a target spec, or NULL */
    char *name;         /* path {name} (vars, gather) or a raw scatter's ?name= */
    uint64_t id;        /* CALL_P_ID */
    json_t *body;       /* only the op's fields (a submit: the spec or list) */
    int block;          /* answer when done (within timeout), or at once */
    double timeout;     /* seconds; < 0: no limit */
    double wait;        /* task, request: seconds to wait; 0: none */
    int format;         /* a value_format; < 0 when not given */
    int force;          /* abort a running task */
    int answer_as;      /* REST: a call_answer_kind (Accept on a pull or gather) */
    json_t *wire_value; /* a raw body's skeleton, and its blobs */
    ippc_blobs wire_blobs;
    hub_prepared *prepared; /* CALL_VIEW payload built ahead (call_prepare) */
    /* call_start: what the answer waits for, and until when */
    call_wait_kind waits_for;
    uint64_t wait_id;
    int now;             /* answer without waiting */
    int64_t deadline_ms; /* monotonic; 0 = none */
    int pinned;          /* the hub keeps wait_id (a request) for this answer: call_answered */
} call;

/* A REST request, as http_api.c has it. */
typedef struct call_rest {
    const char *operation; /* the route's operationId */
    const char *targets;   /* path parameters; NULL where the path has none */
    const char *name;
    const char *id;
    const json_t *query;    /* query parameters, an object of strings; NULL = none */
    json_t *body;           /* the decoded JSON body, or NULL when there is none (taken) */
    json_t *wire_value;     /* or a raw body's skeleton (taken) ... */
    ippc_blobs *wire_blobs; /* ... and its blobs (moved out) */
} call_rest;

/* Decodes a REST request into c (zeroed here).  0, or -1 + err; either way
 * c holds what it took until call_clear. */
int call_from_rest(call *c, const call_rest *in, ippc_error *err);
/* Decodes a /ws message (an object with "op"; "id" is the client's and not
 * looked at).  0, or -1 + err as call_from_rest. */
int call_from_ws(call *c, const json_t *msg, ippc_error *err);
void call_clear(call *c);

/* Builds a direct-view call's engine payload now (hub_prepare: the costly
 * conversion of its values), so that the submit does not; the body goes.  A
 * payload that cannot be built carries its error to call_start.  -1 + err
 * only when out of memory. */
int call_prepare(call *c, ippc_error *err);

/* Makes the call's hub calls.  Returns 1 with the answer in *status and
 * *body (a new reference; an error is its Error body and status), or 0 when
 * the answer is the state of a request or task (c->waits_for, c->wait_id):
 * then call_wait, and call_answer once it returns non-zero or wakes.  Drops
 * the call's body and payload either way. */
int call_start(hub *h, call *c, int *status, json_t **body);
/* As hub_wait for what c waits for, until c->deadline_ms: 0 when wake(arg)
 * is registered (registered(arg) has run, under the hub lock); non-zero when
 * the answer is to be built now (no wait asked, done, or unknown). */
int call_wait(hub *h, const call *c, void (*wake)(void *arg), void (*registered)(void *arg),
              void *arg);
/* The answer of a call that waited (or did not need to): 200 and the result
 * when done, 202 and the pending state before, or an Error and its status. */
json_t *call_answer(hub *h, const call *c, int *status);
/* The front end has given the answer of a call that waited for a request
 * (done: the finished one, status 200 or an error) or never will (0): the
 * hub stops keeping the request for it, and releases a blocking pull or
 * gather answered finished (hub_request_answered).  Call it once the answer
 * is sent or queued; a no-op for other calls. */
void call_answered(hub *h, call *c, int done);

/* What a request body with this Content-Type (NULL: none) is for a route. */
typedef enum call_media {
    CALL_MEDIA_JSON,
    CALL_MEDIA_RAW,
    CALL_MEDIA_NPY,
    CALL_MEDIA_UNSUPPORTED
} call_media;
/* JSON when the type is absent, application/json, any application/...+json,
 * or application/x-www-form-urlencoded (what `curl -d` sends; the body is
 * still read as JSON); raw for application/octet-stream and npy for
 * application/x-npy where raw_ok; else unsupported, with err set (415
 * unsupported_media). */
call_media call_media_of(const char *content_type, int raw_ok, ippc_error *err);

/* The form of a pull's or gather's answer, from its Accept header. */
typedef enum call_answer_kind {
    CALL_ANSWER_JSON = 0,
    CALL_ANSWER_RAW,           /* application/octet-stream: one array's bytes */
    CALL_ANSWER_NPY,           /* application/x-npy: one array as a .npy file */
    CALL_ANSWER_MULTIPART,     /* multipart/mixed: one part per engine, raw bytes */
    CALL_ANSWER_MULTIPART_NPY, /* multipart/mixed; part=application/x-npy */
} call_answer_kind;
/* Picks the answer form an Accept header (NULL: none) asks for, as HTTP
 * negotiates: the media range of highest q (ties: the first listed) among
 * those the op offers — application/json (also any of its wildcards),
 * application/octet-stream and application/x-npy on a pull or gather,
 * multipart/mixed (parameter part=application/octet-stream, the default,
 * or part=application/x-npy) on a pull.  Ranges of q=0 and unknown ones
 * are skipped; when nothing offered is named, JSON.  Pure. */
call_answer_kind call_answer_of(const char *accept, hub_op op);

#endif
