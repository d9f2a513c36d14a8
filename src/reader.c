/* reader: picks the implementation of reader.h for a member, and the chunk-cache walk that
 * the decoding readers share. */
#include "reader.h"

#include <errno.h>
#include <string.h>

const struct reader_ops *reader_for(const struct zip_member *zm)
{
    if (zm->err)
        return &reader_broken;
    if (zm->method == ZIP_METHOD_DEFLATED)
        return &reader_deflate;
    if (zm->method == ZIP_METHOD_STORED)
        return &reader_stored;
    return &reader_archive;
}

int reader_attach(const struct reader_ops *ops, const struct reader_env *env,
                  _Atomic(void *) *slot, struct reader_member *m)
{
    m->state = atomic_load_explicit(slot, memory_order_acquire);
    if (m->state || !ops->new_state)
        return 0;
    void *fresh = ops->new_state(env, m->zm);
    if (!fresh)
        return -ENOMEM;
    void *expected = NULL;
    if (atomic_compare_exchange_strong(slot, &expected, fresh)) {
        m->state = fresh;
    } else {
        ops->free_state(fresh);
        m->state = expected;
    }
    return 0;
}

ssize_t reader_copy_chunk(const struct reader_env *env, const struct reader_member *m,
                          uint64_t k, uint64_t start, reader_produce produce, void *ctx,
                          unsigned char *buf, size_t len, uint64_t off)
{
    struct cache_entry *e;
    int rc = cache_get(env->cache, m->idx, k, &e);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        unsigned char *data;
        size_t n;
        rc = produce(ctx, k, e, &data, &n);
        if (rc < 0) {
            cache_fail(env->cache, e, rc);
            return rc;
        }
        if (rc == 0)
            cache_fill(env->cache, e, data, n);
    }
    size_t have;
    const unsigned char *data = cache_data(e, &have);
    uint64_t at = off - start;
    size_t n = at >= have ? 0 : (have - at < len ? have - at : len);
    memcpy(buf, data + at, n);
    cache_put(env->cache, e);
    return n ? (ssize_t)n : -EIO;
}
