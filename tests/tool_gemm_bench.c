/* tool_gemm_bench — times gemm.h's kernels on one product shape, for docs/bench-cpu.md's kernel
 * table:  tool_gemm_bench M N K
 * For fp32, bf16 and int8, on the kernel gemm_isa_for() picks (EMBED_GEMM_ISA forces one):
 * the best of 7 runs of C = A W^T + bias including gemm_prep's conversion of A (also shown
 * alone), and GFLOP/s counting 2 M N K. One thread; noisy on a shared machine. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "gemm.h"

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: tool_gemm_bench M N K\n");
		return 2;
	}
	const int M = atoi(argv[1]), N = atoi(argv[2]), K = atoi(argv[3]);
	if (M < 1 || N < 1 || K < 1)
		return 2;
	float *A = malloc(sizeof(float) * M * K), *W = malloc(sizeof(float) * N * K);
	float *C = malloc(sizeof(float) * M * N), *bias = calloc((size_t)N, sizeof(float));
	for (size_t i = 0; i < (size_t)M * K; i++)
		A[i] = (float)(rand() % 200 - 100) / 100.0f;
	for (size_t i = 0; i < (size_t)N * K; i++)
		W[i] = (float)(rand() % 200 - 100) / 1000.0f;
	const float *wp[1] = { W };
	for (int p = GEMM_F32; p <= GEMM_INT8; p++) {
		gemm_w g;
		const gemm_isa isa = gemm_isa_for((gemm_prec)p);
		if (gemm_pack_prec(&g, wp, 1, N, K, isa, (gemm_prec)p))
			return 1;
		void *buf = p != GEMM_F32 ? malloc(gemm_prep_row_bytes(&g) * M) : NULL;
		double best = 1e9, best_prep = 1e9;
		for (int r = 0; r < 7; r++) {
			double t0 = now();
			if (buf)
				gemm_prep(&g, A, M, buf);
			double t1 = now();
			if (buf)
				gemm_run_prep(&g, buf, M, 0, N, bias, C, N, GEMM_ACT_NONE);
			else
				gemm_run(&g, A, M, 0, N, bias, C, N, GEMM_ACT_NONE);
			double t2 = now();
			best = t2 - t0 < best ? t2 - t0 : best;
			best_prep = t1 - t0 < best_prep ? t1 - t0 : best_prep;
		}
		printf("%s %s M=%d N=%d K=%d: %.3f ms (prep %.3f) %.1f GFLOP/s\n",
		       gemm_prec_name((gemm_prec)p), gemm_isa_name(isa), M, N, K, best * 1e3,
		       best_prep * 1e3, 2.0 * M * N * K / best / 1e9);
		gemm_w_free(&g);
		free(buf);
	}
	free(A), free(W), free(C), free(bias);
	return 0;
}
