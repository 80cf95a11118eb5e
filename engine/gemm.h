/* gemm.h — matrix products against a weight matrix packed once, for the CPU forward
 * pass (forward_cpu.c).
 *
 * Every Linear layer of a model computes C = A W^T + bias with the same W ([N][K], as
 * Hugging Face stores it) for every batch. A general BLAS call repacks W into its kernel's
 * layout on every call (30% of a single query's time with OpenBLAS), and OpenBLAS 0.3.21
 * runs its AVX2 kernels on AVX-512 CPUs. gemm_pack() lays W out once in the panels the
 * kernel reads, and the kernel is chosen once per process from what the CPU supports.
 *
 * Contract on numbers (GEMM_F32; gemm_prec below gives bf16's and int8's): every element
 * of C is bias[n] + the sum over k of A[i][k] W[n][k]
 * accumulated in fp32 fused multiply-adds in increasing k, whatever M, the row's position
 * in A, or the column range asked for. A row's result therefore does not depend on its
 * batch-mates (tests/test_batch_invariance) nor on how the caller splits the product into
 * tiles, nor on the kernel: the AVX2 and AVX-512 kernels give the same bits
 * (tests/test_gemm), so vectors stored on one machine match queries embedded on another.
 */
#ifndef EMB_GEMM_H
#define EMB_GEMM_H

#include <stddef.h>

#include <stdint.h>

/* The instruction sets a kernel is written for. fp32 runs GEMM_AVX2 or GEMM_AVX512; bf16 runs
 * GEMM_AVX512_BF16 (VDPBF16PS) or, as a fallback, GEMM_AVX512 / GEMM_AVX2 (the same
 * products with FMAs); int8 runs GEMM_AVX512_VNNI, GEMM_AVX_VNNI (VPDPBUSD on 256 bits) or
 * GEMM_AVX2 (VPMADDUBSW). */
typedef enum {
	GEMM_AVX2 = 0,
	GEMM_AVX512 = 1,
	GEMM_AVX512_BF16 = 2,
	GEMM_AVX512_VNNI = 3,
	GEMM_AVX_VNNI = 4,
} gemm_isa;

/* The number format of the packed weights (and of the activations the kernel reads).
 * GEMM_F32 is the contract below. The other two trade accuracy for speed (opt-in, embed.h's
 * --precision):
 *  - GEMM_BF16: W and A rounded to bfloat16 (round to nearest even), each product exact in
 *    fp32, summed in fp32 in pairs of k (VDPBF16PS's order: the odd k of a pair, then the
 *    even). Every bf16 kernel gives the same bits.
 *  - GEMM_INT8: W quantised per row of W (output channel) to int8 in [-127, 127] with scale
 *    max|W[n]| / 127; each row of A quantised the same way when the product runs (per token,
 *    dynamic), but with one scale per block of 32 consecutive k, so that one large channel
 *    (BERT's LayerNorm outputs have a few) coarsens only its block. Each block's integer sum
 *    is exact (int32) and is scaled by its block's scale into an fp32 sum over the blocks in
 *    order; then C = sum * scale_W[n] + bias. Every int8 kernel gives the same bits. */
typedef enum { GEMM_F32 = 0, GEMM_BF16 = 1, GEMM_INT8 = 2 } gemm_prec;

/* The most matrices gemm_pack concatenates (query, key, value). */
#define GEMM_MAX_PARTS 3

/* A weight matrix W[N][K] in kernel layout: panels of `nr` columns of C (rows of W).
 * GEMM_F32: each panel K rows of nr floats (p[panel][k][j] = W[panel * nr + j][k], zero past
 * N). GEMM_BF16: nr = 32, each panel ceil(K/2) rows of 32 uint32, each the bf16 pair
 * (W[n][2k] low, W[n][2k+1] high). GEMM_INT8: nr = 32, each panel ceil(K/4) rows of 32
 * groups of 4 int8 W[n][4k..4k+3]. Zero past N and K. */
typedef struct gemm_w {
	float *p;         /* GEMM_F32 panels */
	void *q;          /* GEMM_BF16 / GEMM_INT8 panels */
	float *scale;     /* GEMM_INT8: [N rounded up to nr] per-row scales of W */
	int32_t *corr;    /* GEMM_INT8, VNNI kernels: [nb][N rounded up] 128 * the sum of
			   * Wq[n][k] over each block of k (0 for the AVX2 kernel) */
	int nb;           /* GEMM_INT8: blocks of k with their own activation scale */
	int N, K;
	int nr;           /* panel width: 16 (AVX2 fp32) or 32 */
	gemm_isa isa;     /* the kernel the layout was made for */
	gemm_prec prec;
	/* GEMM_F32 made by gemm_defer: the unpacked W (p NULL until gemm_pack_deferred) */
	const float *src[GEMM_MAX_PARTS];
	int parts;
} gemm_w;

/* The kernel this process uses: AVX-512 where the CPU has AVX512F, else AVX2 (the build's
 * baseline). EMBED_GEMM_ISA=avx2 in the environment forces AVX2 (tests, comparisons). Read
 * once; thread-safe. */
gemm_isa gemm_isa_default(void);
const char *gemm_isa_name(gemm_isa isa);

/* The best kernel this CPU has for `prec` (GEMM_F32: gemm_isa_default()). bf16 on a CPU with
 * AVX512_BF16: VDPBF16PS or the AVX-512F kernel, whichever a timing at the first call finds
 * faster (~4 ms; they give the same bits; VDPBF16PS is half-rate on some CPUs). int8:
 * AVX-512 VNNI, else AVX-VNNI, else AVX2. EMBED_GEMM_ISA=avx2 forces GEMM_AVX2, =avx512
 * the AVX-512F kernels (no BF16 / VNNI), =avx512bf16 VDPBF16PS, =avxvnni (int8) the 256-bit
 * VNNI kernel where the CPU has it. Read once per precision; thread-safe. */
gemm_isa gemm_isa_for(gemm_prec prec);
/* Nonzero when this CPU can run kernel `isa` for `prec` (tests walk every kernel). */
int gemm_isa_usable(gemm_isa isa, gemm_prec prec);
const char *gemm_prec_name(gemm_prec prec);

/* Packs W ([N][K], row stride K) into *g for `isa`. `parts` > 1 packs the row-concatenation
 * of `parts` matrices W[0..parts-1], each [N / parts][K] (query, key and value weights into
 * one QKV matrix without a concatenated copy). Returns 0, or -1 when out of memory. */
int gemm_pack(gemm_w *g, const float *const *W, int parts, int N, int K, gemm_isa isa);
void gemm_w_free(gemm_w *g);

/* GEMM_F32 without packing yet: *g records W (borrowed: it must outlive g, or g's packing)
 * and gemm_run lays each panel out on the fly in a per-thread buffer (K x nr floats) for the
 * product at hand, so that a process that runs one short product per matrix (a one-shot
 * query) never writes the packed copy. gemm_pack_deferred then packs it for good (idempotent;
 * 0, or -1 when out of memory, g unchanged). The results are the same bits either way: the
 * same panel layout feeds the same kernel. parts as for gemm_pack (at most GEMM_MAX_PARTS,
 * dividing N); returns 0, or -1 for a bad parts. Not thread-safe against gemm_run on the same
 * g: pack while no product runs. */
int gemm_defer(gemm_w *g, const float *const *W, int parts, int N, int K, gemm_isa isa);
int gemm_pack_deferred(gemm_w *g);

/* gemm_pack for any precision: `isa` must be usable for `prec` (gemm_isa_usable). Weights
 * are rounded (GEMM_BF16) or quantised (GEMM_INT8) here, once. */
int gemm_pack_prec(gemm_w *g, const float *const *W, int parts, int N, int K, gemm_isa isa,
		   gemm_prec prec);

/* The activation applied to each element after the bias, while the block is in cache. The
 * order matches model.h's act_kind + 1. */
typedef enum {
	GEMM_ACT_NONE = 0,
	GEMM_ACT_GELU_ERF = 1,  /* 0.5 x (1 + erf(x / sqrt 2)), erf_approx of vecmath.h */
	GEMM_ACT_GELU_TANH = 2, /* 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) */
	GEMM_ACT_RELU = 3,
} gemm_act;

/* C[i][n] = act(bias[n] + sum_k A[i][k] W[n][k]) for i in [0, M), n in [n0, n1). A has row
 * stride K (g->K), C row stride ldc; bias may be NULL (0). n0 must be a multiple of g->nr. */
void gemm_run(const gemm_w *g, const float *A, int M, int n0, int n1, const float *bias,
	      float *C, int ldc, gemm_act act);

/* --- GEMM_BF16 and GEMM_INT8: the activations are converted once per product ---
 *
 * A (M rows of K floats, row stride K) is first converted by gemm_prep into rows of
 * gemm_prep_row_bytes(g) bytes each (bf16 pairs; or int8 values then the scale of each block
 * of 32), which
 * every column tile of the product then reads. Rows are independent: rows [i0, i1) may be
 * converted by separate calls (threads) with A + i0 * K and buf + i0 * row bytes. */
size_t gemm_prep_row_bytes(const gemm_w *g);
void gemm_prep(const gemm_w *g, const float *A, int M, void *buf);

/* gemm_run for GEMM_BF16 / GEMM_INT8 weights: Ap is gemm_prep's output for the M rows. Same
 * C, bias, column range and activation contract as gemm_run (n0 a multiple of g->nr). */
void gemm_run_prep(const gemm_w *g, const void *Ap, int M, int n0, int n1, const float *bias,
		   float *C, int ldc, gemm_act act);

#endif
