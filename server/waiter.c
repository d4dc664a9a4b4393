/* waiter.c — one-shot wake-ups (see waiter.h). */
#include "waiter.h"

#include <stdlib.h>

int waiters_add(waiter **list, int64_t deadline_ms, void (*wake)(void *arg), void *arg)
{
    waiter *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    w->deadline_ms = deadline_ms;
    w->wake = wake;
    w->arg = arg;
    w->next = *list;
    *list = w;
    return 0;
}

void waiters_wake(waiter **list)
{
    while (*list) {
        waiter *w = *list;
        *list = w->next;
        w->wake(w->arg);
        free(w);
    }
}

void waiters_tick(waiter **list, int64_t now)
{
    while (*list) {
        waiter *w = *list;
        if (w->deadline_ms && now >= w->deadline_ms) {
            *list = w->next;
            w->wake(w->arg);
            free(w);
        } else {
            list = &w->next;
        }
    }
}

void waiters_free(waiter **list)
{
    while (*list) {
        waiter *w = *list;
        *list = w->next;
        free(w);
    }
}
