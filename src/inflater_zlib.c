/*
 * inflater_zlib: the reference inflater, zlib's raw inflate. Stopping at a block boundary is
 * zlib's own Z_BLOCK; at a boundary zlib holds no whole byte back and reports the leftover bits
 * of the last byte it took in data_type, so the boundary is right at the input consumed.
 */
#include "inflater.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct inflater {
    z_stream s;
    bool stopping;   /* a stop request is in force */
    bool need_reset; /* stopped at a boundary: only reset() may follow */
    bool ended;
    uint64_t in;     /* input bytes consumed since reset */
    int bits;        /* at a boundary: its unused bits of byte in - 1 */
};

static struct inflater *zl_new(void)
{
    struct inflater *z = calloc(1, sizeof *z);
    if (!z)
        return NULL;
    if (inflateInit2(&z->s, -15) != Z_OK) {
        free(z);
        return NULL;
    }
    return z;
}

static void zl_free(struct inflater *z)
{
    if (z) {
        inflateEnd(&z->s);
        free(z);
    }
}

static int zl_reset(struct inflater *z, int bits, unsigned char prev,
                    const unsigned char *window, size_t wlen)
{
    if (bits < 0 || bits > 7 || wlen > INFLATER_WINDOW)
        return -EINVAL;
    z->stopping = z->need_reset = z->ended = false;
    z->in = 0;
    z->bits = 0;
    if (inflateReset(&z->s) != Z_OK)
        return -EINVAL;
    if (bits && inflatePrime(&z->s, bits, prev >> (8 - bits)) != Z_OK)
        return -EINVAL;
    if (wlen && inflateSetDictionary(&z->s, window, (uInt)wlen) != Z_OK)
        return -EINVAL;
    return 0;
}

static int zl_step(struct inflater *z, const unsigned char *in, size_t in_len, size_t *used,
                   unsigned char *out, size_t room, size_t *made, int flags)
{
    *used = *made = 0;
    if (z->need_reset)
        return -EINVAL;
    if (z->ended)
        return INFLATER_END;
    if (flags & INFLATER_STOP_AT_BLOCK)
        z->stopping = true;
    /* zlib counts in uInt; the caller's loop passes the rest again */
    z->s.next_in = (unsigned char *)in;
    z->s.avail_in = in_len > UINT_MAX ? UINT_MAX : (uInt)in_len;
    z->s.next_out = out;
    z->s.avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
    uInt avail_in = z->s.avail_in, avail_out = z->s.avail_out;
    int rc = inflate(&z->s, z->stopping ? Z_BLOCK : Z_NO_FLUSH);
    *used = avail_in - z->s.avail_in;
    *made = avail_out - z->s.avail_out;
    z->in += *used;
    z->s.next_in = z->s.next_out = NULL;
    switch (rc) {
    case Z_STREAM_END:
        z->ended = true;
        return INFLATER_END;
    case Z_OK:
        /* at the end of a block that is not the last one */
        if (z->stopping && (z->s.data_type & 0xc0) == 0x80) {
            z->bits = z->s.data_type & 7;
            z->need_reset = true;
            return INFLATER_BLOCK_END;
        }
        return INFLATER_OK;
    case Z_BUF_ERROR: /* no progress possible: the caller must bring input or room */
        return INFLATER_OK;
    case Z_MEM_ERROR:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

static uint64_t zl_boundary(const struct inflater *z, int *bits)
{
    *bits = z->bits;
    return z->in;
}

const struct inflater_ops inflater_zlib = {
    .name = "zlib",
    /* zlib's own inflate state is about 7 KiB, plus the 32 KiB window */
    .memory = sizeof(struct inflater) + (7u << 10) + INFLATER_WINDOW,
    .new = zl_new,
    .free = zl_free,
    .reset = zl_reset,
    .step = zl_step,
    .boundary = zl_boundary,
};
