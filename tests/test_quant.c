/* test_quant.c — int8 and binary vectors: codes, kernels and rescored search.
 *
 * References are independent of the code under test: the scalar loops (plain C, no
 * intrinsics) for every kernel level the CPU has, on random data with odd dimensions and
 * tails; the f32 store's exact answer for the rescored search of int8 and binary stores built
 * from the same vectors (equal ids and scores when N x k covers the store); and the undamaged
 * store's answer for copies whose compact blocks were damaged (every copy must answer exactly
 * or fail with "damaged"). Also: quantize/dequantize bounds, and the type can change only on a
 * store without rows. */
#include "quant.h"
#include "scan.h"
#include "store.h"
#include "threadpool.h"
#include "xxh_wide.h"

#include <lmdb.h>
#define XXH_INLINE_ALL
#include <xxhash.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static uint64_t rng = 0x2545F4914F6CDD1DULL;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}
static float frand(void) { return (float)((next() >> 40) * (1.0 / 16777216.0)) * 2 - 1; }

static void test_codes(void)
{
	enum { N = 200, D = 37 };
	static float x[N * D], y[D];
	for (int i = 0; i < N * D; i++)
		x[i] = frand() * (1 + (i % D)) * 0.01f;
	float sc[D];
	quant_i8_scales(x, N, D, sc);
	uint8_t code[D];
	for (int i = 0; i < N; i++) {
		quant_i8_encode(x + i * D, D, sc, code);
		quant_i8_decode(code, D, sc, y);
		for (int d = 0; d < D; d++)
			CHECK(fabsf(y[d] - x[i * D + d]) <= sc[d] * 0.5f * 1.0001f, "row %d dim %d: %g -> %g (scale %g)",
			      i, d, x[i * D + d], y[d], sc[d]);
	}
	/* Out of range clips to +-127; NaN codes as 0. */
	float big[D];
	for (int d = 0; d < D; d++)
		big[d] = d % 3 == 0 ? 10.0f : d % 3 == 1 ? -10.0f : NAN;
	quant_i8_encode(big, D, sc, code);
	for (int d = 0; d < D; d++)
		CHECK(code[d] == (d % 3 == 0 ? 255 : d % 3 == 1 ? 1 : 128), "clip dim %d: %u", d, code[d]);
	/* Sign bits, LSB first, zero past dim. */
	uint8_t bits[(D + 7) / 8];
	quant_bin_encode(x, D, bits);
	for (int d = 0; d < 40; d++) {
		int bit = (bits[d / 8] >> (d % 8)) & 1;
		CHECK(bit == (d < D && x[d] > 0), "bit %d", d);
	}
	/* The query code: sum q8 * u8 - bias, times qs, estimates q . x. */
	float q[D];
	for (int d = 0; d < D; d++)
		q[d] = frand();
	int8_t q8[D];
	int32_t bias;
	float qs;
	quant_i8_query(q, D, sc, q8, &bias, &qs);
	for (int i = 0; i < N; i++) {
		quant_i8_encode(x + i * D, D, sc, code);
		int32_t dot = 0;
		double exact = 0, bound = 0;
		for (int d = 0; d < D; d++) {
			dot += (int32_t)code[d] * q8[d];
			exact += (double)q[d] * x[i * D + d];
			bound += fabs(q[d]) * sc[d] * 0.5 + 0.5 * qs * 128 + 1e-6;
		}
		CHECK(fabs(qs * (double)(dot - bias) - exact) <= bound, "row %d: estimate %g, exact %g",
		      i, qs * (double)(dot - bias), exact);
	}
	/* scan_i8_query (vectorised, per block in a scan) equals quant_i8_query bit for bit, for
	 * dims with and without tails, scales across four decades, halves that round to even. */
	for (int dim = 1; dim <= 100; dim += 3) {
		float qq[100], ss[100];
		int8_t a8[100], b8[100];
		int32_t ba, bb;
		float qa, qb;
		for (int rep = 0; rep < 20; rep++) {
			for (int d = 0; d < dim; d++) {
				qq[d] = rep == 1 ? (float)(d % 7) - 3 : frand();
				ss[d] = rep == 1 ? 0.5f : powf(10.0f, 2 * frand()) / 127.0f;
			}
			quant_i8_query(qq, dim, ss, a8, &ba, &qa);
			scan_i8_query(qq, dim, ss, b8, &bb, &qb);
			CHECK(!memcmp(a8, b8, (size_t)dim) && ba == bb && qa == qb,
			      "scan_i8_query dim %d rep %d differs from quant_i8_query", dim, rep);
		}
	}
}

static void test_kernels(void)
{
	static const int dims[] = {1, 3, 7, 16, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 383, 384, 385, 1000};
	int li8 = scan_isa_i8(), lbin = scan_isa_bin();
	printf("test_quant: kernels %s (levels int8 %d, binary %d)\n", scan_kernels(), li8, lbin);
	for (size_t t = 0; t < sizeof dims / sizeof dims[0]; t++) {
		int dim = dims[t], nb = (dim + 7) / 8;
		for (int n = 1; n <= 11; n += 2) {
			uint8_t *rows = malloc((size_t)n * dim + 64), *brows = malloc((size_t)n * nb + 64);
			int8_t *q = malloc((size_t)dim + 64);
			uint8_t *qb = malloc((size_t)nb + 64);
			for (int i = 0; i < n * dim; i++)
				rows[i] = (uint8_t)next();
			for (int i = 0; i < n * nb; i++)
				brows[i] = (uint8_t)next();
			for (int i = 0; i < dim; i++) /* extremes too: 255 x -127 or 127 must not saturate */
				q[i] = (int8_t)(i % 5 == 0 ? -127 : i % 5 == 1 ? 127 : (int)(next() % 255) - 127);
			for (int i = 0; i < nb; i++)
				qb[i] = (uint8_t)next();
			if (dim % 7 == 0)
				memset(rows, 255, (size_t)n * dim);
			int32_t ref[11], got[11];
			scan_i8_dots_at(SCAN_ISA_SCALAR, rows, (size_t)n, dim, q, ref);
			for (int isa = SCAN_ISA_AVX2; isa <= li8; isa++) {
				if (!scan_isa_i8_has(isa))
					continue;
				scan_i8_dots_at(isa, rows, (size_t)n, dim, q, got);
				for (int i = 0; i < n; i++)
					CHECK(got[i] == ref[i], "int8 isa %d dim %d n %d row %d: %d vs %d", isa, dim, n, i, got[i], ref[i]);
			}
			scan_bin_at(SCAN_ISA_SCALAR, brows, (size_t)n, nb, qb, ref);
			for (int i = 0; i < n; i++) {
				int32_t c = 0; /* bit by bit: the reference's reference */
				for (int b = 0; b < nb * 8; b++)
					c += ((brows[i * nb + b / 8] ^ qb[b / 8]) >> (b % 8)) & 1;
				CHECK(ref[i] == c, "binary scalar dim %d row %d: %d vs %d", dim, i, ref[i], c);
			}
			for (int isa = SCAN_ISA_AVX2; isa <= lbin; isa++) {
				if (isa == SCAN_ISA_AVX_VNNI)
					continue;
				scan_bin_at(isa, brows, (size_t)n, nb, qb, got);
				for (int i = 0; i < n; i++)
					CHECK(got[i] == ref[i], "binary isa %d dim %d n %d row %d: %d vs %d", isa, dim, n, i, got[i], ref[i]);
			}
			free(rows);
			free(brows);
			free(q);
			free(qb);
		}
	}
}

#define DIM 45 /* odd: tails in every kernel */
#define NDOC 300
#define K 10

static float vecs[NDOC][3][DIM];
static int nwin[NDOC];

static void build(const char *path, quant_type vt)
{
	store *s;
	emb_err e = {0};
	if (store_open(path, STORE_CREATE, &s, &e)) {
		fprintf(stderr, "%s\n", e.msg);
		exit(1);
	}
	store_model m = {0};
	strcpy(m.name, "quant-test");
	strcpy(m.sha256, "1");
	strcpy(m.pooling, "mean");
	m.dim = DIM;
	m.normalized = 1;
	m.max_tokens = 128;
	CHECK(store_bind_model(s, &m, &e) == 0, "%s", e.msg);
	CHECK(store_set_vtype(s, vt, &e) == 0, "%s", e.msg);
	/* Two transactions, so rows after the calibrating one are coded with its scales. */
	char ids[NDOC][16];
	store_op ops[NDOC];
	uint32_t ranges[6] = {0, 0, 0, 0, 0, 0};
	for (int i = 0; i < NDOC; i++) {
		snprintf(ids[i], 16, "d%03d", i);
		ops[i] = (store_op){STORE_OP_PUT, {.id = ids[i], .id_len = strlen(ids[i]), .text = "",
						   .nwin = nwin[i], .vecs = &vecs[i][0][0], .win_range = ranges}};
	}
	CHECK(store_apply(s, ops, NDOC / 3, NULL, &e) == 0, "%s", e.msg);
	CHECK(store_apply(s, ops + NDOC / 3, NDOC - NDOC / 3, NULL, &e) == 0, "%s", e.msg);
	/* The type is fixed once rows exist. */
	quant_type other = vt == QUANT_BINARY ? QUANT_F32 : QUANT_BINARY;
	CHECK(store_set_vtype(s, vt, &e) == 0, "same type again: %s", e.msg);
	CHECK(store_set_vtype(s, other, &e) == EMB_ESTORE && strstr(e.msg, "needs --rebuild"),
	      "changing the type of a store with rows: '%s'", e.msg);
	store_close(s);
}

typedef struct answer {
	int n;
	char id[K][16];
	float score[K];
} answer;

static int search_verify = 1; /* ask() also runs store_verify (test_damage: the search alone) */

static int ask(const char *path, const float *q, int rescore, answer *a, emb_err *e)
{
	store *s;
	memset(a, 0, sizeof *a);
	if (store_open(path, STORE_READONLY, &s, e))
		return -1;
	store_snapshot *snap;
	store_hit h[K];
	int rc = store_snapshot_begin(s, &snap, e);
	if (!rc)
		rc = store_search_rescore(snap, q, K, rescore, NULL, h, &a->n, e);
	for (int i = 0; !rc && i < a->n; i++) {
		memcpy(a->id[i], h[i].id, h[i].id_len < 15 ? h[i].id_len : 15);
		a->score[i] = h[i].score;
	}
	if (!rc && search_verify)
		rc = store_verify(snap, e);
	store_snapshot_end(snap);
	store_close(s);
	return rc;
}

/* Flips bytes inside the blocks of `table` (cvectors: the compact blocks the scan reads;
 * vectors: the f32 rows rescoring reads, each verified by its row checksum in format 4) of a
 * copy of the store's data.mdb; every copy must answer as the original or fail as damaged. */
static void test_damage(const char *tmp, const char *dir, const char *table, const float *q,
			const answer *want)
{
	char dmdb[1024], copy[1024], cmdb[1100];
	snprintf(dmdb, sizeof dmdb, "%s/data.mdb", dir);
	/* Where the compact blocks lie in the file: read them through LMDB, find them by bytes. */
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_val k, v;
	mdb_env_create(&env);
	mdb_env_set_maxdbs(env, 8);
	CHECK(mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK, 0644) == 0, "open %s", dir);
	mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	CHECK(mdb_dbi_open(txn, table, MDB_INTEGERKEY, &dbi) == 0, "no %s table", table);
	FILE *f = fopen(dmdb, "rb");
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *file = malloc((size_t)size);
	CHECK(fread(file, 1, (size_t)size, f) == (size_t)size, "read");
	fclose(f);
	long span[64][2];
	int nspan = 0;
	mdb_cursor_open(txn, dbi, &cur);
	for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && nspan < 64;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		char *at = memmem(file, (size_t)size, v.mv_data, v.mv_size);
		CHECK(at, "%s block not found in the file", table);
		if (at) {
			span[nspan][0] = at - file;
			span[nspan++][1] = (long)v.mv_size;
		}
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	int errors = 0, same = 0;
	for (int t = 0; t < 60 && nspan; t++) {
		snprintf(copy, sizeof copy, "%s/dmg", tmp);
		test_rm_rf(copy);
		char cmd[1200];
		snprintf(cmd, sizeof cmd, "mkdir -p '%s'", copy);
		CHECK(system(cmd) == 0, "mkdir");
		int sp = (int)(next() % (uint64_t)nspan);
		long off = span[sp][0] + (long)(next() % (uint64_t)span[sp][1]);
		char old = file[off];
		file[off] ^= (char)(1u << (next() % 8));
		snprintf(cmdb, sizeof cmdb, "%s/data.mdb", copy);
		test_write_file(copy, "data.mdb", file, (size_t)size);
		file[off] = old;
		answer a;
		emb_err e = {0};
		search_verify = 0; /* what the search itself detects */
		int rc = ask(copy, q, 1000, &a, &e);
		search_verify = 1;
		if (rc) {
			CHECK(strstr(e.msg, "damaged") != NULL, "copy %d: error '%s'", t, e.msg);
			errors++;
		} else {
			CHECK(!memcmp(&a, want, sizeof a), "copy %d (byte %ld flipped): a different answer", t, off);
			same++;
		}
	}
	CHECK(errors > 0, "%s: no damage detected in %d copies", table, errors + same);
	printf("test_quant: %s: %d damaged copies refused, %d answered exactly\n", table, errors, same);
	free(file);
}

/* Many queries in one scan equal one scan each: scan_topk_multi against scan_topk (rows in
 * blocks of uneven sizes, odd dim), and store_search_batch against store_search_rescore on
 * an f32, int8 or binary store, rescored and raw. */
static void test_multi(const char *f32store)
{
	enum { D = 45, NB = 9, NQ = 7, KK = 13 };
	static float rows[NB * 100 * D];
	scan_block bl[NB];
	uint32_t first = 0;
	for (int b = 0; b < NB; b++) {
		uint32_t n = 1 + (uint32_t)(next() % 100);
		bl[b] = (scan_block){.vecs = rows + (size_t)first * D, .nrows = n, .first_row = first};
		first += n;
	}
	for (size_t i = 0; i < (size_t)first * D; i++)
		rows[i] = frand();
	float qs[NQ * D];
	for (int i = 0; i < NQ * D; i++)
		qs[i] = frand();
	threadpool *pool = threadpool_create(3);
	scan_hit multi[NQ * KK], one[KK];
	int nm[NQ], n1;
	emb_err e = {0};
	CHECK(scan_topk_multi(bl, NB, D, qs, NQ, KK, pool, NULL, multi, nm, &e) == 0, "%s", e.msg);
	for (int q = 0; q < NQ; q++) {
		CHECK(scan_topk(bl, NB, D, qs + q * D, KK, pool, one, &n1, &e) == 0, "%s", e.msg);
		CHECK(n1 == nm[q] && !memcmp(one, multi + q * KK, (size_t)n1 * sizeof *one),
		      "scan_topk_multi query %d differs from scan_topk", q);
	}
	store *s;
	store_snapshot *snap;
	CHECK(store_open(f32store, STORE_READONLY, &s, &e) == 0, "%s", e.msg);
	CHECK(store_snapshot_begin(s, &snap, &e) == 0, "%s", e.msg);
	float sq[NQ * DIM];
	for (int i = 0; i < NQ * DIM; i++)
		sq[i] = frand() + (i % DIM < 3 ? 0.5f : 0);
	store_hit bh[NQ * K], h1[K];
	int bn[NQ];
	for (int rescore = -1; rescore <= 0; rescore++) {
	CHECK(store_search_batch(snap, sq, NQ, K, rescore, pool, bh, bn, &e) == 0, "%s", e.msg);
	for (int q = 0; q < NQ; q++) {
		CHECK(store_search_rescore(snap, sq + q * DIM, K, rescore, pool, h1, &n1, &e) == 0, "%s", e.msg);
		CHECK(n1 == bn[q], "store_search_batch query %d: %d hits, not %d", q, bn[q], n1);
		for (int i = 0; i < n1 && i < bn[q]; i++) {
			const store_hit *a = &h1[i], *b = &bh[q * K + i];
			CHECK(a->score == b->score && a->row == b->row && a->id == b->id &&
			      a->id_len == b->id_len && a->win_index == b->win_index,
			      "%s store_search_batch --rescore %d query %d hit %d differs from store_search",
			      f32store, rescore, q, i);
		}
	}
	}
	store_snapshot_end(snap);
	store_close(s);
	threadpool_destroy(pool);
}

/* Many binary queries in one scan (scan.c's 16-queries-a-pass kernel where the CPU has
 * AVX-512 VPOPCNTDQ and the rows are whole dwords, at most 256 bytes; the one-query kernels
 * elsewhere) equal one scan each, bit for bit: row sizes on and off that path, query counts
 * around the 16-lane groups, k from 1 to past the block, low-entropy codes so that most
 * distances tie (ties go to the lower row), a query repeated. */
static void test_bin_multi(void)
{
	static uint8_t codes[3000 * 260];
	const int nbs[] = {48, 96, 8, 6, 260}, nqs[] = {2, 16, 17, 40}, ks[] = {1, 13, 100, 2500};
	threadpool *pool = threadpool_create(3);
	int cases = 0;
	for (size_t ib = 0; ib < sizeof nbs / sizeof *nbs; ib++) {
		const int nb = nbs[ib];
		for (size_t i = 0; i < sizeof codes; i++) /* mostly zeros: few distinct distances */
			codes[i] = (next() % 4 == 0) ? (uint8_t)(1u << (next() % 8)) : 0;
		scan_block bl[12];
		uint32_t first = 0;
		int nbl = 0;
		while (nbl < 12 && first < 2800) {
			uint32_t n = 1 + (uint32_t)(next() % 400);
			if (first + n > 3000)
				n = 3000 - first;
			bl[nbl++] = (scan_block){.codes = codes + (size_t)first * nb, .nrows = n, .first_row = first};
			first += n;
		}
		static uint8_t qb[40][260];
		scan_cquery cq[40];
		for (int q = 0; q < 40; q++) {
			for (int i = 0; i < nb; i++)
				qb[q][i] = q == 5 ? qb[2][i] : (next() % 4 == 0) ? (uint8_t)(1u << (next() % 8)) : 0;
			cq[q] = (scan_cquery){.kind = QUANT_BINARY, .dim = nb * 8, .bits = qb[q]};
		}
		for (size_t iq = 0; iq < sizeof nqs / sizeof *nqs; iq++)
			for (size_t ik = 0; ik < sizeof ks / sizeof *ks; ik++) {
				const int nq = nqs[iq], k = ks[ik];
				static scan_hit multi[40 * 2500], one[2500];
				int nm[40], n1;
				emb_err e = {0};
				CHECK(scan_topk_compact_multi(bl, (size_t)nbl, cq, nq, k, pool, NULL, multi, nm, &e) == 0,
				      "%s", e.msg);
				for (int q = 0; q < nq; q++) {
					CHECK(scan_topk_compact(bl, (size_t)nbl, cq + q, k, pool, NULL, one, &n1, &e) == 0,
					      "%s", e.msg);
					CHECK(n1 == nm[q] && !memcmp(one, multi + (size_t)q * k, (size_t)n1 * sizeof *one),
					      "binary, %d-byte rows, %d queries, k %d: query %d differs from its own scan",
					      nb, nq, k, q);
				}
				cases++;
			}
	}
	printf("test_quant: many binary queries equal one scan each in %d cases (%s)\n", cases,
	       scan_kernels());
	threadpool_destroy(pool);
}

/* A format-2 store (tests/data/store-format2: written by the indexer before compact vectors,
 * 3 documents of all-MiniLM-L6-v2) reads as it is, and a writer's open upgrades it to the
 * current format in place with the same answers and a clean check. */
static void test_format2(const char *tmp)
{
	char dir[600], cmd[1400];
	snprintf(dir, sizeof dir, "%s/f2", tmp);
	snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp tests/data/store-format2/data.mdb '%s/'", dir, dir);
	CHECK(system(cmd) == 0, "copy the format-2 fixture");
	float q[384];
	for (int d = 0; d < 384; d++)
		q[d] = frand();
	answer a[2];
	for (int pass = 0; pass < 2; pass++) {
		store *s;
		store_snapshot *snap;
		store_check_report r;
		store_hit h[K];
		emb_err e = {0};
		CHECK(store_open(dir, STORE_READONLY, &s, &e) == 0, "%s", e.msg);
		CHECK(store_vtype(s) == QUANT_F32, "format-%d store: not f32", 2 + pass);
		CHECK(store_snapshot_begin(s, &snap, &e) == 0, "%s", e.msg);
		CHECK(store_check(snap, &r, &e) == 0, "%s", e.msg);
		CHECK(r.format == (pass ? STORE_FORMAT_VERSION : 2) && r.docs == 3, "pass %d: format %d, %llu documents", pass,
		      r.format, (unsigned long long)r.docs);
		memset(&a[pass], 0, sizeof a[pass]);
		CHECK(store_search(snap, q, K, NULL, h, &a[pass].n, &e) == 0, "%s", e.msg);
		for (int i = 0; i < a[pass].n; i++) {
			memcpy(a[pass].id[i], h[i].id, h[i].id_len < 15 ? h[i].id_len : 15);
			a[pass].score[i] = h[i].score;
		}
		store_snapshot_end(snap);
		store_close(s);
		if (pass == 0) { /* a writer's open upgrades it */
			CHECK(store_open(dir, 0, &s, &e) == 0, "open format 2 for writing: %s", e.msg);
			store_close(s);
		}
	}
	CHECK(a[0].n == 3 && !memcmp(&a[0], &a[1], sizeof a[0]), "answers differ after the upgrade");
}

/* tests/data/store-format3-int8 and -binary (dev/store-fixtures/gen-fixtures.c: 140 rows of
 * fixture_vec, scales from a first transaction of 40 rows, the 100 later rows reaching past
 * them) read as they are, answer exactly when rescoring covers the store (against a brute
 * force in doubles over the same vectors, made here), and a writer's open upgrades them to
 * format 6 (per-block scales, row checksums; one compact value for both vector blocks)
 * with the same exact answers, a clean check, and writes that work; so do the same rows
 * written by format 4 (compact blocks one a vector block) and by format 5 (binary grouped
 * as in format 6, int8 one a vector block). */
static void fixture_vec(int i, float *x)
{
	uint64_t r = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(i + 1) * 0xBF58476D1CE4E5B9ULL;
	double ss = 0;
	for (int d = 0; d < 384; d++) {
		r ^= r << 13;
		r ^= r >> 7;
		r ^= r << 17;
		x[d] = (float)((r >> 40) * (1.0 / 16777216.0)) * 2 - 1;
		if (i >= 40)
			x[d] *= 1.5f;
		ss += (double)x[d] * x[d];
	}
	for (int d = 0; d < 384; d++)
		x[d] = (float)(x[d] / sqrt(ss));
}

static void test_format3(const char *tmp)
{
	static float v[140][384];
	for (int i = 0; i < 140; i++)
		fixture_vec(i, v[i]);
	const char *names[2] = {"int8", "binary"};
	for (int ft = 0; ft < 6; ft++) {
		int t = ft % 2, from = 3 + ft / 2; /* formats 3, 4, 5: int8, binary */
		char dir[600], cmd[1400];
		snprintf(dir, sizeof dir, "%s/f%d-%s", tmp, from, names[t]);
		snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp tests/data/store-format%d-%s/data.mdb '%s/'", dir,
			 from, names[t], dir);
		CHECK(system(cmd) == 0, "copy the format-%d fixture", from);
		for (int qi = 0; qi < 4; qi++) {
			float q[384];
			for (int d = 0; d < 384; d++)
				q[d] = frand();
			/* the exact top K by brute force */
			double sc[140], qq = 0;
			for (int d = 0; d < 384; d++)
				qq += (double)q[d] * q[d];
			int best[K];
			for (int i = 0; i < 140; i++) {
				sc[i] = 0;
				for (int d = 0; d < 384; d++)
					sc[i] += (double)v[i][d] * q[d];
				sc[i] /= sqrt(qq);
			}
			for (int j = 0; j < K; j++) {
				best[j] = -1;
				for (int i = 0; i < 140; i++) {
					int used = 0;
					for (int u = 0; u < j; u++)
						used |= best[u] == i;
					if (!used && (best[j] < 0 || sc[i] > sc[best[j]]))
						best[j] = i;
				}
			}
			for (int pass = 0; pass < 2; pass++) {
				answer a;
				emb_err e = {0};
				CHECK(ask(dir, q, 140 / K + 1, &a, &e) == 0, "format-%d %s pass %d: %s", from, names[t], pass,
				      e.msg);
				CHECK(a.n == K, "format-%d %s: %d hits", from, names[t], a.n);
				for (int j = 0; j < a.n; j++) {
					char want[16];
					snprintf(want, sizeof want, "d%d", best[j]);
					CHECK(!strcmp(a.id[j], want) && fabs(a.score[j] - sc[best[j]]) < 1e-5,
					      "format-%d %s query %d hit %d: %s %g, not %s %g", pass ? STORE_FORMAT_VERSION : from, names[t],
					      qi, j, a.id[j], a.score[j], want, sc[best[j]]);
				}
				CHECK(ask(dir, q, 0, &a, &e) == 0 && a.n == K, "raw: %s", e.msg);
				store *s;
				store_snapshot *snap;
				store_check_report r;
				CHECK(store_open(dir, STORE_READONLY, &s, &e) == 0, "%s", e.msg);
				CHECK(store_snapshot_begin(s, &snap, &e) == 0, "%s", e.msg);
				CHECK(store_check(snap, &r, &e) == 0, "format-%d %s check: %s", from, names[t], e.msg);
				int want_format = qi == 0 && pass == 0 ? from : STORE_FORMAT_VERSION;
				/* format 5 groups a binary store's 2 vector blocks into one compact value,
				 * format 6 an int8 store's too */
				unsigned long long want_cb = want_format >= (t == 1 ? 5 : 6) ? 1 : 2;
				CHECK(r.format == want_format && r.docs == 140 && r.cblocks == want_cb,
				      "%s query %d pass %d: format %d (not %d), %llu documents, %llu compact blocks",
				      names[t], qi, pass, r.format, want_format, (unsigned long long)r.docs,
				      (unsigned long long)r.cblocks);
				store_snapshot_end(snap);
				store_close(s);
				if (qi == 0 && pass == 0) { /* a writer's open upgrades it */
					CHECK(store_open(dir, 0, &s, &e) == 0, "open format %d for writing: %s", from, e.msg);
					store_close(s);
				}
			}
		}
		/* and it takes writes: one more document, the store still checks */
		store *s;
		emb_err e = {0};
		CHECK(store_open(dir, 0, &s, &e) == 0, "%s", e.msg);
		store_op op = {STORE_OP_PUT, {.id = "extra", .id_len = 5, .text = "", .nwin = 1, .vecs = v[7]}};
		CHECK(store_apply(s, &op, 1, NULL, &e) == 0, "write to the upgraded %s store: %s", names[t], e.msg);
		store_snapshot *snap;
		CHECK(store_snapshot_begin(s, &snap, &e) == 0 && store_verify(snap, &e) == 0, "%s", e.msg);
		store_snapshot_end(snap);
		store_close(s);
	}
}

/* int8 calibration must not depend on how the rows arrived: a store whose first run held 3
 * documents, then 1,000 more, must rank (raw int8, --rescore 0) as well as one written in
 * one run. The vectors are anisotropic as real embeddings are (each dimension its own spread,
 * a few dimensions far wider), so scales taken from 3 rows would clip most later rows. */
static void test_calibration(const char *tmp)
{
	enum { N = 1003, CD = 64, NQ = 30 };
	static float v[N][CD], spread[CD];
	for (int d = 0; d < CD; d++)
		spread[d] = 0.2f + (float)(next() % 1000) / 400.0f + (d % 16 == 0 ? 6.0f : 0);
	for (int i = 0; i < N; i++) {
		double ss = 0;
		for (int d = 0; d < CD; d++) {
			v[i][d] = frand() * spread[d] + 0.3f;
			ss += (double)v[i][d] * v[i][d];
		}
		for (int d = 0; d < CD; d++)
			v[i][d] = (float)(v[i][d] / sqrt(ss));
	}
	static char ids[N][16];
	static store_op ops[N];
	for (int i = 0; i < N; i++) {
		snprintf(ids[i], sizeof ids[i], "c%04d", i);
		ops[i] = (store_op){STORE_OP_PUT, {.id = ids[i], .id_len = strlen(ids[i]), .text = "",
						   .nwin = 1, .vecs = v[i]}};
	}
	char path[2][600];
	for (int t = 0; t < 2; t++) {
		snprintf(path[t], sizeof path[t], "%s/calib%d", tmp, t);
		store *s;
		emb_err e = {0};
		CHECK(store_open(path[t], STORE_CREATE, &s, &e) == 0, "%s", e.msg);
		store_model m = {0};
		strcpy(m.name, "calib-test");
		strcpy(m.sha256, "1");
		strcpy(m.pooling, "mean");
		m.dim = CD;
		m.normalized = 1;
		m.max_tokens = 128;
		CHECK(store_bind_model(s, &m, &e) == 0 && store_set_vtype(s, QUANT_INT8, &e) == 0, "%s", e.msg);
		if (t == 0) {
			CHECK(store_apply(s, ops, N, NULL, &e) == 0, "%s", e.msg);
		} else {
			CHECK(store_apply(s, ops, 3, NULL, &e) == 0, "%s", e.msg);
			CHECK(store_apply(s, ops + 3, N - 3, NULL, &e) == 0, "%s", e.msg);
		}
		store_close(s);
	}
	int overlap[2] = {0, 0};
	for (int qi = 0; qi < NQ; qi++) {
		float q[CD];
		double sc[N];
		for (int d = 0; d < CD; d++)
			q[d] = frand() * spread[d] + 0.3f;
		for (int i = 0; i < N; i++) {
			sc[i] = 0;
			for (int d = 0; d < CD; d++)
				sc[i] += (double)v[i][d] * q[d];
		}
		/* the exact top K (brute force in doubles) */
		char exact[K][16];
		int used[N] = {0};
		for (int j = 0; j < K; j++) {
			int b = -1;
			for (int i = 0; i < N; i++)
				if (!used[i] && (b < 0 || sc[i] > sc[b]))
					b = i;
			used[b] = 1;
			memcpy(exact[j], ids[b], 16);
		}
		for (int t = 0; t < 2; t++) {
			store *s;
			store_snapshot *snap;
			store_hit h[K];
			int n = 0;
			emb_err e = {0};
			CHECK(store_open(path[t], STORE_READONLY, &s, &e) == 0, "%s", e.msg);
			CHECK(store_snapshot_begin(s, &snap, &e) == 0, "%s", e.msg);
			CHECK(store_search_rescore(snap, q, K, 0, NULL, h, &n, &e) == 0 && n == K, "%s", e.msg);
			for (int i = 0; i < n; i++)
				for (int j = 0; j < K; j++)
					overlap[t] += h[i].id_len == 5 && !memcmp(h[i].id, exact[j], 5);
			store_snapshot_end(snap);
			store_close(s);
		}
	}
	printf("test_quant: raw int8 top-%d overlap with the exact ranking: one run %.3f, 3 documents then %d %.3f\n",
	       K, overlap[0] / (double)(NQ * K), N - 3, overlap[1] / (double)(NQ * K));
	CHECK(overlap[0] >= NQ * K * 8 / 10, "one-run int8 store: raw overlap %d of %d", overlap[0], NQ * K);
	CHECK(overlap[1] >= overlap[0] - NQ * K / 100,
	      "int8 calibrated by a first run of 3 documents ranks worse: raw top-%d overlap %d vs %d of %d in one run",
	      K, overlap[1], overlap[0], NQ * K);
}

/* Format 6 groups compact blocks, 32 vector blocks a value for binary, 4 for int8:
 * documents added and deleted in later transactions (deletes move the last rows into the
 * holes, across groups; a group filled, emptied, dropped), then a retype away and back.
 * After each step the binary and int8 stores check clean (store_check recomputes every
 * block's scales and codes from its f32 rows) with one compact value a group, answer
 * exactly as an f32 store fed the same operations when rescoring covers them, the binary
 * store's raw answer (--rescore 0) has the sign-bit scores that an independent count over
 * the live vectors gives, and the int8 store's raw scores lie within 2e-3 of their rows'
 * cosines. 1536-d rows: 32 a vector block, 1,024 a binary group, 128 an int8 group. */
#define GD 1536
#define GN 2700
static float gvec[GN][GD];
static int galive[GN];

static void groups_step(const char *pf, const char *pb, const char *pi, int step)
{
	emb_err e = {0};
	uint64_t live = 0;
	for (int i = 0; i < GN; i++)
		live += (uint64_t)galive[i];
	for (int t = 0; t < 2; t++) {
		store *s;
		store_snapshot *snap;
		store_check_report r;
		uint64_t per = t ? 128 : 1024; /* rows a group: int8, binary */
		CHECK(store_open(t ? pi : pb, STORE_READONLY, &s, &e) == 0, "%s", e.msg);
		CHECK(store_snapshot_begin(s, &snap, &e) == 0, "%s", e.msg);
		CHECK(store_check(snap, &r, &e) == 0, "groups step %d: %s check: %s", step, t ? "int8" : "binary", e.msg);
		CHECK(r.format == STORE_FORMAT_VERSION && r.cblocks == (r.rows + per - 1) / per &&
			      r.blocks == (r.rows + 31) / 32,
		      "groups step %d %s: format %d, %llu rows in %llu blocks, %llu compact blocks", step,
		      t ? "int8" : "binary", r.format, (unsigned long long)r.rows, (unsigned long long)r.blocks,
		      (unsigned long long)r.cblocks);
		CHECK(r.rows == live && r.docs == live, "groups step %d: %llu rows, %llu live", step,
		      (unsigned long long)r.rows, (unsigned long long)live);
		store_snapshot_end(snap);
		store_close(s);
	}
	for (int qi = 0; qi < 4; qi++) {
		static float q[GD];
		for (int d = 0; d < GD; d++)
			q[d] = frand();
		answer exact, a;
		CHECK(ask(pf, q, -1, &exact, &e) == 0, "%s", e.msg);
		CHECK(ask(pb, q, (int)(live / K + 1), &a, &e) == 0, "%s", e.msg);
		CHECK(exact.n == K && !memcmp(&a, &exact, sizeof a), "groups step %d query %d: rescored binary is not "
		      "the f32 answer (first %s %g vs %s %g)", step, qi, a.id[0], a.score[0], exact.id[0], exact.score[0]);
		CHECK(ask(pi, q, (int)(live / K + 1), &a, &e) == 0, "%s", e.msg);
		CHECK(!memcmp(&a, &exact, sizeof a), "groups step %d query %d: rescored int8 is not the f32 answer "
		      "(first %s %g vs %s %g)", step, qi, a.id[0], a.score[0], exact.id[0], exact.score[0]);
		/* int8 raw scores: each near its row's cosine (codes read with another block's
		 * scales are far off) */
		CHECK(ask(pi, q, 0, &a, &e) == 0 && a.n == K, "raw: %s", e.msg);
		double qq = 0;
		for (int d = 0; d < GD; d++)
			qq += (double)q[d] * q[d];
		for (int j = 0; j < K; j++) {
			int i = atoi(a.id[j] + 1);
			double cs = 0;
			for (int d = 0; d < GD; d++)
				cs += (double)q[d] * gvec[i][d];
			cs /= sqrt(qq);
			CHECK(galive[i] && fabs(a.score[j] - cs) < 2e-3, "groups step %d query %d: raw int8 %s scores %g, "
			      "its cosine %g", step, qi, a.id[j], a.score[j], cs);
		}
		CHECK(ask(pb, q, 0, &a, &e) == 0 && a.n == K, "raw: %s", e.msg);
		/* the independent count: every live row's sign-bit score, the K best */
		float best[K];
		for (int j = 0; j < K; j++)
			best[j] = -2;
		for (int i = 0; i < GN; i++) {
			if (!galive[i])
				continue;
			int ham = 0;
			for (int d = 0; d < GD; d++)
				ham += (q[d] > 0) != (gvec[i][d] > 0);
			float sc = 1.0f - 2.0f * (float)ham * (1.0f / (float)GD);
			for (int j = 0; j < K; j++)
				if (sc > best[j]) {
					memmove(best + j + 1, best + j, (size_t)(K - 1 - j) * sizeof *best);
					best[j] = sc;
					break;
				}
			for (int j = 0; j < K; j++) {
				char id[16];
				snprintf(id, sizeof id, "g%d", i);
				if (!strcmp(a.id[j], id))
					CHECK(a.score[j] == sc, "groups step %d: raw %s scores %g, its bits %g", step, id,
					      a.score[j], sc);
			}
		}
		for (int j = 0; j < K; j++)
			CHECK(a.score[j] == best[j], "groups step %d query %d: raw hit %d scores %g, not %g", step, qi, j,
			      a.score[j], best[j]);
	}
}

static void test_groups(const char *tmp)
{
	char pf[600], pb[600], pi[600];
	snprintf(pf, sizeof pf, "%s/groups-f32", tmp);
	snprintf(pb, sizeof pb, "%s/groups-binary", tmp);
	snprintf(pi, sizeof pi, "%s/groups-int8", tmp);
	for (int i = 0; i < GN; i++) {
		double ss = 0;
		for (int d = 0; d < GD; d++) {
			/* rows written together (a vector block's) put their weight in the same quarter
			 * of the dimensions, so the blocks of an int8 group have far apart scales */
			gvec[i][d] = frand() * (d / (GD / 4) == i / 32 % 4 ? 1.0f : 0.05f);
			ss += (double)gvec[i][d] * gvec[i][d];
		}
		for (int d = 0; d < GD; d++)
			gvec[i][d] = (float)(gvec[i][d] / sqrt(ss));
	}
	static char ids[GN][16];
	static store_op ops[GN];
	store *st[3];
	emb_err e = {0};
	const char *paths[3] = {pf, pb, pi};
	const quant_type vt[3] = {QUANT_F32, QUANT_BINARY, QUANT_INT8};
	for (int t = 0; t < 3; t++) {
		CHECK(store_open(paths[t], STORE_CREATE, &st[t], &e) == 0, "%s", e.msg);
		store_model m = {0};
		strcpy(m.name, "groups-test");
		strcpy(m.sha256, "1");
		strcpy(m.pooling, "mean");
		m.dim = GD;
		m.normalized = 1;
		m.max_tokens = 128;
		CHECK(store_bind_model(st[t], &m, &e) == 0 && store_set_vtype(st[t], vt[t], &e) == 0,
		      "%s", e.msg);
	}
	for (int i = 0; i < GN; i++)
		snprintf(ids[i], 16, "g%d", i);
	/* steps: [0, 600) in one transaction; [600, 2600) in the next (groups 0 and 1 full, 2
	 * begun); 400 deletes and 30 new documents in one; deletes down to one and a bit groups
	 * (group 2 dropped); then retypes away and back (binary: to int8, int8: to binary) */
	int steps[4][2] = {{0, 600}, {600, 2600}, {2600, 2630}, {0, 0}};
	for (int step = 0; step < 5; step++) {
		int n = 0;
		if (step < 3)
			for (int i = steps[step][0]; i < steps[step][1]; i++) {
				ops[n++] = (store_op){STORE_OP_PUT, {.id = ids[i], .id_len = strlen(ids[i]), .text = "",
								     .nwin = 1, .vecs = gvec[i]}};
				galive[i] = 1;
			}
		if (step == 2 || step == 3) {
			int want = step == 2 ? 400 : 0, live = 0;
			for (int i = 0; i < GN; i++)
				live += galive[i];
			if (step == 3)
				want = live - 1100; /* leaves 1,100 rows: binary group 0 full, group 1 76 rows */
			for (int d = 0; d < want;) {
				int i = (int)(next() % 2630);
				if (!galive[i] || (step == 2 && i >= 2600))
					continue;
				galive[i] = 0;
				ops[n++] = (store_op){STORE_OP_DELETE, {.id = ids[i], .id_len = strlen(ids[i])}};
				d++;
			}
		}
		for (int t = 0; t < 3 && n; t++)
			CHECK(store_apply(st[t], ops, n, NULL, &e) == 0, "groups step %d: %s", step, e.msg);
		if (step == 4) {
			CHECK(store_retype(st[1], QUANT_INT8, &e) == 0 && store_retype(st[1], QUANT_BINARY, &e) == 0,
			      "retype: %s", e.msg);
			CHECK(store_retype(st[2], QUANT_BINARY, &e) == 0 && store_retype(st[2], QUANT_INT8, &e) == 0,
			      "retype: %s", e.msg);
		}
		groups_step(pf, pb, pi, step);
	}
	for (int t = 0; t < 3; t++)
		store_close(st[t]);
}

/* The scan's AVX-512 XXH3 (xxh_wide) gives XXH3's values: every length to 1,100 bytes (all
 * of XXH3's size classes: 0-16, 17-128, 129-240, longer; stripe and block edges) and a few
 * long ones, at odd offsets, with varied seeds. Skipped where the CPU lacks AVX-512. */
static void test_xxh_wide(void)
{
	if (!xxh_wide_ok()) {
		printf("test_quant: no AVX-512: xxh_wide not compared\n");
		return;
	}
	static uint8_t buf[300000];
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (uint8_t)next();
	size_t longs[] = {4096, 6144, 65536, 196608, 299990};
	for (size_t n = 0; n < 1100 + 5; n++) {
		size_t len = n < 1100 ? n : longs[n - 1100];
		uint64_t seed = next();
		size_t off = n % 7;
		CHECK(xxh_wide(buf + off, len, seed) == XXH3_64bits_withSeed(buf + off, len, seed),
		      "xxh_wide differs from XXH3 at %zu bytes", len);
	}
}

int main(void)
{
	test_codes();
	test_kernels();
	test_xxh_wide();

	for (int i = 0; i < NDOC; i++) {
		nwin[i] = 1 + (int)(next() % 3);
		for (int w = 0; w < nwin[i]; w++) {
			double ss = 0;
			for (int d = 0; d < DIM; d++) {
				vecs[i][w][d] = frand() + (d < 3 ? 0.5f : 0); /* a shared direction: near ties */
				ss += (double)vecs[i][w][d] * vecs[i][w][d];
			}
			for (int d = 0; d < DIM; d++)
				vecs[i][w][d] = (float)(vecs[i][w][d] / sqrt(ss));
		}
	}
	char tmpb[256], p[3][400];
	char *tmp = test_tmpdir(tmpb);
	quant_type types[3] = {QUANT_F32, QUANT_INT8, QUANT_BINARY};
	for (int t = 0; t < 3; t++) {
		snprintf(p[t], sizeof p[t], "%s/%s", tmp, quant_name(types[t]));
		build(p[t], types[t]);
	}
	int rows = 0;
	for (int i = 0; i < NDOC; i++)
		rows += nwin[i];
	int full_rescore = rows / K + 1; /* N x k covers the store */
	int raw_hits[3] = {0, 0, 0};
	for (int qi = 0; qi < 20; qi++) {
		float q[DIM];
		for (int d = 0; d < DIM; d++)
			q[d] = frand() + (d < 3 ? 0.5f : 0);
		answer exact, a;
		emb_err e = {0};
		CHECK(ask(p[0], q, -1, &exact, &e) == 0, "%s", e.msg);
		CHECK(exact.n == K, "f32: %d hits", exact.n);
		for (int t = 1; t < 3; t++) {
			CHECK(ask(p[t], q, full_rescore, &a, &e) == 0, "%s", e.msg);
			CHECK(!memcmp(&a, &exact, sizeof a), "%s --rescore %d: not the exact answer (first %s %g vs %s %g)",
			      quant_name(types[t]), full_rescore, a.id[0], a.score[0], exact.id[0], exact.score[0]);
			CHECK(ask(p[t], q, 0, &a, &e) == 0, "%s", e.msg);
			CHECK(a.n == K, "raw: %d hits", a.n);
			for (int i = 0; i < K; i++)
				for (int j = 0; j < K; j++)
					raw_hits[t] += !strcmp(a.id[i], exact.id[j]);
		}
		if (qi == 0) {
			char dir[512];
			for (int t = 1; t < 3; t++) {
				CHECK(ask(p[t], q, full_rescore, &a, &e) == 0, "%s", e.msg);
				CHECK(realpath(p[t], dir) != NULL, "realpath");
				test_damage(tmp, dir, "cvectors", q, &a);
				test_damage(tmp, dir, "vectors", q, &a);
			}
		}
	}
	for (int t = 0; t < 3; t++)
		test_multi(p[t]);
	test_bin_multi();
	test_format2(tmp);
	test_format3(tmp);
	test_calibration(tmp);
	test_groups(tmp);
	/* Not a bound to hold, a sign of life: the raw compact rankings overlap the exact one. */
	printf("test_quant: raw top-%d overlap with f32: int8 %.2f, binary %.2f\n", K,
	       raw_hits[1] / (20.0 * K), raw_hits[2] / (20.0 * K));
	CHECK(raw_hits[1] > 20 * K * 6 / 10, "int8 raw overlap %d", raw_hits[1]);
	test_rm_rf(tmp);
	return test_done("test_quant");
}
