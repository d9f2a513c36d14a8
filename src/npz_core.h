/*
 * npz_core: the member table and the tree behind an npz, for the core's own tests, fuzzers
 * and tools, which check them against the archive itself. No adapter uses these: npz.h says
 * everything in file system terms. Same threads and errors as npz.h.
 */
#ifndef NPZMOUNT_NPZ_CORE_H
#define NPZMOUNT_NPZ_CORE_H

#include "namespace.h"
#include "npz.h"
#include "reader.h"
#include "zipdir.h"

const struct zip_archive *npz_zip(const struct npz *npz);
const struct ns *npz_ns(const struct npz *npz);

/* npz_read by member index instead of inode. */
ssize_t npz_read_member(struct npz *npz, uint64_t idx, void *buf, size_t len, uint64_t off,
                        enum read_mode mode, const atomic_bool *cancel,
                        struct read_pins *pins);

/* The inode of member idx, 0 when it has none (an entry for the root, say). */
uint64_t npz_member_ino(const struct npz *npz, uint64_t idx);

/* Why member idx cannot be served, once a read of it failed (or zipdir flagged it); NULL
 * while it is healthy. The string lives as long as npz. */
const char *npz_member_error(struct npz *npz, uint64_t idx);

/* What the member's index says of itself (all zero for members without one, or not read). */
void npz_member_stats(struct npz *npz, uint64_t idx, struct reader_stats *out);

/* Member idx's npy header, read (one small read or decode) and kept the first time; NULL when
 * its data does not start with a valid one, or the member cannot be read. */
struct npy_header;
const struct npy_header *npz_member_npy(struct npz *npz, uint64_t idx);

#endif
