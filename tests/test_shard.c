/* test_shard — the shard rule and a store's shard, through the engine's API: store_id_hash
 * is FNV-1a 64 (the published test vectors), store_shard_of spreads ids over every shard;
 * store_set_shard records a shard only in a store without documents, is a no-op for the same
 * shard and refuses another, or a read-only handle; store_check finds a document that is not
 * in the store's shard (the engine does not refuse writing one: the indexer filters). */
#include "store.h"
#include "testutil.h"

static void put(store *s, const char *id, emb_err *e, int *rc)
{
	float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	uint32_t range[2] = {0, 4};
	store_doc d = {.id = id, .id_len = strlen(id), .title = "", .text = "text", .text_len = 4,
		       .meta = "", .nwin = 1, .vecs = v, .win_range = range};
	const void *parts[] = {id};
	size_t lens[] = {strlen(id)};
	store_hash(parts, lens, 1, d.hash);
	store_op op = {STORE_OP_PUT, d};
	*rc = store_apply(s, &op, 1, NULL, e);
}

int main(void)
{
	/* FNV-1a 64 test vectors (Fowler/Noll/Vo). */
	CHECK(store_id_hash("", 0) == 0xcbf29ce484222325ULL, "empty");
	CHECK(store_id_hash("a", 1) == 0xaf63dc4c8601ec8cULL, "a");
	CHECK(store_id_hash("foobar", 6) == 0x85944171f73967e8ULL, "foobar");
	int count[7] = {0};
	char id[32];
	for (int i = 0; i < 7000; i++) {
		int n = snprintf(id, sizeof id, "doc-%d", i);
		int sh = store_shard_of(id, (size_t)n, 7);
		CHECK(sh >= 0 && sh < 7, "shard %d", sh);
		if (sh >= 0 && sh < 7)
			count[sh]++;
		CHECK(store_shard_of(id, (size_t)n, 1) == 0, "one shard");
	}
	for (int i = 0; i < 7; i++)
		CHECK(count[i] > 850 && count[i] < 1150, "shard %d holds %d of 7000", i, count[i]);

	char tmp[256], path[512];
	test_tmpdir(tmp);
	snprintf(path, sizeof path, "%s/s.store", tmp);
	emb_err e = {0};
	store *s = NULL;
	store_model m = {.dim = 8, .normalized = 1, .max_tokens = 16};
	snprintf(m.name, sizeof m.name, "test");
	snprintf(m.sha256, sizeof m.sha256, "%064d", 7);
	snprintf(m.pooling, sizeof m.pooling, "mean");
	int rc = store_open(path, STORE_CREATE, &s, &e) || store_bind_model(s, &m, &e);
	CHECK(rc == 0, "open: %s", e.msg);
	int si = -1, sn = -1;
	CHECK(store_shard_get(s, &si, &sn, &e) == 0 && si == 0 && sn == 0, "no shard yet: %d/%d", si, sn);
	CHECK(store_set_shard(s, 3, 3, &e) == EMB_EINVAL, "3/3 accepted");
	CHECK(store_set_shard(s, 1, 3, &e) == 0, "set 1/3: %s", e.msg);
	CHECK(store_set_shard(s, 1, 3, &e) == 0, "same again: %s", e.msg);
	CHECK(store_shard_get(s, &si, &sn, &e) == 0 && si == 1 && sn == 3, "got %d/%d", si, sn);
	CHECK(store_set_shard(s, 2, 3, &e) == EMB_ESTORE && strstr(e.msg, "is shard 1/3, not 2/3"), "another: %s", e.msg);

	/* A document of the shard passes --check; one of another shard is found. */
	const char *mine = NULL, *other = NULL;
	static char a[32], b[32];
	for (int i = 0; !mine || !other; i++) {
		int n = snprintf(id, sizeof id, "d%d", i);
		int sh = store_shard_of(id, (size_t)n, 3);
		if (sh == 1 && !mine)
			mine = strcpy(a, id);
		else if (sh != 1 && !other)
			other = strcpy(b, id);
	}
	put(s, mine, &e, &rc);
	CHECK(rc == 0, "put: %s", e.msg);
	store_snapshot *snap = NULL;
	CHECK(store_snapshot_begin(s, &snap, &e) == 0 && store_verify(snap, &e) == 0, "check: %s", e.msg);
	store_snapshot_end(snap);
	put(s, other, &e, &rc);
	CHECK(rc == 0, "put: %s", e.msg);
	snap = NULL;
	CHECK(store_snapshot_begin(s, &snap, &e) == 0, "snapshot: %s", e.msg);
	rc = store_verify(snap, &e);
	CHECK(rc == EMB_ESTORE && strstr(e.msg, "belongs to shard") && strstr(e.msg, other),
	      "a document of another shard: %d %s", rc, e.msg);
	store_snapshot_end(snap);
	store_close(s);

	/* A store with documents and no shard refuses one; a read-only handle refuses too. */
	snprintf(path, sizeof path, "%s/t.store", tmp);
	rc = store_open(path, STORE_CREATE, &s, &e) || store_bind_model(s, &m, &e);
	CHECK(rc == 0, "open: %s", e.msg);
	put(s, "x", &e, &rc);
	CHECK(store_set_shard(s, 0, 2, &e) == EMB_ESTORE && strstr(e.msg, "holds documents and is not a shard"),
	      "documents, no shard: %s", e.msg);
	store_close(s);
	CHECK(store_open(path, STORE_READONLY, &s, &e) == 0, "reopen: %s", e.msg);
	CHECK(store_set_shard(s, 0, 2, &e) == EMB_ESTORE, "read-only: %s", e.msg);
	store_close(s);

	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmp);
	if (test_failures) {
		fprintf(stderr, "%d check(s) failed\n", test_failures);
		return 1;
	}
	printf("test_shard: all checks passed\n");
	return 0;
}
