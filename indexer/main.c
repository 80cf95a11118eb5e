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
#include "store_path.h"
#include "threadpool.h"


volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
	g_stop = sig;
	signal(sig, SIG_DFL); /* a second signal kills at once; the store stays consistent */
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct counts {
	uint64_t added, updated, unchanged, deleted, failed, docs_seen;
	uint64_t empty;       /* documents with nothing to embed but [CLS] [SEP] */
	uint64_t unread_ids;  /* bad records skipped without a readable id */
	uint64_t carried;     /* --rebuild: bad records whose stored version was kept */
	uint64_t uncarried;   /* --rebuild: ... whose stored version could not be (another model) */
	uint64_t tokens, windows;
	double t_read, t_tok, t_embed, t_store;
} counts;

typedef struct ctx {
	opts *o;
	embed_model *m;
	store *st;
	store *live;          /* --rebuild: the store being replaced, read-only */
	int live_same_model;  /* its vectors were made by the model in use */
	threadpool *pool;
	window_cfg wc;
	char config[128];     /* part of the content hash: re-embed when the recipe changes */
	counts c;
	wdoc *w;
	int nw, capw;
	size_t wbytes;
	double t0, last_progress;
	input *in;
	int tty;
	char first_unread[512]; /* the first bad record without a readable id, for --prune */
} ctx;

static void warn_cb(void *arg, const char *msg)
{
	ctx *x = arg;
	if (!x->o->quiet || 1)
		fprintf(stderr, "%sindexer: warning: %s\n", x->tty && !x->o->quiet ? "\r\033[K" : "", msg);
}

static long peak_rss_kb(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

static void fmt_eta(double s, char *buf, size_t cap)
{
	if (!(s >= 0) || s > 1e7)
		snprintf(buf, cap, "?");
	else if (s >= 3600)
		snprintf(buf, cap, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
	else
		snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

static void progress(ctx *x, int final)
{
	if (x->o->quiet)
		return;
	double t = now_s();
	double every = x->tty ? 0.25 : x->o->progress_every;
	if (!final && t - x->last_progress < every)
		return;
	x->last_progress = t;
	double el = t - x->t0;
	uint64_t done = 0, total = 0;
	if (x->in)
		input_progress(x->in, &done, &total);
	double frac = total ? (double)done / (double)total : -1;
	char eta[32] = "?";
	if (frac > 0.001)
		fmt_eta(el / frac - el, eta, sizeof eta);
	uint64_t docs = x->c.added + x->c.updated + x->c.unchanged + x->c.failed;
	char pct[16] = "";
	if (frac >= 0)
		snprintf(pct, sizeof pct, " %3.0f%%", frac * 100);
	fprintf(stderr, "%s%llu docs (%llu new, %llu updated, %llu unchanged, %llu failed)  %.1f docs/s  %.0f tok/s %s ETA %s  [%s]%s",
		x->tty ? "\r\033[K" : "indexer: ", (unsigned long long)docs,
		(unsigned long long)x->c.added, (unsigned long long)x->c.updated,
		(unsigned long long)x->c.unchanged, (unsigned long long)x->c.failed,
		el > 0 ? docs / el : 0.0, el > 0 ? x->c.tokens / el : 0.0, pct, eta,
		embed_device_name(x->m), x->tty ? "" : "\n");
}

/* ---- the window in flight -----------------------------------------------------------*/

static void wdoc_free(wdoc *d)
{
	input_doc_free(&d->in);
	free(d->etext);
	free(d->ids);
	free(d->win);
	free(d->range);
	free(d->seqs);
	free(d->seqlen);
	free(d->vecs);
	store_doc_view_free(&d->old);
	memset(d, 0, sizeof *d);
}

/* --rebuild: a bad record (skipped, its id readable) must not drop the document the live
 * store holds under that id, as a rebuild that only skipped it would: its stored version
 * (text, vectors, content hash) goes into the fresh store as it was. Returns 1 when d now
 * carries that version, 0 when the live store has none, -1 after printing an error. */
static int carry_over(ctx *x, store_snapshot *live, wdoc *d)
{
	int exists = 0;
	emb_err e = {0};
	if (store_lookup(live, d->in.id, d->in.id_len, &exists, NULL, NULL, &e))
		goto fail;
	if (!exists)
		return 0;
	if (!x->live_same_model) {
		x->c.uncarried++;
		return 0;
	}
	if (store_doc_get(live, d->in.id, d->in.id_len, &d->old, &e))
		goto fail;
	free(d->vecs);
	free(d->range);
	d->vecs = malloc((size_t)d->old.nwin * (size_t)x->wc.dim * sizeof *d->vecs);
	d->range = malloc((size_t)d->old.nwin * 2 * sizeof *d->range);
	if (!d->vecs || !d->range) {
		emb_errf(&e, EMB_ENOMEM, "out of memory");
		goto fail;
	}
	if (store_doc_vectors(live, d->in.id, d->in.id_len, d->old.nwin, d->vecs, d->range, &e))
		goto fail;
	d->nwin = (int)d->old.nwin;
	x->c.carried++;
	return 1;
fail:
	fprintf(stderr, "indexer: keeping the stored version of '%s' (its new record was bad): %s\n",
		d->in.id, e.msg);
	return -1;
}

static void tokenize_task(void *arg, int i)
{
	ctx *x = arg;
	if (!x->w[i].failed)
		window_doc(&x->wc, &x->w[i]);
}

typedef struct seqref {
	wdoc *d;
	int w, len;
} seqref;

static int cmp_seq_len(const void *a, const void *b)
{
	const seqref *x = a, *y = b;
	return y->len - x->len;
}

static int report_bad(ctx *x, const char *msg)
{
	fprintf(stderr, "%sindexer: %s%s\n", x->tty && !x->o->quiet ? "\r\033[K" : "", msg,
		x->o->skip_bad ? " (skipped)" : " (stopping; --skip-bad skips and counts bad records)");
	x->c.failed++;
	return x->o->skip_bad ? 0 : -1;
}

/* Tokenizes, embeds and commits the window. Returns 0, or -1 after printing an error (a
 * failed document without --skip-bad, or a store error: nothing of the window is kept). */
static int flush(ctx *x)
{
	if (x->nw == 0)
		return 0;
	int status = 0;
	double t = now_s();
	/* Only documents that need embedding are tokenized (unchanged ones have failed=-1 as a
	 * marker meaning "seen only"). */
	threadpool_run(x->pool, tokenize_task, x, x->nw);
	double t2 = now_s();
	x->c.t_tok += t2 - t;

	size_t nseq = 0;
	for (int i = 0; i < x->nw; i++) {
		wdoc *d = &x->w[i];
		if (d->failed > 0) {
			char msg[1200];
			snprintf(msg, sizeof msg, "%s: document '%s': %s", d->in.where, d->in.id, d->err.msg);
			if (report_bad(x, msg))
				status = -1;
			d->failed = -2; /* seen, so --prune keeps what is stored under this id */
			continue;
		}
		if (d->failed == 0)
			nseq += (size_t)d->nwin;
	}
	seqref *sr = malloc((nseq ? nseq : 1) * sizeof *sr);
	const int32_t **bseq = malloc((nseq ? nseq : 1) * sizeof *bseq);
	int *blen = malloc((nseq ? nseq : 1) * sizeof *blen);
	int *slen = malloc((nseq ? nseq : 1) * sizeof *slen);
	float *bout = malloc((size_t)(nseq ? nseq : 1) * x->wc.dim * sizeof *bout);
	store_op *ops = malloc((size_t)x->nw * sizeof *ops);
	if (!sr || !bseq || !blen || !slen || !bout || !ops) {
		fprintf(stderr, "indexer: out of memory\n");
		status = -1;
		goto out;
	}
	/* A bad document (status -1 without --skip-bad) still lets the good ones of its window
	 * be committed: stopping must never lose work that was sound. */
	size_t k = 0;
	for (int i = 0; i < x->nw; i++) {
		wdoc *d = &x->w[i];
		if (d->failed == 0)
			for (int w = 0; w < d->nwin; w++)
				sr[k++] = (seqref){d, w, d->seqlen[w]};
	}
	/* Length-sorted batches under a token budget: similar lengths together. */
	qsort(sr, nseq, sizeof *sr, cmp_seq_len);
	for (size_t i = 0; i < nseq; i++)
		slen[i] = sr[i].len;
	for (size_t i = 0; i < nseq;) {
		size_t j = (size_t)embed_batch_end(slen, (int)nseq, (int)i, (size_t)x->o->batch_tokens);
		size_t tokens = 0;
		for (size_t q = i; q < j; q++) {
			bseq[q - i] = sr[q].d->seqs + (size_t)sr[q].w * x->wc.max_tokens;
			blen[q - i] = sr[q].len;
			tokens += (size_t)sr[q].len;
		}
		emb_err e = {0};
		if (embed_encode_tokens(x->m, bseq, blen, (int)(j - i), bout, &e)) {
			fprintf(stderr, "indexer: embedding failed: %s\n", e.msg);
			status = -1;
			goto out;
		}
		for (size_t q = i; q < j; q++)
			memcpy(sr[q].d->vecs + (size_t)sr[q].w * x->wc.dim, bout + (q - i) * x->wc.dim,
			       (size_t)x->wc.dim * sizeof *bout);
		x->c.tokens += tokens;
		x->c.windows += j - i;
		i = j;
	}
	double t3 = now_s();
	x->c.t_embed += t3 - t2;
	/* A model with broken weights gives NaN or infinite vectors: such a document is bad (kept
	 * as seen, like any other), never stored where it would rank as garbage. */
	for (int i = 0; i < x->nw; i++) {
		wdoc *d = &x->w[i];
		if (d->failed != 0)
			continue;
		size_t n = (size_t)d->nwin * (size_t)x->wc.dim, j = 0;
		while (j < n && isfinite(d->vecs[j]))
			j++;
		if (j == n)
			continue;
		char msg[1200];
		snprintf(msg, sizeof msg, "%s: document '%s': the model gave a non-finite vector (window %zu of %d)",
			 d->in.where, d->in.id, j / (size_t)x->wc.dim + 1, d->nwin);
		if (report_bad(x, msg))
			status = -1;
		d->failed = -2;
	}

	store_snapshot *live = NULL;
	if (x->live) {
		emb_err e = {0};
		if (store_snapshot_begin(x->live, &live, &e)) {
			fprintf(stderr, "indexer: %s\n", e.msg);
			status = -1;
			goto out;
		}
	}
	int nops = 0;
	for (int i = 0; i < x->nw; i++) {
		wdoc *d = &x->w[i];
		store_doc sd = {.id = d->in.id, .id_len = d->in.id_len};
		int carried = 0;
		if (d->failed == -2 && live && (carried = carry_over(x, live, d)) < 0) {
			status = -1;
			store_snapshot_end(live);
			goto out;
		}
		if (carried) {
			sd.title = d->old.title;
			sd.title_len = d->old.title_len;
			sd.text = d->old.text;
			sd.text_len = d->old.text_len;
			sd.meta = d->old.meta;
			sd.meta_len = d->old.meta_len;
			memcpy(sd.hash, d->old.hash, sizeof sd.hash);
			sd.nwin = d->nwin;
			sd.vecs = d->vecs;
			sd.win_range = d->range;
			ops[nops++] = (store_op){STORE_OP_PUT, sd};
			continue;
		}
		if (d->failed < 0) {
			ops[nops++] = (store_op){STORE_OP_SEEN, sd};
			continue;
		}
		sd.title = d->in.title ? d->in.title : "";
		sd.title_len = d->in.title_len;
		sd.text = d->in.text;
		sd.text_len = d->in.text_len;
		sd.meta = d->in.meta ? d->in.meta : "";
		sd.meta_len = d->in.meta_len;
		memcpy(sd.hash, d->hash, sizeof sd.hash);
		sd.nwin = d->nwin;
		sd.vecs = d->vecs;
		sd.win_range = d->range;
		ops[nops++] = (store_op){STORE_OP_PUT, sd};
	}
	store_snapshot_end(live);
	store_apply_result r;
	emb_err e = {0};
	if (store_apply(x->st, ops, nops, &r, &e)) {
		fprintf(stderr, "%sindexer: %s\n", x->tty && !x->o->quiet ? "\r\033[K" : "", e.msg);
		status = -1;
		goto out;
	}
	x->c.added += r.added;
	x->c.updated += r.updated;
	for (int i = 0; i < x->nw; i++)
		if (x->w[i].failed == -1)
			x->c.unchanged++;
	x->c.t_store += now_s() - t3;
out:
	free(sr);
	free(bseq);
	free(blen);
	free(slen);
	free(bout);
	free(ops);
	for (int i = 0; i < x->nw; i++)
		wdoc_free(&x->w[i]);
	x->nw = 0;
	x->wbytes = 0;
	progress(x, 0);
	return status;
}

static int only_space(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!(s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' || s[i] == '\v'))
			return 0;
	return 1;
}

/* Appends a document to the window in flight, taking in (freed on failure). Returns the new
 * entry, or NULL after printing "out of memory". */
static wdoc *window_push(ctx *x, input_doc *in)
{
	if (x->nw == x->capw) {
		int nc = x->capw ? x->capw * 2 : 64;
		wdoc *nw = realloc(x->w, (size_t)nc * sizeof *nw);
		if (!nw) {
			input_doc_free(in);
			fprintf(stderr, "indexer: out of memory\n");
			return NULL;
		}
		x->w = nw;
		x->capw = nc;
	}
	wdoc *d = &x->w[x->nw++];
	memset(d, 0, sizeof *d);
	d->in = *in;
	return d;
}

/* Classifies one document: bad, duplicate, unchanged (seen only) or to embed, and adds it
 * to the window. snap is a snapshot taken after the last commit. */
static int add_doc(ctx *x, store_snapshot *snap, input_doc *in)
{
	char msg[1200];
	if (in->id_len > STORE_MAX_ID_BYTES) {
		snprintf(msg, sizeof msg, "%s: document id '%.60s...' is %zu bytes (max %d)", in->where,
			 in->id, in->id_len, STORE_MAX_ID_BYTES);
		input_doc_free(in);
		return report_bad(x, msg);
	}
	/* Nothing to embed but [CLS] [SEP], as sentence-transformers does: counted, not refused. */
	int empty = only_space(in->text, in->text_len) &&
		    (x->o->no_title || !in->title || only_space(in->title, in->title_len));
	/* Duplicate ids: earlier in this window, or committed earlier in this run. */
	int dup = 0;
	for (int i = 0; i < x->nw && !dup; i++)
		dup = x->w[i].in.id_len == in->id_len && !memcmp(x->w[i].in.id, in->id, in->id_len);
	int exists = 0, seen = 0;
	uint8_t old[STORE_HASH_BYTES];
	emb_err e = {0};
	if (!dup && store_lookup(snap, in->id, in->id_len, &exists, old, &seen, &e)) {
		fprintf(stderr, "indexer: %s\n", e.msg);
		input_doc_free(in);
		return -2;
	}
	if (dup || seen) {
		snprintf(msg, sizeof msg, "%s: duplicate id '%s' (already indexed in this run)", in->where, in->id);
		input_doc_free(in);
		return report_bad(x, msg);
	}
	wdoc *d = window_push(x, in);
	if (!d)
		return -2;
	x->c.empty += empty;
	const void *parts[] = {x->config, in->title ? in->title : "", in->text, in->meta ? in->meta : ""};
	size_t lens[] = {strlen(x->config), in->title_len, in->text_len, in->meta_len};
	store_hash(parts, lens, 4, d->hash);
	if (exists && memcmp(old, d->hash, sizeof old) == 0) {
		d->failed = -1; /* unchanged: mark seen, don't embed */
		return 0;
	}
	if (in->title_len && !x->o->no_title && !in->title_in_text) {
		d->elen = in->title_len + 1 + in->text_len;
		d->etext = malloc(d->elen + 1);
		if (d->etext) {
			memcpy(d->etext, in->title, in->title_len);
			d->etext[in->title_len] = ' ';
			memcpy(d->etext + in->title_len + 1, in->text, in->text_len + 1);
		}
		d->text_off = in->title_len + 1;
	} else {
		d->elen = in->text_len;
		d->etext = malloc(d->elen + 1);
		if (d->etext)
			memcpy(d->etext, in->text, in->text_len + 1);
	}
	if (!d->etext) {
		fprintf(stderr, "indexer: out of memory\n");
		return -2;
	}
	x->wbytes += d->elen;
	return 0;
}

/* A bad record that was skipped (--skip-bad): when its id could be read, it joins the window
 * as "seen" so that --prune keeps what is stored under that id; when not, prune has no way to
 * tell its document from a removed one, and run_inputs refuses to prune. Takes d. */
static int keep_seen(ctx *x, input_doc *in, const char *msg)
{
	if (!in->id || !in->id_len || in->id_len > STORE_MAX_ID_BYTES) {
		if (in->id_len <= STORE_MAX_ID_BYTES && !x->c.unread_ids++)
			snprintf(x->first_unread, sizeof x->first_unread, "%s", msg);
		input_doc_free(in);
		return 0;
	}
	wdoc *d = window_push(x, in);
	if (!d)
		return -2;
	memset(in, 0, sizeof *in);
	d->failed = -2;
	return 0;
}

static int run_inputs(ctx *x)
{
	opts *o = x->o;
	emb_err e = {0};
	if (input_open(o->inputs, o->ninputs, &o->in, &x->in, &e)) {
		fprintf(stderr, "indexer: %s\n", e.msg);
		return -1;
	}
	int status = 0;
	store_snapshot *snap = NULL;
	while (!status) {
		if (g_stop) {
			status = 1;
			break;
		}
		if (!snap && store_snapshot_begin(x->st, &snap, &e)) {
			fprintf(stderr, "indexer: %s\n", e.msg);
			status = -1;
			break;
		}
		double tr = now_s();
		input_doc d;
		e = (emb_err){0};
		int r = input_next(x->in, &d, &e);
		x->c.t_read += now_s() - tr;
		if (r == 0)
			break;
		if (r < 0) {
			if (e.code == EMB_EFORMAT || e.code == EMB_EINVAL) {
				if (report_bad(x, e.msg))
					status = -1;
				else if (keep_seen(x, &d, e.msg))
					status = -1;
			} else if (e.code != EMB_EINTERRUPTED) {
				fprintf(stderr, "%sindexer: %s\n", x->tty && !o->quiet ? "\r\033[K" : "", e.msg);
				status = -1;
			}
			input_doc_free(&d); /* g_stop ends the loop after an interruption */
		} else if (add_doc(x, snap, &d) < 0) {
			status = -1;
		}
		if (x->nw >= o->window_docs || x->wbytes >= (32u << 20) || status) {
			store_snapshot_end(snap);
			snap = NULL;
			/* Documents before a bad one are still committed (nothing is lost). */
			if (flush(x) && !status)
				status = -1;
		}
		progress(x, 0);
	}
	store_snapshot_end(snap);
	if (status >= 0 && flush(x))
		status = -1;
	if (status == 0 && g_stop)
		status = 1;
	if (status == 0 && o->rebuild && (x->c.unread_ids || x->c.uncarried)) {
		/* The swap would drop what the live store holds under those ids. */
		if (x->c.unread_ids)
			fprintf(stderr, "indexer: --rebuild refused: %llu skipped record%s had no readable "
				"id, so what the store holds under %s could not be kept (first: %s)\n",
				(unsigned long long)x->c.unread_ids, x->c.unread_ids == 1 ? "" : "s",
				x->c.unread_ids == 1 ? "it" : "them", x->first_unread);
		else
			fprintf(stderr, "indexer: --rebuild refused: %llu skipped record%s name%s documents "
				"whose stored vectors another model made, so they could not be kept\n",
				(unsigned long long)x->c.uncarried, x->c.uncarried == 1 ? "" : "s",
				x->c.uncarried == 1 ? "s" : "");
		status = -1;
	}
	if (status == 0 && o->prune && !o->rebuild && x->c.unread_ids) {
		fprintf(stderr, "indexer: --prune refused, nothing deleted: %llu skipped record%s had no "
			"readable id, so the documents stored under %s cannot be told from removed ones "
			"(first: %s)\n", (unsigned long long)x->c.unread_ids,
			x->c.unread_ids == 1 ? "" : "s", x->c.unread_ids == 1 ? "it" : "them",
			x->first_unread);
		status = -1;
	}
	return status;
}

int main(int argc, char **argv)
{
	opts o;
	parse_args(argc, argv, &o);
	if (o.check && !o.ninputs && !o.ndeletes) {
		free(o.inputs);
		free(o.deletes);
		return check_store(o.store);
	}

	ctx x = {.o = &o};
	x.tty = isatty(2);
	o.in.warn = warn_cb;
	o.in.warn_arg = &x;
	struct sigaction sa = {0};
	sa.sa_handler = on_signal; /* no SA_RESTART: a blocked read on stdin returns */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	x.t0 = now_s();
	x.last_progress = x.t0;

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

	char model_dir[PATH_MAX];
	find_model(&o, model_dir, sizeof model_dir);
	embed_options eo;
	embed_options_default(&eo);
	eo.threads = o.threads;
	eo.device = o.device;
	eo.quiet = o.quiet;
	if (embed_open(model_dir, &eo, &x.m, &e)) {
		fprintf(stderr, "indexer: model %s: %s\n", model_dir, e.msg);
		return 1;
	}
	if (window_setup(&x.wc, x.m, o.window, o.stride, o.truncate)) {
		fprintf(stderr, "indexer: --window %d leaves no room for text\n", x.wc.win_tokens);
		return 2;
	}
	snprintf(x.config, sizeof x.config, "w=%d s=%d t=%d nt=%d", x.wc.win_tokens, x.wc.stride,
		 o.truncate, o.no_title);

	store_model sm = {0};
	snprintf(sm.name, sizeof sm.name, "%s", embed_model_name(x.m));
	const char *sha = embed_model_sha256(x.m);
	if (!sha) {
		fprintf(stderr, "indexer: cannot hash the weights of %s\n", model_dir);
		return 1;
	}
	snprintf(sm.sha256, sizeof sm.sha256, "%s", sha);
	sm.dim = x.wc.dim;
	snprintf(sm.pooling, sizeof sm.pooling, "%s", embed_pooling_name(x.m));
	sm.normalized = embed_normalized(x.m);
	sm.needs_prefix = embed_needs_prefix(x.m);
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
	if (store_open(open_path, STORE_CREATE, &x.st, &e) || store_bind_model(x.st, &sm, &e)) {
		fprintf(stderr, "indexer: %s\n", e.msg);
		if (o.rebuild)
			store_remove_dir(fresh);
		return 1;
	}
	if (o.rebuild && o.skip_bad && store_open(o.store, STORE_READONLY, &x.live, NULL) == 0) {
		/* What a skipped record's id holds now is kept (carry_over). */
		store_model lm;
		x.live_same_model = store_model_get(x.live, &lm, NULL) == 0 &&
				    !strcmp(lm.sha256, sm.sha256) && lm.dim == sm.dim &&
				    !strcmp(lm.pooling, sm.pooling) && lm.normalized == sm.normalized &&
				    lm.needs_prefix == sm.needs_prefix && lm.max_tokens == sm.max_tokens;
	}
	x.pool = threadpool_create(o.threads);

	int status = 0;
	if (o.ndeletes) {
		store_op *ops = calloc((size_t)o.ndeletes, sizeof *ops);
		for (int i = 0; i < o.ndeletes; i++)
			ops[i] = (store_op){STORE_OP_DELETE, {.id = o.deletes[i], .id_len = strlen(o.deletes[i])}};
		store_apply_result r;
		if (store_apply(x.st, ops, o.ndeletes, &r, &e)) {
			fprintf(stderr, "indexer: %s\n", e.msg);
			status = -1;
		} else {
			x.c.deleted += r.deleted;
			if (r.deleted < (uint64_t)o.ndeletes && !o.quiet)
				fprintf(stderr, "indexer: %llu of %d ids to delete were not in the store\n",
					(unsigned long long)(o.ndeletes - r.deleted), o.ndeletes);
		}
		free(ops);
	}
	if (!status && o.ninputs) {
		if (store_seen_clear(x.st, &e)) {
			fprintf(stderr, "indexer: %s\n", e.msg);
			status = -1;
		} else {
			status = run_inputs(&x);
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
		x.c.t_store += now_s() - t;
	}
	if (x.tty && !o.quiet)
		fprintf(stderr, "\r\033[K");

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
		fprintf(stderr, "indexer: time: read %.2f s, tokenize %.2f s, embed %.2f s, store %.2f s; device %s\n",
			x.c.t_read, x.c.t_tok, x.c.t_embed, x.c.t_store, embed_device_name(x.m));
	}
	input_close(x.in);
	threadpool_destroy(x.pool);
	embed_close(x.m);
	free(x.w);
	free(o.inputs);
	free(o.deletes);
	if (status > 0)
		return g_stop == SIGTERM ? 143 : 130;
	return status < 0 ? 1 : 0;
}
