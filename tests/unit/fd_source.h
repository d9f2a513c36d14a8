/*
 * fd_source.h: for unit tests that make their archives as file descriptors and go on using
 * them. fd_source wraps a duplicate of fd in a local source (source.h), so the test keeps its
 * own fd; zip_open_fd opens a ZIP that way, the source living only while zip_open reads.
 */
#ifndef NPZMOUNT_FD_SOURCE_H
#define NPZMOUNT_FD_SOURCE_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "source.h"
#include "zipdir.h"

/* A source over dup(fd), or NULL with *err set. Close it with source_close. */
static inline struct source *fd_source_err(int fd, int *err)
{
    struct source *s = NULL;
    int d = dup(fd);
    *err = d < 0 ? -errno : source_from_fd(d, "test archive", &s);
    return *err < 0 ? NULL : s;
}

static inline struct source *fd_source(int fd)
{
    int err;
    return fd_source_err(fd, &err);
}

/* zip_open on fd; za->src is NULL afterwards (only zip_open reads through it). */
static inline int zip_open_fd(int fd, struct zip_archive *za, char *msg, size_t len)
{
    int rc;
    struct source *s = fd_source_err(fd, &rc);
    if (!s) {
        memset(za, 0, sizeof *za);
        if (msg && len)
            io_fail(msg, len, rc, "cannot open as a source: %s", strerror(-rc));
        return rc;
    }
    rc = zip_open(s, za, msg, len);
    za->src = NULL;
    source_close(s);
    return rc;
}

#endif
