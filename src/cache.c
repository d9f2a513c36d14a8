/*
 * cache: see cache.h. A chained hash table over (a, b) plus one doubly linked LRU list of the
 * ready entries. Entries being filled are in the table (so others can wait on them) but not in
 * the list. An evicted entry still referenced is unlinked from both and freed on its last put.
 */
#include "cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

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
    uint64_t max_bytes, bytes;
    struct cache_entry **buckets;
    uint64_t mask;
    struct cache_entry *head, *tail;
};

struct cache *cache_new(uint64_t max_bytes, uint64_t expected_chunk)
{
    struct cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    uint64_t want = expected_chunk ? max_bytes / expected_chunk * 2 : 1024;
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
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->filled, NULL);
    return c;
}

static void entry_free(struct cache_entry *e)
{
    free(e->data);
    free(e);
}

void cache_free(struct cache *c)
{
    if (!c)
        return;
    for (uint64_t i = 0; i <= c->mask; i++) {
        for (struct cache_entry *e = c->buckets[i], *n; e; e = n) {
            n = e->hnext;
            entry_free(e);
        }
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->filled);
    free(c);
}

static struct cache_entry **slot(struct cache *c, uint64_t a, uint64_t b)
{
    uint64_t h = (a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full);
    return &c->buckets[(h ^ (h >> 31)) & c->mask];
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

/* Removes e from the table (and the list when ready); frees it if nobody holds it. */
static void unlink_entry(struct cache *c, struct cache_entry *e)
{
    struct cache_entry **p = slot(c, e->a, e->b);
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    if (e->state == READY) {
        lru_unlink(c, e);
        c->bytes -= e->len;
    }
    e->linked = false;
    if (e->refs == 0)
        entry_free(e);
}

static void evict(struct cache *c, struct cache_entry *keep)
{
    while (c->bytes > c->max_bytes && c->tail && c->tail != keep)
        unlink_entry(c, c->tail);
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

int cache_get(struct cache *c, uint64_t a, uint64_t b, struct cache_entry **out)
{
    int rc;
    pthread_mutex_lock(&c->lock);
    struct cache_entry *e = find(c, a, b);
    if (!e) {
        e = add(c, a, b);
        rc = e ? 0 : -ENOMEM;
        if (e)
            e->refs = 1;
    } else {
        e->refs++;
        while (e->state == FILLING)
            pthread_cond_wait(&c->filled, &c->lock);
        if (e->state == READY) {
            if (e->linked) {
                lru_unlink(c, e);
                lru_push(c, e);
            }
            rc = 1;
        } else {
            rc = e->err;
            if (--e->refs == 0 && !e->linked)
                entry_free(e);
            e = NULL;
        }
    }
    pthread_mutex_unlock(&c->lock);
    *out = e;
    return rc;
}

/* Makes e ready with data, most recent, and trims the cache to its bound. Lock held. */
static void make_ready(struct cache *c, struct cache_entry *e, void *data, size_t len)
{
    e->data = data;
    e->len = len;
    e->state = READY;
    lru_push(c, e);
    c->bytes += len;
    evict(c, e);
}

void cache_fill(struct cache *c, struct cache_entry *e, void *data, size_t len)
{
    pthread_mutex_lock(&c->lock);
    if (e->state == READY) /* completed by cache_insert meanwhile */
        free(data);
    else
        make_ready(c, e, data, len);
    pthread_cond_broadcast(&c->filled);
    pthread_mutex_unlock(&c->lock);
}

void cache_fail(struct cache *c, struct cache_entry *e, int err)
{
    pthread_mutex_lock(&c->lock);
    if (e->state == READY) { /* completed by cache_insert: the chunk is fine after all */
        pthread_mutex_unlock(&c->lock);
        cache_put(c, e);
        return;
    }
    e->err = err < 0 ? err : -EIO;
    struct cache_entry **p = slot(c, e->a, e->b);
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    e->linked = false;
    e->state = FAILED;
    if (--e->refs == 0)
        entry_free(e);
    pthread_cond_broadcast(&c->filled);
    pthread_mutex_unlock(&c->lock);
}

void cache_put(struct cache *c, struct cache_entry *e)
{
    pthread_mutex_lock(&c->lock);
    if (--e->refs == 0 && !e->linked)
        entry_free(e);
    pthread_mutex_unlock(&c->lock);
}

void cache_insert(struct cache *c, uint64_t a, uint64_t b, void *data, size_t len)
{
    pthread_mutex_lock(&c->lock);
    struct cache_entry *e = find(c, a, b);
    if (e && e->state == FILLING) {
        make_ready(c, e, data, len);
        pthread_cond_broadcast(&c->filled);
    } else if (e || !(e = add(c, a, b))) {
        free(data);
    } else {
        make_ready(c, e, data, len);
    }
    pthread_mutex_unlock(&c->lock);
}

bool cache_is_ready(struct cache *c, const struct cache_entry *e)
{
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

uint64_t cache_bytes(struct cache *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t n = c->bytes;
    pthread_mutex_unlock(&c->lock);
    return n;
}
