/* cputime: what the C bench tools time with. Header only: each tool is one program. */
#ifndef NPZMOUNT_BENCH_CPUTIME_H
#define NPZMOUNT_BENCH_CPUTIME_H

#include <stdlib.h>
#include <time.h>

/* CPU time of this thread: the machine is shared, and wall time mostly measures the others. */
static inline double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of v[0..n), n > 0 (v is sorted on the way). */
static inline double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#endif
