/*
 * zipdir: see zipdir.h. Layout facts (PKWARE APPNOTE 6.3, and what numpy/CPython write):
 *   end record (EOCD)      22 bytes + comment, signature PK\5\6
 *   ZIP64 locator          20 bytes right before the EOCD, signature PK\6\7
 *   ZIP64 end record       56+ bytes, signature PK\6\6
 *   central entry          46 bytes + name + extra + comment, signature PK\1\2
 *   local header           30 bytes + name + extra, signature PK\3\4
 */
#include "zipdir.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io.h"
#include "source.h"

#define SIG_EOCD 0x06054b50u
#define SIG_LOC64 0x07064b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_LOCAL 0x04034b50u

#define EOCD_LEN 22
#define LOC64_LEN 20
#define EOCD64_LEN 56
#define CENTRAL_LEN 46
#define LOCAL_LEN 30
#define MAX_COMMENT 65535u

/* Where the central directory is, once the end records have been understood. */
struct cd_location {
    uint64_t offset;     /* file coordinates */
    uint64_t size;
    uint64_t count;      /* declared entry count (informational: the walk trusts size) */
    uint64_t prefix;
};


/* Returns the EOCD position, or -1. An exact comment-length match wins over a shorter one so
 * that a stray signature inside a comment is not taken for the record. */
static int64_t find_eocd(const unsigned char *tail, uint64_t tail_len, uint64_t tail_off,
                         uint64_t file_size)
{
    int64_t loose = -1;
    if (tail_len < EOCD_LEN)
        return -1;
    for (int64_t i = (int64_t)(tail_len - EOCD_LEN); i >= 0; i--) {
        const unsigned char *p = tail + i;
        if (le32(p) != SIG_EOCD)
            continue;
        uint64_t end = tail_off + (uint64_t)i + EOCD_LEN + le16(p + 20);
        if (end == file_size)
            return (int64_t)tail_off + i;
        if (end < file_size && loose < 0)
            loose = (int64_t)tail_off + i;
    }
    return loose;
}

static int read_zip64_end(struct source *src, uint64_t eocd_pos, struct cd_location *cd, char *msg,
                          size_t len)
{
    unsigned char loc[LOC64_LEN], rec[EOCD64_LEN];
    if (eocd_pos < LOC64_LEN)
        return 0;
    if (source_read(src, loc, sizeof loc, eocd_pos - LOC64_LEN) < 0 || le32(loc) != SIG_LOC64)
        return 0; /* no locator: the classic record is all there is */
    if (le32(loc + 4) != 0 || le32(loc + 16) > 1)
        return io_fail(msg, len, -EINVAL, "multi-disk archives are not supported");

    /* The locator's offset is wrong when data was prepended; the record normally sits right
     * before the locator, so try the stated place first and that one second. */
    uint64_t stated = le64(loc + 8);
    uint64_t candidates[2] = {stated, eocd_pos - LOC64_LEN - EOCD64_LEN};
    int ncand = eocd_pos >= LOC64_LEN + EOCD64_LEN ? 2 : 1;
    for (int i = 0; i < ncand; i++) {
        uint64_t at = candidates[i];
        if (at > eocd_pos - LOC64_LEN || eocd_pos - LOC64_LEN - at < EOCD64_LEN)
            continue;
        if (source_read(src, rec, sizeof rec, at) < 0 || le32(rec) != SIG_EOCD64)
            continue;
        if (le32(rec + 16) != 0 || le32(rec + 20) != 0 || le64(rec + 24) != le64(rec + 32))
            return io_fail(msg, len, -EINVAL, "multi-disk archives are not supported");
        cd->count = le64(rec + 32);
        cd->size = le64(rec + 40);
        cd->offset = le64(rec + 48);
        if (cd->offset > at || cd->size > at - cd->offset)
            return io_fail(msg, len, -EINVAL, "central directory lies outside the file");
        cd->prefix = at - cd->offset - cd->size;
        cd->offset += cd->prefix;
        return 1;
    }
    return io_fail(msg, len, -EINVAL, "ZIP64 end record is missing or corrupt");
}

static int locate_cd(struct source *src, uint64_t file_size, struct cd_location *cd, char *msg, size_t len)
{
    uint64_t tail_len = file_size < MAX_COMMENT + EOCD_LEN ? file_size : MAX_COMMENT + EOCD_LEN;
    uint64_t tail_off = file_size - tail_len;
    unsigned char *tail = malloc(tail_len ? tail_len : 1);
    if (!tail)
        return io_fail(msg, len, -ENOMEM, "out of memory");
    int rc = source_read(src, tail, tail_len, tail_off);
    if (rc < 0) {
        free(tail);
        return io_fail(msg, len, rc, "cannot read: %s", strerror(-rc));
    }
    int64_t pos = find_eocd(tail, tail_len, tail_off, file_size);
    if (pos < 0) {
        free(tail);
        return io_fail(msg, len, -EINVAL, "not a ZIP archive (no end of central directory record)");
    }
    const unsigned char *e = tail + (pos - (int64_t)tail_off);
    uint16_t disk = le16(e + 4), cd_disk = le16(e + 6);
    uint16_t on_disk = le16(e + 8), total = le16(e + 10);
    uint64_t size = le32(e + 12), offset = le32(e + 16);
    free(tail);

    rc = read_zip64_end(src, (uint64_t)pos, cd, msg, len);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return 0;
    if ((disk != 0 && disk != 0xFFFF) || (cd_disk != 0 && cd_disk != 0xFFFF) || on_disk != total)
        return io_fail(msg, len, -EINVAL, "multi-disk archives are not supported");
    if (offset > (uint64_t)pos || size > (uint64_t)pos - offset)
        return io_fail(msg, len, -EINVAL,
                    "truncated or corrupt: central directory lies outside the file");
    cd->count = total;
    cd->size = size;
    cd->prefix = (uint64_t)pos - offset - size;
    cd->offset = offset + cd->prefix;
    return 0;
}

/* CP437's upper half as Unicode code points (the lower half is ASCII). */
static const uint16_t cp437_high[128] = {
    0x00C7, 0x00FC, 0x00E9, 0x00E2, 0x00E4, 0x00E0, 0x00E5, 0x00E7, 0x00EA, 0x00EB, 0x00E8,
    0x00EF, 0x00EE, 0x00EC, 0x00C4, 0x00C5, 0x00C9, 0x00E6, 0x00C6, 0x00F4, 0x00F6, 0x00F2,
    0x00FB, 0x00F9, 0x00FF, 0x00D6, 0x00DC, 0x00A2, 0x00A3, 0x00A5, 0x20A7, 0x0192, 0x00E1,
    0x00ED, 0x00F3, 0x00FA, 0x00F1, 0x00D1, 0x00AA, 0x00BA, 0x00BF, 0x2310, 0x00AC, 0x00BD,
    0x00BC, 0x00A1, 0x00AB, 0x00BB, 0x2591, 0x2592, 0x2593, 0x2502, 0x2524, 0x2561, 0x2562,
    0x2556, 0x2555, 0x2563, 0x2551, 0x2557, 0x255D, 0x255C, 0x255B, 0x2510, 0x2514, 0x2534,
    0x252C, 0x251C, 0x2500, 0x253C, 0x255E, 0x255F, 0x255A, 0x2554, 0x2569, 0x2566, 0x2560,
    0x2550, 0x256C, 0x2567, 0x2568, 0x2564, 0x2565, 0x2559, 0x2558, 0x2552, 0x2553, 0x256B,
    0x256A, 0x2518, 0x250C, 0x2588, 0x2584, 0x258C, 0x2590, 0x2580, 0x03B1, 0x00DF, 0x0393,
    0x03C0, 0x03A3, 0x03C3, 0x00B5, 0x03C4, 0x03A6, 0x0398, 0x03A9, 0x03B4, 0x221E, 0x03C6,
    0x03B5, 0x2229, 0x2261, 0x00B1, 0x2265, 0x2264, 0x2320, 0x2321, 0x00F7, 0x2248, 0x00B0,
    0x2219, 0x00B7, 0x221A, 0x207F, 0x00B2, 0x25A0, 0x00A0,
};

/* Appends the name to the pool (at most 3 bytes per CP437 byte) and returns its length. */
static uint32_t copy_name(char *dst, const unsigned char *src, uint32_t n, bool utf8)
{
    uint32_t o = 0;
    for (uint32_t i = 0; i < n; i++) {
        unsigned c = src[i];
        if (utf8 || c < 0x80) {
            dst[o++] = (char)c;
        } else if (cp437_high[c - 0x80] < 0x800) {
            unsigned u = cp437_high[c - 0x80];
            dst[o++] = (char)(0xC0 | u >> 6);
            dst[o++] = (char)(0x80 | (u & 0x3F));
        } else {
            unsigned u = cp437_high[c - 0x80];
            dst[o++] = (char)(0xE0 | u >> 12);
            dst[o++] = (char)(0x80 | ((u >> 6) & 0x3F));
            dst[o++] = (char)(0x80 | (u & 0x3F));
        }
    }
    dst[o] = '\0';
    return o;
}

/* The last DOS timestamp converted: mktime is slow (it rereads the zone), and archives repeat
 * one timestamp (numpy writes 1980-01-01 for all). */
struct time_memo {
    bool valid;
    uint32_t key;
    int64_t value;
};

/* DOS time as local time. */
static int64_t dos_time(uint16_t time, uint16_t date, struct time_memo *memo)
{
    uint32_t key = (uint32_t)date << 16 | time;
    if (memo->valid && key == memo->key)
        return memo->value;
    struct tm tm = {
        .tm_year = 80 + (date >> 9),
        .tm_mon = ((date >> 5) & 15) - 1,
        .tm_mday = date & 31,
        .tm_hour = time >> 11,
        .tm_min = (time >> 5) & 63,
        .tm_sec = (time & 31) * 2,
        .tm_isdst = -1,
    };
    time_t t = mktime(&tm);
    memo->valid = true;
    memo->key = key;
    memo->value = t == (time_t)-1 ? 0 : (int64_t)t;
    return memo->value;
}

/* Whether a DOS timestamp says anything: numpy (through zipfile) writes 1980-01-01 00:00:00
 * for every member, and some writers leave zeros or fields out of range. */
static bool dos_time_known(uint16_t time, uint16_t date)
{
    unsigned mon = (date >> 5) & 15, day = date & 31;
    if (date == (1u << 5 | 1u) && time == 0)
        return false;
    return mon >= 1 && mon <= 12 && day >= 1 && (time >> 11) <= 23 && ((time >> 5) & 63) <= 59 &&
           (time & 31) <= 29;
}

static void member_error(struct zip_member *m, int err, const char *why)
{
    if (m->err == 0) {
        m->err = err;
        m->why = why;
    }
}

/* Applies the extra fields of a central entry: ZIP64 sizes/offset (only those whose 32-bit
 * field is saturated, in the order usize, csize, offset), the UT extended timestamp and
 * WinZip AES's parameters. */
static void parse_central_extra(struct zip_member *m, const unsigned char *x, uint32_t len,
                                bool need_us, bool need_cs, bool need_off)
{
    bool got_zip64 = false;
    while (len >= 4) {
        uint16_t id = le16(x), n = le16(x + 2);
        if (n > len - 4)
            break;
        const unsigned char *d = x + 4;
        if (id == 0x0001 && !got_zip64) {
            uint32_t at = 0;
            got_zip64 = true;
            if (need_us && at + 8 <= n) {
                m->usize = le64(d + at);
                at += 8;
                need_us = false;
            }
            if (need_cs && at + 8 <= n) {
                m->csize = le64(d + at);
                at += 8;
                need_cs = false;
            }
            if (need_off && at + 8 <= n) {
                m->header_off = le64(d + at);
                need_off = false;
            }
        } else if (id == 0x5455 && n >= 5 && (d[0] & 1)) {
            m->mtime = (int32_t)le32(d + 1);
            m->mtime_known = true;
        } else if (id == 0x9901 && n >= 7 && d[2] == 'A' && d[3] == 'E') {
            m->aes_version = le16(d);
            m->aes_strength = d[4];
            m->aes_method = le16(d + 5);
        }
        x += 4 + n;
        len -= 4 + n;
    }
    if (need_us || need_cs || need_off)
        member_error(m, -EIO, "ZIP64 extra field missing or too short");
}

/* First pass: checks the framing of every entry, and counts entries and the name bytes they
 * will need (CP437 names can grow to 3 bytes per character in UTF-8). */
static int measure_central(const unsigned char *cd, uint64_t cd_size, uint64_t *count,
                           uint64_t *pool_bytes, char *msg, size_t len)
{
    uint64_t pos = 0, n = 0, pool = 0;
    while (pos < cd_size) {
        const unsigned char *e = cd + pos;
        if (cd_size - pos < CENTRAL_LEN || le32(e) != SIG_CENTRAL)
            return io_fail(msg, len, -EINVAL, "corrupt central directory (entry %llu)",
                        (unsigned long long)n);
        uint32_t nlen = le16(e + 28), xlen = le16(e + 30), clen = le16(e + 32);
        uint64_t elen = CENTRAL_LEN + (uint64_t)nlen + xlen + clen;
        if (elen > cd_size - pos)
            return io_fail(msg, len, -EINVAL, "corrupt central directory (entry %llu truncated)",
                        (unsigned long long)n);
        pool += (le16(e + 8) & ZIP_FLAG_UTF8 ? nlen : 3 * (uint64_t)nlen) + 1;
        n++;
        pos += elen;
    }
    *count = n;
    *pool_bytes = pool;
    return 0;
}

/* Second pass, over framing measure_central has checked: fills the member table. */
static int parse_central(const unsigned char *cd, uint64_t cd_size, struct zip_archive *za,
                         char *msg, size_t len)
{
    uint64_t count = 0, pool_bytes = 0;
    struct time_memo memo = {0};
    int rc = measure_central(cd, cd_size, &count, &pool_bytes, msg, len);
    if (rc < 0)
        return rc;
    za->members = calloc(count ? count : 1, sizeof *za->members);
    za->name_pool = malloc(pool_bytes ? pool_bytes : 1);
    if (!za->members || !za->name_pool)
        return io_fail(msg, len, -ENOMEM, "out of memory");

    uint64_t pos = 0, pool = 0;
    for (uint64_t n = 0; n < count; n++) {
        const unsigned char *e = cd + pos;
        uint32_t nlen = le16(e + 28), xlen = le16(e + 30), clen = le16(e + 32);
        struct zip_member *m = &za->members[n];
        m->flags = le16(e + 8);
        m->method = le16(e + 10);
        m->dos_time = le16(e + 12);
        m->mtime = dos_time(le16(e + 12), le16(e + 14), &memo);
        m->mtime_known = dos_time_known(le16(e + 12), le16(e + 14));
        m->crc32 = le32(e + 16);
        m->csize = le32(e + 20);
        m->usize = le32(e + 24);
        m->header_off = le32(e + 42);
        uint16_t disk = le16(e + 34);
        if ((le16(e + 4) >> 8) == 3) /* made by Unix: st_mode in the high half */
            m->mode = le32(e + 38) >> 16;
        m->name = za->name_pool + pool;
        m->name_len = copy_name(m->name, e + CENTRAL_LEN, nlen, m->flags & ZIP_FLAG_UTF8);
        pool += m->name_len + 1;
        parse_central_extra(m, e + CENTRAL_LEN + nlen, xlen, m->usize == 0xFFFFFFFFu,
                            m->csize == 0xFFFFFFFFu, m->header_off == 0xFFFFFFFFu);
        /* A '/'-terminated member with data is read as a file by zipfile and numpy. Only
         * usize counts: some writers (Java's ZipOutputStream) deflate directory entries into 2
         * bytes of nothing. */
        m->is_dir = m->name_len > 0 && m->name[m->name_len - 1] == '/' && m->usize == 0;
        if (disk != 0 && disk != 0xFFFF)
            member_error(m, -EIO, "member lives on another disk");
        pos += CENTRAL_LEN + (uint64_t)nlen + xlen + clen;
    }
    za->count = count;
    return 0;
}

static bool known_method(uint16_t method)
{
    switch (method) {
    case ZIP_METHOD_STORED: case ZIP_METHOD_DEFLATED: case ZIP_METHOD_BZIP2:
    case ZIP_METHOD_LZMA: case ZIP_METHOD_ZSTD: case ZIP_METHOD_XZ: case ZIP_METHOD_PPMD:
        return true;
    default:
        return false;
    }
}

/* Encryption libarchive can undo: ZipCrypto, and WinZip AES as its extra field describes it
 * (the real method, hidden under method 99, must be one we know). */
static const char *encryption_problem(const struct zip_member *m)
{
    if (m->flags & ZIP_FLAG_STRONG)
        return "PKWARE strong encryption is not supported";
    if (m->method != ZIP_METHOD_AES)
        return known_method(m->method) ? NULL : "unsupported compression method";
    if (m->aes_version < 1 || m->aes_version > 2 || m->aes_strength < 1 ||
        m->aes_strength > 3)
        return "WinZip AES member without a valid 0x9901 extra field";
    return known_method(m->aes_method) ? NULL : "unsupported compression method";
}

static void check_method(struct zip_member *m)
{
    /* bit 6 without bit 0 is no valid ZIP either: strong encryption is all it can mean */
    const char *why = m->flags & (ZIP_FLAG_ENCRYPTED | ZIP_FLAG_STRONG) ? encryption_problem(m)
                      : known_method(m->method) ? NULL : "unsupported compression method";
    if (why)
        member_error(m, -EIO, why);
    else if (m->usize > INT64_MAX || m->csize > INT64_MAX)
        member_error(m, -EIO, "member size out of range");
    /* an encrypted member's data also holds the encryption's header (and MAC) */
    else if (m->method == ZIP_METHOD_STORED && m->csize != m->usize &&
             !(m->flags & ZIP_FLAG_ENCRYPTED))
        member_error(m, -EIO, "stored member with differing sizes");
}

/* Room to read a local header with the longest name, and to convert that name. */
struct local_scratch {
    unsigned char raw[LOCAL_LEN + 65535];
    char name[3 * 65535 + 1];
};

/* Reads the local header: data starts after ITS name and extra, which may differ from the
 * central ones. The local name must match the central one (else the offset is suspect), and
 * the data range must end before the central directory. data_off stays 0 when there is no
 * local header to be found. */
static void resolve_data(struct source *src, struct zip_member *m, uint64_t limit, struct local_scratch *s)
{
    if (m->header_off > limit || limit - m->header_off < LOCAL_LEN) {
        member_error(m, -EIO, "local header outside the archive");
        return;
    }
    /* One read covers the header and any name up to 1 KiB. */
    uint64_t avail = limit - m->header_off;
    size_t got = avail < LOCAL_LEN + 1024 ? (size_t)avail : LOCAL_LEN + 1024;
    if (source_read(src, s->raw, got, m->header_off) < 0 || le32(s->raw) != SIG_LOCAL) {
        member_error(m, -EIO, "bad local header signature");
        return;
    }
    uint32_t nlen = le16(s->raw + 26);
    if (LOCAL_LEN + nlen > avail ||
        (LOCAL_LEN + nlen > got && source_read(src, s->raw + got, LOCAL_LEN + nlen - got,
                                                 m->header_off + got) < 0)) {
        member_error(m, -EIO, "local header outside the archive");
        return;
    }
    /* A header with another name belongs to another entry (or is damaged): not this one's. */
    uint32_t n = copy_name(s->name, s->raw + LOCAL_LEN, nlen, m->flags & ZIP_FLAG_UTF8);
    if (n != m->name_len || memcmp(s->name, m->name, n) != 0) {
        member_error(m, -EIO, "local header name differs from the central directory");
        return;
    }
    m->data_off = m->header_off + LOCAL_LEN + nlen + le16(s->raw + 28);
    if (m->data_off > limit || m->csize > limit - m->data_off)
        member_error(m, -EIO, "member data extends past the central directory");
}

static int by_header_off(const void *a, const void *b)
{
    const struct zip_member *x = *(struct zip_member *const *)a;
    const struct zip_member *y = *(struct zip_member *const *)b;
    if (x->header_off != y->header_off)
        return x->header_off < y->header_off ? -1 : 1;
    return x < y ? -1 : x > y; /* stable: central directory order */
}

/* Flags members whose data runs into the next real local header (overlapping entries are how
 * zip bombs are built). Entries whose own header is missing or names another member say
 * nothing about their neighbours; several entries of the same name sharing one header: all
 * but the last are flagged. */
static int check_overlaps(struct zip_archive *za)
{
    struct zip_member **order = malloc((za->count ? za->count : 1) * sizeof *order);
    if (!order)
        return -ENOMEM;
    for (uint64_t i = 0; i < za->count; i++)
        order[i] = &za->members[i];
    qsort(order, za->count, sizeof *order, by_header_off);
    uint64_t next_header = UINT64_MAX;
    for (uint64_t i = za->count; i-- > 0;) {
        struct zip_member *m = order[i];
        if (m->data_off == 0)
            continue;
        if (next_header < m->data_off + m->csize)
            member_error(m, -EIO, "member data overlaps another member");
        next_header = m->header_off;
    }
    free(order);
    return 0;
}

int zip_open(struct source *src, struct zip_archive *za, char *msg, size_t len)
{
    struct cd_location cd = {0};
    memset(za, 0, sizeof *za);
    za->src = src;
    za->file_size = src->size;
    if (za->file_size == 0)
        return io_fail(msg, len, -EINVAL, "not a ZIP archive (empty file)");

    int rc = locate_cd(src, za->file_size, &cd, msg, len);
    if (rc < 0)
        return rc;
    za->prefix = cd.prefix;
    za->cd_offset = cd.offset;
    za->cd_size = cd.size;

    unsigned char *buf = malloc(cd.size ? cd.size : 1);
    if (!buf)
        return io_fail(msg, len, -ENOMEM, "out of memory");
    rc = source_read(src, buf, cd.size, cd.offset);
    if (rc < 0)
        rc = io_fail(msg, len, rc, "cannot read the central directory: %s", strerror(-rc));
    else
        rc = parse_central(buf, cd.size, za, msg, len);
    free(buf);
    if (rc < 0) {
        zip_close(za);
        return rc;
    }
    struct local_scratch *scratch = malloc(sizeof *scratch);
    if (!scratch) {
        zip_close(za);
        return io_fail(msg, len, -ENOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < za->count; i++) {
        struct zip_member *m = &za->members[i];
        if (m->header_off > UINT64_MAX - cd.prefix)
            member_error(m, -EIO, "local header outside the archive");
        else
            m->header_off += cd.prefix;
        check_method(m);
        resolve_data(src, m, cd.offset, scratch);
    }
    free(scratch);
    if (check_overlaps(za) < 0) {
        zip_close(za);
        return io_fail(msg, len, -ENOMEM, "out of memory");
    }
    return 0;
}

void zip_close(struct zip_archive *za)
{
    free(za->members);
    free(za->name_pool);
    za->members = NULL;
    za->name_pool = NULL;
    za->count = 0;
}
