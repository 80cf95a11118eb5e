/* vk_settings.h — the GPU side's settings from the environment. Every EMBED_* variable the
 * Vulkan backend honours is read here, once, when a model is opened (embed.c's gpu_open calls
 * vk_settings_from_env), and travels in vk_options to the code that uses it, so that nothing
 * deeper reads the environment and a test can set any of them without touching it.
 * docs/settings.md lists every variable of the project with its default and who needs it. */
#ifndef EMB_VK_SETTINGS_H
#define EMB_VK_SETTINGS_H

#define VK_STUDY_EXTS 4

/* vk_settings_default gives what an unset environment gives, except cache_dir, which it
 * leaves "" (no file: a caller that wants one sets it or calls vk_settings_from_env). */
typedef struct vk_settings {
	int gpu;               /* EMBED_GPU: device index when the caller asks for none; -1 none */
	double timeout_s;      /* EMBED_GPU_TIMEOUT: seconds a batch may take; 0 = derived */
	int profile;           /* EMBED_VK_PROFILE: time each step of each batch */
	int no_coopmat;        /* EMBED_VK_NO_COOPMAT: the portable kernels even on tensor cores */
	int queues;            /* EMBED_VK_QUEUES: 1 or 2 compute queues (2: the two batches in
				* flight run at once, each in its own activations; where the
				* device's queue family has one queue, 1); default 1 */
	/* Kernel choices that the defaults make by device and batch, forced for tests and
	 * comparisons: */
	char attn[8];          /* EMBED_VK_ATTN: "" by device, scalar, cm, fa (128-query blocks
				* at every size; for ALiBi, attn_fa64 at all) or fa16 (64-query
				* blocks at every size) */
	int small_tiles;       /* EMBED_VK_SMALL_TILES: -1 by grid size, 0 large tiles, 1 64x64,
				* 2 32x64 */
	int tiles96;           /* EMBED_VK_TILES96: 1 128x96 tiles where N allows, 0 never */
	char gemm[4];          /* EMBED_VK_GEMM: "" by shape and grid; on the cooperative-matrix
				* path every product forced to one kernel: lh (128x64 tiles),
				* hs (64x64), hh (the tiled f16 kernel without tensor cores) */
	int ln_tree;           /* EMBED_VK_LN_TREE: the shared-memory LayerNorm everywhere */
	int i8_staged;         /* EMBED_VK_I8_STAGED: the int8 products' epilogue through shared
				* memory even where the accumulators' layout is known */
	int int8_products;     /* EMBED_VK_INT8_PRODUCTS: which products --precision int8 runs
				* in int8, a bit each (1 qkv, 2 attention out, 4 FFN up, 8 FFN
				* down; the others stay fp16); default 15, all four */
	int int8_outliers;     /* EMBED_VK_INT8_OUTLIERS: the input channels an int8 product
				* keeps out of int8 (those of the largest activation maxima, from
				* int8_calib or else the model's own calibration pass at open;
				* their share of the product in f16), 0-16; default 8; 0: none
				* (one scale a token alone; with int8_calib, SmoothQuant) */
	int int8_smooth_up;    /* EMBED_VK_INT8_SMOOTH_UP: the FFN's up product takes SmoothQuant
				* factors (int8_smooth_alpha, from the calibration maxima) instead of
				* outlier channels, the others keeping theirs; default 1; 0:
				* outlier channels on the up product too */
	int int8_smooth_alpha; /* EMBED_VK_INT8_SMOOTH_ALPHA: SmoothQuant's migration strength in
				* hundredths, s = max|x|^a / max|w|^(1-a); default 50 */
	char int8_calib[512];  /* EMBED_VK_INT8_CALIB: activation maxima from
				* dev/int8/calibrate.py instead of the calibration pass; "" none */
	/* The persistent pipeline cache (vk_ctx.h): */
	int pipeline_cache;    /* EMBED_VK_PIPELINE_CACHE: 0 off; default on */
	char cache_dir[512];   /* the directory for its file (cache_dir.h: XDG_CACHE_HOME or
				* HOME); "" keeps compiled pipelines for this process only */
	/* Fault injection for the tests: */
	long fail_activations; /* EMBED_VK_FAIL_ACTIVATIONS: activations over this many tokens
				* fail as out of device memory; -1 never */
	char fail_shader[64];  /* EMBED_VK_FAIL_SHADER: shaders named with this prefix fail to
				* compile; "" none */
	/* Kernel studies (dev/ sets these itself; no variable): */
	const char *const *study_exts; /* device extensions to enable beyond the engine's own, */
	int n_study_exts;              /* where the device offers all (at most VK_STUDY_EXTS) */
	void *study_features;  /* their feature structures, a pNext chain enabled as given */
	int stats;             /* capture the driver's pipeline statistics */
	char bad[160];         /* a malformed variable, "" when all were well formed */
} vk_settings;

void vk_settings_default(vk_settings *s);

/* Fills *s from the environment (unset variables keep their defaults). A malformed value is
 * recorded in s->bad, which vk_ctx_open reports as EMB_EINVAL, so that a typo fails the open
 * that would have used it rather than being ignored. */
void vk_settings_from_env(vk_settings *s);

#endif
