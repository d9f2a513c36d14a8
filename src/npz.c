/*
 * npz: see npz.h. Glue between the member table, the tree and the readers; the only place
 * that logs a member's failure (once per member, on the first failed read).
 */
#include "npz.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "budget.h"
#include "cache.h"
#include "log.h"
#include "reader.h"

struct npz {
    struct zip_archive zip;
    struct ns *ns;
    struct reader_env env;
    struct budget decoder_mem;
    const struct reader_ops **ops; /* per member */
    _Atomic(void *) *state;        /* per member, owned by its reader */
    atomic_bool *logged;           /* per member: failure already reported */
    struct stat st;                /* the archive as opened, to notice changes */
    atomic_bool changed;
};

int npz_open(const char *path, const struct npz_options *opt, struct npz **out, char *msg,
             size_t msg_len)
{
    struct npz *npz = calloc(1, sizeof *npz);
    if (!npz) {
        snprintf(msg, msg_len, "out of memory");
        return -ENOMEM;
    }
    npz->env.fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not hang us */
    if (npz->env.fd < 0) {
        int err = -errno;
        snprintf(msg, msg_len, "%s", strerror(errno));
        free(npz);
        return err;
    }
    int rc = fstat(npz->env.fd, &npz->st) < 0 ? -errno : 0;
    if (rc == 0)
        rc = zip_open(npz->env.fd, &npz->zip, msg, msg_len);
    else
        snprintf(msg, msg_len, "%s", strerror(-rc));
    if (rc < 0) {
        close(npz->env.fd);
        free(npz);
        return rc;
    }
    uint64_t span = opt && opt->span ? opt->span : NPZ_DEFAULT_SPAN;
    npz->env.span = span < NPZ_MIN_SPAN ? NPZ_MIN_SPAN : span > NPZ_MAX_SPAN ? NPZ_MAX_SPAN : span;
    uint64_t cache = opt && opt->cache_bytes ? opt->cache_bytes : NPZ_DEFAULT_CACHE;
    uint64_t n = npz->zip.count ? npz->zip.count : 1;
    npz->env.cache = cache_new(cache, npz->env.span);
    budget_init(&npz->decoder_mem, opt && opt->decoder_mem ? opt->decoder_mem
                                                           : NPZ_DEFAULT_DECODER_MEM);
    npz->env.decoder_mem = &npz->decoder_mem;
    npz->env.decoders = archive_decoders_new();
    npz->ops = calloc(n, sizeof *npz->ops);
    npz->state = calloc(n, sizeof *npz->state);
    npz->logged = calloc(n, sizeof *npz->logged);
    rc = npz->env.cache && npz->env.decoders && npz->ops && npz->state && npz->logged
             ? ns_build(&npz->zip, &npz->ns)
             : -ENOMEM;
    if (rc < 0) {
        snprintf(msg, msg_len, "out of memory");
        npz_close(npz);
        return rc;
    }
    for (uint64_t i = 0; i < npz->zip.count; i++)
        npz->ops[i] = reader_for(&npz->zip.members[i]);
    *out = npz;
    return 0;
}

void npz_close(struct npz *npz)
{
    if (!npz)
        return;
    for (uint64_t i = 0; npz->state && npz->ops && i < npz->zip.count; i++) {
        void *s = atomic_load(&npz->state[i]);
        if (s && npz->ops[i]->free_state)
            npz->ops[i]->free_state(s);
    }
    free(npz->ops);
    free((void *)npz->state);
    free(npz->logged);
    archive_decoders_free(npz->env.decoders);
    cache_free(npz->env.cache);
    ns_free(npz->ns);
    zip_close(&npz->zip);
    close(npz->env.fd);
    free(npz);
}

const struct zip_archive *npz_zip(const struct npz *npz)
{
    return &npz->zip;
}

const struct ns *npz_ns(const struct npz *npz)
{
    return npz->ns;
}

/* The archive must not change while mounted; if it does (truncated or rewritten in place),
 * every read fails rather than serve bytes of a different file. One fstat per read is cheap
 * next to a FUSE round trip. */
static bool archive_changed(struct npz *npz)
{
    struct stat st;
    if (atomic_load_explicit(&npz->changed, memory_order_relaxed))
        return true;
    if (fstat(npz->env.fd, &st) == 0 && st.st_size == npz->st.st_size &&
        st.st_mtim.tv_sec == npz->st.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == npz->st.st_mtim.tv_nsec)
        return false;
    if (!atomic_exchange(&npz->changed, true))
        log_error("archive changed while mounted: all reads now fail");
    return true;
}

ssize_t npz_read(struct npz *npz, uint64_t idx, void *buf, size_t len, uint64_t off)
{
    if (idx >= npz->zip.count)
        return -EINVAL;
    const struct zip_member *zm = &npz->zip.members[idx];
    if (off >= zm->usize || len == 0)
        return zm->err && off < zm->usize ? -EIO : 0;
    if (len > zm->usize - off)
        len = (size_t)(zm->usize - off);
    if (archive_changed(npz))
        return -EIO;
    struct reader_member m = {.idx = idx, .zm = zm};
    ssize_t n = reader_attach(npz->ops[idx], &npz->env, &npz->state[idx], &m);
    if (n == 0)
        n = npz->ops[idx]->read(&npz->env, &m, buf, len, off);
    if (n < 0 && !atomic_exchange(&npz->logged[idx], true))
        log_error("%s: %s", zm->name,
                n == -EIO ? npz->ops[idx]->why(&m) : strerror((int)-n));
    return n;
}
