// gemm_direct.glsl — C = act(A · Wᵀ + bias) without shared memory, for CPU Vulkan
// implementations (lavapipe). There a workgroup barrier is a switch between coroutines and
// shared memory is ordinary memory, so the tiled kernel's staging only costs time (measured
// on lavapipe, 2 cores: 0.4 GFLOP/s tiled); reading A and W straight from memory, which the
// CPU caches anyway, is several times faster. Each invocation computes 4 rows x 4 columns,
// 64 multiply-adds per 8 vector loads. Same bindings, push constants and defines as
// gemm_tiled.glsl, so the host swaps one for the other freely.
#include "common.glsl"

layout(local_size_x = 8, local_size_y = 8) in;

#include "gemm_io.glsl"

void main()
{
	const uint col = gl_GlobalInvocationID.x * 4;
	const uint row0 = gl_GlobalInvocationID.y * 4;
	if (col >= pc.N || row0 >= pc.M)
		return;
	const uint K4 = pc.K / 4;
	uint ra[4], rw[4];
	[[unroll]] for (uint i = 0; i < 4; i++) {
		ra[i] = min(row0 + i, pc.M - 1) * K4;  // clamped rows compute but are not stored
		rw[i] = (col + i) * K4;
	}
	vec4 acc[4] = vec4[4](vec4(0), vec4(0), vec4(0), vec4(0));
	for (uint k = 0; k < K4; k++) {
		vec4 av[4], wv[4];
		[[unroll]] for (uint i = 0; i < 4; i++) {
			av[i] = load_a(ra[i] + k);
			wv[i] = load_w(rw[i] + k);
		}
		[[unroll]] for (uint i = 0; i < 4; i++)
			acc[i] += vec4(dot(av[i], wv[0]), dot(av[i], wv[1]), dot(av[i], wv[2]),
				       dot(av[i], wv[3]));
	}
	const vec4 bias = vec4(wvec[pc.bias_off + col], wvec[pc.bias_off + col + 1],
			       wvec[pc.bias_off + col + 2], wvec[pc.bias_off + col + 3]);
	const uint N4 = pc.N / 4;
	[[unroll]] for (uint i = 0; i < 4; i++) {
		if (row0 + i < pc.M) {
			vec4 v = activate4(acc[i] + bias, pc.act);
#if C_F16
			c[(row0 + i) * N4 + col / 4] = pack4(v);
#else
			c[(row0 + i) * N4 + col / 4] = v;
#endif
		}
	}
}
