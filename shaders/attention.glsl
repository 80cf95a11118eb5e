// attention.glsl — softmax(Q·Kᵀ/√d)·V for every head of every sequence of a packed batch.
//
// One 64-thread workgroup handles one head (group y) of one block of up to 64 query tokens
// (group x) of one sequence; the host's block table says where the block's sequence starts,
// how long it is, and which token the block starts at, so a batch mixing 1-token and
// 512-token texts costs at most one partial tile per sequence. Each thread owns one query
// row; keys and values stream through shared memory in chunks, with the online (running
// maximum) softmax, so any length fits and no score matrix is stored. The running maximum
// starts at a large negative finite number, never -inf, so no inf - inf can make a NaN.
//
// Layout: qkv row t = [q (H) | k (H) | v (H)], head h at columns h*D .. h*D+D; ctx row t =
// [H], head h at the same columns.
//
// Relative position bias (MPNet; the model description's POS_REL_BUCKETS): with REL_SPAN > 0
// the score of query position i and key position j gets bias[h][clamp(j - i, -R, R) + R]
// added before the softmax, R = (REL_SPAN - 1) / 2. The host fills that per-head row from
// the model's [bucket][head] table once, at open (forward_vk.c), for every distance up to R =
// min(max_distance, longest sequence - 1): past max_distance every distance is in the last
// bucket of its direction, so the clamp is exact, no logarithm runs here (the bucket of a
// distance on a log boundary is the CPU's, rel_position_bucket, by construction), and no
// L x L bias exists anywhere. Each workgroup stages its head's row (2R + 1 floats, 1 KiB for
// MPNet) in shared memory. REL_SPAN = 0 (BERT) compiles the bias away.
//
// ALiBi (JinaBERT; POS_ALIBI): with ALIBI = 1 the score gets -slope_h * |j - i| added, the
// head's slope read from wvec[rel_off + h] (alibi_slopes, forward.h, uploaded at open). A
// by-distance row as for MPNet would need 2L - 1 floats a head (64 KiB of shared memory at
// 8192 tokens) for a bias that is one multiply, so it is computed here, as the CPU's
// attention_alibi computes it: (-slope) * float(distance), added to the scaled score.
//
// Define QKV_F16: qkv and ctx are f16 (packed uints).
// Define DIRECT: read keys and values straight from the buffer instead of staging them in
// shared memory — the variant for CPU implementations (lavapipe), where barriers are
// coroutine switches and staging only costs time.
#include "common.glsl"

layout(local_size_x = 64) in;
layout(constant_id = 0) const uint D = 32;      // head dimension, a multiple of 4
layout(constant_id = 1) const uint REL_SPAN = 0; // 2R + 1 biased distances, 0: no bias
layout(constant_id = 2) const uint ALIBI = 0;    // 1: symmetric ALiBi from the head's slope
const uint D4 = D / 4;
const uint BKV = 2048 / D;                       // keys per chunk: 16 KiB of K and V in f32

layout(push_constant) uniform PC {
	uint block_off;  // first block-table entry of this chunk
	uint H;          // hidden size = heads * D
	float scale;     // 1/sqrt(D)
	uint rel_off;    // REL_SPAN > 0: float offset in wvec of head 0's bias row; ALIBI:
			 // of the heads' slopes
} pc;

#if QKV_F16
layout(std430, binding = 0) readonly buffer QKV_ { uvec2 qkv[]; };
layout(std430, binding = 3) writeonly buffer CTX_ { uvec2 ctx[]; };
#else
layout(std430, binding = 0) readonly buffer QKV_ { vec4 qkv[]; };
layout(std430, binding = 3) writeonly buffer CTX_ { vec4 ctx[]; };
#endif
// (kv_start, kv_len, q_start, unused) per block, token indices relative to the chunk.
layout(std430, binding = 4) readonly buffer BLK_ { uvec4 blocks[]; };
layout(std430, binding = 2) readonly buffer V_ { float wvec[]; };
shared float relb[REL_SPAN + 1];

#if !DIRECT
shared vec4 Ks[BKV * D4];
shared vec4 Vs[BKV * D4];
#endif

vec4 ld(uint i)
{
#if QKV_F16
	return unpack4(qkv[i]);
#else
	return qkv[i];
#endif
}

void main()
{
	const uvec4 blk = blocks[pc.block_off + gl_WorkGroupID.x];
	const uint kv0 = blk.x, kvn = blk.y, q0 = blk.z;
	const uint h = gl_WorkGroupID.y;
	const uint tid = gl_LocalInvocationID.x;
	const uint t = q0 + tid;
	const bool valid = t < kv0 + kvn;
	const uint row4 = 3 * pc.H / 4;        // qkv row length in vec4
	const uint hq = h * D4, hk = (pc.H + h * D) / 4, hv = (2 * pc.H + h * D) / 4;

	vec4 q[D4], o[D4];
	[[unroll]] for (uint d = 0; d < D4; d++) {
		q[d] = valid ? ld(t * row4 + hq + d) * pc.scale : vec4(0);
		o[d] = vec4(0);
	}
	float m = -1e30, l = 0.0;
	const int R = int(REL_SPAN / 2), qpos = int(t - kv0);
	if (REL_SPAN > 0) {
		for (uint i = tid; i < REL_SPAN; i += 64)
			relb[i] = wvec[pc.rel_off + h * REL_SPAN + i];
		barrier();
	}
	const float nslope = ALIBI != 0 ? -wvec[pc.rel_off + h] : 0.0;

	for (uint c = 0; c < kvn; c += BKV) {
		const uint cn = min(BKV, kvn - c);
#if DIRECT
		if (!valid)
			break;
#define KEY(j, d) (j < cn ? ld((kv0 + c + j) * row4 + hk + d) : vec4(0))
#define VAL(j, d) (j < cn ? ld((kv0 + c + j) * row4 + hv + d) : vec4(0))
#else
		barrier();
		for (uint i = tid; i < BKV * D4; i += 64) {
			const uint j = i / D4, d = i % D4;
			const uint r = (kv0 + c + j) * row4;
			Ks[i] = j < cn ? ld(r + hk + d) : vec4(0);
			Vs[i] = j < cn ? ld(r + hv + d) : vec4(0);
		}
		barrier();
		if (!valid)
			continue;
#define KEY(j, d) Ks[(j) * D4 + (d)]
#define VAL(j, d) Vs[(j) * D4 + (d)]
#endif
		float s[BKV];
		float mx = m;
		[[unroll]] for (uint j = 0; j < BKV; j++) {
			float acc = 0.0;
			[[unroll]] for (uint d = 0; d < D4; d++)
				acc += dot(q[d], KEY(j, d));
			if (REL_SPAN > 0)
				acc += relb[clamp(int(c + j) - qpos, -R, R) + R];
			if (ALIBI != 0)
				acc += nslope * float(abs(int(c + j) - qpos));
			s[j] = acc;
			if (j < cn)
				mx = max(mx, acc);
		}
		const float corr = exp(m - mx);
		l *= corr;
		[[unroll]] for (uint d = 0; d < D4; d++)
			o[d] *= corr;
		[[unroll]] for (uint j = 0; j < BKV; j++) {
			const float p = j < cn ? exp(s[j] - mx) : 0.0;
			l += p;
			[[unroll]] for (uint d = 0; d < D4; d++)
				o[d] = fma(vec4(p), VAL(j, d), o[d]);
		}
		m = mx;
	}
	if (!valid)
		return;
	const float inv = 1.0 / l;
	const uint out4 = pc.H / 4;
	[[unroll]] for (uint d = 0; d < D4; d++) {
#if QKV_F16
		ctx[t * out4 + hq + d] = pack4(o[d] * inv);
#else
		ctx[t * out4 + hq + d] = o[d] * inv;
#endif
	}
}
