/*
 * forest: see forest.h. The tree is a table of nodes built breadth first, so that each
 * directory's children are consecutive and sorted by name (a lookup is a binary search).
 * Every archive and plain file has a slot: closed, opening, open (in the LRU list) or broken.
 * One lock guards the slots; opening and closing happen outside it, and a slot in use
 * (pinned) is never closed, so an npz or descriptor lives as long as a call needs it.
 */
#define _GNU_SOURCE /* fstatat flags, strcasecmp */
#include "forest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "npz_shared.h"
#include "pins.h"

#define LOW_MASK ((UINT64_C(1) << FOREST_ARCH_SHIFT) - 1)
#define NO_SLOT UINT32_MAX

enum kind { K_DIR, K_FILE, K_ARCHIVE };

struct node {
    char *name;      /* last component ("" for the root) */
    char *path;      /* what to open or scan */
    uint64_t parent; /* inode */
    uint64_t first;  /* directories: the first child's inode */
    uint32_t count;  /* directories: number of children */
    uint32_t slot;   /* files and archives */
    enum kind kind;
    uint64_t size;
    time_t mtime;
};

enum state { CLOSED, OPENING, OPEN, BROKEN };

struct slot {
    uint64_t node; /* inode */
    enum state state;
    unsigned pins;
    struct npz *npz; /* archives */
    int fd;          /* plain files */
    uint32_t prev, next; /* LRU list of open slots, most recent first */
};

struct forest {
    struct npz *single; /* forest_wrap: all calls go here */
    struct node *nodes; /* inode i is nodes[i - 1] */
    uint64_t nnodes, cap;
    struct slot *slots;
    uint32_t nslots, narchives;
    uint64_t total_bytes;
    struct npz_options opt;
    struct npz_shared *shared;
    unsigned max_open, nopen;
    uint32_t head, tail;
    pthread_mutex_t lock;
    pthread_cond_t changed; /* a slot left OPENING */
    atomic_bool shutdown;
};

/* ------------------------------------------------------------------------------------------ */
/* Building the tree. */

static bool is_archive_name(const char *name)
{
    size_t l = strlen(name);
    return l > 4 && (strcasecmp(name + l - 4, ".npz") == 0 || strcasecmp(name + l - 4, ".zip") == 0);
}

/* Appends a node; returns its inode, or 0 when out of memory or past the inode limit. */
static uint64_t add_node(struct forest *f, const char *name, const char *path, uint64_t parent,
                         const struct stat *st)
{
    if (f->nnodes + 1 >= LOW_MASK)
        return 0;
    if (f->nnodes == f->cap) {
        uint64_t cap = f->cap ? f->cap * 2 : 64;
        struct node *n = realloc(f->nodes, cap * sizeof *n);
        if (!n)
            return 0;
        f->nodes = n;
        f->cap = cap;
    }
    struct node *n = &f->nodes[f->nnodes];
    *n = (struct node){.name = strdup(name), .path = strdup(path), .parent = parent,
                       .slot = NO_SLOT, .mtime = st->st_mtime};
    if (!n->name || !n->path) {
        free(n->name);
        free(n->path);
        return 0;
    }
    if (S_ISDIR(st->st_mode))
        n->kind = K_DIR;
    else {
        n->kind = is_archive_name(name) ? K_ARCHIVE : K_FILE;
        n->size = (uint64_t)st->st_size;
        f->total_bytes += n->size;
    }
    return ++f->nnodes;
}

/* Gives file or archive node ino a slot. Returns 0 or a negative errno. */
static int add_slot(struct forest *f, uint64_t ino)
{
    struct node *n = &f->nodes[ino - 1];
    if (n->kind == K_DIR)
        return 0;
    if (f->nslots == FOREST_MAX_ARCHIVES) /* the archive number is the slot's */
        return -EMFILE;
    struct slot *s = realloc(f->slots, (f->nslots + 1) * sizeof *s);
    if (!s)
        return -ENOMEM;
    f->slots = s;
    f->slots[f->nslots] = (struct slot){.node = ino, .fd = -1, .prev = NO_SLOT, .next = NO_SLOT};
    n->slot = f->nslots++;
    f->narchives += n->kind == K_ARCHIVE;
    return 0;
}

struct entry {
    char *name;
    char *path;
    struct stat st;
};

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

static void free_entries(struct entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e[i].name);
        free(e[i].path);
    }
    free(e);
}

/* Appends entries e[0..n) sorted as dir's children. Returns 0 or a negative errno. */
static int add_children(struct forest *f, uint64_t dir, struct entry *e, size_t n)
{
    qsort(e, n, sizeof *e, by_name);
    f->nodes[dir - 1].first = f->nnodes + 1;
    f->nodes[dir - 1].count = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        if (i && strcmp(e[i - 1].name, e[i].name) == 0)
            return -EEXIST;
        uint64_t ino = add_node(f, e[i].name, e[i].path, dir, &e[i].st);
        int rc = ino ? add_slot(f, ino) : -ENOMEM;
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Adds one more directory entry of interest to *e (directories and regular files; links and
 * special files are left out): name, found at path (which it takes over; NULL: out of
 * memory). Returns 0 or -ENOMEM. */
static int push_entry(struct entry **e, size_t *n, size_t *cap, const char *name, char *path,
                      const struct stat *st)
{
    if (!path || (!S_ISDIR(st->st_mode) && !S_ISREG(st->st_mode))) {
        free(path);
        return path ? 0 : -ENOMEM;
    }
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        struct entry *ne = realloc(*e, c * sizeof *ne);
        if (!ne) {
            free(path);
            return -ENOMEM;
        }
        *e = ne;
        *cap = c;
    }
    struct entry *x = &(*e)[*n];
    x->st = *st;
    x->name = strdup(name);
    x->path = path;
    (*n)++;
    return x->name ? 0 : -ENOMEM;
}

/* Reads directory node dir's entries into the tree. A directory that cannot be read is
 * logged and left empty. Returns 0 or a negative errno (out of memory, limits). */
static int scan_dir(struct forest *f, uint64_t dir)
{
    const char *path = f->nodes[dir - 1].path;
    DIR *d = opendir(path);
    if (!d) {
        log_error("%s: %s: shown as an empty directory", path, strerror(errno));
        return 0;
    }
    struct entry *e = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        struct stat st;
        char *sub;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        rc = push_entry(&e, &n, &cap, de->d_name,
                        asprintf(&sub, "%s/%s", path, de->d_name) < 0 ? NULL : sub, &st);
    }
    closedir(d);
    if (rc == 0)
        rc = add_children(f, dir, e, n);
    free_entries(e, n);
    return rc;
}

/* The last component of path (trailing slashes ignored) into name; false when there is none
 * ("/", ".", "..") or it does not fit. */
static bool last_component(const char *path, char *name, size_t size)
{
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/')
        end--;
    size_t start = end;
    while (start > 0 && path[start - 1] != '/')
        start--;
    size_t len = end - start;
    if (len == 0 || len >= size)
        return false;
    memcpy(name, path + start, len);
    name[len] = '\0';
    return strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* The root's children: the named paths under their last components. */
static int add_named(struct forest *f, const char *const *paths, size_t n, char *msg,
                     size_t msg_len)
{
    struct entry *e = NULL;
    size_t cnt = 0, cap = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct stat st;
        char name[NAME_MAX + 1];
        if (stat(paths[i], &st) < 0)
            rc = -errno;
        else if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
            rc = -EINVAL;
        else if (!last_component(paths[i], name, sizeof name))
            rc = -ENAMETOOLONG;
        if (rc < 0) {
            snprintf(msg, msg_len, "%s: %s", paths[i],
                     rc == -EINVAL ? "not a file or directory"
                     : rc == -ENAMETOOLONG ? "cannot be named in the tree" : strerror(-rc));
            break;
        }
        rc = push_entry(&e, &cnt, &cap, name, strdup(paths[i]), &st);
    }
    if (rc == 0 && (rc = add_children(f, FOREST_ROOT, e, cnt)) == -EEXIST)
        snprintf(msg, msg_len, "two of the archives named have the same name");
    free_entries(e, cnt);
    return rc;
}

static int build(struct forest *f, const char *const *paths, size_t n, char *msg,
                 size_t msg_len)
{
    struct stat st;
    bool one_dir = n == 1 && stat(paths[0], &st) == 0 && S_ISDIR(st.st_mode);
    if (!one_dir) {
        clock_gettime(CLOCK_REALTIME, &st.st_mtim);
        st.st_mode = S_IFDIR;
    }
    if (!add_node(f, "", one_dir ? paths[0] : "", FOREST_ROOT, &st)) {
        snprintf(msg, msg_len, "out of memory");
        return -ENOMEM;
    }
    int rc = one_dir ? 0 : add_named(f, paths, n, msg, msg_len);
    if (rc < 0)
        return rc;
    /* breadth first: the directories scanned append their children behind */
    for (uint64_t i = one_dir ? 1 : 2; rc == 0 && i <= f->nnodes; i++)
        if (f->nodes[i - 1].kind == K_DIR)
            rc = scan_dir(f, i);
    if (rc == -EMFILE)
        snprintf(msg, msg_len, "more than %u archives and files", FOREST_MAX_ARCHIVES);
    else if (rc < 0)
        snprintf(msg, msg_len, "%s", rc == -ENOMEM ? "out of memory" : "too many files");
    return rc;
}

int forest_open(const char *const *paths, size_t n, const struct npz_options *opt,
                unsigned max_open, struct forest **out, char *msg, size_t msg_len)
{
    struct forest *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(msg, msg_len, "out of memory");
        return -ENOMEM;
    }
    f->opt = opt ? *opt : (struct npz_options){0};
    f->opt.no_prefetch = 1;
    f->max_open = max_open ? max_open : FOREST_DEFAULT_MAX_OPEN;
    f->head = f->tail = NO_SLOT;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->changed, NULL);
    atomic_init(&f->shutdown, false);
    int rc = build(f, paths, n, msg, msg_len);
    if (rc == 0 && !(f->opt.shared = f->shared = npz_shared_new(&f->opt))) {
        snprintf(msg, msg_len, "out of memory");
        rc = -ENOMEM;
    }
    if (rc < 0) {
        forest_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

int forest_wrap(struct npz *npz, struct forest **out)
{
    struct forest *f = calloc(1, sizeof *f);
    if (!f) {
        npz_close(npz);
        return -ENOMEM;
    }
    f->single = npz;
    *out = f;
    return 0;
}

static void close_slot(struct slot *s)
{
    npz_close(s->npz);
    s->npz = NULL;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

void forest_close(struct forest *f)
{
    if (!f)
        return;
    if (f->single) {
        npz_close(f->single);
        free(f);
        return;
    }
    if (f->shared)
        forest_shutdown(f); /* no job of an archive may outlive it */
    for (uint32_t i = 0; i < f->nslots; i++)
        close_slot(&f->slots[i]);
    npz_shared_free(f->shared);
    for (uint64_t i = 0; i < f->nnodes; i++) {
        free(f->nodes[i].name);
        free(f->nodes[i].path);
    }
    free(f->nodes);
    free(f->slots);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->changed);
    free(f);
}

void forest_start(struct forest *f)
{
    if (f->single)
        npz_start(f->single);
}

void forest_shutdown(struct forest *f)
{
    if (f->single) {
        npz_shutdown(f->single);
        return;
    }
    atomic_store(&f->shutdown, true);
    pthread_mutex_lock(&f->lock);
    for (uint32_t i = 0; i < f->nslots; i++)
        if (f->slots[i].npz)
            npz_shutdown(f->slots[i].npz); /* decodes in progress give up */
    pthread_mutex_unlock(&f->lock);
    npz_shared_shutdown(f->shared);
}

struct archive_watch *forest_watch(struct forest *f)
{
    return f->single ? npz_watch(f->single) : NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Slots: open on demand, closed least recently used first. */

static void lru_unlink(struct forest *f, uint32_t i)
{
    struct slot *s = &f->slots[i];
    if (s->prev != NO_SLOT)
        f->slots[s->prev].next = s->next;
    else
        f->head = s->next;
    if (s->next != NO_SLOT)
        f->slots[s->next].prev = s->prev;
    else
        f->tail = s->prev;
    s->prev = s->next = NO_SLOT;
}

static void lru_push(struct forest *f, uint32_t i)
{
    struct slot *s = &f->slots[i];
    s->prev = NO_SLOT;
    s->next = f->head;
    if (f->head != NO_SLOT)
        f->slots[f->head].prev = i;
    f->head = i;
    if (f->tail == NO_SLOT)
        f->tail = i;
}

/* Closes the least recently used idle slots while more than max_open are open. Idle: not
 * pinned, and no decode-ahead job or read helper of its npz on the workers (no reader can
 * start one once the slot is closed, so the check holds). Called with the lock held; returns
 * with it held, but drops it around each close. */
static void trim(struct forest *f)
{
    while (f->nopen > f->max_open) {
        uint32_t i = f->tail;
        while (i != NO_SLOT && (f->slots[i].pins || (f->slots[i].npz &&
                                                    npz_busy(f->slots[i].npz))))
            i = f->slots[i].prev;
        if (i == NO_SLOT)
            return; /* all in use: the last one to be let go closes */
        struct slot *s = &f->slots[i], gone = *s;
        lru_unlink(f, i);
        s->npz = NULL;
        s->fd = -1;
        s->state = CLOSED;
        f->nopen--;
        pthread_mutex_unlock(&f->lock);
        close_slot(&gone);
        pthread_mutex_lock(&f->lock);
    }
}

/* Opens slot i's file; called without the lock. Returns 0 or a negative errno, having logged
 * why (the caller marks the slot broken). */
static int open_slot(struct forest *f, uint32_t i, struct npz **npz, int *fd)
{
    const struct node *n = &f->nodes[f->slots[i].node - 1];
    char msg[512];
    if (n->kind == K_FILE) {
        *fd = open(n->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (*fd >= 0)
            return 0;
        log_error("%s: %s: reads fail", n->path, strerror(errno));
        return -EIO;
    }
    int rc = npz_open(n->path, &f->opt, npz, msg, sizeof msg);
    struct npz_fsinfo info;
    if (rc == 0) {
        npz_statfs(*npz, &info);
        if (info.archive_bytes != n->size || info.inodes > LOW_MASK) {
            snprintf(msg, sizeof msg, "%s", info.inodes > LOW_MASK ? "too many members"
                                            : "it changed since it was mounted");
            npz_close(*npz);
            rc = -EIO;
        }
    }
    if (rc < 0)
        log_error("%s: %s: shown as an empty directory", n->path, msg);
    return rc < 0 ? -EIO : 0;
}

/* Makes slot i open and in use. Returns 0, -EIO (broken) or -EINTR (shut down). */
static int pin(struct forest *f, uint32_t i)
{
    struct slot *s = &f->slots[i];
    if (atomic_load(&f->shutdown))
        return -EINTR;
    pthread_mutex_lock(&f->lock);
    while (s->state == OPENING)
        pthread_cond_wait(&f->changed, &f->lock);
    if (s->state == OPEN) {
        s->pins++;
        lru_unlink(f, i);
        lru_push(f, i);
        pthread_mutex_unlock(&f->lock);
        return 0;
    }
    if (s->state == BROKEN) {
        pthread_mutex_unlock(&f->lock);
        return -EIO;
    }
    s->state = OPENING;
    pthread_mutex_unlock(&f->lock);
    struct npz *npz = NULL;
    int fd = -1;
    int rc = open_slot(f, i, &npz, &fd);
    pthread_mutex_lock(&f->lock);
    s->state = rc < 0 ? BROKEN : OPEN;
    if (rc == 0) {
        s->npz = npz;
        s->fd = fd;
        s->pins = 1;
        lru_push(f, i);
        f->nopen++;
    }
    pthread_cond_broadcast(&f->changed);
    trim(f);
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static void unpin(struct forest *f, uint32_t i)
{
    pthread_mutex_lock(&f->lock);
    f->slots[i].pins--;
    trim(f);
    pthread_mutex_unlock(&f->lock);
}

/* ------------------------------------------------------------------------------------------ */
/* Inodes. */

/* What an inode names: a node of the tree (archive 0), or inode low of archive slot `slot`. */
struct where {
    const struct node *node; /* the tree node, or for members the archive's node */
    uint32_t slot;
    uint64_t low;            /* in the archive; 0 for tree nodes */
};

static int where(const struct forest *f, uint64_t ino, struct where *w)
{
    uint64_t k = ino >> FOREST_ARCH_SHIFT, low = ino & LOW_MASK;
    if (k == 0) {
        if (low == 0 || low > f->nnodes)
            return -ENOENT;
        *w = (struct where){&f->nodes[low - 1], f->nodes[low - 1].slot, 0};
        return 0;
    }
    /* archive k is the k-th archive slot; slots of plain files are numbered among them */
    if (k > f->nslots || low <= NPZ_ROOT)
        return -ENOENT;
    const struct node *n = &f->nodes[f->slots[k - 1].node - 1];
    if (n->kind != K_ARCHIVE)
        return -ENOENT;
    *w = (struct where){n, (uint32_t)(k - 1), low};
    return 0;
}

/* The forest inode of npz inode low of the archive in slot. */
static uint64_t outer(const struct forest *f, uint32_t slot, uint64_t low)
{
    return low == NPZ_ROOT ? f->slots[slot].node
                           : (uint64_t)(slot + 1) << FOREST_ARCH_SHIFT | low;
}

static void node_attr(const struct forest *f, const struct node *n, struct npz_attr *a)
{
    bool dir = n->kind != K_FILE;
    *a = (struct npz_attr){.ino = (uint64_t)(n - f->nodes) + 1, .is_dir = dir,
                           .mode = dir ? S_IFDIR | 0555 : S_IFREG | 0444,
                           .size = dir ? 0 : n->size,
                           .blocks = dir ? 0 : (n->size + 511) / 512, .mtime = n->mtime};
}

/* A member's attributes in forest terms. */
static void member_attr(const struct forest *f, uint32_t slot, struct npz_attr *a)
{
    if (a->ino == NPZ_ROOT)
        node_attr(f, &f->nodes[f->slots[slot].node - 1], a);
    else
        a->ino = outer(f, slot, a->ino);
}

/* The open archive behind w, pinned (unpin it after), or an error: -ENOENT when it is broken,
 * as an empty directory has no entries. */
static int archive_of(struct forest *f, const struct where *w, struct npz **npz)
{
    int rc = pin(f, w->slot);
    if (rc == -EIO)
        return -ENOENT;
    if (rc == 0)
        *npz = f->slots[w->slot].npz;
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* The file system calls. */

void forest_statfs(struct forest *f, struct npz_fsinfo *out)
{
    if (f->single)
        npz_statfs(f->single, out);
    else
        *out = (struct npz_fsinfo){.archive_bytes = f->total_bytes, .inodes = f->nnodes,
                                   .members = f->narchives};
}

static int tree_lookup(const struct forest *f, const struct node *d, const char *name,
                       uint64_t *ino)
{
    uint64_t lo = 0, hi = d->count;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->nodes[d->first - 1 + mid].name);
        if (c == 0) {
            *ino = d->first + mid;
            return 0;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -ENOENT;
}

int forest_lookup(struct forest *f, uint64_t dir, const char *name, uint64_t *ino)
{
    if (f->single)
        return npz_lookup(f->single, dir, name, ino);
    struct where w;
    struct npz *npz = NULL;
    int rc = where(f, dir, &w);
    if (rc == 0 && w.low == 0 && w.node->kind != K_ARCHIVE)
        return w.node->kind == K_DIR ? tree_lookup(f, w.node, name, ino) : -ENOTDIR;
    if (rc < 0 || (rc = archive_of(f, &w, &npz)) < 0)
        return rc;
    uint64_t low;
    rc = npz_lookup(npz, w.low ? w.low : NPZ_ROOT, name, &low);
    unpin(f, w.slot);
    if (rc == 0)
        *ino = outer(f, w.slot, low);
    return rc;
}

int forest_getattr(struct forest *f, uint64_t ino, struct npz_attr *out)
{
    if (f->single)
        return npz_getattr(f->single, ino, out);
    struct where w;
    struct npz *npz = NULL;
    int rc = where(f, ino, &w);
    if (rc == 0 && w.low == 0) {
        node_attr(f, w.node, out);
        return 0;
    }
    if (rc < 0 || (rc = archive_of(f, &w, &npz)) < 0)
        return rc;
    rc = npz_getattr(npz, w.low, out);
    unpin(f, w.slot);
    if (rc == 0)
        member_attr(f, w.slot, out);
    return rc;
}

/* Entries of a directory of the tree itself. */
static int tree_readdir(const struct forest *f, const struct node *d, uint64_t pos,
                        forest_entry_fn *fn, void *ctx)
{
    for (; pos < (uint64_t)d->count + 2; pos++) {
        const struct node *n = pos == 0 ? d : pos == 1 ? &f->nodes[d->parent - 1]
                                                       : &f->nodes[d->first - 1 + pos - 2];
        struct npz_attr a;
        node_attr(f, n, &a);
        if (fn(ctx, pos, pos == 0 ? "." : pos == 1 ? ".." : n->name, &a))
            break;
    }
    return 0;
}

/* Entries of a directory inside an archive (low, its npz inode), which is pinned; at the
 * archive's own root, ".." is the tree's. */
static int archive_readdir(struct forest *f, struct npz *npz, const struct where *w,
                           uint64_t pos, forest_entry_fn *fn, void *ctx)
{
    uint64_t low = w->low ? w->low : NPZ_ROOT;
    const char *name;
    struct npz_attr a;
    int rc;
    for (; (rc = npz_readdir(npz, low, pos, &name, &a)) > 0; pos++) {
        if (low == NPZ_ROOT && pos == 1)
            node_attr(f, &f->nodes[w->node->parent - 1], &a);
        else
            member_attr(f, w->slot, &a);
        if (fn(ctx, pos, name, &a))
            break;
    }
    return rc < 0 ? rc : 0;
}

/* A broken archive: an empty directory. */
static int empty_readdir(const struct forest *f, const struct node *d, uint64_t pos,
                         forest_entry_fn *fn, void *ctx)
{
    struct npz_attr a;
    for (; pos < 2; pos++) {
        node_attr(f, pos == 0 ? d : &f->nodes[d->parent - 1], &a);
        if (fn(ctx, pos, pos == 0 ? "." : "..", &a))
            break;
    }
    return 0;
}

static int single_readdir(struct npz *npz, uint64_t dir, uint64_t pos, forest_entry_fn *fn,
                          void *ctx)
{
    const char *name;
    struct npz_attr a;
    int rc;
    for (; (rc = npz_readdir(npz, dir, pos, &name, &a)) > 0; pos++)
        if (fn(ctx, pos, name, &a))
            break;
    return rc < 0 ? rc : 0;
}

int forest_readdir(struct forest *f, uint64_t dir, uint64_t pos, forest_entry_fn *fn,
                   void *ctx)
{
    if (f->single)
        return single_readdir(f->single, dir, pos, fn, ctx);
    struct where w;
    struct npz *npz = NULL;
    int rc = where(f, dir, &w);
    if (rc == 0 && w.low == 0 && w.node->kind != K_ARCHIVE)
        return w.node->kind == K_DIR ? tree_readdir(f, w.node, pos, fn, ctx) : -ENOTDIR;
    if (rc < 0)
        return rc;
    rc = archive_of(f, &w, &npz);
    if (rc == -ENOENT && w.low == 0)
        return empty_readdir(f, w.node, pos, fn, ctx);
    if (rc < 0)
        return rc;
    rc = archive_readdir(f, npz, &w, pos, fn, ctx);
    unpin(f, w.slot);
    return rc;
}

/* The pinned archive or file behind a member or plain file, for xattrs and reads: 0, or an
 * error (-EISDIR for the tree's directories and archives, -ENODATA for their xattrs is the
 * callers'). */
static int file_of(struct forest *f, uint64_t ino, struct where *w)
{
    int rc = where(f, ino, w);
    if (rc < 0)
        return rc;
    if (w->low == 0 && w->node->kind != K_FILE)
        return -EISDIR;
    rc = pin(f, w->slot);
    return rc == -EIO && w->low ? -ENOENT : rc;
}

ssize_t forest_listxattr(struct forest *f, uint64_t ino, char *buf, size_t size)
{
    if (f->single)
        return npz_listxattr(f->single, ino, buf, size);
    struct where w;
    int rc = where(f, ino, &w);
    if (rc < 0 || w.low == 0)
        return rc < 0 ? rc : 0;
    if ((rc = file_of(f, ino, &w)) < 0)
        return rc;
    ssize_t n = npz_listxattr(f->slots[w.slot].npz, w.low, buf, size);
    unpin(f, w.slot);
    return n;
}

ssize_t forest_getxattr(struct forest *f, uint64_t ino, const char *name, char *buf,
                        size_t size)
{
    if (f->single)
        return npz_getxattr(f->single, ino, name, buf, size);
    struct where w;
    int rc = where(f, ino, &w);
    if (rc < 0 || w.low == 0)
        return rc < 0 ? rc : -ENODATA;
    if ((rc = file_of(f, ino, &w)) < 0)
        return rc;
    ssize_t n = npz_getxattr(f->slots[w.slot].npz, w.low, name, buf, size);
    unpin(f, w.slot);
    return n;
}

/* A plain file's bytes to serve from off, at most len (0 at or past its end as mounted). */
static size_t clip_plain(const struct node *n, size_t len, uint64_t off)
{
    return off >= n->size ? 0 : len < n->size - off ? len : (size_t)(n->size - off);
}

static ssize_t read_plain(int fd, const struct node *n, void *buf, size_t len, uint64_t off)
{
    size_t want = clip_plain(n, len, off);
    ssize_t got = want ? pread(fd, buf, want, (off_t)off) : 0;
    return got < 0 ? -errno : got;
}

ssize_t forest_read(struct forest *f, uint64_t ino, void *buf, size_t len, uint64_t off,
                    enum read_mode mode, const atomic_bool *cancel, struct read_pins *pins)
{
    if (f->single)
        return npz_read(f->single, ino, buf, len, off, mode, cancel, pins);
    struct where w;
    int rc = file_of(f, ino, &w);
    if (rc < 0)
        return rc;
    const struct slot *s = &f->slots[w.slot];
    ssize_t n = w.low ? npz_read(s->npz, w.low, buf, len, off, mode, cancel, NULL)
                      : read_plain(s->fd, w.node, buf, len, off);
    unpin(f, w.slot);
    if (n > 0 && pins && read_pins_add(pins, NULL, NULL, buf, (size_t)n) < 0)
        return -ENOMEM;
    return n;
}

int forest_archives(struct forest *f, int (*fn)(void *ctx, const char *path), void *ctx)
{
    for (uint64_t i = 0; !f->single && i < f->nnodes; i++) {
        int rc = f->nodes[i].kind == K_ARCHIVE ? fn(ctx, f->nodes[i].path) : 0;
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* What forest_locate keeps open: a slot number plus one (a pointer never dereferenced). */
ssize_t forest_locate(struct forest *f, uint64_t ino, size_t len, uint64_t off, int *fd,
                      uint64_t *pos, struct forest_hold **hold)
{
    *hold = NULL;
    if (f->single)
        return npz_locate(f->single, ino, len, off, fd, pos);
    struct where w;
    int rc = file_of(f, ino, &w);
    if (rc < 0)
        return rc;
    const struct slot *s = &f->slots[w.slot];
    ssize_t n = w.low ? npz_locate(s->npz, w.low, len, off, fd, pos)
                      : (ssize_t)clip_plain(w.node, len, off);
    if (!w.low) {
        *fd = s->fd;
        *pos = off;
    }
    if (n > 0)
        *hold = (struct forest_hold *)(uintptr_t)(w.slot + 1);
    else
        unpin(f, w.slot);
    return n;
}

void forest_release(struct forest *f, struct forest_hold *hold)
{
    if (hold)
        unpin(f, (uint32_t)((uintptr_t)hold - 1));
}

int forest_submit(struct forest *f, struct sched_job *job)
{
    if (f->single)
        return npz_submit(f->single, job);
    return f->shared->sched ? sched_submit(f->shared->sched, job) : -EAGAIN;
}

void forest_wake(struct forest *f)
{
    if (f->single)
        npz_wake(f->single);
    else if (f->shared->sched)
        sched_event(f->shared->sched);
}
