// gemm_i8.glsl — the int8 tensor-core matrix product of --precision int8 on the GPU:
// C = act(sa[m] · sw[n] · (Aq · Wqᵀ)[m][n] + bias[n]) with int8 Aq [M][K] (one scale sa per
// row: per token), int8 Wq [N][K] (one scale sw per output channel, quantised at open), int32
// accumulation through GL_NV_cooperative_matrix's integer matrices (16x16x32 s8*s8+s32,
// which Debian's glslc 2023.2 compiles), f16 C [M][N].
//
// Why int8: the device's int8 MMAs run at twice its f16 rate, and an int8 fragment of
// 16x32 carries twice the K of a 16x16 f16 fragment in the same 16 bytes a lane, so each
// fragment load from shared memory (what bounds the f16 kernel, docs/bench-gemm.md) feeds
// twice the multiply-adds.
//
// Layout as gemm_coopmat.glsl's (whose comments say why): a workgroup of WARPS_M x WARPS_N
// subgroups computes TILES_M tiles of TILE_M x TILE_N one after another down the rows; K
// advances K_STEP bytes (128) at a time through shared memory, rows padded by 16 bytes. With
// I8_PREFETCH (the default) the next slice of A and W is fetched into registers while the
// tensor cores work on the current one: on the H100 that made the products 6-12% faster
// (down 640 -> 571 us at M = 245760) and the batch-1000 forward pass 4.6% (docs/bench-gemm.md).
//
// Epilogue: the accumulators are exact int32 sums; each subgroup stores one 16x16 fragment
// at a time to its own 1 KB of shared memory, and every lane converts 8 neighbouring
// elements of one row (row lane/2, columns (lane%2)*8..+7): scales, bias, activation (a
// specialization constant), one 16-byte f16 store. No workgroup barrier is needed for it.
// Rows past M are written too (stale rows of A times W), which nothing reads; the sa
// buffer must hold as many rows as the A buffer (padded to TILE_M * TILES_M).
//
// OUTL (specialization constant 1, EMBED_VK_INT8_OUTLIERS): the input's outlier channels were
// kept out of Aq as 16 f16 values a row in the units of its scale (xo, zeros past the
// product's; quant_i8.glsl), and W's matching columns sit after Wq as 16 f16 values an output
// channel in the units of its scale (wo, at byte N·K of the W binding). Their product is then
// in the int32 sum's units: the epilogue takes each fragment's sum to fp32 as the C of one
// f16 MMA (16x16x16) of the outliers, and scales that. An H100 ran the first form, the
// outliers' product staged through shared memory apart and added after the scales, 26%
// slower than without outliers (docs/bench-gpu.md).
//
// SECOND (specialization constant 2; products without OUTL): where the host found the int32
// accumulators laid out as attn_fa.glsl needs fp32 ones (forward_vk.c's cm_layout_ok: a lane
// holds 8 elements in two rows, bit e of SECOND set for those in the second, elements 2p and
// 2p + 1 neighbours in a row), the epilogue reads the accumulators' elements in place: each
// lane learns their rows and columns from one int8 index product at the start
// (cm_index.glsl), scales each element by its row's and column's factors, applies the
// activation and writes f16 pairs to its subgroup's 512 bytes of shared memory, from which
// each lane stores one 16-byte piece of a row as above: no int32 fragment through shared
// memory. 0 keeps the staged epilogue (devices whose layout is not known, and the outlier
// products: see forward_vk.c). Reading the elements of an fp32 matrix converted from the
// int32 one instead put values at the wrong places on an H100 (driver 580: a conversion need
// not keep the element order) and made the products slower (docs/bench-gpu.md).
//
// Requires (checked on the host): subgroup size 32, 16x16x32 s8 cooperative matrices,
// shaderInt8, N % TILE_N == 0, K % K_STEP == 0, A, sa and C padded to whole row tiles.
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_memory_scope_semantics : enable
#extension GL_NV_cooperative_matrix : enable
#extension GL_NV_integer_cooperative_matrix : enable
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : enable
#extension GL_EXT_shader_explicit_arithmetic_types_int32 : enable
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : enable
#include "common.glsl"
#define CM_INDEX_I8 1
#include "cm_index.glsl"

#ifndef TILE_M
#define TILE_M 128
#define TILE_N 96
#endif
#ifndef WARPS_M
#define WARPS_M 2
#define WARPS_N 2
#endif
#ifndef TILES_M
#define TILES_M 2
#endif
#ifndef K_STEP
#define K_STEP 128
#endif
#ifndef I8_PREFETCH
#define I8_PREFETCH 1
#endif
#define WARPS (WARPS_M * WARPS_N)
#if (TILE_M % (32 * WARPS * 16 / K_STEP)) != 0 || (TILE_N % (32 * WARPS * 16 / K_STEP)) != 0
#error "gemm_i8.glsl: the tile's rows do not split evenly over the workgroup's threads"
#endif

layout(local_size_x = 32 * WARPS) in;

layout(push_constant) uniform PC {
	uint M, N, K;
	uint bias_off;    // float offsets in wvec: bias[N], then (at scale_off) sw[N]
	uint scale_off;
} pc;
layout(constant_id = 0) const uint ACT = ACT_NONE;
layout(constant_id = 1) const uint OUTL = 0;
layout(constant_id = 2) const uint SECOND = 0;  // 0: the accumulators' layout is not known
bool second(uint e) { return ((SECOND >> e) & 1u) != 0u; }

layout(std430, binding = 0) readonly buffer A_ { uvec4 a[]; };   // 16 int8 each
layout(std430, binding = 1) readonly buffer W_ { uvec4 w[]; };
layout(std430, binding = 2) readonly buffer V_ { float wvec[]; };
layout(std430, binding = 3) writeonly buffer C_ { uvec4 c[]; };  // 8 halfs each
layout(std430, binding = 4) readonly buffer S_ { float sa[]; };  // one scale a row of A
layout(std430, binding = 5) readonly buffer XO_ { uvec4 xo[]; }; // OUTL: 16 halfs a row

const uint BM = TILE_M, BN = TILE_N, BK = K_STEP, THREADS = 32 * WARPS;
const uint SM_ = BM / WARPS_M, SN_ = BN / WARPS_N;
const uint FM = SM_ / 16, FN = SN_ / 16;
const uint SROW = BK / 16 + 1;      // shared row stride in uvec4 (16 bytes of padding)

shared uvec4 Sh[(BM + BN) * SROW];
#define As(i) Sh[i]
#define Bs(i) Sh[BM * SROW + (i)]
shared ivec4 St[WARPS * (SECOND == 0 || OUTL != 0 ? 64 : 32)];  // a subgroup's 16x16 int32
							  // fragment, or (in place) its 16x16 f16 output
shared float So[OUTL != 0 ? WARPS * 256 : 1]; // OUTL: St's fragment in fp32 (glslc: no vec4 store)

void main()
{
	const uint tid = gl_LocalInvocationID.x;
	const uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
	const uint wm = sg / WARPS_N, wn = sg % WARPS_N;
	const uint n0 = gl_WorkGroupID.x * BN;
	const uint mt0 = gl_WorkGroupID.y * TILES_M;
	const uint mtiles = min(TILES_M, (pc.M + BM - 1) / BM - mt0);
	const uint K16 = pc.K / 16, NK = pc.K / BK, steps = mtiles * NK;

	icoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc[FM][FN];
	fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fw[FN];   // OUTL: W's outlier columns, one tile
	const bool outl = OUTL != 0;
	if (outl)
		[[unroll]] for (uint j = 0; j < FN; j++)
			coopMatLoadNV(fw[j], w, pc.N * pc.K / 16 + (n0 + wn * SN_ + j * 16) * 2, 2, true);
	// SECOND: the rows (of the fragment) of a lane's elements outside and in its second
	// row, and each element's column
	const bool in_place = SECOND != 0 && !outl;
	uint rowA = 0, rowB = 0, colOf[8];
	if (in_place) {
		cm_index_i8_stage(tid, THREADS);
		barrier();
		const icoopmatNV<32, gl_ScopeSubgroup, 16, 16> lay = cm_index_i8();
		[[unroll]] for (uint e = 0; e < 8; e++) {
			colOf[e] = uint(lay[e]) % 16;
			if (second(e))
				rowB = uint(lay[e]) / 16;
			else
				rowA = uint(lay[e]) / 16;
		}
	}
	const uint KQ = BK / 16, RSTEP = THREADS / KQ, LOADS = BM / RSTEP, LOADS_B = BN / RSTEP;
	const uint r0 = tid / KQ, kq = tid % KQ;
#if I8_PREFETCH
	// the next slice is fetched into registers while the tensor cores work on this one
	uvec4 ra[LOADS], rb[LOADS_B];
	{
		const uint m0 = mt0 * BM;
		[[unroll]] for (uint i = 0; i < LOADS; i++)
			ra[i] = a[(m0 + r0 + i * RSTEP) * K16 + kq];
		[[unroll]] for (uint i = 0; i < LOADS_B; i++)
			rb[i] = w[(n0 + r0 + i * RSTEP) * K16 + kq];
	}
#endif

	for (uint s = 0; s < steps; s++) {
		const uint ks = s % NK, m0 = (mt0 + s / NK) * BM;
		if (ks == 0)
			[[unroll]] for (uint i = 0; i < FM; i++)
				[[unroll]] for (uint j = 0; j < FN; j++)
					acc[i][j] = icoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0);
		barrier();
#if I8_PREFETCH
		[[unroll]] for (uint i = 0; i < LOADS; i++)
			As((r0 + i * RSTEP) * SROW + kq) = ra[i];
		[[unroll]] for (uint i = 0; i < LOADS_B; i++)
			Bs((r0 + i * RSTEP) * SROW + kq) = rb[i];
		barrier();
		if (s + 1 < steps) {
			const uint m1 = (mt0 + (s + 1) / NK) * BM, kn = ((s + 1) % NK) * KQ + kq;
			[[unroll]] for (uint i = 0; i < LOADS; i++)
				ra[i] = a[(m1 + r0 + i * RSTEP) * K16 + kn];
			[[unroll]] for (uint i = 0; i < LOADS_B; i++)
				rb[i] = w[(n0 + r0 + i * RSTEP) * K16 + kn];
		}
#else
		{
			const uint kn = ks * KQ + kq;
			[[unroll]] for (uint i = 0; i < LOADS; i++)
				As((r0 + i * RSTEP) * SROW + kq) = a[(m0 + r0 + i * RSTEP) * K16 + kn];
			[[unroll]] for (uint i = 0; i < LOADS_B; i++)
				Bs((r0 + i * RSTEP) * SROW + kq) = w[(n0 + r0 + i * RSTEP) * K16 + kn];
		}
		barrier();
#endif
		[[unroll]] for (uint kk = 0; kk < BK / 32; kk++) {
			icoopmatNV<8, gl_ScopeSubgroup, 16, 32> fa[FM];
			[[unroll]] for (uint i = 0; i < FM; i++)
				coopMatLoadNV(fa[i], Sh, (wm * SM_ + i * 16) * SROW + kk * 2, SROW, false);
			[[unroll]] for (uint j = 0; j < FN; j++) {
				icoopmatNV<8, gl_ScopeSubgroup, 32, 16> fb;
				// W rows are B's columns: column-major B with the same row stride.
				coopMatLoadNV(fb, Sh, BM * SROW + (wn * SN_ + j * 16) * SROW + kk * 2, SROW, true);
				[[unroll]] for (uint i = 0; i < FM; i++)
					acc[i][j] = coopMatMulAddNV(fa[i], fb, acc[i][j]);
			}
		}

		if (ks == NK - 1 && in_place) {
			const uint mb = m0 + wm * SM_;
			vec2 srow[FM];
			[[unroll]] for (uint i = 0; i < FM; i++)
				srow[i] = vec2(sa[mb + i * 16 + rowA], sa[mb + i * 16 + rowB]);
			[[unroll]] for (uint j = 0; j < FN; j++) {
				const uint cb = n0 + wn * SN_ + j * 16;
				float ws[8], bs[8];
				[[unroll]] for (uint e = 0; e < 8; e++) {
					ws[e] = wvec[pc.scale_off + cb + colOf[e]];
					bs[e] = wvec[pc.bias_off + cb + colOf[e]];
				}
				[[unroll]] for (uint i = 0; i < FM; i++) {
					float v[8];
					[[unroll]] for (uint e = 0; e < 8; e++) {
						v[e] = activate(float(acc[i][j][e]) * (second(e) ? srow[i].y : srow[i].x) *
								ws[e] + bs[e], ACT);
					}
					// f16 pairs into this subgroup's tile (8 uints a row), then one
					// 16-byte piece a lane: row lane / 2, columns (lane % 2) * 8..+7
					[[unroll]] for (uint p = 0; p < 4; p++) {
						const uint u = (second(2 * p) ? rowB : rowA) * 8 + colOf[2 * p] / 2;
						St[sg * 32 + u / 4][u % 4] = int(packHalf2x16(vec2(v[2 * p], v[2 * p + 1])));
					}
					subgroupMemoryBarrierShared();
					subgroupBarrier();
					c[((mb + i * 16 + lane / 2) * pc.N + cb) / 8 + lane % 2] = uvec4(St[sg * 32 + lane]);
					subgroupBarrier();
				}
			}
		} else if (ks == NK - 1) {
			const uint r = lane / 2, cq = (lane % 2) * 2;   // row; ivec4 column of St
			[[unroll]] for (uint i = 0; i < FM; i++) {
				const uint row = m0 + wm * SM_ + i * 16 + r;
				const float s_row = sa[row];
				fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fx;
				if (outl)
					coopMatLoadNV(fx, xo, (m0 + wm * SM_ + i * 16) * 2, 2, false);
				[[unroll]] for (uint j = 0; j < FN; j++) {
					float v[8];
					if (outl) {
						fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> f =
							coopMatMulAddNV(fx, fw[j], fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(acc[i][j]));
						coopMatStoreNV(f, So, sg * 256, 16, false);
						subgroupMemoryBarrierShared();
						subgroupBarrier();
						const uint b0 = sg * 256 + r * 16 + cq * 4;
						[[unroll]] for (uint e = 0; e < 8; e++)
							v[e] = So[b0 + e];
					} else {
						coopMatStoreNV(acc[i][j], St, sg * 64, 4, false);
						subgroupMemoryBarrierShared();
						subgroupBarrier();
						const ivec4 q0 = St[sg * 64 + r * 4 + cq], q1 = St[sg * 64 + r * 4 + cq + 1];
						v = float[8](float(q0.x), float(q0.y), float(q0.z), float(q0.w),
							     float(q1.x), float(q1.y), float(q1.z), float(q1.w));
					}
					subgroupBarrier();
					const uint col = n0 + wn * SN_ + j * 16 + cq * 4;
					[[unroll]] for (uint e = 0; e < 8; e++)
						v[e] = activate(v[e] * s_row * wvec[pc.scale_off + col + e] +
								wvec[pc.bias_off + col + e], ACT);
					c[(row * pc.N + col) / 8] = uvec4(packHalf2x16(vec2(v[0], v[1])),
									  packHalf2x16(vec2(v[2], v[3])),
									  packHalf2x16(vec2(v[4], v[5])),
									  packHalf2x16(vec2(v[6], v[7])));
				}
			}
		}
	}
}
