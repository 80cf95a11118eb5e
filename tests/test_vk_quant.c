/* The int8 activations of --precision int8 on the GPU, against a CPU reference written from
 * their contract: each row of K f16 values (divided first by its SmoothQuant factor, when
 * given) becomes K int8 codes clamp(roundEven(x * 127 / m), -127, 127) and one scale m / 127,
 * m = max |x| over the row (codes 0 and scale 0 for a row of zeros). Two kernels make them:
 * shaders/quant_i8.comp (the quantising pass) and shaders/add_ln_sg.comp with QUANT (the
 * residual LayerNorm that quantises its own f16 output for the next product). The forward
 * pass only meets them on GPUs with 8-bit cooperative matrices, where they are checked through
 * whole vectors; here they run alone on whatever device is chosen (lavapipe in CI), row by row
 * and code by code (an H200: every code of the pass but 2 of 256,480 exact, those two a value
 * within the division's error of a tie).
 *
 * Pass rows: random values, all zeros, one outlier, every value the same, values on the
 * rounding ties of their grid, negative maxima; widths 8 (one uvec4) to 1,536 (the FFN's), on
 * the lanes a row the engine picks and on half as many; row counts that leave the last
 * workgroup part empty; with and without factors, and with outlier channels (kept out of the
 * codes and the scale, their values in f16 beside them). LayerNorm: widths 256, 384 and 768, the
 * LayerNorm itself against a CPU one, its codes against the reference applied to the f16
 * output it stored (within that output's rounding: the kernel quantises the fp32 values). Exits 77 without a Vulkan device with subgroup shuffles. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "testutil.h"
#include "vk_ctx.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float frand(void) /* uniform in [-1, 1) */
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float h2f(uint16_t h) { return _cvtsh_ss(h); }
static uint16_t f2h(float f) { return _cvtss_sh(f, 0); }

#define NO_SMOOTH 0xffffffffu

static long codes, bad, near;

/* One row's codes and scale as the contract says (float arithmetic in the shader's order);
 * u gets each value before rounding. */
static void reference(const uint16_t *x, const float *sinv, const float *omap, uint32_t K, int8_t *q,
		      float *u, float *s)
{
	float m = 0;
	for (uint32_t k = 0; k < K; k++) {
		float v = h2f(x[k]) * (sinv ? sinv[k] : 1.0f);
		/* an outlier counts at 127 / 60000: its v * 127 / m must fit f16 */
		m = fmaxf(m, fabsf(v) * (omap && omap[k] >= 0 ? 127.0f / 60000.0f : 1.0f));
	}
	const float inv = m > 0 ? 127.0f / m : 0.0f;
	*s = m / 127.0f;
	for (uint32_t k = 0; k < K; k++) {
		float v = u[k] = h2f(x[k]) * (sinv ? sinv[k] : 1.0f) * inv;
		if (omap && omap[k] >= 0)
			v = u[k] = 0.0f; /* out of the codes: its v * inv goes to xo */
		v = nearbyintf(v); /* round half to even in the default rounding mode */
		q[k] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
	}
}

/* Checks T rows of K codes q and scales s against the reference applied to the f16 rows x;
 * with omap (each channel's outlier slot, or -1) also the outliers' values xo (16 a row).
 * from32: the kernel quantised the fp32 values whose f16 rounding x holds (add_ln_sg.comp), so
 * a scale may differ by that rounding (2^-11 relative), and a code by one where the value lies
 * within twice that of a rounding boundary. */
static void check_rows(const char *what, const uint16_t *x, uint32_t T, uint32_t K, const float *sinv,
		       const float *omap, const uint16_t *xo, const int8_t *q, const float *s, int from32)
{
	int8_t *want = malloc(K);
	float *u = malloc((size_t)K * sizeof *u);
	for (uint32_t r = 0; r < T; r++) {
		float ws;
		reference(x + (size_t)r * K, sinv, omap, K, want, u, &ws);
		for (uint32_t k = 0; omap && k < K; k++)
			if (omap[k] >= 0) {
				/* in the row's units, v * 127 / m, in f16: within its rounding and
				 * the division's (the LayerNorm's from its fp32 value: and within
				 * x16's rounding and the scale's) */
				const float got = h2f(xo[r * 16 + (uint32_t)omap[k]]);
				const float w = h2f(x[(size_t)r * K + k]) * (ws > 0 ? 1.0f / ws : 0.0f);
				CHECK(fabsf(got - w) <= (from32 ? 2.5e-3f : 1.5e-3f) * fabsf(w) + 1e-6f,
				      "%s K %u row %u: outlier %u is %g, want %g", what, K, r, k, got, w);
			}
		/* GLSL divides within 2.5 ulp (a reciprocal and a multiply here) */
		CHECK(fabsf(s[r] - ws) <= (from32 ? 4.9e-4f : 3e-7f) * ws, "%s K %u%s row %u: scale %.9g, "
		      "want %.9g", what, K, sinv ? " smoothed" : "", r, s[r], ws);
		int shown = 0;
		for (uint32_t k = 0; k < K; k++, codes++) {
			const int d = q[(size_t)r * K + k] - want[k];
			/* GLSL divides within 2.5 ulp: 127 / m may move a value within that of a
			 * tie by one (an H200: 2 of 256,480); an exact tie (the ties rows: 127 / m
			 * = 8) must round to even unless the row's division visibly differs (its
			 * scale) */
			const float t = fabsf(fabsf(u[k] - truncf(u[k])) - 0.5f);
			const float tie = from32 ? 9.8e-4f * fabsf(u[k]) + 1e-6f : 4e-7f * fabsf(u[k]);
			if ((d == 1 || d == -1) && t <= tie && (t > 0 || s[r] != ws || from32)) {
				near++;
				continue;
			}
			if (d) {
				bad++;
				if (!shown++)
					fprintf(stderr, "%s K %u%s row %u value %u (%g): code %d, want %d\n", what,
						K, sinv ? " smoothed" : "", r, k, h2f(x[(size_t)r * K + k]),
						q[(size_t)r * K + k], want[k]);
			}
		}
	}
	free(want);
	free(u);
}

/* Mode 2 of the cases: min(8, K/8) outlier channels spread over the row, slot by slot; the
 * other modes none. Returns whether there are. */
static int set_outliers(float *omap, uint32_t K, int mode)
{
	for (uint32_t k = 0; k < K; k++)
		omap[k] = -1.0f;
	if (mode != 2)
		return 0;
	const uint32_t n = K / 8 < 8 ? K / 8 : 8;
	for (uint32_t j = 0; j < n; j++)
		omap[(j * 37 + K / 3) % K] = (float)j; /* K / 3: kind 2's outlier among them */
	return 1;
}

/* The engine's lanes a row (forward_vk.c's lane_group) */
static uint32_t lane_group(uint32_t pieces, uint32_t min_subgroup)
{
	uint32_t l = 32;
	while (l > 1 && (l > min_subgroup || pieces % l))
		l /= 2;
	return l;
}

static vk_ctx c;
static VkDescriptorSet ds;
static VkCommandBuffer cb;

static void run(vk_pipe *p, const void *pc, uint32_t pcsize, uint32_t groups)
{
	emb_err err = { 0 };
	CHECK(vk_cmd_begin(&c, cb, &err) == 0, "%s", err.msg);
	c.vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipe);
	c.vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, c.layout, 0, 1, &ds, 0, NULL);
	c.vkCmdPushConstants(cb, c.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, pcsize, pc);
	c.vkCmdDispatch(cb, groups, 1, 1);
	VkMemoryBarrier hb = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
			       .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
			       .dstAccessMask = VK_ACCESS_HOST_READ_BIT };
	c.vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1,
			       &hb, 0, NULL, 0, NULL); /* the host reads the results */
	CHECK(vk_submit_wait(&c, cb, 60000, &err) == 0, "%s", err.msg);
	c.vkResetCommandBuffer(cb, 0);
}

int main(void)
{
	emb_err err = { 0 };
	if (vk_ctx_open(&c, -1, 1, NULL, &err)) {
		printf("test_vk_quant: no Vulkan device: %s\n", err.msg);
		return 77;
	}
	if (!c.has_shuffle) {
		printf("test_vk_quant: %s has no subgroup shuffles\n", c.name);
		vk_ctx_close(&c);
		return 77;
	}
	enum { TMAX = 70, KMAX = 1536 };
	vk_buf X, V, Q, S, R, XO;
	CHECK(vk_buf_create(&c, &X, (VkDeviceSize)TMAX * KMAX * 2, VK_MEM_HOST, &err) == 0 &&
		      vk_buf_create(&c, &V, 16 + 4 * KMAX * 4, VK_MEM_HOST, &err) == 0 &&
		      vk_buf_create(&c, &Q, (VkDeviceSize)TMAX * KMAX, VK_MEM_HOST, &err) == 0 &&
		      vk_buf_create(&c, &S, TMAX * 4, VK_MEM_HOST, &err) == 0 &&
		      vk_buf_create(&c, &R, (VkDeviceSize)TMAX * KMAX * 2, VK_MEM_HOST, &err) == 0 &&
		      vk_buf_create(&c, &XO, (VkDeviceSize)TMAX * 16 * 2, VK_MEM_HOST, &err) == 0,
	      "buffers: %s", err.msg);
	if (test_failures)
		return 1;
	VkDescriptorPoolSize ps = { VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, VK_BINDINGS };
	VkDescriptorPoolCreateInfo pci = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
					   .maxSets = 1, .poolSizeCount = 1, .pPoolSizes = &ps };
	VkDescriptorPool pool;
	c.vkCreateDescriptorPool(c.device, &pci, NULL, &pool);
	VkDescriptorSetAllocateInfo dai = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
					    .descriptorPool = pool, .descriptorSetCount = 1,
					    .pSetLayouts = &c.dsl };
	c.vkAllocateDescriptorSets(c.device, &dai, &ds);
	/* the bindings both kernels use: 0 the f16 rows (the LayerNorm: the product's output
	 * y), 1 the outliers' values (16 f16 a row), 2 wvec (factors' inverses at float offset 4, 16-byte aligned; the LayerNorm's
	 * gamma and beta after them, the outlier slots after those), 3 the codes, 4 the scales, 5 the LayerNorm's residual
	 * stream (in: x, out: its f16 output) */
	VkDescriptorBufferInfo bi[VK_BINDINGS] = {
		{ X.buf, 0, VK_WHOLE_SIZE }, { XO.buf, 0, VK_WHOLE_SIZE }, { V.buf, 0, VK_WHOLE_SIZE },
		{ Q.buf, 0, VK_WHOLE_SIZE }, { S.buf, 0, VK_WHOLE_SIZE }, { R.buf, 0, VK_WHOLE_SIZE },
	};
	VkWriteDescriptorSet wr[VK_BINDINGS];
	for (int i = 0; i < VK_BINDINGS; i++)
		wr[i] = (VkWriteDescriptorSet){ .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
						.dstSet = ds, .dstBinding = (uint32_t)i, .descriptorCount = 1,
						.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
						.pBufferInfo = &bi[i] };
	c.vkUpdateDescriptorSets(c.device, VK_BINDINGS, wr, 0, NULL);
	CHECK(vk_cmd_alloc(&c, &cb, &err) == 0, "%s", err.msg);

	uint16_t *x = X.map, *res = R.map;
	float *vf = V.map, *sinv = vf + 4; /* the factors at float offset 4 (16-byte aligned) */
	float *omap = sinv + 3 * KMAX;     /* the outlier slots, at float offset 4 + 3 KMAX */
	const uint32_t omap_off = 4 + 3 * KMAX;
	uint16_t *xo = XO.map;
	int8_t *q = Q.map;
	float *s = S.map;
	const uint32_t msg = c.min_subgroup_size ? c.min_subgroup_size : c.subgroup_size;

	/* the quantising pass */
	static const uint32_t widths[] = { 8, 64, 384, 768, 1536 };
	int cases = 0;
	for (int wi = 0; wi < (int)(sizeof widths / sizeof *widths); wi++)
		for (int half = 0; half < 2; half++) {
			const uint32_t K = widths[wi], pieces = K / 8;
			uint32_t lpr = lane_group(pieces, msg);
			if (half && lpr < 2)
				continue;
			lpr >>= half;
			const uint32_t spec[2] = { lpr, pieces / lpr };
			vk_pipe p;
			if (vk_pipe_create(&c, &p, "quant_i8", spec, 2, &err)) {
				CHECK(0, "quant_i8: %s", err.msg);
				return 1;
			}
			for (int mode = 0; mode < 3; mode++) { /* plain, smoothed, outliers */
				const int smooth = mode == 1, outl = set_outliers(omap, K, mode);
				const uint32_t T = TMAX - (uint32_t)wi * 7; /* 70, 63, ... rows */
				for (uint32_t k = 0; k < K; k++)
					sinv[k] = 0.25f + 2.0f * (frand() + 1.0f); /* 1/s in [0.25, 4.25) */
				for (uint32_t r = 0; r < T; r++) {
					uint16_t *row = x + (size_t)r * K;
					const int kind = (int)(r % 7);
					const float amp = kind == 6 ? 1e-3f : 3.0f;
					for (uint32_t k = 0; k < K; k++) {
						float v = amp * frand();
						if (kind == 1)
							v = 0; /* all zeros */
						if ((kind == 2 || kind == 6) && k == K / 3)
							v = 40.0f; /* one outlier (kind 6: 40,000 times the
								    * rest, past the outlier channels' floor) */
						if (kind == 3)
							v = -0.75f; /* every value the same, the maximum negative */
						if (kind == 4) /* ties: k/2 steps of m/127 with m = 127 / 8 */
							v = (k == 0 ? 127.0f : (float)(k % 256) * 0.5f - 64.0f) / 8.0f;
						if (kind == 5 && k == K - 1)
							v = -5.0f; /* the maximum negative, last */
						row[k] = f2h(v);
					}
				}
				memset(q, 0x55, (size_t)T * K);
				for (uint32_t r = 0; r < T; r++)
					s[r] = -1.0f;
				struct { uint32_t T, K, sinv_off, omap_off; } pc = { T, K, smooth ? 4u : NO_SMOOTH,
										    outl ? omap_off : NO_SMOOTH };
				const uint32_t rows = 128 / lpr; /* rows a workgroup */
				run(&p, &pc, sizeof pc, (T + rows - 1) / rows);
				char what[48];
				snprintf(what, sizeof what, "quant_i8 (%u lanes a row)", lpr);
				check_rows(what, x, T, K, smooth ? sinv : NULL, outl ? omap : NULL, xo, q, s, 0);
				cases++;
			}
			vk_pipe_destroy(&c, &p);
		}

	/* the LayerNorm that quantises its output: x16 = LN(y + x16), then the codes of x16 */
	static const uint32_t hs[] = { 256, 384, 768 };
	double ln_err = 0;
	for (int hi = 0; hi < 3; hi++) {
		const uint32_t H = hs[hi], T = 61 + (uint32_t)hi * 3;
		uint32_t lpt = 16;
		while (lpt > msg || (H / 8) % lpt)
			lpt /= 2;
		const uint32_t spec[3] = { lpt, H / 8 / lpt, 1 };
		vk_pipe p;
		if (vk_pipe_create(&c, &p, "add_ln_sg", spec, 3, &err)) {
			CHECK(0, "add_ln_sg: %s", err.msg);
			return 1;
		}
		float *gam = sinv + KMAX, *bet = gam + KMAX;
		for (int mode = 0; mode < 3; mode++) { /* plain, smoothed, outliers */
			const int smooth = mode == 1, outl = set_outliers(omap, H, mode);
			for (uint32_t k = 0; k < H; k++) {
				sinv[k] = 0.25f + 2.0f * (frand() + 1.0f);
				gam[k] = 1.0f + 0.5f * frand();
				bet[k] = 0.2f * frand();
			}
			gam[H / 5] = 12.0f; /* an outlier channel, as BERT's LayerNorms have */
			float *want = malloc((size_t)T * H * sizeof *want);
			for (uint32_t r = 0; r < T; r++) {
				double sum = 0, sq = 0;
				for (uint32_t k = 0; k < H; k++) {
					const size_t i = (size_t)r * H + k;
					x[i] = f2h(r % 5 == 1 ? 0.0f : 2.0f * frand());
					res[i] = f2h(r % 5 == 1 ? 0.0f : 3.0f * frand() + 0.5f);
					want[i] = h2f(x[i]) + h2f(res[i]);
					sum += want[i];
				}
				const double mean = sum / H;
				for (uint32_t k = 0; k < H; k++)
					sq += (want[(size_t)r * H + k] - mean) * (want[(size_t)r * H + k] - mean);
				const double rstd = 1.0 / sqrt(sq / H + 1e-12);
				for (uint32_t k = 0; k < H; k++) {
					float *w = &want[(size_t)r * H + k];
					*w = (float)((*w - mean) * rstd * gam[k] + bet[k]);
				}
			}
			memset(q, 0x55, (size_t)T * H);
			for (uint32_t r = 0; r < T; r++)
				s[r] = -1.0f;
			struct { uint32_t T, H, tok_off, pos_off, type_off, g_off, b_off; float eps;
				 uint32_t sinv_off, omap_off; } pc = {
				T, H, 0, 0, 0, 4 + KMAX, 4 + 2 * KMAX, 1e-12f, smooth ? 4u : NO_SMOOTH,
				outl ? omap_off : NO_SMOOTH
			};
			const uint32_t tpw = 128 / lpt * 4; /* tokens a workgroup: lane groups x ROUNDS */
			run(&p, &pc, sizeof pc, (T + tpw - 1) / tpw);
			for (size_t i = 0; i < (size_t)T * H; i++) {
				const double e = fabs(h2f(res[i]) - want[i]) / (1.0 + fabs(want[i]));
				ln_err = e > ln_err ? e : ln_err;
			}
			free(want);
			char what[48];
			snprintf(what, sizeof what, "add_ln_sg (%u lanes a token)", lpt);
			check_rows(what, res, T, H, smooth ? sinv : NULL, outl ? omap : NULL, xo, q, s, 1);
			cases++;
		}
		vk_pipe_destroy(&c, &p);
	}
	CHECK(ln_err < 2e-3, "add_ln_sg: the LayerNorm's output is %.3g off the CPU's", ln_err);
	CHECK(bad == 0, "%ld of %ld codes differ from the reference", bad, codes);
	printf("test_vk_quant: %s (subgroup size %u): %d cases, %ld codes, %ld differ, %ld by one on a "
	       "tie; LayerNorm within %.2g\n", c.name, c.subgroup_size, cases, codes, bad, near, ln_err);
	c.vkDestroyDescriptorPool(c.device, pool, NULL);
	vk_buf_destroy(&c, &X);
	vk_buf_destroy(&c, &V);
	vk_buf_destroy(&c, &Q);
	vk_buf_destroy(&c, &S);
	vk_buf_destroy(&c, &R);
	vk_buf_destroy(&c, &XO);
	vk_ctx_close(&c);
	if (test_failures)
		printf("%d check(s) failed\n", test_failures);
	return test_failures ? 1 : 0;
}
