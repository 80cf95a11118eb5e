/* window.c — cuts a document into the token windows the indexer embeds: tokenizes the
 * text once (with each token's byte offsets), lays out windows of the model's length (or
 * --window) every --stride tokens with the last one aligned to the end, builds each
 * window's id sequence ([CLS] prefix content [SEP]) and the byte range of the text it came
 * from, for snippets.
 */
#include <stdlib.h>
#include <string.h>

#include "indexer.h"

int window_setup(window_cfg *c, const embed_model *m, int window, int stride, int truncate)
{
	memset(c, 0, sizeof *c);
	c->m = m;
	c->truncate = truncate;
	c->dim = embed_dim(m);
	c->max_tokens = embed_max_tokens(m);
	c->win_tokens = window ? (window < c->max_tokens ? window : c->max_tokens) : c->max_tokens;
	if (embed_needs_prefix(m)) {
		int32_t ids[40];
		long n = embed_tokenize(m, "", 0, EMBED_PREFIX_PASSAGE, ids, 40, NULL);
		c->nprefix = n > 2 ? (int)n - 2 : 0;
		if (c->nprefix > 30)
			c->nprefix = 30;
		memcpy(c->prefix_ids, ids + 1, (size_t)c->nprefix * sizeof *ids);
	}
	c->win_content = c->win_tokens - 2 - c->nprefix;
	if (c->win_content < 4)
		return -1;
	c->stride = stride ? stride : (c->win_content > 64 ? c->win_content - 32 : c->win_content / 2);
	if (c->stride > c->win_content)
		c->stride = c->win_content;
	return 0;
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Where the whitespace-delimited word holding byte i of s starts. */
static size_t word_start(const char *s, size_t i)
{
	while (i > 0 && !is_space(s[i - 1]))
		i--;
	return i;
}

void window_doc(const window_cfg *c, wdoc *d)
{
	/* Every id covers at least one byte, so elen + 2 holds the whole text; truncation needs
	 * only the first window, and the tokenizer stops early when told so. */
	size_t cap = d->elen + 2;
	if (c->truncate && cap > (size_t)c->win_content + 2)
		cap = (size_t)c->win_content + 2;
	d->ids = malloc(cap * sizeof *d->ids);
	/* Where each token came from, for the windows' byte ranges: one truncated window is
	 * the whole text, so only windowing needs them. */
	size_t *off = c->truncate ? NULL : malloc(2 * cap * sizeof *off);
	if (!d->ids || (!c->truncate && !off)) {
		free(off);
		d->failed = emb_errf(&d->err, EMB_ENOMEM, "out of memory");
		return;
	}
	long n = embed_tokenize_offsets(c->m, d->etext, d->elen, EMBED_PREFIX_NONE, d->ids, off,
					cap, &d->err);
	if (n < 0) {
		free(off);
		d->failed = d->err.code ? d->err.code : EMB_EINVAL;
		return;
	}
	d->nids = n;
	long T = n - 2; /* content tokens */
	const int32_t *content = d->ids + 1;
	int W = c->win_content, S = c->stride;
	/* Window starts: 0, S, 2S, ... and a last one aligned to the end. */
	int nwin = 1;
	if (!c->truncate && T > W)
		nwin = 1 + (int)((T - W + S - 1) / S);
	d->nwin = nwin;
	d->win = malloc((size_t)nwin * 2 * sizeof *d->win);
	d->range = malloc((size_t)nwin * 2 * sizeof *d->range);
	d->seqs = malloc((size_t)nwin * (size_t)c->max_tokens * sizeof *d->seqs);
	d->seqlen = malloc((size_t)nwin * sizeof *d->seqlen);
	d->vecs = malloc((size_t)nwin * (size_t)c->dim * sizeof *d->vecs);
	if (!d->win || !d->range || !d->seqs || !d->seqlen || !d->vecs) {
		free(off);
		d->failed = emb_errf(&d->err, EMB_ENOMEM, "out of memory");
		return;
	}
	for (int w = 0; w < nwin; w++) {
		long a = (long)w * S;
		if (a + W > T)
			a = T > W ? T - W : 0;
		long b = a + W < T ? a + W : T;
		d->win[2 * w] = (uint32_t)a;
		d->win[2 * w + 1] = (uint32_t)b;
		int32_t *q = d->seqs + (size_t)w * c->max_tokens;
		int L = 0;
		q[L++] = d->ids[0];
		for (int p = 0; p < c->nprefix; p++)
			q[L++] = c->prefix_ids[p];
		memcpy(q + L, content + a, (size_t)(b - a) * sizeof *q);
		L += (int)(b - a);
		q[L++] = d->ids[n - 1];
		d->seqlen[w] = L;
	}
	/* Byte ranges of the windows in the text (for snippets): from the start of the
	 * whitespace-delimited word holding a window's first token to that of the word holding
	 * the first token after it, so a snippet never begins inside a word. */
	size_t tl = d->in.text_len;
	if (nwin == 1) {
		d->range[0] = 0;
		d->range[1] = (uint32_t)tl;
	} else {
		for (int w = 0; w < nwin; w++) {
			long a = d->win[2 * w], b = d->win[2 * w + 1];
			size_t sa = word_start(d->etext, off[2 * (1 + a)]);
			size_t sb = b < T ? word_start(d->etext, off[2 * (1 + b)]) : d->elen;
			sa = sa > d->text_off ? sa - d->text_off : 0;
			sb = sb > d->text_off ? sb - d->text_off : 0;
			if (sb > tl)
				sb = tl;
			if (sa > sb)
				sa = sb;
			d->range[2 * w] = (uint32_t)sa;
			d->range[2 * w + 1] = (uint32_t)sb;
		}
	}
	free(off);
}
