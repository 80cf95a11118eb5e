/* tool_input_bench — times the indexer's reading (indexer/input.c) for docs/bench-index.md:
 *   tool_input_bench [--reps N] [--threads N] FILE...
 * prints, best of N runs (default 3): input_next (framing and parsing on one thread),
 * input_next_raw alone (framing), input_parse on one thread and on --threads threads
 * (default 2) over records framed beforehand, and jansson alone on the same records (the
 * parser the indexer had before the fast path: the "before" of parsing). MB/s counts input
 * bytes (framing: bytes read; parsing: record bytes). Compiled with input.c included, as
 * the indexer's files are not in the engine library. */
#include "../indexer/input.c"

#include <pthread.h>

#include "benchutil.h"

typedef struct job {
	const input_opts *o;
	input_rec *recs;
	size_t lo, hi;
	int jansson;
	long docs;
} job;

static void *parse_range(void *arg)
{
	job *j = arg;
	long docs = 0; /* counted here: jobs[] share cache lines */
	for (size_t i = j->lo; i < j->hi; i++) {
		input_rec r = j->recs[i]; /* a shallow copy: input_parse may take the buffers */
		r.data = malloc(r.len + 1);
		memcpy(r.data, j->recs[i].data, r.len + 1);
		r.id = j->recs[i].id ? strdup(j->recs[i].id) : NULL;
		input_doc d;
		emb_err e;
		int rc;
		if (j->jansson && r.kind == INPUT_REC_JSONL) {
			memset(&d, 0, sizeof d);
			rc = parse_jsonl(j->o, r.data, r.len, &d, &e) ? -1 : 1;
		} else {
			rc = input_parse(j->o, &r, &d, &e);
		}
		docs += rc > 0;
		input_doc_free(&d);
		input_rec_free(&r);
	}
	j->docs = docs;
	return NULL;
}

/* Parses every record on nt threads (contiguous stripes); returns seconds. The copy of
 * each record that the parse may consume is part of the time, as in a pipeline where a
 * parser frees what it was handed. */
static double parse_all(const input_opts *o, input_rec *recs, size_t n, int nt, int jansson, long *docs)
{
	pthread_t th[64];
	job jobs[64];
	double t = now();
	for (int k = 0; k < nt; k++) {
		jobs[k] = (job){o, recs, n * (size_t)k / (size_t)nt, n * (size_t)(k + 1) / (size_t)nt, jansson, 0};
		pthread_create(&th[k], NULL, parse_range, &jobs[k]);
	}
	*docs = 0;
	for (int k = 0; k < nt; k++) {
		pthread_join(th[k], NULL);
		*docs += jobs[k].docs;
	}
	return now() - t;
}

static void report(const char *what, double best, double bytes, long docs)
{
	printf("%-28s %8.3f s %8.1f MB/s %10.0f docs/s (%ld docs)\n", what, best, bytes / best / 1e6,
	       docs / best, docs);
}

int main(int argc, char **argv)
{
	int reps = 3, nt = 2, a = 1;
	for (; a + 1 < argc && argv[a][0] == '-' && argv[a][1] == '-'; a += 2) {
		if (!strcmp(argv[a], "--reps"))
			reps = atoi(argv[a + 1]);
		else if (!strcmp(argv[a], "--threads"))
			nt = atoi(argv[a + 1]);
	}
	if (a >= argc || reps < 1 || nt < 1 || nt > 64) {
		fprintf(stderr, "usage: tool_input_bench [--reps N] [--threads N] FILE...\n");
		return 2;
	}
	input_opts o = {.id_fields = "_id,id", .text_field = "text", .title_field = "title",
			.meta_field = "metadata"};
	emb_err e;
	double best_next = 1e30, best_raw = 1e30, bytes = 0;
	long docs = 0, recs_n = 0;
	for (int rep = 0; rep < reps; rep++) {
		input *in;
		if (input_open(argv + a, argc - a, &o, &in, &e)) {
			fprintf(stderr, "%s\n", e.msg);
			return 1;
		}
		input_doc d;
		int r;
		long n = 0;
		double t = now();
		while ((r = input_next(in, &d, &e)) != 0) {
			n += r > 0;
			input_doc_free(&d);
		}
		t = now() - t;
		best_next = t < best_next ? t : best_next;
		docs = n;
		input_close(in);

		input_open(argv + a, argc - a, &o, &in, &e);
		input_rec rec;
		n = 0;
		t = now();
		while ((r = input_next_raw(in, &rec, &e)) != 0) {
			n += r > 0;
			input_rec_free(&rec);
		}
		t = now() - t;
		best_raw = t < best_raw ? t : best_raw;
		recs_n = n;
		uint64_t total;
		uint64_t done;
		input_progress(in, &done, &total);
		bytes = (double)done;
		input_close(in);
	}
	report("input_next (1 thread)", best_next, bytes, docs);
	report("input_next_raw (framing)", best_raw, bytes, recs_n);

	/* the records, framed once and kept, for the parsers */
	input *in;
	input_open(argv + a, argc - a, &o, &in, &e);
	size_t cap = 1024, n = 0;
	input_rec *recs = malloc(cap * sizeof *recs);
	double rbytes = 0;
	int r;
	while ((r = input_next_raw(in, &recs[n], &e)) != 0) {
		if (r < 0) {
			input_rec_free(&recs[n]);
			continue;
		}
		rbytes += (double)recs[n].len;
		if (++n == cap)
			recs = realloc(recs, (cap *= 2) * sizeof *recs);
	}
	input_close(in);
	const char *names[] = {"jansson (1 thread)", "input_parse (1 thread)"};
	for (int m = 0; m < 3; m++) {
		double best = 1e30;
		long pd = 0;
		for (int rep = 0; rep < reps; rep++) {
			double t = parse_all(&o, recs, n, m == 2 ? nt : 1, m == 0, &pd);
			best = t < best ? t : best;
		}
		char name[64];
		if (m == 2)
			snprintf(name, sizeof name, "input_parse (%d threads)", nt);
		else
			snprintf(name, sizeof name, "%s", names[m]);
		report(name, best, rbytes, pd);
	}
	for (size_t i = 0; i < n; i++)
		input_rec_free(&recs[i]);
	free(recs);
	return 0;
}
