/* linereader.c — lines with a cap, read through one buffer (see linereader.h for why). */
#include "linereader.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* First buffer: most lines (queries, short documents) fit without a regrowth. */
enum { FIRST_BUF = 64 << 10 };

int line_reader_init(line_reader *r, int fd, const char *tool, const char *name, size_t cap)
{
	*r = (line_reader){.fd = fd, .tool = tool, .name = name, .cap = cap};
	if (cap < 1 || cap > LINE_READER_MAX_CAP) {
		fprintf(stderr, "%s: %s: line cap %zu outside 1..%zu\n", tool, name, cap,
			LINE_READER_MAX_CAP);
		return -1;
	}
	r->buf_size = cap + 1 < FIRST_BUF ? cap + 1 : FIRST_BUF;
	if (!(r->buf = malloc(r->buf_size))) {
		fprintf(stderr, "%s: %s: out of memory\n", tool, name);
		return -1;
	}
	return 0;
}

static int fail(line_reader *r, const char *what)
{
	fprintf(stderr, "%s: %s:%ld: %s\n", r->tool, r->name, r->lineno + 1, what);
	r->eof = -1;
	return -1;
}

int line_reader_next(line_reader *r, char **line, size_t *len)
{
	if (r->eof < 0)
		return -1;
	for (;;) {
		char *nl = memchr(r->buf + r->start, '\n', r->end - r->start);
		if (nl || (r->eof && r->start < r->end)) {
			size_t e = nl ? (size_t)(nl - r->buf) : r->end;
			if (e - r->start > r->cap) /* the last line, unterminated, past the cap */
				break;
			size_t next = nl ? e + 1 : e;
			if (e > r->start && r->buf[e - 1] == '\r')
				e--;
			r->buf[e] = 0; /* buf_size > end when unterminated: the loop below keeps a byte */
			*line = r->buf + r->start;
			*len = e - r->start;
			r->start = next;
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
		if (r->end > r->cap)
			break;
		if (r->end + 1 >= r->buf_size) { /* keep one byte for an unterminated line's NUL */
			size_t ns = r->buf_size * 2 > r->cap + 2 ? r->cap + 2 : r->buf_size * 2;
			char *nb = realloc(r->buf, ns);
			if (!nb)
				return fail(r, "out of memory for a line");
			r->buf = nb;
			r->buf_size = ns;
		}
		ssize_t got = read(r->fd, r->buf + r->end, r->buf_size - 1 - r->end);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return fail(r, strerror(errno));
		if (got == 0)
			r->eof = 1;
		r->end += (size_t)got;
	}
	char msg[96];
	snprintf(msg, sizeof msg, "line longer than %zu bytes", r->cap);
	return fail(r, msg);
}

int line_reader_ready(const line_reader *r)
{
	if (r->eof || memchr(r->buf + r->start, '\n', r->end - r->start))
		return 1;
	struct pollfd p = {.fd = r->fd, .events = POLLIN};
	return poll(&p, 1, 0) > 0;
}

int line_reader_rewind(line_reader *r)
{
	if (lseek(r->fd, 0, SEEK_SET) != 0) {
		fprintf(stderr, "%s: %s: %s\n", r->tool, r->name, strerror(errno));
		return -1;
	}
	r->start = r->end = 0;
	r->eof = 0;
	r->lineno = 0;
	return 0;
}

void line_reader_free(line_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->buf_size = 0;
}
