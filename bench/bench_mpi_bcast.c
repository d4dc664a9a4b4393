/* bench_mpi_bcast — the fan-out limit: rank 0 broadcasts N bytes to the other
 * ranks with MPI_Ibcast and the yielding wait of PLATFORM.md (MPI_Test with
 * sched_yield for the first 50 spins, then 10 us sleeps), as the engines'
 * mpi module waits.  bench_peer.py prints ippc's push figures beside it.
 *
 *   mpiexec.mpich -n 4 build/bench/bench_mpi_bcast [-r REPS] BYTES [BYTES...]
 *
 * Each repeat: a yielding barrier, then the timed Ibcast followed by a
 * yielding barrier (so the time covers the slowest rank receiving it); the
 * time of a repeat is the slowest rank's.  Rank 0 prints one JSON line per size:
 *   {"what":"mpi_bcast","ranks":4,"bytes":N,"reps":R,"median_s":S,"min_s":S,
 *    "mb_s":M,"check":"ok"}
 * mb_s is N / median_s (array bytes, counted once) in 10^6 bytes per second.
 * One untimed warm-up broadcast first; the received bytes are checked.
 */
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

static void wait_yielding(MPI_Request *req)
{
    for (unsigned spins = 0;; spins++) {
        int done = 0;
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
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

static void barrier_yielding(void)
{
    MPI_Request req;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    wait_yielding(&req);
}

/* MPI counts are int: a large buffer goes as MPI_BYTE in pieces of 1 GiB. */
static void bcast_yielding(unsigned char *buf, size_t bytes)
{
    const size_t piece = (size_t)1 << 30;
    for (size_t off = 0; off < bytes; off += piece) {
        size_t n = bytes - off < piece ? bytes - off : piece;
        MPI_Request req;
        MPI_Ibcast(buf + off, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD, &req);
        wait_yielding(&req);
    }
}

static unsigned char pattern(size_t i, int round)
{
    return (unsigned char)(i * 131u + (unsigned)round);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int reps = 5, a = 1, usage = 0;
    double v;
    if (argc > 2 && strcmp(argv[1], "-r") == 0) {
        if (bench_arg(argv[2], 1, 1000, &v) == 0)
            reps = (int)v;
        else
            usage = 1;
        a = 3;
    }
    for (int i = a; i < argc; i++)
        if (bench_arg(argv[i], 1, 1e15, &v) < 0)
            usage = 1;
    if (usage || a >= argc) {
        if (rank == 0)
            fprintf(stderr, "usage: bench_mpi_bcast [-r REPS] BYTES [BYTES...]\n");
        MPI_Finalize();
        return 2;
    }
    double *t = malloc(sizeof *t * (size_t)reps);
    for (; a < argc; a++) {
        size_t bytes = bench_arg(argv[a], 1, 1e15, &v) == 0 ? (size_t)v : 0; /* checked above */
        unsigned char *buf = bytes ? malloc(bytes) : NULL;
        if (!buf || !t) {
            fprintf(stderr, "bench_mpi_bcast: out of memory\n");
            MPI_Abort(MPI_COMM_WORLD, 2);
            free(buf); /* not reached, but MPI_Abort is not declared noreturn */
            free(t);
            return 2;
        }
        memset(buf, 0, bytes); /* touch every page before timing */
        int ok = 1;
        for (int r = -1; r < reps; r++) {
            if (rank == 0)
                for (size_t i = 0; i < bytes; i += 4096)
                    buf[i] = pattern(i, r + 1);
            barrier_yielding();
            double t0 = MPI_Wtime();
            bcast_yielding(buf, bytes);
            barrier_yielding();
            double dt = MPI_Wtime() - t0, worst = 0;
            MPI_Reduce(&dt, &worst, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
            for (size_t i = 0; i < bytes; i += 4096)
                ok = ok && buf[i] == pattern(i, r + 1);
            if (r >= 0)
                t[r] = worst;
        }
        int all_ok = 0;
        MPI_Reduce(&ok, &all_ok, 1, MPI_INT, MPI_LAND, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            qsort(t, (size_t)reps, sizeof *t, cmp_double);
            double med = reps % 2 ? t[reps / 2] : (t[reps / 2 - 1] + t[reps / 2]) / 2;
            printf("{\"what\":\"mpi_bcast\",\"ranks\":%d,\"bytes\":%zu,\"reps\":%d,"
                   "\"median_s\":%.6f,\"min_s\":%.6f,\"mb_s\":%.1f,\"check\":\"%s\"}\n",
                   size, bytes, reps, med, t[0], bytes / med / 1e6, all_ok ? "ok" : "WRONG");
            fflush(stdout);
        }
        free(buf);
    }
    free(t);
    MPI_Finalize();
    return 0;
}
