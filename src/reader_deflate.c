/*
 * reader_deflate: method 8, through a checkpoint index (inflate_index.h) and the shared piece
 * cache (cache.h). A read walks the pieces it overlaps. A ready piece is copied. A piece below
 * the index's frontier is claimed in the cache and decoded from the nearest checkpoint
 * (concurrent readers of the same piece wait for, or in NOWAIT mode retry after, the one
 * decoding it). A piece past the frontier makes the frontier advance; every piece it decodes
 * on the way goes into the cache, which is what makes a first sequential pass cost exactly one
 * decode of the member. Claims are taken only for restarts: a reader that found the frontier
 * busy holds nothing, so its retry is woken by the frontier's next piece, never by itself.
 */
#include <errno.h>

#include "inflate_index.h"
#include "reader.h"

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

static void *deflate_new(const struct reader_env *env, const struct zip_member *zm)
{
    struct zindex_source src = {
        .fd = env->fd,
        .offset = zm->data_off,
        .csize = zm->csize,
        .usize = zm->usize,
        .crc32 = zm->crc32,
    };
    struct zindex_params p = {
        .span = env->span,
        .piece = cache_piece(env->cache),
        .mem = env->index_mem,
    };
    return zindex_new(&src, &p);
}

/* Decodes piece q below the frontier under a cache claim. Returns 0 when q is ready now. */
static int restart_piece(const struct reader_env *env, const struct reader_member *m,
                         uint64_t q, const struct zindex_sink *sink, const struct read_ctl *ctl)
{
    struct cache_entry *e;
    int rc = cache_get(env->cache, m->idx, q, reader_cache_how(ctl), &e);
    if (rc != 0) {
        if (rc == 1)
            cache_put(env->cache, e);
        return rc < 0 ? rc : 0;
    }
    rc = zindex_produce(m->state, q, sink, ctl->stop, ctl->mode != READ_BLOCK);
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
    struct sink_ctx sc = {env->cache, m->idx};
    struct zindex_sink sink = {sink_buffer, sink_deliver, sink_unused, &sc};
    int below = zindex_ready(m->state, q);
    if (below < 0)
        return below;
    if (below)
        return restart_piece(env, m, q, &sink, ctl);
    int rc = zindex_produce(m->state, q, &sink, ctl->stop, ctl->mode != READ_BLOCK);
    if (rc != -EAGAIN)
        cache_notify(env->cache); /* the frontier is free again */
    return rc;
}

static ssize_t deflate_read(const struct reader_env *env, const struct reader_member *m,
                            void *out, size_t len, uint64_t off, const struct read_ctl *ctl)
{
    unsigned char *buf = out;
    size_t done = 0, piece = cache_piece(env->cache);
    while (done < len) {
        uint64_t q = (off + done) / piece;
        ssize_t n = reader_copy_cached(env, m, q, buf + done, len - done, off + done);
        if (n == 0) {
            int rc = ctl->mode == READ_CACHED ? -EAGAIN : make_ready(env, m, q, ctl);
            if (rc < 0)
                return rc;
            continue; /* normally ready now; if already evicted, the next turn restarts it */
        }
        if (n < 0)
            return n;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

static const char *deflate_why(const struct reader_member *m)
{
    const char *why = m->state ? zindex_why(m->state) : NULL;
    return why ? why : "cannot decode";
}

static void deflate_free(void *state)
{
    zindex_free(state);
}

const struct reader_ops reader_deflate = {
    .read = deflate_read,
    .why = deflate_why,
    .new_state = deflate_new,
    .free_state = deflate_free,
};
