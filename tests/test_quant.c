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

#include <lmdb.h>
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
	if (!rc)
		rc = store_verify(snap, e);
	store_snapshot_end(snap);
	store_close(s);
	return rc;
}

/* Flips bytes inside the compact blocks of a copy of the store's data.mdb; every copy must
 * answer as the original or fail as damaged. */
static void test_damage(const char *tmp, const char *dir, const float *q, const answer *want)
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
	CHECK(mdb_dbi_open(txn, "cvectors", MDB_INTEGERKEY, &dbi) == 0, "no cvectors table");
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
		CHECK(at, "compact block not found in the file");
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
		int rc = ask(copy, q, 1000, &a, &e);
		if (rc) {
			CHECK(strstr(e.msg, "damaged") != NULL, "copy %d: error '%s'", t, e.msg);
			errors++;
		} else {
			CHECK(!memcmp(&a, want, sizeof a), "copy %d (byte %ld flipped): a different answer", t, off);
			same++;
		}
	}
	CHECK(errors > 0, "no damage detected in %d copies", errors + same);
	printf("test_quant: %d damaged copies refused, %d answered exactly\n", errors, same);
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

/* A format-2 store (tests/data/store-format2: written by the indexer before compact vectors,
 * 3 documents of all-MiniLM-L6-v2) reads as it is, and a writer's open upgrades it to format
 * 3 in place with the same answers and a clean check. */
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
		CHECK(r.format == 2 + pass && r.docs == 3, "pass %d: format %d, %llu documents", pass,
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

int main(void)
{
	test_codes();
	test_kernels();

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
				test_damage(tmp, dir, q, &a);
			}
		}
	}
	for (int t = 0; t < 3; t++)
		test_multi(p[t]);
	test_format2(tmp);
	/* Not a bound to hold, a sign of life: the raw compact rankings overlap the exact one. */
	printf("test_quant: raw top-%d overlap with f32: int8 %.2f, binary %.2f\n", K,
	       raw_hits[1] / (20.0 * K), raw_hits[2] / (20.0 * K));
	CHECK(raw_hits[1] > 20 * K * 6 / 10, "int8 raw overlap %d", raw_hits[1]);
	test_rm_rf(tmp);
	return test_done("test_quant");
}
