/* window: see window.h. */
#include "window.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <isa-l/igzip_lib.h>

#include "tls.h"

/* ISA-L's level 1 packs a window as small as zlib's level 1 does, 4 to 15 times faster (a
 * fine index packs thousands of windows when saved). Each thread keeps its compressor for
 * good: it takes 360 KiB, too much to set up per window. */
struct packer {
    struct isal_zstream z;
    unsigned char level_buf[ISAL_DEF_LVL1_DEFAULT];
};

static struct tls packers = TLS_INIT(sizeof(struct packer), NULL);

/* Level 1 raw deflate into out (cap bytes); returns the length, or 0 when it does not fit. */
static uint32_t deflate_into(const unsigned char *raw, uint32_t wlen, unsigned char *out,
                             uint32_t cap)
{
    struct packer *pk = tls_get(&packers);
    if (!pk)
        return 0;
    struct isal_zstream *z = &pk->z;
    isal_deflate_stateless_init(z);
    z->next_in = (unsigned char *)raw;
    z->avail_in = wlen;
    z->next_out = out;
    z->avail_out = cap;
    z->end_of_stream = 1;
    z->flush = NO_FLUSH;
    z->level = 1;
    z->level_buf = pk->level_buf;
    z->level_buf_size = sizeof pk->level_buf;
    return isal_deflate_stateless(z) == COMP_OK ? z->total_out : 0;
}

#define SAMPLE 4096u

/* Whether a deflate attempt on the whole window is worth its time. */
static int worth_trying(const unsigned char *raw, uint32_t wlen, enum window_effort effort,
                        unsigned char *tmp)
{
    if (wlen > 1 && memcmp(raw, raw + 1, wlen - 1) == 0)
        return 1;
    if (effort == WINDOW_FULL)
        return 1;
    if (effort == WINDOW_CHEAP || wlen <= SAMPLE)
        return effort == WINDOW_SAMPLED;
    uint32_t n = deflate_into(raw, SAMPLE, tmp, SAMPLE);
    return n && n < SAMPLE * 7 / 8;
}

int window_pack(const unsigned char *raw, uint32_t wlen, enum window_effort effort,
                unsigned char **out, uint32_t *zlen)
{
    unsigned char *buf = malloc(wlen > SAMPLE ? wlen : SAMPLE);
    if (!buf)
        return -ENOMEM;
    uint32_t n = wlen && worth_trying(raw, wlen, effort, buf)
                     ? deflate_into(raw, wlen, buf, wlen - 1) : 0;
    if (n == 0) {
        memcpy(buf, raw, wlen);
        n = wlen;
    } else {
        unsigned char *fit = realloc(buf, n);
        if (fit)
            buf = fit;
    }
    *out = buf;
    *zlen = n;
    return 0;
}

/* Each thread keeps an ISA-L inflate state too: 85 KiB, which zlib's inflateInit2 would
 * instead allocate (and clear) on every restart through a saved index. */
static struct tls unpackers = TLS_INIT(sizeof(struct inflate_state), NULL);

int window_unpack(const unsigned char *z, uint32_t zlen, unsigned char *raw, uint32_t wlen)
{
    if (zlen == wlen) {
        memcpy(raw, z, wlen);
        return 0;
    }
    if (zlen > wlen)
        return -EIO;
    struct inflate_state *st = tls_get(&unpackers);
    if (!st)
        return -ENOMEM;
    isal_inflate_init(st);
    st->next_in = (unsigned char *)z;
    st->avail_in = zlen;
    st->next_out = raw;
    st->avail_out = wlen;
    st->crc_flag = ISAL_DEFLATE;
    int rc = isal_inflate_stateless(st);
    return rc == ISAL_DECOMP_OK && st->total_out == wlen && st->avail_in == 0 ? 0 : -EIO;
}
