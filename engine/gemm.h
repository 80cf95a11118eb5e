/* gemm.h — fp32 matrix products against a weight matrix packed once, for the CPU forward
 * pass (forward_cpu.c).
 *
 * Every Linear layer of a model computes C = A W^T + bias with the same W ([N][K], as
 * Hugging Face stores it) for every batch. A general BLAS call repacks W into its kernel's
 * layout on every call (30% of a single query's time with OpenBLAS), and OpenBLAS 0.3.21
 * runs its AVX2 kernels on AVX-512 CPUs. gemm_pack() lays W out once in the panels the
 * kernel reads, and the kernel is chosen once per process from what the CPU supports.
 *
 * Contract on numbers: every element of C is bias[n] + the sum over k of A[i][k] W[n][k]
 * accumulated in fp32 fused multiply-adds in increasing k, whatever M, the row's position
 * in A, or the column range asked for. A row's result therefore does not depend on its
 * batch-mates (tests/test_batch_invariance) nor on how the caller splits the product into
 * tiles, nor on the kernel: the AVX2 and AVX-512 kernels give the same bits
 * (tests/test_gemm), so vectors stored on one machine match queries embedded on another.
 */
#ifndef EMB_GEMM_H
#define EMB_GEMM_H

#include <stddef.h>

typedef enum { GEMM_AVX2 = 0, GEMM_AVX512 = 1 } gemm_isa;

/* A weight matrix W[N][K] in kernel layout: panels of `nr` columns of C (rows of W), each
 * panel K rows of nr floats (p[panel][k][j] = W[panel * nr + j][k], zero past N). */
typedef struct gemm_w {
	float *p;
	int N, K;
	int nr;           /* panel width: 16 (AVX2) or 32 (AVX-512) */
	gemm_isa isa;     /* the kernel the layout was made for */
} gemm_w;

/* The kernel this process uses: AVX-512 where the CPU has AVX512F, else AVX2 (the build's
 * baseline). EMBED_GEMM_ISA=avx2 in the environment forces AVX2 (tests, comparisons). Read
 * once; thread-safe. */
gemm_isa gemm_isa_default(void);
const char *gemm_isa_name(gemm_isa isa);

/* Packs W ([N][K], row stride K) into *g for `isa`. `parts` > 1 packs the row-concatenation
 * of `parts` matrices W[0..parts-1], each [N / parts][K] (query, key and value weights into
 * one QKV matrix without a concatenated copy). Returns 0, or -1 when out of memory. */
int gemm_pack(gemm_w *g, const float *const *W, int parts, int N, int K, gemm_isa isa);
void gemm_w_free(gemm_w *g);

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

#endif
