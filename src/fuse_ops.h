/*
 * fuse_ops: the thin FUSE low-level adapter over the core (npz.h). It maps inodes to namespace
 * nodes and requests to npz_read; it owns no data of its own but a per-thread read buffer.
 *
 * The archive cannot change while mounted, so everything the kernel may cache it is told to
 * cache for long: entries, attributes, negative lookups, and file pages across opens
 * (keep_cache), which is also why direct_io is never used (mmap needs the page cache).
 * Should the archive change all the same, the core says so (archive_watch.h) and a notifier
 * thread drops the kernel's cached pages of every member, so that reads and mappings fail
 * instead of going on with pages of the old file.
 */
#ifndef NPZMOUNT_FUSE_OPS_H
#define NPZMOUNT_FUSE_OPS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <sys/types.h>
#include <time.h>

#include "npz.h"

struct fs_notifier;

struct fs {
    struct npz *npz;
    uid_t uid;
    gid_t gid;
    mode_t fmask, dmask;  /* permission bits removed from files and from directories */
    time_t archive_mtime; /* for directories the archive has no entry for */
    unsigned max_read;    /* the max_read mount option (0: none), which INIT must repeat */
    struct fs_notifier *notifier;
};

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
