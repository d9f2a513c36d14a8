/*
 * test_forest: a tree of archives through the core (forest.h), with no FUSE: archives are
 * written here (zipwrite.h records, zlib's raw deflate), so the expected bytes are known
 * independently of the reader. Checked: the tree's shape, every member's bytes with at most
 * max_open archives open, archives of identical member layout but different bytes sharing
 * one cache (a key collision would serve one's pieces for the other's), inode numbers across
 * a close and reopen, a broken archive as an empty directory, plain files (read and locate),
 * and many threads reading across archives while they are closed and reopened under them,
 * with decode-ahead jobs on the shared workers (run under ASan by check-asan: a close racing
 * a read or a job would show there).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "forest.h"
#include "npz.h"
#include "npz_core.h"
#include "optimize.h"
#include "zipwrite.h"

#define ARCHIVES 12
#define MEMBER_BYTES (300u << 10) /* more than two cache pieces */
#define MAX_OPEN 3

static char dir[] = "/tmp/test_forest.XXXXXX";

/* Member m of archive a: bytes every archive has at the same place, differing in value. */
static void member_bytes(unsigned a, unsigned m, unsigned char *out, size_t len)
{
    uint64_t s = (uint64_t)a * 1000003u + m + 1;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = check_rnd(&s) % 4; /* compressible, so deflate differs from stored */
        for (size_t k = 0; k < 8 && i + k < len; k++)
            out[i + k] = (unsigned char)('a' + a + ((v >> k) & 1));
    }
}

static size_t deflate_raw(const unsigned char *in, size_t len, unsigned char *out, size_t cap)
{
    z_stream z = {0};
    deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    z.next_in = (unsigned char *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    size_t n = z.total_out;
    deflateEnd(&z);
    return rc == Z_STREAM_END ? n : 0;
}

/* Writes archive a: "s.bin" stored and "d.bin" deflated. */
static void write_archive(const char *path, unsigned a)
{
    static unsigned char data[MEMBER_BYTES], packed[MEMBER_BYTES * 2], hdr[512];
    FILE *f = fopen(path, "wb");
    struct zw_entry e[2];
    const char *names[2] = {"s.bin", "d.bin"};
    uint64_t off = 0;
    for (unsigned m = 0; m < 2; m++) {
        member_bytes(a, m, data, MEMBER_BYTES);
        size_t clen = m ? deflate_raw(data, MEMBER_BYTES, packed, sizeof packed) : MEMBER_BYTES;
        e[m] = (struct zw_entry){.name = (const unsigned char *)names[m], .name_len = 5,
                                 .version_made = 20, .version_needed = 20,
                                 .method = m ? 8 : 0, .dos_date = 0x5821,
                                 .crc32 = (uint32_t)crc32(0, data, MEMBER_BYTES),
                                 .csize = clen, .usize = MEMBER_BYTES, .header_off = off};
        size_t h = zw_local(hdr, &e[m]);
        fwrite(hdr, 1, h, f);
        fwrite(m ? packed : data, 1, clen, f);
        off += h + clen;
    }
    uint64_t cd = off;
    for (unsigned m = 0; m < 2; m++) {
        size_t h = zw_central(hdr, &e[m]);
        fwrite(hdr, 1, h, f);
        off += h;
    }
    fwrite(hdr, 1, zw_end(hdr, 2, cd, off - cd, NULL, 0), f);
    fclose(f);
}

static void make_tree(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/sub", dir);
    mkdir(path, 0755);
    for (unsigned a = 0; a < ARCHIVES; a++) {
        snprintf(path, sizeof path, "%s/%sa%02u.npz", dir, a % 2 ? "sub/" : "", a);
        write_archive(path, a);
    }
    snprintf(path, sizeof path, "%s/broken.zip", dir);
    FILE *f = fopen(path, "wb");
    fputs("not an archive at all", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/plain.txt", dir);
    f = fopen(path, "wb");
    fputs("plain bytes\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/link.npz", dir);
    CHECK(symlink("a00.npz", path) == 0);
}

/* Archive a's inode, or 0 (no CHECK here: reader threads call it). */
static uint64_t archive_ino(struct forest *f, unsigned a)
{
    char name[32];
    uint64_t d = FOREST_ROOT, ino = 0;
    if (a % 2 && forest_lookup(f, FOREST_ROOT, "sub", &d) < 0)
        return 0;
    snprintf(name, sizeof name, "a%02u.npz", a);
    return forest_lookup(f, d, name, &ino) == 0 ? ino : 0;
}

static bool member_ok(struct forest *f, unsigned a, unsigned m, uint64_t *ino_out)
{
    uint64_t ino;
    if (forest_lookup(f, archive_ino(f, a), m ? "d.bin" : "s.bin", &ino) < 0)
        return false;
    if (ino_out)
        *ino_out = ino;
    unsigned char *want = malloc(MEMBER_BYTES), *got = malloc(MEMBER_BYTES);
    bool ok = want && got;
    if (ok)
        member_bytes(a, m, want, MEMBER_BYTES);
    for (size_t off = 0; ok && off < MEMBER_BYTES; off += 64u << 10) {
        size_t len = MEMBER_BYTES - off < (64u << 10) ? MEMBER_BYTES - off : 64u << 10;
        /* as the adapter reads: without waiting (which has the next pieces decoded ahead
         * on the workers), then, when told to wait, waiting */
        ssize_t n = forest_read(f, ino, got, len, off, READ_NOWAIT, NULL, NULL);
        if (n == -EAGAIN)
            n = forest_read(f, ino, got, len, off, READ_BLOCK, NULL, NULL);
        ok = n == (ssize_t)len && memcmp(got, want + off, len) == 0;
    }
    free(want);
    free(got);
    return ok;
}

/* Reads [off, off + len) of ino with pins, as the adapter does, into out: returns the bytes,
 * and how many slices and held pieces carried them. Releases the pins. */
static ssize_t read_pinned(struct forest *f, uint64_t ino, unsigned char *out, size_t len,
                           uint64_t off, size_t *slices, size_t *held, bool *in_out)
{
    struct read_pins pins = {0};
    ssize_t n = forest_read(f, ino, out, len, off, READ_NOWAIT, NULL, &pins);
    if (n == -EAGAIN) {
        read_pins_release(&pins);
        n = forest_read(f, ino, out, len, off, READ_BLOCK, NULL, &pins);
    }
    *slices = pins.n;
    *held = pins.nheld;
    *in_out = pins.n == 1 && pins.iov[0].iov_base == (void *)out;
    static unsigned char joined[MEMBER_BYTES];
    size_t at = n > 0 ? read_pins_copy(&pins, joined, sizeof joined) : 0;
    read_pins_free(&pins);
    if (n > 0 && at != (size_t)n)
        return -EPROTO;
    memcpy(out, joined, at);
    return n;
}

/* A read with pins: a deflated member's bytes stay in the cache's pieces, one held piece per
 * slice; a stored member's, and every byte of a tree (whose archive may close once the read
 * returns), come as one slice of the caller's buffer. */
static void test_pins(struct forest *tree, const struct npz_options *opt)
{
    char path[512];
    snprintf(path, sizeof path, "%s/a00.npz", dir);
    struct npz *npz;
    struct forest *one;
    char msg[256];
    if (!CHECK(npz_open(path, opt, &npz, msg, sizeof msg) == 0) ||
        !CHECK(forest_wrap(npz, &one) == 0))
        return;
    static unsigned char want[MEMBER_BYTES], got[MEMBER_BYTES];
    const size_t piece = 64u << 10;
    for (unsigned m = 0; m < 2; m++) {
        member_bytes(0, m, want, MEMBER_BYTES);
        for (int t = 0; t < 2; t++) {
            struct forest *f = t ? tree : one;
            uint64_t ino;
            CHECK(forest_lookup(f, t ? archive_ino(f, 0) : FOREST_ROOT, m ? "d.bin" : "s.bin",
                                &ino) == 0);
            /* across three pieces, then the short end, then past the end */
            const uint64_t offs[] = {piece - 100, MEMBER_BYTES - 1000, MEMBER_BYTES};
            const size_t lens[] = {piece + 200, 5000, 10};
            for (int k = 0; k < 3; k++) {
                size_t slices, held;
                bool in_out;
                memset(got, 0, sizeof got);
                ssize_t n = read_pinned(f, ino, got, lens[k], offs[k], &slices, &held, &in_out);
                size_t expect = offs[k] >= MEMBER_BYTES ? 0
                              : MEMBER_BYTES - offs[k] < lens[k] ? MEMBER_BYTES - offs[k] : lens[k];
                CHECK_EQ_I64(n, (int64_t)expect);
                CHECK(n <= 0 || memcmp(got, want + offs[k], (size_t)n) == 0);
                if (n == 0) {
                    CHECK_EQ_I64(slices, 0);
                } else if (m == 1 && t == 0) { /* from the cache, piece by piece */
                    CHECK_EQ_I64(slices, k == 0 ? 3 : 1);
                    CHECK_EQ_I64(held, slices);
                    CHECK(!in_out);
                } else {
                    CHECK(in_out);
                    CHECK_EQ_I64(held, 0);
                }
            }
        }
    }
    forest_shutdown(one);
    forest_close(one);
}

/* READ_QUICK, the FUSE thread's first try: a random read of a local SOZip member is decoded
 * there and then; a small one's, a continuing one's and a plain deflated member's are left to
 * the workers (-EAGAIN). */
static void test_read_quick(const struct npz_options *opt)
{
    char plain[512], sozip[512], msg[256];
    snprintf(plain, sizeof plain, "%s/a00.npz", dir);
    snprintf(sozip, sizeof sozip, "%s/quick.zip", dir);
    struct optimize_options oo = {.chunk_size = 32u << 10, .threads = 1};
    struct optimize_stats os;
    if (!CHECK(optimize_run(plain, sozip, &oo, NULL, NULL, &os, msg, sizeof msg) == 0) ||
        !CHECK_EQ_U64(os.indexed, 1))
        return;
    static unsigned char want[MEMBER_BYTES], got[MEMBER_BYTES];
    member_bytes(0, 1, want, MEMBER_BYTES);
    const size_t len = 96u << 10;
    const uint64_t off = 100000;
    for (int p = 0; p < 2; p++) {
        struct npz *z;
        if (!CHECK(npz_open(p ? plain : sozip, opt, &z, msg, sizeof msg) == 0))
            continue;
        if (p == 0) { /* d.bin is member 1 */
            CHECK_EQ_I64(npz_read_member(z, 1, got, 4096, off, READ_QUICK, NULL, NULL), -EAGAIN);
            CHECK_EQ_I64(npz_read_member(z, 1, got, len, off, READ_QUICK, NULL, NULL), len);
            CHECK(memcmp(got, want + off, len) == 0);
            CHECK_EQ_I64(npz_read_member(z, 1, got, len, off + len, READ_QUICK, NULL, NULL),
                         -EAGAIN);
        } else {
            CHECK_EQ_I64(npz_read_member(z, 1, got, len, off, READ_QUICK, NULL, NULL), -EAGAIN);
        }
        npz_shutdown(z);
        npz_close(z);
    }
}

struct names {
    char all[512];
};

static int collect(void *ctx, uint64_t pos, const char *name, const struct npz_attr *a)
{
    (void)pos, (void)a;
    struct names *n = ctx;
    size_t used = strlen(n->all);
    snprintf(n->all + used, sizeof n->all - used, "%s%s", used ? " " : "", name);
    return 0;
}

static const char *listing(struct forest *f, uint64_t d, struct names *n)
{
    n->all[0] = '\0';
    CHECK(forest_readdir(f, d, 0, collect, n) == 0);
    return n->all;
}

static void test_tree(struct forest *f)
{
    struct names n;
    CHECK_EQ_STR(listing(f, FOREST_ROOT, &n),
                 ". .. a00.npz a02.npz a04.npz a06.npz a08.npz a10.npz broken.zip plain.txt sub");
    CHECK_EQ_STR(listing(f, archive_ino(f, 3), &n), ". .. d.bin s.bin");
    uint64_t broken, plain, x;
    CHECK(forest_lookup(f, FOREST_ROOT, "broken.zip", &broken) == 0);
    CHECK_EQ_STR(listing(f, broken, &n), ". ..");
    CHECK_EQ_I64(forest_lookup(f, broken, "s.bin", &x), -ENOENT);
    CHECK(forest_lookup(f, FOREST_ROOT, "plain.txt", &plain) == 0);
    CHECK_EQ_I64(forest_lookup(f, plain, "x", &x), -ENOTDIR);
    CHECK_EQ_I64(forest_lookup(f, FOREST_ROOT, "link.npz", &x), -ENOENT);
    char buf[64];
    CHECK_EQ_I64(forest_read(f, plain, buf, sizeof buf, 0, READ_CACHED, NULL, NULL), 12);
    CHECK_EQ_MEM(buf, 12, "plain bytes\n", 12);
    int fd;
    uint64_t pos;
    struct forest_hold *hold;
    CHECK_EQ_I64(forest_locate(f, plain, 5, 6, &fd, &pos, &hold), 5);
    CHECK(pread(fd, buf, 5, (off_t)pos) == 5 && memcmp(buf, "bytes", 5) == 0);
    forest_release(f, hold);
    struct npz_attr at;
    CHECK(forest_getattr(f, archive_ino(f, 4), &at) == 0 && at.is_dir);
}

static void test_members_and_inodes(struct forest *f)
{
    uint64_t first, again;
    CHECK(member_ok(f, 0, 1, &first));
    for (unsigned a = 0; a < ARCHIVES; a++) /* archives alike but for their bytes */
        for (unsigned m = 0; m < 2; m++) {
            check_context("archive %u member %u", a, m);
            CHECK(member_ok(f, a, m, NULL));
        }
    check_context("%s", "");
    CHECK(member_ok(f, 0, 1, &again)); /* closed meanwhile (MAX_OPEN), opened again */
    CHECK_EQ_U64(again, first);
    struct npz_attr at;
    CHECK(forest_getattr(f, first, &at) == 0 && at.size == MEMBER_BYTES && !at.is_dir);
    CHECK_EQ_U64(at.ino, first);
}

static struct forest *shared_forest;
static atomic_int thread_failures;

static void *reader(void *arg)
{
    uint64_t s = (uintptr_t)arg + 1;
    for (int i = 0; i < 60; i++) {
        unsigned a = (unsigned)(check_rnd(&s) % ARCHIVES), m = (unsigned)(check_rnd(&s) % 2);
        if (!member_ok(shared_forest, a, m, NULL))
            atomic_fetch_add(&thread_failures, 1);
    }
    return NULL;
}

static void test_threads(struct forest *f)
{
    pthread_t t[6];
    shared_forest = f;
    for (uintptr_t i = 0; i < 6; i++)
        pthread_create(&t[i], NULL, reader, (void *)i);
    for (int i = 0; i < 6; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ_I64(atomic_load(&thread_failures), 0);
}

int main(void)
{
    if (!CHECK(mkdtemp(dir) != NULL))
        return check_summary("test_forest");
    make_tree();
    const char *paths[1] = {dir};
    struct npz_options opt = {.no_index = 1, .cache_bytes = 1u << 20, .threads = 2};
    struct forest *f;
    char msg[256];
    if (CHECK(forest_open(paths, 1, &opt, MAX_OPEN, &f, msg, sizeof msg) == 0)) {
        test_tree(f);
        test_members_and_inodes(f);
        test_threads(f);
        test_pins(f, &opt);
        forest_shutdown(f);
        forest_close(f);
    }
    test_read_quick(&opt);
    const char *twice[2] = {dir, dir};
    CHECK_EQ_I64(forest_open(twice, 2, &opt, 0, &f, msg, sizeof msg), -EEXIST);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return check_summary("test_forest");
}
