/* tool_tokenize — drives engine/tokenizer.c from outside, for the differential test against
 * HF `tokenizers` (tests/test_tokenizer_diff.py) and for the speed benchmark
 * (scripts/bench-tokenizer).
 *
 *   tool_tokenize DIR                  stdin: one JSON string per line (so texts can hold
 *                                      newlines and NULs); stdout: the ids of each, without
 *                                      [CLS]/[SEP], space-separated, one line each; a text
 *                                      that fails prints "ERR <code> <message>".
 *   tool_tokenize DIR --offsets CAP    as above, but at most CAP ids (the encoder's own early
 *                                      stop, as a truncated window uses it), each printed
 *                                      as "id start end" (tokenizer_encode_offsets' byte
 *                                      range), so offsets and truncation of tokenizers
 *                                      without an engine model (MPNet's) can be compared.
 *   tool_tokenize DIR --bench FILE [SECONDS]
 *                                      FILE: JSON lines, objects whose "title" and "text"
 *                                      (or plain JSON strings) are the texts; encodes them
 *                                      all, single-threaded, again and again for SECONDS
 *                                      (default 3) of CPU time, and prints MB/s.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "tokenizer.h"

static int tokenize_lines(const tokenizer *t, size_t limit)
{
	size_t cap = 1 << 16;
	int32_t *ids = malloc(cap * sizeof *ids);
	size_t *offs = limit ? malloc(2 * (limit + 1) * sizeof *offs) : NULL;
	if (limit && !offs) {
		free(ids);
		return 2;
	}
	char *line = NULL;
	size_t line_cap = 0;
	ssize_t n;
	long lineno = 0;
	while (ids && (n = getline(&line, &line_cap, stdin)) > 0) {
		lineno++;
		json_error_t jerr;
		json_t *j = json_loadb(line, (size_t)n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
		if (!json_is_string(j)) {
			fprintf(stderr, "tool_tokenize: stdin line %ld: not a JSON string: %s\n",
				lineno, jerr.text);
			return 2;
		}
		size_t len = json_string_length(j);
		if (len > cap) {
			cap = len;
			int32_t *p = realloc(ids, cap * sizeof *ids);
			if (!p)
				break;
			ids = p;
		}
		emb_err err = {0};
		long k = limit ? tokenizer_encode_offsets(t, json_string_value(j), len, ids, offs,
							  limit < cap ? limit : cap, &err)
			       : tokenizer_encode(t, json_string_value(j), len, ids, cap, &err);
		if (k < 0) {
			printf("ERR %d %s\n", err.code, err.msg);
		} else {
			for (long i = 0; i < k; i++) {
				printf(i ? " %d" : "%d", ids[i]);
				if (limit)
					printf(" %zu %zu", offs[2 * i], offs[2 * i + 1]);
			}
			putchar('\n');
		}
		json_decref(j);
	}
	free(line);
	free(offs);
	if (!ids) {
		fprintf(stderr, "tool_tokenize: out of memory\n");
		return 2;
	}
	free(ids);
	return fflush(stdout) == 0 ? 0 : 2;
}

static double now(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct text {
	char *s;
	size_t len;
};

static int add_text(struct text **texts, size_t *n, json_t *v)
{
	if (!json_is_string(v) || json_string_length(v) == 0)
		return 0;
	struct text *p = realloc(*texts, (*n + 1) * sizeof *p);
	if (!p)
		return -1;
	*texts = p;
	p[*n].len = json_string_length(v);
	p[*n].s = malloc(p[*n].len);
	if (!p[*n].s)
		return -1;
	memcpy(p[*n].s, json_string_value(v), p[*n].len);
	(*n)++;
	return 0;
}

static int bench(const tokenizer *t, const char *path, double seconds)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		perror(path);
		return 2;
	}
	struct text *texts = NULL;
	size_t ntexts = 0, bytes = 0, maxlen = 0;
	char *line = NULL;
	size_t line_cap = 0;
	ssize_t n;
	while ((n = getline(&line, &line_cap, f)) > 0) {
		json_t *j = json_loadb(line, (size_t)n, JSON_DECODE_ANY, NULL);
		int rc;
		if (json_is_object(j))
			rc = add_text(&texts, &ntexts, json_object_get(j, "title")) ||
			     add_text(&texts, &ntexts, json_object_get(j, "text"));
		else
			rc = add_text(&texts, &ntexts, j);
		json_decref(j);
		if (rc) {
			fprintf(stderr, "tool_tokenize: out of memory\n");
			return 2;
		}
	}
	free(line);
	fclose(f);
	for (size_t i = 0; i < ntexts; i++) {
		bytes += texts[i].len;
		if (texts[i].len > maxlen)
			maxlen = texts[i].len;
	}
	int32_t *ids = malloc((maxlen + 1) * sizeof *ids);
	if (!ids || ntexts == 0) {
		fprintf(stderr, "tool_tokenize: no texts in %s\n", path);
		return 2;
	}
	/* CPU time is the figure to trust on a shared machine; wall time is printed too. */
	size_t passes = 0, tokens = 0;
	double t0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_THREAD_CPUTIME_ID), elapsed, cpu;
	do {
		tokens = 0;
		for (size_t i = 0; i < ntexts; i++) {
			emb_err err = {0};
			const struct text *x = &texts[i];
			long k = tokenizer_encode(t, x->s, x->len, ids, x->len, &err);
			if (k < 0) {
				fprintf(stderr, "tool_tokenize: text %zu: %s\n", i, err.msg);
				return 2;
			}
			tokens += (size_t)k;
		}
		passes++;
		elapsed = now(CLOCK_MONOTONIC) - t0;
		cpu = now(CLOCK_THREAD_CPUTIME_ID) - c0;
	} while (cpu < seconds);
	printf("texts %zu, bytes %zu, tokens %zu per pass; %zu passes in %.2f s CPU: %.1f MB/s, "
	       "%.2f M tokens/s (wall %.2f s: %.1f MB/s)\n",
	       ntexts, bytes, tokens, passes, cpu, (double)bytes * passes / cpu / 1e6,
	       (double)tokens * passes / cpu / 1e6, elapsed,
	       (double)bytes * passes / elapsed / 1e6);
	for (size_t i = 0; i < ntexts; i++)
		free(texts[i].s);
	free(texts);
	free(ids);
	return 0;
}

int main(int argc, char **argv)
{
	bool offsets = argc == 4 && strcmp(argv[2], "--offsets") == 0;
	if (argc != 2 && !offsets &&
	    !(argc >= 4 && argc <= 5 && strcmp(argv[2], "--bench") == 0)) {
		fprintf(stderr, "usage: tool_tokenize DIR [--bench FILE [SECONDS] | --offsets CAP]\n");
		return 2;
	}
	if (offsets && atol(argv[3]) < 1) {
		fprintf(stderr, "tool_tokenize: --offsets CAP must be >= 1\n");
		return 2;
	}
	tokenizer *t;
	emb_err err = {0};
	if (tokenizer_load(argv[1], &t, &err)) {
		fprintf(stderr, "tool_tokenize: %s (%s)\n", err.msg, emb_strerror(err.code));
		return 1;
	}
	int rc = argc == 2   ? tokenize_lines(t, 0)
		 : offsets ? tokenize_lines(t, (size_t)atol(argv[3]))
			   : bench(t, argv[3], argc == 5 ? atof(argv[4]) : 3);
	tokenizer_free(t);
	return rc;
}
