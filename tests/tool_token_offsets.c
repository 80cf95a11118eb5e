/* tool_token_offsets — prints embed_tokenize_offsets' ids and byte offsets, for the
 * comparison with Hugging Face `tokenizers` in tests/test_token_offsets.py.
 *
 *   tool_token_offsets MODEL_DIR CAP    stdin: one JSON string per line; stdout: for each,
 *                                       "id start end" of every token ([CLS] and [SEP]
 *                                       included, at most CAP tokens), space-separated, one
 *                                       line each; a text that fails prints "ERR <message>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "embed.h"

int main(int argc, char **argv)
{
	if (argc != 3 || atol(argv[2]) < 2) {
		fprintf(stderr, "usage: tool_token_offsets MODEL_DIR CAP (CAP >= 2)\n");
		return 2;
	}
	size_t cap = (size_t)atol(argv[2]);
	embed_options o;
	embed_options_default(&o);
	o.threads = 1;
	o.quiet = 1;
	embed_model *m;
	emb_err err = {0};
	if (embed_open(argv[1], &o, &m, &err)) {
		fprintf(stderr, "tool_token_offsets: %s\n", err.msg);
		return 1;
	}
	int32_t *ids = malloc(cap * sizeof *ids);
	size_t *offs = malloc(2 * cap * sizeof *offs);
	char *line = NULL;
	size_t line_cap = 0;
	ssize_t n;
	int rc = ids && offs ? 0 : 2;
	while (!rc && (n = getline(&line, &line_cap, stdin)) > 0) {
		json_error_t jerr;
		json_t *j = json_loadb(line, (size_t)n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
		if (!json_is_string(j)) {
			fprintf(stderr, "tool_token_offsets: not a JSON string: %s\n", jerr.text);
			rc = 2;
			break;
		}
		err = (emb_err){0};
		long k = embed_tokenize_offsets(m, json_string_value(j), json_string_length(j),
						EMBED_PREFIX_NONE, ids, offs, cap, &err);
		if (k < 0)
			printf("ERR %s\n", err.msg);
		for (long i = 0; i < k; i++)
			printf(i ? " %d %zu %zu" : "%d %zu %zu", ids[i], offs[2 * i], offs[2 * i + 1]);
		if (k >= 0)
			putchar('\n');
		json_decref(j);
	}
	free(line);
	free(ids);
	free(offs);
	embed_close(m);
	return rc ? rc : fflush(stdout) == 0 ? 0 : 2;
}
