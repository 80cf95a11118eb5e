/* xxh_wide.c — XXH3-64 built for AVX-512, for the scan's block checksums on CPUs that have
 * it. The rest of the engine is built for x86-64-v3 (AVX2), where xxhash.h picks its AVX2
 * loop; this file alone is built with -march=x86-64-v4 (the Makefile says so), so its copy
 * picks the 512-bit loop, and scan.c calls it only when cpuid reports AVX-512 (xxh_wide_ok).
 * Same function, same values: only the speed differs (docs/bench-scan.md). Built for
 * anything less (a build that overrides ARCH), it is the AVX2 copy again. */
#include "xxh_wide.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

uint64_t xxh_wide(const void *data, size_t len, uint64_t seed)
{
	return XXH3_64bits_withSeed(data, len, seed);
}

int xxh_wide_ok(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	       __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
	       __builtin_cpu_supports("avx512cd");
}
