#include "io.h"

#include <errno.h>
#include <stdbool.h>
#include <unistd.h>

/* One loop for both directions: pread and pwrite differ only in the constness of buf. */
static int io_exact(int fd, char *p, size_t len, uint64_t off, bool writing)
{
    while (len > 0) {
        ssize_t n = writing ? pwrite(fd, p, len, (off_t)off) : pread(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

int io_read_exact(int fd, void *buf, size_t len, uint64_t off)
{
    return io_exact(fd, buf, len, off, false);
}

int io_write_exact(int fd, const void *buf, size_t len, uint64_t off)
{
    return io_exact(fd, (char *)buf, len, off, true);
}
