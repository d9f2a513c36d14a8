/*
 * s3auth: see s3auth.h.
 */
#define _GNU_SOURCE /* asprintf */
#include "s3auth.h"

#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct creds {
    char key[256], secret[256], token[4096];
};

static char *env(const char *name)
{
    char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Takes "name = value" from line into the matching field of c. */
static void take_setting(char *line, struct creds *c)
{
    char *eq = strchr(line, '=');
    if (!eq)
        return;
    *eq = '\0';
    const char *name = trim(line), *value = trim(eq + 1);
    if (strcmp(name, "aws_access_key_id") == 0)
        snprintf(c->key, sizeof c->key, "%s", value);
    else if (strcmp(name, "aws_secret_access_key") == 0)
        snprintf(c->secret, sizeof c->secret, "%s", value);
    else if (strcmp(name, "aws_session_token") == 0)
        snprintf(c->token, sizeof c->token, "%s", value);
}

/* The profile's settings from an INI-style credentials file; a missing file is no error. */
static void read_credentials_file(struct creds *c)
{
    char path[4096];
    const char *file = env("AWS_SHARED_CREDENTIALS_FILE"), *home = env("HOME");
    if (!file && !home)
        return;
    if (!file)
        snprintf(path, sizeof path, "%s/.aws/credentials", home);
    FILE *f = fopen(file ? file : path, "re");
    if (!f)
        return;
    const char *profile = env("AWS_PROFILE") ? env("AWS_PROFILE") : "default";
    char line[4352];
    bool in_profile = false;
    while (fgets(line, sizeof line, f)) {
        char *l = trim(line);
        if (l[0] == '[') {
            char *end = strchr(l, ']');
            in_profile = end && (size_t)(end - l - 1) == strlen(profile) &&
                         strncmp(l + 1, profile, strlen(profile)) == 0;
        } else if (in_profile && l[0] != '#' && l[0] != ';') {
            take_setting(l, c);
        }
    }
    explicit_bzero(line, sizeof line);
    fclose(f);
}

static void find_credentials(struct creds *c)
{
    memset(c, 0, sizeof *c);
    if (env("AWS_ACCESS_KEY_ID") && env("AWS_SECRET_ACCESS_KEY")) {
        snprintf(c->key, sizeof c->key, "%s", env("AWS_ACCESS_KEY_ID"));
        snprintf(c->secret, sizeof c->secret, "%s", env("AWS_SECRET_ACCESS_KEY"));
        if (env("AWS_SESSION_TOKEN"))
            snprintf(c->token, sizeof c->token, "%s", env("AWS_SESSION_TOKEN"));
        return;
    }
    read_credentials_file(c);
}

/* Percent-encodes a key for the URL path, keeping '/' (S3 signs the path encoded once). */
static char *encode_key(const char *key)
{
    char *out = malloc(strlen(key) * 3 + 1), *o = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        if (isalnum(*p) || strchr("-._~/", *p))
            *o++ = (char)*p;
        else
            o += sprintf(o, "%%%02X", *p);
    }
    *o = '\0';
    return out;
}

static char *build_url(const char *endpoint, const char *region, const char *bucket,
                       size_t bucket_len, const char *key)
{
    char dflt[128];
    if (!endpoint) {
        snprintf(dflt, sizeof dflt, "https://s3.%s.amazonaws.com", region);
        endpoint = dflt;
    }
    size_t elen = strlen(endpoint);
    while (elen > 0 && endpoint[elen - 1] == '/')
        elen--;
    char *ekey = encode_key(key), *url = NULL;
    if (ekey && asprintf(&url, "%.*s/%.*s/%s", (int)elen, endpoint, (int)bucket_len, bucket,
                         ekey) < 0)
        url = NULL;
    free(ekey);
    return url;
}

static int set_credentials(struct s3_target *t, const char *region)
{
    struct creds c;
    find_credentials(&c);
    int rc = 0;
    if (c.key[0] && c.secret[0]) {
        if (asprintf(&t->sigv4, "aws:amz:%s:s3", region) < 0)
            t->sigv4 = NULL;
        if (asprintf(&t->userpwd, "%s:%s", c.key, c.secret) < 0)
            t->userpwd = NULL;
        t->token = c.token[0] ? strdup(c.token) : NULL;
        rc = t->sigv4 && t->userpwd && (!c.token[0] || t->token) ? 0 : -ENOMEM;
    }
    explicit_bzero(&c, sizeof c);
    return rc;
}

int s3_resolve(const char *s3url, const char *endpoint, struct s3_target *t, char *msg,
               size_t msg_len)
{
    memset(t, 0, sizeof *t);
    const char *bucket = s3url + strlen("s3://");
    const char *slash = strchr(bucket, '/');
    if (slash == bucket || !bucket[0]) {
        snprintf(msg, msg_len, "no bucket in the URL (s3://BUCKET/KEY)");
        return -EINVAL;
    }
    if (!slash || !slash[1]) {
        snprintf(msg, msg_len, "no key in the URL (s3://BUCKET/KEY)");
        return -EINVAL;
    }
    const char *region = env("AWS_REGION") ? env("AWS_REGION")
                         : env("AWS_DEFAULT_REGION") ? env("AWS_DEFAULT_REGION")
                                                     : "us-east-1";
    const char *ep = endpoint && endpoint[0] ? endpoint : env("AWS_ENDPOINT_URL");
    t->url = build_url(ep, region, bucket, (size_t)(slash - bucket), slash + 1);
    int rc = t->url ? set_credentials(t, region) : -ENOMEM;
    if (rc < 0) {
        snprintf(msg, msg_len, "%s", strerror(-rc));
        s3_target_free(t);
    }
    return rc;
}

void s3_target_free(struct s3_target *t)
{
    free(t->url);
    free(t->sigv4);
    http_wipe_free(t->userpwd);
    http_wipe_free(t->token);
    memset(t, 0, sizeof *t);
}
