/* secret: see secret.h. */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <unistd.h>

#include "io.h"

struct secret {
    size_t len;
    char text[SECRET_MAX + 4]; /* "\r\n", and a byte more to notice a password too long */
};

static struct secret *secret_new(void)
{
    struct secret *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED)
        return NULL;
    (void)mlock(s, sizeof *s); /* best effort: RLIMIT_MEMLOCK may be 0 */
    (void)madvise(s, sizeof *s, MADV_DONTDUMP);
    return s; /* mmap gives zeroed memory */
}

void secret_free(struct secret *s)
{
    if (!s)
        return;
    explicit_bzero(s, sizeof *s);
    munlock(s, sizeof *s);
    munmap(s, sizeof *s);
}

const char *secret_str(const struct secret *s)
{
    return s->text;
}

/* Reads from fd into s until the end, or the end of the first line when line is set. Returns
 * 0 or a negative errno. */
static int read_into(int fd, struct secret *s, bool line)
{
    size_t cap = sizeof s->text - 1;
    while (s->len < cap && !(line && s->len && s->text[s->len - 1] == '\n')) {
        ssize_t n = read(fd, s->text + s->len, cap - s->len);
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        s->len += (size_t)n;
    }
    return 0;
}

/* Drops one trailing newline and checks what is left; what names the source in messages. */
static int finish(struct secret *s, const char *what, char *msg, size_t msg_len)
{
    if (s->len && s->text[s->len - 1] == '\n')
        s->len--;
    if (s->len && s->text[s->len - 1] == '\r')
        s->len--;
    if (s->len > SECRET_MAX)
        return io_fail(msg, msg_len, -E2BIG, "%s: password longer than %d bytes", what,
                       SECRET_MAX);
    s->text[s->len] = '\0';
    if (s->len == 0)
        return io_fail(msg, msg_len, -EINVAL, "%s: empty password", what);
    if (strlen(s->text) != s->len || memchr(s->text, '\n', s->len))
        return io_fail(msg, msg_len, -EINVAL, "%s: the password must be one line of text",
                       what);
    return 0;
}

/* Hands s to *out when rc is 0, else frees it. Returns rc. */
static int deliver(struct secret *s, int rc, struct secret **out)
{
    if (rc < 0)
        secret_free(s);
    else
        *out = s;
    return rc;
}

int secret_from_file(const char *path, struct secret **out, char *msg, size_t msg_len)
{
    struct secret *s = secret_new();
    if (!s)
        return io_fail(msg, msg_len, -ENOMEM, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    int rc = fd < 0 ? -errno : read_into(fd, s, false);
    if (fd >= 0)
        close(fd);
    if (rc < 0)
        rc = io_fail(msg, msg_len, rc, "password_file=%s: %s", path, strerror(-rc));
    else
        rc = finish(s, "password_file", msg, msg_len);
    return deliver(s, rc, out);
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* While the terminal's echo is off, a signal that would kill us must not leave it so: the
 * read returns EINTR instead (no SA_RESTART), and the caller puts the terminal back. */
static void catch_signals(struct sigaction *old)
{
    static const int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    interrupted = 0;
    for (int i = 0; i < 3; i++)
        sigaction(sigs[i], &sa, &old[i]);
}

static void restore_signals(const struct sigaction *old)
{
    static const int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++)
        sigaction(sigs[i], &old[i], NULL);
}

int secret_from_tty(const char *prompt, struct secret **out, char *msg, size_t msg_len)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return io_fail(msg, msg_len, -ENXIO, "askpass: no terminal to ask on (%s); use "
                       "-o password_file=PATH", strerror(errno));
    struct secret *s = secret_new();
    struct termios old, quiet;
    struct sigaction sigs[3];
    int rc = !s ? -ENOMEM : tcgetattr(fd, &old) < 0 ? -errno : 0;
    if (rc == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
        quiet.c_lflag |= ICANON;
        catch_signals(sigs);
        if (tcsetattr(fd, TCSAFLUSH, &quiet) < 0 || write(fd, prompt, strlen(prompt)) < 0)
            rc = -errno;
        if (rc == 0)
            rc = read_into(fd, s, true);
        tcsetattr(fd, TCSAFLUSH, &old);
        restore_signals(sigs);
        if (write(fd, "\n", 1) < 0) /* the user's newline was not echoed */
            rc = rc ? rc : -errno;
    }
    close(fd);
    if (rc < 0)
        rc = io_fail(msg, msg_len, rc, "askpass: %s",
                     interrupted ? "interrupted" : strerror(-rc));
    else
        rc = finish(s, "askpass", msg, msg_len);
    if (!s)
        return rc;
    return deliver(s, rc, out);
}
