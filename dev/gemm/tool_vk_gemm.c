/* tool_vk_gemm — times single cooperative-matrix GEMM kernels on the transformer's four
 * product shapes, so that tile and layout variants can be compared in one GPU session
 * without the rest of the forward pass around them. Each variant is checked against a
 * double-precision product of the same f16 inputs before it is timed.
 *
 *   tool_vk_gemm [--M rows] [--reps N] [--act 1|3 (the up product's: GELU, ReLU)]
 *                [--bar E (error bar, default 2e-3 for f16 output, 1e-4 f32)]
 *                [--second MASK (int8 kernels: gemm_i8.glsl's SECOND, the epilogue in the
 *                 accumulators for the device's layout: the mask EMBED_VK_PROFILE=1 reports,
 *                 0xf0 on an H100 with driver 580; a wrong one fails the check; default 0,
 *                 the staged epilogue)] SPEC...
 *   SPEC = SHADER:TN:TM:OUT[:TILES]
 *     SHADER  an embedded shader name (gemm_cm_lh) or a .spv file (compiled with other
 *             -D settings by dev/gemm/gemm-variants)
 *     TN, TM  the kernel's tile (columns, rows); TILES row tiles per workgroup (default 1)
 *     OUT     h (f16 output: runs the qkv product, and the up product with GELU) or
 *             f (f32 output: the out and down products); H or F: the same, unchecked
 *             (for diagnostic kernels that skip part of the work); a: f16 output on all
 *             four products (as the forward pass runs them); i: an int8 kernel
 *             (shaders/gemm_i8.glsl) on all four, f16 output
 *
 * int8 kernels get the same f16 inputs quantised as --precision int8 does: A with one
 * scale a row (per token), W one a row (per output channel), each max|x| / 127, rounded to
 * nearest. They are checked against the double-precision product of the quantised values
 * (the kernel's own error: int32 sums are exact, so only the scaling and the f16 store
 * differ), and the error against the unquantised f16 inputs' product is printed beside it
 * (quantisation's error, on random data: not the model's).
 *
 * With EMBED_VK_STATS=1 the driver's statistics for each pipeline (registers, spills) are
 * printed where it offers them. Output: one line per (variant, product). */
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "vk_ctx.h"

typedef struct { uint32_t M, N, K, bias_off, act; } pc_gemm;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* uniform in [-1, 1) */
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static float h2f(uint16_t h) { return _cvtsh_ss(h); }
static uint16_t f2h(float f) { return _cvtss_sh(f, 0); }

static double gelu(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

static void *read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	fseek(f, 0, SEEK_SET);
	void *p = malloc((size_t)len + 4);
	if (p && fread(p, 1, (size_t)len, f) != (size_t)len) {
		free(p);
		p = NULL;
	}
	fclose(f);
	*n = (size_t)len;
	return p;
}

/* VK_KHR_cooperative_matrix and VK_NV_cooperative_matrix2 postdate Debian bookworm's Vulkan
 * headers (1.3.239); their structures and entry points, as the registry defines them. */
#define CM_KHR_EXT "VK_KHR_cooperative_matrix"
#define CM2_NV_EXT "VK_NV_cooperative_matrix2"
#define ST_CM_KHR_FEATURES ((VkStructureType)1000506000)
#define ST_CM_KHR_PROPERTIES ((VkStructureType)1000506001)
#define ST_CM2_NV_FEATURES ((VkStructureType)1000593000)
#define ST_CM2_NV_FLEX_PROPERTIES ((VkStructureType)1000593001)
typedef struct {
	VkStructureType sType;
	void *pNext;
	VkBool32 cooperativeMatrix, cooperativeMatrixRobustBufferAccess;
} cm_khr_features;
typedef struct {
	VkStructureType sType;
	void *pNext;
	uint32_t MSize, NSize, KSize;
	uint32_t AType, BType, CType, ResultType; /* 0 f16, 1 f32, ... (VkComponentTypeKHR) */
	VkBool32 saturatingAccumulation;
	uint32_t scope;                            /* 2 workgroup, 3 subgroup (VkScopeKHR) */
} cm_khr_props;
typedef struct {
	VkStructureType sType;
	void *pNext;
	VkBool32 workgroupScope, flexibleDimensions, reductions, conversions, perElementOperations,
		tensorAddressing, blockLoads;
} cm2_nv_features;
typedef struct {
	VkStructureType sType;
	void *pNext;
	uint32_t MGranularity, NGranularity, KGranularity;
	uint32_t AType, BType, CType, ResultType;
	VkBool32 saturatingAccumulation;
	uint32_t scope;
	uint32_t workgroupInvocations;
} cm2_nv_flex_props;
typedef VkResult (*pfn_cm_khr_props)(VkPhysicalDevice, uint32_t *, cm_khr_props *);
typedef VkResult (*pfn_cm2_flex_props)(VkPhysicalDevice, uint32_t *, cm2_nv_flex_props *);

/* Whether the device offers extension `name` (enabled or not). */
static int device_has_ext(vk_ctx *c, const char *name)
{
	uint32_t n = 0;
	c->vkEnumerateDeviceExtensionProperties(c->phys, NULL, &n, NULL);
	VkExtensionProperties *e = calloc(n ? n : 1, sizeof *e);
	int found = 0;
	if (e && c->vkEnumerateDeviceExtensionProperties(c->phys, NULL, &n, e) == VK_SUCCESS)
		for (uint32_t i = 0; i < n && !found; i++)
			found = !strcmp(e[i].extensionName, name);
	free(e);
	return found;
}

/* The device's KHR cooperative-matrix shapes and NV cooperative-matrix-2 flexible dimensions,
 * one line each. */
static void coopmat_report(vk_ctx *c, FILE *f)
{
	static const char *ty[] = { "f16", "f32", "f64", "s8", "s16", "s32", "s64", "u8", "u16",
				    "u32", "u64" };
#define TY(t) ((t) < 11 ? ty[t] : (t) == 1000141000 ? "bf16" : "?")
	pfn_cm_khr_props gk = (pfn_cm_khr_props)c->vkGetInstanceProcAddr(c->instance,
		"vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR");
	uint32_t n = 0;
	if (gk && device_has_ext(c, CM_KHR_EXT) && gk(c->phys, &n, NULL) == VK_SUCCESS &&
	    n && n <= 256) {
		cm_khr_props p[256];
		for (uint32_t i = 0; i < n; i++)
			p[i] = (cm_khr_props){ .sType = ST_CM_KHR_PROPERTIES };
		if (gk(c->phys, &n, p) == VK_SUCCESS)
			for (uint32_t i = 0; i < n; i++)
				fprintf(f, "KHR coopmat %ux%ux%u %s*%s+%s->%s scope %u%s\n", p[i].MSize,
					p[i].NSize, p[i].KSize, TY(p[i].AType), TY(p[i].BType),
					TY(p[i].CType), TY(p[i].ResultType), p[i].scope,
					p[i].saturatingAccumulation ? " saturating" : "");
	}
	if (c->vkGetPhysicalDeviceCooperativeMatrixPropertiesNV &&
	    c->vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(c->phys, &n, NULL) == VK_SUCCESS &&
	    n && n <= 256) {
		VkCooperativeMatrixPropertiesNV p[256];
		for (uint32_t i = 0; i < n; i++)
			p[i] = (VkCooperativeMatrixPropertiesNV){
				.sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV };
		if (c->vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(c->phys, &n, p) == VK_SUCCESS)
			for (uint32_t i = 0; i < n; i++)
				fprintf(f, "NV coopmat %ux%ux%u %s*%s+%s->%s scope %u\n", p[i].MSize,
					p[i].NSize, p[i].KSize, TY(p[i].AType), TY(p[i].BType),
					TY(p[i].CType), TY(p[i].DType), p[i].scope);
	}
	fprintf(f, "int8 cooperative matrices (16x16x32, shaderInt8): %s\n",
		c->has_coopmat_i8 ? "enabled" : "no");
	n = 0;
	pfn_cm2_flex_props gf = (pfn_cm2_flex_props)c->vkGetInstanceProcAddr(c->instance,
		"vkGetPhysicalDeviceCooperativeMatrixFlexibleDimensionsPropertiesNV");
	n = 0;
	if (gf && device_has_ext(c, CM2_NV_EXT) && gf(c->phys, &n, NULL) == VK_SUCCESS &&
	    n && n <= 256) {
		cm2_nv_flex_props p[256];
		for (uint32_t i = 0; i < n; i++)
			p[i] = (cm2_nv_flex_props){ .sType = ST_CM2_NV_FLEX_PROPERTIES };
		if (gf(c->phys, &n, p) == VK_SUCCESS)
			for (uint32_t i = 0; i < n; i++)
				fprintf(f, "NV coopmat2 flexible %ux%ux%u %s*%s+%s->%s scope %u "
					"invocations %u%s\n", p[i].MGranularity, p[i].NGranularity,
					p[i].KGranularity, TY(p[i].AType), TY(p[i].BType),
					TY(p[i].CType), TY(p[i].ResultType), p[i].scope,
					p[i].workgroupInvocations,
					p[i].saturatingAccumulation ? " saturating" : "");
	}
#undef TY
}

static void die(const emb_err *e)
{
	fprintf(stderr, "tool_vk_gemm: %s\n", e->msg);
	exit(1);
}

int main(int argc, char **argv)
{
	uint32_t M = 32768, up_act = 1; /* the up product's activation: 1 GELU (erf), 3 ReLU */
	uint32_t second = 0;            /* gemm_i8.glsl's SECOND */
	double hbar = 2e-3, fbar = 1e-4;  /* error bars of f16 and f32 output; --bar sets both */
	int reps = 30, first = 1;
	for (; first < argc && argv[first][0] == '-'; first++) {
		if (!strcmp(argv[first], "--M") && first + 1 < argc)
			M = (uint32_t)atoi(argv[++first]);
		else if (!strcmp(argv[first], "--reps") && first + 1 < argc)
			reps = atoi(argv[++first]);
		else if (!strcmp(argv[first], "--bar") && first + 1 < argc)
			hbar = fbar = atof(argv[++first]);
		else if (!strcmp(argv[first], "--act") && first + 1 < argc)
			up_act = (uint32_t)atoi(argv[++first]);
		else if (!strcmp(argv[first], "--second") && first + 1 < argc)
			second = (uint32_t)strtoul(argv[++first], NULL, 0);
		else {
			fprintf(stderr, "usage: tool_vk_gemm [--M rows] [--reps N] [--act 1|3] [--second MASK] "
				"SHADER:TN:TM:h|f[:TILES]...\n");
			return 2;
		}
	}
	emb_err err;
	vk_ctx c;
	/* The study's own switches: workgroup-scope matrices (KHR cooperative matrices with NV
	 * cooperative matrix 2: workgroup scope, flexible sizes; no product shader uses them, and
	 * on an H200 their products ran 30-53 TFLOP/s against 105-150 for gemm_coopmat.glsl,
	 * docs/bench-gemm.md) and pipeline statistics. */
	vk_settings set;
	vk_settings_default(&set);
	vk_settings_from_env(&set);
	static const char *const cm2_exts[] = { CM_KHR_EXT, CM2_NV_EXT };
	cm2_nv_features en_cm2 = { .sType = ST_CM2_NV_FEATURES, .workgroupScope = VK_TRUE,
				   .flexibleDimensions = VK_TRUE };
	cm_khr_features en_cmk = { .sType = ST_CM_KHR_FEATURES, .pNext = &en_cm2,
				   .cooperativeMatrix = VK_TRUE };
	if (getenv("EMBED_VK_COOPMAT2")) {
		set.study_exts = cm2_exts;
		set.n_study_exts = 2;
		set.study_features = &en_cmk;
	}
	set.stats = getenv("EMBED_VK_STATS") != NULL;
	if (vk_ctx_open(&c, -1, 0, &set, &err))
		die(&err);
	if (!c.has_coopmat) {
		fprintf(stderr, "tool_vk_gemm: %s has no NV cooperative matrices\n", c.name);
		return 77;
	}
	printf("device: %s, M = %u, %d dispatches timed per product\n", c.name, M, reps);
	if (getenv("EMBED_VK_COOPMAT_REPORT")) {
		coopmat_report(&c, stdout);
		printf("workgroup-scope matrices: %s\n", c.has_study ? "enabled" : "not enabled");
	}

	const uint32_t KMAX = 1536, NMAX = 1536, MPAD = M + 1024;
	vk_buf A, W, V, C, HC, AQ, WQ, SA;
	if (vk_buf_create(&c, &A, (VkDeviceSize)MPAD * KMAX * 2, VK_MEM_DEVICE, &err) ||
	    vk_buf_create(&c, &W, (VkDeviceSize)NMAX * KMAX * 2, VK_MEM_DEVICE, &err) ||
	    vk_buf_create(&c, &AQ, (VkDeviceSize)MPAD * KMAX, VK_MEM_DEVICE, &err) ||
	    vk_buf_create(&c, &WQ, (VkDeviceSize)NMAX * KMAX, VK_MEM_DEVICE, &err) ||
	    vk_buf_create(&c, &SA, (VkDeviceSize)MPAD * 4, VK_MEM_DEVICE, &err) ||
	    vk_buf_create(&c, &V, 2 * NMAX * 4, VK_MEM_DEVICE, &err) ||
	    vk_buf_create(&c, &C, (VkDeviceSize)MPAD * NMAX * 4, VK_MEM_DEVICE, &err) ||
	    vk_buf_create(&c, &HC, (VkDeviceSize)MPAD * NMAX * 4, VK_MEM_HOST, &err))
		die(&err);
	/* Inputs: A ~ U(-1,1), W ~ U(-1,1)/sqrt(K) per shape, bias ~ U(-0.5,0.5). A is filled for
	 * the widest K; a product with smaller K reads its rows with its own stride. */
	uint16_t *a = malloc((size_t)MPAD * KMAX * 2), *wt = malloc((size_t)NMAX * KMAX * 2);
	float *bias = malloc(2 * NMAX * 4), *sw = bias + NMAX; /* V: bias, then W's scales */
	int8_t *aq = malloc((size_t)MPAD * KMAX), *wq = malloc((size_t)NMAX * KMAX);
	float *sa = malloc((size_t)MPAD * 4);
	uint32_t q_K = 0; /* the K that aq holds A quantised for */
	for (size_t i = 0; i < (size_t)MPAD * KMAX; i++)
		a[i] = f2h(frand());
	for (uint32_t i = 0; i < NMAX; i++)
		bias[i] = 0.5f * frand();
	if (vk_upload(&c, &A, 0, a, (size_t)MPAD * KMAX * 2, &err) ||
	    vk_upload(&c, &V, 0, bias, NMAX * 4, &err))
		die(&err);

	static const struct { const char *name; uint32_t N, K, act, f16; } shapes[4] = {
		{ "qkv", 1152, 384, 0, 1 }, { "out", 384, 384, 0, 0 },
		{ "up+gelu", 1536, 384, 1, 1 }, { "down", 384, 1536, 0, 0 },
	};

	VkDescriptorPoolSize ps = { VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 2 * VK_BINDINGS };
	VkDescriptorPoolCreateInfo pci = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
					   .maxSets = 2, .poolSizeCount = 1, .pPoolSizes = &ps };
	VkDescriptorPool pool;
	c.vkCreateDescriptorPool(c.device, &pci, NULL, &pool);
	VkDescriptorSetAllocateInfo dai = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
					    .descriptorPool = pool, .descriptorSetCount = 1,
					    .pSetLayouts = &c.dsl };
	VkDescriptorSet dsets[2]; /* f16 kernels, int8 kernels */
	for (int d = 0; d < 2; d++) {
		c.vkAllocateDescriptorSets(c.device, &dai, &dsets[d]);
		VkDescriptorBufferInfo bi[VK_BINDINGS] = {
			{ d ? AQ.buf : A.buf, 0, VK_WHOLE_SIZE }, { d ? WQ.buf : W.buf, 0, VK_WHOLE_SIZE },
			{ V.buf, 0, VK_WHOLE_SIZE }, { C.buf, 0, VK_WHOLE_SIZE },
			{ d ? SA.buf : V.buf, 0, VK_WHOLE_SIZE }, { V.buf, 0, VK_WHOLE_SIZE },
			{ V.buf, 0, VK_WHOLE_SIZE },
		};
		VkWriteDescriptorSet wr[VK_BINDINGS];
		for (int i = 0; i < VK_BINDINGS; i++)
			wr[i] = (VkWriteDescriptorSet){ .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
							.dstSet = dsets[d], .dstBinding = (uint32_t)i,
							.descriptorCount = 1,
							.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
							.pBufferInfo = &bi[i] };
		c.vkUpdateDescriptorSets(c.device, VK_BINDINGS, wr, 0, NULL);
	}

	VkQueryPool qp;
	VkQueryPoolCreateInfo qci = { .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
				      .queryType = VK_QUERY_TYPE_TIMESTAMP, .queryCount = 2 };
	c.vkCreateQueryPool(c.device, &qci, NULL, &qp);
	VkCommandBuffer cb;
	if (vk_cmd_alloc(&c, &cb, &err))
		die(&err);

	int bad = 0;
	for (int v = first; v < argc; v++) {
		char spec[512], *tok[5] = { 0 };
		snprintf(spec, sizeof spec, "%s", argv[v]);
		int nt = 0;
		for (char *p = strtok(spec, ":"); p && nt < 5; p = strtok(NULL, ":"))
			tok[nt++] = p;
		if (nt < 4) {
			fprintf(stderr, "tool_vk_gemm: bad spec %s\n", argv[v]);
			return 2;
		}
		const uint32_t tn = (uint32_t)atoi(tok[1]), tm = (uint32_t)atoi(tok[2]);
		const uint32_t tiles = nt > 4 ? (uint32_t)atoi(tok[4]) : 1;
		const int i8 = tok[3][0] == 'i', all4 = i8 || tok[3][0] == 'a';
		const int f16 = all4 || tok[3][0] == 'h' || tok[3][0] == 'H';
		const int nocheck = tok[3][0] == 'H' || tok[3][0] == 'F'; /* diagnostic kernels */
		const VkDescriptorSet ds = dsets[i8];
		/* two pipelines: without and with the activation (specialization constant 0) */
		vk_pipe pp[2];
		int rc = 0;
		for (uint32_t i = 0; i < 2 && !rc; i++) {
			/* int8 kernels: activation, no outliers, the epilogue's layout */
			const uint32_t act = i ? up_act : 0, spec[3] = { act, 0, second };
			const uint32_t nspec = i8 ? 3 : 1;
			if (strstr(tok[0], ".spv")) {
				size_t n;
				uint32_t *words = read_file(tok[0], &n);
				if (!words) {
					perror(tok[0]);
					return 1;
				}
				rc = vk_pipe_create_spv(&c, &pp[i], tok[0], words, n, spec, nspec, &err);
				free(words);
			} else {
				rc = vk_pipe_create(&c, &pp[i], tok[0], spec, nspec, &err);
			}
		}
		if (rc) {
			printf("%s: %s\n", argv[v], err.msg);
			bad++;
			continue;
		}
		vk_pipe_report(&c, &pp[0], stdout);
		for (int s = 0; s < 4; s++) {
			if ((int)shapes[s].f16 != f16 && !all4)
				continue;
			const uint32_t N = shapes[s].N, K = shapes[s].K;
			if (N % tn) {
				printf("%-40s %-8s skipped: N %% %u\n", argv[v], shapes[s].name, tn);
				continue;
			}
			const float ws = 1.0f / sqrtf((float)K);
			for (size_t i = 0; i < (size_t)N * K; i++)
				wt[i] = f2h(ws * frand());
			if (vk_upload(&c, &W, 0, wt, (size_t)N * K * 2, &err))
				die(&err);
			if (i8) {
				for (uint32_t n = 0; n < N; n++) {
					float mx = 0;
					for (uint32_t k = 0; k < K; k++)
						mx = fmaxf(mx, fabsf(h2f(wt[(size_t)n * K + k])));
					sw[n] = mx > 0 ? mx / 127.0f : 1.0f;
					for (uint32_t k = 0; k < K; k++)
						wq[(size_t)n * K + k] = (int8_t)lrintf(h2f(wt[(size_t)n * K + k]) / sw[n]);
				}
				if (q_K != K) {
					for (uint32_t r = 0; r < MPAD; r++) {
						float mx = 0;
						for (uint32_t k = 0; k < K; k++)
							mx = fmaxf(mx, fabsf(h2f(a[(size_t)r * K + k])));
						sa[r] = mx > 0 ? mx / 127.0f : 1.0f;
						for (uint32_t k = 0; k < K; k++)
							aq[(size_t)r * K + k] = (int8_t)lrintf(h2f(a[(size_t)r * K + k]) / sa[r]);
					}
					q_K = K;
					if (vk_upload(&c, &AQ, 0, aq, (size_t)MPAD * K, &err) ||
					    vk_upload(&c, &SA, 0, sa, (size_t)MPAD * 4, &err))
						die(&err);
				}
				if (vk_upload(&c, &WQ, 0, wq, (size_t)N * K, &err) ||
				    vk_upload(&c, &V, NMAX * 4, sw, NMAX * 4, &err))
					die(&err);
			}
			/* the int8 kernels read W's scales at float offset NMAX (the 5th word) */
			pc_gemm pcg = { M, N, K, 0, i8 ? NMAX : shapes[s].act };
			const uint32_t gx = N / tn, gy = (M + tm * tiles - 1) / (tm * tiles);
			double warm_start = 0;
			for (int round = 0; round < 3; round++) {
				/* round 0: one dispatch, checked; round 1: reps dispatches, repeated for
				 * at least half a second (an idle GPU's clock ramps up first, and the
				 * check left it idle); round 2: reps dispatches, timed */
				const int n = round ? reps : 1;
				if (round == 1 && warm_start == 0)
					warm_start = now();
				vk_cmd_begin(&c, cb, &err);
				c.vkCmdResetQueryPool(cb, qp, 0, 2);
				c.vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE,
						  pp[shapes[s].act != 0].pipe);
				c.vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, c.layout, 0, 1,
							  &ds, 0, NULL);
				c.vkCmdPushConstants(cb, c.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
						     sizeof pcg, &pcg);
				c.vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, qp, 0);
				for (int r = 0; r < n; r++) {
					c.vkCmdDispatch(cb, gx, gy, 1);
					vk_cmd_barrier(&c, cb);
				}
				c.vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, qp, 1);
				if (!round) {
					VkBufferCopy cp = { 0, 0, (VkDeviceSize)M * N * (f16 ? 2 : 4) };
					c.vkCmdCopyBuffer(cb, C.buf, HC.buf, 1, &cp);
				}
				if (vk_submit_wait(&c, cb, 60000, &err))
					die(&err);
				c.vkResetCommandBuffer(cb, 0);
				if (round == 1) {
					if (now() - warm_start < 0.5)
						round--;
					continue;
				}
				if (!round && nocheck)
					continue;
				if (!round) {
					/* 4096 random elements (and the last row) against double sums */
					double maxerr = 0, qerr = 0;
					for (int q = 0; q < 4096 + (int)N; q++) {
						uint32_t r = q < 4096 ? (uint32_t)((rng = rng * 6364136223846793005ull + 1) >> 33) % M : M - 1;
						uint32_t col = q < 4096 ? (uint32_t)(rng >> 13) % N : (uint32_t)(q - 4096);
						double ref = bias[col], reff = bias[col];
						for (uint32_t k = 0; k < K; k++)
							reff += (double)h2f(a[(size_t)r * K + k]) * h2f(wt[(size_t)col * K + k]);
						if (i8) {
							int64_t sum = 0;
							for (uint32_t k = 0; k < K; k++)
								sum += (int64_t)aq[(size_t)r * K + k] * wq[(size_t)col * K + k];
							ref += (double)sa[r] * sw[col] * (double)sum;
						} else {
							ref = reff;
						}
						if (shapes[s].act) {
							ref = up_act == 3 ? fmax(ref, 0.0) : gelu(ref);
							reff = up_act == 3 ? fmax(reff, 0.0) : gelu(reff);
						}
						double got = f16 ? h2f(((uint16_t *)HC.map)[(size_t)r * N + col])
								 : ((float *)HC.map)[(size_t)r * N + col];
						double e = fabs(got - ref) / (1.0 + fabs(ref));
						if (!(e <= maxerr))
							maxerr = isnan(e) ? INFINITY : e;
						qerr = fmax(qerr, fabs(got - reff) / (1.0 + fabs(reff)));
					}
					const double bar = f16 ? hbar : fbar;
					if (!(maxerr <= bar)) {
						printf("%-40s %-8s WRONG: max rel error %.3g (bar %.0e)\n", argv[v],
						       shapes[s].name, maxerr, bar);
						bad++;
						break;
					}
					if (i8)
						printf("%-40s %-8s max rel error %.3g (against the unquantised "
						       "inputs' product: %.3g)\n", argv[v], shapes[s].name, maxerr, qerr);
					else
						printf("%-40s %-8s max rel error %.3g\n", argv[v], shapes[s].name, maxerr);
					continue;
				}
				uint64_t t[2];
				c.vkGetQueryPoolResults(c.device, qp, 0, 2, sizeof t, t, 8,
							VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
				const double us = (double)(t[1] - t[0]) * c.timestamp_ns / 1e3 / reps;
				printf("%-40s %-8s %8.1f us  %6.1f TFLOP/s  grid %ux%u\n", argv[v],
				       shapes[s].name, us, 2.0 * M * N * K / (us * 1e6), gx, gy);
			}
		}
		fflush(stdout);
		vk_pipe_destroy(&c, &pp[0]);
		vk_pipe_destroy(&c, &pp[1]);
	}
	c.vkDestroyQueryPool(c.device, qp, NULL);
	c.vkDestroyDescriptorPool(c.device, pool, NULL);
	vk_buf *bufs[] = { &A, &W, &V, &C, &HC, &AQ, &WQ, &SA };
	for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
		vk_buf_destroy(&c, bufs[i]);
	vk_ctx_close(&c);
	free(a);
	free(wt);
	free(bias);
	free(aq);
	free(wq);
	free(sa);
	return bad ? 1 : 0;
}
