/* jsonout.c — Jansson values to JSON text, reals shortest (see jsonout.h).
 *
 * One recursive writer appends to a growable buffer; any failure (bad UTF-8,
 * a cycle, too deep, out of memory) sets w->failed and everything after it is
 * a no-op, so the walk needs no error plumbing and the caller checks once.
 *
 * The layout matches json_dumps byte for byte (tests/unit/test_jsonout.c
 * compares the two for every kind of value and every flag): an empty
 * container is "[]" / "{}"; otherwise each item is preceded by a break —
 * with JSON_INDENT(n) a newline and n spaces per level, else nothing before
 * the first item and one space after each ',' unless JSON_COMPACT — and the
 * closing bracket by a break at the container's own level.  Object members
 * are "key": value (":" under JSON_COMPACT), in insertion order, or sorted by
 * key bytes under JSON_SORT_KEYS.  JSON_EMBED drops the outermost brackets.
 *
 * Reals: for a normal double, DBL_DIG (15) significant digits always suffice
 * when any form that short reads back, because every decimal of up to 15
 * digits survives a trip through a double and back; so the candidates are
 * %.15g, %.16g and %.17g (which always reads back), and %g drops trailing
 * zeros.  Subnormals have fewer bits, so for them every precision from 1 up
 * is tried.  The text then gets Jansson's touches: a ".0" when it would read
 * back as an integer, no '+' and no leading zeros in the exponent.
 */
#include "jsonout.h"

#include "buf.h"
#include "utf8.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- buffer */

typedef struct writer {
    ippc_buf out; /* the text; common/buf.h keeps room for the NUL */
    size_t flags;
    int failed;
    const json_t **path; /* the containers being written: cycle check */
    size_t path_cap;
    /* plain[c] is 1 when byte c leaves a string as it is; a table because
     * a typed array's base64 text is hundreds of MB of such bytes. */
    unsigned char plain[256];
} writer;

static void w_fail(writer *w)
{
    w->failed = 1;
}

/* Room for more bytes (plus the NUL); 0, or -1 with w failed. */
static int w_reserve(writer *w, size_t more)
{
    if (w->failed)
        return -1;
    if (buf_reserve(&w->out, more) < 0) {
        w_fail(w);
        return -1;
    }
    return 0;
}

static void w_bytes(writer *w, const char *s, size_t n)
{
    if (w_reserve(w, n) < 0)
        return;
    memcpy(w->out.data + w->out.len, s, n);
    w->out.len += n;
}

static void w_char(writer *w, char c)
{
    if (w_reserve(w, 1) < 0)
        return;
    w->out.data[w->out.len++] = c;
}

/* A break inside a container whose items are at depth: see the top. */
static void w_break(writer *w, size_t depth, int after_comma)
{
    size_t indent = w->flags & JSON_MAX_INDENT;
    if (indent) {
        if (depth > SIZE_MAX / indent || w_reserve(w, 1 + depth * indent) < 0) {
            w_fail(w);
            return;
        }
        w->out.data[w->out.len++] = '\n';
        memset(w->out.data + w->out.len, ' ', depth * indent);
        w->out.len += depth * indent;
    } else if (after_comma && !(w->flags & JSON_COMPACT)) {
        w_char(w, ' ');
    }
}

/* -------------------------------------------------------------- reals */

/* Digits of v as the shortest %g that strtod reads back to v. */
static int real_digits(double v, char *buf, size_t size)
{
    int first = fabs(v) < DBL_MIN ? 1 : DBL_DIG;
    for (int precision = first; precision < DBL_DECIMAL_DIG; precision++) {
        int len = snprintf(buf, size, "%.*g", precision, v);
        if (len > 0 && (size_t)len < size && strtod(buf, NULL) == v)
            return len;
    }
    return snprintf(buf, size, "%.*g", DBL_DECIMAL_DIG, v);
}

int jsonout_real(double v, char *buf, size_t size)
{
    if (!isfinite(v) || !buf || size < JSONOUT_REAL_MAX)
        return -1;
    int len = real_digits(v, buf, size);
    if (len <= 0 || (size_t)len >= size - 2)
        return -1;
    char *comma = strchr(buf, ','); /* a decimal comma, should LC_NUMERIC ask for one */
    if (comma)
        *comma = '.';
    char *exp = strchr(buf, 'e');
    if (!exp && !strchr(buf, '.')) { /* "1" would read back as an integer */
        memcpy(buf + len, ".0", 3);
        return len + 2;
    }
    if (exp) { /* "1e+05" -> "1e5", "1e-05" -> "1e-5" */
        char *digits = exp + 1;
        if (*digits == '-')
            digits++;
        char *from = exp + 1;
        while (*from == '+' || *from == '-')
            from++;
        while (from[0] == '0' && from[1] != '\0')
            from++;
        size_t keep = strlen(from);
        memmove(digits, from, keep + 1);
        len = (int)(digits - buf + (ptrdiff_t)keep);
    }
    return len;
}

/* ------------------------------------------------------------ strings */

/* unit is one UTF-16 code unit (at most 0xFFFF): always six bytes. */
static void w_u_escape(writer *w, uint32_t unit)
{
    assert(unit <= 0xFFFF);
    char esc[8];
    snprintf(esc, sizeof esc, "\\u%04X", (unsigned)(unit & 0xFFFF));
    w_bytes(w, esc, 6);
}

/* Does byte c (below 0x80) go out as it is? */
/* ASCII that needs no escape under w's flags (see writer.plain). */
static void w_plain_init(writer *w)
{
    for (unsigned c = 0x20; c < 0x80; c++)
        w->plain[c] = c != '"' && c != '\\' && !(c == '/' && (w->flags & JSON_ESCAPE_SLASH));
}

/* The end of the run of plain bytes (writer.plain) at s[i..n).  Eight bytes
 * at a time first: a word with no control character, no byte >= 0x80, no
 * '"', no '\\' (and no '/' when it is escaped) is plain throughout.  Each
 * test sets a byte's high bit exactly when that byte matches ("has less
 * than" and "has zero" on a word). */
static size_t plain_run(const writer *w, const unsigned char *s, size_t i, size_t n)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    const int slash = (w->flags & JSON_ESCAPE_SLASH) != 0;
    while (n - i >= 8) {
        uint64_t v;
        memcpy(&v, s + i, 8);
        uint64_t quote = v ^ (ones * '"'), backslash = v ^ (ones * '\\'),
                 solidus = v ^ (ones * '/');
        uint64_t hit = v | ((v - ones * 0x20) & ~v) | ((quote - ones) & ~quote) |
                       ((backslash - ones) & ~backslash);
        if (slash)
            hit |= (solidus - ones) & ~solidus;
        if (hit & highs)
            break;
        i += 8;
    }
    while (i < n && w->plain[s[i]])
        i++;
    return i;
}

static void w_string(writer *w, const char *text, size_t n)
{
    const unsigned char *s = (const unsigned char *)text;
    int ascii_only = (w->flags & JSON_ENSURE_ASCII) != 0;
    w_char(w, '"');
    size_t i = 0;
    while (i < n && !w->failed) {
        size_t run = plain_run(w, s, i, n); /* bytes that go out unchanged, copied at once */
        w_bytes(w, text + i, run - i);
        i = run;
        if (i == n)
            break;
        uint32_t cp;
        size_t len = utf8_decode(s + i, n - i, &cp);
        if (len == 0) {
            w_fail(w);
            return;
        }
        i += len;
        switch (cp) {
        case '"': w_bytes(w, "\\\"", 2); continue;
        case '\\': w_bytes(w, "\\\\", 2); continue;
        case '/': w_bytes(w, "\\/", 2); continue; /* only here with JSON_ESCAPE_SLASH */
        case '\b': w_bytes(w, "\\b", 2); continue;
        case '\f': w_bytes(w, "\\f", 2); continue;
        case '\n': w_bytes(w, "\\n", 2); continue;
        case '\r': w_bytes(w, "\\r", 2); continue;
        case '\t': w_bytes(w, "\\t", 2); continue;
        default: break;
        }
        if (cp >= 0x20 && (!ascii_only || cp < 0x80)) {
            w_bytes(w, (const char *)s + i - len, len);
        } else if (cp < 0x10000) { /* a control character, or ascii_only */
            w_u_escape(w, cp);
        } else { /* a surrogate pair */
            uint32_t above = cp - 0x10000;
            w_u_escape(w, 0xD800 | (above >> 10));
            w_u_escape(w, 0xDC00 | (above & 0x3FF));
        }
    }
    w_char(w, '"');
}

/* --------------------------------------------------------- containers */

static void w_value(writer *w, const json_t *v, size_t depth);

/* Records container v at depth in the path; -1 (w failed) on a cycle or
 * when too deep. */
static int w_enter(writer *w, const json_t *v, size_t depth)
{
    if (depth >= JSONOUT_MAX_DEPTH) {
        w_fail(w);
        return -1;
    }
    for (size_t d = 0; d < depth; d++) {
        if (w->path[d] == v) {
            w_fail(w);
            return -1;
        }
    }
    if (depth >= w->path_cap) {
        size_t cap = w->path_cap ? w->path_cap * 2 : 16;
        const json_t **path = realloc(w->path, cap * sizeof *path);
        if (!path) {
            w_fail(w);
            return -1;
        }
        w->path = path;
        w->path_cap = cap;
    }
    w->path[depth] = v;
    return 0;
}

static void w_array(writer *w, const json_t *v, size_t depth, int embed)
{
    size_t n = json_array_size(v);
    if (w_enter(w, v, depth) < 0)
        return;
    if (!embed)
        w_char(w, '[');
    if (n > 0) {
        w_break(w, depth + 1, 0);
        for (size_t i = 0; i < n && !w->failed; i++) {
            w_value(w, json_array_get(v, i), depth + 1);
            if (i + 1 < n) {
                w_char(w, ',');
                w_break(w, depth + 1, 1);
            }
        }
        w_break(w, depth, 0);
    }
    if (!embed)
        w_char(w, ']');
}

typedef struct member {
    const char *key;
    size_t key_len;
    const json_t *value;
} member;

/* Key order of JSON_SORT_KEYS: bytes, then the shorter first. */
static int member_cmp(const void *a, const void *b)
{
    const member *x = a, *y = b;
    int c = memcmp(x->key, y->key, x->key_len < y->key_len ? x->key_len : y->key_len);
    if (c)
        return c;
    return (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

static void w_object(writer *w, const json_t *v, size_t depth, int embed)
{
    size_t n = json_object_size(v);
    if (w_enter(w, v, depth) < 0)
        return;
    member *members = n ? malloc(n * sizeof *members) : NULL;
    if (n && !members) {
        w_fail(w);
        return;
    }
    size_t count = 0;
    for (void *it = json_object_iter((json_t *)v); it && count < n;
         it = json_object_iter_next((json_t *)v, it))
        members[count++] = (member){json_object_iter_key(it), json_object_iter_key_len(it),
                                    json_object_iter_value(it)};
    if ((w->flags & JSON_SORT_KEYS) && count > 1)
        qsort(members, count, sizeof *members, member_cmp);
    const char *colon = (w->flags & JSON_COMPACT) ? ":" : ": ";
    if (!embed)
        w_char(w, '{');
    if (count > 0) {
        w_break(w, depth + 1, 0);
        for (size_t i = 0; i < count && !w->failed; i++) {
            w_string(w, members[i].key, members[i].key_len);
            w_bytes(w, colon, strlen(colon));
            w_value(w, members[i].value, depth + 1);
            if (i + 1 < count) {
                w_char(w, ',');
                w_break(w, depth + 1, 1);
            }
        }
        w_break(w, depth, 0);
    }
    if (!embed)
        w_char(w, '}');
    free(members);
}

/* ------------------------------------------------------------- values */

static void w_scalar(writer *w, const json_t *v)
{
    char buf[JSONOUT_REAL_MAX + 8];
    int len;
    switch (json_typeof(v)) {
    case JSON_NULL: w_bytes(w, "null", 4); return;
    case JSON_TRUE: w_bytes(w, "true", 4); return;
    case JSON_FALSE: w_bytes(w, "false", 5); return;
    case JSON_STRING: w_string(w, json_string_value(v), json_string_length(v)); return;
    case JSON_INTEGER:
        len = snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL: len = jsonout_real(json_real_value(v), buf, sizeof buf); break;
    default: len = -1; break;
    }
    if (len <= 0 || (size_t)len >= sizeof buf)
        w_fail(w);
    else
        w_bytes(w, buf, (size_t)len);
}

static void w_value(writer *w, const json_t *v, size_t depth)
{
    if (w->failed)
        return;
    if (!v)
        w_fail(w);
    else if (json_is_array(v))
        w_array(w, v, depth, 0);
    else if (json_is_object(v))
        w_object(w, v, depth, 0);
    else
        w_scalar(w, v);
}

/* ------------------------------------------------------------- public */

/* The text of json in w->out.data (w->out.len bytes, NUL-terminated); -1 on failure
 * (w->out.data is then freed). */
static int write_all(writer *w, const json_t *json, size_t flags)
{
    memset(w, 0, sizeof *w);
    w->flags = flags & ~(size_t)JSON_EMBED;
    w_plain_init(w);
    int is_container = json_is_array(json) || json_is_object(json);
    if (!json || (!is_container && !(flags & JSON_ENCODE_ANY)))
        w_fail(w);
    else if (json_is_array(json))
        w_array(w, json, 0, (flags & JSON_EMBED) != 0);
    else if (json_is_object(json))
        w_object(w, json, 0, (flags & JSON_EMBED) != 0);
    else
        w_scalar(w, json);
    w_reserve(w, 0);
    free(w->path);
    if (w->failed) {
        free(w->out.data);
        w->out.data = NULL;
        return -1;
    }
    w->out.data[w->out.len] = '\0';
    return 0;
}

char *jsonout_dumps(const json_t *json, size_t flags)
{
    writer w;
    return write_all(&w, json, flags) < 0 ? NULL : w.out.data;
}

int jsonout_dumpf(const json_t *json, FILE *f, size_t flags)
{
    writer w;
    if (write_all(&w, json, flags) < 0)
        return -1;
    int rc = fwrite(w.out.data, 1, w.out.len, f) == w.out.len ? 0 : -1;
    free(w.out.data);
    return rc;
}
