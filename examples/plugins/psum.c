/* psum.c — the seed's psum as a native plugin: the sum of an array's
 * elements over all ranks, with MPI_Allreduce in C.
 *
 *   load:  POST /api/v1/views/all/load {"library": "/abs/path/build/plugins/libpsum.so"}
 *   use:   totalsum = psum(a)            -- a: an nd array (or a number) on every rank
 *          psum(a, comm)                 -- over a communicator from mpi.comm_split
 *
 * Integer arrays sum exactly as int64 (an integer result), float arrays as
 * double (a float result).  Every rank must call it (it is a collective).
 */
#include <ippc/plugin.h>

IPPC_PLUGIN_DEFINE();

/* The local sum of an array: exact int64 for integer dtypes, double else. */
static void local_sum(const ippc_array *a, int64_t *isum, double *fsum)
{
    *isum = 0;
    *fsum = 0;
    for (size_t i = 0; i < a->count; i++) {
        switch (a->dtype) {
        case IPPC_FLOAT64: *fsum += ((const double *)a->data)[i]; break;
        case IPPC_FLOAT32: *fsum += ((const float *)a->data)[i]; break;
        case IPPC_INT64: *isum += ((const int64_t *)a->data)[i]; break;
        case IPPC_INT32: *isum += ((const int32_t *)a->data)[i]; break;
        case IPPC_UINT8: *isum += ((const uint8_t *)a->data)[i]; break;
        }
    }
}

static int psum(const ippc_api *api, ippc_call *call, const ippc_value *args, int nargs)
{
    if (nargs < 1 || nargs > 2)
        return api->error(call, "psum(a [, comm]) takes 1 or 2 arguments, got %d", nargs);
    MPI_Comm comm = api->world;
    if (nargs == 2) {
        if (args[1].kind != IPPC_COMM)
            return api->error(call, "psum: argument 2 must be a communicator");
        comm = args[1].u.comm;
    }
    if (comm == MPI_COMM_NULL)
        return api->error(call, "psum: MPI is not initialised");
    int64_t isum = 0;
    double fsum = 0;
    int is_float;
    switch (args[0].kind) {
    case IPPC_INTEGER: isum = args[0].u.integer, is_float = 0; break;
    case IPPC_NUMBER: fsum = args[0].u.number, is_float = 1; break;
    case IPPC_ARRAY:
        local_sum(&args[0].u.array, &isum, &fsum);
        is_float = args[0].u.array.dtype == IPPC_FLOAT64 || args[0].u.array.dtype == IPPC_FLOAT32;
        break;
    default: return api->error(call, "psum: argument 1 must be an nd array or a number");
    }
    int rc = is_float ? MPI_Allreduce(MPI_IN_PLACE, &fsum, 1, MPI_DOUBLE, MPI_SUM, comm)
                      : MPI_Allreduce(MPI_IN_PLACE, &isum, 1, MPI_INT64_T, MPI_SUM, comm);
    if (rc != MPI_SUCCESS)
        return api->error(call, "psum: MPI_Allreduce failed (error %d)", rc);
    return is_float ? api->return_number(call, fsum) : api->return_integer(call, isum);
}

int ippc_plugin_init(const ippc_api *api)
{
    return api->register_kernel(api, "psum", psum, "psum(a [, comm]) -> sum of a over all ranks");
}
