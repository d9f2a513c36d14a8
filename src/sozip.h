/*
 * sozip: finds and checks the hidden index of a seek-optimized ZIP member (SOZip 0.5).
 *
 * A SOZip member is deflated with a sync flush then a full flush every chunk_size bytes of
 * input, so each chunk decodes on its own, starting with an empty window. Right after the
 * member's data (and data descriptor) comes a local header for the stored file
 * DIR/.NAME.sozip.idx, which the central directory does not list. It holds a 32-byte header
 * (uint32 version = 1, skip_bytes, chunk_size, offset_size 4 or 8; uint64 uncompressed and
 * compressed size; little-endian), skip_bytes bytes, then the offset in the compressed stream
 * of every chunk after the first: (usize - 1) / chunk_size entries.
 *
 * Everything read here is untrusted: the header must agree with the central directory, the
 * offsets must be strictly ascending, past 0 and below the compressed size, and the index
 * must fit the file and the memory budget. What this cannot check without decoding (that
 * each chunk decodes to exactly its length and ends on the flush marker) is the reader's job.
 *
 * Errors: negative errno with a one-line reason in why (io_fail); -ENOENT means there is no
 * index at all (not worth a log line). Pure functions and preads: thread-safe.
 */
#ifndef NPZMOUNT_SOZIP_H
#define NPZMOUNT_SOZIP_H

#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "zipdir.h"

#define SOZIP_HEADER 32
#define SOZIP_MARKER_LEN 4 /* the flush marker every chunk but the last ends with */
extern const unsigned char sozip_marker[SOZIP_MARKER_LEN]; /* 00 00 ff ff */

struct sozip_header {
    uint32_t version, skip, chunk, offset_size;
    uint64_t usize, csize;
};

/* A checked index: chunk c is compressed in [off[c], off[c + 1]) of the member's data, and
 * decodes to [c * chunk, min((c + 1) * chunk, usize)). off[0] = 0, off[nchunks] = csize. */
struct sozip_index {
    uint64_t chunk;
    uint64_t nchunks;
    uint64_t *off;  /* nchunks + 1 entries; owned */
    uint64_t bytes; /* what it took from the budget */
};

/* Parses h[0..SOZIP_HEADER) and checks it against the member's sizes. */
int sozip_parse_header(const unsigned char *h, uint64_t csize, uint64_t usize,
                       struct sozip_header *out, char *why, size_t why_len);

/* Entries of the offset section that a header promises. */
uint64_t sozip_entries(const struct sozip_header *h);

/* Checks the offset section raw[0..entries * offset_size) and fills off (entries + 2 slots:
 * the implicit 0, the entries, then csize). */
int sozip_parse_offsets(const struct sozip_header *h, const unsigned char *raw, uint64_t *off,
                        char *why, size_t why_len);

/* The hidden file's name for member `name`: "dir/.base.sozip.idx". Returns its length, or -1
 * when it does not fit out[0..cap). */
int sozip_index_name(const char *name, size_t name_len, char *out, size_t cap);

/* Finds, reads and checks member zm's index in the archive src, charging its table to mem
 * (NULL: unbounded). Returns 0 with *out set (free with sozip_index_free), -ENOENT when the
 * member has none, or another negative errno with a reason in why. */
struct source;
int sozip_load(struct source *src, const struct zip_member *zm, struct budget *mem,
               struct sozip_index *out, char *why, size_t why_len);

void sozip_index_free(struct sozip_index *ix, struct budget *mem);

/* Whether member zm carries an index whose header agrees with it, read without its offsets
 * (a few small reads): 0 with the chunk size in *chunk, -ENOENT, or another negative errno. */
int sozip_peek(struct source *src, const struct zip_member *zm, uint64_t *chunk);

#endif
