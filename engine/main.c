/* main.c — ippc-engine: one MPI rank that runs the controller's tasks.
 *
 * Threads:
 *   main — called MPI_Init_thread; waits on a condition variable for tasks and
 *          runs them one at a time in the Lua runtime (user code, MPI calls).
 *   net  — the libwebsockets client: connects (and reconnects with backoff),
 *          registers, sends heartbeats on a timer (so a busy engine is not a
 *          dead one), receives tasks into the inbox, writes results.
 * The inbox (tasks) is guarded by `lock`; results travel in a ws_outq, which
 * has its own lock, and the net thread is woken with lws_cancel_service.
 *
 * Lifetime: the engine exits after a "shutdown" message, after a refused
 * registration, or when the controller has been unreachable for --grace
 * seconds (so no rank outlives its cluster when mpiexec is SIGKILLed).
 */
#include <ctype.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <libwebsockets.h>
#include <mpi.h>

#include "jsonout.h"
#include "list.h"
#include "profile.h"
#include "proto.h"
#include "runtime.h"
#include "wsmsg.h"

typedef struct inbox_item {
    list_node link; /* in E.inbox */
    json_t *msg;
    ippc_blobs blobs;
} inbox_item;

typedef struct engine {
    /* identity */
    int rank, size, pid;
    char job[33];
    char job_prefix[16]; /* --job NAME: the job is NAME.<16 hex> */
    char host[256];
    /* controller */
    char url[512];
    char key[256];
    char address[256];
    char path[256];
    int port;
    int grace_s;
    size_t max_message;             /* what this engine takes in one message */
    atomic_size_t peer_max_message; /* what the controller does ("registered") */
    /* net thread */
    struct lws_context *ctx;
    struct lws *wsi;
    pthread_t net;
    ws_outq out;
    ws_reader reader;
    int register_sent;
    int engine_id;
    int64_t unreachable_since_ms; /* 0 while connected */
    int backoff_ms;
    lws_sorted_usec_list_t heartbeat_timer, reconnect_timer;
    /* shared */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    list_node inbox; /* inbox_item.link: tasks to run, in arrival order */
    atomic_int stop; /* 1: finish and exit */
    atomic_int exit_code;
    atomic_llong running_task; /* 0 when idle */
    runtime *rt;
} engine;

static engine E;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_msg(const char *fmt, ...)
{
    /* One write per line, so the ranks' lines do not interleave. */
    char line[1024];
    int n = snprintf(line, sizeof line, "ippc-engine[%d/%d]: ", E.rank, E.size);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    strcat(line, "\n");
    fputs(line, stderr);
}

static void request_stop(int code)
{
    pthread_mutex_lock(&E.lock);
    if (!atomic_load(&E.stop))
        atomic_store(&E.exit_code, code);
    atomic_store(&E.stop, 1);
    pthread_cond_broadcast(&E.cond);
    pthread_mutex_unlock(&E.lock);
    if (E.rt)
        runtime_interrupt(E.rt);
}

/* ------------------------------------------------------------ net thread */

static void connect_now(lws_sorted_usec_list_t *sul);

/* The controller forgets an engine's tasks when its socket closes (they are
 * lost or retried elsewhere), so their results could never be delivered:
 * stop the running one and drop the queued ones. */
static void inbox_free_all(list_node *items)
{
    list_for_each_safe(node, items) {
        inbox_item *it = list_entry(node, inbox_item, link);
        list_remove(node);
        json_decref(it->msg);
        blobs_free(&it->blobs);
        free(it);
    }
}

static void abandon_tasks(void)
{
    list_node dropped;
    list_init(&dropped);
    pthread_mutex_lock(&E.lock);
    list_move_all(&dropped, &E.inbox);
    pthread_mutex_unlock(&E.lock);
    inbox_free_all(&dropped);
    if (E.rt && atomic_load(&E.running_task))
        runtime_interrupt(E.rt);
}

static void schedule_reconnect(void)
{
    if (E.engine_id >= 0)
        abandon_tasks();
    E.engine_id = -1;
    E.wsi = NULL;
    E.register_sent = 0;
    ws_outq_clear(&E.out);
    ws_reader_free(&E.reader);
    ws_reader_init(&E.reader, E.max_message, NULL);
    int64_t now = now_ms();
    if (!E.unreachable_since_ms)
        E.unreachable_since_ms = now;
    if (now - E.unreachable_since_ms > (int64_t)E.grace_s * 1000) {
        log_msg("controller unreachable for %d s, exiting", E.grace_s);
        request_stop(3);
        return;
    }
    E.backoff_ms = E.backoff_ms ? E.backoff_ms * 2 : 100;
    if (E.backoff_ms > 2000)
        E.backoff_ms = 2000;
    lws_sul_schedule(E.ctx, 0, &E.reconnect_timer, connect_now,
                     (lws_usec_t)E.backoff_ms * LWS_US_PER_MS);
}

static void connect_now(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    if (atomic_load(&E.stop))
        return;
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = E.ctx;
    ci.address = E.address;
    ci.port = E.port;
    ci.path = E.path;
    ci.host = E.address;
    ci.origin = E.address;
    ci.protocol = IPPC_ENGINE_SUBPROTOCOL;
    ci.pwsi = &E.wsi;
    if (!lws_client_connect_via_info(&ci))
        schedule_reconnect();
}

/* Resident set size in bytes (from /proc/self/statm), or -1. */
static long long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long long resident = -1;
    if (f) {
        char line[128];
        char *end = NULL, *next = NULL;
        if (fgets(line, sizeof line, f)) {
            (void)strtoll(line, &end, 10); /* the total size: not needed */
            if (end != line)
                resident = strtoll(end, &next, 10);
            if (next == end)
                resident = -1;
        }
        (void)fclose(f); /* read-only: nothing to lose */
    }
    return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

static void send_heartbeat(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    if (E.wsi && E.engine_id >= 0) {
        long long task = atomic_load(&E.running_task);
        json_t *hb = json_pack("{s:s, s:b, s:I}", "type", "heartbeat", "busy", task != 0, "rss",
                               (json_int_t)rss_bytes());
        json_object_set_new(hb, "task", task ? json_integer(task) : json_null());
        ws_outq_push(&E.out, hb, NULL, 0);
        json_decref(hb);
        lws_callback_on_writable(E.wsi);
    }
    lws_sul_schedule(E.ctx, 0, &E.heartbeat_timer, send_heartbeat,
                     (lws_usec_t)IPPC_HEARTBEAT_PERIOD_MS * LWS_US_PER_MS);
}

static int write_register(struct lws *wsi)
{
    json_t *reg =
        json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:i, s:s, s:i, s:I}", "type", "register", "key",
                  E.key, "job", E.job, "rank", E.rank, "size", E.size, "host", E.host, "pid", E.pid,
                  "version", IPPC_VERSION, "nbuf", 0, "max_message", (json_int_t)E.max_message);
    char *text = jsonout_dumps(reg, JSON_COMPACT);
    json_decref(reg);
    if (!text)
        return -1;
    size_t n = strlen(text);
    unsigned char *buf = malloc(LWS_PRE + n);
    int rc = -1;
    if (buf) {
        memcpy(buf + LWS_PRE, text, n);
        rc = lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_TEXT) < (int)n ? -1 : 0;
        free(buf);
    }
    free(text);
    E.register_sent = 1;
    return rc;
}

/* An interrupt names the task it is for (timeouts, aborts) or none (a view's
 * interrupt: whatever runs).  A named task that is still queued here is
 * dropped and answered "aborted" without running. */
static void interrupt_task(const json_t *task)
{
    if (!json_is_integer(task)) {
        if (E.rt)
            runtime_interrupt(E.rt);
        return;
    }
    json_int_t id = json_integer_value(task);
    if (atomic_load(&E.running_task) == id) {
        if (E.rt)
            runtime_interrupt(E.rt);
        return;
    }
    pthread_mutex_lock(&E.lock);
    inbox_item *it = NULL;
    list_for_each(node, &E.inbox) {
        inbox_item *queued = list_entry(node, inbox_item, link);
        if (json_integer_value(json_object_get(queued->msg, "task")) == id) {
            it = queued;
            break;
        }
    }
    if (it)
        list_remove(&it->link);
    pthread_mutex_unlock(&E.lock);
    if (!it)
        return; /* finished already: nothing to stop */
    json_t *result = json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:[s]}", "type", "result", "task",
                               id, "status", "aborted", "stdout", "", "ename", "Aborted", "evalue",
                               "interrupted before it started", "traceback",
                               "Aborted: interrupted before it started");
    ws_outq_push(&E.out, result, NULL, 0);
    json_decref(result);
    if (E.wsi)
        lws_callback_on_writable(E.wsi);
    json_decref(it->msg);
    blobs_free(&it->blobs);
    free(it);
}

static void on_message(json_t *msg, ippc_blobs *blobs)
{
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (type && strcmp(type, "task") == 0) {
        inbox_item *it = calloc(1, sizeof *it);
        if (!it) {
            json_decref(msg);
            blobs_free(blobs);
            return;
        }
        it->msg = msg;
        it->blobs = *blobs;
        blobs_init(blobs);
        pthread_mutex_lock(&E.lock);
        list_push_back(&E.inbox, &it->link);
        pthread_cond_signal(&E.cond);
        pthread_mutex_unlock(&E.lock);
        return;
    }
    if (type && strcmp(type, "registered") == 0) {
        json_t *id = json_object_get(msg, "id");
        E.engine_id = json_is_integer(id) ? (int)json_integer_value(id) : -1;
        json_t *max = json_object_get(msg, "max_message");
        atomic_store(&E.peer_max_message,
                     json_is_integer(max) && json_integer_value(max) > 0 &&
                             (uint64_t)json_integer_value(max) < IPPC_MAX_WS_MESSAGE
                         ? (size_t)json_integer_value(max)
                         : IPPC_MAX_WS_MESSAGE);
        log_msg("registered as engine %d", E.engine_id);
    } else if (type && strcmp(type, "shutdown") == 0) {
        log_msg("controller asked to shut down");
        request_stop(0);
    } else if (type && strcmp(type, "interrupt") == 0) {
        interrupt_task(json_object_get(msg, "task"));
    } else if (type && strcmp(type, "error") == 0) {
        log_msg("controller refused this engine: %s",
                json_string_value(json_object_get(msg, "message")));
        request_stop(2);
    }
    json_decref(msg);
    blobs_free(blobs);
}

static int client_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    (void)user;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED: {
        /* A result is a JSON frame plus binary frames: do not let the second
         * small write wait for a delayed ACK. */
        int one = 1;
        setsockopt(lws_get_socket_fd(wsi), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        E.unreachable_since_ms = 0;
        E.backoff_ms = 0;
        E.engine_id = -1;
        lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        /* The controller checks the key on the upgrade itself, before it
         * reads a frame (the register message carries it as well). */
        unsigned char **p = in, *end = *p + len;
        char value[sizeof E.key + 8];
        int n = snprintf(value, sizeof value, "Bearer %s", E.key);
        if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, (unsigned char *)value,
                                         n, p, end))
            return -1;
        break;
    }
    case LWS_CALLBACK_CLIENT_RECEIVE: {
        json_t *msg = NULL;
        ippc_blobs blobs;
        blobs_init(&blobs);
        ippc_error err = {0};
        int rc = ws_reader_feed(&E.reader, wsi, in, len, &msg, &blobs, &err);
        if (rc < 0) {
            log_msg("bad message from the controller: %s", err.message);
            return -1;
        }
        if (rc == 1)
            on_message(msg, &blobs);
        break;
    }
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
        if (!E.register_sent)
            return write_register(wsi) < 0 ? -1 : (lws_callback_on_writable(wsi), 0);
        int rc = ws_outq_write(&E.out, wsi);
        if (rc < 0)
            return -1;
        if (rc > 0)
            lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (E.unreachable_since_ms == 0)
            log_msg("cannot reach %s: %s", E.url, in ? (const char *)in : "connection error");
        schedule_reconnect();
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (!atomic_load(&E.stop))
            log_msg("connection to the controller closed; reconnecting");
        schedule_reconnect();
        break;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (E.wsi && !ws_outq_empty(&E.out))
            lws_callback_on_writable(E.wsi);
        break;
    default: break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {IPPC_ENGINE_SUBPROTOCOL, client_callback, 0, 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void *net_main(void *arg)
{
    (void)arg;
    lws_sul_schedule(E.ctx, 0, &E.reconnect_timer, connect_now, 1);
    lws_sul_schedule(E.ctx, 0, &E.heartbeat_timer, send_heartbeat,
                     (lws_usec_t)IPPC_HEARTBEAT_PERIOD_MS * LWS_US_PER_MS);
    /* After stop, keep serving briefly so queued results and the close go out. */
    int64_t stop_deadline = 0;
    for (;;) {
        if (atomic_load(&E.stop)) {
            if (!stop_deadline) {
                stop_deadline = now_ms() + 1000;
                /* A signal handler set stop: wake the main thread for it. */
                pthread_mutex_lock(&E.lock);
                pthread_cond_broadcast(&E.cond);
                pthread_mutex_unlock(&E.lock);
            }
            if (!E.wsi || ws_outq_empty(&E.out) || now_ms() > stop_deadline)
                break;
        }
        if (lws_service(E.ctx, 0) < 0)
            break;
    }
    return NULL;
}

/* ------------------------------------------------------------ main thread */

static int load_connection_file(const char *path)
{
    engine_connection_info info;
    char err[PATH_MAX + 128];
    if (engine_connection_read(path, &info, err, sizeof err) < 0) {
        fprintf(stderr, "ippc-engine: %s\n", err);
        return -1;
    }
    snprintf(E.url, sizeof E.url, "%s", info.url);
    snprintf(E.key, sizeof E.key, "%s", info.key);
    return 0;
}

static int parse_url(void)
{
    char copy[512];
    snprintf(copy, sizeof copy, "%s", E.url);
    const char *prot, *address, *path;
    int port;
    if (lws_parse_uri(copy, &prot, &address, &port, &path) || strcmp(prot, "ws") != 0) {
        fprintf(stderr, "ippc-engine: bad controller url '%s' (want ws://HOST:PORT/engine)\n",
                E.url);
        return -1;
    }
    snprintf(E.address, sizeof E.address, "%s", address);
    snprintf(E.path, sizeof E.path, "/%s", path);
    E.port = port;
    return 0;
}

static bool job_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len >= sizeof E.job_prefix)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr(".-_", name[i]))
            return false;
    return true;
}

static int parse_args(int argc, char **argv)
{
    static const struct option longs[] = {
        {"file", required_argument, NULL, 'f'},
        {"url", required_argument, NULL, 'u'},
        {"key", required_argument, NULL, 'k'},
        {"grace", required_argument, NULL, 'g'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'v'},
        {"max-message-mb", required_argument, NULL, 'm'},
        {"job", required_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    const char *file = NULL;
    int c;
    char *end;
    E.grace_s = 30;
    E.max_message = IPPC_MAX_WS_MESSAGE;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'f': file = optarg; break;
        case 'u': snprintf(E.url, sizeof E.url, "%s", optarg); break;
        case 'k': snprintf(E.key, sizeof E.key, "%s", optarg); break;
        case 'g': {
            long g = strtol(optarg, &end, 10);
            E.grace_s = !*end && g > 0 && g <= INT_MAX ? (int)g : 30;
            break;
        }
        case 'm': {
            unsigned long long mb = strtoull(optarg, &end, 10);
            if (*end || mb < 1 || mb > (IPPC_MAX_WS_MESSAGE >> 20)) {
                fprintf(stderr, "ippc-engine: --max-message-mb must be 1..%zu\n",
                        IPPC_MAX_WS_MESSAGE >> 20);
                return 2;
            }
            E.max_message = (size_t)mb << 20;
            break;
        }
        case 'j':
            /* The launcher names its jobs so it can tell their engines apart. */
            if (!job_name_valid(optarg)) {
                fprintf(stderr, "ippc-engine: --job needs 1-15 letters, digits, '.', '-' or "
                                "'_'\n");
                return 2;
            }
            snprintf(E.job_prefix, sizeof E.job_prefix, "%s", optarg);
            break;
        case 'v': printf("ippc-engine %s\n", IPPC_VERSION); return 0;
        case 'h':
            printf("usage: ippc-engine --file ippc-engine.json | --url ws://HOST:PORT/engine "
                   "--key KEY [--grace SECONDS] [--max-message-mb N] [--job NAME]\n"
                   "  --job NAME          the MPI job's id at the controller is NAME.<random hex> "
                   "(default:\n                      only the random hex)\n"
                   "  --max-message-mb N  the largest message (a task and its arrays) this "
                   "engine\n"
                   "                      takes (default %zu); a larger one fails on the "
                   "controller\n",
                   IPPC_MAX_WS_MESSAGE >> 20);
            return 0;
        default: return 2;
        }
    }
    if (file && load_connection_file(file) < 0)
        return 2;
    if (!E.url[0] || !E.key[0]) {
        fprintf(stderr, "ippc-engine: give --file or both --url and --key\n");
        return 2;
    }
    return parse_url() < 0 ? 2 : -1;
}

static void make_job_id(void)
{
    unsigned char rnd[16] = {0};
    size_t n_random = E.job_prefix[0] ? 8 : 16;
    if (E.rank == 0 && getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        unsigned long x = (unsigned long)time(NULL) ^ (unsigned long)getpid();
        memcpy(rnd, &x, sizeof x);
    }
    /* Every rank of this job gets rank 0's id: that is how the controller
     * knows which engines share a COMM_WORLD.  A --job name only prefixes
     * it: ranks that came up as separate singletons (an mpiexec of another
     * MPI) must still be separate jobs. */
    MPI_Bcast(rnd, sizeof rnd, MPI_BYTE, 0, MPI_COMM_WORLD);
    size_t used = 0;
    if (E.job_prefix[0])
        used = (size_t)snprintf(E.job, sizeof E.job, "%s.", E.job_prefix);
    for (size_t i = 0; i < n_random && used + 2 < sizeof E.job; i++, used += 2)
        sprintf(E.job + used, "%02x", rnd[i]);
}

/* Stdout while a task runs: sent as it comes (the runtime batches it), so
 * clients see it before the task completes. */
static void stream_stdout(void *arg, uint64_t task, const char *data, size_t len)
{
    (void)arg;
    json_t *msg = json_pack("{s:s, s:I, s:s%}", "type", "stdout", "task", (json_int_t)task, "data",
                            data, len);
    if (!msg)
        return;
    ws_outq_push(&E.out, msg, NULL, 0);
    json_decref(msg);
    lws_cancel_service(E.ctx);
}

/* A result larger than the controller takes would close the connection
 * (and lose every task queued here): it becomes a TooLargeError, the
 * engine's variables unchanged by this answer. */
static json_t *fit_result(json_t *result, ippc_blobs *blobs)
{
    size_t bytes = json_bytes_estimate(result), max = atomic_load(&E.peer_max_message);
    for (size_t i = 0; i < blobs->count; i++)
        bytes += blobs->items[i].len;
    if (bytes <= max)
        return result;
    char why[256];
    snprintf(why, sizeof why,
             "the result takes %.2f GiB; the controller takes at most %.2f GiB in one message",
             (double)bytes / (double)(1u << 30), (double)max / (double)(1u << 30));
    json_t *out = json_pack("{s:s, s:s, s:s, s:s, s:[s]}", "type", "result", "status", "error",
                            "ename", "TooLargeError", "evalue", why, "traceback", why);
    json_t *out_stdout = json_object_get(result, "stdout");
    json_object_set_new(out, "stdout",
                        json_is_string(out_stdout) ? json_incref(out_stdout) : json_string(""));
    json_decref(result);
    blobs_free(blobs);
    blobs_init(blobs);
    return out;
}

static void run_tasks(void)
{
    for (;;) {
        pthread_mutex_lock(&E.lock);
        while (list_empty(&E.inbox) && !atomic_load(&E.stop))
            pthread_cond_wait(&E.cond, &E.lock);
        if (atomic_load(&E.stop)) {
            pthread_mutex_unlock(&E.lock);
            return;
        }
        inbox_item *it = list_entry(list_first(&E.inbox), inbox_item, link);
        list_remove(&it->link);
        pthread_mutex_unlock(&E.lock);

        json_t *tid = json_object_get(it->msg, "task");
        atomic_store(&E.running_task, json_is_integer(tid) ? json_integer_value(tid) : -1);
        ippc_blobs result_blobs;
        blobs_init(&result_blobs);
        json_t *result = runtime_run_task(E.rt, it->msg, &it->blobs, &result_blobs);
        atomic_store(&E.running_task, 0);
        if (result)
            result = fit_result(result, &result_blobs);
        if (result) {
            json_object_set(result, "task", tid);
            ws_outq_push_blobs(&E.out, result, &result_blobs);
            json_decref(result);
            lws_cancel_service(E.ctx);
        }
        blobs_free(&result_blobs);
        json_decref(it->msg);
        blobs_free(&it->blobs);
        free(it);
    }
}

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&E.stop, 1);
    atomic_store(&E.exit_code, 0);
    /* The main thread may be blocked on the condition variable; the net thread
     * notices stop within one service round (at most a heartbeat period) and
     * wakes it: a signal handler may not touch the condition variable. */
    if (E.rt)
        runtime_interrupt(E.rt);
}

int main(int argc, char **argv)
{
    int provided = 0;
    pthread_mutex_init(&E.lock, NULL);
    pthread_cond_init(&E.cond, NULL);
    list_init(&E.inbox);
    int rc = parse_args(argc, argv);
    if (rc >= 0)
        return rc;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "ippc-engine: MPI_Init_thread failed\n");
        return 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &E.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &E.size);
    E.pid = (int)getpid();
    gethostname(E.host, sizeof E.host - 1);
    make_job_id();
    E.engine_id = -1;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    ippc_error err = {0};
    E.rt = runtime_new(E.rank, E.size, &err);
    if (!E.rt) {
        log_msg("cannot start the Lua runtime: %s", err.message);
        MPI_Finalize();
        return 1;
    }
    ws_outq_init(&E.out);
    atomic_store(&E.peer_max_message, IPPC_MAX_WS_MESSAGE);
    ws_reader_init(&E.reader, E.max_message, NULL);
    runtime_set_stdout_sink(E.rt, stream_stdout, NULL);
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    E.ctx = lws_create_context(&info);
    if (!E.ctx || pthread_create(&E.net, NULL, net_main, NULL) != 0) {
        log_msg("cannot start the network thread");
        return 1;
    }

    run_tasks();
    /* From here on the runtime goes away: a late signal must not touch it. */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    lws_cancel_service(E.ctx);
    pthread_join(E.net, NULL);
    lws_context_destroy(E.ctx);
    ws_outq_destroy(&E.out);
    ws_reader_free(&E.reader);
    runtime_free(E.rt);
    inbox_free_all(&E.inbox);
    MPI_Finalize();
    return atomic_load(&E.exit_code);
}
