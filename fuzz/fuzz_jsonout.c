/* fuzz_jsonout.c — libFuzzer entry for common/jsonout.c.
 *
 * Input: one control byte choosing the flags (indent, compact, ensure-ascii,
 * sort-keys, escape-slash, embed), then JSON text.  Whatever Jansson parses,
 * jsonout must write, and:
 *   - the text parses back (Jansson) to a value equal to the input;
 *   - when the value holds no real, the text is byte for byte what
 *     json_dumps writes with the same flags (reals are where they differ).
 * (That each real has the fewest digits is tests/unit/test_jsonout.c's job.)
 * JSON_EMBED text is not JSON, so it is only compared with json_dumps.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsonout.h"

static int has_real(const json_t *v)
{
    if (json_is_real(v))
        return 1;
    size_t i;
    const char *key;
    json_t *item;
    if (json_is_array(v)) {
        json_array_foreach(v, i, item)
            if (has_real(item))
                return 1;
    } else if (json_is_object(v)) {
        json_object_foreach((json_t *)v, key, item)
            if (has_real(item))
                return 1;
    }
    return 0;
}

static size_t flags_from(uint8_t control)
{
    size_t flags = JSON_INDENT(control & 0x3);
    if (control & 0x04)
        flags |= JSON_COMPACT;
    if (control & 0x08)
        flags |= JSON_ENSURE_ASCII;
    if (control & 0x10)
        flags |= JSON_SORT_KEYS;
    if (control & 0x20)
        flags |= JSON_ESCAPE_SLASH;
    if (control & 0x40)
        flags |= JSON_ENCODE_ANY;
    if (control & 0x80)
        flags |= JSON_EMBED;
    return flags;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t flags = flags_from(data[0]);
    json_t *in = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL);
    if (!in)
        return 0;
    char *ours = jsonout_dumps(in, flags);
    char *theirs = json_dumps(in, flags);
    /* Both succeed or both fail (a scalar without JSON_ENCODE_ANY). */
    if ((ours == NULL) != (theirs == NULL))
        __builtin_trap();
    if (ours) {
        if (!has_real(in) && strcmp(ours, theirs) != 0)
            __builtin_trap();
        if (!(flags & JSON_EMBED)) {
            json_t *back = json_loads(ours, JSON_DECODE_ANY, NULL);
            if (!back || !json_equal(back, in))
                __builtin_trap();
            json_decref(back);
        }
    }
    free(ours);
    free(theirs);
    json_decref(in);
    return 0;
}
