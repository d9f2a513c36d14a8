/*
 * io: small helpers around pread(2) and pwrite(2) for the local files the daemon keeps (index
 * files, the spill, --optimize's output; the archive itself is read through source.h), two
 * for the places it keeps them in, and the little-endian codecs of the parsers. All return
 * 0 or a negative errno; a short read (the file ended early) is -EIO.
 * Thread-safe: they only use pread on a caller-owned descriptor.
 */
#ifndef NPZMOUNT_IO_H
#define NPZMOUNT_IO_H

#include <stddef.h>
#include <stdint.h>

/* Reads exactly len bytes at off, retrying on EINTR and partial reads. */
int io_read_exact(int fd, void *buf, size_t len, uint64_t off);

/* Writes exactly len bytes at off, the same way. */
int io_write_exact(int fd, const void *buf, size_t len, uint64_t off);

/* mkdir -p with mode 0700. Errors on the way are not final (a parent may exist without being
 * searchable, or be created by someone else meanwhile): only the last step decides, and it
 * fails with -ENOTDIR when dir exists but is no directory. */
int io_make_dirs(const char *dir);

/* The user's home directory: $HOME when absolute, else the password database's, in buf;
 * NULL when there is none. */
const char *io_home_dir(char *buf, size_t len);

static inline uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t le64(const unsigned char *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static inline void put_le16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static inline void put_le32(unsigned char *p, uint32_t v)
{
    put_le16(p, (uint16_t)v);
    put_le16(p + 2, (uint16_t)(v >> 16));
}
static inline void put_le64(unsigned char *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

/* The parsers' error convention: writes a one-line reason into why[0..len) (when there is
 * room) and returns err, a negative errno. */
int io_fail(char *why, size_t len, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
