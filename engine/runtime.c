/* runtime.c — the engine's Lua runtime (see runtime.h).
 *
 * One lua_State; its global table is the user namespace.  A task runs as
 * follows: clear the interrupt, run task_main under lua_pcall (so that even a
 * Lua memory error inside our own glue becomes a result, never a crash), and
 * inside it run the user's function under a second lua_pcall whose message
 * handler records the traceback.  Everything task_main builds in C memory
 * hangs off the task_ctx first, so a Lua error unwinding through it leaks
 * nothing.  Namespace reads and writes are raw (a metatable on _G is not
 * consulted), like Lua's own globals access is for the host.
 *
 * Interrupts: runtime_interrupt (any thread) sets rt->interrupt and installs
 * a count hook on the main state and on the coroutine that is running, if
 * any; the hook raises "interrupted".  lua_sethook is documented as safe
 * from other threads and from signal handlers, and runtime_interrupt only
 * adds lock-free atomics, so it is async-signal-safe too (engine/main.c calls
 * it from its SIGTERM handler).  A hook belongs to one lua_State, so
 * coroutine.resume and coroutine.wrap are replaced by versions that publish
 * which state runs (rt->running).  An interrupt counts itself in rt->busy
 * while it uses that pointer, and rt_leave waits for busy == 0 after
 * unpublishing a coroutine, so an interrupt never hooks a coroutine that may
 * already be collected.  Code that waits in C (MPI) polls the flag itself
 * (lmpi.c).  The flag and the main hook are cleared when a task starts;
 * hooks left on coroutines see a clear flag and do nothing.
 *
 * Output: print, io.write, io.stdout and io.output() write into the task's
 * stdout buffer (capped at RT_STDOUT_CAP); nothing reaches the real stdout.
 * When a sink is set (runtime_set_stdout_sink) the new part is handed to it
 * at the end of those calls, rate-limited (rt_stream), and once more before
 * the result is built.
 * pcall and xpcall re-raise errors once the interrupt flag is set, so user
 * code cannot swallow an interrupt.  load/loadfile/dofile accept text chunks
 * only, like the tasks' own chunks.
 * os.exit raises instead of ending the engine.
 *
 * The namespace ops (load, reset, delete, list) are in runtime_ns.c, the
 * data ops fanned out by MPI (a task with "fanout") in fanout*.c; the
 * task_ctx they share with the ops here is in runtime_impl.h.  After every
 * task nd's cache of big blocks is trimmed, so an idle engine holds none.
 */
#include "runtime.h"

#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>

#include "buf.h"
#include "fanout.h"
#include "lmpi.h"
#include "luavalue.h"
#include "nd.h"
#include "plugin.h"
#include "runtime_class.h"
#include "runtime_impl.h"
#include "task.h"
#include "taskout.h"

#define RT_HOOK_COUNT 1000

typedef struct lua_runtime {
    runtime base; /* first: the runtime * of runtime.h (runtime_class.h) */
    lua_State *L;
    int rank, size;
    atomic_int interrupt;
    _Atomic(lua_State *) running; /* the coroutine being resumed, or L */
    atomic_int busy;              /* interrupts currently using running */
    taskout out;                  /* the running task's stdout, streamed */
    int output_redirected;        /* io.output(file) was called: io.write goes there */
    fanout *fan;                  /* data ops fanned out by MPI (fanout.h) */
} lua_runtime;

static lua_runtime *rt_of(lua_State *L)
{
    return *(lua_runtime **)lua_getextraspace(L);
}

/* ---------------------------------------------------------- interrupt */

static void rt_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (atomic_load(&rt_of(L)->interrupt)) {
        lua_pushliteral(L, "interrupted");
        lua_error(L);
    }
}

static void rt_set_hook(lua_State *L)
{
    lua_sethook(L, rt_hook, LUA_MASKCOUNT, RT_HOOK_COUNT);
}

static void lua_rt_interrupt(runtime *base)
{
    lua_runtime *rt = (lua_runtime *)base;
    /* Flag first: rt_enter publishes then reads the flag, we set the flag
     * then read what is published (all seq_cst), so a coroutine starting
     * right now is hooked by one side or the other. */
    atomic_store(&rt->interrupt, 1);
    rt_set_hook(rt->L);
    atomic_fetch_add(&rt->busy, 1);
    lua_State *running = atomic_load(&rt->running);
    if (running && running != rt->L)
        rt_set_hook(running);
    atomic_fetch_sub(&rt->busy, 1);
}

/* Publishes that co is about to run; returns what ran before. */
static lua_State *rt_enter(lua_runtime *rt, lua_State *co)
{
    lua_State *prev = atomic_exchange(&rt->running, co);
    if (atomic_load(&rt->interrupt))
        rt_set_hook(co);
    return prev;
}

/* Unpublishes a coroutine that stopped running; once this returns no
 * interrupt holds a pointer to it, so it may be collected. */
static void rt_leave(lua_runtime *rt, lua_State *prev)
{
    atomic_store(&rt->running, prev);
    while (atomic_load(&rt->busy)) /* an interrupt on another thread, briefly */
        sched_yield();
}

/* After a coroutine returned to L: an interrupt stops L too, at once. */
static void rt_check_interrupt(lua_State *L, lua_runtime *rt)
{
    if (atomic_load(&rt->interrupt)) {
        rt_set_hook(L);
        lua_pushliteral(L, "interrupted");
        lua_error(L);
    }
}

/* lcorolib.c's auxresume: moves narg values to co, resumes it, moves the
 * results (or the error object) back; -1 on error. */
static int rt_auxresume(lua_State *L, lua_State *co, int narg)
{
    if (!lua_checkstack(co, narg)) {
        lua_pushliteral(L, "too many arguments to resume");
        return -1;
    }
    lua_xmove(L, co, narg);
    lua_runtime *rt = rt_of(L);
    lua_State *prev = rt_enter(rt, co);
    int nres;
    int status = lua_resume(co, L, narg, &nres);
    rt_leave(rt, prev);
    if (status == LUA_OK || status == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            lua_pushliteral(L, "too many results to resume");
            return -1;
        }
        lua_xmove(co, L, nres);
        return nres;
    }
    lua_xmove(co, L, 1);
    return -1;
}

static int rt_co_resume(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    int r = rt_auxresume(L, co, lua_gettop(L) - 1);
    rt_check_interrupt(L, rt_of(L));
    if (r < 0) {
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, -(r + 1));
    return r + 1;
}

/* lcorolib.c's auxwrap over rt_auxresume. */
static int rt_co_auxwrap(lua_State *L)
{
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int r = rt_auxresume(L, co, lua_gettop(L));
    rt_check_interrupt(L, rt_of(L));
    if (r < 0) {
        int stat = lua_status(co);
        if (stat != LUA_OK && stat != LUA_YIELD) { /* error in the coroutine */
            stat = lua_resetthread(co);            /* closes its tbc variables */
            lua_xmove(co, L, 1);
        }
        if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
            luaL_where(L, 1);
            lua_insert(L, -2);
            lua_concat(L, 2);
        }
        return lua_error(L);
    }
    return r;
}

static int rt_co_wrap(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, rt_co_auxwrap, 1);
    return 1;
}

/* lbaselib.c's pcall/xpcall, except that an error while the interrupt flag
 * is set propagates: otherwise `while true do pcall(f) end` would catch the
 * hook's error forever (the hook almost always fires inside f). */
static int rt_finishpcall(lua_State *L, int status, lua_KContext extra)
{
    if (status != LUA_OK && status != LUA_YIELD) {
        if (atomic_load(&rt_of(L)->interrupt))
            return lua_error(L); /* re-raise the error object on top */
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

static int rt_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, rt_finishpcall);
    return rt_finishpcall(L, status, 0);
}

static int rt_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2);
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, rt_finishpcall);
    return rt_finishpcall(L, status, 2);
}

/* load, loadfile and dofile in text mode only: a crafted binary chunk can
 * corrupt the engine's memory.  upvalue 1: the original function; mode_arg:
 * the position of its mode argument. */
static int rt_load_text(lua_State *L, int mode_arg)
{
    if (lua_gettop(L) < mode_arg) /* later arguments (env) stay as they are */
        lua_settop(L, mode_arg);
    lua_pushliteral(L, "t");
    lua_replace(L, mode_arg);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static int rt_load(lua_State *L)
{
    return rt_load_text(L, 3);
}
static int rt_loadfile(lua_State *L)
{
    return rt_load_text(L, 2);
}

static int rt_dofile_cont(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    return lua_gettop(L) - 1;
}

static int rt_dofile(lua_State *L)
{
    const char *fname = luaL_optstring(L, 1, NULL);
    lua_settop(L, 1);
    if (luaL_loadfilex(L, fname, "t") != LUA_OK)
        return lua_error(L);
    lua_callk(L, 0, LUA_MULTRET, 0, rt_dofile_cont);
    return rt_dofile_cont(L, 0, 0);
}

/* ------------------------------------------------------------- stdout */

/* Lua's print, into the task's stdout. */
static int rt_print(lua_State *L)
{
    lua_runtime *rt = rt_of(L);
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_tolstring(L, i, &len);
        if (i > 1)
            taskout_add(&rt->out, "\t", 1);
        taskout_add(&rt->out, s, len);
        lua_pop(L, 1);
    }
    taskout_add(&rt->out, "\n", 1);
    taskout_stream(&rt->out, 0); /* whole lines at a time */
    return 0;
}

/* io.write's formatting (liolib.c g_write) for arguments first..top. */
static void rt_write_args(lua_State *L, int first)
{
    lua_runtime *rt = rt_of(L);
    int n = lua_gettop(L);
    for (int i = first; i <= n; i++) {
        if (lua_type(L, i) == LUA_TNUMBER) {
            char buf[64];
            int len =
                lua_isinteger(L, i)
                    ? snprintf(buf, sizeof buf, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, i))
                    : snprintf(buf, sizeof buf, LUA_NUMBER_FMT, (LUAI_UACNUMBER)lua_tonumber(L, i));
            taskout_add(&rt->out, buf, (size_t)len);
        } else {
            size_t len;
            const char *s = luaL_checklstring(L, i, &len);
            taskout_add(&rt->out, s, len);
        }
    }
    taskout_stream(&rt->out, 0);
}

/* upvalues: 1 the stdout proxy, 2 the original io.write */
static int rt_io_write(lua_State *L)
{
    if (rt_of(L)->output_redirected) {
        lua_pushvalue(L, lua_upvalueindex(2));
        lua_insert(L, 1);
        lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
        return lua_gettop(L);
    }
    rt_write_args(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    return 1;
}

/* upvalues: 1 the stdout proxy, 2 the original io.output */
static int rt_io_output(lua_State *L)
{
    lua_runtime *rt = rt_of(L);
    if (lua_isnoneornil(L, 1) && !rt->output_redirected) {
        lua_pushvalue(L, lua_upvalueindex(1));
        return 1;
    }
    if (lua_rawequal(L, 1, lua_upvalueindex(1))) {
        rt->output_redirected = 0;
        lua_pushvalue(L, lua_upvalueindex(1));
        return 1;
    }
    int redirect = !lua_isnoneornil(L, 1);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    if (redirect)
        rt->output_redirected = 1;
    return 1;
}

/* Methods of the stdout proxy (io.stdout). */
static int rt_proxy_write(lua_State *L)
{
    rt_write_args(L, 2);
    lua_settop(L, 1);
    return 1;
}

static int rt_proxy_self(lua_State *L)
{
    lua_settop(L, 1);
    return 1;
}

static int rt_proxy_close(lua_State *L)
{
    luaL_pushfail(L);
    lua_pushliteral(L, "cannot close standard file");
    return 2;
}

static int rt_proxy_tostring(lua_State *L)
{
    lua_pushliteral(L, "file (task stdout)");
    return 1;
}

static int rt_os_exit(lua_State *L)
{
    return luaL_error(L, "os.exit is not available on an engine (it would stop the engine)");
}

/* Installs print, pcall, xpcall, load, loadfile, dofile, io.write, io.stdout, io.output, os.exit,
 * coroutine.resume and coroutine.wrap. */
static void rt_install_output(lua_State *L)
{
    static const luaL_Reg proxy_methods[] = {
        {"write", rt_proxy_write},
        {"flush", rt_proxy_self},
        {"setvbuf", rt_proxy_self},
        {"close", rt_proxy_close},
        {NULL, NULL},
    };
    lua_register(L, "print", rt_print);
    lua_register(L, "pcall", rt_pcall);
    lua_register(L, "xpcall", rt_xpcall);
    lua_register(L, "dofile", rt_dofile);
    lua_getglobal(L, "load");
    lua_pushcclosure(L, rt_load, 1);
    lua_setglobal(L, "load");
    lua_getglobal(L, "loadfile");
    lua_pushcclosure(L, rt_loadfile, 1);
    lua_setglobal(L, "loadfile");

    lua_getglobal(L, "io");
    int io = lua_gettop(L);
    lua_newtable(L); /* the proxy */
    int proxy = lua_gettop(L);
    lua_createtable(L, 0, 3);
    luaL_newlib(L, proxy_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, rt_proxy_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "FILE*");
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, proxy);

    lua_pushvalue(L, proxy);
    lua_getfield(L, io, "write");
    lua_pushcclosure(L, rt_io_write, 2);
    lua_setfield(L, io, "write");
    lua_pushvalue(L, proxy);
    lua_getfield(L, io, "output");
    lua_pushcclosure(L, rt_io_output, 2);
    lua_setfield(L, io, "output");
    lua_pushvalue(L, proxy);
    lua_setfield(L, io, "stdout");
    lua_settop(L, io - 1);

    lua_getglobal(L, "os");
    lua_pushcfunction(L, rt_os_exit);
    lua_setfield(L, -2, "exit");
    lua_pop(L, 1);

    lua_getglobal(L, "coroutine");
    lua_pushcfunction(L, rt_co_resume);
    lua_setfield(L, -2, "resume");
    lua_pushcfunction(L, rt_co_wrap);
    lua_setfield(L, -2, "wrap");
    lua_pop(L, 1);
}

/* ------------------------------------------------------------ new/free */

static int rt_setup(lua_State *L)
{
    lua_runtime *rt = lua_touserdata(L, 1);
    luaL_openlibs(L);
    luaL_requiref(L, "nd", luaopen_nd, 1);
    lua_pop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lmpi_open(L, &rt->interrupt);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "mpi"); /* package.loaded.mpi: require "mpi" works */
    lua_setglobal(L, "mpi");
    lua_pop(L, 1);
    plugin_open(L, &rt->interrupt);
    luavalue_open(L);
    rt_install_output(L);
    rt_ns_snapshot(L);
    return 0;
}

static void lua_rt_free(runtime *base);

static runtime *lua_rt_new(int rank, int size, ippc_error *err)
{
    lua_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    rt->base.cls = &runtime_lua_class;
    rt->rank = rank;
    rt->size = size;
    atomic_init(&rt->interrupt, 0);
    atomic_init(&rt->running, NULL);
    atomic_init(&rt->busy, 0);
    rt->L = luaL_newstate();
    if (!rt->L) {
        ippc_error_set(err, ERR_INTERNAL, "cannot create a Lua state");
        lua_rt_free(&rt->base);
        return NULL;
    }
    atomic_store(&rt->running, rt->L);
    *(lua_runtime **)lua_getextraspace(rt->L) = rt; /* copied into every new coroutine */
    lua_pushcfunction(rt->L, rt_setup);
    lua_pushlightuserdata(rt->L, rt);
    if (lua_pcall(rt->L, 1, 0, 0) != LUA_OK) {
        ippc_error_set(err, ERR_INTERNAL, "cannot set up the Lua runtime: %s",
                       lua_tostring(rt->L, -1) ? lua_tostring(rt->L, -1) : "?");
        lua_rt_free(&rt->base);
        return NULL;
    }
    rt->fan = fanout_new(&rt->interrupt); /* after lmpi_open: every rank in this order */
    if (!rt->fan) {
        ippc_error_set(err, ERR_INTERNAL, "cannot set up the fan-out communicators");
        lua_rt_free(&rt->base);
        return NULL;
    }
    return &rt->base;
}

static void lua_rt_free(runtime *base)
{
    lua_runtime *rt = (lua_runtime *)base;
    fanout_free(rt->fan);
    if (rt->L)
        lua_close(rt->L);
    taskout_free(&rt->out);
    free(rt);
}

/* ------------------------------------------------------- result pieces */

/* Message handler for user code: {evalue = message, traceback = text}. */
static int task_msgh(lua_State *L)
{
    const char *msg = NULL;
    if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER)
        msg = lua_tostring(L, 1);
    else if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
        msg = lua_tostring(L, -1);
    else
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    lua_createtable(L, 0, 2);
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "evalue");
    luaL_traceback(L, L, msg, 1);
    lua_setfield(L, -2, "traceback");
    return 1;
}

/* Splits a Lua traceback into lines: tabs become two spaces, the trailing
 * "[C]: in ?" frames (our own entry points) are dropped. */
static json_t *traceback_lines(const char *tb, size_t n)
{
    json_t *lines = json_array();
    if (!lines)
        return NULL;
    const char *p = tb, *end = tb + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        const char *line = p;
        char buf[512];
        if (len > 0 && line[0] == '\t' && len - 1 + 2 < sizeof buf) {
            memcpy(buf, "  ", 2);
            memcpy(buf + 2, line + 1, len - 1);
            line = buf;
            len = len + 1;
        }
        json_array_append_new(lines, json_text(line, len));
        p = nl ? nl + 1 : end;
    }
    size_t k;
    while ((k = json_array_size(lines)) > 0 &&
           strcmp(json_string_value(json_array_get(lines, k - 1)), "  [C]: in ?") == 0)
        json_array_remove(lines, k - 1);
    return lines;
}

/* Calls the function below its nargs arguments on the stack with the
 * traceback handler.  Returns the number of results (left on the stack), or
 * -1 with the failure recorded in c. */
static int task_call(lua_State *L, task_ctx *c, int nargs)
{
    int base = lua_gettop(L) - nargs; /* the function's slot */
    lua_pushcfunction(L, task_msgh);
    lua_insert(L, base);
    int st = lua_pcall(L, nargs, LUA_MULTRET, base);
    lua_remove(L, base);
    if (st == LUA_OK)
        return lua_gettop(L) - base + 1;

    int aborted = atomic_load(c->interrupt);
    task_status status = aborted ? TASK_ABORTED : TASK_ERROR;
    const char *ename = aborted ? "Aborted" : st == LUA_ERRMEM ? "MemoryError" : "RuntimeError";
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_getfield(L, -1, "evalue");
        lua_getfield(L, -2, "traceback");
        size_t elen = 0, tlen = 0;
        const char *evalue = lua_tolstring(L, -2, &elen);
        const char *tb = lua_tolstring(L, -1, &tlen);
        task_fail(c, status, ename, "%s", aborted ? "task interrupted" : evalue ? evalue : "?");
        if (!aborted && evalue) { /* keep the bytes exactly (the format stops at NUL) */
            json_decref(c->evalue);
            c->evalue = json_text(evalue, elen);
        }
        if (tb) {
            json_decref(c->traceback);
            c->traceback = traceback_lines(tb, tlen);
        }
    } else {
        const char *msg = lua_tostring(L, -1);
        task_fail(c, status, ename, "%s",
                  aborted ? "task interrupted"
                  : msg   ? msg
                          : "error in error handling");
    }
    lua_settop(L, base - 1);
    return -1;
}

/* Converts the value at idx for the result; 0, or -1 with c failed. */
int task_wire(lua_State *L, task_ctx *c, int idx, const char *what, json_t **out)
{
    ippc_error err;
    *out = luavalue_to_wire(L, idx, c->result_blobs, &err);
    if (!*out) {
        task_fail(c, TASK_ERROR, "TypeError", "%s%s%s", what ? what : "", what ? ": " : "",
                  err.message);
        return -1;
    }
    return 0;
}

/* ----------------------------------------------------------------- ops */

int task_global(lua_State *L, task_ctx *c, const char *name, size_t len)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_pushlstring(L, name, len);
    lua_rawget(L, -2);
    lua_remove(L, -2);
    if (!lua_isnil(L, -1))
        return 1;
    lua_pop(L, 1);
    task_fail(c, TASK_ERROR, "NameError", "name '%s' is not defined", name);
    return 0;
}

static void op_chunk(lua_State *L, task_ctx *c, int is_run)
{
    size_t len;
    const char *src = task_string(c, is_run ? "source" : "code", &len);
    if (!src)
        return;
    const char *chunkname = "=<execute>";
    if (is_run) {
        const char *filename = task_string(c, "filename", NULL);
        if (!filename)
            return;
        chunkname = lua_pushfstring(L, "@%s", filename);
    }
    if (luaL_loadbufferx(L, src, len, chunkname, "t") != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        task_fail(c, TASK_ERROR, "SyntaxError", "%s", msg ? msg : "cannot load chunk");
        return;
    }
    int top = lua_gettop(L);
    int n = task_call(L, c, 0);
    if (n > 0 && !lua_isnil(L, top))
        task_wire(L, c, top, NULL, &c->value);
}

/* Assigns the globals of ns (name -> skeleton over blobs); converts
 * everything first, so a bad value changes no global (a ValueError). */
void rt_push_ns(lua_State *L, task_ctx *c, const json_t *ns, ippc_blobs *blobs)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    int g = lua_gettop(L);
    size_t count = 0;
    const char *name;
    json_t *skel;
    json_object_foreach((json_t *)ns, name, skel) {
        luaL_checkstack(L, 3, "too many names to push");
        lua_pushstring(L, name);
        ippc_error err;
        if (luavalue_push(L, skel, blobs, &err) < 0) {
            task_fail(c, TASK_ERROR, "ValueError", "%s: %s", name, err.message);
            lua_settop(L, g - 1);
            return;
        }
        count++;
    }
    for (size_t i = 0; i < count; i++)
        lua_rawset(L, g);
    lua_settop(L, g - 1);
}

static void op_push(lua_State *L, task_ctx *c)
{
    const json_t *ns = json_object_get(c->task, "ns");
    if (!json_is_object(ns)) {
        task_fail(c, TASK_ERROR, "ProtocolError", "push needs an object 'ns'");
        return;
    }
    rt_push_ns(L, c, ns, c->task_blobs);
}

/* task_pull's get: the global name converted for the result. */
static json_t *pull_global(task_ctx *c, const char *name, size_t len, void *arg)
{
    lua_State *L = arg;
    if (!task_global(L, c, name, len))
        return NULL;
    json_t *v;
    int r = task_wire(L, c, -1, name, &v);
    lua_pop(L, 1);
    return r < 0 ? NULL : v;
}

/* Pushes an apply argument: a {"$ref": NAME} global or a wire value. */
static int push_arg(lua_State *L, task_ctx *c, const json_t *v, const char *what)
{
    luaL_checkstack(L, 4, "too many arguments");
    if (task_is_ref(v)) {
        const json_t *name = json_object_get(v, "$ref");
        return task_global(L, c, json_string_value(name), json_string_length(name)) ? 0 : -1;
    }
    ippc_error err;
    if (luavalue_push(L, v, c->task_blobs, &err) < 0) {
        task_fail(c, TASK_ERROR, "ValueError", "%s: %s", what, err.message);
        return -1;
    }
    return 0;
}

static void op_apply(lua_State *L, task_ctx *c)
{
    size_t flen;
    const char *fname = task_string(c, "function", &flen);
    if (!fname)
        return;
    const json_t *args, *kwargs;
    if (task_apply_args(c, &args, &kwargs) < 0)
        return;
    int base = lua_gettop(L);
    if (!task_global(L, c, fname, flen))
        return;
    if (lua_type(L, -1) != LUA_TFUNCTION && luaL_getmetafield(L, -1, "__call") == LUA_TNIL) {
        task_fail(c, TASK_ERROR, "TypeError", "'%s' is a %s value, not a function", fname,
                  luaL_typename(L, -1));
        lua_settop(L, base);
        return;
    }
    lua_settop(L, base + 1);
    size_t i;
    const json_t *arg;
    json_array_foreach(args, i, arg) {
        char what[32];
        snprintf(what, sizeof what, "argument %zu", i + 1);
        if (push_arg(L, c, arg, what) < 0) {
            lua_settop(L, base);
            return;
        }
    }
    if (json_object_size(kwargs) > 0) {
        lua_createtable(L, 0, (int)json_object_size(kwargs));
        const char *key;
        const json_t *v;
        json_object_foreach((json_t *)kwargs, key, v) {
            lua_pushstring(L, key);
            if (push_arg(L, c, v, key) < 0) {
                lua_settop(L, base);
                return;
            }
            lua_rawset(L, -3);
        }
    }
    int n = task_call(L, c, lua_gettop(L) - base - 1);
    if (n < 0)
        return;
    if (n <= 1) { /* one value (nil -> null), or none -> null */
        if (n == 0)
            lua_pushnil(L);
        task_wire(L, c, base + 1, NULL, &c->value);
    } else {
        c->value = json_array();
        for (int k = 0; k < n; k++) {
            json_t *v;
            char what[32];
            snprintf(what, sizeof what, "result %d", k + 1);
            if (task_wire(L, c, base + 1 + k, what, &v) < 0)
                break;
            json_array_append_new(c->value, v);
        }
    }
    lua_settop(L, base);
}

/* op "map": {"function", "sequences": [values]} — calls the function on
 * the i-th items of every sequence (zip-like: the shortest one bounds i) and
 * answers the list of first results.  One balanced task is one map chunk.
 *
 * Every item gets its own outcome: an item whose call raises, or whose
 * result cannot be sent, is null in "value" and has an entry in
 * "item_errors"; the chunk goes on with the next item (the Lua state is
 * fine after a caught error).  The chunk then ends "error" with the first
 * failed item's ename/evalue/traceback, keeping "value".  Only an interrupt
 * (or a failure before the first call: no function, bad sequences) ends the
 * chunk as a whole, with no value. */
static void op_map(lua_State *L, task_ctx *c)
{
    size_t flen;
    const char *fname = task_string(c, "function", &flen);
    if (!fname)
        return;
    const json_t *seqs = task_map_sequences(c);
    if (!seqs)
        return;
    int base = lua_gettop(L);
    if (!task_global(L, c, fname, flen))
        return;
    int nseq = (int)json_array_size(seqs);
    lua_Integer n = LUA_MAXINTEGER;
    for (int k = 0; k < nseq; k++) {
        char what[32];
        snprintf(what, sizeof what, "sequence %d", k + 1);
        if (push_arg(L, c, json_array_get(seqs, (size_t)k), what) < 0) {
            lua_settop(L, base);
            return;
        }
        lua_Integer len = luaL_len(L, -1);
        if (len < n)
            n = len;
    }
    task_map_begin(c);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_pushvalue(L, base + 1);
        for (int k = 0; k < nseq; k++) {
            lua_geti(L, base + 2 + k, i);
            if (luavalue_is_null(L, -1)) { /* a null item is a nil argument, as in apply */
                lua_pop(L, 1);
                lua_pushnil(L);
            }
        }
        int got = task_call(L, c, nseq);
        if (got == 0) {
            lua_pushnil(L);
            got = 1;
        }
        json_t *v = NULL;
        if (got > 0)
            task_wire(L, c, lua_gettop(L) - got + 1, "map result", &v);
        lua_settop(L, base + 1 + nseq);
        if (task_map_item(c, (long long)(i - 1), v) < 0)
            break;
    }
    lua_settop(L, base);
    task_items_settle(c);
}

static int task_main(lua_State *L)
{
    task_ctx *c = lua_touserdata(L, 1);
    lua_settop(L, 0);
    const json_t *op = json_object_get(c->task, "op");
    const char *name = json_string_value(op);
    if (!name)
        task_fail(c, TASK_ERROR, "ProtocolError", "task needs a string 'op'");
    else if (json_object_get(c->task, "fanout"))
        fanout_lua_run(L, c, ((lua_runtime *)c->rt)->fan); /* push, scatter or gather over MPI */
    else if (strcmp(name, "execute") == 0)
        op_chunk(L, c, 0);
    else if (strcmp(name, "run") == 0)
        op_chunk(L, c, 1);
    else if (strcmp(name, "push") == 0)
        op_push(L, c);
    else if (strcmp(name, "pull") == 0)
        task_pull(c, pull_global, L);
    else if (strcmp(name, "apply") == 0)
        op_apply(L, c);
    else if (strcmp(name, "map") == 0)
        op_map(L, c);
    else if (strcmp(name, "load") == 0)
        op_load(L, c);
    else if (strcmp(name, "reset") == 0)
        op_reset(L, c);
    else if (strcmp(name, "delete") == 0)
        op_delete(L, c);
    else if (strcmp(name, "list") == 0)
        op_list(L, c);
    else
        task_fail(c, TASK_ERROR, "ProtocolError", "unknown op '%s'", name);
    return 0;
}

static json_t *lua_rt_run_task(runtime *base, const json_t *task, ippc_blobs *task_blobs,
                               ippc_blobs *result_blobs)
{
    lua_runtime *rt = (lua_runtime *)base;
    lua_State *L = rt->L;
    /* Hook first, then flag: an interrupt landing in between is for the
     * previous task and is dropped, as runtime.h promises. */
    lua_sethook(L, NULL, 0, 0);
    atomic_store(&rt->interrupt, 0);
    task_ctx c;
    lua_settop(L, 0);
    if (task_start(&c, &rt->base, &rt->interrupt, task, task_blobs, result_blobs, &rt->out)) {
        lua_pushcfunction(L, task_main);
        lua_pushlightuserdata(L, &c);
        int st = lua_pcall(L, 1, 0, 0);
        if (st != LUA_OK) { /* raised by our glue: out of memory, most likely */
            const char *msg = lua_tostring(L, -1);
            if (atomic_load(&rt->interrupt))
                task_fail(&c, TASK_ABORTED, "Aborted", "task interrupted");
            else
                task_fail(&c, TASK_ERROR, st == LUA_ERRMEM ? "MemoryError" : "RuntimeError", "%s",
                          msg ? msg : "error");
        }
    }
    lua_settop(L, 0);
    json_t *res = task_finish(&c, &rt->out);
    return res;
}

static void lua_rt_set_stdout_sink(runtime *base, runtime_stdout_sink sink, void *arg)
{
    lua_runtime *rt = (lua_runtime *)base;
    rt->out.sink = sink;
    rt->out.sink_arg = arg;
}

const runtime_class runtime_lua_class = {
    .name = "lua",
    .kind = RUNTIME_LUA,
    .create = lua_rt_new,
    .destroy = lua_rt_free,
    .run_task = lua_rt_run_task,
    .set_stdout_sink = lua_rt_set_stdout_sink,
    .interrupt = lua_rt_interrupt,
};
