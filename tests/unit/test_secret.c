/* test_secret.c — common/secret.c: equal and not equal secrets, the Bearer scheme in any
 * case, the ippc.token. subprotocol entry, and that an empty secret never matches. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "secret.h"

static int bearer(const char *value, const char *want)
{
    return secret_bearer_equal(value, strlen(value), want);
}

static int protocol(const char *list, const char *want)
{
    return secret_protocol_token_equal(list, strlen(list), want);
}

static void test_equal(void **state)
{
    (void)state;
    assert_true(secret_equal("abc", "abc"));
    assert_false(secret_equal("abd", "abc"));
    assert_false(secret_equal("ab", "abc"));
    assert_false(secret_equal("abcd", "abc"));
    assert_true(secret_equal_n("abcdef", 3, "abc"));
    assert_false(secret_equal_n("abcdef", 4, "abc"));
    assert_false(secret_equal_n("", 0, ""));
}

static void test_bearer(void **state)
{
    (void)state;
    assert_true(bearer("Bearer tok", "tok"));
    assert_true(bearer("bearer tok", "tok"));
    assert_true(bearer("BEARER  tok ", "tok"));
    assert_true(bearer(" Bearer\ttok", "tok"));
    assert_false(bearer("Bearertok", "tok"));
    assert_false(bearer("Bearer", "tok"));
    assert_false(bearer("Bearer ", "tok"));
    assert_false(bearer("Basic tok", "tok"));
    assert_false(bearer("Bearer tok2", "tok"));
    assert_false(bearer("Bearer to k", "tok"));
    assert_false(bearer("Bearer ", ""));
    /* Not NUL-terminated: only n bytes are read. */
    assert_true(secret_bearer_equal("Bearer tokXYZ", 10, "tok"));
}

static void test_protocol_token(void **state)
{
    (void)state;
    assert_true(protocol("ippc.client.v1, ippc.token.tok", "tok"));
    assert_true(protocol("ippc.token.tok", "tok"));
    assert_true(protocol(" ippc.token.x ,ippc.token.tok,", "tok"));
    assert_false(protocol("ippc.client.v1", "tok"));
    assert_false(protocol("ippc.token.", ""));
    assert_false(protocol("ippc.token.tokk", "tok"));
    assert_false(protocol("xippc.token.tok", "tok"));
    assert_false(protocol("", "tok"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_protocol_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
