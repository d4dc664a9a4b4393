/* bench_args.h — the numbers on a C benchmark's command line.
 *
 * atoi and atof read "ten" as 0 and "1e7x" as 1e7 without a word; a typo
 * would then measure the wrong size.  bench_arg reads the whole argument or
 * fails, and the caller prints its usage line.  Header-only (each benchmark
 * is one file); pure, any thread.
 */
#ifndef IPPC_BENCH_ARGS_H
#define IPPC_BENCH_ARGS_H

#include <errno.h>
#include <stdlib.h>

/* The number s spells (decimal or floating-point, so "1e7" is ten million;
 * a fraction is kept, the caller truncates) in *out and 0; -1, *out
 * untouched, when s is not all number or the number is outside [min, max]. */
static inline int bench_arg(const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno != 0 || !(v >= min && v <= max))
        return -1;
    *out = v;
    return 0;
}

#endif
