/*
 * forest: what a mount serves, in file system terms and with no FUSE in it: one archive
 * (forest_wrap: every call goes to its npz), or a tree of many (forest_open: a directory, or
 * several archives named together) in which every .npz or .zip file is a directory of its
 * members, other regular files are served as they are, and subdirectories recurse. Symbolic
 * links and special files are left out. The tree is read once, at forest_open: files added
 * or removed later do not show.
 *
 * Archives and plain files are opened on first use (a lookup, listing, stat or read inside
 * them) and closed again, least recently used first, when more than max_open are open; all
 * archives share one cache and one pool of decode workers (npz_shared, npz.h). A closed one
 * keeps nothing but its place in the tree. An archive that cannot be opened is logged once
 * and reads as an empty directory for the rest of the mount; so does one whose size changed
 * between a close and a reopen (its inode numbers would no longer hold).
 *
 * Inodes: the tree's own nodes are numbered 1.. (FOREST_ROOT is the root); the members of
 * archive k (1-based, in tree order) are k << FOREST_ARCH_SHIFT | i, i being the member's
 * npz inode, which an unchanged archive always gives again (npz.h): numbers hold across a
 * close and reopen. Every number stays below 2^48.
 *
 * Errors: negative errno, as in npz.h. Threads: like npz.h (any number of threads once open;
 * forest_close last). Names and attributes handed to a readdir callback live for that call.
 */
#ifndef NPZMOUNT_FOREST_H
#define NPZMOUNT_FOREST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "npz.h"

#define FOREST_ROOT NPZ_ROOT
#define FOREST_ARCH_SHIFT 28      /* tree nodes and an archive's inodes stay below 2^28 */
#define FOREST_MAX_ARCHIVES ((1u << 20) - 1)
#define FOREST_DEFAULT_MAX_OPEN 64 /* archives and plain files open at once */

struct forest;

/* A forest of the one archive npz, which it then owns. Returns 0 or -ENOMEM (npz closed). */
int forest_wrap(struct npz *npz, struct forest **out);

/* The tree of paths[0..n): with one directory, that directory's tree; else a root holding
 * each path under its last component (directories recurse). opt applies to every archive
 * (its shared field is ignored: the forest makes its own). max_open 0: the default. Returns
 * 0, or a negative errno with a one-line reason in msg (a path that is missing or neither a
 * file nor a directory, two paths with one name, too many archives). */
int forest_open(const char *const *paths, size_t n, const struct npz_options *opt,
                unsigned max_open, struct forest **out, char *msg, size_t msg_len);

void forest_close(struct forest *f);

/* npz_start, npz_shutdown and npz_watch of a wrapped archive; for a tree, start does
 * nothing, shutdown makes every read give up with -EINTR and drains the decode workers, and
 * there is no watch (NULL): each archive notices its own changes while open. */
void forest_start(struct forest *f);
void forest_shutdown(struct forest *f);
struct archive_watch *forest_watch(struct forest *f);

/* For a tree: archive_bytes is the bytes of all its files, inodes its own nodes, members its
 * archives. */
void forest_statfs(struct forest *f, struct npz_fsinfo *out);

int forest_lookup(struct forest *f, uint64_t dir, const char *name, uint64_t *ino);
int forest_getattr(struct forest *f, uint64_t ino, struct npz_attr *out);

/* Calls fn with the path of every archive of a tree (none for forest_wrap's), in inode order,
 * without opening any; stops at fn's first nonzero return, which it returns, else 0. */
int forest_archives(struct forest *f, int (*fn)(void *ctx, const char *path), void *ctx);

/* Calls fn for entries pos, pos + 1, ... of directory dir (positions as npz_readdir's) until
 * fn returns nonzero or the entries end. Returns 0, -ENOENT or -ENOTDIR. */
typedef int forest_entry_fn(void *ctx, uint64_t pos, const char *name,
                            const struct npz_attr *attr);
int forest_readdir(struct forest *f, uint64_t dir, uint64_t pos, forest_entry_fn *fn,
                   void *ctx);

/* As npz.h; the tree's own nodes have no extended attributes. */
ssize_t forest_listxattr(struct forest *f, uint64_t ino, char *buf, size_t size);
ssize_t forest_getxattr(struct forest *f, uint64_t ino, const char *name, char *buf,
                        size_t size);

/* As npz_read; a tree's archive may be closed once the read returns, so there every byte is
 * copied into buf, and pins (when not NULL) gets buf as its one slice. */
ssize_t forest_read(struct forest *f, uint64_t ino, void *buf, size_t len, uint64_t off,
                    enum read_mode mode, const atomic_bool *cancel, struct read_pins *pins);

/* npz_locate, also for plain files. When it returns more than 0, *hold keeps *fd open until
 * the caller, done reading it, passes *hold to forest_release. */
struct forest_hold;
ssize_t forest_locate(struct forest *f, uint64_t ino, size_t len, uint64_t off, int *fd,
                      uint64_t *pos, struct forest_hold **hold);
void forest_release(struct forest *f, struct forest_hold *hold);

/* npz_submit and npz_wake, on the forest's decode workers. */
int forest_submit(struct forest *f, struct sched_job *job);
void forest_wake(struct forest *f);

#endif
