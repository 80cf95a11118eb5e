/* quant.h — compact vectors: int8 codes with per-dimension scales, and sign bits.
 *
 * A scan is bound by the bytes it reads (docs/bench-scan.md), so a store may keep, beside its
 * f32 rows, a compact copy that the scan reads instead: int8 (1 byte a dimension, 4x fewer
 * bytes) or binary (1 bit a dimension, 32x fewer). The compact ranking only picks candidates;
 * the f32 rows rescore them exactly (store_search_opts).
 *
 * int8: x[d] ~ scale[d] * c[d], c = round(x[d] / scale[d]) clipped to [-127, 127], stored as
 * the unsigned byte c + 128 (so a VPDPBUSD, unsigned x signed, multiplies a row by a signed
 * query directly; the +128 is one constant per query and block). scale[d] = max |x[d]|
 * over the calibration rows / 127 (a dimension that is zero in all of them gets 1/127): in a
 * store, the rows of one compact block (store.h), so no row is clipped.
 * binary: bit d (byte d / 8, least significant bit first) is 1 when x[d] > 0; the bits past
 * dim in the last byte are 0.
 */
#ifndef EMB_QUANT_H
#define EMB_QUANT_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
	QUANT_F32 = 0,    /* no compact copy */
	QUANT_INT8 = 1,
	QUANT_BINARY = 2,
} quant_type;

/* "f32", "int8", "binary" -> *t; 0, or -1 for any other name. */
int quant_parse(const char *name, quant_type *t);
const char *quant_name(quant_type t);

/* Bytes of one compact row: dim (int8), (dim + 7) / 8 (binary), dim * 4 (f32). */
size_t quant_row_bytes(quant_type t, int dim);

/* scales[0..dim) from n rows (n >= 0; n = 0 gives 1/127 everywhere). */
void quant_i8_scales(const float *rows, size_t n, int dim, float *scales);

/* One row's compact code into out (quant_row_bytes bytes). Values beyond 127 * scale[d]
 * clip to +-127; not-finite values code as 0. */
void quant_i8_encode(const float *x, int dim, const float *scales, uint8_t *out);
void quant_bin_encode(const float *x, int dim, uint8_t *out);

/* The inverse of quant_i8_encode (up to rounding: |x - decoded| <= scale[d] / 2 for values
 * within range). */
void quant_i8_decode(const uint8_t *code, int dim, const float *scales, float *x);

/* The query side of an int8 scan: q8[d] = round(q[d] * scale[d] * (1 / qs)), qs chosen so
 * that the largest |q8| is 127. Then for a row coded c, q . x ~ qs * (sum_d u8[d] * q8[d] - bias),
 * bias = 128 * sum_d q8[d]: *bias and *qs are set. */
void quant_i8_query(const float *q, int dim, const float *scales, int8_t *q8, int32_t *bias,
		    float *qs);

#endif
