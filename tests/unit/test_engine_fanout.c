/* test_engine_fanout.c — push, scatter and gather fanned out by MPI
 * (engine/fanout.h), on 4 ranks.
 *
 * Run as any unit test: main() re-executes this program under
 * `mpiexec.mpich -n 4` (MPIEXEC_TIMEOUT bounds the job) unless it already
 * runs inside an MPI job.  Every rank runs every test in the same order,
 * driving its own runtime with fabricated task messages, as the engine's
 * main loop would; checks record failures instead of stopping (a rank that
 * left a test early would leave the others waiting), and at the end of each
 * test rank 0 collects every rank's failures and fails the cmocka test with
 * them.  Only rank 0 runs cmocka, so the summary lines appear once.
 */
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <mpi.h>

#include "lmpi.h"
#include "runtime.h"
#include "value.h"

#include "interrupter.h"

#define NRANKS 4
#define FAILBUF 4096
#define REEXEC_ENV "IPPC_TEST_FANOUT_CHILD"

static int rank;
static runtime *rt;
static int64_t next_id = 1; /* every rank draws one per data op, in the same order */
static uint64_t next_task = 1;
static char failures[FAILBUF];

/* ------------------------------------------------------------ checks */

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            note(__LINE__, __VA_ARGS__);                                                           \
    } while (0)

static void note(int line, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(int line, const char *fmt, ...)
{
    size_t len = strlen(failures);
    if (len + 64 >= FAILBUF)
        return;
    int n = snprintf(failures + len, FAILBUF - len, "  rank %d, line %d: ", rank, line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(failures + len + n, FAILBUF - len - (size_t)n - 1, fmt, ap);
    va_end(ap);
    strcat(failures, "\n");
}

/* A yielding wait, as the engines': ranks that finish first do not spin. */
static void wait_req(MPI_Request *req)
{
    lmpi_wait(req, NULL);
}

static void barrier(void)
{
    MPI_Request req;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    wait_req(&req);
}

/* Ends a test on every rank: rank 0 fails it with every rank's notes. */
static void finish(void)
{
    static char all[NRANKS * FAILBUF];
    MPI_Request req;
    MPI_Igather(failures, FAILBUF, MPI_CHAR, all, FAILBUF, MPI_CHAR, 0, MPI_COMM_WORLD, &req);
    wait_req(&req);
    memset(failures, 0, sizeof failures);
    if (rank != 0)
        return;
    static char text[NRANKS * FAILBUF + 1];
    size_t len = 0;
    for (int r = 0; r < NRANKS; r++) {
        const char *mine = all + (size_t)r * FAILBUF;
        size_t n = strnlen(mine, FAILBUF - 1);
        memcpy(text + len, mine, n);
        len += n;
    }
    text[len] = 0;
    if (text[0])
        fail_msg("\n%s", text);
}

/* ------------------------------------------------------------ messages */

static json_t *fanout_of(int64_t id, const int *ranks, int n, int root)
{
    json_t *list = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(list, json_integer(ranks[i]));
    return json_pack("{s:I, s:o, s:i}", "id", (json_int_t)id, "ranks", list, "root", root);
}

/* A data-op task: members of extra (taken) plus type, task, op, fanout. */
static json_t *data_task(const char *op, int64_t id, const int *ranks, int n, int root,
                         json_t *extra)
{
    json_t *t = extra ? extra : json_object();
    json_object_set_new(t, "type", json_string("task"));
    json_object_set_new(t, "task", json_integer((json_int_t)next_task++));
    json_object_set_new(t, "op", json_string(op));
    json_object_set_new(t, "fanout", fanout_of(id, ranks, n, root));
    return t;
}

static int in(int r, const int *ranks, int n)
{
    for (int i = 0; i < n; i++)
        if (ranks[i] == r)
            return 1;
    return 0;
}

/* Runs task (taken) with blobs (taken, may be NULL); the result, whose blobs
 * land in out (may be NULL). */
static json_t *run(json_t *task, ippc_blobs *blobs, ippc_blobs *out)
{
    ippc_blobs none, scratch;
    blobs_init(&none);
    blobs_init(&scratch);
    json_t *res = runtime_run_task(rt, task, blobs ? blobs : &none, out ? out : &scratch);
    json_decref(task);
    if (blobs)
        blobs_free(blobs);
    blobs_free(&scratch);
    if (!res)
        note(__LINE__, "runtime_run_task returned NULL");
    return res;
}

static const char *str(const json_t *res, const char *key)
{
    const char *s = json_string_value(json_object_get(res, key));
    return s ? s : "";
}

/* Checks a result's status (and, for failures, ename and a piece of evalue;
 * NULL: any); a mismatch is noted against the caller's line. */
static void check_result(int line, const json_t *res, const char *status, const char *ename,
                         const char *needle)
{
    if (strcmp(str(res, "status"), status) == 0 &&
        (!ename || strcmp(str(res, "ename"), ename) == 0) &&
        (!needle || strstr(str(res, "evalue"), needle)))
        return;
    note(line, "want %s %s '%s', got %s %s: %s", status, ename ? ename : "", needle ? needle : "",
         str(res, "status"), str(res, "ename"), str(res, "evalue"));
}
#define CHECK_RESULT(res, status, ename, needle) check_result(__LINE__, res, status, ename, needle)

/* Runs Lua code that must succeed (it asserts what this rank holds). */
#define LUA_CHECK(...)                                                                             \
    do {                                                                                           \
        char code_[2048];                                                                          \
        snprintf(code_, sizeof code_, __VA_ARGS__);                                                \
        json_t *r_ = run(json_pack("{s:s, s:I, s:s, s:s}", "type", "task", "task",                 \
                                   (json_int_t)next_task++, "op", "execute", "code", code_),       \
                         NULL, NULL);                                                              \
        CHECK(r_ &&strcmp(str(r_, "status"), "ok") == 0, "Lua failed: %s\n    code: %s",           \
              str(r_, "evalue"), code_);                                                           \
        json_decref(r_);                                                                           \
    } while (0)

/* A blob of count elements of dtype whose i-th element is i + base. */
static long push_blob(ippc_blobs *b, nd_dtype dtype, size_t count, double base)
{
    size_t es = nd_dtype_size(dtype);
    void *p = malloc(count * es > 0 ? count * es : 1);
    assert_non_null(p);
    for (size_t i = 0; i < count; i++) {
        double v = (double)i + base;
        switch (dtype) {
        case ND_FLOAT64: ((double *)p)[i] = v; break;
        case ND_FLOAT32: ((float *)p)[i] = (float)v; break;
        case ND_INT64: ((int64_t *)p)[i] = (int64_t)v; break;
        case ND_INT32: ((int32_t *)p)[i] = (int32_t)v; break;
        default: ((unsigned char *)p)[i] = (unsigned char)v; break;
        }
    }
    return blobs_push(b, p, count * es);
}

static json_t *placeholder(nd_dtype dtype, int ndim, const size_t *shape, long blob)
{
    return value_nd_placeholder(dtype, ndim, shape, (size_t)blob);
}

/* ------------------------------------------------------------ interrupts */

/* Runs task while another thread interrupts the runtime from 0.5 s on. */
static json_t *run_interrupted(json_t *task)
{
    interrupter it;
    interrupter_start(&it, rt, 500);
    json_t *res = run(task, NULL, NULL);
    interrupter_stop(&it);
    return res;
}

/* ------------------------------------------------------------ push */

static const int ALL[NRANKS] = {0, 1, 2, 3};

static void test_push_all(void **state)
{
    (void)state;
    /* an array, JSON values inline, and a JSON list too big for the header */
    int64_t id = next_id++;
    json_t *task;
    ippc_blobs blobs;
    blobs_init(&blobs);
    if (rank == 2) {
        size_t n = 1000, m[2] = {3, 4};
        json_t *big = json_array();
        for (int i = 0; i < 3000; i++)
            json_array_append_new(big, json_integer(i));
        json_t *ns =
            json_pack("{s:o, s:o, s:{s:[i, i, s]}, s:i, s:s, s:o}", "a",
                      placeholder(ND_FLOAT64, 1, &n, push_blob(&blobs, ND_FLOAT64, n, 0)), "m",
                      placeholder(ND_INT32, 2, m, push_blob(&blobs, ND_INT32, 12, 100)), "j", "k",
                      1, 2, "x", "n", 42, "s", "str", "big", big);
        task = data_task("push", id, ALL, NRANKS, 2, json_pack("{s:o}", "ns", ns));
    } else {
        task =
            data_task("push", id, ALL, NRANKS, 2,
                      json_pack("{s:[s, s, s, s, s, s]}", "names", "s", "n", "m", "j", "big", "a"));
    }
    json_t *res = run(task, &blobs, NULL);
    CHECK_RESULT(res, "ok", NULL, NULL);
    CHECK(!json_object_get(res, "value"), "a push answers no value");
    json_decref(res);
    LUA_CHECK("assert(a:dtype() == 'float64' and a:size() == 1000 and a[1000] == 999)\n"
              "assert(a:sum() == 499500)\n"
              "assert(m:dtype() == 'int32' and m:shape()[1] == 3 and m:shape()[2] == 4)\n"
              "assert(m[3][4] == 111)\n"
              "assert(j.k[1] == 1 and j.k[3] == 'x' and n == 42 and math.type(n) == 'integer')\n"
              "assert(s == 'str' and #big == 3000 and big[3000] == 2999)\n");

    /* a bigger array (16 MB), root 0 */
    id = next_id++;
    size_t big_n = 2000000;
    if (rank == 0) {
        json_t *ns = json_pack(
            "{s:o}", "v",
            placeholder(ND_FLOAT64, 1, &big_n, push_blob(&blobs, ND_FLOAT64, big_n, 0.5)));
        task = data_task("push", id, ALL, NRANKS, 0, json_pack("{s:o}", "ns", ns));
    } else {
        task = data_task("push", id, ALL, NRANKS, 0, json_pack("{s:[s]}", "names", "v"));
    }
    res = run(task, &blobs, NULL);
    CHECK_RESULT(res, "ok", NULL, NULL);
    json_decref(res);
    LUA_CHECK("assert(v:size() == 2000000 and v[1] == 0.5 and v[2000000] == 1999999.5)\n"
              "assert(v:sum() == 2000000 * 1999999 / 2 + 1000000) v = nil");
    finish();
}

/* Pushes {b = int32 [3,4] (first element base), t = {x = base}} to ranks
 * with root. */
static void push_b(const int *ranks, int n, int root, int base)
{
    int64_t id = next_id++;
    if (!in(rank, ranks, n))
        return;
    ippc_blobs blobs;
    blobs_init(&blobs);
    json_t *task;
    if (rank == root) {
        size_t shape[2] = {3, 4};
        json_t *ns = json_pack(
            "{s:o, s:{s:i}}", "b",
            placeholder(ND_INT32, 2, shape, push_blob(&blobs, ND_INT32, 12, base)), "t", "x", base);
        task = data_task("push", id, ranks, n, root, json_pack("{s:o}", "ns", ns));
    } else {
        task = data_task("push", id, ranks, n, root, json_pack("{s:[s, s]}", "names", "b", "t"));
    }
    json_t *res = run(task, &blobs, NULL);
    CHECK_RESULT(res, "ok", NULL, NULL);
    json_decref(res);
}

static void check_b(const int *ranks, int n, int base)
{
    if (in(rank, ranks, n))
        LUA_CHECK("assert(b:dtype() == 'int32' and b[1][1] == %d and b[3][4] == %d and t.x == %d)",
                  base, base + 11, base);
    else
        LUA_CHECK("assert(b == nil and t == nil, 'only the targets get it')");
}

static void test_push_subset(void **state)
{
    (void)state;
    LUA_CHECK("b = nil t = nil");
    static const int odd[2] = {1, 3}, low[3] = {0, 1, 2};
    push_b(odd, 2, 3, 10);
    check_b(odd, 2, 10);
    push_b(odd, 2, 1, 20); /* the cached communicator, another root */
    check_b(odd, 2, 20);
    LUA_CHECK("b = nil t = nil");
    push_b(low, 3, 1, 30);
    check_b(low, 3, 30);
    push_b(ALL, 4, 3, 40);
    check_b(ALL, 4, 40);
    static const int one[1] = {2}; /* a fan-out to one engine works too */
    LUA_CHECK("b = nil t = nil");
    push_b(one, 1, 2, 50);
    check_b(one, 1, 50);
    finish();
}

/* ------------------------------------------------------------ scatter */

static const int COUNTS[NRANKS] = {3, 3, 2, 2}, STARTS[NRANKS] = {0, 3, 6, 8};

static json_t *counts_json(const int *counts)
{
    return json_pack("[i, i, i, i]", counts[0], counts[1], counts[2], counts[3]);
}

static void test_scatter(void **state)
{
    (void)state;
    /* 10 float64 over 4: 3, 3, 2, 2 */
    int64_t id = next_id++;
    ippc_blobs blobs;
    blobs_init(&blobs);
    size_t ten = 10, shape2[2] = {10, 2};
    json_t *extra = json_pack("{s:s, s:o}", "name", "x", "counts", counts_json(COUNTS));
    if (rank == 0)
        json_object_set_new(extra, "value",
                            placeholder(ND_FLOAT64, 1, &ten, push_blob(&blobs, ND_FLOAT64, 10, 0)));
    json_t *res = run(data_task("scatter", id, ALL, NRANKS, 0, extra), &blobs, NULL);
    CHECK_RESULT(res, "ok", NULL, NULL);
    json_decref(res);
    LUA_CHECK("assert(x:dtype() == 'float64' and x:size() == %d and x[1] == %d and x[%d] == %d)",
              COUNTS[rank], STARTS[rank], COUNTS[rank], STARTS[rank] + COUNTS[rank] - 1);

    /* rows of a 10x2 int64 array, root 1 */
    id = next_id++;
    extra = json_pack("{s:s, s:o}", "name", "x2", "counts", counts_json(COUNTS));
    if (rank == 1)
        json_object_set_new(extra, "value",
                            placeholder(ND_INT64, 2, shape2, push_blob(&blobs, ND_INT64, 20, 0)));
    res = run(data_task("scatter", id, ALL, NRANKS, 1, extra), &blobs, NULL);
    CHECK_RESULT(res, "ok", NULL, NULL);
    json_decref(res);
    LUA_CHECK("assert(x2:dtype() == 'int64' and x2:shape()[1] == %d and x2:shape()[2] == 2)\n"
              "assert(x2[1][1] == %d and x2[%d][2] == %d)",
              COUNTS[rank], 2 * STARTS[rank], COUNTS[rank], 2 * (STARTS[rank] + COUNTS[rank]) - 1);

    /* a JSON list with an array in it, root 3 */
    id = next_id++;
    extra = json_pack("{s:s, s:o}", "name", "l", "counts", counts_json(COUNTS));
    if (rank == 3) {
        size_t three = 3;
        json_object_set_new(
            extra, "value",
            json_pack("[s, i, {s:i}, o, b, f, s, s, i, i]", "a", 1, "x", 2,
                      placeholder(ND_FLOAT32, 1, &three, push_blob(&blobs, ND_FLOAT32, 3, 0)), 1,
                      2.5, "b", "c", 4, 5));
    }
    res = run(data_task("scatter", id, ALL, NRANKS, 3, extra), &blobs, NULL);
    CHECK_RESULT(res, "ok", NULL, NULL);
    json_decref(res);
    static const char *const want[NRANKS] = {
        "#l == 3 and l[1] == 'a' and l[2] == 1 and l[3].x == 2",
        "#l == 3 and l[1]:dtype() == 'float32' and l[1][3] == 2 and l[2] == true and l[3] == 2.5",
        "#l == 2 and l[1] == 'b' and l[2] == 'c'",
        "#l == 2 and l[1] == 4 and l[2] == 5",
    };
    LUA_CHECK("assert(%s)", want[rank]);

    /* counts with a zero: rank 0 gets an empty array */
    id = next_id++;
    static const int zero_first[NRANKS] = {0, 4, 3, 3};
    extra = json_pack("{s:s, s:o}", "name", "z", "counts", counts_json(zero_first));
    if (rank == 2)
        json_object_set_new(extra, "value",
                            placeholder(ND_UINT8, 1, &ten, push_blob(&blobs, ND_UINT8, 10, 0)));
    res = run(data_task("scatter", id, ALL, NRANKS, 2, extra), &blobs, NULL);
    CHECK_RESULT(res, "ok", NULL, NULL);
    json_decref(res);
    LUA_CHECK("assert(z:dtype() == 'uint8' and z:size() == %d)", zero_first[rank]);
    finish();
}

/* ------------------------------------------------------------ gather */

/* Gathers name to root over all ranks; the result (blobs in out). */
static json_t *gather(const char *name, int root, ippc_blobs *out)
{
    int64_t id = next_id++;
    return run(data_task("gather", id, ALL, NRANKS, root, json_pack("{s:s}", "name", name)), NULL,
               out);
}

static void check_nonroot_gather(const json_t *res)
{
    CHECK_RESULT(res, "ok", NULL, NULL);
    CHECK(!json_object_get(res, "value") && !json_object_get(res, "parts"),
          "a non-root answers no value");
}

/* The array placeholder at v: dtype, shape (up to 2 dims), the blob. */
static const void *array_at(const json_t *v, const ippc_blobs *blobs, const char *dtype, size_t d0,
                            size_t d1)
{
    nd_ref ref;
    ippc_error err;
    if (!v || value_nd_ref(v, blobs, &ref, &err) != 1) {
        note(__LINE__, "not an array placeholder: %s", v ? json_dumps(v, 0) : "(none)");
        return NULL;
    }
    CHECK(strcmp(nd_dtype_name(ref.dtype), dtype) == 0 && ref.shape[0] == d0 &&
              (d1 == 0 ? ref.ndim == 1 : ref.ndim == 2 && ref.shape[1] == d1),
          "array %s [%zu, %zu], want %s [%zu, %zu]", nd_dtype_name(ref.dtype), ref.shape[0],
          ref.ndim > 1 ? ref.shape[1] : 0, dtype, d0, d1);
    return blobs->items[ref.blob].data;
}

static void test_gather_concat(void **state)
{
    (void)state;
    /* lengths 1, 2, 3, 4: rank r holds 10r, 10r + 1, ... */
    LUA_CHECK("g = nd.arange(%d, 'float64') + %d", rank + 1, 10 * rank);
    ippc_blobs out;
    blobs_init(&out);
    json_t *res = gather("g", 1, &out);
    if (rank == 1) {
        CHECK_RESULT(res, "ok", NULL, NULL);
        CHECK(!json_object_get(res, "parts"), "concatenated, not parts");
        const double *d =
            array_at(json_object_get(json_object_get(res, "value"), "g"), &out, "float64", 10, 0);
        static const double want[10] = {0, 10, 11, 20, 21, 22, 30, 31, 32, 33};
        for (int i = 0; d && i < 10; i++)
            CHECK(d[i] == want[i], "g[%d] = %g, want %g", i, d[i], want[i]);
        CHECK(out.count == 1, "one blob, got %zu", out.count);
    } else {
        check_nonroot_gather(res);
    }
    json_decref(res);
    blobs_free(&out);

    /* 2-D int32 rows; rank 2's is a transposed (strided) view */
    if (rank == 2)
        LUA_CHECK("g2 = (nd.arange(6, 'int32') + 20):reshape(2, 3):T()");
    else
        LUA_CHECK("g2 = (nd.arange(6, 'int32') + %d):reshape(3, 2)", 10 * rank);
    res = gather("g2", 0, &out);
    if (rank == 0) {
        CHECK_RESULT(res, "ok", NULL, NULL);
        const int32_t *d =
            array_at(json_object_get(json_object_get(res, "value"), "g2"), &out, "int32", 12, 2);
        /* rank 2's rows are the columns of [[20 21 22] [23 24 25]]: 20 23, 21 24, 22 25 */
        static const int32_t want[24] = {0,  1,  2,  3,  4,  5,  10, 11, 12, 13, 14, 15,
                                         20, 23, 21, 24, 22, 25, 30, 31, 32, 33, 34, 35};
        for (int i = 0; d && i < 24; i++)
            CHECK(d[i] == want[i], "g2 element %d = %d, want %d", i, d[i], want[i]);
    } else {
        check_nonroot_gather(res);
    }
    json_decref(res);
    blobs_free(&out);
    finish();
}

static void test_gather_parts(void **state)
{
    (void)state;
    static const char *const values[NRANKS] = {
        "p = nd.arange(2, 'float64')",
        "p = {x = 1}",
        "p = 'str'",
        "p = nd.arange(3, 'int64') + 7",
    };
    LUA_CHECK("%s", values[rank]);
    ippc_blobs out;
    blobs_init(&out);
    json_t *res = gather("p", 2, &out);
    if (rank == 2) {
        CHECK_RESULT(res, "ok", NULL, NULL);
        json_t *parts = json_object_get(res, "parts");
        CHECK(json_array_size(parts) == NRANKS && !json_object_get(res, "value"),
              "want 4 parts and no value: %s", json_dumps(res, JSON_COMPACT));
        const double *a = array_at(json_array_get(parts, 0), &out, "float64", 2, 0);
        CHECK(a && a[1] == 1.0, "part 0");
        CHECK(json_integer_value(json_object_get(json_array_get(parts, 1), "x")) == 1, "part 1");
        CHECK(strcmp(json_string_value(json_array_get(parts, 2))
                         ? json_string_value(json_array_get(parts, 2))
                         : "",
                     "str") == 0,
              "part 2");
        const int64_t *b = array_at(json_array_get(parts, 3), &out, "int64", 3, 0);
        CHECK(b && b[2] == 9, "part 3");
        CHECK(out.count == 2, "two blobs, got %zu", out.count);
    } else {
        check_nonroot_gather(res);
    }
    json_decref(res);
    blobs_free(&out);

    /* arrays, but rank 2's dtype differs: parts, each array as it was */
    LUA_CHECK("q = nd.arange(%d, '%s')", rank + 1, rank == 2 ? "int32" : "float64");
    res = gather("q", 0, &out);
    if (rank == 0) {
        CHECK_RESULT(res, "ok", NULL, NULL);
        json_t *parts = json_object_get(res, "parts");
        CHECK(json_array_size(parts) == NRANKS, "want 4 parts");
        for (size_t i = 0; i < NRANKS; i++)
            array_at(json_array_get(parts, i), &out, i == 2 ? "int32" : "float64", i + 1, 0);
        CHECK(out.count == NRANKS, "four blobs, got %zu", out.count);
    } else {
        check_nonroot_gather(res);
    }
    json_decref(res);
    blobs_free(&out);
    finish();
}

/* ------------------------------------------------------------ errors */

static void test_gather_errors(void **state)
{
    (void)state;
    /* rank 2 has no such variable */
    LUA_CHECK("%s", rank == 2 ? "missing = nil" : "missing = nd.ones(2)");
    json_t *res = gather("missing", 0, NULL);
    if (rank == 2)
        CHECK_RESULT(res, "error", "NameError", "name 'missing' is not defined");
    else
        CHECK_RESULT(res, "error", "FanoutError", "rank 2 failed: NameError");
    json_decref(res);

    /* rank 1's value cannot be sent */
    LUA_CHECK("%s", rank == 1 ? "h = print" : "h = 1");
    res = gather("h", 3, NULL);
    if (rank == 1)
        CHECK_RESULT(res, "error", "TypeError", "cannot send a function");
    else
        CHECK_RESULT(res, "error", "FanoutError", "rank 1 failed: TypeError");
    json_decref(res);

    /* and the next one works */
    ippc_blobs out;
    blobs_init(&out);
    LUA_CHECK("h = %d", rank);
    res = gather("h", 3, &out);
    CHECK_RESULT(res, "ok", NULL, NULL);
    if (rank == 3)
        CHECK(json_array_size(json_object_get(res, "parts")) == NRANKS &&
                  json_integer_value(json_array_get(json_object_get(res, "parts"), 2)) == 2,
              "parts of numbers: %s", json_dumps(res, JSON_COMPACT));
    json_decref(res);
    blobs_free(&out);
    finish();
}

static void test_op_errors(void **state)
{
    (void)state;
    /* counts that do not add up to the items: the root says so, all end */
    int64_t id = next_id++;
    ippc_blobs blobs;
    blobs_init(&blobs);
    size_t ten = 10;
    static const int nine[NRANKS] = {3, 2, 2, 2};
    json_t *extra = json_pack("{s:s, s:o}", "name", "y", "counts", counts_json(nine));
    if (rank == 1)
        json_object_set_new(extra, "value",
                            placeholder(ND_FLOAT64, 1, &ten, push_blob(&blobs, ND_FLOAT64, 10, 0)));
    json_t *res = run(data_task("scatter", id, ALL, NRANKS, 1, extra), &blobs, NULL);
    if (rank == 1)
        CHECK_RESULT(res, "error", "ValueError", "add up to 9 items, the array has 10");
    else
        CHECK_RESULT(res, "error", "FanoutError", "rank 1 failed: ValueError");
    json_decref(res);

    /* a placeholder naming a blob the root did not get: every rank refuses it */
    id = next_id++;
    json_t *task;
    if (rank == 0)
        task = data_task("push", id, ALL, NRANKS, 0,
                         json_pack("{s:{s:{s:i, s:s, s:[i]}}}", "ns", "bad", "$nd", 0, "dtype",
                                   "float64", "shape", 4));
    else
        task = data_task("push", id, ALL, NRANKS, 0, json_pack("{s:[s]}", "names", "bad"));
    res = run(task, NULL, NULL);
    CHECK_RESULT(res, "error", "ValueError", "bad");
    json_decref(res);
    LUA_CHECK("assert(bad == nil)");

    /* rank 3 was told other names: the messages differ, every rank refuses */
    id = next_id++;
    if (rank == 0)
        task = data_task("push", id, ALL, NRANKS, 0, json_pack("{s:{s:i}}", "ns", "w", 1));
    else
        task = data_task("push", id, ALL, NRANKS, 0,
                         json_pack("{s:[s]}", "names", rank == 3 ? "zz" : "w"));
    res = run(task, NULL, NULL);
    CHECK_RESULT(res, "error", "ProtocolError", "different task messages");
    json_decref(res);
    LUA_CHECK("assert(w == nil)");

    /* a fanout whose root is not one of its ranks */
    static const int two[2] = {0, 1};
    id = next_id++;
    res = run(data_task("gather", id, two, 2, 3, json_pack("{s:s}", "name", "g")), NULL, NULL);
    CHECK_RESULT(res, "error", "ProtocolError", "'fanout.root' must be one of");
    json_decref(res);

    /* fanout with another op */
    res = run(data_task("execute", next_id++, ALL, NRANKS, 0, json_pack("{s:s}", "code", "x=1")),
              NULL, NULL);
    CHECK_RESULT(res, "error", "ProtocolError", "not 'execute'");
    json_decref(res);
    finish();
}

/* ------------------------------------------------------------ interrupts */

static json_t *push_v_task(int64_t id, int root, int value)
{
    if (rank == root)
        return data_task("push", id, ALL, NRANKS, root, json_pack("{s:{s:i}}", "ns", "v", value));
    return data_task("push", id, ALL, NRANKS, root, json_pack("{s:[s]}", "names", "v"));
}

static void test_interrupt_no_root(void **state)
{
    (void)state;
    LUA_CHECK("v = nil");
    /* ranks 1-3 wait for a root that does not come; they are interrupted */
    int64_t id = next_id++;
    json_t *late = NULL;
    if (rank == 0) {
        late = push_v_task(id, 0, 5);
    } else {
        json_t *res = run_interrupted(push_v_task(id, 0, 5));
        CHECK_RESULT(res, "aborted", "Aborted", "interrupted");
        json_decref(res);
        LUA_CHECK("assert(v == nil)");
    }
    barrier();
    /* the root comes after all: the op is over, it learns why */
    if (rank == 0) {
        json_t *res = run(late, NULL, NULL);
        CHECK_RESULT(res, "aborted", "Aborted", "interrupted on rank 1");
        json_decref(res);
    }
    barrier();
    /* and the engines go on */
    json_t *res = run(push_v_task(next_id++, 0, 6), NULL, NULL);
    CHECK_RESULT(res, "ok", NULL, NULL);
    json_decref(res);
    LUA_CHECK("assert(v == 6)");
    finish();
}

static void test_interrupt_root(void **state)
{
    (void)state;
    /* rank 3 does not come; the root (0) is interrupted, 1 and 2 are told */
    int64_t id = next_id++;
    json_t *late = NULL, *res;
    if (rank == 3) {
        late = push_v_task(id, 0, 7);
    } else {
        res = rank == 0 ? run_interrupted(push_v_task(id, 0, 7))
                        : run(push_v_task(id, 0, 7), NULL, NULL);
        CHECK_RESULT(res, "aborted", "Aborted",
                     rank == 0 ? "task interrupted" : "interrupted on rank 0");
        json_decref(res);
    }
    barrier();
    if (rank == 3) {
        res = run(late, NULL, NULL);
        CHECK_RESULT(res, "aborted", "Aborted", "interrupted on rank 0");
        json_decref(res);
    }
    LUA_CHECK("assert(v == 6, 'unchanged')");
    /* a non-root interrupted after the root arrived: the root waits for its
     * answer, gets WITHDRAW, and everyone ends */
    id = next_id++;
    if (rank == 2) {
        res = run_interrupted(push_v_task(id, 1, 8));
        CHECK_RESULT(res, "aborted", "Aborted", "task interrupted");
        json_decref(res);
    }
    barrier();
    /* the others come after rank 2 left */
    if (rank != 2) {
        res = run(push_v_task(id, 1, 8), NULL, NULL);
        CHECK_RESULT(res, "aborted", "Aborted", "interrupted on rank 2");
        json_decref(res);
    }
    res = run(push_v_task(next_id++, 3, 9), NULL, NULL);
    CHECK_RESULT(res, "ok", NULL, NULL);
    json_decref(res);
    LUA_CHECK("assert(v == 9)");
    finish();
}

/* ------------------------------------------------------------ communicators */

static void test_cache_eviction(void **state)
{
    (void)state;
    /* A runtime whose cache holds 2 communicators: rank 1 takes part in
     * every op below and evicts more than the others, so their caches
     * differ; each op must still agree on one communicator. */
    runtime *keep = rt;
    setenv("IPPC_FANOUT_CACHE", "2", 1);
    ippc_error err;
    rt = runtime_new(RUNTIME_LUA, rank, NRANKS, &err);
    unsetenv("IPPC_FANOUT_CACHE");
    CHECK(rt != NULL, "runtime_new: %s", err.message);
    if (rt) {
        static const int a[2] = {0, 1}, b[2] = {1, 2}, c[3] = {1, 2, 3}, d[2] = {1, 3};
        const int *sets[] = {a, b, a, c, d, a, ALL, b, a, d, c, a};
        const int sizes[] = {2, 2, 2, 3, 2, 2, 4, 2, 2, 2, 3, 2};
        for (int i = 0; i < (int)(sizeof sizes / sizeof sizes[0]); i++) {
            push_b(sets[i], sizes[i], sets[i][sizes[i] - 1], 100 + i);
            check_b(sets[i], sizes[i], 100 + i);
            LUA_CHECK("b = nil t = nil");
        }
        runtime_free(rt);
    }
    rt = keep;
    finish();
}

/* ------------------------------------------------------------ main */

/* Not inside an MPI job: run this program as 4 ranks of one. */
static int reexec_under_mpiexec(char **argv)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || getenv(REEXEC_ENV)) {
        fprintf(stderr, "test_engine_fanout: cannot start under mpiexec.mpich\n");
        return 1;
    }
    self[n] = 0;
    setenv(REEXEC_ENV, "1", 1);
    setenv("MPIEXEC_TIMEOUT", "150", 0);
    char np[8];
    snprintf(np, sizeof np, "%d", NRANKS);
    char *args[] = {"mpiexec.mpich", "-n", np, self, NULL};
    (void)argv;
    execvp(args[0], args);
    perror("test_engine_fanout: mpiexec.mpich");
    return 1;
}

int main(int argc, char **argv)
{
    if (!getenv("PMI_RANK") && !getenv("PMI_FD") && !getenv(REEXEC_ENV))
        return reexec_under_mpiexec(argv);
    int provided, size = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != NRANKS) {
        if (rank == 0)
            printf("[  FAILED  ] 1 test(s), listed below:\n[  FAILED  ] test_engine_fanout needs "
                   "%d ranks, got %d\n",
                   NRANKS, size);
        MPI_Finalize();
        return 1;
    }
    ippc_error err;
    rt = runtime_new(RUNTIME_LUA, rank, size, &err);
    if (!rt) {
        fprintf(stderr, "rank %d: runtime_new: %s\n", rank, err.message);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_all),       cmocka_unit_test(test_push_subset),
        cmocka_unit_test(test_scatter),        cmocka_unit_test(test_gather_concat),
        cmocka_unit_test(test_gather_parts),   cmocka_unit_test(test_gather_errors),
        cmocka_unit_test(test_op_errors),      cmocka_unit_test(test_interrupt_no_root),
        cmocka_unit_test(test_interrupt_root), cmocka_unit_test(test_cache_eviction),
    };
    int failed = 0;
    setvbuf(stdout, NULL, _IOLBF, 0); /* cmocka's lines in order with its errors */
    if (rank == 0) {
        failed = cmocka_run_group_tests(tests, NULL, NULL);
    } else {
        for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
            tests[i].test_func(NULL);
    }
    runtime_free(rt);
    MPI_Finalize();
    return failed;
}
