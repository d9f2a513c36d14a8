/*
 * test_sozip: the SOZip index parser and finder (src/sozip.h), on byte layouts written here
 * from the specification (version 0.5): the 32-byte header, the offset section, the hidden
 * file's name, and the local header right after a member's data or data descriptor.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fd_source.h"
#include "io.h"
#include "sozip.h"

static void header(unsigned char *h, uint32_t version, uint32_t skip, uint32_t chunk,
                   uint32_t osize, uint64_t usize, uint64_t csize)
{
    put_le32(h, version);
    put_le32(h + 4, skip);
    put_le32(h + 8, chunk);
    put_le32(h + 12, osize);
    put_le64(h + 16, usize);
    put_le64(h + 24, csize);
}

static int parse(uint32_t version, uint32_t chunk, uint32_t osize, uint64_t usize,
                 uint64_t csize)
{
    unsigned char h[SOZIP_HEADER];
    struct sozip_header hd;
    char why[128] = "";
    header(h, version, 0, chunk, osize, usize, csize);
    int rc = sozip_parse_header(h, 5000, 100000, &hd, why, sizeof why);
    CHECK(rc == 0 || why[0]);
    return rc;
}

static void test_header(void)
{
    CHECK_EQ_I64(parse(1, 32768, 4, 100000, 5000), 0);
    CHECK_EQ_I64(parse(1, 32768, 8, 100000, 5000), 0);
    CHECK_EQ_I64(parse(2, 32768, 4, 100000, 5000), -EINVAL);
    CHECK_EQ_I64(parse(1, 0, 4, 100000, 5000), -EINVAL);
    CHECK_EQ_I64(parse(1, 32768, 3, 100000, 5000), -EINVAL);
    CHECK_EQ_I64(parse(1, 32768, 4, 100001, 5000), -EINVAL);
    CHECK_EQ_I64(parse(1, 32768, 4, 100000, 4999), -EINVAL);
    CHECK_EQ_I64(parse(1, 100000, 4, 100000, 5000), -EINVAL); /* one chunk: no index */
    unsigned char h[SOZIP_HEADER];
    struct sozip_header hd;
    char why[128];
    header(h, 1, 7, 4096, 8, 100000, 5000);
    if (CHECK(sozip_parse_header(h, 5000, 100000, &hd, why, sizeof why) == 0)) {
        CHECK_EQ_U64(hd.skip, 7);
        CHECK_EQ_U64(sozip_entries(&hd), 24); /* (100000 - 1) / 4096 */
    }
    header(h, 1, 0, 4096, 4, 8192, 5000); /* exactly two chunks: one entry */
    CHECK(sozip_parse_header(h, 5000, 8192, &hd, why, sizeof why) == 0 &&
          sozip_entries(&hd) == 1);
}

static int offsets(uint32_t osize, const uint64_t *v, size_t n, uint64_t *off)
{
    struct sozip_header hd = {1, 0, 1000, osize, 1000 * n + 1, 5000};
    unsigned char raw[64];
    for (size_t k = 0; k < n; k++) {
        if (osize == 4)
            put_le32(raw + 4 * k, (uint32_t)v[k]);
        else
            put_le64(raw + 8 * k, v[k]);
    }
    char why[128];
    return sozip_parse_offsets(&hd, raw, off, why, sizeof why);
}

static void test_offsets(void)
{
    uint64_t off[8];
    const uint64_t good[] = {10, 200, 4999};
    CHECK_EQ_I64(offsets(4, good, 3, off), 0);
    CHECK(off[0] == 0 && off[1] == 10 && off[3] == 4999 && off[4] == 5000);
    CHECK_EQ_I64(offsets(8, good, 3, off), 0);
    const uint64_t swapped[] = {200, 10, 300};
    CHECK_EQ_I64(offsets(4, swapped, 3, off), -EINVAL);
    const uint64_t equal[] = {10, 10, 300};
    CHECK_EQ_I64(offsets(8, equal, 3, off), -EINVAL);
    const uint64_t zero[] = {0, 10, 300};
    CHECK_EQ_I64(offsets(4, zero, 3, off), -EINVAL);
    const uint64_t past[] = {10, 20, 5000};
    CHECK_EQ_I64(offsets(4, past, 3, off), -EINVAL);
    const uint64_t wide[] = {10, 20, (1ull << 32) + 5};
    CHECK_EQ_I64(offsets(8, wide, 3, off), -EINVAL);
}

static void test_names(void)
{
    char out[64];
    CHECK_EQ_I64(sozip_index_name("x.npy", 5, out, sizeof out), 16);
    CHECK_EQ_STR(out, ".x.npy.sozip.idx");
    CHECK(sozip_index_name("a/b/x.npy", 9, out, sizeof out) == 20);
    CHECK_EQ_STR(out, "a/b/.x.npy.sozip.idx");
    CHECK_EQ_I64(sozip_index_name("dir/", 4, out, sizeof out), -1);
    CHECK_EQ_I64(sozip_index_name("x.npy", 5, out, 16), -1); /* no room for the NUL */
    CHECK_EQ_I64(sozip_index_name("x.npy", 5, out, 17), 16);
}

/* An archive fragment: csize bytes of member data at 0, an optional descriptor of desc bytes,
 * then the hidden file's local header (stored, named idx_name, stored length slen) and its
 * contents: header plus offsets 100, 200, ... (4 bytes each). */
struct layout {
    const char *idx_name;
    size_t desc;
    uint32_t slen_cut;  /* bytes the local header's size claims less than the index has */
    uint32_t file_cut;  /* bytes the file lacks at its end */
    uint16_t method;
};

#define CSIZE 1000u
#define USIZE 40000u
#define CHUNK 4096u

static int make_file(const struct layout *l)
{
    FILE *f = tmpfile();
    if (!f)
        return -1;
    unsigned char buf[4096] = {0};
    size_t n = CSIZE + l->desc;
    uint32_t entries = (USIZE - 1) / CHUNK;
    uint32_t ilen = SOZIP_HEADER + 4 * entries;
    size_t name_len = strlen(l->idx_name);
    unsigned char *h = buf + n;
    put_le32(h, 0x04034b50);
    put_le16(h + 4, 20);
    put_le16(h + 8, l->method);
    put_le32(h + 18, ilen - l->slen_cut);
    put_le32(h + 22, ilen - l->slen_cut);
    put_le16(h + 26, (uint16_t)name_len);
    memcpy(h + 30, l->idx_name, name_len);
    n += 30 + name_len;
    header(buf + n, 1, 0, CHUNK, 4, USIZE, CSIZE);
    n += SOZIP_HEADER;
    for (uint32_t k = 0; k < entries; k++, n += 4)
        put_le32(buf + n, 100 * (k + 1));
    n -= l->file_cut;
    int fd = dup(fileno(f));
    if (fd >= 0 && io_write_exact(fd, buf, n, 0) < 0) {
        close(fd);
        fd = -1;
    }
    fclose(f);
    return fd;
}

/* sozip_load of the layout's member, or sozip_peek when peek is not NULL. */
static int load_or_peek(const struct layout *l, uint16_t flags, struct budget *mem,
                        struct sozip_index *ix, uint64_t *peek)
{
    int fd = make_file(l);
    if (!CHECK(fd >= 0))
        return -EBADF;
    char name[] = "dir/m.npy", why[128] = "";
    struct zip_member zm = {.name = name, .name_len = 9, .method = ZIP_METHOD_DEFLATED,
                            .flags = flags, .csize = CSIZE, .usize = USIZE, .data_off = 0};
    struct source *src = fd_source(fd);
    int rc = !src ? -EBADF : peek ? sozip_peek(src, &zm, peek)
                                  : sozip_load(src, &zm, mem, ix, why, sizeof why);
    source_close(src);
    CHECK(rc == 0 || rc == -ENOENT || peek || why[0]);
    close(fd);
    return rc;
}

static int load(const struct layout *l, uint16_t flags, struct budget *mem,
                struct sozip_index *ix)
{
    return load_or_peek(l, flags, mem, ix, NULL);
}

/* sozip_peek reads the header only: what only the offsets show passes. */
static void test_peek(void)
{
    uint64_t chunk = 1;
    struct layout l = {.idx_name = "dir/.m.npy.sozip.idx"};
    CHECK_EQ_I64(load_or_peek(&l, 0, NULL, NULL, &chunk), 0);
    CHECK_EQ_U64(chunk, CHUNK);
    l.file_cut = 1; /* the last offset cut short */
    CHECK_EQ_I64(load_or_peek(&l, 0, NULL, NULL, &chunk), 0);
    l.file_cut = 0;
    l.idx_name = ".m.npy.sozip.idx";
    CHECK_EQ_I64(load_or_peek(&l, 0, NULL, NULL, &chunk), -ENOENT);
    CHECK_EQ_U64(chunk, 0);
    l.idx_name = "dir/.m.npy.sozip.idx";
    l.file_cut = 4 * ((USIZE - 1) / CHUNK) + 1; /* into the header */
    CHECK_EQ_I64(load_or_peek(&l, 0, NULL, NULL, &chunk), -EINVAL);
}

static void test_load(void)
{
    struct sozip_index ix;
    struct budget mem;
    budget_init(&mem, 1 << 20);
    struct layout l = {.idx_name = "dir/.m.npy.sozip.idx"};
    if (CHECK_EQ_I64(load(&l, 0, &mem, &ix), 0)) {
        CHECK_EQ_U64(ix.chunk, CHUNK);
        CHECK_EQ_U64(ix.nchunks, 10);
        CHECK(ix.off[0] == 0 && ix.off[1] == 100 && ix.off[9] == 900 && ix.off[10] == CSIZE);
        CHECK(budget_used(&mem) > 0);
        sozip_index_free(&ix, &mem);
        CHECK_EQ_U64(budget_used(&mem), 0);
    }
    for (size_t d = 12; d <= 24; d += 4) { /* every shape of data descriptor */
        l.desc = d;
        CHECK_EQ_I64(load(&l, ZIP_FLAG_DESCRIPTOR, &mem, &ix), 0);
        sozip_index_free(&ix, &mem);
        CHECK_EQ_I64(load(&l, 0, &mem, &ix), -ENOENT); /* no flag: no descriptor looked for */
    }
    l.desc = 0; /* the flag without a descriptor */
    CHECK_EQ_I64(load(&l, ZIP_FLAG_DESCRIPTOR, &mem, &ix), 0);
    sozip_index_free(&ix, &mem);
    l.desc = 8; /* no descriptor is 8 bytes long */
    CHECK_EQ_I64(load(&l, ZIP_FLAG_DESCRIPTOR, &mem, &ix), -ENOENT);
    l.desc = 0;
    l.idx_name = ".m.npy.sozip.idx"; /* not in the member's directory */
    CHECK_EQ_I64(load(&l, 0, &mem, &ix), -ENOENT);
    l.idx_name = "dir/.m.npy.sozip.idx";
    l.method = ZIP_METHOD_DEFLATED;
    CHECK_EQ_I64(load(&l, 0, &mem, &ix), -ENOENT);
    l.method = ZIP_METHOD_STORED;
    l.slen_cut = 4;
    CHECK_EQ_I64(load(&l, 0, &mem, &ix), -EINVAL);
    l.slen_cut = 0;
    l.file_cut = 1;
    CHECK_EQ_I64(load(&l, 0, &mem, &ix), -EINVAL);
    l.file_cut = 0;
    struct budget tiny;
    budget_init(&tiny, 16);
    CHECK_EQ_I64(load(&l, 0, &tiny, &ix), -ENOMEM);
    CHECK_EQ_U64(budget_used(&tiny), 0);
    CHECK_EQ_U64(budget_used(&mem), 0);
}

int main(void)
{
    RUN_TEST(test_header);
    RUN_TEST(test_offsets);
    RUN_TEST(test_names);
    RUN_TEST(test_load);
    RUN_TEST(test_peek);
    return check_summary("test_sozip");
}
