/* bench_fanout — the engines' fanned-out data ops (engine/fanout.h) against
 * the raw MPI collective that moves the same bytes, in one run.
 *
 *   mpiexec.mpich -n 4 build/bench/bench_fanout [-r REPS] [N...]   (default 10000000)
 *
 * Every rank drives its own engine runtime with task messages as the
 * controller would send them (runtime_run_task, as engine/main.c does):
 *   push     the root's task carries an N-float64 array (a blob) for all ranks
 *            (each ends with its own array of N);
 *   scatter  the root's array of N, split 4 ways by the controller's counts;
 *   gather   each rank's part of N (already a Lua global) to the root, which
 *            answers the concatenated array as one blob.
 * Each is timed against the raw collective of the same bytes with the same
 * yielding wait (MPI_Ibcast_c / MPI_Iscatterv_c / MPI_Igatherv_c + lmpi_wait),
 * into buffers that are reused (touched before timing: the limit, as
 * bench_mpi_bcast) and, for push, also into fresh malloc'd buffers (what a
 * new array costs in page faults).  Each repeat: a yielding barrier, the
 * timed op, a yielding barrier; the time of a repeat is the slowest rank's.
 * Untimed: making the root's blob, checking the result, freeing it.
 * Rank 0 prints one JSON line per op and size:
 *   {"what":"fanout_push","ranks":4,"n":N,"bytes":B,"reps":R,"median_s":S,
 *    "min_s":S,"mb_s":M,"mpi_median_s":S,"mpi_min_s":S,"mpi_mb_s":M,"ratio":X,
 *    "check":"ok"}
 * (push also "mpi_fresh_median_s", "mpi_fresh_mb_s").  mb_s is B / median_s
 * in 10^6 bytes per second (array bytes counted once); ratio is mb_s /
 * mpi_mb_s.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <mpi.h>

#include "bench_args.h"
#include "lmpi.h"
#include "runtime.h"
#include "value.h"

#define MAX_REPS 100

static int rank, size;
static runtime *rt;
static int64_t next_id = 1;
static int all_ok = 1;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts t; its median. */
static double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

static void barrier(void)
{
    MPI_Request req;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    lmpi_wait(&req, NULL);
}

/* The slowest rank's time since t0 (every rank gets it). */
static double elapsed(double t0)
{
    barrier();
    double dt = MPI_Wtime() - t0, worst = 0;
    MPI_Request req;
    MPI_Iallreduce(&dt, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD, &req);
    lmpi_wait(&req, NULL);
    return worst;
}

static json_t *fanout_all(int root)
{
    json_t *ranks = json_array();
    for (int i = 0; i < size; i++)
        json_array_append_new(ranks, json_integer(i));
    return json_pack("{s:I, s:o, s:i}", "id", (json_int_t)next_id++, "ranks", ranks, "root", root);
}

/* Runs a task (taken) and, if t0 is not NULL, the slowest rank's time of it
 * (taken before anything is freed); 1 if it answered ok. */
static int run_timed(json_t *task, ippc_blobs *blobs, const double *t0, double *dt)
{
    ippc_blobs none, out;
    blobs_init(&none);
    blobs_init(&out);
    json_t *res = runtime_run_task(rt, task, blobs ? blobs : &none, &out);
    if (t0)
        *dt = elapsed(*t0);
    int ok = res && strcmp(json_string_value(json_object_get(res, "status")), "ok") == 0;
    if (!ok)
        fprintf(stderr, "bench_fanout rank %d: %s\n", rank,
                res ? json_string_value(json_object_get(res, "evalue")) : "no result");
    json_decref(res);
    json_decref(task);
    blobs_free(&out);
    if (blobs)
        blobs_free(blobs);
    return ok;
}

static int run(json_t *task, ippc_blobs *blobs)
{
    return run_timed(task, blobs, NULL, NULL);
}

static void lua(const char *code)
{
    all_ok &= run(
        json_pack("{s:s, s:i, s:s, s:s}", "type", "task", "task", 1, "op", "execute", "code", code),
        NULL);
}

/* p, unless an allocation failed: then every rank ends. */
static void *must(void *p)
{
    if (!p) {
        fprintf(stderr, "bench_fanout rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 2);
        abort(); /* not reached, but MPI_Abort is not declared noreturn */
    }
    return p;
}

/* The last of n doubles in buf (buffers are bytes here, as MPI moves them). */
static double last_double(const unsigned char *buf, size_t n)
{
    double v;
    memcpy(&v, buf + (n - 1) * sizeof v, sizeof v);
    return v;
}

static unsigned char *filled(size_t n)
{
    double *p = must(malloc(n * sizeof *p));
    for (size_t i = 0; i < n; i++)
        p[i] = (double)i;
    return (unsigned char *)p;
}

/* t: the op's times, m: the raw collective's. */
static void report(const char *what, size_t n, int reps, double *t, double *m, const char *extra)
{
    if (rank != 0)
        return;
    double bytes = (double)n * 8, med = median(t, reps), mpi_med = median(m, reps);
    printf("{\"what\":\"%s\",\"ranks\":%d,\"n\":%zu,\"bytes\":%.0f,\"reps\":%d,"
           "\"median_s\":%.6f,\"min_s\":%.6f,\"mb_s\":%.1f,\"mpi_median_s\":%.6f,"
           "\"mpi_min_s\":%.6f,\"mpi_mb_s\":%.1f,\"ratio\":%.2f%s,\"check\":\"%s\"}\n",
           what, size, n, bytes, reps, med, t[0], bytes / med / 1e6, mpi_med, m[0],
           bytes / mpi_med / 1e6, mpi_med / med, extra, all_ok ? "ok" : "WRONG");
    fflush(stdout);
}

/* ------------------------------------------------------------ push */

static void bench_push(size_t n, int reps)
{
    double t[MAX_REPS] = {0}, m[MAX_REPS] = {0}, fresh[MAX_REPS] = {0};
    size_t bytes = n * 8;
    char check[160];
    snprintf(check, sizeof check, "assert(v:size() == %zu and v[%zu] == %zu) v = nil", n, n, n - 1);
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        ippc_blobs blobs;
        blobs_init(&blobs);
        json_t *task = json_pack("{s:s, s:i, s:s, s:o}", "type", "task", "task", 1, "op", "push",
                                 "fanout", fanout_all(0));
        if (rank == 0) {
            long k = blobs_push(&blobs, filled(n), bytes);
            json_object_set_new(
                task, "ns",
                json_pack("{s:o}", "v", value_nd_placeholder(ND_FLOAT64, 1, &n, (size_t)k)));
        } else {
            json_object_set_new(task, "names", json_pack("[s]", "v"));
        }
        barrier();
        double t0 = MPI_Wtime(), dt;
        all_ok &= run_timed(task, &blobs, &t0, &dt);
        if (r >= 0)
            t[r] = dt;
        lua(check);
    }
    /* raw MPI_Ibcast_c of the same bytes: reused buffers, then fresh ones */
    unsigned char *buf = filled(n);
    for (int r = -1; r < reps; r++) {
        barrier();
        double t0 = MPI_Wtime();
        MPI_Request req;
        MPI_Ibcast_c(buf, (MPI_Count)bytes, MPI_BYTE, 0, MPI_COMM_WORLD, &req);
        lmpi_wait(&req, NULL);
        double dt = elapsed(t0);
        if (r >= 0)
            m[r] = dt;
    }
    free(buf);
    for (int r = -1; r < reps; r++) {
        unsigned char *b = rank == 0 ? filled(n) : NULL;
        barrier();
        double t0 = MPI_Wtime();
        if (!b) /* not the root: a fresh receive buffer, inside the timing */
            b = must(malloc(bytes));
        MPI_Request req;
        MPI_Ibcast_c(b, (MPI_Count)bytes, MPI_BYTE, 0, MPI_COMM_WORLD, &req);
        lmpi_wait(&req, NULL);
        double dt = elapsed(t0);
        if (r >= 0)
            fresh[r] = dt;
        all_ok &= last_double(b, n) == (double)(n - 1);
        free(b);
    }
    double fm = median(fresh, reps);
    char extra[128];
    snprintf(extra, sizeof extra, ",\"mpi_fresh_median_s\":%.6f,\"mpi_fresh_mb_s\":%.1f", fm,
             (double)bytes / fm / 1e6);
    report("fanout_push", n, reps, t, m, extra);
}

/* ------------------------------------------------------------ scatter */

static void bench_scatter(size_t n, int reps)
{
    double t[MAX_REPS] = {0}, m[MAX_REPS] = {0};
    size_t bytes = n * 8, start, count;
    scatter_partition(n, (size_t)size, (size_t)rank, &start, &count);
    json_t *counts = json_array();
    MPI_Count *sc = must(calloc((size_t)size, sizeof *sc));
    MPI_Aint *sd = must(calloc((size_t)size, sizeof *sd));
    for (int i = 0; i < size; i++) {
        size_t s, c;
        scatter_partition(n, (size_t)size, (size_t)i, &s, &c);
        json_array_append_new(counts, json_integer((json_int_t)c));
        sc[i] = (MPI_Count)(c * 8);
        sd[i] = (MPI_Aint)(s * 8);
    }
    char check[160];
    snprintf(check, sizeof check, "assert(x:size() == %zu and x[%zu] == %zu) x = nil", count, count,
             start + count - 1);
    for (int r = -1; r < reps; r++) {
        ippc_blobs blobs;
        blobs_init(&blobs);
        json_t *task = json_pack("{s:s, s:i, s:s, s:o, s:s, s:O}", "type", "task", "task", 1, "op",
                                 "scatter", "fanout", fanout_all(0), "name", "x", "counts", counts);
        if (rank == 0) {
            long k = blobs_push(&blobs, filled(n), bytes);
            json_object_set_new(task, "value", value_nd_placeholder(ND_FLOAT64, 1, &n, (size_t)k));
        }
        barrier();
        double t0 = MPI_Wtime(), dt;
        all_ok &= run_timed(task, &blobs, &t0, &dt);
        if (r >= 0)
            t[r] = dt;
        lua(check);
    }
    unsigned char *src = rank == 0 ? filled(n) : NULL, *dst = filled(count ? count : 1);
    for (int r = -1; r < reps; r++) {
        barrier();
        double t0 = MPI_Wtime();
        MPI_Request req;
        MPI_Iscatterv_c(src, sc, sd, MPI_BYTE, dst, (MPI_Count)(count * 8), MPI_BYTE, 0,
                        MPI_COMM_WORLD, &req);
        lmpi_wait(&req, NULL);
        double dt = elapsed(t0);
        if (r >= 0)
            m[r] = dt;
    }
    free(src);
    free(dst);
    free(sc);
    free(sd);
    json_decref(counts);
    report("fanout_scatter", n, reps, t, m, "");
}

/* ------------------------------------------------------------ gather */

static void bench_gather(size_t n, int reps)
{
    double t[MAX_REPS] = {0}, m[MAX_REPS] = {0};
    size_t start, count;
    scatter_partition(n, (size_t)size, (size_t)rank, &start, &count);
    char code[160];
    snprintf(code, sizeof code, "g = nd.arange(%zu, 'float64') + %zu", count, start);
    lua(code);
    for (int r = -1; r < reps; r++) {
        json_t *task = json_pack("{s:s, s:i, s:s, s:o, s:s}", "type", "task", "task", 1, "op",
                                 "gather", "fanout", fanout_all(0), "name", "g");
        ippc_blobs none, out;
        blobs_init(&none);
        blobs_init(&out);
        barrier();
        double t0 = MPI_Wtime();
        json_t *res = runtime_run_task(rt, task, &none, &out);
        double dt = elapsed(t0);
        if (r >= 0)
            t[r] = dt;
        int ok = res && strcmp(json_string_value(json_object_get(res, "status")), "ok") == 0;
        if (ok && rank == 0)
            ok = out.count == 1 && out.items[0].len == n * 8 &&
                 last_double(out.items[0].data, n) == (double)(n - 1);
        all_ok &= ok;
        json_decref(res);
        json_decref(task);
        blobs_free(&out);
    }
    lua("g = nil");
    MPI_Count *rc = must(calloc((size_t)size, sizeof *rc));
    MPI_Aint *rd = must(calloc((size_t)size, sizeof *rd));
    for (int i = 0; i < size; i++) {
        size_t s, c;
        scatter_partition(n, (size_t)size, (size_t)i, &s, &c);
        rc[i] = (MPI_Count)(c * 8);
        rd[i] = (MPI_Aint)(s * 8);
    }
    unsigned char *src = filled(count ? count : 1), *dst = rank == 0 ? filled(n) : NULL;
    for (int r = -1; r < reps; r++) {
        barrier();
        double t0 = MPI_Wtime();
        MPI_Request req;
        MPI_Igatherv_c(src, (MPI_Count)(count * 8), MPI_BYTE, dst, rc, rd, MPI_BYTE, 0,
                       MPI_COMM_WORLD, &req);
        lmpi_wait(&req, NULL);
        double dt = elapsed(t0);
        if (r >= 0)
            m[r] = dt;
    }
    free(src);
    free(dst);
    free(rc);
    free(rd);
    report("fanout_gather", n, reps, t, m, "");
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int reps = 5, a = 1, usage = 0;
    double v = 0;
    if (argc > 2 && strcmp(argv[1], "-r") == 0) {
        if (bench_arg(argv[2], 1, MAX_REPS, &v) == 0)
            reps = (int)v;
        else
            usage = 1;
        a = 3;
    }
    for (int i = a; i < argc; i++)
        if (bench_arg(argv[i], 1, 1e12, &v) < 0)
            usage = 1;
    if (usage) {
        if (rank == 0)
            fprintf(stderr, "usage: bench_fanout [-r REPS (1..%d)] [N (>= 1)...]\n", MAX_REPS);
        MPI_Finalize();
        return 2;
    }
    ippc_error err;
    rt = runtime_new(RUNTIME_LUA, rank, size, &err);
    if (!rt) {
        fprintf(stderr, "bench_fanout: runtime_new: %s\n", err.message);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    static char *const dflt[] = {"10000000"};
    char *const *sizes = a < argc ? argv + a : dflt;
    int nsizes = a < argc ? argc - a : 1;
    for (int i = 0; i < nsizes; i++) {
        if (bench_arg(sizes[i], 1, 1e12, &v) < 0) /* each was checked above */
            continue;
        size_t n = (size_t)v;
        bench_push(n, reps);
        bench_scatter(n, reps);
        bench_gather(n, reps);
    }
    runtime_free(rt);
    MPI_Finalize();
    return all_ok ? 0 : 1;
}
