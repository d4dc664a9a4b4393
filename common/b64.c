/* b64.c — see b64.h.  Three bytes become four characters; the decoder
 * looks each character up in a 256-entry table in which every byte outside
 * the alphabet is above 63, and ORs the values of a quad together so one
 * test per quad catches a bad character. */
#include "b64.h"

#include <stdint.h>

static const char alphabet[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* 1 + the value of each character of the alphabet; 0 for every other byte
 * ('=' too), so that lookup() turns those into a value above 63. */
static const unsigned char sextet_plus_one[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,
    ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
};

static unsigned lookup(unsigned char c)
{
    return (unsigned char)(sextet_plus_one[c] - 1);
}

size_t b64_encoded_len(size_t n)
{
    size_t quads = n / 3 + (n % 3 != 0);
    return quads > SIZE_MAX / 4 ? SIZE_MAX : quads * 4;
}

size_t b64_encode(const unsigned char *data, size_t n, char *out)
{
    char *o = out;
    size_t i = 0;
    for (; n - i >= 3; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        o[0] = alphabet[v >> 18];
        o[1] = alphabet[(v >> 12) & 63];
        o[2] = alphabet[(v >> 6) & 63];
        o[3] = alphabet[v & 63];
        o += 4;
    }
    if (n - i) {
        uint32_t v = (uint32_t)data[i] << 16 | (n - i == 2 ? (uint32_t)data[i + 1] << 8 : 0);
        o[0] = alphabet[v >> 18];
        o[1] = alphabet[(v >> 12) & 63];
        o[2] = n - i == 2 ? alphabet[(v >> 6) & 63] : '=';
        o[3] = '=';
        o += 4;
    }
    return (size_t)(o - out);
}

int b64_decoded_len(const char *text, size_t len, size_t *out)
{
    size_t pad = 0;
    while (pad < 2 && pad < len && text[len - 1 - pad] == '=')
        pad++;
    size_t body = len - pad;
    if ((pad && len % 4) || body % 4 == 1)
        return -1;
    *out = body / 4 * 3 + (body % 4 ? body % 4 - 1 : 0);
    return 0;
}

int b64_decode(const char *text, size_t len, unsigned char *out)
{
    const unsigned char *s = (const unsigned char *)text;
    for (int pad = 0; pad < 2 && len && s[len - 1] == '='; pad++)
        len--; /* as b64_decoded_len counted them: a third '=' is a bad character */
    size_t i = 0;
    unsigned char *o = out;
    for (; len - i >= 4; i += 4) {
        unsigned a = lookup(s[i]), b = lookup(s[i + 1]), c = lookup(s[i + 2]), d = lookup(s[i + 3]);
        if ((a | b | c | d) > 63)
            return -1;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | d;
        o[0] = (unsigned char)(v >> 16);
        o[1] = (unsigned char)(v >> 8);
        o[2] = (unsigned char)v;
        o += 3;
    }
    size_t rest = len - i;
    if (rest == 1)
        return -1;
    if (rest) {
        unsigned a = lookup(s[i]), b = lookup(s[i + 1]), c = rest == 3 ? lookup(s[i + 2]) : 0;
        if ((a | b | c) > 63)
            return -1;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6;
        *o++ = (unsigned char)(v >> 16);
        if (rest == 3)
            *o++ = (unsigned char)(v >> 8);
    }
    return 0;
}
