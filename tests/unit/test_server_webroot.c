/* test_server_webroot.c — server/webroot.c: which URL paths name a dashboard
 * file (and that none leaves its folder), content types, cache validators,
 * and opening files below a real temporary root: symbolic links (inside or
 * out), FIFOs, folders and a missing root are refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "webroot.h"

/* ------------------------------------------------------------ the parser */

static void expect_path(const char *url, webroot_dir want_dir, const char *want_rel)
{
    webroot_dir dir = (webroot_dir)-1;
    char rel[WEBROOT_MAX_PATH];
    ippc_error err = {0};
    int rc = webroot_parse(url, &dir, rel, sizeof rel, &err);
    if (rc != 0)
        fail_msg("%s refused: %s", url, err.message);
    assert_int_equal(dir, want_dir);
    assert_string_equal(rel, want_rel);
}

static void expect_refused(const char *url, const char *code)
{
    webroot_dir dir;
    char rel[WEBROOT_MAX_PATH];
    ippc_error err = {0};
    if (webroot_parse(url, &dir, rel, sizeof rel, &err) == 0)
        fail_msg("%s was taken as %s", url, rel);
    assert_string_equal(err.code, code);
    assert_true(err.message[0] != '\0');
}

static void test_parse_names_files(void **state)
{
    (void)state;
    expect_path("/", WEBROOT_WEB, "index.html");
    expect_path("/index.html", WEBROOT_WEB, "index.html");
    expect_path("/app.js", WEBROOT_WEB, "app.js");
    expect_path("/css/dashboard.css", WEBROOT_WEB, "css/dashboard.css");
    expect_path("/a/b/c/d/e/f/g/h.js", WEBROOT_WEB, "a/b/c/d/e/f/g/h.js"); /* 8 deep */
    expect_path("/file.name-with_dots..js", WEBROOT_WEB, "file.name-with_dots..js");
    expect_path("/sdk/ippc.js", WEBROOT_SDK, "ippc.js");
    /* /sdkx is not the SDK folder, just a file in web/ */
    expect_path("/sdkx/ippc.js", WEBROOT_WEB, "sdkx/ippc.js");
    expect_path("/sdk", WEBROOT_WEB, "sdk");
}

static void test_parse_refuses_ways_out(void **state)
{
    (void)state;
    /* traversal, however spelled once libmicrohttpd has decoded the path */
    expect_refused("/..", ERR_BAD_REQUEST);
    expect_refused("/../etc/passwd", ERR_BAD_REQUEST);
    expect_refused("/css/../../etc/passwd", ERR_BAD_REQUEST);
    expect_refused("/css/..", ERR_BAD_REQUEST);
    expect_refused("/./index.html", ERR_BAD_REQUEST);
    expect_refused("/sdk/../index.html", ERR_BAD_REQUEST);
    expect_refused("/sdk/..", ERR_BAD_REQUEST);
    expect_refused("/%2e%2e/etc/passwd", ERR_BAD_REQUEST); /* encoded twice */
    expect_refused("/%2E%2E%2Fetc", ERR_BAD_REQUEST);
    expect_refused("/..%2fetc", ERR_BAD_REQUEST);
    expect_refused("/..\\etc\\passwd", ERR_BAD_REQUEST);
    expect_refused("/css\\..\\..\\x", ERR_BAD_REQUEST);
    /* absolute and empty segments */
    expect_refused("//etc/passwd", ERR_BAD_REQUEST);
    expect_refused("/css//x.css", ERR_BAD_REQUEST);
    expect_refused("/css/", ERR_BAD_REQUEST);
    expect_refused("", ERR_BAD_REQUEST);
    expect_refused("index.html", ERR_BAD_REQUEST);
    expect_refused("C:/x", ERR_BAD_REQUEST);
    expect_refused(NULL, ERR_BAD_REQUEST);
    /* hidden files */
    expect_refused("/.git/config", ERR_BAD_REQUEST);
    expect_refused("/.htpasswd", ERR_BAD_REQUEST);
    expect_refused("/sdk/.hidden.js", ERR_BAD_REQUEST);
    /* other bytes: query remnants, spaces, controls, UTF-8, ~ */
    expect_refused("/index.html?x", ERR_BAD_REQUEST);
    expect_refused("/a b.js", ERR_BAD_REQUEST);
    expect_refused("/a\tb", ERR_BAD_REQUEST);
    expect_refused("/a\x7f", ERR_BAD_REQUEST);
    expect_refused("/\xc3\xa9.js", ERR_BAD_REQUEST);
    expect_refused("/~root", ERR_BAD_REQUEST);
    expect_refused("/a:b", ERR_BAD_REQUEST);
}

static void test_parse_limits_and_sdk(void **state)
{
    (void)state;
    /* the SDK: .js files at its top level only */
    expect_refused("/sdk/", ERR_BAD_REQUEST);
    expect_refused("/sdk/test/x.js", ERR_NOT_FOUND);
    expect_refused("/sdk/package.json", ERR_NOT_FOUND);
    expect_refused("/sdk/.js", ERR_BAD_REQUEST);
    expect_refused("/sdk/js", ERR_NOT_FOUND);
    /* depth, segment and path length */
    expect_refused("/a/b/c/d/e/f/g/h/i.js", ERR_NOT_FOUND);
    char long_segment[WEBROOT_MAX_SEGMENT + 3];
    long_segment[0] = '/';
    memset(long_segment + 1, 'a', WEBROOT_MAX_SEGMENT + 1);
    long_segment[WEBROOT_MAX_SEGMENT + 2] = '\0';
    expect_refused(long_segment, ERR_BAD_REQUEST);
    long_segment[WEBROOT_MAX_SEGMENT + 1] = '\0'; /* exactly the limit */
    expect_path(long_segment, WEBROOT_WEB, long_segment + 1);
    char long_path[WEBROOT_MAX_PATH + 8];
    size_t n = 0;
    while (n < WEBROOT_MAX_PATH + 2) {
        memcpy(long_path + n, "/aaa", 4);
        n += 4;
    }
    long_path[n] = '\0';
    expect_refused(long_path, ERR_NOT_FOUND);
}

static void test_content_types(void **state)
{
    (void)state;
    assert_string_equal(webroot_content_type("index.html"), "text/html; charset=utf-8");
    assert_string_equal(webroot_content_type("css/a.css"), "text/css; charset=utf-8");
    assert_string_equal(webroot_content_type("ippc.js"), "text/javascript; charset=utf-8");
    assert_string_equal(webroot_content_type("x.mjs"), "text/javascript; charset=utf-8");
    assert_string_equal(webroot_content_type("icon.svg"), "image/svg+xml");
    assert_string_equal(webroot_content_type("shot.PNG"), "image/png");
    assert_string_equal(webroot_content_type("data.json"), "application/json");
    assert_string_equal(webroot_content_type("README"), "application/octet-stream");
    assert_string_equal(webroot_content_type("a.js/README"), "application/octet-stream");
    assert_string_equal(webroot_content_type("x.exe"), "application/octet-stream");
}

static void test_not_modified(void **state)
{
    (void)state;
    webroot_file f = {.fd = -1};
    snprintf(f.etag, sizeof f.etag, "\"20-abc-7\"");
    snprintf(f.last_modified, sizeof f.last_modified, "Tue, 01 Dec 2026 10:00:00 GMT");
    assert_true(webroot_not_modified(&f, "\"20-abc-7\"", NULL));
    assert_true(webroot_not_modified(&f, "W/\"20-abc-7\"", NULL));
    assert_true(webroot_not_modified(&f, "\"x\", \"20-abc-7\" ,\"y\"", NULL));
    assert_true(webroot_not_modified(&f, "*", NULL));
    assert_false(webroot_not_modified(&f, "\"20-abc-8\"", NULL));
    assert_false(webroot_not_modified(&f, "\"20-abc-7", NULL));
    assert_false(webroot_not_modified(&f, "", NULL));
    assert_false(webroot_not_modified(&f, ", ,", NULL));
    /* If-None-Match decides when present */
    assert_false(webroot_not_modified(&f, "\"other\"", f.last_modified));
    assert_true(webroot_not_modified(&f, NULL, "Tue, 01 Dec 2026 10:00:00 GMT"));
    assert_false(webroot_not_modified(&f, NULL, "Tue, 01 Dec 2026 10:00:01 GMT"));
    assert_false(webroot_not_modified(&f, NULL, NULL));
    f.last_modified[0] = '\0';
    assert_false(webroot_not_modified(&f, NULL, ""));
}

/* ------------------------------------------------------- the file system */

typedef struct tree {
    char root[256]; /* a temp folder: web/, sdk/, outside.txt */
    char web[PATH_MAX];
    char sdk[PATH_MAX];
    char outside[PATH_MAX]; /* a file next to web/, not below it */
} tree;

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static int tree_teardown(void **state);

/* 0 when every step worked. */
static int tree_build(tree *t)
{
    char path[PATH_MAX * 2];
    snprintf(t->web, sizeof t->web, "%s/web", t->root);
    snprintf(t->sdk, sizeof t->sdk, "%s/sdk", t->root);
    snprintf(t->outside, sizeof t->outside, "%s/outside.txt", t->root);
    snprintf(path, sizeof path, "%s/css", t->web);
    if (mkdir(t->web, 0755) < 0 || mkdir(t->sdk, 0755) < 0 || mkdir(path, 0755) < 0)
        return -1;
    write_file(t->web, "index.html", "<!doctype html>");
    write_file(t->web, "css/app.css", "body{}");
    write_file(t->sdk, "ippc.js", "export {}");
    write_file(t->root, "outside.txt", "secret");
    /* links: to a file outside, to a file inside, a folder out, a folder in */
    static const char *const links[][2] = {
        {NULL, "leak.txt"}, {"index.html", "alias.html"}, {"..", "up"}, {"css", "style"}};
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", t->web, links[i][1]);
        if (symlink(links[i][0] ? links[i][0] : t->outside, path) < 0)
            return -1;
    }
    snprintf(path, sizeof path, "%s/pipe.js", t->web);
    return mkfifo(path, 0644);
}

static int tree_setup(void **state)
{
    tree *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    *state = t;
    snprintf(t->root, sizeof t->root, "/tmp/ippc-webroot-XXXXXX");
    if (!mkdtemp(t->root)) {
        free(t);
        return -1;
    }
    if (tree_build(t) < 0) {
        tree_teardown(state);
        return -1;
    }
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int tree_teardown(void **state)
{
    tree *t = *state;
    int rc = nftw(t->root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(t);
    return rc;
}

/* Opens url below t's roots: 0 with the file's text in text, or -1 + err. */
static int fetch(const tree *t, const char *url, char *text, size_t text_len, ippc_error *err,
                 webroot_file *out)
{
    webroot *w = webroot_new(t->web, t->sdk);
    assert_non_null(w);
    webroot_dir dir = WEBROOT_WEB;
    char rel[WEBROOT_MAX_PATH];
    int rc = webroot_parse(url, &dir, rel, sizeof rel, err);
    if (rc == 0)
        rc = webroot_open_file(w, dir, rel, out, err);
    webroot_free(w);
    if (rc < 0)
        return rc;
    ssize_t n = read(out->fd, text, text_len - 1);
    assert_true(n >= 0);
    text[n] = '\0';
    assert_int_equal((uint64_t)n, out->size);
    close(out->fd);
    return 0;
}

static void test_serves_files_below_the_roots(void **state)
{
    tree *t = *state;
    char text[256];
    ippc_error err = {0};
    webroot_file f = {.fd = -1};
    assert_int_equal(fetch(t, "/", text, sizeof text, &err, &f), 0);
    assert_string_equal(text, "<!doctype html>");
    assert_string_equal(f.content_type, "text/html; charset=utf-8");
    assert_true(f.etag[0] == '"' && f.etag[strlen(f.etag) - 1] == '"');
    assert_non_null(strstr(f.last_modified, " GMT"));
    assert_int_equal(fetch(t, "/css/app.css", text, sizeof text, &err, &f), 0);
    assert_string_equal(text, "body{}");
    assert_string_equal(f.content_type, "text/css; charset=utf-8");
    assert_int_equal(fetch(t, "/sdk/ippc.js", text, sizeof text, &err, &f), 0);
    assert_string_equal(text, "export {}");
    assert_string_equal(f.content_type, "text/javascript; charset=utf-8");
    /* the validator changes with the file */
    char before[64];
    assert_int_equal(fetch(t, "/css/app.css", text, sizeof text, &err, &f), 0);
    memcpy(before, f.etag, sizeof before);
    write_file(t->web, "css/app.css", "body{color:red}");
    assert_int_equal(fetch(t, "/css/app.css", text, sizeof text, &err, &f), 0);
    assert_string_not_equal(before, f.etag);
}

static void expect_not_found(const tree *t, const char *url)
{
    char text[256];
    ippc_error err = {0};
    webroot_file f = {.fd = -1};
    if (fetch(t, url, text, sizeof text, &err, &f) == 0)
        fail_msg("%s was served: %s", url, text);
    assert_string_equal(err.code, ERR_NOT_FOUND);
}

static void test_refuses_links_fifos_and_folders(void **state)
{
    tree *t = *state;
    expect_not_found(t, "/leak.txt");       /* a link to a file outside */
    expect_not_found(t, "/up/outside.txt"); /* a link to the parent folder */
    expect_not_found(t, "/alias.html");     /* even a link that stays inside */
    expect_not_found(t, "/style/app.css");  /* a linked folder */
    expect_not_found(t, "/pipe.js");        /* a FIFO: refused, without blocking */
    expect_not_found(t, "/css");            /* a folder */
    expect_not_found(t, "/missing.html");
    expect_not_found(t, "/index.html/x");
    expect_not_found(t, "/sdk/missing.js");
}

static void test_root_missing_or_linked(void **state)
{
    tree *t = *state;
    /* a root that is a link itself is the operator's choice: followed */
    char linked[PATH_MAX + 8];
    snprintf(linked, sizeof linked, "%s/weblink", t->root);
    assert_int_equal(symlink(t->web, linked), 0);
    webroot *w = webroot_new(linked, "/nonexistent/ippc-sdk");
    assert_non_null(w);
    assert_string_equal(webroot_dir_path(w, WEBROOT_WEB), linked);
    ippc_error err = {0};
    webroot_file f = {.fd = -1};
    assert_int_equal(webroot_open_file(w, WEBROOT_WEB, "index.html", &f, &err), 0);
    close(f.fd);
    /* a missing root: not_found that names the folder and the option */
    assert_int_equal(webroot_open_file(w, WEBROOT_SDK, "ippc.js", &f, &err), -1);
    assert_string_equal(err.code, ERR_NOT_FOUND);
    assert_non_null(strstr(err.message, "/nonexistent/ippc-sdk"));
    assert_non_null(strstr(err.message, "--sdk-root"));
    webroot_free(w);
    webroot_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_names_files),
        cmocka_unit_test(test_parse_refuses_ways_out),
        cmocka_unit_test(test_parse_limits_and_sdk),
        cmocka_unit_test(test_content_types),
        cmocka_unit_test(test_not_modified),
        cmocka_unit_test_setup_teardown(test_serves_files_below_the_roots, tree_setup,
                                        tree_teardown),
        cmocka_unit_test_setup_teardown(test_refuses_links_fifos_and_folders, tree_setup,
                                        tree_teardown),
        cmocka_unit_test_setup_teardown(test_root_missing_or_linked, tree_setup, tree_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
