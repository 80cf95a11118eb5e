/* tokenizer.h — BERT BasicTokenizer + WordPiece, id-for-id identical to Hugging Face
 * `tokenizers` for a model's tokenizer.json.
 *
 * Embeddings are only as right as their token ids: one wrong split moves a vector further
 * than any float rounding does. So this module follows HF's Rust implementation (the
 * BertNormalizer, BertPreTokenizer and WordPiece model) rule by rule, down to the Unicode
 * tables HF happens to use (tokenizer_tables.h); docs/tokenizer-notes.md lists where HF
 * differs from the textbook description, and tests/test_tokenizer_diff.py checks parity on every code point and >10,000 texts.
 *
 * A tokenizer is immutable after tokenizer_load, so one may be shared by many threads.
 */
#ifndef EMB_TOKENIZER_H
#define EMB_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct tokenizer tokenizer;

/* Loads the tokenizer of the model directory `dir`: tokenizer.json when present (model type
 * WordPiece, normalizer BertNormalizer, pre-tokenizer BertPreTokenizer: BERT's and MPNet's),
 * otherwise vocab.txt + tokenizer_config.json (do_lower_case, strip_accents,
 * tokenize_chinese_chars).
 * Added tokens ("[CLS]", "[SEP]", "<s>", "<mask>" ...) are found in the raw text as HF does,
 * so a text that contains "[SEP]" gets the [SEP] id. One added token may be "normalized"
 * (MPNet's "<unk>"): it is then found in the normalized text, as HF does ("<UNK>" is it too);
 * it must be ASCII without whitespace, begin and end with punctuation, and not repeat its
 * first character later (EMB_EUNSUPPORTED otherwise, as for a second one and for
 * "single_word" tokens).
 * On success stores a new tokenizer in *out and returns EMB_OK; the caller frees it with
 * tokenizer_free. Errors: EMB_EIO (no tokenizer file), EMB_EFORMAT (malformed file, message
 * names it), EMB_EUNSUPPORTED (a normalizer/model this module does not implement). */
int tokenizer_load(const char *dir, tokenizer **out, emb_err *err);

/* Frees t. NULL is allowed. */
void tokenizer_free(tokenizer *t);

/* Tokenizes the UTF-8 text[0..len) (no NUL needed) into WordPiece ids WITHOUT special tokens.
 * Writes at most `cap` ids to ids[] and stops working once `cap` are produced, so truncated
 * encoding of a long document costs only the part that is kept. Since every id covers at
 * least one byte of input, cap >= len always holds the whole text.
 * Returns the number of ids written (>= 0), or -1 with EMB_EINVAL in *err when the text is
 * not valid UTF-8 (the message gives the byte offset). Text past the point where `cap` ids
 * were produced is not read (except, with a normalized added token, to the end of a run of
 * pre-tokens that may still turn out to be it), so invalid UTF-8 there goes unreported. */
long tokenizer_encode(const tokenizer *t, const char *text, size_t len, int32_t *ids,
		      size_t cap, emb_err *err);

/* As tokenizer_encode, and, when offsets is not NULL, also writes where each id came from
 * in text: offsets[2k] and offsets[2k + 1] are the byte range [start, end) of id k, as Hugging
 * Face `tokenizers` gives them (Encoding.offsets): a whole word or punctuation mark spans its
 * bytes, a WordPiece piece spans the source bytes of its characters (the last piece
 * runs to the word's end; where marks were reordered, HF's end may differ), an [UNK] the
 * whole word, an added token its
 * match; characters that normalization drops (control characters, stripped accents written
 * as separate marks) belong to no token. offsets has room for 2 * cap entries. Errors as
 * tokenizer_encode. */
long tokenizer_encode_offsets(const tokenizer *t, const char *text, size_t len, int32_t *ids,
			      size_t *offsets, size_t cap, emb_err *err);

/* Special token ids, looked up at load time: unk is the WordPiece model's unk_token (always
 * present). cls and sep are what a sequence starts and ends with: tokenizer.json's
 * post_processor "cls"/"sep" pairs when it has them (BertProcessing, RobertaProcessing: [CLS]
 * 101 / [SEP] 102 for BERT, <s> 0 / </s> 2 for MPNet), else tokenizer_config.json's cls_token
 * and sep_token, else "[CLS]"/"[SEP]". pad is tokenizer.json's padding.pad_id when set, else
 * tokenizer_config.json's pad_token, else "[PAD]". -1 when the vocabulary has no such
 * token. */
int32_t tokenizer_cls_id(const tokenizer *t);
int32_t tokenizer_sep_id(const tokenizer *t);
int32_t tokenizer_pad_id(const tokenizer *t);
int32_t tokenizer_unk_id(const tokenizer *t);

/* The file the tokenizer was read from (DIR/tokenizer.json or DIR/vocab.txt), for messages.
 * Valid while t lives. */
const char *tokenizer_file(const tokenizer *t);

/* One more than the largest id (ids in between may be unused: id_to_token gives NULL). */
size_t tokenizer_vocab_size(const tokenizer *t);

/* The vocabulary string of id, or NULL when id is out of range. Valid while t lives. */
const char *tokenizer_id_to_token(const tokenizer *t, int32_t id);

#endif
