/* attention.c — attention.h's kernel for AVX-512 and AVX2, chosen at run time.
 *
 * The kernel is written once (attention_kern.h) over a vector type and a few operations,
 * and compiled twice below: 16-lane registers with AVX-512F, 8-lane with AVX2. Both sum a
 * row's exponentials as 16 lanes (AVX2 in two registers) reduced in the same pairs, so they
 * give the same bits.
 */
#include "attention.h"
#include "vecmath.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* --- AVX-512: 16 lanes; scores 4 rows x 4 vectors, outputs 8 rows x 2 vectors */

#define V __m512
#define VW 16
#define AK_MR 4
#define AK_NQ 4
#define AK_PR 8
#define AK(name) name##_512
#define AK_ATTR __attribute__((target("avx512f")))
#define V_LOAD(p) _mm512_load_ps(p)
#define V_LOADU(p) _mm512_loadu_ps(p)
#define V_LOADU_N(p, n) _mm512_maskz_loadu_ps(mask16(n), (p))
#define V_STORE(p, x) _mm512_store_ps((p), (x))
#define V_SET1(x) _mm512_set1_ps(x)
#define V_ZERO() _mm512_setzero_ps()
#define V_ADD(a, b) _mm512_add_ps((a), (b))
#define V_SUB(a, b) _mm512_sub_ps((a), (b))
#define V_MUL(a, b) _mm512_mul_ps((a), (b))
#define V_MAX(a, b) _mm512_max_ps((a), (b))
#define V_MIN(a, b) _mm512_min_ps((a), (b))
#define V_FMADD(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define V_FNMADD(a, b, c) _mm512_fnmadd_ps((a), (b), (c))
#define V_POW2(t) pow2_512(t)
#define V_HMAX(x) _mm512_reduce_max_ps(x)
#define V_FIRST(x) _mm512_cvtss_f32(x)
#define V_HSUM16(s) hsum16_512((s)[0])
#define V_ABSDIST(x0) absdist_512(x0)

static inline __attribute__((always_inline)) __mmask16 mask16(int n)
{
	return n <= 0 ? 0 : n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
}

/* 2^n from the rounding trick's t (vecmath.h): its low bits hold n + 0x400000 */
static inline __attribute__((always_inline, target("avx512f"))) __m512 pow2_512(__m512 t)
{
	__m512i e = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32((int)EXP_BIAS_BITS));
	return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}

/* The 8-lane half of the 16-lane sum: lanes l and l + 8 added, then as hsum8 */
static inline __attribute__((always_inline)) float hsum8(__m256 s)
{
	s = _mm256_add_ps(s, _mm256_permute2f128_ps(s, s, 1));
	s = _mm256_add_ps(s, _mm256_shuffle_ps(s, s, 0x4e));
	s = _mm256_add_ps(s, _mm256_shuffle_ps(s, s, 0xb1));
	return _mm256_cvtss_f32(s);
}

static inline __attribute__((always_inline, target("avx512f"))) float hsum16_512(__m512 s)
{
	__m256 lo = _mm512_castps512_ps256(s);
	__m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1));
	return hsum8(_mm256_add_ps(lo, hi));
}

/* float(|x0 + lane|) for each lane */
static inline __attribute__((always_inline, target("avx512f"))) __m512 absdist_512(int x0)
{
	__m512i x = _mm512_add_epi32(_mm512_set1_epi32(x0),
				     _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
						       14, 15));
	return _mm512_cvtepi32_ps(_mm512_abs_epi32(x));
}

#include "attention_kern.h"

#undef V
#undef VW
#undef AK_MR
#undef AK_NQ
#undef AK_PR
#undef AK
#undef AK_ATTR
#undef V_LOAD
#undef V_LOADU
#undef V_LOADU_N
#undef V_STORE
#undef V_SET1
#undef V_ZERO
#undef V_ADD
#undef V_SUB
#undef V_MUL
#undef V_MAX
#undef V_MIN
#undef V_FMADD
#undef V_FNMADD
#undef V_POW2
#undef V_HMAX
#undef V_FIRST
#undef V_HSUM16
#undef V_ABSDIST

/* --- AVX2: 8 lanes; scores 4 rows x 2 vectors, outputs 4 rows x 2 vectors */

#define V __m256
#define VW 8
#define AK_MR 4
#define AK_NQ 2
#define AK_PR 4
#define AK(name) name##_256
#define AK_ATTR __attribute__((target("avx2,fma")))
#define V_LOAD(p) _mm256_load_ps(p)
#define V_LOADU(p) _mm256_loadu_ps(p)
#define V_LOADU_N(p, n) _mm256_maskload_ps((p), mask8(n))
#define V_STORE(p, x) _mm256_store_ps((p), (x))
#define V_SET1(x) _mm256_set1_ps(x)
#define V_ZERO() _mm256_setzero_ps()
#define V_ADD(a, b) _mm256_add_ps((a), (b))
#define V_SUB(a, b) _mm256_sub_ps((a), (b))
#define V_MUL(a, b) _mm256_mul_ps((a), (b))
#define V_MAX(a, b) _mm256_max_ps((a), (b))
#define V_MIN(a, b) _mm256_min_ps((a), (b))
#define V_FMADD(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define V_FNMADD(a, b, c) _mm256_fnmadd_ps((a), (b), (c))
#define V_POW2(t) pow2_256(t)
#define V_HMAX(x) hmax8(x)
#define V_FIRST(x) _mm256_cvtss_f32(x)
#define V_HSUM16(s) hsum8(_mm256_add_ps((s)[0], (s)[1]))
#define V_ABSDIST(x0) absdist_256(x0)

static inline __attribute__((always_inline)) __m256i mask8(int n)
{
	return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline __attribute__((always_inline)) __m256 pow2_256(__m256 t)
{
	__m256i e = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32((int)EXP_BIAS_BITS));
	return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}

static inline __attribute__((always_inline)) float hmax8(__m256 m)
{
	m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
	m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0x4e));
	m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0xb1));
	return _mm256_cvtss_f32(m);
}

static inline __attribute__((always_inline)) __m256 absdist_256(int x0)
{
	__m256i x = _mm256_add_epi32(_mm256_set1_epi32(x0),
				     _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
	return _mm256_cvtepi32_ps(_mm256_abs_epi32(x));
}

#include "attention_kern.h"

int attention_rows(const attn_head *a, int q0, int qn, gemm_isa isa)
{
	if (qn <= 0)
		return 0;
	if (isa != GEMM_AVX512 && isa != GEMM_AVX2)
		isa = gemm_isa_default();
	return isa == GEMM_AVX512 ? attend_512(a, q0, qn) : attend_256(a, q0, qn);
}
