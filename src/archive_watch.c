/*
 * archive_watch: see archive_watch.h. The latch is one atomic flag; the mutex only orders the
 * hook's registration, its single call and its removal, and the hook runs under it so that
 * archive_watch_stop can promise that it is not running any more.
 */
#define _GNU_SOURCE /* O_PATH */
#include "archive_watch.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* Any of these on the file may be a change; IN_MODIFY is one for sure (a write or truncate
 * whose timestamps might not have moved within the clock's granularity). Directory events
 * matter only for the archive's name: something was put there, or taken away. */
#define FILE_EVENTS (IN_MODIFY | IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF)
#define DIR_EVENTS (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ONLYDIR)

struct archive_watch {
    int fd;             /* the archive; not ours */
    int dir_fd;         /* O_PATH descriptor of the directory holding the path's name, or -1 */
    char *name;         /* the path's last component */
    char *path;         /* as given, for the log line */
    struct stat st;     /* the snapshot */
    atomic_bool changed;

    pthread_mutex_t lock;
    archive_watch_hook hook;
    void *hook_arg;
    bool fired;

    int inotify_fd, stop_fd; /* -1 when not watching */
    int file_wd;
    pthread_t thread;
    bool running;
};

static bool same_time(struct timespec a, struct timespec b)
{
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/* Why the open file is not as it was, or NULL. */
static const char *file_moved(const struct archive_watch *w)
{
    struct stat now;
    if (fstat(w->fd, &now) < 0)
        return "it cannot be examined any more";
    if (now.st_size != w->st.st_size)
        return "its size changed";
    if (!same_time(now.st_mtim, w->st.st_mtim) || !same_time(now.st_ctim, w->st.st_ctim))
        return "it was modified, or its attributes or links changed";
    return NULL;
}

/* Why the path no longer names the open file, or NULL (also when it cannot be checked). */
static const char *path_moved(const struct archive_watch *w)
{
    struct stat now;
    if (w->dir_fd < 0)
        return NULL;
    if (fstatat(w->dir_fd, w->name, &now, 0) < 0)
        return "it is no longer at its path";
    if (now.st_ino != w->st.st_ino || now.st_dev != w->st.st_dev)
        return "another file was put at its path";
    return NULL;
}

/* Calls the hook once the change is known, at most once in all. */
static void fire(struct archive_watch *w)
{
    pthread_mutex_lock(&w->lock);
    if (w->hook && !w->fired && atomic_load(&w->changed)) {
        w->fired = true;
        w->hook(w->hook_arg);
    }
    pthread_mutex_unlock(&w->lock);
}

static void latch(struct archive_watch *w, const char *why)
{
    if (atomic_exchange(&w->changed, true))
        return;
    log_error("%s: the archive changed while mounted (%s): reads of the version mounted now "
              "fail", w->path, why);
    fire(w);
}

/* deep: also look the path up. That costs more than the fstat, so reads do it only after the
 * fstat found a change, to say which one. */
static void check(struct archive_watch *w, bool deep)
{
    const char *file = file_moved(w);
    if (!file && !deep)
        return;
    const char *path = path_moved(w);
    if (path || file)
        latch(w, path ? path : file);
}

bool archive_watch_changed(struct archive_watch *w)
{
    if (!w) /* nothing watched: a remote archive */
        return false;
    if (!atomic_load(&w->changed))
        check(w, false);
    return atomic_load(&w->changed);
}

/* Opens the directory the path's last component is in; a directory that cannot be opened
 * only costs the path check. */
static int locate(struct archive_watch *w, const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    w->name = strdup(slash ? slash + 1 : path);
    w->path = strdup(path);
    int rc = dir && w->name && w->path ? 0 : -ENOMEM;
    if (rc == 0)
        w->dir_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    return rc;
}

int archive_watch_new(int fd, const char *path, struct archive_watch **out)
{
    struct archive_watch *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->fd = fd;
    w->dir_fd = w->inotify_fd = w->stop_fd = -1;
    pthread_mutex_init(&w->lock, NULL);
    int rc = fstat(fd, &w->st) < 0 ? -errno : locate(w, path);
    if (rc < 0) {
        archive_watch_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The inotify thread. */

static void on_event(struct archive_watch *w, const struct inotify_event *ev)
{
    if (ev->wd == w->file_wd && (ev->mask & IN_MODIFY))
        latch(w, "it was written to");
    else if (ev->wd == w->file_wd || (ev->mask & IN_Q_OVERFLOW) ||
             (ev->len && strcmp(ev->name, w->name) == 0))
        check(w, true);
}

static void *watch_main(void *arg)
{
    struct archive_watch *w = arg;
    union {
        struct inotify_event ev; /* for the alignment */
        char bytes[4096];
    } buf;
    struct pollfd pfd[2] = {{.fd = w->stop_fd, .events = POLLIN},
                            {.fd = w->inotify_fd, .events = POLLIN}};
    while (!atomic_load(&w->changed)) { /* after that there is nothing left to notice */
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pfd[0].revents)
            break;
        ssize_t n = read(w->inotify_fd, buf.bytes, sizeof buf.bytes);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t at = 0; at < n;) {
            const struct inotify_event *ev = (const void *)(buf.bytes + at);
            on_event(w, ev);
            at += (ssize_t)(sizeof *ev + ev->len);
        }
    }
    return NULL;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* inotify wants a path: the /proc links name exactly the file and directory we hold, whatever
 * was renamed since. */
static int add_watch(int inotify_fd, int fd, uint32_t mask)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    return inotify_add_watch(inotify_fd, link, mask);
}

static int open_inotify(struct archive_watch *w)
{
    w->inotify_fd = inotify_init1(IN_CLOEXEC);
    w->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (w->inotify_fd < 0 || w->stop_fd < 0)
        return -errno;
    w->file_wd = add_watch(w->inotify_fd, w->fd, FILE_EVENTS);
    if (w->file_wd < 0)
        return -errno;
    if (w->dir_fd >= 0 && add_watch(w->inotify_fd, w->dir_fd, DIR_EVENTS) < 0)
        return -errno;
    return 0;
}

int archive_watch_start(struct archive_watch *w, archive_watch_hook hook, void *arg)
{
    if (!w)
        return 0;
    pthread_mutex_lock(&w->lock);
    w->hook = hook;
    w->hook_arg = arg;
    pthread_mutex_unlock(&w->lock);
    fire(w);
    if (w->running)
        return 0;
    int rc = open_inotify(w);
    if (rc == 0) {
        check(w, true); /* what changed before the watches were set */
        rc = -pthread_create(&w->thread, NULL, watch_main, w);
    }
    if (rc < 0) {
        close_fd(&w->inotify_fd);
        close_fd(&w->stop_fd);
        return rc;
    }
    w->running = true;
    return 0;
}

void archive_watch_stop(struct archive_watch *w)
{
    if (!w)
        return;
    if (w->running) {
        uint64_t one = 1;
        ssize_t n = write(w->stop_fd, &one, sizeof one);
        (void)n; /* an eventfd write of 1 cannot fail here */
        pthread_join(w->thread, NULL);
        w->running = false;
    }
    close_fd(&w->inotify_fd);
    close_fd(&w->stop_fd);
    pthread_mutex_lock(&w->lock);
    w->hook = NULL;
    pthread_mutex_unlock(&w->lock);
}

void archive_watch_free(struct archive_watch *w)
{
    if (!w)
        return;
    archive_watch_stop(w);
    close_fd(&w->dir_fd);
    pthread_mutex_destroy(&w->lock);
    free(w->name);
    free(w->path);
    free(w);
}
