/*
 * http: see http.h. One attempt is one blocking curl_easy_perform on a pooled easy handle (which
 * keeps its connection open for the next attempt); http_get loops attempts under the deadline.
 *
 * libcurl is loaded on first use (dlopen), not linked: with its TLS, HTTP/2, SSH, LDAP and
 * Kerberos libraries it brought 27 more shared objects into every start of npzmount, 14 ms of
 * each mount command (scripts/bench), also for the local archives that never need it.
 */
#include "http.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deadline.h"
#include "dynlib.h"

/* Idle easy handles kept for reuse; more than this are cleaned up after use. */
#define POOL_MAX 16
#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS 2000

/* The SHA-256 of an empty body: what a GET signs as its payload (S3 wants the header). */
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct conn {
    CURL *easy;
    struct conn *next;
    char errbuf[CURL_ERROR_SIZE];
};

struct http {
    char *url, *sigv4, *userpwd, *token;
    char *cafile;       /* $CURL_CA_BUNDLE or $SSL_CERT_FILE, as curl(1) reads them, or NULL */
    unsigned timeout_s;
    struct curl_slist *headers; /* read-only once other threads run */
    bool pinned;
    char etag[128];
    uint64_t size;
    pthread_mutex_t mu; /* guards idle */
    struct conn *idle;
    int cancelled;      /* atomic: http_cancel was called */
};

/* One attempt: where the body goes and what the headers said. */
struct xfer {
    char *buf;
    size_t len;
    uint64_t want;      /* object offset that buf[0] stands for */
    bool suffix;        /* want is the body's start, learnt from the reply */
    bool body_started, complete;
    uint64_t pos;       /* object offset of the next body byte */
    size_t got;         /* bytes of buf filled, from buf[0] on */
    long status;
    char reason[64];
    bool has_range, has_total, has_length;
    uint64_t rstart, total, length;
    char etag[128];
    char errbody[512];  /* the start of an error reply's body (S3's XML names the error) */
    size_t errlen;
};

enum verdict { V_OK, V_RETRY, V_FAIL, V_STALE };

/* The libcurl functions this file uses, from the library loaded at the first http_new. */
static struct {
    CURLcode (*global_init)(long flags);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *h, CURLoption opt, ...);
    CURLcode (*easy_perform)(CURL *h);
    void (*easy_cleanup)(CURL *h);
    const char *(*easy_strerror)(CURLcode rc);
    struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
    void (*slist_free_all)(struct curl_slist *l);
} cu;

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static bool global_ok;

static void global_init(void)
{
    const struct dynlib_sym syms[] = {
        {(void **)&cu.global_init, "curl_global_init"},
        {(void **)&cu.easy_init, "curl_easy_init"},
        {(void **)&cu.easy_setopt, "curl_easy_setopt"},
        {(void **)&cu.easy_perform, "curl_easy_perform"},
        {(void **)&cu.easy_cleanup, "curl_easy_cleanup"},
        {(void **)&cu.easy_strerror, "curl_easy_strerror"},
        {(void **)&cu.slist_append, "curl_slist_append"},
        {(void **)&cu.slist_free_all, "curl_slist_free_all"},
    };
    global_ok = dynlib_load("libcurl.so.4", syms, sizeof syms / sizeof *syms) &&
                cu.global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int add_header(struct http *h, const char *line)
{
    struct curl_slist *l = cu.slist_append(h->headers, line);
    if (!l)
        return -ENOMEM;
    h->headers = l;
    return 0;
}

int http_new(const struct http_config *c, struct http **out)
{
    pthread_once(&global_once, global_init);
    if (!global_ok)
        return -ELIBACC; /* libcurl4 is not installed */
    struct http *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    pthread_mutex_init(&h->mu, NULL);
    h->timeout_s = c->timeout_s ? c->timeout_s : 30;
    h->url = strdup(c->url);
    h->sigv4 = dup_or_null(c->sigv4);
    h->userpwd = dup_or_null(c->userpwd);
    h->token = dup_or_null(c->token);
    const char *ca = getenv("CURL_CA_BUNDLE");
    ca = ca && *ca ? ca : getenv("SSL_CERT_FILE");
    h->cafile = ca && *ca ? strdup(ca) : NULL;
    int rc = h->url && (!c->sigv4 || h->sigv4) && (!c->userpwd || h->userpwd) &&
                     (!c->token || h->token) && (!ca || !*ca || h->cafile) ? 0 : -ENOMEM;
    if (rc == 0 && c->sigv4)
        rc = add_header(h, "x-amz-content-sha256: " EMPTY_SHA256);
    if (rc == 0 && c->token) {
        char line[4096];
        rc = snprintf(line, sizeof line, "x-amz-security-token: %s", c->token) <
                     (int)sizeof line ? add_header(h, line) : -EINVAL;
        explicit_bzero(line, sizeof line);
    }
    if (rc < 0) {
        http_free(h);
        return rc;
    }
    *out = h;
    return 0;
}

void http_wipe_free(char *s)
{
    if (s)
        explicit_bzero(s, strlen(s));
    free(s);
}

void http_free(struct http *h)
{
    if (!h)
        return;
    while (h->idle) {
        struct conn *c = h->idle;
        h->idle = c->next;
        cu.easy_cleanup(c->easy);
        free(c);
    }
    cu.slist_free_all(h->headers);
    free(h->url);
    free(h->cafile);
    free(h->sigv4);
    http_wipe_free(h->userpwd);
    http_wipe_free(h->token);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

int http_pin(struct http *h, const char *etag, uint64_t size)
{
    snprintf(h->etag, sizeof h->etag, "%s", etag);
    h->size = size;
    h->pinned = true;
    /* A weak ETag never matches If-Match (strong comparison); the reply's ETag is checked
     * all the same. */
    if (!etag[0] || strncmp(etag, "W/", 2) == 0)
        return 0;
    char line[sizeof h->etag + 16];
    snprintf(line, sizeof line, "If-Match: %s", etag);
    return add_header(h, line);
}

/* ---- one attempt ---- */

/* The value of header line p (length n) when its name is name, trimmed, or NULL. */
static const char *header_value(const char *p, size_t n, const char *name, char *out,
                                size_t out_len)
{
    size_t k = strlen(name);
    if (n <= k || strncasecmp(p, name, k) != 0 || p[k] != ':')
        return NULL;
    const char *v = p + k + 1, *end = p + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t m = (size_t)(end - v) < out_len - 1 ? (size_t)(end - v) : out_len - 1;
    memcpy(out, v, m);
    out[m] = '\0';
    return out;
}

static void parse_status(struct xfer *x, const char *line)
{
    /* Every status line (a redirect's, a 100's) starts the reply's headers afresh. */
    x->has_range = x->has_total = x->has_length = false;
    x->etag[0] = x->reason[0] = '\0';
    x->status = 0;
    int skip = 0;
    if (sscanf(line, "HTTP/%*s %ld %n", &x->status, &skip) >= 1 && skip > 0)
        snprintf(x->reason, sizeof x->reason, "%s", line + skip);
    x->reason[strcspn(x->reason, "\r\n")] = '\0';
}

static void parse_content_range(struct xfer *x, const char *v)
{
    uint64_t a, b, t;
    if (sscanf(v, "bytes %" SCNu64 "-%" SCNu64 "/%" SCNu64, &a, &b, &t) == 3) {
        x->has_range = x->has_total = true;
        x->rstart = a;
        x->total = t;
    } else if (sscanf(v, "bytes */%" SCNu64, &t) == 1) {
        x->has_total = true;
        x->total = t;
    }
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * n;
    char line[256], v[160];
    snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), p);
    if (strncmp(line, "HTTP/", 5) == 0)
        parse_status(x, line);
    else if (header_value(p, len, "content-range", v, sizeof v))
        parse_content_range(x, v);
    else if (header_value(p, len, "etag", v, sizeof v))
        snprintf(x->etag, sizeof x->etag, "%.127s", v);
    else if (header_value(p, len, "content-length", v, sizeof v))
        x->has_length = sscanf(v, "%" SCNu64, &x->length) == 1;
    return len;
}

static size_t keep_error_body(struct xfer *x, const char *p, size_t len)
{
    size_t room = sizeof x->errbody - 1 - x->errlen;
    size_t m = len < room ? len : room;
    memcpy(x->errbody + x->errlen, p, m);
    x->errlen += m;
    x->errbody[x->errlen] = '\0';
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * n;
    if (x->status != 200 && x->status != 206)
        return keep_error_body(x, p, len);
    if (!x->body_started) {
        x->body_started = true;
        x->pos = x->status == 206 && x->has_range ? x->rstart : 0;
        if (x->suffix)
            x->want = x->pos;
        if (x->pos > x->want)
            return 0; /* not the bytes asked for: abort, judged after the transfer */
    }
    /* Copy what falls in [want + got, want + len): a 200 carries the whole object. */
    uint64_t from = x->pos, to = x->pos + len, lo = x->want + x->got, hi = x->want + x->len;
    if (from <= lo && to > lo) {
        size_t m = (size_t)((to < hi ? to : hi) - lo);
        memcpy(x->buf + x->got, p + (lo - from), m);
        x->got += m;
    }
    x->pos = to;
    if (x->want + x->got >= hi && to > hi) {
        x->complete = true;
        return 0; /* the rest of a whole-object reply is not wanted */
    }
    return len;
}

/* The S3 error code in an error reply's XML body, or "". */
static void s3_code(const struct xfer *x, char *out, size_t out_len)
{
    const char *a = strstr(x->errbody, "<Code>");
    const char *b = a ? strstr(a, "</Code>") : NULL;
    out[0] = '\0';
    if (a && b)
        snprintf(out, out_len, " (%.*s)", (int)(b - a - 6), a + 6);
}

static enum verdict judge_status(const struct http *h, const struct xfer *x, char *msg,
                                 size_t msg_len)
{
    char code[80];
    s3_code(x, code, sizeof code);
    snprintf(msg, msg_len, "HTTP %ld%s%s%s", x->status, x->reason[0] ? " " : "", x->reason,
             code);
    if (x->status == 412 || (x->status == 416 && h->pinned)) {
        char status[sizeof x->reason + 16];
        snprintf(status, sizeof status, "HTTP %ld %s", x->status, x->reason);
        snprintf(msg, msg_len, "the object changed (%s)", status);
        return V_STALE;
    }
    if (x->status == 416 && x->suffix && x->has_total && x->total == 0)
        return V_OK; /* an empty object has no last bytes */
    if (x->status == 408 || x->status == 429 || x->status >= 500)
        return V_RETRY;
    return V_FAIL;
}

static enum verdict judge_body(const struct http *h, const struct xfer *x, uint64_t off,
                               char *msg, size_t msg_len)
{
    uint64_t total = x->has_total ? x->total : x->status == 200 && x->has_length ? x->length
                                                                                 : UINT64_MAX;
    if (h->pinned && ((h->etag[0] && strcmp(x->etag, h->etag) != 0) ||
                      (total != UINT64_MAX && total != h->size))) {
        snprintf(msg, msg_len, "the object changed (ETag %.100s, was %.100s)",
                 x->etag[0] ? x->etag : "none", h->etag);
        return V_STALE;
    }
    if (!x->suffix && x->status == 206 && x->has_range && x->rstart > off) {
        snprintf(msg, msg_len, "the server sent a range other than the one asked for");
        return V_FAIL;
    }
    uint64_t need = x->len;
    if (total != UINT64_MAX)
        need = total <= x->want ? 0 : total - x->want < need ? total - x->want : need;
    if (x->suffix && total == UINT64_MAX) {
        snprintf(msg, msg_len, "the server did not say the object's size");
        return V_FAIL;
    }
    if (x->got < need) {
        snprintf(msg, msg_len, "the connection ended after %zu of %" PRIu64 " bytes", x->got,
                 need);
        return V_RETRY;
    }
    return V_OK;
}

static enum verdict judge_transport(CURLcode rc, bool connect_retry, const struct conn *c,
                                    char *msg, size_t msg_len)
{
    snprintf(msg, msg_len, "%s", c->errbuf[0] ? c->errbuf : cu.easy_strerror(rc));
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return connect_retry ? V_RETRY : V_FAIL;
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
        return V_RETRY;
    default:
        return V_FAIL;
    }
}

static bool is_cancelled(struct http *h)
{
    return __atomic_load_n(&h->cancelled, __ATOMIC_ACQUIRE);
}

void http_cancel(struct http *h)
{
    __atomic_store_n(&h->cancelled, 1, __ATOMIC_RELEASE);
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return is_cancelled(ud); /* non-zero aborts the transfer */
}

static struct conn *conn_get(struct http *h)
{
    pthread_mutex_lock(&h->mu);
    struct conn *c = h->idle;
    if (c)
        h->idle = c->next;
    pthread_mutex_unlock(&h->mu);
    if (c)
        return c;
    c = calloc(1, sizeof *c);
    if (c && !(c->easy = cu.easy_init())) {
        free(c);
        return NULL;
    }
    if (!c)
        return NULL;
    CURL *e = c->easy;
    cu.easy_setopt(e, CURLOPT_URL, h->url);
    cu.easy_setopt(e, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for timeouts */
    cu.easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    cu.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (h->cafile)
        cu.easy_setopt(e, CURLOPT_CAINFO, h->cafile);
    cu.easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    cu.easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    cu.easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    cu.easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    cu.easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    cu.easy_setopt(e, CURLOPT_XFERINFODATA, h);
    if (!h->sigv4) { /* a signature is for one URL: S3 redirects are errors to report */
        cu.easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        cu.easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
        cu.easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    } else {
        cu.easy_setopt(e, CURLOPT_AWS_SIGV4, h->sigv4);
        if (h->userpwd)
            cu.easy_setopt(e, CURLOPT_USERPWD, h->userpwd);
    }
    return c;
}

static void conn_put(struct http *h, struct conn *c, bool reusable)
{
    pthread_mutex_lock(&h->mu);
    size_t n = 0;
    for (struct conn *i = h->idle; i; i = i->next)
        n++;
    if (reusable && n < POOL_MAX) {
        c->next = h->idle;
        h->idle = c;
        c = NULL;
    }
    pthread_mutex_unlock(&h->mu);
    if (c) {
        cu.easy_cleanup(c->easy);
        free(c);
    }
}

static enum verdict attempt(struct http *h, struct conn *c, struct xfer *x, uint64_t off,
                            long ms, bool connect_retry, char *msg, size_t msg_len)
{
    char range[64];
    if (x->suffix)
        snprintf(range, sizeof range, "-%zu", x->len);
    else
        snprintf(range, sizeof range, "%" PRIu64 "-%" PRIu64, off, off + x->len - 1);
    /* A stall (no byte for a while) is cut well before the deadline so that a retry fits. */
    long stall = h->timeout_s / 3 ? (long)(h->timeout_s / 3) : 1;
    CURL *e = c->easy;
    c->errbuf[0] = '\0';
    cu.easy_setopt(e, CURLOPT_RANGE, range);
    cu.easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
    cu.easy_setopt(e, CURLOPT_HEADERDATA, x);
    cu.easy_setopt(e, CURLOPT_WRITEDATA, x);
    cu.easy_setopt(e, CURLOPT_TIMEOUT_MS, ms);
    cu.easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ms < stall * 1000 ? ms : stall * 1000);
    cu.easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    cu.easy_setopt(e, CURLOPT_LOW_SPEED_TIME, stall);
    CURLcode rc = cu.easy_perform(e);
    if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && x->complete)) {
        if (rc == CURLE_WRITE_ERROR && x->body_started && x->status >= 200 && x->status < 300)
            return judge_body(h, x, off, msg, msg_len);
        return judge_transport(rc, connect_retry, c, msg, msg_len);
    }
    if (x->status != 200 && x->status != 206)
        return judge_status(h, x, msg, msg_len);
    return judge_body(h, x, off, msg, msg_len);
}

/* A refusal as an errno: a missing object is not an I/O error (a sidecar may be absent). */
static int status_errno(long status)
{
    return status == 404 || status == 410 ? -ENOENT
           : status == 401 || status == 403 ? -EACCES
                                             : -EIO;
}

static void backoff(long *ms, const struct timespec *deadline)
{
    long left = deadline_ms_left(deadline);
    long d = *ms < left ? *ms : left;
    if (d > 0) {
        struct timespec t = {d / 1000, (d % 1000) * 1000000};
        nanosleep(&t, NULL);
    }
    *ms = *ms * 2 < BACKOFF_MAX_MS ? *ms * 2 : BACKOFF_MAX_MS;
}

long http_get(struct http *h, uint64_t off, size_t len, bool suffix, void *buf,
              const struct timespec *deadline, bool connect_retry, struct http_reply *r,
              char *msg, size_t msg_len)
{
    char last[256] = "no attempt";
    long wait = BACKOFF_FIRST_MS, ms;
    if (len == 0)
        return 0;
    while ((ms = deadline_ms_left(deadline)) > 0 && !is_cancelled(h)) {
        struct conn *c = conn_get(h);
        if (!c)
            return -ENOMEM;
        struct xfer x = {.buf = buf, .len = len, .want = off, .suffix = suffix};
        enum verdict v = attempt(h, c, &x, off, ms, connect_retry, last, sizeof last);
        conn_put(h, c, v == V_OK);
        if (v == V_OK) {
            r->start = x.want;
            r->total = x.has_total ? x.total : x.length;
            snprintf(r->etag, sizeof r->etag, "%s", x.etag);
            return (long)x.got;
        }
        if (v != V_RETRY) {
            snprintf(msg, msg_len, "%s", last);
            return v == V_STALE ? -ESTALE : v == V_FAIL ? status_errno(x.status) : -EIO;
        }
        backoff(&wait, deadline);
    }
    if (is_cancelled(h))
        snprintf(msg, msg_len, "cancelled");
    else
        snprintf(msg, msg_len, "timed out after %u s (last: %s)", h->timeout_s, last);
    return -EIO;
}
