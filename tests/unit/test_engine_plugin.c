/* test_engine_plugin.c — native plugins through the runtime's "load" op:
 * every loading error (missing file, not a shared object, not a plugin,
 * another ABI version, no init, a failing init, a bad kernel name) is a
 * PluginError and the engine carries on; kernels get every argument kind
 * (arrays write through, strided ones too), return every result kind, fail
 * with their message, see interrupts, survive reset and stay out of list;
 * the examples psum and stencil on one rank.
 *
 * The test plugins are compiled here from one source with -D switches
 * (cc must be on PATH; otherwise those tests are skipped); the examples come
 * from <build>/plugins, next to this binary's <build>/tests.
 */
#include <setjmp.h>
#include <ftw.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libgen.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <mpi.h>

#include "proto.h"
#include "runtime.h"

#include "engine_harness.h"
#include "interrupter.h"

static char tmpdir[256];
static char root[1024];  /* the repository (holds include/ippc/plugin.h) */
static char build[1024]; /* <build> of this binary */
static int have_cc;

static const char *plugin_source =
    "#include <ippc/plugin.h>\n"
    "#include <string.h>\n"
    "#ifndef NO_ABI\n"
    "#ifdef WRONG_ABI\n"
    "IPPC_PLUGIN_EXPORT const uint32_t ippc_plugin_abi = 999;\n"
    "#else\n"
    "IPPC_PLUGIN_DEFINE();\n"
    "#endif\n"
    "#endif\n"
    "static int inits;\n"
    "static int echo(const ippc_api *api, ippc_call *call, const ippc_value *a, int n) {\n"
    "  for (int i = 0; i < n; i++) {\n"
    "    int rc = 0;\n"
    "    switch (a[i].kind) {\n"
    "    case IPPC_NIL: rc = api->return_nil(call); break;\n"
    "    case IPPC_BOOLEAN: rc = api->return_boolean(call, !a[i].u.boolean); break;\n"
    "    case IPPC_INTEGER: rc = api->return_integer(call, a[i].u.integer + 1); break;\n"
    "    case IPPC_NUMBER: rc = api->return_number(call, a[i].u.number * 2); break;\n"
    "    case IPPC_STRING: rc = api->return_string(call, a[i].u.string.data, a[i].u.string.len); "
    "break;\n"
    "    case IPPC_ARRAY: rc = api->return_integer(call, (int64_t)a[i].u.array.count * 100 +\n"
    "                     a[i].u.array.ndim * 10 + (int)a[i].u.array.dtype); break;\n"
    "    case IPPC_COMM: { int s; MPI_Comm_size(a[i].u.comm, &s); rc = api->return_string(call, "
    "\"comm\", 4);\n"
    "      if (!rc) rc = api->return_integer(call, s); break; }\n"
    "    }\n"
    "    if (rc) return api->error(call, \"out of memory\");\n"
    "  }\n"
    "  return 0;\n"
    "}\n"
    "static int twice(const ippc_api *api, ippc_call *call, const ippc_value *a, int n) {\n"
    "  if (n != 1 || a[0].kind != IPPC_ARRAY || a[0].u.array.dtype != IPPC_FLOAT64)\n"
    "    return api->error(call, \"twice(a): a float64 array\");\n"
    "  double *d = a[0].u.array.data;\n"
    "  for (size_t i = 0; i < a[0].u.array.count; i++) d[i] *= 2;\n"
    "  return 0;\n"
    "}\n"
    "static int make(const ippc_api *api, ippc_call *call, const ippc_value *a, int n) {\n"
    "  size_t shape[2] = {2, 3};\n"
    "  int32_t *p = api->return_array(call, IPPC_INT32, 2, shape);\n"
    "  if (!p) return api->error(call, \"no memory\");\n"
    "  for (int i = 0; i < 6; i++) p[i] = i;\n"
    "  if (api->return_array(call, (ippc_dtype)9, 1, shape)) return api->error(call, \"bad dtype "
    "accepted\");\n"
    "  return api->return_string(call, \"made\", 4) || api->return_number(call, 1.5);\n"
    "}\n"
    "static int fail(const ippc_api *api, ippc_call *call, const ippc_value *a, int n) {\n"
    "  return api->error(call, \"bad thing %d\", 42);\n"
    "}\n"
    "static int silent_fail(const ippc_api *api, ippc_call *call, const ippc_value *a, int n) {\n"
    "  return 7;\n"
    "}\n"
    "static int spin(const ippc_api *api, ippc_call *call, const ippc_value *a, int n) {\n"
    "  while (!api->interrupted()) {}\n"
    "  return api->error(call, \"interrupted\");\n"
    "}\n"
    "static int info(const ippc_api *api, ippc_call *call, const ippc_value *a, int n) {\n"
    "  int s = 0; if (api->world != MPI_COMM_NULL) MPI_Comm_size(api->world, &s);\n"
    "  return api->return_integer(call, api->abi_version) || api->return_boolean(call,\n"
    "    api->size == sizeof *api) || api->return_string(call, api->engine_version,\n"
    "    strlen(api->engine_version)) || api->return_integer(call, s) ||\n"
    "    api->return_integer(call, inits) || api->return_integer(call, api->interrupted()) ||\n"
    "    api->return_integer(call, api->register_kernel(api, \"late\", info, NULL));\n"
    "}\n"
    "#ifndef NO_INIT\n"
    "int ippc_plugin_init(const ippc_api *api) {\n"
    "  inits++;\n"
    "#if defined(INIT_FAILS)\n"
    "  return api->init_error(api, \"needs a GPU\");\n"
    "#elif defined(INIT_FAILS_QUIETLY)\n"
    "  return 3;\n"
    "#elif defined(BAD_NAME)\n"
    "  return api->register_kernel(api, \"bad name!\", echo, NULL) ? 1 : 0;\n"
    "#else\n"
    "  return api->register_kernel(api, \"t_echo\", echo, \"echo\") ||\n"
    "         api->register_kernel(api, \"t_twice\", twice, NULL) ||\n"
    "         api->register_kernel(api, \"t_make\", make, NULL) ||\n"
    "         api->register_kernel(api, \"t_fail\", fail, NULL) ||\n"
    "         api->register_kernel(api, \"t_silent\", silent_fail, NULL) ||\n"
    "         api->register_kernel(api, \"t_spin\", spin, NULL) ||\n"
    "         api->register_kernel(api, \"t_info\", info, NULL);\n"
    "#endif\n"
    "}\n"
    "#endif\n";

/* ---------------------------------------------------------- helpers */

static int find_dirs(void)
{
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = 0;
    snprintf(build, sizeof build, "%s", dirname(dirname(exe))); /* <build>/tests/x */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", build);
    for (int up = 0; up < 6; up++) {
        char probe[1100];
        snprintf(probe, sizeof probe, "%s/include/ippc/plugin.h", dir);
        if (access(probe, R_OK) == 0) {
            snprintf(root, sizeof root, "%s", dir);
            return 0;
        }
        snprintf(dir, sizeof dir, "%s", dirname(dir));
    }
    return -1;
}

/* Compiles the test plugin with a -D switch (or none) into tmpdir/lib<name>.so. */
static int compile_plugin(const char *name, const char *define)
{
    char src[512], cmd[4096];
    snprintf(src, sizeof src, "%s/plugin.c", tmpdir);
    snprintf(cmd, sizeof cmd,
             "cc -std=c11 -shared -fPIC -I'%s/include' $(pkg-config --cflags mpich) %s%s "
             "-o '%s/lib%s.so' '%s' 2>&1",
             root, define ? "-D" : "", define ? define : "", tmpdir, name, src);
    /* A shell on purpose: the plugin is built as a user would, with $(pkg-config);
     * every word of cmd is ours (fixed names and the mkdtemp folder). */
    return system(cmd) == 0 ? 0 : -1; /* NOLINT(cert-env33-c) */
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ippc-test-plugin.XXXXXX");
    if (!mkdtemp(tmpdir) || find_dirs() < 0)
        return -1;
    char src[512];
    snprintf(src, sizeof src, "%s/plugin.c", tmpdir);
    FILE *f = fopen(src, "w");
    if (!f)
        return -1;
    int wrote = fputs(plugin_source, f) >= 0;
    if (fclose(f) != 0 || !wrote)
        return -1;
    have_cc = compile_plugin("good", NULL) == 0;
    if (have_cc) {
        const char *variants[][2] = {
            {"noabi", "NO_ABI"},         {"wrongabi", "WRONG_ABI"},       {"noinit", "NO_INIT"},
            {"initfails", "INIT_FAILS"}, {"quiet", "INIT_FAILS_QUIETLY"}, {"badname", "BAD_NAME"}};
        for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++)
            if (compile_plugin(variants[i][0], variants[i][1]) < 0)
                have_cc = 0;
    }
    snprintf(src, sizeof src, "%s/notelf.so", tmpdir);
    f = fopen(src, "w");
    if (!f)
        return -1;
    wrote = fputs("not a shared object\n", f) >= 0;
    if (fclose(f) != 0 || !wrote)
        return -1;
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static int group_teardown(void **state)
{
    (void)state;
    return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

static json_t *run(runtime *rt, json_t *task)
{
    json_t *res = runtime_run_task(rt, task, NULL, NULL);
    json_decref(task);
    assert_non_null(res);
    return res;
}

static json_t *load(runtime *rt, const char *path)
{
    return run(rt, json_pack("{s:s, s:s}", "op", "load", "library", path));
}

static json_t *execute(runtime *rt, const char *code)
{
    return run(rt, json_pack("{s:s, s:s}", "op", "execute", "code", code));
}

static void assert_status(json_t *res, const char *status)
{
    const char *got = json_string_value(json_object_get(res, "status"));
    if (!got || strcmp(got, status) != 0) {
        char *dump = json_dumps(res, JSON_INDENT(1));
        fail_msg("expected status %s: %s", status, dump);
    }
}

/* execute must return the value whose compact JSON is want. */
static void assert_exec(runtime *rt, const char *code, const char *want)
{
    json_t *res = execute(rt, code);
    assert_status(res, "ok");
    char *got = json_dumps(json_object_get(res, "value"), JSON_COMPACT | JSON_ENCODE_ANY);
    if (!got || strcmp(got, want) != 0)
        fail_msg("%s: expected %s, got %s", code, want, got ? got : "(no value)");
    free(got);
    json_decref(res);
}

static void assert_load_fails(runtime *rt, const char *path, const char *needle)
{
    json_t *res = load(rt, path);
    assert_status(res, "error");
    const char *ename = json_string_value(json_object_get(res, "ename"));
    const char *evalue = json_string_value(json_object_get(res, "evalue"));
    if (!ename || strcmp(ename, "PluginError") != 0 || !evalue || !strstr(evalue, needle))
        fail_msg("load %s: expected a PluginError mentioning '%s', got %s: %s", path, needle,
                 ename ? ename : "?", evalue ? evalue : "?");
    json_decref(res);
}

static const char *tmp_lib(const char *name)
{
    static char path[600];
    snprintf(path, sizeof path, "%s/lib%s.so", tmpdir, name);
    return path;
}

/* ---------------------------------------------------------- tests */

static void test_load_errors(void **state)
{
    runtime *rt = *state;
    assert_load_fails(rt, "/nonexistent/libnothing.so", "No such file or directory");
    assert_load_fails(rt, "", "empty library path");
    char notelf[600];
    snprintf(notelf, sizeof notelf, "%s/notelf.so", tmpdir);
    assert_load_fails(rt, notelf, "cannot load plugin");
    json_t *res = run(rt, json_pack("{s:s}", "op", "load"));
    assert_status(res, "error");
    assert_string_equal(json_string_value(json_object_get(res, "ename")), "ProtocolError");
    json_decref(res);
    if (!have_cc) {
        skip();
        return;
    }
    assert_load_fails(rt, tmp_lib("noabi"), "does not define ippc_plugin_abi");
    assert_load_fails(rt, tmp_lib("wrongabi"), "built for plugin ABI version 999");
    assert_load_fails(rt, tmp_lib("noinit"), "does not define ippc_plugin_init");
    assert_load_fails(rt, tmp_lib("initfails"), "failed: needs a GPU");
    assert_load_fails(rt, tmp_lib("quiet"), "it returned non-zero");
    assert_load_fails(rt, tmp_lib("badname"), "invalid kernel name 'bad name!'");
    /* the engine carries on, with nothing registered by the failures */
    assert_exec(rt, "return type(t_echo) .. (1 + 1)", "\"nil2\"");
}

static void test_kernel_calls(void **state)
{
    runtime *rt = *state;
    if (!have_cc) {
        skip();
        return;
    }
    json_t *res = load(rt, tmp_lib("good"));
    assert_status(res, "ok");
    json_t *kernels = json_object_get(json_object_get(res, "value"), "kernels");
    assert_int_equal(json_array_size(kernels), 7);
    assert_string_equal(json_string_value(json_array_get(kernels, 0)), "t_echo");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(res, "value"), "library")),
        tmp_lib("good"));
    json_decref(res);

    assert_exec(rt,
                "local a, b, c, d, e = t_echo(nil, true, 41, 1.25, 'abc') "
                "return {a == nil, b, c, d, e}",
                "[true,false,42,2.5,\"abc\"]");
    assert_exec(rt, "return t_echo(nd.zeros({2, 3}, 'int32'))", "623");
    assert_exec(rt, "return {t_echo(mpi.COMM_WORLD)}", "[\"comm\",1]");
    assert_exec(rt, "return select('#', t_echo())", "0");
    /* arrays write through, strided views included */
    assert_exec(rt, "local a = nd.ones(3) t_twice(a) return a:totable()", "[2.0,2.0,2.0]");
    assert_exec(rt,
                "local m = nd.arange(6, 'float64'):reshape(2, 3) t_twice(m:T()) "
                "t_twice(m:slice(1, 1)) return m:totable()",
                "[[0.0,4.0,8.0],[6.0,8.0,10.0]]");
    assert_exec(rt, "local m, s, f = t_make() return {m:dtype(), m:shape(), m:totable(), s, f}",
                "[\"int32\",[2,3],[[0,1,2],[3,4,5]],\"made\",1.5]");
    /* failures */
    res = execute(rt, "t_fail()");
    assert_status(res, "error");
    assert_non_null(
        strstr(json_string_value(json_object_get(res, "evalue")), "t_fail: bad thing 42"));
    json_decref(res);
    res = execute(rt, "t_silent()");
    assert_status(res, "error");
    assert_non_null(strstr(json_string_value(json_object_get(res, "evalue")), "no message"));
    json_decref(res);
    res = execute(rt, "t_echo({})");
    assert_status(res, "error");
    assert_non_null(
        strstr(json_string_value(json_object_get(res, "evalue")), "argument 1 is a table"));
    json_decref(res);
    res = execute(rt, "t_twice(nd.ones(2, 'int32'))");
    assert_status(res, "error");
    json_decref(res);
    /* api facts; registering after init is refused */
    assert_exec(rt, "local t = {t_info()} t[5] = t[5] >= 1 return t",
                "[1,true,\"" IPPC_VERSION "\",1,true,0,-1]");
    /* apply by name */
    res = run(rt, json_pack("{s:s, s:s, s:[i]}", "op", "apply", "function", "t_echo", "args", 9));
    assert_status(res, "ok");
    assert_int_equal(json_integer_value(json_object_get(res, "value")), 10);
    json_decref(res);
}

static void test_reload_reset_list(void **state)
{
    runtime *rt = *state;
    if (!have_cc) {
        skip();
        return;
    }
    json_decref(load(rt, tmp_lib("good")));
    assert_exec(rt,
                "inits_before = select(5, t_info()) t_echo = nil user_var = 1 "
                "return type(t_echo)",
                "\"nil\"");
    json_t *res = load(rt, tmp_lib("good")); /* again: globals back, no second init */
    assert_status(res, "ok");
    assert_int_equal(json_array_size(json_object_get(json_object_get(res, "value"), "kernels")), 7);
    json_decref(res);
    assert_exec(rt, "return select(5, t_info()) - inits_before", "0");
    res = run(rt, json_pack("{s:s}", "op", "list"));
    assert_status(res, "ok");
    json_t *listing = json_object_get(res, "value");
    assert_non_null(json_object_get(listing, "user_var"));
    assert_null(json_object_get(listing, "t_echo"));
    json_decref(res);
    res = run(rt, json_pack("{s:s}", "op", "reset"));
    assert_status(res, "ok");
    json_decref(res);
    assert_exec(rt, "return {type(user_var), type(t_echo), t_echo(1)}", "[\"nil\",\"function\",2]");
}

static void test_kernel_interrupt(void **state)
{
    runtime *rt = *state;
    if (!have_cc) {
        skip();
        return;
    }
    json_decref(load(rt, tmp_lib("good")));
    interrupter it;
    interrupter_start(&it, rt, 200);
    json_t *res = execute(rt, "t_spin()");
    interrupter_stop(&it);
    assert_status(res, "aborted");
    json_decref(res);
    assert_exec(rt, "return select(6, t_info())", "0"); /* cleared for the next task */
}

static void test_examples(void **state)
{
    runtime *rt = *state;
    char psum[1200], stencil[1200];
    snprintf(psum, sizeof psum, "%s/plugins/libpsum.so", build);
    snprintf(stencil, sizeof stencil, "%s/plugins/libstencil.so", build);
    if (access(psum, R_OK) != 0 || access(stencil, R_OK) != 0) {
        skip(); /* `make all` builds them */
        return;
    }
    json_t *res = load(rt, psum);
    assert_status(res, "ok");
    json_decref(res);
    res = load(rt, stencil);
    assert_status(res, "ok");
    json_decref(res);
    assert_exec(rt, "return {psum(nd.arange(16)), psum(nd.ones(4, 'float32')), psum(2)}",
                "[120,4.0,2]");
    assert_exec(rt,
                "local u = nd.array({100, 0, 0, 0, 50}, 'float64') local v = heat1d(u, 3, 0.25) "
                "local w = u:copy() for s = 1, 3 do local n = w:copy() for i = 2, 4 do "
                "n[i] = w[i] + 0.25 * (w[i - 1] - 2 * w[i] + w[i + 1]) end w = n end "
                "return {(v - w):max(), (w - v):max(), u[2]}",
                "[0.0,0.0,0.0]");
    res = execute(rt, "heat1d(nd.ones(3, 'int32'), 1, 0.1)");
    assert_status(res, "error");
    assert_non_null(strstr(json_string_value(json_object_get(res, "evalue")), "float64"));
    json_decref(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_load_errors, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_kernel_calls, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_reload_reset_list, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_kernel_interrupt, rt_setup, rt_teardown),
        cmocka_unit_test_setup_teardown(test_examples, rt_setup, rt_teardown),
    };
    return run_tests_with_mpi(MPI_THREAD_MULTIPLE, tests, group_setup, group_teardown);
}
