/* budget.h — the bytes peers can make the controller hold, counted in one place.
 *
 * Everything a peer can make the controller keep in memory — a request body in
 * flight, a WebSocket message and its binary frames, output queued for a slow
 * reader — is charged to that peer's budget_account before it is allocated,
 * and given back when it is freed.  An account has its own cap (one connection
 * cannot take more than its share) and draws from one process-wide budget (all
 * connections together cannot exhaust the machine).  A charge that would pass
 * either limit is refused and nothing is charged: the caller answers with a
 * clear error (413 for the connection's cap, 503 "overloaded" for the total)
 * and everyone else keeps being served.
 *
 * Threads: every function may be called from any thread; the counters are
 * atomics, so an account may be charged on one thread and credited on another
 * (a send queue filled by the hub and drained by the lws thread).  A budget
 * outlives its accounts; an account is plain memory owned by its connection.
 */
#ifndef IPPC_BUDGET_H
#define IPPC_BUDGET_H

#include <stdatomic.h>
#include <stddef.h>

#include "error.h"

typedef struct budget {
    atomic_size_t used;
    size_t limit;          /* 0: unlimited */
    atomic_ullong refused; /* charges refused, for /metrics and the soak */
} budget;

typedef struct budget_account {
    budget *pool; /* NULL: charges always succeed and are not counted */
    atomic_size_t held;
    size_t limit; /* per-account cap; 0: only the pool's limit */
} budget_account;

void budget_init(budget *b, size_t limit);
size_t budget_used(budget *b);

void budget_account_init(budget_account *a, budget *pool, size_t limit);
/* Charges n bytes.  0 if granted; -1 if it would pass the account's cap
 * (err: ERR_TOO_LARGE) or the pool's limit (err: ERR_OVERLOADED), with nothing
 * charged.  what names the thing for the message ("request body"). */
int budget_take(budget_account *a, size_t n, const char *what, ippc_error *err);
/* Credits n bytes back; n must not exceed what the account holds. */
void budget_give(budget_account *a, size_t n);
/* Credits everything the account still holds (on close). */
void budget_account_release(budget_account *a);
size_t budget_account_held(budget_account *a);

#endif
