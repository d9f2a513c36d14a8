/*
 * zipdir: the ZIP container reader.
 *
 * Turns an archive (a source, source.h) into an immutable table of members:
 * it finds the end record (searching back over an archive comment of up to 65,535 bytes),
 * prefers the ZIP64 end record whenever its locator is present, walks the central directory,
 * and reads every member's local header to find where its data starts (the local extra field
 * differs from the central one in numpy-written archives, so it is never reused).
 * Prepended data (self-extracting stubs) is allowed: all offsets are shifted by the difference
 * between where the central directory is and where the end record says it is.
 *
 * Errors: whole-archive problems (not a ZIP, truncated, multi-disk, central directory outside
 * the file) make zip_open fail with a negative errno and a one-line reason in its message
 * buffer. Problems confined to one member (data outside the file, data overlapping another
 * member's local header, unknown method or encryption, bad local header) do not fail the open:
 * the member is kept with zip_member.err < 0 and a static reason in zip_member.why.
 *
 * Ownership and threads: zip_open is not thread-safe while it runs; afterwards the table is
 * read-only and any thread may read it. zip_close frees the table but never closes the source.
 * Nothing here knows about FUSE or decompression.
 */
#ifndef NPZMOUNT_ZIPDIR_H
#define NPZMOUNT_ZIPDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    ZIP_METHOD_STORED = 0,
    ZIP_METHOD_DEFLATED = 8,
    ZIP_METHOD_BZIP2 = 12,
    ZIP_METHOD_LZMA = 14,
    ZIP_METHOD_ZSTD = 93,
    ZIP_METHOD_XZ = 95,
    ZIP_METHOD_PPMD = 98,
    ZIP_METHOD_AES = 99, /* WinZip AES: the real method is in the 0x9901 extra field */
};

enum {
    ZIP_FLAG_ENCRYPTED = 1u << 0,
    ZIP_FLAG_DESCRIPTOR = 1u << 3,
    ZIP_FLAG_STRONG = 1u << 6, /* PKWARE strong encryption */
    ZIP_FLAG_UTF8 = 1u << 11,
};

struct zip_member {
    char *name;          /* UTF-8 (CP437 converted unless flag bit 11), NUL-terminated */
    uint32_t name_len;   /* bytes in name; the raw name may itself contain NUL bytes */
    uint16_t method;
    uint16_t flags;
    uint32_t crc32;
    uint64_t csize;      /* compressed size, from the central directory (ZIP64 aware) */
    uint64_t usize;      /* uncompressed size, from the central directory */
    uint64_t header_off; /* local header offset in file coordinates (prepended data applied) */
    uint64_t data_off;   /* first byte of member data in the file; valid only when err == 0 */
    int64_t mtime;       /* seconds since the epoch: DOS timestamp as local time, or UT extra */
    bool mtime_known;    /* false when mtime is only numpy's 1980-01-01 placeholder or an
                          * invalid DOS timestamp (and no UT extra field gave a better one) */
    uint32_t mode;       /* st_mode bits recorded by a Unix writer, else 0 */
    bool is_dir;         /* a directory entry: the name ends with '/' and usize is 0 */
    uint16_t dos_time;   /* as written: ZipCrypto checks its high byte when flag bit 3 is set */
    /* Encrypted members (ZIP_FLAG_ENCRYPTED) are ZipCrypto, or WinZip AES when method is
     * ZIP_METHOD_AES, with these from its extra field: */
    uint16_t aes_version;  /* 1 (AE-1) or 2 (AE-2, no CRC: the MAC checks the data) */
    uint8_t aes_strength;  /* 1, 2, 3: AES-128, -192, -256 */
    uint16_t aes_method;   /* the compression method under the encryption */
    int err;             /* 0, or a negative errno: the member is listed but cannot be read */
    const char *why;     /* static one-line reason when err != 0 */
};

struct source;

struct zip_archive {
    struct source *src; /* borrowed */
    uint64_t file_size;
    uint64_t prefix;     /* bytes of prepended data before the archive proper */
    uint64_t cd_offset;  /* the central directory, in file coordinates (prefix applied) */
    uint64_t cd_size;
    uint64_t count;
    struct zip_member *members;
    char *name_pool;     /* storage behind every zip_member.name */
};

/* Reads the archive src into za; returns 0, or a negative errno with a one-line reason
 * (no trailing newline) in msg. On failure za holds nothing that needs zip_close. */
int zip_open(struct source *src, struct zip_archive *za, char *msg, size_t msg_len);

/* Frees the member table (not the source). Safe on a zeroed or already closed za. */
void zip_close(struct zip_archive *za);

#endif
