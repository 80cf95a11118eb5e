/* forward_cpu.c — the BERT-family forward pass on the CPU, in fp32: the reference every
 * other path is checked against, and the path single queries take.
 *
 * Read it top to bottom in forward_cpu(): embeddings, the position bias where the model's
 * description (cfg->arch, model.h) has one, then per layer a QKV product,
 * attention, the output product with residual + LayerNorm, the feed-forward pair with
 * residual + LayerNorm; finally pooling and L2 normalisation. The batch is packed (see
 * forward.h): sequences lie end to end, so matrix products run over all tokens at once and
 * attention runs per (sequence, head) over that sequence's tokens only (attention.h's
 * kernel: scores, softmax and the product with V fused, in bounded memory). JinaBERT (ALiBi,
 * up to 8192 tokens) splits attention further, into blocks of query rows
 * (attention_alibi), and has a GEGLU feed-forward (geglu).
 *
 * Products with weights go to gemm.h's kernels (weights packed once at load, the
 * instruction set picked at run time; in bf16 or int8 under --precision, cfg->cpu_prec, with
 * the activations converted once per product by gemm_prep).
 * Both run inside our own thread pool: splitting the output into tiles ourselves keeps each
 * element's summation order independent of the batch (so a text's vector does not depend on
 * its batch-mates), and avoids two thread pools fighting over the cores.
 */
#include "attention.h"
#include "forward.h"
#include "gemm.h"
#include "vecmath.h"

#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* --- building blocks of the steps below */

/* The sum of a row, 32 lanes wide (four 8-lane accumulators, then a fixed tree), for
 * LayerNorm's mean and variance: the scalar loop the compiler keeps (a float sum needs
 * -fassociative-math to vectorise) is a chain of dependent 4-cycle adds, 384 long at
 * MiniLM's width, twice a row. AVX2 only, so every machine sums in the same order. With
 * `mean` given, sums (x - mean)^2 instead. */
static float row_sum32(const float *x, int n, const float *mean)
{
	__m256 s[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
			_mm256_setzero_ps() };
	const __m256 m = _mm256_set1_ps(mean ? *mean : 0.0f);
	int i = 0;
	for (; i + 32 <= n; i += 32)
		for (int j = 0; j < 4; j++) {
			__m256 v = _mm256_loadu_ps(x + i + 8 * j);
			if (mean) {
				v = _mm256_sub_ps(v, m);
				s[j] = _mm256_fmadd_ps(v, v, s[j]);
			} else {
				s[j] = _mm256_add_ps(s[j], v);
			}
		}
	__m256 t = _mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]));
	t = _mm256_add_ps(t, _mm256_permute2f128_ps(t, t, 1));
	t = _mm256_add_ps(t, _mm256_shuffle_ps(t, t, 0x4e));
	t = _mm256_add_ps(t, _mm256_shuffle_ps(t, t, 0xb1));
	float r = _mm256_cvtss_f32(t);
	for (; i < n; i++)
		r += mean ? (x[i] - *mean) * (x[i] - *mean) : x[i];
	return r;
}

/* y = LayerNorm(x) * g + b over one row of n, in place; two passes like PyTorch. */
static void layernorm_row(float *x, const float *g, const float *b, int n, float eps)
{
	const float mean = row_sum32(x, n, NULL) / (float)n;
	const float var = row_sum32(x, n, &mean) / (float)n;
	const float inv = 1.0f / sqrtf(var + eps);
	for (int i = 0; i < n; i++)
		x[i] = (x[i] - mean) * inv * g[i] + b[i];
}

/* One forward pass's shared state, handed to the parallel loops. */
typedef struct fwd {
	const bert_config *cfg;
	const bert_weights *w;
	const fwd_batch *b;
	int T;                /* tokens in the batch */
	float *x;             /* [T][H] hidden states */
	float *qkv;           /* [T][3H] */
	float *ctx;           /* [T][H] attention output, before its dense layer */
	float *tmp;           /* [T][H] */
	float *up;            /* [T][I]; FFN_GEGLU: [T][2I] */
	float *gact;          /* FFN_GEGLU: [T][I], gelu(gated) * non-gated */
	float *out;           /* [n][H] */
	int *seq_of;          /* [T] sequence index of each token */
	atomic_int oom;       /* set by a parallel task that could not allocate */

	/* the current matrix product C[M][N] = act(A[M][K] * W[N][K]^T + bias) */
	const float *A, *bias;
	const gemm_w *W;
	float *C;
	int M, N, K;
	unsigned char *aq;    /* bf16 / int8 weights: A converted by gemm_prep, rows of aq_rb */
	size_t aq_rb;
	int act;              /* 0 none, else cfg->act + 1 (= gemm_act) */
	int tile_m, tile_n, tiles_n;

	/* POS_REL_BUCKETS: bias[h][(key - query) + maxlen - 1], the same for every layer */
	float *rel;
	int rel_span;         /* 2 * maxlen - 1, a row of rel */

	/* POS_ALIBI: per-head slopes, and the query blocks attention_alibi's tasks take */
	float *slopes;        /* [heads] */
	int *qblk;            /* [2 * nqblk]: sequence, then first query, of each query block */
	int nqblk;

	const bert_layer_weights *L;
	const float *ln_g, *ln_b;
	const float *resid;   /* add_layernorm: x = LN(x + resid) */
	const gemm_w *prep_next; /* bf16 / int8: the LayerNorm steps also convert their rows
				  * of x into aq for this product (the next one x feeds) */
	int ln_rows;          /* the product into tmp may finish its rows with add_layernorm */
	int ln_done;          /* ... and did: every tile held whole rows */

	/* ffn_rows: a scratch block of FFN_ROWS x I floats for each thread, claimed per task */
	unsigned char *ffn_scratch; /* [nslots] blocks of ffn_slot_bytes: the activations, then
				     * (bf16 / int8) their conversion for the down product */
	size_t ffn_slot_bytes;
	atomic_int *ffn_busy; /* [nslots]: 1 while a task holds that block */
	int nslots;

	/* forward_cpu_input_maxima: per layer, max |value| of each input channel of the four
	 * products (forward.h's layout), or NULL */
	float *act_max;

	/* run_rows: row_fn(f, r) for r in [0, nrows), rows_chunk rows a task */
	void (*row_fn)(void *, int);
	int nrows, rows_chunk;
} fwd;

/* Below this many nanoseconds of estimated work a parallel loop runs on the calling thread
 * alone. A hand-off to a spinning worker costs about a microsecond (threadpool.c); one to a
 * sleeping worker (after a pause longer than its spin) tens. With 2 threads and 4 us, a
 * 20-token query splits every product, attention and the bf16 / int8 conversions of A
 * before its 1536-wide product; its fp32 LayerNorms (~2 us) stay on one thread, the bf16 /
 * int8 ones (which also convert their rows) split.
 * docs/bench-cpu.md has the measurements. */
#define MIN_PARALLEL_NS 4000.0

/* Rough speeds on one core, for the estimates above: products in flops a nanosecond by
 * precision (tool_gemm_bench at 12-20 rows: fp32 ~170, bf16 ~140, int8 ~380, halved for the
 * A conversions and tails), everything else in nanoseconds per element. */
static double gemm_flops_per_ns(gemm_prec p)
{
	return p == GEMM_INT8 ? 200.0 : p == GEMM_BF16 ? 100.0 : 120.0;
}

static void run_loop(threadpool *pool, void (*fn)(void *, int), fwd *f, int ntasks,
		     double est_ns)
{
	threadpool_run(est_ns < MIN_PARALLEL_NS ? NULL : pool, fn, f, ntasks);
}

static void rows_task(void *arg, int task)
{
	fwd *f = arg;
	int r0 = task * f->rows_chunk, r1 = r0 + f->rows_chunk < f->nrows ? r0 + f->rows_chunk
									  : f->nrows;
	for (int r = r0; r < r1; r++)
		f->row_fn(f, r);
}

/* fn(f, r) for every row r in [0, nrows): four chunks of rows a thread (rows cost the same,
 * and a claim is an atomic on a line both cores write), one when it runs alone. */
static void run_rows(threadpool *pool, void (*fn)(void *, int), fwd *f, int nrows,
		     double est_ns)
{
	if (nrows <= 0)
		return;
	int tasks = est_ns < MIN_PARALLEL_NS ? 1 : 4 * threadpool_size(pool);
	f->row_fn = fn, f->nrows = nrows;
	f->rows_chunk = (nrows + tasks - 1) / tasks;
	run_loop(pool, rows_task, f, (nrows + f->rows_chunk - 1) / f->rows_chunk, est_ns);
}

/* x = LayerNorm(x + resid); one task per token. */
static void add_layernorm(void *arg, int t)
{
	fwd *f = arg;
	const int H = f->cfg->hidden;
	float *x = f->x + (size_t)t * H;
	const float *r = f->resid + (size_t)t * H;
	for (int i = 0; i < H; i++)
		x[i] += r[i];
	layernorm_row(x, f->ln_g, f->ln_b, H, f->cfg->layer_norm_eps);
	if (f->prep_next)
		gemm_prep(f->prep_next, x, 1, f->aq + (size_t)t * gemm_prep_row_bytes(f->prep_next));
}

static void matmul_tile(void *arg, int task)
{
	fwd *f = arg;
	int m0 = (task / f->tiles_n) * f->tile_m, n0 = (task % f->tiles_n) * f->tile_n;
	int m = f->M - m0 < f->tile_m ? f->M - m0 : f->tile_m;
	int n = f->N - n0 < f->tile_n ? f->N - n0 : f->tile_n;
	if (f->W->prec != GEMM_F32)
		gemm_run_prep(f->W, f->aq + (size_t)m0 * f->aq_rb, m, n0, n0 + n, f->bias,
			      f->C + (size_t)m0 * f->N, f->N, (gemm_act)f->act);
	else
		gemm_run(f->W, f->A + (size_t)m0 * f->K, m, n0, n0 + n, f->bias,
			 f->C + (size_t)m0 * f->N, f->N, (gemm_act)f->act);
	if (f->ln_done) /* whole rows: their residual + LayerNorm while they are in cache */
		for (int r = m0; r < m0 + m; r++)
			add_layernorm(f, r);
}

/* bf16 / int8: converts row r of A for the kernel, once for every column tile of the
 * product. */
static void prep_row(void *arg, int r)
{
	fwd *f = arg;
	gemm_prep(f->W, f->A + (size_t)r * f->K, 1, f->aq + (size_t)r * f->aq_rb);
}

/* C[M][N] = act(A[M][K] W[N][K]^T + bias), W packed (gemm.h): tiles small enough to keep
 * every thread busy (two a thread), whole panels of W wide. bf16 / int8: `prepped` says the
 * LayerNorm before has already converted A into f->aq (prep_next). */
static void matmul_bias(fwd *f, threadpool *pool, const float *A, const gemm_w *W,
			const float *bias, float *C, int M, int N, int K, int act, int prepped)
{
	f->A = A, f->W = W, f->bias = bias, f->C = C, f->M = M, f->N = N, f->K = K;
	f->act = act;
	int threads = threadpool_size(pool);
	f->tile_m = 128;
	int tiles_m = (M + f->tile_m - 1) / f->tile_m;
	int want_n = tiles_m >= 2 * threads ? 1 : (2 * threads + tiles_m - 1) / tiles_m;
	/* a short query: one column range a thread, so that each streams one contiguous run of
	 * panels and gemm.c's prefetch of the next panel never stops at a tile's end (2-5%
	 * faster than two ranges a thread at 2 threads; the caller claims a sleeping worker's
	 * range itself, threadpool.c) */
	if (M <= 48)
		want_n = threads;
	f->tile_n = (N + want_n - 1) / want_n;
	f->tile_n = (f->tile_n + W->nr - 1) / W->nr * W->nr;
	f->tiles_n = (N + f->tile_n - 1) / f->tile_n;
	f->aq_rb = W->prec != GEMM_F32 ? gemm_prep_row_bytes(W) : 0;
	/* bf16 / int8: the LayerNorm's conversion for the next product writes aq rows in that
	 * product's row size, which must be this one's, or it would write over rows another tile
	 * is still reading (the down-projection's K is I, the next product's H) */
	f->ln_done = f->ln_rows && f->tiles_n == 1 &&
		     (W->prec == GEMM_F32 || !f->prep_next || gemm_prep_row_bytes(f->prep_next) == f->aq_rb);
	if (W->prec != GEMM_F32 && !prepped)
		run_rows(pool, prep_row, f, M, 0.3 * M * K);
	run_loop(pool, matmul_tile, f, tiles_m * f->tiles_n,
		 2.0 * M * N * K / gemm_flops_per_ns(W->prec));
}

/* Embeddings: word + position (from the architecture's offset) + the token's type row (0
 * unless the batch gives types) where the model has token types, then LayerNorm; one task
 * per token. */
static void embed_layernorm(void *arg, int t)
{
	fwd *f = arg;
	const int H = f->cfg->hidden;
	int s = f->seq_of[t], pos = f->cfg->arch.pos_offset + t - f->b->offs[s];
	const float *we = f->w->word_emb + (size_t)f->b->ids[t] * H;
	const float *pe = f->w->pos_emb ? f->w->pos_emb + (size_t)pos * H : NULL;
	const float *te = f->w->type_emb;
	if (te && f->b->types) /* a pair's second segment (cross-encoders) */
		te += (size_t)f->b->types[t] * H;
	float *x = f->x + (size_t)t * H;
	if (!pe) /* ALiBi: positions enter in attention only */
		for (int i = 0; i < H; i++)
			x[i] = we[i] + (te ? te[i] : 0.0f);
	else if (te)
		for (int i = 0; i < H; i++)
			x[i] = we[i] + pe[i] + te[i];
	else
		for (int i = 0; i < H; i++)
			x[i] = we[i] + pe[i];
	layernorm_row(x, f->w->emb_ln_g, f->w->emb_ln_b, H, f->cfg->layer_norm_eps);
	if (f->prep_next)
		gemm_prep(f->prep_next, x, 1, f->aq + (size_t)t * gemm_prep_row_bytes(f->prep_next));
}

int rel_position_bucket(int rel, int buckets, int max_distance)
{
	/* T5's bidirectional bucketing as MPNet uses it: half the buckets for keys after the
	 * query, half for keys before; within each, exact distances below a quarter of the
	 * buckets, logarithmic steps beyond, the last bucket from max_distance on. The
	 * logarithm is taken in float, as the reference implementation does, so that distances
	 * on a bucket boundary (16, 32, 64) land where it puts them. */
	int half = buckets / 2, exact = half / 2, ret = 0;
	int n = -rel;
	if (n < 0) {
		ret = half;
		n = -n;
	}
	if (n < exact)
		return ret + n;
	float lg = logf((float)n / (float)exact) / (float)log((double)max_distance / exact) *
		   (float)(half - exact);
	int v = exact + (int)lg;
	return ret + (v < half - 1 ? v : half - 1);
}

/* The relative position bias of POS_REL_BUCKETS, once per batch for distances up to its
 * longest sequence: rel[h][d + maxlen - 1] for d = key - query. */
static void position_bias(fwd *f, int maxlen)
{
	const model_arch *a = &f->cfg->arch;
	const int nh = f->cfg->heads;
	f->rel_span = 2 * maxlen - 1;
	for (int d = -(maxlen - 1); d <= maxlen - 1; d++) {
		int bucket = rel_position_bucket(d, a->rel_buckets, a->rel_max_distance);
		for (int h = 0; h < nh; h++)
			f->rel[(size_t)h * f->rel_span + d + maxlen - 1] = f->w->rel_bias[bucket * nh + h];
	}
}

/* Self-attention of one (sequence, head): softmax(Q K^T / sqrt(d) + bias) V over that
 * sequence's tokens only, which is the per-sequence mask of a padded implementation; the
 * head's columns of the packed QKV rows are read in place (stride 3H). attention.h has the
 * kernel. */
static void attend(fwd *f, int s, int h, int q0, int qn)
{
	const int H = f->cfg->hidden, nh = f->cfg->heads, d = H / nh;
	int t0 = f->b->offs[s], L = f->b->offs[s + 1] - t0;
	const float *Q = f->qkv + (size_t)t0 * 3 * H + h * d;
	attn_head a = {
		.q = Q, .k = Q + H, .v = Q + 2 * H, .ld = 3 * H,
		.out = f->ctx + (size_t)t0 * H + h * d, .ldo = H,
		.L = L, .d = d, .scale = 1.0f / sqrtf((float)d),
		/* MPNet: rel[h] from distance -(maxlen - 1), so distance 0 at rel_span / 2 */
		.rel = f->rel ? f->rel + (size_t)h * f->rel_span + f->rel_span / 2 : NULL,
		.alibi_slope = f->slopes ? f->slopes[h] : 0.0f,
	};
	if (attention_rows(&a, q0, qn, gemm_isa_default()))
		atomic_store(&f->oom, 1);
}

/* One task a (sequence, head). */
static void attention(void *arg, int task)
{
	fwd *f = arg;
	const int nh = f->cfg->heads, s = task / nh;
	attend(f, s, task % nh, 0, f->b->offs[s + 1] - f->b->offs[s]);
}

void alibi_slopes(int heads, float *slopes)
{
	int p2 = 1;
	while (p2 * 2 <= heads)
		p2 *= 2;
	/* the power-of-two sequence: start^(i+1), start = 2^(-8/p2), as start * start^i */
	double start = pow(2.0, -pow(2.0, -(log2((double)p2) - 3.0)));
	for (int i = 0; i < p2; i++)
		slopes[i] = (float)(start * pow(start, i));
	if (p2 == heads)
		return;
	/* the rest: slopes 0, 2, 4, ... of the sequence for 2 * p2 heads */
	double start2 = pow(2.0, -pow(2.0, -(log2(2.0 * p2) - 3.0)));
	for (int i = 0; p2 + i < heads; i++)
		slopes[p2 + i] = (float)(start2 * pow(start2, 2 * i));
}

/* ALiBi models take texts to 8,192 tokens: one task a (block of ALIBI_QB query rows, head),
 * so that a long text spreads over the threads (the kernel bounds the memory). */
enum { ALIBI_QB = 256 };

static void attention_alibi(void *arg, int task)
{
	fwd *f = arg;
	const int nh = f->cfg->heads;
	int blk = task / nh, s = f->qblk[2 * blk], q0 = f->qblk[2 * blk + 1];
	int L = f->b->offs[s + 1] - f->b->offs[s];
	attend(f, s, task % nh, q0, L - q0 < ALIBI_QB ? L - q0 : ALIBI_QB);
}

/* The feed-forward pair of one block of FFN_ROWS tokens: up-projection with its activation
 * into a block of scratch, then the down-projection of those rows into tmp. Run block by
 * block, the [T][I] activations never go out to memory: a block's (768 KB for MiniLM)
 * stays in the core's L2 between the two products, and the next block on that thread
 * writes over the same lines. The products are gemm_run's, row for row, so the bits are
 * those of the two whole products. */
enum { FFN_ROWS = 128 };

static void ffn_rows(void *arg, int task)
{
	fwd *f = arg;
	const int H = f->cfg->hidden, FF = f->cfg->intermediate;
	const int m0 = task * FFN_ROWS, m = f->T - m0 < FFN_ROWS ? f->T - m0 : FFN_ROWS;
	const gemm_w *up_w = &f->L->ffn_up_p, *down_w = &f->L->ffn_down_p;
	int slot = 0; /* at most nslots tasks run at once: one of the blocks is free */
	while (atomic_exchange(&f->ffn_busy[slot], 1))
		slot = (slot + 1) % f->nslots;
	float *up = (float *)(f->ffn_scratch + (size_t)slot * f->ffn_slot_bytes);
	const gemm_act act = (gemm_act)(f->cfg->act + 1);
	if (up_w->prec == GEMM_F32) /* bf16 / int8: the LayerNorm before converted x (prep_next) */
		gemm_run(up_w, f->x + (size_t)m0 * H, m, 0, FF, f->L->ffn_up_b, up, FF, act);
	else
		gemm_run_prep(up_w, f->aq + (size_t)m0 * gemm_prep_row_bytes(up_w), m, 0, FF,
			      f->L->ffn_up_b, up, FF, act);
	float *out = f->tmp + (size_t)m0 * H;
	if (down_w->prec == GEMM_F32) {
		gemm_run(down_w, up, m, 0, H, f->L->ffn_down_b, out, H, GEMM_ACT_NONE);
	} else {
		unsigned char *aq = (unsigned char *)up + (size_t)FFN_ROWS * FF * sizeof(float);
		gemm_prep(down_w, up, m, aq);
		gemm_run_prep(down_w, aq, m, 0, H, f->L->ffn_down_b, out, H, GEMM_ACT_NONE);
	}
	atomic_store(&f->ffn_busy[slot], 0);
	for (int r = m0; r < m0 + m; r++) /* whole rows: residual + LayerNorm now */
		add_layernorm(f, r);
}

/* mx[k] = max(mx[k], |x[t][k]|) over the T rows of x (forward_cpu_input_maxima; on the
 * calling thread: a few milliseconds a product for its few thousand tokens). */
static void column_maxima(const float *x, int T, int K, float *mx)
{
	for (int t = 0; t < T; t++)
		for (int k = 0; k < K; k++)
			mx[k] = fmaxf(mx[k], fabsf(x[(size_t)t * K + k]));
}

/* GELU (erf form) as gemm.c's epilogue computes it, for GEGLU's gated half. */
static float gelu_erf(float x)
{
	return 0.5f * x * (1.0f + erf_approx(x * 0.70710678118654752f));
}

/* GEGLU: gact = gelu(up[:, :I]) * up[:, I:] (JinaBERT's gated half first); one task per
 * token. */
static void geglu(void *arg, int t)
{
	fwd *f = arg;
	const int n = f->cfg->intermediate;
	const float *u = f->up + (size_t)t * 2 * n;
	float *g = f->gact + (size_t)t * n;
	for (int j = 0; j < n; j++)
		g[j] = gelu_erf(u[j]) * u[n + j];
}

/* Pooling over one sequence's tokens, then L2 normalisation if the model has it. */
static void pool_normalize(void *arg, int s)
{
	fwd *f = arg;
	const int H = f->cfg->hidden;
	int t0 = f->b->offs[s], L = f->b->offs[s + 1] - t0;
	float *o = f->out + (size_t)s * H;
	const float *x = f->x + (size_t)t0 * H;
	if (f->cfg->pooling == POOL_CLS) {
		memcpy(o, x, (size_t)H * sizeof *o);
	} else if (f->cfg->pooling == POOL_MAX) {
		memcpy(o, x, (size_t)H * sizeof *o);
		for (int t = 1; t < L; t++)
			for (int i = 0; i < H; i++)
				if (x[(size_t)t * H + i] > o[i])
					o[i] = x[(size_t)t * H + i];
	} else {
		for (int i = 0; i < H; i++)
			o[i] = 0;
		for (int t = 0; t < L; t++)
			for (int i = 0; i < H; i++)
				o[i] += x[(size_t)t * H + i];
		for (int i = 0; i < H; i++)
			o[i] /= (float)L;
	}
	if (f->cfg->normalize) {
		double ss = 0;
		for (int i = 0; i < H; i++)
			ss += (double)o[i] * o[i];
		/* sentence-transformers divides by max(norm, 1e-12) */
		float inv = (float)(1.0 / fmax(sqrt(ss), 1e-12));
		for (int i = 0; i < H; i++)
			o[i] *= inv;
	}
}

/* forward_cpu, and with act_max the maxima of forward_cpu_input_maxima (which asks for fp32
 * weights and is not the hot path: the FFN then runs as two whole products, whose input
 * maxima are read between them). */
static int forward_run(const bert_config *cfg, const bert_weights *w, threadpool *pool,
		       const fwd_batch *b, float *out, float *act_max, emb_err *err)
{
	const int H = cfg->hidden, FF = cfg->intermediate;
	fwd f = { .cfg = cfg, .w = w, .b = b, .out = out, .act_max = act_max };
	f.T = b->offs[b->n];
	const size_t T = (size_t)f.T;
	f.x = malloc(T * H * sizeof(float));
	f.qkv = malloc(T * 3 * H * sizeof(float));
	f.ctx = malloc(T * H * sizeof(float));
	f.tmp = malloc(T * H * sizeof(float));
	const int geglu_ffn = cfg->arch.ffn == FFN_GEGLU, alibi = cfg->arch.pos == POS_ALIBI;
	/* GELU feed-forwards of enough blocks to keep every thread busy go block by block
	 * (ffn_rows) and need no [T][I] buffer */
	const int nthreads = threadpool_size(pool);
	const int ffn_blocks = !geglu_ffn && !act_max &&
			       (f.T + FFN_ROWS - 1) / FFN_ROWS >= 2 * nthreads
				       ? (f.T + FFN_ROWS - 1) / FFN_ROWS : 0;
	if (ffn_blocks) {
		f.nslots = nthreads;
		f.ffn_slot_bytes = (size_t)FFN_ROWS * FF * sizeof(float);
		if (cfg->cpu_prec != GEMM_F32)
			f.ffn_slot_bytes += FFN_ROWS * gemm_prep_row_bytes(&w->layer[0].ffn_down_p);
		f.ffn_slot_bytes = (f.ffn_slot_bytes + 63) / 64 * 64;
		f.ffn_scratch = aligned_alloc(64, (size_t)nthreads * f.ffn_slot_bytes);
		f.ffn_busy = calloc((size_t)nthreads, sizeof *f.ffn_busy);
	} else {
		f.up = malloc(T * FF * (geglu_ffn ? 2 : 1) * sizeof(float));
	}
	f.gact = geglu_ffn ? malloc(T * FF * sizeof(float)) : NULL;
	f.seq_of = malloc(T * sizeof(int));
	/* the largest converted activations: bf16 rows of the widest K, 2 bytes a value */
	const int kmax = FF > H ? FF : H;
	if (cfg->cpu_prec != GEMM_F32)
		f.aq = aligned_alloc(64, (T * (2 * (size_t)kmax + 8) + 63) / 64 * 64);
	int rc = EMB_OK;
	if (!f.x || !f.qkv || !f.ctx || !f.tmp || !f.seq_of || (geglu_ffn && !f.gact) ||
	    (ffn_blocks ? !f.ffn_scratch || !f.ffn_busy : !f.up) ||
	    (cfg->cpu_prec != GEMM_F32 && !f.aq)) {
		rc = emb_errf(err, EMB_ENOMEM, "out of memory for a batch of %zu tokens", T);
		goto out;
	}
	int maxlen = 0;
	double attn_flops = 0; /* the two products of every head: 4 L^2 d flops */
	for (int s = 0; s < b->n; s++) {
		const double len = b->offs[s + 1] - b->offs[s];
		attn_flops += 4.0 * H * len * len;
		for (int t = b->offs[s]; t < b->offs[s + 1]; t++)
			f.seq_of[t] = s;
		if (b->offs[s + 1] - b->offs[s] > maxlen)
			maxlen = b->offs[s + 1] - b->offs[s];
	}
	if (cfg->arch.pos == POS_REL_BUCKETS && maxlen > 0) {
		f.rel = malloc((size_t)cfg->heads * (2 * (size_t)maxlen - 1) * sizeof(float));
		if (!f.rel) {
			rc = emb_errf(err, EMB_ENOMEM, "out of memory for the position bias");
			goto out;
		}
		position_bias(&f, maxlen);
	}
	if (alibi) {
		for (int s = 0; s < b->n; s++)
			f.nqblk += (b->offs[s + 1] - b->offs[s] + ALIBI_QB - 1) / ALIBI_QB;
		f.slopes = malloc((size_t)cfg->heads * sizeof(float));
		f.qblk = malloc(2 * (size_t)f.nqblk * sizeof(int));
		if (!f.slopes || !f.qblk) {
			rc = emb_errf(err, EMB_ENOMEM, "out of memory for a batch of %zu tokens", T);
			goto out;
		}
		alibi_slopes(cfg->heads, f.slopes);
		int k = 0;
		for (int s = 0; s < b->n; s++)
			for (int q0 = 0; q0 < b->offs[s + 1] - b->offs[s]; q0 += ALIBI_QB)
				f.qblk[k++] = s, f.qblk[k++] = q0;
	}

	/* estimated nanoseconds of each step on one core (see MIN_PARALLEL_NS) */
	const int lowp = w->layer[0].qkv_p.prec != GEMM_F32;
	const double ln_ns = 0.3 * f.T * H * (lowp ? 2 : 1); /* with lowp, the conversion too */
	const double attn_ns = 1500.0 * (alibi ? f.nqblk : b->n) * cfg->heads + attn_flops / 30;
	f.prep_next = lowp ? &w->layer[0].qkv_p : NULL;
	run_rows(pool, embed_layernorm, &f, f.T, ln_ns);
	for (int l = 0; l < cfg->layers; l++) {
		const bert_layer_weights *L = &w->layer[l];
		float *mx = act_max ? act_max + (size_t)l * (3 * H + FF) : NULL;
		if (mx)
			column_maxima(f.x, f.T, H, mx);
		matmul_bias(&f, pool, f.x, &L->qkv_p, L->qkv_b, f.qkv, f.T, 3 * H, H, 0, lowp);
		if (alibi)
			run_loop(pool, attention_alibi, &f, f.nqblk * cfg->heads, attn_ns);
		else
			run_loop(pool, attention, &f, b->n * cfg->heads, attn_ns);
		if (atomic_load(&f.oom)) {
			rc = emb_errf(err, EMB_ENOMEM, "out of memory for attention scores");
			goto out;
		}
		/* x = LN(x + dense(ctx)); the LayerNorm inside the product's tiles when they hold
		 * whole rows (then each row is done while in cache, and one round is saved) */
		if (mx)
			column_maxima(f.ctx, f.T, H, mx + H);
		f.resid = f.tmp, f.ln_g = L->ln1_g, f.ln_b = L->ln1_b;
		f.prep_next = lowp ? &L->ffn_up_p : NULL;
		f.ln_rows = 1;
		matmul_bias(&f, pool, f.ctx, &L->attn_out_p, L->attn_out_b, f.tmp, f.T, H, H, 0, 0);
		f.ln_rows = 0;
		if (!f.ln_done)
			run_rows(pool, add_layernorm, &f, f.T, ln_ns);
		/* x = LN(x + ffn(x)), the same way */
		f.ln_g = L->ln2_g, f.ln_b = L->ln2_b;
		f.prep_next = lowp && l + 1 < cfg->layers ? &w->layer[l + 1].qkv_p : NULL;
		if (mx)
			column_maxima(f.x, f.T, H, mx + 2 * H);
		if (geglu_ffn) {
			matmul_bias(&f, pool, f.x, &L->ffn_up_p, NULL, f.up, f.T, 2 * FF, H, 0, lowp);
			run_rows(pool, geglu, &f, f.T, 1.0 * f.T * FF);
			if (mx)
				column_maxima(f.gact, f.T, FF, mx + 3 * H);
			f.ln_rows = 1;
			matmul_bias(&f, pool, f.gact, &L->ffn_down_p, L->ffn_down_b, f.tmp, f.T, H, FF,
				    0, 0);
		} else if (ffn_blocks) { /* ffn_rows does the LayerNorm of its rows */
			f.L = L;
			run_loop(pool, ffn_rows, &f, ffn_blocks, 4.0 * f.T * FF * H);
			f.ln_done = 1;
		} else {
			matmul_bias(&f, pool, f.x, &L->ffn_up_p, L->ffn_up_b, f.up, f.T, FF, H,
				    cfg->act + 1, lowp);
			if (mx)
				column_maxima(f.up, f.T, FF, mx + 3 * H);
			f.ln_rows = 1;
			matmul_bias(&f, pool, f.up, &L->ffn_down_p, L->ffn_down_b, f.tmp, f.T, H, FF,
				    0, 0);
		}
		f.ln_rows = 0;
		if (!f.ln_done)
			run_rows(pool, add_layernorm, &f, f.T, ln_ns);
	}
	run_loop(pool, pool_normalize, &f, b->n, 0.5 * f.T * H);
out:
	free(f.x);
	free(f.qkv);
	free(f.ctx);
	free(f.tmp);
	free(f.up);
	free(f.ffn_scratch);
	free((void *)f.ffn_busy);
	free(f.seq_of);
	free(f.aq);
	free(f.rel);
	free(f.gact);
	free(f.slopes);
	free(f.qblk);
	return rc;
}

int forward_cpu(const bert_config *cfg, const bert_weights *w, threadpool *pool,
		const fwd_batch *b, float *out, emb_err *err)
{
	return forward_run(cfg, w, pool, b, out, NULL, err);
}

int forward_cpu_input_maxima(const bert_config *cfg, const bert_weights *w, threadpool *pool,
			     const fwd_batch *b, float *maxima, emb_err *err)
{
	/* fp32 products over the weights' own arrays, whatever cfg->cpu_prec packed: the copies
	 * below borrow them (gemm_defer lays each panel out on the fly) */
	bert_config c = *cfg;
	c.cpu_prec = GEMM_F32;
	bert_weights w32 = *w;
	w32.layer = calloc((size_t)cfg->layers, sizeof *w32.layer);
	float *out = malloc((size_t)b->n * cfg->hidden * sizeof *out);
	int rc = EMB_OK;
	if (!w32.layer || !out) {
		rc = emb_errf(err, EMB_ENOMEM, "out of memory for the calibration pass");
		goto done;
	}
	const int H = cfg->hidden, FF = cfg->intermediate;
	const int up_rows = cfg->arch.ffn == FFN_GEGLU ? 2 * FF : FF;
	const gemm_isa isa = gemm_isa_for(GEMM_F32);
	for (int l = 0; l < cfg->layers; l++) {
		bert_layer_weights *L = &w32.layer[l];
		*L = w->layer[l];
		gemm_defer(&L->qkv_p, &L->qkv_w, 1, 3 * H, H, isa);
		gemm_defer(&L->attn_out_p, &L->attn_out_w, 1, H, H, isa);
		gemm_defer(&L->ffn_up_p, &L->ffn_up_w, 1, up_rows, H, isa);
		gemm_defer(&L->ffn_down_p, &L->ffn_down_w, 1, H, FF, isa);
	}
	rc = forward_run(&c, &w32, pool, b, out, maxima, err);
done:
	free(w32.layer);
	free(out);
	return rc;
}

/* The texts: [CLS] and [SEP] around ids from 1000 on (past BERT vocabularies' special and
 * single-character entries; half the vocabulary on a tiny one), lengths 16 to 256, from a
 * fixed seed so that every open picks the same channels. The outlier channels they pick
 * keep as close to fp32 as those of real texts: min cosine over SciFact's 1,037-text check
 * 0.99924 with 16 such texts, 0.99921 with 64, 0.99922 with 200 SciFact texts (simulated,
 * docs/bench-gpu.md): the channels that matter are the residual stream's few large ones,
 * which every token shows. */
int forward_cpu_calib_maxima(const bert_config *cfg, const bert_weights *w, threadpool *pool,
			     int32_t cls, int32_t sep, int max_len, float *maxima, emb_err *err)
{
	static const int lens[5] = { 16, 32, 64, 128, 256 };
	const uint32_t V = (uint32_t)cfg->vocab_size, lo = V > 2000 ? 1000 : V / 2;
	if (max_len <= 0 || max_len > cfg->max_tokens) /* forward_cpu's limit */
		max_len = cfg->max_tokens;
	/* ids the vocabulary lacks (BERT's 101 / 102 on a tiny model) would read past the
	 * embeddings: a random id instead */
	if (cls < 0 || (uint32_t)cls >= V)
		cls = (int32_t)lo;
	if (sep < 0 || (uint32_t)sep >= V)
		sep = (int32_t)lo;
	int offs[CALIB_TEXTS + 1] = { 0 };
	uint64_t r = 0x9e3779b97f4a7c15u; /* xorshift64 */
	for (int i = 0; i < CALIB_TEXTS; i++) {
		r ^= r << 13, r ^= r >> 7, r ^= r << 17;
		offs[i + 1] = offs[i] + (lens[r % 5] < max_len ? lens[r % 5] : max_len);
	}
	int32_t *ids = malloc((size_t)offs[CALIB_TEXTS] * sizeof *ids);
	if (!ids)
		return emb_errf(err, EMB_ENOMEM, "out of memory for the calibration texts");
	for (int i = 0; i < CALIB_TEXTS; i++)
		for (int t = offs[i]; t < offs[i + 1]; t++) {
			r ^= r << 13, r ^= r >> 7, r ^= r << 17;
			ids[t] = t == offs[i] ? cls : t == offs[i + 1] - 1 ? sep
			       : (int32_t)(lo + r % (V - lo));
		}
	const fwd_batch bt = { CALIB_TEXTS, ids, offs, NULL };
	const int rc = forward_cpu_input_maxima(cfg, w, pool, &bt, maxima, err);
	free(ids);
	return rc;
}
