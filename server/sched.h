/* sched.h — load-balancing schedulers: which engine gets the next task.
 *
 * Pure functions over a snapshot of candidate engines; the hub builds the
 * snapshot (live engines, in the task's allowed targets, below the high-water
 * mark) under its lock and applies the choice.  Schemes follow IPython
 * Parallel's:
 *   leastload — fewest outstanding tasks; ties go to the least recently used.
 *   lru       — the engine whose last assignment is oldest.
 *   twobin    — two distinct candidates at random, the least recently used.
 *   weighted  — two at random, each drawn with weight 1/(1+load); the less
 *               loaded of the two.
 *   random    — uniformly at random.
 * Thread-safety: pure; the RNG state belongs to the caller.
 */
#ifndef IPPC_SCHED_H
#define IPPC_SCHED_H

#include <stddef.h>
#include <stdint.h>

typedef enum sched_kind {
    SCHED_LEASTLOAD = 0,
    SCHED_LRU,
    SCHED_TWOBIN,
    SCHED_WEIGHTED,
    SCHED_RANDOM,
} sched_kind;

typedef struct sched_engine {
    int id;
    unsigned load;      /* tasks assigned and not finished */
    uint64_t last_used; /* a counter value at its last assignment; 0 = never */
} sched_engine;

/* -1 for an unknown name. */
int sched_parse(const char *name);
const char *sched_name(sched_kind kind);

/* Index into cands of the chosen engine, or -1 when n == 0.  rng: a non-zero
 * xorshift64 state, advanced by the random schemes. */
long sched_choose(sched_kind kind, const sched_engine *cands, size_t n, uint64_t *rng);

/* Chunks for map: n items, chunksize c (>= 1) -> number of chunks; chunk i
 * covers [i*c, min(n, (i+1)*c)). */
size_t sched_chunks(size_t n, size_t chunksize);

#endif
