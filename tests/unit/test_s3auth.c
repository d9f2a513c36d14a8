/* Unit tests for s3auth.c: the path-style URL (endpoint and region precedence, the key
 * percent-encoded once, '/' kept), credentials from the environment before the shared file
 * (and the file's profile), unsigned without credentials, one-line refusals of URLs without a
 * bucket or key. The expected strings are written out by hand from the AWS rules. */
#include "s3auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static char dir[] = "/tmp/npz-s3auth.XXXXXX";
static char creds[64];

static void clear_env(void)
{
    static const char *const vars[] = {
        "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    setenv("HOME", dir, 1); /* no ~/.aws/credentials there */
}

/* CHECK_EQ_STR, where NULL equals NULL. */
#define CHECK_SAME(a, b) ((a) == NULL && (b) == NULL ? CHECK(true) : CHECK_EQ_STR(a, b))

/* Resolves url and checks what came out (NULL: expect none). */
static void expect(const char *url, const char *endpoint, const char *want_url,
                   const char *want_sigv4, const char *want_userpwd, const char *want_token)
{
    struct s3_target t;
    char msg[256] = "";
    check_context("%s", url);
    if (!CHECK_EQ_I64(s3_resolve(url, endpoint, &t, msg, sizeof msg), 0))
        return;
    CHECK_SAME(t.url, want_url);
    CHECK_SAME(t.sigv4, want_sigv4);
    CHECK_SAME(t.userpwd, want_userpwd);
    CHECK_SAME(t.token, want_token);
    s3_target_free(&t);
    CHECK(t.url == NULL && t.userpwd == NULL);
    check_context("%s", "");
}

static void test_endpoint_and_region(void)
{
    clear_env();
    expect("s3://b/k.npz", NULL, "https://s3.us-east-1.amazonaws.com/b/k.npz", NULL, NULL,
           NULL);
    setenv("AWS_DEFAULT_REGION", "eu-west-1", 1);
    expect("s3://b/k.npz", NULL, "https://s3.eu-west-1.amazonaws.com/b/k.npz", NULL, NULL,
           NULL);
    setenv("AWS_REGION", "ap-south-2", 1); /* wins over AWS_DEFAULT_REGION */
    expect("s3://b/k.npz", NULL, "https://s3.ap-south-2.amazonaws.com/b/k.npz", NULL, NULL,
           NULL);
    setenv("AWS_ENDPOINT_URL", "http://env:9000", 1);
    expect("s3://b/k.npz", NULL, "http://env:9000/b/k.npz", NULL, NULL, NULL);
    expect("s3://b/k.npz", "http://opt:1//", "http://opt:1/b/k.npz", NULL, NULL, NULL);
    expect("s3://b/runs/7/a b+c%~.npz", "http://o", "http://o/b/runs/7/a%20b%2Bc%25~.npz",
           NULL, NULL, NULL);
}

static void test_credentials(void)
{
    clear_env();
    setenv("AWS_REGION", "eu-west-3", 1);
    FILE *f = fopen(creds, "w");
    if (!CHECK(f))
        return;
    fputs("[default]\naws_access_key_id = DKEY\naws_secret_access_key = dsecret\n"
          "# a comment\n[ci]\n  aws_access_key_id=CKEY  \naws_secret_access_key = c=s\n"
          "aws_session_token = ctok\n[ci-other]\naws_access_key_id = XKEY\n", f);
    fclose(f);
    setenv("AWS_SHARED_CREDENTIALS_FILE", creds, 1);
    const char *u = "http://o/b/k";
    expect("s3://b/k", "http://o", u, "aws:amz:eu-west-3:s3", "DKEY:dsecret", NULL);
    setenv("AWS_PROFILE", "ci", 1);
    expect("s3://b/k", "http://o", u, "aws:amz:eu-west-3:s3", "CKEY:c=s", "ctok");
    setenv("AWS_PROFILE", "none", 1);
    expect("s3://b/k", "http://o", u, NULL, NULL, NULL);
    setenv("AWS_ACCESS_KEY_ID", "EKEY", 1); /* a key without its secret is not used */
    expect("s3://b/k", "http://o", u, NULL, NULL, NULL);
    setenv("AWS_SECRET_ACCESS_KEY", "esecret", 1);
    setenv("AWS_SESSION_TOKEN", "etok", 1);
    expect("s3://b/k", "http://o", u, "aws:amz:eu-west-3:s3", "EKEY:esecret", "etok");
    unlink(creds);
}

static void test_refused(void)
{
    static const char *const bad[] = {"s3://", "s3:///k", "s3://b", "s3://b/"};
    clear_env();
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct s3_target t;
        char msg[256] = "";
        check_context("%s", bad[i]);
        CHECK_EQ_I64(s3_resolve(bad[i], NULL, &t, msg, sizeof msg), -EINVAL);
        CHECK(!strchr(msg, '\n'));
        CHECK(strstr(msg, i < 2 ? "no bucket" : "no key"));
    }
    check_context("%s", "");
}

int main(void)
{
    if (!CHECK(mkdtemp(dir)))
        return check_summary("test_s3auth");
    snprintf(creds, sizeof creds, "%s/credentials", dir);
    RUN_TEST(test_endpoint_and_region);
    RUN_TEST(test_credentials);
    RUN_TEST(test_refused);
    rmdir(dir);
    return check_summary("test_s3auth");
}
