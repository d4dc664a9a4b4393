/* proto.h — the engine WebSocket protocol, ippc.engine.v1.
 *
 * Engines connect to ws://HOST:PORT/engine with subprotocol "ippc.engine.v1"
 * and the engine key as "Authorization: Bearer KEY" on the upgrade (the
 * controller refuses the upgrade without it, 401); an engine that does not
 * register within 5 s is disconnected.  Every message is one JSON text
 * frame, optionally followed by "nbuf" binary frames: the blobs that the
 * message's value skeletons reference by index ("$nd": K -> the K-th binary
 * frame after this message; see value.h).
 *
 * engine -> controller
 *   {"type":"register","key":KEY,"job":JOBID,"rank":r,"size":s,"host":H,"pid":P,
 *    "version":V}                                     first message, always
 *   {"type":"heartbeat","busy":bool,"task":T|null}    every heartbeat period
 *   {"type":"stdout","task":T,"data":TEXT}            output while T runs
 *   {"type":"result","task":T,"status":...,...,"nbuf":k}   see engine/runtime.h
 * controller -> engine
 *   {"type":"registered","id":ID,"heartbeat_period":S}
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
 *   {"type":"interrupt","task":T|absent}  stop T (or whatever runs); a queued
 *                                         T is dropped and answered "aborted"
 *   {"type":"shutdown","reason":R}                    engine finishes and exits
 *
 * Engines of one MPI job share JOBID (rank 0 makes it, MPI_Bcast shares it);
 * the controller gives them consecutive ids in rank order.
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
 * binary frames it announces, counted together. */
#define IPPC_MAX_WS_MESSAGE ((size_t)1 << 30)

/* The head of an HTTP request (request line + headers) that the controller
 * reads.  The acceptor checks the first request of a connection against these
 * before handing it over (414 / 431 as JSON); the REST handler checks later
 * requests of a kept-alive connection against the same numbers. */
#define IPPC_MAX_REQUEST_LINE 8192
#define IPPC_MAX_REQUEST_HEAD 16384

#endif
