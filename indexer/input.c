/* input.c — document sources for the indexer (see input.h). A small state machine over a
 * queue of paths: directories expand into their sorted entries in place, JSONL files are
 * read a line at a time through a fixed buffer (a line longer than the record cap is skipped
 * without being held), text files are read whole (one file = one document). */
#include "input.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "utf8.h"

#define RBUF_BYTES (64u << 10) /* one read(2) of a JSONL file */

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
	*done = in->done;
	*total = in->total;
}

uint64_t input_ignored(const input *in) { return in->ignored; }

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
	if ((rc = check_id(d->where, "document id", d->id, d->id_len, err)))
		goto out;
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
	/* The id is known before the file is read, so that a caller can keep what is stored
	 * under it whatever goes wrong below. */
	d->id = strdup(p->rel);
	if (!d->id)
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	d->id_len = strlen(p->rel);
	id_printable(p->path, strlen(p->path), d->where, sizeof d->where);
	struct stat st;
	if (stat(p->path, &st) == 0)
		in->done += (uint64_t)st.st_size;
	if (check_id(d->where, "file name", p->rel, d->id_len, err))
		return EMB_EFORMAT;
	FILE *f = fopen(p->path, "rb");
	if (!f)
		return emb_errf(err, EMB_EIO, "%s: %s", d->where, strerror(errno));
	fstat(fileno(f), &st);
	if ((uint64_t)st.st_size > in->opt.max_record) {
		fclose(f);
		return emb_errf(err, EMB_EFORMAT, "%s: %lld bytes is over the record limit of %zu bytes (--max-record-bytes)",
				d->where, (long long)st.st_size, in->opt.max_record);
	}
	char *buf = malloc((size_t)st.st_size + 1);
	size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
	int ioerr = ferror(f);
	fclose(f);
	if (!buf)
		return emb_errf(err, EMB_ENOMEM, "%s: out of memory", d->where);
	if (ioerr) {
		free(buf);
		return emb_errf(err, EMB_EIO, "%s: read error", d->where);
	}
	buf[n] = 0;
	if (memchr(buf, 0, n)) {
		free(buf);
		in->ignored++;
		if (in->opt.warn) {
			char msg[PATH_MAX + 64];
			snprintf(msg, sizeof msg, "%s: binary file (NUL bytes), skipped", d->where);
			in->opt.warn(in->opt.warn_arg, msg);
		}
		*skip = 1;
		return EMB_OK;
	}
	long bad = utf8_invalid_at(buf, n);
	if (bad >= 0) {
		free(buf);
		return emb_errf(err, EMB_EFORMAT, "%s: invalid UTF-8 at byte %ld", d->where, bad);
	}
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
	return EMB_OK;
}

static int over_cap(input *in, long line, emb_err *err)
{
	emb_errf(err, EMB_EFORMAT, "%s:%ld: record over the limit of %zu bytes (--max-record-bytes)",
		 in->fname, line, in->opt.max_record);
	return -1;
}

/* Assembles the next line of the JSONL file in in->line[0..linelen) (without its newline).
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
				return 1;
			}
			in->rpos = 0;
			in->rend = (size_t)n;
		}
		char *start = in->rbuf + in->rpos;
		char *nl = memchr(start, '\n', in->rend - in->rpos);
		size_t take = nl ? (size_t)(nl - start) : in->rend - in->rpos;
		in->rpos += take + (nl != NULL);
		in->done += take + (nl != NULL);
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
			return 1;
		}
	}
}

int input_next(input *in, input_doc *d, emb_err *err)
{
	memset(d, 0, sizeof *d);
	for (;;) {
		if (in->fd >= 0) {
			int r = read_line(in, err);
			if (r < 0 && err->code == EMB_EIO)
				close_file(in); /* the next call goes on with the next input */
			if (r < 0)
				return -1;
			if (r == 0) {
				close_file(in);
				continue;
			}
			size_t n = in->linelen;
			while (n > 0 && in->line[n - 1] == '\r')
				n--;
			size_t i = 0;
			while (i < n && (in->line[i] == ' ' || in->line[i] == '\t'))
				i++;
			if (i == n)
				continue; /* blank line */
			snprintf(d->where, sizeof d->where, "%s:%ld", in->fname, in->lineno);
			if (parse_jsonl(in, in->line, n, d, err)) {
				free(d->text);
				free(d->title);
				free(d->meta);
				d->text = d->title = d->meta = NULL;
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
			in->fd = STDIN_FILENO;
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
			in->fd = open(p.path, O_RDONLY | O_CLOEXEC);
			if (in->fd < 0)
				rc = emb_errf(err, EMB_EIO, "%s: %s", p.path, strerror(errno));
			else
				in->fname = strdup(p.path);
			in->lineno = 0;
		} else {
			int skip;
			rc = read_text_file(in, &p, d, err, &skip);
			if (skip)
				input_doc_free(d);
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
