/*
 * test_inflate_index: random access into raw deflate streams (src/inflate_index.c), in pieces.
 *
 * Every expectation comes from zlib itself or from the original bytes, never from the code
 * under test: the streams are made here with deflate() (or by hand, bit by bit), zlib's
 * one-shot inflate of each is checked to give back the bytes it was made from, and every
 * piece any call hands to the sink is compared with those bytes. The checkpoints the index
 * must record come from an independent zlib pass with Z_BLOCK that lists every block boundary
 * (a checkpoint is the first block boundary at least span bytes past the previous one, short
 * of the end of the member); under a memory budget the index may keep fewer.
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
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "source.h"
#include "fd_source.h"
#include "index_file.h"
#include "spill.h"

/* <sched.h> is shadowed by src/sched.h under -Isrc. */
int sched_yield(void);

#define KiB (1024u)
#define MiB (1024u * 1024u)

/* Error codes the read helpers return when the index misbehaves (not errnos). */
#define TE_NODELIV (-100001) /* produce returned 0 without delivering the piece asked for */
#define TE_NOPROG (-100002)  /* advance kept returning 0 without completing the index */
#define TE_DEADLINE (-100003) /* a nowait retry loop went on past its deadline */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------------------------------ */
/* Pseudo-random numbers (check_rnd), one sequence for the whole program. */

static uint64_t g_rnd = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { return check_rnd(&g_rnd); }
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
    struct source *src;
    uint64_t offset;     /* where comp starts in fd */
    uint64_t *bounds;    /* output offsets of the ends of non-last blocks, from zlib */
    size_t nbounds;
    size_t maxblock;     /* largest block output */
    size_t types[4];     /* blocks of each BTYPE: stored, fixed, dynamic, invalid */
    int nrandom;         /* random reads per span */
    bool zeros;          /* its windows are runs of one byte (they pack into a few bytes) */
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

/* Writes junk, the stream, junk to an unlinked temp file; returns it as a source (the stream
 * read through it), *offset the start. */
static struct source *file_source(const unsigned char *comp, size_t clen, uint64_t *offset)
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
    struct source *src;
    if (source_from_fd(fd, path, &src) < 0) {
        perror("source_from_fd");
        abort();
    }
    return src;
}

/* Fills in st for a stream made elsewhere (comp, clen), and checks with zlib that it decodes to
 * data: from here on, data is zlib's own output for comp. */
static void stream_finish(struct stream *st, const char *name, unsigned char *data, size_t len,
                          unsigned char *comp, size_t clen, int nrandom)
{
    st->name = name;
    st->data = data;
    st->usize = len;
    st->comp = comp;
    st->csize = clen;
    st->crc = (uint32_t)crc32(0L, data, (uInt)len);
    st->src = file_source(st->comp, st->csize, &st->offset);
    st->nrandom = nrandom;
    check_context("setup %s", name);
    scan_blocks(st);
    check_context("%s", "");
}

static void stream_init(struct stream *st, const char *name, unsigned char *data, size_t len,
                        const struct dopt *o, int nrandom)
{
    size_t clen = 0;
    unsigned char *comp = deflate_raw(data, len, o, &clen);
    stream_finish(st, name, data, len, comp, clen, nrandom);
}

static void stream_free(struct stream *st)
{
    free(st->data);
    free(st->comp);
    free(st->bounds);
    source_close(st->src);
}

static struct zindex_source stream_src(const struct stream *st)
{
    struct zindex_source src = {
        .archive = st->src,
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


static uint64_t npieces_of(uint64_t usize, size_t piece)
{
    return (usize + piece - 1) / piece;
}

/* ------------------------------------------------------------------------------------------ */
/* A hand-made stream: one fixed-Huffman block of runs of one byte value each, written as a
 * literal followed by matches of length 258 at distance 1 (13 bits for 258 bytes). */

struct bitw {
    unsigned char *p;
    size_t cap, bytes;
    uint64_t acc;
    int n;
};

static void bits_put(struct bitw *w, uint32_t v, int n)
{
    w->acc |= (uint64_t)v << w->n;
    w->n += n;
    while (w->n >= 8) {
        if (w->bytes == w->cap)
            w->p = realloc(w->p, w->cap = w->cap * 2 + 4096);
        w->p[w->bytes++] = (unsigned char)w->acc;
        w->acc >>= 8;
        w->n -= 8;
    }
}

/* Huffman codes go out most significant bit first. */
static void code_put(struct bitw *w, uint32_t code, int n)
{
    uint32_t r = 0;
    for (int i = 0; i < n; i++)
        r |= ((code >> i) & 1u) << (n - 1 - i);
    bits_put(w, r, n);
}

static void fixed_literal(struct bitw *w, unsigned v)
{
    if (v < 144)
        code_put(w, 0x30 + v, 8);
    else
        code_put(w, 0x190 + v - 144, 9);
}

static void stream_runs(struct stream *st, const char *name, size_t usize, size_t run)
{
    unsigned char *data = malloc(usize);
    struct bitw w = {.cap = usize / 128 + 4096};
    w.p = malloc(w.cap);
    bits_put(&w, 1, 1); /* BFINAL */
    bits_put(&w, 1, 2); /* BTYPE 01: fixed Huffman codes */
    size_t pos = 0;
    for (unsigned seg = 0; pos < usize; seg++) {
        size_t len = run + (size_t)seg * 40009 % 65536;
        if (len > usize - pos)
            len = usize - pos;
        unsigned v = (seg * 73 + 41) & 0xff;
        memset(data + pos, (int)v, len);
        fixed_literal(&w, v);
        size_t left = len - 1;
        for (; left >= 258; left -= 258) {
            code_put(&w, 0xC0 + (285 - 280), 8); /* length 258: symbol 285, no extra bits */
            code_put(&w, 0, 5);                   /* distance 1: code 0, no extra bits */
        }
        for (; left > 0; left--)
            fixed_literal(&w, v);
        pos += len;
    }
    code_put(&w, 0, 7); /* end of block */
    if (w.n)
        bits_put(&w, 0, 8 - w.n);
    stream_finish(st, name, data, usize, w.p, w.bytes, 4);
    st->zeros = true;
}

/* ------------------------------------------------------------------------------------------ */
/* The sink: checks that every piece handed to it is the right length and equal to the
 * reference, that one call delivers pieces in increasing order, and counts the buffers out. */

struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int inside;
    bool open;
};

struct tsink {
    const unsigned char *ref;
    uint64_t ref_len;  /* bytes of ref (the true data) */
    uint64_t usize;    /* what the index was told */
    size_t piece;
    uint64_t want;     /* the piece the current read keeps */
    unsigned char *got;
    size_t got_len;
    uint64_t last_q;   /* the last piece delivered in this produce call, or UINT64_MAX */
    unsigned long buffers, unused, delivered, bad, bad_order;
    uint64_t delivered_bytes;
    long outstanding, max_outstanding; /* buffers taken and not given back or freed */
    long fail_at;      /* the buffer() call (counted from 1) that returns NULL; 0: none */
    unsigned long stop_after; /* deliveries after which *stop_flag is set; 0: never */
    atomic_bool *stop_flag;
    struct gate *gate;            /* every delivery waits at it until it opens */
    const struct budget *budget;  /* checked on every call: never past its limit */
    unsigned long over_budget;
    bool unchecked;    /* corrupt input: pieces may hold anything until the end is checked */
};

static void ts_init(struct tsink *ts, const struct stream *st, size_t piece)
{
    memset(ts, 0, sizeof *ts);
    ts->ref = st->data;
    ts->ref_len = st->usize;
    ts->usize = st->usize;
    ts->piece = piece;
    ts->want = UINT64_MAX;
    ts->last_q = UINT64_MAX;
}

static void ts_done(struct tsink *ts)
{
    if (ts->got) {
        free(ts->got);
        ts->outstanding--;
        ts->got = NULL;
    }
}

static void ts_budget(struct tsink *ts)
{
    if (ts->budget && budget_used(ts->budget) > ts->budget->limit)
        ts->over_budget++;
}

static void ts_took(struct tsink *ts)
{
    if (++ts->outstanding > ts->max_outstanding)
        ts->max_outstanding = ts->outstanding;
}

static unsigned char *ts_buffer(void *ctx)
{
    struct tsink *ts = ctx;
    ts_budget(ts);
    if ((long)++ts->buffers == ts->fail_at)
        return NULL;
    unsigned char *p = malloc(ts->piece);
    if (p)
        ts_took(ts);
    return p;
}

static void ts_unused(void *ctx, unsigned char *buf)
{
    struct tsink *ts = ctx;
    ts->unused++;
    ts->outstanding--;
    free(buf);
}

static void ts_deliver(void *ctx, uint64_t q, unsigned char *buf, size_t len)
{
    struct tsink *ts = ctx;
    if (ts->gate) {
        pthread_mutex_lock(&ts->gate->lock);
        ts->gate->inside++;
        pthread_cond_broadcast(&ts->gate->cond);
        while (!ts->gate->open)
            pthread_cond_wait(&ts->gate->cond, &ts->gate->lock);
        pthread_mutex_unlock(&ts->gate->lock);
    }
    ts_budget(ts);
    ts->delivered++;
    ts->delivered_bytes += len;
    if (ts->last_q != UINT64_MAX && q <= ts->last_q)
        ts->bad_order++;
    ts->last_q = q;
    uint64_t start = q * ts->piece;
    uint64_t want_len = start >= ts->usize ? 0 : ts->usize - start;
    if (want_len > ts->piece)
        want_len = ts->piece;
    if (start >= ts->usize || len != want_len || !buf ||
        (!ts->unchecked && (start + len > ts->ref_len || memcmp(buf, ts->ref + start, len)))) {
        if (ts->bad++ < 3)
            printf("    sink: bad piece %llu (%zu bytes)\n", (unsigned long long)q, len);
    }
    if (q == ts->want) {
        ts_done(ts); /* a piece delivered twice in one call: keep the last */
        ts->got = buf;
        ts->got_len = len;
    } else {
        ts->outstanding--;
        free(buf);
    }
    if (ts->stop_after && ts->delivered >= ts->stop_after && ts->stop_flag)
        atomic_store(ts->stop_flag, true);
}

static struct zindex_sink ts_sink(struct tsink *ts)
{
    return (struct zindex_sink){ts_buffer, ts_deliver, ts_unused, ts};
}

/* The sink's verdict so far. */
#define CHECK_SINK(ts)                                                                         \
    do {                                                                                       \
        CHECK_EQ_U64((ts)->bad, 0);                                                            \
        CHECK_EQ_U64((ts)->bad_order, 0);                                                      \
        CHECK_EQ_U64((ts)->over_budget, 0);                                                    \
        CHECK_EQ_I64((ts)->outstanding, 0);                                                    \
    } while (0)

/* ------------------------------------------------------------------------------------------ */
/* Reading through the index, as a member reader would. */

/* Produces piece q, keeping it in ts->got (the caller frees it with ts_done). */
static int produce(struct zindex *zi, struct tsink *ts, uint64_t q, const struct stop *stop,
                   bool nowait)
{
    ts_done(ts);
    ts->want = q;
    ts->last_q = UINT64_MAX;
    struct zindex_sink sink = ts_sink(ts);
    int rc = zindex_produce(zi, q, &sink, stop, nowait);
    ts->want = UINT64_MAX;
    ts_budget(ts);
    if (rc == 0 && !ts->got)
        return TE_NODELIV;
    if (rc != 0)
        ts_done(ts);
    return rc;
}

/* Copies [off, off + len) (clipped at usize) into dst, piece by piece; *got is the length. */
static int zi_read(struct zindex *zi, struct tsink *ts, uint64_t off, size_t len,
                   unsigned char *dst, size_t *got)
{
    *got = 0;
    if (off >= ts->usize)
        return 0;
    if (len > ts->usize - off)
        len = (size_t)(ts->usize - off);
    size_t done = 0;
    while (done < len) {
        uint64_t q = (off + done) / ts->piece, at = (off + done) % ts->piece;
        int rc = produce(zi, ts, q, NULL, false);
        if (rc < 0)
            return rc;
        size_t take = ts->got_len > at ? ts->got_len - at : 0;
        if (take > len - done)
            take = len - done;
        memcpy(dst + done, ts->got + at, take);
        ts_done(ts);
        if (take == 0)
            return TE_NODELIV;
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
static bool check_read_at(struct zindex *zi, struct tsink *ts, const struct stream *st,
                          uint64_t off, size_t len, const char *file, int line)
{
    unsigned char *buf = malloc(len ? len : 1);
    size_t got = 0;
    int rc = zi_read(zi, ts, off, len, buf, &got);
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
#define CHECK_READ(zi, ts, st, off, len) check_read_at(zi, ts, st, off, len, __FILE__, __LINE__)

/* Reads and expects a negative errno; returns it (0 when the read succeeded, and then
 * *mismatch tells whether the data differed from the true bytes). */
static int read_err(struct zindex *zi, struct tsink *ts, const struct stream *st, uint64_t off,
                    size_t len, bool *mismatch)
{
    unsigned char *buf = malloc(len ? len : 1);
    size_t got = 0;
    int rc = zi_read(zi, ts, off, len, buf, &got);
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

/* Runs zindex_advance until it says complete (1) or fails; TE_NOPROG when it keeps
 * returning 0 far longer than the member's pieces can explain. */
static int advance_all(struct zindex *zi, size_t piece, uint64_t usize,
                       const struct stop *stop)
{
    unsigned char *scratch = malloc(piece);
    uint64_t calls = npieces_of(usize, piece) + 16, n = 0;
    int rc;
    while ((rc = zindex_advance(zi, scratch, stop)) == 0 && ++n < calls)
        ;
    free(scratch);
    return rc == 0 ? TE_NOPROG : rc;
}

/* ------------------------------------------------------------------------------------------ */
/* The streams used below. */

static const uint64_t spans[] = {32 * KiB, 64 * KiB, MiB, 4 * MiB};
static const size_t pieces[] = {128 * KiB, 4 * KiB, 12289, 65537, 200003};

enum {
    S_FLOAT, S_ARANGE, S_STORED, S_FIXED, S_HUGE, S_SINGLE, S_FLUSH, S_EMPTY, S_TINY, S_ONE,
    S_RUNS, NSTREAMS
};
static struct stream streams[NSTREAMS];

#define RUNS_SIZE (32 * MiB + 12345)

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
    /* memLevel 9 lets one block hold ~32K symbols of 258-byte matches: up to 8 MiB of output,
     * more than the largest span */
    struct dopt huge = {.level = 9, .strategy = Z_RLE, .memlevel = 9};
    unsigned char *z = calloc(1, 6 * MiB + 777);
    stream_init(&streams[S_HUGE], "one huge block, Z_RLE zeros", z, 6 * MiB + 777, &huge, 6);
    streams[S_HUGE].zeros = true;
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
    stream_runs(&streams[S_RUNS], "hand-made: one 32 MiB fixed block of runs", RUNS_SIZE,
                MiB);
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
    if (!CHECK(streams[S_HUGE].maxblock > spans[sizeof spans / sizeof spans[0] - 1]))
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
    /* the hand-made stream: one fixed block of 32 MiB from about 210 KiB */
    const struct stream *r = &streams[S_RUNS];
    CHECK_EQ_U64(r->nbounds, 0);
    CHECK_EQ_U64(r->types[1], 1);
    CHECK_EQ_U64(r->maxblock, RUNS_SIZE);
    CHECK(r->csize < RUNS_SIZE / 150);
    check_context("%s", "");
}

/* ------------------------------------------------------------------------------------------ */
/* Correct streams: pieces of several sizes, spans, and orders of access. */


/* The longest run of output between two checkpoints (or a checkpoint and the end). */
static uint64_t max_gap(const uint64_t *pts, size_t np, uint64_t usize)
{
    uint64_t g = 0;
    for (size_t i = 0; i < np; i++) {
        uint64_t end = i + 1 < np ? pts[i + 1] : usize;
        if (end - pts[i] > g)
            g = end - pts[i];
    }
    return g;
}

/* The checkpoints a frontier standing at fpos must have recorded: all below fpos, maybe one
 * at fpos (a boundary right at the end of a piece is seen when the next piece starts). */
static bool points_plausible(struct zindex *zi, const uint64_t *pts, size_t np, uint64_t fpos)
{
    uint64_t below = 0, upto = 0;
    for (size_t i = 0; i < np; i++) {
        below += pts[i] < fpos || pts[i] == 0;
        upto += pts[i] <= fpos;
    }
    uint64_t n = zindex_points(zi);
    if (n >= below && n <= upto)
        return true;
    printf("    %llu points at frontier %llu, want %llu..%llu\n", (unsigned long long)n,
           (unsigned long long)fpos, (unsigned long long)below, (unsigned long long)upto);
    return false;
}

/* Every piece in the given order (0 forwards, 1 backwards); returns how many were wrong. */
static int produce_all(struct zindex *zi, struct tsink *ts, uint64_t npc, int order)
{
    int bad = 0;
    for (uint64_t j = 0; j < npc; j++) {
        uint64_t q = order == 0 ? j : npc - 1 - j;
        int rc = produce(zi, ts, q, NULL, false);
        if (rc != 0 && bad++ < 3)
            printf("    piece %llu: %d\n", (unsigned long long)q, rc);
        ts_done(ts);
    }
    return bad;
}

static void check_stream(const struct stream *st, uint64_t span, size_t piece, int mode)
{
    check_context("%s, span %llu, piece %zu, mode %d", st->name, (unsigned long long)span,
                  piece, mode);
    uint64_t eff = span < ZINDEX_WINDOW ? ZINDEX_WINDOW : span;
    uint64_t *pts;
    size_t np = expected_points(st, eff, &pts);
    uint64_t npc = npieces_of(st->usize, piece), usize = st->usize;
    struct zindex_source src = stream_src(st);
    struct zindex_params par = {.span = span, .piece = piece, .mem = NULL};
    struct zindex *zi = zindex_new(&src, &par);
    if (!CHECK(zi != NULL)) {
        free(pts);
        return;
    }
    struct tsink ts;
    ts_init(&ts, st, piece);

    CHECK_EQ_U64(zindex_points(zi), 1);
    CHECK(zindex_why(zi) == NULL);
    CHECK_EQ_U64(zindex_indexed(zi), 0);
    CHECK(!zindex_complete(zi));
    CHECK_EQ_I64(zindex_ready(zi, 0), 0);
    CHECK_EQ_I64(produce(zi, &ts, npc, NULL, false), -EINVAL);
    CHECK_EQ_U64(ts.buffers, 0);

    if (mode == 0) {
        /* start, then sequentially: the frontier goes exactly as far as each read needs */
        CHECK_READ(zi, &ts, st, 0, usize < 4096 ? usize : 4096);
        CHECK_EQ_U64(zindex_indexed(zi), piece < usize ? piece : usize);
        CHECK_EQ_U64(ts.delivered, 1);
        uint64_t step = usize / 7 + 1;
        if (step < 2 * MiB && st->maxblock > MiB)
            step = 2 * MiB;
        for (uint64_t off = 0; off < usize; off += step) {
            uint64_t last = off + step < usize ? off + step - 1 : usize - 1;
            CHECK_READ(zi, &ts, st, off, (size_t)(last - off + 1));
            uint64_t fpos = (last / piece + 1) * piece;
            CHECK_EQ_U64(zindex_indexed(zi), fpos < usize ? fpos : usize);
            CHECK(points_plausible(zi, pts, np, fpos));
            CHECK_EQ_I64(zindex_ready(zi, last / piece), 1);
            if (last / piece + 1 < npc)
                CHECK_EQ_I64(zindex_ready(zi, last / piece + 1), 0);
        }
    } else if (mode == 1) {
        /* the far end first: the frontier hands over every piece once, in order */
        CHECK_READ(zi, &ts, st, usize - 1, 1);
        CHECK_EQ_U64(ts.delivered, npc);
        CHECK_EQ_U64(ts.delivered_bytes, usize);
        CHECK_READ(zi, &ts, st, usize > 100 ? usize - 100 : 0, 100);
        CHECK_READ(zi, &ts, st, 0, 100);
        CHECK_READ(zi, &ts, st, 0, usize);
    } else {
        /* the middle first, then the end, then everything */
        CHECK_READ(zi, &ts, st, usize / 2, 1000);
        CHECK(points_plausible(zi, pts, np, zindex_indexed(zi)));
        CHECK_READ(zi, &ts, st, usize - 1, 1);
        CHECK_READ(zi, &ts, st, 0, usize);
    }

    /* fully built: healthy, the expected checkpoints, every piece ready */
    CHECK(zindex_why(zi) == NULL);
    CHECK(zindex_complete(zi));
    CHECK_EQ_U64(zindex_indexed(zi), usize);
    CHECK_EQ_U64(zindex_points(zi), np);
    CHECK(zindex_points(zi) <= usize / eff + 1);
    CHECK_EQ_I64(zindex_ready(zi, 0), 1);
    CHECK_EQ_I64(zindex_ready(zi, npc - 1), 1);
    if (!st->zeros) /* windows of varied bytes stay whole without memory pressure */
        CHECK(zindex_memory(zi) >= (np - 1) * (uint64_t)ZINDEX_WINDOW);
    CHECK_EQ_I64(advance_all(zi, piece, usize, NULL), 1);

    /* every piece forwards: restarts, the cursor going on from one piece to the next, so the
     * whole pass costs about one decode of the member */
    uint64_t dec0 = zindex_decoded(zi);
    CHECK_EQ_I64(produce_all(zi, &ts, npc, 0), 0);
    uint64_t gap = max_gap(pts, np, usize);
    if (!CHECK(zindex_decoded(zi) - dec0 <= usize + gap + 2 * (uint64_t)piece))
        printf("    a forward pass over %llu bytes decoded %llu\n", (unsigned long long)usize,
               (unsigned long long)(zindex_decoded(zi) - dec0));
    /* backwards, when that costs little enough (each piece restarts from its checkpoint) */
    if (npc * (gap + piece) <= 12 * MiB)
        CHECK_EQ_I64(produce_all(zi, &ts, npc, 1), 0);

    /* reads across checkpoints and the piece boundaries next to them (a sample of them when
     * there are many, or when each read restarts megabytes back) */
    size_t nsample = np - 1 < 20 ? np - 1 : 20;
    if (nsample > 2 && nsample * gap > 16 * MiB)
        nsample = (size_t)(16 * MiB / gap) > 2 ? (size_t)(16 * MiB / gap) : 2;
    for (size_t k = 0; k < nsample; k++) {
        uint64_t c = pts[1 + k * (np - 1) / nsample], b = c / piece * piece;
        CHECK_READ(zi, &ts, st, c - 100, 300);
        CHECK_READ(zi, &ts, st, b > 0 ? b - 1 : 0, 2);
        CHECK_READ(zi, &ts, st, c - 5, (size_t)(eff < MiB ? 2 * eff + 10 : MiB + 10));
    }
    /* the first and last bytes, and reads running past the end */
    CHECK_READ(zi, &ts, st, 0, 1);
    CHECK_READ(zi, &ts, st, usize > 10 ? usize - 10 : 0, 100000);
    CHECK_READ(zi, &ts, st, usize, 10);

    /* random pieces and reads: each costs about half a gap; keep that within ~6 MiB */
    uint64_t cost = gap / 2 + piece;
    int nrandom = st->nrandom;
    if ((uint64_t)nrandom * cost > 6 * MiB)
        nrandom = (int)(6 * MiB / cost) > 3 ? (int)(6 * MiB / cost) : 3;
    int bad = 0;
    for (int r = 0; r < nrandom; r++) {
        uint64_t q = rnd_below(npc);
        if (produce(zi, &ts, q, NULL, r % 2 == 0) != 0)
            bad++;
        ts_done(&ts);
        uint64_t off = rnd_below(usize);
        size_t n = 1 + (size_t)rnd_below(r % 4 == 0 ? 2 * piece : 5000);
        CHECK_READ(zi, &ts, st, off, n);
    }
    CHECK_EQ_I64(bad, 0);

    /* still healthy, nothing more was indexed */
    CHECK(zindex_why(zi) == NULL);
    CHECK_EQ_U64(zindex_points(zi), np);
    CHECK_SINK(&ts);
    if (!CHECK(ts.max_outstanding <= 2))
        printf("    %ld buffers out at once\n", ts.max_outstanding);
    zindex_free(zi);
    ts_done(&ts);
    free(pts);
    check_context("%s", "");
}

static void test_all_streams(void)
{
    /* every stream with every span; the piece sizes rotate, and the mount's own pair (128 KiB
     * pieces, 1 MiB span) is always there */
    int mode = 0;
    for (int i = 0; i < NSTREAMS; i++) {
        if (i == S_EMPTY || i == S_RUNS)
            continue; /* no pieces / tested on its own (test_huge_block) */
        for (size_t j = 0; j < sizeof spans / sizeof spans[0]; j++) {
            size_t piece = pieces[((size_t)i + j) % 5];
            for (int twice = 0; twice < 1 + (spans[j] == MiB && piece != 128 * KiB); twice++) {
                double t_ = now();
                check_stream(&streams[i], spans[j], twice ? 128 * KiB : piece, mode++ % 3);
                if (getenv("ZI_TIMES"))
                    fprintf(stderr, "  %s %llu %zu: %.3f\n", streams[i].name,
                            (unsigned long long)spans[j], twice ? 128 * KiB : piece,
                            now() - t_);
            }
        }
    }
}

/* Spans below the window count as the window. */
static void test_span_clamp(void)
{
    check_stream(&streams[S_FIXED], 1, 4 * KiB, 0);
    check_stream(&streams[S_FLOAT], 1000, 128 * KiB, 1);
    check_stream(&streams[S_FLUSH], 32767, 12289, 2);
    struct zindex_source src = stream_src(&streams[S_FLOAT]);
    struct zindex_params par = {.span = 64 * KiB, .piece = 128 * KiB};
    zindex_free(zindex_new(&src, &par));
    zindex_free(NULL);
}

/* The empty member: nothing to produce, and an index-only pass must still finish. */
static void test_empty(void)
{
    const struct stream *st = &streams[S_EMPTY];
    struct zindex_params par = {.span = 64 * KiB, .piece = 4 * KiB};
    struct {
        uint64_t csize, usize;
        int want;
        const char *what;
    } cases[] = {
        {st->csize, 0, 1, "empty stream"},
        {0, 0, 1, "no stream at all"},
        {streams[S_TINY].csize, 0, -EIO, "5 bytes declared as 0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_context("%s", cases[i].what);
        struct zindex_source src = stream_src(i == 2 ? &streams[S_TINY] : st);
        src.csize = cases[i].csize;
        src.usize = cases[i].usize;
        struct zindex *zi = zindex_new(&src, &par);
        struct tsink ts;
        ts_init(&ts, st, par.piece);
        CHECK_EQ_I64(produce(zi, &ts, 0, NULL, false), -EINVAL);
        int rc = advance_all(zi, par.piece, 0, NULL);
        if (!CHECK_EQ_I64(rc, cases[i].want) && rc == TE_NOPROG)
            printf("    zindex_advance keeps returning 0 (indexed %llu, complete %d)\n",
                   (unsigned long long)zindex_indexed(zi), zindex_complete(zi));
        CHECK_EQ_I64(zindex_complete(zi), cases[i].want == 1);
        CHECK_EQ_I64(zindex_why(zi) != NULL, cases[i].want != 1);
        CHECK_EQ_U64(zindex_indexed(zi), 0);
        CHECK_EQ_U64(ts.buffers, 0);
        zindex_free(zi);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* One deflate block of 40 MiB: streamed through piece by piece, never held whole. */

static void test_huge_block(void)
{
    const struct stream *st = &streams[S_RUNS];
    const size_t sizes[] = {128 * KiB, 12289};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t piece = sizes[i];
        check_context("huge block, piece %zu", piece);
        uint64_t npc = npieces_of(st->usize, piece);
        struct zindex_source src = stream_src(st);
        struct zindex_params par = {.span = MiB, .piece = piece};
        struct zindex *zi = zindex_new(&src, &par);
        struct tsink ts;
        ts_init(&ts, st, piece);
        /* near the end first: the frontier goes through every piece, in order */
        CHECK_EQ_I64(produce(zi, &ts, npc - 2, NULL, false), 0);
        CHECK(ts.got && memcmp(ts.got, st->data + (npc - 2) * piece, piece) == 0);
        ts_done(&ts);
        CHECK_EQ_U64(ts.delivered, npc - 1);
        CHECK_EQ_U64(zindex_points(zi), 1); /* no block boundary: nowhere else to restart */
        CHECK_READ(zi, &ts, st, st->usize - 3 * piece / 2, 3 * piece / 2);
        CHECK(zindex_complete(zi));
        /* again below the frontier: a restart from the start, streamed through as well */
        unsigned long before = ts.delivered;
        uint64_t dec0 = zindex_decoded(zi);
        CHECK_READ(zi, &ts, st, (npc - 3) * piece + 7, piece);
        CHECK(ts.delivered - before >= npc - 3);
        CHECK(zindex_decoded(zi) - dec0 <= st->usize);
        CHECK(zindex_why(zi) == NULL);
        CHECK_SINK(&ts);
        if (!CHECK(ts.max_outstanding <= 2))
            printf("    %ld buffers of %zu bytes out at once\n", ts.max_outstanding, piece);
        zindex_free(zi);
    }
    check_context("%s", "");
}

/* ------------------------------------------------------------------------------------------ */
/* Failures. */

/* After a failure every entry point keeps failing with the same reason. */
static void check_stays_failed(struct zindex *zi, struct tsink *ts, const struct stream *st,
                               const char *why_part)
{
    const char *why = zindex_why(zi);
    if (CHECK(why != NULL) && !CHECK(strstr(why, why_part) != NULL))
        printf("    zindex_why: \"%s\", want it to mention \"%s\"\n", why, why_part);
    uint64_t npc = npieces_of(ts->usize, ts->piece);
    if (npc) {
        CHECK_EQ_I64(zindex_ready(zi, 0), -EIO);
        CHECK_EQ_I64(produce(zi, ts, 0, NULL, false), -EIO);
        CHECK_EQ_I64(produce(zi, ts, npc - 1, NULL, true), -EIO);
        CHECK_EQ_I64(read_err(zi, ts, st, ts->usize / 2, 10, NULL), -EIO);
    }
    CHECK_EQ_I64(advance_all(zi, ts->piece, ts->usize, NULL), -EIO);
    CHECK(zindex_why(zi) == why);
    CHECK(!zindex_complete(zi));
}

static void test_bad_crc(void)
{
    int ids[] = {S_FLOAT, S_STORED, S_FLUSH, S_TINY, S_RUNS};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const struct stream *st = &streams[ids[i]];
        for (int how = 0; how < 2; how++) {
            check_context("bad CRC, %s, %s", st->name, how ? "advance" : "produce");
            struct zindex_source src = stream_src(st);
            src.crc32 ^= 0x00100000;
            struct zindex_params par = {.span = 64 * KiB, .piece = 64 * KiB};
            struct zindex *zi = zindex_new(&src, &par);
            struct tsink ts;
            ts_init(&ts, st, par.piece);
            uint64_t npc = npieces_of(st->usize, par.piece);
            /* a read near the start may be served before the end is checked; it is right */
            bool mismatch = true;
            int rc = read_err(zi, &ts, st, 0, 10, &mismatch);
            CHECK(rc == -EIO || (rc == 0 && !mismatch));
            /* decoding to the end finds the mismatch; the last piece is never handed out */
            if (how)
                rc = advance_all(zi, par.piece, st->usize, NULL);
            else
                rc = produce(zi, &ts, npc - 1, NULL, false);
            CHECK_EQ_I64(rc, -EIO);
            CHECK(ts.delivered < npc);
            CHECK(ts.delivered_bytes < st->usize);
            check_stays_failed(zi, &ts, st, "CRC");
            CHECK_SINK(&ts);
            zindex_free(zi);
        }
    }
    check_context("%s", "");
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
        {S_TINY, 1, "shorter"},     {S_TINY, -1, "longer"},       {S_TINY, -4, "longer"},
        {S_EMPTY, 1, "shorter"},    {S_EMPTY, 100, "shorter"},    {S_HUGE, -1, "longer"},
        {S_HUGE, 1, "shorter"},     {S_RUNS, -1, "longer"},
        {S_FLOAT, 128 * KiB, "shorter"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct stream *st = &streams[cases[i].id];
        uint64_t usize = (uint64_t)((int64_t)st->usize + cases[i].delta);
        for (int s = 0; s < 2; s++) {
            size_t piece = s ? 4 * KiB : 128 * KiB;
            check_context("usize %+lld, %s, piece %zu", (long long)cases[i].delta, st->name,
                          piece);
            struct zindex_source src = stream_src(st);
            src.usize = usize;
            struct zindex_params par = {.span = s ? 64 * KiB : 32 * KiB, .piece = piece};
            struct zindex *zi = zindex_new(&src, &par);
            struct tsink ts;
            ts_init(&ts, st, piece);
            ts.usize = usize;
            bool mismatch = true;
            int rc;
            if (usize > 10) {
                /* the start may be served (right) before the frontier passes the end */
                rc = read_err(zi, &ts, st, 0, 10, &mismatch);
                CHECK(rc == -EIO || (rc == 0 && !mismatch));
            }
            if (s)
                rc = advance_all(zi, piece, usize, NULL);
            else
                rc = read_err(zi, &ts, st, 0, (size_t)usize, NULL);
            CHECK_EQ_I64(rc, -EIO);
            check_stays_failed(zi, &ts, st, cases[i].why);
            CHECK_SINK(&ts);
            zindex_free(zi);
        }
    }
    check_context("%s", "");
}

static void test_corrupt(void)
{
    int ids[] = {S_FLOAT, S_STORED, S_FIXED, S_FLUSH, S_ARANGE};
    int detected = 0, total = 0;
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const struct stream *st = &streams[ids[i]];
        for (int c = 0; c < 8; c++) {
            unsigned char *comp = malloc(st->csize);
            memcpy(comp, st->comp, st->csize);
            /* flip 1-4 bytes somewhere between 2 % and 98 % of the stream */
            size_t at = st->csize / 50 + (size_t)rnd_below(st->csize * 96 / 100);
            int nflip = 1 + (int)rnd_below(4);
            for (int f = 0; f < nflip && at + (size_t)f < st->csize; f++)
                comp[at + (size_t)f] ^= (unsigned char)(1 + rnd_below(255));
            size_t piece = c % 3 == 0 ? 4 * KiB : c % 3 == 1 ? 128 * KiB : 12289;
            check_context("corrupt %s at %zu (%d bytes), piece %zu", st->name, at, nflip,
                          piece);
            struct zindex_source src = stream_src(st);
            src.archive = file_source(comp, st->csize, &src.offset);
            struct zindex_params par = {.span = c % 2 ? 32 * KiB : 64 * KiB, .piece = piece};
            struct zindex *zi = zindex_new(&src, &par);
            struct tsink ts;
            ts_init(&ts, st, piece);
            ts.unchecked = true; /* data may be wrong before the end is checked */
            struct tsink *t = &ts;
            /* a read in the middle first: it may succeed with wrong data (not yet checked) */
            bool garbage = false;
            int rc = read_err(zi, t, st, st->usize / 2, 5000, &garbage);
            CHECK(rc == 0 || rc == -EIO);
            /* then everything: wrong data must not pass the end-of-member checks */
            bool mismatch = false;
            rc = read_err(zi, t, st, 0, st->usize, &mismatch);
            total++;
            if (rc == -EIO) {
                detected++;
                check_stays_failed(zi, t, st, "");
            } else {
                CHECK_EQ_I64(rc, 0);
                CHECK(!mismatch);
                CHECK(!garbage);
                CHECK(zindex_why(zi) == NULL);
            }
            /* a second index on the same corrupt file, built by an index-only pass */
            struct zindex *zi2 = zindex_new(&src, &par);
            rc = advance_all(zi2, piece, st->usize, NULL);
            CHECK(rc == -EIO || rc == 1);
            CHECK_EQ_I64(rc == -EIO, zindex_why(zi2) != NULL);
            if (rc == 1) {
                rc = read_err(zi2, t, st, st->usize - 1, 1, &mismatch);
                CHECK(rc == -EIO || (rc == 0 && !mismatch));
            }
            zindex_free(zi2);
            zindex_free(zi);
            ts_done(&ts);
            CHECK_EQ_I64(ts.outstanding, 0);
            source_close(src.archive);
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
    int ids[] = {S_FLOAT, S_STORED, S_FIXED, S_FLUSH, S_TINY, S_HUGE};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const struct stream *st = &streams[ids[i]];
        uint64_t cuts[] = {1, 2, 7, st->csize / 2, st->csize - 1};
        for (size_t j = 0; j < sizeof cuts / sizeof cuts[0]; j++) {
            if (cuts[j] > st->csize || (j > 0 && cuts[j] <= cuts[j - 1]))
                continue;
            check_context("csize -%llu, %s", (unsigned long long)cuts[j], st->name);
            struct zindex_source src = stream_src(st);
            src.csize -= cuts[j];
            struct zindex_params par = {.span = 32 * KiB, .piece = 64 * KiB};
            struct zindex *zi = zindex_new(&src, &par);
            struct tsink ts;
            ts_init(&ts, st, par.piece);
            int rc = j % 2 ? advance_all(zi, par.piece, st->usize, NULL)
                           : read_err(zi, &ts, st, 0, st->usize, NULL);
            CHECK_EQ_I64(rc, -EIO);
            check_stays_failed(zi, &ts, st, "");
            CHECK_SINK(&ts);
            zindex_free(zi);
        }
    }
    check_context("%s", "");
}

/* ------------------------------------------------------------------------------------------ */
/* Running out of memory is transient: -ENOMEM for that call, and the member stays healthy (it
 * is not corrupt). */

static void test_enomem_transient(void)
{
    const struct stream *st = &streams[S_FLOAT];
    size_t piece = 16 * KiB;
    struct zindex_source src = stream_src(st);
    struct zindex_params par = {.span = 64 * KiB, .piece = piece};
    uint64_t npc = npieces_of(st->usize, piece);
    /* the sink has no buffer: at the first call, in the middle of a frontier run, and in the
     * middle of a restart */
    long fail_at[] = {1, 2, 5, 40};
    for (size_t i = 0; i < sizeof fail_at / sizeof fail_at[0]; i++) {
        for (int restart = 0; restart < 2; restart++) {
            check_context("buffer %ld fails, %s", fail_at[i], restart ? "restart" : "frontier");
            struct zindex *zi = zindex_new(&src, &par);
            struct tsink ts;
            ts_init(&ts, st, piece);
            if (restart)
                CHECK_EQ_I64(advance_all(zi, piece, st->usize, NULL), 1);
            ts.fail_at = fail_at[i];
            int rc = produce(zi, &ts, npc - 1, NULL, false);
            /* a restart may need fewer buffers than that: then nothing failed */
            CHECK_EQ_I64(rc, (long)ts.buffers >= fail_at[i] ? -ENOMEM : 0);
            if (!restart)
                CHECK_EQ_I64(rc, -ENOMEM);
            ts.fail_at = 0;
            ts_done(&ts);
            CHECK(zindex_why(zi) == NULL);
            CHECK_EQ_I64(ts.outstanding, 0);
            /* memory is back: everything reads, the end-of-member checks pass */
            CHECK_READ(zi, &ts, st, st->usize - 10, 10);
            CHECK_EQ_I64(produce_all(zi, &ts, npc, 0), 0);
            CHECK(zindex_why(zi) == NULL);
            CHECK(zindex_complete(zi));
            CHECK_SINK(&ts);
            zindex_free(zi);
        }
    }
    check_context("%s", "");
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
/* Outside the sanitizer builds (whose allocators must not be bypassed), malloc is interposed
 * so that a test can make the next allocation(s) of one exact size fail. The program's
 * definition takes precedence for every caller, zlib included. */
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

/* zlib's own window (32 KiB, allocated by the first inflate() of a fresh decoder) cannot be
 * had: a failed allocation, not corrupt data. */
static void test_enomem_zlib(void)
{
    const struct stream *st = &streams[S_FLOAT];
    size_t piece = 16 * KiB;
    struct zindex_source src = stream_src(st);
    struct zindex_params par = {.span = 64 * KiB, .piece = piece};
    uint64_t npc = npieces_of(st->usize, piece);
    for (int restart = 0; restart < 2; restart++) {
        check_context("zlib window allocation fails, %s", restart ? "restart" : "frontier");
        struct zindex *zi = zindex_new(&src, &par);
        struct tsink ts;
        ts_init(&ts, st, piece);
        if (restart)
            CHECK_EQ_I64(advance_all(zi, piece, st->usize, NULL), 1);
        inject_malloc_failure(ZINDEX_WINDOW, 1);
        int rc = produce(zi, &ts, npc / 2, NULL, false);
        bool injected = atomic_load(&inject_count) <= 0;
        inject_malloc_failure(0, 0);
        if (injected) {
            CHECK_EQ_I64(rc, -ENOMEM);
            const char *why = zindex_why(zi);
            if (!CHECK(why == NULL))
                printf("    zindex_why: \"%s\"\n", why);
            CHECK_READ(zi, &ts, st, 0, st->usize);
        } else {
            CHECK_EQ_I64(rc, 0); /* no 32 KiB allocation on that path: nothing to see */
        }
        CHECK_SINK(&ts);
        zindex_free(zi);
    }
    check_context("%s", "");
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* The stop flag: -EINTR within a piece of being set, and the index goes on from there. */

static void test_stop(void)
{
    const struct stream *st = &streams[S_FLOAT];
    size_t piece = 32 * KiB;
    uint64_t npc = npieces_of(st->usize, piece);
    struct zindex_source src = stream_src(st);
    struct zindex_params par = {.span = 64 * KiB, .piece = piece};
    atomic_bool flag = false, mount = false;
    struct stop stop = {&flag, &mount, NULL};

    /* the frontier: set after 3 pieces, stops after at most one more */
    check_context("stop: frontier");
    struct zindex *zi = zindex_new(&src, &par);
    struct tsink ts;
    ts_init(&ts, st, piece);
    ts.stop_flag = &flag;
    ts.stop_after = 3;
    CHECK_EQ_I64(produce(zi, &ts, npc - 1, &stop, false), -EINTR);
    CHECK(ts.delivered >= 3 && ts.delivered <= 4);
    CHECK(ts.delivered_bytes <= 4 * piece);
    CHECK_EQ_U64(zindex_indexed(zi), ts.delivered_bytes);
    CHECK(zindex_why(zi) == NULL);
    /* cleared: the frontier goes on where it stopped (no piece decoded twice by it) */
    atomic_store(&flag, false);
    ts.stop_after = 0;
    CHECK_EQ_I64(produce(zi, &ts, npc - 1, &stop, false), 0);
    CHECK_EQ_U64(ts.delivered, npc);
    CHECK_EQ_U64(ts.delivered_bytes, st->usize);
    /* set before the call, also through the mount's flag */
    atomic_store(&mount, true);
    unsigned long before = ts.delivered;
    int rc = produce(zi, &ts, npc - 1, &stop, false);
    CHECK(rc == -EINTR || rc == 0); /* a piece one restart away needs no check */
    CHECK(ts.delivered - before <= 1);
    atomic_store(&mount, false);
    CHECK_SINK(&ts);
    zindex_free(zi);

    check_context("stop: set before the call");
    zi = zindex_new(&src, &par);
    ts_init(&ts, st, piece);
    atomic_store(&flag, true);
    CHECK_EQ_I64(produce(zi, &ts, npc - 1, &stop, false), -EINTR);
    CHECK(ts.delivered <= 1);
    unsigned char *scratch = malloc(piece);
    uint64_t at = zindex_indexed(zi);
    CHECK_EQ_I64(zindex_advance(zi, scratch, &stop), -EINTR);
    CHECK(zindex_indexed(zi) <= at + piece);
    atomic_store(&flag, false);
    CHECK_EQ_I64(advance_all(zi, piece, st->usize, &stop), 1);
    CHECK(zindex_why(zi) == NULL);
    zindex_free(zi);

    /* a restart through a long run with no checkpoint (one block of 3 MiB) */
    const struct stream *one = &streams[S_SINGLE];
    npc = npieces_of(one->usize, piece);
    check_context("stop: restart");
    src = stream_src(one);
    zi = zindex_new(&src, &par);
    ts_init(&ts, one, piece);
    CHECK_EQ_I64(advance_all(zi, piece, one->usize, NULL), 1);
    ts.stop_flag = &flag;
    ts.stop_after = 2;
    uint64_t dec0 = zindex_decoded(zi);
    CHECK_EQ_I64(produce(zi, &ts, npc - 1, &stop, false), -EINTR);
    CHECK(ts.delivered >= 2 && ts.delivered <= 3);
    CHECK(zindex_decoded(zi) - dec0 <= 4 * piece);
    atomic_store(&flag, true);
    ts.stop_after = 0;
    dec0 = zindex_decoded(zi);
    rc = produce(zi, &ts, npc - 1, &stop, false);
    CHECK_EQ_I64(rc, -EINTR);
    CHECK(zindex_decoded(zi) - dec0 <= 2 * piece);
    atomic_store(&flag, false);
    CHECK_EQ_I64(produce(zi, &ts, npc - 1, &stop, false), 0);
    ts_done(&ts);
    CHECK(zindex_why(zi) == NULL);
    CHECK_SINK(&ts);
    zindex_free(zi);
    free(scratch);
    check_context("%s", "");
}

/* ------------------------------------------------------------------------------------------ */
/* The index-only pass. */

static void test_advance(void)
{
    int ids[] = {S_FLOAT, S_FLUSH, S_STORED, S_HUGE, S_ONE};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const struct stream *st = &streams[ids[i]];
        size_t piece = i % 2 ? 4 * KiB : 12289;
        uint64_t span = 64 * KiB, npc = npieces_of(st->usize, piece);
        check_context("advance, %s, piece %zu", st->name, piece);
        uint64_t *pts;
        size_t np = expected_points(st, span, &pts);
        struct zindex_source src = stream_src(st);
        struct zindex_params par = {.span = span, .piece = piece};
        struct zindex *zi = zindex_new(&src, &par);
        struct tsink ts;
        ts_init(&ts, st, piece);
        /* some pieces first, through the frontier */
        if (i % 2)
            CHECK_READ(zi, &ts, st, 0, 3 * piece);
        unsigned long delivered = ts.delivered;
        /* slices of the pass: each one goes forward, none hands out pieces */
        unsigned char *scratch = malloc(piece);
        uint64_t last = zindex_indexed(zi);
        int rc, calls = 0, stuck = 0;
        while ((rc = zindex_advance(zi, scratch, NULL)) == 0 && calls++ < 100000) {
            stuck += zindex_indexed(zi) <= last;
            last = zindex_indexed(zi);
        }
        free(scratch);
        CHECK_EQ_I64(rc, 1);
        CHECK_EQ_I64(stuck, 0);
        CHECK_EQ_U64(ts.delivered, delivered);
        CHECK(zindex_complete(zi));
        CHECK_EQ_U64(zindex_indexed(zi), st->usize);
        CHECK_EQ_U64(zindex_points(zi), np);
        CHECK(zindex_why(zi) == NULL);
        CHECK_EQ_I64(zindex_ready(zi, npc - 1), 1);
        /* done: says so at once */
        CHECK_EQ_I64(advance_all(zi, piece, st->usize, NULL), 1);
        /* every piece from the index it built: restarts only, each from near its piece */
        uint64_t gap = max_gap(pts, np, st->usize);
        uint64_t dec0 = zindex_decoded(zi);
        bool backwards = npc * (gap + piece) <= 24 * MiB;
        CHECK_EQ_I64(produce_all(zi, &ts, npc, backwards), 0);
        if (backwards)
            CHECK(zindex_decoded(zi) - dec0 <= npc * (gap + 2 * piece));
        else /* forwards: the cursor goes on */
            CHECK(zindex_decoded(zi) - dec0 <= st->usize + gap + 2 * piece);
        int nrandom = (int)(24 * MiB / (gap / 2 + piece));
        for (int r = 0; r < (nrandom < 3 ? 3 : nrandom > 20 ? 20 : nrandom); r++) {
            CHECK_EQ_I64(produce(zi, &ts, rnd_below(npc), NULL, true), 0);
            ts_done(&ts);
        }
        CHECK_SINK(&ts);
        zindex_free(zi);
        free(pts);
    }
    check_context("%s", "");
}

/* ------------------------------------------------------------------------------------------ */
/* A memory budget too small for the windows: the index thins, every piece still decodes. */

struct budget_arg {
    const struct stream *st;
    struct budget *b;
    size_t piece;
    uint64_t span;
    int bad;
    uint64_t points, max_used;
};

static void *budget_reader(void *p)
{
    struct budget_arg *a = p;
    const struct stream *st = a->st;
    struct zindex_source src = stream_src(st);
    struct zindex_params par = {.span = a->span, .piece = a->piece, .mem = a->b};
    struct zindex *zi = zindex_new(&src, &par);
    struct tsink ts;
    ts_init(&ts, st, a->piece);
    ts.budget = a->b;
    uint64_t npc = npieces_of(st->usize, a->piece);
    /* the far end first builds the whole index, then every piece forwards and some at random */
    if (produce(zi, &ts, npc - 1, NULL, false) != 0)
        a->bad++;
    ts_done(&ts);
    a->points = zindex_points(zi);
    a->bad += produce_all(zi, &ts, npc, 0);
    uint64_t s = (uint64_t)a->piece | 1;
    for (int r = 0; r < 30; r++) {
        if (produce(zi, &ts, check_rnd(&s) % npc, NULL, r % 2) != 0)
            a->bad++;
        ts_done(&ts);
    }
    a->bad += zindex_why(zi) != NULL;
    a->bad += (int)(ts.bad + ts.bad_order + (unsigned long)ts.outstanding);
    a->bad += (int)ts.over_budget;
    zindex_free(zi);
    return NULL;
}

static void test_budget(void)
{
    const struct stream *st = &streams[S_FLOAT];
    uint64_t span = 32 * KiB;
    uint64_t *pts;
    size_t np = expected_points(st, span, &pts);
    free(pts);
    uint64_t limits[] = {200 * KiB, 100 * KiB, 1 * KiB, 0};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        check_context("budget %llu", (unsigned long long)limits[i]);
        struct budget b;
        budget_init(&b, limits[i]);
        struct budget_arg a = {st, &b, i % 2 ? 4 * KiB : 65537, span, 0, 0, 0};
        budget_reader(&a);
        CHECK_EQ_I64(a.bad, 0);
        CHECK(a.points >= 1 && a.points < np); /* thinned, or windows skipped */
        /* the raw windows of float noise fit the budget */
        CHECK((a.points - 1) * (uint64_t)ZINDEX_WINDOW <= limits[i]);
        if (limits[i] >= 100 * KiB)
            CHECK(a.points >= 2); /* thinning keeps some checkpoints */
        CHECK_EQ_U64(budget_used(&b), 0); /* all given back by zindex_free */
    }
    /* two indexes drawing from one budget at once */
    check_context("shared budget");
    struct budget b;
    budget_init(&b, 150 * KiB);
    struct budget_arg args[2] = {
        {&streams[S_FLOAT], &b, 4 * KiB, span, 0, 0, 0},
        {&streams[S_ARANGE], &b, 128 * KiB, span, 0, 0, 0},
    };
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&th[i], NULL, budget_reader, &args[i]) == 0);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_I64(args[i].bad, 0);
    }
    CHECK_EQ_U64(budget_used(&b), 0);
    check_context("%s", "");
}

/* ------------------------------------------------------------------------------------------ */
/* Concurrency. */

/* nowait while another thread holds the frontier: -EAGAIN at once, nothing taken, pieces
 * below the frontier still served; the index-only pass gives way too. */
struct holder_arg {
    struct zindex *zi;
    struct tsink ts;
    uint64_t q;
    int rc;
};

static void *frontier_holder(void *p)
{
    struct holder_arg *h = p;
    h->rc = produce(h->zi, &h->ts, h->q, NULL, false);
    ts_done(&h->ts);
    return NULL;
}

static void test_nowait_busy(void)
{
    const struct stream *st = &streams[S_ARANGE];
    size_t piece = 64 * KiB;
    uint64_t npc = npieces_of(st->usize, piece);
    struct zindex_source src = stream_src(st);
    struct zindex_params par = {.span = 64 * KiB, .piece = piece};
    struct zindex *zi = zindex_new(&src, &par);
    struct gate g = {.open = false};
    pthread_mutex_init(&g.lock, NULL);
    pthread_cond_init(&g.cond, NULL);
    struct holder_arg h = {.zi = zi, .q = npc - 1};
    ts_init(&h.ts, st, piece);
    h.ts.gate = &g;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, frontier_holder, &h) == 0);
    /* wait until the holder's frontier delivers its first piece (and blocks there) */
    pthread_mutex_lock(&g.lock);
    while (g.inside == 0)
        pthread_cond_wait(&g.cond, &g.lock);
    pthread_mutex_unlock(&g.lock);

    struct tsink ts;
    ts_init(&ts, st, piece);
    CHECK_EQ_I64(zindex_ready(zi, 0), 1);
    CHECK_EQ_I64(zindex_ready(zi, 5), 0);
    CHECK_EQ_I64(produce(zi, &ts, 5, NULL, true), -EAGAIN);
    CHECK_EQ_I64(produce(zi, &ts, npc - 1, NULL, true), -EAGAIN);
    CHECK_EQ_U64(ts.buffers, 0); /* gave up before taking anything */
    unsigned char *scratch = malloc(piece);
    CHECK_EQ_I64(zindex_advance(zi, scratch, NULL), -EAGAIN);
    /* piece 0 is below the frontier: served by a restart meanwhile */
    CHECK_EQ_I64(produce(zi, &ts, 0, NULL, true), 0);
    ts_done(&ts);
    CHECK_EQ_U64(ts.delivered, 1);

    pthread_mutex_lock(&g.lock);
    g.open = true;
    pthread_cond_broadcast(&g.cond);
    pthread_mutex_unlock(&g.lock);
    pthread_join(th, NULL);
    CHECK_EQ_I64(h.rc, 0);
    CHECK_EQ_U64(h.ts.delivered, npc);
    CHECK_SINK(&h.ts);
    /* the frontier is free again: nowait gets everything, the pass completes */
    CHECK_EQ_I64(produce(zi, &ts, 5, NULL, true), 0);
    ts_done(&ts);
    int rc = zindex_advance(zi, scratch, NULL);
    CHECK_EQ_I64(rc, 1);
    CHECK_SINK(&ts);
    free(scratch);
    zindex_free(zi);
    pthread_mutex_destroy(&g.lock);
    pthread_cond_destroy(&g.cond);
}

/* The file changes under a built index (stored bytes near the start are overwritten): a piece
 * decoded again no longer matches the CRC-32 recorded for it, so it is never handed out, the
 * member fails, and every entry point says so from then on, the index-only pass included. */
static void test_changed_file(void)
{
    const struct stream *st = &streams[S_STORED];
    size_t piece = 16 * KiB;
    struct zindex_source src = stream_src(st);
    src.archive = file_source(st->comp, st->csize, &src.offset);
    struct zindex_params par = {.span = 64 * KiB, .piece = piece};
    struct zindex *zi = zindex_new(&src, &par);
    struct tsink ts;
    ts_init(&ts, st, piece);
    uint64_t npc = npieces_of(st->usize, piece);
    CHECK_EQ_I64(produce(zi, &ts, npc / 2, NULL, false), 0);
    ts_done(&ts);
    /* inside the second stored block's payload (blocks are 5 + 65535 bytes) */
    unsigned char junk[100];
    memset(junk, 0x5A, sizeof junk);
    CHECK(pwrite(src.archive->fd, junk, sizeof junk, (off_t)(src.offset + 70000)) == sizeof junk);
    int rc = 0;
    for (uint64_t q = 0; q < npc / 2 && rc == 0; q++) {
        rc = produce(zi, &ts, q, NULL, false);
        ts_done(&ts);
    }
    CHECK_EQ_I64(rc, -EIO);
    check_stays_failed(zi, &ts, st, "CRC");
    CHECK_SINK(&ts);
    zindex_free(zi);
    source_close(src.archive);
}

/* Whether thread tid is asleep (blocked), from /proc. */
static bool thread_sleeping(long tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] == 'S';
}

struct waiter_arg {
    struct zindex *zi;
    struct tsink ts;
    uint64_t q;
    int rc;
    atomic_long tid;
};

static void *waiting_producer(void *p)
{
    struct waiter_arg *w = p;
    atomic_store(&w->tid, (long)syscall(SYS_gettid));
    w->rc = produce(w->zi, &w->ts, w->q, NULL, false);
    ts_done(&w->ts);
    return NULL;
}

/* A producer that waits for the frontier while another thread's frontier goes past its piece
 * still gets its piece from the one call: the header says zindex_produce delivers q. */
static void test_waiter_gets_its_piece(void)
{
    const struct stream *st = &streams[S_ARANGE];
    size_t piece = 64 * KiB;
    struct zindex_source src = stream_src(st);
    struct zindex_params par = {.span = 64 * KiB, .piece = piece};
    struct zindex *zi = zindex_new(&src, &par);
    struct gate g = {.open = false};
    pthread_mutex_init(&g.lock, NULL);
    pthread_cond_init(&g.cond, NULL);
    struct holder_arg h = {.zi = zi, .q = 6};
    ts_init(&h.ts, st, piece);
    h.ts.gate = &g;
    pthread_t th, tw;
    CHECK(pthread_create(&th, NULL, frontier_holder, &h) == 0);
    pthread_mutex_lock(&g.lock);
    while (g.inside == 0)
        pthread_cond_wait(&g.cond, &g.lock);
    pthread_mutex_unlock(&g.lock);
    /* the holder's frontier stands after piece 0, on its way to 6; another wants piece 3 */
    struct waiter_arg w = {.zi = zi, .q = 3};
    ts_init(&w.ts, st, piece);
    CHECK(pthread_create(&tw, NULL, waiting_producer, &w) == 0);
    double t0 = now();
    while ((atomic_load(&w.tid) == 0 || !thread_sleeping(atomic_load(&w.tid))) &&
           now() - t0 < 20)
        sched_yield();
    pthread_mutex_lock(&g.lock);
    g.open = true;
    pthread_cond_broadcast(&g.cond);
    pthread_mutex_unlock(&g.lock);
    pthread_join(th, NULL);
    pthread_join(tw, NULL);
    CHECK_EQ_I64(h.rc, 0);
    if (!CHECK_EQ_I64(w.rc, 0))
        printf("    the waiter got %lu pieces; the frontier delivered 0..6 to the holder\n",
               w.ts.delivered);
    CHECK_SINK(&h.ts);
    CHECK_SINK(&w.ts);
    zindex_free(zi);
    pthread_mutex_destroy(&g.lock);
    pthread_cond_destroy(&g.cond);
}

/* A reader that needs the frontier while an index-only pass holds it makes the pass give way
 * after its current piece: the call it arrived in does not go on to the end of the member. */
struct pass_arg {
    struct zindex *zi;
    size_t piece;
    int rc;
};

static void *index_pass(void *p)
{
    struct pass_arg *a = p;
    unsigned char *scratch = malloc(a->piece);
    a->rc = zindex_advance(a->zi, scratch, NULL);
    free(scratch);
    return NULL;
}

static void test_pass_gives_way(void)
{
    const struct stream *st = &streams[S_RUNS];
    size_t piece = MiB; /* 32 pieces: one call of the pass would index them all */
    for (int nowait = 0; nowait < 2; nowait++) {
        check_context("index-only pass vs %s reader", nowait ? "nowait" : "blocking");
        struct zindex_source src = stream_src(st);
        struct zindex_params par = {.span = MiB, .piece = piece};
        struct zindex *zi = zindex_new(&src, &par);
        struct pass_arg a = {.zi = zi, .piece = piece};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, index_pass, &a) == 0);
        /* wait (with a deadline) until the pass is under way */
        double t0 = now();
        while (zindex_indexed(zi) == 0 && now() - t0 < 30)
            sched_yield();
        uint64_t at = zindex_indexed(zi);
        struct tsink ts;
        ts_init(&ts, st, piece);
        uint64_t q = at / piece + 2;
        /* on a loaded machine this thread may be descheduled until the pass is through: then
         * no reader asked while it ran, and there is nothing to check about giving way */
        bool late = zindex_indexed(zi) >= st->usize / 2;
        int rc = produce(zi, &ts, q, NULL, nowait);
        if (nowait && rc == -EAGAIN) {
            pthread_join(th, NULL); /* the pass gave way (or ended): the frontier is free */
            rc = produce(zi, &ts, q, NULL, true);
        } else {
            pthread_join(th, NULL);
        }
        CHECK_EQ_I64(rc, 0);
        ts_done(&ts);
        /* a liveness bound: the reader asked with three quarters of 32 MiB to go */
        if (CHECK(at > 0) && at < st->usize / 4 && !late) {
            if (!CHECK(a.rc == -EAGAIN || a.rc == 0))
                printf("    the pass went on to the end (%d) though a reader asked at %llu\n",
                       a.rc, (unsigned long long)at);
            CHECK(ts.delivered <= 4); /* from the frontier, not a restart from the start */
        }
        CHECK_EQ_I64(advance_all(zi, piece, st->usize, NULL), 1);
        CHECK_READ(zi, &ts, st, st->usize - 5, 5);
        CHECK_SINK(&ts);
        zindex_free(zi);
    }
    check_context("%s", "");
}

/* 8 threads reading random ranges of one index that is not built yet, some with nowait
 * retried until served. */
struct reader_arg {
    struct zindex *zi;
    const struct stream *st;
    size_t piece;
    uint64_t seed, span;
    int nreads;
    bool nowait;
    int errors, mismatches, reads, eagain;
    struct tsink ts;
};

static void *reader_thread(void *p)
{
    struct reader_arg *a = p;
    uint64_t s = a->seed;
    uint64_t usize = a->st->usize, npc = npieces_of(usize, a->piece);
    for (int i = 0; i < a->nreads; i++) {
        uint64_t r = check_rnd(&s);
        /* some reads lean to the far end so that several wait on the frontier */
        uint64_t off = r % 3 == 0 ? usize - 1 - check_rnd(&s) % (usize / 8)
                                  : check_rnd(&s) % usize;
        uint64_t q = off / a->piece, n = 1 + (r % 5 == 0 ? check_rnd(&s) % 3 : 0);
        a->reads++;
        for (uint64_t k = q; k < q + n && k < npc; k++) {
            double t0 = now();
            int rc;
            while ((rc = produce(a->zi, &a->ts, k, NULL, a->nowait)) == -EAGAIN) {
                a->eagain++;
                if (now() - t0 > 30) {
                    rc = TE_DEADLINE;
                    break;
                }
                sched_yield();
            }
            if (rc != 0)
                a->errors++;
            ts_done(&a->ts);
        }
    }
    a->mismatches = (int)(a->ts.bad + a->ts.bad_order);
    return NULL;
}

static void check_concurrent(const struct stream *st, uint64_t span, size_t piece, int nthreads,
                             int nreads)
{
    check_context("%d threads, %s, span %llu, piece %zu", nthreads, st->name,
                  (unsigned long long)span, piece);
    uint64_t *pts;
    size_t np = expected_points(st, span, &pts);
    struct zindex_source src = stream_src(st);
    struct zindex_params par = {.span = span, .piece = piece};
    struct zindex *zi = zindex_new(&src, &par);
    pthread_t th[16];
    struct reader_arg *args = calloc((size_t)nthreads, sizeof *args);
    for (int i = 0; i < nthreads; i++) {
        args[i] = (struct reader_arg){.zi = zi, .st = st, .piece = piece, .seed = rnd() | 1,
                                      .span = span, .nreads = nreads, .nowait = i % 2};
        ts_init(&args[i].ts, st, piece);
        CHECK(pthread_create(&th[i], NULL, reader_thread, &args[i]) == 0);
    }
    int reads = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        reads += args[i].reads;
        CHECK_EQ_I64(args[i].errors, 0);
        CHECK_EQ_I64(args[i].mismatches, 0);
        CHECK_EQ_I64(args[i].ts.outstanding, 0);
    }
    CHECK_EQ_I64(reads, nthreads * nreads);
    /* the far-end reads built the whole index, with exactly the checkpoints expected */
    CHECK(zindex_complete(zi));
    CHECK_EQ_U64(zindex_points(zi), np);
    CHECK(zindex_why(zi) == NULL);
    if (getenv("ZI_TIMES")) {
        int eagain = 0;
        for (int i = 0; i < nthreads; i++)
            eagain += args[i].eagain;
        printf("    %d EAGAIN\n", eagain);
    }
    zindex_free(zi);
    free(args);
    free(pts);
}

static void test_concurrent(void)
{
    check_concurrent(&streams[S_FLOAT], 32 * KiB, 4 * KiB, 8, 60);
    check_concurrent(&streams[S_ARANGE], MiB, 128 * KiB, 8, 30);
    check_concurrent(&streams[S_FLUSH], 64 * KiB, 12289, 8, 60);
}

/* Concurrent readers of a member that fails: all get -EIO or right data, nobody hangs. */
static void *failing_reader(void *p)
{
    struct reader_arg *a = p;
    uint64_t s = a->seed;
    uint64_t npc = npieces_of(a->st->usize, a->piece);
    for (int i = 0; i < a->nreads; i++) {
        uint64_t q = check_rnd(&s) % npc;
        int rc;
        double t0 = now();
        while ((rc = produce(a->zi, &a->ts, q, NULL, a->nowait)) == -EAGAIN &&
               now() - t0 < 30)
            sched_yield();
        a->reads++;
        if (rc != 0 && rc != -EIO)
            a->errors++;
        ts_done(&a->ts);
    }
    a->mismatches = (int)(a->ts.bad + a->ts.bad_order);
    return NULL;
}

static void test_concurrent_failure(void)
{
    const struct stream *st = &streams[S_FLOAT];
    check_context("8 threads, bad CRC");
    struct zindex_source src = stream_src(st);
    src.crc32 ^= 1;
    size_t piece = 8 * KiB;
    struct zindex_params par = {.span = 32 * KiB, .piece = piece};
    struct zindex *zi = zindex_new(&src, &par);
    pthread_t th[8];
    struct reader_arg args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (struct reader_arg){.zi = zi, .st = st, .piece = piece, .seed = rnd() | 1,
                                      .nreads = 50, .nowait = i % 2};
        ts_init(&args[i].ts, st, piece);
        CHECK(pthread_create(&th[i], NULL, failing_reader, &args[i]) == 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_I64(args[i].reads, 50);
        CHECK_EQ_I64(args[i].errors, 0);
        CHECK_EQ_I64(args[i].mismatches, 0);
        CHECK_EQ_I64(args[i].ts.outstanding, 0);
    }
    /* someone surely read near the end: the member has failed */
    struct tsink ts;
    ts_init(&ts, st, piece);
    CHECK_EQ_I64(read_err(zi, &ts, st, 0, st->usize, NULL), -EIO);
    check_stays_failed(zi, &ts, st, "CRC");
    zindex_free(zi);
}

/* ---- a source that fails for a while (a remote server timing out) ---- */

struct flaky {
    struct source s;
    struct source *inner;
    atomic_bool failing;
    atomic_int failed; /* reads refused */
};

static ssize_t flaky_pread(struct source *s, void *buf, size_t len, uint64_t off)
{
    struct flaky *f = (struct flaky *)s;
    if (atomic_load(&f->failing)) {
        atomic_fetch_add(&f->failed, 1);
        return -EIO;
    }
    return f->inner->ops->pread(f->inner, buf, len, off);
}

static void flaky_close(struct source *s)
{
    (void)s; /* lives on the test's stack */
}

static const struct source_ops flaky_ops = {.pread = flaky_pread, .close = flaky_close};

/* Reads that meet a failing source fail with -EREMOTEIO, never fail the member, and the same
 * reads give the right bytes once the source answers again: at the frontier (first pass) and
 * in restarts below it. */
static void test_source_failure(void)
{
    const struct stream *st = &streams[S_FLOAT];
    struct flaky f = {.s = {.ops = &flaky_ops, .size = st->src->size, .fd = -1},
                      .inner = st->src};
    struct zindex_source src = stream_src(st);
    src.archive = &f.s;
    size_t piece = 32 * KiB;
    struct zindex_params par = {.span = 64 * KiB, .piece = piece};
    struct zindex *zi = zindex_new(&src, &par);
    struct tsink ts;
    ts_init(&ts, st, piece);
    uint64_t mid = st->usize / 2;
    CHECK(CHECK_READ(zi, &ts, st, 0, 100 * KiB)); /* a frontier with a decoder standing */
    atomic_store(&f.failing, true);
    CHECK_EQ_I64(read_err(zi, &ts, st, mid, 4 * KiB, NULL), -EREMOTEIO);
    CHECK(zindex_why(zi) == NULL);
    atomic_store(&f.failing, false);
    CHECK(CHECK_READ(zi, &ts, st, mid, 4 * KiB));
    CHECK_EQ_I64(advance_all(zi, piece, st->usize, NULL), 1);
    atomic_store(&f.failing, true); /* restarts below the frontier, from checkpoints */
    CHECK_EQ_I64(read_err(zi, &ts, st, st->usize / 3, 4 * KiB, NULL), -EREMOTEIO);
    CHECK(zindex_why(zi) == NULL);
    atomic_store(&f.failing, false);
    CHECK(CHECK_READ(zi, &ts, st, st->usize / 3, 4 * KiB));
    CHECK(CHECK_READ(zi, &ts, st, 0, st->usize));
    CHECK(atomic_load(&f.failed) >= 2);
    zindex_free(zi);
}

/* ------------------------------------------------------------------------------------------ */

#define TIMED(fn)                                                                              \
    do {                                                                                       \
        double t_ = now();                                                                     \
        RUN_TEST(fn);                                                                          \
        if (getenv("ZI_TIMES"))                                                                \
            fprintf(stderr, "%-30s %.3f s\n", #fn, now() - t_);                              \
    } while (0)

/* ---- fine checkpoints: windows in a spill, then in a saved index ---- */

static int fine_window(void *ctx, uint64_t k, unsigned char *z, size_t cap)
{
    void **c = ctx; /* {zi, snapshot} */
    const struct zindex_snapshot *snap = c[1];
    return zindex_window(c[0], &snap->pts[k], z, cap);
}

static int fine_fetch(void *ctx, uint64_t k, unsigned char *z, size_t cap)
{
    return ixf_read_window(ctx, k, z, cap);
}

/* Saves zi through ixf_save (windows asked for one at a time), loads the file back and
 * imports it into a fresh index without a spill, which must then serve random reads. */
static void fine_round_trip(struct zindex *zi, const struct stream *st, size_t piece,
                            const char *dir)
{
    struct zindex_snapshot snap;
    if (!CHECK_EQ_I64(zindex_snapshot(zi, &snap), 0))
        return;
    uint64_t spilled = 0;
    for (uint64_t k = 1; k < snap.npoints; k++)
        spilled += snap.pts[k].win == NULL;
    CHECK(spilled > 0); /* the point of the test: some windows are not in memory */
    struct ixf_identity id = {{7}};
    struct ixf_member m = {.member = 3, .crc32 = st->crc, .csize = st->csize,
                           .usize = st->usize, .span = snap.span, .piece = snap.piece,
                           .indexed_out = snap.indexed, .npoints = snap.npoints,
                           .npieces = snap.ncrc, .piece_crc = snap.pcrc};
    struct ixf_point *pts = calloc(snap.npoints, sizeof *pts);
    for (uint64_t k = 0; k < snap.npoints; k++)
        pts[k] = (struct ixf_point){.out = snap.pts[k].out, .in = snap.pts[k].in,
                                    .bits = (uint8_t)snap.pts[k].bits, .wlen = snap.pts[k].wlen,
                                    .zlen = snap.pts[k].zlen, .zwin = snap.pts[k].win};
    m.pts = pts;
    void *ctx[2] = {zi, &snap};
    m.window = fine_window;
    m.window_ctx = ctx;
    char why[256] = "";
    if (!CHECK_EQ_I64(ixf_save(dir, &id, &m, why, sizeof why), 0))
        printf("    %s\n", why);
    struct zip_member zm = {.crc32 = st->crc, .csize = st->csize, .usize = st->usize,
                            .method = ZIP_METHOD_DEFLATED};
    struct ixf *f = NULL;
    if (CHECK_EQ_I64(ixf_load(dir, &id, &zm, 3, &f, why, sizeof why), 0)) {
        const struct ixf_member *lm = ixf_get(f);
        CHECK_EQ_U64(lm->npoints, snap.npoints);
        struct zindex_source src = stream_src(st);
        struct zindex_params par = {.span = MiB, .piece = piece};
        struct zindex *z2 = zindex_new(&src, &par);
        struct zindex_fetch fetch = {fine_fetch, f};
        /* as reader_deflate does: the points as the file has them */
        struct zindex_snapshot loaded = snap;
        loaded.pts = calloc(lm->npoints, sizeof *loaded.pts);
        for (uint64_t k = 0; k < lm->npoints; k++)
            loaded.pts[k] = (struct zindex_point){lm->pts[k].out, lm->pts[k].in,
                                                  lm->pts[k].bits, lm->pts[k].wlen,
                                                  lm->pts[k].zlen, NULL, 0, 0};
        CHECK_EQ_I64(zindex_import(z2, &loaded, &fetch), 0);
        free(loaded.pts);
        struct tsink ts;
        ts_init(&ts, st, piece);
        for (int r = 0; r < 12; r++)
            CHECK_READ(z2, &ts, st, rnd_below(st->usize), 1 + (size_t)rnd_below(2 * piece));
        CHECK(zindex_why(z2) == NULL);
        zindex_free(z2);
        ts_done(&ts);
        ixf_close(f);
    }
    free(pts);
    zindex_snapshot_free(&snap);
}

/* With a spill, the first pass records a checkpoint about every `fine` bytes, keeps only the
 * span's ones in memory, and every read from any of them gives the right bytes. */
static void test_fine_points(void)
{
    char dir[] = "/tmp/zi-fine.XXXXXX";
    if (!CHECK(mkdtemp(dir) != NULL))
        return;
    int ids[] = {S_FLOAT, S_ARANGE, S_STORED, S_FIXED, S_FLUSH};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const struct stream *st = &streams[ids[i]];
        size_t piece = i % 2 ? 4 * KiB : 128 * KiB;
        check_context("%s, fine points, piece %zu", st->name, piece);
        struct spill *sp = NULL;
        if (!CHECK_EQ_I64(spill_open(dir, &sp), 0))
            break;
        struct zindex_source src = stream_src(st);
        struct zindex_params par = {.span = MiB, .piece = piece, .fine = 128 * KiB,
                                    .spill = sp};
        struct zindex *zi = zindex_new(&src, &par);
        struct tsink ts;
        ts_init(&ts, st, piece);
        CHECK_READ(zi, &ts, st, 0, st->usize);
        CHECK(zindex_complete(zi));
        uint64_t *pts, *coarse;
        size_t nfine = expected_points(st, 128 * KiB, &pts);
        size_t ncoarse = expected_points(st, MiB, &coarse);
        /* about one point per fine span where blocks allow it, never fewer than coarse ones */
        CHECK(zindex_points(zi) >= ncoarse);
        CHECK(zindex_points(zi) + 1 >= nfine * 2 / 3);
        /* only the coarse windows are in memory */
        CHECK(zindex_memory(zi) < (ncoarse + 1) * (uint64_t)ZINDEX_WINDOW + 64 * KiB);
        CHECK(spill_size(sp) > 0);
        for (int r = 0; r < 20; r++)
            CHECK_READ(zi, &ts, st, rnd_below(st->usize), 1 + (size_t)rnd_below(2 * piece));
        fine_round_trip(zi, st, piece, dir);
        CHECK(zindex_why(zi) == NULL);
        zindex_free(zi);
        ts_done(&ts);
        spill_close(sp);
        free(pts);
        free(coarse);
    }
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_EQ_I64(system(cmd), 0);
    check_context("%s", "");
}

int main(void)
{
    double t0 = now();
    setup_streams();
    if (getenv("ZI_TIMES")) {
        fprintf(stderr, "setup %.3f s\n", now() - t0);
        for (int i = 0; i < NSTREAMS; i++)
            fprintf(stderr,
                    "  %-42s usize %zu csize %zu blocks %zu maxblock %zu types %zu/%zu/%zu\n",
                    streams[i].name, streams[i].usize, streams[i].csize, streams[i].nbounds,
                    streams[i].maxblock, streams[i].types[0], streams[i].types[1],
                    streams[i].types[2]);
    }
    TIMED(test_stream_shapes);
    TIMED(test_all_streams);
    TIMED(test_span_clamp);
    TIMED(test_fine_points);
    TIMED(test_empty);
    TIMED(test_huge_block);
    TIMED(test_bad_crc);
    TIMED(test_bad_usize);
    TIMED(test_corrupt);
    TIMED(test_truncated);
    TIMED(test_enomem_transient);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    TIMED(test_enomem_zlib);
#endif
    TIMED(test_stop);
    TIMED(test_advance);
    TIMED(test_budget);
    TIMED(test_nowait_busy);
    TIMED(test_changed_file);
    TIMED(test_waiter_gets_its_piece);
    TIMED(test_pass_gives_way);
    TIMED(test_concurrent);
    TIMED(test_concurrent_failure);
    TIMED(test_source_failure);
    for (int i = 0; i < NSTREAMS; i++)
        stream_free(&streams[i]);
    return check_summary("test_inflate_index");
}
