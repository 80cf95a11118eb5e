/* vk_settings.c — the environment's EMBED_* variables for the GPU side, read and checked in
 * one place (see vk_settings.h). */
#include "vk_settings.h"

#include "cache_dir.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vk_settings_default(vk_settings *s)
{
	memset(s, 0, sizeof *s);
	s->gpu = -1;
	s->small_tiles = -1;
	s->tiles96 = 1;
	s->int8_products = 15;
	s->int8_outliers = 8;
	s->int8_smooth_up = 1;
	s->int8_smooth_alpha = 50;
	s->fail_activations = -1;
	s->pipeline_cache = 1;
	s->queues = 1;
}

/* The variable's value when set and not empty, else NULL. */
static const char *env_value(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

/* The integer value of variable name in [lo, hi] into *out; a malformed one into s->bad. */
static void env_long(vk_settings *s, const char *name, long lo, long hi, long *out)
{
	const char *v = env_value(name);
	if (!v)
		return;
	char *end;
	errno = 0;
	long x = strtol(v, &end, 10);
	if (*end || errno || x < lo || x > hi) {
		if (!s->bad[0])
			snprintf(s->bad, sizeof s->bad, "%s=%.40s is not an integer from %ld to %ld",
				 name, v, lo, hi);
		return;
	}
	*out = x;
}

void vk_settings_from_env(vk_settings *s)
{
	long x = s->gpu;
	env_long(s, "EMBED_GPU", 0, 255, &x);
	s->gpu = (int)x;
	const char *v = env_value("EMBED_GPU_TIMEOUT");
	if (v) {
		char *end;
		double t = strtod(v, &end);
		if (*end || !(t > 0 && t < 1e9))
			snprintf(s->bad, sizeof s->bad, "EMBED_GPU_TIMEOUT=%.40s is not a number of "
				 "seconds > 0", v);
		else
			s->timeout_s = t;
	}
	s->profile = env_value("EMBED_VK_PROFILE") != NULL;
	s->no_coopmat = env_value("EMBED_VK_NO_COOPMAT") != NULL;
	s->ln_tree = env_value("EMBED_VK_LN_TREE") != NULL;
	s->i8_staged = env_value("EMBED_VK_I8_STAGED") != NULL;
	s->stats = env_value("EMBED_VK_STATS") != NULL;
	if ((v = env_value("EMBED_VK_ATTN"))) {
		if (strcmp(v, "scalar") && strcmp(v, "cm") && strcmp(v, "fa") && strcmp(v, "fa16"))
			snprintf(s->bad, sizeof s->bad, "EMBED_VK_ATTN=%.40s is not scalar, cm, fa or fa16", v);
		else
			snprintf(s->attn, sizeof s->attn, "%s", v);
	}
	if ((v = env_value("EMBED_VK_GEMM"))) {
		if (strcmp(v, "lh") && strcmp(v, "hs") && strcmp(v, "hh"))
			snprintf(s->bad, sizeof s->bad, "EMBED_VK_GEMM=%.40s is not lh, hs or hh", v);
		else
			snprintf(s->gemm, sizeof s->gemm, "%s", v);
	}
	x = s->queues;
	env_long(s, "EMBED_VK_QUEUES", 1, 2, &x);
	s->queues = (int)x;
	x = s->small_tiles;
	env_long(s, "EMBED_VK_SMALL_TILES", 0, 2, &x);
	s->small_tiles = (int)x;
	x = s->tiles96;
	env_long(s, "EMBED_VK_TILES96", 0, 1, &x);
	s->tiles96 = (int)x;
	x = s->int8_products;
	env_long(s, "EMBED_VK_INT8_PRODUCTS", 0, 15, &x);
	s->int8_products = (int)x;
	x = s->int8_outliers;
	env_long(s, "EMBED_VK_INT8_OUTLIERS", 0, 16, &x);
	s->int8_outliers = (int)x;
	x = s->int8_smooth_up;
	env_long(s, "EMBED_VK_INT8_SMOOTH_UP", 0, 1, &x);
	s->int8_smooth_up = (int)x;
	x = s->int8_smooth_alpha;
	env_long(s, "EMBED_VK_INT8_SMOOTH_ALPHA", 0, 100, &x);
	s->int8_smooth_alpha = (int)x;
	if ((v = env_value("EMBED_VK_INT8_CALIB")))
		snprintf(s->int8_calib, sizeof s->int8_calib, "%s", v);
	x = s->pipeline_cache;
	env_long(s, "EMBED_VK_PIPELINE_CACHE", 0, 1, &x);
	s->pipeline_cache = (int)x;
	emb_cache_dir(s->cache_dir, sizeof s->cache_dir);
	env_long(s, "EMBED_VK_FAIL_ACTIVATIONS", 0, LONG_MAX, &s->fail_activations);
	if ((v = env_value("EMBED_VK_FAIL_SHADER")))
		snprintf(s->fail_shader, sizeof s->fail_shader, "%s", v);
}
