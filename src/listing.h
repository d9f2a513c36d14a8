/*
 * listing: `npzmount --list [--json]`, one row per member (its key, its path in the mount,
 * sizes, method and npy header), written without mounting. The JSON fields are documented
 * in the man page; scripts (npzmount.info() in Python) depend on their names.
 *
 * Errors: negative errno (-EIO when out could not be written). Threads: as npz.h.
 */
#ifndef NPZMOUNT_LISTING_H
#define NPZMOUNT_LISTING_H

#include <stdbool.h>
#include <stdio.h>

#include "npz.h"

/* Writes the listing of npz to out: a table for people, or with json one JSON array of flat
 * objects. Reads each member's npy header (one small decode for compressed members). */
int listing_write(struct npz *npz, FILE *out, bool json);

#endif
