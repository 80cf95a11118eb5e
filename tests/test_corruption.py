"""test_corruption.py — the real tools on damaged copies of a store the indexer built.

tests/test_corruption.c puts hundreds of damaged copies through the store's read paths; this
runs bin/search (--queries, JSON) and bin/indexer --check themselves on a few dozen: seeded
random byte and page damage, and truncations at varied sizes. Each run must end without a
signal or a hang; a search that exits 0 must print exactly what the undamaged store gives;
--check must not pass a copy whose search fails or answers differently; a truncated copy is
refused at open with a message saying so (a cut into the zeros the store keeps past its
last page loses nothing and must answer the same). A write (indexing into the copy) is not asserted
here: LMDB itself can fault on some damaged internal pages (scripts/attack-store counts it).

Run by tests/run.sh with $BIN; exits 77 when the model is missing."""
import os
import random
import shutil
import subprocess
import sys
import tempfile

import refcheck
from refcheck import INDEXER, MODEL, ROOT, SEARCH, check, failures

MUTATED, TRUNCATED = 24, 10

def run(args, timeout=120):
    """refcheck.run, with a hang reported as the exit code "hang"."""
    try:
        return refcheck.run(args, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang", "", ""


def damage(path, size, r, kind):
    with open(path, "r+b") as f:
        if kind == 0:
            for _ in range(r.randint(1, 8)):
                at = r.randrange(size)
                f.seek(at)
                b = f.read(1)[0]
                f.seek(at)
                f.write(bytes([b ^ r.randint(1, 255)]))
            return "bytes flipped"
        at = r.randrange(size // 4096) * 4096
        f.seek(at)
        f.write(bytes(r.randrange(256) for _ in range(4096)) if kind == 1 else bytes(4096))
        return f"page {at // 4096} {'noise' if kind == 1 else 'zeroed'}"


def main():
    for exe in (INDEXER, SEARCH):
        if not os.access(exe, os.X_OK):
            print(f"{exe} not built")
            sys.exit(77)
    if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
        print("model missing")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="test_corruption.")
    try:
        corpus = os.path.join(tmp, "corpus.jsonl")
        with open(os.path.join(ROOT, "sample", "scifact-200.jsonl")) as src, open(corpus, "w") as dst:
            dst.writelines(src.readlines()[:40])
        queries = os.path.join(tmp, "q.jsonl")
        with open(queries, "w") as f:
            f.write('{"_id": "q1", "text": "vitamin D deficiency and disease risk"}\n'
                    '{"_id": "q2", "text": "gene expression in tumour cells"}\n'
                    '{"_id": "q3", "text": "mortality in a randomised drug trial"}\n')
        store = os.path.join(tmp, "store")
        rc, _, err = run([INDEXER, "--store", store, "--model", MODEL, "--device", "cpu", "--quiet",
                          "--truncate", corpus], timeout=600)
        check(rc == 0, f"indexing: {err.strip()}")
        if rc != 0:
            return
        data = os.path.join(os.path.realpath(store), "data.mdb")
        size = os.path.getsize(data)
        search = [SEARCH, "--queries", queries, "--format", "json", "--k", "5"]
        rc, base, err = run(search + ["--store", store])
        check(rc == 0 and base.count('"rank"') == 15, f"undamaged search: {err.strip()}")
        rc, out, err = run([INDEXER, "--store", store, "--check"])
        check(rc == 0 and "checksums" in out, f"undamaged --check: {out} {err.strip()}")

        r = random.Random(20261202)
        copy = os.path.join(tmp, "copy")
        counts = {"same": 0, "detected": 0}
        for i in range(MUTATED + TRUNCATED):
            shutil.rmtree(copy, ignore_errors=True)
            os.mkdir(copy)
            shutil.copy(data, os.path.join(copy, "data.mdb"))
            if i < MUTATED:
                what = damage(os.path.join(copy, "data.mdb"), size, r, i % 3)
            else:
                n = (size * (i - MUTATED)) // TRUNCATED
                n -= n % 4096 if i % 2 else 0
                os.truncate(os.path.join(copy, "data.mdb"), n)
                what = f"truncated to {n} of {size} bytes"
            src, sout, serr = run(search + ["--store", copy])
            crc, cout, cerr = run([INDEXER, "--store", copy, "--check"])
            for tool, rc in (("search", src), ("--check", crc)):
                check(rc != "hang", f"{tool} hangs on copy {i} ({what})")
                check(rc == "hang" or rc >= 0, f"{tool} killed by signal {-rc if rc != 'hang' else 0} on copy {i} ({what})")
            check(src != 0 or sout == base, f"search exits 0 with a different answer on copy {i} ({what})")
            check(crc != 0 or (src == 0 and sout == base),
                  f"--check passes copy {i} ({what}) whose search {'fails' if src else 'differs'}: {serr.strip()}")
            if i >= MUTATED and n >= 8192 and src != 0:  # (a cut into the zero pad past the
                # last page loses nothing: the answer must then be the same, checked above)
                check("truncated" in serr and "truncated" in cerr,
                      f"truncated copy {i} ({what}): search {serr.strip()!r}, --check {cerr.strip()!r}")
            if src == 0 and crc == 0:
                counts["same"] += 1
            else:
                counts["detected"] += 1
                one = (serr or cerr).strip().splitlines()
                check(one and "damaged" in one[-1] or "truncated" in (serr + cerr) or i >= MUTATED,
                      f"copy {i} ({what}): the error does not say the store is damaged: {one}")
        print(f"{MUTATED} mutated and {TRUNCATED} truncated copies: {counts['same']} same answers, "
              f"{counts['detected']} damage detected")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} checks failed", file=sys.stderr)
        sys.exit(1)
    print("test_corruption.py: ok")


if __name__ == "__main__":
    main()
