/*
 * cache: a bounded LRU of decoded pieces, shared by all members of a mount, and the pool of
 * piece buffers the decoders write into.
 *
 * A piece is identified by two numbers (member index, piece number). Its bytes live in a
 * buffer of exactly cache_piece() bytes taken from cache_buffer(): decoders write straight
 * into it and hand it over, and evicted pieces' buffers are recycled rather than freed, so a
 * long first pass touches the same memory over and over instead of faulting in fresh pages.
 * The bound counts the buffers of the pieces the cache holds; pieces in use by a reader are
 * freed only when the last reader puts them back, and buffers being filled are not counted,
 * so the true footprint can exceed the bound by what readers and decoders hold at that moment
 * (a few pieces per thread). The most recently added piece is never evicted by its own arrival.
 * The bound in force starts at 8 MiB (or max_bytes when smaller) and grows towards max_bytes
 * (it never shrinks) only as pieces evicted recently, among the last (max_bytes - 8 MiB) /
 * piece evictions (65,536 at most), are claimed again, so that pieces nobody reads twice (a
 * random reader's) do not grow the pool. cache_bound() tells the bound in force.
 *
 * Protocol for a reader:
 *     rc = cache_get(c, a, b, how, &e);
 *     rc == 1: e is ready: use cache_data(e), then cache_put(c, e).
 *     rc == 0: (how != CACHE_PEEK) the caller has claimed the piece and must produce it, then
 *              call cache_fill(c, e, buf, len) (ownership of buf passes to the cache; e stays
 *              referenced: use it and cache_put it), or cache_abandon(c, e) (give up the claim
 *              without an error: e is gone and others may claim it), or cache_fail(c, e, err)
 *              (e is gone; blocked waiters get err). Someone may complete the claimed piece
 *              meanwhile with cache_insert: cache_is_ready(c, e) tells, and the producer may
 *              then skip its work and just use e (cache_fill then frees the spare buffer).
 *              With CACHE_PEEK, rc == 0 means "not ready" and nothing is claimed (e is NULL).
 *     rc == -EAGAIN: (CACHE_NOWAIT) another thread is producing the piece; nothing is held.
 *     rc < 0:  (CACHE_WAIT) the filler failed for this very piece while we waited.
 *
 * Whenever a piece stops being "in production" (filled, inserted, abandoned or failed) the
 * notify function, if set, is called with no cache lock held: the scheduler uses it to retry
 * requests that chose not to wait.
 *
 * Threads: every function may be called concurrently. The lock is held only for table, list
 * and pool updates, never while a piece is produced or copied.
 */
#ifndef NPZMOUNT_CACHE_H
#define NPZMOUNT_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cache;
struct cache_entry;

enum cache_how {
    CACHE_WAIT,   /* block while another thread produces the piece */
    CACHE_NOWAIT, /* return -EAGAIN instead of blocking */
    CACHE_PEEK,   /* never claim, never block: only report a ready piece */
};

/* Returns NULL when out of memory. piece is the size of every buffer. */
struct cache *cache_new(uint64_t max_bytes, size_t piece);
/* All entries must have been put back. */
void cache_free(struct cache *c);

size_t cache_piece(const struct cache *c);

/* A view of base for one of several archives sharing it: the same entries, bound, pool and
 * notify function, with tag (nonzero, below 2^24) in the high bits of every key a, which must
 * stay below 2^CACHE_TAG_SHIFT. Every function takes a view where it takes a cache; freeing a
 * view (whose entries must all have been put back) leaves base alone, and setting a view's
 * notify function does nothing. Returns NULL when out of memory. */
#define CACHE_TAG_SHIFT 40
struct cache *cache_view(struct cache *base, uint64_t tag);

/* A buffer of cache_piece() bytes for a new piece (recycled when possible), or NULL. */
unsigned char *cache_buffer(struct cache *c);
/* Gives back a buffer from cache_buffer that was not handed over. */
void cache_unused(struct cache *c, unsigned char *buf);

int cache_get(struct cache *c, uint64_t a, uint64_t b, enum cache_how how,
              struct cache_entry **e);
void cache_fill(struct cache *c, struct cache_entry *e, unsigned char *buf, size_t len);
void cache_abandon(struct cache *c, struct cache_entry *e);
void cache_fail(struct cache *c, struct cache_entry *e, int err);
void cache_put(struct cache *c, struct cache_entry *e);

/* Adds a ready piece (taking ownership of buf), typically one decoded on the way to another.
 * A piece being filled is completed with it and its waiters wake; a ready piece wins and buf
 * is recycled. */
void cache_insert(struct cache *c, uint64_t a, uint64_t b, unsigned char *buf, size_t len);

/* Whether a claimed piece has been completed by cache_insert. */
bool cache_is_ready(struct cache *c, const struct cache_entry *e);

const unsigned char *cache_data(const struct cache_entry *e, size_t *len);

/* Bytes of piece buffers currently held by ready pieces (for tests and statistics). */
uint64_t cache_bytes(struct cache *c);
/* The bound in force (see above): what decode-ahead may fill without evicting its own work. */
uint64_t cache_bound(struct cache *c);

void cache_set_notify(struct cache *c, void (*fn)(void *ctx), void *ctx);

/* Calls the notify function: for producers that release something (a decoder, a frontier)
 * that other readers may have declined to wait for. */
void cache_notify(struct cache *c);

#endif
