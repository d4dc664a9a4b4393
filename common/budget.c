/* budget.c — byte budgets for what peers make us hold (see budget.h). */
#include "budget.h"

#include <assert.h>

void budget_init(budget *b, size_t limit)
{
    atomic_init(&b->used, 0);
    atomic_init(&b->refused, 0);
    b->limit = limit;
}

size_t budget_used(budget *b)
{
    return atomic_load(&b->used);
}

void budget_account_init(budget_account *a, budget *pool, size_t limit)
{
    a->pool = pool;
    atomic_init(&a->held, 0);
    a->limit = limit;
}

static double mib(size_t n)
{
    return (double)n / (1024.0 * 1024.0);
}

int budget_take(budget_account *a, size_t n, const char *what, ippc_error *err)
{
    if (!a->pool)
        return 0;
    /* The account first: only this connection's thread races with its own
     * credits, so a compare-and-swap loop is short. */
    size_t held = atomic_load(&a->held);
    do {
        if (a->limit && (n > a->limit || held > a->limit - n)) {
            atomic_fetch_add(&a->pool->refused, 1);
            return ippc_error_set(err, ERR_TOO_LARGE,
                                  "%s of %.1f MiB is over this connection's limit of %.1f MiB",
                                  what, mib(held + n), mib(a->limit));
        }
    } while (!atomic_compare_exchange_weak(&a->held, &held, held + n));

    budget *b = a->pool;
    size_t used = atomic_load(&b->used);
    do {
        if (b->limit && (n > b->limit || used > b->limit - n)) {
            atomic_fetch_sub(&a->held, n);
            atomic_fetch_add(&b->refused, 1);
            return ippc_error_set(err, ERR_OVERLOADED,
                                  "the controller holds %.1f MiB for its clients (limit %.1f "
                                  "MiB); %s of %.1f MiB refused, try again later",
                                  mib(used), mib(b->limit), what, mib(n));
        }
    } while (!atomic_compare_exchange_weak(&b->used, &used, used + n));
    return 0;
}

void budget_give(budget_account *a, size_t n)
{
    if (!a->pool || n == 0)
        return;
    size_t before = atomic_fetch_sub(&a->held, n);
    assert(before >= n); /* credits never exceed charges */
    (void)before;
    size_t pool_before = atomic_fetch_sub(&a->pool->used, n);
    assert(pool_before >= n);
    (void)pool_before;
}

void budget_account_release(budget_account *a)
{
    if (!a->pool)
        return;
    size_t held = atomic_exchange(&a->held, 0);
    if (held) {
        size_t pool_before = atomic_fetch_sub(&a->pool->used, held);
        assert(pool_before >= held);
        (void)pool_before;
    }
}

size_t budget_account_held(budget_account *a)
{
    return atomic_load(&a->held);
}
