/* error.c — fills ippc_error and maps its codes to HTTP statuses.
 *
 * The status table below is the only place where an error code meets an HTTP
 * status; the REST and WS front ends both go through http_status_for().
 * Relies on: Jansson (ippc_error_json).  Pure and reentrant.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int ippc_error_set(ippc_error *err, const char *code, const char *fmt, ...)
{
    if (!err)
        return -1;
    snprintf(err->code, sizeof err->code, "%s", code ? code : ERR_INTERNAL);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

static const struct {
    const char *code;
    int status;
} status_table[] = {
    {ERR_BAD_REQUEST, 400},       {ERR_BAD_TARGETS, 400},      {ERR_UNAUTHORIZED, 401},
    {ERR_NOT_FOUND, 404},         {ERR_METHOD, 405},           {ERR_TIMEOUT, 408},
    {ERR_CONFLICT, 409},          {ERR_TOO_LARGE, 413},        {ERR_URI_TOO_LONG, 414},
    {ERR_HEADERS_TOO_LARGE, 431}, {ERR_UNSUPPORTED, 415},      {ERR_INVALID, 422},
    {ERR_NO_ENGINES, 422},        {ERR_UNAVAILABLE, 503},      {ERR_OVERLOADED, 503},
    {ERR_INTERNAL, 500},          {ERR_UPGRADE_REQUIRED, 426}, {ERR_GONE, 410},
};

int http_status_for(const char *code)
{
    if (!code)
        return 500;
    for (size_t i = 0; i < sizeof status_table / sizeof status_table[0]; i++)
        if (strcmp(status_table[i].code, code) == 0)
            return status_table[i].status;
    return 500;
}

/* A JSON string of text; bytes that do not form valid UTF-8 (user input quoted
 * in a message, or a multi-byte character cut by truncation) become '?'. */
static json_t *error_text_json(const char *text)
{
    json_t *s = json_string(text);
    if (s)
        return s;
    char copy[sizeof((ippc_error *)0)->message];
    size_t i = 0;
    for (; text[i] && i + 1 < sizeof copy; i++)
        copy[i] = (unsigned char)text[i] < 0x80 ? text[i] : '?';
    copy[i] = '\0';
    return json_string(copy);
}

json_t *ippc_error_json(const ippc_error *err)
{
    /* An unset error still yields a well-formed body: callers reach here on
     * failure paths, where a missing message must not become a missing reply. */
    const char *code = err && err->code[0] ? err->code : ERR_INTERNAL;
    const char *message = err && err->message[0] ? err->message : "internal error";
    return json_pack("{s:{s:o, s:o}}", "error", "code", error_text_json(code), "message",
                     error_text_json(message));
}
