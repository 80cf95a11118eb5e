/* xxh_wide.h — XXH3-64 (seeded) from a copy built for AVX-512 (xxh_wide.c says why).
 *
 * xxh_wide(data, len, seed) equals XXH3_64bits_withSeed(data, len, seed) for every input;
 * call it only when xxh_wide_ok() returned 1 (the CPU has AVX-512 F, BW, DQ, VL and CD: the
 * x86-64-v4 set its copy was built for); otherwise it may execute instructions the CPU
 * lacks. */
#ifndef EMB_XXH_WIDE_H
#define EMB_XXH_WIDE_H

#include <stddef.h>
#include <stdint.h>

uint64_t xxh_wide(const void *data, size_t len, uint64_t seed);
int xxh_wide_ok(void);

#endif
