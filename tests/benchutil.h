/* benchutil.h — the clock and the sort the benchmark tools share. Header-only. */
#ifndef BENCHUTIL_H
#define BENCHUTIL_H

#include <time.h>

/* Monotonic seconds. */
static inline double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* qsort comparator for doubles, ascending (for percentiles). */
static inline int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

#endif
