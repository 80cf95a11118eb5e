/* rerank.h — cross-encoder reranking: score (query, document) pairs with a model that reads
 * both together, as sentence-transformers' CrossEncoder does.
 *
 * A vector scan finds candidates; a cross-encoder, which attends across query and document,
 * orders them better. A model is opened straight from a Hugging Face directory as published
 * (e.g. cross-encoder/ms-marco-MiniLM-L-6-v2): config.json with architectures
 * "BertForSequenceClassification" and id2label (num_labels), model.safetensors (the BERT
 * encoder under "bert.", bert.pooler.dense.*, classifier.*), tokenizer.json (or vocab.txt),
 * tokenizer_config.json's model_max_length (or sentence_bert_config.json's max_seq_length),
 * and the CrossEncoder activation: config_sentence_transformers.json "activation_fn", else
 * config.json "sentence_transformers": {"activation_fn"}, else the pre-v4
 * "sbert_ce_default_activation_function", else Sigmoid for one label and Identity for more
 * (sentence-transformers' own order and defaults).
 *
 * A pair is encoded as [CLS] query [SEP] document [SEP] with token types 0 for the first
 * three parts and 1 for the document and its [SEP], truncated to the model's maximum as HF
 * `tokenizers` does with truncation="longest_first" (tokens are taken from the longer of the
 * two until they fit; when both are too long each keeps half). The encoder is embed.h's,
 * on the CPU or the GPU (one submit per batch of pairs); the head (pooler dense + tanh on
 * [CLS], then the classifier) runs on the CPU over the pooled rows read back: it is
 * H*(H+labels) multiply-adds a pair, under 0.1% of the encoder's work, and keeping it off
 * the GPU needs no kernel of its own.
 *
 * Threads: as embed.h (scoring calls on one model are serialised; the const functions may
 * be called from any thread). Errors: EMB_OK or an EMB_E* code (err.h) with a one-line
 * message in the optional emb_err.
 */
#ifndef EMB_RERANK_H
#define EMB_RERANK_H

#include <stddef.h>
#include <stdint.h>

#include "embed.h"
#include "err.h"

typedef struct rerank_model rerank_model;

/* What the classifier reads. BertForSequenceClassification reads the pooler's output
 * (dense + tanh on the [CLS] row): that is AUTO whenever the file has bert.pooler.dense.*,
 * else CLS. CLS and MEAN (the average of every token's final hidden state) are the other
 * choices red-candle offers, for heads trained on them. */
typedef enum {
	RERANK_POOL_AUTO = 0,
	RERANK_POOL_POOLER = 1,
	RERANK_POOL_CLS = 2,
	RERANK_POOL_MEAN = 3,
} rerank_pooling;

/* Applied to the logits to give scores. DEFAULT: the model's (see above). */
typedef enum {
	RERANK_ACT_DEFAULT = 0,
	RERANK_ACT_IDENTITY = 1,
	RERANK_ACT_SIGMOID = 2,
	RERANK_ACT_TANH = 3,
} rerank_activation;

typedef struct rerank_options {
	embed_options embed;          /* device, precision, threads, max_tokens (0 = model's) */
	rerank_pooling pooling;
	rerank_activation activation;
} rerank_options;

/* Fills *o with defaults: embed_options_default, AUTO pooling, the model's activation. */
void rerank_options_default(rerank_options *o);

/* Opens the cross-encoder in `dir`. On success *out owns it (free with rerank_close).
 * Errors: embed_open's; EMB_EUNSUPPORTED for a model that is not a BERT
 * *ForSequenceClassification (architectures names the class: "not a cross-encoder"), an
 * activation other than Identity, Sigmoid or Tanh, a maximum below 3 tokens; EMB_EFORMAT
 * for a missing or misshapen head tensor (named), a bad id2label, or POOLER asked of a file
 * without pooler weights. */
int rerank_open(const char *dir, const rerank_options *opt, rerank_model **out, emb_err *err);

/* Releases everything. NULL is allowed. */
void rerank_close(rerank_model *m);

/* Number of labels (1 for a relevance score) and the name of label i (id2label, e.g.
 * "LABEL_0"; valid while m lives). */
int rerank_labels(const rerank_model *m);
const char *rerank_label(const rerank_model *m, int i);

/* Longest pair in tokens, specials included (truncation point; 512 for ms-marco-MiniLM). */
int rerank_max_tokens(const rerank_model *m);

/* "pooler", "cls" or "mean"; "identity", "sigmoid" or "tanh"; the directory's basename;
 * the device, as embed_device_name. Valid while m lives. */
const char *rerank_pooling_name(const rerank_model *m);
const char *rerank_activation_name(const rerank_model *m);
const char *rerank_model_name(const rerank_model *m);
const char *rerank_device_name(const rerank_model *m);

/* Encodes one pair as the model reads it (see above): ids[k] and types[k] (0 or 1) for
 * k < the returned count, which is at most rerank_max_tokens (cap must be at least that).
 * types may be NULL. Returns -1 with EMB_EINVAL on invalid UTF-8 in either text (the message
 * says which and the byte offset) or a cap below the maximum; EMB_ENOMEM. */
long rerank_tokenize_pair(const rerank_model *m, const char *query, size_t qlen,
			  const char *doc, size_t dlen, int32_t *ids, uint8_t *types, size_t cap,
			  emb_err *err);

/* Scores n documents against one query: logits[i * labels + j] is label j's logit for
 * docs[i] (dlens[i] bytes; dlens NULL for NUL-terminated texts), scores the same after the
 * activation; either output may be NULL. The pairs go to the encoder 256 at a time, each
 * group one batch (on the GPU one submission when it fits the device's capacity), so memory
 * stays bounded whatever n. A pair's score does not depend on its batch-mates. Errors: EMB_EINVAL (invalid UTF-8: the message names the document
 * index), EMB_ENOMEM, EMB_EDEVICE. */
int rerank_score(rerank_model *m, const char *query, size_t qlen, const char *const *docs,
		 const size_t *dlens, int n, float *logits, float *scores, emb_err *err);

#endif
