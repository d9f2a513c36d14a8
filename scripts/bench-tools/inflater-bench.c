/*
 * inflater-bench: what each inflater (src/inflater.h) costs on real numpy members, for
 * restarts from checkpoints and for a first pass that records checkpoints.
 *
 * Build and run (members from make-members.py, 256 MiB each by default):
 *   make && cc -O2 -g -std=gnu11 -Isrc scripts/bench-tools/inflater-bench.c \
 *       build/libnpzcore.a -lz -lisal -o build/inflater-bench
 *   scripts/bench-tools/make-members.py /tmp/isal-bench 256
 *   build/inflater-bench /tmp/isal-bench/f32 /tmp/isal-bench/i64
 * Each argument names NAME.deflate (a raw deflate stream) and NAME.size (its output size).
 * Environment: BENCH_RUNS (first-pass runs, default 5), BENCH_SPAN (MiB, default 1),
 * BENCH_RESTARTS (checkpoints sampled, default 60), BENCH_ONLY (time only the whole-member
 * measures whose label contains this).
 *
 * Measures thread CPU time (the machine is shared; wall time would measure the others), medians
 * over the runs (all output goes to reused, pre-faulted buffers):
 *   plain      decode the whole member, no checkpoints (zlib inflate; isal_inflate)
 *   zran       zlib with Z_BLOCK at every block, a checkpoint (with its 32 KiB window) at the
 *              first boundary at least span past the last: the classic index build
 *   first pass the inflater way: decode span - 1 bytes, ask for a stop, record the boundary
 *              and window, reset there, go on (checkpoints must equal zran's)
 *   restart    from sampled checkpoints, window and input evicted from the CPU caches first:
 *              reset alone; reset + decode 128 KiB; reset + decode the chunk up to
 *              the next checkpoint; a random 128 KiB read (decode from the checkpoint to a random
 *              offset in its chunk, then 128 KiB)
 *   CRC-32     of the whole output, zlib's crc32 and ISA-L's crc32_gzip_refl (an index checks
 *              the member's CRC-32 in its first pass)
 * Every decode is checked once against the CRC-32 of zlib's plain decode.
 */
#include "inflater.h"
#include "cputime.h"

#include <errno.h>
#ifdef __x86_64__
#include <emmintrin.h>
#endif
#include <isa-l/crc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define KiB (1024u)
#define MiB (1024u * 1024u)
#define READ 128 * KiB
#define CHUNK_ROOM (64 * MiB) /* a chunk is span plus one block */

struct member {
    const char *name;
    unsigned char *z;
    size_t zn, n;
    uint32_t crc;
};

struct point {
    size_t in, out;
    int bits;
    unsigned char *window; /* NULL at the start */
};

struct index {
    struct point *p;
    size_t np;
    unsigned char *windows;
};

static void die(const char *what)
{
    fprintf(stderr, "inflater-bench: %s\n", what);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        die("out of memory");
    memset(p, 0, n); /* pre-fault */
    return p;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f || fseek(f, 0, SEEK_END) != 0)
        die(path);
    *len = (size_t)ftell(f);
    rewind(f);
    unsigned char *p = xmalloc(*len + 1);
    if (fread(p, 1, *len, f) != *len)
        die(path);
    fclose(f);
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* Plain decodes. */

/* The whole member through an inflater into a reused buffer; returns the CRC-32 of the output
 * when crc is set. */
static uint32_t plain(const struct inflater_ops *ops, const struct member *m, unsigned char *buf,
                      size_t room, int crc)
{
    struct inflater *f = ops->new();
    size_t in = 0, out = 0;
    uint32_t c = 0;
    for (;;) {
        size_t used, made;
        int rc = ops->step(f, m->z + in, m->zn - in, &used, buf, room, &made, 0);
        in += used;
        out += made;
        if (crc)
            c = (uint32_t)crc32(c, buf, (uInt)made);
        if (rc == INFLATER_END)
            break;
        if (rc < 0 || (used == 0 && made == 0))
            die("plain decode failed");
    }
    ops->free(f);
    if (out != m->n)
        die("plain decode: wrong size");
    return c;
}

/* ------------------------------------------------------------------------------------------ */
/* Index builds. */

static void index_init(struct index *ix, const struct member *m, size_t span)
{
    size_t cap = m->n / span + 2;
    ix->p = xmalloc(cap * sizeof *ix->p);
    ix->windows = xmalloc(cap * INFLATER_WINDOW);
    ix->p[0] = (struct point){0, 0, 0, NULL};
    ix->np = 1;
}

static void index_add(struct index *ix, size_t in, int bits, size_t out, const unsigned char *w)
{
    struct point *p = &ix->p[ix->np];
    *p = (struct point){in, out, bits, ix->windows + ix->np * INFLATER_WINDOW};
    memcpy(p->window, w, INFLATER_WINDOW);
    ix->np++;
}

static void index_free(struct index *ix)
{
    free(ix->p);
    free(ix->windows);
    ix->p = NULL;
    ix->windows = NULL;
}

/* zran: zlib with Z_BLOCK, output into buf (CHUNK_ROOM + window), the last 32 KiB moved to the
 * front when it fills. */
static uint32_t zran(const struct member *m, size_t span, unsigned char *buf, struct index *ix,
                     int crc)
{
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -15) != Z_OK)
        die("inflateInit2");
    index_init(ix, m, span);
    s.next_in = m->z;
    s.avail_in = (uInt)m->zn;
    size_t last = 0, base = 0; /* output offset of buf[0] */
    uint32_t c = 0;
    s.next_out = buf;
    s.avail_out = CHUNK_ROOM;
    for (;;) {
        unsigned char *from = s.next_out;
        int rc = inflate(&s, Z_BLOCK);
        if (crc)
            c = (uint32_t)crc32(c, from, (uInt)(s.next_out - from));
        if (rc == Z_STREAM_END)
            break;
        if (rc != Z_OK)
            die("zran: inflate failed");
        size_t out = base + (size_t)(s.next_out - buf);
        if ((s.data_type & 0xc0) == 0x80 && out - last >= span) {
            index_add(ix, m->zn - s.avail_in, s.data_type & 7, out, s.next_out - INFLATER_WINDOW);
            last = out;
        }
        if (s.avail_out == 0) {
            memmove(buf, s.next_out - INFLATER_WINDOW, INFLATER_WINDOW);
            base = out - INFLATER_WINDOW;
            s.next_out = buf + INFLATER_WINDOW;
            s.avail_out = CHUNK_ROOM - INFLATER_WINDOW;
        }
    }
    inflateEnd(&s);
    return c;
}

/* Resets f at p. */
static void restart(const struct inflater_ops *ops, struct inflater *f, const struct member *m,
                    const struct point *p)
{
    if (ops->reset(f, p->bits, p->bits ? m->z[p->in - 1] : 0, p->window,
                   p->window ? INFLATER_WINDOW : 0) != 0)
        die("reset failed");
}

/* Decodes until want bytes are in buf[*have..) or flags make a step return non-zero. */
static int decode(const struct inflater_ops *ops, struct inflater *f, const struct member *m,
                  size_t *in, unsigned char *buf, size_t *have, size_t want, int flags)
{
    while (*have < want || flags) {
        size_t used, made;
        int rc = ops->step(f, m->z + *in, m->zn - *in, &used, buf + *have, want - *have, &made,
                           flags);
        *in += used;
        *have += made;
        if (rc != INFLATER_OK)
            return rc;
        if (used == 0 && made == 0)
            die("decode made no progress");
    }
    return INFLATER_OK;
}

/* The first pass the inflater way: chunks decoded into buf (CHUNK_ROOM), a stop asked once
 * span - 1 bytes are out so that the block holding byte span - 1 is the last. */
static uint32_t first_pass(const struct inflater_ops *ops, const struct member *m, size_t span,
                           unsigned char *buf, struct index *ix, int crc)
{
    struct inflater *f = ops->new();
    index_init(ix, m, span);
    size_t in = 0, out = 0;
    uint32_t c = 0;
    for (;;) {
        size_t have = 0;
        int rc = decode(ops, f, m, &in, buf, &have, span - 1, 0);
        if (rc == INFLATER_OK)
            rc = decode(ops, f, m, &in, buf, &have, CHUNK_ROOM, INFLATER_STOP_AT_BLOCK);
        if (crc)
            c = (uint32_t)crc32(c, buf, (uInt)have);
        out += have;
        if (rc == INFLATER_END)
            break;
        if (rc != INFLATER_BLOCK_END || have < INFLATER_WINDOW)
            die("first pass: no block end");
        int bits;
        in = ix->p[ix->np - 1].in + (size_t)ops->boundary(f, &bits);
        index_add(ix, in, bits, out, buf + have - INFLATER_WINDOW);
        restart(ops, f, m, &ix->p[ix->np - 1]);
    }
    ops->free(f);
    if (out != m->n)
        die("first pass: wrong size");
    return c;
}

static int same_points(const struct index *a, const struct index *b)
{
    if (a->np != b->np)
        return 0;
    for (size_t i = 0; i < a->np; i++)
        if (a->p[i].in != b->p[i].in || a->p[i].bits != b->p[i].bits ||
            a->p[i].out != b->p[i].out)
            return 0;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Restarts. */

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Restart timings of one sample: reset alone, + 128 KiB, + the chunk, + a random 128 KiB read
 * (to a random offset in the chunk, then 128 KiB). */
enum { T_RESET, T_READ, T_CHUNK, T_RANDOM, NT };
static const char *const t_names[] = {"reset", "+128KiB", "+chunk", "rand128K"};

/* Drops n bytes at p from the CPU caches: a restart reads a window and input that nothing
 * touched lately, and the inflater timed second must not find them warm. */
static void evict(const void *p, size_t n)
{
#ifdef __x86_64__
    for (size_t i = 0; i < n; i += 64)
        _mm_clflush((const char *)p + i);
    _mm_mfence();
#else
    (void)p, (void)n;
#endif
}

static void restart_sample(const struct inflater_ops *ops, struct inflater *f,
                           const struct member *m, const struct point *p, const struct point *next,
                           size_t at, unsigned char *buf, double *t)
{
    size_t chunk = next->out - p->out, in_end = next->in + 64 * KiB;
    size_t want[NT] = {0, READ, chunk, at + READ < m->n - p->out ? at + READ : m->n - p->out};
    for (int k = 0; k < NT; k++) {
        size_t in = p->in, have = 0;
        if (p->window)
            evict(p->window, INFLATER_WINDOW);
        evict(m->z + p->in, (in_end < m->zn ? in_end : m->zn) - p->in);
        double t0 = now();
        restart(ops, f, m, p);
        decode(ops, f, m, &in, buf, &have, want[k], 0);
        t[k] = (now() - t0) * 1e3;
    }
}

/* Every inflater from the same sampled checkpoints, interleaved, with cold caches; prints the
 * medians. */
static void restarts(const struct member *m, const struct index *ix, size_t samples,
                     unsigned char *buf)
{
    size_t nops = 0;
    while (inflater_all[nops])
        nops++;
    struct inflater *f[8];
    double *t = xmalloc(nops * NT * samples * sizeof *t);
    for (size_t o = 0; o < nops; o++)
        f[o] = inflater_all[o]->new();
    uint64_t seed = 12345;
    for (size_t i = 0; i < samples; i++) {
        size_t k = (size_t)(rnd(&seed) % (ix->np - 1)); /* a chunk with a next checkpoint */
        size_t chunk = ix->p[k + 1].out - ix->p[k].out;
        size_t at = (size_t)(rnd(&seed) % chunk);
        for (size_t o = 0; o < nops; o++) {
            double ti[NT];
            restart_sample(inflater_all[o], f[o], m, &ix->p[k], &ix->p[k + 1], at, buf, ti);
            for (int j = 0; j < NT; j++)
                t[(o * NT + j) * samples + i] = ti[j];
        }
    }
    printf("%-34s", "restart (CPU ms, median of samples)");
    for (int j = 0; j < NT; j++)
        printf(" %10s", t_names[j]);
    printf("\n");
    for (size_t o = 0; o < nops; o++) {
        printf("%-34s", inflater_all[o]->name);
        for (int j = 0; j < NT; j++)
            printf(" %10.3f", median(t + (o * NT + j) * samples, samples));
        printf("\n");
        inflater_all[o]->free(f[o]);
    }
    free(t);
}

/* Every restart of the sample decodes the same bytes as zlib's plain pass (checked once). */
static void check_restarts(const struct inflater_ops *ops, const struct member *m,
                           const struct index *ix, unsigned char *buf, unsigned char *ref)
{
    struct inflater *f = ops->new();
    for (size_t k = 0; k + 1 < ix->np; k += ix->np / 16 + 1) {
        size_t in = ix->p[k].in, have = 0, chunk = ix->p[k + 1].out - ix->p[k].out;
        restart(ops, f, m, &ix->p[k]);
        decode(ops, f, m, &in, buf, &have, chunk, 0);
        if (memcmp(buf, ref + ix->p[k].out, chunk) != 0)
            die("restart decoded wrong bytes");
    }
    ops->free(f);
}

/* ------------------------------------------------------------------------------------------ */

/* Whole-member measures, timed in rounds (one run of each per round), so that a change in the
 * machine's load hits them all alike. */
enum what { PLAIN, ZRAN, FIRST_PASS, CRC_ZLIB, CRC_ISAL };
struct measure {
    const char *label;
    enum what what;
    const struct inflater_ops *ops;
};

static const struct measure measures[] = {
    {"plain zlib, 1 MiB buffer", PLAIN, &inflater_zlib},
    {"plain isal, 1 MiB buffer", PLAIN, &inflater_isal},
    {"zran zlib Z_BLOCK index build", ZRAN, NULL},
    {"first pass zlib with checkpoints", FIRST_PASS, &inflater_zlib},
    {"first pass isal with checkpoints", FIRST_PASS, &inflater_isal},
    {"CRC-32 of the output, zlib crc32", CRC_ZLIB, NULL},
    {"CRC-32 of the output, ISA-L", CRC_ISAL, NULL},
};
#define NMEASURES (sizeof measures / sizeof *measures)

static double time_one(const struct measure *ms, const struct member *m, size_t span,
                       unsigned char *buf, const unsigned char *ref)
{
    struct index ix = {0};
    double t0 = now();
    switch (ms->what) {
    case PLAIN: plain(ms->ops, m, buf, MiB, 0); break;
    case ZRAN: zran(m, span, buf, &ix, 0); break;
    case FIRST_PASS: first_pass(ms->ops, m, span, buf, &ix, 0); break;
    case CRC_ZLIB: crc32(0, ref, (uInt)m->n); break;
    case CRC_ISAL: crc32_gzip_refl(0, ref, m->n); break;
    }
    double t = now() - t0;
    index_free(&ix);
    return t;
}

static void time_whole(const struct member *m, size_t span, unsigned char *buf,
                       const unsigned char *ref, size_t runs)
{
    const char *only = getenv("BENCH_ONLY");
    double *t = xmalloc(NMEASURES * runs * sizeof *t);
    for (size_t r = 0; r < runs; r++)
        for (size_t k = 0; k < NMEASURES; k++)
            if (!only || strstr(measures[k].label, only))
                t[k * runs + r] = time_one(&measures[k], m, span, buf, ref);
    printf("%-34s %10s %10s\n", "whole member (CPU, median of runs)", "ms", "MB/s out");
    for (size_t k = 0; k < NMEASURES; k++) {
        if (only && !strstr(measures[k].label, only))
            continue;
        double md = median(t + k * runs, runs);
        printf("%-34s %10.1f %10.1f\n", measures[k].label, md * 1e3, m->n / md / 1e6);
    }
    free(t);
}

static size_t env_size(const char *name, size_t dflt)
{
    const char *v = getenv(name);
    return v && *v ? (size_t)strtoull(v, NULL, 10) : dflt;
}

static void bench_member(const char *base, size_t runs, size_t span, size_t samples)
{
    char path[4096];
    struct member m = {base, NULL, 0, 0, 0};
    snprintf(path, sizeof path, "%s.deflate", base);
    m.z = slurp(path, &m.zn);
    snprintf(path, sizeof path, "%s.size", base);
    size_t sl;
    char *sz = (char *)slurp(path, &sl);
    m.n = (size_t)strtoull(sz, NULL, 10);
    free(sz);
    unsigned char *buf = xmalloc(CHUNK_ROOM + INFLATER_WINDOW);
    unsigned char *ref = xmalloc(m.n);

    /* correctness first, untimed: every way decodes to zlib's bytes and checkpoints */
    m.crc = plain(&inflater_zlib, &m, ref, m.n, 1);
    struct index zix, iix;
    if (plain(&inflater_isal, &m, buf, MiB, 1) != m.crc || zran(&m, span, buf, &zix, 1) != m.crc)
        die("CRC mismatch");
    int same = 1;
    for (const struct inflater_ops *const *op = inflater_all; *op; op++) {
        if (first_pass(*op, &m, span, buf, &iix, 1) != m.crc)
            die("first pass CRC mismatch");
        same &= same_points(&zix, &iix);
        check_restarts(*op, &m, &zix, buf, ref);
        index_free(&iix);
    }

    printf("## %s: %.1f MiB -> %.1f MiB (ratio %.2f), span %zu KiB, %zu checkpoints, "
           "first-pass checkpoints equal to zran's: %s\n",
           base, m.zn / (double)MiB, m.n / (double)MiB, (double)m.n / m.zn, span / KiB, zix.np,
           same ? "yes" : "NO");
    if (crc32_gzip_refl(0, ref, m.n) != m.crc)
        die("ISA-L's CRC-32 differs from zlib's");
    time_whole(&m, span, buf, ref, runs);
    free(ref);
    restarts(&m, &zix, samples, buf);
    printf("\n");
    index_free(&zix);
    free(buf);
    free(m.z);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MEMBER...  (MEMBER.deflate and MEMBER.size)\n", argv[0]);
        return 2;
    }
    size_t runs = env_size("BENCH_RUNS", 5), span = env_size("BENCH_SPAN", 1) * MiB;
    size_t samples = env_size("BENCH_RESTARTS", 60);
    for (int i = 1; i < argc; i++)
        bench_member(argv[i], runs ? runs : 1, span, samples ? samples : 1);
    return 0;
}
