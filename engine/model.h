/* model.h — a loaded BERT-family model: its configuration and its weights, the one thing
 * the CPU forward pass (forward_cpu.c) and the Vulkan backend (vk_*.c) both read.
 *
 * The architecture is described once, here, by a model_arch read from config.json: which
 * position scheme, which feed-forward, where the norms sit, whether token types exist. The
 * executors walk that description; nothing else in the engine asks which family a model is.
 *
 * Weights are f32 whatever the file's dtype (f32, f16, bf16), laid out as Hugging Face
 * stores them ([out][in] for Linear layers), with the query, key and value projections
 * stacked into one [3H][H] matrix so each layer does one QKV product. Tensors the file holds
 * as f32 are used in place from its memory map (a one-shot search touches a few rows of the
 * 47 MB word-embedding table, not all of it); others are converted into an arena. The four
 * Linear matrices of each layer are also packed once for the CPU's kernels (gemm.h).
 */
#ifndef EMB_MODEL_H
#define EMB_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "gemm.h"
#include "safetensors.h"

typedef enum { POOL_MEAN = 0, POOL_CLS = 1, POOL_MAX = 2 } pool_kind;
typedef enum { ACT_GELU_ERF = 0, ACT_GELU_TANH = 1, ACT_RELU = 2 } act_kind;

/* How positions enter the model. */
typedef enum {
	POS_ABSOLUTE = 0,    /* BERT: a learned position embedding added to the word embedding */
	POS_REL_BUCKETS = 1, /* MPNet: absolute embedding as well, plus a learned per-head bias on
			      * the attention scores, looked up by the bucket of (key - query)
			      * position: shared by every layer */
	POS_ALIBI = 2,       /* JinaBERT: no position embedding; head h adds -slope_h * |key - query|
			      * to its scores (symmetric ALiBi, slopes from alibi_slopes in
			      * forward.h), computed inside the attention loop, never stored */
} pos_scheme;

typedef enum {
	FFN_ACT = 0,   /* up -> cfg->act -> down (BERT, MPNet) */
	FFN_GEGLU = 1, /* JinaBERT: mlp.gated_layers [2I][H] without bias, then GELU (erf) of
			* the first I columns times the last I, then mlp.wo [H][I] + bias */
} ffn_kind;

typedef enum {
	NORM_POST = 0, /* LayerNorm after each residual add (BERT, MPNet, JinaBERT) */
} norm_place;

/* JinaBERT's config.json says model_type "bert": position_embedding_type "alibi" (with
 * feed_forward_type "geglu") is what makes it a family of its own. */
typedef enum { FAMILY_BERT = 0, FAMILY_MPNET = 1, FAMILY_JINABERT = 2 } model_family;

/* The model's architecture, decided once from config.json's model_type by bert_config_load. */
typedef struct model_arch {
	model_family family;
	char name[16];          /* model_type as config.json spells it: "bert", "mpnet"; "jinabert"
				 * for a "bert" with ALiBi */
	pos_scheme pos;
	int pos_offset;         /* position id of a sequence's first token: 0 for BERT,
				 * padding_idx + 1 = 2 for MPNet (fairseq's convention) */
	int rel_buckets;        /* POS_REL_BUCKETS: relative_attention_num_buckets (32) */
	int rel_max_distance;   /* POS_REL_BUCKETS: distance from which the bucket is the last (128) */
	ffn_kind ffn;
	norm_place norm;
	int token_types;        /* 1: token_type_embeddings row 0 is added to every token */
	int bos_id, eos_id, pad_id; /* config.json's bos/eos/pad_token_id; -1 when absent */
} model_arch;

typedef struct bert_config {
	model_arch arch;
	int vocab_size;
	int hidden;            /* H */
	int layers;
	int heads;             /* H / heads = head dim */
	int intermediate;      /* I, feed-forward width */
	int max_positions;     /* max_position_embeddings */
	int type_vocab_size;
	float layer_norm_eps;
	act_kind act;          /* hidden_act: "gelu" = exact erf GELU */
	int max_tokens;        /* truncation: min(max_positions - arch.pos_offset,
				* sentence-transformers max_seq_length) */
	pool_kind pooling;     /* 1_Pooling/config.json */
	int normalize;         /* a sentence_transformers.models.Normalize module is present */
	int needs_prefix;      /* E5: inputs must carry the prefixes below */
	char query_prefix[64];   /* e.g. "query: "; "" when the model has none */
	char passage_prefix[64]; /* e.g. "passage: " */
	int do_lower_case;     /* informational; the tokenizer applies it */
	gemm_prec cpu_prec;    /* the number format of the CPU's weight products (gemm.h);
				* bert_config_load leaves GEMM_F32, embed_open sets --precision
				* bf16 / int8 here before bert_weights_load packs */
} bert_config;

typedef struct bert_layer_weights {
	const float *qkv_w;      /* [3H][H]: query rows, then key rows, then value rows */
	const float *qkv_b;      /* [3H] */
	const float *attn_out_w; /* [H][H]  attention.output.dense */
	const float *attn_out_b; /* [H] */
	const float *ln1_g;      /* [H]    attention.output.LayerNorm */
	const float *ln1_b;
	const float *ffn_up_w;   /* [I][H]  intermediate.dense; FFN_GEGLU: [2I][H]
				  * mlp.gated_layers (gated rows first) */
	const float *ffn_up_b;   /* [I]; NULL for FFN_GEGLU (gated_layers has no bias) */
	const float *ffn_down_w; /* [H][I]  output.dense (JinaBERT: mlp.wo) */
	const float *ffn_down_b; /* [H] */
	const float *ln2_g;      /* [H]    output.LayerNorm (JinaBERT: mlp.layernorm) */
	const float *ln2_b;
	/* the four matrices above packed for the CPU kernel gemm_isa_default() picks */
	gemm_w qkv_p, attn_out_p, ffn_up_p, ffn_down_p;
} bert_layer_weights;

typedef struct bert_weights {
	const float *word_emb;   /* [vocab][H] */
	const float *pos_emb;    /* [max_positions][H]; NULL for POS_ALIBI (max_positions then only
				  * bounds the length: 8192 for JinaBERT) */
	const float *type_emb;   /* [type_vocab][H]; token type 0 is used for every token; NULL
				  * without arch.token_types */
	const float *rel_bias;   /* [rel_buckets][heads] for POS_REL_BUCKETS, else NULL */
	const float *emb_ln_g;   /* [H] */
	const float *emb_ln_b;
	bert_layer_weights *layer; /* [layers] */
	int layers;
	float *arena;            /* owns the arrays above that are not in the file's map */
	size_t arena_floats;     /* its capacity; only the part written is ever resident */
	safetensors st;          /* the file, mapped for as long as the weights live */
} bert_weights;

/* Reads config.json, modules.json, 1_Pooling/config.json, sentence_bert_config.json and
 * config_sentence_transformers.json of `dir` into *cfg, including cfg->arch. model_type
 * "bert" and "mpnet" load; "bert" with position_embedding_type "alibi" is JinaBERT, whose
 * feed_forward_type must be "geglu" (absent means "original", plain GLU: refused). Errors: EMB_EIO (config.json missing), EMB_EFORMAT (malformed
 * JSON or sizes), EMB_EUNSUPPORTED ("unsupported model_type 'x'", unknown hidden_act or
 * pooling mode). */
int bert_config_load(const char *dir, bert_config *cfg, emb_err *err);

/* Packs the four matrix products' weights of every layer for gemm.h (qkv_p, attn_out_p,
 * ffn_up_p, ffn_down_p) from the f32 matrices w points at, in cfg->cpu_prec for the best
 * kernel this CPU has for it (gemm_isa_for). Matrices already packed are left as they are,
 * so it may be called again: bert_weights_load leaves fp32 weights unpacked (gemm_defer:
 * forward_cpu runs on them, laying panels out per product) and embed.c calls this once
 * encoding shows the model will be used for more than a query. Anyone who fills a
 * bert_weights by hand calls it before forward_cpu. The packed copies are freed by
 * bert_weights_free. Errors: EMB_ENOMEM. */
int bert_weights_pack(const bert_config *cfg, bert_weights *w, emb_err *err);

/* Loads model.safetensors of `dir` into *w, converting to f32 and checking every tensor's
 * shape against cfg. Tensor names follow cfg->arch.family (BERT: attention.self.query...,
 * MPNet: attention.attn.q..., encoder.relative_attention_bias; JinaBERT: BERT's attention,
 * mlp.gated_layers / mlp.wo / mlp.layernorm, no position table), with or without the
 * family's prefix ("bert.", "mpnet."). Errors: EMB_EIO,
 * EMB_EFORMAT (corrupt file, missing tensor, wrong shape: the message names the tensor). */
int bert_weights_load(const char *dir, const bert_config *cfg, bert_weights *w, emb_err *err);

void bert_weights_free(bert_weights *w);

#endif
