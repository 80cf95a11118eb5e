/* embed.c — the public API (embed.h): ties the model files, the tokenizer and the forward
 * passes together, and owns the policy of which device runs a batch. */
#include "embed.h"
#include "embed_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_dir.h"
#include "forward.h"
#include "forward_vk.h"
#include "vk_ctx.h"
#include "model.h"
#include "sha256.h"
#include "tokenizer.h"
#include "utf8.h"

/* Tokens per forward pass. Bounds scratch memory (~15 KB a token for MiniLM shapes) whatever
 * the number of texts a caller hands us. */
#define CPU_BATCH_TOKENS 8192


struct embed_model {
	char dir[PATH_MAX];
	char name[256];
	char sha256[65];
	embed_options opt;
	bert_config cfg;
	bert_weights w;
	tokenizer *tok;
	threadpool *pool;
	pthread_mutex_t lock; /* serialises encoding: the pool runs one loop at a time */
	char device_name[256];
	vk_backend *gpu;      /* NULL: CPU only (see gpu_open) */
	int gpu_min_batch;    /* auto policy: batches of at least this many texts go to the GPU */
	/* embed_submit_tokens' batches not yet returned by embed_wait, oldest first: at most
	 * ASYNC_SLOTS, as forward_vk_submit keeps in flight. */
	struct async_batch {
		const int32_t *const *seqs;
		const int *lens;
		int n;
		float *out;
		int done;          /* finished (rc, msg); else still on the GPU */
		int rc;
		char msg[sizeof(((emb_err *)0)->msg)];
	} async[2];
	int async_head, async_n;
	int32_t *pack_ids;    /* packing buffer of the async GPU path (forward_vk_submit copies) */
	int *pack_offs;
	size_t pack_ids_cap, pack_offs_cap;
	int cpu_calls;  /* CPU encodes so far, while the fp32 weights are unpacked */
	int cpu_packed; /* bert_weights_pack has run */
};
/* A CPU call of at least this many tokens packs the fp32 weights at once: a product's panels
 * laid out on the fly cost about as much as 8-16 rows of the product itself. */
#define CPU_PACK_TOKENS 64
#define ASYNC_SLOTS 2

void embed_fetched_model_dir(const char *name, char *buf, size_t size)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	char *slash = NULL;
	if (n > 0) {
		exe[n] = 0;
		slash = strrchr(exe, '/'); /* .../bin/embed -> .../bin */
		if (slash) {
			*slash = 0;
			slash = strrchr(exe, '/'); /* .../bin -> ... */
		}
	}
	if (!slash) {
		snprintf(buf, size, ".cache/models/%s", name);
		return;
	}
	*slash = 0;
	/* A build tree keeps the fetched model in .cache/; an installed tree (make
	 * install-model) under share/embedstore/. */
	snprintf(buf, size, "%s/.cache/models/%s", exe, name);
	if (access(buf, F_OK) != 0) {
		char inst[PATH_MAX + 256];
		snprintf(inst, sizeof inst, "%s/share/embedstore/models/%s", exe, name);
		if (access(inst, F_OK) == 0)
			snprintf(buf, size, "%s", inst);
	}
}

void embed_default_model_dir(char *buf, size_t size)
{
	const char *env = getenv("EMBED_MODEL");
	if (env && *env)
		snprintf(buf, size, "%s", env);
	else
		embed_fetched_model_dir(EMBED_DEFAULT_MODEL, buf, size);
}

void embed_options_default(embed_options *opt)
{
	memset(opt, 0, sizeof *opt);
	opt->device = EMBED_DEVICE_CPU;
	opt->precision = EMBED_PRECISION_DEFAULT;
	opt->gpu_index = -1;
}

/* --- the GPU (Vulkan) side: device choice and the auto policy ---------------------------- */

/* Batches of at least this many texts go to the GPU under EMBED_DEVICE_AUTO. Measured on an
 * H200 (docs/bench-gpu.md) the GPU already wins at batch 1 for a 240-token document (1.4 ms
 * against 36 ms); single texts stay on the CPU all the same, as the hybrid policy
 * asks: a lone search query is short, and the CPU path needs no GPU to be present, awake or
 * shared. EMBED_GPU_MIN_BATCH overrides (1 = everything on the GPU). */
#define GPU_MIN_BATCH_DEFAULT 2

/* The Vulkan backend is opened in two steps beside the rest of embed_open: a thread makes
 * the device ready (vk_backend_prepare: instance, device, pipelines, buffers) while this one
 * reads the tokenizer and the weights, then the weights go up (vk_backend_upload). On an H100
 * that hid the weights' ~0.13 s in a warm start-up of ~0.6 s. */
typedef struct gpu_job {
	bert_config cfg;
	vk_options vo;
	vk_backend *b;
	int rc, started;
	emb_err err;
	pthread_t th;
} gpu_job;

static void *gpu_prepare_run(void *arg)
{
	gpu_job *j = arg;
	j->rc = vk_backend_prepare(&j->cfg, &j->vo, &j->b, &j->err);
	return NULL;
}

/* Starts making the device ready when opt->device asks for one (j->started); without a
 * thread to spare it does so here. */
static void gpu_begin(embed_model *m, const embed_options *opt, gpu_job *j)
{
	memset(j, 0, sizeof *j);
	if (opt->device != EMBED_DEVICE_GPU && opt->device != EMBED_DEVICE_AUTO)
		return;
	j->cfg = m->cfg;
	vk_options_default(&j->vo);
	vk_settings_from_env(&j->vo.set);
	j->vo.gpu_index = opt->gpu_index;
	j->vo.allow_cpu = opt->device == EMBED_DEVICE_GPU;
	j->vo.precision = opt->precision == EMBED_PRECISION_FP32 ? VK_PREC_FP32
			  : opt->precision == EMBED_PRECISION_FP16 ? VK_PREC_FP16
			  : opt->precision == EMBED_PRECISION_INT8 ? VK_PREC_INT8 : VK_PREC_DEFAULT;
	j->vo.max_seq = m->cfg.max_tokens;
	j->started = 1;
	if (pthread_create(&j->th, NULL, gpu_prepare_run, j) != 0) {
		gpu_prepare_run(j);
		j->started = 2; /* nothing to join */
	}
}

/* Waits for gpu_begin's work; with ok (the weights are in m->w) uploads them. Explicit GPU:
 * any Vulkan device (lavapipe included), failure is an error. Auto: real GPUs only; failure
 * is one warning line and the CPU. Without ok only cleans up. */
static int gpu_finish(embed_model *m, const embed_options *opt, gpu_job *j, int ok, emb_err *err)
{
	if (!j->started)
		return EMB_OK;
	if (j->started == 1)
		pthread_join(j->th, NULL);
	j->started = 0;
	int rc = j->rc;
	emb_err e = j->err;
	if (!rc && ok)
		vk_backend_set_calibration(j->b, tokenizer_cls_id(m->tok), tokenizer_sep_id(m->tok),
					   m->pool);
	if (!rc && ok && (rc = vk_backend_upload(j->b, &m->w, &e)) == EMB_OK) {
		m->gpu = j->b;
		j->b = NULL;
	}
	vk_backend_close(j->b);
	if (!ok)
		return EMB_OK;
	if (rc) {
		if (opt->device == EMBED_DEVICE_GPU) {
			if (err) {
				*err = e;
				emb_err_prefix(err, "--device gpu: ");
			}
			return rc;
		}
		if (!opt->quiet)
			fprintf(stderr, "warning: %s; using the CPU\n", e.msg);
		return EMB_OK;
	}
	const char *env = getenv("EMBED_GPU_MIN_BATCH");
	m->gpu_min_batch = env && atoi(env) > 0 ? atoi(env) : GPU_MIN_BATCH_DEFAULT;
	if (opt->device == EMBED_DEVICE_GPU)
		m->gpu_min_batch = 1;
	snprintf(m->device_name, sizeof m->device_name, "%s, %s%s", vk_backend_device_name(m->gpu),
		 vk_backend_precision_name(m->gpu),
		 opt->device == EMBED_DEVICE_AUTO ? "; CPU for single texts" : "");
	return EMB_OK;
}

/* After a GPU error: under auto, one warning line, the GPU is closed and -1 tells the
 * caller to run the CPU path (from now on); otherwise the error stands. */
static int gpu_failed(embed_model *m, int rc, emb_err *err)
{
	if (rc != EMB_EDEVICE || m->opt.device != EMBED_DEVICE_AUTO)
		return rc;
	if (!m->opt.quiet)
		fprintf(stderr, "embed: warning: GPU failed (%s); using the CPU from now on\n",
			err ? err->msg : "device error");
	vk_backend_close(m->gpu);
	m->gpu = NULL;
	snprintf(m->device_name, sizeof m->device_name, "cpu (%d threads)", threadpool_size(m->pool));
	return -1;
}

/* Runs n sequences on the GPU in one batch (forward_vk splits by its own token budget).
 * Under auto, a device failure falls back to the CPU for good, with one warning line. */
static int gpu_encode(embed_model *m, const int32_t *const *seqs, const uint8_t *const *types,
		      const int *lens, int n, float *out, emb_err *err)
{
	size_t tokens = 0;
	for (int i = 0; i < n; i++)
		tokens += (size_t)lens[i];
	int *offs = malloc(((size_t)n + 1) * sizeof *offs);
	int32_t *ids = malloc((tokens ? tokens : 1) * sizeof *ids);
	uint8_t *ty = types ? malloc(tokens ? tokens : 1) : NULL;
	if (!offs || !ids || (types && !ty)) {
		free(offs);
		free(ids);
		free(ty);
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	}
	offs[0] = 0;
	for (int i = 0; i < n; i++) {
		memcpy(ids + offs[i], seqs[i], (size_t)lens[i] * sizeof *ids);
		if (ty)
			memcpy(ty + offs[i], types[i], (size_t)lens[i]);
		offs[i + 1] = offs[i] + lens[i];
	}
	fwd_batch b = { n, ids, offs, ty };
	int rc = forward_vk(m->gpu, &b, out, err);
	free(offs);
	free(ids);
	free(ty);
	return gpu_failed(m, rc, err);
}

/* embed_open, and embed_open_pooled when pooling >= 0 (the model's own pooling replaced, no
 * normalisation: before the GPU backend copies the configuration). */
static int open_model(const char *dir, const embed_options *opt, int pooling, embed_model **out,
		      emb_err *err)
{
	*out = NULL;
	embed_options defaults;
	if (!opt) {
		embed_options_default(&defaults);
		opt = &defaults;
	}
	/* bf16 is the CPU's precision; int8 runs on either, but the GPU's (int8 cooperative
	 * matrices, one activation scale a token: forward_vk.h) gives other vectors than the
	 * CPU's (a scale per 32 values), and a store should not mix vectors from two formats,
	 * so auto means the CPU with them; --device gpu --precision int8 asks for the GPU's. */
	embed_options cpu_only;
	const int lowp = opt->precision == EMBED_PRECISION_BF16 ||
			 opt->precision == EMBED_PRECISION_INT8;
	if (opt->precision == EMBED_PRECISION_BF16 && opt->device == EMBED_DEVICE_GPU)
		return emb_errf(err, EMB_EUNSUPPORTED, "--precision bf16 runs on the CPU only "
				"(--device cpu or auto); the GPU has fp32, fp16 and int8");
	if (lowp && opt->device == EMBED_DEVICE_AUTO) {
		cpu_only = *opt;
		cpu_only.device = EMBED_DEVICE_CPU;
		opt = &cpu_only;
	}
	struct stat sb;
	if (stat(dir, &sb) != 0)
		return emb_errf(err, EMB_EIO, "model directory %s: %s", dir, strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return emb_errf(err, EMB_EIO, "model directory %s: not a directory", dir);
	if (strlen(dir) >= PATH_MAX - 64)
		return emb_errf(err, EMB_EINVAL, "model directory path too long");

	embed_model *m = calloc(1, sizeof *m);
	if (!m)
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	snprintf(m->dir, sizeof m->dir, "%s", dir);
	size_t n = strlen(m->dir);
	while (n > 1 && m->dir[n - 1] == '/')
		m->dir[--n] = 0;
	const char *base = strrchr(m->dir, '/');
	snprintf(m->name, sizeof m->name, "%.255s", base ? base + 1 : m->dir);
	m->opt = *opt;
	pthread_mutex_init(&m->lock, NULL);

	gpu_job gj;
	int rc;
	if ((rc = bert_config_load(m->dir, &m->cfg, err)))
		goto fail;
	if (pooling >= 0) {
		m->cfg.pooling = (pool_kind)pooling;
		m->cfg.normalize = 0;
	}
	m->cfg.cpu_prec = opt->precision == EMBED_PRECISION_BF16   ? GEMM_BF16
			  : opt->precision == EMBED_PRECISION_INT8 ? GEMM_INT8 : GEMM_F32;
	if (opt->max_tokens > 0 && opt->max_tokens < m->cfg.max_tokens)
		m->cfg.max_tokens = opt->max_tokens < 2 ? 2 : opt->max_tokens;
	gpu_begin(m, opt, &gj);
	if ((rc = tokenizer_load(m->dir, &m->tok, err)) ||
	    (rc = bert_weights_load(m->dir, &m->cfg, &m->w, err)))
		goto fail_gpu;
	/* Every sequence starts with [CLS] and ends with [SEP], and every id indexes a row of
	 * the embedding table: a tokenizer that breaks either would read outside the weights. */
	if (tokenizer_cls_id(m->tok) < 0 || tokenizer_sep_id(m->tok) < 0) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: the vocabulary has no %s token, which every "
			      "sequence needs", tokenizer_file(m->tok),
			      tokenizer_cls_id(m->tok) < 0 ? "[CLS]" : "[SEP]");
		goto fail_gpu;
	}
	if (tokenizer_vocab_size(m->tok) > (size_t)m->cfg.vocab_size) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: token ids run to %zu but %s/config.json has vocab_size %d",
			      tokenizer_file(m->tok), tokenizer_vocab_size(m->tok) - 1, m->dir,
			      m->cfg.vocab_size);
		goto fail_gpu;
	}
	m->pool = threadpool_create(opt->threads);
	if (!m->pool) {
		rc = emb_errf(err, EMB_ENOMEM, "cannot start %d threads", opt->threads);
		goto fail_gpu;
	}
	snprintf(m->device_name, sizeof m->device_name, "cpu (%d threads%s%s)",
		 threadpool_size(m->pool), lowp ? ", " : "",
		 lowp ? gemm_prec_name(m->cfg.cpu_prec) : "");
	if ((rc = gpu_finish(m, opt, &gj, 1, err)))
		goto fail;
	*out = m;
	return EMB_OK;
fail_gpu:
	gpu_finish(m, opt, &gj, 0, NULL);
fail:
	embed_close(m);
	return rc;
}

int embed_open(const char *dir, const embed_options *opt, embed_model **out, emb_err *err)
{
	return open_model(dir, opt, -1, out, err);
}

int embed_open_pooled(const char *dir, const embed_options *opt, pool_kind pooling,
		      embed_model **out, emb_err *err)
{
	return open_model(dir, opt, (int)pooling, out, err);
}

const bert_config *embed_config(const embed_model *m) { return &m->cfg; }
const tokenizer *embed_tokenizer(const embed_model *m) { return m->tok; }
const char *embed_dir(const embed_model *m) { return m->dir; }

void embed_close(embed_model *m)
{
	if (!m)
		return;
	vk_backend_close(m->gpu);
	threadpool_destroy(m->pool);
	free(m->pack_ids);
	free(m->pack_offs);
	tokenizer_free(m->tok);
	bert_weights_free(&m->w);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

int embed_dim(const embed_model *m) { return m->cfg.hidden; }
int embed_max_tokens(const embed_model *m) { return m->cfg.max_tokens; }
const char *embed_model_name(const embed_model *m) { return m->name; }
const char *embed_model_family(const embed_model *m) { return m->cfg.arch.name; }
int embed_normalized(const embed_model *m) { return m->cfg.normalize; }
int embed_needs_prefix(const embed_model *m) { return m->cfg.needs_prefix; }
const char *embed_device_name(const embed_model *m) { return m->device_name; }

const char *embed_pooling_name(const embed_model *m)
{
	return m->cfg.pooling == POOL_CLS ? "cls" : m->cfg.pooling == POOL_MAX ? "max" : "mean";
}

int embed_list_devices(char *buf, size_t cap, emb_err *err)
{
	return vk_list_devices(buf, cap, err);
}

embed_device embed_device_for_batch(const embed_model *m, int n)
{
	return m->gpu && n >= m->gpu_min_batch ? EMBED_DEVICE_GPU : EMBED_DEVICE_CPU;
}

/* Hashing 90 MB of weights takes ~0.3 s, most of a one-shot search's start-up, so digests
 * are remembered in $XDG_CACHE_HOME/embedstore/weights-sha256 (else ~/.cache/...), one line
 * per file version: device, inode, size, mtime and ctime in ns, digest. Any change to the
 * file changes its ctime, so a stale line can't match; EMBED_NO_SHA_CACHE=1 turns it off. */
static int sha_cache_path(char *buf, size_t size)
{
	const char *off = getenv("EMBED_NO_SHA_CACHE");
	if (off && *off && strcmp(off, "0"))
		return 0;
	return emb_cache_dir(buf, size);
}

static void sha_key(const struct stat *sb, char *key, size_t size)
{
	snprintf(key, size, "%llu %llu %lld %lld.%09ld %lld.%09ld", (unsigned long long)sb->st_dev,
		 (unsigned long long)sb->st_ino, (long long)sb->st_size, (long long)sb->st_mtim.tv_sec,
		 sb->st_mtim.tv_nsec, (long long)sb->st_ctim.tv_sec, sb->st_ctim.tv_nsec);
}

static int sha_cache_get(const char *key, char hex[65])
{
	char dir[PATH_MAX], path[PATH_MAX + 32], line[512];
	if (!sha_cache_path(dir, sizeof dir))
		return 0;
	snprintf(path, sizeof path, "%s/weights-sha256", dir);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t klen = strlen(key);
	int found = 0;
	while (fgets(line, sizeof line, f)) {
		size_t n = strlen(line);
		if (n == klen + 1 + 64 + 1 && !strncmp(line, key, klen) && line[klen] == ' ') {
			memcpy(hex, line + klen + 1, 64);
			hex[64] = 0;
			found = strspn(hex, "0123456789abcdef") == 64;
		}
	}
	fclose(f);
	return found;
}

static void sha_cache_put(const char *key, const char hex[65])
{
	char dir[PATH_MAX], path[PATH_MAX + 32], line[512];
	if (!sha_cache_path(dir, sizeof dir))
		return;
	if (emb_cache_dir_make(dir))
		return; /* a cache we can't write is no cache, not an error */
	snprintf(path, sizeof path, "%s/weights-sha256", dir);
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return; /* a cache we can't write is no cache, not an error */
	int n = snprintf(line, sizeof line, "%s %s\n", key, hex);
	if (write(fd, line, (size_t)n) != n) { /* one short append: readers ignore the torn line */
	}
	close(fd);
}

const char *embed_model_sha256(embed_model *m)
{
	pthread_mutex_lock(&m->lock);
	if (!m->sha256[0]) {
		char path[PATH_MAX + 32], key[256];
		snprintf(path, sizeof path, "%s/model.safetensors", m->dir);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		struct stat sb;
		if (fd >= 0 && fstat(fd, &sb) == 0) {
			sha_key(&sb, key, sizeof key);
			if (!sha_cache_get(key, m->sha256)) {
				void *p = sb.st_size ? mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
				if (p != MAP_FAILED) {
					uint8_t d[32];
					sha256(p, (size_t)sb.st_size, d);
					sha256_hex(d, m->sha256);
					if (p)
						munmap(p, (size_t)sb.st_size);
					sha_cache_put(key, m->sha256);
				}
			}
		}
		if (fd >= 0)
			close(fd);
	}
	pthread_mutex_unlock(&m->lock);
	return m->sha256[0] ? m->sha256 : NULL;
}

int embed_batch_end(const int *lens, int n, int i, size_t budget)
{
	size_t tokens = (size_t)lens[i];
	int j = i + 1;
	while (j < n && tokens + (size_t)lens[j] <= budget)
		tokens += (size_t)lens[j++];
	return j;
}

long embed_tokenize(const embed_model *m, const char *text, size_t len, embed_prefix prefix,
		    int32_t *ids, size_t cap, emb_err *err)
{
	return embed_tokenize_offsets(m, text, len, prefix, ids, NULL, cap, err);
}

long embed_tokenize_offsets(const embed_model *m, const char *text, size_t len,
			    embed_prefix prefix, int32_t *ids, size_t *offsets, size_t cap,
			    emb_err *err)
{
	if (cap < 2) {
		emb_errf(err, EMB_EINVAL, "embed_tokenize: cap must be at least 2");
		return -1;
	}
	const char *pre = prefix == EMBED_PREFIX_QUERY	 ? m->cfg.query_prefix
			  : prefix == EMBED_PREFIX_PASSAGE ? m->cfg.passage_prefix
							   : "";
	size_t plen = strlen(pre);
	/* The tokenizer checks what it reads, but it stops at the truncation point; a text is
	 * refused whole. */
	long bad = utf8_invalid_at(text, len);
	if (bad >= 0) {
		emb_errf(err, EMB_EINVAL, "invalid UTF-8 at byte offset %ld", bad);
		return -1;
	}
	ids[0] = tokenizer_cls_id(m->tok);
	long n;
	if (plen) {
		/* Tokenize prefix + text as one string, exactly as sentence-transformers sees it. */
		char *joined = malloc(plen + len + 1);
		if (!joined) {
			emb_errf(err, EMB_ENOMEM, "out of memory");
			return -1;
		}
		memcpy(joined, pre, plen);
		memcpy(joined + plen, text, len);
		n = tokenizer_encode_offsets(m->tok, joined, plen + len, ids + 1,
					     offsets ? offsets + 2 : NULL, cap - 2, err);
		free(joined);
	} else {
		n = tokenizer_encode_offsets(m->tok, text, len, ids + 1, offsets ? offsets + 2 : NULL,
					     cap - 2, err);
	}
	if (n < 0)
		return -1;
	ids[n + 1] = tokenizer_sep_id(m->tok);
	if (offsets) {
		/* Specials, and the prefix's own tokens, come from no byte of the caller's text. */
		offsets[0] = offsets[1] = offsets[2 * n + 2] = offsets[2 * n + 3] = 0;
		for (long k = 1; k <= n && plen; k++)
			for (int q = 0; q < 2; q++)
				offsets[2 * k + q] = offsets[2 * k + q] > plen ? offsets[2 * k + q] - plen : 0;
	}
	return n + 2;
}

/* Encodes n tokenized sequences: on the GPU when the device policy says so (falling back
 * to the CPU if the GPU fails under auto), else through the CPU forward pass in packed
 * chunks of at most CPU_BATCH_TOKENS tokens (a single longer sequence goes alone). */
static int encode_packed(embed_model *m, const int32_t *const *seqs, const uint8_t *const *types,
			 const int *lens, int n, float *out, emb_err *err)
{
	const int H = m->cfg.hidden;
	if (embed_device_for_batch(m, n) == EMBED_DEVICE_GPU) {
		int g = gpu_encode(m, seqs, types, lens, n, out, err);
		if (g >= 0)
			return g;
	}
	/* fp32 weights stay unpacked (model.c) until a call brings enough rows to repay packing,
	 * or a second call shows the model is kept open for more: laying a product's panels out
	 * on the fly costs about what packing costs once, so one short query never packs. */
	if (!m->cpu_packed) {
		long tokens = 0;
		for (int i = 0; i < n; i++)
			tokens += lens[i];
		if (tokens >= CPU_PACK_TOKENS || m->cpu_calls++ > 0) {
			int rc = bert_weights_pack(&m->cfg, &m->w, err);
			if (rc)
				return rc;
			m->cpu_packed = 1;
		}
	}
	int *offs = malloc(((size_t)n + 1) * sizeof *offs);
	int32_t *ids = NULL;
	uint8_t *ty = NULL;
	size_t ids_cap = 0;
	int rc = EMB_OK;
	if (!offs)
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	for (int i = 0; i < n;) {
		int j = embed_batch_end(lens, n, i, CPU_BATCH_TOKENS);
		size_t tokens = 0;
		for (int k = i; k < j; k++)
			tokens += (size_t)lens[k];
		if (tokens > ids_cap) {
			int32_t *p = realloc(ids, tokens * sizeof *ids);
			if (p)
				ids = p;
			uint8_t *q = types ? realloc(ty, tokens) : NULL;
			if (q)
				ty = q;
			if (!p || (types && !q)) {
				rc = emb_errf(err, EMB_ENOMEM, "out of memory");
				break;
			}
			ids_cap = tokens;
		}
		offs[0] = 0;
		for (int k = i; k < j; k++) {
			memcpy(ids + offs[k - i], seqs[k], (size_t)lens[k] * sizeof *ids);
			if (types)
				memcpy(ty + offs[k - i], types[k], (size_t)lens[k]);
			offs[k - i + 1] = offs[k - i] + lens[k];
		}
		fwd_batch b = { j - i, ids, offs, ty };
		rc = forward_cpu(&m->cfg, &m->w, m->pool, &b, out + (size_t)i * H, err);
		if (rc)
			break;
		i = j;
	}
	free(ids);
	free(ty);
	free(offs);
	return rc;
}

static int check_tokens(const embed_model *m, const int32_t *const *seqs, const int *lens,
			int n, emb_err *err)
{
	for (int i = 0; i < n; i++) {
		if (lens[i] < 1 || lens[i] > m->cfg.max_tokens)
			return emb_errf(err, EMB_EINVAL, "sequence %d has %d tokens (allowed 1..%d)", i,
					lens[i], m->cfg.max_tokens);
		for (int k = 0; k < lens[i]; k++)
			if (seqs[i][k] < 0 || seqs[i][k] >= m->cfg.vocab_size)
				return emb_errf(err, EMB_EINVAL, "sequence %d: token id %d out of range", i,
						(int)seqs[i][k]);
	}
	return EMB_OK;
}

/* --- the asynchronous pair ----------------------------------------------------------------
 * A batch is either on the GPU (forward_vk_submit, finished by forward_vk_wait in submission
 * order) or already finished (the CPU path, a batch over the GPU's capacity, a GPU fallback):
 * its result then waits in its slot for embed_wait. Everything runs under m->lock. */

static void async_finish(struct async_batch *a, int rc, const emb_err *e)
{
	a->done = 1;
	a->rc = rc;
	snprintf(a->msg, sizeof a->msg, "%s", rc && e ? e->msg : "");
}

/* Finishes the oldest batch in flight into its slot (the slot stays queued for embed_wait).
 * A GPU failure under auto closes the GPU (gpu_failed) and redoes the batch on the CPU; the
 * other batch in flight then finds no GPU and is redone on the CPU too. */
static void async_complete_oldest(embed_model *m)
{
	struct async_batch *a = &m->async[m->async_head];
	if (a->done)
		return;
	emb_err e = {0};
	int rc = m->gpu ? forward_vk_wait(m->gpu, &e) : EMB_EDEVICE;
	if (rc == EMB_ENOMEM) /* forward_vk splits and retries; the async pair does not */
		rc = EMB_EDEVICE;
	if (rc && (!m->gpu || gpu_failed(m, rc, &e) < 0)) {
		e = (emb_err){0};
		rc = encode_packed(m, a->seqs, NULL, a->lens, a->n, a->out, &e);
	}
	async_finish(a, rc, &e);
}

/* Finishes every batch in flight (before a synchronous call needs the GPU to itself). */
static void async_complete_all(embed_model *m)
{
	for (int k = 0; k < m->async_n; k++) {
		int head = m->async_head;
		m->async_head = (m->async_head + k) % ASYNC_SLOTS;
		async_complete_oldest(m);
		m->async_head = head;
	}
}

void embed_batch_capacity(const embed_model *m, int *tokens, int *seqs)
{
	if (m->gpu) {
		vk_backend_capacity(m->gpu, tokens, seqs);
	} else {
		*tokens = CPU_BATCH_TOKENS;
		*seqs = CPU_BATCH_TOKENS;
	}
}

int embed_submit_tokens(embed_model *m, const int32_t *const *seqs, const int *lens, int n,
			float *out, emb_err *err)
{
	int rc = check_tokens(m, seqs, lens, n, err);
	if (rc)
		return rc;
	pthread_mutex_lock(&m->lock);
	if (m->async_n == ASYNC_SLOTS) {
		pthread_mutex_unlock(&m->lock);
		return emb_errf(err, EMB_EINVAL, "embed_submit_tokens: %d batches are outstanding "
				"already (call embed_wait)", ASYNC_SLOTS);
	}
	struct async_batch *a = &m->async[(m->async_head + m->async_n) % ASYNC_SLOTS];
	*a = (struct async_batch){.seqs = seqs, .lens = lens, .n = n, .out = out};
	m->async_n++;
	size_t tokens = 0;
	for (int i = 0; i < n; i++)
		tokens += (size_t)lens[i];
	int cap_tok, cap_seq;
	embed_batch_capacity(m, &cap_tok, &cap_seq);
	emb_err e = {0};
	if (n > 0 && embed_device_for_batch(m, n) == EMBED_DEVICE_GPU && tokens <= (size_t)cap_tok &&
	    n <= cap_seq) {
		if (tokens > m->pack_ids_cap || (size_t)n + 1 > m->pack_offs_cap) {
			int32_t *ids = realloc(m->pack_ids, tokens * sizeof *ids);
			if (ids) {
				m->pack_ids = ids;
				m->pack_ids_cap = tokens;
			}
			int *offs = realloc(m->pack_offs, ((size_t)n + 1) * sizeof *offs);
			if (offs) {
				m->pack_offs = offs;
				m->pack_offs_cap = (size_t)n + 1;
			}
			if (!ids || !offs) {
				async_finish(a, emb_errf(&e, EMB_ENOMEM, "out of memory"), &e);
				pthread_mutex_unlock(&m->lock);
				return EMB_OK;
			}
		}
		m->pack_offs[0] = 0;
		for (int i = 0; i < n; i++) {
			memcpy(m->pack_ids + m->pack_offs[i], seqs[i], (size_t)lens[i] * sizeof(int32_t));
			m->pack_offs[i + 1] = m->pack_offs[i] + lens[i];
		}
		fwd_batch b = {n, m->pack_ids, m->pack_offs, NULL };
		rc = forward_vk_submit(m->gpu, &b, out, &e);
		if (rc == EMB_OK) {
			pthread_mutex_unlock(&m->lock);
			return EMB_OK; /* on the GPU: embed_wait finishes it */
		}
		if (rc == EMB_ENOMEM)
			rc = EMB_EDEVICE;
		/* The failed submit left nothing on the GPU; an earlier batch may still be there. */
		if (gpu_failed(m, rc, &e) >= 0) {
			async_finish(a, rc, &e);
			pthread_mutex_unlock(&m->lock);
			return EMB_OK;
		}
	}
	/* Synchronous: the CPU, or the GPU's splitting path for a batch over its capacity. The
	 * batch before it must leave the GPU first (forward_vk uses the same slots). */
	int self = (m->async_head + m->async_n - 1) % ASYNC_SLOTS;
	for (int k = 0; k < m->async_n - 1; k++) {
		int head = m->async_head;
		m->async_head = (m->async_head + k) % ASYNC_SLOTS;
		async_complete_oldest(m);
		m->async_head = head;
	}
	e = (emb_err){0};
	rc = encode_packed(m, seqs, NULL, lens, n, out, &e);
	async_finish(&m->async[self], rc, &e);
	pthread_mutex_unlock(&m->lock);
	return EMB_OK;
}

int embed_wait(embed_model *m, emb_err *err)
{
	pthread_mutex_lock(&m->lock);
	if (m->async_n == 0) {
		pthread_mutex_unlock(&m->lock);
		return EMB_OK;
	}
	async_complete_oldest(m);
	struct async_batch *a = &m->async[m->async_head];
	int rc = a->rc;
	if (rc && err) {
		err->code = rc;
		snprintf(err->msg, sizeof err->msg, "%s", a->msg);
	}
	m->async_head = (m->async_head + 1) % ASYNC_SLOTS;
	m->async_n--;
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int embed_encode_tokens(embed_model *m, const int32_t *const *seqs, const int *lens, int n,
			float *out, emb_err *err)
{
	int rc = check_tokens(m, seqs, lens, n, err);
	if (rc)
		return rc;
	pthread_mutex_lock(&m->lock);
	async_complete_all(m);
	rc = encode_packed(m, seqs, NULL, lens, n, out, err);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int embed_encode_typed(embed_model *m, const int32_t *const *seqs, const uint8_t *const *types,
		       const int *lens, int n, float *out, emb_err *err)
{
	int rc = check_tokens(m, seqs, lens, n, err);
	if (rc)
		return rc;
	const int nt = m->cfg.arch.token_types ? m->cfg.type_vocab_size : 1;
	for (int i = 0; types && i < n; i++)
		for (int k = 0; k < lens[i]; k++)
			if (types[i][k] >= nt)
				return emb_errf(err, EMB_EINVAL, "sequence %d: token type %d out of "
						"range (the model has %d)", i, types[i][k], nt);
	pthread_mutex_lock(&m->lock);
	async_complete_all(m);
	rc = encode_packed(m, seqs, types, lens, n, out, err);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

typedef struct tok_job {
	const embed_model *m;
	const char *const *texts;
	const size_t *lens;
	embed_prefix prefix;
	int32_t *ids;   /* [n][max_tokens] */
	int *counts;
	emb_err *errs;  /* one per text, so threads fail independently */
} tok_job;

static void tokenize_one(void *arg, int i)
{
	tok_job *j = arg;
	size_t cap = (size_t)j->m->cfg.max_tokens;
	size_t len = j->lens ? j->lens[i] : strlen(j->texts[i]);
	long k = embed_tokenize(j->m, j->texts[i], len, j->prefix, j->ids + (size_t)i * cap, cap,
				&j->errs[i]);
	j->counts[i] = (int)k;
}

/* The GPU side of embed_encode: texts go to the GPU in parts, and part p+1 is tokenized
 * on the thread pool while the GPU runs part p (forward_vk_submit copies the ids, so one
 * packing buffer serves every part). Returns -1 when the CPU path should run instead: the
 * batch is below the GPU threshold, or the GPU failed under auto. Called with m->lock held. */
typedef struct tok_range { tok_job *j; int first; } tok_range;

static void tokenize_range(void *arg, int i)
{
	tok_range *r = arg;
	tokenize_one(r->j, r->first + i);
}

static int gpu_encode_texts(embed_model *m, tok_job *j, int n, float *out, emb_err *err)
{
	if (embed_device_for_batch(m, n) != EMBED_DEVICE_GPU)
		return -1;
	const size_t cap = (size_t)m->cfg.max_tokens;
	const int H = m->cfg.hidden;
	int max_tok, max_seq;
	vk_backend_capacity(m->gpu, &max_tok, &max_seq);
	int part = max_tok / (int)cap < max_seq ? max_tok / (int)cap : max_seq;
	if (part > 1024)
		part = 1024;
	if (part < 1)
		part = 1;
	int32_t *ids = malloc((size_t)part * cap * sizeof *ids);
	int *offs = malloc(((size_t)part + 1) * sizeof *offs);
	int rc = EMB_OK;
	if (!ids || !offs) {
		rc = emb_errf(err, EMB_ENOMEM, "out of memory");
		goto out;
	}
	tok_range r = { j, 0 };
	threadpool_run(m->pool, tokenize_range, &r, n < part ? n : part);
	for (int p = 0; p < n && !rc; p += part) {
		const int np = n - p < part ? n - p : part;
		offs[0] = 0;
		for (int i = 0; i < np && !rc; i++) {
			const int t = p + i, k = j->counts[t];
			if (k < 0) {
				rc = emb_errf(err, j->errs[t].code, "text %d: %s", t, j->errs[t].msg);
				break;
			}
			memcpy(ids + offs[i], j->ids + (size_t)t * cap, (size_t)k * sizeof *ids);
			offs[i + 1] = offs[i] + k;
		}
		fwd_batch b = { np, ids, offs, NULL };
		if (!rc)
			rc = forward_vk_submit(m->gpu, &b, out + (size_t)p * H, err);
		if (rc)
			break;
		if (p + np < n) { /* overlaps the GPU's work on this part */
			r.first = p + np;
			threadpool_run(m->pool, tokenize_range, &r, n - r.first < part ? n - r.first : part);
		}
		rc = forward_vk_wait(m->gpu, err);
	}
	if (rc == EMB_ENOMEM) /* forward_vk splits and retries; the async pair does not */
		rc = EMB_EDEVICE;
	rc = gpu_failed(m, rc, err);
out:
	free(ids);
	free(offs);
	return rc;
}

int embed_encode(embed_model *m, const char *const *texts, const size_t *lens, int n,
		 embed_prefix prefix, float *out, emb_err *err)
{
	if (n <= 0)
		return EMB_OK;
	size_t cap = (size_t)m->cfg.max_tokens;
	tok_job j = { m, texts, lens, prefix, malloc((size_t)n * cap * sizeof(int32_t)),
		      malloc((size_t)n * sizeof(int)), calloc((size_t)n, sizeof(emb_err)) };
	const int32_t **seqs = malloc((size_t)n * sizeof *seqs);
	int rc = EMB_OK;
	if (!j.ids || !j.counts || !j.errs || !seqs) {
		rc = emb_errf(err, EMB_ENOMEM, "out of memory for %d texts", n);
		goto out;
	}
	pthread_mutex_lock(&m->lock);
	async_complete_all(m);
	if ((rc = gpu_encode_texts(m, &j, n, out, err)) < 0) {
		rc = EMB_OK;
		threadpool_run(m->pool, tokenize_one, &j, n);
		for (int i = 0; i < n; i++) {
			if (j.counts[i] < 0) {
				rc = emb_errf(err, j.errs[i].code, "text %d: %s", i, j.errs[i].msg);
				break;
			}
			seqs[i] = j.ids + (size_t)i * cap;
		}
		if (!rc)
			rc = encode_packed(m, seqs, NULL, j.counts, n, out, err);
	}
	pthread_mutex_unlock(&m->lock);
out:
	free(j.ids);
	free(j.counts);
	free(j.errs);
	free(seqs);
	return rc;
}
