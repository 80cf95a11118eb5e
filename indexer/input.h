/* input.h — the indexer's document sources, read one document at a time so that memory
 * stays bounded whatever the corpus: JSONL files (BEIR corpus.jsonl as is), plain-text and
 * Markdown files, directory trees of them (id = path relative to the tree), and `-` for
 * JSONL on stdin.
 *
 * Reading comes in two halves so that a pipeline can parse on several threads: one reader
 * thread frames records (input_next_raw: file order, line numbers, record caps, signals),
 * and any number of threads turn records into documents (input_parse). input_next is the
 * two in one call, for a single thread; for every input, input_next gives what
 * input_next_raw followed by input_parse gives, document for document and error for error. */
#ifndef INDEXER_INPUT_H
#define INDEXER_INPUT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* The default cap on one record (a JSONL line or a text file), in bytes. */
#define INPUT_MAX_RECORD_DEFAULT ((size_t)64 << 20)

typedef struct input_opts {
	const char *id_fields;    /* comma-separated JSON keys tried in order ("_id,id") */
	const char *text_field;   /* "text" */
	const char *title_field;  /* "title" */
	const char *meta_field;   /* "metadata" */
	size_t max_record;        /* largest JSONL line or text file in bytes; 0 = the default */
	volatile sig_atomic_t *stop; /* when set and non-zero, reading stops (EMB_EINTERRUPTED)
				      * even inside a long line that is being skipped */
	void (*warn)(void *arg, const char *msg); /* non-fatal notes (binary file skipped) */
	void *warn_arg;
} input_opts;

/* One document. Strings are NUL-terminated and owned by the doc (input_doc_free). */
typedef struct input_doc {
	char *id, *title, *text, *meta;
	size_t id_len, title_len, text_len, meta_len;
	int title_in_text;        /* the title is a line of the text (Markdown heading): embed
				   * the text alone rather than repeat the title */
	char where[640];          /* "file:line" or "file" for error messages */
} input_doc;

typedef struct input input;

/* Prepares to read the given paths in order. Directories are walked in sorted order, hidden
 * entries skipped, symlinked directories not followed. Errors: EMB_EIO (a path that does
 * not exist), EMB_ENOMEM. On success *out is freed with input_close. */
int input_open(char *const *paths, int n, const input_opts *opt, input **out, emb_err *err);

/* Reads the next document into *d. Returns 1 with a document, 0 at the end, or -1 with
 * err set (never a positive value):
 *   EMB_EFORMAT  a bad record, message "file:line: ..." or "file: ...": malformed JSON, a
 *                missing or mistyped field, invalid UTF-8, a record over opt.max_record
 *                bytes (skipped without being held in memory), or an id that is not valid
 *                UTF-8 or holds a control character. Reading may continue with the next call.
 *   EMB_EIO      an unreadable file or a read error; the next call goes on with the next input.
 *   EMB_EINTERRUPTED  a signal interrupted a read (stdin) or opt.stop was set; a partial
 *                line is kept and the next call resumes it.
 *   EMB_ENOMEM
 * After -1, d->id holds the record's id when it could be read (a bad record with a
 * readable id: its bytes as found, possibly invalid) and NULL otherwise, d->where names the
 * record when known; the caller frees d with input_doc_free either way. Ids of documents
 * returned (1) are valid UTF-8 without control characters. Whitespace-only lines are not
 * records. Binary files (NUL bytes) are skipped with a warning and counted by input_ignored. */
int input_next(input *in, input_doc *d, emb_err *err);

void input_doc_free(input_doc *d);

/* What a raw record holds. */
enum {
	INPUT_REC_JSONL = 1,      /* one line of a JSONL file */
	INPUT_REC_TEXT = 2,       /* a whole text file */
	INPUT_REC_MARKDOWN = 3,   /* a whole Markdown file (.md, .markdown): its first "# "
				   * line is the title */
};

/* One record as read, not yet parsed. Owned by whoever holds it; input_rec_free releases it. */
typedef struct input_rec {
	int kind;                 /* INPUT_REC_* */
	char *data;               /* the bytes, data[len] == 0: a JSONL line without its newline
				   * and trailing CRs (never blank), or a text file's contents
				   * (without NUL bytes: binary files are no records) */
	size_t len;
	char *id;                 /* text files: the document id (the file name as found, see
				   * input_next; checked); NULL for JSONL lines */
	size_t id_len;
	char where[640];          /* as input_doc.where */
} input_rec;

/* The reader's half of input_next: the next record in input order, framed but not parsed.
 * Call from one thread at a time per input (it keeps the position). Returns 1 with *r
 * filled, 0 at the end, or -1 with err set, exactly when and as input_next would for the
 * errors that framing finds: EMB_EIO, EMB_EINTERRUPTED and EMB_ENOMEM, and EMB_EFORMAT for
 * a record over opt.max_record bytes (skipped without being held) and for a text file whose
 * name is not a valid id; after -1, r->id and r->where name the record as input_next names
 * it in its document. Everything else about a record's contents (JSON, fields, UTF-8) is
 * input_parse's. Binary files are skipped here (opt.warn is called on this thread).
 * *r is overwritten without being freed: call input_rec_free on it after every call,
 * whatever the result. Progress (input_progress) counts the bytes framed so far. */
int input_next_raw(input *in, input_rec *r, emb_err *err);

/* The parser's half of input_next: turns a record from input_next_raw into a document, on
 * any thread (it reads only o and r, and keeps no state; several threads may parse records
 * of the same input at once). o holds the field names of the input_opts given to
 * input_open; its other fields are not used. Returns 1 with *d filled, or -1 with err set
 * (EMB_EFORMAT for a bad record, EMB_ENOMEM), *d then as input_next leaves it after -1.
 * It may take r's buffers into d; the caller still calls input_rec_free(r) afterwards and
 * input_doc_free(d) in every case. */
int input_parse(const input_opts *o, input_rec *r, input_doc *d, emb_err *err);

/* Frees what r owns and clears it; r may be freed twice. */
void input_rec_free(input_rec *r);

/* Bytes consumed so far and the total size of all regular files (0 when unknown: stdin).
 * These two may be called on any thread while another reads. */
void input_progress(const input *in, uint64_t *done, uint64_t *total);
uint64_t input_ignored(const input *in);

void input_close(input *in);


#endif
