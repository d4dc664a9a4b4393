/* test_server_sched.c — server/sched.c: every scheme's choice on crafted
 * engine snapshots, determinism for a seed, coverage of the random ones,
 * names, and map chunking. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "sched.h"

#define DRAWS 20000

static const sched_kind all_kinds[] = {SCHED_LEASTLOAD, SCHED_LRU, SCHED_TWOBIN, SCHED_WEIGHTED,
                                       SCHED_RANDOM};
#define KIND_COUNT (sizeof all_kinds / sizeof *all_kinds)

static void test_names_round_trip(void **state)
{
    (void)state;
    const char *names[] = {"leastload", "lru", "twobin", "weighted", "random"};
    for (size_t i = 0; i < KIND_COUNT; i++) {
        assert_int_equal(sched_parse(names[i]), all_kinds[i]);
        assert_string_equal(sched_name(all_kinds[i]), names[i]);
    }
    assert_int_equal(sched_parse("plainrandom"), SCHED_RANDOM); /* ipyparallel's spelling */
    assert_int_equal(sched_parse("LeastLoad"), -1);
    assert_int_equal(sched_parse(""), -1);
    assert_int_equal(sched_parse("leastload "), -1);
    assert_int_equal(sched_parse(NULL), -1);
    assert_null(sched_name((sched_kind)5));
    assert_null(sched_name((sched_kind)-1));
}

static void test_no_candidates(void **state)
{
    (void)state;
    uint64_t rng = 42;
    sched_engine one = {.id = 3, .load = 0, .last_used = 0};
    for (size_t i = 0; i < KIND_COUNT; i++) {
        assert_int_equal(sched_choose(all_kinds[i], &one, 0, &rng), -1);
        assert_int_equal(sched_choose(all_kinds[i], NULL, 0, &rng), -1);
    }
    assert_int_equal(sched_choose((sched_kind)99, &one, 1, &rng), -1);
}

static void test_single_candidate(void **state)
{
    (void)state;
    uint64_t rng = 7;
    sched_engine one = {.id = 9, .load = 5, .last_used = 100};
    for (size_t i = 0; i < KIND_COUNT; i++)
        for (int k = 0; k < 50; k++)
            assert_int_equal(sched_choose(all_kinds[i], &one, 1, &rng), 0);
}

static void test_leastload_picks_min_load(void **state)
{
    (void)state;
    sched_engine cands[] = {
        {.id = 0, .load = 3, .last_used = 1},
        {.id = 1, .load = 1, .last_used = 50},
        {.id = 2, .load = 2, .last_used = 2},
        {.id = 3, .load = 4, .last_used = 0},
    };
    assert_int_equal(sched_choose(SCHED_LEASTLOAD, cands, 4, NULL), 1);
    cands[3].load = 0;
    assert_int_equal(sched_choose(SCHED_LEASTLOAD, cands, 4, NULL), 3);
}

static void test_leastload_tie_goes_to_least_recently_used(void **state)
{
    (void)state;
    sched_engine cands[] = {
        {.id = 10, .load = 1, .last_used = 30},
        {.id = 11, .load = 2, .last_used = 1},  /* oldest, but busier */
        {.id = 12, .load = 1, .last_used = 20}, /* tie on load, older than 10 */
        {.id = 13, .load = 1, .last_used = 25},
    };
    assert_int_equal(sched_choose(SCHED_LEASTLOAD, cands, 4, NULL), 2);
    /* A never-used engine (0) is the oldest of all. */
    cands[3].last_used = 0;
    assert_int_equal(sched_choose(SCHED_LEASTLOAD, cands, 4, NULL), 3);
    /* A full tie falls to the first candidate. */
    sched_engine same[] = {{.id = 5, .load = 0}, {.id = 6, .load = 0}, {.id = 7, .load = 0}};
    assert_int_equal(sched_choose(SCHED_LEASTLOAD, same, 3, NULL), 0);
}

static void test_lru_ignores_load(void **state)
{
    (void)state;
    sched_engine cands[] = {
        {.id = 0, .load = 0, .last_used = 9},
        {.id = 1, .load = 7, .last_used = 3},
        {.id = 2, .load = 0, .last_used = 5},
    };
    assert_int_equal(sched_choose(SCHED_LRU, cands, 3, NULL), 1);
    cands[2].last_used = 0;
    assert_int_equal(sched_choose(SCHED_LRU, cands, 3, NULL), 2);
    cands[0].last_used = 0; /* tie on last_used: the first */
    assert_int_equal(sched_choose(SCHED_LRU, cands, 3, NULL), 0);
}

/* Sequence of choices for a seed. */
static void draw_sequence(sched_kind kind, const sched_engine *cands, size_t n, uint64_t seed,
                          long *out, size_t count)
{
    uint64_t rng = seed;
    for (size_t i = 0; i < count; i++) {
        out[i] = sched_choose(kind, cands, n, &rng);
        assert_true(out[i] >= 0 && (size_t)out[i] < n);
    }
    assert_true(rng != seed); /* the random schemes advance the state */
}

static void test_random_schemes_deterministic_for_seed(void **state)
{
    (void)state;
    sched_engine cands[6];
    for (int i = 0; i < 6; i++)
        cands[i] = (sched_engine){.id = 100 + i, .load = (unsigned)(i % 3), .last_used = 10u + i};
    const sched_kind randomised[] = {SCHED_TWOBIN, SCHED_WEIGHTED, SCHED_RANDOM};
    for (size_t k = 0; k < 3; k++) {
        long a[200], b[200], c[200];
        draw_sequence(randomised[k], cands, 6, 0x1234567ULL, a, 200);
        draw_sequence(randomised[k], cands, 6, 0x1234567ULL, b, 200);
        draw_sequence(randomised[k], cands, 6, 0x7654321ULL, c, 200);
        assert_memory_equal(a, b, sizeof a);
        assert_memory_not_equal(a, c, sizeof a); /* 200 draws of 6 never coincide by chance */
    }
}

static void test_zero_seed_still_random(void **state)
{
    (void)state;
    sched_engine cands[4] = {{.id = 0}, {.id = 1}, {.id = 2}, {.id = 3}};
    uint64_t rng = 0;
    int seen[4] = {0};
    for (int i = 0; i < 400; i++)
        seen[sched_choose(SCHED_RANDOM, cands, 4, &rng)]++;
    assert_true(rng != 0);
    for (int i = 0; i < 4; i++)
        assert_true(seen[i] > 0);
}

static void test_random_covers_all_uniformly(void **state)
{
    (void)state;
    enum { N = 7 };
    sched_engine cands[N];
    for (int i = 0; i < N; i++)
        cands[i] = (sched_engine){.id = i, .load = (unsigned)i * 10, .last_used = (uint64_t)i};
    uint64_t rng = 99;
    int seen[N] = {0};
    for (int i = 0; i < DRAWS; i++)
        seen[sched_choose(SCHED_RANDOM, cands, N, &rng)]++;
    /* Expected DRAWS/N = 2857 each; 20% slack is > 10 standard deviations. */
    for (int i = 0; i < N; i++) {
        assert_true(seen[i] > DRAWS / N * 8 / 10);
        assert_true(seen[i] < DRAWS / N * 12 / 10);
    }
}

static void test_twobin_picks_older_of_two_distinct(void **state)
{
    (void)state;
    /* Two candidates: twobin draws both, so the older always wins. */
    sched_engine two[] = {{.id = 0, .load = 0, .last_used = 8},
                          {.id = 1, .load = 5, .last_used = 2}};
    uint64_t rng = 5;
    for (int i = 0; i < 500; i++)
        assert_int_equal(sched_choose(SCHED_TWOBIN, two, 2, &rng), 1);

    /* Four candidates with distinct ages: the newest (index 3) can never win a
     * pair, the oldest wins every pair it is in: P = 1/2 (3 of the 6 pairs). */
    sched_engine four[] = {
        {.id = 0, .last_used = 1},
        {.id = 1, .last_used = 2},
        {.id = 2, .last_used = 3},
        {.id = 3, .last_used = 4},
    };
    int seen[4] = {0};
    for (int i = 0; i < DRAWS; i++)
        seen[sched_choose(SCHED_TWOBIN, four, 4, &rng)]++;
    assert_int_equal(seen[3], 0);
    assert_true(seen[0] > DRAWS * 45 / 100 && seen[0] < DRAWS * 55 / 100);
    assert_true(seen[1] > DRAWS * 28 / 100 && seen[1] < DRAWS * 38 / 100); /* 2/6 */
    assert_true(seen[2] > DRAWS * 12 / 100 && seen[2] < DRAWS * 22 / 100); /* 1/6 */
}

static void test_weighted_prefers_idle(void **state)
{
    (void)state;
    /* Loads 0, 1, 3, 9 give weights 1, 1/2, 1/4, 1/10. */
    sched_engine cands[] = {
        {.id = 0, .load = 9, .last_used = 1},
        {.id = 1, .load = 0, .last_used = 2},
        {.id = 2, .load = 3, .last_used = 3},
        {.id = 3, .load = 1, .last_used = 4},
    };
    uint64_t rng = 2024;
    int seen[4] = {0};
    for (int i = 0; i < DRAWS; i++)
        seen[sched_choose(SCHED_WEIGHTED, cands, 4, &rng)]++;
    /* The idle engine wins whenever it is drawn at least once: 1 - (1 - 1/1.85)^2 = 0.79. */
    assert_true(seen[1] > DRAWS * 74 / 100 && seen[1] < DRAWS * 84 / 100);
    /* The busiest engine wins only when drawn twice: (0.1/1.85)^2 = 0.3%. */
    assert_true(seen[0] < DRAWS * 1 / 100);
    assert_true(seen[3] > seen[2] && seen[2] > seen[0]);

    /* All equally loaded: the less recently used of the two wins, so the
     * newest engine only wins when drawn twice ((1/4)^2). */
    for (int i = 0; i < 4; i++)
        cands[i].load = 2;
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < DRAWS; i++)
        seen[sched_choose(SCHED_WEIGHTED, cands, 4, &rng)]++;
    assert_true(seen[3] > DRAWS * 4 / 100 && seen[3] < DRAWS * 9 / 100);
    assert_true(seen[0] > seen[1] && seen[1] > seen[2] && seen[2] > seen[3]);
}

static void test_random_schemes_only_pick_candidates(void **state)
{
    (void)state;
    /* Candidate ids are sparse; the result is always an index into cands. */
    sched_engine cands[] = {{.id = 40, .load = 1}, {.id = 7, .load = 0}, {.id = 1000, .load = 2}};
    uint64_t rng = 31337;
    for (size_t k = 0; k < KIND_COUNT; k++)
        for (int i = 0; i < 1000; i++) {
            long idx = sched_choose(all_kinds[k], cands, 3, &rng);
            assert_true(idx >= 0 && idx < 3);
        }
}

static void test_chunks(void **state)
{
    (void)state;
    assert_int_equal(sched_chunks(0, 1), 0);
    assert_int_equal(sched_chunks(0, 5), 0);
    assert_int_equal(sched_chunks(1, 1), 1);
    assert_int_equal(sched_chunks(10, 1), 10);
    assert_int_equal(sched_chunks(10, 3), 4); /* 3 3 3 1 */
    assert_int_equal(sched_chunks(9, 3), 3);
    assert_int_equal(sched_chunks(10, 10), 1);
    assert_int_equal(sched_chunks(10, 100), 1);
    assert_int_equal(sched_chunks(10000, 7), 1429);
    assert_int_equal(sched_chunks(SIZE_MAX, 1), SIZE_MAX);
    assert_int_equal(sched_chunks(SIZE_MAX, 2), SIZE_MAX / 2 + 1); /* no overflow */
    assert_int_equal(sched_chunks(5, 0), 5);                       /* 0 read as 1 */

    /* The chunks tile [0, n) exactly: chunk i is [i*c, min(n, (i+1)*c)). */
    size_t n = 1003, c = 17, covered = 0;
    size_t chunks = sched_chunks(n, c);
    for (size_t i = 0; i < chunks; i++) {
        size_t lo = i * c, hi = (i + 1) * c < n ? (i + 1) * c : n;
        assert_int_equal(lo, covered);
        assert_true(hi > lo);
        covered = hi;
    }
    assert_int_equal(covered, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_no_candidates),
        cmocka_unit_test(test_single_candidate),
        cmocka_unit_test(test_leastload_picks_min_load),
        cmocka_unit_test(test_leastload_tie_goes_to_least_recently_used),
        cmocka_unit_test(test_lru_ignores_load),
        cmocka_unit_test(test_random_schemes_deterministic_for_seed),
        cmocka_unit_test(test_zero_seed_still_random),
        cmocka_unit_test(test_random_covers_all_uniformly),
        cmocka_unit_test(test_twobin_picks_older_of_two_distinct),
        cmocka_unit_test(test_weighted_prefers_idle),
        cmocka_unit_test(test_random_schemes_only_pick_candidates),
        cmocka_unit_test(test_chunks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
