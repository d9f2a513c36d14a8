/* spill: see spill.h. */
#define _GNU_SOURCE /* O_TMPFILE, mkostemp */
#include "spill.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"

/* Appends gather in buf and reach the file a megabyte at a time: one system call per window
 * cost a tenth of a fast first pass on a virtual machine. */
#define SPILL_BUF (1u << 20)

struct spill {
    int fd;
    pthread_mutex_t lock;
    uint64_t flushed; /* bytes in the file; buf holds the next `used` */
    size_t used;
    unsigned char buf[SPILL_BUF];
};

/* An unlinked file in dir: O_TMPFILE where the filesystem has it, else a name unlinked at
 * once. */
static int open_unlinked(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd < 0 ? -errno : fd;
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s/.spill.XXXXXX", dir) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return -errno;
    unlink(tmp);
    return fd;
}

int spill_open(const char *dir, struct spill **out)
{
    struct spill *s = malloc(sizeof *s);
    if (!s)
        return -ENOMEM;
    s->fd = open_unlinked(dir);
    if (s->fd < 0) {
        int rc = s->fd;
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->flushed = 0;
    s->used = 0;
    *out = s;
    return 0;
}

void spill_close(struct spill *s)
{
    if (s) {
        close(s->fd);
        pthread_mutex_destroy(&s->lock);
        free(s);
    }
}

/* Writes out what buf holds. Lock held. */
static int flush(struct spill *s)
{
    int rc = s->used ? io_write_exact(s->fd, s->buf, s->used, s->flushed) : 0;
    if (rc == 0) {
        s->flushed += s->used;
        s->used = 0;
    }
    return rc;
}

int spill_put(struct spill *s, const void *buf, size_t len, uint64_t *off)
{
    pthread_mutex_lock(&s->lock);
    int rc = s->used + len > SPILL_BUF ? flush(s) : 0;
    if (rc == 0 && len > SPILL_BUF) {
        *off = s->flushed;
        if ((rc = io_write_exact(s->fd, buf, len, s->flushed)) == 0)
            s->flushed += len;
    } else if (rc == 0) {
        *off = s->flushed + s->used;
        memcpy(s->buf + s->used, buf, len);
        s->used += len;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int spill_get(struct spill *s, void *buf, size_t len, uint64_t off)
{
    pthread_mutex_lock(&s->lock);
    bool buffered = off >= s->flushed;
    if (buffered) {
        uint64_t at = off - s->flushed;
        bool inside = at <= s->used && len <= s->used - at;
        if (inside)
            memcpy(buf, s->buf + at, len);
        pthread_mutex_unlock(&s->lock);
        return inside ? 0 : -EIO;
    }
    pthread_mutex_unlock(&s->lock);
    /* what reached the file stays there: no lock needed to read it */
    return io_read_exact(s->fd, buf, len, off);
}

uint64_t spill_size(struct spill *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t n = s->flushed + s->used;
    pthread_mutex_unlock(&s->lock);
    return n;
}
