/*
 * fuse_ops: the thin FUSE low-level adapter over the core (forest.h: one archive, or a tree
 * of them; npz.h for what they serve): it translates the core's
 * inodes, attributes, entries, reads and extended attributes into libfuse replies, and owns
 * no data of its own but a per-thread reply buffer.
 *
 * The archive is not expected to change while mounted, so everything the kernel may cache it
 * is told to cache for long: entries, attributes, negative lookups, and file pages across
 * opens (keep_cache), which is also why direct_io is never used (mmap needs the page cache).
 * Should the archive change all the same, the core says so (archive_watch.h) and a notifier
 * thread drops the kernel's cached pages of every member, so that reads and mappings of the
 * old version fail instead of going on with its pages; then, unless nofollow, it opens the
 * new version as a new generation and drops the kernel's entries, so that new lookups and
 * opens find it. A FUSE node id carries its generation in its high bits (generation 0: the
 * core's inode number itself); the root is always the current generation's. A tree of
 * archives has one generation and no notifier: each archive notices its own change (its reads
 * fail with EIO), and the tree is not followed.
 */
#ifndef NPZMOUNT_FUSE_OPS_H
#define NPZMOUNT_FUSE_OPS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

#include "forest.h"

struct fs_notifier;

/* One version of the archive. Generation 0 is the one mounted; a later one is opened when the
 * archive changed (unless nofollow), and every generation stays open until unmount, so that a
 * node the kernel still holds always finds its own (whose reads fail with EIO once changed). */
struct fs_gen {
    struct forest *fo;
};

#define FS_MAX_GENS 64 /* then the mount stays on the last one, reading EIO */

struct fs {
    struct fs_gen gens[FS_MAX_GENS];
    _Atomic unsigned current; /* the generation new lookups and opens use */
    uid_t uid;
    gid_t gid;
    mode_t fmask, dmask;  /* permission bits removed from files and from directories */
    unsigned max_read;    /* the max_read mount option (0: none), which INIT must repeat */
    unsigned max_readahead; /* the kernel's readahead and mmap fault window (0: its default) */
    bool async_read;      /* FUSE_CAP_ASYNC_READ: several readahead requests in flight, but
                           * a reader waiting on one cannot be interrupted, only killed */
    bool nofollow;        /* stay on generation 0 once the archive changed (all EIO) */
    const char *archive;  /* the path to open again, as given (the daemon chdirs: absolute) */
    struct npz_options nopt;
    struct fs_notifier *notifier;
};

/* Makes every generation's decodes stop (npz_shutdown): after the session loop returned. */
void fs_shutdown(struct fs *fs);

/* Closes every generation; after fs_watch_stop. */
void fs_close(struct fs *fs);

extern const struct fuse_lowlevel_ops fs_ops;

/* Starts watching the archive for changes (the core's inotify thread, and the notifier thread
 * that invalidates the kernel's pages once a change is known). Call it in the process that
 * serves se, after fuse_daemonize; both threads block all signals, which stay libfuse's.
 * Best effort: what cannot be started is logged, and reads still fail once a read notices. */
void fs_watch_start(struct fs *fs, struct fuse_session *se);

/* Stops and joins both threads. Call it once the session loop has returned and before
 * fuse_session_unmount (the notifier writes to the session's descriptor). Idempotent. */
void fs_watch_stop(struct fs *fs);

#endif
