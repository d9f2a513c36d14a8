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

static void *deflate_new(const struct reader_env *env, const struct zip_member *zm)
{
    struct zindex_source src = {
        .fd = env->fd,
        .offset = zm->data_off,
        .csize = zm->csize,
        .usize = zm->usize,
        .crc32 = zm->crc32,
    };
    return zindex_new(&src, env->span);
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
    struct zindex *zi = m->state;
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
