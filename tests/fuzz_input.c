/* libFuzzer harness for the indexer's JSONL parsing (indexer/input.c): on arbitrary bytes,
 * input_parse (the fast single-pass parser, falling back to jansson) must give exactly what
 * jansson alone gives: the same document or the same error, never a crash, overflow or
 * leak. Bit 0 of the first byte picks the field names (the usual ones, or odd ones where
 * one key plays two parts); the rest is the record. Build and run with `make fuzz`; seeds
 * in tests/corpus/input/.
 *
 * Compiled with input.c included, as the indexer's files are not in the engine library. */
#include "../indexer/input.c"

static int same_str(const char *a, size_t al, const char *b, size_t bl)
{
	if (!a || !b)
		return a == b && al == bl;
	return al == bl && memcmp(a, b, al) == 0 && a[al] == 0 && b[bl] == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const input_opts opts[2] = {
		{.id_fields = "_id,id", .text_field = "text", .title_field = "title", .meta_field = "metadata"},
		{.id_fields = "id,,x,_id", .text_field = "title", .title_field = "text", .meta_field = "_id"},
	};
	if (size < 1)
		return 0;
	const input_opts *o = &opts[data[0] & 1];
	const char *line = (const char *)data + 1;
	size_t len = size - 1;

	input_rec r = {.kind = INPUT_REC_JSONL, .len = len, .where = "fuzz:1"};
	r.data = malloc(len + 1);
	memcpy(r.data, line, len);
	r.data[len] = 0;
	input_doc a, b;
	emb_err ea = {0}, eb = {0};
	int ra = input_parse(o, &r, &a, &ea);
	input_rec_free(&r);

	/* jansson alone (a copy: jansson reads exactly len bytes, no NUL needed) */
	memset(&b, 0, sizeof b);
	strcpy(b.where, "fuzz:1");
	int rb = 1;
	if (parse_jsonl(o, line, len, &b, &eb)) {
		free(b.text);
		free(b.title);
		free(b.meta);
		b.text = b.title = b.meta = NULL;
		b.text_len = b.title_len = b.meta_len = 0;
		rb = -1;
	}
	int ok = ra == rb && same_str(a.id, a.id_len, b.id, b.id_len);
	if (ok && ra < 0)
		ok = ea.code == eb.code && strcmp(ea.msg, eb.msg) == 0;
	if (ok && ra > 0)
		ok = same_str(a.text, a.text_len, b.text, b.text_len) &&
		     same_str(a.title, a.title_len, b.title, b.title_len) &&
		     same_str(a.meta, a.meta_len, b.meta, b.meta_len);
	if (!ok) {
		fprintf(stderr, "fuzz_input: input_parse %d '%s' id '%s', jansson %d '%s' id '%s'\n", ra,
			ra < 0 ? ea.msg : "", a.id ? a.id : "(null)", rb, rb < 0 ? eb.msg : "", b.id ? b.id : "(null)");
		abort();
	}
	input_doc_free(&a);
	input_doc_free(&b);
	return 0;
}
