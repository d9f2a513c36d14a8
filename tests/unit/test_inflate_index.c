/*
 * test_inflate_index: random access into raw deflate streams (src/inflate_index.c).
 *
 * Every expectation comes from zlib itself or from the original bytes, never from the code
 * under test: the streams are made here with deflate(), the data they must decode to is the
 * buffer they were made from, and the checkpoints the index must record are computed from an
 * independent zlib pass with Z_BLOCK that lists every block boundary (the header says a
 * checkpoint is the first block boundary at least span bytes past the previous one, short of
 * the end of the member).
 */
#include "inflate_index.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"

#define KiB (1024u)
#define MiB (1024u * 1024u)

/* Error codes the read helper returns when the index misbehaves (not errnos). */
#define TE_LOCATE (-100001)  /* locate returned a chunk not holding the offset */
#define TE_DECLEN (-100002)  /* decode returned a length different from locate's */
#define TE_NOPROG (-100003)  /* extend returned 0 but the offset is still not indexed */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------------------------------ */
/* Fault injection: outside the sanitizer builds (whose allocators must not be bypassed), malloc
 * is interposed so that a test can make the next allocation(s) of one exact size fail. The
 * program's definition takes precedence for every caller, zlib included. */

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define HAVE_MALLOC_INJECTION 1
extern void *__libc_malloc(size_t size);
static atomic_size_t inject_size;
static atomic_int inject_count;

void *malloc(size_t size)
{
    if (size && size == atomic_load_explicit(&inject_size, memory_order_relaxed) &&
        atomic_fetch_sub(&inject_count, 1) > 0) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_malloc(size);
}

/* The next n allocations of exactly size bytes fail (n == 0: none). */
static void inject_malloc_failure(size_t size, int n)
{
    atomic_store(&inject_count, n);
    atomic_store(&inject_size, n ? size : 0);
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* Pseudo-random numbers (xorshift64*), per caller state. */

static uint64_t rnd_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t g_rnd = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { return rnd_next(&g_rnd); }
static uint64_t rnd_below(uint64_t n) { return n ? rnd() % n : 0; }

/* ------------------------------------------------------------------------------------------ */
/* Data generators. */

static unsigned char *gen_floats(size_t n_bytes)
{
    size_t n = n_bytes / sizeof(double);
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) {
        /* roughly normal: sum of four uniforms, scaled */
        double s = 0;
        for (int j = 0; j < 4; j++)
            s += (double)(rnd() >> 11) / (double)(1ull << 53);
        d[i] = (s - 2.0) * 3.7;
    }
    return (unsigned char *)d;
}

static unsigned char *gen_arange(size_t n_bytes)
{
    size_t n = n_bytes / sizeof(int64_t);
    int64_t *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = (int64_t)i;
    return (unsigned char *)v;
}

static unsigned char *gen_random(size_t n)
{
    unsigned char *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(rnd() >> 56);
    return p;
}

static unsigned char *gen_periodic(size_t n)
{
    static const char pat[] = "npzmount-periodic-";
    unsigned char *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)pat[i % (sizeof pat - 1)];
    return p;
}

static unsigned char *gen_text(size_t n)
{
    static const char *words[] = {"alpha ", "beta ", "gamma ", "delta\n", "epsilon ",
                                  "zeta ",  "eta ",  "theta ", "iota, ",  "kappa "};
    unsigned char *p = malloc(n);
    size_t i = 0;
    while (i < n) {
        const char *w = words[rnd_below(10)];
        for (size_t j = 0; w[j] && i < n; j++)
            p[i++] = (unsigned char)w[j];
    }
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* Streams. */

struct dopt {
    int level, strategy, memlevel;
    size_t piece;    /* input fed per deflate() call (0: all at once) */
    bool flushes;    /* Z_SYNC_FLUSH / Z_FULL_FLUSH after every piece */
    bool empty_last; /* end with a flush and then an empty final block */
};

struct stream {
    const char *name;
    unsigned char *data;
    size_t usize;
    unsigned char *comp;
    size_t csize;
    uint32_t crc;
    int fd;
    uint64_t offset;     /* where comp starts in fd */
    uint64_t *bounds;    /* output offsets of the ends of non-last blocks, from zlib */
    size_t nbounds;
    size_t maxblock;     /* largest block output */
    size_t types[4];     /* blocks of each BTYPE: stored, fixed, dynamic, invalid */
    int nrandom;         /* random reads per span */
};

static unsigned char *deflate_raw(const unsigned char *in, size_t len, const struct dopt *o,
                                  size_t *clen)
{
    z_stream s;
    memset(&s, 0, sizeof s);
    if (deflateInit2(&s, o->level, Z_DEFLATED, -15, o->memlevel ? o->memlevel : 8,
                     o->strategy) != Z_OK)
        return NULL;
    size_t piece = o->piece ? o->piece : (len ? len : 1);
    size_t cap = deflateBound(&s, len) + 64 * (len / piece + 4) + 4096;
    unsigned char *out = malloc(cap);
    s.next_out = out;
    s.avail_out = (uInt)cap;
    size_t pos = 0;
    int npiece = 0;
    do {
        size_t n = len - pos < piece ? len - pos : piece;
        bool last = pos + n == len;
        int flush;
        if (last)
            flush = o->empty_last ? Z_SYNC_FLUSH : Z_FINISH;
        else if (o->flushes)
            flush = npiece % 3 == 2 ? Z_FULL_FLUSH : Z_SYNC_FLUSH;
        else
            flush = Z_NO_FLUSH;
        s.next_in = (unsigned char *)in + pos;
        s.avail_in = (uInt)n;
        int rc = deflate(&s, flush);
        if ((rc != Z_OK && rc != Z_STREAM_END) || s.avail_in != 0 || s.avail_out == 0) {
            fprintf(stderr, "deflate failed (%d)\n", rc);
            abort();
        }
        pos += n;
        npiece++;
    } while (pos < len);
    if (o->empty_last && deflate(&s, Z_FINISH) != Z_STREAM_END)
        abort();
    *clen = cap - s.avail_out;
    deflateEnd(&s);
    return out;
}

/* Lists block boundaries with zlib's own Z_BLOCK pass, and checks the stream decodes to data. */
static void scan_blocks(struct stream *st)
{
    z_stream s;
    memset(&s, 0, sizeof s);
    CHECK(inflateInit2(&s, -15) == Z_OK);
    unsigned char *out = malloc(st->usize + 1);
    s.next_in = st->comp;
    s.avail_in = (uInt)st->csize;
    s.next_out = out;
    s.avail_out = (uInt)st->usize + 1;
    size_t cap = 64, n = 0;
    uint64_t *b = malloc(cap * sizeof *b);
    uint64_t last = 0;
    size_t maxblock = 0;
    int rc;
    memset(st->types, 0, sizeof st->types);
    if (st->csize)
        st->types[(st->comp[0] >> 1) & 3]++; /* the first block header starts at bit 0 */
    for (;;) {
        rc = inflate(&s, Z_BLOCK);
        if (rc == Z_STREAM_END) {
            if (s.total_out - last > maxblock)
                maxblock = s.total_out - last;
            break;
        }
        if (rc != Z_OK)
            break;
        if ((s.data_type & 0xc0) == 0x80) {
            if (n == cap)
                b = realloc(b, (cap *= 2) * sizeof *b);
            b[n++] = s.total_out;
            /* the next block's header: 3 bits (BFINAL, BTYPE) right after the unused bits */
            uint64_t bit = (uint64_t)(st->csize - s.avail_in) * 8 - (uint64_t)(s.data_type & 7);
            unsigned v = 0;
            for (int j = 0; j < 3; j++, bit++)
                if (bit / 8 < st->csize)
                    v |= (unsigned)((st->comp[bit / 8] >> (bit % 8)) & 1) << j;
            st->types[(v >> 1) & 3]++;
            if (s.total_out - last > maxblock)
                maxblock = s.total_out - last;
            last = s.total_out;
        }
    }
    CHECK_EQ_I64(rc, Z_STREAM_END);
    CHECK_EQ_U64(s.total_out, st->usize);
    CHECK_EQ_U64(s.avail_in, 0);
    CHECK(st->usize == 0 || memcmp(out, st->data, st->usize) == 0);
    inflateEnd(&s);
    free(out);
    st->bounds = b;
    st->nbounds = n;
    st->maxblock = maxblock;
}

/* Writes junk, the stream, junk to an unlinked temp file; returns the fd, *offset the start. */
static int make_file(const unsigned char *comp, size_t clen, uint64_t *offset)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/npzmount-test-zi-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        abort();
    }
    unlink(path);
    size_t pre = 1 + (size_t)rnd_below(3000);
    unsigned char *junk = gen_random(pre > 4096 ? pre : 4096);
    if (write(fd, junk, pre) != (ssize_t)pre || write(fd, comp, clen) != (ssize_t)clen ||
        write(fd, junk, 4096) != 4096) {
        perror("write");
        abort();
    }
    free(junk);
    *offset = pre;
    return fd;
}

static void stream_init(struct stream *st, const char *name, unsigned char *data, size_t len,
                        const struct dopt *o, int nrandom)
{
    st->name = name;
    st->data = data;
    st->usize = len;
    st->comp = deflate_raw(data, len, o, &st->csize);
    st->crc = (uint32_t)crc32(0L, data, (uInt)len);
    st->fd = make_file(st->comp, st->csize, &st->offset);
    st->nrandom = nrandom;
    check_context("setup %s", name);
    scan_blocks(st);
    check_context("%s", "");
}

static void stream_free(struct stream *st)
{
    free(st->data);
    free(st->comp);
    free(st->bounds);
    close(st->fd);
}

static struct zindex_source stream_src(const struct stream *st)
{
    struct zindex_source src = {
        .fd = st->fd,
        .offset = st->offset,
        .csize = st->csize,
        .usize = st->usize,
        .crc32 = st->crc,
    };
    return src;
}

/* The checkpoints the header promises for span: returns their count, offsets in pts. */
static size_t expected_points(const struct stream *st, uint64_t span, uint64_t **pts)
{
    if (span < ZINDEX_WINDOW)
        span = ZINDEX_WINDOW;
    uint64_t *p = malloc((st->nbounds + 1) * sizeof *p);
    size_t n = 0;
    p[n++] = 0;
    for (size_t i = 0; i < st->nbounds; i++)
        if (st->bounds[i] >= p[n - 1] + span && st->bounds[i] < st->usize)
            p[n++] = st->bounds[i];
    *pts = p;
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* The sink: checks chunks arrive in order, contiguous and equal to the reference. */

struct sinkctx {
    const unsigned char *ref;
    uint64_t usize;
    uint64_t next_k, next_start;
    unsigned long calls, bad_order, bad_data;
    size_t kept_cap;           /* 0: free every chunk */
    unsigned char **kept;
    size_t *kept_len;
};

static void sink_init(struct sinkctx *sc, const unsigned char *ref, uint64_t usize,
                      size_t keep_cap)
{
    memset(sc, 0, sizeof *sc);
    sc->ref = ref;
    sc->usize = usize;
    sc->kept_cap = keep_cap;
    if (keep_cap) {
        sc->kept = calloc(keep_cap, sizeof *sc->kept);
        sc->kept_len = calloc(keep_cap, sizeof *sc->kept_len);
    }
}

static void sink_done(struct sinkctx *sc)
{
    for (size_t i = 0; i < sc->kept_cap; i++)
        free(sc->kept[i]);
    free(sc->kept);
    free(sc->kept_len);
}

static void sink_fn(void *ctx, uint64_t k, unsigned char *data, size_t len)
{
    struct sinkctx *sc = ctx;
    sc->calls++;
    if (k != sc->next_k)
        sc->bad_order++;
    if (sc->next_start + len > sc->usize || (len && !data) ||
        (len && memcmp(data, sc->ref + sc->next_start, len) != 0))
        sc->bad_data++;
    sc->next_k = k + 1;
    sc->next_start += len;
    if (k < sc->kept_cap && !sc->kept[k]) {
        sc->kept[k] = data;
        sc->kept_len[k] = len;
    } else {
        free(data);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Reading [off, off + len) through the index, as a member reader would. */

static int zi_read(struct zindex *zi, struct sinkctx *sc, uint64_t usize, uint64_t off,
                   size_t len, unsigned char *dst, size_t *got)
{
    *got = 0;
    if (off >= usize)
        return 0;
    if (len > usize - off)
        len = (size_t)(usize - off);
    size_t done = 0;
    bool just_extended = false;
    while (done < len) {
        uint64_t pos = off + done, k, start, clen;
        int rc = zindex_locate(zi, pos, &k, &start, &clen);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            if (just_extended)
                return TE_NOPROG;
            rc = zindex_extend(zi, pos, sink_fn, sc);
            if (rc < 0)
                return rc;
            just_extended = true;
            continue;
        }
        just_extended = false;
        if (rc != 1 || pos < start || pos - start >= clen)
            return TE_LOCATE;
        unsigned char *buf = NULL;
        size_t n = 0;
        rc = zindex_decode(zi, k, &buf, &n);
        if (rc < 0)
            return rc;
        if (n != clen) {
            free(buf);
            return TE_DECLEN;
        }
        size_t take = (size_t)(clen - (pos - start));
        if (take > len - done)
            take = len - done;
        memcpy(dst + done, buf + (pos - start), take);
        free(buf);
        done += take;
    }
    *got = done;
    return 0;
}

/* First differing byte of two buffers, or -1. */
static long first_diff(const unsigned char *a, const unsigned char *b, size_t n)
{
    if (n == 0 || memcmp(a, b, n) == 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return (long)i;
    return -1;
}

/* Reads [off, off+len) and checks it against the reference (clipped at the end). */
static bool check_read_at(struct zindex *zi, struct sinkctx *sc, const struct stream *st,
                          uint64_t off, size_t len, const char *file, int line)
{
    unsigned char *buf = malloc(len ? len : 1);
    size_t got = 0;
    int rc = zi_read(zi, sc, st->usize, off, len, buf, &got);
    size_t want = off >= st->usize ? 0 : (len < st->usize - off ? len : st->usize - off);
    bool ok;
    if (rc != 0) {
        ok = check_report(false, file, line, "read [%llu, +%zu) returned %d",
                          (unsigned long long)off, len, rc);
    } else if (got != want) {
        ok = check_report(false, file, line, "read [%llu, +%zu) got %zu bytes, want %zu",
                          (unsigned long long)off, len, got, want);
    } else {
        long d = first_diff(buf, st->data + off, got);
        ok = check_report(d < 0, file, line, "read [%llu, +%zu) differs at +%ld",
                          (unsigned long long)off, len, d);
    }
    free(buf);
    return ok;
}
#define CHECK_READ(zi, sc, st, off, len) check_read_at(zi, sc, st, off, len, __FILE__, __LINE__)

/* Reads and expects a negative errno; returns it (0 when the read succeeded). */
static int read_err(struct zindex *zi, struct sinkctx *sc, const struct stream *st,
                    uint64_t usize, uint64_t off, size_t len, bool *mismatch)
{
    unsigned char *buf = malloc(len ? len : 1);
    size_t got = 0;
    int rc = zi_read(zi, sc, usize, off, len, buf, &got);
    if (mismatch) {
        *mismatch = false;
        if (rc == 0) {
            size_t avail = off >= st->usize ? 0 : st->usize - off;
            *mismatch = got > avail || first_diff(buf, st->data + off, got) >= 0;
        }
    }
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* The streams used below. */

enum {
    S_FLOAT, S_ARANGE, S_STORED, S_FIXED, S_HUGE, S_SINGLE, S_FLUSH, S_EMPTY, S_TINY, S_ONE,
    NSTREAMS
};
static struct stream streams[NSTREAMS];

static void setup_streams(void)
{
    struct dopt dyn = {.level = 6, .strategy = Z_DEFAULT_STRATEGY};
    stream_init(&streams[S_FLOAT], "float64 random, level 6", gen_floats(3 * MiB / 2),
                3 * MiB / 2, &dyn, 40);
    struct dopt dyn_pieces = {.level = 6, .strategy = Z_DEFAULT_STRATEGY, .piece = 100000};
    stream_init(&streams[S_ARANGE], "int64 arange, level 6", gen_arange(2 * MiB), 2 * MiB,
                &dyn_pieces, 40);
    struct dopt stored = {.level = 0, .strategy = Z_DEFAULT_STRATEGY};
    stream_init(&streams[S_STORED], "stored blocks, level 0", gen_random(MiB + 12345),
                MiB + 12345, &stored, 40);
    /* compressible data (zlib would choose stored blocks if fixed ones came out larger), and a
     * low memLevel for short blocks: hundreds of block boundaries per megabyte */
    struct dopt fixed = {.level = 6, .strategy = Z_FIXED, .memlevel = 2};
    stream_init(&streams[S_FIXED], "fixed Huffman, Z_FIXED", gen_text(MiB), MiB, &fixed, 40);
    /* memLevel 9 lets one block hold ~32K symbols of 258-byte matches: > 8 MiB of output */
    struct dopt huge = {.level = 9, .strategy = Z_RLE, .memlevel = 9};
    unsigned char *z = calloc(1, 9 * MiB + 777);
    stream_init(&streams[S_HUGE], "one huge block, Z_RLE zeros", z, 9 * MiB + 777, &huge, 6);
    /* level 9 on periodic data: one (final) block for the whole member, no boundary at all */
    struct dopt single = {.level = 9, .strategy = Z_DEFAULT_STRATEGY, .memlevel = 9};
    stream_init(&streams[S_SINGLE], "one block, periodic level 9", gen_periodic(3 * MiB + 99),
                3 * MiB + 99, &single, 6);
    struct dopt fl = {.level = 6, .strategy = Z_DEFAULT_STRATEGY, .piece = 50000,
                      .flushes = true, .empty_last = true};
    stream_init(&streams[S_FLUSH], "sync/full flushes, empty final block", gen_text(MiB + 3),
                MiB + 3, &fl, 40);
    struct dopt plain = {.level = 6, .strategy = Z_DEFAULT_STRATEGY};
    stream_init(&streams[S_EMPTY], "empty", malloc(1), 0, &plain, 0);
    unsigned char *t = malloc(5);
    memcpy(t, "hello", 5);
    stream_init(&streams[S_TINY], "tiny", t, 5, &plain, 10);
    unsigned char *one = malloc(1);
    one[0] = 0x42;
    stream_init(&streams[S_ONE], "one byte", one, 1, &plain, 4);
}

/* The generated streams really have the block structure the tests rely on. */
static void test_stream_shapes(void)
{
    for (int i = 0; i < NSTREAMS; i++) {
        check_context("%s", streams[i].name);
        CHECK(streams[i].csize > 0);
    }
    check_context("stream shapes");
    for (int i = 0; i < NSTREAMS; i++)
        CHECK_EQ_U64(streams[i].types[3], 0);
    /* stored: every block at most 65535 bytes, several of them */
    CHECK_EQ_U64(streams[S_STORED].types[0], streams[S_STORED].nbounds + 1);
    CHECK(streams[S_STORED].maxblock <= 65535);
    CHECK(streams[S_STORED].nbounds >= 15);
    /* float and arange: many dynamic blocks */
    CHECK(streams[S_FLOAT].nbounds >= 20);
    CHECK(streams[S_ARANGE].nbounds >= 10);
    CHECK(streams[S_FIXED].nbounds >= 5);
    CHECK_EQ_U64(streams[S_FIXED].types[1], streams[S_FIXED].nbounds + 1);
    CHECK(streams[S_FLOAT].types[2] >= 20);
    CHECK(streams[S_ARANGE].types[2] >= 10);
    CHECK(streams[S_FLUSH].types[0] >= 10); /* the empty stored blocks of the flushes */
    CHECK(streams[S_FLUSH].types[2] >= 10);
    /* the huge block is larger than the largest span */
    if (!CHECK(streams[S_HUGE].maxblock > 8 * MiB))
        printf("    huge stream's largest block: %zu bytes\n", streams[S_HUGE].maxblock);
    CHECK_EQ_U64(streams[S_SINGLE].nbounds, 0);
    /* the flush stream has empty blocks: repeated boundary offsets, one at the very end */
    const struct stream *f = &streams[S_FLUSH];
    bool dup = false;
    for (size_t i = 1; i < f->nbounds; i++)
        dup |= f->bounds[i] == f->bounds[i - 1];
    CHECK(dup);
    CHECK(f->nbounds > 0 && f->bounds[f->nbounds - 1] == f->usize);
    CHECK_EQ_U64(streams[S_EMPTY].nbounds, 0);
    check_context("%s", "");
}

/* ------------------------------------------------------------------------------------------ */
/* Correct streams, all spans. */

static const uint64_t spans[] = {32 * KiB, 64 * KiB, MiB, 8 * MiB};

static void check_stream_span(struct stream *st, uint64_t span, int mode)
{
    check_context("%s, span %llu, mode %d", st->name, (unsigned long long)span, mode);
    uint64_t *pts;
    size_t np = expected_points(st, span, &pts);
    struct zindex_source src = stream_src(st);
    struct zindex *zi = zindex_new(&src, span);
    if (span < ZINDEX_WINDOW)
        span = ZINDEX_WINDOW; /* the effective span, for the checks below */
    if (!CHECK(zi != NULL)) {
        free(pts);
        return;
    }
    struct sinkctx sc;
    sink_init(&sc, st->data, st->usize, np);
    uint64_t k = 99, start = 99, len = 99;

    CHECK_EQ_U64(zindex_points(zi), 1);
    CHECK(zindex_why(zi) == NULL);
    CHECK_EQ_I64(zindex_locate(zi, 0, &k, &start, &len), 0);
    CHECK_EQ_I64(zindex_decode(zi, 0, &(unsigned char *){NULL}, &(size_t){0}), -EINVAL);

    if (st->usize == 0) {
        CHECK_EQ_I64(zindex_extend(zi, 0, sink_fn, &sc), 0);
    } else if (mode == 0) {
        /* start, then sequentially; the index grows one chunk ahead of the reads */
        CHECK_READ(zi, &sc, st, 0, st->usize < 4096 ? st->usize : 4096);
        CHECK_EQ_U64(zindex_points(zi), np < 2 ? np : 2);
        uint64_t step = st->usize / 7 + 1;
        if (step < 2 * MiB && st->maxblock > MiB)
            step = 2 * MiB; /* huge chunks: each read decodes megabytes */
        for (uint64_t off = 0; off < st->usize; off += step) {
            uint64_t last = off + step < st->usize ? off + step - 1 : st->usize - 1;
            CHECK_READ(zi, &sc, st, off, (size_t)(last - off + 1));
            size_t below = 0; /* checkpoints at or before the last byte read */
            while (below < np && pts[below] <= last)
                below++;
            CHECK_EQ_U64(zindex_points(zi), below + 1 < np ? below + 1 : np);
        }
    } else if (mode == 1) {
        /* the far end first: builds everything, then the start */
        CHECK_READ(zi, &sc, st, st->usize - 1, 1);
        CHECK_EQ_U64(zindex_points(zi), np);
        CHECK_READ(zi, &sc, st, st->usize > 100 ? st->usize - 100 : 0, 100);
        CHECK_READ(zi, &sc, st, 0, 100);
        CHECK_READ(zi, &sc, st, 0, st->usize);
    } else {
        /* the middle first, then the end, then everything */
        CHECK_READ(zi, &sc, st, st->usize / 2, 1000);
        CHECK_READ(zi, &sc, st, st->usize - 1, 1);
        CHECK_READ(zi, &sc, st, 0, st->usize);
    }

    /* fully built: healthy, the expected checkpoints, chunks as promised */
    CHECK(zindex_why(zi) == NULL);
    CHECK_EQ_U64(zindex_points(zi), np);
    CHECK(zindex_points(zi) <= st->usize / span + 1);
    CHECK(zindex_memory(zi) >= (np - 1) * (uint64_t)ZINDEX_WINDOW);
    CHECK_EQ_U64(sc.calls, np);
    CHECK_EQ_U64(sc.bad_order, 0);
    CHECK_EQ_U64(sc.bad_data, 0);
    CHECK_EQ_U64(sc.next_start, st->usize);

    int bad_locate = 0;
    for (size_t i = 0; i < np; i++) {
        uint64_t end = i + 1 < np ? pts[i + 1] : st->usize;
        int rc = zindex_locate(zi, pts[i], &k, &start, &len);
        if (rc != 1 || k != i || start != pts[i] || len != end - pts[i]) {
            if (bad_locate++ < 5)
                printf("    chunk %zu: rc %d k %llu start %llu len %llu, want %llu %llu\n", i,
                       rc, (unsigned long long)k, (unsigned long long)start,
                       (unsigned long long)len, (unsigned long long)pts[i],
                       (unsigned long long)(end - pts[i]));
            continue;
        }
        if (end > pts[i] + 1) {
            rc = zindex_locate(zi, end - 1, &k, &start, &len);
            if (rc != 1 || k != i || start != pts[i])
                bad_locate++;
        }
        if (i > 0) {
            rc = zindex_locate(zi, pts[i] - 1, &k, &start, &len);
            if (rc != 1 || k != i - 1 || start != pts[i - 1])
                bad_locate++;
        }
        /* a chunk is at least span long (but the last), and at most one block more */
        if (i + 1 < np && (end - pts[i] < span || end - pts[i] >= span + st->maxblock + 1))
            bad_locate++;
    }
    CHECK_EQ_I64(bad_locate, 0);
    /* locate's answer for the empty member: one empty chunk */
    if (st->usize == 0) {
        CHECK_EQ_I64(zindex_locate(zi, 0, &k, &start, &len), 1);
        CHECK_EQ_U64(k, 0);
        CHECK_EQ_U64(len, 0);
    }

    /* decode every chunk, forwards (the cursor continues) and backwards (restarts) */
    int bad_dec = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t j = 0; j < np; j++) {
            size_t i = pass == 0 ? j : np - 1 - j;
            uint64_t end = i + 1 < np ? pts[i + 1] : st->usize;
            unsigned char *buf = NULL;
            size_t n = 12345;
            int rc = zindex_decode(zi, i, &buf, &n);
            if (rc != 0 || n != end - pts[i] || (n && !buf) ||
                (n && memcmp(buf, st->data + pts[i], n) != 0) ||
                (sc.kept[i] && (sc.kept_len[i] != n || memcmp(buf, sc.kept[i], n) != 0))) {
                if (bad_dec++ < 5)
                    printf("    decode of chunk %zu (pass %d): rc %d len %zu\n", i, pass, rc,
                           n);
            }
            free(buf);
        }
    }
    CHECK_EQ_I64(bad_dec, 0);
    CHECK_EQ_I64(zindex_decode(zi, np, &(unsigned char *){NULL}, &(size_t){0}), -EINVAL);

    /* reads around every checkpoint (a sample of them when there are many) */
    size_t stride = np > 40 ? np / 40 : 1;
    for (size_t i = 1; i < np; i += stride) {
        uint64_t c = pts[i];
        CHECK_READ(zi, &sc, st, c, 1);
        CHECK_READ(zi, &sc, st, c - 1, 1);
        CHECK_READ(zi, &sc, st, c + 1, 1);
        CHECK_READ(zi, &sc, st, c - 1, 2);
        CHECK_READ(zi, &sc, st, c, 100);
        CHECK_READ(zi, &sc, st, c - 100, 300);
        CHECK_READ(zi, &sc, st, c - 5, (size_t)(2 * span + 10)); /* several checkpoints */
    }
    /* the first and last bytes, and reads running past the end */
    if (st->usize) {
        CHECK_READ(zi, &sc, st, 0, 1);
        CHECK_READ(zi, &sc, st, st->usize - 1, 1);
        CHECK_READ(zi, &sc, st, st->usize - 1, 1000);
        CHECK_READ(zi, &sc, st, st->usize > 10 ? st->usize - 10 : 0, 100000);
        CHECK_READ(zi, &sc, st, 0, st->usize + 1);
    }
    CHECK_READ(zi, &sc, st, st->usize, 10);
    CHECK_READ(zi, &sc, st, st->usize + 12345, 10);

    /* random reads: each costs about a chunk of decoding; keep that within ~24 MiB */
    int nrandom = st->nrandom;
    if (nrandom > 3 && (uint64_t)nrandom * (st->usize / np) > 24 * MiB)
        nrandom = (int)(24 * MiB / (st->usize / np)) > 3 ? (int)(24 * MiB / (st->usize / np)) : 3;
    for (int r = 0; r < nrandom; r++) {
        uint64_t off = rnd_below(st->usize);
        size_t n = 1 + (size_t)rnd_below(r % 4 == 0 ? 3 * (span < MiB ? span : MiB) : 5000);
        CHECK_READ(zi, &sc, st, off, n);
    }
    /* still healthy, nothing more was indexed or sunk */
    CHECK(zindex_why(zi) == NULL);
    CHECK_EQ_U64(zindex_points(zi), np);
    CHECK_EQ_U64(sc.calls, np);

    zindex_free(zi);
    sink_done(&sc);
    free(pts);
    check_context("%s", "");
}

static void test_all_streams_all_spans(void)
{
    int mode = 0;
    for (int i = 0; i < NSTREAMS; i++)
        for (size_t j = 0; j < sizeof spans / sizeof spans[0]; j++) {
            double t_ = now();
            check_stream_span(&streams[i], spans[j], mode++ % 3);
            if (getenv("ZI_TIMES"))
                fprintf(stderr, "  %s %llu: %.3f\n", streams[i].name,
                        (unsigned long long)spans[j], now() - t_);
        }
}

/* Spans below the window are clamped to it; a fresh zindex that is freed unused is fine. */
static void test_span_clamp(void)
{
    check_stream_span(&streams[S_FIXED], 1, 0);
    check_stream_span(&streams[S_FLOAT], 1000, 1);
    check_stream_span(&streams[S_FLUSH], 32767, 2);
    struct zindex_source src = stream_src(&streams[S_FLOAT]);
    zindex_free(zindex_new(&src, 64 * KiB));
    zindex_free(NULL);
}

/* zindex_extend on an already indexed offset returns 0 and sinks nothing. */
static void test_extend_idempotent(void)
{
    const struct stream *st = &streams[S_FLOAT];
    check_context("extend idempotent");
    struct zindex_source src = stream_src(st);
    struct zindex *zi = zindex_new(&src, 64 * KiB);
    struct sinkctx sc;
    sink_init(&sc, st->data, st->usize, 0);
    CHECK_EQ_I64(zindex_extend(zi, 300 * KiB, sink_fn, &sc), 0);
    unsigned long calls = sc.calls;
    uint64_t pts = zindex_points(zi);
    CHECK(calls >= 3);
    CHECK_EQ_I64(zindex_extend(zi, 300 * KiB, sink_fn, &sc), 0);
    CHECK_EQ_I64(zindex_extend(zi, 0, sink_fn, &sc), 0);
    CHECK_EQ_U64(sc.calls, calls);
    CHECK_EQ_U64(zindex_points(zi), pts);
    /* extending past the end completes the index */
    CHECK_EQ_I64(zindex_extend(zi, st->usize + 999, sink_fn, &sc), 0);
    CHECK_EQ_U64(sc.next_start, st->usize);
    CHECK_EQ_U64(sc.bad_data, 0);
    CHECK(zindex_why(zi) == NULL);
    uint64_t k, start, len;
    CHECK_EQ_I64(zindex_locate(zi, st->usize - 1, &k, &start, &len), 1);
    CHECK_EQ_U64(start + len, st->usize);
    zindex_free(zi);
    sink_done(&sc);
}

/* ------------------------------------------------------------------------------------------ */
/* Failures. */

/* After a failure every entry point keeps failing with the same reason. */
static void check_stays_failed(struct zindex *zi, struct sinkctx *sc, const struct stream *st,
                               uint64_t usize, const char *why_part)
{
    const char *why = zindex_why(zi);
    if (CHECK(why != NULL) && !CHECK(strstr(why, why_part) != NULL))
        printf("    zindex_why: \"%s\", want it to mention \"%s\"\n", why, why_part);
    uint64_t k, start, len;
    CHECK_EQ_I64(zindex_locate(zi, 0, &k, &start, &len), -EIO);
    CHECK_EQ_I64(zindex_decode(zi, 0, &(unsigned char *){NULL}, &(size_t){0}), -EIO);
    CHECK_EQ_I64(zindex_extend(zi, usize ? usize - 1 : 0, sink_fn, sc), -EIO);
    CHECK_EQ_I64(read_err(zi, sc, st, usize, 0, 10, NULL), usize ? -EIO : 0);
    CHECK_EQ_I64(read_err(zi, sc, st, usize, usize / 2, 10, NULL), usize ? -EIO : 0);
    CHECK(zindex_why(zi) == why);
}

static void test_bad_crc(void)
{
    int ids[] = {S_FLOAT, S_STORED, S_FLUSH, S_TINY, S_EMPTY};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const struct stream *st = &streams[ids[i]];
        check_context("bad CRC, %s", st->name);
        struct zindex_source src = stream_src(st);
        src.crc32 ^= 0x00100000;
        struct zindex *zi = zindex_new(&src, 64 * KiB);
        struct sinkctx sc;
        sink_init(&sc, st->data, st->usize, 0);
        /* a read near the start may be served before the end is checked; if so it is right */
        bool mismatch = true;
        int rc = read_err(zi, &sc, st, st->usize, 0, 10, &mismatch);
        CHECK(rc == -EIO || (rc == 0 && !mismatch));
        /* decoding to the end finds the mismatch */
        rc = read_err(zi, &sc, st, st->usize, 0, st->usize, NULL);
        CHECK_EQ_I64(rc, st->usize ? -EIO : 0);
        if (st->usize == 0)
            CHECK_EQ_I64(zindex_extend(zi, 0, sink_fn, &sc), -EIO);
        check_stays_failed(zi, &sc, st, st->usize, "CRC");
        CHECK_EQ_U64(sc.bad_data, 0);
        CHECK(sc.next_start < st->usize || st->usize == 0); /* the last chunk was not sunk */
        zindex_free(zi);
        sink_done(&sc);
    }
}

static void test_bad_usize(void)
{
    static const struct {
        int id;
        int64_t delta;
        const char *why;
    } cases[] = {
        {S_FLOAT, 1, "shorter"},    {S_FLOAT, 1000, "shorter"},   {S_FLOAT, -1, "longer"},
        {S_FLOAT, -1000, "longer"}, {S_FLOAT, -300000, "longer"}, {S_FLUSH, 1, "shorter"},
        {S_FLUSH, -1, "longer"},    {S_STORED, 70000, "shorter"}, {S_STORED, -1, "longer"},
        {S_TINY, 1, "shorter"},     {S_TINY, -1, "longer"},       {S_TINY, -5, "longer"},
        {S_EMPTY, 1, "shorter"},    {S_EMPTY, 100, "shorter"},    {S_HUGE, -1, "longer"},
        {S_HUGE, 1, "shorter"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct stream *st = &streams[cases[i].id];
        uint64_t usize = (uint64_t)((int64_t)st->usize + cases[i].delta);
        for (int s = 0; s < 2; s++) {
            uint64_t span = s ? 64 * KiB : 32 * KiB;
            check_context("usize %+lld, %s, span %llu", (long long)cases[i].delta, st->name,
                          (unsigned long long)span);
            struct zindex_source src = stream_src(st);
            src.usize = usize;
            struct zindex *zi = zindex_new(&src, span);
            struct sinkctx sc;
            sink_init(&sc, st->data, st->usize, 0);
            bool mismatch = true;
            int rc;
            if (usize > 10) {
                /* the start may be served (right) before the frontier passes the end */
                rc = read_err(zi, &sc, st, usize, 0, 10, &mismatch);
                CHECK(rc == -EIO || (rc == 0 && !mismatch));
            }
            rc = read_err(zi, &sc, st, usize, 0, (size_t)usize, NULL);
            if (usize > 0) {
                CHECK_EQ_I64(rc, -EIO);
            } else {
                CHECK_EQ_I64(zindex_extend(zi, 0, sink_fn, &sc), -EIO);
            }
            check_stays_failed(zi, &sc, st, usize, cases[i].why);
            CHECK_EQ_U64(sc.bad_data, 0);
            zindex_free(zi);
            sink_done(&sc);
        }
    }
}

static void test_corrupt(void)
{
    int ids[] = {S_FLOAT, S_STORED, S_FIXED, S_FLUSH, S_ARANGE};
    int detected = 0, total = 0;
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const struct stream *st = &streams[ids[i]];
        for (int c = 0; c < 12; c++) {
            unsigned char *comp = malloc(st->csize);
            memcpy(comp, st->comp, st->csize);
            /* flip 1-4 bytes somewhere between 2 % and 98 % of the stream */
            size_t at = st->csize / 50 + (size_t)rnd_below(st->csize * 96 / 100);
            int nflip = 1 + (int)rnd_below(4);
            for (int f = 0; f < nflip && at + (size_t)f < st->csize; f++)
                comp[at + (size_t)f] ^= (unsigned char)(1 + rnd_below(255));
            check_context("corrupt %s at %zu (%d bytes)", st->name, at, nflip);
            struct zindex_source src = stream_src(st);
            src.fd = make_file(comp, st->csize, &src.offset);
            uint64_t span = c % 2 ? 32 * KiB : 64 * KiB;
            struct zindex *zi = zindex_new(&src, span);
            struct sinkctx sc;
            sink_init(&sc, st->data, st->usize, 0);
            /* a read in the middle first: it may succeed with wrong data (not yet checked) */
            bool garbage = false;
            int rc = read_err(zi, &sc, st, st->usize, st->usize / 2, 5000, &garbage);
            CHECK(rc == 0 || rc == -EIO);
            /* then everything: wrong data must not pass the end-of-member checks */
            bool mismatch = false;
            rc = read_err(zi, &sc, st, st->usize, 0, st->usize, &mismatch);
            total++;
            if (rc == -EIO) {
                detected++;
                check_stays_failed(zi, &sc, st, st->usize, "");
            } else {
                CHECK_EQ_I64(rc, 0);
                CHECK(!mismatch);
                CHECK(!garbage);
                CHECK(zindex_why(zi) == NULL);
            }
            /* a second index on the same corrupt file, read from the end */
            struct zindex *zi2 = zindex_new(&src, span);
            rc = read_err(zi2, &sc, st, st->usize, st->usize - 1, 1, &mismatch);
            CHECK(rc == -EIO || (rc == 0 && !mismatch));
            if (rc == -EIO)
                CHECK(zindex_why(zi2) != NULL);
            zindex_free(zi2);
            zindex_free(zi);
            sink_done(&sc);
            close(src.fd);
            free(comp);
        }
    }
    check_context("corrupt streams");
    /* all of them should be caught (zlib or CRC); a same-output corruption is vanishingly rare */
    if (!CHECK(detected >= total - 1) || getenv("ZI_TIMES"))
        printf("    detected %d of %d corruptions\n", detected, total);
}

static void test_truncated(void)
{
    int ids[] = {S_FLOAT, S_STORED, S_FIXED, S_FLUSH, S_TINY, S_EMPTY, S_HUGE};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const struct stream *st = &streams[ids[i]];
        uint64_t cuts[] = {1, 2, 7, st->csize / 2, st->csize - 1, st->csize};
        for (size_t j = 0; j < sizeof cuts / sizeof cuts[0]; j++) {
            if (cuts[j] > st->csize || (j > 0 && cuts[j] == cuts[j - 1]))
                continue;
            check_context("csize -%llu, %s", (unsigned long long)cuts[j], st->name);
            struct zindex_source src = stream_src(st);
            src.csize -= cuts[j];
            struct zindex *zi = zindex_new(&src, 32 * KiB);
            struct sinkctx sc;
            sink_init(&sc, st->data, st->usize, 0);
            int rc;
            if (st->usize)
                rc = read_err(zi, &sc, st, st->usize, 0, st->usize, NULL);
            else
                rc = zindex_extend(zi, 0, sink_fn, &sc);
            CHECK_EQ_I64(rc, -EIO);
            check_stays_failed(zi, &sc, st, st->usize, "");
            CHECK_EQ_U64(sc.bad_data, 0);
            zindex_free(zi);
            sink_done(&sc);
        }
    }
}

/* Running out of memory is transient: -ENOMEM for that call, and the member stays healthy (it is
 * not corrupt). Only where malloc can be interposed (not under ASan/TSan). */
static void test_enomem_transient(void)
{
#ifdef HAVE_MALLOC_INJECTION
    const struct stream *st = &streams[S_FLOAT];
    const uint64_t span = 64 * KiB;
    uint64_t *pts;
    size_t np = expected_points(st, span, &pts);
    struct zindex_source src = stream_src(st);
    struct { size_t size; const char *what; } cases[] = {
        {ZINDEX_WINDOW, "a checkpoint's window"},
        {(size_t)span + (64u << 10), "the frontier chunk buffer"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        check_context("ENOMEM for %s (%zu bytes)", cases[c].what, cases[c].size);
        struct zindex *zi = zindex_new(&src, span);
        struct sinkctx sc;
        sink_init(&sc, st->data, st->usize, 0);
        if (!CHECK(np > 4))
            break;
        /* chunk 0 is indexed, with all of zlib's buffers allocated */
        CHECK_READ(zi, &sc, st, 0, 10);
        /* indexing chunk 1 runs out of memory */
        inject_malloc_failure(cases[c].size, 1);
        int rc = read_err(zi, &sc, st, st->usize, pts[1], 10, NULL);
        bool injected = atomic_load(&inject_count) <= 0;
        inject_malloc_failure(0, 0);
        CHECK(injected);
        CHECK_EQ_I64(rc, -ENOMEM);
        CHECK(zindex_why(zi) == NULL);
        /* memory is back: everything reads, the end-of-member checks pass */
        CHECK_READ(zi, &sc, st, pts[1], 10);
        CHECK_READ(zi, &sc, st, 0, st->usize);
        const char *why = zindex_why(zi);
        if (!CHECK(why == NULL))
            printf("    zindex_why: \"%s\"\n", why);
        CHECK_EQ_U64(zindex_points(zi), np);
        CHECK_EQ_U64(sc.bad_data, 0);
        CHECK_EQ_U64(sc.next_start, st->usize);
        zindex_free(zi);
        sink_done(&sc);
    }
    /* decoding an indexed chunk runs out of memory for its buffer */
    check_context("ENOMEM for a decoded chunk");
    struct zindex *zi = zindex_new(&src, span);
    struct sinkctx sc;
    sink_init(&sc, st->data, st->usize, 0);
    CHECK_EQ_I64(zindex_extend(zi, st->usize - 1, sink_fn, &sc), 0);
    unsigned char *buf = NULL;
    size_t n = 0;
    inject_malloc_failure((size_t)(pts[2] - pts[1]), 1);
    CHECK_EQ_I64(zindex_decode(zi, 1, &buf, &n), -ENOMEM);
    inject_malloc_failure(0, 0);
    CHECK(zindex_why(zi) == NULL);
    CHECK_READ(zi, &sc, st, pts[1], (size_t)(pts[2] - pts[1]));
    zindex_free(zi);
    sink_done(&sc);
    free(pts);
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* Concurrency: 8 threads reading random ranges of one index that is not built yet. */

struct reader_arg {
    struct zindex *zi;
    struct sinkctx *sc;
    const struct stream *st;
    uint64_t seed, span;
    int nreads;
    atomic_int *errors, *mismatches, *reads;
};

static void *reader_thread(void *p)
{
    struct reader_arg *a = p;
    uint64_t s = a->seed;
    size_t cap = (size_t)(3 * a->span + 8192);
    unsigned char *buf = malloc(cap);
    for (int i = 0; i < a->nreads; i++) {
        uint64_t r = rnd_next(&s);
        /* some threads lean to the far end so that several wait on the frontier */
        uint64_t off = r % 3 == 0 ? a->st->usize - 1 - rnd_next(&s) % (a->st->usize / 8)
                                  : rnd_next(&s) % a->st->usize;
        size_t len = 1 + (size_t)(rnd_next(&s) % (r % 5 == 0 ? cap : 4096));
        size_t got = 0;
        int rc = zi_read(a->zi, a->sc, a->st->usize, off, len, buf, &got);
        atomic_fetch_add(a->reads, 1);
        if (rc != 0) {
            atomic_fetch_add(a->errors, 1);
            continue;
        }
        size_t want = len < a->st->usize - off ? len : (size_t)(a->st->usize - off);
        if (got != want || memcmp(buf, a->st->data + off, got) != 0)
            atomic_fetch_add(a->mismatches, 1);
    }
    free(buf);
    return NULL;
}

static void check_concurrent(const struct stream *st, uint64_t span, int nthreads, int nreads)
{
    check_context("8 threads, %s, span %llu", st->name, (unsigned long long)span);
    uint64_t *pts;
    size_t np = expected_points(st, span, &pts);
    struct zindex_source src = stream_src(st);
    struct zindex *zi = zindex_new(&src, span);
    struct sinkctx sc;
    sink_init(&sc, st->data, st->usize, 0);
    atomic_int errors = 0, mismatches = 0, reads = 0;
    pthread_t th[16];
    struct reader_arg args[16];
    for (int i = 0; i < nthreads; i++) {
        args[i] = (struct reader_arg){zi,          &sc,    st,          rnd() | 1,
                                      span,        nreads, &errors,     &mismatches,
                                      &reads};
        CHECK(pthread_create(&th[i], NULL, reader_thread, &args[i]) == 0);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_I64(atomic_load(&reads), nthreads * nreads);
    CHECK_EQ_I64(atomic_load(&errors), 0);
    CHECK_EQ_I64(atomic_load(&mismatches), 0);
    CHECK_EQ_U64(sc.bad_order, 0);
    CHECK_EQ_U64(sc.bad_data, 0);
    /* the far-end reads built the whole index exactly once */
    CHECK_EQ_U64(zindex_points(zi), np);
    CHECK_EQ_U64(sc.calls, np);
    CHECK(zindex_why(zi) == NULL);
    zindex_free(zi);
    sink_done(&sc);
    free(pts);
}

static void test_concurrent(void)
{
    check_concurrent(&streams[S_FLOAT], 32 * KiB, 8, 100);
    check_concurrent(&streams[S_ARANGE], MiB, 8, 30);
    check_concurrent(&streams[S_FLUSH], 64 * KiB, 8, 100);
}

/* Concurrent readers of a member that fails: all get -EIO or right data, nobody hangs. */
static void *failing_reader(void *p)
{
    struct reader_arg *a = p;
    uint64_t s = a->seed;
    unsigned char *buf = malloc(8192);
    for (int i = 0; i < a->nreads; i++) {
        uint64_t off = rnd_next(&s) % a->st->usize;
        size_t got = 0;
        int rc = zi_read(a->zi, a->sc, a->st->usize, off, 8192, buf, &got);
        atomic_fetch_add(a->reads, 1);
        if (rc != 0 && rc != -EIO)
            atomic_fetch_add(a->errors, 1);
        if (rc == 0 && memcmp(buf, a->st->data + off, got) != 0)
            atomic_fetch_add(a->mismatches, 1);
    }
    free(buf);
    return NULL;
}

static void test_concurrent_failure(void)
{
    const struct stream *st = &streams[S_FLOAT];
    check_context("8 threads, bad CRC");
    struct zindex_source src = stream_src(st);
    src.crc32 ^= 1;
    struct zindex *zi = zindex_new(&src, 32 * KiB);
    struct sinkctx sc;
    sink_init(&sc, st->data, st->usize, 0);
    atomic_int errors = 0, mismatches = 0, reads = 0;
    pthread_t th[8];
    struct reader_arg args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (struct reader_arg){zi, &sc, st, rnd() | 1, 32 * KiB, 50, &errors,
                                      &mismatches, &reads};
        CHECK(pthread_create(&th[i], NULL, failing_reader, &args[i]) == 0);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_I64(atomic_load(&reads), 8 * 50);
    CHECK_EQ_I64(atomic_load(&errors), 0);
    CHECK_EQ_I64(atomic_load(&mismatches), 0);
    /* someone surely read near the end: the member has failed */
    CHECK_EQ_I64(read_err(zi, &sc, st, st->usize, 0, st->usize, NULL), -EIO);
    check_stays_failed(zi, &sc, st, st->usize, "CRC");
    zindex_free(zi);
    sink_done(&sc);
}

/* ------------------------------------------------------------------------------------------ */

#define TIMED(fn)                                                                              \
    do {                                                                                       \
        double t_ = now();                                                                     \
        RUN_TEST(fn);                                                                          \
        if (getenv("ZI_TIMES"))                                                                \
            fprintf(stderr, "%-30s %.3f s\n", #fn, now() - t_);                              \
    } while (0)

int main(void)
{
    double t0 = now();
    setup_streams();
    if (getenv("ZI_TIMES")) {
        fprintf(stderr, "setup %.3f s\n", now() - t0);
        for (int i = 0; i < NSTREAMS; i++)
            fprintf(stderr,
                    "  %-40s usize %zu csize %zu blocks %zu maxblock %zu types %zu/%zu/%zu\n",
                    streams[i].name, streams[i].usize, streams[i].csize, streams[i].nbounds,
                    streams[i].maxblock, streams[i].types[0], streams[i].types[1],
                    streams[i].types[2]);
    }
    TIMED(test_stream_shapes);
    TIMED(test_all_streams_all_spans);
    TIMED(test_span_clamp);
    TIMED(test_extend_idempotent);
    TIMED(test_bad_crc);
    TIMED(test_bad_usize);
    TIMED(test_corrupt);
    TIMED(test_truncated);
    TIMED(test_enomem_transient);
    TIMED(test_concurrent);
    TIMED(test_concurrent_failure);
    for (int i = 0; i < NSTREAMS; i++)
        stream_free(&streams[i]);
    return check_summary("test_inflate_index");
}
