/*
 * npz: the mounted archive as the core sees it, with no FUSE in it. It owns the archive
 * descriptor, the member table (zipdir), the tree (namespace), one reader per member (reader.h),
 * the decoded-data cache shared by all deflated members (cache.h), and the budget and list of
 * the archive's libarchive decoders.
 *
 * Errors: negative errno. npz_open also writes a one-line reason (no newline) for the user.
 * Threads: after npz_open returns, every function may be called from any number of threads at
 * once, except npz_close, which must be the last call.
 */
#ifndef NPZMOUNT_NPZ_H
#define NPZMOUNT_NPZ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "namespace.h"
#include "zipdir.h"

struct npz_options {
    uint64_t span;        /* output bytes between deflate checkpoints (0: default; clamped to
                           * NPZ_MIN_SPAN..NPZ_MAX_SPAN) */
    uint64_t cache_bytes; /* bound of the decoded-data cache (0: default) */
    uint64_t decoder_mem; /* bound of the state of libarchive decoders (0: default) */
};

#define NPZ_DEFAULT_SPAN (1u << 20)
#define NPZ_DEFAULT_CACHE (256u << 20)
/* One decoder of any kind fits: a PPMd model takes up to 256 MiB, a zstd window 128 MiB. */
#define NPZ_DEFAULT_DECODER_MEM (320u << 20)
#define NPZ_MIN_SPAN (32u << 10)
#define NPZ_MAX_SPAN (64u << 20)

struct npz;

/* Opens and indexes the archive at path (nothing is decompressed yet). */
int npz_open(const char *path, const struct npz_options *opt, struct npz **out, char *msg,
             size_t msg_len);
void npz_close(struct npz *npz);

const struct zip_archive *npz_zip(const struct npz *npz);
const struct ns *npz_ns(const struct npz *npz);

/* Copies up to len bytes of member idx, starting at off, into buf. Returns the number of bytes
 * (short only at the end of the member, 0 at or past it) or a negative errno (-EIO for a member
 * that cannot be served). Never allocates for stored members. */
ssize_t npz_read(struct npz *npz, uint64_t idx, void *buf, size_t len, uint64_t off);

#endif
