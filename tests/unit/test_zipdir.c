/*
 * Unit tests for zipdir (zip_open / zip_close).
 *
 * The bulk of the checks are table-driven: tests/unit/gen_cases.py writes archives plus
 * NAME.expect files (format described there) into the directory named by $NPZ_CASES (or argv[1]);
 * every case is opened with zip_open and compared field by field, in central-directory order.
 * For every member that must be readable the data at data_off is also read back and checked
 * against the CRC (inflating deflated members), which checks data_off without trusting the
 * generator's arithmetic. A few more tests build small archives in-process.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "fd_source.h"
#include "zipdir.h"

static const char *cases_dir;

/* ---------------------------------------------------------------------------------------- */
/* Expectation files */

enum { F_METHOD, F_CRC, F_CSIZE, F_USIZE, F_DATA_OFF, F_ERR, F_IS_DIR, F_HEADER_OFF, F_MODE,
       F_MTIME, NFIELDS };

static const char *const field_names[NFIELDS] = {
    "method", "crc32", "csize", "usize", "data_off", "err", "is_dir", "header_off", "mode", "mtime",
};

struct expect_member {
    bool has_name;
    unsigned char *name;
    size_t name_len;
    bool has[NFIELDS];
    uint64_t v[NFIELDS]; /* mtime is stored as its int64 bit pattern */
};

struct expect {
    bool ok;
    uint64_t count, prefix;
    size_t n;
    struct expect_member *m;
};

static void expect_free(struct expect *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->m[i].name);
    free(e->m);
    memset(e, 0, sizeof *e);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool parse_member(char *line, struct expect_member *m)
{
    char *save = NULL;
    char *tok = strtok_r(line, " \t\r\n", &save);
    if (!tok)
        return false;
    if (strcmp(tok, "*") != 0) {
        size_t len = strcmp(tok, "-") == 0 ? 0 : strlen(tok);
        if (len % 2)
            return false;
        m->has_name = true;
        m->name_len = len / 2;
        m->name = malloc(m->name_len + 1);
        if (!m->name)
            return false;
        for (size_t i = 0; i < m->name_len; i++) {
            int hi = hexval(tok[2 * i]), lo = hexval(tok[2 * i + 1]);
            if (hi < 0 || lo < 0)
                return false;
            m->name[i] = (unsigned char)(hi << 4 | lo);
        }
        m->name[m->name_len] = 0;
    }
    for (int f = 0; f < NFIELDS; f++) {
        tok = strtok_r(NULL, " \t\r\n", &save);
        if (!tok)
            return false;
        if (strcmp(tok, "*") == 0)
            continue;
        char *end;
        errno = 0;
        if (f == F_MTIME)
            m->v[f] = (uint64_t)strtoll(tok, &end, 10);
        else
            m->v[f] = strtoull(tok, &end, 10);
        if (errno || *end)
            return false;
        m->has[f] = true;
    }
    return strtok_r(NULL, " \t\r\n", &save) == NULL;
}

/* Reads path into e; returns false (after recording a failure) when it cannot be parsed. */
static bool expect_read(const char *path, struct expect *e)
{
    memset(e, 0, sizeof *e);
    FILE *f = fopen(path, "r");
    if (!CHECK(f != NULL))
        return false;
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    bool have_status = false, good = true;
    while (good && getline(&line, &cap, f) >= 0) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (!have_status) {
            unsigned long long count, prefix;
            have_status = true;
            if (strcmp(line, "reject\n") == 0) {
                e->ok = false;
            } else if (sscanf(line, "ok %llu %llu", &count, &prefix) == 2) {
                e->ok = true;
                e->count = count;
                e->prefix = prefix;
                e->m = calloc(count ? count : 1, sizeof *e->m);
                good = e->m != NULL;
            } else {
                good = false;
            }
            continue;
        }
        if (!e->ok || e->n == e->count) {
            good = false;
            break;
        }
        good = parse_member(line, &e->m[e->n]);
        e->n++;
    }
    free(line);
    fclose(f);
    if (good && e->ok && e->n != e->count)
        good = false;
    if (!check_report(good && have_status, __FILE__, __LINE__,
                      "cannot parse expectation file %s (line %zu)", path, lineno)) {
        expect_free(e);
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading member data back */

/* Checks that the member's bytes at data_off decode to usize bytes with its CRC. */
static void check_member_data(int fd, const struct zip_member *m)
{
    if (m->csize > (64u << 20) || m->usize > (256u << 20))
        return; /* nothing that large in the corpus */
    unsigned char *raw = malloc(m->csize ? m->csize : 1);
    if (!CHECK(raw != NULL))
        return;
    ssize_t got = pread(fd, raw, m->csize, (off_t)m->data_off);
    if (!CHECK_EQ_I64(got, (int64_t)m->csize)) {
        free(raw);
        return;
    }
    if (m->method == ZIP_METHOD_STORED) {
        CHECK_EQ_U64(crc32(0L, raw, (uInt)m->csize), m->crc32);
    } else if (m->method == ZIP_METHOD_DEFLATED) { /* other methods: integration tests */
        unsigned char *out = malloc(m->usize + 1);
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        if (CHECK(out != NULL) && CHECK(inflateInit2(&zs, -15) == Z_OK)) {
            zs.next_in = raw;
            zs.avail_in = (uInt)m->csize;
            zs.next_out = out;
            zs.avail_out = (uInt)m->usize + 1;
            int zrc = inflate(&zs, Z_FINISH);
            CHECK_EQ_I64(zrc, Z_STREAM_END);
            CHECK_EQ_U64(zs.total_out, m->usize);
            CHECK_EQ_U64(crc32(0L, out, (uInt)zs.total_out), m->crc32);
            inflateEnd(&zs);
        }
        free(out);
    }
    free(raw);
}

/* ---------------------------------------------------------------------------------------- */
/* The table-driven cases */

static void check_member(const char *cname, int fd, uint64_t i, const struct zip_member *m,
                         const struct expect_member *e)
{
    check_context("%s: member %" PRIu64 " \"%.60s\"", cname, i, e->has_name ? (char *)e->name : "?");
    if (e->has_name)
        CHECK_EQ_MEM(m->name, m->name_len, e->name, e->name_len);
    CHECK(m->name != NULL && m->name[m->name_len] == '\0');
    uint64_t got[NFIELDS] = {
        [F_METHOD] = m->method,       [F_CRC] = m->crc32,
        [F_CSIZE] = m->csize,         [F_USIZE] = m->usize,
        [F_DATA_OFF] = m->data_off,   [F_ERR] = m->err != 0,
        [F_IS_DIR] = m->is_dir,       [F_HEADER_OFF] = m->header_off,
        [F_MODE] = m->mode,           [F_MTIME] = (uint64_t)m->mtime,
    };
    for (int f = 0; f < NFIELDS; f++) {
        if (!e->has[f])
            continue;
        if (f == F_DATA_OFF && m->err)
            continue; /* undefined for a flagged member; the err check reports it */
        if (f == F_MTIME)
            check_report((int64_t)got[f] == (int64_t)e->v[f], __FILE__, __LINE__,
                         "mtime: got %" PRId64 ", want %" PRId64, (int64_t)got[f],
                         (int64_t)e->v[f]);
        else
            check_report(got[f] == e->v[f], __FILE__, __LINE__,
                         "%s: got %" PRIu64 ", want %" PRIu64 "%s%s%s", field_names[f], got[f],
                         e->v[f], m->err ? " (member flagged: " : "",
                         m->err ? (m->why ? m->why : "no reason") : "", m->err ? ")" : "");
    }
    if (m->err) {
        CHECK(m->err < 0);
        CHECK(m->why != NULL && m->why[0] != '\0' && strchr(m->why, '\n') == NULL);
    } else if (e->has[F_ERR] && e->v[F_ERR] == 0 && !(m->is_dir && m->csize == 0)) {
        check_member_data(fd, m);
    }
}

static void run_case(const char *cname)
{
    char epath[4096], zpath[4096];
    snprintf(epath, sizeof epath, "%s/%s.expect", cases_dir, cname);
    snprintf(zpath, sizeof zpath, "%s/%s.zip", cases_dir, cname);
    check_context("%s", cname);
    struct expect e;
    if (!expect_read(epath, &e))
        return;
    int fd = open(zpath, O_RDONLY);
    if (!CHECK(fd >= 0)) {
        expect_free(&e);
        return;
    }
    struct zip_archive za;
    char msg[512];
    msg[0] = '\0';
    int rc = zip_open_fd(fd, &za, msg, sizeof msg);
    if (!e.ok) {
        check_report(rc < 0 && rc > -4096, __FILE__, __LINE__,
                     "zip_open must fail with a negative errno, returned %d", rc);
        CHECK(msg[0] != '\0');
        CHECK(strchr(msg, '\n') == NULL);
        CHECK(strlen(msg) < sizeof msg);
        if (rc == 0) {
            printf("    (opened with %" PRIu64 " members)\n", za.count);
            zip_close(&za);
        } else {
            CHECK(za.members == NULL && za.name_pool == NULL);
        }
    } else if (check_report(rc == 0, __FILE__, __LINE__, "zip_open failed (%d): %s", rc, msg)) {
        struct stat st;
        CHECK(fstat(fd, &st) == 0);
        CHECK_EQ_U64(za.file_size, st.st_size);
        CHECK_EQ_U64(za.count, e.count);
        CHECK_EQ_U64(za.prefix, e.prefix);
        uint64_t n = za.count < e.count ? za.count : e.count;
        for (uint64_t i = 0; i < n; i++)
            check_member(cname, fd, i, &za.members[i], &e.m[i]);
        check_context("%s", cname);
        zip_close(&za);
        CHECK(za.members == NULL && za.count == 0);
    }
    close(fd);
    expect_free(&e);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_cases(void)
{
    if (!check_report(cases_dir != NULL, __FILE__, __LINE__,
                      "no case directory: set NPZ_CASES or pass it as argv[1]"))
        return;
    DIR *d = opendir(cases_dir);
    if (!check_report(d != NULL, __FILE__, __LINE__, "cannot open %s", cases_dir))
        return;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len <= 7 || strcmp(de->d_name + len - 7, ".expect") != 0)
            continue;
        if (n == cap) {
            cap = cap * 2 + 64;
            char **grown = realloc(names, cap * sizeof *names);
            if (!CHECK(grown != NULL))
                break;
            names = grown;
        }
        names[n] = strndup(de->d_name, len - 7);
        if (names[n])
            n++;
    }
    closedir(d);
    check_report(n >= 50, __FILE__, __LINE__, "only %zu cases in %s", n, cases_dir);
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        run_case(names[i]);
        free(names[i]);
    }
    free(names);
}

/* ---------------------------------------------------------------------------------------- */
/* In-process archives */

static void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
    put16(p, v & 0xFFFF);
    put16(p + 2, v >> 16);
}

/* A temporary file holding len bytes of buf; returns the fd or -1. */
static int temp_fd(const void *buf, size_t len)
{
    FILE *f = tmpfile();
    if (!f)
        return -1;
    int fd = dup(fileno(f));
    fclose(f);
    if (fd < 0)
        return -1;
    if (len && pwrite(fd, buf, len, 0) != (ssize_t)len) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One stored member "hello.npy" = "abc", laid out by hand; returns the archive length. */
static size_t one_member_zip(unsigned char *z)
{
    static const char name[] = "hello.npy";
    const uint32_t crc = 0x352441C2; /* crc32("abc") */
    size_t nl = sizeof name - 1, o = 0;
    memset(z, 0, 200);
    put32(z, 0x04034b50);                  /* local header */
    put16(z + 4, 20);
    put32(z + 14, crc);
    put32(z + 18, 3);
    put32(z + 22, 3);
    put16(z + 26, (unsigned)nl);
    memcpy(z + 30, name, nl);
    memcpy(z + 30 + nl, "abc", 3);
    o = 30 + nl + 3;
    size_t cd = o;
    put32(z + o, 0x02014b50);              /* central entry */
    put16(z + o + 4, 3 << 8 | 20);
    put16(z + o + 6, 20);
    put16(z + o + 12, 0);
    put16(z + o + 14, (41 << 9) | (3 << 5) | 14);
    put32(z + o + 16, crc);
    put32(z + o + 20, 3);
    put32(z + o + 24, 3);
    put16(z + o + 28, (unsigned)nl);
    put32(z + o + 38, 0100644u << 16);
    put32(z + o + 42, 0);
    memcpy(z + o + 46, name, nl);
    o += 46 + nl;
    put32(z + o, 0x06054b50);              /* end record */
    put16(z + o + 8, 1);
    put16(z + o + 10, 1);
    put32(z + o + 12, (uint32_t)(o - cd));
    put32(z + o + 16, (uint32_t)cd);
    return o + 22;
}

static void test_one_member(void)
{
    unsigned char z[200];
    size_t len = one_member_zip(z);
    int fd = temp_fd(z, len);
    if (!CHECK(fd >= 0))
        return;
    lseek(fd, 17, SEEK_SET); /* the file position must not matter */
    struct zip_archive za;
    char msg[128] = "";
    if (CHECK_EQ_I64(zip_open_fd(fd, &za, msg, sizeof msg), 0) && CHECK_EQ_U64(za.count, 1)) {
        const struct zip_member *m = &za.members[0];
        CHECK_EQ_STR(m->name, "hello.npy");
        CHECK_EQ_U64(m->name_len, 9);
        CHECK_EQ_U64(m->method, ZIP_METHOD_STORED);
        CHECK_EQ_U64(m->crc32, 0x352441C2);
        CHECK_EQ_U64(m->csize, 3);
        CHECK_EQ_U64(m->usize, 3);
        CHECK_EQ_U64(m->header_off, 0);
        CHECK_EQ_U64(m->data_off, 39);
        CHECK_EQ_U64(m->mode, 0100644);
        CHECK(!m->is_dir);
        CHECK_EQ_I64(m->err, 0);
        CHECK_EQ_U64(za.prefix, 0);
        CHECK_EQ_U64(za.file_size, len);
        zip_close(&za);
        zip_close(&za); /* closing twice is allowed */
        CHECK(za.members == NULL && za.name_pool == NULL && za.count == 0);
    }
    /* Opening the same descriptor twice gives the same table. */
    struct zip_archive a, b;
    if (CHECK_EQ_I64(zip_open_fd(fd, &a, msg, sizeof msg), 0)) {
        if (CHECK_EQ_I64(zip_open_fd(fd, &b, msg, sizeof msg), 0)) {
            CHECK_EQ_U64(a.count, b.count);
            CHECK_EQ_STR(a.members[0].name, b.members[0].name);
            CHECK_EQ_U64(a.members[0].data_off, b.members[0].data_off);
            CHECK_EQ_I64(a.members[0].mtime, b.members[0].mtime);
            zip_close(&b);
        }
        zip_close(&a);
    }
    close(fd);
}

static void test_close_zeroed(void)
{
    struct zip_archive za;
    memset(&za, 0, sizeof za);
    zip_close(&za);
    zip_close(&za);
    CHECK(za.members == NULL && za.count == 0);
}

static void test_not_regular(void)
{
    struct zip_archive za;
    char msg[128];
    int p[2];
    if (CHECK(pipe(p) == 0)) {
        unsigned char z[200];
        size_t len = one_member_zip(z);
        CHECK(write(p[1], z, len) == (ssize_t)len);
        msg[0] = '\0';
        CHECK(zip_open_fd(p[0], &za, msg, sizeof msg) < 0);
        CHECK(msg[0] != '\0' && strchr(msg, '\n') == NULL);
        close(p[0]);
        close(p[1]);
    }
    int dfd = open(".", O_RDONLY | O_DIRECTORY);
    if (CHECK(dfd >= 0)) {
        msg[0] = '\0';
        CHECK(zip_open_fd(dfd, &za, msg, sizeof msg) < 0);
        CHECK(msg[0] != '\0' && strchr(msg, '\n') == NULL);
        close(dfd);
    }
    msg[0] = '\0';
    CHECK_EQ_I64(zip_open_fd(-1, &za, msg, sizeof msg), -EBADF);
    CHECK(msg[0] != '\0');
}

static void test_message_buffer(void)
{
    static const char junk[] = "definitely not a zip archive, just some text that is long";
    int fd = temp_fd(junk, sizeof junk - 1);
    if (!CHECK(fd >= 0))
        return;
    struct zip_archive za;
    char small[8];
    memset(small, 'x', sizeof small);
    CHECK(zip_open_fd(fd, &za, small, 6) < 0);
    CHECK(memchr(small, '\0', 6) != NULL);     /* truncated, terminated */
    CHECK(small[6] == 'x' && small[7] == 'x'); /* nothing written past msg_len */
    CHECK(zip_open_fd(fd, &za, NULL, 0) < 0);     /* no message buffer at all */
    CHECK(za.members == NULL && za.name_pool == NULL);
    close(fd);
}

/* The end record is searched for over at most 65,535 comment bytes. */
static void test_comment_limits(void)
{
    size_t len = 22 + 65535 + 1;
    unsigned char *z = calloc(1, len);
    if (!CHECK(z != NULL))
        return;
    put32(z, 0x06054b50);
    put16(z + 20, 65535);
    memset(z + 22, 'c', 65535);
    struct zip_archive za;
    char msg[128];
    int fd = temp_fd(z, len - 1); /* empty archive, maximal comment */
    if (CHECK(fd >= 0)) {
        if (CHECK_EQ_I64(zip_open_fd(fd, &za, msg, sizeof msg), 0)) {
            CHECK_EQ_U64(za.count, 0);
            zip_close(&za);
        }
        close(fd);
    }
    fd = temp_fd(z, len); /* one byte more: the record is out of reach */
    if (CHECK(fd >= 0)) {
        msg[0] = '\0';
        CHECK(zip_open_fd(fd, &za, msg, sizeof msg) < 0);
        CHECK(msg[0] != '\0');
        close(fd);
    }
    free(z);
}

/* The one-member archive with every comment length 0..40 (comment bytes repeat "PK\5\6"):
 * exercises the backwards search at every alignment. */
static void test_comment_sweep(void)
{
    unsigned char z[400];
    size_t base = one_member_zip(z);
    for (unsigned c = 0; c <= 40; c++) {
        unsigned char buf[400];
        memcpy(buf, z, base);
        put16(buf + base - 2, c);
        for (unsigned i = 0; i < c; i++)
            buf[base + i] = (unsigned char)("PK\x05\x06"[i % 4]);
        int fd = temp_fd(buf, base + c);
        if (!CHECK(fd >= 0))
            return;
        struct zip_archive za;
        char msg[128];
        check_context("comment length %u", c);
        if (CHECK_EQ_I64(zip_open_fd(fd, &za, msg, sizeof msg), 0)) {
            CHECK_EQ_U64(za.count, 1);
            CHECK_EQ_U64(za.prefix, 0);
            if (za.count == 1)
                CHECK_EQ_U64(za.members[0].data_off, 39);
            zip_close(&za);
        }
        close(fd);
    }
    check_context("%s", "");
}

int main(int argc, char **argv)
{
    cases_dir = argc > 1 ? argv[1] : getenv("NPZ_CASES");
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN_TEST(test_cases);
    RUN_TEST(test_one_member);
    RUN_TEST(test_close_zeroed);
    RUN_TEST(test_not_regular);
    RUN_TEST(test_message_buffer);
    RUN_TEST(test_comment_limits);
    RUN_TEST(test_comment_sweep);
    return check_summary("test_zipdir");
}
