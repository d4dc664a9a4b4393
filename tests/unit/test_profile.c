/* test_profile.c — common/profile.c: the profile layout, name validation,
 * folders, and reading both connection files. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "profile.h"

static char tmp_root[] = "/tmp/ippc_test_profile_XXXXXX";

static int make_root(void **state)
{
    (void)state;
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int remove_root(void **state)
{
    (void)state;
    char command[sizeof tmp_root + 16];
    snprintf(command, sizeof command, "rm -rf %s", tmp_root);
    /* test cleanup of our own mkdtemp folder (no user input in command) */
    return system(command) == 0 ? 0 : -1; // NOLINT(cert-env33-c)
}

static void write_file(const char *path, const char *text)
{
    FILE *file = fopen(path, "w");
    assert_non_null(file);
    assert_true(fputs(text, file) >= 0);
    assert_int_equal(fclose(file), 0);
}

static void test_name_validation(void **state)
{
    (void)state;
    assert_true(profile_name_valid("default"));
    assert_true(profile_name_valid("my-profile_2.test"));
    assert_false(profile_name_valid(""));
    assert_false(profile_name_valid(".hidden"));
    assert_false(profile_name_valid("-option"));
    assert_false(profile_name_valid("a/b"));
    assert_false(profile_name_valid(".."));
    assert_false(profile_name_valid("with space"));
    char long_name[PROFILE_NAME_MAX + 1];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_false(profile_name_valid(long_name));
    long_name[PROFILE_NAME_MAX - 1] = '\0';
    assert_true(profile_name_valid(long_name));
}

static void test_layout_under_given_dir(void **state)
{
    (void)state;
    profile_paths p;
    char err[256] = "";
    assert_int_equal(profile_paths_init(&p, "/srv/ippc", "work", err, sizeof err), 0);
    assert_string_equal(p.name, "work");
    assert_string_equal(p.ippc_dir, "/srv/ippc");
    assert_string_equal(p.dir, "/srv/ippc/profile_work");
    assert_string_equal(p.security_dir, "/srv/ippc/profile_work/security");
    assert_string_equal(p.client_file, "/srv/ippc/profile_work/security/ippc-client.json");
    assert_string_equal(p.engine_file, "/srv/ippc/profile_work/security/ippc-engine.json");
    assert_string_equal(p.tasks_db_file, "/srv/ippc/profile_work/tasks.db");
    assert_string_equal(p.controller_lock_file, "/srv/ippc/profile_work/controller.lock");
    assert_string_equal(p.launcher_pid_file, "/srv/ippc/profile_work/pid/launcher.pid");
    assert_string_equal(p.controller_log, "/srv/ippc/profile_work/log/controller.log");
}

static void test_default_name_and_env_dir(void **state)
{
    (void)state;
    profile_paths p;
    char err[256] = "";
    setenv("IPPC_DIR", "/from/env", 1);
    assert_int_equal(profile_paths_init(&p, NULL, NULL, err, sizeof err), 0);
    assert_string_equal(p.dir, "/from/env/profile_default");
    /* --ippc-dir wins over $IPPC_DIR */
    assert_int_equal(profile_paths_init(&p, "/given", NULL, err, sizeof err), 0);
    assert_string_equal(p.dir, "/given/profile_default");
    unsetenv("IPPC_DIR");
    setenv("HOME", "/home/someone", 1);
    assert_int_equal(profile_paths_init(&p, NULL, "x", err, sizeof err), 0);
    assert_string_equal(p.dir, "/home/someone/.ippc/profile_x");
}

static void test_relative_dir_becomes_absolute(void **state)
{
    (void)state;
    profile_paths p;
    char err[256] = "";
    char cwd[PATH_MAX], want[PATH_MAX + 64];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(profile_paths_init(&p, "rel/dir", "a", err, sizeof err), 0);
    snprintf(want, sizeof want, "%s/rel/dir/profile_a", cwd);
    assert_string_equal(p.dir, want);
}

static void test_bad_name_is_refused(void **state)
{
    (void)state;
    profile_paths p;
    char err[256] = "";
    assert_int_equal(profile_paths_init(&p, "/x", "../escape", err, sizeof err), -1);
    assert_non_null(strstr(err, "invalid profile name"));
}

static void test_too_long_dir_is_refused(void **state)
{
    (void)state;
    profile_paths p;
    char err[256] = "";
    char *dir = malloc(PATH_MAX);
    assert_non_null(dir);
    dir[0] = '/';
    memset(dir + 1, 'd', PATH_MAX - 40);
    dir[PATH_MAX - 39] = '\0';
    assert_int_equal(profile_paths_init(&p, dir, "default", err, sizeof err), -1);
    assert_non_null(strstr(err, "too long"));
    free(dir);
}

static void test_make_dirs_mode_0700(void **state)
{
    (void)state;
    profile_paths p;
    char err[256] = "";
    struct stat st;
    assert_int_equal(profile_paths_init(&p, tmp_root, "dirs", err, sizeof err), 0);
    assert_int_equal(profile_make_security_dir(&p, err, sizeof err), 0);
    assert_int_equal(stat(p.security_dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(stat(p.log_dir, &st), -1); /* only security/ */
    assert_int_equal(profile_make_dirs(&p, err, sizeof err), 0);
    assert_int_equal(stat(p.log_dir, &st), 0);
    assert_int_equal(stat(p.pid_dir, &st), 0);
    assert_int_equal(profile_make_dirs(&p, err, sizeof err), 0); /* again: fine */
}

static void test_connection_read(void **state)
{
    (void)state;
    profile_paths p;
    char err[256] = "";
    connection_info info;
    assert_int_equal(profile_paths_init(&p, tmp_root, "conn", err, sizeof err), 0);
    assert_int_equal(profile_make_security_dir(&p, err, sizeof err), 0);
    assert_int_equal(connection_read(p.client_file, &info, err, sizeof err), -1);
    assert_int_equal(errno, ENOENT);
    write_file(p.client_file, "{\"url\": \"http://127.0.0.1:1\", \"ws_url\": \"ws://x/ws\", "
                              "\"token\": \"t\", \"profile\": \"conn\", \"pid\": 42}");
    assert_int_equal(connection_read(p.client_file, &info, err, sizeof err), 0);
    assert_string_equal(info.url, "http://127.0.0.1:1");
    assert_string_equal(info.ws_url, "ws://x/ws");
    assert_string_equal(info.token, "t");
    assert_int_equal(info.pid, 42);
    assert_string_equal(info.engine_file, "");
    write_file(p.client_file, "{\"url\": \"http://127.0.0.1:1\"}");
    assert_int_equal(connection_read(p.client_file, &info, err, sizeof err), -2);
    write_file(p.client_file, "not json");
    assert_int_equal(connection_read(p.client_file, &info, err, sizeof err), -2);
}

static void test_engine_connection_read(void **state)
{
    (void)state;
    profile_paths p;
    char err[512] = "";
    engine_connection_info info;
    assert_int_equal(profile_paths_init(&p, tmp_root, "engine", err, sizeof err), 0);
    assert_int_equal(profile_make_security_dir(&p, err, sizeof err), 0);
    assert_int_equal(engine_connection_read(p.engine_file, &info, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot read"));
    write_file(p.engine_file, "{\"url\": \"ws://127.0.0.1:5/engine\", \"key\": \"k\"}");
    assert_int_equal(engine_connection_read(p.engine_file, &info, err, sizeof err), 0);
    assert_string_equal(info.url, "ws://127.0.0.1:5/engine");
    assert_string_equal(info.key, "k");
    write_file(p.engine_file, "{\"url\": \"ws://127.0.0.1:5/engine\"}");
    assert_int_equal(engine_connection_read(p.engine_file, &info, err, sizeof err), -1);
    assert_non_null(strstr(err, "lacks"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_validation),
        cmocka_unit_test(test_layout_under_given_dir),
        cmocka_unit_test(test_default_name_and_env_dir),
        cmocka_unit_test(test_relative_dir_becomes_absolute),
        cmocka_unit_test(test_bad_name_is_refused),
        cmocka_unit_test(test_too_long_dir_is_refused),
        cmocka_unit_test(test_make_dirs_mode_0700),
        cmocka_unit_test(test_connection_read),
        cmocka_unit_test(test_engine_connection_read),
    };
    return cmocka_run_group_tests(tests, make_root, remove_root);
}
