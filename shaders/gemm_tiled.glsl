// gemm_tiled.glsl — the portable matrix product C = act(A · Wᵀ + bias) for every Vulkan
// device: A [M][K] activations, W [N][K] a Linear layer's weights in Hugging Face layout,
// C [M][N]. 64x64 output tile per 256-thread workgroup, K in steps of 16 through shared
// memory, 4x4 outputs per thread (4 rows strided by 16, 4 contiguous columns so that an
// f16 output is written as one packed uvec2). Accumulation is fp32 whatever the storage.
//
// Defines (set by the one-line wrapper .comp files): A_F16 (A and W are f16, packed in
// uints), C_F16 (C is f16). Requires K % 4 == 0 and N % 4 == 0 (checked on the host).
#include "common.glsl"

layout(local_size_x = 256) in;

#include "gemm_io.glsl"

const uint BM = 64, BN = 64, BK = 16;

// k-major so that the inner loop reads one A value per row and 4 adjacent W values.
shared float As[BK][BM + 1];
shared vec4 Ws[BK][BN / 4];


void main()
{
	const uint tid = gl_LocalInvocationID.x;
	const uint tx = tid % 16, ty = tid / 16;
	const uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
	const uint K4 = pc.K / 4;

	// Each thread stages one vec4 of A and one of W per K step.
	const uint lr = tid / 4, lk = tid % 4;

	vec4 acc[4] = vec4[4](vec4(0), vec4(0), vec4(0), vec4(0));
	for (uint k0 = 0; k0 < pc.K; k0 += BK) {
		const uint kq = k0 / 4 + lk;
		vec4 va = vec4(0), vw = vec4(0);
		if (m0 + lr < pc.M && kq < K4)
			va = load_a((m0 + lr) * K4 + kq);
		if (n0 + lr < pc.N && kq < K4)
			vw = load_w((n0 + lr) * K4 + kq);
		barrier();
		As[lk * 4 + 0][lr] = va.x;
		As[lk * 4 + 1][lr] = va.y;
		As[lk * 4 + 2][lr] = va.z;
		As[lk * 4 + 3][lr] = va.w;
		// W row lr holds output column lr: scatter its 4 k values into column lr.
		{
			const uint c4 = lr / 4, ce = lr % 4;
			Ws[lk * 4 + 0][c4][ce] = vw.x;
			Ws[lk * 4 + 1][c4][ce] = vw.y;
			Ws[lk * 4 + 2][c4][ce] = vw.z;
			Ws[lk * 4 + 3][c4][ce] = vw.w;
		}
		barrier();
		[[unroll]] for (uint k = 0; k < BK; k++) {
			const vec4 wv = Ws[k][tx];
			[[unroll]] for (uint i = 0; i < 4; i++)
				acc[i] = fma(vec4(As[k][ty + 16 * i]), wv, acc[i]);
		}
	}

	const uint col = n0 + tx * 4;
	if (col >= pc.N)
		return;
	const vec4 bias = vec4(wvec[pc.bias_off + col], wvec[pc.bias_off + col + 1],
			       wvec[pc.bias_off + col + 2], wvec[pc.bias_off + col + 3]);
	const uint N4 = pc.N / 4;
	[[unroll]] for (uint i = 0; i < 4; i++) {
		const uint row = m0 + ty + 16 * i;
		if (row < pc.M) {
			vec4 v = activate4(acc[i] + bias, pc.act);
#if C_F16
			c[row * N4 + col / 4] = pack4(v);
#else
			c[row * N4 + col / 4] = v;
#endif
		}
	}
}
