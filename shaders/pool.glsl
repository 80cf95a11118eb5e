// pool.glsl — pool_normalize: one 128-thread workgroup per sequence turns its token rows
// into one vector (mean over the tokens, the [CLS] row, or the maximum), then divides by
// the L2 norm when the model has a Normalize module (norm clamped at 1e-12 as torch's
// F.normalize does, so an all-zero vector stays zero rather than becoming NaN).
#ifndef X_F16
#define X_F16 0
#endif
#include "common.glsl"

layout(local_size_x = 128) in;

layout(push_constant) uniform PC {
	uint seq_off;    // first (start, len) entry of this chunk
	uint H;
	uint pooling;    // 0 mean, 1 cls, 2 max (model.h pool_kind)
	uint normalize;
	uint out_row;    // output row of this chunk's first sequence
	uint nseq;
} pc;

#if X_F16
// the f16 residual stream (f16 paths): element d of a row is half d % 2 of pair d / 2
layout(std430, binding = 0) readonly buffer X_ { uint x16[]; };
float xat(uint i) { return unpackHalf2x16(x16[i / 2])[i % 2]; }
#else
layout(std430, binding = 0) readonly buffer X_ { float x[]; };
float xat(uint i) { return x[i]; }
#endif
layout(std430, binding = 3) writeonly buffer OUT_ { float outv[]; };
layout(std430, binding = 4) readonly buffer SEQ_ { uvec2 seqs[]; };  // (start, len) in chunk

const uint MAXD = 8;   // 128 * 8 = 1024 = largest H
const uint R = 8;      // rows summed in parallel per thread
shared float red[128];

void main()
{
	const uint s = flat_group();
	if (s >= pc.nseq)
		return;
	const uint tid = gl_LocalInvocationID.x;
	const uvec2 sq = seqs[pc.seq_off + s];
	float v[MAXD];
	float ss = 0.0;
	[[unroll]] for (uint k = 0; k < MAXD; k++) {
		const uint d = tid + 128 * k;
		v[k] = 0.0;
		if (d >= pc.H)
			continue;
		if (pc.pooling == 1u) {
			v[k] = xat(sq.x * pc.H + d);
		} else {
			// R independent partial results, so R loads are in flight at once: with one
			// running sum the loop waited on memory for every row (44 us for one
			// 240-token text on an H200, a tenth of its latency).
			const bool mx = pc.pooling == 2u;
			float part[R];
			[[unroll]] for (uint j = 0; j < R; j++)
				part[j] = mx ? -3.402823466e38 : 0.0;
			uint i = 0;
			for (; i + R <= sq.y; i += R)
				[[unroll]] for (uint j = 0; j < R; j++) {
					const float e = xat((sq.x + i + j) * pc.H + d);
					part[j] = mx ? max(part[j], e) : part[j] + e;
				}
			for (; i < sq.y; i++) {
				const float e = xat((sq.x + i) * pc.H + d);
				part[0] = mx ? max(part[0], e) : part[0] + e;
			}
			float r = part[0];
			[[unroll]] for (uint j = 1; j < R; j++)
				r = mx ? max(r, part[j]) : r + part[j];
			v[k] = mx ? r : r / float(sq.y);
		}
		ss += v[k] * v[k];
	}
	float scale = 1.0;
	if (pc.normalize != 0u) {
		red[tid] = ss;
		barrier();
		[[unroll]] for (uint st = 64; st > 0; st >>= 1) {
			if (tid < st)
				red[tid] += red[tid + st];
			barrier();
		}
		scale = 1.0 / max(sqrt(red[0]), 1e-12);
	}
	[[unroll]] for (uint k = 0; k < MAXD; k++) {
		const uint d = tid + 128 * k;
		if (d < pc.H)
			outv[(pc.out_row + s) * pc.H + d] = v[k] * scale;
	}
}
