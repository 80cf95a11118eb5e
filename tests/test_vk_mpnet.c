/* MPNet on the Vulkan path (forward_vk walking the POS_REL_BUCKETS description) against
 * independent references and the CPU path:
 *   - tiny MPNet (tests/data/tiny-mpnet, 2 layers, hidden 64, head size 16): its 14 sequences
 *     of 1..190 tokens in one batch against Hugging Face transformers' vectors (ref.f32,
 *     computed in PyTorch, never by this code) and against forward_cpu; fp32 within the CPU
 *     test's bars (cosine >= 0.99999, max |diff| <= 2e-5), fp16 cosine >= 0.9995, never NaN
 *     or Inf; random-id batches mixing 1 token and the 200-token limit (distances past
 *     MPNet's max_distance of 128), in one pass and in many passes of a small token budget;
 *     batch invariance through the asynchronous pair; a 201-token sequence refused;
 *   - the comparison can fail: the same weights under a description without the relative
 *     bias, or with BERT's first position id, miss transformers' vectors;
 *   - all-mpnet-base-v2's shapes (12 layers, hidden 768, 12 heads of 64, 3072, vocabulary
 *     30527, 514 positions) with generated weights, GPU against CPU;
 *   - the real all-mpnet-base-v2 when fetched (.cache/models/all-mpnet-base-v2, or
 *     $EMBED_MPNET_MODEL): GPU fp32 against sentence-transformers' own vectors
 *     (tests/data/ref-all-mpnet-base-v2.*) on short reference texts, and against the CPU on
 *     its longest (384-token) text.
 * On a CPU Vulkan implementation (lavapipe, `make test`) the long cases of the large shapes
 * use the first layer only (the kernels are the same for every layer), as test_vk_forward
 * does; on a real GPU every case runs the whole model. Under ASan (make test's second pass,
 * which looks for memory errors rather than numbers, at a fraction of the speed) the large
 * shapes run 2 layers and fewer texts. Exits 77 only without any Vulkan device. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>

#include "forward.h"
#include "forward_vk.h"
#include "model.h"
#include "testutil.h"
#include "threadpool.h"
#include "vk_ctx.h"

static uint32_t rng = 4242;
static uint32_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

static float frand(float scale) /* uniform in [-scale, scale) */
{
	return scale * ((float)(next_rand() >> 8) / 8388608.0f - 1.0f);
}

typedef struct cmp {
	double max_diff, min_cos;
	int nonfinite;
} cmp;

static cmp compare(const float *ref, const float *got, int n, int H)
{
	cmp r = { 0, 1.0, 0 };
	for (int i = 0; i < n; i++) {
		double dot = 0, na = 0, nb = 0;
		for (int d = 0; d < H; d++) {
			double a = ref[(size_t)i * H + d], b = got[(size_t)i * H + d];
			if (!isfinite(b))
				r.nonfinite++;
			if (!(fabs(a - b) <= r.max_diff))
				r.max_diff = fabs(a - b); /* NaN sticks */
			dot += a * b;
			na += a * a;
			nb += b * b;
		}
		double c = dot / (sqrt(na) * sqrt(nb) + 1e-30);
		if (!(c >= r.min_cos))
			r.min_cos = c;
	}
	return r;
}

#ifdef __SANITIZE_ADDRESS__
static const int sanitized = 1;
#else
static const int sanitized = 0;
#endif

static int cpu_device;
static threadpool *pool;

static vk_backend *open_backend(const bert_config *cfg, const bert_weights *w, vk_precision prec,
				int budget, emb_err *err)
{
	vk_options o;
	vk_options_default(&o);
	vk_settings_from_env(&o.set);
	o.allow_cpu = 1;
	o.precision = prec;
	o.token_budget = budget;
	vk_backend *vb = NULL;
	return vk_backend_open(cfg, w, &o, &vb, err) == EMB_OK ? vb : NULL;
}

/* The batch through the GPU at precision prec (and token budget, 0 = default); NULL on error
 * (reported). */
static float *gpu_run(const char *what, const bert_config *cfg, const bert_weights *w,
		      const fwd_batch *bt, vk_precision prec, int budget)
{
	emb_err err = { 0 };
	vk_backend *vb = open_backend(cfg, w, prec, budget, &err);
	CHECK(vb, "%s: vk_backend_open: %s", what, err.msg);
	if (!vb)
		return NULL;
	float *got = malloc((size_t)bt->n * cfg->hidden * sizeof *got);
	int rc = forward_vk(vb, bt, got, &err);
	CHECK(rc == EMB_OK, "%s: forward_vk: %s", what, err.msg);
	vk_backend_close(vb);
	if (rc) {
		free(got);
		return NULL;
	}
	return got;
}

/* GPU against a reference ref: fp32 within the CPU test's bars, f16 paths cosine 0.9995;
 * never a non-finite value. */
static void check_close(const char *what, const char *against, const float *ref, const float *got,
			int n, int H, int fp32, int tokens, int layers)
{
	cmp c = compare(ref, got, n, H);
	printf("%-46s %-4s vs %-12s %2d layers, %3d texts, %5d tokens: max |diff| %.3g, min cosine "
	       "%.9f%s\n", what, fp32 ? "fp32" : "fp16", against, layers, n, tokens, c.max_diff,
	       c.min_cos, c.nonfinite ? ", NON-FINITE" : "");
	CHECK(c.nonfinite == 0, "%s: %d non-finite values", what, c.nonfinite);
	if (fp32)
		CHECK(c.max_diff <= 2e-5 && c.min_cos >= 0.99999, "%s vs %s: max |diff| %.3g, min "
		      "cosine %.9f", what, against, c.max_diff, c.min_cos);
	else
		CHECK(c.min_cos >= 0.9995, "%s vs %s: min cosine %.6f", what, against, c.min_cos);
}

/* A batch of random ids (never MPNet's padding id 1) with these lengths. */
static fwd_batch make_batch(const int *lens, int n, int vocab)
{
	int *offs = malloc(((size_t)n + 1) * sizeof *offs);
	offs[0] = 0;
	for (int i = 0; i < n; i++)
		offs[i + 1] = offs[i] + lens[i];
	int32_t *ids = malloc((size_t)offs[n] * sizeof *ids);
	for (int i = 0; i < n; i++)
		for (int t = 0; t < lens[i]; t++)
			ids[offs[i] + t] = t == 0 ? 0 : t == lens[i] - 1 ? 2
				: (int32_t)(3 + next_rand() % (uint32_t)(vocab - 3));
	return (fwd_batch){ .n = n, .ids = ids, .offs = offs };
}

static void free_batch(fwd_batch *b)
{
	free((void *)b->ids);
	free((void *)b->offs);
}

/* GPU (both precisions, token budget `budget`) against the CPU on batch bt, plus batch
 * invariance: each text alone through forward_vk_submit/wait, two in flight. */
static void gpu_vs_cpu(const char *what, const bert_config *cfg, const bert_weights *w,
		       const fwd_batch *bt, int budget)
{
	const int H = cfg->hidden, n = bt->n;
	float *ref = malloc((size_t)n * H * sizeof *ref);
	emb_err err = { 0 };
	int rc = forward_cpu(cfg, w, pool, bt, ref, &err);
	CHECK(rc == EMB_OK, "%s: forward_cpu: %s", what, err.msg);
	const vk_precision precs[2] = { VK_PREC_FP32, VK_PREC_FP16 };
	for (int p = 0; p < 2 && !rc; p++) {
		vk_backend *vb = open_backend(cfg, w, precs[p], budget, &err);
		CHECK(vb, "%s: vk_backend_open: %s", what, err.msg);
		if (!vb)
			continue;
		float *got = malloc((size_t)n * H * sizeof *got), *one = malloc((size_t)n * H * sizeof *one);
		rc = forward_vk(vb, bt, got, &err);
		CHECK(rc == EMB_OK, "%s: forward_vk: %s", what, err.msg);
		if (!rc)
			check_close(what, "CPU fp32", ref, got, n, H, p == 0, bt->offs[n], cfg->layers);
		for (int i = 0; i < n && !rc; i++) {
			int offs[2] = { 0, bt->offs[i + 1] - bt->offs[i] };
			fwd_batch b1 = { .n = 1, .ids = bt->ids + bt->offs[i], .offs = offs };
			rc = forward_vk_submit(vb, &b1, one + (size_t)i * H, &err);
			CHECK(rc == EMB_OK, "%s: forward_vk_submit: %s", what, err.msg);
		}
		while (!rc && (rc = forward_vk_wait(vb, &err)) == EMB_OK && forward_vk_wait(vb, &err) == EMB_OK)
			break;
		if (!rc) {
			cmp c = compare(got, one, n, H);
			CHECK(c.max_diff <= 1e-6, "%s: a vector depends on its batch: %g", what, c.max_diff);
		}
		vk_backend_close(vb);
		free(got);
		free(one);
		rc = 0;
	}
	free(ref);
}

/* ids.json of a tiny model directory as one batch. */
static fwd_batch load_ids(const char *dir)
{
	char p[512];
	snprintf(p, sizeof p, "%s/ids.json", dir);
	json_error_t je;
	json_t *a = json_load_file(p, 0, &je);
	if (!a || !json_is_array(a)) {
		fprintf(stderr, "%s: %s\n", p, je.text);
		exit(1);
	}
	const int n = (int)json_array_size(a);
	int *offs = calloc((size_t)n + 1, sizeof *offs);
	for (int i = 0; i < n; i++)
		offs[i + 1] = offs[i] + (int)json_array_size(json_array_get(a, (size_t)i));
	int32_t *ids = malloc((size_t)offs[n] * sizeof *ids);
	for (int i = 0; i < n; i++) {
		json_t *q = json_array_get(a, (size_t)i);
		for (size_t j = 0; j < json_array_size(q); j++)
			ids[offs[i] + (int)j] = (int32_t)json_integer_value(json_array_get(q, j));
	}
	json_decref(a);
	return (fwd_batch){ .n = n, .ids = ids, .offs = offs };
}

static float *load_f32(const char *path, size_t floats)
{
	FILE *f = fopen(path, "rb");
	float *r = malloc(floats * sizeof *r);
	if (!f || fread(r, sizeof *r, floats, f) != floats || fgetc(f) != EOF) {
		fprintf(stderr, "%s: missing or not %zu floats\n", path, floats);
		exit(1);
	}
	fclose(f);
	return r;
}

static void test_tiny(void)
{
	const char *dir = "tests/data/tiny-mpnet";
	bert_config cfg;
	bert_weights w;
	emb_err err = { 0 };
	if (bert_config_load(dir, &cfg, &err) || bert_weights_load(dir, &cfg, &w, &err)) {
		CHECK(0, "%s: %s", dir, err.msg);
		return;
	}
	CHECK(cfg.arch.pos == POS_REL_BUCKETS && cfg.arch.pos_offset == 2 && !cfg.arch.token_types &&
	      cfg.max_tokens == 200, "%s: not the MPNet description", dir);
	const int H = cfg.hidden;

	/* transformers' vectors, all 14 sequences (1..190 tokens) in one batch */
	fwd_batch bt = load_ids(dir);
	float *ref = load_f32("tests/data/tiny-mpnet/ref.f32", (size_t)bt.n * H);
	const vk_precision precs[2] = { VK_PREC_FP32, VK_PREC_FP16 };
	for (int p = 0; p < 2; p++) {
		float *got = gpu_run("tiny MPNet, ids.json", &cfg, &w, &bt, precs[p], 0);
		if (got)
			check_close("tiny MPNet, ids.json, one batch", "transformers", ref, got, bt.n, H,
				    p == 0, bt.offs[bt.n], cfg.layers);
		free(got);
	}
	gpu_vs_cpu("tiny MPNet, ids.json, one batch", &cfg, &w, &bt, 0);

	/* The comparison can fail: the same weights under a description without the relative
	 * bias, or with BERT's first position id, are far from transformers. */
	bert_config wrong = cfg;
	wrong.arch.pos = POS_ABSOLUTE;
	float *got = gpu_run("tiny MPNet without the bias", &wrong, &w, &bt, VK_PREC_FP32, 0);
	cmp c = got ? compare(ref, got, bt.n, H) : (cmp){ 0, 1, 0 };
	CHECK(got && c.max_diff > 1e-3, "no relative bias still matches (max |diff| %.3g)", c.max_diff);
	printf("tiny MPNet without the relative bias: max |diff| %.3g (must miss)\n", c.max_diff);
	free(got);
	wrong = cfg;
	wrong.arch.pos_offset = 0;
	got = gpu_run("tiny MPNet, positions from 0", &wrong, &w, &bt, VK_PREC_FP32, 0);
	c = got ? compare(ref, got, bt.n, H) : (cmp){ 0, 1, 0 };
	CHECK(got && c.max_diff > 1e-3, "positions from 0 still match (max |diff| %.3g)", c.max_diff);
	printf("tiny MPNet with positions from 0: max |diff| %.3g (must miss)\n", c.max_diff);
	free(got);
	free(ref);
	free_batch(&bt);

	/* Random ids, 1 token to the 200-token limit in one batch: partial query blocks and key
	 * chunks, distances past 128; then the same in passes of a 256-token budget (sequences
	 * restart their positions in every pass). */
	static const int mixed[] = { 200, 1, 7, 2, 64, 65, 130, 1, 129, 33, 3, 190, 128, 127, 17 };
	bt = make_batch(mixed, (int)(sizeof mixed / sizeof *mixed), cfg.vocab_size);
	gpu_vs_cpu("tiny MPNet, 1..200 tokens mixed", &cfg, &w, &bt, 0);
	gpu_vs_cpu("tiny MPNet, 1..200 tokens, 256-token passes", &cfg, &w, &bt, 256);

	/* the position embeddings end at 200 tokens (202 rows from id 2): 201 is refused */
	vk_backend *vb = open_backend(&cfg, &w, VK_PREC_FP32, 0, &err);
	CHECK(vb, "vk_backend_open: %s", err.msg);
	if (vb) {
		int offs[2] = { 0, 201 };
		int32_t *ids = calloc(201, sizeof *ids);
		fwd_batch lng = { .n = 1, .ids = ids, .offs = offs };
		float *out = malloc((size_t)H * sizeof *out);
		int rc = forward_vk(vb, &lng, out, &err);
		CHECK(rc == EMB_EINVAL, "a 201-token sequence accepted (rc %d)", rc);
		printf("201 tokens: %s\n", err.msg);
		free(ids);
		free(out);
		vk_backend_close(vb);
	}
	free_batch(&bt);
	bert_weights_free(&w);
}

/* all-mpnet-base-v2's configuration with generated weights: uniform, scaled so that the
 * activations stay in the range trained weights give (LayerNorm gains near 1). */
static void test_base_shapes(void)
{
	bert_config cfg;
	emb_err err = { 0 };
	if (bert_config_load("tests/data/tiny-mpnet", &cfg, &err)) {
		CHECK(0, "%s", err.msg);
		return;
	}
	cfg.vocab_size = 30527;
	cfg.hidden = 768;
	cfg.layers = sanitized ? 2 : 12;
	cfg.heads = 12;
	cfg.intermediate = 3072;
	cfg.max_positions = 514;
	cfg.max_tokens = 384;
	const size_t H = 768, FF = 3072, L = (size_t)cfg.layers, V = 30527, P = 514, NB = 32, NH = 12;
	const size_t per_layer = 4 * H * H + 3 * H + H + 2 * FF * H + FF + H + 4 * H;
	bert_weights w = { 0 };
	w.arena_floats = V * H + P * H + 2 * H + NB * NH + L * per_layer;
	w.arena = malloc(w.arena_floats * sizeof(float));
	w.layer = calloc(L, sizeof *w.layer);
	if (!w.arena || !w.layer) {
		CHECK(0, "out of memory for generated weights");
		return;
	}
	float *a = w.arena;
#define TAKE(ptr, count, expr)                               \
	do {                                                 \
		float *q_ = a;                               \
		for (size_t i_ = 0; i_ < (count); i_++)      \
			q_[i_] = (expr);                     \
		ptr = q_;                                    \
		a += (count);                                \
	} while (0)
	TAKE(w.word_emb, V * H, frand(0.5f));
	TAKE(w.pos_emb, P * H, frand(0.5f));
	TAKE(w.emb_ln_g, H, 1.0f + frand(0.1f));
	TAKE(w.emb_ln_b, H, frand(0.1f));
	TAKE(w.rel_bias, NB * NH, frand(1.0f));
	const float sh = 1.7f / sqrtf((float)H), si = 1.7f / sqrtf((float)FF);
	for (size_t l = 0; l < L; l++) {
		bert_layer_weights *y = &w.layer[l];
		TAKE(y->qkv_w, 3 * H * H, frand(sh));
		TAKE(y->qkv_b, 3 * H, frand(0.1f));
		TAKE(y->attn_out_w, H * H, frand(sh));
		TAKE(y->attn_out_b, H, frand(0.1f));
		TAKE(y->ln1_g, H, 1.0f + frand(0.1f));
		TAKE(y->ln1_b, H, frand(0.1f));
		TAKE(y->ffn_up_w, FF * H, frand(sh));
		TAKE(y->ffn_up_b, FF, frand(0.1f));
		TAKE(y->ffn_down_w, H * FF, frand(si));
		TAKE(y->ffn_down_b, H, frand(0.1f));
		TAKE(y->ln2_g, H, 1.0f + frand(0.1f));
		TAKE(y->ln2_b, H, frand(0.1f));
	}
#undef TAKE
	if ((size_t)(a - w.arena) != w.arena_floats) {
		CHECK(0, "generated weights: %zu floats of %zu", (size_t)(a - w.arena), w.arena_floats);
		return;
	}
	{
		emb_err perr;
		if (bert_weights_pack(&cfg, &w, &perr)) {
			CHECK(0, "packing generated weights: %s", perr.msg);
			return;
		}
	}
	/* short texts through every layer; the 384-token limit beside short texts (one layer
	 * on a CPU implementation) */
	static const int shortl[] = { 1, 9, 40, 3 };
	fwd_batch bt = make_batch(shortl, 4, (int)V);
	gpu_vs_cpu("all-mpnet-base-v2 shapes, short texts", &cfg, &w, &bt, 0);
	free_batch(&bt);
	static const int longl[] = { 384, 2, 200 };
	bt = make_batch(longl, 3, (int)V);
	bert_config c1 = cfg;
	if (cpu_device)
		c1.layers = 1;
	gpu_vs_cpu(cpu_device ? "all-mpnet-base-v2 shapes, to 384, first layer"
			      : "all-mpnet-base-v2 shapes, to 384 tokens", &c1, &w, &bt, 0);
	free_batch(&bt);
	bert_weights_free(&w);
}

/* The real all-mpnet-base-v2 against sentence-transformers, when fetched. */
static void test_real_weights(void)
{
	const char *dir = getenv("EMBED_MPNET_MODEL");
	if (!dir || !*dir)
		dir = ".cache/models/all-mpnet-base-v2";
	char p[4096];
	snprintf(p, sizeof p, "%s/model.safetensors", dir);
	if (access(p, R_OK) != 0) {
		printf("all-mpnet-base-v2 not fetched: its real-weight cases skipped\n");
		return;
	}
	bert_config cfg;
	bert_weights w;
	emb_err err = { 0 };
	if (bert_config_load(dir, &cfg, &err) || bert_weights_load(dir, &cfg, &w, &err)) {
		CHECK(0, "%s: %s", dir, err.msg);
		return;
	}
	const char *prefix = "tests/data/ref-all-mpnet-base-v2";
	snprintf(p, sizeof p, "%s.jsonl", prefix);
	FILE *f = fopen(p, "r");
	if (!f) {
		CHECK(0, "%s: cannot open", p);
		bert_weights_free(&w);
		return;
	}
	/* the reference texts' ids (as sentence-transformers tokenized them) */
	int n = 0, cap = 0;
	int32_t **seq = NULL;
	int *len = NULL;
	char *line = NULL;
	size_t lcap = 0;
	while (getline(&line, &lcap, f) > 0) {
		json_t *o = json_loads(line, JSON_ALLOW_NUL, NULL);
		json_t *ids = o ? json_object_get(o, "ids") : NULL;
		if (ids) {
			if (n == cap) {
				cap = cap ? 2 * cap : 256;
				seq = realloc(seq, (size_t)cap * sizeof *seq);
				len = realloc(len, (size_t)cap * sizeof *len);
			}
			len[n] = (int)json_array_size(ids);
			seq[n] = malloc((size_t)len[n] * sizeof **seq);
			for (int j = 0; j < len[n]; j++)
				seq[n][j] = (int32_t)json_integer_value(json_array_get(ids, (size_t)j));
			n++;
		}
		json_decref(o);
	}
	free(line);
	fclose(f);
	const int H = cfg.hidden;
	snprintf(p, sizeof p, "%s.f32", prefix);
	float *ref = load_f32(p, (size_t)n * H);

	/* the shortest texts (up to 24 tokens, at most 8 on a CPU implementation) and the longest */
	int pick[64], np = 0, longest = 0;
	for (int i = 0; i < n; i++) {
		if (len[i] <= 24 && np < (sanitized ? 3 : cpu_device ? 8 : 64))
			pick[np++] = i;
		if (len[i] > len[longest])
			longest = i;
	}
	int *offs = malloc(((size_t)np + 1) * sizeof *offs);
	offs[0] = 0;
	for (int k = 0; k < np; k++)
		offs[k + 1] = offs[k] + len[pick[k]];
	int32_t *ids = malloc((size_t)offs[np] * sizeof *ids);
	float *want = malloc((size_t)np * H * sizeof *want);
	for (int k = 0; k < np; k++) {
		memcpy(ids + offs[k], seq[pick[k]], (size_t)len[pick[k]] * sizeof *ids);
		memcpy(want + (size_t)k * H, ref + (size_t)pick[k] * H, (size_t)H * sizeof *want);
	}
	fwd_batch bt = { .n = np, .ids = ids, .offs = offs };
	const vk_precision precs[2] = { VK_PREC_FP32, VK_PREC_FP16 };
	for (int q = 0; q < 2; q++) {
		float *got = gpu_run("all-mpnet-base-v2", &cfg, &w, &bt, precs[q], 0);
		if (got)
			check_close("all-mpnet-base-v2, short reference texts", "ST", want, got, np, H,
				    q == 0, offs[np], cfg.layers);
		free(got);
	}
	/* the longest reference text (the 384-token limit): GPU against CPU */
	int loffs[2] = { 0, len[longest] };
	fwd_batch lb = { .n = 1, .ids = seq[longest], .offs = loffs };
	bert_config c1 = cfg;
	if (cpu_device)
		c1.layers = 1;
	gpu_vs_cpu(cpu_device ? "all-mpnet-base-v2, longest text, first layer"
			      : "all-mpnet-base-v2, longest text", &c1, &w, &lb, 0);
	for (int i = 0; i < n; i++)
		free(seq[i]);
	free(seq);
	free(len);
	free(ref);
	free(ids);
	free(offs);
	free(want);
	bert_weights_free(&w);
}

/* As in test_vk_forward: one context kept open keeps lavapipe loaded, so LeakSanitizer can
 * still name (and the suppressions cover) what the driver leaks. */
static vk_ctx keep_driver_loaded;
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libvulkan_lvp.so\nleak:libLLVM\n";
}

int main(void)
{
	char list[2048];
	emb_err err = { 0 };
	(void)vk_ctx_open(&keep_driver_loaded, -1, 1, NULL, &err);
	int ndev = vk_list_devices(list, sizeof list, &err);
	if (ndev <= 0) {
		printf("no Vulkan device: %s\n", ndev < 0 ? err.msg : "the loader lists none");
		return 77;
	}
	cpu_device = keep_driver_loaded.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
	printf("device: %s\n", keep_driver_loaded.name);
	pool = threadpool_create(0);
	test_tiny();
	test_base_shapes();
	test_real_weights();
	threadpool_destroy(pool);
	return test_done("test_vk_mpnet");
}
