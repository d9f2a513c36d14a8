/*
 * Unit tests for namespace (ns_build and the lookups), against the naming rule written in
 * namespace.h. Member tables are built by hand (only name, name_len and is_dir matter); the
 * expected trees below were written from the rule, not from the code. Every tree is also
 * checked for the structural invariants (dense inodes, valid names, consistent children and
 * lookups, every file member exactly once). When $NPZ_CASES (or argv[1]) names the corpus
 * written by gen_cases.py, the tree of every archive zip_open accepts is checked the same way.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "fd_source.h"
#include "namespace.h"
#include "zipdir.h"

/* ---------------------------------------------------------------------------------------- */
/* Hand-built member tables */

struct spec {
    const char *s;
    size_t len;
    bool holds_data; /* a name ending in '/' is then a file: zipdir leaves is_dir false */
};

/* A member name given as a string literal, which may hold NUL bytes. */
#define N(lit) {(lit), sizeof(lit) - 1, false}
/* The same for a member that holds data. */
#define D(lit) {(lit), sizeof(lit) - 1, true}

static void add_member(struct zip_archive *za, const char *s, size_t len)
{
    struct zip_member *m = &za->members[za->count++];
    memset(m, 0, sizeof *m);
    m->name = malloc(len + 1);
    if (!m->name)
        abort();
    memcpy(m->name, s, len);
    m->name[len] = '\0';
    m->name_len = (uint32_t)len;
    m->is_dir = len > 0 && s[len - 1] == '/';
}

static struct zip_archive make_za(const struct spec *specs, size_t n, size_t cap)
{
    struct zip_archive za;
    memset(&za, 0, sizeof za);
    za.members = calloc(cap > n ? cap : n ? n : 1, sizeof *za.members);
    if (!za.members)
        abort();
    for (size_t i = 0; i < n; i++) {
        add_member(&za, specs[i].s, specs[i].len);
        if (specs[i].holds_data) {
            za.members[i].usize = 21;
            za.members[i].is_dir = false;
        }
    }
    return za;
}

static void free_za(struct zip_archive *za)
{
    for (uint64_t i = 0; i < za->count; i++)
        free(za->members[i].name);
    free(za->members);
    memset(za, 0, sizeof *za);
}

/* ---------------------------------------------------------------------------------------- */
/* Tree inspection */

/* The path of ino from the root ("" for the root itself), components joined by '/'. */
static void node_path(const struct ns *ns, uint64_t ino, char *buf, size_t cap)
{
    const char *parts[512];
    size_t depth = 0;
    while (ino != NS_ROOT && depth < 512) {
        const struct ns_node *n = ns_get(ns, ino);
        if (!n)
            break;
        parts[depth++] = n->name;
        ino = n->parent;
    }
    size_t o = 0;
    buf[0] = '\0';
    while (depth-- > 0 && o < cap)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", o ? "/" : "", parts[depth]);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Structural invariants of any tree built from za. */
static void check_invariants(const struct ns *ns, const struct zip_archive *za)
{
    uint64_t count = ns_count(ns);
    if (!CHECK(count >= 1))
        return;
    const struct ns_node *root = ns_get(ns, NS_ROOT);
    if (!CHECK(root != NULL))
        return;
    CHECK_EQ_STR(root->name, "");
    CHECK_EQ_U64(root->parent, NS_ROOT);
    CHECK_EQ_U64(root->member, NS_NO_MEMBER);
    CHECK(root->is_dir);
    CHECK(ns_get(ns, 0) == NULL);
    CHECK(ns_get(ns, count + 1) == NULL);
    CHECK(ns_get(ns, UINT64_MAX) == NULL);

    uint64_t *seen_child = calloc(count + 1, sizeof *seen_child);
    uint64_t *file_of = calloc(za->count + 1, sizeof *file_of);
    if (!CHECK(seen_child && file_of)) {
        free(seen_child);
        free(file_of);
        return;
    }
    uint64_t children = 0;
    bool names_ok = true, lookups_ok = true, parents_ok = true, members_ok = true;
    bool kids_ok = true;
    for (uint64_t ino = 1; ino <= count; ino++) {
        const struct ns_node *n = ns_get(ns, ino);
        if (!CHECK(n != NULL))
            break;
        if (n->is_dir) {
            children += n->nchildren;
            for (uint64_t i = 0; i < n->nchildren; i++) {
                uint64_t c = ns_child(ns, n, i);
                const struct ns_node *cn = ns_get(ns, c);
                if (c < 2 || c > count || !cn || cn->parent != ino || seen_child[c]++) {
                    kids_ok = false;
                    continue;
                }
            }
            if (n->member != NS_NO_MEMBER &&
                (n->member >= za->count || !za->members[n->member].is_dir))
                members_ok = false;
        } else {
            if (n->nchildren != 0)
                kids_ok = false;
            if (n->member >= za->count || za->members[n->member].is_dir)
                members_ok = false;
            else
                file_of[n->member]++;
        }
        if (ino == NS_ROOT)
            continue;
        size_t len = strlen(n->name);
        if (len == 0 || len > 255 || strchr(n->name, '/') || strcmp(n->name, ".") == 0 ||
            strcmp(n->name, "..") == 0) {
            if (names_ok)
                check_report(false, __FILE__, __LINE__, "inode %llu has an invalid name \"%s\"",
                             (unsigned long long)ino, n->name);
            names_ok = false;
        }
        const struct ns_node *p = ns_get(ns, n->parent);
        if (!p || !p->is_dir)
            parents_ok = false;
        if (ns_lookup(ns, n->parent, n->name) != ino)
            lookups_ok = false;
    }
    CHECK(names_ok);
    CHECK(parents_ok);
    CHECK(lookups_ok);
    CHECK(members_ok);
    CHECK(kids_ok);
    CHECK_EQ_U64(children, count - 1);
    bool every_child = true;
    for (uint64_t ino = 2; ino <= count; ino++)
        every_child &= seen_child[ino] == 1;
    CHECK(every_child);
    bool every_file = true;
    for (uint64_t i = 0; i < za->count; i++)
        if (!za->members[i].is_dir && file_of[i] != 1) {
            if (every_file)
                check_report(false, __FILE__, __LINE__, "file member %llu appears %llu times",
                             (unsigned long long)i, (unsigned long long)file_of[i]);
            every_file = false;
        }
    CHECK(every_file);
    free(seen_child);
    free(file_of);
}

/* Compares the whole tree with want: lines "d PATH", "d PATH #M" (directory recording
 * member M) or "f PATH #M", in any order. */
static bool check_tree(const struct ns *ns, const char *const *want, size_t nwant,
                       const char *file, int line)
{
    uint64_t count = ns_count(ns);
    char **got = calloc(count, sizeof *got);
    char **exp = calloc(nwant ? nwant : 1, sizeof *exp);
    if (!got || !exp)
        abort();
    size_t ngot = 0;
    for (uint64_t ino = 2; ino <= count; ino++) {
        const struct ns_node *n = ns_get(ns, ino);
        char path[8192], buf[8300];
        node_path(ns, ino, path, sizeof path);
        if (n->member == NS_NO_MEMBER)
            snprintf(buf, sizeof buf, "%c %s", n->is_dir ? 'd' : 'f', path);
        else
            snprintf(buf, sizeof buf, "%c %s #%llu", n->is_dir ? 'd' : 'f', path,
                     (unsigned long long)n->member);
        got[ngot++] = strdup(buf);
    }
    for (size_t i = 0; i < nwant; i++)
        exp[i] = (char *)want[i];
    qsort(got, ngot, sizeof *got, cmp_str);
    qsort(exp, nwant, sizeof *exp, cmp_str);
    bool same = ngot == nwant;
    for (size_t i = 0; same && i < ngot; i++)
        same = strcmp(got[i], exp[i]) == 0;
    if (!check_report(same, file, line, "tree differs from the expected one")) {
        printf("    got (%zu):\n", ngot);
        for (size_t i = 0; i < ngot; i++)
            printf("      %s%s\n", got[i], bsearch(&got[i], exp, nwant, sizeof *exp, cmp_str)
                                                ? "" : "   <-- unexpected");
        printf("    want (%zu):\n", nwant);
        for (size_t i = 0; i < nwant; i++)
            printf("      %s%s\n", exp[i], bsearch(&exp[i], got, ngot, sizeof *got, cmp_str)
                                                ? "" : "   <-- missing");
    }
    for (size_t i = 0; i < ngot; i++)
        free(got[i]);
    free(got);
    free(exp);
    return same;
}

#define CHECK_TREE(ns, ...)                                                         \
    check_tree((ns), (const char *const[]){__VA_ARGS__},                           \
               sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *), \
               __FILE__, __LINE__)

/* The inode at a '/'-separated path (each component looked up with ns_lookup), or 0. */
static uint64_t path_lookup(const struct ns *ns, const char *path)
{
    uint64_t ino = NS_ROOT;
    char comp[4096];
    while (*path && ino) {
        const char *slash = strchr(path, '/');
        size_t len = slash ? (size_t)(slash - path) : strlen(path);
        if (len >= sizeof comp)
            return 0;
        memcpy(comp, path, len);
        comp[len] = '\0';
        ino = ns_lookup(ns, ino, comp);
        path += len + (slash ? 1 : 0);
    }
    return ino;
}

/* Builds the tree of specs, checks its invariants, and returns it (NULL on failure). */
static struct ns *build_specs(const struct spec *specs, size_t n, struct zip_archive *za)
{
    *za = make_za(specs, n, n);
    struct ns *ns = NULL;
    if (!CHECK_EQ_I64(ns_build(za, &ns), 0) || !CHECK(ns != NULL))
        return NULL;
    check_invariants(ns, za);
    return ns;
}

#define BUILD(za, ...)                                                                  \
    build_specs((const struct spec[]){__VA_ARGS__},                                     \
                sizeof((const struct spec[]){__VA_ARGS__}) / sizeof(struct spec), (za))

static void done(struct ns *ns, struct zip_archive *za)
{
    ns_free(ns);
    free_za(za);
}

/* ---------------------------------------------------------------------------------------- */
/* The rule, case by case */

static void test_empty_archive(void)
{
    struct zip_archive za = make_za(NULL, 0, 0);
    struct ns *ns = NULL;
    if (CHECK_EQ_I64(ns_build(&za, &ns), 0)) {
        check_invariants(ns, &za);
        CHECK_EQ_U64(ns_count(ns), 1);
        CHECK_EQ_U64(ns_get(ns, NS_ROOT)->nchildren, 0);
        CHECK_EQ_U64(ns_lookup(ns, NS_ROOT, "x"), 0);
    }
    done(ns, &za);
}

static void test_flat(void)
{
    struct zip_archive za;
    struct ns *ns = BUILD(&za, N("x.npy"), N("y.npy"), N("z"));
    if (!ns)
        return;
    CHECK_TREE(ns, "f x.npy #0", "f y.npy #1", "f z #2");
    CHECK_EQ_U64(ns_count(ns), 4);
    CHECK_EQ_U64(ns_get(ns, NS_ROOT)->nchildren, 3);
    uint64_t x = ns_lookup(ns, NS_ROOT, "x.npy");
    CHECK(x >= 2 && x <= 4);
    if (x) {
        const struct ns_node *n = ns_get(ns, x);
        CHECK_EQ_STR(n->name, "x.npy");
        CHECK_EQ_U64(n->parent, NS_ROOT);
        CHECK_EQ_U64(n->member, 0);
        CHECK(!n->is_dir);
        CHECK_EQ_U64(n->nchildren, 0);
    }
    done(ns, &za);
}

static void test_dropped_components(void)
{
    struct zip_archive za;
    struct ns *ns = BUILD(&za, N("/abs.npy"), N("../up.npy"), N("a/./b//c.npy"),
                          N("a/../d.npy"), N("./e.npy"), N("//f.npy"), N("x/.."),
                          N("../../../etc/passwd"), N("g/h/../../i.npy"), N("./j/"),
                          N("../"), N("/"), N("k/./"));
    if (!ns)
        return;
    CHECK_TREE(ns, "f abs.npy #0", "f up.npy #1", "d a", "d a/b", "f a/b/c.npy #2",
               "f a/d.npy #3", "f e.npy #4", "f f.npy #5", "f x #6", "d etc",
               "f etc/passwd #7", "d g", "d g/h", "f g/h/i.npy #8", "d j #9", "d k #12");
    done(ns, &za);
}

static void test_nul_bytes(void)
{
    struct zip_archive za;
    struct ns *ns = BUILD(&za, N("a\0b.npy"), N("d\0ir/x\0"), N("\0"), N("\0\0/\0"),
                          N("p_q"), N("p\0q"));
    if (!ns)
        return;
    CHECK_TREE(ns, "f a_b.npy #0", "d d_ir", "f d_ir/x_ #1", "f _ #2", "d __",
               "f __/_ #3", "f p_q #5", "f p_q~1 #4");
    done(ns, &za);
}

static void test_implicit_dirs(void)
{
    struct zip_archive za;
    struct ns *ns = BUILD(&za, N("a/b/c.npy"), N("a/d.npy"), N("e/f/g/h/i.npy"));
    if (!ns)
        return;
    CHECK_TREE(ns, "d a", "d a/b", "f a/b/c.npy #0", "f a/d.npy #1", "d e", "d e/f", "d e/f/g",
               "d e/f/g/h", "f e/f/g/h/i.npy #2");
    uint64_t a = path_lookup(ns, "a"), ab = path_lookup(ns, "a/b");
    if (CHECK(a && ab)) {
        CHECK(ns_get(ns, a)->is_dir);
        CHECK_EQ_U64(ns_get(ns, a)->member, NS_NO_MEMBER);
        CHECK_EQ_U64(ns_get(ns, a)->nchildren, 2);
        CHECK_EQ_U64(ns_get(ns, ab)->parent, a);
        CHECK_EQ_U64(ns_get(ns, a)->parent, NS_ROOT);
    }
    done(ns, &za);
}

static void test_dir_entries(void)
{
    struct zip_archive za;
    struct ns *ns = BUILD(&za, N("d/"), N("d/x.npy"), N("d/e/"), N("z/"), N("q/r/"),
                          N("q/s.npy"));
    if (!ns)
        return;
    CHECK_TREE(ns, "d d #0", "f d/x.npy #1", "d d/e #2", "d z #3", "d q", "d q/r #4",
               "f q/s.npy #5");
    done(ns, &za);

    /* The same directory listed twice: still one directory, recording one of its entries. */
    ns = BUILD(&za, N("d/"), N("d/x"), N("d/"), N("./d/"));
    if (!ns)
        return;
    CHECK_EQ_U64(ns_count(ns), 3);
    uint64_t d = ns_lookup(ns, NS_ROOT, "d");
    if (CHECK(d != 0)) {
        uint64_t m = ns_get(ns, d)->member;
        CHECK(m == 0 || m == 2 || m == 3);
    }
    CHECK_EQ_U64(ns_lookup(ns, NS_ROOT, "d~1"), 0);
    done(ns, &za);
}

static void test_duplicates(void)
{
    struct zip_archive za;
    struct ns *ns = BUILD(&za, N("x"), N("x"), N("x"));
    if (ns)
        CHECK_TREE(ns, "f x #2", "f x~1 #1", "f x~2 #0");
    done(ns, &za);

    ns = BUILD(&za, N("x"), N("y"), N("x"), N("d/x"), N("x"), N("d/x"));
    if (ns)
        CHECK_TREE(ns, "f x #4", "f x~1 #2", "f x~2 #0", "f y #1", "d d", "f d/x #5",
                   "f d/x~1 #3");
    done(ns, &za);

    /* Different spellings of one path collide too. */
    ns = BUILD(&za, N("/x"), N("./x"), N("x"), N("../x"));
    if (ns)
        CHECK_TREE(ns, "f x #3", "f x~1 #2", "f x~2 #1", "f x~3 #0");
    done(ns, &za);

    /* A member already called name~1, listed after the duplicates, keeps its name. */
    ns = BUILD(&za, N("x"), N("x"), N("x~1"));
    if (ns)
        CHECK_TREE(ns, "f x #1", "f x~2 #0", "f x~1 #2");
    done(ns, &za);

    /* A member whose own path is unique (x~1) keeps it even when it comes first: only the
     * members that share a path are renamed, and their suffix skips names already taken. */
    ns = BUILD(&za, N("x~1"), N("x"), N("x"));
    if (ns)
        CHECK_TREE(ns, "f x~1 #0", "f x #2", "f x~2 #1");
    done(ns, &za);

    /* Empty names: a file left with no name is '_', and '_' collides like any name. */
    ns = BUILD(&za, N(""), N("."), N("dir/.."), N(".."), N("d/"), N("_"));
    if (ns)
        CHECK_TREE(ns, "f _ #5", "f _~1 #3", "f _~2 #1", "f _~3 #0", "f dir #2", "d d #4");
    done(ns, &za);
}

static void test_file_vs_directory(void)
{
    struct zip_archive za;
    struct ns *ns = BUILD(&za, N("a"), N("a/b"));
    if (ns)
        CHECK_TREE(ns, "d a", "f a/b #1", "f a~1 #0");
    done(ns, &za);

    ns = BUILD(&za, N("a/b"), N("a"));
    if (ns)
        CHECK_TREE(ns, "d a", "f a/b #0", "f a~1 #1");
    done(ns, &za);

    ns = BUILD(&za, N("a"), N("a/"));
    if (ns)
        CHECK_TREE(ns, "d a #1", "f a~1 #0");
    done(ns, &za);

    ns = BUILD(&za, N("a"), N("a"), N("a/b/c"), N("a/b"));
    if (ns)
        CHECK_TREE(ns, "d a", "d a/b", "f a/b/c #2", "f a/b~1 #3", "f a~1 #1", "f a~2 #0");
    done(ns, &za);

    /* The suffix skips names held by directories. */
    ns = BUILD(&za, N("x~1/"), N("x"), N("x"));
    if (ns)
        CHECK_TREE(ns, "d x~1 #0", "f x #2", "f x~2 #1");
    done(ns, &za);
}

/* A member named like a directory but holding data is a file named without the final '/',
 * and gives way to a directory of the same path like any other file. */
static void test_directory_named_files(void)
{
    struct zip_archive za;
    struct ns *ns = BUILD(&za, D("data.npy/"), D("grp/inner.npy//"), D("/"), N("e/"),
                          D("e/"), D("x/"), N("x"));
    if (ns)
        CHECK_TREE(ns, "f data.npy #0", "d grp", "f grp/inner.npy #1", "f _ #2", "d e #3",
                   "f e~1 #4", "f x #6", "f x~1 #5");
    done(ns, &za);

    ns = BUILD(&za, D("data.npy/"), N("data.npy/x"), N("data.npy"));
    if (ns)
        CHECK_TREE(ns, "d data.npy", "f data.npy/x #1", "f data~1.npy #2", "f data~2.npy #0");
    done(ns, &za);
}

static void test_numpy_keys(void)
{
    struct zip_archive za;
    struct ns *ns = BUILD(&za, N("grp/x.npy"), N(".npy"), N("/abs.npy"), N("../up.npy"),
                          N("grp/y.npy"), N("a.npy"));
    if (ns)
        CHECK_TREE(ns, "d grp", "f grp/x.npy #0", "f grp/y.npy #4", "f .npy #1",
                   "f abs.npy #2", "f up.npy #3", "f a.npy #5");
    done(ns, &za);
}

/* A string of n copies of c followed by tail. */
static char *rep(int c, size_t n, const char *tail)
{
    size_t t = strlen(tail);
    char *s = malloc(n + t + 1);
    if (!s)
        abort();
    memset(s, c, n);
    memcpy(s + n, tail, t + 1);
    return s;
}

static void test_long_components(void)
{
    char *names[] = {
        rep('a', 300, ".npy"),                 /* 0: cut to 251 'a', keeping .npy */
        rep('b', 255, ""),                     /* 1: exactly 255: kept */
        rep('c', 256, ""),                     /* 2: cut to 255 */
        rep('d', 254, "\xc3\xa9tail"),         /* 3: 2-byte char at 254..255: cut to 254 */
        rep('e', 253, "\xe2\x82\xaczzz"),      /* 4: 3-byte char at 253..255: cut to 253 */
        rep('f', 252, "\xf0\x9f\x98\x80zz"),   /* 5: 4-byte char at 252..255: cut to 252 */
        rep('g', 251, "\xf0\x9f\x98\x80zz"),   /* 6: 4-byte char at 251..254: kept, cut 255 */
        rep('h', 300, "/x.npy"),               /* 7: directory component cut to 255 */
        rep('i', 255, "1"),                    /* 8: same 255-byte cut as 9 */
        rep('i', 255, "2"),                    /* 9: last of the two: keeps the cut name */
        rep('j', 255, ""),                     /* 10: 255 bytes, a duplicate of 11 */
        rep('j', 255, ""),                     /* 11: the last: keeps the name */
        rep('k', 251, ".npy"),                 /* 12: 255 bytes with .npy, duplicate of 13 */
        rep('k', 251, ".npy"),                 /* 13 */
        rep('m', 255, ""),                     /* 14: fits: keeps its name, though first */
        rep('m', 300, ""),                     /* 15: cut to 14's name: gets a suffix */
    };
    size_t n = sizeof names / sizeof names[0];
    struct zip_archive za = make_za(NULL, 0, n);
    for (size_t i = 0; i < n; i++)
        add_member(&za, names[i], strlen(names[i]));
    struct ns *ns = NULL;
    if (CHECK_EQ_I64(ns_build(&za, &ns), 0)) {
        check_invariants(ns, &za);
        struct {
            char *path;
            uint64_t member;
        } want[] = {
            {rep('a', 251, ".npy"), 0},
            {rep('b', 255, ""), 1},
            {rep('c', 255, ""), 2},
            {rep('d', 254, ""), 3},
            {rep('e', 253, ""), 4},
            {rep('f', 252, ""), 5},
            {rep('g', 251, "\xf0\x9f\x98\x80"), 6},
            {rep('h', 255, "/x.npy"), 7},
            {rep('i', 255, ""), 9},
            {rep('i', 253, "~1"), 8},
            {rep('j', 255, ""), 11},
            {rep('j', 253, "~1"), 10},
            {rep('k', 251, ".npy"), 13},
            {rep('k', 249, "~1.npy"), 12},
            {rep('m', 255, ""), 14},
            {rep('m', 253, "~1"), 15},
        };
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
            check_context("long name %zu", i);
            uint64_t ino = path_lookup(ns, want[i].path);
            if (CHECK(ino != 0)) {
                CHECK_EQ_U64(ns_get(ns, ino)->member, want[i].member);
                CHECK(!ns_get(ns, ino)->is_dir);
            }
            free(want[i].path);
        }
        check_context("%s", "");
        CHECK_EQ_U64(ns_count(ns), 1 + n + 1); /* root, the files, one directory */
    }
    ns_free(ns);
    free_za(&za);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
}

/* A component made only of UTF-8 continuation bytes has no character boundary before byte 231:
 * whatever the cut gives, no node may end up with an empty name. */
static void test_cut_without_boundary(void)
{
    char *dir = rep('\x80', 300, "/x.npy");
    char *file = rep('\xbf', 260, "");
    struct zip_archive za = make_za(NULL, 0, 2);
    add_member(&za, dir, strlen(dir));
    add_member(&za, file, strlen(file));
    struct ns *ns = NULL;
    if (CHECK_EQ_I64(ns_build(&za, &ns), 0)) {
        check_invariants(ns, &za); /* names must be non-empty */
        /* Files x.npy (under some directory, or at the root if the component is dropped)
         * and the second member both exist. */
        uint64_t count = ns_count(ns);
        bool found_x = false, found_file = false;
        for (uint64_t ino = 2; ino <= count; ino++) {
            const struct ns_node *nd = ns_get(ns, ino);
            found_x |= !nd->is_dir && nd->member == 0 && strcmp(nd->name, "x.npy") == 0;
            found_file |= !nd->is_dir && nd->member == 1;
        }
        CHECK(found_x);
        CHECK(found_file);
    }
    ns_free(ns);
    free_za(&za);
    free(dir);
    free(file);
}

/* A cut back to a character boundary that leaves "." or ".." must not make such a name. */
static void test_cut_to_dots(void)
{
    char *two = rep('\x80', 300, "/inner.npy");
    char *one = rep('\x80', 300, "");
    char *a = malloc(strlen(two) + 4), *b = malloc(strlen(one) + 4);
    snprintf(a, strlen(two) + 4, "..\xc3%s", two);
    snprintf(b, strlen(one) + 4, ".\xc3%s", one);
    struct zip_archive za = make_za(NULL, 0, 2);
    add_member(&za, a, strlen(a));
    add_member(&za, b, strlen(b));
    struct ns *ns = NULL;
    if (CHECK_EQ_I64(ns_build(&za, &ns), 0)) {
        check_invariants(ns, &za);
        for (uint64_t ino = 2; ino <= ns_count(ns); ino++) {
            const char *name = ns_get(ns, ino)->name;
            CHECK(strcmp(name, ".") != 0 && strcmp(name, "..") != 0);
        }
        uint64_t d = ns_lookup(ns, NS_ROOT, "_");
        CHECK(d != 0 && ns_get(ns, d)->is_dir && ns_lookup(ns, d, "inner.npy") != 0);
        CHECK(ns_lookup(ns, NS_ROOT, ".~1") != 0); /* the file, renamed away from the dir: the
                                                     * suffix needs no cut to ".." */
    }
    ns_free(ns);
    free_za(&za);
    free(two);
    free(one);
    free(a);
    free(b);
}

static void test_lookups(void)
{
    struct zip_archive za;
    struct ns *ns = BUILD(&za, N("a/b.npy"), N("c.npy"));
    if (!ns)
        return;
    uint64_t a = ns_lookup(ns, NS_ROOT, "a"), c = ns_lookup(ns, NS_ROOT, "c.npy");
    CHECK(a >= 2 && c >= 2 && a != c);
    uint64_t b = a ? ns_lookup(ns, a, "b.npy") : 0;
    CHECK(b >= 2);
    CHECK_EQ_U64(ns_lookup(ns, NS_ROOT, "b.npy"), 0);  /* wrong directory */
    CHECK_EQ_U64(ns_lookup(ns, NS_ROOT, "a/b.npy"), 0); /* lookups take one component */
    CHECK_EQ_U64(ns_lookup(ns, NS_ROOT, ""), 0);
    CHECK_EQ_U64(ns_lookup(ns, NS_ROOT, "."), 0);
    CHECK_EQ_U64(ns_lookup(ns, NS_ROOT, ".."), 0);
    CHECK_EQ_U64(ns_lookup(ns, NS_ROOT, "missing"), 0);
    CHECK_EQ_U64(ns_lookup(ns, NS_ROOT, "c.np"), 0);
    CHECK_EQ_U64(ns_lookup(ns, NS_ROOT, "c.npyy"), 0);
    CHECK_EQ_U64(ns_lookup(ns, c, "x"), 0);            /* a file has no children */
    CHECK_EQ_U64(ns_lookup(ns, 12345, "b.npy"), 0);    /* no such parent */
    CHECK(ns_get(ns, 0) == NULL);
    CHECK(ns_get(ns, 5) == NULL);
    CHECK(ns_get(ns, 4) != NULL);
    CHECK_EQ_U64(ns_count(ns), 4);
    if (a && b) {
        const struct ns_node *an = ns_get(ns, a);
        CHECK_EQ_U64(an->nchildren, 1);
        CHECK_EQ_U64(ns_child(ns, an, 0), b);
        CHECK_EQ_U64(ns_get(ns, b)->parent, a);
    }
    const struct ns_node *root = ns_get(ns, NS_ROOT);
    CHECK_EQ_U64(root->nchildren, 2);
    if (root->nchildren == 2) {
        uint64_t c0 = ns_child(ns, root, 0), c1 = ns_child(ns, root, 1);
        CHECK((c0 == a && c1 == c) || (c0 == c && c1 == a));
    }
    done(ns, &za);
}

/* Many names in many directories: every one is found again, and children enumerate them. */
static void test_many_names(void)
{
    const size_t n = 20000;
    struct zip_archive za = make_za(NULL, 0, n);
    char buf[64];
    for (size_t i = 0; i < n; i++) {
        int len = snprintf(buf, sizeof buf, "d%03zu/sub%zu/f%zu.npy", i % 100, i % 7, i);
        add_member(&za, buf, (size_t)len);
    }
    struct ns *ns = NULL;
    if (!CHECK_EQ_I64(ns_build(&za, &ns), 0))
        return;
    check_invariants(ns, &za);
    CHECK_EQ_U64(ns_count(ns), 1 + 100 + 700 + n);
    bool all = true;
    for (size_t i = 0; i < n && all; i++) {
        snprintf(buf, sizeof buf, "d%03zu/sub%zu/f%zu.npy", i % 100, i % 7, i);
        uint64_t ino = path_lookup(ns, buf);
        all = ino != 0 && ns_get(ns, ino)->member == i;
        if (!all)
            check_report(false, __FILE__, __LINE__, "%s not found as member %zu", buf, i);
    }
    CHECK(all);
    ns_free(ns);
    free_za(&za);
}

/* The same archive always gives the same inode numbers. */
static void test_stable_inodes(void)
{
    static const struct spec specs[] = {
        N("z/y/x.npy"), N("a.npy"), N("a.npy"), N("m/"), N("m/n.npy"), N("b"), N("b/c"),
        N("/abs"), N("q\0r"), N("z/y/x.npy"), N("k/l/m/n/o"),
    };
    size_t n = sizeof specs / sizeof specs[0];
    struct zip_archive za1 = make_za(specs, n, n), za2 = make_za(specs, n, n);
    struct ns *ns1 = NULL, *ns2 = NULL;
    if (CHECK_EQ_I64(ns_build(&za1, &ns1), 0) && CHECK_EQ_I64(ns_build(&za2, &ns2), 0)) {
        check_invariants(ns1, &za1);
        uint64_t count = ns_count(ns1);
        CHECK_EQ_U64(ns_count(ns2), count);
        bool same = ns_count(ns2) == count;
        for (uint64_t ino = 1; same && ino <= count; ino++) {
            const struct ns_node *x = ns_get(ns1, ino), *y = ns_get(ns2, ino);
            same = strcmp(x->name, y->name) == 0 && x->parent == y->parent &&
                   x->member == y->member && x->is_dir == y->is_dir &&
                   x->nchildren == y->nchildren;
            for (uint64_t i = 0; same && x->is_dir && i < x->nchildren; i++)
                same = ns_child(ns1, x, i) == ns_child(ns2, y, i);
            if (!same)
                check_report(false, __FILE__, __LINE__, "inode %llu differs between builds",
                             (unsigned long long)ino);
        }
        CHECK(same);
    }
    ns_free(ns1);
    ns_free(ns2);
    free_za(&za1);
    free_za(&za2);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ns_build, which must succeed, and within a second: a linear build of 100,000 names takes
 * a small fraction of that, a quadratic one minutes. */
static bool build_in_time(const struct zip_archive *za, struct ns **out, const char *what)
{
    double t0 = now();
    int rc = ns_build(za, out);
    double dt = now() - t0;
    if (!CHECK_EQ_I64(rc, 0))
        return false;
    check_report(dt < 1.0, __FILE__, __LINE__, "%s took %.3f s of CPU", what, dt);
    return true;
}

/* 100,000 members with one name, and 100,000 files colliding with one directory: linear. */
static void test_many_duplicates(void)
{
    const size_t n = 100000;
    struct zip_archive za = make_za(NULL, 0, n + 1);
    for (size_t i = 0; i < n; i++)
        add_member(&za, "x.npy", 5);
    struct ns *ns = NULL;
    if (build_in_time(&za, &ns, "100,000 duplicates")) {
        CHECK_EQ_U64(ns_count(ns), n + 1);
        uint64_t ino = ns_lookup(ns, NS_ROOT, "x.npy");
        CHECK(ino && ns_get(ns, ino)->member == n - 1);
        ino = ns_lookup(ns, NS_ROOT, "x~1.npy");
        CHECK(ino && ns_get(ns, ino)->member == n - 2);
        ino = ns_lookup(ns, NS_ROOT, "x~50000.npy");
        CHECK(ino && ns_get(ns, ino)->member == n - 1 - 50000);
        ino = ns_lookup(ns, NS_ROOT, "x~99999.npy");
        CHECK(ino && ns_get(ns, ino)->member == 0);
        CHECK_EQ_U64(ns_lookup(ns, NS_ROOT, "x~100000.npy"), 0);
        check_invariants(ns, &za);
    }
    ns_free(ns);
    ns = NULL;

    /* The same names plus "x.npy/y": every file collides with the directory. */
    add_member(&za, "x.npy/y", 7);
    if (build_in_time(&za, &ns, "100,000 collisions with a directory")) {
        uint64_t ino = ns_lookup(ns, NS_ROOT, "x.npy");
        CHECK(ino && ns_get(ns, ino)->is_dir);
        ino = ns_lookup(ns, NS_ROOT, "x~1.npy");
        CHECK(ino && ns_get(ns, ino)->member == n - 1);
        ino = ns_lookup(ns, NS_ROOT, "x~100000.npy");
        CHECK(ino && ns_get(ns, ino)->member == 0);
        CHECK_EQ_U64(ns_count(ns), n + 3);
    }
    ns_free(ns);
    free_za(&za);
}

/* Names x~1.npy .. x.npy~n taken by members of their own, then n duplicates of x.npy: the first
 * duplicate renamed skips the n taken names and the others go on from there, so the build
 * stays linear (probing from ~1 for each duplicate would take n^2 lookups). */
static void test_taken_suffixes(void)
{
    const size_t n = 50000;
    struct zip_archive za = make_za(NULL, 0, 2 * n);
    char buf[64];
    for (size_t k = 1; k <= n; k++)
        add_member(&za, buf, (size_t)snprintf(buf, sizeof buf, "x~%zu.npy", k));
    for (size_t i = 0; i < n; i++)
        add_member(&za, "x.npy", 5);
    struct ns *ns = NULL;
    if (build_in_time(&za, &ns, "50,000 duplicates past 50,000 taken suffixes")) {
        CHECK_EQ_U64(ns_count(ns), 2 * n + 1);
        struct {
            size_t suffix; /* 0: the plain name */
            uint64_t member;
        } want[] = {{0, 2 * n - 1}, {1, 0}, {n, n - 1}, {n + 1, 2 * n - 2}, {2 * n - 1, n}};
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
            if (want[i].suffix)
                snprintf(buf, sizeof buf, "x~%zu.npy", want[i].suffix);
            else
                snprintf(buf, sizeof buf, "x.npy");
            uint64_t ino = ns_lookup(ns, NS_ROOT, buf);
            if (check_report(ino != 0, __FILE__, __LINE__, "%s missing", buf))
                CHECK_EQ_U64(ns_get(ns, ino)->member, want[i].member);
        }
        snprintf(buf, sizeof buf, "x~%zu.npy", 2 * n);
        CHECK_EQ_U64(ns_lookup(ns, NS_ROOT, buf), 0);
        check_invariants(ns, &za);
    }
    ns_free(ns);
    free_za(&za);
}

/* Paths of 32,000 components (a ZIP name has at most 65,535 bytes): every member is found
 * again component by component, under one chain of directories. */
static void test_deep_paths(void)
{
    const size_t depth = 32000, n = 8;
    char *prefix = malloc(2 * depth + 1);
    char *name = malloc(2 * depth + 16);
    if (!prefix || !name)
        abort();
    for (size_t i = 0; i < depth; i++)
        memcpy(prefix + 2 * i, "a/", 2);
    prefix[2 * depth] = '\0';
    struct zip_archive za = make_za(NULL, 0, n);
    for (size_t i = 0; i < n; i++)
        add_member(&za, name, (size_t)snprintf(name, 2 * depth + 16, "%sf%zu", prefix, i));
    struct ns *ns = NULL;
    if (CHECK_EQ_I64(ns_build(&za, &ns), 0)) {
        check_invariants(ns, &za);
        CHECK_EQ_U64(ns_count(ns), 1 + depth + n);
        for (size_t i = 0; i < n; i++) {
            snprintf(name, 2 * depth + 16, "%sf%zu", prefix, i);
            uint64_t ino = path_lookup(ns, name);
            if (check_report(ino != 0, __FILE__, __LINE__, "member %zu not found", i))
                CHECK_EQ_U64(ns_get(ns, ino)->member, i);
        }
    }
    ns_free(ns);
    free_za(&za);
    free(prefix);
    free(name);
}

/* ---------------------------------------------------------------------------------------- */
/* Trees of the generated corpus */

static void test_corpus(const char *dir)
{
    DIR *d = opendir(dir);
    if (!check_report(d != NULL, __FILE__, __LINE__, "cannot open %s", dir))
        return;
    struct dirent *de;
    size_t trees = 0;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".zip") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        struct zip_archive za;
        char msg[256];
        if (zip_open_fd(fd, &za, msg, sizeof msg) == 0) {
            struct ns *ns = NULL;
            check_context("corpus %s", de->d_name);
            if (CHECK_EQ_I64(ns_build(&za, &ns), 0)) {
                check_invariants(ns, &za);
                trees++;
            }
            ns_free(ns);
            zip_close(&za);
        }
        close(fd);
    }
    closedir(d);
    check_context("%s", "");
    check_report(trees >= 20, __FILE__, __LINE__, "only %zu corpus trees checked", trees);
}

static const char *corpus_dir;

static void test_generated_corpus(void)
{
    if (corpus_dir)
        test_corpus(corpus_dir);
    else
        printf("test_namespace: NPZ_CASES not set, corpus trees not checked\n");
}

int main(int argc, char **argv)
{
    corpus_dir = argc > 1 ? argv[1] : getenv("NPZ_CASES");
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN_TEST(test_empty_archive);
    RUN_TEST(test_flat);
    RUN_TEST(test_dropped_components);
    RUN_TEST(test_nul_bytes);
    RUN_TEST(test_implicit_dirs);
    RUN_TEST(test_dir_entries);
    RUN_TEST(test_duplicates);
    RUN_TEST(test_file_vs_directory);
    RUN_TEST(test_directory_named_files);
    RUN_TEST(test_numpy_keys);
    RUN_TEST(test_long_components);
    RUN_TEST(test_cut_without_boundary);
    RUN_TEST(test_cut_to_dots);
    RUN_TEST(test_lookups);
    RUN_TEST(test_many_names);
    RUN_TEST(test_stable_inodes);
    RUN_TEST(test_many_duplicates);
    RUN_TEST(test_taken_suffixes);
    RUN_TEST(test_deep_paths);
    RUN_TEST(test_generated_corpus);
    return check_summary("test_namespace");
}
