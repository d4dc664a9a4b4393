/* lmpi_reduce.c — mpi.reduce and mpi.allreduce.
 *
 * nd arrays reduce as MPI's own types and ops, in place in a new array
 * (MPI_IN_PLACE), with no Lua table in between.  Numbers, booleans and
 * sequences of them reduce as "cells" {kind, integer, float} with
 * user-defined MPI ops: one collective whatever the ranks passed, and the
 * result is exact for integers and a float as soon as one rank's value is a
 * float — so mpi.allreduce(1) on some ranks and mpi.allreduce(0.5) on others
 * still adds up, as it would in Lua.  land/lor give booleans (a number counts
 * as true when non-zero, as in C and MPI).
 */
#include "lmpi_impl.h"

#include <math.h>
#include <string.h>

enum { OP_SUM, OP_PROD, OP_MIN, OP_MAX, OP_LAND, OP_LOR, OP_COUNT };
static const char *const op_names[] = {"sum", "prod", "min", "max", "land", "lor", NULL};

/* ---------------------------------------------------------- cells */

enum { CELL_INT = 1, CELL_FLOAT, CELL_BOOL };

typedef struct lmpi_cell {
    int64_t kind;
    int64_t i;
    double f;
} lmpi_cell;

static MPI_Datatype cell_type = MPI_DATATYPE_NULL;
static MPI_Op cell_ops[OP_COUNT];

static int cell_truth(const lmpi_cell *c)
{
    return c->kind == CELL_FLOAT ? c->f != 0 : c->i != 0;
}

static double cell_float(const lmpi_cell *c)
{
    return c->kind == CELL_FLOAT ? c->f : (double)c->i;
}

static void cell_combine(int op, const lmpi_cell *in, lmpi_cell *io)
{
    if (op == OP_LAND || op == OP_LOR) {
        int v = op == OP_LAND ? cell_truth(in) && cell_truth(io) : cell_truth(in) || cell_truth(io);
        *io = (lmpi_cell){CELL_BOOL, v, 0};
        return;
    }
    if (in->kind == CELL_INT && io->kind == CELL_INT) {
        uint64_t a = (uint64_t)in->i, b = (uint64_t)io->i; /* wraps, as Lua */
        switch (op) {
        case OP_SUM: io->i = (int64_t)(a + b); break;
        case OP_PROD: io->i = (int64_t)(a * b); break;
        case OP_MIN: io->i = in->i < io->i ? in->i : io->i; break;
        default: io->i = in->i > io->i ? in->i : io->i; break;
        }
        return;
    }
    double a = cell_float(in), b = cell_float(io), r;
    switch (op) {
    case OP_SUM: r = a + b; break;
    case OP_PROD: r = a * b; break;
    case OP_MIN: r = isnan(a) || isnan(b) ? NAN : (a < b ? a : b); break;
    default: r = isnan(a) || isnan(b) ? NAN : (a > b ? a : b); break;
    }
    *io = (lmpi_cell){CELL_FLOAT, 0, r};
}

#define CELL_OP_FN(NAME, OP)                                                                       \
    static void NAME(void *in, void *io, int *len, MPI_Datatype *type)                             \
    {                                                                                              \
        (void)type;                                                                                \
        for (int k = 0; k < *len; k++)                                                             \
            cell_combine(OP, (const lmpi_cell *)in + k, (lmpi_cell *)io + k);                      \
    }
CELL_OP_FN(cell_sum, OP_SUM)
CELL_OP_FN(cell_prod, OP_PROD)
CELL_OP_FN(cell_min, OP_MIN)
CELL_OP_FN(cell_max, OP_MAX)
CELL_OP_FN(cell_land, OP_LAND)
CELL_OP_FN(cell_lor, OP_LOR)

/* Frees the cell type and ops when MPI_Finalize deletes MPI_COMM_SELF's
 * attributes (the first thing it does). */
static int cells_free(MPI_Comm comm, int keyval, void *value, void *extra)
{
    (void)comm, (void)value, (void)extra;
    for (int k = 0; k < OP_COUNT; k++)
        if (cell_ops[k] != MPI_OP_NULL)
            MPI_Op_free(&cell_ops[k]);
    if (cell_type != MPI_DATATYPE_NULL)
        MPI_Type_free(&cell_type);
    MPI_Comm_free_keyval(&keyval);
    return MPI_SUCCESS;
}

/* The cell datatype and ops, made once per process (local calls). */
static void cells_init(lua_State *L)
{
    if (cell_type != MPI_DATATYPE_NULL)
        return;
    int keyval;
    lmpi_check(L, MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, cells_free, &keyval, NULL),
               "allreduce");
    lmpi_check(L, MPI_Comm_set_attr(MPI_COMM_SELF, keyval, NULL), "allreduce");
    MPI_User_function *fns[OP_COUNT] = {cell_sum, cell_prod, cell_min,
                                        cell_max, cell_land, cell_lor};
    for (int k = 0; k < OP_COUNT; k++)
        lmpi_check(L, MPI_Op_create(fns[k], 1, &cell_ops[k]), "allreduce");
    MPI_Datatype t;
    lmpi_check(L, MPI_Type_contiguous(3, MPI_INT64_T, &t), "allreduce");
    lmpi_check(L, MPI_Type_commit(&t), "allreduce");
    cell_type = t;
}

/* Reads the number or boolean at idx into c; 0 if it is neither. */
static int cell_read(lua_State *L, int idx, int op, lmpi_cell *c)
{
    if (lua_type(L, idx) == LUA_TBOOLEAN) {
        if (op != OP_LAND && op != OP_LOR)
            luaL_error(L, "mpi: booleans reduce with 'land' or 'lor' only");
        *c = (lmpi_cell){CELL_BOOL, lua_toboolean(L, idx), 0};
        return 1;
    }
    if (lua_type(L, idx) != LUA_TNUMBER)
        return 0;
    if (lua_isinteger(L, idx))
        *c = (lmpi_cell){CELL_INT, (int64_t)lua_tointeger(L, idx), 0};
    else
        *c = (lmpi_cell){CELL_FLOAT, 0, (double)lua_tonumber(L, idx)};
    return 1;
}

/* One rank's value is never combined (MPI skips the op with one rank), so
 * land/lor results are made booleans here too. */
static void cell_push(lua_State *L, const lmpi_cell *c, int op)
{
    if (op == OP_LAND || op == OP_LOR)
        lua_pushboolean(L, cell_truth(c));
    else if (c->kind == CELL_BOOL)
        lua_pushboolean(L, c->i != 0);
    else if (c->kind == CELL_INT)
        lua_pushinteger(L, (lua_Integer)c->i);
    else
        lua_pushnumber(L, c->f);
}

/* Reduces the number, boolean or sequence at x; pushes the result (nil
 * off the root of a reduce). */
static int reduce_cells(lua_State *L, const lmpi_call *c, int x, int op, int root, const char *what)
{
    cells_init(L);
    int is_table = lua_type(L, x) == LUA_TTABLE;
    size_t n = is_table ? (size_t)lua_rawlen(L, x) : 1;
    lmpi_op *mo = lmpi_op_push(L);
    int opi = lua_gettop(L);
    lmpi_cell *cells = lmpi_op_alloc(L, mo, (n ? n : 1) * sizeof *cells);
    for (size_t i = 0; i < n; i++) {
        if (is_table)
            lua_rawgeti(L, x, (lua_Integer)i + 1);
        if (!cell_read(L, is_table ? -1 : x, op, &cells[i]))
            luaL_error(L, "mpi.%s: %s expected", what,
                       is_table ? "a table of numbers (or booleans)"
                                : "a number, boolean, table of numbers or nd array");
        if (is_table)
            lua_pop(L, 1);
    }
    MPI_Request req;
    int is_root = root < 0 || root == c->cs->rank;
    if (root < 0)
        lmpi_check(
            L,
            MPI_Iallreduce(MPI_IN_PLACE, cells, (int)n, cell_type, cell_ops[op], c->cs->comm, &req),
            what);
    else
        lmpi_check(L,
                   MPI_Ireduce(is_root ? MPI_IN_PLACE : cells, is_root ? cells : NULL, (int)n,
                               cell_type, cell_ops[op], root, c->cs->comm, &req),
                   what);
    lmpi_wait_op(L, c, &req, opi, 1, what);
    if (!is_root) {
        lua_pushnil(L);
        return 1;
    }
    if (!is_table) {
        cell_push(L, &cells[0], op);
        return 1;
    }
    lua_createtable(L, (int)(n < INT32_MAX ? n : 0), 0);
    for (size_t i = 0; i < n; i++) {
        cell_push(L, &cells[i], op);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* ---------------------------------------------------------- arrays */

MPI_Datatype lmpi_nd_type(nd_dtype t)
{
    switch (t) {
    case ND_FLOAT64: return MPI_DOUBLE;
    case ND_FLOAT32: return MPI_FLOAT;
    case ND_INT64: return MPI_INT64_T;
    case ND_INT32: return MPI_INT32_T;
    case ND_UINT8: return MPI_UINT8_T;
    default: return MPI_DATATYPE_NULL;
    }
}

/* Elements become 0 or 1 (non-zero is true), in place; integer dtypes. */
static void nd_truth_in_place(nd_array *a)
{
    size_t n = nd_count(a);
    switch (nd_dtype_of(a)) {
#define TRUTH_CASE(TAG, T)                                                                         \
    case TAG: {                                                                                    \
        T *p = nd_data(a); /* NOLINT(bugprone-macro-parentheses): T is a type */                   \
        for (size_t i = 0; i < n; i++)                                                             \
            p[i] = p[i] != 0;                                                                      \
        break;                                                                                     \
    }
        TRUTH_CASE(ND_INT64, int64_t)
        TRUTH_CASE(ND_INT32, int32_t)
        TRUTH_CASE(ND_UINT8, uint8_t)
#undef TRUTH_CASE
    default: break;
    }
}

static int reduce_nd(lua_State *L, const lmpi_call *c, int x, int op, int root, const char *what)
{
    static const MPI_Op mpi_ops[OP_COUNT] = {MPI_SUM, MPI_PROD, MPI_MIN,
                                             MPI_MAX, MPI_LAND, MPI_LOR};
    nd_array *a = nd_test(L, x);
    nd_dtype t = nd_dtype_of(a);
    if ((op == OP_LAND || op == OP_LOR) && (t == ND_FLOAT64 || t == ND_FLOAT32))
        return luaL_error(L, "mpi.%s: '%s' needs an integer or uint8 array, not %s", what,
                          op_names[op], nd_dtype_name(t));
    lmpi_op *mo = lmpi_op_push(L);
    int opi = lua_gettop(L);
    int is_root = root < 0 || root == c->cs->rank;
    void *buf;
    if (is_root) { /* the result, reduced in place */
        nd_array *r = nd_push_new(L, t, nd_ndim(a), nd_shape(a));
        nd_copy_out(a, nd_data(r));
        lmpi_op_keep(L, mo, nd_buffer_of(r));
        buf = nd_data(r);
    } else {
        nd_array *src = nd_push_contiguous(L, x);
        lmpi_op_keep(L, mo, nd_buffer_of(src));
        buf = nd_data(src);
    }
    MPI_Request req;
    MPI_Count n = (MPI_Count)nd_count(a);
    if (root < 0)
        lmpi_check(
            L,
            MPI_Iallreduce_c(MPI_IN_PLACE, buf, n, lmpi_nd_type(t), mpi_ops[op], c->cs->comm, &req),
            what);
    else
        lmpi_check(L,
                   MPI_Ireduce_c(is_root ? MPI_IN_PLACE : buf, is_root ? buf : NULL, n,
                                 lmpi_nd_type(t), mpi_ops[op], root, c->cs->comm, &req),
                   what);
    lmpi_wait_op(L, c, &req, opi, 1, what);
    if (!is_root) {
        lua_pushnil(L);
        return 1;
    }
    if ((op == OP_LAND || op == OP_LOR) && c->cs->size == 1) /* MPI skips the op */
        nd_truth_in_place(nd_test(L, -1));
    return 1;
}

/* ---------------------------------------------------------- entry points */

static int reduce_any(lua_State *L, int all)
{
    const char *what = all ? "allreduce" : "reduce";
    lmpi_call c = lmpi_begin(L, 1);
    int x = c.arg;
    int op = luaL_checkoption(L, x + 1, "sum", op_names);
    int root = all ? -1 : lmpi_check_rank(L, &c, x + 2, 0, 0, "root");
    lua_settop(L, x + 2);
    if (nd_test(L, x))
        return reduce_nd(L, &c, x, op, root, what);
    int t = lua_type(L, x);
    if (t != LUA_TNUMBER && t != LUA_TBOOLEAN && t != LUA_TTABLE)
        return luaL_typeerror(L, x, "number, boolean, table of numbers or nd array");
    return reduce_cells(L, &c, x, op, root, what);
}

/* mpi.allreduce(x [, op]) */
static int l_allreduce(lua_State *L)
{
    return reduce_any(L, 1);
}

/* mpi.reduce(x [, op [, root]]) */
static int l_reduce(lua_State *L)
{
    return reduce_any(L, 0);
}

const luaL_Reg lmpi_reduce_funcs[] = {
    {"allreduce", l_allreduce},
    {"reduce", l_reduce},
    {NULL, NULL},
};
