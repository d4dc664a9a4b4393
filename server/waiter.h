/* waiter.h — one-shot wake-ups: "call wake(arg) once, when this finishes or
 * at a deadline".  A request or a task owns a list of them.
 *
 * Threads: the owner's lock (the hub lock) guards a list; wake() is called
 * with that lock held, so it must only queue work and wake its own loop.
 * Memory: a waiter is freed when it fires or by waiters_free; arg belongs to
 * the caller.
 */
#ifndef IPPC_WAITER_H
#define IPPC_WAITER_H

#include <stdint.h>

typedef struct waiter {
    struct waiter *next;
    int64_t deadline_ms; /* monotonic; 0 = none */
    void (*wake)(void *arg);
    void *arg;
} waiter;

/* 0, or -1 when out of memory (nothing registered). */
int waiters_add(waiter **list, int64_t deadline_ms, void (*wake)(void *arg), void *arg);
/* Fires and frees every waiter of the list. */
void waiters_wake(waiter **list);
/* Fires and frees the waiters whose deadline is at or before now. */
void waiters_tick(waiter **list, int64_t now);
/* Frees without firing (the owner is going away with nobody to answer). */
void waiters_free(waiter **list);

#endif
