/* siphash: see siphash.h. Written from the SipHash paper's description (c = 2, d = 4). */
#include "siphash.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static inline void sipround(struct siphash_state *s)
{
    s->v0 += s->v1; s->v1 = ROTL(s->v1, 13); s->v1 ^= s->v0; s->v0 = ROTL(s->v0, 32);
    s->v2 += s->v3; s->v3 = ROTL(s->v3, 16); s->v3 ^= s->v2;
    s->v0 += s->v3; s->v3 = ROTL(s->v3, 21); s->v3 ^= s->v0;
    s->v2 += s->v1; s->v1 = ROTL(s->v1, 17); s->v1 ^= s->v2; s->v2 = ROTL(s->v2, 32);
}

static inline void absorb(struct siphash_state *s, uint64_t m)
{
    s->v3 ^= m;
    sipround(s);
    sipround(s);
    s->v0 ^= m;
}

void siphash_init(struct siphash_state *st, const struct sipkey *key)
{
    st->v0 = key->k0 ^ 0x736f6d6570736575ull;
    st->v1 = key->k1 ^ 0x646f72616e646f6dull;
    st->v2 = key->k0 ^ 0x6c7967656e657261ull;
    st->v3 = key->k1 ^ 0x7465646279746573ull;
    st->tail = 0;
    st->total = 0;
}

void siphash_update(struct siphash_state *st, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        unsigned fill = (unsigned)(st->total & 7);
        if (fill == 0 && len >= 8) { /* fast path: whole little-endian words */
            uint64_t m = 0;
            for (int i = 7; i >= 0; i--)
                m = m << 8 | p[i];
            absorb(st, m);
            p += 8;
            len -= 8;
            st->total += 8;
            continue;
        }
        st->tail |= (uint64_t)*p++ << (8 * fill);
        len--;
        st->total++;
        if ((st->total & 7) == 0) {
            absorb(st, st->tail);
            st->tail = 0;
        }
    }
}

uint64_t siphash_final(struct siphash_state *st)
{
    absorb(st, st->tail | (st->total & 0xff) << 56);
    st->v2 ^= 0xff;
    for (int i = 0; i < 4; i++)
        sipround(st);
    return st->v0 ^ st->v1 ^ st->v2 ^ st->v3;
}

uint64_t siphash24(const struct sipkey *key, const void *data, size_t len)
{
    struct siphash_state st;
    siphash_init(&st, key);
    siphash_update(&st, data, len);
    return siphash_final(&st);
}

struct sipkey sipkey_random(void)
{
    struct sipkey k;
    if (getrandom(&k, sizeof k, GRND_NONBLOCK) == (ssize_t)sizeof k)
        return k;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    k.k0 = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)&k;
    k.k1 = (uint64_t)ts.tv_sec * 0xC2B2AE3D27D4EB4Full ^ (uint64_t)(uintptr_t)&ts;
    return k;
}
