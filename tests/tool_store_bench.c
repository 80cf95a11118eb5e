/* tool_store_bench — how fast the store's writer takes documents, and whether it slows as
 * the store grows. The indexer's pipeline has one writer thread that must keep up with the
 * GPU (~25-30k docs/s); this measures that thread alone, with synthetic documents shaped like
 * SciFact's (~1.5 KB of English-like text, 1.8 windows a document, 384-d f32 vectors).
 *
 *   tool_store_bench --store DIR [--docs N] [--txn K] [--dim D] [--pack 0|1] [--pack-threads T]
 *                    [--order seq|shuffled|batch-sorted] [--verify 0|1]
 *
 * Writes N documents (ids "d%08d": in increasing order, or with --order shuffled in a fixed
 * pseudo-random order, as a corpus whose ids do not sort in input order; batch-sorted: the
 * shuffled ids, each transaction's sorted by the caller, which measured what sorting by id
 * gains before store_apply did it itself) with store_apply, K documents a transaction, into
 * a new store at DIR (which must not exist). Everything a transaction needs (texts, vectors,
 * and with --pack 1 the packed "docs" values, made by store_doc_pack on T threads as the
 * pipeline's compression workers would) is built before the clock starts for it, so the
 * times are the writer's alone. Prints docs/s for each tenth of the run (a slowdown with the
 * store's size shows there) by the wall clock and by the writer's CPU time, the page faults
 * and bytes written per document, and the store's file size, then a summary line; --verify 1
 * then runs store_verify over the whole store. Not a test: docs/bench-index.md ("store
 * writer") records its results. */
#include "store.h"
#include "benchutil.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next_u64(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* A vocabulary of pseudo-words drawn with a skewed (roughly Zipf) distribution, so that zstd
 * compresses the texts about as well as English (SciFact abstracts: ~2.5x at level 3). */
#define NVOCAB 2048
static char vocab[NVOCAB][12];
static void make_vocab(void)
{
	static const char *syl[] = {"an", "ti", "bo", "dy", "ce", "ll", "pro", "te", "in", "gen",
				    "ex", "pre", "ssi", "on", "re", "cep", "tor", "mu", "ta", "cy",
				    "ki", "ne", "se", "ly", "ma", "tic", "al", "ro", "vi", "us"};
	for (int i = 0; i < NVOCAB; i++) {
		int n = 1 + (int)(next_u64() % 4);
		vocab[i][0] = 0;
		for (int j = 0; j < n; j++)
			strcat(vocab[i], syl[next_u64() % 30]);
	}
}

static const char *word(void)
{
	/* min of uniforms skews towards the common words */
	uint64_t a = next_u64() % NVOCAB, b = next_u64() % NVOCAB, c = next_u64() % NVOCAB;
	uint64_t m = a < b ? a : b;
	return vocab[m < c ? m : c];
}

static unsigned long long gcd(unsigned long long a, unsigned long long b)
{
	while (b) {
		unsigned long long t = a % b;
		a = b;
		b = t;
	}
	return a;
}

static unsigned long long shuffle_mul(long n)
{
	unsigned long long m = 2654435761ULL % (unsigned long long)n;
	while (m < 2 || gcd(m, (unsigned long long)n) != 1)
		m++;
	return m;
}

typedef struct batch {
	int n;
	store_op *ops;
	char (*ids)[16];
	char **texts;
	float *vecs;      /* n * 2 * dim */
	uint32_t *ranges; /* n * 2 * 2 */
	store_packed *packed;
} batch;

static void fill_batch(batch *b, long first, int n, int dim, long ndocs, int shuffled)
{
	b->n = n;
	for (int i = 0; i < n; i++) {
		long id = first + i;
		if (shuffled) /* a bijection of [0, ndocs): multiplier coprime with ndocs */
			id = (long)(((unsigned long long)id * shuffle_mul(ndocs) + 12345) % (unsigned long long)ndocs);
		snprintf(b->ids[i], 16, "d%08ld", id);
		size_t want = 1000 + next_u64() % 1000, len = 0;
		char *t = b->texts[i];
		while (len < want) {
			const char *w = word();
			size_t wl = strlen(w);
			memcpy(t + len, w, wl);
			len += wl;
			t[len++] = (next_u64() % 12) ? ' ' : '.';
		}
		t[len] = 0;
		int nwin = id % 5 == 3 ? 1 : 2; /* 1.8 windows a document */
		float *v = b->vecs + (size_t)i * 2 * dim;
		for (int k = 0; k < nwin * dim; k++)
			v[k] = (float)((int64_t)(next_u64() >> 11) - (1LL << 52)) * (1.0f / (1LL << 52));
		uint32_t *r = b->ranges + (size_t)i * 4;
		for (int w = 0; w < nwin; w++) {
			r[2 * w] = (uint32_t)(len * w / nwin);
			r[2 * w + 1] = (uint32_t)(len * (w + 1) / nwin);
		}
		store_doc d = {
			.id = b->ids[i], .id_len = strlen(b->ids[i]),
			.title = "", .title_len = 0, .text = t, .text_len = len,
			.meta = "", .meta_len = 0, .nwin = nwin, .vecs = v, .win_range = r,
		};
		const void *parts[1] = {t};
		size_t lens[1] = {len};
		store_hash(parts, lens, 1, d.hash);
		b->ops[i] = (store_op){STORE_OP_PUT, d};
	}
}

typedef struct packjob {
	batch *b;
	int from, to;
	int failed;
} packjob;

static void *pack_range(void *arg)
{
	packjob *j = arg;
	for (int i = j->from; i < j->to; i++) {
		emb_err e = {0};
		if (store_doc_pack(&j->b->ops[i].doc, &j->b->packed[i], &e)) {
			fprintf(stderr, "tool_store_bench: pack: %s\n", e.msg);
			j->failed = 1;
			return NULL;
		}
		j->b->ops[i].doc.packed = &j->b->packed[i];
	}
	return NULL;
}

/* The writer thread's CPU seconds (user + system): unlike the wall clock, hardly moved by
 * other programs competing for the machine's cores. */
static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_op_id(const void *a, const void *b)
{
	return strcmp(((const store_op *)a)->doc.id, ((const store_op *)b)->doc.id);
}

/* Bytes this process has passed to write(2) and friends so far (/proc/self/io "wchar"):
 * LMDB writes each committed page with pwrite(v), so per document this is the writer's write
 * amplification. -1 when unknown. */
static long long written(void)
{
	FILE *f = fopen("/proc/self/io", "r");
	char line[128];
	long long v = -1;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "wchar: %lld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

static long faults(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_minflt + ru.ru_majflt;
}

int main(int argc, char **argv)
{
	const char *dir = NULL;
	long ndocs = 100000;
	int txn = 1024, dim = 384, pack = 1, threads = 2, shuffled = 0, verify = 0;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--store")) dir = argv[i + 1];
		else if (!strcmp(argv[i], "--docs")) ndocs = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--txn")) txn = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--dim")) dim = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--pack")) pack = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--verify")) verify = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--pack-threads")) threads = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--order") && !strcmp(argv[i + 1], "seq")) shuffled = 0;
		else if (!strcmp(argv[i], "--order") && !strcmp(argv[i + 1], "shuffled")) shuffled = 1;
		else if (!strcmp(argv[i], "--order") && !strcmp(argv[i + 1], "batch-sorted")) shuffled = 2;
		else { dir = NULL; break; }
	}
	if (!dir || ndocs < 10 || txn < 1 || dim < 1 || threads < 1 || threads > 64) {
		fprintf(stderr, "usage: tool_store_bench --store DIR [--docs N] [--txn K] [--dim D] "
				"[--pack 0|1] [--pack-threads T] [--order seq|shuffled|batch-sorted] [--verify 0|1]\n");
		return 2;
	}
	make_vocab();
	emb_err e = {0};
	store *s;
	if (store_open(dir, STORE_CREATE, &s, &e)) {
		fprintf(stderr, "tool_store_bench: %s\n", e.msg);
		return 1;
	}
	store_model m = {0};
	snprintf(m.name, sizeof m.name, "bench-model");
	snprintf(m.sha256, sizeof m.sha256, "%064d", 1);
	m.dim = dim;
	snprintf(m.pooling, sizeof m.pooling, "mean");
	m.normalized = 1;
	m.max_tokens = 256;
	if (store_bind_model(s, &m, &e)) {
		fprintf(stderr, "tool_store_bench: %s\n", e.msg);
		return 1;
	}
	batch b = {0};
	b.ops = calloc((size_t)txn, sizeof *b.ops);
	b.ids = calloc((size_t)txn, sizeof *b.ids);
	b.texts = calloc((size_t)txn, sizeof *b.texts);
	b.vecs = malloc((size_t)txn * 2 * dim * sizeof(float));
	b.ranges = malloc((size_t)txn * 4 * sizeof(uint32_t));
	b.packed = calloc((size_t)txn, sizeof *b.packed);
	for (int i = 0; i < txn; i++)
		b.texts[i] = malloc(2100);
	printf("store_bench: %ld docs, %d a transaction, dim %d, ids %s, %s, store %s\n", ndocs, txn,
	       dim, shuffled == 2 ? "shuffled, each batch sorted" : shuffled ? "shuffled" : "in order",
	       pack ? "packed ahead" : "compressed by store_apply", dir);
	printf("%8s %10s %9s %13s %12s %12s %10s\n", "slice", "docs", "docs/s", "docs/cpu-s", "faults/doc",
	       "written/doc", "file MB");
	double total = 0, slice_t = 0, pack_t = 0, total_c = 0, slice_c = 0;
	long long packed_bytes = 0, text_bytes = 0;
	long slice_docs = 0, slice_no = 1, done = 0, f0 = faults(), rows = 0;
	long long w0 = written();
	while (done < ndocs) {
		int n = (int)(ndocs - done < txn ? ndocs - done : txn);
		fill_batch(&b, done, n, dim, ndocs, shuffled);
		if (pack) {
			double p0 = now();
			pthread_t th[64];
			packjob jobs[64];
			for (int t = 0; t < threads; t++) {
				jobs[t] = (packjob){&b, n * t / threads, n * (t + 1) / threads, 0};
				pthread_create(&th[t], NULL, pack_range, &jobs[t]);
			}
			int failed = 0;
			for (int t = 0; t < threads; t++) {
				pthread_join(th[t], NULL);
				failed |= jobs[t].failed;
			}
			if (failed)
				return 1;
			pack_t += now() - p0;
		}
		if (shuffled == 2) /* ops of distinct ids: any order stores the same documents */
			qsort(b.ops, (size_t)n, sizeof *b.ops, cmp_op_id);
		for (int i = 0; i < n; i++)
			rows += b.ops[i].doc.nwin;
		double t0 = now(), c0 = cpu_now();
		store_apply_result r;
		if (store_apply(s, b.ops, n, &r, &e)) {
			fprintf(stderr, "tool_store_bench: apply: %s\n", e.msg);
			return 1;
		}
		double dt = now() - t0, dc = cpu_now() - c0;
		if (r.added != (uint64_t)n) {
			fprintf(stderr, "tool_store_bench: added %llu of %d\n", (unsigned long long)r.added, n);
			return 1;
		}
		for (int i = 0; i < n; i++) {
			packed_bytes += b.packed[i].len;
			text_bytes += b.ops[i].doc.text_len;
			store_packed_free(&b.packed[i]);
		}
		total += dt;
		slice_t += dt;
		total_c += dc;
		slice_c += dc;
		slice_docs += n;
		done += n;
		if (done * 10 >= ndocs * slice_no || done == ndocs) {
			store_stats st;
			store_stats_get(s, &st, &e);
			long f = faults();
			long long wr = written();
			printf("%7ld%% %10ld %9.0f %13.0f %12.2f %12.0f %10.1f\n", done * 100 / ndocs, done,
			       slice_docs / slice_t, slice_docs / slice_c, (double)(f - f0) / slice_docs,
			       (double)(wr - w0) / slice_docs, st.file_size / 1048576.0);
			w0 = wr;
			fflush(stdout);
			f0 = f;
			slice_t = 0;
			slice_c = 0;
			slice_docs = 0;
			while (done * 10 >= ndocs * slice_no)
				slice_no++;
		}
	}
	store_stats st;
	store_stats_get(s, &st, &e);
	printf("store_bench: %ld docs (%ld rows) in %.2f s of store_apply (%.2f s CPU): %.0f docs/s "
	       "(%.0f per CPU second); packing %.2f s on %d threads; file %.1f MB, map %.1f MB\n",
	       ndocs, rows, total, total_c, ndocs / total, ndocs / total_c, pack_t, pack ? threads : 0,
	       st.file_size / 1048576.0, st.map_size / 1048576.0);
	if (pack)
		printf("store_bench: text %.0f bytes a document, packed value %.0f bytes (%.2fx)\n",
		       (double)text_bytes / ndocs, (double)packed_bytes / ndocs,
		       (double)text_bytes / (packed_bytes ? packed_bytes : 1));
	if (verify) {
		store_snapshot *snap;
		store_check_report rep;
		if (store_snapshot_begin(s, &snap, &e) || store_check(snap, &rep, &e)) {
			fprintf(stderr, "tool_store_bench: verify: %s\n", e.msg);
			return 1;
		}
		store_snapshot_end(snap);
		printf("store_bench: verified %llu docs, %llu rows, %llu checksums\n",
		       (unsigned long long)rep.docs, (unsigned long long)rep.rows,
		       (unsigned long long)rep.checksums);
	}
	store_close(s);
	for (int i = 0; i < txn; i++)
		free(b.texts[i]);
	free(b.texts);
	free(b.ops);
	free(b.ids);
	free(b.vecs);
	free(b.ranges);
	free(b.packed);
	return 0;
}
