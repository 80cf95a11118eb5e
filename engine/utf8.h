/* utf8.h — strict UTF-8, one definition for the engine and the tools: no overlong forms, no
 * surrogates, nothing past U+10FFFF, as Rust's and Python's decoders require. The tokenizer
 * must reject exactly what HF `tokenizers` rejects, and a text the indexer accepts must be one
 * the tokenizer accepts, so every check of a text goes through utf8_decode.
 *
 * Header-only: the tokenizer decodes in its inner loop. */
#ifndef EMB_UTF8_H
#define EMB_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Decodes the code point at s[0..n) (n >= 1) into *cp. Returns its length in bytes (1-4), or
 * 0 when s does not start with a valid sequence (then *cp is untouched). */
static inline size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	unsigned b = s[0];
	size_t len;
	uint32_t c, min_second = 0x80, max_second = 0xBF;
	if (b < 0x80) {
		*cp = b;
		return 1;
	} else if (b >= 0xC2 && b <= 0xDF) {
		len = 2, c = b & 0x1F;
	} else if (b >= 0xE0 && b <= 0xEF) {
		len = 3, c = b & 0x0F;
		if (b == 0xE0)
			min_second = 0xA0; /* overlong */
		else if (b == 0xED)
			max_second = 0x9F; /* surrogates */
	} else if (b >= 0xF0 && b <= 0xF4) {
		len = 4, c = b & 0x07;
		if (b == 0xF0)
			min_second = 0x90; /* overlong */
		else if (b == 0xF4)
			max_second = 0x8F; /* past U+10FFFF */
	} else {
		return 0;
	}
	if (n < len || s[1] < min_second || s[1] > max_second)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3F);
	}
	*cp = c;
	return len;
}

/* Writes code point c (<= U+10FFFF, not a surrogate) to s as 1-4 bytes; returns how many. */
static inline size_t utf8_encode(char *s, uint32_t c)
{
	if (c < 0x80) {
		s[0] = (char)c;
		return 1;
	}
	if (c < 0x800) {
		s[0] = (char)(0xC0 | c >> 6);
		s[1] = (char)(0x80 | (c & 0x3F));
		return 2;
	}
	if (c < 0x10000) {
		s[0] = (char)(0xE0 | c >> 12);
		s[1] = (char)(0x80 | (c >> 6 & 0x3F));
		s[2] = (char)(0x80 | (c & 0x3F));
		return 3;
	}
	s[0] = (char)(0xF0 | c >> 18);
	s[1] = (char)(0x80 | (c >> 12 & 0x3F));
	s[2] = (char)(0x80 | (c >> 6 & 0x3F));
	s[3] = (char)(0x80 | (c & 0x3F));
	return 4;
}

/* Offset of the first byte of s[0..len) that does not start a valid sequence, or -1 when all
 * of it is valid UTF-8. */
static inline long utf8_invalid_at(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < len) {
		uint32_t c;
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		size_t n = utf8_decode(p + i, len - i, &c);
		if (n == 0)
			return (long)i;
		i += n;
	}
	return -1;
}

#endif
