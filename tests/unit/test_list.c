/* test_list.c — common/list.h: the intrusive doubly linked list. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "list.h"

typedef struct item {
    int value;
    list_node node;
} item;

/* The values of head, first to last, into out; returns how many. */
static int values(list_node *head, int *out, int max)
{
    int n = 0;
    list_for_each(it, head) {
        assert_true(n < max);
        out[n++] = list_entry(it, item, node)->value;
    }
    return n;
}

static void test_empty_list(void **state)
{
    (void)state;
    list_node head;
    list_init(&head);
    assert_true(list_empty(&head));
    assert_null(list_first(&head));
    assert_null(list_last(&head));
    int out[1];
    assert_int_equal(values(&head, out, 1), 0);
}

static void test_zeroed_node_is_unlinked(void **state)
{
    (void)state;
    item a;
    memset(&a, 0, sizeof a);
    assert_false(list_linked(&a.node));
}

static void test_push_back_and_front_order(void **state)
{
    (void)state;
    list_node head;
    item items[4] = {{.value = 1}, {.value = 2}, {.value = 3}, {.value = 4}};
    list_init(&head);
    list_push_back(&head, &items[1].node);  /* 2 */
    list_push_back(&head, &items[2].node);  /* 2 3 */
    list_push_front(&head, &items[0].node); /* 1 2 3 */
    list_push_back(&head, &items[3].node);  /* 1 2 3 4 */
    int out[4];
    assert_int_equal(values(&head, out, 4), 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(out[i], i + 1);
    assert_ptr_equal(list_entry(list_first(&head), item, node), &items[0]);
    assert_ptr_equal(list_entry(list_last(&head), item, node), &items[3]);
    for (int i = 0; i < 4; i++)
        assert_true(list_linked(&items[i].node));
}

static void test_remove_first_middle_last(void **state)
{
    (void)state;
    list_node head;
    item items[5] = {{.value = 0}, {.value = 1}, {.value = 2}, {.value = 3}, {.value = 4}};
    list_init(&head);
    for (int i = 0; i < 5; i++)
        list_push_back(&head, &items[i].node);
    list_remove(&items[0].node);
    list_remove(&items[2].node);
    list_remove(&items[4].node);
    assert_false(list_linked(&items[0].node));
    assert_false(list_linked(&items[2].node));
    int out[5];
    assert_int_equal(values(&head, out, 5), 2);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 3);
    /* a removed node can go back in */
    list_push_front(&head, &items[2].node);
    assert_int_equal(values(&head, out, 5), 3);
    assert_int_equal(out[0], 2);
    list_remove(&items[1].node);
    list_remove(&items[2].node);
    list_remove(&items[3].node);
    assert_true(list_empty(&head));
}

static void test_for_each_safe_may_remove(void **state)
{
    (void)state;
    list_node head;
    item items[6];
    list_init(&head);
    for (int i = 0; i < 6; i++) {
        memset(&items[i], 0, sizeof items[i]);
        items[i].value = i;
        list_push_back(&head, &items[i].node);
    }
    /* drop the even ones while walking */
    list_for_each_safe(it, &head) {
        if (list_entry(it, item, node)->value % 2 == 0)
            list_remove(it);
    }
    int out[6];
    assert_int_equal(values(&head, out, 6), 3);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 3);
    assert_int_equal(out[2], 5);
    /* and all of them */
    list_for_each_safe(it, &head)
        list_remove(it);
    assert_true(list_empty(&head));
}

static void test_move_all_keeps_the_order(void **state)
{
    (void)state;
    list_node from, to;
    item items[5];
    list_init(&from);
    list_init(&to);
    for (int i = 0; i < 5; i++) {
        memset(&items[i], 0, sizeof items[i]);
        items[i].value = i;
        list_push_back(i < 2 ? &to : &from, &items[i].node);
    }
    list_move_all(&to, &from);
    assert_true(list_empty(&from));
    int out[5];
    assert_int_equal(values(&to, out, 5), 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(out[i], i);
    list_move_all(&to, &from); /* nothing to move */
    assert_int_equal(values(&to, out, 5), 5);
    list_node empty;
    list_init(&empty);
    list_move_all(&empty, &to);
    assert_true(list_empty(&to));
    assert_int_equal(values(&empty, out, 5), 5);
    assert_ptr_equal(list_entry(list_last(&empty), item, node), &items[4]);
    /* the moved nodes are still linked: they can be removed from their new list */
    list_remove(&items[2].node);
    assert_int_equal(values(&empty, out, 5), 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_list),
        cmocka_unit_test(test_zeroed_node_is_unlinked),
        cmocka_unit_test(test_push_back_and_front_order),
        cmocka_unit_test(test_remove_first_middle_last),
        cmocka_unit_test(test_for_each_safe_may_remove),
        cmocka_unit_test(test_move_all_keeps_the_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
