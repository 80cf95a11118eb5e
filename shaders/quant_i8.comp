// quant_i8.comp — the activations of an int8 product (--precision int8 on the GPU,
// gemm_i8.glsl): each f16 row of K values becomes K int8 values and one fp32 scale,
// max|x| / 127 (symmetric, per token), rounded to nearest even. One subgroup a row. With
// SmoothQuant factors (sinv_off names their inverses in wvec, forward_vk.c's upload_weights)
// each channel is divided by its factor first; W's columns carry it.
//
// Why a pass of its own rather than in the LayerNorm and GELU epilogues: the GELU output's
// rows span several product workgroups (no one of them sees a row's maximum), and the pass
// reads 2 and writes 1 byte a value, a few per cent of a product's time.
#version 450
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#include "common.glsl"

layout(local_size_x = 128) in;
layout(push_constant) uniform PC { uint T, K, sinv_off; } pc;
#define NO_SMOOTH 0xffffffffu
layout(std430, binding = 0) readonly buffer X_ { uvec4 x[]; };   // 8 halfs each
layout(std430, binding = 2) readonly buffer V_ { vec4 wvec4[]; }; // 1/s, 16-byte aligned
layout(std430, binding = 3) writeonly buffer Q_ { uvec2 q[]; };  // 8 int8 each
layout(std430, binding = 4) writeonly buffer S_ { float s[]; };

uint pack4i(vec4 v)   // 4 values already scaled to [-127, 127]
{
	const ivec4 i = ivec4(clamp(roundEven(v), -127.0, 127.0));
	return (uint(i.x) & 0xffu) | (uint(i.y) & 0xffu) << 8 | (uint(i.z) & 0xffu) << 16 |
	       (uint(i.w) & 0xffu) << 24;
}

// values 8i..8i+7 of the row, divided by their factors
void load8(uint base, uint i, out vec4 a, out vec4 b)
{
	const uvec4 u = x[base + i];
	a = vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
	b = vec4(unpackHalf2x16(u.z), unpackHalf2x16(u.w));
	if (pc.sinv_off != NO_SMOOTH) {
		a *= wvec4[pc.sinv_off / 4 + 2 * i];
		b *= wvec4[pc.sinv_off / 4 + 2 * i + 1];
	}
}

void main()
{
	const uint row = flat_group() * gl_NumSubgroups + gl_SubgroupID;
	if (row >= pc.T)
		return;
	const uint K8 = pc.K / 8, base = row * K8;
	float m = 0.0;
	for (uint i = gl_SubgroupInvocationID; i < K8; i += gl_SubgroupSize) {
		vec4 a, b;
		load8(base, i, a, b);
		const vec4 c = max(abs(a), abs(b));
		m = max(m, max(max(c.x, c.y), max(c.z, c.w)));
	}
	m = subgroupMax(m);
	const float inv = m > 0.0 ? 127.0 / m : 0.0;
	if (subgroupElect())
		s[row] = m / 127.0;
	for (uint i = gl_SubgroupInvocationID; i < K8; i += gl_SubgroupSize) {
		vec4 a, b;
		load8(base, i, a, b);
		q[base + i] = uvec2(pack4i(a * inv), pack4i(b * inv));
	}
}
