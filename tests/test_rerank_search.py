"""search --rerank and indexer --reranker end to end, on 40 SciFact documents of the sample
and a cross-encoder in ms-marco-MiniLM-L-6-v2's shapes (scripts/gen-cross-encoder):
  - the candidates are the plain scan's top --rerank-k, ordered by the cross-encoder's score
    (highest first), k of them printed, each with its scan score and scan rank unchanged;
  - each rerank_score equals what bin/rerank gives for (query, title + " " + text), so the
    document scored is the stored one (an independent path through the same engine);
  - --queries (batched scans) answers as one-at-a-time search does; TREC prints the
    cross-encoder's score, decreasing with the rank;
  - indexer --reranker records the default that --rerank alone uses, a rebuild keeps it, and
    a directory that is not a cross-encoder is refused in one line before anything is
    written; --rerank with no default, or a path that is not a directory, is an error.
Skipped until scripts/fetch-model has run."""
import json
import os
import subprocess
import sys
import tempfile

from refcheck import ASAN, BIN, INDEXER, MODEL, ROOT, SEARCH, check, failures, run, skip

RERANK = os.path.join(BIN, "rerank")
if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
    skip("model not fetched (run scripts/fetch-model)")

# Under ASan (memory errors, not numbers) 20 documents and two batched queries.
recs = [json.loads(l) for l in open(os.path.join(ROOT, "sample/scifact-200.jsonl"))][:20 if ASAN else 40]
Q = "does vitamin D deficiency raise the risk of disease"

with tempfile.TemporaryDirectory() as tmp:
    ce = os.path.join(tmp, "ce")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts/gen-cross-encoder"), ce,
                    "--from", MODEL, "--max-length", "128"], check=True, stdout=subprocess.DEVNULL)
    corpus = os.path.join(tmp, "c.jsonl")
    with open(corpus, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))
    st = os.path.join(tmp, "st")
    common = ["--device", "cpu", "--threads", "2", "--quiet", "--model", MODEL]

    # a directory that is not a cross-encoder: refused before the store exists
    rc, _, err = run([INDEXER, "--store", st, *common, "--reranker", MODEL, corpus])
    check(rc == 1 and "not a cross-encoder" in err and err.count("\n") == 1 and
          not os.path.exists(st), f"indexer --reranker MODEL: exit {rc}, {err!r}")
    rc, _, err = run([INDEXER, "--store", st, *common, corpus])
    assert rc == 0, err
    rc, _, err = run([SEARCH, "--store", st, "--rerank", Q])
    check(rc == 1 and "records none" in err, f"--rerank without a default: {rc} {err!r}")
    rc, _, err = run([SEARCH, "--store", st, "--rerank", os.path.join(tmp, "nope"), Q])
    check(rc == 2 and "not a directory" in err, f"--rerank missing dir: {rc} {err!r}")

    def search(*args):
        rc, out, err = run([SEARCH, "--store", st, "--model", MODEL, "--threads", "2", *args])
        assert rc == 0, f"search {args}: {err}"
        return out

    plain = json.loads(search("--json", "--k", "12", Q))["results"]
    rr = json.loads(search("--json", "--k", "5", "--rerank", ce, "--rerank-k", "12",
                           "--rerank-device", "cpu", Q))["results"]
    check(len(rr) == 5, f"{len(rr)} results for --k 5")
    byid = {h["id"]: (i + 1, h["score"]) for i, h in enumerate(plain)}
    for h in rr:
        check(h["id"] in byid and byid[h["id"]] == (h["scan_rank"], h["score"]),
              f"result {h['id']} is not the scan's #{h.get('scan_rank')} with its score")
    scores = [h["rerank_score"] for h in rr]
    check(scores == sorted(scores, reverse=True), f"not ordered by the cross-encoder: {scores}")
    # every candidate's score from bin/rerank: the top 5 of those are what search printed
    texts = {r["_id"]: (r["title"] + " " + r["text"]) if r.get("title") else r["text"] for r in recs}
    inp = json.dumps({"query": Q, "documents": [texts[h["id"]] for h in plain]}) + "\n"
    rc, out, err = run([RERANK, "--model", ce, "--threads", "2"], input=inp)
    assert rc == 0, err
    direct = json.loads(out)["scores"]
    want = sorted(zip(direct, [h["id"] for h in plain]), key=lambda t: -t[0])[:5]
    diff = max(abs(a - h["rerank_score"]) for (a, _), h in zip(want, rr))
    print(f"search --rerank: top 5 of 12 candidates; rerank_score vs bin/rerank max |diff| {diff:.3g}")
    check([i for _, i in want] == [h["id"] for h in rr] and diff <= 1e-6,
          f"search's reranking differs from bin/rerank's scores: {want} vs "
          f"{[(h['rerank_score'], h['id']) for h in rr]}")
    spread = max(direct) - min(direct)
    check(spread > 1e-3, f"candidate scores too alike ({spread:.3g}) for the order to mean much")

    # --queries: batched scans answer as one-at-a-time search
    qf = os.path.join(tmp, "q.jsonl")
    qs = [Q, "cholesterol and dementia", "bone mineral density"][:2 if ASAN else 3]
    with open(qf, "w") as f:
        f.write("".join(json.dumps({"_id": str(i), "text": q}) + "\n" for i, q in enumerate(qs)))
    trec = search("--queries", qf, "--format", "trec", "--k", "4", "--rerank", ce,
                  "--rerank-k", "10", "--rerank-device", "cpu").splitlines()
    for i, q in enumerate(qs):
        one = search("--format", "trec", "--k", "4", "--rerank", ce, "--rerank-k", "10",
                     "--rerank-device", "cpu", q).splitlines()
        mine = [l.split()[2:5] for l in trec if l.split()[0] == str(i)]
        check(mine == [l.split()[2:5] for l in one], f"query {i}: --queries differs: {mine} vs {one}")
        sc = [float(x[2]) for x in mine]
        check(sc == sorted(sc, reverse=True), f"query {i}: TREC scores not decreasing: {sc}")

    # the store's default: --rerank alone; a rebuild keeps it
    rc, _, err = run([INDEXER, "--store", st, *common, "--reranker", ce, corpus])
    assert rc == 0, err
    alone = json.loads(search("--json", "--k", "5", "--rerank", "--rerank-k", "12",
                              "--rerank-device", "cpu", Q))["results"]
    check([h["id"] for h in alone] == [h["id"] for h in rr], "--rerank alone used another model")
    rc, _, err = run([INDEXER, "--store", st, *common, "--rebuild", corpus])
    assert rc == 0, err
    again = json.loads(search("--json", "--k", "5", "--rerank", "--rerank-k", "12",
                              "--rerank-device", "cpu", Q))["results"]
    check([h["id"] for h in again] == [h["id"] for h in rr], "--rebuild lost the default reranker")
    rc, out, err = run([INDEXER, "--store", st, "--check"])
    check(rc == 0, f"--check after recording the reranker: {out} {err}")

if failures:
    sys.exit(f"{len(failures)} checks failed")
