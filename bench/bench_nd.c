/* bench_nd.c — nd throughput against the limit, a plain C loop.
 *
 *   build/bench/bench_nd [n=1e7] [repeats=15]
 *
 * Over n float64 elements: a:sum() against `for (i) s += x[i]`, and axpy
 * both as the Lua expression `y = alpha * x + y` (two temporaries, as in
 * numpy) and as the in-place method y:axpy(alpha, x), against
 * `for (i) y[i] += alpha * x[i]`.  Prints the median time of each and the
 * ratio nd / C (1.0 = as fast as the C loop; below 1 is faster).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>

#include "bench_args.h"
#include "nd.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

/* One run of the global Lua function `name`, in seconds. */
static double time_lua(lua_State *L, const char *name)
{
    lua_getglobal(L, name);
    double t0 = now();
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        fprintf(stderr, "bench_nd: %s: %s\n", name, lua_tostring(L, -1));
        exit(1);
    }
    return now() - t0;
}

static volatile double sink;

static double time_c_sum(const double *x, size_t n)
{
    double t0 = now(), s = 0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    sink = s;
    return now() - t0;
}

static double time_c_axpy(double *y, const double *x, size_t n)
{
    double t0 = now();
    for (size_t i = 0; i < n; i++)
        y[i] += 0.5 * x[i];
    sink = y[n / 2];
    return now() - t0;
}

int main(int argc, char **argv)
{
    double n_arg = 10000000, repeats_arg = 15;
    if ((argc > 1 && bench_arg(argv[1], 1, 1e12, &n_arg) < 0) ||
        (argc > 2 && bench_arg(argv[2], 1, 64, &repeats_arg) < 0)) {
        fprintf(stderr, "usage: bench_nd [n (>= 1)] [repeats 1..64]\n");
        return 2;
    }
    size_t n = (size_t)n_arg;
    int repeats = (int)repeats_arg;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "nd", luaopen_nd, 1);
    lua_pop(L, 1);
    lua_pushinteger(L, (lua_Integer)n);
    lua_setglobal(L, "N");
    const char *setup = "x = nd.random(N, 1) y = nd.random(N, 2)\n"
                        "function nd_sum() s = x:sum() end\n"
                        "function nd_axpy_expr() y = 0.5 * x + y end\n"
                        "function nd_axpy_inplace() y:axpy(0.5, x) end\n";
    if (luaL_dostring(L, setup) != LUA_OK) {
        fprintf(stderr, "bench_nd: %s\n", lua_tostring(L, -1));
        return 1;
    }
    double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    if (!x || !y) {
        fprintf(stderr, "bench_nd: out of memory\n");
        free(x);
        free(y);
        lua_close(L);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        x[i] = (double)(i % 1000) * 1e-3;
        y[i] = 1.0;
    }
    /* Interleaved, so that a busy neighbour slows both sides alike. */
    enum { C_SUM, ND_SUM, C_AXPY, ND_EXPR, ND_INPLACE, KINDS };
    double t[KINDS][64];
    for (int r = 0; r < repeats; r++) {
        t[C_SUM][r] = time_c_sum(x, n);
        t[ND_SUM][r] = time_lua(L, "nd_sum");
        t[C_AXPY][r] = time_c_axpy(y, x, n);
        t[ND_EXPR][r] = time_lua(L, "nd_axpy_expr");
        t[ND_INPLACE][r] = time_lua(L, "nd_axpy_inplace");
    }
    double c_sum = median(t[C_SUM], repeats), l_sum = median(t[ND_SUM], repeats);
    double c_axpy = median(t[C_AXPY], repeats), l_expr = median(t[ND_EXPR], repeats);
    double l_inplace = median(t[ND_INPLACE], repeats);
    printf("bench_nd: n = %zu float64, median of %d\n", n, repeats);
    printf("  sum           C loop %8.2f ms   nd a:sum()           %8.2f ms   ratio %.2f\n",
           c_sum * 1e3, l_sum * 1e3, l_sum / c_sum);
    printf("  axpy          C loop %8.2f ms   nd y = a*x + y       %8.2f ms   ratio %.2f\n",
           c_axpy * 1e3, l_expr * 1e3, l_expr / c_axpy);
    printf("  axpy in place C loop %8.2f ms   nd y:axpy(a, x)      %8.2f ms   ratio %.2f\n",
           c_axpy * 1e3, l_inplace * 1e3, l_inplace / c_axpy);
    free(x);
    free(y);
    lua_close(L);
    return 0;
}
