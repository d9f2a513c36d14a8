/*
 * siphash: SipHash-2-4 (Aumasson and Bernstein), a keyed 64-bit hash. With a secret random key
 * an attacker who controls the input cannot make values collide any more often than chance,
 * which is what hash tables over untrusted names need. Two calls with different fixed keys
 * give a 128-bit fingerprint for content identities (not a cryptographic digest against a
 * chosen-collision attacker who knows the keys, but far beyond accidental collisions).
 * Pure functions; thread-safe.
 */
#ifndef NPZMOUNT_SIPHASH_H
#define NPZMOUNT_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

struct sipkey {
    uint64_t k0, k1;
};

uint64_t siphash24(const struct sipkey *key, const void *data, size_t len);

/* Incremental form, for input that arrives in pieces; the result equals siphash24 over the
 * concatenation. */
struct siphash_state {
    uint64_t v0, v1, v2, v3;
    uint64_t tail;     /* up to 7 pending bytes, little-endian */
    uint64_t total;    /* bytes absorbed so far */
};

void siphash_init(struct siphash_state *st, const struct sipkey *key);
void siphash_update(struct siphash_state *st, const void *data, size_t len);
uint64_t siphash_final(struct siphash_state *st);

/* A random key from getrandom(2); falls back to time and address bits if that fails. */
struct sipkey sipkey_random(void);

#endif
