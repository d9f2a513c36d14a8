/*
 * npy: see npy.h. The dict is read by a small recursive-descent parser over exactly the Python
 * literals numpy writes (strings, True/False, tuples of integers, lists of tuples for
 * structured types), which is what numpy's own reader (ast.literal_eval plus checks) accepts
 * in practice. Nesting is bounded, so hostile brackets cannot exhaust the stack.
 */
#include "npy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NESTING 32 /* of a structured descr: fields inside sub-structures */

static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

int64_t npy_header_size(const unsigned char *buf, size_t len)
{
    if (memcmp(buf, magic, len < sizeof magic ? len : sizeof magic) != 0 ||
        (len > 6 && (buf[6] < 1 || buf[6] > 3)))
        return -EINVAL;
    if (len < 8)
        return -EAGAIN;
    size_t field = buf[6] == 1 ? 2 : 4;
    if (len < 8 + field)
        return -EAGAIN;
    uint64_t hlen = (uint64_t)buf[8] | (uint64_t)buf[9] << 8;
    if (field == 4)
        hlen |= (uint64_t)buf[10] << 16 | (uint64_t)buf[11] << 24;
    uint64_t total = 8 + field + hlen;
    return total > NPY_HEADER_MAX ? -EINVAL : (int64_t)total;
}

/* A cursor over the dict's text. */
struct cur {
    const char *p, *end;
};

static void skip_ws(struct cur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

/* Consumes ch (after blanks); false when it is not next. */
static bool eat(struct cur *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

static bool eat_word(struct cur *c, const char *w)
{
    size_t n = strlen(w);
    skip_ws(c);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0)
        return false;
    c->p += n;
    return true;
}

/* A quoted string without escapes (numpy writes none); sets [*s, *s + *n) to its contents. */
static bool string_lit(struct cur *c, const char **s, size_t *n)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return false;
    char q = *c->p++;
    const char *start = c->p;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || *c->p == '\n')
            return false;
        c->p++;
    }
    if (c->p >= c->end)
        return false;
    *s = start;
    *n = (size_t)(c->p++ - start);
    return true;
}

static bool uint_lit(struct cur *c, uint64_t *v)
{
    skip_ws(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9')
        return false;
    *v = 0;
    for (; c->p < c->end && *c->p >= '0' && *c->p <= '9'; c->p++) {
        unsigned d = (unsigned)(*c->p - '0');
        if (*v > (UINT64_MAX - d) / 10)
            return false;
        *v = *v * 10 + d;
    }
    return true;
}

/* A tuple of non-negative integers, as Python requires: "()", "(5,)", "(2, 3)", "(2, 3,)". */
static bool int_tuple(struct cur *c, uint64_t *dims, unsigned *ndim)
{
    if (!eat(c, '('))
        return false;
    *ndim = 0;
    if (eat(c, ')'))
        return true;
    for (;;) {
        if (*ndim == NPY_MAX_DIMS || !uint_lit(c, &dims[*ndim]))
            return false;
        ++*ndim;
        bool comma = eat(c, ',');
        if (eat(c, ')'))
            return comma || *ndim > 1; /* "(5)" is the integer 5, not a tuple */
        if (!comma)
            return false;
    }
}

static bool descr_list(struct cur *c, unsigned depth);

/* One field of a structured descr: ('name', TYPE) or ('name', TYPE, SHAPE), where the name
 * may itself be a (title, name) pair and TYPE a string or a nested list. */
static bool descr_field(struct cur *c, unsigned depth)
{
    const char *s;
    size_t n;
    uint64_t dims[NPY_MAX_DIMS];
    unsigned nd;
    if (!eat(c, '('))
        return false;
    if (eat(c, '(')) {
        if (!string_lit(c, &s, &n) || !eat(c, ',') || !string_lit(c, &s, &n) || !eat(c, ')'))
            return false;
    } else if (!string_lit(c, &s, &n)) {
        return false;
    }
    if (!eat(c, ','))
        return false;
    skip_ws(c);
    bool typed = c->p < c->end && *c->p == '[' ? descr_list(c, depth + 1) : string_lit(c, &s, &n);
    if (!typed)
        return false;
    if (!eat(c, ','))
        return eat(c, ')');
    if (eat(c, ')'))
        return true;
    if (!int_tuple(c, dims, &nd)) /* a sub-array field's shape */
        return false;
    eat(c, ',');
    return eat(c, ')');
}

static bool descr_list(struct cur *c, unsigned depth)
{
    if (depth > MAX_NESTING || !eat(c, '['))
        return false;
    if (eat(c, ']'))
        return false; /* numpy cannot write a structured type without fields */
    do {
        if (!descr_field(c, depth))
            return false;
        if (eat(c, ']'))
            return true;
    } while (eat(c, ','));
    return false;
}

static char *copy_text(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return out;
}

/* The 'descr' value: a dtype string, or a structured list kept as written. */
static int descr_value(struct cur *c, struct npy_header *h)
{
    const char *s;
    size_t n;
    skip_ws(c);
    const char *start = c->p;
    if (c->p < c->end && *c->p == '[') {
        if (!descr_list(c, 0))
            return -EINVAL;
        s = start;
        n = (size_t)(c->p - start);
    } else if (!string_lit(c, &s, &n) || n == 0) {
        return -EINVAL;
    }
    free(h->descr);
    h->descr = copy_text(s, n);
    return h->descr ? 0 : -ENOMEM;
}

enum { K_DESCR = 1, K_FORTRAN = 2, K_SHAPE = 4 };

/* One "key: value" entry; *seen collects the keys, each allowed once. */
static int dict_entry(struct cur *c, struct npy_header *h, unsigned *seen)
{
    const char *k;
    size_t n;
    if (!string_lit(c, &k, &n) || !eat(c, ':'))
        return -EINVAL;
    unsigned key = n == 5 && memcmp(k, "descr", 5) == 0           ? K_DESCR
                 : n == 13 && memcmp(k, "fortran_order", 13) == 0 ? K_FORTRAN
                 : n == 5 && memcmp(k, "shape", 5) == 0           ? K_SHAPE
                                                                  : 0;
    if (key == 0 || (*seen & key))
        return -EINVAL;
    *seen |= key;
    if (key == K_DESCR)
        return descr_value(c, h);
    if (key == K_SHAPE)
        return int_tuple(c, h->shape, &h->ndim) ? 0 : -EINVAL;
    if (eat_word(c, "True"))
        h->fortran_order = true;
    else if (eat_word(c, "False"))
        h->fortran_order = false;
    else
        return -EINVAL;
    return 0;
}

static int parse_dict(struct cur *c, struct npy_header *h)
{
    unsigned seen = 0;
    if (!eat(c, '{'))
        return -EINVAL;
    while (!eat(c, '}')) {
        int rc = dict_entry(c, h, &seen);
        if (rc < 0)
            return rc;
        if (!eat(c, ',')) {
            if (!eat(c, '}'))
                return -EINVAL;
            break;
        }
    }
    skip_ws(c); /* the padding */
    return seen == (K_DESCR | K_FORTRAN | K_SHAPE) && c->p == c->end ? 0 : -EINVAL;
}

int npy_parse(const unsigned char *buf, size_t len, struct npy_header *out)
{
    memset(out, 0, sizeof *out);
    int64_t size = npy_header_size(buf, len);
    if (size < 0 || (uint64_t)size > len)
        return -EINVAL;
    out->major = buf[6];
    out->minor = buf[7];
    out->data_off = (uint32_t)size;
    out->header_len = (uint32_t)size - (out->major == 1 ? 10 : 12);
    struct cur c = {(const char *)buf + size - out->header_len, (const char *)buf + size};
    int rc = parse_dict(&c, out);
    if (rc < 0)
        npy_free(out);
    return rc;
}

void npy_free(struct npy_header *h)
{
    free(h->descr);
    h->descr = NULL;
}

int npy_format_shape(const struct npy_header *h, char *out, size_t len)
{
    size_t used = 0;
    int n = snprintf(out, len, "(");
    for (unsigned i = 0; n >= 0 && (size_t)n < len - used && i < h->ndim; i++) {
        used += (size_t)n;
        n = snprintf(out + used, len - used, "%s%llu", i ? ", " : "",
                     (unsigned long long)h->shape[i]);
    }
    if (n < 0 || (size_t)n >= len - used)
        return -ENOSPC;
    used += (size_t)n;
    n = snprintf(out + used, len - used, h->ndim == 1 ? ",)" : ")");
    if (n < 0 || (size_t)n >= len - used)
        return -ENOSPC;
    return (int)(used + (size_t)n);
}
