"""The engine's vectors against sentence-transformers' own (tests/data/ref-*, written by
scripts/gen-reference with PyTorch): for every one of 212 texts, cosine >= 0.99999 and
max |difference| <= 2e-5 in every dimension."""
import json
import os
import struct

from refcheck import ROOT, MODEL, cosine, embed, max_abs_diff, skip

PREFIX = os.path.join(ROOT, "tests/data/ref-all-MiniLM-L6-v2")

if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
    skip("model not fetched (run scripts/fetch-model)")

lines = open(PREFIX + ".jsonl", encoding="utf-8").read().splitlines()
meta = json.loads(lines[0])["generator"]
texts = [json.loads(l)["text"] for l in lines[1:]]
dim = meta["dim"]
raw = open(PREFIX + ".f32", "rb").read()
assert len(raw) == 4 * dim * len(texts), "reference file size does not match its text list"
refs = [list(struct.unpack_from("<%df" % dim, raw, 4 * dim * i)) for i in range(len(texts))]

ours = embed(texts, "--batch", "16")
assert len(ours) == len(texts), f"{len(ours)} vectors for {len(texts)} texts"
worst_cos, worst_diff, bad = 1.0, 0.0, []
for i, (t, a, b) in enumerate(zip(texts, ours, refs)):
    c, d = cosine(a, b), max_abs_diff(a, b)
    worst_cos, worst_diff = min(worst_cos, c), max(worst_diff, d)
    if c < 0.99999 or d > 2e-5:
        bad.append((i, c, d, t[:60]))
print(f"{len(texts)} texts vs sentence-transformers {meta['sentence_transformers']}: "
      f"min cosine {worst_cos:.9f}, max |diff| {worst_diff:.3g}")
for i, c, d, t in bad[:10]:
    print(f"  text {i}: cosine {c:.9f} max|diff| {d:.3g}: {t!r}")
assert not bad, f"{len(bad)} texts off the reference"
