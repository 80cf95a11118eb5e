/* test_sha256 — SHA-256 against FIPS 180-4's published digests, on both the SHA-extension
 * code and the portable code, and the two against each other on random data cut into
 * random update() pieces (every length around the 64-byte block and the 56-byte padding
 * edge). Where the CPU has no SHA extensions only the portable half runs. */
#include "sha256.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int fails;

static void hexof(const void *d, size_t n, char hex[65])
{
	uint8_t dg[32];
	sha256(d, n, dg);
	sha256_hex(dg, hex);
}

static void expect(const char *what, const void *d, size_t n, const char *want)
{
	char hex[65];
	hexof(d, n, hex);
	if (strcmp(hex, want)) {
		fprintf(stderr, "FAIL %s: %s, want %s\n", what, hex, want);
		fails++;
	}
}

static void fips(const char *impl)
{
	char what[64];
	snprintf(what, sizeof what, "%s \"abc\"", impl);
	expect(what, "abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	snprintf(what, sizeof what, "%s empty", impl);
	expect(what, "", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	snprintf(what, sizeof what, "%s 448 bits", impl);
	expect(what, m448, strlen(m448), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
			   "klmnopqrlmnopqrsmnopqrstnopqrstu";
	snprintf(what, sizeof what, "%s 896 bits", impl);
	expect(what, m896, strlen(m896), "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
	char *a = malloc(1000000);
	memset(a, 'a', 1000000);
	snprintf(what, sizeof what, "%s a million 'a'", impl);
	expect(what, a, 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	free(a);
}

/* Seconds to hash 45 MB (all-MiniLM-L6-v2's f16 weights) on the current path: the figure
 * docs/bench-index.md quotes for the SHA extensions against the portable code. */
static double time_45mb(void)
{
	const size_t n = (size_t)45 << 20;
	uint8_t *d = malloc(n), dg[32];
	for (size_t i = 0; i < n; i++)
		d[i] = (uint8_t)(i * 31);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	sha256(d, n, dg);
	clock_gettime(CLOCK_MONOTONIC, &b);
	free(d);
	return (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return rng;
}

/* The digest of d[0..n) fed in random pieces. */
static void pieces(const uint8_t *d, size_t n, uint8_t out[32])
{
	sha256_ctx c;
	sha256_init(&c);
	for (size_t at = 0; at < n;) {
		size_t k = next() % 200;
		k = k > n - at ? n - at : k;
		sha256_update(&c, d + at, k);
		at += k;
	}
	sha256_final(&c, out);
}

int main(void)
{
	int accel = sha256_accelerated(0);
	printf("SHA extensions: %s\n", accel ? "yes" : "no (portable code only)");
	enum { N = 4096, CASES = 700 };
	uint8_t *d = malloc(N);
	uint8_t (*want)[32] = malloc(CASES * sizeof *want);
	size_t *len = malloc(CASES * sizeof *len);
	for (size_t i = 0; i < N; i++)
		d[i] = (uint8_t)next();
	for (int i = 0; i < CASES; i++)
		len[i] = i < 300 ? (size_t)i : (size_t)(next() % N);
	/* first pass: whatever the CPU gives; second: the portable code */
	const double t_accel = accel ? time_45mb() : 0;
	if (accel) {
		fips("sha-ni");
		for (int i = 0; i < CASES; i++)
			pieces(d, len[i], want[i]);
	}
	sha256_accelerated(1);
	if (sha256_accelerated(0)) {
		fprintf(stderr, "FAIL: cannot switch to the portable code\n");
		return 1;
	}
	fips("portable");
	const double t_port = time_45mb();
	if (accel)
		printf("45 MB: SHA extensions %.3f s, portable %.3f s (%.1fx)\n", t_accel, t_port,
		       t_port / t_accel);
	int diff = 0;
	for (int i = 0; accel && i < CASES; i++) {
		uint8_t p[32];
		sha256(d, len[i], p);
		if (memcmp(p, want[i], 32)) {
			if (diff++ < 5)
				fprintf(stderr, "FAIL: %zu bytes: SHA extensions and portable code differ\n", len[i]);
			fails++;
		}
	}
	free(d);
	free(want);
	free(len);
	if (fails) {
		fprintf(stderr, "%d failures\n", fails);
		return 1;
	}
	printf("ok: FIPS 180-4 digests%s\n", accel ? "; SHA extensions equal the portable code on 700 inputs" : "");
	return 0;
}
