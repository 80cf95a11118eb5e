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
 * guard that asks for checksums, the checked bytes are followed by the u64 XXH3-64 of them,
 * seeded with seed: the rows themselves, or sum_len bytes from sum_data when sum_data is set
 * (a store's compact block, whose checksum also covers its scales and row sums). */
typedef struct scan_block {
	const float *vecs;
	uint32_t nrows;
	uint32_t first_row;
	uint64_t seed;
	const uint8_t *codes; /* scan_topk_compact reads these instead: nrows * row bytes */
	/* int8 only: dim per-dimension scales of this block's codes (store format 4), the
	 * query being coded against them block by block (scan_cquery.qf); NULL: every block's
	 * codes share the scales the query's q8 was made with. With scale_rows > 0 the block
	 * has a set of dim scales for each scale_rows rows, one after another (store format 6:
	 * a value holding several blocks), and the query is coded again for each set. */
	const float *scales;
	uint32_t scale_rows;
	const void *sum_data;
	size_t sum_len;
} scan_block;

typedef struct scan_hit {
	float score;
	uint32_t row;
} scan_hit;

/* Dot product of two dim-float vectors (AVX2/FMA when built for it). */
float scan_dot(const float *a, const float *b, int dim);

/* The score scan_topk gives row against q, bit for bit (its summation order): what a
 * rescoring of compact candidates uses, so that it reproduces the f32 scan's answer. */
float scan_score(const float *q, const float *row, int dim);

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

/* scan_topk_guarded for nq queries at once (qs: nq * dim floats): each run of rows is scored
 * by every query while it is in cache, so memory delivers the rows once for the batch. Query
 * i's hits go to out[i * k ..], *nout[i] of them, exactly as scan_topk_guarded would give
 * them. Errors as scan_topk_guarded, EMB_EINVAL (nq < 1). */
int scan_topk_multi(const scan_block *blocks, size_t nblocks, int dim, const float *qs, int nq,
		    int k, threadpool *pool, scan_guard *g, scan_hit *out, int *nout, emb_err *err);

/* ---- compact rows (quant.h: int8 codes, sign bits) ------------------------------------
 * The same scan over rows of 1 byte (int8) or 1 bit (binary) a dimension, for a store that
 * keeps a compact copy of its vectors: 4x or 32x fewer bytes to read. The kernels are chosen
 * at run time from cpuid (scan_kernels names them): int8 dot with AVX-512 VNNI (VPDPBUSD on
 * 512 bits), else AVX-VNNI (the same on 256 bits), else AVX2 (widen to 16 bits, VPMADDWD);
 * binary Hamming distance with AVX-512 VPOPCNTDQ, else AVX2 (nibble table, VPSHUFB). */

/* What a compact row is scored against. INT8: q8 has dim signed codes and the score of a row
 * of unsigned codes u is scale * (sum_d u[d] * q8[d] - bias) (quant_i8_query). BINARY: bits
 * has (dim + 7) / 8 bytes and the score is 1 - 2 * hamming(row, bits) / dim (the cosine of
 * the two sign vectors). */
typedef struct scan_cquery {
	int kind;              /* QUANT_INT8 or QUANT_BINARY (quant.h) */
	int dim;
	const int8_t *q8;
	const uint8_t *bits;
	int32_t bias;
	float scale;
	/* INT8 with blocks that carry their own scales: the unit query (dim floats), coded for
	 * each such block by scan_i8_query (q8, bias and scale above are then unused). */
	const float *qf;
} scan_cquery;

/* quant_i8_query (quant.h), vectorised, bit for bit equal: the query side of an int8 block
 * with its own scales, which a scan redoes for every block. */
void scan_i8_query(const float *q, int dim, const float *scales, int8_t *q8, int32_t *bias,
		   float *qs);

/* Kernel levels, for tests that try each one the CPU has (scan_i8_dots_at, scan_bin_at). */
enum { SCAN_ISA_SCALAR = 0, SCAN_ISA_AVX2 = 1, SCAN_ISA_AVX_VNNI = 2, SCAN_ISA_AVX512 = 3 };

/* The best level this CPU has for int8 (AVX512: VNNI + BW) and for binary (AVX512:
 * VPOPCNTDQ + BW; AVX_VNNI never), and the names of the kernels the scans use. */
int scan_isa_i8(void);
int scan_isa_bin(void);
/* Whether this CPU can run int8 level `isa`: the levels do not nest (a CPU may have AVX512
 * and not AVX_VNNI, as AMD's Zen 4 does), so a test tries each level this says it has. */
int scan_isa_i8_has(int isa);
const char *scan_kernels(void);

/* out[i] = sum_d rows[i * dim + d] * q[d] (rows unsigned, q signed), i < n, at level isa
 * (one scan_isa_i8_has() reports; SCAN_ISA_SCALAR is the reference). */
void scan_i8_dots_at(int isa, const uint8_t *rows, size_t n, int dim, const int8_t *q, int32_t *out);
/* out[i] = popcount(rows[i * nbytes ..] xor q), i < n, at level isa (<= scan_isa_bin()). */
void scan_bin_at(int isa, const uint8_t *rows, size_t n, int nbytes, const uint8_t *q, int32_t *out);

/* scan_topk_guarded over compact rows (blocks[].codes, quant_row_bytes(q->kind, q->dim)
 * bytes a row, then the u64 checksum when g asks for it). Ties: lower row first. Errors as
 * scan_topk_guarded (g->max_abs is ignored: compact scores are estimates). Each block's
 * checksum is verified just before its rows are scored, except int8 blocks on a CPU without
 * the AVX-512 XXH3 (xxh_wide.h): there the VNNI kernel streams the codes from memory faster
 * than the scalar XXH3 does, so the block is scored first and hashed from L2 (scan.c has the
 * measurements); a failure still discards the whole answer. */
int scan_topk_compact(const scan_block *blocks, size_t nblocks, const scan_cquery *q, int k,
		      threadpool *pool, scan_guard *g, scan_hit *out, int *nout, emb_err *err);

/* scan_topk_compact for nq queries of one kind (qs[0..nq)), every 64-row run scored by all
 * of them while in cache; query i's hits at out[i * k ..], nout[i] of them, as
 * scan_topk_compact gives them. Errors as scan_topk_compact, EMB_EINVAL (nq < 1, mixed
 * kinds). */
int scan_topk_compact_multi(const scan_block *blocks, size_t nblocks, const scan_cquery *qs,
			    int nq, int k, threadpool *pool, scan_guard *g, scan_hit *out, int *nout,
			    emb_err *err);

#endif
