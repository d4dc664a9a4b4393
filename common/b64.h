/* b64.h — standard base64 (RFC 4648 section 4), strict on the way in.
 *
 * Typed arrays travel to and from clients as base64 text, so this runs over
 * every byte of a `?format=typed` pull or a typed push: hundreds of MB per
 * call.  libwebsockets' coder (used before) works a character at a time
 * behind int lengths and moved ~420 MB/s; these table-driven loops move
 * several GB/s (bench/NOTES.md, "typed answers").
 *
 * Decoding is strict about what it reads: only the alphabet A-Z a-z 0-9 + /,
 * no whitespace, padding optional but, if present, exactly what the length
 * needs.  b64_decoded_len checks the length and the padding, b64_decode
 * every character as it goes (one pass over the text, not two).  The
 * unused low bits of a last partial quad are ignored, as most decoders do.
 *
 * Thread-safety: pure and reentrant.  No allocation: callers size buffers
 * with b64_encoded_len / b64_decoded_len.
 */
#ifndef IPPC_B64_H
#define IPPC_B64_H

#include <stddef.h>

/* Length of the padded text for n bytes (no NUL); SIZE_MAX if it overflows. */
size_t b64_encoded_len(size_t n);

/* Writes the padded text of data[0..n) to out (b64_encoded_len(n) bytes, no
 * NUL); returns that length. */
size_t b64_encode(const unsigned char *data, size_t n, char *out);

/* Checks the length and padding of text[0..len) and sets *out to the number
 * of bytes it decodes to; 0, or -1 when they are not those of base64. */
int b64_decoded_len(const char *text, size_t len, size_t *out);

/* Decodes text checked by b64_decoded_len into out (room for the *out it
 * gave); 0, or -1 (out partly written) when a character is not one of the
 * alphabet. */
int b64_decode(const char *text, size_t len, unsigned char *out);

#endif
