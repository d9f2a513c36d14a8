/*
 * Helpers shared by the npzmount fuzz harnesses (header-only, included by each harness).
 *
 * - fz_diag: a stream on a duplicate of the original stderr, opened in LLVMFuzzerInitialize
 *   before libFuzzer parses its flags. The makefile runs the fuzzers with -close_fd_mask=2 so
 *   that the core's log lines (one per failed member read) do not flood the output; libFuzzer
 *   and the sanitizers keep writing to their own duplicate, and so do our check failures.
 * - FZ_CHECK: an invariant; on failure prints the condition and a message, then abort()s, which
 *   libFuzzer reports as a crash with a stack trace and saves the input.
 * - fz_memfd_*: one memfd reused across runs, holding the current input as a file.
 * - fz_rand: a small deterministic generator seeded from the input, so runs are reproducible.
 */
#ifndef NPZMOUNT_FUZZ_COMMON_H
#define NPZMOUNT_FUZZ_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "source.h"

static FILE *fz_diag;

static inline void fz_diag_open(void)
{
    if (fz_diag)
        return;
    int fd = dup(2);
    if (fd >= 0)
        fz_diag = fdopen(fd, "w");
    if (!fz_diag)
        fz_diag = stderr;
    setvbuf(fz_diag, NULL, _IONBF, 0);
}

static inline void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));

static inline void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    FILE *f = fz_diag ? fz_diag : stderr;
    fprintf(f, "\n==FUZZ CHECK FAILED== %s:%d: %s\n    ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fprintf(f, "\n");
    fflush(f);
    abort();
}

#define FZ_CHECK(cond, ...)                                                                    \
    do {                                                                                       \
        if (!(cond))                                                                           \
            fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                                   \
    } while (0)

/* Known core bugs a harness can be told to tolerate while their fix is pending, so that a long
 * run goes on looking for other problems: NPZ_FUZZ_ALLOW=decode-eio (a comma-separated list).
 *   decode-eio: zindex_decode of an indexed chunk fails with -EIO although the index has not
 *               failed (tests/fuzz/regressions/fuzz_inflate/decode-reads-past-chunk-*).
 *   archive-cached: a member decoded by libarchive that failed still serves the chunks the
 *               cache holds (tests/fuzz/regressions/fuzz_zipdir/archive-failed-*).
 *   advance-empty: zindex_advance on a member declared empty (usize 0) whose stream is not
 *               empty returns 0 ("more to do") forever, never completing nor failing. */
static bool fz_allow_decode_eio, fz_allow_archive_cached, fz_allow_advance_empty;

static inline void fz_read_allowances(void)
{
    const char *a = getenv("NPZ_FUZZ_ALLOW");
    fz_allow_decode_eio = a && strstr(a, "decode-eio");
    fz_allow_archive_cached = a && strstr(a, "archive-cached");
    fz_allow_advance_empty = a && strstr(a, "advance-empty");
}

static int fz_memfd = -1;

static inline void fz_memfd_open(const char *name)
{
    if (fz_memfd >= 0)
        return;
    fz_memfd = memfd_create(name, MFD_CLOEXEC);
    if (fz_memfd < 0) {
        perror("memfd_create");
        abort();
    }
}

/* A source over the memfd as it holds now (its size is taken now); close it with
 * source_close. */
static inline struct source *fz_source(void)
{
    struct source *s = NULL;
    int fd = dup(fz_memfd);
    if (fd < 0 || source_from_fd(fd, "fuzz input", &s) < 0) {
        perror("fz_source");
        abort();
    }
    return s;
}

/* Makes the memfd hold exactly off + len bytes, the last len of them data. Bytes before off keep
 * whatever they held (callers pass off = 0 and write the whole file). */
static inline void fz_memfd_write(const void *data, size_t len, uint64_t off)
{
    const unsigned char *p = data;
    if (ftruncate(fz_memfd, (off_t)(off + len)) < 0) {
        perror("ftruncate");
        abort();
    }
    while (len > 0) {
        ssize_t n = pwrite(fz_memfd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            perror("pwrite");
            abort();
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
}

static inline uint32_t le32_of(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t le64_of(const uint8_t *p)
{
    return le32_of(p) | (uint64_t)le32_of(p + 4) << 32;
}

/* splitmix64 */
static inline uint64_t fz_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform-ish in [lo, hi] (hi >= lo). */
static inline uint64_t fz_range(uint64_t *s, uint64_t lo, uint64_t hi)
{
    uint64_t span = hi - lo + 1;
    return span == 0 ? fz_rand(s) : lo + fz_rand(s) % span;
}

static inline uint64_t fz_hash(const uint8_t *data, size_t size)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211ull;
    return h;
}

enum fz_inflate_status { FZ_END, FZ_ERROR, FZ_CAPPED };

/* One-shot raw inflate of in[0..in_len) into out[0..cap): the reference the index is compared
 * with. Returns how the stream ended and sets *made to the bytes produced: FZ_END (stream end
 * reached, *made is the whole output), FZ_ERROR (corrupt, or wants input past in_len: *made
 * bytes came out before that), FZ_CAPPED (cap bytes produced and more follow or may follow). */
static inline enum fz_inflate_status fz_inflate_ref(const unsigned char *in, size_t in_len,
                                             unsigned char *out, size_t cap, size_t *made)
{
    static z_stream s;
    static int ready;
    if (!ready) {
        if (inflateInit2(&s, -15) != Z_OK)
            abort();
        ready = 1;
    } else if (inflateReset(&s) != Z_OK) {
        abort();
    }
    *made = 0;
    if (cap == 0)
        return FZ_CAPPED;
    size_t in_done = 0;
    int rc = Z_OK;
    /* zlib counts in uInt; feed at most 1 GiB per call (inputs are far smaller anyway). */
    for (;;) {
        size_t in_chunk = in_len - in_done < (1u << 30) ? in_len - in_done : (1u << 30);
        size_t out_chunk = cap - *made < (1u << 30) ? cap - *made : (1u << 30);
        s.next_in = (unsigned char *)in + in_done;
        s.avail_in = (uInt)in_chunk;
        s.next_out = out + *made;
        s.avail_out = (uInt)out_chunk;
        rc = inflate(&s, Z_NO_FLUSH);
        size_t used_in = in_chunk - s.avail_in, used_out = out_chunk - s.avail_out;
        in_done += used_in;
        *made += used_out;
        if (rc == Z_STREAM_END)
            return FZ_END;
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return FZ_ERROR;
        if (*made == cap)
            return FZ_CAPPED;
        if (used_in == 0 && used_out == 0)
            return FZ_ERROR; /* stalled: the stream wants input past in_len */
    }
}

#endif
