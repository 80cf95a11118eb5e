#!/usr/bin/env python3
"""calibrate.py — the activation maxima that --precision int8's SmoothQuant factors need
(EMBED_VK_INT8_CALIB, forward_vk.c): the fp32 model (transformers) runs the calibration
texts and records, for every layer, max |x| per input channel of the four products (qkv,
attention out, FFN up, FFN down).

    /tmp/i15-venv/bin/python dev/int8/calibrate.py MODEL_DIR IDS.bin OUT [--every 25 --offset 2]

IDS.bin as tool_vk_bench's; the texts taken are the length-sorted ones at offset, offset +
every, ... (offset 2 of every 25 is disjoint from the every-5th accuracy check's texts).
OUT: "EMBI8CAL", uint32 layers, hidden, intermediate, then per layer f32 qkv[H], out[H],
up[H], down[I].
"""
import argparse, os, struct, sys
import torch
from transformers import AutoModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ids import read_ids  # dev/int8/ids.py, beside this script

# the four products' modules in a transformers BertLayer: qkv (query stands for the three),
# attention out, FFN up, FFN down
PATHS = ["attention.self.query", "attention.output.dense", "intermediate.dense", "output.dense"]


def maxima(model, texts):
    """{(layer, product): max |x| per input channel} over the texts (product: PATHS' index)"""
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
        for t in texts:  # one text a call: padding would add the pad tokens' activations
            model(input_ids=torch.tensor([t]))
    for h in hooks:
        h.remove()
    return stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model"); ap.add_argument("ids"); ap.add_argument("out")
    ap.add_argument("--every", type=int, default=25); ap.add_argument("--offset", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(2)
    docs = sorted(read_ids(a.ids), key=len)[a.offset::a.every]
    m = AutoModel.from_pretrained(a.model, attn_implementation="eager").float().eval()
    stats = maxima(m, docs)
    cfg = m.config
    with open(a.out, "wb") as f:
        f.write(b"EMBI8CAL" + struct.pack("<III", cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size))
        for l in range(cfg.num_hidden_layers):
            for g in range(4):
                f.write(stats[(l, g)].float().numpy().astype("<f4").tobytes())
    print(f"{len(docs)} texts -> {a.out}")


if __name__ == "__main__":
    main()
