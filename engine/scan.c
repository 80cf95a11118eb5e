/* scan.c — exact top-k inner-product scan (see scan.h for why it is shaped this way).
 * Each task owns a contiguous range of rows and a min-heap of its best k; the kernel scores
 * four rows per pass so that every load of the query feeds four FMAs. */
#include "scan.h"
#include "quant.h"

#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#define XXH_INLINE_ALL
#include <xxhash.h>
#include "xxh_wide.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

static inline float hsum256(__m256 v)
{
	__m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
	lo = _mm_add_ps(lo, hi);
	lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
	lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
	return _mm_cvtss_f32(lo);
}

float scan_dot(const float *a, const float *b, int dim)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
	int i = 0;
	for (; i + 16 <= dim; i += 16) {
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
		s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
	}
	for (; i + 8 <= dim; i += 8)
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
	float s = hsum256(_mm256_add_ps(s0, s1));
	for (; i < dim; i++)
		s += a[i] * b[i];
	return s;
}

/* One row with dot4's arithmetic (one 8-wide accumulator, then the tail), so a row scores
 * the same bit for bit wherever it falls in a task and when rescored (scan_score). */
static float dot1(const float *q, const float *r, int dim)
{
	__m256 s = _mm256_setzero_ps();
	int i = 0;
	for (; i + 8 <= dim; i += 8)
		s = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(r + i), s);
	float x = hsum256(s);
	for (; i < dim; i++)
		x += q[i] * r[i];
	return x;
}

/* Scores rows r[0..4) (each dim floats) against q. */
static void dot4(const float *q, const float *r, int dim, float out[4])
{
	const float *r0 = r, *r1 = r + dim, *r2 = r + 2 * (size_t)dim, *r3 = r + 3 * (size_t)dim;
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
	__m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
	int i = 0;
	for (; i + 8 <= dim; i += 8) {
		__m256 qv = _mm256_loadu_ps(q + i);
		s0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(r0 + i), s0);
		s1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(r1 + i), s1);
		s2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(r2 + i), s2);
		s3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(r3 + i), s3);
	}
	out[0] = hsum256(s0);
	out[1] = hsum256(s1);
	out[2] = hsum256(s2);
	out[3] = hsum256(s3);
	for (; i < dim; i++) {
		out[0] += q[i] * r0[i];
		out[1] += q[i] * r1[i];
		out[2] += q[i] * r2[i];
		out[3] += q[i] * r3[i];
	}
}
#else
float scan_dot(const float *a, const float *b, int dim)
{
	float s = 0;
	for (int i = 0; i < dim; i++)
		s += a[i] * b[i];
	return s;
}

static void dot4(const float *q, const float *r, int dim, float out[4])
{
	for (int j = 0; j < 4; j++)
		out[j] = scan_dot(q, r + (size_t)j * dim, dim);
}

static float dot1(const float *q, const float *r, int dim) { return scan_dot(q, r, dim); }
#endif

/* "a ranks below b": lower score, or equal score and higher row (lower rows win ties, so the
 * result does not depend on how rows were split into tasks). */
static inline int worse(scan_hit a, scan_hit b)
{
	return a.score < b.score || (a.score == b.score && a.row > b.row);
}

typedef struct heap {
	scan_hit *h;
	int n, k;
} heap;

static void heap_push(heap *hp, scan_hit x)
{
	scan_hit *h = hp->h;
	if (hp->n < hp->k) {
		int i = hp->n++;
		while (i > 0) {
			int p = (i - 1) / 2;
			if (!worse(x, h[p]))
				break;
			h[i] = h[p];
			i = p;
		}
		h[i] = x;
		return;
	}
	if (!worse(h[0], x))
		return;
	int i = 0, n = hp->n;
	for (;;) {
		int l = 2 * i + 1, m = i;
		scan_hit best = x;
		if (l < n && worse(h[l], best)) {
			m = l;
			best = h[l];
		}
		if (l + 1 < n && worse(h[l + 1], best))
			m = l + 1;
		if (m == i)
			break;
		h[i] = h[m];
		i = m;
	}
	h[i] = x;
}

typedef struct task {
	size_t b0, b1;       /* blocks [b0, b1) */
	uint32_t r0, r1;     /* first block starts at row offset r0, last ends before r1 */
} task;

typedef struct scan_ctx {
	const scan_block *blocks;
	const task *tasks;
	int dim, k;
	const float *q;
	scan_hit *heaps; /* ntasks * nq * k: task t's heap of query i at (t * nq + i) * k */
	int *counts;     /* ntasks * nq */
	scan_guard *g;   /* may be NULL */
	const scan_cquery *cq; /* compact rows, or NULL: f32 */
	int isa;         /* compact: the kernel level */
	int nq;          /* f32: queries q[0..nq * dim), scored together a run of rows at a time */
} scan_ctx;

/* Records the first failure; later ones (other threads) are dropped. */
static void guard_fail(scan_guard *g, int what, size_t block, uint32_t row, float score)
{
	int none = 0;
	if (__atomic_compare_exchange_n(&g->failed, &none, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		g->bad_block = block;
		g->bad_row = row;
		g->bad_score = score;
		__atomic_store_n(&g->failed, what, __ATOMIC_RELEASE);
	}
}

/* Scores n rows into the heap. With max_abs > 0, returns the index of the first row whose
 * score is NaN or beyond +-max_abs (n when none): the check costs one compare a row, next
 * to a dim-long dot product. */
static uint32_t scan_rows(heap *hp, const float *q, const float *v, uint32_t n, uint32_t first,
			  int dim, float max_abs)
{
	uint32_t i = 0;
	float s[4];
	for (; i + 4 <= n; i += 4) {
		dot4(q, v + (size_t)i * dim, dim, s);
		if (max_abs > 0)
			for (int j = 0; j < 4; j++)
				if (!(s[j] >= -max_abs && s[j] <= max_abs))
					return i + (uint32_t)j;
		for (int j = 0; j < 4; j++)
			if (hp->n < hp->k || s[j] > hp->h[0].score ||
			    (s[j] == hp->h[0].score && first + i + j < hp->h[0].row))
				heap_push(hp, (scan_hit){s[j], first + i + (uint32_t)j});
	}
	for (; i < n; i++) {
		float x = dot1(q, v + (size_t)i * dim, dim);
		if (max_abs > 0 && !(x >= -max_abs && x <= max_abs))
			return i;
		heap_push(hp, (scan_hit){x, first + i});
	}
	return n;
}

/* ---- compact kernels ------------------------------------------------------------------*/

static int isa_i8, isa_bin; /* 0 unresolved, else level + 1; resolved once (a race writes the same value) */
static int isa_i8_mask;     /* bit per int8 level the CPU has: the levels do not nest (AMD's
			     * Zen 4 has AVX-512 VNNI but not the VEX-coded AVX-VNNI) */

static void resolve_isa(void)
{
	unsigned a, b, c, d;
	int i8 = SCAN_ISA_SCALAR, bin = SCAN_ISA_SCALAR, mask = 1 << SCAN_ISA_SCALAR;
	int zmm = -1;
	if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_OSXSAVE)) {
		unsigned lo, hi;
		__asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
		zmm = (lo & 6) != 6 ? -1 : (lo & 0xe6) == 0xe6; /* YMM; opmask and ZMM state enabled by the OS */
	}
	if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
		int f = (b >> 16) & 1, bw = (b >> 30) & 1;
		if (zmm >= 0 && ((b >> 5) & 1)) { /* AVX2 (the build's baseline; checked for ARCH=) */
			i8 = bin = SCAN_ISA_AVX2;
			mask |= 1 << SCAN_ISA_AVX2;
		}
		if (zmm > 0 && f && bw && ((c >> 11) & 1)) {
			i8 = SCAN_ISA_AVX512;
			mask |= 1 << SCAN_ISA_AVX512;
		}
		if (zmm > 0 && f && bw && ((c >> 14) & 1))
			bin = SCAN_ISA_AVX512;
		if (zmm >= 0 && ((b >> 5) & 1) && __get_cpuid_count(7, 1, &a, &b, &c, &d) &&
		    ((a >> 4) & 1)) {
			mask |= 1 << SCAN_ISA_AVX_VNNI;
			if (i8 == SCAN_ISA_AVX2)
				i8 = SCAN_ISA_AVX_VNNI;
		}
	}
	__atomic_store_n(&isa_i8_mask, mask, __ATOMIC_RELAXED);
	__atomic_store_n(&isa_bin, bin + 1, __ATOMIC_RELAXED);
	__atomic_store_n(&isa_i8, i8 + 1, __ATOMIC_RELAXED);
}

int scan_isa_i8_has(int isa)
{
	scan_isa_i8();
	return isa >= 0 && isa <= SCAN_ISA_AVX512 &&
	       ((__atomic_load_n(&isa_i8_mask, __ATOMIC_RELAXED) >> isa) & 1);
}

int scan_isa_i8(void)
{
	if (!__atomic_load_n(&isa_i8, __ATOMIC_RELAXED))
		resolve_isa();
	return __atomic_load_n(&isa_i8, __ATOMIC_RELAXED) - 1;
}

int scan_isa_bin(void)
{
	if (!__atomic_load_n(&isa_bin, __ATOMIC_RELAXED))
		resolve_isa();
	return __atomic_load_n(&isa_bin, __ATOMIC_RELAXED) - 1;
}

const char *scan_kernels(void)
{
	int a = scan_isa_i8(), b = scan_isa_bin();
	/* Eight fixed strings rather than a buffer: nothing to free, nothing shared to write. */
	static const char *combo[4][4] = {
		{"int8 scalar, binary scalar", "int8 scalar, binary AVX2", "int8 scalar, binary AVX2", "int8 scalar, binary AVX-512 VPOPCNTDQ"},
		{"int8 AVX2, binary scalar", "int8 AVX2, binary AVX2", "int8 AVX2, binary AVX2", "int8 AVX2, binary AVX-512 VPOPCNTDQ"},
		{"int8 AVX-VNNI, binary scalar", "int8 AVX-VNNI, binary AVX2", "int8 AVX-VNNI, binary AVX2", "int8 AVX-VNNI, binary AVX-512 VPOPCNTDQ"},
		{"int8 AVX-512 VNNI, binary scalar", "int8 AVX-512 VNNI, binary AVX2", "int8 AVX-512 VNNI, binary AVX2", "int8 AVX-512 VNNI, binary AVX-512 VPOPCNTDQ"},
	};
	return combo[a][b];
}

static void i8_scalar(const uint8_t *rows, size_t n, int dim, const int8_t *q, int32_t *out)
{
	for (size_t i = 0; i < n; i++) {
		const uint8_t *r = rows + i * (size_t)dim;
		int32_t s = 0;
		for (int d = 0; d < dim; d++)
			s += (int32_t)r[d] * q[d];
		out[i] = s;
	}
}

__attribute__((target("avx2")))
static inline int32_t hsum_epi32(__m256i v)
{
	__m128i x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
	x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4e));
	x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xb1));
	return _mm_cvtsi128_si32(x);
}

/* AVX2: 16 bytes at a time widened to 16 bits (u8 x s8 products would saturate VPMADDUBSW's
 * 16-bit sums), VPMADDWD into 32 bits. */
__attribute__((target("avx2")))
static void i8_avx2(const uint8_t *rows, size_t n, int dim, const int8_t *q, int32_t *out)
{
	for (size_t i = 0; i < n; i++) {
		const uint8_t *r = rows + i * (size_t)dim;
		__m256i acc = _mm256_setzero_si256();
		int d = 0;
		for (; d + 16 <= dim; d += 16) {
			__m256i a = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(r + d)));
			__m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + d)));
			acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
		}
		int32_t s = hsum_epi32(acc);
		for (; d < dim; d++)
			s += (int32_t)r[d] * q[d];
		out[i] = s;
	}
}

/* AVX-VNNI: VPDPBUSD on 256 bits, two rows a pass (each query load feeds both). */
__attribute__((target("avx2,avxvnni")))
static void i8_avxvnni(const uint8_t *rows, size_t n, int dim, const int8_t *q, int32_t *out)
{
	size_t i = 0;
	for (; i + 2 <= n; i += 2) {
		const uint8_t *r0 = rows + i * (size_t)dim, *r1 = r0 + dim;
		__m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
		int d = 0;
		for (; d + 32 <= dim; d += 32) {
			__m256i qv = _mm256_loadu_si256((const __m256i *)(q + d));
			a0 = _mm256_dpbusd_avx_epi32(a0, _mm256_loadu_si256((const __m256i *)(r0 + d)), qv);
			a1 = _mm256_dpbusd_avx_epi32(a1, _mm256_loadu_si256((const __m256i *)(r1 + d)), qv);
		}
		int32_t s0 = hsum_epi32(a0), s1 = hsum_epi32(a1);
		for (; d < dim; d++) {
			s0 += (int32_t)r0[d] * q[d];
			s1 += (int32_t)r1[d] * q[d];
		}
		out[i] = s0;
		out[i + 1] = s1;
	}
	if (i < n)
		i8_avx2(rows + i * (size_t)dim, n - i, dim, q, out + i);
}

/* The four rows' sums of a0..a3 in one vector (three VPHADDD instead of four reductions). */
__attribute__((target("avx512f,avx512bw")))
static inline __m128i reduce4(__m512i a0, __m512i a1, __m512i a2, __m512i a3)
{
	__m256i b0 = _mm256_add_epi32(_mm512_castsi512_si256(a0), _mm512_extracti64x4_epi64(a0, 1));
	__m256i b1 = _mm256_add_epi32(_mm512_castsi512_si256(a1), _mm512_extracti64x4_epi64(a1, 1));
	__m256i b2 = _mm256_add_epi32(_mm512_castsi512_si256(a2), _mm512_extracti64x4_epi64(a2, 1));
	__m256i b3 = _mm256_add_epi32(_mm512_castsi512_si256(a3), _mm512_extracti64x4_epi64(a3, 1));
	__m256i d = _mm256_hadd_epi32(_mm256_hadd_epi32(b0, b1), _mm256_hadd_epi32(b2, b3));
	return _mm_add_epi32(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1));
}

/* AVX-512 VNNI: VPDPBUSD on 512 bits, four rows a pass, the tail by a masked load. */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void i8_avx512(const uint8_t *rows, size_t n, int dim, const int8_t *q, int32_t *out)
{
	int full = dim & ~63;
	__mmask64 tm = (dim & 63) ? (~0ULL >> (64 - (dim & 63))) : 0;
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		const uint8_t *r0 = rows + i * (size_t)dim, *r1 = r0 + dim, *r2 = r1 + dim, *r3 = r2 + dim;
		__m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
		for (int d = 0; d < full; d += 64) {
			__m512i qv = _mm512_loadu_si512(q + d);
			a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(r0 + d), qv);
			a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512(r1 + d), qv);
			a2 = _mm512_dpbusd_epi32(a2, _mm512_loadu_si512(r2 + d), qv);
			a3 = _mm512_dpbusd_epi32(a3, _mm512_loadu_si512(r3 + d), qv);
		}
		if (tm) {
			__m512i qv = _mm512_maskz_loadu_epi8(tm, q + full);
			a0 = _mm512_dpbusd_epi32(a0, _mm512_maskz_loadu_epi8(tm, r0 + full), qv);
			a1 = _mm512_dpbusd_epi32(a1, _mm512_maskz_loadu_epi8(tm, r1 + full), qv);
			a2 = _mm512_dpbusd_epi32(a2, _mm512_maskz_loadu_epi8(tm, r2 + full), qv);
			a3 = _mm512_dpbusd_epi32(a3, _mm512_maskz_loadu_epi8(tm, r3 + full), qv);
		}
		_mm_storeu_si128((__m128i *)(out + i), reduce4(a0, a1, a2, a3));
	}
	for (; i < n; i++) {
		const uint8_t *r = rows + i * (size_t)dim;
		__m512i a = _mm512_setzero_si512();
		for (int d = 0; d < full; d += 64)
			a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512(r + d), _mm512_loadu_si512(q + d));
		if (tm)
			a = _mm512_dpbusd_epi32(a, _mm512_maskz_loadu_epi8(tm, r + full),
						_mm512_maskz_loadu_epi8(tm, q + full));
		out[i] = _mm512_reduce_add_epi32(a);
	}
}

void scan_i8_dots_at(int isa, const uint8_t *rows, size_t n, int dim, const int8_t *q, int32_t *out)
{
	if (isa >= SCAN_ISA_AVX512)
		i8_avx512(rows, n, dim, q, out);
	else if (isa == SCAN_ISA_AVX_VNNI)
		i8_avxvnni(rows, n, dim, q, out);
	else if (isa == SCAN_ISA_AVX2)
		i8_avx2(rows, n, dim, q, out);
	else
		i8_scalar(rows, n, dim, q, out);
}

static int32_t popc_bytes(const uint8_t *a, const uint8_t *b, int n)
{
	int32_t s = 0;
	int i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t x, y;
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		s += __builtin_popcountll(x ^ y);
	}
	for (; i < n; i++)
		s += __builtin_popcount((unsigned)(a[i] ^ b[i]));
	return s;
}

static void bin_scalar(const uint8_t *rows, size_t n, int nb, const uint8_t *q, int32_t *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = popc_bytes(rows + i * (size_t)nb, q, nb);
}

/* AVX2 has no vector popcount: count nibbles by table (VPSHUFB), sum bytes with VPSADBW. */
__attribute__((target("avx2")))
static void bin_avx2(const uint8_t *rows, size_t n, int nb, const uint8_t *q, int32_t *out)
{
	const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
					     0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
	const __m256i low = _mm256_set1_epi8(0x0f);
	int full = nb & ~31;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *r = rows + i * (size_t)nb;
		__m256i acc = _mm256_setzero_si256();
		for (int d = 0; d < full; d += 32) {
			__m256i x = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(r + d)),
						     _mm256_loadu_si256((const __m256i *)(q + d)));
			__m256i c = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, low)),
						    _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), low)));
			acc = _mm256_add_epi64(acc, _mm256_sad_epu8(c, _mm256_setzero_si256()));
		}
		__m128i s = _mm_add_epi64(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
		s = _mm_add_epi64(s, _mm_unpackhi_epi64(s, s));
		out[i] = (int32_t)_mm_cvtsi128_si64(s) + popc_bytes(r + full, q + full, nb - full);
	}
}

/* 48-byte rows (384-d, the default model's): four rows are three full 64-byte loads against
 * the query repeated, and their 24 qword counts become four row sums with six permutes and
 * one shuffle, where the row-at-a-time loop below pays a masked load and a full horizontal
 * reduction a row. */
__attribute__((target("avx512f,avx512bw,avx512vpopcntdq")))
static size_t bin_avx512_48(const uint8_t *rows, size_t n, const uint8_t *q, int32_t *out)
{
	uint8_t qq[192];
	for (int i = 0; i < 4; i++)
		memcpy(qq + 48 * i, q, 48);
	const __m512i q0 = _mm512_loadu_si512(qq), q1 = _mm512_loadu_si512(qq + 64),
		      q2 = _mm512_loadu_si512(qq + 128);
	/* lane l of sum m: count 3l + m of the 24 (counts 0-15 in c0, c1; 16-23 in c2) */
	const __m512i lo0 = _mm512_setr_epi64(0, 3, 6, 9, 12, 15, 0, 0), hi0 = _mm512_setr_epi64(0, 0, 0, 0, 0, 0, 2, 5);
	const __m512i lo1 = _mm512_setr_epi64(1, 4, 7, 10, 13, 0, 0, 0), hi1 = _mm512_setr_epi64(0, 0, 0, 0, 0, 0, 3, 6);
	const __m512i lo2 = _mm512_setr_epi64(2, 5, 8, 11, 14, 0, 0, 0), hi2 = _mm512_setr_epi64(0, 0, 0, 0, 0, 1, 4, 7);
	const __m512i pick = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		const uint8_t *r = rows + i * 48;
		__m512i c0 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(r), q0));
		__m512i c1 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(r + 64), q1));
		__m512i c2 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(r + 128), q2));
		__m512i s0 = _mm512_mask_permutexvar_epi64(_mm512_permutex2var_epi64(c0, lo0, c1), 0xC0, hi0, c2);
		__m512i s1 = _mm512_mask_permutexvar_epi64(_mm512_permutex2var_epi64(c0, lo1, c1), 0xE0, hi1, c2);
		__m512i s2 = _mm512_mask_permutexvar_epi64(_mm512_permutex2var_epi64(c0, lo2, c1), 0xE0, hi2, c2);
		__m512i h = _mm512_add_epi64(_mm512_add_epi64(s0, s1), s2); /* lanes 2r, 2r + 1: row r's halves */
		__m512i t = _mm512_add_epi64(h, _mm512_shuffle_epi32(h, _MM_PERM_BADC));
		_mm_storeu_si128((__m128i *)(out + i), _mm512_castsi512_si128(_mm512_permutexvar_epi32(pick, t)));
	}
	return i;
}

/* AVX-512 VPOPCNTDQ: 64 bytes a step, the tail by a masked load. */
__attribute__((target("avx512f,avx512bw,avx512vpopcntdq")))
static void bin_avx512(const uint8_t *rows, size_t n, int nb, const uint8_t *q, int32_t *out)
{
	if (nb == 48) {
		size_t done = bin_avx512_48(rows, n, q, out);
		rows += done * 48;
		n -= done;
		out += done;
	}
	int full = nb & ~63;
	__mmask64 tm = (nb & 63) ? (~0ULL >> (64 - (nb & 63))) : 0;
	__m512i qt = _mm512_maskz_loadu_epi8(tm, q + full);
	for (size_t i = 0; i < n; i++) {
		const uint8_t *r = rows + i * (size_t)nb;
		__m512i acc = _mm512_setzero_si512();
		for (int d = 0; d < full; d += 64)
			acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(
				_mm512_loadu_si512(r + d), _mm512_loadu_si512(q + d))));
		if (tm)
			acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(
				_mm512_maskz_loadu_epi8(tm, r + full), qt)));
		out[i] = (int32_t)_mm512_reduce_add_epi64(acc);
	}
}

void scan_bin_at(int isa, const uint8_t *rows, size_t n, int nbytes, const uint8_t *q, int32_t *out)
{
	if (isa >= SCAN_ISA_AVX512)
		bin_avx512(rows, n, nbytes, q, out);
	else if (isa >= SCAN_ISA_AVX2)
		bin_avx2(rows, n, nbytes, q, out);
	else
		bin_scalar(rows, n, nbytes, q, out);
}

void scan_i8_query(const float *q, int dim, const float *scales, int8_t *q8, int32_t *bias,
		   float *qs)
{
	/* quant_i8_query's arithmetic lane by lane: p = q * scale, m = max |p|, s = m / 127
	 * (1 when m is 0), code = round-to-nearest-even(p * (1 / s)) clamped to +-127. */
	const __m256 sign = _mm256_set1_ps(-0.0f);
	__m256 mv = _mm256_setzero_ps();
	int d = 0;
	for (; d + 8 <= dim; d += 8)
		mv = _mm256_max_ps(mv, _mm256_andnot_ps(sign, _mm256_mul_ps(_mm256_loadu_ps(q + d),
									    _mm256_loadu_ps(scales + d))));
	__m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
	m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
	m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
	float m = _mm_cvtss_f32(m4);
	for (int i = d; i < dim; i++) {
		float x = fabsf(q[i] * scales[i]);
		m = x > m ? x : m;
	}
	float sc = m > 0 ? m / 127.0f : 1.0f, inv = 1.0f / sc;
	const __m256 iv = _mm256_set1_ps(inv), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
	__m256i sum = _mm256_setzero_si256();
	for (d = 0; d + 16 <= dim; d += 16) {
		__m256 c0 = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(scales + d)), iv);
		__m256 c1 = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(q + d + 8), _mm256_loadu_ps(scales + d + 8)), iv);
		__m256i v0 = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(c0, hi), lo));
		__m256i v1 = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(c1, hi), lo));
		sum = _mm256_add_epi32(sum, _mm256_add_epi32(v0, v1));
		/* 16 int32 -> 16 int8 (all within +-127: no saturation); packs work per 128-bit lane */
		__m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(v0, v1), 0xd8);
		__m128i b8 = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
		_mm_storeu_si128((__m128i *)(q8 + d), b8);
	}
	int32_t total = hsum_epi32(sum);
	for (; d < dim; d++) {
		float c = q[d] * scales[d] * inv;
		c = c > 127.0f ? 127.0f : c < -127.0f ? -127.0f : c;
		int v = c == c ? (int)lrintf(c) : 0;
		q8[d] = (int8_t)v;
		total += v;
	}
	*bias = 128 * total;
	*qs = sc;
}

/* Compact scores are increasing (int8) or decreasing (binary) functions of the kernel's raw
 * integer, so "could this row enter the heap" is one integer compare against the raw value
 * of the heap's worst score; only rows that pass are scored in floats (most of a scan's rows
 * never pass once the heap is full). */
static inline float compact_score(const scan_cquery *cq, int32_t raw, float inv)
{
	return cq->kind == QUANT_INT8 ? cq->scale * (float)(raw - cq->bias) : 1.0f - 2.0f * (float)raw * inv;
}

/* int8: the largest raw whose score is <= worst (rows at or below it cannot enter); binary:
 * the smallest raw whose score is <= worst. Found from an estimate and moved to the exact
 * integer with the score function itself, so rounding cannot drop a row. */
static int32_t compact_cut(const scan_cquery *cq, float worst, float inv)
{
	if (cq->kind == QUANT_INT8) {
		double e = (double)worst / (double)cq->scale + (double)cq->bias;
		if (!(e > -2e9 && e < 2e9)) /* a damaged block's scale: no cut, its check fails */
			return INT32_MIN;
		int32_t r = (int32_t)floor(e);
		for (int i = 0; i < 4 && compact_score(cq, r, inv) > worst; i++)
			r--;
		if (compact_score(cq, r, inv) > worst)
			return INT32_MIN;
		for (int i = 0; i < 4 && r < INT32_MAX - 1 && compact_score(cq, r + 1, inv) <= worst; i++)
			r++;
		return r;
	}
	int32_t r = (int32_t)((1.0 - (double)worst) * cq->dim / 2);
	if (r < 0)
		r = 0;
	while (r > 0 && compact_score(cq, r - 1, inv) <= worst)
		r--;
	while (compact_score(cq, r, inv) > worst && r <= cq->dim)
		r++;
	return r;
}

/* Binary codes against a group of up to 16 queries at once (AVX-512 VPOPCNTDQ; row bytes a
 * multiple of 4, at most 256): lane j of one vector holds query j's Hamming distance, summed
 * a dword of the row at a time (the dword broadcast, XORed with the 16 queries' dwords), so a
 * row costs rowb/4 XOR-popcount-adds and one compare with the 16 queries' cuts for all of
 * them, where compact_rows pays each query the row's reduction and its own cut (32 queries
 * x 1M rows: 1.7x their one-at-a-time scans that way, docs/bench-scan.md). Each query's heap
 * is offered the rows in row order with the same exact test as compact_rows, so the heaps
 * come out the same; a stale cut only lets more rows reach that test, so the cuts are renewed
 * every 64 rows rather than at each push, as compact_rows renews its own. */
__attribute__((target("avx512f,avx512bw,avx512vpopcntdq")))
static void bin_rows_q16(heap *hps, const scan_cquery *cq, int nq, const uint8_t *rows, uint32_t n,
			 uint32_t first, size_t rowb)
{
	const int nw = (int)(rowb / 4);
	const float inv = 1.0f / (float)cq->dim;
	__m512i qt[64];
	for (int w = 0; w < nw; w++) {
		int32_t lanes[16] = {0};
		for (int j = 0; j < nq; j++)
			memcpy(&lanes[j], cq[j].bits + 4 * w, 4);
		qt[w] = _mm512_loadu_si512(lanes);
	}
	int32_t cuts[16];
	for (int j = 0; j < 16; j++)
		cuts[j] = j >= nq ? INT32_MIN
			  : hps[j].n == hps[j].k ? compact_cut(cq + j, hps[j].h[0].score, inv) : INT32_MAX;
	__m512i cutv = _mm512_loadu_si512(cuts);
	uint32_t dirty = 0; /* queries whose worst kept score rose: cuts renewed every 64 rows */
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *r = rows + (size_t)i * rowb;
		/* two sums, so that the adds of one row are not one chain; 384 bits (12 dwords,
		 * all-MiniLM-L6-v2 and the other 384-d models) unrolled */
		__m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
#define BIN_Q16_STEP(w, acc)                                                                     \
	do {                                                                                     \
		int32_t d_;                                                                      \
		memcpy(&d_, r + 4 * (w), 4);                                                     \
		acc = _mm512_add_epi32(acc, _mm512_popcnt_epi32(_mm512_xor_si512(                \
						_mm512_set1_epi32(d_), qt[w])));                  \
	} while (0)
		if (nw == 12) {
			BIN_Q16_STEP(0, a0); BIN_Q16_STEP(1, a1); BIN_Q16_STEP(2, a0); BIN_Q16_STEP(3, a1);
			BIN_Q16_STEP(4, a0); BIN_Q16_STEP(5, a1); BIN_Q16_STEP(6, a0); BIN_Q16_STEP(7, a1);
			BIN_Q16_STEP(8, a0); BIN_Q16_STEP(9, a1); BIN_Q16_STEP(10, a0); BIN_Q16_STEP(11, a1);
		} else {
			int w = 0;
			for (; w + 2 <= nw; w += 2) {
				BIN_Q16_STEP(w, a0);
				BIN_Q16_STEP(w + 1, a1);
			}
			if (w < nw)
				BIN_Q16_STEP(w, a0);
		}
#undef BIN_Q16_STEP
		const __m512i acc = _mm512_add_epi32(a0, a1);
		__mmask16 m = _mm512_cmplt_epi32_mask(acc, cutv);
		if (!m)
			continue;
		int32_t raw[16];
		_mm512_storeu_si512(raw, acc);
		while (m) {
			int j = __builtin_ctz(m);
			m &= (__mmask16)(m - 1);
			heap *hp = &hps[j];
			float s = compact_score(cq + j, raw[j], inv);
			if (hp->n < hp->k || s > hp->h[0].score) {
				heap_push(hp, (scan_hit){s, first + i});
				dirty |= (uint32_t)(hp->n == hp->k) << j;
			}
		}
		if (dirty && (i & 63) == 63) {
			for (; dirty; dirty &= dirty - 1) {
				int j = __builtin_ctz(dirty);
				cuts[j] = compact_cut(cq + j, hps[j].h[0].score, inv);
			}
			cutv = _mm512_loadu_si512(cuts);
		}
	}
}

/* Scores n compact rows into the heap, 64 at a time through the kernel. */
static void compact_rows(heap *hp, const scan_cquery *cq, int isa, const uint8_t *rows,
			 uint32_t n, uint32_t first, size_t rowb)
{
	int32_t raw[64] = {0}; /* the cut reads all 64 lanes; those past a short run stay 0, masked out */
	float inv = 1.0f / (float)cq->dim;
	int i8 = cq->kind == QUANT_INT8;
	for (uint32_t i = 0; i < n; i += 64) {
		uint32_t m = n - i < 64 ? n - i : 64;
		const uint8_t *r = rows + (size_t)i * rowb;
		if (i8)
			scan_i8_dots_at(isa, r, m, cq->dim, cq->q8, raw);
		else
			scan_bin_at(isa, r, m, (int)rowb, cq->bits, raw);
		uint64_t pass = m == 64 ? ~0ULL : (1ULL << m) - 1;
		if (hp->n == hp->k) {
			/* Rows that cannot beat the worst kept score, 8 at a time. */
			int32_t cut = compact_cut(cq, hp->h[0].score, inv);
			__m256i cv = _mm256_set1_epi32(cut);
			uint64_t keep = 0;
			for (uint32_t j = 0; j < 64; j += 8) {
				__m256i x = _mm256_loadu_si256((const __m256i *)(raw + j));
				__m256i gt = i8 ? _mm256_cmpgt_epi32(x, cv) : _mm256_cmpgt_epi32(cv, x);
				keep |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(gt)) << j;
			}
			pass &= keep;
		}
		while (pass) {
			uint32_t j = (uint32_t)__builtin_ctzll(pass);
			pass &= pass - 1;
			float s = compact_score(cq, raw[j], inv);
			if (hp->n < hp->k || s > hp->h[0].score)
				heap_push(hp, (scan_hit){s, first + i + j});
		}
	}
}

/* xxh_wide_ok(), once (a race writes the same value): the AVX-512 XXH3 streams blocks from
 * memory faster (1M-row binary scan: 5.39 vs 5.65 ms of CPU, docs/bench-scan.md). */
static int wide = -1;

/* 1 when block bl's checked bytes match their checksum trailer. */
static int block_sound(const scan_ctx *c, const scan_block *bl, size_t rowb)
{
	const void *data = bl->sum_data ? bl->sum_data : c->cq ? (const void *)bl->codes : (const void *)bl->vecs;
	size_t len = bl->sum_data ? bl->sum_len : bl->nrows * rowb;
	/* The trailer is read after the hash has streamed up to it: read first, its cache miss
	 * stalled every block (a third of a binary scan's CPU time at 1M rows). */
	uint64_t got = __atomic_load_n(&wide, __ATOMIC_RELAXED) > 0 ? xxh_wide(data, len, bl->seed)
								 : XXH3_64bits_withSeed(data, len, bl->seed);
	uint64_t want;
	memcpy(&want, (const char *)data + len, sizeof want);
	return got == want;
}

/* Scores rows [lo, hi) of compact block bl into the task's heap hp (one query) or heaps
 * hps (c->nq queries). Blocks with their own int8 scales have the queries coded against
 * them (into bq, codes at bq8: scan_task allocates them for such queries), again at each
 * new set of scales (scale_rows); other blocks are scored with the queries as given. */
static void compact_block(const scan_ctx *c, const scan_block *bl, uint32_t lo, uint32_t hi, heap *hp,
			  heap *hps, scan_cquery *bq, int8_t *bq8)
{
	size_t rowb = quant_row_bytes((quant_type)c->cq->kind, c->dim);
	for (uint32_t r0 = lo, r1; r0 < hi; r0 = r1) {
		const scan_cquery *cq = c->cq;
		r1 = hi;
		if (bl->scales && cq->qf) {
			const float *scales = bl->scales;
			if (bl->scale_rows) {
				uint32_t set = r0 / bl->scale_rows;
				scales += (size_t)set * c->dim;
				if ((set + 1) * bl->scale_rows < hi)
					r1 = (set + 1) * bl->scale_rows;
			}
			for (int i = 0; i < c->nq; i++) {
				bq[i] = cq[i];
				if (cq[i].qf) {
					int8_t *q8 = bq8 + (size_t)i * ((size_t)c->dim + 64);
					scan_i8_query(cq[i].qf, c->dim, scales, q8, &bq[i].bias, &bq[i].scale);
					bq[i].q8 = q8;
				}
			}
			cq = bq;
		}
		const uint8_t *codes = bl->codes;
		uint32_t first = bl->first_row;
		if (hps && cq->kind == QUANT_BINARY && c->isa >= SCAN_ISA_AVX512 && rowb % 4 == 0 &&
		    rowb <= 256) {
			/* Many binary queries, 16 a pass over each 1,024-row run (48 KB at 384 bits,
			 * read from L2 by the passes after the first). */
			for (uint32_t r = r0; r < r1; r += 1024) {
				uint32_t n = r1 - r < 1024 ? r1 - r : 1024;
				for (int g = 0; g < c->nq; g += 16)
					bin_rows_q16(hps + g, cq + g, c->nq - g < 16 ? c->nq - g : 16,
						     codes + (size_t)r * rowb, n, first + r, rowb);
			}
		} else if (hps) {
			/* Many compact queries: each 64-row run scored by all of them while in cache. */
			for (uint32_t r = r0; r < r1; r += 64) {
				uint32_t n = r1 - r < 64 ? r1 - r : 64;
				for (int i = 0; i < c->nq; i++)
					compact_rows(&hps[i], cq + i, c->isa, codes + (size_t)r * rowb, n, first + r,
						     rowb);
			}
		} else {
			compact_rows(hp, cq, c->isa, codes + (size_t)r0 * rowb, r1 - r0, first + r0, rowb);
		}
	}
}

static void scan_task(void *arg, int t)
{
	scan_ctx *c = arg;
	const task *tk = &c->tasks[t];
	scan_guard *g = c->g;
	float max_abs = g ? g->max_abs : 0;
	heap hp = {c->heaps + (size_t)t * c->nq * c->k, 0, c->k};
	heap *hps = NULL;
	/* Blocks with their own int8 scales: each query coded again for each block, here. */
	scan_cquery *bq = NULL;
	int8_t *bq8 = NULL;
	if (c->nq > 1 || (c->cq && c->cq->kind == QUANT_INT8 && c->cq->qf)) {
		hps = malloc((size_t)c->nq * sizeof *hps);
		bq = malloc((size_t)c->nq * sizeof *bq);
		bq8 = malloc((size_t)c->nq * ((size_t)c->dim + 64));
		if (!hps || !bq || !bq8) { /* reported as damage would be wrong: fail the scan as out of memory */
			free(hps);
			free(bq);
			free(bq8);
			guard_fail(c->g, SCAN_BAD_BLOCK, (size_t)-1, 0, 0);
			return;
		}
		for (int i = 0; i < c->nq; i++)
			hps[i] = (heap){c->heaps + ((size_t)t * c->nq + i) * c->k, 0, c->k};
	}
	size_t rowb = c->cq ? quant_row_bytes((quant_type)c->cq->kind, c->dim) : (size_t)c->dim * sizeof(float);
	/* Each block is hashed just before it is scored, so the scoring reads it from L2 (f32
	 * rows and sign bits: the kernels stream memory slower than XXH3 does; binary at 1M rows,
	 * 2 threads, 9.8 ms of CPU hashing first, 12.2 hashing after). The exception is int8
	 * codes where only the scalar XXH3 runs: it streams memory slower than the VNNI kernel
	 * (60 against 43 ms of CPU at 1M rows), so the block is scored first and hashed from L2.
	 * With the AVX-512 XXH3 hashing first is faster for int8 too (AMD EPYC, 300 searches of
	 * 1M rows: 16.5-17.9 against 22.4-24.8 ms; docs/bench-scan.md). */
	if (__atomic_load_n(&wide, __ATOMIC_RELAXED) < 0)
		__atomic_store_n(&wide, xxh_wide_ok(), __ATOMIC_RELAXED);
	int hash_first = !c->cq || c->cq->kind != QUANT_INT8 || __atomic_load_n(&wide, __ATOMIC_RELAXED) > 0;
	for (size_t b = tk->b0; b < tk->b1; b++) {
		const scan_block *bl = &c->blocks[b];
		uint32_t lo = b == tk->b0 ? tk->r0 : 0;
		uint32_t hi = b + 1 == tk->b1 ? tk->r1 : bl->nrows;
		if (g && __atomic_load_n(&g->failed, __ATOMIC_RELAXED))
			break;
		/* The task holding a block's first row verifies all of it (a block split between
		 * two tasks is read once more: at most one block a task), in one pass just before
		 * scoring, which then reads the block from L2, or for int8 codes just after. */
		int check = g && g->checksums && lo == 0;
		if (check && hash_first && !block_sound(c, bl, rowb)) {
			guard_fail(g, SCAN_BAD_BLOCK, b, 0, 0);
			break;
		}
		if (hi > lo && c->cq) {
			compact_block(c, bl, lo, hi, &hp, hps, bq, bq8);
		} else if (hi > lo && hps) {
			/* Many queries: a run of rows stays in L1/L2 while every query scores it, so
			 * memory delivers each row once a batch, not once a query. */
			uint32_t bad = 0, badq = 0;
			for (uint32_t r = lo; r < hi && !bad; r += 32) {
				uint32_t n = hi - r < 32 ? hi - r : 32;
				const float *v = bl->vecs + (size_t)r * c->dim;
				for (int i = 0; i < c->nq; i++) {
					uint32_t x = scan_rows(&hps[i], c->q + (size_t)i * c->dim, v, n,
							       bl->first_row + r, c->dim, max_abs);
					if (x < n) {
						bad = r + x + 1;
						badq = (uint32_t)i;
						break;
					}
				}
			}
			if (bad) {
				guard_fail(g, SCAN_BAD_SCORE, b, bl->first_row + bad - 1,
					   scan_dot(c->q + (size_t)badq * c->dim,
						    bl->vecs + (size_t)(bad - 1) * c->dim, c->dim));
				break;
			}
		} else if (hi > lo) {
			const float *v = bl->vecs + (size_t)lo * c->dim;
			uint32_t bad = scan_rows(&hp, c->q, v, hi - lo, bl->first_row + lo, c->dim, max_abs);
			if (bad < hi - lo) {
				guard_fail(g, SCAN_BAD_SCORE, b, bl->first_row + lo + bad,
					   scan_dot(c->q, v + (size_t)bad * c->dim, c->dim));
				break;
			}
		}
		if (check && !hash_first && !block_sound(c, bl, rowb)) {
			guard_fail(g, SCAN_BAD_BLOCK, b, 0, 0);
			break;
		}
	}
	free(bq);
	free(bq8);
	if (hps) {
		for (int i = 0; i < c->nq; i++)
			c->counts[(size_t)t * c->nq + i] = hps[i].n;
		free(hps);
	} else {
		c->counts[t] = hp.n;
	}
}

static int cmp_hit_desc(const void *a, const void *b)
{
	scan_hit x = *(const scan_hit *)a, y = *(const scan_hit *)b;
	if (worse(x, y))
		return 1;
	if (worse(y, x))
		return -1;
	return 0;
}

float scan_score(const float *q, const float *row, int dim) { return dot1(q, row, dim); }

int scan_topk(const scan_block *blocks, size_t nblocks, int dim, const float *q, int k,
	      threadpool *pool, scan_hit *out, int *nout, emb_err *err)
{
	return scan_topk_guarded(blocks, nblocks, dim, q, k, pool, NULL, out, nout, err);
}

static int topk_run(const scan_block *blocks, size_t nblocks, int dim, const float *q, int nq,
		    const scan_cquery *cq, int k, threadpool *pool, scan_guard *g, scan_hit *out,
		    int *nout, emb_err *err)
{
	scan_guard own = {0};
	if (nq > 1 && !g)
		g = &own; /* a task out of memory reports through it */
	for (int i = 0; i < nq; i++)
		nout[i] = 0;
	*nout = 0;
	if (g)
		g->failed = 0;
	if (k < 1 || dim < 1)
		return emb_errf(err, EMB_EINVAL, "scan: k (%d) and dim (%d) must be >= 1", k, dim);
	uint64_t total = 0;
	for (size_t b = 0; b < nblocks; b++)
		total += blocks[b].nrows;
	if (total == 0)
		return EMB_OK;

	/* Enough tasks to balance uneven threads, few enough that each reads a long run
	 * (>= 4096 rows) and merging the heaps stays cheap. Many binary queries take one task
	 * a thread: each task fills nq heaps from empty, which there costs more than the rows'
	 * scoring (300 binary queries x 1M rows: 0.24-0.20 s with four tasks a thread, 0.20
	 * with two, 0.16 with one; f32 and int8 batches alike at all three, docs/bench-scan.md). */
	int nthreads = threadpool_size(pool);
	uint64_t want = (uint64_t)nthreads * (nq > 1 && cq && cq->kind == QUANT_BINARY ? 1 : 4);
	uint64_t by_size = total / 4096 + 1;
	int ntasks = (int)(want < by_size ? want : by_size);
	uint64_t per = (total + (uint64_t)ntasks - 1) / (uint64_t)ntasks;

	task *tasks = calloc((size_t)ntasks, sizeof *tasks);
	scan_hit *heaps = malloc((size_t)ntasks * (size_t)nq * (size_t)k * sizeof *heaps);
	int *counts = calloc((size_t)ntasks * (size_t)nq, sizeof *counts);
	if (!tasks || !heaps || !counts) {
		free(tasks);
		free(heaps);
		free(counts);
		return emb_errf(err, EMB_ENOMEM, "scan: out of memory for %d heaps of %d", ntasks, k);
	}
	/* Cut the row sequence into ntasks runs of ~per rows, possibly splitting blocks; with at
	 * least 8 blocks a task, only between blocks (a split block is hashed whole by one task
	 * and read again by the next: with a binary store's 4,096-row groups that is up to a
	 * 192 KB value more a task). */
	int t = 0;
	size_t b = 0;
	uint32_t off = 0;
	if (nblocks >= (size_t)ntasks * 8) {
		uint64_t done = 0;
		for (; t < ntasks && b < nblocks; t++) {
			tasks[t].b0 = b;
			tasks[t].r0 = 0;
			uint64_t goal = total * (uint64_t)(t + 1) / (uint64_t)ntasks;
			while (b < nblocks && (done < goal || b == tasks[t].b0))
				done += blocks[b++].nrows;
			tasks[t].b1 = b;
			tasks[t].r1 = blocks[b - 1].nrows;
		}
		b = nblocks; /* all assigned: the loop below is skipped */
	}
	while (t < ntasks && b < nblocks) {
		tasks[t].b0 = b;
		tasks[t].r0 = off;
		uint64_t need = per;
		while (b < nblocks) {
			uint64_t left = blocks[b].nrows - off;
			if (left > need) {
				off += (uint32_t)need;
				break;
			}
			need -= left;
			b++;
			off = 0;
			if (need == 0)
				break;
		}
		if (off) {
			tasks[t].b1 = b + 1;
			tasks[t].r1 = off;
		} else {
			tasks[t].b1 = b;
			tasks[t].r1 = b > 0 ? blocks[b - 1].nrows : 0;
		}
		t++;
	}
	ntasks = t;

	scan_ctx c = {blocks, tasks, dim, k, q, heaps, counts, g, cq,
		      cq ? (cq->kind == QUANT_INT8 ? scan_isa_i8() : scan_isa_bin()) : 0, nq};
	threadpool_run(pool, scan_task, &c, ntasks);
	if (g && g->failed) {
		free(tasks);
		free(heaps);
		free(counts);
		if (g->failed == SCAN_BAD_BLOCK && g->bad_block == (size_t)-1) {
			g->failed = 0;
			return emb_errf(err, EMB_ENOMEM, "scan: out of memory");
		}
		if (g->failed == SCAN_BAD_BLOCK)
			return emb_errf(err, EMB_ESTORE, "scan: block %zu fails its check", g->bad_block);
		return emb_errf(err, EMB_ESTORE, "scan: row %u scores %g, outside [-%g, %g]",
				g->bad_row, g->bad_score, g->max_abs, g->max_abs);
	}

	/* Merge, query by query: gather every task's heap, sort, keep k. */
	scan_hit *all = nq > 1 ? malloc((size_t)ntasks * (size_t)k * sizeof *all) : heaps;
	if (!all) {
		free(tasks);
		free(heaps);
		free(counts);
		return emb_errf(err, EMB_ENOMEM, "scan: out of memory");
	}
	for (int qi = 0; qi < nq; qi++) {
		size_t n = 0;
		for (int i = 0; i < ntasks; i++) {
			size_t at = ((size_t)i * nq + qi) * k, cnt = (size_t)counts[(size_t)i * nq + qi];
			memmove(all + n, heaps + at, cnt * sizeof *heaps);
			n += cnt;
		}
		qsort(all, n, sizeof *all, cmp_hit_desc);
		if (n > (size_t)k)
			n = (size_t)k;
		memcpy(out + (size_t)qi * k, all, n * sizeof *out);
		nout[qi] = (int)n;
	}
	if (all != heaps)
		free(all);
	free(tasks);
	free(heaps);
	free(counts);
	return EMB_OK;
}

int scan_topk_guarded(const scan_block *blocks, size_t nblocks, int dim, const float *q, int k,
		      threadpool *pool, scan_guard *g, scan_hit *out, int *nout, emb_err *err)
{
	return topk_run(blocks, nblocks, dim, q, 1, NULL, k, pool, g, out, nout, err);
}

int scan_topk_multi(const scan_block *blocks, size_t nblocks, int dim, const float *qs, int nq,
		    int k, threadpool *pool, scan_guard *g, scan_hit *out, int *nout, emb_err *err)
{
	if (nq < 1)
		return emb_errf(err, EMB_EINVAL, "scan: %d queries", nq);
	return topk_run(blocks, nblocks, dim, qs, nq, NULL, k, pool, g, out, nout, err);
}

int scan_topk_compact_multi(const scan_block *blocks, size_t nblocks, const scan_cquery *qs,
			    int nq, int k, threadpool *pool, scan_guard *g, scan_hit *out, int *nout,
			    emb_err *err)
{
	if (nq < 1)
		return emb_errf(err, EMB_EINVAL, "scan: %d queries", nq);
	for (int i = 1; i < nq; i++)
		if (qs[i].kind != qs[0].kind || qs[i].dim != qs[0].dim)
			return emb_errf(err, EMB_EINVAL, "scan: queries of different kinds");
	scan_guard g2 = {0};
	if (g) {
		g2 = *g;
		g2.max_abs = 0;
	}
	int rc = topk_run(blocks, nblocks, qs->dim, NULL, nq, qs, k, pool, &g2, out, nout, err);
	if (g) {
		float keep = g->max_abs;
		*g = g2;
		g->max_abs = keep;
	}
	return rc;
}

int scan_topk_compact(const scan_block *blocks, size_t nblocks, const scan_cquery *q, int k,
		      threadpool *pool, scan_guard *g, scan_hit *out, int *nout, emb_err *err)
{
	scan_guard g2;
	if (g) {
		g2 = *g;
		g2.max_abs = 0;
	}
	int rc = topk_run(blocks, nblocks, q->dim, NULL, 1, q, k, pool, g ? &g2 : NULL, out, nout, err);
	if (g) {
		float keep = g->max_abs;
		*g = g2;
		g->max_abs = keep;
	}
	return rc;
}
