/* sha256.h — SHA-256 (FIPS 180-4), for model identity (a store records the sha256 of the
 * weights it was built with). Documents are told apart by store_hash, which needs no
 * cryptographic strength. Small enough to carry rather than depend on a crypto library. */
#ifndef EMB_SHA256_H
#define EMB_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct sha256_ctx {
	uint32_t h[8];
	uint64_t len;     /* bytes hashed so far */
	uint8_t buf[64];
	size_t nbuf;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, uint8_t digest[32]);

/* One-shot digest of data[0..n). */
void sha256(const void *data, size_t n, uint8_t digest[32]);

/* 1 when the digests are computed with the CPU's SHA extensions (x86 SHA-NI, chosen at run
 * time), 0 on the portable code; portable != 0 first switches to the portable code for the
 * rest of the process (tests compare the two). */
int sha256_accelerated(int portable);

/* Writes the 64 lowercase hex digits of digest and a NUL to hex[65]. */
void sha256_hex(const uint8_t digest[32], char hex[65]);

#endif
