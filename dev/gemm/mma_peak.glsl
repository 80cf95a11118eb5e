// mma_peak.glsl — a diagnostic for dev/gemm/tool_vk_gemm (listed in dev/gemm/variants.txt):
// the same number of cooperative-matrix MMAs per subgroup as shaders/gemm_coopmat.glsl does
// for a product of this shape, with the operands loaded once into registers, so no memory
// traffic and no barriers. Its rate is the ceiling any GEMM on GL_NV_cooperative_matrix can
// reach on the device. Results are stored only when M == 0, which keeps the MMAs alive.
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_memory_scope_semantics : enable
#extension GL_NV_cooperative_matrix : enable
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : enable
#include "common.glsl"
#define WARPS (WARPS_M * WARPS_N)
layout(local_size_x = 32 * WARPS) in;
layout(push_constant) uniform PC { uint M, N, K; } pc;
layout(std430, binding = 3) writeonly buffer C_ { float c[]; };
const uint SM_ = TILE_M / WARPS_M, SN_ = TILE_N / WARPS_N, FM = SM_ / 16, FN = SN_ / 16;
shared float16_t S[32 * 32 * 2];
void main()
{
	const uint tid = gl_LocalInvocationID.x;
	for (uint i = tid; i < 32 * 32 * 2; i += 32 * WARPS)
		S[i] = float16_t(float(i % 7) * 0.01);
	barrier();
	fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fa[FM], fb[FN];
#if ACC16
#define ACC_BITS 16
#else
#define ACC_BITS 32
#endif
	fcoopmatNV<ACC_BITS, gl_ScopeSubgroup, 16, 16> acc[FM][FN];
	[[unroll]] for (uint i = 0; i < FM; i++) coopMatLoadNV(fa[i], S, i * 16, 32, false);
	[[unroll]] for (uint j = 0; j < FN; j++) coopMatLoadNV(fb[j], S, 1024 + j * 16, 32, true);
	[[unroll]] for (uint i = 0; i < FM; i++)
		[[unroll]] for (uint j = 0; j < FN; j++)
			acc[i][j] = fcoopmatNV<ACC_BITS, gl_ScopeSubgroup, 16, 16>(0.0);
	const uint tiles = TILES_M;
	for (uint k = 0; k < tiles * pc.K / 16; k++)
		[[unroll]] for (uint i = 0; i < FM; i++)
			[[unroll]] for (uint j = 0; j < FN; j++)
				acc[i][j] = coopMatMulAddNV(fa[i], fb[j], acc[i][j]);
	if (pc.M == 0u)
		[[unroll]] for (uint i = 0; i < FM; i++)
			[[unroll]] for (uint j = 0; j < FN; j++)
{
				fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> f =
					fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(acc[i][j]);
				coopMatStoreNV(f, c, (i * FN + j) * 256, 16, false);
			}
}
