/* quant.c — int8 and binary codes of unit vectors (see quant.h for the formats). */
#include "quant.h"

#include <math.h>
#include <string.h>

int quant_parse(const char *name, quant_type *t)
{
	if (!strcmp(name, "f32"))
		*t = QUANT_F32;
	else if (!strcmp(name, "int8"))
		*t = QUANT_INT8;
	else if (!strcmp(name, "binary"))
		*t = QUANT_BINARY;
	else
		return -1;
	return 0;
}

const char *quant_name(quant_type t)
{
	return t == QUANT_INT8 ? "int8" : t == QUANT_BINARY ? "binary" : "f32";
}

size_t quant_row_bytes(quant_type t, int dim)
{
	return t == QUANT_INT8 ? (size_t)dim : t == QUANT_BINARY ? ((size_t)dim + 7) / 8 : (size_t)dim * 4;
}

void quant_i8_scales(const float *rows, size_t n, int dim, float *scales)
{
	for (int d = 0; d < dim; d++)
		scales[d] = 0;
	for (size_t i = 0; i < n; i++)
		for (int d = 0; d < dim; d++) {
			float a = fabsf(rows[i * (size_t)dim + d]);
			if (a > scales[d])
				scales[d] = a;
		}
	for (int d = 0; d < dim; d++)
		scales[d] = scales[d] > 0 && isfinite(scales[d]) ? scales[d] / 127.0f : 1.0f / 127.0f;
}

void quant_i8_encode(const float *x, int dim, const float *scales, uint8_t *out)
{
	for (int d = 0; d < dim; d++) {
		float c = x[d] / scales[d];
		c = c > 127.0f ? 127.0f : c < -127.0f ? -127.0f : c; /* NaN stays NaN: below */
		int v = c == c ? (int)lrintf(c) : 0;
		out[d] = (uint8_t)(v + 128);
	}
}

void quant_bin_encode(const float *x, int dim, uint8_t *out)
{
	memset(out, 0, ((size_t)dim + 7) / 8);
	for (int d = 0; d < dim; d++)
		if (x[d] > 0)
			out[d >> 3] |= (uint8_t)(1u << (d & 7));
}

void quant_i8_decode(const uint8_t *code, int dim, const float *scales, float *x)
{
	for (int d = 0; d < dim; d++)
		x[d] = (float)((int)code[d] - 128) * scales[d];
}

void quant_i8_query(const float *q, int dim, const float *scales, int8_t *q8, int32_t *bias,
		    float *qs)
{
	float m = 0;
	for (int d = 0; d < dim; d++) {
		float a = fabsf(q[d] * scales[d]);
		if (a > m)
			m = a;
	}
	float s = m > 0 ? m / 127.0f : 1.0f, inv = 1.0f / s;
	int32_t sum = 0;
	for (int d = 0; d < dim; d++) {
		float c = q[d] * scales[d] * inv; /* a product, not a quotient: a scan redoes it for every block */
		c = c > 127.0f ? 127.0f : c < -127.0f ? -127.0f : c;
		int v = c == c ? (int)lrintf(c) : 0;
		q8[d] = (int8_t)v;
		sum += v;
	}
	*bias = 128 * sum;
	*qs = s;
}
