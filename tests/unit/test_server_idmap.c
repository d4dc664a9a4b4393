/* test_server_idmap.c — server/idmap.c: put/get/remove, overwrite, growth, tombstone
 * reuse under churn, and keys that must never be found. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>

#include "idmap.h"

/* Values are fake pointers derived from the key, so a wrong slot shows up as a
 * wrong value rather than as a crash. */
#define VAL(k) ((void *)(uintptr_t)((k)*2 + 1))

static void test_empty_map(void **state)
{
    (void)state;
    idmap m;
    idmap_init(&m);
    assert_null(idmap_get(&m, 1));
    assert_null(idmap_get(&m, 42));
    assert_null(idmap_remove(&m, 1));
    assert_int_equal(m.count, 0);
    idmap_free(&m);
    idmap_free(&m); /* free leaves an empty, reusable map */
    assert_null(idmap_get(&m, 1));
}

static void test_put_get_remove(void **state)
{
    (void)state;
    idmap m;
    idmap_init(&m);
    assert_int_equal(idmap_put(&m, 7, VAL(7)), 0);
    assert_int_equal(idmap_put(&m, 8, VAL(8)), 0);
    assert_int_equal(m.count, 2);
    assert_ptr_equal(idmap_get(&m, 7), VAL(7));
    assert_ptr_equal(idmap_get(&m, 8), VAL(8));
    assert_null(idmap_get(&m, 9));

    assert_ptr_equal(idmap_remove(&m, 7), VAL(7));
    assert_int_equal(m.count, 1);
    assert_null(idmap_get(&m, 7));
    assert_null(idmap_remove(&m, 7)); /* twice: nothing left to remove */
    assert_int_equal(m.count, 1);
    assert_ptr_equal(idmap_get(&m, 8), VAL(8));

    /* Re-insert after removal. */
    assert_int_equal(idmap_put(&m, 7, VAL(70)), 0);
    assert_ptr_equal(idmap_get(&m, 7), VAL(70));
    assert_int_equal(m.count, 2);
    idmap_free(&m);
}

static void test_overwrite_keeps_count(void **state)
{
    (void)state;
    idmap m;
    idmap_init(&m);
    for (int i = 0; i < 10; i++)
        assert_int_equal(idmap_put(&m, 5, VAL((uint64_t)i)), 0);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(idmap_get(&m, 5), VAL(9));
    /* A NULL value is stored like any other (get cannot tell it from absent). */
    assert_int_equal(idmap_put(&m, 5, NULL), 0);
    assert_int_equal(m.count, 1);
    assert_null(idmap_get(&m, 5));
    assert_null(idmap_remove(&m, 5));
    assert_int_equal(m.count, 0);
    idmap_free(&m);
}

/* Keys that collide in the low bits still work: ids are often multiples of a
 * power of two in other maps' hands. */
static void test_structured_keys(void **state)
{
    (void)state;
    idmap m;
    idmap_init(&m);
    for (uint64_t i = 1; i <= 2000; i++)
        assert_int_equal(idmap_put(&m, i << 32, VAL(i)), 0);
    for (uint64_t i = 1; i <= 2000; i++)
        assert_ptr_equal(idmap_get(&m, i << 32), VAL(i));
    assert_null(idmap_get(&m, (uint64_t)2001 << 32));
    assert_null(idmap_get(&m, 1));
    assert_int_equal(m.count, 2000);
    idmap_free(&m);
}

/* 100k keys in, every other one out, back in with new values, then the same
 * churn the hub produces (task ids inserted and removed in a sliding window):
 * tombstones must be reused or rehashed away, never fill the table. */
static void test_many_keys_with_churn(void **state)
{
    (void)state;
    enum { N = 100000 };
    idmap m;
    idmap_init(&m);
    for (uint64_t k = 1; k <= N; k++)
        assert_int_equal(idmap_put(&m, k, VAL(k)), 0);
    assert_int_equal(m.count, N);
    size_t cap_full = m.cap;
    assert_true(m.cap > N);

    for (uint64_t k = 2; k <= N; k += 2)
        assert_ptr_equal(idmap_remove(&m, k), VAL(k));
    assert_int_equal(m.count, N / 2);
    for (uint64_t k = 1; k <= N; k++) {
        if (k % 2)
            assert_ptr_equal(idmap_get(&m, k), VAL(k));
        else
            assert_null(idmap_get(&m, k));
    }

    for (uint64_t k = 2; k <= N; k += 2)
        assert_int_equal(idmap_put(&m, k, VAL(k + 1000000)), 0);
    assert_int_equal(m.count, N);
    for (uint64_t k = 1; k <= N; k++)
        assert_ptr_equal(idmap_get(&m, k), k % 2 ? VAL(k) : VAL(k + 1000000));
    /* Re-inserting what was removed needs no more room than the first time. */
    assert_int_equal(m.cap, cap_full);

    /* Sliding window: remove everything, then 10 rounds of 100k fresh ids with
     * at most 1000 alive at a time.  The tombstones left behind must be
     * rehashed away in place: the table never grows, lookups stay right. */
    for (uint64_t k = 1; k <= N; k++)
        assert_non_null(idmap_remove(&m, k));
    assert_int_equal(m.count, 0);
    uint64_t next = N + 1;
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < N; i++, next++) {
            assert_int_equal(idmap_put(&m, next, VAL(next)), 0);
            if (next > N + 1000)
                assert_ptr_equal(idmap_remove(&m, next - 1000), VAL(next - 1000));
        }
        assert_int_equal(m.count, 1000);
        assert_int_equal(m.cap, cap_full);
        assert_true((m.count + m.tombstones) * 4 < m.cap * 3);
    }
    for (uint64_t k = next - 1000; k < next; k++)
        assert_ptr_equal(idmap_get(&m, k), VAL(k));
    assert_null(idmap_get(&m, next - 1001));
    assert_null(idmap_get(&m, next));
    idmap_free(&m);
}

/* Keys that are never found: never inserted, removed, 0 (the empty marker) and
 * UINT64_MAX (the tombstone marker), even when tombstones are about. */
static void test_never_found(void **state)
{
    (void)state;
    idmap m;
    idmap_init(&m);
    assert_null(idmap_get(&m, 0));
    assert_null(idmap_get(&m, UINT64_MAX));
    for (uint64_t k = 1; k <= 5000; k++)
        assert_int_equal(idmap_put(&m, k, VAL(k)), 0);
    for (uint64_t k = 1; k <= 5000; k += 3)
        idmap_remove(&m, k);
    assert_true(m.tombstones > 0);
    size_t count = m.count;
    for (uint64_t k = 5001; k <= 20000; k++)
        assert_null(idmap_get(&m, k));
    for (uint64_t k = 1; k <= 5000; k += 3)
        assert_null(idmap_get(&m, k));
    assert_null(idmap_get(&m, 0));
    assert_null(idmap_remove(&m, 0));
    assert_null(idmap_get(&m, UINT64_MAX));
    assert_null(idmap_get(&m, UINT64_MAX - 1));
    assert_null(idmap_remove(&m, UINT64_MAX - 1));
    assert_int_equal(m.count, count);
    idmap_free(&m);
}

/* Same slot function as idmap.c, to build a collision on purpose. */
static size_t slot_of(uint64_t key, size_t cap)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

/* Regression (was a latent bug): UINT64_MAX is the tombstone
 * marker, so removing it "finds" a tombstone on its probe chain and counts it
 * as a removal: count drops, tombstones grow, though nothing was stored. */
static void test_bug_remove_tombstone_marker(void **state)
{
    (void)state;
    idmap m;
    idmap_init(&m);
    assert_int_equal(idmap_put(&m, 1, VAL(1)), 0);
    size_t target = slot_of(UINT64_MAX, m.cap);
    uint64_t k = 2;
    while (slot_of(k, m.cap) != target)
        k++;
    assert_int_equal(idmap_put(&m, k, VAL(k)), 0);
    assert_ptr_equal(idmap_remove(&m, k), VAL(k));
    assert_int_equal(m.count, 1);
    assert_null(idmap_remove(&m, UINT64_MAX));
    size_t count = m.count;
    idmap_free(&m);
    assert_int_equal(count, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_map),
        cmocka_unit_test(test_put_get_remove),
        cmocka_unit_test(test_overwrite_keeps_count),
        cmocka_unit_test(test_structured_keys),
        cmocka_unit_test(test_many_keys_with_churn),
        cmocka_unit_test(test_never_found),
        cmocka_unit_test(test_bug_remove_tombstone_marker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
