/* secret.c — constant-time secret comparison (see secret.h). */
#include "secret.h"

#include <string.h>

int secret_equal(const char *given, const char *want) {
    size_t lg = strlen(given), lw = strlen(want);
    unsigned char diff = (unsigned char)(lg != lw);
    for (size_t i = 0; i < lw; i++)
        diff |= (unsigned char)(want[i] ^ (i < lg ? given[i] : 0));
    return diff == 0;
}
