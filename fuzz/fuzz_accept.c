/* fuzz_accept.c — libFuzzer entry for call_answer_of (server/call.c), the
 * Accept header negotiation of pulls and gathers.
 *
 * Input: one control byte choosing the op, then the header value.  Besides
 * sanitizer findings, it checks call.h's promises: the answer is one of the
 * kinds, only a pull gets multipart, only a pull or gather gets a binary
 * form, and a header that names none of them (no '/') is JSON.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "call.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const hub_op ops[] = {HUB_OP_PULL, HUB_OP_GATHER, HUB_OP_EXECUTE, HUB_OP_PULL_MANY};
    hub_op op = ops[data[0] % 4];
    char *accept = malloc(size);
    if (!accept)
        return 0;
    memcpy(accept, data + 1, size - 1);
    accept[size - 1] = '\0';
    call_answer_kind k = call_answer_of(accept, op);
    if (k < CALL_ANSWER_JSON || k > CALL_ANSWER_MULTIPART_NPY)
        __builtin_trap();
    if ((k == CALL_ANSWER_MULTIPART || k == CALL_ANSWER_MULTIPART_NPY) && op != HUB_OP_PULL)
        __builtin_trap();
    if (k != CALL_ANSWER_JSON && op != HUB_OP_PULL && op != HUB_OP_GATHER)
        __builtin_trap();
    if (k != CALL_ANSWER_JSON && !strchr(accept, '/'))
        __builtin_trap();
    free(accept);
    return 0;
}
