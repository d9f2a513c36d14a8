/* pins: see pins.h. */
#include "pins.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"

int read_pins_add(struct read_pins *p, struct cache *c, struct cache_entry *e,
                  const void *data, size_t len)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 8;
        struct cache_entry **held = realloc(p->held, cap * sizeof *held);
        if (held)
            p->held = held;
        struct iovec *iov = held ? realloc(p->iov, cap * sizeof *iov) : NULL;
        if (!iov)
            return -ENOMEM;
        p->iov = iov;
        p->cap = cap;
    }
    if (e) {
        p->cache = c;
        p->held[p->nheld++] = e;
    }
    p->iov[p->n++] = (struct iovec){(void *)data, len};
    return 0;
}

size_t read_pins_copy(const struct read_pins *p, void *out, size_t cap)
{
    size_t at = 0;
    for (size_t i = 0; i < p->n && at < cap; i++) {
        size_t n = p->iov[i].iov_len < cap - at ? p->iov[i].iov_len : cap - at;
        memcpy((unsigned char *)out + at, p->iov[i].iov_base, n);
        at += n;
    }
    return at;
}

void read_pins_release(struct read_pins *p)
{
    for (size_t i = 0; i < p->nheld; i++)
        cache_put(p->cache, p->held[i]);
    p->nheld = p->n = 0;
}

void read_pins_free(struct read_pins *p)
{
    read_pins_release(p);
    free(p->held);
    free(p->iov);
    *p = (struct read_pins){0};
}
