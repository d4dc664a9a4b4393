/* test_server_decode_pool.c — server/decode_pool.c: JSON decoded on worker
 * threads, the memory meter against a budget (per-job cap: 413, process-wide
 * limit: 503), the `then` step, and stopping with jobs queued and running.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "decode_pool.h"

/* A job plus what the test needs to wait for it. */
typedef struct waited_job {
    decode_job job;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    pthread_t done_thread;
    int then_ran;
    /* then() blocks until released (to keep a worker busy) */
    int hold;
    int held;
    decode_pool *pool; /* submit from done() while the pool stops */
    int submit_in_done;
} waited_job;

static void on_done(decode_job *job)
{
    waited_job *w = job->arg;
    if (w->pool && w->submit_in_done) {
        decode_job again = {.text = "1", .len = 1, .done = on_done, .arg = w};
        w->submit_in_done = decode_pool_submit(w->pool, &again);
    }
    pthread_mutex_lock(&w->lock);
    w->done = 1;
    w->done_thread = pthread_self();
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static int on_then(decode_job *job)
{
    waited_job *w = job->arg;
    pthread_mutex_lock(&w->lock);
    w->then_ran = 1;
    w->held = w->hold;
    pthread_cond_broadcast(&w->cond);
    while (w->hold)
        pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
    if (json_is_array(job->value) && json_array_size(job->value) == 0)
        return ippc_error_set(&job->err, ERR_INVALID, "empty list");
    return 0;
}

static void job_init(waited_job *w, const char *text, budget_account *account)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->job.text = text;
    w->job.len = strlen(text);
    w->job.account = account;
    w->job.done = on_done;
    w->job.then = on_then;
    w->job.arg = w;
}

static void job_wait(waited_job *w)
{
    pthread_mutex_lock(&w->lock);
    while (!w->done)
        pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

static void job_destroy(waited_job *w)
{
    json_decref(w->job.value);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}

/* "[0,1,...,n-1]" */
static char *number_list(size_t n)
{
    char *text = malloc(n * 12 + 3);
    assert_non_null(text);
    size_t k = 0;
    text[k++] = '[';
    for (size_t i = 0; i < n; i++)
        k += (size_t)sprintf(text + k, "%s%zu", i ? "," : "", i);
    text[k++] = ']';
    text[k] = '\0';
    return text;
}

static void test_decodes_on_a_worker(void **state)
{
    (void)state;
    ippc_error err;
    decode_pool *p = decode_pool_start(2, &err);
    assert_non_null(p);
    waited_job w;
    job_init(&w, "{\"a\": [1, 2.5, \"x\"]}", NULL);
    assert_int_equal(decode_pool_submit(p, &w.job), 0);
    job_wait(&w);
    assert_false(w.job.failed);
    assert_true(w.then_ran);
    assert_false(pthread_equal(w.done_thread, pthread_self()));
    json_t *want = json_pack("{s:[i,f,s]}", "a", 1, 2.5, "x");
    assert_true(json_equal(w.job.value, want));
    json_decref(want);
    job_destroy(&w);
    decode_pool_stop(p);
}

static void test_bad_json_and_failing_then(void **state)
{
    (void)state;
    ippc_error err;
    decode_pool *p = decode_pool_start(1, &err);
    waited_job bad, dup, empty;
    job_init(&bad, "[1, 2", NULL);
    job_init(&dup, "{\"a\":1,\"a\":2}", NULL);
    job_init(&empty, "[]", NULL);
    decode_pool_submit(p, &bad.job);
    decode_pool_submit(p, &dup.job);
    decode_pool_submit(p, &empty.job);
    job_wait(&bad);
    job_wait(&dup);
    job_wait(&empty);
    assert_true(bad.job.failed);
    assert_string_equal(bad.job.err.code, ERR_BAD_REQUEST);
    assert_non_null(strstr(bad.job.err.message, "malformed JSON at line 1"));
    assert_false(bad.then_ran);
    assert_null(bad.job.value);
    assert_true(dup.job.failed);
    assert_string_equal(dup.job.err.code, ERR_BAD_REQUEST);
    assert_true(empty.job.failed); /* then() refused it */
    assert_string_equal(empty.job.err.code, ERR_INVALID);
    job_destroy(&bad);
    job_destroy(&dup);
    job_destroy(&empty);
    decode_pool_stop(p);
}

/* A tree over the account's cap is refused (413, with the advice), and a
 * refused parse gives back everything it charged. */
static void test_cap_refuses_and_gives_back(void **state)
{
    (void)state;
    budget held;
    budget_init(&held, 0);
    budget_account account;
    budget_account_init(&account, &held, (size_t)1 << 20);
    char *text = number_list(200000); /* ~1.3 MB of text, ~8 MB of tree */
    waited_job w;
    job_init(&w, text, &account);
    assert_int_equal(decode_json_metered(&w.job, NULL), -1);
    assert_string_equal(w.job.err.code, ERR_TOO_LARGE);
    assert_non_null(strstr(w.job.err.message, "application/octet-stream"));
    assert_int_equal(budget_account_held(&account), 0);
    assert_int_equal(budget_used(&held), 0);
    job_destroy(&w);
    free(text);
}

/* With room in the account but not in the process-wide budget: 503. */
static void test_budget_spent_is_overloaded(void **state)
{
    (void)state;
    budget held;
    budget_init(&held, (size_t)2 << 20);
    budget_account other, account;
    budget_account_init(&other, &held, 0);
    budget_account_init(&account, &held, 0);
    ippc_error err;
    assert_int_equal(budget_take(&other, (size_t)1 << 20, "body", &err), 0);
    char *text = number_list(200000);
    waited_job w;
    job_init(&w, text, &account);
    assert_int_equal(decode_json_metered(&w.job, NULL), -1);
    assert_string_equal(w.job.err.code, ERR_OVERLOADED);
    assert_int_equal(budget_used(&held), (size_t)1 << 20);
    job_destroy(&w);
    free(text);
}

/* A decoded tree stays charged (at least its peak) until the caller frees it
 * and releases the account. */
static void test_tree_stays_charged(void **state)
{
    (void)state;
    budget held;
    budget_init(&held, 0);
    budget_account account;
    budget_account_init(&account, &held, (size_t)64 << 20);
    char *text = number_list(100000);
    waited_job w;
    job_init(&w, text, &account);
    assert_int_equal(decode_json_metered(&w.job, NULL), 0);
    assert_int_equal(json_array_size(w.job.value), 100000);
    /* a json_t per number, plus the list's table */
    assert_true(w.job.peak >= (size_t)100000 * 24);
    assert_true(budget_account_held(&account) >= w.job.peak);
    json_decref(w.job.value);
    w.job.value = NULL;
    budget_account_release(&account);
    assert_int_equal(budget_used(&held), 0);
    job_destroy(&w);
    free(text);
}

static void test_cancelled_parse_is_unavailable(void **state)
{
    (void)state;
    atomic_int cancel;
    atomic_init(&cancel, 1);
    waited_job w;
    job_init(&w, "[1, 2, 3]", NULL);
    assert_int_equal(decode_json_metered(&w.job, &cancel), -1);
    assert_string_equal(w.job.err.code, ERR_UNAVAILABLE);
    job_destroy(&w);
}

static void *stop_pool(void *arg)
{
    decode_pool_stop(arg);
    return NULL;
}

/* Stopping fails the queued jobs (503) at once, refuses new ones, and
 * returns only when the running job is done. */
static void test_stop_with_jobs_queued(void **state)
{
    (void)state;
    ippc_error err;
    decode_pool *p = decode_pool_start(1, &err);
    waited_job running, queued[3];
    job_init(&running, "[1]", NULL);
    running.hold = 1;
    decode_pool_submit(p, &running.job);
    pthread_mutex_lock(&running.lock);
    while (!running.held)
        pthread_cond_wait(&running.cond, &running.lock);
    pthread_mutex_unlock(&running.lock);
    for (int i = 0; i < 3; i++) {
        job_init(&queued[i], "[2]", NULL);
        queued[i].pool = p;
        queued[i].submit_in_done = 1;
        decode_pool_submit(p, &queued[i].job);
    }
    pthread_t stopper;
    assert_int_equal(pthread_create(&stopper, NULL, stop_pool, p), 0);
    for (int i = 0; i < 3; i++) {
        job_wait(&queued[i]);
        assert_true(queued[i].job.failed);
        assert_string_equal(queued[i].job.err.code, ERR_UNAVAILABLE);
        assert_false(queued[i].then_ran);
        assert_int_equal(queued[i].submit_in_done, -1); /* refused while stopping */
    }
    assert_false(running.done);
    pthread_mutex_lock(&running.lock);
    running.hold = 0;
    pthread_cond_broadcast(&running.cond);
    pthread_mutex_unlock(&running.lock);
    pthread_join(stopper, NULL);
    assert_true(running.done);
    assert_false(running.job.failed);
    job_destroy(&running);
    for (int i = 0; i < 3; i++)
        job_destroy(&queued[i]);
}

/* Jansson on other threads is untouched by the pool's allocator. */
static void test_other_threads_allocate_plainly(void **state)
{
    (void)state;
    ippc_error err;
    decode_pool *p = decode_pool_start(1, &err);
    json_t *v = json_pack("{s:[i,i], s:s}", "a", 1, 2, "b", "text");
    char *text = json_dumps(v, JSON_COMPACT);
    assert_string_equal(text, "{\"a\":[1,2],\"b\":\"text\"}");
    free(text);
    json_decref(v);
    decode_pool_stop(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decodes_on_a_worker),
        cmocka_unit_test(test_bad_json_and_failing_then),
        cmocka_unit_test(test_cap_refuses_and_gives_back),
        cmocka_unit_test(test_budget_spent_is_overloaded),
        cmocka_unit_test(test_tree_stays_charged),
        cmocka_unit_test(test_cancelled_parse_is_unavailable),
        cmocka_unit_test(test_stop_with_jobs_queued),
        cmocka_unit_test(test_other_threads_allocate_plainly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
