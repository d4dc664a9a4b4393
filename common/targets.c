/* targets.c — turns a target spec ("all", "3", "0,2,-1", "1::2") into engine ids.
 *
 * The spec is split at commas; each item is "all", an integer or a Python
 * slice, and each item contributes ids of the live list in its own order.
 * Every id we emit is taken from live_ids, so the result never holds more than
 * n_live ids and duplicates are dropped with a per-position "seen" flag.
 * Numbers saturate instead of overflowing: a huge id is simply not live and a
 * huge slice bound clamps, exactly as in Python.  Relies on: error.h only.
 */
#include "targets.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Larger than any list length and far from LLONG_MAX, so that index + n and
 * index + step below can never overflow. */
#define TARGET_NUMBER_LIMIT (1LL << 62)

/* How much of an offending item we quote in a message. */
#define TARGET_QUOTE 40

/* Returned by the item parsers when an item does not parse; the caller words
 * that error with the whole item.  -1 means err is already set. */
#define TARGET_UNPARSABLE (-2)

typedef struct target_set {
    const int *live_ids;
    size_t n_live;
    bool *seen; /* seen[i]: live_ids[i] is already in ids */
    int *ids;
    size_t count;
} target_set;

typedef struct text_span {
    const char *start;
    size_t len;
} text_span;

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static text_span span_trim(text_span s)
{
    while (s.len && is_space(s.start[0])) {
        s.start++;
        s.len--;
    }
    while (s.len && is_space(s.start[s.len - 1]))
        s.len--;
    return s;
}

static bool span_equals(text_span s, const char *word)
{
    return s.len == strlen(word) && memcmp(s.start, word, s.len) == 0;
}

/* Parses an optionally signed decimal integer filling the whole span; values
 * beyond +-TARGET_NUMBER_LIMIT saturate.  Returns false if it is not one. */
static bool span_integer(text_span s, long long *value)
{
    size_t i = 0;
    bool negative = false;
    if (s.len && (s.start[0] == '-' || s.start[0] == '+')) {
        negative = s.start[0] == '-';
        i = 1;
    }
    if (i == s.len)
        return false;
    long long magnitude = 0;
    for (; i < s.len; i++) {
        char c = s.start[i];
        if (c < '0' || c > '9')
            return false;
        magnitude =
            magnitude > TARGET_NUMBER_LIMIT / 10 ? TARGET_NUMBER_LIMIT : magnitude * 10 + (c - '0');
    }
    *value = negative ? -magnitude : magnitude;
    return true;
}

static void set_add_position(target_set *set, size_t position)
{
    if (set->seen[position])
        return;
    set->seen[position] = true;
    set->ids[set->count++] = set->live_ids[position];
}

/* Position of engine id in the ascending live list, or -1. */
static long live_position(const target_set *set, long long id)
{
    size_t low = 0, high = set->n_live;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        if (set->live_ids[mid] == id)
            return (long)mid;
        if (set->live_ids[mid] < id)
            low = mid + 1;
        else
            high = mid;
    }
    return -1;
}

/* A plain integer: an engine id if >= 0, else an index from the end. */
static int add_integer(target_set *set, text_span item, long long value, ippc_error *err)
{
    long long n = (long long)set->n_live;
    long position =
        value >= 0 ? live_position(set, value) : (value + n >= 0 ? (long)(value + n) : -1);
    if (position < 0)
        return ippc_error_set(err, ERR_NO_ENGINES,
                              value >= 0 ? "engine %.*s is not live"
                                         : "index %.*s is out of range for the live engines",
                              (int)(item.len < TARGET_QUOTE ? item.len : TARGET_QUOTE), item.start);
    set_add_position(set, (size_t)position);
    return 0;
}

/* Python's PySlice_AdjustIndices for one bound that was given explicitly. */
static long long slice_clamp(long long bound, long long n, long long step)
{
    if (bound < 0) {
        bound += n;
        if (bound < 0)
            bound = step < 0 ? -1 : 0;
    } else if (bound >= n) {
        bound = step < 0 ? n - 1 : n;
    }
    return bound;
}

/* Parses one optional slice part; an empty part leaves *value alone. */
static bool slice_part(text_span part, long long *value)
{
    part = span_trim(part);
    return part.len == 0 || span_integer(part, value);
}

static int add_slice(target_set *set, text_span item, ippc_error *err)
{
    text_span parts[3] = {{item.start, 0}, {NULL, 0}, {NULL, 0}};
    int nparts = 1;
    for (size_t i = 0; i < item.len; i++) {
        if (item.start[i] != ':') {
            parts[nparts - 1].len++;
            continue;
        }
        if (nparts == 3)
            return TARGET_UNPARSABLE;
        parts[nparts++] = (text_span){item.start + i + 1, 0};
    }
    long long n = (long long)set->n_live, step = 1, start = 0, stop = 0;
    if (nparts == 3 && !slice_part(parts[2], &step))
        return TARGET_UNPARSABLE;
    if (step == 0)
        return ippc_error_set(err, ERR_BAD_TARGETS, "slice step cannot be zero");
    bool has_start = span_trim(parts[0]).len > 0, has_stop = span_trim(parts[1]).len > 0;
    if (!slice_part(parts[0], &start) || !slice_part(parts[1], &stop))
        return TARGET_UNPARSABLE;
    start = has_start ? slice_clamp(start, n, step) : (step < 0 ? n - 1 : 0);
    stop = has_stop ? slice_clamp(stop, n, step) : (step < 0 ? -1 : n);
    for (long long i = start; step > 0 ? i < stop : i > stop; i += step)
        set_add_position(set, (size_t)i);
    return 0;
}

/* One item: 0, -1 (err set) or TARGET_UNPARSABLE.  "all" and slices stand
 * alone; the items of a comma list are engine ids (or negative indexes). */
static int add_item(target_set *set, text_span item, int in_list, ippc_error *err)
{
    long long value;
    if (span_integer(item, &value))
        return add_integer(set, item, value, err);
    if (in_list)
        return TARGET_UNPARSABLE;
    if (span_equals(item, "all")) {
        for (size_t i = 0; i < set->n_live; i++)
            set_add_position(set, i);
        return 0;
    }
    if (memchr(item.start, ':', item.len))
        return add_slice(set, item, err);
    return TARGET_UNPARSABLE;
}

static int parse_items(target_set *set, const char *spec, ippc_error *err)
{
    const char *cursor = spec;
    int in_list = strchr(spec, ',') != NULL;
    for (;;) {
        const char *comma = strchr(cursor, ',');
        size_t len = comma ? (size_t)(comma - cursor) : strlen(cursor);
        text_span item = span_trim((text_span){cursor, len});
        if (item.len == 0)
            return ippc_error_set(err, ERR_BAD_TARGETS, "empty item in target spec");
        int rc = add_item(set, item, in_list, err);
        if (rc == TARGET_UNPARSABLE)
            return ippc_error_set(err, ERR_BAD_TARGETS,
                                  in_list ? "bad target '%.*s' in a comma list: expected an "
                                            "engine id"
                                          : "bad target '%.*s': expected \"all\", an engine "
                                            "id, a comma list of ids or a slice",
                                  (int)(item.len < TARGET_QUOTE ? item.len : TARGET_QUOTE),
                                  item.start);
        if (rc < 0)
            return -1;
        if (!comma)
            return 0;
        cursor = comma + 1;
    }
}

int targets_parse(const char *spec, const int *live_ids, size_t n_live, int **out, size_t *n_out,
                  ippc_error *err)
{
    if (!out || !n_out)
        return ippc_error_set(err, ERR_INTERNAL, "targets_parse: no output");
    *out = NULL;
    *n_out = 0;
    if (!spec)
        return ippc_error_set(err, ERR_BAD_TARGETS, "missing target spec");
    if (strnlen(spec, TARGETS_MAX_SPEC + 1) > TARGETS_MAX_SPEC)
        return ippc_error_set(err, ERR_BAD_TARGETS, "target spec longer than %d characters",
                              TARGETS_MAX_SPEC);
    target_set set = {live_ids, n_live, calloc(n_live ? n_live : 1, sizeof(bool)),
                      malloc((n_live ? n_live : 1) * sizeof(int)), 0};
    if (!set.seen || !set.ids) {
        free(set.seen);
        free(set.ids);
        return ippc_error_set(err, ERR_INTERNAL, "out of memory");
    }
    int rc = parse_items(&set, spec, err);
    free(set.seen);
    if (rc == 0 && set.count == 0)
        rc = ippc_error_set(err, ERR_NO_ENGINES, "target spec '%.*s' names no live engine",
                            TARGET_QUOTE, spec);
    if (rc < 0) {
        free(set.ids);
        return -1;
    }
    *out = set.ids;
    *n_out = set.count;
    return 0;
}
