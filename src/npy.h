/*
 * npy: the header of a .npy file (numpy's format: magic "\x93NUMPY", version, HEADER_LEN, then
 * a Python dict literal with 'descr', 'fortran_order' and 'shape'), parsed from bytes the
 * caller read. The bytes come from an archive anyone may have written: every length is
 * bounded here and nothing is allocated in proportion to what a header claims.
 *
 * Errors: negative errno; -EINVAL for anything that is not a header numpy would accept (within
 * the bounds below). Threads: no shared state. npy_parse's result owns descr (npy_free).
 */
#ifndef NPZMOUNT_NPY_H
#define NPZMOUNT_NPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NPY_PREAMBLE 12 /* enough bytes to know a header's size (npy_header_size) */
/* Headers larger than this are refused: numpy itself refuses more than 10,000 bytes unless
 * told otherwise, and version 1.0 cannot describe more than this. */
#define NPY_HEADER_MAX (65535 + 10)
#define NPY_MAX_DIMS 64 /* numpy's NPY_MAXDIMS */

struct npy_header {
    unsigned major, minor;    /* format version: 1.0, 2.0 or 3.0 */
    uint32_t header_len;      /* the HEADER_LEN field: the dict and its padding */
    uint32_t data_off;        /* where the array data starts: preamble plus header_len */
    char *descr;              /* dtype.str for plain types ('<f8'), or the list literal of a
                               * structured type, as written; NUL-terminated, owned */
    bool fortran_order;
    unsigned ndim;
    uint64_t shape[NPY_MAX_DIMS];
};

/* The whole header's size (data_off) that the first len bytes announce: needs the magic and
 * version (8 bytes) and the HEADER_LEN field (2 bytes in 1.0, 4 in 2.0 and 3.0). Returns the
 * size, -EAGAIN when len is too short to tell, -EINVAL when it is not an npy header or larger
 * than NPY_HEADER_MAX. */
int64_t npy_header_size(const unsigned char *buf, size_t len);

/* Parses the header at buf (len bytes, at least the header's size). Returns 0 or -EINVAL
 * (also for a truncated header), -ENOMEM. */
int npy_parse(const unsigned char *buf, size_t len, struct npy_header *out);

void npy_free(struct npy_header *h);

/* The shape as Python writes a tuple: "()", "(5,)", "(1000, 3)". Returns the length, or
 * -ENOSPC when out is too small (64 dimensions of 20 digits need 1,410 bytes). */
int npy_format_shape(const struct npy_header *h, char *out, size_t len);

#endif
