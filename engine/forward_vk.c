/* forward_vk.c — the BERT-family forward pass recorded into one Vulkan command buffer per
 * batch (see forward_vk.h for the contract, shaders/ for the kernels). What the model's
 * description (cfg->arch) decides is settled at open, in data the kernels read: the first
 * position id goes into each token's position (the token type, when the batch gives types,
 * into the same word's high 16 bits), a model without token types gets no token-type row
 * (NO_TYPES), and POS_REL_BUCKETS a per-head bias row of every distance in
 * wvec plus a specialization constant that compiles its addition into the attention kernel;
 * POS_ALIBI no position row (NO_POS), the heads' slopes in wvec and another specialization
 * constant; FFN_GEGLU an up-projection of 2I rows (zero bias) and a geglu pass into gact.
 *
 * Memory plan, all made at open and reused for every batch:
 *   wmat   every Linear weight, f32 or f16, each at a 256-byte aligned offset so that a
 *          descriptor can bind exactly one tensor; wemb the word embeddings (f32);
 *   wvec   every small f32 vector (position/type embeddings, biases, LayerNorm, the relative
 *          position bias of each head by distance), addressed by float offsets in push
 *          constants;
 *   x (f32, fp32 path) or x16 (f16 paths)   the residual stream;
 *   qkv, ctx, tmp, ffn (and gact, GEGLU's product of ffn's halves)   the products'
 *          outputs; all activations for `budget` tokens, rows
 *          padded to 128 (the largest cooperative-matrix tile, so its loads never leave
 *          the buffer);
 *   qa, qs (--precision int8 only)   the int8 products' quantised input (int8 rows) and
 *          its scales (one fp32 a token), written by quant_i8.comp before each product;
 *          the int8 weights sit in wmat, their scales (and SmoothQuant factors) in wvec;
 *   in     the batch's token ids, sequence table and attention block table, copied from a
 *          host-visible staging slot at the start of each command buffer;
 *   outd   pooled vectors, copied back to the staging slot at the end.
 * Two staging slots let the host fill batch i+1 while the GPU runs batch i. Descriptor sets
 * reference only the fixed buffers above, so they are written once at open.
 */
#include "forward_vk.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "threadpool.h"
#include "vk_ctx.h"

#define SLOTS 2
#define BQ 64       /* attention query block of attention.glsl, attn_cm.comp, attn_fa16.comp:
		     * the smallest, which sizes the block table */
#define BQ_FA 128   /* attn_fa.comp's: 16 rows x RB 2 x SGS 4 (attn_fa.glsl) */
#define LN_TOKENS 4 /* tokens a LayerNorm workgroup (TPW in shaders/layernorm.glsl) */
#define LN_ROUNDS 4 /* tokens a lane group of add_ln_sg.comp does (ROUNDS there) */
#define ROWPAD 128  /* largest row tile of the cooperative-matrix GEMM */
#define ALIGN 256   /* >= any device's minStorageBufferOffsetAlignment (spec maximum) */
/* The watchdog on a batch: a floor, plus the batch's work at a rate far below any device's
 * (a GPU does >= 100 GFLOP/s; lavapipe ~1-3 on two busy CPU cores, and a fixed 120 s failed
 * correct work there under load). EMBED_GPU_TIMEOUT, when set, replaces it. */
#define WAIT_FLOOR_S 120.0
/* A CPU implementation compiles each kernel at its first dispatch (lavapipe through LLVM):
 * with an empty driver cache on a busy 2-core machine the first batch took 142 s. */
#define WAIT_FLOOR_CPU_S 900.0
#define SLOWEST_GPU_FLOPS 1e10
#define SLOWEST_CPU_FLOPS 2e7
/* embed_ln's type_off for a model without token types (layernorm.glsl's NO_TYPES), pos_off
 * for one without position embeddings (NO_POS: ALiBi) */
#define NO_TYPES 0xffffffffu
#define NO_POS 0xffffffffu

enum step { ST_EMBED, ST_QKV, ST_ATTN, ST_OUT, ST_LN1, ST_UP, ST_GEGLU, ST_DOWN, ST_LN2, ST_POOL,
	    ST_N };
static const char *const step_name[ST_N] = {
	"embed_layernorm", "matmul_bias (qkv)", "attention", "matmul_bias (out)",
	"add_layernorm (attn)", "matmul_bias_gelu (up)", "geglu", "matmul_bias (down)",
	"add_layernorm (ffn)", "pool_normalize",
};

/* Pipelines. The products write f32 on the fp32 path (P_GEMM_F32) and f16 on the f16 paths
 * (the residual stream is f16 there): tiled (P_GEMM_HH), or on cooperative matrices in four
 * tile sizes (W 128x96 where N is a multiple of 96, L 128x64, S 64x64, T 32x64), each
 * without and with the activation (A: a specialization constant of the same shader). */
enum { P_EMBED, P_ADDLN, P_ATTN, P_ATTN_SMALL, P_POOL, P_GEGLU, P_GEMM_F32, P_GEMM_HH,
       P_CM_WH, P_CM_WHA, P_CM_LH, P_CM_LHA, P_CM_HS, P_CM_HSA, P_CM_HT, P_CM_HTA,
       /* --precision int8: the activations' quantising pass (rows of H, rows of the FFN's
	* width), the residual LayerNorm that also quantises its output, the int8 products
	* (gemm_i8.glsl) in 128x96, 128x64 and (small grids) 64x64 tiles, without and with
	* the activation */
       P_QUANT, P_QUANT_I, P_ADDLN_Q, P_I8_W, P_I8_WA, P_I8_L, P_I8_LA, P_I8_S, P_I8_SA,
       /* ... the down product's 128x128 tiles, and (with outlier channels) the attention
	* output product's pipelines without them (N: its input needs none) */
       P_I8_Q, P_I8_WN, P_I8_LN, P_I8_SN, P_N };
/* Output tile of each GEMM pipeline (columns, rows per workgroup; W, L: two 128-row tiles). */
static const uint32_t gemm_tile[P_N][2] = {
	[P_GEMM_F32] = { 64, 64 }, [P_GEMM_HH] = { 64, 64 },
	[P_CM_WH] = { 96, 256 }, [P_CM_WHA] = { 96, 256 },
	[P_CM_LH] = { 64, 256 }, [P_CM_LHA] = { 64, 256 },
	[P_CM_HS] = { 64, 64 }, [P_CM_HSA] = { 64, 64 },
	[P_CM_HT] = { 64, 32 }, [P_CM_HTA] = { 64, 32 },
	[P_I8_W] = { 96, 256 }, [P_I8_WA] = { 96, 256 }, [P_I8_L] = { 64, 256 }, [P_I8_LA] = { 64, 256 },
	[P_I8_S] = { 64, 64 }, [P_I8_SA] = { 64, 64 }, [P_I8_Q] = { 128, 256 },
	[P_I8_WN] = { 96, 256 }, [P_I8_LN] = { 64, 256 }, [P_I8_SN] = { 64, 64 },
};
#define I8_K_STEP 128 /* gemm_i8.glsl's K_STEP: an int8 product's K is a multiple of it */
/* A cooperative-matrix product whose large-tile grid has fewer workgroups than the device
 * has SMs (small_grid: VK_NV_shader_sm_builtins, else SMALL_GRID) runs with 64x64 tiles (4x
 * the workgroups), or 32x64 tiles (8x) where the 64x64 grid is still below it: an H200 has
 * 132 SMs, and one 240-token text gives 6 to 24 large tiles. Measured
 * on the H200 (ms a batch, docs/bench-gpu.md): one text 1.17 with 128x128 tiles, 0.67 with 64x64, 0.39
 * to 0.53 with 32x64; 2 texts 0.48 (64x64), 0.43 (32x64); 10 texts 0.99 (64x64), 1.04
 * (32x64). EMBED_VK_SMALL_TILES=0 keeps the large tiles, =1 forces 64x64, =2 32x64 (for
 * comparisons). */
#define SMALL_GRID 132 /* where the device does not say: the H200's */
enum { G_QKV, G_OUT, G_UP, G_DOWN };
enum { PREC_FP32, PREC_FP16, PREC_COOPMAT };

/* Push-constant blocks, mirroring the shaders' layouts. */
/* act: the int8 products' weight scales' offset there */
typedef struct { uint32_t M, N, K, bias_off, act; } pc_gemm;
typedef struct { uint32_t block_off, H; float scale; uint32_t rel_off; } pc_attn;
typedef struct {
	uint32_t T, H, tok_off, pos_off, type_off, g_off, b_off;
	float eps;
	uint32_t sinv_off, omap_off; /* P_ADDLN_Q only: the next product's SmoothQuant factors
				      * (or NO_SMOOTH) and outlier slots (or NO_OUTLIERS) */
} pc_ln;
typedef struct { uint32_t seq_off, H, pooling, normalize, out_row, nseq; } pc_pool;
typedef struct { uint32_t T, I; } pc_geglu;
/* sinv_off: NO_SMOOTH, or 1/s in wvec; omap_off: NO_OUTLIERS, or the outlier slots in wvec */
typedef struct { uint32_t T, K, sinv_off, omap_off; } pc_quant;
#define NO_SMOOTH 0xffffffffu
#define NO_OUTLIERS 0xffffffffu
#define OUT_SLOTS 16 /* outlier values a row (shaders/quant_i8.glsl) */

typedef struct layer_off {
	VkDeviceSize w[4];          /* byte offsets in wmat: qkv, out, up, down */
	VkDeviceSize wbytes[4];
	uint32_t bias[4];           /* float offsets in wvec */
	uint32_t wscale[4];         /* int8 products: the weights' scales (one a row) in wvec */
	uint32_t sinv[4];           /* their SmoothQuant factors' inverses (K floats), or NO_SMOOTH */
	uint32_t omap[4];           /* their outlier channels' slots (K floats: 0..15, or -1), or
				     * NO_OUTLIERS */
	uint32_t ln1_g, ln1_b, ln2_g, ln2_b;
} layer_off;

/* One part of a batch that fits the activations: tokens [tok0, tok0+T), sequences
 * [seq0, seq0+nseq), attention blocks [blk0, blk0+nblk). */
typedef struct chunk { uint32_t tok0, T, seq0, nseq, blk0, nblk; } chunk;

/* The activations of a batch and the descriptor sets that point into them. One set serves
 * both slots, whose batches then run one after the other on one queue; with two queues
 * (set.queues = 2) each slot has its own set and queue, so that the GPU runs one batch's
 * kernels while the other's drain between dependent dispatches (docs/bench-gpu.md). */
typedef struct act_set {
	vk_buf x, x16, qkv, ctx, tmp, ffn, gact, in, outd;
	vk_buf qa, qs, qo; /* int8: codes, scales, the outliers' values (OUT_SLOTS f16 a row) */
	VkDescriptorSet ds_embed, ds_attn, ds_ln, ds_pool, ds_geglu, ds_quant[4], *ds_gemm;
} act_set;

typedef struct slot {
	vk_buf host;       /* this submit's input regions, then its output vectors; allocated
			    * by the first submit that needs it and grown by a later one
			    * (pinned host memory is slow to get: at open, the capacity's worth
			    * of it cost an H100 ~0.18 s of start-up) */
	VkDeviceSize h_seq, h_blk, h_out; /* offsets in host of the regions after the tokens */
	VkCommandBuffer cb;
	VkFence fence;
	float *out;
	int n;
	double work;       /* the batch's floating-point operations, for the watchdog */
	uint32_t nq;       /* timestamps written by this slot's command buffer */
	uint8_t *qstep;    /* step of each timed interval */
	act_set *a;        /* the activations it runs in */
	VkQueue queue;     /* the queue it is submitted to */
} slot;

struct vk_backend {
	vk_ctx c;
	bert_config cfg;
	int prec;
	uint32_t H, I, L, heads, D, max_seq, budget, rows;
	uint32_t tok_cap, seq_cap, blk_cap;
	VkDeviceSize off_tok, off_seq, off_blk, in_bytes;
	vk_buf wmat, wemb, wvec;
	vk_buf dummy;
	act_set as[SLOTS]; /* the activations: nas sets (1, or 2 with two queues) */
	int nas;
	/* --precision int8: which products run int8 (bit g, G_QKV...), 0 none; their
	 * activations quantised (act_set's qa: int8 rows of K bytes, qs: one fp32 scale a row) */
	unsigned i8;
	int smooth;        /* set.int8_calib names activation maxima: SmoothQuant factors */
	uint32_t nout;     /* or the outlier channels an int8 product keeps out of int8
			    * (set.int8_outliers, omap) */
	int smooth_up;     /* set.int8_smooth_up, with outlier channels for the others */
	vk_pipe pipe[P_N];
	int gemm_pipe[4];
	int small_tiles;   /* small grids: 0 keep the large tiles, 1 use 64x64, 2 32x64, 3 auto */
	VkDescriptorPool dpool;
	layer_off *lo;
	uint32_t emb_pos, emb_type, emb_g, emb_b;
	/* POS_REL_BUCKETS: wvec offset of the bias rows, rel_span floats a head (distances
	 * -R..R, R = (rel_span - 1) / 2); rel_span is 0 without a relative bias */
	uint32_t rel_off, rel_span;
	/* POS_ALIBI: rel_off is the heads' slopes instead (attention.glsl's ALIBI) */
	int alibi;
	/* FFN_GEGLU: the up-projection has up_n = 2I rows (gated half first) and no bias of
	 * the model's (a zero row in wvec), and geglu.glsl turns its output (ffn) into the
	 * down-projection's input (gact); else up_n = I */
	int geglu;
	uint32_t up_n;
	slot s[SLOTS];
	int head, inflight;
	chunk *chunks;     /* scratch for one submit */
	VkQueryPool qp;
	uint32_t qcap;     /* timestamps per slot */
	double prof_ns[ST_N];
	long prof_batches;
	char prec_name[32];
	float q_scale;         /* folded into the query projection (attn_fa.comp), else 1 */
	uint32_t bq;           /* the attention kernel's query block */
	uint32_t small_grid;   /* the device's SMs: fewer workgroups leave some idle */
	uint32_t cm_second;    /* accumulator elements in a lane's second row (cm_layout_ok) */
	int i8_lay_same;       /* int32 accumulators laid out as fp32 ones, in pairs (cm_layout_ok;
				* 0 where it did not run or found no usable layout) */
	int32_t text_ids[2];   /* [CLS], [SEP] of the int8 calibration texts, and */
	threadpool *calib_pool; /* its pool, the caller's or NULL (vk_backend_set_calibration) */
	int cm_load_same;      /* a loaded 16x16 fp32 matrix has the accumulators' layout */
	uint32_t ln_lanes;     /* lanes a token in add_ln_sg.comp, 0 where it is not used */
	uint32_t quant_lanes[2]; /* lanes a row in quant_i8.comp: rows of H, rows of I */
	size_t wmat_bytes, nvec; /* alloc_weights' layout: the matrices' bytes, wvec's floats */
	int ready;               /* the weights are uploaded (vk_backend_upload) */
	double t_pipes, t_upload, t_buffers; /* vk_backend_open's account (vk_backend_open_times) */
};

void vk_options_default(vk_options *o)
{
	memset(o, 0, sizeof *o);
	o->gpu_index = -1;
	vk_settings_default(&o->set);
}

static VkDeviceSize align_up(VkDeviceSize v, VkDeviceSize a)
{
	return (v + a - 1) / a * a;
}

/* IEEE half from float, round to nearest even; overflow becomes ±inf, as F16C does. */
static uint16_t f32_to_f16(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	uint32_t sign = (x >> 16) & 0x8000u;
	uint32_t e = (x >> 23) & 0xffu, m = x & 0x7fffffu;
	if (e == 0xff)
		return (uint16_t)(sign | 0x7c00u | (m ? 0x200u : 0));
	int ne = (int)e - 127 + 15;
	if (ne >= 31)
		return (uint16_t)(sign | 0x7c00u);
	if (ne <= 0) {
		if (ne < -10)
			return (uint16_t)sign;
		m |= 0x800000u;
		uint32_t shift = (uint32_t)(14 - ne);
		uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
		if (rem > half || (rem == half && (h & 1)))
			h++;
		return (uint16_t)(sign | h);
	}
	uint32_t h = ((uint32_t)ne << 10) | (m >> 13), rem = m & 0x1fffu;
	if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
		h++; /* may carry into the exponent, which is the correct rounding */
	return (uint16_t)(sign | h);
}

/* --- weights ------------------------------------------------------------------------- */

/* Whether int8 product g keeps outlier channels out of int8: every one but the attention
 * output's (its input, the context, has none: simulated, none there lose nothing, 0.99922
 * against 0.99923, and it saves about 0.25 ms a batch) and, with smooth_up, the up
 * product's, which takes SmoothQuant factors instead (docs/bench-gpu.md). */
static int keeps_outliers(const vk_backend *b, int g)
{
	return b->i8 >> g & 1 && b->nout && g != G_OUT && !(g == G_UP && b->smooth_up);
}

/* Whether int8 product g's input is divided by SmoothQuant factors (W's columns carry them) */
static int smoothed(const vk_backend *b, int g)
{
	return b->i8 >> g & 1 && (b->smooth || (g == G_UP && b->smooth_up));
}

/* The weights' layout on the device and its buffers: everything but their values, so that
 * the device can be made ready while the weights are still being read (vk_backend_prepare). */
static int alloc_weights(vk_backend *b, emb_err *err)
{
	const uint32_t H = b->H, I = b->I, L = b->L;
	const size_t es = b->prec == PREC_FP32 ? 4 : 2;
	const uint32_t rows[4] = { 3 * H, H, b->up_n, H }, cols[4] = { H, H, H, I };
	VkDeviceSize off = 0;
	for (uint32_t l = 0; l < L; l++)
		for (int g = 0; g < 4; g++) {
			b->lo[l].w[g] = off;
			b->lo[l].wbytes[g] = (VkDeviceSize)rows[g] * cols[g] * (b->i8 >> g & 1 ? 1 : es);
			if (keeps_outliers(b, g)) /* the outlier columns, f16 (gemm_i8.glsl) */
				b->lo[l].wbytes[g] += (VkDeviceSize)rows[g] * OUT_SLOTS * 2;
			off = align_up(off + b->lo[l].wbytes[g], ALIGN);
		}
	/* wvec layout */
	uint32_t v = 0;
	if (b->cfg.arch.pos == POS_ALIBI) {
		b->emb_pos = NO_POS;
	} else {
		b->emb_pos = v; v += (uint32_t)b->cfg.max_positions * H;
	}
	if (b->cfg.arch.token_types) {
		b->emb_type = v; v += (uint32_t)b->cfg.type_vocab_size * H;
	} else {
		b->emb_type = NO_TYPES;
	}
	b->rel_off = v; v += b->alibi ? b->heads : b->heads * b->rel_span;
	b->emb_g = v; v += H;
	b->emb_b = v; v += H;
	for (uint32_t l = 0; l < L; l++) {
		layer_off *o = &b->lo[l];
		o->bias[G_QKV] = v; v += 3 * H;
		o->bias[G_OUT] = v; v += H;
		o->bias[G_UP] = v; v += b->up_n;
		o->bias[G_DOWN] = v; v += H;
		o->ln1_g = v; v += H;
		o->ln1_b = v; v += H;
		o->ln2_g = v; v += H;
		o->ln2_b = v; v += H;
		for (int g = 0; g < 4; g++) {
			o->sinv[g] = NO_SMOOTH;
			o->omap[g] = NO_OUTLIERS;
			if (b->i8 >> g & 1) {
				o->wscale[g] = v;
				v += rows[g];
			}
			if (smoothed(b, g)) {
				v = (v + 3) & ~3u; /* quant_i8.comp reads them as vec4 */
				o->sinv[g] = v;
				v += cols[g];
			}
			/* outlier slots (keeps_outliers) */
			if (keeps_outliers(b, g)) {
				v = (v + 3) & ~3u;
				o->omap[g] = v;
				v += cols[g];
			}
		}
	}
	b->nvec = v;
	b->wmat_bytes = off;
	const size_t nvec = v;
	const size_t emb_bytes = (size_t)b->cfg.vocab_size * H * 4;
	/* What a descriptor binds must fit maxStorageBufferRange: the word embeddings, wvec, and
	 * each Linear weight (a gemm descriptor binds one tensor of wmat). wmat as a whole need
	 * not: lavapipe's range is 128 MiB, less than the 340 MB of MPNet-base's (or BERT-base's)
	 * f32 Linear weights. */
	const VkDeviceSize range = b->c.props.limits.maxStorageBufferRange;
	const VkDeviceSize widest_w = (VkDeviceSize)(3 * H > b->up_n ? 3 * H : b->up_n) * H * es;
	if (emb_bytes > range || nvec * 4 > range || widest_w > range)
		return emb_errf(err, EMB_EUNSUPPORTED, "model too large for %s: a weight buffer "
				"exceeds maxStorageBufferRange (%u bytes)", b->c.props.deviceName,
				b->c.props.limits.maxStorageBufferRange);

	int rc = vk_buf_create(&b->c, &b->wmat, off, VK_MEM_DEVICE, err);
	if (!rc)
		rc = vk_buf_create(&b->c, &b->wemb, emb_bytes, VK_MEM_DEVICE, err);
	if (!rc)
		rc = vk_buf_create(&b->c, &b->wvec, nvec * 4, VK_MEM_DEVICE, err);
	return rc ? emb_err_prefix(err, "allocating weights: ") : EMB_OK;
}

/* Reads set.int8_calib (dev/int8/calibrate.py): "EMBI8CAL", uint32 layers, hidden,
 * intermediate, then per layer the activation maxima of the four products' input channels,
 * qkv[H], out[H], up[H], down[I]. */
static int read_calib(vk_backend *b, float **out, emb_err *err)
{
	const size_t n = (size_t)b->L * (3 * b->H + b->I);
	FILE *f = fopen(b->c.set.int8_calib, "rb");
	if (!f)
		return emb_errf(err, EMB_EIO, "EMBED_VK_INT8_CALIB %s: cannot open", b->c.set.int8_calib);
	char magic[8];
	uint32_t hd[3];
	float *v = malloc(n * 4);
	int ok = v && fread(magic, 1, 8, f) == 8 && !memcmp(magic, "EMBI8CAL", 8) &&
		 fread(hd, 4, 3, f) == 3 && hd[0] == b->L && hd[1] == b->H && hd[2] == b->I &&
		 fread(v, 4, n, f) == n && fgetc(f) == EOF;
	fclose(f);
	if (!ok) {
		free(v);
		return emb_errf(err, EMB_EINVAL, "EMBED_VK_INT8_CALIB %s: not activation maxima of "
				"this model's shapes (%u layers, %u, %u)", b->c.set.int8_calib, b->L,
				b->H, b->I);
	}
	*out = v;
	return EMB_OK;
}

/* Without set.int8_calib, the maxima come from the model itself: the CPU's calibration pass
 * over made-up texts (forward_cpu_calib_maxima, forward.h), on the caller's pool or on one
 * of all online CPUs made for it. */
static int self_calibrate(vk_backend *b, const bert_weights *w, float **out, emb_err *err)
{
	float *mx = calloc((size_t)b->L * (3 * b->H + b->I), sizeof *mx);
	threadpool *own = b->calib_pool ? NULL : threadpool_create(0);
	threadpool *pool = b->calib_pool ? b->calib_pool : own;
	int rc = !mx || !pool ? emb_errf(err, EMB_ENOMEM, "out of memory for the int8 calibration")
		 : forward_cpu_calib_maxima(&b->cfg, w, pool, b->text_ids[0], b->text_ids[1],
					    (int)b->max_seq, mx, err);
	threadpool_destroy(own);
	if (rc) {
		free(mx);
		return emb_err_prefix(err, "int8 calibration: ");
	}
	*out = mx;
	return EMB_OK;
}

/* Converts and copies the weights into the buffers of alloc_weights, through one staging
 * buffer for all three. int8 products: each row (output channel) quantised with its own
 * scale, max|w| / 127; with SmoothQuant factors s (per input channel, alpha a of
 * set.int8_smooth_alpha, 0.5 by default: s = max|x|^a / max|w|^(1-a) from the calibration
 * maxima and the column's largest weight)
 * the columns are multiplied by s first, and quant_i8.comp divides the activations by it,
 * which leaves the product unchanged before rounding and evens the channels' ranges. */
static int upload_weights(vk_backend *b, const bert_weights *w, emb_err *err)
{
	const uint32_t H = b->H, I = b->I, L = b->L;
	const size_t es = b->prec == PREC_FP32 ? 4 : 2;
	const uint32_t rows[4] = { 3 * H, H, b->up_n, H }, cols[4] = { H, H, H, I };
	const size_t off = b->wmat_bytes, nvec = b->nvec;
	const float alpha = (float)b->c.set.int8_smooth_alpha / 100.0f;
	const size_t emb_bytes = (size_t)b->cfg.vocab_size * H * 4;
	size_t most = off > nvec * 4 ? off : nvec * 4;
	most = most > emb_bytes ? most : emb_bytes;
	vk_buf st;
	int rc = vk_buf_create(&b->c, &st, most < ((size_t)64 << 20) ? most : (size_t)64 << 20,
			       VK_MEM_HOST, err);
	if (rc)
		return emb_err_prefix(err, "uploading weights: ");
	unsigned char *host = malloc(off > nvec * 4 ? off : nvec * 4);
	if (!host) {
		vk_buf_destroy(&b->c, &st);
		return emb_errf(err, EMB_ENOMEM, "out of memory staging weights");
	}
	memset(host, 0, off);
	/* the int8 products' scales and factors, at their wvec offsets until wvec is staged */
	float *fv = b->i8 ? calloc(nvec, 4) : NULL, *calib = NULL;
	float *sfac = b->i8 ? malloc((size_t)(I > H ? I : H) * 4) : NULL;
	if (b->i8 && (!fv || !sfac))
		rc = emb_errf(err, EMB_ENOMEM, "out of memory staging weights");
	if (!rc && (b->smooth || b->nout))
		rc = b->c.set.int8_calib[0] ? read_calib(b, &calib, err)
					    : self_calibrate(b, w, &calib, err);
	for (uint32_t l = 0; l < L && !rc; l++) {
		const bert_layer_weights *lw = &w->layer[l];
		const float *src[4] = { lw->qkv_w, lw->attn_out_w, lw->ffn_up_w, lw->ffn_down_w };
		for (int g = 0; g < 4; g++) {
			size_t n = (size_t)rows[g] * cols[g];
			unsigned char *dst = host + b->lo[l].w[g];
			/* the query rows (the first H of qkv) times q_scale */
			const size_t nq = g == G_QKV && b->q_scale != 1.0f ? (size_t)H * H : 0;
			if (b->i8 >> g & 1) {
				/* int8, symmetric, one scale a row (output channel): max|w| / 127,
				 * written into wvec below */
				int8_t *q = (int8_t *)dst;
				const uint32_t K = cols[g];
				for (uint32_t c = 0; c < K; c++)
					sfac[c] = 1.0f;
				uint32_t ochan[OUT_SLOTS];
				if (calib && b->lo[l].omap[g] != NO_OUTLIERS) {
					/* outliers: the nout channels of the largest calibration
					 * maxima leave the int8 weights (sfac 0) for the f16 ones
					 * after them (wo, below), slot by slot */
					const float *xm = calib + (size_t)l * (3 * H + I) + (size_t)g * H;
					for (uint32_t c = 0; c < K; c++)
						fv[b->lo[l].omap[g] + c] = -1.0f;
					for (uint32_t j = 0; j < b->nout; j++) {
						uint32_t best = UINT32_MAX;
						for (uint32_t c = 0; c < K; c++)
							if (sfac[c] != 0 && (best == UINT32_MAX || xm[c] > xm[best]))
								best = c;
						sfac[best] = 0;
						ochan[j] = best;
						fv[b->lo[l].omap[g] + best] = (float)j;
					}
				} else if (calib && b->lo[l].sinv[g] != NO_SMOOTH) {
					const float *xm = calib + (size_t)l * (3 * H + I) + (size_t)g * H;
					for (uint32_t c = 0; c < K; c++) {
						float wm = 0;
						for (uint32_t r = 0; r < rows[g]; r++)
							wm = fmaxf(wm, fabsf(src[g][(size_t)r * K + c]));
						sfac[c] = powf(fmaxf(xm[c], 1e-5f), alpha) /
							  powf(fmaxf(wm, 1e-5f), 1.0f - alpha);
						fv[b->lo[l].sinv[g] + c] = 1.0f / sfac[c];
					}
				}
				for (uint32_t r = 0; r < rows[g]; r++) {
					const float *wr = src[g] + (size_t)r * K;
					const float k = (size_t)r * K < nq ? b->q_scale : 1.0f;
					float mx = 0;
					for (uint32_t c = 0; c < K; c++)
						mx = fmaxf(mx, fabsf(wr[c] * k * sfac[c]));
					/* the outliers' weights in the row's units (w · 127 / mx,
					 * as the codes before rounding) must fit f16: a floor under
					 * mx, as quant_i8.glsl's under the activations' scale */
					const uint32_t no = b->lo[l].omap[g] != NO_OUTLIERS ? b->nout : 0;
					for (uint32_t j = 0; j < no; j++)
						mx = fmaxf(mx, fabsf(wr[ochan[j]] * k) * (127.0f / 60000.0f));
					const float inv = mx > 0 ? 127.0f / mx : 0.0f;
					for (uint32_t c = 0; c < K; c++)
						q[(size_t)r * K + c] = (int8_t)lrintf(wr[c] * k * sfac[c] * inv);
					uint16_t *wo = (uint16_t *)(dst + (size_t)rows[g] * K) + (size_t)r * OUT_SLOTS;
					for (uint32_t j = 0; j < no; j++)
						wo[j] = f32_to_f16(wr[ochan[j]] * k * inv);
					fv[b->lo[l].wscale[g] + r] = mx / 127.0f;
				}
			} else if (es == 4) {
				memcpy(dst, src[g], n * 4);
				for (size_t i = 0; i < nq; i++)
					((float *)dst)[i] *= b->q_scale;
			} else {
				uint16_t *h = (uint16_t *)dst;
				for (size_t i = 0; i < n; i++)
					h[i] = f32_to_f16(i < nq ? src[g][i] * b->q_scale : src[g][i]);
			}
		}
	}
	free(calib);
	free(sfac);
	if (!rc)
		rc = vk_upload_via(&b->c, &b->wmat, 0, host, off, &st, err);
	if (!rc) {
		float *f = (float *)host;
		if (b->emb_pos != NO_POS)
			memcpy(f + b->emb_pos, w->pos_emb, (size_t)b->cfg.max_positions * H * 4);
		if (b->alibi) /* the same slopes as forward_cpu's */
			alibi_slopes((int)b->heads, f + b->rel_off);
		if (b->emb_type != NO_TYPES)
			memcpy(f + b->emb_type, w->type_emb, (size_t)b->cfg.type_vocab_size * H * 4);
		/* The relative position bias by distance d = key - query, -R..R, through the
		 * CPU's own bucketing (forward_cpu.c), so both paths put every distance in the
		 * same bucket; attention.glsl clamps longer distances to +-R, which are in the
		 * last bucket of their direction (R >= max_distance, or no longer distance
		 * exists). */
		const int R = (int)b->rel_span / 2;
		for (int d = -R; b->rel_span && d <= R; d++) {
			const int bucket = rel_position_bucket(d, b->cfg.arch.rel_buckets,
							       b->cfg.arch.rel_max_distance);
			for (uint32_t h = 0; h < b->heads; h++)
				f[b->rel_off + h * b->rel_span + (uint32_t)(d + R)] =
					w->rel_bias[(size_t)bucket * b->heads + h];
		}
		memcpy(f + b->emb_g, w->emb_ln_g, H * 4);
		memcpy(f + b->emb_b, w->emb_ln_b, H * 4);
		for (uint32_t l = 0; l < L; l++) {
			const bert_layer_weights *lw = &w->layer[l];
			const layer_off *o = &b->lo[l];
			memcpy(f + o->bias[G_QKV], lw->qkv_b, 3 * H * 4);
			for (uint32_t i = 0; i < H; i++)
				f[o->bias[G_QKV] + i] *= b->q_scale;
			memcpy(f + o->bias[G_OUT], lw->attn_out_b, H * 4);
			if (lw->ffn_up_b)
				memcpy(f + o->bias[G_UP], lw->ffn_up_b, (size_t)b->up_n * 4);
			else /* GEGLU's gated_layers have no bias */
				memset(f + o->bias[G_UP], 0, (size_t)b->up_n * 4);
			memcpy(f + o->bias[G_DOWN], lw->ffn_down_b, H * 4);
			memcpy(f + o->ln1_g, lw->ln1_g, H * 4);
			memcpy(f + o->ln1_b, lw->ln1_b, H * 4);
			memcpy(f + o->ln2_g, lw->ln2_g, H * 4);
			memcpy(f + o->ln2_b, lw->ln2_b, H * 4);
			for (int g = 0; g < 4; g++) {
				if (!(b->i8 >> g & 1))
					continue;
				memcpy(f + o->wscale[g], fv + o->wscale[g], rows[g] * 4);
				if (o->sinv[g] != NO_SMOOTH)
					memcpy(f + o->sinv[g], fv + o->sinv[g], cols[g] * 4);
				if (o->omap[g] != NO_OUTLIERS)
					memcpy(f + o->omap[g], fv + o->omap[g], cols[g] * 4);
			}
		}
		rc = vk_upload_via(&b->c, &b->wvec, 0, host, nvec * 4, &st, err);
	}
	free(fv);
	free(host);
	if (!rc)
		rc = vk_upload_via(&b->c, &b->wemb, 0, w->word_emb, emb_bytes, &st, err);
	vk_buf_destroy(&b->c, &st);
	return rc ? emb_err_prefix(err, "uploading weights: ") : EMB_OK;
}

/* --- activations, staging and descriptors -------------------------------------------- */

static void free_activations(vk_backend *b)
{
	for (int k = 0; k < SLOTS; k++) {
		act_set *a = &b->as[k];
		vk_buf *bufs[] = { &a->x, &a->x16, &a->qkv, &a->ctx, &a->tmp, &a->ffn, &a->gact,
				   &a->in, &a->outd, &a->qa, &a->qs, &a->qo };
		for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
			vk_buf_destroy(&b->c, bufs[i]);
	}
	for (int i = 0; i < SLOTS; i++)
		vk_buf_destroy(&b->c, &b->s[i].host);
}

static int alloc_activations(vk_backend *b, emb_err *err)
{
	/* Fault injection for the tests: set.fail_activations = N (EMBED_VK_FAIL_ACTIVATIONS)
	 * fails this as a device out of memory would, for a budget over N tokens. */
	const long fail = b->c.set.fail_activations;
	if (fail >= 0 && b->budget > (unsigned long)fail)
		return emb_errf(err, EMB_ENOMEM, "Vulkan: vkAllocateMemory: VK_ERROR_OUT_OF_DEVICE_MEMORY "
				"(activations for %u tokens; EMBED_VK_FAIL_ACTIVATIONS)", b->budget);
	const VkDeviceSize rows = b->rows, H = b->H, I = b->I;
	const VkDeviceSize ea = b->prec == PREC_FP32 ? 4 : 2; /* matrix-input element size */
	b->tok_cap = b->budget * 8;
	b->seq_cap = b->tok_cap / 16;
	b->blk_cap = b->seq_cap + b->tok_cap / BQ + 1;
	b->off_tok = 0;
	b->off_seq = align_up(b->off_tok + (VkDeviceSize)b->tok_cap * 8, ALIGN);
	b->off_blk = align_up(b->off_seq + (VkDeviceSize)b->seq_cap * 8, ALIGN);
	b->in_bytes = align_up(b->off_blk + (VkDeviceSize)b->blk_cap * 16, ALIGN);
	const VkDeviceSize out_bytes = (VkDeviceSize)b->seq_cap * H * 4;

	int rc = EMB_OK;
	for (int k = 0; k < b->nas && !rc; k++) {
		act_set *a = &b->as[k];
		/* The residual stream: f32 (x) on the fp32 path, f16 (x16) on the f16 paths. */
		rc = b->prec == PREC_FP32
			     ? vk_buf_create(&b->c, &a->x, rows * H * 4, VK_MEM_DEVICE, err)
			     : vk_buf_create(&b->c, &a->x16, rows * H * 2, VK_MEM_DEVICE, err);
		if (!rc)
			rc = vk_buf_create(&b->c, &a->qkv, rows * 3 * H * ea, VK_MEM_DEVICE, err);
		if (!rc)
			rc = vk_buf_create(&b->c, &a->ctx, rows * H * ea, VK_MEM_DEVICE, err);
		if (!rc)
			rc = vk_buf_create(&b->c, &a->tmp, rows * H * ea, VK_MEM_DEVICE, err);
		if (!rc)
			rc = vk_buf_create(&b->c, &a->ffn, rows * b->up_n * ea, VK_MEM_DEVICE, err);
		if (!rc && b->geglu)
			rc = vk_buf_create(&b->c, &a->gact, rows * I * ea, VK_MEM_DEVICE, err);
		if (!rc)
			rc = vk_buf_create(&b->c, &a->in, b->in_bytes, VK_MEM_DEVICE, err);
		if (!rc)
			rc = vk_buf_create(&b->c, &a->outd, out_bytes, VK_MEM_DEVICE, err);
		if (!rc && b->i8)
			rc = vk_buf_create(&b->c, &a->qa, rows * (I > H ? I : H), VK_MEM_DEVICE,
					   err);
		if (!rc && b->i8)
			rc = vk_buf_create(&b->c, &a->qs, rows * 4, VK_MEM_DEVICE, err);
		if (!rc && b->nout) /* zeros past a product's outliers stay zeros: never written */
			rc = vk_buf_create(&b->c, &a->qo, rows * OUT_SLOTS * 2, VK_MEM_DEVICE, err);
		/* Zero the activations once: rows past a chunk's tokens are read (never stored)
		 * by the tiled products, and zeros there keep every value finite. */
		vk_buf *z[] = { &a->x, &a->x16, &a->qkv, &a->ctx, &a->tmp, &a->ffn, &a->gact,
				&a->qa, &a->qs, &a->qo };
		for (size_t i = 0; i < sizeof z / sizeof *z && !rc; i++)
			if (z[i]->buf)
				rc = vk_zero(&b->c, z[i], err);
	}
	if (rc)
		free_activations(b);
	return rc;
}

static VkDescriptorBufferInfo bi(const vk_buf *buf, VkDeviceSize off, VkDeviceSize range)
{
	return (VkDescriptorBufferInfo){ .buffer = buf->buf, .offset = off, .range = range };
}

static void ds_write(vk_backend *b, VkDescriptorSet ds, VkDescriptorBufferInfo info[VK_BINDINGS])
{
	VkWriteDescriptorSet wr[VK_BINDINGS];
	for (int i = 0; i < VK_BINDINGS; i++) {
		if (!info[i].buffer)
			info[i] = bi(&b->dummy, 0, VK_WHOLE_SIZE);
		wr[i] = (VkWriteDescriptorSet){
			.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
			.dstSet = ds,
			.dstBinding = (uint32_t)i,
			.descriptorCount = 1,
			.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
			.pBufferInfo = &info[i],
		};
	}
	b->c.vkUpdateDescriptorSets(b->c.device, VK_BINDINGS, wr, 0, NULL);
}

/* Points set a's descriptor sets at its activations (and the weights). */
static void write_descriptors(vk_backend *b, act_set *a)
{
	const VkDeviceSize W = VK_WHOLE_SIZE;
	const vk_buf *xin = b->prec == PREC_FP32 ? &a->x : &a->x16;
	VkDescriptorBufferInfo in[VK_BINDINGS];

	memset(in, 0, sizeof in);
	in[0] = bi(&a->in, b->off_tok, b->off_seq - b->off_tok);
	in[1] = bi(&b->wemb, 0, W);
	in[2] = bi(&b->wvec, 0, W);
	if (a->x.buf)
		in[3] = bi(&a->x, 0, W);
	if (a->x16.buf)
		in[5] = bi(&a->x16, 0, W);
	ds_write(b, a->ds_embed, in);

	memset(in, 0, sizeof in);
	in[0] = bi(&a->qkv, 0, W);
	in[2] = bi(&b->wvec, 0, W); /* the relative position bias, or the ALiBi slopes */
	in[3] = bi(&a->ctx, 0, W);
	in[4] = bi(&a->in, b->off_blk, b->in_bytes - b->off_blk);
	ds_write(b, a->ds_attn, in);

	memset(in, 0, sizeof in);
	in[0] = bi(&a->tmp, 0, W);
	in[2] = bi(&b->wvec, 0, W);
	if (a->x.buf)
		in[3] = bi(&a->x, 0, W);
	if (b->i8) { /* add_ln_sg.comp's QUANT output (int8 runs the f16 stream: no x) */
		in[3] = bi(&a->qa, 0, W);
		in[4] = bi(&a->qs, 0, W);
		if (b->nout)
			in[1] = bi(&a->qo, 0, W);
	}
	if (a->x16.buf)
		in[5] = bi(&a->x16, 0, W);
	ds_write(b, a->ds_ln, in);

	memset(in, 0, sizeof in);
	in[0] = bi(xin, 0, W);
	in[3] = bi(&a->outd, 0, W);
	in[4] = bi(&a->in, b->off_seq, b->off_blk - b->off_seq);
	ds_write(b, a->ds_pool, in);

	if (b->geglu) {
		memset(in, 0, sizeof in);
		in[0] = bi(&a->ffn, 0, W);
		in[3] = bi(&a->gact, 0, W);
		ds_write(b, a->ds_geglu, in);
	}

	const vk_buf *gin[4] = { xin, &a->ctx, xin, b->geglu ? &a->gact : &a->ffn };
	const vk_buf *gout[4] = { &a->qkv, &a->tmp, &a->ffn, &a->tmp };
	for (int g = 0; g < 4; g++) {
		if (!(b->i8 >> g & 1))
			continue;
		memset(in, 0, sizeof in);
		in[0] = bi(gin[g], 0, W);
		in[2] = bi(&b->wvec, 0, W);
		in[3] = bi(&a->qa, 0, W);
		in[4] = bi(&a->qs, 0, W);
		if (b->nout)
			in[1] = bi(&a->qo, 0, W);
		ds_write(b, a->ds_quant[g], in);
	}
	for (uint32_t l = 0; l < b->L; l++)
		for (int g = 0; g < 4; g++) {
			const int q = b->i8 >> g & 1;
			memset(in, 0, sizeof in);
			in[0] = bi(q ? &a->qa : gin[g], 0, W);
			in[1] = bi(&b->wmat, b->lo[l].w[g], b->lo[l].wbytes[g]);
			in[2] = bi(&b->wvec, 0, W);
			in[3] = bi(gout[g], 0, W);
			if (q)
				in[4] = bi(&a->qs, 0, W);
			if (q && b->nout)
				in[5] = bi(&a->qo, 0, W);
			ds_write(b, a->ds_gemm[4 * l + g], in);
		}
}

/* Makes and writes the descriptor sets of every activation set: 9 + 4 L each. */
static int make_descriptors(vk_backend *b, emb_err *err)
{
	const uint32_t per = 9 + 4 * b->L, nsets = per * (uint32_t)b->nas;
	VkDescriptorPoolSize ps = { .type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
				    .descriptorCount = nsets * VK_BINDINGS };
	VkDescriptorPoolCreateInfo pci = {
		.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
		.maxSets = nsets,
		.poolSizeCount = 1,
		.pPoolSizes = &ps,
	};
	VkResult r = b->c.vkCreateDescriptorPool(b->c.device, &pci, NULL, &b->dpool);
	if (r != VK_SUCCESS)
		return emb_errf(err, EMB_EDEVICE, "vkCreateDescriptorPool: %s", vk_result_name(r));
	VkDescriptorSet *sets = calloc(nsets, sizeof *sets);
	VkDescriptorSetLayout *lay = calloc(nsets, sizeof *lay);
	if (!sets || !lay) {
		free(sets);
		free(lay);
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < nsets; i++)
		lay[i] = b->c.dsl;
	VkDescriptorSetAllocateInfo ai = {
		.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
		.descriptorPool = b->dpool,
		.descriptorSetCount = nsets,
		.pSetLayouts = lay,
	};
	r = b->c.vkAllocateDescriptorSets(b->c.device, &ai, sets);
	free(lay);
	if (r != VK_SUCCESS) {
		free(sets);
		return emb_errf(err, EMB_EDEVICE, "vkAllocateDescriptorSets: %s", vk_result_name(r));
	}
	for (int k = 0; k < b->nas; k++) {
		act_set *a = &b->as[k];
		VkDescriptorSet *ss = sets + (size_t)k * per;
		a->ds_embed = ss[0];
		a->ds_attn = ss[1];
		a->ds_ln = ss[2];
		a->ds_pool = ss[3];
		a->ds_geglu = ss[4];
		memcpy(a->ds_quant, ss + 5, 4 * sizeof *ss);
		memcpy(a->ds_gemm, ss + 9, 4 * b->L * sizeof *ss);
		write_descriptors(b, a);
	}
	free(sets);
	return EMB_OK;
}

/* quant_i8.comp's lanes a row for rows of `pieces` uvec4s: the largest power of two up to
 * 32 and the smallest subgroup the device may give (a row's lanes share one subgroup) that
 * divides them. */
static uint32_t lane_group(uint32_t pieces, uint32_t min_subgroup)
{
	uint32_t l = 32;
	while (l > 1 && (l > min_subgroup || pieces % l))
		l /= 2;
	return l;
}

/* Whether a 16x16 fp32 cooperative matrix lays out its elements as attn_fa.comp's register
 * softmax needs (see there): runs shaders/cm_layout.comp once and checks its answer. Any
 * failure on the way counts as "no", so the caller keeps attn_cm.comp. On a device with int8
 * cooperative matrices (cm_layout_i8.comp) also sets b->i8_lay_same: whether an int8
 * product's int32 accumulators hold their elements where fp32 ones do, with each lane's
 * elements 2p and 2p + 1 in one row, in neighbouring columns, the first even (gemm_i8.glsl's
 * epilogue in the accumulators stores them as f16 pairs). */
static int cm_layout_ok(vk_backend *b)
{
	vk_ctx *c = &b->c;
	enum { LANES = 32, NE = 8 };
	vk_pipe pipe = { 0 };
	vk_buf out = { 0 };
	VkDescriptorPool pool = VK_NULL_HANDLE;
	VkCommandBuffer cb = VK_NULL_HANDLE;
	emb_err err;
	int ok = 0;
	/* the int8 probe where the device has int8 matrices; the plain one if that fails (the
	 * register softmax needs only the fp32 layout) */
	int i8 = c->has_coopmat_i8 && !vk_pipe_create(c, &pipe, "cm_layout_i8", NULL, 0, &err);
	b->i8_lay_same = 0;
	if ((!i8 && vk_pipe_create(c, &pipe, "cm_layout", NULL, 0, &err)) ||
	    vk_buf_create(c, &out, 4 * (1 + LANES * 24), VK_MEM_HOST, &err))
		goto done;
	VkDescriptorPoolSize ps = { VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, VK_BINDINGS };
	VkDescriptorPoolCreateInfo pci = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
					   .maxSets = 1, .poolSizeCount = 1, .pPoolSizes = &ps };
	if (c->vkCreateDescriptorPool(c->device, &pci, NULL, &pool) != VK_SUCCESS)
		goto done;
	VkDescriptorSetAllocateInfo dai = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
					    .descriptorPool = pool, .descriptorSetCount = 1,
					    .pSetLayouts = &c->dsl };
	VkDescriptorSet ds;
	if (c->vkAllocateDescriptorSets(c->device, &dai, &ds) != VK_SUCCESS)
		goto done;
	VkDescriptorBufferInfo in[VK_BINDINGS];
	memset(in, 0, sizeof in);
	in[3] = bi(&out, 0, VK_WHOLE_SIZE);
	ds_write(b, ds, in);
	if (vk_cmd_alloc(c, &cb, &err) || vk_cmd_begin(c, cb, &err))
		goto done;
	c->vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipe.pipe);
	c->vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, c->layout, 0, 1, &ds, 0, NULL);
	c->vkCmdDispatch(cb, 1, 1, 1);
	VkMemoryBarrier hb = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
			       .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
			       .dstAccessMask = VK_ACCESS_HOST_READ_BIT };
	c->vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT,
				0, 1, &hb, 0, NULL, 0, NULL);
	if (vk_submit_wait(c, cb, 10000, &err))
		goto done;
	const uint32_t *v = out.map;
	if (v[0] != NE)
		goto done;
	/* the element layout of an MMA's result (v + 1) and of a loaded matrix (after it):
	 * attn_fa.glsl uses the first; whether they agree is reported by the profile */
	b->cm_load_same = !memcmp(v + 1, v + 1 + LANES * NE, LANES * NE * sizeof *v);
	ok = 1;
	for (int lane = 0; lane < LANES && ok; lane++) {
		/* this lane: two rows, its elements split between them */
		const uint32_t *e = v + 1 + lane * NE;
		uint32_t r0 = e[0] / 16, r1 = 99;
		for (int i = 0; i < NE; i++)
			if (e[i] / 16 != r0)
				r1 = e[i] / 16;
		/* its quad (lanes l^1, l^2, l^3) holds the same two rows and all 16 columns of each */
		unsigned cols[2] = { 0, 0 };
		for (int q = 0; q < 4; q++) {
			const uint32_t *f = v + 1 + (lane ^ q) * NE;
			for (int i = 0; i < NE; i++) {
				const uint32_t r = f[i] / 16;
				if (r != r0 && r != r1)
					ok = 0;
				else
					cols[r != r0] |= 1u << (f[i] % 16);
			}
		}
		if (r1 == 99 || cols[0] != 0xffff || cols[1] != 0xffff)
			ok = 0;
		/* which elements are in the second row: the same for every lane */
		unsigned mask = 0;
		for (int i = 0; i < NE; i++)
			mask |= (unsigned)(e[i] / 16 != r0) << i;
		if (lane == 0)
			b->cm_second = mask;
		else if (mask != b->cm_second)
			ok = 0;
	}
	if (ok && i8) {
		b->i8_lay_same = !memcmp(v + 1, v + 1 + 2 * LANES * NE, LANES * NE * sizeof *v);
		for (int k = 0; k < LANES * NE; k += 2) {
			const uint32_t a = v[1 + k], z = v[2 + k];
			if (a / 16 != z / 16 || a % 2 || z != a + 1)
				b->i8_lay_same = 0;
		}
	}
done:
	if (cb)
		c->vkFreeCommandBuffers(c->device, c->cmd_pool, 1, &cb);
	if (pool)
		c->vkDestroyDescriptorPool(c->device, pool, NULL);
	vk_buf_destroy(c, &out);
	vk_pipe_destroy(c, &pipe);
	return ok;
}

/* One pipeline to build (make_pipelines builds them on threads of their own). */
typedef struct pipe_job {
	vk_ctx *c;
	vk_pipe *p;
	const char *name;
	uint32_t spec[3];
	int nspec, rc;
	emb_err err;
} pipe_job;

static void *pipe_job_run(void *arg)
{
	pipe_job *j = arg;
	j->rc = vk_pipe_create(j->c, j->p, j->name, j->spec, j->nspec, &j->err);
	return NULL;
}

static int make_pipelines(vk_backend *b, emb_err *err)
{
	const int h = b->prec != PREC_FP32;
	/* On a CPU implementation the tiled products run as the shared-memory-free variants
	 * (gemm_direct.glsl), with a 32x32 tile. */
	const int cpu = b->c.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
	/* Tensor-core attention (shaders/attn_cm.comp) is written for head size 32 (MiniLM) and
	 * uses subgroup shuffles, which every NV cooperative-matrix device has; its register
	 * softmax (attn_fa.comp) runs where the device's matrix layout allows it.
	 * set.attn (EMBED_VK_ATTN) = scalar keeps the lane kernel, cm the shared-memory softmax,
	 * fa16 the register softmax with 16 query rows a subgroup and fa the one with 32 at every
	 * batch size (no attn_small), for tests and comparisons. */
	const char *ae = b->c.set.attn;
	/* attn_fa.glsl's register softmax takes head size 32 (attn_fa, attn_fa16) or 64
	 * (attn_fa64: all-mpnet-base-v2, JinaBERT) and the by-distance biases (MPNet's relative
	 * bias, ALiBi), each score's (query, key) pair read off the same layout check; the
	 * shared-memory softmax (attn_cm) only head size 32 without a bias. */
	const int bias = b->rel_span || b->alibi;
	const int cm_any = b->prec == PREC_COOPMAT && strcmp(ae, "scalar");
	/* the accumulators' layout, where attn_fa or the int8 products' epilogue may use it */
	const int lay_ok = b->prec == PREC_COOPMAT && (cm_any || b->i8) && cm_layout_ok(b);
	const int attn_fa = cm_any && (b->D == 32 || b->D == 64) && strcmp(ae, "cm") && lay_ok;
	const int attn_cm = cm_any && !attn_fa && b->D == 32 && !bias;
	/* attn_fa.comp takes its scores in log2 units straight from Q·Kᵀ */
	b->q_scale = attn_fa ? 1.4426950408889634f / sqrtf((float)b->D) : 1.0f;
	b->small_grid = b->c.sm_count ? b->c.sm_count : SMALL_GRID;
	b->small_tiles = b->prec != PREC_COOPMAT ? 0 : b->c.set.small_tiles >= 0 ? b->c.set.small_tiles : 3;
	/* The f16 residual LayerNorm on subgroup shuffles (add_ln_sg.comp), with LPT lanes a
	 * token: the largest power of two that is at most 16, fits the smallest subgroup the
	 * device may give a pipeline and divides H/8, leaving a lane at most 16 pieces of 8
	 * halfs. Elsewhere, or with set.ln_tree (EMBED_VK_LN_TREE, tests), the shared-memory
	 * kernel (layernorm.glsl). */
	b->ln_lanes = 0;
	if (h && b->c.has_shuffle && !b->c.set.ln_tree) {
		uint32_t lpt = 16;
		while (lpt > b->c.min_subgroup_size || (b->H / 8) % lpt)
			lpt /= 2;
		if (lpt >= 2 && b->H / 8 / lpt <= 16)
			b->ln_lanes = lpt;
	}
	const char *names[P_N] = {
		[P_EMBED] = h ? "embed_ln_h" : "embed_ln",
		[P_ADDLN] = b->ln_lanes ? "add_ln_sg" : h ? "add_ln_h" : "add_ln",
		[P_ATTN] = attn_fa ? (b->D == 64 ? "attn_fa64" : !strcmp(ae, "fa16") ? "attn_fa16" : "attn_fa")
			   : attn_cm ? "attn_cm"
			   : h ? (cpu ? "attn_h_cpu" : "attn_h") : (cpu ? "attn_cpu" : "attn"),
		/* for batches whose attn_fa grid has fewer workgroups than the device has SMs
		 * (forward_vk_submit) */
		[P_ATTN_SMALL] = attn_fa && b->D == 32 && !ae[0] ? "attn_fa16" : NULL,
		[P_POOL] = h ? "pool_h" : "pool",
		[P_GEGLU] = !b->geglu ? NULL : h ? "geglu_h" : "geglu",
		[P_GEMM_F32] = h ? NULL : cpu ? "gemm_f32_cpu" : "gemm_f32",
		[P_GEMM_HH] = h ? (cpu ? "gemm_hh_cpu" : "gemm_hh") : NULL,
		[P_CM_WH] = "gemm_cm_wh", [P_CM_WHA] = "gemm_cm_wha",
		[P_CM_LH] = "gemm_cm_lh", [P_CM_LHA] = "gemm_cm_lh",
		[P_CM_HS] = "gemm_cm_hs", [P_CM_HSA] = "gemm_cm_hs",
		[P_CM_HT] = "gemm_cm_ht", [P_CM_HTA] = "gemm_cm_ht",
		[P_QUANT] = b->i8 ? "quant_i8" : NULL,
		[P_QUANT_I] = b->i8 & 1u << G_DOWN ? "quant_i8" : NULL,
		/* the LayerNorms in front of qkv and up quantise for them */
		[P_ADDLN_Q] = b->i8 & (1u << G_QKV | 1u << G_UP) && b->ln_lanes ? "add_ln_sg" : NULL,
		[P_I8_W] = b->i8 ? "gemm_i8_w" : NULL, [P_I8_WA] = b->i8 ? "gemm_i8_w" : NULL,
		[P_I8_L] = b->i8 ? "gemm_i8_l" : NULL, [P_I8_LA] = b->i8 ? "gemm_i8_l" : NULL,
		[P_I8_S] = b->i8 ? "gemm_i8_s" : NULL, [P_I8_SA] = b->i8 ? "gemm_i8_s" : NULL,
		/* 128x128 down tiles without outliers only: with them (the staged
		 * epilogue) 128x96 ran 1.0% faster (docs/bench-gpu.md) */
		[P_I8_Q] = b->i8 & 1u << G_DOWN && b->H % 128 == 0 && !b->nout ? "gemm_i8_q" : NULL,
		[P_I8_WN] = b->i8 & 1u << G_OUT && b->nout ? "gemm_i8_w" : NULL,
		[P_I8_LN] = b->i8 & 1u << G_OUT && b->nout ? "gemm_i8_l" : NULL,
		[P_I8_SN] = b->i8 & 1u << G_OUT && b->nout ? "gemm_i8_s" : NULL,
	};
	b->bq = !strcmp(names[P_ATTN], "attn_fa") ? BQ_FA : BQ;
	const uint32_t act = (uint32_t)b->cfg.act + 1; /* the shaders' activation code */
	pipe_job jobs[P_N];
	int nj = 0;
	for (int i = 0; i < P_N; i++) {
		if (!names[i] || (i >= P_CM_WH && b->prec != PREC_COOPMAT))
			continue;
		/* specialization constant 0: head size (attention), activation (products);
		 * 1: the attention's relative-bias span (attention.glsl); add_ln_sg: lanes a
		 * token and pieces a lane */
		const int with_act = i == P_CM_LHA || i == P_CM_HSA || i == P_CM_HTA || i == P_CM_WHA ||
				     i == P_I8_WA || i == P_I8_LA || i == P_I8_SA;
		pipe_job *j = &jobs[nj++];
		*j = (pipe_job){ .c = &b->c, .p = &b->pipe[i], .name = names[i],
				 .spec = { i == P_ATTN || i == P_ATTN_SMALL ? (attn_fa ? b->cm_second : b->D)
					   : act },
				 .nspec = i == P_ATTN || i == P_ATTN_SMALL || with_act ? 1 : 0 };
		if ((i == P_ATTN || i == P_ATTN_SMALL) && !attn_cm) {
			j->spec[1] = b->rel_span;
			j->spec[2] = (uint32_t)b->alibi;
			j->nspec = 3;
		}
		if (i >= P_I8_W && i <= P_I8_SN) { /* gemm_i8.glsl: activation, outlier products,
						   * the epilogue in the accumulators (which the
						   * outlier products do not take: gemm_i8.glsl) */
			j->spec[0] = with_act ? act : 0;
			j->spec[1] = b->nout > 0 && i < P_I8_WN && !(with_act && b->smooth_up);
			j->spec[2] = b->i8_lay_same && !b->c.set.i8_staged ? b->cm_second : 0;
			j->nspec = 3;
		}
		if ((i == P_ADDLN || i == P_ADDLN_Q) && b->ln_lanes) {
			j->spec[0] = b->ln_lanes;
			j->spec[1] = b->H / 8 / b->ln_lanes;
			j->spec[2] = i == P_ADDLN_Q;
			j->nspec = 3;
		}
		if (i == P_QUANT || i == P_QUANT_I) {
			const uint32_t k8 = (i == P_QUANT ? b->H : b->I) / 8;
			const uint32_t lpr = lane_group(k8, b->c.min_subgroup_size);
			b->quant_lanes[i == P_QUANT_I] = lpr;
			j->spec[0] = lpr;
			j->spec[1] = k8 / lpr;
			j->nspec = 2;
		}
	}
	/* The driver compiles a pipeline on the calling thread, seconds in all on a machine
	 * whose shader cache is cold: one thread a pipeline (inline where none starts). */
	pthread_t th[P_N];
	int started[P_N];
	for (int k = 0; k < nj; k++) {
		started[k] = pthread_create(&th[k], NULL, pipe_job_run, &jobs[k]) == 0;
		if (!started[k])
			pipe_job_run(&jobs[k]);
	}
	for (int k = 0; k < nj; k++)
		if (started[k])
			pthread_join(th[k], NULL);
	for (int k = 0; k < nj; k++)
		if (jobs[k].rc) {
			*err = jobs[k].err;
			return jobs[k].rc;
		}
	const uint32_t N[4] = { 3 * b->H, b->H, b->up_n, b->H }, K[4] = { b->H, b->H, b->H, b->I };
	for (int g = 0; g < 4; g++) {
		const int up = g == G_UP && !b->geglu; /* GEGLU's product has no activation */
		if (b->prec == PREC_FP32)
			b->gemm_pipe[g] = P_GEMM_F32;
		else if (b->i8 >> g & 1 && g == G_DOWN && b->pipe[P_I8_Q].pipe)
			b->gemm_pipe[g] = P_I8_Q;
		else if (b->i8 >> g & 1 && g == G_OUT && b->nout)
			b->gemm_pipe[g] = N[g] % 96 == 0 ? P_I8_WN : P_I8_LN;
		else if (b->i8 >> g & 1)
			b->gemm_pipe[g] = N[g] % 96 == 0 ? (up ? P_I8_WA : P_I8_W) : (up ? P_I8_LA : P_I8_L);
		/* 128x96 tiles where N allows: on an H200 (M = 245760, dev/gemm/tool_vk_gemm) qkv
		 * 156 -> 204 TFLOP/s, up 134 -> 152, down 154 -> 173 (docs/bench-gemm.md).
		 * set.tiles96 = 0 (EMBED_VK_TILES96=0) keeps the 128x64 ones (comparisons, tests). */
		else if (b->prec == PREC_COOPMAT && N[g] % 96 == 0 && K[g] % 64 == 0 && b->c.set.tiles96)
			b->gemm_pipe[g] = up ? P_CM_WHA : P_CM_WH;
		else if (b->prec == PREC_COOPMAT && N[g] % 64 == 0 && K[g] % 64 == 0)
			b->gemm_pipe[g] = up ? P_CM_LHA : P_CM_LH;
		else
			b->gemm_pipe[g] = P_GEMM_HH;
		/* set.gemm (EMBED_VK_GEMM, tests and diagnosis): one kernel for every product of
		 * the cooperative-matrix path, where the shape allows it */
		const char *fg = b->c.set.gemm;
		if (b->prec == PREC_COOPMAT && fg[0] && N[g] % 64 == 0 && K[g] % 64 == 0)
			b->gemm_pipe[g] = !strcmp(fg, "hh") ? P_GEMM_HH : !strcmp(fg, "hs")
					  ? (up ? P_CM_HSA : P_CM_HS) : (up ? P_CM_LHA : P_CM_LH);
	}
	return EMB_OK;
}

static int make_slots(vk_backend *b, emb_err *err)
{
	for (int i = 0; i < SLOTS; i++) {
		slot *s = &b->s[i];
		s->a = &b->as[i % b->nas];
		s->queue = i % b->nas && b->c.queue2 ? b->c.queue2 : b->c.queue;
		int rc = vk_cmd_alloc(&b->c, &s->cb, err);
		if (rc)
			return rc;
		VkFenceCreateInfo fci = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
		VkResult r = b->c.vkCreateFence(b->c.device, &fci, NULL, &s->fence);
		if (r != VK_SUCCESS)
			return emb_errf(err, EMB_EDEVICE, "vkCreateFence: %s", vk_result_name(r));
	}
	b->chunks = malloc((size_t)b->seq_cap * sizeof *b->chunks);
	if (!b->chunks)
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	if (b->c.set.profile && b->c.has_timestamps) {
		b->qcap = 8192;
		VkQueryPoolCreateInfo qci = {
			.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
			.queryType = VK_QUERY_TYPE_TIMESTAMP,
			.queryCount = b->qcap * SLOTS,
		};
		if (b->c.vkCreateQueryPool(b->c.device, &qci, NULL, &b->qp) != VK_SUCCESS) {
			b->qp = VK_NULL_HANDLE;
			b->qcap = 0;
		}
		for (int i = 0; i < SLOTS && b->qcap; i++) {
			b->s[i].qstep = calloc(b->qcap, 1);
			if (!b->s[i].qstep)
				return emb_errf(err, EMB_ENOMEM, "out of memory");
		}
	}
	return EMB_OK;
}

/* --- open / close ---------------------------------------------------------------------- */

static int check_shapes(const bert_config *cfg, emb_err *err)
{
	/* The shaders implement every choice of model.h's description (absolute positions from
	 * any first id, with or without token types, MPNet's relative bias, ALiBi; the
	 * activation or GEGLU feed-forward; post-LayerNorm): refusing anything else here lets
	 * --device auto fall back to the CPU. */
	if ((cfg->arch.pos != POS_ABSOLUTE && cfg->arch.pos != POS_REL_BUCKETS &&
	     cfg->arch.pos != POS_ALIBI) ||
	    (cfg->arch.ffn != FFN_ACT && cfg->arch.ffn != FFN_GEGLU) || cfg->arch.norm != NORM_POST)
		return emb_errf(err, EMB_EUNSUPPORTED, "the Vulkan backend does not run %s models "
				"yet (model_type '%s'); the CPU does", cfg->arch.name, cfg->arch.name);
	if (cfg->arch.pos == POS_REL_BUCKETS &&
	    (cfg->arch.rel_buckets < 4 || cfg->arch.rel_max_distance < 1))
		return emb_errf(err, EMB_EUNSUPPORTED, "the Vulkan backend needs at least 4 relative "
				"position buckets and a positive max distance (got %d, %d)",
				cfg->arch.rel_buckets, cfg->arch.rel_max_distance);
	const int H = cfg->hidden, D = cfg->heads > 0 ? cfg->hidden / cfg->heads : 0;
	if (H <= 0 || H > 1024 || H % 8 || cfg->heads <= 0 || H % cfg->heads || D % 4 || D > 128 ||
	    cfg->intermediate <= 0 || cfg->intermediate % 8 || cfg->layers <= 0)
		return emb_errf(err, EMB_EUNSUPPORTED, "the Vulkan backend needs hidden size <= 1024 "
				"and a multiple of 8, head size a multiple of 4 up to 128, and an "
				"intermediate size a multiple of 8 (got hidden %d, %d heads, "
				"intermediate %d)", H, cfg->heads, cfg->intermediate);
	return EMB_OK;
}

int vk_backend_prepare(const bert_config *cfg, const vk_options *opt, vk_backend **out,
		       emb_err *err)
{
	*out = NULL;
	vk_options def;
	if (!opt) {
		vk_options_default(&def);
		opt = &def;
	}
	int rc = check_shapes(cfg, err);
	if (rc)
		return rc;
	vk_backend *b = calloc(1, sizeof *b);
	if (!b)
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	b->cfg = *cfg;
	b->text_ids[0] = 101, b->text_ids[1] = 102;
	b->H = (uint32_t)cfg->hidden;
	b->I = (uint32_t)cfg->intermediate;
	b->L = (uint32_t)cfg->layers;
	b->heads = (uint32_t)cfg->heads;
	b->D = b->H / b->heads;
	b->alibi = cfg->arch.pos == POS_ALIBI;
	b->geglu = cfg->arch.ffn == FFN_GEGLU;
	b->up_n = b->geglu ? 2 * b->I : b->I;
	/* the longest sequence the position embeddings cover, from the description's first id */
	const int max_pos = cfg->max_positions - cfg->arch.pos_offset;
	b->max_seq = (uint32_t)(opt->max_seq > 0 && opt->max_seq < max_pos ? opt->max_seq : max_pos);
	/* a token's position shares its 32-bit word with its type (16 bits each, layernorm.glsl) */
	if (b->max_seq + (uint32_t)cfg->arch.pos_offset > 0xffffu)
		b->max_seq = 0xffffu - (uint32_t)cfg->arch.pos_offset;
	if (cfg->arch.pos == POS_REL_BUCKETS) {
		/* distances -R..R biased one by one (attention.glsl); none is longer than
		 * max_seq - 1, and from max_distance on all are in the last bucket */
		const uint32_t R = (uint32_t)cfg->arch.rel_max_distance < b->max_seq - 1
					   ? (uint32_t)cfg->arch.rel_max_distance : b->max_seq - 1;
		b->rel_span = 2 * R + 1;
	}
	b->lo = calloc(b->L, sizeof *b->lo);
	int nogemm = 0;
	for (int k = 0; k < SLOTS; k++)
		nogemm |= !(b->as[k].ds_gemm = calloc(4 * (size_t)b->L, sizeof *b->as[k].ds_gemm));
	if (!b->lo || nogemm) {
		vk_backend_close(b);
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	}
	rc = vk_ctx_open(&b->c, opt->gpu_index, opt->allow_cpu, &opt->set, err);
	if (rc) {
		vk_backend_close(b);
		return rc;
	}
	/* set.queues = 2: an activation set a slot, on a queue each where the device has two
	 * (on one queue the batches still run one after the other: the tests' lavapipe) */
	b->nas = b->c.set.queues > 1 ? 2 : 1;
	if (opt->precision == VK_PREC_FP32)
		b->prec = PREC_FP32;
	else if (b->c.has_coopmat)
		b->prec = PREC_COOPMAT;
	else
		b->prec = opt->precision == VK_PREC_FP16 ? PREC_FP16 : PREC_FP32;
	if (opt->precision == VK_PREC_INT8) {
		if (!b->c.has_coopmat_i8) {
			rc = emb_errf(err, EMB_EUNSUPPORTED, "--precision int8 on the GPU needs 8-bit "
				      "cooperative matrices (16x16x32 s8, VK_NV_cooperative_matrix), "
				      "which %s lacks", b->c.props.deviceName);
			vk_backend_close(b);
			return rc;
		}
		/* the products whose shapes gemm_i8.glsl's tiles divide; the rest stay fp16 */
		const uint32_t N[4] = { 3 * b->H, b->H, b->up_n, b->H };
		const uint32_t K[4] = { b->H, b->H, b->H, b->I };
		for (int g = 0; g < 4; g++)
			if (b->c.set.int8_products >> g & 1 && N[g] % 64 == 0 && K[g] % I8_K_STEP == 0)
				b->i8 |= 1u << g;
		/* outlier channels (set.int8_outliers; from the calibration file, else the
		 * model's own calibration pass), else with a file SmoothQuant */
		if (b->i8 && b->c.set.int8_outliers > 0)
			b->nout = (uint32_t)b->c.set.int8_outliers;
		else
			b->smooth = b->i8 && b->c.set.int8_calib[0] && !b->geglu;
		/* with_act's pipelines serve the up product alone (not so with GEGLU) */
		b->smooth_up = b->nout && b->i8 >> G_UP & 1 && b->c.set.int8_smooth_up && !b->geglu;
	}
	snprintf(b->prec_name, sizeof b->prec_name, "%s",
		 b->prec == PREC_FP32 ? "fp32" : b->prec == PREC_FP16 ? "fp16"
		 : b->i8 == 15 ? "int8-coopmat" : b->i8 ? "int8-coopmat (some products)" : "fp16-coopmat");

	double t = vk_now();
	rc = vk_buf_create(&b->c, &b->dummy, 256, VK_MEM_DEVICE, err);
	if (!rc)
		rc = make_pipelines(b, err);
	/* Every pipeline this backend uses now exists: save them for the next open (a cache
	 * that cannot be written costs that open its compile time, nothing else). */
	if (!rc)
		vk_ctx_save_pipeline_cache(&b->c);
	b->t_pipes = vk_now() - t, t += b->t_pipes;
	if (!rc)
		rc = alloc_weights(b, err);
	b->t_upload = vk_now() - t, t += b->t_upload;
	if (rc) {
		vk_backend_close(b);
		return rc;
	}

	/* Token budget: as asked (or the default), no larger than the device lets one buffer
	 * be, at least one longest sequence; halved while the device is out of memory. */
	const int is_cpu = b->c.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
	const uint64_t widest = (uint64_t)(3 * b->H > b->up_n ? 3 * b->H : b->up_n) *
				(b->prec == PREC_FP32 ? 4 : 2);
	/* Default on a GPU: activations for up to 256k tokens, at most an eighth of the largest
	 * device-local heap. Fewer passes through the layers mean fewer drains of the GPU
	 * between dependent dispatches: on an H200 batch 1000 ran 17,283 docs/s with a budget of
	 * 32k tokens, 17,996 with 128k and 18,169 with 256k. */
	uint64_t budget = (uint64_t)opt->token_budget;
	if (opt->token_budget <= 0 && is_cpu) {
		budget = 8192;
	} else if (opt->token_budget <= 0) {
		VkDeviceSize heap = 0;
		for (uint32_t i = 0; i < b->c.mem.memoryHeapCount; i++)
			if (b->c.mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT &&
			    b->c.mem.memoryHeaps[i].size > heap)
				heap = b->c.mem.memoryHeaps[i].size;
		const uint64_t ea = b->prec == PREC_FP32 ? 4 : 2; /* as in alloc_activations */
		/* x or x16, tmp, qkv, ctx, ffn (and GEGLU's gact) */
		const uint64_t row = (uint64_t)(6 * b->H + b->up_n + (b->geglu ? b->I : 0)) * ea +
				     (b->i8 ? (b->I > b->H ? b->I : b->H) + 4 : 0);
		budget = heap / 8 / (uint64_t)b->nas / row;
		budget = budget < 32768 ? 32768 : budget > 262144 ? 262144 : budget;
	}
	const uint64_t range_rows = b->c.props.limits.maxStorageBufferRange / widest;
	if (budget + ROWPAD > range_rows)
		budget = range_rows > ROWPAD ? range_rows - ROWPAD : 0;
	if (budget < b->max_seq)
		budget = b->max_seq;
	if (budget > 1u << 20)
		budget = 1u << 20;
	for (;;) {
		b->budget = (uint32_t)budget;
		b->rows = (uint32_t)align_up(budget, ROWPAD);
		rc = alloc_activations(b, err);
		if (rc != EMB_ENOMEM || budget / 2 < b->max_seq)
			break;
		budget /= 2;
	}
	if (!rc)
		rc = make_descriptors(b, err);
	if (!rc)
		rc = make_slots(b, err);
	b->t_buffers = vk_now() - t;
	if (rc) {
		if (rc == EMB_ENOMEM)
			emb_err_prefix(err, "out of device memory on %s: ", b->c.props.deviceName);
		vk_backend_close(b);
		return rc;
	}
	*out = b;
	return EMB_OK;
}

void vk_backend_set_calibration(vk_backend *b, int32_t cls, int32_t sep, threadpool *pool)
{
	b->text_ids[0] = cls, b->text_ids[1] = sep;
	b->calib_pool = pool;
}

int vk_backend_upload(vk_backend *b, const bert_weights *w, emb_err *err)
{
	if (b->ready)
		return emb_errf(err, EMB_EINVAL, "vk_backend_upload: the weights are uploaded already");
	double t = vk_now();
	int rc = upload_weights(b, w, err);
	b->t_upload += vk_now() - t;
	b->ready = !rc;
	return rc;
}

int vk_backend_open(const bert_config *cfg, const bert_weights *w, const vk_options *opt,
		    vk_backend **out, emb_err *err)
{
	int rc = vk_backend_prepare(cfg, opt, out, err);
	if (!rc && (rc = vk_backend_upload(*out, w, err))) {
		vk_backend_close(*out);
		*out = NULL;
	}
	return rc;
}

void vk_backend_close(vk_backend *b)
{
	if (!b)
		return;
	if (b->c.device) {
		while (b->inflight > 0 && forward_vk_wait(b, NULL) == EMB_OK)
			;
		b->c.vkDeviceWaitIdle(b->c.device);
		for (int i = 0; i < SLOTS; i++) {
			if (b->s[i].fence)
				b->c.vkDestroyFence(b->c.device, b->s[i].fence, NULL);
			if (b->s[i].cb)
				b->c.vkFreeCommandBuffers(b->c.device, b->c.cmd_pool, 1, &b->s[i].cb);
			free(b->s[i].qstep);
		}
		if (b->qp)
			b->c.vkDestroyQueryPool(b->c.device, b->qp, NULL);
		if (b->dpool)
			b->c.vkDestroyDescriptorPool(b->c.device, b->dpool, NULL);
		for (int i = 0; i < P_N; i++)
			vk_pipe_destroy(&b->c, &b->pipe[i]);
		free_activations(b);
		vk_buf_destroy(&b->c, &b->wmat);
		vk_buf_destroy(&b->c, &b->wemb);
		vk_buf_destroy(&b->c, &b->wvec);
		vk_buf_destroy(&b->c, &b->dummy);
	}
	vk_ctx_close(&b->c);
	free(b->chunks);
	free(b->lo);
	for (int k = 0; k < SLOTS; k++)
		free(b->as[k].ds_gemm);
	free(b);
}

void vk_backend_open_times(const vk_backend *b, char *buf, size_t cap)
{
	const vk_ctx *c = &b->c;
	snprintf(buf, cap, "loader %.3f, instance %.3f, device %.3f, layouts+cache file %.3f, "
		 "pipelines %.3f, weights upload %.3f, activations+descriptors %.3f s",
		 c->t_loader, c->t_instance, c->t_device, c->t_layouts, b->t_pipes, b->t_upload,
		 b->t_buffers);
}

const struct vk_ctx *vk_backend_ctx(const vk_backend *b)
{
	return &b->c;
}

const char *vk_backend_device_name(const vk_backend *b)
{
	return b && b->c.name[0] ? b->c.name : "no Vulkan device";
}

const char *vk_backend_precision_name(const vk_backend *b)
{
	return b ? b->prec_name : "none";
}

int vk_backend_is_cpu(const vk_backend *b)
{
	return b && b->c.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
}

void vk_backend_capacity(const vk_backend *b, int *tokens, int *seqs)
{
	*tokens = (int)b->tok_cap;
	*seqs = (int)b->seq_cap;
}

/* --- recording ------------------------------------------------------------------------- */

static void ts(vk_backend *b, slot *s, int step)
{
	if (!b->qcap || s->nq >= b->qcap)
		return;
	int idx = (int)(s - b->s);
	if (s->nq > 0)
		s->qstep[s->nq - 1] = (uint8_t)step;
	b->c.vkCmdWriteTimestamp(s->cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, b->qp,
				 (uint32_t)idx * b->qcap + s->nq);
	s->nq++;
}

static void dispatch(vk_backend *b, slot *s, int step, int pipe, VkDescriptorSet ds,
		     const void *pc, uint32_t pcsize, uint32_t gx, uint32_t gy)
{
	vk_ctx *c = &b->c;
	c->vkCmdBindPipeline(s->cb, VK_PIPELINE_BIND_POINT_COMPUTE, b->pipe[pipe].pipe);
	c->vkCmdBindDescriptorSets(s->cb, VK_PIPELINE_BIND_POINT_COMPUTE, c->layout, 0, 1, &ds, 0, NULL);
	c->vkCmdPushConstants(s->cb, c->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, pcsize, pc);
	c->vkCmdDispatch(s->cb, gx, gy, 1);
	vk_cmd_barrier(c, s->cb);
	ts(b, s, step);
}

/* A 1-D launch of n workgroups, split over y past 32768 (see flat_group in common.glsl). */
static void grid1(uint32_t n, uint32_t *gx, uint32_t *gy)
{
	*gx = n <= 32768 ? n : 32768;
	*gy = (n + *gx - 1) / *gx;
}

/* Whether the LayerNorm in front of product g of layer l writes its int8 input (P_ADDLN_Q):
 * up's (LN1), and qkv's but the first layer's (LN2 of the layer before; the first follows
 * the embedding LayerNorm, which does not). */
static int ln_quantises(const vk_backend *b, int g, uint32_t l)
{
	return b->pipe[P_ADDLN_Q].pipe && b->i8 >> g & 1 && (g == G_UP || (g == G_QKV && l > 0));
}

/* The pipeline of int8 product g for a chunk of M tokens: its own, or where that grid would
 * leave SMs idle the 64x64 tiles (4x the workgroups) */
static int i8_pipe(const vk_backend *b, int g, uint32_t M)
{
	const uint32_t N[4] = { 3 * b->H, b->H, b->up_n, b->H };
	const int p = b->gemm_pipe[g];
	if (b->small_tiles && (N[g] / gemm_tile[p][0]) * ((M + 255) / 256) < b->small_grid)
		return p == P_I8_WA || p == P_I8_LA ? P_I8_SA : p == P_I8_WN || p == P_I8_LN ? P_I8_SN
		       : P_I8_S;
	return p;
}

static void rec_gemm(vk_backend *b, slot *s, int g, uint32_t l, uint32_t M)
{
	static const int steps[4] = { ST_QKV, ST_OUT, ST_UP, ST_DOWN };
	const uint32_t N[4] = { 3 * b->H, b->H, b->up_n, b->H }, K[4] = { b->H, b->H, b->H, b->I };
	const uint32_t act = g == G_UP && !b->geglu ? (uint32_t)b->cfg.act + 1 : 0;
	pc_gemm pc = { M, N[g], K[g], b->lo[l].bias[g], act };
	int p = b->gemm_pipe[g];
	if (b->i8 >> g & 1) {
		p = i8_pipe(b, g, M);
		/* quantise the input (quant_i8.comp: 128 / lanes rows a workgroup) unless the
		 * LayerNorm before did (ln_quantises), then the int8 product, which reads W's
		 * scales where the others read the activation code */
		if (!ln_quantises(b, g, l)) {
			const int qp = g == G_DOWN ? P_QUANT_I : P_QUANT;
			const uint32_t rows = 128 / b->quant_lanes[qp == P_QUANT_I];
			pc_quant pq = { M, K[g], b->lo[l].sinv[g], b->lo[l].omap[g] };
			uint32_t gx, gy;
			grid1((M + rows - 1) / rows, &gx, &gy);
			dispatch(b, s, steps[g], qp, s->a->ds_quant[g], &pq, sizeof pq, gx, gy);
		}
		pc.act = b->lo[l].wscale[g];
		dispatch(b, s, steps[g], p, s->a->ds_gemm[4 * l + g], &pc, sizeof pc,
			 N[g] / gemm_tile[p][0], (M + gemm_tile[p][1] - 1) / gemm_tile[p][1]);
		return;
	}
	const int with_act = p == P_CM_WHA || p == P_CM_LHA;
	const int large = with_act || p == P_CM_WH || p == P_CM_LH;
	if (b->small_tiles && large && !b->c.set.gemm[0] && (N[g] / gemm_tile[p][0]) * ((M + 255) / 256) < b->small_grid) {
		int t = b->small_tiles;
		if (t == 3) /* auto: the largest tile whose grid still fills the chip */
			t = (N[g] / 64) * ((M + 63) / 64) < b->small_grid ? 2 : 1;
		p = t == 2 ? (with_act ? P_CM_HTA : P_CM_HT) : (with_act ? P_CM_HSA : P_CM_HS);
	}
	uint32_t tn = gemm_tile[p][0], tm = gemm_tile[p][1];
	if (b->c.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU && tn == 64)
		tn = tm = 32;
	dispatch(b, s, steps[g], p, s->a->ds_gemm[4 * l + g], &pc, sizeof pc, (N[g] + tn - 1) / tn,
		 (M + tm - 1) / tm);
}

/* The residual LayerNorm; with quant (ln_quantises of the product after it) it also writes
 * that product's int8 input, divided by the factors at sinv (or NO_SMOOTH), its outlier
 * channels (slots at omap, or NO_OUTLIERS) apart */
static void rec_ln(vk_backend *b, slot *s, int step, uint32_t T, uint32_t g_off, uint32_t b_off,
		   int quant, uint32_t sinv, uint32_t omap)
{
	pc_ln pc = { T, b->H, 0, 0, 0, g_off, b_off, b->cfg.layer_norm_eps, sinv, omap };
	uint32_t gx, gy;
	/* tokens a workgroup: add_ln_sg.comp's groups of lanes, or layernorm.glsl's */
	const uint32_t tpw = b->ln_lanes ? 128 / b->ln_lanes * LN_ROUNDS : LN_TOKENS;
	grid1((T + tpw - 1) / tpw, &gx, &gy);
	dispatch(b, s, step, quant ? P_ADDLN_Q : P_ADDLN, s->a->ds_ln, &pc, sizeof pc, gx, gy);
}

static void record(vk_backend *b, slot *s, const chunk *ch, int nch, uint32_t ntok, uint32_t nseq,
		   uint32_t nblk, int attn)
{
	vk_ctx *c = &b->c;
	VkCommandBufferBeginInfo bi = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
		.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
	};
	c->vkResetCommandBuffer(s->cb, 0);
	c->vkBeginCommandBuffer(s->cb, &bi);
	s->nq = 0;
	if (b->qcap) {
		c->vkCmdResetQueryPool(s->cb, b->qp, (uint32_t)(s - b->s) * b->qcap, b->qcap);
	}
	/* The batch before on this queue may still read `in` and write the activations: the
	 * other slot's with one activation set, this slot's last one with two. */
	vk_cmd_barrier(c, s->cb);
	VkBufferCopy reg[3] = {
		{ 0, b->off_tok, (VkDeviceSize)ntok * 8 },
		{ s->h_seq, b->off_seq, (VkDeviceSize)nseq * 8 },
		{ s->h_blk, b->off_blk, (VkDeviceSize)nblk * 16 },
	};
	c->vkCmdCopyBuffer(s->cb, s->host.buf, s->a->in.buf, 3, reg);
	vk_cmd_barrier(c, s->cb);
	ts(b, s, ST_EMBED);

	const float scale = 1.0f / sqrtf((float)b->D);
	for (int k = 0; k < nch; k++) {
		const chunk *q = &ch[k];
		uint32_t gx, gy;
		pc_ln pe = { q->T, b->H, q->tok0, b->emb_pos, b->emb_type, b->emb_g, b->emb_b,
			     b->cfg.layer_norm_eps, NO_SMOOTH, NO_OUTLIERS };
		grid1((q->T + LN_TOKENS - 1) / LN_TOKENS, &gx, &gy);
		dispatch(b, s, ST_EMBED, P_EMBED, s->a->ds_embed, &pe, sizeof pe, gx, gy);
		for (uint32_t l = 0; l < b->L; l++) {
			const layer_off *o = &b->lo[l];
			rec_gemm(b, s, G_QKV, l, q->T);
			pc_attn pa = { q->blk0, b->H, scale, b->rel_off };
			dispatch(b, s, ST_ATTN, attn, s->a->ds_attn, &pa, sizeof pa, q->nblk,
				 b->heads);
			rec_gemm(b, s, G_OUT, l, q->T);
			rec_ln(b, s, ST_LN1, q->T, o->ln1_g, o->ln1_b, ln_quantises(b, G_UP, l),
			       o->sinv[G_UP], o->omap[G_UP]);
			rec_gemm(b, s, G_UP, l, q->T);
			if (b->geglu) {
				pc_geglu pg = { q->T, b->I };
				grid1((q->T * (b->I / 2) + 255) / 256, &gx, &gy);
				dispatch(b, s, ST_GEGLU, P_GEGLU, s->a->ds_geglu, &pg, sizeof pg, gx,
					 gy);
			}
			rec_gemm(b, s, G_DOWN, l, q->T);
			const int qn = l + 1 < b->L && ln_quantises(b, G_QKV, l + 1);
			rec_ln(b, s, ST_LN2, q->T, o->ln2_g, o->ln2_b, qn,
			       qn ? b->lo[l + 1].sinv[G_QKV] : NO_SMOOTH,
			       qn ? b->lo[l + 1].omap[G_QKV] : NO_OUTLIERS);
		}
		pc_pool pp = { q->seq0, b->H, (uint32_t)b->cfg.pooling, (uint32_t)(b->cfg.normalize != 0),
			       q->seq0, q->nseq };
		grid1(q->nseq, &gx, &gy);
		dispatch(b, s, ST_POOL, P_POOL, s->a->ds_pool, &pp, sizeof pp, gx, gy);
	}
	VkBufferCopy oreg = { 0, s->h_out, (VkDeviceSize)nseq * b->H * 4 };
	c->vkCmdCopyBuffer(s->cb, s->a->outd.buf, s->host.buf, 1, &oreg);
	VkMemoryBarrier hb = {
		.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
		.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
		.dstAccessMask = VK_ACCESS_HOST_READ_BIT,
	};
	c->vkCmdPipelineBarrier(s->cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0,
				1, &hb, 0, NULL, 0, NULL);
	c->vkEndCommandBuffer(s->cb);
}

/* --- submit / wait ------------------------------------------------------------------- */

static int check_batch(const vk_backend *b, const fwd_batch *bt, emb_err *err)
{
	if (bt->n < 0 || !bt->offs || bt->offs[0] != 0)
		return emb_errf(err, EMB_EINVAL, "bad batch: n = %d", bt->n);
	for (int i = 0; i < bt->n; i++) {
		int len = bt->offs[i + 1] - bt->offs[i];
		if (len < 1 || (uint32_t)len > b->max_seq)
			return emb_errf(err, EMB_EINVAL, "sequence %d has %d tokens (1..%u allowed)", i,
					len, b->max_seq);
	}
	for (int t = 0; t < bt->offs[bt->n]; t++)
		if (bt->ids[t] < 0 || bt->ids[t] >= b->cfg.vocab_size)
			return emb_errf(err, EMB_EINVAL, "token id %d out of range (vocabulary %d)",
					(int)bt->ids[t], b->cfg.vocab_size);
	for (int t = 0; bt->types && t < bt->offs[bt->n]; t++)
		if (bt->types[t] >= (b->cfg.arch.token_types ? b->cfg.type_vocab_size : 1))
			return emb_errf(err, EMB_EINVAL, "token type %d out of range (type_vocab_size %d)",
					bt->types[t], b->cfg.arch.token_types ? b->cfg.type_vocab_size : 0);
	return EMB_OK;
}

int forward_vk_submit(vk_backend *b, const fwd_batch *bt, float *out, emb_err *err)
{
	if (!b->ready)
		return emb_errf(err, EMB_EINVAL, "forward_vk_submit: no weights (vk_backend_upload)");
	int rc = check_batch(b, bt, err);
	if (rc)
		return rc;
	if (bt->n == 0)
		return EMB_OK;
	const uint32_t ntok = (uint32_t)bt->offs[bt->n];
	if (ntok > b->tok_cap || (uint32_t)bt->n > b->seq_cap)
		return emb_errf(err, EMB_EINVAL, "batch of %d sequences, %u tokens exceeds the "
				"capacity of one submission (%u sequences, %u tokens)", bt->n, ntok,
				b->seq_cap, b->tok_cap);
	const int idx = (b->head + b->inflight) % SLOTS;
	if (b->inflight == SLOTS && (rc = forward_vk_wait(b, err)))
		return rc;
	slot *s = &b->s[idx];

	/* A batch whose attention grid would not give every SM a workgroup takes the kernel
	 * with half the query block (and twice the workgroups): batch 2 on an H200 ran at
	 * 4,535-4,546 docs/s with 128-query blocks, 4,748-4,751 with 64 (docs/bench-gpu.md). */
	int attn = P_ATTN;
	uint32_t bq = b->bq;
	if (b->pipe[P_ATTN_SMALL].pipe) {
		uint32_t n = 0;
		for (int i = 0; i < bt->n; i++)
			n += ((uint32_t)(bt->offs[i + 1] - bt->offs[i]) + bq - 1) / bq;
		if (n * b->heads < b->small_grid) {
			attn = P_ATTN_SMALL;
			bq = BQ;
		}
	}
	/* The staging slot: (id, position) pairs, the sequence table, the block table, then
	 * room for the output vectors; grown to a power of two when this batch needs more. */
	uint64_t blocks = 0;
	for (int i = 0; i < bt->n; i++)
		blocks += ((uint32_t)(bt->offs[i + 1] - bt->offs[i]) + bq - 1) / bq;
	s->h_seq = align_up((VkDeviceSize)ntok * 8, ALIGN);
	s->h_blk = align_up(s->h_seq + (VkDeviceSize)bt->n * 8, ALIGN);
	s->h_out = align_up(s->h_blk + blocks * 16, ALIGN);
	const VkDeviceSize need = s->h_out + (VkDeviceSize)bt->n * b->H * 4;
	if (s->host.size < need) {
		VkDeviceSize size = (VkDeviceSize)1 << 20;
		while (size < need)
			size *= 2;
		vk_buf_destroy(&b->c, &s->host);
		if ((rc = vk_buf_create(&b->c, &s->host, size, VK_MEM_HOST, err)))
			return rc;
	}
	uint32_t *tok = (uint32_t *)s->host.map;
	uint32_t *seq = (uint32_t *)((char *)s->host.map + s->h_seq);
	uint32_t *blk = (uint32_t *)((char *)s->host.map + s->h_blk);
	int nch = 0;
	uint32_t nblk = 0;
	chunk *q = NULL;
	for (int i = 0; i < bt->n; i++) {
		const uint32_t st = (uint32_t)bt->offs[i], len = (uint32_t)(bt->offs[i + 1] - bt->offs[i]);
		if (!q || q->T + len > b->budget) {
			q = &b->chunks[nch++];
			*q = (chunk){ .tok0 = st, .seq0 = (uint32_t)i, .blk0 = nblk };
		}
		const uint32_t rel = q->T; /* sequence start within the chunk */
		/* position ids from the description's first, in the low 16 bits (max_positions
		 * is at most 65536); the token type in the high ones (layernorm.glsl) */
		for (uint32_t t = 0; t < len; t++) {
			tok[2 * (st + t)] = (uint32_t)bt->ids[st + t];
			tok[2 * (st + t) + 1] = (t + (uint32_t)b->cfg.arch.pos_offset) |
						(bt->types ? (uint32_t)bt->types[st + t] << 16 : 0);
		}
		seq[2 * i] = rel;
		seq[2 * i + 1] = len;
		for (uint32_t q0 = 0; q0 < len; q0 += bq) {
			blk[4 * nblk] = rel;
			blk[4 * nblk + 1] = len;
			blk[4 * nblk + 2] = rel + q0;
			blk[4 * nblk + 3] = 0;
			nblk++;
			q->nblk++;
		}
		q->T += len;
		q->nseq++;
	}
	/* Pool writes row seq0 + s of outd; seq offsets in the table are per chunk: */
	record(b, s, b->chunks, nch, ntok, (uint32_t)bt->n, nblk, attn);

	VkResult r = b->c.vkResetFences(b->c.device, 1, &s->fence);
	VkSubmitInfo si = {
		.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
		.commandBufferCount = 1,
		.pCommandBuffers = &s->cb,
	};
	if (r == VK_SUCCESS)
		r = b->c.vkQueueSubmit(s->queue, 1, &si, s->fence);
	if (r != VK_SUCCESS)
		return emb_errf(err, r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY
					     ? EMB_ENOMEM : EMB_EDEVICE,
				"Vulkan: vkQueueSubmit failed: %s", vk_result_name(r));
	s->out = out;
	s->n = bt->n;
	/* Products 2(4H^2 + H(up_n + I)) a token and layer, attention 4 H x its sequence's
	 * length. */
	s->work = 0;
	for (int i = 0; i < bt->n; i++) {
		const double len = bt->offs[i + 1] - bt->offs[i];
		s->work += len * (2.0 * (4.0 * b->H * b->H + (double)b->H * (b->up_n + b->I)) +
				  4.0 * b->H * len);
	}
	s->work *= b->L;
	b->inflight++;
	return EMB_OK;
}

static void collect_profile(vk_backend *b, slot *s)
{
	if (!b->qcap || s->nq < 2)
		return;
	uint64_t *t = malloc(s->nq * sizeof *t);
	if (!t)
		return;
	int idx = (int)(s - b->s);
	if (b->c.vkGetQueryPoolResults(b->c.device, b->qp, (uint32_t)idx * b->qcap, s->nq,
				       s->nq * sizeof *t, t, sizeof *t,
				       VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) == VK_SUCCESS) {
		for (uint32_t i = 0; i + 1 < s->nq; i++)
			b->prof_ns[s->qstep[i]] += (double)(t[i + 1] - t[i]) * b->c.timestamp_ns;
		b->prof_batches++;
	}
	free(t);
}

int forward_vk_wait(vk_backend *b, emb_err *err)
{
	if (b->inflight == 0)
		return EMB_OK;
	slot *s = &b->s[b->head];
	const int is_cpu = b->c.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
	double limit_s = b->c.set.timeout_s > 0 ? b->c.set.timeout_s
		       : is_cpu ? WAIT_FLOOR_CPU_S + s->work / SLOWEST_CPU_FLOPS
				: WAIT_FLOOR_S + s->work / SLOWEST_GPU_FLOPS;
	VkResult r = b->c.vkWaitForFences(b->c.device, 1, &s->fence, VK_TRUE,
					  (uint64_t)(limit_s * 1e9));
	if (r == VK_TIMEOUT) {
		/* The batch stays in flight (its buffers must outlive it: closing waits for it),
		 * but its caller has been told it failed and may free out: never write there. */
		s->out = NULL;
		return emb_errf(err, EMB_EDEVICE, "GPU did not finish a batch of %d sequences "
				"(%.3g GFLOP) within %.3g s (%s)", s->n, s->work / 1e9, limit_s,
				b->c.set.timeout_s > 0 ? "the limit set by EMBED_GPU_TIMEOUT"
				: "a limit that grows with the batch; EMBED_GPU_TIMEOUT=SECONDS sets another");
	}
	b->head = (b->head + 1) % SLOTS;
	b->inflight--;
	if (r != VK_SUCCESS)
		return emb_errf(err, EMB_EDEVICE, "Vulkan: waiting for the GPU failed: %s",
				vk_result_name(r));
	if (s->out)
		memcpy(s->out, (char *)s->host.map + s->h_out, (size_t)s->n * b->H * sizeof(float));
	collect_profile(b, s);
	return EMB_OK;
}

/* Runs sequences [i0, i1) of bt, halving on out-of-memory. */
static int run_range(vk_backend *b, const fwd_batch *bt, int i0, int i1, float *out, emb_err *err)
{
	const int n = i1 - i0;
	int *offs = malloc(((size_t)n + 1) * sizeof *offs);
	if (!offs)
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	for (int i = 0; i <= n; i++)
		offs[i] = bt->offs[i0 + i] - bt->offs[i0];
	fwd_batch sub = { .n = n, .ids = bt->ids + bt->offs[i0], .offs = offs,
			  .types = bt->types ? bt->types + bt->offs[i0] : NULL };
	int rc = forward_vk_submit(b, &sub, out + (size_t)i0 * b->H, err);
	if (!rc)
		rc = forward_vk_wait(b, err);
	free(offs);
	if (rc == EMB_ENOMEM && n > 1) {
		int mid = i0 + n / 2;
		rc = run_range(b, bt, i0, mid, out, err);
		if (!rc)
			rc = run_range(b, bt, mid, i1, out, err);
	} else if (rc == EMB_ENOMEM) {
		emb_err_prefix(err, "out of device memory even for one sequence: ");
	}
	return rc;
}

int forward_vk(vk_backend *b, const fwd_batch *bt, float *out, emb_err *err)
{
	int rc = check_batch(b, bt, err);
	while (!rc && b->inflight > 0)
		rc = forward_vk_wait(b, err);
	/* Parts that fit one submission each. */
	for (int i0 = 0; !rc && i0 < bt->n;) {
		int i1 = i0;
		while (i1 < bt->n && (uint32_t)(i1 - i0) < b->seq_cap &&
		       (uint32_t)(bt->offs[i1 + 1] - bt->offs[i0]) <= b->tok_cap)
			i1++;
		rc = run_range(b, bt, i0, i1, out, err);
		i0 = i1;
	}
	return rc;
}

void vk_backend_profile_reset(vk_backend *b)
{
	if (!b)
		return;
	memset(b->prof_ns, 0, sizeof b->prof_ns);
	b->prof_batches = 0;
}

void vk_backend_profile_report(const vk_backend *b, FILE *f)
{
	if (!b || !b->qcap || !b->prof_batches)
		return;
	double total = 0;
	for (int i = 0; i < ST_N; i++)
		total += b->prof_ns[i];
	fprintf(f, "GPU time per step over %ld submissions (%s, %s, attention %s%s%s, "
		"second-row accumulator elements 0x%02x, loaded matrices %s%s):\n", b->prof_batches,
		b->c.name, b->prec_name, b->pipe[P_ATTN].name,
		b->pipe[P_ATTN_SMALL].pipe ? " or, small grids, " : "",
		b->pipe[P_ATTN_SMALL].pipe ? b->pipe[P_ATTN_SMALL].name : "", b->cm_second,
		b->cm_load_same ? "laid out alike" : "laid out otherwise",
		!b->i8 ? "" : b->i8_lay_same ? ", int32 accumulators alike" : ", int32 accumulators otherwise");
	for (int i = 0; i < ST_N; i++)
		fprintf(f, "  %-24s %10.3f ms  %5.1f%%  %8.3f ms a submission\n", step_name[i],
			b->prof_ns[i] / 1e6, total > 0 ? 100.0 * b->prof_ns[i] / total : 0.0,
			b->prof_ns[i] / 1e6 / (double)b->prof_batches);
	fprintf(f, "  %-24s %10.3f ms          %8.3f ms a submission\n", "total", total / 1e6,
		total / 1e6 / (double)b->prof_batches);
	/* with EMBED_VK_STATS: registers and shared memory of each pipeline */
	for (int i = 0; i < P_N; i++)
		vk_pipe_report(&b->c, &b->pipe[i], f);
}
