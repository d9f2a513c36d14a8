/*
 * test_cache: the bounded LRU chunk cache (src/cache.c), single-threaded semantics and
 * concurrent use. Run under ASan/LSan too: every chunk handed to the cache must be freed exactly
 * once, and a referenced chunk must stay readable after eviction until it is put back.
 */
#include "cache.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* ------------------------------------------------------------------------------------------ */
/* Helpers. */

/* The byte at position i of chunk (a, b): lets any reader verify a chunk it did not make. */
static unsigned char pattern(uint64_t a, uint64_t b, size_t i)
{
    uint64_t x = a * 0x9E3779B97F4A7C15ull + b * 0xD1B54A32D192ED03ull + i * 0x2545F4914F6CDD1Dull;
    return (unsigned char)(x >> 56 ^ x >> 13);
}

static unsigned char *make_chunk(uint64_t a, uint64_t b, size_t len)
{
    unsigned char *p = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        p[i] = pattern(a, b, i);
    return p;
}

static bool chunk_ok(const unsigned char *p, size_t len, uint64_t a, uint64_t b, size_t want)
{
    if (len != want || (len && !p))
        return false;
    for (size_t i = 0; i < len; i++)
        if (p[i] != pattern(a, b, i))
            return false;
    return true;
}

/* Is e's chunk the one made by make_chunk(a, b, want)? */
static bool entry_ok(const struct cache_entry *e, uint64_t a, uint64_t b, size_t want)
{
    size_t n = 0;
    const unsigned char *d = cache_data(e, &n);
    return chunk_ok(d, n, a, b, want);
}

/* Adds chunk (a, b) of len bytes through the reader protocol (get, fill, put). */
static bool add(struct cache *c, uint64_t a, uint64_t b, size_t len)
{
    struct cache_entry *e = NULL;
    int rc = cache_get(c, a, b, &e);
    if (!CHECK_EQ_I64(rc, 0) || !CHECK(e != NULL)) {
        if (rc == 1 && e)
            cache_put(c, e);
        return false;
    }
    cache_fill(c, e, make_chunk(a, b, len), len);
    size_t n = 0;
    const unsigned char *d = cache_data(e, &n);
    bool ok = CHECK(chunk_ok(d, n, a, b, len));
    cache_put(c, e);
    return ok;
}

/* Is (a, b) cached? A hit counts as a use (moves it to the front); a miss leaves no trace. */
static bool present(struct cache *c, uint64_t a, uint64_t b)
{
    struct cache_entry *e = NULL;
    int rc = cache_get(c, a, b, &e);
    if (rc == 1) {
        cache_put(c, e);
        return true;
    }
    if (rc == 0)
        cache_fail(c, e, -ENOENT);
    return false;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* Single-threaded behaviour. */

static void test_miss_fill_hit(void)
{
    struct cache *c = cache_new(1 << 20, 4096);
    if (!CHECK(c != NULL))
        return;
    CHECK_EQ_U64(cache_bytes(c), 0);

    struct cache_entry *e = NULL;
    CHECK_EQ_I64(cache_get(c, 1, 2, &e), 0); /* a miss: claimed */
    CHECK(e != NULL);
    CHECK_EQ_U64(cache_bytes(c), 0);          /* a claimed chunk holds no bytes yet */
    unsigned char *data = make_chunk(1, 2, 1000);
    cache_fill(c, e, data, 1000);
    size_t n = 0;
    const unsigned char *d = cache_data(e, &n);
    CHECK(d == data); /* the cache owns the buffer it was given, no copy */
    CHECK_EQ_U64(n, 1000);
    CHECK(chunk_ok(d, n, 1, 2, 1000));
    CHECK_EQ_U64(cache_bytes(c), 1000);
    cache_put(c, e);
    CHECK_EQ_U64(cache_bytes(c), 1000); /* put keeps the chunk cached */

    /* a second get hits */
    struct cache_entry *e2 = NULL;
    CHECK_EQ_I64(cache_get(c, 1, 2, &e2), 1);
    CHECK(e2 != NULL);
    d = cache_data(e2, &n);
    CHECK(d == data);
    CHECK(chunk_ok(d, n, 1, 2, 1000));
    /* two references at once */
    struct cache_entry *e3 = NULL;
    CHECK_EQ_I64(cache_get(c, 1, 2, &e3), 1);
    CHECK(e3 == e2);
    cache_put(c, e3);
    cache_put(c, e2);

    /* keys are the pair: (2, 1), (1, 3), (0, 2) are other chunks */
    CHECK(!present(c, 2, 1));
    CHECK(!present(c, 1, 3));
    CHECK(!present(c, 0, 2));
    CHECK(present(c, 1, 2));
    CHECK_EQ_U64(cache_bytes(c), 1000);

    /* a zero-length chunk is a chunk */
    CHECK(add(c, 5, 5, 0));
    CHECK(present(c, 5, 5));
    CHECK_EQ_U64(cache_bytes(c), 1000);

    /* extreme keys */
    CHECK(add(c, UINT64_MAX, UINT64_MAX, 10));
    CHECK(add(c, 0, UINT64_MAX, 11));
    CHECK(add(c, UINT64_MAX, 0, 12));
    CHECK(present(c, UINT64_MAX, UINT64_MAX));
    CHECK(present(c, 0, UINT64_MAX));
    CHECK(present(c, UINT64_MAX, 0));
    CHECK_EQ_U64(cache_bytes(c), 1033);
    cache_free(c);
    cache_free(NULL);
}

/* Many keys in a roomy cache: all stay, all are found (hash chains, table size). */
static void test_many_keys(void)
{
    uint64_t expected[] = {4096, 0, 1 << 20};
    for (size_t s = 0; s < 3; s++) {
        check_context("cache_new(1 GiB, %llu)", (unsigned long long)expected[s]);
        struct cache *c = cache_new(1 << 30, expected[s]);
        int bad = 0;
        for (uint64_t i = 0; i < 5000; i++)
            if (!add(c, i % 7, i * 1000003u, 8))
                bad++;
        CHECK_EQ_U64(cache_bytes(c), 5000 * 8);
        for (uint64_t i = 0; i < 5000; i++) {
            struct cache_entry *e = NULL;
            if (cache_get(c, i % 7, i * 1000003u, &e) != 1) {
                bad++;
                if (e)
                    cache_fail(c, e, -EIO);
                continue;
            }
            if (!entry_ok(e, i % 7, i * 1000003u, 8))
                bad++;
            cache_put(c, e);
        }
        CHECK_EQ_I64(bad, 0);
        cache_free(c);
    }
}

/* The bound: bytes held never exceed max_bytes, and the least recently used chunks go first. */
static void test_bound(void)
{
    struct cache *c = cache_new(1000, 100);
    int over = 0;
    for (uint64_t i = 0; i < 50; i++) {
        add(c, 0, i, 100);
        if (cache_bytes(c) > 1000)
            over++;
    }
    CHECK_EQ_I64(over, 0);
    CHECK_EQ_U64(cache_bytes(c), 1000);
    /* exactly the last ten remain (probing the absent ones leaves no trace) */
    int wrong = 0;
    for (uint64_t i = 0; i < 40; i++)
        wrong += present(c, 0, i);
    for (uint64_t i = 40; i < 50; i++)
        wrong += !present(c, 0, i);
    CHECK_EQ_I64(wrong, 0);
    CHECK_EQ_U64(cache_bytes(c), 1000);

    /* chunks of uneven sizes: still bounded, and as full as the sizes allow */
    over = 0;
    for (uint64_t i = 0; i < 200; i++) {
        add(c, 1, i, 1 + (size_t)(i * 37 % 300));
        if (cache_bytes(c) > 1000)
            over++;
        if (cache_bytes(c) + 300 <= 1000 && i > 20)
            over++; /* evicted more than needed: at most one chunk (< 300) of slack */
    }
    CHECK_EQ_I64(over, 0);
    cache_free(c);
}

static void test_lru_order(void)
{
    struct cache *c = cache_new(1000, 100);
    for (uint64_t i = 0; i < 10; i++)
        add(c, 3, i, 100);
    CHECK_EQ_U64(cache_bytes(c), 1000);
    /* use 0 and 1: now 2 is the least recently used */
    struct cache_entry *e;
    CHECK_EQ_I64(cache_get(c, 3, 0, &e), 1);
    cache_put(c, e);
    CHECK_EQ_I64(cache_get(c, 3, 1, &e), 1);
    cache_put(c, e);
    add(c, 3, 10, 100); /* evicts 2 */
    CHECK(!present(c, 3, 2));
    add(c, 3, 11, 100); /* evicts 3 */
    CHECK(!present(c, 3, 3));
    /* order from least to most recent is now 4..9, 0, 1, 10, 11 */
    add(c, 3, 12, 250); /* evicts 4, 5, 6 */
    CHECK(!present(c, 3, 4));
    CHECK(!present(c, 3, 5));
    CHECK(!present(c, 3, 6));
    CHECK_EQ_U64(cache_bytes(c), 950);
    /* the survivors; probing them in this order keeps their relative order */
    CHECK(present(c, 3, 7));
    CHECK(present(c, 3, 8));
    CHECK(present(c, 3, 9));
    CHECK(present(c, 3, 0));
    CHECK(present(c, 3, 1));
    CHECK(present(c, 3, 10));
    CHECK(present(c, 3, 11));
    CHECK(present(c, 3, 12));
    /* cache_insert puts a chunk at the front too */
    cache_insert(c, 3, 13, make_chunk(3, 13, 100), 100); /* evicts 7 */
    CHECK(!present(c, 3, 7));
    CHECK(present(c, 3, 13));
    CHECK(present(c, 3, 8));
    CHECK_EQ_U64(cache_bytes(c), 950);
    cache_free(c);
}

/* A chunk larger than the bound serves the read that made it and stays until displaced. */
static void test_oversized(void)
{
    struct cache *c = cache_new(1000, 100);
    for (uint64_t i = 0; i < 5; i++)
        add(c, 4, i, 100);
    struct cache_entry *e;
    CHECK_EQ_I64(cache_get(c, 4, 100, &e), 0);
    cache_fill(c, e, make_chunk(4, 100, 5000), 5000);

    CHECK(entry_ok(e, 4, 100, 5000));
    cache_put(c, e);
    CHECK_EQ_U64(cache_bytes(c), 5000); /* everything else went, the big one stayed */
    for (uint64_t i = 0; i < 5; i++)
        CHECK(!present(c, 4, i));
    CHECK(present(c, 4, 100));
    CHECK_EQ_U64(cache_bytes(c), 5000);
    /* hitting it does not evict it */
    CHECK(present(c, 4, 100));
    /* the next arrival displaces it */
    add(c, 4, 200, 10);
    CHECK_EQ_U64(cache_bytes(c), 10);
    CHECK(!present(c, 4, 100));
    CHECK(present(c, 4, 200));
    /* an oversized cache_insert: stays alone */
    cache_insert(c, 4, 300, make_chunk(4, 300, 2000), 2000);
    CHECK_EQ_U64(cache_bytes(c), 2000);
    CHECK(present(c, 4, 300));
    CHECK(!present(c, 4, 200));
    /* a bound of zero keeps just the most recent chunk */
    struct cache *z = cache_new(0, 0);
    add(z, 0, 1, 10);
    CHECK_EQ_U64(cache_bytes(z), 10);
    add(z, 0, 2, 20);
    CHECK_EQ_U64(cache_bytes(z), 20);
    CHECK(!present(z, 0, 1));
    CHECK(present(z, 0, 2));
    cache_free(z);
    cache_free(c);
}

/* cache_insert: adds an unasked-for chunk; an existing or in-progress one wins. */
static void test_insert(void)
{
    struct cache *c = cache_new(10000, 100);
    cache_insert(c, 5, 5, make_chunk(5, 5, 100), 100);
    CHECK_EQ_U64(cache_bytes(c), 100);
    struct cache_entry *e;

    CHECK_EQ_I64(cache_get(c, 5, 5, &e), 1);
    CHECK(entry_ok(e, 5, 5, 100));
    cache_put(c, e);

    /* present: the new data is freed (LSan reports it otherwise), the old one stays */
    unsigned char *other = make_chunk(9, 9, 100);
    cache_insert(c, 5, 5, other, 100);
    CHECK_EQ_U64(cache_bytes(c), 100);
    CHECK_EQ_I64(cache_get(c, 5, 5, &e), 1);
    CHECK(entry_ok(e, 5, 5, 100));
    /* ...also while someone holds it */
    cache_insert(c, 5, 5, make_chunk(9, 9, 77), 77);
    CHECK(entry_ok(e, 5, 5, 100));
    cache_put(c, e);
    CHECK_EQ_U64(cache_bytes(c), 100);

    /* being filled: an insert completes it, and the filler's own late fill is dropped */
    CHECK_EQ_I64(cache_get(c, 6, 6, &e), 0);
    CHECK(!cache_is_ready(c, e));
    cache_insert(c, 6, 6, make_chunk(6, 6, 200), 200);
    CHECK(cache_is_ready(c, e));
    CHECK_EQ_U64(cache_bytes(c), 300);
    cache_fill(c, e, make_chunk(9, 9, 300), 300); /* freed (LSan would report it otherwise) */
    CHECK(entry_ok(e, 6, 6, 200));
    cache_put(c, e);
    CHECK_EQ_U64(cache_bytes(c), 300);
    CHECK_EQ_I64(cache_get(c, 6, 6, &e), 1);
    CHECK(entry_ok(e, 6, 6, 200));
    cache_put(c, e);

    /* a filler that fails after an insert completed its chunk leaves the chunk in place */
    CHECK_EQ_I64(cache_get(c, 8, 8, &e), 0);
    cache_insert(c, 8, 8, make_chunk(8, 8, 10), 10);
    cache_fail(c, e, -EIO);
    CHECK_EQ_I64(cache_get(c, 8, 8, &e), 1);
    CHECK(entry_ok(e, 8, 8, 10));
    cache_put(c, e);

    /* after a failed fill the key is free again: insert works */
    CHECK_EQ_I64(cache_get(c, 7, 7, &e), 0);
    cache_fail(c, e, -EIO);
    cache_insert(c, 7, 7, make_chunk(7, 7, 50), 50);
    CHECK_EQ_I64(cache_get(c, 7, 7, &e), 1);
    CHECK(entry_ok(e, 7, 7, 50));
    cache_put(c, e);
    CHECK_EQ_U64(cache_bytes(c), 360);
    cache_free(c);
}

/* A failed fill is not cached: the next get claims the chunk again. */
static void test_fail_single(void)
{
    struct cache *c = cache_new(10000, 100);
    struct cache_entry *e;
    CHECK_EQ_I64(cache_get(c, 8, 8, &e), 0);
    cache_fail(c, e, -EIO);
    CHECK_EQ_U64(cache_bytes(c), 0);
    CHECK_EQ_I64(cache_get(c, 8, 8, &e), 0);
    cache_fail(c, e, -ENOMEM);
    CHECK_EQ_I64(cache_get(c, 8, 8, &e), 0);
    cache_fill(c, e, make_chunk(8, 8, 10), 10);
    cache_put(c, e);
    CHECK(present(c, 8, 8));
    CHECK_EQ_U64(cache_bytes(c), 10);
    cache_free(c);
}

/* Evicted while referenced: stays readable until the last put (ASan checks the frees). */
static void test_evicted_while_held(void)
{
    struct cache *c = cache_new(1000, 100);
    struct cache_entry *e1, *e1b, *e2;

    CHECK_EQ_I64(cache_get(c, 1, 1, &e1), 0);
    cache_fill(c, e1, make_chunk(1, 1, 600), 600);
    CHECK_EQ_I64(cache_get(c, 1, 1, &e1b), 1); /* a second reader */
    CHECK(e1b == e1);
    add(c, 1, 2, 600); /* evicts (1, 1), held twice */
    CHECK_EQ_U64(cache_bytes(c), 600);
    CHECK(entry_ok(e1, 1, 1, 600));
    cache_put(c, e1);
    CHECK(entry_ok(e1b, 1, 1, 600));
    /* the key is free again: a new (1, 1) is a different entry */
    CHECK_EQ_I64(cache_get(c, 1, 1, &e2), 0);
    CHECK(e2 != e1b);
    cache_fill(c, e2, make_chunk(1, 1, 500), 500); /* evicts (1, 2) */
    CHECK(entry_ok(e1b, 1, 1, 600));
    CHECK(entry_ok(e2, 1, 1, 500));
    cache_put(c, e1b); /* the old one is freed now */
    cache_put(c, e2);
    CHECK_EQ_U64(cache_bytes(c), 500);
    CHECK(!present(c, 1, 2));
    CHECK(present(c, 1, 1));

    /* the filler's own reference survives the eviction its fill triggers later */
    struct cache_entry *big;
    CHECK_EQ_I64(cache_get(c, 2, 0, &big), 0);
    cache_fill(c, big, make_chunk(2, 0, 900), 900);
    for (uint64_t i = 1; i <= 5; i++)
        add(c, 2, i, 400);
    CHECK(cache_bytes(c) <= 1000);
    CHECK(!present(c, 2, 0));
    CHECK(entry_ok(big, 2, 0, 900));
    cache_put(c, big);

    /* evicted by a cache_insert-free add while held; put back, then the cache is freed */
    CHECK_EQ_I64(cache_get(c, 3, 0, &e1), 0);
    cache_fill(c, e1, make_chunk(3, 0, 10), 10);
    add(c, 3, 1, 995);
    CHECK(entry_ok(e1, 3, 0, 10));
    cache_put(c, e1);
    cache_free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Waiters. */

struct waiter_arg {
    struct cache *c;
    uint64_t a, b;
    atomic_int *started;
    int rc;
    bool null_on_err, data_ok;
    size_t want_len;
};

static void *waiter(void *p)
{
    struct waiter_arg *w = p;
    struct cache_entry *e = (struct cache_entry *)w;
    atomic_fetch_add(w->started, 1);
    w->rc = cache_get(w->c, w->a, w->b, &e);
    w->null_on_err = w->rc >= 0 || e == NULL;
    w->data_ok = false;
    if (w->rc == 1) {
        w->data_ok = entry_ok(e, w->a, w->b, w->want_len);
        cache_put(w->c, e);
    } else if (w->rc == 0) {
        cache_fail(w->c, e, -EIO); /* should not happen: someone else holds the claim */
    }
    return NULL;
}

/* Starts n waiters on (a, b) and returns once they are (very likely) blocked in cache_get. */
static void start_waiters(struct cache *c, uint64_t a, uint64_t b, size_t len, int n,
                          pthread_t *th, struct waiter_arg *args, atomic_int *started)
{
    atomic_store(started, 0);
    for (int i = 0; i < n; i++) {
        args[i] = (struct waiter_arg){.c = c, .a = a, .b = b, .started = started,
                                      .want_len = len};
        CHECK(pthread_create(&th[i], NULL, waiter, &args[i]) == 0);
    }
    while (atomic_load(started) < n)
        sleep_ms(1);
    sleep_ms(50);
}

static void test_fail_wakes_waiters(void)
{
    struct cache *c = cache_new(10000, 100);
    pthread_t th[6];
    struct waiter_arg args[6];
    atomic_int started;
    struct cache_entry *e;

    /* fill: every waiter gets the chunk */
    CHECK_EQ_I64(cache_get(c, 1, 1, &e), 0);
    start_waiters(c, 1, 1, 123, 6, th, args, &started);
    cache_fill(c, e, make_chunk(1, 1, 123), 123);
    cache_put(c, e);
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_I64(args[i].rc, 1);
        CHECK(args[i].data_ok);
    }

    /* fail: every waiter gets the error and no entry */
    int errs[] = {-EIO, -ENOMEM, -EFBIG};
    for (int k = 0; k < 3; k++) {
        check_context("cache_fail(%d)", errs[k]);
        CHECK_EQ_I64(cache_get(c, 2, (uint64_t)k, &e), 0);
        start_waiters(c, 2, (uint64_t)k, 0, 6, th, args, &started);
        cache_fail(c, e, errs[k]);
        for (int i = 0; i < 6; i++) {
            pthread_join(th[i], NULL);
            CHECK_EQ_I64(args[i].rc, errs[k]);
            CHECK(args[i].null_on_err);
        }
        /* not cached: the next reader claims it */
        CHECK(!present(c, 2, (uint64_t)k));
    }
    check_context("%s", "");

    /* a non-negative error becomes -EIO */
    CHECK_EQ_I64(cache_get(c, 3, 3, &e), 0);
    start_waiters(c, 3, 3, 0, 3, th, args, &started);
    cache_fail(c, e, 0);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_I64(args[i].rc, -EIO);
    }

    /* filled and at once evicted before the waiters wake: they still get it */
    struct cache *small = cache_new(100, 100);
    CHECK_EQ_I64(cache_get(small, 4, 4, &e), 0);
    start_waiters(small, 4, 4, 50, 4, th, args, &started);
    cache_fill(small, e, make_chunk(4, 4, 50), 50);
    cache_insert(small, 4, 5, make_chunk(4, 5, 200), 200); /* evicts (4, 4) */
    cache_put(small, e);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_I64(args[i].rc, 1);
        CHECK(args[i].data_ok);
    }
    CHECK_EQ_U64(cache_bytes(small), 200);
    cache_free(small);
    cache_free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Concurrency: readers of overlapping keys; each missing chunk is filled by exactly one. */

#define NKEYS 64
#define NTHREADS 8

struct stress {
    struct cache *c;
    uint64_t max_bytes;
    int iters;
    bool inject_failures;
    atomic_int fills[NKEYS];
    atomic_int filling[NKEYS]; /* a claim is outstanding */
    atomic_int double_claims, bad_data, bad_rc, failures, waited_errors, over_bound;
};

struct stress_arg {
    struct stress *s;
    uint64_t seed;
};

static size_t key_len(int k) { return 512 + (size_t)k * 97 % 3000; }

/* The bound, or one chunk when the bound is smaller than a chunk (the newest always stays). */
static uint64_t stress_bound(const struct stress *s)
{
    return s->max_bytes > 512 + 3000 ? s->max_bytes : 512 + 3000;
}

static void *stress_thread(void *p)
{
    struct stress_arg *arg = p;
    struct stress *s = arg->s;
    uint64_t x = arg->seed;
    for (int i = 0; i < s->iters; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* a skewed choice: low keys are hot, so many threads collide on them */
        int k = (int)(x % 4 == 0 ? (x >> 8) % NKEYS : (x >> 8) % 8);
        struct cache_entry *e = NULL;
        int rc = cache_get(s->c, 7, (uint64_t)k, &e);
        if (rc == 0) {
            if (atomic_exchange(&s->filling[k], 1) != 0)
                atomic_fetch_add(&s->double_claims, 1);
            if ((x >> 20) % 16 == 0)
                sched_yield(); /* let others pile up on the claim */
            if (s->inject_failures && (x >> 24) % 10 == 0) {
                atomic_store(&s->filling[k], 0);
                atomic_fetch_add(&s->failures, 1);
                cache_fail(s->c, e, -EXDEV);
                continue;
            }
            atomic_fetch_add(&s->fills[k], 1);
            unsigned char *d = make_chunk(7, (uint64_t)k, key_len(k));
            atomic_store(&s->filling[k], 0);
            cache_fill(s->c, e, d, key_len(k));
        } else if (rc < 0) {
            if (rc != -EXDEV || e != NULL)
                atomic_fetch_add(&s->bad_rc, 1);
            atomic_fetch_add(&s->waited_errors, 1);
            continue;
        } else if (rc != 1 || e == NULL) {
            atomic_fetch_add(&s->bad_rc, 1);
            continue;
        }

        if (!entry_ok(e, 7, (uint64_t)k, key_len(k)))
            atomic_fetch_add(&s->bad_data, 1);
        cache_put(s->c, e);
        if (cache_bytes(s->c) > stress_bound(s))
            atomic_fetch_add(&s->over_bound, 1);
    }
    return NULL;
}

static void run_stress(uint64_t max_bytes, bool inject, int iters)
{
    check_context("stress max %llu%s", (unsigned long long)max_bytes,
                  inject ? ", failures" : "");
    struct stress *s = calloc(1, sizeof *s);
    s->c = cache_new(max_bytes, 2000);
    s->max_bytes = max_bytes;
    s->iters = iters;
    s->inject_failures = inject;
    pthread_t th[NTHREADS];
    struct stress_arg args[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (struct stress_arg){s, 0x1234567ull * (uint64_t)(i + 1) | 1};
        CHECK(pthread_create(&th[i], NULL, stress_thread, &args[i]) == 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_I64(atomic_load(&s->double_claims), 0);
    CHECK_EQ_I64(atomic_load(&s->bad_data), 0);
    CHECK_EQ_I64(atomic_load(&s->bad_rc), 0);
    CHECK_EQ_I64(atomic_load(&s->over_bound), 0);
    CHECK(cache_bytes(s->c) <= stress_bound(s));
    int total = 0, once = 0, touched = 0;
    for (int k = 0; k < NKEYS; k++) {
        int f = atomic_load(&s->fills[k]);
        total += f;
        touched += f > 0;
        once += f == 1;
    }
    CHECK(touched > NKEYS / 2);
    if (max_bytes >= 4u << 20 && !inject) {
        /* everything fits: every key that was asked for was filled exactly once */
        CHECK_EQ_I64(once, touched);
        uint64_t want = 0;
        for (int k = 0; k < NKEYS; k++)
            if (atomic_load(&s->fills[k]))
                want += key_len(k);
        CHECK_EQ_U64(cache_bytes(s->c), want);
    }
    if (inject) {
        CHECK(atomic_load(&s->failures) > 0);
        if (getenv("CACHE_VERBOSE"))
            printf("    %d failures, %d waiters got them, %d fills\n",
                   atomic_load(&s->failures), atomic_load(&s->waited_errors), total);
    }
    cache_free(s->c);
    free(s);
    check_context("%s", "");
}

static void test_concurrent(void)
{
    run_stress(64u << 20, false, 20000); /* no eviction: exactly one fill per key */
    run_stress(20000, false, 20000);     /* constant eviction (~10 of 64 chunks fit) */
    run_stress(3000, false, 10000);      /* about one chunk fits: evictions of held chunks */
    run_stress(64u << 20, true, 20000);  /* failing fills wake waiters with the error */
    run_stress(20000, true, 20000);
}

/* Many threads asking for one missing key at once: one fill, everyone gets the same chunk. */
struct herd_arg {
    struct cache *c;
    pthread_barrier_t *go;
    atomic_int *fills, *bad;
    uint64_t b;
};

static void *herd_thread(void *p)
{
    struct herd_arg *h = p;
    pthread_barrier_wait(h->go);
    struct cache_entry *e;
    int rc = cache_get(h->c, 9, h->b, &e);
    if (rc == 0) {
        atomic_fetch_add(h->fills, 1);
        sleep_ms(20);
        cache_fill(h->c, e, make_chunk(9, h->b, 4096), 4096);
    } else if (rc != 1) {
        atomic_fetch_add(h->bad, 1);
        return NULL;
    }

    if (!entry_ok(e, 9, h->b, 4096))
        atomic_fetch_add(h->bad, 1);
    cache_put(h->c, e);
    return NULL;
}

static void test_thundering_herd(void)
{
    struct cache *c = cache_new(1 << 20, 4096);
    for (uint64_t round = 0; round < 5; round++) {
        atomic_int fills = 0, bad = 0;
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 16);
        pthread_t th[16];
        struct herd_arg args[16];
        for (int i = 0; i < 16; i++) {
            args[i] = (struct herd_arg){c, &go, &fills, &bad, round};
            CHECK(pthread_create(&th[i], NULL, herd_thread, &args[i]) == 0);
        }
        for (int i = 0; i < 16; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&go);
        CHECK_EQ_I64(atomic_load(&fills), 1);
        CHECK_EQ_I64(atomic_load(&bad), 0);
    }
    CHECK_EQ_U64(cache_bytes(c), 5 * 4096);
    cache_free(c);
}

/* ------------------------------------------------------------------------------------------ */

int main(void)
{
    alarm(60); /* a deadlock fails the program instead of hanging the suite */
    RUN_TEST(test_miss_fill_hit);
    RUN_TEST(test_many_keys);
    RUN_TEST(test_bound);
    RUN_TEST(test_lru_order);
    RUN_TEST(test_oversized);
    RUN_TEST(test_insert);
    RUN_TEST(test_fail_single);
    RUN_TEST(test_evicted_while_held);
    RUN_TEST(test_fail_wakes_waiters);
    RUN_TEST(test_concurrent);
    RUN_TEST(test_thundering_herd);
    return check_summary("test_cache");
}
