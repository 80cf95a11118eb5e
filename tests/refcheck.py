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
