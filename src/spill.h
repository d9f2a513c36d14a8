/*
 * spill: an append-only scratch file for checkpoint windows that should not live in memory.
 *
 * A saved index is worth most when its checkpoints are close (a random read then decodes
 * little), but 32 KiB per checkpoint is too much memory at a fine spacing. The first pass puts
 * the windows of its extra, fine checkpoints here instead; restarts read them back, and saving
 * copies them into the index file. The file is unlinked from the start (O_TMPFILE, else a
 * temporary name removed at once), so nothing is left behind by a crash; the kernel's page
 * cache, not the daemon, holds what is hot. It only grows: at most 32 KiB per fine checkpoint.
 *
 * Threads: every function may be called concurrently (one lock; reads of what already
 * reached the file do without it). Errors are negative errno values. A spill holds 1 MiB
 * of appends in memory before writing them out.
 */
#ifndef NPZMOUNT_SPILL_H
#define NPZMOUNT_SPILL_H

#include <stddef.h>
#include <stdint.h>

struct spill;

/* Creates the scratch file in dir. Returns 0 or a negative errno. */
int spill_open(const char *dir, struct spill **out);
void spill_close(struct spill *s);

/* Appends len bytes; *off says where they went. */
int spill_put(struct spill *s, const void *buf, size_t len, uint64_t *off);

/* Reads back len bytes put at off. -EIO when the file is shorter. */
int spill_get(struct spill *s, void *buf, size_t len, uint64_t off);

/* Bytes appended so far. */
uint64_t spill_size(struct spill *s);

#endif
