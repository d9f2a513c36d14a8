/*
 * gen_index_seeds: writes the seed corpus of fuzz_index, valid index files made by ixf_save.
 *
 * Usage: gen_index_seeds DIR   (DIR/seeds-index/ is emptied of *.npzidx and refilled)
 * Each seed indexes a made-up member: checkpoints every `step` output bytes, windows that are
 * zlib-compressed text (small, so seeds stay a few KiB), piece CRCs over made-up data. The
 * loader never decodes, so only the shape has to be right; the shapes cover a complete index,
 * a partial one, the start point alone, uncompressed-size windows and many short pieces.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "index_file.h"

struct shape {
    const char *name;
    uint64_t usize, step, piece, indexed_out;
    uint32_t wlen; /* raw window length for points past 32 KiB */
    int raw;       /* windows stored as is (zlen == wlen) */
};

static const struct shape shapes[] = {
    {"complete", 400000, 40000, 131072, 400000, 32768, 0},
    {"partial", 1000000, 65536, 65536, 262144, 32768, 0},
    {"start-only", 70000, 32768, 4096, 0, 32768, 0},
    {"raw-windows", 120000, 33000, 4096, 120000, 200, 1},
    {"many-pieces", 200000, 50000, 4096, 200000, 1000, 0},
};

static int write_seed(const char *dir, const struct shape *s, unsigned seq)
{
    static unsigned char text[IXF_WINDOW], zw[64][IXF_MAX_ZWIN];
    static struct ixf_point pts[64];
    static uint32_t crcs[1024];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = (unsigned char)("npz index seed "[i % 15] + (i / 997) % 3);
    struct ixf_member m = {.member = seq, .crc32 = 0x1234567u * seq, .usize = s->usize,
                           .csize = s->usize / 3, .span = s->step, .piece = s->piece,
                           .indexed_out = s->indexed_out, .pts = pts, .piece_crc = crcs};
    pts[0] = (struct ixf_point){0};
    m.npoints = 1;
    for (uint64_t out = s->step; out < s->usize && out <= s->indexed_out; out += s->step) {
        struct ixf_point *p = &pts[m.npoints];
        uLongf zl = IXF_MAX_ZWIN;
        uint32_t wlen = s->wlen < out ? s->wlen : (uint32_t)out;
        if (s->raw) {
            memcpy(zw[m.npoints], text, wlen);
            zl = wlen;
        } else if (compress(zw[m.npoints], &zl, text, wlen) != Z_OK) {
            return -1;
        }
        *p = (struct ixf_point){.out = out, .in = out / 3 - m.npoints, .bits = m.npoints % 8,
                                .wlen = wlen, .zlen = (uint32_t)zl, .zwin = zw[m.npoints]};
        m.npoints++;
    }
    if (m.npoints > 1 && s->indexed_out < s->usize)
        m.indexed_out = pts[m.npoints - 1].out;
    m.npieces = ixf_piece_count(m.usize, m.piece, m.indexed_out);
    for (uint64_t i = 0; i < m.npieces; i++)
        crcs[i] = (uint32_t)crc32(0, (const unsigned char *)&i, sizeof i);
    struct ixf_identity id;
    for (int i = 0; i < 16; i++)
        id.id[i] = (unsigned char)(seq * 31 + (unsigned)i);
    char why[256];
    if (ixf_save(dir, &id, &m, why, sizeof why) < 0) {
        fprintf(stderr, "gen_index_seeds: %s: %s\n", s->name, why);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    char dir[4096];
    if (argc != 2 || snprintf(dir, sizeof dir, "%s/seeds-index", argv[1]) >= (int)sizeof dir) {
        fprintf(stderr, "usage: gen_index_seeds DIR\n");
        return 2;
    }
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[8192];
        if (strstr(e->d_name, ".npzidx") &&
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path)
            unlink(path);
    }
    if (d)
        closedir(d);
    for (unsigned i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (write_seed(dir, &shapes[i], i + 1) < 0)
            return 1;
    return 0;
}
