/*
 * test_secret: reading the password from a file (src/secret.c). The reference is the bytes the
 * test wrote: the password is them less one trailing "\n" or "\r\n", and files that cannot
 * give a one-line, non-empty password of at most SECRET_MAX bytes are refused with a reason.
 */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static char path[256];

static void write_bytes(const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, data, len) == (ssize_t)len);
    close(fd);
}

/* The file holds data; want is the password, or NULL when the file must be refused with a
 * reason that contains words. */
static void expect(const char *data, size_t len, const char *want, int err, const char *words)
{
    struct secret *s = NULL;
    char msg[256] = "";
    write_bytes(data, len);
    check_context("file %.*s", (int)(len < 40 ? len : 40), data);
    int rc = secret_from_file(path, &s, msg, sizeof msg);
    if (want) {
        if (CHECK_EQ_I64(rc, 0) && CHECK(s != NULL))
            CHECK_EQ_STR(secret_str(s), want);
    } else {
        CHECK_EQ_I64(rc, err);
        CHECK(strstr(msg, words) != NULL && strchr(msg, '\n') == NULL);
    }
    secret_free(s);
    check_context("%s", "");
}

static void test_line_endings(void)
{
    expect("pw", 2, "pw", 0, NULL);
    expect("pw\n", 3, "pw", 0, NULL);
    expect("pw\r\n", 4, "pw", 0, NULL);
    expect("two words \t\n", 12, "two words \t", 0, NULL); /* only the line break goes */
    expect("\xc3\xa9t\xc3\xa9\n", 6, "\xc3\xa9t\xc3\xa9", 0, NULL);
}

static void test_refused(void)
{
    expect("", 0, NULL, -EINVAL, "empty password");
    expect("\n", 1, NULL, -EINVAL, "empty password");
    expect("\r\n", 2, NULL, -EINVAL, "empty password");
    expect("pw\n\n", 4, NULL, -EINVAL, "one line");
    expect("pw\nmore", 7, NULL, -EINVAL, "one line");
    expect("p\0w", 3, NULL, -EINVAL, "one line");
}

static void test_lengths(void)
{
    char *big = malloc(SECRET_MAX + 2);
    if (!CHECK(big != NULL))
        return;
    memset(big, 'x', SECRET_MAX + 1);
    big[SECRET_MAX] = '\n';
    big[SECRET_MAX + 1] = '\0';
    char *want = strndup(big, SECRET_MAX);
    expect(big, SECRET_MAX + 1, want, 0, NULL);              /* the longest, with its newline */
    big[SECRET_MAX] = 'x';
    expect(big, SECRET_MAX + 1, NULL, -E2BIG, "longer than"); /* one byte too many */
    free(want);
    free(big);
}

static void test_unreadable(void)
{
    struct secret *s = NULL;
    char msg[256] = "", missing[300];
    snprintf(missing, sizeof missing, "%s.none", path);
    CHECK_EQ_I64(secret_from_file(missing, &s, msg, sizeof msg), -ENOENT);
    CHECK(s == NULL && strstr(msg, "password_file=") && strstr(msg, strerror(ENOENT)));
    CHECK_EQ_I64(secret_from_file("/", &s, msg, sizeof msg), -EISDIR);
    CHECK(s == NULL);
    secret_free(NULL);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/npz-secret.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        return 1;
    }
    close(fd);
    RUN_TEST(test_line_endings);
    RUN_TEST(test_refused);
    RUN_TEST(test_lengths);
    RUN_TEST(test_unreadable);
    unlink(path);
    return check_summary("test_secret");
}
