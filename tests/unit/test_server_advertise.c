/* test_server_advertise.c — server/advertise.c: the host written into the
 * connection files (never 127.0.0.1 for a wildcard bind). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "advertise.h"

static void test_loopback_and_wildcard(void **state)
{
    (void)state;
    assert_true(advertise_is_loopback("127.0.0.1"));
    assert_true(advertise_is_loopback("127.1.2.3"));
    assert_true(advertise_is_loopback("localhost"));
    assert_false(advertise_is_loopback("0.0.0.0"));
    assert_false(advertise_is_loopback("10.0.0.1"));
    assert_false(advertise_is_loopback("128.0.0.1"));
    assert_true(advertise_is_wildcard("0.0.0.0"));
    assert_false(advertise_is_wildcard("127.0.0.1"));
    assert_false(advertise_is_wildcard("0.0.0.1"));
    assert_false(advertise_is_wildcard("garbage"));
}

static void test_location_names(void **state)
{
    char long_name[300];

    (void)state;
    assert_true(advertise_location_valid("node1"));
    assert_true(advertise_location_valid("ctl.example.org"));
    assert_true(advertise_location_valid("10.1.2.3"));
    assert_true(advertise_location_valid("my_host-2"));
    assert_false(advertise_location_valid(""));
    assert_false(advertise_location_valid("-x"));
    assert_false(advertise_location_valid(".x"));
    assert_false(advertise_location_valid("a b"));
    assert_false(advertise_location_valid("a/b"));
    assert_false(advertise_location_valid("a:80"));
    assert_false(advertise_location_valid("a\nb"));
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_false(advertise_location_valid(long_name));
    long_name[253] = '\0';
    assert_true(advertise_location_valid(long_name));
}

static void test_host_choice(void **state)
{
    char host[256];
    ippc_error err = {{0}, {0}};

    (void)state;
    assert_int_equal(advertise_host("127.0.0.1", NULL, host, sizeof host, &err), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(advertise_host("10.9.8.7", NULL, host, sizeof host, &err), 0);
    assert_string_equal(host, "10.9.8.7");
    assert_int_equal(advertise_host("0.0.0.0", "gateway.example", host, sizeof host, &err), 0);
    assert_string_equal(host, "gateway.example");
    assert_int_equal(advertise_host("127.0.0.1", "a b", host, sizeof host, &err), -1);
    assert_string_equal(err.code, ERR_INVALID);
    /* A wildcard bind names an interface's address or fails asking for
     * --location; it never falls back to loopback. */
    memset(&err, 0, sizeof err);
    if (advertise_host("0.0.0.0", NULL, host, sizeof host, &err) == 0) {
        assert_false(advertise_is_loopback(host));
        assert_false(advertise_is_wildcard(host));
    } else {
        assert_string_equal(err.code, ERR_UNAVAILABLE);
        assert_non_null(strstr(err.message, "--location"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loopback_and_wildcard),
        cmocka_unit_test(test_location_names),
        cmocka_unit_test(test_host_choice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
