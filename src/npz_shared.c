/*
 * npz_shared: see npz.h and npz_shared.h.
 */
#include "npz_shared.h"

#include <stdlib.h>

#include "npz.h"


struct npz_shared *npz_shared_new(const struct npz_options *opt)
{
    struct npz_shared *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cache_bytes = opt && opt->cache_bytes ? opt->cache_bytes : NPZ_DEFAULT_CACHE;
    s->threads = npz_worker_threads(opt);
    budget_init(&s->index_mem, opt && opt->index_mem ? opt->index_mem : NPZ_DEFAULT_INDEX_MEM);
    budget_init(&s->decoder_mem, opt && opt->decoder_mem ? opt->decoder_mem
                                                         : NPZ_DEFAULT_DECODER_MEM);
    atomic_init(&s->opens, 0);
    s->cache = cache_new(s->cache_bytes, NPZ_PIECE);
    s->sched = sched_new(s->threads);
    if (!s->cache || !s->sched) {
        npz_shared_free(s);
        return NULL;
    }
    cache_set_notify(s->cache, sched_event, s->sched);
    return s;
}

void npz_shared_shutdown(struct npz_shared *s)
{
    if (!s || !s->sched)
        return;
    sched_free(s->sched); /* drains */
    s->sched = NULL;
    cache_set_notify(s->cache, NULL, NULL);
}

void npz_shared_free(struct npz_shared *s)
{
    if (!s)
        return;
    npz_shared_shutdown(s);
    cache_free(s->cache);
    free(s);
}

struct cache *npz_shared_view(struct npz_shared *s)
{
    uint64_t tag;
    do /* 0 is no tag */
        tag = (atomic_fetch_add(&s->opens, 1) + 1) & ((UINT64_C(1) << 24) - 1);
    while (tag == 0);
    return cache_view(s->cache, tag);
}
