/*
 * inflate_index: random access into one raw deflate stream (ZIP method 8), zran style.
 *
 * The algorithm. Deflate output can only be produced by decoding from the start of the stream,
 * because every block may copy from the 32 KiB of output before it. But at the boundary between
 * two blocks the decoder's whole state is: the input position (a byte offset plus 0-7 bits of
 * the previous byte still unread) and the last 32 KiB of output. Record that state (a
 * "checkpoint") every `span` output bytes, and decoding can restart at any checkpoint: reset a
 * raw inflater, prime it with the leftover bits, give it the 32 KiB as a dictionary, and go on.
 *
 * The output between checkpoint k and checkpoint k+1 is "chunk k": the unit of decoding and of
 * caching. Checkpoints sit on block boundaries at least span bytes apart, so a chunk is span
 * bytes plus at most one deflate block (numpy's zlib writes blocks of 16-64 KiB of output).
 *
 * The trade-offs: reading any byte costs decoding one chunk; each checkpoint costs 32 KiB of
 * memory (3 % of the output at a 1 MiB span). The index is built lazily: decoding the last
 * known chunk (the "frontier") records the next checkpoint, so the first read far into a member
 * decodes everything before it once, and never again. When the frontier reaches the end of the
 * stream, the size and CRC-32 are checked against the central directory; any mismatch or
 * corrupt data makes the member fail with -EIO from then on (zindex_why says why).
 *
 * A chunk whose block runs on past ZINDEX_MAX_CHUNK bytes (only hand-made streams do this)
 * fails the member rather than let one read take unbounded memory.
 *
 * Threads: all functions may be called concurrently on one index. Chunks that are already
 * indexed decode in parallel; extending the frontier is done by one thread at a time, and a
 * thread that arrives while another extends waits and then finds its chunk indexed.
 * Errors are negative errno values.
 */
#ifndef NPZMOUNT_INFLATE_INDEX_H
#define NPZMOUNT_INFLATE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#define ZINDEX_WINDOW 32768u
#define ZINDEX_MAX_CHUNK (256u << 20)

/* Where the compressed stream lives and what the central directory promises about it. */
struct zindex_source {
    int fd;
    uint64_t offset; /* first byte of the deflate stream in the file */
    uint64_t csize;
    uint64_t usize;
    uint32_t crc32;
};

struct zindex;

/* Receives each chunk the frontier decodes; takes ownership of data (malloc'd). */
typedef void (*zindex_sink)(void *ctx, uint64_t k, unsigned char *data, size_t len);

/* Returns NULL when out of memory. span is clamped to at least ZINDEX_WINDOW. */
struct zindex *zindex_new(const struct zindex_source *src, uint64_t span);
void zindex_free(struct zindex *zi);

/* Finds the indexed chunk holding output offset off (< usize). Returns 1 and sets *k, *start and
 * *len; 0 when off lies past the indexed part; a negative errno when the member has failed. */
int zindex_locate(struct zindex *zi, uint64_t off, uint64_t *k, uint64_t *start,
                  uint64_t *len);

/* Decodes indexed chunk k into a new malloc'd buffer of exactly the chunk's length. */
int zindex_decode(struct zindex *zi, uint64_t k, unsigned char **out, size_t *len);

/* Decodes frontier chunks, in order, until the chunk holding off is indexed, handing each to
 * sink. Returns 0 (also when another thread indexed it meanwhile) or a negative errno. */
int zindex_extend(struct zindex *zi, uint64_t off, zindex_sink sink, void *ctx);

/* Reason for the member's failure, or NULL while it is healthy. */
const char *zindex_why(struct zindex *zi);

/* Checkpoints recorded so far, and bytes of memory the index uses. */
uint64_t zindex_points(struct zindex *zi);
uint64_t zindex_memory(struct zindex *zi);

#endif
