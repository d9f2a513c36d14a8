/*
 * sched: runs the requests that could not be served at once (they need decoding) on a few
 * worker threads, such that no worker ever sits waiting for another thread's decode.
 *
 * A job's run() either finishes the job (returns 0; the job is then the caller's again and
 * may be freed by run itself) or declines with -EAGAIN because it would have to wait for a
 * piece or a decoder another thread holds. A declined job is parked until the next
 * sched_event(), which every such holder calls when it lets go (through the cache's notify
 * hook), and then run again. An event between the job's start and its parking sends it
 * straight back to the queue, so no wake-up is lost. Waiting therefore costs a list entry,
 * not a thread: stat, lookup and reads of other members keep being served while decodes run.
 *
 * Threads: sched_submit and sched_event may be called from any thread, also from inside
 * run(). sched_free drains: it runs every queued and parked job until each has finished (the
 * caller makes them finish, e.g. by setting the stop flag they check), then joins the workers.
 */
#ifndef NPZMOUNT_SCHED_H
#define NPZMOUNT_SCHED_H

#include <stdint.h>

struct sched_job {
    int (*run)(struct sched_job *job);
    struct sched_job *next; /* owned by sched while queued or parked */
    uint64_t epoch;
};

struct sched;

/* Makes a scheduler of `threads` workers (at least 1), started on the first submit, so that
 * a daemon may fork after creating it. Returns NULL when out of memory. */
struct sched *sched_new(unsigned threads);
void sched_free(struct sched *s);

/* Queues job. Returns 0, or -EAGAIN when no worker thread could be started (the job is then
 * still the caller's). */
int sched_submit(struct sched *s, struct sched_job *job);
void sched_event(void *s);

#endif
