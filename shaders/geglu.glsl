// geglu.glsl — JinaBERT's gated feed-forward activation (the model description's FFN_GEGLU):
//   out[t][j] = gelu(up[t][j]) * up[t][I + j],   j < I
// up is the [T][2I] output of the up-projection (mlp.gated_layers, gated half first, as
// forward_cpu's geglu and the published implementation take it), out the [T][I] input of the
// down-projection. A step of its own rather than a GEMM epilogue: a tile of the product holds
// one half's columns, not both, and this pass moves 3I values a token against the product's
// 2·H·2I multiply-adds (under 1% of the up-projection's time at H = 768).
// Each thread does two adjacent columns of one token. Define QKV_F16: up and out are f16
// (packed pairs), the f16 paths' activations; the arithmetic is f32 either way.
#include "common.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform PC {
	uint T;      // tokens in this chunk
	uint I;      // intermediate size (even)
} pc;

#if QKV_F16
layout(std430, binding = 0) readonly buffer UP_ { uint up[]; };
layout(std430, binding = 3) writeonly buffer OUT_ { uint outv[]; };
#else
layout(std430, binding = 0) readonly buffer UP_ { vec2 up[]; };
layout(std430, binding = 3) writeonly buffer OUT_ { vec2 outv[]; };
#endif

void main()
{
	const uint i2 = pc.I / 2; // column pairs a token
	const uint k = flat_group() * 256 + gl_LocalInvocationID.x;
	if (k >= pc.T * i2)
		return;
	const uint t = k / i2, p = k % i2;
#if QKV_F16
	const vec2 g = unpackHalf2x16(up[t * pc.I + p]), v = unpackHalf2x16(up[t * pc.I + i2 + p]);
	outv[k] = packHalf2x16(vec2(gelu_erf(g.x), gelu_erf(g.y)) * v);
#else
	const vec2 g = up[t * pc.I + p], v = up[t * pc.I + i2 + p];
	outv[k] = vec2(gelu_erf(g.x), gelu_erf(g.y)) * v;
#endif
}
