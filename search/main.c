/* search — queries a vector store from the terminal or from scripts: embeds the query on the
 * CPU with the model recorded in the store (checked by weights sha256), scans every stored
 * vector exactly, and prints one result per document with the snippet of its best window.
 *
 *   search --store DIR [--k 10] [--json] QUERY...        one-shot
 *   search --store DIR                                   interactive on a TTY (libedit)
 *   search --store DIR --queries Q.jsonl --format trec   batch evaluation (TREC run lines)
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <editline/readline.h>

#include "cli.h"
#include "embed.h"
#include "store.h"
#include "threadpool.h"

/* A query line longer than this is an error (FILE:LINE): queries are truncated to the
 * model's few hundred tokens anyway, and a cap keeps endless input (/dev/zero) in bounded
 * memory. */
#define MAX_QUERY_LINE (1 << 20)
/* --threads above this is a typing error, not a machine: thousands of threads would only
 * exhaust memory and the process table. */

typedef enum { FMT_TEXT, FMT_JSON, FMT_TREC } out_format;

typedef struct opts {
	const char *store, *model, *queries, *run_name;
	int k, threads, snippet;
	int rescore;  /* -1: the store's default */
	out_format fmt;
	char *query; /* joined positional words */
} opts;

typedef struct ctx {
	opts *o;
	store *st;
	embed_model *m;
	store_model sm;
	threadpool *pool;
	embed_prefix prefix;
	char model_dir[PATH_MAX];
} ctx;

static void usage(FILE *f)
{
	fprintf(f,
"usage: search --store DIR [options] [QUERY...]\n"
"  --k N             results a query (default 10)\n"
"  --json            JSON output (one object a query)\n"
"  --format F        text, json or trec (TREC run lines: qid Q0 docid rank score run)\n"
"  --queries FILE    JSONL queries (id or _id, text); '-' for stdin\n"
"  --run-name NAME   run name for --format trec (default: the model name)\n"
"  --model DIR       model directory (default: the one recorded in the store)\n"
"  --threads N       CPU threads, up to %d (default 0: all)\n"
"  --snippet N       snippet length in bytes (default 240; 0: none)\n"
"  --rescore N       int8/binary stores: rescore N x k candidates of the compact scan with\n"
"                    the f32 vectors (default %d for int8, %d for binary; 0: the compact\n"
"                    ranking and its estimated scores)\n"
"With no QUERY on a terminal, an interactive prompt: type a query, or :k N, :json, :text,\n"
":help, :q.\n", CLI_MAX_THREADS, STORE_RESCORE_INT8, STORE_RESCORE_BINARY);
}

static void parse_args(int argc, char **argv, opts *o)
{
	memset(o, 0, sizeof *o);
	o->k = 10;
	o->snippet = 240;
	o->rescore = -1;
	size_t qlen = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(n) (strcmp(a, n) == 0)
#define NEEDV() do { if (!v) { fprintf(stderr, "search: %s needs a value\n", a); exit(2); } i++; } while (0)
		if (ARG("--store")) { NEEDV(); o->store = v; }
		else if (ARG("--model")) { NEEDV(); o->model = v; }
		else if (ARG("--k") || ARG("-k")) { NEEDV(); o->k = (int)cli_int("search", a, v, 1, 1000000); }
		else if (ARG("--threads")) { NEEDV(); o->threads = (int)cli_int("search", a, v, 0, CLI_MAX_THREADS); }
		else if (ARG("--rescore")) { NEEDV(); o->rescore = (int)cli_int("search", a, v, 0, 100000); }
		else if (ARG("--snippet")) { NEEDV(); o->snippet = (int)cli_int("search", a, v, 0, 1000000); }
		else if (ARG("--json")) o->fmt = FMT_JSON;
		else if (ARG("--format")) {
			NEEDV();
			if (!strcmp(v, "trec")) o->fmt = FMT_TREC;
			else if (!strcmp(v, "json")) o->fmt = FMT_JSON;
			else if (!strcmp(v, "text")) o->fmt = FMT_TEXT;
			else { fprintf(stderr, "search: --format is text, json or trec\n"); exit(2); }
		}
		else if (ARG("--queries")) { NEEDV(); o->queries = v; }
		else if (ARG("--run-name")) { NEEDV(); o->run_name = v; }
		else if (ARG("--help") || ARG("-h")) { usage(stdout); exit(0); }
		else if (ARG("--")) {
			for (i++; i < argc; i++) {
				size_t l = strlen(argv[i]);
				o->query = realloc(o->query, qlen + l + 2);
				if (qlen) o->query[qlen++] = ' ';
				memcpy(o->query + qlen, argv[i], l + 1);
				qlen += l;
			}
		}
		else if (a[0] == '-' && a[1]) { fprintf(stderr, "search: unknown option %s\n", a); usage(stderr); exit(2); }
		else {
			size_t l = strlen(a);
			o->query = realloc(o->query, qlen + l + 2);
			if (qlen) o->query[qlen++] = ' ';
			memcpy(o->query + qlen, a, l + 1);
			qlen += l;
		}
#undef ARG
#undef NEEDV
	}
	if (!o->store) {
		fprintf(stderr, "search: --store DIR is required\n");
		usage(stderr);
		exit(2);
	}
}

/* Opens (or reopens after a rebuild swap) the store and checks that the model matches. */
static int open_store(ctx *x)
{
	emb_err e = {0};
	store_close(x->st);
	x->st = NULL;
	if (store_open(x->o->store, STORE_READONLY, &x->st, &e)) {
		fprintf(stderr, "search: %s\n", e.msg);
		return -1;
	}
	store_model sm;
	if (store_model_get(x->st, &sm, &e)) {
		fprintf(stderr, "search: %s\n", e.msg);
		return -1;
	}
	if (x->m && !strcmp(sm.sha256, x->sm.sha256) && sm.dim == x->sm.dim &&
	    sm.needs_prefix == x->sm.needs_prefix)
		return 0; /* same model as before */
	x->sm = sm;
	embed_close(x->m);
	x->m = NULL;
	if (x->o->model)
		snprintf(x->model_dir, sizeof x->model_dir, "%s", x->o->model);
	else if (sm.model_dir[0] && access(sm.model_dir, F_OK) == 0)
		snprintf(x->model_dir, sizeof x->model_dir, "%s", sm.model_dir);
	else
		embed_fetched_model_dir(sm.name, x->model_dir, sizeof x->model_dir);
	embed_options eo;
	embed_options_default(&eo);
	eo.device = EMBED_DEVICE_CPU; /* one query at a time: the CPU answers first */
	eo.threads = x->o->threads;
	eo.quiet = 1;
	if (embed_open(x->model_dir, &eo, &x->m, &e)) {
		fprintf(stderr, "search: model %s (the store's model is '%s'): %s\n", x->model_dir,
			sm.name, e.msg);
		return -1;
	}
	const char *sha = embed_model_sha256(x->m);
	if (sm.family[0] && strcmp(embed_model_family(x->m), sm.family)) {
		fprintf(stderr, "search: model %s is a %s model; store %s was built with a %s "
			"model ('%s')\n", x->model_dir, embed_model_family(x->m), x->o->store,
			sm.family, sm.name);
		return -1;
	}
	if (!sha || strcmp(sha, sm.sha256) || embed_dim(x->m) != sm.dim) {
		fprintf(stderr, "search: model %s (sha256 %.12s) is not the one store %s was built with ('%s', sha256 %.12s)\n",
			x->model_dir, sha ? sha : "?", x->o->store, sm.name, sm.sha256);
		return -1;
	}
	x->prefix = sm.needs_prefix ? EMBED_PREFIX_QUERY : EMBED_PREFIX_NONE;
	return 0;
}

/* Bytes of the UTF-8 sequence that starts with byte c (1 for ASCII or a stray byte). */
static size_t utf8_seq_len(unsigned char c)
{
	return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* A snippet: the window's text, whitespace collapsed, at most max bytes of whole UTF-8
 * characters (JSON output needs valid UTF-8), "…" when text was left out after it. */
static char *make_snippet(const char *text, size_t tl, uint32_t a, uint32_t b, int max)
{
	if (a > tl)
		a = (uint32_t)tl;
	if (b > tl || b < a)
		b = (uint32_t)tl;
	while (a < b && ((unsigned char)text[a] & 0xC0) == 0x80)
		a++; /* a window that starts inside a character starts at the next one */
	char *out = malloc((size_t)max + 8);
	if (!out)
		return NULL;
	size_t n = 0, i = a;
	int space = 0;
	for (; i < b; i++) {
		char c = text[i];
		if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
			space = n > 0;
			continue;
		}
		if (n + space >= (size_t)max)
			break;
		if (space) {
			out[n++] = ' ';
			space = 0;
		}
		out[n++] = c;
	}
	/* The copy may end inside a character (cut at max): drop that partial character, never
	 * a complete one, and the space before it. */
	size_t k = n;
	while (k > 0 && ((unsigned char)out[k - 1] & 0xC0) == 0x80)
		k--;
	if (k == 0)
		n = 0;
	else if (k - 1 + utf8_seq_len((unsigned char)out[k - 1]) > n)
		n = k - 1;
	while (n > 0 && out[n - 1] == ' ')
		n--;
	if (i < b || b < tl) {
		memcpy(out + n, "\xe2\x80\xa6", 3); /* … */
		n += 3;
	}
	out[n] = 0;
	return out;
}

/* Runs one query; prints in the chosen format. qid is for TREC and JSON (may be NULL). With
 * bsnap, the query was answered by a batch (store_search_batch) in that snapshot: bhits[0..bn)
 * are printed, nothing is searched. */
static int run_query_in(ctx *x, const char *qid, const char *q, const float *vec, json_t *jsink,
			store_snapshot *bsnap, store_hit *bhits, int bn)
{
	opts *o = x->o;
	emb_err e = {0};
	float *v = NULL;
	if (!vec) {
		v = malloc((size_t)x->sm.dim * sizeof *v);
		if (!v || embed_encode(x->m, &q, NULL, 1, x->prefix, v, &e)) {
			fprintf(stderr, "search: query%s%s: %s\n", qid ? " " : "", qid ? qid : "",
				v ? e.msg : "out of memory");
			free(v);
			return -1;
		}
		vec = v;
	}
	store_snapshot *snap = bsnap;
	if (!snap && store_snapshot_begin(x->st, &snap, &e)) {
		fprintf(stderr, "search: %s\n", e.msg);
		free(v);
		return -1;
	}
	store_hit *hits = bsnap ? bhits : malloc((size_t)o->k * sizeof *hits);
	int n = bsnap ? bn : 0, rc = 0;
	if (!bsnap && (!hits || store_search_rescore(snap, vec, o->k, o->rescore, x->pool, hits, &n, &e))) {
		fprintf(stderr, "search: %s\n", hits ? e.msg : "out of memory");
		rc = -1;
		goto out;
	}
	json_t *jres = o->fmt == FMT_JSON ? json_array() : NULL;
	for (int i = 0; i < n; i++) {
		if (o->fmt == FMT_TREC) {
			printf("%s Q0 %.*s %d %.6f %s\n", qid ? qid : "q", (int)hits[i].id_len, hits[i].id,
			       i + 1, hits[i].score, o->run_name ? o->run_name : x->sm.name);
			continue;
		}
		store_doc_view dv;
		if (store_doc_get(snap, hits[i].id, hits[i].id_len, &dv, &e)) {
			fprintf(stderr, "search: %s\n", e.msg);
			rc = -1;
			break;
		}
		char *snip = o->snippet ? make_snippet(dv.text, dv.text_len, hits[i].win_start,
						       hits[i].win_end, o->snippet) : NULL;
		if (o->fmt == FMT_JSON) {
			json_t *r = json_object();
			json_object_set_new(r, "rank", json_integer(i + 1));
			json_object_set_new(r, "score", json_real(hits[i].score));
			json_object_set_new(r, "id", json_stringn(hits[i].id, hits[i].id_len));
			json_object_set_new(r, "title", json_stringn(dv.title, dv.title_len));
			json_object_set_new(r, "window", json_integer(hits[i].win_index));
			if (snip)
				json_object_set_new(r, "snippet", json_string(snip));
			if (dv.meta_len) {
				json_t *m = json_loadb(dv.meta, dv.meta_len, JSON_DECODE_ANY, NULL);
				if (m)
					json_object_set_new(r, "metadata", m);
			}
			json_array_append_new(jres, r);
		} else {
			printf("%3d  %.4f  %.*s", i + 1, hits[i].score, (int)hits[i].id_len, hits[i].id);
			if (dv.title_len)
				printf("  %s", dv.title);
			printf("\n");
			if (snip && *snip)
				printf("     %s\n", snip);
		}
		free(snip);
		store_doc_view_free(&dv);
	}
	if (o->fmt == FMT_JSON) {
		json_t *top = json_object();
		if (qid)
			json_object_set_new(top, "id", json_string(qid));
		json_object_set_new(top, "query", json_string(q ? q : ""));
		json_object_set_new(top, "results", jres);
		if (jsink) {
			json_array_append_new(jsink, top);
		} else {
			char *s = json_dumps(top, JSON_COMPACT | JSON_ENSURE_ASCII);
			if (s)
				printf("%s\n", s);
			free(s);
			json_decref(top);
		}
	} else if (o->fmt == FMT_TEXT && n == 0) {
		printf("(no documents)\n");
	}
out:
	if (!bsnap) {
		free(hits);
		store_snapshot_end(snap);
	}
	free(v);
	fflush(stdout);
	return rc;
}

static int run_query(ctx *x, const char *qid, const char *q, const float *vec, json_t *jsink)
{
	return run_query_in(x, qid, q, vec, jsink, NULL, NULL, 0);
}

/* Lines from a file descriptor through a fixed buffer of MAX_QUERY_LINE bytes: a longer
 * line is an error instead of an ever-growing allocation. */
typedef struct linereader {
	int fd;
	const char *name; /* for messages: the file, or "stdin" */
	char *buf;        /* MAX_QUERY_LINE + 1 bytes */
	size_t start, end; /* unread bytes: buf[start..end) */
	int eof;
	long lineno;
} linereader;

/* Next line (without its newline, NUL-terminated, valid until the next call) in *line.
 * Returns 1 for a line, 0 at the end, -1 after printing an error naming FILE:LINE (a read
 * error, or a line over the cap). */
static int lr_next(linereader *r, char **line, size_t *len)
{
	for (;;) {
		char *nl = memchr(r->buf + r->start, '\n', r->end - r->start);
		if (nl || (r->eof && r->start < r->end)) {
			size_t e = nl ? (size_t)(nl - r->buf) : r->end;
			r->buf[e] = 0;
			*line = r->buf + r->start;
			*len = e - r->start;
			r->start = nl ? e + 1 : e;
			r->lineno++;
			return 1;
		}
		if (r->eof)
			return 0;
		if (r->start > 0) {
			memmove(r->buf, r->buf + r->start, r->end - r->start);
			r->end -= r->start;
			r->start = 0;
		}
		if (r->end == MAX_QUERY_LINE) {
			fprintf(stderr, "search: %s:%ld: query line longer than %d bytes\n", r->name,
				r->lineno + 1, MAX_QUERY_LINE);
			return -1;
		}
		ssize_t got = read(r->fd, r->buf + r->end, MAX_QUERY_LINE - r->end);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			fprintf(stderr, "search: %s:%ld: %s\n", r->name, r->lineno + 1, strerror(errno));
			return -1;
		}
		if (got == 0)
			r->eof = 1;
		r->end += (size_t)got;
	}
}

/* Whether lr_next would return without waiting for the writer: a streaming client (a pipe)
 * gets its answer as soon as its query is in, while a file still runs in full batches. */
static int lr_ready(const linereader *r)
{
	if (r->eof || memchr(r->buf + r->start, '\n', r->end - r->start))
		return 1;
	struct pollfd p = {.fd = r->fd, .events = POLLIN};
	return poll(&p, 1, 0) > 0;
}

/* Parses a query line: 1 with *id and *text (malloc'd), 0 for a blank line, -1 with a
 * message (naming FILE:LINE) in msg. */
static int parse_query(const linereader *r, const char *line, size_t len, char **id, char **text,
		       char msg[512])
{
	if (strspn(line, " \t\r") == len)
		return 0;
	json_error_t je;
	json_t *o = json_loadb(line, len, 0, &je);
	if (!o) {
		snprintf(msg, 512, "%s:%ld: malformed JSON: %s", r->name, r->lineno, je.text);
		return -1;
	}
	json_t *jid = json_object_get(o, "_id");
	if (!jid)
		jid = json_object_get(o, "id");
	json_t *t = json_object_get(o, "text");
	if (!json_is_string(t) || !(json_is_string(jid) || json_is_integer(jid))) {
		snprintf(msg, 512, "%s:%ld: need an id (or _id) and a text", r->name, r->lineno);
		json_decref(o);
		return -1;
	}
	char buf[32];
	if (json_is_integer(jid))
		snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(jid));
	*id = strdup(json_is_string(jid) ? json_string_value(jid) : buf);
	*text = strdup(json_string_value(t));
	json_decref(o);
	if (!*id || !*text) {
		free(*id);
		free(*text);
		snprintf(msg, 512, "%s:%ld: out of memory", r->name, r->lineno);
		return -1;
	}
	return 1;
}

/* A long-lived reader reopens the store when a rebuild swapped it, so it serves the new
 * generation and lets the old one's disk space go. Returns 0 or -1 (message printed). */
static int reopen_if_stale(ctx *x)
{
	return store_stale(x->st, x->o->store) ? open_store(x) : 0;
}

/* The check pass over a regular queries file: parses every line, keeps nothing, rewinds.
 * Returns 0, or -1 with the first error printed. */
static int check_queries(linereader *r)
{
	char *line, *id, *text, msg[512];
	size_t len;
	int got;
	while ((got = lr_next(r, &line, &len)) > 0) {
		int ok = parse_query(r, line, len, &id, &text, msg);
		if (ok < 0) {
			fprintf(stderr, "search: %s\n", msg);
			return -1;
		}
		if (ok) {
			free(id);
			free(text);
		}
	}
	if (got < 0)
		return -1;
	if (lseek(r->fd, 0, SEEK_SET) != 0) {
		fprintf(stderr, "search: %s: %s\n", r->name, strerror(errno));
		return -1;
	}
	r->start = r->end = 0;
	r->eof = 0;
	r->lineno = 0;
	return 0;
}

/* Queries encoded in one forward pass (--queries). */
enum { QUERY_BATCH = 32 };

/* Encodes a batch of n <= QUERY_BATCH queries in one forward pass and answers each; frees
 * them. The store is reopened first if a rebuild swapped it (maybe with another model). */
static int answer_batch(ctx *x, const linereader *r, char **ids, char **texts, int n,
			float **vecs, int *dim)
{
	emb_err e = {0};
	int rc = reopen_if_stale(x);
	if (!rc && *dim != x->sm.dim) {
		free(*vecs);
		*dim = x->sm.dim;
		*vecs = malloc((size_t)QUERY_BATCH * *dim * sizeof **vecs);
		if (!*vecs) {
			fprintf(stderr, "search: out of memory\n");
			rc = -1;
		}
	}
	if (!rc && embed_encode(x->m, (const char *const *)texts, NULL, n, x->prefix, *vecs, &e)) {
		fprintf(stderr, "search: %s: batch ending at line %ld: %s\n", r->name, r->lineno, e.msg);
		rc = -1;
	}
	/* The batch in one scan of the store (store_search_batch), in one snapshot. */
	store_snapshot *snap = NULL;
	store_hit *hits = NULL;
	int *nh = NULL;
	if (!rc && n > 1) {
		hits = malloc((size_t)n * x->o->k * sizeof *hits);
		nh = malloc((size_t)n * sizeof *nh);
		if (!hits || !nh) {
			fprintf(stderr, "search: out of memory\n");
			rc = -1;
		} else if (store_snapshot_begin(x->st, &snap, &e) ||
			   store_search_batch(snap, *vecs, n, x->o->k, x->o->rescore, x->pool, hits, nh, &e)) {
			fprintf(stderr, "search: %s\n", e.msg);
			rc = -1;
		}
	}
	for (int i = 0; i < n; i++) {
		if (!rc && run_query_in(x, ids[i], texts[i], *vecs + (size_t)i * *dim, NULL, snap,
					snap ? hits + (size_t)i * x->o->k : NULL, snap ? nh[i] : 0))
			rc = -1;
		free(ids[i]);
		free(texts[i]);
	}
	store_snapshot_end(snap);
	free(hits);
	free(nh);
	return rc;
}

/* --queries: encode queries in batches (one forward pass for many), then scan each.
 * A regular file (named, or redirected to stdin) is checked whole first, so a malformed line
 * is an error before any output: an evaluation never gets a silently partial run. A stream
 * (a pipe, a terminal) is answered as it comes, a batch as soon as no further line is
 * waiting; a malformed line there ends the run after every query before it was answered. */
static int run_file(ctx *x)
{
	const char *name = x->o->queries;
	int stream = !strcmp(name, "-");
	linereader r = {.fd = stream ? 0 : open(name, O_RDONLY | O_CLOEXEC),
			.name = stream ? "stdin" : name};
	struct stat sb;
	int rc = 0;
	if (r.fd < 0 || fstat(r.fd, &sb)) {
		fprintf(stderr, "search: %s: %s\n", r.name, strerror(errno));
		rc = -1;
	} else if (S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "search: %s: is a directory, not a queries file\n", r.name);
		rc = -1;
	} else if (!(r.buf = malloc(MAX_QUERY_LINE + 1))) {
		fprintf(stderr, "search: out of memory\n");
		rc = -1;
	} else if (S_ISREG(sb.st_mode)) {
		rc = check_queries(&r);
	}
	char *ids[QUERY_BATCH], *texts[QUERY_BATCH], msg[512] = "";
	float *vecs = NULL;
	int nb = 0, dim = 0;
	while (!rc) {
		char *line;
		size_t len;
		int got = lr_next(&r, &line, &len);
		int ok = got > 0 ? parse_query(&r, line, len, &ids[nb], &texts[nb], msg) : 0;
		nb += ok > 0;
		int end = got <= 0 || ok < 0;
		if (nb && (end || nb == QUERY_BATCH || !lr_ready(&r))) {
			rc = answer_batch(x, &r, ids, texts, nb, &vecs, &dim);
			nb = 0;
		}
		if (end) {
			if (got < 0 || ok < 0)
				rc = -1;
			break;
		}
	}
	if (msg[0])
		fprintf(stderr, "search: %s\n", msg);
	for (int i = 0; i < nb; i++) {
		free(ids[i]);
		free(texts[i]);
	}
	free(r.buf);
	free(vecs);
	if (!stream && r.fd >= 0)
		close(r.fd);
	return rc;
}

/* Queries one a line on stdin (not a terminal): each answered as it comes. */
static int run_lines(ctx *x)
{
	linereader r = {.fd = 0, .name = "stdin", .buf = malloc(MAX_QUERY_LINE + 1)};
	if (!r.buf) {
		fprintf(stderr, "search: out of memory\n");
		return -1;
	}
	int rc = 0, got;
	char *line;
	size_t n;
	while ((got = lr_next(&r, &line, &n)) > 0) {
		while (n && line[n - 1] == '\r')
			line[--n] = 0;
		if (!n)
			continue;
		if (reopen_if_stale(x)) {
			rc = -1;
			break;
		}
		if (run_query(x, NULL, line, NULL, NULL))
			rc = -1;
	}
	free(r.buf);
	return got < 0 ? -1 : rc;
}

static void interactive(ctx *x)
{
	char hist[PATH_MAX];
	const char *home = getenv("HOME");
	snprintf(hist, sizeof hist, "%s/.embed_search_history", home ? home : ".");
	using_history();
	read_history(hist);
	store_stats st;
	if (store_stats_get(x->st, &st, NULL) == 0)
		printf("store %s: %llu documents, %llu vectors, model %s. Type a query; :help for commands.\n",
		       x->o->store, (unsigned long long)st.docs, (unsigned long long)st.rows, x->sm.name);
	for (;;) {
		char *line = readline("search> ");
		if (!line)
			break;
		char *q = line;
		while (*q == ' ' || *q == '\t')
			q++;
		size_t l = strlen(q);
		while (l && (q[l - 1] == ' ' || q[l - 1] == '\t'))
			q[--l] = 0;
		if (!*q) {
			free(line);
			continue;
		}
		add_history(q);
		if (q[0] == ':') {
			if (!strcmp(q, ":q") || !strcmp(q, ":quit")) {
				free(line);
				break;
			} else if (!strncmp(q, ":k", 2) && atoi(q + 2) > 0) {
				x->o->k = atoi(q + 2);
				printf("k = %d\n", x->o->k);
			} else if (!strcmp(q, ":json")) {
				x->o->fmt = FMT_JSON;
			} else if (!strcmp(q, ":text")) {
				x->o->fmt = FMT_TEXT;
			} else {
				printf(":k N     results a query (now %d)\n:json    JSON output\n:text    text output\n:q       quit\n", x->o->k);
			}
			free(line);
			continue;
		}
		if (store_stale(x->st, x->o->store)) {
			if (open_store(x)) {
				free(line);
				break;
			}
			printf("(store was rebuilt: reopened)\n");
		}
		run_query(x, NULL, q, NULL, NULL);
		free(line);
	}
	write_history(hist);
}

int main(int argc, char **argv)
{
	opts o;
	parse_args(argc, argv, &o);
	ctx x = {.o = &o};
	if (open_store(&x))
		return 1;
	x.pool = threadpool_create(o.threads);
	int rc = 0;
	if (o.queries) {
		rc = run_file(&x);
	} else if (o.query) {
		rc = run_query(&x, NULL, o.query, NULL, NULL);
	} else if (isatty(0)) {
		interactive(&x);
	} else {
		rc = run_lines(&x);
	}
	threadpool_destroy(x.pool);
	embed_close(x.m);
	store_close(x.st);
	free(o.query);
	return rc ? 1 : 0;
}
