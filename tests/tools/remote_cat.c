/*
 * remote_cat: reads an archive through source.h, for the remote source's tests.
 *
 *   remote_cat [-b BLOCK] [-c CACHE] [-t TIMEOUT] [-e ENDPOINT] [-j THREADS] URL [OFF:LEN...]
 *
 * With ranges, writes each range's bytes to stdout in order (read by THREADS threads at once,
 * each range by one); without, writes the whole object, read front to back in 128 KiB reads.
 * With the single range "-", serves lines "OFF LEN" from stdin, answering each with
 * "OK <hex>" or "ERR <errno> <message>" (so a test can change the object between reads).
 * Exit status: 0; 3 when the open fails (its message on stderr, one line); 4 when a read fails.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "source.h"

struct range {
    uint64_t off;
    size_t len;
    char *buf;
    int rc;
};

struct job {
    struct source *src;
    struct range *r;
    size_t n, next;
    pthread_mutex_t mu;
};

static void *read_ranges(void *arg)
{
    struct job *j = arg;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        size_t i = j->next++;
        pthread_mutex_unlock(&j->mu);
        if (i >= j->n)
            return NULL;
        struct range *r = &j->r[i];
        r->buf = malloc(r->len ? r->len : 1);
        r->rc = r->buf ? source_read(j->src, r->buf, r->len, r->off) : -ENOMEM;
    }
}

static int cat_ranges(struct source *src, char **spec, size_t n, unsigned threads)
{
    struct job j = {.src = src, .r = calloc(n, sizeof(struct range)), .n = n};
    pthread_t t[64];
    if (!j.r)
        return 4;
    for (size_t i = 0; i < n; i++)
        if (sscanf(spec[i], "%" SCNu64 ":%zu", &j.r[i].off, &j.r[i].len) != 2) {
            fprintf(stderr, "remote_cat: bad range %s\n", spec[i]);
            return 2;
        }
    pthread_mutex_init(&j.mu, NULL);
    threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    for (unsigned i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, read_ranges, &j);
    for (unsigned i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    int status = 0;
    for (size_t i = 0; i < n; i++) {
        if (j.r[i].rc < 0) {
            fprintf(stderr, "remote_cat: %s: %s\n", spec[i], strerror(-j.r[i].rc));
            status = 4;
        } else if (status == 0) {
            fwrite(j.r[i].buf, 1, j.r[i].len, stdout);
        }
        free(j.r[i].buf);
    }
    free(j.r);
    return status;
}

static int cat_all(struct source *src)
{
    static char buf[128 << 10];
    for (uint64_t off = 0; off < src->size; off += sizeof buf) {
        size_t len = src->size - off < sizeof buf ? (size_t)(src->size - off) : sizeof buf;
        int rc = source_read(src, buf, len, off);
        if (rc < 0) {
            fprintf(stderr, "remote_cat: at %" PRIu64 ": %s\n", off, strerror(-rc));
            return 4;
        }
        fwrite(buf, 1, len, stdout);
    }
    return 0;
}

static int serve_lines(struct source *src)
{
    char line[128];
    uint64_t off;
    size_t len;
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "%" SCNu64 " %zu", &off, &len) != 2)
            continue;
        unsigned char *buf = malloc(len ? len : 1);
        int rc = buf ? source_read(src, buf, len, off) : -ENOMEM;
        if (rc < 0) {
            printf("ERR %d %s\n", -rc, strerror(-rc));
        } else {
            printf("OK ");
            for (size_t i = 0; i < len; i++)
                printf("%02x", buf[i]);
            printf("\n");
        }
        free(buf);
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct source_options o = {0};
    unsigned threads = 1;
    int c;
    while ((c = getopt(argc, argv, "b:c:t:e:j:")) != -1) {
        switch (c) {
        case 'b': o.block = strtoull(optarg, NULL, 0); break;
        case 'c': o.cache_bytes = strtoull(optarg, NULL, 0); break;
        case 't': o.timeout_s = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'e': o.endpoint = optarg; break;
        case 'j': threads = (unsigned)strtoul(optarg, NULL, 0); break;
        default: return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "usage: remote_cat [-b B] [-c C] [-t T] [-e URL] [-j N] URL [OFF:LEN...]\n");
        return 2;
    }
    char msg[512];
    struct source *src;
    if (source_open(argv[optind], &o, &src, msg, sizeof msg) < 0) {
        fprintf(stderr, "remote_cat: open: %s\n", msg); /* not the URL: it may hold a password */
        return 3;
    }
    fprintf(stderr, "remote_cat: size %" PRIu64 "\n", src->size);
    int n = argc - optind - 1, status;
    if (n == 1 && strcmp(argv[optind + 1], "-") == 0)
        status = serve_lines(src);
    else if (n > 0)
        status = cat_ranges(src, argv + optind + 1, (size_t)n, threads);
    else
        status = cat_all(src);
    source_close(src);
    fflush(stdout);
    return status;
}
