/* JinaBERT (jina-embeddings-v2-small-en / -base-en) on the CPU against an independent
 * PyTorch implementation (tests/jina_reference.py), with generated weights: none of the
 * real ones can be had here. The weights are a function of (tensor seed, index) through
 * splitmix64, computed here exactly as jina_reference.py computes them, written to a
 * temporary model directory beside the published config.json (tests/data/jina-NAME/), and
 * loaded through bert_config_load / bert_weights_load like any downloaded model. Cases:
 *   tiny  (2 x 48, 6 heads: ALiBi slopes of a head count that is not a power of two),
 *         1..1200 tokens around every query-block and key-chunk boundary;
 *   small (4 x 512 x 8 heads, I 2048: the published shape), 1..4,096 tokens, and 8,192
 *         with EMBED_JINA_LONG=1;
 *   base  (12 x 768 x 12 heads, I 3072: the published shape), 1..2,048 tokens, and 4,096
 *         with EMBED_JINA_LONG=1; skipped under ASan (memory errors are the tiny and small
 *         cases' job there, numbers the plain pass's).
 * (EMBED_JINA_ONLY=NAME runs that case alone, all its lengths: for timing.)
 * Each must match with max |diff| <= 2e-5 and cosine >= 0.99999. Also: the description
 * read from config.json, the slopes for 6, 8, 12 and 16 heads, checks that the comparison
 * can fail (no ALiBi, GEGLU halves swapped), a config without feed_forward_type "geglu"
 * refused, and embed_open --device auto and --device gpu on a tiny JinaBERT with a BERT
 * tokenizer.json.
 * The Vulkan path (forward_vk), where any Vulkan device exists (lavapipe in make test):
 * fp32 against the CPU and PyTorch within the same bars, fp16 (cooperative matrices where
 * the device has them) cosine >= 0.9995, never NaN/Inf; tiny at every length to 1,200
 * (past the attention kernel's query block and key chunk), small to 65 tokens on lavapipe
 * and every case's lengths (to 4,096, base to 2,048) on a GPU; the GPU comparison can fail
 * too (GEGLU halves swapped in the uploaded weights, no ALiBi). */
#include <jansson.h>
#include <math.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "embed.h"
#include "forward.h"
#include "gemm.h"
#include "forward_vk.h"
#include "model.h"
#include "testutil.h"
#include "threadpool.h"
#include "vk_ctx.h"

#define VOCAB 30528

static uint64_t splitmix(uint64_t seed, uint64_t i)
{
	uint64_t z = (seed << 32) + i + 0x9E3779B97F4A7C15ull;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* [-1, 1) in steps of 2^-23, as jina_reference.uniform */
static float uniform(uint64_t seed, uint64_t i)
{
	return (float)((double)(splitmix(seed, i) >> 40) * (1.0 / 8388608.0) - 1.0);
}

/* --- a safetensors file of the generated weights, in jina_reference.tensor_specs' order */

typedef struct spec {
	char name[96];
	int64_t rows, cols; /* cols 0: a vector */
	int kind;           /* 0 uniform * scale, 1 gamma, 2 beta */
	float scale;
} spec;

static int specs(int layers, int H, int nI, float sh, float si, spec *out)
{
	int n = 0;
#define ADD(nm, r, c, k, s)                                                                      \
	do {                                                                                    \
		snprintf(out[n].name, sizeof out[n].name, "%s", nm);                            \
		out[n].rows = r, out[n].cols = c, out[n].kind = k, out[n].scale = s;            \
		n++;                                                                            \
	} while (0)
	ADD("embeddings.word_embeddings.weight", VOCAB, H, 0, 0.5f);
	ADD("embeddings.token_type_embeddings.weight", 2, H, 0, 0.5f);
	ADD("embeddings.LayerNorm.weight", H, 0, 1, 0);
	ADD("embeddings.LayerNorm.bias", H, 0, 2, 0);
	static const char *const att[4] = { "attention.self.query", "attention.self.key",
					     "attention.self.value", "attention.output.dense" };
	char nm[96];
	for (int l = 0; l < layers; l++) {
		for (int m = 0; m < 4; m++) {
			snprintf(nm, sizeof nm, "encoder.layer.%d.%s.weight", l, att[m]);
			ADD(nm, H, H, 0, sh);
			snprintf(nm, sizeof nm, "encoder.layer.%d.%s.bias", l, att[m]);
			ADD(nm, H, 0, 2, 0);
		}
		snprintf(nm, sizeof nm, "encoder.layer.%d.attention.output.LayerNorm.weight", l);
		ADD(nm, H, 0, 1, 0);
		snprintf(nm, sizeof nm, "encoder.layer.%d.attention.output.LayerNorm.bias", l);
		ADD(nm, H, 0, 2, 0);
		snprintf(nm, sizeof nm, "encoder.layer.%d.mlp.gated_layers.weight", l);
		ADD(nm, 2 * nI, H, 0, sh);
		snprintf(nm, sizeof nm, "encoder.layer.%d.mlp.wo.weight", l);
		ADD(nm, H, nI, 0, si);
		snprintf(nm, sizeof nm, "encoder.layer.%d.mlp.wo.bias", l);
		ADD(nm, H, 0, 2, 0);
		snprintf(nm, sizeof nm, "encoder.layer.%d.mlp.layernorm.weight", l);
		ADD(nm, H, 0, 1, 0);
		snprintf(nm, sizeof nm, "encoder.layer.%d.mlp.layernorm.bias", l);
		ADD(nm, H, 0, 2, 0);
	}
#undef ADD
	return n;
}

static void write_weights(const char *dir, int seed, int layers, int H, int nI, float sh, float si)
{
	spec *sp = malloc(((size_t)layers * 15 + 4) * sizeof *sp);
	int n = specs(layers, H, nI, sh, si, sp);
	json_t *hdr = json_object();
	uint64_t off = 0;
	for (int k = 0; k < n; k++) {
		uint64_t count = (uint64_t)sp[k].rows * (sp[k].cols ? (uint64_t)sp[k].cols : 1);
		json_t *shape = sp[k].cols ? json_pack("[II]", (json_int_t)sp[k].rows, (json_int_t)sp[k].cols)
					   : json_pack("[I]", (json_int_t)sp[k].rows);
		json_object_set_new(hdr, sp[k].name,
				    json_pack("{s:s, s:o, s:[II]}", "dtype", "F32", "shape", shape,
					      "data_offsets", (json_int_t)off, (json_int_t)(off + 4 * count)));
		off += 4 * count;
	}
	char *h = json_dumps(hdr, JSON_COMPACT);
	size_t hl = strlen(h), pad = (8 - hl % 8) % 8;
	char p[512];
	snprintf(p, sizeof p, "%s/model.safetensors", dir);
	FILE *f = fopen(p, "wb");
	uint64_t hlen = hl + pad;
	if (!f || fwrite(&hlen, 8, 1, f) != 1 || fwrite(h, 1, hl, f) != hl) {
		perror(p);
		exit(1);
	}
	for (size_t i = 0; i < pad; i++)
		fputc(' ', f);
	float *buf = malloc(1 << 22);
	for (int k = 0; k < n; k++) {
		uint64_t count = (uint64_t)sp[k].rows * (sp[k].cols ? (uint64_t)sp[k].cols : 1);
		uint64_t seed_k = (uint64_t)seed * 65536 + (uint64_t)k;
		for (uint64_t i0 = 0; i0 < count; i0 += 1 << 20) {
			size_t m = count - i0 < (1 << 20) ? (size_t)(count - i0) : (size_t)1 << 20;
			for (size_t i = 0; i < m; i++) {
				float v = uniform(seed_k, i0 + i);
				buf[i] = sp[k].kind == 1 ? 1.0f + v * 0.125f
					 : sp[k].kind == 2 ? v * 0.125f : v * sp[k].scale;
			}
			if (fwrite(buf, 4, m, f) != m) {
				perror(p);
				exit(1);
			}
		}
	}
	if (fclose(f)) {
		perror(p);
		exit(1);
	}
	free(buf);
	free(h);
	json_decref(hdr);
	free(sp);
}

static void copy_file(const char *from, const char *to)
{
	FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
	if (!a || !b) {
		perror(a ? to : from);
		exit(1);
	}
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, a)) > 0)
		fwrite(buf, 1, n, b);
	fclose(a);
	if (fclose(b)) {
		perror(to);
		exit(1);
	}
}

/* A model directory for case `name`: its published-style config.json, mean pooling +
 * normalisation (sentence-transformers' modules), the generated weights. */
static void make_model(const char *name, const char *tmp, int *seed, json_t **lengths)
{
	char p[512], q[512];
	snprintf(p, sizeof p, "tests/data/jina-%s/config.json", name);
	snprintf(q, sizeof q, "%s/config.json", tmp);
	copy_file(p, q);
	snprintf(p, sizeof p, "tests/data/jina-%s/case.json", name);
	json_error_t je;
	json_t *c = json_load_file(p, 0, &je), *cfg = json_load_file(q, 0, &je);
	if (!c || !cfg) {
		fprintf(stderr, "%s: %s\n", p, je.text);
		exit(1);
	}
	*seed = (int)json_integer_value(json_object_get(c, "seed"));
	*lengths = json_incref(json_object_get(c, "lengths"));
	const char *mods = "[{\"idx\": 0, \"name\": \"0\", \"path\": \"\", \"type\": "
			   "\"sentence_transformers.models.Transformer\"}, {\"idx\": 1, \"name\": \"1\", "
			   "\"path\": \"1_Pooling\", \"type\": \"sentence_transformers.models.Pooling\"}, "
			   "{\"idx\": 2, \"name\": \"2\", \"path\": \"2_Normalize\", \"type\": "
			   "\"sentence_transformers.models.Normalize\"}]";
	test_write_file(tmp, "modules.json", mods, strlen(mods));
	snprintf(p, sizeof p, "%s/1_Pooling", tmp);
	mkdir(p, 0755);
	const char *pool = "{\"pooling_mode_mean_tokens\": true}";
	test_write_file(tmp, "1_Pooling/config.json", pool, strlen(pool));
	/* as jinaai/jina-embeddings-v2-*-en publish it today: a tokenizer limit of 2^31, which
	 * must leave the model's 8192 in force */
	const char *tc = "{\"do_lower_case\": true, \"model_max_length\": 2147483648, "
			 "\"tokenizer_class\": \"BertTokenizer\"}";
	test_write_file(tmp, "tokenizer_config.json", tc, strlen(tc));
	write_weights(tmp, *seed, (int)json_integer_value(json_object_get(cfg, "num_hidden_layers")),
		      (int)json_integer_value(json_object_get(cfg, "hidden_size")),
		      (int)json_integer_value(json_object_get(cfg, "intermediate_size")),
		      (float)json_real_value(json_object_get(c, "scale_h")),
		      (float)json_real_value(json_object_get(c, "scale_i")));
	json_decref(c);
	json_decref(cfg);
}

static void rm_rf(const char *dir)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0, "%s", cmd);
}

/* Worst cosine and max |difference| of got against ref over n rows of H. */
static void compare(const float *got, const float *ref, int n, int H, double *min_cos,
		    double *max_diff)
{
	*min_cos = 1, *max_diff = 0;
	for (int i = 0; i < n; i++) {
		double dot = 0, na = 0, nb = 0;
		for (int j = 0; j < H; j++) {
			double a = got[(size_t)i * H + j], b = ref[(size_t)i * H + j];
			dot += a * b, na += a * a, nb += b * b;
			double d = fabs(a - b);
			if (!(d <= *max_diff))
				*max_diff = d; /* NaN sticks */
		}
		double c = dot / sqrt(na * nb);
		if (!(c >= *min_cos))
			*min_cos = c;
	}
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* The Vulkan device the GPU cases run on: 0 none (they are skipped), 1 a CPU implementation
 * (lavapipe: fewer and shorter texts on the larger shapes), 2 a GPU. One context stays open
 * for the whole run, so that LeakSanitizer can name what lavapipe leaks (as test_vk_mpnet). */
static int vk_device;
static vk_ctx keep_driver_loaded;
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libvulkan_lvp.so\nleak:libLLVM\n";
}

/* forward_vk at precision prec on the batch; NULL after an error (reported). */
static float *gpu_run(const char *what, const bert_config *cfg, const bert_weights *w,
		      const fwd_batch *b, vk_precision prec, const char *attn)
{
	vk_options o;
	vk_options_default(&o);
	vk_settings_from_env(&o.set);
	if (attn) /* a kernel forced, as EMBED_VK_ATTN does */
		snprintf(o.set.attn, sizeof o.set.attn, "%s", attn);
	o.allow_cpu = 1;
	o.precision = prec;
	vk_backend *vb = NULL;
	emb_err err = { 0 };
	int rc = vk_backend_open(cfg, w, &o, &vb, &err);
	CHECK(rc == EMB_OK, "%s: vk_backend_open: %s", what, err.msg);
	if (rc)
		return NULL;
	float *got = malloc((size_t)b->n * cfg->hidden * sizeof *got);
	rc = forward_vk(vb, b, got, &err);
	CHECK(rc == EMB_OK, "%s: forward_vk: %s", what, err.msg);
	vk_backend_close(vb);
	if (rc)
		free(got), got = NULL;
	return got;
}

/* The GPU (fp32, then fp16: the cooperative-matrix path where the device has it) against
 * the CPU's vectors cpu and PyTorch's ref: fp32 within the CPU's own bars (max |diff| <=
 * 2e-5, cosine >= 0.99999), fp16 cosine >= 0.9995, never NaN or Inf. For tiny, also that
 * the GPU comparison can fail: the GEGLU halves swapped, or no ALiBi. */
static void gpu_case(const char *name, const bert_config *cfg, bert_weights *w, const fwd_batch *b,
		     const float *cpu, const float *ref)
{
	const int H = cfg->hidden, n = b->n;
	/* EMBED_JINA_DIAG=1: fp16 also with the lane attention kernel (EMBED_VK_ATTN=scalar)
	 * instead of the default tensor-core one (attn_fa64 with ALiBi on the cooperative-matrix
	 * path), and every sequence's cosine below 0.99999 printed: which of the two a miss
	 * follows (docs/jina-gpu.md) */
	const char *dg = getenv("EMBED_JINA_DIAG");
	const int diag = dg && *dg == '1';
	for (int k = 0; k < 2 + diag; k++) {
		const int fp32 = k == 0;
		char what[80];
		snprintf(what, sizeof what, "jina-%s on the GPU, %s%s", name, fp32 ? "fp32" : "fp16",
			 k == 2 ? " (lane attention)" : "");
		float *got = gpu_run(what, cfg, w, b, fp32 ? VK_PREC_FP32 : VK_PREC_FP16,
				     k == 2 ? "scalar" : NULL);
		if (!got)
			continue;
		double cos, diff, rcos, rdiff;
		compare(got, cpu, n, H, &cos, &diff);
		compare(got, ref, n, H, &rcos, &rdiff);
		int bad = 0;
		for (size_t i = 0; i < (size_t)n * H; i++)
			bad += !isfinite(got[i]);
		printf("%s: %d sequences of %d..%d tokens: vs CPU fp32 max |diff| %.3g, min cosine "
		       "%.9f; vs PyTorch %.3g, %.9f; non-finite %d\n", what, n, b->offs[1] - b->offs[0],
		       b->offs[n] - b->offs[n - 1], diff, cos, rdiff, rcos, bad);
		fflush(stdout);
		CHECK(bad == 0, "%s: %d non-finite values", what, bad);
		for (int i = 0; diag && i < n; i++) {
			double c1, d1;
			compare(got + (size_t)i * H, cpu + (size_t)i * H, 1, H, &c1, &d1);
			if (c1 < 0.99999)
				printf("  sequence %d (%d tokens): cosine %.6f, max |diff| %.3g\n", i,
				       b->offs[i + 1] - b->offs[i], c1, d1);
		}
		if (fp32)
			CHECK(diff <= 2e-5 && cos >= 0.99999 && rdiff <= 2e-5 && rcos >= 0.99999,
			      "%s: off the CPU or PyTorch", what);
		else if (k == 2) /* a diagnosis, not a bar */
			;
		else
			CHECK(cos >= 0.9995 && rcos >= 0.9995, "%s: cosine %.6f vs CPU", what, cos);
		free(got);
	}
	if (strcmp(name, "tiny") != 0)
		return;
	/* The comparison can fail on the GPU too: the GEGLU halves swapped in the weights it
	 * uploads (the f32 matrices, not the CPU's packed copy), or no ALiBi (a description
	 * with zero position embeddings instead). */
	const size_t nI = (size_t)cfg->intermediate;
	float *sw = malloc(2 * nI * H * sizeof *sw);
	const float *orig = w->layer[0].ffn_up_w;
	memcpy(sw, orig + nI * H, nI * H * sizeof *sw);
	memcpy(sw + nI * H, orig, nI * H * sizeof *sw);
	w->layer[0].ffn_up_w = sw;
	float *got = gpu_run("jina-tiny, GEGLU halves swapped", cfg, w, b, VK_PREC_FP32, NULL);
	w->layer[0].ffn_up_w = orig;
	free(sw);
	double cos, diff;
	if (got) {
		compare(got, cpu, n, H, &cos, &diff);
		printf("jina-tiny on the GPU with the GEGLU halves swapped: max |diff| %.3g (must miss)\n",
		       diff);
		CHECK(diff > 1e-3, "GPU: GEGLU halves swapped still match (diff %.3g)", diff);
		free(got);
	}
	bert_config noalibi = *cfg;
	noalibi.arch.pos = POS_ABSOLUTE;
	float *zeros = calloc((size_t)cfg->max_positions * H, sizeof *zeros);
	w->pos_emb = zeros;
	got = gpu_run("jina-tiny without ALiBi", &noalibi, w, b, VK_PREC_FP32, NULL);
	w->pos_emb = NULL;
	free(zeros);
	if (got) {
		compare(got, cpu, n, H, &cos, &diff);
		printf("jina-tiny on the GPU without ALiBi: max |diff| %.3g (must miss)\n", diff);
		CHECK(diff > 1e-3, "GPU: no ALiBi still matches (diff %.3g)", diff);
		free(got);
	}
}

/* max_len: sequences longer than this are left out (their reference rows skipped). */
static void test_case(const char *name, int max_len, int gpu_max_len, threadpool *pool)
{
	char tmp[256];
	test_tmpdir(tmp);
	int seed;
	json_t *lens;
	double t0 = now();
	make_model(name, tmp, &seed, &lens);
	bert_config cfg;
	bert_weights w;
	emb_err err = { 0 };
	int rc = bert_config_load(tmp, &cfg, &err);
	CHECK(rc == EMB_OK, "%s: %s", name, err.msg);
	if (rc == EMB_OK && (rc = bert_weights_load(tmp, &cfg, &w, &err)))
		CHECK(0, "%s: %s", name, err.msg);
	if (rc) {
		rm_rf(tmp);
		return;
	}
	const model_arch *a = &cfg.arch;
	CHECK(a->family == FAMILY_JINABERT && a->pos == POS_ALIBI && a->ffn == FFN_GEGLU &&
	      a->norm == NORM_POST && a->token_types && a->pos_offset == 0 &&
	      strcmp(a->name, "jinabert") == 0 && w.pos_emb == NULL && w.type_emb != NULL &&
	      w.rel_bias == NULL && w.layer[0].ffn_up_b == NULL,
	      "%s: JinaBERT description wrong", name);
	CHECK(cfg.vocab_size == VOCAB && cfg.max_tokens == 8192 && cfg.pooling == POOL_MEAN &&
	      cfg.normalize && fabsf(cfg.layer_norm_eps - 1e-12f) < 1e-15f,
	      "%s: vocab %d, max_tokens %d, pooling %d", name, cfg.vocab_size, cfg.max_tokens,
	      cfg.pooling);

	const int H = cfg.hidden, n_all = (int)json_array_size(lens);
	float *ref_all = malloc((size_t)n_all * H * sizeof(float));
	char p[512];
	snprintf(p, sizeof p, "tests/data/jina-%s/ref.f32", name);
	FILE *f = fopen(p, "rb");
	if (!f || fread(ref_all, sizeof(float), (size_t)n_all * H, f) != (size_t)n_all * H ||
	    fgetc(f) != EOF) {
		fprintf(stderr, "%s: missing or not %d rows of %d floats\n", p, n_all, H);
		exit(1);
	}
	fclose(f);
	/* the cases' token ids, as jina_reference.token_ids */
	int n = 0, *offs = calloc((size_t)n_all + 1, sizeof *offs);
	int32_t *ids = malloc(((size_t)n_all * 8192) * sizeof *ids);
	float *ref = malloc((size_t)n_all * H * sizeof(float));
	for (int i = 0; i < n_all; i++) {
		int len = (int)json_integer_value(json_array_get(lens, (size_t)i));
		if (len > max_len)
			continue;
		for (int j = 0; j < len; j++)
			ids[offs[n] + j] = (int32_t)(splitmix((uint64_t)seed * 65536 + 60000 + (uint64_t)i,
							      (uint64_t)j) % VOCAB);
		memcpy(ref + (size_t)n * H, ref_all + (size_t)i * H, (size_t)H * sizeof(float));
		offs[n + 1] = offs[n] + len;
		n++;
	}
	double t1 = now();
	float *got = malloc((size_t)n * H * sizeof(float));
	fwd_batch b = { n, ids, offs, NULL };
	rc = forward_cpu(&cfg, &w, pool, &b, got, &err);
	CHECK(rc == EMB_OK, "%s: %s", name, err.msg);
	double t2 = now(), cos, diff;
	compare(got, ref, n, H, &cos, &diff);
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("jina-%s (%d x %d, %d heads, I %d): %d sequences of %d..%d tokens (%d in all) in "
	       "one batch vs PyTorch: min cosine %.9f, max |diff| %.3g; forward %.2f s, set-up "
	       "%.2f s, peak RSS so far %ld MB\n",
	       name, cfg.layers, H, cfg.heads, cfg.intermediate, n, offs[1] - offs[0],
	       offs[n] - offs[n - 1], offs[n], cos, diff, t2 - t1, t1 - t0, ru.ru_maxrss >> 10);
	fflush(stdout);
	CHECK(cos >= 0.99999 && diff <= 2e-5, "jina-%s: off the reference", name);

	if (strcmp(name, "tiny") == 0) {
		/* each sequence alone gives the same */
		for (int i = 0; i < n; i++) {
			int one[2] = { 0, offs[i + 1] - offs[i] };
			fwd_batch ob = { 1, ids + offs[i], one, NULL };
			rc = forward_cpu(&cfg, &w, NULL, &ob, got + (size_t)i * H, &err);
			CHECK(rc == EMB_OK, "%s", err.msg);
		}
		compare(got, ref, n, H, &cos, &diff);
		CHECK(cos >= 0.99999 && diff <= 2e-5, "jina-tiny one at a time: cos %.9f, diff %.3g",
		      cos, diff);

		/* The comparison can fail: without ALiBi, or with the GEGLU halves swapped. */
		bert_config wrong = cfg;
		wrong.arch.pos = POS_ABSOLUTE;
		forward_cpu(&wrong, &w, pool, &b, got, &err);
		compare(got, ref, n, H, &cos, &diff);
		CHECK(diff > 1e-3, "jina-tiny: no ALiBi still matches (diff %.3g)", diff);
		const size_t nI = (size_t)cfg.intermediate;
		float *sw = malloc(2 * nI * H * sizeof *sw);
		const float *orig = w.layer[0].ffn_up_w;
		memcpy(sw, orig + nI * H, nI * H * sizeof *sw);
		memcpy(sw + nI * H, orig, nI * H * sizeof *sw);
		/* the forward pass reads the packed copy (gemm.h): pack the swapped one */
		gemm_w keep = w.layer[0].ffn_up_p, swp;
		const float *parts[1] = { sw };
		CHECK(gemm_pack(&swp, parts, 1, 2 * (int)nI, (int)H, gemm_isa_default()) == 0,
		      "packing the swapped halves");
		w.layer[0].ffn_up_p = swp;
		forward_cpu(&cfg, &w, pool, &b, got, &err);
		w.layer[0].ffn_up_p = keep;
		gemm_w_free(&swp);
		free(sw);
		compare(got, ref, n, H, &cos, &diff);
		CHECK(diff > 1e-3, "jina-tiny: GEGLU halves swapped still match (diff %.3g)", diff);

	}
	if (vk_device && gpu_max_len > 0) {
		/* the GPU on the sequences of at most gpu_max_len tokens, in one batch */
		int m = 0;
		while (m < n && offs[m + 1] - offs[m] <= gpu_max_len)
			m++;
		fwd_batch gb = { m, ids, offs, NULL };
		rc = forward_cpu(&cfg, &w, pool, &gb, got, &err);
		CHECK(rc == EMB_OK, "%s: %s", name, err.msg);
		if (m > 0 && rc == EMB_OK)
			gpu_case(name, &cfg, &w, &gb, got, ref);
	}
	free(got), free(ref), free(ref_all), free(ids), free(offs);
	json_decref(lens);
	bert_weights_free(&w);
	rm_rf(tmp);
}

static void test_slopes(void)
{
	float s[16];
	/* 2^-1 .. 2^-8 for 8 heads; 12 heads: those, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5; 6:
	 * 2^-2, -4, -6, -8, then 2^-1, 2^-3; 16: 2^-0.5 .. 2^-8 */
	static const double e12[12] = { -1, -2, -3, -4, -5, -6, -7, -8, -0.5, -1.5, -2.5, -3.5 };
	static const double e6[6] = { -2, -4, -6, -8, -1, -3 };
	alibi_slopes(8, s);
	for (int i = 0; i < 8; i++)
		CHECK(s[i] == (float)pow(2, -(i + 1)), "8 heads: slope %d = %g", i, s[i]);
	alibi_slopes(12, s);
	for (int i = 0; i < 12; i++)
		CHECK(fabs(s[i] - pow(2, e12[i])) <= 1e-7 * pow(2, e12[i]), "12 heads: slope %d = %.9g",
		      i, s[i]);
	alibi_slopes(6, s);
	for (int i = 0; i < 6; i++)
		CHECK(s[i] == (float)pow(2, e6[i]), "6 heads: slope %d = %g", i, s[i]);
	alibi_slopes(16, s);
	for (int i = 0; i < 16; i++)
		CHECK(fabs(s[i] - pow(2, -0.5 * (i + 1))) <= 1e-7 * pow(2, -0.5 * (i + 1)),
		      "16 heads: slope %d = %.9g", i, s[i]);
}

/* A JinaBERT config without feed_forward_type "geglu" is another model: refused, named. */
static void test_refusals(void)
{
	char tmp[256];
	test_tmpdir(tmp);
	const char *c = "{\"model_type\": \"bert\", \"position_embedding_type\": \"alibi\", "
			"\"vocab_size\": 30528, \"hidden_size\": 48, \"num_hidden_layers\": 2, "
			"\"num_attention_heads\": 6, \"intermediate_size\": 192, "
			"\"max_position_embeddings\": 8192}";
	test_write_file(tmp, "config.json", c, strlen(c));
	bert_config cfg;
	emb_err err = { 0 };
	int rc = bert_config_load(tmp, &cfg, &err);
	CHECK(rc == EMB_EUNSUPPORTED && strstr(err.msg, "feed_forward_type 'original'"),
	      "no feed_forward_type: rc %d '%s'", rc, err.msg);
	const char *r = "{\"model_type\": \"bert\", \"position_embedding_type\": \"relative_key\", "
			"\"vocab_size\": 30528, \"hidden_size\": 48, \"num_hidden_layers\": 2, "
			"\"num_attention_heads\": 6, \"intermediate_size\": 192, "
			"\"max_position_embeddings\": 512}";
	test_write_file(tmp, "config.json", r, strlen(r));
	rc = bert_config_load(tmp, &cfg, &err);
	CHECK(rc == EMB_EUNSUPPORTED && strstr(err.msg, "relative_key"), "relative_key: rc %d '%s'",
	      rc, err.msg);
	rm_rf(tmp);
}

/* Through the public API: the tiny JinaBERT with a BERT WordPiece tokenizer.json (what
 * jina-embeddings-v2-*-en publish; the default model's, whose 30,522 ids fit the 30,528
 * rows) opens under --device auto on the CPU and embeds a text as forward_cpu does on its
 * token ids; --device gpu fails naming the reason. */
static void test_embed_api(threadpool *pool)
{
	char tok[4096];
	snprintf(tok, sizeof tok, "%s/tokenizer.json", test_model_dir());
	if (access(tok, R_OK) != 0) {
		printf("embed_open on JinaBERT: skipped (%s missing)\n", tok);
		return;
	}
	char tmp[256], q[512];
	test_tmpdir(tmp);
	int seed;
	json_t *lens;
	make_model("tiny", tmp, &seed, &lens);
	json_decref(lens);
	snprintf(q, sizeof q, "%s/tokenizer.json", tmp);
	copy_file(tok, q);
	embed_options o;
	embed_options_default(&o);
	o.device = EMBED_DEVICE_AUTO;
	o.quiet = 1;
	o.threads = 2;
	embed_model *m = NULL;
	emb_err err = { 0 };
	int rc = embed_open(tmp, &o, &m, &err);
	CHECK(rc == EMB_OK, "embed_open(auto) on tiny JinaBERT: %s", err.msg);
	if (m) {
		/* auto takes real GPUs only, and the CPU for single texts */
		CHECK((vk_device == 2 || strncmp(embed_device_name(m), "cpu", 3) == 0) &&
		      embed_max_tokens(m) == 8192, "device %s, max tokens %d", embed_device_name(m),
		      embed_max_tokens(m));
		const char *text = "ALiBi lets JinaBERT read 8192 tokens: symmetric, linear biases.";
		float got[48], want[48];
		rc = embed_encode(m, &text, NULL, 1, EMBED_PREFIX_NONE, got, &err);
		CHECK(rc == EMB_OK, "embed_encode: %s", err.msg);
		/* [CLS] ... [SEP] as the BERT tokenizer gives them, through the forward alone */
		bert_config cfg;
		bert_weights w;
		if (bert_config_load(tmp, &cfg, &err) == EMB_OK &&
		    bert_weights_load(tmp, &cfg, &w, &err) == EMB_OK) {
			int32_t ids[256];
			int n = (int)embed_tokenize(m, text, strlen(text), EMBED_PREFIX_NONE, ids, 256, &err);
			CHECK(n > 3 && ids[0] == 101 && ids[n - 1] == 102, "tokenize: %d ids", n);
			int offs[2] = { 0, n };
			fwd_batch b = { 1, ids, offs, NULL };
			CHECK(forward_cpu(&cfg, &w, pool, &b, want, &err) == EMB_OK, "%s", err.msg);
			double cos, diff;
			compare(got, want, 1, 48, &cos, &diff);
			CHECK(diff <= 1e-6, "embed_encode vs forward_cpu: diff %.3g", diff);
			bert_weights_free(&w);
		}
		embed_close(m);
	}
	/* --device gpu runs it on the Vulkan device (lavapipe in make test), as the CPU does */
	o.device = EMBED_DEVICE_GPU;
	o.precision = EMBED_PRECISION_FP32;
	m = NULL;
	rc = embed_open(tmp, &o, &m, &err);
	if (!vk_device) {
		printf("embed_open --device gpu on JinaBERT: skipped (no Vulkan device)\n");
	} else {
		CHECK(rc == EMB_OK, "embed_open(gpu) on tiny JinaBERT: rc %d '%s'", rc, err.msg);
		if (m) {
			const char *texts[2] = { "ALiBi lets JinaBERT read 8192 tokens: symmetric, linear biases.",
						 "GEGLU" };
			float g[2][48], c[2][48];
			CHECK(embed_encode(m, texts, NULL, 2, EMBED_PREFIX_NONE, &g[0][0], &err) == EMB_OK,
			      "embed_encode(gpu): %s", err.msg);
			embed_close(m);
			o.device = EMBED_DEVICE_CPU;
			m = NULL;
			CHECK(embed_open(tmp, &o, &m, &err) == EMB_OK &&
			      embed_encode(m, texts, NULL, 2, EMBED_PREFIX_NONE, &c[0][0], &err) == EMB_OK,
			      "embed(cpu): %s", err.msg);
			double cos, diff;
			compare(&g[0][0], &c[0][0], 2, 48, &cos, &diff);
			printf("tiny JinaBERT through embed_open --device gpu (fp32): max |diff| %.3g "
			       "against --device cpu\n", diff);
			CHECK(diff <= 2e-5, "embed --device gpu vs cpu: diff %.3g", diff);
		}
	}
	embed_close(m);
	rm_rf(tmp);
}

/* The longest sequence of case `name` the GPU runs. On lavapipe every tiny sequence (past
 * the attention kernel's 64-query block and 256-key chunk of head size 8) and small's to 65
 * tokens (head size 64: past its 32-key chunk and 64-query block; longer ones cost minutes
 * there), no base; on a GPU every length the CPU runs. */
static int gpu_limit(const char *name)
{
	const char *gm = getenv("EMBED_JINA_GPU_MAX"); /* for diagnosis on lavapipe */
	if (!vk_device)
		return 0;
	if (gm && atoi(gm) > 0)
		return atoi(gm);
	if (vk_device == 2 || strcmp(name, "tiny") == 0)
		return 8192;
	return strcmp(name, "small") == 0 ? 65 : 0;
}

int main(void)
{
	threadpool *pool = threadpool_create(2);
	const char *only = getenv("EMBED_JINA_ONLY"); /* one case, for timing */
	emb_err verr = { 0 };
	if (vk_ctx_open(&keep_driver_loaded, -1, 1, NULL, &verr) == EMB_OK)
		vk_device = keep_driver_loaded.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU ? 1 : 2;
	else
		printf("GPU cases skipped: %s\n", verr.msg);
	if (only && *only) {
		const char *mx = getenv("EMBED_JINA_MAX"); /* the longest length, for timing */
		test_case(only, mx && atoi(mx) > 0 ? atoi(mx) : 8192, gpu_limit(only), pool);
		threadpool_destroy(pool);
		return test_failures ? 1 : 0;
	}
	test_slopes();
	test_refusals();
	test_case("tiny", 8192, gpu_limit("tiny"), pool);
	const char *lng = getenv("EMBED_JINA_LONG");
	const int long_ = lng && *lng == '1';
	test_case("small", long_ ? 8192 : 4096, gpu_limit("small"), pool);
#ifdef __SANITIZE_ADDRESS__
	printf("jina-base: skipped under ASan (the plain pass checks its numbers)\n");
#else
	test_case("base", long_ ? 8192 : 2048, gpu_limit("base"), pool);
#endif
	test_embed_api(pool);
	threadpool_destroy(pool);
	if (test_failures)
		fprintf(stderr, "%d failures\n", test_failures);
	return test_failures ? 1 : 0;
}
