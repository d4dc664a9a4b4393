/* test_bigmem.c — common/bigmem.c: freed blocks handed out again for about
 * their size, small ones never kept, the byte limit, ageing, trimming,
 * zeroing on reuse, and blocks freed on one thread and reused on another. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bigmem.h"

#define MiB ((size_t)1 << 20)

static int setup(void **state)
{
    (void)state;
    bigmem_configure(64 * MiB, 60000);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    bigmem_trim(1);
    assert_int_equal(bigmem_kept_bytes(), 0);
    return 0;
}

static void test_freed_block_is_reused_for_its_size(void **state)
{
    (void)state;
    unsigned char *a = bigmem_alloc(8 * MiB);
    assert_non_null(a);
    memset(a, 7, 8 * MiB);
    bigmem_free(a);
    assert_true(bigmem_kept_bytes() >= 8 * MiB);
    /* a little less than the block: the same block */
    unsigned char *b = bigmem_alloc(7 * MiB);
    assert_ptr_equal(a, b);
    assert_int_equal(bigmem_kept_bytes(), 0);
    bigmem_free(b);
    /* much less: not this block (it would waste most of it) */
    unsigned char *c = bigmem_alloc(2 * MiB);
    assert_ptr_not_equal(c, b);
    assert_true(bigmem_kept_bytes() >= 8 * MiB);
    /* more than the block holds: not this block either */
    unsigned char *d = bigmem_alloc(12 * MiB);
    assert_ptr_not_equal(d, b);
    bigmem_free(c);
    bigmem_free(d);
}

static void test_best_fit_among_kept(void **state)
{
    (void)state;
    void *big = bigmem_alloc(10 * MiB), *small = bigmem_alloc(8 * MiB);
    bigmem_free(big);
    bigmem_free(small);
    /* both fit 8 MiB within a quarter; the smaller is taken */
    void *p = bigmem_alloc(8 * MiB);
    assert_ptr_equal(p, small);
    void *q = bigmem_alloc(10 * MiB);
    assert_ptr_equal(q, big);
    bigmem_free(p);
    bigmem_free(q);
}

static void test_small_blocks_are_not_kept(void **state)
{
    (void)state;
    void *p = bigmem_alloc(4096);
    assert_non_null(p);
    bigmem_free(p);
    assert_int_equal(bigmem_kept_bytes(), 0);
    bigmem_free(NULL);
    /* size 0 is a valid, freeable block */
    p = bigmem_alloc(0);
    assert_non_null(p);
    bigmem_free(p);
}

static void test_limit_drops_the_oldest(void **state)
{
    (void)state;
    bigmem_configure(20 * MiB, 60000);
    void *a = bigmem_alloc(12 * MiB), *b = bigmem_alloc(12 * MiB);
    bigmem_free(a);
    bigmem_free(b); /* a goes: both do not fit in 20 MiB */
    assert_true(bigmem_kept_bytes() <= 20 * MiB);
    assert_ptr_equal(bigmem_alloc(12 * MiB), b);
    assert_int_equal(bigmem_kept_bytes(), 0);
    bigmem_free(b);
    /* a block larger than the limit is never kept */
    void *huge = bigmem_alloc(24 * MiB);
    bigmem_free(huge);
    assert_true(bigmem_kept_bytes() <= 20 * MiB);
    /* lowering the limit frees what no longer fits; 0 keeps nothing */
    bigmem_configure(0, 60000);
    assert_int_equal(bigmem_kept_bytes(), 0);
    void *c = bigmem_alloc(8 * MiB);
    bigmem_free(c);
    assert_int_equal(bigmem_kept_bytes(), 0);
    bigmem_configure(64 * MiB, 60000);
}

static void test_default_limit_and_environment(void **state)
{
    (void)state;
    /* an engine's smaller default: a block above it is not kept */
    bigmem_default_limit(16 * MiB);
    void *a = bigmem_alloc(20 * MiB);
    bigmem_free(a);
    assert_int_equal(bigmem_kept_bytes(), 0);
    void *b = bigmem_alloc(8 * MiB);
    bigmem_free(b);
    assert_true(bigmem_kept_bytes() >= 8 * MiB);
    bigmem_trim(1);
    /* IPPC_BIGMEM_KEEP_MB wins over the default; 0 keeps nothing */
    assert_int_equal(setenv("IPPC_BIGMEM_KEEP_MB", "0", 1), 0);
    bigmem_default_limit(64 * MiB);
    void *c = bigmem_alloc(8 * MiB);
    bigmem_free(c);
    assert_int_equal(bigmem_kept_bytes(), 0);
    assert_int_equal(setenv("IPPC_BIGMEM_KEEP_MB", "30", 1), 0);
    bigmem_default_limit(1 * MiB);
    void *d = bigmem_alloc(20 * MiB);
    bigmem_free(d);
    assert_true(bigmem_kept_bytes() >= 20 * MiB);
    /* not a number: the default holds */
    bigmem_trim(1);
    assert_int_equal(setenv("IPPC_BIGMEM_KEEP_MB", "lots", 1), 0);
    bigmem_default_limit(4 * MiB);
    void *e = bigmem_alloc(8 * MiB);
    bigmem_free(e);
    assert_int_equal(bigmem_kept_bytes(), 0);
    assert_int_equal(unsetenv("IPPC_BIGMEM_KEEP_MB"), 0);
    bigmem_default_limit(BIGMEM_KEEP_BYTES_DEFAULT);
    bigmem_configure(64 * MiB, 60000);
}

static void test_many_blocks_fit_the_slots(void **state)
{
    (void)state;
    void *p[12];
    for (int i = 0; i < 12; i++)
        p[i] = bigmem_alloc(2 * MiB);
    for (int i = 0; i < 12; i++)
        bigmem_free(p[i]);
    /* a bounded number of slots: the rest were freed, not lost (ASan's leak
     * check at exit would say) */
    assert_true(bigmem_kept_bytes() <= 64 * MiB);
    assert_true(bigmem_kept_bytes() >= 2 * MiB);
}

static void test_old_blocks_are_trimmed(void **state)
{
    (void)state;
    bigmem_configure(64 * MiB, 50);
    void *a = bigmem_alloc(4 * MiB);
    bigmem_free(a);
    assert_true(bigmem_kept_bytes() >= 4 * MiB);
    bigmem_trim(0); /* young: stays */
    assert_true(bigmem_kept_bytes() >= 4 * MiB);
    struct timespec pause = {0, 120000000L};
    nanosleep(&pause, NULL);
    bigmem_trim(0); /* older than 50 ms: freed */
    assert_int_equal(bigmem_kept_bytes(), 0);
    /* and an allocation frees stale blocks on its way */
    a = bigmem_alloc(4 * MiB);
    bigmem_free(a);
    nanosleep(&pause, NULL);
    void *b = bigmem_alloc(2 * MiB);
    assert_int_equal(bigmem_kept_bytes(), 0);
    bigmem_free(b);
    bigmem_configure(64 * MiB, 60000);
}

static void test_calloc_zeroes_a_reused_block(void **state)
{
    (void)state;
    unsigned char *a = bigmem_alloc(3 * MiB);
    memset(a, 0xAB, 3 * MiB);
    bigmem_free(a);
    unsigned char *z = bigmem_calloc(3 * MiB);
    assert_ptr_equal(z, a);
    for (size_t i = 0; i < 3 * MiB; i += 4093)
        assert_int_equal(z[i], 0);
    assert_int_equal(z[3 * MiB - 1], 0);
    bigmem_free(z);
    unsigned char *fresh = bigmem_calloc(5 * MiB);
    assert_int_equal(fresh[5 * MiB - 1], 0);
    /* a plain free() of a bigmem block is correct too */
    free(fresh);
}

static void *churn(void *arg)
{
    size_t sizes[] = {MiB, 3 * MiB, 5 * MiB, 8 * MiB};
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < 400; i++) {
        size_t n = sizes[(seed = seed * 1103515245 + 12345) >> 16 & 3];
        unsigned char *p = bigmem_alloc(n);
        if (!p)
            return (void *)1;
        p[0] = p[n - 1] = (unsigned char)i; /* the whole block is ours */
        bigmem_free(p);
    }
    return NULL;
}

static void test_threads_share_the_pool(void **state)
{
    (void)state;
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn, (void *)(i + 1)), 0);
    for (int i = 0; i < 4; i++) {
        void *rc;
        assert_int_equal(pthread_join(t[i], &rc), 0);
        assert_null(rc);
    }
    assert_true(bigmem_kept_bytes() <= 64 * MiB);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_freed_block_is_reused_for_its_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_best_fit_among_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_blocks_are_not_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit_drops_the_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_limit_and_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_blocks_fit_the_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_blocks_are_trimmed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_calloc_zeroes_a_reused_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_share_the_pool, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
