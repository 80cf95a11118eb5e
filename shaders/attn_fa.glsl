// attn_fa.glsl — attention with the softmax in the tensor-core registers: attn_cm.comp
// spent most of its time moving each 64-key chunk's scores and partial outputs through shared
// memory (scores stored, read by the lanes, probabilities written back, P·V stored and read
// again: about 100 KB of shared traffic a chunk), because a cooperative matrix is opaque:
// GL_NV_cooperative_matrix says nothing of which lane holds which element, so the kernel
// could neither take a row's maximum nor scale a row of the output in place.
//
// Here the element layout is read at run time instead: an MMA whose result holds 16·row +
// column at each element (cm_index.glsl) tells each lane the row and column of every
// accumulator element it holds (indices read off a loaded matrix were wrong on an H100). The
// host checks once per device (forward_vk.c, shaders/cm_layout.comp) that the layout has the
// shape this kernel relies on — each lane holds 8 elements in two rows, and the four lanes of
// a quad (xor 1, 2) hold the same two rows and between them all 16 columns, as NVIDIA's
// tensor cores lay out an accumulator — and keeps attn_cm.comp where it does not.
//
// Per 64-key chunk, for each of its 16-row query blocks, a subgroup computes S = Q·Kᵀ (four
// 16x16 fp32 matrices, 8 MMAs), the row maxima in its registers plus two quad shuffles,
// P = exp(S - max) in place, rescales the fp32 output O (two 16x16 matrices) by the
// correction per row, converts P to f16 and adds P·V (8 MMAs). Only the keys and values pass
// through shared memory (staged with zeros past the sequence, the next chunk prefetched into
// registers). At the end O is divided by the row sums and staged through shared memory so
// that rows past the sequence are never written (they belong to the next sequence).
//
// A subgroup owns RB blocks of 16 query rows and a workgroup SGS subgroups, BQ = 16·RB·SGS
// queries (the host builds its block table for that BQ). attn_fa.comp takes RB = 2, SGS = 4
// (BQ = 128): each K and V fragment loaded from shared memory then feeds two MMAs, and a
// batch of 1000 SciFact texts spent 4.98 ms in attention on an H200, against 5.40 with
// RB = 1 (attn_fa16.comp, 147 registers instead of 215) and 5.16-5.19 with SGS = 8 (BQ = 256,
// more rows past short sequences); RB = 2 with SGS = 2 (BQ = 64, 242 registers) gained
// nothing (docs/bench-gpu.md).
//
// The lanes' work per score weighs as much as the MMAs here (head size 32 gives the tensor
// cores little to do), so it is kept short: the host folds the scale 1/√d and log2(e) into the
// query projection's weights and bias (forward_vk.c), so that a score needs no multiply
// before exp2; keys are masked only in a sequence's last, partial chunk; and which of a
// lane's two rows an element belongs to is the same for every lane, so the host passes it as
// a specialization constant and the compiler needs no selects.
//
// Head size HD (a #define: 32, MiniLM; 64, MPNet-base and JinaBERT, attn_fa64.comp): the
// products take HD/16 fragments along the head, the rest is the same.
//
// A by-distance bias (the model description's position schemes, as attention.glsl has them):
// with REL_SPAN > 0 (MPNet) each score gets its head's bias row, staged in shared memory, at
// clamp(key - query, -R, R) + R; with ALIBI = 1 (JinaBERT) -slope_h * |key - query|. Both in
// log2 units here (times log2 e, like the scores). An element's (query, key) pair comes from
// the same index matrix as its column: row and column of element e are read off it once, so
// key - query is (chunk start - row block start) + 16 n + (column - row of e).
//
// Same launch, block table layout and NaN precautions as attn_cm.comp: rows past the sequence are
// zeros, masked keys get p = 0, the running maximum starts finite, and the first chunk holds
// at least one real key.
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable
#extension GL_KHR_memory_scope_semantics : enable
#extension GL_NV_cooperative_matrix : enable
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : enable
#include "common.glsl"
#include "cm_index.glsl"

#ifndef RB
#define RB 1
#endif
#ifndef SGS
#define SGS 4
#endif
#ifndef HD
#define HD 32
#endif
#define THREADS (32 * SGS)
layout(local_size_x = THREADS) in;

layout(push_constant) uniform PC {
	uint block_off;  // first block-table entry of this chunk
	uint H;          // hidden size = heads * 32
	float scale;     // unused: the queries arrive scaled by log2(e)/sqrt(HD)
	uint rel_off;    // REL_SPAN > 0: wvec offset of head 0's bias row; ALIBI: of the slopes
} pc;

layout(std430, binding = 0) readonly buffer QKV_ { uvec4 qkv[]; };   // 8 halfs each
layout(std430, binding = 3) writeonly buffer CTX_ { uvec4 ctx[]; };
// (kv_start, kv_len, q_start, unused) per block, token indices relative to the chunk.
layout(std430, binding = 4) readonly buffer BLK_ { uvec4 blocks[]; };
layout(std430, binding = 2) readonly buffer V_ { float wvec[]; };

#define F32M fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>
#define F16M fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>

const uint D = HD, D8 = D / 8, DK = D / 16;  // head size, in uvec4s, in 16-wide fragments
const uint BQ = 16 * RB * SGS, BKV = 64, SR16 = 16 * RB;   // SR16: rows a subgroup
const uint SR = D8 + 1;         // staged row stride in uvec4: 8 halfs of padding (banks)
const uint NE = 8;              // elements a lane holds of a 16x16 fp32 matrix (host-checked)
// Bit e: element e is in the lane's second row (the host reads it off the device).
layout(constant_id = 0) const uint SECOND = 0xccu;
bool second(uint e) { return ((SECOND >> e) & 1u) != 0u; }
layout(constant_id = 1) const uint REL_SPAN = 0; // 2R + 1 biased distances, 0: no bias
layout(constant_id = 2) const uint ALIBI = 0;    // 1: symmetric ALiBi from the head's slope
const float LOG2E = 1.4426950408889634;
shared float relb[REL_SPAN + 1];

shared uvec4 Qs[BQ * SR];       // queries, later each subgroup's 16x32 f16 output
shared uvec4 Ks[2 * BKV * SR];  // two chunks: the one in use and the next
shared uvec4 Vs[2 * BKV * SR];

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
	// A subgroup whose rows all lie past the sequence (in a sequence's last block) only
	// stages keys and values, leaving the SM's issue slots to the others.
	const bool busy = q0 + sg * SR16 < end;

	// The first chunk's keys and values are loaded with the queries, so that a workgroup
	// (four chunks for a SciFact text) waits out one global latency before its first MMA.
	const uint LD = BKV * D8 / THREADS, LQ = BQ * D8 / THREADS;
	uvec4 kr[LD], vr[LD], qr[LQ];
	[[unroll]] for (uint u = 0; u < LQ; u++) {
		const uint i = tid + THREADS * u, r = i / D8, d = i % D8;
		const uint t = q0 + r;
		qr[u] = t < end ? qkv[t * row8 + hq + d] : uvec4(0);
	}
	[[unroll]] for (uint u = 0; u < LD; u++) {
		const uint i = tid + THREADS * u, j = i / D8, d = i % D8;
		const uint base = (kv0 + j) * row8;
		kr[u] = j < kvn ? qkv[base + hk + d] : uvec4(0);
		vr[u] = j < kvn ? qkv[base + hv + d] : uvec4(0);
	}
	// Stage the queries (zeros past the sequence), the first chunk and the index matrix.
	[[unroll]] for (uint u = 0; u < LQ; u++) {
		const uint i = tid + THREADS * u, r = i / D8, d = i % D8;
		Qs[r * SR + d] = qr[u];
	}
	[[unroll]] for (uint u = 0; u < LD; u++) {
		const uint i = tid + THREADS * u, j = i / D8, d = i % D8;
		Ks[j * SR + d] = kr[u];
		Vs[j * SR + d] = vr[u];
	}
	cm_index_stage(tid, THREADS);
	if (REL_SPAN > 0)
		for (uint i = tid; i < REL_SPAN; i += THREADS)
			relb[i] = wvec[pc.rel_off + h * REL_SPAN + i] * LOG2E;
	const float nslope = ALIBI != 0 ? -wvec[pc.rel_off + h] * LOG2E : 0.0;
	const int R = int(REL_SPAN / 2);
	barrier();
	F16M qf[RB][DK];
	[[unroll]] for (uint r = 0; r < RB; r++)
		[[unroll]] for (uint kd = 0; kd < DK; kd++)
			coopMatLoadNV(qf[r][kd], Qs, (sg * SR16 + r * 16) * SR + kd * 2, SR, false);
	// The column of each element (for masking the keys past the sequence), and column
	// minus row (for the bias's distance).
	uint colOf[NE];
	int dOf[NE];
	{
		const F32M lay = cm_index();
		[[unroll]] for (uint e = 0; e < NE; e++) {
			colOf[e] = uint(lay[e]) % 16;
			dOf[e] = int(colOf[e]) - int(uint(lay[e]) / 16);
		}
	}

	F32M o[RB][DK];
	vec2 m[RB], l[RB];   // per row slot: running maximum (log2 units), sum
	[[unroll]] for (uint r = 0; r < RB; r++) {
		[[unroll]] for (uint j = 0; j < DK; j++)
			o[r][j] = F32M(0.0);
		m[r] = vec2(-1e30);
		l[r] = vec2(0.0);
	}

	// Chunk c's keys and values sit in buffer c % 2 (Ks/Vs at offset (c % 2) · BKV · SR):
	// the next chunk, loaded into registers before this one's products, is stored into the
	// other buffer after them, so one barrier a chunk orders both the stores before their
	// reads and this chunk's reads before the stores of the chunk after next.
	for (uint c0 = 0; c0 < kvn; c0 += BKV) {
		const uint cur = (c0 / BKV) % 2 * (BKV * SR), nxt = BKV * SR - cur;
		const bool more = c0 + BKV < kvn;
		if (more) {
			const uint c1 = c0 + BKV;
			[[unroll]] for (uint u = 0; u < LD; u++) {
				const uint i = tid + THREADS * u, j = i / D8, d = i % D8;
				const uint base = (kv0 + c1 + j) * row8;
				kr[u] = c1 + j < kvn ? qkv[base + hk + d] : uvec4(0);
				vr[u] = c1 + j < kvn ? qkv[base + hv + d] : uvec4(0);
			}
		}

		if (busy) {
			// S = Q·Kᵀ (K rows are Kᵀ's columns: a column-major B), in log2 units; keys past
			// the sequence (only in its last chunk) get -1e30, so that p = exp2(-huge) = 0.
			const uint cn = min(BKV, kvn - c0);
			F32M s[RB][4];
			vec2 mx[RB];
			[[unroll]] for (uint r = 0; r < RB; r++)
				mx[r] = vec2(-1e30);
			[[unroll]] for (uint n = 0; n < 4; n++) {
				[[unroll]] for (uint r = 0; r < RB; r++)
					s[r][n] = F32M(0.0);
				[[unroll]] for (uint kd = 0; kd < DK; kd++) {
					F16M kf;
					coopMatLoadNV(kf, Ks, cur + (n * 16) * SR + kd * 2, SR, true);
					[[unroll]] for (uint r = 0; r < RB; r++)
						s[r][n] = coopMatMulAddNV(qf[r][kd], kf, s[r][n]);
				}
				[[unroll]] for (uint r = 0; r < RB; r++) {
					// key - query of element e: base + dOf[e]
					const int base = int(c0 + n * 16) - int(q0 - kv0 + sg * SR16 + r * 16);
					if (REL_SPAN > 0)
						[[unroll]] for (uint e = 0; e < NE; e++)
							s[r][n][e] += relb[clamp(base + dOf[e], -R, R) + R];
					if (ALIBI != 0)
						[[unroll]] for (uint e = 0; e < NE; e++)
							s[r][n][e] += nslope * float(abs(base + dOf[e]));
					if (cn < BKV)
						[[unroll]] for (uint e = 0; e < NE; e++)
							if (n * 16 + colOf[e] >= cn)
								s[r][n][e] = -1e30;
					[[unroll]] for (uint e = 0; e < NE; e++) {
						if (second(e))
							mx[r].y = max(mx[r].y, s[r][n][e]);
						else
							mx[r].x = max(mx[r].x, s[r][n][e]);
					}
				}
			}

			// P = exp2(S - max) in place (0 for masked keys: the first chunk holds a real key,
			// so the maximum is finite and exp2(-1e30 - max) is 0), its row sums, then
			// O = O·corr + P·V.
			F16M pf[RB][4];
			vec2 corr[RB];
			[[unroll]] for (uint r = 0; r < RB; r++) {
				vec2 x = mx[r];
				x = max(x, vec2(subgroupShuffleXor(x.x, 1), subgroupShuffleXor(x.y, 1)));
				x = max(x, vec2(subgroupShuffleXor(x.x, 2), subgroupShuffleXor(x.y, 2)));
				const vec2 mn = max(m[r], x);
				corr[r] = exp2(m[r] - mn);
				m[r] = mn;
				vec2 ps = vec2(0.0);
				[[unroll]] for (uint n = 0; n < 4; n++) {
					[[unroll]] for (uint e = 0; e < NE; e++) {
						const float p = exp2(s[r][n][e] - (second(e) ? mn.y : mn.x));
						s[r][n][e] = p;
						if (second(e))
							ps.y += p;
						else
							ps.x += p;
					}
					pf[r][n] = F16M(s[r][n]);
				}
				ps += vec2(subgroupShuffleXor(ps.x, 1), subgroupShuffleXor(ps.y, 1));
				ps += vec2(subgroupShuffleXor(ps.x, 2), subgroupShuffleXor(ps.y, 2));
				l[r] = l[r] * corr[r] + ps;
			}
			[[unroll]] for (uint j = 0; j < DK; j++) {
				[[unroll]] for (uint r = 0; r < RB; r++)
					[[unroll]] for (uint e = 0; e < NE; e++)
						o[r][j][e] *= second(e) ? corr[r].y : corr[r].x;
				[[unroll]] for (uint n = 0; n < 4; n++) {
					F16M vf;
					coopMatLoadNV(vf, Vs, cur + (n * 16) * SR + j * 2, SR, false);
					[[unroll]] for (uint r = 0; r < RB; r++)
						o[r][j] = coopMatMulAddNV(pf[r][n], vf, o[r][j]);
				}
			}
		}
		if (more)
			[[unroll]] for (uint u = 0; u < LD; u++) {
				const uint i = tid + THREADS * u, j = i / D8, d = i % D8;
				Ks[nxt + j * SR + d] = kr[u];
				Vs[nxt + j * SR + d] = vr[u];
			}
		barrier();
	}

	if (!busy)
		return;
	// O / l, as f16, through this subgroup's own rows of Qs (its queries are in qf).
	[[unroll]] for (uint r = 0; r < RB; r++) {
		const vec2 inv = 1.0 / l[r];
		[[unroll]] for (uint j = 0; j < DK; j++) {
			[[unroll]] for (uint e = 0; e < NE; e++)
				o[r][j][e] *= second(e) ? inv.y : inv.x;
			F16M oh = F16M(o[r][j]);
			coopMatStoreNV(oh, Qs, (sg * SR16 + r * 16) * SR + j * 2, SR, false);
		}
	}
	subgroupMemoryBarrierShared();
	subgroupBarrier();
	const uint half_ = lane % 2, HW = D8 / 2;  // two lanes a row, HW uvec4s each
	[[unroll]] for (uint r = 0; r < RB; r++) {
		const uint row = sg * SR16 + r * 16 + lane / 2, t = q0 + row;
		if (t < end) {
			const uint dst = t * (pc.H / 8) + hq + half_ * HW;
			[[unroll]] for (uint k = 0; k < HW; k++)
				ctx[dst + k] = Qs[row * SR + half_ * HW + k];
		}
	}
}
