/* jsonout.h — JSON text out of Jansson values, reals in their shortest form.
 *
 * Jansson writes every real with one fixed precision (17 digits unless
 * JSON_REAL_PRECISION says otherwise), so 0.1 leaves as 0.10000000000000001.
 * jsonout writes each real with the fewest significant digits that read back
 * (strtod) to the very same double: 0.1 is "0.1", 1/3 needs all 17.  Every
 * other byte is what json_dumps writes for the same flags: strings escaped
 * the same way (control characters, JSON_ENSURE_ASCII, JSON_ESCAPE_SLASH),
 * integers, separators, JSON_INDENT, JSON_COMPACT, JSON_SORT_KEYS,
 * JSON_ENCODE_ANY and JSON_EMBED.  JSON_REAL_PRECISION is ignored.
 *
 * Every place in ippc that turns a json_t into text uses jsonout, so what
 * clients, the task store and the engines read is the same everywhere.
 *
 * Failure (NULL / -1) where json_dumps fails too: a scalar without
 * JSON_ENCODE_ANY, a string that is not valid UTF-8, a value that contains
 * itself; and beyond json_dumps: nesting deeper than JSONOUT_MAX_DEPTH,
 * out of memory.  Assumes LC_NUMERIC is "C" or writes '.' all the same.
 * Thread-safety: pure and reentrant.
 */
#ifndef IPPC_JSONOUT_H
#define IPPC_JSONOUT_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

/* Deeper than anything Jansson's parser accepts (2048), so whatever was
 * parsed can be written back. */
#define JSONOUT_MAX_DEPTH 4096

/* Longest text jsonout_real writes, NUL included ("-2.2250738585072014e-308"). */
#define JSONOUT_REAL_MAX 32

/* json as text, NUL-terminated, malloc'd (the caller frees); NULL on failure.
 * flags: Jansson's json_dumps flags. */
char *jsonout_dumps(const json_t *json, size_t flags);

/* Writes json to f as jsonout_dumps would; 0, or -1 on failure (nothing is
 * written then) or a write error. */
int jsonout_dumpf(const json_t *json, FILE *f, size_t flags);

/* Writes the finite double v as a JSON real in its shortest round-trip form
 * (always with a '.' or an exponent, so it reads back as a real); returns the
 * length, or -1 if v is not finite or size < JSONOUT_REAL_MAX. */
int jsonout_real(double v, char *buf, size_t size);

#endif
