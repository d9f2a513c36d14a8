/*
 * inflate_index: see inflate_index.h for the algorithm and its contract.
 *
 * Decoders: the frontier decoder, which only the thread holding `build` touches and which
 * stays at the frontier between calls, and a spare "cursor" left where the last restart
 * stopped, so that reading piece q+1 after piece q continues the stream instead of restarting
 * from a checkpoint. Both stop only at piece boundaries. A restart that finds the cursor taken
 * makes a decoder of its own.
 *
 * The window of a new checkpoint comes from zlib itself (inflateGetDictionary): the output it
 * belongs to may already sit in pieces handed to the sink.
 */
#include "inflate_index.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "io.h"
#include "window.h"

#define IN_BUF (64u << 10)
#define ADVANCE_SLICE 64 /* pieces per zindex_advance call */

struct point {
    uint64_t out;       /* output offset of the checkpoint */
    uint64_t in;        /* input bytes consumed at that moment */
    int bits;           /* unused bits left in byte in - 1 (0-7) */
    uint32_t wlen;      /* window bytes (less than 32 KiB only near the start) */
    uint32_t zlen;      /* bytes of the packed window in win */
    unsigned char *win; /* packed window (window.h); NULL at out == 0 or when saved */
    uint64_t saved_k;   /* point number in a saved index holding the window, or NO_SAVED */
};

#define NO_SAVED UINT64_MAX

struct decoder {
    z_stream s;
    uint64_t out; /* output offset of the next byte it produces */
    uint64_t in;  /* input bytes read from the file so far (s.avail_in of them unused) */
    unsigned char buf[IN_BUF];
};

struct zindex {
    struct zindex_source src;
    size_t piece;
    struct budget *mem;
    pthread_mutex_t lock;  /* guards everything below except the frontier fields */
    uint64_t span;         /* grows when checkpoints are thinned */
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
    atomic_int fg_waiting; /* foreground producers that found the frontier busy */

    pthread_mutex_t build; /* held by the one thread extending the frontier */
    struct decoder *frontier;
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

static struct decoder *decoder_new(void)
{
    struct decoder *d = malloc(sizeof *d);
    if (!d)
        return NULL;
    memset(&d->s, 0, sizeof d->s);
    if (inflateInit2(&d->s, -15) != Z_OK) {
        free(d);
        return NULL;
    }
    d->out = d->in = 0;
    return d;
}

static void decoder_free(struct decoder *d)
{
    if (d) {
        inflateEnd(&d->s);
        free(d);
    }
}

/* Unpacks p's window into raw, reading it from the saved index when it lives there; a saved
 * window that cannot be read back fails the member like any other mismatch with the file. */
static int load_window(struct zindex *zi, const struct point *p, unsigned char *raw, bool locked)
{
    if (p->win)
        return window_unpack(p->win, p->zlen, raw, p->wlen);
    unsigned char z[ZINDEX_WINDOW];
    int n = zi->fetch.window && p->zlen <= sizeof z
                ? zi->fetch.window(zi->fetch.ctx, p->saved_k, z, sizeof z) : -EIO;
    if (n >= 0 && (uint32_t)n == p->zlen && window_unpack(z, p->zlen, raw, p->wlen) == 0)
        return 0;
    if (!locked)
        fail(zi, ZINDEX_WHY_SAVED);
    return -EIO;
}

/* Positions d at checkpoint p: reset, prime the leftover bits, load the window. */
static int decoder_seek(struct decoder *d, struct zindex *zi, const struct point *p)
{
    const struct zindex_source *src = &zi->src;
    if (inflateReset2(&d->s, -15) != Z_OK)
        return -EIO;
    if (p->bits) {
        unsigned char byte;
        int rc = io_read_exact(src->fd, &byte, 1, src->offset + p->in - 1);
        if (rc < 0)
            return rc;
        if (inflatePrime(&d->s, p->bits, byte >> (8 - p->bits)) != Z_OK)
            return -EIO;
    }
    if (p->wlen) {
        unsigned char raw[ZINDEX_WINDOW];
        if (load_window(zi, p, raw, false) < 0 ||
            inflateSetDictionary(&d->s, raw, p->wlen) != Z_OK)
            return -EIO;
    }
    d->s.avail_in = 0;
    d->in = p->in;
    d->out = p->out;
    return 0;
}

/* One inflate call into dst[0..room), refilling input first if needed. Returns the zlib code
 * (Z_OK or Z_STREAM_END) with *made set, or a negative errno for I/O or corrupt data. */
static int decoder_step(struct decoder *d, const struct zindex_source *src, unsigned char *dst,
                        size_t room, int flush, size_t *made)
{
    if (d->s.avail_in == 0 && d->in < src->csize) {
        uint64_t n = src->csize - d->in < IN_BUF ? src->csize - d->in : IN_BUF;
        int rc = io_read_exact(src->fd, d->buf, n, src->offset + d->in);
        if (rc < 0)
            return rc;
        d->s.next_in = d->buf;
        d->s.avail_in = (uInt)n;
        d->in += n;
    }
    if (room > UINT_MAX) /* zlib counts in uInt; the caller loops for the rest */
        room = UINT_MAX;
    d->s.next_out = dst;
    d->s.avail_out = (uInt)room;
    int rc = inflate(&d->s, flush);
    *made = room - d->s.avail_out;
    d->out += *made;
    if (rc == Z_OK || rc == Z_STREAM_END)
        return rc;
    if (rc == Z_BUF_ERROR && d->s.avail_in == 0 && d->in < src->csize)
        return Z_OK; /* needs input we have not read yet */
    if (rc == Z_MEM_ERROR)
        return -ENOMEM; /* zlib's window: the member is fine, the machine is short */
    return -EIO;     /* corrupt data, or the stream wants input past csize */
}

/* ---- checkpoints ---- */

/* Drops every other checkpoint (keeping the first) and doubles the span. Lock held. */
static void thin(struct zindex *zi)
{
    uint64_t kept = 1;
    for (uint64_t i = 1; i < zi->npoints; i++) {
        if (i % 2 == 0) {
            zi->pts[kept++] = zi->pts[i];
        } else if (zi->pts[i].win) { /* a saved point's window costs nothing here */
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

/* Records a checkpoint where d stands (a block boundary). Under memory pressure the window is
 * packed, then older checkpoints are thinned; if even that leaves no room the point is skipped
 * (the span widens, nothing fails). Lock not held. */
static void add_point(struct zindex *zi, struct decoder *d)
{
    unsigned char raw[ZINDEX_WINDOW];
    uInt wlen = 0;
    if (inflateGetDictionary(&d->s, raw, &wlen) != Z_OK)
        return;
    struct point p = {.out = d->out, .in = d->in - d->s.avail_in, .bits = d->s.data_type & 7,
                      .wlen = wlen, .saved_k = NO_SAVED};
    if (window_pack(raw, wlen, WINDOW_CHEAP, &p.win, &p.zlen) < 0)
        return;
    pthread_mutex_lock(&zi->lock);
    bool packed = p.zlen < p.wlen;
    for (int tries = 0; tries < 3; tries++) {
        if (reserve_point(zi) == 0 && charge(zi, p.zlen) == 0) {
            zi->pts[zi->npoints++] = p;
            pthread_mutex_unlock(&zi->lock);
            return;
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
    zi->cap = 16;
    zi->pts = calloc(zi->cap, sizeof *zi->pts);
    if (!zi->pts) {
        free(zi);
        return NULL;
    }
    zi->npoints = 1; /* the start of the stream needs no window */
    zi->pts[0].saved_k = NO_SAVED;
    zi->complete = src->usize == 0 && src->csize == 0;
    atomic_init(&zi->fg_waiting, 0);
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

/* Decodes exactly len bytes at d into buf (Z_BLOCK and checkpoints when rec). Returns 0, 1 if
 * the stream ended exactly there, or a negative errno. */
static int decode_into(struct zindex *zi, struct decoder *d, unsigned char *buf, size_t len,
                       bool rec)
{
    size_t used = 0;
    while (used < len) {
        size_t made;
        int rc = decoder_step(d, &zi->src, buf + used, len - used, rec ? Z_BLOCK : Z_NO_FLUSH,
                              &made);
        used += made;
        atomic_fetch_add_explicit(&zi->decoded, made, memory_order_relaxed);
        if (rc < 0)
            return rc;
        if (rc == Z_STREAM_END)
            return used == len ? 1 : -ENODATA; /* the member is shorter than declared */
        if (rec && (d->s.data_type & 0xc0) == 0x80 && d->out < zi->src.usize) {
            uint64_t last;
            pthread_mutex_lock(&zi->lock);
            last = zi->pts[zi->npoints - 1].out;
            uint64_t span = zi->span;
            pthread_mutex_unlock(&zi->lock);
            if (d->out - last >= span)
                add_point(zi, d);
        }
    }
    return 0;
}

/* After the member's last byte the stream must end: one more byte of output means the
 * member is longer than the central directory says. */
static int expect_end(struct zindex *zi, struct decoder *d)
{
    for (;;) {
        unsigned char extra;
        size_t made;
        int rc = decoder_step(d, &zi->src, &extra, 1, Z_NO_FLUSH, &made);
        if (made)
            return fail(zi, "member longer than its declared size");
        if (rc == Z_STREAM_END)
            return 0;
        if (rc < 0)
            return fail(zi, "corrupt deflate data");
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
    uint32_t pc = (uint32_t)crc32(0, buf, (uInt)len);
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

/* Makes sure the frontier decoder stands at fpos (a resumed index starts at a checkpoint
 * before it), skipping with scratch, a piece. Build lock held. */
static int frontier_ready(struct zindex *zi, unsigned char *scratch, const struct stop *stop)
{
    if ((zi->frontier && zi->frontier->out == zi->fpos) || zindex_complete(zi))
        return 0; /* a complete index (say, a loaded one) has no frontier to resume */
    if (!zi->frontier && !(zi->frontier = decoder_new()))
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
        atomic_fetch_add(&zi->fg_waiting, 1); /* an index-only pass gives way within a piece */
        if (nowait || pthread_mutex_lock(&zi->build) != 0)
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
    atomic_store(&zi->fg_waiting, 0);
    pthread_mutex_unlock(&zi->build);
    return rc < 0 ? rc : delivered;
}

int zindex_advance(struct zindex *zi, unsigned char *scratch, const struct stop *stop)
{
    /* A reader that wanted the frontier gets it: we yield once per request (a reader that
     * then went away does not stall the pass for good). */
    if (atomic_exchange(&zi->fg_waiting, 0) > 0 || pthread_mutex_trylock(&zi->build) != 0)
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
        else if (atomic_exchange(&zi->fg_waiting, 0) > 0)
            rc = -EAGAIN;
        else
            rc = frontier_piece(zi, NULL, scratch);
    }
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
    pthread_mutex_unlock(&zi->lock);
    return d ? d : decoder_new();
}

static void return_cursor(struct zindex *zi, struct decoder *d)
{
    pthread_mutex_lock(&zi->lock);
    struct decoder *old = zi->cursor;
    zi->cursor = d;
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
    if (known && (uint32_t)crc32(0, buf, (uInt)len) != want)
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
        *o = (struct zindex_point){p->out, p->in, p->bits, p->wlen, 0, NULL};
        if (!p->wlen)
            continue;
        if (!p->win) { /* still in the saved file: copy it as it is, packed */
            o->zlen = p->zlen;
            o->win = malloc(p->zlen);
            int n = !o->win ? -ENOMEM
                            : zi->fetch.window(zi->fetch.ctx, p->saved_k, o->win, p->zlen);
            rc = n < 0 ? n : (uint32_t)n == p->zlen ? 0 : -EIO;
            continue;
        }
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
                                s->pts[k].zlen, NULL, k};
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
    zi->fetch = *fetch;
    zi->imported = true;
    pthread_mutex_unlock(&zi->lock);
    return 0;
}
