/* interrupter.h — interrupts an engine runtime from another thread, the way
 * the engine's control path does, for the unit tests of interrupts.
 *
 *     interrupter it;
 *     interrupter_start(&it, rt, 150);   // first interrupt after 150 ms
 *     json_t *res = ...run a task that only an interrupt ends...;
 *     interrupter_stop(&it);             // joins the thread
 *
 * The runtime drops an interrupt that lands before a task starts (it clears
 * the flag when a task starts), so a single shot hangs the test whenever the
 * machine stalls the test thread longer than the delay.  The thread keeps
 * interrupting every INTERRUPTER_PERIOD_MS until interrupter_stop.  An
 * interrupt left over after the task ended is dropped the same way by the
 * next task, so the caller may run more tasks after interrupter_stop.
 *
 * Header-only, static functions: one per test binary.  Owned by the caller
 * (on its stack); the thread only reads rt and the done flag.
 */
#ifndef IPPC_TESTS_INTERRUPTER_H
#define IPPC_TESTS_INTERRUPTER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "runtime.h"

#define INTERRUPTER_PERIOD_MS 100

typedef struct interrupter {
    runtime *rt;
    int delay_ms;
    atomic_int done;
    pthread_t thread;
} interrupter;

static void interrupter_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) /* EINTR: a test's own signals */
        ;
}

static void *interrupter_main(void *arg)
{
    interrupter *it = arg;
    interrupter_sleep_ms(it->delay_ms);
    while (!atomic_load(&it->done)) {
        runtime_interrupt(it->rt);
        interrupter_sleep_ms(INTERRUPTER_PERIOD_MS);
    }
    return NULL;
}

static __attribute__((unused)) void interrupter_start(interrupter *it, runtime *rt, int delay_ms)
{
    it->rt = rt;
    it->delay_ms = delay_ms;
    atomic_init(&it->done, 0);
    if (pthread_create(&it->thread, NULL, interrupter_main, it) != 0)
        abort();
}

static __attribute__((unused)) void interrupter_stop(interrupter *it)
{
    atomic_store(&it->done, 1);
    pthread_join(it->thread, NULL);
}

#endif
