/* indexer — puts documents into a vector store: reads JSONL / text / Markdown / directory
 * trees / stdin a document at a time, skips documents whose content hash is unchanged,
 * tokenizes the rest on worker threads, splits long ones into overlapping token windows,
 * embeds the windows in length-sorted batches bounded by a token budget, and commits each
 * window of documents in one store transaction, so a crash or a signal loses at most the
 * window in flight and a rerun resumes where the last commit ended.
 *
 *   indexer --store DIR [--model DIR] [options] INPUT...     (see usage() in options.c)
 *
 * This file is the run; indexer.h lists the others (options, windowing, --check).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "indexer.h"
#include "rerank.h"
#include "store_path.h"
#include "threadpool.h"


volatile sig_atomic_t g_stop;

/* --reranker DIR: a directory that is not a cross-encoder is refused now rather than at the
 * first search. Writes its absolute path (what the store records) to out. Returns 0, or -1
 * after one line on stderr. */
static int check_reranker(const char *dir, char *out, size_t cap)
{
	rerank_options ro;
	rerank_options_default(&ro);
	ro.embed.threads = 1;
	ro.embed.quiet = 1;
	rerank_model *rm;
	emb_err e = {0};
	if (rerank_open(dir, &ro, &rm, &e)) {
		fprintf(stderr, "indexer: --reranker %s: %s\n", dir, e.msg);
		return -1;
	}
	rerank_close(rm);
	char real[PATH_MAX];
	if (!realpath(dir, real)) {
		fprintf(stderr, "indexer: --reranker %s: %s\n", dir, strerror(errno));
		return -1;
	}
	if (strlen(real) >= cap || strlen(real) >= STORE_RERANKER_MAX) {
		fprintf(stderr, "indexer: --reranker %s: path longer than %d bytes\n", dir,
			STORE_RERANKER_MAX - 1);
		return -1;
	}
	snprintf(out, cap, "%s", real);
	return 0;
}

double now_s(void);

static void on_signal(int sig)
{
	g_stop = sig;
	signal(sig, SIG_DFL); /* a second signal kills at once; the store stays consistent */
}

double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void warn_cb(void *arg, const char *msg)
{
	run *x = arg;
	fprintf(stderr, "%sindexer: warning: %s\n", x->tty && !x->o->quiet ? "\r\033[K" : "", msg);
}

static long peak_rss_kb(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* The devices of --gpu all: every Vulkan device that is not a CPU implementation. Fills
 * o->gpus; returns 0, or -1 after printing why there is none. */
static int list_gpus(opts *o)
{
	char buf[4096];
	emb_err e = {0};
	int n = embed_list_devices(buf, sizeof buf, &e);
	if (n < 0) {
		fprintf(stderr, "indexer: --gpu all: %s\n", e.msg);
		return -1;
	}
	free(o->gpus);
	o->gpus = calloc((size_t)(n ? n : 1), sizeof *o->gpus);
	o->ngpus = 0;
	for (char *line = buf; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		int idx;
		if (sscanf(line, "%d:", &idx) == 1 && !strstr(line, "(cpu,") && o->gpus)
			o->gpus[o->ngpus++] = idx;
		line = nl ? nl + 1 : NULL;
	}
	if (!o->ngpus) {
		fprintf(stderr, "indexer: --gpu all: no GPU (%d Vulkan device%s, CPU implementations "
			"only; name one with --gpu N to use it)\n", n, n == 1 ? "" : "s");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	opts o;
	parse_args(argc, argv, &o);
	if (o.info && !o.ninputs && !o.ndeletes) {
		free(o.inputs);
		free(o.deletes);
		return info_store(o.store);
	}
	if (o.check && !o.ninputs && !o.ndeletes) {
		free(o.inputs);
		free(o.deletes);
		return check_store(o.store);
	}

	run x = {.o = &o};
	x.tty = isatty(2);
	o.in.warn = warn_cb;
	o.in.warn_arg = &x;
	struct sigaction sa = {0};
	sa.sa_handler = on_signal; /* no SA_RESTART: a blocked read on stdin returns */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	x.t0 = now_s();

	/* One indexer per store at a time, rebuilds included: LMDB would serialise their
	 * transactions, but two runs would clear each other's "seen" marks and a rebuild would
	 * swap out the other run's writes. The lock is the store's, whatever alias names it,
	 * and covers every version. Holding it, clear what killed runs left, and refuse a path
	 * that holds something other than our store before the model is even loaded. */
	emb_err e = {0};
	store_lock *lock = NULL;
	store_path_kind kind;
	int cleaned = 0;
	if (store_lock_take(o.store, &lock, &e) || store_path_cleanup(o.store, &cleaned, &e) ||
	    store_path_check(o.store, &kind, &e)) {
		fprintf(stderr, "indexer: %s\n", e.msg);
		store_lock_release(lock);
		return 1;
	}
	if (cleaned && !o.quiet)
		fprintf(stderr, "indexer: store %s: removed %d leftover%s of killed runs\n", o.store,
			cleaned, cleaned == 1 ? "" : "s");

	/* A shard store takes only its shard's documents: --shard must name the shard the store
	 * records (a rebuild may change it: the fresh store records the new one). */
	int live_si = 0, live_sn = 0;
	{
		store *live;
		if (store_open(o.store, STORE_READONLY, &live, NULL) == 0) {
			if (store_shard_get(live, &live_si, &live_sn, &e)) {
				fprintf(stderr, "indexer: %s\n", e.msg);
				live_sn = -1;
			}
			store_close(live);
		}
	}
	if (live_sn > 0 && !o.nshards)
		fprintf(stderr, "indexer: store %s is shard %d/%d: give --shard %d/%d\n", o.store, live_si,
			live_sn, live_si, live_sn);
	if (live_sn < 0 || (live_sn > 0 && !o.nshards)) {
		store_lock_release(lock);
		free(o.gpus);
		free(o.inputs);
		free(o.deletes);
		return 1;
	}

	/* --reranker: refused now, in one line, before anything is written (and with nothing
	 * left behind for the leak checker). */
	char reranker[PATH_MAX] = "";
	if (o.reranker && *o.reranker && check_reranker(o.reranker, reranker, sizeof reranker)) {
		store_lock_release(lock);
		free(o.gpus);
		free(o.inputs);
		free(o.deletes);
		return 1;
	}

	char model_dir[PATH_MAX];
	find_model(&o, model_dir, sizeof model_dir);
	/* One engine, or one per device of --gpu (each its own weights on its own device, fed
	 * by the same tokenizing stage). */
	if (o.gpus_all && list_gpus(&o))
		return 1;
	x.nm = o.ngpus ? o.ngpus : 1;
	x.m = calloc((size_t)x.nm, sizeof *x.m);
	if (!x.m) {
		fprintf(stderr, "indexer: out of memory\n");
		return 1;
	}
	for (int i = 0; i < x.nm; i++) {
		embed_options eo;
		embed_options_default(&eo);
		eo.threads = o.threads;
		eo.device = o.ngpus ? EMBED_DEVICE_GPU : o.device;
		eo.precision = o.precision;
		eo.gpu_index = o.ngpus ? o.gpus[i] : -1;
		eo.quiet = o.quiet;
		if (embed_open(model_dir, &eo, &x.m[i], &e)) {
			fprintf(stderr, "indexer: model %s%s: %s\n", model_dir, o.ngpus ? " on --gpu" : "", e.msg);
			return 1;
		}
	}
	/* Chunks (transactions) big enough for a few of the device's batches: a GPU batch holds
	 * ~1,000 windows, and the batches of one chunk are sorted by length together. */
	if (!o.window_docs)
		o.window_docs = embed_device_for_batch(x.m[0], 1 << 20) == EMBED_DEVICE_GPU ? 4096 : 256;
	if (!o.queue_chunks)
		o.queue_chunks = 4 + 2 * x.nm;
	if (window_setup(&x.wc, x.m[0], o.window, o.stride, o.truncate)) {
		fprintf(stderr, "indexer: --window %d leaves no room for text\n", x.wc.win_tokens);
		return 2;
	}
	snprintf(x.config, sizeof x.config, "w=%d s=%d t=%d nt=%d", x.wc.win_tokens, x.wc.stride,
		 o.truncate, o.no_title);

	store_model sm = {0};
	snprintf(sm.name, sizeof sm.name, "%s", embed_model_name(x.m[0]));
	snprintf(sm.family, sizeof sm.family, "%s", embed_model_family(x.m[0]));
	const char *sha = embed_model_sha256(x.m[0]);
	if (!sha) {
		fprintf(stderr, "indexer: cannot hash the weights of %s\n", model_dir);
		return 1;
	}
	snprintf(sm.sha256, sizeof sm.sha256, "%s", sha);
	sm.dim = x.wc.dim;
	snprintf(sm.pooling, sizeof sm.pooling, "%s", embed_pooling_name(x.m[0]));
	sm.normalized = embed_normalized(x.m[0]);
	sm.needs_prefix = embed_needs_prefix(x.m[0]);
	sm.max_tokens = x.wc.max_tokens;
	{
		char real[PATH_MAX];
		const char *md = realpath(model_dir, real) ? real : model_dir;
		if (strlen(md) < sizeof sm.model_dir)
			memcpy(sm.model_dir, md, strlen(md) + 1);
	}

	char fresh[PATH_MAX];
	const char *open_path = o.store;
	if (o.rebuild) {
		if (store_fresh_dir(o.store, fresh, sizeof fresh, &e)) {
			fprintf(stderr, "indexer: %s\n", e.msg);
			return 1;
		}
		open_path = fresh;
	}
	/* The vector type: --vectors, else (a rebuild) the live store's, else the store's own. */
	quant_type vt = QUANT_F32;
	int set_vt = 0;
	if (o.vectors) {
		quant_parse(o.vectors, &vt);
		set_vt = 1;
	} else if (o.rebuild) {
		store *live;
		if (store_open(o.store, STORE_READONLY, &live, NULL) == 0) {
			vt = store_vtype(live);
			set_vt = 1;
			store_close(live);
		}
	}
	/* The default reranker: --reranker, else (a rebuild) the live store's. */
	int set_rr = o.reranker != NULL;
	if (!o.reranker && o.rebuild) {
		store *live;
		if (store_open(o.store, STORE_READONLY, &live, NULL) == 0) {
			set_rr = store_reranker_get(live, reranker, sizeof reranker, NULL) == 0 &&
				 reranker[0];
			store_close(live);
		}
	}
	if (store_open(open_path, STORE_CREATE, &x.st, &e) || store_bind_model(x.st, &sm, &e) ||
	    (set_vt && store_set_vtype(x.st, vt, &e)) ||
	    (o.nshards && store_set_shard(x.st, o.shard, o.nshards, &e)) ||
	    (set_rr && store_set_reranker(x.st, reranker, &e))) {
		fprintf(stderr, "indexer: %s\n", e.msg);
		/* A refusal (another model, another vector type) is an expected outcome: leave
		 * nothing behind, so that it stays one line under the leak checker too. */
		store_close(x.st);
		if (o.rebuild)
			store_remove_dir(fresh);
		store_lock_release(lock);
		for (int i = 0; i < x.nm; i++)
			embed_close(x.m[i]);
		free(x.m);
		free(o.gpus);
		free(o.inputs);
		free(o.deletes);
		return 1;
	}
	if (o.rebuild && o.skip_bad && store_open(o.store, STORE_READONLY, &x.live, NULL) == 0) {
		/* What a skipped record's id holds now is kept (carry_over). */
		store_model lm;
		x.live_same_model = store_model_get(x.live, &lm, NULL) == 0 &&
				    !strcmp(lm.sha256, sm.sha256) && lm.dim == sm.dim &&
				    (!lm.family[0] || !strcmp(lm.family, sm.family)) &&
				    !strcmp(lm.pooling, sm.pooling) && lm.normalized == sm.normalized &&
				    lm.needs_prefix == sm.needs_prefix && lm.max_tokens == sm.max_tokens;
	}
	x.pool = threadpool_create(o.threads);

	int status = 0;
	if (o.ndeletes) {
		store_op *ops = calloc((size_t)o.ndeletes, sizeof *ops);
		int nops = 0;
		for (int i = 0; i < o.ndeletes; i++) {
			size_t l = strlen(o.deletes[i]);
			if (o.nshards && store_shard_of(o.deletes[i], l, o.nshards) != o.shard)
				x.c.other_shard++; /* another shard's: its run deletes it */
			else
				ops[nops++] = (store_op){STORE_OP_DELETE, {.id = o.deletes[i], .id_len = l}};
		}
		store_apply_result r = {0};
		if (nops && store_apply(x.st, ops, nops, &r, &e)) {
			fprintf(stderr, "indexer: %s\n", e.msg);
			status = -1;
		} else {
			x.c.deleted += r.deleted;
			if (r.deleted < (uint64_t)nops && !o.quiet)
				fprintf(stderr, "indexer: %llu of %d ids to delete were not in the store\n",
					(unsigned long long)(nops - r.deleted), nops);
		}
		free(ops);
	}
	if (!status && o.ninputs) {
		if (store_seen_clear(x.st, &e)) {
			fprintf(stderr, "indexer: %s\n", e.msg);
			status = -1;
		} else {
			status = pipeline_run(&x);
		}
		if (status == 0 && o.rebuild && (x.c.unread_ids || x.c.uncarried)) {
			/* The swap would drop what the live store holds under those ids. */
			if (x.c.unread_ids)
				fprintf(stderr, "indexer: --rebuild refused: %llu skipped record%s had no readable "
					"id, so what the store holds under %s could not be kept (first: %s)\n",
					(unsigned long long)x.c.unread_ids, x.c.unread_ids == 1 ? "" : "s",
					x.c.unread_ids == 1 ? "it" : "them", x.first_unread);
			else
				fprintf(stderr, "indexer: --rebuild refused: %llu skipped record%s name%s documents "
					"whose stored vectors another model made, so they could not be kept\n",
					(unsigned long long)x.c.uncarried, x.c.uncarried == 1 ? "" : "s",
					x.c.uncarried == 1 ? "s" : "");
			status = -1;
		}
		if (status == 0 && o.prune && !o.rebuild && x.c.unread_ids) {
			fprintf(stderr, "indexer: --prune refused, nothing deleted: %llu skipped record%s had no "
				"readable id, so the documents stored under %s cannot be told from removed ones "
				"(first: %s)\n", (unsigned long long)x.c.unread_ids,
				x.c.unread_ids == 1 ? "" : "s", x.c.unread_ids == 1 ? "it" : "them",
				x.first_unread);
			status = -1;
		}
	}
	if (status == 0 && o.prune && !o.rebuild) {
		uint64_t n;
		double t = now_s();
		if (store_prune_unseen(x.st, 1000, &n, &e)) {
			fprintf(stderr, "indexer: prune: %s\n", e.msg);
			status = -1;
		}
		x.c.deleted += n;
		x.busy[ST_STORE] += now_s() - t;
	}

	store_stats st = {0};
	store_stats_get(x.st, &st, NULL);
	store_close(x.st);
	store_close(x.live);
	if (x.c.carried && !o.quiet)
		fprintf(stderr, "indexer: --rebuild kept the stored version of %llu document%s whose new "
			"record was bad\n", (unsigned long long)x.c.carried, x.c.carried == 1 ? "" : "s");
	if (o.rebuild) {
		if (status == 0) {
			if (store_swap_in(o.store, fresh, &e)) {
				fprintf(stderr, "indexer: %s\n", e.msg);
				status = -1;
			}
		} else {
			store_remove_dir(fresh);
			fprintf(stderr, "indexer: rebuild abandoned; %s is unchanged\n", o.store);
		}
	}
	store_lock_release(lock);
	double el = now_s() - x.t0;
	if (!o.quiet) {
		uint64_t docs = x.c.added + x.c.updated + x.c.unchanged;
		fprintf(stderr,
			"indexer: %s: added %llu, updated %llu, unchanged %llu, deleted %llu, failed %llu, ignored %llu, empty %llu; "
			"%.1f s, %.1f docs/s, %.0f tokens/s, %llu windows; peak RSS %.0f MB; store %s: %llu docs, %llu rows\n",
			status > 0 ? "interrupted" : status < 0 ? "stopped" : "done",
			(unsigned long long)x.c.added, (unsigned long long)x.c.updated,
			(unsigned long long)x.c.unchanged, (unsigned long long)x.c.deleted,
			(unsigned long long)x.c.failed, (unsigned long long)(x.in ? input_ignored(x.in) : 0),
			(unsigned long long)x.c.empty,
			el, el > 0 ? docs / el : 0.0, el > 0 ? x.c.tokens / el : 0.0,
			(unsigned long long)x.c.windows, peak_rss_kb() / 1024.0,
			o.store, (unsigned long long)st.docs,
			(unsigned long long)st.rows);
		if (o.nshards)
			fprintf(stderr, "indexer: shard %d/%d: passed over %llu document%s and --delete id%s of other shards\n",
				o.shard, o.nshards, (unsigned long long)x.c.other_shard,
				x.c.other_shard == 1 ? "" : "s", x.c.other_shard == 1 ? "" : "s");
		/* The stages overlap: each one's busy time, against the run's wall time after
		 * start-up; the embed stage's is the time a batch was on some engine. */
		double run_el = x.t_start > 0 ? now_s() - x.t_start : 0;
		fprintf(stderr, "indexer: stages (busy s, they overlap): read %.2f, prep %.2f, embed %.2f "
			"(device busy %.0f%% of %.2f s after %.2f s start-up), store %.2f; device %s%s\n",
			x.busy[ST_READ], x.busy[ST_PREP], x.gpu_busy,
			run_el > 0 ? 100 * x.gpu_busy / x.nm / run_el : 0.0, run_el,
			x.t_start > 0 ? x.t_start - x.t0 : el, x.busy[ST_STORE], embed_device_name(x.m[0]),
			x.nm > 1 ? " and more" : "");
	}
	input_close(x.in);
	threadpool_destroy(x.pool);
	for (int i = 0; i < x.nm; i++)
		embed_close(x.m[i]);
	free(x.m);
	free(o.gpus);
	free(o.inputs);
	free(o.deletes);
	if (status > 0)
		return g_stop == SIGTERM ? 143 : 130;
	return status < 0 ? 1 : 0;
}
