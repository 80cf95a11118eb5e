/* forward_vk.h — the BERT-family forward pass on a Vulkan GPU, the GPU twin of forward_cpu.
 *
 * A GPU path is slower than the CPU when every operation creates a command buffer, submits
 * and waits. Here everything that can be done once is
 * done at open: weights uploaded, activation buffers sized by a token budget, pipelines and
 * descriptor sets created. A batch is then one command buffer (recorded on the host in
 * microseconds), one submit and one wait, whatever its size: batches longer than the token
 * budget run as several passes over the same activations inside that one command buffer.
 *
 * Steps, with the names of forward.h: embed_layernorm -> per layer { matmul_bias(qkv) ->
 * attention -> matmul_bias(out) -> add_layernorm -> matmul_bias_gelu(up) (FFN_GEGLU:
 * matmul_bias(up, 2I rows) -> geglu) -> matmul_bias(down) -> add_layernorm } ->
 * pool_normalize.
 *
 * Like forward_cpu it walks the model's description (cfg->arch): BERT, MPNet and JinaBERT
 * run.
 * embed_layernorm takes position ids from arch.pos_offset (MPNet: 2) and adds the token's
 * type row (bt->types, a cross-encoder pair's 0 and 1; type 0 without them) only with
 * arch.token_types; position_bias (POS_REL_BUCKETS) is done once at open, not per
 * batch: each head's bias for every key - query distance up to min(max distance,
 * max_seq - 1), through forward_cpu's own bucketing (rel_position_bucket), a few KiB uploaded
 * with the weights, which every layer's attention kernel adds to its scores before the
 * softmax (no L x L bias is built). The relative bias runs in the lane attention kernels
 * (attn, attn_h and their CPU-implementation variants) on every precision, and in the
 * tensor-core ones of head size 32 and 64 (attn_fa.glsl) on the cooperative-matrix path.
 * POS_ALIBI (JinaBERT) adds no position row; the lane attention kernels compute
 * -slope_h * |key - query| from the head's slope (alibi_slopes, uploaded at open), so the
 * bias takes `heads` floats whatever the length (sequences to max_positions, 8192); the
 * tensor-core kernel takes ALiBi only when set.attn is "fa" (docs/jina-gpu.md says why).
 * FFN_GEGLU runs the up-projection's 2I rows without activation and bias, then a pass
 * gelu(first I) * (last I) into the down-projection's input.
 *
 * Precisions: fp32 (tiled GEMM, agrees with the CPU to ~1e-6), fp16 (f16 weights and matrix
 * inputs, fp32 accumulation, the residual stream in f16 as PyTorch's fp16 models keep it,
 * LayerNorm statistics in fp32), and fp16 on
 * cooperative matrices (tensor cores) where the device has VK_NV_cooperative_matrix.
 *
 * Threads: one backend is used by one thread at a time (callers serialise).
 */
#ifndef EMB_FORWARD_VK_H
#define EMB_FORWARD_VK_H

#include <stdio.h>

#include "err.h"
#include "forward.h"
#include "model.h"
#include "vk_settings.h"

typedef struct vk_backend vk_backend;
struct vk_ctx; /* vk_ctx.h */

typedef enum {
	VK_PREC_DEFAULT = 0, /* fp16 on cooperative matrices where available, else fp32 */
	VK_PREC_FP32 = 1,
	VK_PREC_FP16 = 2,    /* cooperative matrices where available, else the tiled f16 path */
	VK_PREC_INT8 = 3,    /* fp16 as above, with the products (set.int8_products) int8 x
			      * int8 -> int32 on 8-bit cooperative matrices: weights quantised
			      * at upload (one scale an output channel), activations by a pass
			      * before each product (one scale a token), but for the few input
			      * channels of the largest activations (set.int8_outliers, found by
			      * the CPU's calibration pass at upload), which are multiplied in
			      * f16 beside the int8 product: cosine >= 0.999 against fp32 on
			      * every SciFact text; devices without 16x16x32 s8 matrices refuse
			      * it (EMB_EUNSUPPORTED) */
} vk_precision;

typedef struct vk_options {
	int gpu_index;    /* -1: choose (set.gpu, else discrete, integrated, virtual) */
	int allow_cpu;    /* nonzero: a CPU Vulkan implementation (lavapipe) may be chosen */
	vk_precision precision;
	int token_budget; /* tokens per pass through the activations; 0 = as many as an
			     eighth of the GPU's memory holds, 32768 to 262144 (8192 on a CPU
			     implementation); clamped to the device's limits */
	int max_seq;      /* longest sequence accepted; 0 (or more) = what the position
			     embeddings cover, cfg->max_positions - cfg->arch.pos_offset */
	vk_settings set;  /* the environment's settings (vk_settings_from_env), or defaults */
} vk_options;

/* Fills *o with the defaults above; o->set as an unset environment gives (callers that
 * honour the environment call vk_settings_from_env(&o->set) themselves). */
void vk_options_default(vk_options *o);

/* Opens a Vulkan device, uploads the weights w (converted to f16 for the fp16 precisions)
 * and prepares everything a forward pass needs. w may be freed afterwards: the backend keeps
 * no pointer into it. When out of device memory for the activations it halves the token
 * budget (down to max_seq) before giving up. Errors: EMB_EDEVICE (no loader, no device, a
 * shader that fails to load: the message says which), EMB_ENOMEM ("out of device memory:
 * ..."), EMB_EUNSUPPORTED (a model shape the shaders do not handle, e.g. hidden size over
 * 1024 or a head size not a multiple of 4; or a model description, cfg->arch, the shaders do
 * not implement (a position scheme, feed-forward or norm placement other than model.h's),
 * "the Vulkan backend does not run X models yet", checked before any device is touched, so
 * --device auto falls back to the CPU; a Linear weight, the word embeddings or the small vectors beyond the device's
 * maxStorageBufferRange), EMB_EINVAL (opt->set.bad: a malformed setting).
 * The tests inject the first two failures through opt->set.fail_shader (a shader-name
 * prefix) and opt->set.fail_activations (a budget in tokens above which the activations do
 * not fit). */
int vk_backend_open(const bert_config *cfg, const bert_weights *w, const vk_options *opt,
		    vk_backend **out, emb_err *err);

/* vk_backend_open in two steps, so that a caller can read the weights while the device gets
 * ready (instance, device, pipelines and buffers take most of a warm open: on an H100
 * ~0.35 s, the weights' reading ~0.13 s beside it). vk_backend_prepare needs only the
 * configuration and does everything but the weights' values, with vk_backend_open's errors;
 * the backend then runs nothing (forward_vk_submit: EMB_EINVAL) until vk_backend_upload has
 * copied w to the device (EMB_ENOMEM, EMB_EDEVICE; EMB_EINVAL when called twice). On an
 * upload error the caller closes the backend. cfg and w must describe the same model. Under
 * VK_PREC_INT8 without set.int8_calib the upload first runs the CPU's fp32 pass over 16
 * made-up texts (forward_cpu_calib_maxima, on vk_backend_set_calibration's pool: MiniLM
 * 0.3 s on 2)
 * to pick the outlier channels, so w's fp32 arrays (qkv_w ...) must be readable. */
int vk_backend_prepare(const bert_config *cfg, const vk_options *opt, vk_backend **out,
		       emb_err *err);
int vk_backend_upload(vk_backend *b, const bert_weights *w, emb_err *err);

/* What the int8 calibration pass at upload (VK_PREC_INT8 without set.int8_calib: the
 * outlier channels and SmoothQuant factors come from the CPU's fp32 pass over made-up texts)
 * takes from the caller: the vocabulary's [CLS] and [SEP] ids (or <s>, </s>), which begin
 * and end those texts (default 101 and 102, BERT's WordPiece vocabulary), and the thread
 * pool it runs on, borrowed until vk_backend_upload returns (NULL, the default: a pool of
 * all online CPUs for the pass alone). Call before vk_backend_upload. */
void vk_backend_set_calibration(vk_backend *b, int32_t cls, int32_t sep, threadpool *pool);

/* Waits for any batch still running, then frees everything. NULL is allowed. */
void vk_backend_close(vk_backend *b);

/* The device, e.g. "NVIDIA H200 (Vulkan 1.4, discrete, cooperative matrix)". Never NULL. */
const char *vk_backend_device_name(const vk_backend *b);

/* Where vk_backend_open's time went, one line into buf (at most cap bytes, NUL-terminated):
 * "loader 0.002, instance 0.120, device ..., pipelines ..., weights upload ...,
 * activations+descriptors ... s". For start-up accounts (tool_vk_bench open). */
void vk_backend_open_times(const vk_backend *b, char *buf, size_t cap);

/* The Vulkan context under b (device properties, pipeline-cache counters), for tests and
 * tools; valid until vk_backend_close. */
const struct vk_ctx *vk_backend_ctx(const vk_backend *b);

/* The path in use: "fp32", "fp16" or "fp16-coopmat". Never NULL. */
const char *vk_backend_precision_name(const vk_backend *b);

/* Whether the device is a CPU implementation such as lavapipe (the auto policy avoids it). */
int vk_backend_is_cpu(const vk_backend *b);

/* Largest batch one forward_vk_submit takes: *tokens in all, *seqs sequences. forward_vk
 * itself takes any batch (it submits several times when needed). */
void vk_backend_capacity(const vk_backend *b, int *tokens, int *seqs);

/* Runs batch bt and writes bt->n vectors of cfg->hidden floats to out, exactly like
 * forward_cpu. Submits once per capacity-sized part of the batch (once for any batch within
 * vk_backend_capacity) and waits. When the device runs out of memory the batch is split in
 * halves and retried; a single sequence that still fails gives EMB_ENOMEM. Errors:
 * EMB_EINVAL (empty sequence, length over max_seq, id out of range), EMB_ENOMEM,
 * EMB_EDEVICE (device lost, timeout). */
int forward_vk(vk_backend *b, const fwd_batch *bt, float *out, emb_err *err);

/* Asynchronous pair, so the caller can tokenize batch i+1 while the GPU runs batch i:
 * forward_vk_submit copies bt's ids into one of two staging slots, records and submits, and
 * returns without waiting; the vectors go to out (which must stay valid) when
 * forward_vk_wait completes that batch. At most two batches are in flight: a third submit
 * first completes the oldest one (as forward_vk_wait would). Batches complete in submission
 * order. forward_vk_wait with nothing in flight returns EMB_OK at once. Errors as
 * forward_vk, except that a batch over vk_backend_capacity gives EMB_EINVAL and no
 * splitting is done; after an error from wait, that batch's out is undefined. A batch that
 * timed out stays in flight (vk_backend_close waits for it) but is never written to its out,
 * which the caller may free. */
int forward_vk_submit(vk_backend *b, const fwd_batch *bt, float *out, emb_err *err);
int forward_vk_wait(vk_backend *b, emb_err *err);

/* Profiling (for scripts/bench-gpu): with the environment variable EMBED_VK_PROFILE set at
 * open, GPU timestamps are taken around every step; this prints the time per step summed
 * over all batches since open or the last reset, and per submission (nothing when profiling
 * is off or unsupported). */
void vk_backend_profile_report(const vk_backend *b, FILE *f);
/* Forgets the times summed so far (for a report on the batches that follow). Call only with
 * no batch in flight. */
void vk_backend_profile_reset(vk_backend *b);

#endif
