/*
 * mountinfo: what /proc/self/mountinfo says of one mount point. Used to tell whether a path
 * is mounted on, and, by autounmount, whether it still holds the same mount.
 * Thread-safe (no state). Errors are negative errno.
 */
#ifndef NPZMOUNT_MOUNTINFO_H
#define NPZMOUNT_MOUNTINFO_H

#include <stddef.h>
#include <sys/types.h>

/* The topmost mount at path (absolute, no symbolic links): its device number in *dev and its
 * file system type ("fuse.npzmount") in fstype, either may be NULL. Returns 0, -ENOENT when
 * nothing is mounted there, or another negative errno. */
int mountinfo_lookup(const char *path, dev_t *dev, char *fstype, size_t fstype_len);

#endif
