/*
 * fuzz_zipdir: the whole read path of an archive, from arbitrary bytes.
 *
 * The input is the archive. It is written to a memfd (one, reused across runs) and then:
 *   1. zip_open on the memfd; on failure the table must be empty and a reason given.
 *   2. Member table invariants: names NUL-terminated with the right length, is_dir matching
 *      the trailing '/', readable members (err == 0) neither under strong encryption nor
 *      AES without its parameters, with a sane local header position and data inside the
 *      file, and no two readable members overlapping.
 *   3. ns_build, and a walk of the whole tree from the root: every node reached exactly once
 *      through the child lists, each child's parent is the directory it is listed in, names
 *      are real path components ("", ".", ".." and '/' never appear, except the root's ""),
 *      ns_lookup finds every child by its name, every file member has exactly one node.
 *   4. npz_open on /proc/self/fd/<memfd> with a 32 KiB span and a 1 MiB cache, which must
 *      agree with step 1 and build the same tree (the numbering is deterministic), then
 *      npz_read of every member in 4..64 KiB pieces, then a few random re-reads (the small
 *      cache forces evictions and re-decodes from checkpoints), then rounds of one random
 *      read per member in turn (many decoders live at once). Checked: reads return exactly
 *      what was asked or a negative errno; broken members give -EIO, encrypted ones (no
 *      password) -EACCES; stored members give the archive's bytes; deflated members give a prefix of what zlib's one-shot inflate of the
 *      same bytes gives, never a byte past where that stops; a deflated member read to its
 *      end succeeds exactly when the stream is valid with the declared size and CRC; members
 *      of other methods (libarchive) give the same bytes every time, with the right CRC when
 *      read in full; once a read failed, the member keeps failing, and once the first pass
 *      read a range, reading it again succeeds with the same bytes.
 * Memory per input stays bounded: at most MEMBER_CAP bytes are asked of any member and
 * TOTAL_CAP of all members together, whatever sizes the central directory claims.
 */
#include "fuzz_common.h"

#include <stdbool.h>

#include "namespace.h"
#include "listing.h"
#include "npz_core.h"
#include "zipdir.h"

#define MEMBER_CAP (4u << 20)
#define TOTAL_CAP (16u << 20)
#define PIECE_MIN (4u << 10)
#define PIECE_MAX (64u << 10)
#define REREADS 3
#define INTERLEAVED_ROUNDS 2

static char fd_path[64];
static unsigned char *piece_buf; /* PIECE_MAX */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fz_diag_open();
    fz_read_allowances();
    /* A fixed zone: mktime (DOS timestamps) then skips re-reading /etc/localtime per call. */
    setenv("TZ", "UTC", 1);
    fz_memfd_open("fuzz_zipdir");
    snprintf(fd_path, sizeof fd_path, "/proc/self/fd/%d", fz_memfd);
    piece_buf = malloc(PIECE_MAX);
    if (!piece_buf)
        abort();
    return 0;
}

static bool is_errno(long rc)
{
    return rc < 0 && rc > -4096;
}

/* ---------------------------------------------------------------------------------------- */
/* member table */

static int by_header(const void *a, const void *b)
{
    const struct zip_member *x = *(struct zip_member *const *)a;
    const struct zip_member *y = *(struct zip_member *const *)b;
    return x->header_off < y->header_off ? -1 : x->header_off > y->header_off;
}

static void check_members(const struct zip_archive *za, size_t size)
{
    FZ_CHECK(za->file_size == size, "file_size %llu, input %zu",
             (unsigned long long)za->file_size, size);
    FZ_CHECK(za->prefix <= za->file_size, "prefix %llu", (unsigned long long)za->prefix);
    FZ_CHECK(za->count == 0 || za->members != NULL, "count %llu without a table",
             (unsigned long long)za->count);
    uint64_t ok = 0;
    for (uint64_t i = 0; i < za->count; i++) {
        const struct zip_member *m = &za->members[i];
        FZ_CHECK(m->name != NULL, "member %llu has no name", (unsigned long long)i);
        FZ_CHECK(m->name[m->name_len] == '\0', "member %llu name not NUL-terminated",
                 (unsigned long long)i);
        if (!memchr(m->name, '\0', m->name_len))
            FZ_CHECK(strlen(m->name) == m->name_len, "member %llu: strlen %zu, name_len %u",
                     (unsigned long long)i, strlen(m->name), m->name_len);
        /* a name ending in '/' is a directory entry unless it holds data (zipdir.h) */
        bool slash = m->name_len > 0 && m->name[m->name_len - 1] == '/';
        FZ_CHECK(m->is_dir == (slash && m->usize == 0),
                 "member %llu is_dir %d for a name %s in '/' and %llu bytes",
                 (unsigned long long)i, m->is_dir, slash ? "ending" : "not ending",
                 (unsigned long long)m->usize);
        if (m->err != 0) {
            FZ_CHECK(is_errno(m->err), "member %llu err %d", (unsigned long long)i, m->err);
            FZ_CHECK(m->why != NULL && m->why[0], "member %llu err %d without a reason",
                     (unsigned long long)i, m->err);
            continue;
        }
        ok++;
        FZ_CHECK(!(m->flags & ZIP_FLAG_STRONG) && (m->method != ZIP_METHOD_AES ||
                 ((m->flags & ZIP_FLAG_ENCRYPTED) && m->aes_version >= 1 &&
                  m->aes_version <= 2 && m->aes_strength >= 1 && m->aes_strength <= 3)),
                 "readable member %llu: strong encryption or AES without its parameters",
                 (unsigned long long)i);
        FZ_CHECK(m->method != ZIP_METHOD_STORED || m->csize == m->usize ||
                 (m->flags & ZIP_FLAG_ENCRYPTED),
                 "stored member %llu: csize %llu != usize %llu", (unsigned long long)i,
                 (unsigned long long)m->csize, (unsigned long long)m->usize);
        FZ_CHECK(m->header_off >= za->prefix, "member %llu: header %llu inside the prefix %llu",
                 (unsigned long long)i, (unsigned long long)m->header_off,
                 (unsigned long long)za->prefix);
        FZ_CHECK(m->header_off <= za->file_size && m->data_off >= m->header_off + 30,
                 "member %llu: header at %llu, data at %llu", (unsigned long long)i,
                 (unsigned long long)m->header_off, (unsigned long long)m->data_off);
        FZ_CHECK(m->data_off <= za->file_size && m->csize <= za->file_size - m->data_off,
                 "member %llu: data %llu + %llu past the end of a %llu-byte file",
                 (unsigned long long)i, (unsigned long long)m->data_off,
                 (unsigned long long)m->csize, (unsigned long long)za->file_size);
    }
    if (ok < 2)
        return;
    /* Readable members own disjoint ranges [header_off, data_off + csize). */
    const struct zip_member **order = malloc(ok * sizeof *order);
    FZ_CHECK(order != NULL, "out of memory");
    uint64_t n = 0;
    for (uint64_t i = 0; i < za->count; i++)
        if (za->members[i].err == 0)
            order[n++] = &za->members[i];
    qsort(order, n, sizeof *order, by_header);
    for (uint64_t i = 0; i + 1 < n; i++)
        FZ_CHECK(order[i + 1]->header_off >= order[i]->data_off + order[i]->csize,
                 "readable members overlap: [%llu, %llu + %llu) and header %llu",
                 (unsigned long long)order[i]->header_off,
                 (unsigned long long)order[i]->data_off, (unsigned long long)order[i]->csize,
                 (unsigned long long)order[i + 1]->header_off);
    free(order);
}

/* ---------------------------------------------------------------------------------------- */
/* namespace */

static void check_ns(const struct ns *ns, const struct zip_archive *za)
{
    uint64_t count = ns_count(ns);
    FZ_CHECK(count >= 1, "no root");
    FZ_CHECK(ns_get(ns, 0) == NULL && ns_get(ns, count + 1) == NULL, "inode out of range");
    const struct ns_node *root = ns_get(ns, NS_ROOT);
    FZ_CHECK(root && root->is_dir && root->parent == NS_ROOT && root->name &&
                 root->name[0] == '\0' && root->member == NS_NO_MEMBER,
             "bad root node");
    FZ_CHECK(ns_lookup(ns, NS_ROOT, "") == 0 && ns_lookup(ns, NS_ROOT, ".") == 0 &&
                 ns_lookup(ns, NS_ROOT, "..") == 0,
             "lookup of '', '.' or '..' succeeded");

    unsigned char *seen = calloc(count + 1, 1);
    uint64_t *queue = malloc(count * sizeof *queue);
    uint32_t *file_nodes = calloc(za->count ? za->count : 1, sizeof *file_nodes);
    FZ_CHECK(seen && queue && file_nodes, "out of memory");

    /* Breadth-first from the root: reaching every node exactly once through the child lists
     * proves the parent links form one tree. */
    uint64_t head = 0, tail = 0, reached = 1;
    queue[tail++] = NS_ROOT;
    seen[NS_ROOT] = 1;
    while (head < tail) {
        uint64_t dir = queue[head++];
        const struct ns_node *d = ns_get(ns, dir);
        FZ_CHECK(d->nchildren == 0 || d->is_dir, "file inode %llu has %llu children",
                 (unsigned long long)dir, (unsigned long long)d->nchildren);
        for (uint64_t i = 0; i < d->nchildren; i++) {
            uint64_t c = ns_child(ns, d, i);
            const struct ns_node *n = ns_get(ns, c);
            FZ_CHECK(n != NULL && c != NS_ROOT, "child %llu of %llu is %llu",
                     (unsigned long long)i, (unsigned long long)dir, (unsigned long long)c);
            FZ_CHECK(!seen[c], "inode %llu reached twice", (unsigned long long)c);
            seen[c] = 1;
            reached++;
            FZ_CHECK(n->parent == dir, "inode %llu listed in %llu but its parent is %llu",
                     (unsigned long long)c, (unsigned long long)dir,
                     (unsigned long long)n->parent);
            const char *name = n->name;
            FZ_CHECK(name != NULL, "inode %llu has no name", (unsigned long long)c);
            size_t len = strlen(name);
            FZ_CHECK(len > 0 && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 &&
                         !strchr(name, '/'),
                     "inode %llu has the name '%s'", (unsigned long long)c, name);
            FZ_CHECK(len <= 255, "inode %llu: name of %zu bytes", (unsigned long long)c, len);
            uint64_t found = ns_lookup(ns, dir, name);
            FZ_CHECK(found == c, "lookup(%llu, '%s') gave %llu, not %llu",
                     (unsigned long long)dir, name, (unsigned long long)found,
                     (unsigned long long)c);
            if (n->is_dir) {
                FZ_CHECK(n->member == NS_NO_MEMBER ||
                             (n->member < za->count && za->members[n->member].is_dir),
                         "directory inode %llu has member %llu", (unsigned long long)c,
                         (unsigned long long)n->member);
                queue[tail++] = c;
            } else {
                FZ_CHECK(n->member < za->count && !za->members[n->member].is_dir,
                         "file inode %llu has member %llu", (unsigned long long)c,
                         (unsigned long long)n->member);
                FZ_CHECK(n->nchildren == 0, "file inode %llu has children",
                         (unsigned long long)c);
                file_nodes[n->member]++;
            }
        }
    }
    FZ_CHECK(reached == count, "%llu of %llu inodes reachable from the root",
             (unsigned long long)reached, (unsigned long long)count);
    for (uint64_t i = 0; i < za->count; i++)
        FZ_CHECK(za->members[i].is_dir || file_nodes[i] == 1,
                 "file member %llu ('%s') has %u nodes", (unsigned long long)i,
                 za->members[i].name, file_nodes[i]);
    free(seen);
    free(queue);
    free(file_nodes);
}

/* The same archive gives the same tree (inode numbers are part of the contract). */
static void check_same_ns(const struct ns *a, const struct ns *b)
{
    FZ_CHECK(ns_count(a) == ns_count(b), "two builds gave %llu and %llu inodes",
             (unsigned long long)ns_count(a), (unsigned long long)ns_count(b));
    for (uint64_t ino = 1; ino <= ns_count(a); ino++) {
        const struct ns_node *x = ns_get(a, ino), *y = ns_get(b, ino);
        FZ_CHECK(x->parent == y->parent && x->member == y->member && x->is_dir == y->is_dir &&
                     x->nchildren == y->nchildren && strcmp(x->name, y->name) == 0,
                 "two builds differ at inode %llu", (unsigned long long)ino);
    }
}

static void check_same_members(const struct zip_archive *a, const struct zip_archive *b)
{
    FZ_CHECK(a->count == b->count && a->prefix == b->prefix && a->file_size == b->file_size,
             "two opens of the same bytes differ");
    for (uint64_t i = 0; i < a->count; i++) {
        const struct zip_member *x = &a->members[i], *y = &b->members[i];
        FZ_CHECK(x->name_len == y->name_len && memcmp(x->name, y->name, x->name_len) == 0 &&
                     x->method == y->method && x->flags == y->flags && x->crc32 == y->crc32 &&
                     x->csize == y->csize && x->usize == y->usize && x->err == y->err &&
                     x->header_off == y->header_off &&
                     (x->err != 0 || x->data_off == y->data_off),
                 "two opens of the same bytes differ at member %llu", (unsigned long long)i);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* reads */

enum member_kind { KIND_STORED, KIND_DEFLATED, KIND_OTHER };

/* What a member's reads must give, kept for the whole input (the interleaved phase goes back
 * to every member). */
struct member_ref {
    enum member_kind kind;
    uint64_t want;               /* bytes of the member read: min(usize, caps) */
    const unsigned char *stored; /* stored: the member's bytes in the input */
    unsigned char *buf;          /* deflated: zlib's one-shot output (want + 1 bytes room);
                                    other methods: what the first pass read (no decoder here
                                    to compare with, so later reads must repeat it) */
    enum fz_inflate_status st;   /* deflated: how zlib's one-shot inflate ended */
    size_t made;                 /* valid bytes in buf */
    bool failed;                 /* a read failed: all later ones must */
};

static const char *kind_name(enum member_kind k)
{
    return k == KIND_STORED ? "stored" : k == KIND_DEFLATED ? "deflated" : "other-method";
}

/* Checks one successful read of [off, off + n) (in piece_buf) against the reference. */
static void check_bytes(uint64_t idx, const struct member_ref *r, uint64_t off, size_t n)
{
    const unsigned char *want;
    size_t cmp = n;
    if (r->kind == KIND_STORED) {
        want = r->stored + off;
    } else {
        if (r->kind == KIND_DEFLATED)
            FZ_CHECK(off + n <= r->made,
                     "member %llu: read [%llu, +%zu) succeeded but zlib stops at %zu (%s)",
                     (unsigned long long)idx, (unsigned long long)off, n, r->made,
                     r->st == FZ_END ? "stream end" : r->st == FZ_ERROR ? "error" : "cap");
        if (off >= r->made)
            return;
        if (cmp > r->made - off)
            cmp = r->made - off;
        want = r->buf + off;
    }
    if (memcmp(piece_buf, want, cmp) != 0) {
        size_t i = 0;
        while (piece_buf[i] == want[i])
            i++;
        FZ_CHECK(0, "%s member %llu: byte %llu is %u, expected %u", kind_name(r->kind),
                 (unsigned long long)idx, (unsigned long long)(off + i), piece_buf[i], want[i]);
    }
}

/* A read of [at, at + len) after the first pass: the first pass read all of [0, want) unless
 * it failed, so this must succeed with the same bytes, or fail if the member failed. */
static void reread(struct npz *npz, uint64_t idx, struct member_ref *ref, uint64_t at,
                   size_t len, const char *what)
{
    ssize_t r = npz_read_member(npz, idx, piece_buf, len, at, READ_BLOCK, NULL, NULL);
    if (r == -ENOMEM)
        return;
    bool tolerated = ref->kind == KIND_DEFLATED && fz_allow_decode_eio;
    if (ref->failed) {
        FZ_CHECK(r == -EIO || tolerated || (ref->kind == KIND_OTHER && fz_allow_archive_cached),
                 "%s member %llu failed, then a %s at %llu gave %zd", kind_name(ref->kind),
                 (unsigned long long)idx, what, (unsigned long long)at, r);
        return;
    }
    if (r == -EIO && tolerated) {
        ref->failed = true;
        return;
    }
    FZ_CHECK(r >= 0, "%s member %llu: %s [%llu, +%zu) gave %zd after the first pass read it",
             kind_name(ref->kind), (unsigned long long)idx, what, (unsigned long long)at, len,
             r);
    FZ_CHECK((size_t)r == len, "member %llu: %s [%llu, +%zu) gave %zd bytes",
             (unsigned long long)idx, what, (unsigned long long)at, len, r);
    check_bytes(idx, ref, at, len);
}

/* The first pass over member idx: edge requests, a sequential read of [0, want) in pieces,
 * the whole-member verdict, then a few random re-reads. */
static void read_member(struct npz *npz, const struct zip_member *m, uint64_t idx,
                        const uint8_t *data, struct member_ref *ref, uint64_t *rng)
{
    ssize_t r;
    uint64_t want = ref->want;
    r = npz_read_member(npz, idx, piece_buf, 16, m->usize, READ_BLOCK, NULL, NULL);
    FZ_CHECK(r == 0, "read at usize of member %llu gave %zd", (unsigned long long)idx, r);
    r = npz_read_member(npz, idx, piece_buf, 0, 0, READ_BLOCK, NULL, NULL);
    FZ_CHECK(r == 0 || (r == -EIO && m->err != 0), "empty read of member %llu gave %zd",
             (unsigned long long)idx, r);

    if (m->err != 0 || (m->flags & ZIP_FLAG_ENCRYPTED)) { /* no password: locked */
        r = npz_read_member(npz, idx, piece_buf, PIECE_MIN, 0, READ_BLOCK, NULL, NULL);
        FZ_CHECK(r == (m->usize ? (m->err ? -EIO : -EACCES) : 0),
                 "broken or encrypted member %llu (%s) read gave %zd", (unsigned long long)idx,
                 m->err ? m->why : "encrypted", r);
        return;
    }
    if (want == 0)
        return;

    if (ref->kind == KIND_STORED) {
        ref->stored = data + m->data_off;
    } else {
        ref->buf = malloc(want + 1);
        FZ_CHECK(ref->buf != NULL, "out of memory");
        if (ref->kind == KIND_DEFLATED)
            ref->st = fz_inflate_ref(data + m->data_off, m->csize, ref->buf, want + 1,
                                     &ref->made);
    }

    uint64_t off = 0;
    while (off < want) {
        size_t len = (size_t)fz_range(rng, PIECE_MIN, PIECE_MAX);
        if (len > want - off)
            len = (size_t)(want - off);
        r = npz_read_member(npz, idx, piece_buf, len, off, READ_BLOCK, NULL, NULL);
        if (r == -ENOMEM) {
            ref->want = 0; /* nothing to hold it to */
            return;
        }
        if (r < 0) {
            FZ_CHECK(ref->kind != KIND_STORED, "stored member %llu: read gave %zd",
                     (unsigned long long)idx, r);
            FZ_CHECK(r == -EIO, "member %llu: read [%llu, +%zu) gave %zd",
                     (unsigned long long)idx, (unsigned long long)off, len, r);
            ref->failed = true;
            break;
        }
        FZ_CHECK((size_t)r == len, "member %llu: read [%llu, +%zu) gave %zd bytes",
                 (unsigned long long)idx, (unsigned long long)off, len, r);
        check_bytes(idx, ref, off, len);
        if (ref->kind == KIND_OTHER) {
            memcpy(ref->buf + off, piece_buf, len);
            ref->made = off + len;
        }
        off += len;
    }

    if (ref->kind == KIND_DEFLATED && want == m->usize) {
        /* The whole member was asked for, so the index reached the end of the stream. (When
         * only part was, failing proves little: the chunk being decoded may run on past
         * `want`, up to a block boundary, where the reference was not computed.) */
        bool valid = ref->st == FZ_END && ref->made == m->usize &&
                     (uint32_t)crc32(0, ref->buf, (uInt)ref->made) == m->crc32;
        FZ_CHECK(ref->failed == !valid,
                 "member %llu (%llu bytes): reading it all %s, but zlib %s",
                 (unsigned long long)idx, (unsigned long long)m->usize,
                 ref->failed ? "failed" : "succeeded",
                 valid ? "decodes it with the right size and CRC"
                       : "does not (wrong size, CRC or data)");
    }
    if (ref->kind == KIND_OTHER && !ref->failed && want == m->usize)
        FZ_CHECK((uint32_t)crc32(0, ref->buf, (uInt)want) == m->crc32,
                 "method %u member %llu read in full, but its CRC is wrong", m->method,
                 (unsigned long long)idx);

    for (int i = 0; i < REREADS; i++) {
        uint64_t at = fz_range(rng, 0, want - 1);
        size_t len = (size_t)fz_range(rng, 1, PIECE_MAX);
        if (len > want - at)
            len = (size_t)(want - at);
        reread(npz, idx, ref, at, len, "re-read");
    }
}

/* The metadata of every inode (npy headers from hostile member data included): every
 * attribute listed can be read, with the length the size query gave. */
static void check_metadata(struct npz *npz)
{
    struct npz_fsinfo info;
    npz_statfs(npz, &info);
    for (uint64_t idx = 0; idx < info.members; idx++) {
        struct npz_member_info mi;
        FZ_CHECK(npz_member(npz, idx, &mi) == 0, "member %llu has no info",
                 (unsigned long long)idx);
    }
    char names[1024], val[1024];
    for (uint64_t ino = NPZ_ROOT; ino <= info.inodes; ino++) {
        ssize_t n = npz_listxattr(npz, ino, names, sizeof names);
        FZ_CHECK(n >= 0 && n == npz_listxattr(npz, ino, NULL, 0), "listxattr of %llu: %zd",
                 (unsigned long long)ino, n);
        for (ssize_t at = 0; at < n; at += (ssize_t)strlen(names + at) + 1) {
            ssize_t want = npz_getxattr(npz, ino, names + at, NULL, 0);
            ssize_t got = npz_getxattr(npz, ino, names + at, val, sizeof val);
            FZ_CHECK(want >= 0 && (got == want || (got == -ERANGE && want > (ssize_t)sizeof val)),
                     "%s of %llu: %zd, then %zd", names + at, (unsigned long long)ino, want, got);
        }
    }
    FILE *null = fopen("/dev/null", "w");
    if (null) {
        FZ_CHECK(listing_write(npz, null, info.members & 1) == 0, "listing failed");
        fclose(null);
    }
}

static void check_reads(struct npz *npz, const struct zip_archive *za, const uint8_t *data,
                        size_t size)
{
    const struct zip_archive *nz = npz_zip(npz);
    check_same_members(za, nz);

    uint64_t rng = fz_hash(data, size);
    ssize_t r = npz_read_member(npz, nz->count, piece_buf, 1, 0, READ_BLOCK, NULL, NULL);
    FZ_CHECK(r == -EINVAL, "read of member %llu of %llu gave %zd",
             (unsigned long long)nz->count, (unsigned long long)nz->count, r);

    struct member_ref *refs = calloc(nz->count ? nz->count : 1, sizeof *refs);
    FZ_CHECK(refs != NULL, "out of memory");
    uint64_t budget = TOTAL_CAP;
    for (uint64_t i = 0; i < nz->count; i++) {
        const struct zip_member *m = &nz->members[i];
        struct member_ref *ref = &refs[i];
        ref->kind = m->method == ZIP_METHOD_STORED     ? KIND_STORED
                    : m->method == ZIP_METHOD_DEFLATED ? KIND_DEFLATED
                                                       : KIND_OTHER;
        ref->want = m->err || (m->flags & ZIP_FLAG_ENCRYPTED) ? 0
                    : m->usize < MEMBER_CAP ? m->usize : MEMBER_CAP;
        if (ref->want > budget)
            ref->want = budget;
        budget -= ref->want;
        read_member(npz, m, i, data, ref, &rng);
    }

    /* Interleaved: members in turn, so that many decoders are live at once and the shared
     * cache evicts across members. */
    for (int round = 0; round < INTERLEAVED_ROUNDS; round++) {
        for (uint64_t i = 0; i < nz->count; i++) {
            struct member_ref *ref = &refs[i];
            if (ref->want == 0 || ref->kind == KIND_STORED)
                continue;
            uint64_t at = fz_range(&rng, 0, ref->want - 1);
            size_t len = (size_t)fz_range(&rng, 1, PIECE_MAX);
            if (len > ref->want - at)
                len = (size_t)(ref->want - at);
            reread(npz, i, ref, at, len, "interleaved read");
        }
    }
    for (uint64_t i = 0; i < nz->count; i++)
        free(refs[i].buf);
    free(refs);
}

/* ---------------------------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_memfd_write(data, size, 0);

    struct zip_archive za;
    char msg[256] = "";
    struct source *src = fz_source();
    int rc = zip_open(src, &za, msg, sizeof msg);
    source_close(src); /* only zip_open reads through it */
    za.src = NULL;
    if (rc < 0) {
        FZ_CHECK(is_errno(rc), "zip_open returned %d", rc);
        FZ_CHECK(msg[0] != '\0', "zip_open failed (%d) without a reason", rc);
        FZ_CHECK(za.members == NULL && za.name_pool == NULL && za.count == 0,
                 "zip_open failed (%d) but left a table behind", rc);
        zip_close(&za); /* must be harmless */
        /* npz_open must agree. */
        struct npz *npz = NULL;
        /* A message buffer of 1..24 bytes on the heap: ASan sees any overflow. */
        size_t msg2_len = 1 + fz_hash(data, size) % 24;
        char *msg2 = malloc(msg2_len);
        FZ_CHECK(msg2 != NULL, "out of memory");
        /* A small budget that a hostile archive must not get past (-rss_limit_mb checks it), and
         * no saved indexes: a fuzzer must not read or write the user's cache. */
        struct npz_options opt = {.span = 32768, .cache_bytes = 1u << 20,
                                  .index_mem = 8u << 20, .decoder_mem = 64u << 20,
                                  .no_index = 1, .no_prefetch = 1};
        int rc2 = npz_open(fd_path, &opt, &npz, msg2, msg2_len);
        FZ_CHECK(rc2 == rc || rc2 == -ENOMEM, "zip_open gave %d (%s), npz_open %d", rc, msg,
                 rc2);
        FZ_CHECK(memchr(msg2, '\0', msg2_len) != NULL, "npz_open's message not terminated");
        free(msg2);
        if (rc2 == 0)
            npz_close(npz);
        return 0;
    }
    FZ_CHECK(rc == 0, "zip_open returned %d", rc);
    check_members(&za, size);

    struct ns *ns = NULL;
    rc = ns_build(&za, &ns);
    FZ_CHECK(rc == 0 || rc == -ENOMEM, "ns_build returned %d", rc);
    if (rc == 0)
        check_ns(ns, &za);

    struct npz_options opt = {.span = 32768, .cache_bytes = 1u << 20, .index_mem = 8u << 20,
                              .decoder_mem = 64u << 20, .no_index = 1, .no_prefetch = 1};
    struct npz *npz = NULL;
    char msg2[256] = "";
    rc = npz_open(fd_path, &opt, &npz, msg2, sizeof msg2);
    FZ_CHECK(rc == 0 || rc == -ENOMEM, "zip_open succeeded but npz_open gave %d (%s)", rc,
             msg2);
    if (rc == 0) {
        if (ns)
            check_same_ns(ns, npz_ns(npz));
        check_reads(npz, &za, data, size);
        check_metadata(npz);
        npz_close(npz);
    }
    ns_free(ns);
    zip_close(&za);
    zip_close(&za); /* a second close must be harmless */
    return 0;
}
