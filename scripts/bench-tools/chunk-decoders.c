/*
 * chunk-decoders: what decoding one SOZip chunk costs with each decoder npzmount could use, on
 * the members of a real archive; reader_sozip.c picks its decoder per member from this.
 *
 * Build and run (ARCHIVE written by npzmount --optimize, say):
 *   make && cc -O2 -g -std=gnu11 -Isrc scripts/bench-tools/chunk-decoders.c \
 *       build/libnpzcore.a -lz -ldeflate -lisal -o build/chunk-decoders
 *   build/chunk-decoders ARCHIVE [CHUNKS]
 * For every SOZip member: its compressed/uncompressed ratio, then the median thread CPU time
 * (the machine is shared) of decoding CHUNKS (default 200) random chunks with ISA-L
 * (isal_inflate in one call), libdeflate (a final empty block appended, as reader_sozip does)
 * and zlib (inflate with Z_SYNC_FLUSH). The input is copied into a reused buffer first, as
 * after a pread; every output is checked against zlib's.
 */
#include <isa-l/igzip_lib.h>
#include <libdeflate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "cputime.h"
#include "source.h"
#include "sozip.h"
#include "zipdir.h"

/* Times n random chunks (not the last) of one member; returns -1 on a decode mismatch. */
static int bench_member(struct source *src, const struct zip_member *zm,
                        const struct sozip_index *ix, size_t n)
{
    size_t chunk = ix->chunk, room = 2 * chunk + 64;
    unsigned char *in = malloc(room), *out = malloc(chunk), *ref = malloc(chunk);
    double *t[3] = {calloc(n, sizeof(double)), calloc(n, sizeof(double)),
                    calloc(n, sizeof(double))};
    struct libdeflate_decompressor *ld = libdeflate_alloc_decompressor();
    struct inflate_state *isal = malloc(sizeof *isal);
    z_stream zs = {0};
    int rc = in && out && ref && t[0] && t[1] && t[2] && ld && isal &&
                     inflateInit2(&zs, -15) == Z_OK ? 0 : -1;
    srand(1);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        uint64_t c = (uint64_t)rand() % (ix->nchunks - 1);
        size_t len = ix->off[c + 1] - ix->off[c];
        if (len + 2 > room || source_read(src, in, len, zm->data_off + ix->off[c]) < 0) {
            rc = -1;
            break;
        }
        double a = now();
        inflateReset(&zs);
        zs.next_in = in, zs.avail_in = (uInt)len, zs.next_out = ref, zs.avail_out = (uInt)chunk;
        inflate(&zs, Z_SYNC_FLUSH);
        t[2][i] = now() - a;
        a = now();
        isal_inflate_init(isal);
        isal->next_in = in, isal->avail_in = (uint32_t)len;
        isal->next_out = out, isal->avail_out = (uint32_t)chunk;
        int r = isal_inflate(isal);
        t[0][i] = now() - a;
        if (r < 0 || isal->avail_out || memcmp(out, ref, chunk) != 0 || zs.avail_out)
            rc = -1;
        in[len] = 0x03, in[len + 1] = 0x00; /* a final empty block */
        size_t made = 0;
        a = now();
        r = libdeflate_deflate_decompress(ld, in, len + 2, out, chunk, &made);
        t[1][i] = now() - a;
        if (r != LIBDEFLATE_SUCCESS || made != chunk || memcmp(out, ref, chunk) != 0)
            rc = -1;
    }
    if (rc == 0)
        printf("%-24s %6.2f %8zu %10.1f %10.1f %10.1f\n", zm->name,
               (double)zm->csize / (double)zm->usize, chunk, median(t[0], n) * 1e6,
               median(t[1], n) * 1e6, median(t[2], n) * 1e6);
    else
        printf("%-24s decode mismatch\n", zm->name);
    inflateEnd(&zs);
    libdeflate_free_decompressor(ld);
    free(isal), free(in), free(out), free(ref), free(t[0]), free(t[1]), free(t[2]);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s ARCHIVE [CHUNKS]\n", argv[0]);
        return 2;
    }
    size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 200;
    char msg[256];
    struct source *src;
    struct zip_archive za;
    if (source_open(argv[1], NULL, &src, msg, sizeof msg) < 0 ||
        zip_open(src, &za, msg, sizeof msg) < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], msg);
        return 1;
    }
    printf("%-24s %6s %8s %10s %10s %10s\n", "member", "ratio", "chunk", "isal us",
           "libdeflate", "zlib us");
    int rc = 0;
    for (uint64_t i = 0; i < za.count; i++) {
        struct sozip_index ix;
        if (za.members[i].method != 8 ||
            sozip_load(src, &za.members[i], NULL, &ix, msg, sizeof msg) < 0)
            continue;
        if (ix.nchunks > 1 && bench_member(src, &za.members[i], &ix, n ? n : 1) < 0)
            rc = 1;
        sozip_index_free(&ix, NULL);
    }
    zip_close(&za);
    source_close(src);
    return rc;
}
