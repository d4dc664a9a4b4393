/* fuzz_elfdeps.c — libFuzzer entry for elfdeps_needed (engine/elfdeps.c).
 *
 * Input: the bytes of a file that claims to be a shared library.  Besides
 * sanitizer findings (the input is copied to a buffer of exactly its size,
 * so ASan sees any read past it), it checks the contract: the output is
 * NUL-terminated within out_len whatever the input, empty on -1, and the
 * answer does not depend on the output buffer's size (a small buffer gets
 * a prefix of what a large one gets).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "elfdeps.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy)
        __builtin_trap();
    if (len)
        memcpy(copy, data, len);
    char big[4096], small[16];
    memset(big, 'x', sizeof big);
    memset(small, 'x', sizeof small);
    int rc = elfdeps_needed(copy, len, big, sizeof big);
    int rc_small = elfdeps_needed(copy, len, small, sizeof small);
    free(copy);
    if (rc != 0 && rc != -1)
        __builtin_trap();
    if (rc != rc_small)
        __builtin_trap();
    if (!memchr(big, 0, sizeof big) || !memchr(small, 0, sizeof small))
        __builtin_trap();
    if (rc == -1 && (big[0] || small[0]))
        __builtin_trap();
    if (strncmp(big, small, strlen(small)) != 0)
        __builtin_trap();
    return 0;
}
