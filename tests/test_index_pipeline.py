"""test_index_pipeline.py — the indexer's pipeline under pressure: the same corpus (SciFact
documents, long ones cut into windows, duplicate ids, bad records) indexed with the default
queues and with tiny ones (one document a chunk, one chunk in flight, one window a batch; and
odd sizes that split chunks across batches) must give the same store: the same documents,
the first occurrence of a duplicate id, the same counts, the same search answers. Then the
GPU stage on a Vulkan device (lavapipe where there is no GPU) against a CPU-built store:
same ids and rows, every score within the fp32 bound.

Run by tests/run.sh with $BIN and $BUILD; exits 77 when the model is missing."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from refcheck import ASAN, BIN, INDEXER, MODEL, SHARED, check, failures, run
from test_indexer import DEV, index, search_all, stats, summary

QUERIES = ["protein folding in cells", "vitamin D deficiency", "cancer risk of smoking",
           "antibiotic resistance genes", "memory and sleep"]


def corpus(path):
    """60 SciFact documents (most long enough for several windows of WINDOW), a duplicate id whose
    second text must lose, two bad records and an empty document."""
    src = os.path.join(SHARED, "data", "scifact", "corpus.jsonl")
    with open(src, encoding="utf-8") as f:
        docs = [json.loads(next(f)) for _ in range(60)]
    for d in docs:  # short texts keep the CPU runs fast; --window 40 still cuts most in two
        d["text"] = d["text"][:400]
    lines = [json.dumps(d) for d in docs]
    lines.insert(40, json.dumps({"_id": docs[10]["_id"], "title": "dup", "text": "a later duplicate"}))
    lines.insert(20, '{"_id": "broken", "text": "cut off')
    lines.insert(45, json.dumps({"_id": "not-text", "text": 42}))
    lines.insert(50, json.dumps({"_id": "empty", "text": "   "}))
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return docs


WINDOW = ["--window", "40"]


def answers(store):
    out = {}
    for q in QUERIES:
        out[q] = [(r["id"], r["score"], r.get("snippet", "")) for r in search_all(store, q, k=200)]
    return out


def same_answers(a, b, tol, what, snippets=True):
    for q in QUERIES:
        ra, rb = a[q], b[q]
        check(len(ra) == len(rb), f"{what}: '{q}': {len(ra)} vs {len(rb)} results")
        if sorted(x[0] for x in ra) != sorted(x[0] for x in rb):
            check(False, f"{what}: '{q}': different ids")
            continue
        sa = {x[0]: x for x in ra}
        worst = max(abs(sa[x[0]][1] - x[1]) for x in rb)
        check(worst <= tol, f"{what}: '{q}': scores differ by {worst:.2e} (bound {tol})")
        if snippets:
            bad = [x[0] for x in rb if sa[x[0]][2] != x[2]]
            check(not bad, f"{what}: '{q}': snippets differ for {bad[:3]}")


def test_tiny_queues(tmp):
    src = os.path.join(tmp, "c.jsonl")
    docs = corpus(src)
    configs = {
        "default": [],
        "tiny": ["--window-docs", "1", "--queue-chunks", "1", "--batch-tokens", "1"],
        "odd": ["--window-docs", "7", "--queue-chunks", "2", "--batch-tokens", "700", "--threads", "2"],
    }
    # "grow": the map starts at 64 KiB and grows again and again while the prep stage reads
    # snapshots on another thread (LMDB may move the map only with no transaction open; on
    # Linux the new map mostly lands at the old address, so a missing lock seldom shows).
    configs["grow"] = configs["odd"]
    results = {}
    for name, opts in configs.items():
        store = os.path.join(tmp, name)
        if name == "grow":
            os.environ["EMB_STORE_MAP_BYTES"] = "65536"
        rc, _, err = index(store, *WINDOW, "--skip-bad", *opts, src)
        os.environ.pop("EMB_STORE_MAP_BYTES", None)
        check(rc == 0, f"{name}: exit {rc}: {err.strip()[-400:]}")
        s = summary(err)
        results[name] = (s, stats(store), answers(store))
        check(s and s["added"] == 61 and s["failed"] == 3,
              f"{name}: counts {s} (want 61 added: 60 + the empty one; 3 failed: broken, not-text, the duplicate)")
        check("duplicate id '%s'" % docs[10]["_id"] in err, f"{name}: the duplicate was not reported")
    base = results["default"]
    for name in ("tiny", "odd", "grow"):
        s, st, ans = results[name]
        check(s == base[0], f"{name}: summary {s} != default {base[0]}")
        check(st == base[1], f"{name}: store {st} != default {base[1]}")
        same_answers(base[2], ans, 1e-6, f"{name} vs default")
    # The first occurrence of the duplicate id won, in every configuration.
    for name in configs:
        hits = [r for r in search_all(os.path.join(tmp, name), "a later duplicate", k=200)
                if r["id"] == docs[10]["_id"]]
        check(hits and "a later duplicate" not in hits[0].get("snippet", ""),
              f"{name}: the duplicate's second text replaced the first")
    # A rerun with tiny queues finds everything unchanged.
    rc, _, err = index(os.path.join(tmp, "tiny"), *WINDOW, "--skip-bad", *configs["tiny"], src)
    s = summary(err)
    check(rc == 0 and s and s["unchanged"] == 61 and s["added"] == 0,
          f"tiny rerun: exit {rc}, counts {s}")
    # A rerun with many small chunks in flight, most unchanged: ready chunks wait for the
    # writer and share transactions; 5 changed documents must be updated, the rest seen.
    changed = os.path.join(tmp, "c2.jsonl")
    with open(src, encoding="utf-8") as f, open(changed, "w", encoding="utf-8") as g:
        for line in f:
            try:
                d = json.loads(line)
            except ValueError:
                g.write(line)
                continue
            if isinstance(d, dict) and d.get("_id") in [x["_id"] for x in docs[3:53:10]] and d.get("title") != "dup":
                d["text"] = "changed text of " + d["_id"]
            g.write(json.dumps(d) + "\n")
    store = os.path.join(tmp, "odd")
    rc, _, err = index(store, *WINDOW, "--skip-bad", "--window-docs", "3", "--queue-chunks", "8", changed)
    s = summary(err)
    check(rc == 0 and s and s["updated"] == 5 and s["unchanged"] == 56 and s["added"] == 0,
          f"grouped rerun: exit {rc}, counts {s}")
    st = stats(store)  # --check passes; the changed texts are shorter: fewer rows
    check(st and st[0] == base[1][0] and st[1] < base[1][1], f"grouped rerun: store {st} (was {base[1]})")
    for x in docs[3:53:10]:
        hit = [r for r in search_all(store, "changed text of " + x["_id"], k=200) if r["id"] == x["_id"]]
        check(hit and hit[0].get("snippet", "").startswith("changed text of"),
              f"grouped rerun: {x['_id']} not updated")
    # Without --skip-bad the run stops at the first bad record: what came before it is kept,
    # nothing after it, whatever the queue sizes.
    for name, opts in configs.items():
        store = os.path.join(tmp, "stop-" + name)
        rc, _, err = index(store, *WINDOW, *opts, src)
        st = stats(store)
        check(rc == 1 and st and st[0] == 20, f"stop {name}: exit {rc}, store {st} (want 20 documents)")


def vulkan_device():
    p = subprocess.run([os.path.join(BIN, "embed"), "--list-devices"], capture_output=True, text=True)
    return p.returncode == 0 and p.stdout.strip() != ""


def test_gpu_stage(tmp):
    if ASAN:
        print("GPU stage: checked by the plain run only (lavapipe under ASan takes minutes)")
        return
    if not vulkan_device():
        print("no Vulkan device: GPU stage not checked")
        return
    print("GPU stage: checked on", subprocess.run([os.path.join(BIN, "embed"), "--list-devices"],
                                                  capture_output=True, text=True).stdout.strip())
    src = os.path.join(tmp, "g.jsonl")
    corpus(src)
    with open(src, encoding="utf-8") as f:
        lines = f.readlines()[:30]
    with open(src, "w", encoding="utf-8") as f:
        f.writelines(lines)
    cpu = os.path.join(tmp, "g-cpu")
    rc, _, err = index(cpu, *WINDOW, "--skip-bad", src)
    check(rc == 0, f"cpu: {err.strip()[-300:]}")
    gpu = os.path.join(tmp, "g-gpu")
    # Two engines on the same device: batches come back out of order, commits must not.
    rc, _, err = run([INDEXER, "--store", gpu, "--model", MODEL, "--gpu", "0,0", *WINDOW, "--skip-bad",
                      "--window-docs", "5", "--batch-tokens", "600", src], timeout=1800)
    check(rc == 0, f"gpu: exit {rc}: {err.strip()[-400:]}")
    st = stats(cpu)
    check(st and st[1] > st[0] * 1.5, f"cpu store {st}: too few windows to test windowing")
    check(stats(gpu) == stats(cpu), f"gpu store {stats(gpu)} != cpu store {stats(cpu)}")
    same_answers(answers(cpu), answers(gpu), 2e-4, "gpu vs cpu")


def main():
    tmp = tempfile.mkdtemp(prefix="test_index_pipeline.")
    try:
        test_tiny_queues(tmp)
        test_gpu_stage(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} checks failed")
        sys.exit(1)
    print("test_index_pipeline: ok")


if __name__ == "__main__":
    main()
