/*
 * test_cache: the bounded LRU piece cache and its buffer pool (src/cache.c), single-threaded
 * semantics and concurrent use. Run under ASan/LSan too: every buffer taken from the pool must
 * end up freed exactly once, and a referenced piece must stay readable after eviction until it
 * is put back.
 */
#include "cache.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef __SANITIZE_ADDRESS__
/* From ASan's runtime (gcc ships no header for it). */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

#include "check.h"

/* <sched.h> is shadowed by src/sched.h under -Isrc. */
int sched_yield(void);

/* ------------------------------------------------------------------------------------------ */
/* Helpers. */

/* The byte at position i of piece (a, b): lets any reader verify a piece it did not make. */
static unsigned char pattern(uint64_t a, uint64_t b, size_t i)
{
    uint64_t x = a * 0x9E3779B97F4A7C15ull + b * 0xD1B54A32D192ED03ull + i * 0x2545F4914F6CDD1Dull;
    return (unsigned char)(x >> 56 ^ x >> 13);
}

/* A pool buffer holding the first len bytes of piece (a, b). */
static unsigned char *make_piece(struct cache *c, uint64_t a, uint64_t b, size_t len)
{
    unsigned char *p = cache_buffer(c);
    if (!p) {
        fprintf(stderr, "cache_buffer: out of memory\n");
        abort();
    }
    for (size_t i = 0; i < len; i++)
        p[i] = pattern(a, b, i);
    return p;
}

static bool piece_ok(const unsigned char *p, size_t len, uint64_t a, uint64_t b, size_t want)
{
    if (len != want || !p)
        return false;
    for (size_t i = 0; i < len; i++)
        if (p[i] != pattern(a, b, i))
            return false;
    return true;
}

/* Is e's piece the one made by make_piece(a, b, want)? */
static bool entry_ok(const struct cache_entry *e, uint64_t a, uint64_t b, size_t want)
{
    size_t n = 0;
    const unsigned char *d = cache_data(e, &n);
    return piece_ok(d, n, a, b, want);
}

/* Adds piece (a, b) of len bytes through the reader protocol (get, fill, put); returns its
 * buffer, or NULL when that failed. */
static const unsigned char *add_ptr(struct cache *c, uint64_t a, uint64_t b, size_t len)
{
    struct cache_entry *e = NULL;
    int rc = cache_get(c, a, b, CACHE_WAIT, &e);
    if (!CHECK_EQ_I64(rc, 0) || !CHECK(e != NULL)) {
        if (rc == 1 && e)
            cache_put(c, e);
        return NULL;
    }
    unsigned char *buf = make_piece(c, a, b, len);
    cache_fill(c, e, buf, len);
    bool ok = CHECK(entry_ok(e, a, b, len));
    cache_put(c, e);
    return ok ? buf : NULL;
}

static bool add(struct cache *c, uint64_t a, uint64_t b, size_t len)
{
    return add_ptr(c, a, b, len) != NULL;
}

/* Is (a, b) ready? A peek never claims, so a miss leaves no trace. */
static bool present(struct cache *c, uint64_t a, uint64_t b)
{
    struct cache_entry *e = NULL;
    int rc = cache_get(c, a, b, CACHE_PEEK, &e);
    if (rc == 1) {
        cache_put(c, e);
        return true;
    }
    CHECK_EQ_I64(rc, 0);
    CHECK(e == NULL);
    return false;
}

/* Bytes the process's allocator has handed out and not got back (single-threaded deltas). */
static uint64_t heap_in_use(void)
{
#ifdef __SANITIZE_ADDRESS__
    return __sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
#endif
}

/* Waits (polling, with a generous deadline) until *flag reaches want. */
static bool wait_for(atomic_int *flag, int want)
{
    struct timespec t0, now, nap = {0, 1000000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (atomic_load(flag) < want) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > 20)
            return false;
        nanosleep(&nap, NULL);
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Single-threaded behaviour. */

static void test_miss_fill_hit(void)
{
    struct cache *c = cache_new(1 << 20, 4096);
    if (!CHECK(c != NULL))
        return;
    CHECK_EQ_U64(cache_piece(c), 4096);
    CHECK_EQ_U64(cache_bytes(c), 0);

    struct cache_entry *e = NULL;
    CHECK_EQ_I64(cache_get(c, 1, 2, CACHE_WAIT, &e), 0); /* a miss: claimed */
    CHECK(e != NULL);
    CHECK(!cache_is_ready(c, e));
    CHECK_EQ_U64(cache_bytes(c), 0); /* a claimed piece holds no bytes yet */
    unsigned char *data = make_piece(c, 1, 2, 1000);
    cache_fill(c, e, data, 1000);
    CHECK(cache_is_ready(c, e));
    size_t n = 0;
    const unsigned char *d = cache_data(e, &n);
    CHECK(d == data); /* the cache owns the buffer it was given, no copy */
    CHECK_EQ_U64(n, 1000);
    CHECK(piece_ok(d, n, 1, 2, 1000));
    CHECK_EQ_U64(cache_bytes(c), 4096); /* the bound counts whole buffers */
    cache_put(c, e);
    CHECK_EQ_U64(cache_bytes(c), 4096); /* put keeps the piece cached */

    /* a second get hits, in every mode */
    enum cache_how hows[] = {CACHE_WAIT, CACHE_NOWAIT, CACHE_PEEK};
    for (int h = 0; h < 3; h++) {
        struct cache_entry *e2 = NULL;
        CHECK_EQ_I64(cache_get(c, 1, 2, hows[h], &e2), 1);
        CHECK(e2 != NULL);
        d = cache_data(e2, &n);
        CHECK(d == data);
        CHECK(piece_ok(d, n, 1, 2, 1000));
        /* two references at once */
        struct cache_entry *e3 = NULL;
        CHECK_EQ_I64(cache_get(c, 1, 2, CACHE_WAIT, &e3), 1);
        CHECK(e3 == e2);
        cache_put(c, e3);
        cache_put(c, e2);
    }

    /* keys are the pair: (2, 1), (1, 3), (0, 2) are other pieces */
    CHECK(!present(c, 2, 1));
    CHECK(!present(c, 1, 3));
    CHECK(!present(c, 0, 2));
    CHECK(present(c, 1, 2));
    CHECK_EQ_U64(cache_bytes(c), 4096);

    /* a zero-length piece and a full one are pieces too */
    CHECK(add(c, 5, 5, 0));
    CHECK(present(c, 5, 5));
    CHECK(add(c, 5, 6, 4096));
    CHECK(present(c, 5, 6));
    CHECK_EQ_U64(cache_bytes(c), 3 * 4096);

    /* extreme keys */
    CHECK(add(c, UINT64_MAX, UINT64_MAX, 10));
    CHECK(add(c, 0, UINT64_MAX, 11));
    CHECK(add(c, UINT64_MAX, 0, 12));
    CHECK(present(c, UINT64_MAX, UINT64_MAX));
    CHECK(present(c, 0, UINT64_MAX));
    CHECK(present(c, UINT64_MAX, 0));
    CHECK_EQ_U64(cache_bytes(c), 6 * 4096);
    cache_free(c);
    cache_free(NULL);
}

/* Many keys in a roomy cache: all stay, all are found (hash chains, table size). 5000 pieces
 * stay below the 8 MiB a cache holds before any reuse shows (test_bound_grows). */
static void test_many_keys(void)
{
    size_t pieces[] = {1024, 8, 0};
    for (size_t s = 0; s < 3; s++) {
        check_context("cache_new(64 MiB, %zu)", pieces[s]);
        struct cache *c = cache_new(64u << 20, pieces[s]);
        if (!CHECK(c != NULL))
            continue;
        size_t len = cache_piece(c) < 8 ? cache_piece(c) : 8;
        int bad = 0;
        for (uint64_t i = 0; i < 5000; i++)
            if (!add(c, i % 7, i * 1000003u, len))
                bad++;
        CHECK_EQ_U64(cache_bytes(c), 5000 * cache_piece(c));
        for (uint64_t i = 0; i < 5000; i++) {
            struct cache_entry *e = NULL;
            if (cache_get(c, i % 7, i * 1000003u, CACHE_PEEK, &e) != 1) {
                bad++;
                continue;
            }
            if (!entry_ok(e, i % 7, i * 1000003u, len))
                bad++;
            cache_put(c, e);
        }
        CHECK_EQ_I64(bad, 0);
        cache_free(c);
    }
}

/* The bound: pieces held never exceed max_bytes, and the least recently used go first. */
static void test_bound(void)
{
    struct cache *c = cache_new(1280, 128);
    int over = 0;
    for (uint64_t i = 0; i < 50; i++) {
        add(c, 0, i, 100);
        if (cache_bytes(c) > 1280)
            over++;
    }
    CHECK_EQ_I64(over, 0);
    CHECK_EQ_U64(cache_bytes(c), 1280);
    /* exactly the last ten remain (peeking at the absent ones leaves no trace) */
    int wrong = 0;
    for (uint64_t i = 0; i < 40; i++)
        wrong += present(c, 0, i);
    for (uint64_t i = 40; i < 50; i++)
        wrong += !present(c, 0, i);
    CHECK_EQ_I64(wrong, 0);
    CHECK_EQ_U64(cache_bytes(c), 1280);

    /* short pieces count as whole buffers: still ten of them, never more */
    over = 0;
    for (uint64_t i = 0; i < 200; i++) {
        add(c, 1, i, 1 + (size_t)(i * 37 % 100));
        if (cache_bytes(c) != 1280)
            over++;
    }
    CHECK_EQ_I64(over, 0);
    cache_free(c);

    /* a bound that is not a multiple of the piece: the whole pieces that fit */
    c = cache_new(1379, 128);
    for (uint64_t i = 0; i < 30; i++)
        add(c, 2, i, 50);
    CHECK_EQ_U64(cache_bytes(c), 1280);
    CHECK(present(c, 2, 20));
    CHECK(!present(c, 2, 19));
    cache_free(c);
}

static void test_lru_order(void)
{
    struct cache *c = cache_new(1280, 128);
    for (uint64_t i = 0; i < 10; i++)
        add(c, 3, i, 100);
    CHECK_EQ_U64(cache_bytes(c), 1280);
    /* use 0 and 1: now 2 is the least recently used */
    struct cache_entry *e;
    CHECK_EQ_I64(cache_get(c, 3, 0, CACHE_WAIT, &e), 1);
    cache_put(c, e);
    CHECK_EQ_I64(cache_get(c, 3, 1, CACHE_NOWAIT, &e), 1);
    cache_put(c, e);
    add(c, 3, 10, 100); /* evicts 2 */
    CHECK(!present(c, 3, 2));
    add(c, 3, 11, 100); /* evicts 3 */
    CHECK(!present(c, 3, 3));
    /* order from least to most recent is now 4..9, 0, 1, 10, 11 */
    add(c, 3, 12, 100); /* evicts 4, 5, 6 */
    add(c, 3, 13, 10);
    add(c, 3, 14, 0);
    CHECK(!present(c, 3, 4));
    CHECK(!present(c, 3, 5));
    CHECK(!present(c, 3, 6));
    CHECK_EQ_U64(cache_bytes(c), 1280);
    /* the survivors; probing them in this order keeps their relative order */
    uint64_t order[] = {7, 8, 9, 0, 1, 10, 11, 12, 13, 14};
    for (size_t i = 0; i < 10; i++)
        CHECK(present(c, 3, order[i]));
    /* cache_insert puts a piece at the front too */
    cache_insert(c, 3, 15, make_piece(c, 3, 15, 100), 100); /* evicts 7 */
    CHECK(!present(c, 3, 7));
    CHECK(present(c, 3, 15));
    CHECK(present(c, 3, 8));
    CHECK_EQ_U64(cache_bytes(c), 1280);
    cache_free(c);
}

/* A bound below one piece: the most recent piece serves the read that made it and stays. */
static void test_tiny_bound(void)
{
    struct cache *c = cache_new(50, 128);
    add(c, 4, 1, 100);
    CHECK_EQ_U64(cache_bytes(c), 128);
    CHECK(present(c, 4, 1));
    CHECK(present(c, 4, 1)); /* hitting it does not evict it */
    add(c, 4, 2, 10);        /* the next arrival displaces it */
    CHECK_EQ_U64(cache_bytes(c), 128);
    CHECK(!present(c, 4, 1));
    CHECK(present(c, 4, 2));
    cache_insert(c, 4, 3, make_piece(c, 4, 3, 99), 99);
    CHECK_EQ_U64(cache_bytes(c), 128);
    CHECK(present(c, 4, 3));
    CHECK(!present(c, 4, 2));
    cache_free(c);
    /* a bound of zero keeps just the most recent piece */
    struct cache *z = cache_new(0, 64);
    add(z, 0, 1, 10);
    CHECK_EQ_U64(cache_bytes(z), 64);
    add(z, 0, 2, 20);
    CHECK_EQ_U64(cache_bytes(z), 64);
    CHECK(!present(z, 0, 1));
    CHECK(present(z, 0, 2));
    cache_free(z);
}

/* cache_insert: adds an unasked-for piece; an existing one wins, a claimed one is completed. */
static void test_insert(void)
{
    struct cache *c = cache_new(12800, 128);
    cache_insert(c, 5, 5, make_piece(c, 5, 5, 100), 100);
    CHECK_EQ_U64(cache_bytes(c), 128);
    struct cache_entry *e;

    CHECK_EQ_I64(cache_get(c, 5, 5, CACHE_WAIT, &e), 1);
    CHECK(entry_ok(e, 5, 5, 100));
    cache_put(c, e);

    /* present: the new buffer is recycled (the next one handed out), the old piece stays */
    unsigned char *other = make_piece(c, 9, 9, 100);
    cache_insert(c, 5, 5, other, 100);
    CHECK_EQ_U64(cache_bytes(c), 128);
    CHECK_EQ_I64(cache_get(c, 5, 5, CACHE_WAIT, &e), 1);
    CHECK(entry_ok(e, 5, 5, 100));
    unsigned char *again = cache_buffer(c);
    CHECK(again == other);
    /* ...also while someone holds it */
    cache_insert(c, 5, 5, again, 77);
    CHECK(entry_ok(e, 5, 5, 100));
    cache_put(c, e);
    CHECK_EQ_U64(cache_bytes(c), 128);

    /* being filled: an insert completes it, and the filler's own late fill is recycled */
    CHECK_EQ_I64(cache_get(c, 6, 6, CACHE_WAIT, &e), 0);
    CHECK(!cache_is_ready(c, e));
    cache_insert(c, 6, 6, make_piece(c, 6, 6, 90), 90);
    CHECK(cache_is_ready(c, e));
    CHECK_EQ_U64(cache_bytes(c), 256);
    unsigned char *late = make_piece(c, 9, 9, 100);
    cache_fill(c, e, late, 100);
    CHECK(entry_ok(e, 6, 6, 90));
    cache_put(c, e);
    CHECK_EQ_U64(cache_bytes(c), 256);
    CHECK(cache_buffer(c) == late);
    cache_unused(c, late);
    CHECK_EQ_I64(cache_get(c, 6, 6, CACHE_WAIT, &e), 1);
    CHECK(entry_ok(e, 6, 6, 90));
    cache_put(c, e);

    /* a filler that fails after an insert completed its piece leaves the piece in place */
    CHECK_EQ_I64(cache_get(c, 8, 8, CACHE_WAIT, &e), 0);
    cache_insert(c, 8, 8, make_piece(c, 8, 8, 10), 10);
    cache_fail(c, e, -EIO);
    CHECK_EQ_I64(cache_get(c, 8, 8, CACHE_WAIT, &e), 1);
    CHECK(entry_ok(e, 8, 8, 10));
    cache_put(c, e);
    /* ...and so does one that abandons */
    CHECK_EQ_I64(cache_get(c, 9, 9, CACHE_WAIT, &e), 0);
    cache_insert(c, 9, 9, make_piece(c, 9, 9, 11), 11);
    cache_abandon(c, e);
    CHECK(present(c, 9, 9));

    /* after a failed fill the key is free again: insert works */
    CHECK_EQ_I64(cache_get(c, 7, 7, CACHE_WAIT, &e), 0);
    cache_fail(c, e, -EIO);
    cache_insert(c, 7, 7, make_piece(c, 7, 7, 50), 50);
    CHECK_EQ_I64(cache_get(c, 7, 7, CACHE_WAIT, &e), 1);
    CHECK(entry_ok(e, 7, 7, 50));
    cache_put(c, e);
    CHECK_EQ_U64(cache_bytes(c), 640);
    cache_free(c);
}

/* A failed or abandoned fill is not cached: the next get claims the piece again. */
static void test_fail_single(void)
{
    struct cache *c = cache_new(12800, 128);
    struct cache_entry *e;
    CHECK_EQ_I64(cache_get(c, 8, 8, CACHE_WAIT, &e), 0);
    cache_fail(c, e, -EIO);
    CHECK_EQ_U64(cache_bytes(c), 0);
    CHECK_EQ_I64(cache_get(c, 8, 8, CACHE_NOWAIT, &e), 0);
    cache_fail(c, e, -ENOMEM);
    CHECK_EQ_I64(cache_get(c, 8, 8, CACHE_WAIT, &e), 0);
    cache_abandon(c, e);
    CHECK_EQ_U64(cache_bytes(c), 0);
    CHECK(!present(c, 8, 8));
    CHECK_EQ_I64(cache_get(c, 8, 8, CACHE_NOWAIT, &e), 0);
    cache_fill(c, e, make_piece(c, 8, 8, 10), 10);
    cache_put(c, e);
    CHECK(present(c, 8, 8));
    CHECK_EQ_U64(cache_bytes(c), 128);
    cache_free(c);
}

/* Evicted while referenced: stays readable until the last put (ASan checks the frees), and
 * its buffer is not handed out again meanwhile. */
static void test_evicted_while_held(void)
{
    struct cache *c = cache_new(128, 128);
    struct cache_entry *e1, *e1b, *e2;

    CHECK_EQ_I64(cache_get(c, 1, 1, CACHE_WAIT, &e1), 0);
    cache_fill(c, e1, make_piece(c, 1, 1, 60), 60);
    CHECK_EQ_I64(cache_get(c, 1, 1, CACHE_WAIT, &e1b), 1); /* a second reader */
    CHECK(e1b == e1);
    add(c, 1, 2, 60); /* evicts (1, 1), held twice */
    CHECK_EQ_U64(cache_bytes(c), 128);
    CHECK(entry_ok(e1, 1, 1, 60));
    cache_put(c, e1);
    CHECK(entry_ok(e1b, 1, 1, 60));
    /* the key is free again: a new (1, 1) is a different entry */
    CHECK_EQ_I64(cache_get(c, 1, 1, CACHE_WAIT, &e2), 0);
    CHECK(e2 != e1b);
    cache_fill(c, e2, make_piece(c, 1, 1, 50), 50); /* evicts (1, 2) */
    CHECK(entry_ok(e1b, 1, 1, 60));
    CHECK(entry_ok(e2, 1, 1, 50));
    /* while both are held, no buffer handed out may be one of theirs */
    size_t n;
    const unsigned char *held1 = cache_data(e1b, &n), *held2 = cache_data(e2, &n);
    unsigned char *taken[20];
    int clash = 0;
    for (int i = 0; i < 20; i++) {
        taken[i] = cache_buffer(c);
        clash += taken[i] == held1 || taken[i] == held2;
        memset(taken[i], 0xEE, 100); /* would corrupt a held piece */
    }
    CHECK_EQ_I64(clash, 0);
    for (int i = 0; i < 20; i++)
        cache_unused(c, taken[i]);
    CHECK(entry_ok(e1b, 1, 1, 60));
    CHECK(entry_ok(e2, 1, 1, 50));
    cache_put(c, e1b); /* the old one is released now */
    cache_put(c, e2);
    CHECK_EQ_U64(cache_bytes(c), 128);
    CHECK(!present(c, 1, 2));
    CHECK(present(c, 1, 1));

    /* the filler's own reference survives the eviction its fill triggers later */
    struct cache_entry *big;
    CHECK_EQ_I64(cache_get(c, 2, 0, CACHE_WAIT, &big), 0);
    cache_fill(c, big, make_piece(c, 2, 0, 90), 90);
    for (uint64_t i = 1; i <= 5; i++)
        add(c, 2, i, 40);
    CHECK(cache_bytes(c) <= 128);
    CHECK(!present(c, 2, 0));
    CHECK(entry_ok(big, 2, 0, 90));
    cache_put(c, big);

    /* evicted while held; put back, then the cache is freed */
    CHECK_EQ_I64(cache_get(c, 3, 0, CACHE_WAIT, &e1), 0);
    cache_fill(c, e1, make_piece(c, 3, 0, 10), 10);
    add(c, 3, 1, 95);
    CHECK(entry_ok(e1, 3, 0, 10));
    cache_put(c, e1);
    cache_free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* The buffer pool. */

/* Pieces of any size, not only multiples of the word size: every buffer is usable to its
 * last byte and none overlaps another (ASan/UBSan watch the pool's own bookkeeping). */
static void test_odd_piece(void)
{
    const size_t sizes[] = {100, 4097, 12289, 8 * 1024 + 3};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t piece = sizes[s];
        check_context("piece %zu", piece);
        struct cache *c = cache_new(10 * piece, piece);
        CHECK_EQ_U64(cache_piece(c), piece);
        for (uint64_t i = 0; i < 40; i++)
            add(c, 1, i, i % 2 ? piece : piece / 3);
        CHECK_EQ_U64(cache_bytes(c), 10 * piece);
        for (uint64_t i = 30; i < 40; i++)
            CHECK(present(c, 1, i));
        /* 30 buffers out at once, each filled to the end, then checked */
        unsigned char *b[30];
        for (int i = 0; i < 30; i++) {
            b[i] = cache_buffer(c);
            memset(b[i], i, piece);
        }
        int bad = 0;
        for (int i = 0; i < 30; i++)
            for (size_t k = 0; k < piece; k++)
                bad += b[i][k] != (unsigned char)i;
        CHECK_EQ_I64(bad, 0);
        for (int i = 0; i < 30; i++)
            cache_unused(c, b[i]);
        for (uint64_t i = 30; i < 40; i++)
            CHECK(present(c, 1, i));
        cache_free(c);
    }
    check_context("%s", "");
}

/* An evicted piece's buffer, and one given back unused, come back from cache_buffer. Pieces of
 * 1 MiB, so that the pool (which grows by a couple of megabytes at a time) runs dry at once. */
static void test_recycle(void)
{
    const size_t piece = 1 << 20;
    struct cache *c = cache_new(4 * piece, piece);
    const unsigned char *p[4];
    for (uint64_t i = 0; i < 4; i++)
        p[i] = add_ptr(c, 1, i, 16);
    /* at the bound, with no spare buffer: the least recently used piece nobody holds gives
     * up its buffer */
    unsigned char *buf = cache_buffer(c);
    CHECK(buf == p[0]);
    CHECK(!present(c, 1, 0));

    /* a buffer given back unused is the next one handed out */
    cache_unused(c, buf);
    CHECK(cache_buffer(c) == buf);

    /* a fill that passes the bound evicts the oldest piece, whose buffer is next */
    add(c, 1, 4, 1); /* 1, 2, 3, 4: the pool grows for it */
    struct cache_entry *e;
    CHECK_EQ_I64(cache_get(c, 1, 5, CACHE_WAIT, &e), 0);
    cache_fill(c, e, buf, 1); /* evicts 1 */
    cache_put(c, e);
    CHECK(!present(c, 1, 1));
    unsigned char *next = cache_buffer(c);
    CHECK(next == p[1]);
    cache_unused(c, next);

    /* a held piece keeps its buffer while it is evicted and until it is put back, and then
     * that buffer is next */
    struct cache_entry *held;
    CHECK_EQ_I64(cache_get(c, 1, 2, CACHE_PEEK, &held), 1);
    size_t n;
    const unsigned char *hd = cache_data(held, &n);
    int clash = 0;
    for (uint64_t i = 6; i < 12; i++)
        clash += add_ptr(c, 1, i, 16) == hd;
    CHECK_EQ_I64(clash, 0);
    CHECK(!present(c, 1, 2));
    CHECK(entry_ok(held, 1, 2, 16));
    cache_put(c, held);
    next = cache_buffer(c);
    CHECK(next == hd);
    cache_unused(c, next);
    cache_free(c);

    /* a long pass through a small cache keeps reusing the same few buffers */
    c = cache_new(4 * piece, piece);
    const unsigned char *seen[64];
    size_t nseen = 0;
    int fresh = 0;
    for (uint64_t i = 0; i < 500; i++) {
        CHECK_EQ_I64(cache_get(c, 2, i, CACHE_WAIT, &e), 0);
        unsigned char *b = make_piece(c, 2, i, 16);
        size_t k = 0;
        while (k < nseen && seen[k] != b)
            k++;
        if (k == nseen) {
            fresh++;
            if (nseen < 64)
                seen[nseen++] = b;
        }
        cache_fill(c, e, b, 16);
        cache_put(c, e);
    }
    /* four held by ready pieces, one in the making, rounded up to what the pool allocates */
    if (!CHECK(fresh <= 6))
        printf("    %d distinct buffers for 500 pieces through a 4-piece cache\n", fresh);
    CHECK_EQ_U64(cache_bytes(c), 4 * piece);
    for (uint64_t i = 496; i < 500; i++)
        CHECK(present(c, 2, i));
    cache_free(c);
}

/* Cycles n pieces (key a) through c, each filled while `extra` more buffers are out. */
static void cycle(struct cache *c, uint64_t a, int n, int extra)
{
    unsigned char *out[8];
    for (int i = 0; i < n; i++) {
        struct cache_entry *e;
        if (!CHECK_EQ_I64(cache_get(c, a, (uint64_t)i, CACHE_WAIT, &e), 0))
            return;
        for (int k = 0; k < extra; k++)
            out[k] = cache_buffer(c);
        cache_fill(c, e, make_piece(c, a, (uint64_t)i, 16), 16);
        cache_put(c, e);
        for (int k = 0; k < extra; k++)
            cache_unused(c, out[k]);
    }
}

/* The pool grows to the bound plus what is in flight at the most, never with the number of
 * pieces that went through. (Heap figures allow twice the buffers' size: the allocator's own
 * overhead for large aligned blocks is not the cache's business.) */
static void test_pool_bounded(void)
{
    const size_t piece = 1 << 20;
    const uint64_t bound = 4, unit = 2; /* pieces; unit: the pool grows by a few at a time */
    struct cache *c = cache_new(bound * piece, piece);
    uint64_t h0 = heap_in_use();
    cycle(c, 1, 100, 2); /* up to three buffers out besides the ready pieces */
    uint64_t h1 = heap_in_use();
    double grown = (double)(h1 - h0) / (double)piece;
    if (!CHECK(grown <= 2 * (bound + 3 + unit) + 0.5))
        printf("    100 pieces through a %llu-piece cache took %.1f pieces of memory\n",
               (unsigned long long)bound, grown);
    cycle(c, 2, 300, 2); /* the same again, longer: not a byte more */
    uint64_t h2 = heap_in_use();
    if (!CHECK(h2 <= h1 + piece / 2))
        printf("    300 more pieces grew the pool by %.1f pieces\n",
               ((double)h2 - (double)h1) / (double)piece);

    /* a burst of 20 buffers out at once: the pool grows to hold them... */
    unsigned char *burst[20];
    for (int i = 0; i < 20; i++)
        burst[i] = cache_buffer(c);
    for (int i = 0; i < 20; i++)
        cache_unused(c, burst[i]);
    uint64_t h3 = heap_in_use();
    CHECK(h3 - h0 <= 2 * (bound + 20 + unit) * piece + piece / 2);
    /* ...and serves everything after it from there */
    cycle(c, 3, 200, 3);
    uint64_t h4 = heap_in_use();
    if (!CHECK(h4 <= h3 + piece / 2))
        printf("    the pool grew by %.1f pieces after a burst\n",
               ((double)h4 - (double)h3) / (double)piece);
    CHECK_EQ_U64(cache_bytes(c), bound * piece);
    cache_free(c);
}

/* One pass over keys [from, to) of a: a miss claims and fills. Returns the misses. */
static int pass(struct cache *c, uint64_t a, uint64_t from, uint64_t to)
{
    int misses = 0;
    for (uint64_t b = from; b < to; b++) {
        struct cache_entry *e = NULL;
        int rc = cache_get(c, a, b, CACHE_WAIT, &e);
        if (rc == 0) {
            misses++;
            cache_fill(c, e, make_piece(c, a, b, 16), 16);
        } else if (!CHECK_EQ_I64(rc, 1) || !CHECK(entry_ok(e, a, b, 16))) {
            if (e)
                cache_put(c, e);
            return -1;
        }
        cache_put(c, e);
    }
    return misses;
}

/* The bound in force: 8 MiB (the floor) until evicted pieces are asked for again, then up to
 * max_bytes one piece per such miss; pieces that nobody asks for again never grow the pool. */
static void test_bound_grows(void)
{
    const size_t piece = 64 << 10;
    const uint64_t floor = (8u << 20) / piece, max = (32u << 20) / piece; /* in pieces */
    struct cache *c = cache_new(max * piece, piece);
    uint64_t h0 = heap_in_use();
    /* a stream read once: held at the floor, and so is the pool */
    CHECK_EQ_I64(pass(c, 1, 0, 3 * max), (int64_t)(3 * max));
    CHECK_EQ_U64(cache_bytes(c), floor * piece);
    uint64_t grown = heap_in_use() - h0;
    if (!CHECK(grown <= 2 * (floor + 64) * piece))
        printf("    a stream took %.1f pieces of memory\n", (double)grown / (double)piece);
    CHECK(!present(c, 1, 0) && present(c, 1, 3 * max - 1));

    /* a working set above the floor, read round and round: the first round misses all, the
     * second misses what the floor evicted (each one grows the bound), the third hits all */
    const uint64_t ws = floor + floor / 2;
    CHECK_EQ_I64(pass(c, 2, 0, ws), (int64_t)ws);
    CHECK_EQ_I64(pass(c, 2, 0, ws), (int64_t)(ws - floor));
    CHECK_EQ_I64(pass(c, 2, 0, ws), 0);
    CHECK_EQ_U64(cache_bytes(c), ws * piece);

    /* a bigger one below max_bytes: held whole after a few rounds */
    const uint64_t ws2 = max - 16;
    for (int round = 0; round < 3; round++)
        pass(c, 3, 0, ws2);
    CHECK_EQ_I64(pass(c, 3, 0, ws2), 0);
    CHECK_EQ_U64(cache_bytes(c), ws2 * piece);
    /* one just above max_bytes: the bound stops there */
    for (int round = 0; round < 4; round++)
        pass(c, 4, 0, max + 8);
    CHECK_EQ_U64(cache_bytes(c), max * piece);
    cache_free(c);

    /* below the floor, max_bytes is the bound from the start */
    c = cache_new(4 * piece, piece);
    CHECK_EQ_I64(pass(c, 1, 0, 4), 4);
    CHECK_EQ_I64(pass(c, 1, 0, 4), 0);
    CHECK_EQ_I64(pass(c, 1, 0, 5), 1);
    CHECK_EQ_U64(cache_bytes(c), 4 * piece);
    cache_free(c);
}

/* Threads short of a buffer at once wait for one new slab rather than add one each. */
struct grab {
    struct cache *c;
    pthread_barrier_t *go, *done;
};

static void *grab_one(void *arg)
{
    struct grab *g = arg;
    pthread_barrier_wait(g->go);
    unsigned char *b = cache_buffer(g->c);
    pthread_barrier_wait(g->done); /* all hold theirs: none was handed back and reused */
    cache_unused(g->c, b);
    return b ? NULL : (void *)1;
}

static void test_pool_grows_once(void)
{
    enum { T = 8 };
    struct cache *c = cache_new(64u << 20, 64 << 10); /* 32 buffers per slab */
    pthread_barrier_t go, done;
    pthread_barrier_init(&go, NULL, T);
    pthread_barrier_init(&done, NULL, T);
    struct grab g = {c, &go, &done};
    pthread_t t[T];
    uint64_t h0 = heap_in_use();
    for (int i = 0; i < T; i++)
        pthread_create(&t[i], NULL, grab_one, &g);
    int failed = 0;
    for (int i = 0; i < T; i++) {
        void *r;
        pthread_join(t[i], &r);
        failed += r != NULL;
    }
    CHECK_EQ_I64(failed, 0);
    uint64_t grown = heap_in_use() - h0; /* glibc counts a 2 MiB slab's alignment slack too */
    if (!CHECK(grown <= (4u << 20) + (64u << 10)))
        printf("    %d threads at once added %.1f MiB of slabs\n", T, (double)grown / (1 << 20));
    pthread_barrier_destroy(&go);
    pthread_barrier_destroy(&done);
    cache_free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Modes, abandon and notify. */

/* A thread that claims a piece and fills it (or gives it up) when told to. */
struct holder {
    struct cache *c;
    uint64_t a, b;
    size_t len;
    int action; /* 0 fill, 1 abandon, 2 fail */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool claimed, release;
    int rc;
};

static void *holder_thread(void *p)
{
    struct holder *h = p;
    struct cache_entry *e;
    int rc = cache_get(h->c, h->a, h->b, CACHE_WAIT, &e);
    pthread_mutex_lock(&h->lock);
    h->rc = rc;
    h->claimed = true;
    pthread_cond_broadcast(&h->cond);
    while (!h->release)
        pthread_cond_wait(&h->cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
    if (rc != 0)
        return NULL;
    if (h->action == 0) {
        cache_fill(h->c, e, make_piece(h->c, h->a, h->b, h->len), h->len);
        cache_put(h->c, e);
    } else if (h->action == 1) {
        cache_abandon(h->c, e);
    } else {
        cache_fail(h->c, e, -EXDEV);
    }
    return NULL;
}

static void holder_start(struct holder *h, pthread_t *th, struct cache *c, uint64_t a,
                         uint64_t b, int action)
{
    *h = (struct holder){.c = c, .a = a, .b = b, .len = 33, .action = action};
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    CHECK(pthread_create(th, NULL, holder_thread, h) == 0);
    pthread_mutex_lock(&h->lock);
    while (!h->claimed)
        pthread_cond_wait(&h->cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
    CHECK_EQ_I64(h->rc, 0);
}

static void holder_finish(struct holder *h, pthread_t th)
{
    pthread_mutex_lock(&h->lock);
    h->release = true;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    pthread_join(th, NULL);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
}

/* NOWAIT and PEEK never block on a piece another thread fills; PEEK never claims. */
static void test_nowait_peek(void)
{
    struct cache *c = cache_new(12800, 128);
    struct holder h;
    pthread_t th;
    for (int action = 0; action < 3; action++) {
        check_context("holder action %d", action);
        holder_start(&h, &th, c, 1, (uint64_t)action, action);
        struct cache_entry *e = (struct cache_entry *)&h; /* must be overwritten */
        CHECK_EQ_I64(cache_get(c, 1, (uint64_t)action, CACHE_NOWAIT, &e), -EAGAIN);
        CHECK(e == NULL);
        e = (struct cache_entry *)&h;
        CHECK_EQ_I64(cache_get(c, 1, (uint64_t)action, CACHE_PEEK, &e), 0);
        CHECK(e == NULL);
        CHECK_EQ_I64(cache_get(c, 1, (uint64_t)action, CACHE_NOWAIT, &e), -EAGAIN);
        holder_finish(&h, th);
        int rc = cache_get(c, 1, (uint64_t)action, CACHE_NOWAIT, &e);
        if (action == 0) {
            /* filled: every mode hits */
            CHECK_EQ_I64(rc, 1);
            CHECK(rc == 1 && entry_ok(e, 1, 0, 33));
            if (rc == 1)
                cache_put(c, e);
            CHECK(present(c, 1, 0));
        } else {
            /* abandoned or failed: free for a new claim, even through NOWAIT */
            CHECK_EQ_I64(rc, 0);
            if (rc == 0)
                cache_fail(c, e, -EIO);
        }
    }
    check_context("%s", "");

    /* a peek at an absent piece claims nothing: the next reader still gets the claim */
    struct cache_entry *e;
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_I64(cache_get(c, 2, 2, CACHE_PEEK, &e), 0);
        CHECK(e == NULL);
    }
    CHECK_EQ_U64(cache_bytes(c), 128);
    CHECK_EQ_I64(cache_get(c, 2, 2, CACHE_NOWAIT, &e), 0);
    /* the claimer itself peeking or not waiting does not deadlock on its own claim */
    struct cache_entry *e2;
    CHECK_EQ_I64(cache_get(c, 2, 2, CACHE_PEEK, &e2), 0);
    CHECK_EQ_I64(cache_get(c, 2, 2, CACHE_NOWAIT, &e2), -EAGAIN);
    cache_fill(c, e, make_piece(c, 2, 2, 7), 7);
    cache_put(c, e);
    CHECK_EQ_I64(cache_get(c, 2, 2, CACHE_PEEK, &e2), 1);
    CHECK(entry_ok(e2, 2, 2, 7));
    cache_put(c, e2);
    cache_free(c);
}

/* Waiters of a piece whose claim is abandoned: one of them claims it, the others get it. */
struct claimer_arg {
    struct cache *c;
    uint64_t a, b;
    atomic_int *started, *claims, *bad;
};

static void *claimer(void *p)
{
    struct claimer_arg *w = p;
    struct cache_entry *e;
    atomic_fetch_add(w->started, 1);
    int rc = cache_get(w->c, w->a, w->b, CACHE_WAIT, &e);
    if (rc == 0) {
        atomic_fetch_add(w->claims, 1);
        cache_fill(w->c, e, make_piece(w->c, w->a, w->b, 44), 44);
    } else if (rc != 1) {
        atomic_fetch_add(w->bad, 1);
        return NULL;
    }
    if (!entry_ok(e, w->a, w->b, 44))
        atomic_fetch_add(w->bad, 1);
    cache_put(w->c, e);
    return NULL;
}

static void test_abandon_hands_over(void)
{
    struct cache *c = cache_new(12800, 128);
    for (uint64_t round = 0; round < 4; round++) {
        struct cache_entry *e;
        CHECK_EQ_I64(cache_get(c, 6, round, CACHE_WAIT, &e), 0);
        atomic_int started = 0, claims = 0, bad = 0;
        pthread_t th[6];
        struct claimer_arg arg = {c, 6, round, &started, &claims, &bad};
        for (int i = 0; i < 6; i++)
            CHECK(pthread_create(&th[i], NULL, claimer, &arg) == 0);
        CHECK(wait_for(&started, 6));
        /* the waiters are (most likely) blocked in cache_get now; either way, exactly one of
         * them must end up claiming and the rest get its piece */
        cache_abandon(c, e);
        for (int i = 0; i < 6; i++)
            pthread_join(th[i], NULL);
        CHECK_EQ_I64(atomic_load(&claims), 1);
        CHECK_EQ_I64(atomic_load(&bad), 0);
    }
    CHECK_EQ_U64(cache_bytes(c), 512);
    cache_free(c);
}

struct notify_count {
    struct cache *c;
    atomic_int calls;
    atomic_int lock_free; /* the callback could take the cache lock */
};

static void count_notify(void *ctx)
{
    struct notify_count *n = ctx;
    (void)cache_bytes(n->c); /* deadlocks (and the alarm fires) if the cache lock is held */
    atomic_fetch_add(&n->lock_free, 1);
    atomic_fetch_add(&n->calls, 1);
}

static void test_notify(void)
{
    struct cache *c = cache_new(384, 128);
    struct notify_count n = {.c = c};
    cache_set_notify(c, count_notify, &n);
    struct cache_entry *e, *e2;
#define NOTIFIED(want) CHECK_EQ_I64(atomic_exchange(&n.calls, 0), want)

    /* what does not end a production does not notify */
    CHECK_EQ_I64(cache_get(c, 1, 1, CACHE_WAIT, &e), 0);
    CHECK_EQ_I64(cache_get(c, 1, 1, CACHE_NOWAIT, &e2), -EAGAIN);
    CHECK_EQ_I64(cache_get(c, 1, 1, CACHE_PEEK, &e2), 0);
    CHECK_EQ_I64(cache_get(c, 1, 2, CACHE_PEEK, &e2), 0);
    unsigned char *b = cache_buffer(c);
    cache_unused(c, b);
    NOTIFIED(0);
    /* fill */
    cache_fill(c, e, make_piece(c, 1, 1, 5), 5);
    NOTIFIED(1);
    cache_put(c, e);
    CHECK_EQ_I64(cache_get(c, 1, 1, CACHE_WAIT, &e), 1);
    cache_put(c, e);
    NOTIFIED(0);
    /* abandon, fail */
    CHECK_EQ_I64(cache_get(c, 1, 3, CACHE_WAIT, &e), 0);
    cache_abandon(c, e);
    NOTIFIED(1);
    CHECK_EQ_I64(cache_get(c, 1, 3, CACHE_WAIT, &e), 0);
    cache_fail(c, e, -EIO);
    NOTIFIED(1);
    /* an insert that completes a claim, and one that adds a new piece */
    CHECK_EQ_I64(cache_get(c, 1, 4, CACHE_WAIT, &e), 0);
    cache_insert(c, 1, 4, make_piece(c, 1, 4, 6), 6);
    NOTIFIED(1);
    cache_fill(c, e, make_piece(c, 1, 9, 6), 6); /* the late fill of a completed piece */
    cache_put(c, e);
    atomic_store(&n.calls, 0);
    cache_insert(c, 1, 5, make_piece(c, 1, 5, 6), 6);
    CHECK(atomic_exchange(&n.calls, 0) <= 1);
    /* the explicit call */
    cache_notify(c);
    NOTIFIED(1);
    CHECK(atomic_load(&n.lock_free) >= 5);
    /* unset: no more calls */
    cache_set_notify(c, NULL, NULL);
    CHECK_EQ_I64(cache_get(c, 1, 6, CACHE_WAIT, &e), 0);
    cache_fill(c, e, make_piece(c, 1, 6, 1), 1);
    cache_put(c, e);
    cache_notify(c);
    NOTIFIED(0);
#undef NOTIFIED
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
    w->rc = cache_get(w->c, w->a, w->b, CACHE_WAIT, &e);
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

/* Starts n waiters on (a, b); they may or may not be blocked yet when this returns, which
 * must not matter for what they end up with. */
static void start_waiters(struct cache *c, uint64_t a, uint64_t b, size_t len, int n,
                          pthread_t *th, struct waiter_arg *args, atomic_int *started)
{
    atomic_store(started, 0);
    for (int i = 0; i < n; i++) {
        args[i] = (struct waiter_arg){.c = c, .a = a, .b = b, .started = started,
                                      .want_len = len};
        CHECK(pthread_create(&th[i], NULL, waiter, &args[i]) == 0);
    }
    CHECK(wait_for(started, n));
    for (int i = 0; i < 100; i++)
        sched_yield(); /* most of them block meanwhile; the checks allow for the others */
}

static void test_fail_wakes_waiters(void)
{
    struct cache *c = cache_new(10000, 200);
    pthread_t th[6];
    struct waiter_arg args[6];
    atomic_int started;
    struct cache_entry *e;

    /* fill: every waiter gets the piece */
    CHECK_EQ_I64(cache_get(c, 1, 1, CACHE_WAIT, &e), 0);
    start_waiters(c, 1, 1, 123, 6, th, args, &started);
    cache_fill(c, e, make_piece(c, 1, 1, 123), 123);
    cache_put(c, e);
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_I64(args[i].rc, 1);
        CHECK(args[i].data_ok);
    }

    /* fail: every waiter gets the error and no entry */
    int errs[] = {-EIO, -ENOMEM, -EFBIG};
    int saw_error = 0;
    for (int k = 0; k < 3; k++) {
        check_context("cache_fail(%d)", errs[k]);
        CHECK_EQ_I64(cache_get(c, 2, (uint64_t)k, CACHE_WAIT, &e), 0);
        start_waiters(c, 2, (uint64_t)k, 0, 6, th, args, &started);
        cache_fail(c, e, errs[k]);
        for (int i = 0; i < 6; i++) {
            pthread_join(th[i], NULL);
            /* a waiter that arrived after the failure claims the piece itself (and fails it
             * with -EIO): only a blocked one sees the error */
            CHECK(args[i].rc == errs[k] || args[i].rc == 0);
            CHECK(args[i].null_on_err);
            saw_error += args[i].rc == errs[k];
        }
        /* not cached */
        CHECK(!present(c, 2, (uint64_t)k));
    }
    check_context("%s", "");
    CHECK(saw_error > 0); /* 18 waiters: at least one was blocked when the claim failed */

    /* a non-negative error, or -EAGAIN, becomes -EIO for the waiters */
    int odd[] = {0, 5, -EAGAIN};
    for (int k = 0; k < 3; k++) {
        check_context("cache_fail(%d)", odd[k]);
        CHECK_EQ_I64(cache_get(c, 3, (uint64_t)k, CACHE_WAIT, &e), 0);
        start_waiters(c, 3, (uint64_t)k, 0, 3, th, args, &started);
        cache_fail(c, e, odd[k]);
        for (int i = 0; i < 3; i++) {
            pthread_join(th[i], NULL);
            CHECK(args[i].rc == -EIO || args[i].rc == 0);
        }
    }
    check_context("%s", "");

    /* filled and at once evicted before the waiters wake: they still get it */
    struct cache *small = cache_new(128, 128);
    CHECK_EQ_I64(cache_get(small, 4, 4, CACHE_WAIT, &e), 0);
    start_waiters(small, 4, 4, 50, 4, th, args, &started);
    cache_fill(small, e, make_piece(small, 4, 4, 50), 50);
    cache_insert(small, 4, 5, make_piece(small, 4, 5, 128), 128); /* evicts (4, 4) */
    cache_put(small, e);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        /* a late waiter finds (4, 4) gone, claims it and fails it: no data, no error */
        CHECK(args[i].rc == 1 || args[i].rc == 0);
        CHECK(args[i].rc != 1 || args[i].data_ok);
    }
    CHECK_EQ_U64(cache_bytes(small), 128);
    cache_free(small);
    cache_free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Concurrency: readers of overlapping keys in every mode; each missing piece is produced by
 * exactly one claimer at a time; buffers come and go through the pool. */

#define NKEYS 64
#define NTHREADS 8
#define SPIECE 4096

struct stress {
    struct cache *c;
    uint64_t max_bytes;
    int iters;
    bool inject_failures;
    atomic_int fills[NKEYS];
    atomic_int filling[NKEYS]; /* a claim is outstanding */
    atomic_int double_claims, bad_data, bad_rc, failures, waited_errors, over_bound, eagain,
        abandons, notifies;
};

struct stress_arg {
    struct stress *s;
    uint64_t seed;
};

static size_t key_len(int k) { return 512 + (size_t)k * 97 % 3000; }

/* The bound in whole pieces, or one piece when the bound is smaller (the newest stays). */
static uint64_t stress_bound(const struct stress *s)
{
    uint64_t whole = s->max_bytes / SPIECE * SPIECE;
    return whole > SPIECE ? whole : SPIECE;
}

static void stress_notify(void *ctx)
{
    atomic_fetch_add(&((struct stress *)ctx)->notifies, 1);
}

/* Produces piece k under the claim e: fill, fail or abandon. Returns whether e is now held. */
static bool stress_produce(struct stress *s, int k, struct cache_entry *e, uint64_t x)
{
    if (atomic_exchange(&s->filling[k], 1) != 0)
        atomic_fetch_add(&s->double_claims, 1);
    if ((x >> 20) % 16 == 0)
        sched_yield(); /* let others pile up on the claim */
    unsigned char *d = make_piece(s->c, 7, (uint64_t)k, key_len(k));
    if (s->inject_failures && (x >> 24) % 10 == 0) {
        atomic_store(&s->filling[k], 0);
        atomic_fetch_add(&s->failures, 1);
        cache_unused(s->c, d);
        cache_fail(s->c, e, -EXDEV);
        return false;
    }
    if ((x >> 28) % 13 == 0) {
        atomic_store(&s->filling[k], 0);
        atomic_fetch_add(&s->abandons, 1);
        cache_unused(s->c, d);
        cache_abandon(s->c, e);
        return false;
    }
    atomic_fetch_add(&s->fills[k], 1);
    atomic_store(&s->filling[k], 0);
    cache_fill(s->c, e, d, key_len(k));
    return true;
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
        enum cache_how how = (x >> 40) % 4 == 0 ? CACHE_NOWAIT
                             : (x >> 40) % 4 == 1 ? CACHE_PEEK : CACHE_WAIT;
        struct cache_entry *e = (struct cache_entry *)s;
        int rc = cache_get(s->c, 7, (uint64_t)k, how, &e);
        if (rc == 0 && how == CACHE_PEEK) {
            if (e != NULL)
                atomic_fetch_add(&s->bad_rc, 1);
            continue;
        }
        if (rc == 0) {
            if (!stress_produce(s, k, e, x))
                continue;
        } else if (rc == -EAGAIN) {
            if (how != CACHE_NOWAIT || e != NULL)
                atomic_fetch_add(&s->bad_rc, 1);
            atomic_fetch_add(&s->eagain, 1);
            continue;
        } else if (rc < 0) {
            if (how != CACHE_WAIT || rc != -EXDEV || e != NULL)
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
    s->c = cache_new(max_bytes, SPIECE);
    s->max_bytes = max_bytes;
    s->iters = iters;
    s->inject_failures = inject;
    cache_set_notify(s->c, stress_notify, s);
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
    /* every fill, failure and abandon notified */
    CHECK(atomic_load(&s->notifies) >=
          total + atomic_load(&s->failures) + atomic_load(&s->abandons));
    if (max_bytes >= 4u << 20 && !inject) {
        /* everything fits: every key that was asked for was filled exactly once */
        CHECK_EQ_I64(once, touched);
        CHECK_EQ_U64(cache_bytes(s->c), (uint64_t)touched * SPIECE);
    }
    if (inject)
        CHECK(atomic_load(&s->failures) > 0);
    if (getenv("CACHE_VERBOSE"))
        printf("    %d fills, %d failures (%d waiters got them), %d abandons, %d EAGAIN\n",
               total, atomic_load(&s->failures), atomic_load(&s->waited_errors),
               atomic_load(&s->abandons), atomic_load(&s->eagain));
    cache_free(s->c);
    free(s);
    check_context("%s", "");
}

static void test_concurrent(void)
{
    run_stress(64u << 20, false, 20000); /* no eviction: exactly one fill per key */
    run_stress(40000, false, 20000);     /* constant eviction (~10 of 64 pieces fit) */
    run_stress(3000, false, 10000);      /* one piece stays: evictions of held pieces */
    run_stress(64u << 20, true, 20000);  /* failing fills wake waiters with the error */
    run_stress(40000, true, 20000);
}

/* Many threads asking for one missing key at once: one fill, everyone gets the same piece. */
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
    int rc = cache_get(h->c, 9, h->b, CACHE_WAIT, &e);
    if (rc == 0) {
        atomic_fetch_add(h->fills, 1);
        for (int i = 0; i < 20; i++)
            sched_yield(); /* give the herd time to pile up */
        cache_fill(h->c, e, make_piece(h->c, 9, h->b, 4096), 4096);
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
    alarm(90); /* a deadlock fails the program instead of hanging the suite */
    RUN_TEST(test_miss_fill_hit);
    RUN_TEST(test_many_keys);
    RUN_TEST(test_bound);
    RUN_TEST(test_lru_order);
    RUN_TEST(test_tiny_bound);
    RUN_TEST(test_insert);
    RUN_TEST(test_fail_single);
    RUN_TEST(test_evicted_while_held);
    RUN_TEST(test_recycle);
    RUN_TEST(test_pool_bounded);
    RUN_TEST(test_bound_grows);
    RUN_TEST(test_pool_grows_once);
    RUN_TEST(test_nowait_peek);
    RUN_TEST(test_abandon_hands_over);
    RUN_TEST(test_notify);
    RUN_TEST(test_fail_wakes_waiters);
    RUN_TEST(test_concurrent);
    RUN_TEST(test_thundering_herd);
    RUN_TEST(test_odd_piece); /* last: UBSan stops the program at a misaligned store */
    return check_summary("test_cache");
}
