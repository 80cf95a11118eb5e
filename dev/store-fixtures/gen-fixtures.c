/* gen-fixtures.c — writes tests/data/store-formatF-int8 and store-formatF-binary: stores in the
 * format of the build it is linked with, kept so that tests/test_quant proves later programs
 * still read each old format and upgrade it on a write. Each pair was written once, by a
 * checkout of the commit that still wrote that format:
 *   format 3  86214d4  int8 codes with the store-wide scales of the first transaction,
 *                      binary sign bits, no per-row checksums
 *   format 4  533500d  per-block int8 scales, row checksums after the codes, one compact
 *                      block per vector block for both types
 *   format 5  868e323  binary codes grouped 32 vector blocks a value, int8 as format 4
 * On such a checkout (its build/libengine.a):
 *   cc -std=c17 -O2 -march=x86-64-v3 -D_GNU_SOURCE -Iengine dev/store-fixtures/gen-fixtures.c \
 *      build/libengine.a -llmdb -lzstd -lutf8proc -ljansson -ldl -lm -pthread
 *   ./a.out F tests/data      (refuses when the build writes another format than F)
 * then keep only data.mdb of each store directory (store_open makes a link to a versioned
 * directory). 140 rows of 384-d (two vector blocks: 128 + 12), documents "d0".."d139", one
 * window each, row i of document "di" = fixture_vec(i) (the same xorshift as
 * tests/test_quant.c), written as 40 rows in a first transaction, then 100 (in format 3 the
 * scales came from the first 40 only; later rows reach past them). */
#include "store.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fixture_vec(int i, float *x)
{
	uint64_t r = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(i + 1) * 0xBF58476D1CE4E5B9ULL;
	double ss = 0;
	for (int d = 0; d < 384; d++) {
		r ^= r << 13; r ^= r >> 7; r ^= r << 17;
		x[d] = (float)((r >> 40) * (1.0 / 16777216.0)) * 2 - 1;
		if (i >= 40)
			x[d] *= 1.5f; /* later rows reach past the first transaction's scales */
		ss += (double)x[d] * x[d];
	}
	for (int d = 0; d < 384; d++)
		x[d] = (float)(x[d] / sqrt(ss));
}

int main(int argc, char **argv)
{
	if (argc != 3 || atoi(argv[1]) != STORE_FORMAT_VERSION) {
		fprintf(stderr, "usage: gen-fixtures F DIR, F this build's store format (%d)\n", STORE_FORMAT_VERSION);
		return 2;
	}
	const char *names[2] = {"int8", "binary"};
	for (int t = 0; t < 2; t++) {
		char path[1024];
		snprintf(path, sizeof path, "%s/store-format%s-%s", argv[2], argv[1], names[t]);
		emb_err e = {0};
		store *s;
		if (store_open(path, STORE_CREATE, &s, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
		store_model m = {0};
		strcpy(m.name, "fixture"); strcpy(m.sha256, "0"); strcpy(m.pooling, "mean");
		m.dim = 384; m.normalized = 1; m.max_tokens = 256;
		if (store_bind_model(s, &m, &e) || store_set_vtype(s, t ? QUANT_BINARY : QUANT_INT8, &e)) {
			fprintf(stderr, "%s\n", e.msg); return 1;
		}
		static float v[140][384];
		static char ids[140][8];
		store_op ops[140];
		for (int i = 0; i < 140; i++) {
			fixture_vec(i, v[i]);
			snprintf(ids[i], sizeof ids[i], "d%d", i);
			ops[i] = (store_op){STORE_OP_PUT, {.id = ids[i], .id_len = strlen(ids[i]), .text = "",
							   .nwin = 1, .vecs = v[i]}};
		}
		if (store_apply(s, ops, 40, NULL, &e) || store_apply(s, ops + 40, 100, NULL, &e)) {
			fprintf(stderr, "%s\n", e.msg); return 1;
		}
		store_close(s);
	}
	return 0;
}
