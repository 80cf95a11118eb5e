/* tool_shard_synth — the stores behind docs/scale-out.md's cost of the merge at scale, which
 * embedding a million documents on this machine's CPU cannot provide: one store of D synthetic
 * documents (pseudo-random 384-d vectors, a short text, ids "d%08d" in order) and the same
 * documents split into N shard stores by store_shard_of, each recording its shard, all bound
 * to the model identity of an existing store (--like), so that bin/search (which embeds the
 * queries with that model) searches them: scripts/bench-shards then times one store against
 * the shard set. Not a test.
 *
 *   tool_shard_synth --like STORE --docs D --shards N --out DIR
 *
 * Writes DIR/all.store, DIR/set/gen-000001/shard-I.store and DIR/set/manifest.json (the
 * format python/shardset.py writes). DIR/all.store and DIR/set must not exist. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { TXN = 16384 };

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static float next_f(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((double)(rng >> 11) / (double)(1ULL << 53) * 2.0 - 1.0);
}

static int fail(const char *what, const emb_err *e)
{
	fprintf(stderr, "tool_shard_synth: %s: %s\n", what, e->msg);
	return 1;
}

int main(int argc, char **argv)
{
	const char *like = NULL, *out = NULL;
	long ndocs = 0;
	int nsh = 0;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--like")) like = argv[i + 1];
		else if (!strcmp(argv[i], "--out")) out = argv[i + 1];
		else if (!strcmp(argv[i], "--docs")) ndocs = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--shards")) nsh = atoi(argv[i + 1]);
	}
	if (!like || !out || ndocs < 1 || nsh < 1 || nsh > 1024) {
		fprintf(stderr, "usage: tool_shard_synth --like STORE --docs D --shards N --out DIR\n");
		return 2;
	}
	emb_err e = {0};
	store *ls;
	store_model m;
	if (store_open(like, STORE_READONLY, &ls, &e) || store_model_get(ls, &m, &e))
		return fail(like, &e);
	store_close(ls);
	char path[4096];
	mkdir(out, 0777);
	snprintf(path, sizeof path, "%s/set", out);
	mkdir(path, 0777);
	snprintf(path, sizeof path, "%s/set/gen-000001", out);
	mkdir(path, 0777);
	store **st = calloc((size_t)nsh + 1, sizeof *st);
	for (int i = 0; i <= nsh; i++) {
		if (i == nsh)
			snprintf(path, sizeof path, "%s/all.store", out);
		else
			snprintf(path, sizeof path, "%s/set/gen-000001/shard-%d.store", out, i);
		if (store_open(path, STORE_CREATE, &st[i], &e) || store_bind_model(st[i], &m, &e) ||
		    (i < nsh && store_set_shard(st[i], i, nsh, &e)))
			return fail(path, &e);
	}
	int dim = m.dim;
	store_op *ops = calloc(TXN, sizeof *ops), *sub = calloc(TXN, sizeof *sub);
	char (*ids)[16] = calloc(TXN, sizeof *ids), (*texts)[64] = calloc(TXN, sizeof *texts);
	float *vecs = malloc((size_t)TXN * dim * sizeof *vecs);
	uint32_t *ranges = malloc((size_t)TXN * 2 * sizeof *ranges);
	if (!ops || !sub || !ids || !texts || !vecs || !ranges) {
		fprintf(stderr, "tool_shard_synth: out of memory\n");
		return 1;
	}
	for (long done = 0; done < ndocs;) {
		int n = (int)(ndocs - done < TXN ? ndocs - done : TXN);
		for (int j = 0; j < n; j++) {
			int il = snprintf(ids[j], sizeof ids[j], "d%08ld", done + j);
			int tl = snprintf(texts[j], sizeof texts[j], "synthetic document %ld", done + j);
			for (int d = 0; d < dim; d++)
				vecs[(size_t)j * dim + d] = next_f();
			ranges[2 * j] = 0;
			ranges[2 * j + 1] = (uint32_t)tl;
			store_doc sd = {.id = ids[j], .id_len = (size_t)il, .title = "", .text = texts[j],
					.text_len = (size_t)tl, .meta = "", .nwin = 1,
					.vecs = vecs + (size_t)j * dim, .win_range = ranges + 2 * j};
			const void *parts[] = {texts[j]};
			size_t lens[] = {(size_t)tl};
			store_hash(parts, lens, 1, sd.hash);
			ops[j] = (store_op){STORE_OP_PUT, sd};
		}
		if (store_apply(st[nsh], ops, n, NULL, &e))
			return fail("all.store", &e);
		for (int i = 0; i < nsh; i++) {
			int k = 0;
			for (int j = 0; j < n; j++)
				if (store_shard_of(ops[j].doc.id, ops[j].doc.id_len, nsh) == i)
					sub[k++] = ops[j];
			if (k && store_apply(st[i], sub, k, NULL, &e))
				return fail("shard", &e);
		}
		done += n;
	}
	for (int i = 0; i <= nsh; i++)
		store_close(st[i]);
	snprintf(path, sizeof path, "%s/set/manifest.json", out);
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		return 1;
	}
	fprintf(f, "{\"format\": \"embedstore-shardset\", \"version\": 1, \"generation\": 1, \"model\": "
		   "{\"name\": \"%s\", \"sha256\": \"%s\", \"dim\": %d}, \"stores\": [", m.name, m.sha256, dim);
	for (int i = 0; i < nsh; i++)
		fprintf(f, "%s\"gen-000001/shard-%d.store\"", i ? ", " : "", i);
	fprintf(f, "]}\n");
	fclose(f);
	printf("tool_shard_synth: %ld documents in %s/all.store and in %d shards, %s/set/manifest.json\n",
	       ndocs, out, nsh, out);
	free(ops);
	free(sub);
	free(ids);
	free(texts);
	free(vecs);
	free(ranges);
	free(st);
	return 0;
}
