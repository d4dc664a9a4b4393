/* bench_loopback — what this machine allows for moving N bytes, in C, without
 * ippc: one TCP stream over 127.0.0.1 (one thread sends, another receives),
 * and memcpy into a reused buffer.  bench_peer.py prints ippc's data figures
 * as a share of these.
 *
 *   bench_loopback [-r REPS] BYTES [BYTES...]
 *
 * Per size, one JSON line each:
 *   {"what":"loopback","bytes":N,"reps":R,"median_s":S,"min_s":S,"mb_s":M}
 *   {"what":"memcpy",...}
 * mb_s is N / median_s in 10^6 bytes per second.
 *
 * loopback: the sender writes N bytes from a buffer it touched beforehand
 * (large write() calls, the kernel splits them), the receiver reads them
 * into one reused buffer with large read() calls and answers one byte when
 * it has all N; the time is from the first write to that byte's arrival, on
 * one connection kept for every repetition (one warm-up run first).
 * memcpy: N bytes into a destination buffer that was written once before
 * (no page faults in the timed copies).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_args.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_loopback: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

static void read_all(int fd, unsigned char *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        if (r == 0) {
            fprintf(stderr, "bench_loopback: peer closed early\n");
            exit(1);
        }
        p += r;
        n -= (size_t)r;
    }
}

typedef struct {
    int listen_fd;
    size_t bytes;
    int runs; /* transfers to receive, warm-up included */
} receiver_args;

static void *receiver(void *arg)
{
    receiver_args *a = arg;
    int fd = accept(a->listen_fd, NULL, NULL);
    if (fd < 0)
        die("accept");
    unsigned char *buf = malloc(a->bytes);
    if (!buf)
        die("malloc");
    memset(buf, 0, a->bytes);
    for (int i = 0; i < a->runs; i++) {
        read_all(fd, buf, a->bytes);
        unsigned char ack = buf[a->bytes - 1];
        write_all(fd, &ack, 1);
    }
    free(buf);
    close(fd);
    return NULL;
}

static void report(const char *what, size_t bytes, double *t, int reps)
{
    double lo = t[0];
    for (int i = 1; i < reps; i++)
        if (t[i] < lo)
            lo = t[i];
    double med = median(t, reps);
    printf("{\"what\":\"%s\",\"bytes\":%zu,\"reps\":%d,\"median_s\":%.6f,\"min_s\":%.6f,"
           "\"mb_s\":%.1f}\n",
           what, bytes, reps, med, lo, bytes / med / 1e6);
    fflush(stdout);
}

static void bench_loopback(size_t bytes, int reps)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0)
        die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0)
        die("bind/listen");
    receiver_args ra = {.listen_fd = lfd, .bytes = bytes, .runs = reps + 1};
    pthread_t th;
    if (pthread_create(&th, NULL, receiver, &ra) != 0)
        die("pthread_create");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    unsigned char *buf = malloc(bytes);
    if (!buf)
        die("malloc");
    for (size_t i = 0; i < bytes; i++)
        buf[i] = (unsigned char)(i * 131u);
    double *t = calloc(reps, sizeof *t);
    for (int i = -1; i < reps; i++) {
        unsigned char ack;
        double t0 = now();
        write_all(fd, buf, bytes);
        read_all(fd, &ack, 1);
        if (i >= 0)
            t[i] = now() - t0;
    }
    pthread_join(th, NULL);
    close(fd);
    close(lfd);
    report("loopback", bytes, t, reps);
    free(t);
    free(buf);
}

static void bench_memcpy(size_t bytes, int reps)
{
    unsigned char *src = malloc(bytes), *dst = malloc(bytes);
    if (!src || !dst)
        die("malloc");
    for (size_t i = 0; i < bytes; i++)
        src[i] = (unsigned char)(i * 7u);
    memset(dst, 1, bytes);
    double *t = calloc(reps, sizeof *t);
    volatile unsigned char sink = 0;
    for (int i = -1; i < reps; i++) {
        double t0 = now();
        memcpy(dst, src, bytes);
        sink ^= dst[bytes / 2];
        if (i >= 0)
            t[i] = now() - t0;
    }
    (void)sink;
    report("memcpy", bytes, t, reps);
    free(t);
    free(src);
    free(dst);
}

int main(int argc, char **argv)
{
    int reps = 5, i = 1, usage = 0;
    double v;
    if (argc > 2 && strcmp(argv[1], "-r") == 0) {
        if (bench_arg(argv[2], 1, 1e6, &v) == 0)
            reps = (int)v;
        else
            usage = 1;
        i = 3;
    }
    if (usage || i >= argc) {
        fprintf(stderr, "usage: bench_loopback [-r REPS] BYTES [BYTES...]\n");
        return 2;
    }
    for (; i < argc; i++) {
        if (bench_arg(argv[i], 1, 1e15, &v) < 0) {
            fprintf(stderr, "bench_loopback: bad size %s\n", argv[i]);
            return 2;
        }
        size_t bytes = (size_t)v;
        bench_loopback(bytes, reps);
        bench_memcpy(bytes, reps);
    }
    return 0;
}
