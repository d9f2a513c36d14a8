/*
 * fuse_ops: see fuse_ops.h. Node ids are the core's inode numbers tagged with their generation,
 * and every generation stays until unmount, so lookup counts need no bookkeeping and forget
 * is a no-op.
 */
#include "fuse_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "archive_watch.h"
#include "deadline.h"
#include "log.h"

#define TIMEOUT 86400.0        /* a change is pushed to the kernel (notifier below) */
#define BLKSIZE 131072         /* tell tools to read in 128 KiB pieces */

#define GEN_SHIFT 48 /* the core's inode numbers stay far below 2^48 */

static struct fs *fs_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

static unsigned current_gen(struct fs *fs)
{
    return atomic_load_explicit(&fs->current, memory_order_acquire);
}

/* What a FUSE node id names. */
struct fnode {
    const struct fs_gen *gen;
    uint64_t ino; /* in gen's forest */
    struct npz_attr attr;
};

enum want { ANY, DIR_ONLY, FILE_ONLY };

/* The one check of a node id every handler makes: fills f and returns 0, or the errno to
 * reply with (ENOENT, ENOTDIR, EISDIR) when there is no such node or it is not what the
 * request wants. */
static int resolve(struct fs *fs, fuse_ino_t id, enum want want, struct fnode *f)
{
    unsigned cur = current_gen(fs);
    unsigned g = id == FUSE_ROOT_ID ? cur : (unsigned)(id >> GEN_SHIFT);
    if (g > cur)
        return ENOENT;
    f->gen = &fs->gens[g];
    f->ino = id == FUSE_ROOT_ID ? NPZ_ROOT : id & ((UINT64_C(1) << GEN_SHIFT) - 1);
    if (forest_getattr(f->gen->fo, f->ino, &f->attr) < 0)
        return ENOENT;
    if (want == DIR_ONLY && !f->attr.is_dir)
        return ENOTDIR;
    if (want == FILE_ONLY && f->attr.is_dir)
        return EISDIR;
    return 0;
}

static fuse_ino_t node_id(const struct fs *fs, const struct fs_gen *gen, uint64_t ino)
{
    if (ino == NPZ_ROOT)
        return FUSE_ROOT_ID;
    return (fuse_ino_t)(gen - fs->gens) << GEN_SHIFT | ino;
}

/* The core's attributes, with the mount's owner and masks. */
static void fill_stat(const struct fs *fs, const struct fs_gen *gen, const struct npz_attr *a,
                      struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = node_id(fs, gen, a->ino);
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_nlink = 1; /* also for directories: "unknown", so find(1) does not guess */
    st->st_blksize = BLKSIZE;
    st->st_mode = a->mode & ~(a->is_dir ? fs->dmask : fs->fmask);
    st->st_size = (off_t)(a->size > INT64_MAX ? INT64_MAX : a->size);
    st->st_blocks = (blkcnt_t)(a->blocks > INT64_MAX ? INT64_MAX : a->blocks);
    st->st_mtim.tv_sec = st->st_atim.tv_sec = st->st_ctim.tv_sec = a->mtime;
}

static void fill_entry(const struct fs *fs, const struct fs_gen *gen, const struct npz_attr *a,
                       struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    e->ino = node_id(fs, gen, a->ino);
    e->generation = 1;
    e->attr_timeout = TIMEOUT;
    e->entry_timeout = TIMEOUT;
    fill_stat(fs, gen, a, &e->attr);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    struct fnode p;
    struct fuse_entry_param e;
    int err = resolve(fs, parent, DIR_ONLY, &p);
    uint64_t ino;
    int rc = err ? -err : forest_lookup(p.gen->fo, p.ino, name, &ino);
    struct npz_attr a;
    if (rc == 0)
        rc = forest_getattr(p.gen->fo, ino, &a);
    if (rc == -ENOENT && !err) {
        memset(&e, 0, sizeof e); /* a negative entry, cached like the rest */
        e.entry_timeout = TIMEOUT;
        fuse_reply_entry(req, &e);
    } else if (rc < 0) {
        fuse_reply_err(req, -rc);
    } else {
        fill_entry(fs, p.gen, &a, &e);
        fuse_reply_entry(req, &e);
    }
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    (void)ino, (void)nlookup;
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    (void)count, (void)forgets;
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = fs_of(req);
    struct fnode f;
    int err = resolve(fs, ino, ANY, &f);
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    struct stat st;
    fill_stat(fs, f.gen, &f.attr, &st);
    fuse_reply_attr(req, &st, TIMEOUT);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fnode f;
    int err = resolve(fs_of(req), ino, FILE_ONLY, &f);
    if (err)
        fuse_reply_err(req, err);
    else if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
        fuse_reply_err(req, EROFS);
    else {
        fi->keep_cache = 1; /* pages stay valid across opens: numpy opens a file 3 times */
        fi->noflush = 1;
        fuse_reply_open(req, fi);
    }
}

/* Per-thread room for replies, grown to the largest request and kept: a buffer, and the
 * slices of a read answered straight from the cache (read_pins, always released before the
 * thread's next read). */
static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;

struct tbuf {
    struct read_pins pins;
    size_t cap;
    unsigned char data[];
};

static void free_tbuf(void *p)
{
    struct tbuf *b = p;
    read_pins_free(&b->pins);
    free(b);
}

static void make_key(void)
{
    pthread_key_create(&buf_key, free_tbuf);
}

static struct tbuf *thread_room(size_t len)
{
    pthread_once(&buf_once, make_key);
    struct tbuf *b = pthread_getspecific(buf_key);
    if (!b || b->cap < len) {
        struct read_pins pins = b ? b->pins : (struct read_pins){0};
        free(b);
        b = malloc(sizeof *b + len);
        if (!b) {
            read_pins_free(&pins);
            pthread_setspecific(buf_key, NULL);
            return NULL;
        }
        b->pins = pins;
        b->cap = len;
        pthread_setspecific(buf_key, b);
    }
    return b;
}

static unsigned char *thread_buffer(size_t len)
{
    struct tbuf *b = thread_room(len);
    return b ? b->data : NULL;
}

/* A read that needs decoding (more than READ_QUICK's few chunks), run by the core's workers
 * (sched.h) so that no FUSE thread waits for a long decode: the FUSE thread that received it
 * is free at once. */
struct read_job {
    struct sched_job sj;
    fuse_req_t req;
    struct forest *fo;
    uint64_t ino; /* in fo */
    size_t size;
    uint64_t off;
    atomic_bool interrupted;
};

/* Answers a read from its slices (the kernel copies them from the cache's pieces: no copy of
 * ours), then lets the pieces go. fuse_reply_iov allocates, so one slice goes as a buffer. */
static void reply_read(fuse_req_t req, ssize_t got, struct read_pins *pins)
{
    if (got < 0)
        fuse_reply_err(req, (int)-got);
    else if (pins->n <= 1)
        fuse_reply_buf(req, pins->n ? pins->iov[0].iov_base : NULL, pins->n ? (size_t)got : 0);
    else
        fuse_reply_iov(req, pins->iov, (int)pins->n);
    read_pins_release(pins);
}

/* Called by libfuse, with the request's lock held, when the kernel interrupts the request
 * (the reader got a signal): the job gives up at its next check and answers EINTR. */
static void on_interrupt(fuse_req_t req, void *data)
{
    (void)req;
    struct read_job *j = data;
    atomic_store(&j->interrupted, true);
    forest_wake(j->fo);
}

static int run_read_job(struct sched_job *sj)
{
    struct read_job *j = (struct read_job *)sj;
    struct tbuf *b = thread_room(j->size);
    ssize_t got = b ? forest_read(j->fo, j->ino, b->data, j->size, j->off, READ_NOWAIT,
                                  &j->interrupted, &b->pins)
                    : -ENOMEM;
    if (got == -EAGAIN) {
        read_pins_release(&b->pins);
        return -EAGAIN;
    }
    /* Unregistering waits for an on_interrupt in progress, so j outlives it. */
    fuse_req_interrupt_func(j->req, NULL, NULL);
    if (b)
        reply_read(j->req, got, &b->pins);
    else
        fuse_reply_err(j->req, ENOMEM);
    free(j);
    return 0;
}

/* libfuse splices through a per-thread pipe of at most 1 MiB (pipe-max-size); a larger reply
 * would fall back to a fresh buffer per request. */
#define SPLICE_MAX (512u << 10)

static void reply_stored(fuse_req_t req, struct forest *fo, ssize_t n, int fd, uint64_t pos,
                         struct forest_hold *hold)
{
    if (n < 0) {
        fuse_reply_err(req, (int)-n);
        return;
    }
    struct fuse_bufvec bv = FUSE_BUFVEC_INIT((size_t)n);
    bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
    bv.buf[0].fd = fd;
    bv.buf[0].pos = (off_t)pos;
    fuse_reply_data(req, &bv, 0);
    forest_release(fo, hold); /* fd may be closed from now on */
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)fi;
    struct fnode f;
    int err = resolve(fs_of(req), ino, FILE_ONLY, &f);
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    struct forest *fo = f.gen->fo;
    if (size <= SPLICE_MAX) {
        /* A stored member: the kernel moves the archive's bytes into the reply (splice), one
         * copy instead of pread's and writev's. */
        int fd;
        uint64_t pos;
        struct forest_hold *hold;
        ssize_t got = forest_locate(fo, f.ino, size, (uint64_t)off, &fd, &pos, &hold);
        if (got != -ENOTSUP) {
            reply_stored(req, fo, got, fd, pos, hold);
            return;
        }
    }
    struct tbuf *b = thread_room(size);
    if (!b) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* Pieces already decoded are served right here, and so is what takes a few chunks to
     * decode (a random read of a SOZip member); the rest goes to the workers. */
    ssize_t got = forest_read(fo, f.ino, b->data, size, (uint64_t)off, READ_QUICK, NULL,
                              &b->pins);
    struct read_job *j = got == -EAGAIN ? calloc(1, sizeof *j) : NULL;
    if (got != -EAGAIN || !j) {
        reply_read(req, j || got != -EAGAIN ? got : -ENOMEM, &b->pins);
        return;
    }
    read_pins_release(&b->pins);
    *j = (struct read_job){.sj.run = run_read_job, .req = req, .fo = fo,
                           .ino = f.ino, .size = size, .off = (uint64_t)off};
    atomic_init(&j->interrupted, false);
    fuse_req_interrupt_func(req, on_interrupt, j);
    if (forest_submit(fo, &j->sj) < 0) {
        fuse_req_interrupt_func(req, NULL, NULL);
        free(j);
        fuse_reply_err(req, EAGAIN);
    }
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fnode f;
    int err = resolve(fs_of(req), ino, DIR_ONLY, &f);
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    fi->keep_cache = 1;
    fi->cache_readdir = 1;
    fuse_reply_open(req, fi);
}

/* A readdir reply being filled. */
struct dirbuf {
    fuse_req_t req;
    struct fs *fs;
    const struct fs_gen *gen;
    char *buf;
    size_t size, used;
    bool plus;
};

/* Adds one entry; 1 once the reply is full. An entry's offset is the position after it. */
static int add_entry(void *ctx, uint64_t pos, const char *name, const struct npz_attr *a)
{
    struct dirbuf *d = ctx;
    size_t n, room = d->size - d->used;
    if (d->plus) {
        struct fuse_entry_param e;
        fill_entry(d->fs, d->gen, a, &e);
        n = fuse_add_direntry_plus(d->req, d->buf + d->used, room, name, &e, (off_t)pos + 1);
    } else {
        struct stat st = {.st_ino = node_id(d->fs, d->gen, a->ino),
                          .st_mode = a->is_dir ? S_IFDIR : S_IFREG};
        n = fuse_add_direntry(d->req, d->buf + d->used, room, name, &st, (off_t)pos + 1);
    }
    if (n > room)
        return 1;
    d->used += n;
    return 0;
}

/* Directory positions are the core's (forest_readdir). */
static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
    struct fs *fs = fs_of(req);
    struct fnode f;
    int err = resolve(fs, ino, DIR_ONLY, &f);
    char *buf = err ? NULL : (char *)thread_buffer(size);
    if (err || !buf) {
        fuse_reply_err(req, err ? err : ENOMEM);
        return;
    }
    struct dirbuf d = {req, fs, f.gen, buf, size, 0, plus};
    err = -forest_readdir(f.gen->fo, f.ino, (uint64_t)off, add_entry, &d);
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_buf(req, buf, d.used);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)fi;
    readdir_common(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    (void)fi;
    readdir_common(req, ino, size, off, true);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct fs *fs = fs_of(req);
    struct npz_fsinfo info;
    forest_statfs(fs->gens[current_gen(fs)].fo, &info);
    struct statvfs sv = {
        .f_bsize = 4096,
        .f_frsize = 4096,
        .f_blocks = (info.archive_bytes + 4095) / 4096,
        .f_files = info.inodes,
        .f_namemax = 255,
        .f_flag = ST_RDONLY,
    };
    fuse_reply_statfs(req, &sv);
}

/* Extended attributes are the core's (npz.h); size 0 asks for the length. */
static void reply_xattr(fuse_req_t req, size_t size, ssize_t len, const char *buf)
{
    if (len < 0)
        fuse_reply_err(req, (int)-len);
    else if (size == 0)
        fuse_reply_xattr(req, (size_t)len);
    else
        fuse_reply_buf(req, buf, (size_t)len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    struct fnode f;
    int err = resolve(fs_of(req), ino, ANY, &f);
    char *buf = err || size == 0 ? NULL : (char *)thread_buffer(size);
    ssize_t len = err ? -err : size && !buf ? -ENOMEM
                : forest_getxattr(f.gen->fo, f.ino, name, buf, size);
    reply_xattr(req, size, len, buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct fnode f;
    int err = resolve(fs_of(req), ino, ANY, &f);
    char *buf = err || size == 0 ? NULL : (char *)thread_buffer(size);
    ssize_t len = err ? -err : size && !buf ? -ENOMEM
                : forest_listxattr(f.gen->fo, f.ino, buf, size);
    reply_xattr(req, size, len, buf);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    const struct fs *fs = userdata;
    conn->max_read = fs->max_read; /* libfuse fails INIT on a mismatch */
    if (fs->max_readahead && fs->max_readahead < conn->max_readahead)
        conn->max_readahead = fs->max_readahead;
    /* Readdirplus always: `ls -l` then costs one request per batch, not one per entry. */
    if (conn->capable & FUSE_CAP_READDIRPLUS)
        conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
    conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
    /* Synchronous unless main chose otherwise (struct fs): the kernel sends no INTERRUPT for
     * the background requests of async readahead, so Ctrl-C could not stop their reader. */
    if (fs->async_read && (conn->capable & FUSE_CAP_ASYNC_READ))
        conn->want |= FUSE_CAP_ASYNC_READ;
    else
        conn->want &= ~(unsigned)FUSE_CAP_ASYNC_READ;
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
}

const struct fuse_lowlevel_ops fs_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .open = op_open,
    .read = op_read,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .statfs = op_statfs,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
};

/* ------------------------------------------------------------------------------------------ */
/* Following the archive once it changed. An invalidation waits for the pages that a READ in
 * progress holds locked until it is answered, so it is never sent from a thread that serves
 * requests (it could wait for itself): the core's hook only wakes this thread. One pass over
 * the old generation's files is enough: from then on every read of it fails, so no new page
 * gets cached, and a read still in flight holds its page locked, so the pass waits for it
 * and drops it. Once the session has ended, a READ still queued gets no answer, so the pass
 * stops early; one that is already waiting on such a page then waits until the reader goes
 * away or the connection is aborted (it takes a signal during the short pass right after a
 * change). Then the new version is opened (retried while it is being written: an archive is
 * complete once its end record is there), made current, and the root's entries of both
 * versions are dropped, so that the next lookup of any name finds the new version. */

struct fs_notifier {
    struct fuse_session *se;
    struct fs *fs;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* on CLOCK_MONOTONIC */
    bool changed, stop;
};

static void on_archive_change(void *arg)
{
    struct fs_notifier *n = arg;
    pthread_mutex_lock(&n->lock);
    n->changed = true;
    pthread_cond_signal(&n->wake);
    pthread_mutex_unlock(&n->lock);
}

static bool notifier_stopping(struct fs_notifier *n)
{
    pthread_mutex_lock(&n->lock);
    bool stop = n->stop;
    pthread_mutex_unlock(&n->lock);
    return stop || fuse_session_exited(n->se);
}

/* Waits for a change of the current generation (true) or for the stop (false), at most ms
 * milliseconds when ms > 0 (then false also when the time ran out). */
static bool wait_change(struct fs_notifier *n, unsigned ms)
{
    struct timespec until;
    deadline_in(&until, CLOCK_MONOTONIC, (long)ms);
    pthread_mutex_lock(&n->lock);
    int rc = 0;
    while (!n->changed && !n->stop && rc == 0)
        rc = ms ? pthread_cond_timedwait(&n->wake, &n->lock, &until)
                : pthread_cond_wait(&n->wake, &n->lock);
    bool changed = n->changed && !n->stop;
    n->changed = false;
    pthread_mutex_unlock(&n->lock);
    return changed;
}

static void drop_pages(struct fs_notifier *n, const struct fs_gen *gen)
{
    struct npz_fsinfo info;
    forest_statfs(gen->fo, &info);
    for (uint64_t ino = NPZ_ROOT; ino <= info.inodes && !notifier_stopping(n); ino++) {
        struct npz_attr a;
        if (forest_getattr(gen->fo, ino, &a) == 0 && !a.is_dir) /* -ENOENT when the kernel
                                                                * never saw it: nothing cached */
            fuse_lowlevel_notify_inval_inode(n->se, node_id(n->fs, gen, ino), 0, 0);
    }
}

static int drop_entry(void *ctx, uint64_t pos, const char *name, const struct npz_attr *a)
{
    (void)pos, (void)a;
    struct fs_notifier *n = ctx;
    fuse_lowlevel_notify_inval_entry(n->se, FUSE_ROOT_ID, name, strlen(name));
    return notifier_stopping(n);
}

/* The root's entries under the names of both versions (the old ones lead to old nodes, the
 * new ones may be cached as absent), and its listing and attributes. */
static void drop_entries(struct fs_notifier *n, const struct fs_gen *old, const struct fs_gen *cur)
{
    forest_readdir(old->fo, NPZ_ROOT, 2, drop_entry, n);
    forest_readdir(cur->fo, NPZ_ROOT, 2, drop_entry, n);
    fuse_lowlevel_notify_inval_inode(n->se, FUSE_ROOT_ID, 0, 0);
}

/* Opens the changed archive as generation g, retrying with a growing pause while it cannot
 * be read as a whole archive, and makes it current. Returns false when stopping. */
static bool open_generation(struct fs_notifier *n, unsigned g)
{
    struct fs *fs = n->fs;
    unsigned pause = 20;
    for (bool told = false;; told = true) {
        struct npz *npz;
        struct forest *fo = NULL;
        char msg[256];
        int rc = npz_open(fs->archive, &fs->nopt, &npz, msg, sizeof msg);
        if (rc == 0 && (rc = forest_wrap(npz, &fo)) < 0)
            snprintf(msg, sizeof msg, "%s", strerror(-rc));
        if (rc == 0) {
            struct npz_fsinfo info;
            forest_statfs(fo, &info);
            fs->gens[g] = (struct fs_gen){fo};
            forest_start(fo);
            atomic_store_explicit(&fs->current, g, memory_order_release);
            log_error("%s: now serving the new version of the archive (%llu members)",
                      fs->archive, (unsigned long long)info.members);
            if (fs->async_read && info.decoded_bytes > 0) /* chosen at INIT, for good */
                log_error("%s: its compressed members are read asynchronously, like the "
                          "stored ones before: Ctrl-C cannot stop a reader waiting on their "
                          "decoding (-o sync_read avoids it)", fs->archive);
            return true;
        }
        if (!told)
            log_error("%s: cannot open the new version yet (%s): retrying", fs->archive, msg);
        wait_change(n, pause); /* only a stop cuts it short: the old watch fired for good */
        if (notifier_stopping(n))
            return false;
        pause = pause < 1000 ? pause * 2 : 1000;
    }
}

static void watch_generation(struct fs_notifier *n, unsigned g)
{
    int rc = archive_watch_start(forest_watch(n->fs->gens[g].fo), on_archive_change, n);
    if (rc < 0)
        log_error("cannot watch the archive (%s): a change is noticed at the next read",
                  strerror(-rc));
}

static void *notifier_main(void *arg)
{
    struct fs_notifier *n = arg;
    struct fs *fs = n->fs;
    while (wait_change(n, 0)) {
        unsigned g = current_gen(fs);
        drop_pages(n, &fs->gens[g]);
        if (fs->nofollow || notifier_stopping(n))
            break;
        if (g + 1 == FS_MAX_GENS) {
            log_error("%s changed %u times: no longer followed (remount it)", fs->archive,
                      FS_MAX_GENS - 1);
            break;
        }
        if (!open_generation(n, g + 1))
            break;
        drop_entries(n, &fs->gens[g], &fs->gens[g + 1]);
        watch_generation(n, g + 1);
    }
    return NULL;
}

void fs_watch_start(struct fs *fs, struct fuse_session *se)
{
    if (!forest_watch(fs->gens[0].fo))
        return; /* a tree of archives: each notices its own changes (forest.h) */
    struct fs_notifier *n = calloc(1, sizeof *n);
    if (!n) {
        log_error("cannot start the change notifier: %s", strerror(ENOMEM));
        return;
    }
    n->se = se;
    n->fs = fs;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->wake, &ca);
    pthread_condattr_destroy(&ca);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* the new threads inherit it */
    int rc = pthread_create(&n->thread, NULL, notifier_main, n);
    if (rc == 0) {
        fs->notifier = n;
        watch_generation(n, 0);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        log_error("cannot start the change notifier: %s", strerror(rc));
        pthread_cond_destroy(&n->wake);
        pthread_mutex_destroy(&n->lock);
        free(n);
    }
}

void fs_watch_stop(struct fs *fs)
{
    struct fs_notifier *n = fs->notifier;
    if (n) { /* first the thread, which may be starting a generation's watch */
        pthread_mutex_lock(&n->lock);
        n->stop = true;
        pthread_cond_signal(&n->wake);
        pthread_mutex_unlock(&n->lock);
        pthread_join(n->thread, NULL);
    }
    for (unsigned g = 0; n && g <= current_gen(fs); g++)
        archive_watch_stop(forest_watch(fs->gens[g].fo)); /* no hook is called after this */
    if (!n)
        return;
    pthread_cond_destroy(&n->wake);
    pthread_mutex_destroy(&n->lock);
    free(n);
    fs->notifier = NULL;
}

void fs_shutdown(struct fs *fs)
{
    for (unsigned g = 0; g <= current_gen(fs); g++)
        forest_shutdown(fs->gens[g].fo);
}

void fs_close(struct fs *fs)
{
    for (unsigned g = 0; g <= current_gen(fs); g++)
        forest_close(fs->gens[g].fo);
    memset(fs->gens, 0, sizeof fs->gens);
    atomic_store(&fs->current, 0);
}
