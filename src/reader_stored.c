/*
 * reader_stored: method 0. The member's bytes are the archive's bytes, so a read is one read
 * at data_off + off from the shared source: no state, and for a local archive no allocation,
 * no lock, never a wait (a remote one may wait for its blocks).
 */
#include "reader.h"

static ssize_t stored_read(const struct reader_env *env, const struct reader_member *m,
                           void *buf, size_t len, uint64_t off, const struct read_ctl *ctl)
{
    int rc = source_read(env->src, buf, len, m->zm->data_off + off);
    if (rc == 0 && ctl->pins)
        rc = read_pins_add(ctl->pins, NULL, NULL, buf, len);
    return rc < 0 ? rc : (ssize_t)len;
}

static const char *stored_why(const struct reader_member *m)
{
    (void)m;
    return "read error in the archive";
}

const struct reader_ops reader_stored = {
    .read = stored_read,
    .why = stored_why,
};
