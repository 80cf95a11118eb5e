// cm_layout.glsl — where a 16x16 fp32 cooperative matrix keeps its elements on this device:
// one subgroup writes, for each lane and element, the number 16·row + column that element
// holds in an MMA's result (out[1 + lane * len + e], after the element count out[0]) and, for
// comparison, in a matrix loaded from memory (out[1 + 32 * len + lane * len + e]); with
// CM_INDEX_I8 (cm_layout_i8.comp, devices with int8 cooperative matrices) also in the int32
// result of an int8 product (out[1 + 64 * len + lane * len + e]). The host (forward_vk.c)
// checks that the result's layout is the one attn_fa.glsl's register softmax assumes, and
// whether the int32 one is the same (gemm_i8.glsl's epilogue in the accumulators).
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_memory_scope_semantics : enable
#extension GL_NV_cooperative_matrix : enable
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : enable
#include "cm_index.glsl"

layout(local_size_x = 32) in;
layout(std430, binding = 3) writeonly buffer OUT_ { uint outv[]; };
shared float Lay[256];

void main()
{
	const uint lane = gl_LocalInvocationID.x;
	for (uint i = lane; i < 256; i += 32)
		Lay[i] = float(i);
	cm_index_stage(lane, 32);
#ifdef CM_INDEX_I8
	cm_index_i8_stage(lane, 32);
#endif
	barrier();
	fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> m = cm_index(), ld;
	coopMatLoadNV(ld, Lay, 0, 16, false);
	const uint len = uint(m.length());
	if (lane == 0)
		outv[0] = len;
	for (uint e = 0; e < len; e++) {
		outv[1 + lane * len + e] = uint(m[e]);
		outv[1 + 32 * len + lane * len + e] = uint(ld[e]);
	}
#ifdef CM_INDEX_I8
	const icoopmatNV<32, gl_ScopeSubgroup, 16, 16> mi = cm_index_i8();
	for (uint e = 0; e < len; e++)
		outv[1 + 64 * len + lane * len + e] = uint(mi[e]);
#endif
}
