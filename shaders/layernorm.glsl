// layernorm.glsl — the two LayerNorm steps of BERT, 32 threads per token:
//   EMBED: x = LN(word_emb[id] + pos_emb[pos] + type_emb[type])      (embed_layernorm)
//          pos is the host's: the token's place in its sequence plus the model description's
//          first position id (0 BERT, 2 MPNet), in the low 16 bits of the pair's second word;
//          type (0, or a cross-encoder pair's 1 for the document) in its high 16 bits;
//          type_off = NO_TYPES (MPNet) leaves out the token-type row, a model without token
//          types; pos_off = NO_POS (JinaBERT, whose positions enter in attention only, as
//          ALiBi) leaves out the position row
//   else:  x = LN(y + x), y the output of a projection (residual)      (add_layernorm)
// On the f16 paths the residual step runs as add_ln_sg.comp (subgroup shuffles, 2.1x faster
// on an H200) wherever the device has subgroup shuffles; this one is its fallback.
// Mean first, then the variance of (v - mean), as the CPU reference does, rather than
// E[v²] - E[v]², which loses digits when the mean is large; the statistics are in f32 either
// way. Define OUT_F16 for the f16 paths: the residual stream x and the projection y are f16
// (x16, which is also the next product's input), as in PyTorch's fp16 models; an f32 stream
// beside an f16 copy read and wrote 14 bytes an element where this moves 6.
//
// 32 threads per token, four tokens a workgroup (128 threads on one token left most of them
// idle at H = 384; one 32-thread workgroup per token left half the thread slots empty, the
// GPU capping resident workgroups per SM). On an H200 a 1000-document batch spent 4.4 ms in
// these passes with the f32 stream and 128 threads, 3.56 with the f16 stream and one token a
// workgroup, 3.44 with four. Subgroup additions instead of the shared-memory tree measured
// the same, and would need subgroup arithmetic.
#include "common.glsl"

const uint TPW = 4;        // tokens a workgroup (the host launches ceil(T / TPW))
layout(local_size_x = 32 * TPW) in;

layout(push_constant) uniform PC {
	uint T;          // tokens in this chunk
	uint H;          // hidden size, even, at most 1024
	uint tok_off;    // EMBED: first (id, position) pair of the chunk
	uint pos_off;    // EMBED: float offsets into wvec; NO_POS: no position embeddings
	uint type_off;   // EMBED: NO_TYPES when the model has no token types
	uint g_off, b_off;
	float eps;
} pc;

#if EMBED
layout(std430, binding = 0) readonly buffer TOK_ { uvec2 tok[]; };     // (id, position | type << 16)
layout(std430, binding = 1) readonly buffer WE_ { vec2 word_emb[]; };
#elif OUT_F16
layout(std430, binding = 0) readonly buffer Y_ { uint y[]; };          // f16 pairs
#else
layout(std430, binding = 0) readonly buffer Y_ { vec2 y[]; };
#endif
layout(std430, binding = 2) readonly buffer V_ { float wvec[]; };
#if OUT_F16
layout(std430, binding = 5) buffer X16_ { uint x16[]; };
#else
layout(std430, binding = 3) buffer X_ { vec2 x[]; };
#endif

const uint NO_TYPES = 0xffffffffu;
const uint NO_POS = 0xffffffffu;
const uint MAXP = 16;      // pairs per thread: 32 * 16 * 2 = 1024 = largest H
shared float red[32 * TPW];

// The sum over this token's 32 threads (every thread of the workgroup calls it: barriers).
float token_sum(float v)
{
	const uint tid = gl_LocalInvocationID.x, g0 = tid & ~31u, i = tid & 31u;
	red[tid] = v;
	barrier();
	[[unroll]] for (uint s = 16; s > 0; s >>= 1) {
		if (i < s)
			red[tid] += red[tid + s];
		barrier();
	}
	const float r = red[g0];
	barrier();
	return r;
}

void main()
{
	const uint t = flat_group() * TPW + gl_LocalInvocationID.x / 32;
	const bool live = t < pc.T;   // a last workgroup's idle tokens still meet the barriers
	const uint tid = gl_LocalInvocationID.x % 32;
	const uint H2 = live ? pc.H / 2 : 0;
	vec2 v[MAXP];
	float sum = 0.0;
#if EMBED
	const uvec2 it = live ? tok[pc.tok_off + t] : uvec2(0);
#endif
	[[unroll]] for (uint k = 0; k < MAXP; k++) {
		const uint p = tid + 32 * k;
		v[k] = vec2(0);
		if (p < H2) {
#if EMBED
			const uint pe = pc.pos_off + (it.y & 0xffffu) * pc.H + 2 * p;
			const uint te = pc.type_off + (it.y >> 16) * pc.H + 2 * p;
			v[k] = word_emb[it.x * H2 + p];
			if (pc.pos_off != NO_POS)
				v[k] += vec2(wvec[pe], wvec[pe + 1]);
			if (pc.type_off != NO_TYPES)
				v[k] += vec2(wvec[te], wvec[te + 1]);
#elif OUT_F16
			v[k] = unpackHalf2x16(y[t * H2 + p]) + unpackHalf2x16(x16[t * H2 + p]);
#else
			v[k] = y[t * H2 + p] + x[t * H2 + p];
#endif
			sum += v[k].x + v[k].y;
		}
	}
	const float mean = token_sum(sum) / float(pc.H);
	float sq = 0.0;
	[[unroll]] for (uint k = 0; k < MAXP; k++) {
		if (tid + 32 * k < H2) {
			const vec2 dv = v[k] - mean;
			sq += dot(dv, dv);
		}
	}
	const float rstd = 1.0 / sqrt(token_sum(sq) / float(pc.H) + pc.eps);
	[[unroll]] for (uint k = 0; k < MAXP; k++) {
		const uint p = tid + 32 * k;
		if (p < H2) {
			const vec2 g = vec2(wvec[pc.g_off + 2 * p], wvec[pc.g_off + 2 * p + 1]);
			const vec2 b = vec2(wvec[pc.b_off + 2 * p], wvec[pc.b_off + 2 * p + 1]);
			const vec2 r = (v[k] - mean) * rstd * g + b;
#if OUT_F16
			x16[t * H2 + p] = packHalf2x16(r);
#else
			x[t * H2 + p] = r;
#endif
		}
	}
}
