/*
 * reader_deflate: method 8, through a checkpoint index (inflate_index.h) and the shared piece
 * cache (cache.h). A read walks the pieces it overlaps. A ready piece is copied. A piece below
 * the index's frontier is claimed in the cache and decoded from the nearest checkpoint
 * (concurrent readers of the same piece wait for, or in NOWAIT mode retry after, the one
 * decoding it). A piece past the frontier makes the frontier advance; every piece it decodes
 * on the way goes into the cache, which is what makes a first sequential pass cost exactly one
 * decode of the member. Claims are taken only for restarts: a reader that found the frontier
 * busy holds nothing, so its retry is woken by the frontier's next piece, never by itself.
 *
 * Saved indexes (index_file.h): a member's index is loaded on its first read when a file for
 * this archive's content exists, and then continues from it; windows stay in the file and are
 * read when a restart needs them. A piece that decodes differently from the CRC-32 the file
 * recorded reads EIO and the file is deleted (its next build starts afresh).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inflate_index.h"
#include "log.h"
#include "reader.h"

/* What a sequential first pass decodes ahead of its reader, at most a quarter of the cache:
 * the first cat of the bench's members took 5-7 % less time at 4 MiB than at 1 MiB (medians
 * of 5; 8 MiB gained nothing more), as the reader meets the decoder less often. */
#define AHEAD_BYTES (4u << 20)

struct deflate_state {
    struct zindex *zi;
    struct ixf *file;         /* the saved index it was loaded from, or NULL */
    _Atomic uint64_t saved;   /* output bytes the saved file covers */
    atomic_bool dropped;
};

struct sink_ctx {
    struct cache *cache;
    uint64_t idx;
};

static unsigned char *sink_buffer(void *ctx)
{
    return cache_buffer(((struct sink_ctx *)ctx)->cache);
}

static void sink_deliver(void *ctx, uint64_t q, unsigned char *buf, size_t len)
{
    struct sink_ctx *s = ctx;
    cache_insert(s->cache, s->idx, q, buf, len);
}

static void sink_unused(void *ctx, unsigned char *buf)
{
    cache_unused(((struct sink_ctx *)ctx)->cache, buf);
}

static int fetch_window(void *ctx, uint64_t k, unsigned char *z, size_t cap)
{
    return ixf_read_window(ctx, k, z, cap);
}

/* Continues from a saved index when there is a usable one; says why not when it is unusable. */
static void load_saved(const struct reader_env *env, const struct zip_member *zm,
                       struct deflate_state *st, uint64_t idx)
{
    char why[256];
    struct ixf *f;
    int rc = reader_load_index(env, zm, idx, &f, why, sizeof why);
    if (rc == -ENOENT)
        return;
    if (rc < 0) {
        log_error("%s: saved index ignored: %s", zm->name, why);
        return;
    }
    const struct ixf_member *im = ixf_get(f);
    struct zindex_snapshot snap = {
        .span = im->span, .piece = im->piece, .indexed = im->indexed_out,
        .npoints = im->npoints, .ncrc = im->npieces, .pcrc = im->piece_crc,
    };
    snap.pts = calloc(im->npoints, sizeof *snap.pts);
    for (uint64_t k = 0; snap.pts && k < im->npoints; k++)
        snap.pts[k] = (struct zindex_point){im->pts[k].out, im->pts[k].in, im->pts[k].bits,
                                            im->pts[k].wlen, im->pts[k].zlen, NULL, 0, 0};
    struct zindex_fetch fetch = {fetch_window, f};
    rc = snap.pts ? zindex_import(st->zi, &snap, &fetch) : -ENOMEM;
    free(snap.pts);
    if (rc < 0) {
        if (rc == -EINVAL)
            log_error("%s: saved index ignored: made with other settings", zm->name);
        ixf_close(f);
        return;
    }
    st->file = f;
    atomic_store(&st->saved, im->indexed_out);
}

/* The member's index number travels in the state, which only knows its zip_member. */
static void *deflate_new_for(const struct reader_env *env, const struct zip_member *zm)
{
    struct deflate_state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    struct zindex_source src = {
        .archive = env->src,
        .offset = zm->data_off,
        .csize = zm->csize,
        .usize = zm->usize,
        .crc32 = zm->crc32,
    };
    struct zindex_params p = {
        .span = env->span,
        .piece = cache_piece(env->cache),
        .mem = env->index_mem,
        .fine = env->fine,
        .spill = env->spill,
    };
    if (!(st->zi = zindex_new(&src, &p))) {
        free(st);
        return NULL;
    }
    if (env->index_dir && zm->usize > 0)
        load_saved(env, zm, st, (uint64_t)(zm - env->members));
    return st;
}

/* A piece decoded against the saved index's CRC-32 failed: that file must go. */
static void drop_saved(const struct reader_env *env, const struct reader_member *m,
                       struct deflate_state *st)
{
    const char *why = zindex_why(st->zi);
    if (!st->file || !why || strcmp(why, ZINDEX_WHY_SAVED) != 0 ||
        atomic_exchange(&st->dropped, true))
        return;
    (void)env; /* only the file we loaded goes: not one another daemon saved meanwhile */
    if (ixf_drop_loaded(st->file) == 0)
        log_error("%s: saved index deleted: it does not match the data", m->zm->name);
}

/* Decodes piece q below the frontier under a cache claim. Returns 0 when q is ready now. */
static int restart_piece(const struct reader_env *env, const struct reader_member *m,
                         struct zindex *zi, uint64_t q, const struct zindex_sink *sink,
                         const struct read_ctl *ctl)
{
    struct cache_entry *e;
    int rc = cache_get(env->cache, m->idx, q, reader_cache_how(ctl), &e);
    if (rc != 0) {
        if (rc == 1)
            cache_put(env->cache, e);
        return rc < 0 ? rc : 0;
    }
    rc = zindex_produce(zi, q, sink, ctl->stop, ctl->mode != READ_BLOCK);
    if (rc == 0 && !cache_is_ready(env->cache, e))
        rc = -EIO; /* cannot happen: produce delivers q */
    if (rc == 0)
        cache_put(env->cache, e);
    else if (rc == -EIO)
        cache_fail(env->cache, e, rc);
    else
        cache_abandon(env->cache, e);
    return rc;
}

/* Makes piece q ready, or says why not. */
static int make_ready(const struct reader_env *env, const struct reader_member *m, uint64_t q,
                      const struct read_ctl *ctl)
{
    struct deflate_state *st = m->state;
    struct sink_ctx sc = {env->cache, m->idx};
    struct zindex_sink sink = {sink_buffer, sink_deliver, sink_unused, &sc};
    int rc = zindex_ready(st->zi, q);
    if (rc == 1) {
        rc = restart_piece(env, m, st->zi, q, &sink, ctl);
    } else if (rc == 0) {
        rc = zindex_produce(st->zi, q, &sink, ctl->stop, ctl->mode != READ_BLOCK);
        if (rc != -EAGAIN)
            cache_notify(env->cache); /* the frontier is free again */
    }
    if (rc == -EIO)
        drop_saved(env, m, st);
    return rc;
}

/* A reader close behind the frontier is probably reading on: have the next pieces decoded
 * on another thread while this reply travels. */
static void maybe_ahead(const struct reader_env *env, const struct reader_member *m,
                        uint64_t end, const struct read_ctl *ctl)
{
    struct deflate_state *st = m->state;
    uint64_t window = AHEAD_BYTES < env->cache_bytes / 4 ? AHEAD_BYTES : env->cache_bytes / 4;
    if (!env->ahead || ctl->mode == READ_BLOCK)
        return;
    uint64_t indexed = zindex_indexed(st->zi);
    if (indexed < m->zm->usize && indexed < end + window)
        env->ahead(env->ahead_ctx, m->idx, indexed > end ? indexed : end, (size_t)window, 1);
}

/* A read that spans a checkpoint has its part from that checkpoint on decoded by a worker,
 * restarting there, while this thread restarts from the checkpoint before the read: the
 * kernel asks for 128 KiB around a page fault, which with a fine index mostly holds one
 * checkpoint, and two restarts side by side take the time of the longer one. This thread
 * reaching the worker's first piece waits for it, or decodes it itself if the worker has not
 * started (the cache's claims keep every piece to one decode). */
static void split_restart(const struct reader_env *env, const struct reader_member *m,
                          uint64_t off, size_t len, const struct read_ctl *ctl)
{
    struct deflate_state *st = m->state;
    size_t piece = cache_piece(env->cache);
    uint64_t first = off / piece, last = (off + len - 1) / piece;
    if (!env->ahead || !reader_decodes(ctl) || ctl->ahead || len == 0 || last == first ||
        off + len > m->zm->usize || zindex_ready(st->zi, last) != 1 ||
        reader_cached(env, m, first))
        return;
    uint64_t from = zindex_point_before(st->zi, last * piece);
    uint64_t q = (from + piece - 1) / piece; /* the worker's first piece */
    if (from <= zindex_point_before(st->zi, first * piece) || q <= first || q > last ||
        reader_cached(env, m, q))
        return;
    uint64_t end = (last + 1) * piece < m->zm->usize ? (last + 1) * piece : m->zm->usize;
    env->ahead(env->ahead_ctx, m->idx, q * piece, (size_t)(end - q * piece), 1);
}

static ssize_t deflate_read(const struct reader_env *env, const struct reader_member *m,
                            void *out, size_t len, uint64_t off, const struct read_ctl *ctl)
{
    unsigned char *buf = out;
    size_t done = 0, piece = cache_piece(env->cache);
    struct deflate_state *st = m->state;
    if (zindex_why(st->zi)) /* a failed member's cached pieces are not to be trusted either */
        return -EIO;
    split_restart(env, m, off, len, ctl);
    while (done < len) {
        uint64_t q = (off + done) / piece;
        ssize_t n = reader_serve_cached(env, ctl, m, q, buf + done, len - done, off + done);
        if (n == 0) {
            int rc = reader_decodes(ctl) ? make_ready(env, m, q, ctl) : -EAGAIN;
            if (rc < 0)
                return rc;
            continue; /* normally ready now; if already evicted, the next turn restarts it */
        }
        if (n < 0)
            return n;
        done += (size_t)n;
    }
    maybe_ahead(env, m, off + len, ctl);
    return (ssize_t)done;
}

static int deflate_prepare(const struct reader_env *env, const struct reader_member *m,
                           unsigned char *scratch, const struct stop *stop)
{
    struct deflate_state *st = m->state;
    int rc = zindex_advance(st->zi, scratch, stop);
    cache_notify(env->cache); /* a reader may have declined to wait for the frontier */
    return rc;
}

/* ixf_save asks for the windows that the snapshot left where they are. */
struct save_ctx {
    struct zindex *zi;
    const struct zindex_snapshot *snap;
};

static int save_window(void *ctx, uint64_t k, unsigned char *z, size_t cap)
{
    struct save_ctx *c = ctx;
    return zindex_window(c->zi, &c->snap->pts[k], z, cap);
}

/* Writes the index when it covers more than the saved file does. */
static int deflate_save(const struct reader_env *env, const struct reader_member *m, char *why,
                        size_t why_len)
{
    struct deflate_state *st = m->state;
    if (!env->index_dir || zindex_indexed(st->zi) <= atomic_load(&st->saved) ||
        zindex_points(st->zi) < 2)
        return 0;
    struct zindex_snapshot snap;
    int rc = zindex_snapshot(st->zi, &snap);
    if (rc < 0) {
        snprintf(why, why_len, "cannot take the index: %s", rc == -ENOMEM ? "out of memory"
                                                                           : "member failed");
        return rc;
    }
    struct ixf_member im = {
        .member = m->idx, .crc32 = m->zm->crc32, .csize = m->zm->csize, .usize = m->zm->usize,
        .span = snap.span, .piece = snap.piece, .indexed_out = snap.indexed,
        .npoints = snap.npoints, .npieces = snap.ncrc, .piece_crc = snap.pcrc,
    };
    struct save_ctx sc = {st->zi, &snap};
    im.window = save_window;
    im.window_ctx = &sc;
    im.pts = calloc(snap.npoints, sizeof *im.pts);
    for (uint64_t k = 0; im.pts && k < snap.npoints; k++)
        im.pts[k] = (struct ixf_point){.out = snap.pts[k].out, .in = snap.pts[k].in,
                                       .bits = (uint8_t)snap.pts[k].bits,
                                       .wlen = snap.pts[k].wlen, .zlen = snap.pts[k].zlen,
                                       .zwin = snap.pts[k].win};
    if (im.span > IXF_MAX_SPAN)
        im.span = IXF_MAX_SPAN;
    rc = im.pts ? ixf_save(env->index_dir, &env->id, &im, why, why_len) : -ENOMEM;
    if (rc == 0)
        atomic_store(&st->saved, snap.indexed);
    else if (!im.pts)
        snprintf(why, why_len, "out of memory");
    free(im.pts);
    zindex_snapshot_free(&snap);
    return rc;
}

static void deflate_stats(const struct reader_member *m, struct reader_stats *out)
{
    struct deflate_state *st = m->state;
    *out = (struct reader_stats){0};
    if (!st)
        return;
    out->indexed = zindex_indexed(st->zi);
    out->decoded = zindex_decoded(st->zi);
    out->checkpoints = zindex_points(st->zi);
    out->index_bytes = zindex_memory(st->zi);
}

static const char *deflate_why(const struct reader_member *m)
{
    struct deflate_state *st = m->state;
    const char *why = st ? zindex_why(st->zi) : NULL;
    return why ? why : "cannot decode";
}

static void deflate_free(void *state)
{
    struct deflate_state *st = state;
    zindex_free(st->zi);
    ixf_close(st->file);
    free(st);
}

const struct reader_ops reader_deflate = {
    .read = deflate_read,
    .why = deflate_why,
    .new_state = deflate_new_for,
    .free_state = deflate_free,
    .prepare = deflate_prepare,
    .save = deflate_save,
    .stats = deflate_stats,
};
