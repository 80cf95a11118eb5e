#!/usr/bin/env python3
"""calib-overlap.py — whether int8 outlier channels could be calibrated without the user's
texts: compares the top-K input channels (largest max |x|) of every int8 product (qkv,
attention out, FFN up, FFN down; the choice EMBED_VK_INT8_OUTLIERS makes from a calibration
file) between real texts (the length-sorted SciFact ids at offset 2, every 25th, as
calibrate.py takes them) and N made-up texts of random token ids (lengths 16-256, [CLS] ...
[SEP]).

    <python with transformers> dev/int8/calib-overlap.py MODEL_DIR IDS.bin [N]
"""
import os, sys
import torch
from transformers import AutoModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from calibrate import maxima  # dev/int8/calibrate.py: the maxima its file holds
from ids import made_up_texts, read_ids  # dev/int8/ids.py

NAMES = ["qkv", "out", "up", "down"]  # calibrate.PATHS' products

def main():
    model_dir, ids_path = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    torch.set_num_threads(2)
    m = AutoModel.from_pretrained(model_dir, attn_implementation="eager").float().eval()
    real = sorted(read_ids(ids_path), key=len)[2::25]
    a, b = maxima(m, real), maxima(m, made_up_texts(n, m.config.vocab_size))
    for k in (4, 8):
        for g, name in enumerate(NAMES):
            same = sum(len(set(a[(l, g)].topk(k).indices.tolist()) & set(b[(l, g)].topk(k).indices.tolist()))
                       for l in range(m.config.num_hidden_layers))
            print(f"top-{k} channels of {name}, all layers: {same} of {k * m.config.num_hidden_layers} shared")

main()
