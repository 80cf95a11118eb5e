// quant_i8.comp — the activations of an int8 product (--precision int8 on the GPU,
// gemm_i8.glsl): each f16 row of K values becomes K int8 values and one fp32 scale,
// max|x| / 127 (symmetric, per token), rounded to nearest even (quant_i8.glsl). With
// SmoothQuant factors (sinv_off names their inverses in wvec, forward_vk.c's upload_weights)
// each channel is divided by its factor first; W's columns carry it. Outlier channels
// (omap_off) go to xo instead (quant_i8.glsl).
//
// The LayerNorms quantise their own output where the next product is int8 (add_ln_sg.comp,
// the same arithmetic); this pass serves the rest: the first layer's qkv (after the
// embedding LayerNorm), the out product (the attention's output: a row spans the heads'
// workgroups) and the down product (the GELU output: a row spans the up product's column
// tiles, so no workgroup of it sees a row's maximum).
//
// Each row sits on LPR lanes of one subgroup (an aligned group: the maximum is a shuffle
// reduction inside it), NQ pieces of 8 values a lane, read once into registers and issued
// together: the host picks LPR (a power of two up to the subgroup size, dividing K/8) and
// NQ = K / 8 / LPR, so a workgroup does 128 / LPR rows. The pass had read each row twice,
// one piece a lane at a time (docs/bench-gpu.md).
#version 450
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#include "common.glsl"

layout(local_size_x = 128) in;
layout(constant_id = 0) const uint LPR = 32;
layout(constant_id = 1) const uint NQ = 6;
layout(push_constant) uniform PC { uint T, K, sinv_off, omap_off; } pc;
layout(std430, binding = 0) readonly buffer X_ { uvec4 x[]; };   // 8 halfs each
layout(std430, binding = 1) writeonly buffer XO_ { float16_t xo[]; }; // outliers (quant_i8.glsl)
layout(std430, binding = 2) readonly buffer V_ { vec4 wvec4[]; }; // 1/s, slots; 16-byte aligned
layout(std430, binding = 3) writeonly buffer Q_ { uvec2 q[]; };  // 8 int8 each
layout(std430, binding = 4) writeonly buffer S_ { float s[]; };
#include "quant_i8.glsl"

void main()
{
	const uint row = flat_group() * (128 / LPR) + gl_SubgroupID * (gl_SubgroupSize / LPR) +
			 gl_SubgroupInvocationID / LPR;
	if (row >= pc.T)   // the same for a row's lanes, so their shuffles stay complete
		return;
	const uint lane = gl_SubgroupInvocationID % LPR, base = row * (LPR * NQ);
	vec4 v[2 * NQ];
	float m = 0.0;
	[[unroll]] for (uint i = 0; i < NQ; i++) {
		const uvec4 u = x[base + lane + LPR * i];
		v[2 * i] = vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
		v[2 * i + 1] = vec4(unpackHalf2x16(u.z), unpackHalf2x16(u.w));
	}
	const bool outl = pc.omap_off != NO_OUTLIERS;
	[[unroll]] for (uint i = 0; i < NQ; i++) {
		if (pc.sinv_off != NO_SMOOTH) {
			const uint p = pc.sinv_off / 4 + 2 * (lane + LPR * i);
			v[2 * i] *= wvec4[p];
			v[2 * i + 1] *= wvec4[p + 1];
		}
		if (outl) {
			const uint o = pc.omap_off / 4 + 2 * (lane + LPR * i);
			m = max(m, max(max_abs4(v[2 * i], wvec4[o]), max_abs4(v[2 * i + 1], wvec4[o + 1])));
		} else {
			const vec4 c = max(abs(v[2 * i]), abs(v[2 * i + 1]));
			m = max(m, max(max(c.x, c.y), max(c.z, c.w)));
		}
	}
	[[unroll]] for (uint d = LPR / 2; d > 0; d >>= 1)
		m = max(m, subgroupShuffleXor(m, d));
	const float inv = quant_inv(m);
	if (lane == 0)
		s[row] = m / 127.0;
	[[unroll]] for (uint i = 0; i < NQ; i++) {
		const uint o = pc.omap_off / 4 + 2 * (lane + LPR * i);
		q[base + lane + LPR * i] = outl ? uvec2(pack4_outliers(v[2 * i], wvec4[o], inv, row),
							pack4_outliers(v[2 * i + 1], wvec4[o + 1], inv, row))
					       : uvec2(pack4i(v[2 * i] * inv), pack4i(v[2 * i + 1] * inv));
	}
}
