/*
 * sozip: see sozip.h. The hidden local header is looked for right after the member's data, or
 * after a data descriptor of any of its four shapes (with or without signature, 32- or 64-bit
 * sizes) when flag bit 3 says there may be one; its name must be the member's index name.
 */
#include "sozip.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "source.h"

#define LOCAL_SIG 0x04034b50u
#define LOCAL_LEN 30

const unsigned char sozip_marker[SOZIP_MARKER_LEN] = {0x00, 0x00, 0xff, 0xff};

int sozip_parse_header(const unsigned char *h, uint64_t csize, uint64_t usize,
                       struct sozip_header *out, char *why, size_t why_len)
{
    *out = (struct sozip_header){le32(h), le32(h + 4), le32(h + 8), le32(h + 12), le64(h + 16),
                                 le64(h + 24)};
    if (out->version != 1)
        return io_fail(why, why_len, -EINVAL, "version %u, not 1", out->version);
    if (out->chunk == 0)
        return io_fail(why, why_len, -EINVAL, "chunk size 0");
    if (out->offset_size != 4 && out->offset_size != 8)
        return io_fail(why, why_len, -EINVAL, "offset size %u", out->offset_size);
    if (out->usize != usize || out->csize != csize)
        return io_fail(why, why_len, -EINVAL, "sizes %llu/%llu differ from the member's",
                       (unsigned long long)out->usize, (unsigned long long)out->csize);
    if (usize <= out->chunk)
        return io_fail(why, why_len, -EINVAL, "member not larger than one chunk");
    return 0;
}

uint64_t sozip_entries(const struct sozip_header *h)
{
    return (h->usize - 1) / h->chunk;
}

int sozip_parse_offsets(const struct sozip_header *h, const unsigned char *raw, uint64_t *off,
                        char *why, size_t why_len)
{
    uint64_t n = sozip_entries(h);
    off[0] = 0;
    for (uint64_t k = 0; k < n; k++) {
        const unsigned char *p = raw + k * h->offset_size;
        uint64_t v = h->offset_size == 4 ? le32(p) : le64(p);
        if (v <= off[k])
            return io_fail(why, why_len, -EINVAL, "offset %llu not ascending",
                           (unsigned long long)(k + 1));
        if (v >= h->csize)
            return io_fail(why, why_len, -EINVAL, "offset %llu past the compressed size",
                           (unsigned long long)(k + 1));
        off[k + 1] = v;
    }
    off[n + 1] = h->csize;
    return 0;
}

int sozip_index_name(const char *name, size_t name_len, char *out, size_t cap)
{
    static const char suffix[] = ".sozip.idx";
    size_t dir = name_len;
    while (dir > 0 && name[dir - 1] != '/')
        dir--;
    size_t len = name_len + 1 + sizeof suffix - 1;
    if (len + 1 > cap || dir == name_len)
        return -1;
    memcpy(out, name, dir);
    out[dir] = '.';
    memcpy(out + dir + 1, name + dir, name_len - dir);
    memcpy(out + name_len + 1, suffix, sizeof suffix);
    return (int)len;
}

/* Where the hidden file's data starts when a valid local header for it is at `at`; 0 when the
 * header is not there (not an error: the next candidate may hold it). */
static uint64_t hidden_data(struct source *src, uint64_t at, const char *want, size_t want_len,
                            uint64_t *stored_len)
{
    unsigned char h[LOCAL_LEN + 512];
    if (want_len > sizeof h - LOCAL_LEN || source_read(src, h, LOCAL_LEN + want_len, at) < 0)
        return 0;
    if (le32(h) != LOCAL_SIG || le16(h + 8) != ZIP_METHOD_STORED || (le16(h + 6) & 1) ||
        le16(h + 26) != want_len || memcmp(h + LOCAL_LEN, want, want_len) != 0)
        return 0;
    *stored_len = le32(h + 18); /* 0xffffffff: in a ZIP64 extra, which we do not need */
    return at + LOCAL_LEN + want_len + le16(h + 28);
}

/* The hidden index's data offset in the file, or 0 when there is none. */
static uint64_t find_hidden(struct source *src, const struct zip_member *zm, uint64_t *stored_len)
{
    char want[512];
    int wl = sozip_index_name(zm->name, zm->name_len, want, sizeof want);
    if (wl < 0)
        return 0;
    /* signature first, the usual; last, none at all, as some writers set the flag anyway */
    static const unsigned descriptor[] = {16, 24, 12, 20, 0};
    uint64_t end = zm->data_off + zm->csize;
    if (!(zm->flags & ZIP_FLAG_DESCRIPTOR))
        return hidden_data(src, end, want, (size_t)wl, stored_len);
    for (size_t i = 0; i < sizeof descriptor / sizeof *descriptor; i++) {
        uint64_t at = hidden_data(src, end + descriptor[i], want, (size_t)wl, stored_len);
        if (at)
            return at;
    }
    return 0;
}

void sozip_index_free(struct sozip_index *ix, struct budget *mem)
{
    if (mem && ix->bytes)
        budget_give(mem, ix->bytes);
    free(ix->off);
    *ix = (struct sozip_index){0};
}

/* Reads and checks the offsets behind header h, which starts at `at`. */
static int load_offsets(struct source *src, uint64_t at, uint64_t file_size, const struct sozip_header *h,
                        struct budget *mem, struct sozip_index *out, char *why, size_t why_len)
{
    uint64_t n = sozip_entries(h);
    uint64_t from = at + SOZIP_HEADER + h->skip;
    /* n < csize (ascending offsets below it) bounds the table by the archive's own size */
    if (n >= h->csize || from > file_size || n * h->offset_size > file_size - from)
        return io_fail(why, why_len, -EINVAL, "index truncated");
    if (mem && budget_take(mem, (n + 2) * sizeof *out->off) < 0)
        return io_fail(why, why_len, -ENOMEM, "index larger than the memory budget");
    out->bytes = mem ? (n + 2) * sizeof *out->off : 0;
    out->off = malloc((n + 2) * sizeof *out->off);
    unsigned char *raw = malloc(n * h->offset_size + 1);
    int rc = out->off && raw ? source_read(src, raw, (size_t)(n * h->offset_size), from)
                             : -ENOMEM;
    if (rc < 0)
        rc = io_fail(why, why_len, rc, rc == -ENOMEM ? "out of memory" : "index unreadable");
    else
        rc = sozip_parse_offsets(h, raw, out->off, why, why_len);
    free(raw);
    if (rc < 0) {
        sozip_index_free(out, mem);
        return rc;
    }
    out->chunk = h->chunk;
    out->nchunks = n + 1;
    return 0;
}

/* Finds member zm's index and reads its header into *hd; returns where the header starts, or
 * a negative errno (-ENOENT: no index). */
static int64_t read_header(struct source *src, const struct zip_member *zm,
                           struct sozip_header *hd, uint64_t *stored_len, char *why,
                           size_t why_len)
{
    if (zm->method != ZIP_METHOD_DEFLATED || zm->err)
        return -ENOENT;
    uint64_t at = find_hidden(src, zm, stored_len);
    if (!at)
        return -ENOENT;
    unsigned char h[SOZIP_HEADER];
    if (source_read(src, h, sizeof h, at) < 0)
        return io_fail(why, why_len, -EINVAL, "index truncated");
    int rc = sozip_parse_header(h, zm->csize, zm->usize, hd, why, why_len);
    return rc < 0 ? rc : (int64_t)at;
}

int sozip_peek(struct source *src, const struct zip_member *zm, uint64_t *chunk)
{
    struct sozip_header hd;
    uint64_t stored_len = 0;
    char why[128];
    int64_t at = read_header(src, zm, &hd, &stored_len, why, sizeof why);
    *chunk = at < 0 ? 0 : hd.chunk;
    return at < 0 ? (int)at : 0;
}

int sozip_load(struct source *src, const struct zip_member *zm, struct budget *mem,
               struct sozip_index *out, char *why, size_t why_len)
{
    *out = (struct sozip_index){0};
    struct sozip_header hd;
    uint64_t stored_len = 0;
    int64_t at = read_header(src, zm, &hd, &stored_len, why, why_len);
    if (at < 0)
        return (int)at;
    uint64_t need = SOZIP_HEADER + (uint64_t)hd.skip + sozip_entries(&hd) * hd.offset_size;
    if (stored_len != 0xffffffffu && stored_len < need)
        return io_fail(why, why_len, -EINVAL, "index truncated");
    return load_offsets(src, at, src->size, &hd, mem, out, why, why_len);
}
