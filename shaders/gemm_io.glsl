// gemm_io.glsl — what the portable GEMMs (gemm_tiled, gemm_direct) share: the push
// constants, the buffer bindings (activations a, weights w, bias vector wvec, output c;
// fp16 storage packed as uvec2 where A_F16 / C_F16 say so) and the vec4 loads from a and w.

layout(push_constant) uniform PC {
	uint M, N, K;
	uint bias_off;  // float offset of the bias in wvec
	uint act;
} pc;

#if A_F16
layout(std430, binding = 0) readonly buffer A_ { uvec2 a[]; };
layout(std430, binding = 1) readonly buffer W_ { uvec2 w[]; };
#else
layout(std430, binding = 0) readonly buffer A_ { vec4 a[]; };
layout(std430, binding = 1) readonly buffer W_ { vec4 w[]; };
#endif
layout(std430, binding = 2) readonly buffer V_ { float wvec[]; };
#if C_F16
layout(std430, binding = 3) writeonly buffer C_ { uvec2 c[]; };
#else
layout(std430, binding = 3) writeonly buffer C_ { vec4 c[]; };
#endif

vec4 load_a(uint i)
{
#if A_F16
	return unpack4(a[i]);
#else
	return a[i];
#endif
}

vec4 load_w(uint i)
{
#if A_F16
	return unpack4(w[i]);
#else
	return w[i];
#endif
}
