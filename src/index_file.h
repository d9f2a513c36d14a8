/*
 * index_file: the saved checkpoint index of one deflated member of one archive, on disk.
 *
 * One file per (archive, member), named "<identity as 32 hex digits>-<member>.npzidx" in the
 * index directory. The identity comes from the archive's content (see ixf_identity_of), not
 * from its path or inode, so a copy of the archive elsewhere finds the same file. The format
 * (documented at the top of index_file.c) is versioned and checksummed; windows are stored as
 * the caller hands them (compressed by the caller, opaque here), each with its own CRC-32, and
 * are read on demand.
 *
 * Trust: ixf_load treats the file as hostile input. It fails, with a one-line reason, on a
 * file that is truncated, corrupt, of another format version, made for another archive or
 * member, or stale (the member's CRC-32 or sizes differ from the central directory's); a
 * loaded index is consistent (see the bounds on struct ixf_member). Window bytes are checked
 * against their CRC-32 when read. The caller must still verify what it decodes with the
 * index against the piece CRCs: a file can be self-consistent and wrong.
 *
 * Saving is atomic: a temporary file in the same directory, then rename (no fsync: a file torn
 * by a crash fails its checksums and is ignored). Two processes
 * saving the same index at once each rename a complete file (the last one wins); a failed
 * save leaves no temporary file behind and the previous file untouched.
 *
 * Errors are negative errno values, with a one-line reason (no trailing newline) in why where
 * the function takes one: ixf_load gives -ENOENT when no index was saved, -ESTALE when the file
 * belongs to another version, archive or member or is stale, -EBADMSG when it is truncated or
 * corrupt, other values for I/O failures. ixf_save gives -EINVAL for an inconsistent index and
 * the errno of the failing call otherwise.
 *
 * Threads: no global state; a sidecar is read-only after ixf_sidecar_open; a loaded struct ixf is read-only after ixf_load, so any number of
 * threads may call ixf_get and ixf_read_window on it concurrently (ixf_close excepted).
 */
#ifndef NPZMOUNT_INDEX_FILE_H
#define NPZMOUNT_INDEX_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "zipdir.h"

#define IXF_WINDOW 32768u          /* the most a deflate window holds */
#define IXF_MAX_ZWIN 65536u        /* the most a stored (compressed) window may take */
#define IXF_MIN_SPAN 32768u
#define IXF_MAX_SPAN (1ull << 30)
#define IXF_MIN_PIECE 4096u
#define IXF_MAX_PIECE (1ull << 30)

/* A 128-bit content identity of an archive. */
struct ixf_identity {
    unsigned char id[16];
};

/* The identity of the archive za read from src: its size, the bytes of its central directory,
 * and each member's CRC-32, sizes and method, all read through the source (never the file's
 * inode or times), so that a local copy and a remote object get the same one. Reads the
 * central directory again. */
struct source;
int ixf_identity_of(struct source *src, const struct zip_archive *za, struct ixf_identity *out);

/* A zran checkpoint: decoding restarts at compressed byte `in` (with `bits` bits of the byte
 * before it still unread) producing output from `out`, given the window of output before. */
struct ixf_point {
    uint64_t out;              /* uncompressed offset */
    uint64_t in;               /* compressed byte offset within the member's stream */
    uint8_t bits;              /* 0-7 leftover bits of byte in - 1 */
    uint32_t wlen;             /* raw window length, 1..min(out, IXF_WINDOW); 0 at out == 0 */
    uint32_t zlen;             /* stored window length, 1..IXF_MAX_ZWIN; 0 at out == 0 */
    const unsigned char *zwin; /* save: the stored window bytes, or NULL to ask window() */
    uint64_t file_off;         /* load: where the stored window is in the file */
    uint32_t zcrc;             /* load: CRC-32 of the stored window bytes */
};

/* A member's index. A loaded one (and any ixf_save accepts) satisfies:
 * usize, csize >= 1; span in [IXF_MIN_SPAN, IXF_MAX_SPAN]; piece in [IXF_MIN_PIECE,
 * IXF_MAX_PIECE]; indexed_out <= usize; 1 <= npoints <= usize / IXF_WINDOW + 1; pts[0] is
 * {out 0, in 0, bits 0, no window}; out and in strictly ascending, every out <= indexed_out
 * and < usize, every in < csize, bits <= 7; npieces == ixf_piece_count(usize, piece,
 * indexed_out). */
struct ixf_member {
    uint64_t member;           /* index in the central directory */
    uint32_t crc32;            /* the member as the central directory says */
    uint64_t csize, usize;
    uint64_t span;             /* checkpoint spacing it was built with */
    uint64_t piece;            /* size of the CRC'd pieces of output */
    uint64_t indexed_out;      /* output bytes covered; == usize when complete */
    uint64_t npoints;
    struct ixf_point *pts;
    uint64_t npieces;
    uint32_t *piece_crc;       /* CRC-32 of piece i = [i * piece, min((i + 1) * piece, usize)) */
    /* save: the stored window of point k (one whose zwin is NULL) into z[0..cap), cap being
     * IXF_MAX_ZWIN; returns its length (zlen is then ignored) or a negative errno. Saving
     * asks for one window at a time, so an index need not be in memory whole to be saved. */
    int (*window)(void *ctx, uint64_t k, unsigned char *z, size_t cap);
    void *window_ctx;
};

/* Pieces that end at or below indexed_out: the length piece_crc must have. */
uint64_t ixf_piece_count(uint64_t usize, uint64_t piece, uint64_t indexed_out);

/* $XDG_CACHE_HOME/npzmount when that is an absolute path, else $HOME/.cache/npzmount (for
 * root usually /root/.cache/npzmount), else the password database's home. -ENAMETOOLONG when
 * it does not fit, -ENOENT when no home is known. */
int ixf_default_dir(char *out, size_t len);

/* The path of the index file of (id, member) in dir. -ENAMETOOLONG when it does not fit. */
int ixf_path(const char *dir, const struct ixf_identity *id, uint64_t member, char *out,
             size_t len);

/* Saves m (windows from pts[k].zwin or window(); file_off and zcrc ignored) for the archive id,
 * creating dir and its parents (mode 0700) when missing. The file is created mode 0600. */
int ixf_save(const char *dir, const struct ixf_identity *id, const struct ixf_member *m,
             char *why, size_t why_len);

struct ixf; /* a loaded index file: owns its descriptor and tables */

/* Loads the index of member number `member` (whose central directory entry is zm) of the
 * archive id. On success *out must be released with ixf_close. */
int ixf_load(const char *dir, const struct ixf_identity *id, const struct zip_member *zm,
             uint64_t member, struct ixf **out, char *why, size_t why_len);

/* The loaded index (pts[k].file_off and zcrc set, zwin NULL); valid until ixf_close. */
const struct ixf_member *ixf_get(const struct ixf *f);

/* Reads point k's stored window into zbuf and checks its CRC-32. Returns its length (0 for
 * point 0), -EINVAL for k out of range, -ENOBUFS when cap is too small, -EBADMSG when the
 * bytes do not match their CRC, -EIO when the file ended early. */
int ixf_read_window(const struct ixf *f, uint64_t k, unsigned char *zbuf, size_t cap);

void ixf_close(struct ixf *f);

/* Sidecars: every saved index of one archive in one file (ARCHIVE.npzidx), which a cluster
 * shares next to the archive. Each index inside is the file ixf_save writes, and is loaded and
 * checked exactly like one in a directory; the index files found in a sidecar are never
 * dropped (ixf_drop_loaded gives -EROFS). */
struct ixf_sidecar;

/* Writes the sidecar at path from the index files of archive za (identity id) that ixf_load
 * accepts in dir, atomically (a temporary file next to path, then rename), readable by all
 * less the umask. -ENOENT when there are none; -EAGAIN when one changed meanwhile. */
int ixf_sidecar_write(const char *path, const char *dir, const struct ixf_identity *id,
                      const struct zip_archive *za, char *why, size_t why_len);

/* Checks the sidecar in src (a local file or a remote object, owned from now on, closed on
 * failure too) against the archive id and reads its table: -EBADMSG when corrupt, -ESTALE when
 * made for another archive or format version. */
int ixf_sidecar_open(struct source *src, const struct ixf_identity *id,
                     struct ixf_sidecar **out, char *why, size_t why_len);

/* ixf_load from the sidecar: -ENOENT when it holds no index of the member. The result reads
 * through the sidecar, which must be closed after it. */
int ixf_sidecar_load(const struct ixf_sidecar *sc, const struct ixf_identity *id,
                     const struct zip_member *zm, uint64_t member, struct ixf **out, char *why,
                     size_t why_len);

void ixf_sidecar_close(struct ixf_sidecar *sc);

/* Removes the index file of (id, member); -ENOENT when there was none. */
int ixf_drop(const char *dir, const struct ixf_identity *id, uint64_t member);

/* Removes the file f was loaded from, unless it has been replaced since (another process
 * saved a new one): the way to discard an index found wrong while in use. */
int ixf_drop_loaded(const struct ixf *f);

#endif
