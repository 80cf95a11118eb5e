"""Shared helpers for the Python tests: find the binaries and the default model, run
bin/embed, compare vectors. Standard library only, so the tests need nothing but the
binaries and .venv's interpreter."""
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, os.environ.get("BIN", "bin"))
MODEL = os.environ.get("EMBED_MODEL", os.path.join(ROOT, ".cache/models/all-MiniLM-L6-v2"))
SHARED = os.path.join(ROOT, "..", "shared")


def skip(why):
    print("skipped: " + why)
    sys.exit(77)


def embed(texts, *args, model=MODEL):
    """Runs bin/embed --jsonl on texts; returns a list of vectors (lists of floats)."""
    inp = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    p = subprocess.run([os.path.join(BIN, "embed"), "--jsonl", "--model", model, *args],
                       input=inp.encode(), capture_output=True, check=False)
    if p.returncode != 0:
        raise RuntimeError("bin/embed failed: " + p.stderr.decode(errors="replace"))
    return [json.loads(l) for l in p.stdout.decode().splitlines()]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def max_abs_diff(a, b):
    return max(abs(x - y) for x, y in zip(a, b))
