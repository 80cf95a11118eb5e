/* attention.h — self-attention of one sequence and one head on the CPU:
 * out = softmax(Q K^T * scale + bias) V, for a range of its query rows.
 *
 * Why its own kernel: with OpenBLAS doing the two products of every (sequence, head) and the
 * softmax in between, attention was 19% of a 256-token document's time (perf, MiniLM, 1
 * thread): each call packs its small operands, the L x L scores go out to memory and come
 * back three times (bias and maximum, exponentials and sum, normalisation). Here K is laid
 * out once per task, the scores of eight query rows at a time stay in L1 between the two
 * products, the softmax is two passes over them, and the normalisation is one multiply per
 * output value instead of one per score. docs/bench-cpu.md has the measurements.
 *
 * Keys are visited in chunks (ATTN_KEY_CHUNK) with a running maximum and sum, flash-style,
 * so the scratch is bounded whatever the length (JinaBERT: 8,192 tokens); sequences up to a
 * chunk (BERT's 512) are one chunk and pay nothing for it.
 *
 * Contract on numbers: each score is scale * (the FMA chain over the head's columns in
 * order) + bias; the row's maximum, its exponentials (vecmath.h's polynomial, written out in
 * vector form) and their sum in a fixed 16-lane order; each output the FMA chain over the
 * keys in order, divided by the row's sum at the end. The AVX2 and AVX-512 kernels follow
 * the same order and give the same bits (tests/test_attention), as gemm.h's products do, so
 * vectors do not depend on the machine. Results do not depend on which query rows a call
 * is given (a row's numbers never mix with another row's).
 */
#ifndef EMB_ATTENTION_H
#define EMB_ATTENTION_H

#include <stddef.h>

#include "gemm.h"

/* Keys a chunk: the most scores a query row holds at once. */
#define ATTN_KEY_CHUNK 512

/* One (sequence, head). Rows of q, k and v are `ld` floats apart and hold the head's d
 * values at their start (the packed QKV rows of forward_cpu.c, read in place). */
typedef struct attn_head {
	const float *q, *k, *v; /* row 0 of the sequence */
	int ld;
	float *out;             /* row 0 of the output; its rows ldo floats apart */
	int ldo;
	int L;                  /* tokens of the sequence (keys, and query rows) */
	int d;                  /* head size, >= 1 */
	float scale;            /* usually 1 / sqrt(d) */
	/* The bias added to the score of query i and key j, at most one of:
	 * rel: rel[j - i], defined for j - i in [-(L-1), L-1] (MPNet's bias by distance);
	 * alibi_slope != 0: -alibi_slope * |j - i| (JinaBERT's symmetric ALiBi). */
	const float *rel;
	float alibi_slope;
} attn_head;

/* out rows q0 .. q0 + qn - 1 of `a` (0 <= q0, q0 + qn <= L), with the kernel of `isa`
 * (GEMM_AVX512 or GEMM_AVX2; any other value is read as the widest of those two this CPU
 * has, gemm_isa_default()). Allocates its scratch (under 200 KB for d <= 64, plus
 * qn * (d + 16) floats); returns 0, or -1 when that allocation fails (nothing written).
 * Thread-safe: calls on different output rows may run at once. */
int attention_rows(const attn_head *a, int q0, int qn, gemm_isa isa);

#endif
