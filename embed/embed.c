/* embed — the command-line face of the engine: texts on stdin, one embedding (or token id
 * list) per input line on stdout. Handy for scripting and for checking the engine against
 * other implementations line by line. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "embed.h"
#include "linereader.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: embed [options] < texts\n"
		"Reads one text per line (or with --jsonl one JSON object per line with a \"text\"\n"
		"field) and writes one JSON array per input line: the embedding, or with --tokens\n"
		"the token ids after truncation, [CLS] and [SEP] included.\n"
		"  --model DIR        model directory (default: $EMBED_MODEL or the fetched all-MiniLM-L6-v2)\n"
		"  --device D         cpu, gpu or auto (default cpu)\n"
		"  --gpu N            Vulkan device index (default: $EMBED_GPU, else the first discrete GPU)\n"
		"  --list-devices     list the Vulkan devices with their indexes, and exit\n"
		"  --precision P      fp32, fp16 (GPU), bf16 or int8 (CPU: faster, vectors within cosine\n"
		"                     0.9999 / 0.99 of fp32; int8 with --device gpu: the GPU's int8\n"
		"                     products, docs/bench-gpu.md); default: fastest that meets the bar\n"
		"  --batch N          texts per batch (default 64)\n"
		"  --threads N        CPU threads, up to 1024 (default 0: all)\n"
		"  --format F         jsonl (default) or f32 (raw little-endian float32 rows)\n"
		"  --prefix P         query, passage or none (default none; E5 models need one)\n"
		"  --jsonl            input lines are JSON objects with a \"text\" field\n"
		"  --tokens           print token ids instead of embeddings\n"
		"  --max-line-bytes N longest input line (default 64 MiB, at most 1 GiB); a longer\n"
		"                     line stops with embed: stdin:LINE: line longer than N bytes\n");
}

typedef struct cli {
	embed_model *m;
	int jsonl, tokens, f32;
	embed_prefix prefix;
	int batch;
	/* the pending batch */
	char **texts;
	size_t *lens;
	long *lines;
	int n;
	float *vecs;
	int32_t *ids;
} cli;

static int flush_batch(cli *c)
{
	int rc = 0;
	if (c->n == 0)
		return 0;
	emb_err err = { 0 };
	int dim = embed_dim(c->m);
	if (c->tokens) {
		size_t cap = (size_t)embed_max_tokens(c->m);
		for (int i = 0; i < c->n && !rc; i++) {
			long k = embed_tokenize(c->m, c->texts[i], c->lens[i], c->prefix, c->ids, cap, &err);
			if (k < 0) {
				fprintf(stderr, "embed: stdin:%ld: %s\n", c->lines[i], err.msg);
				rc = 1;
				break;
			}
			putchar('[');
			for (long j = 0; j < k; j++)
				printf(j ? ",%d" : "%d", (int)c->ids[j]);
			puts("]");
		}
	} else {
		int e = embed_encode(c->m, (const char *const *)c->texts, c->lens, c->n, c->prefix,
				     c->vecs, &err);
		if (e) {
			/* name the input line, not the batch index */
			const char *msg = err.msg;
			int idx = -1;
			if (sscanf(msg, "text %d:", &idx) == 1 && idx >= 0 && idx < c->n) {
				msg = strchr(msg, ':') + 2;
				fprintf(stderr, "embed: stdin:%ld: %s\n", c->lines[idx], msg);
			} else {
				fprintf(stderr, "embed: %s\n", msg);
			}
			rc = 1;
		} else {
			/* A NaN or infinity (broken weights) is no embedding, and would not be valid
			 * JSON: the rows before it are written, then it stops the run. */
			for (int i = 0; i < c->n && !rc; i++) {
				const float *v = c->vecs + (size_t)i * dim;
				int j = 0;
				while (j < dim && isfinite(v[j]))
					j++;
				if (j < dim) {
					fprintf(stderr, "embed: stdin:%ld: the model produced a non-finite "
						"vector (%g at dimension %d); its weights may be broken\n", c->lines[i], v[j], j);
					rc = 1;
				} else if (c->f32) {
					fwrite(v, sizeof(float), (size_t)dim, stdout);
				} else {
					putchar('[');
					for (j = 0; j < dim; j++)
						printf(j ? ",%.9g" : "%.9g", v[j]);
					puts("]");
				}
			}
		}
	}
	for (int i = 0; i < c->n; i++)
		free(c->texts[i]);
	c->n = 0;
	return rc;
}

/* Takes one input line (without its newline) into the batch. */
static int add_line(cli *c, char *line, size_t len, long lineno)
{
	char *text;
	size_t tlen;
	if (c->jsonl) {
		json_error_t je;
		json_t *o = json_loadb(line, len, JSON_ALLOW_NUL, &je);
		json_t *t = json_object_get(o, "text");
		if (!o || !json_is_string(t)) {
			fprintf(stderr, "embed: stdin:%ld: %s\n", lineno,
				!o ? je.text : "expected a JSON object with a string \"text\" field");
			json_decref(o);
			return 1;
		}
		tlen = json_string_length(t);
		text = malloc(tlen + 1);
		if (text)
			memcpy(text, json_string_value(t), tlen + 1);
		json_decref(o);
	} else {
		tlen = len;
		text = malloc(len + 1);
		if (text)
			memcpy(text, line, len + 1);
	}
	if (!text) {
		fprintf(stderr, "embed: stdin:%ld: out of memory\n", lineno);
		return 1;
	}
	c->texts[c->n] = text;
	c->lens[c->n] = tlen;
	c->lines[c->n] = lineno;
	c->n++;
	return c->n == c->batch ? flush_batch(c) : 0;
}

int main(int argc, char **argv)
{
	embed_options opt;
	embed_options_default(&opt);
	char model[PATH_MAX] = "";
	cli c = { .batch = 64 };
	size_t max_line = (size_t)64 << 20;
	static const struct option longopts[] = {
		{ "model", required_argument, 0, 'm' }, { "device", required_argument, 0, 'd' },
		{ "gpu", required_argument, 0, 'g' }, { "precision", required_argument, 0, 'p' },
		{ "batch", required_argument, 0, 'b' }, { "threads", required_argument, 0, 't' },
		{ "format", required_argument, 0, 'f' }, { "prefix", required_argument, 0, 'x' },
		{ "jsonl", no_argument, 0, 'j' }, { "tokens", no_argument, 0, 'k' },
		{ "list-devices", no_argument, 0, 'L' }, { "help", no_argument, 0, 'h' },
		{ "max-line-bytes", required_argument, 0, 'M' },
		{ 0, 0, 0, 0 },
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'm': snprintf(model, sizeof model, "%s", optarg); break;
		case 'd':
			opt.device = cli_device("embed", "--device", optarg);
			break;
		case 'g': opt.gpu_index = (int)cli_int("embed", "--gpu", optarg, 0, 255); break;
		case 'p': opt.precision = cli_precision("embed", "--precision", optarg); break;
		case 'b': c.batch = (int)cli_int("embed", "--batch", optarg, 1, 1 << 20); break;
		case 't': opt.threads = (int)cli_int("embed", "--threads", optarg, 0, CLI_MAX_THREADS); break;
		case 'f':
			if (!strcmp(optarg, "f32")) c.f32 = 1;
			else if (strcmp(optarg, "jsonl")) { fprintf(stderr, "embed: --format must be jsonl or f32\n"); return 2; }
			break;
		case 'x':
			if (!strcmp(optarg, "query")) c.prefix = EMBED_PREFIX_QUERY;
			else if (!strcmp(optarg, "passage")) c.prefix = EMBED_PREFIX_PASSAGE;
			else if (!strcmp(optarg, "none")) c.prefix = EMBED_PREFIX_NONE;
			else { fprintf(stderr, "embed: --prefix must be query, passage or none\n"); return 2; }
			break;
		case 'M':
			max_line = (size_t)cli_int("embed", "--max-line-bytes", optarg, 1,
						   (long long)LINE_READER_MAX_CAP);
			break;
		case 'j': c.jsonl = 1; break;
		case 'k': c.tokens = 1; break;
		case 'L': {
			char list[4096];
			emb_err e = { 0 };
			int n = embed_list_devices(list, sizeof list, &e);
			if (n < 0) {
				fprintf(stderr, "embed: %s\n", e.msg);
				return 1;
			}
			fputs(n ? list : "no Vulkan device (the loader found no driver that offers one)\n",
			      n ? stdout : stderr);
			return n ? 0 : 1;
		}
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "embed: unexpected argument '%s' (texts come on stdin)\n", argv[optind]);
		return 2;
	}
	if (!model[0])
		embed_default_model_dir(model, sizeof model);

	emb_err err = { 0 };
	if (embed_open(model, &opt, &c.m, &err)) {
		fprintf(stderr, "embed: %s\n", err.msg);
		return 1;
	}
	int dim = embed_dim(c.m);
	c.texts = calloc((size_t)c.batch, sizeof *c.texts);
	c.lens = calloc((size_t)c.batch, sizeof *c.lens);
	c.lines = calloc((size_t)c.batch, sizeof *c.lines);
	c.vecs = malloc((size_t)c.batch * dim * sizeof(float));
	c.ids = malloc((size_t)embed_max_tokens(c.m) * sizeof(int32_t));
	if (!c.texts || !c.lens || !c.lines || !c.vecs || !c.ids) {
		fprintf(stderr, "embed: out of memory for a batch of %d\n", c.batch);
		return 1;
	}

	line_reader in;
	int rc = line_reader_init(&in, 0, "embed", "stdin", max_line) ? 1 : 0;
	char *line;
	size_t len;
	int got = 0;
	while (!rc && (got = line_reader_next(&in, &line, &len)) > 0)
		rc = add_line(&c, line, len, in.lineno);
	if (got < 0) /* the lines before the bad one are still answered, as a stream's would be */
		rc = flush_batch(&c) | 1;
	if (!rc)
		rc = flush_batch(&c);
	for (int i = 0; i < c.n; i++)
		free(c.texts[i]);
	if (fflush(stdout) != 0) {
		fprintf(stderr, "embed: stdout: %s\n", strerror(errno));
		rc = 1;
	}
	line_reader_free(&in);
	free(c.texts);
	free(c.lens);
	free(c.lines);
	free(c.vecs);
	free(c.ids);
	embed_close(c.m);
	return rc;
}
