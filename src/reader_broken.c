/*
 * reader_broken: members the ZIP reader flagged (unknown method or encryption, data outside
 * the archive or overlapping another member). Listed, but every read is -EIO.
 * reader_locked: encrypted members of a mount without a password. Listed, but every read is
 * -EACCES.
 */
#include <errno.h>

#include "reader.h"

static ssize_t broken_read(const struct reader_env *env, const struct reader_member *m,
                           void *buf, size_t len, uint64_t off, const struct read_ctl *ctl)
{
    (void)env, (void)buf, (void)len, (void)off, (void)ctl;
    return m->zm->err ? -EIO : -EACCES;
}

static const char *broken_why(const struct reader_member *m)
{
    return m->zm->why ? m->zm->why : "cannot be read";
}

const struct reader_ops reader_broken = {
    .read = broken_read,
    .why = broken_why,
};

static const char *locked_why(const struct reader_member *m)
{
    (void)m;
    return "encrypted member: no password given (-o password_file=PATH or -o askpass)";
}

const struct reader_ops reader_locked = {
    .read = broken_read,
    .why = locked_why,
};
