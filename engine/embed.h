/* embed.h — the engine's public API: open a sentence-embedding model, turn texts into
 * vectors identical to sentence-transformers', close it.
 *
 * A model is opened straight from a Hugging Face / sentence-transformers directory (no
 * conversion step): config.json, model.safetensors, tokenizer.json (or vocab.txt),
 * modules.json, 1_Pooling/config.json, sentence_bert_config.json.
 *
 * Threads: an embed_model may be used by several threads at once for the const functions
 * (tokenizing, querying sizes). embed_encode* calls on one model are serialised by an
 * internal lock; open one model per thread for concurrent encoding.
 *
 * Errors: every fallible call returns EMB_OK or an EMB_E* code (err.h) and fills the
 * optional emb_err with a one-line message.
 */
#ifndef EMB_EMBED_H
#define EMB_EMBED_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct embed_model embed_model;

typedef enum {
	EMBED_DEVICE_CPU = 0,
	EMBED_DEVICE_GPU = 1,  /* Vulkan; fails with EMB_EDEVICE when no usable device */
	EMBED_DEVICE_AUTO = 2, /* GPU for batches at or above the crossover, else CPU */
} embed_device;

typedef enum {
	EMBED_PRECISION_DEFAULT = 0, /* fastest path that meets the accuracy bar */
	EMBED_PRECISION_FP32 = 1,
	EMBED_PRECISION_FP16 = 2,    /* GPU only: fp16 inputs, fp32 accumulation */
	/* CPU (bf16: only; embed_open refuses it with EMB_EUNSUPPORTED under EMBED_DEVICE_GPU;
	 * under EMBED_DEVICE_AUTO the model runs on the CPU with either; int8 under
	 * EMBED_DEVICE_GPU runs VK_PREC_INT8, forward_vk.h, whose vectors keep cosine >= 0.999
	 * with fp32's): the weight products in a narrower
	 * format, the rest (attention, LayerNorm, softmax, GELU, pooling) in fp32. The vectors
	 * differ from fp32's: bf16 keeps cosine >= 0.9999 with them, int8 >= 0.99
	 * (tests/test_precision.py). int8 is ~3x fp32 on queries and ~1.5x
	 * on documents; bf16 is faster on queries but slower on documents where VDPBF16PS is
	 * half-rate (docs/bench-cpu.md). */
	EMBED_PRECISION_BF16 = 3,    /* weights and activations rounded to bfloat16 */
	EMBED_PRECISION_INT8 = 4,    /* int8 weights per output channel, int8 activations per
				      * token and block of 32, int32 sums */
} embed_precision;

/* How texts are prefixed before tokenizing. E5 models need "query: " / "passage: ". */
typedef enum {
	EMBED_PREFIX_NONE = 0,
	EMBED_PREFIX_QUERY = 1,
	EMBED_PREFIX_PASSAGE = 2,
} embed_prefix;

typedef struct embed_options {
	int threads;               /* CPU threads; 0 = all online CPUs */
	embed_device device;
	embed_precision precision;
	int gpu_index;             /* -1 = pick (discrete first, or env EMBED_GPU) */
	int max_tokens;            /* 0 = the model's limit (min of positions, max_seq_length) */
	int quiet;                 /* nonzero: no warning lines on stderr (e.g. GPU fallback) */
} embed_options;

#define EMBED_DEFAULT_MODEL "all-MiniLM-L6-v2"

/* Where a model fetched by scripts/fetch-model under the name `name` (e.g.
 * EMBED_DEFAULT_MODEL) lives: .cache/models/NAME beside the bin/ directory holding the running
 * program, or, where that is missing, the copy `make install-model` put in
 * share/embedstore/models/NAME of the same prefix. Writes a NUL-terminated path to buf; the
 * directory may not exist (embed_open then says so). */
void embed_fetched_model_dir(const char *name, char *buf, size_t size);

/* Where the tools look for a model when none is named: $EMBED_MODEL if set, else the fetched
 * default model (embed_fetched_model_dir(EMBED_DEFAULT_MODEL)). */
void embed_default_model_dir(char *buf, size_t size);

/* Fills *opt with defaults: all CPUs, CPU device, default precision, model's max length. */
void embed_options_default(embed_options *opt);

/* Opens the model in directory `dir` (see above for the files read). Weights are
 * read once and copied into one f32 buffer (f32, f16 and bf16 safetensors are accepted). On success *out owns the model
 * (free with embed_close). Errors: EMB_EIO (missing dir or file), EMB_EFORMAT (corrupt
 * config, safetensors or tokenizer; wrong tensor shape), EMB_EUNSUPPORTED (e.g.
 * "unsupported model_type 'gpt2'"), EMB_EDEVICE (explicit GPU device unusable). */
int embed_open(const char *dir, const embed_options *opt, embed_model **out, emb_err *err);

/* Releases everything the model holds. NULL is allowed. */
void embed_close(embed_model *m);

/* Output vector dimension (hidden size), e.g. 384. */
int embed_dim(const embed_model *m);

/* Maximum sequence length in tokens, [CLS] and [SEP] included (256 for all-MiniLM-L6-v2). */
int embed_max_tokens(const embed_model *m);

/* Short identity of the model for stores: directory basename, e.g. "all-MiniLM-L6-v2". */
const char *embed_model_name(const embed_model *m);
/* The model's family, its description's name (model.h): "bert", "mpnet" or "jinabert". */
const char *embed_model_family(const embed_model *m);

/* Hex sha256 of model.safetensors (64 chars + NUL). Computed on first call (~0.3 s for a
 * 90 MB file) and remembered per file version in ~/.cache/embedstore/weights-sha256, so
 * later processes read it back (EMBED_NO_SHA_CACHE=1 disables that). NULL on I/O error. */
const char *embed_model_sha256(embed_model *m);

/* Pooling as text ("mean", "cls", "max") and whether vectors are L2-normalised. */
const char *embed_pooling_name(const embed_model *m);
int embed_normalized(const embed_model *m);

/* Whether the model wants "query: "/"passage: " prefixes (E5 family, by model name or a
 * prompts entry in config_sentence_transformers.json). */
int embed_needs_prefix(const embed_model *m);

/* The device that encodes batches of n texts under the current policy (auto resolves). */
embed_device embed_device_for_batch(const embed_model *m, int n);

/* Writes one line per Vulkan device, numbered as --gpu and EMBED_GPU count them ("0: NVIDIA
 * H200 (discrete, Vulkan 1.4, cooperative matrix)"), to buf (at most cap bytes,
 * NUL-terminated). Returns the number of devices (0: a loader but no device), or -1 with
 * *err set (EMB_EDEVICE) when there is no Vulkan loader or it cannot start. */
int embed_list_devices(char *buf, size_t cap, emb_err *err);

/* Human-readable description of the device in use, e.g. "cpu (2 threads)" or "NVIDIA H200". */
const char *embed_device_name(const embed_model *m);

/* Tokenizes one text exactly as sentence-transformers would for this model: optional prefix,
 * [CLS] ... [SEP], truncated to `cap` (pass embed_max_tokens for the model's truncation, or
 * a larger number to get the whole text for windowing; the result then still begins with
 * [CLS] and ends with [SEP]). Writes at most cap ids; returns how many (>= 2), or -1 on
 * invalid UTF-8 (EMB_EINVAL, message gives the byte offset). cap must be >= 2. */
long embed_tokenize(const embed_model *m, const char *text, size_t len, embed_prefix prefix,
		    int32_t *ids, size_t cap, emb_err *err);

/* As embed_tokenize, and, when offsets is not NULL, also says where each id came from in
 * text (the caller's text, before normalization and without the prefix): offsets[2k] and
 * offsets[2k + 1] are the byte range [start, end) of id k, with Hugging Face `tokenizers`'
 * semantics (Encoding.offsets): a word or punctuation mark spans its bytes, a WordPiece
 * continuation piece the bytes of its own characters (so the first piece of a word starts
 * where the word does), an [UNK] the whole word, a special-token string written in the text
 * its match; [CLS], [SEP] and the prefix's tokens are [0, 0). Characters that normalization
 * drops (control characters, separately written accents) belong to no id. offsets has room
 * for 2 * cap entries. Returns and errors as
 * embed_tokenize (offsets is then undefined). */
long embed_tokenize_offsets(const embed_model *m, const char *text, size_t len,
			    embed_prefix prefix, int32_t *ids, size_t *offsets, size_t cap,
			    emb_err *err);

/* Encodes n texts (lens[i] bytes each; lens may be NULL for NUL-terminated texts) into
 * out[n * dim], row i for texts[i]. Texts past the maximum length are truncated. A text's
 * vector does not depend on its batch-mates or n. Errors: EMB_EINVAL (invalid UTF-8, message
 * names the text index), EMB_ENOMEM, EMB_EDEVICE. */
int embed_encode(embed_model *m, const char *const *texts, const size_t *lens, int n,
		 embed_prefix prefix, float *out, emb_err *err);

/* Where the batch that starts at sequence i ends: the largest j > i such that lens[i..j)
 * add up to at most budget tokens, and at least i + 1 (a sequence longer than the budget
 * goes alone). Sorting sequences by length first keeps each batch's lengths alike, so little
 * of it is padding. */
int embed_batch_end(const int *lens, int n, int i, size_t budget);

/* Encodes n already-tokenized sequences (each starting with [CLS] and ending with [SEP], at
 * most embed_max_tokens ids, ids < vocab size) into out[n * dim]. This is what windowing
 * indexers call after embed_tokenize. Errors: EMB_EINVAL (bad length or id), EMB_ENOMEM,
 * EMB_EDEVICE. */
int embed_encode_tokens(embed_model *m, const int32_t *const *seqs, const int *lens, int n,
			float *out, emb_err *err);

/* The batch the device runs best in one pass: at most *tokens tokens in all and *seqs
 * sequences. On a GPU it is the token budget derived from device memory at open
 * (vk_backend_capacity); on the CPU, the forward pass's own chunk (8,192 tokens). Larger
 * batches are accepted everywhere, but run synchronously. */
void embed_batch_capacity(const embed_model *m, int *tokens, int *seqs);

/* The asynchronous pair, for pipelines that prepare batch i+1 while the GPU runs batch i
 * (the indexer). embed_submit_tokens takes what embed_encode_tokens takes and, when the batch
 * goes to the GPU and fits embed_batch_capacity, returns as soon as it is submitted; the
 * vectors are in out when embed_wait returns that batch. Otherwise (the CPU, a batch over
 * the capacity) it computes the batch before returning, and embed_wait returns its result.
 * Batches come back in submission order, one per embed_wait. At most two are outstanding
 * (submitted and not yet returned by embed_wait): a third submit fails with EMB_EINVAL.
 *
 * Ownership: seqs, every seqs[i], lens and out must stay valid and unchanged until
 * embed_wait has returned the batch (a GPU failure under EMBED_DEVICE_AUTO redoes the batch
 * on the CPU from them, with the warning embed_encode gives; the GPU stays closed).
 * Errors: embed_submit_tokens fails only on bad input (EMB_EINVAL as embed_encode_tokens:
 * nothing is then outstanding for this call); a batch's own failure (EMB_ENOMEM,
 * EMB_EDEVICE: device lost, timeout) comes from the embed_wait that returns it, and its out
 * is then undefined. embed_wait with nothing outstanding returns EMB_OK at once.
 * Threads: one thread drives the pair of a model; embed_encode* from other threads are
 * serialised with it and first finish the batches in flight. embed_close waits for them. */
int embed_submit_tokens(embed_model *m, const int32_t *const *seqs, const int *lens, int n,
			float *out, emb_err *err);
int embed_wait(embed_model *m, emb_err *err);

#endif
