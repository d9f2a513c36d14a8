/*
 * main: command line, checks that give one clear line before anything is mounted, then the
 * libfuse session. The archive is opened and indexed before mounting, so a bad archive never
 * leaves a mount behind; the parent returns only once the mount exists and the daemon runs.
 */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "autounmount.h"
#include "fuse_ops.h"
#include "io.h"
#include "listing.h"
#include "log.h"
#include "secret.h"
#include "optimize.h"

struct config {
    const char *archive;
    char *span;
    char *disk_span;
    char *cache;
    char *index_mem;
    char *threads;
    int noprefetch;
    char *index_dir;
    int noindex;
    int index_mode;        /* --index: the non-option arguments are archives or directories */
    int sidecar;           /* --index --sidecar: ...and each gets ARCHIVE.npzidx */
    char *block, *remote_cache, *timeout, *endpoint; /* remote archives (source.h) */
    int list_mode;         /* --list [--json] ARCHIVE */
    int json;
    const char **archives;
    int narchives;
    unsigned max_read;
    char *max_readahead;    /* unset: by the archive (default_readahead) */
    int read_mode;          /* READ_BY_ARCHIVE, or -o sync_read / async_read (the last wins) */
    char *decoder_mem;
    int help;
    int version;
    int rw;
    char *uid, *gid, *umask, *fmask, *dmask;
    int noauto_unmount;
    int nofollow;
    int blkdev;
    char *logfile;
    char *password_file;
    int askpass;
    char *made_mountpoint; /* the directory npzmount created for the mount, removed after */
    int optimize_mode;     /* --optimize IN OUT: the non-option arguments are the two files */
    unsigned max_open;     /* a tree of archives: how many may be open at once */
    int compress;
    char *chunk_size;
};

enum { READ_BY_ARCHIVE, READ_SYNC, READ_ASYNC };

#define OPT(t, p) {t, offsetof(struct config, p), 1}
static const struct fuse_opt opt_spec[] = {
    {"span=%s", offsetof(struct config, span), 0},
    {"disk_span=%s", offsetof(struct config, disk_span), 0},
    {"cache=%s", offsetof(struct config, cache), 0},
    {"index_mem=%s", offsetof(struct config, index_mem), 0},
    {"threads=%s", offsetof(struct config, threads), 0},
    {"noprefetch", offsetof(struct config, noprefetch), 1},
    {"index_dir=%s", offsetof(struct config, index_dir), 0},
    {"noindex", offsetof(struct config, noindex), 1},
    {"decoder_mem=%s", offsetof(struct config, decoder_mem), 0},
    {"block=%s", offsetof(struct config, block), 0},
    {"remote_cache=%s", offsetof(struct config, remote_cache), 0},
    {"timeout=%s", offsetof(struct config, timeout), 0},
    {"endpoint=%s", offsetof(struct config, endpoint), 0},
    OPT("--sidecar", sidecar),
    {"max_open=%u", offsetof(struct config, max_open), 0},
    OPT("-h", help), OPT("--help", help), OPT("-V", version), OPT("--version", version),
    OPT("--index", index_mode), OPT("--list", list_mode), OPT("--json", json),
    OPT("--optimize", optimize_mode), OPT("--compress", compress),
    {"--threads=%s", offsetof(struct config, threads), 0},
    {"--chunk-size=%s", offsetof(struct config, chunk_size), 0},
    /* libfuse mounts with max_read but fails INIT (after the parent has exited 0) unless the
     * file system repeats it: note it, and keep it for libfuse. */
    {"max_read=%u", offsetof(struct config, max_read), 0},
    FUSE_OPT_KEY("max_read=", FUSE_OPT_KEY_KEEP),
    /* a connection setting, given to the kernel at INIT: not a mount option */
    {"max_readahead=%s", offsetof(struct config, max_readahead), 0},
    {"sync_read", offsetof(struct config, read_mode), READ_SYNC},
    {"async_read", offsetof(struct config, read_mode), READ_ASYNC},
    OPT("rw", rw),
    /* block-device options, which fusermount3 (auto_unmount) would refuse in its own words */
    OPT("blkdev", blkdev), OPT("blksize=", blkdev),
    {"uid=%s", offsetof(struct config, uid), 0},
    {"gid=%s", offsetof(struct config, gid), 0},
    {"umask=%s", offsetof(struct config, umask), 0},
    {"fmask=%s", offsetof(struct config, fmask), 0},
    {"dmask=%s", offsetof(struct config, dmask), 0},
    OPT("noauto_unmount", noauto_unmount),
    OPT("nofollow", nofollow),
    {"logfile=%s", offsetof(struct config, logfile), 0},
    {"password_file=%s", offsetof(struct config, password_file), 0},
    OPT("askpass", askpass),
    FUSE_OPT_END,
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: npzmount [options] ARCHIVE [MOUNTPOINT]\n"
            "       npzmount [options] DIRECTORY MOUNTPOINT\n"
            "       npzmount [options] ARCHIVE|DIRECTORY... MOUNTPOINT\n"
            "\n"
            "Mount a NumPy .npz (ZIP) archive read-only; every member appears as a plain file,\n"
            "so np.load(MOUNTPOINT/'x.npy', mmap_mode='r') works. Unmount with\n"
            "'fusermount3 -u MOUNTPOINT' ('fusermount3 -uz' while files are still in use).\n"
            "ARCHIVE is a file, or a URL: http://, https:// or s3://BUCKET/KEY (read with\n"
            "ranged requests). Without MOUNTPOINT, the archive's name (a URL's last path\n"
            "segment) without its extension is created in the current directory, and\n"
            "removed again at unmount.\n"
            "A DIRECTORY, or several archives, are mounted as a tree in which every .npz and\n"
            ".zip file is a directory of its members and other regular files are as they are.\n"
            "\n"
            "npzmount options:\n"
            "    -h   --help            print this help and exit\n"
            "    -V   --version         print the version and exit\n"
            "    --list [--json] ARCHIVE  list the members (key, path, size, dtype, shape...)\n"
            "                           without mounting; --json: as one JSON array\n"
            "    --index [--sidecar] ARCHIVE|DIRECTORY...  build and save the indexes without\n"
            "                           mounting (of every .npz and .zip in a DIRECTORY's tree);\n"
            "                           --sidecar: also into ARCHIVE.npzidx next to each (local)\n"
            "                           archive, which every mount of it then uses first\n"
            "    -f                     foreground: do not detach, log to stderr\n"
            "    -d   -o debug          foreground, with a trace of every FUSE request\n"
            "    -s                     single-threaded\n"
            "    -o clone_fd            one /dev/fuse descriptor per FUSE thread\n"
            "    -o max_threads=N       bound of FUSE threads (default 10)\n"
            "    -o max_idle_threads=N  idle FUSE threads kept (default unbounded)\n"
            "    -o max_readahead=N     the kernel's window around a page fault (default 96K\n"
            "                           for compressed archives, else the kernel's 128K)\n"
            "    -o sync_read           reads one at a time, which Ctrl-C can stop (default)\n"
            "    -o async_read          several reads in flight (default for one local\n"
            "                           archive whose members are all stored)\n"
            "    -o span=SIZE           output bytes between deflate checkpoints (default 1M)\n"
            "    -o disk_span=SIZE      spacing of the extra checkpoints kept on disk, in the\n"
            "                           index dir (default 128K; 0: none)\n"
            "    -o cache=SIZE          bound of the decoded-data cache (default 16M)\n"
            "    -o index_mem=SIZE      bound of the checkpoint index memory (default 64M)\n"
            "    -o threads=N           decode worker threads (default: CPUs, at least 2)\n"
            "    -o noprefetch          no background indexing of compressed members\n"
            "    -o index_dir=DIR       where indexes are saved (default ~/.cache/npzmount)\n"
            "    -o noindex             neither load nor save indexes\n"
            "    -o decoder_mem=SIZE    bound of the state of bzip2/LZMA/xz/zstd/PPMd decoders\n"
            "                           (default 320M)\n"
            "    -o max_open=N          a tree: archives and files open at once (default 64)\n"
            "    -o uid=N,gid=N         owner and group of every file (default: the mounter's)\n"
            "    -o umask=NNN           permission bits (octal) removed from files and\n"
            "                           directories (default 0: files 0444, directories 0555)\n"
            "    -o fmask=NNN           ... from files only; -o dmask=NNN: from directories only\n"
            "    -o logfile=PATH        append messages to PATH (default: stderr with -f, else\n"
            "                           the system log, else a file named at mount time)\n"
            "    -o nofollow            once the archive changed, read EIO instead of switching\n"
            "                           to its new version\n"
            "    -o noauto_unmount      leave the mount behind (stale) if the daemon is killed\n"
            "    -o block=SIZE          remote archives: unit of ranged requests (default 1M)\n"
            "    -o remote_cache=SIZE   remote archives: bound of the cache of fetched blocks\n"
            "                           (default 64M)\n"
            "    -o timeout=SECONDS     remote archives: the longest a read waits, retries\n"
            "                           included, before it fails with EIO (default 30)\n"
            "    -o endpoint=URL        s3:// archives: the S3 endpoint (default\n"
            "                           $AWS_ENDPOINT_URL, else AWS)\n"
            "    -o password_file=PATH  password of encrypted members (ZipCrypto, WinZip AES):\n"
            "                           the one line of PATH\n"
            "    -o askpass             ask for that password on the terminal\n"
            "    --optimize IN OUT      rewrite IN as a seek-optimized ZIP (SOZip) into OUT;\n"
            "                           with --compress (stored members deflated too),\n"
            "                           --chunk-size=SIZE (default 32k), --threads=N\n"
            "    SIZE is a number of bytes with an optional k, M or G suffix (powers of 1024).\n"
            "\n");
}

static int error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("npzmount: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

/* An archive as messages show it (source_display): no credentials of a URL. One buffer: each
 * message shows one archive. */
static const char *shown(const char *spec)
{
    static char buf[PATH_MAX + 64];
    source_display(spec, buf, sizeof buf);
    return buf;
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    (void)outargs;
    struct config *cfg = data;
    if (key != FUSE_OPT_KEY_NONOPT)
        return 1;
    if (!cfg->archive && !cfg->index_mode && !cfg->optimize_mode) {
        cfg->archive = arg;
        return 0;
    }
    /* --index and --optimize: all the files; a mount: more archives and the mountpoint (see
     * tree_args) */
    const char **a = realloc(cfg->archives, (size_t)(cfg->narchives + 1) * sizeof *a);
    if (!a)
        return -1;
    a[cfg->narchives++] = arg;
    cfg->archives = a;
    return 0;
}

/* Reroutes libfuse's own messages ("fuse: ...\n", sometimes written in several pieces) into
 * our one-line format: pieces are gathered until the newline. Debug output passes through. */
static void fuse_logger(enum fuse_log_level level, const char *fmt, va_list ap)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static char line[1024];
    static size_t used;
    if (level >= FUSE_LOG_DEBUG) {
        vfprintf(stderr, fmt, ap);
        return;
    }
    pthread_mutex_lock(&lock);
    vsnprintf(line + used, sizeof line - used, fmt, ap);
    used = strlen(line);
    char *nl = strchr(line, '\n');
    if (nl || used >= sizeof line - 1) {
        if (nl)
            *nl = '\0';
        log_error("%s", strncmp(line, "fuse: ", 6) == 0 ? line + 6 : line);
        used = 0;
        line[0] = '\0';
    }
    pthread_mutex_unlock(&lock);
}

/* Parses "123", "64k", "1M", "2G"; returns 0 or -EINVAL. */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    if (*s < '0' || *s > '9') /* strtoull would accept blanks and a minus sign */
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    int shift = 0;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: return -EINVAL;
    }
    if (*end == 'i' || *end == 'B')
        end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
    if (*end || v > (UINT64_MAX >> shift))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

/* Decodes the octal escapes of a /proc/self/mountinfo field in place. */
static void unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
            s += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

static int is_mountpoint(const char *path)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return 0;
    char *line = NULL;
    size_t cap = 0;
    int found = 0;
    while (!found && getline(&line, &cap, f) > 0) {
        char mnt[PATH_MAX + 1];
        if (sscanf(line, "%*s %*s %*s %*s %" "4096" "s", mnt) == 1) {
            unescape(mnt);
            found = strcmp(mnt, path) == 0;
        }
    }
    free(line);
    fclose(f);
    return found;
}

static int check_mountpoint(const char *mp)
{
    struct stat st;
    char real[PATH_MAX];
    struct statvfs sv;
    /* statfs always reaches the file system, where stat may be answered from the cache */
    if (statvfs(mp, &sv) < 0 && (errno == ENOTCONN || errno == ECONNABORTED))
        return error(1, "%s: a stale mount whose daemon is gone; remove it with "
                        "'fusermount3 -u %s'", mp, mp);
    if (stat(mp, &st) < 0)
        return error(1, "%s: %s", mp, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return error(1, "%s: mountpoint is not a directory", mp);
    if (realpath(mp, real) && is_mountpoint(real))
        return error(1, "%s: already mounted", mp);
    return 0;
}

/* path made absolute against the current directory, symbolic links kept (the daemon opens
 * the archive again by this path after a change, from "/"); NULL when out of memory. */
static char *absolute_path(const char *path)
{
    char cwd[PATH_MAX];
    if (path[0] == '/' || source_is_remote(path) || !getcwd(cwd, sizeof cwd))
        return strdup(path);
    size_t len = strlen(cwd) + strlen(path) + 2;
    char *out = malloc(len);
    if (out)
        snprintf(out, len, "%s/%s", cwd, path);
    return out;
}

/* Without a mount point: the archive's base name less its extension (or plus ".d" when it
 * has none), in the current directory. Created when missing, and then noted in
 * cfg->made_mountpoint so that it goes again at unmount; *out is absolute, since the daemon
 * leaves the current directory. Returns 0 or an exit status. */
static int default_mountpoint(struct config *cfg, char **out)
{
    /* a URL's path ends before its query or fragment */
    size_t end = source_is_remote(cfg->archive) ? strcspn(cfg->archive, "?#")
                                                 : strlen(cfg->archive);
    const char *base = cfg->archive, *dot = NULL;
    for (const char *p = cfg->archive; p < cfg->archive + end; p++) {
        if (*p == '/') {
            base = p + 1;
            dot = NULL;
        } else if (*p == '.') {
            dot = p;
        }
    }
    size_t stem = dot && dot > base ? (size_t)(dot - base) : (size_t)(cfg->archive + end - base);
    char name[NAME_MAX + 1];
    if (stem == 0 || snprintf(name, sizeof name, "%.*s%s", (int)stem, base,
                              dot && dot > base ? "" : ".d") >= (int)sizeof name)
        return error(2, "%s: cannot name a mount point after it; give one", shown(cfg->archive));
    bool made = mkdir(name, 0755) == 0;
    if (!made && errno != EEXIST)
        return error(1, "%s: cannot create the mount point: %s", name, strerror(errno));
    *out = realpath(name, NULL);
    if (!*out) {
        int e = errno;
        if (made)
            rmdir(name);
        return error(1, "%s: %s", name, strerror(e));
    }
    if (made)
        cfg->made_mountpoint = *out;
    return 0;
}

/* Parses a decimal id or an octal mask no larger than max; returns 0 or -EINVAL. */
static int parse_number(const char *s, int base, unsigned long max, unsigned long *out)
{
    char *end;
    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    unsigned long v = strtoul(s, &end, base);
    if (errno || *end || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* Owner, group and permission masks: -o uid=,gid=,umask=,fmask=,dmask= (fmask and dmask
 * override umask for their kind). */
static int parse_owner(const struct config *cfg, struct fs *fs)
{
    unsigned long v;
    fs->uid = getuid();
    fs->gid = getgid();
    if (cfg->uid && parse_number(cfg->uid, 10, UINT32_MAX - 1, &v) < 0)
        return error(2, "uid=%s: expected a numeric user id", cfg->uid);
    if (cfg->uid)
        fs->uid = (uid_t)v;
    if (cfg->gid && parse_number(cfg->gid, 10, UINT32_MAX - 1, &v) < 0)
        return error(2, "gid=%s: expected a numeric group id", cfg->gid);
    if (cfg->gid)
        fs->gid = (gid_t)v;
    const char *const names[3] = {"umask", "fmask", "dmask"};
    const char *const vals[3] = {cfg->umask, cfg->fmask, cfg->dmask};
    mode_t masks[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        if (vals[i] && parse_number(vals[i], 8, 0777, &v) < 0)
            return error(2, "%s=%s: expected an octal mask such as 022", names[i], vals[i]);
        masks[i] = vals[i] ? (mode_t)v : masks[0];
    }
    fs->fmask = masks[1];
    fs->dmask = masks[2];
    return 0;
}

/* -o block=, remote_cache=, timeout=, endpoint=: how remote archives are read. */
static int parse_remote(const struct config *cfg, struct source_options *r)
{
    if (cfg->block && (parse_size(cfg->block, &r->block) < 0 || r->block < 4096 ||
                       r->block > (64u << 20)))
        return error(2, "block=%s: expected a size from 4k to 64M", cfg->block);
    if (cfg->remote_cache &&
        (parse_size(cfg->remote_cache, &r->cache_bytes) < 0 || r->cache_bytes == 0))
        return error(2, "remote_cache=%s: expected a size such as 64M", cfg->remote_cache);
    if (cfg->timeout) {
        unsigned long s;
        if (parse_number(cfg->timeout, 10, 86400, &s) < 0 || s == 0)
            return error(2, "timeout=%s: expected a number of seconds from 1 to 86400",
                         cfg->timeout);
        r->timeout_s = (unsigned)s;
    }
    if (cfg->endpoint && !source_is_remote(cfg->endpoint))
        return error(2, "endpoint=%s: expected an http:// or https:// URL", cfg->endpoint);
    r->endpoint = cfg->endpoint;
    return 0;
}

static int parse_tuning(const struct config *cfg, struct npz_options *o)
{
    if (cfg->span && (parse_size(cfg->span, &o->span) < 0 || o->span < NPZ_MIN_SPAN ||
                      o->span > NPZ_MAX_SPAN))
        return error(2, "span=%s: expected a size from 32k to 64M", cfg->span);
    if (cfg->disk_span) {
        if (parse_size(cfg->disk_span, &o->disk_span) < 0 ||
            (o->disk_span && (o->disk_span < NPZ_MIN_SPAN || o->disk_span > NPZ_MAX_SPAN)))
            return error(2, "disk_span=%s: expected 0 or a size from 32k to 64M", cfg->disk_span);
        if (o->disk_span == 0)
            o->disk_span = NPZ_DISK_SPAN_OFF;
    }
    if (cfg->cache && (parse_size(cfg->cache, &o->cache_bytes) < 0 || o->cache_bytes == 0))
        return error(2, "cache=%s: expected a size such as 64M", cfg->cache);
    if (cfg->index_mem && (parse_size(cfg->index_mem, &o->index_mem) < 0 || o->index_mem == 0))
        return error(2, "index_mem=%s: expected a size such as 64M", cfg->index_mem);
    if (cfg->threads) {
        uint64_t n;
        if (parse_size(cfg->threads, &n) < 0 || n == 0 || n > 256)
            return error(2, "threads=%s: expected a number from 1 to 256", cfg->threads);
        o->threads = (unsigned)n;
    }
    o->no_prefetch = cfg->noprefetch;
    o->no_index = cfg->noindex;
    if (cfg->index_dir && cfg->index_dir[0] != '/')
        return error(2, "index_dir=%s: expected an absolute path", cfg->index_dir);
    o->index_dir = cfg->index_dir;
    if (cfg->decoder_mem &&
        (parse_size(cfg->decoder_mem, &o->decoder_mem) < 0 || o->decoder_mem == 0))
        return error(2, "decoder_mem=%s: expected a size such as 64M", cfg->decoder_mem);
    return parse_remote(cfg, &o->remote);
}

/* -o max_readahead=: a size of at least one page; the kernel caps it at its own (128K). */
static int parse_readahead(const struct config *cfg, unsigned *out)
{
    uint64_t n;
    if (!cfg->max_readahead)
        return 0;
    if (parse_size(cfg->max_readahead, &n) < 0 || n < 4096 || n > (1u << 30))
        return error(2, "max_readahead=%s: expected a size from 4k to 1G", cfg->max_readahead);
    *out = (unsigned)n;
    return 0;
}

/* --index progress on a terminal: bytes, rate, time left, redrawn at most 5 times a second. */
struct progress {
    const char *name;
    struct timespec start, last;
};

static double seconds_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static void show_progress(void *ctx, uint64_t done, uint64_t total)
{
    struct progress *p = ctx;
    if (seconds_since(&p->last) < 0.2 && done < total)
        return;
    clock_gettime(CLOCK_MONOTONIC, &p->last);
    double t = seconds_since(&p->start), rate = t > 0 ? (double)done / t : 0;
    fprintf(stderr, "\r%s: %.1f / %.1f MiB, %.0f MB/s, %.0f s left   ", p->name,
            (double)done / 1048576, (double)total / 1048576, rate / 1e6,
            rate > 0 ? (double)(total - done) / rate : 0.0);
}

static bool is_directory(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* What --index works with: its options, and the exit status so far. */
struct indexing {
    const struct config *cfg;
    const struct npz_options *nopt;
    bool tty;
    int status;
    unsigned long found; /* archives tried */
};

/* Indexes one archive (see index_archives); a failure is one line and status 1. Returns 0, to
 * go on with the next archive of a directory. */
static int index_one(void *ctx, const char *path)
{
    struct indexing *ix = ctx;
    ix->found++;
    struct npz *npz;
    char msg[PATH_MAX + 512];
    struct progress p = {.name = path};
    clock_gettime(CLOCK_MONOTONIC, &p.start);
    int rc = -EINVAL;
    if (ix->cfg->sidecar && source_is_remote(path))
        snprintf(msg, sizeof msg, "--sidecar needs a local archive (write it next to a "
                                  "local copy, then upload ARCHIVE.npzidx next to the object)");
    else
        rc = npz_open(path, ix->nopt, &npz, msg, sizeof msg);
    if (rc == 0) {
        rc = npz_index_all(npz, ix->tty ? show_progress : NULL, &p, msg, sizeof msg);
        if (rc == 0 && ix->cfg->sidecar)
            rc = npz_write_sidecar(npz, path, msg, sizeof msg);
        npz_close(npz);
    }
    if (ix->tty)
        fputc('\n', stderr);
    if (rc < 0)
        ix->status = error(1, "%s: %s", shown(path), msg);
    return 0;
}

/* npzmount --index ARCHIVE|DIRECTORY...: builds and saves every compressed member's index
 * (in every archive a mount of a DIRECTORY would show), without mounting. Returns the exit
 * status: 0 when every archive was indexed. */
static int index_archives(const struct config *cfg, const struct npz_options *nopt)
{
    struct indexing ix = {cfg, nopt, isatty(STDERR_FILENO), 0, 0};
    if (cfg->narchives == 0)
        return error(2, "usage: npzmount --index [-o OPTIONS] ARCHIVE|DIRECTORY...");
    for (int i = 0; i < cfg->narchives; i++) {
        const char *path = cfg->archives[i];
        if (source_is_remote(path) || !is_directory(path)) {
            index_one(&ix, path);
            continue;
        }
        /* a directory: the archives a mount of it would show, found the same way */
        struct forest *f;
        char msg[PATH_MAX + 256];
        int rc = forest_open(&path, 1, nopt, 0, &f, msg, sizeof msg);
        if (rc < 0) {
            ix.status = error(1, "%s: %s", shown(path), msg);
            continue;
        }
        unsigned long before = ix.found;
        forest_archives(f, index_one, &ix);
        forest_close(f);
        if (ix.found == before)
            ix.status = error(1, "%s: no .npz or .zip archive in it", shown(path));
    }
    return ix.status;
}

/* npzmount --list [--json] ARCHIVE: the members, without mounting. Returns the exit status. */
static int list_archive(const struct config *cfg, const struct fuse_args *args,
                        struct npz_options *nopt)
{
    if (!cfg->archive || args->argc > 1 || cfg->narchives)
        return error(2, "usage: npzmount --list [--json] [-o OPTIONS] ARCHIVE");
    int status = parse_tuning(cfg, nopt);
    if (status != 0)
        return status;
    nopt->no_index = 1;    /* a listing decodes a piece of each member: nothing to save */
    nopt->no_prefetch = 1;
    struct npz *npz;
    char msg[512];
    int rc = npz_open(cfg->archive, nopt, &npz, msg, sizeof msg);
    if (rc < 0)
        return error(1, "%s: %s", shown(cfg->archive), msg);
    rc = listing_write(npz, stdout, cfg->json);
    npz_close(npz);
    return rc < 0 ? error(1, "--list: cannot write the listing: %s", strerror(errno)) : 0;
}

static atomic_bool optimize_cancel;

static void optimize_stop(int sig)
{
    (void)sig;
    atomic_store(&optimize_cancel, true);
}

/* The summary line: what the flushes and the index cost in size. */
static void print_optimized(const char *in, const char *out, const struct optimize_stats *st)
{
    double change = st->in_bytes ? 100.0 * ((double)st->out_bytes - (double)st->in_bytes) /
                                       (double)st->in_bytes : 0.0;
    printf("%s: %.1f MiB -> %s: %.1f MiB (%+.2f %%); %llu of %llu members seek-optimized\n",
           in, (double)st->in_bytes / 1048576, out, (double)st->out_bytes / 1048576, change,
           (unsigned long long)st->indexed, (unsigned long long)st->members);
}

/* npzmount --optimize IN OUT: rewrites IN as a seek-optimized ZIP (optimize.h) and prints
 * what that cost in size. Returns the exit status. */
static int optimize_archive(const struct config *cfg, struct npz_options *nopt,
                            const char *unknown)
{
    struct optimize_options o = {.compress_stored = cfg->compress};
    struct optimize_stats st;
    uint64_t chunk = 0;
    char msg[512];
    int status = parse_tuning(cfg, nopt);
    if (status)
        return status;
    if (unknown)
        return error(2, "--optimize: unknown argument %s", unknown);
    if (cfg->narchives != 2)
        return error(2, "usage: npzmount --optimize [--compress] [--threads=N] "
                        "[--chunk-size=SIZE] IN.npz OUT.npz");
    if (cfg->chunk_size && (parse_size(cfg->chunk_size, &chunk) < 0 ||
                            chunk < OPTIMIZE_MIN_CHUNK || chunk > OPTIMIZE_MAX_CHUNK))
        return error(2, "--chunk-size=%s: expected a size from 4k to 64M", cfg->chunk_size);
    o.chunk_size = (uint32_t)chunk;
    o.threads = nopt->threads;
    o.cancel = &optimize_cancel;
    /* a stop removes the temporary file instead of leaving it behind */
    struct sigaction sa = {.sa_handler = optimize_stop};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    bool tty = isatty(STDERR_FILENO);
    struct progress p = {.name = cfg->archives[0]};
    clock_gettime(CLOCK_MONOTONIC, &p.start);
    int rc = optimize_run(cfg->archives[0], cfg->archives[1], &o, tty ? show_progress : NULL,
                          &p, &st, msg, sizeof msg);
    if (tty)
        fputc('\n', stderr);
    if (rc < 0)
        return error(1, "%s", msg);
    print_optimized(cfg->archives[0], cfg->archives[1], &st);
    return 0;
}

static int serve(struct fuse_session *se, const struct fuse_cmdline_opts *opts)
{
    if (opts->singlethread)
        return fuse_session_loop(se);
    struct fuse_loop_config *lc = fuse_loop_cfg_create();
    if (!lc)
        return -ENOMEM;
    fuse_loop_cfg_set_clone_fd(lc, (unsigned)opts->clone_fd);
    if (opts->max_idle_threads != UINT_MAX) /* UINT_MAX: not given */
        fuse_loop_cfg_set_idle_threads(lc, opts->max_idle_threads);
    fuse_loop_cfg_set_max_threads(lc, opts->max_threads);
    int rc = fuse_session_loop_mt(se, lc);
    fuse_loop_cfg_destroy(lc);
    return rc;
}

/* Whether the daemon starts its own auto_unmount waiter (autounmount.h): root mounts directly,
 * which spares the mount command fusermount3's start. */
static bool own_auto_unmount(const struct config *cfg)
{
    return !cfg->noauto_unmount && geteuid() == 0;
}

/* Forces a read-only mount with kernel permission checks, unmounted by fusermount3 should the
 * daemon die when auto_unmount (not for noauto_unmount, nor for root: own_auto_unmount);
 * fsname shows the archive's absolute path in mount(8) and df(1), escaped so that commas in
 * its path are safe. These go before the user's options, so that a fsname= or subtype= of
 * theirs wins (rw is refused earlier). */
static int add_mount_options(struct fuse_args *args, const char *archive, bool auto_unmount)
{
    char *o = NULL;
    /* df(1) run elsewhere must find it; a URL is shown as given */
    char *abs = source_is_remote(archive) ? NULL : realpath(archive, NULL);
    if (abs)
        archive = abs;
    size_t len = strlen(archive) + sizeof "fsname=";
    char *fsname = malloc(len);
    if (fsname)
        snprintf(fsname, len, "fsname=%s", archive);
    free(abs);
    if (!fsname)
        return -1;
    int rc = fuse_opt_add_opt(&o, "ro,default_permissions,subtype=npzmount") ||
             (auto_unmount && fuse_opt_add_opt(&o, "auto_unmount")) ||
             fuse_opt_add_opt_escaped(&o, fsname) || fuse_opt_insert_arg(args, 1, "-o") ||
             fuse_opt_insert_arg(args, 2, o);
    free(fsname);
    free(o);
    return rc ? -1 : 0;
}

/* Where a daemon without a system log writes: $XDG_STATE_HOME/npzmount/ when set, else
 * /var/log for root and ~/.local/state/npzmount/ for others. Returns 0 or a negative errno. */
static int fallback_log_path(char *out, size_t len)
{
    char buf[16384], dir[PATH_MAX];
    const char *state = getenv("XDG_STATE_HOME"), *home;
    int n;
    if (state && state[0] == '/') /* the XDG spec says relative values are to be ignored */
        n = snprintf(dir, sizeof dir, "%s/npzmount", state);
    else if (geteuid() == 0)
        n = snprintf(dir, sizeof dir, "/var/log");
    else if ((home = io_home_dir(buf, sizeof buf)))
        n = snprintf(dir, sizeof dir, "%s/.local/state/npzmount", home);
    else
        return -ENOENT;
    if (n >= (int)sizeof dir)
        return -ENAMETOOLONG;
    int rc = io_make_dirs(dir);
    if (rc == 0 && snprintf(out, len, "%s/npzmount.log", dir) >= (int)len)
        rc = -ENAMETOOLONG;
    return rc;
}

/* Chooses where a daemon's messages go, before it detaches (so that it can still say where):
 * the system log when one listens, else the fallback file. Called only without logfile=. */
static void daemon_log_choose(void)
{
    char path[PATH_MAX];
    if (log_syslog_reachable()) {
        log_to_syslog(true);
        return;
    }
    int rc = fallback_log_path(path, sizeof path);
    if (rc == 0)
        rc = log_to_file(path);
    if (rc == 0)
        error(0, "no system log (/dev/log): messages go to %s", path);
    else
        error(0, "no system log (/dev/log) and no log file (%s): messages are lost; "
                 "use -o logfile=PATH", strerror(-rc));
}

/* The password of -o password_file= or -o askpass (asked before the daemon detaches), or none:
 * *out stays NULL. Returns 0 or an exit status. */
static int get_password(const struct config *cfg, struct secret **out)
{
    char msg[PATH_MAX + 128], prompt[PATH_MAX + 96];
    int rc = 0;
    if (cfg->password_file && cfg->askpass)
        return error(2, "-o password_file= and -o askpass: give one of them");
    if (cfg->password_file)
        rc = secret_from_file(cfg->password_file, out, msg, sizeof msg);
    if (cfg->askpass) {
        snprintf(prompt, sizeof prompt, "Password for %s: ", shown(cfg->archive));
        rc = secret_from_tty(prompt, out, msg, sizeof msg);
    }
    return rc < 0 ? error(1, "%s", msg) : 0;
}

/* After ARCHIVE, the other non-option arguments: the last is the mountpoint, handed back to
 * libfuse, and any before it are more archives. Returns 0 or -1 (out of memory). */
static int tree_args(struct config *cfg, struct fuse_args *args)
{
    if (cfg->narchives == 0)
        return 0;
    return fuse_opt_add_arg(args, cfg->archives[--cfg->narchives]);
}

/* A tree is mounted for a directory or for several archives. */
static bool is_tree(const struct config *cfg)
{
    return cfg->narchives > 0 || is_directory(cfg->archive);
}

/* A tree's archives and directories must lie outside the mount point: the daemon opens them
 * on demand, and through its own mount it would wait for itself. Returns 0 or an exit
 * status. */
static int check_sources(const struct config *cfg, const char *mountpoint)
{
    char mp[PATH_MAX], src[PATH_MAX];
    if (!is_tree(cfg) || !realpath(mountpoint, mp))
        return 0;
    size_t len = strlen(mp);
    for (int i = -1; i < cfg->narchives; i++) {
        const char *p = i < 0 ? cfg->archive : cfg->archives[i];
        if (realpath(p, src) && strncmp(src, mp, len) == 0 &&
            (src[len] == '/' || src[len] == '\0' || len == 1))
            return error(2, "%s: inside the mount point %s", p, mountpoint);
    }
    return 0;
}

/* Opens what is mounted, as generation 0: one archive or a tree (with absolute paths, since
 * the daemon leaves the current directory). Returns 0 or a negative errno with a reason in
 * msg. */
static int open_mounted(const struct config *cfg, const struct npz_options *nopt,
                        struct fs *fs, char *msg, size_t msg_len)
{
    if (!is_tree(cfg)) {
        struct npz *npz;
        int rc = npz_open(cfg->archive, nopt, &npz, msg, msg_len);
        if (rc == 0 && (rc = forest_wrap(npz, &fs->gens[0].fo)) < 0)
            snprintf(msg, msg_len, "%s", strerror(-rc));
        return rc;
    }
    size_t n = (size_t)cfg->narchives + 1;
    char **paths = calloc(n, sizeof *paths);
    int rc = paths ? 0 : -ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (!(paths[i] = absolute_path(i ? cfg->archives[i - 1] : cfg->archive)))
            rc = -ENOMEM;
    if (rc == 0)
        rc = forest_open((const char *const *)paths, n, nopt, cfg->max_open, &fs->gens[0].fo,
                         msg, msg_len);
    else
        snprintf(msg, msg_len, "out of memory");
    for (size_t i = 0; paths && i < n; i++)
        free(paths[i]);
    free(paths);
    return rc;
}

/* The kernel reads a window of max_readahead around every page fault of a mapping (128 KiB
 * unless told), which is also its request size for a mapping read in order. Around a random
 * fault in a stored member the extra pages cost one pread; in a compressed one every byte of
 * the window is decoded. 96 KiB made random reads of SOZip members (64 KiB chunks, through
 * the cache) about 10 % faster with the same sequential speed; 64 KiB 15 to 30 % faster, but
 * a sum() through a mapping 24 % slower. Random reads of SOZip members with small chunks
 * decode just the chunks of the window, and there 64 KiB against 96 KiB made them 9 to 11 %
 * faster for a sum() 1 to 10 % slower (man page). So: 64 KiB when most compressed bytes are
 * such members, 96 KiB when most member bytes are otherwise compressed, else the kernel's. */
static unsigned default_readahead(struct forest *fo)
{
    struct npz_fsinfo info;
    forest_statfs(fo, &info);
    if (info.decoded_bytes <= info.stored_bytes)
        return 0;
    return 2 * info.sozip_bytes > info.decoded_bytes ? 64u << 10 : 96u << 10;
}

/* Asynchronous reads let the kernel keep several readahead requests in flight, so that the
 * daemon reads ahead while the reader copies: a cold cat of a stored 256 MiB member took
 * 0.10-0.14 s against 0.18-0.63 s with synchronous reads (minipread: 0.13-0.24 s). But the
 * kernel waits for them with only fatal signals let through and sends no INTERRUPT, so a
 * reader waiting on a long decode or a stalled server could not be stopped with Ctrl-C.
 * Hence asynchronous only where no read waits for more than the local disk: one local
 * archive whose members all lie stored. */
static bool default_async_read(const struct config *cfg, struct forest *fo)
{
    struct npz_fsinfo info;
    forest_statfs(fo, &info);
    return !is_tree(cfg) && !source_is_remote(cfg->archive) && info.decoded_bytes == 0;
}

/* Mounts and serves until unmounted or stopped by SIGHUP, SIGINT or SIGTERM, which is a clean
 * stop too: libfuse's loops then return the signal's number (errors are negative). Returns the
 * exit status. */
static int run(struct fuse_session *se, struct fuse_cmdline_opts *opts, struct fs *fs,
               const struct config *cfg, struct autounmount *waiter)
{
    int status = 1;
    if (fuse_set_signal_handlers(se) != 0)
        return status;
    if (fuse_session_mount(se, opts->mountpoint) != 0)
        goto out_signals;
    if (waiter)
        autounmount_mounted(waiter);
    if (!opts->foreground && !cfg->logfile)
        daemon_log_choose();
    if (fuse_daemonize(opts->foreground) != 0)
        goto out_unmount;
    forest_start(fs->gens[0].fo);
    fs_watch_start(fs, se);
    status = serve(se, opts) >= 0 ? 0 : 1;
    /* Decodes still running stop within one piece, and their requests are answered while
     * the channel is still open. */
    fs_shutdown(fs);
    fs_watch_stop(fs);
out_unmount:
    fuse_session_unmount(se);
out_signals:
    fuse_remove_signal_handlers(se);
    return status;
}

int main(int argc, char **argv)
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct config cfg = {0};
    struct fuse_cmdline_opts opts = {0};
    struct npz_options nopt = {0};
    struct fs fs = {0};
    char msg[512], *archive_abs = NULL;
    unsigned readahead = 0;
    struct secret *password = NULL;
    int status = 2, rc;

    /* Decoded chunks are large and short-lived; a fixed threshold keeps them in mmap'd memory
     * that goes back to the system on free, instead of glibc raising the threshold and keeping
     * freed chunks in per-thread arenas beyond the cache bound. */
    mallopt(M_MMAP_THRESHOLD, 128 << 10);
    fuse_set_log_func(fuse_logger);
    for (int i = 1; i < argc; i++) /* before parsing: it changes what the file names are */
        cfg.optimize_mode |= strcmp(argv[i], "--optimize") == 0;
    if (fuse_opt_parse(&args, &cfg, opt_spec, opt_proc) != 0)
        goto out;
    if (cfg.help) {
        usage(stdout);
        fflush(stdout);
        fuse_lowlevel_help();
        status = 0;
        goto out;
    }
    if (cfg.version) {
        printf("npzmount %s (libfuse %s)\n", NPZMOUNT_VERSION, fuse_pkgversion());
        status = 0;
        goto out;
    }
    if (cfg.optimize_mode) {
        status = optimize_archive(&cfg, &nopt, args.argc > 1 ? args.argv[1] : NULL);
        goto out;
    }
    for (int i = 1; i < argc; i++) /* --index changes what the other arguments mean */
        cfg.index_mode |= strcmp(argv[i], "--index") == 0;
    if (cfg.index_mode) {
        status = parse_tuning(&cfg, &nopt);
        if (status == 0)
            status = args.argc > 1 ? error(2, "--index: unknown argument %s", args.argv[1])
                                   : index_archives(&cfg, &nopt);
        goto out;
    }
    if (cfg.sidecar) {
        status = error(2, "--sidecar goes with --index");
        goto out;
    }
    if (cfg.list_mode || cfg.json) {
        status = cfg.list_mode ? list_archive(&cfg, &args, &nopt)
                               : error(2, "--json goes with --list");
        goto out;
    }
    if (tree_args(&cfg, &args) != 0 || fuse_parse_cmdline(&args, &opts) != 0)
        goto out;
    if (!cfg.archive) {
        error(2, "usage: npzmount [options] ARCHIVE [MOUNTPOINT] (see --help)");
        goto out;
    }
    if (cfg.rw) {
        status = error(2, "-o rw: the mount is always read-only (use -o ro)");
        goto out;
    }
    if (cfg.blkdev) {
        status = error(2, "-o blkdev, blksize=: npzmount does not mount block devices");
        goto out;
    }
    if ((status = parse_tuning(&cfg, &nopt)) != 0 || (status = parse_owner(&cfg, &fs)) != 0 ||
        (status = parse_readahead(&cfg, &readahead)) != 0)
        goto out;
    if (cfg.logfile && (rc = log_to_file(cfg.logfile)) < 0) {
        status = error(1, "logfile=%s: %s", cfg.logfile, strerror(-rc));
        goto out;
    }
    if (add_mount_options(&args, cfg.archive, !cfg.noauto_unmount && !own_auto_unmount(&cfg))) {
        status = error(1, "out of memory");
        goto out;
    }
    /* The session checks the FUSE options: a typo fails before the archive is read. */
    struct fuse_session *se = fuse_session_new(&args, &fs_ops, sizeof fs_ops, &fs);
    if (!se) {
        status = 2; /* libfuse said why */
        goto out;
    }
    if (!opts.mountpoint && (status = default_mountpoint(&cfg, &opts.mountpoint)) != 0)
        goto out_session;
    if ((status = check_mountpoint(opts.mountpoint)) != 0 ||
        (status = check_sources(&cfg, opts.mountpoint)) != 0)
        goto out_session;
    /* before the archive and the password are in memory, which the waiter would keep a copy
     * of; it stays open, unused, for as long as this process or the daemon lives */
    struct autounmount waiter;
    rc = own_auto_unmount(&cfg) ? autounmount_start(opts.mountpoint, argc, argv, &waiter) : 1;
    if (rc < 0)
        log_error("%s: cannot watch for the daemon's end (%s): a killed daemon would leave a "
                  "stale mount", opts.mountpoint, strerror(-rc));
    bool watched = rc == 0;
    if ((status = get_password(&cfg, &password)) != 0)
        goto out_waiter;
    nopt.password = password ? secret_str(password) : NULL;
    rc = open_mounted(&cfg, &nopt, &fs, msg, sizeof msg);
    if (rc < 0) {
        status = error(1, "%s: %s", shown(cfg.archive), msg);
        goto out_waiter;
    }
    fs.max_read = cfg.max_read;
    fs.max_readahead = readahead ? readahead : default_readahead(fs.gens[0].fo);
    fs.async_read = cfg.read_mode == READ_BY_ARCHIVE ? default_async_read(&cfg, fs.gens[0].fo)
                                                     : cfg.read_mode == READ_ASYNC;
    fs.nofollow = cfg.nofollow;
    fs.nopt = nopt;
    fs.archive = archive_abs = absolute_path(cfg.archive);
    status = archive_abs ? run(se, &opts, &fs, &cfg, watched ? &waiter : NULL)
                         : error(1, "out of memory");
    fs_close(&fs);
out_waiter:
    if (watched && !waiter.told) /* nothing was mounted */
        autounmount_abandon(&waiter);
out_session:
    fuse_session_destroy(se);
out:
    if (cfg.made_mountpoint && rmdir(cfg.made_mountpoint) < 0)
        log_error("%s: cannot remove the mount point: %s", cfg.made_mountpoint,
                  strerror(errno));
    free(opts.mountpoint);
    free(cfg.span);
    free(cfg.disk_span);
    free(cfg.cache);
    free(cfg.index_mem);
    free(cfg.threads);
    free(cfg.index_dir);
    free(cfg.archives);
    free(cfg.decoder_mem);
    free(cfg.max_readahead);
    free(cfg.block);
    free(cfg.remote_cache);
    free(cfg.timeout);
    free(cfg.endpoint);
    free(cfg.uid);
    free(cfg.gid);
    free(cfg.umask);
    free(cfg.fmask);
    free(cfg.dmask);
    free(cfg.logfile);
    free(cfg.password_file);
    secret_free(password);
    free(cfg.chunk_size);
    free(archive_abs);
    fuse_opt_free_args(&args);
    return status;
}
