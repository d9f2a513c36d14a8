/*
 * source: see source.h. The local file source and the dispatch between local and remote;
 * the remote one lives in source_http.c.
 */
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct local_source {
    struct source s; /* first: a struct source * is a struct local_source * */
    char name[];
};

static ssize_t local_pread(struct source *s, void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(s->fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break; /* the end of the file */
        done += (size_t)n;
    }
    return (ssize_t)done;
}

static void local_close(struct source *s)
{
    close(s->fd);
    free(s);
}

static const struct source_ops local_ops = {local_pread, local_close};

void source_display(const char *spec, char *out, size_t len)
{
    if (!source_is_remote(spec)) {
        snprintf(out, len, "%s", spec);
        return;
    }
    const char *auth = strstr(spec, "://") + 3;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL; /* the last '@' of the authority ends the user info */
    for (const char *p = auth; p < auth + alen; p++)
        if (*p == '@')
            at = p;
    const char *host = at ? at + 1 : auth;
    snprintf(out, len, "%.*s%.*s", (int)(auth - spec), spec, (int)strcspn(host, "?#"), host);
}

bool source_is_remote(const char *spec)
{
    static const char *const schemes[] = {"http://", "https://", "s3://"};
    for (size_t i = 0; spec && i < sizeof schemes / sizeof *schemes; i++)
        if (strncasecmp(spec, schemes[i], strlen(schemes[i])) == 0)
            return true;
    return false;
}

int source_from_fd(int fd, const char *name, struct source **out)
{
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? -errno : S_ISREG(st.st_mode) ? 0 : -EINVAL;
    const char *n = name ? name : "";
    struct local_source *l = rc == 0 ? malloc(sizeof *l + strlen(n) + 1) : NULL;
    if (!l) {
        if (fd >= 0)
            close(fd);
        return rc < 0 ? rc : -ENOMEM;
    }
    strcpy(l->name, n);
    l->s = (struct source){.ops = &local_ops, .size = (uint64_t)st.st_size, .fd = fd,
                           .remote = false, .name = l->name};
    *out = &l->s;
    return 0;
}

int source_open(const char *spec, const struct source_options *o, struct source **out,
                char *msg, size_t msg_len)
{
    if (source_is_remote(spec))
        return source_http_open(spec, o, out, msg, msg_len);
    /* O_NONBLOCK: a FIFO under the name must be refused, not hang the open. */
    int fd = open(spec, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int err = -errno;
        snprintf(msg, msg_len, "%s", strerror(errno));
        return err;
    }
    int rc = source_from_fd(fd, spec, out);
    if (rc < 0)
        snprintf(msg, msg_len, "%s", rc == -EINVAL ? "not a regular file" : strerror(-rc));
    return rc;
}

void source_close(struct source *s)
{
    if (s)
        s->ops->close(s);
}

int source_read(struct source *s, void *buf, size_t len, uint64_t off)
{
    ssize_t n = s->ops->pread(s, buf, len, off);
    if (n < 0)
        return (int)n;
    return (size_t)n == len ? 0 : -EIO;
}
