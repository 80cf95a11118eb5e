/* multi-bench.c — scan_topk_multi's in-memory cost for a batch of queries, the harness behind
 * docs/bench-scan.md's many-query experiments (2026-12-06); not built by make:
 *   cc -std=c17 -O2 -march=x86-64-v3 -D_GNU_SOURCE -pthread -Iengine -o /tmp/mb \
 *      dev/scan-layout/multi-bench.c build/libengine.a -llmdb -lzstd -lutf8proc -ljansson \
 *      -ldl -lm -pthread
 *   /tmp/mb        32 queries x 200,000 random 384-d rows in 128-row blocks, k 100, 2 threads:
 *                  the best of 7 scans
 *   /tmp/mb bin    binary codes: 32 queries x 1M random 48-byte rows in 4,096-row blocks (format
 *                  5's groups), k 100, 2 threads: scan_topk_compact_multi against the 32
 *                  queries one scan_topk_compact each, the best of 7
 * Build it against two engine libraries (two worktrees) and alternate the binaries to compare
 * kernels. */
#include "quant.h"
#include "scan.h"
#include "threadpool.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int bin_bench(void)
{
	enum { N = 1 << 20, RB = 48, BR = 4096, NB = N / BR, NQ = 32, K = 100, D = 384 };
	uint8_t *codes = aligned_alloc(64, (size_t)N * RB);
	unsigned s = 7;
	for (size_t i = 0; i < (size_t)N * RB; i++) { s = s * 1664525u + 1013904223u; codes[i] = (uint8_t)(s >> 24); }
	static scan_block bl[NB];
	for (int b = 0; b < NB; b++) bl[b] = (scan_block){.codes = codes + (size_t)b * BR * RB, .nrows = BR, .first_row = b * BR};
	static uint8_t qb[NQ][RB];
	static scan_cquery cq[NQ];
	for (int i = 0; i < NQ; i++) {
		float q[D];
		for (int d = 0; d < D; d++) { s = s * 1664525u + 1013904223u; q[d] = (float)(s >> 8) / 16777216.0f - 0.5f; }
		quant_bin_encode(q, D, qb[i]);
		cq[i] = (scan_cquery){.kind = QUANT_BINARY, .dim = D, .bits = qb[i]};
	}
	threadpool *pool = threadpool_create(2);
	static scan_hit out[NQ * K], one[NQ * K]; int nout[NQ], n1[NQ]; emb_err e = {0};
	double bm = 1e9, b1 = 1e9;
	for (int r = 0; r < 7; r++) {
		double t = now();
		if (scan_topk_compact_multi(bl, NB, cq, NQ, K, pool, NULL, out, nout, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
		t = now() - t; if (t < bm) bm = t;
		t = now();
		for (int i = 0; i < NQ; i++)
			if (scan_topk_compact(bl, NB, cq + i, K, pool, NULL, one + i * K, n1 + i, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
		t = now() - t; if (t < b1) b1 = t;
	}
	int same = !memcmp(nout, n1, sizeof nout) && !memcmp(out, one, sizeof out);
	printf("binary, %d queries x %d rows: together best %.1f ms, one at a time %.1f ms (%.2fx)%s\n", NQ, N,
	       bm * 1e3, b1 * 1e3, b1 / bm, same ? "" : ", RESULTS DIFFER");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "bin"))
		return bin_bench();
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
