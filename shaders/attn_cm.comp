// attn_cm.comp — attention on the tensor cores (GL_NV_cooperative_matrix) for f16 q, k, v
// and head size 32: the scalar kernel (attention.glsl) spent a third of a large batch's time
// on 64 dot products per key and query in the lanes, which the tensor cores do in 16 MMAs.
//
// Same launch and block table as attention.glsl: workgroup (x, y) = (query block of up to 64
// tokens of one sequence, head). 4 subgroups of 32, each owning 16 query rows. Keys and values
// stream through shared memory 64 at a time (the next chunk prefetched into registers); per
// chunk a subgroup computes S = Q·Kᵀ (16x64, fp32) on cooperative matrices, stores it to its
// own shared tile, does the online softmax in the lanes (lane l: row l/2, columns
// (l%2)*32 .. +32, fp32), writes P as f16, and computes P·V (16x32) on cooperative matrices;
// the running output O stays in the lanes (16 columns a lane) because a cooperative matrix
// cannot be scaled row by row.
//
// NaN safety (a first tensor-core version returned NaN on an H200): every shared tile that a
// cooperative matrix reads is fully written first — rows past the sequence (keys, values,
// and queries of a partial block) are staged as zeros, never read from the neighbouring
// sequence or past the buffer; scores of those keys are masked to p = 0 in the lanes; the
// running maximum starts finite (-1e30), so exp() never sees inf - inf; and the first chunk
// always holds at least one real key, so l >= 1 before the division.
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
	float scale;     // 1/sqrt(32)
} pc;

layout(std430, binding = 0) readonly buffer QKV_ { uvec4 qkv[]; };   // 8 halfs each
layout(std430, binding = 3) writeonly buffer CTX_ { uvec4 ctx[]; };
// (kv_start, kv_len, q_start, unused) per block, token indices relative to the chunk.
layout(std430, binding = 4) readonly buffer BLK_ { uvec4 blocks[]; };

const uint D = 32, D8 = D / 8;  // head size; the host picks this kernel only for D == 32
const uint BQ = 64, BKV = 64;
const uint SR = D8 + 1;         // staged row stride in uvec4: 8 halfs of padding (banks)
const uint SS = BKV + 4;        // score tile row stride (floats)
const uint SP = BKV + 8;        // probability tile row stride (halfs)

shared uvec4 Qs[BQ * SR];
shared uvec4 Ks[BKV * SR];
shared uvec4 Vs[BKV * SR];
shared float Ss[4 * 16 * SS];      // per subgroup: 16 rows of scores, later of P·V
shared float16_t Ps[4 * 16 * SP];  // per subgroup: 16 rows of probabilities

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

	// Stage this block's queries (zeros past the sequence).
	[[unroll]] for (uint u = 0; u < BQ * D8 / 128; u++) {
		const uint i = tid + 128 * u, r = i / D8, d = i % D8;
		const uint t = q0 + r;
		Qs[r * SR + d] = t < end ? qkv[t * row8 + hq + d] : uvec4(0);
	}
	barrier();
	fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> qf[2];
	[[unroll]] for (uint kd = 0; kd < 2; kd++)
		coopMatLoadNV(qf[kd], Qs, (sg * 16) * SR + kd * 2, SR, false);

	const uint r = lane / 2, half_ = lane % 2;
	const uint sbase = sg * 16 * SS, pbase = sg * 16 * SP;
	float o[16];
	[[unroll]] for (uint c = 0; c < 16; c++)
		o[c] = 0.0;
	float m = -1e30, l = 0.0;

	// The next chunk's keys and values are fetched into registers while the current one is
	// computed (as in gemm_coopmat.glsl), so the global-memory latency is hidden.
	const uint LD = BKV * D8 / 128;
	uvec4 kr[LD], vr[LD];
	[[unroll]] for (uint u = 0; u < LD; u++) {
		const uint i = tid + 128 * u, j = i / D8, d = i % D8;
		const uint base = (kv0 + j) * row8;
		kr[u] = j < kvn ? qkv[base + hk + d] : uvec4(0);
		vr[u] = j < kvn ? qkv[base + hv + d] : uvec4(0);
	}
	for (uint c0 = 0; c0 < kvn; c0 += BKV) {
		const uint cn = min(BKV, kvn - c0);
		barrier();  // every subgroup is done with the previous chunk's K, V and its tiles
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

		// S = Q·Kᵀ: K rows are Kᵀ's columns, so K loads as a column-major B.
		[[unroll]] for (uint n = 0; n < BKV / 16; n++) {
			fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> s = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);
			[[unroll]] for (uint kd = 0; kd < 2; kd++) {
				fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> kf;
				coopMatLoadNV(kf, Ks, (n * 16) * SR + kd * 2, SR, true);
				s = coopMatMulAddNV(qf[kd], kf, s);
			}
			coopMatStoreNV(s, Ss, sbase + n * 16, SS, false);
		}
		subgroupMemoryBarrierShared();
		subgroupBarrier();

		// Online softmax for row r, columns half_*32 .. +32; the two lanes of a row meet
		// through a shuffle.
		float sv[32];
		float mx = -1e30;
		[[unroll]] for (uint j = 0; j < 32; j++) {
			const uint col = half_ * 32 + j;
			sv[j] = Ss[sbase + r * SS + col] * pc.scale;
			if (col < cn)
				mx = max(mx, sv[j]);
		}
		mx = max(mx, subgroupShuffleXor(mx, 1));
		mx = max(mx, m);
		const float corr = exp(m - mx);
		float ps = 0.0;
		[[unroll]] for (uint j = 0; j < 32; j++) {
			const uint col = half_ * 32 + j;
			const float p = col < cn ? exp(sv[j] - mx) : 0.0;
			ps += p;
			Ps[pbase + r * SP + col] = float16_t(p);
		}
		ps += subgroupShuffleXor(ps, 1);
		l = l * corr + ps;
		m = mx;
		subgroupMemoryBarrierShared();
		subgroupBarrier();

		// P·V into the score tile (columns 0 .. 31), then O = O * corr + P·V in the lanes.
		[[unroll]] for (uint j = 0; j < 2; j++) {
			fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> pv = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);
			[[unroll]] for (uint kk = 0; kk < BKV / 16; kk++) {
				fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> pf, vf;
				coopMatLoadNV(pf, Ps, pbase + kk * 16, SP, false);
				coopMatLoadNV(vf, Vs, (kk * 16) * SR + j * 2, SR, false);
				pv = coopMatMulAddNV(pf, vf, pv);
			}
			coopMatStoreNV(pv, Ss, sbase + j * 16, SS, false);
		}
		subgroupMemoryBarrierShared();
		subgroupBarrier();
		[[unroll]] for (uint c = 0; c < 16; c++)
			o[c] = o[c] * corr + Ss[sbase + r * SS + half_ * 16 + c];
	}

	const uint t = q0 + sg * 16 + r;
	if (t >= end)
		return;
	const float inv = 1.0 / l;
	const uint out8 = pc.H / 8, dst = t * out8 + hq + half_ * 2;
	ctx[dst] = uvec4(pack4(vec4(o[0], o[1], o[2], o[3]) * inv),
			 pack4(vec4(o[4], o[5], o[6], o[7]) * inv));
	ctx[dst + 1] = uvec4(pack4(vec4(o[8], o[9], o[10], o[11]) * inv),
			     pack4(vec4(o[12], o[13], o[14], o[15]) * inv));
}
