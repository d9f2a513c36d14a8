/* spill: see spill.h. */
#define _GNU_SOURCE /* O_TMPFILE, mkostemp */
#include "spill.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "io.h"

struct spill {
    int fd;
    atomic_uint_fast64_t end;
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
    atomic_init(&s->end, 0);
    *out = s;
    return 0;
}

void spill_close(struct spill *s)
{
    if (s) {
        close(s->fd);
        free(s);
    }
}

int spill_put(struct spill *s, const void *buf, size_t len, uint64_t *off)
{
    *off = atomic_fetch_add(&s->end, len);
    return io_write_exact(s->fd, buf, len, *off);
}

int spill_get(struct spill *s, void *buf, size_t len, uint64_t off)
{
    return io_read_exact(s->fd, buf, len, off);
}

uint64_t spill_size(struct spill *s)
{
    return atomic_load(&s->end);
}
