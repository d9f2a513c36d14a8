/*
 * stop: what a long-running decode checks, between pieces, to give up early: the request's
 * own flag (an interrupted FUSE request), the mount's (unmount, SIGTERM), and for background
 * work a count of foreground decodes it must give way to. Any may be NULL. They are owned by
 * whoever set them up and outlive the decode.
 */
#ifndef NPZMOUNT_STOP_H
#define NPZMOUNT_STOP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct stop {
    const atomic_bool *request;
    const atomic_bool *mount;
    const atomic_int *yield_to; /* background work only: stop while this count is not 0 */
};

/* How far a read may go (reader.h says what each means). Here, so that npz.h can offer it
 * without showing the readers. */
enum read_mode { READ_BLOCK, READ_NOWAIT, READ_QUICK, READ_CACHED };

static inline bool stop_now(const struct stop *s)
{
    return s && ((s->request && atomic_load_explicit(s->request, memory_order_relaxed)) ||
                 (s->mount && atomic_load_explicit(s->mount, memory_order_relaxed)) ||
                 (s->yield_to && atomic_load_explicit(s->yield_to, memory_order_relaxed)));
}

#endif
