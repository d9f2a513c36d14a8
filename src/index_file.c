/*
 * index_file: see index_file.h. The file format, version 1 (integers little-endian):
 *
 *   header, 128 bytes
 *       0   8  magic "\x89NPZIDX\n" (the high byte and the newline catch text-mode mangling)
 *       8   4  format version (1)
 *      12   4  zero
 *      16  16  archive identity
 *      32   8  member index
 *      40   8  csize      \
 *      48   8  usize       } the member as the central directory says
 *      56   4  CRC-32     /
 *      60   4  CRC-32 of the body
 *      64   8  span
 *      72   8  piece
 *      80   8  indexed_out
 *      88   8  npoints
 *      96   8  npieces
 *     104   8  windows_len: the sum of every point's zlen
 *     112  12  zero
 *     124   4  CRC-32 of header bytes 0..123
 *   body, at 128: npoints point records of 32 bytes, then npieces piece CRC-32s of 4 bytes;
 *     a point record:
 *       0   8  out
 *       8   8  in
 *      16   4  wlen
 *      20   4  zlen
 *      24   4  CRC-32 of the stored window (0 when zlen is 0)
 *      28   1  bits
 *      29   3  zero
 *   windows, at 128 + body length: the stored windows of points 0, 1, ... back to back.
 *   The file ends there: its size is exactly 128 + 32 npoints + 4 npieces + windows_len.
 *
 * Every zero field must be zero, so a valid file has exactly one encoding: saving what was
 * loaded (with the windows read back) writes the same bytes. The CRC-32s guard against
 * accidents (torn copies, bad disks), not against someone forging a file: the loader's bounds
 * checks keep a forged file from doing harm, and the caller checks decoded data against the
 * piece CRCs.
 */
#define _GNU_SOURCE /* mkostemp */
#include "index_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "io.h"
#include "siphash.h"
#include "source.h"

#define MAGIC "\x89NPZIDX\n"
#define MAGIC_LEN 8u
#define FORMAT_VERSION 1u
#define HEADER_LEN 128u
#define POINT_LEN 32u
#define PIECE_CRC_LEN 4u
#define WRITE_BUF (64u << 10)

enum header_field {
    H_VERSION = 8, H_ZERO1 = 12, H_ID = 16, H_MEMBER = 32, H_CSIZE = 40, H_USIZE = 48,
    H_MCRC = 56, H_BODY_CRC = 60, H_SPAN = 64, H_PIECE = 72, H_INDEXED = 80, H_NPOINTS = 88,
    H_NPIECES = 96, H_WINDOWS = 104, H_ZERO2 = 112, H_CRC = 124,
};

enum point_field { P_OUT = 0, P_IN = 8, P_WLEN = 16, P_ZLEN = 20, P_ZCRC = 24, P_BITS = 28,
                   P_ZERO = 29 };

struct ixf {
    int fd;
    char *path;
    struct ixf_member m;
};



static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static uint32_t crc_of(const void *p, size_t n)
{
    return (uint32_t)crc32_z(0, p, n);
}

/* ------------------------------------------------------------------------------------------ */
/* identity */

/* Two fixed keys: one 64-bit SipHash each, 128 bits together. Changing them (or what is
 * hashed) orphans every saved index, so they are part of the format. */
static const struct sipkey identity_keys[2] = {
    {0x6e707a6d6f756e74ull, 0x6964656e74697479ull},
    {0x243f6a8885a308d3ull, 0x13198a2e03707344ull},
};

struct id_hash {
    struct siphash_state s[2];
};

static void id_update(struct id_hash *h, const void *p, size_t n)
{
    for (int i = 0; i < 2; i++)
        siphash_update(&h->s[i], p, n);
}

static void id_u64(struct id_hash *h, uint64_t v)
{
    unsigned char b[8];
    put_le64(b, v);
    id_update(h, b, sizeof b);
}

static int id_file_range(struct id_hash *h, struct source *src, uint64_t off, uint64_t len)
{
    size_t cap = 64u << 10;
    unsigned char *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    int rc = 0;
    while (len > 0 && rc == 0) {
        size_t n = len < cap ? (size_t)len : cap;
        rc = source_read(src, buf, n, off);
        id_update(h, buf, n);
        off += n;
        len -= n;
    }
    free(buf);
    return rc;
}

int ixf_identity_of(struct source *src, const struct zip_archive *za, struct ixf_identity *out)
{
    static const char tag[] = "npzmount archive identity 1";
    struct id_hash h;
    for (int i = 0; i < 2; i++)
        siphash_init(&h.s[i], &identity_keys[i]);
    id_update(&h, tag, sizeof tag);
    id_u64(&h, za->file_size);
    id_u64(&h, za->cd_size);
    int rc = id_file_range(&h, src, za->cd_offset, za->cd_size);
    if (rc < 0)
        return rc;
    id_u64(&h, za->count);
    for (uint64_t i = 0; i < za->count; i++) {
        const struct zip_member *m = &za->members[i];
        id_u64(&h, m->crc32);
        id_u64(&h, m->csize);
        id_u64(&h, m->usize);
        id_u64(&h, m->method);
    }
    put_le64(out->id, siphash_final(&h.s[0]));
    put_le64(out->id + 8, siphash_final(&h.s[1]));
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* names and places */

static int fit(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fit(char *out, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, len, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static void file_name(const struct ixf_identity *id, uint64_t member, char out[64])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[id->id[i] >> 4];
        out[2 * i + 1] = hex[id->id[i] & 15];
    }
    snprintf(out + 32, 32, "-%llu.npzidx", (unsigned long long)member);
}

int ixf_path(const char *dir, const struct ixf_identity *id, uint64_t member, char *out,
             size_t len)
{
    char name[64];
    file_name(id, member, name);
    return fit(out, len, "%s/%s", dir, name);
}

int ixf_default_dir(char *out, size_t len)
{
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg && xdg[0] == '/') /* the XDG spec says relative values are to be ignored */
        return fit(out, len, "%s/npzmount", xdg);
    char buf[16384];
    const char *home = io_home_dir(buf, sizeof buf);
    if (!home)
        return -ENOENT;
    return fit(out, len, "%s/.cache/npzmount", home);
}

/* mkdir -p, with the reason in why. */
static int make_dirs(const char *dir, char *why, size_t len)
{
    if (!dir || !dir[0])
        return io_fail(why, len, -EINVAL, "no index directory given");
    int rc = io_make_dirs(dir);
    if (rc < 0)
        return io_fail(why, len, rc, "cannot use index directory %s: %s", dir, strerror(-rc));
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* the rules every index obeys, on save and on load */

uint64_t ixf_piece_count(uint64_t usize, uint64_t piece, uint64_t indexed_out)
{
    if (piece == 0)
        return 0;
    if (indexed_out >= usize)
        return usize / piece + (usize % piece != 0);
    return indexed_out / piece;
}

/* The scalar fields; on load they are checked before anything is allocated, so that the
 * counts bound what is read. */
static int check_counts(const struct ixf_member *m, char *why, size_t len)
{
    if (m->usize == 0 || m->csize == 0 || m->usize > INT64_MAX || m->csize > INT64_MAX)
        return io_fail(why, len, -EBADMSG, "member sizes out of range");
    if (m->span < IXF_MIN_SPAN || m->span > IXF_MAX_SPAN)
        return io_fail(why, len, -EBADMSG, "span %llu out of range", (unsigned long long)m->span);
    if (m->piece < IXF_MIN_PIECE || m->piece > IXF_MAX_PIECE)
        return io_fail(why, len, -EBADMSG, "piece size %llu out of range",
                    (unsigned long long)m->piece);
    if (m->indexed_out > m->usize)
        return io_fail(why, len, -EBADMSG, "indexes %llu bytes of %llu",
                    (unsigned long long)m->indexed_out, (unsigned long long)m->usize);
    if (m->npoints == 0 || m->npoints > m->usize / IXF_WINDOW + 1)
        return io_fail(why, len, -EBADMSG, "%llu checkpoints for %llu bytes",
                    (unsigned long long)m->npoints, (unsigned long long)m->usize);
    if (m->npieces != ixf_piece_count(m->usize, m->piece, m->indexed_out))
        return io_fail(why, len, -EBADMSG, "%llu piece CRCs, expected %llu",
                    (unsigned long long)m->npieces,
                    (unsigned long long)ixf_piece_count(m->usize, m->piece, m->indexed_out));
    return 0;
}

/* Whether point k is consistent, given the length of its stored window. */
static bool point_ok(const struct ixf_member *m, uint64_t k, uint32_t zlen)
{
    const struct ixf_point *p = &m->pts[k];
    if (k == 0)
        return p->out == 0 && p->in == 0 && p->bits == 0 && p->wlen == 0 && zlen == 0;
    const struct ixf_point *prev = p - 1;
    uint64_t wmax = p->out < IXF_WINDOW ? p->out : IXF_WINDOW;
    return p->out > prev->out && p->in > prev->in && p->out <= m->indexed_out &&
           p->out < m->usize && p->in < m->csize && p->bits <= 7 && p->wlen >= 1 &&
           p->wlen <= wmax && zlen >= 1 && zlen <= IXF_MAX_ZWIN;
}

/* Checks every point. When saving, a window still to be asked for (zwin NULL) is checked once
 * it comes: until then it counts as one of a valid length. */
static int check_points(const struct ixf_member *m, bool saving, char *why, size_t len)
{
    for (uint64_t k = 0; k < m->npoints; k++)
        if (!point_ok(m, k, saving && k > 0 && !m->pts[k].zwin ? 1 : m->pts[k].zlen))
            return io_fail(why, len, -EBADMSG, "checkpoint %llu is inconsistent",
                        (unsigned long long)k);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* encoding */

static void encode_header(unsigned char *h, const struct ixf_identity *id,
                          const struct ixf_member *m, uint64_t windows_len, uint32_t body_crc)
{
    memset(h, 0, HEADER_LEN);
    memcpy(h, MAGIC, MAGIC_LEN);
    put_le32(h + H_VERSION, FORMAT_VERSION);
    memcpy(h + H_ID, id->id, sizeof id->id);
    put_le64(h + H_MEMBER, m->member);
    put_le64(h + H_CSIZE, m->csize);
    put_le64(h + H_USIZE, m->usize);
    put_le32(h + H_MCRC, m->crc32);
    put_le32(h + H_BODY_CRC, body_crc);
    put_le64(h + H_SPAN, m->span);
    put_le64(h + H_PIECE, m->piece);
    put_le64(h + H_INDEXED, m->indexed_out);
    put_le64(h + H_NPOINTS, m->npoints);
    put_le64(h + H_NPIECES, m->npieces);
    put_le64(h + H_WINDOWS, windows_len);
    put_le32(h + H_CRC, crc_of(h, H_CRC));
}

/* The inverse of encode_header for a header whose magic, version and CRC were checked. */
static int decode_header(const unsigned char *h, struct ixf_identity *id, struct ixf_member *m,
                         uint64_t *windows_len, uint32_t *body_crc)
{
    if (!all_zero(h + H_ZERO1, 4) || !all_zero(h + H_ZERO2, H_CRC - H_ZERO2))
        return -EBADMSG;
    memcpy(id->id, h + H_ID, sizeof id->id);
    m->member = le64(h + H_MEMBER);
    m->csize = le64(h + H_CSIZE);
    m->usize = le64(h + H_USIZE);
    m->crc32 = le32(h + H_MCRC);
    *body_crc = le32(h + H_BODY_CRC);
    m->span = le64(h + H_SPAN);
    m->piece = le64(h + H_PIECE);
    m->indexed_out = le64(h + H_INDEXED);
    m->npoints = le64(h + H_NPOINTS);
    m->npieces = le64(h + H_NPIECES);
    *windows_len = le64(h + H_WINDOWS);
    return 0;
}

static void encode_point(unsigned char *b, const struct ixf_point *p, uint32_t zlen,
                         uint32_t zcrc)
{
    memset(b, 0, POINT_LEN);
    put_le64(b + P_OUT, p->out);
    put_le64(b + P_IN, p->in);
    put_le32(b + P_WLEN, p->wlen);
    put_le32(b + P_ZLEN, zlen);
    put_le32(b + P_ZCRC, zcrc);
    b[P_BITS] = p->bits;
}

static int decode_point(const unsigned char *b, struct ixf_point *p)
{
    *p = (struct ixf_point){
        .out = le64(b + P_OUT),
        .in = le64(b + P_IN),
        .wlen = le32(b + P_WLEN),
        .zlen = le32(b + P_ZLEN),
        .zcrc = le32(b + P_ZCRC),
        .bits = b[P_BITS],
    };
    if (!all_zero(b + P_ZERO, POINT_LEN - P_ZERO) || (p->zlen == 0 && p->zcrc != 0))
        return -EBADMSG;
    return 0;
}

static uint64_t body_length(const struct ixf_member *m)
{
    /* No overflow: check_counts bounds npoints by usize / 32 KiB and npieces by usize / 4 KiB. */
    return m->npoints * POINT_LEN + m->npieces * PIECE_CRC_LEN;
}

/* ------------------------------------------------------------------------------------------ */
/* saving */

/* Sequential buffered output that keeps a running CRC-32 of what passed through. */
struct writer {
    int fd;
    int err;
    uint64_t off;
    size_t used;
    uint32_t crc;
    unsigned char buf[WRITE_BUF];
};

static void writer_flush(struct writer *w)
{
    if (w->err == 0 && w->used > 0)
        w->err = io_write_exact(w->fd, w->buf, w->used, w->off);
    w->off += w->used;
    w->used = 0;
}

static void writer_put(struct writer *w, const void *data, size_t len)
{
    const unsigned char *p = data;
    if (len == 0) /* point 0 has no window (data is NULL), and zlib restarts on NULL */
        return;
    w->crc = (uint32_t)crc32_z(w->crc, p, len);
    while (len > 0) {
        if (w->used == WRITE_BUF)
            writer_flush(w);
        size_t n = len < WRITE_BUF - w->used ? len : WRITE_BUF - w->used;
        memcpy(w->buf + w->used, p, n);
        w->used += n;
        p += n;
        len -= n;
    }
}

/* Points w at off, with nothing buffered and a fresh CRC-32. */
static void writer_seek(struct writer *w, uint64_t off)
{
    w->off = off;
    w->used = 0;
    w->crc = 0;
}

/* Writes the windows through w, one at a time, noting each one's length and CRC-32. */
static int write_windows(struct writer *w, const struct ixf_member *m, uint32_t *zlen,
                         uint32_t *zcrc, uint64_t *total)
{
    unsigned char *z = m->window ? malloc(IXF_MAX_ZWIN) : NULL;
    int rc = m->window && !z ? -ENOMEM : 0;
    *total = 0;
    for (uint64_t k = 0; rc == 0 && k < m->npoints; k++) {
        const struct ixf_point *p = &m->pts[k];
        const unsigned char *src = p->zwin;
        int n = (int)p->zlen;
        if (!src && k > 0) {
            n = m->window ? m->window(m->window_ctx, k, z, IXF_MAX_ZWIN) : -EINVAL;
            src = z;
        }
        if (n < 0 || !point_ok(m, k, (uint32_t)n)) {
            rc = n < 0 ? n : -EINVAL;
            break;
        }
        zlen[k] = (uint32_t)n;
        zcrc[k] = n ? crc_of(src, (size_t)n) : 0;
        writer_put(w, src, (size_t)n);
        *total += (uint64_t)n;
    }
    if (rc == 0) {
        writer_flush(w);
        rc = w->err;
    }
    free(z);
    return rc;
}

/* Writes the body: point records (with the windows' lengths and CRCs), then piece CRCs. */
static int write_body(struct writer *w, const struct ixf_member *m, const uint32_t *zlen,
                      const uint32_t *zcrc)
{
    for (uint64_t k = 0; k < m->npoints; k++) {
        unsigned char rec[POINT_LEN];
        encode_point(rec, &m->pts[k], zlen[k], zcrc[k]);
        writer_put(w, rec, sizeof rec);
    }
    for (uint64_t i = 0; i < m->npieces; i++) {
        unsigned char rec[PIECE_CRC_LEN];
        put_le32(rec, m->piece_crc[i]);
        writer_put(w, rec, sizeof rec);
    }
    writer_flush(w);
    return w->err;
}

/* Writes the whole file into fd: windows first (the body holds their lengths and CRCs), then
 * the body, then the header (which holds the body's CRC and the windows' length). */
static int write_index(int fd, const struct ixf_identity *id, const struct ixf_member *m)
{
    uint32_t *zlen = malloc(m->npoints * sizeof *zlen);
    uint32_t *zcrc = malloc(m->npoints * sizeof *zcrc);
    struct writer *w = calloc(1, sizeof *w);
    uint64_t windows_len = 0;
    uint32_t body_crc = 0;
    int rc = zlen && zcrc && w ? 0 : -ENOMEM;
    if (rc == 0) {
        w->fd = fd;
        writer_seek(w, HEADER_LEN + body_length(m));
        rc = write_windows(w, m, zlen, zcrc, &windows_len);
    }
    if (rc == 0) {
        writer_seek(w, HEADER_LEN);
        rc = write_body(w, m, zlen, zcrc);
        body_crc = w->crc;
    }
    free(zlen);
    free(zcrc);
    free(w);
    if (rc < 0)
        return rc;
    unsigned char h[HEADER_LEN];
    encode_header(h, id, m, windows_len, body_crc);
    return io_write_exact(fd, h, sizeof h, 0);
}

static int check_for_save(const struct ixf_member *m, char *why, size_t len)
{
    if (!m->pts || (m->npieces && !m->piece_crc))
        return io_fail(why, len, -EINVAL, "index without tables");
    if (check_counts(m, why, len) < 0 || check_points(m, true, why, len) < 0)
        return -EINVAL;
    for (uint64_t k = 1; k < m->npoints; k++)
        if (!m->pts[k].zwin && !m->window)
            return io_fail(why, len, -EINVAL, "checkpoint %llu has no window",
                        (unsigned long long)k);
    return 0;
}

int ixf_save(const char *dir, const struct ixf_identity *id, const struct ixf_member *m,
             char *why, size_t why_len)
{
    char name[64], path[PATH_MAX], tmp[PATH_MAX];
    int rc = check_for_save(m, why, why_len);
    if (rc < 0)
        return rc;
    rc = make_dirs(dir, why, why_len);
    if (rc < 0)
        return rc;
    file_name(id, m->member, name);
    if (fit(path, sizeof path, "%s/%s", dir, name) < 0 ||
        fit(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, name) < 0)
        return io_fail(why, why_len, -ENAMETOOLONG, "index directory name too long");
    /* A name of its own per writer: two daemons saving the same index never share one. */
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return io_fail(why, why_len, -errno, "cannot create a file in %s: %s", dir,
                    strerror(errno));
    /* No fsync: a file torn by a crash fails its checksums and is ignored, like any damaged
     * one, and an unmount must not wait for the disk (it has to end within a second). */
    rc = write_index(fd, id, m);
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return io_fail(why, why_len, rc, "cannot write %s: %s", path, strerror(-rc));
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* loading */

/* Reads and checks the header: format, then whose index it is, then the counts. */
static int load_header(struct ixf *f, uint64_t size, const struct ixf_identity *id,
                       const struct zip_member *zm, uint64_t member, uint64_t *windows_len,
                       uint32_t *body_crc, char *why, size_t len)
{
    unsigned char h[HEADER_LEN];
    size_t got = size < HEADER_LEN ? (size_t)size : HEADER_LEN;
    int rc = io_read_exact(f->fd, h, got, 0);
    if (rc < 0)
        return io_fail(why, len, rc, "%s: cannot read: %s", f->path, strerror(-rc));
    if (got < MAGIC_LEN || memcmp(h, MAGIC, MAGIC_LEN) != 0)
        return io_fail(why, len, -EBADMSG, "%s: not an npzmount index file", f->path);
    if (got < H_VERSION + 4)
        return io_fail(why, len, -EBADMSG, "%s: truncated (%zu bytes)", f->path, got);
    uint32_t version = le32(h + H_VERSION);
    if (version != FORMAT_VERSION)
        return io_fail(why, len, -ESTALE, "%s: format version %u (this build reads %u)", f->path,
                    version, FORMAT_VERSION);
    if (got < HEADER_LEN)
        return io_fail(why, len, -EBADMSG, "%s: truncated (%zu bytes)", f->path, got);
    struct ixf_identity fid;
    if (crc_of(h, H_CRC) != le32(h + H_CRC) ||
        decode_header(h, &fid, &f->m, windows_len, body_crc) < 0)
        return io_fail(why, len, -EBADMSG, "%s: corrupt header", f->path);
    if (memcmp(fid.id, id->id, sizeof fid.id) != 0)
        return io_fail(why, len, -ESTALE, "%s: made for another archive", f->path);
    if (f->m.member != member)
        return io_fail(why, len, -ESTALE, "%s: made for member %llu, not %llu", f->path,
                    (unsigned long long)f->m.member, (unsigned long long)member);
    if (f->m.crc32 != zm->crc32 || f->m.csize != zm->csize || f->m.usize != zm->usize)
        return io_fail(why, len, -ESTALE, "%s: stale (the member's CRC-32 or sizes differ)",
                    f->path);
    char what[160];
    if (check_counts(&f->m, what, sizeof what) < 0)
        return io_fail(why, len, -EBADMSG, "%s: %s", f->path, what);
    return 0;
}

/* Decodes the body (already checked against its CRC) into the point and piece tables, and
 * places every window in the file. */
static int decode_body(struct ixf *f, const unsigned char *body, uint64_t windows_len,
                       char *why, size_t len)
{
    struct ixf_member *m = &f->m;
    m->pts = calloc(m->npoints, sizeof *m->pts);
    m->piece_crc = malloc(m->npieces ? m->npieces * sizeof *m->piece_crc : 1);
    if (!m->pts || !m->piece_crc)
        return io_fail(why, len, -ENOMEM, "%s: out of memory", f->path);
    uint64_t off = HEADER_LEN + body_length(m), end = off + windows_len;
    for (uint64_t k = 0; k < m->npoints; k++) {
        struct ixf_point *p = &m->pts[k];
        if (decode_point(body + k * POINT_LEN, p) < 0)
            return io_fail(why, len, -EBADMSG, "%s: checkpoint %llu is corrupt", f->path,
                        (unsigned long long)k);
        if (p->zlen > end - off)
            return io_fail(why, len, -EBADMSG, "%s: windows overrun the file", f->path);
        p->file_off = off;
        off += p->zlen;
    }
    if (off != end)
        return io_fail(why, len, -EBADMSG, "%s: windows do not fill their section", f->path);
    const unsigned char *crcs = body + m->npoints * POINT_LEN;
    for (uint64_t i = 0; i < m->npieces; i++)
        m->piece_crc[i] = le32(crcs + i * PIECE_CRC_LEN);
    char what[160];
    if (check_points(m, false, what, sizeof what) < 0)
        return io_fail(why, len, -EBADMSG, "%s: %s", f->path, what);
    return 0;
}

static int load_fd(struct ixf *f, const struct ixf_identity *id, const struct zip_member *zm,
                   uint64_t member, char *why, size_t len)
{
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return io_fail(why, len, -errno, "%s: cannot stat: %s", f->path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return io_fail(why, len, -EBADMSG, "%s: not a regular file", f->path);
    uint64_t size = (uint64_t)st.st_size, windows_len = 0;
    uint32_t body_crc = 0;
    int rc = load_header(f, size, id, zm, member, &windows_len, &body_crc, why, len);
    if (rc < 0)
        return rc;
    uint64_t body_len = body_length(&f->m), want;
    if (__builtin_add_overflow(HEADER_LEN + body_len, windows_len, &want) || want != size)
        return io_fail(why, len, -EBADMSG, "%s: truncated or padded (%llu bytes, expected %llu)",
                    f->path, (unsigned long long)size,
                    (unsigned long long)(HEADER_LEN + body_len + windows_len));
    /* body_len <= size: what is allocated is bounded by what is on disk. */
    unsigned char *body = malloc(body_len);
    if (!body)
        return io_fail(why, len, -ENOMEM, "%s: out of memory", f->path);
    rc = io_read_exact(f->fd, body, body_len, HEADER_LEN);
    if (rc < 0)
        rc = io_fail(why, len, rc, "%s: cannot read: %s", f->path, strerror(-rc));
    else if (crc_of(body, body_len) != body_crc)
        rc = io_fail(why, len, -EBADMSG, "%s: corrupt checkpoint tables", f->path);
    else
        rc = decode_body(f, body, windows_len, why, len);
    free(body);
    return rc;
}

int ixf_load(const char *dir, const struct ixf_identity *id, const struct zip_member *zm,
             uint64_t member, struct ixf **out, char *why, size_t why_len)
{
    char path[PATH_MAX];
    *out = NULL;
    if (ixf_path(dir, id, member, path, sizeof path) < 0)
        return io_fail(why, why_len, -ENAMETOOLONG, "index directory name too long");
    /* O_NONBLOCK: a FIFO planted under the name must not hang the open. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return io_fail(why, why_len, -errno, "%s: %s", path, strerror(errno));
    struct ixf *f = calloc(1, sizeof *f);
    char *copy = strdup(path);
    if (!f || !copy) {
        close(fd);
        free(f);
        free(copy);
        return io_fail(why, why_len, -ENOMEM, "out of memory");
    }
    f->fd = fd;
    f->path = copy;
    int rc = load_fd(f, id, zm, member, why, why_len);
    if (rc < 0) {
        ixf_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

const struct ixf_member *ixf_get(const struct ixf *f)
{
    return &f->m;
}

int ixf_read_window(const struct ixf *f, uint64_t k, unsigned char *zbuf, size_t cap)
{
    if (k >= f->m.npoints)
        return -EINVAL;
    const struct ixf_point *p = &f->m.pts[k];
    if (p->zlen > cap)
        return -ENOBUFS;
    if (p->zlen == 0)
        return 0;
    int rc = io_read_exact(f->fd, zbuf, p->zlen, p->file_off);
    if (rc < 0)
        return rc;
    return crc_of(zbuf, p->zlen) == p->zcrc ? (int)p->zlen : -EBADMSG;
}

void ixf_close(struct ixf *f)
{
    if (!f)
        return;
    close(f->fd);
    free(f->path);
    free(f->m.pts);
    free(f->m.piece_crc);
    free(f);
}

int ixf_drop(const char *dir, const struct ixf_identity *id, uint64_t member)
{
    char path[PATH_MAX];
    if (ixf_path(dir, id, member, path, sizeof path) < 0)
        return -ENAMETOOLONG;
    return unlink(path) < 0 ? -errno : 0;
}

int ixf_drop_loaded(const struct ixf *f)
{
    struct stat mine, now;
    if (fstat(f->fd, &mine) < 0 || stat(f->path, &now) < 0)
        return -errno;
    if (mine.st_dev != now.st_dev || mine.st_ino != now.st_ino)
        return -ESTALE;
    return unlink(f->path) < 0 ? -errno : 0;
}
