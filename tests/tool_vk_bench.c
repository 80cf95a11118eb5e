/* tool_vk_bench — the measuring half of scripts/bench-gpu: CPU (forward_cpu) against GPU
 * (forward_vk) on the same pre-tokenized documents, model only (tokenization is timed
 * separately by the script), plus the GPU's accuracy against the CPU.
 *
 *   tool_vk_bench tokenize MODEL_DIR CORPUS.jsonl IDS.bin     (title + " " + text, truncated
 *       as sentence-transformers does; needs the tokenizer, so it runs where the model is)
 *   tool_vk_bench run MODEL_DIR IDS.bin [--batches 1,2,10,50,100,1000] [--precision P]
 *       [--threads N] [--no-cpu] [--check] [--gpu N (lavapipe allowed)] [--max-batches N]
 *       [--budget TOKENS (tokens per pass through the activations)]
 *   tool_vk_bench open MODEL_DIR [--gpu N] [--precision P]
 *       (start-up only: loads the weights, opens the backend and runs one 8-token text,
 *       and prints one line with the three times and what the pipeline cache gave; run it
 *       twice with a fresh XDG_CACHE_HOME for a cold and a warm start. The first batch
 *       counts because some drivers, lavapipe among them, compile at the first dispatch)
 *
 * IDS.bin: uint32 document count, then per document a uint32 length and that many int32 ids.
 * Documents are sorted by length and each batch is B consecutive documents (length-sorted
 * batches, as sentence-transformers and the PyTorch reference run them); for small B an
 * evenly spaced subset of the batches is timed so the mean length stays the corpus's.
 * GPU throughput keeps two batches in flight (forward_vk_submit/wait); latency is the
 * median of synchronous single batches. Output: a Markdown table on stdout. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "embed.h"
#include "forward_vk.h"
#include "vk_ctx.h"
#include "model.h"
#include "threadpool.h"

#include "benchutil.h"

#define WARM_S 1.0  /* seconds of GPU warm-up before each batch size is timed */
#define TIMED_S 1.0 /* seconds timed, at least, per batch size */

static int tokenize(const char *model, const char *corpus, const char *out)
{
	embed_options o;
	embed_options_default(&o);
	embed_model *m;
	emb_err err;
	if (embed_open(model, &o, &m, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	FILE *in = fopen(corpus, "r"), *f = fopen(out, "wb");
	if (!in || !f) {
		perror(!in ? corpus : out);
		return 1;
	}
	uint32_t n = 0;
	fwrite(&n, 4, 1, f);
	char *line = NULL;
	size_t cap = 0;
	int32_t ids[1024];
	double t0 = now();
	while (getline(&line, &cap, in) > 0) {
		json_t *j = json_loads(line, 0, NULL);
		const char *ti = json_string_value(json_object_get(j, "title"));
		const char *tx = json_string_value(json_object_get(j, "text"));
		size_t len = (ti ? strlen(ti) : 0) + (tx ? strlen(tx) : 0) + 2;
		char *doc = malloc(len);
		snprintf(doc, len, "%s %s", ti ? ti : "", tx ? tx : "");
		/* MTEB strips the joined text */
		char *s = doc;
		while (*s == ' ')
			s++;
		size_t sl = strlen(s);
		while (sl && s[sl - 1] == ' ')
			s[--sl] = 0;
		long k = embed_tokenize(m, s, sl, EMBED_PREFIX_NONE, ids, (size_t)embed_max_tokens(m), &err);
		if (k > 0) {
			uint32_t u = (uint32_t)k;
			fwrite(&u, 4, 1, f);
			fwrite(ids, 4, (size_t)k, f);
			n++;
		}
		free(doc);
		json_decref(j);
	}
	double t = now() - t0;
	fseek(f, 0, SEEK_SET);
	fwrite(&n, 4, 1, f);
	fclose(f);
	fclose(in);
	free(line);
	embed_close(m);
	fprintf(stderr, "tokenized %u documents in %.2f s (%.0f docs/s, JSON parsing included)\n", n, t,
		n / t);
	return 0;
}

typedef struct doc { int len; int32_t *ids; } doc;

static int by_len(const void *a, const void *b)
{
	return ((const doc *)a)->len - ((const doc *)b)->len;
}

/* Batch b of size B: its documents packed into ids/offs. */
static void make_batch(const doc *d, int first, int B, int32_t *ids, int *offs, fwd_batch *bt)
{
	offs[0] = 0;
	for (int i = 0; i < B; i++) {
		memcpy(ids + offs[i], d[first + i].ids, (size_t)d[first + i].len * 4);
		offs[i + 1] = offs[i] + d[first + i].len;
	}
	*bt = (fwd_batch){ .n = B, .ids = ids, .offs = offs };
}

/* tool_vk_bench open: the start-up a tool pays before its first batch. */
static int open_only(int argc, char **argv)
{
	vk_options vo;
	vk_options_default(&vo);
	vk_settings_from_env(&vo.set); /* the pipeline cache's directory and switch included */
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--gpu") && i + 1 < argc)
			vo.gpu_index = atoi(argv[++i]), vo.allow_cpu = 1;
		else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
			i++;
			vo.precision = !strcmp(argv[i], "fp32") ? VK_PREC_FP32
				       : !strcmp(argv[i], "fp16") ? VK_PREC_FP16
				       : !strcmp(argv[i], "int8") ? VK_PREC_INT8 : VK_PREC_DEFAULT;
		} else {
			fprintf(stderr, "unknown option %s\n", argv[i]);
			return 2;
		}
	}
	bert_config cfg;
	bert_weights w;
	emb_err err;
	double t0 = now();
	if (bert_config_load(argv[2], &cfg, &err) || bert_weights_load(argv[2], &cfg, &w, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	double t_load = now() - t0;
	t0 = now();
	vk_backend *vb;
	if (vk_backend_open(&cfg, &w, &vo, &vb, &err)) {
		fprintf(stderr, "GPU: %s\n", err.msg);
		bert_weights_free(&w);
		return 1;
	}
	double t_open = now() - t0;
	static const int32_t ids[] = { 101, 1996, 4937, 2938, 2006, 1996, 13523, 102 };
	fwd_batch bt = { .n = 1, .ids = ids, .offs = (int[]){ 0, 8 } };
	float *out = malloc((size_t)cfg.hidden * sizeof *out);
	t0 = now();
	int rc = forward_vk(vb, &bt, out, &err);
	double t_first = now() - t0;
	free(out);
	if (rc) {
		fprintf(stderr, "GPU: %s\n", err.msg);
		vk_backend_close(vb);
		bert_weights_free(&w);
		return 1;
	}
	const vk_ctx *c = vk_backend_ctx(vb);
	printf("open: weights %.3f s, backend (device, pipelines, upload) %.3f s, first batch "
	       "%.3f s, total %.3f s; %s, %s; pipeline cache: %s, loaded %zu bytes, file %zu "
	       "bytes\n", t_load, t_open, t_first, t_load + t_open + t_first,
	       vk_backend_device_name(vb), vk_backend_precision_name(vb),
	       !c->pcache ? "off" : c->pcache_path[0] ? c->pcache_path : "this process only",
	       c->pcache_loaded, c->pcache_size);
	char times[256];
	vk_backend_open_times(vb, times, sizeof times);
	printf("backend open: %s\n", times);
	vk_backend_close(vb);
	bert_weights_free(&w);
	/* The product's start-up: embed_open reads config, tokenizer and weights while a
	 * thread makes the device ready (the steps above run one after another). */
	embed_options eo;
	embed_options_default(&eo);
	eo.device = EMBED_DEVICE_GPU;
	eo.gpu_index = vo.gpu_index;
	eo.precision = vo.precision == VK_PREC_FP32 ? EMBED_PRECISION_FP32
		       : vo.precision == VK_PREC_FP16 ? EMBED_PRECISION_FP16
		       : vo.precision == VK_PREC_INT8 ? EMBED_PRECISION_INT8 : eo.precision;
	embed_model *m;
	t0 = now();
	if (embed_open(argv[2], &eo, &m, &err)) {
		fprintf(stderr, "embed_open: %s\n", err.msg);
		return 1;
	}
	printf("embed_open (config, tokenizer, weights; device beside them): %.3f s; %s\n",
	       now() - t0, embed_device_name(m));
	embed_close(m);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "tokenize"))
		return tokenize(argv[2], argv[3], argv[4]);
	if (argc >= 3 && !strcmp(argv[1], "open"))
		return open_only(argc, argv);
	if (argc < 4 || strcmp(argv[1], "run")) {
		fprintf(stderr, "usage: tool_vk_bench tokenize MODEL_DIR CORPUS.jsonl IDS.bin\n"
				"       tool_vk_bench open MODEL_DIR [--gpu N] [--precision P]\n"
				"       tool_vk_bench run MODEL_DIR IDS.bin [--batches LIST] [--precision "
				"fp32|fp16|int8|default] [--threads N] [--no-cpu] [--check] [--gpu N] [--max-batches N] [--budget TOKENS]\n");
		return 2;
	}
	const char *model = argv[2], *idsfile = argv[3];
	char batches_s[256] = "1,2,10,50,100,1000";
	vk_options vo;
	vk_options_default(&vo);
	vk_settings_from_env(&vo.set); /* EMBED_VK_PROFILE and the kernel switches, as the tools read them */
	int threads = 0, no_cpu = 0, check = 0, max_batches = 0, check_every = 1;
	for (int i = 4; i < argc; i++) {
		if (!strcmp(argv[i], "--batches") && i + 1 < argc)
			snprintf(batches_s, sizeof batches_s, "%s", argv[++i]);
		else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
			i++;
			vo.precision = !strcmp(argv[i], "fp32") ? VK_PREC_FP32
				       : !strcmp(argv[i], "fp16") ? VK_PREC_FP16
				       : !strcmp(argv[i], "int8") ? VK_PREC_INT8 : VK_PREC_DEFAULT;
		} else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			threads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--gpu") && i + 1 < argc)
			vo.gpu_index = atoi(argv[++i]), vo.allow_cpu = 1; /* explicit: lavapipe too */
		else if (!strcmp(argv[i], "--budget") && i + 1 < argc)
			vo.token_budget = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--max-batches") && i + 1 < argc)
			max_batches = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--no-cpu"))
			no_cpu = 1;
		else if (!strcmp(argv[i], "--check"))
			check = 1;
		else if (!strcmp(argv[i], "--check-every") && i + 1 < argc)
			check = 1, check_every = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 1;
		else {
			fprintf(stderr, "unknown option %s\n", argv[i]);
			return 2;
		}
	}

	FILE *f = fopen(idsfile, "rb");
	uint32_t n = 0;
	if (!f || fread(&n, 4, 1, f) != 1 || n == 0) {
		fprintf(stderr, "%s: cannot read\n", idsfile);
		return 1;
	}
	doc *d = calloc(n, sizeof *d);
	long total_tok = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t len;
		if (fread(&len, 4, 1, f) != 1 || len == 0 || len > 65536) { /* JinaBERT: 8192 */
			fprintf(stderr, "%s: corrupt\n", idsfile);
			return 1;
		}
		d[i].len = (int)len;
		d[i].ids = malloc(len * 4);
		if (fread(d[i].ids, 4, len, f) != len) {
			fprintf(stderr, "%s: truncated\n", idsfile);
			return 1;
		}
		total_tok += len;
	}
	fclose(f);
	qsort(d, n, sizeof *d, by_len);

	bert_config cfg;
	bert_weights w;
	emb_err err;
	double t0 = now();
	if (bert_config_load(model, &cfg, &err) || bert_weights_load(model, &cfg, &w, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	double t_load = now() - t0;
	threadpool *pool = threadpool_create(threads);
	t0 = now();
	vk_backend *vb;
	if (vk_backend_open(&cfg, &w, &vo, &vb, &err)) {
		fprintf(stderr, "GPU: %s\n", err.msg);
		return 1;
	}
	double t_open = now() - t0;
	const int H = cfg.hidden;
	printf("GPU: %s, precision %s; CPU: %d threads. %u documents, %.1f tokens each on average.\n",
	       vk_backend_device_name(vb), vk_backend_precision_name(vb), threadpool_size(pool), n,
	       (double)total_tok / n);
	printf("Model load %.3f s; GPU backend open (device, pipelines, weight upload) %.3f s.\n\n",
	       t_load, t_open);

	int32_t *ids = malloc((size_t)total_tok * 4);
	int *offs = malloc(((size_t)n + 1) * sizeof *offs);
	float *out_c = malloc((size_t)n * H * 4), *out_g = malloc((size_t)n * H * 4);
	float *out_g2 = malloc((size_t)n * H * 4);
	fwd_batch bt;

	if (check) {
		/* Every document: GPU (this precision) against CPU fp32, in batches of 256. */
		double min_cos = 1, max_diff = 0, sum_cos = 0;
		int nonfinite = 0, checked = 0, below999 = 0, below9995 = 0;
		/* every check_every-th document (all lengths), in batches of up to 256 */
		uint32_t nsel = (n + (uint32_t)check_every - 1) / (uint32_t)check_every;
		doc *sel = malloc(nsel * sizeof *sel);
		for (uint32_t i = 0; i < nsel; i++)
			sel[i] = d[i * (uint32_t)check_every];
		/* EMBED_CHECK_REF=FILE keeps the CPU's vectors between runs (read when the file
		 * holds as many, else computed and written): several GPU settings checked against
		 * one CPU pass, which takes most of a check's time */
		const char *refp = getenv("EMBED_CHECK_REF");
		float *ref_all = malloc((size_t)nsel * H * 4);
		int have_ref = 0;
		FILE *rf = refp ? fopen(refp, "rb") : NULL;
		if (rf) {
			have_ref = fread(ref_all, 4, (size_t)nsel * H, rf) == (size_t)nsel * H &&
				   fgetc(rf) == EOF;
			fclose(rf);
		}
		for (uint32_t s = 0; s < nsel; s += 256) {
			int B = (int)(nsel - s < 256 ? nsel - s : 256);
			make_batch(sel, (int)s, B, ids, offs, &bt);
			checked += B;
			if (have_ref)
				memcpy(out_c, ref_all + (size_t)s * H, (size_t)B * H * 4);
			if ((!have_ref && forward_cpu(&cfg, &w, pool, &bt, out_c, &err)) ||
			    forward_vk(vb, &bt, out_g, &err)) {
				fprintf(stderr, "check: %s\n", err.msg);
				return 1;
			}
			memcpy(ref_all + (size_t)s * H, out_c, (size_t)B * H * 4);
			for (int i = 0; i < B; i++) {
				double dot = 0, na = 0, nb = 0;
				for (int k = 0; k < H; k++) {
					double a = out_c[(size_t)i * H + k], b = out_g[(size_t)i * H + k];
					nonfinite += !isfinite(b);
					dot += a * b;
					na += a * a;
					nb += b * b;
					if (fabs(a - b) > max_diff)
						max_diff = fabs(a - b);
				}
				double c = dot / sqrt(na * nb);
				if (!(c >= min_cos))
					min_cos = c;
				sum_cos += c;
				below999 += !(c >= 0.999);
				below9995 += !(c >= 0.9995);
			}
		}
		free(sel);
		if (refp && !have_ref && (rf = fopen(refp, "wb"))) {
			fwrite(ref_all, 4, (size_t)nsel * H, rf);
			fclose(rf);
		}
		free(ref_all);
		printf("Accuracy, GPU %s vs CPU fp32 (same weights), %d documents (every %d-th of the "
		       "length-sorted corpus): min cosine %.6f, max |diff| %.3g, non-finite %d; mean "
		       "cosine %.6f, below 0.999: %d, below 0.9995: %d\n\n",
		       vk_backend_precision_name(vb), checked, check_every, min_cos, max_diff, nonfinite,
		       sum_cos / (checked ? checked : 1), below999, below9995);
	}

	printf("| batch | CPU ms/batch | CPU docs/s | GPU ms/batch | GPU docs/s | GPU tokens/s | "
	       "speedup | GPU latency p50 ms |\n|---|---|---|---|---|---|---|---|\n");
	int crossover = -1;
	for (char *tok = strtok(batches_s, ","); tok; tok = strtok(NULL, ",")) {
		int B = atoi(tok);
		if (B < 1 || (uint32_t)B > n)
			continue;
		int total_batches = (int)(n / (uint32_t)B);
		int nb = B >= 50 ? total_batches : (1000 / B > 20 ? 1000 / B : 20);
		if (nb > total_batches)
			nb = total_batches;
		if (max_batches > 0 && nb > max_batches)
			nb = max_batches;
		int *first = malloc((size_t)nb * sizeof *first);
		long docs = 0, toks = 0;
		for (int j = 0; j < nb; j++) {
			first[j] = nb == 1 ? 0 : (int)((long)j * (long)(n - (uint32_t)B) / (nb - 1));
			docs += B;
			for (int i = 0; i < B; i++)
				toks += d[first[j] + i].len;
		}
		/* pack every timed batch up front, so the loops time the model alone */
		int32_t **bids = malloc((size_t)nb * sizeof *bids);
		int **boffs = malloc((size_t)nb * sizeof *boffs);
		fwd_batch *bb = malloc((size_t)nb * sizeof *bb);
		for (int j = 0; j < nb; j++) {
			long bt_tok = 0;
			for (int i = 0; i < B; i++)
				bt_tok += d[first[j] + i].len;
			bids[j] = malloc((size_t)bt_tok * 4);
			boffs[j] = malloc(((size_t)B + 1) * sizeof(int));
			make_batch(d, first[j], B, bids[j], boffs[j], &bb[j]);
		}
		/* Warm-up, at least WARM_S seconds: an idle GPU runs at a low clock (an H200 at
		 * 345 MHz of 1980) and takes a fraction of a second to ramp up, so one warm-up
		 * batch left a large batch's timing partly at the idle clock. */
		for (double t0 = now(), t = t0; t - t0 < WARM_S; t = now())
			if (forward_vk(vb, &bb[0], out_g, &err)) {
				fprintf(stderr, "GPU: %s\n", err.msg);
				return 1;
			}
		vk_backend_profile_reset(vb); /* the report covers the last batch size's runs */
		/* timed: whole passes over the batches, at least TIMED_S seconds */
		int passes = 0;
		double tg = now();
		do {
			for (int j = 0; j < nb; j++) {
				if (forward_vk_submit(vb, &bb[j], j % 2 ? out_g : out_g2, &err)) {
					fprintf(stderr, "GPU: %s\n", err.msg);
					return 1;
				}
			}
			passes++;
		} while (now() - tg < TIMED_S);
		if (forward_vk_wait(vb, &err) || forward_vk_wait(vb, &err)) {
			fprintf(stderr, "GPU: %s\n", err.msg);
			return 1;
		}
		tg = (now() - tg) / passes;
		int nl = nb < 50 ? nb : 50;
		double *lat = malloc((size_t)nl * sizeof *lat);
		for (int j = 0; j < nl; j++) {
			double t = now();
			forward_vk(vb, &bb[j * nb / nl], out_g, &err);
			lat[j] = now() - t;
		}
		qsort(lat, (size_t)nl, sizeof *lat, cmp_double);
		double tc = 0;
		if (!no_cpu) {
			if (B < 100) /* warm-up; large batches warm themselves */
				forward_cpu(&cfg, &w, pool, &bb[0], out_c, &err);
			/* the CPU is timed on a spread subset of the same batches (it is slow) */
			int ncb = 200 / B > 2 ? 200 / B : 2;
			if (ncb > nb)
				ncb = nb;
			long cdocs = 0;
			tc = now();
			for (int j = 0; j < ncb; j++) {
				forward_cpu(&cfg, &w, pool, &bb[j * nb / ncb], out_c, &err);
				cdocs += B;
			}
			tc = (now() - tc) / ncb * nb; /* scaled to the same batches */
			(void)cdocs;
		}
		double gms = tg / nb * 1e3, cms = tc / nb * 1e3;
		/* two decimals where docs/s is small (8192-token JinaBERT texts) */
		const int dp = docs / tg < 100 ? 2 : 0;
		if (!no_cpu)
			printf("| %d | %.2f | %.*f | %.3f | %.*f | %.0f | %.1fx | %.3f |\n", B, cms,
			       docs / tc < 100 ? 2 : 0, docs / tc, gms, dp, docs / tg, toks / tg, tc / tg,
			       lat[nl / 2] * 1e3);
		else
			printf("| %d | - | - | %.3f | %.*f | %.0f | - | %.3f |\n", B, gms, dp, docs / tg,
			       toks / tg, lat[nl / 2] * 1e3);
		fflush(stdout);
		if (!no_cpu && crossover < 0 && lat[nl / 2] * 1e3 < cms)
			crossover = B;
		for (int j = 0; j < nb; j++) {
			free(bids[j]);
			free(boffs[j]);
		}
		free(bids);
		free(boffs);
		free(bb);
		free(first);
		free(lat);
	}
	if (crossover > 0)
		printf("\nCrossover: the GPU's synchronous batch latency beats the CPU from batch %d on "
		       "(smallest batch size measured).\n", crossover);
	vk_backend_profile_report(vb, stdout);
	vk_backend_close(vb);
	threadpool_destroy(pool);
	bert_weights_free(&w);
	for (uint32_t i = 0; i < n; i++)
		free(d[i].ids);
	free(d);
	free(ids);
	free(offs);
	free(out_c);
	free(out_g);
	free(out_g2);
	return 0;
}
