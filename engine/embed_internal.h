/* embed_internal.h — what the engine's other front ends over the same encoder (rerank.c's
 * cross-encoders) need of an embed_model beyond embed.h: another pooling chosen at open,
 * the loaded configuration and tokenizer, and batches with token types. Not installed:
 * the public API stays embed.h and rerank.h.
 */
#ifndef EMB_EMBED_INTERNAL_H
#define EMB_EMBED_INTERNAL_H

#include "embed.h"
#include "model.h"
#include "tokenizer.h"

/* As embed_open, but the encoder's output is pooled by `pooling` (POOL_CLS: the [CLS]
 * row, POOL_MEAN, POOL_MAX) whatever the directory's 1_Pooling says, and never normalised:
 * a cross-encoder's head reads the raw hidden state. Errors as embed_open. */
int embed_open_pooled(const char *dir, const embed_options *opt, pool_kind pooling,
		      embed_model **out, emb_err *err);

/* The configuration, tokenizer and directory (trailing slashes removed) the model was
 * opened from; valid while m lives. */
const bert_config *embed_config(const embed_model *m);
const tokenizer *embed_tokenizer(const embed_model *m);
const char *embed_dir(const embed_model *m);

/* embed_encode_tokens with a token type per token: types[i][k] for seqs[i][k], each below
 * the model's type_vocab_size (1 when it has no token types); types NULL = all 0. Same
 * device policy, serialisation and errors (EMB_EINVAL also for a type out of range). */
int embed_encode_typed(embed_model *m, const int32_t *const *seqs, const uint8_t *const *types,
		       const int *lens, int n, float *out, emb_err *err);

#endif
