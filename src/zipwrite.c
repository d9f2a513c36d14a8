/*
 * zipwrite: see zipwrite.h. Record layouts (APPNOTE 6.3.9, 4.3.7 ff.):
 *   local header   PK\3\4, 30 bytes + name + extra
 *   central entry  PK\1\2, 46 bytes + name + extra + comment
 *   ZIP64 end      PK\6\6, 56 bytes; its locator PK\6\7, 20 bytes; end record PK\5\6, 22 bytes
 */
#include "zipwrite.h"

#include <string.h>

#include "io.h"

#define SAT32 0xFFFFFFFFu
#define SAT16 0xFFFFu
#define ZIP64_ID 0x0001u
#define ZIP64_VERSION 45

bool zw_needs_zip64(uint64_t usize, uint64_t csize_bound)
{
    return usize >= SAT32 || csize_bound >= SAT32;
}

size_t zw_strip_zip64(unsigned char *dst, const unsigned char *src, size_t len)
{
    size_t out = 0;
    while (len >= 4) {
        size_t n = 4 + (size_t)le16(src + 2);
        if (n > len)
            break;
        if (le16(src) != ZIP64_ID) {
            memcpy(dst + out, src, n);
            out += n;
        }
        src += n;
        len -= n;
    }
    return out;
}

bool zw_extra_fits(size_t extra_len)
{
    return extra_len + ZW_ZIP64_EXTRA_MAX <= SAT16;
}

/* The ZIP64 field of a central entry holds only the values whose own field is saturated. */
static int central_zip64_values(const struct zw_entry *e, uint64_t v[3])
{
    int n = 0;
    if (e->usize >= SAT32)
        v[n++] = e->usize;
    if (e->csize >= SAT32)
        v[n++] = e->csize;
    if (e->header_off >= SAT32)
        v[n++] = e->header_off;
    return n;
}

static size_t zip64_field(unsigned char *out, const uint64_t *v, int n)
{
    if (n == 0)
        return 0;
    put_le16(out, ZIP64_ID);
    put_le16(out + 2, (uint16_t)(8 * n));
    for (int i = 0; i < n; i++)
        put_le64(out + 4 + 8 * i, v[i]);
    return 4 + 8 * (size_t)n;
}

/* memcpy with a NULL source is undefined even for 0 bytes, and absent fields are NULL. */
static unsigned char *put_bytes(unsigned char *dst, const void *src, size_t n)
{
    if (n)
        memcpy(dst, src, n);
    return dst + n;
}

static uint32_t sat32(uint64_t v)
{
    return v >= SAT32 ? SAT32 : (uint32_t)v;
}

static uint16_t version_needed(const struct zw_entry *e, bool zip64)
{
    return zip64 && e->version_needed < ZIP64_VERSION ? ZIP64_VERSION : e->version_needed;
}

size_t zw_local_len(const struct zw_entry *e)
{
    return ZW_LOCAL_LEN + e->name_len + e->extra_len + (e->local_zip64 ? 20 : 0);
}

size_t zw_local(unsigned char *out, const struct zw_entry *e)
{
    uint64_t sizes[2] = {e->usize, e->csize};
    unsigned char z64[ZW_ZIP64_EXTRA_MAX];
    size_t zlen = e->local_zip64 ? zip64_field(z64, sizes, 2) : 0;
    put_le32(out, 0x04034b50u);
    put_le16(out + 4, version_needed(e, e->local_zip64));
    put_le16(out + 6, e->flags);
    put_le16(out + 8, e->method);
    put_le16(out + 10, e->dos_time);
    put_le16(out + 12, e->dos_date);
    put_le32(out + 14, e->crc32);
    put_le32(out + 18, e->local_zip64 ? SAT32 : (uint32_t)e->csize);
    put_le32(out + 22, e->local_zip64 ? SAT32 : (uint32_t)e->usize);
    put_le16(out + 26, e->name_len);
    put_le16(out + 28, (uint16_t)(e->extra_len + zlen));
    unsigned char *p = put_bytes(out + ZW_LOCAL_LEN, e->name, e->name_len);
    p = put_bytes(p, z64, zlen);
    p = put_bytes(p, e->extra, e->extra_len);
    return (size_t)(p - out);
}

size_t zw_central_len(const struct zw_entry *e)
{
    uint64_t v[3];
    int n = central_zip64_values(e, v);
    return ZW_CENTRAL_LEN + e->name_len + (n ? 4 + 8 * (size_t)n : 0) + e->extra_len +
           e->comment_len;
}

size_t zw_central(unsigned char *out, const struct zw_entry *e)
{
    uint64_t v[3];
    unsigned char z64[ZW_ZIP64_EXTRA_MAX];
    size_t zlen = zip64_field(z64, v, central_zip64_values(e, v));
    put_le32(out, 0x02014b50u);
    put_le16(out + 4, e->version_made);
    put_le16(out + 6, version_needed(e, zlen > 0));
    put_le16(out + 8, e->flags);
    put_le16(out + 10, e->method);
    put_le16(out + 12, e->dos_time);
    put_le16(out + 14, e->dos_date);
    put_le32(out + 16, e->crc32);
    put_le32(out + 20, sat32(e->csize));
    put_le32(out + 24, sat32(e->usize));
    put_le16(out + 28, e->name_len);
    put_le16(out + 30, (uint16_t)(e->extra_len + zlen));
    put_le16(out + 32, e->comment_len);
    put_le16(out + 34, 0); /* disk */
    put_le16(out + 36, e->internal_attr);
    put_le32(out + 38, e->external_attr);
    put_le32(out + 42, sat32(e->header_off));
    unsigned char *p = put_bytes(out + ZW_CENTRAL_LEN, e->name, e->name_len);
    p = put_bytes(p, z64, zlen);
    p = put_bytes(p, e->extra, e->extra_len);
    p = put_bytes(p, e->comment, e->comment_len);
    return (size_t)(p - out);
}

size_t zw_end(unsigned char *out, uint64_t count, uint64_t cd_off, uint64_t cd_size,
              const unsigned char *comment, uint16_t comment_len)
{
    unsigned char *p = out;
    if (count >= SAT16 || cd_off >= SAT32 || cd_size >= SAT32) {
        uint64_t end64_off = cd_off + cd_size;
        memset(p, 0, 56 + 20);
        put_le32(p, 0x06064b50u);
        put_le64(p + 4, 56 - 12); /* size of the rest of the record */
        put_le16(p + 12, ZIP64_VERSION);
        put_le16(p + 14, ZIP64_VERSION);
        put_le64(p + 24, count); /* this disk's entries, then all (disks 0 and 0 before) */
        put_le64(p + 32, count);
        put_le64(p + 40, cd_size);
        put_le64(p + 48, cd_off);
        p += 56;
        put_le32(p, 0x07064b50u);
        put_le64(p + 8, end64_off);
        put_le32(p + 16, 1); /* disks in all */
        p += 20;
    }
    memset(p, 0, 22);
    put_le32(p, 0x06054b50u);
    put_le16(p + 8, count >= SAT16 ? SAT16 : (uint16_t)count);
    put_le16(p + 10, count >= SAT16 ? SAT16 : (uint16_t)count);
    put_le32(p + 12, sat32(cd_size));
    put_le32(p + 16, sat32(cd_off));
    put_le16(p + 20, comment_len);
    return (size_t)(put_bytes(p + 22, comment, comment_len) - out);
}
