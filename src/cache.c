/*
 * cache: see cache.h. A chained hash table over (a, b) plus one doubly linked LRU list of the
 * ready entries. Entries being filled are in the table (so others can wait on them) but not in
 * the list. An evicted entry still referenced is unlinked from both and freed on its last put.
 * Spare buffers wait in a free list threaded through their own first bytes.
 *
 * Buffers come from 2 MiB slabs asking for transparent huge pages and are never returned to
 * the system before cache_free: a page fault costs tens of microseconds on a virtual machine,
 * more than decoding the 4 KiB it maps, so fresh memory is what made a first pass slow. The
 * pool only grows when no buffer is spare and none can be evicted, so it stays at the bound
 * plus what is in flight.
 *
 * The bound in force starts at CACHE_FLOOR (or max_bytes when smaller) and grows towards
 * max_bytes, never shrinking, one piece per "ghost hit": a claim on a piece that is among the
 * last (max_bytes - floor) / piece evicted, that is, roughly one a cache of max_bytes would
 * still hold. Fresh memory is dear on a virtual machine (zeroing new 2 MiB huge pages took a
 * third of the daemon's time in 200 random reads of a SOZip member, as every read leaves two
 * or three pieces behind that no one reads again), so the pool grows only for a working set
 * that shows reuse: the 200 reads took 3 to 22 % less time with an 8 MiB bound than with
 * 16 MiB, depending on how fresh the machine's memory was. Ghosts are keys only, in a ring of
 * as many as the pieces between the floor and max_bytes (65,536 at most), with their own hash
 * chains.
 */
#include "cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>

#define SLAB_BYTES (2u << 20)
#define CACHE_FLOOR (8u << 20) /* covers the decoders' read-ahead windows (4 MiB at most) */
#define NO_GHOST UINT32_MAX
#define MAX_GHOSTS (1u << 16) /* 1.6 MiB of keys: 4 GiB of 64 KiB pieces */

/* Recently evicted keys: a ring of n slots, each on its bucket's chain while used. */
struct ghosts {
    uint32_t n, at, mask;   /* slots, the next slot to reuse, buckets - 1 */
    uint64_t (*key)[2];
    uint32_t *next;         /* per slot: the next slot on its chain */
    uint32_t *bucket;       /* per bucket: its first slot */
    bool *used;
};

struct slab {
    struct slab *next;
    void *mem;
    size_t per, stride; /* buffers, and the distance between them */
};

enum state { FILLING, READY, FAILED };

struct cache_entry {
    uint64_t a, b;
    enum state state;
    int err;
    unsigned refs;
    bool linked;                    /* in the table (and, when READY, in the LRU list) */
    unsigned char *data;
    size_t len;
    struct cache_entry *hnext;      /* hash chain */
    struct cache_entry *prev, *next; /* LRU list, most recent at head */
};

struct cache {
    pthread_mutex_t lock;
    pthread_cond_t filled;
    pthread_cond_t grown;           /* signalled when a thread stops growing the pool */
    bool growing;                   /* a thread is adding a slab, with the lock dropped */
    size_t piece;
    uint64_t max_bytes;
    uint64_t ready;                 /* READY entries in the table: what the bound counts */
    void *spare;                    /* free list of buffers */
    uint64_t nspare;
    struct slab *slabs;
    struct cache_entry **buckets;
    uint64_t mask;
    struct cache_entry *head, *tail;
    uint64_t bound;                 /* the bound in force: CACHE_FLOOR..max_bytes */
    struct ghosts ghosts;
    void (*notify)(void *);
    void *notify_ctx;
    /* A view (cache_view): every call goes to base, with tag in the high bits of a. */
    struct cache *base;
    uint64_t tag;
};

static uint64_t hash(uint64_t a, uint64_t b)
{
    uint64_t h = (a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full);
    return h ^ (h >> 31);
}

/* ---- ghosts ---- */

/* Room for n keys; n == 0 keeps none. Returns 0 or -ENOMEM. */
static int ghosts_init(struct ghosts *g, uint64_t n)
{
    n = n < MAX_GHOSTS ? n : MAX_GHOSTS;
    uint32_t nb = 16;
    while (nb < n)
        nb <<= 1;
    *g = (struct ghosts){.n = (uint32_t)n, .mask = nb - 1};
    if (n == 0)
        return 0;
    g->key = calloc(n, sizeof *g->key);
    g->next = calloc(n, sizeof *g->next);
    g->used = calloc(n, sizeof *g->used);
    g->bucket = malloc(nb * sizeof *g->bucket);
    if (!g->key || !g->next || !g->used || !g->bucket)
        return -ENOMEM;
    for (uint32_t i = 0; i < nb; i++)
        g->bucket[i] = NO_GHOST;
    return 0;
}

static void ghosts_free(struct ghosts *g)
{
    free(g->key);
    free(g->next);
    free(g->used);
    free(g->bucket);
}

/* Takes slot i off its chain. */
static void ghost_unlink(struct ghosts *g, uint32_t i)
{
    uint32_t *p = &g->bucket[hash(g->key[i][0], g->key[i][1]) & g->mask];
    while (*p != i)
        p = &g->next[*p];
    *p = g->next[i];
    g->used[i] = false;
}

/* Remembers (a, b), forgetting the oldest key when full. */
static void ghost_add(struct ghosts *g, uint64_t a, uint64_t b)
{
    if (g->n == 0)
        return;
    uint32_t i = g->at;
    g->at = (i + 1) % g->n;
    if (g->used[i])
        ghost_unlink(g, i);
    uint32_t *head = &g->bucket[hash(a, b) & g->mask];
    g->key[i][0] = a;
    g->key[i][1] = b;
    g->next[i] = *head;
    g->used[i] = true;
    *head = i;
}

/* Whether (a, b) was a ghost; it is one no more. */
static bool ghost_take(struct ghosts *g, uint64_t a, uint64_t b)
{
    if (g->n == 0)
        return false;
    for (uint32_t i = g->bucket[hash(a, b) & g->mask]; i != NO_GHOST; i = g->next[i]) {
        if (g->key[i][0] == a && g->key[i][1] == b) {
            ghost_unlink(g, i);
            return true;
        }
    }
    return false;
}

/* ---- the cache ---- */

/* The cache that holds the entries: c itself, or a view's base. */
static struct cache *own(struct cache *c)
{
    return c->base ? c->base : c;
}

/* Key a as the holding cache sees it. */
static uint64_t key(const struct cache *c, uint64_t a)
{
    return c->base ? a | c->tag << CACHE_TAG_SHIFT : a;
}

struct cache *cache_view(struct cache *base, uint64_t tag)
{
    struct cache *v = calloc(1, sizeof *v);
    if (v) {
        v->base = own(base);
        v->tag = tag;
        v->piece = v->base->piece;
    }
    return v;
}

struct cache *cache_new(uint64_t max_bytes, size_t piece)
{
    struct cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->piece = piece < sizeof(void *) ? sizeof(void *) : piece;
    uint64_t want = max_bytes / c->piece * 2;
    uint64_t n = 256;
    while (n < want && n < (1u << 22))
        n <<= 1;
    c->buckets = calloc(n, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    c->mask = n - 1;
    c->max_bytes = max_bytes;
    c->bound = max_bytes < CACHE_FLOOR ? max_bytes : CACHE_FLOOR;
    if (ghosts_init(&c->ghosts, (max_bytes - c->bound) / c->piece) < 0) {
        ghosts_free(&c->ghosts);
        free(c->buckets);
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->filled, NULL);
    pthread_cond_init(&c->grown, NULL);
    return c;
}

size_t cache_piece(const struct cache *c)
{
    return c->piece;
}

void cache_set_notify(struct cache *c, void (*fn)(void *ctx), void *ctx)
{
    if (c->base)
        return; /* the base's owner sets it, once for all views */
    pthread_mutex_lock(&c->lock);
    c->notify = fn;
    c->notify_ctx = ctx;
    pthread_mutex_unlock(&c->lock);
}

/* Unlocks and tells the scheduler that a piece left production. */
static void unlock_notify(struct cache *c)
{
    void (*fn)(void *) = c->notify;
    void *ctx = c->notify_ctx;
    pthread_mutex_unlock(&c->lock);
    if (fn)
        fn(ctx);
}

void cache_notify(struct cache *c)
{
    c = own(c);
    pthread_mutex_lock(&c->lock);
    unlock_notify(c);
}

static void spare_push(struct cache *c, unsigned char *buf)
{
    if (!buf)
        return;
    *(void **)buf = c->spare;
    c->spare = buf;
    c->nspare++;
}

/* A slab of buffers of `piece` bytes, its memory faulted in where the free list will write:
 * the slow part (milliseconds for fresh memory on a virtual machine), so done with no lock
 * held. NULL when out of memory. */
static struct slab *slab_new(size_t piece)
{
    struct slab *sl = malloc(sizeof *sl);
    if (!sl)
        return NULL;
    sl->stride = (piece + 15) & ~(size_t)15; /* the free list's links stay aligned */
    sl->per = SLAB_BYTES / sl->stride ? SLAB_BYTES / sl->stride : 1;
    if (posix_memalign(&sl->mem, SLAB_BYTES, sl->per * sl->stride) != 0) {
        free(sl);
        return NULL;
    }
    madvise(sl->mem, sl->per * sl->stride, MADV_HUGEPAGE); /* a hint: fewer, bigger faults */
    for (size_t i = 0; i < sl->per; i++)
        *(void **)((unsigned char *)sl->mem + i * sl->stride) = NULL;
    return sl;
}

/* Adds the slab's buffers to the spare list. Lock held. */
static void pool_add(struct cache *c, struct slab *sl)
{
    sl->next = c->slabs;
    c->slabs = sl;
    for (size_t i = 0; i < sl->per; i++)
        spare_push(c, (unsigned char *)sl->mem + i * sl->stride);
}

/* Grows the pool by a slab, dropping the lock meanwhile; one thread at a time, so that
 * threads short of a buffer together wait for one slab instead of adding one each. Lock
 * held. Returns 0 (a slab was added, or another thread's growth ended: look again) or
 * -ENOMEM. */
static int grow_pool(struct cache *c)
{
    if (c->growing) {
        pthread_cond_wait(&c->grown, &c->lock);
        return 0;
    }
    c->growing = true;
    pthread_mutex_unlock(&c->lock);
    struct slab *sl = slab_new(c->piece);
    pthread_mutex_lock(&c->lock);
    c->growing = false;
    pthread_cond_broadcast(&c->grown);
    if (!sl)
        return -ENOMEM;
    pool_add(c, sl);
    return 0;
}

void cache_free(struct cache *c)
{
    if (!c || c->base) {
        free(c); /* a view owns nothing else */
        return;
    }
    for (uint64_t i = 0; i <= c->mask; i++) {
        for (struct cache_entry *e = c->buckets[i], *n; e; e = n) {
            n = e->hnext;
            free(e);
        }
    }
    for (struct slab *sl = c->slabs, *next; sl; sl = next) {
        next = sl->next;
        free(sl->mem);
        free(sl);
    }
    free(c->buckets);
    ghosts_free(&c->ghosts);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->filled);
    pthread_cond_destroy(&c->grown);
    free(c);
}

/* Frees an entry nobody references any more, keeping its buffer. Lock held. */
static void entry_release(struct cache *c, struct cache_entry *e)
{
    spare_push(c, e->data);
    free(e);
}

static struct cache_entry **slot(struct cache *c, uint64_t a, uint64_t b)
{
    return &c->buckets[hash(a, b) & c->mask];
}

static void lru_unlink(struct cache *c, struct cache_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct cache *c, struct cache_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

static void table_unlink(struct cache *c, struct cache_entry *e)
{
    struct cache_entry **p = slot(c, e->a, e->b);
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    e->linked = false;
}

/* Removes e from the table (and the list when ready); frees it if nobody holds it. */
static void unlink_entry(struct cache *c, struct cache_entry *e)
{
    table_unlink(c, e);
    if (e->state == READY) {
        lru_unlink(c, e);
        c->ready--;
    }
    if (e->refs == 0)
        entry_release(c, e);
}

/* Evicts the least recently used piece, remembering its key. Lock held. */
static void evict_tail(struct cache *c)
{
    ghost_add(&c->ghosts, c->tail->a, c->tail->b);
    unlink_entry(c, c->tail);
}

static void evict(struct cache *c, const struct cache_entry *keep)
{
    while (c->ready * c->piece > c->bound && c->tail && c->tail != keep)
        evict_tail(c);
}

unsigned char *cache_buffer(struct cache *c)
{
    c = own(c);
    pthread_mutex_lock(&c->lock);
    /* At the bound, the least recently used piece nobody reads gives up its buffer; else the
     * pool grows. Either may have to be done again: the lock is dropped while it grows. */
    while (!c->spare) {
        if ((c->ready + 1) * c->piece > c->bound && c->tail && c->tail->refs == 0)
            evict_tail(c);
        else if (grow_pool(c) < 0)
            break;
    }
    unsigned char *buf = c->spare;
    if (buf) {
        c->spare = *(void **)buf;
        c->nspare--;
    }
    pthread_mutex_unlock(&c->lock);
    return buf;
}

void cache_unused(struct cache *c, unsigned char *buf)
{
    c = own(c);
    pthread_mutex_lock(&c->lock);
    spare_push(c, buf);
    pthread_mutex_unlock(&c->lock);
}

static struct cache_entry *find(struct cache *c, uint64_t a, uint64_t b)
{
    for (struct cache_entry *e = *slot(c, a, b); e; e = e->hnext)
        if (e->a == a && e->b == b)
            return e;
    return NULL;
}

static struct cache_entry *add(struct cache *c, uint64_t a, uint64_t b)
{
    struct cache_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->a = a;
    e->b = b;
    e->state = FILLING;
    e->linked = true;
    struct cache_entry **s = slot(c, a, b);
    e->hnext = *s;
    *s = e;
    return e;
}

/* Drops a reference taken by cache_get on an entry that turned out unusable. Lock held. */
static void unref(struct cache *c, struct cache_entry *e)
{
    if (--e->refs == 0 && !e->linked)
        entry_release(c, e);
}

int cache_get(struct cache *c, uint64_t a, uint64_t b, enum cache_how how,
              struct cache_entry **out)
{
    a = key(c, a);
    c = own(c);
    int rc;
    struct cache_entry *e;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        e = find(c, a, b);
        if (!e) {
            e = how == CACHE_PEEK ? NULL : add(c, a, b);
            rc = e || how == CACHE_PEEK ? 0 : -ENOMEM;
            if (e)
                e->refs = 1;
            if (e && ghost_take(&c->ghosts, a, b) && c->bound + c->piece <= c->max_bytes)
                c->bound += c->piece; /* a bigger cache would have held it */
            break;
        }
        if (e->state == FILLING && how != CACHE_WAIT) {
            rc = how == CACHE_PEEK ? 0 : -EAGAIN;
            e = NULL;
            break;
        }
        e->refs++;
        while (e->state == FILLING)
            pthread_cond_wait(&c->filled, &c->lock);
        if (e->state == READY) {
            if (e->linked) {
                lru_unlink(c, e);
                lru_push(c, e);
            }
            rc = 1;
            break;
        }
        rc = e->err;
        unref(c, e);
        e = NULL;
        if (rc != -EAGAIN) /* an abandoned claim: look again, maybe claim it ourselves */
            break;
    }
    pthread_mutex_unlock(&c->lock);
    *out = e;
    return rc;
}

/* Makes e ready with buf, most recent, and trims the cache to its bound. Lock held. */
static void make_ready(struct cache *c, struct cache_entry *e, unsigned char *buf, size_t len)
{
    e->data = buf;
    e->len = len;
    e->state = READY;
    c->ready++;
    lru_push(c, e);
    evict(c, e);
}

void cache_fill(struct cache *c, struct cache_entry *e, unsigned char *buf, size_t len)
{
    c = own(c);
    pthread_mutex_lock(&c->lock);
    if (e->state == READY) /* completed by cache_insert meanwhile */
        spare_push(c, buf);
    else
        make_ready(c, e, buf, len);
    pthread_cond_broadcast(&c->filled);
    unlock_notify(c);
}

/* Takes a claimed, unfilled entry out of the table with err for its waiters. Lock held. */
static void drop_claim(struct cache *c, struct cache_entry *e, int err)
{
    e->err = err;
    table_unlink(c, e);
    e->state = FAILED;
    unref(c, e);
    pthread_cond_broadcast(&c->filled);
}

void cache_fail(struct cache *c, struct cache_entry *e, int err)
{
    c = own(c);
    pthread_mutex_lock(&c->lock);
    if (e->state == READY) /* completed by cache_insert: the piece is fine after all */
        unref(c, e);
    else
        drop_claim(c, e, err < 0 && err != -EAGAIN ? err : -EIO);
    unlock_notify(c);
}

void cache_abandon(struct cache *c, struct cache_entry *e)
{
    c = own(c);
    pthread_mutex_lock(&c->lock);
    if (e->state == READY)
        unref(c, e);
    else
        drop_claim(c, e, -EAGAIN);
    unlock_notify(c);
}

void cache_put(struct cache *c, struct cache_entry *e)
{
    c = own(c);
    pthread_mutex_lock(&c->lock);
    unref(c, e);
    pthread_mutex_unlock(&c->lock);
}

void cache_insert(struct cache *c, uint64_t a, uint64_t b, unsigned char *buf, size_t len)
{
    a = key(c, a);
    c = own(c);
    pthread_mutex_lock(&c->lock);
    struct cache_entry *e = find(c, a, b);
    if (e && e->state == FILLING) {
        make_ready(c, e, buf, len);
        pthread_cond_broadcast(&c->filled);
        unlock_notify(c);
        return;
    }
    if (e || !(e = add(c, a, b))) {
        spare_push(c, buf);
    } else {
        ghost_take(&c->ghosts, a, b); /* back without being asked for: no sign of reuse */
        make_ready(c, e, buf, len);
    }
    unlock_notify(c);
}

bool cache_is_ready(struct cache *c, const struct cache_entry *e)
{
    c = own(c);
    pthread_mutex_lock(&c->lock);
    bool ready = e->state == READY;
    pthread_mutex_unlock(&c->lock);
    return ready;
}

const unsigned char *cache_data(const struct cache_entry *e, size_t *len)
{
    *len = e->len;
    return e->data;
}

uint64_t cache_bound(struct cache *c)
{
    c = own(c);
    pthread_mutex_lock(&c->lock);
    uint64_t n = c->bound;
    pthread_mutex_unlock(&c->lock);
    return n;
}

uint64_t cache_bytes(struct cache *c)
{
    c = own(c);
    pthread_mutex_lock(&c->lock);
    uint64_t n = c->ready * c->piece;
    pthread_mutex_unlock(&c->lock);
    return n;
}
