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

/* A sidecar (ARCHIVE.npzidx): every saved index of one archive in one file.
 *   header, 64 bytes
 *       0   8  magic "\x89NPZSCI\n"
 *       8   4  format version (1)
 *      12   4  zero
 *      16  16  archive identity
 *      32   8  count: entries in the table
 *      40  20  zero
 *      60   4  CRC-32 of header bytes 0..59
 *   table, at 64: count entries of 24 bytes (member index, offset, length), members strictly
 *     ascending, then the CRC-32 of the entries (4 bytes)
 *   then the index files, each exactly as saved in an index directory (the format above),
 *     at the offsets the table gives, back to back.
 * Each index file inside is checked exactly as a file in a directory is. */
#define SC_MAGIC "\x89NPZSCI\n"
#define SC_HEADER_LEN 64u
#define SC_ENTRY_LEN 24u
enum sidecar_field { SC_VERSION = 8, SC_ZERO1 = 12, SC_ID = 16, SC_COUNT = 32, SC_ZERO2 = 40,
                     SC_CRC = 60 };

enum point_field { P_OUT = 0, P_IN = 8, P_WLEN = 16, P_ZLEN = 20, P_ZCRC = 24, P_BITS = 28,
                   P_ZERO = 29 };

struct ixf {
    struct source *src; /* holds the file's bytes: its own file, or a sidecar's (borrowed) */
    bool own_src;
    uint64_t base;      /* the file's first byte in src */
    char *path;         /* for messages; the file to drop when own_src */
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

/* Writes path atomically: fill(fd, ctx) writes a new temporary file in path's directory
 * (".NAME.XXXXXX"), which then replaces path. shared: readable by all (less the umask), for
 * files other users read; else 0600. */
static int write_atomic(const char *path, bool shared, int (*fill)(int fd, const void *ctx),
                        const void *ctx, char *why, size_t why_len)
{
    char tmp[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path + 1) : 0;
    if (fit(tmp, sizeof tmp, "%.*s.%s.XXXXXX", dir_len, path, path + dir_len) < 0)
        return io_fail(why, why_len, -ENAMETOOLONG, "%s: name too long", path);
    /* A name of its own per writer: two daemons saving the same index never share one. */
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return io_fail(why, why_len, -errno, "cannot create a file next to %s: %s", path,
                    strerror(errno));
    if (shared) {
        mode_t mask = umask(0);
        umask(mask);
        (void)fchmod(fd, 0666 & ~mask);
    }
    /* No fsync: a file torn by a crash fails its checksums and is ignored, like any damaged
     * one, and an unmount must not wait for the disk (it has to end within a second). */
    int rc = fill(fd, ctx);
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

struct index_to_write {
    const struct ixf_identity *id;
    const struct ixf_member *m;
};

static int fill_index(int fd, const void *ctx)
{
    const struct index_to_write *w = ctx;
    return write_index(fd, w->id, w->m);
}

int ixf_save(const char *dir, const struct ixf_identity *id, const struct ixf_member *m,
             char *why, size_t why_len)
{
    char path[PATH_MAX];
    int rc = check_for_save(m, why, why_len);
    if (rc < 0)
        return rc;
    rc = make_dirs(dir, why, why_len);
    if (rc < 0)
        return rc;
    if (ixf_path(dir, id, m->member, path, sizeof path) < 0)
        return io_fail(why, why_len, -ENAMETOOLONG, "index directory name too long");
    struct index_to_write w = {id, m};
    return write_atomic(path, false, fill_index, &w, why, why_len);
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
    int rc = source_read(f->src, h, got, f->base);
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

/* Loads and checks the index file of `size` bytes at f->base in f->src. */
static int load_index(struct ixf *f, uint64_t size, const struct ixf_identity *id,
                      const struct zip_member *zm, uint64_t member, char *why, size_t len)
{
    uint64_t windows_len = 0;
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
    rc = source_read(f->src, body, body_len, f->base + HEADER_LEN);
    if (rc < 0)
        rc = io_fail(why, len, rc, "%s: cannot read: %s", f->path, strerror(-rc));
    else if (crc_of(body, body_len) != body_crc)
        rc = io_fail(why, len, -EBADMSG, "%s: corrupt checkpoint tables", f->path);
    else
        rc = decode_body(f, body, windows_len, why, len);
    free(body);
    return rc;
}

/* The one loader: the index file of `size` bytes at base in src, named `name` in messages.
 * Owns src when own_src, even on failure. */
static int load_at(struct source *src, bool own_src, uint64_t base, uint64_t size,
                   const char *name, const struct ixf_identity *id, const struct zip_member *zm,
                   uint64_t member, struct ixf **out, char *why, size_t why_len)
{
    struct ixf *f = calloc(1, sizeof *f);
    char *copy = strdup(name);
    if (!f || !copy) {
        if (own_src)
            source_close(src);
        free(f);
        free(copy);
        return io_fail(why, why_len, -ENOMEM, "out of memory");
    }
    *f = (struct ixf){.src = src, .own_src = own_src, .base = base, .path = copy};
    int rc = load_index(f, size, id, zm, member, why, why_len);
    if (rc < 0) {
        ixf_close(f);
        return rc;
    }
    *out = f;
    return 0;
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
    struct source *src;
    int rc = source_from_fd(fd, path, &src);
    if (rc < 0)
        return io_fail(why, why_len, rc == -EINVAL ? -EBADMSG : rc, "%s: %s", path,
                       rc == -EINVAL ? "not a regular file" : strerror(-rc));
    return load_at(src, true, 0, src->size, path, id, zm, member, out, why, why_len);
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
    int rc = source_read(f->src, zbuf, p->zlen, f->base + p->file_off);
    if (rc < 0)
        return rc;
    return crc_of(zbuf, p->zlen) == p->zcrc ? (int)p->zlen : -EBADMSG;
}

void ixf_close(struct ixf *f)
{
    if (!f)
        return;
    if (f->own_src)
        source_close(f->src);
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
    if (!f->own_src) /* inside a sidecar, which is not ours to change */
        return -EROFS;
    if (fstat(f->src->fd, &mine) < 0 || stat(f->path, &now) < 0)
        return -errno;
    if (mine.st_dev != now.st_dev || mine.st_ino != now.st_ino)
        return -ESTALE;
    return unlink(f->path) < 0 ? -errno : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* sidecars */

struct sidecar_entry {
    uint64_t member, off, len;
};

struct ixf_sidecar {
    struct source *src;
    uint64_t count;
    struct sidecar_entry *e; /* members strictly ascending */
};

/* The table's bytes for count entries, its CRC-32 included. */
static uint64_t table_length(uint64_t count)
{
    return count * SC_ENTRY_LEN + 4;
}

/* The sidecar being written: the index files found, and where each goes. */
struct sidecar_plan {
    const char *dir;
    const struct ixf_identity *id;
    const struct zip_archive *za;
    uint64_t count;
    struct sidecar_entry *e;
};

/* Copies the index file f (already checked by ixf_load) into fd at off. */
static int copy_index(const struct ixf *f, int fd, uint64_t off)
{
    unsigned char *buf = malloc(WRITE_BUF);
    int rc = buf ? 0 : -ENOMEM;
    for (uint64_t at = 0; rc == 0 && at < f->src->size;) {
        size_t n = f->src->size - at < WRITE_BUF ? (size_t)(f->src->size - at) : WRITE_BUF;
        rc = source_read(f->src, buf, n, at);
        if (rc == 0)
            rc = io_write_exact(fd, buf, n, off + at);
        at += n;
    }
    free(buf);
    return rc;
}

static void encode_sidecar_header(unsigned char *h, const struct ixf_identity *id,
                                  uint64_t count)
{
    memset(h, 0, SC_HEADER_LEN);
    memcpy(h, SC_MAGIC, MAGIC_LEN);
    put_le32(h + SC_VERSION, FORMAT_VERSION);
    memcpy(h + SC_ID, id->id, sizeof id->id);
    put_le64(h + SC_COUNT, count);
    put_le32(h + SC_CRC, crc_of(h, SC_CRC));
}

/* Writes the planned index files, then the table and the header. An index file that changed
 * since it was planned (another writer saved a new one) fails the whole: -EAGAIN. */
static int fill_sidecar(int fd, const void *ctx)
{
    const struct sidecar_plan *p = ctx;
    unsigned char *table = malloc(table_length(p->count));
    int rc = table ? 0 : -ENOMEM;
    for (uint64_t i = 0; rc == 0 && i < p->count; i++) {
        struct sidecar_entry *e = &p->e[i];
        struct ixf *f;
        char why[256];
        if (ixf_load(p->dir, p->id, &p->za->members[e->member], e->member, &f, why,
                     sizeof why) < 0) {
            rc = -EAGAIN;
            break;
        }
        rc = f->src->size == e->len ? copy_index(f, fd, e->off) : -EAGAIN;
        ixf_close(f);
        unsigned char *t = table + i * SC_ENTRY_LEN;
        put_le64(t, e->member);
        put_le64(t + 8, e->off);
        put_le64(t + 16, e->len);
    }
    if (rc == 0) {
        put_le32(table + p->count * SC_ENTRY_LEN, crc_of(table, p->count * SC_ENTRY_LEN));
        rc = io_write_exact(fd, table, table_length(p->count), SC_HEADER_LEN);
    }
    free(table);
    unsigned char h[SC_HEADER_LEN];
    encode_sidecar_header(h, p->id, p->count);
    return rc == 0 ? io_write_exact(fd, h, sizeof h, 0) : rc;
}

/* Finds the members with a valid index file in p->dir, and places them after the table. */
static int plan_sidecar(struct sidecar_plan *p)
{
    p->e = malloc((p->za->count ? p->za->count : 1) * sizeof *p->e);
    if (!p->e)
        return -ENOMEM;
    for (uint64_t i = 0; i < p->za->count; i++) {
        struct ixf *f;
        char why[256];
        if (ixf_load(p->dir, p->id, &p->za->members[i], i, &f, why, sizeof why) == 0) {
            p->e[p->count++] = (struct sidecar_entry){i, 0, f->src->size};
            ixf_close(f);
        }
    }
    uint64_t off = SC_HEADER_LEN + table_length(p->count);
    for (uint64_t i = 0; i < p->count; i++) {
        p->e[i].off = off;
        off += p->e[i].len;
    }
    return 0;
}

int ixf_sidecar_write(const char *path, const char *dir, const struct ixf_identity *id,
                      const struct zip_archive *za, char *why, size_t why_len)
{
    struct sidecar_plan p = {.dir = dir, .id = id, .za = za};
    int rc = plan_sidecar(&p);
    if (rc < 0)
        rc = io_fail(why, why_len, rc, "out of memory");
    else if (p.count == 0)
        rc = io_fail(why, why_len, -ENOENT, "no member has an index to share");
    else
        rc = write_atomic(path, true, fill_sidecar, &p, why, why_len);
    free(p.e);
    return rc;
}

/* Checks the header and reads the table: the whole is bounded by the sidecar's size. */
static int read_sidecar(struct ixf_sidecar *sc, const struct ixf_identity *id, char *why,
                        size_t len)
{
    unsigned char h[SC_HEADER_LEN];
    const char *name = sc->src->name;
    uint64_t size = sc->src->size;
    if (size < SC_HEADER_LEN + 4 || source_read(sc->src, h, sizeof h, 0) < 0 ||
        memcmp(h, SC_MAGIC, MAGIC_LEN) != 0)
        return io_fail(why, len, -EBADMSG, "%s: not an npzmount sidecar index", name);
    if (le32(h + SC_VERSION) != FORMAT_VERSION)
        return io_fail(why, len, -ESTALE, "%s: format version %u (this build reads %u)", name,
                    le32(h + SC_VERSION), FORMAT_VERSION);
    if (crc_of(h, SC_CRC) != le32(h + SC_CRC) || !all_zero(h + SC_ZERO1, 4) ||
        !all_zero(h + SC_ZERO2, SC_CRC - SC_ZERO2))
        return io_fail(why, len, -EBADMSG, "%s: corrupt header", name);
    if (memcmp(h + SC_ID, id->id, sizeof id->id) != 0)
        return io_fail(why, len, -ESTALE, "%s: made for another archive", name);
    sc->count = le64(h + SC_COUNT);
    if (sc->count > (size - SC_HEADER_LEN - 4) / SC_ENTRY_LEN)
        return io_fail(why, len, -EBADMSG, "%s: truncated", name);
    unsigned char *t = malloc(table_length(sc->count));
    sc->e = malloc((sc->count ? sc->count : 1) * sizeof *sc->e);
    int rc = t && sc->e ? source_read(sc->src, t, table_length(sc->count), SC_HEADER_LEN)
                        : -ENOMEM;
    if (rc == 0 && crc_of(t, sc->count * SC_ENTRY_LEN) != le32(t + sc->count * SC_ENTRY_LEN))
        rc = -EBADMSG;
    uint64_t data = SC_HEADER_LEN + table_length(sc->count);
    for (uint64_t i = 0; rc == 0 && i < sc->count; i++) {
        const unsigned char *r = t + i * SC_ENTRY_LEN;
        sc->e[i] = (struct sidecar_entry){le64(r), le64(r + 8), le64(r + 16)};
        if ((i > 0 && sc->e[i].member <= sc->e[i - 1].member) || sc->e[i].off < data ||
            sc->e[i].off > size || sc->e[i].len > size - sc->e[i].off)
            rc = -EBADMSG;
    }
    free(t);
    if (rc < 0)
        return io_fail(why, len, rc, "%s: %s", name,
                    rc == -EBADMSG ? "corrupt table" : strerror(-rc));
    return 0;
}

int ixf_sidecar_open(struct source *src, const struct ixf_identity *id,
                     struct ixf_sidecar **out, char *why, size_t why_len)
{
    struct ixf_sidecar *sc = calloc(1, sizeof *sc);
    if (!sc) {
        source_close(src);
        return io_fail(why, why_len, -ENOMEM, "out of memory");
    }
    sc->src = src;
    int rc = read_sidecar(sc, id, why, why_len);
    if (rc < 0) {
        ixf_sidecar_close(sc);
        return rc;
    }
    *out = sc;
    return 0;
}

int ixf_sidecar_load(const struct ixf_sidecar *sc, const struct ixf_identity *id,
                     const struct zip_member *zm, uint64_t member, struct ixf **out, char *why,
                     size_t why_len)
{
    uint64_t lo = 0, hi = sc->count;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (sc->e[mid].member < member)
            lo = mid + 1;
        else
            hi = mid;
    }
    *out = NULL;
    if (lo == sc->count || sc->e[lo].member != member)
        return io_fail(why, why_len, -ENOENT, "%s: no index of member %llu", sc->src->name,
                    (unsigned long long)member);
    char name[PATH_MAX];
    snprintf(name, sizeof name, "%s (member %llu)", sc->src->name, (unsigned long long)member);
    return load_at(sc->src, false, sc->e[lo].off, sc->e[lo].len, name, id, zm, member, out,
                   why, why_len);
}

void ixf_sidecar_close(struct ixf_sidecar *sc)
{
    if (!sc)
        return;
    source_close(sc->src);
    free(sc->e);
    free(sc);
}
