/* fuzz_value.c — libFuzzer entry for common/value.c.
 *
 * Input: one control byte (number of scatter parts, 1..8), then JSON text.
 * The JSON is used twice: as client input (value_from_client and everything
 * downstream of it) and as a hostile skeleton from an engine, against a few
 * blobs of awkward sizes.  Besides sanitizer findings, it checks one
 * invariant: the typed client form of a value reads back to itself.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "value.h"

static void push_bytes(ippc_blobs *blobs, size_t len)
{
    unsigned char *data = malloc(len ? len : 1);
    if (data)
        memset(data, 0x5a, len);
    blobs_push(blobs, data, len);
}

/* Scatters skel over p parts, gathers them back, and writes everything out. */
static void scatter_gather(const json_t *skel, const ippc_blobs *blobs, size_t p)
{
    json_t *parts[8];
    ippc_blobs part_blobs[8];
    ippc_error err;
    for (size_t i = 0; i < p; i++)
        blobs_init(&part_blobs[i]);
    if (value_scatter(skel, blobs, p, parts, part_blobs, &err) == 0) {
        ippc_blobs gathered;
        blobs_init(&gathered);
        json_t *whole = value_gather(parts, part_blobs, p, &gathered, &err);
        json_t *out = whole ? value_to_client(whole, &gathered, VALUE_FORMAT_LIST, &err) : NULL;
        json_decref(out);
        json_decref(whole);
        blobs_free(&gathered);
        for (size_t i = 0; i < p; i++)
            json_decref(parts[i]);
    }
    for (size_t i = 0; i < p; i++)
        blobs_free(&part_blobs[i]);
}

/* to_client(TYPED) then from_client must give back the same typed form. */
static void check_typed_round_trip(const json_t *skel, const ippc_blobs *blobs)
{
    ippc_error err;
    json_t *typed = value_to_client(skel, blobs, VALUE_FORMAT_TYPED, &err);
    if (!typed)
        return;
    ippc_blobs again_blobs;
    blobs_init(&again_blobs);
    json_t *again = value_from_client(typed, &again_blobs, &err);
    json_t *typed_again =
        again ? value_to_client(again, &again_blobs, VALUE_FORMAT_TYPED, &err) : NULL;
    if (!typed_again || !json_equal(typed, typed_again))
        __builtin_trap();
    json_decref(typed_again);
    json_decref(again);
    json_decref(typed);
    blobs_free(&again_blobs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t p = 1 + data[0] % 8;
    json_t *in = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL);
    if (!in)
        return 0;
    ippc_error err;

    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *skel = value_from_client(in, &blobs, &err);
    if (skel) {
        json_t *list = value_to_client(skel, &blobs, VALUE_FORMAT_LIST, &err);
        json_decref(list);
        check_typed_round_trip(skel, &blobs);
        scatter_gather(skel, &blobs, p);
        json_decref(skel);
    }
    blobs_free(&blobs);

    /* The same JSON as an engine's skeleton, with blobs of 0, 3, 8 and 16 bytes. */
    ippc_blobs wire;
    blobs_init(&wire);
    push_bytes(&wire, 0);
    push_bytes(&wire, 3);
    push_bytes(&wire, 8);
    push_bytes(&wire, 16);
    json_t *out = value_to_client(in, &wire, VALUE_FORMAT_LIST, &err);
    json_decref(out);
    out = value_to_client(in, &wire, VALUE_FORMAT_TYPED, &err);
    json_decref(out);
    scatter_gather(in, &wire, p);
    blobs_free(&wire);

    json_decref(in);
    return 0;
}
