/* test_targets.c — common/targets.c: every spec form, Python slice semantics, errors. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "targets.h"

/* Live engines in most tests: ids 0..3; GAPPY has holes, as after failures. */
static const int LIVE[] = {0, 1, 2, 3};
static const int GAPPY[] = {1, 4, 5, 9};
#define NLIVE 4

/* Parses spec over live and checks the result is exactly want (n_want ids). */
static void expect_ids(const char *spec, const int *live, size_t n_live, const int *want,
                       size_t n_want)
{
    int *ids = (int *)0x1;
    size_t n = 99;
    ippc_error err = {{0}, {0}};
    int rc = targets_parse(spec, live, n_live, &ids, &n, &err);
    if (rc != 0)
        print_error("spec '%s' failed: %s: %s\n", spec, err.code, err.message);
    assert_int_equal(rc, 0);
    assert_int_equal(n, n_want);
    for (size_t i = 0; i < n_want; i++) {
        if (ids[i] != want[i])
            print_error("spec '%s': ids[%zu] = %d, want %d\n", spec, i, ids[i], want[i]);
        assert_int_equal(ids[i], want[i]);
    }
    free(ids);
}

static void expect_error(const char *spec, const int *live, size_t n_live, const char *code)
{
    int *ids = (int *)0x1;
    size_t n = 99;
    ippc_error err = {{0}, {0}};
    assert_int_equal(targets_parse(spec, live, n_live, &ids, &n, &err), -1);
    if (strcmp(err.code, code) != 0)
        print_error("spec '%s': code %s, want %s\n", spec ? spec : "(null)", err.code, code);
    assert_string_equal(err.code, code);
    assert_true(err.message[0] != '\0');
    assert_null(ids);
    assert_int_equal(n, 0);
}

#define IDS(...) ((const int[]){__VA_ARGS__}), sizeof((const int[]){__VA_ARGS__}) / sizeof(int)

static void test_all(void **state)
{
    (void)state;
    expect_ids("all", LIVE, NLIVE, IDS(0, 1, 2, 3));
    expect_ids("  all  ", GAPPY, NLIVE, IDS(1, 4, 5, 9));
    expect_error("all", NULL, 0, ERR_NO_ENGINES);
    expect_error("ALL", LIVE, NLIVE, ERR_BAD_TARGETS);
}

static void test_single_id(void **state)
{
    (void)state;
    expect_ids("3", LIVE, NLIVE, IDS(3));
    expect_ids("0", LIVE, NLIVE, IDS(0));
    expect_ids("9", GAPPY, NLIVE, IDS(9));
    expect_ids(" 4 ", GAPPY, NLIVE, IDS(4));
    expect_ids("+2", LIVE, NLIVE, IDS(2));
}

static void test_id_not_live(void **state)
{
    (void)state;
    expect_error("4", LIVE, NLIVE, ERR_NO_ENGINES);
    expect_error("2", GAPPY, NLIVE, ERR_NO_ENGINES);
    expect_error("0,7", LIVE, NLIVE, ERR_NO_ENGINES);
    expect_error("0", NULL, 0, ERR_NO_ENGINES);
}

static void test_negative_indexes_from_end(void **state)
{
    (void)state;
    expect_ids("-1", LIVE, NLIVE, IDS(3));
    expect_ids("-1", GAPPY, NLIVE, IDS(9));
    expect_ids("-4", GAPPY, NLIVE, IDS(1));
    expect_ids("-2", GAPPY, NLIVE, IDS(5));
    expect_error("-5", LIVE, NLIVE, ERR_NO_ENGINES);
    expect_error("-1", NULL, 0, ERR_NO_ENGINES);
}

static void test_comma_lists(void **state)
{
    (void)state;
    expect_ids("0,2,3", LIVE, NLIVE, IDS(0, 2, 3));
    expect_ids("3,0", LIVE, NLIVE, IDS(3, 0));
    expect_ids("0,2,-1", LIVE, NLIVE, IDS(0, 2, 3));
    expect_ids(" 9 , 1 ,\t-3 ", GAPPY, NLIVE, IDS(9, 1, 4));
}

static void test_list_items_are_ids(void **state)
{
    (void)state;
    const char *bad[] = {"1,0:2", "all,1", "all,all", "1,::-1", "0,1:"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int *ids = NULL;
        size_t n = 0;
        ippc_error err = {0};
        assert_int_equal(targets_parse(bad[i], LIVE, NLIVE, &ids, &n, &err), -1);
        assert_string_equal(err.code, ERR_BAD_TARGETS);
        assert_null(ids);
    }
}

static void test_duplicates_removed_first_kept(void **state)
{
    (void)state;
    expect_ids("2,2,2", LIVE, NLIVE, IDS(2));
    expect_ids("3,-1,0,3", LIVE, NLIVE, IDS(3, 0));
}

static void test_slices(void **state)
{
    (void)state;
    expect_ids("0:4", LIVE, NLIVE, IDS(0, 1, 2, 3));
    expect_ids("1:3", LIVE, NLIVE, IDS(1, 2));
    expect_ids(":", LIVE, NLIVE, IDS(0, 1, 2, 3));
    expect_ids("::", LIVE, NLIVE, IDS(0, 1, 2, 3));
    expect_ids(":2", GAPPY, NLIVE, IDS(1, 4));
    expect_ids("2:", GAPPY, NLIVE, IDS(5, 9));
    expect_ids("-2:", GAPPY, NLIVE, IDS(5, 9));
    expect_ids(":-1", GAPPY, NLIVE, IDS(1, 4, 5));
    expect_ids("0:100", LIVE, NLIVE, IDS(0, 1, 2, 3));
    expect_ids("-100:2", LIVE, NLIVE, IDS(0, 1));
    expect_ids(" 1 : 3 ", LIVE, NLIVE, IDS(1, 2));
}

static void test_slices_with_steps(void **state)
{
    (void)state;
    expect_ids("1::2", LIVE, NLIVE, IDS(1, 3));
    expect_ids("::2", GAPPY, NLIVE, IDS(1, 5));
    expect_ids("::3", LIVE, NLIVE, IDS(0, 3));
    expect_ids("::-1", GAPPY, NLIVE, IDS(9, 5, 4, 1));
    expect_ids("::-2", LIVE, NLIVE, IDS(3, 1));
    expect_ids("2::-1", LIVE, NLIVE, IDS(2, 1, 0));
    expect_ids("3:0:-1", LIVE, NLIVE, IDS(3, 2, 1));
    expect_ids("-1:-3:-1", GAPPY, NLIVE, IDS(9, 5));
    expect_ids("100::-1", LIVE, NLIVE, IDS(3, 2, 1, 0));
    expect_ids("0:4:100", LIVE, NLIVE, IDS(0));
    expect_ids("::99999999999999999999999", LIVE, NLIVE, IDS(0));
    expect_ids("::-99999999999999999999999", LIVE, NLIVE, IDS(3));
    expect_ids("-99999999999999999999:99999999999999999999", LIVE, NLIVE, IDS(0, 1, 2, 3));
}

static void test_empty_slices_are_no_engines(void **state)
{
    (void)state;
    expect_error("2:2", LIVE, NLIVE, ERR_NO_ENGINES);
    expect_error("3:1", LIVE, NLIVE, ERR_NO_ENGINES);
    expect_error("1:3:-1", LIVE, NLIVE, ERR_NO_ENGINES);
    expect_error("10:", LIVE, NLIVE, ERR_NO_ENGINES);
    expect_error(":", NULL, 0, ERR_NO_ENGINES);
}

static void test_step_zero_is_bad(void **state)
{
    (void)state;
    expect_error("::0", LIVE, NLIVE, ERR_BAD_TARGETS);
    expect_error("1:3:0", LIVE, NLIVE, ERR_BAD_TARGETS);
    expect_error("0:2:-0", LIVE, NLIVE, ERR_BAD_TARGETS);
}

static void test_garbage_is_bad_targets(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",      "   ",  ",",    "0,",  ",0",  "0,,1", "abc",        "1a",   "a1",
        "1 2",   "1.5",  "0x1",  "--1", "-",   "+",    "1:2:3:4",    "::-",  "a:b",
        "1:2:x", "all1", "all:", "0;1", "[0]", "1e3",  "0 :1 :1 :1", "\xff",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_error(bad[i], LIVE, NLIVE, ERR_BAD_TARGETS);
    expect_error(NULL, LIVE, NLIVE, ERR_BAD_TARGETS);
}

static void test_huge_numbers(void **state)
{
    (void)state;
    expect_error("99999999999999999999999999999999", LIVE, NLIVE, ERR_NO_ENGINES);
    expect_error("-99999999999999999999999999999999", LIVE, NLIVE, ERR_NO_ENGINES);
    expect_error("2147483648", LIVE, NLIVE, ERR_NO_ENGINES);
    expect_error("4294967296", LIVE, NLIVE, ERR_NO_ENGINES);
}

static void test_long_specs(void **state)
{
    (void)state;
    char spec[TARGETS_MAX_SPEC + 2];
    memset(spec, '1', sizeof spec - 1);
    spec[sizeof spec - 1] = '\0';
    expect_error(spec, LIVE, NLIVE, ERR_BAD_TARGETS);

    /* At the limit: a long but valid comma list. */
    size_t len = 0;
    while (len + 2 <= TARGETS_MAX_SPEC) {
        memcpy(spec + len, "2,", 2);
        len += 2;
    }
    spec[len - 1] = '\0';
    expect_ids(spec, LIVE, NLIVE, IDS(2));
}

static void test_many_live_engines(void **state)
{
    (void)state;
    int live[1000];
    for (int i = 0; i < 1000; i++)
        live[i] = i * 2;
    int *ids = NULL;
    size_t n = 0;
    ippc_error err;
    assert_int_equal(targets_parse("::-1", live, 1000, &ids, &n, &err), 0);
    assert_int_equal(n, 1000);
    assert_int_equal(ids[0], 1998);
    assert_int_equal(ids[999], 0);
    free(ids);
    expect_ids("-1,1998,500", live, 1000, IDS(1998, 500));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all),
        cmocka_unit_test(test_list_items_are_ids),
        cmocka_unit_test(test_single_id),
        cmocka_unit_test(test_id_not_live),
        cmocka_unit_test(test_negative_indexes_from_end),
        cmocka_unit_test(test_comma_lists),
        cmocka_unit_test(test_duplicates_removed_first_kept),
        cmocka_unit_test(test_slices),
        cmocka_unit_test(test_slices_with_steps),
        cmocka_unit_test(test_empty_slices_are_no_engines),
        cmocka_unit_test(test_step_zero_is_bad),
        cmocka_unit_test(test_garbage_is_bad_targets),
        cmocka_unit_test(test_huge_numbers),
        cmocka_unit_test(test_long_specs),
        cmocka_unit_test(test_many_live_engines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
