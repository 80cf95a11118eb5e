/* input.c — document sources for the indexer (see input.h). A small state machine over a
 * queue of paths: directories expand into their sorted entries in place, JSONL files are
 * read a line at a time with getline, text files are read whole (one file = one document). */
#include "input.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_TEXT_FILE (256u << 20) /* one text document larger than this is refused */

typedef struct pending {
	char *path;  /* filesystem path */
	char *rel;   /* id for text files: relative to the tree, or the path given */
} pending;

struct input {
	input_opts opt;
	pending *q;          /* stack of paths still to read (reverse order) */
	size_t nq, capq;
	FILE *f;             /* the JSONL file being read */
	char *fname;
	int is_stdin;
	long lineno;
	char *line;
	size_t linecap;
	uint64_t done, total, ignored;
};

long utf8_invalid_at(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < len) {
		unsigned c = p[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t n;
		unsigned min;
		if ((c & 0xE0) == 0xC0) { n = 1; min = 0x80; c &= 0x1F; }
		else if ((c & 0xF0) == 0xE0) { n = 2; min = 0x800; c &= 0x0F; }
		else if ((c & 0xF8) == 0xF0) { n = 3; min = 0x10000; c &= 0x07; }
		else return (long)i;
		for (size_t j = 1; j <= n; j++) {
			if (i + j >= len || (p[i + j] & 0xC0) != 0x80)
				return (long)i;
			c = (c << 6) | (p[i + j] & 0x3F);
		}
		if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
			return (long)i;
		i += n + 1;
	}
	return -1;
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
	*done = in->done;
	*total = in->total;
}

uint64_t input_ignored(const input *in) { return in->ignored; }

static void close_file(input *in)
{
	if (in->f && !in->is_stdin)
		fclose(in->f);
	in->f = NULL;
	free(in->fname);
	in->fname = NULL;
	in->is_stdin = 0;
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

static int parse_jsonl(input *in, const char *line, size_t len, input_doc *d, emb_err *err)
{
	json_error_t je;
	json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
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
	snprintf(keys, sizeof keys, "%s", in->opt.id_fields);
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
			      in->opt.id_fields);
		goto out;
	}
	got = json_field(o, in->opt.text_field, &d->text, &d->text_len, 0);
	if (got <= 0) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: document '%s': %s '%s'", d->where, d->id,
			      got < 0 ? "non-string" : "no", in->opt.text_field);
		goto out;
	}
	if (json_field(o, in->opt.title_field, &d->title, &d->title_len, 0) < 0) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: document '%s': '%s' must be a string", d->where,
			      d->id, in->opt.title_field);
		goto out;
	}
	json_t *m = json_object_get(o, in->opt.meta_field);
	if (m && !json_is_null(m)) {
		d->meta = json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY);
		d->meta_len = d->meta ? strlen(d->meta) : 0;
	}
out:
	json_decref(o);
	return rc;
}

/* A text/Markdown file: the whole file is the document; Markdown's first "# " heading is
 * its title. NUL bytes mean binary: skipped with a warning, not an error. */
static int read_text_file(input *in, const pending *p, input_doc *d, emb_err *err, int *skip)
{
	*skip = 0;
	FILE *f = fopen(p->path, "rb");
	if (!f)
		return emb_errf(err, EMB_EIO, "%s: %s", p->path, strerror(errno));
	struct stat st;
	fstat(fileno(f), &st);
	if ((uint64_t)st.st_size > MAX_TEXT_FILE) {
		fclose(f);
		in->done += (uint64_t)st.st_size;
		return emb_errf(err, EMB_EFORMAT, "%s: %lld bytes is over the %u MB limit for one text file",
				p->path, (long long)st.st_size, MAX_TEXT_FILE >> 20);
	}
	char *buf = malloc((size_t)st.st_size + 1);
	size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
	int ioerr = ferror(f);
	fclose(f);
	in->done += (uint64_t)st.st_size;
	if (!buf)
		return emb_errf(err, EMB_ENOMEM, "%s: out of memory", p->path);
	if (ioerr) {
		free(buf);
		return emb_errf(err, EMB_EIO, "%s: read error", p->path);
	}
	buf[n] = 0;
	if (memchr(buf, 0, n)) {
		free(buf);
		in->ignored++;
		if (in->opt.warn) {
			char msg[PATH_MAX + 64];
			snprintf(msg, sizeof msg, "%s: binary file (NUL bytes), skipped", p->path);
			in->opt.warn(in->opt.warn_arg, msg);
		}
		*skip = 1;
		return EMB_OK;
	}
	long bad = utf8_invalid_at(buf, n);
	if (bad >= 0) {
		free(buf);
		return emb_errf(err, EMB_EFORMAT, "%s: invalid UTF-8 at byte %ld", p->path, bad);
	}
	d->id = strdup(p->rel);
	d->id_len = strlen(p->rel);
	d->text = buf;
	d->text_len = n;
	if (has_suffix(p->path, ".md") || has_suffix(p->path, ".markdown")) {
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
	snprintf(d->where, sizeof d->where, "%s", p->path);
	return EMB_OK;
}

int input_next(input *in, input_doc *d, emb_err *err)
{
	memset(d, 0, sizeof *d);
	for (;;) {
		if (in->f) {
			errno = 0;
			ssize_t n = getline(&in->line, &in->linecap, in->f);
			if (n < 0) {
				int e = errno;
				if (e == EINTR && !feof(in->f)) {
					clearerr(in->f);
					return emb_errf(err, EMB_EINTERRUPTED, "%s: interrupted", in->fname);
				}
				close_file(in);
				if (e && e != EINTR)
					return emb_errf(err, EMB_EIO, "read error: %s", strerror(e));
				continue;
			}
			in->lineno++;
			in->done += (uint64_t)n;
			while (n > 0 && (in->line[n - 1] == '\n' || in->line[n - 1] == '\r'))
				n--;
			size_t i = 0;
			while (i < (size_t)n && (in->line[i] == ' ' || in->line[i] == '\t'))
				i++;
			if (i == (size_t)n)
				continue; /* blank line */
			snprintf(d->where, sizeof d->where, "%s:%ld", in->fname, in->lineno);
			int rc = parse_jsonl(in, in->line, (size_t)n, d, err);
			if (rc) {
				input_doc_free(d);
				return -1;
			}
			return 1;
		}
		if (in->nq == 0)
			return 0;
		pending p = in->q[--in->nq];
		int rc = EMB_OK, result = 0;
		struct stat st;
		if (strcmp(p.path, "-") == 0) {
			in->f = stdin;
			in->is_stdin = 1;
			in->fname = strdup("<stdin>");
			in->lineno = 0;
		} else if (stat(p.path, &st) != 0) {
			rc = emb_errf(err, EMB_EIO, "%s: %s", p.path, strerror(errno));
		} else if (S_ISDIR(st.st_mode)) {
			rc = expand_dir(in, p.path, p.rel, strcmp(p.path, p.rel) == 0, err);
		} else if (!S_ISREG(st.st_mode)) {
			in->ignored++;
		} else if (has_suffix(p.path, ".jsonl") || has_suffix(p.path, ".ndjson")) {
			in->f = fopen(p.path, "rb");
			if (!in->f)
				rc = emb_errf(err, EMB_EIO, "%s: %s", p.path, strerror(errno));
			in->fname = strdup(p.path);
			in->lineno = 0;
		} else {
			int skip;
			rc = read_text_file(in, &p, d, err, &skip);
			if (!rc && !skip)
				result = 1;
		}
		free(p.path);
		free(p.rel);
		if (rc)
			return -1;
		if (result)
			return 1;
	}
}
