/* vecmath.h — exp and erf written so the compiler vectorises the loops that call them.
 *
 * glibc's expf and erff are accurate but scalar calls: profiling the CPU forward pass showed
 * them at ~19% of the time (erf in GELU, exp in softmax). These branch-free versions inline
 * into the loops and become AVX2 code. exp_approx: Cody-Waite reduction and a degree-7
 * polynomial, within 2 ulp over the range used. erf_approx: Abramowitz & Stegun 7.1.26, the
 * formula PyTorch's own vectorised CPU erf uses, absolute error below 1.5e-7.
 */
#ifndef EMB_VECMATH_H
#define EMB_VECMATH_H

#include <stdint.h>

/* exp(x); NaN for NaN (which passes the clamp and makes p NaN). */
static inline float exp_approx(float x)
{
	x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
	/* round to nearest integer: adding 1.5 * 2^23 = 0x1.8p23 pushes the fraction out of the
	 * mantissa and leaves n in t's low bits */
	union { float f; uint32_t u; } t = { .f = x * 1.44269504088896341f + 12582912.0f };
	float n = t.f - 12582912.0f;
	float r = x - n * 0.693145751953125f;   /* ln 2, high part */
	r = r - n * 1.428606765330187e-06f;     /* ln 2, low part */
	float p = 1.0f / 5040;
	p = p * r + 1.0f / 720;
	p = p * r + 1.0f / 120;
	p = p * r + 1.0f / 24;
	p = p * r + 1.0f / 6;
	p = p * r + 0.5f;
	p = p * r + 1.0f;
	p = p * r + 1.0f;
	/* 2^n built from t's bits in unsigned arithmetic, defined for every input (NaN
	 * included): converting NaN to int, or shifting a negative int, would be undefined. */
	union { uint32_t u; float f; } scale = { .u = (t.u - 0x4B400000u + 127u) << 23 };
	return p * scale.f;
}

static inline float erf_approx(float x)
{
	float ax = x < 0 ? -x : x;
	float t = 1.0f / (1.0f + 0.3275911f * ax);
	float y = 1.061405429f;
	y = y * t - 1.453152027f;
	y = y * t + 1.421413741f;
	y = y * t - 0.284496736f;
	y = y * t + 0.254829592f;
	y = 1.0f - y * t * exp_approx(-ax * ax);
	return x < 0 ? -y : y;
}

#endif
