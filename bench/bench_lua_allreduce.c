/* bench_lua_allreduce.c — mpi.allreduce of an nd array from the engine's
 * Lua runtime (lmpi: MPI_Iallreduce in place in a new array + the yielding
 * wait), against the plain C program bench_mpi_allreduce.
 *
 *   mpiexec.mpich -n 4 build/bench/bench_lua_allreduce [n=1e6] [repeats=20]
 *
 * Each repeat: mpi.barrier(), then one timed `r = mpi.allreduce(x)` (the
 * time includes making the result array, as the Lua caller sees it); the
 * time of a repeat is the slowest rank's.  Rank 0 prints the median.
 */
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lualib.h>
#include <mpi.h>

#include "bench_args.h"
#include "lmpi.h"
#include "nd.h"

static const char *const script =
    "local n, repeats = ...\n"
    "local rank, size = mpi.rank(), mpi.size()\n"
    "local x = nd.arange(n, 'float64') * 1e-6 + rank\n"
    "local r = mpi.allreduce(x) -- warm-up\n"
    "local t = {}\n"
    "for k = 1, repeats do\n"
    "  mpi.barrier()\n"
    "  local t0 = mpi.wtime()\n"
    "  r = mpi.allreduce(x)\n"
    "  t[k] = mpi.reduce(mpi.wtime() - t0, 'max', 0)\n"
    "end\n"
    "if rank == 0 then\n"
    "  table.sort(t)\n"
    "  local want = size * (size - 1) / 2 + size * (n - 1) * 1e-6\n"
    "  print(string.format('bench_lua_allreduce: %d ranks, n = %d float64, median %.3f ms '\n"
    "    .. '(min %.3f), check %s', size, n, t[repeats // 2 + 1] * 1e3, t[1] * 1e3,\n"
    "    math.abs(r[n] - want) < 1e-6 and 'ok' or 'WRONG'))\n"
    "end\n";

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    double n = 1000000, repeats = 20;
    if ((argc > 1 && bench_arg(argv[1], 1, 1e12, &n) < 0) ||
        (argc > 2 && bench_arg(argv[2], 1, 1000, &repeats) < 0)) {
        fprintf(stderr, "usage: bench_lua_allreduce [n (>= 1)] [repeats 1..1000]\n");
        MPI_Finalize();
        return 2;
    }
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "nd", luaopen_nd, 1);
    luaL_requiref(L, "mpi", luaopen_mpi, 1);
    lua_pop(L, 2);
    int rc = 0;
    if (luaL_loadstring(L, script) != LUA_OK) {
        fprintf(stderr, "bench_lua_allreduce: %s\n", lua_tostring(L, -1));
        rc = 1;
    } else {
        lua_pushinteger(L, (lua_Integer)n);
        lua_pushinteger(L, (lua_Integer)repeats);
        if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
            fprintf(stderr, "bench_lua_allreduce: %s\n", lua_tostring(L, -1));
            rc = 1;
        }
    }
    lua_close(L);
    MPI_Finalize();
    return rc;
}
