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
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
MODEL = os.environ.get("EMBED_MODEL", os.path.join(ROOT, ".cache/models/all-MiniLM-L6-v2"))
SHARED = os.path.join(ROOT, "..", "shared")
EMBED = os.path.join(BIN, "embed")
INDEXER = os.path.join(BIN, "indexer")
SEARCH = os.path.join(BIN, "search")
# The sanitizer pass (BUILD=build/asan) runs the same tests; slow ones check fewer cases there.
ASAN = "asan" in os.environ.get("BUILD", "build")

# Checks that fail are collected, so that one run reports every failure, not the first.
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr, flush=True)


def run(args, input=None, timeout=300):
    """Runs a command; input may be str or bytes. Returns (exit code, stdout, stderr) as text
    (undecodable bytes replaced). A command still running after timeout seconds raises
    subprocess.TimeoutExpired."""
    if isinstance(input, str):
        input = input.encode()
    p = subprocess.run(args, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def skip(why):
    print("skipped: " + why)
    sys.exit(77)


def scifact_or_skip():
    """The SciFact directory of ../shared, with the default model fetched; skips the test
    (exit 77) when either is missing."""
    d = os.path.join(SHARED, "data", "scifact")
    if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
        skip("model not fetched (run scripts/fetch-model)")
    if not os.path.exists(os.path.join(d, "corpus.jsonl")):
        skip("../shared/data/scifact missing")
    return d


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


def load_reference(prefix):
    """Reads a reference written by scripts/gen-reference: PREFIX.jsonl (a generator line, then
    one record per text) and PREFIX.f32 (the vectors, little-endian, in text order). Returns
    (generator metadata, records, reference vectors)."""
    import struct
    lines = open(prefix + ".jsonl", encoding="utf-8").read().splitlines()
    meta = json.loads(lines[0])["generator"]
    recs = [json.loads(l) for l in lines[1:]]
    dim = meta["dim"]
    raw = open(prefix + ".f32", "rb").read()
    assert len(raw) == 4 * dim * len(recs), prefix + ".f32: size does not match its text list"
    refs = [list(struct.unpack_from("<%df" % dim, raw, 4 * dim * i)) for i in range(len(recs))]
    return meta, recs, refs


def vectors_off(texts, ours, refs, min_cos=0.99999, max_diff=2e-5):
    """Compares vector lists text by text; prints the worst cosine and difference and up to
    ten texts outside the bars. Returns the list of (index, cosine, max diff, text head) off."""
    assert len(ours) == len(texts), f"{len(ours)} vectors for {len(texts)} texts"
    worst_cos, worst_diff, bad = 1.0, 0.0, []
    for i, (t, a, b) in enumerate(zip(texts, ours, refs)):
        c, d = cosine(a, b), max_abs_diff(a, b)
        worst_cos, worst_diff = min(worst_cos, c), max(worst_diff, d)
        if c < min_cos or d > max_diff:
            bad.append((i, c, d, t[:60]))
    print(f"{len(texts)} texts: min cosine {worst_cos:.9f}, max |diff| {worst_diff:.3g}")
    for i, c, d, t in bad[:10]:
        print(f"  text {i}: cosine {c:.9f} max|diff| {d:.3g}: {t!r}")
    return bad
