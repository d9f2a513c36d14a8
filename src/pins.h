/*
 * pins: the bytes of a read left where they lie. With pins passed to npz_read, the bytes of
 * ready cache pieces are not copied into the caller's buffer: the pieces are held (never
 * evicted, their buffers not reused) and listed as slices, so that a reply can be written
 * straight from the cache. The slices, in order, are the read's bytes; the caller must
 * read_pins_release them after a success and after an error alike, and soon: held pieces
 * count beyond the cache's bound.
 *
 * Threads: a struct read_pins belongs to one thread at a time; its arrays grow as needed and
 * are kept for the next read. Errors are negative errno.
 */
#ifndef NPZMOUNT_PINS_H
#define NPZMOUNT_PINS_H

#include <stddef.h>
#include <sys/uio.h>

struct cache;
struct cache_entry;

struct read_pins {
    struct cache *cache;       /* of the held pieces (one read: one archive's cache) */
    struct cache_entry **held;
    size_t nheld;
    struct iovec *iov;         /* the slices */
    size_t n;
    size_t cap;                /* room in held and in iov */
};

/* Lists [data, data + len) as the next slice, holding e (or nothing, e NULL) until release.
 * Returns 0 or -ENOMEM (nothing listed, e still the caller's). */
int read_pins_add(struct read_pins *p, struct cache *c, struct cache_entry *e,
                  const void *data, size_t len);

/* Copies the slices, in order, into out, at most cap bytes; returns the bytes copied (for
 * callers that want the bytes in one buffer after all, such as tests). */
size_t read_pins_copy(const struct read_pins *p, void *out, size_t cap);

/* Puts every held piece back and forgets the slices. */
void read_pins_release(struct read_pins *p);

/* Releases, then frees the arrays. */
void read_pins_free(struct read_pins *p);

#endif
