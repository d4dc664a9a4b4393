/* test_server_store.c — server/store.c: save/get round trips with array blobs,
 * replace on re-save, flush from many threads, query filters and cursor
 * pages, purge, reopening a file store (lost tasks, max id), files that are
 * not task stores, locks held by another store or process, the recorded
 * schema, 10,000 saves (timed, printed, not asserted), and storage faults:
 * no -shm file to fault on, a full disk (a small tmpfs this test mounts: it
 * must run as root, and fails, never skips, when it cannot), the bound on
 * unsaved records, WAL and database files made immutable (chattr +i through
 * ioctl) or removed, and closing while writes fail. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#define _XOPEN_SOURCE_EXTENDED 1
#include <ftw.h>
#include <pthread.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store.h"

/* ------------------------------------------------------------- helpers */

typedef struct fixture {
    char dir[64];
    char path[128]; /* dir/profile_test/tasks.db: the parent does not exist yet */
} fixture;

static int setup_dir(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    strcpy(f->dir, "/tmp/ippc-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/profile_test/tasks.db", f->dir);
    *state = f;
    return 0;
}

/* chattr +i / -i.  0, or -1 with errno (a file system without the flag). */
static int set_immutable(const char *path, bool on)
{
    /* path is a fixture's array, never NULL; clang's analyzer reads open_ok's
     * `path ? path : "NULL"` (an in-memory store) as a sign that it might be. */
    /* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int flags = 0;
    int rc = ioctl(fd, FS_IOC_GETFLAGS, &flags);
    if (rc == 0) {
        flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
        rc = ioctl(fd, FS_IOC_SETFLAGS, &flags);
    }
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)ftw;
    if (flag == FTW_F)
        set_immutable(path, false); /* a failed test may leave one behind */
    return remove(path);
}

static int teardown_dir(void **state)
{
    fixture *f = *state;
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* A record as the hub would save it: doc mirrors the columns. */
static store_record make_record(uint64_t id, const char *state, int engine, const char *submitted,
                                const char *completed, const char *tags_json)
{
    store_record rec;
    memset(&rec, 0, sizeof rec);
    blobs_init(&rec.blobs);
    rec.id = id;
    rec.request_id = id % 3 ? id * 10 : 0;
    rec.state = state;
    rec.engine = engine;
    rec.submitted = submitted;
    rec.completed = completed;
    rec.tags = tags_json ? json_loads(tags_json, 0, NULL) : NULL;
    rec.doc = json_pack("{sI ss si ss* ss*}", "id", (json_int_t)id, "state", state, "engine",
                        engine, "submitted", submitted, "completed", completed);
    assert_non_null(rec.doc);
    if (rec.tags)
        json_object_set(rec.doc, "tags", rec.tags);
    return rec;
}

static void save(store *s, uint64_t id, const char *state, int engine, const char *submitted,
                 const char *completed, const char *tags_json)
{
    store_record rec = make_record(id, state, engine, submitted, completed, tags_json);
    assert_int_equal(store_save(s, &rec), 0);
    assert_null(rec.doc); /* ownership moved */
}

/* The int64 array [1, 2, 3] as a skeleton and its 24-byte blob. */
static void attach_int64_result(store_record *rec)
{
    rec->result = json_pack("{si ss s[i]}", "$nd", 0, "dtype", "int64", "shape", 3);
    int64_t values[3] = {1, 2, 3};
    void *data = malloc(sizeof values); /* the blob's bytes */
    assert_non_null(data);
    memcpy(data, values, sizeof values);
    assert_int_equal(blobs_push(&rec->blobs, data, sizeof values), 0);
}

/* Ids of a query's docs, as a JSON list, for one-line comparisons. */
static char *query_ids(store *s, const store_query *q, uint64_t *next)
{
    ippc_error err = {{0}, {0}};
    uint64_t ignored;
    json_t *list = store_query_tasks(s, q, next ? next : &ignored, &err);
    if (!list)
        fail_msg("query failed: %s", err.message);
    json_t *ids = json_array();
    for (size_t i = 0; i < json_array_size(list); i++)
        json_array_append(ids, json_object_get(json_array_get(list, i), "id"));
    char *text = json_dumps(ids, JSON_COMPACT);
    json_decref(ids);
    json_decref(list);
    return text;
}

static void assert_query(store *s, store_query q, const char *expected_ids)
{
    char *ids = query_ids(s, &q, NULL);
    assert_string_equal(ids, expected_ids);
    free(ids);
}

static store_query any_query(void)
{
    return (store_query){.state = NULL, .engine = -1, .tag = NULL, .since = NULL, .limit = 1000};
}

/* cp from to, without a shell. */
static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    assert_false(ferror(in));
    assert_int_equal(fclose(in), 0);
    assert_int_equal(fclose(out), 0);
}

static store *open_ok(const char *path, size_t *lost)
{
    ippc_error err = {{0}, {0}};
    store *s = store_open(path, lost, &err);
    if (!s)
        fail_msg("store_open(%s): %s", path ? path : "NULL", err.message);
    return s;
}

static void sql_exec_raw(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

static long long sql_int_raw(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    long long v = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return v;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* --------------------------------------------------------------- tests */

static void test_memory_round_trip_with_blobs(void **state)
{
    (void)state;
    store *s = open_ok(NULL, NULL);
    store_record rec = make_record(7, "completed", 2, "2024-05-01T12:00:00.000001Z",
                                   "2024-05-01T12:00:01.500000Z", "[\"alpha\", \"beta\"]");
    rec.started = "2024-05-01T12:00:00.250000Z";
    json_object_set_new(rec.doc, "stdout", json_string("hi\n"));
    attach_int64_result(&rec);
    assert_int_equal(store_save(s, &rec), 0);
    assert_int_equal(rec.blobs.count, 0); /* moved */
    assert_null(rec.result);
    store_flush(s);

    store_record got;
    ippc_error err = {{0}, {0}};
    assert_int_equal(store_get(s, 7, &got, &err), 1);
    assert_int_equal(got.id, 7);
    assert_int_equal(got.request_id, 70);
    assert_string_equal(got.state, "completed");
    assert_int_equal(got.engine, 2);
    assert_string_equal(got.submitted, "2024-05-01T12:00:00.000001Z");
    assert_string_equal(got.started, "2024-05-01T12:00:00.250000Z");
    assert_string_equal(got.completed, "2024-05-01T12:00:01.500000Z");
    char *tags = json_dumps(got.tags, JSON_COMPACT);
    assert_string_equal(tags, "[\"alpha\",\"beta\"]");
    free(tags);
    assert_string_equal(json_string_value(json_object_get(got.doc, "stdout")), "hi\n");
    assert_int_equal(json_integer_value(json_object_get(got.doc, "id")), 7);
    assert_null(json_object_get(got.doc, "result"));
    char *skel = json_dumps(got.result, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(skel, "{\"$nd\":0,\"dtype\":\"int64\",\"shape\":[3]}");
    free(skel);
    assert_int_equal(got.blobs.count, 1);
    assert_int_equal(got.blobs.items[0].len, 24);
    int64_t values[3];
    memcpy(values, got.blobs.items[0].data, sizeof values);
    assert_int_equal(values[0], 1);
    assert_int_equal(values[1], 2);
    assert_int_equal(values[2], 3);
    store_record_free(&got);

    /* The listing carries the result in client form. */
    store_query q = any_query();
    uint64_t next = 99;
    json_t *list = store_query_tasks(s, &q, &next, &err);
    assert_non_null(list);
    assert_int_equal(next, 0);
    assert_int_equal(json_array_size(list), 1);
    char *result = json_dumps(json_object_get(json_array_get(list, 0), "result"), JSON_COMPACT);
    assert_string_equal(result, "[1,2,3]");
    free(result);
    json_decref(list);

    assert_int_equal(store_get(s, 8, &got, &err), 0);
    assert_int_equal(store_get(s, 0, &got, &err), 0);
    assert_int_equal(store_max_id(s), 7);
    store_close(s);
}

static void test_memory_store_by_name(void **state)
{
    (void)state;
    size_t lost = 123;
    store *s = open_ok("memory", &lost);
    assert_int_equal(lost, 0);
    assert_int_equal(store_max_id(s), 0);
    save(s, 1, "pending", -1, "2024-01-01T00:00:00.000000Z", NULL, NULL);
    save(s, 2, "completed", 0, "2024-01-01T00:00:01.000000Z", "2024-01-01T00:00:02.000000Z", NULL);
    store_flush(s);
    assert_query(s, any_query(), "[1,2]");
    store_record got;
    ippc_error err;
    assert_int_equal(store_get(s, 1, &got, &err), 1);
    assert_int_equal(got.engine, -1);
    assert_int_equal(got.request_id, 10);
    assert_null(got.completed);
    assert_null(got.tags);
    assert_null(got.result);
    assert_int_equal(got.blobs.count, 0);
    store_record_free(&got);
    assert_int_equal(store_get(s, 2, &got, &err), 1);
    assert_int_equal(got.engine, 0);
    assert_int_equal(got.request_id, 20);
    store_record_free(&got);
    store_close(s);

    /* A second memory store is a different, empty database. */
    s = open_ok("memory", NULL);
    assert_query(s, any_query(), "[]");
    store_close(s);
}

static void test_resave_replaces(void **state)
{
    (void)state;
    store *s = open_ok(NULL, NULL);
    save(s, 5, "pending", -1, "2024-02-01T00:00:00.000000Z", NULL, "[\"old\", \"both\"]");
    store_flush(s);
    store_record rec = make_record(5, "completed", 3, "2024-02-01T00:00:00.000000Z",
                                   "2024-02-01T00:00:09.000000Z", "[\"new\", \"both\"]");
    attach_int64_result(&rec);
    assert_int_equal(store_save(s, &rec), 0);
    store_flush(s);

    store_record got;
    ippc_error err;
    assert_int_equal(store_get(s, 5, &got, &err), 1);
    assert_string_equal(got.state, "completed");
    assert_int_equal(got.engine, 3);
    assert_string_equal(got.completed, "2024-02-01T00:00:09.000000Z");
    assert_int_equal(got.blobs.count, 1);
    store_record_free(&got);

    /* One row, and the tag index follows the new tags. */
    assert_query(s, any_query(), "[5]");
    store_query q = any_query();
    q.tag = "old";
    assert_query(s, q, "[]");
    q.tag = "new";
    assert_query(s, q, "[5]");
    q.tag = "both";
    assert_query(s, q, "[5]");

    /* Re-saving without a result drops the old result and its blobs. */
    save(s, 5, "failed", 3, "2024-02-01T00:00:00.000000Z", "2024-02-01T00:00:10.000000Z", NULL);
    store_flush(s);
    assert_int_equal(store_get(s, 5, &got, &err), 1);
    assert_string_equal(got.state, "failed");
    assert_null(got.result);
    assert_null(got.tags);
    assert_int_equal(got.blobs.count, 0);
    store_record_free(&got);
    q.tag = "both";
    assert_query(s, q, "[]");
    store_close(s);
}

/* The caller may change its doc after store_save: the store keeps the snapshot. */
static void test_save_is_a_snapshot(void **state)
{
    (void)state;
    store *s = open_ok(NULL, NULL);
    store_record rec = make_record(1, "running", 0, "2024-01-01T00:00:00.000000Z", NULL, NULL);
    json_t *mine = json_incref(rec.doc);
    assert_int_equal(store_save(s, &rec), 0);
    json_object_set_new(mine, "state", json_string("changed later"));
    json_decref(mine);
    store_flush(s);
    store_record got;
    ippc_error err;
    assert_int_equal(store_get(s, 1, &got, &err), 1);
    assert_string_equal(json_string_value(json_object_get(got.doc, "state")), "running");
    store_record_free(&got);
    store_close(s);
}

static void test_save_refuses_invalid_records(void **state)
{
    (void)state;
    store *s = open_ok(NULL, NULL);
    store_record rec = make_record(0, "pending", -1, NULL, NULL, "[\"x\"]");
    attach_int64_result(&rec);
    assert_int_equal(store_save(s, &rec), -1); /* id 0; rec freed (leak check under SAN) */
    assert_null(rec.doc);
    assert_int_equal(rec.blobs.count, 0);

    rec = make_record(3, "pending", -1, NULL, NULL, NULL);
    json_decref(rec.doc);
    rec.doc = json_string("not an object");
    assert_int_equal(store_save(s, &rec), -1);

    rec = make_record(3, "pending", -1, NULL, NULL, NULL);
    rec.state = NULL;
    assert_int_equal(store_save(s, &rec), -1);

    rec = make_record(3, "pending", -1, NULL, NULL, NULL);
    rec.tags = json_string("tag");
    assert_int_equal(store_save(s, &rec), -1);

    rec = make_record(3, "pending", -1, NULL, NULL, NULL);
    assert_int_equal(store_save(NULL, &rec), -1);
    assert_int_equal(store_save(s, NULL), -1);

    store_flush(s);
    assert_query(s, any_query(), "[]");
    assert_int_equal(store_max_id(s), 0);
    store_close(s);
}

typedef struct saver {
    store *s;
    uint64_t first;
    int count;
    int failures;
} saver;

/* Saves its ids one by one; after every 100th, flushes and checks that its
 * own last save is readable. */
static void *saver_main(void *arg)
{
    saver *w = arg;
    for (int i = 0; i < w->count; i++) {
        uint64_t id = w->first + (uint64_t)i;
        store_record rec = make_record(id, "completed", (int)(id % 4), "2024-03-01T00:00:00Z",
                                       "2024-03-01T00:00:01Z", NULL);
        if (store_save(w->s, &rec) != 0)
            w->failures++;
        if (i % 100 == 99) {
            store_flush(w->s);
            store_record got;
            ippc_error err;
            if (store_get(w->s, id, &got, &err) != 1)
                w->failures++;
            else
                store_record_free(&got);
        }
    }
    return NULL;
}

static void test_flush_from_many_threads(void **state)
{
    (void)state;
    store *s = open_ok(NULL, NULL);
    store_flush(s); /* nothing queued: returns at once */
    enum { THREADS = 4, EACH = 1000 };
    pthread_t threads[THREADS];
    saver savers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        savers[t] = (saver){.s = s, .first = 1 + (uint64_t)t * EACH, .count = EACH};
        assert_int_equal(pthread_create(&threads[t], NULL, saver_main, &savers[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        assert_int_equal(savers[t].failures, 0);
    }
    store_flush(s);
    assert_int_equal(store_max_id(s), THREADS * EACH);
    store_query q = any_query();
    q.engine = 1;
    q.limit = 1000;
    uint64_t next = 0;
    ippc_error err;
    json_t *list = store_query_tasks(s, &q, &next, &err);
    assert_non_null(list);
    assert_int_equal(json_array_size(list), THREADS * EACH / 4);
    assert_int_equal(next, 0);
    json_decref(list);
    store_close(s);
}

/* Twelve tasks across states, engines, tags and times. */
static store *filter_fixture(void)
{
    store *s = open_ok(NULL, NULL);
    static const struct {
        const char *state;
        int engine;
        const char *submitted, *completed, *tags;
    } rows[] = {
        {"completed", 0, "2024-01-01T10:00:00.000000Z", "2024-01-01T10:00:01.000000Z", "[\"a\"]"},
        {"completed", 1, "2024-01-01T11:00:00.000000Z", "2024-01-01T11:00:01.000000Z", NULL},
        {"failed", 0, "2024-01-02T10:00:00.000000Z", "2024-01-02T10:00:01.000000Z",
         "[\"a\", \"b\"]"},
        {"pending", -1, "2024-01-02T11:00:00.000000Z", NULL, "[\"b\"]"},
        {"running", 2, "2024-01-03T10:00:00.000000Z", NULL, "[\"a\", 7, null]"},
        {"completed", 2, "2024-01-03T11:00:00.000000Z", "2024-01-03T11:00:05.000000Z", "[]"},
        {"aborted", -1, "2024-01-04T10:00:00.000000Z", "2024-01-04T10:00:00.500000Z", "[\"c\"]"},
        {"lost", 1, "2024-01-04T11:00:00.000000Z", "2024-01-04T11:30:00.000000Z", "[\"a\"]"},
        {"completed", 0, "2024-01-05T10:00:00.000000Z", "2024-01-05T10:00:02.000000Z",
         "[\"a\", \"a\"]"},
        {"pending", -1, "2024-01-05T11:00:00.000000Z", NULL, NULL},
        {"completed", 1, "2024-01-06T10:00:00.000000Z", "2024-01-06T10:00:03.000000Z", "[\"ünï\"]"},
        {"running", 0, "2024-01-06T11:00:00.000000Z", NULL, "[\"b\"]"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
        save(s, i + 1, rows[i].state, rows[i].engine, rows[i].submitted, rows[i].completed,
             rows[i].tags);
    store_flush(s);
    return s;
}

static void test_query_filters(void **state)
{
    (void)state;
    store *s = filter_fixture();
    store_query q = any_query();
    assert_query(s, q, "[1,2,3,4,5,6,7,8,9,10,11,12]");

    q.state = "completed";
    assert_query(s, q, "[1,2,6,9,11]");
    q.state = "pending";
    assert_query(s, q, "[4,10]");
    q.state = "nonsense";
    assert_query(s, q, "[]");

    q = any_query();
    q.engine = 0;
    assert_query(s, q, "[1,3,9,12]");
    q.engine = 2;
    assert_query(s, q, "[5,6]");
    q.engine = 9;
    assert_query(s, q, "[]");

    q = any_query();
    q.tag = "a";
    assert_query(s, q, "[1,3,5,8,9]"); /* 9 lists "a" twice: once in the result */
    q.tag = "b";
    assert_query(s, q, "[3,4,12]");
    q.tag = "ünï";
    assert_query(s, q, "[11]");
    q.tag = "7"; /* non-string tags are kept in the doc but not indexed */
    assert_query(s, q, "[]");
    q.tag = "A";
    assert_query(s, q, "[]");

    q = any_query();
    q.since = "2024-01-04T10:00:00.000000Z"; /* inclusive */
    assert_query(s, q, "[7,8,9,10,11,12]");
    q.since = "2024-01-05"; /* a bare date is midnight UTC */
    assert_query(s, q, "[9,10,11,12]");
    q.since = "2024-01-05T12:00:00+02:00"; /* = 10:00Z */
    assert_query(s, q, "[9,10,11,12]");
    q.since = "2024-01-05T10:00:00.000001Z";
    assert_query(s, q, "[10,11,12]");
    q.since = "2025-01-01T00:00:00Z";
    assert_query(s, q, "[]");

    /* Filters combine. */
    q = any_query();
    q.state = "completed";
    q.engine = 0;
    assert_query(s, q, "[1,9]");
    q.tag = "a";
    assert_query(s, q, "[1,9]");
    q.since = "2024-01-02";
    assert_query(s, q, "[9]");
    q = any_query();
    q.tag = "b";
    q.state = "running";
    assert_query(s, q, "[12]");
    q = any_query();
    q.tag = "a";
    q.since = "2024-01-03T00:00:00Z";
    assert_query(s, q, "[5,8,9]");
    q.engine = 1;
    assert_query(s, q, "[8]");

    /* Docs come back as saved. */
    q = any_query();
    q.state = "lost";
    ippc_error err;
    uint64_t next;
    json_t *list = store_query_tasks(s, &q, &next, &err);
    assert_non_null(list);
    assert_int_equal(json_array_size(list), 1);
    json_t *doc = json_array_get(list, 0);
    assert_string_equal(json_string_value(json_object_get(doc, "state")), "lost");
    assert_string_equal(json_string_value(json_object_get(doc, "completed")),
                        "2024-01-04T11:30:00.000000Z");
    assert_null(json_object_get(doc, "result"));
    json_decref(list);
    store_close(s);
}

static void test_query_bad_input(void **state)
{
    (void)state;
    store *s = filter_fixture();
    store_query q = any_query();
    const char *bad[] = {"yesterday",
                         "2024-13-01",
                         "2024-02-30",
                         "2024-01-01T25:00:00Z",
                         "2024-01-01T10:00:00Zjunk",
                         "2024-01-01T10",
                         "",
                         "2024-01-01T10:00:00.Z",
                         "'; DROP TABLE tasks; --"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        q.since = bad[i];
        ippc_error err = {{0}, {0}};
        uint64_t next = 5;
        assert_null(store_query_tasks(s, &q, &next, &err));
        assert_string_equal(err.code, ERR_INVALID);
        assert_non_null(strstr(err.message, "since"));
        assert_int_equal(next, 0);
    }
    /* Input is bound, never spliced into SQL. */
    q = any_query();
    q.state = "completed' OR '1'='1";
    assert_query(s, q, "[]");
    q = any_query();
    q.tag = "a' OR 1=1 --";
    assert_query(s, q, "[]");
    assert_query(s, any_query(), "[1,2,3,4,5,6,7,8,9,10,11,12]");

    ippc_error err;
    assert_null(store_query_tasks(s, NULL, NULL, &err));
    store_close(s);
}

static void test_query_pagination(void **state)
{
    (void)state;
    store *s = open_ok(NULL, NULL);
    /* Ids with gaps, saved out of order. */
    for (uint64_t id = 60; id >= 3; id -= 3)
        save(s, id, id % 2 ? "completed" : "failed", (int)(id % 2), "2024-01-01T00:00:00Z",
             "2024-01-01T00:00:01Z", id % 4 == 0 ? "[\"four\"]" : NULL);
    store_flush(s);

    store_query q = any_query();
    q.limit = 8;
    uint64_t next = 0;
    char *page = query_ids(s, &q, &next);
    assert_string_equal(page, "[3,6,9,12,15,18,21,24]");
    free(page);
    assert_int_equal(next, 24);
    q.cursor = next;
    page = query_ids(s, &q, &next);
    assert_string_equal(page, "[27,30,33,36,39,42,45,48]");
    free(page);
    assert_int_equal(next, 48);
    q.cursor = next;
    page = query_ids(s, &q, &next);
    assert_string_equal(page, "[51,54,57,60]");
    free(page);
    assert_int_equal(next, 0);

    /* Exactly a full last page: no next cursor. */
    q.cursor = 36;
    page = query_ids(s, &q, &next);
    assert_string_equal(page, "[39,42,45,48,51,54,57,60]");
    free(page);
    assert_int_equal(next, 0);

    /* Cursor pages within a filter. */
    q = any_query();
    q.tag = "four";
    q.limit = 2;
    page = query_ids(s, &q, &next);
    assert_string_equal(page, "[12,24]");
    free(page);
    q.cursor = next;
    page = query_ids(s, &q, &next);
    assert_string_equal(page, "[36,48]");
    free(page);
    q.cursor = next;
    page = query_ids(s, &q, &next);
    assert_string_equal(page, "[60]");
    free(page);
    assert_int_equal(next, 0);
    q = any_query();
    q.engine = 1;
    q.limit = 3;
    q.cursor = 10;
    page = query_ids(s, &q, &next);
    assert_string_equal(page, "[15,21,27]");
    free(page);
    assert_int_equal(next, 27);

    /* Limit 0 reads as 1. */
    q = any_query();
    q.limit = 0;
    page = query_ids(s, &q, &next);
    assert_string_equal(page, "[3]");
    free(page);
    assert_int_equal(next, 3);

    /* A cursor past everything. */
    q = any_query();
    q.cursor = UINT64_MAX;
    page = query_ids(s, &q, &next);
    assert_string_equal(page, "[]");
    free(page);
    assert_int_equal(next, 0);
    store_close(s);
}

static void test_query_limit_clamped_to_1000(void **state)
{
    (void)state;
    store *s = open_ok(NULL, NULL);
    for (uint64_t id = 1; id <= 1005; id++)
        save(s, id, "completed", 0, "2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", NULL);
    store_flush(s);
    store_query q = any_query();
    q.limit = 5000;
    uint64_t next = 0;
    ippc_error err;
    json_t *list = store_query_tasks(s, &q, &next, &err);
    assert_non_null(list);
    assert_int_equal(json_array_size(list), 1000);
    assert_int_equal(next, 1000);
    json_decref(list);
    q.cursor = next;
    list = store_query_tasks(s, &q, &next, &err);
    assert_int_equal(json_array_size(list), 5);
    assert_int_equal(next, 0);
    json_decref(list);
    store_close(s);
}

static void test_purge(void **state)
{
    (void)state;
    store *s = filter_fixture();
    ippc_error err = {{0}, {0}};
    /* Finished before Jan 3: 1, 2, 3 (4 is pending). */
    assert_int_equal(store_purge(s, "2024-01-03T00:00:00Z", &err), 3);
    assert_query(s, any_query(), "[4,5,6,7,8,9,10,11,12]");
    store_query q = any_query();
    q.tag = "b";
    assert_query(s, q, "[4,12]"); /* the purged task's tags went with it */
    /* Strictly before: 6 completed at 11:00:05 exactly stays. */
    assert_int_equal(store_purge(s, "2024-01-03T11:00:05Z", &err), 0);
    assert_int_equal(store_purge(s, "2024-01-03T11:00:05.000001Z", &err), 1);
    assert_int_equal(store_purge(s, "2024-01-01", &err), 0);

    /* Bad times are refused and nothing is deleted. */
    assert_int_equal(store_purge(s, "soon", &err), -1);
    assert_string_equal(err.code, ERR_INVALID);
    assert_non_null(strstr(err.message, "before"));
    assert_query(s, any_query(), "[4,5,7,8,9,10,11,12]");

    /* A queued save is part of what gets purged. */
    save(s, 13, "completed", 0, "2024-01-07T00:00:00Z", "2024-01-07T00:00:01Z", "[\"b\"]");
    /* NULL: every finished task; pending and running stay. */
    assert_int_equal(store_purge(s, NULL, &err), 5); /* 7, 8, 9, 11 and the queued 13 */
    assert_query(s, any_query(), "[4,5,10,12]");
    q.tag = "b";
    assert_query(s, q, "[4,12]");
    assert_int_equal(store_purge(s, NULL, &err), 0);
    assert_int_equal(store_max_id(s), 13);
    store_close(s);
}

static void test_reopen_file_store(void **state)
{
    fixture *f = *state;
    size_t lost = 99;
    store *s = open_ok(f->path, &lost); /* creates profile_test/ */
    assert_int_equal(lost, 0);
    store_record rec = make_record(1, "completed", 0, "2024-01-01T00:00:00.000000Z",
                                   "2024-01-01T00:00:01.000000Z", "[\"keep\"]");
    attach_int64_result(&rec);
    assert_int_equal(store_save(s, &rec), 0);
    save(s, 2, "pending", -1, "2024-01-01T00:00:02.000000Z", NULL, "[\"keep\"]");
    save(s, 3, "running", 1, "2024-01-01T00:00:03.000000Z", NULL, NULL);
    save(s, 4, "failed", 1, "2024-01-01T00:00:04.000000Z", "2024-01-01T00:00:05.000000Z", NULL);
    store_close(s); /* flushes */

    char before[64];
    time_t now = time(NULL);
    struct tm now_utc;
    strftime(before, sizeof before, "%Y-%m-%dT%H:%M:%S", gmtime_r(&now, &now_utc));
    s = open_ok(f->path, &lost);
    assert_int_equal(lost, 2);
    assert_int_equal(store_max_id(s), 4);

    store_record got;
    ippc_error err;
    assert_int_equal(store_get(s, 1, &got, &err), 1);
    assert_string_equal(got.state, "completed");
    assert_int_equal(got.blobs.count, 1);
    assert_int_equal(got.blobs.items[0].len, 24);
    assert_int_equal(((int64_t *)got.blobs.items[0].data)[2], 3);
    store_record_free(&got);

    for (uint64_t id = 2; id <= 3; id++) {
        assert_int_equal(store_get(s, id, &got, &err), 1);
        assert_string_equal(got.state, "lost");
        assert_non_null(got.completed);
        assert_true(strncmp(got.completed, before, 16) >= 0); /* now, to the minute */
        assert_int_equal(strlen(got.completed), strlen("2024-01-01T00:00:00.000000Z"));
        assert_string_equal(json_string_value(json_object_get(got.doc, "state")), "lost");
        assert_string_equal(json_string_value(json_object_get(got.doc, "completed")),
                            got.completed);
        assert_int_equal(json_integer_value(json_object_get(got.doc, "id")), id);
        store_record_free(&got);
    }
    assert_int_equal(store_get(s, 4, &got, &err), 1);
    assert_string_equal(got.state, "failed");
    store_record_free(&got);

    store_query q = any_query();
    q.state = "lost";
    assert_query(s, q, "[2,3]");
    q = any_query();
    q.tag = "keep";
    assert_query(s, q, "[1,2]");

    /* New ids continue after the old ones; nothing more is lost next time. */
    save(s, 5, "running", 0, "2024-01-02T00:00:00Z", NULL, NULL);
    store_close(s);
    s = open_ok(f->path, &lost);
    assert_int_equal(lost, 1);
    store_close(s);
    s = open_ok(f->path, &lost);
    assert_int_equal(lost, 0);
    assert_int_equal(store_max_id(s), 5);
    store_close(s);
}

static void test_max_id_survives_purge_and_restart(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f->path, NULL);
    save(s, 41, "completed", 0, "2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", NULL);
    save(s, 50, "aborted", -1, "2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", NULL);
    ippc_error err;
    assert_int_equal(store_purge(s, NULL, &err), 2);
    assert_int_equal(store_max_id(s), 50);
    store_close(s);
    s = open_ok(f->path, NULL);
    assert_query(s, any_query(), "[]");
    assert_int_equal(store_max_id(s), 50); /* ids are never handed out twice */
    store_close(s);
}

static void test_schema_recorded(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f->path, NULL);
    save(s, 1, "completed", 0, "2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", "[\"t\"]");
    store_flush(s);
    /* Readable by another connection while the store is open (WAL). */
    assert_int_equal(sql_int_raw(f->path, "SELECT count(*) FROM tasks"), 1);
    assert_int_equal(sql_int_raw(f->path, "SELECT count(*) FROM task_tags WHERE tag = 't'"), 1);
    store_close(s);
    assert_int_equal(sql_int_raw(f->path, "PRAGMA user_version"), 2);
    assert_int_equal(sql_int_raw(f->path, "PRAGMA application_id"), 0x69707063);
    assert_int_equal(sql_int_raw(f->path, "SELECT count(*) FROM sqlite_master WHERE type = 'index'"
                                          " AND name IN ('tasks_state', 'tasks_engine',"
                                          " 'tasks_submitted', 'tasks_completed', 'tasks_kind',"
                                          " 'tasks_request')"),
                     6);
    sqlite3 *db;
    sqlite3_stmt *stmt;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "wal");
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

/* A task store written by schema version 1 (before direct-view tasks were
 * stored: no kind) opens as version 2: its tasks are balanced ones, their
 * docs say so, the kind and request filters work, and new records of both
 * kinds go in beside them. */
static void test_schema_1_migrates(void **state)
{
    fixture *f = *state;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/profile_test", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    sql_exec_raw(f->path,
                 "CREATE TABLE tasks (id INTEGER PRIMARY KEY, request_id INTEGER,"
                 " state TEXT NOT NULL, engine INTEGER, submitted TEXT, started TEXT,"
                 " completed TEXT, tags TEXT, doc TEXT NOT NULL, result TEXT, blobs BLOB);"
                 "CREATE INDEX tasks_state ON tasks(state);"
                 "CREATE INDEX tasks_engine ON tasks(engine);"
                 "CREATE INDEX tasks_submitted ON tasks(submitted);"
                 "CREATE INDEX tasks_completed ON tasks(completed);"
                 "CREATE TABLE task_tags (tag TEXT NOT NULL, task_id INTEGER NOT NULL,"
                 " PRIMARY KEY (tag, task_id)) WITHOUT ROWID;"
                 "CREATE INDEX task_tags_task ON task_tags(task_id);"
                 "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
                 "INSERT INTO store_meta(key, value) VALUES ('max_task_id', 7);"
                 "INSERT INTO tasks(id, request_id, state, engine, submitted, completed, doc)"
                 " VALUES (3, 9, 'completed', 0, '2024-01-01T00:00:00.000000Z',"
                 " '2024-01-01T00:00:01.000000Z', '{\"id\":3,\"state\":\"completed\"}'),"
                 " (7, NULL, 'running', 1, '2024-01-01T00:00:02.000000Z', NULL,"
                 " '{\"id\":7,\"state\":\"running\"}');"
                 "PRAGMA application_id = 1768976483; PRAGMA user_version = 1;");
    size_t lost = 0;
    store *s = open_ok(f->path, &lost);
    assert_int_equal(lost, 1); /* task 7 was running when that controller died */
    assert_int_equal(store_max_id(s), 7);
    store_record rec;
    ippc_error err = {{0}, {0}};
    assert_int_equal(store_get(s, 3, &rec, &err), 1);
    assert_string_equal(rec.kind, "balanced");
    assert_int_equal(rec.request_id, 9);
    assert_string_equal(json_string_value(json_object_get(rec.doc, "kind")), "balanced");
    store_record_free(&rec);
    store_record d =
        make_record(8, "completed", 2, "2024-01-02T00:00:00Z", "2024-01-02T00:00:01Z", NULL);
    d.kind = "direct";
    d.request_id = 9;
    assert_int_equal(store_save(s, &d), 0);
    assert_int_equal(store_flush(s), 0);
    store_query q = {.kind = "balanced", .engine = -1, .limit = 10};
    char *ids = query_ids(s, &q, NULL);
    assert_string_equal(ids, "[3,7]");
    free(ids);
    q = (store_query){.kind = "direct", .engine = -1, .limit = 10};
    ids = query_ids(s, &q, NULL);
    assert_string_equal(ids, "[8]");
    free(ids);
    q = (store_query){.request_id = 9, .engine = -1, .limit = 10};
    ids = query_ids(s, &q, NULL);
    assert_string_equal(ids, "[3,8]");
    free(ids);
    q = (store_query){
        .request_id = 9, .kind = "direct", .state = "completed", .engine = 2, .limit = 10};
    ids = query_ids(s, &q, NULL);
    assert_string_equal(ids, "[8]");
    free(ids);
    store_close(s);
    assert_int_equal(sql_int_raw(f->path, "PRAGMA user_version"), 2);
    /* Opening it again changes nothing. */
    s = open_ok(f->path, NULL);
    q = (store_query){.kind = "balanced", .engine = -1, .limit = 10};
    ids = query_ids(s, &q, NULL);
    assert_string_equal(ids, "[3,7]");
    free(ids);
    store_close(s);
}

static void test_garbage_file_is_a_clean_error(void **state)
{
    fixture *f = *state;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/profile_test", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    FILE *fp = fopen(f->path, "wb");
    assert_non_null(fp);
    for (int i = 0; i < 4096; i++)
        fputc((i * 7919) & 0xff, fp);
    assert_int_equal(fclose(fp), 0);

    ippc_error err = {{0}, {0}};
    size_t lost = 77;
    assert_null(store_open(f->path, &lost, &err));
    assert_int_equal(lost, 0);
    assert_non_null(strstr(err.message, "tasks.db is not an ippc task store"));
    assert_non_null(strstr(err.message, "file is not a database"));

    /* A text file that happens to be short. */
    fp = fopen(f->path, "wb");
    assert_non_null(fp);
    fputs("hello, not a database at all, but long enough to have a header........\n", fp);
    assert_int_equal(fclose(fp), 0);
    assert_null(store_open(f->path, NULL, &err));
    assert_non_null(strstr(err.message, "is not an ippc task store"));

    /* A directory where the file should be. */
    assert_int_equal(remove(f->path), 0);
    assert_int_equal(mkdir(f->path, 0700), 0);
    assert_null(store_open(f->path, NULL, &err));
    assert_non_null(strstr(err.message, "tasks.db"));
    assert_int_equal(rmdir(f->path), 0);
}

static void test_other_sqlite_databases_refused(void **state)
{
    fixture *f = *state;
    char other[160];
    snprintf(other, sizeof other, "%s/other.db", f->dir);
    sql_exec_raw(other, "CREATE TABLE users(name TEXT); INSERT INTO users VALUES ('x')");
    ippc_error err = {{0}, {0}};
    assert_null(store_open(other, NULL, &err));
    assert_non_null(strstr(err.message, "is not an ippc task store"));
    /* Untouched. */
    assert_int_equal(sql_int_raw(other, "SELECT count(*) FROM users"), 1);

    /* A store from a newer ippc. */
    store *s = open_ok(f->path, NULL);
    store_close(s);
    sql_exec_raw(f->path, "PRAGMA user_version = 99");
    assert_null(store_open(f->path, NULL, &err));
    assert_non_null(strstr(err.message, "schema version 99"));
}

static void test_corrupt_record_is_an_error(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f->path, NULL);
    store_record rec =
        make_record(1, "completed", 0, "2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", NULL);
    attach_int64_result(&rec);
    assert_int_equal(store_save(s, &rec), 0);
    save(s, 2, "completed", 0, "2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", NULL);
    store_close(s);
    /* Blob header claims more bytes than there are; a doc that is not JSON. */
    sql_exec_raw(f->path, "UPDATE tasks SET blobs = x'01000000ff00000000000000' WHERE id = 1;"
                          "UPDATE tasks SET doc = '{oops' WHERE id = 2");
    s = open_ok(f->path, NULL);
    store_record got;
    ippc_error err = {{0}, {0}};
    assert_int_equal(store_get(s, 1, &got, &err), -1);
    assert_non_null(strstr(err.message, "task 1 has an unreadable blobs"));
    assert_int_equal(store_get(s, 2, &got, &err), -1);
    assert_non_null(strstr(err.message, "task 2 has an unreadable doc"));
    store_query q = any_query();
    uint64_t next;
    assert_null(store_query_tasks(s, &q, &next, &err));
    store_close(s);
}

static void test_locked_by_another_store(void **state)
{
    fixture *f = *state;
    store *first = open_ok(f->path, NULL);
    ippc_error err = {{0}, {0}};
    size_t lost = 5;
    assert_null(store_open(f->path, &lost, &err));
    assert_non_null(strstr(err.message, "is locked by another process"));
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    assert_non_null(strstr(err.message, pid));
    /* The refused open changed nothing: the first store still works. */
    save(first, 1, "running", 0, "2024-01-01T00:00:00Z", NULL, NULL);
    store_flush(first);
    store_record got;
    assert_int_equal(store_get(first, 1, &got, &err), 1);
    assert_string_equal(got.state, "running");
    store_record_free(&got);
    store_close(first);
    store *second = open_ok(f->path, &lost);
    assert_int_equal(lost, 1);
    store_close(second);
}

/* Another process holds SQLite's write lock (say, a sqlite3 shell inside a
 * transaction): opening waits for the busy timeout, then fails cleanly. */
static void test_locked_by_another_process(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f->path, NULL);
    store_close(s);

    int ready[2], done[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(done), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        sqlite3 *db = NULL;
        int ok = sqlite3_open(f->path, &db) == SQLITE_OK &&
                 sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL) == SQLITE_OK;
        char c = ok ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1 || read(done[0], &c, 1) < 0)
            _exit(2);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(db);
        _exit(0);
    }
    char c = 0;
    assert_int_equal(read(ready[0], &c, 1), 1);
    assert_int_equal(c, 'y');
    ippc_error err = {{0}, {0}};
    assert_null(store_open(f->path, NULL, &err));
    assert_non_null(strstr(err.message, "is locked by another process"));
    assert_non_null(strstr(err.message, "tasks.db"));
    assert_int_equal(write(done[1], "q", 1), 1);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(ready[0]), close(ready[1]), close(done[0]), close(done[1]);

    s = open_ok(f->path, NULL); /* free again */
    store_close(s);
}

static void test_times_are_canonical(void **state)
{
    (void)state;
    store *s = open_ok(NULL, NULL);
    save(s, 1, "completed", 0, "2024-05-01T14:00:00+02:00", "2024-05-01T12:00:01.5Z", NULL);
    save(s, 2, "completed", 0, "not a time", "2024-05-01 12:00:02", NULL);
    store_flush(s);
    store_record got;
    ippc_error err;
    assert_int_equal(store_get(s, 1, &got, &err), 1);
    assert_string_equal(got.submitted, "2024-05-01T12:00:00.000000Z");
    assert_string_equal(got.completed, "2024-05-01T12:00:01.500000Z");
    store_record_free(&got);
    assert_int_equal(store_get(s, 2, &got, &err), 1);
    assert_string_equal(got.submitted, "not a time"); /* kept as given */
    assert_string_equal(got.completed, "2024-05-01T12:00:02.000000Z");
    store_record_free(&got);
    store_close(s);
}

static double time_saves(store *s, int count)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 1; i <= count; i++) {
        store_record rec = make_record((uint64_t)i, "completed", i % 4, "2024-01-01T00:00:00Z",
                                       "2024-01-01T00:00:01Z", i % 10 ? NULL : "[\"tenth\"]");
        attach_int64_result(&rec);
        assert_int_equal(store_save(s, &rec), 0);
    }
    store_flush(s);
    return seconds_since(&t0);
}

static void test_ten_thousand_saves(void **state)
{
    fixture *f = *state;
    enum { N = 10000 };
    store *s = open_ok(f->path, NULL);
    double file_seconds = time_saves(s, N);
    store_query q = any_query();
    q.tag = "tenth";
    uint64_t next = 0;
    ippc_error err;
    json_t *list = store_query_tasks(s, &q, &next, &err);
    assert_non_null(list);
    assert_int_equal(json_array_size(list), N / 10);
    assert_int_equal(next, 0);
    json_decref(list);
    store_record got;
    assert_int_equal(store_get(s, N, &got, &err), 1);
    assert_int_equal(got.blobs.items[0].len, 24);
    store_record_free(&got);
    store_close(s);

    s = open_ok(NULL, NULL);
    double memory_seconds = time_saves(s, N);
    assert_int_equal(store_max_id(s), N);
    store_close(s);
    printf("    10000 saves + flush: file (WAL) %.1f ms (%.0f/s), memory %.1f ms (%.0f/s)\n",
           file_seconds * 1e3, N / file_seconds, memory_seconds * 1e3, N / memory_seconds);
}

/* -------------------------------------------------------- storage faults */

static int setup_tmpfs(void **state)
{
    setup_dir(state);
    fixture *f = *state;
    /* Big enough for the schema and some WAL, small enough to fill at once. */
    if (mount("tmpfs", f->dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=512k,mode=0700") != 0) {
        print_error("cannot mount a 512 KiB tmpfs at %s: %s (the full-disk tests mount one "
                    "and need root with CAP_SYS_ADMIN)\n",
                    f->dir, strerror(errno));
        rmdir(f->dir);
        free(f);
        return -1; /* cmocka reports the test as failed, not skipped */
    }
    return 0;
}

static int teardown_tmpfs(void **state)
{
    fixture *f = *state;
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); /* the mount point stays */
    umount2(f->dir, MNT_DETACH);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void path_with_suffix(const fixture *f, const char *suffix, char *out, size_t size)
{
    snprintf(out, size, "%s%s", f->path, suffix);
}

/* Writes one file until the file system holding dir is full. */
static void fill_disk(const char *dir, char *filler, size_t size)
{
    snprintf(filler, size, "%s/filler", dir);
    int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    static const char block[4096];
    while (write(fd, block, sizeof block) > 0)
        ;
    while (write(fd, block, 1) > 0) /* the last partial page */
        ;
    close(fd);
}

/* A finished task whose doc needs a page of its own (so a full disk shows). */
static void save_padded(store *s, uint64_t id, const char *state)
{
    store_record rec =
        make_record(id, state, 0, "2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", NULL);
    char pad[2048];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    json_object_set_new(rec.doc, "pad", json_string(pad));
    assert_int_equal(store_save(s, &rec), 0);
}

/* Saves new tasks from id on until a commit fails; returns the next id. */
static uint64_t save_until_degraded(store *s, uint64_t id)
{
    for (int i = 0; i < 2000; i++, id++) {
        save_padded(s, id, "completed");
        if (store_flush(s) < 0)
            return id + 1;
    }
    fail_msg("2000 saves on a full disk all succeeded");
    return id;
}

static store_status wait_status(store *s, int degraded, double timeout_s)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    store_status st;
    for (;;) {
        store_get_status(s, &st);
        if (st.degraded == degraded)
            return st;
        if (seconds_since(&t0) > timeout_s)
            fail_msg("the store is still %s after %.0f s (error: %s, pending %zu)",
                     degraded ? "ok" : "degraded", timeout_s, st.error, st.pending);
        usleep(10 * 1000);
    }
}

static store_status wait_pending_at_most(store *s, size_t pending, double timeout_s)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    store_status st;
    for (;;) {
        store_get_status(s, &st);
        if (st.pending <= pending)
            return st;
        if (seconds_since(&t0) > timeout_s)
            fail_msg("%zu records pending after %.0f s, expected at most %zu", st.pending,
                     timeout_s, pending);
        usleep(10 * 1000);
    }
}

static void assert_state(store *s, uint64_t id, const char *state)
{
    store_record got;
    ippc_error err = {{0}, {0}};
    int found = store_get(s, id, &got, &err);
    if (found != 1)
        fail_msg("task %llu: expected \"%s\", store_get gave %d (%s)", (unsigned long long)id,
                 state, found, err.message);
    assert_string_equal(got.state, state);
    store_record_free(&got);
}

static void assert_absent(store *s, uint64_t id)
{
    store_record got;
    ippc_error err = {{0}, {0}};
    assert_int_equal(store_get(s, id, &got, &err), 0);
}

/* SQLite used to map <path>-shm: a -shm that could not be written (chattr +i)
 * killed the controller with SIGBUS on its next commit.  There is no -shm at
 * all now, and a stale immutable one changes nothing. */
static void test_no_shared_memory_file(void **state)
{
    fixture *f = *state;
    char dir[128], shm[160];
    snprintf(dir, sizeof dir, "%s/profile_test", f->dir);
    path_with_suffix(f, "-shm", shm, sizeof shm);
    assert_int_equal(mkdir(dir, 0700), 0);
    int fd = open(shm, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 32768), 0);
    close(fd);
    if (set_immutable(shm, true) != 0)
        fail_msg("chattr +i refused on %s: %s (this test needs root and a file system with "
                 "the immutable flag)",
                 shm, strerror(errno));

    store *s = open_ok(f->path, NULL);
    for (uint64_t id = 1; id <= 50; id++)
        save_padded(s, id, "completed");
    assert_int_equal(store_flush(s), 0);
    assert_state(s, 50, "completed");
    store_status st;
    store_get_status(s, &st);
    assert_false(st.degraded);
    store_close(s);

    assert_int_equal(set_immutable(shm, false), 0);
    assert_int_equal(unlink(shm), 0);
    s = open_ok(f->path, NULL);
    save_padded(s, 51, "completed");
    assert_int_equal(store_flush(s), 0);
    if (access(shm, F_OK) == 0)
        fail_msg("the store created %s: SQLite maps it (SIGBUS when it cannot be written)", shm);
    store_close(s);
}

/* Another program holding locks on <path>-shm or -wal (the WAL index locks
 * SQLite used) does not stall or fail the writer. */
static void test_locks_on_wal_files_do_not_block(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f->path, NULL);
    save_padded(s, 1, "completed");
    assert_int_equal(store_flush(s), 0);

    char shm[160], wal[160];
    path_with_suffix(f, "-shm", shm, sizeof shm);
    path_with_suffix(f, "-wal", wal, sizeof wal);
    int ready[2], done[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(done), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) { /* async-signal-safe calls only: the parent has threads */
        int shm_fd = open(shm, O_RDWR | O_CREAT, 0600), wal_fd = open(wal, O_RDWR);
        struct flock index_locks = {
            .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 120, .l_len = 8};
        struct flock whole = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        char c = shm_fd >= 0 && wal_fd >= 0 && fcntl(shm_fd, F_SETLK, &index_locks) == 0 &&
                         fcntl(wal_fd, F_SETLK, &whole) == 0
                     ? 'y'
                     : 'n';
        if (write(ready[1], &c, 1) != 1 || read(done[0], &c, 1) < 0)
            _exit(2);
        _exit(0);
    }
    char c = 0;
    assert_int_equal(read(ready[0], &c, 1), 1);
    assert_int_equal(c, 'y');
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint64_t id = 2; id <= 20; id++) {
        save_padded(s, id, "completed");
        assert_int_equal(store_flush(s), 0);
    }
    double took = seconds_since(&t0);
    assert_int_equal(write(done[1], "q", 1), 1);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    close(ready[0]), close(ready[1]), close(done[0]), close(done[1]);
    if (took > 1.5) /* a busy wait would take BUSY_TIMEOUT_MS per commit */
        fail_msg("19 commits took %.1f s while another process held WAL locks", took);
    store_status st;
    store_get_status(s, &st);
    assert_false(st.degraded);
    assert_state(s, 20, "completed");
    store_close(s);
}

static void test_full_disk_degrades_and_recovers(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f->path, NULL);
    save_padded(s, 1, "completed");
    assert_int_equal(store_flush(s), 0);
    char filler[160];
    fill_disk(f->dir, filler, sizeof filler);
    uint64_t next = save_until_degraded(s, 2);

    store_status st;
    store_get_status(s, &st);
    assert_true(st.degraded);
    if (!strstr(st.error, "disk full"))
        fail_msg("the error should say the disk is full: %s", st.error);
    assert_true(st.pending >= 1);
    assert_int_equal(st.dropped, 0);
    assert_int_equal(strlen(st.since), strlen("2024-01-01T00:00:00.000000Z"));
    json_t *js = store_status_json(s);
    assert_string_equal(json_string_value(json_object_get(js, "state")), "degraded");
    assert_string_equal(json_string_value(json_object_get(js, "error")), st.error);
    json_decref(js);

    /* Reads answer from the file; a purge would miss the waiting records. */
    assert_state(s, 1, "completed");
    ippc_error err = {{0}, {0}};
    assert_int_equal(store_purge(s, NULL, &err), -1);
    assert_string_equal(err.code, ERR_UNAVAILABLE);
    assert_non_null(strstr(err.message, "degraded"));
    /* Later snapshots of waiting tasks replace them: pending counts tasks. */
    size_t waiting = st.pending;
    for (uint64_t id = 2; id < next; id++)
        save_padded(s, id, "failed");
    st = wait_pending_at_most(s, waiting, 5);
    assert_int_equal(st.pending, waiting);

    /* Space again: the next retry stores every record. */
    assert_int_equal(unlink(filler), 0);
    st = wait_status(s, 0, 10);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.dropped, 0);
    assert_string_equal(st.error, "");
    assert_int_equal(store_flush(s), 0);
    assert_state(s, 1, "completed");
    for (uint64_t id = 2; id < next; id++)
        assert_state(s, id, "failed");
    store_close(s);
    s = open_ok(f->path, NULL);
    assert_state(s, next - 1, "failed");
    assert_int_equal(store_max_id(s), next - 1);
    store_close(s);
}

static void test_unsaved_records_are_bounded(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f->path, NULL);
    store_set_pending_max(s, 10);
    save_padded(s, 1, "completed");
    assert_int_equal(store_flush(s), 0);
    char filler[160];
    fill_disk(f->dir, filler, sizeof filler);
    uint64_t next = save_until_degraded(s, 2);
    for (uint64_t id = next; id < next + 30; id++)
        save_padded(s, id, "completed");
    /* Waiting: 2 .. next+29; the 10 newest stay, the others are dropped. */
    store_status st = wait_pending_at_most(s, 10, 5);
    assert_int_equal(st.pending, 10);
    assert_int_equal(st.dropped, next + 18);
    assert_true(st.degraded);

    assert_int_equal(unlink(filler), 0);
    st = wait_status(s, 0, 10);
    assert_int_equal(st.dropped, next + 18); /* still reported after the fault */
    assert_state(s, 1, "completed");
    for (uint64_t id = 2; id < next + 20; id++)
        assert_absent(s, id);
    for (uint64_t id = next + 20; id < next + 30; id++)
        assert_state(s, id, "completed");
    store_close(s);
}

/* store_close gives up after a few attempts instead of hanging. */
static void test_close_while_disk_full(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f->path, NULL);
    char filler[160];
    fill_disk(f->dir, filler, sizeof filler);
    save_until_degraded(s, 1);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    store_close(s);
    double took = seconds_since(&t0);
    if (took > 5)
        fail_msg("store_close took %.1f s on a full disk", took);
}

static void test_immutable_wal_degrades_and_recovers(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f->path, NULL);
    save_padded(s, 1, "completed");
    assert_int_equal(store_flush(s), 0);
    char wal[160];
    path_with_suffix(f, "-wal", wal, sizeof wal);
    if (set_immutable(wal, true) != 0)
        fail_msg("chattr +i refused on %s: %s (this test needs root and a file system with "
                 "the immutable flag)",
                 wal, strerror(errno));
    save_padded(s, 2, "completed");
    assert_int_equal(store_flush(s), -1);
    store_status st;
    store_get_status(s, &st);
    assert_true(st.degraded);
    assert_int_equal(st.pending, 1);
    assert_non_null(strstr(st.error, "tasks.db"));
    assert_state(s, 1, "completed");
    assert_absent(s, 2);

    assert_int_equal(set_immutable(wal, false), 0);
    st = wait_status(s, 0, 10);
    assert_int_equal(st.pending, 0);
    assert_state(s, 2, "completed");
    store_close(s);
}

/* Commits reach the WAL, but checkpoints cannot copy them into an immutable
 * database file: reported, nothing waits, and it clears by itself. */
static void test_immutable_database_file_is_reported(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f->path, NULL);
    if (set_immutable(f->path, true) != 0)
        fail_msg("chattr +i refused on %s: %s (this test needs root and a file system with "
                 "the immutable flag)",
                 f->path, strerror(errno));
    enum { N = 80, BLOB = 64 * 1024 }; /* 5 MiB: past the 1000-page checkpoint */
    for (uint64_t id = 1; id <= N; id++) {
        store_record rec =
            make_record(id, "completed", 0, "2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", NULL);
        rec.result = json_pack("{si ss s[i]}", "$nd", 0, "dtype", "uint8", "shape", BLOB);
        unsigned char *data = calloc(1, BLOB);
        assert_non_null(data);
        assert_int_equal(blobs_push(&rec.blobs, data, BLOB), 0);
        assert_int_equal(store_save(s, &rec), 0);
        assert_int_equal(store_flush(s), 0); /* the WAL takes them */
    }
    store_status st = wait_status(s, 1, 10);
    if (!strstr(st.error, "cannot copy the WAL"))
        fail_msg("unexpected error: %s", st.error);
    assert_int_equal(st.pending, 0);
    assert_state(s, N, "completed");

    assert_int_equal(set_immutable(f->path, false), 0);
    wait_status(s, 0, 10);
    store_close(s);
    s = open_ok(f->path, NULL);
    assert_state(s, N, "completed");
    store_close(s);
}

/* A WAL deleted under the store: commits are copied into the database at
 * once, so a restart finds them all. */
static void test_removed_wal_is_reported_and_nothing_lost(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f->path, NULL);
    save_padded(s, 1, "completed");
    assert_int_equal(store_flush(s), 0);
    char wal[160];
    path_with_suffix(f, "-wal", wal, sizeof wal);
    assert_int_equal(unlink(wal), 0);
    save_padded(s, 2, "completed");
    assert_int_equal(store_flush(s), 0);
    store_status st;
    store_get_status(s, &st);
    assert_true(st.degraded);
    assert_non_null(strstr(st.error, "-wal was removed"));
    assert_int_equal(st.pending, 0);
    save_padded(s, 3, "running");
    assert_int_equal(store_flush(s), 0);
    assert_state(s, 3, "running");
    /* As if the controller were killed now: the database file alone. */
    char copy[192];
    snprintf(copy, sizeof copy, "%s/copy.db", f->dir);
    copy_file(f->path, copy);
    store_close(s);

    size_t lost = 0;
    s = open_ok(copy, &lost);
    assert_int_equal(lost, 1); /* 3 was running */
    assert_state(s, 1, "completed");
    assert_state(s, 2, "completed");
    store_get_status(s, &st);
    assert_false(st.degraded);
    store_close(s);
}

/* The database file renamed away: records wait until it is back. */
static void test_moved_database_file_waits_for_it(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f->path, NULL);
    save_padded(s, 1, "completed");
    assert_int_equal(store_flush(s), 0);
    char moved[160];
    path_with_suffix(f, ".moved", moved, sizeof moved);
    assert_int_equal(rename(f->path, moved), 0);
    save_padded(s, 2, "completed");
    assert_int_equal(store_flush(s), -1);
    store_status st;
    store_get_status(s, &st);
    assert_true(st.degraded);
    assert_non_null(strstr(st.error, "removed or replaced"));
    assert_int_equal(st.pending, 1);
    assert_int_equal(rename(moved, f->path), 0);
    wait_status(s, 0, 10);
    assert_state(s, 2, "completed");
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory_round_trip_with_blobs),
        cmocka_unit_test(test_memory_store_by_name),
        cmocka_unit_test(test_resave_replaces),
        cmocka_unit_test(test_save_is_a_snapshot),
        cmocka_unit_test(test_save_refuses_invalid_records),
        cmocka_unit_test(test_flush_from_many_threads),
        cmocka_unit_test(test_query_filters),
        cmocka_unit_test(test_query_bad_input),
        cmocka_unit_test(test_query_pagination),
        cmocka_unit_test(test_query_limit_clamped_to_1000),
        cmocka_unit_test(test_purge),
        cmocka_unit_test(test_times_are_canonical),
        cmocka_unit_test_setup_teardown(test_reopen_file_store, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_max_id_survives_purge_and_restart, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_schema_recorded, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_schema_1_migrates, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_garbage_file_is_a_clean_error, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_other_sqlite_databases_refused, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_corrupt_record_is_an_error, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_locked_by_another_store, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_locked_by_another_process, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_ten_thousand_saves, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_no_shared_memory_file, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_locks_on_wal_files_do_not_block, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_full_disk_degrades_and_recovers, setup_tmpfs,
                                        teardown_tmpfs),
        cmocka_unit_test_setup_teardown(test_unsaved_records_are_bounded, setup_tmpfs,
                                        teardown_tmpfs),
        cmocka_unit_test_setup_teardown(test_close_while_disk_full, setup_tmpfs, teardown_tmpfs),
        cmocka_unit_test_setup_teardown(test_immutable_wal_degrades_and_recovers, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_immutable_database_file_is_reported, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_removed_wal_is_reported_and_nothing_lost, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_moved_database_file_waits_for_it, setup_dir,
                                        teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
