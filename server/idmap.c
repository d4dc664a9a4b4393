/* idmap.c — linear-probing hash map, uint64 id -> pointer (see idmap.h).
 * Removed slots become tombstones (key UINT64_MAX) so probe chains stay intact;
 * a rehash drops them when they pile up. */
#include "idmap.h"

#include <stdlib.h>

#define TOMB UINT64_MAX

static size_t slot_of(uint64_t key, size_t cap)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

void idmap_init(idmap *m)
{
    m->keys = NULL;
    m->values = NULL;
    m->cap = m->count = m->tombstones = 0;
}

void idmap_free(idmap *m)
{
    free(m->keys);
    free(m->values);
    idmap_init(m);
}

static int rehash(idmap *m, size_t cap)
{
    uint64_t *keys = calloc(cap, sizeof *keys);
    void **values = calloc(cap, sizeof *values);
    if (!keys || !values) {
        free(keys);
        free(values);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == 0 || m->keys[i] == TOMB)
            continue;
        size_t s = slot_of(m->keys[i], cap);
        while (keys[s])
            s = (s + 1) & (cap - 1);
        keys[s] = m->keys[i];
        values[s] = m->values[i];
    }
    free(m->keys);
    free(m->values);
    m->keys = keys;
    m->values = values;
    m->cap = cap;
    m->tombstones = 0;
    return 0;
}

int idmap_put(idmap *m, uint64_t key, void *value)
{
    if (key == 0 || key == TOMB)
        return -1; /* the two markers are not keys */
    if ((m->count + m->tombstones + 1) * 4 >= m->cap * 3) {
        size_t cap = m->cap ? m->cap : 64;
        while ((m->count + 1) * 2 >= cap)
            cap *= 2;
        if (rehash(m, cap) < 0)
            return -1;
    }
    size_t s = slot_of(key, m->cap);
    size_t tomb = SIZE_MAX;
    while (m->keys[s]) {
        if (m->keys[s] == key) {
            m->values[s] = value;
            return 0;
        }
        if (m->keys[s] == TOMB && tomb == SIZE_MAX)
            tomb = s;
        s = (s + 1) & (m->cap - 1);
    }
    if (tomb != SIZE_MAX) {
        s = tomb;
        m->tombstones--;
    }
    m->keys[s] = key;
    m->values[s] = value;
    m->count++;
    return 0;
}

static size_t find(const idmap *m, uint64_t key)
{
    if (!m->cap || key == 0 || key == TOMB)
        return SIZE_MAX;
    size_t s = slot_of(key, m->cap);
    while (m->keys[s]) {
        if (m->keys[s] == key)
            return s;
        s = (s + 1) & (m->cap - 1);
    }
    return SIZE_MAX;
}

void *idmap_get(const idmap *m, uint64_t key)
{
    size_t s = find(m, key);
    return s == SIZE_MAX ? NULL : m->values[s];
}

void *idmap_remove(idmap *m, uint64_t key)
{
    size_t s = find(m, key);
    if (s == SIZE_MAX)
        return NULL;
    void *v = m->values[s];
    m->keys[s] = TOMB;
    m->values[s] = NULL;
    m->count--;
    m->tombstones++;
    return v;
}
