/*
 * reader: produces the bytes of one member. One small interface, one implementation per way a
 * member can be stored; npz picks the implementation once per member (reader_for) and calls
 * it with the request already clipped to the member's size.
 *
 * A reader may keep per-member state: it says how to make it (new_state) and free it
 * (free_state); reader_attach creates it on a member's first read and installs it once in a
 * slot npz owns, whatever the number of concurrent first readers. Errors are negative errno;
 * -EIO means the member cannot be served, and why() then gives a one-line reason.
 */
#ifndef NPZMOUNT_READER_H
#define NPZMOUNT_READER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "budget.h"
#include "cache.h"
#include "zipdir.h"

struct archive_decoders;

/* What readers share, owned by npz. */
struct reader_env {
    int fd;
    struct cache *cache;
    uint64_t span;
    struct budget *decoder_mem;        /* bounds the state of reader_archive's decoders */
    struct archive_decoders *decoders; /* reader_archive's open decoders */
};

/* One member as a reader sees it. */
struct reader_member {
    uint64_t idx;
    const struct zip_member *zm;
    void *state; /* from new_state, or NULL for readers without state */
};

struct reader_ops {
    /* Copies [off, off + len) of the member into buf; off + len <= usize. Returns len or an
     * error. */
    ssize_t (*read)(const struct reader_env *env, const struct reader_member *m, void *buf,
                    size_t len, uint64_t off);
    /* Why the member failed, or NULL. */
    const char *(*why)(const struct reader_member *m);
    /* Per-member state, or NULL when out of memory; both NULL for stateless readers. */
    void *(*new_state)(const struct reader_env *env, const struct zip_member *zm);
    void (*free_state)(void *state);
};

extern const struct reader_ops reader_stored;
extern const struct reader_ops reader_deflate;
extern const struct reader_ops reader_archive;
extern const struct reader_ops reader_broken;

/* Produces chunk k of a member as a new malloc'd buffer (a reader's unit of decoding).
 * Returns 0, or 1 when the claimed cache entry was completed meanwhile (cache_is_ready) and
 * nothing was produced, or a negative errno. */
typedef int (*reader_produce)(void *ctx, uint64_t k, struct cache_entry *claim,
                              unsigned char **data, size_t *len);

/* For readers that decode in chunks: copies what chunk k, which starts at member offset
 * start, holds of [off, off + len) into buf. The chunk comes from the shared cache, or is
 * produced once (readers of the same chunk meanwhile wait for it). Returns the bytes copied
 * (at least 1) or an error. */
ssize_t reader_copy_chunk(const struct reader_env *env, const struct reader_member *m,
                          uint64_t k, uint64_t start, reader_produce produce, void *ctx,
                          unsigned char *buf, size_t len, uint64_t off);

/* Sets m->state from slot, creating the state first if the slot is empty; a thread that loses
 * the race to install it frees its own copy. Returns 0 or -ENOMEM. */
int reader_attach(const struct reader_ops *ops, const struct reader_env *env,
                  _Atomic(void *) *slot, struct reader_member *m);

/* The open libarchive decoders of one archive, which reader_archive closes (least recently
 * used and idle first) when a new one needs their share of decoder_mem. Thread-safe. Free it
 * after every reader_archive state of the archive; new returns NULL when out of memory. */
struct archive_decoders *archive_decoders_new(void);
void archive_decoders_free(struct archive_decoders *d);

/* The reader for a member: reader_broken for members zipdir flagged. */
const struct reader_ops *reader_for(const struct zip_member *zm);

#endif
