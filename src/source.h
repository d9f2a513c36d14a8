/*
 * source: the archive's bytes, wherever they live: a local file (served by pread) or a remote
 * object (HTTP(S) or S3, served by ranged GETs through a bounded cache of remote blocks). The
 * ZIP reader, the member readers and the index code read the archive only through this, so
 * that none of them knows where it is.
 *
 * Ownership: source_open returns a source that its caller closes with source_close, after
 * every other user is done with it.
 * Threads: every function but source_close may be called from any number of threads at once.
 * Errors: negative errno. A remote source turns timeouts, dropped connections and server errors
 * that persist past its retries into -EIO, and an object that changed under the mount (its
 * ETag differs) into -ESTALE: never a mix of two versions' bytes.
 */
#ifndef NPZMOUNT_SOURCE_H
#define NPZMOUNT_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct source;

struct source_ops {
    /* Up to len bytes at off into buf: the count, short only at the end, or an error. */
    ssize_t (*pread)(struct source *s, void *buf, size_t len, uint64_t off);
    /* Frees the source (closing what it opened). */
    void (*close)(struct source *s);
};

struct source {
    const struct source_ops *ops;
    uint64_t size;     /* bytes of the archive, fixed at open */
    int fd;            /* a local file's descriptor (splice, change watch), or -1 if remote */
    bool remote;
    const char *name;  /* the path or URL, for messages (never with credentials in it) */
};

/* Options of remote sources (ignored for local files); zero fields mean the defaults. */
struct source_options {
    uint64_t block;        /* unit of ranged GETs, bytes (default SOURCE_DEFAULT_BLOCK) */
    uint64_t cache_bytes;  /* bound of the cache of remote blocks (default 64 MiB) */
    unsigned timeout_s;    /* no read waits longer than this, retries included (default 30) */
    const char *endpoint;  /* S3 endpoint URL (default $AWS_ENDPOINT_URL, else AWS) */
};

#define SOURCE_DEFAULT_BLOCK (1u << 20)

/* Whether spec names a remote object (http://, https:// or s3://) rather than a path. */
bool source_is_remote(const char *spec);

/* spec as messages show it: a URL without user:password@ and without its query and fragment
 * (a presigned URL's signature is a credential); a path as it is. Truncated to fit len. */
void source_display(const char *spec, char *out, size_t len);

/* Opens spec (a path, or a URL when source_is_remote) for reading and learns its size, or
 * fails with a one-line reason in msg (callers prefix it with spec). -ENOENT means there is no
 * such file or object (404), which callers probing for an optional one (a sidecar index) take
 * as "none"; -EACCES a refusal (403); -EINVAL a local path that is not a regular file. */
int source_open(const char *spec, const struct source_options *o, struct source **out,
                char *msg, size_t msg_len);

/* A local file already open: the source takes ownership of fd (closed on failure too).
 * -EINVAL when fd is not a regular file. name is copied. */
int source_from_fd(int fd, const char *name, struct source **out);

/* The remote side of source_open (source_http.c), for http://, https:// and s3:// URLs. */
int source_http_open(const char *url, const struct source_options *o, struct source **out,
                     char *msg, size_t msg_len);

void source_close(struct source *s);

/* Reads exactly len bytes at off: 0, -EIO when the archive ends first, or the source's
 * error. */
int source_read(struct source *s, void *buf, size_t len, uint64_t off);

#endif
