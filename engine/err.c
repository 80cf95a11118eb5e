/* err.c — formatting of engine error messages (see err.h). */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int emb_errf(emb_err *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof err->msg, fmt, ap);
		va_end(ap);
		err->code = code;
	}
	return code;
}

int emb_err_prefix(emb_err *err, const char *fmt, ...)
{
	if (!err)
		return EMB_OK;
	char old[sizeof err->msg];
	memcpy(old, err->msg, sizeof old);
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof err->msg)
		snprintf(err->msg + n, sizeof err->msg - (size_t)n, "%s", old);
	return err->code;
}

const char *emb_strerror(int code)
{
	switch (code) {
	case EMB_OK: return "success";
	case EMB_EIO: return "I/O error";
	case EMB_EFORMAT: return "format error";
	case EMB_EUNSUPPORTED: return "unsupported";
	case EMB_EINVAL: return "invalid input";
	case EMB_ENOMEM: return "out of memory";
	case EMB_EDEVICE: return "device error";
	case EMB_ESTORE: return "store error";
	case EMB_EINTERRUPTED: return "interrupted";
	}
	return "unknown error";
}
