/* autounmount: see autounmount.h. */
#define _GNU_SOURCE
#include "autounmount.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/vfs.h>
#include <unistd.h>

#define NAME "npzmount-umount" /* 15 characters: all of it fits the kernel's comm */
#define MOUNTED 'M'

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

/* Closes every descriptor from `from` on; close_range may be missing or refused (seccomp). */
static void close_from(int from)
{
    if (close_range((unsigned)from, ~0u, 0) == 0)
        return;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (fd >= from && fd != dirfd(d))
            close(fd);
    }
    if (d)
        closedir(d);
}

/* Makes the child what autounmount.h says: stdio on /dev/null, the pipe on 3, in "/", in a
 * session of its own, deaf to terminal signals (still blocked from the fork, so none came
 * in between). Returns the pipe's descriptor, or -1. */
static int detach(int fd, int ready, int argc, char **argv, const char *mountpoint)
{
    rename_self(argc, argv, mountpoint);
    static const int deaf[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGTSTP, SIGTTIN,
                               SIGTTOU};
    for (size_t i = 0; i < sizeof deaf / sizeof deaf[0]; i++)
        signal(deaf[i], SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();
    if (chdir("/") < 0)
        return -1;
    /* out of the way of stdio, which may be closed */
    int keep = fcntl(fd, F_DUPFD, 3), r = fcntl(ready, F_DUPFD, 3);
    int null = open("/dev/null", O_RDWR);
    for (int i = 0; i < 3 && null >= 0; i++)
        if (null != i)
            dup2(null, i);
    if (keep < 0 || r < 0 || null < 0 || dup2(keep, 3) < 0 || dup2(r, 4) < 0)
        return -1;
    close_from(5); /* above all /dev/fuse, which would keep a dead connection alive */
    close(4);      /* ready: the mounting process goes on */
    return 3;
}

/* After the daemon: detaches the mount at mountpoint if its connection is dead. The checks
 * and the detach go through one descriptor of the mount's root, so they are about the same
 * mount even if another is made there meanwhile. */
static void unmount_if_dead(const char *mountpoint)
{
    int fd = open(mountpoint, O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct statfs sf;
    if (fd < 0)
        return;
    if (fstatfs(fd, &sf) < 0 && (errno == ENOTCONN || errno == ECONNABORTED)) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        umount2(path, MNT_DETACH);
    }
    close(fd);
}

static _Noreturn void wait_then_unmount(int fd, int ready, const char *mountpoint, int argc,
                                        char **argv)
{
    if ((fd = detach(fd, ready, argc, argv, mountpoint)) < 0)
        _exit(1);
    int mounted = 0;
    for (;;) {
        char b;
        ssize_t n = read(fd, &b, 1);
        if (n == 1 && b == MOUNTED)
            mounted = 1;
        else if (n == 0 || (n < 0 && errno != EINTR))
            break; /* end of file: the daemon (or a process that never mounted) is gone */
    }
    if (mounted)
        unmount_if_dead(mountpoint);
    _exit(0);
}

int autounmount_start(const char *mountpoint, int argc, char **argv, struct autounmount *w)
{
    int p[2], ready[2], rc = 0;
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(ready, O_CLOEXEC) < 0) {
        rc = -errno;
        close(p[0]);
        close(p[1]);
        return rc;
    }
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[1]);
        close(ready[0]);
        wait_then_unmount(p[0], ready[1], mountpoint, argc, argv);
    }
    if (pid < 0)
        rc = -errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(p[0]);
    close(ready[1]);
    if (rc < 0) {
        close(p[1]);
        close(ready[0]);
        return rc;
    }
    *w = (struct autounmount){p[1], ready[0], pid, 0};
    return 0;
}

void autounmount_mounted(struct autounmount *w)
{
    char b;
    while (read(w->ready, &b, 1) < 0 && errno == EINTR)
        ;
    close(w->ready);
    w->told = 1;
    const char m = MOUNTED;
    while (write(w->fd, &m, 1) < 0 && errno == EINTR)
        ;
}

void autounmount_abandon(struct autounmount *w)
{
    close(w->fd);
    close(w->ready);
    while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR)
        ;
}
