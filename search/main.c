/* search — queries a vector store from the terminal or from scripts: embeds the query on the
 * CPU with the model recorded in the store (checked by weights sha256), scans every stored
 * vector exactly, and prints one result per document with the snippet of its best window.
 *
 *   search --store DIR [--k 10] [--json] QUERY...        one-shot
 *   search --store DIR                                   interactive on a TTY (libedit)
 *   search --store DIR --queries Q.jsonl --format trec   batch evaluation (TREC run lines)
 *   search --store A --store B ... QUERY                 several stores, merged exactly
 *   search --stores MANIFEST QUERY                       a shard set (python/shardset.py)
 *
 * Several stores: each answers its own top k (one snapshot each) and the lists are merged
 * (merge_hits): the union of per-store top-k lists holds the top k of all their documents,
 * so the merge is exact. A shard set's manifest is read once per open: the stores it names
 * are one generation, and a new manifest (a rebuild swapped in) is noticed by long-lived
 * readers as a rebuilt store is.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <editline/readline.h>

#include "cli.h"
#include "linereader.h"
#include "embed.h"
#include "rerank.h"
#include "store.h"
#include "threadpool.h"

/* A query line longer than this is an error (FILE:LINE): queries are truncated to the
 * model's few hundred tokens anyway, and a cap keeps endless input (/dev/zero) in bounded
 * memory. */
#define MAX_QUERY_LINE (1 << 20)
/* --threads above this is a typing error, not a machine: thousands of threads would only
 * exhaust memory and the process table. */

typedef enum { FMT_TEXT, FMT_JSON, FMT_TREC } out_format;

typedef struct opts {
	const char **stores;   /* --store, repeatable */
	int nstores;
	const char *manifest;  /* --stores */
	const char *model, *queries, *run_name;
	int k, threads, snippet;
	int rescore;  /* -1: the store's default */
	int rerank;   /* --rerank: rescore the scan's top rerank_k with a cross-encoder */
	const char *rerank_dir; /* its directory; NULL: the store's default (indexer --reranker) */
	int rerank_k;
	embed_device rerank_device;
	embed_precision precision; /* of the query's embedding (CPU) */
	out_format fmt;
	char *query; /* joined positional words */
} opts;

typedef struct ctx {
	opts *o;
	int n;                 /* stores open */
	store **st;            /* [n] */
	char **paths;          /* [n] their paths, as given or resolved from the manifest */
	long generation;       /* the manifest's generation (-1: no manifest) */
	struct stat mst;       /* the manifest file as read: another one means a new generation */
	embed_model *m;
	store_model sm;
	threadpool *pool;
	embed_prefix prefix;
	char model_dir[PATH_MAX];
	rerank_model *rr;      /* --rerank */
} ctx;

static void usage(FILE *f)
{
	fprintf(f,
"usage: search --store DIR [--store DIR2 ...] [options] [QUERY...]\n"
"       search --stores MANIFEST [options] [QUERY...]\n"
"  --store DIR       a store; several: searched as one (same model), merged exactly\n"
"  --stores FILE     a shard set's manifest (python/shardset.py): all its shard stores\n"
"  --k N             results a query (default 10)\n"
"  --json            JSON output (one object a query)\n"
"  --format F        text, json or trec (TREC run lines: qid Q0 docid rank score run)\n"
"  --queries FILE    JSONL queries (id or _id, text); '-' for stdin\n"
"  --run-name NAME   run name for --format trec (default: the model name)\n"
"  --model DIR       model directory (default: the one recorded in the store)\n"
"  --threads N       CPU threads, up to %d (default 0: all)\n"
"  --precision P     the query's embedding: fp32 (default), bf16 or int8 (faster on the\n"
"                    CPU; vectors within cosine 0.9999 / 0.99 of fp32)\n"
"  --snippet N       snippet length in bytes (default 240; 0: none)\n"
"  --rescore N       int8/binary stores: rescore N x k candidates of the compact scan with\n"
"                    the f32 vectors (default %d for int8, %d for binary; 0: the compact\n"
"                    ranking and its estimated scores)\n"
"  --rerank [DIR]    rescore the scan's top --rerank-k documents with the cross-encoder in\n"
"                    DIR (default: the store's, indexer --reranker) and order by its score;\n"
"                    both scores are printed (TREC: the cross-encoder's)\n"
"  --rerank-k N      candidates to rerank (default 100)\n"
"  --rerank-device cpu|gpu|auto  where the cross-encoder runs (default auto)\n"
"With no QUERY on a terminal, an interactive prompt: type a query, or :k N, :json, :text,\n"
":help, :q.\n", CLI_MAX_THREADS, STORE_RESCORE_INT8, STORE_RESCORE_BINARY);
}

static void parse_args(int argc, char **argv, opts *o)
{
	memset(o, 0, sizeof *o);
	o->k = 10;
	o->snippet = 240;
	o->rescore = -1;
	o->rerank_k = 100;
	o->rerank_device = EMBED_DEVICE_AUTO;
	size_t qlen = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(n) (strcmp(a, n) == 0)
#define NEEDV() do { if (!v) { fprintf(stderr, "search: %s needs a value\n", a); exit(2); } i++; } while (0)
		if (ARG("--store")) {
			NEEDV();
			if (!o->stores && !(o->stores = calloc((size_t)argc, sizeof *o->stores))) {
				fprintf(stderr, "search: out of memory\n");
				exit(1);
			}
			o->stores[o->nstores++] = v;
		}
		else if (ARG("--stores")) { NEEDV(); o->manifest = v; }
		else if (ARG("--model")) { NEEDV(); o->model = v; }
		else if (ARG("--k") || ARG("-k")) { NEEDV(); o->k = (int)cli_int("search", a, v, 1, 1000000); }
		else if (ARG("--threads")) { NEEDV(); o->threads = (int)cli_int("search", a, v, 0, CLI_MAX_THREADS); }
		else if (ARG("--precision")) { NEEDV(); o->precision = cli_precision("search", a, v); }
		else if (ARG("--rescore")) { NEEDV(); o->rescore = (int)cli_int("search", a, v, 0, 100000); }
		else if (ARG("--snippet")) { NEEDV(); o->snippet = (int)cli_int("search", a, v, 0, 1000000); }
		else if (ARG("--rerank")) {
			/* DIR is optional: the next word is taken only when it is a directory */
			struct stat sb;
			o->rerank = 1;
			if (v && stat(v, &sb) == 0 && S_ISDIR(sb.st_mode)) {
				o->rerank_dir = v;
				i++;
			} else if (v && strchr(v, '/')) { /* a path, not a query word: a typo */
				fprintf(stderr, "search: --rerank %s: not a directory\n", v);
				exit(2);
			}
		}
		else if (ARG("--rerank-k")) { NEEDV(); o->rerank_k = (int)cli_int("search", a, v, 1, 100000); }
		else if (ARG("--rerank-device")) { NEEDV(); o->rerank_device = cli_device("search", a, v); }
		else if (ARG("--json")) o->fmt = FMT_JSON;
		else if (ARG("--format")) {
			NEEDV();
			if (!strcmp(v, "trec")) o->fmt = FMT_TREC;
			else if (!strcmp(v, "json")) o->fmt = FMT_JSON;
			else if (!strcmp(v, "text")) o->fmt = FMT_TEXT;
			else { fprintf(stderr, "search: --format is text, json or trec\n"); exit(2); }
		}
		else if (ARG("--queries")) { NEEDV(); o->queries = v; }
		else if (ARG("--run-name")) { NEEDV(); o->run_name = v; }
		else if (ARG("--help") || ARG("-h")) { usage(stdout); exit(0); }
		else if (ARG("--")) {
			for (i++; i < argc; i++) {
				size_t l = strlen(argv[i]);
				o->query = realloc(o->query, qlen + l + 2);
				if (qlen) o->query[qlen++] = ' ';
				memcpy(o->query + qlen, argv[i], l + 1);
				qlen += l;
			}
		}
		else if (a[0] == '-' && a[1]) { fprintf(stderr, "search: unknown option %s\n", a); usage(stderr); exit(2); }
		else {
			size_t l = strlen(a);
			o->query = realloc(o->query, qlen + l + 2);
			if (qlen) o->query[qlen++] = ' ';
			memcpy(o->query + qlen, a, l + 1);
			qlen += l;
		}
#undef ARG
#undef NEEDV
	}
	if (!o->nstores && !o->manifest) {
		fprintf(stderr, "search: --store DIR (or --stores MANIFEST) is required\n");
		usage(stderr);
		exit(2);
	}
	if (o->nstores && o->manifest) {
		fprintf(stderr, "search: give --store DIR... or --stores MANIFEST, not both\n");
		exit(2);
	}
}

static void close_stores(ctx *x)
{
	for (int i = 0; i < x->n; i++) {
		store_close(x->st[i]);
		if (x->o->manifest)
			free(x->paths[i]);
	}
	free(x->st);
	if (x->o->manifest)
		free(x->paths); /* else it is o->stores */
	x->st = NULL;
	x->paths = NULL;
	x->n = 0;
}

/* The identity fields store_bind_model compares (model_dir is a hint, not identity). */
static int same_model(const store_model *a, const store_model *b)
{
	return !strcmp(a->name, b->name) && !strcmp(a->sha256, b->sha256) && a->dim == b->dim &&
	       !strcmp(a->pooling, b->pooling) && a->normalized == b->normalized &&
	       a->needs_prefix == b->needs_prefix && a->max_tokens == b->max_tokens;
}

/* What a manifest says (python/shardset.py writes it):
 *   {"format": "embedstore-shardset", "version": 1, "generation": G,
 *    "model": {"name": ..., "sha256": ..., "dim": D}, "stores": ["gen-G/shard-0.store", ...]}
 * Store paths are relative to the manifest's directory (or absolute); store i of N must
 * record shard i/N. */
typedef struct manifest {
	long generation;
	char name[128], sha256[72];
	int dim;
	int n;
	char **paths; /* [n], malloc'd */
} manifest;

/* Reads the manifest in one open (so one generation), noting the file in x->mst. Returns 0,
 * or -1 with a message printed. */
static int read_manifest(ctx *x, manifest *mf)
{
	const char *path = x->o->manifest;
	memset(mf, 0, sizeof *mf);
	FILE *f = fopen(path, "rb");
	if (!f || fstat(fileno(f), &x->mst)) {
		fprintf(stderr, "search: manifest %s: %s\n", path, strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	json_error_t je;
	json_t *j = json_loadf(f, 0, &je);
	fclose(f);
	json_t *fmt = json_object_get(j, "format"), *ver = json_object_get(j, "version"),
	       *gen = json_object_get(j, "generation"), *model = json_object_get(j, "model"),
	       *stores = json_object_get(j, "stores");
	json_t *mname = json_object_get(model, "name"), *msha = json_object_get(model, "sha256"),
	       *mdim = json_object_get(model, "dim");
	if (!j || !json_is_string(fmt) || strcmp(json_string_value(fmt), "embedstore-shardset") ||
	    !json_is_integer(ver) || !json_is_integer(gen) || !json_is_string(mname) ||
	    !json_is_string(msha) || !json_is_integer(mdim) || !json_is_array(stores) ||
	    !json_array_size(stores)) {
		fprintf(stderr, "search: manifest %s: %s\n", path,
			!j ? je.text : "not an embedstore-shardset manifest (format, version, generation, model, stores)");
		json_decref(j);
		return -1;
	}
	if (json_integer_value(ver) != 1) {
		fprintf(stderr, "search: manifest %s: version %lld is newer than this search reads (1)\n",
			path, (long long)json_integer_value(ver));
		json_decref(j);
		return -1;
	}
	mf->generation = (long)json_integer_value(gen);
	snprintf(mf->name, sizeof mf->name, "%s", json_string_value(mname));
	snprintf(mf->sha256, sizeof mf->sha256, "%s", json_string_value(msha));
	mf->dim = (int)json_integer_value(mdim);
	mf->n = (int)json_array_size(stores);
	mf->paths = calloc((size_t)mf->n, sizeof *mf->paths);
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		slash[1] = 0;
	else
		dir[0] = 0;
	int rc = mf->paths ? 0 : -1;
	for (int i = 0; !rc && i < mf->n; i++) {
		json_t *p = json_array_get(stores, (size_t)i);
		if (!json_is_string(p) || !json_string_length(p)) {
			fprintf(stderr, "search: manifest %s: stores[%d] is not a path\n", path, i);
			rc = -1;
			break;
		}
		const char *v = json_string_value(p);
		size_t l = (v[0] == '/' ? 0 : strlen(dir)) + strlen(v) + 1;
		if (!(mf->paths[i] = malloc(l))) {
			rc = -1;
			break;
		}
		snprintf(mf->paths[i], l, "%s%s", v[0] == '/' ? "" : dir, v);
	}
	json_decref(j);
	if (rc) {
		for (int i = 0; mf->paths && i < mf->n; i++)
			free(mf->paths[i]);
		free(mf->paths);
		mf->paths = NULL;
	}
	return rc;
}

/* Opens the stores: every --store, or those of the manifest's generation. A manifest whose
 * stores are gone was replaced while it was being read (a rebuild swapped a new generation in
 * and removed the old): it is read again, a few times. 0, or -1 with a message printed. */
static int open_stores_once(ctx *x, int *retry, int last)
{
	emb_err e = {0};
	manifest mf = {0};
	*retry = 0;
	close_stores(x);
	x->generation = -1;
	if (x->o->manifest) {
		if (read_manifest(x, &mf))
			return -1;
		x->n = mf.n;
		x->paths = mf.paths;
		x->generation = mf.generation;
	} else {
		x->n = x->o->nstores;
		x->paths = (char **)x->o->stores;
	}
	if (!(x->st = calloc((size_t)x->n, sizeof *x->st))) {
		fprintf(stderr, "search: out of memory\n");
		if (x->o->manifest) {
			for (int i = 0; i < x->n; i++)
				free(x->paths[i]);
			free(x->paths);
		}
		x->paths = NULL;
		x->n = 0;
		return -1;
	}
	store_model first = {0};
	for (int i = 0; i < x->n; i++) {
		store_model sm;
		if (store_open(x->paths[i], STORE_READONLY, &x->st[i], &e)) {
			*retry = !last && x->o->manifest && e.code == EMB_EIO && access(x->paths[i], F_OK) != 0;
			if (!*retry)
				fprintf(stderr, "search: %s%s%s%s\n", e.msg, last ? " (a store named by " : "",
					last ? x->o->manifest : "", last ? ")" : "");
			return -1;
		}
		if (store_model_get(x->st[i], &sm, &e)) {
			fprintf(stderr, "search: %s\n", e.msg);
			return -1;
		}
		if (i == 0)
			first = sm;
		else if (!same_model(&sm, &first)) {
			fprintf(stderr, "search: store %s was built with model '%s' (sha256 %.12s, %d dims, %s pooling, "
				"%d tokens), not '%s' (sha256 %.12s, %d dims, %s pooling, %d tokens) as store %s was: "
				"stores searched together need one model\n", x->paths[i], sm.name, sm.sha256, sm.dim,
				sm.pooling, sm.max_tokens, first.name, first.sha256, first.dim, first.pooling,
				first.max_tokens, x->paths[0]);
			return -1;
		}
		if (x->o->manifest) {
			int si, sn;
			if (strcmp(sm.sha256, mf.sha256) || sm.dim != mf.dim) {
				fprintf(stderr, "search: manifest %s names model '%s' (sha256 %.12s, %d dims), but store %s "
					"was built with '%s' (sha256 %.12s, %d dims)\n", x->o->manifest, mf.name,
					mf.sha256, mf.dim, x->paths[i], sm.name, sm.sha256, sm.dim);
				return -1;
			}
			if (store_shard_get(x->st[i], &si, &sn, &e)) {
				fprintf(stderr, "search: %s\n", e.msg);
				return -1;
			}
			if (si != i || sn != x->n) {
				fprintf(stderr, "search: manifest %s: store %s is %s%d/%d, but it is listed as shard %d/%d\n",
					x->o->manifest, x->paths[i], sn ? "shard " : "not a shard, ", si, sn, i, x->n);
				return -1;
			}
		}
	}
	store_model sm = first;
	if (x->m && !strcmp(sm.sha256, x->sm.sha256) && sm.dim == x->sm.dim &&
	    sm.needs_prefix == x->sm.needs_prefix)
		return 0; /* same model as before */
	x->sm = sm;
	embed_close(x->m);
	x->m = NULL;
	if (x->o->model)
		snprintf(x->model_dir, sizeof x->model_dir, "%s", x->o->model);
	else if (sm.model_dir[0] && access(sm.model_dir, F_OK) == 0)
		snprintf(x->model_dir, sizeof x->model_dir, "%s", sm.model_dir);
	else
		embed_fetched_model_dir(sm.name, x->model_dir, sizeof x->model_dir);
	embed_options eo;
	embed_options_default(&eo);
	eo.device = EMBED_DEVICE_CPU; /* one query at a time: the CPU answers first */
	eo.threads = x->o->threads;
	eo.precision = x->o->precision;
	eo.quiet = 1;
	if (embed_open(x->model_dir, &eo, &x->m, &e)) {
		fprintf(stderr, "search: model %s (the store's model is '%s'): %s\n", x->model_dir,
			sm.name, e.msg);
		return -1;
	}
	const char *sha = embed_model_sha256(x->m);
	if (sm.family[0] && strcmp(embed_model_family(x->m), sm.family)) {
		fprintf(stderr, "search: model %s is a %s model; store %s was built with a %s "
			"model ('%s')\n", x->model_dir, embed_model_family(x->m), x->paths[0],
			sm.family, sm.name);
		return -1;
	}
	if (!sha || strcmp(sha, sm.sha256) || embed_dim(x->m) != sm.dim) {
		fprintf(stderr, "search: model %s (sha256 %.12s) is not the one store %s was built with ('%s', sha256 %.12s)\n",
			x->model_dir, sha ? sha : "?", x->paths[0], sm.name, sm.sha256);
		return -1;
	}
	x->prefix = sm.needs_prefix ? EMBED_PREFIX_QUERY : EMBED_PREFIX_NONE;
	return 0;
}

/* Opens (or reopens after a rebuild swap) the stores and checks that the model matches. */
static int open_store(ctx *x)
{
	int retry = 0;
	for (int attempt = 0;; attempt++) {
		if (open_stores_once(x, &retry, attempt == 4) == 0)
			return 0;
		if (!retry)
			return -1;
		usleep(100000);
	}
}

/* 1 when a rebuild swapped a store, or a new manifest replaced the one read: a long-lived
 * reader reopens. */
static int stores_stale(ctx *x)
{
	if (x->o->manifest) {
		struct stat sb;
		if (stat(x->o->manifest, &sb) || sb.st_ino != x->mst.st_ino || sb.st_dev != x->mst.st_dev ||
		    sb.st_mtim.tv_sec != x->mst.st_mtim.tv_sec || sb.st_mtim.tv_nsec != x->mst.st_mtim.tv_nsec)
			return 1;
	}
	for (int i = 0; i < x->n; i++)
		if (store_stale(x->st[i], x->paths[i]))
			return 1;
	return 0;
}

/* One result of a search over several stores: the hit and the store (index) it came from. */
typedef struct mhit {
	store_hit h;
	int src;
} mhit;

static int cmp_id(const mhit *a, const mhit *b)
{
	size_t l = a->h.id_len < b->h.id_len ? a->h.id_len : b->h.id_len;
	int c = memcmp(a->h.id, b->h.id, l);
	return c ? c : (a->h.id_len > b->h.id_len) - (a->h.id_len < b->h.id_len);
}

/* Rank order: higher score first; equal scores by id bytes (memcmp, a prefix first), then
 * by store (the one named first). */
static int cmp_rank(const void *pa, const void *pb)
{
	const mhit *a = pa, *b = pb;
	if (a->h.score != b->h.score)
		return a->h.score > b->h.score ? -1 : 1;
	int c = cmp_id(a, b);
	return c ? c : a->src - b->src;
}

/* Id order, the best copy of an id first. */
static int cmp_id_rank(const void *pa, const void *pb)
{
	int c = cmp_id(pa, pb);
	return c ? c : cmp_rank(pa, pb);
}

/* Merges the per-store top-k lists of one query (c[0..n), modified) into out[0..*nout):
 * an id held by several stores counts once, with its best score (its best store's window and
 * snippet); then rank order, the first k. Exact: a document of the true top k outranks in
 * its best store only documents that outrank it overall, fewer than k, so it is in that
 * store's list. A single store's list is kept as it is (its ties stay in row order). */
static void merge_hits(mhit *c, int n, int k, int nstores, mhit *out, int *nout)
{
	if (nstores > 1) {
		qsort(c, (size_t)n, sizeof *c, cmp_id_rank);
		int m = 0;
		for (int i = 0; i < n; i++)
			if (m == 0 || cmp_id(&c[m - 1], &c[i]))
				c[m++] = c[i];
		n = m;
		qsort(c, (size_t)n, sizeof *c, cmp_rank);
	}
	*nout = n < k ? n : k;
	memcpy(out, c, (size_t)*nout * sizeof *out);
}

/* --rerank: opens the cross-encoder named, else the default the first store records. Returns 0 or -1
 * (message printed). */
static int open_reranker(ctx *x)
{
	char dir[STORE_RERANKER_MAX];
	emb_err e = {0};
	if (x->o->rerank_dir) {
		snprintf(dir, sizeof dir, "%s", x->o->rerank_dir);
	} else if (store_reranker_get(x->st[0], dir, sizeof dir, &e)) {
		fprintf(stderr, "search: %s\n", e.msg);
		return -1;
	} else if (!dir[0]) {
		fprintf(stderr, "search: --rerank names no cross-encoder and store %s records none "
			"(give --rerank DIR, or index with --reranker DIR)\n", x->paths[0]);
		return -1;
	}
	rerank_options ro;
	rerank_options_default(&ro);
	ro.embed.device = x->o->rerank_device;
	ro.embed.threads = x->o->threads;
	ro.embed.quiet = 1;
	if (rerank_open(dir, &ro, &x->rr, &e)) {
		fprintf(stderr, "search: --rerank %s: %s\n", dir, e.msg);
		return -1;
	}
	if (rerank_labels(x->rr) != 1) {
		fprintf(stderr, "search: --rerank %s: the model has %d labels; ordering needs one "
			"relevance score\n", dir, rerank_labels(x->rr));
		return -1;
	}
	return 0;
}

/* Candidates a query takes from the scan: k, or the --rerank-k the cross-encoder reorders. */
static int scan_k(const ctx *x)
{
	return x->rr && x->o->rerank_k > x->o->k ? x->o->rerank_k : x->o->k;
}

/* --rerank: scores the n hits' documents (title + " " + text, as the indexer embeds them)
 * against q and writes the order by the cross-encoder's score, highest first (ties keep
 * the scan's order), to perm, the scores to rs. Returns 0 or -1 (message printed). */
static int rerank_hits(ctx *x, store_snapshot **snaps, const char *q, const mhit *hits,
		       int n, int *perm, float *rs)
{
	char **texts = calloc((size_t)n + 1, sizeof *texts);
	size_t *lens = calloc((size_t)n + 1, sizeof *lens);
	emb_err e = {0};
	int rc = texts && lens ? 0 : -1;
	if (rc)
		fprintf(stderr, "search: out of memory\n");
	for (int i = 0; !rc && i < n; i++) {
		store_doc_view dv;
		if (store_doc_get(snaps[hits[i].src], hits[i].h.id, hits[i].h.id_len, &dv, &e)) {
			fprintf(stderr, "search: %s\n", e.msg);
			rc = -1;
			break;
		}
		size_t tl = dv.title_len ? dv.title_len + 1 : 0;
		texts[i] = malloc(tl + dv.text_len + 1);
		if (texts[i]) {
			memcpy(texts[i], dv.title, dv.title_len);
			if (tl)
				texts[i][dv.title_len] = ' ';
			memcpy(texts[i] + tl, dv.text, dv.text_len);
			lens[i] = tl + dv.text_len;
		} else {
			fprintf(stderr, "search: out of memory\n");
			rc = -1;
		}
		store_doc_view_free(&dv);
	}
	if (!rc && rerank_score(x->rr, q, strlen(q), (const char *const *)texts, lens, n, NULL, rs,
				&e)) {
		fprintf(stderr, "search: --rerank: %s\n", e.msg);
		rc = -1;
	}
	/* insertion sort: n is the few hundred candidates of one query */
	for (int i = 0; !rc && i < n; i++) {
		int j = i;
		while (j > 0 && rs[perm[j - 1]] < rs[i]) {
			perm[j] = perm[j - 1];
			j--;
		}
		perm[j] = i;
	}
	for (int i = 0; texts && i < n; i++)
		free(texts[i]);
	free(texts);
	free(lens);
	return rc;
}

/* nq queries (qs: nq * dim floats) over every store, each in its snapshot snaps[i]; query q's
 * merged hits go to hits[q * k ..], nh[q] of them (k = scan_k). One query: store_search_rescore; more:
 * store_search_batch (one scan of each store for the batch). 0, or -1 with a message. */
static int search_all(ctx *x, store_snapshot **snaps, const float *qs, int nq, mhit *hits, int *nh)
{
	int k = scan_k(x), n = x->n, rc = 0;
	store_hit *t = malloc((size_t)nq * k * sizeof *t);
	int *tn = malloc((size_t)nq * sizeof *tn), *cn = calloc((size_t)nq, sizeof *cn);
	mhit *c = malloc((size_t)nq * n * k * sizeof *c);
	if (!t || !tn || !cn || !c) {
		fprintf(stderr, "search: out of memory\n");
		rc = -1;
	}
	emb_err e = {0};
	for (int s = 0; !rc && s < n; s++) {
		if (nq == 1 ? store_search_rescore(snaps[s], qs, k, x->o->rescore, x->pool, t, tn, &e)
			    : store_search_batch(snaps[s], qs, nq, k, x->o->rescore, x->pool, t, tn, &e)) {
			fprintf(stderr, "search: %s\n", e.msg);
			rc = -1;
			break;
		}
		for (int q = 0; q < nq; q++)
			for (int i = 0; i < tn[q]; i++)
				c[(size_t)q * n * k + cn[q]++] = (mhit){t[(size_t)q * k + i], s};
	}
	for (int q = 0; !rc && q < nq; q++)
		merge_hits(c + (size_t)q * n * k, cn[q], k, n, hits + (size_t)q * k, &nh[q]);
	free(t);
	free(tn);
	free(cn);
	free(c);
	return rc;
}

/* Begins a snapshot of every store (snaps: x->n slots). 0, or -1 (message printed, none
 * left open). */
static int begin_all(ctx *x, store_snapshot **snaps)
{
	emb_err e = {0};
	for (int i = 0; i < x->n; i++) {
		if (store_snapshot_begin(x->st[i], &snaps[i], &e)) {
			fprintf(stderr, "search: %s\n", e.msg);
			while (i-- > 0)
				store_snapshot_end(snaps[i]);
			return -1;
		}
	}
	return 0;
}

static void end_all(ctx *x, store_snapshot **snaps)
{
	for (int i = 0; i < x->n; i++)
		store_snapshot_end(snaps[i]);
}

/* Bytes of the UTF-8 sequence that starts with byte c (1 for ASCII or a stray byte). */
static size_t utf8_seq_len(unsigned char c)
{
	return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* A snippet: the window's text, whitespace collapsed, at most max bytes of whole UTF-8
 * characters (JSON output needs valid UTF-8), "…" when text was left out after it. */
static char *make_snippet(const char *text, size_t tl, uint32_t a, uint32_t b, int max)
{
	if (a > tl)
		a = (uint32_t)tl;
	if (b > tl || b < a)
		b = (uint32_t)tl;
	while (a < b && ((unsigned char)text[a] & 0xC0) == 0x80)
		a++; /* a window that starts inside a character starts at the next one */
	char *out = malloc((size_t)max + 8);
	if (!out)
		return NULL;
	size_t n = 0, i = a;
	int space = 0;
	for (; i < b; i++) {
		char c = text[i];
		if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
			space = n > 0;
			continue;
		}
		if (n + space >= (size_t)max)
			break;
		if (space) {
			out[n++] = ' ';
			space = 0;
		}
		out[n++] = c;
	}
	/* The copy may end inside a character (cut at max): drop that partial character, never
	 * a complete one, and the space before it. */
	size_t k = n;
	while (k > 0 && ((unsigned char)out[k - 1] & 0xC0) == 0x80)
		k--;
	if (k == 0)
		n = 0;
	else if (k - 1 + utf8_seq_len((unsigned char)out[k - 1]) > n)
		n = k - 1;
	while (n > 0 && out[n - 1] == ' ')
		n--;
	if (i < b || b < tl) {
		memcpy(out + n, "\xe2\x80\xa6", 3); /* … */
		n += 3;
	}
	out[n] = 0;
	return out;
}

/* Runs one query; prints in the chosen format. qid is for TREC and JSON (may be NULL). With
 * bsnaps, the query was answered by a batch (search_all) in those snapshots (one a store):
 * bhits[0..bn) are printed, nothing is searched. */
static int run_query_in(ctx *x, const char *qid, const char *q, const float *vec, json_t *jsink,
			store_snapshot **bsnaps, mhit *bhits, int bn)
{
	opts *o = x->o;
	emb_err e = {0};
	float *v = NULL;
	if (!vec) {
		v = malloc((size_t)x->sm.dim * sizeof *v);
		if (!v || embed_encode(x->m, &q, NULL, 1, x->prefix, v, &e)) {
			fprintf(stderr, "search: query%s%s: %s\n", qid ? " " : "", qid ? qid : "",
				v ? e.msg : "out of memory");
			free(v);
			return -1;
		}
		vec = v;
	}
	store_snapshot **snaps = bsnaps ? bsnaps : calloc((size_t)x->n, sizeof *snaps);
	if (!snaps || (!bsnaps && begin_all(x, snaps))) {
		if (!snaps)
			fprintf(stderr, "search: out of memory\n");
		free(snaps);
		free(v);
		return -1;
	}
	mhit *hits = bsnaps ? bhits : malloc((size_t)scan_k(x) * sizeof *hits);
	int n = bsnaps ? bn : 0, rc = 0;
	int *perm = NULL;
	float *rs = NULL;
	if (!bsnaps && (!hits || search_all(x, snaps, vec, 1, hits, &n))) {
		if (!hits)
			fprintf(stderr, "search: out of memory\n");
		rc = -1;
		goto out;
	}
	if (x->rr && n > 0) {
		perm = malloc((size_t)n * sizeof *perm);
		rs = malloc((size_t)n * sizeof *rs);
		if (!perm || !rs) {
			fprintf(stderr, "search: out of memory\n");
			rc = -1;
			goto out;
		}
		if ((rc = rerank_hits(x, snaps, q ? q : "", hits, n, perm, rs)))
			goto out;
		if (n > o->k)
			n = o->k;
	}
	json_t *jres = o->fmt == FMT_JSON ? json_array() : NULL;
	for (int rank = 0; rank < n; rank++) {
		const int i = perm ? perm[rank] : rank; /* the hit at rank + 1 */
		const store_hit *h = &hits[i].h;
		if (o->fmt == FMT_TREC) {
			printf("%s Q0 %.*s %d %.6f %s\n", qid ? qid : "q", (int)h->id_len, h->id,
			       rank + 1, rs ? rs[i] : h->score, o->run_name ? o->run_name : x->sm.name);
			continue;
		}
		store_doc_view dv;
		if (store_doc_get(snaps[hits[i].src], h->id, h->id_len, &dv, &e)) {
			fprintf(stderr, "search: %s\n", e.msg);
			rc = -1;
			break;
		}
		char *snip = o->snippet ? make_snippet(dv.text, dv.text_len, h->win_start,
						       h->win_end, o->snippet) : NULL;
		if (o->fmt == FMT_JSON) {
			json_t *r = json_object();
			json_object_set_new(r, "rank", json_integer(rank + 1));
			json_object_set_new(r, "score", json_real(h->score));
			if (rs) {
				json_object_set_new(r, "rerank_score", json_real(rs[i]));
				json_object_set_new(r, "scan_rank", json_integer(i + 1));
			}
			json_object_set_new(r, "id", json_stringn(h->id, h->id_len));
			json_object_set_new(r, "title", json_stringn(dv.title, dv.title_len));
			json_object_set_new(r, "window", json_integer(h->win_index));
			if (snip)
				json_object_set_new(r, "snippet", json_string(snip));
			if (dv.meta_len) {
				json_t *m = json_loadb(dv.meta, dv.meta_len, JSON_DECODE_ANY, NULL);
				if (m)
					json_object_set_new(r, "metadata", m);
			}
			json_array_append_new(jres, r);
		} else {
			if (rs)
				printf("%3d  %.4f  (scan %.4f, #%d)  %.*s", rank + 1, rs[i], h->score, i + 1,
				       (int)h->id_len, h->id);
			else
				printf("%3d  %.4f  %.*s", rank + 1, h->score, (int)h->id_len, h->id);
			if (dv.title_len)
				printf("  %s", dv.title);
			printf("\n");
			if (snip && *snip)
				printf("     %s\n", snip);
		}
		free(snip);
		store_doc_view_free(&dv);
	}
	if (o->fmt == FMT_JSON) {
		json_t *top = json_object();
		if (qid)
			json_object_set_new(top, "id", json_string(qid));
		json_object_set_new(top, "query", json_string(q ? q : ""));
		json_object_set_new(top, "results", jres);
		if (jsink) {
			json_array_append_new(jsink, top);
		} else {
			char *s = json_dumps(top, JSON_COMPACT | JSON_ENSURE_ASCII);
			if (s)
				printf("%s\n", s);
			free(s);
			json_decref(top);
		}
	} else if (o->fmt == FMT_TEXT && n == 0) {
		printf("(no documents)\n");
	}
out:
	if (!bsnaps) {
		free(hits);
		end_all(x, snaps);
		free(snaps);
	}
	free(perm);
	free(rs);
	free(v);
	fflush(stdout);
	return rc;
}

static int run_query(ctx *x, const char *qid, const char *q, const float *vec, json_t *jsink)
{
	return run_query_in(x, qid, q, vec, jsink, NULL, NULL, 0);
}

/* Parses a query line: 1 with *id and *text (malloc'd), 0 for a blank line, -1 with a
 * message (naming FILE:LINE) in msg. */
static int parse_query(const line_reader *r, const char *line, size_t len, char **id, char **text,
		       char msg[512])
{
	if (strspn(line, " \t\r") == len)
		return 0;
	json_error_t je;
	json_t *o = json_loadb(line, len, 0, &je);
	if (!o) {
		snprintf(msg, 512, "%s:%ld: malformed JSON: %s", r->name, r->lineno, je.text);
		return -1;
	}
	json_t *jid = json_object_get(o, "_id");
	if (!jid)
		jid = json_object_get(o, "id");
	json_t *t = json_object_get(o, "text");
	if (!json_is_string(t) || !(json_is_string(jid) || json_is_integer(jid))) {
		snprintf(msg, 512, "%s:%ld: need an id (or _id) and a text", r->name, r->lineno);
		json_decref(o);
		return -1;
	}
	char buf[32];
	if (json_is_integer(jid))
		snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(jid));
	*id = strdup(json_is_string(jid) ? json_string_value(jid) : buf);
	*text = strdup(json_string_value(t));
	json_decref(o);
	if (!*id || !*text) {
		free(*id);
		free(*text);
		snprintf(msg, 512, "%s:%ld: out of memory", r->name, r->lineno);
		return -1;
	}
	return 1;
}

/* A long-lived reader reopens the store when a rebuild swapped it, so it serves the new
 * generation and lets the old one's disk space go. Returns 0 or -1 (message printed). */
static int reopen_if_stale(ctx *x)
{
	return stores_stale(x) ? open_store(x) : 0;
}

/* The check pass over a regular queries file: parses every line, keeps nothing, rewinds.
 * Returns 0, or -1 with the first error printed. */
static int check_queries(line_reader *r)
{
	char *line, *id, *text, msg[512];
	size_t len;
	int got;
	while ((got = line_reader_next(r, &line, &len)) > 0) {
		int ok = parse_query(r, line, len, &id, &text, msg);
		if (ok < 0) {
			fprintf(stderr, "search: %s\n", msg);
			return -1;
		}
		if (ok) {
			free(id);
			free(text);
		}
	}
	if (got < 0)
		return -1;
	return line_reader_rewind(r);
}

/* Queries encoded in one forward pass (--queries). */
enum { QUERY_BATCH = 32 };

/* Encodes a batch of n <= QUERY_BATCH queries in one forward pass and answers each; frees
 * them. The store is reopened first if a rebuild swapped it (maybe with another model). */
static int answer_batch(ctx *x, const line_reader *r, char **ids, char **texts, int n,
			float **vecs, int *dim)
{
	emb_err e = {0};
	int rc = reopen_if_stale(x);
	if (!rc && *dim != x->sm.dim) {
		free(*vecs);
		*dim = x->sm.dim;
		*vecs = malloc((size_t)QUERY_BATCH * *dim * sizeof **vecs);
		if (!*vecs) {
			fprintf(stderr, "search: out of memory\n");
			rc = -1;
		}
	}
	if (!rc && embed_encode(x->m, (const char *const *)texts, NULL, n, x->prefix, *vecs, &e)) {
		fprintf(stderr, "search: %s: batch ending at line %ld: %s\n", r->name, r->lineno, e.msg);
		rc = -1;
	}
	/* The batch in one scan of each store (store_search_batch), in one snapshot each. */
	store_snapshot **snaps = NULL;
	mhit *hits = NULL;
	int *nh = NULL, began = 0;
	if (!rc && n > 1) {
		hits = malloc((size_t)n * scan_k(x) * sizeof *hits);
		nh = malloc((size_t)n * sizeof *nh);
		snaps = calloc((size_t)x->n, sizeof *snaps);
		if (!hits || !nh || !snaps) {
			fprintf(stderr, "search: out of memory\n");
			rc = -1;
		} else if (begin_all(x, snaps)) {
			rc = -1;
		} else {
			began = 1;
			rc = search_all(x, snaps, *vecs, n, hits, nh);
		}
	}
	for (int i = 0; i < n; i++) {
		if (!rc && run_query_in(x, ids[i], texts[i], *vecs + (size_t)i * *dim, NULL,
					began ? snaps : NULL, began ? hits + (size_t)i * scan_k(x) : NULL,
					began ? nh[i] : 0))
			rc = -1;
		free(ids[i]);
		free(texts[i]);
	}
	if (began)
		end_all(x, snaps);
	free(snaps);
	free(hits);
	free(nh);
	return rc;
}

/* --queries: encode queries in batches (one forward pass for many), then scan each.
 * A regular file (named, or redirected to stdin) is checked whole first, so a malformed line
 * is an error before any output: an evaluation never gets a silently partial run. A stream
 * (a pipe, a terminal) is answered as it comes, a batch as soon as no further line is
 * waiting; a malformed line there ends the run after every query before it was answered. */
static int run_file(ctx *x)
{
	const char *name = x->o->queries;
	int stream = !strcmp(name, "-");
	const char *shown = stream ? "stdin" : name;
	int fd = stream ? 0 : open(name, O_RDONLY | O_CLOEXEC);
	line_reader r = {.fd = -1};
	struct stat sb;
	int rc = 0;
	if (fd < 0 || fstat(fd, &sb)) {
		fprintf(stderr, "search: %s: %s\n", shown, strerror(errno));
		rc = -1;
	} else if (S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "search: %s: is a directory, not a queries file\n", shown);
		rc = -1;
	} else if (line_reader_init(&r, fd, "search", shown, MAX_QUERY_LINE)) {
		rc = -1;
	} else if (S_ISREG(sb.st_mode)) {
		rc = check_queries(&r);
	}
	char *ids[QUERY_BATCH], *texts[QUERY_BATCH], msg[512] = "";
	float *vecs = NULL;
	int nb = 0, dim = 0;
	while (!rc) {
		char *line;
		size_t len;
		int got = line_reader_next(&r, &line, &len);
		int ok = got > 0 ? parse_query(&r, line, len, &ids[nb], &texts[nb], msg) : 0;
		nb += ok > 0;
		int end = got <= 0 || ok < 0;
		if (nb && (end || nb == QUERY_BATCH || !line_reader_ready(&r))) {
			rc = answer_batch(x, &r, ids, texts, nb, &vecs, &dim);
			nb = 0;
		}
		if (end) {
			if (got < 0 || ok < 0)
				rc = -1;
			break;
		}
	}
	if (msg[0])
		fprintf(stderr, "search: %s\n", msg);
	for (int i = 0; i < nb; i++) {
		free(ids[i]);
		free(texts[i]);
	}
	line_reader_free(&r);
	free(vecs);
	if (!stream && fd >= 0)
		close(fd);
	return rc;
}

/* Queries one a line on stdin (not a terminal): each answered as it comes. */
static int run_lines(ctx *x)
{
	line_reader r;
	if (line_reader_init(&r, 0, "search", "stdin", MAX_QUERY_LINE))
		return -1;
	int rc = 0, got;
	char *line;
	size_t n;
	while ((got = line_reader_next(&r, &line, &n)) > 0) {
		while (n && line[n - 1] == '\r')
			line[--n] = 0;
		if (!n)
			continue;
		if (reopen_if_stale(x)) {
			rc = -1;
			break;
		}
		if (run_query(x, NULL, line, NULL, NULL))
			rc = -1;
	}
	line_reader_free(&r);
	return got < 0 ? -1 : rc;
}

static void interactive(ctx *x)
{
	char hist[PATH_MAX];
	const char *home = getenv("HOME");
	snprintf(hist, sizeof hist, "%s/.embed_search_history", home ? home : ".");
	using_history();
	read_history(hist);
	uint64_t docs = 0, rows = 0;
	for (int i = 0; i < x->n; i++) {
		store_stats st;
		if (store_stats_get(x->st[i], &st, NULL) == 0) {
			docs += st.docs;
			rows += st.rows;
		}
	}
	printf("%s %s%s: %llu documents, %llu vectors, model %s. Type a query; :help for commands.\n",
	       x->n > 1 ? "stores" : "store", x->o->manifest ? x->o->manifest : x->paths[0],
	       x->n > 1 && !x->o->manifest ? " and more" : "", (unsigned long long)docs,
	       (unsigned long long)rows, x->sm.name);
	for (;;) {
		char *line = readline("search> ");
		if (!line)
			break;
		char *q = line;
		while (*q == ' ' || *q == '\t')
			q++;
		size_t l = strlen(q);
		while (l && (q[l - 1] == ' ' || q[l - 1] == '\t'))
			q[--l] = 0;
		if (!*q) {
			free(line);
			continue;
		}
		add_history(q);
		if (q[0] == ':') {
			if (!strcmp(q, ":q") || !strcmp(q, ":quit")) {
				free(line);
				break;
			} else if (!strncmp(q, ":k", 2) && atoi(q + 2) > 0) {
				x->o->k = atoi(q + 2);
				printf("k = %d\n", x->o->k);
			} else if (!strcmp(q, ":json")) {
				x->o->fmt = FMT_JSON;
			} else if (!strcmp(q, ":text")) {
				x->o->fmt = FMT_TEXT;
			} else {
				printf(":k N     results a query (now %d)\n:json    JSON output\n:text    text output\n:q       quit\n", x->o->k);
			}
			free(line);
			continue;
		}
		if (stores_stale(x)) {
			if (open_store(x)) {
				free(line);
				break;
			}
			printf("(store was rebuilt: reopened)\n");
		}
		run_query(x, NULL, q, NULL, NULL);
		free(line);
	}
	write_history(hist);
}

int main(int argc, char **argv)
{
	opts o;
	parse_args(argc, argv, &o);
	ctx x = {.o = &o};
	if (open_store(&x) || (o.rerank && open_reranker(&x))) {
		rerank_close(x.rr);
		embed_close(x.m);
		close_stores(&x);
		free(o.stores);
		free(o.query);
		return 1;
	}
	x.pool = threadpool_create(o.threads);
	int rc = 0;
	if (o.queries) {
		rc = run_file(&x);
	} else if (o.query) {
		rc = run_query(&x, NULL, o.query, NULL, NULL);
	} else if (isatty(0)) {
		interactive(&x);
	} else {
		rc = run_lines(&x);
	}
	threadpool_destroy(x.pool);
	rerank_close(x.rr);
	embed_close(x.m);
	close_stores(&x);
	free(o.stores);
	free(o.query);
	return rc ? 1 : 0;
}
