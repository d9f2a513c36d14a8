/*
 * fuzz_inflate: the checkpoint index (inflate_index.h) on its own.
 *
 * Input: a HEADER_LEN-byte parameter block, then the payload.
 *   byte 0  flags: bit 0 mode (0: round trip, 1: raw stream)
 *                  bit 1 (raw) claim the true size (when zlib finds the end of the stream
 *                        within READ_CAP), bit 2 (raw) claim the true CRC
 *                  bits 3-4 (raw) size tweak: 0 none, 1 minus one, 2 plus one,
 *                           3 a 63-bit claim from bytes 8-15 (when not the true size)
 *                  bits 5-7 reserved for future use
 *   byte 1  span = 32768 + 896 * b  (32 KiB .. 255 KiB)
 *   byte 2  deflate level b % 10, strategy (b / 10) % 5  (round trip)
 *   byte 3  window bits 9 + b % 7, memLevel 1 + (b / 7) % 9 (round trip)
 *   byte 4  flush pattern: low 3 bits pick none / sync / full / partial / block / level
 *           switches, the rest the piece size (round trip)
 *   byte 5  junk bytes in the file before the stream (the source offset)
 *   byte 6  number of random reads, 1 + b % 16
 *   byte 7  low 2 bits: garbage bytes after the stream inside csize (round trip);
 *           next 2 bits: junk bytes after csize in the file
 *   bytes 8-15  seed of the read offsets; in raw mode also the claimed size (8-11, or 8-15)
 *               and the claimed CRC (12-15)
 *
 * Round trip: the payload is the uncompressed data. The harness deflates it (raw, window
 * bits -9..-15, level and strategy and flushes as above), builds an index over it in a memfd
 * and reads it at random offsets and then from start to end: every read must succeed and
 * every byte must equal the original; every chunk the frontier hands to the sink must be the
 * next one, and equal to the original; no chunk but the last may be shorter than the span.
 *
 * Raw: the payload is taken as a deflate stream, with a claimed size and CRC. Reads must
 * return data or -EIO (never crash, hang, or take unbounded memory), and the data must equal
 * what zlib's one-shot inflate of the same bytes gives (never a byte past where it stops);
 * once a read fails, all do; read to its end, the member must succeed exactly when the
 * stream is valid with the claimed size and CRC.
 */
#include "fuzz_common.h"

#include <stdbool.h>

#include "inflate_index.h"

#define HEADER_LEN 16
#define READ_CAP (2u << 20) /* raw mode: offsets read stay below this */
#define MAX_READ (512u << 10)

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

/* What the output must look like: ref[0..made), and whether anything may come past it. */
struct expect {
    const unsigned char *ref;
    size_t made;
    bool open_ended;   /* true: bytes past `made` are unknown (reference capped) */
    bool ended;        /* the reference reached the end of the stream */
    uint64_t span;
    uint64_t next_k;   /* sink: the chunk expected next */
    uint64_t next_out; /* sink: where it starts */
    bool short_seen;   /* sink: a chunk shorter than the span came (it must be the last) */
    bool relaxed;      /* a tolerated known bug happened: failures need not be sticky */
    unsigned char *memo; /* the last chunk decoded (chunk memo_k, memo_len bytes) */
    uint64_t memo_k;
    size_t memo_len;
};

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

static void sink(void *ctx, uint64_t k, unsigned char *data, size_t len)
{
    struct expect *e = ctx;
    FZ_CHECK(k == e->next_k, "sink got chunk %llu, expected %llu", (unsigned long long)k,
             (unsigned long long)e->next_k);
    FZ_CHECK(!e->short_seen, "chunk %llu follows a chunk shorter than the span",
             (unsigned long long)k);
    FZ_CHECK(len > 0 && len <= ZINDEX_MAX_CHUNK, "sink chunk %llu of %zu bytes",
             (unsigned long long)k, len);
    check_range(e, e->next_out, data, len, "sink chunk");
    if (len < e->span)
        e->short_seen = true;
    e->next_k++;
    e->next_out += len;
    free(data);
}

/* Reads [off, off + len) through the index into read_buf, checking every chunk it touches.
 * Returns 0, or the negative errno of the first failing call. */
static int index_read(struct zindex *zi, struct expect *e, uint64_t usize, uint64_t off,
                      size_t len)
{
    size_t done = 0;
    while (done < len) {
        uint64_t at = off + done, k, start, clen;
        int rc = zindex_locate(zi, at, &k, &start, &clen);
        if (rc == 0) {
            rc = zindex_extend(zi, at, sink, e);
            if (rc < 0)
                return rc;
            rc = zindex_locate(zi, at, &k, &start, &clen);
            FZ_CHECK(rc == 1, "extend to %llu returned 0 but locate then gave %d",
                     (unsigned long long)at, rc);
        }
        if (rc < 0)
            return rc;
        FZ_CHECK(rc == 1, "locate returned %d", rc);
        FZ_CHECK(start <= at && at - start < clen && clen <= usize - start,
                 "locate(%llu) gave chunk %llu at %llu, %llu bytes (usize %llu)",
                 (unsigned long long)at, (unsigned long long)k, (unsigned long long)start,
                 (unsigned long long)clen, (unsigned long long)usize);
        FZ_CHECK(k < zindex_points(zi), "locate gave chunk %llu of %llu points",
                 (unsigned long long)k, (unsigned long long)zindex_points(zi));
        if (e->memo && e->memo_k == k) {
            /* The chunk the previous read ended in: reuse it, as the mount's cache would (a
             * sweep in small pieces over a chunk of many MiB would otherwise take minutes). */
            FZ_CHECK(e->memo_len == clen, "chunk %llu was %zu bytes, now %llu",
                     (unsigned long long)k, e->memo_len, (unsigned long long)clen);
            size_t take = clen - (at - start);
            if (take > len - done)
                take = len - done;
            memcpy(read_buf + done, e->memo + (at - start), take);
            done += take;
            continue;
        }
        unsigned char *buf = NULL;
        size_t n = 0;
        rc = zindex_decode(zi, k, &buf, &n);
        if (rc == -ENOMEM)
            return rc;
        if (rc == -EIO && fz_allow_decode_eio && !zindex_why(zi)) {
            e->relaxed = true;
            return rc;
        }
        /* The chunk was indexed, so the frontier decoded it once without error. */
        FZ_CHECK(rc == 0, "decoding indexed chunk %llu gave %d (%s)", (unsigned long long)k, rc,
                 zindex_why(zi) ? zindex_why(zi) : "no reason");
        FZ_CHECK(n == clen, "chunk %llu decoded to %zu bytes, locate said %llu",
                 (unsigned long long)k, n, (unsigned long long)clen);
        check_range(e, start, buf, n, "decoded chunk");
        size_t take = clen - (at - start);
        if (take > len - done)
            take = len - done;
        memcpy(read_buf + done, buf + (at - start), take);
        free(e->memo);
        e->memo = buf;
        e->memo_k = k;
        e->memo_len = n;
        done += take;
    }
    return 0;
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
    size_t piece = (size_t)(1 + (h[4] >> 3)) * 4099;

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
        size_t take = n - pos < piece ? n - pos : piece;
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER_LEN)
        return 0;
    const uint8_t *h = data;
    const unsigned char *payload = data + HEADER_LEN;
    size_t plen = size - HEADER_LEN;
    bool raw = h[0] & 1;
    uint64_t span = 32768 + 896u * h[1];
    uint64_t prefix = h[5];
    uint64_t rng = le64_of(h + 8) ^ fz_hash(h, 8);
    unsigned nreads = 1 + h[6] % 16;

    struct expect e = {.span = span};
    struct zindex_source src = {.fd = fz_memfd, .offset = prefix};
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

    struct zindex *zi = zindex_new(&src, span);
    if (!zi)
        return 0;
    int failed = 0; /* the first error seen, if any */
    if (limit > 0) {
        for (unsigned i = 0; i < nreads; i++) {
            uint64_t off = fz_range(&rng, 0, limit - 1);
            size_t len = (size_t)pick_len(&rng, off, limit);
            int rc = index_read(zi, &e, src.usize, off, len);
            if (rc == -ENOMEM)
                goto out;
            if (failed && !e.relaxed) {
                FZ_CHECK(rc == -EIO, "read after a failure gave %d", rc);
                continue;
            }
            if (rc < 0) {
                FZ_CHECK(raw, "round trip: read [%llu, +%zu) of %llu gave %d (%s)",
                         (unsigned long long)off, len, (unsigned long long)src.usize, rc,
                         zindex_why(zi) ? zindex_why(zi) : "no reason");
                FZ_CHECK(rc == -EIO && (zindex_why(zi) != NULL || e.relaxed),
                         "read gave %d, why '%s'", rc,
                         zindex_why(zi) ? zindex_why(zi) : "(null)");
                failed = rc;
                continue;
            }
            check_range(&e, off, read_buf, len, "read");
        }
        /* A sweep from the start up to the limit, in pieces of about a chunk. */
        bool swept = true;
        for (uint64_t off = 0; off < limit;) {
            size_t len = (size_t)fz_range(&rng, span / 2, 2 * span);
            if (len > MAX_READ)
                len = MAX_READ;
            if (len > limit - off)
                len = (size_t)(limit - off);
            int rc = index_read(zi, &e, src.usize, off, len);
            if (rc == -ENOMEM)
                goto out;
            if (rc < 0) {
                FZ_CHECK(raw, "round trip: sweep read [%llu, +%zu) of %llu gave %d (%s)",
                         (unsigned long long)off, len, (unsigned long long)src.usize, rc,
                         zindex_why(zi) ? zindex_why(zi) : "no reason");
                FZ_CHECK(rc == -EIO && (zindex_why(zi) != NULL || e.relaxed),
                         "sweep gave %d, why '%s'", rc,
                         zindex_why(zi) ? zindex_why(zi) : "(null)");
                swept = false;
                break;
            }
            FZ_CHECK(!failed || e.relaxed, "a read failed with %d, a later sweep read succeeded",
                     failed);
            check_range(&e, off, read_buf, len, "sweep read");
            off += len;
        }
        if (limit == src.usize) {
            /* The whole member was read: the index saw the end of the stream. */
            bool valid = e.ended && e.made == src.usize &&
                         (uint32_t)crc32(0, e.ref, (uInt)e.made) == src.crc32;
            FZ_CHECK(swept == valid,
                     "reading all %llu bytes %s, but zlib %s (made %zu, crc %08x vs %08x)",
                     (unsigned long long)src.usize, swept ? "succeeded" : "failed",
                     valid ? "decodes it with that size and CRC" : "does not",
                     e.made, (unsigned)crc32(0, e.ref, (uInt)e.made), src.crc32);
            if (swept) {
                FZ_CHECK(e.next_out == src.usize, "sink saw %llu of %llu bytes",
                         (unsigned long long)e.next_out, (unsigned long long)src.usize);
                FZ_CHECK(zindex_why(zi) == NULL, "complete, yet why says '%s'",
                         zindex_why(zi));
            }
        }
        uint64_t points = zindex_points(zi);
        FZ_CHECK(points >= 1 && (points - 1) * span <= e.next_out,
                 "%llu points over %llu bytes at span %llu", (unsigned long long)points,
                 (unsigned long long)e.next_out, (unsigned long long)span);
        FZ_CHECK(zindex_memory(zi) >= (points - 1) * ZINDEX_WINDOW, "memory %llu, %llu points",
                 (unsigned long long)zindex_memory(zi), (unsigned long long)points);
    }
out:
    free(e.memo);
    zindex_free(zi);
    return 0;
}
