#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <syslog.h>

static atomic_bool use_syslog;

void log_to_syslog(bool on)
{
    if (on)
        openlog("npzmount", LOG_PID, LOG_DAEMON);
    atomic_store(&use_syslog, on);
}

void log_error(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (atomic_load(&use_syslog))
        syslog(LOG_ERR, "%s", line);
    else
        fprintf(stderr, "npzmount: %s\n", line);
}
