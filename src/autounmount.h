/*
 * autounmount: takes the mount away when its daemon dies (killed, out of memory), as libfuse's
 * auto_unmount does. libfuse does it by mounting through fusermount3 and leaving that process
 * waiting; starting it costs about 4.5 ms on every mount here, a third of the mount command.
 * Root may mount and unmount by itself, so for root the mount is made directly by libfuse and
 * this module forks the waiter instead: a process named npzmount-umount in ps,
 * that holds the read end of a pipe whose write end only the daemon has. When the daemon is
 * gone, however it went, the pipe reads end-of-file, and the child detaches the mount if the
 * mount point still holds a FUSE mount whose connection is dead (as fusermount3 checks), so
 * that a live mount made there since is left alone.
 *
 * Call autounmount_start once, right after mounting and before the daemon detaches
 * (fuse_daemonize) or starts threads: the daemon inherits the write end, and the process that
 * mounts waits until the child has its new name, so that no one who sees the mount sees two
 * processes named as its daemon. Errors are negative errno; the caller decides whether to go
 * on without the waiter.
 */
#ifndef NPZMOUNT_AUTOUNMOUNT_H
#define NPZMOUNT_AUTOUNMOUNT_H

/* Starts the waiter for the FUSE mount at mountpoint (an absolute path). argv is main's, so
 * that the child's command line can be rewritten to its name. Returns 0, -ENOENT when no FUSE
 * mount is at mountpoint, or another negative errno. */
int autounmount_start(const char *mountpoint, int argc, char **argv);

#endif
