/* The packed matrix products (engine/gemm.h) against a double-precision sum, for every
 * kernel this CPU can run: shapes with row and column tails (M not a multiple of the row
 * block, N not a multiple of the panel), QKV packing from three parts, and the contract that
 * a row's result is bit-identical whatever M, its position, and how columns are split; the
 * fused activations against libm. */
#include <math.h>

#include "gemm.h"
#include "testutil.h"

static unsigned rng = 12345;
static float frand(void)
{
	rng = rng * 1664525u + 1013904223u;
	return (float)((rng >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void check_shape(gemm_isa isa, int M, int N, int K, int parts)
{
	float *A = malloc(sizeof(float) * M * K), *W = malloc(sizeof(float) * N * K);
	float *bias = malloc(sizeof(float) * N), *C = malloc(sizeof(float) * M * N);
	float *C2 = malloc(sizeof(float) * N);
	for (int i = 0; i < M * K; i++)
		A[i] = frand();
	for (int i = 0; i < N * K; i++)
		W[i] = frand();
	for (int i = 0; i < N; i++)
		bias[i] = frand();
	const float *wp[3];
	for (int p = 0; p < parts; p++)
		wp[p] = W + (size_t)p * (N / parts) * K;
	gemm_w g;
	CHECK(gemm_pack(&g, wp, parts, N, K, isa) == 0, "pack");
	gemm_run(&g, A, M, 0, N, bias, C, N, GEMM_ACT_NONE);
	double worst = 0;
	for (int i = 0; i < M; i++)
		for (int n = 0; n < N; n++) {
			double s = bias[n], mag = fabs(bias[n]);
			for (int k = 0; k < K; k++) {
				s += (double)A[(size_t)i * K + k] * W[(size_t)n * K + k];
				mag += fabs((double)A[(size_t)i * K + k] * W[(size_t)n * K + k]);
			}
			double e = fabs(C[(size_t)i * N + n] - s) / (mag + 1e-30);
			worst = e > worst ? e : worst;
		}
	/* fp32 summation of K terms: relative to the sum of magnitudes, K * 2^-24 at worst */
	CHECK(worst < K * 6e-8, "%s M=%d N=%d K=%d: error %.3g of the magnitude sum",
	      gemm_isa_name(isa), M, N, K, worst);
	/* each row alone, and in column pieces of one panel, gives the same bits */
	for (int i = 0; i < M; i += 1 + M / 5) {
		for (int n0 = 0; n0 < N; n0 += g.nr) {
			int n1 = n0 + g.nr < N ? n0 + g.nr : N;
			gemm_run(&g, A + (size_t)i * K, 1, n0, n1, bias, C2, N, GEMM_ACT_NONE);
		}
		CHECK(memcmp(C2, C + (size_t)i * N, sizeof(float) * N) == 0,
		      "%s M=%d N=%d K=%d: row %d alone differs from the row in the batch",
		      gemm_isa_name(isa), M, N, K, i);
	}
	/* unpacked (gemm_defer: panels laid out on the fly) gives the same bits, whole or in
	 * column pieces, with an activation too; and again once packed late */
	gemm_w dw;
	float *C3 = malloc(sizeof(float) * M * N), *C4 = malloc(sizeof(float) * M * N);
	CHECK(gemm_defer(&dw, wp, parts, N, K, isa) == 0 && dw.p == NULL, "defer");
	for (int act = GEMM_ACT_NONE; act <= GEMM_ACT_GELU_ERF; act++) {
		gemm_run(&g, A, M, 0, N, bias, C4, N, (gemm_act)act);
		for (int n0 = 0; n0 < N; n0 += 2 * dw.nr)
			gemm_run(&dw, A, M, n0, n0 + 2 * dw.nr < N ? n0 + 2 * dw.nr : N, bias, C3, N,
				 (gemm_act)act);
		CHECK(memcmp(C3, C4, sizeof(float) * M * N) == 0,
		      "%s M=%d N=%d K=%d act %d: unpacked product differs from packed",
		      gemm_isa_name(isa), M, N, K, act);
	}
	CHECK(gemm_pack_deferred(&dw) == 0 && dw.p && gemm_pack_deferred(&dw) == 0, "late pack");
	gemm_run(&dw, A, M, 0, N, bias, C3, N, GEMM_ACT_NONE);
	CHECK(memcmp(C3, C, sizeof(float) * M * N) == 0, "%s M=%d N=%d K=%d: late pack differs",
	      gemm_isa_name(isa), M, N, K);
	gemm_w_free(&dw);
	free(C3), free(C4);
	/* no bias: the sum alone */
	gemm_run(&g, A, 1, 0, N, NULL, C2, N, GEMM_ACT_NONE);
	for (int n = 0; n < N; n++)
		C2[n] += bias[n];
	double d = 0;
	for (int n = 0; n < N; n++)
		d = fmax(d, fabs(C2[n] - C[n]));
	CHECK(d < 1e-5, "%s: NULL bias differs by %g", gemm_isa_name(isa), d);
	/* activations applied to the same sums: against libm's erf and tanh in double */
	for (int act = GEMM_ACT_GELU_ERF; act <= GEMM_ACT_RELU; act++) {
		gemm_run(&g, A, 1, 0, N, bias, C2, N, (gemm_act)act);
		double worst_act = 0;
		for (int n = 0; n < N; n++) {
			double x = C[n], y;
			if (act == GEMM_ACT_GELU_ERF)
				y = 0.5 * x * (1 + erf(x / sqrt(2.0)));
			else if (act == GEMM_ACT_GELU_TANH)
				y = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
			else
				y = x > 0 ? x : 0;
			worst_act = fmax(worst_act, fabs(C2[n] - y) / (1 + fabs(y)));
		}
		CHECK(worst_act < 1e-6, "%s act %d: error %g", gemm_isa_name(isa), act, worst_act);
	}
	gemm_w_free(&g);
	free(A), free(W), free(bias), free(C), free(C2);
}

/* The two kernels make the same FMA chain per element, so they agree bit for bit: a store
 * written on one machine is searched with the same vectors on another. */
static void check_isas_agree(void)
{
	const int M = 29, N = 1152, K = 384;
	float *A = malloc(sizeof(float) * M * K), *W = malloc(sizeof(float) * N * K);
	float *bias = malloc(sizeof(float) * N), *C1 = malloc(sizeof(float) * M * N);
	float *C2 = malloc(sizeof(float) * M * N);
	for (int i = 0; i < M * K; i++)
		A[i] = frand();
	for (int i = 0; i < N * K; i++)
		W[i] = frand();
	for (int i = 0; i < N; i++)
		bias[i] = frand();
	const float *wp[1] = { W };
	gemm_w g1, g2;
	CHECK(gemm_pack(&g1, wp, 1, N, K, GEMM_AVX2) == 0 &&
	      gemm_pack(&g2, wp, 1, N, K, GEMM_AVX512) == 0, "pack");
	for (int act = GEMM_ACT_NONE; act <= GEMM_ACT_RELU; act++) {
		gemm_run(&g1, A, M, 0, N, bias, C1, N, (gemm_act)act);
		gemm_run(&g2, A, M, 0, N, bias, C2, N, (gemm_act)act);
		CHECK(memcmp(C1, C2, sizeof(float) * M * N) == 0, "avx2 and avx512 differ, act %d",
		      act);
	}
	gemm_w_free(&g1), gemm_w_free(&g2);
	free(A), free(W), free(bias), free(C1), free(C2);
}

int main(void)
{
	gemm_isa isas[2] = { GEMM_AVX2, GEMM_AVX512 };
	int nisa = 1;
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		nisa = 2;
	else
		printf("no AVX-512 on this CPU: AVX2 kernel only\n");
	printf("default kernel: %s\n", gemm_isa_name(gemm_isa_default()));
	static const int shapes[][4] = {
		{ 1, 1, 1, 1 },     { 1, 16, 7, 1 },      { 5, 33, 19, 1 },  { 13, 48, 64, 1 },
		{ 12, 32, 384, 1 }, { 25, 1152, 384, 3 }, { 7, 45, 30, 3 },  { 130, 100, 1536, 1 },
		{ 6, 17, 5, 1 },    { 31, 1536, 384, 1 }, { 3, 384, 1536, 1 },
	};
	for (int s = 0; s < nisa; s++)
		for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
			check_shape(isas[s], shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3]);
	if (nisa == 2)
		check_isas_agree();
	if (test_failures)
		return 1;
	printf("ok\n");
	return 0;
}
