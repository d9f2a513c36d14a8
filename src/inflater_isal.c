/*
 * inflater_isal: Intel ISA-L's isal_inflate behind the inflater interface.
 *
 * Restarting is what ISA-L offers: isal_inflate_set_dict loads the window, and the leftover
 * bits go into its public bit buffer (read_in, read_in_length).
 *
 * Stopping at a block boundary is not offered (ISA-L has no Z_BLOCK), so it is made from what
 * isal_inflate (2.30 and later, C and assembly decoders alike) does with its public state:
 *   - at an end-of-block code it ends the stream if state->bfinal is set (the flag read from
 *     the current block's header, and read nowhere else), its bit buffer then holding what it
 *     read past that code. So to stop at the end of the block being decoded, set bfinal once
 *     its header was read: ISA-L ends there (ISAL_BLOCK_FINISH once its output is delivered).
 *   - when input runs out inside a block header it rewinds its bit buffer to the start of that
 *     header and keeps the header's bytes (tmp_in_size of them) aside: between blocks, the
 *     position of the boundary is known too.
 * Either way the boundary is the input consumed minus the bits still buffered (and minus the
 * header bytes kept aside). While between blocks with a stop request, input goes in small
 * slices, so that ISA-L stops inside the next header or a little into its block, and the request
 * takes hold there. After a stop ISA-L keeps no history, which is why the interface asks for
 * reset() after a block end. The tests compare every boundary found so against zlib's Z_BLOCK.
 */
#include "inflater.h"

#include <errno.h>
#include <isa-l/igzip_lib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

/* Input given at a time while between blocks with a stop request. A block that fits whole in
 * one slice (only empty or near-empty ones) is passed over. */
#define HEADER_SLICE 64u
/* ISA-L counts in uint32_t; steps take at most this much, the caller passes the rest again. */
#define MAX_STEP (1u << 30)

struct inflater {
    struct inflate_state st;
    bool stopping;   /* a stop request is in force */
    bool poisoned;   /* bfinal set to stop at the end of the current block */
    bool need_reset; /* stopped at a boundary: only reset() may follow */
    uint64_t in;     /* input bytes consumed since reset */
    int64_t from;    /* a stop request made between blocks: that boundary, in bits */
    uint64_t at;     /* stopped at a boundary: its position, in bits since reset */
};

static void clear(struct inflater *x)
{
    x->stopping = x->poisoned = x->need_reset = false;
    x->in = x->from = x->at = 0;
}

static struct inflater *is_new(void)
{
    struct inflater *x = malloc(sizeof *x);
    if (!x)
        return NULL;
    isal_inflate_init(&x->st); /* raw deflate, 32 KiB history */
    clear(x);
    return x;
}

static void is_free(struct inflater *x)
{
    free(x);
}

static int is_reset(struct inflater *x, int bits, unsigned char prev,
                    const unsigned char *window, size_t wlen)
{
    if (bits < 0 || bits > 7 || wlen > INFLATER_WINDOW)
        return -EINVAL;
    clear(x);
    isal_inflate_reset(&x->st);
    x->st.read_in = bits ? (uint64_t)(prev >> (8 - bits)) : 0;
    x->st.read_in_length = bits;
    /* set_dict only copies the window (2.30 declares it non-const) */
    if (wlen && isal_inflate_set_dict(&x->st, (uint8_t *)window, (uint32_t)wlen) != COMP_OK)
        return -EINVAL;
    return 0;
}

static bool between_blocks(const struct inflate_state *st)
{
    return st->block_state == ISAL_BLOCK_NEW_HDR || st->block_state == ISAL_BLOCK_HDR;
}

static bool in_block(const struct inflate_state *st)
{
    return st->block_state == ISAL_BLOCK_CODED || st->block_state == ISAL_BLOCK_TYPE0;
}

/* The decoding position in bits since reset, when it is a boundary (between blocks, or at the
 * end of a block); down to -7 right after a reset with primed bits. */
static int64_t position(const struct inflater *x)
{
    const struct inflate_state *st = &x->st;
    return 8 * (int64_t)x->in - st->read_in_length - 8 * (int64_t)st->tmp_in_size;
}

/* One isal_inflate call on in[*used..in_len) (at most max_in of it) and out[*made..room),
 * advancing both counts. Returns ISA-L's code. */
static int run(struct inflater *x, const unsigned char *in, size_t in_len, size_t *used,
               unsigned char *out, size_t room, size_t *made, size_t max_in)
{
    struct inflate_state *st = &x->st;
    size_t ai = in_len - *used, ao = room - *made;
    ai = ai < max_in ? ai : max_in;
    ao = ao < MAX_STEP ? ao : MAX_STEP;
    st->next_in = (uint8_t *)in + *used;
    st->avail_in = (uint32_t)ai;
    st->next_out = out + *made;
    st->avail_out = (uint32_t)ao;
    int rc = isal_inflate(st);
    *used += ai - st->avail_in;
    *made += ao - st->avail_out;
    x->in += ai - st->avail_in;
    st->next_in = st->next_out = NULL;
    st->avail_in = st->avail_out = 0;
    return rc;
}

/* Reports a stop at the current position, a boundary. */
static int stop_here(struct inflater *x)
{
    int64_t at = position(x);
    if (at < 0) /* a block takes at least 10 bits: only a broken state gets here */
        return -EIO;
    x->at = (uint64_t)at;
    x->need_reset = true;
    return INFLATER_BLOCK_END;
}

/* Output decoded into ISA-L's own buffer and not yet delivered. */
static bool pending(const struct inflate_state *st)
{
    return st->tmp_out_valid != st->tmp_out_processed;
}

/* After a run with a stop request, between blocks: stopped if a block was passed since the
 * request and all its output was delivered. */
static bool passed_a_block(const struct inflater *x)
{
    return between_blocks(&x->st) && !pending(&x->st) && position(x) > x->from;
}

static int is_step(struct inflater *x, const unsigned char *in, size_t in_len, size_t *used,
                   unsigned char *out, size_t room, size_t *made, int flags)
{
    struct inflate_state *st = &x->st;
    *used = *made = 0;
    if (x->need_reset)
        return -EINVAL;
    if (st->block_state == ISAL_BLOCK_FINISH)
        return INFLATER_END;
    if ((flags & INFLATER_STOP_AT_BLOCK) && !x->stopping) {
        /* Used only if between blocks. A boundary whose block's output is still pending lies
         * after the output delivered: it counts as passed. */
        x->stopping = true;
        x->from = position(x) - pending(st);
    }
    for (;;) {
        /* the request takes hold once the header of the block to stop after was read */
        if (x->stopping && !x->poisoned && in_block(st) && !st->bfinal) {
            st->bfinal = 1;
            x->poisoned = true;
        }
        /* between blocks, deliver pending output before reading on */
        bool sliced = x->stopping && !x->poisoned && between_blocks(st);
        size_t used_before = *used, made_before = *made;
        size_t max_in = !sliced ? MAX_STEP : pending(st) ? 0 : HEADER_SLICE;
        int rc = run(x, in, in_len, used, out, room, made, max_in);
        if (rc < 0)
            return -EIO;
        if (st->block_state == ISAL_BLOCK_FINISH)
            return x->poisoned ? stop_here(x) : INFLATER_END;
        if (sliced && passed_a_block(x))
            return stop_here(x);
        /* a full run stops only for want of input or room */
        if (!sliced || (*used == used_before && *made == made_before))
            return INFLATER_OK;
    }
}

static uint64_t is_boundary(const struct inflater *x, int *bits)
{
    uint64_t bytes = (x->at + 7) / 8;
    *bits = (int)(8 * bytes - x->at);
    return bytes;
}

const struct inflater_ops inflater_isal = {
    .name = "isal",
    .memory = sizeof(struct inflater),
    .new = is_new,
    .free = is_free,
    .reset = is_reset,
    .step = is_step,
    .boundary = is_boundary,
};
