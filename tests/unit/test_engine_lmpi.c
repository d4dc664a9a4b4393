/* test_engine_lmpi.c — the `mpi` module on one rank (the multi-rank
 * behaviour is tests/integration/test_runtime.py): every function and value
 * kind, communicator objects, requests, errors, interrupts of a blocked
 * recv and of a request wait, and messages that did not come from the
 * module. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <lualib.h>
#include <mpi.h>

#include "lmpi.h"
#include "nd.h"

#include "engine_harness.h"

static atomic_int flag;

static int setup(void **state)
{
    atomic_store(&flag, 0);
    lua_State *L = nd_lua_state();
    lmpi_open(L, &flag);
    lua_setglobal(L, "mpi");
    *state = L;
    return 0;
}

static void test_basics(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "assert(mpi.rank() == 0 and mpi.size() == 1 and mpi.wtime() > 0)\n"
              "assert(tostring(mpi.COMM_WORLD) == 'mpi communicator (rank 0 of 1)')\n"
              "assert(mpi.COMM_WORLD:rank() == 0 and mpi.COMM_WORLD:size() == 1)\n"
              "mpi.barrier() mpi.COMM_WORLD:barrier()\n");
}

static void test_reductions(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "local r = mpi.allreduce(5, 'max') assert(r == 5 and math.type(r) == 'integer')\n"
              "assert(math.type(mpi.allreduce(2.5)) == 'float')\n"
              "assert(mpi.allreduce(true, 'land') == true and mpi.allreduce(0, 'lor') == false)\n"
              "assert(mpi.allreduce(2, 'land') == true, 'non-zero is true')\n"
              "local t = mpi.allreduce({1, 2.5, 3}, 'prod')\n"
              "assert(t[1] == 1 and math.type(t[1]) == 'integer' and t[2] == 2.5)\n"
              "assert(#mpi.allreduce({}) == 0)\n"
              "for _, dt in ipairs({'float64', 'float32', 'int64', 'int32', 'uint8'}) do\n"
              "  local a = nd.arange(4, dt)\n"
              "  for _, op in ipairs({'sum', 'prod', 'min', 'max'}) do\n"
              "    local r = mpi.allreduce(a, op)\n"
              "    assert(r:dtype() == dt and #r == 4 and r[4] == 3 and r ~= a)\n"
              "  end\n"
              "end\n"
              "local m = nd.arange(6, 'int32'):reshape(2, 3)\n"
              "local r = mpi.allreduce(m:T(), 'lor') assert(r:shape()[1] == 3 and r[1][2] == 1)\n"
              "assert(mpi.reduce(7, 'sum', 0) == 7 and mpi.reduce(nd.ones(2))[2] == 1.0)\n"
              "local c = mpi.COMM_WORLD:allreduce(3) assert(c == 3)\n");
    lua_fails(L, "mpi.allreduce(1, 'avg')", "invalid option 'avg'");
    lua_fails(L, "mpi.allreduce('x')", "table of numbers or nd array expected");
    lua_fails(L, "mpi.allreduce({1, 'x'})", "a table of numbers");
    lua_fails(L, "mpi.allreduce(true)", "booleans reduce with 'land' or 'lor' only");
    lua_fails(L, "mpi.allreduce(nd.ones(2), 'land')", "integer or uint8 array");
    lua_fails(L, "mpi.reduce(1, 'sum', 1)", "root 1 is not a rank");
}

static void test_collectives(void **state)
{
    lua_State *L = *state;
    lua_ok(
        L,
        "local t = {x = {1, 2}, a = nd.arange(3), s = 'a\\0b'}\n"
        "assert(mpi.bcast(t) == t, 'the root gets its own object')\n"
        "assert(mpi.bcast(nil) == nil and mpi.bcast(7) == 7)\n"
        "local g = mpi.gather({1, nd.ones(2)})\n"
        "assert(#g == 1 and g[1][1] == 1 and g[1][2]:sum() == 2)\n"
        "local ag = mpi.allgather('s') assert(#ag == 1 and ag[1] == 's')\n"
        "local strided = mpi.allgather(nd.arange(6):reshape(2, 3):T())[1]\n"
        "assert(strided:shape()[1] == 3 and strided[1][2] == 3, 'sent row-major')\n"
        "assert(mpi.scatter({{k = 'v'}}).k == 'v' and mpi.scatter({nd.full(2, 9)})[2] == 9)\n"
        "assert(mpi.alltoall({true})[1] == true and mpi.alltoall({nd.zeros(0)})[1]:size() == 0)\n"
        "assert(mpi.gather(nil)[1] == nil and mpi.allgather(false)[1] == false)\n"
        "assert(mpi.bcast(1/0) == math.huge and mpi.gather(-0.0)[1] == 0)\n");
    lua_fails(L, "mpi.bcast(print)", "cannot send a function value");
    lua_fails(L, "mpi.gather(coroutine.create(print))", "cannot send a thread value");
    lua_fails(L, "mpi.scatter({1, 2})", "exactly 1 items");
    lua_fails(L, "mpi.scatter(5)", "got number");
    lua_fails(L, "mpi.alltoall({})", "exactly 1 items");
    lua_fails(L, "mpi.bcast(1, 3)", "root 3 is not a rank");
    lua_fails(L, "mpi.bcast({f = print})", "cannot send a function");
    lua_ok(L, "assert(mpi.allreduce(1) == 1, 'still usable')");
}

static void test_point_to_point(void **state)
{
    lua_State *L = *state;
    lua_ok(
        L,
        "local q = mpi.isend({hello = 'world', a = nd.arange(4, 'uint8')}, 0, 3)\n"
        "local v, src, tag = mpi.recv(0, 3)\n"
        "q:wait()\n"
        "assert(v.hello == 'world' and v.a:dtype() == 'uint8' and v.a[4] == 3)\n"
        "assert(src == 0 and tag == 3)\n"
        "local big = nd.random(2 * 1024 * 1024, 1)  -- 16 MiB: rendezvous, not eager\n"
        "local q2 = mpi.isend(big, 0, 4)\n"
        "local got = mpi.recv(nil, 4) q2:wait()\n"
        "assert(got:size() == big:size() and got:eq(big):sum() == big:size())\n"
        "local a, b = mpi.isend('first', 0, 5), mpi.isend('second', 0, 5)\n"
        "assert(mpi.recv(0, 5) == 'first' and mpi.recv(0, 5) == 'second', 'in order')\n"
        "a:wait() b:wait()\n"
        "local q3 = mpi.isend(1, 0, 6) local q4 = mpi.isend(2, 0, 7)\n"
        "local v7, _, t7 = mpi.recv(nil, 7) local v6 = mpi.recv()\n"
        "assert(v7 == 2 and t7 == 7 and v6 == 1, 'tags select')\n"
        "mpi.waitall({q3, q4})\n"
        "assert(mpi.sendrecv(nd.full(3, 1.5), 0, 0)[3] == 1.5)\n"
        "assert(mpi.sendrecv('x', 0, nil, 8, 8) == 'x')\n"
        "local r = mpi.irecv(0, 9)\n"
        "local done, val = r:test() assert(done == false and val == nil)\n"
        "assert(tostring(r):find('irecv'))\n"
        "local s = mpi.isend({1, 2}, 0, 9)\n"
        "assert(r:wait()[2] == 2 and s:wait() == nil)\n"
        "local d2, v2 = r:test() assert(d2 and v2[1] == 1, 'a done request keeps its value')\n"
        "local vals = mpi.waitall({mpi.irecv(0, 10), mpi.isend('w', 0, 10)})\n"
        "assert(vals[1] == 'w' and vals[2] == nil)\n"
        "local q5 = mpi.isend(print, 0, 11)\n"
        "local ok, e = pcall(mpi.recv, 0, 11) assert(not ok and e:find('cannot send a function'))\n"
        "local ok2, e2 = pcall(q5.wait, q5) assert(not ok2 and e2:find('cannot send a function'))\n"
        "local q6 = mpi.COMM_WORLD:isend(5, 0)\n"
        "assert(mpi.COMM_WORLD:recv(0) == 5) q6:wait()\n"
        "local dropped = mpi.isend(nd.ones(10), 0, 12) dropped = nil collectgarbage()\n"
        "assert(mpi.recv(0, 12):sum() == 10, 'a collected isend still delivers')\n");
    lua_fails(L, "mpi.send(1, 1)", "dest 1 is not a rank");
    lua_fails(L, "mpi.send(1)", "dest rank expected");
    lua_fails(L, "mpi.send(1, 0, -1)", "tag must be in 0..");
    lua_fails(L, "mpi.recv(2)", "source 2 is not a rank");
}

static void test_comm_split(void **state)
{
    lua_State *L = *state;
    lua_ok(L, "local s = mpi.comm_split(3)\n"
              "assert(s:size() == 1 and s:rank() == 0 and s:allreduce(4) == 4)\n"
              "assert(s:bcast('x') == 'x' and s:gather(1)[1] == 1)\n"
              "local q = s:isend('in sub', 0, 1) assert(s:recv(0, 1) == 'in sub') q:wait()\n"
              "local ss = s:split(0) assert(ss:size() == 1) ss:free()\n"
              "s:free() assert(tostring(s) == 'mpi communicator (freed)')\n"
              "local ok, e = pcall(s.rank, s) assert(not ok and e:find('freed'))\n"
              "local keep = mpi.comm_split(0, 5) keep = nil collectgarbage()\n");
    lua_fails(L, "mpi.comm_split(-1)", "color must be a non-negative integer");
    lua_fails(L, "mpi.comm_split('x')", "number expected");
    lua_fails(L, "mpi.COMM_WORLD.rank(5)", "ippc.mpi.comm expected");
}

/* ---- interrupts */

static void *raise_flag_later(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 200000000};
    nanosleep(&ts, NULL);
    atomic_store(&flag, 1);
    return NULL;
}

static void interrupted(lua_State *L, const char *code)
{
    pthread_t t;
    atomic_store(&flag, 0);
    assert_int_equal(pthread_create(&t, NULL, raise_flag_later, NULL), 0);
    lua_fails(L, code, "interrupted");
    pthread_join(t, NULL);
    atomic_store(&flag, 0);
}

static void test_interrupts(void **state)
{
    lua_State *L = *state;
    interrupted(L, "mpi.recv(0, 20)");
    interrupted(L, "mpi.irecv(0, 21):wait()");
    interrupted(L, "mpi.sendrecv(1, 0, 0, 22, 23)");
    /* a set flag stops a collective before it starts */
    atomic_store(&flag, 1);
    lua_fails(L, "mpi.barrier()", "interrupted");
    lua_fails(L, "mpi.allreduce(1)", "interrupted");
    atomic_store(&flag, 0);
    /* nothing left behind: the messages of those calls arrive where asked */
    lua_ok(L, "local q = mpi.isend('later', 0, 20) assert(mpi.recv(0, 20) == 'later') q:wait()\n"
              "assert(mpi.recv(0, 22) == 1, 'the interrupted sendrecv still sent')\n"
              "assert(mpi.allreduce(2) == 2)\n");
}

static void test_foreign_messages(void **state)
{
    lua_State *L = *state;
    MPI_Comm world = lmpi_world(L);
    assert_true(world != MPI_COMM_NULL);
    /* nonblocking sends: a blocking send to oneself need not complete */
    MPI_Request req[3];
    int small = 7;
    MPI_Isend(&small, 1, MPI_INT, 0, 30, world, &req[0]);
    lua_fails(L, "mpi.recv(0, 30)", "not an mpi module value");
    int64_t garbage[16];
    memset(garbage, 0x5a, sizeof garbage);
    MPI_Isend(garbage, 16, MPI_INT64_T, 0, 31, world, &req[1]);
    lua_fails(L, "mpi.recv(0, 31)", "malformed value");
    int64_t nd_hdr[12] = {7 /* PK_ND */, 0, 1, 1000, 125};
    MPI_Isend(nd_hdr, 12, MPI_INT64_T, 0, 32, world, &req[2]); /* announces 1000 bytes, has none */
    lua_fails(L, "mpi.recv(0, 32)", "malformed value");
    for (int i = 0; i < 3; i++)
        MPI_Wait(&req[i], MPI_STATUS_IGNORE);
    lua_ok(L, "local q = mpi.isend(1, 0, 33) assert(mpi.recv(0, 33) == 1) q:wait()");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_basics, setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_reductions, setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_collectives, setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_point_to_point, setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_comm_split, setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_interrupts, setup, lua_teardown),
        cmocka_unit_test_setup_teardown(test_foreign_messages, setup, lua_teardown),
    };
    return run_tests_with_mpi(MPI_THREAD_MULTIPLE, tests, NULL, NULL);
}
