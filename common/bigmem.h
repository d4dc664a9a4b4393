/* bigmem.h — memory for array bytes, and the freed blocks kept for reuse.
 *
 * Why: on these machines the first touch of fresh memory costs more than
 * the copy that fills it (PLATFORM.md: 43 ms for 80 MiB; bench/NOTES.md,
 * issue 10).  glibc gives every block of more than 32 MiB its own mapping
 * and unmaps it on free(), so an array pushed again and again, or pulled
 * again and again, paid the kernel's page faults and page clearing in
 * every round.  bigmem keeps freed blocks of 1 MiB or more for a short
 * while (BIGMEM_KEEP_MS, bounded by a byte limit) and hands them out again
 * for a request of about their size: back-to-back transfers reuse warm
 * memory, and a process left alone gives it all back within seconds.
 *
 * Every block is an ordinary malloc'd block: bigmem_free keeps it or
 * free()s it, and a plain free() of a block from bigmem_alloc is correct
 * too (the block is then not reused).  Thread-safe: any thread allocates
 * and frees (the engine's network thread allocates what the Lua or Python
 * thread frees); a mutex guards the pool's bookkeeping only — no memory is
 * touched under it.
 */
#ifndef IPPC_COMMON_BIGMEM_H
#define IPPC_COMMON_BIGMEM_H

#include <stddef.h>

/* A freed block is kept this long unless reused; older ones are freed by
 * bigmem_trim and by every bigmem call.  Long enough for a client's next
 * round of a loop of pushes or pulls, short enough that an idle process
 * soon holds nothing. */
#define BIGMEM_KEEP_MS 3000
/* Default bound on the bytes kept; IPPC_BIGMEM_KEEP_MB in the environment
 * (read once, on first use) changes it, 0 turns keeping off.  An engine
 * keeps at most half of it (bigmem_default_limit), as a node may run many:
 * enough for the arrays of the last round of a few hundred MB. */
#define BIGMEM_KEEP_BYTES_DEFAULT ((size_t)512 << 20)
#define BIGMEM_KEEP_BYTES_ENGINE ((size_t)256 << 20)

/* Memory for n bytes of array data: a kept block of at least n bytes (and
 * not more than a quarter and 2 MiB more), or a fresh one.  NULL when out
 * of memory. */
void *bigmem_alloc(size_t n);

/* As bigmem_alloc, all bytes zero. */
void *bigmem_calloc(size_t n);

/* Frees p (NULL is fine), or keeps it for reuse when it is big enough and
 * the byte limit allows (the oldest kept blocks make room). */
void bigmem_free(void *p);

/* Frees the kept blocks that were not reused within BIGMEM_KEEP_MS; with
 * all != 0, every kept block.  Idle loops call it (engine heartbeat timer,
 * controller service loop) so an idle process keeps nothing. */
void bigmem_trim(int all);

/* Sets this process's default byte limit (before IPPC_BIGMEM_KEEP_MB, which
 * still wins); the engine calls it at start. */
void bigmem_default_limit(size_t bytes);

/* Bytes kept for reuse right now (for tests and the bench). */
size_t bigmem_kept_bytes(void);

/* Sets the byte limit and how long a block is kept (tests; otherwise the
 * environment and BIGMEM_KEEP_MS); frees what no longer fits. */
void bigmem_configure(size_t limit_bytes, int keep_ms);

#endif
