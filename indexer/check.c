/* check.c — indexer --check: verifies a whole store and says what was verified; indexer
 * --info: what a store is (model, shard, counts) as one JSON line, for tools that assemble
 * shard sets (python/shardset.py) without reading LMDB themselves.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "indexer.h"

/* --check: reads the whole store and verifies what store_check lists; one line saying what
 * was verified, or the first damage found (exit 1). */
int check_store(const char *path)
{
	store *s;
	emb_err e = {0};
	if (store_open(path, STORE_READONLY, &s, &e)) {
		fprintf(stderr, "indexer: check failed: %s\n", e.msg);
		return 1;
	}
	store_snapshot *snap;
	store_check_report r;
	int rc = store_snapshot_begin(s, &snap, &e);
	if (!rc)
		rc = store_check(snap, &r, &e);
	store_snapshot_end(snap);
	store_stats st;
	store_model m;
	if (!rc)
		rc = store_stats_get(s, &st, &e);
	if (rc) {
		char *self = strstr(e.msg, "; run indexer --check"); /* the advice is for the others */
		if (self)
			*self = 0;
		fprintf(stderr, "indexer: check failed: %s%s\n", e.msg,
			strstr(e.msg, "is damaged") ? "; restore it from a backup or rebuild it (--rebuild)" : "");
		store_close(s);
		return 1;
	}
	int hm = store_model_get(s, &m, NULL) == 0;
	char sums[96];
	if (r.format >= 2)
		snprintf(sums, sizeof sums, "%llu checksums", (unsigned long long)r.checksums);
	else
		snprintf(sums, sizeof sums, "format %d has no checksums (--rebuild adds them)", r.format);
	/* format 6 groups 4 (int8) or 32 (binary) vector blocks a compact value */
	char cb[128];
	if (r.cblocks == r.blocks)
		snprintf(cb, sizeof cb, " codes in as many compact blocks (equal to the vectors' codes)");
	else
		snprintf(cb, sizeof cb, " codes in %llu compact values of several vector blocks (equal to the vectors' codes)",
			 (unsigned long long)r.cblocks);
	printf("store %s: ok; %llu documents, %llu rows, dim %d, %d rows a block, model %s, %.1f MB "
	       "used of a %.0f MB map, created %s, updated %s; verified: %s, %llu documents "
	       "(%.1f MB decompressed, lengths agree), %llu vectors in %llu blocks (finite, unit "
	       "length)%s%s%s, every row owned by the document listing it, counts\n",
	       store_dir(s), (unsigned long long)st.docs, (unsigned long long)st.rows, st.dim,
	       st.block_rows, hm ? m.name : "(none)", st.file_size / 1e6, st.map_size / 1e6,
	       st.created, st.updated, sums, (unsigned long long)r.docs, r.text_bytes / 1e6,
	       (unsigned long long)r.rows, (unsigned long long)r.blocks,
	       st.vtype != QUANT_F32 ? ", their " : "", st.vtype != QUANT_F32 ? quant_name(st.vtype) : "",
	       st.vtype != QUANT_F32 ? cb : "");
	store_close(s);
	return 0;
}

int info_store(const char *path)
{
	store *s = NULL;
	emb_err e = {0};
	store_model m;
	store_stats st;
	int si = 0, sn = 0;
	if (store_open(path, STORE_READONLY, &s, &e) || store_model_get(s, &m, &e) ||
	    store_stats_get(s, &st, &e) || store_shard_get(s, &si, &sn, &e)) {
		fprintf(stderr, "indexer: %s\n", e.msg);
		store_close(s);
		return 1;
	}
	json_t *j = json_pack("{s:s, s:{s:s, s:s, s:i, s:s, s:b, s:b, s:i}, s:o, s:I, s:I, s:s, s:I}",
			      "store", store_dir(s), "model", "name", m.name, "sha256", m.sha256,
			      "dim", m.dim, "pooling", m.pooling, "normalized", m.normalized,
			      "needs_prefix", m.needs_prefix, "max_tokens", m.max_tokens,
			      "shard", sn ? json_pack("[i, i]", si, sn) : json_null(),
			      "docs", (json_int_t)st.docs, "rows", (json_int_t)st.rows,
			      "vectors", quant_name(st.vtype), "file_bytes", (json_int_t)st.file_size);
	char *out = j ? json_dumps(j, JSON_COMPACT) : NULL;
	if (out)
		printf("%s\n", out);
	free(out);
	json_decref(j);
	store_close(s);
	return out ? 0 : 1;
}
