"""The engine's vectors against sentence-transformers' own (tests/data/ref-*, written by
scripts/gen-reference with PyTorch): for every one of 212 texts, cosine >= 0.99999 and
max |difference| <= 2e-5 in every dimension."""
import os

from refcheck import ROOT, MODEL, embed, load_reference, skip, vectors_off

if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
    skip("model not fetched (run scripts/fetch-model)")

meta, recs, refs = load_reference(os.path.join(ROOT, "tests/data/ref-all-MiniLM-L6-v2"))
texts = [r["text"] for r in recs]
print(f"against sentence-transformers {meta['sentence_transformers']}:")
bad = vectors_off(texts, embed(texts, "--batch", "16"), refs)
assert not bad, f"{len(bad)} texts off the reference"
