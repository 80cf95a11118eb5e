// gemm_coopmat_study.glsl — shaders/gemm_coopmat.glsl (read that file for the kernel) with the
// switches of the study in docs/bench-gemm.md: ACC16 (f16 accumulators), DIAG (1: no global
// loads in the K loop; 2: nor shared stores and barriers) and DIAG_TRANS (fragments loaded in
// the other order). dev/gemm/gemm-variants compiles it in the shapes of dev/gemm/variants.txt
// for dev/gemm/tool_vk_gemm. Kept as it was when the study ran, so its numbers reproduce.
//
// The product kernel's own comment, as of the study:
// gemm_coopmat.glsl — the tensor-core matrix product C = act(A · Wᵀ + bias) through
// GL_NV_cooperative_matrix (the only cooperative-matrix extension Debian's glslc 2023.2
// knows): f16 A [M][K] and W [N][K], fp32 accumulation, f16 C [M][N] (f32 C only in the
// variants dev/gemm/tool_vk_gemm times).
//
// A workgroup of WARPS_M x WARPS_N subgroups computes TILES_M tiles of TILE_M x TILE_N, one
// after another down the rows; each subgroup owns a (TILE_M/WARPS_M) x (TILE_N/WARPS_N)
// block of 16x16 fragments. K advances K_STEP (64) at a time through shared memory (rows
// padded by 8 halfs against bank conflicts). With PREFETCH the next slice of A and W is
// fetched into registers while the tensor cores work on the current one (across tiles, the
// next tile's first slice during the current tile's last); without it each slice goes from
// global to shared memory directly, which frees the registers a wider tile needs.
//
// Epilogue: the accumulators start as the bias (loaded once per workgroup), the activation
// (a specialization constant) is applied to the accumulator elements in place (with
// ACT_AT_STORE, to the staged f16 tile on its way out instead), and the tile is stored: f32
// straight from the fragments; f16 through shared memory (the A and W slices' array), so
// that each tile row leaves as whole 16-byte pieces — the fragments' own f16 stores are
// 4-byte scatters, which cost the qkv product a fifth of its time. Rows past M
// are written too (the bias plus products of finite stale rows), which nothing reads.
//
// Measured on an H200 with dev/gemm/tool_vk_gemm (docs/bench-gemm.md): the same MMAs with
// operands held in registers reach 330-390 TFLOP/s; with the fragments loaded from shared
// memory but no global loads and no barriers 160-235; this kernel, at M = 245760, 154-204.
// The large products use two tiles a workgroup of 2 x 2 subgroups: 128x96 tiles (subgroups
// of 64x48) where N is a multiple of 96, without the register prefetch except for the up
// product with its activation (qkv 204 TFLOP/s, up 152, down 173); else 128x64 with the
// prefetch (156, 134, 154). Measured slower: other layouts and tiles, 32- and 128-wide K
// slices, double-buffered shared memory, f16-typed shared arrays, fragments loaded straight
// from global memory; and (fourth session) f16 accumulators (ACC16): their MMAs reach 7-9%
// more with operands in registers, and half the registers allow 64x64 subgroup tiles, but in
// the forward pass they were slower at equal tiles (36.6 against 35.1 ms a batch) and their
// best wider tile gained less than a tenth on two products for three times the error.
//
// Requires (checked on the host before this path is chosen): subgroup size 32, 16x16x16
// f16*f16+f32 cooperative matrices, N % TILE_N == 0, K % K_STEP == 0, and the A and C buffers
// padded to a multiple of TILE_M rows.
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_memory_scope_semantics : enable
#extension GL_NV_cooperative_matrix : enable
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : enable
#include "common.glsl"

#ifndef TILE_M
#define TILE_M 128
#define TILE_N 64
#endif
#ifndef WARPS_M
#define WARPS_M 2
#define WARPS_N 2
#endif
#ifndef TILES_M
#define TILES_M 1
#endif
#ifndef K_STEP
#define K_STEP 64
#endif
#ifndef PREFETCH
#define PREFETCH 1
#endif
#ifndef DIAG
#define DIAG 0       // study only: 1 no global loads in the K loop; 2 nor shared stores, barriers
#endif
#ifndef DIAG_TRANS
#define DIAG_TRANS 0 // study only, with DIAG 2: bit 0 A, bit 1 B fragments in the other order
#endif
#ifndef ACC16
#define ACC16 0      // study only: f16 accumulators, half the registers of f32 ones
#endif
#if ACC16
#define ACC_BITS 16
#define acc_t float16_t
#else
#define ACC_BITS 32
#define acc_t float
#endif
#ifndef ACT_AT_STORE
#define ACT_AT_STORE 0   // the activation on the staged f16 tile, not the accumulators
#endif
#define WARPS (WARPS_M * WARPS_N)
// Each K slice is moved by all threads, a row of K_STEP/8 uvec4 at a time (RSTEP rows a round).
#if (TILE_M % (32 * WARPS * 8 / K_STEP)) != 0 || (TILE_N % (32 * WARPS * 8 / K_STEP)) != 0
#error "gemm_coopmat.glsl: the tile's rows do not split evenly over the workgroup's threads"
#endif
// f16 output is staged in the slices' array (HROW uvec4 a row), in STAGE_PASSES passes of
// TILE_M / STAGE_PASSES rows where the whole tile does not fit at once.
#define HROW (TILE_N / 8 + 1)
#define STAGE_ROOM ((TILE_M + TILE_N) * (K_STEP / 8 + 1))
#ifndef STAGE_PASSES
#if TILE_M * HROW <= STAGE_ROOM
#define STAGE_PASSES 1
#else
#define STAGE_PASSES 2
#endif
#endif
#ifndef STAGE_F16
#define STAGE_F16 (C_F16 && TILE_M / STAGE_PASSES * HROW <= STAGE_ROOM && \
		   TILE_M / STAGE_PASSES >= TILE_M / WARPS_M)
#endif
#if ACT_AT_STORE && STAGE_F16
#define ACT_ON_ACC false
#else
#define ACT_ON_ACC true
#endif

layout(local_size_x = 32 * WARPS) in;

layout(push_constant) uniform PC {
	uint M, N, K;
	uint bias_off;
} pc;
// The activation is a specialization constant, so that the products without one carry no
// activation code (a run-time switch cost 1.5%).
layout(constant_id = 0) const uint ACT = ACT_NONE;

layout(std430, binding = 0) readonly buffer A_ { uvec4 a[]; };   // 8 halfs each
layout(std430, binding = 1) readonly buffer W_ { uvec4 w[]; };
layout(std430, binding = 2) readonly buffer V_ { float wvec[]; };
#if C_F16
layout(std430, binding = 3) writeonly buffer C_ { uvec4 c[]; };
#else
layout(std430, binding = 3) writeonly buffer C_ { float c[]; };  // glslc: no vec4 coopMatStoreNV
#endif

const uint BM = TILE_M, BN = TILE_N, BK = K_STEP, THREADS = 32 * WARPS;
const uint SM_ = BM / WARPS_M, SN_ = BN / WARPS_N;   // rows, columns per subgroup
const uint FM = SM_ / 16, FN = SN_ / 16;        // fragments per subgroup
const uint SROW = (BK + 8) / 8;     // shared row stride in uvec4 (8 halfs of padding)

// The A and W slices share one array (W's after A's), so that an f16 output tile may be
// staged across both.
shared uvec4 Sh[(BM + BN) * SROW];
#define As(i) Sh[i]
#define Bs(i) Sh[BM * SROW + (i)]

shared acc_t Bias[WARPS * 256];     // one 16x16 tile per subgroup whose rows all hold the bias

uint act2(uint h2)   // the activation of two packed halfs
{
	const vec2 v = unpackHalf2x16(h2);
	return packHalf2x16(vec2(activate(v.x, ACT), activate(v.y, ACT)));
}

void main()
{
	const uint tid = gl_LocalInvocationID.x;
	const uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
	const uint wm = sg / WARPS_N, wn = sg % WARPS_N;
	const uint n0 = gl_WorkGroupID.x * BN;
	const uint mt0 = gl_WorkGroupID.y * TILES_M;
	const uint mtiles = min(TILES_M, (pc.M + BM - 1) / BM - mt0);
	const uint K8 = pc.K / 8, NK = pc.K / BK, steps = mtiles * NK;

	fcoopmatNV<ACC_BITS, gl_ScopeSubgroup, 16, 16> bias_m[FN];
	{
		const uint br = lane / 2, bc = (lane % 2) * 8;
		[[unroll]] for (uint j = 0; j < FN; j++) {
			const uint b = pc.bias_off + n0 + wn * SN_ + j * 16 + bc;
			[[unroll]] for (uint e = 0; e < 8; e++)
				Bias[sg * 256 + br * 16 + bc + e] = acc_t(wvec[b + e]);
			subgroupMemoryBarrierShared();
			subgroupBarrier();
			coopMatLoadNV(bias_m[j], Bias, sg * 256, 16, false);
			subgroupBarrier();
		}
	}
	fcoopmatNV<ACC_BITS, gl_ScopeSubgroup, 16, 16> acc[FM][FN];

	// Each K slice of A (W) is BM (BN) rows x BK/8 uvec4; thread tid moves LOADS (LOADS_B),
	// row r0 + i * RSTEP, column kq.
	const uint KQ = BK / 8, RSTEP = THREADS / KQ, LOADS = BM / RSTEP, LOADS_B = BN / RSTEP;
	const uint r0 = tid / KQ, kq = tid % KQ;
#if PREFETCH
	uvec4 ra[LOADS], rb[LOADS_B];
	{
		const uint m0 = mt0 * BM;
		[[unroll]] for (uint i = 0; i < LOADS; i++)
			ra[i] = a[(m0 + r0 + i * RSTEP) * K8 + kq];
		[[unroll]] for (uint i = 0; i < LOADS_B; i++)
			rb[i] = w[(n0 + r0 + i * RSTEP) * K8 + kq];
	}
#endif

	for (uint s = 0; s < steps; s++) {
		const uint ks = s % NK, m0 = (mt0 + s / NK) * BM;
		if (ks == 0) {
			[[unroll]] for (uint i = 0; i < FM; i++)
				[[unroll]] for (uint j = 0; j < FN; j++)
					acc[i][j] = bias_m[j];
		}
#if DIAG < 2
		barrier();
#endif
#if PREFETCH
#if DIAG < 2
		[[unroll]] for (uint i = 0; i < LOADS; i++)
			As((r0 + i * RSTEP) * SROW + kq) = ra[i];
		[[unroll]] for (uint i = 0; i < LOADS_B; i++)
			Bs((r0 + i * RSTEP) * SROW + kq) = rb[i];
		barrier();
#endif
		if (DIAG == 0 && s + 1 < steps) {
			const uint m1 = (mt0 + (s + 1) / NK) * BM, kn = ((s + 1) % NK) * KQ + kq;
			[[unroll]] for (uint i = 0; i < LOADS; i++)
				ra[i] = a[(m1 + r0 + i * RSTEP) * K8 + kn];
			[[unroll]] for (uint i = 0; i < LOADS_B; i++)
				rb[i] = w[(n0 + r0 + i * RSTEP) * K8 + kn];
		}
#else
		{
			const uint kn = ks * KQ + kq;
			[[unroll]] for (uint i = 0; i < LOADS; i++)
				As((r0 + i * RSTEP) * SROW + kq) = a[(m0 + r0 + i * RSTEP) * K8 + kn];
			[[unroll]] for (uint i = 0; i < LOADS_B; i++)
				Bs((r0 + i * RSTEP) * SROW + kq) = w[(n0 + r0 + i * RSTEP) * K8 + kn];
		}
		barrier();
#endif
		[[unroll]] for (uint kk = 0; kk < BK / 16; kk++) {
			fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fa[FM];
			[[unroll]] for (uint i = 0; i < FM; i++)
#if DIAG_TRANS & 1   // study (with DIAG 2): A fragments loaded as column-major
				coopMatLoadNV(fa[i], Sh, (kk * 16) * (BM / 8 + 1) + (wm * SM_ + i * 16) / 8,
					      BM / 8 + 1, true);
#else
				coopMatLoadNV(fa[i], Sh, (wm * SM_ + i * 16) * SROW + kk * 2, SROW, false);
#endif
			[[unroll]] for (uint j = 0; j < FN; j++) {
				fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fb;
#if DIAG_TRANS & 2   // study (with DIAG 2): B fragments loaded as row-major
				coopMatLoadNV(fb, Sh, BM * SROW + (kk * 16) * (BN / 8 + 1) + (wn * SN_ + j * 16) / 8,
					      BN / 8 + 1, false);
#else
				// W rows are B's columns: column-major B with the same row stride.
				coopMatLoadNV(fb, Sh, BM * SROW + (wn * SN_ + j * 16) * SROW + kk * 2, SROW, true);
#endif
				[[unroll]] for (uint i = 0; i < FM; i++)
					acc[i][j] = coopMatMulAddNV(fa[i], fb, acc[i][j]);
			}
		}

		if (ks == NK - 1) {
			if (ACT != ACT_NONE && ACT_ON_ACC)
				[[unroll]] for (uint i = 0; i < FM; i++)
					[[unroll]] for (uint j = 0; j < FN; j++)
						[[unroll]] for (int e = 0; e < acc[i][j].length(); e++)
							acc[i][j][e] = acc_t(activate(float(acc[i][j][e]), ACT));
#if STAGE_F16
			const uint PROWS = BM / STAGE_PASSES, RQ = BN / 8;   // rows a pass, uvec4 a row
			[[unroll]] for (uint p = 0; p < STAGE_PASSES; p++) {
				// Every subgroup is done reading the slices (the next one is still in
				// registers), and the previous pass has left.
				barrier();
				if (wm * SM_ / PROWS == p)
					[[unroll]] for (uint i = 0; i < FM; i++)
						[[unroll]] for (uint j = 0; j < FN; j++) {
							fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> hm =
								fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>(acc[i][j]);
							coopMatStoreNV(hm, Sh, (wm * SM_ - p * PROWS + i * 16) * HROW +
								       (wn * SN_ + j * 16) / 8, HROW, false);
						}
				barrier();
				[[unroll]] for (uint q = tid; q < PROWS * RQ; q += THREADS) {
					uvec4 v = As((q / RQ) * HROW + q % RQ);
					if (!ACT_ON_ACC && ACT != ACT_NONE)
						v = uvec4(act2(v.x), act2(v.y), act2(v.z), act2(v.w));
					c[((m0 + p * PROWS + q / RQ) * pc.N + n0) / 8 + q % RQ] = v;
				}
			}
#else
			[[unroll]] for (uint i = 0; i < FM; i++) {
				const uint row = m0 + wm * SM_ + i * 16;
				[[unroll]] for (uint j = 0; j < FN; j++) {
					const uint col = n0 + wn * SN_ + j * 16;
#if C_F16
					fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> hm =
						fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>(acc[i][j]);
					coopMatStoreNV(hm, c, (row * pc.N + col) / 8, pc.N / 8, false);
#else
					fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> fm =
						fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(acc[i][j]);
					coopMatStoreNV(fm, c, row * pc.N + col, pc.N, false);
#endif
				}
			}
#endif
		}
	}
}
