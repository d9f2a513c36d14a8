/* reader: picks the implementation of reader.h for a member, and the cache helpers the
 * decoding readers share. */
#include "reader.h"

#include <errno.h>
#include <string.h>

#include "log.h"

const struct reader_ops *reader_for(const struct zip_member *zm, bool have_password)
{
    if (zm->err)
        return &reader_broken;
    /* the checkpoint index cannot see through encryption: libarchive decrypts as it decodes */
    if (zm->flags & ZIP_FLAG_ENCRYPTED)
        return have_password ? &reader_archive : &reader_locked;
    if (zm->method == ZIP_METHOD_DEFLATED)
        return &reader_sozip;
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

int reader_load_index(const struct reader_env *env, const struct zip_member *zm, uint64_t idx,
                      struct ixf **out, char *why, size_t why_len)
{
    if (env->sidecar) {
        int rc = ixf_sidecar_load(env->sidecar, &env->id, zm, idx, out, why, why_len);
        if (rc == 0)
            return 0;
        if (rc != -ENOENT)
            log_error("%s: shared index ignored: %s", zm->name, why);
    }
    return ixf_load(env->index_dir, &env->id, zm, idx, out, why, why_len);
}

enum cache_how reader_cache_how(const struct read_ctl *ctl)
{
    return ctl->mode == READ_BLOCK ? CACHE_WAIT : ctl->mode == READ_NOWAIT ? CACHE_NOWAIT
                                                                           : CACHE_PEEK;
}

bool reader_cached(const struct reader_env *env, const struct reader_member *m, uint64_t q)
{
    struct cache_entry *e;
    if (cache_get(env->cache, m->idx, q, CACHE_PEEK, &e) != 1)
        return false;
    cache_put(env->cache, e);
    return true;
}

ssize_t reader_serve_cached(const struct reader_env *env, const struct read_ctl *ctl,
                            const struct reader_member *m, uint64_t q, unsigned char *buf,
                            size_t len, uint64_t off)
{
    struct cache_entry *e;
    if (cache_get(env->cache, m->idx, q, CACHE_PEEK, &e) != 1)
        return 0;
    return reader_serve_entry(env, ctl, e, q, buf, len, off);
}

ssize_t reader_serve_entry(const struct reader_env *env, const struct read_ctl *ctl,
                           struct cache_entry *e, uint64_t q, unsigned char *buf, size_t len,
                           uint64_t off)
{
    size_t have;
    const unsigned char *data = cache_data(e, &have);
    uint64_t at = off - q * cache_piece(env->cache);
    size_t n = at >= have ? 0 : (have - at < len ? have - at : len);
    if (n && ctl->pins) {
        int rc = read_pins_add(ctl->pins, env->cache, e, data + at, n);
        if (rc == 0)
            return (ssize_t)n; /* e is the pins' now */
        cache_put(env->cache, e);
        return rc;
    }
    memcpy(buf, data + at, n);
    cache_put(env->cache, e);
    return n ? (ssize_t)n : -EIO;
}
