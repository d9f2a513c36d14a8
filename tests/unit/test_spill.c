/* Unit tests for spill.c: what goes in comes back, from the buffer and from the file, with
 * appends from several threads at once; the file never shows in its directory. */
#include "spill.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define NTHREADS 4
#define PER_THREAD 200

/* Record i's bytes: a pattern that differs by record and by position. */
static void fill(unsigned char *b, size_t len, unsigned i)
{
    for (size_t k = 0; k < len; k++)
        b[k] = (unsigned char)(i * 131u + k * 7u + (k >> 9));
}

static size_t len_of(unsigned i)
{
    return 1 + (i * 2654435761u) % 40000u; /* windows and odd sizes */
}

struct job {
    struct spill *s;
    unsigned first;
    uint64_t off[PER_THREAD];
    int errors;
};

static void *put_many(void *arg)
{
    struct job *j = arg;
    unsigned char b[40000];
    for (unsigned n = 0; n < PER_THREAD; n++) {
        unsigned i = j->first + n;
        fill(b, len_of(i), i);
        if (spill_put(j->s, b, len_of(i), &j->off[n]) < 0)
            j->errors++;
        if (n % 3 == 0) { /* read back an earlier record meanwhile */
            unsigned e = j->first + n / 2;
            unsigned char got[40000];
            fill(b, len_of(e), e);
            if (spill_get(j->s, got, len_of(e), j->off[n / 2]) < 0 ||
                memcmp(got, b, len_of(e)) != 0)
                j->errors++;
        }
    }
    return NULL;
}

static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d)
        closedir(d);
    return n;
}

static void test_round_trip(void)
{
    char dir[] = "/tmp/spill-test.XXXXXX";
    if (!CHECK(mkdtemp(dir) != NULL))
        return;
    struct spill *s = NULL;
    if (!CHECK_EQ_I64(spill_open(dir, &s), 0))
        return;
    CHECK_EQ_I64(entries(dir), 0);
    static struct job jobs[NTHREADS];
    pthread_t t[NTHREADS];
    for (int k = 0; k < NTHREADS; k++) {
        jobs[k] = (struct job){.s = s, .first = (unsigned)k * PER_THREAD};
        pthread_create(&t[k], NULL, put_many, &jobs[k]);
    }
    uint64_t total = 0;
    for (int k = 0; k < NTHREADS; k++) {
        pthread_join(t[k], NULL);
        CHECK_EQ_I64(jobs[k].errors, 0);
    }
    /* one record larger than the buffer goes straight to the file */
    size_t big = 3u << 20;
    unsigned char *b = malloc(big), *got = malloc(big);
    fill(b, big, 9999);
    uint64_t big_off;
    CHECK_EQ_I64(spill_put(s, b, big, &big_off), 0);
    for (unsigned i = 0; i < NTHREADS * PER_THREAD; i++)
        total += len_of(i);
    CHECK_EQ_U64(spill_size(s), total + big);
    /* every record, wherever it is now */
    int bad = 0;
    for (int k = 0; k < NTHREADS; k++)
        for (unsigned n = 0; n < PER_THREAD; n++) {
            unsigned i = jobs[k].first + n;
            fill(b, len_of(i), i);
            bad += spill_get(s, got, len_of(i), jobs[k].off[n]) < 0 ||
                   memcmp(got, b, len_of(i)) != 0;
        }
    CHECK_EQ_I64(bad, 0);
    fill(b, big, 9999);
    CHECK(spill_get(s, got, big, big_off) == 0 && memcmp(got, b, big) == 0);
    /* past the end */
    CHECK_EQ_I64(spill_get(s, got, 10, spill_size(s) - 5), -EIO);
    CHECK_EQ_I64(spill_get(s, got, 10, spill_size(s) + 100), -EIO);
    CHECK_EQ_I64(entries(dir), 0);
    spill_close(s);
    free(b);
    free(got);
    CHECK_EQ_I64(rmdir(dir), 0);
}

static void test_missing_dir(void)
{
    struct spill *s = NULL;
    CHECK(spill_open("/nonexistent/npzmount-spill", &s) < 0);
    spill_close(NULL);
}

int main(void)
{
    test_round_trip();
    test_missing_dir();
    return check_summary("test_spill");
}
