/* rerank.c — cross-encoders (rerank.h): a BERT *ForSequenceClassification directory read
 * as published, pairs encoded and truncated as HF `tokenizers` does, the encoder run by
 * embed.c (CPU or GPU, with token types), the pooler and classifier here on the CPU. */
#include "rerank.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed_internal.h"
#include "safetensors.h"

#define MAX_LABELS 64

struct rerank_model {
	embed_model *enc;
	const bert_config *cfg;
	const tokenizer *tok;
	int labels;
	char label[MAX_LABELS][64];
	rerank_pooling pooling;     /* resolved: never AUTO */
	rerank_activation act;      /* resolved: never DEFAULT */
	float *pool_w, *pool_b;     /* [H][H], [H]; NULL unless POOLER */
	float *cls_w, *cls_b;       /* [labels][H], [labels] */
};

void rerank_options_default(rerank_options *o)
{
	memset(o, 0, sizeof *o);
	embed_options_default(&o->embed);
	o->pooling = RERANK_POOL_AUTO;
	o->activation = RERANK_ACT_DEFAULT;
}

static json_t *read_json(const char *dir, const char *name, int *bad, char *path, size_t size)
{
	snprintf(path, size, "%s/%s", dir, name);
	FILE *f = fopen(path, "r");
	*bad = 0;
	if (!f)
		return NULL;
	fclose(f);
	json_error_t je;
	json_t *j = json_load_file(path, 0, &je);
	if (!j || !json_is_object(j)) {
		json_decref(j);
		*bad = 1;
	}
	return j;
}

/* The CrossEncoder activation as sentence-transformers resolves it (rerank.h). */
static int read_activation(const char *dir, json_t *cfg, int labels, rerank_activation *act,
			   emb_err *err)
{
	char path[PATH_MAX + 64];
	const char *fn = NULL, *from = NULL;
	int bad;
	json_t *st = read_json(dir, "config_sentence_transformers.json", &bad, path, sizeof path);
	if (bad)
		return emb_errf(err, EMB_EFORMAT, "%s: malformed JSON", path);
	if (st && json_is_string(json_object_get(st, "activation_fn")))
		fn = json_string_value(json_object_get(st, "activation_fn")), from = path;
	char cpath[PATH_MAX + 64];
	snprintf(cpath, sizeof cpath, "%s/config.json", dir);
	json_t *sub = json_object_get(cfg, "sentence_transformers");
	if (!fn && json_is_object(sub) && json_is_string(json_object_get(sub, "activation_fn")))
		fn = json_string_value(json_object_get(sub, "activation_fn")), from = cpath;
	if (!fn && json_is_string(json_object_get(cfg, "sbert_ce_default_activation_function")))
		fn = json_string_value(json_object_get(cfg, "sbert_ce_default_activation_function")),
		from = cpath;
	int rc = EMB_OK;
	if (!fn || strncmp(fn, "torch.", 6) != 0) /* ST ignores paths outside torch. (untrusted) */
		*act = labels == 1 ? RERANK_ACT_SIGMOID : RERANK_ACT_IDENTITY;
	else if (!strcmp(fn, "torch.nn.modules.linear.Identity") || !strcmp(fn, "torch.nn.Identity"))
		*act = RERANK_ACT_IDENTITY;
	else if (!strcmp(fn, "torch.nn.modules.activation.Sigmoid") || !strcmp(fn, "torch.nn.Sigmoid"))
		*act = RERANK_ACT_SIGMOID;
	else if (!strcmp(fn, "torch.nn.modules.activation.Tanh") || !strcmp(fn, "torch.nn.Tanh"))
		*act = RERANK_ACT_TANH;
	else
		rc = emb_errf(err, EMB_EUNSUPPORTED, "%s: unsupported activation_fn '%s' (Identity, "
			      "Sigmoid and Tanh are)", from, fn);
	json_decref(st);
	return rc;
}

/* architectures, id2label / num_labels and the activation from config.json. */
static int read_head_config(rerank_model *m, const char *dir, rerank_activation want,
			    emb_err *err)
{
	char path[PATH_MAX + 64];
	int bad;
	json_t *c = read_json(dir, "config.json", &bad, path, sizeof path);
	if (!c)
		return emb_errf(err, bad ? EMB_EFORMAT : EMB_EIO, "%s: %s", path,
				bad ? "malformed JSON" : "cannot read");
	int rc = EMB_OK;
	json_t *arch = json_array_get(json_object_get(c, "architectures"), 0);
	const char *an = json_string_value(arch);
	if (!an || strcmp(an, "BertForSequenceClassification") != 0) {
		rc = emb_errf(err, EMB_EUNSUPPORTED, "%s: not a cross-encoder: architectures is "
			      "'%s', not BertForSequenceClassification", path, an ? an : "(none)");
		goto out;
	}
	/* transformers: num_labels = len(id2label), else "num_labels", else 2 */
	json_t *ids = json_object_get(c, "id2label");
	json_t *nl = json_object_get(c, "num_labels");
	if (ids && (!json_is_object(ids) || json_object_size(ids) < 1 ||
		    json_object_size(ids) > MAX_LABELS)) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: bad \"id2label\" (an object of 1 to %d labels)",
			      path, MAX_LABELS);
		goto out;
	}
	if (ids) {
		m->labels = (int)json_object_size(ids);
	} else if (nl) {
		if (!json_is_integer(nl) || json_integer_value(nl) < 1 ||
		    json_integer_value(nl) > MAX_LABELS) {
			rc = emb_errf(err, EMB_EFORMAT, "%s: bad \"num_labels\"", path);
			goto out;
		}
		m->labels = (int)json_integer_value(nl);
	} else {
		m->labels = 2;
	}
	for (int i = 0; i < m->labels; i++) {
		char key[16];
		snprintf(key, sizeof key, "%d", i);
		const char *name = ids ? json_string_value(json_object_get(ids, key)) : NULL;
		if (ids && !name) {
			rc = emb_errf(err, EMB_EFORMAT, "%s: \"id2label\" has no label \"%d\"", path, i);
			goto out;
		}
		if (name)
			snprintf(m->label[i], sizeof m->label[i], "%s", name);
		else
			snprintf(m->label[i], sizeof m->label[i], "LABEL_%d", i);
	}
	if (want != RERANK_ACT_DEFAULT)
		m->act = want;
	else
		rc = read_activation(dir, c, m->labels, &m->act, err);
out:
	json_decref(c);
	return rc;
}

/* Copies tensor `name` of rows x cols (cols 0: a vector of rows) to a new f32 array. */
static int take_tensor(const safetensors *st, const char *path, const char *name, int rows,
		       int cols, float **out, emb_err *err)
{
	const st_tensor *t = safetensors_find(st, name);
	if (!t)
		return emb_errf(err, EMB_EFORMAT, "%s: missing tensor %s", path, name);
	int ok = cols ? t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols
		      : t->ndim == 1 && t->shape[0] == rows;
	if (!ok)
		return emb_errf(err, EMB_EFORMAT, "%s: tensor %s has the wrong shape (wants [%d%s%.0d])",
				path, name, rows, cols ? ", " : "", cols);
	*out = malloc(t->count * sizeof **out);
	if (!*out)
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	int rc = st_tensor_to_f32(t, *out, err);
	return rc ? emb_err_prefix(err, "%s: %s: ", path, name) : EMB_OK;
}

static int load_head(rerank_model *m, const char *dir, rerank_pooling want, emb_err *err)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	safetensors st;
	int rc = safetensors_open(path, &st, err);
	if (rc)
		return rc;
	const int H = m->cfg->hidden;
	const char *pw = "bert.pooler.dense.weight", *pb = "bert.pooler.dense.bias";
	if (!safetensors_find(&st, pw) && safetensors_find(&st, "pooler.dense.weight"))
		pw = "pooler.dense.weight", pb = "pooler.dense.bias";
	int has_pooler = safetensors_find(&st, pw) != NULL;
	m->pooling = want == RERANK_POOL_AUTO ? (has_pooler ? RERANK_POOL_POOLER : RERANK_POOL_CLS)
					      : want;
	if (m->pooling == RERANK_POOL_POOLER && !has_pooler)
		rc = emb_errf(err, EMB_EFORMAT, "%s: pooling \"pooler\" needs tensor %s, which the "
			      "file lacks", path, pw);
	if (!rc && m->pooling == RERANK_POOL_POOLER &&
	    !(rc = take_tensor(&st, path, pw, H, H, &m->pool_w, err)))
		rc = take_tensor(&st, path, pb, H, 0, &m->pool_b, err);
	if (!rc && !(rc = take_tensor(&st, path, "classifier.weight", m->labels, H, &m->cls_w, err)))
		rc = take_tensor(&st, path, "classifier.bias", m->labels, 0, &m->cls_b, err);
	safetensors_close(&st);
	return rc;
}

int rerank_open(const char *dir, const rerank_options *opt, rerank_model **out, emb_err *err)
{
	*out = NULL;
	rerank_options defaults;
	if (!opt) {
		rerank_options_default(&defaults);
		opt = &defaults;
	}
	rerank_model *m = calloc(1, sizeof *m);
	if (!m)
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	/* config.json first: a sentence-embedding directory is refused before its weights load */
	int rc = read_head_config(m, dir, opt->activation, err);
	if (rc)
		goto fail;
	pool_kind pk = opt->pooling == RERANK_POOL_MEAN ? POOL_MEAN : POOL_CLS;
	if ((rc = embed_open_pooled(dir, &opt->embed, pk, &m->enc, err)))
		goto fail;
	m->cfg = embed_config(m->enc);
	m->tok = embed_tokenizer(m->enc);
	if (m->cfg->arch.family != FAMILY_BERT) {
		rc = emb_errf(err, EMB_EUNSUPPORTED, "%s/config.json: cross-encoders of model_type "
			      "'%s' are not supported (BERT is)", dir, m->cfg->arch.name);
		goto fail;
	}
	if (m->cfg->max_tokens < 3) {
		rc = emb_errf(err, EMB_EUNSUPPORTED, "%s: a maximum of %d tokens holds no pair "
			      "([CLS] [SEP] [SEP] needs 3)", dir, m->cfg->max_tokens);
		goto fail;
	}
	if ((rc = load_head(m, embed_dir(m->enc), opt->pooling, err)))
		goto fail;
	*out = m;
	return EMB_OK;
fail:
	rerank_close(m);
	return rc;
}

void rerank_close(rerank_model *m)
{
	if (!m)
		return;
	embed_close(m->enc);
	free(m->pool_w);
	free(m->pool_b);
	free(m->cls_w);
	free(m->cls_b);
	free(m);
}

int rerank_labels(const rerank_model *m) { return m->labels; }
int rerank_max_tokens(const rerank_model *m) { return m->cfg->max_tokens; }
const char *rerank_model_name(const rerank_model *m) { return embed_model_name(m->enc); }
const char *rerank_device_name(const rerank_model *m) { return embed_device_name(m->enc); }

const char *rerank_label(const rerank_model *m, int i)
{
	return i >= 0 && i < m->labels ? m->label[i] : NULL;
}

const char *rerank_pooling_name(const rerank_model *m)
{
	return m->pooling == RERANK_POOL_POOLER ? "pooler" : m->pooling == RERANK_POOL_MEAN ? "mean"
											   : "cls";
}

const char *rerank_activation_name(const rerank_model *m)
{
	return m->act == RERANK_ACT_SIGMOID ? "sigmoid" : m->act == RERANK_ACT_TANH ? "tanh"
										      : "identity";
}

/* HF tokenizers' TruncationStrategy::LongestFirst for a pair of n1 and n2 tokens into
 * `target` (the maximum less the three specials): the shorter keeps its length when the
 * longer can take the rest; else both get half, the odd token going to the one that was
 * longer (the first when they tie). tokenizers/src/utils/truncation.rs, rule for rule. */
static void longest_first(long *n1, long *n2, long target)
{
	if (*n1 + *n2 <= target)
		return;
	long a = *n1, b = *n2;
	int swap = a > b;
	if (swap) {
		long t = a;
		a = b, b = t;
	}
	b = a > target ? a : (a > target - a ? a : target - a);
	if (a + b > target) {
		a = target / 2;
		b = a + target % 2;
	}
	if (swap) {
		long t = a;
		a = b, b = t;
	}
	*n1 = a < *n1 ? a : *n1;
	*n2 = b < *n2 ? b : *n2;
}

long rerank_tokenize_pair(const rerank_model *m, const char *query, size_t qlen,
			  const char *doc, size_t dlen, int32_t *ids, uint8_t *types, size_t cap,
			  emb_err *err)
{
	const long max = m->cfg->max_tokens;
	if (cap < (size_t)max) {
		emb_errf(err, EMB_EINVAL, "rerank_tokenize_pair: cap %zu is below the maximum %ld",
			 cap, max);
		return -1;
	}
	/* Both texts whole: which is the longer decides who gives up tokens (a tie of two
	 * over-long texts is not the same split as the first being longer). Every id covers
	 * at least one byte, so len + 1 ids hold any text. */
	int32_t *q = malloc((qlen + 1) * sizeof *q), *d = malloc((dlen + 1) * sizeof *d);
	long n1 = -1, n2 = -1;
	if (!q || !d) {
		emb_errf(err, EMB_ENOMEM, "out of memory");
		goto out;
	}
	if ((n1 = tokenizer_encode(m->tok, query, qlen, q, qlen + 1, err)) < 0) {
		emb_err_prefix(err, "query: ");
		goto out;
	}
	if ((n2 = tokenizer_encode(m->tok, doc, dlen, d, dlen + 1, err)) < 0) {
		emb_err_prefix(err, "document: ");
		goto out;
	}
	longest_first(&n1, &n2, max - 3);
	long k = 0;
	ids[k++] = tokenizer_cls_id(m->tok);
	memcpy(ids + k, q, (size_t)n1 * sizeof *ids);
	k += n1;
	ids[k++] = tokenizer_sep_id(m->tok);
	long second = k;
	memcpy(ids + k, d, (size_t)n2 * sizeof *ids);
	k += n2;
	ids[k++] = tokenizer_sep_id(m->tok);
	if (types) {
		memset(types, 0, (size_t)second);
		memset(types + second, 1, (size_t)(k - second));
	}
	free(q);
	free(d);
	return k;
out:
	free(q);
	free(d);
	return -1;
}

/* Pooler (dense + tanh) where the model has it, then the classifier, on one pooled row. */
static void head(const rerank_model *m, const float *x, float *logit)
{
	const int H = m->cfg->hidden;
	float *p = NULL, buf[1024];
	if (m->pooling == RERANK_POOL_POOLER) {
		p = H <= 1024 ? buf : malloc((size_t)H * sizeof *p);
		if (!p) { /* 4 KB beyond the stack buffer: a model over hidden 1024 on no memory */
			for (int j = 0; j < m->labels; j++)
				logit[j] = NAN;
			return;
		}
		for (int i = 0; i < H; i++) {
			const float *w = m->pool_w + (size_t)i * H;
			float s = 0;
			for (int k = 0; k < H; k++)
				s += w[k] * x[k];
			p[i] = tanhf(s + m->pool_b[i]);
		}
		x = p;
	}
	for (int j = 0; j < m->labels; j++) {
		const float *w = m->cls_w + (size_t)j * H;
		float s = 0;
		for (int k = 0; k < H; k++)
			s += w[k] * x[k];
		logit[j] = s + m->cls_b[j];
	}
	if (p && p != buf)
		free(p);
}

/* Pairs a forward batch takes at most: bounds the ids and pooled rows held at once (a
 * search's --rerank-k may be large) while keeping a query's usual 100 candidates one batch,
 * one GPU submission. */
#define RERANK_CHUNK 256

int rerank_score(rerank_model *m, const char *query, size_t qlen, const char *const *docs,
		 const size_t *dlens, int n, float *logits, float *scores, emb_err *err)
{
	if (n <= 0)
		return EMB_OK;
	const int c = n < RERANK_CHUNK ? n : RERANK_CHUNK;
	const size_t cap = (size_t)m->cfg->max_tokens, H = (size_t)m->cfg->hidden;
	int32_t *ids = malloc((size_t)c * cap * sizeof *ids);
	uint8_t *types = malloc((size_t)c * cap);
	const int32_t **seqs = malloc((size_t)c * sizeof *seqs);
	const uint8_t **tys = malloc((size_t)c * sizeof *tys);
	int *lens = malloc((size_t)c * sizeof *lens);
	float *pooled = malloc((size_t)c * H * sizeof *pooled);
	int rc = EMB_OK;
	if (!ids || !types || !seqs || !tys || !lens || !pooled) {
		rc = emb_errf(err, EMB_ENOMEM, "out of memory for %d pairs", c);
		goto out;
	}
	for (int i0 = 0; i0 < n; i0 += c) {
		const int nc = n - i0 < c ? n - i0 : c;
		for (int k = 0; k < nc; k++) {
			const int i = i0 + k;
			size_t dl = dlens ? dlens[i] : strlen(docs[i]);
			long t = rerank_tokenize_pair(m, query, qlen, docs[i], dl, ids + (size_t)k * cap,
						      types + (size_t)k * cap, cap, err);
			if (t < 0) {
				rc = emb_err_prefix(err, "pair %d: ", i);
				goto out;
			}
			seqs[k] = ids + (size_t)k * cap;
			tys[k] = types + (size_t)k * cap;
			lens[k] = (int)t;
		}
		if ((rc = embed_encode_typed(m->enc, seqs, tys, lens, nc, pooled, err)))
			goto out;
		for (int k = 0; k < nc; k++) {
			const size_t i = (size_t)(i0 + k);
			float lg[MAX_LABELS];
			head(m, pooled + (size_t)k * H, lg);
			for (int j = 0; j < m->labels; j++) {
				float s = m->act == RERANK_ACT_SIGMOID ? 1.0f / (1.0f + expf(-lg[j]))
					: m->act == RERANK_ACT_TANH  ? tanhf(lg[j])
								     : lg[j];
				if (logits)
					logits[i * m->labels + j] = lg[j];
				if (scores)
					scores[i * m->labels + j] = s;
			}
		}
	}
out:
	free(ids);
	free(types);
	free(seqs);
	free(tys);
	free(lens);
	free(pooled);
	return rc;
}
