/* multi-bench.c — scan_topk_multi's in-memory cost for a batch of queries, the harness behind
 * docs/bench-scan.md's many-query experiments (2026-12-06); not built by make:
 *   cc -std=c17 -O2 -march=x86-64-v3 -D_GNU_SOURCE -pthread -Iengine -o /tmp/mb \
 *      dev/scan-layout/multi-bench.c build/libengine.a -llmdb -lzstd -lutf8proc -ljansson \
 *      -ldl -lm -pthread
 *   /tmp/mb        32 queries x 200,000 random 384-d rows in 128-row blocks, k 100, 2 threads:
 *                  the best of 7 scans
 * Build it against two engine libraries (two worktrees) and alternate the binaries to compare
 * kernels. */
#include "scan.h"
#include "threadpool.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(void)
{
	enum { N = 200000, D = 384, NB = N / 128, NQ = 32, K = 100 };
	float *rows = aligned_alloc(64, sizeof(float) * (size_t)N * D);
	unsigned s = 1;
	for (size_t i = 0; i < (size_t)N * D; i++) { s = s * 1664525u + 1013904223u; rows[i] = (float)(s >> 8) / 16777216.0f - 0.5f; }
	static scan_block bl[NB];
	for (int b = 0; b < NB; b++) bl[b] = (scan_block){.vecs = rows + (size_t)b * 128 * D, .nrows = 128, .first_row = b * 128};
	float qs[NQ * D];
	for (int i = 0; i < NQ * D; i++) { s = s * 1664525u + 1013904223u; qs[i] = (float)(s >> 8) / 16777216.0f - 0.5f; }
	threadpool *pool = threadpool_create(2);
	static scan_hit out[NQ * K]; int nout[NQ]; emb_err e = {0};
	double best = 1e9;
	for (int r = 0; r < 7; r++) { double t = now(); scan_topk_multi(bl, NB, D, qs, NQ, K, pool, NULL, out, nout, &e); t = now() - t; if (t < best) best = t; }
	printf("%d queries x %d rows: best %.1f ms (%.2f ms a query)\n", NQ, N, best * 1e3, best * 1e3 / NQ);
	return 0;
}
