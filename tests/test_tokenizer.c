/* test_tokenizer — unit tests for engine/tokenizer.c that hunt for the failures the
 * differential test cannot reach: invalid UTF-8, truncation by cap, loading errors, thread
 * safety. Parity with HF itself is tests/test_tokenizer_diff.py's job. */
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>

#include "testutil.h"
#include "tokenizer.h"

static const char *find_tokenizer_dir(void)
{
	static char p[4096];
	const char *dirs[] = {test_model_dir(), "../shared/models/all-MiniLM-L6-v2"};
	for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
		snprintf(p, sizeof p, "%s/tokenizer.json", dirs[i]);
		if (access(p, R_OK) == 0)
			return dirs[i];
	}
	return NULL;
}

static long encode(const tokenizer *t, const char *s, size_t len, int32_t *ids, size_t cap,
		   emb_err *err)
{
	return tokenizer_encode(t, s, len, ids, cap, err);
}

/* Encodes s with a generous cap; returns the count (or -1) and the ids in ids[]. */
static long encode_all(const tokenizer *t, const char *s, int32_t *ids, size_t cap)
{
	emb_err err = {0};
	return encode(t, s, strlen(s), ids, cap, &err);
}

static void test_known_ids(const tokenizer *t)
{
	static const struct {
		const char *text;
		int32_t ids[8];
		long n;
	} cases[] = {
		{"Hello, world!", {7592, 1010, 2088, 999}, 4},
		{"unaffable", {14477, 20961, 3468}, 3},
		{"a[SEP]b", {1037, 102, 1038}, 3}, /* added tokens match inside words */
		{"[sep]", {1031, 19802, 1033}, 3},  /* ... but only as written */
		{"", {0}, 0},
		{" \t\n\r\x01\x7f \xe2\x80\x8b ", {0}, 0}, /* spaces, controls, ZWSP: nothing */
	};
	int32_t ids[64];
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		long n = encode_all(t, cases[i].text, ids, 64);
		CHECK(n == cases[i].n, "\"%s\": %ld ids, want %ld", cases[i].text, n, cases[i].n);
		for (long k = 0; k < n && k < cases[i].n; k++)
			CHECK(ids[k] == cases[i].ids[k], "\"%s\" id %ld: %d, want %d",
			      cases[i].text, k, ids[k], cases[i].ids[k]);
	}
	emb_err err = {0};
	CHECK(tokenizer_encode(t, NULL, 0, ids, 64, &err) == 0, "NULL empty text");
	CHECK(tokenizer_encode(t, "abc", 3, NULL, 0, &err) == 0, "cap 0 writes nothing");

	CHECK(tokenizer_cls_id(t) == 101 && tokenizer_sep_id(t) == 102, "cls/sep");
	CHECK(tokenizer_pad_id(t) == 0 && tokenizer_unk_id(t) == 100, "pad/unk");
	CHECK(tokenizer_vocab_size(t) == 30522, "vocab size %zu", tokenizer_vocab_size(t));
	const char *cls = tokenizer_id_to_token(t, 101), *last = tokenizer_id_to_token(t, 30521);
	CHECK(cls && strcmp(cls, "[CLS]") == 0, "id 101 is %s", cls ? cls : "NULL");
	CHECK(last && strcmp(last, "##～") == 0, "id 30521 is %s", last ? last : "NULL");
	CHECK(tokenizer_id_to_token(t, -1) == NULL && tokenizer_id_to_token(t, 30522) == NULL,
	      "ids out of range");
}

static void test_invalid_utf8(const tokenizer *t)
{
	static const struct {
		const char *bytes;
		size_t offset; /* of the first bad byte; SIZE_MAX: valid */
	} cases[] = {
		{"ok \xc0\x80", 3},              /* overlong NUL */
		{"\xc1\xbf", 0},                 /* overlong */
		{"ab\xe0\x80\xaf", 2},           /* overlong 3-byte */
		{"\xf0\x80\x80\xaf", 0},         /* overlong 4-byte */
		{"x\xed\xa0\x80y", 1},           /* surrogate U+D800 */
		{"\xed\xbf\xbf", 0},             /* surrogate U+DFFF */
		{"\xf4\x90\x80\x80", 0},         /* U+110000 */
		{"\xf5\x80\x80\x80", 0},         /* lead byte past U+10FFFF */
		{"\xff", 0},
		{"abc\x80", 3},                  /* lone continuation byte */
		{"word \xe2\x82", 5},            /* truncated at the end */
		{"\xc3", 0},
		{"\xe2\x28\xa1", 0},             /* bad second byte */
		{"\xf0\x9f\x98", 0},             /* truncated emoji */
		{"caf\xc3\xa9 \xf0\x9f\x98\x80\xf0\x9f\x98", 10},
		{"\xed\x9f\xbf", SIZE_MAX},      /* U+D7FF */
		{"\xee\x80\x80", SIZE_MAX},      /* U+E000 */
		{"\xf4\x8f\xbf\xbf", SIZE_MAX},  /* U+10FFFF */
		{"\xef\xbf\xbf\xef\xbf\xbd", SIZE_MAX}, /* U+FFFF U+FFFD */
	};
	int32_t ids[64];
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		emb_err err = {0};
		long n = encode(t, cases[i].bytes, strlen(cases[i].bytes), ids, 64, &err);
		if (cases[i].offset == SIZE_MAX) {
			CHECK(n >= 0, "case %zu: valid UTF-8 refused: %s", i, err.msg);
			continue;
		}
		char want[64];
		snprintf(want, sizeof want, "byte offset %zu", cases[i].offset);
		CHECK(n == -1 && err.code == EMB_EINVAL && strstr(err.msg, want),
		      "case %zu: n %ld, code %d, msg \"%s\", want -1 and \"%s\"", i, n, err.code,
		      err.msg, want);
	}
	/* A NUL inside the text is a character (dropped by clean_text), not the end. */
	emb_err err = {0};
	long n = encode(t, "a\0b", 3, ids, 64, &err);
	CHECK(n == 1 && ids[0] == 11113, "\"a\\0b\" is one word \"ab\": n %ld id %d", n, ids[0]);
}

/* cap keeps exactly a prefix of the full encoding, and nothing is written past cap. */
static void test_cap(const tokenizer *t)
{
	static const char *texts[] = {
		"The quick brown fox jumps over the lazy dog. Unaffable antidisestablishmentarianism!",
		"[CLS] mixed [SEP] specials [MASK] and 中文字符 with naïve café İİ ≠ 한국어",
		"a b c d e f g h i j k l m n o p q r s t u v w x y z",
		"supercalifragilisticexpialidocious-supercalifragilisticexpialidocious",
		"\xf0\x9f\x98\x80\xf0\x9f\x98\x80 \xe2\x80\x8b\xe2\x80\x8b zz",
	};
	int32_t full[256], part[256 + 8];
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		size_t len = strlen(texts[i]);
		long n = encode_all(t, texts[i], full, 256);
		CHECK(n > 0 && (size_t)n <= len, "text %zu: %ld ids for %zu bytes", i, n, len);
		size_t caps[] = {0, 1, 2, 5, (size_t)n / 2, (size_t)n - 1, (size_t)n, (size_t)n + 1,
				 len};
		for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
			size_t cap = caps[c];
			for (size_t k = 0; k < sizeof part / sizeof part[0]; k++)
				part[k] = -7;
			emb_err err = {0};
			long m = encode(t, texts[i], len, part, cap, &err);
			long want = (long)cap < n ? (long)cap : n;
			CHECK(m == want, "text %zu cap %zu: %ld ids, want %ld", i, cap, m, want);
			CHECK(m < 0 || memcmp(part, full, (size_t)m * sizeof *part) == 0,
			      "text %zu cap %zu: not a prefix", i, cap);
			CHECK(part[cap] == -7, "text %zu cap %zu: wrote past cap", i, cap);
		}
	}
}

/* Words over 100 characters are one [UNK]; normalization can push a word over. */
static void test_long_words(const tokenizer *t)
{
	char buf[1024];
	int32_t ids[512];
	memset(buf, 'a', 100);
	buf[100] = '\0';
	long n = encode_all(t, buf, ids, 512);
	CHECK(n > 1, "100 a's: %ld ids", n);
	memset(buf, 'a', 101);
	buf[101] = '\0';
	n = encode_all(t, buf, ids, 512);
	CHECK(n == 1 && ids[0] == 100, "101 a's: %ld ids, first %d", n, ids[0]);
	/* 51 x U+0130 (İ): this model strips accents before lowercasing, so 51 plain i's. */
	buf[0] = '\0';
	for (int i = 0; i < 51; i++)
		strcat(buf, "\xc4\xb0");
	n = encode_all(t, buf, ids, 512);
	CHECK(n >= 1 && ids[0] != 100, "51 x U+0130: [UNK]");
	/* 40 Hangul syllables: 120 jamo after NFD, over the limit. */
	buf[0] = '\0';
	for (int i = 0; i < 40; i++)
		strcat(buf, "\xed\x95\x9c");
	n = encode_all(t, buf, ids, 512);
	CHECK(n == 1 && ids[0] == 100, "40 x U+D55C: %ld ids, first %d", n, ids[0]);
}

struct thread_arg {
	const tokenizer *t;
	int ok;
};

static void *encode_many(void *p)
{
	struct thread_arg *a = p;
	const char *s = "Thread safety: the tokenizer is immutable; naïve café 中文 [SEP] ≠";
	int32_t want[64], got[64];
	long n = encode_all(a->t, s, want, 64);
	a->ok = n > 0;
	for (int i = 0; i < 2000 && a->ok; i++)
		a->ok = encode_all(a->t, s, got, 64) == n && memcmp(got, want, (size_t)n * 4) == 0;
	return NULL;
}

static void test_threads(const tokenizer *t)
{
	pthread_t th[4];
	struct thread_arg args[4];
	for (int i = 0; i < 4; i++) {
		args[i] = (struct thread_arg){t, 0};
		pthread_create(&th[i], NULL, encode_many, &args[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK(args[i].ok, "thread %d saw different ids", i);
	}
}

static void expect_load_error(const char *dir, int code, const char *needle, const char *what)
{
	tokenizer *t = (tokenizer *)1;
	emb_err err = {0};
	int rc = tokenizer_load(dir, &t, &err);
	CHECK(rc == code && err.code == code && t == NULL && strstr(err.msg, needle),
	      "%s: rc %d (want %d), msg \"%s\" (want it to name \"%s\")", what, rc, code, err.msg,
	      needle);
	if (rc == EMB_OK)
		tokenizer_free(t);
}

static void write_text(const char *dir, const char *name, const char *text)
{
	test_write_file(dir, name, text, strlen(text));
}

static void test_load_errors(void)
{
	char tmp[256], path[512];
	test_tmpdir(tmp);
	snprintf(path, sizeof path, "%s/missing", tmp);
	expect_load_error(path, EMB_EIO, path, "missing directory");
	expect_load_error(tmp, EMB_EIO, "tokenizer.json", "empty directory");

	static const char *pre =
		"{\"normalizer\": {\"type\": \"BertNormalizer\"},"
		" \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"added_tokens\": [],";
	static const struct {
		const char *json;
		int code;
		const char *needle;
	} cases[] = {
		{"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 1,}}}", EMB_EFORMAT,
		 "tokenizer.json:1:"},
		{"", EMB_EFORMAT, "tokenizer.json"},
		{"[1, 2]", EMB_EFORMAT, "tokenizer.json: no \"model\""},
		{"%s \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
		 EMB_EUNSUPPORTED, "tokenizer.json: model type \"BPE\""},
		{"%s \"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}",
		 EMB_EUNSUPPORTED, "Unigram"},
		{"{\"normalizer\": {\"type\": \"NFKC\"}, \"pre_tokenizer\": {\"type\": "
		 "\"BertPreTokenizer\"}, \"model\": {\"type\": \"WordPiece\", \"vocab\": "
		 "{\"[UNK]\": 0}}}",
		 EMB_EUNSUPPORTED, "tokenizer.json: normalizer type \"NFKC\""},
		{"{\"normalizer\": null, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": "
		 "{\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0}}}",
		 EMB_EUNSUPPORTED, "ByteLevel"},
		{"%s \"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", EMB_EFORMAT,
		 "unk_token \"[UNK]\" is not in the vocabulary"},
		{"%s \"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": -3}}}",
		 EMB_EFORMAT, "bad id"},
		{"%s \"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0}, "
		 "\"max_input_chars_per_word\": 100000}}",
		 EMB_EUNSUPPORTED, "max_input_chars_per_word"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char json[1024];
		snprintf(json, sizeof json, cases[i].json, pre);
		write_text(tmp, "tokenizer.json", json);
		char what[32];
		snprintf(what, sizeof what, "tokenizer.json case %zu", i);
		expect_load_error(tmp, cases[i].code, cases[i].needle, what);
	}

	/* Normalized added tokens: only what the encoder can find exactly. */
	static const char *const norm_bad[] = {
		"[{\"id\": 1, \"content\": \"unk>\", \"normalized\": true}]",
		"[{\"id\": 1, \"content\": \"<unk\", \"normalized\": true}]",
		"[{\"id\": 1, \"content\": \"<u k>\", \"normalized\": true}]",
		"[{\"id\": 1, \"content\": \"<a<b>\", \"normalized\": true}]",
		"[{\"id\": 1, \"content\": \"<\u00e9>\", \"normalized\": true}]",
		"[{\"id\": 1, \"content\": \"<a>\", \"normalized\": true}, "
		"{\"id\": 2, \"content\": \"<b>\", \"normalized\": true}]",
	};
	for (size_t i = 0; i < sizeof norm_bad / sizeof norm_bad[0]; i++) {
		char json[1024];
		snprintf(json, sizeof json,
			 "{\"normalizer\": {\"type\": \"BertNormalizer\"}, \"pre_tokenizer\": "
			 "{\"type\": \"BertPreTokenizer\"}, \"added_tokens\": %s, \"model\": "
			 "{\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0}}}", norm_bad[i]);
		write_text(tmp, "tokenizer.json", json);
		char what[48];
		snprintf(what, sizeof what, "normalized added token case %zu", i);
		expect_load_error(tmp, EMB_EUNSUPPORTED, "normalized", what);
	}

	/* A minimal valid tokenizer.json loads, and its flags take effect. */
	char json[1024];
	snprintf(json, sizeof json,
		 "%s \"model\": {\"type\": \"WordPiece\", \"unk_token\": \"<?>\", \"vocab\": "
		 "{\"<?>\": 0, \"Ab\": 1, \"@@c\": 2, \"ab\": 3}, \"continuing_subword_prefix\": "
		 "\"@@\"}}",
		 "{\"normalizer\": {\"type\": \"BertNormalizer\", \"lowercase\": false},"
		 " \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"added_tokens\": [],");
	write_text(tmp, "tokenizer.json", json);
	tokenizer *t = NULL;
	emb_err err = {0};
	CHECK(tokenizer_load(tmp, &t, &err) == EMB_OK, "minimal tokenizer.json: %s", err.msg);
	if (t) {
		int32_t ids[8];
		long n = encode_all(t, "Abc ab x", ids, 8);
		CHECK(n == 4 && ids[0] == 1 && ids[1] == 2 && ids[2] == 3 && ids[3] == 0,
		      "minimal tokenizer: %ld ids", n);
		CHECK(tokenizer_cls_id(t) == -1, "no [CLS] in this vocabulary");
		tokenizer_free(t);
	}

	/* An added token outside the model's vocabulary still has its id, in text and by name. */
	snprintf(json, sizeof json,
		 "%s \"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0, \"x\": 1}}}",
		 "{\"normalizer\": {\"type\": \"BertNormalizer\"}, \"pre_tokenizer\": {\"type\": "
		 "\"BertPreTokenizer\"}, \"added_tokens\": [{\"id\": 5, \"content\": \"[CLS]\", "
		 "\"normalized\": false, \"special\": true, \"lstrip\": true}],");
	write_text(tmp, "tokenizer.json", json);
	t = NULL;
	CHECK(tokenizer_load(tmp, &t, &err) == EMB_OK, "added [CLS]: %s", err.msg);
	if (t) {
		int32_t ids[8];
		long n = encode_all(t, "x[CLS]x [cls]", ids, 8);
		CHECK(n == 6 && ids[0] == 1 && ids[1] == 5 && ids[2] == 1 && ids[3] == 0,
		      "added [CLS]: %ld ids", n);
		CHECK(tokenizer_cls_id(t) == 5 && tokenizer_vocab_size(t) == 6, "added [CLS] id");
		tokenizer_free(t);
	}

	/* The vocab.txt fallback, and its failures. */
	snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
	unlink(path);
	write_text(tmp, "vocab.txt", "[PAD]\r\n[UNK]\nhello\n##s\n");
	write_text(tmp, "tokenizer_config.json", "{\"do_lower_case\": false}");
	t = NULL;
	CHECK(tokenizer_load(tmp, &t, &err) == EMB_OK, "vocab.txt: %s", err.msg);
	if (t) {
		int32_t ids[8];
		long n = encode_all(t, "hellos Hello [UNK]", ids, 8);
		CHECK(n == 4 && ids[0] == 2 && ids[1] == 3 && ids[2] == 1 && ids[3] == 1,
		      "vocab.txt cased: %ld ids", n);
		CHECK(tokenizer_vocab_size(t) == 4, "vocab.txt size %zu", tokenizer_vocab_size(t));
		tokenizer_free(t);
	}
	/* A string listed twice takes the later id, as in transformers' load_vocab. */
	write_text(tmp, "vocab.txt", "[UNK]\nab\nab\n");
	t = NULL;
	CHECK(tokenizer_load(tmp, &t, &err) == EMB_OK, "vocab.txt twice: %s", err.msg);
	if (t) {
		int32_t ids[8];
		long n = encode_all(t, "ab", ids, 8);
		CHECK(n == 1 && ids[0] == 2, "duplicate vocab line: %ld ids, first %d", n, ids[0]);
		const char *s1 = tokenizer_id_to_token(t, 1);
		CHECK(s1 && strcmp(s1, "ab") == 0, "id 1 is still \"ab\"");
		tokenizer_free(t);
	}
	write_text(tmp, "tokenizer_config.json", "{\"do_lower_case\": ");
	expect_load_error(tmp, EMB_EFORMAT, "tokenizer_config.json", "malformed config");
	write_text(tmp, "tokenizer_config.json", "{\"unk_token\": \"<unk>\"}");
	expect_load_error(tmp, EMB_EFORMAT, "vocab.txt: unk_token \"<unk>\"", "vocab.txt no unk");
	write_text(tmp, "vocab.txt", "");
	expect_load_error(tmp, EMB_EFORMAT, "vocab.txt: empty", "empty vocab.txt");

	const char *names[] = {"tokenizer.json", "vocab.txt", "tokenizer_config.json"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "%s/%s", tmp, names[i]);
		unlink(path);
	}
	rmdir(tmp);
}

/* MPNet's tokenizer.json as published (tests/data, so this always runs): the ids a sequence
 * is wrapped in come from its RobertaProcessing post_processor, pad from its padding, and its
 * normalized "<unk>" is found after lowercasing, also when the cap falls inside it. */
static void test_mpnet(void)
{
	tokenizer *t = NULL;
	emb_err err = {0};
	CHECK(tokenizer_load("tests/data/all-mpnet-base-v2-tokenizer", &t, &err) == EMB_OK,
	      "MPNet tokenizer: %s", err.msg);
	if (!t)
		return;
	CHECK(tokenizer_cls_id(t) == 0 && tokenizer_sep_id(t) == 2, "MPNet cls/sep %d/%d",
	      tokenizer_cls_id(t), tokenizer_sep_id(t));
	CHECK(tokenizer_pad_id(t) == 1 && tokenizer_unk_id(t) == 104, "MPNet pad/unk %d/%d",
	      tokenizer_pad_id(t), tokenizer_unk_id(t));
	CHECK(tokenizer_vocab_size(t) == 30527, "MPNet vocab %zu", tokenizer_vocab_size(t));
	/* HF: "a<UNK>b" -> a <unk> b = 1041 3 1042; "< unk>" stays four pre-tokens. */
	int32_t ids[16];
	size_t offs[32];
	long n = tokenizer_encode_offsets(t, "a<UNK>b", 7, ids, offs, 16, &err);
	CHECK(n == 3 && ids[0] == 1041 && ids[1] == 3 && ids[2] == 1042 && offs[2] == 1 &&
	      offs[3] == 6, "MPNet a<UNK>b: %ld ids", n);
	n = tokenizer_encode_offsets(t, "a<UNK>b", 7, ids, offs, 2, &err);
	CHECK(n == 2 && ids[0] == 1041 && ids[1] == 3, "MPNet a<UNK>b cap 2: %ld ids", n);
	n = encode_all(t, "< unk>", ids, 16);
	CHECK(n == 4 && ids[0] == 1030 && ids[3] == 1032, "MPNet '< unk>': %ld ids", n);
	n = encode_all(t, "<s>x</s>[UNK]", ids, 16);
	CHECK(n == 4 && ids[0] == 0 && ids[2] == 2 && ids[3] == 104, "MPNet specials: %ld", n);
	tokenizer_free(t);
}

int main(void)
{
	test_load_errors();
	test_mpnet();
	const char *dir = find_tokenizer_dir();
	if (!dir) {
		printf("SKIP: no tokenizer.json for all-MiniLM-L6-v2 (run scripts/fetch-model)\n");
		return test_failures ? 1 : 77;
	}
	tokenizer *t;
	emb_err err = {0};
	if (tokenizer_load(dir, &t, &err) != EMB_OK) {
		fprintf(stderr, "tokenizer_load %s: %s\n", dir, err.msg);
		return 1;
	}
	test_known_ids(t);
	test_invalid_utf8(t);
	test_cap(t);
	test_long_words(t);
	test_threads(t);
	tokenizer_free(t);
	if (test_failures) {
		fprintf(stderr, "%d checks failed\n", test_failures);
		return 1;
	}
	printf("all tokenizer checks passed\n");
	return 0;
}
