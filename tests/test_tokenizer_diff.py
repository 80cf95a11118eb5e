#!/usr/bin/env python3
"""Differential test: engine/tokenizer.c against Hugging Face `tokenizers`, id for id.

Parity is the whole point of the tokenizer, so this compares the two on many texts and
requires 100% identical ids (no [CLS]/[SEP], no truncation):

  model      the model's tokenizer.json on SciFact titles, abstracts and queries, plus
             random strings from many scripts (see random_text) and hand-picked traps
  vocab.txt  the same texts through the fallback loader (vocab.txt + tokenizer_config.json)
  codepoints every code point U+0000..U+10FFFF, through a made-up vocabulary that has every
             character (and "##" + character) as a token, so the ids spell out exactly what
             normalization did to it
  flags      random texts under each BertNormalizer setting (lowercase, strip_accents,
             clean_text, handle_chinese_chars), other prefixes and word limits, with
             vocabularies made from the texts themselves so WordPiece has real choices
  mpnet      all-mpnet-base-v2's tokenizer.json as published (tests/data/, always; and the
             fetched model's, when scripts/fetch-model all-mpnet-base-v2 has run) on the
             same texts plus MPNet traps: <s>/</s>/<pad>/<mask>/[UNK] are matched in the raw
             text, "<unk>" is a *normalized* added token (so "<UNK>" and "<u\0nk>" are it
             too), <mask> has lstrip; ids, then byte offsets whole and truncated to 24 and
             5 tokens (a truncation inside "<unk>" must still give its one id)

C ids come from $BUILD/tests/tool_tokenize. The seed is fixed (TOKENIZER_DIFF_SEED
overrides it) so a failure can be replayed. Exit 77 (skip) only without `tokenizers`.
"""
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import unicodedata

try:
    from tokenizers import Tokenizer, normalizers
except ImportError:
    print("SKIP: python module `tokenizers` is missing (run scripts/setup)")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", "build")
TOOL = os.path.join(ROOT, BUILD, "tests", "tool_tokenize")
SEED = int(os.environ.get("TOKENIZER_DIFF_SEED", "20250611"))
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def find_dir(env, *candidates):
    for d in ([os.environ[env]] if os.environ.get(env) else []) + list(candidates):
        d = os.path.join(ROOT, d)
        if os.path.isdir(d):
            return d
    return None


MODEL = find_dir("EMBED_MODEL", ".cache/models/all-MiniLM-L6-v2",
                 "../shared/models/all-MiniLM-L6-v2")
MPNET_DATA = os.path.join(ROOT, "tests/data/all-mpnet-base-v2-tokenizer")
MPNET_FETCHED = find_dir("MPNET_MODEL", ".cache/models/all-mpnet-base-v2")
MPNET_TRAPS = [
    "<s>", "</s>", "<pad>", "<mask>", "<unk>", "<UNK>", "<Unk>", "[UNK]", "[unk]", "a<UNK>b",
    "x <u\x00nK> [UNK] <s></s>", "<<unk>>", "<unk><unk>", "<unk<unk>>", "<ÛNK>",
    "a<un\u0301k>", "< unk>", "<un k>", "<unk >", "<unk", "unk>", "<u\u200bnk>", "<unk\x7f>",
    "a <mask> b", "hello  <mask>x", "a<mask>b", "\t<mask>", "<MASK>", "< mask>", "<s> hi </s>",
    "<s>hi</s><pad>", "<unk>中<unk>", "中<unk>中", "é<unk>é", "<UNK>" * 30,
    "x" * 101 + "<unk>", "<" + "u" * 120 + ">", "<unk>" + "y" * 101,
]
SCIFACT = find_dir("SCIFACT_DIR", "../shared/data/scifact")

# (lo, hi) code point ranges random_text draws from, by kind.
SCRIPTS = {
    "latin": [(0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x1E00, 0x1EFF)],
    "marks": [(0x300, 0x36F), (0x483, 0x489), (0x591, 0x5C7), (0x610, 0x61A), (0x64B, 0x65F),
              (0x900, 0x903), (0x93A, 0x94F), (0xE31, 0xE3A), (0x1AB0, 0x1ACE),
              (0x1DC0, 0x1DFF), (0x20D0, 0x20F0), (0xFE20, 0xFE2F), (0x1D165, 0x1D169),
              (0x1D16D, 0x1D172), (0x302A, 0x302F), (0x7FD, 0x7FD), (0x898, 0x89F),
              (0x8CA, 0x8E2), (0x10D24, 0x10D27), (0x1E130, 0x1E136), (0x16FF0, 0x16FF1)],
    "greek": [(0x370, 0x3FF), (0x1F00, 0x1FFF)],
    "cyrillic": [(0x400, 0x52F)],
    "arabic_hebrew": [(0x590, 0x5FF), (0x600, 0x6FF), (0x750, 0x77F), (0x8A0, 0x8FF)],
    "indic_thai": [(0x900, 0x97F), (0x980, 0x9FF), (0xB80, 0xBFF), (0xD80, 0xDFF),
                   (0xE00, 0xE7F), (0xF00, 0xFFF), (0x1000, 0x109F)],
    "cjk": [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2EBEF),
            (0x30000, 0x323AF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F), (0x2E80, 0x2FDF),
            (0x3000, 0x303F)],
    "kana_hangul": [(0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF61, 0xFF9F), (0xAC00, 0xD7A3),
                    (0x1100, 0x11FF), (0x3130, 0x318F)],
    "emoji": [(0x1F300, 0x1FAFF), (0x2600, 0x27BF), (0x200D, 0x200D), (0xFE0F, 0xFE0F),
              (0x1F1E6, 0x1F1FF), (0x1F3FB, 0x1F3FF), (0xE0020, 0xE007F)],
    "control": [(0x0, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x200B, 0x200F), (0x2028, 0x202F),
                (0x2060, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFD), (0x180E, 0x180E),
                (0x600, 0x605), (0x110BD, 0x110BD), (0x1D173, 0x1D17A), (0xE000, 0xE00F),
                (0xF0000, 0xF0003), (0xFFFE, 0xFFFF), (0x890, 0x891), (0x13430, 0x1343F)],
    "space": [(0x9, 0xD), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
              (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
              (0x3000, 0x3000), (0x1C, 0x1F)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E), (0xA1, 0xBF),
              (0x2010, 0x2027), (0x2030, 0x205E), (0x2E00, 0x2E5D), (0x3001, 0x3003),
              (0xFF01, 0xFF0F), (0x166D, 0x166E), (0x111C8, 0x111C9), (0x1FEF, 0x1FEF),
              (0x2260, 0x2260), (0x226E, 0x226F), (0x37E, 0x37E), (0x387, 0x387)],
    "casing": [(0x130, 0x130), (0x3A3, 0x3A3), (0x1E9E, 0x1E9E), (0x3F4, 0x3F4),
               (0x2126, 0x2126), (0x212A, 0x212B), (0x1C4, 0x1CC), (0x13A0, 0x13F5),
               (0x1C90, 0x1CBF), (0x10A0, 0x10C5), (0xA7C0, 0xA7DC), (0x1C89, 0x1C8A),
               (0x10D50, 0x10D65), (0x16EA0, 0x16EB8), (0x10400, 0x10427), (0x1E900, 0x1E921),
               (0x24B6, 0x24CF), (0xFF21, 0xFF3A), (0x1F88, 0x1FAF), (0x11938, 0x11938)],
    "any": [(0x80, 0xD7FF), (0xE000, 0x10FFFF)],
    "digits": [(0x30, 0x39), (0x660, 0x669), (0xFF10, 0xFF19)],
}


def pick(rng, kind):
    lo, hi = rng.choice(SCRIPTS[kind])
    return chr(rng.randint(lo, hi))


def random_text(rng):
    """A text of 1..30 runs; each run is a few characters of one kind, some runs cased."""
    parts = []
    for _ in range(rng.randint(1, 30)):
        kind = rng.choice(list(SCRIPTS) + ["ascii"] * 4)
        n = rng.choice([1, 1, 2, 3, 5, 8, 13])
        if kind == "ascii":
            run = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123"
                                     "456789") for _ in range(n))
        elif kind == "marks":
            run = pick(rng, "latin") + "".join(
                pick(rng, rng.choice(["marks", "marks", "marks", "control"])) for _ in range(n))
        else:
            run = "".join(pick(rng, kind) for _ in range(n))
        if rng.random() < 0.1:
            run = run.upper()
        parts.append(run)
        parts.append(rng.choice(["", " ", " ", " ", "\n", "  ", "-", ". ", "\t", "\u00a0"]))
    return "".join(parts)


def long_words(rng):
    """Words near and past the 100-character limit, counted after normalization."""
    out = []
    for n in (99, 100, 101, 150, 1000):
        out.append("a" * n)
        out.append("x " + "ab" * (n // 2) + " y")
        out.append("é" * n)                        # NFD + strip: still n characters
        out.append("e\u0301" * n)                  # marks dropped: n characters
        out.append("한" * (n // 2))                 # NFD: 2-3 jamo per syllable
        out.append("\u0130" * (n // 2 + 1))        # İ: dotted I, 2 code points in lowercase
        out.append("a\u200b" * n)                  # removed characters do not count
        out.append("word" + "".join(pick(rng, "any") for _ in range(n)))
    return out


TRAPS = [
    "", " ", "\u200b", "hello [CLS] world [SEP]", "a[MASK]b", "[cls] [Cls]", "[[SEP]]",
    "[UNK][UNK]", "[PAD", "[ [CLS ]", "x[SEP", "İstanbul İİ", "ΣΑΣ σας", "ß ẞ STRASSE",
    "Ǆ ǅ ǆ", "Ω K Å", "≠ ≮ ≯ ᾿`´", "naïve café résumé", "中文字符 日本語 한국어 ひらがな",
    "\U0002B820\U0002B91F\U0002B920 \U00030000", "a\u0301\u0316b", "a\u1ac1\u0316b",
    "a\u1d165\u07fdb", "a\U0001D16D\u0300\U0001D165", "a\U0001D16D\u200b\U0001D165",
    "a\U0001D16D\u0941\U0001D165", "\u0130\u0301", "don't stop-believing!!!",
    "$5 + 3 = 8 < 9 > 7 ^ ` | ~", "\x00\x01\x7f\x85\u00ad\ufeff\ufffd", "tab\tnew\nline\rret",
    "\u2028\u2029\u3000\u1680", "\U0001F600\u200d\U0001F680\ufe0f", "\U0010FFFF\U000F0000",
    "\U00011938 \U00011935\U00011930", "unaffable unbelievably", "a" * 5000,
]


def c_ids(tok_dir, strings):
    data = "".join(json.dumps(s) + "\n" for s in strings).encode()
    p = subprocess.run([TOOL, tok_dir], input=data, capture_output=True)
    if p.returncode != 0:
        sys.exit("tool_tokenize %s failed (%d): %s" % (tok_dir, p.returncode,
                                                       p.stderr.decode(errors="replace")))
    lines = p.stdout.decode().split("\n")[:-1]
    assert len(lines) == len(strings), (len(lines), len(strings))
    return [l if l.startswith("ERR") else [int(x) for x in l.split()] for l in lines]


def hf_tokenizer(path):
    t = Tokenizer.from_file(path)
    t.no_padding()
    t.no_truncation()
    return t


def hf_ids(tok, strings):
    return [e.ids for e in tok.encode_batch(strings, add_special_tokens=False)]


failures = 0


def compare(name, strings, want, got):
    global failures
    bad = [i for i in range(len(strings)) if want[i] != got[i]]
    same = len(strings) - len(bad)
    print("%-12s %7d strings, %7d identical (%.4f%%)" % (
        name, len(strings), same, 100.0 * same / max(1, len(strings))))
    for i in bad[:5]:
        s = strings[i]
        print("  MISMATCH %r%s\n    hf: %s\n    c:  %s" % (
            s[:300], "..." if len(s) > 300 else "", want[i][:60], got[i][:60]))
    failures += len(bad)


def c_offsets(tok_dir, strings, cap):
    data = "".join(json.dumps(s) + "\n" for s in strings).encode()
    p = subprocess.run([TOOL, tok_dir, "--offsets", str(cap)], input=data, capture_output=True)
    if p.returncode != 0:
        sys.exit("tool_tokenize --offsets failed (%d): %s" % (p.returncode, p.stderr.decode()))
    out = []
    for l in p.stdout.decode().split("\n")[:-1]:
        v = [int(x) for x in l.split()]
        out.append((v[0::3], list(zip(v[1::3], v[2::3]))))
    assert len(out) == len(strings)
    return out


def hf_offsets(tok, strings, cap):
    """HF's ids and offsets (characters, converted to UTF-8 bytes), truncated to cap."""
    tok.enable_truncation(max_length=cap)
    out = []
    for s, e in zip(strings, tok.encode_batch(strings, add_special_tokens=False)):
        byte = [0]
        for ch in s:
            byte.append(byte[-1] + len(ch.encode("utf-8")))
        out.append((e.ids, [(byte[a], byte[b]) for a, b in e.offsets]))
    tok.no_truncation()
    return out


def compare_offsets(name, strings, want, got):
    """Ids must be equal; spans too, except where HF's positional NFD alignment points into
    a word whose surviving marks were reordered (tests/test_token_offsets.py says why)."""
    global failures
    bad = 0
    for s, (hid, hoff), (cid, coff) in zip(strings, want, got):
        diff = hid != cid
        if not diff:
            for h, c in zip(hoff, coff):
                seg = s.encode()[c[0]:c[1]].decode(errors="replace")
                reordered = any(unicodedata.combining(ch) and unicodedata.category(ch) != "Mn"
                                for ch in seg)
                if h != c and not reordered:
                    diff = True
                    break
        if diff:
            bad += 1
            if bad <= 5:
                print("  MISMATCH %r\n    hf: %s\n    c:  %s" % (
                    s[:200], list(zip(hid, hoff))[:12], list(zip(cid, coff))[:12]))
    print("%-12s %7d strings, %7d identical (ids and offsets)" % (name, len(strings),
                                                                 len(strings) - bad))
    failures += bad


def check_mpnet(tok_dir, texts):
    """MPNet's published tokenizer.json against HF: ids, then offsets with truncation."""
    name = "mpnet" if tok_dir == MPNET_DATA else "mpnet-fetched"
    strings = MPNET_TRAPS + texts
    tok = hf_tokenizer(os.path.join(tok_dir, "tokenizer.json"))
    compare(name, strings, hf_ids(tok, strings), c_ids(tok_dir, strings))
    sub = MPNET_TRAPS + texts[:3000]
    for cap in (1 << 16, 24, 5):
        compare_offsets("%s/%s" % (name, cap if cap < 1 << 16 else "all"), sub,
                        hf_offsets(tok, sub, cap), c_offsets(tok_dir, sub, cap))


def write_tokenizer(dir_, base, vocab, normalizer, prefix="##", max_chars=100):
    j = dict(base)
    j["padding"] = None
    j["truncation"] = None
    j["normalizer"] = normalizer
    j["model"] = dict(base["model"], vocab=vocab, continuing_subword_prefix=prefix,
                      max_input_chars_per_word=max_chars)
    j["added_tokens"] = [dict(a, id=vocab[a["content"]]) for a in base["added_tokens"]]
    os.makedirs(dir_, exist_ok=True)
    with open(os.path.join(dir_, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    return os.path.join(dir_, "tokenizer.json")


def main():
    if not os.access(TOOL, os.X_OK):
        sys.exit("%s is missing: run make tests" % TOOL)
    if not MODEL:
        sys.exit("no model directory: run scripts/fetch-model")
    rng = random.Random(SEED)
    print("seed %d (set TOKENIZER_DIFF_SEED to vary), model %s" % (SEED, MODEL))
    t0 = time.time()

    texts = list(TRAPS) + long_words(rng)
    if SCIFACT:
        for name in ("corpus.jsonl", "queries.jsonl"):
            with open(os.path.join(SCIFACT, name), encoding="utf-8") as f:
                for line in f:
                    d = json.loads(line)
                    texts += [d[k] for k in ("title", "text") if d.get(k)]
    else:
        print("no SciFact data (set SCIFACT_DIR): random texts only")
    texts += [random_text(rng) for _ in range(6000 if SCIFACT else 12000)]

    tok_json = os.path.join(MODEL, "tokenizer.json")
    want = hf_ids(hf_tokenizer(tok_json), texts)
    compare("model", texts, want, c_ids(MODEL, texts))

    check_mpnet(MPNET_DATA, texts)
    if MPNET_FETCHED:
        with open(os.path.join(MPNET_FETCHED, "tokenizer.json"), "rb") as a, \
                open(os.path.join(MPNET_DATA, "tokenizer.json"), "rb") as b:
            if a.read() != b.read():
                sys.exit("tests/data's MPNet tokenizer.json differs from %s" % MPNET_FETCHED)
        check_mpnet(MPNET_FETCHED, texts)
    else:
        print("mpnet-fetched: skipped (no .cache/models/all-mpnet-base-v2; run "
              "scripts/fetch-model all-mpnet-base-v2)")

    with tempfile.TemporaryDirectory() as tmp:
        # The fallback loader, from the very files the model ships.
        txt_dir = os.path.join(tmp, "txt")
        os.mkdir(txt_dir)
        for name in ("vocab.txt", "tokenizer_config.json"):
            with open(os.path.join(MODEL, name), "rb") as src, \
                    open(os.path.join(txt_dir, name), "wb") as dst:
                dst.write(src.read())
        compare("vocab.txt", texts, want, c_ids(txt_dir, texts))

        with open(tok_json, encoding="utf-8") as f:
            base = json.load(f)
        bert = dict(type="BertNormalizer", clean_text=True, handle_chinese_chars=True,
                    strip_accents=None, lowercase=True)

        # Every code point, in chunks: each chunk is one text of words "cAbc".
        vocab = {s: i for i, s in enumerate(SPECIALS)}
        cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
        for c in cps[1:]:  # U+0000 cannot be a JSON object key for jansson
            vocab[chr(c)] = len(vocab)
            vocab["##" + chr(c)] = len(vocab)
        path = write_tokenizer(os.path.join(tmp, "all"), base, vocab, bert)
        chunks = [" ".join(chr(c) + "Ab" + chr(c) for c in cps[i:i + 64])
                  for i in range(0, len(cps), 64)]
        chunks += ["x" + chr(c) + "y" for c in range(0x80)]
        compare("codepoints", chunks, hf_ids(hf_tokenizer(path), chunks),
                c_ids(os.path.dirname(path), chunks))

        # Every normalizer setting, with vocabularies grown from the texts themselves.
        for n, (lower, strip, clean, cjk) in enumerate(itertools.product(
                [True, False], [None, True, False], [True, False], [True, False])):
            strs = [random_text(rng) for _ in range(400)] + rng.sample(texts, 100) + TRAPS
            norm = dict(type="BertNormalizer", clean_text=clean, handle_chinese_chars=cjk,
                        strip_accents=strip, lowercase=lower)
            hf_norm = normalizers.BertNormalizer(clean_text=clean, handle_chinese_chars=cjk,
                                                 strip_accents=strip, lowercase=lower)
            prefix = ["##", "##", "@@", "\u2581"][n % 4]
            normalized = [hf_norm.normalize_str(s) for s in strs]
            vocab = {s: i for i, s in enumerate(SPECIALS)}
            for s in normalized:
                for i, ch in enumerate(s):
                    if ch == "\0":  # cannot be a JSON object key for jansson
                        continue
                    if rng.random() < 0.97:  # some characters unknown: [UNK] words
                        vocab.setdefault(ch, len(vocab))
                        vocab.setdefault(prefix + ch, len(vocab))
                    if rng.random() < 0.3:  # longer pieces for greedy longest-match
                        piece = s[i:i + rng.randint(2, 6)].replace("\0", "")
                        vocab.setdefault(rng.choice(["", prefix]) + piece, len(vocab))
            path = write_tokenizer(os.path.join(tmp, "flags%d" % n), base, vocab, norm,
                                   prefix=prefix, max_chars=rng.choice([100, 100, 5, 17]))
            compare("flags%d" % n, strs, hf_ids(hf_tokenizer(path), strs),
                    c_ids(os.path.dirname(path), strs))

    print("%s in %.1f s" % ("FAIL: %d mismatches" % failures if failures else "all identical",
                            time.time() - t0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
