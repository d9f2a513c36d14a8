/*
 * npz_meta: what the core says about a member besides its bytes: npz_member (the rows of
 * `npzmount --list`) and the extended attributes, which are formatted from the same facts.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "npy.h"
#include "npz_core.h"

static const char *method_name(unsigned method)
{
    switch (method) {
    case ZIP_METHOD_STORED: return "stored";
    case ZIP_METHOD_DEFLATED: return "deflated";
    case ZIP_METHOD_BZIP2: return "bzip2";
    case ZIP_METHOD_LZMA: return "lzma";
    case ZIP_METHOD_ZSTD: return "zstd";
    case ZIP_METHOD_XZ: return "xz";
    case ZIP_METHOD_PPMD: return "ppmd";
    default: return NULL;
    }
}

/* The facts of member idx; its npy header only when with_npy (reading it may decode). */
static void member_info(struct npz *npz, uint64_t idx, bool with_npy,
                        struct npz_member_info *out)
{
    const struct zip_member *zm = &npz_zip(npz)->members[idx];
    bool npy_name = zm->name_len >= 4 && memcmp(zm->name + zm->name_len - 4, ".npy", 4) == 0;
    *out = (struct npz_member_info){
        .name = zm->name, .name_len = zm->name_len, .key_len = zm->name_len - (npy_name ? 4 : 0),
        .ino = npz_member_ino(npz, idx), .size = zm->usize, .csize = zm->csize,
        .offset = zm->header_off, .crc32 = zm->crc32, .method = zm->method,
        .method_name = method_name(zm->method),
        .npy = with_npy ? npz_member_npy(npz, idx) : NULL,
    };
}

int npz_member(struct npz *npz, uint64_t idx, struct npz_member_info *out)
{
    if (idx >= npz_zip(npz)->count)
        return -ENOENT;
    member_info(npz, idx, true, out);
    struct reader_stats rs; /* reading the npy header attached the member's reader */
    npz_member_stats(npz, idx, &rs);
    out->sozip_chunk = rs.sozip_chunk;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Extended attributes. */

enum xa_id {
    XA_NPY_DTYPE, XA_NPY_SHAPE, XA_NPY_FORTRAN, XA_NPY_VERSION, XA_NPY_HEADER_LEN, XA_NPY_KEY,
    XA_ZIP_NAME, XA_ZIP_METHOD, XA_ZIP_CSIZE, XA_ZIP_CRC32, XA_ZIP_OFFSET,
    XA_CHECKPOINTS, XA_INDEX_BYTES, XA_INDEXED, XA_COMPLETE, XA_DECODED, XA_ERROR,
    XA_SOZIP_CHUNK, XA_N
};
#define XA_FIRST_ZIP XA_ZIP_NAME /* the ones before are the npy header's */

static const char *const xa_names[XA_N] = {
    "user.npy.dtype", "user.npy.shape", "user.npy.fortran_order", "user.npy.version",
    "user.npy.header_len", "user.npy.key",
    "user.zip.name", "user.zip.method", "user.zip.compressed_size", "user.zip.crc32",
    "user.zip.offset",
    "user.npzmount.checkpoints", "user.npzmount.index_bytes", "user.npzmount.indexed",
    "user.npzmount.complete", "user.npzmount.decoded", "user.npzmount.error",
    "user.npzmount.sozip_chunk",
};

/* One value: p and len, pointing into text for the formatted ones. */
struct xval {
    const char *p;
    size_t len;
    char text[1500]; /* the longest is a 64-dimension shape */
};

static bool set_text(struct xval *v, int n)
{
    v->p = v->text;
    v->len = n < 0 ? 0 : (size_t)n;
    return n >= 0 && (size_t)n < sizeof v->text;
}

static bool set_bytes(struct xval *v, const char *p, size_t len)
{
    v->p = p;
    v->len = len;
    return true;
}

static bool npy_value(const struct npz_member_info *mi, enum xa_id id, struct xval *v)
{
    const struct npy_header *h = mi->npy;
    if (!h)
        return false;
    switch (id) {
    case XA_NPY_DTYPE: return set_bytes(v, h->descr, strlen(h->descr));
    case XA_NPY_SHAPE: return set_text(v, npy_format_shape(h, v->text, sizeof v->text));
    case XA_NPY_FORTRAN: return set_bytes(v, h->fortran_order ? "True" : "False",
                                          h->fortran_order ? 4 : 5);
    case XA_NPY_VERSION:
        return set_text(v, snprintf(v->text, sizeof v->text, "%u.%u", h->major, h->minor));
    case XA_NPY_HEADER_LEN:
        return set_text(v, snprintf(v->text, sizeof v->text, "%u", (unsigned)h->header_len));
    default: return set_bytes(v, mi->name, mi->key_len);
    }
}

static bool index_value(struct npz *npz, uint64_t idx, const struct npz_member_info *mi,
                        enum xa_id id, struct xval *v)
{
    if (id == XA_ERROR) {
        const char *why = npz_member_error(npz, idx);
        return why && set_bytes(v, why, strlen(why));
    }
    if (mi->method == ZIP_METHOD_STORED || npz_zip(npz)->members[idx].err)
        return false;
    struct reader_stats rs;
    npz_member_stats(npz, idx, &rs);
    if (id == XA_SOZIP_CHUNK && !rs.sozip_chunk) /* only on members served by a SOZip index */
        return false;
    uint64_t n = id == XA_SOZIP_CHUNK ? rs.sozip_chunk : id == XA_CHECKPOINTS ? rs.checkpoints : id == XA_INDEX_BYTES ? rs.index_bytes
               : id == XA_INDEXED ? rs.indexed : id == XA_DECODED ? rs.decoded
               : rs.indexed == mi->size;
    return set_text(v, snprintf(v->text, sizeof v->text, "%llu", (unsigned long long)n));
}

/* Attribute id of member idx into v; false when the member has none such. */
static bool xa_value(struct npz *npz, uint64_t idx, enum xa_id id, struct xval *v)
{
    struct npz_member_info mi;
    member_info(npz, idx, id < XA_FIRST_ZIP, &mi);
    if (id < XA_FIRST_ZIP)
        return npy_value(&mi, id, v);
    if (id > XA_ZIP_OFFSET)
        return index_value(npz, idx, &mi, id, v);
    unsigned long long n = id == XA_ZIP_CSIZE ? mi.csize : mi.offset;
    switch (id) {
    case XA_ZIP_NAME: return set_bytes(v, mi.name, mi.name_len);
    case XA_ZIP_METHOD:
        return mi.method_name ? set_bytes(v, mi.method_name, strlen(mi.method_name))
                              : set_text(v, snprintf(v->text, sizeof v->text, "%u", mi.method));
    case XA_ZIP_CRC32:
        return set_text(v, snprintf(v->text, sizeof v->text, "%08x", (unsigned)mi.crc32));
    default: return set_text(v, snprintf(v->text, sizeof v->text, "%llu", n));
    }
}

/* The member behind inode ino: its index, -ENODATA for a directory without an entry, or
 * -ENOENT. */
static int64_t ino_member(struct npz *npz, uint64_t ino)
{
    const struct ns_node *n = ns_get(npz_ns(npz), ino);
    if (!n)
        return -ENOENT;
    return n->member == NS_NO_MEMBER ? -ENODATA : (int64_t)n->member;
}

/* The xattr convention: size 0 asks for the length. */
static ssize_t copy_out(const char *p, size_t len, char *buf, size_t size)
{
    if (size == 0)
        return (ssize_t)len;
    if (size < len)
        return -ERANGE;
    memcpy(buf, p, len);
    return (ssize_t)len;
}

ssize_t npz_getxattr(struct npz *npz, uint64_t ino, const char *name, char *buf, size_t size)
{
    int64_t idx = ino_member(npz, ino);
    if (idx < 0)
        return idx;
    for (int id = 0; id < XA_N; id++) {
        struct xval v;
        if (strcmp(name, xa_names[id]) == 0)
            return xa_value(npz, (uint64_t)idx, (enum xa_id)id, &v)
                       ? copy_out(v.p, v.len, buf, size)
                       : -ENODATA;
    }
    return -ENODATA;
}

ssize_t npz_listxattr(struct npz *npz, uint64_t ino, char *buf, size_t size)
{
    int64_t idx = ino_member(npz, ino);
    if (idx == -ENODATA)
        return 0;
    if (idx < 0)
        return idx;
    char list[1024]; /* every name once: about 400 bytes */
    size_t used = 0;
    for (int id = 0; id < XA_N; id++) {
        struct xval v;
        if (!xa_value(npz, (uint64_t)idx, (enum xa_id)id, &v))
            continue;
        size_t l = strlen(xa_names[id]) + 1;
        memcpy(list + used, xa_names[id], l);
        used += l;
    }
    return copy_out(list, used, buf, size);
}
