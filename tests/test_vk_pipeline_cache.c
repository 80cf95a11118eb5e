/* The persistent Vulkan pipeline cache (vk_ctx.h): with XDG_CACHE_HOME pointed at a fresh
 * directory, a first open of the backend writes the cache file and a second one loads it
 * (vk_ctx.pcache_loaded); the vectors of a batch are the same bytes with the cache, without
 * it, and from pipelines the cache gave; a file truncated, bit-flipped, with our header
 * broken, or holding another device's data is ignored (never failing the open) and replaced
 * by a good one; a cache directory that cannot be created does not fail the open;
 * EMBED_VK_PIPELINE_CACHE=0 writes nothing.
 *
 * Runs on whatever Vulkan device is chosen (lavapipe in CI); exits 77 when there is none or
 * the model is not fetched. The backend runs the model's first layer only (the pipelines are
 * those of the whole model), and the file cases build one pipeline on a bare context, to
 * stay fast on lavapipe. */
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "forward_vk.h"
#include "model.h"
#include "testutil.h"
#include "vk_ctx.h"

/* As in test_vk_forward.c: lavapipe leaks a little each time it is unloaded; one context
 * open for the whole run keeps it loaded. */
static vk_ctx keep_driver_loaded;

static bert_config cfg;
static bert_weights w;

static vk_settings env_settings(void)
{
	vk_settings s;
	vk_settings_default(&s);
	vk_settings_from_env(&s);
	return s;
}

static long file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static int read_file(const char *path, unsigned char **data, size_t *n)
{
	FILE *f = fopen(path, "rb");
	long sz = file_size(path);
	*data = NULL;
	*n = 0;
	if (!f || sz < 0)
		return f ? fclose(f), -1 : -1;
	*data = malloc((size_t)sz + 1);
	*n = fread(*data, 1, (size_t)sz, f);
	fclose(f);
	return *n == (size_t)sz ? 0 : -1;
}

static void write_whole(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

/* Whether the file at path is a whole cache of the device ctx describes: our 24-byte header
 * (magic, size, XXH3 of the data), then a Vulkan header with its vendor, device and UUID. */
static int file_valid(const vk_ctx *c, const char *path)
{
	unsigned char *d;
	size_t n;
	int ok = 0;
	if (read_file(path, &d, &n) == 0 && n >= 24 + 32) {
		uint64_t size, sum;
		uint32_t v[4];
		memcpy(&size, d + 8, 8);
		memcpy(&sum, d + 16, 8);
		memcpy(v, d + 24, sizeof v);
		ok = !memcmp(d, "EMBVKPC1", 8) && size == n - 24 && XXH3_64bits(d + 24, size) == sum &&
		     v[1] == 1 && v[2] == c->props.vendorID && v[3] == c->props.deviceID &&
		     !memcmp(d + 24 + 16, c->props.pipelineCacheUUID, VK_UUID_SIZE);
	}
	free(d);
	return ok;
}

/* Files in dir whose name starts with prefix. */
static int count_files(const char *dir, const char *prefix)
{
	DIR *d = opendir(dir);
	int n = 0;
	if (!d)
		return 0;
	for (struct dirent *e; (e = readdir(d));)
		n += !strncmp(e->d_name, prefix, strlen(prefix));
	closedir(d);
	return n;
}

/* Opens the backend with the environment's settings, checks that the cache loaded `loaded`
 * bytes (-1: any number above 0) and embeds a small batch into out. */
static void backend_run(const char *what, long loaded, float *out, char *path, size_t path_size)
{
	vk_options o;
	vk_options_default(&o);
	o.set = env_settings();
	o.allow_cpu = 1;
	o.precision = VK_PREC_FP32;
	vk_backend *b = NULL;
	emb_err err = { 0 };
	int rc = vk_backend_open(&cfg, &w, &o, &b, &err);
	CHECK(rc == EMB_OK, "%s: vk_backend_open: %s", what, err.msg);
	if (rc)
		return;
	const vk_ctx *c = vk_backend_ctx(b);
	printf("%-34s loaded %zu bytes, file %s\n", what, c->pcache_loaded,
	       c->pcache_path[0] ? c->pcache_path : "(none)");
	if (loaded < 0)
		CHECK(c->pcache_loaded > 0, "%s: nothing loaded", what);
	else
		CHECK(c->pcache_loaded == (size_t)loaded, "%s: loaded %zu bytes, not %ld", what,
		      c->pcache_loaded, loaded);
	if (path)
		snprintf(path, path_size, "%s", c->pcache_path);
	static const int32_t ids[] = { 101, 7592, 2088, 102, 101, 1996, 4937, 2003, 2006, 1996, 102 };
	fwd_batch bt = { .n = 2, .ids = ids, .offs = (int[]){ 0, 4, 11 } };
	rc = forward_vk(b, &bt, out, &err);
	CHECK(rc == EMB_OK, "%s: forward_vk: %s", what, err.msg);
	vk_backend_close(b);
}

/* A bare context with one pipeline built and the cache saved, as the backend does. */
static void ctx_run(const char *what, int want_loaded, char *path, size_t path_size)
{
	vk_settings s = env_settings();
	vk_ctx c;
	vk_pipe p;
	emb_err err = { 0 };
	int rc = vk_ctx_open(&c, -1, 1, &s, &err);
	CHECK(rc == EMB_OK, "%s: vk_ctx_open: %s", what, err.msg);
	if (rc)
		return;
	if (!path[0])
		snprintf(path, path_size, "%s", c.pcache_path);
	CHECK(!strcmp(c.pcache_path, path), "%s: file %s, not %s", what, c.pcache_path, path);
	CHECK(want_loaded ? c.pcache_loaded > 0 : c.pcache_loaded == 0, "%s: loaded %zu bytes",
	      what, c.pcache_loaded);
	rc = vk_pipe_create(&c, &p, "pool", NULL, 0, &err);
	CHECK(rc == EMB_OK, "%s: vk_pipe_create: %s", what, err.msg);
	int saved = vk_ctx_save_pipeline_cache(&c);
	printf("%-34s loaded %zu bytes, saved: %d\n", what, c.pcache_loaded, saved);
	CHECK(want_loaded ? saved == 0 : saved == 1, "%s: save gave %d", what, saved);
	CHECK(file_valid(&c, path), "%s: %s is not a valid cache after the open", what, path);
	vk_pipe_destroy(&c, &p);
	vk_ctx_close(&c);
}

int main(void)
{
	char list[2048];
	emb_err err = { 0 };
	(void)vk_ctx_open(&keep_driver_loaded, -1, 1, NULL, &err);
	int ndev = vk_list_devices(list, sizeof list, &err);
	if (ndev <= 0) {
		printf("no Vulkan device: %s\n", ndev < 0 ? err.msg : "the loader lists none");
		return 77;
	}
	if (!test_have_model()) {
		printf("model %s not fetched (make fetch-model)\n", test_model_dir());
		return 77;
	}
	if (bert_config_load(test_model_dir(), &cfg, &err) ||
	    bert_weights_load(test_model_dir(), &cfg, &w, &err)) {
		fprintf(stderr, "loading model: %s\n", err.msg);
		return 1;
	}
	cfg.layers = 1;
	const size_t vec = 2 * (size_t)cfg.hidden * sizeof(float);
	float *v_cold = malloc(vec), *v_warm = malloc(vec), *v_off = malloc(vec);
	memset(v_cold, 0, vec);
	memset(v_warm, 0xff, vec);
	memset(v_off, 0xfe, vec);

	char tmp[256], cache_home[300], dir[320], path[1024], junk[320];
	/* Mesa's own shader cache (lavapipe) also lives under XDG_CACHE_HOME: keep it where it
	 * was, so that it stays warm and this test measures only ours. */
	char mesa[1024];
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	if (!getenv("MESA_SHADER_CACHE_DIR") && (xdg || home)) {
		snprintf(mesa, sizeof mesa, "%s%s", xdg && *xdg ? xdg : home, xdg && *xdg ? "" : "/.cache");
		setenv("MESA_SHADER_CACHE_DIR", mesa, 1);
	}
	test_tmpdir(tmp);
	snprintf(cache_home, sizeof cache_home, "%s/home", tmp);
	snprintf(dir, sizeof dir, "%s/embedstore", cache_home);
	setenv("XDG_CACHE_HOME", cache_home, 1);
	unsetenv("EMBED_VK_PIPELINE_CACHE");

	/* Cold: the directory (and its parent) is created, the file written. */
	backend_run("first open (cold)", 0, v_cold, path, sizeof path);
	CHECK(!strncmp(path, dir, strlen(dir)), "cache file %s is not under %s", path, dir);
	CHECK(file_size(path) >= 24 + 32, "%s: not written (size %ld)", path, file_size(path));
	CHECK(count_files(dir, ".vk-pipelines") == 0, "a temporary file is left in %s", dir);

	/* Warm: all of it is loaded, and the vectors are the same bytes. */
	long full = file_size(path) - 24;
	backend_run("second open (warm)", full, v_warm, NULL, 0);
	CHECK(!memcmp(v_cold, v_warm, vec), "vectors differ with the cache loaded");

	/* Off: same vectors, nothing written. */
	setenv("EMBED_VK_PIPELINE_CACHE", "0", 1);
	snprintf(junk, sizeof junk, "%s/off", tmp);
	setenv("XDG_CACHE_HOME", junk, 1);
	backend_run("EMBED_VK_PIPELINE_CACHE=0", 0, v_off, NULL, 0);
	CHECK(!memcmp(v_cold, v_off, vec), "vectors differ without the cache");
	snprintf(junk, sizeof junk, "%s/off/embedstore", tmp);
	CHECK(count_files(junk, "") == 0, "EMBED_VK_PIPELINE_CACHE=0 wrote into %s", junk);
	setenv("EMBED_VK_PIPELINE_CACHE", "1", 1);

	/* A cache directory that cannot be made (XDG_CACHE_HOME is a file): the open works. */
	snprintf(junk, sizeof junk, "%s/plainfile", tmp);
	write_whole(junk, "x", 1);
	setenv("XDG_CACHE_HOME", junk, 1);
	backend_run("unwritable cache directory", 0, v_off, NULL, 0);
	CHECK(!memcmp(v_cold, v_off, vec), "vectors differ with an unwritable cache");

	/* Bad files, on a bare context with one pipeline: each is ignored and replaced. */
	snprintf(cache_home, sizeof cache_home, "%s/ctx", tmp);
	setenv("XDG_CACHE_HOME", cache_home, 1);
	path[0] = 0;
	ctx_run("one pipeline, fresh file", 0, path, sizeof path);
	ctx_run("one pipeline, warm", 1, path, sizeof path);
	unsigned char *good;
	size_t n;
	CHECK(read_file(path, &good, &n) == 0 && n >= 24 + 32, "reading %s", path);
	if (n < 24 + 32)
		return 1;
	unsigned char *bad = malloc(n);
	write_whole(path, good, n / 2);
	ctx_run("truncated file", 0, path, sizeof path);
	write_whole(path, good, 10);
	ctx_run("file shorter than our header", 0, path, sizeof path);
	write_whole(path, "", 0);
	ctx_run("empty file", 0, path, sizeof path);
	memcpy(bad, good, n);
	bad[24 + (n - 24) / 2] ^= 0x10;
	write_whole(path, bad, n);
	ctx_run("a bit flipped in the data", 0, path, sizeof path);
	memcpy(bad, good, n);
	bad[9] ^= 0x01; /* the size in our header */
	write_whole(path, bad, n);
	ctx_run("a bit flipped in our header", 0, path, sizeof path);
	/* Another device's cache, with a checksum that matches: the Vulkan header decides. */
	static const int fields[] = { 8, 12, 16 + 8 }; /* vendorID, deviceID, a UUID byte */
	for (int i = 0; i < 3; i++) {
		memcpy(bad, good, n);
		bad[24 + fields[i]] ^= 0x5a;
		uint64_t sum = XXH3_64bits(bad + 24, n - 24);
		memcpy(bad + 16, &sum, 8);
		write_whole(path, bad, n);
		ctx_run(i == 0 ? "another vendor's header" : i == 1 ? "another device's header"
				  : "another driver's UUID", 0, path, sizeof path);
	}
	free(bad);
	free(good);
	free(v_cold);
	free(v_warm);
	free(v_off);
	bert_weights_free(&w);
	vk_ctx_close(&keep_driver_loaded);
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
	if (system(cmd)) {
	}
	return test_failures ? 1 : 0;
}
