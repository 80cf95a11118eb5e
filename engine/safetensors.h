/* safetensors.h — read-only access to a .safetensors file, memory-mapped.
 *
 * The format is an 8-byte little-endian header length, a JSON header mapping tensor names
 * to dtype, shape and [begin, end) byte offsets, then the raw data. A file from the
 * internet is untrusted input: every offset and shape is bounds-checked here, once, so the
 * rest of the engine can index tensors without checks. tests/fuzz_safetensors.c fuzzes it.
 */
#ifndef EMB_SAFETENSORS_H
#define EMB_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum {
	ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL,
} st_dtype;

#define ST_MAX_DIMS 8

typedef struct st_tensor {
	char *name;
	st_dtype dtype;
	int ndim;
	int64_t shape[ST_MAX_DIMS];
	size_t count;        /* product of shape (1 for a scalar) */
	const uint8_t *data; /* count * element size bytes, inside the mapping */
	size_t nbytes;
} st_tensor;

typedef struct safetensors {
	st_tensor *tensors;
	size_t n;
	void *map;           /* the mmap of the file, or NULL for safetensors_parse */
	size_t map_size;
} safetensors;

/* Maps `path` and parses its header into *st. Errors: EMB_EIO (cannot open/map: message
 * names the path and errno text), EMB_EFORMAT (header length past the file, bad JSON,
 * unknown dtype, shape/offset mismatch, overlapping or out-of-bounds data: the message
 * names the path and, where there is one, the tensor). On error *st is left empty. */
int safetensors_open(const char *path, safetensors *st, emb_err *err);

/* Parses an in-memory file image (buf is not copied and must outlive *st). `what` names
 * the source in error messages. Same errors as safetensors_open except EMB_EIO. */
int safetensors_parse(const uint8_t *buf, size_t size, const char *what, safetensors *st,
		      emb_err *err);

/* The tensor called `name`, or NULL. */
const st_tensor *safetensors_find(const safetensors *st, const char *name);

/* Unmaps and frees everything. Safe on a zeroed or already-closed struct. */
void safetensors_close(safetensors *st);

/* Size in bytes of one element of dtype d. */
size_t st_dtype_size(st_dtype d);

/* Converts t (F32, F16 or BF16) to t->count floats at dst. Returns EMB_OK, or
 * EMB_EUNSUPPORTED for other dtypes. */
int st_tensor_to_f32(const st_tensor *t, float *dst, emb_err *err);

#endif
