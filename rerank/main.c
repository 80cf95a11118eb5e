/* rerank — score (query, documents) with a cross-encoder from the command line, for
 * scripts: one JSON line in ({"query": ..., "documents": [...]}), one JSON line out with
 * every document's score, in input order. The engine's rerank.h does the work; this file
 * reads, checks and prints. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "linereader.h"
#include "rerank.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rerank --model DIR [options] [FILE]\n"
		"Reads JSONL, one {\"query\": TEXT, \"documents\": [TEXT, ...]} a line (FILE, or stdin\n"
		"when absent or -), and writes one line a record: {\"scores\": [...], \"logits\": [...]}\n"
		"(one number a document; an array of one a label when the model has several).\n"
		"  --model DIR          cross-encoder directory (default $EMBED_RERANK_MODEL)\n"
		"  --device cpu|gpu|auto, --gpu N, --precision fp32|fp16, --threads N\n"
		"  --max-tokens N       truncate pairs to N tokens (default the model's)\n"
		"  --pooling auto|pooler|cls|mean   what the classifier reads (default: the model's)\n"
		"  --activation default|identity|sigmoid|tanh   scores from logits\n"
		"  --tokens             print each pair's {\"ids\": [...], \"types\": [...]} instead\n"
		"  --info               print the model's settings and exit\n"
		"  --max-line-bytes N   longest input line (default 64 MiB, at most 1 GiB)\n"
		"A malformed line stops with rerank: FILE:LINE: ... (exit 1) after the lines before it.\n");
}

static void print_row(const float *v, int labels)
{
	if (labels == 1) {
		printf("%.9g", (double)v[0]);
		return;
	}
	putchar('[');
	for (int j = 0; j < labels; j++)
		printf("%s%.9g", j ? "," : "", (double)v[j]);
	putchar(']');
}

/* Scores (or tokenizes) one record; returns 0, or 1 after printing FILE:LINE: MSG. */
static int one_line(rerank_model *m, const char *name, long lineno, const char *line, size_t len,
		    int tokens)
{
	json_error_t je;
	json_t *r = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
	const char *bad = NULL;
	char msg[512];
	json_t *q = NULL, *docs = NULL;
	if (!r)
		snprintf(msg, sizeof msg, "malformed JSON: %s", je.text), bad = msg;
	else if (!json_is_object(r))
		bad = "a record must be a JSON object";
	else if (!json_is_string(q = json_object_get(r, "query")))
		bad = "\"query\" missing or not a string";
	else if (!json_is_array(docs = json_object_get(r, "documents")))
		bad = "\"documents\" missing or not an array";
	size_t n = docs ? json_array_size(docs) : 0;
	for (size_t i = 0; !bad && i < n; i++)
		if (!json_is_string(json_array_get(docs, i)))
			snprintf(msg, sizeof msg, "documents[%zu] is not a string", i), bad = msg;
	if (!bad && n > (size_t)1 << 20)
		bad = "more than 1048576 documents in one record";
	if (bad) {
		fprintf(stderr, "rerank: %s:%ld: %s\n", name, lineno, bad);
		json_decref(r);
		return 1;
	}
	const char **texts = malloc((n ? n : 1) * sizeof *texts);
	size_t *lens = malloc((n ? n : 1) * sizeof *lens);
	const int labels = rerank_labels(m);
	float *lg = malloc((n ? n : 1) * (size_t)labels * sizeof *lg);
	float *sc = malloc((n ? n : 1) * (size_t)labels * sizeof *sc);
	const size_t cap = (size_t)rerank_max_tokens(m);
	int32_t *ids = malloc(cap * sizeof *ids);
	uint8_t *types = malloc(cap);
	int rc = 0;
	emb_err err = {0};
	if (!texts || !lens || !lg || !sc || !ids || !types) {
		fprintf(stderr, "rerank: %s:%ld: out of memory\n", name, lineno);
		rc = 1;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *d = json_array_get(docs, i);
		texts[i] = json_string_value(d);
		lens[i] = json_string_length(d);
	}
	if (tokens) {
		fputs("[", stdout);
		for (size_t i = 0; i < n; i++) {
			long k = rerank_tokenize_pair(m, json_string_value(q), json_string_length(q),
						      texts[i], lens[i], ids, types, cap, &err);
			if (k < 0) {
				fprintf(stderr, "rerank: %s:%ld: documents[%zu]: %s\n", name, lineno, i,
					err.msg);
				rc = 1;
				goto out;
			}
			fputs(i ? ",{\"ids\":[" : "{\"ids\":[", stdout);
			for (long t = 0; t < k; t++)
				printf("%s%d", t ? "," : "", (int)ids[t]);
			fputs("],\"types\":[", stdout);
			for (long t = 0; t < k; t++)
				printf("%s%d", t ? "," : "", types[t]);
			fputs("]}", stdout);
		}
		fputs("]\n", stdout);
		goto out;
	}
	if (rerank_score(m, json_string_value(q), json_string_length(q), texts, lens, (int)n, lg,
			 sc, &err)) {
		fprintf(stderr, "rerank: %s:%ld: %s\n", name, lineno, err.msg);
		rc = 1;
		goto out;
	}
	for (size_t i = 0; i < n * (size_t)labels; i++)
		if (!isfinite(lg[i])) {
			fprintf(stderr, "rerank: %s:%ld: documents[%zu]: the model produced a non-finite "
				"logit (broken weights?)\n", name, lineno, i / (size_t)labels);
			rc = 1;
			goto out;
		}
	fputs("{\"scores\":[", stdout);
	for (size_t i = 0; i < n; i++) {
		if (i)
			putchar(',');
		print_row(sc + i * (size_t)labels, labels);
	}
	fputs("],\"logits\":[", stdout);
	for (size_t i = 0; i < n; i++) {
		if (i)
			putchar(',');
		print_row(lg + i * (size_t)labels, labels);
	}
	fputs("]}\n", stdout);
out:
	fflush(stdout);
	free(texts);
	free(lens);
	free(lg);
	free(sc);
	free(ids);
	free(types);
	json_decref(r);
	return rc;
}

int main(int argc, char **argv)
{
	rerank_options opt;
	rerank_options_default(&opt);
	const char *model = getenv("EMBED_RERANK_MODEL");
	int tokens = 0, info = 0;
	size_t max_line = (size_t)64 << 20;
	static const struct option lo[] = {
		{ "model", required_argument, 0, 'm' },     { "device", required_argument, 0, 'd' },
		{ "gpu", required_argument, 0, 'g' },       { "precision", required_argument, 0, 'p' },
		{ "threads", required_argument, 0, 't' },   { "max-tokens", required_argument, 0, 'x' },
		{ "pooling", required_argument, 0, 'P' },   { "activation", required_argument, 0, 'a' },
		{ "tokens", no_argument, 0, 'T' },          { "info", no_argument, 0, 'i' },
		{ "help", no_argument, 0, 'h' },            { "max-line-bytes", required_argument, 0, 'M' },
		{ 0, 0, 0, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "m:h", lo, NULL)) != -1) {
		switch (c) {
		case 'm': model = optarg; break;
		case 'd': opt.embed.device = cli_device("rerank", "--device", optarg); break;
		case 'g': opt.embed.gpu_index = (int)cli_int("rerank", "--gpu", optarg, 0, 255); break;
		case 'p': opt.embed.precision = cli_precision("rerank", "--precision", optarg); break;
		case 't':
			opt.embed.threads = (int)cli_int("rerank", "--threads", optarg, 0, CLI_MAX_THREADS);
			break;
		case 'x': opt.embed.max_tokens = (int)cli_int("rerank", "--max-tokens", optarg, 3, 1 << 16); break;
		case 'P':
			if (!strcmp(optarg, "auto")) opt.pooling = RERANK_POOL_AUTO;
			else if (!strcmp(optarg, "pooler")) opt.pooling = RERANK_POOL_POOLER;
			else if (!strcmp(optarg, "cls")) opt.pooling = RERANK_POOL_CLS;
			else if (!strcmp(optarg, "mean")) opt.pooling = RERANK_POOL_MEAN;
			else {
				fprintf(stderr, "rerank: --pooling must be auto, pooler, cls or mean\n");
				return 2;
			}
			break;
		case 'a':
			if (!strcmp(optarg, "default")) opt.activation = RERANK_ACT_DEFAULT;
			else if (!strcmp(optarg, "identity")) opt.activation = RERANK_ACT_IDENTITY;
			else if (!strcmp(optarg, "sigmoid")) opt.activation = RERANK_ACT_SIGMOID;
			else if (!strcmp(optarg, "tanh")) opt.activation = RERANK_ACT_TANH;
			else {
				fprintf(stderr, "rerank: --activation must be default, identity, sigmoid or tanh\n");
				return 2;
			}
			break;
		case 'M':
			max_line = (size_t)cli_int("rerank", "--max-line-bytes", optarg, 1,
						   (long long)LINE_READER_MAX_CAP);
			break;
		case 'T': tokens = 1; break;
		case 'i': info = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!model || !*model) {
		fprintf(stderr, "rerank: no model: give --model DIR (or set EMBED_RERANK_MODEL)\n");
		return 2;
	}
	if (optind < argc - 1) {
		fprintf(stderr, "rerank: one input file at most\n");
		return 2;
	}
	const char *name = optind < argc ? argv[optind] : "-";
	int fd = 0;
	if (strcmp(name, "-") != 0 && (fd = open(name, O_RDONLY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "rerank: %s: %s\n", name, strerror(errno));
		return 1;
	}
	if (fd == 0)
		name = "stdin";
	rerank_model *m;
	emb_err err = {0};
	if (rerank_open(model, &opt, &m, &err)) {
		fprintf(stderr, "rerank: %s\n", err.msg);
		return 1;
	}
	if (info) {
		printf("{\"model\":\"%s\",\"labels\":%d,\"max_tokens\":%d,\"pooling\":\"%s\","
		       "\"activation\":\"%s\",\"device\":\"%s\"}\n", rerank_model_name(m),
		       rerank_labels(m), rerank_max_tokens(m), rerank_pooling_name(m),
		       rerank_activation_name(m), rerank_device_name(m));
		rerank_close(m);
		return 0;
	}
	line_reader in;
	int rc = line_reader_init(&in, fd, "rerank", name, max_line) ? 1 : 0;
	char *line;
	size_t len;
	int got = 0;
	while (!rc && (got = line_reader_next(&in, &line, &len)) > 0) {
		while (len > 0 && line[len - 1] == '\r')
			len--;
		if (len == 0)
			continue;
		rc = one_line(m, name, in.lineno, line, len, tokens);
	}
	if (got < 0)
		rc = 1;
	line_reader_free(&in);
	if (fd != 0)
		close(fd);
	rerank_close(m);
	return rc;
}
