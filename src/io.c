#include "io.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* One loop for both directions: pread and pwrite differ only in the constness of buf. */
static int io_exact(int fd, char *p, size_t len, uint64_t off, bool writing)
{
    while (len > 0) {
        ssize_t n = writing ? pwrite(fd, p, len, (off_t)off) : pread(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

int io_read_exact(int fd, void *buf, size_t len, uint64_t off)
{
    return io_exact(fd, buf, len, off, false);
}

int io_write_exact(int fd, const void *buf, size_t len, uint64_t off)
{
    return io_exact(fd, (char *)buf, len, off, true);
}

int io_make_dirs(const char *dir)
{
    char buf[PATH_MAX];
    if (!dir || !dir[0])
        return -EINVAL;
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return -ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        (void)mkdir(buf, 0700);
        *p = '/';
    }
    if (mkdir(buf, 0700) < 0 && errno != EEXIST)
        return -errno;
    struct stat st;
    if (stat(buf, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

const char *io_home_dir(char *buf, size_t len)
{
    const char *home = getenv("HOME");
    if (home && home[0] == '/')
        return home;
    struct passwd pw, *found = NULL;
    if (getpwuid_r(getuid(), &pw, buf, len, &found) != 0 || !found || !pw.pw_dir ||
        pw.pw_dir[0] != '/')
        return NULL;
    return pw.pw_dir;
}

int io_fail(char *why, size_t len, int err, const char *fmt, ...)
{
    if (why && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, len, fmt, ap);
        va_end(ap);
    }
    return err;
}
