/*
 * cache: a bounded LRU of decoded chunks, shared by all members of a mount.
 *
 * A chunk is identified by two numbers (member index, chunk number) and is a malloc'd buffer
 * the cache owns once handed over. The bound counts the bytes of the chunks the cache holds;
 * chunks in use by a reader are freed only when the last reader puts them back, so the true
 * footprint can exceed the bound by what readers hold at that moment. The most recently added
 * chunk is never evicted by its own arrival, so a chunk larger than the bound still serves the
 * read that made it.
 *
 * Protocol for a reader:
 *     rc = cache_get(c, a, b, &e);
 *     rc == 1: e is ready: use cache_data(e), then cache_put(c, e).
 *     rc == 0: the caller has claimed the chunk and must produce it, then call cache_fill(c, e,
 *              data, len) (ownership of data passes to the cache; e stays referenced, so use it
 *              and cache_put it) or cache_fail(c, e, err) (e is gone). Someone may complete
 *              the claimed chunk meanwhile with cache_insert: cache_is_ready(c, e) tells, and
 *              the producer may then skip its work and just use e.
 *     rc < 0:  a filler failed for this very chunk while we waited; rc is its error.
 * Two readers asking for the same missing chunk: one fills it, the other waits.
 *
 * Threads: every function may be called concurrently. The lock is held only for table and list
 * updates, never while a chunk is produced or copied.
 */
#ifndef NPZMOUNT_CACHE_H
#define NPZMOUNT_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cache;
struct cache_entry;

/* Returns NULL when out of memory. */
struct cache *cache_new(uint64_t max_bytes, uint64_t expected_chunk);
/* All entries must have been put back. */
void cache_free(struct cache *c);

int cache_get(struct cache *c, uint64_t a, uint64_t b, struct cache_entry **e);
void cache_fill(struct cache *c, struct cache_entry *e, void *data, size_t len);
void cache_fail(struct cache *c, struct cache_entry *e, int err);
void cache_put(struct cache *c, struct cache_entry *e);

/* Adds a ready chunk (taking ownership of data), typically one decoded on the way to another.
 * A chunk being filled is completed with it and its waiters wake; a ready chunk wins and data
 * is freed. */
void cache_insert(struct cache *c, uint64_t a, uint64_t b, void *data, size_t len);

/* Whether a claimed chunk has been completed by cache_insert. */
bool cache_is_ready(struct cache *c, const struct cache_entry *e);

const unsigned char *cache_data(const struct cache_entry *e, size_t *len);

/* Bytes of chunks currently held (for tests and statistics). */
uint64_t cache_bytes(struct cache *c);

#endif
