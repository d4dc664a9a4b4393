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
#include "runtime_impl.h"

#define RT_STDOUT_CAP ((size_t)8 << 20)
#define RT_STDOUT_NOTE "\n[stdout truncated]\n"
#define RT_HOOK_COUNT 1000

struct runtime {
    lua_State *L;
    int rank, size;
    atomic_int interrupt;
    _Atomic(lua_State *) running; /* the coroutine being resumed, or L */
    atomic_int busy;              /* interrupts currently using running */
    /* the running task's stdout */
    ippc_buf out;
    int out_truncated;
    int output_redirected; /* io.output(file) was called: io.write goes there */
    /* streaming of the running task's stdout (runtime_set_stdout_sink) */
    runtime_stdout_sink sink;
    void *sink_arg;
    uint64_t task_id;
    size_t streamed;       /* bytes of out already given to the sink */
    int64_t last_flush_ms; /* 0: nothing flushed yet in this task */
    fanout *fan;           /* data ops fanned out by MPI (fanout.h) */
};

static runtime *rt_of(lua_State *L)
{
    return *(runtime **)lua_getextraspace(L);
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

void runtime_interrupt(runtime *rt)
{
    if (!rt)
        return;
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
static lua_State *rt_enter(runtime *rt, lua_State *co)
{
    lua_State *prev = atomic_exchange(&rt->running, co);
    if (atomic_load(&rt->interrupt))
        rt_set_hook(co);
    return prev;
}

/* Unpublishes a coroutine that stopped running; once this returns no
 * interrupt holds a pointer to it, so it may be collected. */
static void rt_leave(runtime *rt, lua_State *prev)
{
    atomic_store(&rt->running, prev);
    while (atomic_load(&rt->busy)) /* an interrupt on another thread, briefly */
        sched_yield();
}

/* After a coroutine returned to L: an interrupt stops L too, at once. */
static void rt_check_interrupt(lua_State *L, runtime *rt)
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
    runtime *rt = rt_of(L);
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

#define RT_STREAM_PERIOD_MS 100
#define RT_STREAM_BYTES ((size_t)64 << 10)

static int64_t rt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Gives the sink the stdout it has not seen: when forced (end of task), when
 * RT_STREAM_BYTES are waiting, or when RT_STREAM_PERIOD_MS passed since the
 * last time (the first output of a task goes at once). */
static void rt_stream(runtime *rt, int force)
{
    size_t fresh = rt->out.len - rt->streamed;
    if (!rt->sink || fresh == 0)
        return;
    int64_t now = rt_now_ms();
    if (!force && fresh < RT_STREAM_BYTES && rt->last_flush_ms != 0 &&
        now - rt->last_flush_ms < RT_STREAM_PERIOD_MS)
        return;
    rt->sink(rt->sink_arg, rt->task_id, rt->out.data + rt->streamed, fresh);
    rt->streamed = rt->out.len;
    rt->last_flush_ms = now ? now : 1;
}

void runtime_set_stdout_sink(runtime *rt, runtime_stdout_sink sink, void *arg)
{
    rt->sink = sink;
    rt->sink_arg = arg;
}

static void rt_out_add(runtime *rt, const char *s, size_t n)
{
    if (rt->out_truncated || n == 0)
        return;
    size_t room = RT_STDOUT_CAP - rt->out.len, take = n < room ? n : room;
    size_t note = take < n ? sizeof RT_STDOUT_NOTE - 1 : 0;
    if (buf_reserve(&rt->out, take + note) < 0) {
        rt->out_truncated = 1; /* keep what we have */
        return;
    }
    buf_append(&rt->out, s, take); /* cannot fail: reserved */
    if (note) {
        buf_append(&rt->out, RT_STDOUT_NOTE, note);
        rt->out_truncated = 1;
    }
}

/* Lua's print, into the task's stdout. */
static int rt_print(lua_State *L)
{
    runtime *rt = rt_of(L);
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_tolstring(L, i, &len);
        if (i > 1)
            rt_out_add(rt, "\t", 1);
        rt_out_add(rt, s, len);
        lua_pop(L, 1);
    }
    rt_out_add(rt, "\n", 1);
    rt_stream(rt, 0); /* whole lines at a time */
    return 0;
}

/* io.write's formatting (liolib.c g_write) for arguments first..top. */
static void rt_write_args(lua_State *L, int first)
{
    runtime *rt = rt_of(L);
    int n = lua_gettop(L);
    for (int i = first; i <= n; i++) {
        if (lua_type(L, i) == LUA_TNUMBER) {
            char buf[64];
            int len =
                lua_isinteger(L, i)
                    ? snprintf(buf, sizeof buf, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, i))
                    : snprintf(buf, sizeof buf, LUA_NUMBER_FMT, (LUAI_UACNUMBER)lua_tonumber(L, i));
            rt_out_add(rt, buf, (size_t)len);
        } else {
            size_t len;
            const char *s = luaL_checklstring(L, i, &len);
            rt_out_add(rt, s, len);
        }
    }
    rt_stream(rt, 0);
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
    runtime *rt = rt_of(L);
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
    runtime *rt = lua_touserdata(L, 1);
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

runtime *runtime_new(int rank, int size, ippc_error *err)
{
    runtime *rt = calloc(1, sizeof *rt);
    if (!rt) {
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    rt->rank = rank;
    rt->size = size;
    atomic_init(&rt->interrupt, 0);
    atomic_init(&rt->running, NULL);
    atomic_init(&rt->busy, 0);
    rt->L = luaL_newstate();
    if (!rt->L) {
        ippc_error_set(err, ERR_INTERNAL, "cannot create a Lua state");
        runtime_free(rt);
        return NULL;
    }
    atomic_store(&rt->running, rt->L);
    *(runtime **)lua_getextraspace(rt->L) = rt; /* copied into every new coroutine */
    lua_pushcfunction(rt->L, rt_setup);
    lua_pushlightuserdata(rt->L, rt);
    if (lua_pcall(rt->L, 1, 0, 0) != LUA_OK) {
        ippc_error_set(err, ERR_INTERNAL, "cannot set up the Lua runtime: %s",
                       lua_tostring(rt->L, -1) ? lua_tostring(rt->L, -1) : "?");
        runtime_free(rt);
        return NULL;
    }
    rt->fan = fanout_new(&rt->interrupt); /* after lmpi_open: every rank in this order */
    if (!rt->fan) {
        ippc_error_set(err, ERR_INTERNAL, "cannot set up the fan-out communicators");
        runtime_free(rt);
        return NULL;
    }
    return rt;
}

void runtime_free(runtime *rt)
{
    if (!rt)
        return;
    fanout_free(rt->fan);
    if (rt->L)
        lua_close(rt->L);
    buf_free(&rt->out);
    free(rt);
}

/* ------------------------------------------------------- result pieces */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid.
 * Rejects overlongs, surrogates and code points above U+10FFFF, as Jansson. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned cp, min;
    if ((c & 0xE0) == 0xC0) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* A JSON string for arbitrary bytes: invalid UTF-8 becomes U+FFFD. */
json_t *json_text(const char *s, size_t n)
{
    json_t *j = json_stringn(s ? s : "", s ? n : 0);
    if (j || !s)
        return j;
    if (n > SIZE_MAX / 3)
        return NULL;
    char *clean = malloc(n * 3 + 1);
    if (!clean)
        return NULL;
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq(u + i, n - i);
        if (len) {
            memcpy(clean + o, u + i, len);
            o += len;
            i += len;
        } else {
            memcpy(clean + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(clean, o);
    free(clean);
    return j;
}

void task_fail(task_ctx *c, task_status status, const char *ename, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = vasprintf(&msg, fmt, ap);
    va_end(ap);
    c->status = status;
    snprintf(c->ename, sizeof c->ename, "%s", ename);
    json_decref(c->evalue);
    json_decref(c->traceback);
    c->evalue = json_text(len >= 0 ? msg : "out of memory", len >= 0 ? (size_t)len : 13);
    c->traceback = json_array();
    if (len >= 0 && c->traceback) {
        char *line = NULL;
        if (asprintf(&line, "%s: %s", ename, msg) >= 0) {
            json_array_append_new(c->traceback, json_text(line, strlen(line)));
            free(line);
        }
    }
    if (len >= 0)
        free(msg);
}

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

    int aborted = atomic_load(&c->rt->interrupt);
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

const char *task_string(task_ctx *c, const char *key, size_t *len)
{
    const json_t *v = json_object_get(c->task, key);
    if (!json_is_string(v)) {
        task_fail(c, TASK_ERROR, "ProtocolError", "task needs a string '%s'", key);
        return NULL;
    }
    if (len)
        *len = json_string_length(v);
    return json_string_value(v);
}

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

static void op_pull(lua_State *L, task_ctx *c)
{
    const json_t *names = json_object_get(c->task, "names");
    json_t *one = NULL;
    if (json_is_string(names)) { /* tolerate a single name */
        one = json_pack("[O]", names);
        names = one;
    }
    if (!json_is_array(names)) {
        task_fail(c, TASK_ERROR, "ProtocolError", "pull needs a list 'names'");
        return;
    }
    c->value = json_object();
    size_t i;
    const json_t *item;
    json_array_foreach(names, i, item) {
        if (!json_is_string(item)) {
            task_fail(c, TASK_ERROR, "ProtocolError", "pull: names must be strings");
            break;
        }
        if (!task_global(L, c, json_string_value(item), json_string_length(item)))
            break;
        json_t *v;
        int r = task_wire(L, c, -1, json_string_value(item), &v);
        lua_pop(L, 1);
        if (r < 0)
            break;
        json_object_set_new(c->value, json_string_value(item), v);
    }
    json_decref(one);
}

static int is_ref(const json_t *v)
{
    return json_is_object(v) && json_object_size(v) == 1 &&
           json_is_string(json_object_get(v, "$ref"));
}

/* Pushes an apply argument: a {"$ref": NAME} global or a wire value. */
static int push_arg(lua_State *L, task_ctx *c, const json_t *v, const char *what)
{
    luaL_checkstack(L, 4, "too many arguments");
    if (is_ref(v)) {
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
    const json_t *args = json_object_get(c->task, "args");
    const json_t *kwargs = json_object_get(c->task, "kwargs");
    if ((args && !json_is_array(args) && !json_is_null(args)) ||
        (kwargs && !json_is_object(kwargs) && !json_is_null(kwargs))) {
        task_fail(c, TASK_ERROR, "ProtocolError",
                  "apply: 'args' must be a list, 'kwargs' an object");
        return;
    }
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

/* Moves the failure recorded in c to c->item_errors as item index (0-based
 * within the chunk) and clears it, so the chunk goes on with the next item. */
static void map_item_failed(task_ctx *c, lua_Integer index)
{
    json_t *e = json_pack("{s:I, s:s}", "index", (json_int_t)index, "ename", c->ename);
    if (e) {
        json_object_set_new(e, "evalue", c->evalue ? c->evalue : json_string(""));
        json_object_set_new(e, "traceback", c->traceback ? c->traceback : json_array());
        c->evalue = c->traceback = NULL;
    }
    json_array_append_new(c->item_errors, e);
    json_decref(c->evalue);
    json_decref(c->traceback);
    c->evalue = c->traceback = NULL;
    c->ename[0] = '\0';
    c->status = TASK_OK;
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
    const json_t *seqs = json_object_get(c->task, "sequences");
    if (!json_is_array(seqs) || json_array_size(seqs) == 0 || json_array_size(seqs) > 64) {
        task_fail(c, TASK_ERROR, "ProtocolError", "map: 'sequences' must be a list of 1..64");
        return;
    }
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
    c->value = json_array();
    c->item_errors = json_array();
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
        if (c->status == TASK_ABORTED) { /* interrupted: the chunk ends here */
            json_decref(c->value);
            json_decref(c->item_errors);
            c->value = c->item_errors = NULL;
            break;
        }
        if (c->status != TASK_OK) {
            map_item_failed(c, i - 1);
            v = json_null();
        }
        json_array_append_new(c->value, v);
    }
    lua_settop(L, base);
    if (json_array_size(c->item_errors) == 0) {
        json_decref(c->item_errors);
        c->item_errors = NULL;
        return;
    }
    /* The chunk reads as failed, with its first failed item's error. */
    json_t *first = json_array_get(c->item_errors, 0);
    c->status = TASK_ERROR;
    snprintf(c->ename, sizeof c->ename, "%s", json_string_value(json_object_get(first, "ename")));
    c->evalue = json_incref(json_object_get(first, "evalue"));
    c->traceback = json_incref(json_object_get(first, "traceback"));
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
        op_fanout(L, c, c->rt->fan); /* push, scatter or gather over MPI */
    else if (strcmp(name, "execute") == 0)
        op_chunk(L, c, 0);
    else if (strcmp(name, "run") == 0)
        op_chunk(L, c, 1);
    else if (strcmp(name, "push") == 0)
        op_push(L, c);
    else if (strcmp(name, "pull") == 0)
        op_pull(L, c);
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

static const char *const status_names[] = {"ok", "error", "aborted"};

json_t *runtime_run_task(runtime *rt, const json_t *task, ippc_blobs *task_blobs,
                         ippc_blobs *result_blobs)
{
    lua_State *L = rt->L;
    /* Hook first, then flag: an interrupt landing in between is for the
     * previous task and is dropped, as runtime.h promises. */
    lua_sethook(L, NULL, 0, 0);
    atomic_store(&rt->interrupt, 0);
    buf_reset(&rt->out);
    rt->out_truncated = 0;
    rt->streamed = 0;
    rt->last_flush_ms = 0;
    const json_t *task_id = json_is_object(task) ? json_object_get(task, "task") : NULL;
    rt->task_id = json_is_integer(task_id) ? (uint64_t)json_integer_value(task_id) : 0;

    ippc_blobs no_blobs;
    blobs_init(&no_blobs);
    task_ctx c = {.rt = rt,
                  .task = task,
                  .task_blobs = task_blobs ? task_blobs : &no_blobs,
                  .result_blobs = result_blobs,
                  .status = TASK_OK};
    ippc_blobs scratch_result;
    blobs_init(&scratch_result);
    if (!c.result_blobs)
        c.result_blobs = &scratch_result;
    size_t first_blob = c.result_blobs->count;

    lua_settop(L, 0);
    if (!json_is_object(task)) {
        task_fail(&c, TASK_ERROR, "ProtocolError", "a task must be a JSON object");
    } else {
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
    rt_stream(rt, 1); /* the sink sees every byte before the result exists */

    json_t *res = json_object();
    if (!res)
        goto oom;
    json_object_set_new(res, "type", json_string("result"));
    json_object_set(res, "task",
                    json_is_object(task) && json_object_get(task, "task")
                        ? json_object_get(task, "task")
                        : json_null());
    json_object_set_new(res, "status", json_string(status_names[c.status]));
    json_object_set_new(res, "stdout", json_text(rt->out.data ? rt->out.data : "", rt->out.len));
    /* A map chunk with failed items keeps its value (and its blobs). */
    int keep_value = c.status == TASK_OK || (c.status == TASK_ERROR && c.item_errors);
    if (keep_value && c.value)
        json_object_set_new(res, "value", c.value);
    else
        json_decref(c.value);
    c.value = NULL;
    if (c.status == TASK_OK && c.parts) /* a fanned-out gather's root */
        json_object_set_new(res, "parts", c.parts);
    else
        json_decref(c.parts);
    c.parts = NULL;
    if (c.status != TASK_OK) {
        json_object_set_new(res, "ename", json_string(c.ename));
        json_object_set_new(res, "evalue", c.evalue ? c.evalue : json_string(""));
        json_object_set_new(res, "traceback", c.traceback ? c.traceback : json_array());
        c.evalue = c.traceback = NULL;
        if (keep_value && c.item_errors)
            json_object_set(res, "item_errors", c.item_errors);
        else
            while (c.result_blobs->count > first_blob) /* nothing refers to them now */
                free(c.result_blobs->items[--c.result_blobs->count].data);
    }
    if (!json_object_get(res, "stdout") || !json_object_get(res, "status")) {
        json_decref(res);
        res = NULL;
    }
oom:
    json_decref(c.value);
    json_decref(c.parts);
    json_decref(c.evalue);
    json_decref(c.traceback);
    json_decref(c.item_errors);
    blobs_free(&scratch_result);
    nd_cache_trim(); /* an idle engine keeps no spare array memory */
    /* Keep the buffer of a chatty task from pinning memory for good. */
    if (rt->out.cap > ((size_t)1 << 20))
        buf_free(&rt->out);
    buf_reset(&rt->out);
    return res;
}
