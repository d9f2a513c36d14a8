/*
 * inflater: a raw deflate decoder (ZIP method 8) that can start at any block boundary and stop
 * at one, behind one small interface with several implementations.
 *
 *   inflater_zlib  zlib's inflate: the reference every other decoder is tested against.
 *   inflater_isal  Intel ISA-L's isal_inflate: faster on numpy members (scripts/bench-tools/
 *                  inflater-bench.c measures it). Its stop at a block end is built on ISA-L's
 *                  public state fields, not on an API: test_inflater checks it against zlib.
 *
 * Positions. A block boundary is a bit position in the compressed stream. It is described the
 * zran way: a byte count `in` and `bits` (0-7), meaning the next block starts at the high `bits`
 * bits of byte in - 1 (or at byte `in` when bits == 0).
 *
 * A checkpoint index uses an inflater like this:
 *   - restart: reset(bits, byte in - 1, last 32 KiB of output, ...), then step() with the
 *     input from byte `in` on;
 *   - first pass: step() with flags 0 until a checkpoint is wanted, then with
 *     INFLATER_STOP_AT_BLOCK until it returns INFLATER_BLOCK_END; boundary() gives the
 *     checkpoint's position relative to the last reset, the output gives its window; then
 *     reset() with exactly that and go on with the input from the checkpoint (the inflater may
 *     have consumed a few bytes past it). So every checkpoint is restarted from as soon as it
 *     is made, with the same code as a later random read.
 *
 * Ownership: the caller owns every buffer; an inflater keeps no pointer to them between calls
 * (the window is copied by reset()). Threads: an inflater is used by one thread at a time;
 * distinct inflaters are independent. Errors are negative errno values: -EIO for corrupt data,
 * -EINVAL for misuse, -ENOMEM.
 */
#ifndef NPZMOUNT_INFLATER_H
#define NPZMOUNT_INFLATER_H

#include <stddef.h>
#include <stdint.h>

#define INFLATER_WINDOW 32768u

/* step() results (besides negative errnos). */
#define INFLATER_OK 0        /* progress, or none possible without more input or room */
#define INFLATER_END 1       /* the final block ended; all its output was delivered */
#define INFLATER_BLOCK_END 2 /* stopped at a block boundary as asked; boundary() says where */

/* step() flag: stop at the end of the block being decoded (of the next block if the inflater is
 * between blocks), never where this request was made. Once made, the request holds until a step
 * returns INFLATER_BLOCK_END or INFLATER_END, with or without the flag on later steps. An
 * inflater may decode ahead of the output it delivered (ISA-L: up to 64 KiB into its own buffer
 * right after a reset, a few bytes otherwise), and "being decoded" counts from there: to get the
 * first boundary at or after output offset X, ask once X - 1 bytes are out and X - 1 is past
 * 64 KiB from the reset (the usual case with a span of 1 MiB). */
#define INFLATER_STOP_AT_BLOCK 1

struct inflater;

struct inflater_ops {
    const char *name; /* "zlib", "isal" */
    size_t memory;    /* approximate bytes one inflater holds, for memory budgets */

    /* A new inflater at the start of a stream (as after reset(0, 0, NULL, 0)); NULL when out
     * of memory. */
    struct inflater *(*new)(void);
    void (*free)(struct inflater *);

    /* Positions the inflater at a block boundary: the next block starts at the high `bits`
     * (0-7) bits of `prev`, then continues with the input of the next step; window holds the
     * last wlen (<= INFLATER_WINDOW) bytes of output before it. Returns 0 or -EINVAL. */
    int (*reset)(struct inflater *, int bits, unsigned char prev, const unsigned char *window,
                 size_t wlen);

    /* Decodes from in[0..in_len) into out[0..room); sets *used (input bytes consumed: the next
     * step's input starts right after them) and *made (bytes written). Returns INFLATER_OK
     * (*used and *made both 0 only when it needs more input or more room), INFLATER_END (also
     * on every later step, with nothing used or made), INFLATER_BLOCK_END (see boundary(); the
     * next call must be reset()), -EIO on corrupt data, -ENOMEM, or -EINVAL when the previous
     * step returned INFLATER_BLOCK_END. *used may count a few bytes that the inflater only
     * buffered, even past the end of the stream. Never reads or writes outside the given
     * buffers. */
    int (*step)(struct inflater *, const unsigned char *in, size_t in_len, size_t *used,
                unsigned char *out, size_t room, size_t *made, int flags);

    /* After INFLATER_BLOCK_END: where the next block starts, as input bytes since the last
     * reset() (or new()): at the high *bits bits (0-7) of the byte before that count. */
    uint64_t (*boundary)(const struct inflater *, int *bits);
};

extern const struct inflater_ops inflater_zlib, inflater_isal;

/* The inflaters built in, NULL-terminated, the reference (zlib) first. */
extern const struct inflater_ops *const inflater_all[];

/* The inflater called name, or NULL. */
const struct inflater_ops *inflater_find(const char *name);

#endif
