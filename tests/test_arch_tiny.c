/* The model description (model.h's model_arch) and the CPU forward pass that walks it, for
 * every family, on every `make test` without downloaded weights: tiny BERT- and MPNet-shaped
 * models (tests/data/tiny-*, written by scripts/gen-tiny-models) whose mean-pooled vectors
 * Hugging Face transformers computed. Also: MPNet's relative-position buckets against
 * transformers' for every distance from -600 to 600, checks that the comparison can fail
 * (a wrong position offset or no position bias must miss the reference), tiny MPNet through
 * the public API under --device auto and --device gpu (the Vulkan path, lavapipe in CI:
 * tests/test_vk_mpnet checks it in depth), and the Vulkan backend's clean refusal of a
 * description it does not run (an unknown position scheme), which lets --device auto fall
 * back to the CPU. */
#include <jansson.h>
#include <math.h>
#include <sys/stat.h>

#include "embed.h"
#include "forward.h"
#include "forward_vk.h"
#include "model.h"
#include "testutil.h"
#include "threadpool.h"
#include "vk_ctx.h"

typedef struct seqs {
	int n;
	int32_t *ids;
	int *offs;
} seqs;

static void load_seqs(const char *dir, seqs *s)
{
	char p[512];
	snprintf(p, sizeof p, "%s/ids.json", dir);
	json_error_t je;
	json_t *a = json_load_file(p, 0, &je);
	if (!a || !json_is_array(a)) {
		fprintf(stderr, "%s: %s\n", p, je.text);
		exit(1);
	}
	s->n = (int)json_array_size(a);
	s->offs = calloc((size_t)s->n + 1, sizeof *s->offs);
	size_t total = 0;
	for (int i = 0; i < s->n; i++)
		total += json_array_size(json_array_get(a, (size_t)i));
	s->ids = malloc(total * sizeof *s->ids);
	for (int i = 0; i < s->n; i++) {
		json_t *q = json_array_get(a, (size_t)i);
		s->offs[i + 1] = s->offs[i] + (int)json_array_size(q);
		for (size_t j = 0; j < json_array_size(q); j++)
			s->ids[s->offs[i] + (int)j] = (int32_t)json_integer_value(json_array_get(q, j));
	}
	json_decref(a);
}

static float *load_ref(const char *dir, size_t floats)
{
	char p[512];
	snprintf(p, sizeof p, "%s/ref.f32", dir);
	FILE *f = fopen(p, "rb");
	float *r = malloc(floats * sizeof *r);
	if (!f || fread(r, sizeof *r, floats, f) != floats || fgetc(f) != EOF) {
		fprintf(stderr, "%s: missing or not %zu floats\n", p, floats);
		exit(1);
	}
	fclose(f);
	return r;
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

static void test_family(const char *dir, model_family family, threadpool *pool)
{
	bert_config cfg;
	bert_weights w;
	emb_err err = { 0 };
	int rc = bert_config_load(dir, &cfg, &err);
	CHECK(rc == EMB_OK, "%s: %s", dir, err.msg);
	if (rc)
		return;
	rc = bert_weights_load(dir, &cfg, &w, &err);
	CHECK(rc == EMB_OK, "%s: %s", dir, err.msg);
	if (rc)
		return;
	const model_arch *a = &cfg.arch;
	CHECK(a->family == family, "%s: family %d", dir, a->family);
	if (family == FAMILY_MPNET) {
		CHECK(a->pos == POS_REL_BUCKETS && a->pos_offset == 2 && a->rel_buckets == 32 &&
		      a->rel_max_distance == 128 && !a->token_types && w.type_emb == NULL &&
		      w.rel_bias != NULL && a->bos_id == 0 && a->eos_id == 2 && a->pad_id == 1,
		      "%s: MPNet description wrong", dir);
		CHECK(cfg.max_tokens == cfg.max_positions - 2, "%s: max_tokens %d", dir, cfg.max_tokens);
		CHECK(fabsf(cfg.layer_norm_eps - 1e-5f) < 1e-9f, "%s: eps %g", dir, cfg.layer_norm_eps);
	} else {
		CHECK(a->pos == POS_ABSOLUTE && a->pos_offset == 0 && a->token_types &&
		      w.type_emb != NULL && w.rel_bias == NULL, "%s: BERT description wrong", dir);
		CHECK(cfg.max_tokens == cfg.max_positions, "%s: max_tokens %d", dir, cfg.max_tokens);
	}
	CHECK(cfg.pooling == POOL_MEAN && cfg.normalize, "%s: pooling", dir);

	seqs s;
	load_seqs(dir, &s);
	const int H = cfg.hidden;
	float *ref = load_ref(dir, (size_t)s.n * H);
	float *got = malloc((size_t)s.n * H * sizeof *got);
	double cos, diff;

	/* all sequences packed in one batch, then each alone: both must match */
	fwd_batch b = { s.n, s.ids, s.offs, NULL };
	rc = forward_cpu(&cfg, &w, pool, &b, got, &err);
	CHECK(rc == EMB_OK, "%s: %s", dir, err.msg);
	compare(got, ref, s.n, H, &cos, &diff);
	printf("%s: %d sequences of 1..%d tokens in one batch vs transformers: min cosine %.9f, "
	       "max |diff| %.3g\n", dir, s.n, s.offs[s.n] - s.offs[s.n - 1], cos, diff);
	CHECK(cos >= 0.99999 && diff <= 2e-5, "%s: off the reference", dir);
	for (int i = 0; i < s.n; i++) {
		int offs[2] = { 0, s.offs[i + 1] - s.offs[i] };
		fwd_batch one = { 1, s.ids + s.offs[i], offs, NULL };
		rc = forward_cpu(&cfg, &w, NULL, &one, got + (size_t)i * H, &err);
		CHECK(rc == EMB_OK, "%s: %s", dir, err.msg);
	}
	compare(got, ref, s.n, H, &cos, &diff);
	CHECK(cos >= 0.99999 && diff <= 2e-5, "%s: one at a time off the reference (cos %.9f, "
	      "diff %.3g)", dir, cos, diff);

	/* The comparison can fail: a description that gets one field wrong misses. */
	bert_config wrong = cfg;
	wrong.arch.pos_offset = family == FAMILY_MPNET ? 0 : 1;
	forward_cpu(&wrong, &w, pool, &b, got, &err);
	compare(got, ref, s.n, H, &cos, &diff);
	CHECK(diff > 1e-3, "%s: a wrong position offset still matches (diff %.3g)", dir, diff);
	if (family == FAMILY_MPNET) {
		wrong = cfg;
		wrong.arch.pos = POS_ABSOLUTE;
		forward_cpu(&wrong, &w, pool, &b, got, &err);
		compare(got, ref, s.n, H, &cos, &diff);
		CHECK(diff > 1e-3, "%s: no position bias still matches (diff %.3g)", dir, diff);

		/* A description the shaders do not implement (here a position scheme no family
		 * has) is refused before any device is touched, so --device auto falls back to
		 * the CPU. */
		wrong = cfg;
		wrong.arch.pos = (pos_scheme)7;
		vk_backend *vb = NULL;
		emb_err e = { 0 };
		rc = vk_backend_open(&wrong, &w, NULL, &vb, &e);
		CHECK(rc == EMB_EUNSUPPORTED && vb == NULL && strstr(e.msg, "does not run"),
		      "vk_backend_open with an unknown position scheme: rc %d '%s'", rc, e.msg);
	}
	free(got);
	free(ref);
	free(s.ids);
	free(s.offs);
	bert_weights_free(&w);
}

static void test_buckets(const char *dir)
{
	char p[512];
	snprintf(p, sizeof p, "%s/buckets.json", dir);
	json_error_t je;
	json_t *a = json_load_file(p, 0, &je);
	CHECK(a && json_array_size(a) == 1201, "%s: %s", p, je.text);
	int bad = 0;
	for (int d = -600; a && d <= 600; d++) {
		int want = (int)json_integer_value(json_array_get(a, (size_t)(d + 600)));
		int got = rel_position_bucket(d, 32, 128);
		if (got != want && bad++ < 5)
			CHECK(0, "bucket of distance %d: %d, transformers says %d", d, got, want);
	}
	CHECK(bad == 0, "%d distances in the wrong bucket", bad);
	json_decref(a);
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

/* Through the public API: tiny-mpnet with a WordPiece vocabulary of its 120 ids opens under
 * --device auto (the CPU: auto takes no CPU Vulkan implementation, and single texts stay on
 * the CPU) and under --device gpu (any Vulkan device, lavapipe included: the MPNet shaders),
 * and both encode token ids to transformers' vectors. Without a Vulkan device the GPU half
 * is skipped with a line saying so. */
static void test_embed_fallback(void)
{
	char tmp[256], p[512], q[512];
	test_tmpdir(tmp);
	snprintf(p, sizeof p, "%s/1_Pooling", tmp);
	mkdir(p, 0755);
	static const char *files[] = { "config.json", "modules.json", "1_Pooling/config.json",
					"model.safetensors" };
	for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
		snprintf(p, sizeof p, "tests/data/tiny-mpnet/%s", files[i]);
		snprintf(q, sizeof q, "%s/%s", tmp, files[i]);
		copy_file(p, q);
	}
	char vocab[2048] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n";
	for (int i = 4; i < 120; i++)
		snprintf(vocab + strlen(vocab), sizeof vocab - strlen(vocab), "w%d\n", i);
	test_write_file(tmp, "vocab.txt", vocab, strlen(vocab));

	embed_options o;
	embed_options_default(&o);
	o.device = EMBED_DEVICE_AUTO;
	o.quiet = 1;
	o.threads = 2;
	embed_model *m = NULL;
	emb_err err = { 0 };
	int rc = embed_open(tmp, &o, &m, &err);
	CHECK(rc == EMB_OK, "embed_open(auto) on tiny MPNet: %s", err.msg);
	if (m) {
		CHECK(strncmp(embed_device_name(m), "cpu", 3) == 0, "device %s", embed_device_name(m));
		seqs s;
		load_seqs("tests/data/tiny-mpnet", &s);
		const int H = embed_dim(m);
		float *ref = load_ref("tests/data/tiny-mpnet", (size_t)s.n * H);
		float *got = malloc((size_t)s.n * H * sizeof *got);
		const int32_t **sp = malloc((size_t)s.n * sizeof *sp);
		int *lens = malloc((size_t)s.n * sizeof *lens);
		for (int i = 0; i < s.n; i++)
			sp[i] = s.ids + s.offs[i], lens[i] = s.offs[i + 1] - s.offs[i];
		rc = embed_encode_tokens(m, sp, lens, s.n, got, &err);
		CHECK(rc == EMB_OK, "embed_encode_tokens: %s", err.msg);
		double cos, diff;
		compare(got, ref, s.n, H, &cos, &diff);
		CHECK(cos >= 0.99999 && diff <= 2e-5, "embed API off the reference (cos %.9f, diff %.3g)",
		      cos, diff);
		free(got), free(ref), free(sp), free(lens), free(s.ids), free(s.offs);
		embed_close(m);
	}
	o.device = EMBED_DEVICE_GPU;
	o.precision = EMBED_PRECISION_FP32;
	m = NULL;
	char list[1024];
	if (vk_list_devices(list, sizeof list, &err) <= 0) {
		printf("no Vulkan device: --device gpu on tiny MPNet not tried\n");
	} else if ((rc = embed_open(tmp, &o, &m, &err)) != EMB_OK) {
		CHECK(0, "embed_open(gpu) on tiny MPNet: rc %d '%s'", rc, err.msg);
	} else {
		seqs s;
		load_seqs("tests/data/tiny-mpnet", &s);
		const int H = embed_dim(m);
		float *ref = load_ref("tests/data/tiny-mpnet", (size_t)s.n * H);
		float *got = malloc((size_t)s.n * H * sizeof *got);
		const int32_t **sp = malloc((size_t)s.n * sizeof *sp);
		int *lens = malloc((size_t)s.n * sizeof *lens);
		for (int i = 0; i < s.n; i++)
			sp[i] = s.ids + s.offs[i], lens[i] = s.offs[i + 1] - s.offs[i];
		rc = embed_encode_tokens(m, sp, lens, s.n, got, &err);
		CHECK(rc == EMB_OK, "embed_encode_tokens(gpu): %s", err.msg);
		double cos, diff;
		compare(got, ref, s.n, H, &cos, &diff);
		CHECK(cos >= 0.99999 && diff <= 2e-5, "--device gpu off the reference (cos %.9f, "
		      "diff %.3g)", cos, diff);
		printf("tiny MPNet through embed_open --device gpu (%s): min cosine %.9f, max |diff| "
		       "%.3g\n", embed_device_name(m), cos, diff);
		free(got), free(ref), free(sp), free(lens), free(s.ids), free(s.offs);
		embed_close(m);
	}
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
	CHECK(system(cmd) == 0, "%s", cmd);
}

/* A broken MPNet directory gives the documented error naming the culprit: a config with an
 * odd bucket count, or weights without the relative position bias. */
static void test_broken_mpnet(void)
{
	char tmp[256], p[512];
	test_tmpdir(tmp);
	bert_config cfg;
	bert_weights w;
	emb_err err = { 0 };
	const char *odd = "{\"model_type\": \"mpnet\", \"vocab_size\": 120, \"hidden_size\": 64, "
			  "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"intermediate_size\": "
			  "128, \"max_position_embeddings\": 202, \"relative_attention_num_buckets\": 33}";
	test_write_file(tmp, "config.json", odd, strlen(odd));
	int rc = bert_config_load(tmp, &cfg, &err);
	CHECK(rc == EMB_EFORMAT && strstr(err.msg, "relative_attention_num_buckets"),
	      "odd buckets: rc %d '%s'", rc, err.msg);

	/* tiny-bert's weights under an MPNet config: the MPNet names are missing */
	snprintf(p, sizeof p, "%s/model.safetensors", tmp);
	copy_file("tests/data/tiny-bert/model.safetensors", p);
	char *c200 = strdup(odd);
	memcpy(strstr(c200, "202"), "200", 3);
	memcpy(strstr(c200, "33}"), "32}", 3);
	test_write_file(tmp, "config.json", c200, strlen(c200));
	free(c200);
	rc = bert_config_load(tmp, &cfg, &err);
	CHECK(rc == EMB_OK, "tiny-mpnet config: %s", err.msg);
	rc = bert_weights_load(tmp, &cfg, &w, &err);
	CHECK(rc == EMB_EFORMAT && strstr(err.msg, "encoder.relative_attention_bias.weight"),
	      "BERT weights under an MPNet config: rc %d '%s'", rc, err.msg);
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
	CHECK(system(cmd) == 0, "%s", cmd);
}

int main(void)
{
	threadpool *pool = threadpool_create(2);
	test_buckets("tests/data/tiny-mpnet");
	test_family("tests/data/tiny-bert", FAMILY_BERT, pool);
	test_family("tests/data/tiny-mpnet", FAMILY_MPNET, pool);
	threadpool_destroy(pool);
	test_embed_fallback();
	test_broken_mpnet();
	if (test_failures)
		fprintf(stderr, "%d failures\n", test_failures);
	return test_failures ? 1 : 0;
}
