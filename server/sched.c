/* sched.c — choosing an engine for a load-balanced task (see sched.h).
 *
 * The schemes are IPython Parallel's (ipyparallel/controller/scheduler.py).
 * ipyparallel keeps its candidate list in least-recently-used order and its
 * schemes return list positions, so "lower index" there means "used longer
 * ago"; here the order is explicit in last_used, and every tie falls to the
 * lower last_used, then to the lower index, so a choice depends only on the
 * snapshot and the RNG state.
 *
 * Randomness is xorshift64 (Marsaglia 2003): fast, good enough to spread
 * tasks, and the state lives with the caller, so these functions are pure.
 */
#include "sched.h"

#include <string.h>

static const char *const scheme_names[] = {
    [SCHED_LEASTLOAD] = "leastload", [SCHED_LRU] = "lru",       [SCHED_TWOBIN] = "twobin",
    [SCHED_WEIGHTED] = "weighted",   [SCHED_RANDOM] = "random",
};
#define SCHEME_COUNT (sizeof scheme_names / sizeof *scheme_names)

/* A zero state would stay zero forever; it is replaced by this one. */
#define RNG_FALLBACK_SEED 0x9E3779B97F4A7C15ULL

int sched_parse(const char *name)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < SCHEME_COUNT; i++)
        if (strcmp(name, scheme_names[i]) == 0)
            return (int)i;
    if (strcmp(name, "plainrandom") == 0) /* ipyparallel's name for it */
        return SCHED_RANDOM;
    return -1;
}

const char *sched_name(sched_kind kind)
{
    return (unsigned)kind < SCHEME_COUNT ? scheme_names[kind] : NULL;
}

static uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state ? *state : RNG_FALLBACK_SEED;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* Uniform in [0, n), n > 0: draws above the largest multiple of n are
 * rejected, so no index is favoured. */
static size_t rng_below(uint64_t *state, size_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do
        r = rng_next(state);
    while (r >= limit);
    return (size_t)(r % n);
}

/* Uniform in [0, 1). */
static double rng_unit(uint64_t *state)
{
    return (double)(rng_next(state) >> 11) * 0x1.0p-53;
}

/* 1 if a was used less recently than b (ties: the lower index). */
static int older(const sched_engine *cands, size_t a, size_t b)
{
    if (cands[a].last_used != cands[b].last_used)
        return cands[a].last_used < cands[b].last_used;
    return a < b;
}

static size_t choose_leastload(const sched_engine *cands, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (cands[i].load < cands[best].load ||
            (cands[i].load == cands[best].load && older(cands, i, best)))
            best = i;
    return best;
}

static size_t choose_lru(const sched_engine *cands, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (older(cands, i, best))
            best = i;
    return best;
}

/* Two distinct candidates, the less recently used one wins. */
static size_t choose_twobin(const sched_engine *cands, size_t n, uint64_t *rng)
{
    if (n == 1)
        return 0;
    size_t a = rng_below(rng, n);
    size_t b = rng_below(rng, n - 1);
    if (b >= a)
        b++;
    return older(cands, a, b) ? a : b;
}

static double weight_of(const sched_engine *e)
{
    return 1.0 / (1.0 + (double)e->load);
}

/* Index drawn with probability weight / total. */
static size_t draw_weighted(const sched_engine *cands, size_t n, double total, uint64_t *rng)
{
    double x = rng_unit(rng) * total;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += weight_of(&cands[i]);
        if (x < sum)
            return i;
    }
    return n - 1; /* rounding left x at the very top */
}

/* Two independent weighted draws (as ipyparallel: they may coincide), the
 * less loaded one wins. */
static size_t choose_weighted(const sched_engine *cands, size_t n, uint64_t *rng)
{
    double total = 0;
    for (size_t i = 0; i < n; i++)
        total += weight_of(&cands[i]);
    size_t a = draw_weighted(cands, n, total, rng);
    size_t b = draw_weighted(cands, n, total, rng);
    if (cands[a].load != cands[b].load)
        return cands[a].load < cands[b].load ? a : b;
    return older(cands, a, b) || a == b ? a : b;
}

long sched_choose(sched_kind kind, const sched_engine *cands, size_t n, uint64_t *rng)
{
    if (!cands || n == 0)
        return -1;
    uint64_t local = RNG_FALLBACK_SEED; /* a caller without RNG state still gets an answer */
    if (!rng)
        rng = &local;
    switch (kind) {
    case SCHED_LEASTLOAD: return (long)choose_leastload(cands, n);
    case SCHED_LRU: return (long)choose_lru(cands, n);
    case SCHED_TWOBIN: return (long)choose_twobin(cands, n, rng);
    case SCHED_WEIGHTED: return (long)choose_weighted(cands, n, rng);
    case SCHED_RANDOM: return (long)rng_below(rng, n);
    }
    return -1;
}

size_t sched_chunks(size_t n, size_t chunksize)
{
    if (chunksize == 0) /* the contract says >= 1; one item per chunk is the safe reading */
        chunksize = 1;
    return n / chunksize + (n % chunksize != 0);
}
