/*
 * npz_shared: the inside of struct npz_shared (npz.h), for npz.c, which borrows its parts.
 * Everything here is thread-safe on its own (cache.h, sched.h, budget.h).
 */
#ifndef NPZMOUNT_NPZ_SHARED_H
#define NPZMOUNT_NPZ_SHARED_H

#include <stdatomic.h>
#include <stdint.h>

#include "budget.h"
#include "cache.h"
#include "sched.h"

struct npz_shared {
    struct cache *cache;  /* each npz takes a view of it */
    struct sched *sched;
    struct budget index_mem, decoder_mem;
    uint64_t cache_bytes;
    unsigned threads;
    atomic_uint_fast64_t opens; /* the last view tag handed out */
};

/* A cache view for one more npz, tagged with a number not in use by any npz open now (tags
 * are recycled only after 2^24 - 1 opens). NULL when out of memory. */
struct cache *npz_shared_view(struct npz_shared *s);

/* Decode worker threads for opt: its threads, or the number of CPUs (2 to 64). */
struct npz_options;
unsigned npz_worker_threads(const struct npz_options *opt);

#endif
