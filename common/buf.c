/* buf.c — the growable byte buffer (see buf.h). */
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_FIRST_CAP 256

void buf_init(ippc_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

int buf_reserve(ippc_buf *b, size_t more)
{
    if (b->data && more < b->cap - b->len)
        return 0;
    /* need = len + more + 1 for the NUL, checked before it is computed. */
    if (more > SIZE_MAX - 1 - b->len)
        return -1;
    size_t need = b->len + more + 1;
    size_t cap = b->cap ? b->cap : BUF_FIRST_CAP;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *data = realloc(b->data, cap);
    if (!data)
        return -1;
    if (!b->data)
        data[0] = '\0';
    b->data = data;
    b->cap = cap;
    return 0;
}

int buf_append(ippc_buf *b, const void *bytes, size_t len)
{
    if (buf_reserve(b, len) < 0)
        return -1;
    if (len)
        memcpy(b->data + b->len, bytes, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int buf_append_str(ippc_buf *b, const char *text)
{
    return buf_append(b, text, strlen(text));
}

int buf_vprintf(ippc_buf *b, const char *fmt, va_list ap)
{
    va_list measure;
    va_copy(measure, ap);
    int n = vsnprintf(NULL, 0, fmt, measure);
    va_end(measure);
    if (n < 0 || buf_reserve(b, (size_t)n) < 0)
        return -1;
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int buf_printf(ippc_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

char *buf_take(ippc_buf *b, size_t *len)
{
    if (!b->data && buf_reserve(b, 0) < 0)
        return NULL;
    char *data = b->data;
    if (len)
        *len = b->len;
    buf_init(b);
    return data;
}

void buf_reset(ippc_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void buf_free(ippc_buf *b)
{
    free(b->data);
    buf_init(b);
}
