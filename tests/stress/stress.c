/*
 * stress: many threads read random ranges of random members of one npz at once, through the
 * core, with a tiny cache, span and index budget so that pieces are evicted, re-decoded,
 * checkpoints thinned, and the frontier extended under contention while the background
 * indexer runs. Most threads read with READ_BLOCK; a few use READ_NOWAIT and retry on
 * -EAGAIN, some in a loop of their own and some as jobs on the core's scheduler (npz_submit),
 * which parks a declined job until the thread it declined to wait for lets go. Every other
 * blocking read leaves its bytes in the cache (read_pins), holding pieces that other threads
 * would evict, and copies them out only after the read returned. Built with
 * ThreadSanitizer by `make check-tsan`; the archive comes from make_archive.py, whose byte
 * formula is repeated here as the independent reference.
 * Usage: stress ARCHIVE [THREADS] [READS_PER_THREAD] [NOWAIT_THREADS]
 * (the NOWAIT threads make a third as many reads each).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "npz_core.h"

#define MAX_LEN (256u << 10)
#define DEADLINE 120 /* seconds one read may take before it counts as stuck */

static struct npz *npz;
static unsigned char **want; /* per member: its bytes, by the formula */
static int reads_per_thread = 300;
static atomic_int failures, eagains, cached_hits;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

/* Member bytes by formula (make_archive.py's too): runs of 7 that deflate squeezes to a few
 * percent, but noise in members 10, 22, ... (SOZip ones, which libdeflate then decodes). */
static unsigned char expected(uint64_t member, uint64_t j)
{
    if (member % 12 != 10)
        return (unsigned char)(((j / 7 * 2654435761ull) + member * 97) >> 11);
    uint64_t v = j * 0x9E3779B97F4A7C15ull + member;
    v ^= v >> 29;
    v *= 0xBF58476D1CE4E5B9ull;
    v ^= v >> 32;
    return (unsigned char)(v >> 24);
}

static unsigned member_number(const char *name)
{
    return (unsigned)strtoul(name + 1, NULL, 10); /* "mNN.bin" */
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One random request. */
struct request {
    uint64_t idx, off;
    size_t len;
};

/* A random request, or now and then the one that follows prev (so that sequential runs start
 * decode-ahead jobs that race with the readers). */
static struct request pick(unsigned *seed, const struct request *prev)
{
    const struct zip_archive *za = npz_zip(npz);
    struct request r;
    if (prev->len && rand_r(seed) % 3 == 0 &&
        prev->off + prev->len < za->members[prev->idx].usize) {
        r = (struct request){prev->idx, prev->off + prev->len, 1 + (size_t)rand_r(seed) % MAX_LEN};
        return r;
    }
    r.idx = (uint64_t)rand_r(seed) % za->count;
    const struct zip_member *m = &za->members[r.idx];
    r.off = m->usize ? (uint64_t)rand_r(seed) * 4099u % m->usize : 0;
    r.len = 1 + (size_t)rand_r(seed) % MAX_LEN;
    return r;
}

/* Every member's bytes, computed once (a byte-by-byte comparison under ThreadSanitizer would
 * cost more than the reads it checks). */
static int make_wants(void)
{
    const struct zip_archive *za = npz_zip(npz);
    want = calloc(za->count ? za->count : 1, sizeof *want);
    for (uint64_t i = 0; want && i < za->count; i++) {
        const struct zip_member *m = &za->members[i];
        if (!(want[i] = malloc(m->usize ? m->usize : 1)))
            return -1;
        for (uint64_t j = 0; j < m->usize; j++)
            want[i][j] = expected(member_number(m->name), j);
    }
    return want ? 0 : -1;
}

/* Checks what a read of r returned (n, into buf) against the formula. */
static void verify(const struct request *r, const unsigned char *buf, ssize_t n,
                   const char *how)
{
    const struct zip_member *m = &npz_zip(npz)->members[r->idx];
    size_t len = r->off + r->len > m->usize ? (size_t)(m->usize - r->off) : r->len;
    if (n != (ssize_t)len || memcmp(buf, want[r->idx] + r->off, len) != 0) {
        pthread_mutex_lock(&fail_lock);
        if (atomic_fetch_add(&failures, 1) < 10)
            fprintf(stderr, "stress: %s (%s) off %llu len %zu: got %zd\n", m->name, how,
                    (unsigned long long)r->off, r->len, n);
        pthread_mutex_unlock(&fail_lock);
    }
}

/* A blocking read through pins: the slices, copied into out once the read is over (buf,
 * which the read may also write into, is only its scratch). */
static ssize_t read_pinned(const struct request *r, unsigned char *buf, unsigned char *out,
                           struct read_pins *pins)
{
    ssize_t n = npz_read_member(npz, r->idx, buf, r->len, r->off, READ_BLOCK, NULL, pins);
    size_t got = n > 0 ? read_pins_copy(pins, out, r->len) : 0;
    read_pins_release(pins);
    return n > 0 && got != (size_t)n ? -EPROTO : n;
}

static void *blocking_reader(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    unsigned char *buf = malloc(MAX_LEN), *out = malloc(MAX_LEN);
    struct read_pins pins = {0};
    struct request r = {0};
    for (int i = 0; i < reads_per_thread && buf && out; i++) {
        r = pick(&seed, &r);
        if (i % 2)
            verify(&r, out, read_pinned(&r, buf, out, &pins), "pinned");
        else
            verify(&r, buf, npz_read_member(npz, r.idx, buf, r.len, r.off, READ_BLOCK, NULL,
                                            NULL), "block");
    }
    read_pins_free(&pins);
    free(out);
    free(buf);
    return NULL;
}

/* READ_NOWAIT retried until it is served (first, now and then, a READ_CACHED or READ_QUICK
 * try, as the FUSE adapter makes). */
static void *nowait_reader(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    unsigned char *buf = malloc(MAX_LEN);
    struct request r = {0};
    for (int i = 0; i < reads_per_thread / 3 && buf; i++) {
        r = pick(&seed, &r);
        ssize_t n = -EAGAIN;
        if (rand_r(&seed) % 4 == 0) {
            n = npz_read_member(npz, r.idx, buf, r.len, r.off,
                                rand_r(&seed) % 2 ? READ_QUICK : READ_CACHED, NULL, NULL);
            if (n != -EAGAIN)
                atomic_fetch_add(&cached_hits, 1);
        }
        /* polled, with a pause between tries: the thread it declined to wait for needs the
         * CPU more than this loop does */
        double t0 = now();
        struct timespec pause = {0, 1000000};
        while (n == -EAGAIN && now() - t0 < DEADLINE) {
            n = npz_read_member(npz, r.idx, buf, r.len, r.off, READ_NOWAIT, NULL, NULL);
            if (n == -EAGAIN) {
                atomic_fetch_add(&eagains, 1);
                nanosleep(&pause, NULL);
            }
        }
        verify(&r, buf, n, "nowait loop");
    }
    free(buf);
    return NULL;
}

/* A read run as a job on the scheduler, in READ_NOWAIT mode: declined reads are parked and
 * run again when the holder lets go. */
struct job {
    struct sched_job sj; /* first: the scheduler hands back this pointer */
    struct request r;
    unsigned char *buf;
    ssize_t n;
    bool done;
    pthread_mutex_t lock;
    pthread_cond_t cond;
};

static int job_run(struct sched_job *sj)
{
    struct job *j = (struct job *)sj;
    ssize_t n = npz_read_member(npz, j->r.idx, j->buf, j->r.len, j->r.off, READ_NOWAIT, NULL, NULL);
    if (n == -EAGAIN) {
        atomic_fetch_add(&eagains, 1);
        return -EAGAIN;
    }
    pthread_mutex_lock(&j->lock);
    j->n = n;
    j->done = true;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->lock); /* the job is its submitter's again from here */
    return 0;
}

static void *job_reader(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    struct job j = {.sj = {.run = job_run}, .buf = malloc(MAX_LEN)};
    pthread_mutex_init(&j.lock, NULL);
    pthread_cond_init(&j.cond, NULL);
    for (int i = 0; i < reads_per_thread / 3 && j.buf; i++) {
        j.r = pick(&seed, &j.r);
        j.done = false;
        if (npz_submit(npz, &j.sj) < 0) {
            verify(&j.r, j.buf, -EAGAIN, "submit");
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += DEADLINE;
        pthread_mutex_lock(&j.lock);
        int rc = 0;
        while (!j.done && rc == 0)
            rc = pthread_cond_timedwait(&j.cond, &j.lock, &until);
        bool done = j.done;
        pthread_mutex_unlock(&j.lock);
        if (!done) {
            /* the job is still the scheduler's: it cannot be reused or freed */
            fprintf(stderr, "stress: a job was not served within %d s\n", DEADLINE);
            abort();
        }
        verify(&j.r, j.buf, j.n, "job");
    }
    free(j.buf);
    pthread_mutex_destroy(&j.lock);
    pthread_cond_destroy(&j.cond);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: stress ARCHIVE [THREADS] [READS] [NOWAIT_THREADS]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 16;
    if (argc > 3)
        reads_per_thread = atoi(argv[3]);
    int nowait = argc > 4 ? atoi(argv[4]) : 4;
    char msg[256];
    struct npz_options opt = {.span = 32 << 10, .cache_bytes = 1 << 20,
                              .index_mem = 2 << 20, .threads = 3, .no_index = 1};
    if (npz_open(argv[1], &opt, &npz, msg, sizeof msg) < 0) {
        fprintf(stderr, "stress: %s: %s\n", argv[1], msg);
        return 1;
    }
    if (make_wants() < 0) {
        fprintf(stderr, "stress: out of memory\n");
        return 1;
    }
    npz_start(npz); /* the background indexer runs along */
    pthread_t t[80];
    threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    nowait = nowait < 0 ? 0 : nowait > 16 ? 16 : nowait;
    for (int i = 0; i < threads + nowait; i++) {
        void *(*fn)(void *) = i < threads ? blocking_reader
                              : (i - threads) % 2 ? job_reader : nowait_reader;
        pthread_create(&t[i], NULL, fn, (void *)(uintptr_t)(i + 1));
    }
    for (int i = 0; i < threads + nowait; i++)
        pthread_join(t[i], NULL);
    for (uint64_t i = 0; i < npz_zip(npz)->count; i++)
        free(want[i]);
    free(want);
    npz_close(npz);
    int total = threads * reads_per_thread + nowait * (reads_per_thread / 3);
    int bad = atomic_load(&failures);
    printf("stress: %d passed, %d failed (%d EAGAIN retries, %d READ_CACHED hits)\n",
           total - bad, bad, atomic_load(&eagains), atomic_load(&cached_hits));
    return bad != 0;
}
