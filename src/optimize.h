/*
 * optimize: `npzmount --optimize IN OUT`, which rewrites a ZIP archive as a seek-optimized ZIP
 * (SOZip profile 0.5): every deflated member larger than one chunk (and with compress_stored
 * every stored one) is deflated again with a Z_SYNC_FLUSH and a Z_FULL_FLUSH after every
 * chunk of input, so that each chunk decodes on its own, and is followed by a hidden stored
 * file ".NAME.sozip.idx" (a local header only, absent from the central directory) that holds
 * the compressed offset of every chunk. The result stays an ordinary ZIP for every reader.
 *
 * Names, order, timestamps, attributes, extra fields and comments are kept; ZIP64 fields are
 * written where a value needs them (and only there). Members that cannot be read (zipdir's
 * err) fail the run. The data of every recompressed member is checked against its CRC-32.
 *
 * OUT is written to a temporary file in its directory and renamed over OUT at the end; on any
 * failure the temporary file is removed and OUT is untouched.
 *
 * Threads: chunks are compressed by opt->threads worker threads, all started and joined
 * inside optimize_run; the caller's thread reads and decompresses the input and writes the
 * output. Memory: a few chunks per thread, plus 8 bytes per chunk of the member being written
 * (its offset table) and the new central directory. Errors: negative errno with a one-line
 * reason (naming the file, no newline) in msg.
 */
#ifndef NPZMOUNT_OPTIMIZE_H
#define NPZMOUNT_OPTIMIZE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Chosen by measurement: see "Choosing the chunk size" in the man page. */
#define OPTIMIZE_DEFAULT_CHUNK (32u << 10)
#define OPTIMIZE_MIN_CHUNK 4096u
#define OPTIMIZE_MAX_CHUNK (64u << 20)

struct optimize_options {
    uint32_t chunk_size;  /* 0: OPTIMIZE_DEFAULT_CHUNK; else MIN..MAX */
    unsigned threads;     /* compressing threads; 0: the number of CPUs */
    bool compress_stored; /* deflate stored members too */
    const atomic_bool *cancel; /* when not NULL and set (by a signal handler, say), the run
                                * stops within a chunk and fails with -EINTR */
};

struct optimize_stats {
    uint64_t in_bytes, out_bytes; /* archive sizes */
    uint64_t members;             /* central directory entries written */
    uint64_t indexed;             /* members given a SOZip index */
};

/* Rewrites the archive at in into out. progress, when not NULL, is called now and then from
 * the caller's thread with the member bytes done so far and in all. Returns 0 with *st
 * filled, or a negative errno. */
int optimize_run(const char *in, const char *out, const struct optimize_options *opt,
                 void (*progress)(void *ctx, uint64_t done, uint64_t total), void *ctx,
                 struct optimize_stats *st, char *msg, size_t msg_len);

#endif
