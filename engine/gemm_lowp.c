/* gemm_lowp.c — the bf16 and int8 matrix products of gemm.h (GEMM_BF16, GEMM_INT8): weights
 * rounded or quantised once at pack time, activations converted once per product
 * (gemm_prep), and kernels chosen at run time.
 *
 * Why: the fp32 kernels (gemm.c) already run near the FMA peak, so the CPU's remaining speed
 * is in its narrower arithmetic: VPDPBUSD does 64 multiply-adds per instruction where an fp32
 * FMA does 16; VDPBF16PS 32 (but at half the FMA rate on some CPUs, the Xeon measured in
 * docs/bench-cpu.md among them, hence the timed choice in pick_bf16). Both are opt-in
 * (--precision bf16 / int8) because they change the vectors (docs/bench-cpu.md has the
 * accuracy each keeps).
 *
 * One layout per precision serves every kernel of that precision, and every kernel of a
 * precision computes exactly the same numbers (gemm.h's contract), so a store embedded on
 * an AVX-512 machine is searched with the same query vectors on an AVX2 one:
 *  - bf16: products of two bf16 are exact in fp32; VDPBF16PS adds the odd-k product, then
 *    the even-k one, to the fp32 accumulator, each addition rounded (to nearest even). The
 *    fallbacks (AVX-512F, AVX2) widen the bf16 to fp32 by a shift and make the same two
 *    FMAs in the same order. (VDPBF16PS also treats denormal inputs and results as zero;
 *    the activations and weights of these models never come near 1e-38.)
 *  - int8: sums of int8 products are exact in int32 whatever the kernel. Each block of 32 k
 *    (one activation scale each) is summed in int32, then scaled into fp32 accumulators in
 *    block order. VPDPBUSD multiplies unsigned by signed bytes, so the VNNI kernels read the
 *    activations shifted by +128 and subtract 128 * the block's sum of W[n][k] (precomputed
 *    per block and column). The AVX2 kernel has no VNNI: VPMADDUBSW (u8 x s8, pairs summed
 *    into saturating int16) on |a| and W with a's sign, which stays below 2 * 127 * 127 and
 *    so never saturates, then VPMADDWD by ones into int32.
 *
 * Blocking follows gemm.c: panels of 32 columns of C, k-major, the AVX-512 kernels hold a
 * 12 x 32 block in 24 zmm registers (int8: 6 x 32, an fp32 and an int32 accumulator each);
 * the 256-bit kernels walk each panel in two halves of 16 columns, 4 rows at a time (int8: 2)
 * so that the bf16 fallback's widened weights and int8's two accumulators fit in the 16
 * registers.
 */
#include "gemm.h"
#include "gemm_act.h"

#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NRL 32 /* panel width of both layouts */
#define MRZ 12 /* AVX-512 kernels: rows per block */
#define MRZ8 6 /* the int8 one: 12 fp32 and 12 int32 accumulators */
#define MRY8 2 /* the 256-bit int8 ones: 4 + 4 */
#define I8_KB 32 /* int8 activations: one scale per block of this many k */
#define MRY 4  /* 256-bit kernels: rows per block (of a 16-column half panel) */

/* --- rounding and quantising */

/* fp32 -> bf16, round to nearest even; NaN stays NaN (quiet). Branch-free so the conversion
 * loops vectorise. */
static inline uint32_t bf16_bits(float x)
{
	union { float f; uint32_t u; } v = { .f = x };
	uint32_t r = (v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16;
	uint32_t q = (v.u >> 16) | 0x40u;
	return (v.u & 0x7fffffffu) > 0x7f800000u ? q : r;
}

/* |x| <= 127 by construction; round half away from zero, in a form that vectorises. */
static inline int q8(float x)
{
	if (x != x) /* only in a block whose scale is NaN; (int)NaN is undefined */
		return 0;
	int v = (int)(x + (x >= 0 ? 0.5f : -0.5f));
	return v > 127 ? 127 : v < -127 ? -127 : v;
}

static inline const float *w_row(const float *const *W, int rows, int K, int n)
{
	return W[n / rows] + (size_t)(n % rows) * K;
}

static int uses_shift(gemm_isa isa) /* int8 kernels that read a + 128 */
{
	return isa == GEMM_AVX512_VNNI || isa == GEMM_AVX_VNNI;
}

int gemm_pack_prec(gemm_w *g, const float *const *W, int parts, int N, int K, gemm_isa isa,
		   gemm_prec prec)
{
	if (prec == GEMM_F32)
		return gemm_pack(g, W, parts, N, K, isa);
	memset(g, 0, sizeof *g);
	const size_t panels = ((size_t)N + NRL - 1) / NRL, cols = panels * NRL;
	const int kg = prec == GEMM_BF16 ? (K + 1) / 2 : (K + 3) / 4; /* k groups */
	const int rows = N / parts;
	g->N = N, g->K = K, g->nr = NRL, g->isa = isa, g->prec = prec;
	g->nb = prec == GEMM_INT8 ? (K + I8_KB - 1) / I8_KB : 0;
	g->q = aligned_alloc(64, panels * kg * NRL * 4);
	if (prec == GEMM_INT8) {
		g->scale = aligned_alloc(64, cols * sizeof(float));
		g->corr = aligned_alloc(64, (g->nb ? g->nb : 1) * cols * sizeof(int32_t));
	}
	if (!g->q || (prec == GEMM_INT8 && (!g->scale || !g->corr))) {
		gemm_w_free(g);
		return -1;
	}
	if (prec == GEMM_BF16) {
		uint32_t *q = g->q;
		for (size_t p = 0; p < panels; p++)
			for (int j = 0; j < NRL; j++) {
				const int n = (int)p * NRL + j;
				const float *src = n < N ? w_row(W, rows, K, n) : NULL;
				for (int k = 0; k < kg; k++) {
					uint32_t lo = src ? bf16_bits(src[2 * k]) : 0;
					uint32_t hi = src && 2 * k + 1 < K ? bf16_bits(src[2 * k + 1]) : 0;
					q[(p * kg + k) * NRL + j] = lo | hi << 16;
				}
			}
		return 0;
	}
	int8_t *q = g->q;
	memset(q, 0, panels * kg * NRL * 4);
	memset(g->corr, 0, (size_t)g->nb * cols * sizeof(int32_t));
	for (size_t n = 0; n < cols; n++) {
		g->scale[n] = 0;
		if ((int)n >= N)
			continue;
		const float *src = w_row(W, rows, K, (int)n);
		float amax = 0;
		for (int k = 0; k < K; k++)
			amax = fabsf(src[k]) > amax ? fabsf(src[k]) : amax;
		const float inv = amax > 0 ? 127.0f / amax : 0;
		int8_t *dst = q + (n / NRL) * kg * NRL * 4 + (n % NRL) * 4;
		for (int k = 0; k < K; k++) {
			int v = q8(src[k] * inv);
			dst[(size_t)(k / 4) * NRL * 4 + k % 4] = (int8_t)v;
			if (uses_shift(isa))
				g->corr[(size_t)(k / I8_KB) * cols + n] += 128 * v;
		}
		g->scale[n] = amax / 127.0f;
	}
	return 0;
}

/* One full block of 32 activations quantised (AVX2): the scalar tail's arithmetic (|x| max,
 * 127 / max, x * inv, + or - 0.5, truncation, clamp), so a row's bytes do not depend on where
 * its blocks fall. Returns the block's scale. The scalar loop does not vectorise: a max
 * reduction over floats needs -ffast-math. */
static float quant_block32(const float *a, uint8_t *out, uint8_t shift)
{
	const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	__m256 x[4], m = _mm256_setzero_ps();
	int nan = 0;
	for (int j = 0; j < 4; j++) {
		x[j] = _mm256_loadu_ps(a + 8 * j);
		m = _mm256_max_ps(_mm256_and_ps(x[j], absm), m);
		nan |= _mm256_movemask_ps(_mm256_cmp_ps(x[j], x[j], _CMP_UNORD_Q));
	}
	m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
	m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0x4e));
	m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0xb1));
	const float amax = _mm256_cvtss_f32(m);
	const float inv = amax > 0 && amax <= 3.4e38f ? 127.0f / amax : 0;
	const __m256 r = _mm256_set1_ps(inv), half = _mm256_set1_ps(0.5f);
	const __m256 mhalf = _mm256_set1_ps(-0.5f), zero = _mm256_setzero_ps();
	const __m256i hi = _mm256_set1_epi32(127), lo = _mm256_set1_epi32(-127);
	__m256i q[4];
	for (int j = 0; j < 4; j++) {
		__m256 y = _mm256_mul_ps(x[j], r);
		y = _mm256_add_ps(y, _mm256_blendv_ps(mhalf, half, _mm256_cmp_ps(y, zero, _CMP_GE_OQ)));
		/* NaN (only in a row whose scale is NaN) converts to 0 as well */
		y = _mm256_and_ps(y, _mm256_cmp_ps(y, y, _CMP_ORD_Q));
		q[j] = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvttps_epi32(y), lo), hi);
	}
	__m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
	p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
	p = _mm256_xor_si256(p, _mm256_set1_epi8((char)shift));
	_mm256_storeu_si256((__m256i *)out, p);
	return nan ? NAN : amax / 127.0f;
}

size_t gemm_prep_row_bytes(const gemm_w *g)
{
	if (g->prec == GEMM_BF16)
		return (size_t)(g->K + 1) / 2 * 4;
	/* values, then the scale of each block of I8_KB */
	return (size_t)(g->K + 3) / 4 * 4 + (size_t)g->nb * sizeof(float);
}

void gemm_prep(const gemm_w *g, const float *A, int M, void *buf)
{
	const int K = g->K;
	const size_t rb = gemm_prep_row_bytes(g);
	for (int i = 0; i < M; i++) {
		const float *a = A + (size_t)i * K;
		unsigned char *row = (unsigned char *)buf + (size_t)i * rb;
		if (g->prec == GEMM_BF16) {
			uint16_t *d = (uint16_t *)row;
			for (int k = 0; k < K; k++)
				d[k] = (uint16_t)bf16_bits(a[k]);
			if (K & 1)
				d[K] = 0;
			continue;
		}
		const uint8_t shift = uses_shift(g->isa) ? 0x80 : 0;
		const int kq = (K + 3) / 4 * 4;
		float *scales = (float *)(row + kq);
		for (int k0 = 0; k0 < K; k0 += I8_KB) {
			if (K - k0 >= I8_KB) {
				scales[k0 / I8_KB] = quant_block32(a + k0, row + k0, shift);
				continue;
			}
			const int k1 = K;
			float amax = 0;
			int nan = 0;
			for (int k = k0; k < k1; k++) {
				float v = fabsf(a[k]);
				amax = v > amax ? v : amax;
				nan |= a[k] != a[k];
			}
			/* a NaN or infinity makes the block's scale NaN or inf, so the vector comes
			 * out non-finite as it would in fp32 (embed refuses those) */
			const float inv = amax > 0 && amax <= 3.4e38f ? 127.0f / amax : 0;
			for (int k = k0; k < k1; k++)
				row[k] = (uint8_t)((uint8_t)q8(a[k] * inv) ^ shift);
			scales[k0 / I8_KB] = nan ? NAN : amax / 127.0f;
		}
		for (int k = K; k < kq; k++)
			row[k] = shift;
	}
}

/* --- AVX-512 kernels: a 12 x 32 block of C */

typedef struct { __m512 v[MRZ][2]; } accz;
typedef struct { __m512i v[MRZ][2]; } acczi;

static inline __attribute__((always_inline, target("avx512f"))) void
store_f32z(const accz *acc, int mr, float *c, int ldc, const float *bias, int nv)
{
	__mmask16 m0 = nv >= 16 ? 0xffff : (__mmask16)((1u << nv) - 1);
	__mmask16 m1 = nv >= 32 ? 0xffff : nv <= 16 ? 0 : (__mmask16)((1u << (nv - 16)) - 1);
	__m512 bz0 = _mm512_setzero_ps(), bz1 = _mm512_setzero_ps();
	if (bias) {
		bz0 = _mm512_maskz_loadu_ps(m0, bias);
		bz1 = _mm512_maskz_loadu_ps(m1, bias + 16);
	}
	for (int i = 0; i < mr; i++) {
		_mm512_mask_storeu_ps(c + (size_t)i * ldc, m0, _mm512_add_ps(acc->v[i][0], bz0));
		_mm512_mask_storeu_ps(c + (size_t)i * ldc + 16, m1, _mm512_add_ps(acc->v[i][1], bz1));
	}
}

/* bf16 with VDPBF16PS. a: rows of bf16 pairs (lda pairs a row); b: the panel. */
static inline __attribute__((always_inline, target("avx512f,avx512bf16"))) void
kbf16z(const int mr, const uint32_t *a, int lda, const uint32_t *b, int kg, float *c, int ldc,
       const float *bias, int nv)
{
	accz acc;
	for (int i = 0; i < mr; i++)
		acc.v[i][0] = acc.v[i][1] = _mm512_setzero_ps();
	for (int k = 0; k < kg; k++) {
		__m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 16);
		b += NRL;
		for (int i = 0; i < mr; i++) {
			__m512bh av = (__m512bh)_mm512_set1_epi32((int)a[(size_t)i * lda + k]);
			acc.v[i][0] = _mm512_dpbf16_ps(acc.v[i][0], av, b0);
			acc.v[i][1] = _mm512_dpbf16_ps(acc.v[i][1], av, b1);
		}
	}
	store_f32z(&acc, mr, c, ldc, bias, nv);
}

/* bf16 on AVX-512F: widen each half of a pair to fp32 (bf16 is fp32's top 16 bits) and make
 * VDPBF16PS's two multiply-adds, odd k first. */
static inline __attribute__((always_inline, target("avx512f"))) void
kbf16f(const int mr, const uint32_t *a, int lda, const uint32_t *b, int kg, float *c, int ldc,
       const float *bias, int nv)
{
	accz acc;
	const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
	for (int i = 0; i < mr; i++)
		acc.v[i][0] = acc.v[i][1] = _mm512_setzero_ps();
	for (int k = 0; k < kg; k++) {
		__m512i b0 = _mm512_load_si512(b), b1 = _mm512_load_si512(b + 16);
		b += NRL;
		__m512 o0 = _mm512_castsi512_ps(_mm512_and_si512(b0, hi));
		__m512 o1 = _mm512_castsi512_ps(_mm512_and_si512(b1, hi));
		__m512 e0 = _mm512_castsi512_ps(_mm512_slli_epi32(b0, 16));
		__m512 e1 = _mm512_castsi512_ps(_mm512_slli_epi32(b1, 16));
		for (int i = 0; i < mr; i++) {
			uint32_t x = a[(size_t)i * lda + k];
			__m512 ao = _mm512_castsi512_ps(_mm512_set1_epi32((int)(x & 0xffff0000u)));
			__m512 ae = _mm512_castsi512_ps(_mm512_set1_epi32((int)(x << 16)));
			acc.v[i][0] = _mm512_fmadd_ps(ao, o0, acc.v[i][0]);
			acc.v[i][1] = _mm512_fmadd_ps(ao, o1, acc.v[i][1]);
			acc.v[i][0] = _mm512_fmadd_ps(ae, e0, acc.v[i][0]);
			acc.v[i][1] = _mm512_fmadd_ps(ae, e1, acc.v[i][1]);
		}
	}
	store_f32z(&acc, mr, c, ldc, bias, nv);
}

/* int8 with VPDPBUSD (a + 128 as u8, W as s8). a: rows of kg groups of 4 bytes, then one
 * scale per block of I8_KB (lda = kg + nb int32 a row). Each block's int32 sums, less the
 * block's +128 correction, are scaled by the block's activation scale into fp32
 * accumulators; the weight scale and the bias come last: C = f * scale_w + bias. */
static inline __attribute__((always_inline, target("avx512f,avx512vnni"))) void
ki8z(const int mr, const int32_t *a, int lda, const int32_t *b, int kg, int nb, float *c,
     int ldc, const float *bias, const float *sw, const int32_t *corr, size_t cstride, int nv)
{
	__m512 f[MRZ8][2];
	for (int i = 0; i < mr; i++)
		f[i][0] = f[i][1] = _mm512_setzero_ps();
	for (int bl = 0; bl < nb; bl++) {
		__m512i s[MRZ8][2];
		for (int i = 0; i < mr; i++)
			s[i][0] = s[i][1] = _mm512_setzero_si512();
		const int k1 = kg - bl * (I8_KB / 4) < I8_KB / 4 ? kg : (bl + 1) * (I8_KB / 4);
		for (int k = bl * (I8_KB / 4); k < k1; k++) {
			__m512i b0 = _mm512_load_si512(b), b1 = _mm512_load_si512(b + 16);
			b += NRL;
			for (int i = 0; i < mr; i++) {
				__m512i av = _mm512_set1_epi32(a[(size_t)i * lda + k]);
				s[i][0] = _mm512_dpbusd_epi32(s[i][0], av, b0);
				s[i][1] = _mm512_dpbusd_epi32(s[i][1], av, b1);
			}
		}
		const int32_t *cb = corr + (size_t)bl * cstride;
		const __m512i c0 = _mm512_load_si512(cb), c1 = _mm512_load_si512(cb + 16);
		for (int i = 0; i < mr; i++) {
			float sa;
			memcpy(&sa, a + (size_t)i * lda + kg + bl, sizeof sa);
			__m512 vs = _mm512_set1_ps(sa);
			f[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(s[i][0], c0)), vs,
						  f[i][0]);
			f[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(s[i][1], c1)), vs,
						  f[i][1]);
		}
	}
	__mmask16 m0 = nv >= 16 ? 0xffff : (__mmask16)((1u << nv) - 1);
	__mmask16 m1 = nv >= 32 ? 0xffff : nv <= 16 ? 0 : (__mmask16)((1u << (nv - 16)) - 1);
	__m512 bz0 = _mm512_setzero_ps(), bz1 = _mm512_setzero_ps();
	if (bias) {
		bz0 = _mm512_maskz_loadu_ps(m0, bias);
		bz1 = _mm512_maskz_loadu_ps(m1, bias + 16);
	}
	const __m512 s0 = _mm512_load_ps(sw), s1 = _mm512_load_ps(sw + 16);
	for (int i = 0; i < mr; i++) {
		_mm512_mask_storeu_ps(c + (size_t)i * ldc, m0, _mm512_fmadd_ps(f[i][0], s0, bz0));
		_mm512_mask_storeu_ps(c + (size_t)i * ldc + 16, m1, _mm512_fmadd_ps(f[i][1], s1, bz1));
	}
}

/* The drivers: panels outer (a panel stays in cache while the rows stream past), row
 * blocks inner, the block height a compile-time constant in each case of the switch. */
#define CASES12(X) X(1); X(2); X(3); X(4); X(5); X(6); X(7); X(8); X(9); X(10); X(11); X(12)

#define BF16_DRIVER(name, kern, tgt)                                                         \
	static __attribute__((target(tgt))) void name(const gemm_w *g, const uint32_t *A,     \
						      int M, int n0, int n1, const float *bias, \
						      float *C, int ldc, gemm_act act)          \
	{                                                                                    \
		const int kg = (g->K + 1) / 2, lda = kg;                                     \
		for (int n = n0; n < n1; n += NRL) {                                         \
			const uint32_t *b = (const uint32_t *)g->q + (size_t)(n / NRL) * kg * NRL; \
			const float *bi = bias ? bias + n : NULL;                            \
			const int nv = n1 - n < NRL ? n1 - n : NRL;                          \
			for (int i = 0; i < M; i += MRZ) {                                   \
				const uint32_t *a = A + (size_t)i * lda;                     \
				float *c = C + (size_t)i * ldc + n;                          \
				const int mr = M - i < MRZ ? M - i : MRZ;                    \
				switch (mr) {                                                \
				CASES12(K_##kern);                                           \
				}                                                            \
				if (act)                                                     \
					act_block(c, ldc, mr, nv, act);                      \
			}                                                                    \
		}                                                                            \
	}
#define K_kbf16z(m) case m: kbf16z(m, a, lda, b, kg, c, ldc, bi, nv); break
#define K_kbf16f(m) case m: kbf16f(m, a, lda, b, kg, c, ldc, bi, nv); break
BF16_DRIVER(run_bf16z, kbf16z, "avx512f,avx512bf16")
BF16_DRIVER(run_bf16f, kbf16f, "avx512f")

#define CASES6(X) X(1); X(2); X(3); X(4); X(5); X(6)
#define K_ki8z(m) case m: ki8z(m, a, lda, b, kg, nb, c, ldc, bi, sw, corr, cs, nv); break
static __attribute__((target("avx512f,avx512vnni"))) void
run_i8z(const gemm_w *g, const int32_t *A, int M, int n0, int n1, const float *bias, float *C,
	int ldc, gemm_act act)
{
	const int kg = (g->K + 3) / 4, nb = g->nb, lda = kg + nb;
	const size_t cs = ((size_t)g->N + NRL - 1) / NRL * NRL;
	for (int n = n0; n < n1; n += NRL) {
		const int32_t *b = (const int32_t *)g->q + (size_t)(n / NRL) * kg * NRL;
		const float *bi = bias ? bias + n : NULL, *sw = g->scale + n;
		const int32_t *corr = g->corr + n;
		const int nv = n1 - n < NRL ? n1 - n : NRL;
		for (int i = 0; i < M; i += MRZ8) {
			const int32_t *a = A + (size_t)i * lda;
			float *c = C + (size_t)i * ldc + n;
			const int mr = M - i < MRZ8 ? M - i : MRZ8;
			switch (mr) {
			CASES6(K_ki8z);
			}
			if (act)
				act_block(c, ldc, mr, nv, act);
		}
	}
}

/* --- 256-bit kernels: a 4 x 16 block (half a panel: b points at its first column, the
 * panel's rows are still NRL wide) */

typedef struct { __m256 v[MRY][2]; } accy;
typedef struct { __m256i v[MRY][2]; } accyi;

static inline __attribute__((always_inline)) void
masks16(int nv, __m256i *m0, __m256i *m1)
{
	const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	*m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv), idx);
	*m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv - 8), idx);
}

static inline __attribute__((always_inline)) void
kbf16y(const int mr, const uint32_t *a, int lda, const uint32_t *b, int kg, float *c, int ldc,
       const float *bias, int nv)
{
	accy acc;
	const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
	for (int i = 0; i < mr; i++)
		acc.v[i][0] = acc.v[i][1] = _mm256_setzero_ps();
	for (int k = 0; k < kg; k++) {
		__m256i b0 = _mm256_load_si256((const __m256i *)b);
		__m256i b1 = _mm256_load_si256((const __m256i *)(b + 8));
		b += NRL;
		__m256 o0 = _mm256_castsi256_ps(_mm256_and_si256(b0, hi));
		__m256 o1 = _mm256_castsi256_ps(_mm256_and_si256(b1, hi));
		__m256 e0 = _mm256_castsi256_ps(_mm256_slli_epi32(b0, 16));
		__m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(b1, 16));
		for (int i = 0; i < mr; i++) {
			uint32_t x = a[(size_t)i * lda + k];
			__m256 ao = _mm256_castsi256_ps(_mm256_set1_epi32((int)(x & 0xffff0000u)));
			__m256 ae = _mm256_castsi256_ps(_mm256_set1_epi32((int)(x << 16)));
			acc.v[i][0] = _mm256_fmadd_ps(ao, o0, acc.v[i][0]);
			acc.v[i][1] = _mm256_fmadd_ps(ao, o1, acc.v[i][1]);
			acc.v[i][0] = _mm256_fmadd_ps(ae, e0, acc.v[i][0]);
			acc.v[i][1] = _mm256_fmadd_ps(ae, e1, acc.v[i][1]);
		}
	}
	__m256i m0, m1;
	masks16(nv, &m0, &m1);
	__m256 bz0 = _mm256_setzero_ps(), bz1 = _mm256_setzero_ps();
	if (bias) {
		bz0 = _mm256_maskload_ps(bias, m0);
		bz1 = _mm256_maskload_ps(bias + 8, m1);
	}
	for (int i = 0; i < mr; i++) {
		_mm256_maskstore_ps(c + (size_t)i * ldc, m0, _mm256_add_ps(acc.v[i][0], bz0));
		_mm256_maskstore_ps(c + (size_t)i * ldc + 8, m1, _mm256_add_ps(acc.v[i][1], bz1));
	}
}

/* The 256-bit int8 kernels share ki8z's block structure; `dot` is the one step that differs:
 * s += a . b over 4 bytes per column, for a block of 16 columns. */
#define KI8Y_BODY(DOT)                                                                       \
	__m256 f[MRY8][2];                                                                   \
	for (int i = 0; i < mr; i++)                                                         \
		f[i][0] = f[i][1] = _mm256_setzero_ps();                                     \
	for (int bl = 0; bl < nb; bl++) {                                                    \
		__m256i s[MRY8][2];                                                          \
		for (int i = 0; i < mr; i++)                                                 \
			s[i][0] = s[i][1] = _mm256_setzero_si256();                          \
		const int k1 = kg - bl * (I8_KB / 4) < I8_KB / 4 ? kg : (bl + 1) * (I8_KB / 4); \
		for (int k = bl * (I8_KB / 4); k < k1; k++) {                                \
			__m256i b0 = _mm256_load_si256((const __m256i *)b);                   \
			__m256i b1 = _mm256_load_si256((const __m256i *)(b + 8));             \
			b += NRL;                                                            \
			for (int i = 0; i < mr; i++) {                                       \
				__m256i av = _mm256_set1_epi32(a[(size_t)i * lda + k]);      \
				s[i][0] = DOT(s[i][0], av, b0);                              \
				s[i][1] = DOT(s[i][1], av, b1);                              \
			}                                                                    \
		}                                                                            \
		const int32_t *cb = corr + (size_t)bl * cstride;                             \
		const __m256i c0 = _mm256_loadu_si256((const __m256i *)cb);                  \
		const __m256i c1 = _mm256_loadu_si256((const __m256i *)(cb + 8));            \
		for (int i = 0; i < mr; i++) {                                               \
			float sa;                                                            \
			memcpy(&sa, a + (size_t)i * lda + kg + bl, sizeof sa);               \
			__m256 vs = _mm256_set1_ps(sa);                                      \
			f[i][0] = _mm256_fmadd_ps(                                           \
				_mm256_cvtepi32_ps(_mm256_sub_epi32(s[i][0], c0)), vs, f[i][0]); \
			f[i][1] = _mm256_fmadd_ps(                                           \
				_mm256_cvtepi32_ps(_mm256_sub_epi32(s[i][1], c1)), vs, f[i][1]); \
		}                                                                            \
	}                                                                                    \
	__m256i m0, m1;                                                                      \
	masks16(nv, &m0, &m1);                                                               \
	__m256 bz0 = _mm256_setzero_ps(), bz1 = _mm256_setzero_ps();                         \
	if (bias) {                                                                          \
		bz0 = _mm256_maskload_ps(bias, m0);                                          \
		bz1 = _mm256_maskload_ps(bias + 8, m1);                                      \
	}                                                                                    \
	const __m256 s0 = _mm256_loadu_ps(sw), s1 = _mm256_loadu_ps(sw + 8);                 \
	for (int i = 0; i < mr; i++) {                                                       \
		_mm256_maskstore_ps(c + (size_t)i * ldc, m0, _mm256_fmadd_ps(f[i][0], s0, bz0)); \
		_mm256_maskstore_ps(c + (size_t)i * ldc + 8, m1,                             \
				    _mm256_fmadd_ps(f[i][1], s1, bz1));                      \
	}

/* int8 with 256-bit VPDPBUSD (AVX-VNNI), a + 128 as u8. */
#define DOT_VNNI(s, a, b) _mm256_dpbusd_avx_epi32(s, a, b)
static inline __attribute__((always_inline, target("avxvnni"))) void
ki8v(const int mr, const int32_t *a, int lda, const int32_t *b, int kg, int nb, float *c,
     int ldc, const float *bias, const float *sw, const int32_t *corr, size_t cstride, int nv)
{
	KI8Y_BODY(DOT_VNNI)
}

/* int8 on AVX2: |a| (u8) times W with a's sign (s8) by VPMADDUBSW, pairs into int16 that
 * cannot saturate (|a|, |w| <= 127), then VPMADDWD by ones into int32. */
static inline __attribute__((always_inline)) __m256i dot_avx2(__m256i s, __m256i a, __m256i b)
{
	__m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(b, a));
	return _mm256_add_epi32(s, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}
static inline __attribute__((always_inline)) void
ki8y(const int mr, const int32_t *a, int lda, const int32_t *b, int kg, int nb, float *c,
     int ldc, const float *bias, const float *sw, const int32_t *corr, size_t cstride, int nv)
{
	KI8Y_BODY(dot_avx2)
}

#define CASES4(X) X(1); X(2); X(3); X(4)
#define CASES2(X) X(1); X(2)
#define K_kbf16y(m) case m: kbf16y(m, a, lda, b, kg, c, ldc, bi, nv); break
#define K_ki8v(m) case m: ki8v(m, a, lda, b, kg, nb, c, ldc, bi, sw, corr, cs, nv); break
#define K_ki8y(m) case m: ki8y(m, a, lda, b, kg, nb, c, ldc, bi, sw, corr, cs, nv); break

/* Half panels of 16 columns: the weights of columns [n, n + 16) start 16 words into the
 * panel's rows when n is the panel's second half. */
#define Y_DRIVER(name, kern, tgt, int8, MR, CASES)                                           \
	static __attribute__((target(tgt))) void name(const gemm_w *g, const void *Ap, int M, \
						      int n0, int n1, const float *bias,       \
						      float *C, int ldc, gemm_act act)         \
	{                                                                                    \
		const int kg = int8 ? (g->K + 3) / 4 : (g->K + 1) / 2, nb = g->nb;           \
		const int lda = kg + nb;                                                     \
		const size_t cs = ((size_t)g->N + NRL - 1) / NRL * NRL;                      \
		const uint32_t *A = Ap;                                                       \
		(void)cs;                                                                    \
		for (int n = n0; n < n1; n += 16) {                                          \
			const void *b = (const uint32_t *)g->q + (size_t)(n / NRL) * kg * NRL \
					+ n % NRL;                                            \
			const float *bi = bias ? bias + n : NULL;                            \
			const float *sw = int8 ? g->scale + n : NULL;                        \
			const int32_t *corr = int8 ? g->corr + n : NULL;                     \
			const int nv = n1 - n < 16 ? n1 - n : 16;                            \
			(void)sw, (void)corr;                                                \
			for (int i = 0; i < M; i += MR) {                                    \
				const void *a = A + (size_t)i * lda;                         \
				float *c = C + (size_t)i * ldc + n;                          \
				const int mr = M - i < MR ? M - i : MR;                      \
				switch (mr) {                                                \
				CASES(K_##kern);                                             \
				}                                                            \
				if (act)                                                     \
					act_block(c, ldc, mr, nv, act);                      \
			}                                                                    \
		}                                                                            \
	}
Y_DRIVER(run_bf16y, kbf16y, "avx2,fma", 0, MRY, CASES4)
Y_DRIVER(run_i8v, ki8v, "avx2,fma,avxvnni", 1, MRY8, CASES2)
Y_DRIVER(run_i8y, ki8y, "avx2,fma", 1, MRY8, CASES2)

void gemm_run_prep(const gemm_w *g, const void *Ap, int M, int n0, int n1, const float *bias,
		   float *C, int ldc, gemm_act act)
{
	if (g->prec == GEMM_BF16) {
		if (g->isa == GEMM_AVX512_BF16)
			run_bf16z(g, Ap, M, n0, n1, bias, C, ldc, act);
		else if (g->isa == GEMM_AVX512)
			run_bf16f(g, Ap, M, n0, n1, bias, C, ldc, act);
		else
			run_bf16y(g, Ap, M, n0, n1, bias, C, ldc, act);
	} else {
		if (g->isa == GEMM_AVX512_VNNI)
			run_i8z(g, Ap, M, n0, n1, bias, C, ldc, act);
		else if (g->isa == GEMM_AVX_VNNI)
			run_i8v(g, Ap, M, n0, n1, bias, C, ldc, act);
		else
			run_i8y(g, Ap, M, n0, n1, bias, C, ldc, act);
	}
}

/* --- which kernels this CPU runs */

/* AVX-VNNI (CPUID.(EAX=7,ECX=1):EAX bit 4), read from cpuid: clang 14's
 * __builtin_cpu_supports does not know "avxvnni". Its registers are AVX2's, which the build
 * assumes. */
static int has_avx_vnni(void)
{
	unsigned a, b, c, d;
	return __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 4) & 1);
}

int gemm_isa_usable(gemm_isa isa, gemm_prec prec)
{
	__builtin_cpu_init();
	const int f = __builtin_cpu_supports("avx512f");
	switch (isa) {
	case GEMM_AVX2: return 1;
	case GEMM_AVX512: return prec != GEMM_INT8 && f;
	case GEMM_AVX512_BF16: return prec == GEMM_BF16 && f && __builtin_cpu_supports("avx512bf16");
	case GEMM_AVX512_VNNI:
		return prec == GEMM_INT8 && f && __builtin_cpu_supports("avx512vnni");
	case GEMM_AVX_VNNI: return prec == GEMM_INT8 && has_avx_vnni();
	}
	return 0;
}

/* Seconds of 10 products 12 x 256 x 384 on kernel `isa`, the best of 3 rounds. */
static double time_bf16(gemm_isa isa, const float *const *W, const float *A, void *buf,
			float *C)
{
	gemm_w g;
	if (gemm_pack_prec(&g, W, 1, 256, 384, isa, GEMM_BF16))
		return 1e9;
	gemm_prep(&g, A, 12, buf);
	double best = 1e9;
	for (int r = 0; r < 3; r++) {
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (int i = 0; i < 10; i++)
			gemm_run_prep(&g, buf, 12, 0, 256, NULL, C, 256, GEMM_ACT_NONE);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
		best = s < best ? s : best;
	}
	gemm_w_free(&g);
	return best;
}

/* VDPBF16PS is not always the faster bf16 kernel: on the Xeon (Sapphire Rapids class) this
 * was measured on it runs at half the rate of fp32 FMAs, below the AVX-512F kernel's two
 * FMAs per pair (110 against 130 GFLOP/s, docs/bench-cpu.md), while CPUs with full-rate
 * VDPBF16PS do twice the FMAs' work. Both give the same bits, so the choice is made by
 * timing them once (~4 ms) the first time a bf16 kernel is asked for. */
static gemm_isa pick_bf16(void)
{
	float *W = malloc(sizeof(float) * 256 * 384), *A = malloc(sizeof(float) * 12 * 384);
	float *C = malloc(sizeof(float) * 12 * 256);
	void *buf = malloc(12 * 384 * 2 + 64);
	gemm_isa isa = GEMM_AVX512_BF16;
	if (W && A && C && buf) {
		for (int i = 0; i < 256 * 384; i++)
			W[i] = (float)((i * 7919) % 201 - 100) / 1000.0f;
		for (int i = 0; i < 12 * 384; i++)
			A[i] = (float)((i * 104729) % 201 - 100) / 100.0f;
		const float *wp[1] = { W };
		double t_dp = 1e9, t_fma = 1e9;
		for (int r = 0; r < 3; r++) { /* alternated, against a burst of other load; the
						* first round also warms both up */
			double a = time_bf16(GEMM_AVX512_BF16, wp, A, buf, C);
			double b = time_bf16(GEMM_AVX512, wp, A, buf, C);
			if (r) {
				t_dp = a < t_dp ? a : t_dp;
				t_fma = b < t_fma ? b : t_fma;
			}
		}
		isa = t_fma < t_dp ? GEMM_AVX512 : GEMM_AVX512_BF16;
	}
	free(W), free(A), free(C), free(buf);
	return isa;
}

static gemm_isa pick(gemm_prec prec)
{
	const char *e = getenv("EMBED_GEMM_ISA");
	if (prec == GEMM_F32)
		return gemm_isa_default();
	if (e && !strcmp(e, "avx2"))
		return GEMM_AVX2;
	if (prec == GEMM_BF16) {
		if (e && !strcmp(e, "avx512bf16") && gemm_isa_usable(GEMM_AVX512_BF16, prec))
			return GEMM_AVX512_BF16;
		if (!(e && !strcmp(e, "avx512")) && gemm_isa_usable(GEMM_AVX512_BF16, prec))
			return pick_bf16();
		return gemm_isa_usable(GEMM_AVX512, prec) ? GEMM_AVX512 : GEMM_AVX2;
	}
	if (!(e && !strcmp(e, "avxvnni")) && gemm_isa_usable(GEMM_AVX512_VNNI, prec))
		return GEMM_AVX512_VNNI;
	return gemm_isa_usable(GEMM_AVX_VNNI, prec) ? GEMM_AVX_VNNI : GEMM_AVX2;
}

gemm_isa gemm_isa_for(gemm_prec prec)
{
	/* every thread that gets here first computes the same value */
	static _Atomic int isa[3] = { -1, -1, -1 };
	int v = atomic_load_explicit(&isa[prec], memory_order_relaxed);
	if (v < 0) {
		v = (int)pick(prec);
		atomic_store_explicit(&isa[prec], v, memory_order_relaxed);
	}
	return (gemm_isa)v;
}

const char *gemm_prec_name(gemm_prec prec)
{
	return prec == GEMM_BF16 ? "bf16" : prec == GEMM_INT8 ? "int8" : "fp32";
}
