// requant_i8.comp — the down product's int8 input at one scale a row, from the up product's
// codes at one scale a row part (gemm_i8.glsl GQ). A row of the FFN's width spans the up
// product's column tiles, so each subgroup there coded its part of the row at the part's own
// maximum m_p; here each row's maximum m = max_p m_p sets the row's scale m / 127 (the
// down product's sa, as quant_i8.comp would write it) and each part's codes c become
//   c' = round(c · m_p / m)       (to nearest even; |c'| <= |c| <= 127),
// the code the part's values would have had at the row's scale but for the first rounding.
// The pass reads and writes one byte a value in place, where quant_i8.comp read the f16
// output (two bytes) and wrote one.
//
// pm[row · pstride + p] holds m_p for the nparts parts of the row; the row's outlier channels
// (the down product's, nout > 0) were coded 0 by the up product and their values left at
// pm[row · pstride + pstride - 16 + slot], fp32; they go to xo in the row's units (v · 127 / m,
// f16), as quant_i8.glsl's pack4_outliers writes them. Slots past nout are never written.
//
// Each row sits on LPR lanes of one subgroup (an aligned group: the maximum is a shuffle
// reduction inside it); the host picks LPR (a power of two up to 16 and the smallest subgroup
// the device may give, dividing nparts), so a workgroup does 128 / LPR rows. A part is K /
// nparts codes, a multiple of 16.
#version 450
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#include "common.glsl"

layout(local_size_x = 128) in;
layout(constant_id = 0) const uint LPR = 16;
layout(push_constant) uniform PC { uint T, K, nparts, pstride, nout; } pc;
layout(std430, binding = 0) buffer A_ { uvec4 a[]; };                  // the codes, in place
layout(std430, binding = 1) writeonly buffer XO_ { float16_t xo[]; };  // 16 a row
layout(std430, binding = 3) readonly buffer PM_ { float pm[]; };       // [T][pstride]
layout(std430, binding = 4) writeonly buffer S_ { float s[]; };

// 4 codes (one uint) times r, rounded again
uint recode4(uint u, float r)
{
	const ivec4 c = ivec4(bitfieldExtract(int(u), 0, 8), bitfieldExtract(int(u), 8, 8),
			      bitfieldExtract(int(u), 16, 8), bitfieldExtract(int(u), 24, 8));
	return pack4i(vec4(c) * r);
}

void main()
{
	const uint row = flat_group() * (128 / LPR) + gl_SubgroupID * (gl_SubgroupSize / LPR) +
			 gl_SubgroupInvocationID / LPR;
	if (row >= pc.T)   // the same for a row's lanes, so their shuffles stay complete
		return;
	const uint lane = gl_SubgroupInvocationID % LPR, prow = row * pc.pstride;
	float m = 0.0;
	for (uint p = lane; p < pc.nparts; p += LPR)
		m = max(m, pm[prow + p]);
	[[unroll]] for (uint d = LPR / 2; d > 0; d >>= 1)
		m = max(m, subgroupShuffleXor(m, d));
	const float inv = m > 0.0 ? 127.0 / m : 0.0;
	if (lane == 0)
		s[row] = m / 127.0;
	const uint P16 = pc.K / pc.nparts / 16;   // uvec4s a part
	for (uint p = lane; p < pc.nparts; p += LPR) {
		const float r = m > 0.0 ? pm[prow + p] / m : 0.0;
		if (r == 1.0)   // the part that set the row's scale keeps its codes
			continue;
		const uint base = (row * pc.K) / 16 + p * P16;
		for (uint i = 0; i < P16; i++) {
			const uvec4 u = a[base + i];
			a[base + i] = uvec4(recode4(u.x, r), recode4(u.y, r), recode4(u.z, r), recode4(u.w, r));
		}
	}
	for (uint j = lane; j < pc.nout; j += LPR)
		xo[row * OUT_SLOTS + j] = float16_t(pm[prow + pc.pstride - OUT_SLOTS + j] * inv);
}
