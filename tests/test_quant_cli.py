"""test_quant_cli.py — indexer --vectors and search --rescore through the real tools: an
int8 and a binary store of the same documents answer with the f32 store's documents and exact
scores (rescored; 12 documents, so the default N x k covers them), --rescore 0 prints compact
estimates, --check verifies the compact blocks, another --vectors on a store with rows is one
clear line (exit 1, store unchanged), --rebuild keeps the type, and a bad --vectors is exit 2.

Run by tests/run.sh with $BIN (tools) and $BUILD; exits 77 when the model is missing."""
import json
import os
import sys
import tempfile

from refcheck import INDEXER, MODEL, SEARCH, check, failures, run

if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
    print("skipped: model not fetched (run scripts/fetch-model)")
    sys.exit(77)

TEXTS = ["vitamin D deficiency and the risk of disease", "a horse grazing in a field",
         "protein folding in the cell", "long documents are split into windows",
         "the stock market fell sharply", "how to bake sourdough bread",
         "quantum computers factor integers", "a cohort study of smokers",
         "the history of the roman empire", "football world cup final",
         "insulin resistance and diabetes", "vector search with int8 codes"]

with tempfile.TemporaryDirectory() as tmp:
    corpus = os.path.join(tmp, "c.jsonl")
    with open(corpus, "w") as f:
        for i, t in enumerate(TEXTS):
            f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")
    stores = {}
    for vt in ("f32", "int8", "binary"):
        stores[vt] = os.path.join(tmp, vt)
        rc, _, err = run([INDEXER, "--quiet", "--store", stores[vt], "--model", MODEL, "--device", "cpu",
                          "--vectors", vt, corpus])
        check(rc == 0, f"indexer --vectors {vt}: {err.strip()}")

    def results(vt, *args):
        rc, out, err = run([SEARCH, "--store", stores[vt], "--json", "--k", "5", "--snippet", "0", *args,
                            "does vitamin D deficiency raise the risk of disease"])
        check(rc == 0, f"search {vt} {args}: {err.strip()}")
        return [(r["id"], r["score"]) for r in json.loads(out)["results"]] if rc == 0 else []

    exact = results("f32")
    check(len(exact) == 5, f"f32: {exact}")
    for vt in ("int8", "binary"):
        got = results(vt)
        check(got == exact, f"{vt} rescored: {got} != f32 {exact}")
        raw = results(vt, "--rescore", "0")
        check(len(raw) == 5 and raw != exact and raw[0][0] == exact[0][0],
              f"{vt} --rescore 0 should rank by the compact estimate: {raw} vs {exact}")
        rc, out, err = run([INDEXER, "--store", stores[vt], "--check"])
        check(rc == 0 and f"their {vt} codes" in out, f"--check {vt}: {out.strip()} {err.strip()}")

    rc, out, err = run([INDEXER, "--quiet", "--store", stores["f32"], "--model", MODEL, "--device", "cpu",
                        "--vectors", "binary", corpus])
    check(rc == 1 and "holds f32 vectors, not binary: changing the vector type needs --rebuild" in err
          and len(err.strip().splitlines()) == 1, f"type mismatch: rc {rc}, {err!r}")
    check(results("f32") == exact, "the store changed after a refused type change")

    rc, _, err = run([INDEXER, "--quiet", "--store", stores["int8"], "--model", MODEL, "--device", "cpu",
                      "--rebuild", corpus])
    rc2, out, _ = run([INDEXER, "--store", stores["int8"], "--check"])
    check(rc == 0 and "their int8 codes" in out, f"--rebuild kept int8: {err.strip()} {out.strip()}")
    rc, _, err = run([INDEXER, "--quiet", "--store", stores["int8"], "--model", MODEL, "--device", "cpu",
                      "--rebuild", "--vectors", "binary", corpus])
    rc2, out, _ = run([INDEXER, "--store", stores["int8"], "--check"])
    check(rc == 0 and "their binary codes" in out, f"--rebuild --vectors binary: {err.strip()} {out.strip()}")
    rc, _, err = run([INDEXER, "--store", stores["int8"], "--vectors", "int4", corpus])
    check(rc == 2 and "--vectors must be f32, int8 or binary" in err, f"bad --vectors: {rc} {err!r}")

if failures:
    print(f"{len(failures)} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("test_quant_cli: all checks passed")
