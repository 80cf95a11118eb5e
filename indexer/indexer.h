/* indexer.h — what the indexer's files share: the options, a document of the window in
 * flight, and how documents are cut into token windows.
 *
 *   options.c   the command line (parse_args, usage) and the model directory (find_model)
 *   window.c    windowing: tokens, windows, id sequences, byte ranges (window_setup, window_doc)
 *   check.c     --check (check_store)
 *   main.c      the run: reading, classifying, batching, embedding, storing, progress, summary
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
	char **inputs;
	int ninputs;
	char **deletes;
	int ndeletes;
	int prune, rebuild, skip_bad, quiet, check, truncate, no_title;
	int window, stride, threads, batch_tokens, window_docs;
	embed_device device;
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

#endif
