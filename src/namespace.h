/*
 * namespace: the directory tree the mount shows, built once from the member table.
 *
 * Inode numbers are dense: 1 is the root (FUSE_ROOT_ID), every other node is 2..count, in a
 * deterministic order (the same archive always gives the same numbers).
 *
 * Naming rule (also in the man page): a name that can exist on Linux appears as it is. A member
 * name is split at '/'; empty, '.' and '..' components are dropped, so nothing can appear
 * outside the mount; NUL bytes become '_'. Every prefix of a name is a directory, whether or
 * not the archive has an entry for it. A name ending in '/' is a directory entry, unless the
 * member holds data (uncompressed size > 0): zipfile and numpy read those bytes, so it is a
 * file, named as if the final '/' were not there. A file left with no name is called '_'.
 * Only a name that cannot exist as it is changes, the same way every time: a component longer
 * than 255 bytes is cut to 255 (at a UTF-8 character boundary when there is one, and keeping
 * its extension: a final '.xyz' of at most 16 bytes); when two files end up with the same
 * path, the LAST one in the archive (the one zipfile and numpy read) keeps it and the others
 * become 'stem~1.ext', 'stem~2.ext', ... counting backwards, the stem cut to fit 255 bytes; a
 * file whose path is also a directory is renamed the same way (the directory keeps the name).
 * A file that keeps its own path never loses it to a cut or suffixed one. A cut that leaves
 * '.' or '..' gives '_'.
 *
 * Ownership and threads: ns_build returns a tree the caller frees with ns_free; it is
 * immutable, so any number of threads may call the lookups at once. Names point into the tree.
 */
#ifndef NPZMOUNT_NAMESPACE_H
#define NPZMOUNT_NAMESPACE_H

#include <stdbool.h>
#include <stdint.h>

#include "zipdir.h"

#define NS_ROOT 1
#define NS_NO_MEMBER UINT64_MAX

struct ns_node {
    const char *name;        /* one path component ("" for the root) */
    uint64_t parent;         /* inode of the parent; the root is its own parent */
    uint64_t member;         /* index into the member table, or NS_NO_MEMBER */
    uint64_t first_child;    /* for directories: index into ns.children */
    uint64_t nchildren;
    bool is_dir;
};

struct ns;

/* Builds the tree for za; returns 0 or -ENOMEM. Expected time is linear in the total length
 * of the names, whatever they are (crafted collisions and ~N suffixes included). */
int ns_build(const struct zip_archive *za, struct ns **out);
void ns_free(struct ns *ns);

/* The node of inode ino, or NULL when no such inode exists. */
const struct ns_node *ns_get(const struct ns *ns, uint64_t ino);

/* The inode named name in directory parent, or 0 when there is none. */
uint64_t ns_lookup(const struct ns *ns, uint64_t parent, const char *name);

/* The i-th child inode of directory dir (0 <= i < nchildren). */
uint64_t ns_child(const struct ns *ns, const struct ns_node *dir, uint64_t i);

/* Number of inodes, root included. */
uint64_t ns_count(const struct ns *ns);

#endif
