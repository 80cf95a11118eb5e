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

// GLSL has no erf. GELU(x) = x·Φ(x), with 1 - Φ(|x|) = exp2(R(|x|)) / 2 and R a degree-7
// polynomial least-squares fitted to log2(erfc(u/√2)) on [0, 4√2] (past that, Φ is 1 within
// 3e-8): one exp2 and 7 FMAs, max |error| 6.5e-7 in fp32 against the exact GELU. On an H200 (dev/gemm/tool_vk_gemm --M 245760, up
// product with the engine's 128x96 tiles) it took 1826.8 us, degree 11 (1.6e-7) 1907.1, a
// ReLU 1660.3: GELU's share of that product fell from 13% to 9%. The Abramowitz & Stegun
// 7.1.26 erf used before degree 11 cost an exp and a reciprocal. dev/fit-gelu refits R.
float gelu_erf(float x)
{
	const float u = min(abs(x), 5.656854249);
	float r = -1.924855496e-06;
	r = r * u + 6.335340731e-05;
	r = r * u - 9.438750567e-04;
	r = r * u + 8.557835594e-03;
	r = r * u - 5.405501649e-02;
	r = r * u - 4.583795369e-01;
	r = r * u - 1.151278973e+00;
	r = r * u + 6.173173006e-06;
	const float e = 0.5 * exp2(r);   // 1 - Φ(|x|)
	return x * (x >= 0.0 ? 1.0 - e : e);
}

float activate(float x, uint act)
{
	if (act == ACT_GELU_ERF)
		return gelu_erf(x);
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

// --precision int8's activations (quant_i8.glsl says how they are coded; add_ln_sg.comp
// codes them too): no SmoothQuant factors (sinv_off), no outlier channels
// (omap_off), outlier values a row (xo, zeros past the product's), and the floor under a
// row's scale that keeps an outlier's value in the row's units within f16
const uint NO_SMOOTH = 0xffffffffu;
const uint NO_OUTLIERS = 0xffffffffu;
const uint OUT_SLOTS = 16;
const float OUT_FLOOR = 127.0 / 60000.0;

// 4 values already scaled to [-127, 127] as int8 codes, rounded to nearest even
uint pack4i(vec4 v)
{
	const ivec4 i = ivec4(clamp(roundEven(v), -127.0, 127.0));
	return (uint(i.x) & 0xffu) | (uint(i.y) & 0xffu) << 8 | (uint(i.z) & 0xffu) << 16 |
	       (uint(i.w) & 0xffu) << 24;
}

// Row index of a workgroup in a 1-D launch that was split over x and y because
// maxComputeWorkGroupCount[0] may be as low as 65535 (lavapipe) while a chunk can hold more
// tokens than that.
uint flat_group()
{
	return gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
}
