/* buf.h — the one growable byte buffer of ippc.
 *
 * data[0..len) are the bytes; when data is not NULL, data[len] is a NUL, so a
 * buffer of text is a C string.  The capacity grows by doubling (few copies
 * for many small appends), every size computation checked for overflow; a
 * failed growth leaves the buffer as it was.
 *
 * Ownership: the buffer owns data until buf_take hands it to the caller (who
 * free()s it).  A zeroed ippc_buf is an empty buffer.  Not thread-safe.
 */
#ifndef IPPC_BUF_H
#define IPPC_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct ippc_buf {
    char *data; /* NULL until the first growth */
    size_t len;
    size_t cap; /* bytes allocated; len < cap once data is not NULL */
} ippc_buf;

void buf_init(ippc_buf *b);

/* Room for `more` bytes after len (and the NUL).  0, or -1 when the size
 * overflows or memory runs out (the buffer is unchanged). */
int buf_reserve(ippc_buf *b, size_t more);

/* Appends len bytes.  0 or -1 as buf_reserve. */
int buf_append(ippc_buf *b, const void *bytes, size_t len);

/* Appends a C string without its NUL. */
int buf_append_str(ippc_buf *b, const char *text);

/* Appends printf output.  0 or -1 (format error, overflow, no memory). */
int buf_printf(ippc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(ippc_buf *b, const char *fmt, va_list ap);

/* Hands the bytes (NUL-terminated; never NULL unless out of memory) to the
 * caller and leaves b empty.  *len (if not NULL) gets their length. */
char *buf_take(ippc_buf *b, size_t *len);

/* Forgets the bytes but keeps the memory for reuse. */
void buf_reset(ippc_buf *b);

/* Frees the memory; b is empty again. */
void buf_free(ippc_buf *b);

#endif
