/* webroot.h — the dashboard's static files: which file a URL path names, and
 * that file opened for sending, with its content type and cache validators.
 *
 * Two folders are served, both read-only and without a token (the page asks
 * for the token itself; everything under /api still needs it):
 *   /  and /index.html  -> WEB/index.html
 *   /NAME[/NAME...]     -> WEB/NAME[/NAME...]      (at most WEBROOT_MAX_DEPTH)
 *   /sdk/NAME.js        -> SDK/NAME.js             (top level of SDK only)
 * WEB is --web-root (the repository's web/ by default), SDK is --sdk-root
 * (clients/js/).
 *
 * There is no way out of a root: a path segment is 1..WEBROOT_MAX_SEGMENT
 * bytes of [A-Za-z0-9._-] that does not start with '.', so "..", ".",
 * hidden files, empty segments ("//"), backslashes, '%' (a path that was
 * percent-encoded twice), NUL and every other byte are refused by the parser
 * before the file system is asked.  The file is then opened one segment at a
 * time from the root with O_NOFOLLOW: a symbolic link below the root is
 * never followed, whether it stays inside or not (the root itself may be
 * one).  Only regular files are served, opened O_NONBLOCK (a FIFO cannot
 * stall the caller), up to WEBROOT_MAX_FILE bytes.
 *
 * Caching: there is no build step and so no content-hashed names; every
 * answer carries a strong ETag (size, modification time, inode) and
 * Last-Modified, with Cache-Control "no-cache": the browser keeps the file
 * and revalidates it each time (a 304 costs no body), so a page and its
 * scripts never come from two versions.
 *
 * Threads: webroot_parse and webroot_not_modified are pure; webroot_open_file
 * may be called from any thread (it keeps no state besides the root paths).
 * Memory: webroot_new copies the paths; a webroot_file's fd belongs to the
 * caller (libmicrohttpd's fd response closes it).
 */
#ifndef IPPC_WEBROOT_H
#define IPPC_WEBROOT_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define WEBROOT_MAX_DEPTH 8
#define WEBROOT_MAX_SEGMENT 128
#define WEBROOT_MAX_PATH 512
#define WEBROOT_MAX_FILE ((uint64_t)64 << 20)

/* The headers every static answer carries besides its type and validators:
 * a strict Content-Security-Policy (scripts, styles and connections from
 * this origin only, nothing inline, no frames, no forms, no plugins),
 * nosniff, no referrer (the sign-in link carries the token in its fragment,
 * which is never sent, but nothing else should leak either) and no framing. */
#define WEBROOT_CSP                                                                                \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "                  \
    "form-action 'none'; frame-ancestors 'none'; object-src 'none'"

typedef enum webroot_dir {
    WEBROOT_WEB = 0, /* the dashboard's files */
    WEBROOT_SDK = 1, /* the JavaScript SDK */
} webroot_dir;

typedef struct webroot webroot;

typedef struct webroot_file {
    int fd; /* open, regular, read-only; the caller closes it */
    uint64_t size;
    const char *content_type; /* static string */
    char etag[64];            /* "\"...\"", a strong validator */
    char last_modified[40];   /* IMF-fixdate */
} webroot_file;

/* The file url_path (an already percent-decoded request path) names: its
 * folder and the path relative to it (NUL-terminated, in rel, rel_len >=
 * WEBROOT_MAX_PATH).  0, or -1 with err (bad_request for a path that can
 * never name a file, not_found for one outside what is served). */
int webroot_parse(const char *url_path, webroot_dir *dir, char *rel, size_t rel_len,
                  ippc_error *err);

/* The Content-Type for a file name, by its extension (text types with
 * charset=utf-8); application/octet-stream for an unknown one. */
const char *webroot_content_type(const char *name);

/* 1 if a request with these headers (NULL: absent) may be answered 304 Not
 * Modified for f: If-None-Match lists its ETag (or "*"; weak comparison), or,
 * without If-None-Match, If-Modified-Since is its Last-Modified. */
int webroot_not_modified(const webroot_file *f, const char *if_none_match,
                         const char *if_modified_since);

/* NULL only when out of memory.  A root that does not exist is not an error
 * here (the files may be installed later); requests for it get not_found
 * naming the folder. */
webroot *webroot_new(const char *web_dir, const char *sdk_dir);
void webroot_free(webroot *w);
/* The folder a root is read from. */
const char *webroot_dir_path(const webroot *w, webroot_dir dir);

/* Opens rel (from webroot_parse) below the dir's root.  0, or -1 with err:
 * not_found (no such regular file, a symbolic link on the way, the root
 * missing), too large, or internal. */
int webroot_open_file(const webroot *w, webroot_dir dir, const char *rel, webroot_file *out,
                      ippc_error *err);

#endif
