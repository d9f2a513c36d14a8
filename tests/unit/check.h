/*
 * check.h: a header-only unit test harness.
 *
 *   CHECK(cond)                 records a failure (with file:line) when cond is false
 *   CHECK_EQ_U64(a, b)          unsigned 64-bit equality, prints both values
 *   CHECK_EQ_I64(a, b)          signed 64-bit equality
 *   CHECK_EQ_STR(a, b)          strcmp equality (NULL-safe)
 *   CHECK_EQ_MEM(a, alen, b, blen)  byte-string equality, printed as escaped text
 *   check_context(fmt, ...)     text prefixed to every following failure ("" clears it)
 *   RUN_TEST(fn)                runs void fn(void), printing its name if it failed
 *   check_summary("prog")       prints "prog: N passed, M failed"; returns the exit status
 *
 * Every macro evaluates to true when the check passed, so a test can stop early:
 *     if (!CHECK(p != NULL)) return;
 * Checks never abort: a failure prints one line and the test continues. At most
 * CHECK_MAX_PRINTED failures are printed (all are counted).
 */
#ifndef NPZMOUNT_CHECK_H
#define NPZMOUNT_CHECK_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define CHECK_MAX_PRINTED 200

static struct {
    unsigned long passed, failed;
    char context[512];
} check_state __attribute__((unused));

__attribute__((format(printf, 1, 2))) static inline void check_context(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(check_state.context, sizeof check_state.context, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 4, 5))) static inline bool check_report(bool ok, const char *file,
                                                                     int line, const char *fmt,
                                                                     ...)
{
    if (ok) {
        check_state.passed++;
        return true;
    }
    if (++check_state.failed <= CHECK_MAX_PRINTED) {
        va_list ap;
        printf("FAIL %s:%d: ", file, line);
        if (check_state.context[0])
            printf("[%s] ", check_state.context);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        putchar('\n');
    } else if (check_state.failed == CHECK_MAX_PRINTED + 1) {
        printf("FAIL (further failures are counted but not printed)\n");
    }
    fflush(stdout);
    return false;
}

static inline bool check_u64(uint64_t a, uint64_t b, const char *ea, const char *eb,
                             const char *file, int line)
{
    return check_report(a == b, file, line, "%s == %s: %" PRIu64 " (0x%" PRIx64 ") != %" PRIu64
                        " (0x%" PRIx64 ")", ea, eb, a, a, b, b);
}

static inline bool check_i64(int64_t a, int64_t b, const char *ea, const char *eb,
                             const char *file, int line)
{
    return check_report(a == b, file, line, "%s == %s: %" PRId64 " != %" PRId64, ea, eb, a, b);
}

/* Prints up to 120 bytes of s as C-escaped text. */
static inline void check_print_escaped(const void *s, size_t len)
{
    const unsigned char *p = s;
    putchar('"');
    for (size_t i = 0; i < len && i < 120; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
            putchar(p[i]);
        else
            printf("\\x%02x", p[i]);
    }
    printf(len > 120 ? "\"...(%zu bytes)" : "\"", len);
}

static inline bool check_mem(const void *a, size_t alen, const void *b, size_t blen,
                             const char *ea, const char *eb, const char *file, int line)
{
    bool ok = a && b && alen == blen && memcmp(a, b, alen) == 0;
    if (!check_report(ok, file, line, "%s == %s", ea, eb)) {
        if (check_state.failed <= CHECK_MAX_PRINTED) {
            printf("    got:  ");
            if (a)
                check_print_escaped(a, alen);
            else
                printf("NULL");
            printf("\n    want: ");
            if (b)
                check_print_escaped(b, blen);
            else
                printf("NULL");
            putchar('\n');
        }
        return false;
    }
    return true;
}

static inline bool check_str(const char *a, const char *b, const char *ea, const char *eb,
                             const char *file, int line)
{
    return check_mem(a, a ? strlen(a) : 0, b, b ? strlen(b) : 0, ea, eb, file, line);
}

/* Pseudo-random numbers for the tests (xorshift64*): advances the state *s and returns the
 * next value, so a seed gives the same sequence on every run. */
static inline uint64_t check_rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#define CHECK(cond) check_report((cond) ? true : false, __FILE__, __LINE__, "%s", #cond)
#define CHECK_EQ_U64(a, b) check_u64((uint64_t)(a), (uint64_t)(b), #a, #b, __FILE__, __LINE__)
#define CHECK_EQ_I64(a, b) check_i64((int64_t)(a), (int64_t)(b), #a, #b, __FILE__, __LINE__)
#define CHECK_EQ_STR(a, b) check_str((a), (b), #a, #b, __FILE__, __LINE__)
#define CHECK_EQ_MEM(a, alen, b, blen) \
    check_mem((a), (size_t)(alen), (b), (size_t)(blen), #a, #b, __FILE__, __LINE__)

static inline void check_run(const char *name, void (*fn)(void))
{
    unsigned long before = check_state.failed;
    check_state.context[0] = '\0';
    fn();
    check_state.context[0] = '\0';
    if (check_state.failed != before)
        printf("  in %s: %lu failed\n", name, check_state.failed - before);
    fflush(stdout);
}

#define RUN_TEST(fn) check_run(#fn, fn)

static inline int check_summary(const char *prog)
{
    printf("%s: %lu passed, %lu failed\n", prog, check_state.passed, check_state.failed);
    fflush(stdout);
    return check_state.failed ? 1 : 0;
}

#endif
