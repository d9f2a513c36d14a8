/*
 * npz: the mounted archive as the core sees it, with no FUSE in it. It owns the archive's
 * source (source.h), the member table (zipdir), the tree (namespace), one reader per member (reader.h),
 * the decoded-data cache shared by all deflated members (cache.h), and the budget and list of
 * the archive's libarchive decoders.
 *
 * What an adapter needs is here in file system terms: inodes (NPZ_ROOT is the root; numbers
 * are dense, 1..npz_statfs's inodes, and the same archive always gets the same ones), lookup,
 * attributes, directory entries, reads and extended attributes. The member table and the tree
 * behind them stay inside the core (npz_core.h, for the core's own tests and tools).
 *
 * Errors: negative errno. npz_open also writes a one-line reason (no newline) for the user.
 * Threads: after npz_open returns, every function may be called from any number of threads at
 * once, except npz_close, which must be the last call. Everything an archive needs (decoder
 * budgets, caches, threads) belongs to its npz: several may be open in one process.
 *
 * Memory: what the options bound is the chunk cache (cache), the checkpoint windows and tables
 * (index_mem), and in flight a few pieces per worker thread (threads); see the man page for
 * the whole formula.
 */
#ifndef NPZMOUNT_NPZ_H
#define NPZMOUNT_NPZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "pins.h"
#include "sched.h"
#include "source.h"
#include "stop.h"

struct npz_options {
    uint64_t span;        /* output bytes between deflate checkpoints (0: default; clamped to
                           * NPZ_MIN_SPAN..NPZ_MAX_SPAN) */
    uint64_t cache_bytes; /* bound of the decoded-data cache (0: default) */
    uint64_t index_mem;   /* bound of checkpoint windows and tables (0: default) */
    unsigned threads;     /* decode worker threads (0: the number of CPUs, at least 2) */
    int no_prefetch;      /* no background indexing */
    const char *index_dir;/* where indexes are saved (NULL: ixf_default_dir) */
    int no_index;         /* neither load nor save indexes */
    uint64_t decoder_mem; /* bound of the state of libarchive decoders (0: default) */
    uint64_t disk_span;   /* spacing of the extra checkpoints whose windows are kept on disk,
                           * in the index dir (0: default; NPZ_DISK_SPAN_OFF: none) */
    const char *password; /* for encrypted members, borrowed for the npz's life; NULL:
                           * none, and they read -EACCES */
    struct source_options remote; /* for an archive given as a URL (source.h) */
    struct npz_shared *shared; /* NULL: the npz has its own cache, workers and memory bounds;
                                * else it uses these (and cache_bytes, index_mem, decoder_mem
                                * and threads are the ones it was made with) */
};

#define NPZ_DEFAULT_SPAN (1u << 20)
#define NPZ_DEFAULT_CACHE (16u << 20)
#define NPZ_DEFAULT_INDEX_MEM (64u << 20)
/* One decoder of any kind fits: a PPMd model takes up to 256 MiB, a zstd window 128 MiB. */
#define NPZ_DEFAULT_DECODER_MEM (320u << 20)
/* A random read through a saved index then decodes about what it returns plus half this. */
#define NPZ_DEFAULT_DISK_SPAN (128u << 10)
#define NPZ_DISK_SPAN_OFF UINT64_MAX
#define NPZ_MIN_SPAN (32u << 10)
#define NPZ_MAX_SPAN (64u << 20)
#define NPZ_PIECE (64u << 10) /* the unit of decoding and caching */

struct npz;

/* What the archives of one mount share when there are many (a directory of archives): one
 * chunk cache, one pool of decode workers, one bound of checkpoint index memory and one of
 * decoder memory, made from opt's bounds (its shared field is ignored). Each npz opened with
 * it keeps its own cache keys (a cache view), so closing one and opening another is safe at
 * any time. npz_shared_free comes after every npz that uses it is closed: it drains the
 * workers. NULL when out of memory. An npz of a shared set runs no background indexer. */
struct npz_shared;
struct npz_shared *npz_shared_new(const struct npz_options *opt);
void npz_shared_free(struct npz_shared *s);
/* Whether decode-ahead jobs or read helpers of npz are queued or running on the workers
 * (which they are for sequential readers of compressed members, and for random reads of
 * SOZip members; they end on their own, within a few pieces). An
 * npz of a shared set, whose workers outlive it, may be closed once it is not busy and nothing
 * else uses it, or once npz_shared_shutdown has returned. */
bool npz_busy(struct npz *npz);

/* Runs every job submitted to the workers until it has finished (the caller makes them
 * finish, e.g. by shutting their npz down) and stops the workers: nothing can be submitted
 * any more. */
void npz_shared_shutdown(struct npz_shared *s);

/* Opens and indexes the archive at path, or at a URL (source_is_remote): nothing is
 * decompressed yet, except, with a password, the start of one encrypted member (a wrong
 * password fails with -EACCES). */
int npz_open(const char *path, const struct npz_options *opt, struct npz **out, char *msg,
             size_t msg_len);
void npz_close(struct npz *npz);

/* Builds and saves the index of every compressed member, calling progress (when not NULL)
 * now and then with the output bytes indexed so far and in all. Returns 0, or the first
 * error with a one-line reason in msg. For `npzmount --index`. */
int npz_index_all(struct npz *npz, void (*progress)(void *ctx, uint64_t done, uint64_t total),
                  void *ctx, char *msg, size_t msg_len);

/* The sidecar of archive ARCHIVE (a file or a URL) is ARCHIVE NPZ_SIDECAR_SUFFIX: a mount
 * uses a valid one before the index dir. */
#define NPZ_SIDECAR_SUFFIX ".npzidx"

/* Writes the indexes npz_index_all saved, all in one file, the sidecar of the local archive at
 * archive (see index_file.h, sidecars), for `npzmount --index --sidecar`. Returns 0, or a
 * negative errno with a reason in msg. */
int npz_write_sidecar(struct npz *npz, const char *archive, char *msg, size_t msg_len);

/* Starts the background work (indexing compressed members) unless disabled: after a daemon
 * has forked, since threads do not survive fork. */
void npz_start(struct npz *npz);

#define NPZ_ROOT 1

/* What stat(2) needs of an inode, before the mount's owner and masks are applied. */
struct npz_attr {
    uint64_t ino;
    bool is_dir;
    mode_t mode;     /* file type and permission bits: 0444 or 0555, or the bits a Unix
                      * writer recorded with its write bits cleared */
    uint64_t size;   /* uncompressed bytes (0 for directories) */
    uint64_t blocks; /* 512-byte units of the compressed data */
    time_t mtime;    /* the member's time, or the archive's for directories without an entry
                      * and for numpy's 1980 placeholder */
};

struct npz_fsinfo {
    uint64_t archive_bytes; /* size of the archive file */
    uint64_t inodes;        /* root included */
    uint64_t members;       /* entries of the archive */
    uint64_t stored_bytes;  /* member bytes served as they lie in the archive */
    uint64_t decoded_bytes; /* the other members' bytes (0 for a tree: unknown) */
    uint64_t sozip_bytes;   /* of those, bytes of SOZip members with chunks of at most a
                             * piece: an estimate from the largest members, probed on the
                             * first call (0 for a remote archive or a tree) */
};

void npz_statfs(struct npz *npz, struct npz_fsinfo *out);

/* The inode named name in directory dir: 0, -ENOENT (no such name or no such dir), or
 * -ENOTDIR. */
int npz_lookup(struct npz *npz, uint64_t dir, const char *name, uint64_t *ino);

/* 0, or -ENOENT when there is no such inode. */
int npz_getattr(struct npz *npz, uint64_t ino, struct npz_attr *out);

/* Entry pos of directory dir: 0 is ".", 1 is "..", then its children in a fixed order. Returns
 * 1 with *name (living as long as npz) and *attr set, 0 past the last entry, -ENOENT or
 * -ENOTDIR. */
int npz_readdir(struct npz *npz, uint64_t dir, uint64_t pos, const char **name,
                struct npz_attr *attr);

/* Extended attributes of an inode (the man page lists them): npz_listxattr writes their
 * names, each NUL-terminated, and npz_getxattr one value. With size 0 both return the length
 * needed; else the length written, -ERANGE when size is too small, -ENODATA (no such
 * attribute) or -ENOENT. Reading the npy header of a compressed member costs one decode of
 * its first piece, the first time. */
ssize_t npz_listxattr(struct npz *npz, uint64_t ino, char *buf, size_t size);
ssize_t npz_getxattr(struct npz *npz, uint64_t ino, const char *name, char *buf, size_t size);

/* What notices a local archive changing while mounted (archive_watch.h); owned by npz; NULL
 * for a remote archive, whose source reports a changed object itself. Reads fail with -EIO
 * once either has. */
struct archive_watch;
struct archive_watch *npz_watch(struct npz *npz);

/* Copies up to len bytes of file ino, starting at off, into buf. Returns the number of bytes
 * (short only at the end of the file, 0 at or past it) or a negative errno (-EIO for a member
 * that cannot be served, -EISDIR, -ENOENT). mode is as in reader.h: READ_CACHED never decodes,
 * READ_QUICK decodes only a little (a few chunks of a local SOZip member), READ_NOWAIT never waits
 * for another thread (-EAGAIN from any of them: run it as a job, see npz_submit).
 * cancel, when not NULL, is a flag that makes a long decode give up with -EINTR; so does
 * npz_shutdown. Never allocates for stored members of a local archive.
 * pins, when not NULL, takes the bytes instead, as slices (pins.h): those
 * of cache pieces stay there, the others are copied into buf and listed as one slice of it.
 * Release them after a success and after an error alike. */
ssize_t npz_read(struct npz *npz, uint64_t ino, void *buf, size_t len, uint64_t off,
                 enum read_mode mode, const atomic_bool *cancel, struct read_pins *pins);

/* For a stored member, where [off, off + len) of file ino lies in the archive, so that an
 * adapter can have the kernel copy it (splice) instead of reading it through a buffer: sets
 * *fd and *pos and returns the bytes to serve (0 at the end), or an error as npz_read would,
 * or -ENOTSUP for members that are not stored and for a remote archive. The archive is checked for changes first, but
 * the caller's own read of *fd comes after that check. */
ssize_t npz_locate(struct npz *npz, uint64_t ino, size_t len, uint64_t off, int *fd,
                   uint64_t *pos);

/* Runs job on the decode workers (sched.h); its run() typically calls npz_read with
 * READ_NOWAIT and returns -EAGAIN when told to. Returns 0 or -EAGAIN (no thread: the job is
 * still the caller's). */
int npz_submit(struct npz *npz, struct sched_job *job);

/* Retries parked jobs: for the adapter, after it set a job's cancel flag. */
void npz_wake(struct npz *npz);

/* Makes every decode in progress and every later read give up with -EINTR, and waits until
 * every submitted job has finished (they see -EINTR). For unmount and signals, once nothing
 * submits or wakes any more; cannot be undone. npz_close does it too. */
void npz_shutdown(struct npz *npz);

/* One member as `npzmount --list` shows it. */
struct npy_header;
struct npz_member_info {
    const char *name;      /* the raw name: name_len bytes, NUL-terminated, may hold NULs */
    size_t name_len;
    size_t key_len;        /* np.load's key: the name less a final ".npy" */
    uint64_t ino;          /* its inode (0: it has none, e.g. an entry for the root) */
    uint64_t size, csize;  /* uncompressed and compressed bytes */
    uint64_t offset;       /* of its local header in the archive file */
    uint32_t crc32;
    unsigned method;       /* the ZIP method number */
    const char *method_name; /* "stored", "deflated", ..., or NULL for others */
    const struct npy_header *npy; /* NULL unless its data starts with a valid npy header */
    uint64_t sozip_chunk;  /* chunk size when served through a SOZip index (once read), or 0 */
};

/* Fills out for member idx (0 <= idx < npz_statfs's members), reading its npy header the
 * first time (see npz_getxattr). Returns 0 or -ENOENT. out's pointers live as long as npz. */
int npz_member(struct npz *npz, uint64_t idx, struct npz_member_info *out);

/* The path of inode ino below the mount point ("" for the root), '/'-separated. Returns its
 * length, -ENAMETOOLONG when it does not fit in len bytes with its NUL, or -ENOENT. */
int npz_path(struct npz *npz, uint64_t ino, char *buf, size_t len);

#endif
