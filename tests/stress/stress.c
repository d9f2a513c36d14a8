/*
 * stress: many threads read random ranges of random members of one npz at once, through the
 * core, with a tiny cache and span so that chunks are evicted, re-decoded, and the frontier
 * extended under contention. Built with ThreadSanitizer by `make check-tsan`; the archive comes
 * from make_archive.py, whose byte formula is repeated here as the independent reference.
 * Usage: stress ARCHIVE [THREADS] [READS_PER_THREAD]
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npz.h"

static struct npz *npz;
static int reads_per_thread = 300;
static int failures;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned char expected(uint64_t member, uint64_t j)
{
    return (unsigned char)(((j / 7 * 2654435761ull) + member * 97) >> 11);
}

static unsigned member_number(const char *name)
{
    return (unsigned)strtoul(name + 1, NULL, 10); /* "mNN.bin" */
}

static void *reader(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    const struct zip_archive *za = npz_zip(npz);
    unsigned char *buf = malloc(256 << 10);
    for (int r = 0; r < reads_per_thread && buf; r++) {
        uint64_t idx = (uint64_t)rand_r(&seed) % za->count;
        const struct zip_member *m = &za->members[idx];
        uint64_t off = m->usize ? (uint64_t)rand_r(&seed) * 4099u % m->usize : 0;
        size_t len = 1 + (size_t)rand_r(&seed) % (256 << 10);
        ssize_t n = npz_read(npz, idx, buf, len, off);
        size_t want = off + len > m->usize ? (size_t)(m->usize - off) : len;
        int bad = n != (ssize_t)want;
        for (ssize_t i = 0; !bad && i < n; i++)
            bad = buf[i] != expected(member_number(m->name), off + (uint64_t)i);
        if (bad) {
            pthread_mutex_lock(&fail_lock);
            if (failures++ < 10)
                fprintf(stderr, "stress: %s off %llu len %zu: got %zd\n", m->name,
                        (unsigned long long)off, len, n);
            pthread_mutex_unlock(&fail_lock);
        }
    }
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: stress ARCHIVE [THREADS] [READS]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 16;
    if (argc > 3)
        reads_per_thread = atoi(argv[3]);
    char msg[256];
    struct npz_options opt = {.span = 32 << 10, .cache_bytes = 1 << 20};
    if (npz_open(argv[1], &opt, &npz, msg, sizeof msg) < 0) {
        fprintf(stderr, "stress: %s: %s\n", argv[1], msg);
        return 1;
    }
    pthread_t t[64];
    threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, reader, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    npz_close(npz);
    int total = threads * reads_per_thread;
    printf("stress: %d passed, %d failed\n", total - failures, failures);
    return failures != 0;
}
