/* bigmem.c — array memory and the pool of freed blocks (see bigmem.h). */
#include "bigmem.h"

#include <assert.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BIGMEM_MIN ((size_t)1 << 20) /* smaller blocks: malloc's own bins */
#define SLACK ((size_t)2 << 20)
#define BIGMEM_SLOTS 8

typedef struct kept {
    void *p;       /* NULL: free slot */
    size_t size;   /* malloc_usable_size(p) */
    int64_t since; /* ms, when it was freed */
} kept;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static kept pool[BIGMEM_SLOTS];
static size_t pool_bytes;
static size_t pool_limit = SIZE_MAX; /* SIZE_MAX: not read from the environment yet */
static size_t pool_default = BIGMEM_KEEP_BYTES_DEFAULT;
static int64_t pool_keep_ms = BIGMEM_KEEP_MS;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Under pool_lock. */
static size_t limit_locked(void)
{
    if (pool_limit == SIZE_MAX) {
        pool_limit = pool_default;
        const char *mb = getenv("IPPC_BIGMEM_KEEP_MB");
        if (mb && *mb) {
            char *end;
            unsigned long long v = strtoull(mb, &end, 10);
            if (*end == 0 && v <= (SIZE_MAX >> 21))
                pool_limit = (size_t)v << 20;
        }
    }
    return pool_limit;
}

/* Under pool_lock: moves the blocks to free into out[] (freed by the caller
 * after unlocking) — those older than keep_ms (all with keep_ms < 0), then
 * the oldest until `room` more bytes fit under the limit.  Returns their
 * count. */
static int evict_locked(int64_t now, int64_t keep_ms, size_t room, void **out)
{
    int n = 0;
    for (int i = 0; i < BIGMEM_SLOTS; i++)
        if (pool[i].p && (keep_ms < 0 || now - pool[i].since > keep_ms)) {
            out[n++] = pool[i].p;
            pool_bytes -= pool[i].size;
            pool[i].p = NULL;
        }
    size_t limit = limit_locked();
    while (pool_bytes && (room > limit || pool_bytes > limit - room)) {
        int oldest = -1;
        for (int i = 0; i < BIGMEM_SLOTS; i++)
            if (pool[i].p && (oldest < 0 || pool[i].since < pool[oldest].since))
                oldest = i;
        assert(oldest >= 0); /* pool_bytes counts kept blocks only */
        out[n++] = pool[oldest].p;
        pool_bytes -= pool[oldest].size;
        pool[oldest].p = NULL;
    }
    return n;
}

static void free_all(void **blocks, int n)
{
    for (int i = 0; i < n; i++)
        free(blocks[i]);
}

/* A kept block for n bytes, or NULL.  The best fit: the smallest that is
 * large enough and at most a quarter (plus SLACK: malloc's usable size
 * may be a little more than was asked) larger. */
static void *take(size_t n)
{
    if (n < BIGMEM_MIN)
        return NULL;
    void *stale[BIGMEM_SLOTS];
    void *p = NULL;
    pthread_mutex_lock(&pool_lock);
    int nstale = evict_locked(now_ms(), pool_keep_ms, 0, stale);
    int best = -1;
    for (int i = 0; i < BIGMEM_SLOTS; i++)
        if (pool[i].p && pool[i].size >= n && pool[i].size - n <= n / 4 + SLACK &&
            (best < 0 || pool[i].size < pool[best].size))
            best = i;
    if (best >= 0) {
        p = pool[best].p;
        pool_bytes -= pool[best].size;
        pool[best].p = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
    free_all(stale, nstale);
    return p;
}

void *bigmem_alloc(size_t n)
{
    void *p = take(n);
    /* Fresh memory in plain pages: madvise(MADV_HUGEPAGE) made a round on
     * cold memory 2-4x slower here (the kernel clears each 2 MiB page on its
     * first fault; bench/NOTES.md, "bigmem"). */
    return p ? p : malloc(n ? n : 1);
}

void *bigmem_calloc(size_t n)
{
    void *p = take(n);
    if (p)
        return memset(p, 0, n);
    /* calloc of fresh memory: the kernel's zero pages, no memset */
    return calloc(n ? n : 1, 1);
}

void bigmem_free(void *p)
{
    if (!p)
        return;
    size_t size = malloc_usable_size(p);
    void *out[BIGMEM_SLOTS + 1];
    int nout;
    pthread_mutex_lock(&pool_lock);
    size_t limit = limit_locked();
    if (size < BIGMEM_MIN || size > limit) {
        nout = evict_locked(now_ms(), pool_keep_ms, 0, out);
        out[nout++] = p;
    } else {
        int64_t now = now_ms();
        nout = evict_locked(now, pool_keep_ms, size, out);
        int slot = -1;
        for (int i = 0; i < BIGMEM_SLOTS && slot < 0; i++)
            if (!pool[i].p)
                slot = i;
        if (slot < 0) { /* every slot taken by a younger block: drop the oldest */
            slot = 0;
            for (int i = 1; i < BIGMEM_SLOTS; i++)
                if (pool[i].since < pool[slot].since)
                    slot = i;
            out[nout++] = pool[slot].p;
            pool_bytes -= pool[slot].size;
        }
        pool[slot] = (kept){p, size, now};
        pool_bytes += size;
    }
    pthread_mutex_unlock(&pool_lock);
    free_all(out, nout);
}

void bigmem_trim(int all)
{
    void *out[BIGMEM_SLOTS];
    pthread_mutex_lock(&pool_lock);
    int n = evict_locked(now_ms(), all ? -1 : pool_keep_ms, 0, out);
    pthread_mutex_unlock(&pool_lock);
    free_all(out, n);
}

size_t bigmem_kept_bytes(void)
{
    pthread_mutex_lock(&pool_lock);
    size_t n = pool_bytes;
    pthread_mutex_unlock(&pool_lock);
    return n;
}

void bigmem_default_limit(size_t bytes)
{
    void *out[BIGMEM_SLOTS];
    pthread_mutex_lock(&pool_lock);
    pool_default = bytes == SIZE_MAX ? SIZE_MAX - 1 : bytes;
    pool_limit = SIZE_MAX; /* read again: the environment wins */
    int n = evict_locked(now_ms(), pool_keep_ms, 0, out);
    pthread_mutex_unlock(&pool_lock);
    free_all(out, n);
}

void bigmem_configure(size_t limit_bytes, int keep_ms)
{
    void *out[BIGMEM_SLOTS];
    pthread_mutex_lock(&pool_lock);
    pool_limit = limit_bytes == SIZE_MAX ? SIZE_MAX - 1 : limit_bytes;
    pool_keep_ms = keep_ms < 0 ? 0 : keep_ms;
    int n = evict_locked(now_ms(), pool_keep_ms, 0, out);
    pthread_mutex_unlock(&pool_lock);
    free_all(out, n);
}
