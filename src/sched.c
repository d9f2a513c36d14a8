/* sched: see sched.h. One mutex guards a FIFO queue, the parked list and the event counter. */
#include "sched.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct list {
    struct sched_job *head, *tail;
};

struct sched {
    pthread_mutex_t lock;
    pthread_cond_t work;
    struct list queue, parked;
    uint64_t epoch;
    bool stopping;
    unsigned want, nthreads; /* started lazily: a daemon forks after creating us */
    pthread_t *threads;
};

static void push(struct list *l, struct sched_job *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static struct sched_job *pop(struct list *l)
{
    struct sched_job *j = l->head;
    if (j && !(l->head = j->next))
        l->tail = NULL;
    return j;
}

/* Moves every parked job to the queue. Lock held. */
static void unpark(struct sched *s)
{
    if (!s->parked.head)
        return;
    if (s->queue.tail)
        s->queue.tail->next = s->parked.head;
    else
        s->queue.head = s->parked.head;
    s->queue.tail = s->parked.tail;
    s->parked.head = s->parked.tail = NULL;
    pthread_cond_broadcast(&s->work);
}

static void *worker(void *arg)
{
    struct sched *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        struct sched_job *j = pop(&s->queue);
        if (!j) {
            if (s->stopping && !s->parked.head)
                break;
            pthread_cond_wait(&s->work, &s->lock);
            continue;
        }
        j->epoch = s->epoch;
        pthread_mutex_unlock(&s->lock);
        int rc = j->run(j);
        pthread_mutex_lock(&s->lock);
        if (rc == -EAGAIN) {
            /* An event since the job started may be the one it needs: retry at once. */
            push(j->epoch != s->epoch || s->stopping ? &s->queue : &s->parked, j);
        }
    }
    pthread_cond_broadcast(&s->work); /* the others may be waiting to see the end too */
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

struct sched *sched_new(unsigned threads)
{
    struct sched *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->want = threads ? threads : 1;
    s->threads = calloc(s->want, sizeof *s->threads);
    if (!s->threads) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work, NULL);
    return s;
}

/* Starts the workers on first use. Lock held. Returns 0 or -EAGAIN if not even one starts. */
static int start(struct sched *s)
{
    while (s->nthreads < s->want &&
           pthread_create(&s->threads[s->nthreads], NULL, worker, s) == 0)
        s->nthreads++;
    s->want = s->nthreads; /* do not retry on every submit */
    return s->nthreads ? 0 : -EAGAIN;
}

void sched_free(struct sched *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    unpark(s);
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < s->nthreads; i++)
        pthread_join(s->threads[i], NULL);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->work);
    free(s->threads);
    free(s);
}

int sched_submit(struct sched *s, struct sched_job *job)
{
    pthread_mutex_lock(&s->lock);
    if (s->nthreads < s->want && start(s) < 0) {
        pthread_mutex_unlock(&s->lock);
        return -EAGAIN;
    }
    push(&s->queue, job);
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

void sched_event(void *arg)
{
    struct sched *s = arg;
    pthread_mutex_lock(&s->lock);
    s->epoch++;
    unpark(s);
    pthread_mutex_unlock(&s->lock);
}
