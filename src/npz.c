/*
 * npz: see npz.h. Glue between the member table, the tree and the readers; the only place
 * that logs a member's failure (once per member, on the first failed read).
 */
#define _GNU_SOURCE /* SCHED_IDLE */
#include "npz.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "budget.h"
#include "archive_watch.h"
#include "cache.h"
#include "deadline.h"
#include "inflate_index.h"
#include "io.h"
#include "log.h"
#include "npy.h"
#include "npz_core.h"
#include "npz_shared.h"
#include "reader.h"
#include "sozip.h"
#include "spill.h"

#define SAVE_DEADLINE_MS 400 /* for saving indexes at unmount */

struct npz {
    struct zip_archive zip;
    struct ns *ns;
    struct reader_env env;
    struct budget index_mem;
    uint64_t stored_bytes, decoded_bytes; /* npz_fsinfo's */
    _Atomic uint64_t sozip_bytes;         /* npz_fsinfo's, probed on first use: NOT_PROBED */
    char index_dir[4096];
    struct sched *sched;
    struct npz_shared *shared;  /* whose cache (a view), workers and budgets it uses; NULL:
                                 * its own */
    atomic_bool shutdown;
    atomic_bool save_warned;
    /* Foreground reads decoding right now: the background indexer waits while there are any,
     * since on two vCPUs that share a core it would take a third of their speed. */
    atomic_int decoding;
    bool prefetch;
    bool indexing;              /* the indexer thread was started */
    pthread_t indexer;
    pthread_mutex_t idle_lock;  /* the indexer's pauses, cut short by npz_shutdown */
    pthread_cond_t idle;
    struct budget decoder_mem;
    const struct reader_ops **ops; /* per member */
    _Atomic(void *) *state;        /* per member, owned by its reader */
    atomic_bool *logged;           /* per member: failure already reported */
    atomic_uint *ahead_jobs;       /* per member: decode-ahead jobs queued or running */
    atomic_uint ahead_total;       /* all members' (npz_busy) */
    struct archive_watch *watch;   /* notices a local archive changing under us; NULL for
                                    * a remote one, which reports that itself (-ESTALE)... */
    atomic_bool stale;             /* ...latched here */
    time_t archive_mtime;
    uint64_t *ino_of;              /* per member: its inode, 0 when it has none */
    _Atomic(struct npy_slot *) *npy; /* per member: its npy header, once read */
};

/* A member's npy header, read once: valid is false when its data does not start with one. */
struct npy_slot {
    bool valid;
    struct npy_header h;
};

static void npy_slot_free(struct npy_slot *slot)
{
    if (slot)
        npy_free(&slot->h);
    free(slot);
}

/* The name of archive's sidecar into name[0..len): 0 or -ENAMETOOLONG. Next to a remote
 * object, the URL loses its query, whose signature is for the object. */
static int sidecar_name(const char *archive, char *name, size_t len)
{
    int n = source_is_remote(archive) ? (int)strcspn(archive, "?#") : (int)strlen(archive);
    int r = snprintf(name, len, "%.*s" NPZ_SIDECAR_SUFFIX, n, archive);
    return r < 0 || (size_t)r >= len ? -ENAMETOOLONG : 0;
}

/* The archive's sidecar (ARCHIVE.npzidx, local or next to a remote object), if it has a
 * valid one: missing is silent, unusable one log line. */
static void open_sidecar(struct npz *npz, const char *path, const struct npz_options *opt)
{
    char name[PATH_MAX + 16], why[PATH_MAX + 256];
    struct source *src;
    if (sidecar_name(path, name, sizeof name) < 0)
        return;
    int rc = source_open(name, opt ? &opt->remote : NULL, &src, why, sizeof why);
    if (rc == -ENOENT) /* a remote source says so for a 404 */
        return;
    char shown[PATH_MAX + 16];
    source_display(name, shown, sizeof shown);
    if (rc < 0)
        log_error("shared index ignored: %s: %s", shown, why);
    else if (ixf_sidecar_open(src, &npz->env.id, &npz->env.sidecar, why, sizeof why) < 0)
        log_error("shared index ignored: %s", why);
}

/* Where indexes go, and the archive's identity that names them. A failure here only costs
 * the saved indexes, with one warning. */
static void setup_saved_indexes(struct npz *npz, const char *path,
                                const struct npz_options *opt)
{
    if (opt && opt->no_index)
        return;
    bool any = false;
    for (uint64_t i = 0; i < npz->zip.count && !any; i++) /* a member with a saver */
        any = reader_for(&npz->zip.members[i], false)->save != NULL;
    if (!any)
        return;
    int rc = opt && opt->index_dir
                 ? (snprintf(npz->index_dir, sizeof npz->index_dir, "%s", opt->index_dir) <
                            (int)sizeof npz->index_dir ? 0 : -ENAMETOOLONG)
                 : ixf_default_dir(npz->index_dir, sizeof npz->index_dir);
    if (rc == 0)
        rc = ixf_identity_of(npz->env.src, &npz->zip, &npz->env.id);
    if (rc < 0) {
        log_error("saved indexes disabled: %s", strerror(-rc));
        return;
    }
    npz->env.index_dir = npz->index_dir;
    open_sidecar(npz, path, opt);
    /* Fine checkpoints need somewhere to put their windows; without it, only coarse ones. */
    uint64_t fine = opt && opt->disk_span ? opt->disk_span : NPZ_DEFAULT_DISK_SPAN;
    if (fine != NPZ_DISK_SPAN_OFF && fine < npz->env.span &&
        io_make_dirs(npz->index_dir) == 0 && spill_open(npz->index_dir, &npz->env.spill) == 0)
        npz->env.fine = fine < NPZ_MIN_SPAN ? NPZ_MIN_SPAN : fine;
}

/* Member idx as its reader sees it, with its state as it stands (NULL before a first read). */
static struct reader_member member(struct npz *npz, uint64_t idx)
{
    return (struct reader_member){.idx = idx, .zm = &npz->zip.members[idx],
                                  .state = atomic_load(&npz->state[idx])};
}

/* Saves member i's index if it has a saver and grew. Returns 0, or a negative errno with a
 * one-line reason in why. */
static int save_member(struct npz *npz, uint64_t i, char *why, size_t why_len)
{
    struct reader_member m = member(npz, i);
    if (!m.state || !npz->ops[i]->save || !npz->env.index_dir)
        return 0;
    return npz->ops[i]->save(&npz->env, &m, why, why_len);
}

/* save_member at unmount or after the background indexer: one warning per mount at most. */
static void save_quietly(struct npz *npz, uint64_t i)
{
    char why[256];
    if (save_member(npz, i, why, sizeof why) < 0 && !atomic_exchange(&npz->save_warned, true))
        log_error("cannot save index of %s: %s", npz->zip.members[i].name, why);
}

static int ahead(void *ctx, uint64_t idx, uint64_t off, size_t len, unsigned width);
static int helper(void *ctx, void (*fn)(void *arg), void *arg);

/* A wrong password fails the mount rather than every read: the smallest encrypted member's
 * first piece is decoded now, which checks the password (and, when the piece is the whole
 * member, its CRC or MAC too: a wrong ZipCrypto password passes the one-byte check 1 time in
 * 256, and then only the CRC tells, as "wrong password or damaged data"). Damaged data in a
 * larger member is left to fail its reads as usual. Returns 0, or -EACCES with a reason in
 * msg. */
static int check_password(struct npz *npz, char *msg, size_t msg_len)
{
    uint64_t pick = npz->zip.count;
    for (uint64_t i = 0; i < npz->zip.count; i++) {
        const struct zip_member *zm = &npz->zip.members[i];
        if (npz->ops[i] == &reader_archive && (zm->flags & ZIP_FLAG_ENCRYPTED) && zm->usize &&
            (pick == npz->zip.count || zm->usize < npz->zip.members[pick].usize))
            pick = i;
    }
    if (pick == npz->zip.count)
        return 0;
    struct reader_member m = {.idx = pick, .zm = &npz->zip.members[pick]};
    struct read_ctl ctl = {READ_BLOCK, NULL, false, NULL};
    unsigned char byte;
    ssize_t n = reader_attach(&reader_archive, &npz->env, &npz->state[pick], &m);
    if (n == 0)
        n = reader_archive.read(&npz->env, &m, &byte, 1, 0, &ctl);
    if (n != -EACCES && !(n == -EIO && m.zm->usize <= cache_piece(npz->env.cache)))
        return 0;
    if (n == -EACCES)
        snprintf(msg, msg_len, "%s (checked against %s)", reader_archive.why(&m), m.zm->name);
    else
        snprintf(msg, msg_len, "wrong password or damaged data (%s; checked against %s)",
                 reader_archive.why(&m), m.zm->name);
    return -EACCES;
}

unsigned npz_worker_threads(const struct npz_options *opt)
{
    if (opt && opt->threads)
        return opt->threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 2 ? 2 : n > 64 ? 64 : (unsigned)n;
}

#define SOZIP_PROBES 16
#define NOT_PROBED UINT64_MAX

/* An estimate of the bytes of the deflated members that carry a SOZip index of chunks no
 * larger than a piece (random reads decode them straight into the reply), from the largest
 * members: at most SOZIP_PROBES of them (a few small reads each), until half the decoded
 * bytes were probed, and scaled to all decoded bytes. 0 for a remote archive, where every
 * probe would be a request. */
static uint64_t probe_sozip(struct npz *npz)
{
    uint64_t top[SOZIP_PROBES], n = 0, probed = 0, found = 0;
    const struct zip_member *zms = npz->zip.members;
    if (npz->env.src->remote)
        return 0;
    for (uint64_t i = 0; i < npz->zip.count; i++) {
        if (npz->ops[i] != &reader_sozip ||
            (n == SOZIP_PROBES && zms[i].usize <= zms[top[n - 1]].usize))
            continue;
        uint64_t k = n < SOZIP_PROBES ? n++ : n - 1; /* insertion, largest first */
        for (; k > 0 && zms[top[k - 1]].usize < zms[i].usize; k--)
            top[k] = top[k - 1];
        top[k] = i;
    }
    for (uint64_t k = 0; k < n && 2 * probed <= npz->decoded_bytes; k++) {
        uint64_t chunk;
        probed += zms[top[k]].usize;
        if (sozip_peek(npz->env.src, &zms[top[k]], &chunk) == 0 && chunk <= NPZ_PIECE)
            found += zms[top[k]].usize;
    }
    return probed ? (uint64_t)((double)found / (double)probed * (double)npz->decoded_bytes) : 0;
}

/* The shared set's cache (a view of it), workers and bounds instead of the npz's own. */
static void use_shared(struct npz *npz)
{
    struct npz_shared *s = npz->shared;
    npz->env.cache = npz_shared_view(s);
    npz->sched = s->sched;
    npz->env.cache_bytes = s->cache_bytes;
    npz->env.threads = s->threads;
    npz->env.index_mem = &s->index_mem;
    npz->env.decoder_mem = &s->decoder_mem;
    /* No background indexer: the shared set's owner decides when an npz runs; its
     * decode-ahead jobs it sees with npz_busy. */
    npz->prefetch = false;
}

int npz_open(const char *path, const struct npz_options *opt, struct npz **out, char *msg,
             size_t msg_len)
{
    struct npz *npz = calloc(1, sizeof *npz);
    if (!npz) {
        snprintf(msg, msg_len, "out of memory");
        return -ENOMEM;
    }
    int rc = source_open(path, opt ? &opt->remote : NULL, &npz->env.src, msg, msg_len);
    if (rc < 0) {
        free(npz);
        return rc;
    }
    /* A local file is watched for changes; a remote object reports its own (-ESTALE). */
    if (!npz->env.src->remote && (rc = archive_watch_new(npz->env.src->fd, path, &npz->watch)) < 0)
        snprintf(msg, msg_len, "%s", strerror(-rc));
    else
        rc = zip_open(npz->env.src, &npz->zip, msg, msg_len);
    if (rc < 0) {
        archive_watch_free(npz->watch);
        source_close(npz->env.src);
        free(npz);
        return rc;
    }
    uint64_t span = opt && opt->span ? opt->span : NPZ_DEFAULT_SPAN;
    npz->env.span = span < NPZ_MIN_SPAN ? NPZ_MIN_SPAN : span > NPZ_MAX_SPAN ? NPZ_MAX_SPAN : span;
    uint64_t cache = opt && opt->cache_bytes ? opt->cache_bytes : NPZ_DEFAULT_CACHE;
    budget_init(&npz->index_mem, opt && opt->index_mem ? opt->index_mem : NPZ_DEFAULT_INDEX_MEM);
    npz->env.index_mem = &npz->index_mem;
    npz->env.members = npz->zip.members;
    setup_saved_indexes(npz, path, opt);
    atomic_init(&npz->shutdown, false);
    atomic_init(&npz->decoding, 0);
    npz->prefetch = !(opt && opt->no_prefetch);
    pthread_mutex_init(&npz->idle_lock, NULL);
    pthread_cond_init(&npz->idle, NULL);
    uint64_t n = npz->zip.count ? npz->zip.count : 1;
    budget_init(&npz->decoder_mem, opt && opt->decoder_mem ? opt->decoder_mem
                                                           : NPZ_DEFAULT_DECODER_MEM);
    npz->env.decoder_mem = &npz->decoder_mem;
    npz->env.threads = npz_worker_threads(opt);
    npz->env.decoders = archive_decoders_new();
    npz->ops = calloc(n, sizeof *npz->ops);
    npz->state = calloc(n, sizeof *npz->state);
    npz->logged = calloc(n, sizeof *npz->logged);
    npz->ahead_jobs = calloc(n, sizeof *npz->ahead_jobs);
    npz->env.ahead = ahead;
    npz->env.ahead_ctx = npz;
    npz->env.helper = helper;
    npz->env.password = opt ? opt->password : NULL;
    npz->shared = opt ? opt->shared : NULL;
    if (npz->shared)
        use_shared(npz);
    else {
        npz->env.cache = cache_new(cache, NPZ_PIECE);
        npz->sched = sched_new(npz->env.threads);
        npz->env.cache_bytes = cache;
    }
    npz->ino_of = calloc(n, sizeof *npz->ino_of);
    npz->npy = calloc(n, sizeof *npz->npy);
    rc = npz->env.cache && npz->env.decoders && npz->sched && npz->ops && npz->state &&
                 npz->logged && npz->ahead_jobs && npz->ino_of && npz->npy
             ? ns_build(&npz->zip, &npz->ns)
             : -ENOMEM;
    if (rc < 0) {
        snprintf(msg, msg_len, "out of memory");
        npz_close(npz);
        return rc;
    }
    for (uint64_t i = 0; i < npz->zip.count; i++) {
        npz->ops[i] = reader_for(&npz->zip.members[i], npz->env.password != NULL);
        if (npz->ops[i] == &reader_stored)
            npz->stored_bytes += npz->zip.members[i].usize;
        else
            npz->decoded_bytes += npz->zip.members[i].usize;
    }
    atomic_init(&npz->sozip_bytes, NOT_PROBED);
    for (uint64_t ino = NS_ROOT; ino <= ns_count(npz->ns); ino++) {
        uint64_t m = ns_get(npz->ns, ino)->member;
        if (m != NS_NO_MEMBER)
            npz->ino_of[m] = ino;
    }
    struct stat st;
    if (npz->env.src->remote)
        npz->archive_mtime = time(NULL); /* an object's time is not worth a request */
    else
        npz->archive_mtime = fstat(npz->env.src->fd, &st) == 0 ? st.st_mtime : 0;
    cache_set_notify(npz->env.cache, sched_event, npz->sched);
    rc = check_password(npz, msg, msg_len);
    if (rc < 0) {
        npz_close(npz);
        return rc;
    }
    *out = npz;
    return 0;
}

/* Waits a little, or until shutdown. */
static void pause_indexer(struct npz *npz)
{
    struct timespec until;
    deadline_in(&until, CLOCK_REALTIME, 20); /* idle's clock */
    pthread_mutex_lock(&npz->idle_lock);
    if (!atomic_load(&npz->shutdown))
        pthread_cond_timedwait(&npz->idle, &npz->idle_lock, &until);
    pthread_mutex_unlock(&npz->idle_lock);
}

/* What an index-only pass reports as it goes (npz_index_all's progress line). */
struct progress {
    void (*fn)(void *ctx, uint64_t done, uint64_t total);
    void *ctx;
    uint64_t before, total; /* bytes of the members indexed before this one, and in all */
};

/* Builds member idx's whole checkpoint index without touching the cache, giving way to
 * readers (and, when stop says so, to any foreground decode). Returns 1 when complete, or an
 * error. */
static int index_member(struct npz *npz, uint64_t idx, unsigned char *scratch,
                        const struct stop *stop, const struct progress *pr)
{
    struct reader_member m = member(npz, idx);
    const struct reader_ops *ops = npz->ops[idx];
    int rc = reader_attach(ops, &npz->env, &npz->state[idx], &m);
    while (rc == 0 || rc == -EAGAIN || (rc == -EINTR && !atomic_load(&npz->shutdown))) {
        if (rc != 0)
            pause_indexer(npz);
        rc = ops->prepare(&npz->env, &m, scratch, stop);
        if (pr && pr->fn) {
            struct reader_stats rs;
            ops->stats(&m, &rs);
            pr->fn(pr->ctx, pr->before + rs.indexed, pr->total);
        }
    }
    return rc;
}

/* The background indexer: every deflated member larger than a span, in archive order, at
 * the lowest CPU priority, so that later random reads anywhere cost one restart. */
static void *indexer_main(void *arg)
{
    struct npz *npz = arg;
    struct sched_param none = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &none);
    unsigned char *scratch = malloc(NPZ_PIECE);
    struct stop stop = {NULL, &npz->shutdown, &npz->decoding};
    for (uint64_t i = 0; scratch && i < npz->zip.count && !atomic_load(&npz->shutdown); i++) {
        const struct zip_member *zm = &npz->zip.members[i];
        if (npz->ops[i]->prepare && zm->usize > npz->env.span &&
            index_member(npz, i, scratch, &stop, NULL) == 1)
            save_quietly(npz, i);
    }
    free(scratch);
    return NULL;
}

/* Decode-ahead: up to `width` jobs per member at a time (the reader's choice: one for a
 * frontier, more for independent SOZip chunks), which read in READ_NOWAIT mode and give up
 * rather than wait (a reader holding the frontier is already doing the work). */
struct ahead_job {
    struct sched_job sj;
    struct npz *npz;
    uint64_t idx, off;
    size_t len;
};

static int run_ahead(struct sched_job *sj)
{
    struct ahead_job *j = (struct ahead_job *)sj;
    struct npz *npz = j->npz;
    const struct zip_member *zm = &npz->zip.members[j->idx];
    struct reader_member m = member(npz, j->idx);
    struct stop stop = {NULL, &npz->shutdown, NULL};
    struct read_ctl ctl = {READ_NOWAIT, &stop, true, NULL};
    size_t piece = cache_piece(npz->env.cache);
    atomic_fetch_add(&npz->decoding, 1);
    /* one byte per piece is enough to make the piece ready */
    for (uint64_t off = j->off; off < j->off + j->len && off < zm->usize; off += piece) {
        unsigned char byte;
        if (npz->ops[j->idx]->read(&npz->env, &m, &byte, 1, off, &ctl) < 0)
            break;
    }
    atomic_fetch_sub(&npz->decoding, 1);
    atomic_fetch_sub(&npz->ahead_jobs[j->idx], 1);
    atomic_fetch_sub(&npz->ahead_total, 1); /* the last touch of npz: it may go now */
    free(j);
    return 0;
}

/* Queues a job that npz_busy counts until the job, as its last touch of npz, takes itself
 * off ahead_total. Returns 0 or sched_submit's error (then nothing is counted). */
static int submit_counted(struct npz *npz, struct sched_job *sj)
{
    atomic_fetch_add(&npz->ahead_total, 1);
    int rc = sched_submit(npz->sched, sj);
    if (rc < 0)
        atomic_fetch_sub(&npz->ahead_total, 1);
    return rc;
}

static int ahead(void *ctx, uint64_t idx, uint64_t off, size_t len, unsigned width)
{
    struct npz *npz = ctx;
    if (!npz->sched)
        return -EAGAIN;
    if (atomic_fetch_add(&npz->ahead_jobs[idx], 1) >= width) {
        atomic_fetch_sub(&npz->ahead_jobs[idx], 1);
        return -EBUSY;
    }
    struct ahead_job *j = malloc(sizeof *j);
    int rc = j ? 0 : -ENOMEM;
    if (j) {
        *j = (struct ahead_job){.sj.run = run_ahead, .npz = npz, .idx = idx, .off = off,
                                .len = len};
        if ((rc = submit_counted(npz, &j->sj)) == 0)
            return 0;
        free(j);
    }
    atomic_fetch_sub(&npz->ahead_jobs[idx], 1);
    return rc;
}

/* A read's helper (reader.h), counted with the decode-ahead jobs so that npz_busy holds the
 * npz open until it ran. */
struct helper_job {
    struct sched_job sj;
    struct npz *npz;
    void (*fn)(void *arg);
    void *arg;
};

static int run_helper(struct sched_job *sj)
{
    struct helper_job *j = (struct helper_job *)sj;
    struct npz *npz = j->npz;
    j->fn(j->arg);
    free(j);
    atomic_fetch_sub(&npz->ahead_total, 1); /* the last touch of npz: it may go now */
    return 0;
}

static int helper(void *ctx, void (*fn)(void *arg), void *arg)
{
    struct npz *npz = ctx;
    if (!npz->sched)
        return -EAGAIN;
    struct helper_job *j = malloc(sizeof *j);
    if (!j)
        return -ENOMEM;
    *j = (struct helper_job){.sj.run = run_helper, .npz = npz, .fn = fn, .arg = arg};
    int rc = submit_counted(npz, &j->sj);
    if (rc < 0)
        free(j);
    return rc;
}

bool npz_busy(struct npz *npz)
{
    return atomic_load(&npz->ahead_total) > 0;
}

void npz_start(struct npz *npz)
{
    if (npz->prefetch && !npz->indexing)
        npz->indexing = pthread_create(&npz->indexer, NULL, indexer_main, npz) == 0;
}

int npz_index_all(struct npz *npz, void (*progress)(void *ctx, uint64_t done, uint64_t total),
                  void *ctx, char *msg, size_t msg_len)
{
    struct progress pr = {progress, ctx, 0, 0};
    for (uint64_t i = 0; i < npz->zip.count; i++)
        pr.total += npz->ops[i]->prepare ? npz->zip.members[i].usize : 0;
    unsigned char *scratch = malloc(NPZ_PIECE);
    int rc = scratch ? 0 : -ENOMEM;
    struct stop stop = {NULL, &npz->shutdown, NULL};
    for (uint64_t i = 0; rc >= 0 && i < npz->zip.count; i++) {
        const struct zip_member *zm = &npz->zip.members[i];
        if (!npz->ops[i]->prepare)
            continue;
        rc = index_member(npz, i, scratch, &stop, &pr);
        char why[256];
        if (rc == 1) {
            rc = save_member(npz, i, why, sizeof why) < 0 ? -EIO : 0;
            if (rc < 0)
                snprintf(msg, msg_len, "cannot save the index of %s: %s", zm->name, why);
        } else {
            struct reader_member m = member(npz, i);
            snprintf(msg, msg_len, "%s: %s", zm->name,
                     rc == -EIO ? npz->ops[i]->why(&m) : strerror(-rc));
        }
        pr.before += zm->usize;
    }
    free(scratch);
    return rc;
}

int npz_write_sidecar(struct npz *npz, const char *archive, char *msg, size_t msg_len)
{
    char path[PATH_MAX];
    if (sidecar_name(archive, path, sizeof path) < 0)
        return io_fail(msg, msg_len, -ENAMETOOLONG, "name too long for a sidecar");
    if (!npz->env.index_dir)
        return io_fail(msg, msg_len, -ENOENT, "no member has an index to share");
    return ixf_sidecar_write(path, npz->index_dir, &npz->env.id, &npz->zip, msg, msg_len);
}

void npz_close(struct npz *npz)
{
    if (!npz)
        return;
    npz_shutdown(npz);
    /* What was built since the last save, within a deadline: an unmount must end promptly,
     * and an index not saved now is only rebuilt next time. */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint64_t i = 0; npz->state && npz->ops && i < npz->zip.count; i++) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > SAVE_DEADLINE_MS)
            break;
        save_quietly(npz, i);
    }
    for (uint64_t i = 0; npz->state && npz->ops && i < npz->zip.count; i++) {
        void *s = atomic_load(&npz->state[i]);
        if (s && npz->ops[i]->free_state)
            npz->ops[i]->free_state(s);
    }
    for (uint64_t i = 0; npz->npy && i < npz->zip.count; i++)
        npy_slot_free(atomic_load(&npz->npy[i]));
    free((void *)npz->npy);
    free(npz->ino_of);
    spill_close(npz->env.spill); /* after the indexes that read it */
    ixf_sidecar_close(npz->env.sidecar); /* likewise */
    free(npz->ops);
    free((void *)npz->state);
    free(npz->logged);
    free(npz->ahead_jobs);
    pthread_mutex_destroy(&npz->idle_lock);
    pthread_cond_destroy(&npz->idle);
    archive_decoders_free(npz->env.decoders);
    cache_free(npz->env.cache);
    ns_free(npz->ns);
    zip_close(&npz->zip);
    archive_watch_free(npz->watch);
    source_close(npz->env.src);
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

uint64_t npz_member_ino(const struct npz *npz, uint64_t idx)
{
    return idx < npz->zip.count ? npz->ino_of[idx] : 0;
}

struct archive_watch *npz_watch(struct npz *npz)
{
    return npz->watch;
}

int npz_submit(struct npz *npz, struct sched_job *job)
{
    return sched_submit(npz->sched, job);
}

void npz_wake(struct npz *npz)
{
    sched_event(npz->sched);
}

void npz_shutdown(struct npz *npz)
{
    atomic_store(&npz->shutdown, true);
    if (npz->indexing) {
        pthread_mutex_lock(&npz->idle_lock);
        pthread_cond_broadcast(&npz->idle);
        pthread_mutex_unlock(&npz->idle_lock);
        pthread_join(npz->indexer, NULL);
        npz->indexing = false;
    }
    if (!npz->sched || npz->shared)
        return;
    sched_free(npz->sched); /* drains: every job now ends with -EINTR */
    npz->sched = NULL;
    if (npz->env.cache)
        cache_set_notify(npz->env.cache, NULL, NULL);
}

/* Whether the archive is known to be no longer what was mounted: then every read fails rather
 * than serve bytes of another version. */
static bool changed(struct npz *npz)
{
    return atomic_load(&npz->stale) || (npz->watch && archive_watch_changed(npz->watch));
}

/* Clips a request to member idx: the bytes to serve (0 at or past the end), or an error. */
static ssize_t clip(struct npz *npz, uint64_t idx, size_t len, uint64_t off)
{
    if (idx >= npz->zip.count)
        return -EINVAL;
    const struct zip_member *zm = &npz->zip.members[idx];
    if (off >= zm->usize || len == 0)
        return zm->err && off < zm->usize ? -EIO : 0;
    if (len > zm->usize - off)
        len = (size_t)(zm->usize - off);
    /* The archive must not change while mounted; once it has, every read fails rather than
     * serve bytes of another file (archive_watch.h). */
    if (changed(npz))
        return -EIO;
    return (ssize_t)len;
}

/* The member behind file ino, or -ENOENT / -EISDIR. */
static int64_t file_member(const struct npz *npz, uint64_t ino)
{
    const struct ns_node *n = ns_get(npz->ns, ino);
    if (!n)
        return -ENOENT;
    if (n->is_dir || n->member == NS_NO_MEMBER)
        return -EISDIR;
    return (int64_t)n->member;
}

ssize_t npz_read(struct npz *npz, uint64_t ino, void *buf, size_t len, uint64_t off,
                 enum read_mode mode, const atomic_bool *cancel, struct read_pins *pins)
{
    int64_t idx = file_member(npz, ino);
    return idx < 0 ? idx
                   : npz_read_member(npz, (uint64_t)idx, buf, len, off, mode, cancel, pins);
}

ssize_t npz_locate(struct npz *npz, uint64_t ino, size_t len, uint64_t off, int *fd,
                   uint64_t *pos)
{
    int64_t idx = file_member(npz, ino);
    if (idx < 0)
        return idx;
    if (npz->ops[idx] != &reader_stored || npz->env.src->remote) /* splice needs a file */
        return -ENOTSUP;
    ssize_t n = clip(npz, (uint64_t)idx, len, off);
    if (n > 0) {
        *fd = npz->env.src->fd;
        *pos = npz->zip.members[idx].data_off + off;
    }
    return n;
}

/* n, unless the read's slices do not add up to it as reader.h promises: then -EIO, since a
 * reply made of them would hold wrong bytes. */
static ssize_t check_slices(const struct read_pins *pins, ssize_t n)
{
    size_t sum = 0;
    for (size_t i = 0; pins && n > 0 && i < pins->n; i++)
        sum += pins->iov[i].iov_len;
    return pins && n > 0 && sum != (size_t)n ? -EIO : n;
}

ssize_t npz_read_member(struct npz *npz, uint64_t idx, void *buf, size_t len, uint64_t off,
                        enum read_mode mode, const atomic_bool *cancel,
                        struct read_pins *pins)
{
    ssize_t clipped = clip(npz, idx, len, off);
    if (clipped <= 0)
        return clipped;
    len = (size_t)clipped;
    const struct zip_member *zm = &npz->zip.members[idx];
    struct stop stop = {cancel, &npz->shutdown, NULL};
    if (stop_now(&stop))
        return -EINTR;
    struct read_ctl ctl = {mode, &stop, false, pins};
    struct reader_member m = {.idx = idx, .zm = zm};
    ssize_t n = reader_attach(npz->ops[idx], &npz->env, &npz->state[idx], &m);
    /* READ_QUICK's little decoding is not worth the background indexer's pause */
    bool decodes = reader_decodes(&ctl) && npz->ops[idx] != &reader_stored;
    if (decodes)
        atomic_fetch_add(&npz->decoding, 1);
    if (n == 0)
        n = check_slices(pins, npz->ops[idx]->read(&npz->env, &m, buf, len, off, &ctl));
    if (decodes)
        atomic_fetch_sub(&npz->decoding, 1);
    if (n == -ESTALE && !atomic_exchange(&npz->stale, true))
        log_error("%s changed while mounted: its reads fail from now on", npz->env.src->name);
    if (changed(npz) || n == -EREMOTEIO) /* it changed during this read, or its source failed */
        return -EIO;
    if (n < 0 && (n == -EIO || n == -EACCES || n == -ENOMEM) &&
        !atomic_exchange(&npz->logged[idx], true))
        log_error("%s: %s", zm->name,
                n != -ENOMEM ? npz->ops[idx]->why(&m) : strerror((int)-n));
    return n;
}

void npz_member_stats(struct npz *npz, uint64_t idx, struct reader_stats *out)
{
    *out = (struct reader_stats){0};
    if (idx >= npz->zip.count || !npz->ops[idx]->stats)
        return;
    struct reader_member m = member(npz, idx);
    npz->ops[idx]->stats(&m, out);
}

const char *npz_member_error(struct npz *npz, uint64_t idx)
{
    if (idx >= npz->zip.count)
        return NULL;
    struct reader_member m = member(npz, idx);
    /* members that never read are known at once */
    if (npz->ops[idx] == &reader_broken || npz->ops[idx] == &reader_locked)
        return npz->ops[idx]->why(&m);
    if (!atomic_load(&npz->logged[idx]))
        return NULL;
    return npz->ops[idx]->why(&m);
}

/* Reads and parses member idx's npy header into a new slot; NULL when that failed for a reason
 * that may pass (out of memory, interrupted), so that the next call tries again. */
static struct npy_slot *read_npy(struct npz *npz, uint64_t idx)
{
    struct npy_slot *slot = calloc(1, sizeof *slot);
    unsigned char pre[NPY_PREAMBLE], *buf = NULL;
    if (!slot)
        return NULL;
    ssize_t n = npz_read_member(npz, idx, pre, sizeof pre, 0, READ_BLOCK, NULL, NULL);
    int64_t size = n >= 0 ? npy_header_size(pre, (size_t)n) : n;
    if (size > 0 && (buf = malloc((size_t)size)) != NULL)
        n = npz_read_member(npz, idx, buf, (size_t)size, 0, READ_BLOCK, NULL, NULL);
    else if (size > 0)
        n = -ENOMEM;
    if (n == -ENOMEM || n == -EINTR) {
        free(buf);
        free(slot);
        return NULL;
    }
    int rc = buf && n == size ? npy_parse(buf, (size_t)n, &slot->h) : -EINVAL;
    free(buf);
    slot->valid = rc == 0;
    if (rc == -ENOMEM) {
        free(slot);
        return NULL;
    }
    return slot;
}

const struct npy_header *npz_member_npy(struct npz *npz, uint64_t idx)
{
    if (idx >= npz->zip.count || npz->zip.members[idx].err || npz->zip.members[idx].is_dir)
        return NULL;
    struct npy_slot *slot = atomic_load(&npz->npy[idx]);
    if (!slot) {
        struct npy_slot *mine = read_npy(npz, idx), *none = NULL;
        if (!mine)
            return NULL;
        if (atomic_compare_exchange_strong(&npz->npy[idx], &none, mine))
            slot = mine;
        else {
            npy_slot_free(mine); /* another thread read it first */
            slot = none;
        }
    }
    return slot->valid ? &slot->h : NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* The tree in file system terms. */

/* Permission bits: what a Unix writer recorded (write bits cleared), else 0444 / 0555. numpy
 * records 0600 with no file type, which is not a real Unix mode: only an entry whose mode has
 * a file type says who should read it. */
static mode_t perms(const struct zip_member *zm, bool is_dir)
{
    mode_t m = is_dir ? 0555 : 0444;
    if (zm && (zm->mode & S_IFMT) != 0) {
        m = zm->mode & 0555;
        if (is_dir)
            m |= (m & 0444) >> 2; /* a readable directory must be searchable */
    }
    return m;
}

static void fill_attr(const struct npz *npz, uint64_t ino, const struct ns_node *n,
                      struct npz_attr *a)
{
    const struct zip_member *zm =
        n->member == NS_NO_MEMBER ? NULL : &npz->zip.members[n->member];
    *a = (struct npz_attr){.ino = ino, .is_dir = n->is_dir,
                           .mode = (n->is_dir ? S_IFDIR : S_IFREG) | perms(zm, n->is_dir)};
    if (!n->is_dir && zm) {
        a->size = zm->usize;
        a->blocks = zm->csize / 512 + (zm->csize % 512 != 0);
    }
    a->mtime = zm && zm->mtime_known ? (time_t)zm->mtime : npz->archive_mtime;
}

void npz_statfs(struct npz *npz, struct npz_fsinfo *out)
{
    *out = (struct npz_fsinfo){.archive_bytes = npz->zip.file_size,
                               .inodes = ns_count(npz->ns), .members = npz->zip.count,
                               .stored_bytes = npz->stored_bytes,
                               .decoded_bytes = npz->decoded_bytes,
                               .sozip_bytes = atomic_load(&npz->sozip_bytes)};
    if (out->sozip_bytes == NOT_PROBED) /* two first callers would both probe: harmless */
        atomic_store(&npz->sozip_bytes, out->sozip_bytes = probe_sozip(npz));
}

int npz_lookup(struct npz *npz, uint64_t dir, const char *name, uint64_t *ino)
{
    const struct ns_node *d = ns_get(npz->ns, dir);
    if (!d)
        return -ENOENT;
    if (!d->is_dir)
        return -ENOTDIR;
    *ino = ns_lookup(npz->ns, dir, name);
    return *ino ? 0 : -ENOENT;
}

int npz_getattr(struct npz *npz, uint64_t ino, struct npz_attr *out)
{
    const struct ns_node *n = ns_get(npz->ns, ino);
    if (!n)
        return -ENOENT;
    fill_attr(npz, ino, n, out);
    return 0;
}

int npz_readdir(struct npz *npz, uint64_t dir, uint64_t pos, const char **name,
                struct npz_attr *attr)
{
    const struct ns_node *d = ns_get(npz->ns, dir);
    if (!d)
        return -ENOENT;
    if (!d->is_dir)
        return -ENOTDIR;
    if (pos >= d->nchildren + 2)
        return 0;
    uint64_t ino = pos == 0 ? dir : pos == 1 ? d->parent : ns_child(npz->ns, d, pos - 2);
    const struct ns_node *n = ns_get(npz->ns, ino);
    *name = pos == 0 ? "." : pos == 1 ? ".." : n->name;
    fill_attr(npz, ino, n, attr);
    return 1;
}

int npz_path(struct npz *npz, uint64_t ino, char *buf, size_t len)
{
    const struct ns_node *n = ns_get(npz->ns, ino);
    if (!n)
        return -ENOENT;
    size_t total = 0;
    for (uint64_t i = ino; i != NS_ROOT; i = ns_get(npz->ns, i)->parent)
        total += strlen(ns_get(npz->ns, i)->name) + (total ? 1 : 0);
    if (total >= len || total > INT32_MAX)
        return -ENAMETOOLONG;
    buf[total] = '\0';
    size_t end = total;
    for (uint64_t i = ino; i != NS_ROOT; i = ns_get(npz->ns, i)->parent) {
        const char *name = ns_get(npz->ns, i)->name;
        size_t l = strlen(name);
        if (end != total)
            buf[--end] = '/';
        end -= l;
        memcpy(buf + end, name, l);
    }
    return (int)total;
}
