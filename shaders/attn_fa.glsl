// attn_fa.comp — attention with the softmax in the tensor-core registers: attn_cm.comp
// spent most of its time moving each 64-key chunk's scores and partial outputs through shared
// memory (scores stored, read by the lanes, probabilities written back, P·V stored and read
// again: about 100 KB of shared traffic a chunk), because a cooperative matrix is opaque:
// GL_NV_cooperative_matrix says nothing of which lane holds which element, so the kernel
// could neither take a row's maximum nor scale a row of the output in place.
//
// Here the element layout is read at run time instead: loading a 16x16 matrix of the numbers
// 0..255 tells each lane the row and column of every element it holds. The host checks once
// per device (forward_vk.c, shaders/cm_layout.comp) that the layout has the shape this kernel
// relies on — each lane holds 8 elements in two rows, and the four lanes of a quad (xor 1, 2)
// hold the same two rows and between them all 16 columns, as NVIDIA's tensor cores lay out
// an accumulator — and keeps attn_cm.comp where it does not.
//
// Per 64-key chunk a subgroup (16 query rows) computes S = Q·Kᵀ (four 16x16 fp32 matrices,
// 8 MMAs), the row maxima in its registers plus two quad shuffles, P = exp(S - max) in place,
// rescales the fp32 output O (two 16x16 matrices) by the correction per row, converts P to
// f16 and adds P·V (8 MMAs). Only the keys and values pass through shared memory (staged
// with zeros past the sequence, the next chunk prefetched into registers). At the end O is
// divided by the row sums and staged through shared memory so that rows past the sequence
// are never written (they belong to the next sequence).
//
// The lanes' work per score is what limits this kernel (head size 32 gives the tensor cores
// little to do), so it is kept short: the host folds the scale 1/√d and log2(e) into the
// query projection's weights and bias (forward_vk.c), so that a score needs no multiply
// before exp2; keys are masked only in a sequence's last, partial chunk; and which of a
// lane's two rows an element belongs to is the same for every lane, so the host passes it as
// a specialization constant and the compiler needs no selects.
//
// Same launch, block table and NaN precautions as attn_cm.comp: rows past the sequence are
// zeros, masked keys get p = 0, the running maximum starts finite, and the first chunk holds
// at least one real key.
#version 450
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable
#extension GL_KHR_memory_scope_semantics : enable
#extension GL_NV_cooperative_matrix : enable
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : enable
#include "common.glsl"

layout(local_size_x = 128) in;

layout(push_constant) uniform PC {
	uint block_off;  // first block-table entry of this chunk
	uint H;          // hidden size = heads * 32
	float scale;     // unused: the queries arrive scaled by log2(e)/sqrt(32)
} pc;

layout(std430, binding = 0) readonly buffer QKV_ { uvec4 qkv[]; };   // 8 halfs each
layout(std430, binding = 3) writeonly buffer CTX_ { uvec4 ctx[]; };
// (kv_start, kv_len, q_start, unused) per block, token indices relative to the chunk.
layout(std430, binding = 4) readonly buffer BLK_ { uvec4 blocks[]; };

#define F32M fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>
#define F16M fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>

const uint D = 32, D8 = D / 8;  // head size; the host picks this kernel only for D == 32
const uint BQ = 64, BKV = 64;
const uint SR = D8 + 1;         // staged row stride in uvec4: 8 halfs of padding (banks)
const uint NE = 8;              // elements a lane holds of a 16x16 fp32 matrix (host-checked)
// Bit e: element e is in the lane's second row (the host reads it off the device).
layout(constant_id = 0) const uint SECOND = 0xccu;
bool second(uint e) { return ((SECOND >> e) & 1u) != 0u; }

shared uvec4 Qs[BQ * SR];       // queries, later each subgroup's 16x32 f16 output
shared uvec4 Ks[BKV * SR];
shared uvec4 Vs[BKV * SR];
shared float Lay[256];

void main()
{
	const uvec4 blk = blocks[pc.block_off + gl_WorkGroupID.x];
	const uint kv0 = blk.x, kvn = blk.y, q0 = blk.z;
	const uint h = gl_WorkGroupID.y;
	const uint tid = gl_LocalInvocationID.x;
	const uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
	const uint row8 = 3 * pc.H / 8;                     // qkv row length in uvec4
	const uint hq = h * D8, hk = (pc.H + h * D) / 8, hv = (2 * pc.H + h * D) / 8;
	const uint end = kv0 + kvn;

	// Stage this block's queries (zeros past the sequence) and the index matrix.
	[[unroll]] for (uint u = 0; u < BQ * D8 / 128; u++) {
		const uint i = tid + 128 * u, r = i / D8, d = i % D8;
		const uint t = q0 + r;
		Qs[r * SR + d] = t < end ? qkv[t * row8 + hq + d] : uvec4(0);
	}
	Lay[tid] = float(tid);
	Lay[tid + 128] = float(tid + 128);
	barrier();
	F16M qf[2];
	[[unroll]] for (uint kd = 0; kd < 2; kd++)
		coopMatLoadNV(qf[kd], Qs, (sg * 16) * SR + kd * 2, SR, false);
	// The column of each element (for masking the keys past the sequence).
	uint colOf[NE];
	{
		F32M lay;
		coopMatLoadNV(lay, Lay, 0, 16, false);
		[[unroll]] for (uint e = 0; e < NE; e++)
			colOf[e] = uint(lay[e]) % 16;
	}

	F32M o[2];
	o[0] = F32M(0.0);
	o[1] = F32M(0.0);
	vec2 m = vec2(-1e30), l = vec2(0.0);   // per row slot: running maximum (log2 units), sum

	const uint LD = BKV * D8 / 128;
	uvec4 kr[LD], vr[LD];
	[[unroll]] for (uint u = 0; u < LD; u++) {
		const uint i = tid + 128 * u, j = i / D8, d = i % D8;
		const uint base = (kv0 + j) * row8;
		kr[u] = j < kvn ? qkv[base + hk + d] : uvec4(0);
		vr[u] = j < kvn ? qkv[base + hv + d] : uvec4(0);
	}
	for (uint c0 = 0; c0 < kvn; c0 += BKV) {
		barrier();  // every subgroup is done with the previous chunk's K and V
		[[unroll]] for (uint u = 0; u < LD; u++) {
			const uint i = tid + 128 * u, j = i / D8, d = i % D8;
			Ks[j * SR + d] = kr[u];
			Vs[j * SR + d] = vr[u];
		}
		barrier();
		if (c0 + BKV < kvn) {
			const uint c1 = c0 + BKV;
			[[unroll]] for (uint u = 0; u < LD; u++) {
				const uint i = tid + 128 * u, j = i / D8, d = i % D8;
				const uint base = (kv0 + c1 + j) * row8;
				kr[u] = c1 + j < kvn ? qkv[base + hk + d] : uvec4(0);
				vr[u] = c1 + j < kvn ? qkv[base + hv + d] : uvec4(0);
			}
		}

		// S = Q·Kᵀ (K rows are Kᵀ's columns: a column-major B), in log2 units; keys past
		// the sequence (only in its last chunk) get -1e30, so that p = exp2(-huge) = 0.
		const uint cn = min(BKV, kvn - c0);
		F32M s[4];
		vec2 mx = vec2(-1e30);
		[[unroll]] for (uint n = 0; n < 4; n++) {
			s[n] = F32M(0.0);
			[[unroll]] for (uint kd = 0; kd < 2; kd++) {
				F16M kf;
				coopMatLoadNV(kf, Ks, (n * 16) * SR + kd * 2, SR, true);
				s[n] = coopMatMulAddNV(qf[kd], kf, s[n]);
			}
			if (cn < BKV)
				[[unroll]] for (uint e = 0; e < NE; e++)
					if (n * 16 + colOf[e] >= cn)
						s[n][e] = -1e30;
			[[unroll]] for (uint e = 0; e < NE; e++) {
				if (second(e))
					mx.y = max(mx.y, s[n][e]);
				else
					mx.x = max(mx.x, s[n][e]);
			}
		}
		mx = max(mx, vec2(subgroupShuffleXor(mx.x, 1), subgroupShuffleXor(mx.y, 1)));
		mx = max(mx, vec2(subgroupShuffleXor(mx.x, 2), subgroupShuffleXor(mx.y, 2)));
		const vec2 mn = max(m, mx);
		const vec2 corr = exp2(m - mn);
		m = mn;

		// P = exp2(S - max) in place (0 for masked keys: the first chunk holds a real key,
		// so the maximum is finite and exp2(-1e30 - max) is 0), its row sums, then
		// O = O·corr + P·V.
		vec2 ps = vec2(0.0);
		F16M pf[4];
		[[unroll]] for (uint n = 0; n < 4; n++) {
			[[unroll]] for (uint e = 0; e < NE; e++) {
				const float p = exp2(s[n][e] - (second(e) ? mn.y : mn.x));
				s[n][e] = p;
				if (second(e))
					ps.y += p;
				else
					ps.x += p;
			}
			pf[n] = F16M(s[n]);
		}
		ps += vec2(subgroupShuffleXor(ps.x, 1), subgroupShuffleXor(ps.y, 1));
		ps += vec2(subgroupShuffleXor(ps.x, 2), subgroupShuffleXor(ps.y, 2));
		l = l * corr + ps;
		[[unroll]] for (uint j = 0; j < 2; j++) {
			[[unroll]] for (uint e = 0; e < NE; e++)
				o[j][e] *= second(e) ? corr.y : corr.x;
			[[unroll]] for (uint n = 0; n < 4; n++) {
				F16M vf;
				coopMatLoadNV(vf, Vs, (n * 16) * SR + j * 2, SR, false);
				o[j] = coopMatMulAddNV(pf[n], vf, o[j]);
			}
		}
	}

	// O / l, as f16, through this subgroup's own 16 rows of Qs (its queries are in qf).
	const vec2 inv = 1.0 / l;
	[[unroll]] for (uint j = 0; j < 2; j++) {
		[[unroll]] for (uint e = 0; e < NE; e++)
			o[j][e] *= second(e) ? inv.y : inv.x;
		F16M oh = F16M(o[j]);
		coopMatStoreNV(oh, Qs, (sg * 16) * SR + j * 2, SR, false);
	}
	subgroupMemoryBarrierShared();
	subgroupBarrier();
	const uint r = lane / 2, half_ = lane % 2;
	const uint t = q0 + sg * 16 + r;
	if (t >= end)
		return;
	const uint dst = t * (pc.H / 8) + hq + half_ * 2;
	ctx[dst] = Qs[(sg * 16 + r) * SR + half_ * 2];
	ctx[dst + 1] = Qs[(sg * 16 + r) * SR + half_ * 2 + 1];
}
