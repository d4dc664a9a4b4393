/* bench_mpi_allreduce.c — the baseline: a plain C MPI program summing n
 * float64 over all ranks with MPI_Allreduce (MPI's own blocking wait).
 *
 *   mpiexec.mpich -n 4 build/bench/bench_mpi_allreduce [n=1e6] [repeats=20]
 *
 * Each repeat: barrier, then one timed MPI_Allreduce; the time of a repeat
 * is the slowest rank's.  Rank 0 prints the median, in the same format as
 * bench_lua_allreduce (scripts/run-bench computes the ratio).  A second
 * line times the same in plain C the way lmpi waits (MPI_Iallreduce +
 * MPI_Test, sched_yield, then 10 us sleeps): on oversubscribed cores that,
 * not MPI's spinning wait, is the fair limit (PLATFORM.md).
 */
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mpi.h>

#include "bench_args.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void allreduce_yielding(const double *x, double *y, size_t n)
{
    MPI_Request req;
    MPI_Iallreduce(x, y, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &req);
    for (unsigned spins = 0;; spins++) {
        int done = 0;
        MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (done)
            return;
        if (spins < 50) {
            sched_yield();
        } else {
            struct timespec ts = {0, 10000};
            nanosleep(&ts, NULL);
        }
    }
}

/* repeats timed allreduces (yielding or MPI's own); median on rank 0. */
static double measure(const double *x, double *y, size_t n, int repeats, double *t, int yielding,
                      double *best)
{
    for (int r = 0; r < repeats; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        if (yielding)
            allreduce_yielding(x, y, n);
        else
            MPI_Allreduce(x, y, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        double dt = MPI_Wtime() - t0;
        MPI_Reduce(&dt, &t[r], 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    }
    qsort(t, (size_t)repeats, sizeof *t, cmp_double);
    *best = t[0];
    return t[repeats / 2];
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    double n_arg = 1000000, repeats_arg = 20;
    if ((argc > 1 && bench_arg(argv[1], 1, (double)INT_MAX, &n_arg) < 0) ||
        (argc > 2 && bench_arg(argv[2], 1, 1000, &repeats_arg) < 0)) {
        if (rank == 0)
            fprintf(stderr, "usage: bench_mpi_allreduce [n 1..2^31-1] [repeats 1..1000]\n");
        MPI_Finalize();
        return 2;
    }
    size_t n = (size_t)n_arg;
    int repeats = (int)repeats_arg;
    double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y),
           *t = malloc(sizeof *t * (size_t)repeats);
    if (!x || !y || !t) {
        fprintf(stderr, "bench_mpi_allreduce: out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
        free(x); /* not reached, but MPI_Abort is not declared noreturn */
        free(y);
        free(t);
        return 2;
    }
    for (size_t i = 0; i < n; i++)
        x[i] = (double)rank + (double)i * 1e-6;
    MPI_Allreduce(x, y, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD); /* warm-up */
    double best_b, best_y;
    double med_b = measure(x, y, n, repeats, t, 0, &best_b);
    double want = (double)size * (size - 1) / 2 + (double)size * (double)(n - 1) * 1e-6;
    int ok = y[n - 1] == want;
    memset(y, 0, n * sizeof *y);
    double med_y = measure(x, y, n, repeats, t, 1, &best_y);
    ok = ok && y[n - 1] == want;
    if (rank == 0) {
        printf("bench_mpi_allreduce: %d ranks, n = %zu float64, median %.3f ms (min %.3f), "
               "check %s\n",
               size, n, med_b * 1e3, best_b * 1e3, ok ? "ok" : "WRONG");
        printf("bench_mpi_allreduce_yield: %d ranks, n = %zu float64, median %.3f ms (min %.3f), "
               "check %s\n",
               size, n, med_y * 1e3, best_y * 1e3, ok ? "ok" : "WRONG");
    }
    free(x);
    free(y);
    free(t);
    MPI_Finalize();
    return 0;
}
