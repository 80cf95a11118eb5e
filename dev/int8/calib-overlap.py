#!/usr/bin/env python3
"""calib-overlap.py — whether int8 outlier channels could be calibrated without the user's
texts: compares the top-K input channels (largest max |x|) of every int8 product (qkv,
attention out, FFN up, FFN down; the choice EMBED_VK_INT8_OUTLIERS makes from a calibration
file) between real texts (the length-sorted SciFact ids at offset 2, every 25th, as
calibrate.py takes them) and N made-up texts of random token ids (lengths 16-256, [CLS] ...
[SEP]).

    <python with transformers> dev/int8/calib-overlap.py MODEL_DIR IDS.bin [N]
"""
import os, random, sys
import torch
from transformers import AutoModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ids import read_ids  # dev/int8/ids.py

PATHS = ["attention.self.query", "attention.output.dense", "intermediate.dense", "output.dense"]
NAMES = ["qkv", "out", "up", "down"]

def maxima(model, texts):
    stats, hooks = {}, []
    for l, layer in enumerate(model.encoder.layer):
        for g, p in enumerate(PATHS):
            mod = layer
            for x in p.split("."):
                mod = getattr(mod, x)
            def hk(mm, inp, out, key=(l, g)):
                v = inp[0].detach().abs().reshape(-1, inp[0].shape[-1]).amax(0)
                stats[key] = torch.maximum(stats.get(key, v), v)
            hooks.append(mod.register_forward_hook(hk))
    with torch.no_grad():
        for t in texts:   # one text a call: padding would add the pad tokens' activations
            model(input_ids=torch.tensor([t]))
    for h in hooks:
        h.remove()
    return stats

def main():
    model_dir, ids_path = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    torch.set_num_threads(2)
    m = AutoModel.from_pretrained(model_dir, attn_implementation="eager").float().eval()
    real = sorted(read_ids(ids_path), key=len)[2::25]
    rng, vocab = random.Random(1), m.config.vocab_size
    made_up = [[101] + [rng.randrange(1000, vocab) for _ in range(k - 2)] + [102]
               for k in (rng.choice([16, 32, 64, 128, 256]) for _ in range(n))]
    a, b = maxima(m, real), maxima(m, made_up)
    for k in (4, 8):
        for g, name in enumerate(NAMES):
            same = sum(len(set(a[(l, g)].topk(k).indices.tolist()) & set(b[(l, g)].topk(k).indices.tolist()))
                       for l in range(m.config.num_hidden_layers))
            print(f"top-{k} channels of {name}, all layers: {same} of {k * m.config.num_hidden_layers} shared")

main()
