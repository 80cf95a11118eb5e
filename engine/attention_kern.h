/* attention_kern.h — the body of attention.c's kernel, included once per instruction set.
 *
 * Not a header to include elsewhere: attention.c defines, before each inclusion, the vector
 * type V of VW floats, the operations below (V_LOAD ... V_HSUM16) and AK(name), which names
 * this copy's functions (name_512, name_256), and AK_ATTR, its target attribute. The two
 * copies do the same operations in the same order on every value (attention.h's contract);
 * only the number of lanes a register holds differs.
 *
 * Blocking: a chunk's keys are laid out transposed (kt[c][j], j contiguous) so the score
 * kernel broadcasts one query value and multiplies it into AK_NQ vectors of consecutive keys
 * for AK_MR query rows at once; the output kernel broadcasts one probability and multiplies
 * it into two vectors of the key's value row (read in place), for AK_PR query rows at once.
 */

/* exp(x) as vecmath.h's exp_approx computes it (clamp, Cody-Waite, degree 7), lane-wise. The
 * clamp is written max(c, min(c, x)) so that a NaN x passes through (the second operand is
 * returned when either is NaN). */
static inline __attribute__((always_inline)) AK_ATTR V AK(vexp)(V x)
{
	x = V_MAX(V_SET1(EXP_LO), V_MIN(V_SET1(EXP_HI), x));
	V t = V_FMADD(x, V_SET1(EXP_LOG2E), V_SET1(EXP_ROUND));
	V n = V_SUB(t, V_SET1(EXP_ROUND));
	V r = V_FNMADD(n, V_SET1(EXP_LN2_HI), x);
	r = V_FNMADD(n, V_SET1(EXP_LN2_LO), r);
	V p = V_SET1(1.0f / 5040);
	p = V_FMADD(p, r, V_SET1(1.0f / 720));
	p = V_FMADD(p, r, V_SET1(1.0f / 120));
	p = V_FMADD(p, r, V_SET1(1.0f / 24));
	p = V_FMADD(p, r, V_SET1(1.0f / 6));
	p = V_FMADD(p, r, V_SET1(0.5f));
	p = V_FMADD(p, r, V_SET1(1.0f));
	p = V_FMADD(p, r, V_SET1(1.0f));
	return V_MUL(p, V_POW2(t));
}

/* s[i][j] = scale * sum_c q[i][c] kt[c][j] for mr rows and nv vectors of keys. */
static inline __attribute__((always_inline)) AK_ATTR void
AK(scores)(const int mr, const int nv, const float *q, int ld, const float *kt, int knp, int d,
	   float scale, float *s, int lds)
{
	V acc[AK_MR][AK_NQ];
	for (int i = 0; i < mr; i++)
		for (int u = 0; u < nv; u++)
			acc[i][u] = V_ZERO();
	for (int c = 0; c < d; c++) {
		V b[AK_NQ];
		for (int u = 0; u < nv; u++)
			b[u] = V_LOAD(kt + (size_t)c * knp + u * VW);
		for (int i = 0; i < mr; i++) {
			V a = V_SET1(q[(size_t)i * ld + c]);
			for (int u = 0; u < nv; u++)
				acc[i][u] = V_FMADD(a, b[u], acc[i][u]);
		}
	}
	const V sc = V_SET1(scale);
	for (int i = 0; i < mr; i++)
		for (int u = 0; u < nv; u++)
			V_STORE(s + (size_t)i * lds + u * VW, V_MUL(acc[i][u], sc));
}

#define AK_SCORES_ROWS(MR)                                                                   \
	do {                                                                                 \
		int j = 0;                                                                   \
		for (; j + AK_NQ * VW <= knp; j += AK_NQ * VW)                               \
			AK(scores)(MR, AK_NQ, q, ld, kt + j, knp, d, scale, s + j, lds);     \
		for (; j < knp; j += VW)                                                     \
			AK(scores)(MR, 1, q, ld, kt + j, knp, d, scale, s + j, lds);         \
	} while (0)

/* Scores of mr (1..AK_MR) query rows against the knp (a multiple of 16) keys of kt. */
static AK_ATTR void AK(scores_rows)(int mr, const float *q, int ld, const float *kt, int knp,
				      int d, float scale, float *s, int lds)
{
	switch (mr) {
	case 1: AK_SCORES_ROWS(1); break;
	case 2: AK_SCORES_ROWS(2); break;
	case 3: AK_SCORES_ROWS(3); break;
	default: AK_SCORES_ROWS(AK_MR); break;
	}
}
#undef AK_SCORES_ROWS

/* acc[i][c0 ..] = acc[i][..] * corr[i] + sum_j p[i][j] v[j][c0 ..] for mr rows and the two
 * vectors of columns from c0 (nc of them valid: fewer than 2 * VW only at the head's end). */
static inline __attribute__((always_inline)) AK_ATTR void
AK(values)(const int mr, const int full, const float *p, int lds, const float *v, int ld,
	   int kn, int nc, const float *corr, float *acc, int lda)
{
	V o[AK_PR][2];
	for (int i = 0; i < mr; i++) {
		const V cr = V_SET1(corr[i]);
		o[i][0] = V_MUL(V_LOAD(acc + (size_t)i * lda), cr);
		o[i][1] = V_MUL(V_LOAD(acc + (size_t)i * lda + VW), cr);
	}
	for (int j = 0; j < kn; j++) {
		const float *vr = v + (size_t)j * ld;
		V b0 = full ? V_LOADU(vr) : V_LOADU_N(vr, nc);
		V b1 = full ? V_LOADU(vr + VW) : V_LOADU_N(vr + VW, nc - VW);
		for (int i = 0; i < mr; i++) {
			V a = V_SET1(p[(size_t)i * lds + j]);
			o[i][0] = V_FMADD(a, b0, o[i][0]);
			o[i][1] = V_FMADD(a, b1, o[i][1]);
		}
	}
	for (int i = 0; i < mr; i++) {
		V_STORE(acc + (size_t)i * lda, o[i][0]);
		V_STORE(acc + (size_t)i * lda + VW, o[i][1]);
	}
}

#define AK_VALUES_ROWS(MR)                                                                   \
	do {                                                                                 \
		if (nc >= 2 * VW)                                                            \
			AK(values)(MR, 1, p, lds, v, ld, kn, nc, corr, acc, lda);            \
		else                                                                         \
			AK(values)(MR, 0, p, lds, v, ld, kn, nc, corr, acc, lda);            \
	} while (0)

static AK_ATTR void AK(values_rows)(int mr, const float *p, int lds, const float *v, int ld,
				      int kn, int nc, const float *corr, float *acc, int lda)
{
	switch (mr) {
	case 1: AK_VALUES_ROWS(1); break;
	case 2: AK_VALUES_ROWS(2); break;
	case 3: AK_VALUES_ROWS(3); break;
#if AK_PR > 4
	case 4: AK_VALUES_ROWS(4); break;
	case 5: AK_VALUES_ROWS(5); break;
	case 6: AK_VALUES_ROWS(6); break;
	case 7: AK_VALUES_ROWS(7); break;
#endif
	default: AK_VALUES_ROWS(AK_PR); break;
	}
}
#undef AK_VALUES_ROWS

/* One query row's scores of a chunk (knp >= kn values, the pads past kn set here): the row
 * maximum m and sum are carried from the chunks before; the scores become exponentials
 * against the new maximum. Returns the factor the row's earlier output is rescaled by. */
static AK_ATTR float AK(softmax_chunk)(float *p, int kn, int knp, float *m, float *sum)
{
	for (int j = kn; j < knp; j++)
		p[j] = -INFINITY;
	V mx = V_SET1(-INFINITY);
	for (int j = 0; j < knp; j += VW)
		mx = V_MAX(V_LOAD(p + j), mx);
	const float rmax = V_HMAX(mx);
	const float mnew = rmax > *m ? rmax : *m;
	const float corr = V_FIRST(AK(vexp)(V_SET1(*m - mnew)));
	const V mv = V_SET1(mnew);
	V s[16 / VW];
	for (int u = 0; u < 16 / VW; u++)
		s[u] = V_ZERO();
	for (int j = 0; j < knp; j += 16)
		for (int u = 0; u < 16 / VW; u++) {
			V e = AK(vexp)(V_SUB(V_LOAD(p + j + u * VW), mv));
			V_STORE(p + j + u * VW, e);
			s[u] = V_ADD(s[u], e);
		}
	*sum = *sum * corr + V_HSUM16(s);
	*m = mnew;
	return corr;
}

/* The bias of query row i (of the sequence) against keys k0 .. k0 + kn - 1. */
static AK_ATTR void AK(add_bias)(const attn_head *a, float *p, int i, int k0, int kn)
{
	int j = 0;
	if (a->rel) {
		const float *b = a->rel + (k0 - i);
		for (; j + VW <= kn; j += VW)
			V_STORE(p + j, V_ADD(V_LOAD(p + j), V_LOADU(b + j)));
		for (; j < kn; j++)
			p[j] = p[j] + b[j];
	} else if (a->alibi_slope != 0.0f) {
		const V ns = V_SET1(-a->alibi_slope);
		for (; j + VW <= kn; j += VW)
			V_STORE(p + j, V_ADD(V_LOAD(p + j), V_MUL(ns, V_ABSDIST(k0 + j - i))));
		for (; j < kn; j++) {
			int dist = k0 + j - i;
			float b = -a->alibi_slope * (float)(dist < 0 ? -dist : dist);
			p[j] = p[j] + b;
		}
	}
}

static AK_ATTR int AK(attend)(const attn_head *a, int q0, int qn)
{
	const int L = a->L, d = a->d, ld = a->ld;
	const int dp = (d + 31) / 32 * 32; /* an accumulator row: whole pairs of vectors */
	const int kc = L < ATTN_KEY_CHUNK ? (L + 15) / 16 * 16 : ATTN_KEY_CHUNK;
	enum { RB = 8 }; /* query rows whose scores are held at once */
	const size_t n_kt = (size_t)d * kc, n_s = (size_t)RB * kc, n_acc = (size_t)qn * dp;
	float *kt = aligned_alloc(64, (n_kt + n_s + 16 + n_acc + 2 * (size_t)qn + 15) / 16 * 64);
	if (!kt)
		return -1;
	float *s = kt + n_kt, *corr = s + n_s, *acc = corr + 16, *m = acc + n_acc, *sum = m + qn;
	memset(acc, 0, n_acc * sizeof *acc);
	for (int i = 0; i < qn; i++)
		m[i] = -INFINITY, sum[i] = 0.0f;
	for (int k0 = 0; k0 < L; k0 += ATTN_KEY_CHUNK) {
		const int kn = L - k0 < ATTN_KEY_CHUNK ? L - k0 : ATTN_KEY_CHUNK;
		const int knp = (kn + 15) / 16 * 16;
		for (int j = 0; j < kn; j++) {
			const float *kr = a->k + (size_t)(k0 + j) * ld;
			for (int c = 0; c < d; c++)
				kt[(size_t)c * knp + j] = kr[c];
		}
		for (int c = 0; c < d; c++)
			for (int j = kn; j < knp; j++)
				kt[(size_t)c * knp + j] = 0.0f;
		const float *v = a->v + (size_t)k0 * ld;
		for (int i0 = 0; i0 < qn; i0 += RB) {
			const int rb = qn - i0 < RB ? qn - i0 : RB;
			for (int r = 0; r < rb; r += AK_MR)
				AK(scores_rows)(rb - r < AK_MR ? rb - r : AK_MR,
						a->q + (size_t)(q0 + i0 + r) * ld, ld, kt, knp, d,
						a->scale, s + (size_t)r * knp, knp);
			for (int r = 0; r < rb; r++) {
				float *p = s + (size_t)r * knp;
				AK(add_bias)(a, p, q0 + i0 + r, k0, kn);
				corr[r] = AK(softmax_chunk)(p, kn, knp, &m[i0 + r], &sum[i0 + r]);
			}
			for (int c0 = 0; c0 < d; c0 += 2 * VW)
				for (int r = 0; r < rb; r += AK_PR)
					AK(values_rows)(rb - r < AK_PR ? rb - r : AK_PR,
							s + (size_t)r * knp, knp, v + c0, ld, kn,
							d - c0, corr + r,
							acc + (size_t)(i0 + r) * dp + c0, dp);
		}
	}
	for (int i = 0; i < qn; i++) {
		const float inv = 1.0f / sum[i];
		float *o = a->out + (size_t)(q0 + i) * a->ldo;
		for (int c = 0; c < d; c++)
			o[c] = acc[(size_t)i * dp + c] * inv;
	}
	free(kt);
	return 0;
}
