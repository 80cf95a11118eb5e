/* store.h — the vector store: documents, their embedding vectors and the model that made
 * them, in one LMDB environment per store directory.
 *
 * Why LMDB: one writer and any number of readers that never block it, crash safety without a
 * recovery step (a killed writer loses only its open transaction), and a memory map that a
 * scan reads in place without copying a byte.
 *
 * Layout (named databases of one environment):
 *   meta     "format", "model.*" (model.family since the family was recorded: "bert",
 *            "mpnet", "jinabert"; absent in older stores), "dim", "vtype", "block_rows",
 *            "created", "updated", "shard" (optional: "INDEX/COUNT", see Shards below)
 *            (text) and "docs", "rows" (u64 counts), "checksum" (see below); "vtype" is
 *            "f32", "int8" or "binary" (format 3; always "f32" before); format 3 only:
 *            "int8.scales" (vtype int8, once it has rows: dim f32 per-dimension scales
 *            shared by every compact block, quant.h)
 *   docs     id -> content hash (16 bytes), lengths, zstd(text | title | metadata JSON)
 *   docrows  id -> u32 row numbers of the document's windows
 *   rowmap   u32 row -> window's byte range in the text, window index, document id
 *   vectors  u32 block -> block_rows packed f32 rows (the last block may be short)
 *   cvectors u32 group -> the compact codes of consecutive vector blocks (format 6; vtype
 *            int8 or binary; empty for f32): what a scan reads, the f32 rows being read
 *            only to rescore. int8: 4 vector blocks a group, binary: 32 (formats 3 and 4: u32
 *            block -> that block's codes; format 5: binary grouped as now, int8 by block)
 *   seen     id -> "" : ids met by the indexer run in progress (for --prune and duplicates)
 * Rows are dense: row r of the store is row r % block_rows of block r / block_rows, and
 * deleting a document moves the last rows into its slots (swap with last), so a scan never
 * reads a hole. Packing many rows a value keeps LMDB from giving every vector its own
 * overflow pages and makes a scan one long sequential read.
 *
 * Values, byte by byte (format 6; integers little-endian, as the machines we run on store
 * them). SUM(k, v) is XXH3-64 of the value bytes v before the trailer, seeded with XXH3-64
 * of the key bytes k: it detects damage to the value and a value found under the wrong key.
 *   docs     0 u32 magic "DOC2" | 4 content hash [16] | 20 u32 text_len | 24 u32 title_len |
 *            28 u32 meta_len | 32 u32 zlen | 36 u32 nwin | 40 zstd frame [zlen] |
 *            40+zlen u64 SUM
 *   docrows  u32 row [n] | u64 SUM
 *   rowmap   0 u32 window start | 4 u32 window end | 8 u32 window index | 12 id bytes |
 *            end-8 u64 SUM
 *   vectors  f32 [nrows * dim] (unit length, finite) | u64 SUM
 *   cvectors group g (key u32 g) codes the n rows of vector blocks G*g .. G*g + G-1 (G = 4
 *            int8, 32 binary; n = G * block_rows for every group but the last), nb =
 *            ceil(n / block_rows) blocks:
 *              A = int8:   f32 scale [nb][dim] | code [n * dim]
 *                  binary: code [n * (dim + 7) / 8]
 *              A | u64 SUM(A) keyed by g, then for each of the nb blocks b in order, its m
 *              rows' R = u64 RSUM [m] | u64 SUM(R) keyed by b.
 *            int8: scale[j][d] = quant_i8_scales over block j's f32 rows (max |x[d]| / 127,
 *            1/127 when all are 0), each row's code quant_i8_encode of its f32 vector with
 *            its block's scales (one byte a dimension, code + 128); binary: quant_bin_encode
 *            (sign bits, LSB first). RSUM[i] = XXH3-64 of f32 row i's dim * 4 bytes seeded
 *            with XXH3-64(key) + i: rescoring verifies a candidate's f32 row against it, not
 *            its whole block, and hashes its block's 1 KB of row checksums; a scan verifies
 *            A only. A scan streams a few thousand ~200 KB values with one checksum each
 *            instead of a short value a block, scattered between the f32 blocks (binary:
 *            8.9 -> 5.9 ms of CPU at 1M rows; int8: the same codes scanned contiguously
 *            13-16% faster than as 48 KB values; docs/bench-scan.md). A group is rewritten
 *            whole at the end of each transaction that wrote one of its vector blocks (the
 *            blocks it did not write copied from the group's previous, verified, value).
 *            Format 5: binary as format 6; int8 one value a vector block (key b): A = f32
 *            scale [dim] | code [nrows * dim], then A | SUM(A) | R | SUM(R) keyed by b.
 *            Format 4: both types one value a vector block, as format 5's int8.
 *            Format 3: code [nrows * row bytes] | u64 SUM, int8 codes with meta
 *            "int8.scales".
 *   meta     "checksum": u64 XXH3-64 over every other meta entry in key order, each fed as
 *            u32 key length, key, u32 value length, value; rewritten by every write.
 *   seen     empty values (no answer depends on them).
 * Format 1 (DOC1 magic, no trailers, no "checksum") is read without checksums and never
 * written: opening one for writing fails with "rebuild it with --rebuild". Format 2 is
 * format 3 without the cvectors table (f32 only), formats 3, 4 and 5 differ from 6 only in
 * their compact values (above): all are read as they are; a writer's open upgrades them in
 * place (f32 stores of formats 2 to 5 and binary stores of format 5: the empty table if
 * missing, "format" set to 6, nothing else changes; int8 stores of formats 3 to 5 and binary
 * stores of formats 3 and 4: every compact value written again from its verified f32 blocks
 * in one transaction, "int8.scales" removed).
 * int8 calibration (format 4 on): every vector block's codes carry the scales of its own
 * rows, recomputed whenever the block is written (rows added, moved by a delete), so no component
 * is ever clipped, rows arriving later calibrate themselves however the store was filled
 * (a first run of 3 documents no longer fixes the scales for good), and a block's codes are
 * a function of its f32 rows alone. The search codes the query against each block's scales
 * (scan_i8_query, ~0.1 us a block). Format 3 took the scales of the first transaction's rows
 * and clipped later components to them.
 * Version rule: "format" changes whenever any of these layouts does; a program reads formats
 * up to its own, writes only its own, and refuses a newer one.
 *
 * Damage: LMDB trusts its file; a truncated data.mdb (its meta page names pages past the end
 * of the file) would fault on first touch, so store_open refuses it. Every value a read
 * depends on is checked to lie inside the file and against its checksum before use, and
 * scores must lie in [-1-1e-3, 1+1e-3]; a failure is EMB_ESTORE "store X is damaged: ...;
 * run indexer --check", never an answer. Writers keep 160 KB of zeros past the last page,
 * so that LMDB's reads through a damaged page near the end stay inside the file, and an
 * LMDB assertion failure during a read becomes that error too. Damage inside LMDB's own
 * page structure can still make LMDB fault (rarely: a few in a thousand damaged copies).
 *
 * Paths: a store is usually a symlink to a versioned directory beside it (".NAME.STAMP"),
 * so that a rebuilt store can be swapped in with one rename(2): a reader resolves the link
 * once and then sees the old store or the new one, never a mix. store_path.h has the rest:
 * aliases, the writer lock, rebuild swaps and leftovers, what may become a store.
 *
 * Threads: a store handle is used by one thread at a time, except that snapshots may be
 * begun, read and ended on other threads while one thread writes (store_apply and the other
 * writers wait for such snapshots to end only when they must grow the map); a snapshot stays
 * on the thread that began it. A snapshot's search may use a threadpool internally;
 * store_doc_pack needs no handle and runs on any number of threads. Several processes may
 * open one store: one writes, others read.
 */
#ifndef EMB_STORE_H
#define EMB_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "quant.h"
#include "store_path.h"
#include "threadpool.h"

#define STORE_FORMAT_VERSION 6
#define STORE_HASH_BYTES 16
#define STORE_MAX_ID_BYTES 480   /* LMDB keys are at most 511 bytes */

typedef struct store store;
typedef struct store_snapshot store_snapshot;

/* The identity of the model that produced a store's vectors. Two models are the same when
 * name, family, sha256, dim, pooling, normalisation, prefix rule and max_tokens all match.
 * A store written before the family was recorded has family "": it matches any family (its
 * sha256 still pins the weights), and the first writer that binds a model records that
 * model's family in it (a meta entry more; the format is unchanged, and older programs
 * read and check such a store as before). */
typedef struct store_model {
	char name[128];       /* e.g. "all-MiniLM-L6-v2" */
	char family[16];      /* the architecture, model.h's model_arch.name: "bert", "mpnet",
			       * "jinabert"; "" unknown (an older store) */
	char sha256[72];      /* hex sha256 of model.safetensors */
	int dim;              /* vector dimension */
	char pooling[16];     /* "mean", "cls", "max" */
	int normalized;       /* the model L2-normalises (the store always stores unit vectors) */
	int needs_prefix;     /* "query: "/"passage: " (E5) */
	int max_tokens;       /* truncation length the vectors were made with */
	char model_dir[1024]; /* where the indexer loaded it from: a hint for search, not identity */
} store_model;

enum {
	STORE_READONLY = 1, /* open for reading only (search); never creates */
	STORE_CREATE = 2,   /* create the store (symlink + versioned directory) when missing */
};

/* Opens the store at `path` (a symlink to a versioned directory, or a plain directory).
 * The link is resolved once, so the handle keeps seeing the directory it resolved to even
 * if a rebuild swaps the link afterwards (store_stale tells). A writer (no STORE_READONLY)
 * opens only what store_path_check accepts: a store of ours, an empty directory (made a
 * store), or with STORE_CREATE a missing path (created as path -> .NAME.STAMP.PID.N beside
 * it). A reader that may read data.mdb but not write lock.mdb (another user's store) opens
 * it without LMDB's lock file (MDB_NOLOCK): it then does not pin the pages of its
 * snapshots, so a writer committing twice during one snapshot may overwrite what it reads
 * (the checksums then report damage rather than a wrong answer); keep such snapshots short.
 * On success *out owns the handle (store_close). Errors: EMB_EIO (missing store without
 * STORE_CREATE, permission denied: the message names the file), EMB_ESTORE (not a store, a
 * newer format, LMDB failure; damaged: data.mdb shorter than the pages LMDB's meta page says
 * it holds ("truncated: N bytes, needs M"), or a meta table that fails its checksum; a
 * format-1 store opened for writing: "rebuild it with --rebuild"). */
int store_open(const char *path, int flags, store **out, emb_err *err);

/* Closes the handle. Snapshots must have been ended. NULL is allowed. */
void store_close(store *s);

/* The directory the handle resolved to (absolute). Valid while s lives. */
const char *store_dir(const store *s);

/* 1 when `path` no longer resolves to the directory this handle has open (a rebuild was
 * swapped in): a long-lived reader should close and reopen. 0 otherwise. */
int store_stale(const store *s, const char *path);

/* Model identity. store_model_get: EMB_ESTORE "store has no model yet" for an empty store.
 * store_bind_model records m in a store that has none, or checks that the recorded identity
 * equals m (an empty family on either side matches any) and fails with EMB_ESTORE and a
 * message naming both models, families included, when it does not; a store without a
 * recorded family gets m's. */
int store_model_get(store *s, store_model *m, emb_err *err);
int store_bind_model(store *s, const store_model *m, emb_err *err);

/* The store's default cross-encoder (rerank.h), which search --rerank uses when it names
 * none: a model directory recorded by indexer --reranker, at most STORE_RERANKER_MAX - 1
 * bytes. store_reranker_get writes it to buf ("" when none is recorded; cut to cap - 1
 * bytes); store_set_reranker records dir ("" forgets it) in one transaction, sealed into
 * the meta table's checksum. Errors: EMB_ESTORE (read-only, LMDB failure), EMB_EINVAL (a
 * path too long). */
#define STORE_RERANKER_MAX 1024
int store_reranker_get(store *s, char *buf, size_t cap, emb_err *err);
int store_set_reranker(store *s, const char *dir, emb_err *err);

/* Counts, times and sizes of a store, read in one snapshot. file_size is the part of the
 * map in use (LMDB's last page), map_size the current map (it grows on demand). */
typedef struct store_stats {
	uint64_t docs, rows;
	int dim, block_rows;
	char created[32], updated[32]; /* ISO 8601 UTC, "" when unknown */
	uint64_t map_size, file_size;
	quant_type vtype;          /* what a scan reads: f32 rows or compact codes */
	size_t row_bytes_scan;     /* bytes a row that a scan reads (quant_row_bytes) */
} store_stats;
/* Fills *st. Errors: EMB_ESTORE (LMDB could not begin a read transaction). */
int store_stats_get(store *s, store_stats *st, emb_err *err);

/* The store's vector type (meta "vtype"): f32 (no compact copy), int8 or binary. */
quant_type store_vtype(const store *s);

/* Sets the vector type of a store that holds no rows (a new one, or one emptied): compact
 * blocks are written for every row from then on. The same type again is a no-op. Errors:
 * EMB_ESTORE (read-only; a store with rows and another type: "store X holds f32 vectors,
 * not int8: changing the vector type needs --rebuild"; LMDB failure). */
int store_set_vtype(store *s, quant_type vt, emb_err *err);

/* ---- shards ----------------------------------------------------------------------------
 * A shard store holds only the documents whose id falls in its shard: document id (its bytes
 * as stored, no terminator) belongs to shard store_shard_of(id, len, count), which is
 *   FNV-1a 64 of the id bytes (h = 0xcbf29ce484222325; for each byte b: h ^= b,
 *   h *= 0x100000001b3 mod 2^64), taken mod count
 * (chosen because any tool can reproduce it in five lines: python/shardset.py has it in
 * Python). The rule is part of the on-disk contract: it never changes for a given count.
 * A store records its shard in meta "shard" as "INDEX/COUNT" (absent: not a shard, it may
 * hold any id). Writers of other versions ignore the key, so only this indexer keeps it. */

/* FNV-1a 64 of the id bytes (above). */
uint64_t store_id_hash(const char *id, size_t len);

/* The shard of id among count (>= 1) shards: store_id_hash(id, len) % count. */
int store_shard_of(const char *id, size_t len, int count);

/* The shard the store records: *index and *count (0 and 0 when the store is not a shard).
 * Errors: EMB_ESTORE (LMDB could not begin a read transaction; a malformed "shard" value:
 * damaged). */
int store_shard_get(store *s, int *index, int *count, emb_err *err);

/* Records that the store is shard index of count (0 <= index < count). Allowed on a store
 * that holds no documents, or one that already records the same shard (a no-op). Errors:
 * EMB_EINVAL (index or count out of range), EMB_ESTORE (read-only; a store that records
 * another shard, or holds documents and records none: "store X is shard 1/3, not 2/3" /
 * "store X holds documents and is not a shard: --shard needs a new store or --rebuild";
 * LMDB failure). */
int store_set_shard(store *s, int index, int count, emb_err *err);

/* Rewrites a store's compact copy for type vt from its f32 rows, in one transaction, int8
 * calibrating on the first 32 blocks as the writer does: what a rebuild with --vectors gives,
 * without embedding again. For tools and evaluations (tests/tool_store_retype); the indexer
 * keeps its rule (changing the type needs --rebuild). Errors as store_apply. */
int store_retype(store *s, quant_type vt, emb_err *err);

/* An estimate of the pages of the id-keyed tables (docs, docrows, seen) that a write
 * transaction of `docs` documents with ids in no particular order dirties, from the tables'
 * leaf and branch page counts now: k ids at random places land on L(1 - e^(-k/L)) of a
 * table's L pages. LMDB keeps every dirty page of a transaction in malloc'd memory until
 * the commit, so this is what a transaction costs in memory beyond its new rows; it grows
 * with the store (at 1M documents a 16,384-document transaction dirtied ~85 MB more than at
 * 100k) until it reaches ~3 pages a document. The indexer sizes its transactions by it. 0
 * when the store cannot be read. */
uint64_t store_txn_pages_estimate(store *s, uint64_t docs);

/* The most documents a transaction may hold for store_txn_pages_estimate to stay within
 * `bytes` (at least 1; UINT64_MAX when every page of those tables fits). */
uint64_t store_txn_docs_within(store *s, uint64_t bytes);

/* A 128-bit content hash of n byte strings (lengths included, so part boundaries count). Not
 * cryptographic: it detects changed documents, it does not resist forgery. */
void store_hash(const void *const *parts, const size_t *lens, int n, uint8_t out[STORE_HASH_BYTES]);

/* ---- writing ---------------------------------------------------------------------------
 * Writes go through store_apply: one LMDB transaction per call, so a crash loses at most
 * that call's operations and never leaves a half-written document. */

typedef struct store_packed store_packed;

typedef struct store_doc {
	const char *id;     size_t id_len;      /* 1..STORE_MAX_ID_BYTES bytes */
	const char *title;  size_t title_len;
	const char *text;   size_t text_len;
	const char *meta;   size_t meta_len;    /* JSON text, or empty */
	uint8_t hash[STORE_HASH_BYTES];         /* content hash, compared on the next run */
	int nwin;                               /* >= 1 windows */
	const float *vecs;                      /* nwin * dim floats, row w for window w */
	const uint32_t *win_range;              /* nwin * 2: byte [start, end) of window w in text */
	/* NULL, or this document's "docs" value made ahead by store_doc_pack (see there): a PUT
	 * then stores it as is instead of compressing title, text and meta itself (whose
	 * pointers it then does not read; their lengths, hash and nwin must be the packed
	 * ones). Ignored by DELETE and SEEN. */
	const store_packed *packed;
} store_doc;

/* A document's complete "docs" value (format 2: header, zstd frame, SUM trailer keyed by
 * the id), byte for byte what store_apply would store for the same store_doc. */
struct store_packed {
	void *buf;   /* owned: store_packed_free */
	size_t len;
};

/* Builds d's "docs" value into *out, so that compression (zstd level 3: most of a PUT's
 * cost) runs on the caller's threads instead of the one writing the store. Reads d's id,
 * title, text, meta, hash and nwin (not vecs or win_range); needs no store handle.
 * Threads: safe to call from any number of threads at once; each thread keeps one zstd
 * context, made at its first call and freed when the thread exits. Ownership: on success
 * out->buf is malloc'd and owned by the caller (store_packed_free); on failure *out is
 * {NULL, 0}. To store it, point the PUT's doc.packed at *out; store_apply checks that the
 * value belongs to that op (checksum under the op's id, header: magic, zstd frame length,
 * text/title/meta lengths, hash, nwin) and refuses a mismatch with EMB_EINVAL naming the
 * document, before anything is written. Errors: EMB_EINVAL (id empty or longer than
 * STORE_MAX_ID_BYTES, nwin < 1, a length past 4 GiB), EMB_ENOMEM, EMB_ESTORE (zstd failed). */
int store_doc_pack(const store_doc *d, store_packed *out, emb_err *err);

/* Frees p->buf and sets *p to {NULL, 0}. NULL and an empty *p are allowed. */
void store_packed_free(store_packed *p);

typedef enum {
	STORE_OP_PUT = 0,    /* insert or replace doc (old windows removed), mark id seen */
	STORE_OP_DELETE = 1, /* remove doc.id if present */
	STORE_OP_SEEN = 2,   /* only mark doc.id seen (unchanged documents) */
} store_op_kind;

typedef struct store_op {
	store_op_kind kind;
	store_doc doc;       /* PUT: all fields; DELETE and SEEN: id only */
} store_op;

typedef struct store_apply_result {
	uint64_t added, updated, deleted;
} store_apply_result;

/* Applies ops in one transaction and commits, with the result of applying them in order
 * (ops on one id take effect in their order: the last PUT of an id in a call wins). They run
 * sorted by id (stable), for locality in the id-keyed tables, so which rows the windows of
 * different documents get follows id order, not op order. When the map is full it aborts,
 * doubles the map and retries, so callers never see MDB_MAP_FULL. Vectors are normalised to
 * unit length on the way in (scores are cosines whatever the model). On failure nothing of
 * this call is stored. *res (may be NULL) receives counts. Errors: EMB_EINVAL (an id empty or
 * too long, nwin < 1, a vector that is not finite or all zero, a packed value that is not
 * this op's (see store_doc_pack): the message names the document), EMB_ESTORE (read-only
 * handle, no model bound, LMDB failure such as a full disk: the message says which; a value
 * it must rewrite fails its checksum: "damaged"), EMB_ENOMEM, EMB_EIO. No snapshot of s may
 * be open on the calling thread (other threads' are fine: see Threads above). */
int store_apply(store *s, const store_op *ops, int n, store_apply_result *res, emb_err *err);

/* Forgets every id marked seen (the indexer calls it at the start of a run, so that "seen"
 * means "seen by this run"). Errors: EMB_ESTORE (read-only handle, LMDB failure). */
int store_seen_clear(store *s, emb_err *err);

/* Deletes every document not marked seen, in transactions of at most `per_txn` documents
 * (bounded memory and bounded loss on a crash: a rerun prunes the rest); *deleted (may be
 * NULL) gets how many. Errors: as store_apply. */
int store_prune_unseen(store *s, int per_txn, uint64_t *deleted, emb_err *err);

/* ---- reading ---------------------------------------------------------------------------
 * A snapshot is an LMDB read transaction: a consistent view that a concurrent writer never
 * blocks and never changes. Pointers returned through a snapshot point into the memory map
 * and are valid until store_snapshot_end. */

/* Begins a snapshot of the latest commit; *out is owned by the caller until
 * store_snapshot_end (which accepts NULL). Errors: EMB_ENOMEM, EMB_ESTORE (e.g. the reader
 * table is full: more than 256 concurrent readers). */
int store_snapshot_begin(store *s, store_snapshot **out, emb_err *err);
void store_snapshot_end(store_snapshot *snap);

/* Looks an id up: *exists, and when it exists its content hash (hash may be NULL); *seen
 * (may be NULL) whether the current run has marked it. An id too long to store simply does
 * not exist. Errors: EMB_EFORMAT (the document value fails its checksum: "damaged"),
 * EMB_ESTORE. */
int store_lookup(store_snapshot *snap, const char *id, size_t id_len, int *exists,
		 uint8_t hash[STORE_HASH_BYTES], int *seen, emb_err *err);

/* One search result: a document with the score of its best window. */
typedef struct store_hit {
	float score;
	uint32_t row;           /* the best window's row */
	const char *id;         /* into the map; not NUL-terminated */
	size_t id_len;
	uint32_t win_start, win_end; /* the best window's byte range in the document text */
	uint32_t win_index;
} store_hit;

/* Exact top-k by cosine over every stored row, one result per document (its best window).
 * q has dim floats (need not be normalised). Runs on pool's threads (NULL: caller only).
 * Fills hits[0..*nhits) best first; *nhits <= k. Every block scanned and every row entry
 * used is checked (bounds, checksum) and every score must be a cosine (|s| <= 1 + 1e-3):
 * otherwise EMB_ESTORE "store X is damaged: ...; run indexer --check" and no hits.
 * Errors: EMB_EINVAL (k < 1, q not finite), EMB_ENOMEM, EMB_ESTORE. */
int store_search(store_snapshot *snap, const float *q, int k, threadpool *pool,
		 store_hit *hits, int *nhits, emb_err *err);

/* Rescoring factors store_search uses for compact stores: the compact scan keeps
 * rescore x k rows (at least the rows the per-document step needs) and rescores them with
 * the f32 rows. Chosen on SciFact (docs/bench-scan.md). */
#define STORE_RESCORE_INT8 4
#define STORE_RESCORE_BINARY 10

/* store_search with the rescoring factor: -1 the type's default (above), 0 none (the
 * compact ranking, its scores the compact estimates: int8 ~ cosine, binary 1 - 2 h / dim),
 * N > 0: the compact scan keeps max(N x k, 2k + 16) rows (growing as store_search widens),
 * every one rescored exactly (its f32 row's checksum verified: format 4 on keeps one a row in
 * the compact value; format 3, the whole f32 block's), and the result is the
 * exact order among them: the exact top k whenever those rows hold it (always when they
 * cover the store). f32 stores ignore it. Errors as store_search. */
int store_search_rescore(store_snapshot *snap, const float *q, int k, int rescore,
			 threadpool *pool, store_hit *hits, int *nhits, emb_err *err);

/* store_search_rescore for nq queries (qs: nq * dim floats); query i's hits go to
 * hits[i * k ..], nhits[i] of them, the same as store_search_rescore gives. The batch is one
 * scan (scan_topk_multi, scan_topk_compact_multi: every row or code read once for all the
 * queries, each run of rows scored by every query while in cache; compact candidates then
 * rescored query by query); a query whose rows held fewer than k documents is searched again
 * on its own. Errors as store_search (no hits for any query). */
int store_search_batch(store_snapshot *snap, const float *qs, int nq, int k, int rescore,
		       threadpool *pool, store_hit *hits, int *nhits, emb_err *err);

/* A document read back: text, title and metadata decompressed into one buffer owned by the
 * view (store_doc_view_free). Each string is NUL-terminated. */
typedef struct store_doc_view {
	char *text, *title, *meta;
	size_t text_len, title_len, meta_len;
	uint32_t nwin;
	uint8_t hash[STORE_HASH_BYTES];
	char *buf_;
} store_doc_view;

/* Reads document id, verifying its checksum and that it decompresses to its stated lengths.
 * Errors: EMB_EINVAL "no document 'id'" when absent (err->code EMB_EINVAL), EMB_EFORMAT
 * (damaged value: "store X is damaged: ..."), EMB_ENOMEM. */
int store_doc_get(store_snapshot *snap, const char *id, size_t id_len, store_doc_view *out,
		  emb_err *err);
void store_doc_view_free(store_doc_view *v);

/* The stored vectors of document id, window by window: vecs gets nwin * dim floats (window
 * w's unit vector at row w) and win_range nwin * 2 byte offsets ([start, end) of window w in
 * the text), nwin being the document's (store_doc_view.nwin). With store_doc_get this reads a
 * document back whole, as store_apply takes it (a rebuild carries over a document whose new
 * record was bad). Errors: EMB_EINVAL "no document 'id'", EMB_ESTORE (damaged: a row list,
 * row entry or vector block that fails its checksum, or rows that do not add up to nwin
 * windows), EMB_ENOMEM. */
int store_doc_vectors(store_snapshot *snap, const char *id, size_t id_len, uint32_t nwin,
		      float *vecs, uint32_t *win_range, emb_err *err);

/* What store_check verified. */
typedef struct store_check_report {
	int format;            /* the store's format (1: no checksums to verify) */
	uint64_t docs, rows, blocks;
	uint64_t cblocks;      /* compact blocks (or groups), each equal to the codes of its vector
				* block(s) */
	uint64_t checksums;    /* values whose checksum matched */
	uint64_t text_bytes;   /* document bytes decompressed */
} store_check_report;

/* Reads the whole snapshot and verifies: the meta table's checksum; every vector block
 * (dense, full but the last, lies in the file, checksum) and every vector in it (finite,
 * unit length within 1e-3); for int8 and binary stores every compact value (one a group of
 * 4 (int8) or 32 (binary) vector blocks in format 6, older formats as store.h's layout
 * says; checksums, the scales, codes and row checksums of its vector blocks' rows byte for
 * byte); every document (checksum, header, decompresses to the lengths
 * it states; in a shard store, its id in the store's shard); every row list and row entry (checksums, and each row owned by exactly the
 * document that lists it, at its window index); and the counts in meta. Fills *report (may
 * be NULL). Errors: EMB_ESTORE "store DIR is damaged: WHAT" for the first failure found,
 * EMB_ENOMEM. For `indexer --check` and tests. */
int store_check(store_snapshot *snap, store_check_report *report, emb_err *err);

/* store_check without the report. */
int store_verify(store_snapshot *snap, emb_err *err);

#endif
