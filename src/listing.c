/*
 * listing: see listing.h. Names come from the archive, so nothing is written as it stands:
 * the table escapes control bytes (one row stays one line), and JSON strings keep valid UTF-8
 * and write every other byte as a lone surrogate \udcXX, which is what Python's
 * os.fsdecode() makes of the same byte in a path.
 */
#include "listing.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"

/* Bytes of the valid UTF-8 sequence at s (n bytes left), 0 when there is none. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
               : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    unsigned char lo = 0x80, hi = 0xBF; /* the second byte's range excludes overlongs,
                                         * surrogates and code points past U+10FFFF */
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

static void json_string(FILE *out, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    fputc('"', out);
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(s + i, len - i);
        if (n == 0)
            fprintf(out, "\\udc%02x", s[i]);
        else if (s[i] == '"' || s[i] == '\\')
            fprintf(out, "\\%c", s[i]);
        else if (s[i] < 0x20 || s[i] == 0x7f)
            fprintf(out, "\\u%04x", s[i]);
        else
            fwrite(s + i, 1, n, out);
        i += n ? n : 1;
    }
    fputc('"', out);
}

/* Writes s for the table (to out unless NULL) and returns its printed width in bytes. */
static size_t text_field(FILE *out, const char *s, size_t len)
{
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool plain = c >= 0x20 && c != 0x7f && c != '\\';
        if (out && plain)
            fputc(c, out);
        else if (out)
            fprintf(out, c == '\\' ? "\\\\" : "\\x%02x", c);
        w += plain ? 1 : c == '\\' ? 2 : 4;
    }
    return w;
}

/* The path of member m in the mount, in a buffer that grows as needed (*buf, *cap); NULL when
 * the member has no inode or memory ran out. */
static const char *member_path(struct npz *npz, const struct npz_member_info *m, char **buf,
                               size_t *cap)
{
    if (m->ino == 0)
        return NULL;
    for (;;) {
        int rc = *cap ? npz_path(npz, m->ino, *buf, *cap) : -ENAMETOOLONG;
        if (rc != -ENAMETOOLONG)
            return rc < 0 ? NULL : *buf;
        size_t grown = *cap ? *cap * 2 : 4096;
        char *p = realloc(*buf, grown);
        if (!p)
            return NULL;
        *buf = p;
        *cap = grown;
    }
}

/* The columns of the table, in order. */
enum col { C_KEY, C_PATH, C_SIZE, C_CSIZE, C_METHOD, C_DTYPE, C_SHAPE, C_ORDER, C_N };
static const char *const col_names[C_N] = {"KEY", "PATH", "SIZE", "CSIZE", "METHOD", "DTYPE",
                                            "SHAPE", "ORDER"};
#define MAX_WIDTH 48 /* longer fields are not padded to, they just push the row along */

/* Writes one table row (to out unless NULL), and widens w to what its fields need. */
static void text_row(FILE *out, const struct npz_member_info *m, const char *path,
                     size_t w[C_N])
{
    char f[C_N][1500];
    const struct npy_header *h = m->npy;
    snprintf(f[C_SIZE], sizeof f[C_SIZE], "%llu", (unsigned long long)m->size);
    snprintf(f[C_CSIZE], sizeof f[C_CSIZE], "%llu", (unsigned long long)m->csize);
    if (m->method_name)
        snprintf(f[C_METHOD], sizeof f[C_METHOD], "%s", m->method_name);
    else
        snprintf(f[C_METHOD], sizeof f[C_METHOD], "%u", m->method);
    snprintf(f[C_ORDER], sizeof f[C_ORDER], "%s", !h ? "-" : h->fortran_order ? "F" : "C");
    if (!h || npy_format_shape(h, f[C_SHAPE], sizeof f[C_SHAPE]) < 0)
        snprintf(f[C_SHAPE], sizeof f[C_SHAPE], "-");
    for (int c = 0; c < C_N; c++) {
        const char *s = c == C_KEY ? m->name : c == C_PATH ? (path ? path : "-")
                      : c == C_DTYPE ? (h ? h->descr : "-") : f[c];
        size_t len = c == C_KEY ? m->key_len : strlen(s);
        size_t n = text_field(out, s, len);
        if (n > w[c])
            w[c] = n > MAX_WIDTH ? MAX_WIDTH : n;
        if (out && c + 1 < C_N)
            fprintf(out, "%*s", (int)(w[c] > n ? w[c] - n + 2 : 2), "");
    }
    if (out)
        fputc('\n', out);
}

static void json_row(FILE *out, const struct npz_member_info *m, const char *path)
{
    const struct npy_header *h = m->npy;
    fputs("{\"key\": ", out);
    json_string(out, m->name, m->key_len);
    fputs(", \"path\": ", out);
    if (path)
        json_string(out, path, strlen(path));
    else
        fputs("null", out);
    fprintf(out, ", \"size\": %llu, \"compressed_size\": %llu, \"method\": ",
            (unsigned long long)m->size, (unsigned long long)m->csize);
    if (m->method_name)
        fprintf(out, "\"%s\"", m->method_name);
    else
        fprintf(out, "\"%u\"", m->method);
    fprintf(out, ", \"crc32\": %lu, \"offset\": %llu, \"sozip_chunk\": ",
            (unsigned long)m->crc32, (unsigned long long)m->offset);
    if (m->sozip_chunk)
        fprintf(out, "%llu", (unsigned long long)m->sozip_chunk);
    else
        fputs("null", out);
    fputs(", \"dtype\": ", out);
    if (!h) {
        fputs("null, \"shape\": null, \"fortran_order\": null, \"npy_version\": null, "
              "\"header_len\": null}", out);
        return;
    }
    json_string(out, h->descr, strlen(h->descr));
    fputs(", \"shape\": [", out);
    for (unsigned i = 0; i < h->ndim; i++)
        fprintf(out, "%s%llu", i ? ", " : "", (unsigned long long)h->shape[i]);
    fprintf(out, "], \"fortran_order\": %s, \"npy_version\": \"%u.%u\", \"header_len\": %u}",
            h->fortran_order ? "true" : "false", h->major, h->minor, (unsigned)h->header_len);
}

/* One pass over the members: measuring (out NULL, table only) or writing. */
static void each_row(struct npz *npz, FILE *out, bool json, size_t w[C_N])
{
    struct npz_fsinfo info;
    npz_statfs(npz, &info);
    char *buf = NULL;
    size_t cap = 0;
    for (uint64_t i = 0; i < info.members; i++) {
        struct npz_member_info m;
        npz_member(npz, i, &m);
        const char *path = member_path(npz, &m, &buf, &cap);
        if (json) {
            fputs(i ? ",\n " : "\n ", out);
            json_row(out, &m, path);
        } else {
            text_row(out, &m, path, w);
        }
    }
    free(buf);
}

int listing_write(struct npz *npz, FILE *out, bool json)
{
    size_t w[C_N];
    if (json) {
        fputc('[', out);
        each_row(npz, out, true, w);
        fputs("\n]\n", out);
    } else {
        for (int c = 0; c < C_N; c++)
            w[c] = strlen(col_names[c]);
        each_row(npz, NULL, false, w);
        for (int c = 0; c < C_N; c++)
            fprintf(out, "%-*s%s", c + 1 < C_N ? (int)w[c] : 0, col_names[c],
                    c + 1 < C_N ? "  " : "\n");
        each_row(npz, out, false, w);
    }
    return fflush(out) == 0 && !ferror(out) ? 0 : -EIO;
}
