/*
 * namespace: see namespace.h. Directories are created in a first pass so that a file can never
 * take a name a directory needs; files follow in reverse archive order so that the last
 * duplicate keeps the plain name, as it does for zipfile and numpy.
 * Lookups go through one open-addressing hash table keyed by (parent inode, name). The names
 * come from the archive, so the hash is SipHash under a random key drawn for each build: with
 * a fixed function, names crafted to share a slot turn every insertion into a walk over all
 * of them (quadratic mount time).
 */
#include "namespace.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "siphash.h"

#define NAME_MAX_BYTES 255
#define SUFFIX_ROOM 24 /* "~" plus up to 20 digits, with room to spare */

struct ns {
    struct ns_node *nodes; /* nodes[ino - 1] */
    uint64_t count, cap;
    uint64_t *table;       /* inode numbers, 0 = empty slot */
    uint64_t table_mask;
    uint64_t *children;
    uint64_t *next_suffix; /* per inode: the next ~N to try for a name taken by that inode */
    struct sipkey key;     /* of the table's hash */
};

static uint64_t hash_key(const struct ns *ns, uint64_t parent, const char *name)
{
    struct siphash_state st;
    siphash_init(&st, &ns->key);
    siphash_update(&st, &parent, sizeof parent);
    siphash_update(&st, name, strlen(name));
    return siphash_final(&st);
}

/* The inode named name under parent, where h is hash_key(ns, parent, name); 0 if none. */
static uint64_t find(const struct ns *ns, uint64_t parent, const char *name, uint64_t h)
{
    uint64_t mask = ns->table_mask;
    for (uint64_t i = h & mask;; i = (i + 1) & mask) {
        uint64_t ino = ns->table[i];
        if (ino == 0)
            return 0;
        const struct ns_node *n = &ns->nodes[ino - 1];
        if (n->parent == parent && ino != NS_ROOT && strcmp(n->name, name) == 0)
            return ino;
    }
}

uint64_t ns_lookup(const struct ns *ns, uint64_t parent, const char *name)
{
    return find(ns, parent, name, hash_key(ns, parent, name));
}

/* Puts inode ino, whose hash is h, into the first free slot from h on (mask + 1 slots). */
static void table_put(uint64_t *table, uint64_t mask, uint64_t ino, uint64_t h)
{
    uint64_t i = h & mask;
    while (table[i])
        i = (i + 1) & mask;
    table[i] = ino;
}

static int table_grow(struct ns *ns)
{
    uint64_t size = (ns->table_mask + 1) * 2;
    uint64_t *t = calloc(size, sizeof *t);
    if (!t)
        return -ENOMEM;
    for (uint64_t ino = 2; ino <= ns->count; ino++) {
        const struct ns_node *n = &ns->nodes[ino - 1];
        table_put(t, size - 1, ino, hash_key(ns, n->parent, n->name));
    }
    free(ns->table);
    ns->table = t;
    ns->table_mask = size - 1;
    return 0;
}

/* Adds a node named name (copied, hash h) under parent; returns its inode or 0 on ENOMEM. */
static uint64_t add_node(struct ns *ns, uint64_t parent, const char *name, uint64_t h,
                         bool is_dir, uint64_t member)
{
    if (ns->count == ns->cap) {
        uint64_t cap = ns->cap * 2;
        struct ns_node *grown = realloc(ns->nodes, cap * sizeof *grown);
        if (!grown)
            return 0;
        ns->nodes = grown;
        uint64_t *suffix = realloc(ns->next_suffix, cap * sizeof *suffix);
        if (!suffix)
            return 0;
        ns->next_suffix = suffix;
        ns->cap = cap;
    }
    if ((ns->count + 1) * 2 > ns->table_mask + 1 && table_grow(ns) < 0)
        return 0;
    char *copy = strdup(name);
    if (!copy)
        return 0;
    uint64_t ino = ++ns->count;
    ns->next_suffix[ino - 1] = 1;
    ns->nodes[ino - 1] = (struct ns_node){
        .name = copy, .parent = parent, .member = member, .is_dir = is_dir,
    };
    table_put(ns->table, ns->table_mask, ino, h);
    return ino;
}

/* The inode named name under parent: the one there already (*added = false), else a new
 * node (*added = true); 0 on ENOMEM. One hash serves the lookup and the insertion. */
static uint64_t find_or_add(struct ns *ns, uint64_t parent, const char *name, bool is_dir,
                            uint64_t member, bool *added)
{
    uint64_t h = hash_key(ns, parent, name);
    uint64_t ino = find(ns, parent, name, h);
    *added = ino == 0;
    return ino ? ino : add_node(ns, parent, name, h, is_dir, member);
}

/* Copies the next usable component of *p into out (at most NAME_MAX_BYTES - room bytes, cut at
 * a UTF-8 character boundary); returns false when the name has no more components. */
static bool is_dot_or_empty(const char *s, size_t len)
{
    return len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.');
}

static bool next_component(const char **p, const char *end, char *out, size_t room)
{
    while (*p < end) {
        const char *s = *p;
        const char *slash = memchr(s, '/', (size_t)(end - s));
        const char *e = slash ? slash : end;
        *p = slash ? slash + 1 : end;
        size_t len = (size_t)(e - s);
        if (is_dot_or_empty(s, len))
            continue;
        size_t max = NAME_MAX_BYTES - room;
        if (len > max) {
            len = max;
            while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
                len--;
            if (len == 0) /* no character boundary at all: cut the bytes as they are */
                len = max;
        }
        for (size_t i = 0; i < len; i++)
            out[i] = s[i] ? s[i] : '_';
        out[len] = '\0';
        if (is_dot_or_empty(out, len)) /* the cut left "." or "..": never a usable name */
            strcpy(out, "_");
        return true;
    }
    return false;
}

/* Walks (creating as needed) the directories of a member's path. Returns the inode of the
 * last directory, and leaves the final component in leaf ("" when there is none). For a
 * directory entry, every component is a directory and leaf stays "". Returns 0 on ENOMEM. */
static uint64_t walk_dirs(struct ns *ns, const struct zip_member *m, char *leaf)
{
    const char *p = m->name, *end = m->name + m->name_len;
    char bufs[2][NAME_MAX_BYTES + 1];
    char *comp = bufs[0], *next = bufs[1];
    uint64_t dir = NS_ROOT;
    bool have = next_component(&p, end, comp, SUFFIX_ROOM);
    leaf[0] = '\0';
    while (have) {
        bool more = next_component(&p, end, next, SUFFIX_ROOM);
        if (!more && !m->is_dir) {
            strcpy(leaf, comp);
            break;
        }
        bool added;
        dir = find_or_add(ns, dir, comp, true, NS_NO_MEMBER, &added);
        if (dir == 0)
            return 0;
        char *swap = comp; /* a path can have 32,767 components: no copy per component */
        comp = next;
        next = swap;
        have = more;
    }
    return dir;
}

/* Names the file base (or "_") in dir if that path is free; returns 1 if it did, 0 if the
 * path is taken, -ENOMEM. */
static int add_plain(struct ns *ns, uint64_t dir, const char *leaf, uint64_t member)
{
    bool added;
    if (find_or_add(ns, dir, leaf[0] ? leaf : "_", false, member, &added) == 0)
        return -ENOMEM;
    return added;
}

/* Names a file whose path was taken "base~N", with the first N whose path is free. */
static int add_renamed(struct ns *ns, uint64_t dir, const char *leaf, uint64_t member)
{
    char name[NAME_MAX_BYTES + SUFFIX_ROOM + 1]; /* base is at most 255 - SUFFIX_ROOM */
    const char *base = leaf[0] ? leaf : "_";
    /* The holder of the plain name remembers how far its ~N suffixes went, so that many
     * duplicates cost linear time, not quadratic. */
    uint64_t *k = &ns->next_suffix[ns_lookup(ns, dir, base) - 1];
    bool added;
    do {
        snprintf(name, sizeof name, "%s~%llu", base, (unsigned long long)(*k)++);
        if (find_or_add(ns, dir, name, false, member, &added) == 0)
            return -ENOMEM;
    } while (!added);
    return 0;
}

static int link_children(struct ns *ns)
{
    ns->children = malloc((ns->count ? ns->count : 1) * sizeof *ns->children);
    if (!ns->children)
        return -ENOMEM;
    for (uint64_t ino = 2; ino <= ns->count; ino++)
        ns->nodes[ns->nodes[ino - 1].parent - 1].nchildren++;
    uint64_t at = 0;
    for (uint64_t ino = 1; ino <= ns->count; ino++) {
        struct ns_node *n = &ns->nodes[ino - 1];
        n->first_child = at;
        at += n->nchildren;
        n->nchildren = 0;
    }
    for (uint64_t ino = 2; ino <= ns->count; ino++) {
        struct ns_node *p = &ns->nodes[ns->nodes[ino - 1].parent - 1];
        ns->children[p->first_child + p->nchildren++] = ino;
    }
    return 0;
}

/* Three passes: directories first, so no file takes a name a directory needs; then every file
 * that can keep its own path, latest first, so the last duplicate wins; then the others get
 * suffixes, which therefore never take a path some member has by its own name. */
static int build(struct ns *ns, const struct zip_archive *za)
{
    char leaf[NAME_MAX_BYTES + 1];
    for (uint64_t i = 0; i < za->count; i++) {
        uint64_t dir = walk_dirs(ns, &za->members[i], leaf);
        if (dir == 0)
            return -ENOMEM;
        if (za->members[i].is_dir && dir != NS_ROOT)
            ns->nodes[dir - 1].member = i;
    }
    bool *renamed = calloc(za->count ? za->count : 1, sizeof *renamed);
    if (!renamed)
        return -ENOMEM;
    int rc = 0;
    for (uint64_t i = za->count; rc >= 0 && i-- > 0;) {
        if (za->members[i].is_dir)
            continue;
        uint64_t dir = walk_dirs(ns, &za->members[i], leaf);
        rc = dir == 0 ? -ENOMEM : add_plain(ns, dir, leaf, i);
        renamed[i] = rc == 0;
    }
    for (uint64_t i = za->count; rc >= 0 && i-- > 0;) {
        if (!renamed[i])
            continue;
        uint64_t dir = walk_dirs(ns, &za->members[i], leaf);
        rc = dir == 0 ? -ENOMEM : add_renamed(ns, dir, leaf, i);
    }
    free(renamed);
    return rc < 0 ? rc : link_children(ns);
}

int ns_build(const struct zip_archive *za, struct ns **out)
{
    struct ns *ns = calloc(1, sizeof *ns);
    if (!ns)
        return -ENOMEM;
    ns->key = sipkey_random();
    ns->cap = 64;
    ns->nodes = malloc(ns->cap * sizeof *ns->nodes);
    ns->next_suffix = malloc(ns->cap * sizeof *ns->next_suffix);
    /* Room for a node per member from the start (the table still grows when directories need
     * more): no rehashing of everything at each doubling. */
    uint64_t slots = 128;
    while (slots < 2 * (za->count + 1))
        slots *= 2;
    ns->table_mask = slots - 1;
    ns->table = calloc(slots, sizeof *ns->table);
    char *root = strdup("");
    if (!ns->nodes || !ns->next_suffix || !ns->table || !root) {
        free(root);
        ns_free(ns);
        return -ENOMEM;
    }
    ns->nodes[0] = (struct ns_node){
        .name = root, .parent = NS_ROOT, .member = NS_NO_MEMBER, .is_dir = true,
    };
    ns->next_suffix[0] = 1;
    ns->count = 1;
    int rc = build(ns, za);
    if (rc < 0) {
        ns_free(ns);
        return rc;
    }
    *out = ns;
    return 0;
}

void ns_free(struct ns *ns)
{
    if (!ns)
        return;
    for (uint64_t i = 0; i < ns->count; i++)
        free((char *)ns->nodes[i].name);
    free(ns->nodes);
    free(ns->table);
    free(ns->children);
    free(ns->next_suffix);
    free(ns);
}

const struct ns_node *ns_get(const struct ns *ns, uint64_t ino)
{
    return ino >= 1 && ino <= ns->count ? &ns->nodes[ino - 1] : NULL;
}

uint64_t ns_child(const struct ns *ns, const struct ns_node *dir, uint64_t i)
{
    return ns->children[dir->first_child + i];
}

uint64_t ns_count(const struct ns *ns)
{
    return ns->count;
}
