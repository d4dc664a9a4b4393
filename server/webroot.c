/* webroot.c — the dashboard's static files (see webroot.h).
 *
 * The parser decides on bytes alone and is the only gate: whatever it lets
 * through is a relative path of plain segments, so the file system walk
 * below never meets "..", an absolute path or an empty segment, and refuses
 * symbolic links itself (O_NOFOLLOW on every step).
 */
#include "webroot.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct webroot {
    char *dirs[2]; /* indexed by webroot_dir */
};

static int segment_byte_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

/* Checks the segments of rel ('/'-separated): each 1..WEBROOT_MAX_SEGMENT
 * allowed bytes, not starting with '.', at most max_depth of them.  0 or -1
 * with err. */
static int segments_ok(const char *rel, int max_depth, ippc_error *err)
{
    int depth = 0;
    const char *p = rel;
    for (;;) {
        const char *start = p;
        while (*p && *p != '/') {
            if (!segment_byte_ok((unsigned char)*p))
                return ippc_error_set(err, ERR_BAD_REQUEST,
                                      "a file path uses letters, digits, '.', '_' and '-' only");
            p++;
        }
        size_t len = (size_t)(p - start);
        if (len == 0)
            return ippc_error_set(err, ERR_BAD_REQUEST, "a file path has no empty segments");
        if (start[0] == '.')
            return ippc_error_set(err, ERR_BAD_REQUEST,
                                  "a file path has no '.' or '..' segments and no hidden files");
        if (len > WEBROOT_MAX_SEGMENT)
            return ippc_error_set(err, ERR_BAD_REQUEST, "a file path segment is too long");
        if (++depth > max_depth)
            return ippc_error_set(err, ERR_NOT_FOUND, "no such file (too deep)");
        if (!*p)
            return 0;
        p++; /* past '/' */
    }
}

int webroot_parse(const char *url_path, webroot_dir *dir, char *rel, size_t rel_len,
                  ippc_error *err)
{
    assert(rel_len >= WEBROOT_MAX_PATH);
    if (!url_path || url_path[0] != '/')
        return ippc_error_set(err, ERR_BAD_REQUEST, "a file path starts with '/'");
    const char *path = url_path + 1;
    size_t len = strlen(path);
    if (len >= WEBROOT_MAX_PATH)
        return ippc_error_set(err, ERR_NOT_FOUND, "no such file (path too long)");
    if (len == 0) {
        *dir = WEBROOT_WEB;
        snprintf(rel, rel_len, "index.html");
        return 0;
    }
    if (strncmp(path, "sdk/", 4) == 0) {
        /* The SDK folder's top level holds the module and its tests' folders:
         * only its .js files are served. */
        const char *name = path + 4;
        if (segments_ok(name, 1, err) < 0)
            return -1;
        size_t n = strlen(name);
        if (n < 4 || strcmp(name + n - 3, ".js") != 0)
            return ippc_error_set(err, ERR_NOT_FOUND, "no such file: the SDK serves .js files");
        *dir = WEBROOT_SDK;
        memcpy(rel, name, n + 1);
        return 0;
    }
    if (segments_ok(path, WEBROOT_MAX_DEPTH, err) < 0)
        return -1;
    *dir = WEBROOT_WEB;
    memcpy(rel, path, len + 1);
    return 0;
}

const char *webroot_content_type(const char *name)
{
    static const struct {
        const char *ext;
        const char *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"json", "application/json"},
        {"map", "application/json"},
        {"svg", "image/svg+xml"},
        {"png", "image/png"},
        {"ico", "image/x-icon"},
        {"txt", "text/plain; charset=utf-8"},
        {"md", "text/markdown; charset=utf-8"},
        {"woff2", "font/woff2"},
        {"webmanifest", "application/manifest+json"},
    };
    const char *slash = strrchr(name, '/');
    const char *dot = strrchr(slash ? slash + 1 : name, '.');
    if (dot)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

/* 1 if the comma-separated entity-tag list names etag (weak comparison: a
 * W/ prefix on either side is ignored, RFC 9110 13.1.2). */
static int etag_listed(const char *list, const char *etag)
{
    const char *bare = etag[0] == 'W' && etag[1] == '/' ? etag + 2 : etag;
    size_t n = strlen(bare);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end - start == 1 && *start == '*')
            return 1;
        if (end - start > 2 && start[0] == 'W' && start[1] == '/')
            start += 2;
        if ((size_t)(end - start) == n && memcmp(start, bare, n) == 0)
            return 1;
    }
    return 0;
}

int webroot_not_modified(const webroot_file *f, const char *if_none_match,
                         const char *if_modified_since)
{
    if (if_none_match)
        return etag_listed(if_none_match, f->etag);
    /* A browser sends back the Last-Modified it was given: the exact string
     * is enough, and no date parser has to be trusted. */
    return if_modified_since && f->last_modified[0] &&
           strcmp(if_modified_since, f->last_modified) == 0;
}

webroot *webroot_new(const char *web_dir, const char *sdk_dir)
{
    webroot *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->dirs[WEBROOT_WEB] = strdup(web_dir);
    w->dirs[WEBROOT_SDK] = strdup(sdk_dir);
    if (!w->dirs[WEBROOT_WEB] || !w->dirs[WEBROOT_SDK]) {
        webroot_free(w);
        return NULL;
    }
    return w;
}

void webroot_free(webroot *w)
{
    if (!w)
        return;
    free(w->dirs[0]);
    free(w->dirs[1]);
    free(w);
}

const char *webroot_dir_path(const webroot *w, webroot_dir dir)
{
    assert(dir == WEBROOT_WEB || dir == WEBROOT_SDK);
    return w->dirs[dir];
}

static int not_found(ippc_error *err, const char *rel)
{
    return ippc_error_set(err, ERR_NOT_FOUND, "no such file: %.200s", rel);
}

int webroot_open_file(const webroot *w, webroot_dir dir, const char *rel, webroot_file *out,
                      ippc_error *err)
{
    assert(dir == WEBROOT_WEB || dir == WEBROOT_SDK);
    assert(rel[0] && rel[0] != '/' && strlen(rel) < WEBROOT_MAX_PATH);
    /* The root is the operator's choice and may itself be a link. */
    int at = open(w->dirs[dir], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (at < 0)
        return ippc_error_set(err, ERR_NOT_FOUND, "no such file: the folder %.300s is missing (%s)",
                              w->dirs[dir], dir == WEBROOT_WEB ? "--web-root" : "--sdk-root");
    char segment[WEBROOT_MAX_SEGMENT + 1];
    const char *p = rel;
    int fd = -1;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        assert(len > 0 && len <= WEBROOT_MAX_SEGMENT); /* webroot_parse saw to it */
        memcpy(segment, p, len);
        segment[len] = '\0';
        int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | (slash ? O_DIRECTORY : 0);
        fd = openat(at, segment, flags);
        close(at);
        if (fd < 0)
            return not_found(err, rel);
        if (!slash)
            break;
        at = fd;
        p = slash + 1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return not_found(err, rel);
    }
    if ((uint64_t)st.st_size > WEBROOT_MAX_FILE) {
        close(fd);
        return ippc_error_set(err, ERR_INTERNAL, "%.200s is larger than a served file may be", rel);
    }
    /* Reads are plain blocking reads again (sendfile from a regular file). */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    out->fd = fd;
    out->size = (uint64_t)st.st_size;
    out->content_type = webroot_content_type(rel);
    snprintf(out->etag, sizeof out->etag, "\"%llx-%llx-%lx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ULL +
                 (unsigned long long)st.st_mtim.tv_nsec,
             (unsigned long)st.st_ino);
    struct tm tm;
    time_t mtime = st.st_mtim.tv_sec;
    if (!gmtime_r(&mtime, &tm) || strftime(out->last_modified, sizeof out->last_modified,
                                           "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
        out->last_modified[0] = '\0';
    return 0;
}
