// quant_rows.comp — each row's int8 scale for a down product that quantises its own input
// (gemm_i8.glsl's F16A), from the partial maxima its up product wrote (ROWMAX): the FFN's
// 1,536-wide rows span the up product's column tiles, so the maximum comes in parts, and
// reducing them here replaces quant_i8.comp's pass over the rows themselves (it read 2 and
// wrote 1 byte a value; this reads 4 bytes a part, 32-48 parts a row).
//
// For row t: m = max over its nparts parts of pm (outlier channels already counted at
// quant_i8.glsl's floor by the up product), and
//   ia[t] = the largest f16 value <= min(127 / m, 65504), 0 for m = 0,
// the inverse scale the down product codes with (v · ia rounded: gemm_i8.glsl's F16A) and
// whose reciprocal its epilogue scales with. Rounding down keeps |v| · ia <= 127 for |v| <= m.
// With outlier channels (nout > 0) the row's outlier values, at the columns olist names in
// wvec, go to xo in the row's units (v · ia, f16), as quant_i8.glsl's pack4_outliers writes
// them; slots past nout are never written (zeros).
#version 450
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#include "common.glsl"

layout(local_size_x = 128) in;
layout(push_constant) uniform PC { uint T, K, nparts, olist_off, nout; } pc;
layout(std430, binding = 0) readonly buffer X_ { float16_t x[]; };    // the up product's output
layout(std430, binding = 1) writeonly buffer XO_ { float16_t xo[]; }; // OUT_SLOTS a row
layout(std430, binding = 2) readonly buffer V_ { float wvec[]; };     // olist: columns, as floats
layout(std430, binding = 3) readonly buffer PM_ { float pm[]; };      // [T][nparts]
layout(std430, binding = 4) writeonly buffer S_ { float ia[]; };

const uint OUT_SLOTS = 16;   // quant_i8.glsl's

// the largest f16 value <= min(127 / m, 65504); the decrement is integer work on the bits,
// which no compiler can fold into the fp32 value (an H100 driver skipped an f16 round trip
// once: quant_i8.glsl)
float inverse_f16(float m)
{
	if (!(m > 0.0))
		return 0.0;
	const float inv = min(127.0 / m, 65504.0);
	uint h = packHalf2x16(vec2(inv, 0.0)) & 0xffffu;
	if (unpackHalf2x16(h).x > inv)
		h -= 1u;
	return unpackHalf2x16(h).x;
}

void main()
{
	const uint t = flat_group() * 128 + gl_LocalInvocationID.x;
	if (t >= pc.T)
		return;
	float m = 0.0;
	for (uint p = 0; p < pc.nparts; p++)
		m = max(m, pm[t * pc.nparts + p]);
	const float inv = inverse_f16(m);
	ia[t] = inv;
	for (uint j = 0; j < pc.nout; j++)
		xo[t * OUT_SLOTS + j] = float16_t(float(x[t * pc.K + uint(wvec[pc.olist_off + j])]) * inv);
}
