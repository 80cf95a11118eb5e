/* tokenizer.c — BERT tokenization (BertNormalizer, BertPreTokenizer, WordPiece) that gives
 * the same ids as Hugging Face `tokenizers`, in one pass and without allocating.
 *
 * Why it exists: an embedding is only as right as its token ids, and every port of BERT's
 * tokenizer we looked at drifts from HF somewhere (accents, case, punctuation, CJK, long
 * words). So this file follows HF's Rust code rule by rule, including its quirks:
 *
 *  - HF normalizes the whole text (clean, space out CJK, NFD + drop Mn, lowercase) and only
 *    then splits on whitespace and punctuation. We do it word by word, which gives the same
 *    result because nothing crosses a whitespace, punctuation or CJK character, with one
 *    exception kept exact below: canonical reordering of marks runs across characters that
 *    clean_text removes.
 *  - Its Unicode facts come from three databases of different ages (categories: Unicode 8.0;
 *    NFD: ~10-12; lowercase and whitespace: Rust std, 16.0), none of them utf8proc's. The
 *    facts that differ live in tokenizer_tables.h, read off HF by scripts/gen-tokenizer-tables;
 *    utf8proc supplies NFD, combining classes and lowercase for everything else.
 *  - Added tokens ("[CLS]", "[MASK]" ...) are matched in the raw text before anything else,
 *    so a document that contains "[SEP]" gets the [SEP] id, as with HF.
 *  - Lowercasing is per code point, full mapping (U+0130 becomes "i" + U+0307), no context
 *    (a final sigma stays σ), and happens after accent stripping, so İ becomes plain "i".
 *
 * Speed: ASCII, most of any corpus, takes a table-driven path; only other code points go
 * through the tables and utf8proc. Vocabulary lookups hash the bytes of the word in place,
 * in two open-addressing tables (whole words, and "##" continuations keyed without the
 * prefix), so encoding mallocs nothing and a tokenizer can be shared by threads.
 */
#include "tokenizer.h"
#include "json_vocab.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <utf8proc.h>

struct cp_range {
	uint32_t lo, hi;
};
struct cp_map {
	uint32_t from, to;
};
#include "tokenizer_tables.h"
#include "utf8.h"

/* The longest word we keep: words are copied into a stack buffer of this many code points.
 * Models use 100 (anything longer becomes [UNK]), so this only bounds odd configurations. */
enum { WORD_MAX_CHARS = 1024, WORD_MAX_BYTES = 4 * WORD_MAX_CHARS };

/* What an ASCII byte does. */
enum { ASCII_WORD, ASCII_SPACE, ASCII_PUNCT, ASCII_DROP };

/* The key's place in the pool is in the slot itself: a hit then reads the slot and the
 * key's bytes, nothing else. */
struct vocab_slot {
	uint32_t hash;
	int32_t id; /* -1: empty */
	uint32_t key_off, key_len;
};

/* Maps a byte string to an id. `skip` bytes of each vocabulary token (the continuation
 * prefix, for the continuation table) are not part of the key. WordPiece asks mostly for
 * pieces that are not there (it tries the longest first), so a 32 KiB Bloom filter, which
 * stays in cache, answers most of those before the 1 MiB of slots is touched. */
enum { BLOOM_BITS = 1 << 18 };

struct vocab_table {
	uint64_t bloom[BLOOM_BITS / 64];
	struct vocab_slot *slots;
	uint32_t mask;
	size_t skip;
	size_t max_key; /* longest key, so lookups never try longer substrings */
};

struct added_token {
	uint32_t off, len; /* in the pool */
	int32_t id;
};

/* A "normalized" added token (MPNet's "<unk>") is matched, as in HF, in the normalized text
 * and becomes a pre-token of its own. Its content must begin and end with punctuation, so its
 * match always starts and ends at pre-token boundaries: it is then exactly a run of adjacent
 * pre-tokens (no whitespace between them) equal to `pre`, which the encoder recognizes after
 * the fact and replaces by the token's id. */
enum { NORM_PRE_MAX = 8, NORM_PRE_BYTES = 32 };
struct norm_token {
	int32_t id;
	size_t npre;
	char pre[NORM_PRE_MAX][NORM_PRE_BYTES]; /* NUL-terminated pre-tokens of the content */
};

struct tokenizer {
	bool clean_text, handle_chinese_chars, strip_accents, lowercase;
	uint32_t max_word_chars;
	int32_t unk_id, cls_id, sep_id, pad_id;
	char *file; /* the file loaded: DIR/tokenizer.json or DIR/vocab.txt */

	size_t nids;      /* ids run 0..nids-1; some may be unused */
	uint32_t *tok_off; /* per id: offset of its NUL-terminated string in pool, or UINT32_MAX */
	char *pool;
	size_t pool_len, pool_cap;

	struct vocab_table whole, cont;
	struct added_token *added;
	size_t nadded;
	uint8_t added_first[32]; /* bitmap of the first bytes of added tokens */
	bool has_norm; /* one normalized added token (norm) is matched */
	struct norm_token norm;
	char *norm_content; /* its content, split into norm.pre once the tables are set up */
	uint8_t ascii[128];
	char ascii_lower[128];
};

/* ---- Unicode predicates, as HF answers them ---- */

static bool in_ranges(const struct cp_range *r, size_t n, uint32_t c)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (c < r[mid].lo)
			hi = mid;
		else if (c > r[mid].hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

#define IN(table, c) in_ranges(table, sizeof table / sizeof table[0], c)

/* HF's ranges, verbatim: note 0x2B920, not Unicode's 0x2B820, as the start of Extension E. */
static bool is_cjk(uint32_t c)
{
	return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
	       (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
	       (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
	       (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static uint32_t hf_lower(uint32_t c)
{
	size_t lo = 0, hi = sizeof hf_lower_override / sizeof hf_lower_override[0];
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (c < hf_lower_override[mid].from)
			hi = mid;
		else if (c > hf_lower_override[mid].from)
			lo = mid + 1;
		else
			return hf_lower_override[mid].to;
	}
	return (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
}

/* Canonical combining class as HF's NFD knows it: marks newer than its data count as 0. */
static int hf_ccc(uint32_t c)
{
	if (c < 0x300 || !IN(hf_reorders, c))
		return 0;
	return utf8proc_get_property((utf8proc_int32_t)c)->combining_class;
}

/* ---- vocabulary hash tables ---- */

static inline uint32_t hash_step(uint32_t h, unsigned char b)
{
	return (h ^ b) * 16777619u; /* FNV-1a */
}

enum { HASH_SEED = 2166136261u };

static uint32_t hash_bytes(const char *s, size_t n)
{
	uint32_t h = HASH_SEED;
	for (size_t i = 0; i < n; i++)
		h = hash_step(h, (unsigned char)s[i]);
	return h;
}

static inline uint32_t bloom_bit2(uint32_t hash)
{
	return (hash * 0x9E3779B1u) >> 14; /* a second bit, independent of the low bits */
}

static bool bloom_has(const struct vocab_table *vt, uint32_t hash)
{
	uint32_t a = hash % BLOOM_BITS, b = bloom_bit2(hash);
	return (vt->bloom[a / 64] >> (a % 64) & 1) && (vt->bloom[b / 64] >> (b % 64) & 1);
}

static int32_t vocab_find(const tokenizer *t, const struct vocab_table *vt, const char *key,
			  size_t len, uint32_t hash)
{
	if (!bloom_has(vt, hash))
		return -1;
	for (uint32_t i = hash & vt->mask;; i = (i + 1) & vt->mask) {
		const struct vocab_slot *s = &vt->slots[i];
		if (s->id < 0)
			return -1;
		if (s->hash == hash && s->key_len == len &&
		    memcmp(t->pool + s->key_off, key, len) == 0)
			return s->id;
	}
}

/* Later entries with the same key replace earlier ones, as in HF's HashMap. The key is the
 * token at pool offset `off`, `len` bytes, less the table's `skip` bytes. */
static void vocab_insert(tokenizer *t, struct vocab_table *vt, int32_t id, uint32_t off,
			 uint32_t len)
{
	const char *key = t->pool + off + vt->skip;
	len -= (uint32_t)vt->skip;
	uint32_t hash = hash_bytes(key, len);
	uint32_t a = hash % BLOOM_BITS, b = bloom_bit2(hash);
	vt->bloom[a / 64] |= (uint64_t)1 << (a % 64);
	vt->bloom[b / 64] |= (uint64_t)1 << (b % 64);
	for (uint32_t i = hash & vt->mask;; i = (i + 1) & vt->mask) {
		struct vocab_slot *s = &vt->slots[i];
		if (s->id < 0 || (s->hash == hash && s->key_len == len &&
				  memcmp(t->pool + s->key_off, key, len) == 0)) {
			s->hash = hash;
			s->id = id;
			s->key_off = (uint32_t)(key - t->pool);
			s->key_len = len;
			break;
		}
	}
	if (len > vt->max_key)
		vt->max_key = len;
}

/* ---- encoding ---- */

/* One encode call's state: the output, and the word being gathered (normalized UTF-8). */
struct encoder {
	const tokenizer *t;
	int32_t *ids;
	size_t n, cap;
	size_t len;       /* bytes in word */
	uint32_t nchars;  /* code points in the word, counted past max_word_chars too */
	size_t reorder_floor; /* marks appended later may move back to here, not further */
	char word[WORD_MAX_BYTES];
	/* Offsets, only when the caller wants them (offs != NULL): offs[2k], offs[2k+1] is the
	 * source byte range of id k. Each byte of word remembers the range of the source code
	 * point it came from (src), as HF's alignments do; cs..ce is the code point being
	 * pushed, wend the end of the word's last one (also past max_word_chars). */
	size_t *offs;
	size_t cs, ce, wend;
	size_t src[WORD_MAX_BYTES][2];
	/* The adjacent pre-tokens that may still become the normalized added token: how many
	 * (matched <= norm.npre), and where the first began (ids and source bytes). While a
	 * match is pending, ids past cap are counted but not written, since the match may yet
	 * fold them into one id. */
	size_t matched, m_n, m_start;
	bool pending;
};

/* WordPiece: greedy longest match from the left; if some position matches nothing the
 * whole word is [UNK]. Writes the pieces to out[] (and, when ends is not NULL, where each
 * ends in w; an [UNK] ends at len) and returns their number. */
static size_t wordpiece(const tokenizer *t, const char *w, size_t len, int32_t *out,
			uint16_t *ends)
{
	size_t n = 0, start = 0;
	uint32_t prefix_hash[WORD_MAX_BYTES + 1];
	while (start < len) {
		const struct vocab_table *vt = start ? &t->cont : &t->whole;
		size_t end = len - start > vt->max_key ? start + vt->max_key : len;
		uint32_t h = HASH_SEED;
		for (size_t i = start; i < end; i++)
			prefix_hash[i - start + 1] = h = hash_step(h, (unsigned char)w[i]);
		int32_t id = -1;
		for (; end > start; end--) {
			if (end < len && ((unsigned char)w[end] & 0xC0) == 0x80)
				continue; /* not a character boundary */
			id = vocab_find(t, vt, w + start, end - start, prefix_hash[end - start]);
			if (id >= 0)
				break;
		}
		if (id < 0) {
			out[0] = t->unk_id;
			if (ends)
				ends[0] = (uint16_t)len;
			return 1;
		}
		if (ends)
			ends[n] = (uint16_t)end;
		out[n++] = id;
		start = end;
	}
	return n;
}

/* Emits an id that came from source bytes [start, end). Returns true once cap ids are out. */
static bool emit(struct encoder *e, int32_t id, size_t start, size_t end)
{
	if (e->n < e->cap) {
		if (e->offs) {
			e->offs[2 * e->n] = start;
			e->offs[2 * e->n + 1] = end;
		}
		e->ids[e->n] = id;
	}
	e->n++;
	return e->n >= e->cap && !e->pending;
}

/* Whether pre-tokens matched..matched+1 of the normalized token would be this word. */
static bool norm_next_is(const struct encoder *e, const char *w, size_t len, size_t k)
{
	const char *p = e->t->norm.pre[k];
	return k < e->t->norm.npre && strlen(p) == len && memcmp(p, w, len) == 0;
}

/* Something that is not a pre-token (whitespace, a CJK character's spaces, an unnormalized
 * added token) separates what follows from what went before. Returns true once cap ids are
 * out. */
static bool norm_gap(struct encoder *e)
{
	e->matched = 0;
	e->pending = false;
	return e->n >= e->cap;
}

/* Ends the current word: turns it into ids. Returns true once cap ids are out. */
static bool flush_word(struct encoder *e)
{
	const tokenizer *t = e->t;
	bool full = false;
	size_t n0 = e->n, start = e->offs && e->nchars ? e->src[0][0] : 0;
	if (t->has_norm && e->nchars > 0) {
		/* With one pattern, the first pre-token that breaks a partial match can only
		 * start a new one (pre-tokens are compared whole). */
		bool tok = e->nchars <= t->max_word_chars;
		if (tok && norm_next_is(e, e->word, e->len, e->matched)) {
			if (e->matched == 0) {
				e->m_n = n0;
				e->m_start = start;
			}
			e->matched++;
		} else if (tok && norm_next_is(e, e->word, e->len, 0)) {
			e->matched = 1;
			e->m_n = n0;
			e->m_start = start;
		} else {
			e->matched = 0;
		}
		e->pending = e->matched > 0;
	}
	if (e->nchars > t->max_word_chars) {
		full = emit(e, t->unk_id, e->offs ? e->src[0][0] : 0, e->wend);
	} else if (e->nchars > 0) {
		int32_t pieces[WORD_MAX_CHARS];
		uint16_t ends[WORD_MAX_CHARS];
		size_t k = wordpiece(t, e->word, e->len, pieces, e->offs ? ends : NULL);
		/* A piece spans its bytes' source ranges (the smallest range holding them all, as
		 * reordered marks may come from anywhere in the word); the last piece, or an
		 * [UNK], runs to the end of the word. */
		for (size_t i = 0, a = 0; i < k && !full; i++) {
			if (!e->offs) {
				full = emit(e, pieces[i], 0, 0);
				continue;
			}
			size_t b = ends[i], lo = e->src[a][0], hi = e->src[a][1];
			for (size_t q = a + 1; q < b; q++) {
				lo = e->src[q][0] < lo ? e->src[q][0] : lo;
				hi = e->src[q][1] > hi ? e->src[q][1] : hi;
			}
			full = emit(e, pieces[i], lo, b == e->len ? e->wend : hi);
			a = b;
		}
	}
	size_t nchars = e->nchars;
	e->len = 0;
	e->nchars = 0;
	e->reorder_floor = 0;
	if (t->has_norm && nchars > 0) {
		if (e->matched == t->norm.npre) {
			e->n = e->m_n;
			e->matched = 0;
			e->pending = false;
			return emit(e, t->norm.id, e->m_start, e->wend);
		}
		return e->n >= e->cap && !e->pending;
	}
	return full;
}

/* Appends one normalized code point to the word. Punctuation is a word of its own. A mark
 * with a combining class moves back past marks of a higher class, as NFD's canonical
 * ordering would have put it. */
static bool push_char(struct encoder *e, uint32_t c)
{
	const tokenizer *t = e->t;
	if (IN(hf_punct, c)) {
		if (flush_word(e))
			return true;
		e->len = utf8_encode(e->word, c);
		e->nchars = 1;
		for (size_t k = 0; k < e->len; k++) {
			e->src[k][0] = e->cs;
			e->src[k][1] = e->ce;
		}
		e->wend = e->ce;
		return flush_word(e);
	}
	e->wend = e->ce;
	if (e->nchars++ >= t->max_word_chars)
		return false; /* the word is [UNK] anyway: keep counting, stop copying */
	int ccc = t->strip_accents ? hf_ccc(c) : 0;
	if (ccc == 0) {
		size_t n = utf8_encode(e->word + e->len, c);
		if (e->offs)
			for (size_t k = e->len; k < e->len + n; k++) {
				e->src[k][0] = e->cs;
				e->src[k][1] = e->ce;
			}
		e->len += n;
		e->reorder_floor = e->len;
		return false;
	}
	size_t at = e->len;
	while (at > e->reorder_floor) {
		size_t prev = at - 1;
		while (((unsigned char)e->word[prev] & 0xC0) == 0x80)
			prev--;
		uint32_t p = 0; /* the word holds what utf8_encode wrote: always decodes */
		utf8_decode((const unsigned char *)e->word + prev, at - prev, &p);
		if (hf_ccc(p) <= ccc)
			break;
		at = prev;
	}
	char enc[4];
	size_t n = utf8_encode(enc, c);
	memmove(e->word + at + n, e->word + at, e->len - at);
	memcpy(e->word + at, enc, n);
	if (e->offs) {
		memmove(e->src[at + n], e->src[at], (e->len - at) * sizeof e->src[0]);
		for (size_t k = at; k < at + n; k++) {
			e->src[k][0] = e->cs;
			e->src[k][1] = e->ce;
		}
	}
	e->len += n;
	return false;
}

static bool push_lowered(struct encoder *e, uint32_t c)
{
	if (!e->t->lowercase)
		return push_char(e, c);
	if (c == 0x130) /* the one code point whose full lowercase is two */
		return push_char(e, 'i') || push_char(e, 0x307);
	return push_char(e, hf_lower(c));
}

/* A non-ASCII code point that survived cleaning: NFD, drop Mn, lowercase, append. */
static bool push_normalized(struct encoder *e, uint32_t c)
{
	if (!e->t->strip_accents)
		return push_lowered(e, c);
	utf8proc_int32_t dec[8];
	utf8proc_ssize_t n = 1;
	dec[0] = (utf8proc_int32_t)c;
	int boundclass = 0;
	if (!IN(hf_no_nfd, c))
		n = utf8proc_decompose_char((utf8proc_int32_t)c, dec, 8, UTF8PROC_DECOMPOSE,
					    &boundclass);
	if (n < 1 || n > 8) { /* cannot happen: no canonical decomposition is that long */
		n = 1;
		dec[0] = (utf8proc_int32_t)c;
	}
	for (utf8proc_ssize_t i = 0; i < n; i++) {
		uint32_t d = (uint32_t)dec[i];
		if (IN(hf_nonspacing_mark, d)) {
			/* Dropped, but a mark of class 0 still ended the run NFD reorders. */
			if (hf_ccc(d) == 0)
				e->reorder_floor = e->len;
			continue;
		}
		if (push_lowered(e, d))
			return true;
	}
	return false;
}

/* Leftmost-longest match of an added token at s (HF's Aho-Corasick does the same). */
static int32_t match_added(const tokenizer *t, const char *s, size_t n, size_t *len)
{
	int32_t id = -1;
	*len = 0;
	for (size_t i = 0; i < t->nadded; i++) {
		const struct added_token *a = &t->added[i];
		if (a->len > *len && a->len <= n && memcmp(t->pool + a->off, s, a->len) == 0) {
			*len = a->len;
			id = a->id;
		}
	}
	return id;
}

long tokenizer_encode(const tokenizer *t, const char *text, size_t len, int32_t *ids,
		      size_t cap, emb_err *err)
{
	return tokenizer_encode_offsets(t, text, len, ids, NULL, cap, err);
}

long tokenizer_encode_offsets(const tokenizer *t, const char *text, size_t len, int32_t *ids,
			      size_t *offsets, size_t cap, emb_err *err)
{
	if (cap == 0)
		return 0;
	struct encoder e;
	e.t = t;
	e.ids = ids;
	e.offs = offsets;
	e.cs = e.ce = e.wend = 0;
	e.n = 0;
	e.cap = cap;
	e.len = 0;
	e.nchars = 0;
	e.reorder_floor = 0;
	e.matched = e.m_n = e.m_start = 0;
	e.pending = false;
#define ENC_DONE() return (long)(e.n < cap ? e.n : cap)
	const unsigned char *s = (const unsigned char *)text;
	size_t i = 0;
	while (i < len) {
		unsigned b = s[i];
		if (t->nadded && (t->added_first[b >> 3] >> (b & 7) & 1)) {
			size_t mlen;
			int32_t id = match_added(t, text + i, len - i, &mlen);
			if (id >= 0) {
				if (flush_word(&e) || norm_gap(&e) || emit(&e, id, i, i + mlen))
					ENC_DONE();
				i += mlen;
				continue;
			}
		}
		if (b < 0x80) {
			i++;
			switch (t->ascii[b]) {
			case ASCII_WORD:
				if (e.nchars++ < t->max_word_chars) {
					if (e.offs) {
						e.src[e.len][0] = i - 1;
						e.src[e.len][1] = i;
					}
					e.word[e.len++] = t->ascii_lower[b];
				}
				e.wend = i;
				e.reorder_floor = e.len;
				break;
			case ASCII_SPACE:
				if (flush_word(&e) || norm_gap(&e))
					ENC_DONE();
				break;
			case ASCII_PUNCT:
				e.cs = i - 1;
				e.ce = i;
				if (push_char(&e, b))
					ENC_DONE();
				break;
			}
			continue;
		}
		uint32_t c;
		size_t n = utf8_decode(s + i, len - i, &c);
		if (n == 0) {
			emb_errf(err, EMB_EINVAL, "invalid UTF-8 at byte offset %zu", i);
			return -1;
		}
		e.cs = i;
		i += n;
		e.ce = i;
		if (t->clean_text && (c == 0xFFFD || IN(hf_other, c)))
			continue;
		bool full;
		if (IN(hf_whitespace, c))
			full = flush_word(&e) || norm_gap(&e);
		else if (t->handle_chinese_chars && is_cjk(c))
			full = flush_word(&e) || norm_gap(&e) || push_normalized(&e, c) ||
			       flush_word(&e) || norm_gap(&e);
		else
			full = push_normalized(&e, c);
		if (full)
			ENC_DONE();
	}
	flush_word(&e);
	ENC_DONE();
#undef ENC_DONE
}

/* ---- loading ---- */

static int pool_add(tokenizer *t, const char *s, size_t n, uint32_t *off, emb_err *err)
{
	if (t->pool_len + n + 1 > t->pool_cap) {
		size_t cap = t->pool_cap ? t->pool_cap : 1 << 16;
		while (cap < t->pool_len + n + 1)
			cap *= 2;
		if (cap > UINT32_MAX)
			return emb_errf(err, EMB_EFORMAT, "vocabulary too large");
		char *p = realloc(t->pool, cap);
		if (!p)
			return emb_errf(err, EMB_ENOMEM, "out of memory for the vocabulary");
		t->pool = p;
		t->pool_cap = cap;
	}
	*off = (uint32_t)t->pool_len;
	memcpy(t->pool + t->pool_len, s, n);
	t->pool[t->pool_len + n] = '\0';
	t->pool_len += n + 1;
	return EMB_OK;
}

/* A vocabulary entry on its way into the hash tables. */
struct vocab_entry {
	int32_t id;
	uint32_t off, len;
};

/* Records the string of an id. Ids may come in any order (tokenizer.json) and need not be
 * dense. If `e` is given, it receives the entry for build_tables. */
static int set_token(tokenizer *t, int32_t id, const char *s, size_t n, struct vocab_entry *e,
		     emb_err *err)
{
	if ((size_t)id >= t->nids) {
		size_t nids = t->nids ? t->nids : 1024;
		while (nids <= (size_t)id)
			nids *= 2;
		uint32_t *off = realloc(t->tok_off, nids * sizeof *off);
		if (!off)
			return emb_errf(err, EMB_ENOMEM, "out of memory for the vocabulary");
		t->tok_off = off;
		for (size_t i = t->nids; i < nids; i++)
			t->tok_off[i] = UINT32_MAX;
		t->nids = nids;
	}
	int rc = pool_add(t, s, n, &t->tok_off[id], err);
	if (e)
		*e = (struct vocab_entry){id, t->tok_off[id], (uint32_t)n};
	return rc;
}

/* Entries go in file order, so that duplicate strings resolve as in HF (the last wins). */
static int build_tables(tokenizer *t, const struct vocab_entry *entries, size_t count,
			const char *prefix, emb_err *err)
{
	size_t size = 64;
	while (size < 2 * count)
		size *= 2;
	size_t plen = strlen(prefix);
	struct vocab_table *tabs[2] = {&t->whole, &t->cont};
	for (int k = 0; k < 2; k++) {
		tabs[k]->slots = malloc(size * sizeof *tabs[k]->slots);
		if (!tabs[k]->slots)
			return emb_errf(err, EMB_ENOMEM, "out of memory for the vocabulary");
		memset(tabs[k]->slots, 0xFF, size * sizeof *tabs[k]->slots);
		tabs[k]->mask = (uint32_t)(size - 1);
	}
	t->cont.skip = plen;
	for (size_t i = 0; i < count; i++) {
		const struct vocab_entry *e = &entries[i];
		vocab_insert(t, &t->whole, e->id, e->off, e->len);
		if (e->len >= plen && memcmp(t->pool + e->off, prefix, plen) == 0)
			vocab_insert(t, &t->cont, e->id, e->off, e->len);
	}
	/* Words longer than this are [UNK] before any lookup, so longer keys never match. */
	if (t->whole.max_key > WORD_MAX_BYTES)
		t->whole.max_key = WORD_MAX_BYTES;
	if (t->cont.max_key > WORD_MAX_BYTES)
		t->cont.max_key = WORD_MAX_BYTES;
	return EMB_OK;
}

/* The id of a whole token: added tokens first, as in HF (they may be missing from the
 * model's vocabulary). */
static int32_t find_token(const tokenizer *t, const char *s)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < t->nadded; i++)
		if (t->added[i].len == n && memcmp(t->pool + t->added[i].off, s, n) == 0)
			return t->added[i].id;
	return vocab_find(t, &t->whole, s, n, hash_bytes(s, n));
}

/* Special tokens in the text are matched before normalization (HF: "normalized": false). */
static int add_added_token(tokenizer *t, const char *s, int32_t id, emb_err *err)
{
	size_t n = strlen(s);
	if (n == 0)
		return EMB_OK;
	for (size_t i = 0; i < t->nadded; i++)
		if (t->added[i].len == n && memcmp(t->pool + t->added[i].off, s, n) == 0)
			return EMB_OK;
	struct added_token *a = realloc(t->added, (t->nadded + 1) * sizeof *a);
	if (!a)
		return emb_errf(err, EMB_ENOMEM, "out of memory");
	t->added = a;
	a = &t->added[t->nadded];
	a->len = (uint32_t)n;
	a->id = id;
	int rc = pool_add(t, s, n, &a->off, err);
	if (rc)
		return rc;
	t->nadded++;
	unsigned b = (unsigned char)s[0];
	t->added_first[b >> 3] |= (uint8_t)(1u << (b & 7));
	return EMB_OK;
}

static void setup_ascii(tokenizer *t)
{
	for (unsigned c = 0; c < 128; c++) {
		uint8_t cls = ASCII_WORD;
		if (c == ' ' || (c >= 9 && c <= 13))
			cls = ASCII_SPACE;
		if (t->clean_text && (c == 0 || (c < 32 && c != 9 && c != 10 && c != 13) ||
				      c == 127))
			cls = ASCII_DROP;
		if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
		    (c >= 123 && c <= 126))
			cls = ASCII_PUNCT;
		t->ascii[c] = cls;
		t->ascii_lower[c] = (char)(t->lowercase && c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
}

static char *path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);
	if (p)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

/* A token name in tokenizer_config.json: a string, or an AddedToken object {"content": ..}. */
static const char *config_token(json_t *cfg, const char *key, const char *dflt)
{
	json_t *v = cfg ? json_object_get(cfg, key) : NULL;
	if (json_is_object(v))
		v = json_object_get(v, "content");
	return json_is_string(v) ? json_string_value(v) : dflt;
}

static int load_json_file(const char *path, json_t **out, emb_err *err)
{
	json_error_t jerr;
	*out = json_load_file(path, 0, &jerr);
	if (*out)
		return EMB_OK;
	if (json_error_code(&jerr) == json_error_cannot_open_file)
		return emb_errf(err, EMB_EIO, "%s", jerr.text); /* names the file */
	return emb_errf(err, EMB_EFORMAT, "%s:%d:%d: %s", path, jerr.line, jerr.column,
			jerr.text);
}

/* The whole of f, NUL-terminated, or NULL (the caller then reads the file through jansson,
 * which words the error). */
static char *read_all(FILE *f, size_t *len)
{
	if (fseek(f, 0, SEEK_END) != 0)
		return NULL;
	long n = ftell(f);
	if (n < 0 || fseek(f, 0, SEEK_SET) != 0)
		return NULL;
	char *buf = malloc((size_t)n + 1);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		return NULL;
	}
	if (buf) {
		buf[n] = 0;
		*len = (size_t)n;
	}
	return buf;
}

/* As load_json_file, from text already read. */
static int load_json_text(const char *path, const char *text, size_t len, json_t **out,
			  emb_err *err)
{
	json_error_t jerr;
	*out = json_loadb(text, len, 0, &jerr);
	if (*out)
		return EMB_OK;
	return emb_errf(err, EMB_EFORMAT, "%s:%d:%d: %s", path, jerr.line, jerr.column,
			jerr.text);
}

static bool bool_field(json_t *obj, const char *key, bool dflt)
{
	json_t *v = json_object_get(obj, key);
	return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* fv: the vocabulary already read by json_vocab_take (root's model.vocab is then an empty
 * object), or NULL to read it from root. */
static int load_tokenizer_json(tokenizer *t, const char *path, json_t *root,
			       const json_vocab *fv, emb_err *err)
{
	json_t *model = json_object_get(root, "model");
	if (!json_is_object(model))
		return emb_errf(err, EMB_EFORMAT, "%s: no \"model\" object", path);
	json_t *type = json_object_get(model, "type");
	if (type && !(json_is_string(type) && strcmp(json_string_value(type), "WordPiece") == 0))
		return emb_errf(err, EMB_EUNSUPPORTED,
				"%s: model type \"%s\" is not supported (only WordPiece)", path,
				json_is_string(type) ? json_string_value(type) : "?");
	if (!type && !json_object_get(model, "continuing_subword_prefix"))
		return emb_errf(err, EMB_EUNSUPPORTED,
				"%s: model has no type and is not WordPiece", path);

	json_t *norm = json_object_get(root, "normalizer");
	if (norm && !json_is_null(norm)) {
		json_t *nt = json_object_get(norm, "type");
		if (!json_is_string(nt) || strcmp(json_string_value(nt), "BertNormalizer") != 0)
			return emb_errf(err, EMB_EUNSUPPORTED,
					"%s: normalizer type \"%s\" is not supported (only "
					"BertNormalizer)", path,
					json_is_string(nt) ? json_string_value(nt) : "?");
		t->clean_text = bool_field(norm, "clean_text", true);
		t->handle_chinese_chars = bool_field(norm, "handle_chinese_chars", true);
		t->lowercase = bool_field(norm, "lowercase", true);
		t->strip_accents = bool_field(norm, "strip_accents", t->lowercase);
	}
	json_t *pre = json_object_get(root, "pre_tokenizer");
	json_t *pt = json_object_get(pre, "type");
	if (!json_is_string(pt) || strcmp(json_string_value(pt), "BertPreTokenizer") != 0)
		return emb_errf(err, EMB_EUNSUPPORTED,
				"%s: pre_tokenizer \"%s\" is not supported (only BertPreTokenizer)",
				path, json_is_string(pt) ? json_string_value(pt) : "none");

	json_t *vocab = json_object_get(model, "vocab");
	if (!fv && (!json_is_object(vocab) || json_object_size(vocab) == 0))
		return emb_errf(err, EMB_EFORMAT, "%s: model.vocab is not a non-empty object",
				path);
	json_t *prefix = json_object_get(model, "continuing_subword_prefix");
	json_t *unk = json_object_get(model, "unk_token");
	json_t *maxc = json_object_get(model, "max_input_chars_per_word");
	if ((prefix && !json_is_string(prefix)) || (unk && !json_is_string(unk)) ||
	    (maxc && !json_is_integer(maxc)))
		return emb_errf(err, EMB_EFORMAT, "%s: malformed WordPiece model fields", path);
	if (maxc) {
		json_int_t m = json_integer_value(maxc);
		if (m < 1 || m > WORD_MAX_CHARS)
			return emb_errf(err, EMB_EUNSUPPORTED,
					"%s: max_input_chars_per_word %lld is outside 1..%d", path,
					(long long)m, WORD_MAX_CHARS);
		t->max_word_chars = (uint32_t)m;
	}

	size_t count = fv ? fv->n : json_object_size(vocab), k = 0;
	struct vocab_entry *entries = malloc(count * sizeof *entries);
	if (!entries)
		return emb_errf(err, EMB_ENOMEM, "out of memory for the vocabulary");
	const char *key;
	json_t *val;
	int rc = EMB_OK;
	for (size_t i = 0; fv && i < fv->n && !rc; i++) /* ids checked by json_vocab_take */
		rc = set_token(t, fv->ent[i].id, fv->keys + fv->ent[i].off, fv->ent[i].len,
			       &entries[k++], err);
	if (!fv) {
		json_object_foreach(vocab, key, val) {
			json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
			if (id < 0 || id >= (1 << 24)) {
				rc = emb_errf(err, EMB_EFORMAT,
					      "%s: vocab entry \"%.40s\" has a bad id", path, key);
				break;
			}
			if ((rc = set_token(t, (int32_t)id, key, strlen(key), &entries[k++], err)))
				break;
		}
	}
	if (!rc)
		rc = build_tables(t, entries, k, prefix ? json_string_value(prefix) : "##", err);
	free(entries);
	if (rc)
		return rc;

	const char *unk_name = unk ? json_string_value(unk) : "[UNK]";
	if ((t->unk_id = find_token(t, unk_name)) < 0)
		return emb_errf(err, EMB_EFORMAT, "%s: unk_token \"%s\" is not in the vocabulary",
				path, unk_name);

	json_t *added = json_object_get(root, "added_tokens"), *a;
	size_t ai;
	json_array_foreach(added, ai, a) {
		json_t *content = json_object_get(a, "content"), *aid = json_object_get(a, "id");
		if (!json_is_string(content) || !json_is_integer(aid) ||
		    json_integer_value(aid) < 0 || json_integer_value(aid) >= (1 << 24))
			return emb_errf(err, EMB_EFORMAT, "%s: malformed added_tokens[%zu]", path,
					ai);
		/* lstrip/rstrip only swallow whitespace, which BERT drops anyway. */
		if (bool_field(a, "single_word", false))
			return emb_errf(err, EMB_EUNSUPPORTED,
					"%s: added token \"%s\" is single_word: not supported", path,
					json_string_value(content));
		int32_t id = (int32_t)json_integer_value(aid);
		const char *s = json_string_value(content);
		if (((size_t)id >= t->nids || t->tok_off[id] == UINT32_MAX) &&
		    (rc = set_token(t, id, s, strlen(s), NULL, err)))
			return rc;
		if (bool_field(a, "normalized", false)) {
			if (t->has_norm)
				return emb_errf(err, EMB_EUNSUPPORTED,
						"%s: more than one normalized added token (\"%s\"): "
						"not supported", path, s);
			t->has_norm = true;
			t->norm.id = id;
			if (!(t->norm_content = strdup(s)))
				return emb_errf(err, EMB_ENOMEM, "out of memory");
			continue;
		}
		if ((rc = add_added_token(t, s, id, err)))
			return rc;
	}
	return EMB_OK;
}

/* The fallback: vocab.txt (id = line number) + tokenizer_config.json, as transformers'
 * BertTokenizerFast builds a tokenizer from them. */
static int load_vocab_txt(tokenizer *t, const char *path, json_t *cfg, emb_err *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return emb_errf(err, EMB_EIO, "%s: %s", path, strerror(errno));
	char *buf = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		if (n == cap) {
			cap = cap ? 2 * cap : 1 << 18;
			char *p = realloc(buf, cap);
			if (!p) {
				free(buf);
				fclose(f);
				return emb_errf(err, EMB_ENOMEM, "out of memory reading %s", path);
			}
			buf = p;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	bool bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		return emb_errf(err, EMB_EIO, "%s: read error", path);
	}
	size_t lines = 0;
	for (size_t i = 0; i < n; i++)
		lines += buf[i] == '\n';
	struct vocab_entry *entries = malloc((lines + 1) * sizeof *entries);
	int rc = entries ? EMB_OK : emb_errf(err, EMB_ENOMEM, "out of memory reading %s", path);
	size_t count = 0;
	for (size_t i = 0; i < n && !rc;) {
		size_t j = i;
		while (j < n && buf[j] != '\n')
			j++;
		size_t end = j > i && buf[j - 1] == '\r' ? j - 1 : j;
		if (count >= (1 << 24))
			rc = emb_errf(err, EMB_EFORMAT, "%s: too many lines", path);
		else if (!(rc = set_token(t, (int32_t)count, buf + i, end - i, &entries[count],
					  err)))
			count++;
		i = j + 1;
	}
	free(buf);
	if (!rc && count == 0)
		rc = emb_errf(err, EMB_EFORMAT, "%s: empty vocabulary", path);
	if (!rc)
		rc = build_tables(t, entries, count, "##", err);
	free(entries);
	if (rc)
		return rc;

	t->lowercase = bool_field(cfg, "do_lower_case", true);
	t->handle_chinese_chars = bool_field(cfg, "tokenize_chinese_chars", true);
	t->strip_accents = bool_field(cfg, "strip_accents", t->lowercase);
	const char *unk = config_token(cfg, "unk_token", "[UNK]");
	if ((t->unk_id = find_token(t, unk)) < 0)
		return emb_errf(err, EMB_EFORMAT, "%s: unk_token \"%s\" is not in the vocabulary",
				path, unk);
	static const char *const keys[] = {"pad_token", "unk_token", "cls_token", "sep_token",
					   "mask_token"};
	static const char *const dflt[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
	for (int i = 0; i < 5; i++) {
		const char *s = config_token(cfg, keys[i], dflt[i]);
		int32_t id = find_token(t, s);
		if (id >= 0 && (rc = add_added_token(t, s, id, err)))
			return rc;
	}
	return EMB_OK;
}

/* A post_processor's ["<s>", 0] pair: the id, or -1 when absent or malformed. */
static int32_t special_pair(json_t *pp, const char *key)
{
	json_t *v = json_object_get(pp, key);
	if (json_is_array(v) && json_array_size(v) == 2 && json_is_integer(json_array_get(v, 1)))
		return (int32_t)json_integer_value(json_array_get(v, 1));
	return -1;
}

/* BertProcessing and RobertaProcessing name the ids they put first and last ("cls"/"sep"):
 * [CLS]/[SEP] for BERT, <s>/</s> for MPNet. "padding" names the pad id when set. */
static void post_processor_specials(tokenizer *t, json_t *pp, json_t *padding)
{
	json_t *type = json_object_get(pp, "type");
	if (json_is_string(type) && (strcmp(json_string_value(type), "BertProcessing") == 0 ||
				     strcmp(json_string_value(type), "RobertaProcessing") == 0)) {
		int32_t cls = special_pair(pp, "cls"), sep = special_pair(pp, "sep");
		if (cls >= 0)
			t->cls_id = cls;
		if (sep >= 0)
			t->sep_id = sep;
	}
	json_t *pad = json_object_get(padding, "pad_id");
	if (json_is_integer(pad) && json_integer_value(pad) >= 0 &&
	    json_integer_value(pad) < (1 << 24))
		t->pad_id = (int32_t)json_integer_value(pad);
}

/* Splits the normalized added token's content into the pre-tokens the encoder will see
 * (lowercased ASCII only; dropped control characters skipped). Refuses what the encoder's
 * matching cannot find exactly: whitespace or non-ASCII inside, an end that is not
 * punctuation, or a first pre-token repeated later (a partial match could then hide the
 * start of another). */
static int split_norm_token(tokenizer *t, const char *path, emb_err *err)
{
	const char *c = t->norm_content;
	struct norm_token *nt = &t->norm;
	size_t wl = 0;
	bool last_punct = false;
	nt->npre = 0;
	for (size_t i = 0;; i++) {
		unsigned b = (unsigned char)c[i];
		int cls = b == 0 ? ASCII_PUNCT : b < 0x80 ? t->ascii[b] : -1;
		if (cls == -1 || cls == ASCII_SPACE)
			goto refuse;
		if (cls == ASCII_DROP)
			continue;
		if (cls == ASCII_PUNCT && wl > 0) {
			nt->pre[nt->npre - 1][wl] = '\0';
			wl = 0;
		}
		if (b == 0)
			break;
		if (cls == ASCII_WORD && wl == 0 && nt->npre == 0)
			goto refuse; /* must start with punctuation */
		if ((cls == ASCII_PUNCT || wl == 0) && nt->npre++ == NORM_PRE_MAX)
			goto refuse;
		if (wl + 1 >= NORM_PRE_BYTES)
			goto refuse;
		nt->pre[nt->npre - 1][wl] = cls == ASCII_WORD ? t->ascii_lower[b] : (char)b;
		if (cls == ASCII_PUNCT) {
			nt->pre[nt->npre - 1][1] = '\0';
			last_punct = true;
		} else {
			wl++;
			last_punct = false;
		}
	}
	if (nt->npre == 0 || !last_punct)
		goto refuse;
	for (size_t k = 1; k < nt->npre; k++)
		if (strcmp(nt->pre[k], nt->pre[0]) == 0)
			goto refuse;
	return EMB_OK;
refuse:
	return emb_errf(err, EMB_EUNSUPPORTED,
			"%s: normalized added token \"%s\" is not supported (only ASCII that "
			"begins and ends with punctuation, no whitespace)", path, c);
}

int tokenizer_load(const char *dir, tokenizer **out, emb_err *err)
{
	*out = NULL;
	tokenizer *t = calloc(1, sizeof *t);
	char *json_path = path_join(dir, "tokenizer.json");
	char *txt_path = path_join(dir, "vocab.txt");
	char *cfg_path = path_join(dir, "tokenizer_config.json");
	json_t *root = NULL, *cfg = NULL;
	int rc = EMB_OK;
	if (!t || !json_path || !txt_path || !cfg_path) {
		rc = emb_errf(err, EMB_ENOMEM, "out of memory");
		goto done;
	}
	t->clean_text = true;
	t->max_word_chars = 100;
	FILE *probe = fopen(cfg_path, "rb");
	if (probe) {
		fclose(probe);
		if ((rc = load_json_file(cfg_path, &cfg, err)))
			goto done;
	}
	probe = fopen(json_path, "rb");
	if (probe) {
		json_vocab fv = {0};
		int fast = 0;
		size_t len;
		char *text = read_all(probe, &len);
		fclose(probe);
		if (text && (fast = json_vocab_take(text, len, &fv)) < 0)
			rc = emb_errf(err, EMB_ENOMEM, "out of memory for the vocabulary");
		else if (!(rc = text ? load_json_text(json_path, text, len, &root, err)
				     : load_json_file(json_path, &root, err)))
			rc = load_tokenizer_json(t, json_path, root, fast ? &fv : NULL, err);
		json_vocab_free(&fv);
		free(text);
		t->file = json_path;
		json_path = NULL;
	} else if (errno == ENOENT && (probe = fopen(txt_path, "rb"))) {
		fclose(probe);
		rc = load_vocab_txt(t, txt_path, cfg, err);
		t->file = txt_path;
		txt_path = NULL;
	} else {
		rc = emb_errf(err, EMB_EIO, "%s: %s (and no vocab.txt beside it)", json_path,
			      strerror(errno));
	}
	if (rc)
		goto done;
	t->cls_id = find_token(t, config_token(cfg, "cls_token", "[CLS]"));
	t->sep_id = find_token(t, config_token(cfg, "sep_token", "[SEP]"));
	t->pad_id = find_token(t, config_token(cfg, "pad_token", "[PAD]"));
	/* What HF itself wraps a text in wins over tokenizer_config.json's names. */
	if (root)
		post_processor_specials(t, json_object_get(root, "post_processor"),
					json_object_get(root, "padding"));
	setup_ascii(t);
	if (t->has_norm && (rc = split_norm_token(t, t->file, err)))
		goto done;
done:
	json_decref(root);
	json_decref(cfg);
	free(json_path);
	free(txt_path);
	free(cfg_path);
	if (rc) {
		tokenizer_free(t);
		return rc;
	}
	*out = t;
	return EMB_OK;
}

void tokenizer_free(tokenizer *t)
{
	if (!t)
		return;
	free(t->whole.slots);
	free(t->cont.slots);
	free(t->tok_off);
	free(t->pool);
	free(t->added);
	free(t->norm_content);
	free(t->file);
	free(t);
}

int32_t tokenizer_cls_id(const tokenizer *t) { return t->cls_id; }
int32_t tokenizer_sep_id(const tokenizer *t) { return t->sep_id; }
int32_t tokenizer_pad_id(const tokenizer *t) { return t->pad_id; }
int32_t tokenizer_unk_id(const tokenizer *t) { return t->unk_id; }
const char *tokenizer_file(const tokenizer *t) { return t->file; }

size_t tokenizer_vocab_size(const tokenizer *t)
{
	size_t n = t->nids;
	while (n > 0 && t->tok_off[n - 1] == UINT32_MAX)
		n--;
	return n;
}

const char *tokenizer_id_to_token(const tokenizer *t, int32_t id)
{
	if (id < 0 || (size_t)id >= t->nids || t->tok_off[id] == UINT32_MAX)
		return NULL;
	return t->pool + t->tok_off[id];
}
