/* gen-format5.c — writes tests/data/store-format5-int8 and store-format5-binary: stores of
 * format 5 (int8 codes with per-block scales, one compact block per f32 block; binary sign
 * bits grouped 32 f32 blocks a compact value), kept so that tests/test_quant proves later
 * programs still read them and upgrade them on a write (format 6 groups an int8 store's
 * compact blocks too). Built and run once against commit 868e323 (format 5):
 *   cc -std=c17 -O2 -march=x86-64-v3 -D_GNU_SOURCE -Iengine dev/store-fixtures/gen-format5.c \
 *      build/libengine.a -llmdb -lzstd -lutf8proc -ljansson -ldl -lm -pthread
 *   ./a.out tests/data
 * 140 rows of 384-d (two vector blocks: 128 + 12), documents "d0".."d139", one window each,
 * row i of document "di" = fixture_vec(i) (the same xorshift as tests/test_quant.c), written
 * as 40 rows in a first transaction, then 100 (block 0 written by both). */
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
	const char *names[2] = {"int8", "binary"};
	for (int t = 0; t < 2; t++) {
		char path[1024];
		snprintf(path, sizeof path, "%s/store-format5-%s", argv[1], names[t]);
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
