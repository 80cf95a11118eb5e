"""Cross-encoders on the Vulkan path (bin/rerank --device gpu: one forward_vk batch of every
pair, token types in the embedding kernel, the head on the CPU) against the CPU path, which
test_rerank_reference holds to transformers: logits max |diff| <= 1e-4 in fp32 and <= 2e-3 in
fp16 on a directory in ms-marco-MiniLM-L-6-v2's shapes (scripts/gen-cross-encoder), pairs
cut to 64 tokens so that lavapipe (`make test`) runs the 6 layers in seconds. The generated
second token-type row is far from the first (scripts/gen-cross-encoder), so a GPU that
dropped the types misses the CPU by far more than the bar (with the shader's type read
forced to 0: fp32 and fp16 max |diff| 0.39). Exit 77 without a Vulkan
device or the fetched model."""
import json
import os
import subprocess
import sys
import tempfile

from refcheck import BIN, MODEL, ROOT, SHARED, check, failures, run, skip

RERANK = os.path.join(BIN, "rerank")
if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
    skip("model not fetched (run scripts/fetch-model)")

recs = [
    {"query": "does vitamin D deficiency raise the risk of disease",
     "documents": ["Vitamin D deficiency is associated with an increased risk of several "
                   "chronic diseases, including osteoporosis and cardiovascular disease.",
                   "The cat sat on the mat.", "", "vitamin D",
                   "Long document " * 40]},
    {"query": "0-dimensional biomaterials lack inductive properties. " * 6,
     "documents": ["Nanomaterials of zero dimension show inductive properties in bone repair "
                   "experiments on rats.", "short", "Gene expression " * 30]},
]
inp = "".join(json.dumps(r) + "\n" for r in recs)


def logits(d, *args):
    rc, out, err = run([RERANK, "--model", d, "--max-tokens", "64", *args], input=inp,
                       timeout=1800)
    return rc, [x for l in out.splitlines() for x in json.loads(l)["logits"]], err


with tempfile.TemporaryDirectory() as tmp:
    d = os.path.join(tmp, "ce")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts/gen-cross-encoder"), d,
                    "--from", MODEL], check=True, stdout=subprocess.DEVNULL)
    rc, cpu, err = logits(d, "--device", "cpu")
    assert rc == 0, err
    for prec, tol in (("fp32", 1e-4), ("fp16", 2e-3)):
        rc, gpu, err = logits(d, "--device", "gpu", "--precision", prec)
        if rc != 0 and ("Vulkan" in err or "device" in err) and prec == "fp32":
            skip("no Vulkan device: " + err.strip())
        assert rc == 0, f"--device gpu --precision {prec}: {err}"
        diff = max(abs(a - b) for a, b in zip(cpu, gpu))
        print(f"GPU {prec} vs CPU: {len(cpu)} pairs, logits max |diff| {diff:.3g} (bar {tol})")
        check(len(gpu) == len(cpu) and diff <= tol, f"{prec}: max |diff| {diff:.3g} > {tol}")
    spread = max(cpu) - min(cpu)
    print(f"CPU logits spread {spread:.3g}")
    check(spread > 100 * 2e-3, "logits too alike to tell a GPU that drops the token types")

if failures:
    sys.exit(f"{len(failures)} checks failed")
