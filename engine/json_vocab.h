/* json_vocab.h — a tokenizer.json's vocabulary read without building a JSON tree.
 *
 * A BERT tokenizer.json is ~700 KB, almost all of it "model": {"vocab": {token: id, ...}} with
 * 30,000 to 250,000 entries. Parsed by jansson, that object costs a hash table, an integer
 * object and a key copy an entry: 12-20 ms of a one-shot search's start-up, more than the
 * query's forward pass. This reader decodes just that flat object, in file order, and blanks
 * it in the text so that jansson parses the rest (settings, added tokens: a few KB).
 *
 * It takes only the plain case and declines anything else (malformed text, escapes it cannot
 * prove equal to jansson's reading, duplicate keys, ids that are not plain integers below
 * 2^24): the caller then parses the whole text with jansson as before, so every file reads
 * the same either way and every error message stays jansson's. */
#ifndef EMB_JSON_VOCAB_H
#define EMB_JSON_VOCAB_H

#include <stddef.h>
#include <stdint.h>

typedef struct json_vocab_entry {
	uint32_t off; /* the token's UTF-8 bytes: keys + off, len bytes, NUL after */
	uint32_t len;
	int32_t id; /* 0 .. 2^24 - 1 */
} json_vocab_entry;

typedef struct json_vocab {
	char *keys;            /* every decoded token, NUL-terminated, back to back */
	json_vocab_entry *ent; /* in file order */
	size_t n;              /* >= 1 */
} json_vocab;

/* Looks in the JSON text buf[0..len) for exactly one top-level "model" object holding exactly
 * one "vocab" object; decodes that object's entries into *v (owned by the caller: free with
 * json_vocab_free) and overwrites the object's text in buf with "{", then spaces, "}", the
 * newlines kept, so that a parse of buf reads an empty vocab and reports every other line
 * and column as before. Returns 1 when it did so; 0 when buf is not the plain case (buf is
 * then unchanged and *v empty); -1 when out of memory (buf unchanged). */
int json_vocab_take(char *buf, size_t len, json_vocab *v);

/* Frees what json_vocab_take allocated; v may be empty. */
void json_vocab_free(json_vocab *v);

#endif
