/*
 * reader: produces the bytes of one member. One small interface, one implementation per way a
 * member can be stored; npz picks the implementation once per member (reader_for) and calls
 * it with the request already clipped to the member's size.
 *
 * A reader may keep per-member state: it says how to make it (new_state) and free it
 * (free_state); reader_attach creates it on a member's first read and installs it once in a
 * slot npz owns, whatever the number of concurrent first readers.
 *
 * How far a read may go is the caller's choice (struct read_ctl): READ_CACHED serves only what
 * needs no decoding (stored bytes, ready pieces), READ_QUICK also what takes a few chunks
 * of a local archive's SOZip member to decode (reader_sozip's direct reads), READ_NOWAIT
 * decodes but never waits for another thread's decode (but for its own helper's, one chunk
 * at most: see helper below), READ_BLOCK does both. Instead of waiting, a read returns -EAGAIN,
 * and the reader promises that the thread it would have waited for calls cache_notify (or
 * fills a cache piece, which notifies) when it is done, so the caller knows when to retry.
 *
 * Threads: once the state is attached, read, why, prepare, save and stats may all run at once,
 * on the same member or on others, from any number of threads; new_state may run in several
 * threads for one member (reader_attach keeps one result); free_state runs once, last, when
 * nothing else runs. A reader keeps no state outside env and its per-member state, so two
 * archives open in one process share nothing.
 * Errors are negative errno; -EIO means the member cannot be served, -EACCES that it
 * is encrypted and the password is missing or wrong, -EREMOTEIO that the archive could not
 * be read this time (its source failed: a remote server timed out, say), which fails the
 * read but not the member, so that a later read may succeed (npz_read reports it as -EIO).
 * why() may be called at any time, with or without state, and always returns a one-line
 * reason (never NULL; a generic one before any failure), which lives as long as the member's
 * state, that is until the archive is closed (npz_close).
 */
#ifndef NPZMOUNT_READER_H
#define NPZMOUNT_READER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "budget.h"
#include "cache.h"
#include "index_file.h"
#include "pins.h"
#include "source.h"
#include "stop.h"
#include "zipdir.h"

struct archive_decoders;

/* What readers share, owned by npz. */
struct reader_env {
    struct source *src;       /* the archive's bytes (source.h) */
    const struct zip_member *members; /* the member table, to tell a member's index */
    struct cache *cache;      /* decoded pieces; its piece size is every reader's unit */
    uint64_t span;            /* deflate checkpoint spacing */
    uint64_t fine;            /* spacing of the checkpoints whose windows go to the spill... */
    struct spill *spill;      /* ...an unlinked file in index_dir (spill.h); NULL: none */
    struct budget *index_mem; /* checkpoint windows and tables */
    const char *index_dir;    /* where indexes are saved and loaded; NULL: nowhere */
    struct ixf_identity id;   /* the archive's content identity, valid with index_dir */
    struct ixf_sidecar *sidecar; /* the archive's shared indexes, tried first; NULL: none */
    /* Asks for [off, off + len) of member idx to be decoded into the cache by a worker,
     * soon, unless that would have to wait (a sequential reader's next pieces, decoded while
     * the kernel handles the current reply), with at most `width` such jobs of the member at
     * once. Returns 0 when queued, or -EBUSY (width reached), -ENOMEM, -EAGAIN. Its jobs read
     * with read_ctl.ahead set. May be NULL. */
    int (*ahead)(void *ctx, uint64_t idx, uint64_t off, size_t len, unsigned width);
    void *ahead_ctx;      /* for ahead and helper */
    /* Runs fn(arg) on a worker thread soon: a read's helper, decoding part of it side by
     * side. fn may run after the read returned; env and the member's state outlive it
     * (npz_busy counts it). Returns 0 when queued, else a negative errno (-EAGAIN, -ENOMEM),
     * and fn never runs. May be NULL. */
    int (*helper)(void *ctx, void (*fn)(void *arg), void *arg);
    unsigned threads;     /* decode worker threads: the widest useful decode-ahead */
    uint64_t cache_bytes; /* the cache's largest bound (-o cache); cache_bound() is the one
                           * in force, what decode-ahead may fill */
    struct budget *decoder_mem;        /* bounds the state of reader_archive's decoders */
    struct archive_decoders *decoders; /* reader_archive's open decoders */
    const char *password;     /* for encrypted members; NULL: none given */
};

/* One member as a reader sees it. */
struct reader_member {
    uint64_t idx;
    const struct zip_member *zm;
    void *state; /* from new_state, or NULL for readers without state */
};

struct read_ctl {
    enum read_mode mode;
    const struct stop *stop; /* checked between pieces of a long decode; may be NULL */
    bool ahead;              /* a decode-ahead job's read, which asks for no more ahead */
    struct read_pins *pins;  /* NULL: copy every byte into buf; else pins.h */
};

struct reader_stats {
    uint64_t indexed;     /* output bytes the index covers */
    uint64_t decoded;     /* output bytes decoded so far, first pass and restarts */
    uint64_t checkpoints;
    uint64_t index_bytes; /* memory of the index */
    uint64_t sozip_chunk; /* seek-optimized (SOZip) member: its chunk size; else 0 */
};

struct reader_ops {
    /* Copies [off, off + len) of the member into buf; off + len <= usize. With ctl->pins
     * (empty on entry) it lists every byte as slices instead (pins.h): of cache pieces, or of
     * buf for bytes written there. Returns len or an error (-EAGAIN and -EINTR as struct
     * read_ctl says; after an error the pins may hold pieces all the same). */
    ssize_t (*read)(const struct reader_env *env, const struct reader_member *m, void *buf,
                    size_t len, uint64_t off, const struct read_ctl *ctl);
    /* Why the member failed. */
    const char *(*why)(const struct reader_member *m);
    /* Per-member state, or NULL when out of memory; both NULL for stateless readers. */
    void *(*new_state)(const struct reader_env *env, const struct zip_member *zm);
    void (*free_state)(void *state);
    /* Optional, for readers with an index. prepare builds it ahead of reads without filling
     * the cache (scratch: one piece), giving way to readers (-EAGAIN: try again later);
     * returns 1 when complete. save writes what was built to index_dir when it grew since
     * loaded or saved (0, or a negative errno with a one-line reason in why). stats describes
     * the index. All run concurrently with reads. */
    int (*prepare)(const struct reader_env *env, const struct reader_member *m,
                   unsigned char *scratch, const struct stop *stop);
    int (*save)(const struct reader_env *env, const struct reader_member *m, char *why,
                size_t why_len);
    void (*stats)(const struct reader_member *m, struct reader_stats *out);
};

extern const struct reader_ops reader_stored;
extern const struct reader_ops reader_deflate;
extern const struct reader_ops reader_sozip; /* method 8: SOZip index, else reader_deflate */
extern const struct reader_ops reader_archive;
extern const struct reader_ops reader_broken;
extern const struct reader_ops reader_locked;

/* Whether piece q of the member is ready in the cache (a peek: it may go at once). */
bool reader_cached(const struct reader_env *env, const struct reader_member *m, uint64_t q);

/* Serves what ready piece q of the member holds of [off, off + len): copied into buf, or held
 * in ctl->pins. Returns the bytes served (at least 1), 0 when q is not ready, or -EIO when q
 * is shorter than off needs (or -ENOMEM from the pins). */
ssize_t reader_serve_cached(const struct reader_env *env, const struct read_ctl *ctl,
                            const struct reader_member *m, uint64_t q, unsigned char *buf,
                            size_t len, uint64_t off);

/* The same from a ready entry of piece q that the caller holds and hands over: it is either
 * put back or kept in ctl->pins. */
ssize_t reader_serve_entry(const struct reader_env *env, const struct read_ctl *ctl,
                           struct cache_entry *e, uint64_t q, unsigned char *buf, size_t len,
                           uint64_t off);

/* Loads member idx's saved index: from the sidecar when it holds one (an unusable one is
 * logged and passed over), else from index_dir. As ixf_load. */
int reader_load_index(const struct reader_env *env, const struct zip_member *zm, uint64_t idx,
                      struct ixf **out, char *why, size_t why_len);

/* The cache mode that matches a read mode. */
enum cache_how reader_cache_how(const struct read_ctl *ctl);

/* Whether the read may decode whatever it needs (READ_NOWAIT, READ_BLOCK). */
static inline bool reader_decodes(const struct read_ctl *ctl)
{
    return ctl->mode == READ_NOWAIT || ctl->mode == READ_BLOCK;
}

/* Sets m->state from slot, creating the state first if the slot is empty; a thread that loses
 * the race to install it frees its own copy. Returns 0 or -ENOMEM. */
int reader_attach(const struct reader_ops *ops, const struct reader_env *env,
                  _Atomic(void *) *slot, struct reader_member *m);

/* The open libarchive decoders of one archive, which reader_archive closes (least recently
 * used and idle first) when a new one needs their share of decoder_mem. Thread-safe. Free it
 * after every reader_archive state of the archive; new returns NULL when out of memory. */
struct archive_decoders *archive_decoders_new(void);
void archive_decoders_free(struct archive_decoders *d);

/* The reader for a member: reader_broken for members zipdir flagged; for encrypted members,
 * reader_archive (libarchive decrypts) with a password and reader_locked without. */
const struct reader_ops *reader_for(const struct zip_member *zm, bool have_password);

#endif
