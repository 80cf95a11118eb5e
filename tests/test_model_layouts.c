/* Model loading beyond the default model: the layouts of e5-small-v2 (12 layers, 512 tokens,
 * query:/passage: prefixes) and bge-small-en-v1.5 (CLS pooling), whose weights can't be had
 * here, with generated weights of their exact shapes; f32, f16 and bf16 files holding the
 * same values must give identical vectors; and every kind of broken model directory must
 * give its documented error code and a message naming the culprit, never a crash. */
#include <math.h>
#include <stdint.h>
#include <sys/stat.h>

#include "embed.h"
#include "testutil.h"
#include "vecmath.h"

typedef struct shape { int V, H, L, I, P; } shape;
enum { F32, F16, BF16 };

/* A deterministic generator of bf16-representable values within f16's normal range, so
 * the same numbers can be written exactly as f32, f16 or bf16. */
static uint32_t rng = 12345;
static float gen_weight(float offset, float scale)
{
	rng = rng * 1664525u + 1013904223u;
	float u = ((rng >> 8) & 0xffff) / 65536.0f * 2 - 1; /* [-1, 1) */
	float v = offset + u * scale;
	if (fabsf(v) < 1.0f / 1024)
		v = v < 0 ? -1.0f / 1024 : 1.0f / 1024;
	uint32_t bits;
	memcpy(&bits, &v, 4);
	bits &= 0xffff0000u; /* truncate to bf16 */
	memcpy(&v, &bits, 4);
	return v;
}

static void put_value(FILE *f, float v, int dtype)
{
	uint32_t bits;
	memcpy(&bits, &v, 4);
	if (dtype == F32) {
		fwrite(&v, 4, 1, f);
	} else if (dtype == BF16) {
		uint16_t h = (uint16_t)(bits >> 16);
		fwrite(&h, 2, 1, f);
	} else { /* f16: exact for our values (normal range, <= 8 mantissa bits) */
		uint32_t sign = bits >> 31, exp = (bits >> 23) & 0xff, man = bits & 0x7fffff;
		uint16_t h = (uint16_t)(sign << 15 | (v == 0 ? 0 : (exp - 127 + 15) << 10 | man >> 13));
		fwrite(&h, 2, 1, f);
	}
}

typedef struct tdesc { char name[96]; long rows, cols; int kind; } tdesc; /* kind: 0 w, 1 gamma, 2 beta */

static int list_tensors(const shape *s, tdesc *t)
{
	int n = 0;
#define T(nm, r, c, k) (snprintf(t[n].name, sizeof t[n].name, "%s", nm), t[n].rows = r, t[n].cols = c, t[n++].kind = k)
	T("embeddings.word_embeddings.weight", s->V, s->H, 0);
	T("embeddings.position_embeddings.weight", s->P, s->H, 0);
	T("embeddings.token_type_embeddings.weight", 2, s->H, 0);
	T("embeddings.LayerNorm.weight", s->H, 0, 1);
	T("embeddings.LayerNorm.bias", s->H, 0, 2);
	for (int l = 0; l < s->L; l++) {
		static const struct { const char *sfx; int r, c, k; } p[] = {
			{ "attention.self.query.weight", 'H', 'H', 0 }, { "attention.self.query.bias", 'H', 0, 2 },
			{ "attention.self.key.weight", 'H', 'H', 0 }, { "attention.self.key.bias", 'H', 0, 2 },
			{ "attention.self.value.weight", 'H', 'H', 0 }, { "attention.self.value.bias", 'H', 0, 2 },
			{ "attention.output.dense.weight", 'H', 'H', 0 }, { "attention.output.dense.bias", 'H', 0, 2 },
			{ "attention.output.LayerNorm.weight", 'H', 0, 1 }, { "attention.output.LayerNorm.bias", 'H', 0, 2 },
			{ "intermediate.dense.weight", 'I', 'H', 0 }, { "intermediate.dense.bias", 'I', 0, 2 },
			{ "output.dense.weight", 'H', 'I', 0 }, { "output.dense.bias", 'H', 0, 2 },
			{ "output.LayerNorm.weight", 'H', 0, 1 }, { "output.LayerNorm.bias", 'H', 0, 2 },
		};
		for (size_t k = 0; k < sizeof p / sizeof p[0]; k++) {
			char nm[96];
			snprintf(nm, sizeof nm, "encoder.layer.%d.%s", l, p[k].sfx);
			long r = p[k].r == 'H' ? s->H : s->I;
			long c = p[k].c == 0 ? 0 : p[k].c == 'H' ? s->H : s->I;
			T(nm, r, c, p[k].k);
		}
	}
#undef T
	return n;
}

/* Writes dir/model.safetensors with every tensor of shape s in dtype; `bad_tensor` (if not
 * NULL) gets one extra row, to test shape checks. Values depend only on the seed. */
static void write_weights(const char *dir, const shape *s, int dtype, const char *bad_tensor)
{
	static tdesc t[2048];
	int n = list_tensors(s, t);
	size_t esz = dtype == F32 ? 4 : 2;
	char *hdr = malloc(1 << 20);
	size_t off = 0, hl = 0;
	hl += (size_t)sprintf(hdr + hl, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (int i = 0; i < n; i++) {
		long rows = t[i].rows + (bad_tensor && !strcmp(bad_tensor, t[i].name));
		size_t cnt = (size_t)rows * (t[i].cols ? (size_t)t[i].cols : 1);
		if (t[i].cols)
			hl += (size_t)sprintf(hdr + hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%ld,%ld],\"data_offsets\":[%zu,%zu]}",
					      t[i].name, dtype == F32 ? "F32" : dtype == F16 ? "F16" : "BF16", rows, t[i].cols, off, off + cnt * esz);
		else
			hl += (size_t)sprintf(hdr + hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%ld],\"data_offsets\":[%zu,%zu]}",
					      t[i].name, dtype == F32 ? "F32" : dtype == F16 ? "F16" : "BF16", rows, off, off + cnt * esz);
		off += cnt * esz;
	}
	hl += (size_t)sprintf(hdr + hl, "}");
	while (hl % 8)
		hdr[hl++] = ' ';
	char p[1024];
	snprintf(p, sizeof p, "%s/model.safetensors", dir);
	FILE *f = fopen(p, "wb");
	uint64_t hl64 = hl;
	fwrite(&hl64, 8, 1, f);
	fwrite(hdr, 1, hl, f);
	rng = 12345;
	for (int i = 0; i < n; i++) {
		long rows = t[i].rows + (bad_tensor && !strcmp(bad_tensor, t[i].name));
		size_t cnt = (size_t)rows * (t[i].cols ? (size_t)t[i].cols : 1);
		for (size_t k = 0; k < cnt; k++) {
			float v = t[i].kind == 1 ? gen_weight(1.0f, 0.125f) : gen_weight(0.0f, 0.0625f);
			put_value(f, v, dtype);
		}
	}
	fclose(f);
	free(hdr);
}

static void copy_tokenizer(const char *dir)
{
	static const char *files[] = { "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json" };
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		char cmd[1024];
		snprintf(cmd, sizeof cmd, "cp '%s/%s' '%s/'", test_model_dir(), files[i], dir);
		if (system(cmd) != 0)
			exit(1);
	}
}

static void write_config(const char *dir, const shape *s, const char *model_type)
{
	char buf[1024];
	int n = snprintf(buf, sizeof buf,
			 "{\"architectures\":[\"BertModel\"],\"hidden_act\":\"gelu\",\"hidden_size\":%d,"
			 "\"intermediate_size\":%d,\"layer_norm_eps\":1e-12,\"max_position_embeddings\":%d,"
			 "\"model_type\":\"%s\",\"num_attention_heads\":%d,\"num_hidden_layers\":%d,"
			 "\"position_embedding_type\":\"absolute\",\"type_vocab_size\":2,\"vocab_size\":%d}",
			 s->H, s->I, s->P, model_type, s->H / 32, s->L, s->V);
	test_write_file(dir, "config.json", buf, (size_t)n);
}

static void write_st_files(const char *dir, int H, const char *pooling, int max_seq)
{
	const char *mods = "[{\"idx\":0,\"name\":\"0\",\"path\":\"\",\"type\":\"sentence_transformers.models.Transformer\"},"
			   "{\"idx\":1,\"name\":\"1\",\"path\":\"1_Pooling\",\"type\":\"sentence_transformers.models.Pooling\"},"
			   "{\"idx\":2,\"name\":\"2\",\"path\":\"2_Normalize\",\"type\":\"sentence_transformers.models.Normalize\"}]";
	test_write_file(dir, "modules.json", mods, strlen(mods));
	char p[512], buf[512];
	snprintf(p, sizeof p, "%s/1_Pooling", dir);
	mkdir(p, 0755);
	int n = snprintf(buf, sizeof buf, "{\"word_embedding_dimension\":%d,\"pooling_mode_cls_token\":%s,"
			 "\"pooling_mode_mean_tokens\":%s,\"pooling_mode_max_tokens\":false}",
			 H, strcmp(pooling, "cls") ? "false" : "true", strcmp(pooling, "mean") ? "false" : "true");
	test_write_file(p, "config.json", buf, (size_t)n);
	if (max_seq) {
		n = snprintf(buf, sizeof buf, "{\"max_seq_length\":%d,\"do_lower_case\":false}", max_seq);
		test_write_file(dir, "sentence_bert_config.json", buf, (size_t)n);
	}
}

/* Writes a complete model directory root/name: config, tokenizer, sentence-transformers
 * files and generated weights. The path goes to dir[512]. */
static void make_model(const char *root, const char *name, const shape *s, const char *pooling,
		       int max_seq, int dtype, char dir[512])
{
	snprintf(dir, 512, "%s/%s", root, name);
	mkdir(dir, 0755);
	write_config(dir, s, "bert");
	copy_tokenizer(dir);
	write_st_files(dir, s->H, pooling, max_seq);
	write_weights(dir, s, dtype, NULL);
}

static int encode(const char *dir, const char *const *texts, int n, float *out, emb_err *err)
{
	embed_options o;
	embed_options_default(&o);
	o.threads = 2;
	embed_model *m;
	int rc = embed_open(dir, &o, &m, err);
	if (rc)
		return rc;
	rc = embed_encode(m, texts, NULL, n, EMBED_PREFIX_NONE, out, err);
	embed_close(m);
	return rc;
}

static const char *texts[] = { "query: how do vaccines work", "A much longer passage about immunology and the adaptive immune response.", "" };

static void test_e5_layout(const char *root)
{
	shape s = { 30522, 384, 12, 1536, 512 }; /* e5-small-v2, from its config.json */
	float v[3][3 * 384];
	for (int dt = F32; dt <= BF16; dt++) {
		char dir[512];
		snprintf(dir, sizeof dir, "%s/e5-small-v2-%d", root, dt);
		mkdir(dir, 0755);
		char cmd[1024];
		snprintf(cmd, sizeof cmd, "cp ../shared/models/e5-small-v2/config.json '%s/' 2>/dev/null", dir);
		if (system(cmd) != 0)
			write_config(dir, &s, "bert");
		copy_tokenizer(dir);
		write_st_files(dir, s.H, "mean", 0);
		write_weights(dir, &s, dt, NULL);
		emb_err err = { 0 };
		embed_model *m;
		int rc = embed_open(dir, NULL, &m, &err);
		CHECK(rc == EMB_OK, "e5 layout dtype %d: %s", dt, err.msg);
		if (rc)
			continue;
		CHECK(embed_dim(m) == 384, "dim %d", embed_dim(m));
		CHECK(embed_max_tokens(m) == 512, "e5 max tokens %d (tokenizer_config says 512)", embed_max_tokens(m));
		CHECK(embed_needs_prefix(m), "e5 must want query:/passage: prefixes");
		int32_t ids[16], plain[16];
		long k = embed_tokenize(m, "hello", 5, EMBED_PREFIX_QUERY, ids, 16, &err);
		long k2 = embed_tokenize(m, "query: hello", 12, EMBED_PREFIX_NONE, plain, 16, &err);
		CHECK(k == k2 && k > 3 && !memcmp(ids, plain, (size_t)k * 4), "query prefix not applied");
		embed_close(m);
		rc = encode(dir, texts, 3, v[dt], &err);
		CHECK(rc == EMB_OK, "encode: %s", err.msg);
		for (int i = 0; i < 3 * 384; i++)
			if (!isfinite(v[dt][i])) {
				CHECK(0, "non-finite output");
				break;
			}
		if (dt == F32)
			continue;
		CHECK(!memcmp(v[dt], v[F32], sizeof v[F32]), "%s file gives other vectors than the f32 file",
		      dt == F16 ? "f16" : "bf16");
	}
	for (int i = 0; i < 3; i++) {
		double ss = 0;
		for (int j = 0; j < 384; j++)
			ss += (double)v[F32][i * 384 + j] * v[F32][i * 384 + j];
		CHECK(fabs(ss - 1) < 1e-5, "vector %d not normalised: |v|^2 = %f", i, ss);
	}
}

static void test_bge_layout(const char *root)
{
	shape s = { 30522, 384, 12, 1536, 512 }; /* bge-small-en-v1.5 */
	char dir[512];
	make_model(root, "bge-small-en-v1.5", &s, "cls", 512, F16, dir);
	emb_err err = { 0 };
	embed_model *m;
	int rc = embed_open(dir, NULL, &m, &err);
	CHECK(rc == EMB_OK, "bge layout: %s", err.msg);
	if (rc)
		return;
	CHECK(!strcmp(embed_pooling_name(m), "cls"), "pooling %s", embed_pooling_name(m));
	CHECK(embed_normalized(m), "bge normalises");
	CHECK(!embed_needs_prefix(m), "bge has no required prefix");
	CHECK(embed_max_tokens(m) == 512, "max tokens %d", embed_max_tokens(m));
	/* CLS pooling: a text's vector is the [CLS] state, which attends to the whole text, so
	 * two texts differing only at the end still differ. */
	const char *t2[] = { "alpha beta gamma", "alpha beta delta" };
	float v[2 * 384];
	rc = embed_encode(m, t2, NULL, 2, EMBED_PREFIX_NONE, v, &err);
	CHECK(rc == EMB_OK, "encode: %s", err.msg);
	CHECK(memcmp(v, v + 384, 384 * sizeof(float)) != 0, "CLS pooling ignored the text");
	embed_close(m);
}

/* Broken directories: each gives a code and a message naming what is wrong. */
static void expect_error(const char *dir, int code, const char *needle)
{
	emb_err err = { 0 };
	embed_model *m = NULL;
	int rc = embed_open(dir, NULL, &m, &err);
	CHECK(rc == code, "%s: expected code %d, got %d (%s)", dir, code, rc, err.msg);
	CHECK(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", dir, err.msg, needle);
	CHECK(m == NULL, "no model on error");
	embed_close(m);
}

/* Copies the good model dir to root/name and damages the copy with a shell command run
 * inside it; the copy's path goes to bad[512]. */
static void broken_copy(const char *good, const char *root, const char *name, const char *damage,
			char bad[512])
{
	char cmd[4096];
	snprintf(bad, 512, "%s/%s", root, name);
	snprintf(cmd, sizeof cmd, "cp -r '%s' '%s' && cd '%s' && %s", good, bad, bad, damage);
	CHECK(system(cmd) == 0, "%s", cmd);
}

static void test_bad_dirs(const char *root)
{
	shape s = { 30522, 64, 2, 128, 512 };
	char dir[512];
	make_model(root, "small", &s, "mean", 128, F32, dir);
	emb_err err = { 0 };
	embed_model *m;
	CHECK(embed_open(dir, NULL, &m, &err) == EMB_OK, "small model: %s", err.msg);
	embed_close(m);

	expect_error("/nonexistent/model/dir", EMB_EIO, "/nonexistent/model/dir");

	char bad[512];
	broken_copy(dir, root, "gpt2", "true", bad);
	write_config(bad, &s, "gpt2");
	expect_error(bad, EMB_EUNSUPPORTED, "unsupported model_type 'gpt2'");
	broken_copy(dir, root, "truncated", "truncate -s 100000 model.safetensors", bad);
	expect_error(bad, EMB_EFORMAT, "model.safetensors");
	broken_copy(dir, root, "tiny", "truncate -s 5 model.safetensors", bad);
	expect_error(bad, EMB_EFORMAT, "model.safetensors");
	broken_copy(dir, root, "garbage", "printf '\\020\\000\\000\\000\\000\\000\\000\\000{not json at all'"
		    " | dd of=model.safetensors conv=notrunc status=none", bad);
	expect_error(bad, EMB_EFORMAT, "header JSON");
	broken_copy(dir, root, "noweights", "rm model.safetensors", bad);
	expect_error(bad, EMB_EIO, "model.safetensors");
	broken_copy(dir, root, "noconfig", "rm config.json", bad);
	expect_error(bad, EMB_EIO, "config.json");
	broken_copy(dir, root, "badjson", "echo '{\"model_type\": \"bert\",' > config.json", bad);
	expect_error(bad, EMB_EFORMAT, "config.json");
	broken_copy(dir, root, "wrongshape", "true", bad);
	write_weights(bad, &s, F32, "encoder.layer.1.intermediate.dense.weight");
	expect_error(bad, EMB_EFORMAT, "encoder.layer.1.intermediate.dense.weight");
	broken_copy(dir, root, "nopooling", "echo '{\"pooling_mode_mean_sqrt_len_tokens\": true}' > 1_Pooling/config.json", bad);
	expect_error(bad, EMB_EUNSUPPORTED, "pooling");
	broken_copy(dir, root, "notokenizer", "rm tokenizer.json vocab.txt", bad);
	expect_error(bad, EMB_EIO, "notokenizer");
	/* Every sequence begins with [CLS] and ends with [SEP], and every id is a row of the
	 * embedding table: a tokenizer that can't honour both is refused at open, naming it. */
	broken_copy(dir, root, "nocls", "sed -i 's/\\[CLS\\]/[XLS]/g' tokenizer.json", bad);
	expect_error(bad, EMB_EFORMAT, "nocls/tokenizer.json: the vocabulary has no [CLS] token");
	broken_copy(dir, root, "nosep", "sed -i 's/\\[SEP\\]/[XEP]/g' tokenizer.json", bad);
	expect_error(bad, EMB_EFORMAT, "nosep/tokenizer.json: the vocabulary has no [SEP] token");
	broken_copy(dir, root, "nocls-txt", "rm tokenizer.json && sed -i 's/^\\[CLS\\]$/[XLS]/' vocab.txt", bad);
	expect_error(bad, EMB_EFORMAT, "nocls-txt/vocab.txt: the vocabulary has no [CLS] token");
	broken_copy(dir, root, "bigid", "sed -i 's/\"\\[PAD\\]\":0,/\"[PAD]\":0,\"zzz\":30522,/' tokenizer.json", bad);
	expect_error(bad, EMB_EFORMAT, "bigid/tokenizer.json: token ids run to 30522 but");
	/* 1_Pooling's dimension must be the model's. */
	broken_copy(dir, root, "pooldim", "sed -i 's/\"word_embedding_dimension\":64/\"word_embedding_dimension\":65/' 1_Pooling/config.json", bad);
	expect_error(bad, EMB_EFORMAT, "pooldim/1_Pooling/config.json: word_embedding_dimension 65");
}

/* exp_approx and erf_approx on NaN (a model with broken weights feeds them NaN): NaN back,
 * without undefined behaviour (UBSan in the sanitizer pass). */
static void test_vecmath_nan(void)
{
	volatile float nan_in = NAN, inf_in = INFINITY;
	CHECK(isnan(exp_approx(nan_in)) && isnan(erf_approx(nan_in)), "exp/erf of NaN is not NaN");
	CHECK(exp_approx(-inf_in) < 1e-37f && exp_approx(inf_in) > 1e38f, "exp of -inf/inf");
	CHECK(fabsf(exp_approx(1.0f) - 2.7182817f) < 1e-6f, "exp(1) = %.9g", exp_approx(1.0f));
}

/* The weights digest is cached across processes; a changed file must never get the old one. */
static void test_sha_cache(const char *root)
{
	char dir[512], cache[512], file[600];
	snprintf(dir, sizeof dir, "%s/small", root);
	snprintf(cache, sizeof cache, "%s/cache", root);
	snprintf(file, sizeof file, "%s/model.safetensors", dir);
	setenv("XDG_CACHE_HOME", cache, 1);
	char first[65] = "", again[65] = "", changed[65] = "";
	emb_err err = { 0 };
	embed_model *m;
	for (int round = 0; round < 3; round++) {
		if (round == 2) { /* flip one weight byte in place */
			FILE *f = fopen(file, "r+b");
			CHECK(f && fseek(f, -3, SEEK_END) == 0, "open weights");
			int c = fgetc(f);
			fseek(f, -3, SEEK_END);
			fputc(c ^ 0x40, f);
			fclose(f);
		}
		CHECK(embed_open(dir, NULL, &m, &err) == EMB_OK, "%s", err.msg);
		const char *h = embed_model_sha256(m);
		CHECK(h != NULL, "no digest");
		snprintf(round == 0 ? first : round == 1 ? again : changed, 65, "%s", h ? h : "");
		embed_close(m);
	}
	char cmd[1024], direct[65] = "";
	snprintf(cmd, sizeof cmd, "sha256sum '%s'", file);
	FILE *p = popen(cmd, "r");
	CHECK(p && fscanf(p, "%64s", direct) == 1, "sha256sum");
	if (p)
		pclose(p);
	CHECK(!strcmp(first, again), "cached digest differs: %s vs %s", first, again);
	CHECK(strcmp(first, changed) != 0, "changed weights kept the old digest");
	CHECK(!strcmp(changed, direct), "digest %s, sha256sum says %s", changed, direct);
	unsetenv("XDG_CACHE_HOME");
}

int main(void)
{
	if (!test_have_model()) {
		printf("skipped: default model not fetched (scripts/fetch-model)\n");
		return 77;
	}
	char root[256];
	test_tmpdir(root);
	test_vecmath_nan();
	test_bad_dirs(root);
	test_sha_cache(root);
	test_e5_layout(root);
	test_bge_layout(root);
	if (!getenv("KEEP")) test_rm_rf(root); else printf("kept %s\n", root);
	return test_done("test_model_layouts");
}
