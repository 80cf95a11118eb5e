/* test_input.c — the indexer's reading split in two (indexer/input.h): input_next_raw on one
 * thread and input_parse on several, results put back in order, give what input_next gives,
 * document for document and error for error, on the SciFact corpus, the inputs under tests/
 * and sample/, lines around the read size, and a made-up tree of every kind of bad record and file (including stdin, a
 * stop request and a file that vanishes). And the fast JSONL parser agrees with jansson, the
 * definition of a record: on every record above, on random valid records, and on random
 * mutations of all of them for TEST_INPUT_SECONDS (default 5) seconds (TEST_INPUT_SEED
 * picks another sequence).
 *
 * Compiled with input.c included, as the indexer's files are not in the engine library; the
 * comparison with jansson calls its static parse_jsonl. */
#include "../indexer/input.c"

#include <pthread.h>
#include <time.h>

#include "testutil.h"

/* Writes a string literal, NUL bytes inside it included, without the final NUL. */
#define WRITE_LIT(dir, name, lit) test_write_file(dir, name, lit, sizeof lit - 1)

typedef struct result {
	int rc;
	emb_err e;
	input_doc d;
} result;

static int same_str(const char *a, size_t al, const char *b, size_t bl)
{
	if (!a || !b)
		return a == b && al == bl;
	return al == bl && memcmp(a, b, al) == 0 && a[al] == 0 && b[bl] == 0;
}

/* Whether two results are the same; why says what differs. */
static int same(const result *a, const result *b, char *why, size_t cap)
{
	const input_doc *x = &a->d, *y = &b->d;
	const char *w = NULL;
	if (a->rc != b->rc)
		w = "return value";
	else if (a->rc < 0 && (a->e.code != b->e.code || strcmp(a->e.msg, b->e.msg)))
		w = "error";
	else if (a->rc != 0 && !same_str(x->id, x->id_len, y->id, y->id_len))
		w = "id";
	else if (a->rc != 0 && strcmp(x->where, y->where))
		w = "where";
	else if (a->rc > 0 && !same_str(x->text, x->text_len, y->text, y->text_len))
		w = "text";
	else if (a->rc > 0 && !same_str(x->title, x->title_len, y->title, y->title_len))
		w = "title";
	else if (a->rc > 0 && !same_str(x->meta, x->meta_len, y->meta, y->meta_len))
		w = "meta";
	else if (a->rc > 0 && x->title_in_text != y->title_in_text)
		w = "title_in_text";
	if (w)
		snprintf(why, cap, "%s differs: rc %d/%d, err '%s' / '%s', id '%.80s' / '%.80s'", w, a->rc,
			 b->rc, a->rc < 0 ? a->e.msg : "", b->rc < 0 ? b->e.msg : "", x->id ? x->id : "(null)",
			 y->id ? y->id : "(null)");
	return !w;
}

/* ---- input_next against input_next_raw + input_parse on threads ---- */

static volatile sig_atomic_t g_stop;

/* Calls where a stop is requested: the same in both runs. */
static int stop_at(size_t k) { return k == 0 || k == 3 || k == 9 || k == 40; }

/* Points stdin at path (or leaves it) before a run. */
static void set_stdin(const char *path)
{
	if (!path)
		return;
	int fd = open(path, O_RDONLY);
	if (fd < 0 || dup2(fd, STDIN_FILENO) < 0) {
		perror(path);
		exit(1);
	}
	close(fd);
}

/* A file that vanishes after input_open: made before each run, removed after opening. */
static const char *g_vanish, *g_vanish_dir;

static int open_input(char **paths, int n, const input_opts *o, input **in)
{
	if (g_vanish)
		WRITE_LIT(g_vanish_dir, "gone.jsonl", "{\"_id\":\"v\",\"text\":\"gone\"}\n");
	emb_err e;
	int rc = input_open(paths, n, o, in, &e);
	CHECK(rc == 0, "input_open: %s", e.msg);
	if (g_vanish)
		unlink(g_vanish);
	return rc;
}

static size_t run_next(char **paths, int n, const input_opts *o, const char *in_stdin, result **out)
{
	input *in;
	set_stdin(in_stdin);
	if (open_input(paths, n, o, &in))
		return 0;
	size_t cnt = 0, cap = 1024;
	result *res = malloc(cap * sizeof *res);
	for (size_t k = 0;; k++) {
		if (cnt == cap)
			res = realloc(res, (cap *= 2) * sizeof *res);
		result *r = &res[cnt++];
		memset(r, 0, sizeof *r);
		g_stop = stop_at(k);
		r->rc = input_next(in, &r->d, &r->e);
		if (r->rc == 0)
			break;
	}
	g_stop = 0;
	input_close(in);
	*out = res;
	return cnt;
}

typedef struct slot {
	int rc;
	emb_err e;
	input_rec rec;
	result res;
} slot;

typedef struct pjob {
	const input_opts *o;
	slot *s;
	size_t n, k, nt;
} pjob;

static void *parse_some(void *arg)
{
	pjob *j = arg;
	for (size_t i = j->k; i < j->n; i += j->nt) {
		slot *s = &j->s[i];
		if (s->rc > 0)
			s->res.rc = input_parse(j->o, &s->rec, &s->res.d, &s->res.e);
	}
	return NULL;
}

static size_t run_raw(char **paths, int n, const input_opts *o, const char *in_stdin, int nt, slot **out)
{
	input *in;
	set_stdin(in_stdin);
	if (open_input(paths, n, o, &in))
		return 0;
	size_t cnt = 0, cap = 1024;
	slot *s = malloc(cap * sizeof *s);
	for (size_t k = 0;; k++) {
		if (cnt == cap)
			s = realloc(s, (cap *= 2) * sizeof *s);
		slot *x = &s[cnt++];
		memset(x, 0, sizeof *x);
		g_stop = stop_at(k);
		x->rc = input_next_raw(in, &x->rec, &x->e);
		if (x->rc <= 0) { /* what input_next makes of it, by input.h's contract */
			x->res.rc = x->rc;
			x->res.e = x->e;
			if (x->rc < 0) {
				x->res.d.id = x->rec.id;
				x->res.d.id_len = x->rec.id_len;
				x->rec.id = NULL;
				strcpy(x->res.d.where, x->rec.where);
			}
			input_rec_free(&x->rec);
		}
		if (x->rc == 0)
			break;
	}
	g_stop = 0;
	input_close(in);
	pthread_t th[8];
	pjob jobs[8];
	for (int k = 0; k < nt; k++) {
		jobs[k] = (pjob){o, s, cnt, (size_t)k, (size_t)nt};
		pthread_create(&th[k], NULL, parse_some, &jobs[k]);
	}
	for (int k = 0; k < nt; k++)
		pthread_join(th[k], NULL);
	*out = s;
	return cnt;
}

/* jansson alone on a JSONL record, as input_parse was before the fast path. */
static void jansson_parse(const input_opts *o, const char *data, size_t len, const char *where, result *r)
{
	memset(r, 0, sizeof *r);
	snprintf(r->d.where, sizeof r->d.where, "%s", where);
	if (parse_jsonl(o, data, len, &r->d, &r->e)) {
		free(r->d.text);
		free(r->d.title);
		free(r->d.meta);
		r->d.text = r->d.title = r->d.meta = NULL;
		r->d.text_len = r->d.title_len = r->d.meta_len = 0;
		r->rc = -1;
	} else {
		r->rc = 1;
	}
}

static long g_fast_ok, g_fast_all;

/* Compares input_parse with jansson on one JSONL record (copied: input_parse may take it). */
static void check_against_jansson(const input_opts *o, const char *data, size_t len, const char *where)
{
	result a, b;
	input_rec r = {.kind = INPUT_REC_JSONL, .len = len};
	r.data = malloc(len + 1);
	memcpy(r.data, data, len);
	r.data[len] = 0;
	snprintf(r.where, sizeof r.where, "%s", where);
	input_doc probe;
	memset(&probe, 0, sizeof probe);
	snprintf(probe.where, sizeof probe.where, "%s", where);
	g_fast_all++;
	if (fast_jsonl(o, r.data, len, &probe))
		g_fast_ok++;
	input_doc_free(&probe);
	memset(&a, 0, sizeof a);
	a.rc = input_parse(o, &r, &a.d, &a.e);
	input_rec_free(&r);
	jansson_parse(o, data, len, where, &b);
	char why[2048];
	if (!same(&a, &b, why, sizeof why))
		CHECK(0, "%s: input_parse vs jansson: %s; record: %.300s", where, why, data);
	input_doc_free(&a.d);
	input_doc_free(&b.d);
}

/* One input set: input_next vs raw + parse on 3 threads, and each JSONL record vs jansson. */
static void compare_inputs(const char *name, char **paths, int n, const input_opts *o, const char *in_stdin)
{
	result *seq = NULL;
	slot *par = NULL;
	size_t ns = run_next(paths, n, o, in_stdin, &seq);
	size_t np = run_raw(paths, n, o, in_stdin, 3, &par);
	CHECK(ns == np, "%s: %zu results from input_next, %zu from input_next_raw", name, ns, np);
	long docs = 0, errs = 0;
	for (size_t i = 0; i < ns && i < np; i++) {
		char why[2048];
		if (!same(&seq[i], &par[i].res, why, sizeof why))
			CHECK(0, "%s: result %zu: %s", name, i, why);
		docs += seq[i].rc > 0;
		errs += seq[i].rc < 0;
	}
	printf("%s: %zu results (%ld documents, %ld errors) the same\n", name, ns, docs, errs);
	for (size_t i = 0; i < ns; i++)
		input_doc_free(&seq[i].d);
	for (size_t i = 0; i < np; i++) {
		input_doc_free(&par[i].res.d);
		input_rec_free(&par[i].rec);
	}
	free(seq);
	free(par);
}

/* Every JSONL record of the inputs against jansson (framed once more). */
static void jsonl_against_jansson(const char *name, char **paths, int n, const input_opts *o, const char *in_stdin)
{
	input *in;
	set_stdin(in_stdin);
	if (open_input(paths, n, o, &in))
		return;
	input_rec r;
	emb_err e;
	int rc;
	long n0 = g_fast_all, f0 = g_fast_ok;
	while ((rc = input_next_raw(in, &r, &e)) != 0) {
		if (rc > 0 && r.kind == INPUT_REC_JSONL)
			check_against_jansson(o, r.data, r.len, r.where);
		input_rec_free(&r);
	}
	input_close(in);
	printf("%s: %ld JSONL records as jansson reads them, %ld by the fast path\n", name,
	       g_fast_all - n0, g_fast_ok - f0);
}

/* ---- the made-up tree of bad records and files ---- */

static const char *const bad_lines[] = {
	"{\"_id\": \"ok1\", \"title\": \"T\", \"text\": \"plain\", \"metadata\": {}}",
	"{\"_id\": \"a\", \"text\": ",
	"[1, 2]",
	"\"just a string\"",
	"{\"text\": \"no id\"}",
	"{\"_id\": [1], \"text\": \"x\"}",
	"{\"_id\": 1.5, \"text\": \"x\"}",
	"{\"_id\": true, \"text\": \"x\"}",
	"{\"_id\": \"\", \"text\": \"empty id\"}",
	"{\"_id\": null, \"id\": 7, \"text\": \"falls back to id\"}",
	"{\"_id\": null, \"id\": -0, \"text\": \"minus zero\"}",
	"{\"id\": 123456789012345678, \"text\": \"18 digits\"}",
	"{\"id\": 9223372036854775807, \"text\": \"19 digits\"}",
	"{\"id\": 123456789012345678901234, \"text\": \"too big\"}",
	"{\"_id\": \"\\u0001a\", \"text\": \"control id\"}",
	"{\"_id\": \"a\\u0085\", \"text\": \"C1 id\"}",
	"{\"_id\": \"a\\u007f\", \"text\": \"DEL id\"}",
	"{\"_id\": \"tab\\tid\", \"text\": \"x\"}",
	"{\"_id\": \"b\", \"text\": 5}",
	"{\"_id\": \"b2\"}",
	"{\"_id\": \"b3\", \"text\": null}",
	"{\"_id\": \"c\", \"text\": \"x\", \"title\": 3}",
	"{\"_id\": \"c2\", \"text\": \"x\", \"title\": null}",
	"{\"_id\": \"d\", \"text\": \"\xc3\x28\"}",
	"{\"_id\": \"d2\", \"text\": \"\xed\xa0\x80\"}",
	"{\"_id\": \"d3\", \"text\": \"\xc0\xaf\"}",
	"{\"_id\": \"d4\", \"text\": \"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}",
	"{\"_id\": \"e\", \"text\": \"a\\u0000b\"}",
	"{\"_id\": \"f\", \"text\": \"\\ud800\"}",
	"{\"_id\": \"f2\", \"text\": \"\\udc00\"}",
	"{\"_id\": \"f3\", \"text\": \"\\ud83d\\ude00 \\u00E9\\u20ac\"}",
	"{\"_id\": \"f4\", \"text\": \"\\ud83dx\"}",
	"{\"_id\": \"f5\", \"text\": \"\\ud83d\\u0041\"}",
	"{\"_id\": \"f6\", \"text\": \"\\x41\"}",
	"{\"_id\": \"f7\", \"text\": \"\\u12\"}",
	"{\"_id\": \"esc\", \"text\": \"\\\"q\\\" \\\\ \\/ \\b\\f\\n\\r\\t\"}",
	"{\"_id\": \"raw tab\", \"text\": \"a\tb\"}",
	"{\"_id\": \"g\", \"_id\": \"h\", \"text\": \"dup\"}",
	"{\"_id\": \"g2\", \"\\u005fid\": \"h\", \"text\": \"dup escaped\"}",
	"{\"_id\": \"i\", \"text\": \"x\", \"metadata\": {\"a\": 1, \"a\": 2}}",
	"{\"_id\": \"i2\", \"text\": \"x\", \"other\": {\"a\": 1, \"a\": 2}}",
	"{\"_id\": \"j\", \"text\": \"x\", \"n\": 1e999}",
	"{\"_id\": \"j2\", \"text\": \"x\", \"n\": -1.5e-3, \"m\": 0.0, \"k\": 1E+2}",
	"{\"_id\": \"j3\", \"text\": \"x\", \"n\": 01}",
	"{\"_id\": \"j4\", \"text\": \"x\", \"n\": 1.}",
	"{\"_id\": \"j5\", \"text\": \"x\", \"n\": -}",
	"{\"_id\": \"k\", \"text\": \"x\", \"metadata\": {\"url\": \"http:\\/\\/x\", \"n\": [1, 2.5, -0, true, false, null], \"s\": \"\\u00e9\"}}",
	"{\"_id\": \"l\", \"text\": \"x\", \"metadata\": \"str\"}",
	"{\"_id\": \"l2\", \"text\": \"x\", \"metadata\": 1.0}",
	"{\"_id\": \"l3\", \"text\": \"x\", \"metadata\": null}",
	"{\"_id\": \"l4\", \"text\": \"x\", \"metadata\": { }}",
	"{\"_id\": \"l5\", \"text\": \"x\", \"metadata\": []}",
	"{\"_id\": \"l6\", \"text\": \"x\", \"metadata\": 12345678901234567890}",
	"{\"_id\": \"m\", \"text\": \"x\"} x",
	"{\"_id\": \"m2\", \"text\": \"x\",}",
	"{\"_id\": \"m3\" \"text\": \"x\"}",
	"{\"_id\": \"m4\", \"text\": \"x\"}}",
	"{\"_id\": \"m5\", \"text\": \"x\", \"t\": tru}",
	"{\"_id\": \"m6\", \"text\": \"x\", \"t\": truex}",
	"  \t{ \"_id\" : \"sp\" , \"text\" : \"spaces\" }  \t",
	"{}",
	"{\"_id\": \"unterminated",
	"{\"_id\": \"n\", \"text\": \"x\", \"a\": [}",
	"{\"_id\": \"n2\", \"text\": \"x\", \"a\": {\"b\": [1, {\"c\": \"}\"}]}}",
	"   ",
	"\t",
	"{\"_id\": \"crlf\", \"text\": \"x\"}\r",
	"{\"_id\": \"crlf2\", \"text\": \"x\"}\r\r",
	"{\"_id\": \"nul\", \"text\": \"x\"}\0",
	"{\"_id\": \"over\", \"text\": \"@BIG@\"}",
	"{\"_id\": \"after over\", \"text\": \"x\"}",
	NULL,
};

static void put_str(char **b, size_t *n, size_t *cap, const char *s, size_t l)
{
	while (*n + l + 1 > *cap)
		*b = realloc(*b, *cap = *cap ? *cap * 2 : 4096);
	memcpy(*b + *n, s, l);
	*n += l;
	(*b)[*n] = 0;
}

/* bad.jsonl: the lines above (an over-cap one filled in), deep nesting, no final newline. */
static void write_bad_jsonl(const char *dir, const char *name, size_t cap_bytes)
{
	char *b = NULL;
	size_t n = 0, cap = 0;
	for (int i = 0; bad_lines[i]; i++) {
		const char *l = bad_lines[i];
		const char *at = strstr(l, "@BIG@");
		size_t len = strcmp(l, "{\"_id\": \"nul\", \"text\": \"x\"}") == 0 ? strlen(l) + 1 : strlen(l);
		if (at) {
			put_str(&b, &n, &cap, l, (size_t)(at - l));
			for (size_t k = 0; k < cap_bytes; k++)
				put_str(&b, &n, &cap, "x", 1);
			put_str(&b, &n, &cap, at + 5, strlen(at + 5));
		} else {
			put_str(&b, &n, &cap, l, len);
		}
		put_str(&b, &n, &cap, "\n", 1);
	}
	for (int depth = 900; depth <= 2100; depth += 600) { /* under and over the limits */
		const char *h = "{\"_id\": \"deep\", \"text\": \"x\", \"a\": ";
		put_str(&b, &n, &cap, h, strlen(h));
		for (int k = 0; k < depth; k++)
			put_str(&b, &n, &cap, "[", 1);
		for (int k = 0; k < depth; k++)
			put_str(&b, &n, &cap, "]", 1);
		put_str(&b, &n, &cap, "}\n", 2);
	}
	const char *last = "{\"_id\": \"last\", \"text\": \"no newline\"}";
	put_str(&b, &n, &cap, last, strlen(last));
	test_write_file(dir, name, b, n);
	free(b);
}

static void make_tree(const char *root, size_t cap_bytes)
{
	char p[4096];
	write_bad_jsonl(root, "bad.jsonl", cap_bytes);
	WRITE_LIT(root, "a.txt", "a plain text file\nwith two lines\n");
	WRITE_LIT(root, "b.md", "intro\n# The Title \r\nbody\n");
	WRITE_LIT(root, "c.markdown", "no heading here\n#nospace\n");
	WRITE_LIT(root, "d.md", "# Only a title");
	WRITE_LIT(root, "bin.txt", "ab\0cd");
	WRITE_LIT(root, "badutf.txt", "ok \xff no");
	WRITE_LIT(root, "ctl\x01name.txt", "fine text");
	WRITE_LIT(root, "\xff-name.txt", "fine text");
	WRITE_LIT(root, "empty.txt", "");
	WRITE_LIT(root, "empty.jsonl", "");
	WRITE_LIT(root, "blank.ndjson", "\n\n  \n{\"id\": \"nd\", \"text\": \"ndjson\"}\n");
	char *big = malloc(cap_bytes + 10);
	memset(big, 'y', cap_bytes + 10);
	test_write_file(root, "big.txt", big, cap_bytes + 10);
	free(big);
	snprintf(p, sizeof p, "%s/sub", root);
	mkdir(p, 0755);
	WRITE_LIT(p, "inner.jsonl", "{\"_id\": \"in1\", \"text\": \"inner\"}\n{bad\n");
	WRITE_LIT(p, ".hidden.txt", "hidden");
	snprintf(p, sizeof p, "%s/sub/deeper", root);
	mkdir(p, 0755);
	WRITE_LIT(p, "z.md", "# Z\nzed\n");
	snprintf(p, sizeof p, "%s/fifo", root);
	mkfifo(p, 0644);
	char target[4096];
	snprintf(target, sizeof target, "%s/sub", root);
	snprintf(p, sizeof p, "%s/link-to-dir", root);
	if (symlink(target, p))
		perror("symlink");
	snprintf(target, sizeof target, "%s/a.txt", root);
	snprintf(p, sizeof p, "%s/link-to-file.txt", root);
	if (symlink(target, p))
		perror("symlink");
	snprintf(p, sizeof p, "%s/dangling.txt", root);
	if (symlink("/nonexistent/x", p))
		perror("symlink");
}

/* ---- random records and mutations ---- */

static uint64_t g_rng = 88172645463325252ull;
static uint32_t rnd(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return (uint32_t)(g_rng >> 11);
}
static uint32_t rn(uint32_t n) { return n ? rnd() % n : 0; }

static void gen_ws(char **b, size_t *n, size_t *cap)
{
	static const char *const ws[] = {"", "", "", " ", "\t", "  ", "\r", "\n"};
	const char *w = ws[rn(8)];
	put_str(b, n, cap, w, strlen(w));
}

static void gen_string(char **b, size_t *n, size_t *cap)
{
	put_str(b, n, cap, "\"", 1);
	int len = (int)rn(4) == 0 ? (int)rn(200) : (int)rn(12);
	for (int i = 0; i < len; i++) {
		char t[16];
		uint32_t k = rn(40);
		if (k < 22) {
			t[0] = (char)('a' + rn(26));
			t[1] = 0;
		} else if (k < 24) {
			static const char *const e[] = {"\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"};
			strcpy(t, e[rn(8)]);
		} else if (k < 27) {
			static const uint32_t cps[] = {0x1, 0x1f, 0x20, 0x7f, 0x80, 0x85, 0x9f, 0xa0, 0xe9, 0x7ff, 0x800,
						       0x20ac, 0xd7ff, 0xe000, 0xfffd, 0xffff};
			snprintf(t, sizeof t, rn(2) ? "\\u%04x" : "\\u%04X", cps[rn(16)]);
		} else if (k < 28) {
			uint32_t c = 0x10000 + rn(0x100000);
			snprintf(t, sizeof t, "\\u%04x\\u%04x", 0xD800 + ((c - 0x10000) >> 10), 0xDC00 + ((c - 0x10000) & 0x3FF));
		} else if (k < 32) {
			static const uint32_t cps[] = {0xe9, 0x3b1, 0x20ac, 0x4e2d, 0xfffd, 0x1f600, 0x10ffff, 0x80};
			t[utf8_encode(t, cps[rn(8)])] = 0;
		} else if (k < 33) {
			strcpy(t, " ");
		} else {
			t[0] = (char)('0' + rn(10));
			t[1] = 0;
		}
		put_str(b, n, cap, t, strlen(t));
	}
	put_str(b, n, cap, "\"", 1);
}

static void gen_value(char **b, size_t *n, size_t *cap, int depth)
{
	uint32_t k = rn(depth > 2 ? 7 : 9);
	char t[64];
	switch (k) {
	case 0: case 1: case 2:
		gen_string(b, n, cap);
		break;
	case 3: {
		int digits = (int)rn(20) + 1;
		int l = 0;
		if (rn(3) == 0)
			t[l++] = '-';
		t[l++] = (char)('1' + rn(9));
		for (int i = 1; i < digits; i++)
			t[l++] = (char)('0' + rn(10));
		if (rn(4) == 0)
			l = snprintf(t, sizeof t, "%s", rn(2) ? "0" : "-0");
		t[l] = 0;
		put_str(b, n, cap, t, strlen(t));
		break;
	}
	case 4:
		snprintf(t, sizeof t, "%d.%de%s%d", (int)rn(100), (int)rn(1000), rn(2) ? "-" : "", (int)rn(400));
		if (rn(2))
			snprintf(t, sizeof t, "%d.%d", (int)rn(100), (int)rn(1000));
		put_str(b, n, cap, t, strlen(t));
		break;
	case 5: {
		static const char *const lit[] = {"true", "false", "null"};
		const char *l = lit[rn(3)];
		put_str(b, n, cap, l, strlen(l));
		break;
	}
	case 6:
		put_str(b, n, cap, "null", 4);
		break;
	case 7: {
		put_str(b, n, cap, "[", 1);
		int m = (int)rn(4);
		for (int i = 0; i < m; i++) {
			if (i)
				put_str(b, n, cap, ",", 1);
			gen_ws(b, n, cap);
			gen_value(b, n, cap, depth + 1);
		}
		put_str(b, n, cap, "]", 1);
		break;
	}
	default: {
		put_str(b, n, cap, "{", 1);
		int m = (int)rn(4);
		for (int i = 0; i < m; i++) {
			if (i)
				put_str(b, n, cap, ",", 1);
			snprintf(t, sizeof t, "\"k%d\"", (int)rn(5));
			put_str(b, n, cap, t, strlen(t));
			put_str(b, n, cap, ":", 1);
			gen_value(b, n, cap, depth + 1);
		}
		put_str(b, n, cap, "}", 1);
		break;
	}
	}
}

/* A random record, mostly good: an object with the usual keys and some others. */
static char *gen_record(size_t *len)
{
	static const char *const keys[] = {"_id", "id", "text", "title", "metadata", "x", "y"};
	char *b = NULL;
	size_t n = 0, cap = 0;
	gen_ws(&b, &n, &cap);
	put_str(&b, &n, &cap, "{", 1);
	int used = 0, m = 2 + (int)rn(5);
	int first = 1;
	for (int i = 0; i < m; i++) {
		int k = i == 0 ? (int)rn(2) : i == 1 ? 2 : (int)rn(7);
		if ((used >> k & 1) && rn(20) != 0)
			continue; /* duplicates now and then */
		used |= 1 << k;
		if (!first)
			put_str(&b, &n, &cap, ",", 1);
		first = 0;
		gen_ws(&b, &n, &cap);
		put_str(&b, &n, &cap, "\"", 1);
		put_str(&b, &n, &cap, keys[k], strlen(keys[k]));
		put_str(&b, &n, &cap, "\"", 1);
		gen_ws(&b, &n, &cap);
		put_str(&b, &n, &cap, ":", 1);
		gen_ws(&b, &n, &cap);
		if (k <= 3 && rn(4) != 0)
			gen_string(&b, &n, &cap);
		else
			gen_value(&b, &n, &cap, 1);
		gen_ws(&b, &n, &cap);
	}
	put_str(&b, &n, &cap, "}", 1);
	gen_ws(&b, &n, &cap);
	*len = n;
	return b;
}

/* Changes a few bytes of s (to bytes that matter to JSON and UTF-8 most of the time). */
static char *mutate(const char *s, size_t len, const char *other, size_t olen, size_t *outlen)
{
	static const unsigned char hot[] = {'"', '\\', 'u', '{', '}', '[', ']', ',', ':', '0', '9', '-', '.', 'e',
					    ' ', 'n', 't', 'f', 0x00, 0x01, 0x1f, 0x7f, 0x80, 0xbf, 0xc3, 0xed,
					    0xa0, 0xf0, 0xf4, 0x90, 0xff, 'D', '8', 'C'};
	size_t cap = len + olen + 64;
	char *b = malloc(cap);
	memcpy(b, s, len);
	size_t n = len;
	int ops = 1 + (int)rn(3);
	for (int o = 0; o < ops; o++) {
		size_t at = rn((uint32_t)n + 1);
		unsigned char c = rn(4) ? hot[rn(sizeof hot)] : (unsigned char)rn(256);
		switch (rn(5)) {
		case 0: case 1: /* replace */
			if (at < n)
				b[at] = (char)c;
			break;
		case 2: /* insert */
			if (n + 1 < cap) {
				memmove(b + at + 1, b + at, n - at);
				b[at] = (char)c;
				n++;
			}
			break;
		case 3: { /* delete a few */
			size_t k = 1 + rn(4);
			if (at + k <= n) {
				memmove(b + at, b + at + k, n - at - k);
				n -= k;
			}
			break;
		}
		default: { /* splice in a piece of another record */
			size_t from = rn((uint32_t)olen + 1), k = rn(16);
			if (from + k > olen)
				k = olen - from;
			if (n + k < cap) {
				memmove(b + at + k, b + at, n - at);
				memcpy(b + at, other + from, k);
				n += k;
			}
			break;
		}
		}
	}
	*outlen = n;
	return b;
}

/* Framing against getline: every non-blank line of path, as input_next_raw hands it over
 * (without its newline and trailing CRs, with its line number), whatever its length. */
static void check_framing(const char *path)
{
	FILE *f = fopen(path, "rb");
	input *in;
	input_opts o = {.id_fields = "_id,id", .text_field = "text", .title_field = "title",
			.meta_field = "metadata"};
	emb_err e;
	char *p[] = {(char *)path};
	if (!f || input_open(p, 1, &o, &in, &e)) {
		CHECK(0, "%s: cannot open", path);
		return;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	long lineno = 0, recs = 0, bad = 0;
	while ((got = getline(&line, &cap, f)) > 0) {
		lineno++;
		size_t n = (size_t)got;
		if (n && line[n - 1] == '\n')
			n--;
		while (n && line[n - 1] == '\r')
			n--;
		size_t i = 0;
		while (i < n && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i == n)
			continue;
		input_rec r;
		int rc = input_next_raw(in, &r, &e);
		char where[4200];
		snprintf(where, sizeof where, "%s:%ld", path, lineno);
		if (rc != 1 || r.len != n || memcmp(r.data, line, n) || r.data[n] || strcmp(r.where, where))
			bad++;
		recs++;
		input_rec_free(&r);
	}
	input_rec r;
	CHECK(input_next_raw(in, &r, &e) == 0, "%s: records after the end", path);
	input_rec_free(&r);
	CHECK(bad == 0, "%s: %ld of %ld records framed wrong", path, bad, recs);
	printf("%s: %ld records framed as getline reads them\n", path, recs);
	free(line);
	fclose(f);
	input_close(in);
}

/* Lines of every length around the read size (256 KiB), some far longer, CRs, blanks. */
static void write_long_lines(const char *dir, const char *name)
{
	char *b = NULL;
	size_t n = 0, cap = 0;
	for (int i = 0; i < 60; i++) {
		size_t len = i % 3 == 0 ? rn(1000) : i % 3 == 1 ? (256u << 10) - 40 + rn(80) : rn(900u << 10);
		put_str(&b, &n, &cap, "{\"_id\": \"", 9);
		char id[32];
		snprintf(id, sizeof id, "L%d\", \"text\": \"", i);
		put_str(&b, &n, &cap, id, strlen(id));
		for (size_t k = 0; k < len; k++) {
			char c = (char)('a' + k % 26);
			put_str(&b, &n, &cap, &c, 1);
		}
		put_str(&b, &n, &cap, "\"}", 2);
		const char *ends[] = {"\n", "\r\n", "\r\r\n", "\n\n", "\n  \t\n"};
		const char *end = ends[rn(5)];
		put_str(&b, &n, &cap, end, strlen(end));
	}
	test_write_file(dir, name, b, n);
	free(b);
}

int main(void)
{
	char tmp[256];
	test_tmpdir(tmp);
	if (getenv("TEST_INPUT_SEED")) /* other random records and mutations, for longer hunts */
		g_rng ^= strtoull(getenv("TEST_INPUT_SEED"), NULL, 10) * 0x9E3779B97F4A7C15ull;
	const size_t cap_bytes = 8192;
	input_opts o = {.id_fields = "_id,id", .text_field = "text", .title_field = "title",
			.meta_field = "metadata", .stop = &g_stop};
	/* odd options: a field read as two things, an id key that is also the metadata */
	input_opts o2 = {.id_fields = "id,,x,_id", .text_field = "title", .title_field = "text",
			 .meta_field = "_id", .stop = &g_stop};

	/* 1. the SciFact corpus, the test inputs, the sample */
	const char *scifact = "../shared/data/scifact/corpus.jsonl";
	if (access(scifact, R_OK) == 0) {
		char *p[] = {(char *)scifact};
		compare_inputs("scifact", p, 1, &o, NULL);
		jsonl_against_jansson("scifact", p, 1, &o, NULL);
	} else {
		printf("no %s: SciFact part skipped\n", scifact);
	}
	char *ptests[] = {"tests/corpus", "tests/data", "sample"};
	compare_inputs("tests/corpus, tests/data, sample", ptests, 3, &o, NULL);
	jsonl_against_jansson("tests/corpus, tests/data, sample", ptests, 3, &o, NULL);

	/* 2. framing alone, against getline, on SciFact and on lines around the read size */
	if (access(scifact, R_OK) == 0)
		check_framing(scifact);
	char longp[4096];
	write_long_lines(tmp, "long.jsonl");
	snprintf(longp, sizeof longp, "%s/long.jsonl", tmp);
	check_framing(longp);
	{
		char *p[] = {longp};
		compare_inputs("long lines", p, 1, &o, NULL);
		jsonl_against_jansson("long lines", p, 1, &o, NULL);
	}
	unlink(longp);

	/* 3. the made-up tree, stdin, a file that vanishes, a small record cap */
	make_tree(tmp, cap_bytes);
	char bad[4096], gone[4096], missing_dir[4096];
	snprintf(bad, sizeof bad, "%s/bad.jsonl", tmp);
	snprintf(gone, sizeof gone, "%s/gone.jsonl", tmp);
	snprintf(missing_dir, sizeof missing_dir, "%s/sub", tmp);
	g_vanish = gone;
	g_vanish_dir = tmp;
	char *ptree[] = {"-", tmp, bad, gone, missing_dir};
	input_opts oc = o;
	oc.max_record = cap_bytes;
	compare_inputs("bad tree (cap 8192)", ptree, 5, &oc, bad);
	jsonl_against_jansson("bad tree (cap 8192)", ptree, 5, &oc, bad);
	input_opts oc2 = o2;
	oc2.max_record = cap_bytes;
	compare_inputs("bad tree, odd fields", ptree, 5, &oc2, bad);
	jsonl_against_jansson("bad tree, odd fields", ptree, 5, &oc2, bad);

	/* 4. every error class input.h lists shows up in the tree */
	{
		result *res;
		set_stdin(bad);
		size_t n = run_next(ptree, 5, &oc, NULL, &res);
		const char *want[] = {"malformed JSON", "expected a JSON object", "no document id",
				      "must be a string or an integer", "holds a control character", "non-string 'text'",
				      "no 'text'", "'title' must be a string", "record over the limit",
				      "bytes is over the record limit", "is not valid UTF-8", "invalid UTF-8 at byte",
				      "No such file", "interrupted", "duplicate object key", "too big integer",
				      "real number overflow", "maximum parsing depth", "\\u0000 is not allowed",
				      "invalid Unicode"};
		for (size_t w = 0; w < sizeof want / sizeof *want; w++) {
			int found = 0;
			for (size_t i = 0; i < n && !found; i++)
				found = res[i].rc < 0 && strstr(res[i].e.msg, want[w]) != NULL;
			CHECK(found, "no error '%s' in the bad tree", want[w]);
		}
		for (size_t i = 0; i < n && getenv("TEST_INPUT_VERBOSE"); i++) {
			printf("%zu: rc %d id %s: %s\n", i, res[i].rc, res[i].d.id ? res[i].d.id : "(null)",
			       res[i].rc < 0 ? res[i].e.msg : res[i].d.where);
		}
		int got_md = 0, got_id7 = 0;
		for (size_t i = 0; i < n; i++) {
			if (res[i].rc > 0 && res[i].d.title && !strcmp(res[i].d.title, "The Title"))
				got_md = res[i].d.title_in_text;
			if (res[i].rc > 0 && !strcmp(res[i].d.id, "7"))
				got_id7 = 1;
			input_doc_free(&res[i].d);
		}
		CHECK(got_md && got_id7, "Markdown title %d, integer id 7 %d", got_md, got_id7);
		free(res);
	}
	g_vanish = NULL;

	/* 5. random records, then mutations of everything above, for a bounded time */
	size_t nseed = 0, capseed = 4096;
	char **seeds = malloc(capseed * sizeof *seeds);
	size_t *seedlen = malloc(capseed * sizeof *seedlen);
	for (int i = 0; bad_lines[i]; i++) {
		seeds[nseed] = strdup(bad_lines[i]);
		seedlen[nseed++] = strlen(bad_lines[i]);
	}
	FILE *f = fopen(scifact, "rb");
	char *line = NULL;
	size_t lcap = 0;
	ssize_t got;
	while (f && nseed < 300 && (got = getline(&line, &lcap, f)) > 0) {
		size_t l = (size_t)got < 1500 ? (size_t)got : 1500; /* shorter: more mutations a second */
		seeds[nseed] = malloc(l + 1);
		memcpy(seeds[nseed], line, l);
		seeds[nseed][l] = 0;
		seedlen[nseed++] = l;
	}
	if (f)
		fclose(f);
	free(line);
	long g0 = g_fast_all, gf = g_fast_ok;
	for (int i = 0; i < 2000; i++) {
		size_t l;
		char *r = gen_record(&l);
		check_against_jansson(i & 1 ? &o2 : &o, r, l, "gen:1");
		if (nseed < capseed) {
			seeds[nseed] = r;
			seedlen[nseed++] = l;
		} else {
			free(r);
		}
	}
	printf("random records: %ld, %ld by the fast path\n", g_fast_all - g0, g_fast_ok - gf);
	CHECK(g_fast_ok - gf > 200, "too few random records took the fast path: the test would prove little");
	const char *secs = getenv("TEST_INPUT_SECONDS");

	double limit = secs ? atof(secs) : 5.0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long muts = 0;
	g0 = g_fast_all, gf = g_fast_ok;
	do {
		for (int k = 0; k < 200; k++, muts++) {
			size_t a = rn((uint32_t)nseed), b = rn((uint32_t)nseed), l;
			char *m = mutate(seeds[a], seedlen[a], seeds[b], seedlen[b], &l);
			check_against_jansson(muts & 1 ? &o2 : &o, m, l, "mut:1");
			free(m);
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
	} while (t1.tv_sec - t0.tv_sec + (t1.tv_nsec - t0.tv_nsec) * 1e-9 < limit && test_failures < 20);
	printf("mutations: %ld in %.1f s, %ld by the fast path\n", muts, limit, g_fast_ok - gf);
	CHECK(g_fast_ok - gf > muts / 100, "too few mutations took the fast path");
	for (size_t i = 0; i < nseed; i++)
		free(seeds[i]);
	free(seeds);
	free(seedlen);
	test_rm_rf(tmp);
	return test_done("test_input");
}
