/* scan.c — exact top-k inner-product scan (see scan.h for why it is shaped this way).
 * Each task owns a contiguous range of rows and a min-heap of its best k; the kernel scores
 * four rows per pass so that every load of the query feeds four FMAs. */
#include "scan.h"

#include <stdlib.h>
#include <string.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

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
	scan_hit *heaps; /* ntasks * k */
	int *counts;     /* ntasks */
	scan_guard *g;   /* may be NULL */
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
		float x = scan_dot(q, v + (size_t)i * dim, dim);
		if (max_abs > 0 && !(x >= -max_abs && x <= max_abs))
			return i;
		heap_push(hp, (scan_hit){x, first + i});
	}
	return n;
}

static void scan_task(void *arg, int t)
{
	scan_ctx *c = arg;
	const task *tk = &c->tasks[t];
	scan_guard *g = c->g;
	float max_abs = g ? g->max_abs : 0;
	heap hp = {c->heaps + (size_t)t * c->k, 0, c->k};
	size_t rowb = (size_t)c->dim * sizeof(float);
	for (size_t b = tk->b0; b < tk->b1; b++) {
		const scan_block *bl = &c->blocks[b];
		uint32_t lo = b == tk->b0 ? tk->r0 : 0;
		uint32_t hi = b + 1 == tk->b1 ? tk->r1 : bl->nrows;
		if (g && __atomic_load_n(&g->failed, __ATOMIC_RELAXED))
			break;
		/* The task holding a block's first row verifies all of it, in one pass just
		 * before scoring, which then reads the block from L2 (a block split between two
		 * tasks is read once more: at most one block a task). */
		if (g && g->checksums && lo == 0) {
			uint64_t want;
			memcpy(&want, (const char *)bl->vecs + bl->nrows * rowb, sizeof want);
			if (XXH3_64bits_withSeed(bl->vecs, bl->nrows * rowb, bl->seed) != want) {
				guard_fail(g, SCAN_BAD_BLOCK, b, 0, 0);
				break;
			}
		}
		if (hi > lo) {
			const float *v = bl->vecs + (size_t)lo * c->dim;
			uint32_t bad = scan_rows(&hp, c->q, v, hi - lo, bl->first_row + lo, c->dim, max_abs);
			if (bad < hi - lo) {
				guard_fail(g, SCAN_BAD_SCORE, b, bl->first_row + lo + bad,
					   scan_dot(c->q, v + (size_t)bad * c->dim, c->dim));
				break;
			}
		}
	}
	c->counts[t] = hp.n;
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

int scan_topk(const scan_block *blocks, size_t nblocks, int dim, const float *q, int k,
	      threadpool *pool, scan_hit *out, int *nout, emb_err *err)
{
	return scan_topk_guarded(blocks, nblocks, dim, q, k, pool, NULL, out, nout, err);
}

int scan_topk_guarded(const scan_block *blocks, size_t nblocks, int dim, const float *q, int k,
		      threadpool *pool, scan_guard *g, scan_hit *out, int *nout, emb_err *err)
{
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
	 * (>= 4096 rows) and merging the heaps stays cheap. */
	int nthreads = threadpool_size(pool);
	uint64_t want = (uint64_t)nthreads * 4;
	uint64_t by_size = total / 4096 + 1;
	int ntasks = (int)(want < by_size ? want : by_size);
	uint64_t per = (total + (uint64_t)ntasks - 1) / (uint64_t)ntasks;

	task *tasks = calloc((size_t)ntasks, sizeof *tasks);
	scan_hit *heaps = malloc((size_t)ntasks * (size_t)k * sizeof *heaps);
	int *counts = calloc((size_t)ntasks, sizeof *counts);
	if (!tasks || !heaps || !counts) {
		free(tasks);
		free(heaps);
		free(counts);
		return emb_errf(err, EMB_ENOMEM, "scan: out of memory for %d heaps of %d", ntasks, k);
	}
	/* Cut the row sequence into ntasks runs of ~per rows, possibly splitting blocks. */
	int t = 0;
	size_t b = 0;
	uint32_t off = 0;
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

	scan_ctx c = {blocks, tasks, dim, k, q, heaps, counts, g};
	threadpool_run(pool, scan_task, &c, ntasks);
	if (g && g->failed) {
		free(tasks);
		free(heaps);
		free(counts);
		if (g->failed == SCAN_BAD_BLOCK)
			return emb_errf(err, EMB_ESTORE, "scan: block %zu fails its check", g->bad_block);
		return emb_errf(err, EMB_ESTORE, "scan: row %u scores %g, outside [-%g, %g]",
				g->bad_row, g->bad_score, g->max_abs, g->max_abs);
	}

	/* Merge: compact every task's heap, sort, keep k. */
	size_t n = 0;
	for (int i = 0; i < ntasks; i++) {
		memmove(heaps + n, heaps + (size_t)i * k, (size_t)counts[i] * sizeof *heaps);
		n += (size_t)counts[i];
	}
	qsort(heaps, n, sizeof *heaps, cmp_hit_desc);
	if (n > (size_t)k)
		n = (size_t)k;
	memcpy(out, heaps, n * sizeof *out);
	*nout = (int)n;
	free(tasks);
	free(heaps);
	free(counts);
	return EMB_OK;
}
