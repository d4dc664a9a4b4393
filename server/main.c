/* main.c — ippc-controller: options, secrets, connection files, the threads,
 * and an orderly stop.
 *
 * Threads (the one map of them):
 *   main      — the acceptor: accepts every connection, hands it over; waits on
 *               an eventfd that the SIGTERM/SIGINT handler writes.
 *   mhd       — libmicrohttpd's polling thread: every REST handler.
 *   decode    — two decode-pool workers (decode_pool.c): big JSON bodies,
 *               parsed and converted while their connection is suspended.
 *   linger    — drains the sockets of requests refused before their body
 *               was read, then closes them (linger.c).
 *   lws       — the libwebsockets service thread: engine sockets, client
 *               streams (/ws), hub_tick every 200 ms.
 *   wsguard   — relays /ws sockets to lws and closes unmasked client frames
 *               (server/wsguard.h).
 *   store     — the task store's writer thread (store.c): batched SQLite
 *               transactions, off every request path; while writes fail it
 *               holds the records and retries them with back-off.
 * Shared state lives in the hub behind its one mutex.  Smaller locks, always
 * taken after the hub's when both are held: the event stream (events.c), each
 * socket's send queue (wsmsg.c), the stream waits (ws_client.c), the store's
 * queue (store.c).  The decode pool's and the linger thread's queue locks
 * are never held with any other.  What clients make the controller hold is
 * counted in one byte budget (--max-held-mb, budget.h), made below.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "acceptor.h"
#include "advertise.h"
#include "budget.h"
#include "call.h"
#include "events.h"
#include "http_api.h"
#include "hub.h"
#include "jsonout.h"
#include "profile.h"
#include "proto.h"
#include "sched.h"
#include "store.h"
#include "webroot.h"
#include "ws.h"

typedef struct options {
    const char *ip;
    const char *location; /* host written into the connection files; NULL: from --ip */
    int port;
    const char *profile;
    const char *ippc_dir;
    const char *db;
    int heartbeat_timeout_s;
    size_t max_body_mb;
    size_t max_raw_mb;
    size_t max_held_mb; /* 0: --max-raw-mb + HELD_FOR_THE_REST_MB */
    size_t keep_results_mb;
    int sched;
    unsigned hwm;
    int metrics_public;
    int fresh; /* new secrets even if a dead controller's files are there */
    int no_fanout;
    size_t fanout_min_bytes[3]; /* push, scatter, gather; SIZE_MAX: never */
    const char *web_root;       /* the dashboard's files */
    const char *sdk_root;       /* the JavaScript SDK, served at /sdk/ */
} options;

/* Where the dashboard and the SDK are read from unless --web-root and
 * --sdk-root say otherwise: set by the build (the source tree's web/ and
 * clients/js/; `make WEB_ROOT=... SDK_ROOT=...` for an installed copy). */
#ifndef IPPC_WEB_ROOT
#define IPPC_WEB_ROOT "web"
#endif
#ifndef IPPC_SDK_ROOT
#define IPPC_SDK_ROOT "clients/js"
#endif

/* Defaults: JSON bodies, raw array bodies (an array of several GiB), the
 * results kept in memory, and the part of the byte budget that is not for
 * one raw array: --max-held-mb defaults to --max-raw-mb plus this, so a raw
 * body within --max-raw-mb is never refused as overloaded on an idle
 * controller; a JSON decode may use a quarter of this part. */
#define MAX_BODY_MB_DEFAULT 64
#define MAX_RAW_MB_DEFAULT 8192
#define KEEP_RESULTS_MB_DEFAULT 512
#define HELD_FOR_THE_REST_MB 2048

/* From which size pushes, scatters and gathers fan out by MPI, measured both
 * ways with bench/bench_fanout_paths.py (bench/NOTES.md): a push gains from
 * 128-256 KiB, a gather from 128 KiB; a scatter moves the same bytes through
 * the controller either way and the fan-out adds a hop: with array memory
 * reused (common/bigmem.h) the per-engine path was faster at every size up
 * to 80 MB (1.3-2x), so scatters go per engine unless asked. */
#define DEFAULT_FANOUT "push=256K,scatter=off,gather=128K"

/* --fanout-min-bytes: comma-separated items, each "VALUE" (every op) or
 * "OP=VALUE" (push, scatter, gather); VALUE is bytes with an optional K, M or
 * G (binary) suffix, or "off".  0, or -1 (min untouched). */
static int parse_fanout(const char *spec, size_t min[3])
{
    static const char *const ops[3] = {"push", "scatter", "gather"};
    size_t out[3];
    memcpy(out, min, sizeof out);
    const char *p = spec;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0)
            return -1;
        int op = -1;
        const char *eq = memchr(p, '=', len);
        const char *value = p;
        if (eq) {
            for (int k = 0; k < 3; k++)
                if ((size_t)(eq - p) == strlen(ops[k]) && strncmp(p, ops[k], (size_t)(eq - p)) == 0)
                    op = k;
            if (op < 0)
                return -1;
            value = eq + 1;
        }
        size_t vlen = len - (size_t)(value - p);
        size_t bytes = SIZE_MAX;
        if (!(vlen == 3 && strncmp(value, "off", 3) == 0)) {
            if (vlen == 0 || value[0] < '0' || value[0] > '9')
                return -1;
            char *stop;
            errno = 0;
            unsigned long long v = strtoull(value, &stop, 10);
            int shift = 0;
            if (stop < value + vlen) {
                const char *units = "KkMmGg";
                const char *u = strchr(units, *stop);
                if (!u || !*stop || stop + 1 != value + vlen)
                    return -1;
                shift = 10 * (int)(1 + (u - units) / 2);
            }
            if (errno || v > (SIZE_MAX >> shift) - 1)
                return -1;
            bytes = (size_t)v << shift;
        }
        for (int k = 0; k < 3; k++)
            if (op < 0 || op == k)
                out[k] = bytes;
        if (!end)
            break;
        p = end + 1;
    }
    memcpy(min, out, sizeof out);
    return 0;
}

/* How long a controller that reuses its predecessor's port waits for it. */
#define REBIND_WAIT_MS 3000
#define REBIND_STEP_MS 100

static int stop_fd = -1;

static void on_signal(int sig)
{
    (void)sig;
    uint64_t one = 1;
    ssize_t rc = write(stop_fd, &one, sizeof one);
    (void)rc;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ippc-controller [options]\n"
            "  --ip ADDR               address to bind (default 127.0.0.1; 0.0.0.0: every\n"
            "                          interface)\n"
            "  --location HOST         host written into the connection files (default: the\n"
            "                          --ip address; for 0.0.0.0 this host's first\n"
            "                          non-loopback IPv4 address), e.g. a name behind NAT\n"
            "  --port N                port (default 0: any free port; see the connection file)\n"
            "  --profile NAME          profile (default \"default\")\n"
            "  --ippc-dir DIR          state folder (default $IPPC_DIR or ~/.ippc)\n"
            "  --db memory|PATH        task store: SQLite file (default PROFILE_DIR/tasks.db)\n"
            "                          or memory (nothing on disk)\n"
            "  --scheduler NAME        leastload (default), lru, twobin, weighted, random\n"
            "  --hwm N                 balanced tasks an engine may hold at once (default 1)\n"
            "  --heartbeat-timeout S   silence after which an engine is dead (default %d)\n"
            "  --max-body-mb N         largest JSON request body (default %d)\n"
            "  --max-raw-mb N          largest raw array body, application/octet-stream\n"
            "                          (default %d)\n"
            "  --max-held-mb N         bytes all peers together may make the controller hold\n"
            "                          (messages and bodies in flight, queued output); past\n"
            "                          it, requests get 503 \"overloaded\".  Default:\n"
            "                          --max-raw-mb + %d, so one raw body of the largest size\n"
            "                          fits on an idle controller.  A JSON decode may use a\n"
            "                          quarter of it (of %d when not given)\n"
            "  --keep-results-mb N     results of finished requests and tasks kept in memory\n"
            "                          (default %d); the oldest finished are forgotten first\n"
            "                          (tasks stay in the store; a forgotten request answers\n"
            "                          410 gone).  Blocking pulls and gathers are released\n"
            "                          once answered\n"
            "  --fanout-min-bytes SPEC a push, scatter or gather of at least this many bytes\n"
            "                          of arrays over 2+ engines of one MPI job moves them\n"
            "                          to or from one engine only, and MPI fans them out:\n"
            "                          N[K|M|G] or off for every op, or op=N|off items\n"
            "                          (push, scatter, gather), comma-separated; 0 = always\n"
            "                          (default %s)\n"
            "  --no-fanout             the same as --fanout-min-bytes off: every engine\n"
            "                          gets its data from the controller\n"
            "  --metrics-public        serve GET /metrics without the token\n"
            "  --web-root DIR          the dashboard's files, served at / without the token\n"
            "                          (default %s)\n"
            "  --sdk-root DIR          the JavaScript SDK, served at /sdk/NAME.js\n"
            "                          (default %s)\n"
            "  --fresh                 new token, engine key and port even when a previous\n"
            "                          controller of this profile left its files behind\n"
            "  --print-routes          print the REST route table and exit\n"
            "  --print-ws-ops          print the /ws request ops (op, operationId, fields) and\n"
            "                          exit\n"
            "  --version, --help\n",
            IPPC_HEARTBEAT_TIMEOUT_MS / 1000, MAX_BODY_MB_DEFAULT, MAX_RAW_MB_DEFAULT,
            HELD_FOR_THE_REST_MB, HELD_FOR_THE_REST_MB, KEEP_RESULTS_MB_DEFAULT, DEFAULT_FANOUT,
            IPPC_WEB_ROOT, IPPC_SDK_ROOT);
}

static int parse_options(int argc, char **argv, options *o)
{
    static const struct option longs[] = {
        {"ip", required_argument, NULL, 'i'},
        {"location", required_argument, NULL, 'L'},
        {"port", required_argument, NULL, 'p'},
        {"profile", required_argument, NULL, 'P'},
        {"ippc-dir", required_argument, NULL, 'd'},
        {"db", required_argument, NULL, 'b'},
        {"heartbeat-timeout", required_argument, NULL, 't'},
        {"max-body-mb", required_argument, NULL, 'm'},
        {"max-held-mb", required_argument, NULL, 'H'},
        {"max-raw-mb", required_argument, NULL, 'R'},
        {"keep-results-mb", required_argument, NULL, 'K'},
        {"scheduler", required_argument, NULL, 's'},
        {"hwm", required_argument, NULL, 'w'},
        {"print-routes", no_argument, NULL, 'r'},
        {"print-ws-ops", no_argument, NULL, 'O'},
        {"metrics-public", no_argument, NULL, 'M'},
        {"fanout-min-bytes", required_argument, NULL, 'f'},
        {"no-fanout", no_argument, NULL, 'N'},
        {"web-root", required_argument, NULL, 'W'},
        {"sdk-root", required_argument, NULL, 'S'},
        {"fresh", no_argument, NULL, 'F'},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'i': o->ip = optarg; break;
        case 'L': o->location = optarg; break;
        case 'p':
            o->port = (int)strtol(optarg, &end, 10);
            if (*end || o->port < 0 || o->port > 65535) {
                fprintf(stderr, "ippc-controller: --port must be 0..65535\n");
                return 2;
            }
            break;
        case 'P': o->profile = optarg; break;
        case 'd': o->ippc_dir = optarg; break;
        case 'b': o->db = optarg; break;
        case 't':
            o->heartbeat_timeout_s = (int)strtol(optarg, &end, 10);
            if (*end || o->heartbeat_timeout_s < 2 || o->heartbeat_timeout_s > 86400) {
                fprintf(stderr, "ippc-controller: --heartbeat-timeout must be 2..86400\n");
                return 2;
            }
            break;
        case 'm':
            o->max_body_mb = (size_t)strtoul(optarg, &end, 10);
            if (*end || o->max_body_mb < 1 || o->max_body_mb > 4096) {
                fprintf(stderr, "ippc-controller: --max-body-mb must be 1..4096\n");
                return 2;
            }
            break;
        case 'H':
            o->max_held_mb = (size_t)strtoul(optarg, &end, 10);
            if (*end || o->max_held_mb < 1 || o->max_held_mb > ((size_t)1 << 20)) {
                fprintf(stderr, "ippc-controller: --max-held-mb must be 1..1048576\n");
                return 2;
            }
            break;
        case 'R':
            o->max_raw_mb = (size_t)strtoul(optarg, &end, 10);
            if (*end || o->max_raw_mb < 1 || o->max_raw_mb > ((size_t)1 << 20)) {
                fprintf(stderr, "ippc-controller: --max-raw-mb must be 1..1048576\n");
                return 2;
            }
            break;
        case 'K':
            o->keep_results_mb = (size_t)strtoul(optarg, &end, 10);
            if (*end || o->keep_results_mb < 1 || o->keep_results_mb > ((size_t)1 << 20)) {
                fprintf(stderr, "ippc-controller: --keep-results-mb must be 1..1048576\n");
                return 2;
            }
            break;
        case 's':
            o->sched = sched_parse(optarg);
            if (o->sched < 0) {
                fprintf(stderr, "ippc-controller: --scheduler is one of leastload, lru, twobin, "
                                "weighted, random\n");
                return 2;
            }
            break;
        case 'w':
            o->hwm = (unsigned)strtoul(optarg, &end, 10);
            if (*end || o->hwm < 1 || o->hwm > 1000000) {
                fprintf(stderr, "ippc-controller: --hwm must be 1..1000000\n");
                return 2;
            }
            break;
        case 'M': o->metrics_public = 1; break;
        case 'f':
            if (parse_fanout(optarg, o->fanout_min_bytes) < 0) {
                fprintf(stderr, "ippc-controller: --fanout-min-bytes takes N[K|M|G] or off, or "
                                "comma-separated push=, scatter=, gather= items of them\n");
                return 2;
            }
            break;
        case 'N': o->no_fanout = 1; break;
        case 'W': o->web_root = optarg; break;
        case 'S': o->sdk_root = optarg; break;
        case 'F': o->fresh = 1; break;
        case 'r': http_print_routes(stdout); return 0;
        case 'O': call_print_ws_ops(stdout); return 0;
        case 'v': printf("ippc-controller %s\n", IPPC_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (!profile_name_valid(o->profile)) {
        fprintf(stderr, "ippc-controller: profile names use letters, digits, - _ . "
                        "(not first: - .)\n");
        return 2;
    }
    return -1;
}

static int random_hex(char *out, size_t bytes)
{
    unsigned char buf[64];
    if (bytes > sizeof buf || getrandom(buf, bytes, 0) != (ssize_t)bytes)
        return -1;
    for (size_t i = 0; i < bytes; i++)
        sprintf(out + 2 * i, "%02x", buf[i]);
    return 0;
}

/* Writes JSON to path with mode 0600, atomically (temp file + rename). */
static int write_secret_json(const char *path, json_t *value)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    char *text = jsonout_dumps(value, JSON_INDENT(2));
    size_t n = text ? strlen(text) : 0;
    int ok = text && write(fd, text, n) == (ssize_t)n && write(fd, "\n", 1) == 1;
    free(text);
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Takes path, PROFILE_DIR/controller.lock (flock), held until the process ends.
 * Whether a previous controller of the profile is alive is decided by this
 * lock, not by its pid: kill(pid, 0) succeeds for a zombie (killed, not yet
 * reaped by its parent) and for an unrelated process that got the pid, while
 * the kernel drops a flock when the holder's descriptors close at exit, before
 * it becomes a zombie.  Returns the fd when taken (no controller of the
 * profile is alive), -1 when another process holds it, -2 when the file
 * cannot be used (then nobody can tell; the caller assumes alive). */
static int take_profile_lock(const char *path, char *why, size_t why_len)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(why, why_len, "cannot open %s: %s", path, strerror(errno));
        return -2;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
        return fd;
    int saved = errno;
    close(fd);
    if (saved == EWOULDBLOCK)
        return -1;
    snprintf(why, why_len, "cannot lock %s: %s", path, strerror(saved));
    return -2;
}

/* Reads the secrets a previous controller of this profile left behind (the
 * caller knows it is gone).  1 if reused. */
static int reuse_secrets(const char *client_file, const char *engine_file, char token[65],
                         char key[65], int *port)
{
    json_t *c = json_load_file(client_file, 0, NULL), *e = json_load_file(engine_file, 0, NULL);
    int ok = 0;
    const char *t = json_string_value(json_object_get(c, "token"));
    const char *k = json_string_value(json_object_get(e, "key"));
    const char *url = json_string_value(json_object_get(c, "url"));
    const char *colon = url ? strrchr(url, ':') : NULL;
    if (t && k && strlen(t) == 64 && strlen(k) == 64 && colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        ok = *end == '\0' && p > 0 && p <= 65535; /* a damaged file is not reused */
        if (ok) {
            memcpy(token, t, 65);
            memcpy(key, k, 65);
            *port = (int)p;
        }
    }
    json_decref(c);
    json_decref(e);
    return ok;
}

/* Listens on the previous controller's port.  A controller killed a moment
 * ago may still hold it while the kernel tears it down (its flock can be
 * released before its listening socket), so retry for REBIND_WAIT_MS before
 * taking any free port, and say which happened. */
static int listen_again(const char *ip, int old_port, int *port, ippc_error *err)
{
    int fd = acceptor_listen(ip, old_port, port, err);
    if (fd >= 0)
        return fd;
    fprintf(stderr,
            "ippc-controller: port %d of the previous controller is busy (%s); "
            "retrying for up to %d ms\n",
            old_port, err->message, REBIND_WAIT_MS);
    for (int waited = 0; fd < 0 && waited < REBIND_WAIT_MS; waited += REBIND_STEP_MS) {
        struct timespec step = {0, REBIND_STEP_MS * 1000L * 1000L};
        nanosleep(&step, NULL);
        fd = acceptor_listen(ip, old_port, port, err);
    }
    if (fd >= 0) {
        fprintf(stderr, "ippc-controller: took port %d back\n", old_port);
        return fd;
    }
    fprintf(stderr,
            "ippc-controller: port %d is still taken (%s); taking another: engines "
            "of the previous controller cannot reconnect\n",
            old_port, err->message);
    return acceptor_listen(ip, 0, port, err);
}

static void route_http(void *arg, int fd, const struct sockaddr *addr, socklen_t len)
{
    http_add_connection(((void **)arg)[0], fd, addr, len);
}

static void route_ws(void *arg, int fd, const acceptor_verdict *v)
{
    ws_adopt(((void **)arg)[1], fd, v->kind == ACCEPTOR_WS_CLIENT, v->head_len);
}

/* Waiting connections, engines and clients all hold descriptors: take what
 * the hard limit allows (the soft one is often 1024). */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    options o = {.ip = "127.0.0.1",
                 .profile = "default",
                 .max_body_mb = MAX_BODY_MB_DEFAULT,
                 .max_raw_mb = MAX_RAW_MB_DEFAULT,
                 .keep_results_mb = KEEP_RESULTS_MB_DEFAULT,
                 .web_root = IPPC_WEB_ROOT,
                 .sdk_root = IPPC_SDK_ROOT};
    parse_fanout(DEFAULT_FANOUT, o.fanout_min_bytes);
    int rc = parse_options(argc, argv, &o);
    if (rc >= 0)
        return rc;
    /* A JSON decode may use a quarter of --max-held-mb when it is given, and
     * a quarter of the part that is not for a raw array by default. */
    size_t decode_base_mb = o.max_held_mb;
    if (!o.max_held_mb) {
        o.max_held_mb = o.max_raw_mb + HELD_FOR_THE_REST_MB;
        decode_base_mb = HELD_FOR_THE_REST_MB;
    }
    /* The one process-wide budget of what peers make us hold (REST bodies
     * and decoded JSON, WS messages, queued output); every connection's
     * account draws from it. */
    static budget held;
    budget_init(&held, o.max_held_mb << 20);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    static profile_paths paths; /* PATH_MAX strings: not on the stack */
    char path_err[PATH_MAX + 64];
    if (profile_paths_init(&paths, o.ippc_dir, o.profile, path_err, sizeof path_err) < 0 ||
        profile_make_security_dir(&paths, path_err, sizeof path_err) < 0) {
        fprintf(stderr, "ippc-controller: %s\n", path_err);
        return 1;
    }
    const char *client_file = paths.client_file, *engine_file = paths.engine_file;

    char token[65], engine_key[65];
    if (random_hex(token, 32) < 0 || random_hex(engine_key, 32) < 0) {
        fprintf(stderr, "ippc-controller: no randomness for the token\n");
        return 1;
    }
    /* A controller restarted on a profile whose controller died keeps its
     * token, engine key and port, so engines reconnect and clients keep
     * working (the task store keeps the history). */
    char lock_why[PATH_MAX + 64] = "";
    int profile_lock = take_profile_lock(paths.controller_lock_file, lock_why, sizeof lock_why);
    if (profile_lock == -1)
        fprintf(stderr,
                "ippc-controller: another controller of profile %s is running; "
                "starting with a new token, engine key and port\n",
                o.profile);
    else if (profile_lock == -2)
        fprintf(stderr,
                "ippc-controller: %s; cannot tell whether a previous controller is "
                "alive, starting with a new token, engine key and port\n",
                lock_why);
    int reused_port = 0;
    if (!o.fresh && profile_lock >= 0 &&
        reuse_secrets(client_file, engine_file, token, engine_key, &reused_port)) {
        fprintf(stderr,
                "ippc-controller: the previous controller of profile %s is gone; "
                "reusing its token, engine key and port %d\n",
                o.profile, reused_port);
        if (o.port == 0)
            o.port = reused_port;
    }

    ippc_error err = {0};
    char db_path[PATH_MAX];
    if (o.db && strcmp(o.db, "memory") == 0)
        snprintf(db_path, sizeof db_path, "memory");
    else if (o.db)
        snprintf(db_path, sizeof db_path, "%s", o.db);
    else
        snprintf(db_path, sizeof db_path, "%s", paths.tasks_db_file);
    size_t lost = 0;
    store *st = store_open(db_path, &lost, &err);
    if (!st) {
        fprintf(stderr, "ippc-controller: task store %s: %s\n", db_path, err.message);
        return 1;
    }
    if (lost)
        fprintf(stderr,
                "ippc-controller: %zu tasks were unfinished when the last controller "
                "stopped; they are marked lost\n",
                lost);
    int port = 0;
    int listen_fd = reused_port && o.port == reused_port
                        ? listen_again(o.ip, reused_port, &port, &err)
                        : acceptor_listen(o.ip, o.port, &port, &err);
    if (listen_fd < 0) {
        fprintf(stderr, "ippc-controller: %s\n", err.message);
        store_close(st);
        return 1;
    }
    /* Clients and engines need an address they can reach: 0.0.0.0 is not
     * one, and behind NAT neither is the bound one (advertise.h). */
    char host[256];
    if (advertise_host(o.ip, o.location, host, sizeof host, &err) < 0) {
        fprintf(stderr, "ippc-controller: %s\n", err.message);
        close(listen_fd);
        store_close(st);
        return 1;
    }
    if (!advertise_is_loopback(o.ip))
        fprintf(stderr,
                "ippc-controller: warning: listening on %s:%d without TLS: the token, the "
                "engine key and all data cross the network unencrypted; use it on a trusted "
                "network only (docs/clusters.md)\n",
                o.ip, port);
    char url[320], ws_url[320], engine_url[320];
    snprintf(url, sizeof url, "http://%s:%d", host, port);
    snprintf(ws_url, sizeof ws_url, "ws://%s:%d/ws", host, port);
    snprintf(engine_url, sizeof engine_url, "ws://%s:%d/engine", host, port);

    stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: poll() must return */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    hub_config hcfg = {
        .engine_key = engine_key,
        .profile = o.profile,
        .url = url,
        .ws_url = ws_url,
        .heartbeat_timeout_ms = o.heartbeat_timeout_s * 1000,
        .sched = o.sched,
        .hwm = o.hwm,
        .fanout = !o.no_fanout,
        .engine_message_max = held.limit < IPPC_MAX_WS_MESSAGE ? held.limit : IPPC_MAX_WS_MESSAGE,
        .fanout_min_bytes = {o.fanout_min_bytes[0], o.fanout_min_bytes[1], o.fanout_min_bytes[2]},
        .keep_results_bytes = o.keep_results_mb << 20,
        .store = st,
        .events = events_new(10000)};
    hub *h = hcfg.events ? hub_new(&hcfg) : NULL;
    webroot *files = webroot_new(o.web_root, o.sdk_root);
    struct stat web_st;
    if (files && (stat(o.web_root, &web_st) < 0 || !S_ISDIR(web_st.st_mode)))
        fprintf(stderr, "ippc-controller: no dashboard: %s is not a folder (--web-root)\n",
                o.web_root);
    http_config httpcfg = {.token = token,
                           .max_body = o.max_body_mb << 20,
                           .max_raw = o.max_raw_mb << 20,
                           .decode_cap = (decode_base_mb << 20) / 4,
                           .metrics_public = o.metrics_public,
                           .held = &held,
                           .files = files};
    http_api *api = h && files ? http_start(h, &httpcfg, &err) : NULL;
    ws_config wscfg = {.token = token, .engine_key = engine_key, .budget = &held};
    ws_server *ws = api ? ws_start(h, hcfg.events, &wscfg, &err) : NULL;
    if (!ws) {
        fprintf(stderr, "ippc-controller: %s\n", err.message[0] ? err.message : "out of memory");
        http_stop(api);
        webroot_free(files);
        hub_free(h);
        events_free(hcfg.events);
        store_close(st);
        return 1;
    }

    json_t *engine_json = json_pack("{s:s, s:s, s:s, s:i}", "url", engine_url, "key", engine_key,
                                    "controller", url, "pid", (int)getpid());
    json_t *client_json =
        json_pack("{s:s, s:s, s:s, s:s, s:i, s:s}", "url", url, "ws_url", ws_url, "token", token,
                  "profile", o.profile, "pid", (int)getpid(), "engine_file", engine_file);
    int written = write_secret_json(engine_file, engine_json) == 0 &&
                  write_secret_json(client_file, client_json) == 0;
    json_decref(engine_json);
    json_decref(client_json);
    if (!written) {
        fprintf(stderr, "ippc-controller: cannot write connection files in %s\n",
                paths.security_dir);
        rc = 1;
    } else {
        printf("ippc-controller %s listening on %s (profile %s)\n", IPPC_VERSION, url, o.profile);
        printf("connection file: %s\n", client_file);
        fflush(stdout);
        void *targets[2] = {api, ws};
        acceptor_routes routes = {.to_http = route_http, .to_ws = route_ws, .arg = targets};
        acceptor_config acfg = {.secrets = {.token = token, .engine_key = engine_key}};
        acceptor_run(listen_fd, stop_fd, &routes, &acfg);
        rc = 0;
        fprintf(stderr, "ippc-controller: stopping\n");
    }

    /* Orderly stop: engines first (they finish and exit), then the servers. */
    close(listen_fd);
    hub_shutdown_engines(h, "controller stopping");
    for (int i = 0; i < 30 && ws_engine_connections(ws) > 0; i++)
        usleep(100 * 1000);
    http_stop(api);
    ws_stop(ws);
    webroot_free(files);
    hub_free(h);
    events_free(hcfg.events);
    store_close(st);
    unlink(client_file);
    unlink(engine_file);
    if (profile_lock >= 0)
        close(profile_lock); /* after the files: a successor finds none */
    close(stop_fd);
    return rc;
}
