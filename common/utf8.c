/* utf8.c — one UTF-8 sequence, as Jansson validates it (utf8.h). */
#include "utf8.h"

#include <assert.h>

/* Lead bytes C0, C1 and F5..FF start no valid sequence (C0/C1 only
 * overlong ones, F5.. only code points above U+10FFFF). */
size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    assert(n > 0);
    unsigned char c = s[0];
    size_t len;
    uint32_t min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2, min = 0x80, *cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, min = 0x800, *cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, min = 0x10000, *cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        *cp = (*cp << 6) | (s[i] & 0x3F);
    }
    if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF))
        return 0;
    return len;
}
