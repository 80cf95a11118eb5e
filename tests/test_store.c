/* test_store.c — the vector store without a model: round trips, upserts, deletes that move
 * rows (swap with last), prune, exact search against brute force, map growth, a disk that
 * fills up mid-batch, and the atomic rebuild swap; puts packed ahead by store_doc_pack
 * against the same puts compressed by store_apply (identical tables), and packed values that
 * do not belong to their op (refused). Every step ends with store_verify, which
 * checks that rows are dense and every row belongs to exactly the document that lists it. */
#include "store.h"
#include "scan.h"

#include <errno.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DIM 24
static int failures;

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); failures++; } } while (0)
#define OK(call) do { emb_err e_ = {0}; int rc_ = (call); if (rc_) { fprintf(stderr, "%s:%d: %s -> %d: %s\n", __FILE__, __LINE__, #call, rc_, e_.msg); exit(1); } } while (0)
#define E (&e_)

static uint64_t rng = 88172645463325252ULL;
static float frand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}

/* A document's vectors are a function of (id, version, window) so they can be recomputed. */
static void doc_vecs(int id, int version, int nwin, float *out)
{
	uint64_t save = rng;
	rng = (uint64_t)id * 2654435761u + (uint64_t)version * 97 + 1;
	for (int i = 0; i < nwin * DIM; i++)
		out[i] = frand();
	rng = save;
}

static store_model model(void)
{
	store_model m = {0};
	snprintf(m.name, sizeof m.name, "test-model");
	snprintf(m.sha256, sizeof m.sha256, "%064d", 7);
	m.dim = DIM;
	snprintf(m.pooling, sizeof m.pooling, "mean");
	m.normalized = 1;
	m.max_tokens = 256;
	return m;
}

static void put(store *s, int id, int version, int nwin)
{
	char ids[32], text[64];
	snprintf(ids, sizeof ids, "doc-%d", id);
	snprintf(text, sizeof text, "text of %d version %d", id, version);
	float *v = malloc(sizeof(float) * DIM * nwin);
	uint32_t *rg = malloc(sizeof(uint32_t) * 2 * nwin);
	doc_vecs(id, version, nwin, v);
	for (int w = 0; w < nwin; w++) {
		rg[2 * w] = (uint32_t)w;
		rg[2 * w + 1] = (uint32_t)strlen(text);
	}
	store_op op = {STORE_OP_PUT, {.id = ids, .id_len = strlen(ids), .title = "T", .title_len = 1,
				      .text = text, .text_len = strlen(text), .meta = "{}", .meta_len = 2,
				      .nwin = nwin, .vecs = v, .win_range = rg}};
	const void *parts[] = {text};
	size_t lens[] = {strlen(text)};
	store_hash(parts, lens, 1, op.doc.hash);
	OK(store_apply(s, &op, 1, NULL, E));
	free(v);
	free(rg);
}

static void del(store *s, int id)
{
	char ids[32];
	snprintf(ids, sizeof ids, "doc-%d", id);
	store_op op = {STORE_OP_DELETE, {.id = ids, .id_len = strlen(ids)}};
	OK(store_apply(s, &op, 1, NULL, E));
}

static void verify(store *s)
{
	store_snapshot *snap;
	OK(store_snapshot_begin(s, &snap, E));
	emb_err e = {0};
	int rc = store_verify(snap, &e);
	if (rc) {
		fprintf(stderr, "verify failed: %s\n", e.msg);
		failures++;
	}
	store_snapshot_end(snap);
}

/* Model of the expected contents: version (0 = absent) and windows per id. */
#define NDOC 300
static int ver[NDOC], nw[NDOC];

/* Brute force: best window per live document, compared with store_search. */
static void check_search(store *s, int k)
{
	float q[DIM];
	for (int i = 0; i < DIM; i++)
		q[i] = frand();
	float qn = 0;
	for (int i = 0; i < DIM; i++)
		qn += q[i] * q[i];
	qn = sqrtf(qn);
	float best[NDOC];
	int live = 0;
	for (int d = 0; d < NDOC; d++) {
		best[d] = -INFINITY;
		if (!ver[d])
			continue;
		live++;
		float v[DIM * 8];
		doc_vecs(d, ver[d], nw[d], v);
		for (int w = 0; w < nw[d]; w++) {
			float dot = 0, nn = 0;
			for (int i = 0; i < DIM; i++) {
				dot += q[i] * v[w * DIM + i];
				nn += v[w * DIM + i] * v[w * DIM + i];
			}
			float c = dot / (qn * sqrtf(nn));
			if (c > best[d])
				best[d] = c;
		}
	}
	store_snapshot *snap;
	OK(store_snapshot_begin(s, &snap, E));
	store_hit hits[64];
	int n;
	OK(store_search(snap, q, k, NULL, hits, &n, E));
	CHECK(n == (live < k ? live : k));
	for (int i = 0; i < n; i++) {
		char idbuf[32];
		snprintf(idbuf, sizeof idbuf, "%.*s", (int)hits[i].id_len, hits[i].id);
		int id = atoi(idbuf + 4);
		CHECK(fabsf(best[id] - hits[i].score) < 1e-4f);
		/* nobody better was left out */
		int better = 0;
		for (int d = 0; d < NDOC; d++)
			if (ver[d] && best[d] > hits[i].score + 1e-4f)
				better++;
		CHECK(better <= i);
		for (int j = 0; j < i; j++)
			CHECK(!(hits[j].id_len == hits[i].id_len && !memcmp(hits[j].id, hits[i].id, hits[i].id_len)));
	}
	store_snapshot_end(snap);
}

static void test_scan_kernel(void)
{
	/* Blocks of uneven sizes, with threads: result equals a sorted brute force. */
	enum { N = 5000, D = 37 };
	float *v = malloc(sizeof(float) * N * D), q[D];
	for (int i = 0; i < N * D; i++)
		v[i] = frand();
	for (int i = 0; i < D; i++)
		q[i] = frand();
	scan_block b[3] = {{.vecs = v, .nrows = 1000, .first_row = 0}, {.vecs = v + 1000 * D, .nrows = 3, .first_row = 1000},
			    {.vecs = v + 1003 * D, .nrows = N - 1003, .first_row = 1003}};
	threadpool *pool = threadpool_create(3);
	scan_hit hits[50];
	int n;
	OK(scan_topk(b, 3, D, q, 50, pool, hits, &n, E));
	CHECK(n == 50);
	for (int i = 0; i < n; i++) {
		int better = 0;
		for (int r = 0; r < N; r++)
			if (scan_dot(q, v + (size_t)r * D, D) > hits[i].score + 1e-5f)
				better++;
		CHECK(better <= i);
		CHECK(fabsf(scan_dot(q, v + (size_t)hits[i].row * D, D) - hits[i].score) < 1e-4f);
	}
	free(v);

	/* Many small uneven blocks and enough rows for many tasks, so task boundaries fall
	 * inside blocks, on block edges, and in blocks of one row. */
	enum { N2 = 70001, D2 = 8 };
	float *w = malloc(sizeof(float) * N2 * D2), q2[D2];
	for (int i = 0; i < N2 * D2; i++)
		w[i] = frand();
	for (int i = 0; i < D2; i++)
		q2[i] = frand();
	scan_block *bl = malloc(sizeof *bl * N2);
	size_t nb = 0;
	uint32_t row = 0;
	while (row < N2) {
		uint32_t len = 1 + (uint32_t)((frand() + 1) * 150);
		if (row + len > N2)
			len = N2 - row;
		bl[nb++] = (scan_block){.vecs = w + (size_t)row * D2, .nrows = len, .first_row = row};
		row += len;
	}
	scan_hit h2[20];
	OK(scan_topk(bl, nb, D2, q2, 20, pool, h2, &n, E));
	CHECK(n == 20);
	float *all = malloc(sizeof(float) * N2);
	for (int r = 0; r < N2; r++)
		all[r] = scan_dot(q2, w + (size_t)r * D2, D2);
	for (int i = 0; i < n; i++) {
		int better = 0;
		for (int r = 0; r < N2; r++)
			better += all[r] > h2[i].score;
		CHECK(better == i); /* exactly the i-th best (random floats: no ties) */
		CHECK(all[h2[i].row] == h2[i].score);
	}
	free(all);
	free(bl);
	free(w);
	threadpool_destroy(pool);
}

/* ---- packed puts ----------------------------------------------------------------------
 * The same batches written twice, once compressed by store_apply and once packed ahead by
 * store_doc_pack on two threads, must give byte-identical tables (read back with LMDB
 * directly, not through the store), and a packed value that does not belong to its op must
 * be refused with nothing stored. */

#define PK_DOCS 1000
#define PK_BATCH 64
typedef struct pkdoc {
	char id[32], text[200], title[32], meta[40];
	float vecs[6 * DIM];
	uint32_t rg[12];
	store_packed packed;
} pkdoc;

/* Op i of batch b: mostly puts of ids spread over PK_DOCS/2 (so later batches update), with
 * a repeated id inside the batch (the later op wins), deletes and seen marks. */
static store_op pk_op(pkdoc *pd, int b, int i)
{
	int id = (b * 37 + i * 11) % (PK_DOCS / 2);
	if (i == PK_BATCH - 1)
		id = (b * 37) % (PK_DOCS / 2); /* the batch's first id again */
	snprintf(pd->id, sizeof pd->id, "pk-%d", id);
	if (i % 13 == 5)
		return (store_op){STORE_OP_DELETE, {.id = pd->id, .id_len = strlen(pd->id)}};
	if (i % 17 == 3)
		return (store_op){STORE_OP_SEEN, {.id = pd->id, .id_len = strlen(pd->id)}};
	int nwin = 1 + (b + i) % 6;
	int tl = snprintf(pd->text, sizeof pd->text, "text %d of batch %d: %.*s", id, b, (b * 7 + i) % 120,
			  "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
			  "incididunt ut labore et dolore magna aliqua");
	snprintf(pd->title, sizeof pd->title, "%s", i % 3 ? "title" : "");
	snprintf(pd->meta, sizeof pd->meta, "{\"b\":%d}", b);
	if (i % 19 == 7) /* an empty document: a zstd frame of nothing */
		tl = 0, pd->text[0] = pd->title[0] = pd->meta[0] = 0;
	doc_vecs(id, b, nwin, pd->vecs);
	for (int w = 0; w < nwin; w++) {
		pd->rg[2 * w] = (uint32_t)(w * tl / nwin);
		pd->rg[2 * w + 1] = (uint32_t)tl;
	}
	store_op op = {STORE_OP_PUT, {.id = pd->id, .id_len = strlen(pd->id), .title = pd->title,
				      .title_len = strlen(pd->title), .text = pd->text, .text_len = (size_t)tl,
				      .meta = pd->meta, .meta_len = strlen(pd->meta), .nwin = nwin,
				      .vecs = pd->vecs, .win_range = pd->rg}};
	const void *parts[] = {pd->text, pd->title};
	size_t lens[] = {(size_t)tl, strlen(pd->title)};
	store_hash(parts, lens, 2, op.doc.hash);
	return op;
}

typedef struct pkjob { store_op *ops; pkdoc *pd; int from, to, failed; } pkjob;
static void *pk_pack(void *arg)
{
	pkjob *j = arg;
	for (int i = j->from; i < j->to; i++) {
		if (j->ops[i].kind != STORE_OP_PUT)
			continue;
		emb_err e = {0};
		if (store_doc_pack(&j->ops[i].doc, &j->pd[i].packed, &e)) {
			fprintf(stderr, "store_doc_pack: %s\n", e.msg);
			j->failed = 1;
		}
		j->ops[i].doc.packed = &j->pd[i].packed;
	}
	return NULL;
}

static void pk_write(const char *path, int packed)
{
	store *s;
	OK(store_open(path, STORE_CREATE, &s, E));
	store_model m = model();
	OK(store_bind_model(s, &m, E));
	static pkdoc pd[PK_BATCH];
	store_op ops[PK_BATCH];
	for (int b = 0; b < PK_DOCS / PK_BATCH * 2; b++) {
		for (int i = 0; i < PK_BATCH; i++)
			ops[i] = pk_op(&pd[i], b, i);
		if (packed) {
			pthread_t t[2];
			pkjob j[2] = {{ops, pd, 0, PK_BATCH / 2, 0}, {ops, pd, PK_BATCH / 2, PK_BATCH, 0}};
			for (int k = 0; k < 2; k++)
				pthread_create(&t[k], NULL, pk_pack, &j[k]);
			for (int k = 0; k < 2; k++)
				pthread_join(t[k], NULL);
			CHECK(!j[0].failed && !j[1].failed);
			/* The writer must not need the texts of a packed document. */
			for (int i = 0; i < PK_BATCH; i++)
				if (ops[i].kind == STORE_OP_PUT)
					ops[i].doc.text = ops[i].doc.title = ops[i].doc.meta = NULL;
		}
		OK(store_apply(s, ops, PK_BATCH, NULL, E));
		for (int i = 0; i < PK_BATCH; i++)
			store_packed_free(&pd[i].packed);
		if (b % 8 == 0)
			verify(s);
	}
	verify(s);
	store_close(s);
}

/* Compares every table of the two stores' LMDB environments, key by key and byte by byte
 * (meta: all but the times and the checksum over them); returns the entries compared. */
static long pk_compare(const char *a, const char *b)
{
	MDB_env *env[2];
	MDB_txn *txn[2];
	const char *dirs[2] = {a, b};
	for (int k = 0; k < 2; k++) {
		char real[PATH_MAX];
		CHECK(realpath(dirs[k], real) != NULL);
		if (mdb_env_create(&env[k]) || mdb_env_set_maxdbs(env[k], 8) ||
		    mdb_env_open(env[k], real, MDB_RDONLY, 0644) ||
		    mdb_txn_begin(env[k], NULL, MDB_RDONLY, &txn[k])) {
			fprintf(stderr, "pk_compare: cannot open %s\n", real);
			exit(1);
		}
	}
	const char *tables[] = {"meta", "docs", "docrows", "rowmap", "vectors", "seen"};
	long compared = 0;
	for (int t = 0; t < 6; t++) {
		MDB_cursor *cur[2];
		for (int k = 0; k < 2; k++) {
			MDB_dbi dbi;
			if (mdb_dbi_open(txn[k], tables[t], 0, &dbi) || mdb_cursor_open(txn[k], dbi, &cur[k])) {
				fprintf(stderr, "pk_compare: no table %s\n", tables[t]);
				exit(1);
			}
		}
		MDB_val k0, v0, k1, v1;
		int r0 = mdb_cursor_get(cur[0], &k0, &v0, MDB_FIRST);
		int r1 = mdb_cursor_get(cur[1], &k1, &v1, MDB_FIRST);
		long n = 0;
		while (r0 == 0 && r1 == 0) {
			int same_key = k0.mv_size == k1.mv_size && !memcmp(k0.mv_data, k1.mv_data, k0.mv_size);
			CHECK(same_key);
			if (!same_key)
				break;
			int skip = t == 0 && (!strncmp(k0.mv_data, "created", k0.mv_size) ||
					      !strncmp(k0.mv_data, "updated", k0.mv_size) ||
					      !strncmp(k0.mv_data, "checksum", k0.mv_size));
			if (!skip) {
				int same = v0.mv_size == v1.mv_size && !memcmp(v0.mv_data, v1.mv_data, v0.mv_size);
				if (!same)
					fprintf(stderr, "pk_compare: table %s key '%.*s': values differ\n", tables[t],
						(int)k0.mv_size, (char *)k0.mv_data);
				CHECK(same);
				n++;
			}
			r0 = mdb_cursor_get(cur[0], &k0, &v0, MDB_NEXT);
			r1 = mdb_cursor_get(cur[1], &k1, &v1, MDB_NEXT);
		}
		CHECK(r0 == MDB_NOTFOUND && r1 == MDB_NOTFOUND); /* same number of entries */
		CHECK(n > 0);
		compared += n;
		mdb_cursor_close(cur[0]);
		mdb_cursor_close(cur[1]);
	}
	for (int k = 0; k < 2; k++) {
		mdb_txn_abort(txn[k]);
		mdb_env_close(env[k]);
	}
	return compared;
}

static void test_packed(const char *root)
{
	char pa[512], pb[512];
	snprintf(pa, sizeof pa, "%s/plain", root);
	snprintf(pb, sizeof pb, "%s/packed", root);
	pk_write(pa, 0);
	pk_write(pb, 1);
	long n = pk_compare(pa, pb);
	CHECK(n > 2000); /* docs, row lists, rows, blocks and seen marks of ~500 documents */

	/* Refusals: a value packed for another id, another nwin, other lengths or hash, a cut
	 * one, and garbage; each leaves the store as it was. */
	store *s;
	OK(store_open(pb, 0, &s, E));
	store_stats before, after;
	OK(store_stats_get(s, &before, E));
	pkdoc *d1 = calloc(2, sizeof *d1), *d2 = d1 + 1;
	store_op good = pk_op(d1, 1000, 0), other = pk_op(d2, 1001, 1);
	CHECK(good.kind == STORE_OP_PUT && other.kind == STORE_OP_PUT && strcmp(d1->id, d2->id));
	OK(store_doc_pack(&other.doc, &d2->packed, E));
	OK(store_doc_pack(&good.doc, &d1->packed, E));
	for (int c = 0; c < 6; c++) {
		store_op ops[2] = {other, good};
		ops[1].doc.packed = &d1->packed;
		store_packed bad = d1->packed;
		char junk[64] = {0};
		switch (c) {
		case 0: ops[1].doc.packed = &d2->packed; break;           /* another document's */
		case 1: ops[1].doc.nwin = good.doc.nwin == 1 ? 2 : 1; break; /* another nwin */
		case 2: ops[1].doc.text_len--; break;                     /* another length */
		case 3: ops[1].doc.hash[3] ^= 1; break;                   /* another content hash */
		case 4: bad.len -= 9; ops[1].doc.packed = &bad; break;    /* cut short */
		case 5: bad.buf = junk; bad.len = sizeof junk; ops[1].doc.packed = &bad; break;
		}
		emb_err e = {0};
		int rc = store_apply(s, ops, 2, NULL, &e);
		CHECK(rc == EMB_EINVAL);
		CHECK(strstr(e.msg, "packed value") && strstr(e.msg, d1->id));
		OK(store_stats_get(s, &after, E));
		CHECK(after.docs == before.docs && after.rows == before.rows);
	}
	/* The good one is taken, and reads back as the text it was packed from. */
	store_op ok = good;
	ok.doc.packed = &d1->packed;
	OK(store_apply(s, &ok, 1, NULL, E));
	store_snapshot *snap;
	OK(store_snapshot_begin(s, &snap, E));
	store_doc_view dv;
	OK(store_doc_get(snap, d1->id, strlen(d1->id), &dv, E));
	CHECK(dv.text_len == good.doc.text_len && !memcmp(dv.text, d1->text, dv.text_len));
	CHECK(!strcmp(dv.meta, d1->meta) && dv.nwin == (uint32_t)good.doc.nwin);
	store_doc_view_free(&dv);
	store_snapshot_end(snap);
	verify(s);
	store_close(s);
	store_packed_free(&d1->packed);
	store_packed_free(&d2->packed);
	store_packed_free(NULL);

	/* What store_doc_pack itself refuses. */
	{
		emb_err e = {0};
		store_packed p = {(void *)1, 1};
		store_doc d = {.id = "x", .id_len = 0, .nwin = 1};
		CHECK(store_doc_pack(&d, &p, &e) == EMB_EINVAL && p.buf == NULL && p.len == 0);
		d.id_len = 1;
		d.nwin = 0;
		CHECK(store_doc_pack(&d, &p, &e) == EMB_EINVAL);
		char longid[STORE_MAX_ID_BYTES + 2];
		memset(longid, 'a', sizeof longid);
		d = (store_doc){.id = longid, .id_len = sizeof longid, .nwin = 1};
		CHECK(store_doc_pack(&d, &p, &e) == EMB_EINVAL);
	}
	free(d1);
	printf("test_store: packed and unpacked puts: %ld entries identical\n", n);
}

/* One call holding several ops per id, in an order that is not the ids' (store_apply runs
 * them sorted by id): each id must end as its ops, applied in the given order, leave it. */
static void test_op_order(const char *root)
{
	char path[512];
	snprintf(path, sizeof path, "%s/order", root);
	store *s;
	OK(store_open(path, STORE_CREATE, &s, E));
	store_model m = model();
	OK(store_bind_model(s, &m, E));
	float v[3 * DIM];
	doc_vecs(5, 5, 3, v);
	/* w exists before the call */
	store_op pre = {STORE_OP_PUT,
			{.id = "w", .id_len = 1, .text = "w0", .text_len = 2, .nwin = 1, .vecs = v}};
	OK(store_apply(s, &pre, 1, NULL, E));
	store_op ops[] = {
		{STORE_OP_PUT, {.id = "x", .id_len = 1, .text = "x1", .text_len = 2, .nwin = 2, .vecs = v}},
		{STORE_OP_PUT, {.id = "z", .id_len = 1, .text = "z1", .text_len = 2, .nwin = 1, .vecs = v}},
		{STORE_OP_DELETE, {.id = "w", .id_len = 1}},
		{STORE_OP_PUT, {.id = "y", .id_len = 1, .text = "y1", .text_len = 2, .nwin = 3, .vecs = v}},
		{STORE_OP_PUT, {.id = "x", .id_len = 1, .text = "x2", .text_len = 2, .nwin = 1, .vecs = v}},
		{STORE_OP_DELETE, {.id = "z", .id_len = 1}},
		{STORE_OP_PUT, {.id = "w", .id_len = 1, .text = "w1", .text_len = 2, .nwin = 2, .vecs = v}},
		{STORE_OP_DELETE, {.id = "y", .id_len = 1}},
		{STORE_OP_PUT, {.id = "y", .id_len = 1, .text = "y2", .text_len = 2, .nwin = 2, .vecs = v}},
		{STORE_OP_PUT, {.id = "a", .id_len = 1, .text = "a1", .text_len = 2, .nwin = 1, .vecs = v}},
	};
	store_apply_result r;
	OK(store_apply(s, ops, (int)(sizeof ops / sizeof ops[0]), &r, E));
	/* added: x, z, y, a, y again after its delete, w after its delete; updated: x */
	CHECK(r.added == 6 && r.updated == 1 && r.deleted == 3);
	const char *want[][2] = {{"w", "w1"}, {"x", "x2"}, {"y", "y2"}, {"a", "a1"}, {"z", NULL}};
	const uint32_t nwin[] = {2, 1, 2, 1, 0};
	store_snapshot *snap;
	OK(store_snapshot_begin(s, &snap, E));
	for (int i = 0; i < 5; i++) {
		store_doc_view dv;
		emb_err e = {0};
		int rc = store_doc_get(snap, want[i][0], 1, &dv, &e);
		if (!want[i][1]) {
			CHECK(rc == EMB_EINVAL);
			continue;
		}
		CHECK(rc == 0);
		if (rc)
			continue;
		CHECK(!strcmp(dv.text, want[i][1]) && dv.nwin == nwin[i]);
		store_doc_view_free(&dv);
	}
	store_snapshot_end(snap);
	store_stats st;
	OK(store_stats_get(s, &st, E));
	CHECK(st.docs == 4 && st.rows == 6);
	verify(s);
	store_close(s);
}

int main(void)
{
	char tmpl[] = "/tmp/test_store.XXXXXX";
	char *root = mkdtemp(tmpl);
	char path[512];
	snprintf(path, sizeof path, "%s/st", root);
	setenv("EMB_STORE_MAP_BYTES", "262144", 1); /* tiny map: growth happens many times */

	test_scan_kernel();
	test_packed(root);
	test_op_order(root);

	store *s;
	OK(store_open(path, STORE_CREATE, &s, E));
	struct stat st;
	CHECK(lstat(path, &st) == 0 && S_ISLNK(st.st_mode));
	store_model m = model(), got;
	{
		emb_err e = {0};
		CHECK(store_model_get(s, &got, &e) == EMB_ESTORE);
	}
	OK(store_bind_model(s, &m, E));
	OK(store_bind_model(s, &m, E)); /* same model again: fine */
	store_model other = m;
	other.dim = 12;
	{
		emb_err e = {0};
		CHECK(store_bind_model(s, &other, &e) == EMB_ESTORE);
		CHECK(strstr(e.msg, "test-model") != NULL);
	}
	/* The family is part of the identity. This store was bound without one, as stores
	 * from before families were: any family matches it, and the first one bound is
	 * recorded; from then on another family's vectors are refused, naming both. */
	{
		store_model fam = m;
		snprintf(fam.family, sizeof fam.family, "bert");
		OK(store_bind_model(s, &fam, E));
		OK(store_model_get(s, &got, E));
		CHECK(strcmp(got.family, "bert") == 0);
		OK(store_bind_model(s, &fam, E));
		OK(store_bind_model(s, &m, E)); /* a caller that knows no family */
		snprintf(fam.family, sizeof fam.family, "mpnet");
		emb_err e = {0};
		CHECK(store_bind_model(s, &fam, &e) == EMB_ESTORE);
		CHECK(strstr(e.msg, "bert family") && strstr(e.msg, "mpnet family"));
		OK(store_model_get(s, &got, E));
		CHECK(strcmp(got.family, "bert") == 0);
	}

	/* Round trip of one document. */
	put(s, 1, 1, 3);
	ver[1] = 1;
	nw[1] = 3;
	store_snapshot *snap;
	OK(store_snapshot_begin(s, &snap, E));
	store_doc_view dv;
	OK(store_doc_get(snap, "doc-1", 5, &dv, E));
	CHECK(strcmp(dv.text, "text of 1 version 1") == 0);
	CHECK(strcmp(dv.title, "T") == 0 && strcmp(dv.meta, "{}") == 0 && dv.nwin == 3);
	int exists, seen;
	uint8_t h[STORE_HASH_BYTES];
	OK(store_lookup(snap, "doc-1", 5, &exists, h, &seen, E));
	CHECK(exists && seen && memcmp(h, dv.hash, sizeof h) == 0);
	OK(store_lookup(snap, "doc-2", 5, &exists, h, &seen, E));
	CHECK(!exists && !seen);
	store_doc_view_free(&dv);
	store_snapshot_end(snap);

	/* Random upserts and deletes, checked against the model after each batch. */
	for (int step = 0; step < 1500; step++) {
		int d = (int)((frand() + 1) * 0.5f * NDOC) % NDOC;
		if (frand() < -0.5f) {
			del(s, d);
			ver[d] = 0;
		} else {
			int w = 1 + (int)((frand() + 1) * 3.99f) % 8;
			put(s, d, ver[d] + 1, w);
			ver[d]++;
			nw[d] = w;
		}
		if (step % 250 == 0) {
			verify(s);
			check_search(s, 10);
		}
	}
	verify(s);
	check_search(s, 1);
	check_search(s, 10);
	check_search(s, 64);
	store_stats sst;
	OK(store_stats_get(s, &sst, E));
	uint64_t live = 0, rows = 0;
	for (int d = 0; d < NDOC; d++)
		if (ver[d]) {
			live++;
			rows += (uint64_t)nw[d];
		}
	CHECK(sst.docs == live && sst.rows == rows);
	CHECK(sst.map_size > 262144); /* it grew */

	/* Prune: mark a third seen, prune the rest. */
	OK(store_seen_clear(s, E));
	store_op *ops = calloc(NDOC, sizeof *ops);
	char (*ids)[16] = calloc(NDOC, 16);
	int nops = 0;
	for (int d = 0; d < NDOC; d++)
		if (ver[d] && d % 3 == 0) {
			snprintf(ids[d], 16, "doc-%d", d);
			ops[nops++] = (store_op){STORE_OP_SEEN, {.id = ids[d], .id_len = strlen(ids[d])}};
		}
	OK(store_apply(s, ops, nops, NULL, E));
	uint64_t pruned;
	OK(store_prune_unseen(s, 7, &pruned, E));
	CHECK(pruned == live - (uint64_t)nops);
	for (int d = 0; d < NDOC; d++)
		if (d % 3)
			ver[d] = 0;
	verify(s);
	check_search(s, 10);
	free(ops);
	free(ids);

	/* A disk that fills up: a child limited to the current file size writes a big batch and
	 * must fail cleanly; the store keeps everything committed before. */
	OK(store_stats_get(s, &sst, E));
	uint64_t docs_before = sst.docs;
	pid_t pid = fork();
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		char data[600];
		snprintf(data, sizeof data, "%s/data.mdb", store_dir(s));
		struct stat ds;
		stat(data, &ds);
		struct rlimit rl = {(rlim_t)ds.st_size + 8192, (rlim_t)ds.st_size + 8192};
		setrlimit(RLIMIT_FSIZE, &rl);
		store *c;
		emb_err e = {0};
		if (store_open(path, 0, &c, &e))
			_exit(3);
		int rc = 0;
		for (int i = 0; i < 50 && !rc; i++) {
			int nb = 40;
			store_op bop[40];
			char bid[40][16];
			float *v = malloc(sizeof(float) * DIM * 8 * nb);
			for (int j = 0; j < nb; j++) {
				snprintf(bid[j], 16, "big-%d", i * nb + j);
				doc_vecs(j, 1, 8, v + (size_t)j * 8 * DIM);
				bop[j] = (store_op){STORE_OP_PUT, {.id = bid[j], .id_len = strlen(bid[j]),
					.text = "x", .text_len = 1, .nwin = 8, .vecs = v + (size_t)j * 8 * DIM}};
			}
			rc = store_apply(c, bop, nb, NULL, &e);
			free(v);
		}
		fprintf(stderr, "child: %s\n", e.msg);
		_exit(rc == EMB_ESTORE && strstr(e.msg, "nothing of this batch was stored") ? 0 : 4);
	}
	int status;
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	store_close(s);
	OK(store_open(path, 0, &s, E));
	OK(store_stats_get(s, &sst, E));
	/* Whole batches of 40 or nothing. */
	CHECK(sst.docs >= docs_before && (sst.docs - docs_before) % 40 == 0);
	verify(s);
	{ /* drop the big ones again */
		store_op bop[1];
		char bid[16];
		for (int i = 0; i < 2000; i++) {
			snprintf(bid, sizeof bid, "big-%d", i);
			bop[0] = (store_op){STORE_OP_DELETE, {.id = bid, .id_len = strlen(bid)}};
			OK(store_apply(s, bop, 1, NULL, E));
		}
	}
	verify(s);
	check_search(s, 10);

	/* Rebuild swap: a reader holding the old store keeps seeing it; new opens see the new. */
	store *reader;
	OK(store_open(path, STORE_READONLY, &reader, E));
	char fresh[1024];
	OK(store_fresh_dir(path, fresh, sizeof fresh, E));
	store *ns;
	OK(store_open(fresh, 0, &ns, E));
	OK(store_bind_model(ns, &m, E));
	store_close(s);
	s = ns;
	memset(ver, 0, sizeof ver);
	put(s, 5, 1, 2);
	ver[5] = 1;
	nw[5] = 2;
	char olddir[600];
	snprintf(olddir, sizeof olddir, "%s", store_dir(reader));
	CHECK(!store_stale(reader, path));
	OK(store_swap_in(path, fresh, E));
	CHECK(store_stale(reader, path));
	CHECK(access(olddir, F_OK) != 0); /* old version removed */
	OK(store_stats_get(reader, &sst, E));
	CHECK(sst.docs == docs_before); /* the old snapshot is intact */
	store_close(reader);
	OK(store_open(path, STORE_READONLY, &reader, E));
	OK(store_stats_get(reader, &sst, E));
	CHECK(sst.docs == 1);
	store_close(reader);
	check_search(s, 5);
	store_close(s);

	/* Opening something that is not a store. */
	{
		emb_err e = {0};
		store *x;
		CHECK(store_open(root, STORE_READONLY, &x, &e) != 0);
		CHECK(store_open("/nonexistent/zz", STORE_READONLY, &x, &e) == EMB_EIO);
	}

	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	if (system(cmd)) {}
	if (failures) {
		fprintf(stderr, "%d checks failed\n", failures);
		return 1;
	}
	printf("test_store: ok\n");
	return 0;
}
