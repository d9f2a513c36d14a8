/*
 * reader_broken: members the ZIP reader flagged (encrypted, unknown method, data outside the
 * archive or overlapping another member). Listed, but every read is -EIO.
 */
#include <errno.h>

#include "reader.h"

static ssize_t broken_read(const struct reader_env *env, const struct reader_member *m,
                           void *buf, size_t len, uint64_t off, const struct read_ctl *ctl)
{
    (void)env, (void)m, (void)buf, (void)len, (void)off, (void)ctl;
    return -EIO;
}

static const char *broken_why(const struct reader_member *m)
{
    return m->zm->why ? m->zm->why : "cannot be read";
}

const struct reader_ops reader_broken = {
    .read = broken_read,
    .why = broken_why,
};
