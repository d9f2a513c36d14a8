/*
 * reader_sozip: method 8 members. A member with a valid SOZip index (sozip.h) is served
 * through it: every chunk starts a fresh decoder with an empty window, so a read decodes only
 * the chunks it touches, with no first pass and no checkpoint windows, and a sequential
 * reader has the next chunks decoded ahead on several worker threads at once. Any other
 * member, or one whose index fails its checks (logged once), is reader_deflate's: this
 * reader's state then only wraps reader_deflate's, and every call is passed on.
 *
 * A large read that does not continue the one before (a page fault's window) is decoded
 * chunk by chunk straight into the caller's buffer, with a helper thread (direct_read); any
 * other read goes through the cache, as follows.
 *
 * The unit of work is a "group": the chunks piece q (of the cache) overlaps, and the whole
 * pieces they hold. A thread that claims piece q in the cache also claims the other pieces of
 * its group that nobody is producing, so that two threads never decode the same chunks, then
 * decodes the chunks in order. A piece is handed to the cache only once every chunk it
 * overlaps has passed the checks that an untrusted index needs: the chunk decodes from an
 * empty window (a back reference into the previous chunk is corrupt data), to exactly its
 * length, from input that starts right after a flush marker and ends on one, and the decoder
 * then stands on a byte-aligned block boundary (an appended final empty block ends the stream
 * with no output). Members whose chunks are mostly literals are decoded by libdeflate, one
 * call per chunk, the others by ISA-L (see one_shot). A chunk that fails reads EIO, and so
 * does the member from then on.
 * What per-chunk checks cannot see (a stream crafted to parse two ways) the CRC-32 catches
 * once every chunk has been decoded: the member then fails, as a plain deflated one does.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <isa-l/crc.h>
#include <libdeflate.h>
#include <zlib.h> /* crc32_combine */

#include "inflater.h"
#include "io.h"
#include "log.h"
#include "reader.h"
#include "sozip.h"
#include "tls.h"

#define IN_BUF (64u << 10)
#define SOZIP_MAX_CHUNK (16u << 20) /* a group holds its pieces until its chunks pass */
#define AHEAD_JOB (256u << 10) /* least output of one decode-ahead job: a job costs a wakeup */
#define AHEAD_MIN (1u << 20)  /* least decode-ahead of a sequential reader */
#define AHEAD_AFTER 2         /* reads continuing the one before that make a sequential reader */
#define NO_READ UINT64_MAX
#define QUICK_CHUNKS 8  /* the most chunks a READ_QUICK read decodes (on a FUSE thread) */
#define ONE_SHOT_MAX (64u << 10) /* the largest chunk libdeflate decodes (see one_shot) */

/* A final empty block with fixed codes, appended to a chunk that ends on a flush so that
 * libdeflate, which decodes whole streams only, stops there. */
static const unsigned char final_block[] = {0x03, 0x00};

struct sozip_state {
    void *deflate;          /* reader_deflate's state when the member has no usable index */
    char ignored[200];      /* why the index was ignored, logged by the first user */
    atomic_bool told;
    struct sozip_index ix;
    const struct inflater_ops *ops;
    bool one_shot;          /* chunks decode with libdeflate (see sozip_new) */
    struct budget *mem;
    uint64_t usize;
    uint32_t crc32;
    pthread_mutex_t lock;   /* guards the chunk CRC table */
    uint32_t *crc;          /* per chunk, once it decoded */
    unsigned char *seen;
    uint64_t nseen;
    uint64_t table_bytes;   /* crc and seen, taken from mem */
    _Atomic(const char *) why;
    atomic_uint_fast64_t decoded;
    _Atomic uint64_t last_end; /* where the last foreground read ended, or NO_READ */
    _Atomic uint64_t run;      /* reads in a row that continued the one before */
    _Atomic uint64_t ahead_to; /* decode-ahead was asked for up to here */
};

/* ---- state ---- */

static int fail(struct sozip_state *st, const char *why)
{
    const char *none = NULL;
    atomic_compare_exchange_strong(&st->why, &none, why);
    return -EIO;
}

/* The chunk CRC table, or a reason to ignore the index. */
static int make_tables(struct sozip_state *st, const struct reader_env *env, char *why,
                       size_t why_len)
{
    uint64_t n = st->ix.nchunks;
    if (st->ix.chunk > SOZIP_MAX_CHUNK || st->ix.chunk > env->cache_bytes / 2)
        return io_fail(why, why_len, -EINVAL, "chunk size %llu too large for the cache",
                       (unsigned long long)st->ix.chunk);
    st->table_bytes = n * (sizeof *st->crc + 1);
    if (st->mem && budget_take(st->mem, st->table_bytes) < 0) {
        st->table_bytes = 0;
        return io_fail(why, why_len, -ENOMEM, "index larger than the memory budget");
    }
    st->crc = malloc(n * sizeof *st->crc);
    st->seen = calloc(n, 1);
    if (!st->crc || !st->seen)
        return io_fail(why, why_len, -ENOMEM, "out of memory");
    return 0;
}

static void drop_index(struct sozip_state *st)
{
    if (st->mem && st->table_bytes)
        budget_give(st->mem, st->table_bytes);
    st->table_bytes = 0;
    free(st->crc);
    free(st->seen);
    st->crc = NULL;
    st->seen = NULL;
    sozip_index_free(&st->ix, st->mem);
}

static void *sozip_new(const struct reader_env *env, const struct zip_member *zm)
{
    struct sozip_state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->mem = env->index_mem;
    st->usize = zm->usize;
    st->crc32 = zm->crc32;
    st->ops = &inflater_isal;
    /* Which decoder is faster depends on the data (scripts/bench-tools/chunk-decoders.c):
     * libdeflate on chunks of mostly literals (float32 noise: 0.78x ISA-L's time), ISA-L on
     * chunks of mostly matches (int64 arange: libdeflate takes 1.6x its time); they cross near
     * half the input size. */
    st->one_shot = zm->csize >= zm->usize / 2;
    st->last_end = NO_READ;
    pthread_mutex_init(&st->lock, NULL);
    int rc = sozip_load(env->src, zm, st->mem, &st->ix, st->ignored, sizeof st->ignored);
    if (rc == 0)
        rc = make_tables(st, env, st->ignored, sizeof st->ignored);
    if (rc == 0)
        return st;
    drop_index(st);
    if (rc == -ENOENT)
        st->ignored[0] = '\0';
    if (!(st->deflate = reader_deflate.new_state(env, zm))) {
        pthread_mutex_destroy(&st->lock);
        free(st);
        return NULL;
    }
    return st;
}

static void sozip_free(void *state)
{
    struct sozip_state *st = state;
    if (st->deflate)
        reader_deflate.free_state(st->deflate);
    drop_index(st);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

/* Whether the member is reader_deflate's; then *inner is it as reader_deflate sees it. */
static bool delegated(const struct reader_member *m, struct reader_member *inner)
{
    struct sozip_state *st = m->state;
    if (!st || !st->deflate)
        return false;
    if (st->ignored[0] && !atomic_exchange(&st->told, true))
        log_error("%s: SOZip index ignored: %s", m->zm->name, st->ignored);
    *inner = *m;
    inner->state = st->deflate;
    return true;
}

/* Records chunk c's CRC-32; once every chunk has one, checks the member's. */
static int record_chunk(struct sozip_state *st, uint64_t c, uint32_t crc)
{
    pthread_mutex_lock(&st->lock);
    bool all = false;
    if (!st->seen[c]) {
        st->seen[c] = 1;
        st->crc[c] = crc;
        all = ++st->nseen == st->ix.nchunks;
    }
    pthread_mutex_unlock(&st->lock);
    if (!all)
        return 0;
    uint32_t total = 0;
    for (uint64_t k = 0; k < st->ix.nchunks; k++) {
        uint64_t len = k + 1 < st->ix.nchunks ? st->ix.chunk : st->usize - k * st->ix.chunk;
        total = (uint32_t)crc32_combine(total, st->crc[k], (z_off_t)len);
    }
    return total == st->crc32 ? 0 : fail(st, "CRC-32 mismatch");
}

/* ---- decoding a group ---- */

struct group {
    uint64_t c0, c1; /* chunks */
    uint64_t k0, k1; /* the whole pieces in them */
};

static struct group group_of(const struct sozip_state *st, uint64_t piece, uint64_t q)
{
    uint64_t c = st->ix.chunk, a = q * piece;
    uint64_t b = a + piece < st->usize ? a + piece : st->usize;
    struct group g = {a / c, (b - 1) / c, 0, 0};
    uint64_t from = g.c0 * c, to = (g.c1 + 1) * c < st->usize ? (g.c1 + 1) * c : st->usize;
    g.k0 = (from + piece - 1) / piece;
    g.k1 = to == st->usize ? (st->usize + piece - 1) / piece : to / piece;
    return g;
}

/* A thread's decoders and buffers, kept from one group to the next: allocating an ISA-L
 * state per group made glibc grow and trim its heap on every random read (perf: a tenth of
 * the daemon's time in sysmalloc and page clearing). The input buffer has room for the final
 * block decode_whole appends; out is decode_whole's output when it cannot go straight where
 * it belongs. */
struct kit {
    const struct inflater_ops *ops;
    struct inflater *f;
    struct libdeflate_decompressor *ld; /* made for the first one_shot member */
    unsigned char in[IN_BUF + sizeof final_block];
    unsigned char out[ONE_SHOT_MAX];
};

static void kit_free(void *p)
{
    struct kit *k = p;
    if (k->f)
        k->ops->free(k->f);
    if (k->ld)
        libdeflate_free_decompressor(k->ld);
    free(k);
}

static struct tls kits = TLS_INIT(sizeof(struct kit), kit_free);

/* This thread's kit with a decoder of kind ops (and libdeflate's, with one_shot), or NULL
 * when out of memory. */
static struct kit *thread_kit(const struct inflater_ops *ops, bool one_shot)
{
    struct kit *k = tls_get(&kits);
    if (k && k->f && k->ops != ops) {
        k->ops->free(k->f);
        k->f = NULL;
    }
    if (k && !k->f) {
        k->ops = ops;
        k->f = ops->new();
    }
    if (k && one_shot && !k->ld)
        k->ld = libdeflate_alloc_decompressor();
    return k && k->f && (k->ld || !one_shot) ? k : NULL;
}

/* One thread decoding one group. */
struct run {
    const struct reader_env *env;
    const struct reader_member *m;
    struct sozip_state *st;
    struct group g;
    uint64_t q;
    size_t piece;
    struct cache_entry **claim; /* per whole piece (k - k0): our claim in the cache, or NULL */
    unsigned char **buf;        /* per whole piece: its buffer, until handed to the cache */
    uint64_t handed;            /* whole pieces handed over, from k0 on */
    unsigned char *scratch;     /* output outside the whole pieces (and the caller's) */
    unsigned char *out;         /* a direct read's buffer: output [out_off, out_end) goes */
    uint64_t out_off, out_end;  /* there, and no piece is made (see direct_read) */
    struct inflater *f;
    struct libdeflate_decompressor *ld;
    unsigned char *whole;       /* ONE_SHOT_MAX bytes for libdeflate's output */
    unsigned char *in;          /* compressed bytes [in_at, in_at + in_have) of the member */
    uint64_t in_at;
    size_t in_have;
};

static uint64_t piece_end(const struct run *r, uint64_t k)
{
    uint64_t e = (k + 1) * r->piece;
    return e < r->st->usize ? e : r->st->usize;
}

/* Points *p at the member's compressed bytes from `at` on, at most up to `to`. */
static int input_at(struct run *r, uint64_t at, uint64_t to, const unsigned char **p, size_t *n)
{
    if (at < r->in_at || at >= r->in_at + r->in_have) {
        uint64_t end = r->st->ix.off[r->g.c1 + 1]; /* the group's input ends there */
        size_t len = end - at < IN_BUF ? (size_t)(end - at) : IN_BUF;
        if (at >= end)
            return -EIO;
        if (source_read(r->env->src, r->in, len, r->m->zm->data_off + at) < 0)
            return -EREMOTEIO; /* the source's failure, not the chunk's (reader.h) */
        r->in_at = at;
        r->in_have = len;
    }
    *p = r->in + (at - r->in_at);
    size_t avail = r->in_have - (size_t)(at - r->in_at);
    *n = to - at < avail ? (size_t)(to - at) : avail;
    return 0;
}

/* Whether the 4 compressed bytes before `at` are the flush marker: 0 when they are, -EIO
 * (the member failed, with a reason naming the start or the end) when not, -EREMOTEIO when the
 * source failed. Normally they are in the input buffer; else they are read. */
static int check_marker(struct run *r, uint64_t at, const char *where)
{
    unsigned char b[SOZIP_MARKER_LEN];
    if (at < SOZIP_MARKER_LEN)
        return fail(r->st, where);
    if (at - SOZIP_MARKER_LEN >= r->in_at && at <= r->in_at + r->in_have)
        memcpy(b, r->in + (at - SOZIP_MARKER_LEN - r->in_at), sizeof b);
    else if (source_read(r->env->src, b, sizeof b, r->m->zm->data_off + at - sizeof b) < 0)
        return -EREMOTEIO; /* the source's failure, not the chunk's (reader.h) */
    return memcmp(b, sozip_marker, sizeof b) == 0 ? 0 : fail(r->st, where);
}

/* Where the output at pos goes, and how much of it fits before the piece's or chunk's end. */
static int dest(struct run *r, uint64_t pos, uint64_t end, unsigned char **dst, size_t *room)
{
    uint64_t k = pos / r->piece, start = k * r->piece, stop = piece_end(r, k);
    if (r->out && pos >= r->out_off && pos < r->out_end) {
        *dst = r->out + (pos - r->out_off);
        *room = (size_t)((end < r->out_end ? end : r->out_end) - pos);
        return 0;
    }
    if (r->out && pos < r->out_off && r->out_off < stop)
        stop = r->out_off;
    if (stop > end)
        stop = end;
    unsigned char *base = r->scratch;
    if (k >= r->g.k0 && k < r->g.k1) {
        unsigned char **b = &r->buf[k - r->g.k0];
        if (!*b && !(*b = cache_buffer(r->env->cache)))
            return -ENOMEM;
        base = *b;
    }
    *dst = base + (pos - start);
    *room = (size_t)(stop - pos);
    return 0;
}

/* After the last byte of a chunk: the decoder must stand on a byte-aligned block boundary, so
 * a final empty stored block appended there ends the stream at once, with no output. */
static int ends_on_boundary(struct run *r)
{
    static const unsigned char fin[] = {0x01, 0x00, 0x00, 0xff, 0xff};
    size_t at = 0;
    for (;;) {
        unsigned char extra;
        size_t used, made;
        int rc = r->st->ops->step(r->f, fin + at, sizeof fin - at, &used, &extra, 1, &made, 0);
        at += used;
        if (rc == INFLATER_END && !made)
            return 0;
        if (rc != INFLATER_OK || made || !used)
            return fail(r->st, "SOZip chunk does not end on a flush");
    }
}

/* Where chunk c lies: its input [in, in_end) and its output [pos, end). */
struct chunk_span {
    uint64_t in, in_end, pos, end;
    bool last;
};

static struct chunk_span chunk_span(const struct sozip_state *st, uint64_t c)
{
    uint64_t pos = c * st->ix.chunk;
    return (struct chunk_span){st->ix.off[c], st->ix.off[c + 1], pos,
                               pos + st->ix.chunk < st->usize ? pos + st->ix.chunk : st->usize,
                               c + 1 == st->ix.nchunks};
}

static const char bad_start[] = "SOZip chunk does not start on a flush marker";
static const char bad_end[] = "SOZip chunk does not end on a flush marker";
static const char bad_size[] = "SOZip chunk does not decode to its size";
static const char bad_input[] = "SOZip chunk past its member's data";

/* Copies [pos, pos + n) of the member's output from src to where dest() puts it. */
static int emit(struct run *r, uint64_t pos, const unsigned char *src, size_t n)
{
    while (n) {
        unsigned char *dst;
        size_t room;
        int rc = dest(r, pos, pos + n, &dst, &room);
        if (rc < 0)
            return rc;
        room = room < n ? room : n;
        memcpy(dst, src, room);
        pos += room;
        src += room;
        n -= room;
    }
    return 0;
}

/* decode_chunk with one call to libdeflate: the chunk's input, from its start marker on, in
 * the input buffer at once, a final empty block appended to it (unless it is the last), and
 * its output in one buffer. The checks are the streaming decode's: the markers, and the whole
 * input consumed to exactly the chunk's length, ending with the appended block, which proves
 * a byte-aligned block boundary there (the marker's last byte leaves no bits that could
 * start a block). Returns -ENOTSUP when the chunk is too large for that. */
static int decode_whole(struct run *r, uint64_t c)
{
    struct sozip_state *st = r->st;
    struct chunk_span k = chunk_span(st, c);
    if (c > 0 && k.in < SOZIP_MARKER_LEN)
        return fail(st, bad_start);
    uint64_t from = c > 0 ? k.in - SOZIP_MARKER_LEN : 0;
    if (k.end - k.pos > ONE_SHOT_MAX || k.in_end - from > IN_BUF)
        return -ENOTSUP;
    const unsigned char *p;
    size_t n;
    int rc = input_at(r, from, k.in_end, &p, &n);
    if (rc == 0 && n < k.in_end - from) { /* the buffer ends inside: read it from here */
        r->in_have = 0;
        rc = input_at(r, from, k.in_end, &p, &n);
    }
    if (rc < 0)
        return rc == -EIO ? fail(st, bad_input) : rc;
    /* both markers lie in the buffer now */
    rc = c > 0 ? check_marker(r, k.in, bad_start) : 0;
    if (rc == 0 && !k.last)
        rc = check_marker(r, k.in_end, bad_end);
    if (rc < 0)
        return rc;
    /* The final block goes over the two bytes after the chunk (the next chunk's, maybe), which
     * are put back afterwards: in_end is within IN_BUF of in_at, and the buffer has room. */
    unsigned char *src = r->in + (k.in - r->in_at), kept[sizeof final_block] = {0};
    size_t src_len = (size_t)(k.in_end - k.in);
    if (!k.last) {
        memcpy(kept, src + src_len, sizeof kept);
        memcpy(src + src_len, final_block, sizeof final_block);
    }
    unsigned char *dst;
    size_t room, len = (size_t)(k.end - k.pos), used = 0, made = 0;
    rc = dest(r, k.pos, k.end, &dst, &room);
    dst = room < len ? r->whole : dst;
    enum libdeflate_result res =
        rc < 0 ? LIBDEFLATE_BAD_DATA
               : libdeflate_deflate_decompress_ex(r->ld, src, src_len + (k.last ? 0 : 2), dst,
                                                  len, &used, &made);
    if (!k.last)
        memcpy(src + src_len, kept, sizeof kept);
    if (rc < 0)
        return rc;
    if (res != LIBDEFLATE_SUCCESS || made != len || used != src_len + (k.last ? 0 : 2))
        return fail(st, bad_size);
    atomic_fetch_add_explicit(&st->decoded, made, memory_order_relaxed);
    uint32_t crc = crc32_gzip_refl(0, dst, made);
    if (dst == r->whole && (rc = emit(r, k.pos, dst, made)) < 0)
        return rc;
    return record_chunk(st, c, crc);
}

/* Decodes chunk c on its own and checks it (see the top of this file). */
static int decode_chunk(struct run *r, uint64_t c)
{
    struct sozip_state *st = r->st;
    if (st->one_shot) {
        int rc = decode_whole(r, c);
        if (rc != -ENOTSUP)
            return rc;
    }
    const struct inflater_ops *ops = st->ops;
    struct chunk_span k = chunk_span(st, c);
    uint64_t in = k.in, in_end = k.in_end, pos = k.pos, end = k.end;
    bool last = k.last, ended = false;
    /* The input is read from the start marker on, so that both markers are checked in the
     * buffer (the end one once decoded, before any piece is handed over). */
    if (c > 0) {
        const unsigned char *p;
        size_t n;
        int rc = in < SOZIP_MARKER_LEN ? -EIO
                                       : input_at(r, in - SOZIP_MARKER_LEN, in_end, &p, &n);
        if (rc == 0)
            rc = check_marker(r, in, bad_start);
        if (rc < 0)
            return rc == -EIO ? fail(st, bad_start) : rc;
    }
    if (ops->reset(r->f, 0, 0, NULL, 0) < 0)
        return -EIO;
    uint32_t crc = 0;
    while (!ended) {
        const unsigned char *p = NULL;
        size_t n = 0, used, made, room = 1;
        unsigned char extra, *dst = &extra; /* past the chunk's end: nothing may come out */
        int rc = in < in_end ? input_at(r, in, in_end, &p, &n) : 0;
        if (rc == 0 && pos < end)
            rc = dest(r, pos, end, &dst, &room);
        if (rc < 0)
            return rc == -EIO ? fail(st, bad_input) : rc;
        rc = ops->step(r->f, p, n, &used, dst, room, &made, 0);
        in += used;
        if (made && pos >= end)
            return fail(st, "SOZip chunk longer than the chunk size");
        crc = crc32_gzip_refl(crc, dst, made);
        pos += made;
        atomic_fetch_add_explicit(&st->decoded, made, memory_order_relaxed);
        if (rc < 0)
            return rc == -ENOMEM ? rc : fail(st, "corrupt deflate data in a SOZip chunk");
        ended = rc == INFLATER_END;
        if (!ended && !used && !made)
            break; /* input used up (or a stall, which the checks below reject) */
    }
    if (pos != end || ended != last || in != in_end)
        return fail(st, bad_size);
    int rc = last ? 0 : check_marker(r, in_end, bad_end);
    if (rc == 0 && !last && ends_on_boundary(r) < 0)
        rc = -EIO;
    if (rc < 0)
        return rc;
    return record_chunk(st, c, crc);
}

/* Hands every whole piece that ends at or before `upto` to the cache. */
static void hand_over(struct run *r, uint64_t upto)
{
    struct cache *cache = r->env->cache;
    for (uint64_t k = r->g.k0 + r->handed; k < r->g.k1 && piece_end(r, k) <= upto; k++) {
        uint64_t i = k - r->g.k0;
        size_t len = (size_t)(piece_end(r, k) - k * r->piece);
        if (r->claim[i]) {
            cache_fill(cache, r->claim[i], r->buf[i], len);
            if (k != r->q) {
                cache_put(cache, r->claim[i]);
                r->claim[i] = NULL;
            }
        } else {
            cache_insert(cache, r->m->idx, k, r->buf[i], len);
        }
        r->buf[i] = NULL;
        r->handed++;
    }
}

/* Claims the group's other pieces that are neither ready nor being produced. */
static void claim_group(struct run *r, struct cache_entry *mine)
{
    for (uint64_t k = r->g.k0; k < r->g.k1; k++) {
        struct cache_entry **e = &r->claim[k - r->g.k0];
        if (k == r->q) {
            *e = mine;
        } else if (cache_get(r->env->cache, r->m->idx, k, CACHE_NOWAIT, e) != 0) {
            if (*e)
                cache_put(r->env->cache, *e); /* ready already */
            *e = NULL;
        }
    }
}

/* Gives back what was neither handed over nor kept: rc says how (-EIO fails the claims, so
 * that readers waiting for them get the error; anything else lets others try again). */
static void release(struct run *r, int rc)
{
    struct cache *cache = r->env->cache;
    for (uint64_t k = r->g.k0; r->buf && r->claim && k < r->g.k1; k++) {
        uint64_t i = k - r->g.k0;
        if (r->buf[i])
            cache_unused(cache, r->buf[i]);
        if (!r->claim[i] || (k == r->q && rc == 0))
            continue;
        if (k - r->g.k0 < r->handed)
            cache_put(cache, r->claim[i]);
        else if (rc == -EIO)
            cache_fail(cache, r->claim[i], rc);
        else
            cache_abandon(cache, r->claim[i]);
    }
    if (r->scratch)
        cache_unused(cache, r->scratch);
    free(r->claim);
    free(r->buf);
}

/* Gives r this thread's decoder and input buffer, and a scratch buffer (release gives it
 * back). Returns 0 or -ENOMEM. */
static int equip(struct run *r)
{
    struct kit *kit = thread_kit(r->st->ops, r->st->one_shot);
    r->scratch = cache_buffer(r->env->cache);
    if (kit) {
        r->f = kit->f;
        r->ld = kit->ld;
        r->in = kit->in;
        r->whole = kit->out;
    }
    return kit && r->scratch ? 0 : -ENOMEM;
}

/* Produces piece q, which the caller claimed as e: decodes its group. Returns 0 with e ready
 * and still referenced, or an error with e gone. */
static int produce(const struct reader_env *env, const struct reader_member *m, uint64_t q,
                   struct cache_entry *e, const struct read_ctl *ctl)
{
    struct sozip_state *st = m->state;
    struct run r = {.env = env, .m = m, .st = st, .q = q, .piece = cache_piece(env->cache)};
    r.g = group_of(st, r.piece, q);
    uint64_t n = r.g.k1 - r.g.k0;
    r.claim = calloc(n, sizeof *r.claim);
    r.buf = calloc(n, sizeof *r.buf);
    if (equip(&r) < 0 || !r.claim || !r.buf) {
        cache_abandon(env->cache, e);
        release(&r, -ENOMEM);
        return -ENOMEM;
    }
    claim_group(&r, e);
    int rc = 0;
    for (uint64_t c = r.g.c0; rc == 0 && c <= r.g.c1; c++) {
        if (atomic_load(&st->why))
            rc = -EIO;
        else if (c > r.g.c0 && stop_now(ctl->stop))
            rc = r.handed > q - r.g.k0 ? 1 : -EINTR; /* 1: q is out, the rest may wait */
        else if ((rc = decode_chunk(&r, c)) == 0)
            hand_over(&r, (c + 1) * st->ix.chunk);
    }
    rc = rc == 1 ? 0 : rc;
    release(&r, rc);
    return rc;
}

/* ---- random reads, decoded straight into the caller's buffer ---- */

/* A read of at least a piece that does not continue the one before (a page fault of
 * np.load's mapping, say) is decoded chunk by chunk into the caller's buffer when chunks are
 * no larger than a piece, with no whole pieces around it: the kernel asks for 96 KiB around a
 * fault, which takes 4 chunks of 32 KiB, where the pieces it touches take 2.5 of 64 KiB.
 * Each chunk is still decoded whole and passes every check before the read returns. Nothing
 * goes to the cache: the kernel keeps the pages of so large a read, and random reads seldom
 * come back to the chunks around them (smaller reads, which may, take the pieces' way).
 * A helper on a worker takes chunks from the far end while the reader takes them from the
 * near end. The split outlives whichever of the two ends last (the helper may start after
 * the reader is done); the reader waits for the chunks the helper claimed, which write into
 * its buffer. */
struct split {
    pthread_mutex_t lock;
    pthread_cond_t idle;
    uint64_t next, stop; /* the chunks nobody claimed: [next, stop) */
    unsigned busy;       /* chunks the helper claimed and has not finished */
    int rc;              /* the first failure, which ends the claims */
    int refs;            /* the reader, and the helper once queued */
    struct reader_member member;
    struct run r;        /* what both decode with, but for their equipment (equip) */
};

/* Claims the first (or, for the helper, the last) chunk nobody claimed; false when none is
 * left or one failed. */
static bool claim_chunk(struct split *s, bool helper, uint64_t *c)
{
    pthread_mutex_lock(&s->lock);
    bool ok = s->rc == 0 && s->next < s->stop;
    if (ok && helper) {
        *c = --s->stop;
        s->busy++;
    } else if (ok) {
        *c = s->next++;
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* Records how a chunk went, decoded by the helper or by the reader. */
static void chunk_done(struct split *s, bool helper, int rc)
{
    pthread_mutex_lock(&s->lock);
    if (rc < 0 && s->rc == 0)
        s->rc = rc;
    if (helper && --s->busy == 0)
        pthread_cond_signal(&s->idle);
    pthread_mutex_unlock(&s->lock);
}

/* Drops a reference: the last frees s. */
static void split_put(struct split *s)
{
    pthread_mutex_lock(&s->lock);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->lock);
    if (!last)
        return;
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    free(s);
}

/* Decodes the chunks this thread claims from s until none is left. It is equipped at its
 * first claim, so that a helper that starts late takes nothing. */
static void decode_claims(struct split *s, bool helper, const struct stop *stop)
{
    struct run r = s->r;
    bool equipped = false;
    uint64_t c;
    while (claim_chunk(s, helper, &c)) {
        int rc = equipped ? 0 : equip(&r);
        equipped = true;
        if (rc == 0 && atomic_load(&r.st->why))
            rc = -EIO;
        if (rc == 0 && !helper && c > r.g.c0 && stop_now(stop))
            rc = -EINTR;
        if (rc == 0)
            rc = decode_chunk(&r, c);
        chunk_done(s, helper, rc);
    }
    release(&r, 0);
}

/* The helper's job (env->helper). */
static void help(void *arg)
{
    struct split *s = arg;
    decode_claims(s, true, NULL);
    split_put(s);
}

/* Reads [off, off + len) as the top of this section says: returns len or an error. */
static ssize_t direct_read(const struct reader_env *env, const struct reader_member *m,
                           unsigned char *out, size_t len, uint64_t off,
                           const struct read_ctl *ctl)
{
    struct sozip_state *st = m->state;
    struct split *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    s->next = off / st->ix.chunk;
    s->stop = (off + len - 1) / st->ix.chunk + 1;
    s->refs = 1;
    s->member = *m; /* the caller's may be gone by the time the helper starts */
    s->r = (struct run){.env = env, .m = &s->member, .st = st, .piece = cache_piece(env->cache),
                        .g = {s->next, s->stop - 1, 0, 0}, .out = out, .out_off = off,
                        .out_end = off + len};
    if (s->stop - s->next > 1 && env->helper) {
        s->refs++;
        if (env->helper(env->ahead_ctx, help, s) < 0)
            s->refs--; /* never queued: no lock needed */
    }
    decode_claims(s, false, ctl->stop); /* ends with none unclaimed, or a failure: a helper
                                         * that starts now finds nothing */
    pthread_mutex_lock(&s->lock);
    while (s->busy)
        pthread_cond_wait(&s->idle, &s->lock);
    int rc = s->rc;
    pthread_mutex_unlock(&s->lock);
    split_put(s);
    if (rc == 0 && ctl->pins)
        rc = read_pins_add(ctl->pins, NULL, NULL, out, len);
    return rc < 0 ? rc : (ssize_t)len;
}

/* ---- reading ---- */

/* Whether a read at off continues the one that ended at prev (NO_READ: none yet): it starts
 * there or a little before. Reads of compressed members are synchronous unless -o async_read
 * says otherwise, so a sequential reader's come in order, while a page fault a piece past the
 * last read is a random reader's (np.load's two reads, then a mapping read near the header).
 * With asynchronous reads out of order, decode-ahead may start late or not at all. */
static bool continues(uint64_t prev, uint64_t off, uint64_t piece)
{
    return prev != NO_READ && off <= prev && off + 2 * piece >= prev;
}

/* Has [from, limit) decoded by the workers, in jobs of whole groups of at least unit bytes
 * each (the last may be shorter), as many at once as there are threads; groups already
 * cached are skipped. Returns how far jobs were queued (a full queue stops it early). */
static uint64_t submit_groups(const struct reader_env *env, const struct reader_member *m,
                              uint64_t from, uint64_t limit, uint64_t unit)
{
    struct sozip_state *st = m->state;
    uint64_t piece = cache_piece(env->cache);
    while (from < limit) {
        uint64_t q = from / piece, to = from;
        while (to < limit && to - q * piece < unit)
            to = group_of(st, piece, to / piece).k1 * piece;
        to = to < st->usize ? to : st->usize;
        if (!reader_cached(env, m, q) &&
            env->ahead(env->ahead_ctx, m->idx, q * piece, (size_t)(to - q * piece),
                       env->threads ? env->threads : 1) < 0)
            break;
        from = to;
    }
    return from;
}

/* A sequential reader gets the next groups decoded on the worker threads, in jobs of whole
 * groups of about AHEAD_JOB bytes or one chunk, as many at once as there are threads, within
 * half the cache. */
static void maybe_ahead(const struct reader_env *env, const struct reader_member *m,
                        uint64_t off, uint64_t end, const struct read_ctl *ctl)
{
    struct sozip_state *st = m->state;
    uint64_t piece = cache_piece(env->cache);
    if (!env->ahead || ctl->ahead)
        return;
    uint64_t prev = atomic_exchange(&st->last_end, end);
    uint64_t run = 0;
    if (continues(prev, off, piece))
        run = atomic_fetch_add(&st->run, 1) + 1;
    else
        atomic_store(&st->run, 0);
    /* Not yet a sequential reader: np.load reads the header and the kernel the 128 KiB after
     * it before any random access, and 1 MiB decoded ahead of that went to waste. */
    if (run < AHEAD_AFTER) {
        atomic_store(&st->ahead_to, end);
        return;
    }
    uint64_t unit = st->ix.chunk > AHEAD_JOB ? st->ix.chunk : AHEAD_JOB;
    uint64_t span = 2 * (env->threads ? env->threads : 1) * unit;
    span = span > AHEAD_MIN ? span : AHEAD_MIN;
    uint64_t room = cache_bound(env->cache) / 2; /* more would evict its own work */
    if (span > room)
        span = room;
    uint64_t from = atomic_load(&st->ahead_to);
    from = from > end ? from : end;
    uint64_t limit = end + span < st->usize ? end + span : st->usize;
    atomic_store(&st->ahead_to, submit_groups(env, m, from, limit, unit));
}

/* A read over several groups has the later ones decoded by the workers while this thread
 * decodes the first: a sequential reader's reads of 128 KiB span several small chunks, and
 * chunks decode independently. A group a worker has not started by the
 * time this thread reaches it is decoded here (the cache's claims keep it to one decode). */
static void split_read(const struct reader_env *env, const struct reader_member *m,
                       uint64_t off, size_t len, const struct read_ctl *ctl)
{
    struct sozip_state *st = m->state;
    uint64_t piece = cache_piece(env->cache);
    if (!env->ahead || ctl->ahead || !reader_decodes(ctl) || len == 0)
        return;
    uint64_t from = group_of(st, piece, off / piece).k1 * piece;
    submit_groups(env, m, from, off + len, 1);
}

/* Whether a READ_QUICK read may decode [off, off + len) on the thread that asked: a local
 * archive (no wait but for the disk), at most QUICK_CHUNKS chunks, whose input is at most
 * twice their output (an index may say anything: empty blocks could make a chunk's input
 * as long as the member's). */
static bool quick_enough(const struct reader_env *env, const struct sozip_state *st,
                         uint64_t off, size_t len)
{
    uint64_t c0 = off / st->ix.chunk, c1 = (off + len - 1) / st->ix.chunk;
    return !env->src->remote && c1 - c0 < QUICK_CHUNKS &&
           st->ix.off[c1 + 1] - st->ix.off[c0] <= 2 * (c1 - c0 + 1) * st->ix.chunk;
}

/* Whether a read takes direct_read's way: chunks no larger than a piece, a read of at least
 * a piece that does not continue the last one, by no decode-ahead job, with neither end
 * already in the cache (made by decode-ahead, or for another reader, it would be decoded
 * again for nothing). Such a read is READ_QUICK's when quick_enough: then the FUSE thread
 * that received it needs no worker's wakeup (5 % of a random element's time). */
static bool goes_direct(const struct reader_env *env, const struct reader_member *m,
                        uint64_t off, size_t len, const struct read_ctl *ctl)
{
    struct sozip_state *st = m->state;
    uint64_t piece = cache_piece(env->cache);
    if (!(reader_decodes(ctl) || (ctl->mode == READ_QUICK && quick_enough(env, st, off, len))))
        return false;
    return st->ix.chunk <= piece && len >= piece && !ctl->ahead &&
           !continues(atomic_load(&st->last_end), off, piece) &&
           !reader_cached(env, m, off / piece) && !reader_cached(env, m, (off + len - 1) / piece);
}

static ssize_t sozip_read(const struct reader_env *env, const struct reader_member *m,
                          void *out, size_t len, uint64_t off, const struct read_ctl *ctl)
{
    struct reader_member inner;
    if (delegated(m, &inner))
        return reader_deflate.read(env, &inner, out, len, off, ctl);
    struct sozip_state *st = m->state;
    unsigned char *buf = out;
    size_t done = 0, piece = cache_piece(env->cache);
    if (goes_direct(env, m, off, len, ctl)) {
        ssize_t n = direct_read(env, m, buf, len, off, ctl);
        if (n >= 0)
            maybe_ahead(env, m, off, off + len, ctl);
        return n;
    }
    split_read(env, m, off, len, ctl);
    while (done < len) {
        if (atomic_load(&st->why)) /* a failed member's pieces are not served either */
            return -EIO;
        uint64_t q = (off + done) / piece;
        struct cache_entry *e;
        int rc = cache_get(env->cache, m->idx, q, reader_cache_how(ctl), &e);
        if (rc == 0)
            rc = reader_decodes(ctl) ? produce(env, m, q, e, ctl) : -EAGAIN;
        if (rc < 0)
            return rc;
        ssize_t n = reader_serve_entry(env, ctl, e, q, buf + done, len - done, off + done);
        if (n < 0)
            return n;
        done += (size_t)n;
    }
    maybe_ahead(env, m, off, off + len, ctl);
    return (ssize_t)done;
}

/* ---- the rest of the interface ---- */

static int sozip_prepare(const struct reader_env *env, const struct reader_member *m,
                         unsigned char *scratch, const struct stop *stop)
{
    struct reader_member inner;
    if (delegated(m, &inner))
        return reader_deflate.prepare(env, &inner, scratch, stop);
    return 1; /* the index came with the archive */
}

static int sozip_save(const struct reader_env *env, const struct reader_member *m, char *why,
                      size_t why_len)
{
    struct reader_member inner;
    return delegated(m, &inner) ? reader_deflate.save(env, &inner, why, why_len) : 0;
}

static void sozip_stats(const struct reader_member *m, struct reader_stats *out)
{
    struct reader_member inner;
    struct sozip_state *st = m->state;
    *out = (struct reader_stats){0};
    if (delegated(m, &inner)) {
        reader_deflate.stats(&inner, out);
    } else if (st) {
        out->indexed = st->usize;
        out->decoded = atomic_load_explicit(&st->decoded, memory_order_relaxed);
        out->checkpoints = st->ix.nchunks;
        out->index_bytes = sizeof *st + st->ix.bytes + st->table_bytes;
        out->sozip_chunk = st->ix.chunk;
    }
}

static const char *sozip_why(const struct reader_member *m)
{
    struct reader_member inner;
    if (delegated(m, &inner))
        return reader_deflate.why(&inner);
    struct sozip_state *st = m->state;
    const char *why = st ? atomic_load(&st->why) : NULL;
    return why ? why : "cannot decode";
}

const struct reader_ops reader_sozip = {
    .read = sozip_read,
    .why = sozip_why,
    .new_state = sozip_new,
    .free_state = sozip_free,
    .prepare = sozip_prepare,
    .save = sozip_save,
    .stats = sozip_stats,
};
