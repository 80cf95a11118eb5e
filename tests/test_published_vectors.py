"""The engine against vectors published by other projects for all-MiniLM-L6-v2:
Hugging Face TEI's test snapshots (../shared/reference/tei-all-MiniLM-L6-v2: mean pooling
unnormalised, and CLS pooling) and fastembed's canonical "hello world" values."""
import os
import shutil
import tempfile

from refcheck import MODEL, SHARED, cosine, embed, skip

TEI = os.path.join(SHARED, "reference", "tei-all-MiniLM-L6-v2")
if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
    skip("model not fetched (run scripts/fetch-model)")
if not os.path.isdir(TEI):
    skip("no ../shared/reference")


def read_snap(name):
    """insta snapshot: YAML list of lists of floats."""
    vecs, cur = [], None
    for line in open(os.path.join(TEI, name)):
        s = line.strip()
        if s.startswith("- - "):
            cur = [float(s[4:])]
            vecs.append(cur)
        elif s.startswith("- ") and cur is not None:
            cur.append(float(s[2:]))
    return vecs


SINGLE = ["What is Deep Learning?"]
BATCH = ["What is Deep Learning?", "Deep Learning is...", "What is Deep Learning?"]


def check(name, texts, model=MODEL):
    ref = read_snap(name)
    assert len(ref) == len(texts), f"{name}: {len(ref)} vectors, expected {len(texts)}"
    ours = embed(texts, model=model)
    for i, (a, b) in enumerate(zip(ours, ref)):
        c = cosine(a, b)
        print(f"{name}[{i}]: cosine {c:.7f}")
        assert c > 0.99999, f"{name}[{i}]: cosine {c}"


check("test_bert__bert_single.snap", SINGLE)
check("test_bert__bert_batch.snap", BATCH)
check("test_flash_bert__mini_single.snap", SINGLE)
check("test_flash_bert__mini_batch.snap", BATCH)

# CLS pooling: the same weights under a 1_Pooling config that asks for the [CLS] token.
with tempfile.TemporaryDirectory() as d:
    for f in os.listdir(MODEL):
        if f not in ("1_Pooling", "modules.json"):
            os.symlink(os.path.join(MODEL, f), os.path.join(d, f))
    os.mkdir(os.path.join(d, "1_Pooling"))
    with open(os.path.join(d, "1_Pooling", "config.json"), "w") as f:
        f.write('{"word_embedding_dimension": 384, "pooling_mode_cls_token": true,'
                ' "pooling_mode_mean_tokens": false}')
    shutil.copy(os.path.join(MODEL, "modules.json"), os.path.join(d, "modules.json"))
    check("test_bert__bert_single_pooled.snap", SINGLE, model=d)
    check("test_bert__bert_batch_pooled.snap", BATCH, model=d)

# fastembed: first five dimensions of "hello world", atol 1e-3
v = embed(["hello world"])[0][:5]
want = [-0.034478, 0.03102, 0.00673, 0.02611, -0.039362]
print("hello world:", v)
assert all(abs(a - b) < 1e-3 for a, b in zip(v, want)), f"fastembed canonical mismatch {v}"
