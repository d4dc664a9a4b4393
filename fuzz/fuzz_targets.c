/* fuzz_targets.c — libFuzzer entry for common/targets.c.
 *
 * Input: one control byte choosing the live engine list (how many, and
 * whether ids have gaps), then the spec text.  Besides sanitizer findings, it
 * checks the documented result: at least one id, every id live, no repeats.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int live[64];
    size_t n_live = data[0] % 64;
    int gap = 1 + (data[0] >> 6);
    for (size_t i = 0; i < n_live; i++)
        live[i] = (int)i * gap;

    char *spec = malloc(size);
    if (!spec)
        return 0;
    memcpy(spec, data + 1, size - 1);
    spec[size - 1] = '\0';

    int *ids = NULL;
    size_t n = 0;
    ippc_error err;
    if (targets_parse(spec, live, n_live, &ids, &n, &err) == 0) {
        if (n < 1 || n > n_live)
            __builtin_trap();
        for (size_t i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] % gap || (size_t)(ids[i] / gap) >= n_live)
                __builtin_trap();
            for (size_t j = 0; j < i; j++)
                if (ids[j] == ids[i])
                    __builtin_trap();
        }
        free(ids);
    } else if (ids || n) {
        __builtin_trap();
    }
    free(spec);
    return 0;
}
