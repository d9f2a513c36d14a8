/* Unit tests for window: what window_pack makes, zlib (the reference) inflates back to the
 * window; what zlib deflates raw, window_unpack reads; and a damaged, truncated, padded or
 * mis-sized packed window is -EIO, never a wrong window. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../../src/window.h"
#include "check.h"

#define WLEN 32768u

/* Windows of several kinds: zeros, one byte, text-like, int64 arange, float noise. */
static void make_window(int kind, unsigned char *w)
{
    unsigned state = 12345u + (unsigned)kind;
    for (uint32_t i = 0; i < WLEN; i++) {
        state = state * 1103515245u + 12345u;
        switch (kind) {
        case 0: w[i] = 0; break;
        case 1: w[i] = 0xAB; break;
        case 2: w[i] = (unsigned char)("the quick brown fox "[i % 20] ^ (i / 4096)); break;
        case 3: w[i] = (unsigned char)((uint64_t)(i / 8) >> (8 * (i % 8))); break;
        default: w[i] = (unsigned char)(state >> 16); break;
        }
    }
}

/* zlib's raw inflate of z into out (cap bytes): the length, or -1 unless the stream ends. */
static long zlib_inflate(const unsigned char *z, uint32_t zlen, unsigned char *out, uint32_t cap)
{
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -15) != Z_OK)
        return -1;
    s.next_in = (unsigned char *)z;
    s.avail_in = zlen;
    s.next_out = out;
    s.avail_out = cap;
    int rc = inflate(&s, Z_FINISH);
    long n = rc == Z_STREAM_END ? (long)s.total_out : -1;
    inflateEnd(&s);
    return n;
}

/* zlib's raw deflate of w at level: the packed length in z. */
static uint32_t zlib_deflate(const unsigned char *w, int level, unsigned char *z, uint32_t cap)
{
    z_stream s;
    memset(&s, 0, sizeof s);
    if (deflateInit2(&s, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    s.next_in = (unsigned char *)w;
    s.avail_in = WLEN;
    s.next_out = z;
    s.avail_out = cap;
    uint32_t n = deflate(&s, Z_FINISH) == Z_STREAM_END ? (uint32_t)s.total_out : 0;
    deflateEnd(&s);
    return n;
}

static void test_pack_inflates_with_zlib(void)
{
    static unsigned char w[WLEN], back[WLEN + 16];
    for (int kind = 0; kind < 5; kind++) {
        make_window(kind, w);
        for (int effort = WINDOW_CHEAP; effort <= WINDOW_FULL; effort++) {
            check_context("kind %d effort %d", kind, effort);
            unsigned char *z = NULL;
            uint32_t zlen = 0;
            if (!CHECK(window_pack(w, WLEN, (enum window_effort)effort, &z, &zlen) == 0))
                continue;
            CHECK(zlen <= WLEN);
            if (zlen < WLEN)
                CHECK_EQ_I64(zlib_inflate(z, zlen, back, sizeof back), WLEN);
            else
                memcpy(back, z, WLEN);
            CHECK_EQ_MEM(back, WLEN, w, WLEN);
            if (kind <= 1 || effort == WINDOW_FULL)
                CHECK(kind >= 3 || zlen < WLEN / 4); /* what compresses well is compressed */
            memset(back, 0, sizeof back);
            CHECK_EQ_I64(window_unpack(z, zlen, back, WLEN), 0);
            CHECK_EQ_MEM(back, WLEN, w, WLEN);
            free(z);
        }
    }
    check_context("%s", "");
}

static void test_unpack_reads_zlib_streams(void)
{
    static unsigned char w[WLEN], z[2 * WLEN], back[WLEN];
    for (int kind = 0; kind < 4; kind++) {
        make_window(kind, w);
        for (int level = 1; level <= 9; level += 4) {
            check_context("kind %d level %d", kind, level);
            uint32_t zlen = zlib_deflate(w, level, z, sizeof z);
            if (!CHECK(zlen > 0 && zlen < WLEN))
                continue;
            memset(back, 0, sizeof back);
            CHECK_EQ_I64(window_unpack(z, zlen, back, WLEN), 0);
            CHECK_EQ_MEM(back, WLEN, w, WLEN);
        }
    }
    check_context("%s", "");
}

static void test_bad_packed_windows(void)
{
    static unsigned char w[WLEN], z[2 * WLEN], back[WLEN];
    make_window(2, w);
    uint32_t zlen = zlib_deflate(w, 6, z, sizeof z);
    if (!CHECK(zlen > 16 && zlen < WLEN))
        return;
    /* too short or too long an output, a stream cut short, a length past the window */
    CHECK_EQ_I64(window_unpack(z, zlen, back, WLEN - 1), -EIO);
    CHECK_EQ_I64(window_unpack(z, zlen - 8, back, WLEN), -EIO);
    CHECK_EQ_I64(window_unpack(z, WLEN + 1, back, WLEN), -EIO);
    z[zlen] = 0;  /* a byte after the stream's end */
    CHECK_EQ_I64(window_unpack(z, zlen + 1, back, WLEN), -EIO);
    /* every byte flipped in turn: an error, or (when the flip still parses) never silence
     * about a window of the wrong length */
    unsigned errors = 0;
    for (uint32_t i = 0; i < zlen; i++) {
        z[i] ^= 0x5A;
        int rc = window_unpack(z, zlen, back, WLEN);
        long ref = zlib_inflate(z, zlen, (unsigned char[WLEN + 1]){0}, WLEN + 1);
        check_context("flip at %u", i);
        if (rc == 0)
            CHECK_EQ_I64(ref, WLEN); /* zlib, too, reads a whole window from it */
        else
            errors++;
        z[i] ^= 0x5A;
    }
    check_context("%s", "");
    CHECK(errors > zlen / 2);
}

int main(void)
{
    RUN_TEST(test_pack_inflates_with_zlib);
    RUN_TEST(test_unpack_reads_zlib_streams);
    RUN_TEST(test_bad_packed_windows);
    return check_summary("test_window");
}
