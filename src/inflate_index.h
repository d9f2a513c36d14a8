/*
 * inflate_index: random access into one raw deflate stream (ZIP method 8), zran style.
 *
 * The algorithm. Deflate output can only be produced by decoding from the start of the stream,
 * because every block may copy from the 32 KiB of output before it. But at the boundary between
 * two blocks the decoder's whole state is: the input position (a byte offset plus 0-7 bits of
 * the previous byte still unread) and the last 32 KiB of output. Record that state (a
 * "checkpoint") every `span` output bytes, and decoding can restart at any checkpoint: reset a
 * raw inflater, prime it with the leftover bits, give it the 32 KiB as a dictionary, and go on.
 *
 * Output is handed out in fixed "pieces" of `piece` bytes (the cache's unit), independent of
 * where the checkpoints fall: a piece may start inside a block, and a block far larger than a
 * piece (hand-made streams) is streamed through piece by piece, never held whole. Producing a
 * piece costs decoding from the last checkpoint at or before it: at most one span plus one
 * block. The index is built lazily by the "frontier", which decodes the stream in order,
 * records checkpoints and the CRC-32 of every piece, and hands every piece it decodes to the
 * sink; so the first read far into a member decodes everything before it once, and never again.
 * When the frontier reaches the end, the size and CRC-32 are checked against the central
 * directory; any mismatch or corrupt data fails the member with -EIO from then on. A piece
 * later decoded again from a checkpoint is checked against its recorded CRC-32.
 *
 * Memory. Each checkpoint costs its window: 32 KiB raw, a few bytes for a window of zeros
 * (packed at once) and less under pressure (packed when the budget runs short). Windows and
 * tables are counted in the budget given at creation; when it is exhausted the index drops
 * every other checkpoint (doubling its span) rather than fail, so memory stays bounded and
 * reads only get slower.
 *
 * Threads: all functions may be called concurrently on one index. Pieces below the frontier
 * decode in parallel; extending the frontier is done by one thread at a time. Long decodes
 * check `stop` between pieces. Errors are negative errno values: -EIO (member failed; see
 * zindex_why), -ENOMEM, -EINTR (stop was set), -EAGAIN (nowait, and another thread holds
 * the frontier).
 */
#ifndef NPZMOUNT_INFLATE_INDEX_H
#define NPZMOUNT_INFLATE_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "inflater.h"
#include "stop.h"

#define ZINDEX_WINDOW 32768u

/* Where the compressed stream lives and what the central directory promises about it. */
struct source;

struct zindex_source {
    struct source *archive;
    uint64_t offset; /* first byte of the deflate stream in the file */
    uint64_t csize;
    uint64_t usize;
    uint32_t crc32;
};

struct spill;

struct zindex_params {
    uint64_t span;       /* output bytes between checkpoints (at least ZINDEX_WINDOW) */
    size_t piece;        /* bytes per piece (at least 4 KiB) */
    struct budget *mem;  /* index memory, shared by many indexes; NULL: unbounded */
    /* Fine checkpoints: with a spill (spill.h), the first pass also records a checkpoint every
     * `fine` output bytes (fine < span), whose window goes to the spill instead of memory.
     * Restarts and saved indexes use them; memory pays only their table entry. */
    uint64_t fine;
    struct spill *spill; /* must outlive the index; NULL: no fine checkpoints */
    /* inflater.h; NULL: ISA-L, except a first pass recording checkpoints closer than 128 KiB
     * (ISA-L cannot stop at block ends that close), which is zlib's */
    const struct inflater_ops *decoder;
};

/* Where decoded pieces go; buffers are `piece` bytes. deliver takes ownership of buf. */
struct zindex_sink {
    unsigned char *(*buffer)(void *ctx);
    void (*deliver)(void *ctx, uint64_t q, unsigned char *buf, size_t len);
    void (*unused)(void *ctx, unsigned char *buf);
    void *ctx;
};

struct zindex;

/* Returns NULL when out of memory. */
struct zindex *zindex_new(const struct zindex_source *src, const struct zindex_params *p);
void zindex_free(struct zindex *zi);

/* Delivers piece q (< number of pieces) to sink, and any other piece decoded on the way. */
int zindex_produce(struct zindex *zi, uint64_t q, const struct zindex_sink *sink,
                   const struct stop *stop, bool nowait);

/* Index-only pass: advances the frontier by up to 64 pieces without delivering them (scratch,
 * a piece-sized buffer, receives them), recording checkpoints and CRCs. Gives way at once, and
 * after each piece, to a foreground producer that wants the frontier: returns -EAGAIN then
 * (the caller retries later; the frontier stays where it got to). Returns 1 when the index is
 * complete, 0 when there is more to do, or an error (-EINTR when stop was set). */
int zindex_advance(struct zindex *zi, unsigned char *scratch, const struct stop *stop);

bool zindex_complete(struct zindex *zi);

/* 1 when piece q lies below the frontier (a restart away), 0 when not, or the member's error. */
int zindex_ready(struct zindex *zi, uint64_t q);

/* Output bytes covered by the index (the frontier's position). */
uint64_t zindex_indexed(struct zindex *zi);

/* Reason for the member's failure, or NULL while it is healthy. */
const char *zindex_why(struct zindex *zi);

/* Saving and loading. A snapshot is a copy of the index: checkpoints, and the CRC-32 of
 * every piece below `indexed`. Windows held in memory are copied, packed (window.h); the
 * others (in the spill or a saved file) stay where they are, and zindex_window fetches them
 * one at a time, so that saving costs no memory in proportion to the index. */
struct zindex_point {
    uint64_t out, in;
    int bits;
    uint32_t wlen, zlen;
    unsigned char *win; /* zlen packed bytes, owned by the snapshot; NULL: use zindex_window */
    int from;           /* internal: where the window is when win is NULL... */
    uint64_t where;     /* ...and which saved point or spill offset holds it */
};

struct zindex_snapshot {
    uint64_t span, piece;
    uint64_t indexed;   /* output bytes covered: a piece boundary, or usize when complete */
    uint64_t npoints;
    struct zindex_point *pts;
    uint64_t ncrc;      /* pieces below indexed */
    uint32_t *pcrc;
};

/* Takes a snapshot (also of a partial index). Returns 0, -ENOMEM, or the member's error. */
int zindex_snapshot(struct zindex *zi, struct zindex_snapshot *out);
void zindex_snapshot_free(struct zindex_snapshot *s);

/* The packed window of snapshot point p (taken from zi) into z[0..cap): its length, or a
 * negative errno (-EIO: it cannot be read back, -ENOBUFS: cap too small). */
int zindex_window(struct zindex *zi, const struct zindex_point *p, unsigned char *z, size_t cap);

/* Where the windows of an imported index live: window() copies point k's packed window (zlen
 * bytes) into z and returns its length, or a negative errno (-EIO: corrupt). */
struct zindex_fetch {
    int (*window)(void *ctx, uint64_t k, unsigned char *z, size_t cap);
    void *ctx;
};

/* Makes a fresh index (nothing decoded yet) continue from a saved one: its windows are fetched
 * on demand (s's win pointers are ignored), its piece CRCs check every piece decoded again;
 * a mismatch fails the member with why == ZINDEX_WHY_SAVED. fetch.ctx must outlive zi.
 * Returns 0, -EINVAL (s does not fit this member), -EBUSY (zi was used), -ENOMEM. */
int zindex_import(struct zindex *zi, const struct zindex_snapshot *s,
                  const struct zindex_fetch *fetch);

#define ZINDEX_WHY_SAVED "decoded data differs from the saved index's CRC-32"

/* Checkpoints recorded so far, and bytes of memory the index uses. */
uint64_t zindex_points(struct zindex *zi);
uint64_t zindex_memory(struct zindex *zi);

/* Output bytes decoded so far by every decoder of this index (first pass and restarts). */
uint64_t zindex_decoded(struct zindex *zi);

#endif
