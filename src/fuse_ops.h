/*
 * fuse_ops: the thin FUSE low-level adapter over the core (npz.h). It maps inodes to namespace
 * nodes and requests to npz_read; it owns no data of its own but a per-thread read buffer.
 *
 * The archive cannot change while mounted, so everything the kernel may cache it is told to
 * cache for long: entries, attributes, negative lookups, and file pages across opens
 * (keep_cache), which is also why direct_io is never used (mmap needs the page cache).
 */
#ifndef NPZMOUNT_FUSE_OPS_H
#define NPZMOUNT_FUSE_OPS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <sys/types.h>
#include <time.h>

#include "npz.h"

struct fs {
    struct npz *npz;
    uid_t uid;
    gid_t gid;
    time_t archive_mtime; /* for directories the archive has no entry for */
};

extern const struct fuse_lowlevel_ops fs_ops;

#endif
