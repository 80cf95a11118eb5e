// cm_layout.comp — where a 16x16 fp32 cooperative matrix keeps its elements on this device:
// one subgroup loads the matrix of the numbers 0..255 and writes, for each lane and element,
// the number it holds (out[1 + lane * len + e]) after the element count (out[0]). The host
// (forward_vk.c) checks that the layout is the one attn_fa.comp's register softmax assumes.
#version 450
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_memory_scope_semantics : enable
#extension GL_NV_cooperative_matrix : enable

layout(local_size_x = 32) in;
layout(std430, binding = 3) writeonly buffer OUT_ { uint outv[]; };
shared float Lay[256];

void main()
{
	const uint lane = gl_LocalInvocationID.x;
	for (uint i = lane; i < 256; i += 32)
		Lay[i] = float(i);
	barrier();
	fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> m;
	coopMatLoadNV(m, Lay, 0, 16, false);
	const uint len = uint(m.length());
	if (lane == 0)
		outv[0] = len;
	for (uint e = 0; e < len; e++)
		outv[1 + lane * len + e] = uint(m[e]);
}
