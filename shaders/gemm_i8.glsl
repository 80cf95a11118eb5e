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
// product's; quant_i8.glsl). Their share is an int8 product too, with scales of its own: the
// epilogue codes each row's 16 values with one scale so (max / 127, in the row's units), W's
// matching columns sit after Wq as int8 codes with one scale swo an output channel (32 bytes
// an output channel at byte N·K of the W binding: 16 codes, 16 zeros; swo at oscale_off in
// wvec, in the units of that channel's scale), and one 16x16x32 MMA a fragment gives their
// int32 sum, which the epilogue adds as acc + so · swo · acc_o before the scales. Both sums
// are int32 matrices of one shape, so their elements share one layout and the epilogue in
// the accumulators (SECOND) serves these products too. Simulated (dev/int8/quant-study.py,
// mode oKS) the int8 outliers keep min cosine 0.99915 on SciFact's check, against 0.99924
// with the f16 outlier product they replace (an f16 MMA a fragment with the int32 sum as its
// C, whose fp32 result's element order inside this shader was never settled, so those
// products kept the staged epilogue: docs/bench-gpu.md).
//
// SECOND (specialization constant 2): where the host found the int32
// accumulators laid out as attn_fa.glsl needs fp32 ones (forward_vk.c's cm_layout_ok: a lane
// holds 8 elements in two rows, bit e of SECOND set for those in the second, elements 2p and
// 2p + 1 neighbours in a row), the epilogue reads the accumulators' elements in place: each
// lane learns their rows and columns from one int8 index product at the start
// (cm_index.glsl), scales each element by its row's and column's factors, applies the
// activation and writes f16 pairs to its subgroup's 512 bytes of shared memory, from which
// each lane stores one 16-byte piece of a row as above: no int32 fragment through shared
// memory. 0 keeps the staged epilogue (devices whose layout is not known). Reading the elements of an fp32 matrix converted from the
// int32 one instead put values at the wrong places on an H100 (driver 580: a conversion need
// not keep the element order) and made the products slower (docs/bench-gpu.md).
//
// ROWMAX (specialization constant 3; the up product where the down product quantises its own
// input): the down product's activations need one scale a row of the FFN's width, which no
// workgroup here sees whole, so each subgroup writes the maximum |v| of its SN_ columns of
// every row it computes to pm[row][part] (part = its column group, N / SN_ of them a row),
// outlier channels of the down product's input (omap_off: quant_i8.glsl's map, or
// NO_OUTLIERS) counted at ROWMAX_FLOOR as quant_i8.glsl's max_abs4 counts them. quant_rows.comp
// then reduces the parts to the row's inverse scale. The maximum is of the fp32 values, the
// down product reads their f16 rounding: at most 2^-11 larger, which the codes' rounding
// absorbs (F16A below).
//
// F16A (a #define: gemm_i8_*f.comp, the down product with ROWMAX's up product before it): A
// is the f16 output of the up product itself, not int8 codes, and the sa binding holds each
// row's inverse scale 127 / m rounded down to an f16 value (quant_rows.comp). Each slice is
// quantised as it goes into shared memory: one f16 FMA a pair of values, v · inv + 1536,
// rounds v · inv to the nearest integer (the f16 spacing at 1536 is 1), whose two's
// complement is then the value's low byte. |v| <= m · (1 + 2^-11) keeps every code within
// ±127 with no clamp; an outlier channel's value can exceed that, and wraps, but its int8
// weights are zeros (forward_vk.c's upload_weights). This removes quant_i8.comp's pass over
// the FFN's output (1.1 GB a layer at batch 1000) for twice the bytes of A read here.
//
// Requires (checked on the host): subgroup size 32, 16x16x32 s8 cooperative matrices,
// shaderInt8, N % TILE_N == 0, K % K_STEP == 0, A, sa and C padded to whole row tiles.
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable
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
#ifndef F16A
#define F16A 0
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
	uint omap_off;    // ROWMAX: the down product's outlier map (quant_i8.glsl), or NO_OUTLIERS
	uint oscale_off;  // OUTL: swo[N], the outlier codes' scales
} pc;
layout(constant_id = 0) const uint ACT = ACT_NONE;
layout(constant_id = 1) const uint OUTL = 0;
layout(constant_id = 2) const uint SECOND = 0;  // 0: the accumulators' layout is not known
bool second(uint e) { return ((SECOND >> e) & 1u) != 0u; }
layout(constant_id = 3) const uint ROWMAX = 0;
const uint NO_OUTLIERS = 0xffffffffu;
const float ROWMAX_FLOOR = 127.0 / 60000.0; // quant_i8.glsl's OUT_FLOOR

layout(std430, binding = 0) readonly buffer A_ { uvec4 a[]; };   // 16 int8 each
layout(std430, binding = 1) readonly buffer W_ { uvec4 w[]; };
layout(std430, binding = 2) readonly buffer V_ { float wvec[]; };
layout(std430, binding = 3) writeonly buffer C_ { uvec4 c[]; };  // 8 halfs each
layout(std430, binding = 4) readonly buffer S_ { float sa[]; };  // one scale a row of A (F16A:
								  // its inverse)
layout(std430, binding = 5) readonly buffer XO_ { uvec4 xo[]; }; // OUTL: 16 halfs a row
layout(std430, binding = 6) writeonly buffer PM_ { float pm[]; }; // ROWMAX: [row][N / SN_]

const uint BM = TILE_M, BN = TILE_N, BK = K_STEP, THREADS = 32 * WARPS;
const uint SM_ = BM / WARPS_M, SN_ = BN / WARPS_N;
const uint FM = SM_ / 16, FN = SN_ / 16;
const uint SROW = BK / 16 + 1;      // shared row stride in uvec4 (16 bytes of padding)

shared uvec4 Sh[(BM + BN) * SROW];
#define As(i) Sh[i]
#define Bs(i) Sh[BM * SROW + (i)]
shared ivec4 St[WARPS * (SECOND == 0 ? 64 : 32)];  // a subgroup's 16x16 int32 fragment, or
						    // (in place) its 16x16 f16 output
// OUTL: a subgroup's 16 rows of outlier codes (32 bytes a row: 16 codes, 16 zeros) and scales
shared uvec4 Sx[OUTL != 0 ? WARPS * 32 : 1];
shared float Sxs[OUTL != 0 ? WARPS * 16 : 1];

// the row's scale for the epilogue: sa, or with F16A 1 / its inverse (0 for a row of zeros)
float row_scale(uint row)
{
#if F16A
	const float i = sa[row];
	return i > 0.0 ? 1.0 / i : 0.0;
#else
	return sa[row];
#endif
}

// ROWMAX: the factor of column c's |v| in the row's maximum
float rowmax_weight(uint c)
{
	return pc.omap_off != NO_OUTLIERS && wvec[pc.omap_off + c] >= 0.0 ? ROWMAX_FLOOR : 1.0;
}

// OUTL: the outlier codes of the 16 rows from row rb into the subgroup's Sx (and their scales
// into Sxs), as one 16x32 A fragment: two lanes a row, 8 values each
icoopmatNV<8, gl_ScopeSubgroup, 16, 32> outlier_codes(uint rb, uint sg, uint lane)
{
	const uint r = lane / 2, h = lane % 2;
	const uvec4 u = xo[(rb + r) * 2 + h];
	const vec4 lo = vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
	const vec4 hi = vec4(unpackHalf2x16(u.z), unpackHalf2x16(u.w));
	const vec4 a = max(abs(lo), abs(hi));
	float m = max(max(a.x, a.y), max(a.z, a.w));
	m = max(m, subgroupShuffleXor(m, 1));
	const float inv = m > 0.0 ? 127.0 / m : 0.0;
	const ivec4 l = ivec4(clamp(roundEven(lo * inv), -127.0, 127.0));
	const ivec4 k = ivec4(clamp(roundEven(hi * inv), -127.0, 127.0));
	const uint c0 = (uint(l.x) & 0xffu) | (uint(l.y) & 0xffu) << 8 | (uint(l.z) & 0xffu) << 16 |
			(uint(l.w) & 0xffu) << 24;
	const uint c1 = (uint(k.x) & 0xffu) | (uint(k.y) & 0xffu) << 8 | (uint(k.z) & 0xffu) << 16 |
			(uint(k.w) & 0xffu) << 24;
	const uint d0 = subgroupShuffleXor(c0, 1), d1 = subgroupShuffleXor(c1, 1);
	subgroupBarrier();  // the last fragment's loads are done
	Sx[sg * 32 + r * 2 + h] = h == 0 ? uvec4(c0, c1, d0, d1) : uvec4(0);
	if (h == 0)
		Sxs[sg * 16 + r] = m / 127.0;
	subgroupMemoryBarrierShared();
	subgroupBarrier();
	icoopmatNV<8, gl_ScopeSubgroup, 16, 32> f;
	coopMatLoadNV(f, Sx, sg * 32, 2, false);
	return f;
}

#if F16A
// 4 f16 values (two packed pairs) to 4 int8 codes at inverse scale iv (F16A above)
uint codes4(uint h01, uint h23, f16vec2 iv)
{
	const f16vec2 mg = f16vec2(float16_t(1536.0));
	const uint c01 = packFloat2x16(fma(unpackFloat2x16(h01), iv, mg));
	const uint c23 = packFloat2x16(fma(unpackFloat2x16(h23), iv, mg));
	return (c01 & 0xffu) | (c01 >> 8 & 0xff00u) | (c23 & 0xffu) << 16 | (c23 << 8 & 0xff000000u);
}

// 16 f16 values (h0 the first 8) to one uvec4 of 16 codes
uvec4 codes16(uvec4 h0, uvec4 h1, float inv)
{
	const f16vec2 iv = f16vec2(float16_t(inv));
	return uvec4(codes4(h0.x, h0.y, iv), codes4(h0.z, h0.w, iv), codes4(h1.x, h1.y, iv),
		     codes4(h1.z, h1.w, iv));
}
#endif

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
	icoopmatNV<8, gl_ScopeSubgroup, 32, 16> fw[FN];   // OUTL: W's outlier codes, one tile
	const bool outl = OUTL != 0;
	if (outl)
		[[unroll]] for (uint j = 0; j < FN; j++)
			coopMatLoadNV(fw[j], w, pc.N * pc.K / 16 + (n0 + wn * SN_ + j * 16) * 2, 2, true);
	// SECOND: the rows (of the fragment) of a lane's elements outside and in its second
	// row, and each element's column
	const bool in_place = SECOND != 0;
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
	// A's row length in uvec4: 16 codes each, or with F16A 8 halfs each (two per 16 codes)
	const uint KA = F16A != 0 ? pc.K / 8 : K16;
#if I8_PREFETCH
	// the next slice is fetched into registers while the tensor cores work on this one
#if F16A
	uvec4 ra[2 * LOADS];
	float ri[LOADS];
#else
	uvec4 ra[LOADS];
#endif
	uvec4 rb[LOADS_B];
	{
		const uint m0 = mt0 * BM;
		[[unroll]] for (uint i = 0; i < LOADS; i++) {
			const uint row = m0 + r0 + i * RSTEP;
#if F16A
			ra[2 * i] = a[row * KA + 2 * kq];
			ra[2 * i + 1] = a[row * KA + 2 * kq + 1];
			ri[i] = sa[row];
#else
			ra[i] = a[row * KA + kq];
#endif
		}
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
#if F16A
			As((r0 + i * RSTEP) * SROW + kq) = codes16(ra[2 * i], ra[2 * i + 1], ri[i]);
#else
			As((r0 + i * RSTEP) * SROW + kq) = ra[i];
#endif
		[[unroll]] for (uint i = 0; i < LOADS_B; i++)
			Bs((r0 + i * RSTEP) * SROW + kq) = rb[i];
		barrier();
		if (s + 1 < steps) {
			const uint m1 = (mt0 + (s + 1) / NK) * BM, kn = ((s + 1) % NK) * KQ + kq;
			[[unroll]] for (uint i = 0; i < LOADS; i++) {
				const uint row = m1 + r0 + i * RSTEP;
#if F16A
				ra[2 * i] = a[row * KA + 2 * kn];
				ra[2 * i + 1] = a[row * KA + 2 * kn + 1];
				ri[i] = sa[row];
#else
				ra[i] = a[row * KA + kn];
#endif
			}
			[[unroll]] for (uint i = 0; i < LOADS_B; i++)
				rb[i] = w[(n0 + r0 + i * RSTEP) * K16 + kn];
		}
#else
		{
			const uint kn = ks * KQ + kq;
			[[unroll]] for (uint i = 0; i < LOADS; i++) {
				const uint row = m0 + r0 + i * RSTEP;
#if F16A
				As((r0 + i * RSTEP) * SROW + kq) =
					codes16(a[row * KA + 2 * kn], a[row * KA + 2 * kn + 1], sa[row]);
#else
				As((r0 + i * RSTEP) * SROW + kq) = a[row * KA + kn];
#endif
			}
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
			vec2 srow[FM], rmax[FM], orow[FM];
			icoopmatNV<8, gl_ScopeSubgroup, 16, 32> fo[FM];
			[[unroll]] for (uint i = 0; i < FM; i++) {
				srow[i] = vec2(row_scale(mb + i * 16 + rowA), row_scale(mb + i * 16 + rowB));
				rmax[i] = vec2(0.0);
				if (outl) {
					fo[i] = outlier_codes(mb + i * 16, sg, lane);
					orow[i] = vec2(Sxs[sg * 16 + rowA], Sxs[sg * 16 + rowB]);
				}
			}
			[[unroll]] for (uint j = 0; j < FN; j++) {
				const uint cb = n0 + wn * SN_ + j * 16;
				float ws[8], bs[8], rw[8], wo[8];
				[[unroll]] for (uint e = 0; e < 8; e++) {
					ws[e] = wvec[pc.scale_off + cb + colOf[e]];
					bs[e] = wvec[pc.bias_off + cb + colOf[e]];
					rw[e] = ROWMAX != 0 ? rowmax_weight(cb + colOf[e]) : 0.0;
					wo[e] = outl ? wvec[pc.oscale_off + cb + colOf[e]] : 0.0;
				}
				[[unroll]] for (uint i = 0; i < FM; i++) {
					float v[8];
					icoopmatNV<32, gl_ScopeSubgroup, 16, 16> ao;
					if (outl)
						ao = coopMatMulAddNV(fo[i], fw[j], icoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0));
					[[unroll]] for (uint e = 0; e < 8; e++) {
						const float so = second(e) ? orow[i].y : orow[i].x;
						const float sum = outl ? float(acc[i][j][e]) + float(ao[e]) * (so * wo[e])
								       : float(acc[i][j][e]);
						v[e] = activate(sum * (second(e) ? srow[i].y : srow[i].x) *
								ws[e] + bs[e], ACT);
						if (ROWMAX != 0) {
							if (second(e))
								rmax[i].y = max(rmax[i].y, abs(v[e]) * rw[e]);
							else
								rmax[i].x = max(rmax[i].x, abs(v[e]) * rw[e]);
						}
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
			if (ROWMAX != 0) {
				// the quad's four lanes hold the same two rows (cm_layout_ok)
				const uint part = gl_WorkGroupID.x * WARPS_N + wn, nparts = pc.N / SN_;
				[[unroll]] for (uint i = 0; i < FM; i++) {
					vec2 x = rmax[i];
					x = max(x, vec2(subgroupShuffleXor(x.x, 1), subgroupShuffleXor(x.y, 1)));
					x = max(x, vec2(subgroupShuffleXor(x.x, 2), subgroupShuffleXor(x.y, 2)));
					if (lane % 4 == 0) {
						pm[(mb + i * 16 + rowA) * nparts + part] = x.x;
						pm[(mb + i * 16 + rowB) * nparts + part] = x.y;
					}
				}
			}
		} else if (ks == NK - 1) {
			const uint r = lane / 2, cq = (lane % 2) * 2;   // row; ivec4 column of St
			[[unroll]] for (uint i = 0; i < FM; i++) {
				const uint row = m0 + wm * SM_ + i * 16 + r;
				const float s_row = row_scale(row);
				float rmax = 0.0, so = 0.0;
				icoopmatNV<8, gl_ScopeSubgroup, 16, 32> fo;
				if (outl) {
					fo = outlier_codes(m0 + wm * SM_ + i * 16, sg, lane);
					so = Sxs[sg * 16 + r];
				}
				[[unroll]] for (uint j = 0; j < FN; j++) {
					float v[8];
					const uint col = n0 + wn * SN_ + j * 16 + cq * 4;
					coopMatStoreNV(acc[i][j], St, sg * 64, 4, false);
					subgroupMemoryBarrierShared();
					subgroupBarrier();
					const ivec4 q0 = St[sg * 64 + r * 4 + cq], q1 = St[sg * 64 + r * 4 + cq + 1];
					v = float[8](float(q0.x), float(q0.y), float(q0.z), float(q0.w),
						     float(q1.x), float(q1.y), float(q1.z), float(q1.w));
					subgroupBarrier();
					if (outl) {
						coopMatStoreNV(coopMatMulAddNV(fo, fw[j], icoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0)),
							       St, sg * 64, 4, false);
						subgroupMemoryBarrierShared();
						subgroupBarrier();
						const ivec4 o0 = St[sg * 64 + r * 4 + cq], o1 = St[sg * 64 + r * 4 + cq + 1];
						const int o[8] = int[8](o0.x, o0.y, o0.z, o0.w, o1.x, o1.y, o1.z, o1.w);
						[[unroll]] for (uint e = 0; e < 8; e++)
							v[e] += float(o[e]) * (so * wvec[pc.oscale_off + col + e]);
						subgroupBarrier();
					}
					[[unroll]] for (uint e = 0; e < 8; e++) {
						v[e] = activate(v[e] * s_row * wvec[pc.scale_off + col + e] +
								wvec[pc.bias_off + col + e], ACT);
						if (ROWMAX != 0)
							rmax = max(rmax, abs(v[e]) * rowmax_weight(col + e));
					}
					c[(row * pc.N + col) / 8] = uvec4(packHalf2x16(vec2(v[0], v[1])),
									  packHalf2x16(vec2(v[2], v[3])),
									  packHalf2x16(vec2(v[4], v[5])),
									  packHalf2x16(vec2(v[6], v[7])));
				}
				if (ROWMAX != 0) {  // a row's 16 columns of a fragment are on two lanes
					rmax = max(rmax, subgroupShuffleXor(rmax, 1));
					if (lane % 2 == 0)
						pm[row * (pc.N / SN_) + gl_WorkGroupID.x * WARPS_N + wn] = rmax;
				}
			}
		}
	}
}
