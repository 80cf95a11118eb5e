// gemm_coopmat.glsl — the tensor-core matrix product C = act(A · Wᵀ + bias) through
// GL_NV_cooperative_matrix (the only cooperative-matrix extension Debian's glslc 2023.2
// knows): f16 A [M][K] and W [N][K], fp32 accumulation, f32 or f16 C [M][N].
//
// A 256-thread workgroup (8 subgroups of 32) computes a 128x128 tile; subgroups are laid out
// 2 (rows) x 4 (columns), each owning 64x32 = 4x2 fragments of 16x16 (measured on an H200:
// ~100 TFLOP/s; 4 subgroups of 64x64 each ran a third slower). K advances 64 at a
// time: the next slice of A and W is fetched into registers while the tensor cores work on
// the current one in shared memory (rows padded by 8 halfs against bank conflicts). The
// epilogue passes each fragment through a per-subgroup 16x16 staging area so that bias,
// activation, f16 packing and the row bound are applied with plain stores.
//
// Requires (checked on the host before this path is chosen): subgroup size 32,
// 16x16x16 f16*f16+f32 cooperative matrices, N % 128 == 0, K % 64 == 0, and the A buffer
// padded to a multiple of 128 rows (rows past M are read but never stored).
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
} pc;

layout(std430, binding = 0) readonly buffer A_ { uvec4 a[]; };   // 8 halfs each
layout(std430, binding = 1) readonly buffer W_ { uvec4 w[]; };
layout(std430, binding = 2) readonly buffer V_ { float wvec[]; };
#if C_F16
layout(std430, binding = 3) writeonly buffer C_ { uvec4 c[]; };
#else
layout(std430, binding = 3) writeonly buffer C_ { vec4 c[]; };
#endif

const uint BM = 128, BN = 128, BK = 64;
const uint WARPS_N = 4;
const uint FM = 4, FN = 2;          // fragments per subgroup: 64 rows x 32 columns
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

	fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc[FM][FN];
	[[unroll]] for (uint i = 0; i < FM; i++)
		[[unroll]] for (uint j = 0; j < FN; j++)
			acc[i][j] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);

	// Each K slice of A and of W is 128 rows x BK/8 uvec4; thread tid moves LOADS of each,
	// row r0 + i * RSTEP, column kq.
	const uint KQ = BK / 8, RSTEP = 256 / KQ, LOADS = BM / RSTEP;
	const uint r0 = tid / KQ, kq = tid % KQ;
	uvec4 ra[LOADS], rb[LOADS];
	[[unroll]] for (uint i = 0; i < LOADS; i++) {
		ra[i] = a[(m0 + r0 + i * RSTEP) * K8 + kq];
		rb[i] = w[(n0 + r0 + i * RSTEP) * K8 + kq];
	}

	for (uint k0 = 0; k0 < pc.K; k0 += BK) {
		barrier();
		[[unroll]] for (uint i = 0; i < LOADS; i++) {
			As[(r0 + i * RSTEP) * SROW + kq] = ra[i];
			Bs[(r0 + i * RSTEP) * SROW + kq] = rb[i];
		}
		barrier();
		if (k0 + BK < pc.K) {
			const uint kn = (k0 + BK) / 8 + kq;
			[[unroll]] for (uint i = 0; i < LOADS; i++) {
				ra[i] = a[(m0 + r0 + i * RSTEP) * K8 + kn];
				rb[i] = w[(n0 + r0 + i * RSTEP) * K8 + kn];
			}
		}
		[[unroll]] for (uint kk = 0; kk < BK / 16; kk++) {
			fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fa[FM];
			[[unroll]] for (uint i = 0; i < FM; i++)
				coopMatLoadNV(fa[i], As, (wm * 64 + i * 16) * SROW + kk * 2, SROW, false);
			[[unroll]] for (uint j = 0; j < FN; j++) {
				fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fb;
				// W rows are B's columns: column-major B with the same row stride.
				coopMatLoadNV(fb, Bs, (wn * 32 + j * 16) * SROW + kk * 2, SROW, true);
				[[unroll]] for (uint i = 0; i < FM; i++)
					acc[i][j] = coopMatMulAddNV(fa[i], fb, acc[i][j]);
			}
		}
	}

	// Epilogue: lane l finishes row l/2, columns (l%2)*8 .. +8 of each fragment.
	const uint er = lane / 2, ec = (lane % 2) * 2;
	[[unroll]] for (uint i = 0; i < FM; i++) {
		const uint row = m0 + wm * 64 + i * 16 + er;
		[[unroll]] for (uint j = 0; j < FN; j++) {
			coopMatStoreNV(acc[i][j], Cs, sg * 256, 16, false);
			subgroupMemoryBarrierShared();
			subgroupBarrier();
			const uint col = n0 + wn * 32 + j * 16 + ec * 4;
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
				c[(row * pc.N + col) / 4] = v0;
				c[(row * pc.N + col) / 4 + 1] = v1;
#endif
			}
		}
	}
}
