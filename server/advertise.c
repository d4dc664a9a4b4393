/* advertise.c — the address written into the connection files (advertise.h). */
#include "advertise.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

bool advertise_is_loopback(const char *ip)
{
    struct in_addr addr;

    if (strcmp(ip, "localhost") == 0)
        return true;
    return inet_pton(AF_INET, ip, &addr) == 1 && (ntohl(addr.s_addr) >> 24) == 127;
}

bool advertise_is_wildcard(const char *ip)
{
    struct in_addr addr;

    return inet_pton(AF_INET, ip, &addr) == 1 && addr.s_addr == htonl(INADDR_ANY);
}

bool advertise_location_valid(const char *location)
{
    size_t len = strlen(location);

    if (len == 0 || len > 253 || location[0] == '-' || location[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = location[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_';

        if (!ok)
            return false;
    }
    return true;
}

/* The first interface that is up, not loopback, with an IPv4 address: on a
 * machine with several, --location says which one is meant. */
static int first_interface_address(char *out, size_t len)
{
    struct ifaddrs *all = NULL;
    int found = -1;

    if (getifaddrs(&all) < 0)
        return -1;
    for (const struct ifaddrs *it = all; it != NULL && found < 0; it = it->ifa_next) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)it->ifa_addr;

        if (sin == NULL || sin->sin_family != AF_INET || !(it->ifa_flags & IFF_UP) ||
            (it->ifa_flags & IFF_LOOPBACK) || (ntohl(sin->sin_addr.s_addr) >> 24) == 127)
            continue;
        if (inet_ntop(AF_INET, &sin->sin_addr, out, (socklen_t)len) != NULL)
            found = 0;
    }
    freeifaddrs(all);
    return found;
}

int advertise_host(const char *bind_ip, const char *location, char *out, size_t len,
                   ippc_error *err)
{
    assert(len >= 256);
    if (location != NULL) {
        if (!advertise_location_valid(location))
            return ippc_error_set(err, ERR_INVALID,
                                  "--location '%s' is not a host name or IPv4 address", location);
        snprintf(out, len, "%s", location);
        return 0;
    }
    if (!advertise_is_wildcard(bind_ip)) {
        snprintf(out, len, "%s", bind_ip);
        return 0;
    }
    if (first_interface_address(out, len) == 0)
        return 0;
    return ippc_error_set(err, ERR_UNAVAILABLE,
                          "--ip %s binds every interface, but this host has no non-loopback "
                          "IPv4 address to write into the connection files; give --location "
                          "HOST (the name or address engines and clients use)",
                          bind_ip);
}
