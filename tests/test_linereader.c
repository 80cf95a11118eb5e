/* test_linereader — engine/linereader against a plain split of the same bytes.
 *
 * Random inputs (newlines, '\r', NUL bytes, lines around the cap) go through a pipe in
 * random-sized writes from another thread, so that a line crosses read() boundaries and the
 * buffer's regrowth in every way; the expected lines come from splitting the whole input at
 * '\n' in this file, not from the reader. Also: the error for a line over the cap names the
 * right line and the reader stays spent after it; a last line without a newline; rewind. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "linereader.h"
#include "testutil.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)rng;
}

typedef struct feed {
	int fd;
	const char *data;
	size_t len;
	uint64_t seed;
} feed;

static void *writer(void *arg)
{
	feed *f = arg;
	uint64_t s = f->seed;
	size_t off = 0;
	while (off < f->len) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		size_t n = 1 + (s >> 33) % (s >> 62 ? 97 : 70000);
		if (n > f->len - off)
			n = f->len - off;
		ssize_t w = write(f->fd, f->data + off, n);
		if (w <= 0)
			break; /* the reader stopped (a line over the cap): EPIPE */
		off += (size_t)w;
	}
	close(f->fd);
	return NULL;
}

/* One trial: cap, and an input of nlines random lines with lengths around the cap. */
static void trial(int t)
{
	size_t cap = t % 3 == 0 ? 1 + rnd() % 8 : t % 3 == 1 ? 1 + rnd() % 300 : 60000 + rnd() % 80000;
	int nlines = 1 + rnd() % 40;
	size_t size = 0, room = (size_t)nlines * (cap + 4) + 8;
	char *data = malloc(room);
	for (int i = 0; i < nlines; i++) {
		/* mostly under the cap, some exactly at it, a few one over */
		uint32_t r = rnd() % 50;
		size_t len = r == 0 ? cap + 1 : r == 1 ? cap : rnd() % (cap + 1);
		for (size_t j = 0; j < len; j++) {
			uint32_t c = rnd() % 40;
			data[size++] = c == 0 ? '\r' : c == 1 ? 0 : (char)('a' + c % 26);
		}
		if (i < nlines - 1 || rnd() % 2)
			data[size++] = '\n';
	}
	int p[2];
	CHECK(pipe(p) == 0, "pipe");
	feed f = {.fd = p[1], .data = data, .len = size, .seed = rnd()};
	pthread_t th;
	pthread_create(&th, NULL, writer, &f);
	line_reader r;
	CHECK(line_reader_init(&r, p[0], "test", "pipe", cap) == 0, "init");

	/* the reference: split at '\n'; a last piece without '\n' is a line if not empty */
	size_t at = 0;
	long want_line = 0;
	int done = 0;
	while (!done && !test_failures) {
		char *nl = at < size ? memchr(data + at, '\n', size - at) : NULL;
		size_t end = nl ? (size_t)(nl - data) : size;
		int have = nl || at < size;
		char *line;
		size_t len;
		int got = line_reader_next(&r, &line, &len);
		if (!have) {
			CHECK(got == 0, "trial %d: end expected after line %ld, got %d", t, want_line, got);
			done = 1;
		} else if (end - at > cap) {
			CHECK(got == -1, "trial %d: line %ld of %zu bytes over cap %zu accepted", t,
			      want_line + 1, end - at, cap);
			CHECK(r.lineno == want_line, "trial %d: the error names line %ld, not %ld", t,
			      r.lineno + 1, want_line + 1);
			CHECK(line_reader_next(&r, &line, &len) == -1, "trial %d: reader not spent", t);
			done = 1;
		} else {
			want_line++;
			size_t wl = end - at;
			if (wl && data[end - 1] == '\r')
				wl--;
			CHECK(got == 1 && len == wl && r.lineno == want_line &&
				      !memcmp(line, data + at, wl) && line[len] == 0,
			      "trial %d (cap %zu): line %ld: got %d len %zu, want len %zu", t, cap,
			      want_line, got, got == 1 ? len : 0, wl);
			at = nl ? end + 1 : size;
		}
	}
	line_reader_free(&r);
	close(p[0]);
	pthread_join(th, NULL);
	free(data);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	for (int t = 0; t < 600 && !test_failures; t++)
		trial(t);

	/* a file: rewind gives the same lines again, numbered from 1 */
	char dir[256], path[300];
	test_tmpdir(dir);
	snprintf(path, sizeof path, "%s/lines", dir);
	FILE *f = fopen(path, "w");
	fputs("one\r\ntwo\n\nlast", f);
	fclose(f);
	int fd = open(path, O_RDONLY);
	line_reader r;
	CHECK(line_reader_init(&r, fd, "test", path, 10) == 0, "init");
	for (int pass = 0; pass < 2; pass++) {
		const char *want[] = {"one", "two", "", "last"};
		char *line;
		size_t len;
		for (int i = 0; i < 4; i++)
			CHECK(line_reader_next(&r, &line, &len) == 1 && !strcmp(line, want[i]) &&
				      r.lineno == i + 1,
			      "pass %d line %d", pass, i + 1);
		CHECK(line_reader_next(&r, &line, &len) == 0, "end");
		CHECK(line_reader_ready(&r) == 1, "ready at the end");
		CHECK(line_reader_rewind(&r) == 0, "rewind");
	}
	line_reader_free(&r);
	close(fd);
	CHECK(line_reader_init(&r, 0, "test", "x", 0) == -1, "cap 0 refused");
	CHECK(line_reader_init(&r, 0, "test", "x", LINE_READER_MAX_CAP + 1) == -1, "cap over max refused");
	if (test_failures)
		return 1;
	printf("line reader: 600 random pipes and a file matched the reference split\n");
	return 0;
}
