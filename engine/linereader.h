/* linereader.h — lines from a file descriptor, each at most a fixed number of bytes.
 *
 * Every tool that reads one record a line (embed, rerank, search --queries) goes through
 * this reader rather than getline, because getline grows its buffer for as long as a line
 * lasts: a stray binary file or /dev/zero on stdin would take the machine's memory before
 * any error. Here a line over the cap is a one-line error naming the input and line number,
 * and the buffer never grows past cap + 1 bytes. (The indexer has its own reader: it also
 * reads whole text files and windows, under --max-record-bytes.) */
#ifndef EMB_LINEREADER_H
#define EMB_LINEREADER_H

#include <stddef.h>

/* The largest cap line_reader_init accepts (1 GiB, the indexer's --max-record-bytes limit). */
#define LINE_READER_MAX_CAP ((size_t)1 << 30)

typedef struct line_reader {
	int fd;           /* read from, never closed by the reader */
	const char *tool; /* message prefix, e.g. "rerank" */
	const char *name; /* the input in messages: a path, or "stdin" */
	size_t cap;       /* longest line accepted, newline excluded */
	char *buf;        /* buf_size bytes, grown by doubling up to cap + 1 */
	size_t buf_size;
	size_t start, end; /* unread bytes: buf[start..end) */
	int eof;
	long lineno; /* lines returned so far: the last one's number */
} line_reader;

/* Sets r up to read fd (borrowed: the caller closes it) with lines of at most cap bytes
 * (1..LINE_READER_MAX_CAP). tool and name must outlive r; they prefix messages as
 * "TOOL: NAME:LINE: ...". Returns 0, or -1 after printing an error (out of memory). */
int line_reader_init(line_reader *r, int fd, const char *tool, const char *name, size_t cap);

/* The next line in *line (its newline removed, and one '\r' before it; NUL-terminated; valid
 * until the next call or line_reader_rewind) and its length in *len; the line may contain NUL
 * bytes. A last line without a newline is returned too. Returns 1 for a line, 0 at the end of
 * the input, -1 after printing "TOOL: NAME:LINE: ..." for a read error or a line over cap
 * (the reader is then spent: later calls return -1 again). EINTR is retried. */
int line_reader_next(line_reader *r, char **line, size_t *len);

/* 1 if line_reader_next would return without waiting on the writer (a whole line buffered,
 * the end reached, or bytes readable now), else 0: lets a tool answer a stream's lines as they
 * come and still batch a file's. */
int line_reader_ready(const line_reader *r);

/* Seeks fd back to its start and forgets what was buffered (line numbers restart at 1).
 * Returns 0, or -1 after printing an error (fd is not seekable). */
int line_reader_rewind(line_reader *r);

/* Frees the buffer (not fd). r may then be initialised again. */
void line_reader_free(line_reader *r);

#endif
