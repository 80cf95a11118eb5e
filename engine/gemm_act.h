/* gemm_act.h — the activation epilogue shared by gemm.c's fp32 kernels and gemm_lowp.c's
 * bf16 / int8 kernels, so that every precision applies exactly the same GELU / ReLU. Internal
 * to those two files. */
#ifndef EMB_GEMM_ACT_H
#define EMB_GEMM_ACT_H

#include "gemm.h"
#include "vecmath.h"

#include <math.h>
#include <stddef.h>

/* The activation over an mr x nv block of C just stored: inlined into each kernel's loop so
 * that it is compiled (and vectorised) for that kernel's instruction set. */
static inline __attribute__((always_inline)) void act_block(float *c, int ldc, int mr, int nv,
							     gemm_act act)
{
	for (int i = 0; i < mr; i++) {
		float *r = c + (size_t)i * ldc;
		if (act == GEMM_ACT_GELU_ERF)
			for (int j = 0; j < nv; j++)
				r[j] = 0.5f * r[j] * (1.0f + erf_approx(r[j] * 0.70710678118654752f));
		else if (act == GEMM_ACT_GELU_TANH)
			for (int j = 0; j < nv; j++)
				r[j] = 0.5f * r[j] *
				       (1.0f + tanhf(0.7978845608028654f *
						     (r[j] + 0.044715f * r[j] * r[j] * r[j])));
		else if (act == GEMM_ACT_RELU)
			for (int j = 0; j < nv; j++)
				r[j] = r[j] > 0 ? r[j] : 0;
	}
}

#endif
