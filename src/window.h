/*
 * window: the 32 KiB of history a checkpoint needs, kept compressed when that pays (a window
 * of zeros packs into a few bytes, one of float noise not at all). A packed window is a raw
 * deflate stream when zlen < wlen, else the raw bytes. Pure functions; thread-safe.
 */
#ifndef NPZMOUNT_WINDOW_H
#define NPZMOUNT_WINDOW_H

#include <stddef.h>
#include <stdint.h>

/* How hard window_pack tries: WINDOW_CHEAP deflates only a window that is one byte repeated
 * (a memcmp to find out); WINDOW_SAMPLED deflates when its first 4 KiB pack well (float noise
 * costs a 4 KiB attempt, not a 32 KiB one); WINDOW_FULL always tries. */
enum window_effort { WINDOW_CHEAP, WINDOW_SAMPLED, WINDOW_FULL };

/* Packs raw[0..wlen) into a new malloc'd buffer *out of *zlen bytes: deflated when that is
 * smaller, else a copy. Returns 0 or -ENOMEM. */
int window_pack(const unsigned char *raw, uint32_t wlen, enum window_effort effort,
                unsigned char **out, uint32_t *zlen);

/* Unpacks z[0..zlen) into raw[0..wlen). Returns 0, or -EIO when z is not a packed window of
 * exactly wlen bytes. */
int window_unpack(const unsigned char *z, uint32_t zlen, unsigned char *raw, uint32_t wlen);

#endif
