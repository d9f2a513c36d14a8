/*
 * fuzz_index: the saved-index loader (src/index_file.c), from arbitrary bytes.
 *
 * The input is an index file. The harness takes the archive identity, member number and the
 * member's CRC-32 and sizes from where the format puts them in the header (so that inputs get
 * past the "whose index is this" checks), writes the input under its name in a private
 * directory, and loads it twice: as it is, and with its two checksums recomputed (so that
 * mutations reach the checks behind them). Checked:
 *   - a failure returns a negative errno, no index, and a one-line reason, NUL-terminated
 *     inside a message buffer of 1..64 bytes on the heap (ASan sees any overflow);
 *   - a loaded index obeys every rule index_file.h promises (re-checked here from the header
 *     comment, not with the loader's code), and the input's size is exactly what the format
 *     says it holds;
 *   - every window reads back as the bytes at its place in the input, matching its CRC-32;
 *   - saving the loaded index (with those windows, when they all match their CRCs) writes
 *     exactly the input back: the encoding is canonical, so nothing the loader accepted was
 *     ignored;
 *   - the same file for a member with another CRC-32 is refused (-ESTALE).
 * Memory: the loader may allocate in proportion to the input; -malloc_limit_mb in fuzz.mk
 * catches anything beyond.
 */
#include "fuzz_common.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>

#include "index_file.h"
#include "zipdir.h"

#define HEADER 128u
#define INPUT_CAP (1u << 20)

static char dir[64], out_dir[80];
static unsigned char *patched; /* INPUT_CAP */
static unsigned char *zbuf;    /* IXF_MAX_ZWIN */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void cleanup(void)
{
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fz_diag_open();
    /* tmpfs when there is one: every run writes, fsyncs and renames a file. */
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/fuzz-index.XXXXXX", base);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        abort();
    }
    atexit(cleanup);
    snprintf(out_dir, sizeof out_dir, "%s/out", dir);
    patched = malloc(INPUT_CAP);
    zbuf = malloc(IXF_MAX_ZWIN);
    if (!patched || !zbuf)
        abort();
    return 0;
}

/* Who the input claims to be for: read from header offsets 16..59 (zeros if too short). */
struct claim {
    struct ixf_identity id;
    uint64_t member;
    struct zip_member zm;
};

static struct claim claim_of(const uint8_t *data, size_t size)
{
    struct claim c = {0};
    if (size < 60)
        return c;
    memcpy(c.id.id, data + 16, 16);
    c.member = le64_of(data + 32);
    c.zm.method = ZIP_METHOD_DEFLATED;
    c.zm.csize = le64_of(data + 40);
    c.zm.usize = le64_of(data + 48);
    c.zm.crc32 = le32_of(data + 56);
    return c;
}

static void write_file(const char *path, const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FZ_CHECK(fd >= 0, "cannot create %s: %s", path, strerror(errno));
    while (size > 0) {
        ssize_t n = write(fd, data, size);
        FZ_CHECK(n > 0, "write: %s", strerror(errno));
        data += n;
        size -= (size_t)n;
    }
    close(fd);
}

static bool is_errno(long rc)
{
    return rc < 0 && rc > -4096;
}

/* The rules of index_file.h, restated. */
static void check_rules(const struct ixf_member *m, const struct claim *c)
{
    FZ_CHECK(m->member == c->member && m->crc32 == c->zm.crc32 && m->csize == c->zm.csize &&
                 m->usize == c->zm.usize,
             "loaded an index for another member");
    FZ_CHECK(m->usize >= 1 && m->csize >= 1 && m->usize <= INT64_MAX && m->csize <= INT64_MAX,
             "sizes %llu, %llu", (unsigned long long)m->usize, (unsigned long long)m->csize);
    FZ_CHECK(m->span >= 32768 && m->span <= (1ull << 30), "span %llu",
             (unsigned long long)m->span);
    FZ_CHECK(m->piece >= 4096 && m->piece <= (1ull << 30), "piece %llu",
             (unsigned long long)m->piece);
    FZ_CHECK(m->indexed_out <= m->usize, "indexed_out %llu", (unsigned long long)m->indexed_out);
    FZ_CHECK(m->npoints >= 1 && m->npoints <= m->usize / 32768 + 1, "%llu points",
             (unsigned long long)m->npoints);
    uint64_t pieces = 0;
    for (uint64_t i = 0; i < m->usize / m->piece + 1; i++) {
        uint64_t end = (i + 1) * m->piece < m->usize ? (i + 1) * m->piece : m->usize;
        if (i * m->piece >= m->usize || end > m->indexed_out)
            break;
        pieces++;
    }
    FZ_CHECK(m->npieces == pieces, "%llu pieces, expected %llu", (unsigned long long)m->npieces,
             (unsigned long long)pieces);
    const struct ixf_point *p = m->pts;
    FZ_CHECK(p[0].out == 0 && p[0].in == 0 && p[0].bits == 0 && p[0].wlen == 0 &&
                 p[0].zlen == 0,
             "point 0 is not the start");
    for (uint64_t k = 1; k < m->npoints; k++) {
        uint64_t wmax = p[k].out < 32768 ? p[k].out : 32768;
        FZ_CHECK(p[k].out > p[k - 1].out && p[k].in > p[k - 1].in, "point %llu out of order",
                 (unsigned long long)k);
        FZ_CHECK(p[k].out <= m->indexed_out && p[k].out < m->usize && p[k].in < m->csize &&
                     p[k].bits <= 7 && p[k].wlen >= 1 && p[k].wlen <= wmax && p[k].zlen >= 1 &&
                     p[k].zlen <= IXF_MAX_ZWIN,
                 "point %llu out of bounds", (unsigned long long)k);
    }
}

/* Windows are where the format puts them, read back with their CRC; the input's size is
 * exactly header + tables + windows. Fills pts' zwin for a save; returns whether every window
 * matched its CRC. */
static bool check_windows(const struct ixf *f, const uint8_t *data, size_t size,
                          struct ixf_point *pts)
{
    const struct ixf_member *m = ixf_get(f);
    uint64_t off = HEADER + m->npoints * 32 + m->npieces * 4;
    bool intact = true;
    for (uint64_t k = 0; k < m->npoints; k++) {
        const struct ixf_point *p = &m->pts[k];
        FZ_CHECK(p->file_off == off, "window %llu at %llu, expected %llu",
                 (unsigned long long)k, (unsigned long long)p->file_off,
                 (unsigned long long)off);
        FZ_CHECK(p->zlen <= size && off <= size - p->zlen, "window %llu past the end",
                 (unsigned long long)k);
        int n = ixf_read_window(f, k, zbuf, IXF_MAX_ZWIN);
        FZ_CHECK(n >= 0 || n == -EBADMSG, "window %llu: %d", (unsigned long long)k, n);
        bool crc_ok = (uint32_t)crc32(0, data + off, p->zlen) == p->zcrc;
        FZ_CHECK((n >= 0) == crc_ok, "window %llu: read gave %d, CRC %s", (unsigned long long)k,
                 n, crc_ok ? "matches" : "differs");
        if (n >= 0)
            FZ_CHECK((uint32_t)n == p->zlen && memcmp(zbuf, data + off, p->zlen) == 0,
                     "window %llu reads back wrong", (unsigned long long)k);
        intact = intact && n >= 0;
        pts[k] = *p;
        pts[k].zwin = data + off;
        off += p->zlen;
    }
    FZ_CHECK(off == size, "index of %zu bytes holds %llu", size, (unsigned long long)off);
    return intact;
}

/* Saving what was loaded gives back the same bytes. */
static void check_resave(const struct ixf *f, const struct claim *c, struct ixf_point *pts,
                         const uint8_t *data, size_t size)
{
    struct ixf_member m = *ixf_get(f);
    m.pts = pts;
    char why[256] = "", path[256];
    int rc = ixf_save(out_dir, &c->id, &m, why, sizeof why);
    FZ_CHECK(rc == 0, "saving a loaded index failed: %s", why);
    FZ_CHECK(ixf_path(out_dir, &c->id, c->member, path, sizeof path) == 0, "path too long");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    FZ_CHECK(fd >= 0, "saved file missing");
    struct stat st;
    FZ_CHECK(fstat(fd, &st) == 0 && (uint64_t)st.st_size == size,
             "saved %lld bytes from a file of %zu", (long long)st.st_size, size);
    unsigned char *back = malloc(size);
    FZ_CHECK(back && pread(fd, back, size, 0) == (ssize_t)size, "cannot read the saved file");
    for (size_t i = 0; i < size; i++)
        FZ_CHECK(back[i] == data[i], "saved file differs at byte %zu", i);
    free(back);
    close(fd);
    unlink(path);
}

static void check_stale(const struct claim *c)
{
    struct claim other = *c;
    other.zm.crc32 ^= 1;
    struct ixf *f = NULL;
    char why[256];
    int rc = ixf_load(dir, &other.id, &other.zm, other.member, &f, why, sizeof why);
    FZ_CHECK(rc == -ESTALE && f == NULL, "a stale index loaded (%d)", rc);
}

static void run(const uint8_t *data, size_t size)
{
    struct claim c = claim_of(data, size);
    char path[256];
    FZ_CHECK(ixf_path(dir, &c.id, c.member, path, sizeof path) == 0, "path too long");
    write_file(path, data, size);

    size_t why_len = 1 + fz_hash(data, size) % 64;
    char *why = malloc(why_len);
    FZ_CHECK(why != NULL, "out of memory");
    memset(why, 'x', why_len);
    struct ixf *f = (struct ixf *)1;
    int rc = ixf_load(dir, &c.id, &c.zm, c.member, &f, why, why_len);
    if (rc < 0) {
        FZ_CHECK(is_errno(rc) && rc != -ENOENT, "load returned %d", rc);
        FZ_CHECK(f == NULL, "failed load left an index");
        FZ_CHECK(memchr(why, '\0', why_len) != NULL, "reason not terminated");
        FZ_CHECK(why_len == 1 || (why[0] != '\0' && !strchr(why, '\n')),
                 "reason empty or not one line");
    } else {
        FZ_CHECK(rc == 0, "load returned %d", rc);
        const struct ixf_member *m = ixf_get(f);
        check_rules(m, &c);
        struct ixf_point *pts = malloc(m->npoints * sizeof *pts);
        FZ_CHECK(pts != NULL, "out of memory");
        /* A save computes window CRCs afresh: only intact windows give back the input. */
        if (check_windows(f, data, size, pts))
            check_resave(f, &c, pts, data, size);
        free(pts);
        ixf_close(f);
        check_stale(&c);
    }
    free(why);
    unlink(path);
}

/* Recomputes the body and header checksums where the format keeps them. */
static void fix_checksums(unsigned char *b, size_t size)
{
    if (size < HEADER)
        return;
    uint64_t np = le64_of(b + 88), npc = le64_of(b + 96);
    if (np <= size / 32 && npc <= size / 4 && np * 32 + npc * 4 <= size - HEADER) {
        uint32_t crc = (uint32_t)crc32(0, b + HEADER, (uInt)(np * 32 + npc * 4));
        memcpy(b + 60, (unsigned char[4]){crc, crc >> 8, crc >> 16, crc >> 24}, 4);
    }
    uint32_t crc = (uint32_t)crc32(0, b, 124);
    memcpy(b + 124, (unsigned char[4]){crc, crc >> 8, crc >> 16, crc >> 24}, 4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > INPUT_CAP)
        return 0;
    run(data, size);
    memcpy(patched, data, size);
    fix_checksums(patched, size);
    if (size >= HEADER && memcmp(patched, data, HEADER) != 0)
        run(patched, size);
    return 0;
}
