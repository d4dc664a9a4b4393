/* main.c — ippc-engine: one MPI rank that runs the controller's tasks.
 *
 * Threads:
 *   main — called MPI_Init_thread; waits on a condition variable for tasks and
 *          runs them one at a time in the runtime (Lua or Python: user code,
 *          MPI calls).  Python's GIL is only ever taken here: the net thread
 *          never runs Python, so heartbeats flow while user code holds it.
 *   net  — the WebSocket link (link.c, a plain socket): connects (and
 *          reconnects with backoff), registers, sends heartbeats on a timer
 *          (so a busy engine is not a dead one), receives tasks into the
 *          inbox, writes results; it sleeps in poll() on the socket and an
 *          eventfd.
 * The inbox (tasks) is guarded by `lock`; results travel in a ws_outq, which
 * has its own lock, and the net thread is woken with net_wake (the eventfd).
 *
 * Lifetime: the engine exits after a "shutdown" message, after a refused
 * registration, or when the controller has been unreachable for --grace
 * seconds (so no rank outlives its cluster when mpiexec is SIGKILLed).
 */
#include <errno.h>
#include <ctype.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <libwebsockets.h>
#include <mpi.h>

#include "bigmem.h"
#include "jsonout.h"
#include "link.h"
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
    runtime_kind runtime;           /* --runtime: lua (default) or python */
    size_t max_message;             /* what this engine takes in one message */
    atomic_size_t peer_max_message; /* what the controller does ("registered") */
    /* net thread */
    link_conn *conn; /* NULL while not connected */
    int wake_fd;     /* eventfd: other threads wake the net thread (net_wake) */
    pthread_t net;
    ws_outq out;
    ws_reader reader;
    int engine_id;
    int64_t unreachable_since_ms; /* 0 while connected */
    int64_t reconnect_at_ms;      /* when not connected: the next attempt */
    int backoff_ms;
    /* shared */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    list_node inbox; /* inbox_item.link: tasks to run, in arrival order */
    atomic_int stop; /* 1: finish and exit */
    atomic_int exit_code;
    atomic_llong running_task; /* 0 when idle; set under lock as a task leaves the inbox */
    /* The running task an interrupt was for: applied again every
     * INTERRUPT_REPEAT_MS until that task ends, because one that lands while
     * the runtime starts the task is cleared with the previous task's
     * (runtime.h).  0: none. */
    atomic_llong interrupt_for;
    runtime *rt;
} engine;

static engine E;

/* How often an interrupt is applied again while its task runs. */
#define INTERRUPT_REPEAT_MS 100

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

/* Wakes the net thread (from any thread, signal handlers included): output
 * was queued, or stop was set. */
static void net_wake(void)
{
    uint64_t one = 1;
    ssize_t rc = write(E.wake_fd, &one, sizeof one);
    (void)rc; /* a full counter already wakes it */
}

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
    link_close(E.conn, 1001);
    E.conn = NULL;
    ws_outq_reset(&E.out);
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
    E.reconnect_at_ms = now + E.backoff_ms;
}

static int queue_register(void);

static void connect_now(void)
{
    link_target t = {.address = E.address,
                     .port = E.port,
                     .path = E.path,
                     .protocol = IPPC_ENGINE_SUBPROTOCOL,
                     .key = E.key};
    ippc_error err = {0};
    E.conn = link_connect(&t, 5000, &err);
    if (!E.conn) {
        if (E.unreachable_since_ms == 0)
            log_msg("cannot reach %s: %s", E.url, err.message);
        schedule_reconnect();
        return;
    }
    E.unreachable_since_ms = 0;
    E.backoff_ms = 0;
    E.engine_id = -1;
    if (queue_register() < 0)
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

static void send_heartbeat(void)
{
    if (E.conn && E.engine_id >= 0) {
        long long task = atomic_load(&E.running_task);
        json_t *hb = json_pack("{s:s, s:b, s:I}", "type", "heartbeat", "busy", task != 0, "rss",
                               (json_int_t)rss_bytes());
        json_object_set_new(hb, "task", task ? json_integer(task) : json_null());
        ws_outq_push(&E.out, hb, NULL, 0);
        json_decref(hb);
    }
}

/* The first message on a new connection (ahead of anything queued since). */
static int queue_register(void)
{
    json_t *reg =
        json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:i, s:s, s:i, s:I, s:s}", "type", "register",
                  "key", E.key, "job", E.job, "rank", E.rank, "size", E.size, "host", E.host, "pid",
                  E.pid, "version", IPPC_VERSION, "nbuf", 0, "max_message",
                  (json_int_t)E.max_message, "runtime", runtime_kind_name(E.runtime));
    char *text = jsonout_dumps(reg, JSON_COMPACT);
    json_decref(reg);
    if (!text)
        return -1;
    int rc = ws_outq_push_front_text(&E.out, text, strlen(text), NULL);
    free(text);
    return rc;
}

/* An interrupt names the task it is for (timeouts, aborts) or none (a view's
 * interrupt: whatever runs).  A named task that is still queued here is
 * dropped and answered "aborted" without running; the running one is
 * interrupted until it ends (engine.interrupt_for). */
static void interrupt_task(const json_t *task)
{
    pthread_mutex_lock(&E.lock);
    long long running = atomic_load(&E.running_task);
    json_int_t id = json_is_integer(task) ? json_integer_value(task) : running;
    if (running && running == id) {
        atomic_store(&E.interrupt_for, running);
        pthread_mutex_unlock(&E.lock);
        if (E.rt)
            runtime_interrupt(E.rt);
        return;
    }
    if (!json_is_integer(task)) { /* whatever runs: nothing does */
        pthread_mutex_unlock(&E.lock);
        return;
    }
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
    json_decref(it->msg);
    blobs_free(&it->blobs);
    free(it);
}

static void on_message(void *arg, json_t *msg, ippc_blobs *blobs)
{
    (void)arg;
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

/* The connection failed or ended: log why (unless stopping) and retry. */
static void connection_lost(const char *why)
{
    if (!atomic_load(&E.stop))
        log_msg("connection to the controller lost (%s); reconnecting", why);
    schedule_reconnect();
}

/* See engine.interrupt_for. */
static void reapply_interrupt(void)
{
    pthread_mutex_lock(&E.lock);
    long long want = atomic_load(&E.interrupt_for);
    int still = want && atomic_load(&E.running_task) == want;
    pthread_mutex_unlock(&E.lock);
    if (still && E.rt)
        runtime_interrupt(E.rt);
}

static void *net_main(void *arg)
{
    (void)arg;
    int64_t next_heartbeat = now_ms() + IPPC_HEARTBEAT_PERIOD_MS;
    int64_t next_interrupt = 0;
    /* After stop, keep serving briefly so queued results and the close go out. */
    int64_t stop_deadline = 0;
    int want_write = 0;
    for (;;) {
        int64_t now = now_ms();
        if (atomic_load(&E.stop)) {
            if (!stop_deadline) {
                stop_deadline = now + 1000;
                /* A signal handler set stop: wake the main thread for it. */
                pthread_mutex_lock(&E.lock);
                pthread_cond_broadcast(&E.cond);
                pthread_mutex_unlock(&E.lock);
            }
            if (!E.conn || ws_outq_empty(&E.out) || now > stop_deadline)
                break;
        } else if (!E.conn && now >= E.reconnect_at_ms) {
            connect_now();
            want_write = E.conn != NULL;
            continue;
        }
        if (now >= next_heartbeat) {
            send_heartbeat();
            next_heartbeat = now + IPPC_HEARTBEAT_PERIOD_MS;
            bigmem_trim(0); /* an idle engine gives spare array memory back */
        }
        if (E.conn && (want_write || !ws_outq_empty(&E.out))) {
            int rc = link_write(E.conn, &E.out);
            if (rc < 0) {
                connection_lost(strerror(errno));
                continue;
            }
            want_write = rc > 0;
        }
        int64_t until = next_heartbeat;
        if (atomic_load(&E.interrupt_for)) {
            if (now >= next_interrupt) {
                reapply_interrupt();
                next_interrupt = now + INTERRUPT_REPEAT_MS;
            }
            if (next_interrupt < until)
                until = next_interrupt;
        }
        if (!E.conn && E.reconnect_at_ms < until)
            until = E.reconnect_at_ms;
        if (stop_deadline && stop_deadline < until)
            until = stop_deadline;
        struct pollfd p[2] = {{.fd = E.wake_fd, .events = POLLIN}, {.fd = -1}};
        if (E.conn)
            p[1] = (struct pollfd){.fd = link_fd(E.conn),
                                   .events = (short)(POLLIN | (want_write ? POLLOUT : 0))};
        int left = until > now ? (int)(until - now) : 0;
        if (poll(p, 2, left) < 0 && errno != EINTR)
            break;
        if (p[0].revents & POLLIN) {
            uint64_t n;
            ssize_t rc = read(E.wake_fd, &n, sizeof n);
            (void)rc; /* only the wake-up matters */
        }
        if (E.conn && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            ippc_error err = {0};
            if (link_read(E.conn, &E.reader, on_message, NULL, &err) < 0)
                connection_lost(err.message);
        }
    }
    if (E.conn) {
        link_close(E.conn, 1000);
        E.conn = NULL;
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
        {"runtime", required_argument, NULL, 'r'},
        {"real-mpi4py", no_argument, NULL, 'R'},
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
        case 'r': {
            int kind = runtime_kind_parse(optarg);
            if (kind < 0) {
                fprintf(stderr, "ippc-engine: --runtime must be lua or python, not '%s'\n", optarg);
                return 2;
            }
            E.runtime = (runtime_kind)kind;
            break;
        }
        case 'R': runtime_python_real_mpi4py(1); break;
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
                   "--key KEY [--grace SECONDS] [--max-message-mb N] [--runtime lua|python]\n"
                   "       [--real-mpi4py] [--job NAME]\n"
                   "  --runtime R         the language of this engine's namespace: lua "
                   "(default)\n"
                   "                      or python (embedded CPython, NumPy, mpi4py)\n"
                   "  --real-mpi4py       python: an installed mpi4py built for MPICH instead "
                   "of\n"
                   "                      the engine's own mpi4py.MPI\n"
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
    net_wake();
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
        /* under the lock: an interrupt finds the task queued or running */
        json_t *tid = json_object_get(it->msg, "task");
        atomic_store(&E.running_task, json_is_integer(tid) ? json_integer_value(tid) : -1);
        pthread_mutex_unlock(&E.lock);

        ippc_blobs result_blobs;
        blobs_init(&result_blobs);
        json_t *result = runtime_run_task(E.rt, it->msg, &it->blobs, &result_blobs);
        pthread_mutex_lock(&E.lock);
        atomic_store(&E.running_task, 0);
        atomic_store(&E.interrupt_for, 0);
        pthread_mutex_unlock(&E.lock);
        if (result)
            result = fit_result(result, &result_blobs);
        if (result) {
            json_object_set(result, "task", tid);
            ws_outq_push_blobs(&E.out, result, &result_blobs);
            json_decref(result);
            net_wake();
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
    net_wake();
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
    bigmem_default_limit(BIGMEM_KEEP_BYTES_ENGINE); /* a node may run many engines */
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
    E.rt = runtime_new(E.runtime, E.rank, E.size, &err);
    if (!E.rt) {
        log_msg("cannot start the %s runtime: %s", runtime_kind_name(E.runtime), err.message);
        MPI_Finalize();
        return 1;
    }
    ws_outq_init(&E.out);
    atomic_store(&E.peer_max_message, IPPC_MAX_WS_MESSAGE);
    ws_reader_init(&E.reader, E.max_message, NULL);
    runtime_set_stdout_sink(E.rt, stream_stdout, NULL);
    E.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (E.wake_fd < 0 || pthread_create(&E.net, NULL, net_main, NULL) != 0) {
        log_msg("cannot start the network thread");
        return 1;
    }

    run_tasks();
    /* From here on the runtime goes away: a late signal must not touch it. */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    net_wake();
    pthread_join(E.net, NULL);
    close(E.wake_fd);
    ws_outq_destroy(&E.out);
    ws_reader_free(&E.reader);
    runtime_free(E.rt);
    inbox_free_all(&E.inbox);
    MPI_Finalize();
    return atomic_load(&E.exit_code);
}
