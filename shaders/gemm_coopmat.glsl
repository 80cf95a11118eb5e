// gemm_coopmat.glsl — the tensor-core matrix product C = act(A · Wᵀ + bias) through
// GL_NV_cooperative_matrix (the only cooperative-matrix extension Debian's glslc 2023.2
// knows): f16 A [M][K] and W [N][K], fp32 accumulation, f32 or f16 C [M][N].
//
// A 256-thread workgroup (8 subgroups of 32) computes a TILE_M x TILE_N tile: 128x64 with
// the subgroups laid out 4 (rows) x 2 (columns) for large products (WARPS_N = 2: 32x32, 2x2
// fragments each; two workgroups share an SM, ~5% faster than 128x128 on an H200), or
// 128x128 / 64x64 / 32x64 laid out 2 x 4, each subgroup owning (TILE_M/2)x(TILE_N/4) in
// 16x16 fragments (128x128: 4x2 fragments; measured on an H200 at ~100-110 TFLOP/s; 4
// subgroups of 64x64 each ran a third slower, 256x128 tiles with 32-wide K steps a quarter
// slower, K_STEP 32 on 128x64 2% slower). K advances 64 at a time: the next slice of A and W is
// fetched into registers while the tensor cores work on the current one in shared memory
// (rows padded by 8 halfs against bank conflicts). With an activation, the epilogue passes
// each fragment through a per-subgroup 16x16 staging area so that bias, activation, f16
// packing and the row bound are applied with plain stores; without one, it is direct (below).
//
// Requires (checked on the host before this path is chosen): subgroup size 32,
// 16x16x16 f16*f16+f32 cooperative matrices, N % TILE_N == 0, K % 64 == 0, and the A and C
// buffers padded to a multiple of TILE_M rows (rows past M are read, and written by the
// direct epilogue, but never used).
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_memory_scope_semantics : enable
#extension GL_NV_cooperative_matrix : enable
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : enable
#include "common.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform PC {
	uint M, N, K;
	uint bias_off;
	uint act;
	uint direct;   // 1: without an activation, skip the staged epilogue (see below)
} pc;

layout(std430, binding = 0) readonly buffer A_ { uvec4 a[]; };   // 8 halfs each
layout(std430, binding = 1) readonly buffer W_ { uvec4 w[]; };
layout(std430, binding = 2) readonly buffer V_ { float wvec[]; };
#if C_F16
layout(std430, binding = 3) writeonly buffer C_ { uvec4 c[]; };
#else
layout(std430, binding = 3) writeonly buffer C_ { float c[]; };  // glslc: no vec4 coopMatStoreNV
#endif

// TILE_M x TILE_N is 128x128 for large products; the small variants (64x64, 32x64) give 4x
// or 8x the workgroups to a product whose 128x128 grid would leave most of the chip idle
// (one text: 6 to 24 workgroups for 132 SMs).
#ifndef TILE_M
#define TILE_M 128
#define TILE_N 128
#endif
// WARPS_N: subgroups across the tile's columns (4, or 2 for a 4 x 2 layout); K_STEP: the K
// slice staged per barrier pair (64; 32 halves shared memory and staging registers).
#ifndef WARPS_N
#define WARPS_N 4
#endif
#ifndef K_STEP
#define K_STEP 64
#endif
const uint BM = TILE_M, BN = TILE_N, BK = K_STEP;
const uint WARPS_M = 8 / WARPS_N;
const uint SM_ = BM / WARPS_M, SN_ = BN / WARPS_N;   // rows, columns per subgroup
const uint FM = SM_ / 16, FN = SN_ / 16;        // fragments per subgroup
const uint SROW = (BK + 8) / 8;     // shared row stride in uvec4 (8 halfs of padding)

shared uvec4 As[BM * SROW];
shared uvec4 Bs[BN * SROW];
shared float Cs[8 * 256];           // one 16x16 f32 staging tile per subgroup

void main()
{
	const uint tid = gl_LocalInvocationID.x;
	const uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
	const uint wm = sg / WARPS_N, wn = sg % WARPS_N;
	const uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
	const uint K8 = pc.K / 8;

	// Direct epilogue (no activation): the accumulators start as the bias, loaded from a
	// 16x16 shared tile whose rows all hold it, and are stored straight to C at the end,
	// rows past M included (C has rows up to the padded row count, and nothing reads those
	// rows); this drops the per-fragment staging and its barriers, a large share of the
	// time of a K = 384 product.
	const bool direct = pc.act == ACT_NONE && pc.direct != 0u;
	fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc[FM][FN];
	if (direct) {
		const uint br = lane / 2, bc = (lane % 2) * 8;
		[[unroll]] for (uint j = 0; j < FN; j++) {
			const uint b = pc.bias_off + n0 + wn * SN_ + j * 16 + bc;
			[[unroll]] for (uint e = 0; e < 8; e++)
				Cs[sg * 256 + br * 16 + bc + e] = wvec[b + e];
			subgroupMemoryBarrierShared();
			subgroupBarrier();
			[[unroll]] for (uint i = 0; i < FM; i++)
				coopMatLoadNV(acc[i][j], Cs, sg * 256, 16, false);
			subgroupBarrier();
		}
	} else {
		[[unroll]] for (uint i = 0; i < FM; i++)
			[[unroll]] for (uint j = 0; j < FN; j++)
				acc[i][j] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);
	}

	// Each K slice of A (W) is BM (BN) rows x BK/8 uvec4; thread tid moves LOADS (LOADS_B),
	// row r0 + i * RSTEP, column kq.
	const uint KQ = BK / 8, RSTEP = 256 / KQ, LOADS = BM / RSTEP, LOADS_B = BN / RSTEP;
	const uint r0 = tid / KQ, kq = tid % KQ;
	uvec4 ra[LOADS], rb[LOADS_B];
	[[unroll]] for (uint i = 0; i < LOADS; i++)
		ra[i] = a[(m0 + r0 + i * RSTEP) * K8 + kq];
	[[unroll]] for (uint i = 0; i < LOADS_B; i++)
		rb[i] = w[(n0 + r0 + i * RSTEP) * K8 + kq];

	for (uint k0 = 0; k0 < pc.K; k0 += BK) {
		barrier();
		[[unroll]] for (uint i = 0; i < LOADS; i++)
			As[(r0 + i * RSTEP) * SROW + kq] = ra[i];
		[[unroll]] for (uint i = 0; i < LOADS_B; i++)
			Bs[(r0 + i * RSTEP) * SROW + kq] = rb[i];
		barrier();
		if (k0 + BK < pc.K) {
			const uint kn = (k0 + BK) / 8 + kq;
			[[unroll]] for (uint i = 0; i < LOADS; i++)
				ra[i] = a[(m0 + r0 + i * RSTEP) * K8 + kn];
			[[unroll]] for (uint i = 0; i < LOADS_B; i++)
				rb[i] = w[(n0 + r0 + i * RSTEP) * K8 + kn];
		}
		[[unroll]] for (uint kk = 0; kk < BK / 16; kk++) {
			fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fa[FM];
			[[unroll]] for (uint i = 0; i < FM; i++)
				coopMatLoadNV(fa[i], As, (wm * SM_ + i * 16) * SROW + kk * 2, SROW, false);
			[[unroll]] for (uint j = 0; j < FN; j++) {
				fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fb;
				// W rows are B's columns: column-major B with the same row stride.
				coopMatLoadNV(fb, Bs, (wn * SN_ + j * 16) * SROW + kk * 2, SROW, true);
				[[unroll]] for (uint i = 0; i < FM; i++)
					acc[i][j] = coopMatMulAddNV(fa[i], fb, acc[i][j]);
			}
		}
	}

	if (direct) {
		[[unroll]] for (uint i = 0; i < FM; i++) {
			const uint row = m0 + wm * SM_ + i * 16;
			[[unroll]] for (uint j = 0; j < FN; j++) {
				const uint col = n0 + wn * SN_ + j * 16;
#if C_F16
				fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> hm =
					fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>(acc[i][j]);
				coopMatStoreNV(hm, c, (row * pc.N + col) / 8, pc.N / 8, false);
#else
				coopMatStoreNV(acc[i][j], c, row * pc.N + col, pc.N, false);
#endif
			}
		}
		return;
	}

	// Epilogue: lane l finishes row l/2, columns (l%2)*8 .. +8 of each fragment.
	const uint er = lane / 2, ec = (lane % 2) * 2;
	[[unroll]] for (uint i = 0; i < FM; i++) {
		const uint row = m0 + wm * SM_ + i * 16 + er;
		[[unroll]] for (uint j = 0; j < FN; j++) {
			coopMatStoreNV(acc[i][j], Cs, sg * 256, 16, false);
			subgroupMemoryBarrierShared();
			subgroupBarrier();
			const uint col = n0 + wn * SN_ + j * 16 + ec * 4;
			const uint s0 = sg * 256 + er * 16 + ec * 4;
			vec4 v0 = vec4(Cs[s0], Cs[s0 + 1], Cs[s0 + 2], Cs[s0 + 3]);
			vec4 v1 = vec4(Cs[s0 + 4], Cs[s0 + 5], Cs[s0 + 6], Cs[s0 + 7]);
			subgroupBarrier();
			if (row < pc.M) {
				const uint b = pc.bias_off + col;
				v0 = activate4(v0 + vec4(wvec[b], wvec[b + 1], wvec[b + 2], wvec[b + 3]), pc.act);
				v1 = activate4(v1 + vec4(wvec[b + 4], wvec[b + 5], wvec[b + 6], wvec[b + 7]), pc.act);
#if C_F16
				c[(row * pc.N + col) / 8] = uvec4(pack4(v0), pack4(v1));
#else
				[[unroll]] for (uint e = 0; e < 4; e++) {
					c[row * pc.N + col + e] = v0[e];
					c[row * pc.N + col + 4 + e] = v1[e];
				}
#endif
			}
		}
	}
}
