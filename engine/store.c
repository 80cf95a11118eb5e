/* store.c — the LMDB vector store (see store.h for the layout and why it is so).
 *
 * Writers: store_apply runs one transaction; vector blocks touched by it are read once into
 * a small cache, modified there (appends, swap-with-last moves) and written back once, so
 * a batch of a thousand windows rewrites each 192 KB block once, not a thousand times.
 * Compressing a document is most of a put's cost (two thirds of the writer's CPU time at
 * 1.5 KB a document), so store_doc_pack lets other threads do it, and store_apply only
 * checks what it is handed.
 * New rows, blocks and documents go in with MDB_APPEND where their keys come last, so that
 * tables written in key order get full pages (docs/bench-index.md, "store writer").
 * Readers: snapshots are MDB_NOTLS read transactions; search hands the scan kernel pointers
 * straight into the map. */
#include "store.h"
#include "quant.h"
#include "scan.h"
#include "store_path.h"

#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <setjmp.h>
#include <lmdb.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>
/* Inlined, so XXH3 is compiled for this build's -march (AVX2): about twice the speed of the
 * distribution's generic SSE2 build, which matters because every scan checks every block. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#define DOC_MAGIC_V1 0x31434f44u       /* "DOC1" */
#define DOC_MAGIC 0x32434f44u          /* "DOC2" */
#define DOC_HDR (4 + STORE_HASH_BYTES + 4 * 5)
#define ROWMAP_HDR 12                  /* u32 start, end, window index; then the id */
#define SUM_BYTES 8                    /* the u64 trailer of every checksummed value */
/* Stored vectors are unit length: a score (a cosine) beyond 1 by more than float rounding,
 * or a norm that far from 1, means the bytes are not what was written. */
#define SCORE_EPS 1e-3f
#define NORM_EPS 1e-3
#define INITIAL_MAP ((size_t)256 << 20)
#define BLOCK_BYTES_TARGET (192 * 1024) /* 128 rows of 384-d f32 */
#define CACHE_BLOCKS 32

struct store {
	MDB_env *env;
	MDB_dbi meta, docs, docrows, rowmap, vectors, seen;
	MDB_dbi cvectors;    /* format 3: compact blocks (valid when has_cvectors) */
	int has_cvectors;
	quant_type vtype;    /* meta "vtype": QUANT_F32 keeps no compact copy */
	int readonly;
	int format;          /* STORE_FORMAT_VERSION, or 1 (read only, no checksums) */
	int dim, block_rows; /* 0 until a model is bound */
	char dir[PATH_MAX];
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	/* LMDB may move the map only while no transaction of this process is open: snapshots
	 * hold this shared, growing the map takes it exclusive (the indexer's pipeline reads
	 * snapshots on one thread while another writes). */
	pthread_rwlock_t maplock;
};

/* The part of the address space where LMDB's values may lie: the map, of which only the
 * first `used` bytes are backed by the file (touching the rest faults). A write
 * transaction's own new pages are in the heap, outside the map. */
typedef struct mapview {
	const char *lo[4]; /* data.mdb's mappings in this process (one per open handle) */
	size_t cap[4];
	int n;             /* 0: not found (no /proc): nothing can be checked */
	uint64_t used;
	int heap_ok;       /* write transaction: values outside the map are its own pages */
} mapview;

struct store_snapshot {
	store *s;
	MDB_txn *txn;
	mapview mv;
};

static int mdb_fail(emb_err *err, int rc, const char *what, const char *dir)
{
	/* LMDB turns a short write (what a full disk or a file size limit gives) into EIO. */
	if (rc == ENOSPC || rc == EFBIG || rc == EDQUOT)
		return emb_errf(err, EMB_ESTORE, "store %s: %s: disk full (%s); nothing of this batch was stored",
				dir, what, mdb_strerror(rc));
	if (rc == EIO) {
		struct statvfs vfs;
		int full = statvfs(dir, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < (1u << 20);
		return emb_errf(err, EMB_ESTORE, "store %s: %s: %s (%s); nothing of this batch was stored",
				dir, what, full ? "disk full" : "write failed",
				full ? "no space left on device" : "I/O error, or a full disk or file size limit");
	}
	/* LMDB's own findings about its pages */
	if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID)
		return emb_errf(err, EMB_ESTORE, "store %s is damaged: %s: %s; run indexer --check",
				dir, what, mdb_strerror(rc));
	return emb_errf(err, EMB_ESTORE, "store %s: %s: %s", dir, what, mdb_strerror(rc));
}

/* "store DIR is damaged: WHAT; run indexer --check" with code EMB_ESTORE (damaged) or
 * EMB_EFORMAT (damaged_doc: a document value, as store_lookup and store_doc_get promise). */
static int vdamaged(emb_err *err, const store *s, int code, const char *fmt, va_list ap)
{
	char what[400];
	vsnprintf(what, sizeof what, fmt, ap);
	return emb_errf(err, code, "store %s is damaged: %s; run indexer --check", s->dir, what);
}

static int damaged(emb_err *err, const store *s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int damaged(emb_err *err, const store *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = vdamaged(err, s, EMB_ESTORE, fmt, ap);
	va_end(ap);
	return rc;
}

static int damaged_doc(emb_err *err, const store *s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int damaged_doc(emb_err *err, const store *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = vdamaged(err, s, EMB_EFORMAT, fmt, ap);
	va_end(ap);
	return rc;
}

static void iso_now(char *buf, size_t cap)
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- hashing ---------------------------------------------------------------------------*/

static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

typedef struct hstate { uint64_t a, b; } hstate;

static inline void hfeed(hstate *h, uint64_t w)
{
	h->a = rotl64(h->a ^ mix64(w), 27) * 0x9e3779b97f4a7c15ULL + h->b;
	h->b = rotl64(h->b ^ mix64(w ^ 0x6a09e667f3bcc909ULL), 31) * 0xbf58476d1ce4e5b9ULL + h->a;
}

void store_hash(const void *const *parts, const size_t *lens, int n, uint8_t out[STORE_HASH_BYTES])
{
	hstate h = {0x243f6a8885a308d3ULL, 0x13198a2e03707344ULL};
	for (int i = 0; i < n; i++) {
		const unsigned char *p = parts[i];
		size_t len = lens[i];
		hfeed(&h, (uint64_t)len);
		size_t j = 0;
		for (; j + 8 <= len; j += 8) {
			uint64_t w;
			memcpy(&w, p + j, 8);
			hfeed(&h, w);
		}
		if (j < len) {
			uint64_t w = 0;
			memcpy(&w, p + j, len - j);
			hfeed(&h, w ^ ((uint64_t)(len - j) << 56));
		}
	}
	uint64_t a = mix64(h.a ^ rotl64(h.b, 17)), b = mix64(h.b + a);
	memcpy(out, &a, 8);
	memcpy(out + 8, &b, 8);
}

/* ---- checksums and bounds --------------------------------------------------------------*/

static uint64_t val_sum(const void *key, size_t klen, const void *val, size_t vlen)
{
	return XXH3_64bits_withSeed(val, vlen, XXH3_64bits(key, klen));
}

/* Writes SUM(key, val[0..len)) at val + len. */
static void sum_put(const void *key, size_t klen, void *val, size_t len)
{
	uint64_t h = val_sum(key, klen, val, len);
	memcpy((char *)val + len, &h, SUM_BYTES);
}

/* 1 when v ends with SUM(key, the bytes before it). */
static int sum_ok(const void *key, size_t klen, const MDB_val *v)
{
	if (v->mv_size < SUM_BYTES)
		return 0;
	size_t n = v->mv_size - SUM_BYTES;
	uint64_t h;
	memcpy(&h, (const char *)v->mv_data + n, SUM_BYTES);
	return h == val_sum(key, klen, v->mv_data, n);
}

static size_t trailer(const store *s) { return s->format >= 2 ? SUM_BYTES : 0; }

/* Format 4 compact blocks (store.h): int8 ones open with their dim f32 scales. */
static size_t cb_head(const store *s, quant_type vt)
{
	return s->format >= 4 && vt == QUANT_INT8 ? (size_t)s->dim * sizeof(float) : 0;
}

/* Grouped compact values: one value codes several consecutive f32 blocks, so that a scan
 * streams long values instead of many short ones, each its own cache-cold start and
 * checksum set-up, scattered between the f32 blocks in the file. Binary (format 5): 32
 * blocks, 4,096 rows, 192 KB of sign bits (1M rows, 2 threads: 8.9 -> 5.9 ms of CPU for the
 * checked scan alone, docs/bench-scan.md). int8 (format 6): 4 blocks, 512 rows, 192 KB of
 * codes and 6 KB of scales, each block keeping the scales of its own 128 rows; the same
 * bytes scanned contiguously were 13-16% faster than as 48 KB values in the map, and a
 * group still fits in L2 between its hash and its scoring (docs/bench-scan.md). */
#define BIN_GROUP 32
#define I8_GROUP 4
static uint32_t cgroup(const store *s)
{
	if (s->vtype == QUANT_BINARY)
		return s->format >= 5 ? BIN_GROUP : 1;
	return s->vtype == QUANT_INT8 && s->format >= 6 ? I8_GROUP : 1;
}

/* The row count n of a grouped compact value of `size` bytes (store.h): size = nb * head +
 * n * rowb + SUM + n * SUM + nb * SUM for the nb = ceil(n / br) f32 blocks it codes (their
 * scales, head bytes each, int8 only; the codes and their SUM; each block's row checksums
 * with their own SUM). 0 when no n fits, or n exceeds max. */
static uint32_t group_rows(size_t size, size_t rowb, size_t head, uint32_t br, uint32_t max)
{
	for (uint32_t nb = 1; (uint64_t)(nb - 1) * br < max; nb++) {
		size_t fixed = SUM_BYTES + (size_t)nb * (SUM_BYTES + head);
		if (size < fixed)
			return 0;
		size_t rest = size - fixed;
		if (rest % (rowb + SUM_BYTES))
			continue;
		size_t n = rest / (rowb + SUM_BYTES);
		if (n > (size_t)(nb - 1) * br && n <= (size_t)nb * br && n <= max)
			return (uint32_t)n;
	}
	return 0;
}

/* Where a grouped compact value of n rows keeps its parts (store.h): the nb blocks' scales
 * from byte 0 (int8), the codes from `codes`, SUM(A) at `sum`; block j's row checksums
 * (group_rsums) after it. */
typedef struct glayout {
	uint32_t n, nb;
	size_t codes, sum;
} glayout;

static glayout group_layout(const store *s, uint32_t n)
{
	uint32_t br = (uint32_t)s->block_rows, nb = (n + br - 1) / br;
	size_t codes = (size_t)nb * cb_head(s, s->vtype);
	return (glayout){n, nb, codes, codes + (size_t)n * quant_row_bytes(s->vtype, s->dim)};
}

/* Block j's row checksums in a group of layout l: *m of them (then their SUM). */
static size_t group_rsums(const store *s, const glayout *l, uint32_t j, uint32_t *m)
{
	uint32_t br = (uint32_t)s->block_rows;
	*m = l->n - j * br < br ? l->n - j * br : br;
	return l->sum + SUM_BYTES + (size_t)j * (br + 1) * SUM_BYTES;
}

/* 1 when group g's value p (layout l) matches its SUM and every block's row checksums
 * match theirs. */
static int group_sound(const store *s, uint32_t g, const uint8_t *p, const glayout *l)
{
	uint64_t want;
	memcpy(&want, p + l->sum, SUM_BYTES);
	if (val_sum(&g, sizeof g, p, l->sum) != want)
		return 0;
	for (uint32_t j = 0; j < l->nb; j++) {
		uint32_t b = g * cgroup(s) + j, m;
		const uint8_t *r = p + group_rsums(s, l, j, &m);
		memcpy(&want, r + (size_t)m * SUM_BYTES, SUM_BYTES);
		if (val_sum(&b, sizeof b, r, (size_t)m * SUM_BYTES) != want)
			return 0;
	}
	return 1;
}

/* The checksum of row i of f32 block b, kept in the compact block (format 4). */
static uint64_t row_sum(uint32_t b, uint32_t i, const float *row, int dim)
{
	return XXH3_64bits_withSeed(row, (size_t)dim * sizeof(float), XXH3_64bits(&b, sizeof b) + i);
}

/* 1 when the value may be read: a checksummed format checks it, format 1 takes it on trust. */
static int val_sound(const store *s, const void *key, size_t klen, const MDB_val *v)
{
	return s->format < 2 || sum_ok(key, klen, v);
}

/* Finds where data.mdb is mapped and how much of it the file backs. LMDB does not say
 * where its map is (mdb_env_info's address is only set for MDB_FIXEDMAP), so read it from
 * /proc/self/maps; the map moves when its size changes, so this runs at the start of
 * every snapshot and write transaction (tens of microseconds). */
static void map_view(store *s, int heap_ok, mapview *m)
{
	struct stat st;
	int fd;
	memset(m, 0, sizeof *m);
	m->heap_ok = heap_ok;
	if (mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &st) != 0)
		return;
	m->used = (uint64_t)st.st_size;
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return;
	char line[PATH_MAX + 256];
	while (m->n < 4 && fgets(line, sizeof line, f)) {
		unsigned long lo, hi, off, ino;
		if (sscanf(line, "%lx-%lx %*s %lx %*x:%*x %lu", &lo, &hi, &off, &ino) == 4 &&
		    ino == (unsigned long)st.st_ino && off == 0 && strstr(line, "/data.mdb")) {
			m->lo[m->n] = (const char *)lo;
			m->cap[m->n++] = hi - lo;
		}
	}
	fclose(f);
}

/* 1 when all of v lies in the file-backed part of the map (or, for a write transaction,
 * outside the map, in its own pages). A damaged node can claim a value that runs past the
 * end of the file, where the first touch is SIGBUS. */
static int in_map(const mapview *m, const MDB_val *v)
{
	const char *p = v->mv_data;
	if (!m->n)
		return 1;
	for (int i = 0; i < m->n; i++) {
		if (p < m->lo[i] || p >= m->lo[i] + m->cap[i])
			continue;
		uint64_t off = (uint64_t)(p - m->lo[i]), end = m->used < m->cap[i] ? m->used : m->cap[i];
		return off <= end && v->mv_size <= end - off;
	}
	return m->heap_ok && v->mv_size < ((size_t)1 << 40);
}

/* The meta table's checksum: every entry but "checksum" itself, in key order. */
static int meta_sum(MDB_txn *txn, MDB_dbi dbi, const mapview *mv, uint64_t *out)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc)
		return rc;
	XXH3_state_t st;
	XXH3_64bits_reset(&st);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size == 8 && !memcmp(k.mv_data, "checksum", 8))
			continue;
		if (mv && (!in_map(mv, &k) || !in_map(mv, &v))) {
			rc = MDB_CORRUPTED;
			break;
		}
		uint32_t kl = (uint32_t)k.mv_size, vl = (uint32_t)v.mv_size;
		XXH3_64bits_update(&st, &kl, 4);
		XXH3_64bits_update(&st, k.mv_data, k.mv_size);
		XXH3_64bits_update(&st, &vl, 4);
		XXH3_64bits_update(&st, v.mv_data, v.mv_size);
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		return rc;
	*out = XXH3_64bits_digest(&st);
	return 0;
}

/* ---- transactions ----------------------------------------------------------------------*/

/* Begins a transaction; when another process grew the map, adopts its size and retries. */
static int txn_begin(store *s, unsigned flags, MDB_txn **txn)
{
	int rc = mdb_txn_begin(s->env, NULL, flags, txn);
	if (rc == MDB_MAP_RESIZED) {
		mdb_env_set_mapsize(s->env, 0);
		rc = mdb_txn_begin(s->env, NULL, flags, txn);
	}
	return rc;
}

static int meta_get(MDB_txn *txn, MDB_dbi dbi, const char *key, MDB_val *v)
{
	MDB_val k = {strlen(key), (void *)key};
	return mdb_get(txn, dbi, &k, v);
}

/* Every write transaction that changes the meta table must end with meta_seal, or the next
 * open finds the store damaged. */
static int meta_put(MDB_txn *txn, MDB_dbi dbi, const char *key, const void *data, size_t len)
{
	MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)data};
	return mdb_put(txn, dbi, &k, &v, 0);
}

static int meta_put_str(MDB_txn *txn, MDB_dbi dbi, const char *key, const char *val)
{
	return meta_put(txn, dbi, key, val, strlen(val));
}

static void meta_str(MDB_txn *txn, MDB_dbi dbi, const char *key, char *buf, size_t cap)
{
	MDB_val v;
	buf[0] = 0;
	if (meta_get(txn, dbi, key, &v) == 0) {
		size_t n = v.mv_size < cap - 1 ? v.mv_size : cap - 1;
		memcpy(buf, v.mv_data, n);
		buf[n] = 0;
	}
}

static int meta_int(MDB_txn *txn, MDB_dbi dbi, const char *key, int dflt)
{
	char buf[32];
	meta_str(txn, dbi, key, buf, sizeof buf);
	return buf[0] ? atoi(buf) : dflt;
}

static uint64_t meta_u64(MDB_txn *txn, MDB_dbi dbi, const char *key)
{
	MDB_val v;
	uint64_t x = 0;
	if (meta_get(txn, dbi, key, &v) == 0 && v.mv_size == 8)
		memcpy(&x, v.mv_data, 8);
	return x;
}

/* Records the meta table's checksum; every write transaction ends with it. */
static int meta_seal(MDB_txn *txn, MDB_dbi dbi)
{
	uint64_t h;
	int rc = meta_sum(txn, dbi, NULL, &h);
	return rc ? rc : meta_put(txn, dbi, "checksum", &h, 8);
}

/* EMB_OK when the meta table is sound: its checksum matches (required from format 2 on,
 * and checked whenever present, so damage to "format" cannot pass a store off as an
 * unchecked format 1). Else a damaged error. */
static int meta_check(store *s, MDB_txn *txn, int format, emb_err *err)
{
	mapview mv;
	map_view(s, 0, &mv);
	MDB_val v;
	int rc = meta_get(txn, s->meta, "checksum", &v);
	if (rc == MDB_NOTFOUND)
		return format >= 2 ? damaged(err, s, "the meta table has no checksum") : EMB_OK;
	uint64_t want, got;
	if (rc || !in_map(&mv, &v) || v.mv_size != 8)
		return damaged(err, s, "the meta table's checksum is unreadable");
	memcpy(&want, v.mv_data, 8);
	if ((rc = meta_sum(txn, s->meta, &mv, &got)) != 0)
		return damaged(err, s, "the meta table is unreadable (%s)", mdb_strerror(rc));
	if (got != want)
		return damaged(err, s, "the meta table fails its checksum");
	return EMB_OK;
}

/* ---- open / close ----------------------------------------------------------------------*/

/* Keeps FILE_PAD bytes of zeros past the last page in use. LMDB reads a node through a
 * 16-bit offset from its page and then up to a 16-bit key length: on a damaged page near the
 * end of the file those reads would run past it and fault (SIGBUS) inside LMDB. With the
 * pad they read zeros, which LMDB or the checksums then refuse. LMDB writes pages at their
 * offsets and never shrinks the file, so the pad only has to be topped up after a commit. */
#define FILE_PAD ((uint64_t)160 << 10)
static void pad_file(store *s)
{
	MDB_envinfo info;
	MDB_stat ms;
	struct stat st;
	int fd;
	if (mdb_env_info(s->env, &info) || mdb_env_stat(s->env, &ms) ||
	    mdb_env_get_fd(s->env, &fd) || fstat(fd, &st) != 0)
		return;
	uint64_t want = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize + FILE_PAD;
	if ((uint64_t)st.st_size < want && ftruncate(fd, (off_t)want) != 0)
		return; /* a full disk: the pad is a safety margin, not data */
}

/* Ends a transaction that changed the meta table: with rc 0 reseals the table's checksum,
 * commits and tops up the file's pad; otherwise (or when sealing or the commit fails)
 * aborts and reports "cannot WHAT". Every metadata setter ends here, so none forgets the
 * seal or the pad. */
static int meta_finish(store *s, MDB_txn *txn, int rc, const char *what, emb_err *err)
{
	if (!rc)
		rc = meta_seal(txn, s->meta);
	if (rc) {
		mdb_txn_abort(txn);
		return mdb_fail(err, rc, what, s->dir);
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		return mdb_fail(err, rc, "commit", s->dir);
	pad_file(s);
	return EMB_OK;
}

static int upgrade_compact(store *s, emb_err *err);

static int open_dbis(store *s, emb_err *err)
{
	int upgrade = 0;
	MDB_txn *txn;
	unsigned tflags = s->readonly ? MDB_RDONLY : 0;
	unsigned cflags = s->readonly ? 0 : MDB_CREATE;
	int rc = txn_begin(s, tflags, &txn);
	if (rc)
		return mdb_fail(err, rc, "begin", s->dir);
	struct { const char *name; MDB_dbi *dbi; unsigned flags; } dbs[] = {
		{"meta", &s->meta, 0}, {"docs", &s->docs, 0}, {"docrows", &s->docrows, 0},
		{"rowmap", &s->rowmap, MDB_INTEGERKEY}, {"vectors", &s->vectors, MDB_INTEGERKEY},
		{"seen", &s->seen, 0},
	};
	for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
		rc = mdb_dbi_open(txn, dbs[i].name, dbs[i].flags | cflags, dbs[i].dbi);
		if (rc) {
			mdb_txn_abort(txn);
			if (rc == MDB_NOTFOUND)
				return emb_errf(err, EMB_ESTORE, "%s: not a vector store (no '%s' table)",
						s->dir, dbs[i].name);
			return mdb_fail(err, rc, "open table", s->dir);
		}
	}
	/* Format 3's compact blocks: created by writers, absent from older stores. */
	rc = mdb_dbi_open(txn, "cvectors", MDB_INTEGERKEY | cflags, &s->cvectors);
	if (rc && rc != MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return mdb_fail(err, rc, "open table", s->dir);
	}
	s->has_cvectors = rc == 0;
	char fmt[16];
	MDB_stat ms;
	meta_str(txn, s->meta, "format", fmt, sizeof fmt);
	s->format = atoi(fmt);
	if (!fmt[0] && !s->readonly && mdb_stat(txn, s->meta, &ms) == 0 && ms.ms_entries == 0) {
		char now[32], v[16];
		iso_now(now, sizeof now);
		snprintf(v, sizeof v, "%d", STORE_FORMAT_VERSION);
		s->format = STORE_FORMAT_VERSION;
		if ((rc = meta_put_str(txn, s->meta, "format", v)) ||
		    (rc = meta_put_str(txn, s->meta, "created", now)) ||
		    (rc = meta_put_str(txn, s->meta, "vtype", "f32")) ||
		    (rc = meta_seal(txn, s->meta))) {
			mdb_txn_abort(txn);
			return mdb_fail(err, rc, "initialise", s->dir);
		}
	} else if (s->format > STORE_FORMAT_VERSION) {
		mdb_txn_abort(txn);
		return emb_errf(err, EMB_ESTORE, "%s: store format %s is newer than this program's %d",
				s->dir, fmt, STORE_FORMAT_VERSION);
	} else if (s->format < 1 || (rc = meta_check(s, txn, s->format, err)) != 0) {
		mdb_txn_abort(txn);
		return rc ? rc : damaged(err, s, "its format is unreadable ('%s')", fmt);
	} else if (s->format >= 2 && s->format < STORE_FORMAT_VERSION && !s->readonly) {
		upgrade = 1; /* below, once the vector type is known */
	} else if (s->format < STORE_FORMAT_VERSION && !s->readonly) {
		mdb_txn_abort(txn);
		return emb_errf(err, EMB_ESTORE,
				"store %s has format %d (no checksums); this program writes format %d only: "
				"rebuild it with --rebuild (searching it still works)",
				s->dir, s->format, STORE_FORMAT_VERSION);
	}
	char vt[16];
	meta_str(txn, s->meta, "vtype", vt, sizeof vt);
	if (!vt[0])
		snprintf(vt, sizeof vt, "f32");
	if (quant_parse(vt, &s->vtype) || (s->vtype != QUANT_F32 && !s->has_cvectors)) {
		mdb_txn_abort(txn);
		return damaged(err, s, "unknown vector type '%s'", vt);
	}
	s->dim = meta_int(txn, s->meta, "dim", 0);
	s->block_rows = meta_int(txn, s->meta, "block_rows", 0);
	if (s->dim < 0 || s->dim > 65536 || s->block_rows < 0 || (s->dim > 0) != (s->block_rows > 0)) {
		mdb_txn_abort(txn);
		return damaged(err, s, "dim %d, %d rows a block", s->dim, s->block_rows);
	}
	if (upgrade && (s->vtype == QUANT_F32 || (s->format == 5 && s->vtype == QUANT_BINARY))) {
		/* Formats 2 to 5 with f32 vectors only, and format 5 binary, are format 6 (format 2
		 * without the cvectors table, just made): the upgrade rewrites nothing but
		 * "format". */
		s->format = STORE_FORMAT_VERSION;
		snprintf(fmt, sizeof fmt, "%d", STORE_FORMAT_VERSION);
		if ((rc = meta_put_str(txn, s->meta, "format", fmt)) || (rc = meta_seal(txn, s->meta))) {
			mdb_txn_abort(txn);
			return mdb_fail(err, rc, "upgrade the format", s->dir);
		}
		upgrade = 0;
	}
	rc = mdb_txn_commit(txn);
	if (rc)
		return mdb_fail(err, rc, "commit", s->dir);
	if (upgrade && (rc = upgrade_compact(s, err)) != 0)
		return rc;
	if (!s->readonly)
		pad_file(s);
	return EMB_OK;
}

/* LMDB asserts on some damaged pages (a zeroed leaf page fails IS_LEAF) and then aborts.
 * Reads run under a trap (TRAP_LMDB): the assert callback jumps back to the read's entry,
 * which reports the damage; the read transaction is then only ended, never used again.
 * Writes have no trap (their transaction could not be trusted after the jump): the callback
 * names the store before LMDB aborts. */
static __thread jmp_buf *lmdb_trap;
static __thread char lmdb_what[300];

static void on_lmdb_assert(MDB_env *env, const char *msg)
{
	snprintf(lmdb_what, sizeof lmdb_what, "%s", msg);
	if (lmdb_trap)
		longjmp(*lmdb_trap, 1);
	const store *s = mdb_env_get_userctx(env);
	fprintf(stderr, "store %s is damaged: LMDB: %s; run indexer --check\n", s ? s->dir : "?", msg);
}

/* Runs CALL (which sets `status`) with the trap set; a jump sets status to a damage error
 * and runs CLEANUP. Everything CLEANUP touches must live outside this frame's registers
 * (the heap, or objects the caller passed in), as longjmp requires. */
#define TRAP_LMDB(s, status, err, CALL, CLEANUP)                                      \
	do {                                                                          \
		jmp_buf jb_, *prev_ = lmdb_trap;                                       \
		if (setjmp(jb_) == 0) {                                                \
			lmdb_trap = &jb_;                                              \
			status = (CALL);                                               \
		} else {                                                               \
			lmdb_trap = prev_;                                             \
			CLEANUP;                                                       \
			status = damaged(err, s, "LMDB: %s", lmdb_what);               \
		}                                                                      \
		lmdb_trap = prev_;                                                     \
	} while (0)

/* Refuses a data.mdb shorter than the pages its newest meta page says are in use: LMDB
 * maps the file and would take SIGBUS on the first page past its end. Also routes LMDB's
 * assertion failures to on_lmdb_assert. */
static int check_file_pages(store *s, emb_err *err)
{
	mdb_env_set_userctx(s->env, s);
	mdb_env_set_assert(s->env, on_lmdb_assert);
	MDB_envinfo info;
	MDB_stat ms;
	struct stat st;
	int fd;
	if (mdb_env_info(s->env, &info) || mdb_env_stat(s->env, &ms) ||
	    mdb_env_get_fd(s->env, &fd) || fstat(fd, &st) != 0)
		return emb_errf(err, EMB_EIO, "store %s: cannot read data.mdb's size", s->dir);
	uint64_t need = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
	if ((uint64_t)st.st_size < need)
		return emb_errf(err, EMB_ESTORE,
				"store %s is damaged: %s/data.mdb is truncated (%lld bytes, needs %llu): "
				"restore it from a backup or rebuild it",
				s->dir, s->dir, (long long)st.st_size, (unsigned long long)need);
	return EMB_OK;
}

/* Creates the store link at the canonical place of a missing path: path -> .NAME.STAMP.PID.N
 * beside it, the directory empty until the open initialises it (a run killed in between
 * leaves an empty directory, which counts as empty, or a versioned directory that no link
 * names, which store_path_cleanup removes). A concurrent creator's link wins. */
static int create_link(const char *path, emb_err *err)
{
	char fresh[PATH_MAX], dir[PATH_MAX], base[PATH_MAX], full[PATH_MAX * 2 + 2];
	int rc = store_path_canon(path, dir, base, sizeof dir, err);
	if (!rc)
		rc = store_fresh_dir(path, fresh, sizeof fresh, err);
	if (rc)
		return rc;
	snprintf(full, sizeof full, "%s/%s", strcmp(dir, "/") ? dir : "", base);
	if (symlink(strrchr(fresh, '/') + 1, full) != 0) {
		int e = errno;
		rmdir(fresh);
		if (e != EEXIST)
			return emb_errf(err, EMB_EIO, "store %s: cannot create %s: %s", path, full, strerror(e));
	}
	return EMB_OK;
}

/* Names the store file that the process may not open as it needs (the directory, data.mdb
 * or lock.mdb), for a permission error that says which. */
static const char *denied_file(const char *dir, int readonly, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/data.mdb", dir);
	if (access(buf, readonly ? R_OK : R_OK | W_OK) != 0)
		return buf;
	snprintf(buf, cap, "%s/lock.mdb", dir);
	if (access(buf, F_OK) == 0)
		return buf;
	return dir; /* lock.mdb would have to be created there */
}

int store_open(const char *path, int flags, store **out, emb_err *err)
{
	*out = NULL;
	struct stat st;
	int readonly = !!(flags & STORE_READONLY);
	if (!readonly) {
		/* A writer adds tables to whatever LMDB environment it opens: let it open only a
		 * store of ours, or make one where nothing is. */
		store_path_kind kind;
		int rc = store_path_check(path, &kind, err);
		if (rc)
			return rc;
		if (kind == STORE_PATH_MISSING) {
			if (!(flags & STORE_CREATE))
				return emb_errf(err, EMB_EIO, "store %s: %s", path, strerror(ENOENT));
			if ((rc = create_link(path, err)))
				return rc;
		}
	} else if (lstat(path, &st) != 0) {
		return emb_errf(err, EMB_EIO, "store %s: %s", path, strerror(errno));
	}
	store *s = calloc(1, sizeof *s);
	if (!s)
		return emb_errf(err, EMB_ENOMEM, "store %s: out of memory", path);
	pthread_rwlock_init(&s->maplock, NULL);
	s->readonly = readonly;
	/* A reader that may not write lock.mdb (another user's store, mode 0644) reads without
	 * LMDB's lock file (MDB_NOLOCK). Such a reader does not register in the reader table,
	 * so a writer may reuse the pages of a snapshot it holds once two newer commits exist:
	 * it must keep its snapshots short (one query each, as search does). */
	unsigned nolock = 0;
	/* Resolve the link once; a rebuild may remove the directory between realpath and the
	 * open, in which case resolve again (the link then points at the new one). */
	int rc = 0;
	for (int tries = 0; tries < 20; tries++) {
		if (!realpath(path, s->dir)) {
			rc = emb_errf(err, EMB_EIO, "store %s: %s", path, strerror(errno));
			if (errno == ENOENT) {
				usleep(10000);
				continue;
			}
			break;
		}
		if (stat(s->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
			rc = emb_errf(err, EMB_EIO, "store %s: not a directory", path);
			break;
		}
		char data[PATH_MAX + 16];
		snprintf(data, sizeof data, "%s/data.mdb", s->dir);
		if (s->readonly && access(data, F_OK) != 0) {
			if (errno != ENOENT) {
				rc = emb_errf(err, EMB_EIO, "store %s: %s: %s", path, data, strerror(errno));
				break;
			}
			rc = emb_errf(err, EMB_EIO, "store %s: no store here (%s missing)", path, data);
			usleep(10000);
			continue;
		}
		if ((rc = mdb_env_create(&s->env)) != 0) {
			rc = mdb_fail(err, rc, "create env", s->dir);
			break;
		}
		mdb_env_set_maxdbs(s->env, 8);
		mdb_env_set_maxreaders(s->env, 256);
		unsigned eflags = MDB_NOTLS | (s->readonly ? MDB_RDONLY : 0) | nolock;
		rc = mdb_env_open(s->env, s->dir, eflags, 0644);
		if (rc == 0)
			break;
		mdb_env_close(s->env);
		s->env = NULL;
		if (rc == ENOENT) {
			rc = emb_errf(err, EMB_EIO, "store %s: vanished while opening", path);
			usleep(10000);
			continue;
		}
		if (rc == EACCES || rc == EPERM) {
			if (s->readonly && !nolock && access(data, R_OK) == 0) {
				nolock = MDB_NOLOCK; /* only lock.mdb is out of reach */
				tries--;
				continue;
			}
			char buf[PATH_MAX + 16];
			rc = emb_errf(err, EMB_EIO, "store %s: %s: %s", path,
				      denied_file(s->dir, s->readonly, buf, sizeof buf), strerror(rc));
			break;
		}
		rc = mdb_fail(err, rc, "open", s->dir);
		break;
	}
	if (!s->env) {
		free(s);
		return rc ? rc : emb_errf(err, EMB_EIO, "store %s: cannot open", path);
	}
	if ((rc = check_file_pages(s, err)) != 0) {
		store_close(s);
		return rc;
	}
	if (!s->readonly) {
		/* Readers killed mid-transaction (a SIGKILLed search) leave reader slots that pin
		 * old pages and make the file grow: clear them before writing. */
		int dead;
		mdb_reader_check(s->env, &dead);
		MDB_envinfo info;
		mdb_env_info(s->env, &info);
		/* Address space costs nothing until used; EMB_STORE_MAP_BYTES lets tests start
		 * tiny to exercise growth. */
		size_t initial = INITIAL_MAP;
		const char *env = getenv("EMB_STORE_MAP_BYTES");
		if (env && atol(env) > 0)
			initial = (size_t)atol(env);
		if (info.me_mapsize < initial)
			mdb_env_set_mapsize(s->env, initial);
	}
	if ((rc = open_dbis(s, err)) != 0) {
		store_close(s);
		return rc;
	}
	*out = s;
	return EMB_OK;
}

void store_close(store *s)
{
	if (!s)
		return;
	if (s->env)
		mdb_env_close(s->env);
	ZSTD_freeCCtx(s->cctx);
	ZSTD_freeDCtx(s->dctx);
	pthread_rwlock_destroy(&s->maplock);
	free(s);
}

const char *store_dir(const store *s) { return s->dir; }

int store_stale(const store *s, const char *path)
{
	char now[PATH_MAX];
	if (!realpath(path, now))
		return 0; /* mid-swap or gone: keep using what we have */
	return strcmp(now, s->dir) != 0;
}

/* ---- model identity --------------------------------------------------------------------*/

static void read_model(store *s, MDB_txn *txn, store_model *m)
{
	memset(m, 0, sizeof *m);
	meta_str(txn, s->meta, "model.name", m->name, sizeof m->name);
	meta_str(txn, s->meta, "model.sha256", m->sha256, sizeof m->sha256);
	meta_str(txn, s->meta, "model.family", m->family, sizeof m->family);
	meta_str(txn, s->meta, "model.pooling", m->pooling, sizeof m->pooling);
	meta_str(txn, s->meta, "model.dir", m->model_dir, sizeof m->model_dir);
	m->dim = meta_int(txn, s->meta, "dim", 0);
	m->normalized = meta_int(txn, s->meta, "model.normalized", 0);
	m->needs_prefix = meta_int(txn, s->meta, "model.needs_prefix", 0);
	m->max_tokens = meta_int(txn, s->meta, "model.max_tokens", 0);
}

int store_model_get(store *s, store_model *m, emb_err *err)
{
	MDB_txn *txn;
	int rc = txn_begin(s, MDB_RDONLY, &txn);
	if (rc)
		return mdb_fail(err, rc, "begin", s->dir);
	read_model(s, txn, m);
	mdb_txn_abort(txn);
	if (!m->name[0] || m->dim <= 0)
		return emb_errf(err, EMB_ESTORE, "store %s has no model yet (nothing indexed)", s->dir);
	return EMB_OK;
}

int store_reranker_get(store *s, char *buf, size_t cap, emb_err *err)
{
	MDB_txn *txn;
	int rc = txn_begin(s, MDB_RDONLY, &txn);
	if (rc)
		return mdb_fail(err, rc, "begin", s->dir);
	meta_str(txn, s->meta, "reranker.dir", buf, cap);
	mdb_txn_abort(txn);
	return EMB_OK;
}

int store_set_reranker(store *s, const char *dir, emb_err *err)
{
	if (s->readonly)
		return emb_errf(err, EMB_ESTORE, "store %s: opened read-only", s->dir);
	if (strlen(dir) >= STORE_RERANKER_MAX)
		return emb_errf(err, EMB_EINVAL, "store %s: reranker path longer than %d bytes",
				s->dir, STORE_RERANKER_MAX - 1);
	MDB_txn *txn;
	int rc = txn_begin(s, 0, &txn);
	if (rc)
		return mdb_fail(err, rc, "begin", s->dir);
	if (*dir) {
		rc = meta_put_str(txn, s->meta, "reranker.dir", dir);
	} else {
		MDB_val k = {strlen("reranker.dir"), (void *)"reranker.dir"};
		rc = mdb_del(txn, s->meta, &k, NULL);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	return meta_finish(s, txn, rc, "record reranker", err);
}

static void describe(const store_model *m, char *buf, size_t cap)
{
	snprintf(buf, cap, "'%s' (%s family, sha256 %.12s, dim %d, %s pooling%s, %d tokens%s)",
		 m->name, m->family[0] ? m->family : "unrecorded", m->sha256, m->dim, m->pooling, m->normalized ? ", normalised" : "", m->max_tokens,
		 m->needs_prefix ? ", query/passage prefixes" : "");
}

int store_bind_model(store *s, const store_model *m, emb_err *err)
{
	if (s->readonly)
		return emb_errf(err, EMB_ESTORE, "store %s: opened read-only", s->dir);
	if (m->dim <= 0 || !m->name[0])
		return emb_errf(err, EMB_EINVAL, "store %s: model identity incomplete", s->dir);
	MDB_txn *txn;
	int rc = txn_begin(s, 0, &txn);
	if (rc)
		return mdb_fail(err, rc, "begin", s->dir);
	store_model cur;
	read_model(s, txn, &cur);
	if (cur.name[0]) {
		const int family_differs = cur.family[0] && m->family[0] &&
					   strcmp(cur.family, m->family);
		if (strcmp(cur.name, m->name) || family_differs || strcmp(cur.sha256, m->sha256) ||
		    cur.dim != m->dim ||
		    strcmp(cur.pooling, m->pooling) || cur.normalized != m->normalized ||
		    cur.needs_prefix != m->needs_prefix || cur.max_tokens != m->max_tokens) {
			mdb_txn_abort(txn);
			char a[400], b[400];
			describe(&cur, a, sizeof a);
			describe(m, b, sizeof b);
			return emb_errf(err, EMB_ESTORE,
					"store %s was built with model %s, not %s: use that model, another --store, or --rebuild",
					s->dir, a, b);
		}
		if (strcmp(cur.model_dir, m->model_dir) && m->model_dir[0])
			rc = meta_put_str(txn, s->meta, "model.dir", m->model_dir);
		if (!rc && !cur.family[0] && m->family[0]) /* a store from before families */
			rc = meta_put_str(txn, s->meta, "model.family", m->family);
	} else {
		char buf[32];
		int br = BLOCK_BYTES_TARGET / (m->dim * 4);
		if (br < 1)
			br = 1;
		rc = meta_put_str(txn, s->meta, "model.name", m->name);
		if (!rc) rc = meta_put_str(txn, s->meta, "model.sha256", m->sha256);
		if (!rc && m->family[0]) rc = meta_put_str(txn, s->meta, "model.family", m->family);
		if (!rc) rc = meta_put_str(txn, s->meta, "model.pooling", m->pooling);
		if (!rc) rc = meta_put_str(txn, s->meta, "model.dir", m->model_dir);
		snprintf(buf, sizeof buf, "%d", m->dim);
		if (!rc) rc = meta_put_str(txn, s->meta, "dim", buf);
		snprintf(buf, sizeof buf, "%d", m->normalized);
		if (!rc) rc = meta_put_str(txn, s->meta, "model.normalized", buf);
		snprintf(buf, sizeof buf, "%d", m->needs_prefix);
		if (!rc) rc = meta_put_str(txn, s->meta, "model.needs_prefix", buf);
		snprintf(buf, sizeof buf, "%d", m->max_tokens);
		if (!rc) rc = meta_put_str(txn, s->meta, "model.max_tokens", buf);
		snprintf(buf, sizeof buf, "%d", br);
		if (!rc) rc = meta_put_str(txn, s->meta, "block_rows", buf);
		if (!rc) {
			s->dim = m->dim;
			s->block_rows = br;
		}
	}
	if ((rc = meta_finish(s, txn, rc, "record model", err)))
		return rc;
	return EMB_OK;
}

quant_type store_vtype(const store *s) { return s->vtype; }

int store_set_vtype(store *s, quant_type vt, emb_err *err)
{
	if (vt == s->vtype)
		return EMB_OK;
	if (s->readonly)
		return emb_errf(err, EMB_ESTORE, "store %s: opened read-only", s->dir);
	MDB_txn *txn;
	int rc = txn_begin(s, 0, &txn);
	if (rc)
		return mdb_fail(err, rc, "begin", s->dir);
	uint64_t rows = meta_u64(txn, s->meta, "rows");
	if (rows) {
		mdb_txn_abort(txn);
		return emb_errf(err, EMB_ESTORE,
				"store %s holds %s vectors, not %s: changing the vector type needs --rebuild",
				s->dir, quant_name(s->vtype), quant_name(vt));
	}
	MDB_val k = {strlen("int8.scales"), "int8.scales"};
	rc = mdb_del(txn, s->meta, &k, NULL);
	if (rc == MDB_NOTFOUND)
		rc = 0;
	if (!rc)
		rc = mdb_drop(txn, s->cvectors, 0);
	if (!rc)
		rc = meta_put_str(txn, s->meta, "vtype", quant_name(vt));
	if ((rc = meta_finish(s, txn, rc, "set the vector type", err)))
		return rc;
	s->vtype = vt;
	return EMB_OK;
}

uint64_t store_id_hash(const char *id, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)id[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

int store_shard_of(const char *id, size_t len, int count)
{
	return count > 1 ? (int)(store_id_hash(id, len) % (uint64_t)count) : 0;
}

/* Reads meta "shard" in txn: 0 with *index, *count (0/0 when absent), -1 when malformed. */
static int shard_read(store *s, MDB_txn *txn, int *index, int *count)
{
	char buf[32];
	*index = *count = 0;
	meta_str(txn, s->meta, "shard", buf, sizeof buf);
	if (!buf[0])
		return 0;
	int i, n, end = 0;
	if (sscanf(buf, "%d/%d%n", &i, &n, &end) != 2 || buf[end] || n < 1 || i < 0 || i >= n)
		return -1;
	*index = i;
	*count = n;
	return 0;
}

int store_shard_get(store *s, int *index, int *count, emb_err *err)
{
	MDB_txn *txn;
	int rc = txn_begin(s, MDB_RDONLY, &txn);
	if (rc)
		return mdb_fail(err, rc, "begin", s->dir);
	rc = shard_read(s, txn, index, count);
	mdb_txn_abort(txn);
	if (rc)
		return emb_errf(err, EMB_ESTORE, "store %s is damaged: malformed shard in meta; run indexer --check",
				s->dir);
	return EMB_OK;
}

int store_set_shard(store *s, int index, int count, emb_err *err)
{
	if (count < 1 || index < 0 || index >= count)
		return emb_errf(err, EMB_EINVAL, "shard %d/%d: the index must be 0 to count - 1", index, count);
	int ci, cn;
	if (store_shard_get(s, &ci, &cn, err))
		return err ? err->code : EMB_ESTORE;
	if (cn == count && ci == index)
		return EMB_OK;
	if (cn)
		return emb_errf(err, EMB_ESTORE, "store %s is shard %d/%d, not %d/%d", s->dir, ci, cn,
				index, count);
	if (s->readonly)
		return emb_errf(err, EMB_ESTORE, "store %s: opened read-only", s->dir);
	MDB_txn *txn;
	int rc = txn_begin(s, 0, &txn);
	if (rc)
		return mdb_fail(err, rc, "begin", s->dir);
	if (meta_u64(txn, s->meta, "docs")) {
		mdb_txn_abort(txn);
		return emb_errf(err, EMB_ESTORE,
				"store %s holds documents and is not a shard: --shard needs a new store or --rebuild",
				s->dir);
	}
	char buf[32];
	snprintf(buf, sizeof buf, "%d/%d", index, count);
	rc = meta_put_str(txn, s->meta, "shard", buf);
	return meta_finish(s, txn, rc, "record the shard", err);
}

int store_stats_get(store *s, store_stats *st, emb_err *err)
{
	memset(st, 0, sizeof *st);
	MDB_txn *txn;
	int rc = txn_begin(s, MDB_RDONLY, &txn);
	if (rc)
		return mdb_fail(err, rc, "begin", s->dir);
	st->docs = meta_u64(txn, s->meta, "docs");
	st->rows = meta_u64(txn, s->meta, "rows");
	st->dim = meta_int(txn, s->meta, "dim", 0);
	st->block_rows = meta_int(txn, s->meta, "block_rows", 0);
	st->vtype = s->vtype;
	st->row_bytes_scan = quant_row_bytes(s->vtype, st->dim);
	meta_str(txn, s->meta, "created", st->created, sizeof st->created);
	meta_str(txn, s->meta, "updated", st->updated, sizeof st->updated);
	mdb_txn_abort(txn);
	MDB_envinfo info;
	MDB_stat ms;
	mdb_env_info(s->env, &info);
	mdb_env_stat(s->env, &ms);
	st->map_size = info.me_mapsize;
	st->file_size = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
	return EMB_OK;
}

/* The leaf and branch page counts of the id-keyed tables (0 when unreadable) and the page
 * size, for the transaction estimates. */
static void id_table_pages(store *s, double lp[6], unsigned *psize)
{
	memset(lp, 0, 6 * sizeof *lp);
	*psize = 4096;
	pthread_rwlock_rdlock(&s->maplock);
	MDB_txn *txn;
	if (txn_begin(s, MDB_RDONLY, &txn) == 0) {
		const MDB_dbi t[3] = {s->docs, s->docrows, s->seen};
		for (int i = 0; i < 3; i++) {
			MDB_stat ms;
			if (mdb_stat(txn, t[i], &ms) != 0)
				continue;
			lp[2 * i] = (double)ms.ms_leaf_pages;
			lp[2 * i + 1] = (double)ms.ms_branch_pages;
			*psize = ms.ms_psize;
		}
		mdb_txn_abort(txn);
	}
	pthread_rwlock_unlock(&s->maplock);
}

/* k documents at random places dirty L(1 - e^(-k/L)) of a table's L pages (and at least one
 * leaf of a table still empty). */
static double txn_pages(const double lp[6], double k)
{
	double pages = 0;
	for (int i = 0; i < 6; i++)
		pages += lp[i] > 0 ? lp[i] * -expm1(-k / lp[i]) : i % 2 == 0;
	return pages;
}

uint64_t store_txn_pages_estimate(store *s, uint64_t docs)
{
	double lp[6];
	unsigned psize;
	id_table_pages(s, lp, &psize);
	return (uint64_t)ceil(txn_pages(lp, (double)docs));
}

uint64_t store_txn_docs_within(store *s, uint64_t bytes)
{
	double lp[6];
	unsigned psize;
	id_table_pages(s, lp, &psize);
	const double budget = (double)bytes / psize;
	if (txn_pages(lp, 1e18) <= budget)
		return UINT64_MAX; /* every page of the tables fits */
	uint64_t lo = 1, hi = 2; /* the estimate grows with k: find the last k within */
	while (txn_pages(lp, (double)hi) <= budget)
		lo = hi, hi *= 2;
	while (hi - lo > 1) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (txn_pages(lp, (double)mid) <= budget)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* ---- the write transaction -------------------------------------------------------------*/

typedef struct cblock {
	uint32_t block;
	uint32_t nrows;
	int dirty;
	float *buf; /* block_rows * dim */
} cblock;

typedef struct wtx {
	store *s;
	MDB_txn *txn;
	mapview mv;
	emb_err *err;
	uint64_t docs, rows;
	cblock cache[CACHE_BLOCKS];
	int ncache;
	float *tmpvec;
	double *ss;       /* each PUT window's sum of squares, in op order (check_vectors) */
	size_t *ssat;     /* op i's first entry in ss */
	int *order;       /* the ops by id (stable): see apply_ops */
	/* The last key of docs, docrows and seen when the transaction began: a new document's
	 * id past it is put with MDB_APPEND (see put_append), others without trying. */
	struct { char key[512]; size_t len; int any; } last[3];
	uint32_t *rowbuf, *rowbuf2; /* the row lists of the document at hand, and of another */
	size_t rowcap, rowcap2;
	char *zbuf;
	size_t zcap;
	float *tmpscales; /* int8: dim floats, the scales of the compact block being written */
	/* Grouped compact values (format 6, both compact types): the f32 blocks written by
	 * this transaction, as (group, bit mask of its blocks) pairs; each group is rewritten
	 * once, at the end (groups_flush), from them and its previous value. */
	struct tgroup { uint32_t g, mask; } *tg;
	size_t ntg, captg;
	store_apply_result res;
} wtx;

/* mdb_put with MDB_APPEND first: a key past the table's last one (new rows and blocks
 * always; ids when a corpus comes in id order) is added at the end without a search, and a
 * full page then splits at the end instead of in half, so tables written in key order end
 * up with full pages (a docs table of 818-byte values: 4 a page instead of 3). Any other
 * key (MDB_KEYEXIST: not past the last) is put the usual way, so the result is the same. */
static int put_append(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v, unsigned flags)
{
	size_t vlen = v->mv_size;
	void *vdata = v->mv_data;
	int rc = mdb_put(txn, dbi, k, v, flags | MDB_APPEND);
	if (rc == MDB_KEYEXIST) {
		v->mv_size = vlen;
		v->mv_data = vdata;
		rc = mdb_put(txn, dbi, k, v, flags);
	}
	return rc;
}

/* Notes that f32 block b was written: its group's compact value is rewritten at the end. */
static int touch_block(wtx *w, uint32_t b)
{
	uint32_t G = cgroup(w->s), g = b / G, bit = 1u << (b % G);
	if (w->ntg && w->tg[w->ntg - 1].g == g) {
		w->tg[w->ntg - 1].mask |= bit;
		return 0;
	}
	if (w->ntg == w->captg) {
		size_t cap = w->captg ? 2 * w->captg : 64;
		struct tgroup *n = realloc(w->tg, cap * sizeof *n);
		if (!n)
			return ENOMEM;
		w->tg = n;
		w->captg = cap;
	}
	w->tg[w->ntg++] = (struct tgroup){g, bit};
	return 0;
}

static int cmp_tgroup(const void *a, const void *b)
{
	uint32_t x = ((const struct tgroup *)a)->g, y = ((const struct tgroup *)b)->g;
	return x < y ? -1 : x > y;
}

/* Group g's compact value (store.h, format 6) for the transaction's w->rows rows: the
 * scales, codes and row checksums of the blocks this transaction wrote are made from their
 * f32 blocks (read back and verified), the others copied from the group's previous value
 * (verified first: a damaged group is an error, never copied on). */
static int put_group(wtx *w, uint32_t g, uint32_t mask)
{
	store *s = w->s;
	uint32_t G = cgroup(s), br = (uint32_t)s->block_rows, per = G * br;
	size_t rowb = quant_row_bytes(s->vtype, s->dim), frowb = (size_t)s->dim * sizeof(float);
	size_t head = cb_head(s, s->vtype); /* int8: each block's scales */
	uint64_t first = (uint64_t)g * per;
	uint32_t n = w->rows > first ? (uint32_t)(w->rows - first < per ? w->rows - first : per) : 0;
	MDB_val k = {sizeof g, &g}, ov;
	uint8_t *old = NULL;
	glayout ol = {0};
	int rc = mdb_get(w->txn, s->cvectors, &k, &ov);
	if (rc == 0) {
		ol = group_layout(s, group_rows(ov.mv_size, rowb, head, br, per));
		if (!ol.n || !in_map(&w->mv, &ov) || !group_sound(s, g, ov.mv_data, &ol)) {
			damaged(w->err, s, "compact block %u fails its checksum", g);
			return -1;
		}
		if (!(old = malloc(ov.mv_size)))
			return ENOMEM;
		memcpy(old, ov.mv_data, ov.mv_size); /* the put below may reuse its pages */
	} else if (rc != MDB_NOTFOUND) {
		return rc;
	}
	if (n == 0) {
		free(old);
		rc = old ? mdb_del(w->txn, s->cvectors, &k, NULL) : 0;
		return rc;
	}
	const glayout l = group_layout(s, n);
	MDB_val v = {l.sum + SUM_BYTES + (size_t)n * SUM_BYTES + (size_t)l.nb * SUM_BYTES, NULL};
	if ((rc = put_append(w->txn, s->cvectors, &k, &v, MDB_RESERVE)) != 0) {
		free(old);
		return rc;
	}
	uint8_t *val = v.mv_data;
	float *sc = head ? w->tmpscales : NULL;
	for (uint32_t j = 0; j < l.nb && !rc; j++) {
		uint32_t b = g * G + j, m;
		uint8_t *c = val + l.codes + (size_t)j * br * rowb, *r = val + group_rsums(s, &l, j, &m);
		if (mask >> j & 1) {
			MDB_val fk = {sizeof b, &b}, fv;
			if ((rc = mdb_get(w->txn, s->vectors, &fk, &fv)) != 0 || !in_map(&w->mv, &fv) ||
			    fv.mv_size != (size_t)m * frowb + SUM_BYTES || !sum_ok(&b, sizeof b, &fv)) {
				damaged(w->err, s, "vector block %u fails its checksum", b);
				rc = -1;
				break;
			}
			if (sc) {
				quant_i8_scales((const float *)fv.mv_data, m, s->dim, sc);
				memcpy(val + (size_t)j * head, sc, head);
			}
			for (uint32_t i = 0; i < m; i++) {
				const float *x = (const float *)((const char *)fv.mv_data + i * frowb);
				if (sc)
					quant_i8_encode(x, s->dim, sc, c + (size_t)i * rowb);
				else
					quant_bin_encode(x, s->dim, c + (size_t)i * rowb);
				uint64_t rs = row_sum(b, i, x, s->dim);
				memcpy(r + (size_t)i * SUM_BYTES, &rs, SUM_BYTES);
			}
		} else if (!old || (uint64_t)j * br + m > ol.n) {
			damaged(w->err, s, "compact block %u lacks the rows of vector block %u", g, b);
			rc = -1;
			break;
		} else {
			uint32_t om;
			memcpy(val + (size_t)j * head, old + (size_t)j * head, head);
			memcpy(c, old + ol.codes + (size_t)j * br * rowb, (size_t)m * rowb);
			memcpy(r, old + group_rsums(s, &ol, j, &om), (size_t)m * SUM_BYTES);
		}
		sum_put(&b, sizeof b, r, (size_t)m * SUM_BYTES);
	}
	if (!rc)
		sum_put(&g, sizeof g, val, l.sum);
	free(old);
	return rc;
}

/* Rewrites every group the transaction touched (grouped compact blocks only). */
static int groups_flush(wtx *w)
{
	if (!w->ntg)
		return 0;
	qsort(w->tg, w->ntg, sizeof *w->tg, cmp_tgroup);
	int rc = 0;
	for (size_t i = 0; i < w->ntg && !rc; i++) {
		uint32_t mask = w->tg[i].mask;
		while (i + 1 < w->ntg && w->tg[i + 1].g == w->tg[i].g)
			mask |= w->tg[++i].mask;
		rc = put_group(w, w->tg[i].g, mask);
	}
	w->ntg = 0;
	return rc;
}

static int cache_flush(wtx *w)
{
	store *s = w->s;
	for (int i = 0; i < w->ncache; i++) {
		cblock *c = &w->cache[i];
		if (!c->dirty)
			continue;
		MDB_val k = {sizeof c->block, &c->block};
		int rc;
		if (c->nrows == 0) {
			rc = mdb_del(w->txn, s->vectors, &k, NULL);
			if (rc == MDB_NOTFOUND)
				rc = 0;
		} else {
			size_t bytes = (size_t)c->nrows * s->dim * sizeof(float);
			MDB_val v = {bytes + SUM_BYTES, NULL};
			rc = put_append(w->txn, s->vectors, &k, &v, MDB_RESERVE);
			if (!rc) {
				memcpy(v.mv_data, c->buf, bytes);
				sum_put(&c->block, sizeof c->block, v.mv_data, bytes);
			}
		}
		if (!rc && s->vtype != QUANT_F32)
			rc = touch_block(w, c->block); /* its group is rewritten at the end */
		if (rc)
			return rc;
		c->dirty = 0;
	}
	return 0;
}

static void cache_free(wtx *w)
{
	for (int i = 0; i < w->ncache; i++)
		free(w->cache[i].buf);
	w->ncache = 0;
}

/* The cached copy of vector block b (loaded on first use). */
static int cache_get(wtx *w, uint32_t b, cblock **out)
{
	store *s = w->s;
	for (int i = 0; i < w->ncache; i++)
		if (w->cache[i].block == b) {
			*out = &w->cache[i];
			return 0;
		}
	if (w->ncache == CACHE_BLOCKS) {
		int rc = cache_flush(w);
		if (rc)
			return rc;
		cache_free(w);
	}
	cblock *c = &w->cache[w->ncache];
	c->buf = malloc((size_t)s->block_rows * s->dim * sizeof(float));
	if (!c->buf)
		return ENOMEM;
	c->block = b;
	c->nrows = 0;
	c->dirty = 0;
	MDB_val k = {sizeof b, &b}, v;
	int rc = mdb_get(w->txn, s->vectors, &k, &v);
	if (rc == 0) {
		size_t cap = (size_t)s->block_rows * s->dim * sizeof(float);
		size_t rowb = (size_t)s->dim * sizeof(float), n = v.mv_size - SUM_BYTES;
		if (!in_map(&w->mv, &v) || v.mv_size < SUM_BYTES || n % rowb || n > cap ||
		    !sum_ok(&b, sizeof b, &v)) {
			free(c->buf);
			damaged(w->err, s, "vector block %u fails its checksum", b);
			return -1;
		}
		memcpy(c->buf, v.mv_data, n);
		c->nrows = (uint32_t)(n / rowb);
	} else if (rc != MDB_NOTFOUND) {
		free(c->buf);
		return rc;
	}
	w->ncache++;
	*out = c;
	return 0;
}

static int row_write(wtx *w, uint64_t r, const float *vec)
{
	cblock *c;
	uint32_t br = (uint32_t)w->s->block_rows;
	int rc = cache_get(w, (uint32_t)(r / br), &c);
	if (rc)
		return rc;
	uint32_t i = (uint32_t)(r % br);
	memcpy(c->buf + (size_t)i * w->s->dim, vec, (size_t)w->s->dim * sizeof(float));
	if (i + 1 > c->nrows)
		c->nrows = i + 1;
	c->dirty = 1;
	return 0;
}

static int row_read(wtx *w, uint64_t r, float *out)
{
	cblock *c;
	uint32_t br = (uint32_t)w->s->block_rows;
	int rc = cache_get(w, (uint32_t)(r / br), &c);
	if (rc)
		return rc;
	memcpy(out, c->buf + (size_t)(r % br) * w->s->dim, (size_t)w->s->dim * sizeof(float));
	return 0;
}

static int row_drop_last(wtx *w)
{
	cblock *c;
	uint64_t last = w->rows - 1;
	uint32_t br = (uint32_t)w->s->block_rows;
	int rc = cache_get(w, (uint32_t)(last / br), &c);
	if (rc)
		return rc;
	c->nrows = (uint32_t)(last % br);
	c->dirty = 1;
	w->rows--;
	return 0;
}

/* Copies the u32 row list of id into *buf (grown as needed, *cap entries); *n rows (0 when
 * none). */
static int get_rows_into(wtx *w, MDB_val *key, uint32_t **buf, size_t *cap, size_t *n)
{
	MDB_val v;
	int rc = mdb_get(w->txn, w->s->docrows, key, &v);
	*n = 0;
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return rc;
	if (!in_map(&w->mv, &v) || v.mv_size < SUM_BYTES || (v.mv_size - SUM_BYTES) % 4 ||
	    !sum_ok(key->mv_data, key->mv_size, &v)) {
		damaged(w->err, w->s, "the row list of '%.*s' fails its checksum", (int)key->mv_size,
			(char *)key->mv_data);
		return -1;
	}
	size_t cnt = (v.mv_size - SUM_BYTES) / 4;
	if (cnt > *cap) {
		uint32_t *nb = realloc(*buf, cnt * 4);
		if (!nb)
			return ENOMEM;
		*buf = nb;
		*cap = cnt;
	}
	memcpy(*buf, v.mv_data, cnt * 4);
	*n = cnt;
	return 0;
}

static int get_rows(wtx *w, MDB_val *key, size_t *n)
{
	return get_rows_into(w, key, &w->rowbuf, &w->rowcap, n);
}

/* Writes rows[0..n) as the row list of key (with its checksum); append: try MDB_APPEND
 * first (a new document's list). */
static int put_rows(wtx *w, MDB_val *key, const uint32_t *rows, size_t n, int append)
{
	MDB_val v = {n * 4 + SUM_BYTES, NULL};
	int rc = append ? put_append(w->txn, w->s->docrows, key, &v, MDB_RESERVE)
			: mdb_put(w->txn, w->s->docrows, key, &v, MDB_RESERVE);
	if (!rc) {
		memcpy(v.mv_data, rows, n * 4);
		sum_put(key->mv_data, key->mv_size, v.mv_data, n * 4);
	}
	return rc;
}

static int cmp_u32_desc(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

/* Moves the store's last row into slot r (r < last): vector, rowmap entry, and the row
 * list of the document that owned the last row. */
static int move_last_into(wtx *w, uint32_t r)
{
	store *s = w->s;
	uint32_t last = (uint32_t)(w->rows - 1);
	int rc = row_read(w, last, w->tmpvec);
	if (!rc)
		rc = row_write(w, r, w->tmpvec);
	if (rc)
		return rc;
	MDB_val lk = {4, &last}, rk = {4, &r}, v;
	if ((rc = mdb_get(w->txn, s->rowmap, &lk, &v)) != 0)
		return rc;
	char entry[ROWMAP_HDR + STORE_MAX_ID_BYTES + SUM_BYTES];
	if (!in_map(&w->mv, &v) || v.mv_size <= ROWMAP_HDR + SUM_BYTES || v.mv_size > sizeof entry ||
	    !sum_ok(&last, 4, &v)) {
		damaged(w->err, s, "the entry of row %u fails its checksum", last);
		return -1;
	}
	size_t elen = v.mv_size - SUM_BYTES;
	memcpy(entry, v.mv_data, elen);
	sum_put(&r, 4, entry, elen); /* the same entry under its new key */
	MDB_val ev = {elen + SUM_BYTES, entry};
	if ((rc = mdb_put(w->txn, s->rowmap, &rk, &ev, 0)) != 0)
		return rc;
	MDB_val idk = {elen - ROWMAP_HDR, entry + ROWMAP_HDR};
	size_t n;
	if ((rc = get_rows_into(w, &idk, &w->rowbuf2, &w->rowcap2, &n)) != 0)
		return rc;
	/* Rewrite that document's list with last replaced by r. */
	for (size_t i = 0; i < n; i++)
		if (w->rowbuf2[i] == last)
			w->rowbuf2[i] = r;
	return put_rows(w, &idk, w->rowbuf2, n, 0);
}

static int delete_doc(wtx *w, MDB_val *key, int *found)
{
	store *s = w->s;
	*found = 0;
	size_t n;
	int rc = get_rows(w, key, &n);
	if (rc)
		return rc;
	MDB_val v;
	rc = mdb_get(w->txn, s->docs, key, &v);
	if (rc == MDB_NOTFOUND)
		return n ? MDB_CORRUPTED : 0;
	if (rc)
		return rc;
	*found = 1;
	/* Highest rows first: then the last row is never one of this document's remaining
	 * rows, so a move never lands on a slot we are about to free. */
	qsort(w->rowbuf, n, 4, cmp_u32_desc);
	for (size_t i = 0; i < n; i++) {
		uint32_t r = w->rowbuf[i];
		uint32_t last = (uint32_t)(w->rows - 1);
		if (r > last)
			return MDB_CORRUPTED;
		if (r != last && (rc = move_last_into(w, r)) != 0)
			return rc;
		MDB_val lk = {4, &last};
		if ((rc = mdb_del(w->txn, s->rowmap, &lk, NULL)) != 0)
			return rc;
		if ((rc = row_drop_last(w)) != 0)
			return rc;
	}
	if ((rc = mdb_del(w->txn, s->docrows, key, NULL)) && rc != MDB_NOTFOUND)
		return rc;
	if ((rc = mdb_del(w->txn, s->docs, key, NULL)) != 0)
		return rc;
	w->docs--;
	return 0;
}

static int mark_seen(wtx *w, MDB_val *key, int append)
{
	MDB_val v = {0, ""};
	return append ? put_append(w->txn, w->s->seen, key, &v, 0)
		      : mdb_put(w->txn, w->s->seen, key, &v, 0);
}

static double sum_squares(const float *v, int dim)
{
	double ss = 0;
	for (int i = 0; i < dim; i++)
		ss += (double)v[i] * v[i];
	return ss;
}

/* Scales v to unit length, given ss = sum_squares(v) (store_apply computes it once, in
 * check_vectors, for both the check and this). */
static void scale_unit(float *v, int dim, double ss)
{
	if (ss > 0) {
		double inv = 1.0 / sqrt(ss); /* in double: 1/norm of a tiny vector overflows a float */
		for (int i = 0; i < dim; i++)
			v[i] = (float)(v[i] * inv);
	}
}

static void normalize(float *v, int dim)
{
	scale_unit(v, dim, sum_squares(v, dim));
}

/* Builds d's "docs" value (header, zstd(text | title | meta) at level 3, SUM keyed by the id)
 * in *buf, grown as needed (*cap bytes), and sets *len. store_apply and store_doc_pack both
 * come here, so a packed value is the one store_apply would have made. Returns 0, ENOMEM, or
 * -1 with err filled ("store DIR: compressing 'ID': ..."; "store_doc_pack: ..." when dir is
 * NULL). */
static int doc_build(ZSTD_CCtx *cctx, const store_doc *d, char **buf, size_t *cap, size_t *len,
		     const char *dir, emb_err *err)
{
	const char *pre = dir ? "store " : "store_doc_pack", *where = dir ? dir : "";
	size_t plain = d->text_len + d->title_len + d->meta_len;
	if (d->text_len > UINT32_MAX || d->title_len > UINT32_MAX || d->meta_len > UINT32_MAX ||
	    ZSTD_compressBound(plain) > UINT32_MAX) {
		emb_errf(err, EMB_EINVAL, "%s%s: document '%.*s' is larger than 4 GiB", pre, where,
			 (int)d->id_len, d->id);
		return -1;
	}
	size_t bound = ZSTD_compressBound(plain);
	size_t need = DOC_HDR + bound + SUM_BYTES + plain; /* + plain: staging */
	if (need > *cap) {
		char *nb = realloc(*buf, need);
		if (!nb)
			return ENOMEM;
		*buf = nb;
		*cap = need;
	}
	char *v = *buf, *stage = v + DOC_HDR + bound + SUM_BYTES;
	if (d->text_len)
		memcpy(stage, d->text, d->text_len);
	if (d->title_len)
		memcpy(stage + d->text_len, d->title, d->title_len);
	if (d->meta_len)
		memcpy(stage + d->text_len + d->title_len, d->meta, d->meta_len);
	size_t z = ZSTD_compressCCtx(cctx, v + DOC_HDR, bound, stage, plain, 3);
	if (ZSTD_isError(z)) {
		emb_errf(err, EMB_ESTORE, "%s%s: compressing '%.*s': %s", pre, where, (int)d->id_len,
			 d->id, ZSTD_getErrorName(z));
		return -1;
	}
	uint32_t hdr[5] = {(uint32_t)d->text_len, (uint32_t)d->title_len, (uint32_t)d->meta_len,
			   (uint32_t)z, (uint32_t)d->nwin};
	uint32_t magic = DOC_MAGIC;
	memcpy(v, &magic, 4);
	memcpy(v + 4, d->hash, STORE_HASH_BYTES);
	memcpy(v + 4 + STORE_HASH_BYTES, hdr, sizeof hdr);
	sum_put(d->id, d->id_len, v, DOC_HDR + z);
	*len = DOC_HDR + z + SUM_BYTES;
	return 0;
}

/* store_doc_pack's per-thread state: a zstd context and a scratch buffer, reached through a
 * thread-local pointer (fast, and a root that leak checkers see) and registered under a
 * pthread key whose destructor frees them when the thread exits. */
typedef struct packctx {
	ZSTD_CCtx *cctx;
	char *buf;
	size_t cap;
} packctx;
static __thread packctx *pack_tls;
static pthread_key_t pack_key;
static pthread_once_t pack_once = PTHREAD_ONCE_INIT;
static int pack_key_ok;

static void packctx_free(void *p)
{
	packctx *c = p;
	if (!c)
		return;
	ZSTD_freeCCtx(c->cctx);
	free(c->buf);
	free(c);
	pack_tls = NULL;
}

static void pack_key_make(void)
{
	pack_key_ok = pthread_key_create(&pack_key, packctx_free) == 0;
}

static packctx *pack_ctx(void)
{
	if (pack_tls)
		return pack_tls;
	pthread_once(&pack_once, pack_key_make);
	packctx *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	if (!(c->cctx = ZSTD_createCCtx())) {
		free(c);
		return NULL;
	}
	if (pack_key_ok)
		pthread_setspecific(pack_key, c);
	return pack_tls = c;
}

int store_doc_pack(const store_doc *d, store_packed *out, emb_err *err)
{
	out->buf = NULL;
	out->len = 0;
	if (d->id_len == 0 || !d->id)
		return emb_errf(err, EMB_EINVAL, "store_doc_pack: empty document id");
	if (d->id_len > STORE_MAX_ID_BYTES)
		return emb_errf(err, EMB_EINVAL, "store_doc_pack: document id '%.40s...' is %zu bytes (max %d)",
				d->id, d->id_len, STORE_MAX_ID_BYTES);
	if (d->nwin < 1)
		return emb_errf(err, EMB_EINVAL, "store_doc_pack: document '%.*s' has no windows",
				(int)d->id_len, d->id);
	packctx *c = pack_ctx();
	if (!c)
		return emb_errf(err, EMB_ENOMEM, "store_doc_pack: out of memory");
	size_t len;
	int rc = doc_build(c->cctx, d, &c->buf, &c->cap, &len, NULL, err);
	if (rc == ENOMEM)
		return emb_errf(err, EMB_ENOMEM, "store_doc_pack: out of memory");
	if (rc)
		return err ? err->code : EMB_ESTORE;
	if (!(out->buf = malloc(len)))
		return emb_errf(err, EMB_ENOMEM, "store_doc_pack: out of memory");
	memcpy(out->buf, c->buf, len);
	out->len = len;
	/* A long document leaves a large scratch buffer: keep at most 1 MiB per thread. */
	if (c->cap > ((size_t)1 << 20)) {
		free(c->buf);
		c->buf = NULL;
		c->cap = 0;
	}
	return EMB_OK;
}

void store_packed_free(store_packed *p)
{
	if (!p)
		return;
	free(p->buf);
	p->buf = NULL;
	p->len = 0;
}

/* A packed value must be the one store_doc_pack made for this op's document: the checksum
 * under the op's id (a value packed for another id fails it), the header against the op's
 * lengths, hash and nwin (the rows written depend on them), and the zstd frame's length. */
static int check_packed(store *s, const store_doc *d, emb_err *err)
{
	const store_packed *p = d->packed;
	const char *v = p->buf;
	const char *why = NULL;
	uint32_t magic = 0, hdr[5] = {0};
	if (!v || p->len < DOC_HDR + SUM_BYTES) {
		why = "is too short to be a document value";
	} else {
		memcpy(&magic, v, 4);
		memcpy(hdr, v + 4 + STORE_HASH_BYTES, sizeof hdr);
		MDB_val mv = {p->len, (void *)v};
		if (magic != DOC_MAGIC || hdr[3] != p->len - DOC_HDR - SUM_BYTES)
			why = "is not a document value of this format";
		else if (!sum_ok(d->id, d->id_len, &mv))
			why = "was packed for another id (or is damaged)";
		else if (hdr[4] != (uint32_t)d->nwin)
			why = "states another number of windows";
		else if (hdr[0] != d->text_len || hdr[1] != d->title_len || hdr[2] != d->meta_len ||
			 memcmp(v + 4, d->hash, STORE_HASH_BYTES))
			why = "states other lengths or another content hash";
		else if (ZSTD_getFrameContentSize(v + DOC_HDR, hdr[3]) !=
			 (unsigned long long)hdr[0] + hdr[1] + hdr[2])
			why = "holds a zstd frame of another length";
	}
	if (why)
		return emb_errf(err, EMB_EINVAL,
				"store %s: document '%.*s': its packed value %s; nothing of this batch was stored",
				s->dir, (int)d->id_len, d->id, why);
	return EMB_OK;
}

/* LMDB's order of keys in the id-keyed tables (its default comparison): bytes, then length. */
static int id_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	return c ? c : (alen > blen) - (alen < blen);
}

/* 1 when key sorts after table t's (0 docs, 1 docrows, 2 seen) last key at the start of the
 * transaction. */
static int past_last(const wtx *w, int t, const MDB_val *key)
{
	return !w->last[t].any || id_cmp(key->mv_data, key->mv_size, w->last[t].key, w->last[t].len) > 0;
}

static int put_doc(wtx *w, const store_doc *d, const double *ss, emb_err *err)
{
	store *s = w->s;
	MDB_val key = {d->id_len, (void *)d->id};
	int found, rc = delete_doc(w, &key, &found);
	if (rc)
		return rc;
	if (found)
		w->res.updated++;
	else
		w->res.added++;

	/* Document value: made ahead by store_doc_pack (checked in store_apply), or here. */
	MDB_val dv;
	if (d->packed) {
		dv = (MDB_val){d->packed->len, d->packed->buf};
	} else {
		if (!s->cctx && !(s->cctx = ZSTD_createCCtx()))
			return ENOMEM;
		size_t len;
		if ((rc = doc_build(s->cctx, d, &w->zbuf, &w->zcap, &len, s->dir, err)) != 0)
			return rc;
		dv = (MDB_val){len, w->zbuf};
	}
	if ((rc = past_last(w, 0, &key) ? put_append(w->txn, s->docs, &key, &dv, 0)
				       : mdb_put(w->txn, s->docs, &key, &dv, 0)) != 0)
		return rc;

	/* Windows: append rows at the end. */
	if ((size_t)d->nwin > w->rowcap) {
		uint32_t *nb = realloc(w->rowbuf, (size_t)d->nwin * 4);
		if (!nb)
			return ENOMEM;
		w->rowbuf = nb;
		w->rowcap = (size_t)d->nwin;
	}
	char entry[ROWMAP_HDR + STORE_MAX_ID_BYTES + SUM_BYTES];
	memcpy(entry + ROWMAP_HDR, d->id, d->id_len);
	for (int i = 0; i < d->nwin; i++) {
		if (w->rows >= UINT32_MAX) {
			emb_errf(err, EMB_ESTORE, "store %s: more than 2^32 rows", s->dir);
			return -1;
		}
		uint32_t r = (uint32_t)w->rows++;
		memcpy(w->tmpvec, d->vecs + (size_t)i * s->dim, (size_t)s->dim * sizeof(float));
		scale_unit(w->tmpvec, s->dim, ss[i]);
		if ((rc = row_write(w, r, w->tmpvec)) != 0)
			return rc;
		uint32_t h[3] = {d->win_range ? d->win_range[2 * i] : 0,
				 d->win_range ? d->win_range[2 * i + 1] : (uint32_t)d->text_len,
				 (uint32_t)i};
		memcpy(entry, h, sizeof h);
		sum_put(&r, 4, entry, ROWMAP_HDR + d->id_len);
		MDB_val rk = {4, &r}, ev = {ROWMAP_HDR + d->id_len + SUM_BYTES, entry};
		if ((rc = put_append(w->txn, s->rowmap, &rk, &ev, 0)) != 0)
			return rc;
		w->rowbuf[i] = r;
	}
	if ((rc = put_rows(w, &key, w->rowbuf, (size_t)d->nwin, past_last(w, 1, &key))) != 0)
		return rc;
	w->docs++;
	return mark_seen(w, &key, past_last(w, 2, &key));
}

static int check_id(store *s, const store_doc *d, emb_err *err)
{
	if (d->id_len == 0)
		return emb_errf(err, EMB_EINVAL, "store %s: empty document id", s->dir);
	if (d->id_len > STORE_MAX_ID_BYTES)
		return emb_errf(err, EMB_EINVAL, "store %s: document id '%.40s...' is %zu bytes (max %d)",
				s->dir, d->id, d->id_len, STORE_MAX_ID_BYTES);
	return EMB_OK;
}

static int no_vectors(store *s, const store_doc *d, emb_err *err)
{
	return emb_errf(err, EMB_EINVAL, "store %s: document '%.*s' has no vectors", s->dir,
			(int)d->id_len, d->id);
}

/* The last check before vectors are stored: every value finite, and not all zero (a
 * vector that cannot be made unit length would score 0 against everything). Window w's
 * sum of squares goes to ss[w], for put_doc to scale by (d->nwin >= 1 entries). */
static int check_vectors(store *s, const store_doc *d, double *ss_out, emb_err *err)
{
	if (d->nwin < 1 || !d->vecs)
		return no_vectors(s, d, err);
	for (int w = 0; w < d->nwin; w++) {
		double ss = sum_squares(d->vecs + (size_t)w * s->dim, s->dim);
		ss_out[w] = ss;
		if (!isfinite(ss) || ss == 0)
			return emb_errf(err, EMB_EINVAL,
					"store %s: document '%.*s': window %d's vector is %s; nothing of this batch was stored",
					s->dir, (int)d->id_len, d->id, w, ss == 0 ? "all zero" : "not finite");
	}
	return EMB_OK;
}

/* Runs all ops in w->txn. Returns 0, an LMDB/errno code, or -1 with err filled. */
static int apply_ops(wtx *w, const store_op *ops, int n, emb_err *err)
{
	store *s = w->s;
	w->docs = meta_u64(w->txn, s->meta, "docs");
	w->rows = meta_u64(w->txn, s->meta, "rows");
	int rc = 0;
	MDB_dbi idt[3] = {s->docs, s->docrows, s->seen};
	for (int t = 0; t < 3 && !rc; t++) {
		MDB_cursor *cur;
		MDB_val k, v;
		w->last[t].any = 0;
		if ((rc = mdb_cursor_open(w->txn, idt[t], &cur)) != 0)
			break;
		rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
		if (rc == 0 && k.mv_size <= sizeof w->last[t].key) {
			memcpy(w->last[t].key, k.mv_data, k.mv_size);
			w->last[t].len = k.mv_size;
			w->last[t].any = 1;
		} else if (rc == 0) {
			rc = MDB_CORRUPTED; /* a key longer than LMDB allows */
		} else if (rc == MDB_NOTFOUND) {
			rc = 0;
		}
		mdb_cursor_close(cur);
	}
	/* In id order: consecutive ids share the pages of docs, docrows and seen on their way
	 * down the trees (12% more documents a CPU second with shuffled ids at 300k documents,
	 * docs/bench-index.md). The sort is stable, so the ops of one id keep their order and
	 * the result is the one in-order application gives, but for which rows the windows of
	 * different documents get. */
	for (int k = 0; k < n && !rc; k++) {
		int i = w->order[k];
		const store_doc *d = &ops[i].doc;
		MDB_val key = {d->id_len, (void *)d->id};
		int found;
		switch (ops[i].kind) {
		case STORE_OP_PUT:
			rc = put_doc(w, d, w->ss + w->ssat[i], err);
			break;
		case STORE_OP_DELETE:
			rc = delete_doc(w, &key, &found);
			if (!rc && found)
				w->res.deleted++;
			break;
		case STORE_OP_SEEN:
			rc = mark_seen(w, &key, 0);
			break;
		}
	}
	if (!rc)
		rc = cache_flush(w);
	if (!rc)
		rc = groups_flush(w);
	char now[32];
	iso_now(now, sizeof now);
	if (!rc) rc = meta_put(w->txn, s->meta, "docs", &w->docs, 8);
	if (!rc) rc = meta_put(w->txn, s->meta, "rows", &w->rows, 8);
	if (!rc) rc = meta_put_str(w->txn, s->meta, "updated", now);
	if (!rc) rc = meta_seal(w->txn, s->meta);
	return rc;
}

/* qsort_r comparator of op indices: by id, then by position (a stable sort). */
static int cmp_op_order(const void *a, const void *b, void *arg)
{
	const store_op *ops = arg;
	int i = *(const int *)a, j = *(const int *)b;
	int c = id_cmp(ops[i].doc.id, ops[i].doc.id_len, ops[j].doc.id, ops[j].doc.id_len);
	return c ? c : (i > j) - (i < j);
}

static int grow_map(store *s, emb_err *err)
{
	MDB_envinfo info;
	mdb_env_info(s->env, &info);
	size_t next = info.me_mapsize * 2;
	pthread_rwlock_wrlock(&s->maplock); /* no snapshot of another thread may be open */
	int rc = mdb_env_set_mapsize(s->env, next);
	pthread_rwlock_unlock(&s->maplock);
	if (rc)
		return mdb_fail(err, rc, "grow map", s->dir);
	return EMB_OK;
}

int store_apply(store *s, const store_op *ops, int n, store_apply_result *res, emb_err *err)
{
	if (res)
		memset(res, 0, sizeof *res);
	if (s->readonly)
		return emb_errf(err, EMB_ESTORE, "store %s: opened read-only", s->dir);
	if (s->dim <= 0)
		return emb_errf(err, EMB_ESTORE, "store %s: no model bound", s->dir);
	/* Checks in op order (the first bad op is the one reported); each PUT window's sum of
	 * squares is kept for put_doc. */
	wtx w = {.s = s, .err = err};
	size_t nss = 0, capss = 0;
	int rc = 0;
	w.order = malloc((n > 0 ? (size_t)n : 1) * sizeof *w.order);
	w.ssat = malloc((n > 0 ? (size_t)n : 1) * sizeof *w.ssat);
	if (!w.order || !w.ssat)
		rc = emb_errf(err, EMB_ENOMEM, "store %s: out of memory", s->dir);
	for (int i = 0; i < n && !rc; i++) {
		const store_doc *d = &ops[i].doc;
		w.order[i] = i;
		w.ssat[i] = nss;
		if ((rc = check_id(s, d, err)) != 0 || ops[i].kind != STORE_OP_PUT)
			continue;
		if (d->nwin < 1 || !d->vecs) {
			rc = no_vectors(s, d, err);
			break;
		}
		if (nss + (size_t)d->nwin > capss) {
			size_t cap = 2 * capss > nss + (size_t)d->nwin ? 2 * capss : nss + (size_t)d->nwin + 64;
			double *nb = realloc(w.ss, cap * sizeof(double));
			if (!nb) {
				rc = emb_errf(err, EMB_ENOMEM, "store %s: out of memory", s->dir);
				break;
			}
			w.ss = nb;
			capss = cap;
		}
		if ((rc = check_vectors(s, d, w.ss + nss, err)) == 0 && d->packed)
			rc = check_packed(s, d, err);
		nss += (size_t)d->nwin;
	}
	if (!rc && (!(w.tmpvec = malloc((size_t)s->dim * sizeof(float))) ||
		    !(w.tmpscales = malloc((size_t)s->dim * sizeof(float)))))
		rc = emb_errf(err, EMB_ENOMEM, "store %s: out of memory", s->dir);
	if (rc) {
		free(w.ss);
		free(w.ssat);
		free(w.order);
		return rc;
	}
	int sorted = 1;
	for (int i = 1; i < n && sorted; i++)
		sorted = id_cmp(ops[i - 1].doc.id, ops[i - 1].doc.id_len, ops[i].doc.id, ops[i].doc.id_len) <= 0;
	if (!sorted)
		qsort_r(w.order, (size_t)n, sizeof *w.order, cmp_op_order, (void *)ops);
	int status = EMB_OK;
	for (int attempt = 0;; attempt++) {
		memset(&w.res, 0, sizeof w.res);
		w.ntg = 0;
		int rc = txn_begin(s, 0, &w.txn);
		if (rc) {
			status = mdb_fail(err, rc, "begin write", s->dir);
			break;
		}
		map_view(s, 1, &w.mv);
		rc = apply_ops(&w, ops, n, err);
		cache_free(&w);
		if (rc == 0) {
			rc = mdb_txn_commit(w.txn);
			w.txn = NULL;
		} else {
			mdb_txn_abort(w.txn);
			w.txn = NULL;
		}
		if (rc == 0)
			break;
		if (rc == MDB_MAP_FULL && attempt < 40) {
			if ((status = grow_map(s, err)) != 0)
				break;
			continue;
		}
		if (rc == -1)
			status = err ? err->code : EMB_ESTORE;
		else if (rc == ENOMEM)
			status = emb_errf(err, EMB_ENOMEM, "store %s: out of memory", s->dir);
		else if (rc == MDB_CORRUPTED)
			status = emb_errf(err, EMB_ESTORE, "store %s: inconsistent row tables", s->dir);
		else
			status = mdb_fail(err, rc, "write", s->dir);
		break;
	}
	if (!status)
		pad_file(s);
	if (!status && res)
		*res = w.res;
	free(w.tmpvec);
	free(w.ss);
	free(w.ssat);
	free(w.order);
	free(w.rowbuf);
	free(w.rowbuf2);
	free(w.zbuf);
	free(w.tmpscales);
	free(w.tg);
	return status;
}

int store_retype(store *s, quant_type vt, emb_err *err)
{
	if (s->readonly)
		return emb_errf(err, EMB_ESTORE, "store %s: opened read-only", s->dir);
	if (s->dim <= 0)
		return store_set_vtype(s, vt, err);
	for (int attempt = 0;; attempt++) {
		wtx w = {.s = s, .err = err};
		if (!(w.tmpscales = malloc((size_t)s->dim * sizeof(float))))
			return emb_errf(err, EMB_ENOMEM, "store %s: out of memory", s->dir);
		int rc = txn_begin(s, 0, &w.txn);
		if (rc) {
			free(w.tmpscales);
			return mdb_fail(err, rc, "begin write", s->dir);
		}
		map_view(s, 1, &w.mv);
		quant_type old = s->vtype;
		MDB_val k = {strlen("int8.scales"), "int8.scales"};
		rc = mdb_del(w.txn, s->meta, &k, NULL);
		if (rc == MDB_NOTFOUND)
			rc = 0;
		if (!rc)
			rc = mdb_drop(w.txn, s->cvectors, 0);
		if (!rc)
			rc = meta_put_str(w.txn, s->meta, "vtype", quant_name(vt));
		s->vtype = vt;
		/* Block by block through the write cache (each compact block calibrates on its
		 * own rows, as the writer does). */
		uint64_t rows = w.rows = meta_u64(w.txn, s->meta, "rows");
		uint32_t nb = (uint32_t)((rows + (uint64_t)s->block_rows - 1) / (uint64_t)s->block_rows);
		for (uint32_t b = 0; b < nb && !rc && vt != QUANT_F32; b++) {
			cblock *c;
			if ((rc = cache_get(&w, b, &c)) == 0)
				c->dirty = 1;
		}
		if (!rc && vt != QUANT_F32)
			rc = cache_flush(&w); /* rewrites the f32 blocks unchanged, with their codes */
		if (!rc)
			rc = groups_flush(&w);
		cache_free(&w);
		free(w.tmpscales);
		free(w.tg);
		if (!rc)
			rc = meta_seal(w.txn, s->meta);
		if (!rc)
			rc = mdb_txn_commit(w.txn);
		else
			mdb_txn_abort(w.txn);
		if (rc == 0) {
			pad_file(s);
			return EMB_OK;
		}
		s->vtype = old;
		if (rc == MDB_MAP_FULL && attempt < 40) {
			int st = grow_map(s, err);
			if (st)
				return st;
			continue;
		}
		return rc == -1 ? (err ? err->code : EMB_ESTORE) : mdb_fail(err, rc, "retype", s->dir);
	}
}

/* An int8 store of formats 3 to 5, or a binary one of formats 3 and 4, opened for writing
 * becomes format 6: every compact value is written again from its f32 blocks (verified
 * first) in format 6's groups (put_group), in one transaction (the f32 blocks are not
 * rewritten), and format 3's store-wide int8 scales go. */
static int upgrade_compact(store *s, emb_err *err)
{
	int was = s->format;
	for (int attempt = 0;; attempt++) {
		wtx w = {.s = s, .err = err};
		MDB_cursor *cur = NULL;
		MDB_val k, v;
		if (!(w.tmpscales = malloc((size_t)(s->dim > 0 ? s->dim : 1) * sizeof(float))))
			return emb_errf(err, EMB_ENOMEM, "store %s: out of memory", s->dir);
		int rc = txn_begin(s, 0, &w.txn);
		if (rc) {
			free(w.tmpscales);
			return mdb_fail(err, rc, "begin write", s->dir);
		}
		map_view(s, 1, &w.mv);
		s->format = STORE_FORMAT_VERSION; /* the layout put_group writes */
		w.rows = meta_u64(w.txn, s->meta, "rows");
		size_t rowb = (size_t)s->dim * sizeof(float);
		rc = mdb_drop(w.txn, s->cvectors, 0); /* the old keys may be blocks, not groups */
		if (!rc && s->dim > 0 && (rc = mdb_cursor_open(w.txn, s->vectors, &cur)) == 0) {
			for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
			     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
				uint32_t b;
				size_t n = v.mv_size - SUM_BYTES;
				if (k.mv_size != 4 || !in_map(&w.mv, &v) || v.mv_size < SUM_BYTES ||
				    n % rowb || n / rowb > (size_t)s->block_rows ||
				    (memcpy(&b, k.mv_data, 4), !sum_ok(&b, sizeof b, &v))) {
					damaged(err, s, "a vector block fails its checksum");
					rc = -1;
					break;
				}
				if ((rc = touch_block(&w, b)) != 0)
					break;
			}
			if (rc == MDB_NOTFOUND)
				rc = 0;
			mdb_cursor_close(cur);
		}
		if (!rc)
			rc = groups_flush(&w);
		char fmt[16];
		snprintf(fmt, sizeof fmt, "%d", STORE_FORMAT_VERSION);
		MDB_val sk = {strlen("int8.scales"), "int8.scales"};
		if (!rc && (rc = mdb_del(w.txn, s->meta, &sk, NULL)) == MDB_NOTFOUND)
			rc = 0;
		if (!rc)
			rc = meta_put_str(w.txn, s->meta, "format", fmt);
		if (!rc)
			rc = meta_seal(w.txn, s->meta);
		if (!rc)
			rc = mdb_txn_commit(w.txn);
		else
			mdb_txn_abort(w.txn);
		free(w.tmpscales);
		free(w.tg);
		if (rc == 0)
			return EMB_OK;
		s->format = was;
		if (rc == MDB_MAP_FULL && attempt < 40) {
			int st = grow_map(s, err);
			if (st)
				return st;
			continue;
		}
		if (rc == ENOMEM)
			return emb_errf(err, EMB_ENOMEM, "store %s: out of memory", s->dir);
		return rc == -1 ? (err ? err->code : EMB_ESTORE) : mdb_fail(err, rc, "upgrade the format", s->dir);
	}
}

int store_seen_clear(store *s, emb_err *err)
{
	if (s->readonly)
		return emb_errf(err, EMB_ESTORE, "store %s: opened read-only", s->dir);
	MDB_txn *txn;
	int rc = txn_begin(s, 0, &txn);
	if (rc)
		return mdb_fail(err, rc, "begin write", s->dir);
	if ((rc = mdb_drop(txn, s->seen, 0)) != 0) {
		mdb_txn_abort(txn);
		return mdb_fail(err, rc, "clear seen", s->dir);
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		return mdb_fail(err, rc, "commit", s->dir);
	pad_file(s);
	return EMB_OK;
}

int store_prune_unseen(store *s, int per_txn, uint64_t *deleted, emb_err *err)
{
	if (deleted)
		*deleted = 0;
	if (per_txn < 1)
		per_txn = 1;
	char **ids = calloc((size_t)per_txn, sizeof *ids);
	size_t *lens = calloc((size_t)per_txn, sizeof *lens);
	store_op *ops = calloc((size_t)per_txn, sizeof *ops);
	char resume[STORE_MAX_ID_BYTES];
	size_t resume_len = 0;
	int status = EMB_OK;
	if (!ids || !lens || !ops) {
		status = emb_errf(err, EMB_ENOMEM, "store %s: out of memory", s->dir);
		goto out;
	}
	for (;;) {
		MDB_txn *txn;
		MDB_cursor *cur;
		int rc = txn_begin(s, MDB_RDONLY, &txn);
		if (rc) {
			status = mdb_fail(err, rc, "begin", s->dir);
			break;
		}
		if ((rc = mdb_cursor_open(txn, s->docs, &cur)) != 0) {
			mdb_txn_abort(txn);
			status = mdb_fail(err, rc, "cursor", s->dir);
			break;
		}
		MDB_val k = {resume_len, resume}, v;
		rc = mdb_cursor_get(cur, &k, &v, resume_len ? MDB_SET_RANGE : MDB_FIRST);
		int n = 0;
		while (rc == 0 && n < per_txn) {
			MDB_val sv;
			if (mdb_get(txn, s->seen, &k, &sv) == MDB_NOTFOUND) {
				ids[n] = malloc(k.mv_size);
				if (!ids[n])
					break;
				memcpy(ids[n], k.mv_data, k.mv_size);
				lens[n] = k.mv_size;
				n++;
			}
			rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
		}
		int more = rc == 0;
		if (more) {
			resume_len = k.mv_size;
			memcpy(resume, k.mv_data, k.mv_size);
		}
		mdb_cursor_close(cur);
		mdb_txn_abort(txn);
		for (int i = 0; i < n; i++)
			ops[i] = (store_op){.kind = STORE_OP_DELETE,
					    .doc = {.id = ids[i], .id_len = lens[i]}};
		store_apply_result r;
		status = n ? store_apply(s, ops, n, &r, err) : EMB_OK;
		for (int i = 0; i < n; i++) {
			free(ids[i]);
			ids[i] = NULL;
		}
		if (status)
			break;
		if (deleted && n)
			*deleted += r.deleted;
		if (!more)
			break;
	}
out:
	free(ids);
	free(lens);
	free(ops);
	return status;
}

/* ---- reading ---------------------------------------------------------------------------*/

int store_snapshot_begin(store *s, store_snapshot **out, emb_err *err)
{
	*out = NULL;
	store_snapshot *snap = calloc(1, sizeof *snap);
	if (!snap)
		return emb_errf(err, EMB_ENOMEM, "store %s: out of memory", s->dir);
	pthread_rwlock_rdlock(&s->maplock);
	int rc = txn_begin(s, MDB_RDONLY, &snap->txn);
	if (rc) {
		pthread_rwlock_unlock(&s->maplock);
		free(snap);
		return mdb_fail(err, rc, "begin read", s->dir);
	}
	snap->s = s;
	map_view(s, 0, &snap->mv);
	/* A reader may have opened the store before any model was bound. */
	if (s->dim <= 0) {
		if ((rc = meta_check(s, snap->txn, s->format, err)) != 0) {
			store_snapshot_end(snap);
			return rc;
		}
		int dim = meta_int(snap->txn, s->meta, "dim", 0);
		int br = meta_int(snap->txn, s->meta, "block_rows", 0);
		if (dim > 0 && dim <= 65536 && br > 0) {
			s->dim = dim;
			s->block_rows = br;
		}
	}
	*out = snap;
	return EMB_OK;
}

void store_snapshot_end(store_snapshot *snap)
{
	if (!snap)
		return;
	mdb_txn_abort(snap->txn);
	pthread_rwlock_unlock(&snap->s->maplock);
	free(snap);
}

static int lookup_run(store_snapshot *snap, const char *id, size_t id_len, int *exists,
		      uint8_t hash[STORE_HASH_BYTES], int *seen, emb_err *err)
{
	store *s = snap->s;
	*exists = 0;
	if (seen)
		*seen = 0;
	if (id_len == 0 || id_len > STORE_MAX_ID_BYTES)
		return EMB_OK; /* can't be stored, so isn't */
	MDB_val k = {id_len, (void *)id}, v;
	int rc = mdb_get(snap->txn, s->docs, &k, &v);
	if (rc == 0) {
		if (!in_map(&snap->mv, &v) || v.mv_size < DOC_HDR + trailer(s) ||
		    !val_sound(s, id, id_len, &v)) {
			return damaged_doc(err, s, "document '%.*s' fails its checksum", (int)id_len, id);
		}
		*exists = 1;
		if (hash)
			memcpy(hash, (char *)v.mv_data + 4, STORE_HASH_BYTES);
	} else if (rc != MDB_NOTFOUND) {
		return mdb_fail(err, rc, "lookup", s->dir);
	}
	if (seen) {
		rc = mdb_get(snap->txn, s->seen, &k, &v);
		if (rc == 0)
			*seen = 1;
		else if (rc != MDB_NOTFOUND)
			return mdb_fail(err, rc, "lookup", s->dir);
	}
	return EMB_OK;
}

/* store_search's memory, owned by store_search so that a trapped LMDB assert frees it. */
typedef struct search_mem {
	float *qn;
	scan_block *blocks;
	scan_hit *sh;
	MDB_cursor *cur;
	void *cq;          /* the compact query's codes */
	uint32_t *ublk;    /* rescoring: the distinct f32 blocks of the candidates */
	MDB_val *uval;     /* ... and their values */
	int *got;          /* store_search_batch: rows found a query */
} search_mem;

/* Rescoring: the f32 blocks holding the candidates, each verified by one task. */
typedef struct verify_ctx {
	const uint32_t *blk;
	const MDB_val *val;
	size_t rowb;
	int bad; /* 0, or 1 + the index of a block that fails */
} verify_ctx;

static void verify_task(void *arg, int t)
{
	verify_ctx *c = arg;
	const MDB_val *v = &c->val[t];
	size_t bytes = v->mv_size - SUM_BYTES;
	uint64_t want;
	memcpy(&want, (const char *)v->mv_data + bytes, 8);
	if (XXH3_64bits_withSeed(v->mv_data, bytes, XXH3_64bits(&c->blk[t], 4)) != want) {
		int none = 0;
		__atomic_compare_exchange_n(&c->bad, &none, t + 1, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_hit_best(const void *a, const void *b)
{
	const scan_hit *x = a, *y = b;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->row < y->row ? -1 : x->row > y->row;
}

/* Format 4 on: each candidate's f32 row checked against the row checksum its compact block
 * holds (those checksums verified by their own SUM first), so rescoring reads 1.5 KB a
 * candidate (and 1 KB of row checksums) instead of hashing its whole 192 KB f32 block. The
 * caller finds the rows (LMDB lookups, on its own thread); the pool's tasks check and score
 * them, each a run of candidates, and record a failure per candidate, so that the one
 * reported (the first) does not depend on the threads. */
typedef struct rowscore_ctx {
	const store *s;
	const float *qn;
	scan_hit *h;
	size_t n, per;
	const scan_block *cb;
	const MDB_val *val; /* candidate i's f32 block */
	uint32_t *bad;      /* per candidate: 0, or 1 row checksums, 2 row, 3 not a cosine */
} rowscore_ctx;

static void rowscore_task(void *arg, int t)
{
	rowscore_ctx *c = arg;
	const store *s = c->s;
	size_t rowb = (size_t)s->dim * sizeof(float);
	uint32_t br = (uint32_t)s->block_rows, cbr = br * cgroup(s);
	size_t end = ((size_t)t + 1) * c->per < c->n ? ((size_t)t + 1) * c->per : c->n;
	for (size_t i = (size_t)t * c->per; i < end; i++) {
		uint32_t row = c->h[i].row, cbi = row / cbr, coff = row % cbr, b = row / br, off = row % br;
		const scan_block *cb = &c->cb[cbi];
		/* f32 block b's row checksums, under their own SUM (the scan verified the codes
		 * only); in a group (format 5 binary, 6) they follow those of the blocks before it,
		 * each block's with its SUM */
		const glayout l = group_layout(s, cb->nrows);
		uint32_t m;
		const uint8_t *rs = (const uint8_t *)cb->sum_data + group_rsums(s, &l, coff / br, &m);
		uint64_t want, rsum;
		memcpy(&rsum, rs + (size_t)m * SUM_BYTES, sizeof rsum);
		if (val_sum(&b, sizeof b, rs, (size_t)m * SUM_BYTES) != rsum) {
			c->bad[i] = 1;
			continue;
		}
		memcpy(&want, rs + (size_t)off * SUM_BYTES, sizeof want);
		const float *r = (const float *)((const char *)c->val[i].mv_data + off * rowb);
		if (row_sum(b, off, r, s->dim) != want) {
			c->bad[i] = 2;
			continue;
		}
		float x = scan_score(c->qn, r, s->dim);
		if (!(x >= -1 - SCORE_EPS && x <= 1 + SCORE_EPS)) {
			c->bad[i] = 3;
			continue;
		}
		c->h[i].score = x;
	}
}

static int rescore_by_row(store_snapshot *snap, const float *qn, scan_hit *h, size_t n,
			  const scan_block *cb, size_t ncb, threadpool *pool, search_mem *mem,
			  emb_err *err)
{
	store *s = snap->s;
	size_t rowb = (size_t)s->dim * sizeof(float);
	uint32_t br = (uint32_t)s->block_rows, cbr = br * cgroup(s);
	MDB_val *uv = mem->uval = malloc((n ? n : 1) * sizeof *uv);
	uint32_t *bad = mem->ublk = calloc(n ? n : 1, sizeof *bad);
	if (!uv || !bad)
		return emb_errf(err, EMB_ENOMEM, "search: out of memory");
	for (size_t i = 0; i < n; i++) {
		uint32_t cbi = h[i].row / cbr, coff = h[i].row % cbr, b = h[i].row / br, off = h[i].row % br;
		if (cbi >= ncb || coff >= cb[cbi].nrows)
			return damaged(err, s, "row %u lies past its compact block", h[i].row);
		MDB_val k = {4, &b};
		int rc = mdb_get(snap->txn, s->vectors, &k, &uv[i]);
		if (rc)
			return damaged(err, s, "vector block %u is missing (%s)", b, mdb_strerror(rc));
		if (!in_map(&snap->mv, &uv[i]) || uv[i].mv_size < SUM_BYTES ||
		    (size_t)(off + 1) * rowb > uv[i].mv_size - SUM_BYTES)
			return damaged(err, s, "vector block %u is malformed", b);
	}
	/* On the pool only from 512 candidates (a task a 128, at most two a thread): waking the
	 * pool's threads again cost more than it saved for binary's default 100 (1M-row store,
	 * 1,000 searches alternated, loaded VM: the same median, 3.23 against 2.84 ms best wall) */
	int ntasks = n < 512 ? 1 : (int)((n + 127) / 128), most = 2 * threadpool_size(pool);
	if (ntasks > most)
		ntasks = most;
	rowscore_ctx c = {s, qn, h, n, (n + (size_t)ntasks - 1) / (size_t)ntasks, cb, uv, bad};
	threadpool_run(ntasks > 1 ? pool : NULL, rowscore_task, &c, ntasks);
	for (size_t i = 0; i < n; i++) {
		uint32_t b = h[i].row / br, off = h[i].row % br;
		if (bad[i] == 1)
			return damaged(err, s, "the row checksums of compact block %u fail their checksum",
				       h[i].row / cbr);
		if (bad[i] == 2)
			return damaged(err, s, "row %u of vector block %u fails its checksum", off, b);
		if (bad[i] == 3)
			return damaged(err, s, "row %u scores %g, not a cosine", h[i].row,
				       scan_score(qn, (const float *)((const char *)uv[i].mv_data + off * rowb), s->dim));
	}
	qsort(h, n, sizeof *h, cmp_hit_best);
	return EMB_OK;
}

/* Replaces the n candidates' compact scores by their exact cosines with qn and sorts them
 * best first: format 4 row by row (rescore_by_row); format 3 with the f32 blocks holding
 * them, each block's checksum verified first on pool's threads. */
static int rescore_rows(store_snapshot *snap, const float *qn, scan_hit *h, size_t n,
			const scan_block *cb, size_t ncb, threadpool *pool, search_mem *mem,
			emb_err *err)
{
	store *s = snap->s;
	if (s->format >= 4)
		return rescore_by_row(snap, qn, h, n, cb, ncb, pool, mem, err);
	size_t rowb = (size_t)s->dim * sizeof(float);
	uint32_t br = (uint32_t)s->block_rows;
	uint32_t *ub = mem->ublk = malloc((n ? n : 1) * sizeof *ub);
	MDB_val *uv = mem->uval = malloc((n ? n : 1) * sizeof *uv);
	if (!ub || !uv)
		return emb_errf(err, EMB_ENOMEM, "search: out of memory");
	for (size_t i = 0; i < n; i++)
		ub[i] = h[i].row / br;
	qsort(ub, n, sizeof *ub, cmp_u32);
	size_t nu = 0;
	for (size_t i = 0; i < n; i++)
		if (!nu || ub[nu - 1] != ub[i])
			ub[nu++] = ub[i];
	for (size_t i = 0; i < nu; i++) {
		MDB_val k = {4, &ub[i]};
		int rc = mdb_get(snap->txn, s->vectors, &k, &uv[i]);
		if (rc)
			return damaged(err, s, "vector block %u is missing (%s)", ub[i], mdb_strerror(rc));
		size_t bytes = uv[i].mv_size - trailer(s);
		if (!in_map(&snap->mv, &uv[i]) || uv[i].mv_size < trailer(s) + rowb || bytes % rowb ||
		    bytes / rowb > br)
			return damaged(err, s, "vector block %u is malformed", ub[i]);
	}
	if (s->format >= 2) {
		verify_ctx vc = {ub, uv, rowb, 0};
		threadpool_run(pool, verify_task, &vc, (int)nu);
		if (vc.bad)
			return damaged(err, s, "vector block %u fails its checksum", ub[vc.bad - 1]);
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t b = h[i].row / br, off = h[i].row % br;
		const uint32_t *f = bsearch(&b, ub, nu, sizeof *ub, cmp_u32);
		const MDB_val *v = &uv[f - ub];
		if ((size_t)off >= (v->mv_size - trailer(s)) / rowb)
			return damaged(err, s, "row %u lies past its vector block", h[i].row);
		float x = scan_score(qn, (const float *)((const char *)v->mv_data + off * rowb), s->dim);
		if (!(x >= -1 - SCORE_EPS && x <= 1 + SCORE_EPS))
			return damaged(err, s, "row %u scores %g, not a cosine", h[i].row, x);
		h[i].score = x;
	}
	qsort(h, n, sizeof *h, cmp_hit_best);
	return EMB_OK;
}

/* The first k distinct documents among the top rows sh[0..got), with their row entries
 * checked, into hits[0..*n). */
static int rows_to_hits(store_snapshot *snap, const scan_hit *sh, int got, int k, store_hit *hits,
			int *nout, emb_err *err)
{
	store *s = snap->s;
	int rc, n = 0;
	*nout = 0;
	for (int i = 0; i < got && n < k; i++) {
		MDB_val rk = {4, (void *)&sh[i].row}, ev;
		if ((rc = mdb_get(snap->txn, s->rowmap, &rk, &ev)) != 0)
			return damaged(err, s, "row %u has no document (%s)", sh[i].row, mdb_strerror(rc));
		if (!in_map(&snap->mv, &ev) || ev.mv_size <= ROWMAP_HDR + trailer(s) ||
		    ev.mv_size > ROWMAP_HDR + STORE_MAX_ID_BYTES + trailer(s) ||
		    !val_sound(s, &sh[i].row, 4, &ev))
			return damaged(err, s, "the entry of row %u fails its checksum", sh[i].row);
		const char *id = (const char *)ev.mv_data + ROWMAP_HDR;
		size_t idl = ev.mv_size - ROWMAP_HDR - trailer(s);
		int dup = 0;
		for (int j = 0; j < n && !dup; j++)
			dup = hits[j].id_len == idl && memcmp(hits[j].id, id, idl) == 0;
		if (dup)
			continue;
		MDB_val dk = {idl, (void *)id}, dv;
		if ((rc = mdb_get(snap->txn, s->docs, &dk, &dv)) != 0)
			return damaged(err, s, "row %u names document '%.*s', which cannot be found (%s)",
				       sh[i].row, (int)(idl > 60 ? 60 : idl), id, mdb_strerror(rc));
		uint32_t h[3];
		memcpy(h, ev.mv_data, sizeof h);
		hits[n++] = (store_hit){sh[i].score, sh[i].row, id, idl, h[0], h[1], h[2]};
	}
	*nout = n;
	return EMB_OK;
}

/* The blocks a search scans, in mem->blocks[0..*nb): pointers into the map, no copies;
 * compact blocks (format 4) split into scales, codes and row checksums. Blocks are dense and
 * full but for the last, and each lies in the file; the scan threads check their contents
 * (scan_guard). */
static int collect_blocks(store_snapshot *snap, int compact, search_mem *mem, size_t *nbo,
			  uint64_t *total, emb_err *err)
{
	store *s = snap->s;
	size_t cap = 1024, nb = 0;
	size_t rowb = compact ? quant_row_bytes(s->vtype, s->dim) : (size_t)s->dim * sizeof(float);
	size_t head = compact ? cb_head(s, s->vtype) : 0;
	int rsums = compact && s->format >= 4; /* format 4: the row checksums and their own SUM */
	size_t per = rowb + (rsums ? SUM_BYTES : 0), extra = rsums ? SUM_BYTES : 0;
	/* grouped (format 5 binary, 6 int8): a value codes G f32 blocks (rows by group_rows) */
	uint32_t G = compact ? cgroup(s) : 1, br = (uint32_t)s->block_rows, cbr = br * G;
	scan_block *blocks = mem->blocks = malloc(cap * sizeof *blocks);
	if (!blocks)
		return emb_errf(err, EMB_ENOMEM, "search: out of memory");
	MDB_cursor *cur;
	int rc = mdb_cursor_open(snap->txn, compact ? s->cvectors : s->vectors, &cur);
	if (rc)
		return mdb_fail(err, rc, "cursor", s->dir);
	mem->cur = cur;
	MDB_val key, val;
	*total = 0;
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (nb == cap) {
			scan_block *nbk = realloc(blocks, cap * 2 * sizeof *blocks);
			if (!nbk)
				return emb_errf(err, EMB_ENOMEM, "search: out of memory");
			blocks = mem->blocks = nbk;
			cap *= 2;
		}
		uint32_t b, grows = G > 1 ? group_rows(val.mv_size, rowb, head, br, cbr) : 0;
		size_t bytes = val.mv_size - trailer(s) - extra;
		if (key.mv_size != 4 || (memcpy(&b, key.mv_data, 4), b != nb) ||
		    (nb && blocks[nb - 1].nrows != cbr) || !in_map(&snap->mv, &val) ||
		    (G > 1 ? !grows
			   : val.mv_size < trailer(s) + extra + head + per || (bytes - head) % per ||
				     (bytes - head) / per > (size_t)s->block_rows))
			return damaged(err, s, "%s block %zu is malformed or out of place",
				       compact ? "compact" : "vector", nb);
		scan_block *bl = &blocks[nb];
		memset(bl, 0, sizeof *bl);
		bl->nrows = G > 1 ? grows : (uint32_t)((bytes - head) / per);
		bl->first_row = b * cbr;
		bl->seed = XXH3_64bits(&b, sizeof b); /* SUM's seed: the key's hash */
		if (compact) {
			/* int8: scales then codes (a group: each block's scales, then all the codes) */
			const glayout l = group_layout(s, bl->nrows); /* one block's too */
			bl->codes = (const uint8_t *)val.mv_data + l.codes;
			bl->scales = head ? val.mv_data : NULL;
			bl->scale_rows = head && G > 1 ? br : 0;
			bl->sum_data = val.mv_data; /* format 4 on: scales and codes; 3: the codes */
			bl->sum_len = l.sum;
		} else {
			bl->vecs = val.mv_data;
		}
		*total += bl->nrows;
		nb++;
	}
	mdb_cursor_close(cur);
	mem->cur = NULL;
	if (rc != MDB_NOTFOUND)
		return mdb_fail(err, rc, "scan", s->dir);
	*nbo = nb;
	return EMB_OK;
}

static int search_run(store_snapshot *snap, const float *q, int k, int rescore, threadpool *pool,
		      store_hit *hits, int *nhits, search_mem *mem, emb_err *err)
{
	store *s = snap->s;
	int dim = s->dim;
	float *qn = mem->qn = malloc((size_t)dim * sizeof *qn);
	size_t nb = 0;
	scan_block *blocks = NULL;
	scan_hit *sh = NULL;
	int status = EMB_OK;
	if (!qn) {
		status = emb_errf(err, EMB_ENOMEM, "search: out of memory");
		goto out;
	}
	memcpy(qn, q, (size_t)dim * sizeof *qn);
	for (int i = 0; i < dim; i++)
		if (!isfinite(qn[i])) {
			status = emb_errf(err, EMB_EINVAL, "search: the query vector is not finite");
			goto out;
		}
	normalize(qn, dim);

	/* A compact store: the scan reads the compact blocks, the query is coded to match. */
	int compact = s->vtype != QUANT_F32;
	scan_cquery cq = {.kind = (int)s->vtype, .dim = dim};
	if (rescore < 0)
		rescore = s->vtype == QUANT_INT8 ? STORE_RESCORE_INT8 : STORE_RESCORE_BINARY;
	if (compact) {
		if (!(mem->cq = malloc((size_t)dim + 64))) {
			status = emb_errf(err, EMB_ENOMEM, "search: out of memory");
			goto out;
		}
		if (s->vtype == QUANT_BINARY) {
			quant_bin_encode(qn, dim, mem->cq);
			cq.bits = mem->cq;
		} else if (s->format >= 4) {
			cq.qf = qn; /* coded against each block's own scales by the scan */
		} else {
			MDB_val sv;
			int got = meta_get(snap->txn, s->meta, "int8.scales", &sv);
			if (got == MDB_NOTFOUND) {
				status = EMB_OK; /* no rows yet */
				*nhits = 0;
				goto out;
			}
			if (got || sv.mv_size != (size_t)dim * sizeof(float) || !in_map(&snap->mv, &sv)) {
				status = damaged(err, s, "the int8 scales are malformed");
				goto out;
			}
			float *scales = malloc((size_t)dim * sizeof *scales);
			if (!scales) {
				status = emb_errf(err, EMB_ENOMEM, "search: out of memory");
				goto out;
			}
			memcpy(scales, sv.mv_data, (size_t)dim * sizeof *scales);
			quant_i8_query(qn, dim, scales, mem->cq, &cq.bias, &cq.scale);
			free(scales);
			cq.q8 = mem->cq;
		}
	}

	uint64_t total = 0;
	if ((status = collect_blocks(snap, compact, mem, &nb, &total, err)) != 0)
		goto out;
	blocks = mem->blocks;
	/* The scan threads verify the blocks' checksums as they score them. */
	scan_guard guard = {.checksums = s->format >= 2, .max_abs = 1 + SCORE_EPS};

	/* Top rows, then one hit per document: the first k distinct documents among the top M
	 * rows are exactly the top k documents by best window; widen M until k are found or
	 * every row was taken. */
	uint64_t m = (uint64_t)k * 2 + 16;
	/* Compact: the candidates to rescore (all of them rescored; the best m kept). */
	uint64_t cand = compact && rescore > 0 ? (uint64_t)rescore * (uint64_t)k : m;
	for (;;) {
		if (m > total)
			m = total;
		if (cand < m)
			cand = m;
		if (cand > total)
			cand = total;
		if (!compact || rescore == 0)
			cand = m;
		free(sh);
		sh = mem->sh = malloc((size_t)(cand ? cand : 1) * sizeof *sh);
		if (!sh) {
			status = emb_errf(err, EMB_ENOMEM, "search: out of memory");
			goto out;
		}
		int got;
		if (compact)
			status = scan_topk_compact(blocks, nb, &cq, (int)(cand ? cand : 1), pool, &guard,
						   sh, &got, err);
		else
			status = scan_topk_guarded(blocks, nb, dim, qn, (int)(m ? m : 1), pool, &guard, sh,
						   &got, err);
		if (!status && compact && rescore > 0) {
			free(mem->ublk);
			free(mem->uval);
			mem->ublk = NULL;
			mem->uval = NULL;
			if ((status = rescore_rows(snap, qn, sh, (size_t)got, blocks, nb, pool, mem, err)) != 0)
				goto out;
			if ((uint64_t)got > m)
				got = (int)m;
		}
		if (status && guard.failed == SCAN_BAD_BLOCK) {
			status = damaged(err, s, "%s block %zu fails its checksum",
					 compact ? "compact" : "vector", guard.bad_block);
			goto out;
		} else if (status && guard.failed) {
			status = damaged(err, s, "row %u scores %g, not a cosine", guard.bad_row,
					 guard.bad_score);
			goto out;
		} else if (status) {
			goto out;
		}
		int n = 0;
		if ((status = rows_to_hits(snap, sh, got, k, hits, &n, err)) != 0)
			goto out;
		*nhits = n;
		if (n >= k || m >= total)
			break;
		m *= 4;
		cand *= 4;
	}
out:
	if (status)
		*nhits = 0;
	return status;
}

/* store_search_batch's one scan for the batch: the top 2k + 16 rows of each query (f32), or
 * of max(N x k, 2k + 16) compact candidates each, rescored (int8, binary); redo[i] set for
 * the queries whose rows held fewer than k documents (store_search widens those). */
static int batch_run(store_snapshot *snap, const float *qs, int nq, int k, int rescore,
		     threadpool *pool, store_hit *hits, int *nhits, int *redo, search_mem *mem,
		     emb_err *err)
{
	store *s = snap->s;
	int dim = s->dim, status = EMB_OK, rc;
	int compact = s->vtype != QUANT_F32;
	size_t nb = 0;
	float *qn = mem->qn = malloc((size_t)nq * dim * sizeof *qn);
	scan_block *blocks = NULL;
	if (!qn)
		return emb_errf(err, EMB_ENOMEM, "search: out of memory");
	memcpy(qn, qs, (size_t)nq * dim * sizeof *qn);
	for (int i = 0; i < nq; i++) {
		for (int d = 0; d < dim; d++)
			if (!isfinite(qn[(size_t)i * dim + d]))
				return emb_errf(err, EMB_EINVAL, "search: query vector %d is not finite", i);
		normalize(qn + (size_t)i * dim, dim);
	}
	if (rescore < 0)
		rescore = s->vtype == QUANT_INT8 ? STORE_RESCORE_INT8 : STORE_RESCORE_BINARY;
	scan_cquery *cq = NULL;
	if (compact) {
		/* Codes and queries in one allocation: nq queries, then dim bytes of codes each. */
		char *buf = mem->cq = malloc((size_t)nq * (sizeof *cq + (size_t)dim + 64));
		float *scales = NULL;
		if (!buf)
			return emb_errf(err, EMB_ENOMEM, "search: out of memory");
		cq = (scan_cquery *)buf;
		uint8_t *codes = (uint8_t *)(cq + nq);
		if (s->vtype == QUANT_INT8 && s->format < 4) {
			MDB_val sv;
			rc = meta_get(snap->txn, s->meta, "int8.scales", &sv);
			if (rc == MDB_NOTFOUND) {
				for (int i = 0; i < nq; i++)
					nhits[i] = 0;
				return EMB_OK; /* no rows yet */
			}
			if (rc || sv.mv_size != (size_t)dim * sizeof(float) || !in_map(&snap->mv, &sv))
				return damaged(err, s, "the int8 scales are malformed");
			if (!(scales = malloc((size_t)dim * sizeof *scales)))
				return emb_errf(err, EMB_ENOMEM, "search: out of memory");
			memcpy(scales, sv.mv_data, (size_t)dim * sizeof *scales);
		}
		for (int i = 0; i < nq; i++) {
			uint8_t *c = codes + (size_t)i * ((size_t)dim + 64);
			cq[i] = (scan_cquery){.kind = (int)s->vtype, .dim = dim};
			if (s->vtype == QUANT_INT8 && s->format >= 4) {
				cq[i].qf = qn + (size_t)i * dim; /* coded block by block by the scan */
			} else if (s->vtype == QUANT_INT8) {
				quant_i8_query(qn + (size_t)i * dim, dim, scales, (int8_t *)c, &cq[i].bias,
					       &cq[i].scale);
				cq[i].q8 = (const int8_t *)c;
			} else {
				quant_bin_encode(qn + (size_t)i * dim, dim, c);
				cq[i].bits = c;
			}
		}
		free(scales);
	}
	uint64_t total = 0;
	if ((status = collect_blocks(snap, compact, mem, &nb, &total, err)) != 0)
		return status;
	blocks = mem->blocks;
	uint64_t m = (uint64_t)k * 2 + 16;
	if (m > total)
		m = total;
	uint64_t cand = compact && rescore > 0 ? (uint64_t)rescore * (uint64_t)k : m;
	if (cand < m)
		cand = m;
	if (cand > total)
		cand = total;
	if (m == 0) {
		for (int i = 0; i < nq; i++)
			nhits[i] = 0;
		return EMB_OK;
	}
	scan_guard guard = {.checksums = s->format >= 2, .max_abs = 1 + SCORE_EPS};
	scan_hit *sh = mem->sh = malloc((size_t)nq * cand * sizeof *sh);
	int *got = mem->got = malloc((size_t)nq * sizeof *got);
	if (!sh || !got)
		return emb_errf(err, EMB_ENOMEM, "search: out of memory");
	if (compact)
		status = scan_topk_compact_multi(blocks, nb, cq, nq, (int)cand, pool, &guard, sh, got, err);
	else
		status = scan_topk_multi(blocks, nb, dim, qn, nq, (int)cand, pool, &guard, sh, got, err);
	if (status && guard.failed == SCAN_BAD_BLOCK)
		return damaged(err, s, "%s block %zu fails its checksum", compact ? "compact" : "vector",
			       guard.bad_block);
	else if (status && guard.failed)
		return damaged(err, s, "row %u scores %g, not a cosine", guard.bad_row, guard.bad_score);
	for (int i = 0; i < nq && !status; i++) {
		scan_hit *hq = sh + (size_t)i * cand;
		if (compact && rescore > 0) {
			free(mem->ublk);
			free(mem->uval);
			mem->ublk = NULL;
			mem->uval = NULL;
			if ((status = rescore_rows(snap, qn + (size_t)i * dim, hq, (size_t)got[i], blocks, nb, pool, mem,
						   err)) != 0)
				break;
		}
		int g = got[i] > (int)m ? (int)m : got[i];
		status = rows_to_hits(snap, hq, g, k, hits + (size_t)i * k, &nhits[i], err);
		redo[i] = nhits[i] < k && m < total;
	}
	return status;
}

/* Frees a search_mem and what it holds (free(NULL) where a path left a field unset). */
static void search_mem_free(search_mem *mem)
{
	if (mem->cur)
		mdb_cursor_close(mem->cur);
	free(mem->qn);
	free(mem->blocks);
	free(mem->sh);
	free(mem->cq);
	free(mem->ublk);
	free(mem->uval);
	free(mem->got);
	free(mem);
}

int store_search_batch(store_snapshot *snap, const float *qs, int nq, int k, int rescore,
		       threadpool *pool, store_hit *hits, int *nhits, emb_err *err)
{
	store *s = snap->s;
	for (int i = 0; i < nq; i++)
		nhits[i] = 0;
	if (k < 1)
		return emb_errf(err, EMB_EINVAL, "search: k must be >= 1 (got %d)", k);
	if (nq < 1 || s->dim <= 0)
		return EMB_OK;
	int *redo = calloc((size_t)nq, sizeof *redo);
	if (!redo)
		return emb_errf(err, EMB_ENOMEM, "search: out of memory");
	int status = EMB_OK;
	search_mem *mem = calloc(1, sizeof *mem);
	if (!mem) {
		free(redo);
		return emb_errf(err, EMB_ENOMEM, "search: out of memory");
	}
	if (nq > 1) {
		TRAP_LMDB(s, status, err,
			  batch_run(snap, qs, nq, k, rescore, pool, hits, nhits, redo, mem, err), (void)0);
	} else {
		for (int i = 0; i < nq; i++)
			redo[i] = 1;
	}
	search_mem_free(mem);
	for (int i = 0; i < nq && !status; i++)
		if (redo[i])
			status = store_search_rescore(snap, qs + (size_t)i * s->dim, k, rescore, pool,
						      hits + (size_t)i * k, &nhits[i], err);
	if (status)
		for (int i = 0; i < nq; i++)
			nhits[i] = 0;
	free(redo);
	return status;
}

int store_search(store_snapshot *snap, const float *q, int k, threadpool *pool,
		 store_hit *hits, int *nhits, emb_err *err)
{
	return store_search_rescore(snap, q, k, -1, pool, hits, nhits, err);
}

int store_search_rescore(store_snapshot *snap, const float *q, int k, int rescore,
			 threadpool *pool, store_hit *hits, int *nhits, emb_err *err)
{
	store *s = snap->s;
	*nhits = 0;
	if (k < 1)
		return emb_errf(err, EMB_EINVAL, "search: k must be >= 1 (got %d)", k);
	if (s->dim <= 0)
		return EMB_OK; /* empty store */
	search_mem *mem = calloc(1, sizeof *mem);
	if (!mem)
		return emb_errf(err, EMB_ENOMEM, "search: out of memory");
	int status;
	TRAP_LMDB(s, status, err, search_run(snap, q, k, rescore, pool, hits, nhits, mem, err), *nhits = 0);
	search_mem_free(mem);
	return status;
}

int store_lookup(store_snapshot *snap, const char *id, size_t id_len, int *exists,
		 uint8_t hash[STORE_HASH_BYTES], int *seen, emb_err *err)
{
	int status;
	TRAP_LMDB(snap->s, status, err, lookup_run(snap, id, id_len, exists, hash, seen, err), *exists = 0);
	return status;
}

static int doc_get_run(store_snapshot *snap, const char *id, size_t id_len, store_doc_view *out,
		       emb_err *err)
{
	store *s = snap->s;
	memset(out, 0, sizeof *out);
	MDB_val k = {id_len, (void *)id}, v;
	if (id_len == 0 || id_len > STORE_MAX_ID_BYTES)
		return emb_errf(err, EMB_EINVAL, "no document '%.*s'", (int)(id_len > 60 ? 60 : id_len), id);
	int rc = mdb_get(snap->txn, s->docs, &k, &v);
	if (rc == MDB_NOTFOUND)
		return emb_errf(err, EMB_EINVAL, "no document '%.*s'", (int)id_len, id);
	if (rc)
		return mdb_fail(err, rc, "read", s->dir);
	uint32_t magic, hdr[5];
	if (!in_map(&snap->mv, &v) || v.mv_size < DOC_HDR + trailer(s) || !val_sound(s, id, id_len, &v))
		goto corrupt;
	memcpy(&magic, v.mv_data, 4);
	memcpy(out->hash, (char *)v.mv_data + 4, STORE_HASH_BYTES);
	memcpy(hdr, (char *)v.mv_data + 4 + STORE_HASH_BYTES, sizeof hdr);
	if (magic != (s->format >= 2 ? DOC_MAGIC : DOC_MAGIC_V1) ||
	    DOC_HDR + (size_t)hdr[3] + trailer(s) != v.mv_size ||
	    (uint64_t)hdr[0] + hdr[1] + hdr[2] > ((uint64_t)1 << 32) ||
	    ZSTD_getFrameContentSize((char *)v.mv_data + DOC_HDR, hdr[3]) !=
		    (unsigned long long)hdr[0] + hdr[1] + hdr[2])
		goto corrupt;
	size_t plain = (size_t)hdr[0] + hdr[1] + hdr[2];
	out->buf_ = malloc(plain + 3);
	if (!out->buf_)
		return emb_errf(err, EMB_ENOMEM, "out of memory reading '%.*s'", (int)id_len, id);
	if (!s->dctx && !(s->dctx = ZSTD_createDCtx())) {
		store_doc_view_free(out);
		return emb_errf(err, EMB_ENOMEM, "out of memory reading '%.*s'", (int)id_len, id);
	}
	char *stage = out->buf_ + 3; /* decompress after room for the three NULs, then move */
	size_t got = ZSTD_decompressDCtx(s->dctx, stage, plain, (char *)v.mv_data + DOC_HDR, hdr[3]);
	if (ZSTD_isError(got) || got != plain) {
		store_doc_view_free(out);
		goto corrupt;
	}
	char *p = out->buf_;
	memmove(p, stage, hdr[0]);
	p[hdr[0]] = 0;
	out->text = p;
	out->text_len = hdr[0];
	p += hdr[0] + 1;
	memmove(p, stage + hdr[0], hdr[1]);
	p[hdr[1]] = 0;
	out->title = p;
	out->title_len = hdr[1];
	p += hdr[1] + 1;
	memmove(p, stage + hdr[0] + hdr[1], hdr[2]);
	p[hdr[2]] = 0;
	out->meta = p;
	out->meta_len = hdr[2];
	out->nwin = hdr[4];
	return EMB_OK;
corrupt:
	return damaged_doc(err, s, "document '%.*s' fails its checksum or does not decompress",
			   (int)id_len, id);
}

int store_doc_get(store_snapshot *snap, const char *id, size_t id_len, store_doc_view *out,
		  emb_err *err)
{
	int status;
	TRAP_LMDB(snap->s, status, err, doc_get_run(snap, id, id_len, out, err),
		  store_doc_view_free(out));
	return status;
}

void store_doc_view_free(store_doc_view *v)
{
	if (v) {
		free(v->buf_);
		memset(v, 0, sizeof *v);
	}
}

static int doc_vectors_run(store_snapshot *snap, const char *id, size_t id_len, uint32_t nwin,
			   float *vecs, uint32_t *win_range, emb_err *err)
{
	store *s = snap->s;
	MDB_val k = {id_len, (void *)id}, v;
	if (id_len == 0 || id_len > STORE_MAX_ID_BYTES)
		return emb_errf(err, EMB_EINVAL, "no document '%.*s'", (int)(id_len > 60 ? 60 : id_len), id);
	int rc = mdb_get(snap->txn, s->docrows, &k, &v);
	if (rc == MDB_NOTFOUND)
		return emb_errf(err, EMB_EINVAL, "no document '%.*s'", (int)id_len, id);
	if (rc)
		return mdb_fail(err, rc, "read", s->dir);
	if (!in_map(&snap->mv, &v) || v.mv_size != (size_t)nwin * 4 + trailer(s) ||
	    !val_sound(s, id, id_len, &v) || s->dim <= 0 || s->block_rows <= 0)
		goto corrupt;
	const size_t rowb = (size_t)s->dim * sizeof(float);
	for (uint32_t i = 0; i < nwin; i++) {
		uint32_t r, h[3], b;
		memcpy(&r, (const char *)v.mv_data + 4 * (size_t)i, 4);
		MDB_val rk = {sizeof r, &r}, rv;
		if (mdb_get(snap->txn, s->rowmap, &rk, &rv) || !in_map(&snap->mv, &rv) ||
		    rv.mv_size != ROWMAP_HDR + id_len + trailer(s) || !val_sound(s, &r, sizeof r, &rv) ||
		    memcmp((const char *)rv.mv_data + ROWMAP_HDR, id, id_len))
			goto corrupt;
		memcpy(h, rv.mv_data, sizeof h);
		b = r / (uint32_t)s->block_rows;
		MDB_val bk = {sizeof b, &b}, bv;
		size_t off = (size_t)(r % (uint32_t)s->block_rows) * rowb;
		if (h[2] >= nwin || mdb_get(snap->txn, s->vectors, &bk, &bv) || !in_map(&snap->mv, &bv) ||
		    bv.mv_size < trailer(s) || off + rowb > bv.mv_size - trailer(s) ||
		    !val_sound(s, &b, sizeof b, &bv))
			goto corrupt;
		memcpy(vecs + (size_t)h[2] * s->dim, (const char *)bv.mv_data + off, rowb);
		win_range[2 * h[2]] = h[0];
		win_range[2 * h[2] + 1] = h[1];
	}
	return EMB_OK;
corrupt:
	return damaged_doc(err, s, "the vectors of document '%.*s' fail their checksums or do not "
			   "add up to its %u windows", (int)id_len, id, nwin);
}

int store_doc_vectors(store_snapshot *snap, const char *id, size_t id_len, uint32_t nwin,
		      float *vecs, uint32_t *win_range, emb_err *err)
{
	int status;
	TRAP_LMDB(snap->s, status, err, doc_vectors_run(snap, id, id_len, nwin, vecs, win_range, err),
		  (void)0);
	return status;
}

/* A failed check: "store DIR is damaged: WHAT" (no advice to run the check that found it). */
static int broken(emb_err *err, const store *s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int broken(emb_err *err, const store *s, const char *fmt, ...)
{
	char what[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	return emb_errf(err, EMB_ESTORE, "store %s is damaged: %s", s->dir, what);
}

typedef struct checker {
	store_snapshot *snap;
	store *s;
	store_check_report *r;
	emb_err *err;
	uint64_t docs, rows;
	char *plain;      /* decompression buffer */
	size_t plain_cap;
	MDB_cursor *cur;  /* the open cursor, closed by store_check */
} checker;

/* A value's bounds and checksum; counts it. */
static int check_val(checker *c, const void *key, size_t klen, const MDB_val *v, size_t min)
{
	if (!in_map(&c->snap->mv, v) || v->mv_size < min + trailer(c->s) ||
	    !val_sound(c->s, key, klen, v))
		return 0;
	if (c->s->format >= 2)
		c->r->checksums++;
	return 1;
}

/* Vector blocks: dense, full but the last, checksums, every vector finite and unit length. */
static void close_cur(checker *c)
{
	if (c->cur)
		mdb_cursor_close(c->cur);
	c->cur = NULL;
}

static int check_blocks(checker *c)
{
	store *s = c->s;
	MDB_cursor *cur;
	MDB_val k, v;
	uint64_t rows = 0;
	uint32_t expect = 0, last_n = 0;
	int rc = mdb_cursor_open(c->snap->txn, s->vectors, &cur);
	if (rc)
		return mdb_fail(c->err, rc, "cursor", s->dir);
	c->cur = cur;
	size_t rowb = (size_t)s->dim * sizeof(float);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), expect++) {
		uint32_t b = expect;
		if (k.mv_size == 4)
			memcpy(&b, k.mv_data, 4);
		size_t bytes = v.mv_size - trailer(s);
		if (b != expect || (expect && last_n != (uint32_t)s->block_rows) ||
		    !check_val(c, &b, 4, &v, rowb) || bytes % rowb || bytes / rowb > (size_t)s->block_rows) {
			close_cur(c);
			return broken(c->err, s, "vector block %u (expected %u) is malformed, out of place or fails its checksum",
				      b, expect);
		}
		last_n = (uint32_t)(bytes / rowb);
		for (uint32_t i = 0; i < last_n; i++) {
			const float *x = (const float *)((const char *)v.mv_data + i * rowb);
			double ss = 0;
			for (int j = 0; j < s->dim; j++) {
				float f;
				memcpy(&f, x + j, 4);
				ss += (double)f * f;
			}
			if (!(fabs(sqrt(ss) - 1) <= NORM_EPS)) {
				close_cur(c);
				return broken(c->err, s, "row %llu's vector has norm %g, not 1 (or is not finite)",
					      (unsigned long long)(rows + i), sqrt(ss));
			}
		}
		rows += last_n;
		c->r->blocks++;
	}
	close_cur(c);
	if (rc != MDB_NOTFOUND)
		return broken(c->err, s, "the vectors table is unreadable (%s)", mdb_strerror(rc));
	if (rows != c->rows)
		return broken(c->err, s, "%llu vectors, meta says %llu rows", (unsigned long long)rows,
			      (unsigned long long)c->rows);
	c->r->rows = rows;
	return EMB_OK;
}

/* Compact blocks (int8, binary): one for every vector block, under the same key, with its
 * checksum, and equal byte for byte to what the writer makes of that block's f32 rows:
 * format 4, the block's scales (int8), the rows' codes and the rows' checksums; format 3, the
 * codes with the store-wide scales. */
/* Grouped compact values (format 5 binary, 6 int8): each group dense and in place, its
 * SUM and every f32 block's row-checksum SUM, each block's scales (int8) those of its f32
 * rows, each code and row checksum equal to the one its f32 row gives, and one group a
 * cgroup() vector blocks. */
static int check_cgroups(checker *c)
{
	store *s = c->s;
	uint32_t G = cgroup(s), br = (uint32_t)s->block_rows, cbr = G * br;
	size_t rowb = quant_row_bytes(s->vtype, s->dim), frowb = (size_t)s->dim * sizeof(float);
	size_t head = cb_head(s, s->vtype);
	uint8_t *code = malloc(rowb);
	float *sc = malloc(frowb);
	if (!code || !sc) {
		free(code);
		free(sc);
		return emb_errf(c->err, EMB_ENOMEM, "check: out of memory");
	}
	MDB_cursor *cur;
	MDB_val k, v;
	uint32_t expect = 0, last_n = 0;
	int rc = mdb_cursor_open(c->snap->txn, s->cvectors, &cur), status = EMB_OK;
	if (rc) {
		free(code);
		free(sc);
		return mdb_fail(c->err, rc, "cursor", s->dir);
	}
	c->cur = cur;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !status;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), expect++) {
		uint32_t g = expect, n = 0;
		if (k.mv_size == 4)
			memcpy(&g, k.mv_data, 4);
		int sound = k.mv_size == 4 && g == expect && (!expect || last_n == cbr) &&
			    in_map(&c->snap->mv, &v) && (n = group_rows(v.mv_size, rowb, head, br, cbr)) != 0;
		const glayout l = group_layout(s, n);
		const uint8_t *base = v.mv_data, *codes = base + l.codes;
		uint64_t got;
		if (!sound || !group_sound(s, g, base, &l)) {
			status = broken(c->err, s, "compact block %u (expected %u) is malformed, out of place "
					"or fails a checksum", g, expect);
			break;
		}
		c->r->checksums += 1 + l.nb;
		for (uint32_t j = 0; j < l.nb && !status; j++) {
			uint32_t b = g * G + j, m;
			const uint8_t *r = base + group_rsums(s, &l, j, &m);
			MDB_val fk = {4, &b}, fv;
			if (mdb_get(c->snap->txn, s->vectors, &fk, &fv) != 0 || !in_map(&c->snap->mv, &fv) ||
			    fv.mv_size != (size_t)m * frowb + SUM_BYTES) {
				status = broken(c->err, s, "compact block %u: vector block %u is missing or has "
						"other rows", g, b);
				break;
			}
			if (head) {
				quant_i8_scales((const float *)fv.mv_data, m, s->dim, sc);
				if (memcmp(sc, base + (size_t)j * head, head)) {
					status = broken(c->err, s, "compact block %u: the scales of vector block %u "
							"are not its rows'", g, b);
					break;
				}
			}
			for (uint32_t i = 0; i < m; i++) {
				const float *x = (const float *)((const char *)fv.mv_data + i * frowb);
				if (head)
					quant_i8_encode(x, s->dim, sc, code);
				else
					quant_bin_encode(x, s->dim, code);
				memcpy(&got, r + (size_t)i * SUM_BYTES, SUM_BYTES);
				if (memcmp(code, codes + ((size_t)j * br + i) * rowb, rowb) ||
				    got != row_sum(b, i, x, s->dim)) {
					status = broken(c->err, s, "compact block %u row %u is not the code (or "
							"checksum) of its vector", g, j * br + i);
					break;
				}
			}
		}
		last_n = n;
		c->r->cblocks++;
	}
	close_cur(c);
	free(code);
	free(sc);
	if (status)
		return status;
	if (rc != MDB_NOTFOUND)
		return broken(c->err, s, "the cvectors table is unreadable (%s)", mdb_strerror(rc));
	if (c->r->cblocks != (c->r->blocks + G - 1) / G)
		return broken(c->err, s, "%llu compact blocks for %llu vector blocks",
			      (unsigned long long)c->r->cblocks, (unsigned long long)c->r->blocks);
	return EMB_OK;
}

static int check_cblocks(checker *c)
{
	store *s = c->s;
	if (s->vtype == QUANT_F32)
		return EMB_OK;
	if (cgroup(s) > 1)
		return check_cgroups(c);
	size_t rowb = quant_row_bytes(s->vtype, s->dim), frowb = (size_t)s->dim * sizeof(float);
	size_t head = cb_head(s, s->vtype);
	int f4 = s->format >= 4;
	size_t per = rowb + (f4 ? SUM_BYTES : 0), extra = f4 ? SUM_BYTES : 0;
	float *scales = malloc(frowb), *rows = malloc(frowb * (size_t)s->block_rows);
	uint8_t *code = malloc(rowb);
	if (!code || !scales || !rows) {
		free(code);
		free(scales);
		free(rows);
		return emb_errf(c->err, EMB_ENOMEM, "check: out of memory");
	}
	int have_scales = 0;
	MDB_val sv;
	if (s->format < 4 && s->vtype == QUANT_INT8 && meta_get(c->snap->txn, s->meta, "int8.scales", &sv) == 0) {
		if (sv.mv_size != frowb || !in_map(&c->snap->mv, &sv)) {
			free(code);
			free(scales);
			free(rows);
			return broken(c->err, s, "the int8 scales are malformed");
		}
		memcpy(scales, sv.mv_data, frowb);
		have_scales = 1;
	}
	MDB_cursor *cur;
	MDB_val k, v;
	uint32_t expect = 0;
	int rc = mdb_cursor_open(c->snap->txn, s->cvectors, &cur), status = EMB_OK;
	if (rc) {
		free(code);
		free(scales);
		free(rows);
		return mdb_fail(c->err, rc, "cursor", s->dir);
	}
	c->cur = cur;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), expect++) {
		uint32_t b = expect;
		if (k.mv_size == 4)
			memcpy(&b, k.mv_data, 4);
		MDB_val fk = {4, &b}, fv;
		size_t bytes = v.mv_size - trailer(s) - extra, n = 0;
		/* format 4: scales and codes | SUM | row checksums | SUM (store.h) */
		int sound = f4 ? in_map(&c->snap->mv, &v) && v.mv_size >= head + per + 2 * SUM_BYTES &&
					 (bytes - head) % per == 0
			       : check_val(c, &b, 4, &v, head + per);
		if (sound && f4) {
			size_t nr = (bytes - head) / per, ab = head + nr * rowb;
			const char *base = v.mv_data;
			uint64_t sa, sr;
			memcpy(&sa, base + ab, SUM_BYTES);
			memcpy(&sr, base + ab + SUM_BYTES + nr * SUM_BYTES, SUM_BYTES);
			sound = val_sum(&b, 4, base, ab) == sa &&
				val_sum(&b, 4, base + ab + SUM_BYTES, nr * SUM_BYTES) == sr;
			if (sound)
				c->r->checksums += 2;
		}
		if (b != expect || !sound || (bytes - head) % per ||
		    mdb_get(c->snap->txn, s->vectors, &fk, &fv) != 0 || !in_map(&c->snap->mv, &fv) ||
		    fv.mv_size < trailer(s) || (n = (fv.mv_size - trailer(s)) / frowb) != (bytes - head) / per ||
		    n > (size_t)s->block_rows || (s->vtype == QUANT_INT8 && s->format < 4 && !have_scales)) {
			status = broken(c->err, s, "compact block %u (expected %u) is malformed, out of place, "
					"fails its checksum or has no vector block", b, expect);
			break;
		}
		memcpy(rows, fv.mv_data, n * frowb);
		const uint8_t *codes = (const uint8_t *)v.mv_data + head, *sums = codes + n * rowb + SUM_BYTES;
		if (head) {
			quant_i8_scales(rows, n, s->dim, scales);
			if (memcmp(scales, v.mv_data, head)) {
				status = broken(c->err, s, "compact block %u's scales are not its rows'", b);
				break;
			}
		}
		for (size_t i = 0; i < n; i++) {
			const float *x = rows + i * (size_t)s->dim;
			if (s->vtype == QUANT_INT8)
				quant_i8_encode(x, s->dim, scales, code);
			else
				quant_bin_encode(x, s->dim, code);
			uint64_t want = s->format >= 4 ? row_sum(b, (uint32_t)i, x, s->dim) : 0, got = 0;
			if (s->format >= 4)
				memcpy(&got, sums + i * SUM_BYTES, SUM_BYTES);
			if (memcmp(code, codes + i * rowb, rowb) || got != want) {
				status = broken(c->err, s, "compact block %u row %zu is not the code (or checksum) of its vector",
						b, i);
				break;
			}
		}
		if (status)
			break;
		c->r->cblocks++;
	}
	close_cur(c);
	free(code);
	free(scales);
	free(rows);
	if (status)
		return status;
	if (rc != MDB_NOTFOUND)
		return broken(c->err, s, "the cvectors table is unreadable (%s)", mdb_strerror(rc));
	if (c->r->cblocks != c->r->blocks)
		return broken(c->err, s, "%llu compact blocks for %llu vector blocks",
			      (unsigned long long)c->r->cblocks, (unsigned long long)c->r->blocks);
	return EMB_OK;
}

/* The document value of id: checksum, header, and that it decompresses to the lengths it
 * states. *nwin gets its window count. */
static int check_doc(checker *c, const MDB_val *key, const MDB_val *v, uint32_t *nwin)
{
	store *s = c->s;
	int idl = (int)(key->mv_size > 60 ? 60 : key->mv_size);
	uint32_t magic, hdr[5];
	if (!check_val(c, key->mv_data, key->mv_size, v, DOC_HDR))
		return broken(c->err, s, "document '%.*s' fails its checksum", idl, (char *)key->mv_data);
	memcpy(&magic, v->mv_data, 4);
	memcpy(hdr, (char *)v->mv_data + 4 + STORE_HASH_BYTES, sizeof hdr);
	size_t plain = (size_t)hdr[0] + hdr[1] + hdr[2];
	if (magic != (s->format >= 2 ? DOC_MAGIC : DOC_MAGIC_V1) ||
	    DOC_HDR + (size_t)hdr[3] + trailer(s) != v->mv_size || hdr[4] < 1 ||
	    ZSTD_getFrameContentSize((char *)v->mv_data + DOC_HDR, hdr[3]) != plain)
		return broken(c->err, s, "document '%.*s' has an inconsistent header", idl,
			      (char *)key->mv_data);
	if (plain + 1 > c->plain_cap) {
		char *nb = realloc(c->plain, plain + 1);
		if (!nb)
			return emb_errf(c->err, EMB_ENOMEM, "check: out of memory");
		c->plain = nb;
		c->plain_cap = plain + 1;
	}
	if (!s->dctx && !(s->dctx = ZSTD_createDCtx()))
		return emb_errf(c->err, EMB_ENOMEM, "check: out of memory");
	size_t got = ZSTD_decompressDCtx(s->dctx, c->plain, plain, (char *)v->mv_data + DOC_HDR, hdr[3]);
	if (ZSTD_isError(got) || got != plain)
		return broken(c->err, s, "document '%.*s' does not decompress to its stated %zu bytes",
			      idl, (char *)key->mv_data, plain);
	c->r->text_bytes += plain;
	*nwin = hdr[4];
	return EMB_OK;
}

/* Documents: each value sound, each has a row list of nwin rows, and each listed row's
 * entry names the document back. With the row count checked below this makes rows and
 * documents a bijection. */
static int check_docs(checker *c)
{
	store *s = c->s;
	MDB_txn *txn = c->snap->txn;
	MDB_cursor *cur;
	MDB_val k, v;
	uint64_t docs = 0, listed = 0;
	int si, sn;
	if (shard_read(s, txn, &si, &sn))
		return broken(c->err, s, "its shard in meta is malformed");
	int rc = mdb_cursor_open(txn, s->docs, &cur);
	if (rc)
		return mdb_fail(c->err, rc, "cursor", s->dir);
	c->cur = cur;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), docs++) {
		uint32_t nwin = 0;
		int st;
		if (!in_map(&c->snap->mv, &k) || k.mv_size == 0 || k.mv_size > STORE_MAX_ID_BYTES) {
			close_cur(c);
			return broken(c->err, s, "document key %llu is malformed", (unsigned long long)docs);
		}
		if ((st = check_doc(c, &k, &v, &nwin)) != 0) {
			close_cur(c);
			return st;
		}
		int idl = (int)(k.mv_size > 60 ? 60 : k.mv_size);
		if (sn && store_shard_of(k.mv_data, k.mv_size, sn) != si) {
			close_cur(c);
			return broken(c->err, s, "document '%.*s' belongs to shard %d/%d, not to the store's %d/%d",
				      idl, (char *)k.mv_data, store_shard_of(k.mv_data, k.mv_size, sn), sn, si, sn);
		}
		MDB_val lv;
		if ((rc = mdb_get(txn, s->docrows, &k, &lv)) != 0 || !check_val(c, k.mv_data, k.mv_size, &lv, 0) ||
		    (lv.mv_size - trailer(s)) != (size_t)nwin * 4) {
			close_cur(c);
			return broken(c->err, s, "document '%.*s': its row list is missing, fails its checksum or does not hold its %u windows",
				      idl, (char *)k.mv_data, nwin);
		}
		for (uint32_t i = 0; i < nwin; i++) {
			uint32_t r;
			memcpy(&r, (char *)lv.mv_data + 4 * i, 4);
			MDB_val rk = {4, &r}, ev;
			size_t h = ROWMAP_HDR + trailer(s);
			uint32_t e[3] = {0, 0, 0};
			int ok = r < c->rows && mdb_get(txn, s->rowmap, &rk, &ev) == 0 &&
				 check_val(c, &r, 4, &ev, ROWMAP_HDR) && ev.mv_size - h == k.mv_size &&
				 memcmp((char *)ev.mv_data + ROWMAP_HDR, k.mv_data, k.mv_size) == 0;
			if (ok)
				memcpy(e, ev.mv_data, sizeof e);
			if (!ok || e[2] != i || e[0] > e[1]) {
				close_cur(c);
				return broken(c->err, s, "row %u (window %u of '%.*s') is not owned consistently",
					      r, i, idl, (char *)k.mv_data);
			}
		}
		listed += nwin;
	}
	close_cur(c);
	if (rc != MDB_NOTFOUND)
		return broken(c->err, s, "the documents table is unreadable (%s)", mdb_strerror(rc));
	if (docs != c->docs || listed != c->rows)
		return broken(c->err, s, "%llu documents with %llu windows, meta says %llu documents, %llu rows",
			      (unsigned long long)docs, (unsigned long long)listed,
			      (unsigned long long)c->docs, (unsigned long long)c->rows);
	c->r->docs = docs;
	return EMB_OK;
}

static int check_run(checker *c)
{
	store *s = c->s;
	MDB_txn *txn = c->snap->txn;
	emb_err *err = c->err;
	memset(c->r, 0, sizeof *c->r);
	c->r->format = s->format;
	int rc = meta_check(s, txn, s->format, err);
	if (rc)
		return rc;
	if (s->format >= 2)
		c->r->checksums++;
	MDB_val v;
	if (meta_get(txn, s->meta, "docs", &v) == 0 && v.mv_size != 8)
		return broken(err, s, "the document count is malformed");
	if (meta_get(txn, s->meta, "rows", &v) == 0 && v.mv_size != 8)
		return broken(err, s, "the row count is malformed");
	c->docs = meta_u64(txn, s->meta, "docs");
	c->rows = meta_u64(txn, s->meta, "rows");
	MDB_stat st;
	if ((rc = mdb_stat(txn, s->rowmap, &st)) != 0 || st.ms_entries != c->rows)
		return broken(err, s, "%llu row entries, meta says %llu rows",
			      rc ? 0ULL : (unsigned long long)st.ms_entries, (unsigned long long)c->rows);
	if ((rc = mdb_stat(txn, s->docrows, &st)) != 0 || st.ms_entries != c->docs)
		return broken(err, s, "%llu row lists for %llu documents",
			      rc ? 0ULL : (unsigned long long)st.ms_entries, (unsigned long long)c->docs);
	if (!s->dim)
		return c->rows || c->docs ? broken(err, s, "documents but no model") : EMB_OK;
	if ((rc = check_blocks(c)) == 0 && (rc = check_cblocks(c)) == 0)
		rc = check_docs(c);
	return rc;
}

int store_check(store_snapshot *snap, store_check_report *report, emb_err *err)
{
	store_check_report dummy;
	checker *c = calloc(1, sizeof *c);
	if (!c)
		return emb_errf(err, EMB_ENOMEM, "check: out of memory");
	*c = (checker){snap, snap->s, report ? report : &dummy, err, 0, 0, NULL, 0, NULL};
	int status;
	TRAP_LMDB(snap->s, status, err, check_run(c), (void)0);
	close_cur(c);
	free(c->plain);
	free(c);
	return status;
}

int store_verify(store_snapshot *snap, emb_err *err)
{
	return store_check(snap, NULL, err);
}
