/* decode_pool.c — JSON decoding on worker threads, metered (see decode_pool.h).
 *
 * The meter is thread-local: jansson's allocator hooks are process-wide, but
 * only a thread inside decode_json_metered has one, so every other thread's
 * jansson calls cost one thread-local load more than plain malloc.  The meter
 * charges the job's budget account in CHARGE_STEP steps (one atomic operation
 * per step, not per number) and refuses an allocation once a charge is
 * refused; jansson then fails the parse with "out of memory", which the meter
 * turns into the budget's error.  Frees on the metered thread lower the live
 * count, so a parse is charged for its peak, not for its garbage.
 */
#include "decode_pool.h"

#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Budget charges are taken this many bytes at a time. */
#define CHARGE_STEP ((size_t)4 << 20)
/* malloc_usable_size exceeds a request by at most this much (glibc: two
 * words of header rounding plus alignment). */
#define MALLOC_SLACK 32
/* A parse that held this much gives its freed pages back to the system. */
#define TRIM_AFTER ((size_t)16 << 20)

struct decode_pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    decode_job *head, *tail;
    int stopping;
    atomic_int cancel; /* read by metered allocations without the lock */
    pthread_t *threads;
    int n_threads;
};

/* ------------------------------------------------------------------ meter */

typedef struct meter {
    budget_account *account; /* NULL: count only */
    size_t used;             /* bytes jansson holds now */
    size_t charged;          /* bytes charged to account */
    size_t peak;
    const atomic_int *cancel;
    int refused; /* an allocation was refused: err says why */
    ippc_error err;
} meter;

static _Thread_local meter *active_meter;

/* Charges what an allocation of n bytes needs beyond what is charged. */
static int meter_charge(meter *m, size_t n)
{
    if (n > SIZE_MAX / 2 - m->used)
        return ippc_error_set(&m->err, ERR_TOO_LARGE, "JSON value too large to decode");
    size_t need = m->used + n + MALLOC_SLACK;
    if (need <= m->charged || !m->account)
        return 0;
    size_t more = need - m->charged;
    size_t take = more < CHARGE_STEP ? CHARGE_STEP : more;
    /* Near the account's cap, a step would be refused where what is needed
     * still fits. */
    if (m->account->limit) {
        size_t held = budget_account_held(m->account);
        size_t room = held < m->account->limit ? m->account->limit - held : 0;
        if (take > room && more <= room)
            take = room;
    }
    if (budget_take(m->account, take, "decoded JSON", &m->err) < 0)
        return -1;
    m->charged += take;
    return 0;
}

static void *metered_malloc(size_t n)
{
    meter *m = active_meter;
    if (!m)
        return malloc(n);
    if (m->refused)
        return NULL;
    if (m->cancel && atomic_load_explicit(m->cancel, memory_order_relaxed)) {
        m->refused = 1;
        ippc_error_set(&m->err, ERR_UNAVAILABLE, "the controller is stopping");
        return NULL;
    }
    if (meter_charge(m, n) < 0) {
        m->refused = 1;
        return NULL;
    }
    void *p = malloc(n);
    if (p) {
        m->used += malloc_usable_size(p);
        if (m->used > m->peak)
            m->peak = m->used;
    }
    return p;
}

static void metered_free(void *p)
{
    meter *m = active_meter;
    if (m && p) {
        size_t n = malloc_usable_size(p);
        m->used = n < m->used ? m->used - n : 0;
    }
    free(p);
}

static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

/* Plain malloc/free on every thread without a meter, so memory jansson
 * allocated before the hooks (or on another thread) may be freed through
 * them and the other way round: installing them late is safe. */
static void install_hooks(void)
{
    json_set_alloc_funcs(metered_malloc, metered_free);
}

int decode_json_metered(decode_job *job, const atomic_int *cancel)
{
    pthread_once(&hooks_once, install_hooks);
    meter m = {.account = job->account, .cancel = cancel};
    json_error_t jerr;
    active_meter = &m;
    json_t *v = json_loadb(job->text, job->len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    active_meter = NULL;
    job->peak = m.peak;
    if (v) {
        /* The tree keeps what was charged; the caller releases it with the
         * tree.  (charged - used is at most one step of slack.) */
        job->value = v;
        return 0;
    }
    if (m.account && m.charged)
        budget_give(m.account, m.charged);
    if (!m.refused)
        return ippc_error_set(&job->err, ERR_BAD_REQUEST,
                              "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column,
                              jerr.text);
    if (strcmp(m.err.code, ERR_TOO_LARGE) == 0)
        return ippc_error_set(&job->err, ERR_TOO_LARGE,
                              "JSON value too large to decode (it needs more than %zu MiB "
                              "here); send arrays as application/octet-stream",
                              (m.account && m.account->limit ? m.account->limit : m.charged) >> 20);
    job->err = m.err;
    return -1;
}

/* ------------------------------------------------------------------- pool */

static void run_job(decode_pool *p, decode_job *job)
{
    job->failed = decode_json_metered(job, &p->cancel) < 0;
    if (!job->failed && job->then && job->then(job) < 0)
        job->failed = 1;
    /* jansson's many small blocks fragment the heap; without a trim the
     * freed tree stays in the process's resident set. */
    if (job->peak >= TRIM_AFTER)
        malloc_trim(0);
    job->done(job);
}

static void *worker_main(void *arg)
{
    decode_pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cond, &p->lock);
        decode_job *job = p->head;
        if (job) {
            p->head = job->next;
            if (!p->head)
                p->tail = NULL;
        }
        pthread_mutex_unlock(&p->lock);
        if (!job)
            return NULL;
        run_job(p, job);
    }
}

decode_pool *decode_pool_start(int workers, ippc_error *err)
{
    decode_pool *p = calloc(1, sizeof *p);
    if (p && workers > 0)
        p->threads = calloc((size_t)workers, sizeof *p->threads);
    if (!p || !p->threads) {
        free(p);
        ippc_error_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    atomic_init(&p->cancel, 0);
    pthread_once(&hooks_once, install_hooks);
    for (; p->n_threads < workers; p->n_threads++) {
        if (pthread_create(&p->threads[p->n_threads], NULL, worker_main, p) != 0) {
            ippc_error_set(err, ERR_INTERNAL, "cannot start decode threads");
            decode_pool_stop(p);
            return NULL;
        }
        pthread_setname_np(p->threads[p->n_threads], "ippc-decode");
    }
    return p;
}

int decode_pool_submit(decode_pool *p, decode_job *job)
{
    job->next = NULL;
    job->value = NULL;
    job->failed = 0;
    job->peak = 0;
    memset(&job->err, 0, sizeof job->err);
    pthread_mutex_lock(&p->lock);
    if (p->stopping) {
        pthread_mutex_unlock(&p->lock);
        return -1;
    }
    if (p->tail)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

void decode_pool_stop(decode_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    atomic_store(&p->cancel, 1);
    decode_job *queued = p->head;
    p->head = p->tail = NULL;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    while (queued) {
        decode_job *next = queued->next;
        queued->failed = 1;
        ippc_error_set(&queued->err, ERR_UNAVAILABLE, "the controller is stopping");
        queued->done(queued);
        queued = next;
    }
    for (int i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p);
}
