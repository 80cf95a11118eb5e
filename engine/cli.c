/* cli.c — option values parsed one way for every tool (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

long long cli_int(const char *tool, const char *opt, const char *v, long long lo, long long hi)
{
	char *end;
	errno = 0;
	long long n = strtoll(v ? v : "", &end, 10);
	if (!v || !*v || *end || errno || n < lo || n > hi) {
		fprintf(stderr, "%s: %s needs an integer from %lld to %lld (got '%s')\n", tool, opt, lo,
			hi, v ? v : "");
		exit(2);
	}
	return n;
}

double cli_double(const char *tool, const char *opt, const char *v, double lo, double hi)
{
	char *end;
	errno = 0;
	double x = strtod(v ? v : "", &end);
	if (!v || !*v || *end || errno || !isfinite(x) || x < lo || x > hi) {
		fprintf(stderr, "%s: %s needs a number from %g to %g (got '%s')\n", tool, opt, lo, hi,
			v ? v : "");
		exit(2);
	}
	return x;
}

embed_device cli_device(const char *tool, const char *opt, const char *v)
{
	if (v && !strcmp(v, "cpu"))
		return EMBED_DEVICE_CPU;
	if (v && !strcmp(v, "gpu"))
		return EMBED_DEVICE_GPU;
	if (v && !strcmp(v, "auto"))
		return EMBED_DEVICE_AUTO;
	fprintf(stderr, "%s: %s must be cpu, gpu or auto (got '%s')\n", tool, opt, v ? v : "");
	exit(2);
}

embed_precision cli_precision(const char *tool, const char *opt, const char *v)
{
	if (v && !strcmp(v, "fp32"))
		return EMBED_PRECISION_FP32;
	if (v && !strcmp(v, "fp16"))
		return EMBED_PRECISION_FP16;
	if (v && !strcmp(v, "bf16"))
		return EMBED_PRECISION_BF16;
	if (v && !strcmp(v, "int8"))
		return EMBED_PRECISION_INT8;
	fprintf(stderr, "%s: %s must be fp32, fp16, bf16 or int8 (got '%s')\n", tool, opt,
		v ? v : "");
	exit(2);
}
