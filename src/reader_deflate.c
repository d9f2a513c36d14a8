/*
 * reader_deflate: method 8, through a checkpoint index (inflate_index.h) and the shared chunk
 * cache (cache.h). A read walks the chunks it overlaps: an indexed chunk comes from the cache or
 * is decoded once (concurrent readers of the same chunk wait for the one decoding it); a chunk
 * past the indexed part first makes the frontier advance, and every chunk the frontier decodes
 * on the way goes into the cache, which is what makes a first sequential pass cost exactly one
 * decode of the member.
 */
#include <errno.h>

#include "inflate_index.h"
#include "reader.h"

struct sink_ctx {
    struct cache *cache;
    uint64_t idx;
};

static void to_cache(void *ctx, uint64_t k, unsigned char *data, size_t len)
{
    struct sink_ctx *s = ctx;
    cache_insert(s->cache, s->idx, k, data, len);
}

static struct zindex *index_of(const struct reader_env *env, const struct reader_member *m)
{
    struct zindex *zi = atomic_load_explicit(m->state, memory_order_acquire);
    if (zi)
        return zi;
    struct zindex_source src = {
        .fd = env->fd,
        .offset = m->zm->data_off,
        .csize = m->zm->csize,
        .usize = m->zm->usize,
        .crc32 = m->zm->crc32,
    };
    struct zindex *fresh = zindex_new(&src, env->span);
    if (!fresh)
        return NULL;
    void *expected = NULL;
    if (atomic_compare_exchange_strong(m->state, &expected, fresh))
        return fresh;
    zindex_free(fresh); /* another thread installed one first */
    return expected;
}

struct decode_ctx {
    struct cache *cache;
    struct zindex *zi;
};

/* The frontier may have just delivered this very chunk to the cache: then there is no work. */
static int decode_chunk(void *ctx, uint64_t k, struct cache_entry *claim, unsigned char **data,
                        size_t *len)
{
    struct decode_ctx *d = ctx;
    if (cache_is_ready(d->cache, claim))
        return 1;
    return zindex_decode(d->zi, k, data, len);
}

static ssize_t deflate_read(const struct reader_env *env, const struct reader_member *m,
                            void *out, size_t len, uint64_t off)
{
    struct zindex *zi = index_of(env, m);
    if (!zi)
        return -ENOMEM;
    unsigned char *buf = out;
    size_t done = 0;
    while (done < len) {
        uint64_t k, start, clen;
        int rc = zindex_locate(zi, off + done, &k, &start, &clen);
        if (rc == 0) {
            struct sink_ctx sink = {env->cache, m->idx};
            rc = zindex_extend(zi, off + done, to_cache, &sink);
            if (rc < 0)
                return rc;
            continue;
        }
        if (rc < 0)
            return rc;
        struct decode_ctx ctx = {env->cache, zi};
        ssize_t n = reader_copy_chunk(env, m, k, start, decode_chunk, &ctx, buf + done,
                                      len - done, off + done);
        if (n < 0)
            return n;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

static const char *deflate_why(const struct reader_member *m)
{
    struct zindex *zi = atomic_load(m->state);
    const char *why = zi ? zindex_why(zi) : NULL;
    return why ? why : "cannot decode";
}

static void deflate_free(void *state)
{
    zindex_free(state);
}

const struct reader_ops reader_deflate = {
    .name = "deflate",
    .read = deflate_read,
    .why = deflate_why,
    .free_state = deflate_free,
};
