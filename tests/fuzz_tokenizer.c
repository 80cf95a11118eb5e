/* libFuzzer harness for tokenizer_encode: arbitrary bytes must give ids that exist in the
 * vocabulary, no more of them than bytes, and the same prefix whatever the cap — or -1 with
 * a message for invalid UTF-8 — never a crash, overflow or leak. Build and run with
 * `make fuzz`.
 *
 * Three tokenizers are loaded once: the model's (EMBED_TOKENIZER_DIR, default
 * .cache/models/all-MiniLM-L6-v2), the same vocab.txt with lowercasing, accent
 * stripping and CJK handling off, so the cased code paths get fuzzed too, and MPNet's
 * (tests/data/all-mpnet-base-v2-tokenizer), whose normalized "<unk>" folds several
 * pre-tokens into one id and may read past the cap. Bit 0 of the first input byte picks the
 * cased one, else bit 2 MPNet's; the whole input is the text, unless bit 1 asks for picks
 * from a list of tricky code points (see `interesting`). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer.h"

static tokenizer *toks[3];

static void unload(void)
{
	tokenizer_free(toks[0]);
	tokenizer_free(toks[1]);
	tokenizer_free(toks[2]);
}

static tokenizer *load(const char *dir)
{
	tokenizer *t;
	emb_err err = {0};
	if (tokenizer_load(dir, &t, &err) != EMB_OK) {
		fprintf(stderr, "fuzz_tokenizer: %s\n", err.msg);
		exit(1);
	}
	return t;
}

/* A directory with the model's vocab.txt and a config that turns normalization off. */
static void load_cased(const char *model_dir)
{
	char tmp[] = "/tmp/fuzz_tokenizer.XXXXXX", src[4096], dst[4096], cfg[4096];
	if (!mkdtemp(tmp))
		exit(1);
	snprintf(src, sizeof src, "%s/vocab.txt", model_dir);
	snprintf(dst, sizeof dst, "%s/vocab.txt", tmp);
	snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", tmp);
	FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb"), *c = fopen(cfg, "wb");
	if (!in || !out || !c)
		exit(1);
	char buf[1 << 16];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, in)) > 0)
		fwrite(buf, 1, n, out);
	fputs("{\"do_lower_case\": false, \"strip_accents\": false, "
	      "\"tokenize_chinese_chars\": false}", c);
	fclose(in);
	fclose(out);
	fclose(c);
	toks[1] = load(tmp);
	unlink(dst);
	unlink(cfg);
	rmdir(tmp);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	const char *dir = getenv("EMBED_TOKENIZER_DIR");
	if (!dir || !*dir)
		dir = ".cache/models/all-MiniLM-L6-v2";
	toks[0] = load(dir);
	load_cased(dir);
	toks[2] = load("tests/data/all-mpnet-base-v2-tokenizer");
	atexit(unload);
	return 0;
}

/* Code points where the rules have corners: marks of every kind (reordering), removed
 * characters, spaces, punctuation that NFD creates, CJK bounds, special lowercasing. Raw
 * bytes rarely hit them, so inputs with bit 1 of the first byte set are read as 16-bit
 * picks from these ranges instead. */
static const uint32_t interesting[][2] = {
	{'a', 'z'}, {'A', 'Z'}, {0x20, 0x40}, {0x5B, 0x60}, {0x0, 0x1F}, {0x7F, 0xAD},
	{0xC0, 0x24F}, {0x300, 0x36F}, {0x130, 0x130}, {0x3A3, 0x3A3}, {0x591, 0x5C7},
	{0x900, 0x97F}, {0x1AB0, 0x1ACE}, {0x1DC0, 0x1DFF}, {0x1D165, 0x1D172}, {0x7FD, 0x7FD},
	{0x200B, 0x200F}, {0x2000, 0x200A}, {0x2028, 0x202F}, {0xFEFF, 0xFEFF}, {0xFFFD, 0xFFFD},
	{0x2260, 0x2260}, {0x226E, 0x226F}, {0x1FEF, 0x1FEF}, {0x37E, 0x37E}, {0x4E00, 0x4E10},
	{0x2B810, 0x2B930}, {0xF900, 0xF910}, {0xAC00, 0xAC20}, {0x11938, 0x11938},
	{0xA7CB, 0xA7DC}, {0x1C89, 0x1C8A}, {0x1F600, 0x1F64F}, {0xE0001, 0xE0001},
	{0x10FFFF, 0x10FFFF}, {0x16FF0, 0x16FF1}, {0x0F71, 0x0F84}, {0x302A, 0x302F},
};

static size_t put_utf8(char *s, uint32_t c)
{
	if (c < 0x80)
		return s[0] = (char)c, 1;
	if (c < 0x800)
		return s[0] = (char)(0xC0 | c >> 6), s[1] = (char)(0x80 | (c & 0x3F)), 2;
	if (c < 0x10000)
		return s[0] = (char)(0xE0 | c >> 12), s[1] = (char)(0x80 | (c >> 6 & 0x3F)),
		       s[2] = (char)(0x80 | (c & 0x3F)), 3;
	return s[0] = (char)(0xF0 | c >> 18), s[1] = (char)(0x80 | (c >> 12 & 0x3F)),
	       s[2] = (char)(0x80 | (c >> 6 & 0x3F)), s[3] = (char)(0x80 | (c & 0x3F)), 4;
}

static void check(const tokenizer *t, const char *text, size_t size)
{
	size_t vocab = tokenizer_vocab_size(t);
	int32_t *full = malloc((size + 1) * sizeof *full);
	int32_t *part = malloc((size + 2) * sizeof *part);
	emb_err err = {0};
	long n = tokenizer_encode(t, text, size, full, size + 1, &err);
	if (n < 0 && (err.code != EMB_EINVAL || !strstr(err.msg, "byte offset")))
		__builtin_trap();
	if (n > (long)size) /* every id covers at least one byte */
		__builtin_trap();
	for (long i = 0; i < n; i++)
		if (full[i] < 0 || (size_t)full[i] >= vocab || !tokenizer_id_to_token(t, full[i]))
			__builtin_trap();
	/* With offsets: the same ids, and each a non-empty byte range inside the text. */
	if (n >= 0) {
		int32_t *ids2 = malloc((size + 1) * sizeof *ids2);
		size_t *off = malloc(2 * (size + 1) * sizeof *off);
		if (tokenizer_encode_offsets(t, text, size, ids2, off, size + 1, &err) != n ||
		    (n && memcmp(ids2, full, (size_t)n * sizeof *full)))
			__builtin_trap();
		for (long i = 0; i < n; i++)
			if (off[2 * i] >= off[2 * i + 1] || off[2 * i + 1] > size)
				__builtin_trap();
		free(ids2);
		free(off);
	}

	size_t caps[] = {0, 1, 2, 3, 5, n > 0 ? (size_t)n / 2 : 7, n > 0 ? (size_t)n - 1 : 9,
			 n > 0 ? (size_t)n : 11, size};
	for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
		size_t cap = caps[c] <= size ? caps[c] : size;
		part[cap] = -7;
		emb_err perr = {0};
		long m = tokenizer_encode(t, text, size, part, cap, &perr);
		if (part[cap] != -7 || m > (long)cap)
			__builtin_trap();
		/* Past the cap the text is not read, so an error there may go unseen; an error
		 * before it must be the same error. */
		if (m < 0 && n >= 0)
			__builtin_trap();
		if (n >= 0 && (m != ((long)cap < n ? (long)cap : n) ||
			       memcmp(part, full, (size_t)m * sizeof *part) != 0))
			__builtin_trap();
		if (n < 0 && m >= 0 && m != (long)cap)
			__builtin_trap();
	}
	free(full);
	free(part);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const tokenizer *t = toks[!size ? 0 : data[0] & 1 ? 1 : data[0] & 4 ? 2 : 0];
	if (size < 1 || !(data[0] & 2)) {
		check(t, (const char *)data, size);
		return 0;
	}
	size_t npicks = (size - 1) / 2, ranges = sizeof interesting / sizeof interesting[0];
	char *text = malloc(npicks * 4 + 1);
	size_t len = 0;
	for (size_t i = 0; i < npicks; i++) {
		unsigned v = data[1 + 2 * i] | (unsigned)data[2 + 2 * i] << 8;
		const uint32_t *r = interesting[v % ranges];
		len += put_utf8(text + len, r[0] + (v / ranges) % (r[1] - r[0] + 1));
	}
	check(t, text, len);
	free(text);
	return 0;
}
