/* The GPU path's watchdog on a batch. With EMBED_GPU_TIMEOUT forced to a microsecond, waiting
 * for a batch is an error naming EMBED_GPU_TIMEOUT; the batch goes on running, and when it
 * does finish it must not write into the output its caller was told had failed (and freed:
 * ASan sees such a write). With the default limit, which grows with the batch's work, the
 * same batch completes on a slow device (lavapipe here). Exits 77 without a Vulkan device or
 * the model. */
#include <math.h>
#include <stdint.h>

#include "forward_vk.h"
#include "model.h"
#include "testutil.h"
#include "vk_ctx.h"

/* lavapipe's allocations, as in test_vk_forward: kept loaded, suppressed by name. */
static vk_ctx keep_driver_loaded;
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libvulkan_lvp.so\nleak:libLLVM\n";
}

enum { NSEQ = 8, LEN = 32 };

static int open_backend(const bert_config *cfg, const bert_weights *w, vk_backend **b, emb_err *err)
{
	vk_options o;
	vk_options_default(&o);
	vk_settings_from_env(&o.set); /* as the tools do at open */
	o.allow_cpu = 1;
	o.precision = VK_PREC_FP32;
	return vk_backend_open(cfg, w, &o, b, err);
}

int main(void)
{
	emb_err err = { 0 };
	if (!test_have_model()) {
		printf("skipped: model not fetched (make fetch-model)\n");
		return 77;
	}
	if (vk_ctx_open(&keep_driver_loaded, -1, 1, NULL, &err)) {
		printf("skipped: no Vulkan device: %s\n", err.msg);
		return 77;
	}
	bert_config cfg;
	bert_weights w;
	if (bert_config_load(test_model_dir(), &cfg, &err) ||
	    bert_weights_load(test_model_dir(), &cfg, &w, &err)) {
		fprintf(stderr, "loading model: %s\n", err.msg);
		return 1;
	}
	static int32_t ids[NSEQ * LEN];
	int offs[NSEQ + 1];
	for (int i = 0; i < NSEQ; i++) {
		offs[i] = i * LEN;
		for (int t = 0; t < LEN; t++)
			ids[i * LEN + t] = t == 0 ? 101 : t == LEN - 1 ? 102 : 1000 + 37 * i + t;
	}
	offs[NSEQ] = NSEQ * LEN;
	fwd_batch bt = { .n = NSEQ, .ids = ids, .offs = offs };
	const size_t outlen = (size_t)NSEQ * cfg.hidden;

	setenv("EMBED_GPU_TIMEOUT", "0.000001", 1);
	vk_backend *b = NULL;
	int rc = open_backend(&cfg, &w, &b, &err);
	CHECK(rc == EMB_OK, "vk_backend_open: %s", err.msg);
	if (!rc) {
		float *out = malloc(outlen * sizeof *out);
		rc = forward_vk_submit(b, &bt, out, &err);
		CHECK(rc == EMB_OK, "submit: %s", err.msg);
		rc = forward_vk_wait(b, &err);
		CHECK(rc == EMB_EDEVICE && strstr(err.msg, "did not finish") &&
		      strstr(err.msg, "EMBED_GPU_TIMEOUT"), "wait with a 1 us limit: %d %s", rc, err.msg);
		printf("timed out: %s\n", err.msg);
		free(out);
		/* The batch is still running; wait until it is done: it must not write to out. */
		int tries = 0;
		while ((rc = forward_vk_wait(b, &err)) == EMB_EDEVICE && tries++ < 600000)
			usleep(1000);
		CHECK(rc == EMB_OK, "the timed-out batch never finished: %s", err.msg);
		vk_backend_close(b);
	}

	unsetenv("EMBED_GPU_TIMEOUT");
	rc = open_backend(&cfg, &w, &b, &err);
	CHECK(rc == EMB_OK, "vk_backend_open: %s", err.msg);
	if (!rc) {
		float *out = calloc(outlen, sizeof *out);
		rc = forward_vk(b, &bt, out, &err);
		CHECK(rc == EMB_OK, "the default limit: %s", err.msg);
		double ss = 0;
		for (int j = 0; j < cfg.hidden; j++)
			ss += (double)out[j] * out[j];
		CHECK(fabs(ss - 1) < 1e-4, "first vector |v|^2 = %f", ss);
		free(out);
		vk_backend_close(b);
	}
	bert_weights_free(&w);
	vk_ctx_close(&keep_driver_loaded);
	return test_done("test_vk_watchdog");
}
