/*
 * Unit tests for zipwrite: the records it builds are read back by zipdir (zip_open), an
 * independent reader, and their ZIP64 fields are checked byte by byte against APPNOTE 4.5.3.
 * Sizes and offsets past 4 GiB are reached with a sparse file: only the records are written.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fd_source.h"
#include "io.h"
#include "zipdir.h"
#include "zipwrite.h"

#define GiB (1ull << 30)

static int temp_file(void)
{
    char path[] = "/tmp/test_zipwrite.XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0)
        unlink(path);
    return fd;
}

/* Writes e's local header at e->header_off; returns the offset after it. */
static uint64_t put_local(int fd, const struct zw_entry *e)
{
    unsigned char buf[ZW_LOCAL_LEN + 512];
    size_t n = zw_local(buf, e);
    CHECK_EQ_U64(n, zw_local_len(e));
    CHECK(io_write_exact(fd, buf, n, e->header_off) == 0);
    return e->header_off + n;
}

/* Writes the central directory of n entries at off, then the end records. */
static void put_directory(int fd, const struct zw_entry *e, int n, uint64_t off,
                          const char *comment)
{
    unsigned char buf[4096];
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        size_t want = zw_central_len(&e[i]);
        CHECK_EQ_U64(zw_central(buf + len, &e[i]), want);
        len += want;
    }
    len += zw_end(buf + len, (uint64_t)n, off, len, (const unsigned char *)comment,
                  (uint16_t)strlen(comment));
    CHECK(io_write_exact(fd, buf, len, off) == 0);
}

static void test_small_archive_has_no_zip64(void)
{
    int fd = temp_file();
    if (!CHECK(fd >= 0))
        return;
    const unsigned char x[] = "hello";
    const unsigned char ut[] = {0x55, 0x54, 5, 0, 1, 0x10, 0x20, 0x30, 0x40};
    struct zw_entry e = {
        .name = (const unsigned char *)"dir/a.txt", .name_len = 9, .version_made = 0x0314,
        .version_needed = 10, .method = ZIP_METHOD_STORED, .dos_time = 0x1234,
        .dos_date = 0x5421, .crc32 = 0x3610a686, .csize = 5, .usize = 5,
        .external_attr = 0100640u << 16, .extra = ut, .extra_len = sizeof ut,
        .comment = (const unsigned char *)"note", .comment_len = 4,
    };
    uint64_t data = put_local(fd, &e);
    CHECK(io_write_exact(fd, x, 5, data) == 0);
    put_directory(fd, &e, 1, data + 5, "archive");
    struct zip_archive za;
    char msg[256];
    if (CHECK(zip_open_fd(fd, &za, msg, sizeof msg) == 0)) {
        CHECK_EQ_U64(za.count, 1);
        CHECK_EQ_STR(za.members[0].name, "dir/a.txt");
        CHECK_EQ_U64(za.members[0].data_off, data);
        CHECK_EQ_U64(za.members[0].usize, 5);
        CHECK_EQ_U64(za.members[0].mode, 0100640);
        CHECK_EQ_I64(za.members[0].mtime, 0x40302010); /* from the UT field, kept */
        CHECK_EQ_I64(za.members[0].err, 0);
        zip_close(&za);
    }
    unsigned char end[22 + 7];
    CHECK(io_read_exact(fd, end, sizeof end, data + 5 + zw_central_len(&e)) == 0);
    CHECK_EQ_U64(le32(end), 0x06054b50u); /* no ZIP64 end record before it */
    CHECK_EQ_MEM(end + 22, 7, "archive", 7);
    close(fd);
}

/* A local header with ZIP64 sizes: both values, usize first, the 32-bit fields saturated. */
static void check_local_zip64(int fd, const struct zw_entry *e)
{
    unsigned char h[ZW_LOCAL_LEN + 64];
    CHECK(io_read_exact(fd, h, zw_local_len(e), e->header_off) == 0);
    CHECK_EQ_U64(le16(h + 4), 45);
    CHECK_EQ_U64(le32(h + 18), 0xFFFFFFFFu);
    CHECK_EQ_U64(le32(h + 22), 0xFFFFFFFFu);
    CHECK_EQ_U64(le16(h + 28), 20);
    const unsigned char *x = h + ZW_LOCAL_LEN + e->name_len;
    CHECK_EQ_U64(le16(x), 1);
    CHECK_EQ_U64(le16(x + 2), 16);
    CHECK_EQ_U64(le64(x + 4), e->usize);
    CHECK_EQ_U64(le64(x + 12), e->csize);
}

static void test_zip64_past_4gib(void)
{
    int fd = temp_file();
    if (!CHECK(fd >= 0))
        return;
    struct zw_entry e[2] = {
        {.name = (const unsigned char *)"big", .name_len = 3, .version_needed = 20,
         .method = ZIP_METHOD_DEFLATED, .usize = 5 * GiB, .csize = 4 * GiB + 7,
         .local_zip64 = zw_needs_zip64(5 * GiB, 0)},
        {.name = (const unsigned char *)"far", .name_len = 3, .version_needed = 10,
         .method = ZIP_METHOD_STORED, .usize = 3, .csize = 3},
    };
    CHECK(e[0].local_zip64);
    CHECK(!zw_needs_zip64(3, 3) && zw_needs_zip64(1, 0xFFFFFFFFu));
    uint64_t data0 = put_local(fd, &e[0]);
    e[1].header_off = data0 + e[0].csize;
    uint64_t data1 = put_local(fd, &e[1]);
    put_directory(fd, e, 2, data1 + 3, "");
    check_local_zip64(fd, &e[0]);
    struct zip_archive za;
    char msg[256];
    if (CHECK(zip_open_fd(fd, &za, msg, sizeof msg) == 0)) {
        CHECK_EQ_U64(za.count, 2);
        CHECK_EQ_U64(za.members[0].usize, 5 * GiB);
        CHECK_EQ_U64(za.members[0].csize, 4 * GiB + 7);
        CHECK_EQ_U64(za.members[0].data_off, data0);
        CHECK_EQ_U64(za.members[1].header_off, e[1].header_off);
        CHECK_EQ_U64(za.members[1].data_off, data1);
        CHECK_EQ_U64(za.cd_offset, data1 + 3);
        CHECK_EQ_I64(za.members[0].err, 0);
        CHECK_EQ_I64(za.members[1].err, 0);
        zip_close(&za);
    }
    /* the central entry of "far": only the offset is saturated, so only it is in ZIP64 */
    unsigned char c[ZW_CENTRAL_LEN + 64];
    CHECK_EQ_U64(zw_central(c, &e[1]), ZW_CENTRAL_LEN + 3 + 12);
    CHECK_EQ_U64(le32(c + 20), 3);
    CHECK_EQ_U64(le32(c + 42), 0xFFFFFFFFu);
    CHECK_EQ_U64(le16(c + 30), 12);
    CHECK_EQ_U64(le64(c + ZW_CENTRAL_LEN + 3 + 4), e[1].header_off);
    close(fd);
}

static void test_strip_zip64(void)
{
    const unsigned char in[] = {
        0x01, 0x00, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8,   /* ZIP64: dropped */
        0x55, 0x54, 1, 0, 0,                        /* UT: kept */
        0x01, 0x00, 0, 0,                           /* empty ZIP64: dropped */
        0x0a, 0x00, 2, 0, 9, 9,                     /* NTFS-ish: kept */
        0x99, 0x99, 9, 0, 1,                        /* runs past the end: dropped */
    };
    const unsigned char want[] = {0x55, 0x54, 1, 0, 0, 0x0a, 0x00, 2, 0, 9, 9};
    unsigned char out[sizeof in];
    size_t n = zw_strip_zip64(out, in, sizeof in);
    CHECK_EQ_MEM(out, n, want, sizeof want);
    CHECK(zw_extra_fits(65535 - ZW_ZIP64_EXTRA_MAX));
    CHECK(!zw_extra_fits(65535 - ZW_ZIP64_EXTRA_MAX + 1));
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN_TEST(test_small_archive_has_no_zip64);
    RUN_TEST(test_zip64_past_4gib);
    RUN_TEST(test_strip_zip64);
    return check_summary("test_zipwrite");
}
