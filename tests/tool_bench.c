/* tool_bench — times the engine in-process for scripts/bench-cpu and scripts/bench-gpu:
 *   tool_bench MODEL_DIR TEXTS.jsonl THREADS BATCH [DEVICE [LATENCY_TEXTS.jsonl [PRECISION]]]
 * reads {"text": ...} lines, then prints one JSON line: throughput over all texts in
 * batches of BATCH (docs/s, tokens/s) after a warm-up, and single-text latency p50/p99
 * over the first 200 texts, or over every text of LATENCY_TEXTS when given (so one
 * process measures documents/s on long texts and latency on short queries, and its peak
 * RSS covers both). DEVICE is cpu (default), gpu or auto; PRECISION fp32 (default), fp16,
 * bf16 or int8 (embed.h's embed_precision). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "embed.h"

#include "benchutil.h"

/* The {"text": ...} lines of PATH, or NULL (reported) when it cannot be read. */
static char **read_texts(const char *path, size_t *np)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		perror(path);
		return NULL;
	}
	size_t n = 0, cap = 1024;
	char **texts = malloc(cap * sizeof *texts);
	char *line = NULL;
	size_t lcap = 0;
	while (getline(&line, &lcap, f) > 0) {
		json_t *j = json_loads(line, 0, NULL);
		const char *t = json_string_value(json_object_get(j, "text"));
		if (t) {
			if (n == cap)
				texts = realloc(texts, (cap *= 2) * sizeof *texts);
			texts[n++] = strdup(t);
		}
		json_decref(j);
	}
	fclose(f);
	free(line);
	*np = n;
	return texts;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: tool_bench MODEL_DIR TEXTS.jsonl THREADS BATCH [cpu|gpu|auto]\n");
		return 2;
	}
	embed_options o;
	embed_options_default(&o);
	o.threads = atoi(argv[3]);
	int batch = atoi(argv[4]);
	if (argc > 5)
		o.device = !strcmp(argv[5], "gpu") ? EMBED_DEVICE_GPU : !strcmp(argv[5], "auto") ? EMBED_DEVICE_AUTO : EMBED_DEVICE_CPU;
	size_t n, nq = 0;
	char **texts = read_texts(argv[2], &n), **qtexts = NULL;
	if (!texts)
		return 1;
	if (argc > 6 && !(qtexts = read_texts(argv[6], &nq)))
		return 1;
	if (argc > 7)
		o.precision = !strcmp(argv[7], "bf16")   ? EMBED_PRECISION_BF16
			      : !strcmp(argv[7], "int8") ? EMBED_PRECISION_INT8
			      : !strcmp(argv[7], "fp16") ? EMBED_PRECISION_FP16
							 : EMBED_PRECISION_FP32;

	embed_model *m;
	emb_err err = { 0 };
	double t0 = now();
	if (embed_open(argv[1], &o, &m, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	double open_s = now() - t0;
	const int D = embed_dim(m);
	float *out = malloc((size_t)batch * D * sizeof(float));
	int32_t *ids = malloc((size_t)embed_max_tokens(m) * sizeof(int32_t));
	long tokens = 0;
	for (size_t i = 0; i < n; i++)
		tokens += embed_tokenize(m, texts[i], strlen(texts[i]), EMBED_PREFIX_NONE, ids,
					 (size_t)embed_max_tokens(m), NULL);

	/* warm-up: one batch */
	size_t w = n < (size_t)batch ? n : (size_t)batch;
	embed_encode(m, (const char *const *)texts, NULL, (int)w, EMBED_PREFIX_NONE, out, &err);
	t0 = now();
	for (size_t i = 0; i < n; i += (size_t)batch) {
		int k = n - i < (size_t)batch ? (int)(n - i) : batch;
		if (embed_encode(m, (const char *const *)texts + i, NULL, k, EMBED_PREFIX_NONE, out, &err)) {
			fprintf(stderr, "%s\n", err.msg);
			return 1;
		}
	}
	double secs = now() - t0;

	char **ltexts = qtexts ? qtexts : texts;
	size_t nl = qtexts ? nq : n < 200 ? n : 200;
	if (!nl) {
		fprintf(stderr, "no texts to time one by one\n");
		return 1;
	}
	double *lat = malloc(nl * sizeof *lat);
	for (size_t i = 0; i < nl; i++) {
		double s = now();
		if (embed_encode(m, (const char *const *)ltexts + i, NULL, 1, EMBED_PREFIX_NONE, out, &err)) {
			fprintf(stderr, "%s\n", err.msg);
			return 1;
		}
		lat[i] = (now() - s) * 1e3;
	}
	qsort(lat, nl, sizeof *lat, cmp_double);
	printf("{\"texts\": %zu, \"tokens\": %ld, \"threads\": %d, \"batch\": %d, \"device\": \"%s\", "
	       "\"seconds\": %.4f, \"docs_per_s\": %.1f, \"tokens_per_s\": %.0f, "
	       "\"latency_p50_ms\": %.3f, \"latency_p99_ms\": %.3f, \"open_s\": %.3f}\n",
	       n, tokens, o.threads, batch, embed_device_name(m), secs, n / secs, tokens / secs,
	       lat[nl / 2], lat[(size_t)(nl * 0.99) < nl ? (size_t)(nl * 0.99) : nl - 1], open_s);
	free(lat);
	free(out);
	free(ids);
	for (size_t i = 0; i < n; i++)
		free(texts[i]);
	free(texts);
	for (size_t i = 0; i < nq; i++)
		free(qtexts[i]);
	free(qtexts);
	embed_close(m);
	return 0;
}
