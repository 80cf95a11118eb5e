/* The asynchronous pair (embed_submit_tokens / embed_wait) against the synchronous call:
 * batches come back in submission order with the vectors embed_encode_tokens gives (the
 * CPU: within 1e-6; a Vulkan device, lavapipe where there is no GPU: within the fp32 bound
 * 2e-4 of the CPU's), with one or two outstanding, a batch over the device's capacity runs
 * synchronously, embed_encode_tokens called between submit and wait leaves the batch in
 * flight correct, bad input fails at submit with nothing outstanding, and a third
 * outstanding batch is refused without harm to the two. Texts are cut at 96 tokens: the
 * subject is the pair's bookkeeping, test_vk_forward has the long sequences. */
#include <jansson.h>
#include <math.h>

#include "embed.h"
#include "testutil.h"

#define N 24

static int32_t ids[N][256];
static int lens[N];
static const int32_t *seqs[N];

static int load(embed_model *m)
{
	FILE *f = fopen("../shared/data/scifact/corpus.jsonl", "r");
	char *line = NULL;
	size_t cap = 0;
	int n = 0;
	while (n < N) {
		char buf[4096];
		const char *t = NULL;
		json_t *o = NULL;
		if (f && getline(&line, &cap, f) > 0) {
			o = json_loads(line, 0, NULL);
			t = json_string_value(json_object_get(o, "text"));
		}
		if (!t) { /* no SciFact at hand: synthesise */
			int k = 0;
			for (int w = 0; w < n * 9 + 1 && k < 4000; w++)
				k += snprintf(buf + k, sizeof buf - (size_t)k, "word%d ", w * (n + 1));
			t = buf;
		}
		/* lengths from a few tokens to the model's 256 */
		size_t len = strlen(t);
		if (n % 3 == 0 && len > (size_t)(10 + 7 * n))
			len = (size_t)(10 + 7 * n);
		emb_err e = {0};
		long k = embed_tokenize(m, t, len, EMBED_PREFIX_NONE, ids[n], 96, &e);
		json_decref(o);
		if (k < 2)
			return -1;
		lens[n] = (int)k;
		seqs[n] = ids[n];
		n++;
	}
	free(line);
	if (f)
		fclose(f);
	return 0;
}

static float max_diff(const float *a, const float *b, size_t n)
{
	float m = 0;
	for (size_t i = 0; i < n; i++)
		m = fmaxf(m, fabsf(a[i] - b[i]));
	return m;
}

/* Runs the batches [0,5) [5,6) [6,17) [17,24) through the pair with `outstanding` batches
 * submitted before the first wait, and compares with ref. */
static void pair_matches(embed_model *m, const float *ref, int dim, int outstanding, float tol,
			 const char *what)
{
	static const int cut[] = {0, 5, 6, 17, N};
	const int nb = 4;
	float *out = calloc((size_t)N * dim, sizeof *out);
	int submitted = 0, waited = 0;
	emb_err e = {0};
	while (waited < nb) {
		while (submitted < nb && submitted - waited < outstanding) {
			int a = cut[submitted], b = cut[submitted + 1];
			int rc = embed_submit_tokens(m, seqs + a, lens + a, b - a, out + (size_t)a * dim, &e);
			CHECK(rc == EMB_OK, "%s: submit %d: %s", what, submitted, e.msg);
			submitted++;
		}
		int rc = embed_wait(m, &e);
		CHECK(rc == EMB_OK, "%s: wait %d: %s", what, waited, e.msg);
		/* that batch is complete now; later ones may not be */
		int a = cut[waited], b = cut[waited + 1];
		float d = max_diff(out + (size_t)a * dim, ref + (size_t)a * dim, (size_t)(b - a) * dim);
		CHECK(d <= tol, "%s: batch %d differs by %g (bound %g)", what, waited, d, tol);
		waited++;
	}
	CHECK(embed_wait(m, &e) == EMB_OK, "%s: wait with nothing outstanding", what);
	free(out);
}

static void check_model(embed_model *m, const float *ref, float tol, const char *what)
{
	const int dim = embed_dim(m);
	for (int k = 1; k <= 2; k++) {
		char w[128];
		snprintf(w, sizeof w, "%s, %d outstanding", what, k);
		pair_matches(m, ref, dim, k, tol, w);
	}
	/* A synchronous call between submit and wait: the batch in flight stays right. */
	float *out = calloc((size_t)N * dim, sizeof *out), *sync = calloc((size_t)N * dim, sizeof *sync);
	emb_err e = {0};
	CHECK(embed_submit_tokens(m, seqs, lens, 12, out, &e) == EMB_OK, "%s: submit: %s", what, e.msg);
	CHECK(embed_encode_tokens(m, seqs + 12, lens + 12, N - 12, sync + (size_t)12 * dim, &e) == EMB_OK,
	      "%s: encode between: %s", what, e.msg);
	CHECK(embed_wait(m, &e) == EMB_OK, "%s: wait after encode: %s", what, e.msg);
	CHECK(max_diff(out, ref, (size_t)12 * dim) <= tol, "%s: batch in flight around a sync call", what);
	CHECK(max_diff(sync + (size_t)12 * dim, ref + (size_t)12 * dim, (size_t)(N - 12) * dim) <= tol,
	      "%s: the sync call between", what);
	/* A batch of 2N sequences (over the capacity of a small budget: then synchronous). */
	{
		const int32_t *s2[2 * N];
		int l2[2 * N];
		for (int i = 0; i < 2 * N; i++) {
			s2[i] = seqs[i % N];
			l2[i] = lens[i % N];
		}
		float *big = calloc((size_t)2 * N * dim, sizeof *big);
		CHECK(embed_submit_tokens(m, s2, l2, 2 * N, big, &e) == EMB_OK, "%s: big submit: %s", what, e.msg);
		CHECK(embed_wait(m, &e) == EMB_OK, "%s: big wait: %s", what, e.msg);
		CHECK(max_diff(big, ref, (size_t)N * dim) <= tol && max_diff(big + (size_t)N * dim, ref, (size_t)N * dim) <= tol,
		      "%s: big batch", what);
		free(big);
	}
	/* A third outstanding batch is refused; the two come back whole. */
	CHECK(embed_submit_tokens(m, seqs, lens, 2, out, &e) == EMB_OK, "%s: submit 1", what);
	CHECK(embed_submit_tokens(m, seqs + 2, lens + 2, 2, out + 2 * dim, &e) == EMB_OK, "%s: submit 2", what);
	CHECK(embed_submit_tokens(m, seqs + 4, lens + 4, 2, out + 4 * dim, &e) == EMB_EINVAL,
	      "%s: a third outstanding batch was accepted", what);
	CHECK(embed_wait(m, &e) == EMB_OK && embed_wait(m, &e) == EMB_OK, "%s: waits", what);
	CHECK(max_diff(out, ref, (size_t)4 * dim) <= tol, "%s: the two batches", what);
	/* Bad input: refused at submit, nothing outstanding. */
	int32_t bad[3] = {ids[0][0], 1 << 30, ids[0][lens[0] - 1]};
	const int32_t *bs[1] = {bad};
	int bl[1] = {3};
	CHECK(embed_submit_tokens(m, bs, bl, 1, out, &e) == EMB_EINVAL, "%s: bad id accepted", what);
	CHECK(embed_wait(m, &e) == EMB_OK, "%s: a refused batch left something outstanding", what);
	free(out);
	free(sync);
}

int main(void)
{
	if (!test_have_model()) {
		printf("skipped: default model not fetched (scripts/fetch-model)\n");
		return 77;
	}
	embed_options o;
	embed_options_default(&o);
	o.threads = 2;
	embed_model *cpu;
	emb_err e = {0};
	if (embed_open(test_model_dir(), &o, &cpu, &e)) {
		fprintf(stderr, "open: %s\n", e.msg);
		return 1;
	}
	CHECK(load(cpu) == 0, "tokenize");
	const int dim = embed_dim(cpu);
	float *ref = calloc((size_t)N * dim, sizeof *ref);
	CHECK(embed_encode_tokens(cpu, seqs, lens, N, ref, &e) == EMB_OK, "reference: %s", e.msg);
	check_model(cpu, ref, 1e-6f, "cpu");


	/* A Vulkan device, where there is one (lavapipe in CI). */
	o.device = EMBED_DEVICE_GPU;
	o.quiet = 1;
	embed_model *gpu;
	if (embed_open(test_model_dir(), &o, &gpu, &e) == EMB_OK) {
		int tok, nseq;
		embed_batch_capacity(gpu, &tok, &nseq);
		CHECK(tok > 0 && nseq > 0, "capacity %d tokens, %d sequences", tok, nseq);
		printf("GPU: %s, capacity %d tokens / %d sequences\n", embed_device_name(gpu), tok, nseq);
		check_model(gpu, ref, 2e-4f, "gpu");
		embed_close(gpu);
		/* Over the capacity: a budget smaller than the big batch makes it synchronous (the
		 * activations "fit" only below 300 tokens, so the budget halves to 256: 2,048
		 * tokens a submit, against the big batch's 2N sequences). */
		setenv("EMBED_VK_FAIL_ACTIVATIONS", "300", 1);
#ifdef __SANITIZE_ADDRESS__
		if (0) /* lavapipe under ASan takes minutes a device: the plain run covers this */
#endif
		if (embed_open(test_model_dir(), &o, &gpu, &e) == EMB_OK) {
			embed_batch_capacity(gpu, &tok, &nseq);
			int total = 0;
			for (int i = 0; i < N; i++)
				total += 2 * lens[i];
			printf("GPU with a small budget: capacity %d tokens, the big batch %d\n", tok, total);
			CHECK(total > tok, "the big batch fits the small budget: nothing synchronous tested");
			check_model(gpu, ref, 2e-4f, "gpu, small budget");
			embed_close(gpu);
		}
	} else {
		printf("no Vulkan device (%s): GPU side not checked\n", e.msg);
	}
	embed_close(cpu);
	free(ref);
	if (test_failures)
		fprintf(stderr, "%d checks failed\n", test_failures);
	return test_failures ? 1 : 0;
}
