/* test_json_vocab — engine/json_vocab against jansson reading the same text.
 *
 * Whenever json_vocab_take takes a text, jansson must read the original text to the same
 * vocabulary (same keys, ids and order) and the blanked text to the same document with an
 * empty vocab; whenever it declines, the text must be untouched. Checked on the published
 * MPNet tokenizer.json (and the MiniLM one where fetched), which must be taken, and on
 * thousands of generated tokenizer.json texts full of what trips a hand-written reader:
 * escapes of every kind, surrogate pairs good and broken, raw and invalid UTF-8, ids as
 * floats, negatives, leading zeros and huge numbers, duplicate keys, a second "model" or
 * "vocab", whitespace and newlines anywhere, truncations and flipped bytes. */
#include <jansson.h>
#include <stdint.h>

#include "json_vocab.h"
#include "testutil.h"

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)rng;
}

static int taken, declined, refused;

/* The document without its vocabulary's entries: what jansson must read from a blanked text. */
static json_t *without_vocab(json_t *root)
{
	json_t *copy = json_deep_copy(root);
	json_object_set_new(json_object_get(copy, "model"), "vocab", json_object());
	return copy;
}

static void check_text(const char *text, size_t len, const char *what)
{
	char *buf = malloc(len + 1);
	memcpy(buf, text, len);
	buf[len] = 0;
	json_vocab v;
	int r = json_vocab_take(buf, len, &v);
	CHECK(r == 0 || r == 1, "%s: returned %d", what, r);
	if (r != 1) {
		CHECK(!memcmp(buf, text, len), "%s: declined but changed the text", what);
		declined++;
		free(buf);
		return;
	}
	taken++;
	json_error_t je, jb;
	json_t *root = json_loadb(text, len, 0, &je);
	if (!root) { /* a fault outside the vocabulary: refused the same way, blanked or not */
		json_t *blank = json_loadb(buf, len, 0, &jb);
		CHECK(!blank && je.line == jb.line && je.column == jb.column &&
			      je.position == jb.position && !strcmp(je.text, jb.text),
		      "%s: jansson refuses the text (%d:%d %s) but reads the blanked one otherwise",
		      what, je.line, je.column, je.text);
		json_decref(blank);
		refused++;
	}
	if (root) {
		json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
		CHECK(json_is_object(vocab) && json_object_size(vocab) == v.n,
		      "%s: %zu entries, jansson %zu", what, v.n, json_object_size(vocab));
		const char *key;
		json_t *val;
		size_t i = 0;
		json_object_foreach(vocab, key, val) {
			if (i >= v.n)
				break;
			const json_vocab_entry *e = &v.ent[i++];
			CHECK(e->len == strlen(key) && !memcmp(v.keys + e->off, key, e->len) &&
				      json_is_integer(val) && json_integer_value(val) == e->id,
			      "%s: entry %zu: \"%.*s\" = %d, jansson \"%s\"", what, i - 1,
			      (int)e->len, v.keys + e->off, e->id, key);
		}
		json_t *blank = json_loadb(buf, len, 0, &je);
		json_t *want = without_vocab(root);
		CHECK(blank && json_equal(blank, want), "%s: the blanked text reads otherwise (%s)",
		      what, blank ? "differs" : je.text);
		int lines_a = 0, lines_b = 0;
		for (size_t k = 0; k < len; k++) {
			lines_a += text[k] == '\n';
			lines_b += buf[k] == '\n';
		}
		CHECK(lines_a == lines_b, "%s: lines %d -> %d", what, lines_a, lines_b);
		json_decref(blank);
		json_decref(want);
		json_decref(root);
	}
	json_vocab_free(&v);
	free(buf);
}

static void check_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	rewind(f);
	char *text = malloc((size_t)n);
	CHECK(fread(text, 1, (size_t)n, f) == (size_t)n, "read %s", path);
	fclose(f);
	int before = taken;
	check_text(text, (size_t)n, path);
	CHECK(taken == before + 1, "%s: the published file was not taken", path);
	free(text);
}

/* Appends a random key's JSON text (a string literal) to s. */
static int messy; /* this document may hold what a reader must decline */

static size_t gen_key(char *s, int index)
{
	static const char *const pieces[] = {
		"a", "##ing", "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0041",
		"\\u00e9", "\\u4e2d", "\\ud83d\\ude00", "\\ud83d", "\\ude00", "\\ud83dx", "\\u0000",
		"\\uZZZZ", "\\x", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "\xc3", "\xc0\xaf",
		"\xed\xa0\x80", "\xf4\x90\x80\x80", "\x01", "\x7f", " ", "[UNK]", "\\u00", "é",
		"vocab", "model", "\\u0076ocab", "{", "}", ",", ":", "\\ud83d\\ue000", "\\ud83d\\u0041",
		"\\udbff\\udfff", "\\ud800\\udc00",
	};
	size_t n = 0;
	s[n++] = '"';
	int parts = (int)(rnd() % 4);
	for (int i = 0; i < parts; i++) {
		uint32_t r = messy ? rnd() % 100 : rnd() % 60;
		static const int clean[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 20, 21, 22,
					    29, 30, 32, 33, 34, 35, 36, 37, 38, 39, 42, 43};
		const char *p = messy ? pieces[rnd() % (sizeof pieces / sizeof *pieces)]
				      : pieces[clean[rnd() % (sizeof clean / sizeof *clean)]];
		if (r < 40) { /* plain letters mostly */
			int k = 1 + (int)(rnd() % 6);
			for (int j = 0; j < k; j++)
				s[n++] = (char)('a' + rnd() % 26);
			continue;
		}
		n += (size_t)sprintf(s + n, "%s", p);
	}
	if (!messy || rnd() % 2) /* unique: duplicates only in messy documents */
		n += (size_t)sprintf(s + n, "%d", index);
	s[n++] = '"';
	return n;
}

static size_t gen_ws(char *s)
{
	static const char *const ws[] = {"", "", "", " ", "\n", "\n  ", "\t", "\r\n"};
	return (size_t)sprintf(s, "%s", ws[rnd() % 8]);
}

static size_t gen_id(char *s, int i)
{
	uint32_t r = rnd() % 100;
	if (!messy || r < 85)
		return (size_t)sprintf(s, "%d", i);
	static const char *const odd[] = {"007", "-1", "1.0", "1e2", "16777216", "16777215",
					  "99999999999", "true", "\"3\"", "null", "0", "2E0", "1.5"};
	return (size_t)sprintf(s, "%s", odd[rnd() % (sizeof odd / sizeof *odd)]);
}

/* A tokenizer.json-shaped document with a random vocabulary, rarely with a second vocab. */
static size_t gen_doc(char *s)
{
	size_t n = 0;
	n += (size_t)sprintf(s + n, "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 0, "
				    "\"content\": \"[PAD]\"}],%s", rnd() % 20 ? "" : " \"model\": 3,");
	n += gen_ws(s + n);
	n += (size_t)sprintf(s + n, "\"normalizer\": {\"type\": \"BertNormalizer\", \"x\": "
				    "\"a\\\"}{b\"}, \"model\": {\"type\": \"WordPiece\",");
	n += gen_ws(s + n);
	if (rnd() % 30 == 0)
		n += (size_t)sprintf(s + n, "\"vocab\": [1, 2],");
	n += (size_t)sprintf(s + n, "\"unk_token\": \"[UNK]\", \"vocab\":");
	n += gen_ws(s + n);
	s[n++] = '{';
	int entries = (int)(rnd() % 60);
	for (int i = 0; i < entries; i++) {
		n += gen_ws(s + n);
		n += gen_key(s + n, i);
		n += gen_ws(s + n);
		s[n++] = ':';
		n += gen_ws(s + n);
		n += gen_id(s + n, i);
		n += gen_ws(s + n);
		if (i + 1 < entries)
			s[n++] = ',';
	}
	s[n++] = '}';
	n += gen_ws(s + n);
	n += (size_t)sprintf(s + n, ", \"max_input_chars_per_word\": 100}%s}",
			     rnd() % 25 ? "" : ", \"model\": {\"vocab\": {\"a\": 1}}");
	n += gen_ws(s + n);
	return n;
}

int main(void)
{
	check_file("tests/data/all-mpnet-base-v2-tokenizer/tokenizer.json");
	char p[4200];
	snprintf(p, sizeof p, "%s/tokenizer.json", test_model_dir());
	check_file(p);

	char *doc = malloc(1 << 16), what[64];
	for (int t = 0; t < 20000 && !test_failures; t++) {
		messy = t % 3 == 0;
		size_t n = gen_doc(doc);
		snprintf(what, sizeof what, "generated text %d", t);
		uint32_t r = rnd() % 10;
		if (r == 0) /* a flipped byte */
			doc[rnd() % n] = (char)rnd();
		else if (r == 1) /* cut short */
			n = rnd() % n;
		check_text(doc, n, what);
	}
	free(doc);
	printf("json_vocab: %d texts taken (%d of them refused by jansson outside the vocabulary, "
	       "blanked or not), %d declined: every one as jansson reads it\n", taken, refused,
	       declined);
	CHECK(taken > 5000 && declined > 2000, "the generator no longer tests both ways");
	return test_failures ? 1 : 0;
}
