/*
 * fuzz_inflate: the checkpoint index (inflate_index.h) on its own, through its piece API.
 *
 * Input: a HEADER_LEN-byte parameter block, then the payload.
 *   byte 0  flags: bit 0 mode (0: round trip, 1: raw stream)
 *                  bit 1 (raw) claim the true size (when zlib finds the end of the stream
 *                        within READ_CAP), bit 2 (raw) claim the true CRC
 *                  bits 3-4 (raw) size tweak: 0 none, 1 minus one, 2 plus one,
 *                           3 a 63-bit claim from bytes 8-15 (when not the true size)
 *                  bit 5 no index-only passes (else zindex_advance at random points)
 *                  bit 6 no nowait producers (else nowait at random)
 *                  bit 7 no stop flag (else one is set at random in the middle of calls)
 *   byte 1  span = 32768 + 896 * b  (32 KiB .. 255 KiB)
 *   byte 2  deflate level b % 10, strategy (b / 10) % 5  (round trip)
 *   byte 3  window bits 9 + b % 7, memLevel 1 + (b / 7) % 9 (round trip)
 *   byte 4  flush pattern: low 3 bits pick none / sync / full / partial / block / level
 *           switches, the rest the size of the deflate() calls (round trip)
 *   byte 5  junk bytes in the file before the stream (the source offset)
 *   byte 6  low 4 bits: number of random reads, 1 + b % 16; high 4 bits: the piece size
 *   byte 7  low 2 bits: garbage bytes after the stream inside csize (round trip);
 *           next 2 bits: junk bytes after csize in the file; high 4 bits: the memory budget
 *           of the index (0: 1 MiB, 15: none; small ones force packed windows, thinning)
 *   bytes 8-15  seed of the read offsets; in raw mode also the claimed size (8-11, or 8-15)
 *               and the claimed CRC (12-15)
 *
 * Round trip: the payload is the uncompressed data. The harness deflates it (raw, window
 * bits -9..-15, level and strategy and flushes as above), builds an index over it in a memfd
 * and reads it at random offsets and then from start to end: every call must succeed and
 * every byte must equal the original.
 *
 * Raw: the payload is taken as a deflate stream, with a claimed size and CRC. Calls must
 * return data or -EIO (never crash, hang, or take unbounded memory), and the data must equal
 * what zlib's one-shot inflate of the same bytes gives (never a byte past where it stops);
 * once a call fails, all do; read to its end (or indexed to its end), the member must succeed
 * exactly when the stream is valid with the claimed size and CRC.
 *
 * In both modes every piece any call hands to the sink must be a piece of the member, of the
 * right length, and equal to the reference; one call hands pieces over in increasing order;
 * every buffer taken from the sink is handed back or delivered; the budget is never passed
 * and is all given back when the index is freed; an index-only pass never hands out pieces;
 * a stop flag ends a call with -EINTR within a piece, and the member stays healthy.
 */
#include "fuzz_common.h"

#include <stdbool.h>

#include "inflate_index.h"

#define HEADER_LEN 16
#define READ_CAP (2u << 20) /* raw mode: offsets read stay below this */
#define MAX_READ (512u << 10)

static const size_t piece_sizes[16] = {4096,  4096,  4099,   5000,  6007,  8192,
                                       12289, 16384, 24576,  32768, 32769, 49152,
                                       65536, 100000, 131072, 262144};
static const uint64_t budgets[16] = {1 << 20,   1 << 10,   16 << 10,  33 << 10,
                                     40 << 10,  66 << 10,  100 << 10, 130 << 10,
                                     200 << 10, 300 << 10, 500 << 10, 1 << 20,
                                     2 << 20,   4 << 20,   16 << 20,  0};

static unsigned char *ref_buf; /* READ_CAP + 1 */
static unsigned char *read_buf;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fz_diag_open();
    fz_read_allowances();
    fz_memfd_open("fuzz_inflate");
    ref_buf = malloc(READ_CAP + 1);
    read_buf = malloc(MAX_READ);
    if (!ref_buf || !read_buf)
        abort();
    return 0;
}

/* What the output must look like, and what the sink has seen. */
struct expect {
    const unsigned char *ref;
    size_t made;
    bool open_ended;   /* true: bytes past `made` are unknown (reference capped) */
    bool ended;        /* the reference reached the end of the stream */
    uint64_t usize;    /* what the index was told */
    size_t piece;
    struct budget *mem;
    /* the sink */
    uint64_t want;     /* the piece the current call keeps */
    unsigned char *got;
    size_t got_len;
    uint64_t last_q;   /* the last piece delivered in this call, or UINT64_MAX */
    long outstanding;  /* buffers inside zindex: taken, not yet handed back or delivered */
    unsigned long delivered;
    bool in_advance;   /* no piece may come during an index-only pass */
    atomic_bool *stop;
    unsigned long stop_at; /* set *stop at this delivery (0: never) */
    /* a one-piece memo, as the mount's cache would have it (a sweep in small reads over
     * a piece would otherwise decode it again and again) */
    unsigned char *memo;
    uint64_t memo_q;
    size_t memo_len;
};

static void check_budget(const struct expect *e)
{
    if (e->mem)
        FZ_CHECK(budget_used(e->mem) <= e->mem->limit, "budget: %llu used of %llu",
                 (unsigned long long)budget_used(e->mem), (unsigned long long)e->mem->limit);
}

static void check_range(const struct expect *e, uint64_t off, const unsigned char *p, size_t n,
                        const char *what)
{
    if (!e->open_ended)
        FZ_CHECK(off + n <= e->made, "%s [%llu, +%zu) goes past the %zu bytes zlib produces",
                 what, (unsigned long long)off, n, e->made);
    if (off >= e->made)
        return;
    size_t cmp = e->made - off < n ? e->made - off : n;
    if (memcmp(p, e->ref + off, cmp) != 0) {
        size_t i = 0;
        while (p[i] == e->ref[off + i])
            i++;
        FZ_CHECK(0, "%s [%llu, +%zu): byte %llu is %u, expected %u", what,
                 (unsigned long long)off, n, (unsigned long long)(off + i), p[i],
                 e->ref[off + i]);
    }
}

static unsigned char *sink_buffer(void *ctx)
{
    struct expect *e = ctx;
    check_budget(e);
    unsigned char *p = malloc(e->piece);
    FZ_CHECK(p != NULL, "out of memory");
    e->outstanding++;
    return p;
}

static void sink_unused(void *ctx, unsigned char *buf)
{
    struct expect *e = ctx;
    e->outstanding--;
    free(buf);
}

static void sink_deliver(void *ctx, uint64_t q, unsigned char *buf, size_t len)
{
    struct expect *e = ctx;
    check_budget(e);
    FZ_CHECK(!e->in_advance, "piece %llu delivered by an index-only pass",
             (unsigned long long)q);
    uint64_t start = q * e->piece;
    FZ_CHECK(start < e->usize, "piece %llu past the member's %llu bytes", (unsigned long long)q,
             (unsigned long long)e->usize);
    size_t want = e->usize - start < e->piece ? (size_t)(e->usize - start) : e->piece;
    FZ_CHECK(len == want, "piece %llu of %zu bytes, expected %zu", (unsigned long long)q, len,
             want);
    FZ_CHECK(e->last_q == UINT64_MAX || q > e->last_q, "piece %llu delivered after %llu",
             (unsigned long long)q, (unsigned long long)e->last_q);
    e->last_q = q;
    check_range(e, start, buf, len, "delivered piece");
    e->outstanding--;
    e->delivered++;
    if (e->stop_at && e->delivered >= e->stop_at)
        atomic_store(e->stop, true);
    if (q == e->want) {
        free(e->got);
        e->got = buf;
        e->got_len = len;
    } else {
        free(buf);
    }
}

/* Piece q into e->got (or the memo), through zindex_produce. Returns 0 or its error. */
static int get_piece(struct zindex *zi, struct expect *e, uint64_t q, uint64_t *rng,
                     uint8_t flags, const struct stop *stop)
{
    if (e->memo && e->memo_q == q && !zindex_why(zi))
        return 0;
    struct zindex_sink sink = {sink_buffer, sink_deliver, sink_unused, e};
    bool nowait = !(flags & 0x40) && (fz_rand(rng) & 1);
    e->stop_at =
        !(flags & 0x80) && fz_rand(rng) % 4 == 0 ? e->delivered + 1 + fz_rand(rng) % 3 : 0;
    atomic_store(e->stop, false);
    e->want = q;
    e->last_q = UINT64_MAX;
    unsigned long before = e->delivered;
    int rc = zindex_produce(zi, q, &sink, stop, nowait);
    e->want = UINT64_MAX;
    bool stopped = atomic_load(e->stop);
    e->stop_at = 0;
    atomic_store(e->stop, false);
    check_budget(e);
    FZ_CHECK(rc != -EAGAIN, "nowait produce of %llu gave -EAGAIN with no other thread",
             (unsigned long long)q);
    if (rc == -EINTR) {
        FZ_CHECK(stopped, "produce of %llu gave -EINTR, no stop was set", (unsigned long long)q);
        FZ_CHECK(zindex_why(zi) == NULL, "stopped, yet the member failed: %s", zindex_why(zi));
        FZ_CHECK(e->delivered - before <= 4, "stopped after %lu pieces", e->delivered - before);
    }
    FZ_CHECK(e->outstanding == 0, "%ld buffers not handed back after a produce (%d)",
             e->outstanding, rc);
    if (rc != 0) {
        free(e->got);
        e->got = NULL;
        return rc;
    }
    FZ_CHECK(e->got != NULL, "produce of %llu returned 0 without delivering it",
             (unsigned long long)q);
    free(e->memo);
    e->memo = e->got;
    e->memo_q = q;
    e->memo_len = e->got_len;
    e->got = NULL;
    return 0;
}

/* Reads [off, off + len) into read_buf. Returns 0, or the negative errno of the first
 * failing call (-EINTR calls are retried without the stop flag). */
static int index_read(struct zindex *zi, struct expect *e, uint64_t off, size_t len,
                      uint64_t *rng, uint8_t flags, const struct stop *stop)
{
    size_t done = 0;
    while (done < len) {
        uint64_t at = off + done, q = at / e->piece;
        int rc = get_piece(zi, e, q, rng, flags, stop);
        if (rc == -EINTR)
            continue; /* the stop only sometimes comes: the next try may pass */
        if (rc < 0)
            return rc;
        size_t in = (size_t)(at - q * e->piece);
        FZ_CHECK(in < e->memo_len, "piece %llu of %zu bytes holds no byte %llu",
                 (unsigned long long)q, e->memo_len, (unsigned long long)at);
        size_t take = e->memo_len - in < len - done ? e->memo_len - in : len - done;
        memcpy(read_buf + done, e->memo + in, take);
        done += take;
    }
    return 0;
}

/* A few slices of the index-only pass. Returns its last result. */
static int index_only(struct zindex *zi, struct expect *e, uint64_t *rng, uint8_t flags,
                      const struct stop *stop)
{
    unsigned char *scratch = malloc(e->piece);
    FZ_CHECK(scratch != NULL, "out of memory");
    int rc = 0;
    unsigned calls = 1 + (unsigned)(fz_rand(rng) % 4);
    uint64_t before = zindex_indexed(zi);
    e->in_advance = true;
    for (unsigned i = 0; i < calls && rc == 0; i++) {
        bool stopping = !(flags & 0x80) && fz_rand(rng) % 8 == 0;
        atomic_store(e->stop, stopping);
        rc = zindex_advance(zi, scratch, stop);
        atomic_store(e->stop, false);
        check_budget(e);
        FZ_CHECK(rc != -EAGAIN, "zindex_advance gave -EAGAIN with no other thread");
        FZ_CHECK(rc != -EINTR || stopping, "zindex_advance gave -EINTR, no stop was set");
        if (rc == -EINTR)
            rc = 0;
        FZ_CHECK(rc < 0 || rc == 1 || zindex_indexed(zi) > before || stopping ||
                     (fz_allow_advance_empty && e->usize == 0),
                 "zindex_advance returned 0 without progress (indexed %llu of %llu)",
                 (unsigned long long)zindex_indexed(zi), (unsigned long long)e->usize);
        before = zindex_indexed(zi);
    }
    e->in_advance = false;
    free(scratch);
    return rc;
}

static size_t deflate_payload(const unsigned char *in, size_t n, const uint8_t *h,
                              unsigned char **out)
{
    static const int strategies[5] = {Z_DEFAULT_STRATEGY, Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE,
                                      Z_FIXED};
    static const int flushes[8] = {Z_NO_FLUSH, Z_SYNC_FLUSH, Z_FULL_FLUSH, Z_PARTIAL_FLUSH,
                                   Z_BLOCK,    Z_NO_FLUSH,   Z_NO_FLUSH,   Z_NO_FLUSH};
    int level = h[2] % 10, strategy = strategies[(h[2] / 10) % 5];
    int wbits = 9 + h[3] % 7, memlevel = 1 + (h[3] / 7) % 9;
    int flush = flushes[h[4] & 7];
    bool switch_level = (h[4] & 7) == 5;
    size_t chunk = (size_t)(1 + (h[4] >> 3)) * 4099;

    z_stream s;
    memset(&s, 0, sizeof s);
    FZ_CHECK(deflateInit2(&s, level, Z_DEFLATED, -wbits, memlevel, strategy) == Z_OK,
             "deflateInit2(%d, %d, %d, %d)", level, -wbits, memlevel, strategy);
    size_t cap = deflateBound(&s, n) + 4096, used = 0;
    unsigned char *buf = malloc(cap);
    FZ_CHECK(buf != NULL, "out of memory");
    size_t pos = 0;
    int round = 0;
    for (;;) {
        size_t take = n - pos < chunk ? n - pos : chunk;
        bool last = pos + take == n;
        int mode = last ? Z_FINISH : flush;
        if (switch_level && round > 0) {
            if (cap - used < 4096) {
                cap *= 2;
                buf = realloc(buf, cap);
                FZ_CHECK(buf != NULL, "out of memory");
            }
            s.next_out = buf + used;
            s.avail_out = (uInt)(cap - used);
            int rc = deflateParams(&s, (level + 3 * round) % 10, strategy);
            FZ_CHECK(rc == Z_OK, "deflateParams gave %d", rc);
            used = cap - s.avail_out;
        }
        round++;
        s.next_in = (unsigned char *)in + pos;
        s.avail_in = (uInt)take;
        for (;;) {
            if (cap - used < 4096) {
                cap *= 2;
                buf = realloc(buf, cap);
                FZ_CHECK(buf != NULL, "out of memory");
            }
            s.next_out = buf + used;
            s.avail_out = (uInt)(cap - used);
            int rc = deflate(&s, mode);
            FZ_CHECK(rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR, "deflate gave %d",
                     rc);
            used = cap - s.avail_out;
            if (mode == Z_FINISH ? rc == Z_STREAM_END : s.avail_in == 0 && s.avail_out > 0)
                break;
        }
        pos += take;
        if (last)
            break;
    }
    deflateEnd(&s);
    *out = buf;
    return used;
}

static uint64_t pick_len(uint64_t *rng, uint64_t off, uint64_t limit)
{
    uint64_t len;
    switch (fz_rand(rng) & 3) {
    case 0: len = 1; break;
    case 1: len = fz_range(rng, 1, 64); break;
    default: len = fz_range(rng, 1, MAX_READ); break;
    }
    return len > limit - off ? limit - off : len;
}

/* A failed call: in round trip mode there must be none; in raw mode only -EIO, with a
 * reason, after which the member stays failed. */
static void check_failure(struct zindex *zi, bool raw, int rc, const char *what)
{
    FZ_CHECK(raw, "round trip: %s gave %d (%s)", what, rc,
             zindex_why(zi) ? zindex_why(zi) : "no reason");
    FZ_CHECK(rc == -EIO && zindex_why(zi) != NULL, "%s gave %d, why '%s'", what, rc,
             zindex_why(zi) ? zindex_why(zi) : "(null)");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER_LEN)
        return 0;
    const uint8_t *h = data;
    const unsigned char *payload = data + HEADER_LEN;
    size_t plen = size - HEADER_LEN;
    bool raw = h[0] & 1;
    uint8_t flags = h[0];
    uint64_t span = 32768 + 896u * h[1];
    uint64_t prefix = h[5];
    uint64_t rng = le64_of(h + 8) ^ fz_hash(h, 8);
    unsigned nreads = 1 + (h[6] & 15);
    size_t piece = piece_sizes[h[6] >> 4];
    uint64_t limit_mem = budgets[h[7] >> 4];

    atomic_bool stop_flag = false;
    struct stop stop = {&stop_flag, NULL, NULL};
    struct budget mem;
    budget_init(&mem, limit_mem);
    struct expect e = {.piece = piece, .mem = limit_mem ? &mem : NULL, .want = UINT64_MAX,
                       .stop = &stop_flag};
    struct zindex_source src = {.offset = prefix};
    unsigned char *stream = NULL;
    size_t slen;
    uint64_t limit; /* reads stay below this */

    if (!raw) {
        size_t garbage = h[7] & 3;
        slen = deflate_payload(payload, plen, h, &stream);
        stream = realloc(stream, slen + garbage);
        FZ_CHECK(stream != NULL, "out of memory");
        for (size_t i = 0; i < garbage; i++)
            stream[slen++] = (unsigned char)(0x5A + i);
        e.ref = payload;
        e.made = plen;
        e.open_ended = false;
        e.ended = true;
        src.usize = plen;
        src.crc32 = (uint32_t)crc32(0, payload, (uInt)plen);
        limit = plen;
    } else {
        stream = malloc(plen ? plen : 1);
        FZ_CHECK(stream != NULL, "out of memory");
        memcpy(stream, payload, plen);
        slen = plen;
        size_t made;
        enum fz_inflate_status st = fz_inflate_ref(stream, slen, ref_buf, READ_CAP + 1, &made);
        e.ref = ref_buf;
        e.made = made;
        e.open_ended = st == FZ_CAPPED;
        e.ended = st == FZ_END;
        uint32_t true_crc = (uint32_t)crc32(0, ref_buf, (uInt)made);
        unsigned tweak = (h[0] >> 3) & 3;
        if ((h[0] & 2) && st == FZ_END)
            src.usize = made;
        else if (tweak == 3)
            src.usize = le64_of(h + 8);
        else
            src.usize = le32_of(h + 8) & 0xFFFFFF;
        if (tweak == 1 && src.usize > 0)
            src.usize--;
        else if (tweak == 2)
            src.usize++;
        if (src.usize > INT64_MAX) /* zipdir never lets a larger size through */
            src.usize &= INT64_MAX;
        src.crc32 = (h[0] & 4) ? true_crc : le32_of(h + 12);
        limit = src.usize < READ_CAP ? src.usize : READ_CAP;
    }
    src.csize = slen;
    e.usize = src.usize;
    /* Index-only passes decode up to the end of the member (or of the stream): only where
     * that end is near. */
    bool advancing = !(flags & 0x20) && src.usize <= READ_CAP &&
                     !(fz_allow_advance_empty && src.usize == 0);
    /* Whether the claims hold; meaningful when the reference saw the whole member. A member
     * with neither bytes nor stream (csize 0) is taken as empty and complete whatever its CRC
     * says: the core never decodes it, and no read of it returns a byte. */
    bool known = !e.open_ended || src.usize < e.made;
    bool valid = (e.ended && e.made == src.usize &&
                  (uint32_t)crc32(0, e.ref, (uInt)e.made) == src.crc32) ||
                 (src.csize == 0 && src.usize == 0);

    /* The file: junk, the stream, more junk. */
    size_t trail = (h[7] >> 2) & 3;
    size_t flen = prefix + slen + trail;
    unsigned char *file = malloc(flen ? flen : 1);
    FZ_CHECK(file != NULL, "out of memory");
    memset(file, 0xA5, prefix);
    memcpy(file + prefix, stream, slen);
    memset(file + prefix + slen, 0x3C, trail);
    fz_memfd_write(file, flen, 0);
    free(file);
    free(stream);

    struct zindex_params par = {.span = span, .piece = piece, .mem = e.mem};
    src.archive = fz_source();
    struct zindex *zi = zindex_new(&src, &par);
    if (!zi) {
        source_close(src.archive);
        return 0;
    }
    int failed = 0; /* the first error seen, if any */
    bool swept = limit > 0;
    uint64_t npc = (src.usize + piece - 1) / piece;
    if (advancing && fz_rand(&rng) % 3 == 0) {
        int rc = index_only(zi, &e, &rng, flags, &stop);
        if (rc < 0) {
            check_failure(zi, raw, rc, "an index-only pass");
            failed = rc;
        }
    }
    for (unsigned i = 0; i < nreads && limit > 0; i++) {
        uint64_t off = fz_range(&rng, 0, limit - 1);
        size_t len = (size_t)pick_len(&rng, off, limit);
        int rc = index_read(zi, &e, off, len, &rng, flags, &stop);
        if (rc == -ENOMEM)
            goto out;
        if (failed) {
            FZ_CHECK(rc == -EIO, "read after a failure gave %d", rc);
            continue;
        }
        if (rc < 0) {
            check_failure(zi, raw, rc, "a read");
            failed = rc;
            continue;
        }
        check_range(&e, off, read_buf, len, "read");
        if (advancing && fz_rand(&rng) % 4 == 0) {
            rc = index_only(zi, &e, &rng, flags, &stop);
            if (rc < 0) {
                check_failure(zi, raw, rc, "an index-only pass");
                failed = rc;
            }
        }
    }
    /* A sweep from the start up to the limit, in reads of about a piece. */
    for (uint64_t off = 0; off < limit;) {
        size_t len = (size_t)fz_range(&rng, piece / 2, 2 * piece);
        if (len > MAX_READ)
            len = MAX_READ;
        if (len > limit - off)
            len = (size_t)(limit - off);
        int rc = index_read(zi, &e, off, len, &rng, flags, &stop);
        if (rc == -ENOMEM)
            goto out;
        if (rc < 0) {
            if (!failed)
                check_failure(zi, raw, rc, "a sweep read");
            FZ_CHECK(rc == -EIO, "sweep read gave %d", rc);
            swept = false;
            break;
        }
        FZ_CHECK(!failed, "a call failed with %d, a later sweep read succeeded", failed);
        check_range(&e, off, read_buf, len, "sweep read");
        off += len;
    }
    if (limit == src.usize && limit > 0) {
        /* The whole member was read: the index saw the end of the stream. */
        FZ_CHECK(swept == valid,
                 "reading all %llu bytes %s, but zlib %s (made %zu, crc %08x vs %08x)",
                 (unsigned long long)src.usize, swept ? "succeeded" : "failed",
                 valid ? "decodes it with that size and CRC" : "does not", e.made,
                 (unsigned)crc32(0, e.ref, (uInt)e.made), src.crc32);
        if (swept) {
            FZ_CHECK(zindex_complete(zi), "all read, yet the index is not complete");
            FZ_CHECK(zindex_why(zi) == NULL, "complete, yet why says '%s'", zindex_why(zi));
        }
    }
    if (advancing) {
        /* The pass to its end: complete exactly when the claims hold. */
        int rc = 0;
        for (uint64_t calls = 0; rc == 0 && calls < npc / 64 + 4; calls++)
            rc = index_only(zi, &e, &rng, flags | 0x80, &stop);
        FZ_CHECK(rc != 0, "index-only passes did not finish %llu pieces",
                 (unsigned long long)npc);
        if (known)
            FZ_CHECK((rc == 1) == valid, "the index-only pass gave %d, but zlib %s", rc,
                     valid ? "decodes it with the claimed size and CRC" : "does not");
        FZ_CHECK(rc == 1 || rc == -EIO, "the index-only pass gave %d", rc);
        FZ_CHECK((rc == 1) == zindex_complete(zi), "pass gave %d, complete says %d", rc,
                 zindex_complete(zi));
        if (rc == 1) {
            FZ_CHECK(!failed, "a call failed with %d, the index-only pass completed", failed);
            FZ_CHECK(zindex_indexed(zi) == src.usize, "complete at %llu of %llu",
                     (unsigned long long)zindex_indexed(zi), (unsigned long long)src.usize);
        } else {
            check_failure(zi, raw, rc, "the index-only pass");
            if (npc > 0) {
                rc = get_piece(zi, &e, fz_rand(&rng) % npc, &rng, flags, &stop);
                FZ_CHECK(rc == -EIO || (e.memo && rc == 0), "after a failed pass: %d", rc);
            }
        }
    }
    /* Checkpoints at least a span apart, within what the frontier decoded: the indexed bytes
     * and, when a piece failed, the part of it decoded before the failure. */
    uint64_t points = zindex_points(zi);
    uint64_t reach = zindex_indexed(zi) + (zindex_why(zi) ? piece : 0);
    FZ_CHECK(points >= 1 && (points - 1) * span <= reach,
             "%llu points over %llu bytes at span %llu (why '%s')", (unsigned long long)points,
             (unsigned long long)zindex_indexed(zi), (unsigned long long)span,
             zindex_why(zi) ? zindex_why(zi) : "(null)");
out:
    free(e.memo);
    FZ_CHECK(e.outstanding == 0, "%ld sink buffers never handed back", e.outstanding);
    zindex_free(zi);
    source_close(src.archive);
    FZ_CHECK(budget_used(&mem) == 0, "%llu bytes of budget not given back",
             (unsigned long long)budget_used(&mem));
    return 0;
}
