/* input.c — document sources for the indexer (see input.h). A small state machine over a
 * queue of paths: directories expand into their sorted entries in place, JSONL files are
 * framed a line at a time through a fixed buffer (a line longer than the record cap is
 * skipped without being held), text files are read whole (one file = one document).
 *
 * Records are parsed apart from framing (input_parse), on any thread. JSONL lines go through
 * a single-pass parser made for them (fast_jsonl): it takes the top-level object's fields in
 * one scan of the line and accepts only records that jansson, with the options below, also
 * accepts and reads the same way; anything else (every bad record, escaped keys, numbers it
 * is not sure of) goes to jansson, which gives the documents and the error messages. So
 * jansson stays the definition and the fast path only a shortcut, which
 * tests/test_input.c checks against it on real and mutated records. */
#include "input.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "utf8.h"

#define RBUF_BYTES (256u << 10) /* one read(2) of a JSONL file */

typedef struct pending {
	char *path;  /* filesystem path */
	char *rel;   /* id for text files: relative to the tree, or the path given */
} pending;

struct input {
	input_opts opt;
	pending *q;          /* stack of paths still to read (reverse order) */
	size_t nq, capq;
	int fd;              /* the JSONL file being read, or -1 */
	char *fname;
	int is_stdin;
	long lineno;         /* lines of fname finished so far */
	char *rbuf;          /* RBUF_BYTES read ahead; rbuf[rpos..rend) not yet consumed */
	size_t rpos, rend;
	char *line;          /* the line being assembled, at most opt.max_record bytes */
	size_t linelen, linecap;
	const char *cur;     /* the finished line: in rbuf when it was whole there, else line */
	size_t curlen;
	int overlong;        /* the current line passed the cap: discard up to its newline */
	int line_ready;      /* line holds a finished line: the next read starts a new one */
	uint64_t done, total, ignored;
};

/* Writes id[0..len) for a one-line message: at most 60 bytes, control characters and (when
 * the id is not valid UTF-8) every non-ASCII byte as \xNN. */
static void id_printable(const char *id, size_t len, char *out, size_t cap)
{
	int escape_high = utf8_invalid_at(id, len) >= 0;
	size_t o = 0;
	for (size_t i = 0; i < len && o + 8 < cap; i++) {
		unsigned char c = (unsigned char)id[i];
		if (i == 60) {
			o += (size_t)snprintf(out + o, cap - o, "...");
			break;
		}
		if (c < 0x20 || c == 0x7F || (c >= 0x80 && escape_high))
			o += (size_t)snprintf(out + o, cap - o, "\\x%02X", c);
		else
			out[o++] = (char)c;
	}
	out[o] = 0;
}

/* Ids are printed one a line in text and TREC output and as JSON strings, so an id must be
 * valid UTF-8 without control characters (C0, DEL, C1). Returns EMB_OK, or EMB_EFORMAT with
 * "WHERE: document id "ID" ..." in err. */
static int check_id(const char *where, const char *what, const char *id, size_t len, emb_err *err)
{
	char shown[300];
	long bad = utf8_invalid_at(id, len);
	if (bad >= 0) {
		id_printable(id, len, shown, sizeof shown);
		return emb_errf(err, EMB_EFORMAT, "%s: %s \"%s\" is not valid UTF-8 (byte %ld)", where, what,
				shown, bad);
	}
	const unsigned char *p = (const unsigned char *)id;
	for (size_t i = 0; i < len; i++) {
		unsigned cp = p[i];
		if (cp == 0xC2 && i + 1 < len && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F)
			cp = p[i + 1];
		else if (cp >= 0x20 && cp != 0x7F)
			continue;
		id_printable(id, len, shown, sizeof shown);
		return emb_errf(err, EMB_EFORMAT, "%s: %s \"%s\" holds a control character (U+%04X at byte %zu)",
				where, what, shown, cp, i);
	}
	return EMB_OK;
}

static int push(input *in, const char *path, const char *rel)
{
	if (in->nq == in->capq) {
		size_t nc = in->capq ? in->capq * 2 : 16;
		pending *nq = realloc(in->q, nc * sizeof *nq);
		if (!nq)
			return -1;
		in->q = nq;
		in->capq = nc;
	}
	in->q[in->nq].path = strdup(path);
	in->q[in->nq].rel = strdup(rel);
	if (!in->q[in->nq].path || !in->q[in->nq].rel)
		return -1;
	in->nq++;
	return 0;
}

static uint64_t tree_size(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return 0;
	if (S_ISREG(st.st_mode))
		return (uint64_t)st.st_size;
	if (!S_ISDIR(st.st_mode))
		return 0;
	DIR *d = opendir(path);
	if (!d)
		return 0;
	uint64_t sum = 0;
	struct dirent *e;
	char sub[PATH_MAX];
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
		struct stat ls;
		if (lstat(sub, &ls) == 0 && !S_ISLNK(ls.st_mode))
			sum += tree_size(sub);
	}
	closedir(d);
	return sum;
}

int input_open(char *const *paths, int n, const input_opts *opt, input **out, emb_err *err)
{
	*out = NULL;
	input *in = calloc(1, sizeof *in);
	if (!in)
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	in->opt = *opt;
	if (!in->opt.max_record)
		in->opt.max_record = INPUT_MAX_RECORD_DEFAULT;
	in->fd = -1;
	json_object_seed(0); /* now, before parser threads create objects */
	in->rbuf = malloc(RBUF_BYTES);
	if (!in->rbuf) {
		input_close(in);
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	}
	for (int i = n - 1; i >= 0; i--) {
		struct stat st;
		if (strcmp(paths[i], "-") != 0 && stat(paths[i], &st) != 0) {
			int rc = emb_errf(err, EMB_EIO, "%s: %s", paths[i], strerror(errno));
			input_close(in);
			return rc;
		}
		if (push(in, paths[i], paths[i])) {
			input_close(in);
			return emb_errf(err, EMB_ENOMEM, "out of memory");
		}
		if (strcmp(paths[i], "-") != 0)
			in->total += tree_size(paths[i]);
	}
	*out = in;
	return EMB_OK;
}

void input_doc_free(input_doc *d)
{
	free(d->id);
	free(d->title);
	free(d->text);
	free(d->meta);
	d->id = d->title = d->text = d->meta = NULL;
}

void input_progress(const input *in, uint64_t *done, uint64_t *total)
{
	*done = __atomic_load_n(&in->done, __ATOMIC_RELAXED);
	*total = in->total;
}

uint64_t input_ignored(const input *in) { return __atomic_load_n(&in->ignored, __ATOMIC_RELAXED); }

/* The counters have one writer (the reader thread) and may be read on any thread. */
static inline void count(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, *c + n, __ATOMIC_RELAXED);
}

static void close_file(input *in)
{
	if (in->fd >= 0 && !in->is_stdin)
		close(in->fd);
	in->fd = -1;
	free(in->fname);
	in->fname = NULL;
	in->is_stdin = 0;
	in->rpos = in->rend = in->linelen = 0;
	in->overlong = in->line_ready = 0;
}

void input_close(input *in)
{
	if (!in)
		return;
	close_file(in);
	for (size_t i = 0; i < in->nq; i++) {
		free(in->q[i].path);
		free(in->q[i].rel);
	}
	free(in->q);
	free(in->rbuf);
	free(in->line);
	free(in);
}

static int has_suffix(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcasecmp(s + a - b, suf) == 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replaces a directory on the queue by its entries, sorted, so reading order is stable. */
static int expand_dir(input *in, const char *path, const char *rel, int top, emb_err *err)
{
	DIR *d = opendir(path);
	if (!d)
		return emb_errf(err, EMB_EIO, "%s: %s", path, strerror(errno));
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			char **nn = realloc(names, cap * sizeof *nn);
			if (!nn)
				break;
			names = nn;
		}
		names[n++] = strdup(e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof *names, cmp_str);
	int rc = EMB_OK;
	for (size_t i = n; i-- > 0;) {
		char sub[PATH_MAX], subrel[PATH_MAX];
		snprintf(sub, sizeof sub, "%s/%s", path, names[i]);
		if (top)
			snprintf(subrel, sizeof subrel, "%s", names[i]);
		else
			snprintf(subrel, sizeof subrel, "%s/%s", rel, names[i]);
		struct stat ls;
		if (lstat(sub, &ls) == 0 && S_ISLNK(ls.st_mode)) {
			struct stat st;
			if (stat(sub, &st) != 0 || S_ISDIR(st.st_mode))
				continue; /* dangling links and linked directories (loops) are skipped */
		}
		if (!rc && push(in, sub, subrel))
			rc = emb_errf(err, EMB_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

/* Copies a JSON string (or, when allow_int, an integer) field. Returns 1 found, 0
 * absent/null, -1 wrong type. */
static int json_field(json_t *obj, const char *key, char **out, size_t *len, int allow_int)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	if (json_is_string(v)) {
		*len = json_string_length(v);
		*out = malloc(*len + 1);
		if (!*out)
			return -1;
		memcpy(*out, json_string_value(v), *len);
		(*out)[*len] = 0;
		return 1;
	}
	if (allow_int && json_is_integer(v)) {
		char buf[32];
		snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
		*out = strdup(buf);
		*len = strlen(buf);
		return 1;
	}
	return -1;
}

#define JSON_FLAGS JSON_REJECT_DUPLICATES

/* The definition of a JSONL record: jansson reads the line, and every bad record gets its
 * message here. */
static int parse_jsonl(const input_opts *opt, const char *line, size_t len, input_doc *d,
		       emb_err *err)
{
	json_error_t je;
	json_t *o = json_loadb(line, len, JSON_FLAGS, &je);
	if (!o)
		return emb_errf(err, EMB_EFORMAT, "%s: malformed JSON at column %d: %s", d->where,
				je.column, je.text);
	int rc = EMB_OK;
	if (!json_is_object(o)) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: expected a JSON object", d->where);
		goto out;
	}
	/* id: the first of the configured keys present */
	char keys[256];
	snprintf(keys, sizeof keys, "%s", opt->id_fields);
	int got = 0;
	for (char *save, *k = strtok_r(keys, ",", &save); k && !got; k = strtok_r(NULL, ",", &save)) {
		got = json_field(o, k, &d->id, &d->id_len, 1);
		if (got < 0) {
			rc = emb_errf(err, EMB_EFORMAT, "%s: '%s' must be a string or an integer", d->where, k);
			goto out;
		}
	}
	if (!got || d->id_len == 0) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: no document id (looked for %s)", d->where,
			      opt->id_fields);
		goto out;
	}
	if ((rc = check_id(d->where, "document id", d->id, d->id_len, err)))
		goto out;
	got = json_field(o, opt->text_field, &d->text, &d->text_len, 0);
	if (got <= 0) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: document '%s': %s '%s'", d->where, d->id,
			      got < 0 ? "non-string" : "no", opt->text_field);
		goto out;
	}
	if (json_field(o, opt->title_field, &d->title, &d->title_len, 0) < 0) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: document '%s': '%s' must be a string", d->where,
			      d->id, opt->title_field);
		goto out;
	}
	json_t *m = json_object_get(o, opt->meta_field);
	if (m && !json_is_null(m)) {
		d->meta = json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY);
		d->meta_len = d->meta ? strlen(d->meta) : 0;
	}
out:
	json_decref(o);
	return rc;
}

/* ---- JSONL records: the fast path. Its scanners return BAIL, and fast_jsonl 0, where
 * jansson might disagree or the record is bad; the record then goes to parse_jsonl. ---- */

#define BAIL ((size_t)-1)
#define FAST_MAX_KEYS 32     /* more top-level keys: jansson (the duplicate check is quadratic) */
#define FAST_MAX_DEPTH 1000  /* well under jansson's 2048, so a nested value parsed alone
			      * (see fast_value_ok) meets the same depth limit as in its line */
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

enum { V_STR, V_INT, V_REAL, V_TRUE, V_FALSE, V_NULL, V_COMP };

typedef struct fkey {
	const char *k;   /* the key's bytes (it has no escapes) */
	size_t klen;
	const char *v;   /* the value's bytes: a string's without its quotes */
	size_t vlen;
	const char *raw; /* the value as written, quotes included */
	size_t rawlen;
	int type, esc;   /* V_*; esc: the string holds escapes */
} fkey;

/* Non-zero when one of the 8 bytes in x is a control character, non-ASCII, '"' or '\\':
 * where a string scan must look closer (the "has a byte less than n" word trick, exact as
 * a yes/no answer). */
static inline uint64_t special8(uint64_t x)
{
	uint64_t q = x ^ (ONES * '"'), b = x ^ (ONES * '\\');
	return (((x - ONES * 0x20) & ~x) | x | ((q - ONES) & ~q) | ((b - ONES) & ~b)) & HIGHS;
}

static inline int hexval(unsigned c)
{
	if (c >= '0' && c <= '9')
		return (int)(c - '0');
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10) : -1;
}

static inline uint32_t hex4(const unsigned char *p)
{
	return (uint32_t)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
}

/* Whether s[i..i+4) (within n) are hex digits; their value in *c. */
static inline int hex4_ok(const unsigned char *s, size_t i, size_t n, uint32_t *c)
{
	if (i + 4 > n)
		return 0;
	for (int k = 0; k < 4; k++)
		if (hexval(s[i + k]) < 0)
			return 0;
	*c = hex4(s + i);
	return 1;
}

/* Scans a string whose opening quote is s[i-1]: the index of its closing quote, or BAIL
 * (a control character, invalid UTF-8, a malformed escape, no end). *esc tells whether
 * it holds escapes. Validates everything jansson's lexer does, so that a string the
 * record does not use is checked as well. */
static size_t scan_string(const unsigned char *s, size_t i, size_t n, int *esc)
{
	*esc = 0;
	for (;;) {
		while (i + 8 <= n) {
			uint64_t x;
			memcpy(&x, s + i, 8);
			if (special8(x))
				break;
			i += 8;
		}
		if (i >= n)
			return BAIL;
		unsigned c = s[i];
		if (c == '"')
			return i;
		if (c == '\\') {
			if (i + 1 >= n)
				return BAIL;
			unsigned e = s[i + 1];
			if (e == 'u') {
				/* jansson refuses \u0000 and unpaired surrogates, in any string */
				uint32_t c;
				if (!hex4_ok(s, i + 2, n, &c) || c == 0 || (c >= 0xDC00 && c <= 0xDFFF))
					return BAIL;
				i += 6;
				if (c >= 0xD800 && c <= 0xDBFF) {
					if (i + 1 >= n || s[i] != '\\' || s[i + 1] != 'u' || !hex4_ok(s, i + 2, n, &c) ||
					    c < 0xDC00 || c > 0xDFFF)
						return BAIL;
					i += 6;
				}
			} else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
				   e == 'r' || e == 't') {
				i += 2;
			} else {
				return BAIL;
			}
			*esc = 1;
		} else if (c < 0x20) {
			return BAIL;
		} else if (c >= 0x80) {
			uint32_t cp;
			size_t l = utf8_decode(s + i, n - i, &cp);
			if (!l)
				return BAIL;
			i += l;
		} else {
			i++;
		}
	}
}

/* Decodes the escapes of a string that scan_string accepted, v[0..n), into out (n + 1
 * bytes are enough); returns the length. */
static size_t unescape(const unsigned char *v, size_t n, char *out)
{
	size_t o = 0, i = 0;
	while (i < n) {
		const unsigned char *bs = memchr(v + i, '\\', n - i);
		size_t run = bs ? (size_t)(bs - (v + i)) : n - i;
		memcpy(out + o, v + i, run);
		o += run;
		i += run;
		if (!bs)
			break;
		unsigned e = v[i + 1];
		i += 2;
		switch (e) {
		case 'b': out[o++] = '\b'; break;
		case 'f': out[o++] = '\f'; break;
		case 'n': out[o++] = '\n'; break;
		case 'r': out[o++] = '\r'; break;
		case 't': out[o++] = '\t'; break;
		case 'u': {
			uint32_t c = hex4(v + i);
			i += 4;
			if (c >= 0xD800 && c <= 0xDBFF) { /* a pair, as scan_string checked */
				c = 0x10000 + ((c - 0xD800) << 10) + (hex4(v + i + 2) - 0xDC00);
				i += 6;
			}
			o += utf8_encode(out + o, c);
			break;
		}
		default: out[o++] = (char)e; break; /* '"', '\\', '/' */
		}
	}
	out[o] = 0;
	return o;
}

/* A number by JSON's grammar from s[i]: the index after it, or BAIL. *type: V_INT (no
 * fraction or exponent, as jansson tells integers from reals) or V_REAL. */
static size_t scan_number(const unsigned char *s, size_t i, size_t n, int *type)
{
	*type = V_INT;
	if (i < n && s[i] == '-')
		i++;
	if (i < n && s[i] == '0')
		i++;
	else if (i < n && s[i] >= '1' && s[i] <= '9')
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
	else
		return BAIL;
	if (i < n && s[i] == '.') {
		*type = V_REAL;
		if (++i >= n || s[i] < '0' || s[i] > '9')
			return BAIL;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		*type = V_REAL;
		if (++i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		if (i >= n || s[i] < '0' || s[i] > '9')
			return BAIL;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
	}
	return i;
}

/* An object or array from s[i]: the index after its closing bracket, or BAIL. Only finds
 * the end (strings are scanned, brackets counted); fast_value_ok validates. */
static size_t scan_composite(const unsigned char *s, size_t i, size_t n)
{
	int depth = 0;
	while (i < n) {
		unsigned c = s[i];
		if (c == '"') {
			int esc;
			size_t e = scan_string(s, i + 1, n, &esc);
			if (e == BAIL)
				return BAIL;
			i = e + 1;
			continue;
		}
		if (c == '{' || c == '[') {
			if (++depth > FAST_MAX_DEPTH)
				return BAIL;
		} else if (c == '}' || c == ']') {
			if (--depth == 0)
				return i + 1;
		}
		i++;
	}
	return BAIL;
}

static inline size_t skip_ws(const unsigned char *s, size_t i, size_t n)
{
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	return i;
}

/* Whether jansson reads this value without error, as it would inside the line: integers
 * within 18 digits (no "too big integer"), reals that do not overflow, nested values that
 * jansson itself accepts alone (the same duplicate and depth checks). With out, also
 * returns the parsed value (nested and non-string scalars only). */
static int fast_value_ok(const fkey *f, json_t **out)
{
	if (out)
		*out = NULL;
	if (f->type == V_INT) {
		size_t digits = f->vlen - (f->v[0] == '-');
		if (digits > 18)
			return 0;
	} else if (f->type == V_REAL) {
		char buf[64];
		if (f->vlen >= sizeof buf)
			return 0;
		memcpy(buf, f->v, f->vlen);
		buf[f->vlen] = 0;
		errno = 0;
		double x = strtod(buf, NULL);
		if (errno || x > 1.7e308 || x < -1.7e308)
			return 0;
	} else if (f->type != V_COMP) {
		return 1;
	}
	if (f->type == V_COMP || out) {
		json_t *j = json_loadb(f->raw, f->rawlen, JSON_FLAGS | JSON_DECODE_ANY, NULL);
		if (!j)
			return 0;
		if (out)
			*out = j;
		else
			json_decref(j);
	}
	return 1;
}

static const fkey *fast_find(const fkey *f, size_t nf, const char *key)
{
	if (!key)
		return NULL; /* as json_object_get */
	size_t kl = strlen(key);
	for (size_t i = 0; i < nf; i++)
		if (f[i].klen == kl && memcmp(f[i].k, key, kl) == 0)
			return &f[i];
	return NULL;
}

/* A string field's value, unescaped, NUL-terminated, in a new buffer (NULL: no memory). */
static char *fast_string(const fkey *f, size_t *len)
{
	char *s = malloc(f->vlen + 1);
	if (!s)
		return NULL;
	if (!f->esc) {
		memcpy(s, f->v, f->vlen);
		s[f->vlen] = 0;
		*len = f->vlen;
		return s;
	}
	*len = unescape((const unsigned char *)f->v, f->vlen, s);
	return s;
}

/* Reads a good record in one pass: 1 with d's strings set as parse_jsonl would set them,
 * or 0 with d untouched when the record is bad or anything is unusual (then parse_jsonl
 * decides). */
static int fast_jsonl(const input_opts *opt, const char *line, size_t len, input_doc *d)
{
	const unsigned char *s = (const unsigned char *)line;
	fkey f[FAST_MAX_KEYS];
	size_t nf = 0, i = skip_ws(s, 0, len), e;
	if (i >= len || s[i] != '{')
		return 0;
	i = skip_ws(s, i + 1, len);
	if (i < len && s[i] == '}') {
		i++;
	} else {
		for (;;) {
			int esc;
			if (i >= len || s[i] != '"' || nf == FAST_MAX_KEYS)
				return 0;
			if ((e = scan_string(s, i + 1, len, &esc)) == BAIL || esc)
				return 0;
			fkey *k = &f[nf++];
			k->k = line + i + 1;
			k->klen = e - i - 1;
			k->esc = 0;
			i = skip_ws(s, e + 1, len);
			if (i >= len || s[i] != ':')
				return 0;
			i = skip_ws(s, i + 1, len);
			if (i >= len)
				return 0;
			k->raw = line + i;
			switch (s[i]) {
			case '"':
				if ((e = scan_string(s, i + 1, len, &k->esc)) == BAIL)
					return 0;
				k->type = V_STR;
				k->v = line + i + 1;
				k->vlen = e - i - 1;
				e++;
				break;
			case '{':
			case '[':
				if ((e = scan_composite(s, i, len)) == BAIL)
					return 0;
				k->type = V_COMP;
				break;
			case 't':
			case 'f':
			case 'n': {
				static const char *const lit[] = {"true", "false", "null"};
				int w = s[i] == 't' ? 0 : s[i] == 'f' ? 1 : 2;
				size_t l = strlen(lit[w]);
				if (len - i < l || memcmp(s + i, lit[w], l) != 0)
					return 0;
				k->type = w == 0 ? V_TRUE : w == 1 ? V_FALSE : V_NULL;
				e = i + l;
				break;
			}
			default:
				if ((e = scan_number(s, i, len, &k->type)) == BAIL)
					return 0;
				break;
			}
			if (k->type != V_STR) {
				k->v = line + i;
				k->vlen = e - i;
			}
			k->rawlen = e - i;
			i = skip_ws(s, e, len);
			if (i < len && s[i] == ',') {
				i = skip_ws(s, i + 1, len);
				continue;
			}
			if (i < len && s[i] == '}') {
				i++;
				break;
			}
			return 0;
		}
	}
	if (skip_ws(s, i, len) != len)
		return 0;
	for (size_t a = 0; a < nf; a++)
		for (size_t b = a + 1; b < nf; b++)
			if (f[a].klen == f[b].klen && memcmp(f[a].k, f[b].k, f[a].klen) == 0)
				return 0;
	const fkey *meta = fast_find(f, nf, opt->meta_field);
	for (size_t a = 0; a < nf; a++)
		if (&f[a] != meta && !fast_value_ok(&f[a], NULL))
			return 0;
	/* the fields, as parse_jsonl takes them */
	char keys[256];
	snprintf(keys, sizeof keys, "%s", opt->id_fields);
	const fkey *idf = NULL;
	for (char *save, *k = strtok_r(keys, ",", &save); k && !idf; k = strtok_r(NULL, ",", &save)) {
		idf = fast_find(f, nf, k);
		if (idf && idf->type == V_NULL)
			idf = NULL;
	}
	const fkey *text = fast_find(f, nf, opt->text_field);
	const fkey *title = fast_find(f, nf, opt->title_field);
	if (!idf || (idf->type != V_STR && idf->type != V_INT) || !text || text->type != V_STR ||
	    (title && title->type != V_STR && title->type != V_NULL))
		return 0;
	if (idf->type == V_STR) {
		d->id = fast_string(idf, &d->id_len);
	} else {
		char buf[32];
		snprintf(buf, sizeof buf, "%lld", strtoll(idf->v, NULL, 10));
		d->id_len = strlen(buf);
		d->id = strdup(buf);
	}
	if (!d->id || d->id_len == 0 || check_id(d->where, "document id", d->id, d->id_len, NULL))
		goto bail;
	if (!(d->text = fast_string(text, &d->text_len)))
		goto bail;
	if (title && title->type == V_STR && !(d->title = fast_string(title, &d->title_len)))
		goto bail;
	if (meta && meta->type != V_NULL) {
		if (meta->rawlen == 2 && memcmp(meta->raw, "{}", 2) == 0) {
			d->meta = strdup("{}"); /* most BEIR corpora: jansson writes the same */
		} else {
			json_t *m;
			if (!fast_value_ok(meta, &m) || !m)
				goto bail;
			d->meta = json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY);
			json_decref(m);
		}
		if (!d->meta)
			goto bail;
		d->meta_len = strlen(d->meta);
	}
	return 1;
bail:
	free(d->id);
	free(d->text);
	free(d->title);
	free(d->meta);
	d->id = d->text = d->title = d->meta = NULL;
	d->id_len = d->text_len = d->title_len = d->meta_len = 0;
	return 0;
}

/* A text/Markdown file, framed: the whole file is the record. Checks what needs no parsing
 * (the id, the cap) and skips binary files (NUL bytes) with a warning, not an error. */
static int read_text_file(input *in, const pending *p, input_rec *r, emb_err *err, int *skip)
{
	*skip = 0;
	/* The id is known before the file is read, so that a caller can keep what is stored
	 * under it whatever goes wrong below. */
	r->id = strdup(p->rel);
	if (!r->id)
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	r->id_len = strlen(p->rel);
	id_printable(p->path, strlen(p->path), r->where, sizeof r->where);
	struct stat st;
	if (stat(p->path, &st) == 0)
		count(&in->done, (uint64_t)st.st_size);
	if (check_id(r->where, "file name", p->rel, r->id_len, err))
		return EMB_EFORMAT;
	FILE *f = fopen(p->path, "rb");
	if (!f)
		return emb_errf(err, EMB_EIO, "%s: %s", r->where, strerror(errno));
	fstat(fileno(f), &st);
	if ((uint64_t)st.st_size > in->opt.max_record) {
		fclose(f);
		return emb_errf(err, EMB_EFORMAT, "%s: %lld bytes is over the record limit of %zu bytes (--max-record-bytes)",
				r->where, (long long)st.st_size, in->opt.max_record);
	}
	char *buf = malloc((size_t)st.st_size + 1);
	size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
	int ioerr = ferror(f);
	fclose(f);
	if (!buf)
		return emb_errf(err, EMB_ENOMEM, "%s: out of memory", r->where);
	if (ioerr) {
		free(buf);
		return emb_errf(err, EMB_EIO, "%s: read error", r->where);
	}
	buf[n] = 0;
	if (memchr(buf, 0, n)) {
		free(buf);
		count(&in->ignored, 1);
		if (in->opt.warn) {
			char msg[PATH_MAX + 64];
			snprintf(msg, sizeof msg, "%s: binary file (NUL bytes), skipped", r->where);
			in->opt.warn(in->opt.warn_arg, msg);
		}
		*skip = 1;
		return EMB_OK;
	}
	r->data = buf;
	r->len = n;
	r->kind = has_suffix(p->path, ".md") || has_suffix(p->path, ".markdown") ? INPUT_REC_MARKDOWN
										   : INPUT_REC_TEXT;
	return EMB_OK;
}

/* A text file's document: valid UTF-8; Markdown's first "# " heading is its title. */
static int parse_text(input_rec *r, input_doc *d, emb_err *err)
{
	d->id = r->id;
	d->id_len = r->id_len;
	r->id = NULL;
	long bad = utf8_invalid_at(r->data, r->len);
	if (bad >= 0)
		return emb_errf(err, EMB_EFORMAT, "%s: invalid UTF-8 at byte %ld", d->where, bad);
	char *buf = d->text = r->data;
	d->text_len = r->len;
	r->data = NULL;
	if (r->kind == INPUT_REC_MARKDOWN) {
		for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
			if (l[0] == '#' && l[1] == ' ') {
				char *e = strchr(l, '\n');
				size_t tl = e ? (size_t)(e - l - 2) : strlen(l + 2);
				while (tl && (l[2 + tl - 1] == '\r' || l[2 + tl - 1] == ' '))
					tl--;
				d->title = strndup(l + 2, tl);
				d->title_len = tl;
				d->title_in_text = 1;
				break;
			}
		}
	}
	return EMB_OK;
}

static int over_cap(input *in, long line, emb_err *err)
{
	emb_errf(err, EMB_EFORMAT, "%s:%ld: record over the limit of %zu bytes (--max-record-bytes)",
		 in->fname, line, in->opt.max_record);
	return -1;
}

/* Finds the next line of the JSONL file: in->cur[0..curlen) (without its newline), which
 * points into rbuf when the line lies whole there (no copy) and into in->line otherwise.
 * Returns 1 with a line, 0 at the end of the file, or -1 with err set: EMB_EINTERRUPTED (a
 * signal; the partial line is kept and the next call resumes it), EMB_EFORMAT (the line is
 * longer than the record cap: it is reported as soon as it passes the cap, and the next call
 * discards the rest of it unread into memory), EMB_EIO, EMB_ENOMEM. */
static int read_line(input *in, emb_err *err)
{
	if (in->line_ready) {
		in->line_ready = 0;
		in->linelen = 0;
	}
	for (;;) {
		if (in->rpos == in->rend) {
			/* a line being skipped may be endless (/dev/zero): look at the stop flag too */
			ssize_t n = in->opt.stop && *in->opt.stop ? -1 : read(in->fd, in->rbuf, RBUF_BYTES);
			if (n < 0) {
				int e = in->opt.stop && *in->opt.stop ? EINTR : errno;
				emb_errf(err, e == EINTR ? EMB_EINTERRUPTED : EMB_EIO, "%s: %s%s", in->fname,
					 e == EINTR ? "interrupted" : "read error: ", e == EINTR ? "" : strerror(e));
				return -1;
			}
			if (n == 0) {
				if (in->linelen == 0 && !in->overlong)
					return 0;
				in->lineno++; /* a last line without a newline */
				if (in->overlong) {
					in->overlong = 0;
					return 0;
				}
				in->line_ready = 1;
				in->cur = in->line;
				in->curlen = in->linelen;
				return 1;
			}
			in->rpos = 0;
			in->rend = (size_t)n;
		}
		char *start = in->rbuf + in->rpos;
		char *nl = memchr(start, '\n', in->rend - in->rpos);
		size_t take = nl ? (size_t)(nl - start) : in->rend - in->rpos;
		in->rpos += take + (nl != NULL);
		count(&in->done, take + (nl != NULL));
		if (in->overlong) {
			if (nl) {
				in->overlong = 0;
				in->lineno++;
			}
			continue;
		}
		if (in->linelen + take > in->opt.max_record) {
			in->linelen = 0;
			if (nl)
				return over_cap(in, ++in->lineno, err);
			in->overlong = 1;
			return over_cap(in, in->lineno + 1, err);
		}
		if (nl && in->linelen == 0) {
			in->lineno++;
			in->line_ready = 1;
			in->cur = start;
			in->curlen = take;
			return 1;
		}
		if (in->linelen + take + 1 > in->linecap) {
			size_t nc = in->linecap ? in->linecap : 4096;
			while (nc < in->linelen + take + 1)
				nc *= 2;
			if (nc > in->opt.max_record + 1)
				nc = in->opt.max_record + 1;
			char *nb = realloc(in->line, nc);
			if (!nb) {
				emb_errf(err, EMB_ENOMEM, "%s:%ld: out of memory", in->fname, in->lineno + 1);
				return -1;
			}
			in->line = nb;
			in->linecap = nc;
		}
		memcpy(in->line + in->linelen, start, take);
		in->linelen += take;
		if (nl) {
			in->lineno++;
			in->line_ready = 1;
			in->cur = in->line;
			in->curlen = in->linelen;
			return 1;
		}
	}
}

void input_rec_free(input_rec *r)
{
	free(r->data);
	free(r->id);
	r->data = r->id = NULL;
	r->len = r->id_len = 0;
}

int input_next_raw(input *in, input_rec *r, emb_err *err)
{
	r->kind = 0;
	r->data = r->id = NULL;
	r->len = r->id_len = 0;
	r->where[0] = 0;
	for (;;) {
		if (in->fd >= 0) {
			int rc = read_line(in, err);
			if (rc < 0 && err->code == EMB_EIO)
				close_file(in); /* the next call goes on with the next input */
			if (rc < 0)
				return -1;
			if (rc == 0) {
				close_file(in);
				continue;
			}
			const char *line = in->cur;
			size_t n = in->curlen;
			while (n > 0 && line[n - 1] == '\r')
				n--;
			size_t i = 0;
			while (i < n && (line[i] == ' ' || line[i] == '\t'))
				i++;
			if (i == n)
				continue; /* blank line */
			if (line == in->line) {
				/* assembled from several reads (long, or across a read): hand the
				 * buffer over rather than hold the record twice */
				char *shrunk = realloc(in->line, n + 1);
				r->data = shrunk ? shrunk : in->line;
				in->line = NULL;
				in->linecap = 0;
			} else if (!(r->data = malloc(n + 1))) {
				emb_errf(err, EMB_ENOMEM, "%s:%ld: out of memory", in->fname, in->lineno);
				return -1;
			} else {
				memcpy(r->data, line, n);
			}
			r->data[n] = 0;
			r->len = n;
			r->kind = INPUT_REC_JSONL;
			snprintf(r->where, sizeof r->where, "%s:%ld", in->fname, in->lineno);
			return 1;
		}
		if (in->nq == 0)
			return 0;
		pending p = in->q[--in->nq];
		int rc = EMB_OK, result = 0;
		struct stat st;
		if (strcmp(p.path, "-") == 0) {
			in->fd = STDIN_FILENO;
			in->is_stdin = 1;
			in->fname = strdup("<stdin>");
			in->lineno = 0;
		} else if (stat(p.path, &st) != 0) {
			rc = emb_errf(err, EMB_EIO, "%s: %s", p.path, strerror(errno));
		} else if (S_ISDIR(st.st_mode)) {
			rc = expand_dir(in, p.path, p.rel, strcmp(p.path, p.rel) == 0, err);
		} else if (!S_ISREG(st.st_mode)) {
			count(&in->ignored, 1);
		} else if (has_suffix(p.path, ".jsonl") || has_suffix(p.path, ".ndjson")) {
			in->fd = open(p.path, O_RDONLY | O_CLOEXEC);
			if (in->fd < 0)
				rc = emb_errf(err, EMB_EIO, "%s: %s", p.path, strerror(errno));
			else
				in->fname = strdup(p.path);
			in->lineno = 0;
		} else {
			int skip;
			rc = read_text_file(in, &p, r, err, &skip);
			if (skip)
				input_rec_free(r);
			else if (!rc)
				result = 1;
		}
		free(p.path);
		free(p.rel);
		if (!rc && in->fd >= 0 && !in->fname) {
			close_file(in);
			rc = emb_errf(err, EMB_ENOMEM, "out of memory");
		}
		if (rc)
			return -1;
		if (result)
			return 1;
	}
}

int input_parse(const input_opts *o, input_rec *r, input_doc *d, emb_err *err)
{
	memset(d, 0, offsetof(input_doc, where));
	memcpy(d->where, r->where, strlen(r->where) + 1);
	if (r->kind != INPUT_REC_JSONL)
		return parse_text(r, d, err) ? -1 : 1;
	if (fast_jsonl(o, r->data, r->len, d))
		return 1;
	if (parse_jsonl(o, r->data, r->len, d, err)) {
		free(d->text);
		free(d->title);
		free(d->meta);
		d->text = d->title = d->meta = NULL;
		return -1;
	}
	return 1;
}

int input_next(input *in, input_doc *d, emb_err *err)
{
	input_rec r;
	int rc = input_next_raw(in, &r, err);
	if (rc > 0) {
		rc = input_parse(&in->opt, &r, d, err);
	} else {
		memset(d, 0, sizeof *d);
		if (rc < 0) {
			d->id = r.id;
			d->id_len = r.id_len;
			r.id = NULL;
			memcpy(d->where, r.where, strlen(r.where) + 1);
		}
	}
	input_rec_free(&r);
	return rc;
}
