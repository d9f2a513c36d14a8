/*
 * fuse_ops: see fuse_ops.h. Node ids are namespace inode numbers tagged with their generation,
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
#include "log.h"

#define TIMEOUT 86400.0        /* a change is pushed to the kernel (notifier below) */
#define BLKSIZE 131072         /* tell tools to read in 128 KiB pieces */

#define GEN_SHIFT 48 /* namespace inode numbers stay far below 2^48 */

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
    uint64_t ino; /* in gen's namespace */
    const struct ns_node *n;
};

/* Fills f for id; returns f->n, NULL when there is no such node. */
static const struct ns_node *node_of(struct fs *fs, fuse_ino_t id, struct fnode *f)
{
    unsigned cur = current_gen(fs);
    unsigned g = id == FUSE_ROOT_ID ? cur : (unsigned)(id >> GEN_SHIFT);
    if (g > cur)
        return f->n = NULL;
    f->gen = &fs->gens[g];
    f->ino = id & ((UINT64_C(1) << GEN_SHIFT) - 1);
    return f->n = ns_get(npz_ns(f->gen->npz), f->ino);
}

static fuse_ino_t node_id(const struct fs *fs, const struct fs_gen *gen, uint64_t ino)
{
    if (ino == NS_ROOT)
        return FUSE_ROOT_ID;
    return (fuse_ino_t)(gen - fs->gens) << GEN_SHIFT | ino;
}

static const struct zip_member *member_of(const struct fs_gen *gen, const struct ns_node *n)
{
    return n->member == NS_NO_MEMBER ? NULL : &npz_zip(gen->npz)->members[n->member];
}

/* Permission bits: what a Unix writer recorded (write bits cleared), else 0444 / 0555, less
 * the mount's mask. numpy records 0600 with no file type, which is not a real Unix mode: only
 * an entry whose mode has a file type says who should read it. */
static mode_t perms(const struct fs *fs, const struct zip_member *zm, bool is_dir)
{
    mode_t m = is_dir ? 0555 : 0444;
    if (zm && (zm->mode & S_IFMT) != 0) {
        m = zm->mode & 0555;
        if (is_dir)
            m |= (m & 0444) >> 2; /* a readable directory must be searchable */
    }
    return m & ~(is_dir ? fs->dmask : fs->fmask);
}

static void fill_attr(const struct fs *fs, const struct fs_gen *gen, fuse_ino_t ino,
                      const struct ns_node *n, struct stat *st)
{
    const struct zip_member *zm = member_of(gen, n);
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_nlink = 1; /* also for directories: "unknown", so find(1) does not guess */
    st->st_blksize = BLKSIZE;
    st->st_mode = (n->is_dir ? S_IFDIR : S_IFREG) | perms(fs, zm, n->is_dir);
    if (!n->is_dir && zm) {
        st->st_size = (off_t)(zm->usize > INT64_MAX ? INT64_MAX : zm->usize);
        st->st_blocks = (blkcnt_t)((zm->csize > INT64_MAX ? INT64_MAX : zm->csize) + 511) / 512;
    }
    time_t t = zm && zm->mtime_known ? (time_t)zm->mtime : gen->archive_mtime;
    st->st_mtim.tv_sec = st->st_atim.tv_sec = st->st_ctim.tv_sec = t;
}

/* ino: the namespace inode number of n in gen. */
static void fill_entry(const struct fs *fs, const struct fs_gen *gen, uint64_t ino,
                       const struct ns_node *n, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    e->ino = node_id(fs, gen, ino);
    e->generation = 1;
    e->attr_timeout = TIMEOUT;
    e->entry_timeout = TIMEOUT;
    fill_attr(fs, gen, e->ino, n, &e->attr);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    struct fnode p;
    if (!node_of(fs, parent, &p) || !p.n->is_dir) {
        fuse_reply_err(req, p.n ? ENOTDIR : ENOENT);
        return;
    }
    struct fuse_entry_param e;
    const struct fs_gen *gen = p.gen;
    const struct ns *ns = npz_ns(gen->npz);
    uint64_t ino = ns_lookup(ns, p.ino, name);
    if (ino == 0) {
        memset(&e, 0, sizeof e); /* a negative entry, cached like the rest */
        e.entry_timeout = TIMEOUT;
        fuse_reply_entry(req, &e);
        return;
    }
    fill_entry(fs, gen, ino, ns_get(ns, ino), &e);
    fuse_reply_entry(req, &e);
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
    if (!node_of(fs, ino, &f)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st;
    fill_attr(fs, f.gen, ino, f.n, &st);
    fuse_reply_attr(req, &st, TIMEOUT);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fnode f;
    const struct ns_node *n = node_of(fs_of(req), ino, &f);
    if (!n)
        fuse_reply_err(req, ENOENT);
    else if (n->is_dir)
        fuse_reply_err(req, EISDIR);
    else if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
        fuse_reply_err(req, EROFS);
    else {
        fi->keep_cache = 1; /* pages stay valid across opens: numpy opens a file 3 times */
        fi->noflush = 1;
        fuse_reply_open(req, fi);
    }
}

/* A per-thread buffer for read replies, grown to the largest request and kept. */
static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;

struct tbuf {
    size_t cap;
    unsigned char data[];
};

static void make_key(void)
{
    pthread_key_create(&buf_key, free);
}

static unsigned char *thread_buffer(size_t len)
{
    pthread_once(&buf_once, make_key);
    struct tbuf *b = pthread_getspecific(buf_key);
    if (!b || b->cap < len) {
        free(b);
        b = malloc(sizeof *b + len);
        if (!b) {
            pthread_setspecific(buf_key, NULL);
            return NULL;
        }
        b->cap = len;
        pthread_setspecific(buf_key, b);
    }
    return b->data;
}

/* A read that needs decoding, run by the core's workers (sched.h) so that no FUSE thread
 * waits for a decode: the FUSE thread that received it is free at once. */
struct read_job {
    struct sched_job sj;
    fuse_req_t req;
    struct npz *npz;
    uint64_t member;
    size_t size;
    uint64_t off;
    atomic_bool interrupted;
};

static void reply_read(fuse_req_t req, ssize_t got, const unsigned char *buf)
{
    if (got < 0)
        fuse_reply_err(req, (int)-got);
    else
        fuse_reply_buf(req, (const char *)buf, (size_t)got);
}

/* Called by libfuse, with the request's lock held, when the kernel interrupts the request
 * (the reader got a signal): the job gives up at its next check and answers EINTR. */
static void on_interrupt(fuse_req_t req, void *data)
{
    (void)req;
    struct read_job *j = data;
    atomic_store(&j->interrupted, true);
    npz_wake(j->npz);
}

static int run_read_job(struct sched_job *sj)
{
    struct read_job *j = (struct read_job *)sj;
    unsigned char *buf = thread_buffer(j->size);
    ssize_t got = buf ? npz_read(j->npz, j->member, buf, j->size, j->off, READ_NOWAIT,
                                 &j->interrupted)
                      : -ENOMEM;
    if (got == -EAGAIN)
        return -EAGAIN;
    /* Unregistering waits for an on_interrupt in progress, so j outlives it. */
    fuse_req_interrupt_func(j->req, NULL, NULL);
    reply_read(j->req, got, buf);
    free(j);
    return 0;
}

/* libfuse splices through a per-thread pipe of at most 1 MiB (pipe-max-size); a larger reply
 * would fall back to a fresh buffer per request. */
#define SPLICE_MAX (512u << 10)

static void reply_stored(fuse_req_t req, ssize_t n, int fd, uint64_t pos)
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
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)fi;
    struct fnode f;
    const struct ns_node *n = node_of(fs_of(req), ino, &f);
    if (!n || n->is_dir || n->member == NS_NO_MEMBER) {
        fuse_reply_err(req, n ? EISDIR : ENOENT);
        return;
    }
    struct npz *npz = f.gen->npz;
    if (size <= SPLICE_MAX) {
        /* A stored member: the kernel moves the archive's bytes into the reply (splice), one
         * copy instead of pread's and writev's. */
        int fd;
        uint64_t pos;
        ssize_t got = npz_locate(npz, n->member, size, (uint64_t)off, &fd, &pos);
        if (got != -ENOTSUP) {
            reply_stored(req, got, fd, pos);
            return;
        }
    }
    unsigned char *buf = thread_buffer(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* Pieces already decoded are served right here. */
    ssize_t got = npz_read(npz, n->member, buf, size, (uint64_t)off, READ_CACHED, NULL);
    struct read_job *j = got == -EAGAIN ? calloc(1, sizeof *j) : NULL;
    if (got != -EAGAIN || !j) {
        reply_read(req, j || got != -EAGAIN ? got : -ENOMEM, buf);
        return;
    }
    *j = (struct read_job){.sj.run = run_read_job, .req = req, .npz = npz,
                           .member = n->member, .size = size, .off = (uint64_t)off};
    atomic_init(&j->interrupted, false);
    fuse_req_interrupt_func(req, on_interrupt, j);
    if (npz_submit(npz, &j->sj) < 0) {
        fuse_req_interrupt_func(req, NULL, NULL);
        free(j);
        fuse_reply_err(req, EAGAIN);
    }
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fnode f;
    const struct ns_node *n = node_of(fs_of(req), ino, &f);
    if (!n || !n->is_dir) {
        fuse_reply_err(req, n ? ENOTDIR : ENOENT);
        return;
    }
    fi->keep_cache = 1;
    fi->cache_readdir = 1;
    fuse_reply_open(req, fi);
}

/* Directory positions: 0 is ".", 1 is "..", 2 + i is child i; an entry's offset is the
 * position after it. */
static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
    struct fs *fs = fs_of(req);
    struct fnode f;
    const struct ns_node *dir = node_of(fs, ino, &f);
    if (!dir || !dir->is_dir) {
        fuse_reply_err(req, dir ? ENOTDIR : ENOENT);
        return;
    }
    const struct ns *ns = npz_ns(f.gen->npz);
    char *buf = (char *)thread_buffer(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0;
    for (uint64_t pos = (uint64_t)off; pos < dir->nchildren + 2; pos++) {
        uint64_t cino = pos == 0 ? f.ino : pos == 1 ? dir->parent : ns_child(ns, dir, pos - 2);
        const char *name = pos == 0 ? "." : pos == 1 ? ".." : ns_get(ns, cino)->name;
        const struct ns_node *c = ns_get(ns, cino);
        size_t n;
        if (plus) {
            struct fuse_entry_param e;
            fill_entry(fs, f.gen, cino, c, &e);
            n = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)pos + 1);
        } else {
            struct stat st = {.st_ino = node_id(fs, f.gen, cino),
                              .st_mode = c->is_dir ? S_IFDIR : S_IFREG};
            n = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)pos + 1);
        }
        if (n > size - used)
            break;
        used += n;
    }
    fuse_reply_buf(req, buf, used);
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
    struct npz *npz = fs->gens[current_gen(fs)].npz;
    const struct zip_archive *za = npz_zip(npz);
    struct statvfs sv = {
        .f_bsize = 4096,
        .f_frsize = 4096,
        .f_blocks = (za->file_size + 4095) / 4096,
        .f_files = ns_count(npz_ns(npz)),
        .f_namemax = 255,
        .f_flag = ST_RDONLY,
    };
    fuse_reply_statfs(req, &sv);
}

/* Extended attributes: what the index of a compressed member says of itself, and why a
 * member fails, for users who cannot read the daemon's log. */
enum xattr_id { X_CHECKPOINTS, X_INDEX_BYTES, X_INDEXED, X_COMPLETE, X_DECODED, X_ERROR,
                X_SOZIP_CHUNK, X_N };
static const char *const xattr_names[X_N] = {
    "user.npzmount.checkpoints", "user.npzmount.index_bytes", "user.npzmount.indexed",
    "user.npzmount.complete", "user.npzmount.decoded", "user.npzmount.error",
    "user.npzmount.sozip_chunk",
};

/* Writes attribute id of member idx into out; returns its length, or -1 when it is absent. */
static int xattr_value(struct npz *npz, uint64_t idx, enum xattr_id id, char *out, size_t len)
{
    const struct zip_member *zm = &npz_zip(npz)->members[idx];
    if (id == X_ERROR) {
        const char *why = npz_error(npz, idx);
        return why ? snprintf(out, len, "%s", why) : -1;
    }
    if (zm->method == ZIP_METHOD_STORED || zm->err)
        return -1;
    struct reader_stats rs;
    npz_stats(npz, idx, &rs);
    if (id == X_SOZIP_CHUNK && !rs.sozip_chunk) /* only on members served by a SOZip index */
        return -1;
    uint64_t v = id == X_SOZIP_CHUNK ? rs.sozip_chunk : id == X_CHECKPOINTS ? rs.checkpoints
               : id == X_INDEX_BYTES ? rs.index_bytes : id == X_INDEXED ? rs.indexed
               : id == X_DECODED ? rs.decoded : rs.indexed == zm->usize;
    return snprintf(out, len, "%llu", (unsigned long long)v);
}

/* The member behind a file's node id, with its generation's npz; NULL for directories. */
static const struct ns_node *file_node(fuse_req_t req, fuse_ino_t ino, struct npz **npz)
{
    struct fnode f;
    const struct ns_node *n = node_of(fs_of(req), ino, &f);
    if (!n || n->member == NS_NO_MEMBER)
        return NULL;
    *npz = f.gen->npz;
    return n;
}

static void reply_xattr(fuse_req_t req, size_t size, const char *val, size_t len)
{
    if (size == 0)
        fuse_reply_xattr(req, len);
    else if (size < len)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, val, len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    struct npz *npz = NULL;
    const struct ns_node *n = file_node(req, ino, &npz);
    char val[512];
    int len = -1;
    for (int id = 0; n && id < X_N && len < 0; id++)
        if (strcmp(name, xattr_names[id]) == 0)
            len = xattr_value(npz, n->member, (enum xattr_id)id, val, sizeof val);
    if (len < 0)
        fuse_reply_err(req, ENODATA);
    else
        reply_xattr(req, size, val, (size_t)len < sizeof val ? (size_t)len : sizeof val - 1);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct npz *npz = NULL;
    const struct ns_node *n = file_node(req, ino, &npz);
    char list[512], val[512];
    size_t used = 0;
    for (int id = 0; n && id < X_N; id++) {
        if (xattr_value(npz, n->member, (enum xattr_id)id, val, sizeof val) < 0)
            continue;
        size_t l = strlen(xattr_names[id]) + 1;
        memcpy(list + used, xattr_names[id], l);
        used += l;
    }
    reply_xattr(req, size, list, used);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    conn->max_read = ((struct fs *)userdata)->max_read; /* libfuse fails INIT on a mismatch */
    /* Readdirplus always: `ls -l` then costs one request per batch, not one per entry. */
    if (conn->capable & FUSE_CAP_READDIRPLUS)
        conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
    conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
    /* Synchronous reads: the kernel sends no INTERRUPT for the background requests of async
     * readahead, so a reader waiting on one could not be stopped with Ctrl-C. */
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
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
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
    const struct ns *ns = npz_ns(gen->npz);
    uint64_t count = ns_count(ns);
    for (uint64_t ino = NS_ROOT; ino <= count && !notifier_stopping(n); ino++) {
        const struct ns_node *node = ns_get(ns, ino);
        if (node && !node->is_dir) /* -ENOENT when the kernel never saw it: nothing cached */
            fuse_lowlevel_notify_inval_inode(n->se, node_id(n->fs, gen, ino), 0, 0);
    }
}

/* The root's entries under the names of both versions (the old ones lead to old nodes, the
 * new ones may be cached as absent), and its listing and attributes. */
static void drop_entries(struct fs_notifier *n, const struct fs_gen *old, const struct fs_gen *cur)
{
    const struct fs_gen *both[2] = {old, cur};
    for (int i = 0; i < 2; i++) {
        const struct ns *ns = npz_ns(both[i]->npz);
        const struct ns_node *root = ns_get(ns, NS_ROOT);
        for (uint64_t c = 0; c < root->nchildren && !notifier_stopping(n); c++) {
            const char *name = ns_get(ns, ns_child(ns, root, c))->name;
            fuse_lowlevel_notify_inval_entry(n->se, FUSE_ROOT_ID, name, strlen(name));
        }
    }
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
        char msg[256];
        int rc = npz_open(fs->archive, &fs->nopt, &npz, msg, sizeof msg);
        if (rc == 0) {
            fs->gens[g] = (struct fs_gen){npz, fs_archive_mtime(npz)};
            npz_start(npz);
            atomic_store_explicit(&fs->current, g, memory_order_release);
            log_error("%s: now serving the new version of the archive (%llu members)",
                      fs->archive, (unsigned long long)npz_zip(npz)->count);
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
    int rc = archive_watch_start(npz_watch(n->fs->gens[g].npz), on_archive_change, n);
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

time_t fs_archive_mtime(struct npz *npz)
{
    struct stat st;
    return fstat(npz_zip(npz)->fd, &st) == 0 ? st.st_mtime : 0;
}

void fs_watch_start(struct fs *fs, struct fuse_session *se)
{
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
    for (unsigned g = 0; g <= current_gen(fs); g++)
        archive_watch_stop(npz_watch(fs->gens[g].npz)); /* no hook is called after this */
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
        npz_shutdown(fs->gens[g].npz);
}

void fs_close(struct fs *fs)
{
    for (unsigned g = 0; g <= current_gen(fs); g++)
        npz_close(fs->gens[g].npz);
    memset(fs->gens, 0, sizeof fs->gens);
    atomic_store(&fs->current, 0);
}
