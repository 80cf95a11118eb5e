// common.glsl — helpers every compute shader of the Vulkan backend shares.
//
// f16 activations and weights are stored as packed uint pairs and converted with
// unpackHalf2x16/packHalf2x16 in the portable shaders, so that they need no shaderFloat16 or
// 16-bit storage feature and run on any Vulkan 1.2 device (lavapipe included); only the
// cooperative-matrix shaders use real float16_t types.

#extension GL_EXT_control_flow_attributes : enable

// Activation codes pushed by the host: 0 none, 1 exact (erf) GELU, 2 tanh GELU, 3 ReLU.
#define ACT_NONE 0u
#define ACT_GELU_ERF 1u
#define ACT_GELU_TANH 2u
#define ACT_RELU 3u

// GLSL has no erf. Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7, which keeps the
// GELU within ~1e-7 * |x| of libm's erff — far inside the 1e-4 bar for the fp32 path.
float erf_as(float x)
{
	float s = sign(x);
	x = abs(x);
	float t = 1.0 / (1.0 + 0.3275911 * x);
	float y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t
			 - 0.284496736) * t + 0.254829592) * t * exp(-x * x);
	return s * y;
}

float activate(float x, uint act)
{
	if (act == ACT_GELU_ERF)
		return 0.5 * x * (1.0 + erf_as(x * 0.70710678118654752));
	if (act == ACT_GELU_TANH) {
		// tanh of a large argument overflows exp() inside some drivers' tanh and yields
		// NaN; the clamp changes nothing since tanh(10) == 1 in fp32.
		float u = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -10.0, 10.0);
		return 0.5 * x * (1.0 + tanh(u));
	}
	if (act == ACT_RELU)
		return max(x, 0.0);
	return x;
}

vec4 activate4(vec4 v, uint act)
{
	return vec4(activate(v.x, act), activate(v.y, act), activate(v.z, act), activate(v.w, act));
}

// 4 halfs <-> vec4
vec4 unpack4(uvec2 u)
{
	return vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
}

uvec2 pack4(vec4 v)
{
	return uvec2(packHalf2x16(v.xy), packHalf2x16(v.zw));
}

// Row index of a workgroup in a 1-D launch that was split over x and y because
// maxComputeWorkGroupCount[0] may be as low as 65535 (lavapipe) while a chunk can hold more
// tokens than that.
uint flat_group()
{
	return gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
}
