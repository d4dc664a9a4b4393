/* test_buf.c — common/buf.c: appends, growth, printf, take, reset. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "buf.h"

static void test_zeroed_buffer_is_empty(void **state)
{
    (void)state;
    ippc_buf b = {0};
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    buf_free(&b); /* nothing to free */
    assert_null(b.data);
}

static void test_append_keeps_a_nul_after_the_bytes(void **state)
{
    (void)state;
    ippc_buf b;
    buf_init(&b);
    assert_int_equal(buf_append(&b, "abc", 3), 0);
    assert_int_equal(buf_append_str(&b, "def"), 0);
    assert_int_equal(b.len, 6);
    assert_string_equal(b.data, "abcdef");
    assert_true(b.cap > b.len);
    buf_free(&b);
}

static void test_growth_doubles_and_keeps_the_bytes(void **state)
{
    (void)state;
    ippc_buf b = {0};
    size_t caps_seen = 0, last_cap = 0;
    for (int i = 0; i < 100000; i++) {
        char c = (char)('a' + i % 26);
        assert_int_equal(buf_append(&b, &c, 1), 0);
        if (b.cap != last_cap) {
            if (last_cap)
                assert_int_equal(b.cap, last_cap * 2);
            last_cap = b.cap;
            caps_seen++;
        }
    }
    assert_int_equal(b.len, 100000);
    assert_true(caps_seen < 20); /* doubling, not one step per append */
    for (size_t i = 0; i < b.len; i++)
        assert_int_equal(b.data[i], 'a' + (int)(i % 26));
    assert_int_equal(b.data[b.len], '\0');
    buf_free(&b);
}

static void test_reserve_gives_room_without_changing_len(void **state)
{
    (void)state;
    ippc_buf b = {0};
    assert_int_equal(buf_reserve(&b, 10000), 0);
    assert_int_equal(b.len, 0);
    assert_true(b.cap >= 10001);
    assert_string_equal(b.data, "");
    char *before = b.data;
    assert_int_equal(buf_reserve(&b, 10000), 0); /* already there: no realloc */
    assert_ptr_equal(b.data, before);
    buf_free(&b);
}

static void test_overflowing_sizes_fail_and_leave_the_buffer(void **state)
{
    (void)state;
    ippc_buf b = {0};
    assert_int_equal(buf_append_str(&b, "keep"), 0);
    size_t cap = b.cap;
    assert_int_equal(buf_reserve(&b, SIZE_MAX), -1);
    assert_int_equal(buf_reserve(&b, SIZE_MAX - 4), -1);
    assert_int_equal(buf_append(&b, "x", SIZE_MAX - 2), -1);
    assert_int_equal(b.len, 4);
    assert_int_equal(b.cap, cap);
    assert_string_equal(b.data, "keep");
    buf_free(&b);
}

static void test_printf_appends_formatted_text(void **state)
{
    (void)state;
    ippc_buf b = {0};
    assert_int_equal(buf_printf(&b, "%s=%d", "engines", 4), 0);
    assert_int_equal(buf_printf(&b, " %.1f", 0.5), 0);
    assert_string_equal(b.data, "engines=4 0.5");
    assert_int_equal(b.len, strlen("engines=4 0.5"));
    /* longer than the first allocation */
    char long_text[3000];
    memset(long_text, 'z', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    assert_int_equal(buf_printf(&b, "[%s]", long_text), 0);
    assert_int_equal(b.len, 13 + 2 + 2999);
    assert_int_equal(b.data[b.len - 1], ']');
    buf_free(&b);
}

static void test_take_hands_over_the_bytes(void **state)
{
    (void)state;
    ippc_buf b = {0};
    buf_append_str(&b, "hello");
    size_t len = 0;
    char *text = buf_take(&b, &len);
    assert_non_null(text);
    assert_int_equal(len, 5);
    assert_string_equal(text, "hello");
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    free(text);
    /* an empty buffer hands over an empty string, not NULL */
    text = buf_take(&b, &len);
    assert_non_null(text);
    assert_int_equal(len, 0);
    assert_string_equal(text, "");
    free(text);
}

static void test_reset_keeps_the_memory(void **state)
{
    (void)state;
    ippc_buf b = {0};
    buf_append_str(&b, "some text");
    char *data = b.data;
    size_t cap = b.cap;
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    assert_string_equal(b.data, "");
    buf_append_str(&b, "again");
    assert_string_equal(b.data, "again");
    buf_free(&b);
}

static void test_binary_bytes_with_nuls(void **state)
{
    (void)state;
    ippc_buf b = {0};
    const unsigned char bytes[] = {0, 1, 0, 255};
    assert_int_equal(buf_append(&b, bytes, sizeof bytes), 0);
    assert_int_equal(buf_append(&b, NULL, 0), 0);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, bytes, sizeof bytes);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zeroed_buffer_is_empty),
        cmocka_unit_test(test_append_keeps_a_nul_after_the_bytes),
        cmocka_unit_test(test_growth_doubles_and_keeps_the_bytes),
        cmocka_unit_test(test_reserve_gives_room_without_changing_len),
        cmocka_unit_test(test_overflowing_sizes_fail_and_leave_the_buffer),
        cmocka_unit_test(test_printf_appends_formatted_text),
        cmocka_unit_test(test_take_hands_over_the_bytes),
        cmocka_unit_test(test_reset_keeps_the_memory),
        cmocka_unit_test(test_binary_bytes_with_nuls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
