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
 *
 * Memory: a decoder's state (a PPMd model, an LZMA dictionary...) is what the stream asks
 * for, up to 256 MiB or more, and libarchive has no limit of its own. So before a decoder is
 * opened, its cost is estimated from the first bytes of the member's stream and taken from
 * env->decoder_mem; it goes back when the decoder closes (at the member's end, on failure, or
 * when evicted). The open decoders of an archive form an LRU (struct archive_decoders): a
 * decoder that does not fit first closes idle ones, then waits for busy ones to finish their
 * chunk; one that could not fit even alone fails its member with a line naming the method
 * and the size.
 *
 * Encrypted members (ZipCrypto, WinZip AES) of any method come here too, since the ciphertext
 * is no deflate stream for the checkpoint index: libarchive decrypts with the mount's
 * password. Their random reads cost what any member's here do. The synthetic header keeps the
 * encryption flag and AES's extra field. ZipCrypto checks a password against one byte, which
 * is the CRC's high byte, or the time's when the writer set flag bit 3 (Info-ZIP does); the
 * header carries that byte in its CRC field, libarchive is told not to check the CRC, and
 * the cursor checks it instead. libarchive reports a wrong password only in words ("Incorrect
 * passphrase"), which become -EACCES. Each open decoder holds libarchive's own copy of the
 * password, which archive_read_free zeroes.
 *
 * libarchive is loaded on first use (dlopen), not linked: with its compression, crypto, XML
 * and ICU libraries it brought 13 shared objects into every start of npzmount, about 5 ms of
 * each mount command on a 2-vCPU VM, for the numpy archives that never need it. Without it,
 * these members read EIO with a reason that says so.
 */
#define _GNU_SOURCE /* strcasestr */
#include <archive.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "budget.h"
#include "dynlib.h"
#include "io.h"
#include "reader.h"

#define HEADER_MAX (30 + 1 + 20 + 11) /* local header, one-letter name, ZIP64 and AES extras */
#define FEED_BUF (64u << 10)
#define PEEK_LEN 128u            /* stream bytes the estimate looks at */
#define KIB (1u << 10)
#define MIB (1u << 20)
/* One open handle whatever the method: libarchive's state and its 256 KiB output buffer,
 * our feed buffer, a decoder's fixed tables. Measured at 320-430 KiB with small streams. */
#define HANDLE_COST (512u * KIB)
/* libarchive decodes up to this much past what the cursor asked for (its output buffer). */
#define OUT_AHEAD (256u * KIB)
/* libarchive's decryption buffer and contexts. */
#define DECRYPT_COST (256u * KIB)

struct feed {
    struct source *src;
    uint64_t data_off, csize, usize;
    bool lzma;          /* method 14 in the clear: its dictionary claim is capped */
    uint64_t pos;       /* bytes of header + data handed to libarchive */
    unsigned char *buf; /* FEED_BUF bytes, while the decoder is open */
    const unsigned char *tail; /* fed after the member's data, counted in its size */
    size_t tail_len;
    size_t header_len;
    unsigned char header[HEADER_MAX];
};

struct cursor {
    pthread_mutex_t lock;
    struct archive *a;   /* NULL until first use and after the end of the member */
    bool listed;         /* holds its budget, in the set's list (a open, or being opened) */
    uint64_t pos;        /* member offset of the next byte the cursor yields */
    uint64_t need;       /* estimated cost of the decoder; 0 until first estimated */
    const char *method;  /* for messages */
    const char *password;/* for encrypted members, else NULL */
    bool check_crc;      /* ZipCrypto: the cursor checks the CRC, not libarchive */
    uint32_t crc, want_crc; /* of the bytes yielded so far, and of the whole member */
    atomic_int failed;   /* 0, or the error for good: cached chunks are no longer trusted */
    atomic_bool has_why;
    char why[200];       /* written once (under lock), before has_why is set */
    struct budget *mem;
    struct archive_decoders *set;
    struct cursor *prev, *next; /* in the set's list (under the set's lock) */
    struct feed feed;
};

/* The cursors of one archive with an open decoder, most recently used first. Lock order: a
 * cursor's lock, then the set's lock, then (only by trylock) another cursor's lock. */
struct archive_decoders {
    pthread_mutex_t lock;
    pthread_cond_t idle; /* a decoder was closed or finished a chunk */
    struct cursor *head, *tail;
    unsigned waiting;    /* threads in reserve() */
};

struct archive_decoders *archive_decoders_new(void)
{
    struct archive_decoders *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    return s;
}

void archive_decoders_free(struct archive_decoders *s)
{
    if (!s)
        return;
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* The set's lock held for the list functions. */
static void list_unlink(struct archive_decoders *s, struct cursor *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        s->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        s->tail = c->prev;
    c->prev = c->next = NULL;
}

static void list_push(struct archive_decoders *s, struct cursor *c)
{
    c->prev = NULL;
    c->next = s->head;
    if (s->head)
        s->head->prev = c;
    s->head = c;
    if (!s->tail)
        s->tail = c;
}

/* Wakes the threads waiting for budget (a decoder became idle); the set's lock not held. */
static void wake(struct archive_decoders *s)
{
    pthread_mutex_lock(&s->lock);
    if (s->waiting)
        pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
}

/* ---- libarchive, loaded on first use ---- */

#define LIBARCHIVE_SO "libarchive.so.13"

static struct {
    __typeof__(archive_read_new) *read_new;
    __typeof__(archive_read_free) *read_free;
    __typeof__(archive_set_error) *set_error;
    __typeof__(archive_error_string) *error_string;
    __typeof__(archive_read_support_format_zip_streamable) *support_zip;
    __typeof__(archive_read_set_format_option) *set_format_option;
    __typeof__(archive_read_add_passphrase) *add_passphrase;
    __typeof__(archive_read_open) *read_open;
    __typeof__(archive_read_next_header) *next_header;
    __typeof__(archive_read_data) *read_data;
} la;
static pthread_once_t la_once = PTHREAD_ONCE_INIT;
static bool la_ok;

static void la_load(void)
{
    const struct dynlib_sym syms[] = {
        {(void **)&la.read_new, "archive_read_new"},
        {(void **)&la.read_free, "archive_read_free"},
        {(void **)&la.set_error, "archive_set_error"},
        {(void **)&la.error_string, "archive_error_string"},
        {(void **)&la.support_zip, "archive_read_support_format_zip_streamable"},
        {(void **)&la.set_format_option, "archive_read_set_format_option"},
        {(void **)&la.add_passphrase, "archive_read_add_passphrase"},
        {(void **)&la.read_open, "archive_read_open"},
        {(void **)&la.next_header, "archive_read_next_header"},
        {(void **)&la.read_data, "archive_read_data"},
    };
    la_ok = dynlib_load(LIBARCHIVE_SO, syms, sizeof syms / sizeof *syms);
}

/* Whether libarchive could be loaded (once per process). */
static bool la_loaded(void)
{
    pthread_once(&la_once, la_load);
    return la_ok;
}

/* Frees c's decoder; c's lock held. */
static void free_decoder(struct cursor *c)
{
    if (c->a)
        la.read_free(c->a);
    c->a = NULL;
    free(c->feed.buf);
    c->feed.buf = NULL;
}

/* Takes c out of the list and gives its budget back; c's lock and the set's lock held. Budget
 * is held exactly while a cursor is listed, as seen under the set's lock. */
static void unlist(struct archive_decoders *s, struct cursor *c)
{
    list_unlink(s, c);
    c->listed = false;
    budget_give(c->mem, c->need);
    if (s->waiting)
        pthread_cond_broadcast(&s->idle);
}

/* Closes c's decoder; c's lock held, the set's lock not. */
static void close_cursor(struct cursor *c)
{
    if (!c->listed)
        return;
    free_decoder(c);
    pthread_mutex_lock(&c->set->lock);
    unlist(c->set, c);
    pthread_mutex_unlock(&c->set->lock);
}

/* Closes the least recently used decoder that is not in use; the set's lock held. Returns
 * whether there was one. */
static bool evict_idle(struct archive_decoders *s)
{
    for (struct cursor *v = s->tail; v; v = v->prev) {
        if (pthread_mutex_trylock(&v->lock) != 0)
            continue;
        free_decoder(v);
        unlist(s, v);
        pthread_mutex_unlock(&v->lock);
        return true;
    }
    return false;
}

/* Takes c->need from the budget and lists c, closing idle decoders and waiting for busy ones
 * to finish their chunk when it takes that. Cannot deadlock: a thread waits here with no
 * decoder of its own, and a busy decoder's thread waits for nothing. c's lock held, c not
 * listed. Returns 0, or -ENOSPC when the budget is short with no decoder left to close (its
 * other users hold it). */
static int reserve(struct cursor *c)
{
    struct archive_decoders *s = c->set;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    s->waiting++;
    while (budget_take(c->mem, c->need) < 0) {
        if (evict_idle(s))
            continue;
        if (!s->head) {
            rc = -ENOSPC;
            break;
        }
        pthread_cond_wait(&s->idle, &s->lock);
    }
    if (rc == 0) {
        list_push(s, c);
        c->listed = true;
    }
    s->waiting--;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Makes c (open) the most recently used; c's lock held. */
static void touch(struct cursor *c)
{
    pthread_mutex_lock(&c->set->lock);
    list_unlink(c->set, c);
    list_push(c->set, c);
    pthread_mutex_unlock(&c->set->lock);
}

/* libarchive (3.6) fails a zstd member whose last output is still being flushed once all its
 * input is consumed ("Truncated zstd file body"). An empty skippable frame after the data
 * keeps input there to the end and adds no output. */
static const unsigned char zstd_tail[8] = {0x50, 0x2A, 0x4D, 0x18};

/* The CRC field of the synthetic header: ZipCrypto's check byte on top (see above). */
static uint32_t header_crc(const struct zip_member *zm)
{
    bool zipcrypto = (zm->flags & ZIP_FLAG_ENCRYPTED) && zm->method != ZIP_METHOD_AES;
    if (!zipcrypto || !(zm->flags & ZIP_FLAG_DESCRIPTOR))
        return zm->crc32;
    return (zm->crc32 & 0x00FFFFFFu) | (uint32_t)(zm->dos_time >> 8) << 24;
}

/* Writes the synthetic local header; returns its length. */
static size_t make_header(unsigned char *h, const struct zip_member *zm, size_t tail_len)
{
    bool aes = (zm->flags & ZIP_FLAG_ENCRYPTED) && zm->method == ZIP_METHOD_AES;
    memset(h, 0, HEADER_MAX);
    put_le32(h, 0x04034b50);
    put_le16(h + 4, 63);
    /* method-specific bits (LZMA end marker) and encryption only */
    put_le16(h + 6, zm->flags & (0x0006 | ZIP_FLAG_ENCRYPTED));
    put_le16(h + 8, zm->method);
    put_le16(h + 12, 0x21); /* 1980-01-01 */
    put_le32(h + 14, header_crc(zm));
    put_le32(h + 18, 0xFFFFFFFFu);
    put_le32(h + 22, 0xFFFFFFFFu);
    put_le16(h + 26, 1);
    put_le16(h + 28, aes ? 31 : 20);
    h[30] = 'm';
    put_le16(h + 31, 0x0001);
    put_le16(h + 33, 16);
    put_le64(h + 35, zm->usize);
    put_le64(h + 43, zm->csize + tail_len);
    if (!aes)
        return 51;
    put_le16(h + 51, 0x9901);
    put_le16(h + 53, 7);
    put_le16(h + 55, zm->aes_version);
    h[57] = 'A';
    h[58] = 'E';
    h[59] = zm->aes_strength;
    put_le16(h + 60, zm->aes_method);
    return HEADER_MAX;
}

/* No valid LZMA stream needs a dictionary larger than its own output. */
static uint64_t lzma_dict_cap(uint64_t usize)
{
    uint64_t cap = usize > 4096 ? usize : 4096;
    return cap > UINT32_MAX ? UINT32_MAX : cap;
}

/* An LZMA member (method 14) starts with a 4-byte version/size header and 5 property bytes,
 * the last 4 of them the dictionary size, which liblzma allocates as claimed: 4 GiB for a
 * hostile 100-byte member. The claim is cut to lzma_dict_cap as the first data block goes in
 * (it always holds those bytes). */
static void cap_lzma_dict(struct feed *f, size_t n)
{
    if (n < 9)
        return;
    uint64_t cap = lzma_dict_cap(f->usize);
    if (le32(f->buf + 5) > cap)
        put_le32(f->buf + 5, (uint32_t)cap);
}

static la_ssize_t feed_read(struct archive *a, void *ctx, const void **out)
{
    struct feed *f = ctx;
    if (f->pos < f->header_len) {
        *out = f->header + f->pos;
        la_ssize_t n = (la_ssize_t)(f->header_len - f->pos);
        f->pos = f->header_len;
        return n;
    }
    uint64_t at = f->pos - f->header_len;
    if (at >= f->csize) {
        size_t past = at - f->csize < f->tail_len ? (size_t)(at - f->csize) : f->tail_len;
        if (past == f->tail_len)
            return 0;
        *out = f->tail + past;
        f->pos += f->tail_len - past;
        return (la_ssize_t)(f->tail_len - past);
    }
    size_t n = f->csize - at < FEED_BUF ? (size_t)(f->csize - at) : FEED_BUF;
    int rc = source_read(f->src, f->buf, n, f->data_off + at);
    if (rc < 0) {
        la.set_error(a, -rc, "read error in the archive");
        return -1;
    }
    if (at == 0 && f->lzma)
        cap_lzma_dict(f, n);
    *out = f->buf;
    f->pos += n;
    return (la_ssize_t)n;
}

/*
 * Cost estimates: bytes of decoder state beyond HANDLE_COST, from the first n bytes p of the
 * member's stream; an unreadable header gives the most the method could need. A window
 * (dictionary) is written as output goes through it, so at most usize + OUT_AHEAD of it is
 * ever touched, whatever the stream claims.
 */
static uint64_t touched(uint64_t window, uint64_t usize)
{
    return window < usize + OUT_AHEAD ? window : usize + OUT_AHEAD;
}

/* "BZh1".."BZh9": blocks of 100k..900k, decoded with 4 bytes per block byte. */
static uint64_t cost_bzip2(const unsigned char *p, size_t n, uint64_t usize)
{
    (void)usize;
    unsigned level = n >= 4 && memcmp(p, "BZh", 3) == 0 && p[3] >= '1' && p[3] <= '9'
                         ? (unsigned)(p[3] - '0') : 9;
    return level * 400000ull + 64 * KIB;
}

/* liblzma's probability tables for lc + lp literal context bits. */
static uint64_t lzma_tables(unsigned lclp)
{
    return ((uint64_t)0x300 << (lclp > 12 ? 12 : lclp)) * 2 + 16 * KIB;
}

/* Version (2 bytes), properties size 5 (2 bytes), then lc/lp/pb (1 byte) and the dictionary
 * size (4 bytes), which cap_lzma_dict bounds. */
static uint64_t cost_lzma(const unsigned char *p, size_t n, uint64_t usize)
{
    if (n < 9 || le16(p + 2) != 5 || p[4] >= 9 * 5 * 5)
        return lzma_tables(12) + touched(UINT64_MAX, usize);
    unsigned lc = p[4] % 9, lp = p[4] / 9 % 5;
    uint64_t dict = le32(p + 5), cap = lzma_dict_cap(usize);
    return lzma_tables(lc + lp) + touched(dict < cap ? dict : cap, usize);
}

/* A variable-length integer of the xz format (7 bits a byte, at most 9 bytes); advances *i.
 * Returns false past the end. */
static bool xz_vli(const unsigned char *p, size_t n, size_t *i, uint64_t *out)
{
    *out = 0;
    for (unsigned k = 0; k < 9 && *i < n; k++) {
        unsigned char b = p[(*i)++];
        *out |= (uint64_t)(b & 0x7F) << (7 * k);
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* The LZMA2 dictionary size in the first block header after the 12-byte stream header, or 0
 * when it cannot be read. Later blocks could claim more; touched() still bounds them. */
static uint64_t xz_dict(const unsigned char *p, size_t n)
{
    static const unsigned char magic[6] = {0xFD, '7', 'z', 'X', 'Z', 0};
    if (n < 14 || memcmp(p, magic, 6) != 0 || p[12] == 0)
        return 0;
    size_t end = 12 + ((size_t)p[12] + 1) * 4, i = 14;
    if (end > n)
        return 0;
    unsigned filters = (p[13] & 3u) + 1;
    uint64_t skip;
    if ((p[13] & 0x40) && !xz_vli(p, end, &i, &skip)) /* compressed size */
        return 0;
    if ((p[13] & 0x80) && !xz_vli(p, end, &i, &skip)) /* uncompressed size */
        return 0;
    for (unsigned f = 0; f < filters; f++) {
        uint64_t id, len;
        if (!xz_vli(p, end, &i, &id) || !xz_vli(p, end, &i, &len) || len > end - i)
            return 0;
        if (id == 0x21 && len == 1 && p[i] <= 40)
            return p[i] == 40 ? UINT32_MAX : (uint64_t)(2 | (p[i] & 1)) << (p[i] / 2 + 11);
        i += (size_t)len;
    }
    return 0;
}

static uint64_t cost_xz(const unsigned char *p, size_t n, uint64_t usize)
{
    uint64_t dict = xz_dict(p, n);
    return lzma_tables(4) + touched(dict ? dict : UINT64_MAX, usize);
}

/* libzstd refuses frames whose window passes 2^27 (ZSTD_WINDOWLOG_LIMIT_DEFAULT). */
#define ZSTD_MAX_WINDOW ((uint64_t)1 << 27)

/* The window of the first frame: from the window descriptor, or the content size of a
 * single-segment frame; ZSTD_MAX_WINDOW when unreadable. */
static uint64_t zstd_window(const unsigned char *p, size_t n)
{
    static const unsigned char magic[4] = {0x28, 0xB5, 0x2F, 0xFD};
    if (n < 6 || memcmp(p, magic, 4) != 0 || (p[4] & 0x08))
        return ZSTD_MAX_WINDOW;
    unsigned fhd = p[4], single = fhd >> 5 & 1;
    if (!single) {
        uint64_t base = (uint64_t)1 << (10 + (p[5] >> 3));
        uint64_t window = base + (base >> 3) * (p[5] & 7);
        return window < ZSTD_MAX_WINDOW ? window : ZSTD_MAX_WINDOW;
    }
    static const unsigned did_len[4] = {0, 1, 2, 4}, fcs_len[4] = {1, 2, 4, 8};
    size_t at = 5 + did_len[fhd & 3], len = fcs_len[fhd >> 6];
    if (at + len > n)
        return ZSTD_MAX_WINDOW;
    uint64_t fcs = len == 1 ? p[at] : len == 2 ? le16(p + at) + 256u
                 : len == 4 ? le32(p + at) : le64(p + at);
    return fcs < ZSTD_MAX_WINDOW ? fcs : ZSTD_MAX_WINDOW;
}

/* The window, and a 128 KiB block of input and output buffering besides it. */
static uint64_t cost_zstd(const unsigned char *p, size_t n, uint64_t usize)
{
    return touched(zstd_window(p, n), usize) + 384 * KIB;
}

/* Two property bytes: order - 1 (4 bits), model size in MiB - 1 (8 bits), restore method.
 * The model fills up whatever the output size. */
static uint64_t cost_ppmd(const unsigned char *p, size_t n, uint64_t usize)
{
    (void)usize;
    return (n >= 2 ? ((uint64_t)(le16(p) >> 4 & 0xFF) + 1) : 256) * MIB;
}

/* Encrypted stored members: nothing beyond the handle. */
static uint64_t cost_stored(const unsigned char *p, size_t n, uint64_t usize)
{
    (void)p, (void)n, (void)usize;
    return 0;
}

/* Encrypted deflated members: a 32 KiB window and zlib's tables. */
static uint64_t cost_deflate(const unsigned char *p, size_t n, uint64_t usize)
{
    (void)p, (void)n, (void)usize;
    return 48 * KIB;
}

static const struct method_cost {
    uint16_t method;
    const char *name;
    uint64_t (*cost)(const unsigned char *p, size_t n, uint64_t usize);
} method_costs[] = {
    {ZIP_METHOD_STORED, "stored", cost_stored},
    {ZIP_METHOD_DEFLATED, "deflate", cost_deflate},
    {ZIP_METHOD_BZIP2, "bzip2", cost_bzip2},
    {ZIP_METHOD_LZMA, "LZMA", cost_lzma},
    {ZIP_METHOD_XZ, "xz", cost_xz},
    {ZIP_METHOD_ZSTD, "zstd", cost_zstd},
    {ZIP_METHOD_PPMD, "PPMd", cost_ppmd},
};

/* Sets c->need and c->method from the member's first bytes, which say nothing when they are
 * encrypted. Returns 0 or an error. */
static int estimate(struct cursor *c, const struct zip_member *zm)
{
    unsigned char head[PEEK_LEN];
    size_t n = c->feed.csize < PEEK_LEN ? (size_t)c->feed.csize : PEEK_LEN;
    uint16_t method = zm->method;
    if (c->password) {
        n = 0;
        method = zm->method == ZIP_METHOD_AES ? zm->aes_method : zm->method;
    }
    int rc = source_read(c->feed.src, head, n, c->feed.data_off);
    if (rc < 0)
        return rc;
    c->method = "unknown";
    c->need = HANDLE_COST + 512 * MIB; /* zipdir lets no other method through */
    for (size_t i = 0; i < sizeof method_costs / sizeof *method_costs; i++) {
        if (method_costs[i].method == method) {
            c->method = method_costs[i].name;
            c->need = HANDLE_COST + method_costs[i].cost(head, n, c->feed.usize);
        }
    }
    c->need += c->password ? DECRYPT_COST : 0;
    return 0;
}

/* Writes a size as the options spell it ("64M", "1536k") or in bytes. */
static void format_option(char *out, size_t len, uint64_t v)
{
    static const char suffix[] = "GMk";
    for (int i = 0; i < 3; i++) {
        unsigned shift = 30 - 10 * (unsigned)i;
        if (v && v % ((uint64_t)1 << shift) == 0) {
            snprintf(out, len, "%llu%c", (unsigned long long)(v >> shift), suffix[i]);
            return;
        }
    }
    snprintf(out, len, "%llu", (unsigned long long)v);
}

/* Records why the member's reads fail, once; c's lock held. */
static void note_why(struct cursor *c, const char *why)
{
    if (atomic_load(&c->has_why))
        return;
    snprintf(c->why, sizeof c->why, "%s", why && *why ? why : "cannot decode");
    atomic_store(&c->has_why, true);
}

/* Fails the member for good with err and libarchive's reason (or ours); lock held. */
static int fail_with(struct cursor *c, int err, const char *why)
{
    note_why(c, why);
    atomic_store(&c->failed, err);
    close_cursor(c);
    return err;
}

static int fail(struct cursor *c, const char *why)
{
    return fail_with(c, -EIO, why);
}

/* Fails the member with libarchive's reason, which is the only way it tells a wrong password
 * from damaged data; lock held. */
static int fail_archive(struct cursor *c)
{
    const char *why = la.error_string(c->a);
    if (why && strcmp(why, "Incorrect passphrase") == 0)
        return fail_with(c, -EACCES, "wrong password");
    if (why && strcasestr(why, "passphrase"))
        return fail_with(c, -EACCES, why);
    return fail(c, why);
}

/* The decoder does not fit: for good when it exceeds the whole budget, else for this read
 * (the budget's other users hold the rest). Lock held. */
static int too_big(struct cursor *c, bool ever)
{
    char msg[sizeof c->why], limit[32];
    uint64_t mib = (c->need + MIB - 1) / MIB;
    format_option(limit, sizeof limit, c->mem->limit);
    if (ever) {
        snprintf(msg, sizeof msg, "%s decoder needs %llu MiB, more than decoder_mem=%s allows",
                 c->method, (unsigned long long)mib, limit);
        return fail(c, msg);
    }
    snprintf(msg, sizeof msg, "%s decoder needs %llu MiB, more than the %llu MiB of "
             "decoder_mem=%s left by other memory", c->method, (unsigned long long)mib,
             (unsigned long long)(budget_left(c->mem) / MIB), limit);
    note_why(c, msg);
    return -EIO;
}

/* Opens libarchive's reader of the synthetic archive, with the password and without its CRC
 * check when the cursor checks the CRC; c->a set. Returns whether all went well. */
static bool setup_archive(struct cursor *c)
{
    struct archive_entry *entry;
    return la.support_zip(c->a) == ARCHIVE_OK &&
           (!c->check_crc ||
            la.set_format_option(c->a, "zip", "ignorecrc32", "1") == ARCHIVE_OK) &&
           (!c->password || la.add_passphrase(c->a, c->password) == ARCHIVE_OK) &&
           la.read_open(c->a, &c->feed, NULL, feed_read, NULL) == ARCHIVE_OK &&
           la.next_header(c->a, &entry) == ARCHIVE_OK;
}

/* Opens (or restarts) c's decoder at the start of the member; lock held. */
static int open_cursor(struct cursor *c, const struct zip_member *zm)
{
    close_cursor(c);
    c->feed.pos = 0;
    c->pos = 0;
    c->crc = 0;
    int rc = c->need ? 0 : estimate(c, zm);
    if (rc < 0)
        return fail(c, strerror(-rc));
    if (c->need > c->mem->limit)
        return too_big(c, true);
    if (!la_loaded())
        return fail(c, "libarchive (" LIBARCHIVE_SO ") cannot be loaded: " 
                       "install libarchive13 to read this method");
    if (reserve(c) < 0)
        return too_big(c, false);
    c->feed.buf = malloc(FEED_BUF);
    c->a = c->feed.buf ? la.read_new() : NULL;
    if (!c->a) {
        close_cursor(c);
        return -ENOMEM;
    }
    return setup_archive(c) ? 0 : fail_archive(c);
}

/* Reads exactly len bytes from the cursor; lock held. */
static int cursor_read(struct cursor *c, unsigned char *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        la_ssize_t n = la.read_data(c->a, buf + done, len - done);
        if (n < 0)
            return fail_archive(c);
        if (n == 0)
            return fail(c, "member shorter than its declared size");
        done += (size_t)n;
    }
    if (c->check_crc)
        c->crc = (uint32_t)crc32(c->crc, buf, (uInt)len);
    c->pos += len;
    return 0;
}

/* At the end of the member, libarchive checks the CRC when asked for more; lock held. */
static int cursor_finish(struct cursor *c)
{
    unsigned char extra;
    la_ssize_t n = la.read_data(c->a, &extra, 1);
    if (n < 0)
        return fail_archive(c);
    if (n > 0)
        return fail(c, "member longer than its declared size");
    if (c->check_crc && c->crc != c->want_crc)
        return fail(c, "CRC mismatch (wrong password or damaged data)");
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
    ssize_t n = reader_serve_cached(env, ctl, m, k, buf, len, off);
    if (n != 0)
        return n;
    int rc = atomic_load(&c->failed);
    if (rc == 0 && (!c->listed || c->pos > k * piece))
        rc = open_cursor(c, m->zm);
    else if (rc == 0)
        touch(c);
    for (uint64_t j = c->pos / piece; rc == 0 && j <= k; j++) {
        rc = cursor_piece(c, env->cache, m->idx, m->zm->usize, j);
        if (rc == 0 && j < k && stop_now(ctl->stop))
            rc = -EINTR;
    }
    if (rc < 0)
        return rc;
    n = reader_serve_cached(env, ctl, m, k, buf, len, off);
    return n ? n : -EAGAIN; /* evicted at once by a flood of others: the caller retries */
}

static void *archive_member_new(const struct reader_env *env, const struct zip_member *zm)
{
    struct cursor *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    c->mem = env->decoder_mem;
    c->set = env->decoders;
    c->feed.src = env->src;
    c->feed.data_off = zm->data_off;
    c->feed.csize = zm->csize;
    c->feed.usize = zm->usize;
    if (zm->flags & ZIP_FLAG_ENCRYPTED) {
        /* the bytes that cap_lzma_dict and zstd_tail would touch are ciphertext */
        c->password = env->password;
        c->check_crc = zm->method != ZIP_METHOD_AES;
        c->want_crc = zm->crc32;
    } else if (zm->method == ZIP_METHOD_ZSTD) {
        c->feed.tail = zstd_tail;
        c->feed.tail_len = sizeof zstd_tail;
    }
    c->feed.lzma = zm->method == ZIP_METHOD_LZMA && !c->password;
    c->feed.header_len = make_header(c->feed.header, zm, c->feed.tail_len);
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
        int failed = atomic_load(&c->failed);
        if (failed) /* its cached pieces are no longer to be trusted */
            return failed;
        uint64_t at = off + done, k = at / piece;
        ssize_t n = reader_serve_cached(env, ctl, m, k, buf + done, len - done, at);
        if (n == 0 && !reader_decodes(ctl))
            return -EAGAIN;
        if (n == 0) {
            if (ctl->mode == READ_NOWAIT ? pthread_mutex_trylock(&c->lock) != 0
                                         : pthread_mutex_lock(&c->lock) != 0)
                return -EAGAIN; /* the cursor's holder notifies when it lets go */
            n = cursor_serve(c, env, m, k, buf + done, len - done, at, ctl);
            bool listed = c->listed;
            pthread_mutex_unlock(&c->lock);
            if (listed) /* idle now: a thread waiting for budget may close it */
                wake(c->set);
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
    return c && atomic_load(&c->has_why) ? c->why : "cannot decode";
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
