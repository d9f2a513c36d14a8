/*
 * reader_archive: every other compression method libarchive can decode (bzip2, LZMA, xz,
 * zstd, PPMd), for archives that are not numpy's own but hold .npy files all the same.
 *
 * libarchive only decodes forwards, so each member has one cursor (a libarchive handle and
 * the member offset it has reached) behind a lock. Output is cut into the cache's pieces;
 * reaching piece k decodes and caches every piece before it that the cursor passes, and a read
 * behind the cursor that misses the cache restarts it. Random access
 * to such members therefore costs up to one decode of the member per miss: fine for the rare
 * archive that uses them, and the reason deflate has a checkpoint index instead.
 *
 * libarchive is fed a synthetic local header (true sizes from the central directory, as a
 * ZIP64 extra, no data descriptor) followed by the member's data read from the archive, so
 * none of the archive's own header quirks reach it. It checks the CRC-32 when the cursor
 * reaches the end of the member; a mismatch fails the member.
 */
#include <archive.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "reader.h"

#define HEADER_LEN (30 + 1 + 20) /* local header, one-letter name, ZIP64 extra */
#define FEED_BUF (64u << 10)
#define MAX_LIVE 8

struct feed {
    int fd;
    uint64_t data_off, csize, usize;
    bool lzma;    /* method 14: its dictionary claim is capped */
    uint64_t pos; /* bytes of header + data handed to libarchive */
    unsigned char header[HEADER_LEN];
    unsigned char buf[FEED_BUF];
};

struct cursor {
    pthread_mutex_t lock;
    struct archive *a; /* NULL until first use and after the end of the member */
    uint64_t pos;      /* member offset of the next byte the cursor yields */
    atomic_bool failed;
    char why[200];     /* written once, before failed is set */
    struct cursor *prev, *next; /* in the live list while a is open (under live_lock) */
    struct feed feed;
};

/* The cursors with an open decoder, most recently used first. Lock order: a cursor's lock,
 * then live_lock, then (only by trylock) another cursor's lock. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cursor *live_head, *live_tail;
static unsigned live_count;

static void live_unlink(struct cursor *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        live_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        live_tail = c->prev;
    c->prev = c->next = NULL;
    live_count--;
}

static void live_push(struct cursor *c)
{
    c->prev = NULL;
    c->next = live_head;
    if (live_head)
        live_head->prev = c;
    live_head = c;
    if (!live_tail)
        live_tail = c;
    live_count++;
}

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static void make_header(unsigned char *h, const struct zip_member *zm)
{
    memset(h, 0, HEADER_LEN);
    put32(h, 0x04034b50);
    put16(h + 4, 63);
    put16(h + 6, zm->flags & 0x0006); /* method-specific bits only (LZMA end marker) */
    put16(h + 8, zm->method);
    put16(h + 12, 0x21); /* 1980-01-01 */
    put32(h + 14, zm->crc32);
    put32(h + 18, 0xFFFFFFFFu);
    put32(h + 22, 0xFFFFFFFFu);
    put16(h + 26, 1);
    put16(h + 28, 20);
    h[30] = 'm';
    put16(h + 31, 0x0001);
    put16(h + 33, 16);
    put64(h + 35, zm->usize);
    put64(h + 43, zm->csize);
}

/* An LZMA member (method 14) starts with a 4-byte version/size header and 5 property bytes,
 * the last 4 of them the dictionary size, which liblzma allocates as claimed: 4 GiB for a
 * hostile 100-byte member. No valid stream needs more than its own output, so the claim is
 * cut to max(usize, 4 KiB) as the first data block goes in (it always holds those bytes). */
static void cap_lzma_dict(struct feed *f, size_t n)
{
    if (n < 9)
        return;
    uint64_t cap = f->usize > 4096 ? f->usize : 4096;
    if (cap > UINT32_MAX)
        cap = UINT32_MAX;
    if (le32(f->buf + 5) > cap) {
        f->buf[5] = (unsigned char)cap;
        f->buf[6] = (unsigned char)(cap >> 8);
        f->buf[7] = (unsigned char)(cap >> 16);
        f->buf[8] = (unsigned char)(cap >> 24);
    }
}

static la_ssize_t feed_read(struct archive *a, void *ctx, const void **out)
{
    struct feed *f = ctx;
    if (f->pos < HEADER_LEN) {
        *out = f->header + f->pos;
        la_ssize_t n = (la_ssize_t)(HEADER_LEN - f->pos);
        f->pos = HEADER_LEN;
        return n;
    }
    uint64_t at = f->pos - HEADER_LEN;
    if (at >= f->csize)
        return 0;
    size_t n = f->csize - at < FEED_BUF ? (size_t)(f->csize - at) : FEED_BUF;
    int rc = io_read_exact(f->fd, f->buf, n, f->data_off + at);
    if (rc < 0) {
        archive_set_error(a, -rc, "read error in the archive");
        return -1;
    }
    if (at == 0 && f->lzma)
        cap_lzma_dict(f, n);
    *out = f->buf;
    f->pos += n;
    return (la_ssize_t)n;
}

/* Closes c's decoder; c's lock held, live_lock not. */
static void close_cursor(struct cursor *c)
{
    if (!c->a)
        return;
    pthread_mutex_lock(&live_lock);
    live_unlink(c);
    pthread_mutex_unlock(&live_lock);
    archive_read_free(c->a);
    c->a = NULL;
}

/* Makes c (open) the most recently used, and closes idle cursors beyond MAX_LIVE; c's lock
 * held. A busy cursor is skipped: the bound can be exceeded by cursors in use right now. */
static void live_touch(struct cursor *c, bool is_new)
{
    pthread_mutex_lock(&live_lock);
    if (!is_new)
        live_unlink(c);
    live_push(c);
    for (struct cursor *v = live_tail, *prev; v && live_count > MAX_LIVE; v = prev) {
        prev = v->prev;
        if (v == c || pthread_mutex_trylock(&v->lock) != 0)
            continue;
        live_unlink(v);
        archive_read_free(v->a);
        v->a = NULL;
        pthread_mutex_unlock(&v->lock);
    }
    pthread_mutex_unlock(&live_lock);
}

/* Fails the member for good with libarchive's reason (or ours); lock held. */
static int fail(struct cursor *c, const char *why)
{
    if (!atomic_load(&c->failed)) {
        snprintf(c->why, sizeof c->why, "%s", why && *why ? why : "cannot decode");
        atomic_store(&c->failed, true);
    }
    close_cursor(c);
    return -EIO;
}

static int open_cursor(struct cursor *c)
{
    close_cursor(c);
    c->feed.pos = 0;
    c->pos = 0;
    c->a = archive_read_new();
    if (!c->a)
        return -ENOMEM;
    live_touch(c, true);
    struct archive_entry *entry;
    if (archive_read_support_format_zip_streamable(c->a) != ARCHIVE_OK ||
        archive_read_open(c->a, &c->feed, NULL, feed_read, NULL) != ARCHIVE_OK ||
        archive_read_next_header(c->a, &entry) != ARCHIVE_OK)
        return fail(c, archive_error_string(c->a));
    return 0;
}

/* Reads exactly len bytes from the cursor; lock held. */
static int cursor_read(struct cursor *c, unsigned char *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        la_ssize_t n = archive_read_data(c->a, buf + done, len - done);
        if (n < 0)
            return fail(c, archive_error_string(c->a));
        if (n == 0)
            return fail(c, "member shorter than its declared size");
        done += (size_t)n;
    }
    c->pos += len;
    return 0;
}

/* At the end of the member, libarchive checks the CRC when asked for more; lock held. */
static int cursor_finish(struct cursor *c)
{
    unsigned char extra;
    la_ssize_t n = archive_read_data(c->a, &extra, 1);
    if (n != 0)
        return fail(c, n > 0 ? "member longer than its declared size"
                             : archive_error_string(c->a));
    close_cursor(c); /* the decoder's memory is not needed any more */
    return 0;
}

/* Decodes piece k at the cursor into a new cache buffer and hands it to the cache; lock
 * held. */
static int cursor_piece(struct cursor *c, struct cache *cache, uint64_t idx, uint64_t usize,
                        uint64_t k)
{
    size_t piece = cache_piece(cache);
    uint64_t start = k * piece;
    size_t n = (size_t)(usize - start < piece ? usize - start : piece);
    unsigned char *buf = cache_buffer(cache);
    if (!buf)
        return -ENOMEM;
    int rc = cursor_read(c, buf, n);
    if (rc == 0 && start + n == usize)
        rc = cursor_finish(c);
    if (rc < 0) {
        cache_unused(cache, buf);
        return rc;
    }
    cache_insert(cache, idx, k, buf, n);
    return 0;
}

/* Decodes up to piece k (keeping every piece on the way: they are decoded anyway) and copies
 * what k holds of the request; lock held. Returns bytes copied or an error. */
static ssize_t cursor_serve(struct cursor *c, const struct reader_env *env,
                            const struct reader_member *m, uint64_t k, unsigned char *buf,
                            size_t len, uint64_t off, const struct read_ctl *ctl)
{
    size_t piece = cache_piece(env->cache);
    /* Concurrent readahead: the thread that held the cursor may have decoded our piece on its
     * way to a later one. Restarting the cursor for it would be the expensive mistake. */
    ssize_t n = reader_copy_cached(env, m, k, buf, len, off);
    if (n != 0)
        return n;
    int rc = 0;
    if (atomic_load(&c->failed))
        rc = -EIO;
    else if (!c->a || c->pos > k * piece)
        rc = open_cursor(c);
    else
        live_touch(c, false);
    for (uint64_t j = c->pos / piece; rc == 0 && j <= k; j++) {
        rc = cursor_piece(c, env->cache, m->idx, m->zm->usize, j);
        if (rc == 0 && j < k && stop_now(ctl->stop))
            rc = -EINTR;
    }
    if (rc < 0)
        return rc;
    n = reader_copy_cached(env, m, k, buf, len, off);
    return n ? n : -EAGAIN; /* evicted at once by a flood of others: the caller retries */
}

static void *archive_member_new(const struct reader_env *env, const struct zip_member *zm)
{
    struct cursor *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    c->feed.fd = env->fd;
    c->feed.data_off = zm->data_off;
    c->feed.csize = zm->csize;
    c->feed.usize = zm->usize;
    c->feed.lzma = zm->method == ZIP_METHOD_LZMA;
    make_header(c->feed.header, zm);
    return c;
}

static ssize_t archive_member_read(const struct reader_env *env, const struct reader_member *m,
                                   void *out, size_t len, uint64_t off,
                                   const struct read_ctl *ctl)
{
    struct cursor *c = m->state;
    unsigned char *buf = out;
    size_t done = 0, piece = cache_piece(env->cache);
    while (done < len) {
        if (atomic_load(&c->failed)) /* its cached pieces are no longer to be trusted */
            return -EIO;
        uint64_t at = off + done, k = at / piece;
        ssize_t n = reader_copy_cached(env, m, k, buf + done, len - done, at);
        if (n == 0 && ctl->mode == READ_CACHED)
            return -EAGAIN;
        if (n == 0) {
            if (ctl->mode == READ_NOWAIT ? pthread_mutex_trylock(&c->lock) != 0
                                         : pthread_mutex_lock(&c->lock) != 0)
                return -EAGAIN; /* the cursor's holder notifies when it lets go */
            n = cursor_serve(c, env, m, k, buf + done, len - done, at, ctl);
            pthread_mutex_unlock(&c->lock);
            cache_notify(env->cache);
            if (n == -EAGAIN && ctl->mode == READ_BLOCK)
                continue;
        }
        if (n < 0)
            return n;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

static const char *archive_member_why(const struct reader_member *m)
{
    struct cursor *c = m->state;
    return c && atomic_load(&c->failed) ? c->why : "cannot decode";
}

static void archive_member_free(void *state)
{
    struct cursor *c = state;
    pthread_mutex_lock(&c->lock);
    close_cursor(c);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

const struct reader_ops reader_archive = {
    .read = archive_member_read,
    .why = archive_member_why,
    .new_state = archive_member_new,
    .free_state = archive_member_free,
};
