/*
 * minipread: the ceiling row of scripts/bench. A minimal read-only FUSE server (libfuse 3.14
 * low-level API) whose root holds one file, "data": LENGTH bytes of FILE from OFFSET, served by
 * one pread per READ into a per-thread buffer, keep_cache on open, long timeouts, libfuse's
 * default session and multi-threaded loop. It does what any FUSE server must do for a read
 * and nothing more, so a stored member served through npzmount can be measured against it.
 *
 * usage: minipread FILE OFFSET LENGTH MOUNTPOINT [libfuse options, e.g. -f -s -o ...]
 * Built by scripts/bench: cc -O2 minipread.c $(pkg-config --cflags --libs fuse3)
 */
#define FUSE_USE_VERSION 314
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DATA_INO 2
#define TIMEOUT 86400.0

static int g_fd;
static off_t g_off, g_len;

static void fill_stat(fuse_ino_t ino, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_nlink = 1;
    st->st_mode = ino == FUSE_ROOT_ID ? S_IFDIR | 0555 : S_IFREG | 0444;
    st->st_size = ino == FUSE_ROOT_ID ? 0 : g_len;
    st->st_blksize = 131072;
}

static void mp_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    if (parent != FUSE_ROOT_ID || strcmp(name, "data") != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct fuse_entry_param e = {.ino = DATA_INO, .generation = 1,
                                 .attr_timeout = TIMEOUT, .entry_timeout = TIMEOUT};
    fill_stat(DATA_INO, &e.attr);
    fuse_reply_entry(req, &e);
}

static void mp_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct stat st;
    if (ino != FUSE_ROOT_ID && ino != DATA_INO) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    fill_stat(ino, &st);
    fuse_reply_attr(req, &st, TIMEOUT);
}

static void mp_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (ino != DATA_INO) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
}

static void mp_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)ino, (void)fi;
    static __thread char *buf;
    static __thread size_t cap;
    if (off >= g_len) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if ((off_t)size > g_len - off)
        size = (size_t)(g_len - off);
    if (cap < size) {
        free(buf);
        cap = size;
        buf = malloc(cap);
        if (!buf) {
            cap = 0;
            fuse_reply_err(req, ENOMEM);
            return;
        }
    }
    ssize_t n = pread(g_fd, buf, size, g_off + off);
    if (n < 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_buf(req, buf, (size_t)n);
}

static const struct fuse_lowlevel_ops mp_ops = {
    .lookup = mp_lookup,
    .getattr = mp_getattr,
    .open = mp_open,
    .read = mp_read,
};

static int serve(struct fuse_session *se, const struct fuse_cmdline_opts *o)
{
    if (o->singlethread)
        return fuse_session_loop(se);
    struct fuse_loop_config *lc = fuse_loop_cfg_create();
    if (!lc)
        return -1;
    fuse_loop_cfg_set_clone_fd(lc, (unsigned)o->clone_fd);
    int rc = fuse_session_loop_mt(se, lc);
    fuse_loop_cfg_destroy(lc);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: minipread FILE OFFSET LENGTH MOUNTPOINT [libfuse options]\n");
        return 2;
    }
    g_fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    g_off = (off_t)strtoll(argv[2], NULL, 10);
    g_len = (off_t)strtoll(argv[3], NULL, 10);
    if (g_fd < 0) {
        perror(argv[1]);
        return 1;
    }
    /* libfuse sees argv[0], the mountpoint and whatever follows it. */
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    struct fuse_cmdline_opts o = {0};
    int bad = fuse_opt_add_arg(&args, argv[0]) || fuse_opt_add_arg(&args, "-oro,subtype=minipread");
    for (int i = 4; i < argc && !bad; i++)
        bad = fuse_opt_add_arg(&args, argv[i]);
    if (bad || fuse_parse_cmdline(&args, &o) != 0 || !o.mountpoint)
        return 2;
    int status = 1;
    struct fuse_session *se = fuse_session_new(&args, &mp_ops, sizeof mp_ops, NULL);
    if (se && fuse_set_signal_handlers(se) == 0) {
        if (fuse_session_mount(se, o.mountpoint) == 0) {
            if (fuse_daemonize(o.foreground) == 0)
                status = serve(se, &o) == 0 ? 0 : 1;
            fuse_session_unmount(se);
        }
        fuse_remove_signal_handlers(se);
    }
    if (se)
        fuse_session_destroy(se);
    free(o.mountpoint);
    fuse_opt_free_args(&args);
    close(g_fd);
    return status;
}
