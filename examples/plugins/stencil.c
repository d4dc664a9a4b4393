/* stencil.c — a 1-D heat equation, explicit finite differences, on an array
 * distributed over the ranks (rank r holds the r-th block, in rank order),
 * with the halo exchanged by MPI_Sendrecv every step.
 *
 *   u = heat1d(u, steps, alpha [, comm])
 *
 * One step:  u'[i] = u[i] + alpha * (u[i-1] - 2 u[i] + u[i+1])  for every
 * interior point of the global array; the two global end points are fixed
 * (Dirichlet).  u[i-1] / u[i+1] across a block edge come from the
 * neighbouring rank (one ghost cell on each side).  alpha <= 0.5 is stable.
 * u must be a 1-D float64 array with at least one element on every rank;
 * the result is a new array (u is not changed).  Every rank of the
 * communicator must call it with the same steps and alpha.
 *
 * Interrupts: every CHECK_EVERY steps the ranks agree whether to stop (an
 * allreduce of api->interrupted() with MPI_LOR), so they all stop at the
 * same step.  Stopping on one rank alone would leave its neighbours blocked
 * in MPI_Sendrecv for good, waiting for a partner that left.
 */
#include <stdlib.h>
#include <string.h>

#include <ippc/plugin.h>

IPPC_PLUGIN_DEFINE();

#define CHECK_EVERY 32

/* One exchange: sends the block's edge values out, receives the ghosts. */
static int exchange(double *u, size_t n, double *ghost_left, double *ghost_right, int left,
                    int right, MPI_Comm comm)
{
    int rc = MPI_Sendrecv(&u[n - 1], 1, MPI_DOUBLE, right, 0, ghost_left, 1, MPI_DOUBLE, left, 0,
                          comm, MPI_STATUS_IGNORE);
    if (rc == MPI_SUCCESS)
        rc = MPI_Sendrecv(&u[0], 1, MPI_DOUBLE, left, 1, ghost_right, 1, MPI_DOUBLE, right, 1, comm,
                          MPI_STATUS_IGNORE);
    return rc;
}

/* One explicit step from u into v; the global ends (no neighbour) stay. */
static void step(const double *u, double *v, size_t n, double gl, double gr, double alpha,
                 int is_first, int is_last)
{
    for (size_t i = 0; i < n; i++) {
        double l = i == 0 ? gl : u[i - 1], r = i + 1 == n ? gr : u[i + 1];
        v[i] = u[i] + alpha * (l - 2 * u[i] + r);
    }
    if (is_first)
        v[0] = u[0];
    if (is_last)
        v[n - 1] = u[n - 1];
}

static int heat1d(const ippc_api *api, ippc_call *call, const ippc_value *args, int nargs)
{
    if (nargs < 3 || nargs > 4)
        return api->error(call, "heat1d(u, steps, alpha [, comm]) takes 3 or 4 arguments");
    const ippc_array *a = &args[0].u.array;
    if (args[0].kind != IPPC_ARRAY || a->dtype != IPPC_FLOAT64 || a->ndim != 1 || a->count == 0)
        return api->error(call, "heat1d: u must be a non-empty 1-D float64 array "
                                "(u:astype('float64') converts one)");
    if (args[1].kind != IPPC_INTEGER || args[1].u.integer < 0)
        return api->error(call, "heat1d: steps must be a non-negative integer");
    if (args[2].kind != IPPC_NUMBER && args[2].kind != IPPC_INTEGER)
        return api->error(call, "heat1d: alpha must be a number");
    MPI_Comm comm = nargs == 4 && args[3].kind == IPPC_COMM ? args[3].u.comm : api->world;
    if (comm == MPI_COMM_NULL)
        return api->error(call, "heat1d: MPI is not initialised");
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int left = rank > 0 ? rank - 1 : MPI_PROC_NULL,
        right = rank + 1 < size ? rank + 1 : MPI_PROC_NULL;
    size_t n = a->count;
    double *u = api->return_array(call, IPPC_FLOAT64, 1, &n);
    double *v = malloc(n * sizeof *v);
    if (!u || !v) {
        free(v);
        return api->error(call, "heat1d: out of memory");
    }
    memcpy(u, a->data, n * sizeof *u);
    double alpha = ippc_value_number(&args[2]);
    for (int64_t s = 0; s < args[1].u.integer; s++) {
        int stop = 0, rc = MPI_SUCCESS;
        if (s % CHECK_EVERY == 0) {
            stop = api->interrupted();
            rc = MPI_Allreduce(MPI_IN_PLACE, &stop, 1, MPI_INT, MPI_LOR, comm);
        }
        if (stop || rc != MPI_SUCCESS) {
            free(v);
            return rc != MPI_SUCCESS
                       ? api->error(call, "heat1d: MPI_Allreduce failed (error %d)", rc)
                       : api->error(call, "interrupted");
        }
        double gl = 0, gr = 0;
        rc = exchange(u, n, &gl, &gr, left, right, comm);
        if (rc != MPI_SUCCESS) {
            free(v);
            return api->error(call, "heat1d: MPI_Sendrecv failed (error %d)", rc);
        }
        step(u, v, n, gl, gr, alpha, left == MPI_PROC_NULL, right == MPI_PROC_NULL);
        memcpy(u, v, n * sizeof *u);
    }
    free(v);
    return 0;
}

int ippc_plugin_init(const ippc_api *api)
{
    return api->register_kernel(api, "heat1d", heat1d,
                                "heat1d(u, steps, alpha [, comm]) -> u after steps explicit steps");
}
