/* scan.h — exact top-k inner-product scan over packed f32 rows.
 *
 * Exact search over a few million rows is bound by memory bandwidth, not arithmetic, so the
 * kernel reads every row once, straight from wherever it lies (the store hands it blocks of
 * LMDB's memory map: nothing is copied), with AVX2/FMA dot products and one small top-k
 * heap per task; tasks run on a threadpool and their heaps are merged at the end.
 */
#ifndef EMB_SCAN_H
#define EMB_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "threadpool.h"

/* A run of rows: nrows * dim floats at vecs (any alignment), numbered first_row... With a
 * guard that asks for checksums, the rows are followed by the u64 XXH3-64 of their bytes,
 * seeded with seed. */
typedef struct scan_block {
	const float *vecs;
	uint32_t nrows;
	uint32_t first_row;
	uint64_t seed;
} scan_block;

typedef struct scan_hit {
	float score;
	uint32_t row;
} scan_hit;

/* Dot product of two dim-float vectors (AVX2/FMA when built for it). */
float scan_dot(const float *a, const float *b, int dim);

/* The k rows with the highest q . row over all blocks, best first (ties: lower row first),
 * into out[0..*nout), *nout = min(k, total rows). pool may be NULL. Errors: EMB_EINVAL
 * (k < 1, dim < 1), EMB_ENOMEM. */
int scan_topk(const scan_block *blocks, size_t nblocks, int dim, const float *q, int k,
	      threadpool *pool, scan_hit *out, int *nout, emb_err *err);

/* Checks a scan makes on data it does not trust (a store's blocks). With checksums set,
 * every block's checksum is verified by the thread that scans the block's first row, just
 * before it scores the block, so that the scoring reads it from that core's L2 cache rather
 * than from memory a second time (one-shot XXH3 over a 192 KB block measured faster than
 * hashing 16 rows at a time between scoring them: 14.7 vs 17.3 ms for 200k rows, 2 cores,
 * docs/bench-scan.md). A score that is NaN or whose magnitude exceeds
 * max_abs (when max_abs > 0) is damage too. */
typedef struct scan_guard {
	int checksums;
	float max_abs;
	/* out: the first failure found (in no particular order between threads) */
	int failed;            /* 0, SCAN_BAD_BLOCK or SCAN_BAD_SCORE */
	size_t bad_block;      /* SCAN_BAD_BLOCK: index into blocks */
	uint32_t bad_row;      /* SCAN_BAD_SCORE: the row and its score */
	float bad_score;
} scan_guard;

enum { SCAN_BAD_BLOCK = 1, SCAN_BAD_SCORE = 2 };

/* scan_topk with the checks of *g (NULL: none). When a check fails, g->failed and the
 * fields after it say which, out holds nothing and the result is EMB_ESTORE ("scan: ...");
 * the caller names the store. Other errors as scan_topk. */
int scan_topk_guarded(const scan_block *blocks, size_t nblocks, int dim, const float *q, int k,
		      threadpool *pool, scan_guard *g, scan_hit *out, int *nout, emb_err *err);

#endif
