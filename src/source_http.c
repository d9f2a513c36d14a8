/*
 * source_http: a remote archive (http://, https://, s3://) behind source.h.
 *
 * The object is read in blocks of o->block bytes aligned to the block size; blocks live in a
 * bounded LRU cache. A block is fetched by the first thread that wants it (others wait for it),
 * so different blocks load in parallel and none twice at once. The last bytes of the object,
 * fetched by the open's one request (which also learns the size and ETag), are kept apart: the
 * ZIP end records and usually the central directory are in them. A reader that goes on where
 * the last read ended gets the next few blocks loaded ahead by worker threads, started on the
 * first need; a fork (a daemon detaching after its mount-time reads) first stops them, since
 * threads do not survive one, and the child starts its own on its first need.
 * Once a GET says the object changed, every later read fails with -ESTALE.
 *
 * A load that runs out a whole timeout marks the server down for one more timeout: loads
 * started meanwhile are probes, which get a tenth of the timeout (at least PROBE_MIN_MS), and
 * the first load that succeeds ends it. A probe that fails does not extend it, so on a slow
 * link that a probe cannot cross the next timeout brings full loads back. One failing pread
 * costs the kernel up to three FUSE requests (readahead, then the page alone), and without
 * this each would wait out its own timeout.
 */
#include "source.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "deadline.h"
#include "http.h"
#include "log.h"
#include "s3auth.h"

#define TAIL_BYTES (64u << 10)
#define DEFAULT_CACHE (64ull << 20)
#define DEFAULT_TIMEOUT 30
#define WORKERS 4
#define AHEAD_MAX 4   /* blocks loaded ahead of a sequential reader */
#define QUEUE_MAX 32
#define PROBE_MIN_MS 250 /* the least deadline of a load while the server is down */

enum { B_LOADING, B_READY, B_FAILED };

struct block {
    uint64_t idx;
    int state, err;
    unsigned refs;
    bool hashed;                /* findable; a failed block is unhashed and freed by its last user */
    char *data;
    size_t len;
    struct block *hnext;        /* hash chain */
    struct block *prev, *next;  /* LRU of ready blocks, most recent first */
};

struct http_source {
    struct source s;            /* first: a struct source * is a struct http_source * */
    struct http *http;
    uint64_t block, cache_bytes;
    unsigned timeout_s;
    char *tail;                 /* the open's bytes: [tail_off, tail_off + tail_len) */
    uint64_t tail_off;
    size_t tail_len;
    pthread_mutex_t mu;         /* guards everything below */
    pthread_cond_t done;        /* a block stopped loading */
    pthread_cond_t work;        /* the queue has work, or stopping */
    struct block **table;
    size_t nbuckets;            /* a power of two */
    struct block *lru_head, *lru_tail;
    uint64_t used;              /* bytes of hashed blocks, loading ones included */
    bool stale;
    bool failing;               /* the last load failed (and was logged) */
    struct timespec down_until; /* a load ran out its deadline: probe only, until then */
    uint64_t queue[QUEUE_MAX];  /* blocks to load ahead, a ring */
    unsigned qhead, qlen;
    pthread_t workers[WORKERS];
    unsigned nworkers;
    bool stopping;
    struct http_source *live_next; /* in the list of live sources (live_mu) */
    uint64_t seq_end;           /* where the last read ended */
    uint64_t seq_block;         /* the last read's last block */
    uint64_t streak;            /* blocks entered by reads that went on where the last ended */
    char name[];
};

/* ---- the table of blocks and the LRU; all with mu held ---- */

static struct block **bucket(struct http_source *hs, uint64_t idx)
{
    return &hs->table[(idx * 0x9E3779B97F4A7C15ull >> 32) & (hs->nbuckets - 1)];
}

static struct block *lookup(struct http_source *hs, uint64_t idx)
{
    struct block *b = *bucket(hs, idx);
    while (b && b->idx != idx)
        b = b->hnext;
    return b;
}

static void unhash(struct http_source *hs, struct block *b)
{
    struct block **p = bucket(hs, b->idx);
    while (*p != b)
        p = &(*p)->hnext;
    *p = b->hnext;
    b->hashed = false;
    hs->used -= b->len;
}

static void lru_unlink(struct http_source *hs, struct block *b)
{
    *(b->prev ? &b->prev->next : &hs->lru_head) = b->next;
    *(b->next ? &b->next->prev : &hs->lru_tail) = b->prev;
    b->prev = b->next = NULL;
}

static void lru_front(struct http_source *hs, struct block *b)
{
    b->next = hs->lru_head;
    *(hs->lru_head ? &hs->lru_head->prev : &hs->lru_tail) = b;
    hs->lru_head = b;
}

static void block_free(struct block *b)
{
    free(b->data);
    free(b);
}

static void release(struct http_source *hs, struct block *b)
{
    (void)hs;
    if (--b->refs == 0 && !b->hashed)
        block_free(b);
}

/* Drops unused ready blocks, least recent first, until the cache fits its bound. */
static void evict(struct http_source *hs)
{
    struct block *b = hs->lru_tail;
    while (b && hs->used > hs->cache_bytes) {
        struct block *prev = b->prev;
        if (b->refs == 0) {
            lru_unlink(hs, b);
            unhash(hs, b);
            block_free(b);
        }
        b = prev;
    }
}

static size_t block_len(const struct http_source *hs, uint64_t idx)
{
    uint64_t left = hs->s.size - idx * hs->block;
    return (size_t)(left < hs->block ? left : hs->block);
}

/* The block idx, with a reference: the one in the table, or a new loading one that the caller
 * must fill (*mine). NULL when out of memory. */
static struct block *claim(struct http_source *hs, uint64_t idx, bool *mine)
{
    struct block *b = lookup(hs, idx);
    *mine = false;
    if (b) {
        if (b->state == B_READY) {
            lru_unlink(hs, b);
            lru_front(hs, b);
        }
        b->refs++;
        return b;
    }
    b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    *b = (struct block){.idx = idx, .state = B_LOADING, .refs = 1, .hashed = true,
                        .len = block_len(hs, idx)};
    struct block **p = bucket(hs, idx);
    b->hnext = *p;
    *p = b;
    hs->used += b->len;
    *mine = true;
    return b;
}

/* The deadline of a load starting now (mu not held): a timeout, or a probe's while the server
 * is down, and never past limit (NULL: none). Returns whether the load is a probe. */
static bool load_deadline(struct http_source *hs, const struct timespec *limit,
                          struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&hs->mu);
    bool down = deadline_before(&now, &hs->down_until);
    pthread_mutex_unlock(&hs->mu);
    long probe = hs->timeout_s * 100L > PROBE_MIN_MS ? hs->timeout_s * 100L : PROBE_MIN_MS;
    *deadline = now;
    deadline_add_ms(deadline, down ? probe : hs->timeout_s * 1000L);
    if (limit && deadline_before(limit, deadline))
        *deadline = *limit;
    return down;
}

/* Loads a block claimed as mine (mu not held), then wakes its waiters. A load that is not a
 * probe and fails for want of time marks the server down. */
static void fill(struct http_source *hs, struct block *b, const struct timespec *deadline,
                 bool probe)
{
    char msg[320];
    struct http_reply r;
    long n = -ENOMEM;
    b->data = malloc(b->len);
    if (b->data)
        n = http_get(hs->http, b->idx * hs->block, b->len, false, b->data, deadline, true, &r,
                     msg, sizeof msg);
    else
        snprintf(msg, sizeof msg, "%s", strerror(ENOMEM));
    pthread_mutex_lock(&hs->mu);
    if (n < 0) {
        /* The first failure of a run is logged; a change is the caller's to report. */
        if (!hs->stopping && !hs->failing && n != -ESTALE)
            log_error("%s: %s", hs->name, msg);
        hs->failing = true;
        hs->stale |= n == -ESTALE;
        /* ran out of time: http_get gives up with a millisecond or so left */
        if (n == -EIO && !probe && !hs->stopping && deadline_ms_left(deadline) <= 10)
            deadline_in(&hs->down_until, CLOCK_MONOTONIC, hs->timeout_s * 1000L);
        b->state = B_FAILED;
        b->err = n == -ESTALE || n == -ENOMEM ? (int)n : -EIO; /* source.h's promise */
        unhash(hs, b);
    } else {
        hs->failing = false;
        hs->down_until = (struct timespec){0, 0};
        b->state = B_READY;
        lru_front(hs, b);
        evict(hs);
    }
    pthread_cond_broadcast(&hs->done);
    pthread_mutex_unlock(&hs->mu);
}

/* Waits (mu held) until b is loaded or the deadline passes. */
static int wait_loaded(struct http_source *hs, struct block *b, const struct timespec *deadline)
{
    while (b->state == B_LOADING)
        if (pthread_cond_timedwait(&hs->done, &hs->mu, deadline) == ETIMEDOUT &&
            b->state == B_LOADING)
            return -EIO;
    return b->state == B_READY ? 0 : b->err;
}

/* The loaded block idx, with a reference (release it), loading it here when no one is; on
 * failure *out is NULL. A wait for another thread's load lasts until deadline even while the
 * server is down (that load may be the one that finds it back), and when that load fails,
 * this thread tries the block itself, until deadline. */
static int acquire(struct http_source *hs, uint64_t idx, const struct timespec *deadline,
                   struct block **out)
{
    for (;;) {
        bool mine;
        pthread_mutex_lock(&hs->mu);
        struct block *b = hs->stale ? NULL : claim(hs, idx, &mine);
        int rc = hs->stale ? -ESTALE : b ? 0 : -ENOMEM;
        pthread_mutex_unlock(&hs->mu);
        if (rc < 0)
            return rc;
        if (mine) {
            struct timespec load;
            bool probe = load_deadline(hs, deadline, &load);
            fill(hs, b, &load, probe);
        }
        struct timespec now;
        pthread_mutex_lock(&hs->mu);
        rc = wait_loaded(hs, b, deadline);
        clock_gettime(CLOCK_MONOTONIC, &now);
        bool again = rc == -EIO && !mine && b->state == B_FAILED && !hs->stopping &&
                     deadline_before(&now, deadline);
        if (rc < 0)
            release(hs, b);
        pthread_mutex_unlock(&hs->mu);
        if (!again) {
            *out = rc < 0 ? NULL : b;
            return rc;
        }
    }
}

/* ---- loading ahead ---- */

static void *worker(void *arg)
{
    struct http_source *hs = arg;
    pthread_mutex_lock(&hs->mu);
    for (;;) {
        while (!hs->stopping && hs->qlen == 0)
            pthread_cond_wait(&hs->work, &hs->mu);
        if (hs->stopping)
            break;
        uint64_t idx = hs->queue[hs->qhead];
        hs->qhead = (hs->qhead + 1) % QUEUE_MAX;
        hs->qlen--;
        bool mine;
        struct block *b = hs->stale ? NULL : claim(hs, idx, &mine);
        if (b && mine) {
            pthread_mutex_unlock(&hs->mu);
            struct timespec deadline;
            bool probe = load_deadline(hs, NULL, &deadline);
            fill(hs, b, &deadline, probe);
            pthread_mutex_lock(&hs->mu);
        }
        if (b)
            release(hs, b);
    }
    pthread_mutex_unlock(&hs->mu);
    return NULL;
}

static bool queued(const struct http_source *hs, uint64_t idx)
{
    for (unsigned i = 0; i < hs->qlen; i++)
        if (hs->queue[(hs->qhead + i) % QUEUE_MAX] == idx)
            return true;
    return false;
}

/* Asks the workers (mu held) for block idx unless it is there, asked for, or past the end. */
static void schedule(struct http_source *hs, uint64_t idx)
{
    if (idx * hs->block >= hs->s.size || hs->qlen == QUEUE_MAX || lookup(hs, idx) ||
        queued(hs, idx))
        return;
    while (!hs->stopping && hs->nworkers < WORKERS &&
           pthread_create(&hs->workers[hs->nworkers], NULL, worker, hs) == 0)
        hs->nworkers++;
    if (hs->nworkers == 0)
        return; /* no threads to spare: the reader loads its blocks itself */
    hs->queue[(hs->qhead + hs->qlen) % QUEUE_MAX] = idx;
    hs->qlen++;
    pthread_cond_signal(&hs->work);
}

/* The blocks of a read past its first load in parallel. A reader that goes on where the last
 * read ended, into a new block, also gets blocks after this read: one more for each block it
 * has so gone on into (up to AHEAD_MAX), so that a short run (a random read through an index
 * decodes one span) costs little more than itself and a long one keeps requests in flight. */
static void plan(struct http_source *hs, uint64_t off, uint64_t first, uint64_t last,
                 uint64_t end)
{
    uint64_t cache_blocks = hs->cache_bytes / hs->block;
    uint64_t most = cache_blocks / 4 < AHEAD_MAX ? cache_blocks / 4 : AHEAD_MAX;
    pthread_mutex_lock(&hs->mu);
    bool onward = off == hs->seq_end && off > 0;
    bool crossed = onward && last > hs->seq_block;
    hs->streak = !onward ? 0 : crossed ? hs->streak + 1 : hs->streak;
    hs->seq_end = end;
    hs->seq_block = last;
    for (uint64_t i = first + 1; i <= last; i++)
        schedule(hs, i);
    uint64_t ahead = crossed ? (hs->streak < most ? hs->streak : most) : 0;
    for (uint64_t i = 1; !hs->stale && i <= ahead; i++)
        schedule(hs, last + i);
    pthread_mutex_unlock(&hs->mu);
}

/* ---- the source ---- */

static ssize_t http_source_pread(struct source *s, void *buf, size_t len, uint64_t off)
{
    struct http_source *hs = (struct http_source *)s;
    if (off >= s->size)
        return 0;
    len = s->size - off < len ? (size_t)(s->size - off) : len;
    if (len == 0)
        return 0;
    pthread_mutex_lock(&hs->mu);
    bool stale = hs->stale;
    pthread_mutex_unlock(&hs->mu);
    if (stale)
        return -ESTALE;
    if (off >= hs->tail_off && off + len <= hs->tail_off + hs->tail_len) {
        memcpy(buf, hs->tail + (off - hs->tail_off), len);
        return (ssize_t)len;
    }
    struct timespec deadline;
    deadline_in(&deadline, CLOCK_MONOTONIC, hs->timeout_s * 1000L);
    uint64_t first = off / hs->block, last = (off + len - 1) / hs->block;
    plan(hs, off, first, last, off + len);
    for (uint64_t i = first; i <= last; i++) {
        struct block *b;
        int rc = acquire(hs, i, &deadline, &b);
        if (rc < 0)
            return rc;
        uint64_t from = i == first ? off - i * hs->block : 0;
        uint64_t to = i == last ? off + len - i * hs->block : b->len;
        memcpy((char *)buf + (i * hs->block + from - off), b->data + from, to - from);
        pthread_mutex_lock(&hs->mu);
        release(hs, b);
        pthread_mutex_unlock(&hs->mu);
    }
    return (ssize_t)len;
}

/* Ends the workers (after their loads in flight); for_good leaves them ended. */
static void stop_workers(struct http_source *hs, bool for_good)
{
    pthread_mutex_lock(&hs->mu);
    hs->stopping = true;
    pthread_cond_broadcast(&hs->work);
    unsigned n = hs->nworkers;
    pthread_mutex_unlock(&hs->mu);
    for (unsigned i = 0; i < n; i++)
        pthread_join(hs->workers[i], NULL);
    pthread_mutex_lock(&hs->mu);
    hs->nworkers = 0;
    hs->stopping = for_good;
    pthread_mutex_unlock(&hs->mu);
}

/* ---- forks: every live source's workers stop before one ---- */

static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static struct http_source *live;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void before_fork(void)
{
    pthread_mutex_lock(&live_mu);
    for (struct http_source *hs = live; hs; hs = hs->live_next)
        stop_workers(hs, false);
}

static void after_fork(void)
{
    pthread_mutex_unlock(&live_mu);
}

static void install_atfork(void)
{
    pthread_atfork(before_fork, after_fork, after_fork);
}

static void live_add(struct http_source *hs)
{
    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_lock(&live_mu);
    hs->live_next = live;
    live = hs;
    pthread_mutex_unlock(&live_mu);
}

static void live_remove(struct http_source *hs)
{
    pthread_mutex_lock(&live_mu);
    struct http_source **p = &live;
    while (*p && *p != hs)
        p = &(*p)->live_next;
    if (*p)
        *p = hs->live_next;
    pthread_mutex_unlock(&live_mu);
}

static void http_source_close(struct source *s)
{
    struct http_source *hs = (struct http_source *)s;
    live_remove(hs);
    if (hs->http)
        http_cancel(hs->http); /* workers loading ahead stop now, not at their deadline */
    stop_workers(hs, true);
    for (size_t i = 0; i < hs->nbuckets; i++)
        while (hs->table[i]) {
            struct block *b = hs->table[i];
            hs->table[i] = b->hnext;
            block_free(b);
        }
    free(hs->table);
    free(hs->tail);
    http_free(hs->http);
    pthread_cond_destroy(&hs->work);
    pthread_cond_destroy(&hs->done);
    pthread_mutex_destroy(&hs->mu);
    free(hs);
}

static const struct source_ops http_source_ops = {http_source_pread, http_source_close};

static struct http_source *source_new(const char *name, const struct source_options *o)
{
    uint64_t block = o->block ? o->block : SOURCE_DEFAULT_BLOCK;
    uint64_t cache = o->cache_bytes ? o->cache_bytes : DEFAULT_CACHE;
    size_t want = (size_t)(cache / block) * 2 + 2 * QUEUE_MAX, n = 64;
    while (n < want && n < (1u << 20))
        n *= 2;
    struct http_source *hs = calloc(1, sizeof *hs + strlen(name) + 1);
    if (!hs)
        return NULL;
    hs->table = calloc(n, sizeof *hs->table);
    if (!hs->table) {
        free(hs);
        return NULL;
    }
    strcpy(hs->name, name);
    hs->nbuckets = n;
    hs->block = block;
    hs->cache_bytes = cache;
    hs->timeout_s = o->timeout_s ? o->timeout_s : DEFAULT_TIMEOUT;
    hs->s = (struct source){.ops = &http_source_ops, .fd = -1, .remote = true, .name = hs->name};
    pthread_mutex_init(&hs->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines are monotonic */
    pthread_cond_init(&hs->done, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&hs->work, NULL);
    return hs;
}

static int connect_client(struct http_source *hs, const char *url, const char *endpoint,
                          char *msg, size_t msg_len)
{
    struct s3_target t = {0};
    struct http_config c = {.url = url, .timeout_s = hs->timeout_s};
    if (strncasecmp(url, "s3://", 5) == 0) {
        int rc = s3_resolve(url, endpoint, &t, msg, msg_len);
        if (rc < 0)
            return rc;
        c = (struct http_config){.url = t.url, .sigv4 = t.sigv4, .userpwd = t.userpwd,
                                 .token = t.token, .timeout_s = hs->timeout_s};
    }
    int rc = http_new(&c, &hs->http);
    s3_target_free(&t);
    if (rc < 0)
        snprintf(msg, msg_len, "%s", rc == -ELIBACC ? "cannot load libcurl.so.4 (install libcurl4)"
                                                    : strerror(-rc));
    return rc;
}

/* The open's one GET: the last bytes of the object, its size and its ETag. */
static int fetch_tail(struct http_source *hs, char *msg, size_t msg_len)
{
    char why[320];
    struct http_reply r;
    struct timespec deadline;
    deadline_in(&deadline, CLOCK_MONOTONIC, hs->timeout_s * 1000L);
    hs->tail = malloc(TAIL_BYTES);
    long n = hs->tail ? http_get(hs->http, 0, TAIL_BYTES, true, hs->tail, &deadline, false, &r,
                                 why, sizeof why)
                      : -ENOMEM;
    if (n < 0) {
        snprintf(msg, msg_len, "%s", n == -ENOMEM ? strerror(ENOMEM) : why);
        return (int)n;
    }
    hs->s.size = r.total;
    hs->tail_off = r.start;
    hs->tail_len = (size_t)n;
    int rc = http_pin(hs->http, r.etag, r.total);
    if (rc < 0)
        snprintf(msg, msg_len, "%s", strerror(-rc));
    return rc;
}

int source_http_open(const char *url, const struct source_options *o, struct source **out,
                     char *msg, size_t msg_len)
{
    static const struct source_options defaults;
    char name[1024];
    source_display(url, name, sizeof name);
    struct http_source *hs = source_new(name, o ? o : &defaults);
    if (!hs) {
        snprintf(msg, msg_len, "%s", strerror(ENOMEM));
        return -ENOMEM;
    }
    int rc = connect_client(hs, url, o ? o->endpoint : NULL, msg, msg_len);
    if (rc == 0)
        rc = fetch_tail(hs, msg, msg_len);
    if (rc < 0) {
        http_source_close(&hs->s);
        return rc;
    }
    live_add(hs);
    *out = &hs->s;
    return 0;
}
