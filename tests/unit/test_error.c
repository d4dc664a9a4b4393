/* test_error.c — common/error.c: ippc_error_set, the status table, the JSON shape. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "error.h"

static void test_set_fills_code_and_message(void **state)
{
    (void)state;
    ippc_error err = {{0}, {0}};
    assert_int_equal(ippc_error_set(&err, ERR_NOT_FOUND, "engine %d is gone (%s)", 7, "x"), -1);
    assert_string_equal(err.code, "not_found");
    assert_string_equal(err.message, "engine 7 is gone (x)");
}

static void test_set_null_err_returns_minus_one(void **state)
{
    (void)state;
    assert_int_equal(ippc_error_set(NULL, ERR_INTERNAL, "ignored"), -1);
}

static void test_set_truncates_long_message(void **state)
{
    (void)state;
    ippc_error err;
    char long_text[2000];
    memset(long_text, 'a', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    ippc_error_set(&err, "a_code_that_is_much_longer_than_thirty_two_bytes", "%s", long_text);
    assert_int_equal(strlen(err.message), sizeof err.message - 1);
    assert_int_equal(strlen(err.code), sizeof err.code - 1);
}

static void test_status_table(void **state)
{
    (void)state;
    static const struct {
        const char *code;
        int status;
    } expected[] = {
        {"bad_request", 400},       {"bad_targets", 400},        {"unauthorized", 401},
        {"not_found", 404},         {"method_not_allowed", 405}, {"request_timeout", 408},
        {"conflict", 409},          {"payload_too_large", 413},  {"uri_too_long", 414},
        {"headers_too_large", 431}, {"overloaded", 503},         {"unsupported_media", 415},
        {"invalid_value", 422},     {"no_engines", 422},         {"unavailable", 503},
        {"internal", 500},
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        assert_int_equal(http_status_for(expected[i].code), expected[i].status);
    assert_int_equal(http_status_for(ERR_BAD_TARGETS), 400);
    assert_int_equal(http_status_for(ERR_NO_ENGINES), 422);
}

static void test_status_unknown_is_500(void **state)
{
    (void)state;
    assert_int_equal(http_status_for("no_such_code"), 500);
    assert_int_equal(http_status_for(""), 500);
    assert_int_equal(http_status_for(NULL), 500);
}

static void test_error_json_shape(void **state)
{
    (void)state;
    ippc_error err;
    ippc_error_set(&err, ERR_CONFLICT, "view %s exists", "v1");
    json_t *body = ippc_error_json(&err);
    assert_non_null(body);
    assert_int_equal(json_object_size(body), 1);
    json_t *inner = json_object_get(body, "error");
    assert_true(json_is_object(inner));
    assert_int_equal(json_object_size(inner), 2);
    assert_string_equal(json_string_value(json_object_get(inner, "code")), "conflict");
    assert_string_equal(json_string_value(json_object_get(inner, "message")), "view v1 exists");
    json_decref(body);
}

static void test_error_json_without_error(void **state)
{
    (void)state;
    json_t *body = ippc_error_json(NULL);
    assert_non_null(body);
    json_t *inner = json_object_get(body, "error");
    assert_string_equal(json_string_value(json_object_get(inner, "code")), "internal");
    assert_true(json_is_string(json_object_get(inner, "message")));
    json_decref(body);
}

static void test_error_json_invalid_utf8_message(void **state)
{
    (void)state;
    ippc_error err;
    ippc_error_set(&err, ERR_BAD_TARGETS, "bad target '%s'",
                   "\xff\xfe"
                   "1");
    json_t *body = ippc_error_json(&err);
    assert_non_null(body);
    json_t *inner = json_object_get(body, "error");
    assert_string_equal(json_string_value(json_object_get(inner, "message")), "bad target '??1'");
    json_decref(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_fills_code_and_message),
        cmocka_unit_test(test_set_null_err_returns_minus_one),
        cmocka_unit_test(test_set_truncates_long_message),
        cmocka_unit_test(test_status_table),
        cmocka_unit_test(test_status_unknown_is_500),
        cmocka_unit_test(test_error_json_shape),
        cmocka_unit_test(test_error_json_without_error),
        cmocka_unit_test(test_error_json_invalid_utf8_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
