/* list.h — the one intrusive doubly linked list of ippc.
 *
 * A list is a circular chain through a sentinel head: an empty list's head
 * points at itself, so push and remove need no special case for the ends.
 * An element embeds a list_node and is found back from it with list_entry.
 * A node that is in no list has prev == next == NULL (a zeroed struct is an
 * unlinked node); list_remove asserts the node is linked and unlinks it, so
 * removing twice is caught in a debug build rather than corrupting the chain.
 *
 * The list owns nothing: elements are allocated and freed by their owner,
 * after removing them.  Not thread-safe: the owner's lock guards the list.
 */
#ifndef IPPC_LIST_H
#define IPPC_LIST_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct list_node {
    struct list_node *prev;
    struct list_node *next;
} list_node;

/* The element of type `type` whose member `member` is the node `node`. */
#define list_entry(node, type, member) ((type *)(void *)((char *)(node)-offsetof(type, member)))

/* Every node of head, first to last; `it` is a list_node *.  The body must
 * not remove `it`: use list_for_each_safe for that. */
#define list_for_each(it, head) for (list_node *it = (head)->next; it != (head); it = it->next)

/* The same, but the body may remove (and free) `it`. */
#define list_for_each_safe(it, head)                                                               \
    for (list_node *it = (head)->next, *it##_next = it->next; it != (head);                        \
         it = it##_next, it##_next = it->next)

static inline void list_init(list_node *head)
{
    head->prev = head->next = head;
}

static inline bool list_empty(const list_node *head)
{
    assert(head->next != NULL); /* initialised */
    return head->next == head;
}

/* Whether node is in some list (see the top: unlinked nodes are NULL). */
static inline bool list_linked(const list_node *node)
{
    return node->next != NULL;
}

static inline void list_insert_between(list_node *node, list_node *prev, list_node *next)
{
    assert(!list_linked(node));
    node->prev = prev;
    node->next = next;
    prev->next = node;
    next->prev = node;
}

static inline void list_push_front(list_node *head, list_node *node)
{
    list_insert_between(node, head, head->next);
}

static inline void list_push_back(list_node *head, list_node *node)
{
    list_insert_between(node, head->prev, head);
}

static inline void list_remove(list_node *node)
{
    assert(list_linked(node) && node->prev != NULL);
    assert(node->prev->next == node && node->next->prev == node);
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = NULL;
}

/* Moves every node of from to the end of to, in order; from is left empty
 * (taking a whole queue under a lock, handling it after unlocking). */
static inline void list_move_all(list_node *to, list_node *from)
{
    if (list_empty(from))
        return;
    list_node *first = from->next, *last = from->prev;
    first->prev = to->prev;
    to->prev->next = first;
    last->next = to;
    to->prev = last;
    list_init(from);
}

/* The first / last node, or NULL when the list is empty. */
static inline list_node *list_first(const list_node *head)
{
    /* The analyzer cannot tell that head->next->prev == head in a linked
     * list, so after `list_remove(first); free(first);` it believes head->next
     * still names the freed node (requests_free's drain loop): list_remove
     * does set head->next, the report is a false positive. */
    return list_empty(head) ? NULL : head->next; // NOLINT(clang-analyzer-unix.Malloc)
}

static inline list_node *list_last(const list_node *head)
{
    return list_empty(head) ? NULL : head->prev;
}

#endif
