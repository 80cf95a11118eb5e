/* The CPU attention kernel (engine/attention.h) against a double-precision softmax(Q K^T
 * scale + bias) V written here from the definition: head sizes that fill whole vectors and
 * ones that do not (8, 24, 40), lengths around the 16-key and 512-key chunk edges and past
 * them (several chunks, the running maximum carried), no bias, MPNet's bias by distance and
 * ALiBi; then the contract's promises: the AVX2 and AVX-512 kernels give the same bits, a row's
 * output does not depend on which rows a call covers, and a NaN in one query row stays in
 * that row. */
#include <math.h>

#include "attention.h"
#include "testutil.h"

static unsigned rng = 2024;
static float frand(void)
{
	rng = rng * 1664525u + 1013904223u;
	return (float)((rng >> 8) & 0xffff) / 32768.0f - 1.0f;
}

enum { BIAS_NONE, BIAS_REL, BIAS_ALIBI };

typedef struct kase {
	float *qkv, *rel, *out;
	attn_head a;
} kase;

static void make_case(kase *c, int L, int d, int bias)
{
	const int ld = 3 * d + 5, ldo = d + 3; /* odd strides: nothing may assume alignment */
	c->qkv = malloc(sizeof(float) * ((size_t)L * ld + 8));
	c->out = malloc(sizeof(float) * (size_t)L * ldo);
	c->rel = malloc(sizeof(float) * (2 * (size_t)L + 1));
	for (size_t i = 0; i < (size_t)L * ld + 8; i++)
		c->qkv[i] = 3.0f * frand(); /* peaky rows: the maximum matters; outputs to 3, so
					     * the 1e-5 bar below is ~20 float ulps */
	for (int i = 0; i < 2 * L + 1; i++)
		c->rel[i] = 2.0f * frand();
	for (size_t i = 0; i < (size_t)L * ldo; i++)
		c->out[i] = -12345.0f;
	c->a = (attn_head){ .q = c->qkv, .k = c->qkv + d, .v = c->qkv + 2 * d, .ld = ld,
			    .out = c->out, .ldo = ldo, .L = L, .d = d,
			    .scale = 1.0f / sqrtf((float)d),
			    .rel = bias == BIAS_REL ? c->rel + L : NULL,
			    .alibi_slope = bias == BIAS_ALIBI ? 0.0625f : 0.0f };
}

static void free_case(kase *c)
{
	free(c->qkv);
	free(c->out);
	free(c->rel);
}

/* The largest |difference| between the kernel's rows and the reference's. */
static double max_err(const kase *c)
{
	const attn_head *a = &c->a;
	double worst = 0, *s = malloc(sizeof(double) * a->L);
	for (int i = 0; i < a->L; i++) {
		double mx = -INFINITY, sum = 0;
		for (int j = 0; j < a->L; j++) {
			double dot = 0;
			for (int k = 0; k < a->d; k++)
				dot += (double)a->q[(size_t)i * a->ld + k] * a->k[(size_t)j * a->ld + k];
			s[j] = dot * a->scale;
			if (a->rel)
				s[j] += a->rel[j - i];
			if (a->alibi_slope != 0.0f)
				s[j] -= a->alibi_slope * fabs((double)(j - i));
			mx = s[j] > mx ? s[j] : mx;
		}
		for (int j = 0; j < a->L; j++)
			sum += s[j] = exp(s[j] - mx);
		for (int k = 0; k < a->d; k++) {
			double o = 0;
			for (int j = 0; j < a->L; j++)
				o += s[j] * a->v[(size_t)j * a->ld + k];
			double e = fabs(o / sum - a->out[(size_t)i * a->ldo + k]);
			worst = e > worst || isnan(e) ? e : worst;
		}
	}
	free(s);
	return worst;
}

static int same_rows(const kase *c, const float *ref)
{
	for (int i = 0; i < c->a.L; i++)
		if (memcmp(c->out + (size_t)i * c->a.ldo, ref + (size_t)i * c->a.ldo,
			   sizeof(float) * c->a.d))
			return 0;
	return 1;
}

static void check(int L, int d, int bias, int have512)
{
	static const char *bname[] = { "none", "rel", "alibi" };
	kase c;
	make_case(&c, L, d, bias);
	CHECK(attention_rows(&c.a, 0, L, GEMM_AVX2) == 0, "out of memory");
	double e = max_err(&c);
	CHECK(e <= 1e-5, "L %d d %d bias %s: AVX2 off the reference by %.3g", L, d, bname[bias], e);
	size_t n = (size_t)L * c.a.ldo;
	float *ref = malloc(sizeof(float) * n);
	memcpy(ref, c.out, sizeof(float) * n);
	if (have512) {
		CHECK(attention_rows(&c.a, 0, L, GEMM_AVX512) == 0, "out of memory");
		CHECK(same_rows(&c, ref), "L %d d %d bias %s: AVX-512 bits differ from AVX2's", L,
		      d, bname[bias]);
	}
	/* the same rows in uneven pieces, some of them one row, into an output reset first (so a
	 * piece that wrote nothing cannot pass on the full call's values) */
	for (size_t i = 0; i < n; i++)
		c.out[i] = -12345.0f;
	for (int q0 = 0, step = 1; q0 < L; q0 += step, step = step * 3 % 37 + 1)
		attention_rows(&c.a, q0, q0 + step <= L ? step : L - q0, have512 ? GEMM_AVX512
										  : GEMM_AVX2);
	CHECK(same_rows(&c, ref), "L %d d %d bias %s: rows depend on the call's range", L, d,
	      bname[bias]);
	free(ref);
	free_case(&c);
}

int main(void)
{
	__builtin_cpu_init();
	const int have512 = __builtin_cpu_supports("avx512f");
	if (!have512)
		printf("test_attention: no AVX-512 here, AVX2 kernel only\n");
	const int lens[] = { 1, 2, 15, 16, 17, 33, 100, 256, 511, 512, 513, 1100 };
	const int dims[] = { 32, 64, 8, 24, 40 };
	for (unsigned li = 0; li < sizeof lens / sizeof *lens; li++)
		for (unsigned di = 0; di < sizeof dims / sizeof *dims; di++)
			for (int bias = 0; bias < 3; bias++)
				if (lens[li] <= 600 || (dims[di] >= 32 && bias != BIAS_REL))
					check(lens[li], dims[di], bias, have512);

	/* a NaN in one query row stays there */
	kase c;
	make_case(&c, 40, 32, BIAS_NONE);
	c.qkv[7 * c.a.ld + 3] = NAN;
	attention_rows(&c.a, 0, 40, GEMM_AVX2);
	int bad = 0;
	for (int i = 0; i < 40; i++)
		for (int k = 0; k < 32; k++)
			bad += (i == 7) != (isnan(c.out[i * c.a.ldo + k]) != 0);
	CHECK(bad == 0, "a NaN query value reached %d values it should not have (or missed its row)",
	      bad);
	free_case(&c);

	if (test_failures)
		fprintf(stderr, "test_attention: %d failures\n", test_failures);
	else
		printf("test_attention: ok\n");
	return test_failures != 0;
}
