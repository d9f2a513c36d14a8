/*
 * log: one-line messages from the daemon. They go to stderr, prefixed "npzmount: ", until
 * log_to_syslog() is called (the daemon has detached and its stderr is /dev/null).
 * Thread-safe: each message is written with a single call.
 */
#ifndef NPZMOUNT_LOG_H
#define NPZMOUNT_LOG_H

#include <stdbool.h>

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_to_syslog(bool on);

#endif
