// add_ln_sg.comp — residual add + LayerNorm on the f16 residual stream, x16 = LN(y + x16),
// with each token on LPT lanes of one subgroup: the statistics are sums over those lanes by
// shuffles, so the kernel has no shared memory and no barriers, and every access moves 16
// bytes (8 halfs) a lane. The shared-memory version (layernorm.glsl, add_ln_h.comp: 32
// threads a token, 4-byte accesses, ten barriers a token) stays for devices without subgroup
// shuffles. Both take the mean first and then the variance of (v - mean), as the CPU does.
//
// The host picks LPT (a power of two up to 16 and the subgroup size, dividing H/8) and
// NQ = H / 8 / LPT, the 8-half pieces a lane holds; a lane group does ROUNDS tokens one after
// another, so that gamma and beta are read once for them.
//
// QUANT (--precision int8, where the next product is int8): the kernel also writes its
// output as that product's int8 input, one scale a token (with the product's SmoothQuant
// factors at sinv_off, or NO_SMOOTH), with the quantising pass's arithmetic (quant_i8.glsl)
// applied to the fp32 output, so that the pass need not read x16 back (H100: docs/bench-gpu.md).
// The codes are those of the fp32 values rather than of their f16 rounding in x16: a code may
// differ by one from the pass's where a value lies within the f16 rounding of a boundary.
// (Quantising the f16 values, unpack(pack(v)), gave such differences on an H100 anyway: its
// compiler skipped the round trip for some of them, test_vk_quant.)
#version 450
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#include "common.glsl"

layout(local_size_x = 128) in;
layout(constant_id = 0) const uint LPT = 16;
layout(constant_id = 1) const uint NQ = 3;
layout(constant_id = 2) const uint QUANT = 0;
const uint ROUNDS = 4;   // the host launches ceil(T / (128 / LPT * ROUNDS)) workgroups

layout(push_constant) uniform PC {
	uint T;          // tokens in this chunk
	uint H;          // hidden size = 8 * LPT * NQ
	uint tok_off, pos_off, type_off;   // unused (the embedding LayerNorm's)
	uint g_off, b_off;
	float eps;
	uint sinv_off;   // QUANT: the next product's SmoothQuant factors' inverses, or NO_SMOOTH
	uint omap_off;   // QUANT: its outlier channels' slots (quant_i8.glsl), or NO_OUTLIERS
} pc;

layout(std430, binding = 0) readonly buffer Y_ { uvec4 y[]; };     // 8 halfs each
layout(std430, binding = 1) writeonly buffer XO_ { float16_t xo[]; }; // QUANT: outliers
layout(std430, binding = 2) readonly buffer V_ { float wvec[]; };
layout(std430, binding = 3) writeonly buffer Q_ { uvec2 qa[]; };  // QUANT: 8 int8 each
layout(std430, binding = 4) writeonly buffer S_ { float qs[]; };   // QUANT: a scale a token
layout(std430, binding = 5) buffer X16_ { uvec4 x16[]; };
#include "quant_i8.glsl"

// The sum over a token's LPT lanes (aligned groups of the subgroup: xor stays inside).
float group_sum(float v)
{
	[[unroll]] for (uint s = LPT / 2; s > 0; s >>= 1)
		v += subgroupShuffleXor(v, s);
	return v;
}

float group_max(float v)
{
	[[unroll]] for (uint s = LPT / 2; s > 0; s >>= 1)
		v = max(v, subgroupShuffleXor(v, s));
	return v;
}

vec4 wvec4(uint o)
{
	return vec4(wvec[o], wvec[o + 1], wvec[o + 2], wvec[o + 3]);
}

void main()
{
	const uint per_sg = gl_SubgroupSize / LPT, TPW = gl_NumSubgroups * per_sg;
	const uint lane = gl_SubgroupInvocationID % LPT;
	const uint H8 = LPT * NQ;
	const uint t0 = flat_group() * TPW * ROUNDS + gl_SubgroupID * per_sg +
			gl_SubgroupInvocationID / LPT;

	// QUANT: the outlier slots of this lane's channels, read once for all ROUNDS tokens
	const bool outl = QUANT != 0 && pc.omap_off != NO_OUTLIERS;
	vec4 g[2 * NQ], b[2 * NQ], os[2 * NQ];
	[[unroll]] for (uint q = 0; q < NQ; q++) {
		const uint o = pc.omap_off + 8 * (lane + LPT * q);
		os[2 * q] = outl ? wvec4(o) : vec4(-1.0);
		os[2 * q + 1] = outl ? wvec4(o + 4) : vec4(-1.0);
		const uint col = 8 * (lane + LPT * q);
		g[2 * q] = wvec4(pc.g_off + col);
		g[2 * q + 1] = wvec4(pc.g_off + col + 4);
		b[2 * q] = wvec4(pc.b_off + col);
		b[2 * q + 1] = wvec4(pc.b_off + col + 4);
	}

	[[unroll]] for (uint r = 0; r < ROUNDS; r++) {
		const uint t = t0 + r * TPW;
		if (t >= pc.T)   // the same for a token's lanes, so their shuffles stay complete
			break;
		vec4 v[2 * NQ];
		float sum = 0.0;
		[[unroll]] for (uint q = 0; q < NQ; q++) {
			const uint i = t * H8 + lane + LPT * q;
			const uvec4 a = y[i], c = x16[i];
			v[2 * q] = vec4(unpackHalf2x16(a.x), unpackHalf2x16(a.y)) +
				   vec4(unpackHalf2x16(c.x), unpackHalf2x16(c.y));
			v[2 * q + 1] = vec4(unpackHalf2x16(a.z), unpackHalf2x16(a.w)) +
				       vec4(unpackHalf2x16(c.z), unpackHalf2x16(c.w));
			sum += dot(v[2 * q], vec4(1.0)) + dot(v[2 * q + 1], vec4(1.0));
		}
		const float mean = group_sum(sum) / float(pc.H);
		float sq = 0.0;
		[[unroll]] for (uint k = 0; k < 2 * NQ; k++) {
			const vec4 d = v[k] - mean;
			sq += dot(d, d);
		}
		const float rstd = 1.0 / sqrt(group_sum(sq) / float(pc.H) + pc.eps);
		float m = 0.0;
		[[unroll]] for (uint q = 0; q < NQ; q++) {
			const vec4 lo = (v[2 * q] - mean) * rstd * g[2 * q] + b[2 * q];
			const vec4 hi = (v[2 * q + 1] - mean) * rstd * g[2 * q + 1] + b[2 * q + 1];
			const uvec4 h = uvec4(packHalf2x16(lo.xy), packHalf2x16(lo.zw),
					      packHalf2x16(hi.xy), packHalf2x16(hi.zw));
			x16[t * H8 + lane + LPT * q] = h;
			if (QUANT != 0) {
				v[2 * q] = lo;
				v[2 * q + 1] = hi;
				if (pc.sinv_off != NO_SMOOTH) {
					const uint col = pc.sinv_off + 8 * (lane + LPT * q);
					v[2 * q] *= wvec4(col);
					v[2 * q + 1] *= wvec4(col + 4);
				}
				if (outl) {
					m = max(m, max(max_abs4(v[2 * q], os[2 * q]),
						       max_abs4(v[2 * q + 1], os[2 * q + 1])));
				} else {
					const vec4 c = max(abs(v[2 * q]), abs(v[2 * q + 1]));
					m = max(m, max(max(c.x, c.y), max(c.z, c.w)));
				}
			}
		}
		if (QUANT != 0) {
			m = group_max(m);
			const float inv = quant_inv(m);
			if (lane == 0)
				qs[t] = m / 127.0;
			[[unroll]] for (uint q = 0; q < NQ; q++)
				qa[t * H8 + lane + LPT * q] =
					outl ? uvec2(pack4_outliers(v[2 * q], os[2 * q], inv, t),
						     pack4_outliers(v[2 * q + 1], os[2 * q + 1], inv, t))
					     : uvec2(pack4i(v[2 * q] * inv), pack4i(v[2 * q + 1] * inv));
		}
	}
}
