/*
 * secret: the mount's password. It comes from a file (-o password_file) or from the terminal
 * with echo off (-o askpass), never from argv or the environment, and lives in a page of its
 * own: locked in memory when the system allows it (so never swapped), left out of core dumps,
 * and zeroed when freed. One trailing newline ("\n" or "\r\n") is not part of it; an empty
 * password, or one with a NUL byte or a line break inside, is refused (libarchive takes a C
 * string, and a second line is more likely a mistake than a password).
 *
 * Errors: negative errno, with a one-line reason in msg. Threads: made and freed by one thread;
 * secret_str may be read by any once made. The caller owns the secret (secret_free).
 */
#ifndef NPZMOUNT_SECRET_H
#define NPZMOUNT_SECRET_H

#include <stddef.h>

#define SECRET_MAX 1024 /* bytes of password, at most */

struct secret;

int secret_from_file(const char *path, struct secret **out, char *msg, size_t msg_len);

/* Asks on the controlling terminal (/dev/tty), writing prompt there first. */
int secret_from_tty(const char *prompt, struct secret **out, char *msg, size_t msg_len);

/* The password, NUL-terminated; valid until secret_free. */
const char *secret_str(const struct secret *s);

/* Zeroes and frees; NULL is fine. */
void secret_free(struct secret *s);

#endif
