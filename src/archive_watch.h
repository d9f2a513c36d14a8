/*
 * archive_watch: notices that the mounted archive is no longer the file it was when mounted,
 * so that no read serves bytes of another version. No FUSE in here.
 *
 * A change is any of: the open file's size, mtime or ctime moved (ctime cannot be set back by
 * programs, so a same-size rewrite with the mtime put back is caught; so are chmod, link and
 * unlink, which cannot be told from it), or the archive's path now names another file or
 * nothing (a file renamed over it). Once noticed, the change is for good ("latched"): one
 * line is logged and the hook, if any, is called once.
 *
 * Changes are noticed by archive_watch_changed (one fstat; meant to be called around every
 * read) and, after archive_watch_start, by a thread that watches the file and its directory
 * with inotify, so that a change is noticed even when no read arrives. inotify is best effort
 * (without it, the next read notices).
 *
 * Errors: negative errno. Threads: archive_watch_changed may be called from any number of
 * threads at once; start and stop from one thread; free last.
 */
#ifndef NPZMOUNT_ARCHIVE_WATCH_H
#define NPZMOUNT_ARCHIVE_WATCH_H

#include <stdbool.h>

struct archive_watch;

/* Called once, by whichever thread notices the change first; must not block. */
typedef void (*archive_watch_hook)(void *arg);

/* Takes the snapshot of fd (the open archive, still owned by the caller) and remembers where
 * path (as given to open it) lives, resolved now: a relative path stays valid after a chdir. */
int archive_watch_new(int fd, const char *path, struct archive_watch **out);

/* Stops the thread if running, and frees. */
void archive_watch_free(struct archive_watch *w);

/* The functions below accept NULL (no watch: a remote archive), which never changes. */

/* True once the archive is known to have changed. */
bool archive_watch_changed(struct archive_watch *w);

/* Registers hook (called at once if the change is already known) and starts the inotify
 * thread. Call it in the process that will serve (threads do not survive a fork). The thread
 * inherits the caller's signal mask. Returns 0, or a negative errno if no thread could be
 * made (the hook is registered all the same). */
int archive_watch_start(struct archive_watch *w, archive_watch_hook hook, void *arg);

/* Joins the thread and unregisters the hook: neither runs after this returns. Idempotent. */
void archive_watch_stop(struct archive_watch *w);

#endif
