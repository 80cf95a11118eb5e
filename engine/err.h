/* err.h — how the engine reports failure.
 *
 * Every fallible engine function returns an int status (EMB_OK == 0, or one of the
 * codes below) and, when given a non-NULL emb_err, fills it with a one-line message
 * that names the file, line or document at fault. The message is for people; the code is
 * for programs. No function keeps error state anywhere else, so the engine needs no
 * global mutable state and several threads can fail independently.
 */
#ifndef EMB_ERR_H
#define EMB_ERR_H

#include <stddef.h>

enum {
	EMB_OK = 0,
	EMB_EIO = 1,        /* a file could not be opened, read, mapped or written */
	EMB_EFORMAT = 2,    /* a file is malformed: bad JSON, corrupt safetensors, ... */
	EMB_EUNSUPPORTED = 3, /* valid, but a model or feature this engine does not handle */
	EMB_EINVAL = 4,     /* bad argument or bad input text (e.g. invalid UTF-8) */
	EMB_ENOMEM = 5,     /* out of host memory */
	EMB_EDEVICE = 6,    /* the GPU path is unavailable or failed */
	EMB_ESTORE = 7,     /* the vector store refused an operation */
	EMB_EINTERRUPTED = 8, /* stopped on request (signal) */
};

typedef struct emb_err {
	int code;
	char msg[512];
} emb_err;

/* Fills *err (if non-NULL) with code and a printf-style message; returns code, so that
 * callers can write `return emb_errf(err, EMB_EIO, "%s: %s", path, strerror(errno));`. */
int emb_errf(emb_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prefixes an existing message with more context ("while loading X: <old message>"). */
int emb_err_prefix(emb_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* A short name for a status code, e.g. "format error". Never NULL. */
const char *emb_strerror(int code);

#endif
