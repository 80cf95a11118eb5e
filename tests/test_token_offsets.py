#!/usr/bin/env python3
"""embed_tokenize_offsets against Hugging Face `tokenizers`' Encoding.offsets.

The indexer cuts long documents into token windows and stores each window's byte range in
the text (for snippets), so every token must say where in the caller's text it came from.
HF gives offsets in characters of the original (unnormalized) string; this converts them to
UTF-8 bytes and requires, on SciFact documents, hand-picked traps (accents, CJK,
punctuation, emoji, whitespace runs, [UNK] words, control characters, special-token strings)
and random multi-script texts:
  - the same ids (the tokenizer's own parity test covers that more widely),
  - for every token that starts a word, the same start as HF (what windowing needs),
  - for every token, the same [start, end) as HF (but see `reordered` below);
once whole and once truncated to a few tokens (the tokenizer stops early there).

C offsets come from $BUILD/tests/tool_token_offsets. Exit 77 (skip) without `tokenizers`
or the model.
"""
import json
import os
import random
import subprocess
import sys
import unicodedata

try:
    from tokenizers import Tokenizer
except ImportError:
    print("SKIP: python module `tokenizers` is missing (run scripts/setup)")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", "build")
TOOL = os.path.join(ROOT, BUILD, "tests", "tool_token_offsets")
MODEL = os.environ.get("EMBED_MODEL") or os.path.join(ROOT, ".cache/models/all-MiniLM-L6-v2")
SCIFACT = os.path.join(ROOT, "../shared/data/scifact/corpus.jsonl")
if not os.path.isfile(os.path.join(MODEL, "tokenizer.json")):
    print("SKIP: no model at %s (run scripts/fetch-model)" % MODEL)
    sys.exit(77)

TRAPS = [
    "", " ", "hello world", "  leading and   trailing   runs  ", "tab\tnew\nline\r\nret",
    "naïve café résumé", "cafe\u0301 e\u0301le\u0300ve", "İstanbul ΣΑΣ σας ß STRASSE",
    "中文字符 日本語 한국어 ひらがな", "mixed中文text", "don't stop-believing!!!",
    "$5 + 3 = 8 < 9 > 7 ^ ` | ~ (a) [b] {c}", "\U0001F600\u200d\U0001F680\ufe0f emoji \U0001F44D!",
    "unaffable unbelievably antidisestablishmentarianism", "x " + "a" * 150 + " y",
    "word\u200bjoined soft\u00adhyphen zero\ufeffwidth", "\x01ctrl\x7f \u0085nel",
    "hello [CLS] world [SEP] a[MASK]b", "\u2028\u2029\u3000\u1680 spaces", "\U0010FFFF\U000F0000 z",
    "ﬁnancial ﬂow ½ ℃ ①", "Ǆ ǅ ǆ Ω K Å", "a\u0301\u0316b a\U0001D16D\u0300\U0001D165",
    "dot.separated,values;and:more", "Δ-9-tetrahydrocannabinol (THC) 5′-UTR 3′",
]

RUNS = ["abcdefghij", "ÀÉÎÕÜàéîõüçñ", "αβγδεΣσς", "абвгдЖЗИ", "中文字符日本語", "한국어ひらがなカタカナ",
        "\U0001F600\U0001F680\U0001F44D", ".,;:!?-()[]{}'\"", "0123456789", "\u0301\u0308\u0327",
        "\u200b\u00ad\x01"]


def random_text(rng):
    parts = []
    for _ in range(rng.randint(1, 25)):
        run = rng.choice(RUNS)
        parts.append("".join(rng.choice(run) for _ in range(rng.choice([1, 2, 3, 5, 8, 40]))))
        parts.append(rng.choice(["", " ", " ", "  ", "\n", "\t", "\u00a0", " \u3000 "]))
    return "".join(parts)


def texts():
    out = list(TRAPS)
    if os.path.isfile(SCIFACT):
        with open(SCIFACT, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= 300:
                    break
                d = json.loads(line)
                out.append(d["title"] + " " + d["text"])
    rng = random.Random(20261205)
    out += [random_text(rng) for _ in range(700)]
    return out


def c_offsets(strings, cap):
    data = "".join(json.dumps(s) + "\n" for s in strings).encode()
    p = subprocess.run([TOOL, MODEL, str(cap)], input=data, capture_output=True)
    if p.returncode != 0:
        sys.exit("tool_token_offsets failed (%d): %s" % (p.returncode, p.stderr.decode()))
    lines = p.stdout.decode().split("\n")[:-1]
    assert len(lines) == len(strings), (len(lines), len(strings))
    out = []
    for l in lines:
        v = [int(x) for x in l.split()]
        out.append((v[0::3], list(zip(v[1::3], v[2::3]))))
    return out


def hf_offsets(tok, strings, cap):
    tok.no_padding()
    if cap:
        tok.enable_truncation(max_length=cap)
    else:
        tok.no_truncation()
    out = []
    for s, e in zip(strings, tok.encode_batch(strings)):
        byte = [0]
        for ch in s:  # character index -> UTF-8 byte offset
            byte.append(byte[-1] + len(ch.encode("utf-8")))
        out.append((e.ids, [(byte[a], byte[b]) for a, b in e.offsets]))
    return out


def main():
    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    strings = texts()
    failures = 0
    for cap in (0, 24):
        want = hf_offsets(tok, strings, cap)
        got = c_offsets(strings, cap or 1 << 16)
        nstart = nspan = ntok = 0
        for s, (hid, hoff), (cid, coff) in zip(strings, want, got):
            if hid != cid:
                print("IDS DIFFER %r\n  hf %s\n  c  %s" % (s[:200], hid[:40], cid[:40]))
                failures += 1
                continue
            for k, (i, h, c) in enumerate(zip(hid, hoff, coff)):
                ntok += 1
                piece = tok.id_to_token(i)
                starts_word = not piece.startswith("##")
                if starts_word and h[0] != c[0]:
                    nstart += 1
                    if nstart <= 5:
                        print("START DIFFERS token %d %r of %r: hf %s, c %s" % (k, piece, s[:200], h, c))
                # HF's NFD alignments are positional, so where marks that survive
                # normalization (Mc with a combining class) are reordered, its end points
                # into the middle of the word; ours is the end of the word's last character.
                reordered = any(unicodedata.combining(ch) and unicodedata.category(ch) != "Mn"
                                for ch in s.encode()[c[0]:c[1]].decode(errors="replace"))
                if h != c and not reordered:
                    nspan += 1
                    if nspan <= 5:
                        print("SPAN DIFFERS token %d %r of %r: hf %s, c %s" % (k, piece, s[:200], h, c))
        print("cap %-6s %d texts, %d tokens: %d word starts and %d spans differ from HF" % (
            cap or "none", len(strings), ntok, nstart, nspan))
        failures += nstart + nspan
    if failures:
        print("FAIL: %d differences" % failures)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
