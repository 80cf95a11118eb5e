/* all-mpnet-base-v2 with its real weights against sentence-transformers' own vectors
 * (tests/data/ref-all-mpnet-base-v2.*, written by scripts/gen-reference in PyTorch): the
 * 212 reference texts, 56 of them past the 384-token limit, fed as the token ids
 * sentence-transformers used, so this tests the forward pass apart from the tokenizer.
 * Every text: cosine >= 0.99999 and max |difference| <= 2e-5. Skipped (77) until
 * scripts/fetch-model all-mpnet-base-v2 has run ($EMBED_MPNET_MODEL names another copy). */
#include <jansson.h>
#include <math.h>
#include <time.h>

#include "forward.h"
#include "model.h"
#include "testutil.h"
#include "threadpool.h"

#define PREFIX "tests/data/ref-all-mpnet-base-v2"

int main(void)
{
	const char *dir = getenv("EMBED_MPNET_MODEL");
	if (!dir || !*dir)
		dir = ".cache/models/all-mpnet-base-v2";
	char p[4096];
	snprintf(p, sizeof p, "%s/model.safetensors", dir);
	if (access(p, R_OK) != 0) {
		printf("all-mpnet-base-v2 not fetched (scripts/fetch-model all-mpnet-base-v2)\n");
		return 77;
	}
	bert_config cfg;
	bert_weights w;
	emb_err err = { 0 };
	if (bert_config_load(dir, &cfg, &err) || bert_weights_load(dir, &cfg, &w, &err)) {
		fprintf(stderr, "%s: %s\n", dir, err.msg);
		return 1;
	}
	CHECK(cfg.arch.family == FAMILY_MPNET && cfg.max_tokens == 384 && cfg.pooling == POOL_MEAN &&
	      cfg.normalize && cfg.hidden == 768, "all-mpnet-base-v2's description is wrong");

	FILE *f = fopen(PREFIX ".jsonl", "r");
	if (!f) {
		perror(PREFIX ".jsonl");
		return 1;
	}
	json_error_t je;
	char *line = NULL;
	size_t cap = 0;
	int n = 0, dim = 0, longest = 0;
	int32_t *ids = NULL;
	int *offs = malloc(sizeof *offs);
	offs[0] = 0;
	while (getline(&line, &cap, f) > 0) {
		json_t *o = json_loads(line, JSON_ALLOW_NUL, &je);
		if (!o) {
			fprintf(stderr, PREFIX ".jsonl: %s\n", je.text);
			return 1;
		}
		json_t *g = json_object_get(o, "generator");
		if (g) {
			dim = (int)json_integer_value(json_object_get(g, "dim"));
		} else {
			json_t *a = json_object_get(o, "ids");
			int len = (int)json_array_size(a);
			CHECK(len >= 2 && len <= cfg.max_tokens, "text %d: %d ids", n, len);
			ids = realloc(ids, ((size_t)offs[n] + (size_t)len) * sizeof *ids);
			offs = realloc(offs, ((size_t)n + 2) * sizeof *offs);
			for (int j = 0; j < len; j++)
				ids[offs[n] + j] = (int32_t)json_integer_value(json_array_get(a, (size_t)j));
			offs[n + 1] = offs[n] + len;
			longest = len > longest ? len : longest;
			n++;
		}
		json_decref(o);
	}
	free(line);
	fclose(f);
	CHECK(dim == cfg.hidden && n == 212, "%d texts of dim %d", n, dim);
	if (test_failures)
		return 1;

	float *ref = malloc((size_t)n * dim * sizeof *ref);
	f = fopen(PREFIX ".f32", "rb");
	if (!f || fread(ref, sizeof *ref, (size_t)n * dim, f) != (size_t)n * dim || fgetc(f) != EOF) {
		fprintf(stderr, PREFIX ".f32: missing or not %d x %d floats\n", n, dim);
		return 1;
	}
	fclose(f);

	/* batches of 16 in file order, as sentence-transformers ran them (any batching gives
	 * the same vectors: test_batch_invariance) */
	threadpool *pool = threadpool_create(0);
	float *got = malloc((size_t)n * dim * sizeof *got);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* Under ASan the pass looks for memory errors, not numbers, at a quarter of the speed:
	 * every seventh text (short and long ones), each alone, is enough. */
#ifdef __SANITIZE_ADDRESS__
	const int step = 7;
#else
	const int step = 1;
#endif
	for (int i = 0; step > 1 && i < n; i += step) {
		int one[2] = { 0, offs[i + 1] - offs[i] };
		fwd_batch b = { 1, ids + offs[i], one, NULL };
		if (forward_cpu(&cfg, &w, pool, &b, got + (size_t)i * dim, &err)) {
			fprintf(stderr, "forward_cpu: %s\n", err.msg);
			return 1;
		}
	}
	for (int i = 0; step == 1 && i < n; i += 16) {
		int m = n - i < 16 ? n - i : 16;
		int boffs[17];
		for (int k = 0; k <= m; k++)
			boffs[k] = offs[i + k] - offs[i];
		fwd_batch b = { m, ids + offs[i], boffs, NULL };
		if (forward_cpu(&cfg, &w, pool, &b, got + (size_t)i * dim, &err)) {
			fprintf(stderr, "forward_cpu: %s\n", err.msg);
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
	if (step == 1)
		printf("forward_cpu, %d threads, batches of 16: %.2f s for %d texts (%d tokens): %.1f "
		       "texts/s, %.0f tokens/s\n", threadpool_size(pool), secs, n, offs[n], n / secs,
		       offs[n] / secs);
	/* single-query latency: the first text (a short query) alone, median of 21 runs */
	double lat[21];
	for (int r = 0; step == 1 && r < 21; r++) {
		int one[2] = { 0, offs[1] };
		fwd_batch b = { 1, ids, one, NULL };
		float v[768];
		clock_gettime(CLOCK_MONOTONIC, &t0);
		forward_cpu(&cfg, &w, pool, &b, v, &err);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		lat[r] = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
		for (int k = r; k > 0 && lat[k] < lat[k - 1]; k--) {
			double x = lat[k];
			lat[k] = lat[k - 1], lat[k - 1] = x;
		}
	}
	if (step == 1)
		printf("single query (%d tokens): median %.1f ms\n", offs[1], 1000 * lat[10]);
	double worst_cos = 1, worst_diff = 0;
	int bad = 0;
	int checked = 0;
	for (int i = 0; i < n; i += step, checked++) {
		double dot = 0, na = 0, nb = 0, md = 0;
		for (int j = 0; j < dim; j++) {
			double a = got[(size_t)i * dim + j], b = ref[(size_t)i * dim + j];
			dot += a * b, na += a * a, nb += b * b;
			if (!(fabs(a - b) <= md))
				md = fabs(a - b);
		}
		double c = dot / sqrt(na * nb);
		if (!(c >= worst_cos))
			worst_cos = c;
		if (!(md <= worst_diff))
			worst_diff = md;
		if (!(c >= 0.99999 && md <= 2e-5) && bad++ < 10)
			fprintf(stderr, "text %d (%d tokens): cosine %.9f, max |diff| %.3g\n", i,
				offs[i + 1] - offs[i], c, md);
	}
	printf("all-mpnet-base-v2, %d texts (up to %d tokens) vs sentence-transformers: min cosine "
	       "%.9f, max |diff| %.3g\n", checked, longest, worst_cos, worst_diff);
	CHECK(bad == 0, "%d texts off the reference", bad);
	threadpool_destroy(pool);
	free(got);
	free(ref);
	free(ids);
	free(offs);
	bert_weights_free(&w);
	return test_failures ? 1 : 0;
}
