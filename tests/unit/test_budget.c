/* test_budget.c — common/budget.c: per-account caps, the pool's limit, refusals
 * that charge nothing, release on close, and charges from several threads. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "budget.h"

static void test_take_and_give(void **state)
{
    (void)state;
    budget b;
    budget_init(&b, 1000);
    budget_account a;
    budget_account_init(&a, &b, 600);
    ippc_error err = {{0}, {0}};
    assert_int_equal(budget_take(&a, 400, "body", &err), 0);
    assert_int_equal(budget_used(&b), 400);
    assert_int_equal(budget_account_held(&a), 400);
    budget_give(&a, 150);
    assert_int_equal(budget_used(&b), 250);
    assert_int_equal(budget_account_held(&a), 250);
    budget_account_release(&a);
    assert_int_equal(budget_used(&b), 0);
    assert_int_equal(budget_account_held(&a), 0);
}

static void test_account_cap_refuses_with_413(void **state)
{
    (void)state;
    budget b;
    budget_init(&b, 0); /* unlimited pool */
    budget_account a;
    budget_account_init(&a, &b, 100);
    ippc_error err = {{0}, {0}};
    assert_int_equal(budget_take(&a, 60, "body", &err), 0);
    assert_int_equal(budget_take(&a, 41, "body", &err), -1);
    assert_string_equal(err.code, ERR_TOO_LARGE);
    assert_non_null(strstr(err.message, "body"));
    /* nothing was charged by the refusal */
    assert_int_equal(budget_account_held(&a), 60);
    assert_int_equal(budget_used(&b), 60);
    assert_int_equal(budget_take(&a, 40, "body", &err), 0);
    assert_int_equal(atomic_load(&b.refused), 1);
    budget_account_release(&a);
}

static void test_pool_limit_refuses_with_503(void **state)
{
    (void)state;
    budget b;
    budget_init(&b, 100);
    budget_account a1, a2;
    budget_account_init(&a1, &b, 80);
    budget_account_init(&a2, &b, 80);
    ippc_error err = {{0}, {0}};
    assert_int_equal(budget_take(&a1, 80, "message", &err), 0);
    assert_int_equal(budget_take(&a2, 30, "message", &err), -1);
    assert_string_equal(err.code, ERR_OVERLOADED);
    assert_int_equal(http_status_for(err.code), 503);
    assert_int_equal(budget_account_held(&a2), 0);
    assert_int_equal(budget_used(&b), 80);
    budget_account_release(&a1);
    assert_int_equal(budget_take(&a2, 30, "message", &err), 0);
    budget_account_release(&a2);
    assert_int_equal(budget_used(&b), 0);
}

static void test_huge_charge_does_not_wrap(void **state)
{
    (void)state;
    budget b;
    budget_init(&b, 1000);
    budget_account a;
    budget_account_init(&a, &b, 500);
    ippc_error err = {{0}, {0}};
    assert_int_equal(budget_take(&a, 10, "x", &err), 0);
    assert_int_equal(budget_take(&a, SIZE_MAX, "x", &err), -1);
    assert_int_equal(budget_take(&a, SIZE_MAX - 5, "x", &err), -1);
    budget_account unlimited;
    budget_account_init(&unlimited, &b, 0);
    assert_int_equal(budget_take(&unlimited, SIZE_MAX - 5, "x", &err), -1);
    assert_string_equal(err.code, ERR_OVERLOADED);
    assert_int_equal(budget_used(&b), 10);
    budget_account_release(&a);
}

static void test_no_pool_is_free(void **state)
{
    (void)state;
    budget_account a;
    budget_account_init(&a, NULL, 10);
    assert_int_equal(budget_take(&a, 1000, "x", NULL), 0);
    budget_give(&a, 1000);
    budget_account_release(&a);
    assert_int_equal(budget_account_held(&a), 0);
}

typedef struct worker_arg {
    budget_account *a;
    int granted;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *w = p;
    for (int i = 0; i < 100000; i++) {
        if (budget_take(w->a, 7, "x", NULL) == 0) {
            w->granted++;
            budget_give(w->a, 7);
        }
    }
    return NULL;
}

static void test_threads_balance(void **state)
{
    (void)state;
    budget b;
    budget_init(&b, 50);
    budget_account a[4];
    pthread_t t[4];
    worker_arg w[4];
    for (int i = 0; i < 4; i++) {
        budget_account_init(&a[i], &b, 0);
        w[i] = (worker_arg){.a = &a[i]};
        assert_int_equal(pthread_create(&t[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(budget_used(&b), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(budget_account_held(&a[i]), 0);
        assert_true(w[i].granted > 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_and_give),
        cmocka_unit_test(test_account_cap_refuses_with_413),
        cmocka_unit_test(test_pool_limit_refuses_with_503),
        cmocka_unit_test(test_huge_charge_does_not_wrap),
        cmocka_unit_test(test_no_pool_is_free),
        cmocka_unit_test(test_threads_balance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
