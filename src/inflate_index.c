/*
 * inflate_index: see inflate_index.h for the algorithm and its contract.
 *
 * Two decoders live with an index: the frontier decoder, which only the extending thread
 * touches and which simply keeps going from one chunk to the next, and a spare "cursor" left
 * where the last indexed-chunk decode stopped, so that reading chunk k+1 after chunk k continues
 * the stream instead of restarting from a checkpoint.
 */
#include "inflate_index.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "io.h"

#define IN_BUF (64u << 10)

struct point {
    uint64_t out;          /* output offset of the checkpoint */
    uint64_t in;           /* input bytes consumed at that moment */
    int bits;              /* unused bits left in byte in - 1 (0-7) */
    unsigned char *window; /* the 32 KiB of output before out; NULL at out == 0 */
};

struct decoder {
    z_stream s;
    uint64_t out; /* output offset of the next byte it produces */
    uint64_t in;  /* input bytes read from the file so far (s.avail_in of them unused) */
    unsigned char buf[IN_BUF];
};

struct zindex {
    struct zindex_source src;
    uint64_t span;
    pthread_mutex_t lock;  /* guards everything below except the frontier fields */
    struct point *pts;
    uint64_t npoints, cap;
    bool complete;
    int err;
    const char *why;
    struct decoder *cursor;

    pthread_mutex_t build; /* held by the one thread extending the frontier */
    struct decoder *frontier;
    uint32_t crc;          /* CRC-32 of all output the frontier produced */
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

/* Positions d at checkpoint p: reset, prime the leftover bits, load the window. */
static int decoder_seek(struct decoder *d, const struct zindex_source *src, const struct point *p)
{
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
    if (p->window && inflateSetDictionary(&d->s, p->window, ZINDEX_WINDOW) != Z_OK)
        return -EIO;
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
    return -EIO;     /* corrupt data, or the stream wants input past csize */
}

struct zindex *zindex_new(const struct zindex_source *src, uint64_t span)
{
    struct zindex *zi = calloc(1, sizeof *zi);
    if (!zi)
        return NULL;
    zi->src = *src;
    zi->span = span < ZINDEX_WINDOW ? ZINDEX_WINDOW : span;
    zi->cap = 16;
    zi->pts = calloc(zi->cap, sizeof *zi->pts);
    if (!zi->pts) {
        free(zi);
        return NULL;
    }
    zi->npoints = 1; /* the start of the stream needs no window */
    pthread_mutex_init(&zi->lock, NULL);
    pthread_mutex_init(&zi->build, NULL);
    return zi;
}

void zindex_free(struct zindex *zi)
{
    if (!zi)
        return;
    for (uint64_t i = 0; i < zi->npoints; i++)
        free(zi->pts[i].window);
    free(zi->pts);
    decoder_free(zi->cursor);
    decoder_free(zi->frontier);
    pthread_mutex_destroy(&zi->lock);
    pthread_mutex_destroy(&zi->build);
    free(zi);
}

/* The chunk holding off, as in zindex_locate; lock held. */
static int locate_locked(struct zindex *zi, uint64_t off, uint64_t *k, uint64_t *start,
                         uint64_t *len)
{
    if (zi->err)
        return zi->err;
    uint64_t lo = 0, hi = zi->npoints; /* find the last point with out <= off */
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (zi->pts[mid].out <= off)
            lo = mid;
        else
            hi = mid;
    }
    uint64_t end;
    if (lo + 1 < zi->npoints)
        end = zi->pts[lo + 1].out;
    else if (zi->complete)
        end = zi->src.usize;
    else
        return 0;
    *k = lo;
    *start = zi->pts[lo].out;
    *len = end - *start;
    return 1;
}

int zindex_locate(struct zindex *zi, uint64_t off, uint64_t *k, uint64_t *start, uint64_t *len)
{
    pthread_mutex_lock(&zi->lock);
    int rc = locate_locked(zi, off, k, start, len);
    pthread_mutex_unlock(&zi->lock);
    return rc;
}

/* Takes the spare decoder (any decoder will do; one already at `at` saves a restart). */
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

int zindex_decode(struct zindex *zi, uint64_t k, unsigned char **out, size_t *len)
{
    uint64_t start, n, kk;
    struct point p;
    pthread_mutex_lock(&zi->lock);
    int rc = k < zi->npoints ? locate_locked(zi, zi->pts[k].out, &kk, &start, &n) : -EINVAL;
    if (rc == 1)
        p = zi->pts[k];
    pthread_mutex_unlock(&zi->lock);
    if (rc <= 0)
        return rc < 0 ? rc : -EINVAL;

    unsigned char *buf = malloc(n ? n : 1);
    struct decoder *d = take_cursor(zi);
    if (!buf || !d) {
        free(buf);
        decoder_free(d);
        return -ENOMEM;
    }
    rc = d->out == start ? 0 : decoder_seek(d, &zi->src, &p);
    uint64_t done = 0;
    while (rc >= 0 && done < n) {
        size_t made;
        rc = decoder_step(d, &zi->src, buf + done, n - done, Z_NO_FLUSH, &made);
        done += made;
        if (rc == Z_STREAM_END && done < n)
            rc = -EIO;
    }
    /* zlib may read on past the chunk into the next block header and find it corrupt; the
     * chunk itself is complete, and the error belongs to a later chunk (the frontier reports
     * it). Such a decoder is not fit to continue, though. */
    if (rc < 0 && done < n) {
        free(buf);
        decoder_free(d);
        return rc;
    }
    if (rc < 0)
        decoder_free(d);
    else
        return_cursor(zi, d);
    *out = buf;
    *len = n;
    return 0;
}

static int add_point(struct zindex *zi, const struct decoder *d, const unsigned char *tail)
{
    unsigned char *w = malloc(ZINDEX_WINDOW);
    if (!w)
        return -ENOMEM;
    memcpy(w, tail - ZINDEX_WINDOW, ZINDEX_WINDOW);
    pthread_mutex_lock(&zi->lock);
    if (zi->npoints == zi->cap) {
        struct point *grown = realloc(zi->pts, zi->cap * 2 * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&zi->lock);
            free(w);
            return -ENOMEM;
        }
        zi->pts = grown;
        zi->cap *= 2;
    }
    zi->pts[zi->npoints++] = (struct point){
        .out = d->out,
        .in = d->in - d->s.avail_in,
        .bits = d->s.data_type & 7,
        .window = w,
    };
    pthread_mutex_unlock(&zi->lock);
    return 0;
}

/* Grows *buf so that it has room past *used; fails past ZINDEX_MAX_CHUNK. */
static int grow(unsigned char **buf, size_t *cap, size_t used)
{
    if (used < *cap)
        return 0;
    if (*cap >= ZINDEX_MAX_CHUNK)
        return -EFBIG;
    size_t ncap = *cap * 2 > ZINDEX_MAX_CHUNK ? ZINDEX_MAX_CHUNK : *cap * 2;
    unsigned char *b = realloc(*buf, ncap);
    if (!b)
        return -ENOMEM;
    *buf = b;
    *cap = ncap;
    return 0;
}

/* Decodes the frontier chunk starting at checkpoint p and records the checkpoint after it, or
 * completes the index. Build lock held. */
static int extend_one(struct zindex *zi, const struct point *p, uint64_t k, zindex_sink sink,
                      void *ctx)
{
    struct decoder *d = zi->frontier;
    if (!d && !(d = zi->frontier = decoder_new()))
        return -ENOMEM;
    int rc = d->out == p->out && p->out != 0 ? 0 : decoder_seek(d, &zi->src, p);
    if (rc < 0)
        return fail(zi, "cannot restart the deflate stream");

    uint64_t limit = zi->src.usize - p->out; /* one byte more than allowed reveals excess */
    if (limit < UINT64_MAX)
        limit++;
    size_t cap = zi->span + (64u << 10), used = 0;
    unsigned char *buf = malloc(cap);
    bool ended = false;
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if ((rc = grow(&buf, &cap, used)) < 0)
            break;
        size_t room = cap - used, made;
        if (room > limit - used)
            room = limit - used;
        rc = decoder_step(d, &zi->src, buf + used, room, Z_BLOCK, &made);
        used += made;
        if (rc < 0 || used == limit)
            break;
        if (rc == Z_STREAM_END) {
            ended = true;
            break;
        }
        bool boundary = (d->s.data_type & 0xc0) == 0x80;
        if (boundary && used >= zi->span && d->out < zi->src.usize)
            break;
    }
    if (rc == -ENOMEM) {
        free(buf);
        return rc;
    }
    if (rc < 0 || used == limit) {
        free(buf);
        return fail(zi, rc == -EFBIG ? "deflate block too large to index"
                        : used == limit ? "member longer than its declared size"
                                        : "corrupt deflate data");
    }
    /* The running CRC moves only once the chunk is accounted for: after a failed (ENOMEM)
     * checkpoint the same chunk is decoded again. */
    uint32_t crc = (uint32_t)crc32(zi->crc, buf, (uInt)used);
    if (ended) {
        if (d->out != zi->src.usize) {
            free(buf);
            return fail(zi, "member shorter than its declared size");
        }
        if (crc != zi->src.crc32) {
            free(buf);
            return fail(zi, "CRC-32 mismatch");
        }
        pthread_mutex_lock(&zi->lock);
        zi->complete = true;
        pthread_mutex_unlock(&zi->lock);
    } else if ((rc = add_point(zi, d, buf + used)) < 0) {
        free(buf);
        return rc;
    }
    zi->crc = crc;
    sink(ctx, k, buf, used);
    return 0;
}

int zindex_extend(struct zindex *zi, uint64_t off, zindex_sink sink, void *ctx)
{
    int rc = 0;
    pthread_mutex_lock(&zi->build);
    for (;;) {
        uint64_t k, start, len;
        struct point p;
        pthread_mutex_lock(&zi->lock);
        rc = locate_locked(zi, off, &k, &start, &len);
        k = zi->npoints - 1;
        p = zi->pts[k];
        pthread_mutex_unlock(&zi->lock);
        if (rc != 0)
            break;
        if ((rc = extend_one(zi, &p, k, sink, ctx)) < 0)
            break;
    }
    pthread_mutex_unlock(&zi->build);
    return rc < 0 ? rc : 0;
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

uint64_t zindex_memory(struct zindex *zi)
{
    pthread_mutex_lock(&zi->lock);
    uint64_t n = sizeof *zi + zi->cap * sizeof *zi->pts + (zi->npoints - 1) * ZINDEX_WINDOW;
    pthread_mutex_unlock(&zi->lock);
    return n;
}
