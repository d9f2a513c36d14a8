/*
 * stop: what a long-running decode checks, between pieces, to give up early: the request's
 * own flag (an interrupted FUSE request) and the mount's (unmount, SIGTERM). Either may be
 * NULL. The flags are owned by whoever set them up and outlive the decode.
 */
#ifndef NPZMOUNT_STOP_H
#define NPZMOUNT_STOP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct stop {
    const atomic_bool *request;
    const atomic_bool *mount;
};

static inline bool stop_now(const struct stop *s)
{
    return s && ((s->request && atomic_load_explicit(s->request, memory_order_relaxed)) ||
                 (s->mount && atomic_load_explicit(s->mount, memory_order_relaxed)));
}

#endif
