/*
 * namespace: see namespace.h. Directories are created in a first pass so that a file can never
 * take a name a directory needs; files follow in reverse archive order so that the last
 * duplicate keeps the plain name, as it does for zipfile and numpy.
 * Lookups go through one open-addressing hash table keyed by (parent inode, name). The names
 * come from the archive, so the hash is SipHash under a random key drawn for each build: with
 * a fixed function, names crafted to share a slot turn every insertion into a walk over all
 * of them (quadratic mount time).
 */
#define _GNU_SOURCE /* memrchr */
#include "namespace.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "siphash.h"

#define NAME_MAX_BYTES 255
#define EXT_MAX 16 /* a final ".xyz" up to this long is an extension, which cuts keep */

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

static bool is_dot_or_empty(const char *s, size_t len)
{
    return len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.');
}

/* A component of a member's name, as the archive has it (NUL bytes included). */
struct comp {
    const char *s;
    size_t len;
};

/* Sets *c to the next usable component of *p (up to end); false when there are no more. */
static bool next_component(const char **p, const char *end, struct comp *c)
{
    while (*p < end) {
        const char *s = *p;
        const char *slash = memchr(s, '/', (size_t)(end - s));
        const char *e = slash ? slash : end;
        *p = slash ? slash + 1 : end;
        if (!is_dot_or_empty(s, (size_t)(e - s))) {
            *c = (struct comp){s, (size_t)(e - s)};
            return true;
        }
    }
    return false;
}

/* len cut back to a UTF-8 character boundary of s, unless s has none before it. */
static size_t char_boundary(const char *s, size_t len)
{
    size_t cut = len;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
        cut--;
    return cut ? cut : len;
}

/* Writes the name component c gets into out (NAME_MAX_BYTES + 1 bytes), with suffix "~N"
 * when suffix > 0. A component that fits and needs no suffix is kept as it is (NUL bytes
 * become '_'); otherwise the suffix goes before the extension and the stem is cut so that
 * the whole fits, so "x.npy" becomes "x~1.npy" and a long name keeps its ".npy". */
static void make_name(struct comp c, uint64_t suffix, char *out)
{
    if (c.len == 0)
        c = (struct comp){"_", 1}; /* a file left with no name */
    char suf[24] = "";
    if (suffix)
        snprintf(suf, sizeof suf, "~%llu", (unsigned long long)suffix);
    size_t stem = c.len, ext = 0, sl = strlen(suf);
    if (suffix || c.len > NAME_MAX_BYTES) {
        const char *dot = memrchr(c.s, '.', c.len);
        if (dot && dot > c.s && (size_t)(c.s + c.len - dot) <= EXT_MAX)
            ext = (size_t)(c.s + c.len - dot);
        stem = c.len - ext;
        if (stem + sl + ext > NAME_MAX_BYTES)
            stem = char_boundary(c.s, NAME_MAX_BYTES - sl - ext);
    }
    size_t o = 0;
    for (size_t i = 0; i < stem; i++)
        out[o++] = c.s[i] ? c.s[i] : '_';
    memcpy(out + o, suf, sl);
    o += sl;
    for (size_t i = c.len - ext; i < c.len; i++)
        out[o++] = c.s[i] ? c.s[i] : '_';
    out[o] = '\0';
    if (is_dot_or_empty(out, o)) /* a cut that left "." or "..": never a usable name */
        strcpy(out, "_");
}

/* Walks (creating as needed) the directories of a member's path. Returns the inode of the
 * last directory, and leaves the final component in leaf (empty when there is none). For a
 * directory entry, every component is a directory and leaf stays empty. Returns 0 on ENOMEM. */
static uint64_t walk_dirs(struct ns *ns, const struct zip_member *m, struct comp *leaf)
{
    const char *p = m->name, *end = m->name + m->name_len;
    char name[NAME_MAX_BYTES + 1];
    struct comp c, next;
    uint64_t dir = NS_ROOT;
    bool have = next_component(&p, end, &c);
    *leaf = (struct comp){"", 0};
    while (have) {
        bool more = next_component(&p, end, &next);
        if (!more && !m->is_dir) {
            *leaf = c;
            break;
        }
        bool added;
        make_name(c, 0, name);
        dir = find_or_add(ns, dir, name, true, NS_NO_MEMBER, &added);
        if (dir == 0)
            return 0;
        c = next;
        have = more;
    }
    return dir;
}

/* Names the file leaf in dir if it can keep its name as it is (no cut needed) and that path
 * is free; returns 1 if it did, 0 if not, -ENOMEM. */
static int add_plain(struct ns *ns, uint64_t dir, struct comp leaf, uint64_t member)
{
    char name[NAME_MAX_BYTES + 1];
    bool added;
    if (leaf.len > NAME_MAX_BYTES)
        return 0;
    make_name(leaf, 0, name);
    if (find_or_add(ns, dir, name, false, member, &added) == 0)
        return -ENOMEM;
    return added;
}

/* Names a file that could not keep its name: cut to fit if that path is free, else with the
 * first "~N" whose path is free. */
static int add_renamed(struct ns *ns, uint64_t dir, struct comp leaf, uint64_t member)
{
    char name[NAME_MAX_BYTES + 1];
    bool added;
    make_name(leaf, 0, name);
    uint64_t holder = ns_lookup(ns, dir, name);
    if (holder == 0)
        return find_or_add(ns, dir, name, false, member, &added) ? 0 : -ENOMEM;
    /* The holder of the name remembers how far its ~N suffixes went, so that many
     * duplicates cost linear time, not quadratic. */
    uint64_t *k = &ns->next_suffix[holder - 1];
    do {
        make_name(leaf, (*k)++, name);
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
 * that can keep its own path, latest first, so the last duplicate wins; then the others are
 * cut or get suffixes, which therefore never take a path some member has by its own name. */
static int build(struct ns *ns, const struct zip_archive *za)
{
    struct comp leaf;
    for (uint64_t i = 0; i < za->count; i++) {
        uint64_t dir = walk_dirs(ns, &za->members[i], &leaf);
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
        uint64_t dir = walk_dirs(ns, &za->members[i], &leaf);
        rc = dir == 0 ? -ENOMEM : add_plain(ns, dir, leaf, i);
        renamed[i] = rc == 0;
    }
    for (uint64_t i = za->count; rc >= 0 && i-- > 0;) {
        if (!renamed[i])
            continue;
        uint64_t dir = walk_dirs(ns, &za->members[i], &leaf);
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
