/*
 * deadline: points in time for timed waits (pthread_cond_timedwait, transfer limits), as a
 * struct timespec on a given clock. Pure functions; thread-safe.
 */
#ifndef NPZMOUNT_DEADLINE_H
#define NPZMOUNT_DEADLINE_H

#include <stdbool.h>
#include <time.h>

/* t moved ms milliseconds later (ms >= 0), kept normalised. */
static inline void deadline_add_ms(struct timespec *t, long ms)
{
    t->tv_sec += ms / 1000;
    t->tv_nsec += ms % 1000 * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

/* Now on clock, plus ms milliseconds. */
static inline void deadline_in(struct timespec *t, clockid_t clock, long ms)
{
    clock_gettime(clock, t);
    deadline_add_ms(t, ms);
}

/* Whether a is earlier than b. */
static inline bool deadline_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Milliseconds from now (CLOCK_MONOTONIC) to t, rounded towards zero; <= 0 once it passed. */
static inline long deadline_ms_left(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)(t->tv_sec - now.tv_sec) * 1000 + (t->tv_nsec - now.tv_nsec) / 1000000;
}

#endif
