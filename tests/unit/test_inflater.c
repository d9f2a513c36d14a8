/*
 * test_inflater: every inflater (src/inflater*.c) against zlib.
 *
 * Nothing expected comes from the code under test: the streams are made here with zlib's
 * deflate from data generated here; the output they must decode to is that data (and zlib's
 * one-shot raw inflate of each whole stream must agree with it); the block boundaries are listed
 * by a zlib Z_BLOCK pass written here, independent of inflater_zlib.
 *
 * Buffers are watched: every input piece handed to an inflater ends right before a PROT_NONE
 * page (a read past it faults), and the bytes after each output room hold a pattern that must
 * survive the step.
 */
#include "inflater.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"

#define KiB (1024u)
#define MiB (1024u * 1024u)
#define CANARY 64u
/* How far an inflater may decode ahead of the output it delivered (ISA-L: its 64 KiB buffer
 * plus one match). */
#define DECODE_AHEAD (64 * KiB + 512)
#define CANARY_BYTE 0xa5

/* ------------------------------------------------------------------------------------------ */
/* Pseudo-random numbers (check_rnd, check.h). */

/* Uniform in [lo, hi]. */
static size_t rnd_in(uint64_t *s, size_t lo, size_t hi)
{
    return lo + (size_t)(check_rnd(s) % (hi - lo + 1));
}

/* ------------------------------------------------------------------------------------------ */
/* Data like numpy's, and others that make different kinds of blocks. */

static void gen_float32(unsigned char *p, size_t n, uint64_t seed)
{
    /* a sum of uniforms is near enough a normal for the compressor */
    for (size_t i = 0; i + 4 <= n; i += 4) {
        float v = -2.0f;
        for (int k = 0; k < 4; k++)
            v += (float)(check_rnd(&seed) >> 40) / (float)(1u << 24);
        memcpy(p + i, &v, 4);
    }
    memset(p + n / 4 * 4, 0, n % 4);
}

static void gen_arange64(unsigned char *p, size_t n, uint64_t seed)
{
    (void)seed;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = i / 8;
        p[i] = (unsigned char)(v >> (8 * (i % 8)));
    }
}

static void gen_text(unsigned char *p, size_t n, uint64_t seed)
{
    static const char *const words[] = {
        "the", "array", "of", "float", "values", "is", "stored", "in", "a", "member",
        "compressed", "with", "deflate", "and", "read", "back", "through", "mount", "numpy",
        "index", "window", "checkpoint", "block", "boundary", "restart", "decoder", "zlib",
        "stream", "bits", "bytes", "offset", "span", "chunk", "cache", "page", "kernel"};
    size_t i = 0;
    while (i < n) {
        const char *w = words[check_rnd(&seed) % (sizeof words / sizeof *words)];
        for (; *w && i < n; w++)
            p[i++] = (unsigned char)*w;
        if (i < n)
            p[i++] = check_rnd(&seed) % 11 == 0 ? '\n' : ' ';
    }
}

static void gen_zeros(unsigned char *p, size_t n, uint64_t seed)
{
    (void)seed;
    memset(p, 0, n);
}

static void gen_random(unsigned char *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(check_rnd(&seed) >> 56);
}

/* Thirds of text, random bytes and zeros, so that a stream mixes every kind of block. */
static void gen_mixed(unsigned char *p, size_t n, uint64_t seed)
{
    size_t third = n / 3;
    gen_text(p, third, seed);
    gen_random(p + third, third, seed + 1);
    gen_zeros(p + 2 * third, n - 2 * third, seed);
}

/* ------------------------------------------------------------------------------------------ */
/* The corpus: streams made with zlib. */

struct bound {
    size_t in; /* the next block starts at the high `bits` bits of byte in - 1 */
    int bits;
    size_t out; /* output offset there */
};

struct stream {
    const char *name;
    unsigned char *data; /* what the stream decodes to */
    size_t n;
    unsigned char *z; /* the raw deflate stream */
    size_t zn;
    struct bound *b; /* every block boundary inside the stream, the start first */
    size_t nb;
};

/* How a stream is made: `piece` bytes at a time (0: all at once), each followed by `flush`;
 * with `vary`, levels and strategies change between pieces. */
struct recipe {
    const char *name;
    void (*gen)(unsigned char *, size_t, uint64_t);
    size_t n;
    int level, strategy;
    size_t piece;
    int flush;
    bool vary;
    bool empty_final; /* finish with an empty final block after a sync flush */
};

static const struct recipe recipes[] = {
    {"float32 level 6", gen_float32, 1536 * KiB, 6, Z_DEFAULT_STRATEGY, 0, 0, false, false},
    {"float32 level 1", gen_float32, 512 * KiB, 1, Z_DEFAULT_STRATEGY, 0, 0, false, false},
    {"int64 arange level 9", gen_arange64, 2 * MiB, 9, Z_DEFAULT_STRATEGY, 0, 0, false, false},
    {"zeros level 6", gen_zeros, 4 * MiB, 6, Z_DEFAULT_STRATEGY, 0, 0, false, false},
    {"text level 9", gen_text, 1 * MiB, 9, Z_DEFAULT_STRATEGY, 0, 0, false, false},
    {"text level 1", gen_text, 512 * KiB, 1, Z_DEFAULT_STRATEGY, 0, 0, false, false},
    {"stored blocks (level 0)", gen_random, 300 * KiB, 0, Z_DEFAULT_STRATEGY, 0, 0, false,
     false},
    {"fixed Huffman blocks", gen_text, 300 * KiB, 6, Z_FIXED, 0, 0, false, false},
    {"mixed levels, strategies and flushes", gen_mixed, 900 * KiB, 6, Z_DEFAULT_STRATEGY,
     20 * KiB, Z_SYNC_FLUSH, true, false},
    {"partial flushes (empty fixed blocks)", gen_text, 200 * KiB, 6, Z_DEFAULT_STRATEGY,
     3 * KiB, Z_PARTIAL_FLUSH, false, false},
    {"Z_BLOCK flushes (unaligned boundaries)", gen_float32, 300 * KiB, 6, Z_DEFAULT_STRATEGY,
     5 * KiB, Z_BLOCK, false, false},
    {"ends with an empty final block", gen_text, 100 * KiB, 6, Z_DEFAULT_STRATEGY, 0, 0, false,
     true},
    {"one byte", gen_text, 1, 6, Z_DEFAULT_STRATEGY, 0, 0, false, false},
    {"empty", gen_text, 0, 6, Z_DEFAULT_STRATEGY, 0, 0, false, false},
};
#define NSTREAMS (sizeof recipes / sizeof *recipes)

static struct stream corpus[NSTREAMS];

/* deflate() the whole of in[0..n) with `flush`, growing *z. */
static void deflate_all(z_stream *s, const unsigned char *in, size_t n, int flush,
                        unsigned char **z, size_t *zn, size_t *cap)
{
    s->next_in = (unsigned char *)in;
    s->avail_in = (uInt)n;
    do {
        if (*cap - *zn < 64 * KiB) {
            *cap = 2 * *cap + 64 * KiB;
            *z = realloc(*z, *cap);
        }
        s->next_out = *z + *zn;
        s->avail_out = (uInt)(*cap - *zn);
        int rc = deflate(s, flush);
        *zn = *cap - s->avail_out;
        if (rc == Z_STREAM_END)
            return;
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            fprintf(stderr, "deflate failed: %d\n", rc);
            exit(2);
        }
    } while (s->avail_in || s->avail_out == 0);
}

static void make_stream(struct stream *st, const struct recipe *r, uint64_t seed)
{
    static const int levels[] = {0, 1, 9, 6};
    static const int strategies[] = {Z_FIXED, Z_DEFAULT_STRATEGY, Z_HUFFMAN_ONLY, Z_RLE};
    st->name = r->name;
    st->n = r->n;
    st->data = malloc(r->n ? r->n : 1);
    r->gen(st->data, r->n, seed);
    z_stream s;
    memset(&s, 0, sizeof s);
    if (deflateInit2(&s, r->level, Z_DEFLATED, -15, 8, r->strategy) != Z_OK)
        exit(2);
    size_t cap = 0, piece = r->piece ? r->piece : (r->n ? r->n : 1);
    st->z = NULL;
    st->zn = 0;
    for (size_t off = 0, k = 0; off < r->n; off += piece, k++) {
        size_t len = r->n - off < piece ? r->n - off : piece;
        if (r->vary && k > 0 && deflateParams(&s, levels[k % 4], strategies[(k / 4) % 4]) != Z_OK)
            exit(2);
        deflate_all(&s, st->data + off, len, r->piece ? r->flush : Z_NO_FLUSH, &st->z, &st->zn,
                    &cap);
    }
    if (r->empty_final)
        deflate_all(&s, NULL, 0, Z_SYNC_FLUSH, &st->z, &st->zn, &cap);
    deflate_all(&s, NULL, 0, Z_FINISH, &st->z, &st->zn, &cap);
    deflateEnd(&s);
}

/* zlib's one-shot raw inflate of the whole stream must give back the data. */
static bool oneshot_agrees(const struct stream *st)
{
    unsigned char *out = malloc(st->n + 1);
    z_stream s;
    memset(&s, 0, sizeof s);
    bool ok = inflateInit2(&s, -15) == Z_OK;
    s.next_in = st->z;
    s.avail_in = (uInt)st->zn;
    s.next_out = out;
    s.avail_out = (uInt)st->n + 1;
    ok = ok && inflate(&s, Z_FINISH) == Z_STREAM_END && s.total_out == st->n &&
         s.avail_in == 0 && memcmp(out, st->data, st->n) == 0;
    inflateEnd(&s);
    free(out);
    return ok;
}

/* Lists every block boundary with zlib's Z_BLOCK, the start of the stream first. */
static void list_bounds(struct stream *st)
{
    size_t cap = 64;
    st->b = malloc(cap * sizeof *st->b);
    st->b[0] = (struct bound){0, 0, 0};
    st->nb = 1;
    unsigned char *out = malloc(st->n + 1);
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -15) != Z_OK)
        exit(2);
    s.next_in = st->z;
    s.avail_in = (uInt)st->zn;
    s.next_out = out;
    s.avail_out = (uInt)st->n + 1;
    for (;;) {
        int rc = inflate(&s, Z_BLOCK);
        if (rc == Z_STREAM_END)
            break;
        if (rc != Z_OK) {
            fprintf(stderr, "%s: zlib Z_BLOCK pass failed: %d\n", st->name, rc);
            exit(2);
        }
        if ((s.data_type & 0xc0) == 0x80) {
            if (st->nb == cap)
                st->b = realloc(st->b, (cap *= 2) * sizeof *st->b);
            st->b[st->nb++] = (struct bound){st->zn - s.avail_in, s.data_type & 7, s.total_out};
        }
    }
    inflateEnd(&s);
    free(out);
}

static void make_corpus(void)
{
    for (size_t i = 0; i < NSTREAMS; i++) {
        make_stream(&corpus[i], &recipes[i], 1000 + i);
        list_bounds(&corpus[i]);
    }
}

static void free_corpus(void)
{
    for (size_t i = 0; i < NSTREAMS; i++) {
        free(corpus[i].data);
        free(corpus[i].z);
        free(corpus[i].b);
    }
}

static const struct bound *find_bound(const struct stream *st, size_t in, int bits)
{
    for (size_t i = 0; i < st->nb; i++)
        if (st->b[i].in == in && st->b[i].bits == bits)
            return &st->b[i];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Watched buffers. */

/* Input pieces are copied so that they end right before a PROT_NONE page. */
struct guard {
    unsigned char *base;
    size_t size; /* readable bytes before the guard page */
};

static struct guard guard_new(size_t size)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size = (size + pg - 1) / pg * pg;
    unsigned char *p = mmap(NULL, size + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                            -1, 0);
    if (p == MAP_FAILED || mprotect(p + size, pg, PROT_NONE) != 0) {
        perror("guard");
        exit(2);
    }
    return (struct guard){p, size};
}

static void guard_free(struct guard *g)
{
    munmap(g->base, g->size + (size_t)sysconf(_SC_PAGESIZE));
}

static const unsigned char *guard_place(struct guard *g, const unsigned char *p, size_t n)
{
    if (n > g->size) {
        fprintf(stderr, "guard too small\n");
        exit(2);
    }
    unsigned char *dst = g->base + g->size - n;
    memcpy(dst, p, n);
    return dst;
}

/* One step with watched buffers: the input piece sits before the guard page, the CANARY bytes
 * after out[room] must keep their pattern (out has room + CANARY bytes). */
static int watched_step(const struct inflater_ops *ops, struct inflater *f, struct guard *g,
                        const unsigned char *in, size_t in_len, size_t *used,
                        unsigned char *out, size_t room, size_t *made, int flags)
{
    memset(out + room, CANARY_BYTE, CANARY);
    int rc = ops->step(f, guard_place(g, in, in_len), in_len, used, out, room, made, flags);
    bool intact = true;
    for (size_t i = 0; i < CANARY; i++)
        intact = intact && out[room + i] == CANARY_BYTE;
    CHECK(intact);
    CHECK(*used <= in_len && *made <= room);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding in pieces. */

/* Piece sizes: big, medium or tiny, so that every buffering path of an inflater is taken. */
enum feed { FEED_BIG, FEED_MEDIUM, FEED_TINY, FEEDS };
static const char *const feed_names[] = {"big", "medium", "tiny"};

static size_t piece_in(enum feed f, uint64_t *r)
{
    return f == FEED_BIG ? 256 * KiB : f == FEED_MEDIUM ? rnd_in(r, 1, 4096) : rnd_in(r, 1, 16);
}

static size_t piece_out(enum feed f, uint64_t *r)
{
    return f == FEED_BIG ? 1 * MiB : f == FEED_MEDIUM ? rnd_in(r, 1, 64 * KiB) : rnd_in(r, 1, 64);
}

/* How much a restart decodes with each feed (tiny pieces are slow on purpose). */
static size_t feed_span(enum feed f)
{
    return f == FEED_BIG ? 300 * KiB : f == FEED_MEDIUM ? 80 * KiB : 3 * KiB;
}

struct run {
    size_t in, out; /* positions in the stream and its data where the inflater is */
    int rc;         /* last step result */
    bool stuck;     /* a step took and made nothing although both were possible */
};

/* run_until flag: go on past `until` output bytes (with no more room) until a step returns
 * non-zero; implied by INFLATER_STOP_AT_BLOCK. */
#define TO_RESULT 0x100

/* Steps from (r->in, r->out) until `until` output bytes are decoded, the stream's input is
 * exhausted, or a step returns non-zero. Output goes to dst + r->out (dst comes from
 * out_buffer); flags go to every step. */
static void run_until(const struct inflater_ops *ops, struct inflater *f, struct guard *g,
                      const unsigned char *z, size_t zn, unsigned char *dst, size_t until,
                      enum feed feed, uint64_t *rs, int flags, struct run *r)
{
    bool to_result = flags & (TO_RESULT | INFLATER_STOP_AT_BLOCK);
    flags &= ~TO_RESULT;
    r->rc = 0;
    r->stuck = false;
    while (r->out < until || to_result) {
        size_t in_len = piece_in(feed, rs), room = piece_out(feed, rs), used, made;
        in_len = in_len < zn - r->in ? in_len : zn - r->in;
        room = room < until - r->out ? room : until - r->out;
        room = room ? room : 1; /* at the end, room to be told so (dst has spare bytes) */
        r->rc = watched_step(ops, f, g, z + r->in, in_len, &used, dst + r->out, room, &made,
                             flags);
        r->in += used;
        r->out += made;
        if (r->rc != 0)
            return;
        if (used == 0 && made == 0) {
            r->stuck = in_len > 0 && room > 0;
            return;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Tests. */

static unsigned char *out_buffer(const struct stream *st)
{
    return malloc(st->n + CANARY + 16);
}

/* A test of one inflater on one stream: f to use, g for input pieces, dst from out_buffer. */
typedef void (*stream_test)(const struct inflater_ops *ops, struct inflater *f, struct guard *g,
                            const struct stream *st, size_t si, unsigned char *dst);

/* Runs fn for every inflater on every stream. */
static void each_stream(stream_test fn, size_t guard_size)
{
    struct guard g = guard_new(guard_size);
    for (const struct inflater_ops *const *op = inflater_all; *op; op++) {
        struct inflater *f = (*op)->new();
        if (!CHECK(f != NULL))
            continue;
        for (size_t si = 0; si < NSTREAMS; si++) {
            unsigned char *dst = out_buffer(&corpus[si]);
            fn(*op, f, &g, &corpus[si], si, dst);
            free(dst);
        }
        (*op)->free(f);
    }
    guard_free(&g);
}

/* Restarts at checkpoint b of st: reset with its bits and window. */
static int restart(const struct inflater_ops *ops, struct inflater *f, const struct stream *st,
                   const struct bound *b)
{
    size_t wlen = b->out < INFLATER_WINDOW ? b->out : INFLATER_WINDOW;
    unsigned char prev = b->bits ? st->z[b->in - 1] : 0;
    return ops->reset(f, b->bits, prev, st->data + b->out - wlen, wlen);
}

/* Restarts at many checkpoints and decodes what follows, in big, medium and tiny pieces; the
 * last checkpoints decode to the end of the stream. */
static void restarts(const struct inflater_ops *ops, struct inflater *f, struct guard *g,
                     const struct stream *st, size_t si, unsigned char *dst)
{
    uint64_t rs = 77 + si;
    size_t stride = st->nb > 150 ? st->nb / 150 : 1;
    for (size_t bi = 0; bi < st->nb; bi += bi + 3 >= st->nb ? 1 : stride) {
        const struct bound *b = &st->b[bi];
        enum feed feed = (enum feed)(bi % FEEDS);
        bool to_end = bi + 3 >= st->nb;
        size_t until = to_end ? st->n : b->out + feed_span(feed);
        until = until < st->n ? until : st->n;
        check_context("%s, %s, checkpoint %zu (in %zu, bits %d, out %zu), %s pieces", ops->name,
                      st->name, bi, b->in, b->bits, b->out, feed_names[feed]);
        if (!CHECK_EQ_I64(restart(ops, f, st, b), 0))
            continue;
        struct run r = {b->in, b->out, 0, false};
        run_until(ops, f, g, st->z, st->zn, dst, until, to_end ? FEED_BIG : feed, &rs, 0, &r);
        CHECK(!r.stuck);
        CHECK(r.rc >= 0);
        CHECK_EQ_U64(r.out, until);
        CHECK_EQ_MEM(dst + b->out, r.out - b->out, st->data + b->out, until - b->out);
        if (to_end) {
            /* the end is reported once all output is out, and stays reported */
            size_t used, made;
            if (r.rc == 0)
                run_until(ops, f, g, st->z, st->zn, dst, until, FEED_BIG, &rs, TO_RESULT, &r);
            CHECK_EQ_I64(r.rc, INFLATER_END);
            CHECK(r.in <= st->zn);
            CHECK_EQ_I64(ops->step(f, st->z, 0, &used, dst, 1, &made, 0), INFLATER_END);
            CHECK(used == 0 && made == 0);
        }
    }
}

/* The first pass with checkpoints, as an index builds it: decode, ask for a stop once `span`
 * bytes passed since the last checkpoint, record the boundary, reset there with the window
 * taken from the output, go on. Every boundary must be one of zlib's, soon after the request,
 * and the whole output must be the data. */
static void first_pass(const struct inflater_ops *ops, struct inflater *f, struct guard *g,
                       const struct stream *st, size_t span, enum feed feed, uint64_t *rs,
                       unsigned char *dst)
{
    check_context("%s, %s, first pass, span %zu, %s pieces", ops->name, st->name, span,
                  feed_names[feed]);
    if (!CHECK_EQ_I64(ops->reset(f, 0, 0, NULL, 0), 0))
        return;
    struct run r = {0, 0, 0, false};
    size_t base_in = 0, last_cp = 0, points = 0;
    for (;;) {
        size_t until = last_cp + span < st->n ? last_cp + span : st->n;
        if (r.out < until) { /* decode up to the wanted checkpoint distance */
            run_until(ops, f, g, st->z, st->zn, dst, until, feed, rs, 0, &r);
            if (r.rc != 0 || r.stuck || r.out < until)
                break;
        }
        size_t req_out = r.out;
        run_until(ops, f, g, st->z, st->zn, dst, st->n, feed, rs, INFLATER_STOP_AT_BLOCK, &r);
        if (r.rc != INFLATER_BLOCK_END)
            break;
        int bits = -1;
        size_t in = base_in + (size_t)ops->boundary(f, &bits);
        const struct bound *b = find_bound(st, in, bits);
        if (!CHECK(b != NULL) || !CHECK_EQ_U64(b->out, r.out))
            return;
        /* the end of the block in progress, or of the next one when between blocks: no block
         * with output ends in between, except within what the inflater may have decoded ahead
         * into its own buffer (blocks passed over are empty ones) */
        CHECK(b->out >= req_out);
        size_t skipped = 0;
        for (size_t i = 0; i < st->nb; i++)
            skipped += st->b[i].out > req_out + DECODE_AHEAD && st->b[i].out < b->out;
        if (!CHECK_EQ_U64(skipped, 0))
            printf("    request at out %zu, stop at in %zu bits %d out %zu\n", req_out, b->in,
                   b->bits, b->out);
        CHECK(r.in <= st->zn);
        points++;
        last_cp = r.out;
        base_in = r.in = b->in;
        if (!CHECK_EQ_I64(restart(ops, f, st, b), 0))
            return;
    }
    CHECK(!r.stuck);
    CHECK_EQ_I64(r.rc, INFLATER_END);
    CHECK_EQ_U64(r.out, st->n);
    CHECK_EQ_MEM(dst, r.out, st->data, st->n);
    /* with a span of 1, a checkpoint at least every block, or every block past what the
     * inflater decoded ahead */
    size_t block = st->n - st->b[st->nb - 1].out; /* the largest block's output */
    for (size_t i = 1; i < st->nb; i++)
        block = st->b[i].out - st->b[i - 1].out > block ? st->b[i].out - st->b[i - 1].out : block;
    if (span <= 1)
        CHECK(points + 1 >= st->n / (DECODE_AHEAD + block + 1));
}

static void first_passes(const struct inflater_ops *ops, struct inflater *f, struct guard *g,
                         const struct stream *st, size_t si, unsigned char *dst)
{
    static const size_t spans[] = {1, 40 * KiB, 256 * KiB};
    uint64_t rs = 991 + si;
    for (size_t k = 0; k < sizeof spans / sizeof *spans; k++) {
        /* tiny pieces only on small streams: they are slow */
        enum feed feed = (enum feed)((si + k) % FEEDS);
        if (feed == FEED_TINY && st->zn > 64 * KiB)
            feed = FEED_MEDIUM;
        first_pass(ops, f, g, st, spans[k], feed, &rs, dst);
    }
}

/* Input that ends exactly at a block boundary: the inflater delivers everything before it,
 * never reports the end of the stream, makes no progress without more input, and goes on when
 * the rest comes (stopping there is stops_at_cut's). */
static void input_ends_at_boundary(const struct inflater_ops *ops, struct inflater *f,
                                   struct guard *g, const struct stream *st, size_t si,
                                   unsigned char *dst)
{
    (void)si;
    for (size_t bi = 1; bi < st->nb && st->zn <= g->size; bi += st->nb / 5 + 1) {
        const struct bound *b = &st->b[bi];
        check_context("%s, %s, input cut at boundary %zu (in %zu, bits %d)", ops->name,
                      st->name, bi, b->in, b->bits);
        ops->reset(f, 0, 0, NULL, 0);
        size_t used, made;
        CHECK_EQ_I64(watched_step(ops, f, g, st->z, b->in, &used, dst, st->n, &made, 0), 0);
        CHECK_EQ_U64(used, b->in);
        CHECK_EQ_U64(made, b->out);
        CHECK_EQ_MEM(dst, made, st->data, b->out);
        size_t u2, m2;
        CHECK_EQ_I64(watched_step(ops, f, g, st->z + b->in, 0, &u2, dst + made, st->n - made,
                                  &m2, 0), 0);
        CHECK(u2 == 0 && m2 == 0);
        struct run r = {b->in, made, 0, false};
        uint64_t rs = 5;
        run_until(ops, f, g, st->z, st->zn, dst, st->n, FEED_BIG, &rs, TO_RESULT, &r);
        CHECK_EQ_I64(r.rc, INFLATER_END);
        CHECK_EQ_MEM(dst, r.out, st->data, st->n);
    }
}

/* The input bytes past boundary b that the next block's header takes, by zlib's Z_TREES (which
 * stops right after a header). */
static size_t header_bytes(const struct stream *st, const struct bound *b)
{
    unsigned char out[1];
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -15) != Z_OK)
        exit(2);
    if (b->bits)
        inflatePrime(&s, b->bits, st->z[b->in - 1] >> (8 - b->bits));
    s.next_in = st->z + b->in;
    s.avail_in = (uInt)(st->zn - b->in);
    s.next_out = out;
    s.avail_out = 0;
    int rc = inflate(&s, Z_TREES);
    size_t n = rc == Z_OK && (s.data_type & 256) ? st->zn - b->in - s.avail_in : 0;
    inflateEnd(&s);
    return n;
}

/* A stop asked for when one byte of a block's output is left, the input cut where that block
 * ends: the inflater stops at that boundary and reports it exactly, needing no byte after it.
 * Variants: the input goes on after the stop request (an inflater that decoded ahead up to the
 * cut must not read on past it); the input is cut a few bytes into the next block's (dynamic)
 * header. */
enum cut { CUT_AT_END, CUT_THEN_ALL, CUT_IN_HEADER, CUTS };
#define HEADER_CUT 24 /* more than an inflater reads ahead, less than most dynamic headers */
static const char *const cut_names[] = {"input cut at the end", "input cut, then all of it",
                                        "input cut inside the next header"};

static void stop_at_cut(const struct inflater_ops *ops, struct inflater *f, struct guard *g,
                        const struct stream *st, const struct bound *a, enum cut cut,
                        unsigned char *dst)
{
    const struct bound *b = a + 1;
    if (!CHECK_EQ_I64(restart(ops, f, st, a), 0))
        return;
    size_t zn = cut == CUT_IN_HEADER ? b->in + HEADER_CUT : b->in;
    struct run r = {a->in, a->out, 0, false};
    run_until(ops, f, g, st->z, zn, dst, b->out - 1, FEED_BIG, &(uint64_t){9}, 0, &r);
    if (!CHECK_EQ_I64(r.rc, 0) || !CHECK_EQ_U64(r.out, b->out - 1))
        return;
    run_until(ops, f, g, st->z, cut == CUT_THEN_ALL ? st->zn : zn, dst, st->n, FEED_BIG,
              &(uint64_t){9}, INFLATER_STOP_AT_BLOCK, &r);
    CHECK_EQ_I64(r.rc, INFLATER_BLOCK_END);
    CHECK_EQ_U64(r.out, b->out);
    CHECK_EQ_MEM(dst + a->out, r.out - a->out, st->data + a->out, b->out - a->out);
    int bits = -1;
    CHECK_EQ_U64(a->in + ops->boundary(f, &bits), b->in);
    CHECK_EQ_I64(bits, b->bits);
    size_t used, made;
    CHECK_EQ_I64(ops->step(f, st->z, 1, &used, dst, 1, &made, 0), -EINVAL);
}

static void stops_at_cut(const struct inflater_ops *ops, struct inflater *f, struct guard *g,
                         const struct stream *st, size_t si, unsigned char *dst)
{
    (void)si;
    for (size_t bi = 2; bi < st->nb; bi += st->nb / 7 + 1) {
        const struct bound *a = &st->b[bi - 1], *b = &st->b[bi];
        if (b->out == a->out || b->in + HEADER_CUT - a->in > g->size)
            continue; /* empty blocks: nothing to be in the middle of */
        for (enum cut cut = 0; cut < CUTS; cut++) {
            if (cut == CUT_IN_HEADER && header_bytes(st, b) <= HEADER_CUT + 1)
                continue;
            check_context("%s, %s, stop asked inside block %zu..%zu, %s", ops->name, st->name,
                          bi - 1, bi, cut_names[cut]);
            stop_at_cut(ops, f, g, st, a, cut, dst);
        }
    }
}

static void test_restarts(void)
{
    each_stream(restarts, 256 * KiB);
}

static void test_first_pass(void)
{
    each_stream(first_passes, 256 * KiB);
}

static void test_input_ends_at_boundary(void)
{
    each_stream(input_ends_at_boundary, 2 * MiB);
}

static void test_stop_at_cut(void)
{
    each_stream(stops_at_cut, 2 * MiB);
}

/* ------------------------------------------------------------------------------------------ */
/* Corrupt input. */

/* Writes deflate's LSB-first bit stream. */
struct bitw {
    unsigned char buf[64];
    size_t n;
    unsigned acc, nacc;
};

static void put(struct bitw *w, unsigned v, unsigned nbits)
{
    for (unsigned i = 0; i < nbits; i++) {
        w->acc |= ((v >> i) & 1u) << w->nacc;
        if (++w->nacc == 8) {
            w->buf[w->n++] = (unsigned char)w->acc;
            w->acc = w->nacc = 0;
        }
    }
}

/* Huffman codes go most significant bit first. */
static void put_code(struct bitw *w, unsigned code, unsigned len)
{
    for (unsigned i = len; i-- > 0;)
        put(w, (code >> i) & 1u, 1);
}

static void flush_bits(struct bitw *w)
{
    if (w->nacc)
        put(w, 0, 8 - w->nacc);
}

/* Fixed-code lengths and codes (RFC 1951 3.2.6). */
static void put_fixed_lit(struct bitw *w, unsigned sym)
{
    if (sym < 144)
        put_code(w, 0x30 + sym, 8);
    else if (sym < 256)
        put_code(w, 0x190 + sym - 144, 9);
    else if (sym < 280)
        put_code(w, sym - 256, 7);
    else
        put_code(w, 0xc0 + sym - 280, 8);
}

/* Decodes a whole hand-made stream in one go; it must fail with -EIO. */
static void expect_eio(const char *what, const unsigned char *z, size_t zn)
{
    struct guard g = guard_new(4096);
    for (const struct inflater_ops *const *op = inflater_all; *op; op++) {
        struct inflater *f = (*op)->new();
        unsigned char out[1024 + CANARY];
        size_t used, made;
        check_context("%s, %s", (*op)->name, what);
        CHECK_EQ_I64(watched_step(*op, f, &g, z, zn, &used, out, 1024, &made, 0), -EIO);
        (*op)->free(f);
    }
    guard_free(&g);
}

/* Starts a final fixed-code block with the literal 'a'. */
static void fixed_block_with_a(struct bitw *w)
{
    memset(w, 0, sizeof *w);
    put(w, 1, 1);
    put(w, 1, 2);
    put_fixed_lit(w, 'a');
}

/* Ends the block, which must fail to decode. */
static void end_fixed_block(struct bitw *w, const char *what)
{
    put_fixed_lit(w, 256);
    flush_bits(w);
    expect_eio(what, w->buf, w->n);
}

static void test_invalid_streams(void)
{
    struct bitw w = {0};
    put(&w, 1, 1); /* final */
    put(&w, 3, 2); /* reserved block type */
    flush_bits(&w);
    expect_eio("reserved block type", w.buf, w.n);

    memset(&w, 0, sizeof w);
    put(&w, 1, 1);
    put(&w, 0, 2); /* stored */
    flush_bits(&w);
    put(&w, 5, 16);
    put(&w, 5, 16); /* NLEN must be ~LEN */
    for (int i = 0; i < 5; i++)
        put(&w, 'x', 8);
    expect_eio("stored block with a bad NLEN", w.buf, w.n);

    fixed_block_with_a(&w);
    put_fixed_lit(&w, 257); /* length 3 */
    put_code(&w, 10, 5);    /* distance code 10: 33-48 */
    put(&w, 0, 4);
    end_fixed_block(&w, "distance too far back at the start");

    fixed_block_with_a(&w);
    put_fixed_lit(&w, 257);
    put_code(&w, 30, 5); /* distance codes 30 and 31 do not exist */
    end_fixed_block(&w, "distance code 30");

    fixed_block_with_a(&w);
    put_fixed_lit(&w, 286); /* literal/length codes 286 and 287 do not exist */
    end_fixed_block(&w, "length code 286");

    memset(&w, 0, sizeof w);
    put(&w, 1, 1);
    put(&w, 2, 2);  /* dynamic */
    put(&w, 0, 5);  /* 257 literal/length codes */
    put(&w, 0, 5);  /* 1 distance code */
    put(&w, 15, 4); /* 19 code length codes, all of length 1: over-subscribed */
    for (int i = 0; i < 19; i++)
        put(&w, 1, 3);
    flush_bits(&w);
    for (int i = 0; i < 8; i++)
        put(&w, 0, 8);
    expect_eio("over-subscribed code length code", w.buf, w.n);
}

/* A restart whose window is missing: the first back-reference reaches before the output. */
static void test_missing_window(void)
{
    const struct stream *st = &corpus[4]; /* text: back-references everywhere */
    struct guard g = guard_new(256 * KiB);
    for (const struct inflater_ops *const *op = inflater_all; *op; op++) {
        struct inflater *f = (*op)->new();
        unsigned char *dst = out_buffer(st);
        for (size_t bi = 1; bi < st->nb && st->b[bi].out + 64 * KiB <= st->n; bi += 2) {
            const struct bound *b = &st->b[bi];
            check_context("%s, %s, checkpoint %zu without its window", (*op)->name, st->name,
                          bi);
            (*op)->reset(f, b->bits, b->bits ? st->z[b->in - 1] : 0, NULL, 0);
            struct run r = {b->in, 0, 0, false};
            run_until(*op, f, &g, st->z, st->zn, dst, 64 * KiB, FEED_BIG, &(uint64_t){3}, 0,
                      &r);
            CHECK_EQ_I64(r.rc, -EIO);
        }
        free(dst);
        (*op)->free(f);
    }
    guard_free(&g);
}

/* Damaged copies of every stream, decoded from checkpoints before the damage by every inflater
 * in varied pieces: wrong output is possible (the CRC-32 check catches it), but never a crash,
 * a read or write outside the buffers (the guard page and the canaries), a stuck step or
 * another error than -EIO. */
static void test_corrupted_streams(void)
{
    struct guard g = guard_new(256 * KiB);
    uint64_t rs = 4242;
    unsigned long eio = 0, runs = 0;
    for (size_t si = 0; si < NSTREAMS; si++) {
        const struct stream *st = &corpus[si];
        if (st->zn < 16)
            continue;
        unsigned char *z = malloc(st->zn), *dst = out_buffer(st);
        for (int trial = 0; trial < 24; trial++) {
            memcpy(z, st->z, st->zn);
            const struct bound *b = &st->b[check_rnd(&rs) % st->nb];
            size_t at = b->in + check_rnd(&rs) % (st->zn - b->in < 4096 ? st->zn - b->in : 4096);
            at = at < st->zn ? at : st->zn - 1;
            switch (trial % 3) {
            case 0: z[at] ^= (unsigned char)(1u << (check_rnd(&rs) % 8)); break;
            case 1: z[at] = (unsigned char)check_rnd(&rs); break;
            default:
                for (size_t i = at; i < st->zn && i < at + 64; i++)
                    z[i] = (unsigned char)check_rnd(&rs);
            }
            for (const struct inflater_ops *const *op = inflater_all; *op; op++) {
                struct inflater *f = (*op)->new();
                enum feed feed = (enum feed)(trial % FEEDS);
                check_context("%s, damaged %s at byte %zu, from checkpoint in %zu, %s pieces",
                              (*op)->name, st->name, at, b->in, feed_names[feed]);
                size_t wlen = b->out < INFLATER_WINDOW ? b->out : INFLATER_WINDOW;
                (*op)->reset(f, b->bits, b->bits ? z[b->in - 1] : 0, st->data + b->out - wlen,
                             wlen);
                size_t until = b->out + (feed == FEED_TINY ? 8 * KiB : 512 * KiB);
                struct run r = {b->in, b->out, 0, false};
                run_until(*op, f, &g, z, st->zn, dst, until < st->n ? until : st->n, feed, &rs,
                          0, &r);
                CHECK(!r.stuck);
                CHECK(r.rc == 0 || r.rc == INFLATER_END || r.rc == -EIO);
                eio += r.rc == -EIO;
                runs++;
                (*op)->free(f);
            }
        }
        free(z);
        free(dst);
    }
    check_context("corruption");
    /* Deflate notices little damage by itself (complete Huffman codes decode any bits, stored
     * bytes are anything): the CRC-32 of a member is what catches the rest. */
    printf("corrupted streams: %lu of %lu decodes failed with EIO\n", eio, runs);
    CHECK(eio > runs / 50);
    guard_free(&g);
}

static void test_misuse(void)
{
    CHECK(inflater_find("zlib") == &inflater_zlib);
    CHECK(inflater_find("isal") == &inflater_isal);
    CHECK(inflater_find("gzip") == NULL);
    CHECK(inflater_all[0] == &inflater_zlib);
    unsigned char w[INFLATER_WINDOW + 1] = {0};
    for (const struct inflater_ops *const *op = inflater_all; *op; op++) {
        struct inflater *f = (*op)->new();
        check_context("%s", (*op)->name);
        CHECK((*op)->memory >= 32 * KiB);
        CHECK_EQ_I64((*op)->reset(f, 8, 0, NULL, 0), -EINVAL);
        CHECK_EQ_I64((*op)->reset(f, -1, 0, NULL, 0), -EINVAL);
        CHECK_EQ_I64((*op)->reset(f, 0, 0, w, sizeof w), -EINVAL);
        CHECK_EQ_I64((*op)->reset(f, 0, 0, w, INFLATER_WINDOW), 0);
        size_t used = 9, made = 9;
        unsigned char out[1];
        CHECK_EQ_I64((*op)->step(f, w, 0, &used, out, 1, &made, 0), 0);
        CHECK(used == 0 && made == 0);
        (*op)->free(f);
    }
    inflater_zlib.free(NULL);
}

int main(void)
{
    make_corpus();
    for (size_t i = 0; i < NSTREAMS; i++) {
        check_context("%s", corpus[i].name);
        CHECK(oneshot_agrees(&corpus[i]));
    }
    RUN_TEST(test_misuse);
    RUN_TEST(test_restarts);
    RUN_TEST(test_first_pass);
    RUN_TEST(test_input_ends_at_boundary);
    RUN_TEST(test_stop_at_cut);
    RUN_TEST(test_invalid_streams);
    RUN_TEST(test_missing_window);
    RUN_TEST(test_corrupted_streams);
    free_corpus();
    return check_summary("test_inflater");
}
