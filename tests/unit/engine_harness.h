/* engine_harness.h — the scaffolding the test_engine_* unit tests share:
 *   - a Lua state with the standard libraries and the `nd` module
 *     (nd_lua_state), as a cmocka fixture (lua_setup / lua_teardown);
 *   - Lua chunks that must run (lua_ok) or must fail with a message (lua_fails);
 *   - an engine runtime, rank 0 of 1, as a fixture (rt_setup / rt_teardown);
 *   - main's cmocka group run between MPI_Init_thread and MPI_Finalize
 *     (run_tests_with_mpi).
 *
 * Header-only, with static functions: each test binary is built from one .c
 * file plus the engine objects, and uses only some of these (hence unused).
 */
#ifndef IPPC_TESTS_ENGINE_HARNESS_H
#define IPPC_TESTS_ENGINE_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <lualib.h>
#include <mpi.h>

#include "nd.h"
#include "runtime.h"

#define HARNESS_FN static __attribute__((unused))

/* A fresh Lua state with the standard libraries and `nd` as a global. */
HARNESS_FN lua_State *nd_lua_state(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "nd", luaopen_nd, 1);
    lua_pop(L, 1);
    return L;
}

HARNESS_FN int lua_setup(void **state)
{
    *state = nd_lua_state();
    return 0;
}

HARNESS_FN int lua_teardown(void **state)
{
    lua_close(*state);
    return 0;
}

/* Runs Lua code that uses assert(); fails the test with Lua's message. */
HARNESS_FN void lua_ok(lua_State *L, const char *code)
{
    if (luaL_dostring(L, code) != LUA_OK)
        fail_msg("Lua error: %s\n--- in:\n%s", lua_tostring(L, -1), code);
    lua_settop(L, 0);
}

/* Runs Lua code that must raise an error mentioning needle. */
HARNESS_FN void lua_fails(lua_State *L, const char *code, const char *needle)
{
    if (luaL_dostring(L, code) == LUA_OK)
        fail_msg("expected an error from: %s", code);
    const char *msg = lua_tostring(L, -1);
    if (!msg || !strstr(msg, needle))
        fail_msg("error '%s' does not mention '%s' (code: %s)", msg ? msg : "(null)", needle, code);
    lua_settop(L, 0);
}

/* A runtime of rank 0 in a world of 1. */
HARNESS_FN int rt_setup(void **state)
{
    ippc_error err;
    runtime *rt = runtime_new(RUNTIME_LUA, 0, 1, &err);
    if (!rt)
        fail_msg("runtime_new: %s", err.message);
    *state = rt;
    return 0;
}

HARNESS_FN int rt_teardown(void **state)
{
    runtime_free(*state);
    return 0;
}

/* Runs count tests as the cmocka group name between MPI_Init_thread (at the
 * thread level required) and MPI_Finalize; returns the number that failed. */
HARNESS_FN int run_group_with_mpi(int required, const char *name, const struct CMUnitTest *tests,
                                  size_t count, CMFixtureFunction group_setup,
                                  CMFixtureFunction group_teardown)
{
    int provided;
    MPI_Init_thread(NULL, NULL, required, &provided);
    int failed = _cmocka_run_group_tests(name, tests, count, group_setup, group_teardown);
    MPI_Finalize();
    return failed;
}

/* cmocka_run_group_tests(tests, group_setup, group_teardown) inside MPI. */
#define run_tests_with_mpi(required, tests, group_setup, group_teardown)                           \
    run_group_with_mpi(required, #tests, tests, sizeof(tests) / sizeof((tests)[0]), group_setup,   \
                       group_teardown)

#endif
