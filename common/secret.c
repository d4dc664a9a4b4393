/* secret.c — constant-time secret comparison and credential parsing (see
 * secret.h). */
#include "secret.h"

#include <string.h>
#include <strings.h>

int secret_equal(const char *given, const char *want)
{
    size_t lg = strlen(given), lw = strlen(want);
    unsigned char diff = (unsigned char)(lg != lw);
    for (size_t i = 0; i < lw; i++)
        diff |= (unsigned char)(want[i] ^ (i < lg ? given[i] : 0));
    return diff == 0;
}

int secret_equal_n(const char *given, size_t n, const char *want)
{
    size_t lw = strlen(want);
    unsigned char diff = (unsigned char)(n != lw || lw == 0);
    for (size_t i = 0; i < lw; i++)
        diff |= (unsigned char)(want[i] ^ (i < n ? given[i] : 0));
    return diff == 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

int secret_bearer_equal(const char *value, size_t n, const char *want)
{
    size_t i = 0;
    while (i < n && is_space(value[i]))
        i++;
    if (n - i < 7 || strncasecmp(value + i, "bearer", 6) != 0 || !is_space(value[i + 6]))
        return 0;
    i += 7;
    while (i < n && is_space(value[i]))
        i++;
    size_t end = n;
    while (end > i && is_space(value[end - 1]))
        end--;
    return secret_equal_n(value + i, end - i, want);
}

int secret_protocol_token_equal(const char *list, size_t n, const char *want)
{
    const size_t plen = sizeof SECRET_PROTOCOL_PREFIX - 1;
    int found = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && (is_space(list[i]) || list[i] == ','))
            i++;
        size_t start = i;
        while (i < n && list[i] != ',')
            i++;
        size_t end = i;
        while (end > start && is_space(list[end - 1]))
            end--;
        /* Every entry is compared, so the time does not tell which one. */
        if (end - start > plen && strncmp(list + start, SECRET_PROTOCOL_PREFIX, plen) == 0)
            found |= secret_equal_n(list + start + plen, end - start - plen, want);
    }
    return found;
}
