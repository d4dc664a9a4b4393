/* idmap.h — a small open-addressing hash map from uint64 ids to pointers.
 * Not thread-safe: the owner (the hub) guards it with its lock. */
#ifndef IPPC_IDMAP_H
#define IPPC_IDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct idmap {
    uint64_t *keys; /* 0 = empty slot; ids are never 0 */
    void **values;
    size_t cap, count, tombstones;
} idmap;

void idmap_init(idmap *m);
void idmap_free(idmap *m);
/* Keys are never 0 or UINT64_MAX (the map's own markers): put refuses them. */
int idmap_put(idmap *m, uint64_t key, void *value); /* 0, or -1 (OOM, bad key) */
void *idmap_get(const idmap *m, uint64_t key);
void *idmap_remove(idmap *m, uint64_t key);

#endif
