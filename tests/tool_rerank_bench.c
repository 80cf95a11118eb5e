/* tool_rerank_bench — times rerank_score for scripts/bench-rerank: the model is opened once,
 * then each JSONL record ({"query": ..., "documents": [...]}) from stdin is one timed call
 * (tokenizing the pairs, the encoder, the head: what search --rerank pays a query). The
 * first record runs once untimed first (page faults of the weights, the GPU's first
 * dispatches). Prints one JSON line: {"device": ..., "ms": [per record], "pairs": [...],
 * "tokens": [...]}.
 *
 *   tool_rerank_bench --model DIR [--threads N] [--device cpu|gpu] [--precision fp32|fp16]
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "rerank.h"

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	rerank_options opt;
	rerank_options_default(&opt);
	const char *model = NULL;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--model"))
			model = argv[i + 1];
		else if (!strcmp(argv[i], "--threads"))
			opt.embed.threads = (int)cli_int("tool_rerank_bench", argv[i], argv[i + 1], 0, 1024);
		else if (!strcmp(argv[i], "--device"))
			opt.embed.device = cli_device("tool_rerank_bench", argv[i], argv[i + 1]);
		else if (!strcmp(argv[i], "--precision"))
			opt.embed.precision = cli_precision("tool_rerank_bench", argv[i], argv[i + 1]);
		else {
			fprintf(stderr, "tool_rerank_bench: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (!model) {
		fprintf(stderr, "usage: tool_rerank_bench --model DIR [--threads N] [--device D] "
			"[--precision P] < records.jsonl\n");
		return 2;
	}
	rerank_model *m;
	emb_err err = {0};
	if (rerank_open(model, &opt, &m, &err)) {
		fprintf(stderr, "tool_rerank_bench: %s\n", err.msg);
		return 1;
	}
	json_t *ms = json_array(), *np = json_array(), *nt = json_array();
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int first = 1, rc = 0;
	const size_t maxt = (size_t)rerank_max_tokens(m);
	int32_t *ids = malloc(maxt * sizeof *ids);
	while (!rc && ids && (len = getline(&line, &cap, stdin)) > 0) {
		json_t *r = json_loadb(line, (size_t)len, 0, NULL);
		json_t *q = json_object_get(r, "query"), *docs = json_object_get(r, "documents");
		size_t n = json_array_size(docs);
		if (!json_is_string(q) || !n) {
			fprintf(stderr, "tool_rerank_bench: bad record\n");
			json_decref(r);
			rc = 1;
			break;
		}
		const char **t = malloc(n * sizeof *t);
		float *s = malloc(n * sizeof *s);
		long tokens = 0;
		for (size_t i = 0; i < n; i++) {
			t[i] = json_string_value(json_array_get(docs, i));
			long k = rerank_tokenize_pair(m, json_string_value(q), json_string_length(q), t[i],
						      strlen(t[i]), ids, NULL, maxt, NULL);
			tokens += k > 0 ? k : 0;
		}
		for (int rep = first ? 2 : 1; rep > 0 && !rc; rep--) {
			double t0 = now_ms();
			if (rerank_score(m, json_string_value(q), json_string_length(q), t, NULL, (int)n,
					 NULL, s, &err)) {
				fprintf(stderr, "tool_rerank_bench: %s\n", err.msg);
				rc = 1;
			} else if (rep == 1) {
				json_array_append_new(ms, json_real(now_ms() - t0));
			}
		}
		json_array_append_new(np, json_integer((json_int_t)n));
		json_array_append_new(nt, json_integer(tokens));
		first = 0;
		free(t);
		free(s);
		json_decref(r);
	}
	if (!rc) {
		json_t *o = json_pack("{s:s, s:o, s:o, s:o}", "device", rerank_device_name(m), "ms", ms,
				      "pairs", np, "tokens", nt);
		char *out = json_dumps(o, JSON_COMPACT);
		printf("%s\n", out);
		free(out);
		json_decref(o);
	} else {
		json_decref(ms);
		json_decref(np);
		json_decref(nt);
	}
	free(ids);
	free(line);
	rerank_close(m);
	return rc;
}
