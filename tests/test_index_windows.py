#!/usr/bin/env python3
"""test_index_windows.py — the byte range the indexer stores for each window of a long
document (what search shows as the snippet) starts at the whitespace-delimited word holding
the window's first token and ends where the word holding the first token after the window
starts (the text's end for the last window).

The expected ranges are computed here from Hugging Face `tokenizers`' offsets on the text
that is embedded (title + " " + text), with the indexer's window arithmetic (content tokens
W = window - 2, starts 0, S, 2S, ... and a last window aligned to the end); the stored ones
are read back with $BUILD/tests/tool_doc_windows. The documents mix accents, CJK,
punctuation, emoji, long [UNK] words, runs of (also non-ASCII) whitespace and words split into
many WordPiece pieces, so windows start inside words and after multi-byte characters.
Exit 77 without the model or `tokenizers`."""
import os
import random
import sys
import tempfile

from refcheck import BUILD, MODEL, check, failures, run, skip
from test_indexer import index, write_jsonl

try:
    from tokenizers import Tokenizer
except ImportError:
    skip("python module `tokenizers` is missing (run scripts/setup)")
if not os.path.isfile(os.path.join(MODEL, "tokenizer.json")):
    skip("no model at " + MODEL)

TOOL = os.path.join(BUILD, "tests", "tool_doc_windows")
WINDOW, STRIDE = 32, 20
WORDS = ["naïve", "café", "Über", "résumé", "中文字符", "日本語", "한국어", "don't", "stop-believing!",
         "(THC)", "5′-UTR", "\U0001F600\U0001F680", "antidisestablishmentarianism", "x" * 120,
         "immunohistochemistry", "a\u0301b", "tetrahydrocannabinol,", "pre-\u200bprocessed",
         "lighthouse", "keeper", "painted", "the", "tower", "red.", "ﬁnancial", "½", "Σας"]
SPACES = [" ", " ", " ", "  ", "\n", "\t ", "\u00a0", " \u3000 "]


def text(rng, n):
    return "".join(rng.choice(WORDS) + rng.choice(SPACES) for _ in range(n)).strip()


def expected(tok, title, body):
    etext = title + " " + body if title else body
    ebytes = etext.encode()
    text_off = len(title.encode()) + 1 if title else 0
    byte = [0]
    for ch in etext:
        byte.append(byte[-1] + len(ch.encode()))
    off = [byte[a] for a, _ in tok.encode(etext, add_special_tokens=False).offsets]
    T, W = len(off), WINDOW - 2
    S = min(STRIDE, W)
    nwin = 1 + (T - W + S - 1) // S if T > W else 1

    def word_start(i):
        while i > 0 and ebytes[i - 1:i] not in (b" ", b"\t", b"\n", b"\r", b"\f", b"\v"):
            i -= 1
        return i

    tl, ranges = len(body.encode()), []
    for w in range(nwin):
        a = w * S
        if a + W > T:
            a = max(T - W, 0)
        b = min(a + W, T)
        sa = word_start(off[a])
        sb = word_start(off[b]) if b < T else len(ebytes)
        sa, sb = max(sa - text_off, 0), min(max(sb - text_off, 0), tl)
        ranges.append((min(sa, sb), sb))
    return ranges


def main():
    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    rng = random.Random(1205)
    docs = [{"_id": "titled", "title": "Über the tower", "text": text(rng, 220)},
            {"_id": "plain", "text": text(rng, 160)},
            {"_id": "short", "title": "t", "text": "one window only"}]
    with tempfile.TemporaryDirectory() as tmp:
        src, store = os.path.join(tmp, "docs.jsonl"), os.path.join(tmp, "store")
        write_jsonl(src, docs)
        rc, _, err = index(store, "--window", str(WINDOW), "--stride", str(STRIDE), src)
        check(rc == 0, f"index: {err}")
        rc, out, err = run([TOOL, store] + [d["_id"] for d in docs])
        check(rc == 0, f"tool_doc_windows: {err}")
        got = {}
        for line in out.splitlines():
            v = line.split()
            got[v[0]] = [(int(v[2 + 2 * w]), int(v[3 + 2 * w])) for w in range(int(v[1]))]
        for d in docs:
            want = expected(tok, d.get("title", ""), d["text"])
            have = got.get(d["_id"])
            check(have == want, f"{d['_id']}: windows' byte ranges\n  want {want}\n  got  {have}")
            if d["_id"] != "short":
                check(len(want) > 5, f"{d['_id']}: {len(want)} windows, wanted a long document")
    print(f"windows of {len(docs)} documents checked")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
