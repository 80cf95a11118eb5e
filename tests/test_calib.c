/* The int8 calibration pass (forward.h's forward_cpu_input_maxima, which picks the GPU's
 * int8 outlier channels at open) against transformers: tests/data/int8-calib holds four
 * texts' token ids (three made-up ones of random ids, 64, 16 and 32 tokens, and one
 * sentence) and the per-channel maxima PyTorch fp32 takes of the four products' inputs over
 * them, written by dev/int8/calibrate.py through forward hooks on the transformers model:
 *
 *     python dev/int8/calibrate.py .cache/models/all-MiniLM-L6-v2 \
 *         tests/data/int8-calib/ids.bin tests/data/int8-calib/all-MiniLM-L6-v2.maxima \
 *         --every 1 --offset 0
 *
 * Every maximum must agree to fp32 rounding of a different summation order, and each
 * (layer, product)'s 16 largest channels must be the same set, whether the model was
 * loaded for fp32 or packed for int8 (the pass runs fp32 over the weights' own arrays
 * either way); a batch split in two calls must raise the maxima to those of the whole.
 * The made-up texts' pass (forward_cpu_calib_maxima) is timed and checked for determinism. */
#include <math.h>
#include <stdint.h>
#include <time.h>

#include "forward.h"
#include "model.h"
#include "threadpool.h"
#include "testutil.h"

#define DIR "tests/data/int8-calib/"

static int32_t *ids;
static int offs[16], ntexts;

static void read_ids(void)
{
	FILE *f = fopen(DIR "ids.bin", "rb");
	uint32_t n = 0, len, total = 0;
	if (!f || fread(&n, 4, 1, f) != 1 || n == 0 || n > 15) {
		fprintf(stderr, "%sids.bin: unreadable\n", DIR);
		exit(1);
	}
	ids = malloc(4096 * sizeof *ids);
	for (uint32_t i = 0; i < n; i++) {
		if (fread(&len, 4, 1, f) != 1 || total + len > 4096 ||
		    fread(ids + total, 4, len, f) != len) {
			fprintf(stderr, "%sids.bin: text %u unreadable\n", DIR, i);
			exit(1);
		}
		offs[i] = (int)total;
		total += len;
	}
	offs[n] = (int)total;
	ntexts = (int)n;
	fclose(f);
}

/* "EMBI8CAL", uint32 layers, hidden, intermediate, then the maxima in forward.h's layout */
static float *read_ref(const bert_config *cfg, size_t n)
{
	FILE *f = fopen(DIR "all-MiniLM-L6-v2.maxima", "rb");
	char magic[8];
	uint32_t hd[3];
	float *v = malloc(n * sizeof *v);
	if (!f || fread(magic, 1, 8, f) != 8 || memcmp(magic, "EMBI8CAL", 8) ||
	    fread(hd, 4, 3, f) != 3 || hd[0] != (uint32_t)cfg->layers ||
	    hd[1] != (uint32_t)cfg->hidden || hd[2] != (uint32_t)cfg->intermediate ||
	    fread(v, sizeof *v, n, f) != n) {
		/* another model (EMBED_MODEL): only the timing below */
		printf("%s: the reference is all-MiniLM-L6-v2's: comparisons skipped\n", test_model_dir());
		free(v);
		v = NULL;
	}
	if (f)
		fclose(f);
	return v;
}

/* bit c of the returned set: channel c among the k largest of x[0..n) (n <= 1536) */
static void top_k(const float *x, int n, int k, unsigned char *set)
{
	memset(set, 0, (size_t)n);
	for (int j = 0; j < k; j++) {
		int best = -1;
		for (int c = 0; c < n; c++)
			if (!set[c] && (best < 0 || x[c] > x[best]))
				best = c;
		set[best] = 1;
	}
}

static void compare(const char *what, const bert_config *cfg, const float *ours, const float *ref)
{
	const int H = cfg->hidden, I = cfg->intermediate;
	static const char *const prod[4] = { "qkv", "out", "up", "down" };
	double worst = 0;
	for (int l = 0; l < cfg->layers; l++)
		for (int g = 0; g < 4; g++) {
			const int n = g == 3 ? I : H;
			const size_t o = (size_t)l * (3 * H + I) + (size_t)g * H;
			int bad = 0;
			for (int c = 0; c < n; c++) {
				const double d = fabs(ours[o + c] - ref[o + c]) / (fabs(ref[o + c]) + 1e-3);
				worst = d > worst ? d : worst;
				bad += !(d <= 2e-4);
			}
			CHECK(bad == 0, "%s: layer %d %s: %d of %d maxima off transformers' by more "
			      "than 2e-4", what, l, prod[g], bad, n);
			unsigned char a[1536], b[1536];
			top_k(ours + o, n, 16, a);
			top_k(ref + o, n, 16, b);
			CHECK(!memcmp(a, b, (size_t)n), "%s: layer %d %s: the 16 largest channels "
			      "differ from transformers'", what, l, prod[g]);
		}
	printf("%s: largest relative difference from transformers' maxima %.2g\n", what, worst);
}

int main(void)
{
	if (!test_have_model()) {
		printf("skipped: default model not fetched (scripts/fetch-model)\n");
		return 77;
	}
	read_ids();
	threadpool *pool = threadpool_create(2);
	emb_err err = { 0 };
	for (int prec = 0; prec < 2; prec++) {
		bert_config cfg;
		bert_weights w;
		if (bert_config_load(test_model_dir(), &cfg, &err)) {
			fprintf(stderr, "%s\n", err.msg);
			return 1;
		}
		cfg.cpu_prec = prec ? GEMM_INT8 : GEMM_F32;
		if (bert_weights_load(test_model_dir(), &cfg, &w, &err)) {
			fprintf(stderr, "%s\n", err.msg);
			return 1;
		}
		const size_t n = (size_t)cfg.layers * (3 * cfg.hidden + cfg.intermediate);
		float *ref = read_ref(&cfg, n), *mx = calloc(n, sizeof *mx);
		fwd_batch all = { ntexts, ids, offs, NULL };
		if (!ref)
			goto timing;
		CHECK(forward_cpu_input_maxima(&cfg, &w, pool, &all, mx, &err) == EMB_OK, "%s", err.msg);
		compare(prec ? "weights packed for int8" : "fp32 weights", &cfg, mx, ref);

		/* two calls, the first two texts then the others: the same maxima, bit for bit
		 * (each text's activations do not depend on its batch-mates) */
		float *mx2 = calloc(n, sizeof *mx2);
		int offs2[16];
		for (int i = 2; i <= ntexts; i++)
			offs2[i - 2] = offs[i] - offs[2];
		fwd_batch first = { 2, ids, offs, NULL }, rest = { ntexts - 2, ids + offs[2], offs2, NULL };
		CHECK(forward_cpu_input_maxima(&cfg, &w, pool, &first, mx2, &err) == EMB_OK &&
		      forward_cpu_input_maxima(&cfg, &w, pool, &rest, mx2, &err) == EMB_OK, "%s", err.msg);
		CHECK(!memcmp(mx, mx2, n * sizeof *mx), "maxima over two calls differ from one call's");
		free(mx2);
timing:
		/* the GPU's calibration at open (forward_cpu_calib_maxima, its made-up texts):
		 * the same maxima on every call, all finite; its time is the cost an int8 open
		 * pays (docs/bench-gpu.md quotes this line) */
		if (prec) {
			float *c1 = calloc(n, sizeof *c1), *c2 = calloc(n, sizeof *c2);
			struct timespec t0, t1;
			clock_gettime(CLOCK_MONOTONIC, &t0);
			CHECK(forward_cpu_calib_maxima(&cfg, &w, pool, 101, 102, 0, c1, &err) == EMB_OK,
			      "%s", err.msg);
			clock_gettime(CLOCK_MONOTONIC, &t1);
			CHECK(forward_cpu_calib_maxima(&cfg, &w, pool, 101, 102, 0, c2, &err) == EMB_OK,
			      "%s", err.msg);
			int bad = 0;
			for (size_t i = 0; i < n; i++)
				bad += !isfinite(c1[i]) || c1[i] < 0;
			CHECK(bad == 0, "the calibration pass gave %d bad maxima", bad);
			CHECK(!memcmp(c1, c2, n * sizeof *c1), "the calibration pass is not deterministic");
			printf("calibration pass (%d made-up texts, %d threads): %.3f s\n", CALIB_TEXTS,
			       threadpool_size(pool),
			       (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
			free(c1);
			free(c2);
		}
		free(mx);
		free(ref);
		bert_weights_free(&w);
	}
	threadpool_destroy(pool);
	free(ids);
	return test_failures ? 1 : 0;
}
