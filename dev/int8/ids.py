"""The token-id file tool_vk_bench reads and scripts/bench-gpu --ids writes: uint32 n, then n
times (uint32 len, len int32 ids). Shared by calibrate.py and quant-study.py."""
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
