/* shaders/quant_i8.comp — the quantising pass in front of every int8 product of --precision
 * int8 on the GPU — against a CPU reference written from its contract: each row of K f16
 * values (divided first by its SmoothQuant factor, when given) becomes K int8 codes
 * clamp(roundEven(x * 127 / m), -127, 127) and one scale m / 127, m = max |x| over the row
 * (codes 0 and scale 0 for a row of zeros). The forward pass only meets this kernel on GPUs
 * with 8-bit cooperative matrices, where it is checked through whole vectors; here it runs
 * alone on whatever device is chosen (lavapipe in CI), row by row and code by code (an H200:
 * every code but 2 of 256,480 exact, those two a value within the division's error of a tie).
 *
 * Rows: random values, all zeros, one outlier, every value the same, values on the rounding
 * ties of their grid, negative maxima; widths 8 (one uvec4) to 1,536 (the FFN's); row counts
 * that leave the last workgroup part empty; with and without factors. Exits 77 without a
 * Vulkan device. */
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

/* One row's codes and scale as the contract says (float arithmetic in the shader's order);
 * u gets each value before rounding. */
static void reference(const uint16_t *x, const float *sinv, uint32_t K, int8_t *q, float *u, float *s)
{
	float m = 0;
	for (uint32_t k = 0; k < K; k++) {
		float v = h2f(x[k]) * (sinv ? sinv[k] : 1.0f);
		m = fmaxf(m, fabsf(v));
	}
	const float inv = m > 0 ? 127.0f / m : 0.0f;
	*s = m / 127.0f;
	for (uint32_t k = 0; k < K; k++) {
		float v = u[k] = h2f(x[k]) * (sinv ? sinv[k] : 1.0f) * inv;
		v = nearbyintf(v); /* round half to even in the default rounding mode */
		q[k] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
	}
}

int main(void)
{
	emb_err err = { 0 };
	vk_ctx c;
	if (vk_ctx_open(&c, -1, 1, NULL, &err)) {
		printf("test_vk_quant: no Vulkan device: %s\n", err.msg);
		return 77;
	}
	vk_pipe p;
	CHECK(vk_pipe_create(&c, &p, "quant_i8", NULL, 0, &err) == 0, "quant_i8: %s", err.msg);
	if (test_failures)
		return 1;
	enum { TMAX = 70, KMAX = 1536 };
	vk_buf X, V, Q, S;
	CHECK(vk_buf_create(&c, &X, (VkDeviceSize)TMAX * KMAX * 2, VK_MEM_HOST, &err) == 0 &&
		      vk_buf_create(&c, &V, 16 + KMAX * 4, VK_MEM_HOST, &err) == 0 &&
		      vk_buf_create(&c, &Q, (VkDeviceSize)TMAX * KMAX, VK_MEM_HOST, &err) == 0 &&
		      vk_buf_create(&c, &S, TMAX * 4, VK_MEM_HOST, &err) == 0,
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
	VkDescriptorSet ds;
	c.vkAllocateDescriptorSets(c.device, &dai, &ds);
	/* the bindings quant_i8.comp reads: 0 the f16 rows, 2 the factors' inverses (at an
	 * offset in floats, as in wvec), 3 the codes, 4 the scales */
	VkDescriptorBufferInfo bi[VK_BINDINGS] = {
		{ X.buf, 0, VK_WHOLE_SIZE }, { V.buf, 0, VK_WHOLE_SIZE }, { V.buf, 0, VK_WHOLE_SIZE },
		{ Q.buf, 0, VK_WHOLE_SIZE }, { S.buf, 0, VK_WHOLE_SIZE }, { V.buf, 0, VK_WHOLE_SIZE },
	};
	VkWriteDescriptorSet wr[VK_BINDINGS];
	for (int i = 0; i < VK_BINDINGS; i++)
		wr[i] = (VkWriteDescriptorSet){ .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
						.dstSet = ds, .dstBinding = (uint32_t)i, .descriptorCount = 1,
						.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
						.pBufferInfo = &bi[i] };
	c.vkUpdateDescriptorSets(c.device, VK_BINDINGS, wr, 0, NULL);
	VkCommandBuffer cb;
	CHECK(vk_cmd_alloc(&c, &cb, &err) == 0, "%s", err.msg);

	uint16_t *x = X.map;
	float *vf = V.map, *sinv = vf + 4; /* the factors at float offset 4 (16-byte aligned) */
	int8_t *q = Q.map, *want = malloc((size_t)KMAX);
	float *u = malloc((size_t)KMAX * sizeof *u);
	float *s = S.map;
	static const uint32_t widths[] = { 8, 64, 384, 768, 1536 };
	long codes = 0, bad = 0, near = 0;
	int cases = 0;
	for (int wi = 0; wi < (int)(sizeof widths / sizeof *widths); wi++)
		for (int smooth = 0; smooth < 2; smooth++) {
			const uint32_t K = widths[wi], T = TMAX - (uint32_t)wi * 7; /* 70, 63, ... rows */
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
					if (kind == 2 && k == K / 3)
						v = 40.0f; /* one outlier */
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
			struct { uint32_t T, K, sinv_off; } pc = { T, K, smooth ? 4u : NO_SMOOTH };
			/* rows a workgroup: its subgroups (128 lanes), whatever their size here */
			const uint32_t per = 128 / (c.subgroup_size ? c.subgroup_size : 32);
			CHECK(vk_cmd_begin(&c, cb, &err) == 0, "%s", err.msg);
			c.vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, p.pipe);
			c.vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, c.layout, 0, 1, &ds, 0,
						  NULL);
			c.vkCmdPushConstants(cb, c.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof pc, &pc);
			c.vkCmdDispatch(cb, (T + per - 1) / (per ? per : 1), 1, 1);
			VkMemoryBarrier hb = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
					       .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
					       .dstAccessMask = VK_ACCESS_HOST_READ_BIT };
			c.vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT,
					       0, 1, &hb, 0, NULL, 0, NULL); /* the host reads the results */
			CHECK(vk_submit_wait(&c, cb, 60000, &err) == 0, "%s", err.msg);
			c.vkResetCommandBuffer(cb, 0);
			for (uint32_t r = 0; r < T; r++) {
				float ws;
				reference(x + (size_t)r * K, smooth ? sinv : NULL, K, want, u, &ws);
				/* GLSL divides within 2.5 ulp (a reciprocal and a multiply here) */
				CHECK(fabsf(s[r] - ws) <= 3e-7f * ws, "K %u%s row %u (kind %u): scale %.9g, want %.9g",
				      K, smooth ? " smoothed" : "", r, r % 7, s[r], ws);
				int shown = 0;
				for (uint32_t k = 0; k < K; k++, codes++) {
					const int d = q[(size_t)r * K + k] - want[k];
					/* GLSL divides within 2.5 ulp: 127 / m may move a value within
					 * that of a tie by one (an H200: 2 of 256,480); an exact tie
					 * (the ties rows: 127 / m = 8) must round to even unless the
					 * row's division visibly differs (its scale) */
					const float t = fabsf(fabsf(u[k] - truncf(u[k])) - 0.5f);
					if ((d == 1 || d == -1) && t <= 4e-7f * fabsf(u[k]) && (t > 0 || s[r] != ws)) {
						near++;
						continue;
					}
					if (d) {
						bad++;
						if (!shown++)
							fprintf(stderr, "K %u%s row %u (kind %u) value %u (%g): code %d, "
								"want %d\n", K, smooth ? " smoothed" : "", r, r % 7, k,
								h2f(x[(size_t)r * K + k]), q[(size_t)r * K + k], want[k]);
					}
				}
			}
			cases++;
		}
	CHECK(bad == 0, "%ld of %ld codes differ from the reference", bad, codes);
	printf("test_vk_quant: %s (subgroup size %u): %d cases, %ld codes, %ld differ, %ld by one on a "
	       "tie\n", c.name, c.subgroup_size, cases, codes, bad, near);
	free(want);
	free(u);
	c.vkDestroyDescriptorPool(c.device, pool, NULL);
	vk_pipe_destroy(&c, &p);
	vk_buf_destroy(&c, &X);
	vk_buf_destroy(&c, &V);
	vk_buf_destroy(&c, &Q);
	vk_buf_destroy(&c, &S);
	vk_ctx_close(&c);
	if (test_failures)
		printf("%d check(s) failed\n", test_failures);
	return test_failures ? 1 : 0;
}
