/* profile.c — profile folders and connection files (see profile.h). */
#include "profile.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool profile_name_valid(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len >= PROFILE_NAME_MAX || name[0] == '.' || name[0] == '-')
        return false;
    for (const char *c = name; *c != '\0'; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '.')
            return false;
    return true;
}

/* out = a + "/" + b; -1 if it does not fit. */
static int path_join(char *out, size_t out_len, const char *a, const char *b)
{
    int written = snprintf(out, out_len, "%s/%s", a, b);

    return written < 0 || (size_t)written >= out_len ? -1 : 0;
}

static int default_ippc_dir(char *out, size_t out_len, char *err, size_t err_len)
{
    const char *env = getenv("IPPC_DIR");
    const char *home = getenv("HOME");
    struct passwd entry;
    struct passwd *user = NULL;
    char buf[4096]; /* getpwuid_r's strings; pw_dir points into it */

    if (env != NULL && env[0] != '\0')
        return snprintf(out, out_len, "%s", env) < (int)out_len ? 0 : -1;
    if (home == NULL || home[0] == '\0') {
        /* reentrant: the controller calls this with other threads running */
        if (getpwuid_r(getuid(), &entry, buf, sizeof buf, &user) != 0)
            user = NULL;
        home = user != NULL ? user->pw_dir : NULL;
    }
    if (home == NULL) {
        snprintf(err, err_len, "cannot find your home folder: set IPPC_DIR or HOME");
        return -1;
    }
    return path_join(out, out_len, home, ".ippc");
}

int profile_paths_init(profile_paths *paths, const char *ippc_dir, const char *name, char *err,
                       size_t err_len)
{
    char given[PATH_MAX];
    char cwd[PATH_MAX];
    char folder[PROFILE_NAME_MAX + 16];

    memset(paths, 0, sizeof *paths);
    if (name == NULL)
        name = "default";
    if (!profile_name_valid(name)) {
        snprintf(err, err_len,
                 "invalid profile name '%s': use letters, digits, '_', '-' and '.' "
                 "(at most %d characters, not starting with '.' or '-')",
                 name, PROFILE_NAME_MAX - 1);
        return -1;
    }
    snprintf(paths->name, sizeof paths->name, "%s", name);

    if (ippc_dir != NULL && ippc_dir[0] != '\0') {
        if (snprintf(given, sizeof given, "%s", ippc_dir) >= (int)sizeof given)
            goto too_long;
    } else if (default_ippc_dir(given, sizeof given, err, err_len) < 0) {
        return -1;
    }
    if (given[0] == '/') {
        snprintf(paths->ippc_dir, sizeof paths->ippc_dir, "%s", given);
    } else {
        if (getcwd(cwd, sizeof cwd) == NULL) {
            snprintf(err, err_len, "getcwd: %s", strerror(errno));
            return -1;
        }
        if (path_join(paths->ippc_dir, sizeof paths->ippc_dir, cwd, given) < 0)
            goto too_long;
    }

    snprintf(folder, sizeof folder, "profile_%s", name);
    if (path_join(paths->dir, sizeof paths->dir, paths->ippc_dir, folder) < 0 ||
        path_join(paths->security_dir, PATH_MAX, paths->dir, "security") < 0 ||
        path_join(paths->log_dir, PATH_MAX, paths->dir, "log") < 0 ||
        path_join(paths->pid_dir, PATH_MAX, paths->dir, "pid") < 0 ||
        path_join(paths->client_file, PATH_MAX, paths->security_dir, "ippc-client.json") < 0 ||
        path_join(paths->engine_file, PATH_MAX, paths->security_dir, "ippc-engine.json") < 0 ||
        path_join(paths->tasks_db_file, PATH_MAX, paths->dir, "tasks.db") < 0 ||
        path_join(paths->controller_lock_file, PATH_MAX, paths->dir, "controller.lock") < 0 ||
        path_join(paths->launcher_pid_file, PATH_MAX, paths->pid_dir, "launcher.pid") < 0 ||
        path_join(paths->launcher_lock_file, PATH_MAX, paths->pid_dir, "launcher.lock") < 0 ||
        path_join(paths->launcher_socket, PATH_MAX, paths->pid_dir, "launcher.sock") < 0 ||
        path_join(paths->jobs_dir, PATH_MAX, paths->dir, "jobs") < 0 ||
        path_join(paths->launcher_log, PATH_MAX, paths->log_dir, "launcher.log") < 0 ||
        path_join(paths->controller_log, PATH_MAX, paths->log_dir, "controller.log") < 0 ||
        path_join(paths->engines_log, PATH_MAX, paths->log_dir, "engines.log") < 0)
        goto too_long;
    return 0;

too_long:
    snprintf(err, err_len, "the ippc folder path is too long");
    return -1;
}

/* mkdir -p with mode 0700 for the folders it creates. */
static int make_dir_tree(const char *path, char *err, size_t err_len)
{
    char partial[PATH_MAX];
    size_t len = strlen(path);

    if (len >= sizeof partial)
        return -1;
    memcpy(partial, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (partial[i] != '/' && partial[i] != '\0')
            continue;
        partial[i] = '\0';
        if (mkdir(partial, 0700) < 0 && errno != EEXIST) {
            snprintf(err, err_len, "cannot create %s: %s", partial, strerror(errno));
            return -1;
        }
        partial[i] = path[i];
    }
    return 0;
}

int profile_make_dirs(const profile_paths *paths, char *err, size_t err_len)
{
    if (make_dir_tree(paths->security_dir, err, err_len) < 0 ||
        make_dir_tree(paths->log_dir, err, err_len) < 0 ||
        make_dir_tree(paths->pid_dir, err, err_len) < 0 ||
        make_dir_tree(paths->jobs_dir, err, err_len) < 0)
        return -1;
    return 0;
}

int profile_make_security_dir(const profile_paths *paths, char *err, size_t err_len)
{
    return make_dir_tree(paths->security_dir, err, err_len);
}

static void copy_string_field(const json_t *object, const char *key, char *out, size_t out_len)
{
    const char *value = json_string_value(json_object_get(object, key));

    snprintf(out, out_len, "%s", value != NULL ? value : "");
}

int connection_read(const char *path, connection_info *info, char *err, size_t err_len)
{
    json_error_t json_err;
    json_t *root;
    json_t *pid;

    memset(info, 0, sizeof *info);
    if (access(path, F_OK) < 0 && errno == ENOENT)
        return -1;
    root = json_load_file(path, 0, &json_err);
    if (root == NULL) {
        if (access(path, F_OK) < 0 && errno == ENOENT)
            return -1;
        snprintf(err, err_len, "cannot read %s: %s", path, json_err.text);
        return -2;
    }
    copy_string_field(root, "url", info->url, sizeof info->url);
    copy_string_field(root, "ws_url", info->ws_url, sizeof info->ws_url);
    copy_string_field(root, "token", info->token, sizeof info->token);
    copy_string_field(root, "profile", info->profile, sizeof info->profile);
    copy_string_field(root, "engine_file", info->engine_file, sizeof info->engine_file);
    pid = json_object_get(root, "pid");
    if (json_is_integer(pid) && json_integer_value(pid) > 0 && json_integer_value(pid) <= INT_MAX)
        info->pid = (pid_t)json_integer_value(pid);
    json_decref(root);
    if (info->url[0] == '\0' || info->token[0] == '\0') {
        snprintf(err, err_len, "%s is not an ippc connection file (no url or token)", path);
        return -2;
    }
    return 0;
}

int engine_connection_read(const char *path, engine_connection_info *info, char *err,
                           size_t err_len)
{
    json_error_t json_err;
    json_t *root = json_load_file(path, 0, &json_err);

    memset(info, 0, sizeof *info);
    if (root == NULL) {
        snprintf(err, err_len, "cannot read %s: %s", path, json_err.text);
        return -1;
    }
    const char *url = json_string_value(json_object_get(root, "url"));
    const char *key = json_string_value(json_object_get(root, "key"));
    if (url == NULL || key == NULL) {
        snprintf(err, err_len, "%s lacks \"url\" or \"key\"", path);
        json_decref(root);
        return -1;
    }
    snprintf(info->url, sizeof info->url, "%s", url);
    snprintf(info->key, sizeof info->key, "%s", key);
    json_decref(root);
    return 0;
}
