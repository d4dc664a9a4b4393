/* proto.h — the engine WebSocket protocol, ippc.engine.v1.
 *
 * Engines connect to ws://HOST:PORT/engine with subprotocol "ippc.engine.v1"
 * and the engine key as "Authorization: Bearer KEY" on the upgrade (the
 * controller refuses the upgrade without it, 401); an engine that does not
 * register within 5 s is disconnected.  Every message is one JSON text
 * frame, optionally followed by "nbuf" binary frames: the blobs that the
 * message's value skeletons reference by index ("$nd": K -> the K-th binary
 * frame after this message; see value.h), and "sizes": their byte lengths,
 * so the receiver allocates each once (wsmsg.h).  Each binary frame goes as
 * one whole WebSocket frame: the engine's link (engine/link.c) masks with the
 * zero key, the controller writes large ones straight from the blob
 * (ws_outq_set_direct); neither side pings.
 *
 * engine -> controller
 *   {"type":"register","key":KEY,"job":JOBID,"rank":r,"size":s,"host":H,"pid":P,
 *    "version":V,"max_message":M}                     first message, always
 *   {"type":"heartbeat","busy":bool,"task":T|null}    every heartbeat period
 *   {"type":"stdout","task":T,"data":TEXT}            output while T runs
 *   {"type":"result","task":T,"status":...,...,"nbuf":k}   see engine/runtime.h
 * controller -> engine
 *   {"type":"registered","id":ID,"heartbeat_period":S,"max_message":M}
 *   {"type":"error","code":C,"message":M}             then the socket closes
 *   {"type":"task","task":T,"op":OP,...,"nbuf":k}
 *       op "execute": "code"
 *       op "run":     "filename", "source"
 *       op "push":    "ns": {name: skeleton, ...}
 *       op "pull":    "names": [name, ...]  -> result "value": {name: skeleton}
 *       op "apply":   "function": NAME, "args": [skeleton...], "kwargs": {...}
 *                     an arg {"$ref": NAME} stands for the engine's global NAME
 *       op "map":     "function": NAME, "sequences": [skeleton...]  (one map chunk)
 *                     -> value [result per item]; failed items are null there
 *                     and listed in "item_errors" (see engine/runtime.h)
 *       op "load":    "library": PATH   -> value {"library", "kernels"}
 *       op "reset"    (clears the namespace)
 *       op "delete":  "names": [name, ...]
 *       op "list"     -> value {name: {"type", ...}}
 *       ops "push", "scatter", "gather" with a "fanout" member: one data op
 *                     over several engines of a job, see "Data ops fanned
 *                     out by MPI" below
 *   {"type":"interrupt","task":T|absent}  stop T (or whatever runs); a queued
 *                                         T is dropped and answered "aborted"
 *   {"type":"shutdown","reason":R}                    engine finishes and exits
 *
 * Engines of one MPI job share JOBID (rank 0 makes it, MPI_Bcast shares it);
 * the controller gives them consecutive ids in rank order.
 *
 * Message sizes.  "max_message" is the largest message (JSON text and its
 * binary frames together) the sender of register / registered accepts, in
 * bytes, at most IPPC_MAX_WS_MESSAGE (absent: that).  Neither side sends a
 * larger one, since the receiver would close the connection: a task that
 * would be larger (an array pushed or scattered) fails unsent on the
 * controller with ename "TooLargeError", and an engine whose result would be
 * larger answers "status":"error", "ename":"TooLargeError" instead (its
 * variables unchanged).  The engine's is `ippc-engine --max-message-mb`; the
 * controller's is the smaller of IPPC_MAX_WS_MESSAGE and --max-held-mb.
 *
 * Data ops fanned out by MPI (engine/fanout.h).  A push, scatter or gather
 * that targets engines of one MPI job can cross the controller->engine link
 * once: every targeted engine of the job (the participants) gets a task with
 * a "fanout" member; only the root's task carries the data (only the root's
 * result carries a gathered value), and the engines move the bytes among
 * themselves with MPI collectives on their own communicators.
 *   "fanout": {"id": ID, "ranks": [r0, r1, ...], "root": R}
 *     id     integer >= 1, the same in every participant's task; unique among
 *            the data ops the job's engines ever get, and larger than the ids
 *            of the data ops issued before it (an engine takes a peer's
 *            control message with a smaller id for a leftover of an
 *            abandoned op).  A counter that does not restart low when the
 *            controller restarts, e.g. the controller's start time in ms *
 *            2^20 + a sequence number (below 2^63).
 *     ranks  the participants' MPI ranks (their "rank" at registration), in
 *            ascending order, no repeats; the receiving engine is one of them
 *     root   one of ranks
 *   op "push"    root:   "ns": {name: skeleton, ...} and its blobs, as a push
 *                others: "names": [name, ...]  the same names, any order
 *       Every participant sets the same globals and answers
 *       {"type":"result","task":T,"status":"ok","stdout":""} (no value).
 *   op "scatter" all:    "name": NAME, "counts": [c0, c1, ...]
 *                root:   "value": skeleton (an array placeholder of 1 or more
 *                        dims, or a JSON list) and its blobs
 *       counts: one integer >= 0 per participant, in ranks order: the items
 *       (array rows, list items) it gets, summing to the first dimension /
 *       length of value; the controller computes them (scatter_partition:
 *       n items over p, the first n % p get one more) and sends the same list
 *       to every participant.  Each sets NAME to its part: an array of shape
 *       [ci, d1, ...] (also when ci is 0 or 1), or a list of ci items; each
 *       answers ok with no value.
 *   op "gather"  all:    "name": NAME
 *       Non-roots answer ok with no value.  The root answers one of:
 *         "value": {NAME: placeholder} with one blob ("nbuf":1), when every
 *            participant's NAME is an nd array (1 or more dims) of one dtype
 *            and one trailing shape: their concatenation along the first
 *            axis, in ranks order (what value_gather makes of them);
 *         "parts": [v0, v1, ...] (no "value"), otherwise: each participant's
 *            value in ranks order, as a pull of NAME would answer it, their
 *            placeholders numbering the result's blobs; the controller
 *            concatenates them as it does per-engine pull results
 *            (value_gather).
 *   Failures.  Every participant answers every data op.  An engine that
 *   cannot do its part (NameError: no such variable, TypeError: a value
 *   that cannot be sent, ValueError: counts that do not add up or a bad
 *   value, MemoryError, ProtocolError: a malformed task) answers that error;
 *   the others answer "status":"error" with "ename":"FanoutError" and an
 *   evalue naming it: "gather 'x': rank 2 failed: NameError: name 'x' is not
 *   defined".  A malformed "fanout" is a ProtocolError at once (nothing
 *   else happens).  Participants whose tasks differ (names, counts, name, id,
 *   or ranks) all answer ProtocolError "... got different task messages
 *   ..." when the root is one of them for all; tasks that disagree on the
 *   root or leave a participant out wait until they are interrupted.  A
 *   participant that answers an error or "aborted" has changed no global.
 *   Interrupts.  Until every participant has reached the op, a participant
 *   waits for the others and can be interrupted ("interrupt" with its task
 *   id, or none): it answers "aborted", and the op ends "aborted" on every
 *   participant, also on those that reach it later ("... interrupted on rank
 *   R").  So a participant whose task will never run (dropped from the
 *   queue, or its engine died) leaves the others waiting until they are
 *   interrupted: the controller must interrupt the participants of a data op
 *   that it abandons (task lost, timeout, client interrupt).  Once all are
 *   in, the transfer runs to its end (an interrupt then is too late for it;
 *   the task answers as usual).
 *   What the controller must also do: issue the data ops of every job to
 *   all of their participants in one global order (overlapping rank sets
 *   then cannot deadlock: each engine runs its tasks in order); send a
 *   fan-out only when every participant is a live engine of that job (else,
 *   or across jobs, per-engine ops as before); keep "nbuf" at 0 on the tasks
 *   of non-roots.  A fan-out to one engine works too, but gains nothing.
 */
#ifndef IPPC_PROTO_H
#define IPPC_PROTO_H

#define IPPC_VERSION "0.1.0"
#define IPPC_ENGINE_SUBPROTOCOL "ippc.engine.v1"
#define IPPC_CLIENT_SUBPROTOCOL "ippc.client.v1"

/* Default heartbeat period and the silence after which an engine is dead. */
#define IPPC_HEARTBEAT_PERIOD_MS 1000
#define IPPC_HEARTBEAT_TIMEOUT_MS 10000

/* Largest WebSocket message either side accepts: a JSON message and all the
 * binary frames it announces, counted together.  Room for an array of
 * several GiB (a raw body within --max-raw-mb); each side announces its own
 * limit, at most this ("max_message"). */
#define IPPC_MAX_WS_MESSAGE ((size_t)16 << 30)

/* The head of an HTTP request (request line + headers) that the controller
 * reads.  The acceptor checks the first request of a connection against these
 * before handing it over (414 / 431 as JSON); the REST handler checks later
 * requests of a kept-alive connection against the same numbers. */
#define IPPC_MAX_REQUEST_LINE 8192
#define IPPC_MAX_REQUEST_HEAD 16384

#endif
