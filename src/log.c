#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static atomic_bool use_syslog;
static atomic_int log_fd = -1;

void log_to_syslog(bool on)
{
    if (on)
        openlog("npzmount", LOG_PID, LOG_DAEMON);
    atomic_store(&use_syslog, on);
}

int log_to_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0)
        return -errno;
    int old = atomic_exchange(&log_fd, fd);
    if (old >= 0)
        close(old);
    return 0;
}

static bool can_connect(const char *path, int type)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int s = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (s < 0)
        return false;
    bool ok = connect(s, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(s);
    return ok;
}

bool log_syslog_reachable(void)
{
    /* syslog(3) tries a datagram socket, then a stream one */
    return can_connect(_PATH_LOG, SOCK_DGRAM) || can_connect(_PATH_LOG, SOCK_STREAM);
}

static void write_file(int fd, const char *msg)
{
    char stamp[32], line[1200];
    time_t now = time(NULL);
    struct tm tm;
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", localtime_r(&now, &tm));
    int n = snprintf(line, sizeof line, "%s npzmount[%d]: %s\n", stamp, (int)getpid(), msg);
    if (n > (int)sizeof line - 1) {
        n = (int)sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(fd, line, (size_t)n);
    (void)w; /* nowhere left to report a failed write */
}

void log_error(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    int fd = atomic_load(&log_fd);
    if (fd >= 0)
        write_file(fd, line);
    else if (atomic_load(&use_syslog))
        syslog(LOG_ERR, "%s", line);
    else
        fprintf(stderr, "npzmount: %s\n", line);
}
