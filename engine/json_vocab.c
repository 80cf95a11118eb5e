/* json_vocab.c — the vocabulary object of a tokenizer.json, decoded in one pass (see
 * json_vocab.h for why, and for what it declines). */
#include "json_vocab.h"

#include <stdlib.h>
#include <string.h>

#include "store.h" /* store_id_hash: FNV-1a 64 */
#include "utf8.h"

typedef struct scan {
	const char *p, *end;
} scan;

static void skip_ws(scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
		: c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int hex4(const char *p, const char *end, uint32_t *u)
{
	if (end - p < 4)
		return 0;
	*u = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);
		if (h < 0)
			return 0;
		*u = *u << 4 | (uint32_t)h;
	}
	return 1;
}

/* Decodes the string at s->p (its opening quote) into out (room for the raw length: a
 * decoded string is never longer than its text), as jansson reads it: strict UTF-8, no raw
 * control characters, the eight escapes and \uXXXX with surrogate pairs; \u0000 declined
 * (jansson refuses it by default). Returns the decoded length, or -1 to decline. */
static long take_string(scan *s, char *out)
{
	const char *p = s->p + 1, *end = s->end;
	char *o = out;
	while (p < end && *p != '"') {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20)
			return -1;
		if (c >= 0x80) {
			uint32_t cp;
			size_t n = utf8_decode((const unsigned char *)p, (size_t)(end - p), &cp);
			if (!n)
				return -1;
			memcpy(o, p, n);
			o += n;
			p += n;
			continue;
		}
		if (c != '\\') {
			*o++ = (char)c;
			p++;
			continue;
		}
		if (++p == end)
			return -1;
		uint32_t u;
		switch (*p++) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '/': *o++ = '/'; break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'u':
			if (!hex4(p, end, &u) || u == 0)
				return -1;
			p += 4;
			if (u >= 0xDC00 && u <= 0xDFFF)
				return -1;
			if (u >= 0xD800 && u <= 0xDBFF) {
				uint32_t lo;
				if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, end, &lo) ||
				    lo < 0xDC00 || lo > 0xDFFF)
					return -1;
				p += 6;
				u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
			}
			o += utf8_encode(o, u);
			break;
		default: return -1;
		}
	}
	if (p == end)
		return -1;
	s->p = p + 1;
	return (long)(o - out);
}

/* The closing quote of the string whose opening quote is at p, or NULL. */
static const char *string_end(const char *p, const char *end)
{
	for (p++; p < end && *p != '"'; p++)
		if (*p == '\\' && ++p == end)
			return NULL;
	return p < end ? p : NULL;
}

/* Steps over one value without reading it (s->p then just after it, or at the ',', '}' or
 * ']' after a number or literal): strings by their escapes, arrays and objects by depth. Only has to find where a well-formed value ends: jansson reads every skipped value
 * later and refuses a malformed one there. Returns 0 to decline. */
static int skip_value(scan *s)
{
	int depth = 0;
	while (s->p < s->end) {
		char c = *s->p;
		if (c == '"') {
			const char *q = string_end(s->p, s->end);
			if (!q)
				return 0;
			s->p = q + 1;
		} else if (c == '{' || c == '[') {
			depth++;
			s->p++;
		} else if (c == '}' || c == ']') {
			if (depth == 0)
				return 1; /* the end of the enclosing container */
			depth--;
			s->p++;
		} else if (c == ',' && depth == 0) {
			return 1;
		} else {
			s->p++;
		}
		if (depth == 0 && (c == '"' || c == '}' || c == ']'))
			return 1;
	}
	return depth == 0;
}

/* Walks the object at s->p ('{'), calling on(key) for each key with s->p at its value; on
 * steps over the value itself (or returns 0 to decline). Returns 0 to decline. */
typedef int (*key_fn)(scan *s, const char *key, long klen, void *ctx);

static int walk_object(scan *s, key_fn on, void *ctx)
{
	char key[64];
	if (s->p >= s->end || *s->p != '{')
		return 0;
	s->p++;
	skip_ws(s);
	if (s->p < s->end && *s->p == '}') {
		s->p++;
		return 1;
	}
	for (;;) {
		skip_ws(s);
		if (s->p >= s->end || *s->p != '"')
			return 0;
		/* keys compared here are short; a longer one is read and skipped */
		const char *q = string_end(s->p, s->end);
		long klen = -1;
		if (!q)
			return 0;
		if (q - s->p <= (long)sizeof key)
			klen = take_string(s, key);
		else
			s->p = q + 1;
		skip_ws(s);
		if (s->p >= s->end || *s->p != ':')
			return 0;
		s->p++;
		skip_ws(s);
		if (!on(s, klen >= 0 ? key : "", klen, ctx))
			return 0;
		skip_ws(s);
		if (s->p < s->end && *s->p == ',') {
			s->p++;
			continue;
		}
		if (s->p < s->end && *s->p == '}') {
			s->p++;
			return 1;
		}
		return 0;
	}
}

typedef struct find {
	int models, vocabs;
	const char *start, *stop; /* the vocab object's text */
} find;

static int on_model_key(scan *s, const char *key, long klen, void *ctx)
{
	find *f = ctx;
	if (klen == 5 && !memcmp(key, "vocab", 5) && s->p < s->end && *s->p == '{') {
		f->vocabs++;
		f->start = s->p;
		if (!skip_value(s))
			return 0;
		f->stop = s->p;
		return 1;
	}
	if (klen == 5 && !memcmp(key, "vocab", 5))
		f->vocabs++;
	return skip_value(s);
}

static int on_top_key(scan *s, const char *key, long klen, void *ctx)
{
	find *f = ctx;
	if (klen == 5 && !memcmp(key, "model", 5)) {
		f->models++;
		if (s->p < s->end && *s->p == '{')
			return walk_object(s, on_model_key, f);
	}
	return skip_value(s);
}

/* The vocab object's entries, strictly; 0 to decline, -1 out of memory. */
static int decode_vocab(const char *start, const char *stop, json_vocab *v)
{
	size_t cap = 1024, used = 0;
	v->ent = malloc(cap * sizeof *v->ent);
	v->keys = malloc((size_t)(stop - start) + 1);
	if (!v->ent || !v->keys)
		return -1;
	scan s = {start + 1, stop};
	skip_ws(&s);
	if (s.p < s.end && *s.p == '}')
		return 0; /* empty: jansson's path says so */
	for (;;) {
		skip_ws(&s);
		if (s.p >= s.end || *s.p != '"')
			return 0;
		long n = take_string(&s, v->keys + used);
		if (n < 0)
			return 0;
		skip_ws(&s);
		if (s.p >= s.end || *s.p++ != ':')
			return 0;
		skip_ws(&s);
		/* a plain integer: digits, no sign, no leading zero, no fraction or exponent */
		int32_t id = 0;
		const char *d = s.p;
		while (s.p < s.end && *s.p >= '0' && *s.p <= '9' && s.p - d < 9)
			id = id * 10 + (*s.p++ - '0');
		if (s.p == d || (*d == '0' && s.p - d > 1) || id >= (1 << 24) ||
		    (s.p < s.end && (*s.p == '.' || *s.p == 'e' || *s.p == 'E' ||
				     (*s.p >= '0' && *s.p <= '9'))))
			return 0;
		if (v->n == cap) {
			json_vocab_entry *e = realloc(v->ent, 2 * cap * sizeof *e);
			if (!e)
				return -1;
			v->ent = e;
			cap *= 2;
		}
		v->ent[v->n++] = (json_vocab_entry){(uint32_t)used, (uint32_t)n, id};
		v->keys[used + (size_t)n] = 0;
		used += (size_t)n + 1;
		skip_ws(&s);
		if (s.p < s.end && *s.p == ',') {
			s.p++;
			continue;
		}
		if (s.p + 1 == s.end && *s.p == '}')
			return 1;
		return 0;
	}
}

/* 1 when two entries share a key (jansson would keep one of them: declined), 0 when none,
 * -1 out of memory. */
static int has_duplicates(const json_vocab *v)
{
	size_t size = 64;
	while (size < 2 * v->n)
		size *= 2;
	uint32_t *slot = malloc(size * sizeof *slot); /* entry index + 1, 0 empty */
	if (!slot)
		return -1;
	memset(slot, 0, size * sizeof *slot);
	int dup = 0;
	for (size_t i = 0; i < v->n && !dup; i++) {
		const char *k = v->keys + v->ent[i].off;
		for (size_t j = (size_t)store_id_hash(k, v->ent[i].len) & (size - 1);; j = (j + 1) & (size - 1)) {
			if (!slot[j]) {
				slot[j] = (uint32_t)i + 1;
				break;
			}
			const json_vocab_entry *o = &v->ent[slot[j] - 1];
			if (o->len == v->ent[i].len && !memcmp(v->keys + o->off, k, o->len)) {
				dup = 1;
				break;
			}
		}
	}
	free(slot);
	return dup;
}

int json_vocab_take(char *buf, size_t len, json_vocab *v)
{
	*v = (json_vocab){0};
	find f = {0};
	scan s = {buf, buf + len};
	skip_ws(&s);
	if (len > UINT32_MAX || !walk_object(&s, on_top_key, &f) || f.models != 1 || f.vocabs != 1 ||
	    !f.start)
		return 0;
	int rc = decode_vocab(f.start, f.stop, v);
	if (rc == 1) {
		int d = has_duplicates(v);
		rc = d < 0 ? -1 : !d;
	}
	if (rc != 1) {
		json_vocab_free(v);
		return rc;
	}
	for (char *p = (char *)f.start + 1; p < f.stop - 1; p++)
		if (*p != '\n')
			*p = ' ';
	return 1;
}

void json_vocab_free(json_vocab *v)
{
	free(v->keys);
	free(v->ent);
	*v = (json_vocab){0};
}
