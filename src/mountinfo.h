/*
 * mountinfo: what /proc/self/mountinfo says of one mount point: whether a path is mounted on.
 * Thread-safe (no state). Errors are negative errno.
 */
#ifndef NPZMOUNT_MOUNTINFO_H
#define NPZMOUNT_MOUNTINFO_H

#include <stddef.h>
#include <sys/types.h>

/* Whether something is mounted at path (absolute, no symbolic links); if so, the device
 * number and file system type ("fuse.npzmount") of the last such mount listed (mostly the one
 * on top; not after mount --move) in *dev and fstype, either may be NULL. Returns 0, -ENOENT
 * when nothing is mounted there, or another negative errno. */
int mountinfo_lookup(const char *path, dev_t *dev, char *fstype, size_t fstype_len);

#endif
