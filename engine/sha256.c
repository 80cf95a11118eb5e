/* sha256.c — SHA-256 as specified in FIPS 180-4 (see sha256.h for why it is here), with the
 * x86 SHA extensions where the CPU has them: the indexer hashes the model's weights at
 * start-up (45 MB for all-MiniLM-L6-v2 in f16, 438 MB for all-mpnet-base-v2), and the
 * portable rounds run at some 200 MB/s. */
#include "sha256.h"

#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define SHA256_X86 1
#endif

static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void block_portable(uint32_t *hs, const uint8_t *p)
{
	uint32_t w[64];
	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ w[i - 15] >> 3;
		uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ w[i - 2] >> 10;
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	uint32_t a = hs[0], b = hs[1], cc = hs[2], d = hs[3];
	uint32_t e = hs[4], f = hs[5], g = hs[6], h = hs[7];
	for (int i = 0; i < 64; i++) {
		uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
		uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
		h = g, g = f, f = e, e = d + t1, d = cc, cc = b, b = a, a = t1 + t2;
	}
	hs[0] += a, hs[1] += b, hs[2] += cc, hs[3] += d;
	hs[4] += e, hs[5] += f, hs[6] += g, hs[7] += h;
}

static void blocks_portable(uint32_t *hs, const uint8_t *p, size_t n)
{
	for (; n; n--, p += 64)
		block_portable(hs, p);
}

#ifdef SHA256_X86
/* The state lives in two registers as the SHA instructions want it, ABEF and CDGH; each
 * sha256rnds2 does two rounds, sha256msg1/msg2 extend the message schedule four words at a
 * time: W[i] = msg2(msg1(W[i-4], W[i-3]) + W[i-1:i-2] shifted by one word, W[i-1]). */
__attribute__((target("sha,sse4.1,ssse3")))
static void blocks_shani(uint32_t *hs, const uint8_t *p, size_t n)
{
	const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
	__m128i t = _mm_loadu_si128((const __m128i *)&hs[0]);  /* a b c d (lane 0 first) */
	__m128i s1 = _mm_loadu_si128((const __m128i *)&hs[4]); /* e f g h */
	t = _mm_shuffle_epi32(t, 0xB1);                        /* b a d c */
	s1 = _mm_shuffle_epi32(s1, 0x1B);                      /* h g f e */
	__m128i s0 = _mm_alignr_epi8(t, s1, 8);                /* f e b a: ABEF */
	s1 = _mm_blend_epi16(s1, t, 0xF0);                     /* h g d c: CDGH */
	for (; n; n--, p += 64) {
		const __m128i abef = s0, cdgh = s1;
		__m128i w[4];
		for (int i = 0; i < 16; i++) {
			__m128i m;
			if (i < 4)
				m = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
			else
				m = _mm_sha256msg2_epu32(
					_mm_add_epi32(_mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]),
						      _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4)),
					w[(i + 3) & 3]);
			w[i & 3] = m;
			__m128i k = _mm_add_epi32(m, _mm_loadu_si128((const __m128i *)&K[4 * i]));
			s1 = _mm_sha256rnds2_epu32(s1, s0, k);
			s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(k, 0x0E));
		}
		s0 = _mm_add_epi32(s0, abef);
		s1 = _mm_add_epi32(s1, cdgh);
	}
	t = _mm_shuffle_epi32(s0, 0x1B);                       /* a b e f */
	s1 = _mm_shuffle_epi32(s1, 0xB1);                      /* g h c d */
	s0 = _mm_blend_epi16(t, s1, 0xF0);                     /* a b c d */
	s1 = _mm_alignr_epi8(s1, t, 8);                        /* e f g h */
	_mm_storeu_si128((__m128i *)&hs[0], s0);
	_mm_storeu_si128((__m128i *)&hs[4], s1);
}

static int cpu_has_sha(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
		return 0;
	return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29)) != 0;
}
#endif

/* 0 unresolved, 1 portable, 2 SHA extensions; resolved once (a race writes the same value). */
static int impl;

static int resolve(void)
{
	int v = __atomic_load_n(&impl, __ATOMIC_RELAXED);
	if (!v) {
#ifdef SHA256_X86
		v = cpu_has_sha() ? 2 : 1;
#else
		v = 1;
#endif
		__atomic_store_n(&impl, v, __ATOMIC_RELAXED);
	}
	return v;
}

static void blocks(sha256_ctx *c, const uint8_t *p, size_t n)
{
#ifdef SHA256_X86
	if (resolve() == 2) {
		blocks_shani(c->h, p, n);
		return;
	}
#endif
	blocks_portable(c->h, p, n);
}

int sha256_accelerated(int portable)
{
	if (portable)
		__atomic_store_n(&impl, 1, __ATOMIC_RELAXED);
	return resolve() == 2;
}

void sha256_init(sha256_ctx *c)
{
	static const uint32_t h0[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
					0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	memcpy(c->h, h0, sizeof h0);
	c->len = 0;
	c->nbuf = 0;
}

void sha256_update(sha256_ctx *c, const void *data, size_t n)
{
	const uint8_t *p = data;
	c->len += n;
	if (c->nbuf) {
		size_t k = 64 - c->nbuf < n ? 64 - c->nbuf : n;
		memcpy(c->buf + c->nbuf, p, k);
		c->nbuf += k, p += k, n -= k;
		if (c->nbuf < 64)
			return;
		blocks(c, c->buf, 1);
		c->nbuf = 0;
	}
	blocks(c, p, n / 64);
	p += n / 64 * 64;
	n %= 64;
	memcpy(c->buf, p, n);
	c->nbuf = n;
}

void sha256_final(sha256_ctx *c, uint8_t digest[32])
{
	uint64_t bits = c->len * 8;
	uint8_t pad = 0x80;
	sha256_update(c, &pad, 1);
	pad = 0;
	while (c->nbuf != 56)
		sha256_update(c, &pad, 1);
	uint8_t be[8];
	for (int i = 0; i < 8; i++)
		be[i] = (uint8_t)(bits >> (56 - 8 * i));
	sha256_update(c, be, 8);
	for (int i = 0; i < 8; i++) {
		digest[4 * i] = (uint8_t)(c->h[i] >> 24);
		digest[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
		digest[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
		digest[4 * i + 3] = (uint8_t)c->h[i];
	}
}

void sha256(const void *data, size_t n, uint8_t digest[32])
{
	sha256_ctx c;
	sha256_init(&c);
	sha256_update(&c, data, n);
	sha256_final(&c, digest);
}

void sha256_hex(const uint8_t digest[32], char hex[65])
{
	static const char d[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		hex[2 * i] = d[digest[i] >> 4];
		hex[2 * i + 1] = d[digest[i] & 15];
	}
	hex[64] = 0;
}
