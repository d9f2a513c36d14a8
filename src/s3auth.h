/*
 * s3auth: what a GET of s3://bucket/key needs: the path-style URL (endpoint from the option,
 * else $AWS_ENDPOINT_URL, else AWS's regional endpoint), the region ($AWS_REGION,
 * $AWS_DEFAULT_REGION, else us-east-1) and the credentials, from $AWS_ACCESS_KEY_ID /
 * $AWS_SECRET_ACCESS_KEY / $AWS_SESSION_TOKEN or else the shared credentials file
 * ($AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials; profile $AWS_PROFILE or "default").
 * Without credentials the requests go unsigned (public buckets).
 *
 * Ownership: s3_resolve fills t with heap strings that s3_target_free wipes and frees.
 * Threads: reads the environment; call it from one thread.
 * Errors: negative errno, with one line in msg (without the URL; never a credential).
 */
#ifndef NPZMOUNT_S3AUTH_H
#define NPZMOUNT_S3AUTH_H

#include <stddef.h>

struct s3_target {
    char *url;      /* <endpoint>/<bucket>/<key>, the key percent-encoded */
    char *sigv4;    /* "aws:amz:REGION:s3", or NULL when unsigned */
    char *userpwd;  /* "key:secret", or NULL */
    char *token;    /* session token, or NULL */
};

int s3_resolve(const char *s3url, const char *endpoint, struct s3_target *t, char *msg,
               size_t msg_len);
void s3_target_free(struct s3_target *t);

#endif
