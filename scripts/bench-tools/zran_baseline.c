/*
 * zran_baseline: the zlib figures scripts/bench compares npzmount's deflate reads against,
 * measured in the same run on the same member bytes. Plain zlib, no FUSE, no cache: what the
 * decoder allows.
 *
 *   zran_baseline build FILE OFFSET CSIZE USIZE SPAN [LIMIT]
 *       Raw inflate of the member (compressed bytes read into memory first, untimed) with
 *       Z_BLOCK into one reused output buffer, recording a zran-style checkpoint (input
 *       offset, leftover bits, copy of the last 32 KiB of output) at the first block boundary
 *       at least SPAN output bytes after the previous one. Stops once LIMIT output bytes are
 *       out (default USIZE). Prints {"seconds", "bytes", "mbps", "checkpoints"}.
 *
 *   zran_baseline restart FILE OFFSET CSIZE USIZE SPAN COUNT SEED
 *       Builds the index (untimed), then times COUNT restarts at random checkpoints: reset,
 *       inflatePrime with the leftover bits, inflateSetDictionary with the window, and inflate
 *       SPAN output bytes. Prints {"mean_s", "median_s", "min_s", "max_s", "count", "span",
 *       "check_off", "check_crc"}: the last restart's output offset and the CRC-32 of the
 *       SPAN bytes it decoded, for the caller to check against the member's bytes.
 *
 * Exit status 0, or 1 with one line on stderr. Built by scripts/bench: cc -O2 ... -lz
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <zlib.h>

#define WIN 32768u

struct point {
    uint64_t in, out;        /* compressed / decompressed offsets of the block boundary */
    int bits;                /* bits of the byte before `in` still to be consumed */
    unsigned wlen;           /* window bytes (less than WIN only near the start) */
    unsigned char *window;
};

struct index {
    struct point *pt;
    size_t n, cap;
};

static void die(const char *what)
{
    fprintf(stderr, "zran_baseline: %s\n", what);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static unsigned char *load(const char *path, uint64_t off, uint64_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    unsigned char *p = malloc(len ? len : 1);
    if (fd < 0 || !p)
        die("cannot open the archive or allocate its bytes");
    for (uint64_t got = 0; got < len;) {
        ssize_t n = pread(fd, p + got, len - got, (off_t)(off + got));
        if (n <= 0)
            die("short read of the member's compressed bytes");
        got += (uint64_t)n;
    }
    close(fd);
    return p;
}

/* Copies the last `want` output bytes, which end at buf[pos] and may wrap around the end of
 * the ring buf[0..size). */
static void copy_window(unsigned char *dst, const unsigned char *buf, size_t size, size_t pos,
                        unsigned want)
{
    if (pos >= want) {
        memcpy(dst, buf + pos - want, want);
        return;
    }
    size_t tail = want - pos;
    memcpy(dst, buf + size - tail, tail);
    memcpy(dst + tail, buf, pos);
}

static void add_point(struct index *ix, const z_stream *s, const unsigned char *buf,
                      size_t size, size_t pos)
{
    if (ix->n == ix->cap) {
        ix->cap = ix->cap ? ix->cap * 2 : 64;
        ix->pt = realloc(ix->pt, ix->cap * sizeof *ix->pt);
        if (!ix->pt)
            die("out of memory");
    }
    struct point *p = &ix->pt[ix->n++];
    p->in = s->total_in;
    p->out = s->total_out;
    p->bits = s->data_type & 7;
    p->wlen = s->total_out < WIN ? (unsigned)s->total_out : WIN;
    p->window = malloc(WIN);
    if (!p->window)
        die("out of memory");
    copy_window(p->window, buf, size, pos, p->wlen);
}

/* One pass over the member; returns the seconds it took. The ring is at least twice the
 * window, so the last 32 KiB are always in it. */
static double build(const unsigned char *in, uint64_t csize, uint64_t limit, uint64_t span,
                    struct index *ix, uint64_t *decoded)
{
    size_t size = span > 2 * WIN ? span : 2 * WIN;
    unsigned char *buf = malloc(size);
    z_stream s = {0};
    if (!buf || inflateInit2(&s, -15) != Z_OK)
        die("inflateInit2 failed");
    double t0 = now();
    s.next_in = (unsigned char *)in;
    s.avail_in = (uInt)(csize > UINT32_MAX ? UINT32_MAX : csize);
    size_t pos = 0;
    uint64_t last = 0;
    add_point(ix, &s, buf, size, pos);
    while (s.total_out < limit) {
        if (pos == size)
            pos = 0;
        s.next_out = buf + pos;
        s.avail_out = (uInt)(size - pos);
        uLong before = s.total_out;
        if (s.avail_in == 0) /* members over 4 GiB: feed the rest */
            s.avail_in = (uInt)((csize - s.total_in) > UINT32_MAX ? UINT32_MAX
                                                                 : csize - s.total_in);
        int rc = inflate(&s, Z_BLOCK);
        pos += s.total_out - before;
        if (rc == Z_STREAM_END)
            break;
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            die(s.msg ? s.msg : "inflate failed");
        if ((s.data_type & 128) && !(s.data_type & 64) && s.total_out - last >= span) {
            add_point(ix, &s, buf, size, pos);
            last = s.total_out;
        }
    }
    double dt = now() - t0;
    *decoded = s.total_out;
    inflateEnd(&s);
    free(buf);
    return dt;
}

/* Decodes span bytes from checkpoint p; returns the seconds it took. */
static double restart(z_stream *s, const unsigned char *in, uint64_t csize,
                      const struct point *p, unsigned char *out, uint64_t span)
{
    double t0 = now();
    if (inflateReset2(s, -15) != Z_OK)
        die("inflateReset2 failed");
    if (p->bits && inflatePrime(s, p->bits, in[p->in - 1] >> (8 - p->bits)) != Z_OK)
        die("inflatePrime failed");
    if (p->wlen && inflateSetDictionary(s, p->window, p->wlen) != Z_OK)
        die("inflateSetDictionary failed");
    s->next_in = (unsigned char *)in + p->in;
    uint64_t left_in = csize - p->in;
    s->avail_in = (uInt)(left_in > UINT32_MAX ? UINT32_MAX : left_in);
    s->next_out = out;
    s->avail_out = (uInt)span;
    int rc;
    do
        rc = inflate(s, Z_NO_FLUSH);
    while (rc == Z_OK && s->avail_out > 0);
    if (s->avail_out > 0)
        die(s->msg ? s->msg : "restart decoded less than a span");
    return now() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run_restarts(const unsigned char *in, uint64_t csize, uint64_t usize,
                         uint64_t span, const struct index *ix, unsigned count, unsigned seed)
{
    size_t usable = 0; /* checkpoints with a whole span after them */
    while (usable < ix->n && ix->pt[usable].out + span <= usize)
        usable++;
    if (usable == 0 || count == 0)
        die("no checkpoint has a whole span after it");
    unsigned char *out = malloc(span);
    double *t = malloc(count * sizeof *t);
    z_stream s = {0};
    if (!out || !t || inflateInit2(&s, -15) != Z_OK)
        die("out of memory");
    srand(seed);
    double sum = 0;
    const struct point *p = NULL;
    for (unsigned i = 0; i < count; i++) {
        p = &ix->pt[(size_t)rand() % usable];
        t[i] = restart(&s, in, csize, p, out, span);
        sum += t[i];
    }
    qsort(t, count, sizeof *t, cmp_double);
    /* The last restart's offset and CRC-32 let the caller check the decoded bytes. */
    printf("{\"mean_s\": %.9f, \"median_s\": %.9f, \"min_s\": %.9f, \"max_s\": %.9f, "
           "\"count\": %u, \"span\": %llu, \"check_off\": %llu, \"check_crc\": %lu}\n",
           sum / count, t[count / 2], t[0], t[count - 1], count, (unsigned long long)span,
           (unsigned long long)p->out, crc32(0, out, (uInt)span));
    inflateEnd(&s);
    free(out);
    free(t);
}

static uint64_t num(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s)
        die("bad number on the command line");
    return v;
}

int main(int argc, char **argv)
{
    int is_build = argc >= 7 && argc <= 8 && strcmp(argv[1], "build") == 0;
    int is_restart = argc == 9 && strcmp(argv[1], "restart") == 0;
    if (!is_build && !is_restart) {
        fprintf(stderr, "usage: zran_baseline build FILE OFFSET CSIZE USIZE SPAN [LIMIT]\n"
                        "       zran_baseline restart FILE OFFSET CSIZE USIZE SPAN COUNT SEED\n");
        return 2;
    }
    uint64_t off = num(argv[3]), csize = num(argv[4]), usize = num(argv[5]), span = num(argv[6]);
    if (span == 0 || span > UINT32_MAX)
        die("span out of range");
    uint64_t limit = is_build && argc == 8 ? num(argv[7]) : usize;
    unsigned char *in = load(argv[2], off, csize);
    struct index ix = {0};
    uint64_t want = limit < usize ? limit : usize, got;
    double dt = build(in, csize, want, span, &ix, &got);
    if (got < want)
        die("the member decoded to fewer bytes than its size");
    if (is_build) {
        printf("{\"seconds\": %.9f, \"bytes\": %llu, \"mbps\": %.3f, \"checkpoints\": %zu}\n",
               dt, (unsigned long long)got, (double)got / 1e6 / dt, ix.n);
    } else {
        run_restarts(in, csize, usize, span, &ix, (unsigned)num(argv[7]), (unsigned)num(argv[8]));
    }
    for (size_t i = 0; i < ix.n; i++)
        free(ix.pt[i].window);
    free(ix.pt);
    free(in);
    return 0;
}
