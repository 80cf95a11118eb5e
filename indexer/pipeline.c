/* pipeline.c — the indexer's run as stages on their own threads, joined by bounded queues,
 * so that the GPU never waits for reading, tokenizing or the store (run one after another,
 * they left an H200 idle four fifths of the time):
 *
 *   read   (the main thread)  inputs -> chunks of --window-docs documents, in input order;
 *                             a record's id is checked here
 *   prep   (one thread + the tokenizing pool)  classify each document (bad, duplicate,
 *                             unchanged, to embed), cut it into windows and tokenize them,
 *                             compress its text for the store, and cut the chunk's windows
 *                             into length-sorted batches of the engine's capacity
 *   embed  (one thread per engine)  two batches in flight on each device
 *                             (embed_submit_tokens / embed_wait)
 *   store  (one thread)       commits whole chunks in input order, one transaction each
 *                             (or a few together when they wait for it)
 *
 * A chunk is alive from the moment it is read until it is committed (or dropped), and at most
 * --queue-chunks chunks are alive: memory is bounded by that, not by the corpus. Commits go in
 * input order whatever order the engines finish in, so what a kill leaves is always a prefix
 * of the input (less at most the chunks alive), and a rerun resumes after it. Duplicate ids
 * are found against the store (committed, marked seen) and against the chunks still in
 * flight (a set of their ids that the prep stage owns), so the first occurrence wins as when
 * the stages ran one after another.
 *
 * Errors: a bad document without --skip-bad stops reading; the good documents of its chunk
 * and of every chunk before it are committed, later chunks are dropped. An embedding or store
 * error commits nothing from that chunk on. A signal stops reading; everything read is still
 * committed.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "indexer.h"

/* Texts of one chunk at most (the documents' bytes, before tokenizing). */
#define CHUNK_MAX_BYTES ((size_t)32 << 20)
#define NONE UINT64_MAX

double now_s(void);

typedef struct seqref {
	wdoc *d;
	int w, len;
} seqref;

typedef struct chunk chunk;

/* A run of a chunk's windows that goes to an engine in one submit. */
typedef struct batch {
	chunk *c;
	int first, n;            /* the chunk's sequences [first, first + n) */
	size_t tokens;
	struct batch *next;
} batch;

struct chunk {
	uint64_t seq;            /* input order */
	wdoc *d;
	int n, cap;
	size_t bytes;
	int fatal;               /* holds a bad document without --skip-bad: the run stops here */
	int failed;              /* an engine failed on it: it and every later chunk are not kept */
	int pending;             /* batches not yet back */
	/* The windows to embed, longest first, and their vectors (row i for seqs[i]). */
	size_t nseq;
	seqref *refs;
	const int32_t **seqs;
	int *lens;
	float *out;
	batch *batches;
	int nbatches;
	chunk *next;
};

/* The ids of documents in chunks not yet committed, so that a duplicate is found before
 * the store can see the first occurrence. Open addressing; only the prep thread uses it. */
typedef struct idslot {
	uint64_t h, seq;         /* seq: the chunk; NONE: empty */
	char *id;
	size_t len;
} idslot;

typedef struct idset {
	idslot *t;
	size_t cap, n;
} idset;

typedef struct pipeline {
	run *x;
	pthread_mutex_t mu;
	pthread_cond_t cv;       /* any change of what follows: waiters re-check their condition */
	chunk *prep_head, *prep_tail;
	int nprep;
	batch *gq_head, *gq_tail;
	int ngq;
	chunk *done;             /* embedded, waiting for their turn at the writer (unordered) */
	int ndone;
	int live, max_live;      /* chunks between read and commit or drop */
	int read_end, prep_end;
	uint64_t keep_below;     /* chunks from this one on are dropped (NONE: none) */
	int halt;                /* stop reading */
	int status;              /* 0, or -1 after an error was printed */
	uint64_t committed;      /* chunks committed (or dropped by the writer), in order */
	int batch_tokens, batch_seqs;
	/* progress: busy times at the last line, for the rates over the last interval */
	double last_t, last_busy[NSTAGES], last_gpu;
	uint64_t docs_read;      /* records the read stage took (for the ETA) */
	double *busy_since;      /* per engine: when its current busy spell began (0: idle) */
	double last_progress;
} pipeline;

/* ---- reporting -------------------------------------------------------------------------*/

static void fmt_eta(double s, char *buf, size_t cap)
{
	if (!(s >= 0) || s > 1e7)
		snprintf(buf, cap, "?");
	else if (s >= 3600)
		snprintf(buf, cap, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
	else
		snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

static const char *stage_name[NSTAGES] = {"read", "prep", "embed", "store"};

/* The progress line: counts, rates, ETA, and what each stage did over the last interval
 * (busy %; the embed stage's is the engines' busy time over their number), what waits
 * before the prep, embed and store stages, and the busiest stage, named as the bottleneck.
 * Called with p->mu. */
static void progress_locked(pipeline *p, int final)
{
	run *x = p->x;
	if (x->o->quiet)
		return;
	double t = now_s();
	double every = x->tty ? 0.25 : x->o->progress_every;
	if (!final && t - p->last_progress < every)
		return;
	p->last_progress = t;
	double el = t - x->t0;
	uint64_t done = 0, total = 0;
	if (x->in)
		input_progress(x->in, &done, &total);
	/* How far the run is: the share of the input read, scaled by the share of what was read
	 * that is committed (reading runs ahead of the other stages by up to --queue-chunks). */
	uint64_t docs = x->c.added + x->c.updated + x->c.unchanged + x->c.failed;
	double frac = total ? (double)done / (double)total : -1;
	if (frac >= 0 && p->docs_read)
		frac *= docs < p->docs_read ? (double)docs / (double)p->docs_read : 1.0;
	char eta[32] = "?";
	double run_el = t - x->t_start;
	if (frac > 0.001)
		fmt_eta(run_el / frac - run_el, eta, sizeof eta);
	char pct[16] = "";
	if (frac >= 0)
		snprintf(pct, sizeof pct, " %3.0f%%", frac * 100);
	/* stage load over the last interval */
	double dt = t - p->last_t;
	char stages[160] = "";
	if (dt > 0.05) {
		int worst = 0, at = 0;
		double load[NSTAGES];
		double gpu = x->gpu_busy; /* and the spells still running */
		for (int i = 0; i < x->nm; i++)
			gpu += p->busy_since[i] > 0 ? t - p->busy_since[i] : 0;
		for (int s = 0; s < NSTAGES; s++) {
			load[s] = (x->busy[s] - p->last_busy[s]) / dt;
			if (s == ST_EMBED)
				load[s] = (gpu - p->last_gpu) / dt / x->nm;
			if (load[s] > load[worst])
				worst = s;
		}
		for (int s = 0; s < NSTAGES; s++)
			at += snprintf(stages + at, sizeof stages - (size_t)at, "%s%s %.0f%%", s ? " " : "",
				       stage_name[s], 100 * (load[s] > 1 ? 1 : load[s]));
		snprintf(stages + at, sizeof stages - (size_t)at, "; waiting: %d chunk%s, %d batch%s, %d "
			 "chunk%s; bottleneck %s", p->nprep, p->nprep == 1 ? "" : "s", p->ngq,
			 p->ngq == 1 ? "" : "es", p->ndone, p->ndone == 1 ? "" : "s", stage_name[worst]);
		memcpy(p->last_busy, x->busy, sizeof p->last_busy);
		p->last_gpu = gpu;
		p->last_t = t;
	}
	fprintf(stderr, "%s%llu docs (%llu new, %llu updated, %llu unchanged, %llu failed)  %.0f docs/s  %.0f tok/s %s ETA %s  %s%s",
		x->tty ? "\r\033[K" : "indexer: ", (unsigned long long)docs,
		(unsigned long long)x->c.added, (unsigned long long)x->c.updated,
		(unsigned long long)x->c.unchanged, (unsigned long long)x->c.failed,
		el > 0 ? docs / el : 0.0, el > 0 ? x->c.tokens / el : 0.0, pct, eta, stages,
		x->tty ? "" : "\n");
}

/* Prints a bad document's message and counts it. Returns 0 with --skip-bad, else -1 (the run
 * stops). Any thread. */
static int report_bad(pipeline *p, const char *msg)
{
	run *x = p->x;
	pthread_mutex_lock(&p->mu);
	fprintf(stderr, "%sindexer: %s%s\n", x->tty && !x->o->quiet ? "\r\033[K" : "", msg,
		x->o->skip_bad ? " (skipped)" : " (stopping; --skip-bad skips and counts bad records)");
	x->c.failed++;
	pthread_mutex_unlock(&p->mu);
	return x->o->skip_bad ? 0 : -1;
}

/* An error that stops the run (printed by the caller). With p->mu held. */
static void fail_locked(pipeline *p)
{
	p->status = -1;
	p->halt = 1;
}

/* The run stops: chunks from seq on are dropped. With p->mu held. */
static void keep_below_locked(pipeline *p, uint64_t seq)
{
	fail_locked(p);
	if (seq < p->keep_below)
		p->keep_below = seq;
	pthread_cond_broadcast(&p->cv);
}

/* Chunk c holds a bad document without --skip-bad: it is the last one kept. */
static void halt_after(pipeline *p, const chunk *c)
{
	pthread_mutex_lock(&p->mu);
	keep_below_locked(p, c->seq + 1);
	pthread_mutex_unlock(&p->mu);
}

static void add_busy(pipeline *p, int stage, double dt)
{
	pthread_mutex_lock(&p->mu);
	p->x->busy[stage] += dt;
	pthread_mutex_unlock(&p->mu);
}

/* ---- chunks ----------------------------------------------------------------------------*/

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
	store_packed_free(&d->packed);
	store_doc_view_free(&d->old);
	memset(d, 0, sizeof *d);
}

static void chunk_free(chunk *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n; i++)
		wdoc_free(&c->d[i]);
	free(c->d);
	free(c->refs);
	free(c->seqs);
	free(c->lens);
	free(c->out);
	free(c->batches);
	free(c);
}

/* Appends a document to chunk c, taking in (freed on failure). Returns the new entry, or
 * NULL after printing "out of memory". */
static wdoc *chunk_push(chunk *c, input_doc *in)
{
	if (c->n == c->cap) {
		int nc = c->cap ? c->cap * 2 : 64;
		wdoc *nd = realloc(c->d, (size_t)nc * sizeof *nd);
		if (!nd) {
			input_doc_free(in);
			fprintf(stderr, "indexer: out of memory\n");
			return NULL;
		}
		c->d = nd;
		c->cap = nc;
	}
	wdoc *d = &c->d[c->n++];
	memset(d, 0, sizeof *d);
	d->in = *in;
	memset(in, 0, sizeof *in);
	c->bytes += d->in.text_len + d->in.title_len + d->in.meta_len;
	return d;
}

/* ---- read ------------------------------------------------------------------------------*/

/* A bad record that was skipped (--skip-bad): when its id could be read, it joins the chunk
 * as "seen" so that --prune keeps what is stored under that id; when not, prune has no way to
 * tell its document from a removed one, and the run refuses to prune. Takes in. */
static int keep_seen(pipeline *p, chunk *c, input_doc *in, const char *msg)
{
	run *x = p->x;
	if (!in->id || !in->id_len || in->id_len > STORE_MAX_ID_BYTES) {
		if (in->id_len <= STORE_MAX_ID_BYTES && !x->c.unread_ids++)
			snprintf(x->first_unread, sizeof x->first_unread, "%s", msg);
		input_doc_free(in);
		return 0;
	}
	wdoc *d = chunk_push(c, in);
	if (!d)
		return -1;
	d->failed = -2;
	return 0;
}

/* Hands chunk c to the prep stage, first waiting (printing progress) while the chunks alive
 * are at the limit. */
static void send_chunk(pipeline *p, chunk *c)
{
	pthread_mutex_lock(&p->mu);
	while (p->live >= p->max_live) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&p->cv, &p->mu, &ts);
		progress_locked(p, 0);
	}
	p->live++;
	if (p->prep_tail)
		p->prep_tail->next = c;
	else
		p->prep_head = c;
	p->prep_tail = c;
	p->nprep++;
	pthread_cond_broadcast(&p->cv);
	progress_locked(p, 0); /* only the reading thread prints it: it reads x->in's counters */
	pthread_mutex_unlock(&p->mu);
}

/* The read stage, on the calling thread: returns 0, 1 (a signal), -1 (error printed). */
static int read_inputs(pipeline *p)
{
	run *x = p->x;
	opts *o = x->o;
	uint64_t seq = 0;
	chunk *c = NULL;
	int status = 0;
	for (;;) {
		pthread_mutex_lock(&p->mu);
		int halt = p->halt;
		pthread_mutex_unlock(&p->mu);
		if (halt)
			break;
		if (g_stop) {
			status = 1;
			break;
		}
		if (!c && !(c = calloc(1, sizeof *c))) {
			fprintf(stderr, "indexer: out of memory\n");
			status = -1;
			break;
		}
		c->seq = seq;
		double t = now_s();
		input_doc d;
		emb_err e = {0};
		int r = input_next(x->in, &d, &e);
		add_busy(p, ST_READ, now_s() - t);
		if (r == 0)
			break;
		p->docs_read++;
		if (o->nshards && (r > 0 || e.code == EMB_EFORMAT || e.code == EMB_EINVAL) && d.id && d.id_len &&
		    store_shard_of(d.id, d.id_len, o->nshards) != o->shard) {
			/* Another shard's document, good or bad: that shard's run reads it. */
			input_doc_free(&d);
			pthread_mutex_lock(&p->mu);
			x->c.other_shard++;
			pthread_mutex_unlock(&p->mu);
			continue;
		}
		if (r < 0) {
			if (e.code == EMB_EFORMAT || e.code == EMB_EINVAL) {
				if (report_bad(p, e.msg)) {
					c->fatal = 1;
					status = -1;
				} else if (keep_seen(p, c, &d, e.msg)) {
					status = -1;
				}
			} else if (e.code != EMB_EINTERRUPTED) {
				fprintf(stderr, "%sindexer: %s\n", x->tty && !o->quiet ? "\r\033[K" : "", e.msg);
				status = -1;
			}
			input_doc_free(&d); /* g_stop ends the loop after an interruption */
		} else if (d.id_len > STORE_MAX_ID_BYTES) {
			char msg[1200];
			snprintf(msg, sizeof msg, "%s: document id '%.60s...' is %zu bytes (max %d)", d.where,
				 d.id, d.id_len, STORE_MAX_ID_BYTES);
			input_doc_free(&d);
			if (report_bad(p, msg)) {
				c->fatal = 1;
				status = -1;
			}
		} else if (!chunk_push(c, &d)) {
			status = -1;
		}
		if (c->n >= o->window_docs || c->bytes >= CHUNK_MAX_BYTES || status) {
			/* Documents before a bad one are still committed (nothing is lost). */
			if (c->fatal)
				halt_after(p, c);
			send_chunk(p, c);
			c = NULL;
			seq++;
			if (status)
				break;
		}
	}
	if (c && c->n) {
		send_chunk(p, c);
	} else {
		free(c);
	}
	pthread_mutex_lock(&p->mu);
	if (status < 0)
		fail_locked(p);
	p->read_end = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return status;
}

/* ---- prep: classify, tokenize, batch -------------------------------------------------*/

static uint64_t id_hash(const char *id, size_t len)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a: ids are short */
	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)id[i]) * 1099511628211ull;
	return h ^ (h >> 29);
}

static idslot *idset_find(idset *s, uint64_t h, const char *id, size_t len)
{
	if (!s->cap)
		return NULL;
	for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		idslot *e = &s->t[i];
		if (e->seq == NONE)
			return e;
		if (e->h == h && e->len == len && !memcmp(e->id, id, len))
			return e;
	}
}

/* Rebuilds the table with the ids of chunks after `committed` (those before are in the
 * store now, marked seen), room for `more` new ones. Returns 0 or -1 (out of memory). */
static int idset_prune(idset *s, uint64_t committed, size_t more)
{
	size_t keep = 0;
	for (size_t i = 0; i < s->cap; i++)
		keep += s->t[i].seq != NONE && s->t[i].seq >= committed;
	size_t cap = 1024;
	while (cap < 2 * (keep + more))
		cap *= 2;
	idslot *t = malloc(cap * sizeof *t);
	if (!t)
		return -1;
	for (size_t i = 0; i < cap; i++)
		t[i].seq = NONE;
	idset old = *s;
	*s = (idset){t, cap, 0};
	for (size_t i = 0; i < old.cap; i++) {
		idslot *e = &old.t[i];
		if (e->seq == NONE)
			continue;
		if (e->seq >= committed) {
			*idset_find(s, e->h, e->id, e->len) = *e;
			s->n++;
		} else {
			free(e->id);
		}
	}
	free(old.t);
	return 0;
}

static void idset_free(idset *s)
{
	for (size_t i = 0; i < s->cap; i++)
		if (s->t[i].seq != NONE)
			free(s->t[i].id);
	free(s->t);
}

static int only_space(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!(s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' || s[i] == '\v'))
			return 0;
	return 1;
}

static int classify_docs(pipeline *p, chunk *c, store_snapshot *snap, idset *ids, int *at);

/* Classifies the documents of c: bad (reported), duplicate (dropped: failed -3), unchanged
 * (seen only: failed -1) or to embed (etext and hash set). snap is a snapshot taken after
 * every chunk before `ids` holds was committed. Returns 0, or -1 after printing an error that
 * stops the run (c->fatal set; the documents after the one that stopped it are dropped, as
 * a run that stops there never reads them). */
static int classify(pipeline *p, chunk *c, store_snapshot *snap, idset *ids)
{
	int at = 0;
	if (classify_docs(p, c, snap, ids, &at) == 0)
		return 0;
	for (int i = at + 1; i < c->n; i++)
		if (c->d[i].failed == 0)
			c->d[i].failed = -3;
	return -1;
}

static int classify_docs(pipeline *p, chunk *c, store_snapshot *snap, idset *ids, int *at)
{
	run *x = p->x;
	char msg[1200];
	for (int i = 0; i < c->n; i++) {
		wdoc *d = &c->d[i];
		input_doc *in = &d->in;
		*at = i;
		uint64_t h = id_hash(in->id, in->id_len);
		idslot *slot = idset_find(ids, h, in->id, in->id_len);
		int dup = slot->seq != NONE;
		if (d->failed == -2) { /* a bad record kept as seen: the id is taken */
			if (!dup) {
				*slot = (idslot){h, c->seq, strndup(in->id, in->id_len), in->id_len};
				ids->n += slot->id != NULL;
				if (!slot->id)
					slot->seq = NONE;
			}
			continue;
		}
		int exists = 0, seen = 0;
		uint8_t old[STORE_HASH_BYTES];
		emb_err e = {0};
		if (!dup && store_lookup(snap, in->id, in->id_len, &exists, old, &seen, &e)) {
			fprintf(stderr, "indexer: %s\n", e.msg);
			d->failed = -3;
			c->fatal = 1;
			return -1;
		}
		if (dup || seen) {
			snprintf(msg, sizeof msg, "%s: duplicate id '%s' (already indexed in this run)", in->where, in->id);
			d->failed = -3;
			if (report_bad(p, msg)) {
				c->fatal = 1;
				return -1;
			}
			continue;
		}
		*slot = (idslot){h, c->seq, strndup(in->id, in->id_len), in->id_len};
		if (!slot->id) {
			slot->seq = NONE;
			fprintf(stderr, "indexer: out of memory\n");
			c->fatal = 1;
			return -1;
		}
		ids->n++;
		/* Nothing to embed but [CLS] [SEP], as sentence-transformers does: counted, not refused. */
		if (only_space(in->text, in->text_len) &&
		    (x->o->no_title || !in->title || only_space(in->title, in->title_len))) {
			pthread_mutex_lock(&p->mu);
			x->c.empty++;
			pthread_mutex_unlock(&p->mu);
		}
		const void *parts[] = {x->config, in->title ? in->title : "", in->text, in->meta ? in->meta : ""};
		size_t lens[] = {strlen(x->config), in->title_len, in->text_len, in->meta_len};
		store_hash(parts, lens, 4, d->hash);
		if (exists && memcmp(old, d->hash, sizeof old) == 0) {
			d->failed = -1; /* unchanged: mark seen, don't embed */
			continue;
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
			c->fatal = 1;
			return -1;
		}
	}
	return 0;
}

typedef struct tok_job {
	run *x;
	chunk *c;
} tok_job;

/* The store's document as a PUT gives it; d->vecs and d->range are not read until commit. */
static store_doc doc_for_put(const wdoc *d)
{
	const input_doc *in = &d->in;
	store_doc sd = {.id = in->id, .id_len = in->id_len};
	sd.title = in->title ? in->title : "";
	sd.title_len = in->title_len;
	sd.text = in->text;
	sd.text_len = in->text_len;
	sd.meta = in->meta ? in->meta : "";
	sd.meta_len = in->meta_len;
	memcpy(sd.hash, d->hash, sizeof sd.hash);
	sd.nwin = d->nwin;
	sd.vecs = d->vecs;
	sd.win_range = d->range;
	return sd;
}

/* Tokenizes a document and compresses its text for the store (zstd is most of a PUT's
 * cost: here it runs on every core instead of on the writer's one). */
static void tokenize_task(void *arg, int i)
{
	tok_job *j = arg;
	wdoc *d = &j->c->d[i];
	if (d->failed)
		return;
	window_doc(&j->x->wc, d);
	if (d->failed)
		return;
	store_doc sd = doc_for_put(d);
	if (store_doc_pack(&sd, &d->packed, NULL))
		d->packed = (store_packed){0}; /* the writer compresses it (and reports any error) */
}

static int cmp_seq_len(const void *a, const void *b)
{
	const seqref *x = a, *y = b;
	return y->len - x->len;
}

/* Lays out c's windows longest first and cuts them into batches of the engines' capacity.
 * Returns 0 or -1 (out of memory, printed). */
static int make_batches(pipeline *p, chunk *c)
{
	const int dim = p->x->wc.dim, max_tokens = p->x->wc.max_tokens;
	size_t nseq = 0;
	for (int i = 0; i < c->n; i++)
		if (c->d[i].failed == 0)
			nseq += (size_t)c->d[i].nwin;
	c->nseq = nseq;
	if (!nseq)
		return 0;
	c->refs = malloc(nseq * sizeof *c->refs);
	c->seqs = malloc(nseq * sizeof *c->seqs);
	c->lens = malloc(nseq * sizeof *c->lens);
	c->out = malloc(nseq * (size_t)dim * sizeof *c->out);
	c->batches = malloc(nseq * sizeof *c->batches);
	if (!c->refs || !c->seqs || !c->lens || !c->out || !c->batches) {
		fprintf(stderr, "indexer: out of memory\n");
		return -1;
	}
	size_t k = 0;
	for (int i = 0; i < c->n; i++) {
		wdoc *d = &c->d[i];
		if (d->failed == 0)
			for (int w = 0; w < d->nwin; w++)
				c->refs[k++] = (seqref){d, w, d->seqlen[w]};
	}
	/* Similar lengths together: the attention tiles of a batch then do little padding. */
	qsort(c->refs, nseq, sizeof *c->refs, cmp_seq_len);
	for (size_t i = 0; i < nseq; i++) {
		c->seqs[i] = c->refs[i].d->seqs + (size_t)c->refs[i].w * max_tokens;
		c->lens[i] = c->refs[i].len;
	}
	for (size_t i = 0; i < nseq;) {
		size_t j = (size_t)embed_batch_end(c->lens, (int)nseq, (int)i, (size_t)p->batch_tokens);
		if (j - i > (size_t)p->batch_seqs)
			j = i + (size_t)p->batch_seqs;
		batch *b = &c->batches[c->nbatches++];
		*b = (batch){.c = c, .first = (int)i, .n = (int)(j - i)};
		for (size_t q = i; q < j; q++)
			b->tokens += (size_t)c->lens[q];
		i = j;
	}
	c->pending = c->nbatches;
	return 0;
}

/* Puts a chunk whose batches are all back (or that had none) before the writer. With p->mu. */
static void chunk_embedded_locked(pipeline *p, chunk *c)
{
	c->next = p->done;
	p->done = c;
	p->ndone++;
	pthread_cond_broadcast(&p->cv);
}

static void *prep_thread(void *arg)
{
	pipeline *p = arg;
	run *x = p->x;
	idset ids = {0};
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (!p->prep_head && !p->read_end)
			pthread_cond_wait(&p->cv, &p->mu);
		chunk *c = p->prep_head;
		if (!c) {
			p->prep_end = 1;
			pthread_cond_broadcast(&p->cv);
			pthread_mutex_unlock(&p->mu);
			break;
		}
		p->prep_head = c->next;
		if (!p->prep_head)
			p->prep_tail = NULL;
		p->nprep--;
		c->next = NULL;
		int drop = c->seq >= p->keep_below;
		uint64_t committed = p->committed;
		if (drop) {
			p->live--;
			pthread_cond_broadcast(&p->cv);
		}
		pthread_mutex_unlock(&p->mu);
		if (drop) {
			chunk_free(c);
			continue;
		}
		double t = now_s();
		/* A snapshot begun after reading `committed` holds every chunk before it. */
		store_snapshot *snap = NULL;
		emb_err e = {0};
		int bad = 0;
		if (idset_prune(&ids, committed, (size_t)c->n)) {
			fprintf(stderr, "indexer: out of memory\n");
			bad = 1;
		} else if (store_snapshot_begin(x->st, &snap, &e)) {
			fprintf(stderr, "indexer: %s\n", e.msg);
			bad = 1;
		}
		if (bad)
			c->failed = 1; /* nothing of it can be classified: nothing is kept */
		else
			classify(p, c, snap, &ids);
		store_snapshot_end(snap);
		tok_job j = {x, c};
		threadpool_run(x->pool, tokenize_task, &j, c->n);
		for (int i = 0; i < c->n; i++) {
			wdoc *d = &c->d[i];
			if (d->failed <= 0)
				continue;
			char msg[1200];
			snprintf(msg, sizeof msg, "%s: document '%s': %s", d->in.where, d->in.id, d->err.msg);
			if (report_bad(p, msg))
				c->fatal = 1;
			d->failed = -2; /* seen, so --prune keeps what is stored under this id */
		}
		if (!c->failed && make_batches(p, c))
			c->failed = 1;
		if (c->fatal)
			halt_after(p, c);
		add_busy(p, ST_PREP, now_s() - t);
		pthread_mutex_lock(&p->mu);
		if (c->failed)
			keep_below_locked(p, c->seq);
		if (c->nbatches && !c->failed) {
			for (int b = 0; b < c->nbatches; b++) {
				batch *q = &c->batches[b];
				q->next = NULL;
				if (p->gq_tail)
					p->gq_tail->next = q;
				else
					p->gq_head = q;
				p->gq_tail = q;
				p->ngq++;
			}
			pthread_cond_broadcast(&p->cv);
		} else {
			chunk_embedded_locked(p, c);
		}
		pthread_mutex_unlock(&p->mu);
	}
	idset_free(&ids);
	return NULL;
}

/* ---- embed -----------------------------------------------------------------------------*/

typedef struct engine {
	pipeline *p;
	embed_model *m;
	int index;
} engine;

/* Takes batch b back from the engine (rc its result; e NULL: not run, as its chunk is
 * dropped) and copies its vectors to the windows. */
static void batch_done(pipeline *p, batch *b, int rc, const emb_err *e)
{
	chunk *c = b->c;
	const int dim = p->x->wc.dim;
	if (!rc)
		for (int q = b->first; q < b->first + b->n; q++)
			memcpy(c->refs[q].d->vecs + (size_t)c->refs[q].w * dim, c->out + (size_t)q * dim,
			       (size_t)dim * sizeof *c->out);
	pthread_mutex_lock(&p->mu);
	if (rc) {
		if (!c->failed && e)
			fprintf(stderr, "%sindexer: embedding failed: %s\n",
				p->x->tty && !p->x->o->quiet ? "\r\033[K" : "", e->msg);
		c->failed = 1;
		keep_below_locked(p, c->seq);
	} else {
		p->x->c.tokens += b->tokens;
		p->x->c.windows += (uint64_t)b->n;
	}
	if (--c->pending == 0)
		chunk_embedded_locked(p, c);
	pthread_mutex_unlock(&p->mu);
}

/* Engine i starts (busy 1) or ends (0) a spell with batches in flight. */
static void busy_spell(pipeline *p, int i, int busy)
{
	double t = now_s();
	pthread_mutex_lock(&p->mu);
	if (busy) {
		p->busy_since[i] = t;
	} else {
		p->x->gpu_busy += t - p->busy_since[i];
		p->busy_since[i] = 0;
	}
	pthread_mutex_unlock(&p->mu);
}

static void *engine_thread(void *arg)
{
	engine *g = arg;
	pipeline *p = g->p;
	batch *fl[2];
	int nfl = 0;
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (!p->gq_head && !p->prep_end && nfl == 0)
			pthread_cond_wait(&p->cv, &p->mu);
		batch *b = p->gq_head;
		if (b) {
			p->gq_head = b->next;
			if (!p->gq_head)
				p->gq_tail = NULL;
			p->ngq--;
		}
		/* A batch of a chunk that will not be kept is not worth the device's time. */
		int skip = b && (b->c->failed || b->c->seq >= p->keep_below);
		pthread_mutex_unlock(&p->mu);
		if (!b && !nfl)
			break;
		emb_err e = {0};
		if (b && skip) {
			batch_done(p, b, EMB_EINTERRUPTED, NULL);
			continue;
		}
		if (!b || nfl == 2) { /* the oldest comes back first */
			double t = now_s();
			int rc = embed_wait(g->m, &e);
			add_busy(p, ST_EMBED, now_s() - t);
			batch_done(p, fl[0], rc, &e);
			fl[0] = fl[1];
			if (--nfl == 0)
				busy_spell(p, g->index, 0);
		}
		if (!b)
			continue;
		double t = now_s();
		if (nfl == 0)
			busy_spell(p, g->index, 1);
		int rc = embed_submit_tokens(g->m, (const int32_t *const *)b->c->seqs + b->first,
					     b->c->lens + b->first, b->n, b->c->out + (size_t)b->first * p->x->wc.dim, &e);
		add_busy(p, ST_EMBED, now_s() - t);
		if (rc) {
			batch_done(p, b, rc, &e);
			if (nfl == 0)
				busy_spell(p, g->index, 0);
			continue;
		}
		fl[nfl++] = b;
	}
	return NULL;
}

/* ---- store -----------------------------------------------------------------------------*/

/* --rebuild: a bad record (skipped, its id readable) must not drop the document the live
 * store holds under that id, as a rebuild that only skipped it would: its stored version
 * (text, vectors, content hash) goes into the fresh store as it was. Returns 1 when d now
 * carries that version, 0 when the live store has none, -1 after printing an error. */
static int carry_over(run *x, store_snapshot *live, wdoc *d)
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

/* Commits chunks cs[0..*n) (consecutive, in input order) in one transaction. Returns 0, or
 * -1 after printing an error (nothing of them is then stored). A document whose vectors are
 * not finite is bad (reported); without --skip-bad its chunk is the last one kept, and *n
 * shrinks to end there (the caller drops the rest). */
static int commit_chunks(pipeline *p, chunk **cs, int *n)
{
	run *x = p->x;
	size_t ndocs = 0;
	/* A model with broken weights gives NaN or infinite vectors: such a document is bad (kept
	 * as seen, like any other), never stored where it would rank as garbage. */
	for (int k = 0; k < *n; k++) {
		chunk *c = cs[k];
		for (int i = 0; i < c->n; i++) {
			wdoc *d = &c->d[i];
			if (d->failed != 0)
				continue;
			size_t nv = (size_t)d->nwin * (size_t)x->wc.dim, j = 0;
			while (j < nv && isfinite(d->vecs[j]))
				j++;
			if (j == nv)
				continue;
			char msg[1200];
			snprintf(msg, sizeof msg, "%s: document '%s': the model gave a non-finite vector (window %zu of %d)",
				 d->in.where, d->in.id, j / (size_t)x->wc.dim + 1, d->nwin);
			if (report_bad(p, msg)) {
				c->fatal = 1;
				halt_after(p, c);
			}
			d->failed = -2;
		}
		ndocs += (size_t)c->n;
		if (c->fatal) {
			*n = k + 1;
			break;
		}
	}
	store_op *ops = malloc((ndocs ? ndocs : 1) * sizeof *ops);
	if (!ops) {
		fprintf(stderr, "indexer: out of memory\n");
		return -1;
	}
	store_snapshot *live = NULL;
	emb_err e = {0};
	if (x->live && store_snapshot_begin(x->live, &live, &e)) {
		fprintf(stderr, "indexer: %s\n", e.msg);
		free(ops);
		return -1;
	}
	int nops = 0, unchanged = 0;
	for (int k = 0; k < *n; k++)
	for (int i = 0; i < cs[k]->n; i++) {
		wdoc *d = &cs[k]->d[i];
		if (d->failed == -3)
			continue; /* a duplicate, or not reached before the run stopped */
		store_doc sd = {.id = d->in.id, .id_len = d->in.id_len};
		int carried = 0;
		if (d->failed == -2 && live) {
			pthread_mutex_lock(&p->mu); /* carry_over counts */
			carried = carry_over(x, live, d);
			pthread_mutex_unlock(&p->mu);
			if (carried < 0) {
				store_snapshot_end(live);
				free(ops);
				return -1;
			}
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
			unchanged += d->failed == -1;
			ops[nops++] = (store_op){STORE_OP_SEEN, sd};
			continue;
		}
		sd = doc_for_put(d);
		sd.packed = d->packed.buf ? &d->packed : NULL;
		ops[nops++] = (store_op){STORE_OP_PUT, sd};
	}
	store_snapshot_end(live);
	store_apply_result r;
	int rc = store_apply(x->st, ops, nops, &r, &e);
	free(ops);
	if (rc) {
		fprintf(stderr, "%sindexer: %s\n", x->tty && !x->o->quiet ? "\r\033[K" : "", e.msg);
		return -1;
	}
	pthread_mutex_lock(&p->mu);
	x->c.added += r.added;
	x->c.updated += r.updated;
	x->c.unchanged += (uint64_t)unchanged;
	pthread_mutex_unlock(&p->mu);
	return 0;
}

/* Takes chunk `seq` out of the done list (NULL when it is not there). With p->mu. */
static chunk *take_done_locked(pipeline *p, uint64_t seq)
{
	for (chunk **pc = &p->done; *pc; pc = &(*pc)->next)
		if ((*pc)->seq == seq) {
			chunk *c = *pc;
			*pc = c->next;
			p->ndone--;
			return c;
		}
	return NULL;
}

/* The store stage. Commits go in input order; when the next chunks are already waiting (the
 * writer is the slowest stage), up to GROUP_CHUNKS of them share one transaction: with ids
 * in no order every document rewrites a leaf page of each id-keyed table, and a larger
 * transaction rewrites each page once for all the documents it holds (docs/bench-index.md,
 * "Store writer"). But LMDB holds a transaction's dirty pages in memory, and the same
 * documents dirty more pages the larger the store: a group stays within TXN_DIRTY_BYTES
 * by store_txn_pages_estimate, which keeps the writer's memory flat in the store's size
 * (at 1M documents four chunks would dirty ~130 MB, at 100k ~55). */
#define GROUP_CHUNKS 4
#define TXN_DIRTY_BYTES ((uint64_t)96 << 20)
static void *store_thread(void *arg)
{
	pipeline *p = arg;
	uint64_t next = 0; /* the chunk to commit next: commits go in input order */
	for (;;) {
		const uint64_t room = store_txn_docs_within(p->x->st, TXN_DIRTY_BYTES);
		pthread_mutex_lock(&p->mu);
		chunk *cs[GROUP_CHUNKS];
		int n = 0;
		for (;;) {
			/* the next chunk, or any chunk that is dropped anyway */
			chunk **pc = &p->done;
			while (*pc && (*pc)->seq != next && (*pc)->seq < p->keep_below)
				pc = &(*pc)->next;
			if (*pc) {
				cs[n++] = *pc;
				*pc = cs[0]->next;
				p->ndone--;
				break;
			}
			if (p->prep_end && p->live == 0)
				break;
			pthread_cond_wait(&p->cv, &p->mu);
		}
		int drop = n && (cs[0]->failed || cs[0]->seq >= p->keep_below);
		uint64_t docs = n ? (uint64_t)cs[0]->n : 0;
		/* the chunks after it that are ready too, up to a fatal or failed one */
		while (n && !drop && n < GROUP_CHUNKS && !cs[n - 1]->fatal &&
		       cs[n - 1]->seq + 1 < p->keep_below) {
			chunk *c = take_done_locked(p, cs[n - 1]->seq + 1);
			if (!c)
				break;
			if (c->failed || docs + (uint64_t)c->n > room) {
				/* back to the list: committed (or dropped) on its own, or first in the
				 * next transaction */
				c->next = p->done;
				p->done = c;
				p->ndone++;
				break;
			}
			cs[n++] = c;
			docs += (uint64_t)c->n;
		}
		pthread_mutex_unlock(&p->mu);
		if (!n)
			break;
		double t = now_s();
		int kept = n;
		int rc = drop ? 0 : commit_chunks(p, cs, &kept);
		add_busy(p, ST_STORE, now_s() - t);
		pthread_mutex_lock(&p->mu);
		if (rc)
			keep_below_locked(p, cs[0]->seq);
		for (int k = 0; k < n; k++) {
			if (cs[k]->seq == next)
				p->committed = ++next;
			p->live--;
		}
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
		for (int k = 0; k < n; k++)
			chunk_free(cs[k]);
	}
	return NULL;
}

/* ---- the run ---------------------------------------------------------------------------*/

int pipeline_run(run *x)
{
	opts *o = x->o;
	emb_err e = {0};
	if (input_open(o->inputs, o->ninputs, &o->in, &x->in, &e)) {
		fprintf(stderr, "indexer: %s\n", e.msg);
		return -1;
	}
	pipeline p = {.x = x, .keep_below = NONE, .max_live = o->queue_chunks};
	pthread_mutex_init(&p.mu, NULL);
	pthread_cond_init(&p.cv, NULL);
	embed_batch_capacity(x->m[0], &p.batch_tokens, &p.batch_seqs);
	if (o->batch_tokens)
		p.batch_tokens = o->batch_tokens;
	p.last_t = p.last_progress = x->t_start = now_s();

	pthread_t prep, writer, *eng = calloc((size_t)x->nm, sizeof *eng);
	engine *g = calloc((size_t)x->nm, sizeof *g);
	p.busy_since = calloc((size_t)x->nm, sizeof *p.busy_since);
	if (!eng || !g || !p.busy_since) {
		fprintf(stderr, "indexer: out of memory\n");
		free(eng);
		free(g);
		free(p.busy_since);
		return -1;
	}
	int started = 0;
	if (pthread_create(&prep, NULL, prep_thread, &p) == 0)
		started++;
	if (started == 1 && pthread_create(&writer, NULL, store_thread, &p) == 0)
		started++;
	for (int i = 0; started >= 2 && i < x->nm; i++) {
		g[i] = (engine){&p, x->m[i], i};
		if (pthread_create(&eng[i], NULL, engine_thread, &g[i]) == 0)
			started++;
		else
			break;
	}
	int status;
	if (started < 2 + x->nm) {
		fprintf(stderr, "indexer: cannot start the pipeline's threads\n");
		pthread_mutex_lock(&p.mu);
		fail_locked(&p);
		p.read_end = 1; /* the started stages see nothing to do and end */
		pthread_cond_broadcast(&p.cv);
		pthread_mutex_unlock(&p.mu);
		status = -1;
	} else {
		status = read_inputs(&p);
	}
	/* Wait for the stages to drain, printing progress. */
	pthread_mutex_lock(&p.mu);
	while (!(p.prep_end && p.live == 0) && started >= 2) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&p.cv, &p.mu, &ts);
		progress_locked(&p, 0);
	}
	pthread_mutex_unlock(&p.mu);
	if (started >= 1)
		pthread_join(prep, NULL);
	if (started >= 2)
		pthread_join(writer, NULL);
	for (int i = 0; i < started - 2; i++)
		pthread_join(eng[i], NULL);
	pthread_mutex_lock(&p.mu);
	progress_locked(&p, 1);
	pthread_mutex_unlock(&p.mu);
	if (x->tty && !o->quiet)
		fprintf(stderr, "\r\033[K");
	free(eng);
	free(g);
	free(p.busy_since);
	pthread_cond_destroy(&p.cv);
	pthread_mutex_destroy(&p.mu);
	if (p.status < 0)
		status = -1;
	if (status == 0 && g_stop)
		status = 1;
	return status;
}
