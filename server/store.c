/* store.c — the task store (see store.h): SQLite in WAL mode, fed by one
 * writer thread that commits whatever is queued in one transaction.
 *
 * Connections and locks.  A file store has two connections: the writer's,
 * used only by the writer thread (and by store_open before it starts), and a
 * reader connection shared by store_get / store_query_tasks / store_purge
 * under reader->lock, so reads never wait behind a commit or a checkpoint.
 * A private in-memory database cannot be shared between connections, so a
 * memory store has one connection playing both roles (reader == &writer_conn)
 * and its one lock serialises the writer's transactions with the reads.
 * Connections are opened SQLITE_OPEN_NOMUTEX: our locks already serialise them.
 * queue_lock guards the save queue, the counters and the health fields; it is
 * never held while SQLite works, and never taken while holding a connection
 * lock.
 *
 * No shared memory.  File stores open through SQLite's "unix-excl" VFS: the
 * process takes an exclusive POSIX lock on the database for as long as any of
 * its connections is open, and the WAL index lives in heap memory shared by
 * this process's connections instead of a mmap'd <path>-shm file.  With a
 * -shm file, any fault on it (chattr +i, a full disk when it grows, a file
 * system that refuses shared writable maps) turned into SIGBUS inside SQLite,
 * killing the controller.  The price is that no other process may open the
 * database while the store is open, not even to read; nothing needs to: every
 * reader goes through this store, and take_lock_file already refuses a second
 * controller on the same store (the flock on <path>.lock is taken before
 * SQLite opens the file, so the loser gets a clear message instead of
 * SQLITE_BUSY).  <path>-shm or -wal locks held by other programs no longer
 * matter either: this VFS does not take locks on them.
 *
 * Schema (PRAGMA application_id = 'ippc', PRAGMA user_version = 2):
 *   tasks(id INTEGER PRIMARY KEY, request_id, state, engine, submitted,
 *         started, completed, tags, doc, result, blobs, kind)
 *     request_id / engine are NULL for "none"; times are ISO 8601 UTC in the
 *     canonical form YYYY-MM-DDTHH:MM:SS.ffffffZ, so text order is time order;
 *     tags, doc and result (the skeleton) are JSON text; blobs is described
 *     below; kind is 'direct' or 'balanced'.  Indexes on state, engine,
 *     submitted, completed, kind and request_id; each one ends in the rowid,
 *     so "state = ? AND id > ? ORDER BY id" is a single seek.
 *   Version 1 had no kind (every task was balanced): opening such a file
 *   adds the column and its index, and "kind" to every stored doc, in the
 *   transaction that checks the schema.
 *   task_tags(tag, task_id) WITHOUT ROWID, key (tag, task_id), index task_id:
 *     one row per distinct string tag of a task, rewritten on every save.
 *     A tag query is then an index range in id order that stops after `limit`
 *     rows; json_each over tasks.tags would scan every task for a rare tag.
 *   store_meta(key, value): 'max_task_id' = the highest id ever saved, so a
 *     restarted controller does not reuse ids even after a purge.
 *
 * The blobs column: NULL when the result has no blobs, else
 *     u32 count | count x u64 length | the blobs' bytes, concatenated
 * (integers little-endian).  A value that does not add up exactly is
 * reported as a corrupt record, never read past.
 *
 * Storage faults (see store.h).  The writer thread owns an "unsaved" list:
 * records taken from the queue and not committed yet.  Healthy, it holds one
 * batch at a time.  After a failed commit the store is degraded: later saves
 * are merged into the list as they arrive, one entry per task (a later
 * snapshot replaces the earlier one in place; the upsert would overwrite it
 * anyway), the oldest entries beyond pending_max are dropped, and the whole
 * list is retried with back-off.  The writer also takes over checkpointing
 * (its own WAL hook replaces SQLite's silent auto-checkpoint) so that a
 * database file that cannot be written is noticed, and it notices a database
 * file or WAL removed from under it (SQLITE_FCNTL_HAS_MOVED, the WAL's inode):
 * SQLite would go on writing to files that no longer have a name, and a crash
 * would lose those commits.  A removed WAL is answered by copying every commit
 * into the database at once (the state stays degraded until a restart
 * recreates it); a removed database file keeps records in memory until it is
 * back under its name.
 *
 * Relies on: SQLite >= 3.24 (upsert) with JSON1, Jansson, pthreads.
 */
#include "store.h"

#include "idmap.h"
#include "jsonout.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#define SCHEMA_VERSION 2
#define APPLICATION_ID 0x69707063 /* "ippc" */
#define BUSY_TIMEOUT_MS 2000
#define QUERY_LIMIT_MAX 1000
#define TIME_LEN STORE_TIME_LEN /* "YYYY-MM-DDTHH:MM:SS.ffffffZ" (28 bytes with NUL) */
#define CHECKPOINT_PAGES 1000   /* SQLite's default auto-checkpoint size */
#define CLOSE_ATTEMPTS 3        /* last tries at store_close while degraded */
#define CLOSE_PAUSE_MS 200

/* Query variants: one prepared statement per combination of filters. */
enum {
    Q_STATE = 1,
    Q_ENGINE = 2,
    Q_TAG = 4,
    Q_SINCE = 8,
    Q_KIND = 16,
    Q_REQUEST = 32,
    Q_VARIANTS = 64
};

typedef struct store_conn {
    sqlite3 *db;
    pthread_mutex_t lock;
    bool lock_ready;
    /* writer role */
    sqlite3_stmt *upsert, *delete_tags, *insert_tags, *update_max;
    int wal_pages; /* frames in the WAL after the last commit (its WAL hook) */
    /* reader role */
    sqlite3_stmt *get, *get_state, *query[Q_VARIANTS];
} store_conn;

/* One queued save: everything already serialised, so the writer thread never
 * touches the caller's Jansson objects. */
typedef struct save_item {
    struct save_item *next;
    uint64_t id, request_id;
    int engine;
    char *state;
    const char *kind; /* a static "direct" or "balanced" */
    char *times[3];   /* submitted, started, completed (canonical) or NULL */
    char *tags, *doc, *result;
    ippc_blobs blobs;
    bool unstorable; /* SQLite refused it as too big: skipped and counted once */
} save_item;

struct store {
    char *label;    /* the path as given, or "memory", for messages */
    char *wal_path; /* <path>-wal, or NULL for memory */
    ino_t wal_ino;  /* the WAL's inode once open; 0 = not known */
    bool memory;
    int lock_fd; /* flock'd <path>.lock, or -1 */
    store_conn writer_conn, reader_storage;
    store_conn *reader; /* &reader_storage, or &writer_conn for memory */

    pthread_mutex_t queue_lock;
    pthread_cond_t work_cond;    /* writer waits: queue non-empty or closing */
    pthread_cond_t flushed_cond; /* flushers wait: done_seq advanced */
    bool sync_ready;
    save_item *head, *tail;
    size_t queue_len;    /* items in head..tail */
    uint64_t queued_seq; /* saves accepted so far */
    uint64_t done_seq;   /* saves committed, superseded or dropped */
    uint64_t max_id;     /* highest id stored or queued */
    bool closing;
    bool writer_started;
    pthread_t writer;

    /* Health, written by the writer thread (store_open before it starts). */
    bool degraded;       /* writes fail, or the files need care (see wal_upkeep) */
    bool writes_failing; /* the last commit failed: records wait in unsaved */
    char fault[STORE_ERROR_LEN];
    char state_since[TIME_LEN];
    size_t unsaved_count; /* the writer's list, for pending */
    uint64_t dropped;
    size_t pending_max;
    bool drop_reported; /* this fault's first drop was reported */

    /* The writer thread's own (and store_close's after the join). */
    save_item *unsaved_head, *unsaved_tail;
    idmap unsaved_ids; /* task id -> its entry, only while degraded */
    bool wal_gone;     /* the WAL lost its name: checkpoint every commit */
};

static const char *const TASK_COLUMNS =
    "t.id, t.request_id, t.state, t.engine, t.submitted, t.started, t.completed, t.tags, "
    "t.doc, t.result, t.blobs, t.kind";

static const char *const SCHEMA_V1 =
    "CREATE TABLE tasks ("
    "  id INTEGER PRIMARY KEY,"
    "  request_id INTEGER,"
    "  state TEXT NOT NULL,"
    "  engine INTEGER,"
    "  submitted TEXT,"
    "  started TEXT,"
    "  completed TEXT,"
    "  tags TEXT,"
    "  doc TEXT NOT NULL,"
    "  result TEXT,"
    "  blobs BLOB);"
    "CREATE INDEX tasks_state ON tasks(state);"
    "CREATE INDEX tasks_engine ON tasks(engine);"
    "CREATE INDEX tasks_submitted ON tasks(submitted);"
    "CREATE INDEX tasks_completed ON tasks(completed);"
    "CREATE TABLE task_tags ("
    "  tag TEXT NOT NULL,"
    "  task_id INTEGER NOT NULL,"
    "  PRIMARY KEY (tag, task_id)) WITHOUT ROWID;"
    "CREATE INDEX task_tags_task ON task_tags(task_id);"
    "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
    "INSERT INTO store_meta(key, value) VALUES ('max_task_id', 0);";

/* Version 1 -> 2: every task so far was a load-balanced one. */
static const char *const MIGRATE_V1_V2 =
    "ALTER TABLE tasks ADD COLUMN kind TEXT NOT NULL DEFAULT 'balanced';"
    "UPDATE tasks SET doc = json_set(doc, '$.kind', 'balanced') WHERE json_valid(doc);"
    "CREATE INDEX tasks_kind ON tasks(kind);"
    "CREATE INDEX tasks_request ON tasks(request_id);";

/* ----------------------------------------------------------------- times */

static void time_format(time_t secs, long usec, char out[TIME_LEN])
{
    struct tm tm;
    char base[32] = "";
    gmtime_r(&secs, &tm);
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, TIME_LEN, "%s.%06uZ", base, (unsigned)(usec % 1000000));
}

static void time_now(char out[TIME_LEN])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_format(ts.tv_sec, ts.tv_nsec / 1000, out);
}

/* Reads exactly n digits. */
static bool take_digits(const char **p, int n, int *value)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *value = v;
    return true;
}

static int days_in_month(int year, int month)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

/* ISO 8601 -> canonical UTC text.  Accepts YYYY-MM-DD, optionally followed by
 * [T or space]HH:MM[:SS[.fraction]] and a zone (Z, +HH[:MM], -HH[:MM]); no
 * zone means UTC.  Canonical text compares in time order, which the `since`
 * and `before` filters rely on.  0, or -1 if in is not such a time. */
static int time_canonical(const char *in, char out[TIME_LEN])
{
    const char *p = in;
    int year, month, day, hour = 0, minute = 0, second = 0, offset_min = 0;
    long usec = 0;
    if (!take_digits(&p, 4, &year) || *p++ != '-' || !take_digits(&p, 2, &month) || *p++ != '-' ||
        !take_digits(&p, 2, &day))
        return -1;
    if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month))
        return -1;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (!take_digits(&p, 2, &hour) || *p++ != ':' || !take_digits(&p, 2, &minute))
            return -1;
        if (*p == ':') {
            p++;
            if (!take_digits(&p, 2, &second))
                return -1;
            if (*p == '.' || *p == ',') {
                p++;
                int ndigits = 0;
                for (; *p >= '0' && *p <= '9'; p++, ndigits++)
                    if (ndigits < 6)
                        usec = usec * 10 + (*p - '0');
                if (ndigits == 0)
                    return -1;
                for (; ndigits < 6; ndigits++)
                    usec *= 10;
            }
        }
        if (hour > 23 || minute > 59 || second > 60)
            return -1;
        if (second == 60) /* a leap second sorts with the second before it */
            second = 59, usec = 999999;
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
            if (!take_digits(&p, 2, &oh))
                return -1;
            if (*p == ':')
                p++;
            if (*p && !take_digits(&p, 2, &om))
                return -1;
            if (oh > 23 || om > 59)
                return -1;
            offset_min = sign * (oh * 60 + om);
        }
    }
    if (*p != '\0')
        return -1;
    struct tm tm = {.tm_year = year - 1900,
                    .tm_mon = month - 1,
                    .tm_mday = day,
                    .tm_hour = hour,
                    .tm_min = minute,
                    .tm_sec = second};
    time_t secs = timegm(&tm) - (time_t)offset_min * 60;
    struct tm check;
    if (!gmtime_r(&secs, &check) || check.tm_year + 1900 < 0 || check.tm_year + 1900 > 9999)
        return -1;
    time_format(secs, usec, out);
    return 0;
}

/* A stored time column: canonical when it parses, else kept as given. */
static char *time_column(const char *value)
{
    char canonical[TIME_LEN];
    if (!value)
        return NULL;
    return strdup(time_canonical(value, canonical) == 0 ? canonical : value);
}

/* ----------------------------------------------------------------- blobs */

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Packs blobs into *buf (grown as needed, reused across rows).  Returns the
 * packed length, 0 for no blobs, or -1 when too large / out of memory. */
static long long blobs_pack(const ippc_blobs *blobs, unsigned char **buf, size_t *cap)
{
    if (blobs->count == 0)
        return 0;
    if (blobs->count > UINT32_MAX || blobs->count > (SIZE_MAX - 4) / 8)
        return -1;
    size_t total = 4 + 8 * blobs->count;
    if (total > (size_t)INT_MAX)
        return -1;
    for (size_t i = 0; i < blobs->count; i++) {
        if (blobs->items[i].len > (size_t)INT_MAX - total) /* SQLite's blob limit */
            return -1;
        total += blobs->items[i].len;
    }
    assert(total > 4); /* count >= 1 and the checks above: no wrap */
    if (total > *cap || !*buf) {
        unsigned char *grown = realloc(*buf, total);
        if (!grown)
            return -1;
        *buf = grown;
        *cap = total;
    }
    unsigned char *p = *buf;
    put_le(p, blobs->count, 4);
    p += 4;
    for (size_t i = 0; i < blobs->count; i++, p += 8)
        put_le(p, blobs->items[i].len, 8);
    for (size_t i = 0; i < blobs->count; i++) {
        if (blobs->items[i].len)
            memcpy(p, blobs->items[i].data, blobs->items[i].len);
        p += blobs->items[i].len;
    }
    return (long long)total;
}

/* Splits a packed blobs value into out (empty on entry).  0, or -1 if the
 * value is malformed or memory ran out (out left empty). */
static int blobs_unpack(const unsigned char *p, size_t len, ippc_blobs *out)
{
    if (len < 4)
        return -1;
    uint64_t count = get_le(p, 4);
    if (count > (len - 4) / 8)
        return -1;
    size_t offset = 4 + 8 * (size_t)count;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t blob_len = get_le(p + 4 + 8 * i, 8);
        if (blob_len > len - offset)
            goto fail;
        unsigned char *data = malloc(blob_len ? blob_len : 1);
        if (!data)
            goto fail;
        if (blob_len)
            memcpy(data, p + offset, blob_len);
        if (blobs_push(out, data, blob_len) < 0)
            goto fail;
        offset += blob_len;
    }
    if (offset != len)
        goto fail;
    return 0;
fail:
    blobs_free(out);
    return -1;
}

/* ---------------------------------------------------------------- errors */

/* Message for a failed SQLite call on s; what says what we were doing. */
static int sql_error(const store *s, sqlite3 *db, int rc, const char *what, ippc_error *err)
{
    const char *detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    switch (rc & 0xff) {
    case SQLITE_NOMEM: return ippc_error_set(err, ERR_INTERNAL, "task store: out of memory");
    case SQLITE_NOTADB:
        return ippc_error_set(err, ERR_INTERNAL, "%s is not an ippc task store (%s)", s->label,
                              detail);
    case SQLITE_CORRUPT:
        return ippc_error_set(err, ERR_INTERNAL, "%s is corrupt (%s)", s->label, detail);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return ippc_error_set(err, ERR_UNAVAILABLE, "%s is locked by another process (%s)",
                              s->label, detail);
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
        return ippc_error_set(err, ERR_INTERNAL, "cannot open %s for writing (%s)", s->label,
                              detail);
    case SQLITE_FULL:
        return ippc_error_set(err, ERR_UNAVAILABLE, "%s: disk full (%s)", s->label, detail);
    default:
        return ippc_error_set(err, ERR_INTERNAL, "task store %s: %s failed (%s)", s->label, what,
                              detail);
    }
}

static int oom(ippc_error *err)
{
    return ippc_error_set(err, ERR_INTERNAL, "task store: out of memory");
}

/* ------------------------------------------------------------ statements */

static int exec_sql(const store *s, store_conn *c, const char *sql, const char *what,
                    ippc_error *err)
{
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sql_error(s, c->db, rc, what, err);
}

/* Prepares *slot once; it stays prepared until the connection closes. */
static sqlite3_stmt *cached_stmt(const store *s, store_conn *c, sqlite3_stmt **slot,
                                 const char *sql, ippc_error *err)
{
    if (!*slot) {
        int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL);
        if (rc != SQLITE_OK) {
            sqlite3_finalize(*slot);
            *slot = NULL;
            sql_error(s, c->db, rc, "preparing a statement", err);
            return NULL;
        }
    }
    return *slot;
}

static void stmt_done(sqlite3_stmt *stmt)
{
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
}

/* One integer from a one-row statement (PRAGMA, SELECT max(...)). */
static int query_int(const store *s, store_conn *c, const char *sql, sqlite3_int64 *value,
                     ippc_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            *value = sqlite3_column_int64(stmt, 0);
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK) {
        sql_error(s, c->db, rc, sql, err);
        sqlite3_finalize(stmt);
        return -1;
    }
    sqlite3_finalize(stmt);
    return 0;
}

static void conn_close(store_conn *c)
{
    /* Every statement of the connection, cached or not. */
    sqlite3_stmt *stmt;
    while (c->db && (stmt = sqlite3_next_stmt(c->db, NULL)) != NULL)
        sqlite3_finalize(stmt);
    sqlite3_close_v2(c->db);
    if (c->lock_ready)
        pthread_mutex_destroy(&c->lock);
    memset(c, 0, sizeof *c);
}

/* The writer connection's WAL hook: remembers the WAL's size after each
 * commit so that wal_upkeep checkpoints when SQLite would have. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)db, (void)name;
    ((store_conn *)arg)->wal_pages = pages;
    return SQLITE_OK;
}

static int conn_open(const store *s, store_conn *c, const char *filename, bool writer,
                     ippc_error *err)
{
    memset(c, 0, sizeof *c);
    if (pthread_mutex_init(&c->lock, NULL) != 0)
        return oom(err);
    c->lock_ready = true;
    /* unix-excl: no -shm file and no other process (see the top of the file). */
    int rc = sqlite3_open_v2(filename, &c->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             s->memory ? NULL : "unix-excl");
    if (rc != SQLITE_OK)
        return sql_error(s, c->db, rc, "opening", err);
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    if (s->memory)
        return 0;
    /* Reads through a memory map would also turn a truncated or unreadable
     * file into SIGBUS; 0 is Debian's default, but not every build's. */
    if (exec_sql(s, c, "PRAGMA synchronous = NORMAL; PRAGMA mmap_size = 0", "setting synchronous",
                 err))
        return -1;
    if (writer) /* replaces the auto-checkpoint, whose failures are silent */
        sqlite3_wal_hook(c->db, on_wal_commit, c);
    return 0;
}

/* ------------------------------------------------------------ open/close */

/* mkdir -p of path's directory (0700: it is the controller's profile). */
static int make_parent_dirs(const store *s, const char *path, ippc_error *err)
{
    char *dir = strdup(path);
    if (!dir)
        return oom(err);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) {
        free(dir);
        return 0;
    }
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        bool end = *p == '\0';
        if (*p == '/' || end) {
            *p = '\0';
            if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
                int saved = errno;
                ippc_error_set(err, ERR_INTERNAL, "cannot create %s for %s: %s", dir, s->label,
                               strerror(saved));
                free(dir);
                return -1;
            }
            if (end)
                break;
            *p = '/';
        }
    }
    free(dir);
    return 0;
}

/* Holds <path>.lock with flock for the store's lifetime, so two controllers
 * never share one task store (the second would mark the first one's running
 * tasks lost).  A separate file because closing any other descriptor of the
 * database file would drop SQLite's own POSIX locks.  The lock dies with the
 * process, so a killed controller leaves nothing stale. */
static int take_lock_file(store *s, const char *path, ippc_error *err)
{
    size_t len = strlen(path);
    char *lock_path = malloc(len + sizeof ".lock");
    if (!lock_path)
        return oom(err);
    memcpy(lock_path, path, len);
    memcpy(lock_path + len, ".lock", sizeof ".lock");
    s->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        ippc_error_set(err, ERR_INTERNAL, "cannot open %s: %s", lock_path, strerror(errno));
        free(lock_path);
        return -1;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int saved = errno;
        char pid[32] = "";
        ssize_t n = pread(s->lock_fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        if (saved == EWOULDBLOCK)
            ippc_error_set(err, ERR_UNAVAILABLE,
                           "%s is locked by another process (pid %s holds %s)", s->label,
                           pid[0] ? pid : "unknown", lock_path);
        else
            ippc_error_set(err, ERR_INTERNAL, "cannot lock %s: %s", lock_path, strerror(saved));
        free(lock_path);
        return -1;
    }
    /* The pid only makes a later conflict's message clearer: failing to write
     * it is harmless. */
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    bool pid_written = ftruncate(s->lock_fd, 0) == 0 && pwrite(s->lock_fd, pid, (size_t)n, 0) == n;
    (void)pid_written;
    free(lock_path);
    return 0;
}

/* Switches a file store to WAL.  This is the first statement that reads the
 * file, so a file that is not a database fails here. */
static int set_wal(const store *s, store_conn *c, ippc_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW) {
        sql_error(s, c->db, rc, "switching to WAL", err);
        sqlite3_finalize(stmt);
        return -1;
    }
    const char *mode = (const char *)sqlite3_column_text(stmt, 0);
    if (!mode || strcmp(mode, "wal") != 0) /* e.g. a file system without shared memory */
        fprintf(stderr, "ippc-controller: %s: WAL unavailable, journal mode is %s\n", s->label,
                mode ? mode : "unknown");
    sqlite3_finalize(stmt);
    return 0;
}

/* Creates or checks the schema and marks unfinished tasks lost, in one
 * transaction taken with the write lock (so a locked file fails here). */
static int migrate(store *s, store_conn *c, size_t *lost, ippc_error *err)
{
    sqlite3_int64 app_id = 0, version = 0, tables = 0;
    sqlite3_stmt *mark = NULL;
    char now[TIME_LEN];
    int rc;
    if (exec_sql(s, c, "BEGIN IMMEDIATE", "starting the schema check", err) < 0)
        return -1;
    if (query_int(s, c, "PRAGMA application_id", &app_id, err) < 0 ||
        query_int(s, c, "PRAGMA user_version", &version, err) < 0 ||
        query_int(s, c, "SELECT count(*) FROM sqlite_master", &tables, err) < 0)
        goto fail;
    if (version == 0) {
        if ((app_id != 0 && app_id != APPLICATION_ID) || tables > 0) {
            ippc_error_set(err, ERR_INTERNAL,
                           "%s is not an ippc task store (an SQLite database with other content)",
                           s->label);
            goto fail;
        }
        /* Constants only: PRAGMA values cannot be bound. */
        char pragmas[96];
        snprintf(pragmas, sizeof pragmas, "PRAGMA application_id = %d; PRAGMA user_version = %d",
                 APPLICATION_ID, SCHEMA_VERSION);
        if (exec_sql(s, c, SCHEMA_V1, "creating the schema", err) < 0 ||
            exec_sql(s, c, MIGRATE_V1_V2, "creating the schema", err) < 0 ||
            exec_sql(s, c, pragmas, "recording the schema version", err) < 0)
            goto fail;
    } else if (app_id != APPLICATION_ID) {
        ippc_error_set(err, ERR_INTERNAL,
                       "%s is not an ippc task store (SQLite application id %" PRId64 ")", s->label,
                       (int64_t)app_id);
        goto fail;
    } else if (version > SCHEMA_VERSION) {
        ippc_error_set(err, ERR_INTERNAL,
                       "%s has task store schema version %" PRId64
                       "; this ippc understands up to %d",
                       s->label, (int64_t)version, SCHEMA_VERSION);
        goto fail;
    }
    /* Older versions migrate here, one step at a time. */
    if (version == 1 &&
        (exec_sql(s, c, MIGRATE_V1_V2, "migrating the schema to version 2", err) < 0 ||
         exec_sql(s, c, "PRAGMA user_version = 2", "recording the schema version", err) < 0))
        goto fail;

    time_now(now);
    rc = sqlite3_prepare_v2(
        c->db,
        "UPDATE tasks SET state = 'lost', completed = ?1,"
        "  doc = CASE WHEN json_valid(doc)"
        "        THEN json_set(doc, '$.state', 'lost', '$.completed', ?1) ELSE doc END"
        " WHERE state IN ('pending', 'running')",
        -1, &mark, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(mark, 1, now, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(mark);
    if (rc != SQLITE_DONE) {
        sql_error(s, c->db, rc, "marking unfinished tasks lost", err);
        sqlite3_finalize(mark);
        goto fail;
    }
    sqlite3_finalize(mark);
    *lost = (size_t)sqlite3_changes(c->db);
    if (exec_sql(s, c, "COMMIT", "committing the schema check", err) < 0)
        goto fail;
    return 0;
fail:
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static void *writer_main(void *arg);
static void items_free(save_item *item);

/* The inode path names now, or 0 if it names nothing. */
static ino_t file_inode(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 ? st.st_ino : 0;
}

/* work_cond times the writer's retries on CLOCK_MONOTONIC (a clock step must
 * not postpone them by hours). */
static int init_work_cond(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return -1;
    int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return rc == 0 ? 0 : -1;
}

store *store_open(const char *path, size_t *lost_on_open, ippc_error *err)
{
    size_t lost = 0;
    if (lost_on_open)
        *lost_on_open = 0;
    store *s = calloc(1, sizeof *s);
    if (!s) {
        oom(err);
        return NULL;
    }
    s->lock_fd = -1;
    s->pending_max = STORE_PENDING_MAX;
    idmap_init(&s->unsaved_ids);
    time_now(s->state_since);
    s->memory = !path || strcmp(path, "memory") == 0 || strcmp(path, ":memory:") == 0;
    s->label = strdup(s->memory ? "memory" : path);
    if (!s->label) {
        oom(err);
        goto fail;
    }
    if (!s->memory) {
        size_t len = strlen(path);
        s->wal_path = malloc(len + sizeof "-wal");
        if (!s->wal_path) {
            oom(err);
            goto fail;
        }
        memcpy(s->wal_path, path, len);
        memcpy(s->wal_path + len, "-wal", sizeof "-wal");
    }
    if (pthread_mutex_init(&s->queue_lock, NULL) != 0) {
        oom(err);
        goto fail;
    }
    if (init_work_cond(&s->work_cond) != 0) {
        pthread_mutex_destroy(&s->queue_lock);
        oom(err);
        goto fail;
    }
    if (pthread_cond_init(&s->flushed_cond, NULL) != 0) {
        pthread_cond_destroy(&s->work_cond);
        pthread_mutex_destroy(&s->queue_lock);
        oom(err);
        goto fail;
    }
    s->sync_ready = true;

    if (!s->memory) {
        if (!path || path[0] == '\0') {
            ippc_error_set(err, ERR_INVALID, "the task store path is empty");
            goto fail;
        }
        if (make_parent_dirs(s, path, err) < 0 || take_lock_file(s, path, err) < 0)
            goto fail;
    }
    if (conn_open(s, &s->writer_conn, s->memory ? ":memory:" : path, true, err) < 0)
        goto fail;
    if (!s->memory && set_wal(s, &s->writer_conn, err) < 0)
        goto fail;
    if (migrate(s, &s->writer_conn, &lost, err) < 0)
        goto fail;
    sqlite3_int64 max_id = 0;
    if (query_int(s, &s->writer_conn,
                  "SELECT max(coalesce((SELECT max(id) FROM tasks), 0),"
                  " coalesce((SELECT value FROM store_meta WHERE key = 'max_task_id'), 0))",
                  &max_id, err) < 0)
        goto fail;
    s->max_id = max_id > 0 ? (uint64_t)max_id : 0;

    if (s->memory) {
        s->reader = &s->writer_conn;
    } else {
        s->reader = &s->reader_storage; /* set first: store_close closes it */
        if (conn_open(s, &s->reader_storage, path, false, err) < 0)
            goto fail;
        /* The reader opens the WAL on its first read: do it now, while the
         * WAL still has its name, so both connections share one file. */
        sqlite3_int64 ignored;
        if (query_int(s, &s->reader_storage, "SELECT count(*) FROM store_meta", &ignored, err) < 0)
            goto fail;
        s->wal_ino = file_inode(s->wal_path);
    }
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        ippc_error_set(err, ERR_INTERNAL, "task store: cannot start the writer thread");
        goto fail;
    }
    s->writer_started = true;
    if (lost_on_open)
        *lost_on_open = lost;
    return s;
fail:
    store_close(s);
    return NULL;
}

void store_close(store *s)
{
    if (!s)
        return;
    if (s->writer_started) {
        pthread_mutex_lock(&s->queue_lock);
        s->closing = true;
        pthread_cond_signal(&s->work_cond);
        pthread_mutex_unlock(&s->queue_lock);
        pthread_join(s->writer, NULL); /* it drains the queue first */
    }
    items_free(s->head);
    items_free(s->unsaved_head);
    idmap_free(&s->unsaved_ids);
    if (s->reader == &s->reader_storage)
        conn_close(&s->reader_storage);
    conn_close(&s->writer_conn);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* after SQLite closed: releases the flock */
    if (s->sync_ready) {
        pthread_cond_destroy(&s->flushed_cond);
        pthread_cond_destroy(&s->work_cond);
        pthread_mutex_destroy(&s->queue_lock);
    }
    free(s->label);
    free(s->wal_path);
    free(s);
}

/* ----------------------------------------------------------------- saves */

static void item_free(save_item *item)
{
    free(item->state);
    for (int i = 0; i < 3; i++)
        free(item->times[i]);
    free(item->tags);
    free(item->doc);
    free(item->result);
    blobs_free(&item->blobs);
    free(item);
}

static void items_free(save_item *item)
{
    while (item) {
        save_item *next = item->next;
        item_free(item);
        item = next;
    }
}

/* Releases what store_save owns of rec and leaves rec empty. */
static void record_release(store_record *rec)
{
    json_decref(rec->tags);
    json_decref(rec->doc);
    json_decref(rec->result);
    rec->tags = rec->doc = rec->result = NULL;
    blobs_free(&rec->blobs);
}

/* Serialises rec now, on the caller's thread: the queue holds a snapshot, and
 * the caller may go on changing its own objects. */
static save_item *item_from_record(const store_record *rec)
{
    save_item *item = calloc(1, sizeof *item);
    if (!item)
        return NULL;
    blobs_init(&item->blobs);
    item->id = rec->id;
    item->request_id = rec->request_id;
    item->engine = rec->engine;
    item->kind = rec->kind && strcmp(rec->kind, "direct") == 0 ? "direct" : "balanced";
    item->state = strdup(rec->state);
    const char *times[3] = {rec->submitted, rec->started, rec->completed};
    bool ok = item->state != NULL;
    for (int i = 0; i < 3; i++) {
        item->times[i] = time_column(times[i]);
        ok = ok && (!times[i] || item->times[i]);
    }
    item->doc = jsonout_dumps(rec->doc, JSON_COMPACT);
    ok = ok && item->doc;
    if (rec->tags) {
        item->tags = jsonout_dumps(rec->tags, JSON_COMPACT);
        ok = ok && item->tags;
    }
    if (rec->result) {
        item->result = jsonout_dumps(rec->result, JSON_COMPACT | JSON_ENCODE_ANY);
        ok = ok && item->result;
    }
    if (!ok) {
        item_free(item);
        return NULL;
    }
    return item;
}

int store_save(store *s, store_record *rec)
{
    if (!rec)
        return -1;
    save_item *item = NULL;
    /* Invalid records are refused like a closed store: there is nobody to
     * report to on the writer thread later. */
    bool valid = s && rec->id > 0 && rec->id <= INT64_MAX && rec->request_id <= INT64_MAX &&
                 rec->state && json_is_object(rec->doc) && (!rec->tags || json_is_array(rec->tags));
    if (valid)
        item = item_from_record(rec);
    if (!item) {
        record_release(rec);
        return -1;
    }
    item->blobs = rec->blobs; /* moved */
    blobs_init(&rec->blobs);
    record_release(rec);

    pthread_mutex_lock(&s->queue_lock);
    if (s->closing) {
        pthread_mutex_unlock(&s->queue_lock);
        item_free(item);
        return -1;
    }
    if (s->tail)
        s->tail->next = item;
    else
        s->head = item;
    s->tail = item;
    s->queue_len++;
    s->queued_seq++;
    if (item->id > s->max_id)
        s->max_id = item->id;
    pthread_cond_signal(&s->work_cond);
    pthread_mutex_unlock(&s->queue_lock);
    return 0;
}

int store_flush(store *s)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&s->queue_lock);
    uint64_t target = s->queued_seq;
    while (s->done_seq < target && !s->writes_failing)
        pthread_cond_wait(&s->flushed_cond, &s->queue_lock);
    int rc = s->done_seq >= target ? 0 : -1;
    pthread_mutex_unlock(&s->queue_lock);
    return rc;
}

static int bind_text_or_null(sqlite3_stmt *stmt, int index, const char *text)
{
    return text ? sqlite3_bind_text(stmt, index, text, -1, SQLITE_STATIC)
                : sqlite3_bind_null(stmt, index);
}

/* Writes one row and its tags.  SQLite result code. */
static int write_item(store_conn *c, const save_item *item, unsigned char **pack, size_t *pack_cap)
{
    sqlite3_stmt *up = c->upsert;
    long long packed = blobs_pack(&item->blobs, pack, pack_cap);
    if (packed < 0)
        return SQLITE_TOOBIG;
    int rc = sqlite3_bind_int64(up, 1, (sqlite3_int64)item->id);
    if (rc == SQLITE_OK)
        rc = item->request_id ? sqlite3_bind_int64(up, 2, (sqlite3_int64)item->request_id)
                              : sqlite3_bind_null(up, 2);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(up, 3, item->state, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = item->engine >= 0 ? sqlite3_bind_int(up, 4, item->engine) : sqlite3_bind_null(up, 4);
    for (int i = 0; i < 3 && rc == SQLITE_OK; i++)
        rc = bind_text_or_null(up, 5 + i, item->times[i]);
    if (rc == SQLITE_OK)
        rc = bind_text_or_null(up, 8, item->tags);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(up, 9, item->doc, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = bind_text_or_null(up, 10, item->result);
    if (rc == SQLITE_OK)
        rc = packed ? sqlite3_bind_blob64(up, 11, *pack, (sqlite3_uint64)packed, SQLITE_STATIC)
                    : sqlite3_bind_null(up, 11);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(up, 12, item->kind, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(up) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(c->db);
    stmt_done(up);
    if (rc != SQLITE_OK)
        return rc;

    rc = sqlite3_bind_int64(c->delete_tags, 1, (sqlite3_int64)item->id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(c->delete_tags) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(c->db);
    stmt_done(c->delete_tags);
    if (rc != SQLITE_OK || !item->tags)
        return rc;
    rc = sqlite3_bind_int64(c->insert_tags, 1, (sqlite3_int64)item->id);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(c->insert_tags, 2, item->tags, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(c->insert_tags) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(c->db);
    stmt_done(c->insert_tags);
    return rc;
}

/* One transaction for the whole batch.  0, or -1 with err set (rolled back).
 * Records SQLite refuses as too big are skipped, marked and counted in
 * *unstorable: retrying cannot help them. */
static int write_batch_once(store *s, store_conn *c, save_item *batch, uint64_t *unstorable,
                            ippc_error *err)
{
    unsigned char *pack = NULL;
    size_t pack_cap = 0;
    uint64_t max_id = 0;
    if (!cached_stmt(s, c, &c->upsert,
                     "INSERT INTO tasks(id, request_id, state, engine, submitted, started,"
                     " completed, tags, doc, result, blobs, kind)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                     " ON CONFLICT(id) DO UPDATE SET request_id = excluded.request_id,"
                     " state = excluded.state, engine = excluded.engine,"
                     " submitted = excluded.submitted, started = excluded.started,"
                     " completed = excluded.completed, tags = excluded.tags, doc = excluded.doc,"
                     " result = excluded.result, blobs = excluded.blobs, kind = excluded.kind",
                     err) ||
        !cached_stmt(s, c, &c->delete_tags, "DELETE FROM task_tags WHERE task_id = ?1", err) ||
        !cached_stmt(s, c, &c->insert_tags,
                     "INSERT OR IGNORE INTO task_tags(tag, task_id)"
                     " SELECT value, ?1 FROM json_each(?2) WHERE type = 'text'",
                     err) ||
        !cached_stmt(s, c, &c->update_max,
                     "UPDATE store_meta SET value = max(value, ?1) WHERE key = 'max_task_id'", err))
        return -1;
    /* SQLite would go on writing to a file that no longer has a name. */
    int moved = 0;
    if (!s->memory &&
        sqlite3_file_control(c->db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK && moved)
        return ippc_error_set(err, ERR_UNAVAILABLE,
                              "%s was removed or replaced while open; writes resume when it "
                              "is back under that name",
                              s->label);
    if (exec_sql(s, c, "BEGIN IMMEDIATE", "starting a write", err) < 0)
        return -1;
    save_item *item = batch;
    int rc = SQLITE_OK;
    for (; item && rc == SQLITE_OK; item = item->next) {
        if (item->id > max_id)
            max_id = item->id;
        if (item->unstorable)
            continue;
        rc = write_item(c, item, &pack, &pack_cap);
        if (rc == SQLITE_TOOBIG) { /* nothing of it was written */
            fprintf(stderr,
                    "ippc-controller: task store %s: task %" PRIu64
                    " is too large to store; its record is dropped\n",
                    s->label, item->id);
            item->unstorable = true;
            (*unstorable)++;
            rc = SQLITE_OK;
        }
    }
    free(pack);
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_int64(c->update_max, 1, (sqlite3_int64)max_id);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(c->update_max) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(c->db);
        stmt_done(c->update_max);
    }
    if (rc != SQLITE_OK) {
        sql_error(s, c->db, rc, "writing tasks", err);
        goto fail;
    }
    if (exec_sql(s, c, "COMMIT", "committing tasks", err) < 0)
        goto fail;
    return 0;
fail:
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* ------------------------------------------------------------ the writer */

static void timespec_after_ms(struct timespec *t, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, t);
    t->tv_sec += ms / 1000;
    t->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

static bool timespec_reached(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

static void pause_ms(int ms)
{
    struct timespec pause = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR)
        ;
}

/* Appends item to the unsaved list; while writes fail, a later snapshot of a
 * task already in the list replaces it in place instead (the list then holds
 * one entry per task).  Writer thread, queue_lock held. */
static void unsaved_add(store *s, save_item *item)
{
    item->next = NULL;
    save_item *older = s->writes_failing ? idmap_get(&s->unsaved_ids, item->id) : NULL;
    if (older) {
        save_item *next = older->next;
        save_item swap = *older;
        *older = *item;
        older->next = next;
        *item = swap;
        item->next = NULL;
        item_free(item);
        return;
    }
    if (s->unsaved_tail)
        s->unsaved_tail->next = item;
    else
        s->unsaved_head = item;
    s->unsaved_tail = item;
    s->unsaved_count++;
    /* Without an index entry (out of memory) a later snapshot is appended
     * after this one instead, and the newest still wins. */
    if (s->writes_failing)
        idmap_put(&s->unsaved_ids, item->id, item);
}

static void unsaved_clear(store *s)
{
    items_free(s->unsaved_head);
    s->unsaved_head = s->unsaved_tail = NULL;
    s->unsaved_count = 0;
    idmap_free(&s->unsaved_ids);
    idmap_init(&s->unsaved_ids);
}

/* Re-adds every unsaved item (writes just started failing): duplicates of a
 * task collapse and the index covers the list.  queue_lock held. */
static void unsaved_reindex(store *s)
{
    save_item *item = s->unsaved_head;
    s->unsaved_head = s->unsaved_tail = NULL;
    s->unsaved_count = 0;
    idmap_free(&s->unsaved_ids);
    idmap_init(&s->unsaved_ids);
    while (item) {
        save_item *next = item->next;
        unsaved_add(s, item);
        item = next;
    }
}

/* Moves everything queued into the unsaved list.  queue_lock held. */
static void unsaved_take_queue(store *s)
{
    save_item *item = s->head;
    if (item && !s->writes_failing && !s->unsaved_head) { /* the usual case: one move */
        s->unsaved_head = s->head;
        s->unsaved_tail = s->tail;
        s->unsaved_count = s->queue_len;
        item = NULL;
    }
    s->head = s->tail = NULL;
    s->queue_len = 0;
    while (item) {
        save_item *next = item->next;
        unsaved_add(s, item);
        item = next;
    }
}

/* Drops the oldest unsaved records beyond keep: pending_max while writes
 * fail (reported once per fault), or 0 at close (always reported).
 * queue_lock held. */
static void unsaved_drop(store *s, size_t keep, bool at_close)
{
    size_t dropped = 0;
    while (s->unsaved_count > keep && s->unsaved_head) {
        save_item *oldest = s->unsaved_head;
        s->unsaved_head = oldest->next;
        if (!s->unsaved_head)
            s->unsaved_tail = NULL;
        if (idmap_get(&s->unsaved_ids, oldest->id) == oldest)
            idmap_remove(&s->unsaved_ids, oldest->id);
        item_free(oldest);
        s->unsaved_count--;
        dropped++;
    }
    if (dropped == 0)
        return;
    s->dropped += dropped;
    if (at_close)
        fprintf(stderr,
                "ippc-controller: task store %s: %zu task records could not be saved "
                "before closing and are lost (%s)\n",
                s->label, dropped, s->fault);
    else if (!s->drop_reported)
        fprintf(stderr,
                "ippc-controller: task store %s: more than %zu records wait; dropping "
                "the oldest (GET /api/v1/info store.dropped counts them)\n",
                s->label, keep);
    s->drop_reported = true;
}

/* State changes: one line on stderr each.  queue_lock held. */
static void set_degraded(store *s, const char *why, bool writes_failing)
{
    /* why names the file already. */
    if (writes_failing && !s->writes_failing)
        fprintf(stderr,
                "ippc-controller: task store degraded: %s; tasks go on, their records "
                "wait in memory (at most %zu) and writes are retried\n",
                why, s->pending_max);
    else if (!s->degraded)
        fprintf(stderr, "ippc-controller: task store degraded: %s\n", why);
    if (!s->degraded) {
        s->degraded = true;
        s->drop_reported = false;
        time_now(s->state_since);
    }
    snprintf(s->fault, sizeof s->fault, "%s", why);
    if (writes_failing && !s->writes_failing) {
        s->writes_failing = true;
        unsaved_reindex(s);
    }
    s->writes_failing = writes_failing;
}

static void set_ok(store *s)
{
    if (!s->degraded)
        return;
    fprintf(stderr,
            "ippc-controller: task store %s: ok again (degraded since %s); every "
            "waiting record is stored (%" PRIu64 " dropped since start)\n",
            s->label, s->state_since, s->dropped);
    time_now(s->state_since);
    s->degraded = s->writes_failing = false;
    s->fault[0] = '\0';
}

/* After a commit (or a retry): notices a WAL that lost its name, and
 * checkpoints when the WAL is as large as SQLite's auto-checkpoint allows, or
 * after every commit once the WAL has no name (a crash would lose it: its
 * commits must reach the database file).  0, or -1 with err set.  Writer
 * thread, writer connection lock held. */
static int wal_upkeep(store *s, store_conn *c, ippc_error *err)
{
    if (s->memory)
        return 0;
    if (!s->wal_gone && s->wal_ino && file_inode(s->wal_path) != s->wal_ino)
        s->wal_gone = true;
    if (!s->wal_gone && c->wal_pages < CHECKPOINT_PAGES)
        return 0;
    int mode = s->wal_gone ? SQLITE_CHECKPOINT_FULL : SQLITE_CHECKPOINT_PASSIVE;
    int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, mode, NULL, NULL);
    if (rc != SQLITE_OK)
        return ippc_error_set(err, ERR_UNAVAILABLE, "cannot copy the WAL into %s (%s)", s->label,
                              sqlite3_errmsg(c->db));
    c->wal_pages = 0;
    if (s->wal_gone)
        return ippc_error_set(err, ERR_UNAVAILABLE,
                              "%s-wal was removed while open: every commit is copied into the "
                              "database at once until the controller restarts",
                              s->label);
    return 0;
}

/* Waits for saves (or the retry time while degraded), commits everything
 * unsaved in one transaction, and keeps the health fields up to date. */
static void *writer_main(void *arg)
{
    store *s = arg;
    int backoff_ms = 0; /* 0 while writes succeed */
    struct timespec retry_at = {0, 0};
    int close_failures = 0;
    pthread_mutex_lock(&s->queue_lock);
    for (;;) {
        bool timed_out = false;
        while (!s->head && !s->closing && !timed_out) {
            if (s->degraded)
                timed_out =
                    pthread_cond_timedwait(&s->work_cond, &s->queue_lock, &retry_at) == ETIMEDOUT;
            else
                pthread_cond_wait(&s->work_cond, &s->queue_lock);
        }
        uint64_t upto = s->queued_seq;
        unsaved_take_queue(s);
        if (s->writes_failing)
            unsaved_drop(s, s->pending_max, false);
        bool closing = s->closing;
        if (closing && !s->unsaved_head)
            break; /* everything is written (or was dropped) */
        /* While writes fail, new saves only join the list until the retry. */
        if (s->writes_failing && !closing && !timed_out && !timespec_reached(&retry_at))
            continue;
        if (!s->unsaved_head && !timed_out)
            continue; /* woken for nothing new */
        pthread_mutex_unlock(&s->queue_lock);

        ippc_error err = {{0}, {0}};
        uint64_t unstorable = 0;
        store_conn *c = &s->writer_conn;
        pthread_mutex_lock(&c->lock);
        int wrote =
            s->unsaved_head ? write_batch_once(s, c, s->unsaved_head, &unstorable, &err) : 0;
        int upkept = wrote == 0 ? wal_upkeep(s, c, &err) : -1;
        pthread_mutex_unlock(&c->lock);

        pthread_mutex_lock(&s->queue_lock);
        s->dropped += unstorable;
        if (wrote == 0) {
            unsaved_clear(s);
            s->done_seq = upto;
        }
        if (wrote == 0 && upkept == 0) {
            set_ok(s);
            backoff_ms = 0;
        } else {
            set_degraded(s, err.message, wrote != 0);
            backoff_ms = backoff_ms == 0                        ? STORE_RETRY_FIRST_MS
                         : backoff_ms >= STORE_RETRY_MAX_MS / 2 ? STORE_RETRY_MAX_MS
                                                                : 2 * backoff_ms;
            timespec_after_ms(&retry_at, backoff_ms);
            if (wrote != 0)
                unsaved_drop(s, s->pending_max, false);
            if (closing && wrote != 0 && ++close_failures >= CLOSE_ATTEMPTS) {
                unsaved_drop(s, 0, true);
                s->done_seq = upto;
            } else if (closing && wrote != 0) {
                pthread_mutex_unlock(&s->queue_lock);
                pause_ms(CLOSE_PAUSE_MS);
                pthread_mutex_lock(&s->queue_lock);
            }
        }
        pthread_cond_broadcast(&s->flushed_cond);
    }
    pthread_mutex_unlock(&s->queue_lock);
    return NULL;
}

/* ---------------------------------------------------------------- health */

void store_get_status(store *s, store_status *out)
{
    memset(out, 0, sizeof *out);
    if (!s)
        return;
    pthread_mutex_lock(&s->queue_lock);
    out->degraded = s->degraded;
    snprintf(out->error, sizeof out->error, "%s", s->fault);
    snprintf(out->since, sizeof out->since, "%s", s->state_since);
    out->pending = s->queue_len + s->unsaved_count;
    out->dropped = s->dropped;
    pthread_mutex_unlock(&s->queue_lock);
}

json_t *store_status_json(store *s)
{
    store_status st;
    store_get_status(s, &st);
    return json_pack("{s:s, s:s?, s:s, s:I, s:I}", "state", st.degraded ? "degraded" : "ok",
                     "error", st.degraded ? st.error : NULL, "since", st.since, "pending",
                     (json_int_t)st.pending, "dropped", (json_int_t)st.dropped);
}

void store_set_pending_max(store *s, size_t max)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->queue_lock);
    s->pending_max = max < 1 ? 1 : max;
    pthread_mutex_unlock(&s->queue_lock);
}

/* ----------------------------------------------------------------- reads */

static char *column_strdup(sqlite3_stmt *stmt, int col)
{
    const unsigned char *text = sqlite3_column_text(stmt, col);
    return text ? strdup((const char *)text) : NULL;
}

static json_t *column_json(sqlite3_stmt *stmt, int col)
{
    const char *text = (const char *)sqlite3_column_text(stmt, col);
    if (!text)
        return NULL;
    size_t len = (size_t)sqlite3_column_bytes(stmt, col);
    return json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
}

/* Fills rec from the current row of a TASK_COLUMNS statement.  0, or -1 with
 * err set (rec freed). */
static int record_from_row(const store *s, sqlite3_stmt *stmt, store_record *rec, ippc_error *err)
{
    memset(rec, 0, sizeof *rec);
    blobs_init(&rec->blobs);
    rec->id = (uint64_t)sqlite3_column_int64(stmt, 0);
    rec->request_id =
        sqlite3_column_type(stmt, 1) == SQLITE_NULL ? 0 : (uint64_t)sqlite3_column_int64(stmt, 1);
    rec->engine = sqlite3_column_type(stmt, 3) == SQLITE_NULL ? -1 : sqlite3_column_int(stmt, 3);
    const unsigned char *kind = sqlite3_column_text(stmt, 11);
    rec->kind = kind && strcmp((const char *)kind, "direct") == 0 ? "direct" : "balanced";
    char *state = column_strdup(stmt, 2);
    rec->state = state;
    char *times[3];
    for (int i = 0; i < 3; i++)
        times[i] = column_strdup(stmt, 4 + i);
    rec->submitted = times[0];
    rec->started = times[1];
    rec->completed = times[2];
    if (!state || (sqlite3_column_type(stmt, 4) != SQLITE_NULL && !times[0]) ||
        (sqlite3_column_type(stmt, 5) != SQLITE_NULL && !times[1]) ||
        (sqlite3_column_type(stmt, 6) != SQLITE_NULL && !times[2])) {
        oom(err);
        goto fail;
    }
    /* (json_is_object evaluates its argument twice: parse first.) */
    const char *broken = NULL;
    rec->doc = column_json(stmt, 8);
    if (sqlite3_column_type(stmt, 7) != SQLITE_NULL && !(rec->tags = column_json(stmt, 7)))
        broken = "tags";
    else if (!json_is_object(rec->doc))
        broken = "doc";
    else if (sqlite3_column_type(stmt, 9) != SQLITE_NULL && !(rec->result = column_json(stmt, 9)))
        broken = "result";
    else if (sqlite3_column_type(stmt, 10) != SQLITE_NULL &&
             blobs_unpack(sqlite3_column_blob(stmt, 10), (size_t)sqlite3_column_bytes(stmt, 10),
                          &rec->blobs) < 0)
        broken = "blobs";
    if (broken) {
        ippc_error_set(err, ERR_INTERNAL, "task store %s: task %" PRIu64 " has an unreadable %s",
                       s->label, rec->id, broken);
        goto fail;
    }
    return 0;
fail:
    store_record_free(rec);
    return -1;
}

/* Reads the row a lookup by id found: 0, or -1 + err. */
typedef int (*row_reader)(store *s, sqlite3_stmt *stmt, void *arg, ippc_error *err);

/* Runs the one-row lookup sql (its ?1 is id) on the reader connection with
 * the statement cached in *slot: 1 and read() called on the row, 0 when
 * there is none, -1 + err.  `what` names the read in an SQL error. */
static int get_by_id(store *s, sqlite3_stmt **slot, const char *sql, uint64_t id, const char *what,
                     row_reader read, void *arg, ippc_error *err)
{
    if (!s)
        return ippc_error_set(err, ERR_INTERNAL, "task store: not open");
    if (id == 0 || id > INT64_MAX)
        return 0;
    store_conn *c = s->reader;
    int found = -1;
    pthread_mutex_lock(&c->lock);
    sqlite3_stmt *stmt = cached_stmt(s, c, slot, sql, err);
    if (stmt) {
        int rc = sqlite3_bind_int64(stmt, 1, (sqlite3_int64)id);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW)
            found = read(s, stmt, arg, err) == 0 ? 1 : -1;
        else if (rc == SQLITE_DONE)
            found = 0;
        else
            sql_error(s, c->db, rc, what, err);
        stmt_done(stmt);
    }
    pthread_mutex_unlock(&c->lock);
    return found;
}

static int read_record(store *s, sqlite3_stmt *stmt, void *arg, ippc_error *err)
{
    return record_from_row(s, stmt, arg, err);
}

int store_get(store *s, uint64_t id, store_record *rec, ippc_error *err)
{
    memset(rec, 0, sizeof *rec);
    blobs_init(&rec->blobs);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT %s FROM tasks AS t WHERE t.id = ?1", TASK_COLUMNS);
    return get_by_id(s, s ? &s->reader->get : NULL, sql, id, "reading a task", read_record, rec,
                     err);
}

typedef struct state_out {
    char *state;
    size_t size;
    int *engine;
} state_out;

static int read_state(store *s, sqlite3_stmt *stmt, void *arg, ippc_error *err)
{
    (void)s;
    (void)err;
    state_out *o = arg;
    const unsigned char *text = sqlite3_column_text(stmt, 0);
    snprintf(o->state, o->size, "%s", text ? (const char *)text : "");
    *o->engine = sqlite3_column_type(stmt, 1) == SQLITE_NULL ? -1 : sqlite3_column_int(stmt, 1);
    return 0;
}

int store_get_state(store *s, uint64_t id, char *state, size_t size, int *engine, ippc_error *err)
{
    state_out o = {state, size, engine};
    return get_by_id(s, s ? &s->reader->get_state : NULL,
                     "SELECT state, engine FROM tasks WHERE id = ?1", id, "reading a task's state",
                     read_state, &o, err);
}

void store_record_free(store_record *rec)
{
    if (!rec)
        return;
    /* Records from store_get own their strings. */
    free((char *)rec->state);
    free((char *)rec->submitted);
    free((char *)rec->started);
    free((char *)rec->completed);
    json_decref(rec->tags);
    json_decref(rec->doc);
    json_decref(rec->result);
    blobs_free(&rec->blobs);
    memset(rec, 0, sizeof *rec);
    rec->engine = -1;
}

/* The SQL of one query variant.  Built from constant fragments only; every
 * value from the query is a bound parameter: ?1 cursor, ?2 state, ?3 engine,
 * ?4 tag, ?5 since, ?6 limit, ?7 kind, ?8 request.  A tag query walks task_tags' (tag, task_id)
 * key and orders by g.task_id (the same as t.id), so SQLite reads the pages in
 * order and stops after `limit` instead of sorting every task with the tag. */
static void query_sql(int variant, char *sql, size_t size)
{
    bool tag = variant & Q_TAG;
    snprintf(sql, size, "SELECT %s FROM %s WHERE t.id > ?1%s%s%s%s%s%s ORDER BY %s LIMIT ?6",
             TASK_COLUMNS,
             tag ? "task_tags AS g JOIN tasks AS t ON t.id = g.task_id" : "tasks AS t",
             tag ? " AND g.tag = ?4 AND g.task_id > ?1" : "",
             variant & Q_STATE ? " AND t.state = ?2" : "",
             variant & Q_ENGINE ? " AND t.engine = ?3" : "",
             variant & Q_SINCE ? " AND t.submitted >= ?5" : "",
             variant & Q_KIND ? " AND t.kind = ?7" : "",
             variant & Q_REQUEST ? " AND t.request_id = ?8" : "", tag ? "g.task_id" : "t.id");
}

/* Doc of a record with "result" in client form (consumes nothing). */
static json_t *client_doc(const store *s, const store_record *rec, ippc_error *err)
{
    json_t *doc = json_deep_copy(rec->doc);
    if (!doc) {
        oom(err);
        return NULL;
    }
    if (rec->result) {
        ippc_error value_err;
        json_t *result = value_to_client(rec->result, &rec->blobs, VALUE_FORMAT_LIST, &value_err);
        if (!result) {
            ippc_error_set(err, ERR_INTERNAL, "task store %s: task %" PRIu64 ": %s", s->label,
                           rec->id, value_err.message);
            json_decref(doc);
            return NULL;
        }
        if (json_object_set_new(doc, "result", result) < 0) {
            json_decref(doc);
            oom(err);
            return NULL;
        }
    }
    return doc;
}

json_t *store_query_tasks(store *s, const store_query *q, uint64_t *next_cursor, ippc_error *err)
{
    if (next_cursor)
        *next_cursor = 0;
    if (!s || !q) {
        ippc_error_set(err, ERR_INTERNAL, "task store: no store or query");
        return NULL;
    }
    char since[TIME_LEN];
    if (q->since && time_canonical(q->since, since) < 0) {
        ippc_error_set(err, ERR_INVALID,
                       "since: '%.64s' is not an ISO 8601 time (like 2024-05-01T12:00:00Z)",
                       q->since);
        return NULL;
    }
    size_t limit = q->limit < 1 ? 1 : q->limit > QUERY_LIMIT_MAX ? QUERY_LIMIT_MAX : q->limit;
    if (q->cursor > INT64_MAX) /* no id is that large */
        return json_array();
    if (q->request_id > INT64_MAX) /* no request id is that large */
        return json_array();
    int variant = (q->state ? Q_STATE : 0) | (q->engine >= 0 ? Q_ENGINE : 0) |
                  (q->tag ? Q_TAG : 0) | (q->since ? Q_SINCE : 0) | (q->kind ? Q_KIND : 0) |
                  (q->request_id ? Q_REQUEST : 0);

    json_t *list = json_array();
    if (!list) {
        oom(err);
        return NULL;
    }
    store_conn *c = s->reader;
    pthread_mutex_lock(&c->lock);
    char sql[768];
    query_sql(variant, sql, sizeof sql);
    sqlite3_stmt *stmt = cached_stmt(s, c, &c->query[variant], sql, err);
    int rc = stmt ? SQLITE_OK : SQLITE_ERROR;
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 1, (sqlite3_int64)q->cursor);
    if (rc == SQLITE_OK && q->state)
        rc = sqlite3_bind_text(stmt, 2, q->state, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && q->engine >= 0)
        rc = sqlite3_bind_int(stmt, 3, q->engine);
    if (rc == SQLITE_OK && q->tag)
        rc = sqlite3_bind_text(stmt, 4, q->tag, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && q->since)
        rc = sqlite3_bind_text(stmt, 5, since, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && q->kind)
        rc = sqlite3_bind_text(stmt, 7, q->kind, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && q->request_id)
        rc = sqlite3_bind_int64(stmt, 8, (sqlite3_int64)q->request_id);
    /* One row more than asked tells whether there is a next page. */
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 6, (sqlite3_int64)limit + 1);
    uint64_t last_id = 0;
    bool more = false, failed = stmt == NULL;
    while (rc == SQLITE_OK && !failed) {
        int step = sqlite3_step(stmt);
        if (step == SQLITE_DONE)
            break;
        if (step != SQLITE_ROW) {
            rc = step;
            break;
        }
        if (json_array_size(list) == limit) {
            more = true;
            break;
        }
        store_record rec;
        json_t *doc = NULL;
        if (record_from_row(s, stmt, &rec, err) < 0) {
            failed = true;
            break;
        }
        doc = client_doc(s, &rec, err);
        last_id = rec.id;
        store_record_free(&rec);
        if (!doc || json_array_append_new(list, doc) < 0) {
            if (doc)
                oom(err);
            failed = true;
        }
    }
    if (rc != SQLITE_OK && !failed) {
        sql_error(s, c->db, rc, "querying tasks", err);
        failed = true;
    }
    if (stmt)
        stmt_done(stmt);
    pthread_mutex_unlock(&c->lock);
    if (failed) {
        json_decref(list);
        return NULL;
    }
    if (more && next_cursor)
        *next_cursor = last_id;
    return list;
}

long store_purge(store *s, const char *before, ippc_error *err)
{
    if (!s)
        return ippc_error_set(err, ERR_INTERNAL, "task store: not open");
    char cutoff[TIME_LEN];
    if (before && time_canonical(before, cutoff) < 0)
        return ippc_error_set(err, ERR_INVALID,
                              "before: '%.64s' is not an ISO 8601 time (like 2024-05-01T12:00:00Z)",
                              before);
    /* "Finished before the call" includes records still in the queue: while
     * some cannot be written, the purge would miss them. */
    if (store_flush(s) < 0) {
        store_status st;
        store_get_status(s, &st);
        return ippc_error_set(err, ERR_UNAVAILABLE,
                              "the task store is degraded (%s; %zu records not saved yet): "
                              "purge again once it is ok",
                              st.error, st.pending);
    }
    static const char *const finished =
        "state IN ('completed', 'failed', 'aborted', 'lost') AND (?1 IS NULL OR completed < ?1)";
    char delete_tags[256], delete_tasks[192];
    snprintf(delete_tags, sizeof delete_tags,
             "DELETE FROM task_tags WHERE task_id IN (SELECT id FROM tasks WHERE %s)", finished);
    snprintf(delete_tasks, sizeof delete_tasks, "DELETE FROM tasks WHERE %s", finished);

    store_conn *c = s->reader;
    long purged = -1;
    pthread_mutex_lock(&c->lock);
    if (exec_sql(s, c, "BEGIN IMMEDIATE", "starting a purge", err) == 0) {
        const char *steps[2] = {delete_tags, delete_tasks};
        int rc = SQLITE_OK;
        for (int i = 0; i < 2 && rc == SQLITE_OK; i++) {
            sqlite3_stmt *stmt = NULL;
            rc = sqlite3_prepare_v2(c->db, steps[i], -1, &stmt, NULL);
            if (rc == SQLITE_OK)
                rc = before ? sqlite3_bind_text(stmt, 1, cutoff, -1, SQLITE_STATIC)
                            : sqlite3_bind_null(stmt, 1);
            if (rc == SQLITE_OK)
                rc = sqlite3_step(stmt) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(c->db);
            if (rc == SQLITE_OK && i == 1)
                purged = (long)sqlite3_changes(c->db);
            sqlite3_finalize(stmt);
        }
        if (rc != SQLITE_OK)
            sql_error(s, c->db, rc, "purging tasks", err);
        else if (exec_sql(s, c, "COMMIT", "committing a purge", err) < 0)
            rc = SQLITE_ERROR;
        if (rc != SQLITE_OK) {
            purged = -1;
            if (!sqlite3_get_autocommit(c->db))
                sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return purged;
}

uint64_t store_max_id(store *s)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&s->queue_lock);
    uint64_t max_id = s->max_id;
    pthread_mutex_unlock(&s->queue_lock);
    return max_id;
}
