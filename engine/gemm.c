/* gemm.c — C = A W^T + bias against weights packed once (gemm.h), with kernels for AVX2 and
 * AVX-512 chosen at run time.
 *
 * Why our own kernels rather than a library: the products here are all of one shape (A of
 * a few to a few thousand rows, W fixed per model), and the one thing libraries do badly on
 * that shape is what we can do once: pack W. OpenBLAS has no packed-B API; oneDNN (Debian
 * 2.6) has one but is a 30 MB dependency with its own thread pool; the kernel that does the
 * work is ~60 lines per instruction set. See docs/bench-cpu.md for the measured comparison.
 *
 * Layout and blocking: W is cut into panels of NR columns of C, each stored k-major so the
 * kernel loads NR consecutive floats per k. The kernel holds an MR x NR block of C in
 * registers (AVX-512: 12 x 32 = 24 zmm; AVX2: 6 x 16 = 12 ymm), broadcasts A[i][k] from A in
 * place and fuses one multiply-add per register per k. Panels are the outer loop, so a panel
 * (K x NR floats: 48 KB at K = 384) stays in L1/L2 while every row block of A streams past.
 *
 * A short query (20 rows) reads each panel of W once per product, from L3 or memory (MiniLM's
 * fp32 weights are 42 MB, the L2 2 MB), and its first row block waits on those loads: the
 * hardware prefetchers stop at every 4 KB page. So the first row block of each panel also
 * prefetches the next panel into L2, one line per line it reads, and the next panel's loads
 * hit L2. Measured on the 2-vCPU Xeon (docs/bench-cpu.md): a 20-token query 1.24x faster
 * at 1 thread, 1.15x at 2. Only up to PF_MAX_ROWS rows: a 128-row document tile reads
 * each panel 11 times from L1, and the prefetches cost it 2-7% in tool_gemm_bench.
 *
 * Each C element is one FMA chain over k in order, then + bias: the row tails and column
 * tails use the same chain (narrower MR, masked loads and stores), so results do not depend
 * on M or on tiling.
 */
#include "gemm.h"
#include "gemm_act.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MR512 12
#define NR512 32
#define MR256 6
#define NR256 16
#define PF_MAX_ROWS 48 /* products of up to this many rows prefetch the next panel */

/* Panel n / nr of W's layout: from the packed copy, or laid out now (gemm_defer). */
static const float *panel_of(const gemm_w *g, int n);

/* --- AVX-512 */

__attribute__((target("avx512f"), always_inline)) static inline void
kern512(const int mr, const float *a, int lda, const float *b, int K, float *c, int ldc,
	const float *bias, int nv, const float *pf)
{
	__m512 acc[MR512][2];
	for (int i = 0; i < mr; i++)
		acc[i][0] = acc[i][1] = _mm512_setzero_ps();
	for (int k = 0; k < K; k++) {
		__m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
		b += NR512;
		if (pf) { /* the next panel's row k, into L2 (see run512) */
			_mm_prefetch((const char *)(pf + (size_t)k * NR512), _MM_HINT_T1);
			_mm_prefetch((const char *)(pf + (size_t)k * NR512 + 16), _MM_HINT_T1);
		}
		for (int i = 0; i < mr; i++) {
			__m512 av = _mm512_set1_ps(a[(size_t)i * lda + k]);
			acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
			acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
		}
	}
	__mmask16 m0 = nv >= 16 ? 0xffff : (__mmask16)((1u << nv) - 1);
	__mmask16 m1 = nv >= 32 ? 0xffff : nv <= 16 ? 0 : (__mmask16)((1u << (nv - 16)) - 1);
	__m512 bz0 = _mm512_setzero_ps(), bz1 = _mm512_setzero_ps();
	if (bias) {
		bz0 = _mm512_maskz_loadu_ps(m0, bias);
		bz1 = _mm512_maskz_loadu_ps(m1, bias + 16);
	}
	for (int i = 0; i < mr; i++) {
		_mm512_mask_storeu_ps(c + (size_t)i * ldc, m0, _mm512_add_ps(acc[i][0], bz0));
		_mm512_mask_storeu_ps(c + (size_t)i * ldc + 16, m1, _mm512_add_ps(acc[i][1], bz1));
	}
}

#define K512(n) case n: kern512(n, a, lda, b, K, c, ldc, bias, nv, pf); break
__attribute__((target("avx512f"))) static void
run512(const gemm_w *g, const float *A, int M, int n0, int n1, const float *bias, float *C,
       int ldc, gemm_act act)
{
	const int K = g->K, lda = K;
	for (int n = n0; n < n1; n += NR512) {
		const float *b = panel_of(g, n);
		const float *bi = bias ? bias + n : NULL;
		int nv = n1 - n < NR512 ? n1 - n : NR512;
		for (int i = 0; i < M; i += MR512) {
			const float *a = A + (size_t)i * lda;
			float *c = C + (size_t)i * ldc + n;
			const float *bias = bi;
			const int mr = M - i < MR512 ? M - i : MR512;
			/* short products: the first row block also fetches the next panel (see the
			 * top of the file) */
			const float *pf = g->p && i == 0 && M <= PF_MAX_ROWS && n + NR512 < n1
						  ? b + (size_t)K * NR512 : NULL; /* packed: the next panel */
			switch (mr) {
				K512(1); K512(2); K512(3); K512(4); K512(5); K512(6);
				K512(7); K512(8); K512(9); K512(10); K512(11); K512(12);
			}
			if (act)
				act_block(c, ldc, mr, nv, act);
		}
	}
}

/* --- AVX2 (the build's baseline, -march=x86-64-v3) */

static inline __attribute__((always_inline)) void
kern256(const int mr, const float *a, int lda, const float *b, int K, float *c, int ldc,
	const float *bias, int nv, const float *pf)
{
	__m256 acc[MR256][2];
	for (int i = 0; i < mr; i++)
		acc[i][0] = acc[i][1] = _mm256_setzero_ps();
	for (int k = 0; k < K; k++) {
		__m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
		b += NR256;
		if (pf)
			_mm_prefetch((const char *)(pf + (size_t)k * NR256), _MM_HINT_T1);
		for (int i = 0; i < mr; i++) {
			__m256 av = _mm256_broadcast_ss(a + (size_t)i * lda + k);
			acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
			acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
		}
	}
	const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	__m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv), idx);
	__m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv - 8), idx);
	__m256 bz0 = _mm256_setzero_ps(), bz1 = _mm256_setzero_ps();
	if (bias) {
		bz0 = _mm256_maskload_ps(bias, m0);
		bz1 = _mm256_maskload_ps(bias + 8, m1);
	}
	for (int i = 0; i < mr; i++) {
		_mm256_maskstore_ps(c + (size_t)i * ldc, m0, _mm256_add_ps(acc[i][0], bz0));
		_mm256_maskstore_ps(c + (size_t)i * ldc + 8, m1, _mm256_add_ps(acc[i][1], bz1));
	}
}

#define K256(n) case n: kern256(n, a, lda, b, K, c, ldc, bias, nv, pf); break
static void run256(const gemm_w *g, const float *A, int M, int n0, int n1, const float *bias,
		   float *C, int ldc, gemm_act act)
{
	const int K = g->K, lda = K;
	for (int n = n0; n < n1; n += NR256) {
		const float *b = panel_of(g, n);
		const float *bi = bias ? bias + n : NULL;
		int nv = n1 - n < NR256 ? n1 - n : NR256;
		for (int i = 0; i < M; i += MR256) {
			const float *a = A + (size_t)i * lda;
			float *c = C + (size_t)i * ldc + n;
			const float *bias = bi;
			const int mr = M - i < MR256 ? M - i : MR256;
			const float *pf = g->p && i == 0 && M <= PF_MAX_ROWS && n + NR256 < n1
						  ? b + (size_t)K * NR256 : NULL; /* packed: the next panel */
			switch (mr) {
				K256(1); K256(2); K256(3); K256(4); K256(5); K256(6);
			}
			if (act)
				act_block(c, ldc, mr, nv, act);
		}
	}
}

/* --- dispatch and packing */

gemm_isa gemm_isa_default(void)
{
	/* every thread that gets here first computes the same value */
	static _Atomic int isa = -1;
	int v = atomic_load_explicit(&isa, memory_order_relaxed);
	if (v < 0) {
		const char *e = getenv("EMBED_GEMM_ISA");
		__builtin_cpu_init();
		v = (!e || strcmp(e, "avx2") != 0) && __builtin_cpu_supports("avx512f")
			    ? GEMM_AVX512 : GEMM_AVX2;
		atomic_store_explicit(&isa, v, memory_order_relaxed);
	}
	return (gemm_isa)v;
}

const char *gemm_isa_name(gemm_isa isa)
{
	switch (isa) {
	case GEMM_AVX512: return "avx512";
	case GEMM_AVX512_BF16: return "avx512bf16";
	case GEMM_AVX512_VNNI: return "avx512vnni";
	case GEMM_AVX_VNNI: return "avxvnni";
	default: return "avx2";
	}
}

/* Lays out panel p (columns p * nr .. + nr of C, i.e. rows of W) as gemm.h describes: K rows
 * of nr floats, zero past N. Rows of W are read as nr streams, the panel written in order. */
static void pack_panel(const float *const *W, int parts, int N, int K, int nr, size_t p,
		       float *dst)
{
	const float *src[NR512];
	const int rows = N / parts;
	for (int j = 0; j < nr; j++) {
		int n = (int)p * nr + j;
		src[j] = n < N ? W[n / rows] + (size_t)(n % rows) * K : NULL;
	}
	for (int k = 0; k < K; k++, dst += nr)
		for (int j = 0; j < nr; j++)
			dst[j] = src[j] ? src[j][k] : 0.0f;
}

int gemm_defer(gemm_w *g, const float *const *W, int parts, int N, int K, gemm_isa isa)
{
	memset(g, 0, sizeof *g);
	if (parts < 1 || parts > GEMM_MAX_PARTS || N % parts)
		return -1;
	g->N = N, g->K = K, g->nr = isa == GEMM_AVX512 ? NR512 : NR256, g->isa = isa;
	g->parts = parts;
	for (int i = 0; i < parts; i++)
		g->src[i] = W[i];
	return 0;
}

int gemm_pack_deferred(gemm_w *g)
{
	if (g->p || !g->src[0])
		return 0;
	const size_t panels = ((size_t)g->N + g->nr - 1) / g->nr;
	const size_t bytes = panels * g->K * g->nr * sizeof(float);
	float *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
	if (!p)
		return -1;
	for (size_t i = 0; i < panels; i++)
		pack_panel(g->src, g->parts, g->N, g->K, g->nr, i, p + i * g->K * g->nr);
	g->p = p;
	return 0;
}

int gemm_pack(gemm_w *g, const float *const *W, int parts, int N, int K, gemm_isa isa)
{
	if (gemm_defer(g, W, parts, N, K, isa) || gemm_pack_deferred(g)) {
		memset(g, 0, sizeof *g);
		return -1;
	}
	return 0;
}

/* An unpacked matrix's panel, laid out on the fly in this thread's buffer (freed with the
 * thread): the same floats gemm_pack_deferred would store, so the kernels' results are the
 * same bits packed or not. */
static pthread_key_t fly_key;
static pthread_once_t fly_once = PTHREAD_ONCE_INIT;
static void fly_key_make(void) { pthread_key_create(&fly_key, free); }

typedef struct fly_buf {
	size_t floats;
	float f[] __attribute__((aligned(64)));
} fly_buf;

static const float *panel_of(const gemm_w *g, int n)
{
	const size_t p = (size_t)(n / g->nr), floats = (size_t)g->K * g->nr;
	if (g->p)
		return g->p + p * floats;
	pthread_once(&fly_once, fly_key_make);
	fly_buf *b = pthread_getspecific(fly_key);
	if (!b || b->floats < floats) {
		free(b);
		b = aligned_alloc(64, (sizeof *b + floats * sizeof(float) + 63) / 64 * 64);
		if (!b)
			abort(); /* a few hundred KB; the caller promised memory for the product */
		b->floats = floats;
		pthread_setspecific(fly_key, b);
	}
	pack_panel(g->src, g->parts, g->N, g->K, g->nr, p, b->f);
	return b->f;
}

void gemm_w_free(gemm_w *g)
{
	free(g->p);
	free(g->q);
	free(g->scale);
	free(g->corr);
	memset(g, 0, sizeof *g);
}

void gemm_run(const gemm_w *g, const float *A, int M, int n0, int n1, const float *bias,
	      float *C, int ldc, gemm_act act)
{
	if (g->isa == GEMM_AVX512)
		run512(g, A, M, n0, n1, bias, C, ldc, act);
	else
		run256(g, A, M, n0, n1, bias, C, ldc, act);
}
