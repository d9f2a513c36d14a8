/*
 * inflate_index: see inflate_index.h for the algorithm and its contract.
 *
 * Decoders: the frontier decoder, which only the thread holding `build` touches and which
 * stays at the frontier between calls, and a spare "cursor" left where the last restart
 * stopped, so that reading piece q+1 after piece q continues the stream instead of restarting
 * from a checkpoint. Both stop only at piece boundaries. A restart that finds the cursor taken
 * makes a decoder of its own.
 *
 * Decoders are inflaters (inflater.h): ISA-L by default, zlib as the reference. The first pass
 * asks the inflater to stop at the first block end once a span of output has passed since the
 * last checkpoint, records the checkpoint there and restarts from it at once, with the same
 * code a later random read uses. The window of a new checkpoint is the last 32 KiB of output:
 * the frontier keeps the tail of each piece it hands over, since the piece itself then belongs
 * to the sink.
 */
#include "inflate_index.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <isa-l/crc.h>
#include <zlib.h> /* crc32_combine */

#include "inflater.h"
#include "io.h"
#include "source.h"
#include "spill.h"
#include "window.h"

#define IN_BUF (64u << 10)
#define ISAL_MIN_SPAN (128u << 10)
#define ADVANCE_SLICE 64 /* pieces per zindex_advance call */

struct point {
    uint64_t out;       /* output offset of the checkpoint */
    uint64_t in;        /* input bytes consumed at that moment */
    int bits;           /* unused bits left in byte in - 1 (0-7) */
    uint32_t wlen;      /* window bytes (less than 32 KiB only near the start) */
    uint32_t zlen;      /* bytes of the packed window in win */
    unsigned char *win; /* packed window (window.h) when it is in memory, else NULL */
    int from;           /* where the window is: FROM_MEMORY (or no window at out == 0)... */
    uint64_t where;     /* ...or FROM_SAVED (point number there), FROM_SPILL (offset there) */
};

enum { FROM_MEMORY, FROM_SAVED, FROM_SPILL };

struct decoder {
    const struct inflater_ops *ops;
    struct inflater *f;
    uint64_t out;  /* output offset of the next byte it produces */
    uint64_t in;   /* input offset of buf[0]... */
    size_t pos;    /* ...of which buf[pos..have) is not consumed yet */
    size_t have;
    uint64_t base; /* input offset of the last reset: boundary() counts from there */
    bool ended;
    unsigned char tail[ZINDEX_WINDOW]; /* the frontier: output before the current piece */
    size_t tail_len;
    unsigned char buf[IN_BUF];
};

struct zindex {
    struct zindex_source src;
    const struct inflater_ops *ops;  /* the frontier's decoder */
    const struct inflater_ops *rops; /* restarts' */
    size_t piece;
    struct budget *mem;
    struct spill *spill;
    uint64_t fine;         /* spacing of spilled checkpoints; 0: none */
    pthread_mutex_t lock;  /* guards everything below except the frontier fields */
    uint64_t span;         /* grows when checkpoints are thinned */
    uint64_t coarse;       /* output offset of the last checkpoint kept in memory */
    struct point *pts;
    uint64_t npoints, cap;
    uint32_t *pcrc;        /* CRC-32 of pieces 0..ncrc-1 */
    uint64_t ncrc, pcrc_cap;
    uint64_t fpos;         /* the frontier: output offset, a piece boundary or usize */
    bool complete;
    int err;
    const char *why;
    struct decoder *cursor;
    uint64_t charged;      /* bytes taken from mem */
    struct zindex_fetch fetch; /* windows of imported points */
    bool imported;
    atomic_uint_fast64_t decoded; /* output bytes produced by all decoders, for statistics */
    atomic_int fg_wanted;  /* a foreground producer found the frontier busy (and went away) */
    atomic_int fg_blocked; /* foreground producers blocked on the build lock right now */

    pthread_mutex_t build; /* held by the one thread extending the frontier */
    struct decoder *frontier;
    bool frontier_parked;  /* idle between extensions, and charged for it */
    uint32_t crc;          /* CRC-32 of output [0, fpos) */
};

static int fail(struct zindex *zi, const char *why)
{
    pthread_mutex_lock(&zi->lock);
    if (!zi->err) {
        zi->err = -EIO;
        zi->why = why;
    }
    pthread_mutex_unlock(&zi->lock);
    return -EIO;
}

static uint64_t npieces(const struct zindex *zi)
{
    return (zi->src.usize + zi->piece - 1) / zi->piece;
}

/* Length of piece q. */
static size_t piece_len(const struct zindex *zi, uint64_t q)
{
    uint64_t start = q * zi->piece;
    return (size_t)(zi->src.usize - start < zi->piece ? zi->src.usize - start : zi->piece);
}

/* ---- memory accounting (lock held) ---- */

static int charge(struct zindex *zi, uint64_t n)
{
    if (zi->mem && budget_take(zi->mem, n) < 0)
        return -ENOMEM;
    zi->charged += n;
    return 0;
}

static void refund(struct zindex *zi, uint64_t n)
{
    if (zi->mem)
        budget_give(zi->mem, n);
    zi->charged -= n;
}

/* ---- decoders ---- */

/* What an idle decoder costs the budget. */
static uint64_t decoder_bytes(const struct inflater_ops *ops)
{
    return sizeof(struct decoder) + ops->memory;
}

static struct decoder *decoder_new(const struct inflater_ops *ops)
{
    struct decoder *d = malloc(sizeof *d);
    if (!d)
        return NULL;
    if (!(d->f = ops->new())) {
        free(d);
        return NULL;
    }
    d->ops = ops;
    d->out = d->in = d->base = 0;
    d->pos = d->have = d->tail_len = 0;
    d->ended = false;
    return d;
}

static void decoder_free(struct decoder *d)
{
    if (d) {
        d->ops->free(d->f);
        free(d);
    }
}

/* The byte at input offset at, from the buffer when it holds it. */
static int input_byte(struct decoder *d, const struct zindex_source *src, uint64_t at,
                      unsigned char *byte)
{
    if (at >= d->in && at < d->in + d->have) {
        *byte = d->buf[at - d->in];
        return 0;
    }
    return source_read(src->archive, byte, 1, src->offset + at);
}

/* Positions d at a block boundary: input offset in (bits leftover bits of byte in - 1),
 * output offset out, with window raw[0..wlen). Input still buffered is kept. */
static int decoder_reset(struct decoder *d, const struct zindex_source *src, uint64_t in,
                         int bits, uint64_t out, const unsigned char *raw, uint32_t wlen)
{
    unsigned char prev = 0;
    int rc = bits ? input_byte(d, src, in - 1, &prev) : 0;
    if (rc < 0)
        return rc;
    if (d->ops->reset(d->f, bits, prev, raw, wlen) < 0)
        return -EIO;
    if (in >= d->in && in <= d->in + d->have) {
        d->pos = (size_t)(in - d->in);
    } else {
        d->in = in;
        d->pos = d->have = 0;
    }
    d->base = in;
    d->out = out;
    d->ended = false;
    return 0;
}

/* Unpacks p's window into raw, reading it from the spill or the saved index when it lives
 * there. A window that cannot be read back fails the member: a saved one like any other
 * mismatch with the file, a spilled one with a reason of its own (the file is not at fault). */
static int load_window(struct zindex *zi, const struct point *p, unsigned char *raw, bool locked)
{
    if (p->from == FROM_MEMORY)
        return window_unpack(p->win, p->zlen, raw, p->wlen);
    bool ok;
    if (p->from == FROM_SPILL) {
        ok = spill_get(zi->spill, raw, p->wlen, p->where) == 0;
    } else {
        unsigned char z[ZINDEX_WINDOW];
        int n = zi->fetch.window && p->zlen <= sizeof z
                    ? zi->fetch.window(zi->fetch.ctx, p->where, z, sizeof z) : -EIO;
        ok = n >= 0 && (uint32_t)n == p->zlen && window_unpack(z, p->zlen, raw, p->wlen) == 0;
    }
    if (!ok && !locked) /* only a saved file's failure may have the file dropped (WHY_SAVED) */
        fail(zi, p->from == FROM_SPILL ? "cannot read a checkpoint window back from the spill"
                                       : ZINDEX_WHY_SAVED);
    return ok ? 0 : -EIO;
}

/* Positions d at checkpoint p. */
static int decoder_seek(struct decoder *d, struct zindex *zi, const struct point *p)
{
    unsigned char raw[ZINDEX_WINDOW];
    if (p->wlen && load_window(zi, p, raw, false) < 0)
        return -EIO;
    d->tail_len = 0;
    return decoder_reset(d, &zi->src, p->in, p->bits, p->out, raw, p->wlen);
}

/* One decode step into dst[0..room), reading more input first when all of it was used.
 * Returns INFLATER_OK, INFLATER_END or INFLATER_BLOCK_END with *made set, or a negative errno
 * (-EIO for corrupt data or a stream that runs past csize). */
static int decoder_step(struct decoder *d, const struct zindex_source *src, unsigned char *dst,
                        size_t room, int flags, size_t *made)
{
    *made = 0;
    if (d->ended)
        return INFLATER_END;
    if (d->pos == d->have && d->in + d->have < src->csize) {
        uint64_t at = d->in + d->have;
        size_t n = src->csize - at < IN_BUF ? (size_t)(src->csize - at) : IN_BUF;
        int rc = source_read(src->archive, d->buf, n, src->offset + at);
        if (rc < 0)
            return rc;
        d->in = at;
        d->pos = 0;
        d->have = n;
    }
    size_t used = 0;
    int rc = d->ops->step(d->f, d->buf + d->pos, d->have - d->pos, &used, dst, room, made,
                          flags);
    d->pos += used;
    d->out += *made;
    if (rc == INFLATER_END)
        d->ended = true;
    if (rc == INFLATER_OK && !used && !*made && d->pos == d->have &&
        d->in + d->have >= src->csize)
        return -EIO; /* wants input past the member's compressed size */
    return rc;
}

/* Keeps the last 32 KiB of output before the next piece: a checkpoint's window may reach
 * back into pieces already handed over. */
static void keep_tail(struct decoder *d, const unsigned char *piece, size_t len)
{
    if (len >= ZINDEX_WINDOW) {
        memcpy(d->tail, piece + len - ZINDEX_WINDOW, ZINDEX_WINDOW);
        d->tail_len = ZINDEX_WINDOW;
        return;
    }
    size_t keep = d->tail_len + len > ZINDEX_WINDOW ? ZINDEX_WINDOW - len : d->tail_len;
    memmove(d->tail, d->tail + d->tail_len - keep, keep);
    memcpy(d->tail + keep, piece, len);
    d->tail_len = keep + len;
}

/* The last (up to) 32 KiB of output: the tail, then buf[0..used). Returns its length. */
static uint32_t last_window(const struct decoder *d, const unsigned char *buf, size_t used,
                            unsigned char *raw)
{
    if (used >= ZINDEX_WINDOW) {
        memcpy(raw, buf + used - ZINDEX_WINDOW, ZINDEX_WINDOW);
        return ZINDEX_WINDOW;
    }
    size_t from_tail = d->tail_len < ZINDEX_WINDOW - used ? d->tail_len : ZINDEX_WINDOW - used;
    memcpy(raw, d->tail + d->tail_len - from_tail, from_tail);
    memcpy(raw + from_tail, buf, used);
    return (uint32_t)(from_tail + used);
}

/* ---- checkpoints ---- */

/* Drops every other checkpoint whose window is in memory and doubles the span. Windows
 * elsewhere (spill, saved file) cost nothing here, so their points stay. Lock held. */
static void thin(struct zindex *zi)
{
    uint64_t kept = 1, in_memory = 0;
    for (uint64_t i = 1; i < zi->npoints; i++) {
        if (zi->pts[i].from != FROM_MEMORY || in_memory++ % 2 == 1) {
            zi->pts[kept++] = zi->pts[i];
        } else {
            refund(zi, zi->pts[i].zlen);
            free(zi->pts[i].win);
        }
    }
    zi->npoints = kept;
    zi->span *= 2;
}

/* Room for one more point in the table. Lock held. */
static int reserve_point(struct zindex *zi)
{
    if (zi->npoints < zi->cap)
        return 0;
    uint64_t grow = zi->cap * sizeof *zi->pts;
    if (charge(zi, grow) < 0)
        return -ENOMEM;
    struct point *p = realloc(zi->pts, zi->cap * 2 * sizeof *p);
    if (!p) {
        refund(zi, grow);
        return -ENOMEM;
    }
    zi->pts = p;
    zi->cap *= 2;
    return 0;
}

/* Records a checkpoint (a block boundary) with its window in memory. Under memory pressure
 * the window is packed, then older checkpoints are thinned; if even that leaves no room the
 * point is skipped (the span widens, nothing fails). Returns whether it was kept. Lock not
 * held. */
static bool add_point(struct zindex *zi, uint64_t out, uint64_t in, int bits,
                      const unsigned char *raw, uint32_t wlen)
{
    struct point p = {.out = out, .in = in, .bits = bits, .wlen = wlen, .from = FROM_MEMORY};
    if (window_pack(raw, wlen, WINDOW_CHEAP, &p.win, &p.zlen) < 0)
        return false;
    pthread_mutex_lock(&zi->lock);
    bool packed = p.zlen < p.wlen;
    for (int tries = 0; tries < 3; tries++) {
        if (reserve_point(zi) == 0 && charge(zi, p.zlen) == 0) {
            zi->pts[zi->npoints++] = p;
            pthread_mutex_unlock(&zi->lock);
            return true;
        }
        if (!packed) { /* pressure: pay for a real attempt at packing */
            unsigned char *z;
            uint32_t zlen;
            if (window_pack(raw, wlen, WINDOW_FULL, &z, &zlen) == 0) {
                free(p.win);
                p.win = z;
                p.zlen = zlen;
            }
            packed = true;
        } else if (zi->npoints > 2) {
            thin(zi);
        }
    }
    pthread_mutex_unlock(&zi->lock);
    free(p.win);
    return false;
}

/* Records a fine checkpoint: its window goes to the spill, its entry to the table. A point
 * that cannot be recorded is skipped. Lock not held. */
static void spill_point(struct zindex *zi, uint64_t out, uint64_t in, int bits,
                        const unsigned char *raw, uint32_t wlen)
{
    struct point p = {.out = out, .in = in, .bits = bits, .wlen = wlen, .from = FROM_SPILL};
    if (spill_put(zi->spill, raw, wlen, &p.where) < 0)
        return;
    pthread_mutex_lock(&zi->lock);
    if (reserve_point(zi) == 0)
        zi->pts[zi->npoints++] = p;
    pthread_mutex_unlock(&zi->lock);
}

/* The output offset at which the first pass wants its next checkpoint. Lock held. */
static uint64_t next_point(const struct zindex *zi)
{
    uint64_t coarse = zi->coarse + zi->span;
    uint64_t fine = zi->pts[zi->npoints - 1].out + zi->fine;
    return zi->fine && fine < coarse ? fine : coarse;
}

/* The last checkpoint at or before off. Lock held. */
static const struct point *point_before(const struct zindex *zi, uint64_t off)
{
    uint64_t lo = 0, hi = zi->npoints;
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (zi->pts[mid].out <= off)
            lo = mid;
        else
            hi = mid;
    }
    return &zi->pts[lo];
}

/* Records the CRC of frontier piece q. Lock held. Pieces beyond what the budget allows keep
 * no CRC: they are then served unverified when decoded again, like any plain zran index. */
static void record_crc(struct zindex *zi, uint64_t q, uint32_t crc)
{
    if (q != zi->ncrc)
        return;
    if (q >= zi->pcrc_cap) {
        uint64_t ncap = zi->pcrc_cap ? zi->pcrc_cap * 2 : 64;
        if (ncap > npieces(zi))
            ncap = npieces(zi);
        if (ncap <= q || charge(zi, (ncap - zi->pcrc_cap) * sizeof *zi->pcrc) < 0)
            return;
        uint32_t *p = realloc(zi->pcrc, ncap * sizeof *p);
        if (!p) {
            refund(zi, (ncap - zi->pcrc_cap) * sizeof *zi->pcrc);
            return;
        }
        zi->pcrc = p;
        zi->pcrc_cap = ncap;
    }
    zi->pcrc[q] = crc;
    zi->ncrc++;
}

/* A private copy of p's packed window (p->win may be freed by thinning once the lock is
 * dropped). Lock held. Returns 0 or -ENOMEM. */
static int copy_point(const struct point *p, struct point *out)
{
    *out = *p;
    if (!p->win)
        return 0;
    if (!(out->win = malloc(p->zlen)))
        return -ENOMEM;
    memcpy(out->win, p->win, p->zlen);
    return 0;
}

/* ---- creation ---- */

struct zindex *zindex_new(const struct zindex_source *src, const struct zindex_params *p)
{
    struct zindex *zi = calloc(1, sizeof *zi);
    if (!zi)
        return NULL;
    zi->src = *src;
    zi->span = p->span < ZINDEX_WINDOW ? ZINDEX_WINDOW : p->span;
    zi->piece = p->piece < 4096 ? 4096 : p->piece;
    zi->mem = p->mem;
    zi->spill = p->spill;
    zi->fine = p->spill && p->fine >= ZINDEX_WINDOW && p->fine < zi->span ? p->fine : 0;
    /* ISA-L is the faster decoder, but it reads up to 64 KiB ahead after each restart, so it
     * cannot stop at block ends spaced closer than that: a first pass recording short spans
     * is zlib's. Restarts never stop early, so they are always ISA-L's. */
    uint64_t closest = zi->fine ? zi->fine : zi->span;
    zi->ops = p->decoder ? p->decoder : closest >= ISAL_MIN_SPAN ? &inflater_isal
                                                                  : &inflater_zlib;
    zi->rops = p->decoder ? p->decoder : &inflater_isal;
    zi->cap = 16;
    zi->pts = calloc(zi->cap, sizeof *zi->pts);
    if (!zi->pts) {
        free(zi);
        return NULL;
    }
    zi->npoints = 1; /* the start of the stream needs no window */
    zi->complete = src->usize == 0 && src->csize == 0;
    atomic_init(&zi->fg_wanted, 0);
    atomic_init(&zi->fg_blocked, 0);
    pthread_mutex_init(&zi->lock, NULL);
    pthread_mutex_init(&zi->build, NULL);
    return zi;
}

void zindex_free(struct zindex *zi)
{
    if (!zi)
        return;
    for (uint64_t i = 0; i < zi->npoints; i++)
        free(zi->pts[i].win);
    if (zi->mem)
        budget_give(zi->mem, zi->charged);
    free(zi->pts);
    free(zi->pcrc);
    decoder_free(zi->cursor);
    decoder_free(zi->frontier);
    pthread_mutex_destroy(&zi->lock);
    pthread_mutex_destroy(&zi->build);
    free(zi);
}

/* ---- decoding a run of output ---- */

/* At a block end the frontier asked for: records the checkpoint and restarts d from it. */
static int checkpoint(struct zindex *zi, struct decoder *d, const unsigned char *buf,
                      size_t used)
{
    int bits;
    uint64_t in = d->base + d->ops->boundary(d->f, &bits);
    unsigned char raw[ZINDEX_WINDOW];
    uint32_t wlen = last_window(d, buf, used, raw);
    int rc = decoder_reset(d, &zi->src, in, bits, d->out, raw, wlen);
    if (rc < 0 || d->out >= zi->src.usize)
        return rc;
    pthread_mutex_lock(&zi->lock);
    bool coarse = d->out >= zi->coarse + zi->span;
    if (coarse) /* also when it cannot be kept: the next one is due a span later */
        zi->coarse = d->out;
    pthread_mutex_unlock(&zi->lock);
    /* a coarse point the memory budget cannot keep is still worth a fine one */
    if ((!coarse || !add_point(zi, d->out, in, bits, raw, wlen)) && zi->fine)
        spill_point(zi, d->out, in, bits, raw, wlen);
    return rc;
}

/* Decodes exactly len bytes at d into buf (recording checkpoints when rec). Returns 0, 1 if
 * the stream ended exactly there, -ENODATA if it ended before, or another negative errno. */
static int decode_into(struct zindex *zi, struct decoder *d, unsigned char *buf, size_t len,
                       bool rec)
{
    size_t used = 0;
    while (used < len) {
        int flags = 0;
        size_t room = len - used;
        if (rec) { /* the first block end a span after the last checkpoint: decode up to just
                    * before it, then ask for a stop at the end of the block there */
            pthread_mutex_lock(&zi->lock);
            uint64_t want = next_point(zi);
            pthread_mutex_unlock(&zi->lock);
            if (d->out + 1 >= want)
                flags = INFLATER_STOP_AT_BLOCK;
            else if (want - 1 - d->out < room)
                room = (size_t)(want - 1 - d->out);
        }
        size_t made;
        int rc = decoder_step(d, &zi->src, buf + used, room, flags, &made);
        used += made;
        atomic_fetch_add_explicit(&zi->decoded, made, memory_order_relaxed);
        if (rc == INFLATER_BLOCK_END)
            rc = checkpoint(zi, d, buf, used);
        if (rc < 0)
            return rc;
        if (rc == INFLATER_END) {
            keep_tail(d, buf, used);
            return used == len ? 1 : -ENODATA; /* the member is shorter than declared */
        }
    }
    keep_tail(d, buf, used);
    return 0;
}

/* After the member's last byte the stream must end: one more byte of output means the
 * member is longer than the central directory says. */
static int expect_end(struct zindex *zi, struct decoder *d)
{
    for (;;) {
        unsigned char extra;
        size_t made;
        int rc = decoder_step(d, &zi->src, &extra, 1, 0, &made);
        if (made)
            return fail(zi, "member longer than its declared size");
        if (rc == INFLATER_END)
            return 0;
        if (rc < 0)
            return rc == -ENOMEM ? rc : fail(zi, "corrupt deflate data");
    }
}

/* Skips d forward to output offset `to` (d->out <= to), decoding into scratch (a piece). */
static int skip_to(struct zindex *zi, struct decoder *d, uint64_t to, unsigned char *scratch,
                   const struct stop *stop)
{
    int rc = 0;
    while (rc == 0 && d->out < to) {
        uint64_t n = to - d->out < zi->piece ? to - d->out : zi->piece;
        rc = decode_into(zi, d, scratch, (size_t)n, false);
        if (rc == 1 || rc == -ENODATA) /* the stream cannot end before the member does */
            rc = rc == 1 && d->out == zi->src.usize && to == zi->src.usize ? 0 : -EIO;
        if (rc == 0 && stop_now(stop))
            rc = -EINTR;
    }
    return rc;
}

/* skip_to with a scratch piece borrowed from sink. */
static int skip_with(struct zindex *zi, struct decoder *d, uint64_t to,
                     const struct zindex_sink *sink, const struct stop *stop)
{
    if (d->out >= to)
        return 0;
    unsigned char *scratch = sink->buffer(sink->ctx);
    if (!scratch)
        return -ENOMEM;
    int rc = skip_to(zi, d, to, scratch, stop);
    sink->unused(sink->ctx, scratch);
    return rc;
}

/* ---- the frontier ---- */

/* The frontier of an empty member: the stream must end before any output, with the CRC of
 * nothing. Build lock held. */
static int frontier_empty(struct zindex *zi, struct decoder *d)
{
    int rc = expect_end(zi, d);
    if (rc < 0)
        return rc;
    if (zi->src.crc32 != 0)
        return fail(zi, "CRC-32 mismatch");
    pthread_mutex_lock(&zi->lock);
    zi->complete = true;
    pthread_mutex_unlock(&zi->lock);
    return 0;
}

/* Decodes the piece at the frontier, recording checkpoints and its CRC, and hands it to sink
 * (or drops it when sink is NULL). Build lock held. */
static int frontier_piece(struct zindex *zi, const struct zindex_sink *sink,
                          unsigned char *scratch)
{
    struct decoder *d = zi->frontier;
    if (zi->src.usize == 0) /* no piece at all: the stream must end at once */
        return frontier_empty(zi, d);
    uint64_t q = zi->fpos / zi->piece;
    size_t len = piece_len(zi, q);
    unsigned char *buf = sink ? sink->buffer(sink->ctx) : scratch;
    if (!buf)
        return -ENOMEM;
    int rc = decode_into(zi, d, buf, len, true);
    if ((rc == 1 && q + 1 < npieces(zi)) || rc == -ENODATA)
        rc = fail(zi, "member shorter than its declared size");
    else if (rc < 0 && rc != -ENOMEM)
        rc = rc == -EIO ? fail(zi, "corrupt deflate data") : rc;
    else if (rc == 0 && q + 1 == npieces(zi))
        rc = expect_end(zi, d);
    if (rc < 0) {
        if (sink)
            sink->unused(sink->ctx, buf);
        decoder_free(zi->frontier); /* its state is unknown now */
        zi->frontier = NULL;
        return rc;
    }
    uint32_t pc = crc32_gzip_refl(0, buf, len);
    zi->crc = (uint32_t)crc32_combine(zi->crc, pc, (z_off_t)len);
    bool last = q + 1 == npieces(zi);
    if (last && zi->crc != zi->src.crc32) {
        if (sink)
            sink->unused(sink->ctx, buf);
        return fail(zi, "CRC-32 mismatch");
    }
    pthread_mutex_lock(&zi->lock);
    record_crc(zi, q, pc);
    zi->fpos += len;
    zi->complete = last;
    pthread_mutex_unlock(&zi->lock);
    if (sink)
        sink->deliver(sink->ctx, q, buf, len);
    return 0;
}

/* The frontier decoder is in use again: its idle charge ends. Build lock held. */
static void unpark_frontier(struct zindex *zi)
{
    if (!zi->frontier_parked)
        return;
    zi->frontier_parked = false;
    pthread_mutex_lock(&zi->lock);
    refund(zi, decoder_bytes(zi->ops));
    pthread_mutex_unlock(&zi->lock);
}

/* Between extensions the frontier decoder waits idle: it counts against the budget then, and
 * goes when there is no room (the next extension restarts from the last checkpoint) or nothing
 * is left to decode. Build lock held. */
static void park_frontier(struct zindex *zi)
{
    if (!zi->frontier)
        return;
    unpark_frontier(zi); /* no double charge when it was not used this time */
    pthread_mutex_lock(&zi->lock);
    bool keep = !zi->complete && !zi->err && charge(zi, decoder_bytes(zi->ops)) == 0;
    pthread_mutex_unlock(&zi->lock);
    if (!keep) {
        decoder_free(zi->frontier);
        zi->frontier = NULL;
    } else {
        zi->frontier_parked = true;
    }
}

/* Makes sure the frontier decoder stands at fpos (a resumed index starts at a checkpoint
 * before it), skipping with scratch, a piece. Build lock held. */
static int frontier_ready(struct zindex *zi, unsigned char *scratch, const struct stop *stop)
{
    unpark_frontier(zi);
    if ((zi->frontier && zi->frontier->out == zi->fpos) || zindex_complete(zi))
        return 0; /* a complete index (say, a loaded one) has no frontier to resume */
    if (!zi->frontier && !(zi->frontier = decoder_new(zi->ops)))
        return -ENOMEM;
    struct point p;
    pthread_mutex_lock(&zi->lock);
    int rc = copy_point(point_before(zi, zi->fpos), &p);
    pthread_mutex_unlock(&zi->lock);
    if (rc == 0)
        rc = decoder_seek(zi->frontier, zi, &p);
    free(p.win);
    if (rc == 0)
        rc = skip_to(zi, zi->frontier, zi->fpos, scratch, stop);
    if (rc < 0) {
        decoder_free(zi->frontier);
        zi->frontier = NULL;
    }
    return rc == -EIO ? fail(zi, "cannot restart the deflate stream") : rc;
}

int zindex_ready(struct zindex *zi, uint64_t q)
{
    pthread_mutex_lock(&zi->lock);
    int rc = zi->err ? zi->err : zi->complete || (q + 1) * zi->piece <= zi->fpos;
    pthread_mutex_unlock(&zi->lock);
    return rc;
}

/* Advances the frontier until piece q is delivered. Returns 1 when this call delivered q to
 * sink, 0 when the frontier had passed q already (delivered to whoever moved it), or an
 * error. */
static int extend(struct zindex *zi, uint64_t q, const struct zindex_sink *sink,
                  const struct stop *stop, bool nowait)
{
    if (pthread_mutex_trylock(&zi->build) != 0) {
        /* an index-only pass gives way within a piece */
        if (nowait) {
            atomic_store(&zi->fg_wanted, 1);
            return -EAGAIN;
        }
        atomic_fetch_add(&zi->fg_blocked, 1);
        int locked = pthread_mutex_lock(&zi->build);
        atomic_fetch_sub(&zi->fg_blocked, 1);
        if (locked != 0)
            return -EAGAIN;
    }
    unsigned char *scratch = sink->buffer(sink->ctx);
    int rc = scratch ? frontier_ready(zi, scratch, stop) : -ENOMEM;
    if (scratch)
        sink->unused(sink->ctx, scratch);
    bool delivered = false;
    while (rc == 0 && (rc = zindex_ready(zi, q)) == 0) {
        if (stop_now(stop)) {
            rc = -EINTR;
            break;
        }
        uint64_t at = zi->fpos / zi->piece; /* only this thread moves fpos */
        if ((rc = frontier_piece(zi, sink, NULL)) == 0)
            delivered = at == q;
    }
    atomic_store(&zi->fg_wanted, 0);
    park_frontier(zi);
    pthread_mutex_unlock(&zi->build);
    return rc < 0 ? rc : delivered;
}

/* Whether an index-only pass must give way: a reader is blocked on the frontier, or one
 * found it busy since the pass last gave way (yielding once per such request, so that a
 * reader that went away does not stall the pass for good). */
static bool fg_first(struct zindex *zi)
{
    return atomic_load(&zi->fg_blocked) > 0 || atomic_exchange(&zi->fg_wanted, 0) > 0;
}

int zindex_advance(struct zindex *zi, unsigned char *scratch, const struct stop *stop)
{
    if (fg_first(zi) || pthread_mutex_trylock(&zi->build) != 0)
        return -EAGAIN;
    pthread_mutex_lock(&zi->lock);
    int rc = zi->err; /* a failed member stays failed, whatever is left to index */
    pthread_mutex_unlock(&zi->lock);
    if (rc == 0)
        rc = frontier_ready(zi, scratch, stop);
    for (int n = 0; rc == 0 && !zindex_complete(zi); n++) {
        if (n == ADVANCE_SLICE)
            break;
        if (stop_now(stop))
            rc = -EINTR;
        else if (fg_first(zi))
            rc = -EAGAIN;
        else
            rc = frontier_piece(zi, NULL, scratch);
    }
    park_frontier(zi);
    pthread_mutex_unlock(&zi->build);
    return rc < 0 ? rc : zindex_complete(zi);
}

/* ---- restarts below the frontier ---- */

/* Takes the spare decoder (any decoder will do; one already near the piece saves a restart). */
static struct decoder *take_cursor(struct zindex *zi)
{
    pthread_mutex_lock(&zi->lock);
    struct decoder *d = zi->cursor;
    zi->cursor = NULL;
    if (d)
        refund(zi, decoder_bytes(zi->rops));
    pthread_mutex_unlock(&zi->lock);
    return d ? d : decoder_new(zi->rops);
}

/* Keeps d as the spare cursor while the budget has room for an idle decoder. */
static void return_cursor(struct zindex *zi, struct decoder *d)
{
    pthread_mutex_lock(&zi->lock);
    struct decoder *old = NULL;
    if (zi->cursor || charge(zi, decoder_bytes(zi->rops)) < 0) {
        old = d;
    } else {
        zi->cursor = d;
    }
    pthread_mutex_unlock(&zi->lock);
    decoder_free(old);
}

/* Positions d at or before output offset `at`, at a checkpoint unless it already stands
 * between the right checkpoint and `at`. */
static int position(struct zindex *zi, struct decoder *d, uint64_t at)
{
    struct point p;
    pthread_mutex_lock(&zi->lock);
    const struct point *near = point_before(zi, at);
    bool keep = d->out <= at && d->out >= near->out && d->out > 0;
    int rc = keep ? 0 : copy_point(near, &p);
    pthread_mutex_unlock(&zi->lock);
    if (keep || rc < 0)
        return rc;
    rc = decoder_seek(d, zi, &p);
    free(p.win);
    return rc;
}

/* Checks a piece decoded again against the CRC the frontier recorded for it. */
static int verify(struct zindex *zi, uint64_t q, const unsigned char *buf, size_t len)
{
    pthread_mutex_lock(&zi->lock);
    bool known = q < zi->ncrc;
    uint32_t want = known ? zi->pcrc[q] : 0;
    pthread_mutex_unlock(&zi->lock);
    if (known && crc32_gzip_refl(0, buf, len) != want)
        return fail(zi, zi->imported ? ZINDEX_WHY_SAVED : "decoded data differs from the indexed CRC-32");
    return 0;
}

/* Decodes pieces from the nearest checkpoint (or the cursor) up to and including q. */
static int restart(struct zindex *zi, uint64_t q, const struct zindex_sink *sink,
                   const struct stop *stop)
{
    struct decoder *d = take_cursor(zi);
    if (!d)
        return -ENOMEM;
    uint64_t start = q * zi->piece;
    int rc = position(zi, d, start);
    if (rc == 0 && d->out % zi->piece) /* a checkpoint inside a piece: skip to the next one */
        rc = skip_with(zi, d, (d->out / zi->piece + 1) * zi->piece, sink, stop);
    while (rc == 0 && d->out <= start) {
        uint64_t k = d->out / zi->piece;
        size_t len = piece_len(zi, k);
        unsigned char *buf = sink->buffer(sink->ctx);
        if (!buf) {
            rc = -ENOMEM;
            break;
        }
        rc = decode_into(zi, d, buf, len, false);
        if (rc == 1 || rc == -ENODATA)
            rc = rc == 1 && k + 1 == npieces(zi) ? 0 : -EIO;
        if (rc == 0)
            rc = verify(zi, k, buf, len);
        if (rc < 0) {
            sink->unused(sink->ctx, buf);
            break;
        }
        sink->deliver(sink->ctx, k, buf, len);
        if (k < q && stop_now(stop))
            rc = -EINTR;
        if (k == q)
            break;
    }
    if (rc == -EIO && !zindex_why(zi))
        fail(zi, "corrupt deflate data");
    if (rc < 0 && rc != -EINTR)
        decoder_free(d);
    else
        return_cursor(zi, d);
    return rc;
}

int zindex_produce(struct zindex *zi, uint64_t q, const struct zindex_sink *sink,
                   const struct stop *stop, bool nowait)
{
    if (q >= npieces(zi))
        return -EINVAL;
    for (;;) {
        int rc = zindex_ready(zi, q);
        if (rc < 0)
            return rc;
        if (rc == 1)
            return restart(zi, q, sink, stop);
        rc = extend(zi, q, sink, stop, nowait);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
}

/* ---- queries ---- */

bool zindex_complete(struct zindex *zi)
{
    pthread_mutex_lock(&zi->lock);
    bool done = zi->complete;
    pthread_mutex_unlock(&zi->lock);
    return done;
}

uint64_t zindex_indexed(struct zindex *zi)
{
    pthread_mutex_lock(&zi->lock);
    uint64_t n = zi->complete ? zi->src.usize : zi->fpos;
    pthread_mutex_unlock(&zi->lock);
    return n;
}

const char *zindex_why(struct zindex *zi)
{
    pthread_mutex_lock(&zi->lock);
    const char *why = zi->why;
    pthread_mutex_unlock(&zi->lock);
    return why;
}

uint64_t zindex_points(struct zindex *zi)
{
    pthread_mutex_lock(&zi->lock);
    uint64_t n = zi->npoints;
    pthread_mutex_unlock(&zi->lock);
    return n;
}

uint64_t zindex_decoded(struct zindex *zi)
{
    return atomic_load_explicit(&zi->decoded, memory_order_relaxed);
}

uint64_t zindex_memory(struct zindex *zi)
{
    pthread_mutex_lock(&zi->lock);
    uint64_t n = sizeof *zi + zi->cap * sizeof *zi->pts + zi->charged;
    pthread_mutex_unlock(&zi->lock);
    return n;
}

/* ---- saving and loading ---- */

int zindex_snapshot(struct zindex *zi, struct zindex_snapshot *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&zi->lock);
    int rc = zi->err;
    out->span = zi->span;
    out->piece = zi->piece;
    out->indexed = zi->complete ? zi->src.usize : zi->fpos;
    out->npoints = zi->npoints;
    out->ncrc = zi->ncrc;
    out->pts = rc ? NULL : calloc(zi->npoints, sizeof *out->pts);
    out->pcrc = rc ? NULL : malloc((zi->ncrc ? zi->ncrc : 1) * sizeof *out->pcrc);
    if (!rc && (!out->pts || !out->pcrc))
        rc = -ENOMEM;
    for (uint64_t k = 0; rc == 0 && k < zi->npoints; k++) {
        const struct point *p = &zi->pts[k];
        struct zindex_point *o = &out->pts[k];
        *o = (struct zindex_point){p->out, p->in, p->bits, p->wlen, p->zlen, NULL, p->from,
                                   p->where};
        if (!p->wlen || p->from != FROM_MEMORY)
            continue; /* fetched by zindex_window when saved: it stays where it is */
        /* thinning may free it once the lock is dropped: take a copy, packed harder */
        unsigned char raw[ZINDEX_WINDOW];
        rc = window_unpack(p->win, p->zlen, raw, p->wlen);
        if (rc == 0)
            rc = window_pack(raw, p->wlen, WINDOW_SAMPLED, &o->win, &o->zlen);
    }
    if (rc == 0 && zi->ncrc)
        memcpy(out->pcrc, zi->pcrc, zi->ncrc * sizeof *out->pcrc);
    pthread_mutex_unlock(&zi->lock);
    if (rc < 0)
        zindex_snapshot_free(out);
    return rc;
}

int zindex_window(struct zindex *zi, const struct zindex_point *p, unsigned char *z, size_t cap)
{
    if (p->win || !p->wlen) {
        if (p->zlen > cap)
            return -ENOBUFS;
        if (p->zlen)
            memcpy(z, p->win, p->zlen);
        return (int)p->zlen;
    }
    if (p->from == FROM_SAVED) {
        int n = zi->fetch.window(zi->fetch.ctx, p->where, z, cap);
        return n < 0 ? n : (uint32_t)n == p->zlen ? n : -EIO;
    }
    unsigned char raw[ZINDEX_WINDOW], *packed;
    uint32_t zlen;
    if (p->wlen > sizeof raw || spill_get(zi->spill, raw, p->wlen, p->where) < 0)
        return -EIO;
    if (window_pack(raw, p->wlen, WINDOW_SAMPLED, &packed, &zlen) < 0)
        return -ENOMEM;
    int rc = zlen > cap ? -ENOBUFS : (int)zlen;
    if (rc > 0)
        memcpy(z, packed, zlen);
    free(packed);
    return rc;
}

void zindex_snapshot_free(struct zindex_snapshot *s)
{
    for (uint64_t k = 0; s->pts && k < s->npoints; k++)
        free(s->pts[k].win);
    free(s->pts);
    free(s->pcrc);
    memset(s, 0, sizeof *s);
}

int zindex_import(struct zindex *zi, const struct zindex_snapshot *s,
                  const struct zindex_fetch *fetch)
{
    if (s->piece != zi->piece || s->npoints == 0 || s->pts[0].out != 0 ||
        s->indexed > zi->src.usize || (s->indexed % zi->piece && s->indexed != zi->src.usize) ||
        s->ncrc != (s->indexed + zi->piece - 1) / zi->piece)
        return -EINVAL;
    uint64_t table = s->npoints * sizeof(struct point) + s->ncrc * sizeof(uint32_t);
    pthread_mutex_lock(&zi->lock);
    int rc = zi->fpos || zi->npoints > 1 || zi->err ? -EBUSY : charge(zi, table);
    struct point *pts = rc ? NULL : calloc(s->npoints, sizeof *pts);
    uint32_t *pcrc = rc ? NULL : malloc((s->ncrc ? s->ncrc : 1) * sizeof *pcrc);
    if (rc == 0 && (!pts || !pcrc)) {
        refund(zi, table);
        rc = -ENOMEM;
    }
    if (rc < 0) {
        pthread_mutex_unlock(&zi->lock);
        free(pts);
        free(pcrc);
        return rc;
    }
    for (uint64_t k = 0; k < s->npoints; k++)
        pts[k] = (struct point){s->pts[k].out, s->pts[k].in, s->pts[k].bits, s->pts[k].wlen,
                                s->pts[k].zlen, NULL, k ? FROM_SAVED : FROM_MEMORY, k};
    memcpy(pcrc, s->pcrc, s->ncrc * sizeof *pcrc);
    free(zi->pts);
    free(zi->pcrc);
    zi->pts = pts;
    zi->npoints = zi->cap = s->npoints;
    zi->pcrc = pcrc;
    zi->ncrc = zi->pcrc_cap = s->ncrc;
    zi->fpos = s->indexed;
    zi->complete = s->indexed == zi->src.usize;
    zi->crc = 0; /* the frontier's running CRC resumes from the pieces' */
    for (uint64_t q = 0; q < s->ncrc; q++)
        zi->crc = (uint32_t)crc32_combine(zi->crc, pcrc[q], (z_off_t)piece_len(zi, q));
    zi->span = s->span;
    zi->coarse = pts[s->npoints - 1].out;
    zi->fetch = *fetch;
    zi->imported = true;
    pthread_mutex_unlock(&zi->lock);
    return 0;
}
