/* model.c — read a Hugging Face / sentence-transformers model directory as it is published:
 * config.json for the BERT shape, the sentence-transformers files for truncation, pooling
 * and normalisation, model.safetensors for the weights. No conversion step: what users
 * download is what we load, and every size we later index by is checked here. */
#include "model.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "safetensors.h"

/* Loads dir/name as JSON. A missing optional file gives *out = NULL and EMB_OK. */
static int load_json(const char *dir, const char *name, int required, json_t **out, emb_err *err)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	*out = NULL;
	FILE *f = fopen(path, "rb");
	if (!f) {
		if (errno == ENOENT && !required)
			return EMB_OK;
		return emb_errf(err, EMB_EIO, "%s: %s", path, strerror(errno));
	}
	json_error_t jerr;
	*out = json_loadf(f, 0, &jerr);
	fclose(f);
	if (!*out)
		return emb_errf(err, EMB_EFORMAT, "%s:%d: %s", path, jerr.line, jerr.text);
	if (!json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		return emb_errf(err, EMB_EFORMAT, "%s: not a JSON object", path);
	}
	return EMB_OK;
}

/* Reads an integer field into *v, checking it is in [lo, hi]. Absent fields keep *v when
 * optional. */
static int get_int(json_t *o, const char *file, const char *key, int optional, long lo, long hi,
		   int *v, emb_err *err)
{
	json_t *j = json_object_get(o, key);
	if (!j) {
		if (optional)
			return EMB_OK;
		return emb_errf(err, EMB_EFORMAT, "%s: missing \"%s\"", file, key);
	}
	if (!json_is_integer(j) || json_integer_value(j) < lo || json_integer_value(j) > hi)
		return emb_errf(err, EMB_EFORMAT, "%s: \"%s\" must be an integer in [%ld, %ld]", file,
				key, lo, hi);
	*v = (int)json_integer_value(j);
	return EMB_OK;
}

static int read_pooling(const char *dir, const char *sub, bert_config *cfg, emb_err *err)
{
	char name[PATH_MAX];
	snprintf(name, sizeof name, "%s/config.json", sub);
	json_t *p;
	int rc = load_json(dir, name, 0, &p, err);
	if (rc || !p)
		return rc;
	int mean = json_is_true(json_object_get(p, "pooling_mode_mean_tokens"));
	int cls = json_is_true(json_object_get(p, "pooling_mode_cls_token"));
	int max = json_is_true(json_object_get(p, "pooling_mode_max_tokens"));
	int other = json_is_true(json_object_get(p, "pooling_mode_mean_sqrt_len_tokens")) ||
		    json_is_true(json_object_get(p, "pooling_mode_weightedmean_tokens")) ||
		    json_is_true(json_object_get(p, "pooling_mode_lasttoken"));
	/* The pooled vector is the transformer's hidden state: a file that says otherwise belongs
	 * to another model. */
	json_t *wdim = json_object_get(p, "word_embedding_dimension");
	if (wdim && !(json_is_integer(wdim) && json_integer_value(wdim) == cfg->hidden)) {
		long long v = json_is_integer(wdim) ? (long long)json_integer_value(wdim) : -1;
		json_decref(p);
		return emb_errf(err, EMB_EFORMAT,
				"%s/%s: word_embedding_dimension %lld differs from the model's hidden_size %d",
				dir, name, v, cfg->hidden);
	}
	json_t *mode = json_object_get(p, "pooling_mode"); /* newer sentence-transformers */
	if (json_is_string(mode)) {
		const char *m = json_string_value(mode);
		mean = strcmp(m, "mean") == 0;
		cls = strcmp(m, "cls") == 0;
		max = strcmp(m, "max") == 0;
		other = !(mean || cls || max);
	}
	json_decref(p);
	if (other || mean + cls + max != 1)
		return emb_errf(err, EMB_EUNSUPPORTED,
				"%s/%s: unsupported pooling (one of mean, cls or max must be set alone)",
				dir, name);
	cfg->pooling = mean ? POOL_MEAN : cls ? POOL_CLS : POOL_MAX;
	return EMB_OK;
}

static int read_modules(const char *dir, bert_config *cfg, emb_err *err)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/modules.json", dir);
	FILE *f = fopen(path, "rb");
	if (!f) /* a plain HF model: sentence-transformers would add mean pooling */
		return errno == ENOENT ? EMB_OK : emb_errf(err, EMB_EIO, "%s: %s", path, strerror(errno));
	json_error_t jerr;
	json_t *mods = json_loadf(f, 0, &jerr);
	fclose(f);
	if (!mods)
		return emb_errf(err, EMB_EFORMAT, "%s:%d: %s", path, jerr.line, jerr.text);
	int rc = EMB_OK;
	if (!json_is_array(mods)) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: not a JSON array", path);
		goto out;
	}
	size_t i;
	json_t *m;
	json_array_foreach(mods, i, m) {
		const char *type = json_string_value(json_object_get(m, "type"));
		const char *sub = json_string_value(json_object_get(m, "path"));
		if (!type) {
			rc = emb_errf(err, EMB_EFORMAT, "%s: module %zu has no \"type\"", path, i);
			goto out;
		}
		if (strstr(type, "models.Pooling")) {
			rc = read_pooling(dir, sub && *sub ? sub : "1_Pooling", cfg, err);
			if (rc)
				goto out;
		} else if (strstr(type, "models.Normalize")) {
			cfg->normalize = 1;
		} else if (!strstr(type, "models.Transformer")) {
			rc = emb_errf(err, EMB_EUNSUPPORTED, "%s: unsupported module '%s'", path, type);
			goto out;
		}
	}
out:
	json_decref(mods);
	return rc;
}

/* Prefixes: sentence-transformers' "prompts" where the model declares them; E5 models,
 * whose published configs predate prompts, by name. */
static int read_prompts(const char *dir, bert_config *cfg, emb_err *err)
{
	json_t *st;
	int rc = load_json(dir, "config_sentence_transformers.json", 0, &st, err);
	if (rc)
		return rc;
	json_t *prompts = st ? json_object_get(st, "prompts") : NULL;
	const char *q = json_string_value(json_object_get(prompts, "query"));
	const char *p = json_string_value(json_object_get(prompts, "passage"));
	if (!p)
		p = json_string_value(json_object_get(prompts, "document"));
	if (q && *q)
		snprintf(cfg->query_prefix, sizeof cfg->query_prefix, "%s", q);
	if (p && *p)
		snprintf(cfg->passage_prefix, sizeof cfg->passage_prefix, "%s", p);
	json_decref(st);

	const char *base = strrchr(dir, '/');
	base = base && base[1] ? base + 1 : dir;
	char lower[256];
	size_t n = 0;
	for (; base[n] && n < sizeof lower - 1; n++)
		lower[n] = (char)(base[n] >= 'A' && base[n] <= 'Z' ? base[n] + 32 : base[n]);
	lower[n] = 0;
	if (!cfg->query_prefix[0] && (strncmp(lower, "e5-", 3) == 0 || strstr(lower, "-e5-"))) {
		strcpy(cfg->query_prefix, "query: ");
		strcpy(cfg->passage_prefix, "passage: ");
	}
	cfg->needs_prefix = cfg->query_prefix[0] || cfg->passage_prefix[0];
	return EMB_OK;
}

/* The one place the architecture is decided: model_type names a family, the family fixes
 * the description's fields (config.json may then refine the sizes it gives). */
static int read_arch(json_t *c, const char *file, bert_config *cfg, emb_err *err)
{
	const char *type = json_string_value(json_object_get(c, "model_type"));
	model_arch *a = &cfg->arch;
	a->bos_id = a->eos_id = a->pad_id = -1;
	a->pos = POS_ABSOLUTE;
	a->ffn = FFN_ACT;
	a->norm = NORM_POST;
	const char *pos = json_string_value(json_object_get(c, "position_embedding_type"));
	if (type && strcmp(type, "bert") == 0 && pos && strcmp(pos, "alibi") == 0) {
		/* JinaBERT (jinaai/jina-bert-implementation): BERT's embeddings without the
		 * position table, symmetric ALiBi, a GEGLU feed-forward; feed_forward_type
		 * "original" (its default) or "glu"/"reglu" are other models. */
		const char *ff = json_string_value(json_object_get(c, "feed_forward_type"));
		if (!ff || strcmp(ff, "geglu") != 0)
			return emb_errf(err, EMB_EUNSUPPORTED, "%s: unsupported feed_forward_type '%s' "
					"with ALiBi (JinaBERT needs \"geglu\")", file, ff ? ff : "original");
		a->family = FAMILY_JINABERT;
		a->pos = POS_ALIBI;
		a->ffn = FFN_GEGLU;
		a->token_types = 1;
		cfg->type_vocab_size = 2;
		cfg->layer_norm_eps = 1e-12f;
		snprintf(a->name, sizeof a->name, "jinabert");
		return EMB_OK;
	} else if (type && strcmp(type, "bert") == 0) {
		a->family = FAMILY_BERT;
		a->token_types = 1;
		cfg->type_vocab_size = 2;
		cfg->layer_norm_eps = 1e-12f;
	} else if (type && strcmp(type, "mpnet") == 0) {
		/* HF MPNetModel: positions count from padding_idx + 1 (padding_idx is fixed at 1),
		 * no token types, a relative position bias of 32 buckets up to distance 128. */
		a->family = FAMILY_MPNET;
		a->pos = POS_REL_BUCKETS;
		a->pos_offset = 2;
		a->rel_buckets = 32;
		a->rel_max_distance = 128;
		cfg->type_vocab_size = 0;
		cfg->layer_norm_eps = 1e-5f;
	} else {
		return emb_errf(err, EMB_EUNSUPPORTED, "%s: unsupported model_type '%s'", file,
				type ? type : "(none)");
	}
	snprintf(a->name, sizeof a->name, "%s", type);
	return EMB_OK;
}

int bert_config_load(const char *dir, bert_config *cfg, emb_err *err)
{
	memset(cfg, 0, sizeof *cfg);
	char file[PATH_MAX];
	snprintf(file, sizeof file, "%s/config.json", dir);
	json_t *c;
	int rc = load_json(dir, "config.json", 1, &c, err);
	if (rc)
		return rc;
	if ((rc = read_arch(c, file, cfg, err)))
		goto out;
	if ((rc = get_int(c, file, "vocab_size", 0, 1, 1 << 24, &cfg->vocab_size, err)) ||
	    (rc = get_int(c, file, "hidden_size", 0, 1, 1 << 16, &cfg->hidden, err)) ||
	    (rc = get_int(c, file, "num_hidden_layers", 0, 1, 1024, &cfg->layers, err)) ||
	    (rc = get_int(c, file, "num_attention_heads", 0, 1, 1024, &cfg->heads, err)) ||
	    (rc = get_int(c, file, "intermediate_size", 0, 1, 1 << 18, &cfg->intermediate, err)) ||
	    (rc = get_int(c, file, "max_position_embeddings", 0, 2, 1 << 16, &cfg->max_positions, err)) ||
	    (rc = get_int(c, file, "type_vocab_size", 1, 1, 1 << 16, &cfg->type_vocab_size, err)) ||
	    (cfg->arch.pos == POS_REL_BUCKETS &&
	     (rc = get_int(c, file, "relative_attention_num_buckets", 1, 4, 1024,
			   &cfg->arch.rel_buckets, err))))
		goto out;
	/* Informational (the tokenizer places the specials): published configs also write
	 * null here, which means absent. */
	json_t *id;
	if (json_is_integer(id = json_object_get(c, "bos_token_id")) && json_integer_value(id) >= 0 &&
	    json_integer_value(id) <= INT_MAX)
		cfg->arch.bos_id = (int)json_integer_value(id);
	if (json_is_integer(id = json_object_get(c, "eos_token_id")) && json_integer_value(id) >= 0 &&
	    json_integer_value(id) <= INT_MAX)
		cfg->arch.eos_id = (int)json_integer_value(id);
	if (json_is_integer(id = json_object_get(c, "pad_token_id")) && json_integer_value(id) >= 0 &&
	    json_integer_value(id) <= INT_MAX)
		cfg->arch.pad_id = (int)json_integer_value(id);
	if (cfg->arch.pos_offset >= cfg->max_positions) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: max_position_embeddings %d leaves no position "
			      "past the offset %d", file, cfg->max_positions, cfg->arch.pos_offset);
		goto out;
	}
	if (cfg->arch.pos == POS_REL_BUCKETS && cfg->arch.rel_buckets % 2) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: relative_attention_num_buckets %d is odd (half "
			      "the buckets are for each direction)", file, cfg->arch.rel_buckets);
		goto out;
	}
	if (cfg->hidden % cfg->heads) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d",
			      file, cfg->hidden, cfg->heads);
		goto out;
	}
	json_t *eps = json_object_get(c, "layer_norm_eps");
	if (eps) {
		if (!json_is_number(eps) || json_number_value(eps) <= 0 || json_number_value(eps) > 1) {
			rc = emb_errf(err, EMB_EFORMAT, "%s: bad \"layer_norm_eps\"", file);
			goto out;
		}
		cfg->layer_norm_eps = (float)json_number_value(eps);
	}
	const char *act = json_string_value(json_object_get(c, "hidden_act"));
	if (!act || strcmp(act, "gelu") == 0)
		cfg->act = ACT_GELU_ERF;
	else if (strcmp(act, "gelu_new") == 0 || strcmp(act, "gelu_pytorch_tanh") == 0)
		cfg->act = ACT_GELU_TANH;
	else if (strcmp(act, "relu") == 0)
		cfg->act = ACT_RELU;
	else {
		rc = emb_errf(err, EMB_EUNSUPPORTED, "%s: unsupported hidden_act '%s'", file, act);
		goto out;
	}
	const char *pos = json_string_value(json_object_get(c, "position_embedding_type"));
	if (cfg->arch.family == FAMILY_BERT && pos && strcmp(pos, "absolute") != 0) {
		rc = emb_errf(err, EMB_EUNSUPPORTED, "%s: unsupported position_embedding_type '%s'",
			      file, pos);
		goto out;
	}

	/* Truncation as sentence-transformers does it: max_seq_length when given, never past
	 * the position table; else the tokenizer's model_max_length. */
	cfg->max_tokens = cfg->max_positions - cfg->arch.pos_offset;
	json_t *sb = NULL, *tc = NULL;
	snprintf(file, sizeof file, "%s/sentence_bert_config.json", dir);
	if ((rc = load_json(dir, "sentence_bert_config.json", 0, &sb, err)))
		goto out;
	int seq = 0;
	if (sb && (rc = get_int(sb, file, "max_seq_length", 1, 1, INT_MAX, &seq, err))) {
		json_decref(sb);
		goto out;
	}
	json_decref(sb);
	if (!seq) {
		if ((rc = load_json(dir, "tokenizer_config.json", 0, &tc, err)))
			goto out;
		json_t *mml = json_object_get(tc, "model_max_length");
		if (json_is_integer(mml) && json_integer_value(mml) > 0 &&
		    json_integer_value(mml) < INT_MAX)
			seq = (int)json_integer_value(mml);
		json_decref(tc);
	}
	if (seq > 0 && seq < cfg->max_tokens)
		cfg->max_tokens = seq;

	cfg->pooling = POOL_MEAN;
	if ((rc = read_modules(dir, cfg, err)) || (rc = read_prompts(dir, cfg, err)))
		goto out;
out:
	json_decref(c);
	return rc;
}

/* --- weights */

typedef struct loader {
	const safetensors *st;
	const char *path;
	const char *prefix; /* "" or "bert." */
	float *next;        /* next free float in the arena */
} loader;

/* Once a tensor is copied out of the map (converted into the arena, or packed for the CPU
 * kernels), the engine reads only the copy, so its pages leave this process: read-only and
 * file-backed, they stay in the page cache and fault back in if the Vulkan backend (or a
 * neighbouring tensor sharing a page) reads them. Keeps the peak RSS of loading near the
 * packed weights alone. Arrays outside the map (the arena) are left alone. */
static void drop_mapped(const safetensors *st, const void *p, size_t bytes)
{
	const uint8_t *b = p, *m = st->map;
	if (!m || b < m || b + bytes > m + st->map_size)
		return;
	const uintptr_t pg = 4096;
	uintptr_t lo = (uintptr_t)b & ~(pg - 1), hi = ((uintptr_t)(b + bytes) + pg - 1) & ~(pg - 1);
	if (hi > (uintptr_t)(m + st->map_size))
		hi = (uintptr_t)(m + st->map_size) & ~(pg - 1);
	if (hi > lo)
		madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* Finds `name` (under the file's prefix; LayerNorm weight/bias also as gamma/beta, as old
 * checkpoints name them), checks its shape is exactly rows x cols (cols 0: a vector), and
 * copies it as f32 into the arena at `dst`, or, when dst is NULL, points *out at it in the
 * map if it is f32 there and else copies it to the next free place of the arena. */
static int take(loader *l, const char *name, int64_t rows, int64_t cols, float *dst,
		const float **out, emb_err *err)
{
	char full[256];
	snprintf(full, sizeof full, "%s%s", l->prefix, name);
	const st_tensor *t = safetensors_find(l->st, full);
	if (!t && strstr(name, "LayerNorm.")) {
		char alt[256];
		snprintf(alt, sizeof alt, "%s", full);
		char *dot = strrchr(alt, '.');
		if (strcmp(dot, ".weight") == 0)
			strcpy(dot, ".gamma");
		else if (strcmp(dot, ".bias") == 0)
			strcpy(dot, ".beta");
		t = safetensors_find(l->st, alt);
	}
	if (!t)
		return emb_errf(err, EMB_EFORMAT, "%s: missing tensor '%s'", l->path, full);
	int ok = cols ? t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols
		      : t->ndim == 1 && t->shape[0] == rows;
	if (!ok) {
		char got[128] = "";
		size_t n = 0;
		for (int i = 0; i < t->ndim && n < sizeof got - 24; i++)
			n += (size_t)snprintf(got + n, sizeof got - n, "%s%lld", i ? ", " : "",
					      (long long)t->shape[i]);
		if (cols)
			return emb_errf(err, EMB_EFORMAT,
					"%s: tensor '%s' has shape [%s], expected [%lld, %lld]", l->path,
					full, got, (long long)rows, (long long)cols);
		return emb_errf(err, EMB_EFORMAT, "%s: tensor '%s' has shape [%s], expected [%lld]",
				l->path, full, got, (long long)rows);
	}
	if (!dst && t->dtype == ST_F32 && ((uintptr_t)t->data & 3) == 0) {
		if (out) /* used in place: the mapping lives as long as the weights */
			*out = (const float *)t->data;
		return EMB_OK;
	}
	if (!dst) {
		dst = l->next;
		l->next += t->count;
	}
	int rc = st_tensor_to_f32(t, dst, err);
	if (rc)
		return emb_err_prefix(err, "%s: ", l->path);
	drop_mapped(l->st, t->data, t->nbytes);
	if (out)
		*out = dst;
	return EMB_OK;
}

/* The four products' matrices of every layer, packed for gemm.h (pack) or recorded for packing
 * later (!pack, fp32 only: gemm_defer). Matrices packed already are left as they are. */
static int prepare_matrices(const bert_config *cfg, bert_weights *w, int pack, emb_err *err)
{
	const int up_rows = cfg->arch.ffn == FFN_GEGLU ? 2 * cfg->intermediate : cfg->intermediate;
	const gemm_prec prec = cfg->cpu_prec;
	w->layers = cfg->layers; /* what bert_weights_free unpacks */
	for (int i = 0; i < cfg->layers; i++) {
		bert_layer_weights *L = &w->layer[i];
		gemm_w *p[4] = { &L->qkv_p, &L->attn_out_p, &L->ffn_up_p, &L->ffn_down_p };
		const float *src[4] = { L->qkv_w, L->attn_out_w, L->ffn_up_w, L->ffn_down_w };
		const int rows[4] = { 3 * cfg->hidden, cfg->hidden, up_rows, cfg->hidden };
		const int cols[4] = { cfg->hidden, cfg->hidden, cfg->hidden, cfg->intermediate };
		for (int m = 0; m < 4; m++) {
			if (p[m]->p || p[m]->q)
				continue;
			if (!pack) {
				gemm_defer(p[m], &src[m], 1, rows[m], cols[m], gemm_isa_for(prec));
				continue;
			}
			if (prec == GEMM_F32 && p[m]->src[0] ? gemm_pack_deferred(p[m])
			    : gemm_pack_prec(p[m], &src[m], 1, rows[m], cols[m], gemm_isa_for(prec), prec))
				return emb_errf(err, EMB_ENOMEM, "out of memory packing the weights");
			drop_mapped(&w->st, src[m], (size_t)rows[m] * cols[m] * sizeof(float));
		}
	}
	return EMB_OK;
}

int bert_weights_pack(const bert_config *cfg, bert_weights *w, emb_err *err)
{
	return prepare_matrices(cfg, w, 1, err);
}

int bert_weights_load(const char *dir, const bert_config *cfg, bert_weights *w, emb_err *err)
{
	memset(w, 0, sizeof *w);
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	int rc = safetensors_open(path, &w->st, err);
	if (rc)
		return rc;
	const safetensors st = w->st;

	const size_t H = (size_t)cfg->hidden, I = (size_t)cfg->intermediate;
	const model_arch *a = &cfg->arch;
	const int mpnet = a->family == FAMILY_MPNET, geglu = a->ffn == FFN_GEGLU;
	size_t up = geglu ? 2 * I * H : I * H + I; /* GEGLU: [2I][H], no bias */
	size_t per_layer = 3 * H * H + 3 * H + H * H + H + 2 * H + up + H * I + H + 2 * H;
	size_t types = a->token_types ? (size_t)cfg->type_vocab_size * H : 0;
	size_t rel = a->pos == POS_REL_BUCKETS ? (size_t)a->rel_buckets * cfg->heads : 0;
	size_t posn = a->pos == POS_ALIBI ? 0 : (size_t)cfg->max_positions * H;
	size_t total = (size_t)cfg->vocab_size * H + posn + types + rel + 2 * H +
		       (size_t)cfg->layers * per_layer;
	w->arena = malloc(total * sizeof(float));
	w->layer = calloc((size_t)cfg->layers, sizeof *w->layer);
	w->layers = w->layer ? cfg->layers : 0;
	if (!w->arena || !w->layer) {
		rc = emb_errf(err, EMB_ENOMEM, "%s: out of memory for %zu MB of weights", path,
			      total * 4 >> 20);
		goto fail;
	}
	w->arena_floats = total;
	loader l = { &st, path, "", w->arena };
	/* Task-head checkpoints (BertForMaskedLM, MPNetForMaskedLM) keep the encoder under the
	 * family's name. */
	const char *family_prefix = mpnet ? "mpnet." : "bert.";
	char probe[64];
	snprintf(probe, sizeof probe, "%sembeddings.word_embeddings.weight", family_prefix);
	if (!safetensors_find(&st, "embeddings.word_embeddings.weight") && safetensors_find(&st, probe))
		l.prefix = family_prefix;

	if ((rc = take(&l, "embeddings.word_embeddings.weight", cfg->vocab_size, cfg->hidden, NULL, &w->word_emb, err)) ||
	    (a->pos != POS_ALIBI &&
	     (rc = take(&l, "embeddings.position_embeddings.weight", cfg->max_positions, cfg->hidden, NULL, &w->pos_emb, err))) ||
	    (a->token_types &&
	     (rc = take(&l, "embeddings.token_type_embeddings.weight", cfg->type_vocab_size, cfg->hidden, NULL, &w->type_emb, err))) ||
	    (a->pos == POS_REL_BUCKETS &&
	     (rc = take(&l, "encoder.relative_attention_bias.weight", a->rel_buckets, cfg->heads, NULL, &w->rel_bias, err))) ||
	    (rc = take(&l, "embeddings.LayerNorm.weight", cfg->hidden, 0, NULL, &w->emb_ln_g, err)) ||
	    (rc = take(&l, "embeddings.LayerNorm.bias", cfg->hidden, 0, NULL, &w->emb_ln_b, err)))
		goto fail;

	/* The same sixteen tensors under each family's names, in the order loaded below. */
	static const char *const bert_names[16] = {
		"attention.self.query.weight", "attention.self.key.weight",
		"attention.self.value.weight", "attention.self.query.bias",
		"attention.self.key.bias", "attention.self.value.bias",
		"attention.output.dense.weight", "attention.output.dense.bias",
		"attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
		"intermediate.dense.weight", "intermediate.dense.bias",
		"output.dense.weight", "output.dense.bias",
		"output.LayerNorm.weight", "output.LayerNorm.bias",
	};
	static const char *const mpnet_names[16] = {
		"attention.attn.q.weight", "attention.attn.k.weight",
		"attention.attn.v.weight", "attention.attn.q.bias",
		"attention.attn.k.bias", "attention.attn.v.bias",
		"attention.attn.o.weight", "attention.attn.o.bias",
		"attention.LayerNorm.weight", "attention.LayerNorm.bias",
		"intermediate.dense.weight", "intermediate.dense.bias",
		"output.dense.weight", "output.dense.bias",
		"output.LayerNorm.weight", "output.LayerNorm.bias",
	};
	/* JinaBERT: BERT's attention, its own feed-forward (no bias on gated_layers: "") */
	static const char *const jina_names[16] = {
		"attention.self.query.weight", "attention.self.key.weight",
		"attention.self.value.weight", "attention.self.query.bias",
		"attention.self.key.bias", "attention.self.value.bias",
		"attention.output.dense.weight", "attention.output.dense.bias",
		"attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
		"mlp.gated_layers.weight", "",
		"mlp.wo.weight", "mlp.wo.bias",
		"mlp.layernorm.weight", "mlp.layernorm.bias",
	};
	const char *const *suffix = mpnet ? mpnet_names : geglu ? jina_names : bert_names;
	const int up_rows = geglu ? 2 * cfg->intermediate : cfg->intermediate;
	for (int i = 0; i < cfg->layers; i++) {
		bert_layer_weights *L = &w->layer[i];
		char n[16][128];
		for (int k = 0; k < 16; k++)
			snprintf(n[k], sizeof n[k], "encoder.layer.%d.%s", i, suffix[k]);
		/* Q, K and V land next to each other so that one [3H][H] product does all three. */
		float *qkv_w = l.next, *qkv_b = l.next + 3 * H * H;
		l.next += 3 * H * H + 3 * H;
		L->qkv_w = qkv_w;
		L->qkv_b = qkv_b;
		if ((rc = take(&l, n[0], cfg->hidden, cfg->hidden, qkv_w, NULL, err)) ||
		    (rc = take(&l, n[1], cfg->hidden, cfg->hidden, qkv_w + H * H, NULL, err)) ||
		    (rc = take(&l, n[2], cfg->hidden, cfg->hidden, qkv_w + 2 * H * H, NULL, err)) ||
		    (rc = take(&l, n[3], cfg->hidden, 0, qkv_b, NULL, err)) ||
		    (rc = take(&l, n[4], cfg->hidden, 0, qkv_b + H, NULL, err)) ||
		    (rc = take(&l, n[5], cfg->hidden, 0, qkv_b + 2 * H, NULL, err)) ||
		    (rc = take(&l, n[6], cfg->hidden, cfg->hidden, NULL, &L->attn_out_w, err)) ||
		    (rc = take(&l, n[7], cfg->hidden, 0, NULL, &L->attn_out_b, err)) ||
		    (rc = take(&l, n[8], cfg->hidden, 0, NULL, &L->ln1_g, err)) ||
		    (rc = take(&l, n[9], cfg->hidden, 0, NULL, &L->ln1_b, err)) ||
		    (rc = take(&l, n[10], up_rows, cfg->hidden, NULL, &L->ffn_up_w, err)) ||
		    (!geglu && (rc = take(&l, n[11], cfg->intermediate, 0, NULL, &L->ffn_up_b, err))) ||
		    (rc = take(&l, n[12], cfg->hidden, cfg->intermediate, NULL, &L->ffn_down_w, err)) ||
		    (rc = take(&l, n[13], cfg->hidden, 0, NULL, &L->ffn_down_b, err)) ||
		    (rc = take(&l, n[14], cfg->hidden, 0, NULL, &L->ln2_g, err)) ||
		    (rc = take(&l, n[15], cfg->hidden, 0, NULL, &L->ln2_b, err)))
			goto fail;
	}
	/* bf16 / int8: rounded or quantised once, here. fp32: packed by the first caller that
	 * runs enough products to repay it (embed.c); until then each product lays out the
	 * panels it reads on the fly (gemm_defer), so a process that embeds one query never
	 * writes a packed copy, and a GPU-only one never packs at all. */
	if ((rc = prepare_matrices(cfg, w, cfg->cpu_prec != GEMM_F32, err)))
		goto fail;
	return EMB_OK;
fail:
	bert_weights_free(w);
	return rc;
}

void bert_weights_free(bert_weights *w)
{
	for (int i = 0; w->layer && i < w->layers; i++) {
		gemm_w_free(&w->layer[i].qkv_p);
		gemm_w_free(&w->layer[i].attn_out_p);
		gemm_w_free(&w->layer[i].ffn_up_p);
		gemm_w_free(&w->layer[i].ffn_down_p);
	}
	safetensors_close(&w->st);
	free(w->arena);
	free(w->layer);
	memset(w, 0, sizeof *w);
}
