/*
 * test_index_file: the saved index format (src/index_file.c).
 *
 * The indexes saved here are realistic: a member's data is deflated with zlib, an independent
 * zlib pass with Z_BLOCK finds the block boundaries that become checkpoints (with their input
 * position and leftover bits), and every window is the 32 KiB of data before its checkpoint,
 * compressed with zlib's compress(). What a loaded index must hold is checked against those
 * originals: windows read back must uncompress to the data before their checkpoint, piece
 * CRCs must be zlib's CRC-32 of the data. Damaged files are made by editing bytes at the
 * offsets the format comment in index_file.c documents, with zlib computing the checksums,
 * and archives for the identity tests by a small stored-ZIP writer here, so that no
 * expectation comes from the code under test.
 */
#define _GNU_SOURCE
#include "index_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "source.h"
#include "zipdir.h"

#define KiB 1024u

/* Offsets from the format comment in index_file.c. */
#define F_HEADER 128u
#define F_VERSION 8u
#define F_ZERO1 12u
#define F_ID 16u
#define F_MEMBER 32u
#define F_CSIZE 40u
#define F_USIZE 48u
#define F_MCRC 56u
#define F_BODY_CRC 60u
#define F_SPAN 64u
#define F_PIECE 72u
#define F_INDEXED 80u
#define F_NPOINTS 88u
#define F_NPIECES 96u
#define F_WINDOWS 104u
#define F_ZERO2 112u
#define F_CRC 124u
#define F_POINT 32u
#define FP_OUT 0u
#define FP_IN 8u
#define FP_WLEN 16u
#define FP_ZLEN 20u
#define FP_ZCRC 24u
#define FP_BITS 28u
#define FP_ZERO 29u

/* ------------------------------------------------------------------------------------------ */
/* small helpers */

static uint64_t g_rnd = 0x2545F4914F6CDD1Dull;

static uint64_t rnd(void)
{
    return check_rnd(&g_rnd);
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return get32(p) | (uint64_t)get32(p + 4) << 32;
}

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/npz-ixf.XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_tree(char *dir)
{
    if (dir)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static unsigned char *read_whole(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    unsigned char *buf = malloc((size_t)st.st_size + 1);
    ssize_t n = buf ? pread(fd, buf, (size_t)st.st_size, 0) : -1;
    close(fd);
    if (n != st.st_size) {
        free(buf);
        return NULL;
    }
    *len = (size_t)n;
    return buf;
}

static bool write_whole(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return false;
    bool ok = write(fd, buf, len) == (ssize_t)len;
    return close(fd) == 0 && ok;
}

/* Names in dir other than "." and "..", in one string separated by spaces; count in *n. */
static void list_dir(const char *dir, char *out, size_t len, int *n)
{
    DIR *d = opendir(dir);
    *n = 0;
    out[0] = '\0';
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        (*n)++;
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", used ? " " : "", e->d_name);
    }
    closedir(d);
}

/* A reason must be one non-empty line. */
static bool one_line(const char *why)
{
    return why[0] != '\0' && strchr(why, '\n') == NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* a realistic index */

struct fixture {
    unsigned char *data;           /* the member's content */
    size_t usize;
    unsigned char *z;              /* its raw deflate stream */
    size_t csize;
    struct ixf_point pts[256];
    unsigned char *zwin[256];      /* owned */
    uint32_t piece_crc[256];
    struct ixf_member m;
    struct zip_member zm;
    struct ixf_identity id;
};

/* Float32-looking data (a noisy ramp: numpy-like, compressible by a third or so). */
static unsigned char *gen_data(size_t n)
{
    unsigned char *p = malloc(n);
    for (size_t i = 0; i + 4 <= n; i += 4) {
        float f = (float)(i / 4) * 0.001f + (float)(rnd() >> 40) / (float)(1u << 24);
        memcpy(p + i, &f, 4);
    }
    for (size_t i = n & ~(size_t)3; i < n; i++)
        p[i] = (unsigned char)i;
    return p;
}

static unsigned char *deflate_raw(const unsigned char *in, size_t n, size_t *out_len)
{
    z_stream s = {0};
    if (deflateInit2(&s, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&s, n);
    unsigned char *out = malloc(cap);
    s.next_in = (unsigned char *)in;
    s.avail_in = (uInt)n;
    s.next_out = out;
    s.avail_out = (uInt)cap;
    int rc = deflate(&s, Z_FINISH);
    *out_len = s.total_out;
    deflateEnd(&s);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

/* Records a checkpoint at the first block boundary at least span past the previous one, up to
 * limit bytes of output (zran's rule), each with its window compressed. */
static bool find_points(struct fixture *fx, uint64_t span, uint64_t limit)
{
    z_stream s = {0};
    unsigned char *out = malloc(fx->usize);
    if (!out || inflateInit2(&s, -15) != Z_OK)
        return false;
    s.next_in = fx->z;
    s.avail_in = (uInt)fx->csize;
    s.next_out = out;
    s.avail_out = (uInt)fx->usize;
    fx->pts[0] = (struct ixf_point){0};
    fx->m.npoints = 1;
    int rc = Z_OK;
    while (rc == Z_OK) {
        rc = inflate(&s, Z_BLOCK);
        bool boundary = (s.data_type & 128) && !(s.data_type & 64);
        uint64_t at = s.total_out;
        if (rc != Z_OK || !boundary || at - fx->pts[fx->m.npoints - 1].out < span ||
            at > limit || at >= fx->usize)
            continue;
        struct ixf_point *p = &fx->pts[fx->m.npoints];
        uLongf zl = compressBound(IXF_WINDOW);
        unsigned char *w = malloc(zl);
        uint32_t wlen = at < IXF_WINDOW ? (uint32_t)at : IXF_WINDOW;
        if (compress(w, &zl, out + at - wlen, wlen) != Z_OK)
            return false;
        fx->zwin[fx->m.npoints] = w;
        *p = (struct ixf_point){.out = at, .in = s.total_in, .bits = (uint8_t)(s.data_type & 7),
                                .wlen = wlen, .zlen = (uint32_t)zl, .zwin = w};
        fx->m.npoints++;
    }
    inflateEnd(&s);
    free(out);
    return rc == Z_STREAM_END && fx->m.npoints < 256;
}

/* A member of usize bytes indexed with the given span and piece. complete: indexed_out is
 * usize, else the last checkpoint at or below `limit` is the frontier. */
static struct fixture *fixture_new(size_t usize, uint64_t span, uint64_t piece, bool complete,
                                   uint64_t limit)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    fx->usize = usize;
    fx->data = gen_data(usize);
    fx->z = deflate_raw(fx->data, usize, &fx->csize);
    if (!fx->z || !find_points(fx, span, complete ? usize : limit)) {
        printf("fixture: zlib failed\n");
        abort();
    }
    fx->m.member = 3;
    fx->m.crc32 = (uint32_t)crc32(0, fx->data, (uInt)usize);
    fx->m.csize = fx->csize;
    fx->m.usize = usize;
    fx->m.span = span;
    fx->m.piece = piece;
    fx->m.indexed_out = complete ? usize : fx->pts[fx->m.npoints - 1].out;
    fx->m.pts = fx->pts;
    fx->m.piece_crc = fx->piece_crc;
    /* Pieces that end at or below indexed_out. */
    for (uint64_t i = 0; i * piece < usize; i++) {
        uint64_t end = (i + 1) * piece < usize ? (i + 1) * piece : usize;
        if (end > fx->m.indexed_out)
            break;
        fx->piece_crc[i] = (uint32_t)crc32(0, fx->data + i * piece, (uInt)(end - i * piece));
        fx->m.npieces = i + 1;
    }
    fx->zm = (struct zip_member){.method = ZIP_METHOD_DEFLATED, .crc32 = fx->m.crc32,
                                 .csize = fx->csize, .usize = usize};
    memcpy(fx->id.id, "\x01\x23\x45\x67\x89\xab\xcd\xef\xfe\xdc\xba\x98\x76\x54\x32\x10", 16);
    return fx;
}

static void fixture_free(struct fixture *fx)
{
    for (int i = 0; i < 256; i++)
        free(fx->zwin[i]);
    free(fx->data);
    free(fx->z);
    free(fx);
}

/* The standard fixture: 640 KiB, 64 KiB span, pieces of 100,000 bytes (not a power of two, and
 * the last one short). */
static struct fixture *fixture_std(void)
{
    return fixture_new(640 * KiB, 64 * KiB, 100000, true, 0);
}

static char *index_path(const char *dir, const struct fixture *fx, uint64_t member)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x-%llu"
                     ".npzidx",
                 dir, fx->id.id[0], fx->id.id[1], fx->id.id[2], fx->id.id[3], fx->id.id[4],
                 fx->id.id[5], fx->id.id[6], fx->id.id[7], fx->id.id[8], fx->id.id[9],
                 fx->id.id[10], fx->id.id[11], fx->id.id[12], fx->id.id[13], fx->id.id[14],
                 fx->id.id[15], (unsigned long long)member) < 0)
        abort();
    return p;
}

static int load(const char *dir, const struct fixture *fx, struct ixf **f, char *why, size_t n)
{
    why[0] = '\0';
    return ixf_load(dir, &fx->id, &fx->zm, fx->m.member, f, why, n);
}

/* Loads and expects failure with err (0: any error but -ENOENT) and a one-line reason. */
static bool load_fails(const char *dir, const struct fixture *fx, int err)
{
    struct ixf *f = (struct ixf *)1;
    char why[512];
    int rc = load(dir, fx, &f, why, sizeof why);
    bool ok = CHECK(rc < 0 && rc != -ENOENT) && CHECK(f == NULL) && CHECK(one_line(why));
    if (err)
        ok = CHECK_EQ_I64(rc, err) && ok;
    if (rc == 0)
        ixf_close(f);
    return ok;
}

/* Everything the loaded index holds, against the fixture's originals. */
static void check_loaded(const struct ixf *f, const struct fixture *fx)
{
    const struct ixf_member *m = ixf_get(f);
    CHECK_EQ_U64(m->member, fx->m.member);
    CHECK_EQ_U64(m->crc32, fx->m.crc32);
    CHECK_EQ_U64(m->csize, fx->csize);
    CHECK_EQ_U64(m->usize, fx->usize);
    CHECK_EQ_U64(m->span, fx->m.span);
    CHECK_EQ_U64(m->piece, fx->m.piece);
    CHECK_EQ_U64(m->indexed_out, fx->m.indexed_out);
    if (!CHECK_EQ_U64(m->npoints, fx->m.npoints) || !CHECK_EQ_U64(m->npieces, fx->m.npieces))
        return;
    for (uint64_t i = 0; i < m->npieces; i++) {
        uint64_t end = (i + 1) * m->piece < m->usize ? (i + 1) * m->piece : m->usize;
        CHECK_EQ_U64(m->piece_crc[i],
                     crc32(0, fx->data + i * m->piece, (uInt)(end - i * m->piece)));
    }
    unsigned char zbuf[IXF_MAX_ZWIN], win[IXF_WINDOW];
    for (uint64_t k = 0; k < m->npoints; k++) {
        const struct ixf_point *p = &m->pts[k];
        check_context("point %llu", (unsigned long long)k);
        CHECK_EQ_U64(p->out, fx->pts[k].out);
        CHECK_EQ_U64(p->in, fx->pts[k].in);
        CHECK_EQ_U64(p->bits, fx->pts[k].bits);
        CHECK_EQ_U64(p->wlen, fx->pts[k].wlen);
        CHECK_EQ_U64(p->zlen, fx->pts[k].zlen);
        CHECK(p->zwin == NULL);
        int n = ixf_read_window(f, k, zbuf, sizeof zbuf);
        if (!CHECK_EQ_I64(n, p->zlen))
            continue;
        CHECK_EQ_U64(p->zcrc, crc32(0, zbuf, (uInt)n));
        if (k == 0)
            continue;
        uLongf wl = sizeof win;
        CHECK(uncompress(win, &wl, zbuf, (uLong)n) == Z_OK);
        CHECK_EQ_MEM(win, wl, fx->data + p->out - p->wlen, p->wlen);
    }
    check_context("%s", "");
}

/* Saves fx into dir, checking success; returns the file's path (malloc'd). */
static char *save_ok(const char *dir, const struct fixture *fx)
{
    char why[512] = "";
    int rc = ixf_save(dir, &fx->id, &fx->m, why, sizeof why);
    if (!CHECK_EQ_I64(rc, 0))
        printf("    save: %s\n", why);
    return index_path(dir, fx, fx->m.member);
}

/* Loads fx's index from dir, expecting success, and checks it against the originals. */
static void load_check(const char *dir, const struct fixture *fx)
{
    struct ixf *f = NULL;
    char why[512];
    if (!CHECK_EQ_I64(load(dir, fx, &f, why, sizeof why), 0)) {
        printf("    load: %s\n", why);
        return;
    }
    check_loaded(f, fx);
    ixf_close(f);
}

/* A private directory holding the standard fixture's saved index, and the file's bytes. */
struct saved {
    char *dir;
    struct fixture *fx;
    char *path;
    unsigned char *bytes;
    size_t len;
};

static bool saved_open(struct saved *sv)
{
    sv->dir = make_tmpdir();
    sv->fx = fixture_std();
    sv->path = save_ok(sv->dir, sv->fx);
    sv->bytes = read_whole(sv->path, &sv->len);
    return CHECK(sv->dir != NULL) && CHECK(sv->bytes != NULL);
}

static void saved_close(struct saved *sv)
{
    free(sv->bytes);
    free(sv->path);
    fixture_free(sv->fx);
    rm_tree(sv->dir);
}

/* Recomputes the body and header CRCs of an index file image (after an edit). */
static void fix_crcs(unsigned char *b, size_t len)
{
    uint64_t body = get64(b + F_NPOINTS) * F_POINT + get64(b + F_NPIECES) * 4;
    if (body <= len - F_HEADER)
        put32(b + F_BODY_CRC, (uint32_t)crc32(0, b + F_HEADER, (uInt)body));
    put32(b + F_CRC, (uint32_t)crc32(0, b, F_CRC));
}

/* ------------------------------------------------------------------------------------------ */
/* tests */

static void test_round_trip(void)
{
    char *tmp = make_tmpdir();
    char *dir = NULL;
    if (!CHECK(tmp) || asprintf(&dir, "%s/a/b/c", tmp) < 0)
        return;
    struct fixture *fx = fixture_std();
    CHECK(fx->m.npoints >= 6);
    CHECK_EQ_U64(fx->m.npieces, 7);

    /* A missing directory (and its parents) is created, private. */
    char *path = save_ok(dir, fx);
    struct stat st;
    CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
    CHECK(stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0077) == 0);
    char names[512], want[512];
    int n;
    list_dir(dir, names, sizeof names, &n);
    snprintf(want, sizeof want, "%s", strrchr(path, '/') + 1);
    CHECK_EQ_STR(names, want);

    char got[4096];
    CHECK_EQ_I64(ixf_path(dir, &fx->id, fx->m.member, got, sizeof got), 0);
    CHECK_EQ_STR(got, path);
    CHECK_EQ_I64(ixf_path(dir, &fx->id, fx->m.member, got, strlen(path)), -ENAMETOOLONG);

    load_check(dir, fx);
    /* The encoding is canonical: saving a loaded index (windows read back) gives the same
     * bytes. The file size is what the format comment says. */
    size_t len1 = 0, len2 = 0;
    unsigned char *b1 = read_whole(path, &len1);
    uint64_t wsum = 0;
    for (uint64_t k = 0; k < fx->m.npoints; k++)
        wsum += fx->pts[k].zlen;
    CHECK_EQ_U64(len1, F_HEADER + fx->m.npoints * F_POINT + fx->m.npieces * 4 + wsum);
    struct ixf *f = NULL;
    char why[512];
    if (CHECK_EQ_I64(load(dir, fx, &f, why, sizeof why), 0)) {
        struct ixf_member copy = *ixf_get(f);
        struct ixf_point pts[256];
        static unsigned char wins[256][IXF_MAX_ZWIN];
        for (uint64_t k = 0; k < copy.npoints; k++) {
            pts[k] = copy.pts[k];
            pts[k].zwin = wins[k];
            CHECK(ixf_read_window(f, k, wins[k], IXF_MAX_ZWIN) >= 0);
        }
        copy.pts = pts;
        CHECK_EQ_I64(ixf_save(dir, &fx->id, &copy, why, sizeof why), 0);
        ixf_close(f);
        unsigned char *b2 = read_whole(path, &len2);
        CHECK_EQ_MEM(b2, len2, b1, len1);
        free(b2);
    }
    free(b1);
    free(path);
    free(dir);
    fixture_free(fx);
    rm_tree(tmp);
}

/* Partial indexes: the frontier short of the end, and nothing but the start. */
static void test_partial(void)
{
    char *dir = make_tmpdir();
    struct fixture *fx = fixture_new(640 * KiB, 64 * KiB, 4096, false, 300 * KiB);
    CHECK(fx->m.indexed_out < fx->usize && fx->m.indexed_out > 200 * KiB);
    CHECK_EQ_U64(fx->m.npieces, fx->m.indexed_out / 4096);
    free(save_ok(dir, fx));
    load_check(dir, fx);
    fx->m.npoints = 1;
    fx->m.indexed_out = 0;
    fx->m.npieces = 0;
    free(save_ok(dir, fx));
    load_check(dir, fx);
    fixture_free(fx);
    rm_tree(dir);
}

/* Truncated at every byte of the header and tables, at every window boundary and next to it,
 * and every 61 bytes inside the windows; and one byte too long. */
static void test_truncation(void)
{
    struct saved sv;
    if (!saved_open(&sv))
        return;
    const char *dir = sv.dir, *path = sv.path;
    const struct fixture *fx = sv.fx;
    const unsigned char *orig = sv.bytes;
    size_t len = sv.len;
    size_t tables = F_HEADER + fx->m.npoints * F_POINT + fx->m.npieces * 4;
    static bool cut[1 << 20];
    memset(cut, 0, sizeof cut);
    if (!CHECK(len < sizeof cut))
        return;
    for (size_t i = 0; i <= tables; i++)
        cut[i] = true;
    for (size_t off = tables, k = 0; k < fx->m.npoints; off += fx->pts[k++].zlen) {
        cut[off] = cut[off + 1] = true;
        if (off > 0)
            cut[off - 1] = true;
    }
    for (size_t i = tables; i < len; i += 61)
        cut[i] = true;
    cut[len - 1] = true;
    int fd = open(path, O_WRONLY);
    unsigned tried = 0;
    for (size_t l = len; l-- > 0;) { /* ftruncate only shrinks: no rewrite per length */
        if (!cut[l])
            continue;
        check_context("truncated to %zu of %zu bytes", l, len);
        CHECK(ftruncate(fd, (off_t)l) == 0);
        load_fails(dir, fx, l < 12 ? -EBADMSG : 0);
        tried++;
    }
    check_context("%s", "");
    close(fd);
    CHECK(tried > tables);
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, orig, len);
    longer[len] = 0;
    CHECK(write_whole(path, longer, len + 1));
    load_fails(dir, fx, -EBADMSG);

    /* Truncated after loading: reading a window past the new end fails, it does not serve. */
    CHECK(write_whole(path, orig, len));
    struct ixf *f = NULL;
    char why[512];
    if (CHECK_EQ_I64(load(dir, fx, &f, why, sizeof why), 0)) {
        CHECK(truncate(path, (off_t)(len - 1)) == 0);
        unsigned char zbuf[IXF_MAX_ZWIN];
        CHECK_EQ_I64(ixf_read_window(f, fx->m.npoints - 1, zbuf, sizeof zbuf), -EIO);
        CHECK(ixf_read_window(f, 1, zbuf, sizeof zbuf) > 0);
        ixf_close(f);
    }
    free(longer);
    saved_close(&sv);
}

static bool flip(int fd, size_t off, int bit)
{
    unsigned char c;
    if (pread(fd, &c, 1, (off_t)off) != 1)
        return false;
    c ^= (unsigned char)(1u << bit);
    return pwrite(fd, &c, 1, (off_t)off) == 1;
}

/* Every bit of the header and tables, flipped alone, makes the file unusable; a flipped bit
 * in a window is caught when that window is read, and only that one. */
static void test_bit_flips(void)
{
    struct saved sv;
    if (!saved_open(&sv))
        return;
    const char *dir = sv.dir, *path = sv.path;
    const struct fixture *fx = sv.fx;
    size_t tables = F_HEADER + fx->m.npoints * F_POINT + fx->m.npieces * 4;
    int fd = open(path, O_RDWR);
    for (size_t off = 0; off < tables; off++) {
        for (int bit = 0; bit < 8; bit++) {
            check_context("bit %d of byte %zu", bit, off);
            CHECK(flip(fd, off, bit));
            load_fails(dir, fx, 0);
            CHECK(flip(fd, off, bit));
        }
    }
    check_context("%s", "");
    struct ixf *f = NULL;
    char why[512];
    if (!CHECK_EQ_I64(load(dir, fx, &f, why, sizeof why), 0))
        return;
    unsigned char zbuf[IXF_MAX_ZWIN];
    const struct ixf_member *m = ixf_get(f);
    for (uint64_t k = 1; k < m->npoints; k++) {
        uint64_t zl = m->pts[k].zlen;
        uint64_t spots[] = {0, 1, zl / 3, zl / 2, zl - 2, zl - 1};
        for (size_t i = 0; i < sizeof spots / sizeof spots[0]; i++) {
            int bit = (int)(rnd() % 8);
            size_t off = m->pts[k].file_off + spots[i];
            check_context("window %llu, bit %d of byte %llu", (unsigned long long)k, bit,
                          (unsigned long long)spots[i]);
            CHECK(flip(fd, off, bit));
            CHECK_EQ_I64(ixf_read_window(f, k, zbuf, sizeof zbuf), -EBADMSG);
            CHECK_EQ_I64(ixf_read_window(f, k - 1, zbuf, sizeof zbuf), m->pts[k - 1].zlen);
            if (k + 1 < m->npoints)
                CHECK_EQ_I64(ixf_read_window(f, k + 1, zbuf, sizeof zbuf), m->pts[k + 1].zlen);
            CHECK(flip(fd, off, bit));
            CHECK_EQ_I64(ixf_read_window(f, k, zbuf, sizeof zbuf), zl);
        }
    }
    check_context("%s", "");
    CHECK_EQ_I64(ixf_read_window(f, m->npoints, zbuf, sizeof zbuf), -EINVAL);
    CHECK_EQ_I64(ixf_read_window(f, 1, zbuf, m->pts[1].zlen - 1), -ENOBUFS);
    CHECK_EQ_I64(ixf_read_window(f, 0, zbuf, 0), 0);
    ixf_close(f);
    close(fd);
    saved_close(&sv);
}

/* Edits the saved file with fn, fixes the checksums, and expects the load to fail with err. */
static void edited_fails(const char *dir, const struct fixture *fx, const unsigned char *orig,
                         size_t len, void (*fn)(unsigned char *b), int err,
                         const char *what)
{
    check_context("%s", what);
    char *path = index_path(dir, fx, fx->m.member);
    unsigned char *b = malloc(len);
    memcpy(b, orig, len);
    fn(b);
    fix_crcs(b, len);
    CHECK(write_whole(path, b, len));
    load_fails(dir, fx, err);
    CHECK(write_whole(path, orig, len));
    free(b);
    free(path);
    check_context("%s", "");
}

static unsigned char *point_rec(unsigned char *b, uint64_t k)
{
    return b + F_HEADER + k * F_POINT;
}

static void e_version(unsigned char *b) { put32(b + F_VERSION, 2); }
static void e_zero1(unsigned char *b) { b[F_ZERO1 + 2] = 1; }
static void e_zero2(unsigned char *b) { b[F_ZERO2 + 11] = 0x80; }
static void e_span0(unsigned char *b) { put64(b + F_SPAN, 0); }
static void e_span_huge(unsigned char *b) { put64(b + F_SPAN, 1ull << 31); }
static void e_piece0(unsigned char *b) { put64(b + F_PIECE, 0); }
static void e_piece_small(unsigned char *b) { put64(b + F_PIECE, 4095); }
static void e_indexed_past(unsigned char *b)
{
    put64(b + F_INDEXED, get64(b + F_USIZE) + 1);
}
static void e_npoints0(unsigned char *b) { put64(b + F_NPOINTS, 0); }
static void e_npoints_huge(unsigned char *b)
{
    put64(b + F_NPOINTS, UINT64_MAX / 16);
}
static void e_npoints_dense(unsigned char *b)
{
    put64(b + F_NPOINTS, get64(b + F_USIZE) / IXF_WINDOW + 2);
}
static void e_npieces(unsigned char *b)
{
    put64(b + F_NPIECES, get64(b + F_NPIECES) - 1);
}
static void e_windows_len(unsigned char *b)
{
    put64(b + F_WINDOWS, get64(b + F_WINDOWS) + 1);
}
static void e_windows_wrap(unsigned char *b)
{
    put64(b + F_WINDOWS, UINT64_MAX - 100);
}
static void e_p0_out(unsigned char *b) { put64(point_rec(b, 0) + FP_OUT, 1); }
static void e_p0_in(unsigned char *b) { put64(point_rec(b, 0) + FP_IN, 1); }
static void e_p0_bits(unsigned char *b) { point_rec(b, 0)[FP_BITS] = 1; }
static void e_p0_zcrc(unsigned char *b) { put32(point_rec(b, 0) + FP_ZCRC, 5); }
static void e_p0_wlen(unsigned char *b)
{
    put32(point_rec(b, 0) + FP_WLEN, 1);
}
static void e_out_order(unsigned char *b)
{
    put64(point_rec(b, 2) + FP_OUT, get64(point_rec(b, 1) + FP_OUT));
}
static void e_in_order(unsigned char *b)
{
    put64(point_rec(b, 2) + FP_IN, get64(point_rec(b, 1) + FP_IN) - 1);
}
static void e_in_past(unsigned char *b)
{
    unsigned char *last = point_rec(b, get64(b + F_NPOINTS) - 1);
    put64(last + FP_IN, get64(b + F_CSIZE));
}
static void e_out_past(unsigned char *b)
{
    unsigned char *last = point_rec(b, get64(b + F_NPOINTS) - 1);
    put64(last + FP_OUT, get64(b + F_USIZE));
}
static void e_bits8(unsigned char *b) { point_rec(b, 1)[FP_BITS] = 8; }
static void e_pad(unsigned char *b) { point_rec(b, 1)[FP_ZERO + 2] = 1; }
static void e_wlen_big(unsigned char *b)
{
    put32(point_rec(b, 1) + FP_WLEN, IXF_WINDOW + 1);
}
static void e_wlen0(unsigned char *b) { put32(point_rec(b, 1) + FP_WLEN, 0); }
/* Moves bytes between two windows: the total stays, the extents shift. */
static void e_zlen_shift(unsigned char *b)
{
    put32(point_rec(b, 1) + FP_ZLEN, get32(point_rec(b, 1) + FP_ZLEN) + 1);
    put32(point_rec(b, 2) + FP_ZLEN, get32(point_rec(b, 2) + FP_ZLEN) - 1);
}
static void e_zlen0(unsigned char *b)
{
    uint32_t z = get32(point_rec(b, 1) + FP_ZLEN);
    put32(point_rec(b, 1) + FP_ZLEN, 0);
    put32(point_rec(b, 1) + FP_ZCRC, 0);
    put32(point_rec(b, 2) + FP_ZLEN, get32(point_rec(b, 2) + FP_ZLEN) + z);
}
static void e_zlen_huge(unsigned char *b)
{
    put32(point_rec(b, 1) + FP_ZLEN, UINT32_MAX);
}
static void e_member(unsigned char *b) { put64(b + F_MEMBER, 4); }
static void e_identity(unsigned char *b) { b[F_ID + 15] ^= 1; }
static void e_crc(unsigned char *b) { put32(b + F_MCRC, get32(b + F_MCRC) + 1); }
static void e_csize(unsigned char *b) { put64(b + F_CSIZE, get64(b + F_CSIZE) + 1); }
static void e_usize(unsigned char *b) { put64(b + F_USIZE, get64(b + F_USIZE) - 1); }

/* Files whose checksums are right but whose content breaks a rule: every rule is enforced,
 * not only the checksums. */
static void test_consistent_checksums(void)
{
    struct saved sv;
    if (!saved_open(&sv))
        return;
    const char *dir = sv.dir, *path = sv.path;
    const struct fixture *fx = sv.fx;
    const unsigned char *orig = sv.bytes;
    size_t len = sv.len;
    static const struct {
        void (*fn)(unsigned char *);
        int err;
        const char *what;
    } cases[] = {
        {e_version, -ESTALE, "another format version"},
        {e_zero1, -EBADMSG, "reserved header bytes (1)"},
        {e_zero2, -EBADMSG, "reserved header bytes (2)"},
        {e_span0, -EBADMSG, "span 0"},
        {e_span_huge, -EBADMSG, "span 2 GiB"},
        {e_piece0, -EBADMSG, "piece 0"},
        {e_piece_small, -EBADMSG, "piece 4095"},
        {e_indexed_past, -EBADMSG, "indexed past the end"},
        {e_npoints0, -EBADMSG, "no points"},
        {e_npoints_huge, -EBADMSG, "2^60 points"},
        {e_npoints_dense, -EBADMSG, "more than one point per 32 KiB"},
        {e_npieces, -EBADMSG, "a piece CRC missing"},
        {e_windows_len, -EBADMSG, "windows length one more"},
        {e_windows_wrap, -EBADMSG, "windows length wrapping around"},
        {e_p0_out, -EBADMSG, "point 0 not at 0"},
        {e_p0_in, -EBADMSG, "point 0 not at input 0"},
        {e_p0_bits, -EBADMSG, "point 0 with bits"},
        {e_p0_wlen, -EBADMSG, "point 0 with a window length"},
        {e_p0_zcrc, -EBADMSG, "point 0 with a window CRC"},
        {e_out_order, -EBADMSG, "out not ascending"},
        {e_in_order, -EBADMSG, "in not ascending"},
        {e_in_past, -EBADMSG, "in at csize"},
        {e_out_past, -EBADMSG, "out at usize"},
        {e_bits8, -EBADMSG, "bits 8"},
        {e_pad, -EBADMSG, "point padding"},
        {e_wlen_big, -EBADMSG, "window longer than 32 KiB"},
        {e_wlen0, -EBADMSG, "empty window"},
        {e_zlen0, -EBADMSG, "empty stored window"},
        {e_zlen_huge, -EBADMSG, "stored window of 4 GiB"},
        {e_member, -ESTALE, "another member"},
        {e_identity, -ESTALE, "another archive"},
        {e_crc, -ESTALE, "stale: CRC-32"},
        {e_csize, -ESTALE, "stale: csize"},
        {e_usize, -ESTALE, "stale: usize"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        edited_fails(dir, fx, orig, len, cases[i].fn, cases[i].err, cases[i].what);

    /* A window moved between neighbours keeps every count right: it loads, and the windows
     * no longer match their CRCs. */
    unsigned char *b = malloc(len);
    memcpy(b, orig, len);
    e_zlen_shift(b);
    fix_crcs(b, len);
    CHECK(write_whole(path, b, len));
    struct ixf *f = NULL;
    char why[512];
    if (CHECK_EQ_I64(load(dir, fx, &f, why, sizeof why), 0)) {
        unsigned char zbuf[IXF_MAX_ZWIN];
        CHECK_EQ_I64(ixf_read_window(f, 1, zbuf, sizeof zbuf), -EBADMSG);
        CHECK_EQ_I64(ixf_read_window(f, 2, zbuf, sizeof zbuf), -EBADMSG);
        ixf_close(f);
    }
    /* Another version is reported as such even when its header is laid out differently (the
     * checksum is not where version 1 has it). */
    memcpy(b, orig, len);
    put32(b + F_VERSION, 7);
    CHECK(write_whole(path, b, len));
    CHECK(load(dir, fx, &f, why, sizeof why) == -ESTALE && strstr(why, "version 7"));
    free(b);
    saved_close(&sv);
}

/* The loader compares the file with what the caller knows: another member's file, a stale one
 * (the archive was rewritten with other data), and a file under the wrong name. */
static void test_stale_and_other_member(void)
{
    struct saved sv;
    if (!saved_open(&sv))
        return;
    const char *dir = sv.dir, *path = sv.path;
    const struct fixture *fx = sv.fx;
    char why[512];
    struct ixf *f = NULL;

    struct fixture other = *fx;
    other.zm.crc32 ^= 0x10;
    load_fails(dir, &other, -ESTALE);
    other = *fx;
    other.zm.usize += 1;
    load_fails(dir, &other, -ESTALE);
    other = *fx;
    other.zm.csize -= 1;
    load_fails(dir, &other, -ESTALE);

    /* Member 3's file under member 4's name. */
    other = *fx;
    other.m.member = 4;
    char *path4 = index_path(dir, fx, 4);
    CHECK(rename(path, path4) == 0);
    CHECK_EQ_I64(load(dir, fx, &f, why, sizeof why), -ENOENT);
    CHECK(one_line(why));
    load_fails(dir, &other, -ESTALE);
    CHECK(rename(path4, path) == 0);
    CHECK_EQ_I64(load(dir, fx, &f, why, sizeof why), 0);
    ixf_close(f);

    /* Something that is not a regular file under the name: refused at once (a FIFO must not
     * block the open). */
    CHECK(unlink(path) == 0);
    CHECK(mkfifo(path, 0600) == 0);
    load_fails(dir, fx, -EBADMSG);
    CHECK(unlink(path) == 0);
    CHECK(mkdir(path, 0700) == 0);
    load_fails(dir, fx, 0);
    CHECK(rmdir(path) == 0);
    CHECK(write_whole(path, "hello", 5));
    load_fails(dir, fx, -EBADMSG);
    free(path4);
    saved_close(&sv);
}

/* ------------------------------------------------------------------------------------------ */
/* identity, from real archives */

struct zentry {
    const char *name;
    const unsigned char *data;
    size_t len;
};

/* A stored-only ZIP (APPNOTE 4.3): local headers with data, central directory, end record.
 * Returns the archive's length; *cd_off and *cd_len say where its central directory is. */
static size_t make_zip(unsigned char *out, const struct zentry *e, int n, uint16_t dos_date,
                       size_t *cd_off, size_t *cd_len)
{
    size_t pos = 0, offs[8];
    for (int i = 0; i < n; i++) {
        unsigned char *h = out + pos;
        size_t nl = strlen(e[i].name);
        uint32_t crc = (uint32_t)crc32(0, e[i].data, (uInt)e[i].len);
        memset(h, 0, 30);
        put32(h, 0x04034b50);
        h[4] = 20;
        h[12] = (unsigned char)dos_date, h[13] = (unsigned char)(dos_date >> 8);
        put32(h + 14, crc);
        put32(h + 18, (uint32_t)e[i].len);
        put32(h + 22, (uint32_t)e[i].len);
        h[26] = (unsigned char)nl;
        memcpy(h + 30, e[i].name, nl);
        memcpy(h + 30 + nl, e[i].data, e[i].len);
        offs[i] = pos;
        pos += 30 + nl + e[i].len;
    }
    *cd_off = pos;
    for (int i = 0; i < n; i++) {
        unsigned char *c = out + pos;
        size_t nl = strlen(e[i].name);
        memset(c, 0, 46);
        put32(c, 0x02014b50);
        c[4] = 20, c[6] = 20;
        c[14] = (unsigned char)dos_date, c[15] = (unsigned char)(dos_date >> 8);
        put32(c + 16, (uint32_t)crc32(0, e[i].data, (uInt)e[i].len));
        put32(c + 20, (uint32_t)e[i].len);
        put32(c + 24, (uint32_t)e[i].len);
        c[28] = (unsigned char)nl;
        put32(c + 42, (uint32_t)offs[i]);
        memcpy(c + 46, e[i].name, nl);
        pos += 46 + nl;
    }
    *cd_len = pos - *cd_off;
    unsigned char *eo = out + pos;
    memset(eo, 0, 22);
    put32(eo, 0x06054b50);
    eo[8] = eo[10] = (unsigned char)n;
    put32(eo + 12, (uint32_t)*cd_len);
    put32(eo + 16, (uint32_t)*cd_off);
    return pos + 22;
}

/* The identity of the archive in buf, written to path and read with zip_open. */
static bool identity_of(const char *path, const unsigned char *buf, size_t len,
                        struct ixf_identity *id, struct zip_archive *za)
{
    char msg[256];
    if (!CHECK(write_whole(path, buf, len)))
        return false;
    struct source *src = NULL;
    bool ok = CHECK_EQ_I64(source_open(path, NULL, &src, msg, sizeof msg), 0) &&
              CHECK_EQ_I64(zip_open(src, za, msg, sizeof msg), 0) &&
              CHECK_EQ_I64(ixf_identity_of(src, za, id), 0);
    zip_close(za);
    source_close(src);
    return ok;
}

static bool same_id(const struct ixf_identity *a, const struct ixf_identity *b)
{
    return memcmp(a->id, b->id, sizeof a->id) == 0;
}

static void test_identity(void)
{
    char *dir = make_tmpdir();
    char *pa = NULL, *pb = NULL;
    if (asprintf(&pa, "%s/a.npz", dir) < 0 || asprintf(&pb, "%s/copy/b.npz", dir) < 0)
        return;
    char *sub = strndup(pb, (size_t)(strrchr(pb, '/') - pb));
    CHECK(mkdir(sub, 0700) == 0);
    free(sub);

    unsigned char x[3000], y[5000], y2[5000];
    for (size_t i = 0; i < sizeof x; i++)
        x[i] = (unsigned char)(i * 7);
    for (size_t i = 0; i < sizeof y; i++)
        y[i] = (unsigned char)(i * 13 + 1);
    memcpy(y2, y, sizeof y);
    y2[4000] ^= 0x40;
    struct zentry base[] = {{"x.npy", x, sizeof x}, {"y.npy", y, sizeof y}};
    struct zentry data2[] = {{"x.npy", x, sizeof x}, {"y.npy", y2, sizeof y2}};
    struct zentry name2[] = {{"x.npy", x, sizeof x}, {"z.npy", y, sizeof y}};
    static unsigned char za_buf[16384], zb_buf[16384];
    size_t cd_off, cd_len, cd_off2, cd_len2;
    size_t la = make_zip(za_buf, base, 2, 0x5021, &cd_off, &cd_len);

    struct ixf_identity ia, ib;
    struct zip_archive za;
    /* zipdir records where the central directory is, prepended data included. */
    if (identity_of(pa, za_buf, la, &ia, &za)) {
        CHECK_EQ_U64(za.cd_offset, cd_off);
        CHECK_EQ_U64(za.cd_size, cd_len);
    }
    /* Content, not path: a copy elsewhere has the same identity; reading twice agrees. */
    CHECK(identity_of(pb, za_buf, la, &ib, &za) && same_id(&ia, &ib));
    CHECK(identity_of(pa, za_buf, la, &ib, &za) && same_id(&ia, &ib));

    /* Same size, other data (one byte, so another CRC-32). */
    size_t lb = make_zip(zb_buf, data2, 2, 0x5021, &cd_off2, &cd_len2);
    CHECK_EQ_U64(lb, la);
    CHECK(identity_of(pb, zb_buf, lb, &ib, &za) && !same_id(&ia, &ib));
    /* Same size, another name of the same length. */
    lb = make_zip(zb_buf, name2, 2, 0x5021, &cd_off2, &cd_len2);
    CHECK_EQ_U64(lb, la);
    CHECK(identity_of(pb, zb_buf, lb, &ib, &za) && !same_id(&ia, &ib));
    /* Same size, another timestamp in the central directory. */
    lb = make_zip(zb_buf, base, 2, 0x5022, &cd_off2, &cd_len2);
    CHECK_EQ_U64(lb, la);
    CHECK(identity_of(pb, zb_buf, lb, &ib, &za) && !same_id(&ia, &ib));
    /* The same archive with data prepended (a self-extractor stub) and appended. */
    memcpy(zb_buf, "stub", 4);
    memcpy(zb_buf + 4, za_buf, la);
    if (CHECK(identity_of(pb, zb_buf, la + 4, &ib, &za)) && CHECK(!same_id(&ia, &ib))) {
        CHECK_EQ_U64(za.cd_offset, cd_off + 4);
        CHECK_EQ_U64(za.cd_size, cd_len);
    }
    memcpy(zb_buf, za_buf, la);
    zb_buf[la] = 0;
    CHECK(identity_of(pb, zb_buf, la + 1, &ib, &za) && !same_id(&ia, &ib));

    /* An index saved for archive A and renamed to archive B's name is refused. */
    struct fixture *fx = fixture_std();
    char *idx = NULL;
    if (asprintf(&idx, "%s/idx", dir) < 0)
        return;
    lb = make_zip(zb_buf, data2, 2, 0x5021, &cd_off2, &cd_len2);
    CHECK(identity_of(pb, zb_buf, lb, &ib, &za));
    fx->id = ia;
    char *from = save_ok(idx, fx);
    fx->id = ib;
    char *to = index_path(idx, fx, fx->m.member);
    CHECK(rename(from, to) == 0);
    load_fails(idx, fx, -ESTALE);
    fx->id = ia;
    CHECK(rename(to, from) == 0);
    struct ixf *f = NULL;
    char why[512];
    CHECK_EQ_I64(load(idx, fx, &f, why, sizeof why), 0);
    ixf_close(f);
    free(from);
    free(to);
    free(idx);
    fixture_free(fx);
    free(pa);
    free(pb);
    rm_tree(dir);
}

/* ------------------------------------------------------------------------------------------ */
/* directories, writers, dropping */

static void test_unwritable_dir(void)
{
    char *dir = make_tmpdir();
    struct fixture *fx = fixture_std();
    char *file = NULL, *under = NULL;
    if (asprintf(&file, "%s/plain", dir) < 0 || asprintf(&under, "%s/plain/sub/dir", dir) < 0)
        return;
    CHECK(write_whole(file, "x", 1));
    char why[512] = "";
    /* Fails for root too: a directory cannot be made under a regular file. */
    CHECK_EQ_I64(ixf_save(under, &fx->id, &fx->m, why, sizeof why), -ENOTDIR);
    CHECK(one_line(why) && strstr(why, under));
    why[0] = '\0';
    CHECK_EQ_I64(ixf_save(file, &fx->id, &fx->m, why, sizeof why), -ENOTDIR);
    CHECK(one_line(why));
    CHECK(ixf_save("", &fx->id, &fx->m, why, sizeof why) < 0 && one_line(why));
    struct ixf *f = NULL;
    CHECK(load(under, fx, &f, why, sizeof why) < 0 && f == NULL);
    CHECK(ixf_drop(under, &fx->id, fx->m.member) < 0);
    /* A message buffer too small still ends in a NUL. */
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    CHECK(ixf_save(under, &fx->id, &fx->m, tiny, sizeof tiny) < 0 &&
          memchr(tiny, '\0', sizeof tiny));
    free(file);
    free(under);
    fixture_free(fx);
    rm_tree(dir);
}

/* A save that fails half-way (the file size limit is hit: this fails for root too) leaves no
 * temporary file, and the index saved before it intact. */
static void test_failed_write(void)
{
    struct saved sv;
    if (!saved_open(&sv))
        return;
    const char *dir = sv.dir, *path = sv.path;
    const struct fixture *fx = sv.fx;
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {.rlim_cur = 20000, .rlim_max = 20000};
        signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &rl);
        char why[512] = "";
        int rc = ixf_save(dir, &fx->id, &fx->m, why, sizeof why);
        _exit(rc == -EFBIG && one_line(why) ? 0 : 1);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char names[512];
    int n;
    list_dir(dir, names, sizeof names, &n);
    CHECK_EQ_STR(names, strrchr(path, '/') + 1);
    size_t len2 = 0;
    unsigned char *after = read_whole(path, &len2);
    CHECK_EQ_MEM(after, len2, sv.bytes, sv.len);
    free(after);
    saved_close(&sv);
}

/* Two processes save the same index over and over, at once, with different contents (spans),
 * while a third loads it in a loop: every load sees nothing yet or one whole file, never a
 * torn one, and no temporary file is left. */
static void test_two_writers(void)
{
    enum { ROUNDS = 25 };
    char *dir = make_tmpdir();
    uint64_t seed = g_rnd;
    struct fixture *a = fixture_new(640 * KiB, 64 * KiB, 100000, true, 0);
    g_rnd = seed; /* the same member (same data), indexed with another span */
    struct fixture *b = fixture_new(640 * KiB, 160 * KiB, 100000, true, 0);
    CHECK_EQ_MEM(b->data, b->usize, a->data, a->usize);
    int gate[2];
    CHECK(pipe(gate) == 0);
    pid_t pids[2];
    for (int w = 0; w < 2; w++) {
        pids[w] = fork();
        if (pids[w] == 0) {
            char c;
            close(gate[1]);
            if (read(gate[0], &c, 1) != 0)
                _exit(3);
            const struct fixture *fx = w ? b : a;
            for (int i = 0; i < ROUNDS; i++) {
                char why[512];
                if (ixf_save(dir, &a->id, &fx->m, why, sizeof why) != 0)
                    _exit(1);
            }
            _exit(0);
        }
    }
    close(gate[0]);
    close(gate[1]); /* both start now */
    unsigned loads = 0, seen_a = 0, seen_b = 0, bad = 0;
    int done = 0, status[2] = {0, 0};
    while (done < 2) {
        struct ixf *f = NULL;
        char why[512];
        int rc = load(dir, a, &f, why, sizeof why);
        loads++;
        if (rc == 0) {
            uint64_t span = ixf_get(f)->span;
            seen_a += span == a->m.span;
            seen_b += span == b->m.span;
            ixf_close(f);
        } else if (rc != -ENOENT) {
            if (bad++ == 0)
                printf("    load during writes: %s\n", why);
        }
        for (int w = 0; w < 2; w++)
            if (pids[w] > 0 && waitpid(pids[w], &status[w], WNOHANG) == pids[w]) {
                pids[w] = -1;
                done++;
            }
    }
    CHECK_EQ_U64(bad, 0);
    for (int w = 0; w < 2; w++)
        CHECK(WIFEXITED(status[w]) && WEXITSTATUS(status[w]) == 0);
    char names[512];
    int n;
    list_dir(dir, names, sizeof names, &n);
    CHECK_EQ_I64(n, 1);
    /* Whichever won, it is whole. */
    struct ixf *f = NULL;
    char why[512];
    bool b_won = load(dir, a, &f, why, sizeof why) == 0 && ixf_get(f)->span == b->m.span;
    ixf_close(f);
    load_check(dir, b_won ? b : a);
    printf("    two writers: %u loads, %u of one, %u of the other\n", loads, seen_a, seen_b);
    fixture_free(a);
    fixture_free(b);
    rm_tree(dir);
}

static void test_drop(void)
{
    struct saved sv;
    if (!saved_open(&sv))
        return;
    const char *dir = sv.dir, *path = sv.path;
    const struct fixture *fx = sv.fx;
    struct ixf *f = NULL;
    char why[512];
    CHECK_EQ_I64(ixf_drop(dir, &fx->id, fx->m.member), 0);
    CHECK(access(path, F_OK) != 0);
    CHECK_EQ_I64(load(dir, fx, &f, why, sizeof why), -ENOENT);
    CHECK_EQ_I64(ixf_drop(dir, &fx->id, fx->m.member), -ENOENT);

    /* Dropping a loaded file removes it, unless another save replaced it meanwhile. */
    free(save_ok(dir, fx));
    if (CHECK_EQ_I64(load(dir, fx, &f, why, sizeof why), 0)) {
        free(save_ok(dir, fx));
        CHECK_EQ_I64(ixf_drop_loaded(f), -ESTALE);
        CHECK(access(path, F_OK) == 0);
        ixf_close(f);
    }
    if (CHECK_EQ_I64(load(dir, fx, &f, why, sizeof why), 0)) {
        CHECK_EQ_I64(ixf_drop_loaded(f), 0);
        CHECK(access(path, F_OK) != 0);
        /* The open file stays readable. */
        unsigned char zbuf[IXF_MAX_ZWIN];
        CHECK_EQ_I64(ixf_read_window(f, 1, zbuf, sizeof zbuf), fx->pts[1].zlen);
        ixf_close(f);
    }
    saved_close(&sv);
}

/* ixf_save refuses an index the loader would refuse. */
static void test_save_rejects(void)
{
    char *dir = make_tmpdir();
    struct fixture *fx = fixture_std();
    char why[512];
    struct ixf_member m = fx->m;
    struct ixf_point pts[256];
    memcpy(pts, fx->pts, sizeof pts);
    m.pts = pts;
    pts[2].out = pts[1].out;
    CHECK_EQ_I64(ixf_save(dir, &fx->id, &m, why, sizeof why), -EINVAL);
    CHECK(one_line(why));
    pts[2] = fx->pts[2];
    pts[2].zwin = NULL;
    CHECK_EQ_I64(ixf_save(dir, &fx->id, &m, why, sizeof why), -EINVAL);
    pts[2] = fx->pts[2];
    m.npieces--;
    CHECK_EQ_I64(ixf_save(dir, &fx->id, &m, why, sizeof why), -EINVAL);
    m.npieces++;
    m.indexed_out = m.usize - 1;
    CHECK_EQ_I64(ixf_save(dir, &fx->id, &m, why, sizeof why), -EINVAL);
    m.indexed_out = m.usize;
    m.span = 1000;
    CHECK_EQ_I64(ixf_save(dir, &fx->id, &m, why, sizeof why), -EINVAL);
    char names[512];
    int n;
    list_dir(dir, names, sizeof names, &n);
    CHECK_EQ_I64(n, 0);
    fixture_free(fx);
    rm_tree(dir);
}

static void test_default_dir(void)
{
    char *xdg = getenv("XDG_CACHE_HOME") ? strdup(getenv("XDG_CACHE_HOME")) : NULL;
    char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    char out[256];
    setenv("XDG_CACHE_HOME", "/var/tmp/xdg", 1);
    setenv("HOME", "/home/someone", 1);
    CHECK(ixf_default_dir(out, sizeof out) == 0 && !strcmp(out, "/var/tmp/xdg/npzmount"));
    CHECK_EQ_I64(ixf_default_dir(out, 10), -ENAMETOOLONG);
    setenv("XDG_CACHE_HOME", "relative/cache", 1);
    CHECK(ixf_default_dir(out, sizeof out) == 0 &&
          !strcmp(out, "/home/someone/.cache/npzmount"));
    unsetenv("XDG_CACHE_HOME");
    CHECK(ixf_default_dir(out, sizeof out) == 0 &&
          !strcmp(out, "/home/someone/.cache/npzmount"));
    /* No HOME: the password database's home, an absolute path. */
    unsetenv("HOME");
    if (ixf_default_dir(out, sizeof out) == 0)
        CHECK(out[0] == '/' && strstr(out, "/.cache/npzmount"));
    if (xdg)
        setenv("XDG_CACHE_HOME", xdg, 1);
    if (home)
        setenv("HOME", home, 1);
    free(xdg);
    free(home);
}

/* ------------------------------------------------------------------------------------------ */
/* sidecars */

#define SC_DATA (64u + 24u + 4u) /* header and a one-entry table: the index file starts here */

/* A sidecar opened from path for identity id: 0 or the error of source_open/ixf_sidecar_open. */
static int sidecar_open(const char *path, const struct ixf_identity *id, struct ixf_sidecar **sc)
{
    struct source *src;
    char why[512] = "";
    int rc = source_open(path, NULL, &src, why, sizeof why);
    if (rc == 0)
        rc = ixf_sidecar_open(src, id, sc, why, sizeof why);
    CHECK(rc == 0 || one_line(why));
    return rc;
}

/* The standard fixture's index, saved in a directory, goes into a sidecar verbatim behind its
 * table; loading it back from there gives what ixf_load gives, windows included; a sidecar
 * damaged anywhere in its header or table, cut short, or made for another archive is refused. */
static void test_sidecar(void)
{
    struct saved sv;
    if (!saved_open(&sv))
        return;
    const struct fixture *fx = sv.fx;
    struct zip_member members[6] = {{0}};
    uint64_t me = fx->m.member;
    if (!CHECK(me < 5)) {
        saved_close(&sv);
        return;
    }
    members[me] = fx->zm; /* the others have no index in the directory */
    struct zip_archive za = {.count = 6, .members = members};
    char *path = NULL, why[512] = "";
    if (asprintf(&path, "%s/a.npz.npzidx", sv.dir) < 0)
        abort();
    if (!CHECK_EQ_I64(ixf_sidecar_write(path, sv.dir, &fx->id, &za, why, sizeof why), 0))
        printf("    sidecar: %s\n", why);
    size_t len = 0;
    unsigned char *b = read_whole(path, &len);
    if (!CHECK(b != NULL) || !CHECK_EQ_U64(len, SC_DATA + sv.len))
        goto out;
    CHECK_EQ_MEM(b + SC_DATA, sv.len, sv.bytes, sv.len);
    CHECK_EQ_U64(get64(b + SC_DATA - 4 - 24), me);
    CHECK_EQ_U64(get64(b + SC_DATA - 4 - 16), SC_DATA);
    CHECK_EQ_U64(get64(b + SC_DATA - 4 - 8), sv.len);

    struct ixf_sidecar *sc = NULL;
    struct ixf *f = NULL;
    if (CHECK_EQ_I64(sidecar_open(path, &fx->id, &sc), 0)) {
        if (CHECK_EQ_I64(ixf_sidecar_load(sc, &fx->id, &fx->zm, me, &f, why, sizeof why), 0)) {
            check_loaded(f, fx);
            CHECK_EQ_I64(ixf_drop_loaded(f), -EROFS); /* a shared file is not ours to drop */
            ixf_close(f);
        }
        f = (struct ixf *)1;
        CHECK_EQ_I64(ixf_sidecar_load(sc, &fx->id, &members[me + 1], me + 1, &f, why,
                                      sizeof why), -ENOENT);
        CHECK(f == NULL);
        ixf_sidecar_close(sc);
    }
    CHECK(access(path, F_OK) == 0);

    struct ixf_identity other = fx->id;
    other.id[3] ^= 1;
    CHECK_EQ_I64(sidecar_open(path, &other, &sc), -ESTALE);
    for (size_t at = 0; at < SC_DATA; at++) { /* every byte of the header and the table */
        check_context("flip at %zu", at);
        b[at] ^= 0x04;
        CHECK(write_whole(path, b, len));
        CHECK(sidecar_open(path, &fx->id, &sc) < 0);
        b[at] ^= 0x04;
    }
    for (size_t cut = 0; cut < len; cut += cut < SC_DATA ? 1 : 997) {
        check_context("cut at %zu", cut);
        CHECK(write_whole(path, b, cut));
        if (sidecar_open(path, &fx->id, &sc) < 0)
            continue;
        CHECK(cut >= SC_DATA); /* the table stands: the index inside must be refused */
        CHECK(ixf_sidecar_load(sc, &fx->id, &fx->zm, me, &f, why, sizeof why) < 0);
        ixf_sidecar_close(sc);
    }
    check_context("%s", "");

    /* nothing to share: no file */
    CHECK(unlink(path) == 0);
    CHECK(unlink(sv.path) == 0);
    CHECK_EQ_I64(ixf_sidecar_write(path, sv.dir, &fx->id, &za, why, sizeof why), -ENOENT);
    CHECK(one_line(why));
    CHECK(access(path, F_OK) < 0);
out:
    free(b);
    free(path);
    saved_close(&sv);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN_TEST(test_round_trip);
    RUN_TEST(test_partial);
    RUN_TEST(test_truncation);
    RUN_TEST(test_bit_flips);
    RUN_TEST(test_consistent_checksums);
    RUN_TEST(test_stale_and_other_member);
    RUN_TEST(test_identity);
    RUN_TEST(test_unwritable_dir);
    RUN_TEST(test_failed_write);
    RUN_TEST(test_two_writers);
    RUN_TEST(test_drop);
    RUN_TEST(test_save_rejects);
    RUN_TEST(test_default_dir);
    RUN_TEST(test_sidecar);
    return check_summary("test_index_file");
}
