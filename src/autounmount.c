/* autounmount: see autounmount.h. */
#define _GNU_SOURCE
#include "autounmount.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "mountinfo.h"

#define NAME "npzmount-umount" /* 15 characters: all of it fits the kernel's comm */

/* Shows the child as "NAME MOUNTPOINT" in ps (as much of it as the original command line has
 * room for), no longer as a daemon of the mount point. */
static void rename_self(int argc, char **argv, const char *mountpoint)
{
    prctl(PR_SET_NAME, NAME, 0, 0, 0);
    if (argc < 1)
        return;
    char *end = argv[argc - 1] + strlen(argv[argc - 1]); /* the strings lie end to end */
    size_t room = (size_t)(end - argv[0]);
    memset(argv[0], 0, room);
    snprintf(argv[0], room + 1, "%s%c%s", NAME, '\0', mountpoint);
}

/* The child: nothing open but the pipe, deaf to the signals a terminal or a service manager
 * sends the daemon, waiting for the daemon to be gone. */
static _Noreturn void wait_then_unmount(int fd, int ready, const char *mountpoint, int argc,
                                        char **argv)
{
    rename_self(argc, argv, mountpoint);
    close(ready); /* the parent goes on: nothing shows this process as a daemon any more */
    setsid();
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    int keep = fcntl(fd, F_DUPFD, 3); /* out of the way of stdio, which may be closed */
    int null = open("/dev/null", O_RDWR);
    for (int i = 0; i < 3 && null >= 0; i++)
        if (null != i)
            dup2(null, i);
    if (keep >= 0 && keep != 3)
        keep = dup2(keep, 3);
    if (keep < 0)
        _exit(1);
    fd = keep;
    close_range(4, ~0u, 0); /* above all /dev/fuse, which would keep the connection alive */
    for (;;) {
        char b;
        ssize_t n = read(fd, &b, 1);
        if (n == 0 || (n < 0 && errno != EINTR))
            break; /* end of file: the daemon is gone */
    }
    /* A FUSE mount whose connection is dead: not one served by a daemon started since, which
     * may well have the same device number (the kernel hands out the lowest free one). */
    char fstype[64];
    struct statfs sf;
    if (mountinfo_lookup(mountpoint, NULL, fstype, sizeof fstype) == 0 &&
        strncmp(fstype, "fuse", 4) == 0 && statfs(mountpoint, &sf) < 0 &&
        (errno == ENOTCONN || errno == ECONNABORTED))
        umount2(mountpoint, MNT_DETACH);
    _exit(0);
}

int autounmount_start(const char *mountpoint, int argc, char **argv)
{
    char fstype[64];
    int rc = mountinfo_lookup(mountpoint, NULL, fstype, sizeof fstype);
    if (rc < 0)
        return rc;
    if (strncmp(fstype, "fuse", 4) != 0)
        return -ENOENT;
    int p[2], ready[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(ready, O_CLOEXEC) < 0) {
        rc = -errno;
        close(p[0]);
        close(p[1]);
        return rc;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(p[1]);
        close(ready[0]);
        wait_then_unmount(p[0], ready[1], mountpoint, argc, argv);
    }
    rc = pid < 0 ? -errno : 0;
    close(p[0]);
    close(ready[1]);
    char b;
    while (pid > 0 && read(ready[0], &b, 1) < 0 && errno == EINTR)
        ; /* until the child has renamed itself */
    close(ready[0]);
    if (rc < 0)
        close(p[1]);
    /* p[1] stays open, unused, until the daemon exits */
    return rc;
}
