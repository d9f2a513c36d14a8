/*
 * http: ranged GETs of one remote object through libcurl, with the retry policy of remote
 * sources: transient failures (5xx, 408, 429, dropped or stalled connections, short bodies) are
 * retried with exponential backoff until a deadline, then -EIO; an object that changed (412 to
 * If-Match, another ETag, another size, 416) is -ESTALE; 404 is -ENOENT, 401 and 403 -EACCES,
 * any other answer -EIO.
 *
 * Ownership: http_new copies the configuration; http_free frees the client and its pooled
 * connections, after every other user is done.
 * Threads: http_get may run in any number of threads at once (each takes its own easy handle
 * from a pool, so connections are reused). http_pin is for the opener, before other threads.
 */
#ifndef NPZMOUNT_HTTP_H
#define NPZMOUNT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct http;

struct http_config {
    const char *url;      /* what is fetched (no credentials in it) */
    const char *sigv4;    /* CURLOPT_AWS_SIGV4 parameter, or NULL for no signing */
    const char *userpwd;  /* "key:secret" for signing, or NULL; wiped by http_free */
    const char *token;    /* S3 session token (x-amz-security-token), or NULL */
    unsigned timeout_s;   /* also bounds stalls and connects of one attempt */
};

/* What a reply said about the object. */
struct http_reply {
    uint64_t start;      /* offset in the object of the first byte written to buf */
    uint64_t total;      /* the object's size */
    char etag[128];      /* the ETag, or "" when the server sent none */
};

int http_new(const struct http_config *c, struct http **out);
void http_free(struct http *h);

/* From now on every GET carries If-Match (for a strong ETag) and every reply must name this
 * ETag and this size. */
int http_pin(struct http *h, const char *etag, uint64_t size);

/* Up to len bytes at off into buf (or, when suffix, the last len bytes of the object, wherever
 * they start): the count written, or a negative errno once the deadline (CLOCK_MONOTONIC) has
 * passed. When connect_retry is false, a refused or unresolvable connection fails at once (an
 * open should say so promptly). On failure msg gets one line (HTTP status, S3 error code or
 * transport error), never credentials. */
long http_get(struct http *h, uint64_t off, size_t len, bool suffix, void *buf,
              const struct timespec *deadline, bool connect_retry, struct http_reply *r,
              char *msg, size_t msg_len);

/* Makes every http_get in flight or to come fail soon with -EIO (a closing source must not
 * wait for a stalled server). Any thread, any time before http_free. */
void http_cancel(struct http *h);

/* Zeroes a string that holds a secret, then frees it; NULL is fine. */
void http_wipe_free(char *s);

#endif
