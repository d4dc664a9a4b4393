/* utf8.h — reading one UTF-8 sequence the way Jansson validates strings.
 *
 * What ippc writes as a JSON string must be valid UTF-8 as Jansson holds it
 * (no overlong forms, no surrogates, nothing above U+10FFFF): jsonout.c
 * escapes strings sequence by sequence with it, and the engine's task
 * results (engine/task.c) replace what is not valid with U+FFFD.
 *
 * Thread-safety: pure and reentrant.
 */
#ifndef IPPC_UTF8_H
#define IPPC_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length (1 to 4) of the valid UTF-8 sequence at s, of which n > 0 bytes
 * may be read, and its code point in *cp; 0 (*cp unspecified) when the
 * bytes there are not one. */
size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

#endif
