/* safetensors.c — parse and bounds-check a safetensors file (see safetensors.h). */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A header larger than this is not a model we want to parse (real ones are < 1 MB). */
#define ST_MAX_HEADER (100u << 20)

static const struct { const char *name; st_dtype dtype; size_t size; } dtypes[] = {
	{ "F32", ST_F32, 4 }, { "F16", ST_F16, 2 }, { "BF16", ST_BF16, 2 },
	{ "F64", ST_F64, 8 }, { "I64", ST_I64, 8 }, { "I32", ST_I32, 4 },
	{ "I16", ST_I16, 2 }, { "I8", ST_I8, 1 }, { "U8", ST_U8, 1 }, { "BOOL", ST_BOOL, 1 },
};

size_t st_dtype_size(st_dtype d)
{
	for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
		if (dtypes[i].dtype == d)
			return dtypes[i].size;
	return 0;
}

static int dtype_from_name(const char *s, st_dtype *d)
{
	for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
		if (strcmp(dtypes[i].name, s) == 0) {
			*d = dtypes[i].dtype;
			return 1;
		}
	return 0;
}

/* Reads a JSON integer that must be a non-negative value fitting in int64. */
static int json_size(json_t *v, int64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return 0;
	*out = json_integer_value(v);
	return 1;
}

static int by_begin(const void *a, const void *b)
{
	const st_tensor *x = a, *y = b;
	return x->data < y->data ? -1 : x->data > y->data;
}

static int parse_tensor(const char *what, const char *name, json_t *desc, const uint8_t *data,
			size_t data_size, st_tensor *t, emb_err *err)
{
	json_t *jd = json_object_get(desc, "dtype");
	json_t *js = json_object_get(desc, "shape");
	json_t *jo = json_object_get(desc, "data_offsets");
	if (!json_is_object(desc) || !json_is_string(jd) || !json_is_array(js) ||
	    !json_is_array(jo) || json_array_size(jo) != 2)
		return emb_errf(err, EMB_EFORMAT,
				"%s: tensor '%s': needs dtype, shape and data_offsets[2]", what, name);
	if (!dtype_from_name(json_string_value(jd), &t->dtype))
		return emb_errf(err, EMB_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", what, name,
				json_string_value(jd));
	size_t nd = json_array_size(js);
	if (nd > ST_MAX_DIMS)
		return emb_errf(err, EMB_EFORMAT, "%s: tensor '%s': %zu dimensions (max %d)", what,
				name, nd, ST_MAX_DIMS);
	t->ndim = (int)nd;
	size_t count = 1;
	for (size_t i = 0; i < nd; i++) {
		int64_t d;
		if (!json_size(json_array_get(js, i), &d))
			return emb_errf(err, EMB_EFORMAT, "%s: tensor '%s': bad shape", what, name);
		t->shape[i] = d;
		if (d != 0 && count > SIZE_MAX / (size_t)d)
			return emb_errf(err, EMB_EFORMAT, "%s: tensor '%s': shape overflows", what, name);
		count *= (size_t)d;
	}
	int64_t begin, end;
	if (!json_size(json_array_get(jo, 0), &begin) || !json_size(json_array_get(jo, 1), &end) ||
	    begin > end || (uint64_t)end > data_size)
		return emb_errf(err, EMB_EFORMAT,
				"%s: tensor '%s': data_offsets outside the %zu data bytes", what, name,
				data_size);
	size_t esize = st_dtype_size(t->dtype);
	if (count > SIZE_MAX / esize || count * esize != (uint64_t)(end - begin))
		return emb_errf(err, EMB_EFORMAT,
				"%s: tensor '%s': shape needs %zu bytes but data_offsets give %lld", what,
				name, count > SIZE_MAX / esize ? SIZE_MAX : count * esize,
				(long long)(end - begin));
	t->count = count;
	t->nbytes = (size_t)(end - begin);
	t->data = data + begin;
	t->name = strdup(name);
	if (!t->name)
		return emb_errf(err, EMB_ENOMEM, "%s: out of memory", what);
	return EMB_OK;
}

int safetensors_parse(const uint8_t *buf, size_t size, const char *what, safetensors *st,
		      emb_err *err)
{
	memset(st, 0, sizeof *st);
	if (size < 8)
		return emb_errf(err, EMB_EFORMAT, "%s: too short for a safetensors file (%zu bytes)",
				what, size);
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | buf[i];
	if (hlen > size - 8 || hlen > ST_MAX_HEADER)
		return emb_errf(err, EMB_EFORMAT,
				"%s: header length %llu exceeds the file (%zu bytes): truncated or not safetensors",
				what, (unsigned long long)hlen, size);
	json_error_t jerr;
	json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return emb_errf(err, EMB_EFORMAT, "%s: header JSON: %s (at byte %d)", what, jerr.text,
				jerr.position + 8);
	int rc = EMB_OK;
	if (!json_is_object(root)) {
		rc = emb_errf(err, EMB_EFORMAT, "%s: header is not a JSON object", what);
		goto out;
	}
	const uint8_t *data = buf + 8 + hlen;
	size_t data_size = size - 8 - (size_t)hlen;
	st->tensors = calloc(json_object_size(root) + 1, sizeof *st->tensors);
	if (!st->tensors) {
		rc = emb_errf(err, EMB_ENOMEM, "%s: out of memory", what);
		goto out;
	}
	const char *name;
	json_t *desc;
	json_object_foreach(root, name, desc) {
		if (strcmp(name, "__metadata__") == 0)
			continue;
		rc = parse_tensor(what, name, desc, data, data_size, &st->tensors[st->n], err);
		if (rc)
			goto out;
		st->n++;
	}
	/* Tensors must not overlap: a crafted file could otherwise alias one tensor's bytes
	 * as another's. (Zero-sized tensors overlap nothing.) */
	st_tensor *sorted = malloc((st->n + 1) * sizeof *sorted);
	if (!sorted) {
		rc = emb_errf(err, EMB_ENOMEM, "%s: out of memory", what);
		goto out;
	}
	memcpy(sorted, st->tensors, st->n * sizeof *sorted);
	qsort(sorted, st->n, sizeof *sorted, by_begin);
	for (size_t i = 1; i < st->n; i++)
		if (sorted[i - 1].nbytes && sorted[i].nbytes &&
		    sorted[i - 1].data + sorted[i - 1].nbytes > sorted[i].data) {
			rc = emb_errf(err, EMB_EFORMAT, "%s: tensors '%s' and '%s' overlap", what,
				      sorted[i - 1].name, sorted[i].name);
			break;
		}
	free(sorted);
out:
	json_decref(root);
	if (rc)
		safetensors_close(st);
	return rc;
}

int safetensors_open(const char *path, safetensors *st, emb_err *err)
{
	memset(st, 0, sizeof *st);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return emb_errf(err, EMB_EIO, "%s: %s", path, strerror(errno));
	struct stat sb;
	if (fstat(fd, &sb) != 0) {
		int e = errno;
		close(fd);
		return emb_errf(err, EMB_EIO, "%s: %s", path, strerror(e));
	}
	if (!S_ISREG(sb.st_mode) || sb.st_size < 8) {
		close(fd);
		return emb_errf(err, EMB_EFORMAT, "%s: not a safetensors file (%lld bytes)", path,
				(long long)sb.st_size);
	}
	void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	int e = errno;
	close(fd);
	if (map == MAP_FAILED)
		return emb_errf(err, EMB_EIO, "%s: mmap: %s", path, strerror(e));
	int rc = safetensors_parse(map, (size_t)sb.st_size, path, st, err);
	if (rc) {
		munmap(map, (size_t)sb.st_size);
		return rc;
	}
	st->map = map;
	st->map_size = (size_t)sb.st_size;
	return EMB_OK;
}

const st_tensor *safetensors_find(const safetensors *st, const char *name)
{
	for (size_t i = 0; i < st->n; i++)
		if (strcmp(st->tensors[i].name, name) == 0)
			return &st->tensors[i];
	return NULL;
}

void safetensors_close(safetensors *st)
{
	if (st->tensors)
		for (size_t i = 0; i < st->n; i++)
			free(st->tensors[i].name);
	free(st->tensors);
	if (st->map)
		munmap(st->map, st->map_size);
	memset(st, 0, sizeof *st);
}

static float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
	if (exp == 0) {
		if (man == 0) {
			bits = sign;
		} else { /* subnormal: renormalise */
			exp = 127 - 15 + 1;
			while (!(man & 0x400)) {
				man <<= 1;
				exp--;
			}
			bits = sign | exp << 23 | (man & 0x3ff) << 13;
		}
	} else if (exp == 0x1f) {
		bits = sign | 0x7f800000 | man << 13;
	} else {
		bits = sign | (exp + 127 - 15) << 23 | man << 13;
	}
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

int st_tensor_to_f32(const st_tensor *t, float *dst, emb_err *err)
{
	const uint8_t *p = t->data;
	switch (t->dtype) {
	case ST_F32:
		memcpy(dst, p, t->count * 4); /* the file is little-endian, as is every target */
		return EMB_OK;
	case ST_F16:
		for (size_t i = 0; i < t->count; i++)
			dst[i] = f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
		return EMB_OK;
	case ST_BF16:
		for (size_t i = 0; i < t->count; i++) {
			uint32_t bits = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16;
			memcpy(&dst[i], &bits, 4);
		}
		return EMB_OK;
	default:
		return emb_errf(err, EMB_EUNSUPPORTED, "tensor '%s': dtype is not f32, f16 or bf16",
				t->name);
	}
}
