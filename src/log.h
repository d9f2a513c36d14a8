/*
 * log: one-line messages from the daemon. They go to stderr, prefixed "npzmount: ", until told
 * otherwise: to the system log (log_to_syslog, once the daemon has detached and its stderr is
 * /dev/null) or to a file (log_to_file, which wins over both), one line per message with the
 * time and the process id.
 * Thread-safe: each message is written with a single call. The switches are for the main
 * thread before others start.
 */
#ifndef NPZMOUNT_LOG_H
#define NPZMOUNT_LOG_H

#include <stdbool.h>

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_to_syslog(bool on);

/* Appends messages to path from now on (created 0644 when missing). Returns 0 or a negative
 * errno, and then leaves the destination as it was. The descriptor survives fork. */
int log_to_file(const char *path);

/* Whether a syslog daemon listens on /dev/log (many containers and HPC nodes have none, and
 * syslog(3) then drops messages silently). */
bool log_syslog_reachable(void);

#endif
