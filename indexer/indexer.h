/* indexer.h — what the indexer's files share: the options, a document of the window in
 * flight, and how documents are cut into token windows.
 *
 *   options.c   the command line (parse_args, usage) and the model directory (find_model)
 *   window.c    windowing: tokens, windows, id sequences, byte ranges (window_setup, window_doc)
 *   check.c     --check (check_store), --info (info_store)
 *   pipeline.c  the run's stages on their threads: read, classify + tokenize, embed, store
 *   main.c      set-up (lock, model, store), deletes, prune, the summary
 */
#ifndef INDEXER_H
#define INDEXER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "embed.h"
#include "input.h"
#include "store.h"

/* The signal that asked the run to stop (0: none); input reading polls it too. */
extern volatile sig_atomic_t g_stop;

typedef struct opts {
	const char *store, *model;
	const char *vectors;  /* --vectors f32|int8|binary, or NULL: keep the store's (new: f32) */
	const char *reranker; /* --reranker DIR: the store's default cross-encoder ("" forgets
			       * it); NULL: keep the store's (a rebuild: the live store's) */
	char **inputs;
	int ninputs;
	char **deletes;
	int ndeletes;
	int prune, rebuild, skip_bad, quiet, check, info, truncate, no_title;
	int window, stride, threads, batch_tokens, window_docs, queue_chunks;
	int shard, nshards;   /* --shard I/N: only ids with store_shard_of(id, N) == I (nshards 0: all) */
	int *gpus, ngpus;     /* --gpu all|LIST: one engine per listed device (ngpus 0: --device) */
	int gpus_all;         /* --gpu all: every device that is not a CPU implementation */
	embed_device device;
	embed_precision precision; /* --precision; bf16 / int8 run on the CPU */
	double progress_every;
	input_opts in;
} opts;

/* Parses the command line into *o (o->in.stop points at g_stop). Prints usage and exits 0
 * for --help; prints a one-line error and exits 2 for a bad or missing option. */
void parse_args(int argc, char **argv, opts *o);

/* Writes the model directory to use to out (NUL-terminated, at most cap bytes): --model,
 * $EMBED_MODEL, the store's (where it still exists), or the fetched default. */
void find_model(const opts *o, char *out, size_t cap);

/* --check: reads the whole store at path and verifies what store_check lists; prints one
 * line saying what was verified (stdout) or the first damage found (stderr). Returns the
 * exit status: 0 ok, 1 damaged or unreadable. */
int check_store(const char *path);

/* --info: prints what the store at path is as one JSON line on stdout: {"store": its
 * directory, "model": {name, sha256, dim, pooling, normalized, needs_prefix, max_tokens},
 * "shard": [I, N] or null, "docs", "rows", "vectors": f32|int8|binary, "file_bytes"}.
 * Returns the exit status: 0, or 1 (unreadable, no model yet: message on stderr). */
int info_store(const char *path);

/* One document of the window in flight. */
typedef struct wdoc {
	input_doc in;
	char *etext;          /* what is embedded: title + " " + text, or text */
	size_t elen, text_off;/* text starts at etext + text_off */
	uint8_t hash[STORE_HASH_BYTES];
	int32_t *ids;         /* [CLS] content... [SEP] of the whole etext */
	long nids;
	int nwin;
	uint32_t *win;        /* nwin * 2: content-token range [a, b) */
	uint32_t *range;      /* nwin * 2: byte range in text */
	int32_t *seqs;        /* nwin sequences of up to max_tokens ids */
	int *seqlen;
	float *vecs;
	store_packed packed;  /* its "docs" value, compressed by the prep stage's threads */
	store_doc_view old;   /* --rebuild, a bad record: the live store's version, kept */
	emb_err err;
	int failed;           /* 0 embed; -1 unchanged; -2 bad (reported); > 0 error code */
} wdoc;

/* How documents are cut into windows: set once by window_setup, then read-only (shared by
 * the tokenizing threads). */
typedef struct window_cfg {
	const embed_model *m;
	int truncate;         /* one window per document: the first */
	int dim, max_tokens;  /* the model's vector size and sequence length */
	int win_tokens;       /* tokens per window, specials and prefix included */
	int win_content;      /* text tokens per window */
	int stride;           /* text tokens between window starts */
	int32_t prefix_ids[32]; /* the passage prefix's tokens (E5), after [CLS] in every window */
	int nprefix;
} window_cfg;

/* Fills *c for model m, --window (0: the model's length), --stride (0: window's text tokens
 * less 32, or half of them when that is 64 or fewer) and --truncate. Returns 0, or -1 when
 * the window leaves fewer than 4 tokens for text. */
int window_setup(window_cfg *c, const embed_model *m, int window, int stride, int truncate);

/* Tokenizes d->etext and fills d's ids, nids, nwin, win, range, seqs, seqlen and vecs
 * (allocated, not yet computed): windows of c->win_content text tokens every c->stride,
 * the last aligned to the end (one when c->truncate), each window's byte range in d's text
 * running from the start of the whitespace-delimited word holding its first token to that
 * of the word holding the first token after it (the text's end for the last). On failure
 * sets d->failed to the error code and d->err (invalid UTF-8, out of memory). Safe to call
 * from several threads on different documents. */
void window_doc(const window_cfg *c, wdoc *d);

/* What a run counts; the pipeline's stages update it under its lock. */
typedef struct counts {
	uint64_t added, updated, unchanged, deleted, failed;
	uint64_t empty;       /* documents with nothing to embed but [CLS] [SEP] */
	uint64_t unread_ids;  /* bad records skipped without a readable id */
	uint64_t carried;     /* --rebuild: bad records whose stored version was kept */
	uint64_t uncarried;   /* --rebuild: ... whose stored version could not be (another model) */
	uint64_t tokens, windows;
	uint64_t other_shard; /* --shard: documents (and --delete ids) of other shards, passed over */
} counts;

/* The pipeline's stages, for busy times and the progress line. */
enum { ST_READ, ST_PREP, ST_EMBED, ST_STORE, NSTAGES };

/* One run of the indexer: what main sets up and the pipeline uses. */
typedef struct run {
	opts *o;
	embed_model **m;      /* nm engines; m[0] also tokenizes */
	int nm;
	store *st;
	store *live;          /* --rebuild: the store being replaced, read-only */
	int live_same_model;  /* its vectors were made by the model in use */
	threadpool *pool;     /* the tokenizing threads */
	window_cfg wc;
	char config[128];     /* part of the content hash: re-embed when the recipe changes */
	counts c;
	double busy[NSTAGES]; /* seconds each stage worked (the embed stage: summed over engines) */
	double gpu_busy;      /* seconds some batch was on an engine, summed over engines */
	double t0, t_start;   /* process start; pipeline start (after the model and store opened) */
	input *in;
	int tty;
	char first_unread[512]; /* the first bad record without a readable id, for --prune */
} run;

/* Reads every input through the pipeline and commits it to x->st. Returns 0, 1 when a
 * signal stopped reading (everything read was still committed), or -1 after printing an
 * error (a bad document without --skip-bad, a read, embedding or store error: what was
 * committed before stays, and documents read after a bad one are dropped). */
int pipeline_run(run *x);

#endif
