/* layout-bench.c — the measurements behind store format 5's grouped binary blocks
 * (docs/bench-scan.md, "Store format 5") and format 6's grouped int8 ones; not built by
 * make. Modes 4 and 6 read one compact value a vector block (formats 4 and 5): run them on
 * a checkout of 868e323 or earlier, whose writer makes such stores. Build:
 *   cc -std=c17 -O2 -g -march=x86-64-v3 -D_GNU_SOURCE -pthread -Iengine -o /tmp/lb \
 *      dev/scan-layout/layout-bench.c build/libengine.a -llmdb -lzstd -lutf8proc -ljansson \
 *      -ldl -lm -lxxhash -pthread
 *   /tmp/lb 1000000 STORE 0 [int8]       build a binary (or int8) store of 1M random unit
 *                                        384-d rows
 *   /tmp/lb 0 STORE 2 600 R              600 searches, --rescore R (under perf record)
 *   /tmp/lb 0 STORE 4 300 32             the checked and unchecked compact scan of STORE's
 *                                        codes (format 4: one LMDB value a vector block) in
 *                                        the map, copied contiguous, and regrouped 32 blocks
 *                                        a checksum, round robin, CPU time
 *   /tmp/lb 1 STORE 6 300 [nohuge]       the int8 compact scan (format 4/5 values, one an f32
 *                                        block) in the map and copied contiguous (in huge
 *                                        pages unless nohuge), checked and unchecked, wall
 *                                        and CPU time
 *   /tmp/lb 0 OLD 5 NEW 200              store_search_rescore raw and default, two stores
 *                                        (format 4 and 5) interleaved query by query */
#include "scan.h"
#include "store.h"
#include "threadpool.h"
#include <lmdb.h>
#include <xxhash.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/resource.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static double cpu(void) { struct rusage u; getrusage(RUSAGE_SELF, &u); return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6; }
static uint64_t rs = 0x9E3779B97F4A7C15ULL;
static float frand(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (float)((rs >> 40) * (1.0 / 16777216.0)) * 2 - 1; }
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
#define NQ 40
typedef struct { double w[NQ], c[NQ]; } tm;
static void rep(const char *name, tm *t) { qsort(t->w, NQ, 8, cmpd); qsort(t->c, NQ, 8, cmpd); printf("%-40s median %.3f ms min %.3f cpu %.3f\n", name, t->w[NQ/2]*1e3, t->w[0]*1e3, t->c[NQ/2]*1e3); }
int main(int argc, char **argv)
{
	long n = atol(argv[1]); const char *path = argv[2]; int mode = atoi(argv[3]);
	int dim = 384; emb_err e = {0}; store *s;
	threadpool *pool = threadpool_create(2);
	if (mode == 0) {
		if (store_open(path, STORE_CREATE, &s, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
		store_model m = {0}; strcpy(m.name, "random"); strcpy(m.sha256, "0"); strcpy(m.pooling, "mean"); m.dim = dim; m.normalized = 1; m.max_tokens = 256;
		if (store_bind_model(s, &m, &e) || store_set_vtype(s, argc > 4 && !strcmp(argv[4], "int8") ? QUANT_INT8 : QUANT_BINARY, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
		enum { B = 20000 };
		store_op *ops = calloc(B, sizeof *ops); char (*ids)[16] = malloc(16 * B); float *v = malloc(sizeof(float) * B * dim);
		for (long done = 0; done < n;) {
			int b = n - done < B ? (int)(n - done) : B;
			for (int i = 0; i < b; i++) {
				float *x = v + (size_t)i * dim, ss = 0;
				for (int j = 0; j < dim; j++) { x[j] = frand(); ss += x[j] * x[j]; }
				for (int j = 0; j < dim; j++) x[j] /= sqrtf(ss);
				snprintf(ids[i], 16, "r%ld", done + i);
				ops[i] = (store_op){STORE_OP_PUT, {.id = ids[i], .id_len = strlen(ids[i]), .text = "", .nwin = 1, .vecs = v + (size_t)i * dim}};
			}
			if (store_apply(s, ops, b, NULL, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
			done += b;
		}
		store_close(s); return 0;
	}
	if (mode == 5) { /* A/B: argv[2] vs argv[4], raw and rescored, interleaved */
		store *s2[2]; store_snapshot *sn[2]; const char *pp[2] = {argv[2], argv[4]}; int it = atoi(argv[5]);
		for (int x = 0; x < 2; x++) { if (store_open(pp[x], STORE_READONLY, &s2[x], &e) || store_snapshot_begin(s2[x], &sn[x], &e)) { fprintf(stderr, "%s\n", e.msg); return 1; } }
		static double cw[4][2000], ww[4][2000]; float qq[384]; store_hit hh[10]; int nn;
		for (int r = -2; r < it; r++) { for (int j = 0; j < dim; j++) qq[j] = frand(); for (int v = 0; v < 4; v++) {
			double c0 = cpu(), w0 = now(); if (store_search_rescore(sn[v % 2], qq, 10, v < 2 ? 0 : -1, pool, hh, &nn, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
			if (r >= 0) { cw[v][r] = cpu() - c0; ww[v][r] = now() - w0; } } }
		const char *nm[4] = {"A raw", "B raw", "A rescore", "B rescore"};
		for (int v = 0; v < 4; v++) { qsort(cw[v], it, 8, cmpd); qsort(ww[v], it, 8, cmpd); printf("%-10s wall median %.3f min %.3f | cpu median %.3f p10 %.3f\n", nm[v], ww[v][it/2]*1e3, ww[v][0]*1e3, cw[v][it/2]*1e3, cw[v][it/10]*1e3); }
		return 0; }
	if (store_open(path, STORE_READONLY, &s, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
	store_snapshot *snap; store_snapshot_begin(s, &snap, &e);
	if (mode == 2) { float qq[384]; store_hit hh[10]; int nn; for (int it = 0; it < atoi(argv[4]); it++) { for (int j = 0; j < dim; j++) qq[j] = frand(); store_search_rescore(snap, qq, 10, atoi(argv[5]), pool, hh, &nn, &e); } return 0; }
	float q[NQ+2][384];
	for (int r = 0; r < NQ+2; r++) for (int j = 0; j < dim; j++) q[r][j] = frand();
	store_hit hits[10]; int nh;
	tm traw = {0}, tres = {0}, twalk = {0}, tmap = {0}, tmapn = {0}, tcont = {0}, tcontn = {0};
	/* separate env for raw pointers */
	MDB_env *env; mdb_env_create(&env); mdb_env_set_maxdbs(env, 16); mdb_env_set_mapsize(env, 1ULL<<36);
	if (mdb_env_open(env, store_dir(s), MDB_RDONLY | MDB_NOLOCK, 0644)) { fprintf(stderr, "env\n"); return 1; }
	MDB_txn *txn; mdb_txn_begin(env, NULL, MDB_RDONLY, &txn); MDB_dbi dbi; if (mdb_dbi_open(txn, "cvectors", MDB_INTEGERKEY, &dbi)) { fprintf(stderr,"dbi\n"); return 1; }
	size_t nb = (n + 127) / 128; scan_block *bl = calloc(nb, sizeof *bl), *bc = calloc(nb, sizeof *bc);
	size_t rowb = 48;
	uint8_t *cont = aligned_alloc(1 << 21, ((nb * 7200) + (1<<21)) & ~((size_t)(1<<21)-1)); madvise(cont, nb * 7200, MADV_HUGEPAGE);
	size_t off = 0;
	uint8_t qb[48];
	if (mode == 6) { /* int8 (format 4/5 values): in the map, copied contiguous; checked, unchecked */
		MDB_cursor *cur; mdb_cursor_open(txn, dbi, &cur); MDB_val k, v; size_t cnt = 0, tot = 0;
		for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) { cnt++; tot += (v.mv_size + 63) & ~(size_t)63; }
		scan_block *ml = calloc(cnt, sizeof *ml), *cl = calloc(cnt, sizeof *cl);
		size_t cap = (tot + (1 << 21)) & ~((size_t)(1 << 21) - 1); uint8_t *buf = aligned_alloc(1 << 21, cap);
		madvise(buf, cap, argc > 5 && !strcmp(argv[5], "nohuge") ? MADV_NOHUGEPAGE : MADV_HUGEPAGE);
		size_t i = 0, o = 0, head = (size_t)dim * 4;
		for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), i++) {
			uint32_t b; memcpy(&b, k.mv_data, 4); uint32_t nr = (uint32_t)((v.mv_size - 16 - head) / (dim + 8));
			ml[i] = (scan_block){.nrows = nr, .first_row = b * 128, .seed = XXH3_64bits(&b, 4), .codes = (const uint8_t *)v.mv_data + head,
					     .scales = v.mv_data, .sum_data = v.mv_data, .sum_len = head + (size_t)nr * dim};
			memcpy(buf + o, v.mv_data, v.mv_size); cl[i] = ml[i]; cl[i].codes = buf + o + head; cl[i].scales = (const float *)(buf + o); cl[i].sum_data = buf + o;
			o += (v.mv_size + 63) & ~(size_t)63; }
		int it = atoi(argv[4]); static double cw[4][2000], ww[4][2000]; scan_hit sh[100]; int got;
		const char *nm[4] = {"map checked", "contig checked", "map unchecked", "contig unchecked"};
		for (int r = 0; r < it; r++) for (int vv = 0; vv < 4; vv++) {
			float qq[384], ss = 0; for (int j = 0; j < dim; j++) { qq[j] = frand(); ss += qq[j] * qq[j]; } for (int j = 0; j < dim; j++) qq[j] /= sqrtf(ss);
			scan_cquery cq = {.kind = QUANT_INT8, .dim = dim, .qf = qq}; scan_guard g = {.checksums = 1};
			double c0 = cpu(), w0 = now();
			if (scan_topk_compact(vv % 2 ? cl : ml, cnt, &cq, 100, pool, vv < 2 ? &g : NULL, sh, &got, &e)) { printf("fail %d %s\n", vv, e.msg); return 1; }
			cw[vv][r] = cpu() - c0; ww[vv][r] = now() - w0; }
		printf("%zu int8 blocks, %.1f MB\n", cnt, o / 1e6);
		for (int vv = 0; vv < 4; vv++) { qsort(cw[vv], it, 8, cmpd); qsort(ww[vv], it, 8, cmpd); printf("%-18s wall median %.3f ms min %.3f | cpu median %.3f\n", nm[vv], ww[vv][it/2]*1e3, ww[vv][0]*1e3, cw[vv][it/2]*1e3); }
		return 0;
	}
	if (mode == 4) {
		MDB_cursor *cur; mdb_cursor_open(txn, dbi, &cur); MDB_val k, v; size_t i = 0;
		for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), i++) {
			uint32_t b; memcpy(&b, k.mv_data, 4);
			bl[i].nrows = (v.mv_size - 16) / 56; bl[i].first_row = b * 128; bl[i].seed = XXH3_64bits(&b, 4);
			bl[i].codes = v.mv_data; bl[i].sum_data = v.mv_data; bl[i].sum_len = bl[i].nrows * rowb;
			bc[i] = bl[i]; memcpy(cont + off, v.mv_data, bl[i].sum_len + 8); bc[i].codes = cont + off; bc[i].sum_data = cont + off; off += bl[i].sum_len + 8;
		}
		/* superblocks: G blocks in one checksum */
		int G = atoi(argv[5]); size_t nsb = (nb + G - 1) / G; scan_block *bs = calloc(nsb, sizeof *bs);
		uint8_t *sup = aligned_alloc(1 << 21, ((nb * 7200) + (1<<21)) & ~((size_t)(1<<21)-1)); madvise(sup, nb * 7200, MADV_HUGEPAGE); size_t so = 0;
		for (size_t j = 0; j < nsb; j++) { bs[j].first_row = j * G * 128; bs[j].seed = 7; bs[j].codes = sup + so; bs[j].sum_data = sup + so;
			for (size_t x = j * G; x < nb && x < (j + 1) * G; x++) { memcpy(sup + so, bl[x].codes, bl[x].nrows * 48); so += bl[x].nrows * 48; bs[j].nrows += bl[x].nrows; }
			bs[j].sum_len = bs[j].nrows * 48; uint64_t h = XXH3_64bits_withSeed(bs[j].sum_data, bs[j].sum_len, 7); memcpy(sup + so, &h, 8); so += 8; }
		int it = atoi(argv[4]); static double cw[6][2000]; scan_hit sh[100]; int got; uint8_t qb[48];
		const char *nm[6] = {"map checked", "contig checked", "super checked", "map unchecked", "contig unchecked", "super unchecked"};
		for (int r = 0; r < it; r++) for (int vv = 0; vv < 6; vv++) {
			float qq[384]; for (int j = 0; j < dim; j++) qq[j] = frand(); quant_bin_encode(qq, dim, qb);
			scan_cquery cq = {.kind = QUANT_BINARY, .dim = dim, .bits = qb}; scan_guard g = {.checksums = 1};
			scan_block *B = vv % 3 == 0 ? bl : vv % 3 == 1 ? bc : bs; size_t N = vv % 3 == 2 ? nsb : nb;
			double c0 = cpu(); if (scan_topk_compact(B, N, &cq, 100, pool, vv < 3 ? &g : NULL, sh, &got, &e)) { printf("fail %d %s\n", vv, e.msg); return 1; } cw[vv][r] = cpu() - c0; }
		for (int vv = 0; vv < 6; vv++) { qsort(cw[vv], it, 8, cmpd); printf("%-20s cpu median %.3f ms p25 %.3f p10 %.3f\n", nm[vv], cw[vv][it/2]*1e3, cw[vv][it/4]*1e3, cw[vv][it/10]*1e3); }
		return 0;
	}
	fprintf(stderr, "modes: 0 build, 2 profile loop, 4 layouts, 5 A/B\n");
	return 2;
}
