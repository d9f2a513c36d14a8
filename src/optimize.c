/*
 * optimize: see optimize.h.
 *
 * Pipeline: the caller's thread decodes a member into a ring of chunk jobs; worker threads
 * deflate each job with a fresh (reset) stream, which gives the same independence as the
 * flushes of one stream, and end it with Z_SYNC_FLUSH then Z_FULL_FLUSH (Z_FINISH for the
 * member's last chunk), so the concatenation is one valid deflate stream; the caller's thread
 * writes finished jobs in order, notes where each chunk starts, and folds their CRC-32s.
 */
#define _GNU_SOURCE
#include "optimize.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "inflater.h"
#include "io.h"
#include "source.h"
#include "zipdir.h"
#include "zipwrite.h"

#define COPY_BUF (1u << 20)
#define INDEX_HEADER 32
#define LOCAL_MAX (ZW_LOCAL_LEN + 2 * 65535u)

/* ---------------------------------------------------------------------------------------- */
/* Chunk jobs and the threads that deflate them */

struct job {
    unsigned char *in, *out;
    size_t in_len, out_len;
    uint32_t crc;
    bool last; /* the member's last chunk: Z_FINISH instead of the flushes */
    bool done;
    int err;
};

struct pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;     /* workers: a job was queued, or quit */
    pthread_cond_t finished; /* the writer: a job is done */
    struct job *jobs;
    unsigned njobs;
    uint64_t queued, taken, retired; /* counts of jobs; job k lives in jobs[k % njobs] */
    bool quit;
    size_t out_cap;
    pthread_t *threads;
    unsigned started;
};

static int deflate_chunk(z_stream *zs, struct job *j, size_t cap)
{
    if (deflateReset(zs) != Z_OK)
        return -EIO;
    j->crc = (uint32_t)crc32(0, j->in, (uInt)j->in_len);
    zs->next_in = j->in;
    zs->avail_in = (uInt)j->in_len;
    zs->next_out = j->out;
    zs->avail_out = (uInt)cap;
    bool ok;
    if (j->last)
        ok = deflate(zs, Z_FINISH) == Z_STREAM_END;
    else /* the spec's pair of flushes; avail_out left over proves nothing is pending */
        ok = deflate(zs, Z_SYNC_FLUSH) == Z_OK && zs->avail_in == 0 && zs->avail_out > 0 &&
             deflate(zs, Z_FULL_FLUSH) == Z_OK && zs->avail_out > 0;
    j->out_len = cap - zs->avail_out;
    return ok ? 0 : -EIO;
}

static void *worker(void *arg)
{
    struct pool *p = arg;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    bool ready = deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8,
                              Z_DEFAULT_STRATEGY) == Z_OK;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->quit && p->taken == p->queued)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->taken == p->queued)
            break;
        struct job *j = &p->jobs[p->taken++ % p->njobs];
        pthread_mutex_unlock(&p->lock);
        int err = ready ? deflate_chunk(&zs, j, p->out_cap) : -ENOMEM;
        pthread_mutex_lock(&p->lock);
        j->err = err;
        j->done = true;
        pthread_cond_broadcast(&p->finished);
    }
    pthread_mutex_unlock(&p->lock);
    if (ready)
        deflateEnd(&zs);
    return NULL;
}

static void pool_stop(struct pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->quit = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->started; i++)
        pthread_join(p->threads[i], NULL);
    for (unsigned i = 0; p->jobs && i < p->njobs; i++) {
        free(p->jobs[i].in);
        free(p->jobs[i].out);
    }
    free(p->jobs);
    free(p->threads);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->finished);
    pthread_mutex_destroy(&p->lock);
}

static int pool_start(struct pool *p, unsigned threads, size_t chunk)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->finished, NULL);
    /* Two jobs per thread keep every thread busy while the writer decodes the next chunk. */
    p->njobs = 2 * threads + 1;
    p->out_cap = (size_t)compressBound((uLong)chunk) + 64; /* + the two flush markers */
    p->jobs = calloc(p->njobs, sizeof *p->jobs);
    p->threads = calloc(threads, sizeof *p->threads);
    if (!p->jobs || !p->threads)
        return -ENOMEM;
    for (unsigned i = 0; i < p->njobs; i++) {
        p->jobs[i].in = malloc(chunk);
        p->jobs[i].out = malloc(p->out_cap);
        if (!p->jobs[i].in || !p->jobs[i].out)
            return -ENOMEM;
    }
    for (; p->started < threads; p->started++)
        if (pthread_create(&p->threads[p->started], NULL, worker, p) != 0)
            return p->started ? 0 : -EAGAIN;
    return 0;
}

/* The job to fill next, once the ring has room (the caller retires the oldest first). */
static struct job *pool_next(struct pool *p)
{
    return p->queued - p->retired < p->njobs ? &p->jobs[p->queued % p->njobs] : NULL;
}

static void pool_submit(struct pool *p, struct job *j)
{
    pthread_mutex_lock(&p->lock);
    j->done = false;
    p->queued++;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
}

/* Waits for the oldest job in flight and hands it out (NULL when none is in flight); the
 * caller's next pool_next may reuse it. */
static struct job *pool_retire(struct pool *p)
{
    if (p->retired == p->queued)
        return NULL;
    struct job *j = &p->jobs[p->retired % p->njobs];
    pthread_mutex_lock(&p->lock);
    while (!j->done)
        pthread_cond_wait(&p->finished, &p->lock);
    pthread_mutex_unlock(&p->lock);
    p->retired++;
    return j;
}

/* ---------------------------------------------------------------------------------------- */
/* A member's uncompressed bytes, read in order */

struct stream {
    struct source *in;
    uint64_t off, left;                /* compressed bytes not yet read, and where */
    const struct inflater_ops *ops;    /* NULL: stored */
    struct inflater *inf;
    unsigned char *buf;                /* COPY_BUF bytes of compressed input */
    size_t have, pos;
};

static int src_fill(struct stream *s)
{
    if (s->pos < s->have || s->left == 0)
        return 0;
    size_t n = s->left < COPY_BUF ? (size_t)s->left : COPY_BUF;
    int rc = source_read(s->in, s->buf, n, s->off);
    if (rc < 0)
        return rc;
    s->off += n;
    s->left -= n;
    s->have = n;
    s->pos = 0;
    return 0;
}

/* Reads exactly len bytes; -EIO when the member's data ends first or is corrupt. */
static int src_read(struct stream *s, unsigned char *out, size_t len)
{
    if (!s->ops) {
        if (s->left < len)
            return -EIO;
        int rc = source_read(s->in, out, len, s->off);
        s->off += len;
        s->left -= len;
        return rc;
    }
    while (len > 0) {
        int rc = src_fill(s);
        if (rc < 0)
            return rc;
        size_t used = 0, made = 0;
        rc = s->ops->step(s->inf, s->buf + s->pos, s->have - s->pos, &used, out, len, &made, 0);
        if (rc < 0)
            return rc;
        s->pos += used;
        out += made;
        len -= made;
        if (len > 0 && (rc == INFLATER_END ||
                        (used == 0 && made == 0 && s->left == 0 && s->pos == s->have)))
            return -EIO;
    }
    return 0;
}

/* Whether the member's data ends here: a deflate stream must reach its final block with
 * nothing more to give. */
static int src_finish(struct stream *s)
{
    unsigned char extra;
    for (;;) {
        if (!s->ops)
            return 0;
        int rc = src_fill(s);
        if (rc < 0)
            return rc;
        size_t used = 0, made = 0;
        rc = s->ops->step(s->inf, s->buf + s->pos, s->have - s->pos, &used, &extra, 1, &made, 0);
        if (rc < 0)
            return rc;
        s->pos += used;
        if (made > 0 || (rc == INFLATER_OK && used == 0 && s->left == 0 && s->pos == s->have))
            return -EIO;
        if (rc == INFLATER_END)
            return 0;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The rewrite */

struct ctx {
    const struct optimize_options *opt;
    size_t chunk;
    struct zip_archive za;
    struct source *in;
    int out_fd;
    const char *in_path, *out_path;
    unsigned char *copy_buf;           /* COPY_BUF bytes, also the source's input buffer */
    unsigned char *cd;                 /* the input's central directory */
    unsigned char *local;              /* LOCAL_MAX bytes: an input local header */
    unsigned char *scratch;            /* LOCAL_MAX bytes: headers being written */
    unsigned char *extra_l, *extra_c;  /* 65535 bytes each: extra fields without ZIP64, */
    size_t extra_c_len;                /* local and central, of the member being written */
    unsigned char *new_cd;
    size_t new_cd_len, new_cd_cap;
    uint64_t cursor;                   /* where the next record goes in the output */
    struct pool pool;
    uint64_t *offsets;                 /* chunk starts of the member being written */
    size_t noffsets, offsets_cap;
    void (*progress)(void *, uint64_t, uint64_t);
    void *progress_ctx;
    uint64_t done, total;
    char *msg;
    size_t msg_len;
};

static void report(struct ctx *c, uint64_t bytes)
{
    c->done += bytes;
    if (c->progress)
        c->progress(c->progress_ctx, c->done, c->total);
}

static bool cancelled(const struct ctx *c)
{
    return c->opt->cancel && atomic_load(c->opt->cancel);
}

static int put(struct ctx *c, const void *buf, size_t len)
{
    int rc = io_write_exact(c->out_fd, buf, len, c->cursor);
    if (rc < 0)
        return io_fail(c->msg, c->msg_len, rc, "%s: cannot write: %s", c->out_path,
                       strerror(-rc));
    c->cursor += len;
    return 0;
}

static int note_offset(struct ctx *c, uint64_t off)
{
    if (c->noffsets == c->offsets_cap) {
        size_t cap = c->offsets_cap ? 2 * c->offsets_cap : 1024;
        uint64_t *o = realloc(c->offsets, cap * sizeof *o);
        if (!o)
            return -ENOMEM;
        c->offsets = o;
        c->offsets_cap = cap;
    }
    c->offsets[c->noffsets++] = off;
    return 0;
}

/* Writes the oldest job in flight: its chunk starts where the member's data is so far. */
static int retire_one(struct ctx *c, uint64_t data_start, uint32_t *crc)
{
    struct job *j = pool_retire(&c->pool);
    if (j->err < 0)
        return j->err;
    uint64_t at = c->cursor - data_start;
    if (at > 0 && note_offset(c, at) < 0)
        return -ENOMEM;
    *crc = (uint32_t)crc32_combine(*crc, j->crc, (z_off_t)j->in_len);
    report(c, j->in_len);
    return put(c, j->out, j->out_len);
}

/* Waits for every job in flight, after a failure: their buffers are about to be reused. */
static void drain(struct ctx *c)
{
    while (pool_retire(&c->pool))
        ;
}

/* Deflates the member behind src as SOZip chunks at the cursor; sets *crc. */
static int deflate_member(struct ctx *c, struct stream *src, uint64_t usize, uint32_t *crc)
{
    uint64_t data_start = c->cursor;
    int rc = 0;
    *crc = 0;
    c->noffsets = 0;
    for (uint64_t pos = 0; rc == 0 && pos < usize;) {
        struct job *j = NULL;
        while (rc == 0 && !(j = pool_next(&c->pool)))
            rc = retire_one(c, data_start, crc);
        if (rc == 0 && cancelled(c))
            rc = -EINTR;
        if (rc < 0)
            break;
        j->in_len = usize - pos < c->chunk ? (size_t)(usize - pos) : c->chunk;
        j->last = pos + j->in_len == usize;
        rc = src_read(src, j->in, j->in_len);
        if (rc == 0)
            pool_submit(&c->pool, j);
        pos += j->in_len;
    }
    while (rc == 0 && c->pool.retired < c->pool.queued)
        rc = retire_one(c, data_start, crc);
    drain(c);
    return rc < 0 ? rc : src_finish(src);
}

/* Copies the member's data as it is. */
static int copy_member(struct ctx *c, const struct zip_member *m)
{
    for (uint64_t pos = 0; pos < m->csize;) {
        if (cancelled(c))
            return -EINTR;
        size_t n = m->csize - pos < COPY_BUF ? (size_t)(m->csize - pos) : COPY_BUF;
        int rc = source_read(c->in, c->copy_buf, n, m->data_off + pos);
        if (rc < 0)
            return rc;
        if ((rc = put(c, c->copy_buf, n)) < 0)
            return rc;
        pos += n;
        report(c, n);
    }
    return 0;
}

/* Whether the member is deflated anew, and whether it gets an index: the spec allows one
 * only for members larger than a chunk, and smaller deflated ones would not change. */
static bool recompressed(const struct ctx *c, const struct zip_member *m)
{
    bool stored = m->method == ZIP_METHOD_STORED && c->opt->compress_stored && !m->is_dir &&
                  m->usize > 0;
    return stored || (m->method == ZIP_METHOD_DEFLATED && m->usize > c->chunk);
}

/* The largest compressed size a chunked member of usize bytes can take. */
static uint64_t csize_bound(const struct ctx *c, uint64_t usize)
{
    uint64_t chunks = usize / c->chunk + 1;
    return chunks * (uint64_t)c->pool.out_cap;
}

/* "dir/x.npy" -> "dir/.x.npy.sozip.idx", in raw name bytes. */
static size_t index_name(unsigned char *out, const unsigned char *name, size_t len)
{
    size_t dir = len;
    while (dir > 0 && name[dir - 1] != '/')
        dir--;
    memcpy(out, name, dir);
    out[dir] = '.';
    memcpy(out + dir + 1, name + dir, len - dir);
    memcpy(out + len + 1, ".sozip.idx", 10);
    return len + 11;
}

/* The hidden index right after the member's data: a stored file behind a local header only. */
static int write_index(struct ctx *c, const struct zw_entry *member)
{
    size_t len = INDEX_HEADER + 8 * c->noffsets;
    unsigned char *data = malloc(len);
    unsigned char name[65535 + 11];
    if (!data)
        return -ENOMEM;
    if (member->name_len > 65535 - 11) {
        free(data);
        return -ENAMETOOLONG;
    }
    put_le32(data, 1);        /* version */
    put_le32(data + 4, 0);    /* skip_bytes */
    put_le32(data + 8, (uint32_t)c->chunk);
    put_le32(data + 12, 8);   /* offset_size */
    put_le64(data + 16, member->usize);
    put_le64(data + 24, member->csize);
    for (size_t i = 0; i < c->noffsets; i++)
        put_le64(data + INDEX_HEADER + 8 * i, c->offsets[i]);
    struct zw_entry e = {
        .name = name, .name_len = (uint16_t)index_name(name, member->name, member->name_len),
        .version_made = member->version_made, .version_needed = 10,
        .flags = member->flags & ZIP_FLAG_UTF8, .method = ZIP_METHOD_STORED,
        .dos_time = member->dos_time, .dos_date = member->dos_date,
        .crc32 = (uint32_t)crc32_z(0, data, len), .csize = len, .usize = len,
        .header_off = c->cursor, .local_zip64 = zw_needs_zip64(len, len),
    };
    int rc = put(c, c->scratch, zw_local(c->scratch, &e));
    if (rc == 0)
        rc = put(c, data, len);
    free(data);
    return rc;
}

static int append_central(struct ctx *c, const struct zw_entry *e)
{
    size_t len = zw_central_len(e);
    if (c->new_cd_len + len > c->new_cd_cap) {
        size_t cap = 2 * c->new_cd_cap + len;
        unsigned char *p = realloc(c->new_cd, cap);
        if (!p)
            return -ENOMEM;
        c->new_cd = p;
        c->new_cd_cap = cap;
    }
    c->new_cd_len += zw_central(c->new_cd + c->new_cd_len, e);
    return 0;
}

/* Fills e from the input's central entry ce and local header (read into c->local). */
static int describe(struct ctx *c, const struct zip_member *m, const unsigned char *ce,
                    struct zw_entry *e)
{
    uint16_t nlen = le16(ce + 28), xlen = le16(ce + 30), clen = le16(ce + 32);
    uint64_t hlen = m->data_off - m->header_off;
    int rc = source_read(c->in, c->local, (size_t)hlen, m->header_off);
    if (rc < 0)
        return rc;
    size_t lx = zw_strip_zip64(c->extra_l, c->local + ZW_LOCAL_LEN + le16(c->local + 26),
                               le16(c->local + 28));
    c->extra_c_len = zw_strip_zip64(c->extra_c, ce + ZW_CENTRAL_LEN + nlen, xlen);
    if (!zw_extra_fits(lx) || !zw_extra_fits(c->extra_c_len))
        return -E2BIG;
    bool again = recompressed(c, m);
    *e = (struct zw_entry){
        .name = ce + ZW_CENTRAL_LEN, .name_len = nlen,
        .version_made = le16(ce + 4), .version_needed = le16(ce + 6),
        /* sizes go in the local header, so no data descriptor (bit 3); a new deflate stream
         * has the default level (bits 1-2 clear) */
        .flags = (uint16_t)(m->flags & ~(ZIP_FLAG_DESCRIPTOR | (again ? 6u : 0u))),
        .method = again ? ZIP_METHOD_DEFLATED : m->method,
        .dos_time = le16(ce + 12), .dos_date = le16(ce + 14),
        .crc32 = m->crc32, .csize = m->csize, .usize = m->usize,
        .header_off = c->cursor,
        .internal_attr = le16(ce + 36), .external_attr = le32(ce + 38),
        .extra = c->extra_l, .extra_len = (uint16_t)lx,
        .comment = ce + ZW_CENTRAL_LEN + nlen + xlen, .comment_len = clen,
        .local_zip64 = zw_needs_zip64(m->usize, again ? csize_bound(c, m->usize) : m->csize),
    };
    if (again && e->version_needed < 20)
        e->version_needed = 20;
    return 0;
}

static int write_data(struct ctx *c, const struct zip_member *m, struct zw_entry *e)
{
    if (!recompressed(c, m))
        return copy_member(c, m);
    struct stream src = {
        .in = c->in, .off = m->data_off, .left = m->csize, .buf = c->copy_buf,
        .ops = m->method == ZIP_METHOD_DEFLATED ? inflater_find("isal") : NULL,
    };
    if (m->method == ZIP_METHOD_DEFLATED && !src.ops)
        src.ops = &inflater_zlib;
    if (src.ops && !(src.inf = src.ops->new()))
        return -ENOMEM;
    uint64_t start = c->cursor;
    uint32_t crc;
    int rc = deflate_member(c, &src, m->usize, &crc);
    if (src.inf)
        src.ops->free(src.inf);
    if (rc == 0 && crc != m->crc32)
        rc = -EBADMSG;
    e->csize = c->cursor - start;
    return rc;
}

static int member_fail(struct ctx *c, const struct zip_member *m, int rc)
{
    if (rc == -EINTR)
        return io_fail(c->msg, c->msg_len, rc, "%s: interrupted", c->in_path);
    const char *why = rc == -EBADMSG ? "data does not match its CRC-32"
                      : rc == -EIO   ? "data is corrupt or not of its stated size"
                      : rc == -E2BIG ? "extra fields too long to add ZIP64 sizes"
                                     : strerror(-rc);
    return io_fail(c->msg, c->msg_len, rc == -EBADMSG || rc == -E2BIG ? -EIO : rc,
                   "%s: member %s: %s", c->in_path, m->name, why);
}

static int rewrite_member(struct ctx *c, const struct zip_member *m, const unsigned char *ce)
{
    struct zw_entry e;
    c->msg[0] = '\0';
    if (m->err < 0)
        return io_fail(c->msg, c->msg_len, m->err, "%s: member %s: %s", c->in_path, m->name,
                       m->why);
    int rc = describe(c, m, ce, &e);
    if (rc < 0)
        return member_fail(c, m, rc);
    c->cursor = e.header_off + zw_local_len(&e);
    if ((rc = write_data(c, m, &e)) < 0)
        return c->msg[0] ? rc : member_fail(c, m, rc);
    uint64_t end = c->cursor;
    c->cursor = e.header_off;
    if ((rc = put(c, c->scratch, zw_local(c->scratch, &e))) < 0)
        return rc;
    c->cursor = end;
    if (recompressed(c, m) && m->usize > c->chunk && (rc = write_index(c, &e)) < 0)
        return c->msg[0] ? rc : member_fail(c, m, rc);
    e.extra = c->extra_c;
    e.extra_len = (uint16_t)c->extra_c_len;
    if (append_central(c, &e) < 0)
        return member_fail(c, m, -ENOMEM);
    return 0;
}

/* The archive comment: the end record follows the central directory, after the ZIP64 end
 * record and locator when present. Sets *len to 0 when none is found there. */
static int read_comment(struct ctx *c, unsigned char **comment, uint16_t *len)
{
    uint64_t at = c->za.cd_offset + c->za.cd_size;
    unsigned char rec[22];
    *comment = NULL;
    *len = 0;
    for (int i = 0; i < 3; i++) {
        if (source_read(c->in, rec, sizeof rec, at) < 0)
            return 0;
        if (le32(rec) == 0x06064b50u) {
            unsigned char size[8];
            if (source_read(c->in, size, 8, at + 4) < 0)
                return 0;
            at += 12 + le64(size);
        } else if (le32(rec) == 0x07064b50u) {
            at += 20;
        } else if (le32(rec) == 0x06054b50u) {
            *len = le16(rec + 20);
            *comment = malloc(*len ? *len : 1);
            if (!*comment)
                return -ENOMEM;
            return source_read(c->in, *comment, *len, at + 22) < 0 ? (*len = 0) : 0;
        }
    }
    return 0;
}

static int write_directory(struct ctx *c)
{
    unsigned char *comment, end[ZW_END_MAX + 65535];
    uint16_t clen;
    if (read_comment(c, &comment, &clen) < 0)
        return io_fail(c->msg, c->msg_len, -ENOMEM, "out of memory");
    uint64_t cd_off = c->cursor;
    int rc = put(c, c->new_cd, c->new_cd_len);
    if (rc == 0)
        rc = put(c, end, zw_end(end, c->za.count, cd_off, c->new_cd_len, comment, clen));
    free(comment);
    return rc;
}

static int rewrite_all(struct ctx *c)
{
    int rc = source_read(c->in, c->cd, (size_t)c->za.cd_size, c->za.cd_offset);
    if (rc < 0)
        return io_fail(c->msg, c->msg_len, rc, "%s: %s", c->in_path, strerror(-rc));
    for (uint64_t i = 0; i < c->za.count; i++)
        c->total += recompressed(c, &c->za.members[i]) ? c->za.members[i].usize
                                                       : c->za.members[i].csize;
    const unsigned char *ce = c->cd;
    for (uint64_t i = 0; i < c->za.count; i++) {
        if (cancelled(c))
            return io_fail(c->msg, c->msg_len, -EINTR, "%s: interrupted", c->in_path);
        if ((rc = rewrite_member(c, &c->za.members[i], ce)) < 0)
            return rc;
        ce += ZW_CENTRAL_LEN + le16(ce + 28) + le16(ce + 30) + le16(ce + 32);
    }
    return write_directory(c);
}

static int open_input(struct ctx *c)
{
    char why[256];
    int rc = source_open(c->in_path, NULL, &c->in, why, sizeof why);
    if (rc < 0)
        return io_fail(c->msg, c->msg_len, rc, "%s: %s", c->in_path, why);
    rc = zip_open(c->in, &c->za, why, sizeof why);
    if (rc < 0)
        return io_fail(c->msg, c->msg_len, rc, "%s: %s", c->in_path, why);
    c->copy_buf = malloc(COPY_BUF);
    c->cd = malloc(c->za.cd_size ? (size_t)c->za.cd_size : 1);
    c->local = malloc(LOCAL_MAX);
    c->scratch = malloc(LOCAL_MAX);
    c->extra_l = malloc(65535);
    c->extra_c = malloc(65535);
    if (!c->copy_buf || !c->cd || !c->local || !c->scratch || !c->extra_l || !c->extra_c)
        return io_fail(c->msg, c->msg_len, -ENOMEM, "out of memory");
    return 0;
}

/* A temporary file next to out, with the mode a new file would get. */
static int open_output(struct ctx *c, char *tmp, size_t len)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", c->out_path);
    char *base = basename(copy);
    char *slash = strrchr(c->out_path, '/');
    int dir = slash ? (int)(slash - c->out_path + 1) : 0;
    if (snprintf(tmp, len, "%.*s.%s.XXXXXX", dir, c->out_path, base) >= (int)len)
        return io_fail(c->msg, c->msg_len, -ENAMETOOLONG, "%s: name too long", c->out_path);
    c->out_fd = mkostemp(tmp, O_CLOEXEC);
    if (c->out_fd < 0) {
        int e = errno;
        tmp[0] = '\0';
        return io_fail(c->msg, c->msg_len, -e, "%s: cannot create a file there: %s",
                       c->out_path, strerror(e));
    }
    mode_t mask = umask(0);
    umask(mask);
    fchmod(c->out_fd, 0666 & ~mask);
    return 0;
}

static int finish_output(struct ctx *c, const char *tmp)
{
    int e = fsync(c->out_fd) < 0 ? errno : 0;
    if (close(c->out_fd) < 0 && !e)
        e = errno;
    c->out_fd = -1;
    if (e)
        return io_fail(c->msg, c->msg_len, -e, "%s: cannot write: %s", c->out_path,
                       strerror(e));
    if (rename(tmp, c->out_path) < 0)
        return io_fail(c->msg, c->msg_len, -errno, "%s: %s", c->out_path, strerror(errno));
    return 0;
}

static void release(struct ctx *c)
{
    zip_close(&c->za);
    source_close(c->in);
    if (c->out_fd >= 0)
        close(c->out_fd);
    free(c->copy_buf);
    free(c->cd);
    free(c->local);
    free(c->scratch);
    free(c->extra_l);
    free(c->extra_c);
    free(c->new_cd);
    free(c->offsets);
}

static unsigned default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

int optimize_run(const char *in, const char *out, const struct optimize_options *opt,
                 void (*progress)(void *ctx, uint64_t done, uint64_t total), void *pctx,
                 struct optimize_stats *st, char *msg, size_t msg_len)
{
    struct ctx c = {
        .opt = opt, .chunk = opt->chunk_size ? opt->chunk_size : OPTIMIZE_DEFAULT_CHUNK,
        .out_fd = -1, .in_path = in, .out_path = out,
        .progress = progress, .progress_ctx = pctx, .msg = msg, .msg_len = msg_len,
    };
    char tmp[PATH_MAX + 16] = "";
    msg[0] = '\0';
    int rc = open_input(&c);
    if (rc == 0)
        rc = open_output(&c, tmp, sizeof tmp);
    if (rc == 0) {
        rc = pool_start(&c.pool, opt->threads ? opt->threads : default_threads(), c.chunk);
        if (rc == 0)
            rc = rewrite_all(&c);
        else
            io_fail(msg, msg_len, rc, "cannot start threads: %s", strerror(-rc));
        pool_stop(&c.pool);
    }
    if (rc == 0)
        rc = finish_output(&c, tmp);
    if (rc < 0 && tmp[0])
        unlink(tmp);
    *st = (struct optimize_stats){.in_bytes = c.za.file_size, .out_bytes = c.cursor,
                                  .members = c.za.count};
    for (uint64_t i = 0; rc == 0 && i < c.za.count; i++)
        st->indexed += recompressed(&c, &c.za.members[i]) && c.za.members[i].usize > c.chunk;
    release(&c);
    return rc;
}
