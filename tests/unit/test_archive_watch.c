/*
 * test_archive_watch: noticing that the archive changed (src/archive_watch.c), on real files
 * in a temporary directory. The reference is what the test itself did to the file: a change
 * that the file system records (contents, ctime, links, the name) must be noticed, by a read
 * (archive_watch_changed) or, once started, by the watch thread alone; nothing else may be.
 */
#define _GNU_SOURCE
#include "archive_watch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static char dir[256]; /* short, so that every path under it fits PATH_MAX */

static void path_of(char *out, const char *name)
{
    snprintf(out, PATH_MAX, "%s/%s", dir, name);
}

static void write_file(const char *name, char fill, size_t len)
{
    char p[PATH_MAX], buf[4096];
    path_of(p, name);
    memset(buf, fill, sizeof buf);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    for (size_t done = 0; done < len; done += sizeof buf)
        CHECK(write(fd, buf, len - done < sizeof buf ? len - done : sizeof buf) > 0);
    close(fd);
}

static double now(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Timestamps come from a coarse clock: two changes within one of its ticks look the same.
 * Waits until the clock has moved past the file's last change. */
static void wait_past_ctime(const char *name)
{
    char p[PATH_MAX];
    struct stat st;
    path_of(p, name);
    CHECK(stat(p, &st) == 0);
    double ctime = (double)st.st_ctim.tv_sec + st.st_ctim.tv_nsec / 1e9;
    double deadline = now(CLOCK_MONOTONIC) + 5;
    while (now(CLOCK_REALTIME_COARSE) <= ctime && now(CLOCK_MONOTONIC) < deadline)
        usleep(1000);
}

struct opened {
    int fd;
    struct archive_watch *w;
};

static struct opened open_watch(const char *name, size_t len)
{
    char p[PATH_MAX];
    struct opened o = {.fd = -1};
    write_file(name, 'a', len);
    wait_past_ctime(name);
    path_of(p, name);
    o.fd = open(p, O_RDONLY | O_CLOEXEC);
    CHECK(o.fd >= 0);
    CHECK_EQ_I64(archive_watch_new(o.fd, p, &o.w), 0);
    return o;
}

static void close_watch(struct opened *o)
{
    archive_watch_free(o->w);
    close(o->fd);
}

static atomic_int hook_calls;

/* Runs on the watch thread, where the check harness must not be used. */
static void count_hook(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* Polls until the hook was called (or 10 s passed); returns the number of calls. */
static int wait_hook(void)
{
    double deadline = now(CLOCK_MONOTONIC) + 10;
    while (atomic_load(&hook_calls) == 0 && now(CLOCK_MONOTONIC) < deadline)
        usleep(1000);
    return atomic_load(&hook_calls);
}

/* Rewrites name in place with other bytes of the same length, then puts atime and mtime
 * back, as cp -p does. */
static void rewrite_keeping_times(const char *name)
{
    char p[PATH_MAX];
    struct stat st;
    path_of(p, name);
    CHECK(stat(p, &st) == 0);
    int fd = open(p, O_WRONLY);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, "b", 1, 0) == 1);
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    CHECK(futimens(fd, times) == 0);
    close(fd);
    struct stat after;
    CHECK(stat(p, &after) == 0);
    CHECK(after.st_size == st.st_size && after.st_mtim.tv_sec == st.st_mtim.tv_sec &&
          after.st_mtim.tv_nsec == st.st_mtim.tv_nsec);
}

static void rename_over(const char *name)
{
    char from[PATH_MAX], to[PATH_MAX];
    write_file("incoming", 'c', 10000);
    path_of(from, "incoming");
    path_of(to, name);
    CHECK(rename(from, to) == 0);
}

/* Changes that leave the size and mtime of the open file as they were. */
static const struct {
    const char *what;
    void (*change)(const char *name);
} cases[] = {{"rewritten, times put back", rewrite_keeping_times}, {"renamed over", rename_over}};

/* ------------------------------------------------------------------------------------------ */

static void test_unchanged(void)
{
    struct opened o = open_watch("same", 10000);
    char buf[100];
    CHECK(pread(o.fd, buf, sizeof buf, 0) == sizeof buf); /* reading changes nothing */
    CHECK(!archive_watch_changed(o.w));
    CHECK(!archive_watch_changed(o.w));
    close_watch(&o);
}

/* What a read notices, without the watch thread. */
static void test_read_notices(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_context("%s", cases[i].what);
        struct opened o = open_watch("read", 10000);
        CHECK(!archive_watch_changed(o.w));
        cases[i].change("read");
        CHECK(archive_watch_changed(o.w));
        CHECK(archive_watch_changed(o.w)); /* for good */
        close_watch(&o);
    }
}

static void test_metadata_and_links_count(void)
{
    char p[PATH_MAX], q[PATH_MAX];
    struct opened o = open_watch("meta", 100);
    path_of(p, "meta");
    CHECK(chmod(p, 0600) == 0);
    CHECK(archive_watch_changed(o.w));
    close_watch(&o);

    o = open_watch("meta", 100);
    path_of(q, "meta-link");
    unlink(q);
    CHECK(link(p, q) == 0);
    CHECK(archive_watch_changed(o.w));
    close_watch(&o);

    o = open_watch("meta", 100);
    CHECK(unlink(p) == 0);
    CHECK(archive_watch_changed(o.w));
    close_watch(&o);
}

/* Only the watch thread is asked: no archive_watch_changed before the hook ran. */
static void test_thread_notices(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_context("%s", cases[i].what);
        struct opened o = open_watch("thread", 10000);
        atomic_store(&hook_calls, 0);
        CHECK_EQ_I64(archive_watch_start(o.w, count_hook, &hook_calls), 0);
        CHECK_EQ_I64(atomic_load(&hook_calls), 0);
        cases[i].change("thread");
        CHECK_EQ_I64(wait_hook(), 1);
        CHECK(archive_watch_changed(o.w));
        archive_watch_stop(o.w);
        CHECK_EQ_I64(atomic_load(&hook_calls), 1); /* once */
        close_watch(&o);
    }
}

/* The archive named through a symlink, by a relative path, and the process then changes
 * directory: pointing the link at another file leaves the open file untouched, only the path
 * shows it. */
static void test_path_retargeted(void)
{
    char cwd[PATH_MAX], target[PATH_MAX], link_tmp[PATH_MAX];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    write_file("v1", 'a', 1000);
    write_file("v2", 'b', 1000);
    CHECK(chdir(dir) == 0);
    unlink("current");
    CHECK(symlink("v1", "current") == 0);
    int fd = open("current", O_RDONLY | O_CLOEXEC);
    struct archive_watch *w = NULL;
    CHECK(fd >= 0 && archive_watch_new(fd, "current", &w) == 0);
    CHECK(chdir("/") == 0);
    atomic_store(&hook_calls, 0);
    CHECK_EQ_I64(archive_watch_start(w, count_hook, &hook_calls), 0);
    CHECK(!archive_watch_changed(w));
    path_of(target, "v2");
    path_of(link_tmp, "current.tmp");
    CHECK(symlink(target, link_tmp) == 0);
    path_of(target, "current");
    CHECK(rename(link_tmp, target) == 0);
    CHECK_EQ_I64(wait_hook(), 1);
    CHECK(archive_watch_changed(w));
    archive_watch_free(w);
    close(fd);
    CHECK(chdir(cwd) == 0);
}

/* A change known before the hook is registered calls it at once; after stop, never. */
static void test_hook_registration(void)
{
    struct opened o = open_watch("hook", 100);
    rewrite_keeping_times("hook");
    CHECK(archive_watch_changed(o.w));
    atomic_store(&hook_calls, 0);
    CHECK_EQ_I64(archive_watch_start(o.w, count_hook, &hook_calls), 0);
    CHECK_EQ_I64(atomic_load(&hook_calls), 1);
    archive_watch_stop(o.w);
    archive_watch_stop(o.w); /* idempotent */
    close_watch(&o);

    o = open_watch("hook", 100);
    CHECK_EQ_I64(archive_watch_start(o.w, count_hook, &hook_calls), 0);
    archive_watch_stop(o.w);
    atomic_store(&hook_calls, 0);
    rewrite_keeping_times("hook");
    CHECK(archive_watch_changed(o.w));
    CHECK_EQ_I64(atomic_load(&hook_calls), 0);
    close_watch(&o);
}

/* One line for the change, however many reads notice it. */
static void test_logged_once(void)
{
    char logpath[PATH_MAX];
    path_of(logpath, "log");
    int saved = dup(2);
    int logfd = open(logpath, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(saved >= 0 && logfd >= 0);
    fflush(stderr);
    dup2(logfd, 2);
    struct opened o = open_watch("logged", 100);
    rename_over("logged");
    for (int i = 0; i < 10; i++)
        CHECK(archive_watch_changed(o.w));
    close_watch(&o);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char text[2048] = {0};
    ssize_t n = pread(logfd, text, sizeof text - 1, 0);
    close(logfd);
    CHECK(n > 0);
    int lines = 0;
    for (ssize_t i = 0; i < n; i++)
        lines += text[i] == '\n';
    CHECK_EQ_I64(lines, 1);
    CHECK(strstr(text, "logged") != NULL && strstr(text, "another file") != NULL);
}

static void test_bad_descriptor(void)
{
    struct archive_watch *w = NULL;
    CHECK_EQ_I64(archive_watch_new(-1, "nowhere", &w), -EBADF);
    archive_watch_free(NULL);
}

static void remove_dir(void)
{
    static const char *names[] = {"same", "read", "meta", "meta-link", "thread", "incoming",
                                  "v1", "v2", "current", "current.tmp", "hook", "log",
                                  "logged"};
    char p[PATH_MAX];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        path_of(p, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

int main(void)
{
    alarm(60); /* a deadlock fails the program instead of hanging the suite */
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/npz-watch.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN_TEST(test_unchanged);
    RUN_TEST(test_read_notices);
    RUN_TEST(test_metadata_and_links_count);
    RUN_TEST(test_thread_notices);
    RUN_TEST(test_path_retargeted);
    RUN_TEST(test_hook_registration);
    RUN_TEST(test_logged_once);
    RUN_TEST(test_bad_descriptor);
    remove_dir();
    return check_summary("test_archive_watch");
}
