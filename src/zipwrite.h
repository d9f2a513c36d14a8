/*
 * zipwrite: the ZIP records a writer emits (PKWARE APPNOTE 6.3), as bytes in a caller's
 * buffer: local headers, central entries and the end records, ZIP64 fields only where a value
 * does not fit its 32-bit field. Nothing here does I/O or compression.
 *
 * ZIP64 in a local header is decided before the sizes are known (a header cannot grow once the
 * data behind it is written), so struct zw_entry carries that decision; the central entry and
 * the end records decide for themselves from the final values.
 *
 * Threads: pure functions on caller-owned memory. Errors: the builders cannot fail; callers
 * check lengths with the *_len functions first (zw_extra_fits).
 */
#ifndef NPZMOUNT_ZIPWRITE_H
#define NPZMOUNT_ZIPWRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZW_LOCAL_LEN 30
#define ZW_CENTRAL_LEN 46
#define ZW_ZIP64_EXTRA_MAX 28 /* header + usize, csize, offset */
#define ZW_END_MAX (56 + 20 + 22) /* ZIP64 end record, its locator, the classic end record */

struct zw_entry {
    const unsigned char *name;  /* raw bytes as stored in the archive */
    uint16_t name_len;
    uint16_t version_made;
    uint16_t version_needed;    /* at least; raised to 45 where ZIP64 fields are written */
    uint16_t flags;
    uint16_t method;
    uint16_t dos_time, dos_date;
    uint32_t crc32;
    uint64_t csize, usize;
    uint64_t header_off;        /* where the local header is in the new archive */
    uint16_t internal_attr;
    uint32_t external_attr;
    const unsigned char *extra; /* extra fields without any ZIP64 field (see zw_strip_zip64) */
    uint16_t extra_len;
    const unsigned char *comment;
    uint16_t comment_len;
    bool local_zip64;           /* the local header carries ZIP64 sizes */
};

/* Whether the local header needs ZIP64 sizes for a member of usize bytes whose compressed
 * size is at most csize_bound. */
bool zw_needs_zip64(uint64_t usize, uint64_t csize_bound);

/* Copies the extra fields of src[0..len) except ZIP64 ones (id 0x0001) into dst (room for len
 * bytes); a malformed tail (a field running past the end) is dropped. Returns bytes written. */
size_t zw_strip_zip64(unsigned char *dst, const unsigned char *src, size_t len);

/* Whether extra_len bytes of other fields leave room for a ZIP64 field in a 16-bit length. */
bool zw_extra_fits(size_t extra_len);

size_t zw_local_len(const struct zw_entry *e);
/* Writes the local header of e into out (zw_local_len bytes); returns that length. */
size_t zw_local(unsigned char *out, const struct zw_entry *e);

size_t zw_central_len(const struct zw_entry *e);
/* Writes the central entry of e into out (zw_central_len bytes); returns that length. */
size_t zw_central(unsigned char *out, const struct zw_entry *e);

/* Writes the end records into out (at most ZW_END_MAX + comment_len bytes) for a central
 * directory of count entries at cd_off, cd_size bytes long, followed directly by these
 * records; the ZIP64 ones only when a value does not fit the classic record. Returns the
 * length. */
size_t zw_end(unsigned char *out, uint64_t count, uint64_t cd_off, uint64_t cd_size,
              const unsigned char *comment, uint16_t comment_len);

#endif
