"""Pair encoding of cross-encoders (rerank_tokenize_pair through bin/rerank --tokens) against
Hugging Face `tokenizers` itself: Tokenizer.encode(query, document) with truncation
"longest_first" to the model's max_length gives the same ids and type ids, for thousands of
SciFact pairs: queries x documents, documents x queries (the first text the longer), and
documents x documents (both over-long: each keeps half, the odd token to the longer), at
max_length 512 (most pairs whole), 128 and 61 (most truncated; 61 leaves an odd 58 to
share). Also checks the test can fail: a naive truncation (cut the document alone) would
differ on many of these pairs. Exit 77 without `tokenizers`, the fetched model (the
directory scripts/gen-cross-encoder makes needs its weights) or SciFact."""
import json
import os
import random
import subprocess
import sys
import tempfile

from refcheck import ASAN, BIN, MODEL, ROOT, SHARED, check, failures, run, skip

try:
    from tokenizers import Tokenizer
except ImportError:
    skip("HF tokenizers not installed (scripts/setup makes .venv)")
if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
    skip("model not fetched (run scripts/fetch-model)")
SCIFACT = os.environ.get("SCIFACT_DIR") or os.path.join(SHARED, "data/scifact")
if not os.path.exists(os.path.join(SCIFACT, "corpus.jsonl")):
    skip("no SciFact at " + SCIFACT)

RERANK = os.path.join(BIN, "rerank")
rng = random.Random(int(os.environ.get("SEED", "18")))
queries = [json.loads(l)["text"] for l in open(os.path.join(SCIFACT, "queries.jsonl"))]
docs = [json.loads(l)["text"] for l in open(os.path.join(SCIFACT, "corpus.jsonl"))]

# (first text, its second texts): 1,000 query x document pairs, 400 document x query,
# 400 document x document, 40 with an empty side.
groups = []
for _ in range(100 if not ASAN else 10):
    groups.append((rng.choice(queries), rng.sample(docs, 10)))
for _ in range(40 if not ASAN else 4):
    groups.append((rng.choice(docs), rng.sample(queries, 5) + rng.sample(docs, 5)))
groups.append(("", rng.sample(docs, 10) + [""]))
groups.append((rng.choice(docs), [""] * 3 + rng.sample(queries, 3)))


def naive(q, d, n):
    """[CLS] q [SEP] d [SEP] cut from the document's end only: what a careless port does."""
    ids = [101] + q + [102] + d
    return ids[:n - 1] + [102] if len(ids) + 1 > n else ids + [102]


with tempfile.TemporaryDirectory() as tmp:
    for max_len in (512, 128, 61):
        d = os.path.join(tmp, f"ce{max_len}")
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts/gen-cross-encoder"), d,
                        "--from", MODEL, "--max-length", str(max_len)], check=True,
                       stdout=subprocess.DEVNULL)
        hf = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        plain = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        hf.enable_truncation(max_length=max_len, strategy="longest_first")
        inp = "".join(json.dumps({"query": q, "documents": ds}) + "\n" for q, ds in groups)
        rc, out, err = run([RERANK, "--model", d, "--tokens"], input=inp)
        assert rc == 0, f"bin/rerank --tokens failed: {err}"
        got = [json.loads(l) for l in out.splitlines()]
        assert len(got) == len(groups), f"{len(got)} lines for {len(groups)} records"
        pairs = mism = cut = both = naive_differs = 0
        for (q, ds), g in zip(groups, got):
            qi = plain.encode(q, add_special_tokens=False).ids
            for dtext, mine in zip(ds, g):
                e = hf.encode(q, dtext)
                pairs += 1
                di = plain.encode(dtext, add_special_tokens=False).ids
                if len(qi) + len(di) + 3 > max_len:
                    cut += 1
                    both += len(e.ids) - 3 < len(qi) and len(e.ids) - 3 - len(qi) < len(di)
                naive_differs += naive(qi, di, max_len) != e.ids
                if mine["ids"] != e.ids or mine["types"] != e.type_ids:
                    mism += 1
                    if mism <= 3:
                        print(f"max_length {max_len}: pair differs: query {q[:50]!r}, document "
                              f"{dtext[:50]!r}\n  ours {mine['ids'][:20]}... ({len(mine['ids'])}) "
                              f"types sum {sum(mine['types'])}\n  HF   {e.ids[:20]}... "
                              f"({len(e.ids)}) types sum {sum(e.type_ids)}", file=sys.stderr)
        print(f"max_length {max_len}: {pairs} pairs, {cut} truncated ({both} on both sides), "
              f"{mism} differ from HF tokenizers; a document-only cut would differ on "
              f"{naive_differs}")
        check(mism == 0, f"max_length {max_len}: {mism} of {pairs} pairs differ")
        if max_len < 512:
            check(both > 10 and naive_differs > 10,
                  f"max_length {max_len}: too few pairs exercise longest_first")

if failures:
    sys.exit(f"{len(failures)} checks failed")
