/* Unit tests for source.c: the local source reads what pread reads, exact reads fail with
 * -EIO past the end, only regular files open, and URLs go to the remote side. */
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#define LEN 100000u

static unsigned char data[LEN];
static char dir[] = "/tmp/npz-source.XXXXXX";
static char path[64];

static void write_file(void)
{
    for (size_t i = 0; i < LEN; i++)
        data[i] = (unsigned char)(i * 2654435761u >> 13);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, LEN, f) == LEN);
    if (f)
        fclose(f);
}

static void test_local(void)
{
    struct source *s = NULL;
    char msg[128] = "";
    if (!CHECK_EQ_I64(source_open(path, NULL, &s, msg, sizeof msg), 0))
        return;
    CHECK_EQ_U64(s->size, LEN);
    CHECK(!s->remote && s->fd >= 0);
    CHECK_EQ_STR(s->name, path);
    unsigned char *buf = malloc(LEN);
    CHECK_EQ_I64(source_read(s, buf, LEN, 0), 0);
    CHECK_EQ_MEM(buf, LEN, data, LEN);
    CHECK_EQ_I64(source_read(s, buf, 777, 12345), 0);
    CHECK_EQ_MEM(buf, 777, data + 12345, 777);
    /* pread is short only at the end; an exact read past it is -EIO */
    CHECK_EQ_I64(s->ops->pread(s, buf, 100, LEN - 40), 40);
    CHECK_EQ_MEM(buf, 40, data + LEN - 40, 40);
    CHECK_EQ_I64(s->ops->pread(s, buf, 100, LEN + 5), 0);
    CHECK_EQ_I64(source_read(s, buf, 100, LEN - 40), -EIO);
    CHECK_EQ_I64(source_read(s, buf, 0, LEN), 0);
    free(buf);
    source_close(s);
}

static void test_refused(void)
{
    struct source *s = NULL;
    char msg[128] = "";
    char other[4200];
    snprintf(other, sizeof other, "%s/missing", dir);
    CHECK_EQ_I64(source_open(other, NULL, &s, msg, sizeof msg), -ENOENT);
    CHECK(msg[0] && !strchr(msg, '\n'));
    msg[0] = '\0';
    CHECK_EQ_I64(source_open(dir, NULL, &s, msg, sizeof msg), -EINVAL);
    CHECK(msg[0] && !strchr(msg, '\n'));
    snprintf(other, sizeof other, "%s/fifo", dir);
    if (CHECK(mkfifo(other, 0600) == 0)) {
        CHECK_EQ_I64(source_open(other, NULL, &s, msg, sizeof msg), -EINVAL); /* no hang */
        unlink(other);
    }
    int p[2];
    if (CHECK(pipe(p) == 0)) { /* refused, and the fd it owned is closed */
        CHECK_EQ_I64(source_from_fd(p[0], "pipe", &s), -EINVAL);
        CHECK(fcntl(p[0], F_GETFD) < 0 && errno == EBADF);
        close(p[1]);
    }
    CHECK_EQ_I64(source_from_fd(-1, "none", &s), -EBADF);
    source_close(NULL);
}

static void test_is_remote(void)
{
    CHECK(source_is_remote("http://h/a.npz"));
    CHECK(source_is_remote("HTTPS://h/a.npz"));
    CHECK(source_is_remote("s3://bucket/key.npz"));
    CHECK(!source_is_remote("/tmp/http://x"));
    CHECK(!source_is_remote("a.npz"));
    CHECK(!source_is_remote("http:/x"));
    CHECK(!source_is_remote(""));
    CHECK(!source_is_remote(NULL));
}

/* Messages never show a URL's user info, query or fragment; paths stay as they are. */
static void test_display(void)
{
    static const char *const cases[][2] = {
        {"https://user:pw@host.example/a/b.npz", "https://host.example/a/b.npz"},
        {"http://u:p@ss@host:8080/x.npz?X-Amz-Signature=abc#f", "http://host:8080/x.npz"},
        {"s3://bucket/key.npz", "s3://bucket/key.npz"},
        {"HTTP://host/x.npz?q", "HTTP://host/x.npz"},
        {"http://host?x=@y", "http://host"},
        {"/data/run@1/x.npz?", "/data/run@1/x.npz?"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[256];
        source_display(cases[i][0], out, sizeof out);
        CHECK_EQ_STR(out, cases[i][1]);
    }
    char small[8];
    source_display("https://u:p@h/x", small, sizeof small);
    CHECK_EQ_STR(small, "https:/");
}

int main(void)
{
    if (!CHECK(mkdtemp(dir)))
        return check_summary("test_source");
    snprintf(path, sizeof path, "%s/a.bin", dir);
    write_file();
    RUN_TEST(test_local);
    RUN_TEST(test_refused);
    RUN_TEST(test_is_remote);
    RUN_TEST(test_display);
    unlink(path);
    rmdir(dir);
    return check_summary("test_source");
}
