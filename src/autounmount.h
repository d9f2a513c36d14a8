/*
 * autounmount: takes the mount away when its daemon dies (killed, out of memory), as libfuse's
 * auto_unmount does. libfuse does it by mounting through fusermount3 and leaving that process
 * waiting; starting it costs about 4.5 ms on every mount here, a third of the mount command.
 * Root may mount and unmount by itself, so for root the mount is made directly by libfuse and
 * this module forks the waiter instead, shown as "npzmount-umount MOUNTPOINT" in ps.
 *
 * The waiter is forked early, before the archive is opened or a password read, so that it
 * holds none of the daemon's memory: it keeps nothing open but the read end of a pipe whose
 * write end only the mounting process and then the daemon have, in "/", deaf to the signals
 * a terminal sends. Once told that the mount exists (autounmount_mounted), it waits for the
 * pipe's end of file, which comes however the daemon goes; then, if the mount point holds a
 * FUSE mount whose connection is dead (as fusermount3 checks: a live mount made there since
 * answers), it detaches that very mount, found through a descriptor rather than the path
 * again. A process that never mounted just lets the waiter go.
 *
 * Call autounmount_start before starting threads; errors are negative errno, and the caller
 * decides whether to go on without the waiter.
 */
#ifndef NPZMOUNT_AUTOUNMOUNT_H
#define NPZMOUNT_AUTOUNMOUNT_H

#include <sys/types.h>

/* The waiter as its starter holds it. */
struct autounmount {
    int fd;    /* the pipe's write end (close-on-exec), kept for as long as the daemon lives */
    int ready; /* end of file once the waiter has its name and nothing of ours */
    pid_t pid; /* the waiter, a child of the starter */
    int told;  /* autounmount_mounted was called */
};

/* Starts the waiter for a mount about to be made at mountpoint (absolute). argv is main's,
 * whose strings become the waiter's command line. Returns 0 or a negative errno. The waiter
 * gets ready while the caller goes on. */
int autounmount_start(const char *mountpoint, int argc, char **argv, struct autounmount *w);

/* Tells the waiter that the mount now exists, once it is ready (waits for that): from then
 * on no process but the daemon shows as one. Call it once. */
void autounmount_mounted(struct autounmount *w);

/* For a starter that will not mount (a refused archive): lets the waiter go and waits for it
 * to end, so that no process is left behind that still bears the mount command's arguments
 * (a waiter not yet ready does). Call it instead of autounmount_mounted, at most once. */
void autounmount_abandon(struct autounmount *w);

#endif
