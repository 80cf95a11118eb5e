/* forward.h — one BERT-family forward pass over a packed batch, pooled and normalised.
 *
 * A batch is packed, not padded: the tokens of all sequences lie end to end and each
 * sequence attends only to itself, so no work is spent on padding and a text's vector can
 * not depend on its batch-mates. The CPU path (forward_cpu.c) is the reference; the Vulkan
 * path (forward_vk.c) mirrors it step by step under the same step names:
 *   embed_layernorm -> [position_bias] -> per layer { matmul_bias(qkv) -> attention
 *   -> matmul_bias(out) -> add_layernorm -> matmul_bias_gelu(up) -> matmul_bias(down)
 *   -> add_layernorm } -> pool_normalize
 * What each step does is read from the model's description (cfg->arch, model.h):
 * embed_layernorm adds position ids from arch.pos_offset and the token's type row (b->types,
 * type 0 without them) only when arch.token_types; position_bias (POS_REL_BUCKETS only) builds the per-head bias of every
 * (key - query) distance once per batch, and attention adds it to every layer's scores.
 * POS_ALIBI (JinaBERT) has no position embedding; its attention runs over keys in chunks
 * with an online softmax, adding -slope_h * |key - query| as it goes, so neither a bias nor
 * a score matrix of L x L is ever held (memory per task: one query block x one key chunk).
 * FFN_GEGLU replaces matmul_bias_gelu(up) by matmul_bias(gated_layers, 2I wide) -> geglu.
 */
#ifndef EMB_FORWARD_H
#define EMB_FORWARD_H

#include <stdint.h>

#include "err.h"
#include "model.h"
#include "threadpool.h"

typedef struct fwd_batch {
	int n;              /* number of sequences */
	const int32_t *ids; /* all tokens: sequence i is ids[offs[i] .. offs[i+1]) */
	const int *offs;    /* [n + 1], offs[0] = 0; each length in 1..cfg->max_tokens */
	const uint8_t *types; /* token type id of every token (a cross-encoder's pair: 0 for
			       * [CLS] query [SEP], 1 for document [SEP]), each below
			       * cfg->type_vocab_size; NULL = type 0 everywhere (sentence
			       * embeddings). Only models with arch.token_types read it. */
} fwd_batch;

/* Runs the model on the CPU over batch b and writes n pooled (and, if the model says so,
 * L2-normalised) vectors of cfg->hidden floats to out. Uses the threads of pool (NULL = the
 * calling thread alone). Scratch memory is allocated per call and sized by the batch's
 * token count. Errors: EMB_ENOMEM. */
int forward_cpu(const bert_config *cfg, const bert_weights *w, threadpool *pool,
		const fwd_batch *b, float *out, emb_err *err);

/* The calibration pass of int8 activations: runs the model in fp32 over batch b (the
 * products over w's fp32 arrays, qkv_w etc., whatever cfg->cpu_prec packed) and raises
 * maxima[] to the largest |value| each input channel of the four products takes over b's
 * tokens. maxima holds cfg->layers blocks of 3H + I floats: the qkv product's input (H),
 * the attention output product's (H, the context), the up product's (H), the down
 * product's (I, after the activation; GEGLU: the gated product); the caller initialises it
 * (zeros, or the maxima of earlier batches). Errors: EMB_ENOMEM. */
int forward_cpu_input_maxima(const bert_config *cfg, const bert_weights *w, threadpool *pool,
			     const fwd_batch *b, float *maxima, emb_err *err);

/* forward_cpu_input_maxima over CALIB_TEXTS made-up texts of random ids that begin with cls
 * and end with sep (ids outside the vocabulary are replaced), each at most max_len tokens (0:
 * cfg->max_tokens): the int8 GPU path's calibration at open, which needs no real text. About
 * 1,400 tokens of the fp32 pass (tests/test_calib.c times it: on 2 cores 0.3 s for MiniLM,
 * 2.2 s for all-mpnet-base-v2 with EMBED_MODEL). Errors: EMB_ENOMEM. */
#define CALIB_TEXTS 16
int forward_cpu_calib_maxima(const bert_config *cfg, const bert_weights *w, threadpool *pool,
			     int32_t cls, int32_t sep, int max_len, float *maxima, emb_err *err);

/* The bucket (0 .. buckets-1) of relative position rel = key - query in MPNet's (T5's)
 * bidirectional scheme: buckets/2 for each direction, exact below buckets/4, logarithmic up
 * to max_distance, the last bucket beyond. Exposed for its test against the reference. */
int rel_position_bucket(int rel, int buckets, int max_distance);

/* ALiBi's per-head slopes for `heads` heads into slopes[0..heads): the geometric sequence
 * 2^(-8/n), 2^(-16/n), ... for n = heads when it is a power of two; otherwise those of the
 * largest power of two below, followed by every other slope of twice that power (the
 * published JinaBERT and ALiBi implementations). Computed in double, rounded to float as
 * they are. Exposed for its test. */
void alibi_slopes(int heads, float *slopes);

#endif
