/* The bf16 and int8 matrix products (engine/gemm.h GEMM_BF16 / GEMM_INT8, gemm_lowp.c) for
 * every kernel this CPU can run, against scalar references written from the contract in
 * gemm.h, not from the kernels:
 *  - bf16: A and W rounded to bf16 by frexp/nearbyint (round half to even), products summed
 *    in double; the kernel's fp32 pairs must be within K * 2^-24 of the magnitude sum, and
 *    a scalar fmaf chain in the contract's order (odd k then even k of each pair) must give
 *    the kernel's bits exactly.
 *  - int8: weights quantised per row and activations per row and block of 32 by roundf, each
 *    block's integer dot product in int64, C = sum over blocks of dot * sa * sw + bias: the
 *    kernel's result must equal that to fp32 rounding, and the unquantised product within
 *    the bound the quantisation steps allow.
 * Odd shapes (K not a multiple of 2 or 4, N not of 32 or 16, M not of 12 or 4), QKV parts,
 * rows alone vs in a batch and column pieces (same bits), every kernel of a precision giving
 * the same bits, the fused activations, and NaN in a row coming out as NaN. */
#include <fenv.h>
#include <math.h>
#include <stdint.h>

#include "gemm.h"
#include "testutil.h"

static unsigned rng = 777;
static float frand(void)
{
	rng = rng * 1664525u + 1013904223u;
	return (float)((rng >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* bf16 rounding from the definition: keep 8 significant bits, ties to even. */
static float bf16_ref(float x)
{
	if (x == 0 || !isfinite(x))
		return x;
	int e;
	double m = frexp(x, &e); /* x = m 2^e, 0.5 <= |m| < 1 */
	return (float)ldexp(nearbyint(ldexp(m, 8)), e - 8);
}

static void fill(float *x, size_t n, float scale)
{
	for (size_t i = 0; i < n; i++)
		x[i] = frand() * scale;
}

static const gemm_isa all_isas[] = { GEMM_AVX2, GEMM_AVX512, GEMM_AVX512_BF16,
				     GEMM_AVX512_VNNI, GEMM_AVX_VNNI };

/* Runs the product through gemm_prep + gemm_run_prep. */
static void run(const gemm_w *g, const float *A, int M, int n0, int n1, const float *bias,
		float *C, int ldc, gemm_act act)
{
	void *buf = malloc(gemm_prep_row_bytes(g) * (M ? M : 1));
	gemm_prep(g, A, M, buf);
	gemm_run_prep(g, buf, M, n0, n1, bias, C, ldc, act);
	free(buf);
}

static void check_bf16(gemm_isa isa, int M, int N, int K, int parts)
{
	float *A = malloc(sizeof(float) * M * K), *W = malloc(sizeof(float) * N * K);
	float *bias = malloc(sizeof(float) * N), *C = malloc(sizeof(float) * M * N);
	float *C2 = malloc(sizeof(float) * N);
	fill(A, (size_t)M * K, 3), fill(W, (size_t)N * K, 0.1f), fill(bias, N, 1);
	const float *wp[3];
	for (int p = 0; p < parts; p++)
		wp[p] = W + (size_t)p * (N / parts) * K;
	gemm_w g;
	CHECK(gemm_pack_prec(&g, wp, parts, N, K, isa, GEMM_BF16) == 0, "pack");
	run(&g, A, M, 0, N, bias, C, N, GEMM_ACT_NONE);
	double worst = 0;
	int exact_miss = 0;
	for (int i = 0; i < M; i++)
		for (int n = 0; n < N; n++) {
			double s = 0, mag = fabs(bias[n]);
			float chain = 0;
			for (int k = 0; k < K; k += 2) {
				float a0 = bf16_ref(A[(size_t)i * K + k]), w0 = bf16_ref(W[(size_t)n * K + k]);
				float a1 = k + 1 < K ? bf16_ref(A[(size_t)i * K + k + 1]) : 0;
				float w1 = k + 1 < K ? bf16_ref(W[(size_t)n * K + k + 1]) : 0;
				s += (double)a0 * w0 + (double)a1 * w1;
				mag += fabs((double)a0 * w0) + fabs((double)a1 * w1);
				chain = fmaf(a1, w1, chain);
				chain = fmaf(a0, w0, chain);
			}
			s += bias[n];
			chain += bias[n];
			double e = fabs(C[(size_t)i * N + n] - s) / (mag + 1e-30);
			worst = e > worst ? e : worst;
			exact_miss += memcmp(&chain, &C[(size_t)i * N + n], sizeof chain) != 0;
		}
	CHECK(worst < K * 6e-8 + 1e-7, "bf16 %s M=%d N=%d K=%d: error %.3g of the magnitude sum",
	      gemm_isa_name(isa), M, N, K, worst);
	CHECK(exact_miss == 0, "bf16 %s M=%d N=%d K=%d: %d of %d elements differ from the "
	      "odd-then-even fmaf chain", gemm_isa_name(isa), M, N, K, exact_miss, M * N);
	for (int i = 0; i < M; i += 1 + M / 5) {
		for (int n0 = 0; n0 < N; n0 += g.nr) {
			int n1 = n0 + g.nr < N ? n0 + g.nr : N;
			run(&g, A + (size_t)i * K, 1, n0, n1, bias, C2, N, GEMM_ACT_NONE);
		}
		CHECK(memcmp(C2, C + (size_t)i * N, sizeof(float) * N) == 0,
		      "bf16 %s M=%d N=%d K=%d: row %d alone differs", gemm_isa_name(isa), M, N, K, i);
	}
	gemm_w_free(&g);
	free(A), free(W), free(bias), free(C), free(C2);
}

static void check_int8(gemm_isa isa, int M, int N, int K, int parts)
{
	float *A = malloc(sizeof(float) * M * K), *W = malloc(sizeof(float) * N * K);
	float *bias = malloc(sizeof(float) * N), *C = malloc(sizeof(float) * M * N);
	float *C2 = malloc(sizeof(float) * N);
	fill(A, (size_t)M * K, 3), fill(W, (size_t)N * K, 0.1f), fill(bias, N, 1);
	if (M > 2) /* a row of zeros and a row with one large outlier */
		memset(A + K, 0, sizeof(float) * K), A[2 * K + K / 2] = 100;
	if (N > 1)
		memset(W + K, 0, sizeof(float) * K);
	const float *wp[3];
	for (int p = 0; p < parts; p++)
		wp[p] = W + (size_t)p * (N / parts) * K;
	gemm_w g;
	CHECK(gemm_pack_prec(&g, wp, parts, N, K, isa, GEMM_INT8) == 0, "pack");
	run(&g, A, M, 0, N, bias, C, N, GEMM_ACT_NONE);
	/* the reference quantisation: W per row, A per row and block of KB values */
	enum { KB = 32 };
	const int nb = (K + KB - 1) / KB;
	int8_t *qa = malloc((size_t)M * K), *qw = malloc((size_t)N * K);
	float *sa = malloc(sizeof(float) * M * nb), *sw = malloc(sizeof(float) * N);
	for (int r = 0; r < M + N; r++) {
		const float *x = r < M ? A + (size_t)r * K : W + (size_t)(r - M) * K;
		int8_t *q = r < M ? qa + (size_t)r * K : qw + (size_t)(r - M) * K;
		const int blk = r < M ? KB : K; /* weights: the whole row */
		for (int k0 = 0; k0 < K; k0 += blk) {
			int k1 = k0 + blk < K ? k0 + blk : K;
			float amax = 0;
			for (int k = k0; k < k1; k++)
				amax = fmaxf(amax, fabsf(x[k]));
			float inv = amax > 0 ? 127.0f / amax : 0;
			for (int k = k0; k < k1; k++)
				q[k] = (int8_t)roundf(x[k] * inv);
			if (r < M)
				sa[(size_t)r * nb + k0 / KB] = amax / 127.0f;
			else
				sw[r - M] = amax / 127.0f;
		}
	}
	double worst = 0, worst_true = 0;
	for (int i = 0; i < M; i++)
		for (int n = 0; n < N; n++) {
			double ref = 0, t = bias[n], bound = 0, mag = fabs(bias[n]);
			for (int b = 0; b < nb; b++) {
				int64_t dot = 0;
				const double s_a = sa[(size_t)i * nb + b];
				for (int k = b * KB; k < K && k < (b + 1) * KB; k++) {
					double a = A[(size_t)i * K + k], w = W[(size_t)n * K + k];
					dot += (int64_t)qa[(size_t)i * K + k] * qw[(size_t)n * K + k];
					t += a * w;
					/* each value is off by at most half its step */
					bound += 0.5 * s_a * fabs(w) + 0.5 * sw[n] * fabs(a) +
						 0.25 * s_a * sw[n];
				}
				ref += (double)dot * s_a * sw[n];
				mag += fabs((double)dot * s_a * sw[n]);
			}
			ref += bias[n];
			double c = C[(size_t)i * N + n];
			/* fp32 sums of nb block terms: within nb * 2^-24 of their magnitudes */
			worst = fmax(worst, fabs(c - ref) / ((nb + 2) * 6e-8 * mag + 1e-30));
			/* against the unquantised product: within the rounding of the steps */
			worst_true = fmax(worst_true, fabs(c - t) / (bound * 1.001 + 1e-5));
		}
	CHECK(worst <= 1, "int8 %s M=%d N=%d K=%d: %.3g x the fp32 bound off the integer reference",
	      gemm_isa_name(isa), M, N, K, worst);
	CHECK(worst_true <= 1, "int8 %s M=%d N=%d K=%d: %.3g times the quantisation bound off fp32",
	      gemm_isa_name(isa), M, N, K, worst_true);
	for (int i = 0; i < M; i += 1 + M / 5) {
		for (int n0 = 0; n0 < N; n0 += g.nr) {
			int n1 = n0 + g.nr < N ? n0 + g.nr : N;
			run(&g, A + (size_t)i * K, 1, n0, n1, bias, C2, N, GEMM_ACT_NONE);
		}
		CHECK(memcmp(C2, C + (size_t)i * N, sizeof(float) * N) == 0,
		      "int8 %s M=%d N=%d K=%d: row %d alone differs", gemm_isa_name(isa), M, N, K, i);
	}
	gemm_w_free(&g);
	free(qa), free(qw), free(sa), free(sw);
	free(A), free(W), free(bias), free(C), free(C2);
}

/* Every kernel of a precision gives the same bits, activations included; a NaN in a row of
 * A makes that row NaN and leaves the others alone. */
static void check_agree(gemm_prec prec)
{
	const int M = 29, N = 1152 + 16, K = 385;
	float *A = malloc(sizeof(float) * M * K), *W = malloc(sizeof(float) * N * K);
	float *bias = malloc(sizeof(float) * N), *C0 = malloc(sizeof(float) * M * N);
	float *C1 = malloc(sizeof(float) * M * N);
	fill(A, (size_t)M * K, 2), fill(W, (size_t)N * K, 0.1f), fill(bias, N, 1);
	const float *wp[1] = { W };
	int first = -1;
	gemm_w g0;
	for (size_t s = 0; s < sizeof all_isas / sizeof *all_isas; s++) {
		gemm_isa isa = all_isas[s];
		if (!gemm_isa_usable(isa, prec))
			continue;
		gemm_w g;
		CHECK(gemm_pack_prec(&g, wp, 1, N, K, isa, prec) == 0, "pack");
		if (first < 0) {
			first = isa, g0 = g;
			continue;
		}
		for (int act = GEMM_ACT_NONE; act <= GEMM_ACT_RELU; act++) {
			run(&g0, A, M, 0, N, bias, C0, N, (gemm_act)act);
			run(&g, A, M, 0, N, bias, C1, N, (gemm_act)act);
			CHECK(memcmp(C0, C1, sizeof(float) * M * N) == 0, "%s: %s and %s differ, act %d",
			      gemm_prec_name(prec), gemm_isa_name((gemm_isa)first), gemm_isa_name(isa),
			      act);
		}
		printf("%s: %s gives %s's bits\n", gemm_prec_name(prec), gemm_isa_name(isa),
		       gemm_isa_name((gemm_isa)first));
		gemm_w_free(&g);
	}
	/* GELU on the kernel's own sums, against libm in double */
	run(&g0, A, M, 0, N, bias, C0, N, GEMM_ACT_NONE);
	run(&g0, A, M, 0, N, bias, C1, N, GEMM_ACT_GELU_ERF);
	double w = 0;
	for (int i = 0; i < M * N; i++) {
		double x = C0[i], y = 0.5 * x * (1 + erf(x / sqrt(2.0)));
		w = fmax(w, fabs(C1[i] - y) / (1 + fabs(y)));
	}
	CHECK(w < 1e-6, "%s GELU: error %g", gemm_prec_name(prec), w);
	A[3 * K + 7] = NAN;
	run(&g0, A, M, 0, N, bias, C1, N, GEMM_ACT_NONE);
	int nan3 = 1, others = 1;
	for (int n = 0; n < N; n++)
		nan3 &= isnan(C1[3 * N + n]), others &= !isnan(C1[4 * N + n]);
	CHECK(nan3 && others, "%s: a NaN in row 3 gives %s", gemm_prec_name(prec),
	      nan3 ? "NaN in other rows" : "finite values in row 3");
	gemm_w_free(&g0);
	free(A), free(W), free(bias), free(C0), free(C1);
}

int main(void)
{
	fesetround(FE_TONEAREST);
	static const int shapes[][4] = {
		{ 1, 1, 1, 1 },    { 1, 16, 7, 1 },     { 5, 33, 19, 1 },   { 13, 48, 64, 1 },
		{ 12, 32, 384, 1 }, { 25, 1152, 384, 3 }, { 7, 45, 30, 3 }, { 26, 100, 1536, 1 },
		{ 6, 17, 5, 1 },   { 13, 1536, 384, 1 }, { 3, 384, 1536, 1 }, { 4, 16, 2, 1 },
		{ 9, 31, 3, 1 },
	};
	for (int prec = GEMM_BF16; prec <= GEMM_INT8; prec++) {
		printf("%s default kernel: %s\n", gemm_prec_name((gemm_prec)prec),
		       gemm_isa_name(gemm_isa_for((gemm_prec)prec)));
		for (size_t s = 0; s < sizeof all_isas / sizeof *all_isas; s++) {
			if (!gemm_isa_usable(all_isas[s], (gemm_prec)prec)) {
				printf("  %s: no %s kernel, or not on this CPU\n",
				       gemm_isa_name(all_isas[s]), gemm_prec_name((gemm_prec)prec));
				continue;
			}
			for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
				(prec == GEMM_BF16 ? check_bf16 : check_int8)(
					all_isas[s], shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3]);
		}
		check_agree((gemm_prec)prec);
	}
	if (test_failures)
		return 1;
	printf("ok\n");
	return 0;
}
