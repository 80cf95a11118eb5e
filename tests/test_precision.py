"""--precision bf16 and int8 on the CPU (engine/gemm_lowp.c) keep their accuracy bars against
fp32 for every one of the 212 reference texts (tests/data/ref-all-MiniLM-L6-v2, which
includes texts past the 256-token limit): bf16 cosine >= 0.9999, int8 cosine >= 0.99, both
against the engine's own fp32 vectors and against sentence-transformers' (PyTorch fp32).
Also: each precision gives the same vectors whatever the batch and the kernel
(EMBED_GEMM_ISA=avx2 forces the AVX2 fallbacks), and the GPU refuses them."""
import json
import os
import struct

from refcheck import ROOT, MODEL, EMBED, check, cosine, embed, failures, run, skip

PREFIX = os.path.join(ROOT, "tests/data/ref-all-MiniLM-L6-v2")

if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
    skip("model not fetched (run scripts/fetch-model)")

lines = open(PREFIX + ".jsonl", encoding="utf-8").read().splitlines()
meta = json.loads(lines[0])["generator"]
texts = [json.loads(l)["text"] for l in lines[1:]]
dim = meta["dim"]
raw = open(PREFIX + ".f32", "rb").read()
refs = [list(struct.unpack_from("<%df" % dim, raw, 4 * dim * i)) for i in range(len(texts))]

fp32 = embed(texts, "--batch", "16", "--precision", "fp32")
BARS = {"bf16": 0.9999, "int8": 0.99}
for prec, bar in BARS.items():
    ours = embed(texts, "--batch", "16", "--precision", prec)
    check(len(ours) == len(texts), f"{prec}: {len(ours)} vectors for {len(texts)} texts")
    vs32 = [cosine(a, b) for a, b in zip(ours, fp32)]
    vsst = [cosine(a, b) for a, b in zip(ours, refs)]
    worst = min(range(len(texts)), key=lambda i: vs32[i])
    print(f"{prec}: min cosine vs our fp32 {min(vs32):.6f} (text {worst}: {texts[worst][:50]!r}), "
          f"mean {sum(vs32) / len(vs32):.6f}; vs sentence-transformers min {min(vsst):.6f}")
    check(min(vs32) >= bar, f"{prec}: min cosine vs fp32 {min(vs32):.6f} < {bar}")
    check(min(vsst) >= bar, f"{prec}: min cosine vs sentence-transformers {min(vsst):.6f} < {bar}")
    # one text at a time gives the same vectors as batches of 16
    alone = embed(texts[:40], "--batch", "1", "--precision", prec)
    check(alone == ours[:40], f"{prec}: batch 1 differs from batch 16")
    # the AVX2 fallback kernels give the same bits as the AVX-512 ones
    os.environ["EMBED_GEMM_ISA"] = "avx2"
    try:
        avx2 = embed(texts[:40], "--batch", "16", "--precision", prec)
    finally:
        del os.environ["EMBED_GEMM_ISA"]
    check(avx2 == ours[:40], f"{prec}: the AVX2 kernels differ from the default ones")

for prec in BARS:
    rc, out, err = run([EMBED, "--model", MODEL, "--device", "gpu", "--precision", prec], input="x\n")
    if prec == "bf16":
        check(rc != 0 and "CPU only" in err, f"--device gpu --precision {prec}: exit {rc}, {err!r}")
    else:
        # the GPU's int8 needs 8-bit cooperative matrices (lavapipe has none; a machine
        # with such a GPU embeds, checked on the GPU by tests/test_vk_forward.c)
        check(rc == 0 or "needs 8-bit cooperative matrices" in err,
              f"--device gpu --precision {prec}: exit {rc}, {err!r}")

assert not failures, f"{len(failures)} checks failed"
print("ok")
