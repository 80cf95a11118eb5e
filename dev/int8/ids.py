"""The token-id file tool_vk_bench reads and scripts/bench-gpu --ids writes: uint32 n, then n
times (uint32 len, len int32 ids), and made-up texts of random ids. Shared by calibrate.py,
quant-study.py and calib-overlap.py."""
import random
import struct


def read_ids(path):
    data = open(path, "rb").read()
    n = struct.unpack_from("<I", data, 0)[0]
    off, docs = 4, []
    for _ in range(n):
        ln = struct.unpack_from("<I", data, off)[0]
        docs.append(list(struct.unpack_from("<%di" % ln, data, off + 4)))
        off += 4 + 4 * ln
    return docs


def made_up_texts(n, vocab, seed=1):
    """n texts of random token ids (lengths 16-256): [CLS], ids from 1000 on, [SEP]"""
    rng = random.Random(seed)
    return [[101] + [rng.randrange(1000, vocab) for _ in range(k - 2)] + [102]
            for k in (rng.choice([16, 32, 64, 128, 256]) for _ in range(n))]
