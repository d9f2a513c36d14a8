/*
 * window: the 32 KiB of history a checkpoint needs, kept compressed when that pays (a window
 * of zeros packs into a few bytes, one of float noise not at all). A packed window is a raw
 * deflate stream when zlen < wlen, else the raw bytes. Pure functions; thread-safe.
 */
#ifndef NPZMOUNT_WINDOW_H
#define NPZMOUNT_WINDOW_H

#include <stddef.h>
#include <stdint.h>

/* Packs raw[0..wlen) into a new malloc'd buffer *out of *zlen bytes: deflated when that is
 * smaller, else a copy. cheap_only skips the deflate attempt unless the window is one byte
 * repeated (a test that costs a memcmp). Returns 0 or -ENOMEM. */
int window_pack(const unsigned char *raw, uint32_t wlen, int cheap_only, unsigned char **out,
                uint32_t *zlen);

/* Unpacks z[0..zlen) into raw[0..wlen). Returns 0, or -EIO when z is not a packed window of
 * exactly wlen bytes. */
int window_unpack(const unsigned char *z, uint32_t zlen, unsigned char *raw, uint32_t wlen);

#endif
