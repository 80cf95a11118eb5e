/* A text's vector must not depend on its batch-mates, their order or the batch size (other engines
 * have got this wrong through padding). Texts of very different lengths are encoded alone, then
 * in batches of several sizes and shuffled orders, and the vectors compared: identical or
 * within 1e-6. Also: the thread count must not change a vector beyond 1e-6. */
#include <jansson.h>
#include <math.h>

#include "embed.h"
#include "testutil.h"

#define N 40

static char *texts[N];

static void load_texts(void)
{
	FILE *f = fopen("../shared/data/scifact/corpus.jsonl", "r");
	char *line = NULL;
	size_t cap = 0;
	int n = 0;
	static const char *fixed[] = { "", "a", "What is Deep Learning?", "🙂 emoji and Ünïcödé" };
	for (; n < 4; n++)
		texts[n] = strdup(fixed[n]);
	while (f && n < N && getline(&line, &cap, f) > 0) {
		json_t *o = json_loads(line, 0, NULL);
		const char *t = json_string_value(json_object_get(o, "text"));
		/* every third document cut short, so lengths range from 1 to 256 tokens */
		if (t) {
			texts[n] = strdup(t);
			if (n % 3 == 0 && strlen(texts[n]) > 40)
				texts[n][40 + n] = 0;
			n++;
		}
		json_decref(o);
	}
	free(line);
	if (f)
		fclose(f);
	for (; n < N; n++) { /* no SciFact at hand: synthesise */
		char buf[2048];
		int k = 0;
		for (int w = 0; w < n * 5 && k < 2000; w++)
			k += snprintf(buf + k, sizeof buf - (size_t)k, "word%d ", w * n);
		texts[n] = strdup(buf);
	}
}

static float max_diff(const float *a, const float *b, int n)
{
	float m = 0;
	for (int i = 0; i < n; i++)
		m = fmaxf(m, fabsf(a[i] - b[i]));
	return m;
}

int main(void)
{
	if (!test_have_model()) {
		printf("skipped: default model not fetched (scripts/fetch-model)\n");
		return 77;
	}
	load_texts();
	embed_options o;
	embed_options_default(&o);
	o.threads = 2;
	embed_model *m;
	emb_err err = { 0 };
	if (embed_open(test_model_dir(), &o, &m, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	const int D = embed_dim(m);
	float *alone = malloc((size_t)N * D * sizeof(float));
	float *batch = malloc((size_t)N * D * sizeof(float));
	for (int i = 0; i < N; i++)
		CHECK(embed_encode(m, (const char *const *)&texts[i], NULL, 1, EMBED_PREFIX_NONE,
				   alone + (size_t)i * D, &err) == 0, "%s", err.msg);

	static const int sizes[] = { 2, 3, 7, 16, N };
	unsigned seed = 7;
	float worst = 0;
	for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
		int order[N];
		for (int i = 0; i < N; i++)
			order[i] = i;
		for (int i = N - 1; i > 0; i--) { /* shuffle: new batch-mates each round */
			seed = seed * 1103515245u + 12345u;
			int j = (int)(seed >> 16) % (i + 1), t = order[i];
			order[i] = order[j], order[j] = t;
		}
		for (int i = 0; i < N; i += sizes[si]) {
			int k = N - i < sizes[si] ? N - i : sizes[si];
			const char *bt[N];
			for (int j = 0; j < k; j++)
				bt[j] = texts[order[i + j]];
			float out[N * 384];
			CHECK(embed_encode(m, bt, NULL, k, EMBED_PREFIX_NONE, out, &err) == 0, "%s", err.msg);
			for (int j = 0; j < k; j++) {
				float d = max_diff(out + (size_t)j * D, alone + (size_t)order[i + j] * D, D);
				worst = fmaxf(worst, d);
				CHECK(d <= 1e-6f, "batch size %d: text %d differs by %g from alone", sizes[si], order[i + j], d);
			}
		}
	}
	printf("batch sizes 1..%d, shuffled: max |diff| %g\n", N, worst);
	embed_close(m);

	o.threads = 1;
	CHECK(embed_open(test_model_dir(), &o, &m, &err) == 0, "%s", err.msg);
	CHECK(embed_encode(m, (const char *const *)texts, NULL, N, EMBED_PREFIX_NONE, batch, &err) == 0, "%s", err.msg);
	float d = max_diff(batch, alone, N * D);
	printf("1 thread vs 2 threads: max |diff| %g\n", d);
	CHECK(d <= 1e-6f, "thread count changed vectors by %g", d);
	embed_close(m);

	/* A model's first short call runs on weights not packed yet (gemm_defer: panels laid out
	 * per product), later calls on the packed copy: the same bits either way. alone[2..3]
	 * came after packing (the calls for texts 0 and 1 came first). */
	o.threads = 2;
	for (int i = 2; i < 4; i++) {
		float v[384];
		CHECK(embed_open(test_model_dir(), &o, &m, &err) == 0, "%s", err.msg);
		CHECK(embed_encode(m, (const char *const *)&texts[i], NULL, 1, EMBED_PREFIX_NONE, v,
				   &err) == 0, "%s", err.msg);
		CHECK(!memcmp(v, alone + (size_t)i * D, (size_t)D * sizeof(float)),
		      "text %d: first call (unpacked weights) differs from a packed call by %g", i,
		      max_diff(v, alone + (size_t)i * D, D));
		embed_close(m);
	}
	for (int i = 0; i < N; i++)
		free(texts[i]);
	free(alone);
	free(batch);
	return test_done("test_batch_invariance");
}
