/* fuzz_webroot.c — libFuzzer entry for server/webroot.c's path parser and
 * validator matching.
 *
 * Input: a request path (NUL-terminated at the first NUL, as libmicrohttpd
 * hands it over).  Besides sanitizer findings, it checks what webroot.h
 * promises of an accepted path: relative, no empty, "." or ".." segment, no
 * segment starting with '.', only [A-Za-z0-9._-] and '/', within the depth
 * and length limits, the SDK's a top-level .js name; and that an error always
 * has a code.  The same bytes are also tried as an If-None-Match list.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "webroot.h"

static void check_rel(const char *rel, webroot_dir dir)
{
    size_t len = strlen(rel);
    if (len == 0 || len >= WEBROOT_MAX_PATH || rel[0] == '/' || rel[len - 1] == '/')
        __builtin_trap();
    int depth = 1;
    for (size_t i = 0; i < len; i++) {
        char c = rel[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-' || c == '/';
        if (!ok)
            __builtin_trap();
        if (c == '/') {
            depth++;
            if (rel[i + 1] == '/')
                __builtin_trap();
        }
        if ((i == 0 || rel[i - 1] == '/') && c == '.')
            __builtin_trap(); /* ".", "..", hidden */
    }
    if (depth > WEBROOT_MAX_DEPTH)
        __builtin_trap();
    if (dir == WEBROOT_SDK && (depth != 1 || len < 4 || strcmp(rel + len - 3, ".js") != 0))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = malloc(size + 1);
    if (!path)
        return 0;
    memcpy(path, data, size);
    path[size] = '\0';

    webroot_dir dir = (webroot_dir)-1;
    char rel[WEBROOT_MAX_PATH];
    ippc_error err = {0};
    if (webroot_parse(path, &dir, rel, sizeof rel, &err) == 0) {
        if (dir != WEBROOT_WEB && dir != WEBROOT_SDK)
            __builtin_trap();
        check_rel(rel, dir);
        (void)webroot_content_type(rel);
    } else if (!err.code[0] || !err.message[0]) {
        __builtin_trap();
    }

    webroot_file f = {.fd = -1};
    memcpy(f.etag, "\"1-2-3\"", 8);
    memcpy(f.last_modified, "Tue, 01 Dec 2026 10:00:00 GMT", 30);
    int match = webroot_not_modified(&f, path, NULL);
    if (strstr(path, "\"1-2-3\"") == NULL && strchr(path, '*') == NULL && match)
        __builtin_trap(); /* a list that does not name the tag never matches */
    free(path);
    return 0;
}
