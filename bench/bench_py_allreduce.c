/* bench_py_allreduce.c — MPI.COMM_WORLD.Allreduce of a NumPy float64 array
 * from the engine's Python runtime (the seed's call: mpi4py.MPI over MPICH,
 * MPI_Iallreduce + the yielding wait, the GIL released while waiting),
 * beside bench_lua_allreduce and the plain C bench_mpi_allreduce.
 *
 *   mpiexec.mpich -n 4 build/bench/bench_py_allreduce [n=1e6] [repeats=20]
 *
 * The timing loop runs as one execute task of the runtime, as on an engine:
 * each repeat a Barrier, then one timed Allreduce into a result array made
 * beforehand; the time of a repeat is the slowest rank's.  Rank 0 prints
 * the median (the task's stdout).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "bench_args.h"
#include "runtime.h"

static const char script[] =
    "from mpi4py import MPI\n"
    "import numpy as np\n"
    "comm = MPI.COMM_WORLD\n"
    "n, repeats = %lld, %lld\n"
    "rank, size = comm.Get_rank(), comm.Get_size()\n"
    "x = np.arange(n, dtype='d') * 1e-6 + rank\n"
    "r = np.empty_like(x)\n"
    "comm.Allreduce(x, r, op=MPI.SUM)  # warm-up\n"
    "t = []\n"
    "for k in range(repeats):\n"
    "    comm.Barrier()\n"
    "    t0 = MPI.Wtime()\n"
    "    comm.Allreduce(x, r, op=MPI.SUM)\n"
    "    t.append(comm.reduce(MPI.Wtime() - t0, op=MPI.MAX, root=0))\n"
    "if rank == 0:\n"
    "    t.sort()\n"
    "    want = size * (size - 1) / 2 + size * (n - 1) * 1e-6\n"
    "    print('bench_py_allreduce: %%d ranks, n = %%d float64, median %%.3f ms (min %%.3f), '\n"
    "          'check %%s' %% (size, n, t[repeats // 2] * 1e3, t[0] * 1e3,\n"
    "                         'ok' if abs(r[-1] - want) < 1e-6 else 'WRONG'))\n";

int main(int argc, char **argv)
{
    int provided, rank = 0, size = 1;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    double n = 1000000, repeats = 20;
    if ((argc > 1 && bench_arg(argv[1], 1, 1e12, &n) < 0) ||
        (argc > 2 && bench_arg(argv[2], 1, 1000, &repeats) < 0)) {
        fprintf(stderr, "usage: bench_py_allreduce [n (>= 1)] [repeats 1..1000]\n");
        MPI_Finalize();
        return 2;
    }
    ippc_error err;
    runtime *rt = runtime_new(RUNTIME_PYTHON, rank, size, &err);
    if (!rt) {
        fprintf(stderr, "bench_py_allreduce: %s\n", err.message);
        MPI_Finalize();
        return 1;
    }
    char code[sizeof script + 64];
    snprintf(code, sizeof code, script, (long long)n, (long long)repeats);
    json_t *task = json_pack("{s:s, s:s}", "op", "execute", "code", code);
    json_t *res = task ? runtime_run_task(rt, task, NULL, NULL) : NULL;
    const char *status = json_string_value(json_object_get(res, "status"));
    int rc = status && strcmp(status, "ok") == 0 ? 0 : 1;
    if (rc)
        fprintf(stderr, "bench_py_allreduce: rank %d: %s: %s\n", rank,
                json_string_value(json_object_get(res, "ename")),
                json_string_value(json_object_get(res, "evalue")));
    else
        fputs(json_string_value(json_object_get(res, "stdout")), stdout);
    json_decref(res);
    json_decref(task);
    runtime_free(rt);
    MPI_Finalize();
    return rc;
}
