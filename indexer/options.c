/* options.c — the indexer's command line: usage, parsing (exit 2 on a bad one), and which
 * model directory a run uses.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "indexer.h"

static void usage(FILE *f)
{
	fprintf(f,
"usage: indexer --store DIR [--model DIR] [options] INPUT...\n"
"Inputs: JSONL files (.jsonl/.ndjson: id or _id, text, title, metadata), text and Markdown\n"
"files, directory trees (id = relative path), '-' for JSONL on stdin.\n"
"  --store DIR          the vector store (created when missing)\n"
"  --model DIR          model directory (default: $EMBED_MODEL, else the store's model,\n"
"                       else the fetched " EMBED_DEFAULT_MODEL ")\n"
"  --delete ID          delete a document (repeatable)\n"
"  --prune              delete documents not present in the inputs\n"
"  --rebuild            build a fresh store and swap it in atomically when done\n"
"  --vectors f32|int8|binary  what a search scans, fixed when the store is created\n"
"                       (default f32; a rebuild keeps the store's unless given): int8\n"
"                       or binary add compact codes beside the f32 vectors, which rescore\n"
"                       the compact scan's candidates (search --rescore)\n"
"  --shard I/N          index only the documents whose id hashes to shard I of N\n"
"                       (FNV-1a 64 of the id bytes mod N; README); prune and delete act\n"
"                       within the shard; the store records I/N and refuses another\n"
"  --reranker DIR       record DIR as the store's default cross-encoder, which search\n"
"                       --rerank uses when it names none ('' forgets it; a rebuild keeps\n"
"                       the live store's unless given)\n"
"  --window N           tokens per window, specials included (default: model max)\n"
"  --stride N           tokens between window starts (default: window - 2 - 32)\n"
"  --truncate           one window per document: index the first window only\n"
"  --no-title           embed the text alone (default: title + \" \" + text)\n"
"  --id-field K[,K..]   JSON keys for the id (default _id,id)\n"
"  --text-field K, --title-field K, --meta-field K  (defaults text, title, metadata)\n"
"  --skip-bad           skip and count malformed documents instead of stopping\n"
"  --max-record-bytes N largest JSONL line or text file (default 64 MiB, at most 1 GiB)\n"
"  --threads N          CPU threads, at most 1024 (default all)\n"
"  --device cpu|gpu|auto (default auto)\n"
"  --precision P        fp32, fp16 (GPU), bf16 or int8 (CPU: faster, vectors within\n"
"                       cosine 0.9999 / 0.99 of fp32; auto then means the CPU; int8 with\n"
"                       --device gpu: the GPU's int8 products)\n"
"  --gpu all|N[,N..]    one engine per GPU (Vulkan device numbers as embed --list-devices\n"
"                       gives them; all: every device that is not a CPU implementation;\n"
"                       a device named twice runs two engines)\n"
"  --batch-tokens N     tokens of one embedding batch (default: what the device holds,\n"
"                       from its memory; 8192 on the CPU)\n"
"  --window-docs N      documents per chunk, one store transaction each (default 4096 on\n"
"                       a GPU, 256 on the CPU)\n"
"  --queue-chunks N     chunks in flight between reading and commit, which bounds memory\n"
"                       and what a kill loses (default 4 + 2 per engine)\n"
"  --quiet              no progress, no summary\n"
"  --progress-every S   seconds between progress lines when not on a TTY (default 10)\n"
"  --check              verify the whole store (checksums, vectors, documents, row\n"
"                       ownership, counts) and print what was verified\n"
"  --info               print what the store is (model, shard, counts) as one JSON line\n");
}

/* --gpu all, or a comma-separated list of device numbers. Exits 2 on anything else. */
static void parse_gpus(opts *o, const char *v)
{
	free(o->gpus);
	o->gpus = NULL;
	o->ngpus = 0;
	o->gpus_all = !strcmp(v, "all");
	if (o->gpus_all)
		return;
	o->gpus = calloc(strlen(v) + 1, sizeof *o->gpus);
	for (const char *q = v;;) {
		char *end;
		long n = strtol(q, &end, 10);
		if (end == q || n < 0 || n > 1024 || (*end && *end != ',') || !o->gpus) {
			fprintf(stderr, "indexer: --gpu must be all or device numbers like 0,1 (got '%s')\n", v);
			exit(2);
		}
		o->gpus[o->ngpus++] = (int)n;
		if (!*end)
			break;
		q = end + 1;
	}
}

void parse_args(int argc, char **argv, opts *o)
{
	memset(o, 0, sizeof *o);
	o->in = (input_opts){.id_fields = "_id,id", .text_field = "text", .title_field = "title",
			     .meta_field = "metadata", .max_record = INPUT_MAX_RECORD_DEFAULT,
			     .stop = &g_stop};
	o->progress_every = 10;
	o->device = EMBED_DEVICE_AUTO;
	o->inputs = calloc((size_t)argc, sizeof *o->inputs);
	o->deletes = calloc((size_t)argc, sizeof *o->deletes);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0)
#define NEEDV() do { if (!v) { fprintf(stderr, "indexer: %s needs a value\n", a); exit(2); } i++; } while (0)
		if (ARG("--store")) { NEEDV(); o->store = v; }
		else if (ARG("--model")) { NEEDV(); o->model = v; }
		else if (ARG("--delete")) { NEEDV(); o->deletes[o->ndeletes++] = (char *)v; }
		else if (ARG("--prune")) o->prune = 1;
		else if (ARG("--rebuild")) o->rebuild = 1;
		else if (ARG("--reranker")) { NEEDV(); o->reranker = v; }
		else if (ARG("--vectors")) {
			NEEDV();
			quant_type t;
			if (quant_parse(v, &t)) {
				fprintf(stderr, "indexer: --vectors must be f32, int8 or binary (got '%s')\n", v);
				exit(2);
			}
			o->vectors = v;
		}
		else if (ARG("--shard")) {
			NEEDV();
			int si, sn, end = 0;
			if (sscanf(v, "%d/%d%n", &si, &sn, &end) != 2 || v[end] || sn < 1 || sn > 1000000 ||
			    si < 0 || si >= sn) {
				fprintf(stderr, "indexer: --shard must be I/N with 0 <= I < N <= 1000000 (got '%s')\n", v);
				exit(2);
			}
			o->shard = si;
			o->nshards = sn;
		}
		else if (ARG("--truncate") || ARG("--no-windows")) o->truncate = 1;
		else if (ARG("--no-title")) o->no_title = 1;
		else if (ARG("--skip-bad")) o->skip_bad = 1;
		else if (ARG("--quiet") || ARG("-q")) o->quiet = 1;
		else if (ARG("--check")) o->check = 1;
		else if (ARG("--info")) o->info = 1;
		else if (ARG("--window")) { NEEDV(); o->window = (int)cli_int("indexer", a, v, 8, INT_MAX); }
		else if (ARG("--stride")) { NEEDV(); o->stride = (int)cli_int("indexer", a, v, 1, INT_MAX); }
		else if (ARG("--threads")) { NEEDV(); o->threads = (int)cli_int("indexer", a, v, 0, CLI_MAX_THREADS); }
		else if (ARG("--max-record-bytes")) { NEEDV(); o->in.max_record = (size_t)cli_int("indexer", a, v, 1, (long long)1 << 30); }
		else if (ARG("--batch-tokens")) { NEEDV(); o->batch_tokens = (int)cli_int("indexer", a, v, 1, INT_MAX); }
		else if (ARG("--queue-chunks")) { NEEDV(); o->queue_chunks = (int)cli_int("indexer", a, v, 1, 1 << 20); }
		else if (ARG("--gpu")) { NEEDV(); parse_gpus(o, v); }
		else if (ARG("--window-docs")) { NEEDV(); o->window_docs = (int)cli_int("indexer", a, v, 1, INT_MAX); }
		else if (ARG("--progress-every")) { NEEDV(); o->progress_every = cli_double("indexer", a, v, 0, 1e9); }
		else if (ARG("--device")) { NEEDV(); o->device = cli_device("indexer", a, v); }
		else if (ARG("--precision")) { NEEDV(); o->precision = cli_precision("indexer", a, v); }
		else if (ARG("--id-field")) { NEEDV(); o->in.id_fields = v; }
		else if (ARG("--text-field")) { NEEDV(); o->in.text_field = v; }
		else if (ARG("--title-field")) { NEEDV(); o->in.title_field = v; }
		else if (ARG("--meta-field")) { NEEDV(); o->in.meta_field = v; }
		else if (ARG("--help") || ARG("-h")) { usage(stdout); exit(0); }
		else if (a[0] == '-' && a[1]) { fprintf(stderr, "indexer: unknown option %s\n", a); usage(stderr); exit(2); }
		else o->inputs[o->ninputs++] = (char *)a;
#undef ARG
#undef NEEDV
	}
	if (!o->store) {
		fprintf(stderr, "indexer: --store DIR is required\n");
		usage(stderr);
		exit(2);
	}
	if (!o->check && !o->info && !o->ninputs && !o->ndeletes && !o->prune) {
		fprintf(stderr, "indexer: nothing to do (no INPUT, --delete or --prune)\n");
		exit(2);
	}
	if (o->prune && !o->ninputs) {
		fprintf(stderr, "indexer: --prune needs the inputs that hold every document to keep\n");
		exit(2);
	}
}

/* The model directory: --model, $EMBED_MODEL, the store's (where it still exists), or the
 * fetched default. */
void find_model(const opts *o, char *out, size_t cap)
{
	if (o->model) {
		snprintf(out, cap, "%s", o->model);
		return;
	}
	const char *env = getenv("EMBED_MODEL");
	store *s;
	if (!(env && *env) && store_open(o->store, STORE_READONLY, &s, NULL) == 0) {
		store_model m;
		int ok = store_model_get(s, &m, NULL) == 0 && m.model_dir[0] && access(m.model_dir, F_OK) == 0;
		store_close(s);
		if (ok) {
			snprintf(out, cap, "%s", m.model_dir);
			return;
		}
	}
	embed_default_model_dir(out, cap);
}
